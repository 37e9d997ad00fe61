//! `imgrep shell PKG`: enter the build environment a failed build left.

use std::io::IsTerminal;

use anyhow::{bail, Context};

use super::{Global, Outcome};
use crate::builder;
use crate::recipe::BuildDir;

/// Enter the sandbox of the last failed build of PKG, for debugging.
///
/// The root, /build and /out are as the failing step left them; the
/// environment is the step's. Nothing done here changes any cache entry.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The package whose failed build to enter.
    #[arg(value_name = "PKG")]
    pub package: String,
    /// No terminal even when stdin is one: the command gets imgrep's stdin,
    /// stdout and stderr as they are, with no controlling terminal.
    #[arg(short = 'T', long)]
    pub no_tty: bool,
    /// Command to run instead of an interactive /bin/sh.
    #[arg(last = true, value_name = "CMD")]
    pub command: Vec<String>,
}

pub fn run(global: &Global, args: Args) -> anyhow::Result<Outcome> {
    let set = super::load_recipes(global)?;
    let store = super::open_store(global)?;
    let recipe = set
        .get(&args.package)
        .with_context(|| format!("no package {:?} in this recipe tree", args.package))?;
    if recipe.build.is_none() {
        bail!(
            "{}: kind = \"debs\" runs no build step to enter",
            recipe.name
        );
    }
    let Some((dir, lowers)) = builder::kept_failure(&store, &recipe.name)? else {
        bail!(
            "{}: no failed build is kept (looked in {}); `imgrep build {}` keeps one when a step fails",
            recipe.name,
            builder::failed_dir(&store, &recipe.name).display(),
            recipe.name
        );
    };
    let argv = if args.command.is_empty() {
        vec!["/bin/sh".to_owned()]
    } else {
        args.command
    };
    let workdir = recipe
        .build
        .as_ref()
        .map(|b| b.workdir.clone())
        .unwrap_or_default();
    // On disk: what the shell changes stays in the kept directory.
    let mut spec = builder::step_spec(
        recipe,
        &lowers,
        &dir,
        argv,
        &workdir,
        BuildDir::Disk,
        &builder::Options::default(),
    );
    crate::progress::info(format_args!(
        "imgrep: entering the failed build of {} (exit to leave)",
        recipe.name
    ));
    spec.terminal = !args.no_tty && std::io::stdin().is_terminal();
    super::run::pass_term(&mut spec);
    spec.give_trees(sandbox::Trees::All)?;
    let report = sandbox::run(&spec)?;
    report.warnings.iter().for_each(|w| crate::warn::once(w));
    Ok(match report.status {
        sandbox::Status::Exited(c) => super::Outcome::Code(c.clamp(0, 255) as u8),
        sandbox::Status::Signaled(s) | sandbox::Status::Interrupted(s) => {
            super::Outcome::Code((128 + s).clamp(0, 255) as u8)
        }
        sandbox::Status::TimedOut => super::Outcome::Code(124),
        sandbox::Status::Full(_) => super::Outcome::Code(1),
    })
}
