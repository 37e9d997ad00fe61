//! `imgrep fetch [PKG...]`: download and verify sources, nothing else.

use super::{Global, Outcome};
use crate::builder::sources;

/// Fetch and verify the pinned sources of packages (all when none given).
///
/// Sources are tried from local source directories (IMGREP_SOURCE_DIRS or the
/// config file), then the recipe's URLs in order (`mirror://NAME/` through
/// the configured mirrors; `mirror://debian/` defaults to the archive the
/// host's apt configuration names), then fallback mirrors. The hash decides,
/// never the origin: a mismatch stores nothing. See docs/fetch.md.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Packages whose closure's sources to fetch (default: every package).
    #[arg(value_name = "PKG")]
    pub packages: Vec<String>,
}

pub fn run(global: &Global, args: Args) -> anyhow::Result<Outcome> {
    let set = super::load_recipes(global)?;
    let store = super::open_store(global)?;
    let fetcher = super::fetcher(global)?;
    let graph = crate::graph::Graph::new(&set);
    let roots: Vec<&str> = args.packages.iter().map(String::as_str).collect();
    let mut rows = Vec::new();
    for recipe in graph.closure(&roots)? {
        for got in sources::fetch_all(recipe, set.root(), &store, &fetcher)? {
            rows.push((recipe.name.clone(), got.path));
        }
    }
    if global.json {
        let v: Vec<serde_json::Value> = rows
            .iter()
            .map(|(n, p)| serde_json::json!({"package": n, "path": p}))
            .collect();
        return super::print(&format!("{}\n", serde_json::to_string_pretty(&v)?));
    }
    for (n, p) in &rows {
        crate::progress::info(format_args!("{n:<24} {}", p.display()));
    }
    Ok(Outcome::Success)
}
