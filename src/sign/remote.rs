//! `imgrep verify --registry HOST/PREFIX`: the image of each signed
//! statement, fetched from `HOST/PREFIX/NAME:TAG` (TAG the version made a
//! tag, docs/registry.md), must have the signed manifest digest and
//! diff_ids, as the local check demands of a layout's image. With
//! `--attached`, the statements and signatures too come from the registry:
//! the artifacts attached to that image (src/sign/attached.rs).

use crate::registry::{version_tag, Client, Repository};
use crate::sign::attached;
use crate::sign::manifests::PackageVersion;
use crate::sign::policy::Policy;
use crate::sign::trust::Trust;
use crate::sign::verify::{image_check, verify_statement, ImageCheck, PackageReport};
use crate::statement::ImageDigests;

/// Where the image of `pv` is looked up under `prefix`.
pub fn image_reference(prefix: &Repository, pv: &PackageVersion) -> (Repository, String) {
    let repo = Repository {
        registry: prefix.registry.clone(),
        name: format!("{}/{}", prefix.name, pv.name),
    };
    (repo, version_tag(&pv.version))
}

/// Checks the registry's image of `pv` against the `signed` digests and
/// records the outcome in `report` (made without an image check).
/// Registry errors are failures in the report, not input errors.
pub fn check_registry(
    report: &mut PackageReport,
    signed: &ImageDigests,
    pv: &PackageVersion,
    client: &Client,
    prefix: &Repository,
) {
    let (repo, tag) = image_reference(prefix, pv);
    let reference = format!("{repo}:{tag}");
    let check = match client.image_digests(&repo, &tag) {
        Err(e) => ImageCheck::Fail(vec![e.to_string()]),
        Ok((manifest, diff_ids)) => {
            image_check(signed, &ImageDigests { manifest, diff_ids }, "registry")
        }
    };
    report.set_image(check, &format!("registry image {reference}"));
    report.image_ref = Some(reference);
}

/// Verifies `pv` from the registry alone: its image at `prefix`, the
/// statements and signatures attached to that image, counted against
/// `trust` and `policy`. Where several statements about the image are
/// attached (a republished one), each is counted on its own and the one
/// that goes furthest is reported: signatures of different statements
/// never add up. Registry errors are failures in the report.
pub fn verify_attached(
    client: &Client,
    prefix: &Repository,
    pv: &PackageVersion,
    trust: &Trust,
    policy: &Policy,
) -> PackageReport {
    let (repo, tag) = image_reference(prefix, pv);
    let reference = format!("{repo}:{tag}");
    let failed = |why: String| {
        let mut r = PackageReport::unsigned(pv, policy, why);
        r.image_ref = Some(reference.clone());
        r
    };
    let (manifest, diff_ids) = match client.image_digests(&repo, &tag) {
        Ok(d) => d,
        Err(e) => return failed(format!("registry image {reference}: {e}")),
    };
    let referrers = match client.fetch_referrers(&repo, &manifest, attached::ARTIFACT_TYPE) {
        Ok(r) => r,
        Err(e) => return failed(format!("signatures attached to {reference}: {e}")),
    };
    let (found, notes) = attached::statements(&referrers, &repo.to_string(), pv, &manifest);
    let remote = ImageDigests { manifest, diff_ids };
    let best = found
        .iter()
        .map(|f| {
            let mut r = verify_statement(
                pv,
                &f.bytes,
                &f.statement.image,
                &f.signatures,
                trust,
                policy,
            );
            r.set_image(
                image_check(&f.statement.image, &remote, "registry"),
                &format!("registry image {reference}"),
            );
            r
        })
        .max_by_key(|r| (r.ok, r.trusted_signatures));
    let mut report = best.unwrap_or_else(|| {
        failed(format!(
            "no imgrep statement signatures are attached to {reference} ({manifest})"
        ))
    });
    report.image_ref = Some(reference);
    report.notes = notes;
    report
}
