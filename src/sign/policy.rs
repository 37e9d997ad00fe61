//! The verification policy: how many distinct trusted keys must have signed a
//! statement, and how many of them per role.
//!
//! ```toml
//! threshold = 2          # distinct trusted keys, at least 1
//! [roles]                # optional minimums per role
//! maintainer = 1
//! rebuilder = 1
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::sign::signature::valid_role;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    pub threshold: usize,
    #[serde(default)]
    pub roles: BTreeMap<String, usize>,
}

#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("{path}: {error}")]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{origin}: {message}")]
    Invalid { origin: String, message: String },
}

impl Policy {
    /// Reads and checks a policy file.
    pub fn load(path: &Path) -> Result<Policy, PolicyError> {
        let text = std::fs::read_to_string(path).map_err(|source| PolicyError::Io {
            path: path.to_owned(),
            error: source,
        })?;
        let policy: Policy = toml::from_str(&text).map_err(|e| PolicyError::Parse {
            path: path.to_owned(),
            message: e.to_string().trim_end().to_owned(),
        })?;
        policy.check(&path.display().to_string())?;
        Ok(policy)
    }

    /// Checks that the policy can be met and means something: a threshold of
    /// at least one, valid role names, role minimums of at least one.
    pub fn check(&self, origin: &str) -> Result<(), PolicyError> {
        let invalid = |message: String| PolicyError::Invalid {
            origin: origin.to_owned(),
            message,
        };
        if self.threshold == 0 {
            return Err(invalid(
                "threshold = 0 would accept unsigned statements; expected at least 1".into(),
            ));
        }
        for (role, &min) in &self.roles {
            if !valid_role(role) {
                return Err(invalid(format!(
                    "roles.{role}: invalid role name, expected [a-z][a-z0-9_-]*"
                )));
            }
            if min == 0 {
                return Err(invalid(format!(
                    "roles.{role} = 0: expected at least 1 (leave the role out instead)"
                )));
            }
        }
        Ok(())
    }

    /// How far the distinct valid trusted keys (their roles; `None` for a
    /// key without one) go toward this policy.
    pub fn tally<'a>(&self, roles: impl IntoIterator<Item = Option<&'a str>>) -> Tally {
        let mut counted = 0;
        let mut per_role: BTreeMap<&str, usize> = BTreeMap::new();
        for r in roles {
            counted += 1;
            if let Some(r) = r {
                *per_role.entry(r).or_default() += 1;
            }
        }
        let roles: BTreeMap<String, RoleCount> = self
            .roles
            .iter()
            .map(|(role, &required)| {
                let counted = per_role.get(role.as_str()).copied().unwrap_or(0);
                (role.clone(), RoleCount { counted, required })
            })
            .collect();
        let state = if counted == 0 {
            SigningState::Unsigned
        } else if counted < self.threshold || roles.values().any(|r| r.counted < r.required) {
            SigningState::UnderSigned
        } else {
            SigningState::Signed
        };
        Tally {
            state,
            counted,
            required: self.threshold,
            roles,
        }
    }
}

/// Whether a statement's valid trusted signatures meet the policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SigningState {
    /// No valid signature by a trusted key.
    Unsigned,
    /// Some, but fewer than the threshold or a role minimum asks.
    UnderSigned,
    /// The threshold and every role minimum are met.
    Signed,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RoleCount {
    pub counted: usize,
    pub required: usize,
}

/// Distinct valid trusted signatures against the policy, per role.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Tally {
    pub state: SigningState,
    /// Distinct trusted keys with a valid signature.
    pub counted: usize,
    /// The policy's threshold.
    pub required: usize,
    /// Each role minimum of the policy.
    pub roles: BTreeMap<String, RoleCount>,
}

impl Tally {
    /// What the policy still lacks, one reason each; empty when it is met.
    pub fn shortfalls(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.counted < self.required {
            out.push(format!(
                "threshold not met: {} of {} trusted signatures",
                self.counted, self.required
            ));
        }
        for (role, r) in &self.roles {
            if r.counted < r.required {
                out.push(format!(
                    "role {role}: {} of {} required signatures",
                    r.counted, r.required
                ));
            }
        }
        out
    }
}

impl std::fmt::Display for Tally {
    /// `1 of 2 required signatures (maintainer ok; no rebuilder): under-signed`
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} of {} required signatures",
            self.counted, self.required
        )?;
        let roles: Vec<String> = self
            .roles
            .iter()
            .map(|(role, r)| match (r.counted, r.required) {
                (0, _) => format!("no {role}"),
                (c, n) if c >= n => format!("{role} ok"),
                (c, n) => format!("{role} {c} of {n}"),
            })
            .collect();
        if !roles.is_empty() {
            write!(f, " ({})", roles.join("; "))?;
        }
        f.write_str(match self.state {
            SigningState::Unsigned => ": unsigned",
            SigningState::UnderSigned => ": under-signed",
            SigningState::Signed => ": policy met",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tally_counts_threshold_and_roles() {
        let p: Policy = toml::from_str("threshold = 2\n[roles]\nmaintainer = 1\n").unwrap();
        let t = p.tally([Some("maintainer"), None]);
        assert!(t.shortfalls().is_empty());
        assert_eq!(t.state, SigningState::Signed);
        let t = p.tally([Some("rebuilder"), Some("rebuilder")]);
        assert_eq!(
            t.shortfalls(),
            vec!["role maintainer: 0 of 1 required signatures"]
        );
        assert_eq!(t.state, SigningState::UnderSigned);
        let t = p.tally([Some("maintainer")]);
        assert_eq!(
            t.shortfalls(),
            vec!["threshold not met: 1 of 2 trusted signatures"]
        );
        let t = p.tally([]);
        assert_eq!(t.state, SigningState::Unsigned);
        assert_eq!(
            t.to_string(),
            "0 of 2 required signatures (no maintainer): unsigned"
        );
        let p: Policy =
            toml::from_str("threshold = 2\n[roles]\nmaintainer = 1\nrebuilder = 1\n").unwrap();
        assert_eq!(
            p.tally([Some("maintainer")]).to_string(),
            "1 of 2 required signatures (maintainer ok; no rebuilder): under-signed"
        );
        assert_eq!(
            p.tally([Some("maintainer"), Some("rebuilder")]).to_string(),
            "2 of 2 required signatures (maintainer ok; rebuilder ok): policy met"
        );
    }

    #[test]
    fn invalid_policies_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("policy.toml");
        for (text, needle) in [
            ("threshold = 0\n", "threshold = 0"),
            ("threshold = 1\nthreshhold = 2\n", "line 2"),
            ("threshold = 1\n[roles]\nMaint = 1\n", "invalid role name"),
            (
                "threshold = 1\n[roles]\nmaintainer = 0\n",
                "roles.maintainer = 0",
            ),
            ("threshold = \"two\"\n", "line 1"),
        ] {
            std::fs::write(&path, text).unwrap();
            let err = Policy::load(&path).unwrap_err().to_string();
            assert!(err.starts_with(&path.display().to_string()), "{err}");
            assert!(err.contains(needle), "{text:?}: {err}");
        }
    }
}
