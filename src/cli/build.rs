//! `imgrep build PKG...`: the main job (docs/recipes.md, docs/ARCHITECTURE.md).

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

/// Options of `imgrep build`.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub steps: super::args::StepArgs,
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
            timeout: self.steps.timeout,
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
    let nw = super::column_width(built.iter().map(|b| b.name.len()), 24);
    let vw = super::column_width(built.iter().map(|b| b.version.len()), 14);
    let mut table = String::new();
    for b in &built {
        table.push_str(&format!(
            "{:<nw$} {:<vw$} {}  {}\n",
            b.name,
            b.version,
            b.manifest_digest(),
            if b.cached { "cached" } else { "built" }
        ));
    }
    super::report(&table, false);
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
