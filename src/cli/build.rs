//! `imgrep build PKG...`: the main job (docs/recipes.md, docs/ARCHITECTURE.md).

use std::time::Duration;

use anyhow::Context;

use super::{Failure, Global, Outcome};
use crate::builder::{self, BuildError, Builder};

/// Build packages and their dependencies into OCI images.
///
/// Resolves the dependency closure, computes each package's input digest
/// (canonical recipe, source pins, dependency image digests, layer format
/// version), reuses what the store has built for the same input digest, and
/// builds the rest in dependency order, each step in a fresh sandbox. Each
/// image is tagged NAME:VERSION in the OCI layout `out/` of the recipe tree,
/// e.g. `podman run --rm oci:out:bzip2:1.0.8`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Packages to build (with everything they need).
    #[arg(required = true, value_name = "PKG")]
    pub packages: Vec<String>,
    #[command(flatten)]
    pub run: RunArgs,
}

/// How build steps run: shared by `build`, `reproduce` and `bootstrap`.
#[derive(Debug, clap::Args)]
pub struct StepArgs {
    /// Build up to N independent packages at once.
    #[arg(short, long, default_value_t = 1, value_name = "N")]
    pub jobs: usize,
    /// Memory limit of each step, in bytes or with a K/M/G suffix.
    #[arg(long, value_parser = parse_size, value_name = "SIZE")]
    pub memory: Option<u64>,
    /// Maximum number of processes of each step.
    #[arg(long, value_name = "N")]
    pub pids: Option<u64>,
    /// Kill a package's steps when together they run longer than this many seconds.
    #[arg(long, value_name = "SECONDS")]
    pub timeout: Option<u64>,
}

impl StepArgs {
    pub fn limits(&self) -> sandbox::Limits {
        sandbox::Limits {
            memory: self.memory,
            pids: self.pids,
            cpus: None,
        }
    }

    pub fn timeout(&self) -> Option<Duration> {
        self.timeout.map(Duration::from_secs)
    }
}

/// Options of `imgrep build`.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub steps: StepArgs,
    /// Rebuild even what the store has built for the same input digest.
    #[arg(long)]
    pub rebuild: bool,
    /// OCI layout the images are tagged in (default: out/ of the recipe tree).
    #[arg(long, value_name = "DIR")]
    pub out: Option<std::path::PathBuf>,
    /// Before building a package, look for an image of the same input
    /// digest in this registry prefix (HOST/PREFIX; repeatable). Images are
    /// tagged `input-<hex>` under HOST/PREFIX/NAME (docs/registry.md).
    #[arg(
        long,
        value_name = "HOST/PREFIX",
        env = "IMGREP_CACHE_FROM",
        value_delimiter = ' '
    )]
    pub cache_from: Vec<String>,
    /// Push every image built here to this registry prefix, tagged by input digest.
    #[arg(long, value_name = "HOST/PREFIX", env = "IMGREP_CACHE_TO")]
    pub cache_to: Option<String>,
}

impl RunArgs {
    pub fn options(&self, global: &Global) -> builder::Options {
        builder::Options {
            jobs: self.steps.jobs.max(1),
            rebuild: self.rebuild,
            limits: self.steps.limits(),
            timeout: self.steps.timeout(),
            out: Some(
                self.out
                    .clone()
                    .unwrap_or_else(|| super::tree_root(global).join("out")),
            ),
            cache_from: self.cache_from.clone(),
            cache_to: self.cache_to.clone(),
            ..builder::Options::default()
        }
    }
}

pub fn parse_size(s: &str) -> Result<u64, String> {
    let (num, mult) = match s.char_indices().last() {
        Some((i, 'K' | 'k')) => (&s[..i], 1u64 << 10),
        Some((i, 'M' | 'm')) => (&s[..i], 1 << 20),
        Some((i, 'G' | 'g')) => (&s[..i], 1 << 30),
        _ => (s, 1),
    };
    num.parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(mult))
        .filter(|&n| n > 0)
        .ok_or_else(|| format!("{s:?} is not a size: expected bytes, or a number with K, M or G"))
}

pub fn run(global: &Global, args: Args) -> anyhow::Result<Outcome> {
    let set = super::load_recipes(global)?;
    let store = super::open_store(global)?;
    let fetcher = super::fetcher(global)?;
    let builder = Builder::new(&set, &store, &fetcher, args.run.options(global))?;
    let roots: Vec<&str> = args.packages.iter().map(String::as_str).collect();
    let built = builder.build(&roots).map_err(into_cli_error)?;
    if global.json {
        let v: Vec<serde_json::Value> = built
            .iter()
            .map(|b| {
                serde_json::json!({
                    "name": b.name,
                    "version": b.version,
                    "input_digest": b.input,
                    "manifest_digest": b.manifest_digest(),
                    "diff_ids": b.diff_ids,
                    "cached": b.cached,
                    "seconds": b.duration.as_secs_f64(),
                })
            })
            .collect();
        return super::print(&format!("{}\n", serde_json::to_string_pretty(&v)?));
    }
    // One write: stderr is unbuffered, and a line per package costs
    // several system calls each (measurable in a no-op build of hundreds).
    let mut table = String::new();
    for b in &built {
        table.push_str(&format!(
            "{:<24} {:<14} {}  {}\n",
            b.name,
            b.version,
            b.manifest_digest(),
            if b.cached { "cached" } else { "built" }
        ));
    }
    eprint!("{table}");
    Ok(Outcome::Success)
}

/// A failed step exits 3; other build errors keep the default (2).
pub fn into_cli_error(e: BuildError) -> anyhow::Error {
    match e {
        BuildError::StepFailed(_) | BuildError::FixedOutput(_) => {
            anyhow::Error::from(Failure::BuildFailed(e.to_string()))
        }
        other => anyhow::Error::from(other).context("build failed"),
    }
}

/// Reads the build root a failed build kept (for `imgrep shell`).
pub fn kept_lowers(dir: &std::path::Path) -> anyhow::Result<crate::builder::Lowers> {
    let path = dir.join("lowers.json");
    let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_slice(&bytes).with_context(|| format!("parsing {}", path.display()))
}
