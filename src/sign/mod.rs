//! Signing and verifying published statements (docs/signing.md): minisign
//! keys, one signature per signer per statement, and an M-of-N policy over
//! the keys a verifier chooses to trust.

pub mod image;
pub mod keys;
pub mod manifests;
pub mod policy;
pub mod raw;
pub mod remote;
pub mod signature;
pub mod trust;
pub mod verify;

use std::path::{Path, PathBuf};

use crate::sign::image::ImageError;
use crate::sign::keys::{KeyId, SigningKey};
use crate::sign::manifests::{ManifestError, Manifests, PackageVersion};
use crate::sign::signature::{SignatureError, SignatureFile};

#[derive(Debug, thiserror::Error)]
pub enum SignError {
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    #[error(transparent)]
    Image(#[from] ImageError),
    #[error(transparent)]
    Signature(#[from] SignatureError),
    #[error("{path}: {error}")]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("invalid role {0:?}: expected [a-z][a-z0-9_-]*")]
    Role(String),
    #[error("refusing to sign {package}: the local image differs from the statement: {}", differences.join("; "))]
    Mismatch {
        package: PackageVersion,
        differences: Vec<String>,
    },
}

/// A signature written by [`sign_package`].
#[derive(Debug, serde::Serialize)]
pub struct Signed {
    pub package: String,
    pub key_id: KeyId,
    pub role: String,
    pub statement: crate::digest::Digest,
    pub signature: PathBuf,
}

/// Signs the statement of `pv` with `key` as `role`, after checking that the
/// image tagged `NAME:VERSION` in the OCI layout `layout` (the signer's own
/// build) has exactly the statement's digests. Writes
/// `sigs/<KEYID>.minisig`, replacing this key's earlier signature (also one
/// stored under another file name).
pub fn sign_package(
    manifests: &Manifests,
    pv: &PackageVersion,
    key: &SigningKey,
    role: &str,
    layout: &Path,
) -> Result<Signed, SignError> {
    if !signature::valid_role(role) {
        return Err(SignError::Role(role.to_owned()));
    }
    let stored = manifests.read_statement(pv)?;
    let local = image::local_image(layout, &pv.name, &pv.version)?;
    let differences = stored
        .statement
        .image
        .differences(&local, "signed", "local");
    if !differences.is_empty() {
        return Err(SignError::Mismatch {
            package: pv.clone(),
            differences,
        });
    }
    let text = signature::sign_statement(
        key,
        &stored.bytes,
        role,
        &format!("imgrep signature of {pv} by key {}", key.id),
    )?;
    let path = manifests.signature_path(pv, key.id);
    for other in manifests.signature_files(pv)? {
        if other != path && SignatureFile::read(&other).is_ok_and(|s| s.key_id == key.id) {
            std::fs::remove_file(&other).map_err(|source| SignError::Io {
                path: other.clone(),
                error: source,
            })?;
        }
    }
    write_published(&path, text.as_bytes()).map_err(|source| SignError::Io {
        path: path.clone(),
        error: source,
    })?;
    Ok(Signed {
        package: pv.to_string(),
        key_id: key.id,
        role: role.to_owned(),
        statement: stored.statement.digest(),
        signature: path,
    })
}

/// Writes a file meant to be published (statement, signature): atomically,
/// and readable by all (write_atomic's temporary files are 0600).
pub(crate) fn write_published(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    crate::fsutil::write_atomic(path, bytes)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644))
}
