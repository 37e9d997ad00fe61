//! Trust anchors: the public keys a verifier chooses to trust, and the role
//! each key signs as.
//!
//! A keyring is a directory of minisign public key files `<signer>.pub` (as
//! `imgrep keygen` or `minisign -G` write them) and an optional `roles.toml`
//! mapping signers to roles (`alice = "maintainer"`). The repository's own
//! manifests/keys has the same layout, so a user can review it and copy it.
//! Roles come only from here, never from a signature: a signer cannot
//! promote itself.
//!
//! A signer is a public key, compared by its 32 key bytes, never by its key
//! id (8 bytes anyone can copy): the same key listed twice, under two ids,
//! two names or in two keyrings, is one signer (docs/signing.md, "One key,
//! one vote"). Listed twice with two different roles it is refused, since
//! one key cannot hold two roles.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use crate::sign::keys::{parse_public_key, public_key_bytes, read_public_key, KeyError, KeyId};
use crate::sign::signature::valid_role;

/// The origin of keys given whole on the command line.
const FROM_FLAG: &str = "--trust";

/// A key the verifier trusts.
#[derive(Clone)]
pub struct TrustedKey {
    pub id: KeyId,
    /// The signer's name (the file stem), or the key id for `--trust` keys.
    pub signer: String,
    pub role: Option<String>,
    /// Where the key came from: a file, or `--trust`.
    pub origin: String,
    pub key: minisign::PublicKey,
}

#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error("{path}: {error}")]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("{path}: {message}")]
    Roles { path: PathBuf, message: String },
    #[error("key {id} is in both {a} and {b} with different keys or roles")]
    Conflict { id: KeyId, a: String, b: String },
    #[error(
        "the same public key is in {a} (role {role_a}) and {b} (role {role_b}): \
         one key is one signer with one role"
    )]
    TwoRoles {
        a: String,
        role_a: String,
        b: String,
        role_b: String,
    },
    #[error(
        "invalid trusted key {0:?}: expected a key id (16 hex digits) or a public key as \
         `minisign -P` takes it (RW...), optionally prefixed with ROLE:"
    )]
    Spec(String),
    #[error("pinned key {0} is in none of the keyrings")]
    PinnedMissing(KeyId),
}

/// The set of trusted keys, by key id.
#[derive(Clone, Default)]
pub struct Trust {
    keys: BTreeMap<KeyId, TrustedKey>,
}

impl Trust {
    pub fn get(&self, id: &KeyId) -> Option<&TrustedKey> {
        self.keys.get(id)
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    pub fn keys(&self) -> impl Iterator<Item = &TrustedKey> {
        self.keys.values()
    }

    fn insert(&mut self, k: TrustedKey) -> Result<(), TrustError> {
        if let Some(old) = self.keys.get(&k.id) {
            if old.key != k.key || old.role != k.role {
                return Err(TrustError::Conflict {
                    id: k.id,
                    a: old.origin.clone(),
                    b: k.origin,
                });
            }
            return Ok(());
        }
        let bytes = public_key_bytes(&k.key);
        if let Some(old) = self
            .keys
            .values()
            .find(|old| old.role != k.role && public_key_bytes(&old.key) == bytes)
        {
            let role = |r: &Option<String>| r.clone().unwrap_or_else(|| "none".into());
            return Err(TrustError::TwoRoles {
                a: old.origin.clone(),
                role_a: role(&old.role),
                b: k.origin,
                role_b: role(&k.role),
            });
        }
        self.keys.insert(k.id, k);
        Ok(())
    }

    /// Adds every `*.pub` of a keyring directory, with roles from its
    /// `roles.toml` if there is one.
    pub fn add_keyring(&mut self, dir: &Path) -> Result<(), TrustError> {
        let io = |source| TrustError::Io {
            path: dir.to_owned(),
            error: source,
        };
        let mut roles = read_roles(&dir.join("roles.toml"))?;
        let mut files = Vec::new();
        for entry in fs::read_dir(dir).map_err(io)? {
            let path = entry.map_err(io)?.path();
            if path.extension().is_some_and(|e| e == "pub") {
                files.push(path);
            }
        }
        files.sort();
        for path in files {
            let signer = path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            let key = read_public_key(&path)?;
            self.insert(TrustedKey {
                id: KeyId::from_keynum(key.keynum()),
                role: roles.remove(&signer),
                signer,
                origin: path.display().to_string(),
                key,
            })?;
        }
        if let Some(signer) = roles.keys().next() {
            return Err(TrustError::Roles {
                path: dir.join("roles.toml"),
                message: format!("names signer {signer:?}, but there is no {signer}.pub"),
            });
        }
        Ok(())
    }

    /// Adds a key given as `[ROLE:]PUBKEY` (PUBKEY as `minisign -P` takes it).
    pub fn add_key_spec(&mut self, spec: &str) -> Result<(), TrustError> {
        let (role, encoded) = match spec.split_once(':') {
            Some((r, k)) if valid_role(r) => (Some(r.to_owned()), k),
            Some(_) => return Err(TrustError::Spec(spec.to_owned())),
            None => (None, spec),
        };
        let key = parse_public_key(encoded).map_err(|_| TrustError::Spec(spec.to_owned()))?;
        let id = KeyId::from_keynum(key.keynum());
        self.insert(TrustedKey {
            id,
            signer: id.to_string(),
            role,
            origin: FROM_FLAG.into(),
            key,
        })
    }

    /// Keeps only the pinned key ids (and keys given whole with `--trust`);
    /// a pin that matches no key is an error.
    pub fn pin(&mut self, ids: &[KeyId]) -> Result<(), TrustError> {
        if ids.is_empty() {
            return Ok(());
        }
        if let Some(id) = ids.iter().find(|id| !self.keys.contains_key(id)) {
            return Err(TrustError::PinnedMissing(*id));
        }
        self.keys
            .retain(|id, k| ids.contains(id) || k.origin == FROM_FLAG);
        Ok(())
    }
}

/// Reads `roles.toml` (signer = "role"); none if the file does not exist.
fn read_roles(path: &Path) -> Result<BTreeMap<String, String>, TrustError> {
    let text = match fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(BTreeMap::new()),
        Err(source) => {
            return Err(TrustError::Io {
                path: path.to_owned(),
                error: source,
            })
        }
    };
    let roles: BTreeMap<String, String> = toml::from_str(&text).map_err(|e| TrustError::Roles {
        path: path.to_owned(),
        message: format!(
            "{}; expected lines of the form signer = \"role\"",
            e.to_string().trim_end()
        ),
    })?;
    if let Some((signer, role)) = roles.iter().find(|(_, r)| !valid_role(r)) {
        return Err(TrustError::Roles {
            path: path.to_owned(),
            message: format!("{signer} = {role:?}: invalid role name, expected [a-z][a-z0-9_-]*"),
        });
    }
    Ok(roles)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sign::keys::{generate, PasswordSource};

    fn keyring_with(names: &[&str]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for n in names {
            generate(
                &dir.path().join(n),
                false,
                &PasswordSource::default(),
                false,
            )
            .unwrap();
        }
        dir
    }

    #[test]
    fn roles_come_from_roles_toml() {
        let dir = keyring_with(&["alice", "bob"]);
        fs::write(dir.path().join("roles.toml"), "alice = \"maintainer\"\n").unwrap();
        let mut t = Trust::default();
        t.add_keyring(dir.path()).unwrap();
        let roles: Vec<_> = t
            .keys()
            .map(|k| (k.signer.as_str(), k.role.clone()))
            .collect();
        assert_eq!(roles.len(), 2);
        assert!(roles.contains(&("alice", Some("maintainer".into()))));
        assert!(roles.contains(&("bob", None)));
    }

    #[test]
    fn roles_toml_errors_name_the_file() {
        let dir = keyring_with(&["alice"]);
        let roles = dir.path().join("roles.toml");
        for (text, needle) in [
            ("carol = \"rebuilder\"\n", "no carol.pub"),
            ("alice = \"Maintainer\"\n", "invalid role name"),
            ("alice = 1\n", "expected lines of the form"),
        ] {
            fs::write(&roles, text).unwrap();
            let err = Trust::default()
                .add_keyring(dir.path())
                .err()
                .unwrap()
                .to_string();
            assert!(err.starts_with(&roles.display().to_string()), "{err}");
            assert!(err.contains(needle), "{text:?}: {err}");
        }
    }

    #[test]
    fn same_key_id_with_another_role_conflicts() {
        let dir = keyring_with(&["alice"]);
        let other = tempfile::tempdir().unwrap();
        fs::copy(dir.path().join("alice.pub"), other.path().join("alice.pub")).unwrap();
        fs::write(other.path().join("roles.toml"), "alice = \"maintainer\"\n").unwrap();
        let mut t = Trust::default();
        t.add_keyring(dir.path()).unwrap();
        t.add_keyring(dir.path()).unwrap();
        assert!(matches!(
            t.add_keyring(other.path()),
            Err(TrustError::Conflict { .. })
        ));
    }

    #[test]
    fn key_specs_and_pins() {
        let dir = keyring_with(&["alice", "bob"]);
        let mut t = Trust::default();
        t.add_keyring(dir.path()).unwrap();
        let alice = t.keys().find(|k| k.signer == "alice").unwrap().id;
        t.pin(&[alice]).unwrap();
        assert_eq!(t.keys().map(|k| k.id).collect::<Vec<_>>(), vec![alice]);
        assert!(matches!(
            t.pin(&["0000000000000001".parse().unwrap()]),
            Err(TrustError::PinnedMissing(_))
        ));
        let text = fs::read_to_string(dir.path().join("bob.pub")).unwrap();
        let encoded = text.lines().nth(1).unwrap();
        t.add_key_spec(&format!("rebuilder:{encoded}")).unwrap();
        assert!(t.keys().any(|k| k.role.as_deref() == Some("rebuilder")));
        for bad in ["Rebuilder:RWQ", "rebuilder:", "RWQnotakey"] {
            assert!(
                matches!(t.add_key_spec(bad), Err(TrustError::Spec(_))),
                "{bad}"
            );
        }
    }
}
