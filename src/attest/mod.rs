//! What an image says about itself, for the tools users already have: an
//! SPDX 2.3 SBOM of the packages in it, an in-toto statement with a SLSA
//! provenance v1 predicate in a DSSE envelope, and image signatures podman
//! checks: cosign-style for its `sigstoreSigned` policy, OpenPGP "simple
//! signing" for `signedBy` (docs/attest.md).
//!
//! Everything here is a pure function of plain data (recipes, digests, the
//! signer's key): generating the same attestation twice, on any machine,
//! gives the same bytes. Where the bytes go (OCI layout, registry) is
//! `src/oci/referrers.rs` and `src/registry/`.

pub mod cosign;
pub mod dsse;
pub mod pgp;
pub mod provenance;
pub mod spdx;

use crate::digest::Digest;
use crate::recipe::{Pin, Recipe};

/// Media types of what imgrep attaches to an image.
pub const SPDX_MEDIA_TYPE: &str = "application/spdx+json";
pub const DSSE_MEDIA_TYPE: &str = "application/vnd.dsse.envelope.v1+json";
/// artifactType of a provenance attachment (the envelope's payload type).
pub const PROVENANCE_ARTIFACT_TYPE: &str = "application/vnd.in-toto+json";

/// The image an attestation is about.
#[derive(Debug, Clone)]
pub struct Subject {
    pub name: String,
    pub version: String,
    pub manifest: Digest,
}

/// A package whose layer the image holds, with what built it.
#[derive(Debug, Clone)]
pub struct Part<'a> {
    pub recipe: &'a Recipe,
    pub input: Digest,
    pub manifest: Digest,
    pub diff_ids: Vec<Digest>,
}

/// A download location a user can follow: the first `http(s)://` URL of a
/// source (a `mirror://` URL means something only on the host that
/// resolves it).
fn download_location(source: &crate::recipe::Source) -> Option<&str> {
    source
        .urls
        .iter()
        .map(String::as_str)
        .find(|u| u.starts_with("https://") || u.starts_with("http://"))
}

/// [`download_location`] where SPDX's grammar takes it: a host name whose
/// last label is letters (a top-level domain), not an IP address.
fn spdx_download_location(source: &crate::recipe::Source) -> Option<&str> {
    download_location(source).filter(|url| {
        let rest = url.split_once("://").map_or("", |(_, r)| r);
        let authority = rest.split('/').next().unwrap_or_default();
        let host = authority.rsplit('@').next().unwrap_or_default();
        let host = host.split(':').next().unwrap_or_default();
        host.rsplit_once('.')
            .is_some_and(|(_, tld)| tld.len() >= 2 && tld.bytes().all(|b| b.is_ascii_alphabetic()))
    })
}

/// The digest set of a source pin, as in-toto writes digests.
fn pin_digest(pin: &Pin) -> (&'static str, String) {
    match pin {
        Pin::Sha256(d) => ("sha256", d.hex()),
        // The Nix NAR serialisation's sha256 (docs/fetch.md), in hex.
        Pin::Tree(bytes) => ("nixNarSha256", hex::encode(bytes)),
    }
}

/// A Debian binary package's purl from its pool file name
/// (`NAME_VERSION_ARCH.deb`, epoch written `%3a` as in the pool).
fn deb_purl(file: &str) -> Option<String> {
    let stem = file.strip_suffix(".deb")?;
    let mut parts = stem.splitn(3, '_');
    let (name, version, arch) = (parts.next()?, parts.next()?, parts.next()?);
    Some(format!("pkg:deb/debian/{name}@{version}?arch={arch}"))
}
