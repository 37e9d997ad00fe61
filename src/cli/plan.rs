//! `imgrep plan PKG...`: what `imgrep build` would run, what is cached, and why.

use super::{Global, Outcome};
use crate::builder::{short, Builder};

/// Show what `imgrep build` would do, without fetching or building.
///
/// For each package of the closure, in build order: cached (with its image
/// digest) or to be built, and why: which input changed since the last
/// build in this store (a script, a source pin, a dependency's image...).
#[derive(Debug, clap::Args)]
pub struct Args {
    #[arg(required = true, value_name = "PKG")]
    pub packages: Vec<String>,
    /// Plan as if every package were rebuilt.
    #[arg(long)]
    pub rebuild: bool,
}

pub fn run(global: &Global, args: Args) -> anyhow::Result<Outcome> {
    let set = super::load_recipes(global)?;
    let store = super::open_store(global)?;
    let fetcher = super::fetcher(global)?;
    let opts = crate::builder::Options {
        rebuild: args.rebuild,
        ..crate::builder::Options::default()
    };
    let builder = Builder::new(&set, &store, &fetcher, opts)?;
    let roots: Vec<&str> = args.packages.iter().map(String::as_str).collect();
    let plan = builder.plan(&roots)?;
    if global.json {
        let v: Vec<serde_json::Value> = plan
            .iter()
            .map(|p| {
                serde_json::json!({
                    "name": p.name,
                    "version": p.version,
                    "input_digest": p.input,
                    "cached": p.cached.as_ref().map(|b| b.manifest_digest()),
                    "reasons": p.reasons,
                })
            })
            .collect();
        return super::print(&format!("{}\n", serde_json::to_string_pretty(&v)?));
    }
    let mut text = String::new();
    for p in &plan {
        let input = p
            .input
            .as_ref()
            .map_or("(after its deps)".to_owned(), short);
        match &p.cached {
            Some(b) => text.push_str(&format!(
                "cached  {} {}  input {}  image {}\n",
                p.name,
                p.version,
                input,
                short(&b.manifest_digest())
            )),
            None => {
                text.push_str(&format!(
                    "build   {} {}  input {}\n",
                    p.name, p.version, input
                ));
                for r in &p.reasons {
                    text.push_str(&format!("          {r}\n"));
                }
            }
        }
    }
    super::print(&text)
}
