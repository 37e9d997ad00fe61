//! `cargo xtask tidy` (also the first step of `cargo xtask ci`): checks of
//! the source text that keep the architecture as docs/ARCHITECTURE.md
//! describes it.
//!
//! - Layers: every module of `src/` sits in one layer of [`LAYERS`]; a
//!   module may name (`crate::x`, in a `use` line or a path) only modules
//!   of lower layers. A new upward import fails CI.
//! - Causes printed once: a `thiserror` message must not show a field that
//!   is also the error's `source()` (a field named `source`, or one marked
//!   `#[from]`/`#[source]`), or `{err:#}` prints that cause twice.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

/// The layers of `src/`, bottom first: the module names (a file `x.rs` or a
/// folder `x/` directly under `src/`) of each. A module may use only modules
/// of layers below its own; modules of one layer never use each other.
/// `lib`/`main` (the crate root) may use everything.
pub const LAYERS: &[(&str, &[&str])] = &[
    // `beneath` (fd-relative writes into untrusted trees) is on its way
    // from a concurrent branch.
    (
        "shared",
        &[
            "digest",
            "canonical",
            "fsutil",
            "progress",
            "warn",
            "beneath",
            "hostids",
        ],
    ),
    (
        "formats",
        &[
            "archive",
            "compress",
            "nar",
            "deb",
            "mirror",
            "statement",
            "recipe",
        ],
    ),
    ("trees and layers", &["unpack", "layer", "graph"]),
    // The store checks the images it holds (store verify): OCI layouts sit below it.
    ("layouts", &["oci"]),
    ("store", &["store"]),
    ("transfer", &["fetch", "registry"]),
    ("build and trust", &["builder", "sign"]),
    ("attestations", &["attest"]),
    ("workflows", &["seedtar", "reproduce", "doctor"]),
    // Diverse double compilation compares builds with reproduce's layerdiff.
    ("comparisons", &["ddc"]),
    ("command line", &["cli"]),
];

/// One finding, `file:line: message`.
#[derive(Debug, PartialEq, Eq)]
pub struct Finding {
    pub file: PathBuf,
    pub line: usize,
    pub message: String,
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}: {}", self.file.display(), self.line, self.message)
    }
}

/// Runs every check over the workspace at `root`; fails with the findings.
pub fn run(root: &Path) -> Result<()> {
    let mut findings = Vec::new();
    for file in rust_files(&root.join("src"))? {
        let text = std::fs::read_to_string(&file).with_context(|| format!("{}", file.display()))?;
        let rel = file.strip_prefix(root).unwrap_or(&file).to_path_buf();
        findings.extend(check_layers(&rel, &text));
        findings.extend(check_causes(&rel, &text));
    }
    for file in rust_files(&root.join("sandbox/src"))? {
        let text = std::fs::read_to_string(&file).with_context(|| format!("{}", file.display()))?;
        let rel = file.strip_prefix(root).unwrap_or(&file).to_path_buf();
        findings.extend(check_causes(&rel, &text));
    }
    if findings.is_empty() {
        eprintln!("xtask: tidy: layers and error messages OK");
        return Ok(());
    }
    for f in &findings {
        eprintln!("{f}");
    }
    bail!(
        "tidy: {} finding(s); the layer rules are xtask/src/tidy.rs's LAYERS, explained in docs/ARCHITECTURE.md",
        findings.len()
    )
}

fn rust_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).with_context(|| format!("{}", d.display()))? {
            let path = entry?.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    out.sort();
    Ok(out)
}

/// The layer index of each module.
fn ranks() -> BTreeMap<&'static str, usize> {
    LAYERS
        .iter()
        .enumerate()
        .flat_map(|(i, (_, mods))| mods.iter().map(move |m| (*m, i)))
        .collect()
}

/// The module of `src/`-relative `file`: `src/builder/cache.rs` -> `builder`.
fn module_of(file: &Path) -> Option<String> {
    let mut parts = file.components().skip_while(|c| c.as_os_str() != "src");
    parts.next()?;
    let first = parts.next()?.as_os_str().to_str()?;
    Some(first.strip_suffix(".rs").unwrap_or(first).to_owned())
}

/// Upward or sideways `crate::` names in `text`, the file `file` of `src/`.
pub fn check_layers(file: &Path, text: &str) -> Vec<Finding> {
    let ranks = ranks();
    let Some(module) = module_of(file) else {
        return Vec::new();
    };
    if module == "lib" || module == "main" {
        return Vec::new();
    }
    let Some(&own) = ranks.get(module.as_str()) else {
        return vec![Finding {
            file: file.to_owned(),
            line: 1,
            message: format!(
                "module `{module}` is in no layer: add it to LAYERS in xtask/src/tidy.rs"
            ),
        }];
    };
    // The code without comments, each line kept (so offsets give lines).
    let code: String = code_lines(text)
        .map(|(_, l)| l)
        .collect::<Vec<_>>()
        .join("\n");
    let line_of = |at: usize| code[..at].matches('\n').count() + 1;
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(i) = code[from..].find("crate::") {
        let at = from + i;
        from = at + "crate::".len();
        if code[..at]
            .chars()
            .last()
            .is_some_and(|c| c.is_alphanumeric() || c == '_')
        {
            continue;
        }
        for name in imported(&code[from..]) {
            if name == module {
                continue;
            }
            // The crate root's items (constants such as DEFAULT_SOURCE_DATE_EPOCH).
            let Some(&theirs) = ranks.get(name.as_str()) else {
                continue;
            };
            if theirs >= own {
                let how = if theirs == own { "beside" } else { "above" };
                out.push(Finding {
                    file: file.to_owned(),
                    line: line_of(at),
                    message: format!(
                        "`{module}` (layer \"{}\") uses `crate::{name}`, a module {how} it \
                         (layer \"{}\"): move the shared piece down, or the caller up",
                        LAYERS[own].0, LAYERS[theirs].0
                    ),
                });
            }
        }
    }
    out
}

/// The first path segments named right after `crate::`: one name, or each
/// of a group `{a::b, c}` (which may span lines).
fn imported(rest: &str) -> Vec<String> {
    let ident = |s: &str| -> String {
        s.trim_start()
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect()
    };
    let Some(group) = rest.strip_prefix('{') else {
        return vec![ident(rest)];
    };
    let mut names = Vec::new();
    let (mut depth, mut start) = (0usize, 0usize);
    for (i, c) in group.char_indices() {
        match c {
            '{' => depth += 1,
            '}' if depth == 0 => {
                names.push(ident(&group[start..i]));
                break;
            }
            '}' => depth -= 1,
            ',' if depth == 0 => {
                names.push(ident(&group[start..i]));
                start = i + 1;
            }
            _ => {}
        }
    }
    names.retain(|n| !n.is_empty());
    names
}

/// Lines of code with their numbers (1-based): `//` comments and doc
/// comments cut, string literals kept (rare enough to pass for code).
fn code_lines(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.lines().enumerate().map(|(i, l)| {
        let code = match l.find("//") {
            Some(c) => &l[..c],
            None => l,
        };
        (i + 1, code)
    })
}

/// `#[error("...")]` messages that show a field `source()` also returns.
pub fn check_causes(file: &Path, text: &str) -> Vec<Finding> {
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let t = lines[i].trim_start();
        if !t.starts_with("#[error(") {
            i += 1;
            continue;
        }
        let start = i;
        let mut attr = t.to_owned();
        while !attr.trim_end().ends_with(")]") && i + 1 < lines.len() {
            i += 1;
            attr.push_str(lines[i].trim());
        }
        i += 1;
        if attr.contains("transparent") {
            continue;
        }
        // The variant (or struct) the attribute describes: up to the comma
        // or brace that closes it.
        let mut body = String::new();
        let mut depth = 0i32;
        'variant: while i < lines.len() {
            for c in lines[i].chars() {
                match c {
                    '{' | '(' => depth += 1,
                    '}' | ')' => depth -= 1,
                    _ => {}
                }
                body.push(c);
                if depth < 0 || (depth == 0 && (c == ',' || c == '}' || c == ';')) {
                    i += 1;
                    break 'variant;
                }
            }
            body.push('\n');
            i += 1;
        }
        let named_source = body.contains("source:") && attr.contains("{source");
        let positional = ["#[from]", "#[source]"].iter().any(|m| body.contains(m))
            && (attr.contains("{0") || attr.contains(".0"));
        if named_source || positional {
            out.push(Finding {
                file: file.to_owned(),
                line: start + 1,
                message: "this message shows the cause that source() also returns, so \
                          `{err:#}` prints it twice: name the cause in the message and \
                          keep it out of source() (a field not named `source`, no \
                          #[from]), or the reverse"
                    .to_owned(),
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_upward_import_is_caught() {
        // The store may not reach up to the builder, even through a path.
        let text = "use crate::digest::Digest;\nfn f() { crate::builder::short(&d); }\n";
        let found = check_layers(Path::new("src/store.rs"), text);
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].line, 2);
        assert!(found[0].message.contains("crate::builder"), "{}", found[0]);
        // A group, across lines as rustfmt writes it, is read name by name.
        let grouped = "use crate::{\n    digest::Digest,\n    reproduce::{self, Row},\n};\n";
        let found = check_layers(Path::new("src/store.rs"), grouped);
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(
            found[0].message.contains("crate::reproduce"),
            "{}",
            found[0]
        );
        // Downward imports, and the module's own paths, pass.
        let ok =
            "use crate::digest::Digest;\nuse crate::store::Store;\n// crate::cli in a comment\n";
        assert!(check_layers(Path::new("src/store.rs"), ok).is_empty());
        assert!(check_layers(Path::new("src/builder/steps.rs"), ok).is_empty());
    }

    #[test]
    fn a_sideways_import_and_an_unlisted_module_are_caught() {
        let found = check_layers(
            Path::new("src/sign/remote.rs"),
            "use crate::builder::Built;\n",
        );
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].message.contains("beside"), "{}", found[0]);
        let found = check_layers(Path::new("src/newthing.rs"), "");
        assert!(found[0].message.contains("in no layer"), "{}", found[0]);
    }

    #[test]
    fn every_module_of_the_tree_is_in_one_layer() {
        let mut seen = std::collections::BTreeSet::new();
        for (_, mods) in LAYERS {
            for m in *mods {
                assert!(seen.insert(*m), "{m} is in two layers");
            }
        }
    }

    #[test]
    fn a_cause_shown_twice_is_caught() {
        let twice = r#"
pub enum E {
    #[error("{path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("writing: {0}")]
    Write(#[from] std::io::Error),
}
"#;
        let found = check_causes(Path::new("src/x.rs"), twice);
        assert_eq!(
            found.iter().map(|f| f.line).collect::<Vec<_>>(),
            [3, 5],
            "{found:?}"
        );
        let once = r#"
pub enum E {
    #[error("{path}: {error}")]
    Io { path: String, error: std::io::Error },
    #[error("writing the layer")]
    Write(#[from] std::io::Error),
    #[error(transparent)]
    Other(#[from] std::fmt::Error),
}
"#;
        assert!(check_causes(Path::new("src/x.rs"), once).is_empty());
    }
}
