//! `imgrep graph [PKG...] [--dot]`: the dependency graph as a text tree,
//! Graphviz dot, or JSON with build order and levels.

use std::collections::BTreeSet;
use std::fmt::Write as _;

use serde_json::json;

use super::{Global, Outcome};
use crate::graph::Graph;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Show only these packages and what they depend on (default: everything).
    #[arg(value_name = "PKG")]
    pub packages: Vec<String>,
    /// Print Graphviz dot (runtime edges dashed) instead of a tree.
    #[arg(long, conflicts_with = "json")]
    pub dot: bool,
}

pub fn run(global: &Global, args: Args) -> anyhow::Result<Outcome> {
    let set = super::load_recipes(global)?;
    let graph = Graph::new(&set);
    let roots: Vec<&str> = args.packages.iter().map(String::as_str).collect();
    let order = graph.closure(&roots)?;
    let text = if args.dot {
        dot(&graph, &order)
    } else if global.json {
        let levels = graph.levels(&roots)?;
        let packages: Vec<_> = order
            .iter()
            .map(|r| {
                json!({
                    "name": r.name,
                    "version": r.version,
                    "deps": r.deps(),
                    "runtime": r.runtime,
                    "level": levels.iter().position(|l| l.contains(&r.name.as_str())),
                })
            })
            .collect();
        let doc = json!({
            "order": order.iter().map(|r| &r.name).collect::<Vec<_>>(),
            "levels": levels,
            "packages": packages,
        });
        serde_json::to_string_pretty(&doc)? + "\n"
    } else {
        let tops = if roots.is_empty() {
            graph.roots()
        } else {
            order
                .iter()
                .map(|r| r.name.as_str())
                .filter(|n| roots.contains(n))
                .collect()
        };
        tree(&graph, &tops)
    };
    super::print(&text)
}

/// One tree per top package; a subtree already shown is marked `(*)`.
fn tree(graph: &Graph, tops: &[&str]) -> String {
    let mut out = String::new();
    let mut shown = BTreeSet::new();
    for top in tops {
        node(graph, top, "", "", "", &mut shown, &mut out);
    }
    out
}

fn node<'a>(
    graph: &Graph<'a>,
    name: &'a str,
    label: &str,
    first: &str,
    rest: &str,
    shown: &mut BTreeSet<&'a str>,
    out: &mut String,
) {
    let r = graph.set().get(name).expect("closure member");
    let edges = graph.edges(name);
    let repeat = !edges.is_empty() && !shown.insert(name);
    let _ = writeln!(
        out,
        "{first}{} {}{label}{}",
        r.name,
        r.version,
        if repeat { " (*)" } else { "" }
    );
    if repeat {
        return;
    }
    for (i, dep) in edges.iter().enumerate() {
        let last = i + 1 == edges.len();
        let (branch, cont) = if last {
            ("└── ", "    ")
        } else {
            ("├── ", "│   ")
        };
        let label = match (
            r.deps().iter().any(|d| d == dep),
            r.runtime.iter().any(|d| d == dep),
        ) {
            (true, true) => " [build, runtime]",
            (false, true) => " [runtime]",
            _ => "",
        };
        node(
            graph,
            dep,
            label,
            &format!("{rest}{branch}"),
            &format!("{rest}{cont}"),
            shown,
            out,
        );
    }
}

fn dot(graph: &Graph, order: &[&crate::recipe::Recipe]) -> String {
    let mut out = String::from("digraph imgrep {\n  node [shape=box];\n");
    for r in order {
        let _ = writeln!(
            out,
            "  \"{}\" [label=\"{}\\n{}\"];",
            r.name,
            r.name,
            escape(&r.version)
        );
    }
    for r in order {
        for dep in graph.edges(&r.name) {
            let attrs = if r.deps().iter().any(|d| d == dep) {
                ""
            } else {
                " [style=dashed, label=\"runtime\"]"
            };
            let _ = writeln!(out, "  \"{}\" -> \"{dep}\"{attrs};", r.name);
        }
    }
    out.push_str("}\n");
    out
}

/// Versions may hold `"` or `\`; names cannot (docs/recipes.md).
fn escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}
