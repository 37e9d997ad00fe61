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
use crate::statement::ImageDigests;

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
    /// The statement's digest; none when no statement was found (only
    /// with `verify --attached`: nothing attached to the registry's image).
    pub statement: Option<Digest>,
    /// The image manifest digest the statement signs.
    pub manifest: Option<Digest>,
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
    /// What was found but not counted and is not a signer's row (attached
    /// artifacts that are malformed or about another statement).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
    /// Every reason the package fails; empty when it passes.
    pub failures: Vec<String>,
    pub ok: bool,
}

impl PackageReport {
    /// The report of a package for which no statement was found: unsigned.
    pub fn unsigned(pv: &PackageVersion, policy: &Policy, why: String) -> PackageReport {
        let signatures = policy.tally([]);
        let mut failures = vec![why];
        failures.extend(signatures.shortfalls());
        PackageReport {
            name: pv.name.clone(),
            version: pv.version.clone(),
            statement: None,
            manifest: None,
            signers: Vec::new(),
            trusted_signatures: 0,
            signatures,
            image: ImageCheck::NotChecked,
            image_ref: None,
            notes: Vec::new(),
            failures,
            ok: false,
        }
    }

    /// Records the check of the image (`what`: `local image`, `registry
    /// image REF`) against the signed digests.
    pub fn set_image(&mut self, image: ImageCheck, what: &str) {
        if let ImageCheck::Fail(reasons) = &image {
            self.failures
                .extend(reasons.iter().map(|r| format!("{what}: {r}")));
        }
        self.image = image;
        self.ok = self.failures.is_empty();
    }
}

/// Compares the signed digests with an image's.
pub fn image_check(signed: &ImageDigests, image: &ImageDigests, theirs: &str) -> ImageCheck {
    match signed.differences(image, "signed", theirs) {
        d if d.is_empty() => ImageCheck::Ok,
        d => ImageCheck::Fail(d),
    }
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
    let signatures = manifests
        .signature_files(pv)?
        .iter()
        .map(|path| SignatureFile::read(path))
        .collect::<Result<Vec<_>, _>>()?;
    let mut report = verify_statement(
        pv,
        &stored.bytes,
        &stored.statement.image,
        &signatures,
        trust,
        policy,
    );
    if let Some(layout) = layout {
        let check = match image::local_image(layout, &pv.name, &pv.version) {
            Err(e) => ImageCheck::Fail(vec![e.to_string()]),
            Ok(local) => image_check(&stored.statement.image, &local, "local"),
        };
        report.set_image(check, "local image");
    }
    Ok(report)
}

/// Counts the signatures of one statement (its bytes, and the image it
/// signs) against the trusted keys and the policy; the image is not
/// checked (see [`PackageReport::set_image`]).
pub fn verify_statement(
    pv: &PackageVersion,
    statement: &[u8],
    signed: &ImageDigests,
    signatures: &[SignatureFile],
    trust: &Trust,
    policy: &Policy,
) -> PackageReport {
    let mut signers = Vec::new();
    // Public key bytes -> the signer they were counted for.
    let mut counted: BTreeMap<[u8; 32], String> = BTreeMap::new();
    let mut counted_roles = Vec::new();
    for sig in signatures {
        let mut report = SignerReport {
            key_id: sig.key_id,
            signer: None,
            role: None,
            file: sig.path.clone(),
            status: SignerStatus::Unknown,
            reason: Some("unknown key (not among the trusted keys)".into()),
        };
        if let Some(key) = trust.get(&sig.key_id) {
            report.signer = Some(key.signer.clone());
            report.role = key.role.clone();
            let (status, reason) = match sig.verify(&key.key, statement) {
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
    let failures = signatures.shortfalls();
    PackageReport {
        name: pv.name.clone(),
        version: pv.version.clone(),
        statement: Some(Digest::of(statement)),
        manifest: Some(signed.manifest),
        signers,
        trusted_signatures: counted.len(),
        signatures,
        image: ImageCheck::NotChecked,
        image_ref: None,
        notes: Vec::new(),
        ok: failures.is_empty(),
        failures,
    }
}
