//! `imgrep ddc NAME`: a diverse double compilation declared in
//! ddc/NAME.toml (docs/ddc.md). The work is in src/ddc/.

use super::{Global, Outcome};
use crate::builder::Builder;
use crate::ddc::{self, DdcError, Declaration};

/// Diverse double compilation: build a compiler from source with each of
/// several unrelated roots (stage 1), let each result build the same source
/// again in the same environment (stage 2), and require the stage-2 layers
/// to be bit-identical.
///
/// The comparison is declared in ddc/NAME.toml of the recipe tree: for each
/// root, its stage-1 and stage-2 recipes (ordinary packages, built and
/// cached as by `imgrep build`). The declaration is checked first: every
/// stage 1 has the same sources, every stage 2 is the same recipe but for
/// its stage-1 image. Prints, per root, the layer digest of each stage
/// (stage 1 is expected to differ between roots, stage 2 must not) and the
/// verdict. Exit 0 when stage 2 is identical across roots; 1 when it
/// differs, with a file-level diff of each differing layer; 2 on an input
/// error; 3 when a build step failed.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The comparison: ddc/NAME.toml (without NAME, list the declared ones).
    #[arg(value_name = "NAME")]
    pub name: Option<String>,
    #[command(flatten)]
    pub run: super::build::RunArgs,
}

pub fn run(global: &Global, args: Args) -> anyhow::Result<Outcome> {
    let set = super::load_recipes(global)?;
    let Some(name) = args.name else {
        let names = ddc::list(set.root());
        if global.json {
            return super::print(&format!("{}\n", serde_json::to_string_pretty(&names)?));
        }
        return super::print(&names.iter().map(|n| format!("{n}\n")).collect::<String>());
    };
    let decl = Declaration::load(&set, &name)?;
    let store = super::open_store(global)?;
    let fetcher = super::fetcher(global)?;
    let builder = Builder::new(&set, &store, &fetcher, args.run.options(global))?;
    let report = match ddc::run(&decl, &builder) {
        Ok(r) => r,
        Err(DdcError::Build(e)) => return Err(super::build::into_cli_error(*e)),
        Err(e) => return Err(e.into()),
    };
    if global.json {
        super::print(&format!("{}\n", serde_json::to_string_pretty(&report)?))?;
    } else {
        super::report(&report.to_string(), !report.verdict);
    }
    Ok(if report.verdict {
        Outcome::Success
    } else {
        Outcome::CheckFailed
    })
}
