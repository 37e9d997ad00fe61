//! The statement: the small canonical JSON document that signers vouch for.
//!
//! It binds a package's name and version to its input digest, the digests of
//! its image and the hashes of its sources. Its bytes are exactly what is
//! signed, so it is canonical (src/canonical.rs) and is read back only if it
//! is canonical: two spellings of one statement would make two digests.
//! Signatures never go inside it (docs/signing.md).

use serde::{Deserialize, Serialize};

use crate::digest::Digest;

/// The value of the statement's `type` field; any change to the fields or
/// their meaning bumps it.
pub const STATEMENT_TYPE: &str = "imgrep.statement/v1";

/// What a signer vouches for after rebuilding a package.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Statement {
    #[serde(rename = "type")]
    pub kind: String,
    pub name: String,
    pub version: String,
    pub input_digest: Digest,
    pub image: ImageDigests,
    pub sources: Vec<SourceHash>,
}

/// The digests that identify an image: its manifest and, in order, the
/// uncompressed digests (diff_ids) of its layers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageDigests {
    pub manifest: Digest,
    pub diff_ids: Vec<Digest>,
}

/// A source's pinned hash, as the recipe states it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", deny_unknown_fields)]
pub enum SourceHash {
    /// sha256 of the file.
    File(Digest),
    /// Nix NAR sha256 of the unpacked tree, as SRI (`sha256-<base64>`).
    Tree(String),
}

#[derive(Debug, thiserror::Error)]
pub enum StatementError {
    #[error("not a valid statement: {0}")]
    Json(serde_json::Error),
    #[error("statement type is {found:?}, expected {STATEMENT_TYPE:?}")]
    Type { found: String },
    #[error("invalid package name {0:?}: expected [a-z0-9][a-z0-9+._-]*")]
    Name(String),
    #[error("invalid version {0:?}: expected a non-empty string without whitespace, ':' or '/'")]
    Version(String),
    #[error("invalid tree hash {0:?}: expected `sha256-` followed by the base64 of 32 bytes")]
    Tree(String),
    #[error(
        "statement is not in canonical form (sorted keys, no whitespace, no trailing newline)"
    )]
    NotCanonical,
}

impl From<serde_json::Error> for StatementError {
    fn from(e: serde_json::Error) -> Self {
        StatementError::Json(e)
    }
}

impl Statement {
    /// A statement of the current type; fails on a name, version or tree hash
    /// that could not be read back.
    pub fn new(
        name: &str,
        version: &str,
        input_digest: Digest,
        image: ImageDigests,
        sources: Vec<SourceHash>,
    ) -> Result<Self, StatementError> {
        let st = Statement {
            kind: STATEMENT_TYPE.to_owned(),
            name: name.to_owned(),
            version: version.to_owned(),
            input_digest,
            image,
            sources,
        };
        st.validate()?;
        Ok(st)
    }

    /// The canonical bytes: what is written to statement.json and signed.
    pub fn to_bytes(&self) -> Vec<u8> {
        crate::canonical::to_vec(self).expect("a statement always serializes")
    }

    /// The digest that signatures' trusted comments name.
    pub fn digest(&self) -> Digest {
        Digest::of(&self.to_bytes())
    }

    /// Parses statement bytes; they must be valid and canonical.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, StatementError> {
        let st: Statement = serde_json::from_slice(bytes)?;
        st.validate()?;
        if st.to_bytes() != bytes {
            return Err(StatementError::NotCanonical);
        }
        Ok(st)
    }

    fn validate(&self) -> Result<(), StatementError> {
        if self.kind != STATEMENT_TYPE {
            return Err(StatementError::Type {
                found: self.kind.clone(),
            });
        }
        if !valid_name(&self.name) {
            return Err(StatementError::Name(self.name.clone()));
        }
        if !valid_version(&self.version) {
            return Err(StatementError::Version(self.version.clone()));
        }
        for s in &self.sources {
            if let SourceHash::Tree(t) = s {
                if !valid_tree_hash(t) {
                    return Err(StatementError::Tree(t.clone()));
                }
            }
        }
        Ok(())
    }
}

impl ImageDigests {
    /// What differs between `self` and `other`, one line per field, each
    /// value labelled (`ours`: `self`, `theirs`: `other`, e.g. "signed" and
    /// "local"); empty when they are equal.
    pub fn differences(&self, other: &ImageDigests, ours: &str, theirs: &str) -> Vec<String> {
        let mut out = Vec::new();
        if self.manifest != other.manifest {
            out.push(format!(
                "manifest digest: {ours} {}, {theirs} {}",
                self.manifest, other.manifest
            ));
        }
        if self.diff_ids.len() != other.diff_ids.len() {
            out.push(format!(
                "layer count: {ours} {}, {theirs} {}",
                self.diff_ids.len(),
                other.diff_ids.len()
            ));
        }
        for (i, (a, b)) in self.diff_ids.iter().zip(&other.diff_ids).enumerate() {
            if a != b {
                out.push(format!("layer {i} diff_id: {ours} {a}, {theirs} {b}"));
            }
        }
        out
    }
}

/// Package names as docs/recipes.md defines them; they are also path
/// components under manifests/, so nothing else may pass.
pub fn valid_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    matches!(bytes.next(), Some(b'a'..=b'z' | b'0'..=b'9'))
        && bytes.all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'+' | b'.' | b'_' | b'-'))
}

/// Versions as docs/recipes.md defines them, and never `.` or `..`, which
/// would escape their directory under manifests/.
pub fn valid_version(version: &str) -> bool {
    !version.is_empty()
        && version != "."
        && version != ".."
        && !version
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == ':' || c == '/')
}

fn valid_tree_hash(t: &str) -> bool {
    use base64::Engine as _;
    t.strip_prefix("sha256-")
        .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
        .is_some_and(|raw| raw.len() == 32)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Statement {
        Statement::new(
            "musl",
            "1.2.3",
            Digest::of(b"input"),
            ImageDigests {
                manifest: Digest::of(b"manifest"),
                diff_ids: vec![Digest::of(b"layer")],
            },
            vec![
                SourceHash::File(Digest::of(b"src")),
                SourceHash::Tree(format!("sha256-{}", "A".repeat(43) + "=")),
            ],
        )
        .unwrap()
    }

    #[test]
    fn round_trip_is_canonical() {
        let st = sample();
        let bytes = st.to_bytes();
        let text = std::str::from_utf8(&bytes).unwrap();
        assert!(
            text.starts_with(r#"{"image":{"diff_ids":["sha256:"#),
            "{text}"
        );
        assert!(text.contains(r#""type":"imgrep.statement/v1""#));
        assert!(text.contains(r#"{"file":"sha256:"#));
        assert_eq!(Statement::from_bytes(&bytes).unwrap(), st);
        assert_eq!(st.digest(), Digest::of(&bytes));
    }

    #[test]
    fn rejects_non_canonical_and_invalid() {
        let mut bytes = sample().to_bytes();
        bytes.push(b'\n');
        assert!(matches!(
            Statement::from_bytes(&bytes),
            Err(StatementError::NotCanonical)
        ));
        let text = String::from_utf8(sample().to_bytes()).unwrap();
        let bad = text.replace("\"musl\"", "\"../x\"");
        assert!(matches!(
            Statement::from_bytes(bad.as_bytes()),
            Err(StatementError::Name(_))
        ));
        let bad = text.replace("imgrep.statement/v1", "imgrep.statement/v0");
        assert!(matches!(
            Statement::from_bytes(bad.as_bytes()),
            Err(StatementError::Type { .. })
        ));
        let bad = text.replace("\"1.2.3\"", "\"..\"");
        assert!(matches!(
            Statement::from_bytes(bad.as_bytes()),
            Err(StatementError::Version(_))
        ));
    }

    #[test]
    fn image_differences_name_the_field() {
        let a = sample().image;
        let mut b = a.clone();
        assert!(a.differences(&b, "signed", "local").is_empty());
        b.diff_ids[0] = Digest::of(b"other");
        let d = a.differences(&b, "signed", "local");
        assert_eq!(d.len(), 1);
        assert!(d[0].starts_with("layer 0 diff_id: signed sha256:"), "{d:?}");
    }
}
