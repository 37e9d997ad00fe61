//! `imgrep bootstrap --seed FILE [PKG...]`: build from a seed tarball with
//! no network, then check the images against the statements it carries
//! (docs/air-gap.md). The workflow is `seedtar::bootstrap`; this file holds
//! the arguments and the report.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};

use super::{Global, Outcome};
use crate::builder;
use crate::digest::Digest;
use crate::seedtar::{self, BootstrapOptions, PackageResult, SeedError, StatementCheck};

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
    pub steps: super::args::StepArgs,
}

pub fn run(global: &Global, args: Args) -> anyhow::Result<Outcome> {
    let sha256 = args
        .sha256
        .as_deref()
        .map(|h| Digest::from_hex(h.strip_prefix("sha256:").unwrap_or(h)))
        .transpose()
        .context("--sha256: expected 64 hex digits")?;
    let workdir = args.workdir.as_deref().map(empty_dir).transpose()?;
    let store = crate::store::Store::default_root(global.store.as_deref())?;
    let opts = BootstrapOptions {
        packages: args.packages.clone(),
        sha256,
        workdir,
        keyring: args.keyring.clone(),
        policy: args.policy.clone(),
        build: builder::Options {
            jobs: args.steps.jobs.max(1),
            limits: args.steps.limits(),
            timeout: args.steps.timeout,
            out: Some(args.out.clone()),
            ..builder::Options::default()
        },
    };
    let done = match seedtar::bootstrap(&args.seed, &store, &opts) {
        Ok(done) => done,
        Err(SeedError::Build(e)) => return Err(super::build::into_cli_error(*e)),
        Err(e) => return Err(e.into()),
    };
    let ok = done.ok();
    if global.json {
        let doc = serde_json::json!({
            "ok": ok,
            "seed": {"path": args.seed, "sha256": done.digest, "size": done.size},
            "signatures_checked": done.signatures_checked,
            "packages": done.packages,
        });
        super::print(&format!("{}\n", serde_json::to_string_pretty(&doc)?))?;
    } else {
        super::report(&table(&done.packages, done.signatures_checked), !ok);
    }
    Ok(if ok {
        Outcome::Success
    } else {
        Outcome::CheckFailed
    })
}

fn table(results: &[PackageResult], signatures: bool) -> String {
    let nw = super::column_width(results.iter().map(|r| r.name.len()), 24);
    let vw = super::column_width(results.iter().map(|r| r.version.len()), 14);
    let mut out = String::new();
    for r in results {
        let verdict = match &r.statement {
            StatementCheck::Match => "MATCH".to_owned(),
            StatementCheck::Missing => "NO STATEMENT (not checked)".to_owned(),
            StatementCheck::Mismatch(d) => format!("MISMATCH: {}", d.join("; ")),
        };
        let _ = writeln!(
            out,
            "{:<nw$} {:<vw$} {}  {verdict}",
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
