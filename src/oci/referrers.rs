//! OCI 1.1 artifacts attached to an image: manifests whose `subject` is the
//! image manifest (SBOMs, provenance, signatures), stored in the layout as
//! untagged entries of index.json, as `oras` and the distribution spec's
//! referrers API expect.

use std::collections::HashMap;

use oci_spec::image::{Descriptor, ImageManifest, MediaType};
use serde_json::json;

use super::{descriptor, io_err, to_digest, Error, Layout, Result};
use crate::digest::Digest;

/// The tag cosign's layout stores the signatures of `manifest` under.
pub fn signature_tag(manifest: &Digest) -> String {
    format!("sha256-{}.sig", manifest.hex())
}

/// The blobs and manifest of a cosign signature: (config, payload, manifest).
pub struct SignatureImage {
    pub config: Vec<u8>,
    pub payload: Vec<u8>,
    pub manifest: Vec<u8>,
}

/// Annotation saying what an imgrep attachment is (`sbom`, `provenance`,
/// `signature`).
pub const ANNOTATION_ATTACHMENT: &str = "dev.imgrep.attachment";
/// Annotation naming the signer's key id on a signed attachment.
pub const ANNOTATION_SIGNER: &str = "dev.imgrep.signer";

/// The empty config of an artifact manifest (image-spec 1.1).
pub const EMPTY_MEDIA_TYPE: &str = "application/vnd.oci.empty.v1+json";
const EMPTY_JSON: &[u8] = b"{}";

/// An artifact to attach: its blobs, each with its media type.
#[derive(Debug, Clone)]
pub struct Artifact<'a> {
    /// `artifactType` of the manifest, e.g. `application/spdx+json`.
    pub artifact_type: &'a str,
    pub layers: Vec<ArtifactLayer<'a>>,
    /// Annotations of the manifest (and of its index.json entry).
    pub annotations: HashMap<String, String>,
}

/// One blob of an artifact.
#[derive(Debug, Clone)]
pub struct ArtifactLayer<'a> {
    pub media_type: &'a str,
    pub bytes: &'a [u8],
    /// The file name `oras pull` writes it to
    /// (`org.opencontainers.image.title`).
    pub title: Option<&'a str>,
}

/// The canonical bytes of the manifest of `artifact` about `subject`
/// (its blobs and the empty config already written).
pub fn artifact_manifest(subject: &Descriptor, artifact: &Artifact) -> Vec<u8> {
    let layers: Vec<serde_json::Value> = artifact
        .layers
        .iter()
        .map(|l| {
            let mut layer = json!({
                "mediaType": l.media_type,
                "digest": Digest::of(l.bytes).to_string(),
                "size": l.bytes.len(),
            });
            if let Some(title) = l.title {
                layer["annotations"] = json!({ TITLE: title });
            }
            layer
        })
        .collect();
    let mut m = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "artifactType": artifact.artifact_type,
        "config": {
            "mediaType": EMPTY_MEDIA_TYPE,
            "digest": Digest::of(EMPTY_JSON).to_string(),
            "size": EMPTY_JSON.len(),
            "data": "e30=",
        },
        "layers": layers,
        "subject": {
            "mediaType": subject.media_type().to_string(),
            "digest": subject.digest().to_string(),
            "size": subject.size(),
        },
    });
    if !artifact.annotations.is_empty() {
        m["annotations"] = json!(artifact.annotations);
    }
    crate::canonical::to_vec(&m).expect("a manifest serializes")
}

const TITLE: &str = "org.opencontainers.image.title";

impl Layout {
    /// Writes `artifact` as a manifest whose subject is `subject` and lists
    /// it in index.json. An attached artifact of the same type and subject
    /// whose annotation `replaces` has the same value is removed (a new
    /// SBOM replaces the old one; one provenance per signer); so are the
    /// attachments of images no longer listed in index.json.
    pub fn attach(
        &self,
        subject: &Descriptor,
        artifact: &Artifact,
        replaces: Option<&str>,
    ) -> Result<Descriptor> {
        for layer in &artifact.layers {
            self.put_blob(layer.bytes)?;
        }
        self.put_blob(EMPTY_JSON)?;
        let bytes = artifact_manifest(subject, artifact);
        let (digest, size) = self.put_blob(&bytes)?;
        let mut desc = descriptor(
            "application/vnd.oci.image.manifest.v1+json",
            &digest,
            size,
            (!artifact.annotations.is_empty()).then(|| artifact.annotations.clone()),
        );
        desc.set_artifact_type(Some(MediaType::from(artifact.artifact_type)));
        self.add_untagged(desc.clone(), |entry, manifest| {
            let same_slot = manifest
                .subject()
                .as_ref()
                .is_some_and(|s| s.digest() == subject.digest())
                && entry
                    .artifact_type()
                    .as_ref()
                    .map(|t| t.to_string())
                    .as_deref()
                    == Some(artifact.artifact_type)
                && replaces.is_some_and(|key| {
                    annotation(entry, key) == artifact.annotations.get(key).map(String::as_str)
                });
            !same_slot
        })?;
        Ok(desc)
    }

    /// Adds an untagged manifest (an artifact pulled from a registry) to
    /// index.json, keeping every other entry.
    pub fn add_referrer(&self, desc: Descriptor) -> Result<()> {
        self.add_untagged(desc, |_, _| true)
    }

    /// The artifacts in index.json whose subject is `subject`, with their
    /// manifests, in index order.
    pub fn referrers(&self, subject: &Digest) -> Result<Vec<(Descriptor, ImageManifest)>> {
        let mut out = Vec::new();
        for d in self.index()?.manifests() {
            if super::ref_of(d).is_some() {
                continue;
            }
            let manifest: ImageManifest = match self.read_json(&to_digest(d.digest())) {
                Ok(m) => m,
                Err(_) => continue,
            };
            if manifest
                .subject()
                .as_ref()
                .is_some_and(|s| to_digest(s.digest()) == *subject)
            {
                out.push((d.clone(), manifest));
            }
        }
        Ok(out)
    }

    /// The bytes of a blob, verified against its digest.
    pub fn read_blob(&self, digest: &Digest) -> Result<Vec<u8>> {
        let path = self.blob_path(digest);
        let bytes = std::fs::read(&path).map_err(io_err(&path))?;
        if Digest::of(&bytes) != *digest {
            return Err(Error::Invalid(super::Problem {
                path: super::blob_rel(digest),
                message: "content does not match its digest".to_owned(),
            }));
        }
        Ok(bytes)
    }

    /// Adds `desc` untagged, keeping the entries `keep` accepts among the
    /// untagged ones whose subject is still tagged; tagged entries stay.
    fn add_untagged(
        &self,
        desc: Descriptor,
        keep: impl Fn(&Descriptor, &ImageManifest) -> bool,
    ) -> Result<()> {
        let _lock = self.lock()?;
        let mut index = self.index()?;
        let tagged: Vec<String> = index
            .manifests()
            .iter()
            .filter(|d| super::ref_of(d).is_some())
            .map(|d| d.digest().to_string())
            .collect();
        let mut entries: Vec<Descriptor> = index
            .manifests()
            .iter()
            .filter(|d| {
                if super::ref_of(d).is_some() {
                    return true;
                }
                if d.digest() == desc.digest() {
                    return false;
                }
                match self.read_json::<ImageManifest>(&to_digest(d.digest())) {
                    Ok(m) => {
                        let live = m
                            .subject()
                            .as_ref()
                            .is_none_or(|s| tagged.contains(&s.digest().to_string()));
                        live && keep(d, &m)
                    }
                    Err(_) => true,
                }
            })
            .cloned()
            .collect();
        entries.push(desc);
        entries.sort_by(|a, b| {
            (super::ref_of(a), a.digest().to_string())
                .cmp(&(super::ref_of(b), b.digest().to_string()))
        });
        index.set_manifests(entries);
        self.write_index(&index)
    }
}

fn annotation<'a>(d: &'a Descriptor, key: &str) -> Option<&'a str> {
    d.annotations()
        .as_ref()
        .and_then(|a| a.get(key))
        .map(String::as_str)
}
