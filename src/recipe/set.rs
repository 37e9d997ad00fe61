//! A recipe tree: discovery under `packages/`, `stage0/` and `bootstrap/`, and the checks
//! that need every recipe at once (directory names, duplicates, unknown and
//! cyclic dependencies, recipes providing one image).

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use super::diag::{Diagnostic, Position, RecipeError};
use super::parse::{self, Parsed};
use super::suggest::suggest;
use super::Recipe;

/// The directories of a tree that hold one directory per package.
const TREES: &[&str] = &["packages", "stage0", "bootstrap"];

/// Every recipe of a tree, valid as a whole, by name.
#[derive(Debug, Clone)]
pub struct RecipeSet {
    root: PathBuf,
    recipes: BTreeMap<String, Recipe>,
}

impl RecipeSet {
    /// Reads and validates `root/{packages,stage0,bootstrap}/*/package.toml`.
    /// Reports every problem of the tree.
    /// Paths in messages are `root` joined with the file's relative path
    /// (just the relative path when `root` is `.`).
    pub fn load(root: &Path) -> Result<RecipeSet, RecipeError> {
        let mut diags = Vec::new();
        let files = discover(root, &mut diags);
        let parsed: Vec<(PathBuf, String, Parsed)> = files
            .into_iter()
            .filter_map(|(path, dir_name)| match fs::read_to_string(&path) {
                Ok(text) => {
                    let p = parse::parse(&path, &text);
                    Some((path, dir_name, p))
                }
                Err(err) => {
                    diags.push(file_error(&path, format!("cannot read: {err}")));
                    None
                }
            })
            .collect();
        if diags.is_empty() && parsed.is_empty() && !TREES.iter().any(|t| root.join(t).is_dir()) {
            diags.push(file_error(
                root,
                "no recipe tree here: none of packages/, stage0/ and bootstrap/ exists".into(),
            ));
        }
        let set = check_tree(root, parsed, &mut diags);
        if diags.is_empty() {
            Ok(set)
        } else {
            Err(RecipeError::new(diags))
        }
    }

    /// The directory the tree was loaded from.
    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn get(&self, name: &str) -> Option<&Recipe> {
        self.recipes.get(name)
    }

    /// All recipes, in name order.
    pub fn iter(&self) -> impl Iterator<Item = &Recipe> {
        self.recipes.values()
    }

    pub fn len(&self) -> usize {
        self.recipes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.recipes.is_empty()
    }

    /// A known name close to `name` (a likely typo), for "did you mean".
    pub fn suggest(&self, name: &str) -> Option<&str> {
        suggest(name, self.recipes.keys().map(String::as_str))
    }
}

/// `(path of package.toml, its directory's name)`, in path order.
fn discover(root: &Path, diags: &mut Vec<Diagnostic>) -> Vec<(PathBuf, String)> {
    let mut files = Vec::new();
    for tree in TREES {
        let dir = display_join(root, Path::new(tree));
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => continue,
            Err(err) => {
                diags.push(file_error(&dir, format!("cannot read directory: {err}")));
                continue;
            }
        };
        let mut names: Vec<(String, PathBuf)> = Vec::new();
        for entry in entries {
            match entry {
                Ok(e) => {
                    let name = e.file_name().to_string_lossy().into_owned();
                    if !name.starts_with('.') && e.path().is_dir() {
                        names.push((name, dir.join(e.file_name())));
                    }
                }
                Err(err) => diags.push(file_error(&dir, format!("cannot read directory: {err}"))),
            }
        }
        names.sort();
        for (name, pkg_dir) in names {
            let file = pkg_dir.join("package.toml");
            if file.is_file() {
                files.push((file, name));
            } else {
                diags.push(file_error(
                    &pkg_dir,
                    "package directory without a package.toml".into(),
                ));
            }
        }
    }
    files
}

fn check_tree(
    root: &Path,
    parsed: Vec<(PathBuf, String, Parsed)>,
    diags: &mut Vec<Diagnostic>,
) -> RecipeSet {
    let at = |path: &Path, pos: Position, message: String| Diagnostic {
        path: path.to_path_buf(),
        position: Some(pos),
        message,
    };

    // Every readable name, so a broken recipe does not also make its
    // dependants report an unknown dependency.
    let mut defined: BTreeMap<String, Vec<(PathBuf, Position)>> = BTreeMap::new();
    for (path, dir_name, p) in &parsed {
        if let Some((name, pos)) = &p.name {
            if name != dir_name {
                diags.push(at(
                    path,
                    *pos,
                    format!("package name `{name}` does not match its directory `{dir_name}`"),
                ));
            }
            defined
                .entry(name.clone())
                .or_default()
                .push((path.clone(), *pos));
        }
    }
    for (name, places) in &defined {
        for (i, (path, pos)) in places.iter().enumerate() {
            for (j, (other, opos)) in places.iter().enumerate() {
                if i != j {
                    diags.push(at(
                        path,
                        *pos,
                        format!(
                            "duplicate package `{name}`: also defined at {}:{}:{}",
                            other.display(),
                            opos.0,
                            opos.1
                        ),
                    ));
                }
            }
        }
    }

    for (path, _, p) in &parsed {
        for r in &p.refs {
            if !defined.contains_key(&r.name) {
                let hint = suggest(&r.name, defined.keys().map(String::as_str))
                    .map(|s| format!(" (did you mean `{s}`?)"))
                    .unwrap_or_default();
                diags.push(at(
                    path,
                    r.position,
                    format!("{}: unknown package `{}`{hint}", r.what, r.name),
                ));
            }
        }
    }

    // Cycles over every readable recipe, the first definition of a name
    // winning (a duplicate is reported above).
    let mut nodes: BTreeMap<&str, (&Path, &Parsed)> = BTreeMap::new();
    for (path, _, p) in &parsed {
        if let Some((name, _)) = &p.name {
            nodes.entry(name.as_str()).or_insert((path, p));
        }
    }
    let edges: BTreeMap<&str, Vec<&str>> = nodes
        .iter()
        .map(|(name, (_, p))| (*name, p.refs.iter().map(|r| r.name.as_str()).collect()))
        .collect();
    for cycle in super::cycles::find_cycles(&edges) {
        let (path, p) = nodes[cycle[0]];
        let pos = p
            .refs
            .iter()
            .find(|r| r.name == cycle[1])
            .map(|r| r.position)
            .or(p.name.as_ref().map(|n| n.1));
        diags.push(Diagnostic {
            path: path.to_path_buf(),
            position: pos,
            message: format!("cyclic dependency: {}", cycle.join(" -> ")),
        });
    }

    let mut recipes = BTreeMap::new();
    let mut outputs = BTreeMap::new();
    for (path, _, p) in parsed {
        if let (Some((name, _)), Some(pos)) = (&p.name, p.output) {
            outputs.entry(name.clone()).or_insert((path.clone(), pos));
        }
        diags.extend(p.diagnostics);
        if let Some(r) = p.recipe {
            recipes.entry(r.name.clone()).or_insert(r);
        }
    }

    super::output::check_providers(&recipes, &outputs, diags);

    RecipeSet {
        root: root.to_path_buf(),
        recipes,
    }
}

fn file_error(path: &Path, message: String) -> Diagnostic {
    Diagnostic {
        path: path.to_path_buf(),
        position: None,
        message,
    }
}

/// `root/rel`, or `rel` alone when root is `.` (so messages stay short).
fn display_join(root: &Path, rel: &Path) -> PathBuf {
    if root == Path::new(".") || root.as_os_str().is_empty() {
        rel.to_path_buf()
    } else {
        root.join(rel)
    }
}
