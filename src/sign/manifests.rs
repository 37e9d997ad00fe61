//! The manifests/ directory (docs/signing.md):
//!
//! ```text
//! manifests/policy.toml                                   the publisher's policy
//! manifests/keys/<signer>.pub, manifests/keys/roles.toml   the publisher's signers
//! manifests/packages/<name>/<version>/statement.json      canonical statement
//! manifests/packages/<name>/<version>/sigs/<KEYID>.minisig one per signer
//! ```
//!
//! Signatures live beside the statement, never inside anything digested.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use crate::sign::keys::KeyId;
use crate::statement::{valid_name, valid_version, Statement, StatementError};

#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("{path}: {error}")]
    Io { path: PathBuf, error: io::Error },
    #[error("{path}: {error}")]
    Statement {
        path: PathBuf,
        error: StatementError,
    },
    #[error("invalid package {0:?}: expected NAME or NAME:VERSION")]
    Spec(String),
    #[error("no statement for {spec} under {dir}")]
    NotFound { spec: String, dir: PathBuf },
}

/// A package version that has a statement.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PackageVersion {
    pub name: String,
    pub version: String,
}

impl std::fmt::Display for PackageVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.name, self.version)
    }
}

/// A package named on the command line: `NAME` (every version) or `NAME:VERSION`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackageSpec {
    pub name: String,
    pub version: Option<String>,
}

impl std::str::FromStr for PackageSpec {
    type Err = ManifestError;
    fn from_str(s: &str) -> Result<Self, ManifestError> {
        let (name, version) = match s.split_once(':') {
            Some((n, v)) => (n, Some(v)),
            None => (s, None),
        };
        if !valid_name(name) || version.is_some_and(|v| !valid_version(v)) {
            return Err(ManifestError::Spec(s.to_owned()));
        }
        Ok(PackageSpec {
            name: name.to_owned(),
            version: version.map(str::to_owned),
        })
    }
}

/// A manifests/ directory.
#[derive(Debug, Clone)]
pub struct Manifests {
    root: PathBuf,
}

/// A statement as read from disk: the parsed form and the exact bytes signed.
#[derive(Debug, Clone)]
pub struct StoredStatement {
    pub path: PathBuf,
    pub statement: Statement,
    pub bytes: Vec<u8>,
}

impl Manifests {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Manifests { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn keys_dir(&self) -> PathBuf {
        self.root.join("keys")
    }

    pub fn policy_path(&self) -> PathBuf {
        self.root.join("policy.toml")
    }

    fn version_dir(&self, pv: &PackageVersion) -> PathBuf {
        self.root.join("packages").join(&pv.name).join(&pv.version)
    }

    pub fn statement_path(&self, pv: &PackageVersion) -> PathBuf {
        self.version_dir(pv).join("statement.json")
    }

    pub fn sigs_dir(&self, pv: &PackageVersion) -> PathBuf {
        self.version_dir(pv).join("sigs")
    }

    pub fn signature_path(&self, pv: &PackageVersion, key: KeyId) -> PathBuf {
        self.sigs_dir(pv).join(format!("{key}.minisig"))
    }

    /// Writes a statement. If a different statement was there, its
    /// signatures vouch for something else and are removed with it.
    pub fn write_statement(&self, st: &Statement) -> Result<PathBuf, ManifestError> {
        let pv = PackageVersion {
            name: st.name.clone(),
            version: st.version.clone(),
        };
        let path = self.statement_path(&pv);
        let bytes = st.to_bytes();
        let io = |path: &Path| {
            let path = path.to_owned();
            move |source| ManifestError::Io {
                path,
                error: source,
            }
        };
        match fs::read(&path) {
            Ok(old) if old == bytes => return Ok(path),
            Ok(_) => {
                let sigs = self.sigs_dir(&pv);
                match fs::remove_dir_all(&sigs) {
                    Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(io(&sigs)(e)),
                    _ => {}
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io(&path)(e)),
        }
        crate::sign::write_published(&path, &bytes).map_err(io(&path))?;
        Ok(path)
    }

    /// Reads a statement; it must be valid, canonical and for `pv`.
    pub fn read_statement(&self, pv: &PackageVersion) -> Result<StoredStatement, ManifestError> {
        let path = self.statement_path(pv);
        let bytes = fs::read(&path).map_err(|source| ManifestError::Io {
            path: path.clone(),
            error: source,
        })?;
        let statement =
            Statement::from_bytes(&bytes).map_err(|source| ManifestError::Statement {
                path: path.clone(),
                error: source,
            })?;
        if statement.name != pv.name || statement.version != pv.version {
            return Err(ManifestError::Statement {
                path,
                error: StatementError::Name(format!(
                    "{}:{} (the directory says {pv})",
                    statement.name, statement.version
                )),
            });
        }
        Ok(StoredStatement {
            path,
            statement,
            bytes,
        })
    }

    /// Every package version with a statement, sorted.
    pub fn list(&self) -> Result<Vec<PackageVersion>, ManifestError> {
        let mut out = Vec::new();
        let packages = self.root.join("packages");
        for name in read_dir_names(&packages)? {
            for version in read_dir_names(&packages.join(&name))? {
                let pv = PackageVersion {
                    name: name.clone(),
                    version,
                };
                if self.statement_path(&pv).is_file() {
                    out.push(pv);
                }
            }
        }
        out.sort();
        Ok(out)
    }

    /// The package versions the specs name (all of them when `specs` is
    /// empty); a spec that matches no statement is an error.
    pub fn resolve(&self, specs: &[PackageSpec]) -> Result<Vec<PackageVersion>, ManifestError> {
        let all = self.list()?;
        if specs.is_empty() {
            return Ok(all);
        }
        let mut out = Vec::new();
        for spec in specs {
            let before = out.len();
            out.extend(
                all.iter()
                    .filter(|pv| {
                        pv.name == spec.name
                            && spec.version.as_ref().is_none_or(|v| *v == pv.version)
                    })
                    .cloned(),
            );
            if out.len() == before {
                let spec = match &spec.version {
                    Some(v) => format!("{}:{v}", spec.name),
                    None => spec.name.clone(),
                };
                return Err(ManifestError::NotFound {
                    spec,
                    dir: self.root.clone(),
                });
            }
        }
        out.sort();
        out.dedup();
        Ok(out)
    }

    /// The signature files of a statement (`sigs/*.minisig`), sorted.
    pub fn signature_files(&self, pv: &PackageVersion) -> Result<Vec<PathBuf>, ManifestError> {
        let dir = self.sigs_dir(pv);
        let mut out: Vec<PathBuf> = read_dir_names(&dir)?
            .into_iter()
            .filter(|n| n.ends_with(".minisig"))
            .map(|n| dir.join(n))
            .collect();
        out.sort();
        Ok(out)
    }
}

/// Names in a directory (none if it does not exist), skipping hidden ones
/// such as write_atomic's temporary files.
fn read_dir_names(dir: &Path) -> Result<Vec<String>, ManifestError> {
    let io = |source| ManifestError::Io {
        path: dir.to_owned(),
        error: source,
    };
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io(e)),
    };
    let mut out = Vec::new();
    for entry in entries {
        let name = entry.map_err(io)?.file_name();
        if let Some(name) = name.to_str().filter(|n| !n.starts_with('.')) {
            out.push(name.to_owned());
        }
    }
    Ok(out)
}
