//! `imgrep seed export FILE [PKG...]`: the seed tarball for an air-gapped
//! bootstrap (docs/air-gap.md).

use anyhow::Context;

use super::{Global, Outcome};
use crate::seedtar::{self, ExportOptions};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub command: SeedCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum SeedCommand {
    /// Write one deterministic tarball with everything a bootstrap without
    /// network needs: recipes, seeds, every pinned source (verified),
    /// manifests, a README and an index of every member's sha256.
    ///
    /// Sources missing from the store are fetched first. The same recipes,
    /// sources and manifests always give the same bytes; the tarball's
    /// sha256 is printed for publishing beside it. Use it with
    /// `imgrep bootstrap --seed FILE`.
    Export(ExportArgs),
}

#[derive(Debug, clap::Args)]
pub struct ExportArgs {
    /// The tarball to write (replaced atomically), e.g. seed.tar.gz.
    #[arg(value_name = "FILE")]
    pub file: std::path::PathBuf,
    /// Packages whose closure goes in (default: every package of the tree).
    #[arg(value_name = "PKG")]
    pub packages: Vec<String>,
}

pub fn run(global: &Global, args: Args) -> anyhow::Result<Outcome> {
    let SeedCommand::Export(args) = args.command;
    let set = super::load_recipes(global)?;
    let store = super::open_store(global)?;
    let fetcher = super::fetcher(global)?;
    let roots: Vec<&str> = args.packages.iter().map(String::as_str).collect();
    let threads = std::thread::available_parallelism().map_or(1, usize::from);
    let spinner = crate::progress::Spinner::new("seed export");
    spinner.say("staging the recipes, sources and manifests, then compressing");
    let exported = seedtar::export(
        &set,
        &roots,
        &store,
        &fetcher,
        &args.file,
        &ExportOptions { threads },
    )
    .with_context(|| format!("exporting the seed tarball {}", args.file.display()))?;
    drop(spinner);
    if global.json {
        return super::print(&format!("{}\n", serde_json::to_string_pretty(&exported)?));
    }
    crate::progress::info(format_args!(
        "imgrep: wrote {} ({} bytes): {} packages, {} sources, {} statements, {} members",
        exported.path.display(),
        exported.size,
        exported.packages.len(),
        exported.sources,
        exported.statements,
        exported.members
    ));
    super::print(&format!(
        "{}  {}\n",
        exported.digest.hex(),
        exported.path.display()
    ))
}
