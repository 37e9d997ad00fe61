//! `imgrep completions SHELL` and the hidden `imgrep man DIR`: shell
//! completions and man pages generated from the clap definitions, so they
//! never drift from `--help`.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::CommandFactory;

use super::{Cli, Global, Outcome};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// bash, zsh, fish, elvish or powershell.
    #[arg(value_name = "SHELL")]
    pub shell: clap_complete::Shell,
}

pub fn run(_global: &Global, args: Args) -> Result<Outcome> {
    let mut cmd = Cli::command();
    clap_complete::generate(args.shell, &mut cmd, "imgrep", &mut std::io::stdout());
    Ok(Outcome::Success)
}

#[derive(Debug, clap::Args)]
pub struct ManArgs {
    /// Where to write imgrep.1 and one imgrep-COMMAND.1 per command.
    #[arg(value_name = "DIR")]
    pub dir: PathBuf,
}

pub fn man(_global: &Global, args: ManArgs) -> Result<Outcome> {
    std::fs::create_dir_all(&args.dir)
        .with_context(|| format!("creating {}", args.dir.display()))?;
    clap_mangen::generate_to(Cli::command(), &args.dir)
        .with_context(|| format!("writing man pages into {}", args.dir.display()))?;
    Ok(Outcome::Success)
}
