//! The manifest media types a pull accepts (OCI and Docker v2 schema 2,
//! images and indexes), and the few fields a client must read from them.

use serde::Deserialize;

use crate::digest::Digest;

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

/// The `Accept` header of manifest requests.
pub const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.manifest.v1+json, \
    application/vnd.docker.distribution.manifest.v2+json, \
    application/vnd.oci.image.index.v1+json, \
    application/vnd.docker.distribution.manifest.list.v2+json";

pub fn is_index(media_type: &str) -> bool {
    media_type == OCI_INDEX || media_type == DOCKER_MANIFEST_LIST
}

pub fn is_image(media_type: &str) -> bool {
    media_type == OCI_MANIFEST || media_type == DOCKER_MANIFEST
}

#[derive(Debug, Clone, Deserialize)]
pub struct Descriptor {
    pub digest: Digest,
    pub size: u64,
    #[serde(default)]
    pub platform: Option<Platform>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Platform {
    pub architecture: String,
    pub os: String,
}

/// An image manifest or an index: what a pull follows.
#[derive(Debug, Deserialize)]
pub struct Document {
    #[serde(rename = "mediaType")]
    pub media_type: Option<String>,
    pub config: Option<Descriptor>,
    #[serde(default)]
    pub layers: Vec<Descriptor>,
    #[serde(default)]
    pub manifests: Vec<Descriptor>,
}

/// The media type of a manifest: the `Content-Type` the registry sent
/// (without parameters) when it is one we know, else the document's own
/// `mediaType` field.
pub fn media_type(content_type: Option<&str>, doc: &Document) -> Option<String> {
    let header = content_type
        .map(|c| c.split(';').next().unwrap_or(c).trim().to_owned())
        .filter(|c| is_image(c) || is_index(c));
    header.or_else(|| doc.media_type.clone())
}

/// The linux/amd64 entry of an index (imgrep images are x86_64 Linux).
pub fn pick_platform(doc: &Document) -> Option<&Descriptor> {
    doc.manifests.iter().find(|d| {
        d.platform
            .as_ref()
            .is_some_and(|p| p.os == "linux" && p.architecture == "amd64")
    })
}

#[derive(Deserialize)]
pub struct Config {
    pub rootfs: RootFs,
}

#[derive(Deserialize)]
pub struct RootFs {
    pub diff_ids: Vec<Digest>,
}
