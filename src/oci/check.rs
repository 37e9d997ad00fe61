//! Verification of a layout: every blob's digest and size against the
//! descriptors that reference it, layer diff_ids against configs, and every
//! file under blobs/sha256 against its name.

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::fs::{self, File};
use std::io::{self, BufReader, Read};
use std::path::Path;

use oci_spec::image::{Descriptor, ImageConfiguration, ImageIndex, ImageManifest, MediaType};
use serde::de::DeserializeOwned;

use super::{blob_rel, layer_compression, ref_of, to_digest, BlobCache, Layout, Result};
use crate::compress::Compression;
use crate::digest::{hash_reader, Digest};

/// One thing wrong in a layout: the file it concerns (relative to the layout)
/// and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Problem {
    pub path: String,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

impl std::error::Error for Problem {}

/// What `check` found.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Report {
    /// `(ref name or "", manifest digest)` of every image index.json lists.
    pub images: Vec<(String, Digest)>,
    pub blobs_verified: usize,
    pub problems: Vec<Problem>,
}

/// Verifies the whole layout at `path`. Errors only if it is not a layout at
/// all; everything wrong inside it is a [`Problem`] in the report.
pub fn check(path: &Path) -> Result<Report> {
    let layout = Layout::open(path)?;
    let mut v = Verifier::new(&layout);
    let mut report = Report::default();
    match layout.index() {
        Ok(index) => {
            for d in index.manifests() {
                let r = ref_of(d).unwrap_or("").to_owned();
                report.images.push((r.clone(), to_digest(d.digest())));
                v.descriptor(d, &format!("index.json entry {r:?}"), true);
            }
        }
        Err(e) => v.problems.push(Problem {
            path: "index.json".into(),
            message: e.to_string(),
        }),
    }
    v.stray_blobs();
    report.blobs_verified = v.cache.len();
    report.problems = v.problems;
    Ok(report)
}

pub(super) struct Verifier<'a> {
    layout: &'a Layout,
    cache: BlobCache,
    diff_ids: HashMap<Digest, std::result::Result<Digest, String>>,
    problems: Vec<Problem>,
}

impl<'a> Verifier<'a> {
    pub(super) fn new(layout: &'a Layout) -> Self {
        Verifier {
            layout,
            cache: HashMap::new(),
            diff_ids: HashMap::new(),
            problems: Vec::new(),
        }
    }

    /// Checks one blob against a descriptor's digest and size.
    fn blob(
        &mut self,
        digest: &Digest,
        size: u64,
        context: &str,
    ) -> std::result::Result<(), Problem> {
        let problem = |message: String| Problem {
            path: blob_rel(digest),
            message: format!("{message} (referenced by {context})"),
        };
        let layout = self.layout;
        let facts = self
            .cache
            .entry(*digest)
            .or_insert_with(|| {
                File::open(layout.blob_path(digest))
                    .and_then(|f| hash_reader(BufReader::with_capacity(256 * 1024, f)))
                    .map_err(|e| match e.kind() {
                        io::ErrorKind::NotFound => "missing".to_owned(),
                        _ => e.to_string(),
                    })
            })
            .clone();
        let (actual, actual_size) = facts.map_err(problem)?;
        if actual_size != size {
            return Err(problem(format!("size {actual_size}, expected {size}")));
        }
        if actual != *digest {
            return Err(problem(format!("content has digest {actual}")));
        }
        Ok(())
    }

    /// Verifies a JSON blob and parses it.
    pub(super) fn json<T: DeserializeOwned>(
        &mut self,
        digest: &Digest,
        size: u64,
        context: &str,
    ) -> std::result::Result<T, Problem> {
        if size > super::MAX_JSON_BLOB {
            return Err(Problem {
                path: blob_rel(digest),
                message: format!(
                    "descriptor size {size} exceeds the {} byte limit for JSON blobs (referenced by {context})",
                    super::MAX_JSON_BLOB
                ),
            });
        }
        self.blob(digest, size, context)?;
        self.layout.read_json(digest).map_err(|message| Problem {
            path: blob_rel(digest),
            message: format!("{message} (referenced by {context})"),
        })
    }

    /// Verifies what a descriptor points at, following manifests and indexes.
    fn descriptor(&mut self, d: &Descriptor, context: &str, top: bool) {
        let digest = to_digest(d.digest());
        match d.media_type() {
            MediaType::ImageManifest => {
                match self.json::<ImageManifest>(&digest, d.size(), context) {
                    Ok(m) => self.manifest(&digest, &m, ref_of(d).filter(|_| top)),
                    Err(p) => self.problems.push(p),
                }
            }
            MediaType::ImageIndex => match self.json::<ImageIndex>(&digest, d.size(), context) {
                Ok(index) => {
                    for child in index.manifests() {
                        self.descriptor(child, &format!("index {digest}"), false);
                    }
                }
                Err(p) => self.problems.push(p),
            },
            _ => {
                if let Err(p) = self.blob(&digest, d.size(), context) {
                    self.problems.push(p);
                }
            }
        }
    }

    fn manifest(&mut self, digest: &Digest, m: &ImageManifest, ref_name: Option<&str>) {
        let context = format!("manifest {digest}");
        let cd = m.config();
        let config_digest = to_digest(cd.digest());
        let config = if cd.media_type() == &MediaType::ImageConfig {
            match self.json::<ImageConfiguration>(&config_digest, cd.size(), &context) {
                Ok(c) => Some(c),
                Err(p) => {
                    self.problems.push(p);
                    None
                }
            }
        } else {
            if let Err(p) = self.blob(&config_digest, cd.size(), &context) {
                self.problems.push(p);
            }
            None
        };
        match config {
            Some(config) => {
                let label = ref_name.map_or_else(|| digest.to_string(), str::to_owned);
                let found = self.layers(m, &config, true, &label);
                self.problems.extend(found);
            }
            None => {
                for (i, l) in m.layers().iter().enumerate() {
                    let ctx = format!("layer {i} of {context}");
                    if let Err(p) = self.blob(&to_digest(l.digest()), l.size(), &ctx) {
                        self.problems.push(p);
                    }
                }
            }
        }
    }

    /// Verifies the layer blobs of an image and, with `diff_ids`, their
    /// uncompressed digests against the config's rootfs.
    pub(super) fn layers(
        &mut self,
        m: &ImageManifest,
        config: &ImageConfiguration,
        diff_ids: bool,
        image: &str,
    ) -> Vec<Problem> {
        let mut out = Vec::new();
        let expected = config.rootfs().diff_ids();
        if expected.len() != m.layers().len() {
            out.push(Problem {
                path: blob_rel(&to_digest(m.config().digest())),
                message: format!(
                    "config of {image:?} lists {} diff_ids for {} layers",
                    expected.len(),
                    m.layers().len()
                ),
            });
        }
        for (i, l) in m.layers().iter().enumerate() {
            let digest = to_digest(l.digest());
            let context = format!("layer {i} of {image:?}");
            if let Err(p) = self.blob(&digest, l.size(), &context) {
                out.push(p);
                continue;
            }
            if !diff_ids {
                continue;
            }
            let Some(want) = expected.get(i) else {
                continue;
            };
            let Some(compression) = layer_compression(l) else {
                out.push(Problem {
                    path: blob_rel(&digest),
                    message: format!("unknown layer media type {} ({context})", l.media_type()),
                });
                continue;
            };
            let layout = self.layout;
            let got = self
                .diff_ids
                .entry(digest)
                .or_insert_with(|| uncompressed_digest(layout, &digest, compression))
                .clone();
            match got {
                Ok(d) if d.to_string() == *want => {}
                Ok(d) => out.push(Problem {
                    path: blob_rel(&digest),
                    message: format!(
                        "uncompressed content has digest {d}, config says diff_id {want} ({context})"
                    ),
                }),
                Err(e) => out.push(Problem {
                    path: blob_rel(&digest),
                    message: format!("cannot decompress: {e} ({context})"),
                }),
            }
        }
        out
    }

    /// Every file in blobs/sha256 must be named by its content's digest.
    fn stray_blobs(&mut self) {
        let dir = self.layout.blobs_dir();
        let entries = match fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) => {
                self.problems.push(Problem {
                    path: "blobs/sha256".into(),
                    message: e.to_string(),
                });
                return;
            }
        };
        let mut names = BTreeSet::new();
        for e in entries.flatten() {
            names.insert(e.file_name().to_string_lossy().into_owned());
        }
        for name in names {
            let path = format!("blobs/sha256/{name}");
            let Ok(digest) = Digest::from_hex(&name) else {
                if !name.starts_with(".tmp-") {
                    self.problems.push(Problem {
                        path,
                        message: "file name is not a sha256 digest".into(),
                    });
                }
                continue;
            };
            if self.cache.contains_key(&digest) {
                continue;
            }
            let size = fs::metadata(self.layout.blob_path(&digest)).map_or(0, |m| m.len());
            if let Err(p) = self.blob(&digest, size, "no descriptor") {
                self.problems.push(p);
            }
        }
    }
}

fn uncompressed_digest(
    layout: &Layout,
    digest: &Digest,
    compression: Compression,
) -> std::result::Result<Digest, String> {
    let f = File::open(layout.blob_path(digest)).map_err(|e| e.to_string())?;
    let r = BufReader::with_capacity(256 * 1024, f);
    let reader: Box<dyn Read> = match compression {
        Compression::None => Box::new(r),
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(r)),
        Compression::Zstd => {
            Box::new(zstd::stream::read::Decoder::with_buffer(r).map_err(|e| e.to_string())?)
        }
    };
    hash_reader(reader)
        .map(|(d, _)| d)
        .map_err(|e| e.to_string())
}
