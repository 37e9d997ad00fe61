//! `imgrep publish PKG...`: write the statements of local builds under
//! manifests/, for signers to rebuild and sign (docs/signing.md).

use std::path::PathBuf;

use anyhow::{bail, Context, Result};

use super::{Global, Outcome};
use crate::builder::{Builder, Options};
use crate::recipe::{Pin, Recipe};
use crate::sign::manifests::Manifests;
use crate::statement::{ImageDigests, SourceHash, Statement};

/// Write manifests/packages/NAME/VERSION/statement.json from the local
/// build of each package: its input digest, image manifest digest, layer
/// diff_ids and source hashes. Nothing is built: a package whose current
/// inputs are not built in the store is an error. A statement that changes
/// drops the signatures of the old one.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Packages whose statements to write.
    #[arg(required = true, value_name = "PKG")]
    pub packages: Vec<String>,
    /// The manifests directory (default: manifests/ of the recipe tree).
    #[arg(long, value_name = "DIR")]
    pub manifests: Option<PathBuf>,
}

pub fn run(global: &Global, args: Args) -> Result<Outcome> {
    let set = super::load_recipes(global)?;
    let store = super::open_store(global)?;
    let fetcher = super::fetcher(global)?;
    let opts = Options {
        out: None,
        verbose: false,
        ..Options::default()
    };
    let builder = Builder::new(&set, &store, &fetcher, opts)?;
    let manifests = Manifests::new(
        args.manifests
            .unwrap_or_else(|| super::tree_root(global).join("manifests")),
    );
    let roots: Vec<&str> = args.packages.iter().map(String::as_str).collect();
    let plan = builder.plan(&roots)?;
    let mut written = Vec::new();
    for name in &args.packages {
        let item = plan
            .iter()
            .find(|i| &i.name == name)
            .expect("the plan covers every root");
        let Some(built) = &item.cached else {
            bail!(
                "{name} {}: not built with its current inputs in the store {} ({}): run `imgrep build {name}` first",
                item.version,
                store.root().display(),
                item.reasons.join("; ")
            );
        };
        let recipe = set.get(name).expect("planned packages are in the tree");
        let st = Statement::new(
            &built.name,
            &built.version,
            built.input,
            ImageDigests {
                manifest: built.manifest_digest(),
                diff_ids: built.diff_ids.clone(),
            },
            source_hashes(recipe),
        )
        .with_context(|| format!("{name}: making its statement"))?;
        let path = manifests.write_statement(&st)?;
        if !global.json {
            crate::progress::info(format_args!(
                "{name} {}: statement {} ({})",
                built.version,
                path.display(),
                st.digest()
            ));
        }
        written.push(serde_json::json!({
            "name": built.name,
            "version": built.version,
            "statement": path,
            "digest": st.digest(),
        }));
    }
    if global.json {
        return super::print(&format!("{}\n", serde_json::to_string_pretty(&written)?));
    }
    Ok(Outcome::Success)
}

/// Each source's pin, in recipe order.
fn source_hashes(recipe: &Recipe) -> Vec<SourceHash> {
    recipe
        .sources
        .iter()
        .map(|s| match &s.pin {
            Pin::Sha256(d) => SourceHash::File(*d),
            Pin::Tree(_) => SourceHash::Tree(s.pin.to_recipe_string()),
        })
        .collect()
}
