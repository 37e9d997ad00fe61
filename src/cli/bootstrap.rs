//! `imgrep bootstrap --seed FILE [PKG...]`: build from a seed tarball with
//! no network, then check the images against the statements it carries
//! (docs/air-gap.md).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};

use super::{Global, Outcome};
use crate::builder::{self, Builder, Built};
use crate::digest::Digest;
use crate::fetch::{FetchConfig, Fetcher};
use crate::recipe::RecipeSet;
use crate::seedtar::{self, StatementCheck};
use crate::sign::manifests::{Manifests, PackageVersion};
use crate::sign::policy::Policy;
use crate::sign::trust::Trust;
use crate::sign::verify::{verify_package, PackageReport};

/// Build from a seed tarball on a machine with no network, and check the
/// images against the statements inside.
///
/// The tarball is verified completely first (every member against its
/// index, the index against its checksum, the gzip and tar streams to
/// their ends); a damaged or truncated one is refused before anything is
/// built (exit 2). Sources come only from the tarball (offline). Each
/// image must then have the input digest, manifest digest and diff_ids of
/// its statement (exit 1 otherwise); with keys and a policy in the tarball
/// (or --keyring/--policy), signatures are checked as `imgrep verify` does.
/// A failed build step exits 3.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The seed tarball (from `imgrep seed export`).
    #[arg(long, value_name = "FILE")]
    pub seed: PathBuf,
    /// Packages to build (default: every package in the tarball).
    #[arg(value_name = "PKG")]
    pub packages: Vec<String>,
    /// The tarball's expected sha256 (as `seed export` printed it), checked
    /// before anything is built.
    #[arg(long, value_name = "HEX")]
    pub sha256: Option<String>,
    /// OCI layout the images are tagged NAME:VERSION in.
    #[arg(long, value_name = "DIR", default_value = "out")]
    pub out: PathBuf,
    /// Unpack into DIR (new or empty) and keep it; default: a temporary
    /// directory in the store, removed at the end.
    #[arg(long, value_name = "DIR")]
    pub workdir: Option<PathBuf>,
    /// Trust the public keys in DIR instead of the tarball's manifests/keys.
    #[arg(long, value_name = "DIR")]
    pub keyring: Vec<PathBuf>,
    /// The signature policy instead of the tarball's manifests/policy.toml.
    #[arg(long, value_name = "FILE")]
    pub policy: Option<PathBuf>,
    #[command(flatten)]
    pub steps: super::build::StepArgs,
}

/// Removes the unpacked tarball at the end (its trees may be read-only).
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = crate::store::remove_tree(&self.0);
    }
}

#[derive(serde::Serialize)]
struct PackageResult<'a> {
    name: &'a str,
    version: &'a str,
    input_digest: Digest,
    manifest_digest: Digest,
    diff_ids: &'a [Digest],
    cached: bool,
    statement: StatementCheck,
    signatures: Option<PackageReport>,
}

pub fn run(global: &Global, args: Args) -> anyhow::Result<Outcome> {
    let expected = args
        .sha256
        .as_deref()
        .map(|h| Digest::from_hex(h.strip_prefix("sha256:").unwrap_or(h)))
        .transpose()
        .context("--sha256: expected 64 hex digits")?;
    if let Some(expected) = expected {
        // Before unpacking anything: a stranger's file never reaches the disk.
        let (got, _) = std::fs::File::open(&args.seed)
            .and_then(crate::digest::hash_reader)
            .with_context(|| format!("reading {}", args.seed.display()))?;
        refuse_other(&args.seed, got, expected)?;
    }
    let store = super::open_store(global)?;
    let (work, _scratch) = match &args.workdir {
        Some(dir) => (empty_dir(dir)?, None),
        None => {
            let dir = store.temp_dir()?.keep();
            (dir.clone(), Some(Scratch(dir)))
        }
    };
    let opened = seedtar::open(&args.seed, &work)?;
    if let Some(expected) = expected {
        // Again for what was unpacked: the file may have changed meanwhile.
        refuse_other(&args.seed, opened.digest, expected)?;
    }
    eprintln!(
        "imgrep: {}: verified {} members ({} bytes, sha256 {})",
        args.seed.display(),
        opened.index.members.len() + 2,
        opened.size,
        opened.digest.hex()
    );

    let set = RecipeSet::load(&work).context("the seed tarball's recipes")?;
    for p in &args.packages {
        if set.get(p).is_none() {
            bail!(
                "{p}: not in the seed tarball (it holds: {})",
                opened.index.closure.join(", ")
            );
        }
    }
    let fetcher = Fetcher::new(FetchConfig {
        source_dirs: opened.source_dirs(),
        offline: true,
        progress: false,
        ..FetchConfig::default()
    });
    let opts = builder::Options {
        jobs: args.steps.jobs.max(1),
        limits: args.steps.limits(),
        timeout: args.steps.timeout(),
        out: Some(args.out.clone()),
        ..builder::Options::default()
    };
    let builder = Builder::new(&set, &store, &fetcher, opts)?;
    let roots: Vec<&str> = args.packages.iter().map(String::as_str).collect();
    let built = builder
        .build(&roots)
        .map_err(super::build::into_cli_error)?;

    let manifests = Manifests::new(work.join("manifests"));
    let signatures = signature_check(&args, &manifests)?;
    let mut results = Vec::new();
    for b in &built {
        let statement = seedtar::check_statement(&manifests, b)?;
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
                    Some(&args.out),
                )?)
            }
            _ => None,
        };
        results.push(result(b, statement, report));
    }
    let ok = results.iter().all(|r| {
        !matches!(r.statement, StatementCheck::Mismatch(_))
            && r.signatures.as_ref().is_none_or(|s| s.ok)
    });
    if global.json {
        let doc = serde_json::json!({
            "ok": ok,
            "seed": {"path": args.seed, "sha256": opened.digest, "size": opened.size},
            "signatures_checked": signatures.is_some(),
            "packages": results,
        });
        super::print(&format!("{}\n", serde_json::to_string_pretty(&doc)?))?;
    } else {
        eprint!("{}", table(&results, signatures.is_some()));
    }
    Ok(if ok {
        Outcome::Success
    } else {
        Outcome::CheckFailed
    })
}

fn result<'a>(
    b: &'a Built,
    statement: StatementCheck,
    signatures: Option<PackageReport>,
) -> PackageResult<'a> {
    PackageResult {
        name: &b.name,
        version: &b.version,
        input_digest: b.input,
        manifest_digest: b.manifest_digest(),
        diff_ids: &b.diff_ids,
        cached: b.cached,
        statement,
        signatures,
    }
}

/// The trust anchors and policy to check signatures with: the user's, else
/// the tarball's own keys and policy when it carries both; None otherwise.
fn signature_check(args: &Args, manifests: &Manifests) -> anyhow::Result<Option<(Trust, Policy)>> {
    let mut trust = Trust::default();
    if args.keyring.is_empty() {
        let keys = manifests.keys_dir();
        if keys.is_dir() {
            trust.add_keyring(&keys)?;
        }
    } else {
        for dir in &args.keyring {
            trust.add_keyring(dir)?;
        }
    }
    let policy_path = args
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

fn table(results: &[PackageResult<'_>], signatures: bool) -> String {
    let mut out = String::new();
    for r in results {
        let verdict = match &r.statement {
            StatementCheck::Match => "MATCH".to_owned(),
            StatementCheck::Missing => "NO STATEMENT (not checked)".to_owned(),
            StatementCheck::Mismatch(d) => format!("MISMATCH: {}", d.join("; ")),
        };
        let _ = writeln!(
            out,
            "{:<24} {:<14} {}  {verdict}",
            r.name, r.version, r.manifest_digest
        );
        if let Some(s) = &r.signatures {
            let _ = if s.ok {
                writeln!(out, "  signatures: OK, {} trusted", s.trusted_signatures)
            } else {
                writeln!(out, "  signatures: FAIL: {}", s.failures.join("; "))
            };
        }
    }
    if !signatures {
        out.push_str(
            "imgrep: signatures not checked: the tarball has no manifests/keys and \
             manifests/policy.toml (pass --keyring DIR and --policy FILE)\n",
        );
    }
    out
}

fn refuse_other(seed: &Path, got: Digest, expected: Digest) -> anyhow::Result<()> {
    if got != expected {
        bail!(
            "{}: refused, nothing was built: its sha256 is {}, --sha256 expects {}",
            seed.display(),
            got.hex(),
            expected.hex()
        );
    }
    Ok(())
}

/// `dir`, created if needed; it must be empty.
fn empty_dir(dir: &Path) -> anyhow::Result<PathBuf> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    if std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .next()
        .is_some()
    {
        bail!("--workdir {}: not empty", dir.display());
    }
    Ok(dir.to_owned())
}
