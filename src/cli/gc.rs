//! `imgrep gc`: remove from the store what the recipe tree no longer needs.

use std::collections::BTreeMap;

use super::{Global, Outcome};
use crate::builder::{Builder, Options};
use crate::store::GcRoots;

/// Delete store entries that no package of this recipe tree needs.
///
/// Kept: every source the tree pins, and for each package whose current
/// input digest is cached, its build record, image blobs and unpacked layers.
/// Everything else goes: old builds, failed builds kept for `imgrep shell`,
/// temporary files of killed processes. Runs alone (other imgrep processes
/// using the store wait, and gc waits for them).
#[derive(Debug, clap::Args)]
pub struct Args {}

pub fn run(global: &Global, _args: Args) -> anyhow::Result<Outcome> {
    let set = super::load_recipes(global)?;
    let store = super::open_store(global)?;
    let fetcher = super::fetcher(global)?;
    let builder = Builder::new(&set, &store, &fetcher, Options::default())?;
    let mut roots = GcRoots::default();
    for r in set.iter() {
        for s in &r.sources {
            match s.pin {
                crate::recipe::Pin::Sha256(d) => {
                    roots.sources.insert(d);
                }
                crate::recipe::Pin::Tree(h) => {
                    roots.trees.insert(crate::nar::NarHash::from_bytes(h));
                }
            }
        }
    }
    let names: Vec<&str> = set.iter().map(|r| r.name.as_str()).collect();
    let mut versions = BTreeMap::new();
    for item in builder.plan(&names)? {
        if let Some(b) = item.cached {
            let image = builder.image_blobs(&b)?;
            roots.blobs.extend(image);
            roots.layers.extend(b.diff_ids.iter().copied());
            roots.records.insert(b.input);
            versions.insert(b.name, b.version);
        }
    }
    let report = store.gc(&roots)?;
    let failed = store.root().join("failed");
    let removed_failed = crate::store::remove_tree(&failed).unwrap_or(0);
    crate::progress::info(format_args!(
        "imgrep: gc kept {} cached packages; removed {} entries ({} bytes) and {} kept failed-build files",
        versions.len(),
        report.removed,
        report.bytes,
        removed_failed
    ));
    Ok(Outcome::Success)
}
