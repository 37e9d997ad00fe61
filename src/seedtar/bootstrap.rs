//! The bootstrap workflow (`imgrep bootstrap --seed FILE`, docs/air-gap.md):
//! the seed tarball checked whole before anything is built, its closure
//! built offline from it, then each image compared with the statement the
//! tarball carries and, with keys and a policy, its signatures checked as
//! `imgrep verify` does.

use std::path::{Path, PathBuf};

use serde::Serialize;

use super::{check_statement, open, SeedError, StatementCheck};
use crate::builder::{self, Builder, Built};
use crate::digest::Digest;
use crate::fetch::{FetchConfig, Fetcher};
use crate::recipe::RecipeSet;
use crate::sign::manifests::{Manifests, PackageVersion};
use crate::sign::policy::Policy;
use crate::sign::trust::Trust;
use crate::sign::verify::{verify_package, PackageReport};
use crate::store::Store;

/// What to bootstrap and how.
#[derive(Debug, Clone, Default)]
pub struct BootstrapOptions {
    /// Packages to build; empty: every package of the tarball.
    pub packages: Vec<String>,
    /// The tarball's expected sha256, checked before anything is unpacked.
    pub sha256: Option<Digest>,
    /// Where to unpack (an empty directory, kept); `None`: a temporary
    /// directory of the store, removed at the end.
    pub workdir: Option<PathBuf>,
    /// Trust these keyrings instead of the tarball's manifests/keys.
    pub keyring: Vec<PathBuf>,
    /// This policy instead of the tarball's manifests/policy.toml.
    pub policy: Option<PathBuf>,
    /// How to build; `out` is where images are tagged and checked.
    pub build: builder::Options,
}

/// One package built from the tarball, and how it compares.
#[derive(Debug, Serialize)]
pub struct PackageResult {
    pub name: String,
    pub version: String,
    pub input_digest: Digest,
    pub manifest_digest: Digest,
    pub diff_ids: Vec<Digest>,
    pub cached: bool,
    pub statement: StatementCheck,
    pub signatures: Option<PackageReport>,
}

/// What a bootstrap found.
#[derive(Debug)]
pub struct Bootstrapped {
    /// The tarball's sha256 and size.
    pub digest: Digest,
    pub size: u64,
    /// Whether keys and a policy were at hand to check signatures.
    pub signatures_checked: bool,
    pub packages: Vec<PackageResult>,
}

impl Bootstrapped {
    /// No image differs from its statement and every checked package's
    /// signatures meet the policy.
    pub fn ok(&self) -> bool {
        self.packages.iter().all(|r| {
            !matches!(r.statement, StatementCheck::Mismatch(_))
                && r.signatures.as_ref().is_none_or(|s| s.ok)
        })
    }
}

/// Removes the unpacked tarball at the end (its trees may be read-only).
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = crate::store::remove_tree(&self.0);
    }
}

/// Bootstraps from the seed tarball `seed` into the store at `store_root`,
/// which is opened (and created) only once the tarball's sha256 holds.
pub fn bootstrap(
    seed: &Path,
    store_root: &Path,
    opts: &BootstrapOptions,
) -> Result<Bootstrapped, SeedError> {
    if let Some(expected) = opts.sha256 {
        // Before unpacking anything: a stranger's file never reaches the disk.
        let (got, _) = std::fs::File::open(seed)
            .and_then(crate::digest::hash_reader)
            .map_err(SeedError::io(seed, "reading"))?;
        refuse_other(seed, got, expected)?;
    }
    let store = &Store::open(store_root)?;
    let (work, _scratch) = match &opts.workdir {
        Some(dir) => (dir.clone(), None),
        None => {
            let dir = store.temp_dir()?.keep();
            (dir.clone(), Some(Scratch(dir)))
        }
    };
    let opened = open(seed, &work)?;
    if let Some(expected) = opts.sha256 {
        // Again for what was unpacked: the file may have changed meanwhile.
        refuse_other(seed, opened.digest, expected)?;
    }
    if opts.build.verbose {
        crate::progress::info(format_args!(
            "imgrep: {}: verified {} members ({} bytes, sha256 {})",
            seed.display(),
            opened.index.members.len() + 2,
            opened.size,
            opened.digest.hex()
        ));
    }

    let set = RecipeSet::load(&work).map_err(SeedError::Recipes)?;
    for p in &opts.packages {
        if set.get(p).is_none() {
            return Err(SeedError::NotInSeed {
                package: p.clone(),
                closure: opened.index.closure.join(", "),
            });
        }
    }
    let fetcher = Fetcher::new(FetchConfig {
        source_dirs: opened.source_dirs(),
        offline: true,
        progress: false,
        ..FetchConfig::default()
    });
    let builder = Builder::new(&set, store, &fetcher, opts.build.clone())?;
    let roots: Vec<&str> = opts.packages.iter().map(String::as_str).collect();
    let built = builder.build(&roots)?;

    let manifests = Manifests::new(work.join("manifests"));
    let signatures = signature_check(opts, &manifests)?;
    let mut packages = Vec::new();
    for b in &built {
        let statement = check_statement(&manifests, b)?;
        let report = match (&signatures, &statement) {
            (Some((trust, policy)), StatementCheck::Match | StatementCheck::Mismatch(_)) => {
                let pv = PackageVersion {
                    name: b.name.clone(),
                    version: b.version.clone(),
                };
                Some(verify_package(
                    &manifests,
                    &pv,
                    trust,
                    policy,
                    opts.build.out.as_deref(),
                )?)
            }
            _ => None,
        };
        packages.push(result(b, statement, report));
    }
    Ok(Bootstrapped {
        digest: opened.digest,
        size: opened.size,
        signatures_checked: signatures.is_some(),
        packages,
    })
}

fn result(
    b: &Built,
    statement: StatementCheck,
    signatures: Option<PackageReport>,
) -> PackageResult {
    PackageResult {
        name: b.name.clone(),
        version: b.version.clone(),
        input_digest: b.input,
        manifest_digest: b.manifest_digest(),
        diff_ids: b.diff_ids.clone(),
        cached: b.cached,
        statement,
        signatures,
    }
}

/// The trust anchors and policy to check signatures with: the user's, else
/// the tarball's own keys and policy when it carries both; None otherwise.
fn signature_check(
    opts: &BootstrapOptions,
    manifests: &Manifests,
) -> Result<Option<(Trust, Policy)>, SeedError> {
    let mut trust = Trust::default();
    if opts.keyring.is_empty() {
        let keys = manifests.keys_dir();
        if keys.is_dir() {
            trust.add_keyring(&keys)?;
        }
    } else {
        for dir in &opts.keyring {
            trust.add_keyring(dir)?;
        }
    }
    let policy_path = opts
        .policy
        .clone()
        .unwrap_or_else(|| manifests.policy_path());
    if trust.is_empty() || !policy_path.is_file() {
        return Ok(None);
    }
    let policy = Policy::load(&policy_path)?;
    policy.check(&policy_path.display().to_string())?;
    Ok(Some((trust, policy)))
}

fn refuse_other(seed: &Path, got: Digest, expected: Digest) -> Result<(), SeedError> {
    if got != expected {
        return Err(SeedError::Corrupt {
            file: seed.to_owned(),
            reason: format!(
                "its sha256 is {}, --sha256 expects {}",
                got.hex(),
                expected.hex()
            ),
        });
    }
    Ok(())
}
