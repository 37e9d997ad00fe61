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

    /// What this policy lacks given the roles of the distinct valid trusted
    /// keys (`None` for a key without a role); empty when it is met.
    pub fn shortfalls<'a>(&self, roles: impl IntoIterator<Item = Option<&'a str>>) -> Vec<String> {
        let mut count = 0;
        let mut per_role: BTreeMap<&str, usize> = BTreeMap::new();
        for r in roles {
            count += 1;
            if let Some(r) = r {
                *per_role.entry(r).or_default() += 1;
            }
        }
        let mut out = Vec::new();
        if count < self.threshold {
            out.push(format!(
                "threshold not met: {count} of {} trusted signatures",
                self.threshold
            ));
        }
        for (role, &min) in &self.roles {
            let have = per_role.get(role.as_str()).copied().unwrap_or(0);
            if have < min {
                out.push(format!("role {role}: {have} of {min} required signatures"));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shortfalls_count_threshold_and_roles() {
        let p: Policy = toml::from_str("threshold = 2\n[roles]\nmaintainer = 1\n").unwrap();
        assert!(p.shortfalls([Some("maintainer"), None]).is_empty());
        assert_eq!(
            p.shortfalls([Some("rebuilder"), Some("rebuilder")]),
            vec!["role maintainer: 0 of 1 required signatures"]
        );
        assert_eq!(
            p.shortfalls([Some("maintainer")]),
            vec!["threshold not met: 1 of 2 trusted signatures"]
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
