//! One signer's signature of one statement: a prehashed minisign signature
//! of the statement's bytes whose trusted comment binds the statement digest
//! and the role the signer signs in:
//!
//! ```text
//! trusted comment: imgrep-statement sha256:<64 hex> role=<role>
//! ```
//!
//! The trusted comment is covered by minisign's global signature, so neither
//! part can be changed without the key. It is always set: the crate's default
//! is the current time, which would bind nothing.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;

use crate::digest::Digest;
use crate::sign::keys::{KeyId, SigningKey};

const COMMENT_TAG: &str = "imgrep-statement";

/// A role name: what a signer vouches as (e.g. `maintainer`, `rebuilder`).
pub fn valid_role(role: &str) -> bool {
    let mut b = role.bytes();
    matches!(b.next(), Some(b'a'..=b'z'))
        && b.all(|c| matches!(c, b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_'))
}

/// The parsed trusted comment of an imgrep signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustedComment {
    pub statement: Digest,
    pub role: String,
}

impl fmt::Display for TrustedComment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{COMMENT_TAG} {} role={}", self.statement, self.role)
    }
}

impl FromStr for TrustedComment {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let expected =
            || format!("trusted comment {s:?} is not `{COMMENT_TAG} sha256:<hex> role=<role>`");
        let mut words = s.split(' ');
        let (Some(COMMENT_TAG), Some(digest), Some(role), None) =
            (words.next(), words.next(), words.next(), words.next())
        else {
            return Err(expected());
        };
        let statement = digest.parse().map_err(|_| expected())?;
        let role = role
            .strip_prefix("role=")
            .filter(|r| valid_role(r))
            .ok_or_else(expected)?;
        Ok(TrustedComment {
            statement,
            role: role.to_owned(),
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SignatureError {
    #[error("{path}: not a minisign signature: {reason}")]
    Malformed { path: PathBuf, reason: String },
    #[error("signing: {0}")]
    Sign(String),
}

/// Signs statement bytes; returns the text of the .minisig file.
pub fn sign_statement(
    key: &SigningKey,
    statement: &[u8],
    role: &str,
    untrusted_comment: &str,
) -> Result<String, SignatureError> {
    let comment = TrustedComment {
        statement: Digest::of(statement),
        role: role.to_owned(),
    };
    // Passing the public half makes the crate verify the signature it made:
    // a corrupted key (a `minisign -W` key has no checksum) fails here.
    let sig = minisign::sign(
        Some(&key.public),
        &key.secret,
        statement,
        Some(&comment.to_string()),
        Some(untrusted_comment),
    )
    .map_err(|e| SignatureError::Sign(e.to_string()))?;
    Ok(sig.into_string())
}

/// A signature file, parsed but not yet verified.
pub struct SignatureFile {
    pub path: PathBuf,
    pub key_id: KeyId,
    sig: minisign::SignatureBox,
}

impl SignatureFile {
    pub fn read(path: &Path) -> Result<Self, SignatureError> {
        let text = std::fs::read_to_string(path).map_err(|e| SignatureError::Malformed {
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
        Self::parse(&text, path)
    }

    /// Parses the text of a signature file found at `origin` (a path, or
    /// where a registry holds it).
    pub fn parse(text: &str, origin: &Path) -> Result<Self, SignatureError> {
        let path = origin;
        let malformed = |reason: String| SignatureError::Malformed {
            path: path.to_owned(),
            reason,
        };
        // The minisign crate copies these lines into fixed arrays and
        // panics on a short one (found by `cargo xtask fuzz signature`).
        for (n, want, what) in [(1, 74, "signature"), (3, 64, "global signature")] {
            let got = text
                .lines()
                .nth(n)
                .and_then(|l| BASE64.decode(l.trim()).ok());
            if got.as_ref().map(Vec::len) != Some(want) {
                return Err(malformed(format!(
                    "line {}: the {what} is not {want} bytes of base64",
                    n + 1
                )));
            }
        }
        let sig =
            minisign::SignatureBox::from_string(text).map_err(|e| malformed(e.to_string()))?;
        if text.lines().count() != 4 {
            return Err(malformed(format!(
                "expected 4 lines, found {}",
                text.lines().count()
            )));
        }
        let comment = sig
            .trusted_comment()
            .map_err(|e| malformed(e.to_string()))?;
        // One spelling per signature: the crate reads the comment past any
        // extra blanks, which would let one signature have many files.
        if text.lines().nth(2) != Some(format!("trusted comment: {comment}").as_str()) {
            return Err(malformed(
                "line 3: expected `trusted comment: ` and the comment, nothing else".into(),
            ));
        }
        Ok(SignatureFile {
            path: path.to_owned(),
            key_id: KeyId::from_keynum(sig.keynum()),
            sig,
        })
    }

    /// Checks the signature of `statement` with `key` and the trusted
    /// comment against the statement's digest; returns the role signed as.
    /// The error says why the signature does not hold.
    pub fn verify(&self, key: &minisign::PublicKey, statement: &[u8]) -> Result<String, String> {
        minisign::verify(
            key,
            &self.sig,
            std::io::Cursor::new(statement),
            true,
            false,
            true,
        )
        .map_err(|e| format!("bad signature: {e}"))?;
        let text = self
            .sig
            .trusted_comment()
            .map_err(|e| format!("bad trusted comment: {e}"))?;
        let comment: TrustedComment = text.parse()?;
        let digest = Digest::of(statement);
        if comment.statement != digest {
            return Err(format!(
                "signed statement {}, but this statement is {digest}",
                comment.statement
            ));
        }
        Ok(comment.role)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_signature_lines_are_malformed_not_a_panic() {
        let pair = minisign::KeyPair::generate_unencrypted_keypair().unwrap();
        let key = SigningKey {
            id: KeyId::from_keynum(pair.pk.keynum()),
            secret: pair.sk,
            public: pair.pk,
        };
        let good = sign_statement(&key, b"{}", "rebuilder", "test").unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.minisig");
        std::fs::write(&path, &good).unwrap();
        assert!(SignatureFile::read(&path).is_ok());
        for n in [1, 3] {
            let lines: Vec<String> = good
                .lines()
                .enumerate()
                .map(|(i, l)| {
                    if i == n {
                        l[..l.len() - 8].to_owned()
                    } else {
                        l.to_owned()
                    }
                })
                .collect();
            std::fs::write(&path, lines.join("\n") + "\n").unwrap();
            let err = SignatureFile::read(&path)
                .err()
                .expect("refused")
                .to_string();
            assert!(err.contains(&format!("line {}: the ", n + 1)), "{err}");
        }
        // Found by `cargo xtask fuzz signature`: a second blank after the
        // prefix still verified under the crate.
        let blank = good.replacen("\ntrusted comment: ", "\ntrusted comment:  ", 1);
        std::fs::write(&path, blank).unwrap();
        let err = SignatureFile::read(&path)
            .err()
            .expect("refused")
            .to_string();
        assert!(err.contains("line 3:"), "{err}");
    }

    #[test]
    fn trusted_comment_round_trip_and_strictness() {
        let c = TrustedComment {
            statement: Digest::of(b"x"),
            role: "rebuilder".into(),
        };
        let s = c.to_string();
        assert!(s.starts_with("imgrep-statement sha256:"));
        assert!(s.ends_with(" role=rebuilder"));
        assert_eq!(s.parse::<TrustedComment>().unwrap(), c);
        for bad in [
            format!("{s} extra"),
            s.replace("role=", "role:"),
            s.replace("imgrep-statement", "imgrep"),
            s.replace("sha256:", "sha512:"),
            s.replace("rebuilder", "Rebuilder"),
            "timestamp:1700000000".to_owned(),
        ] {
            assert!(bad.parse::<TrustedComment>().is_err(), "{bad}");
        }
    }
}
