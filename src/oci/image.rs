//! Image configs and manifests built from a caller's description, with every
//! time taken from SOURCE_DATE_EPOCH (docs/oci.md).

use std::collections::{BTreeMap, HashMap};

use oci_spec::image::{
    Arch, ConfigBuilder, Descriptor, DescriptorBuilder, HistoryBuilder, ImageConfiguration,
    ImageConfigurationBuilder, ImageManifest, ImageManifestBuilder, MediaType, Os, RootFsBuilder,
};

use crate::digest::Digest;
use crate::layer::LayerInfo;

pub const ANNOTATION_REF_NAME: &str = "org.opencontainers.image.ref.name";
pub const ANNOTATION_TITLE: &str = "org.opencontainers.image.title";
pub const ANNOTATION_VERSION: &str = "org.opencontainers.image.version";
pub const ANNOTATION_CREATED: &str = "org.opencontainers.image.created";
pub const ANNOTATION_INPUT_DIGEST: &str = "dev.imgrep.input-digest";
pub const ANNOTATION_SOURCES: &str = "dev.imgrep.sources";
/// On a fixed-output image: the diff_id its recipes declare. Such an image
/// records no sources or input digest (docs/recipes.md, `[output]`).
pub const ANNOTATION_FIXED_OUTPUT: &str = "dev.imgrep.fixed-output";
/// On an index.json entry: the package whose recipe built the image.
pub const ANNOTATION_RECIPE: &str = "dev.imgrep.recipe";

/// What an image is: everything that goes into its config and manifest
/// besides the layers.
#[derive(Debug, Clone, Default)]
pub struct ImageSpec {
    pub name: String,
    pub version: String,
    pub source_date_epoch: i64,
    pub entrypoint: Option<Vec<String>>,
    pub cmd: Option<Vec<String>>,
    /// `KEY=VALUE` entries, in the order given.
    pub env: Vec<String>,
    pub working_dir: Option<String>,
    /// The package's input digest (dev.imgrep.input-digest).
    pub input_digest: Option<Digest>,
    /// Pinned sources, e.g. `sha256:<hex> <url>` (dev.imgrep.sources, a JSON array).
    pub sources: Vec<String>,
    /// Extra config labels; they also become manifest annotations.
    pub labels: BTreeMap<String, String>,
    /// Extra manifest annotations only.
    pub annotations: BTreeMap<String, String>,
}

impl ImageSpec {
    /// The ref name the image gets in its layout's index.json: `NAME:VERSION`.
    pub fn ref_name(&self) -> String {
        format!("{}:{}", self.name, self.version)
    }

    /// Labels every imgrep image carries, then the caller's.
    fn labels(&self) -> BTreeMap<String, String> {
        let mut m = BTreeMap::new();
        m.insert(ANNOTATION_TITLE.to_owned(), self.name.clone());
        m.insert(ANNOTATION_VERSION.to_owned(), self.version.clone());
        if let Some(d) = &self.input_digest {
            m.insert(ANNOTATION_INPUT_DIGEST.to_owned(), d.to_string());
        }
        if !self.sources.is_empty() {
            let json = crate::canonical::to_vec(&self.sources).expect("strings serialize");
            m.insert(
                ANNOTATION_SOURCES.to_owned(),
                String::from_utf8(json).expect("JSON is UTF-8"),
            );
        }
        m.extend(self.labels.clone());
        m
    }
}

/// One layer of an image and the history line that explains it.
#[derive(Debug, Clone)]
pub struct ImageLayer {
    pub layer: LayerInfo,
    /// e.g. `imgrep build musl 1.2.5`.
    pub created_by: String,
}

/// RFC 3339 UTC time of a Unix timestamp (no clock involved).
pub fn rfc3339(epoch: i64) -> String {
    let days = epoch.div_euclid(86_400);
    let secs = epoch.rem_euclid(86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

pub fn descriptor(
    media_type: &str,
    digest: &Digest,
    size: u64,
    annotations: Option<HashMap<String, String>>,
) -> Descriptor {
    let mut b = DescriptorBuilder::default()
        .media_type(MediaType::from(media_type))
        .digest(
            digest
                .to_string()
                .parse::<oci_spec::image::Digest>()
                .expect("imgrep digests are valid OCI digests"),
        )
        .size(size);
    if let Some(a) = annotations {
        b = b.annotations(a);
    }
    b.build().expect("all descriptor fields set")
}

pub(super) fn config(spec: &ImageSpec, layers: &[ImageLayer]) -> ImageConfiguration {
    let created = rfc3339(spec.source_date_epoch);
    let mut cfg =
        ConfigBuilder::default().labels(spec.labels().into_iter().collect::<HashMap<_, _>>());
    if let Some(e) = &spec.entrypoint {
        cfg = cfg.entrypoint(e.clone());
    }
    if let Some(c) = &spec.cmd {
        cfg = cfg.cmd(c.clone());
    }
    if !spec.env.is_empty() {
        cfg = cfg.env(spec.env.clone());
    }
    if let Some(w) = &spec.working_dir {
        cfg = cfg.working_dir(w.clone());
    }
    let rootfs = RootFsBuilder::default()
        .typ("layers")
        .diff_ids(
            layers
                .iter()
                .map(|l| l.layer.diff_id.to_string())
                .collect::<Vec<_>>(),
        )
        .build()
        .expect("rootfs fields set");
    let history = layers
        .iter()
        .map(|l| {
            HistoryBuilder::default()
                .created(created.clone())
                .created_by(l.created_by.clone())
                .build()
                .expect("history fields set")
        })
        .collect::<Vec<_>>();
    ImageConfigurationBuilder::default()
        .created(created)
        .architecture(Arch::Amd64)
        .os(Os::Linux)
        .config(cfg.build().expect("config fields set"))
        .rootfs(rootfs)
        .history(history)
        .build()
        .expect("image configuration fields set")
}

pub(super) fn manifest(
    spec: &ImageSpec,
    config: Descriptor,
    layers: &[ImageLayer],
) -> ImageManifest {
    let mut annotations: HashMap<String, String> = spec.labels().into_iter().collect();
    annotations.insert(
        ANNOTATION_CREATED.to_owned(),
        rfc3339(spec.source_date_epoch),
    );
    annotations.extend(spec.annotations.clone());
    ImageManifestBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageManifest)
        .config(config)
        .layers(
            layers
                .iter()
                .map(|l| descriptor(l.layer.media_type, &l.layer.digest, l.layer.size, None))
                .collect::<Vec<_>>(),
        )
        .annotations(annotations)
        .build()
        .expect("manifest fields set")
}

#[cfg(test)]
mod tests {
    use super::rfc3339;

    #[test]
    fn rfc3339_known_dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(315_532_800), "1980-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(rfc3339(-1), "1969-12-31T23:59:59Z");
    }
}
