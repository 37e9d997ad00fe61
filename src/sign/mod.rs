//! Signing and verifying published statements (docs/signing.md): minisign
//! keys, one signature per signer per statement, and an M-of-N policy over
//! the keys a verifier chooses to trust.

pub mod attached;
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

use crate::digest::Digest;
use crate::sign::image::ImageError;
use crate::sign::keys::{KeyId, SigningKey};
use crate::sign::manifests::{ManifestError, Manifests, PackageVersion};
use crate::sign::signature::{SignatureError, SignatureFile};
use crate::statement::ImageDigests;

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
    #[error("refusing to sign {package}: the {what} image differs from the statement: {}", differences.join("; "))]
    Mismatch {
        package: PackageVersion,
        what: &'static str,
        differences: Vec<String>,
    },
}

/// What the signer checked a statement against before signing it.
#[derive(Debug, Clone, Copy)]
pub struct Checked<'a> {
    /// The signer's own image of the package.
    pub image: &'a ImageDigests,
    /// The input digest that image was built from, when known: the
    /// statement's must then be the same.
    pub input: Option<&'a Digest>,
    /// Whose image it is, for a refusal: `local`, `rebuilt`.
    pub what: &'static str,
}

/// A signature written (or found already there) by [`sign_package`].
#[derive(Debug, Clone, serde::Serialize)]
pub struct Signed {
    pub package: String,
    pub key_id: KeyId,
    pub role: String,
    pub statement: Digest,
    pub signature: PathBuf,
    /// False when this key's signature of this statement in this role was
    /// already there and was left as it is.
    pub written: bool,
}

/// Signs the statement of `pv` with `key` as `role`, after checking that the
/// image tagged `NAME:VERSION` in the OCI layout `layout` (the signer's own
/// build) has exactly the statement's digests. See [`sign_checked`].
pub fn sign_package(
    manifests: &Manifests,
    pv: &PackageVersion,
    key: &SigningKey,
    role: &str,
    layout: &Path,
) -> Result<Signed, SignError> {
    let local = image::local_image(layout, &pv.name, &pv.version)?;
    sign_checked(
        manifests,
        pv,
        key,
        role,
        Checked {
            image: &local,
            input: None,
            what: "local",
        },
    )
}

/// Signs the statement of `pv` with `key` as `role` if it names exactly the
/// digests of `checked` (and its input digest, when given). Writes
/// `sigs/<KEYID>.minisig` and removes any other file of `sigs/` signed by
/// this key: one signature per signer per statement. Idempotent: a valid
/// signature of these statement bytes by this key in this role is left as
/// it is (minisign signatures are randomised, so writing it again would
/// only change the file).
pub fn sign_checked(
    manifests: &Manifests,
    pv: &PackageVersion,
    key: &SigningKey,
    role: &str,
    checked: Checked<'_>,
) -> Result<Signed, SignError> {
    if !signature::valid_role(role) {
        return Err(SignError::Role(role.to_owned()));
    }
    let stored = manifests.read_statement(pv)?;
    let mut differences = stored
        .statement
        .image
        .differences(checked.image, "signed", checked.what);
    if let Some(input) = checked
        .input
        .filter(|i| **i != stored.statement.input_digest)
    {
        differences.push(format!(
            "input digest: signed {}, {} {input}",
            stored.statement.input_digest, checked.what
        ));
    }
    if !differences.is_empty() {
        return Err(SignError::Mismatch {
            package: pv.clone(),
            what: checked.what,
            differences,
        });
    }
    let path = manifests.signature_path(pv, key.id);
    let io_err = |path: &Path| {
        let path = path.to_owned();
        move |error| SignError::Io { path, error }
    };
    for other in manifests.signature_files(pv)? {
        if other != path && SignatureFile::read(&other).is_ok_and(|s| s.key_id == key.id) {
            std::fs::remove_file(&other).map_err(io_err(&other))?;
        }
    }
    let kept = SignatureFile::read(&path).is_ok_and(|s| {
        s.key_id == key.id && s.verify(&key.public, &stored.bytes).as_deref() == Ok(role)
    });
    if !kept {
        let text = signature::sign_statement(
            key,
            &stored.bytes,
            role,
            &format!("imgrep signature of {pv} by key {}", key.id),
        )?;
        write_published(&path, text.as_bytes()).map_err(io_err(&path))?;
    }
    Ok(Signed {
        package: pv.to_string(),
        key_id: key.id,
        role: role.to_owned(),
        statement: stored.statement.digest(),
        signature: path,
        written: !kept,
    })
}

/// Writes a file meant to be published (statement, signature): atomically,
/// and readable by all (write_atomic's temporary files are 0600).
pub(crate) fn write_published(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    crate::fsutil::write_atomic(path, bytes)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644))
}
