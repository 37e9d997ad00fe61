//! Verifying one package version: each signature against the trusted keys,
//! each trusted public key counted once (by its key bytes, whatever key id
//! or name it comes under), the policy over the distinct keys that
//! signed, and the local image against the signed digests.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::digest::Digest;
use crate::sign::image;
use crate::sign::keys::{public_key_bytes, KeyId};
use crate::sign::manifests::{ManifestError, Manifests, PackageVersion};
use crate::sign::policy::{Policy, Tally};
use crate::sign::signature::{SignatureError, SignatureFile};
use crate::sign::trust::Trust;

#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    #[error(transparent)]
    Signature(#[from] SignatureError),
}

/// What became of one signature file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SignerStatus {
    /// Valid signature by a trusted key; counted.
    Ok,
    /// Signature by a trusted key that does not hold; not counted.
    Fail,
    /// Signature by a key the verifier does not trust; ignored.
    Unknown,
    /// Another valid signature by a public key already counted (under this
    /// key id or another); not counted again.
    Duplicate,
}

#[derive(Debug, Clone, Serialize)]
pub struct SignerReport {
    pub key_id: KeyId,
    /// The trusted signer's name; none for unknown keys.
    pub signer: Option<String>,
    /// The role the trust anchors give the key.
    pub role: Option<String>,
    pub file: PathBuf,
    pub status: SignerStatus,
    pub reason: Option<String>,
}

/// Whether the local image has the signed digests.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "status", content = "reasons")]
pub enum ImageCheck {
    NotChecked,
    Ok,
    Fail(Vec<String>),
}

#[derive(Debug, Clone, Serialize)]
pub struct PackageReport {
    pub name: String,
    pub version: String,
    pub statement: Digest,
    pub manifest: Digest,
    pub signers: Vec<SignerReport>,
    /// Distinct trusted keys with a valid signature.
    pub trusted_signatures: usize,
    /// Those keys against the policy: unsigned, under-signed or signed,
    /// per role.
    pub signatures: Tally,
    pub image: ImageCheck,
    /// The registry reference the image was checked at (`verify --registry`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image_ref: Option<String>,
    /// Every reason the package fails; empty when it passes.
    pub failures: Vec<String>,
    pub ok: bool,
}

/// Verifies `pv`. `layout` is the OCI layout whose image tagged
/// `NAME:VERSION` must have the signed digests; `None` skips that check.
/// Errors are input errors (an unreadable or malformed statement or
/// signature file); everything else is in the report.
pub fn verify_package(
    manifests: &Manifests,
    pv: &PackageVersion,
    trust: &Trust,
    policy: &Policy,
    layout: Option<&Path>,
) -> Result<PackageReport, VerifyError> {
    let stored = manifests.read_statement(pv)?;
    let mut signers = Vec::new();
    // Public key bytes -> the signer they were counted for.
    let mut counted: BTreeMap<[u8; 32], String> = BTreeMap::new();
    let mut counted_roles = Vec::new();
    for path in manifests.signature_files(pv)? {
        let sig = SignatureFile::read(&path)?;
        let mut report = SignerReport {
            key_id: sig.key_id,
            signer: None,
            role: None,
            file: path,
            status: SignerStatus::Unknown,
            reason: Some("unknown key (not among the trusted keys)".into()),
        };
        if let Some(key) = trust.get(&sig.key_id) {
            report.signer = Some(key.signer.clone());
            report.role = key.role.clone();
            let (status, reason) = match sig.verify(&key.key, &stored.bytes) {
                Err(reason) => (SignerStatus::Fail, Some(reason)),
                Ok(signed_as) if key.role.as_ref().is_some_and(|r| *r != signed_as) => (
                    SignerStatus::Fail,
                    Some(format!(
                        "signed as role {signed_as}, but {} gives this key role {}",
                        key.origin,
                        key.role.as_deref().unwrap_or_default()
                    )),
                ),
                Ok(_) => match counted.get(&public_key_bytes(&key.key)) {
                    Some(first) if *first == key.signer => (
                        SignerStatus::Duplicate,
                        Some("key already counted for this statement".into()),
                    ),
                    Some(first) => (
                        SignerStatus::Duplicate,
                        Some(format!(
                            "key already counted for this statement: the same public key \
                             as signer {first}, under another key id or name (one key, one vote)"
                        )),
                    ),
                    None => {
                        counted.insert(public_key_bytes(&key.key), key.signer.clone());
                        counted_roles.push(key.role.clone());
                        (SignerStatus::Ok, None)
                    }
                },
            };
            report.status = status;
            report.reason = reason;
        }
        signers.push(report);
    }
    let signatures = policy.tally(counted_roles.iter().map(Option::as_deref));
    let mut failures = signatures.shortfalls();
    let image = match layout {
        None => ImageCheck::NotChecked,
        Some(layout) => match image::local_image(layout, &pv.name, &pv.version) {
            Err(e) => ImageCheck::Fail(vec![e.to_string()]),
            Ok(local) => match stored
                .statement
                .image
                .differences(&local, "signed", "local")
            {
                d if d.is_empty() => ImageCheck::Ok,
                d => ImageCheck::Fail(d),
            },
        },
    };
    if let ImageCheck::Fail(reasons) = &image {
        failures.extend(reasons.iter().map(|r| format!("local image: {r}")));
    }
    Ok(PackageReport {
        name: pv.name.clone(),
        version: pv.version.clone(),
        statement: Digest::of(&stored.bytes),
        manifest: stored.statement.image.manifest,
        signers,
        trusted_signatures: counted.len(),
        signatures,
        image,
        image_ref: None,
        ok: failures.is_empty(),
        failures,
    })
}
