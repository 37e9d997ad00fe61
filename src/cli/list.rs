//! `imgrep list`: the packages of the recipe tree.

use std::fmt::Write as _;

use serde_json::json;

use super::{Global, Outcome};

#[derive(Debug, clap::Args)]
pub struct Args {}

pub fn run(global: &Global, _args: Args) -> anyhow::Result<Outcome> {
    let set = super::load_recipes(global)?;
    let mut out = String::new();
    if global.json {
        let list: Vec<_> = set
            .iter()
            .map(|r| {
                json!({
                    "name": r.name,
                    "version": r.version,
                    "kind": r.kind.as_str(),
                    "deps": r.deps(),
                    "runtime": r.runtime,
                    "description": r.description,
                    "output": r.output.as_ref().map(|o| json!({
                        "image": o.image,
                        "diff_id": o.diff_id.to_string(),
                    })),
                    "path": r.path,
                })
            })
            .collect();
        out = serde_json::to_string_pretty(&list)? + "\n";
        return super::print(&out);
    }
    let rows: Vec<[String; 4]> = set
        .iter()
        .map(|r| {
            [
                r.name.clone(),
                r.version.clone(),
                r.kind.as_str().to_owned(),
                r.deps().join(","),
            ]
        })
        .collect();
    let header = ["NAME", "VERSION", "KIND", "DEPS"].map(str::to_owned);
    let mut widths = [0; 4];
    for row in std::iter::once(&header).chain(&rows) {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    for row in std::iter::once(&header).chain(&rows) {
        let line = format!(
            "{:w0$}  {:w1$}  {:w2$}  {}",
            row[0],
            row[1],
            row[2],
            row[3],
            w0 = widths[0],
            w1 = widths[1],
            w2 = widths[2]
        );
        writeln!(out, "{}", line.trim_end())?;
    }
    super::print(&out)
}
