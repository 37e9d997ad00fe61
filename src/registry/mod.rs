//! OCI distribution-spec client (docs/registry.md): references, basic and
//! bearer-token auth, blob existence checks, monolithic and chunked uploads,
//! manifest put and get, and pulls into an OCI image layout with every byte
//! verified before it is renamed into place.

mod auth;
mod blob;
mod client;
/// Public for the fuzz targets, which parse what a registry serves.
pub mod manifest;
mod reference;
mod referrers;
mod transport;

use std::path::PathBuf;

use crate::digest::Digest;

pub use auth::{parse_challenge, Challenge, CredentialSource, Credentials};
pub use client::{Client, Options};
pub use manifest::{
    DOCKER_MANIFEST, DOCKER_MANIFEST_LIST, MANIFEST_ACCEPT, OCI_INDEX, OCI_MANIFEST,
};
pub use reference::{Reference, ReferenceError, Registry, Repository};
pub use referrers::{fallback_tag, Referrer, ReferrersMode};

/// The tag under which a build cache keeps the image of a package whose
/// input digest is `input`: `input-<64 hex digits>`.
pub fn input_tag(input: &Digest) -> String {
    format!("input-{}", input.hex())
}

/// The tag of a package version: the version with every character a tag
/// cannot hold (anything but `A-Za-z0-9_.-`) replaced by `_`, and a leading
/// `.` or `-` prefixed with `_` (so `1.0+b1` is tagged `1.0_b1`).
pub fn version_tag(version: &str) -> String {
    let mut tag: String = version
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if tag.starts_with(['.', '-']) {
        tag.insert(0, '_');
    }
    tag.truncate(128);
    tag
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Reference(#[from] ReferenceError),
    #[error("refusing plain HTTP to registry {host}, which is not a loopback address: use https://, or pass --insecure-http to accept that anyone on the path can read and change what is sent")]
    InsecureHttp { host: String },
    #[error("cannot reach registry {host} while {what}: {detail}")]
    Unreachable {
        host: String,
        what: String,
        detail: String,
    },
    #[error("TLS with registry {host} failed while {what}: {detail} (a registry with a private CA needs --ca-file)")]
    Tls {
        host: String,
        what: String,
        detail: String,
    },
    #[error("lost the connection to registry {host} while {what}: {detail}")]
    Connection {
        host: String,
        what: String,
        detail: String,
    },
    #[error("registry {host} refused the credentials for {repo}: {status} {detail}")]
    Refused {
        host: String,
        repo: String,
        status: u16,
        detail: String,
    },
    #[error("registry {host} requires credentials for {repo} ({status} {detail}): set IMGREP_REGISTRY_USER and IMGREP_REGISTRY_PASSWORD, pass --username and --password-stdin, or add the host to the auths of docker's config.json")]
    NoCredentials {
        host: String,
        repo: String,
        status: u16,
        detail: String,
    },
    #[error("{credentials}")]
    Credentials { credentials: String },
    #[error("registry {host} has no {what} ({status} {detail})")]
    NotFound {
        host: String,
        what: String,
        status: u16,
        detail: String,
    },
    #[error("registry {host} answered {status} to {what}: {detail}")]
    Status {
        host: String,
        what: String,
        status: u16,
        detail: String,
    },
    #[error("{what} from registry {host} has digest {actual}, expected {expected}")]
    DigestMismatch {
        host: String,
        what: String,
        expected: Digest,
        actual: Digest,
    },
    #[error("{what} from registry {host} has {actual} bytes, expected {expected}")]
    SizeMismatch {
        host: String,
        what: String,
        expected: u64,
        actual: u64,
    },
    #[error("{what} from registry {host}: {reason}")]
    Protocol {
        host: String,
        what: String,
        reason: String,
    },
    #[error("{reference}: the image {image} has manifest digest {actual}, not {expected}")]
    PushDigest {
        reference: String,
        image: String,
        expected: Digest,
        actual: Digest,
    },
    #[error("{reference}: no tag or digest to {action}")]
    NoTag { reference: String, action: String },
    #[error(transparent)]
    Layout(#[from] crate::oci::Error),
    #[error("{}: {error}", path.display())]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
}

impl Error {
    /// The registry answered that the manifest or blob does not exist (for
    /// a cache lookup, a miss rather than a failure).
    pub fn is_not_found(&self) -> bool {
        matches!(self, Error::NotFound { .. })
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags() {
        assert_eq!(version_tag("1.2.5"), "1.2.5");
        assert_eq!(version_tag("1.0+b1"), "1.0_b1");
        assert_eq!(version_tag("2:1.0~rc1"), "2_1.0_rc1");
        assert_eq!(version_tag("-x"), "_-x");
        assert_eq!(
            input_tag(&Digest::of(b"")),
            "input-e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        for v in ["1.0+b1", ".x", "a b"] {
            reference::check_tag(&version_tag(v)).unwrap();
        }
    }
}
