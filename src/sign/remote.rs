//! `imgrep verify --registry HOST/PREFIX`: the image of each signed
//! statement, fetched from `HOST/PREFIX/NAME:TAG` (TAG the version made a
//! tag, docs/registry.md), must have the signed manifest digest and
//! diff_ids, as the local check demands of a layout's image.

use crate::registry::{version_tag, Client, Repository};
use crate::sign::manifests::{ManifestError, Manifests, PackageVersion};
use crate::sign::verify::{ImageCheck, PackageReport};
use crate::statement::ImageDigests;

/// Where the image of `pv` is looked up under `prefix`.
pub fn image_reference(prefix: &Repository, pv: &PackageVersion) -> (Repository, String) {
    let repo = Repository {
        registry: prefix.registry.clone(),
        name: format!("{}/{}", prefix.name, pv.name),
    };
    (repo, version_tag(&pv.version))
}

/// Checks the registry's image of `pv` against its statement and records
/// the outcome in `report` (which `verify_package` made without an image
/// check). Registry errors are failures in the report, not input errors.
pub fn check_registry(
    report: &mut PackageReport,
    manifests: &Manifests,
    pv: &PackageVersion,
    client: &Client,
    prefix: &Repository,
) -> Result<(), ManifestError> {
    let signed = manifests.read_statement(pv)?.statement.image;
    let (repo, tag) = image_reference(prefix, pv);
    let reference = format!("{repo}:{tag}");
    report.image = match client.image_digests(&repo, &tag) {
        Err(e) => ImageCheck::Fail(vec![e.to_string()]),
        Ok((manifest, diff_ids)) => {
            let remote = ImageDigests { manifest, diff_ids };
            match signed.differences(&remote, "signed", "registry") {
                d if d.is_empty() => ImageCheck::Ok,
                d => ImageCheck::Fail(d),
            }
        }
    };
    if let ImageCheck::Fail(reasons) = &report.image {
        report.failures.extend(
            reasons
                .iter()
                .map(|r| format!("registry image {reference}: {r}")),
        );
    }
    report.image_ref = Some(reference);
    report.ok = report.failures.is_empty();
    Ok(())
}
