//! The digests of a local image, read from an OCI image layout: index.json ->
//! the manifest tagged `NAME:VERSION` -> its layers and config -> the
//! config's diff_ids. Every blob read is checked against its digest, so what
//! is compared with a statement is what the layout really holds.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::digest::Digest;
use crate::statement::ImageDigests;

const REF_NAME: &str = "org.opencontainers.image.ref.name";
const MAX_JSON_BLOB: u64 = 16 << 20;

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("{path}: {error}")]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("{path}: {message}")]
    Json { path: PathBuf, message: String },
    #[error("{path}: content does not match its digest (got {actual})")]
    Digest { path: PathBuf, actual: Digest },
    #[error("{layout}: no image tagged {reference} in index.json")]
    NotFound { layout: PathBuf, reference: String },
}

#[derive(Deserialize)]
struct Descriptor {
    digest: Digest,
    #[serde(default)]
    annotations: std::collections::BTreeMap<String, String>,
}

#[derive(Deserialize)]
struct Index {
    manifests: Vec<Descriptor>,
}

#[derive(Deserialize)]
struct Manifest {
    config: Descriptor,
}

#[derive(Deserialize)]
struct Config {
    rootfs: RootFs,
}

#[derive(Deserialize)]
struct RootFs {
    diff_ids: Vec<Digest>,
}

/// The manifest digest and diff_ids of the image tagged `name:version` in
/// the OCI layout at `layout`.
pub fn local_image(layout: &Path, name: &str, version: &str) -> Result<ImageDigests, ImageError> {
    let reference = format!("{name}:{version}");
    let index_path = layout.join("index.json");
    let index: Index = parse(&index_path, &read(&index_path)?)?;
    let desc = index
        .manifests
        .iter()
        .find(|d| d.annotations.get(REF_NAME) == Some(&reference))
        .ok_or_else(|| ImageError::NotFound {
            layout: layout.to_owned(),
            reference,
        })?;
    let (path, bytes) = read_blob(layout, &desc.digest)?;
    let manifest: Manifest = parse(&path, &bytes)?;
    let (path, bytes) = read_blob(layout, &manifest.config.digest)?;
    let config: Config = parse(&path, &bytes)?;
    Ok(ImageDigests {
        manifest: desc.digest,
        diff_ids: config.rootfs.diff_ids,
    })
}

fn read(path: &Path) -> Result<Vec<u8>, ImageError> {
    use std::io::Read as _;
    let io = |source| ImageError::Io {
        path: path.to_owned(),
        error: source,
    };
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .map_err(io)?
        .take(MAX_JSON_BLOB)
        .read_to_end(&mut bytes)
        .map_err(io)?;
    Ok(bytes)
}

fn read_blob(layout: &Path, digest: &Digest) -> Result<(PathBuf, Vec<u8>), ImageError> {
    let path = layout.join("blobs/sha256").join(digest.hex());
    let bytes = read(&path)?;
    let actual = Digest::of(&bytes);
    if actual != *digest {
        return Err(ImageError::Digest { path, actual });
    }
    Ok((path, bytes))
}

fn parse<T: serde::de::DeserializeOwned>(path: &Path, bytes: &[u8]) -> Result<T, ImageError> {
    serde_json::from_slice(bytes).map_err(|e| ImageError::Json {
        path: path.to_owned(),
        message: e.to_string(),
    })
}
