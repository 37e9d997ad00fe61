//! `imgrep store verify`: the store's consistency check.

use super::{Global, Outcome};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub command: StoreCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum StoreCommand {
    /// Check every entry of the store against its name (docs/store.md).
    ///
    /// Source files and blobs must hash to their names, trees to their NAR
    /// hash; every build record must name an image whose manifest, config
    /// and layers are present with the digests, sizes and diff_ids they
    /// claim; every unpacked layer must equal its layer blob unpacked
    /// afresh; no file outside tmp/ may have a name that is not an entry's.
    /// Prints one line per problem (`PATH: what is wrong`, PATH relative to
    /// the store) and exits 1 if there is any. Reads everything: expect it
    /// to take as long as reading the whole store.
    Verify,
}

pub fn run(global: &Global, args: Args) -> anyhow::Result<Outcome> {
    match args.command {
        StoreCommand::Verify => verify(global),
    }
}

fn verify(global: &Global) -> anyhow::Result<Outcome> {
    let store = super::open_store(global)?;
    let report = store.verify()?;
    if global.json {
        let json = serde_json::json!({
            "store": store.root(),
            "ok": report.problems.is_empty(),
            "checked": report.checked,
            "problems": report.problems,
        });
        super::print(&format!("{json}\n"))?;
    } else {
        let mut text = String::new();
        for p in &report.problems {
            text.push_str(&format!("{p}\n"));
        }
        super::print(&text)?;
        let c = &report.checked;
        super::report(
            &format!(
            "{}: {} source(s), {} tree(s), {} blob(s), {} unpacked layer(s), {} record(s) checked; {} problem(s)\n",
            store.root().display(),
            c.sources,
            c.trees,
            c.blobs,
            c.layers,
            c.records,
            report.problems.len()
            ),
            !report.problems.is_empty(),
        );
    }
    Ok(if report.problems.is_empty() {
        Outcome::Success
    } else {
        Outcome::CheckFailed
    })
}
