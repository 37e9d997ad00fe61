//! Bootstrap results against the statements a seed tarball carries: the
//! image a bootstrap built must be the one the publisher's statement names.

use serde::Serialize;

use crate::builder::Built;
use crate::sign::manifests::{ManifestError, Manifests, PackageVersion};
use crate::statement::ImageDigests;

/// How one built package compares with its statement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "status", content = "differences")]
pub enum StatementCheck {
    /// The tarball has no statement for this package version.
    Missing,
    /// Input digest, manifest digest and every diff_id are the statement's.
    Match,
    /// What differs, one line per field (statement value, then built value).
    Mismatch(Vec<String>),
}

/// Compares `built` with the statement of its name and version in
/// `manifests`, if there is one. A statement that cannot be read is an
/// error (the tarball was verified, so it is the publisher's).
pub fn check_statement(
    manifests: &Manifests,
    built: &Built,
) -> Result<StatementCheck, ManifestError> {
    let pv = PackageVersion {
        name: built.name.clone(),
        version: built.version.clone(),
    };
    if !manifests.statement_path(&pv).exists() {
        return Ok(StatementCheck::Missing);
    }
    let stored = manifests.read_statement(&pv)?;
    let mut diffs = Vec::new();
    if stored.statement.input_digest != built.input {
        diffs.push(format!(
            "input digest: statement {}, built {}",
            stored.statement.input_digest, built.input
        ));
    }
    let built_image = ImageDigests {
        manifest: built.manifest_digest(),
        diff_ids: built.diff_ids.clone(),
    };
    diffs.extend(
        stored
            .statement
            .image
            .differences(&built_image, "statement", "built"),
    );
    Ok(if diffs.is_empty() {
        StatementCheck::Match
    } else {
        StatementCheck::Mismatch(diffs)
    })
}
