//! Diverse double compilation (Wheeler; docs/ddc.md): a compiler's source
//! compiled by each of several unrelated roots (stage 1), each result
//! compiling the same source again in the same environment (stage 2); the
//! stage-2 layers must be bit-identical.
//!
//! A comparison is declared in `ddc/NAME.toml` of the recipe tree, naming
//! for each root an ordinary stage-1 and stage-2 recipe. Before anything is
//! built the declaration is checked for soundness: every stage-1 recipe has
//! the same sources (the same program, whoever compiles it), and every
//! stage-2 recipe is the same recipe but for the stage-1 image in its build
//! root (the same environment, the compiler under test the only variable).
//! Then the builder builds them all (cached as any build) and the stage-2
//! layers are compared; where one differs, `imgrep reproduce`'s file-level
//! diff (src/reproduce/layerdiff.rs) says where.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::builder::{BuildError, Builder, Built};
use crate::digest::Digest;
use crate::recipe::{Recipe, RecipeSet};
use crate::reproduce::{diff_layers, Change};

/// Where declarations live in a recipe tree.
pub const DIR: &str = "ddc";

#[derive(Debug, thiserror::Error)]
pub enum DdcError {
    #[error("{path}: {message}")]
    Declaration { path: PathBuf, message: String },
    #[error("{path}: reading the declaration")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Build(Box<BuildError>),
    #[error("comparing the stage-2 layers of {root}")]
    Diff {
        root: String,
        source: crate::reproduce::layerdiff::LayerDiffError,
    },
}

/// `ddc/NAME.toml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    ddc: Header,
    root: Vec<Root>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct Header {
    description: String,
}

/// One root of a comparison: the recipes of its two stages.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Root {
    /// What the root is, e.g. `debian` (the report's row name).
    pub name: String,
    /// The recipe in which the root's compiler builds the source.
    pub stage1: String,
    /// The recipe in which stage 1's result builds the same source.
    pub stage2: String,
}

/// A checked declaration.
#[derive(Debug, Clone)]
pub struct Declaration {
    pub name: String,
    pub path: PathBuf,
    pub description: String,
    pub roots: Vec<Root>,
}

/// The names of the declarations under `ddc/` of `tree`, sorted.
pub fn list(tree: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(tree.join(DIR))
        .into_iter()
        .flatten()
        .filter_map(|e| {
            let name = e.ok()?.file_name().into_string().ok()?;
            Some(name.strip_suffix(".toml")?.to_owned())
        })
        .collect();
    names.sort();
    names
}

impl Declaration {
    /// Reads `ddc/NAME.toml` of the tree and checks it against `set`.
    pub fn load(set: &RecipeSet, name: &str) -> Result<Declaration, DdcError> {
        let path = set.root().join(DIR).join(format!("{name}.toml"));
        let text = std::fs::read_to_string(&path).map_err(|source| DdcError::Read {
            path: path.clone(),
            source,
        })?;
        let file: File = toml::from_str(&text).map_err(|e| DdcError::Declaration {
            path: path.clone(),
            message: e.to_string().trim_end().to_owned(),
        })?;
        let decl = Declaration {
            name: name.to_owned(),
            path,
            description: file.ddc.description,
            roots: file.root,
        };
        decl.check(set)?;
        Ok(decl)
    }

    fn error(&self, message: String) -> DdcError {
        DdcError::Declaration {
            path: self.path.clone(),
            message,
        }
    }

    /// The declaration is sound: at least two roots; each stage a recipe of
    /// the tree; stage 1 in stage 2's build root; all stage-1 recipes with
    /// the same sources; all stage-2 recipes equal but for their stage 1.
    fn check(&self, set: &RecipeSet) -> Result<(), DdcError> {
        if self.roots.len() < 2 {
            return Err(self.error(format!(
                "{} [[root]]: a comparison needs at least two roots",
                self.roots.len()
            )));
        }
        let mut names = BTreeSet::new();
        let mut packages = BTreeSet::new();
        for r in &self.roots {
            if !names.insert(&r.name) {
                return Err(self.error(format!("root {:?} is declared twice", r.name)));
            }
            for p in [&r.stage1, &r.stage2] {
                if !packages.insert(p) {
                    return Err(self.error(format!(
                        "root {:?}: package {p} is used twice (each stage of each root has its own recipe)",
                        r.name
                    )));
                }
            }
        }
        let get = |root: &Root, p: &str| -> Result<&Recipe, DdcError> {
            set.get(p).ok_or_else(|| {
                self.error(format!(
                    "root {:?}: no package {p} in {}",
                    root.name,
                    set.root().display()
                ))
            })
        };
        let first = &self.roots[0];
        let (s1, s2) = (get(first, &first.stage1)?, get(first, &first.stage2)?);
        for r in &self.roots {
            let (r1, r2) = (get(r, &r.stage1)?, get(r, &r.stage2)?);
            if !r2.deps().contains(&r.stage1) {
                return Err(self.error(format!(
                    "root {:?}: {} does not build on {} (its [build] deps: {:?})",
                    r.name,
                    r.stage2,
                    r.stage1,
                    r2.deps()
                )));
            }
            if r1.sources != s1.sources {
                return Err(self.error(format!(
                    "root {:?}: {} has other sources than {}: every stage 1 must build the \
                     same program (same sources, same configuration)",
                    r.name, r.stage1, first.stage1
                )));
            }
            if normalised(r2, &r.stage1) != normalised(s2, &first.stage1) {
                return Err(self.error(format!(
                    "root {:?}: {} differs from {} in more than its stage 1: every stage 2 \
                     must be the same recipe (sources, script, environment) but for the \
                     stage-1 image it builds with",
                    r.name, r.stage2, first.stage2
                )));
            }
        }
        Ok(())
    }
}

/// A stage-2 recipe with what may differ between roots taken out: its
/// name, description and file, the stage-1 package among its deps, and what
/// shapes only its image, not the layer compared (the runtime packages a
/// bundle stacks under it, `[image]`): one root's stage 2 may be a package
/// shipped as a toolchain image (packages/gcc), the others build the layer
/// only.
fn normalised(recipe: &Recipe, stage1: &str) -> Recipe {
    let mut r = recipe.clone();
    r.name = String::new();
    r.description = None;
    r.path = PathBuf::new();
    r.runtime = Vec::new();
    r.image = Default::default();
    if let Some(b) = r.build.as_mut() {
        for d in &mut b.deps {
            if d == stage1 {
                *d = "(stage 1)".to_owned();
            }
        }
    }
    r
}

/// One stage of one root, as built.
#[derive(Debug, Clone, Serialize)]
pub struct Stage {
    pub package: String,
    /// The image (its config records the recipe's own input digest).
    pub manifest: Digest,
    /// The one layer: every file the stage produced.
    pub layer: Digest,
    pub cached: bool,
    /// Build time (0 when cached).
    pub seconds: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct RootReport {
    pub root: String,
    pub stage1: Stage,
    pub stage2: Stage,
    /// Stage 2's layer equals the first root's.
    pub agrees: bool,
}

/// Where a root's stage 2 differs from the first root's.
#[derive(Debug, Clone, Serialize)]
pub struct Difference {
    /// The root compared with the first one.
    pub root: String,
    #[serde(serialize_with = "changes_as_text")]
    pub changes: Vec<Change>,
}

fn changes_as_text<S: serde::Serializer>(c: &[Change], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(c.iter().map(ToString::to_string))
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub name: String,
    pub description: String,
    /// The first root's: what the others are compared with.
    pub reference: String,
    pub roots: Vec<RootReport>,
    /// Every stage-2 layer is identical.
    pub verdict: bool,
    pub differences: Vec<Difference>,
    /// Wall time of the whole comparison, builds included.
    pub seconds: f64,
}

/// Builds both stages of every root (everything they need, cached as in
/// any build) and compares the stage-2 layers.
pub fn run(decl: &Declaration, builder: &Builder) -> Result<Report, DdcError> {
    let start = Instant::now();
    let wanted: Vec<&str> = decl.roots.iter().map(|r| r.stage2.as_str()).collect();
    let built = builder
        .build(&wanted)
        .map_err(|e| DdcError::Build(Box::new(e)))?;
    let find = |name: &str| -> &Built {
        built
            .iter()
            .find(|b| b.name == name)
            .expect("the build returns the whole closure")
    };
    let stage = |name: &str| {
        let b = find(name);
        Stage {
            package: name.to_owned(),
            manifest: b.manifest_digest(),
            layer: *b.diff_ids.last().expect("a package image has one layer"),
            cached: b.cached,
            seconds: if b.cached {
                0.0
            } else {
                b.duration.as_secs_f64()
            },
        }
    };
    let reference = stage(&decl.roots[0].stage2).layer;
    let mut roots = Vec::new();
    let mut differences = Vec::new();
    for r in &decl.roots {
        let s2 = stage(&r.stage2);
        let agrees = s2.layer == reference;
        if !agrees {
            let blob = |name: &str| -> Result<PathBuf, DdcError> {
                let blobs = builder
                    .image_blobs(find(name))
                    .map_err(|e| DdcError::Build(Box::new(e)))?;
                let layer = blobs.last().expect("manifest, config, layer");
                Ok(builder.store().blob_path(layer))
            };
            let changes = diff_layers(&blob(&decl.roots[0].stage2)?, &blob(&r.stage2)?).map_err(
                |source| DdcError::Diff {
                    root: r.name.clone(),
                    source,
                },
            )?;
            differences.push(Difference {
                root: r.name.clone(),
                changes,
            });
        }
        roots.push(RootReport {
            root: r.name.clone(),
            stage1: stage(&r.stage1),
            stage2: s2,
            agrees,
        });
    }
    Ok(Report {
        name: decl.name.clone(),
        description: decl.description.clone(),
        reference: decl.roots[0].name.clone(),
        verdict: differences.is_empty(),
        roots,
        differences,
        seconds: start.elapsed().as_secs_f64(),
    })
}

impl std::fmt::Display for Report {
    /// The table a person reads: per root, both stages' layers, the
    /// verdict, then the diff of each differing stage 2.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let short = crate::builder::short;
        writeln!(f, "ddc {}: {}", self.name, self.description)?;
        writeln!(
            f,
            "{:<10} {:<22} {:<20} {:>8}  {:<22} {:<20} {:>8}  verdict",
            "root", "stage 1", "layer", "time", "stage 2", "layer", "time"
        )?;
        let time = |s: &Stage| {
            if s.cached {
                "cached".to_owned()
            } else {
                format!("{:.1}s", s.seconds)
            }
        };
        for r in &self.roots {
            let verdict = if r.root == self.reference {
                "reference"
            } else if r.agrees {
                "identical"
            } else {
                "DIFFERS"
            };
            writeln!(
                f,
                "{:<10} {:<22} {:<20} {:>8}  {:<22} {:<20} {:>8}  {verdict}",
                r.root,
                r.stage1.package,
                short(&r.stage1.layer),
                time(&r.stage1),
                r.stage2.package,
                short(&r.stage2.layer),
                time(&r.stage2),
            )?;
        }
        for d in &self.differences {
            writeln!(
                f,
                "\nstage 2 of {} differs from {}'s ({} paths; `-` only in {}, `+` only in {}):",
                d.root,
                self.reference,
                d.changes.len(),
                self.reference,
                d.root
            )?;
            for c in &d.changes {
                writeln!(f, "  {c}")?;
            }
        }
        if self.verdict {
            writeln!(
                f,
                "\nverdict: stage 2 identical across {} roots ({} {}): {:.1}s",
                self.roots.len(),
                self.roots[0].stage2.package,
                self.roots[0].stage2.layer,
                self.seconds
            )
        } else {
            writeln!(
                f,
                "\nverdict: stage 2 DIFFERS: the roots do not compile {} alike ({:.1}s)",
                self.name, self.seconds
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recipe(name: &str, stage1: &str, extra: &str, script: &str) -> Recipe {
        let text = format!(
            "[package]\nname = \"{name}\"\nversion = \"1\"\n{extra}\n[build]\n\
             deps = [\"root\", \"{stage1}\"]\nscript = \"{script}\"\n"
        );
        Recipe::parse(Path::new("package.toml"), &text).unwrap()
    }

    #[test]
    fn stage_twos_may_differ_in_their_image_only() {
        let shipped = recipe(
            "cc",
            "cc-stage1-a",
            "description = \"the shipped one\"\nruntime = [\"libc\"]\n[image]\ncmd = [\"/usr/bin/cc\"]",
            "make install",
        );
        let other = recipe("cc-stage2-b", "cc-stage1-b", "", "make install");
        assert_eq!(
            normalised(&shipped, "cc-stage1-a"),
            normalised(&other, "cc-stage1-b")
        );
        let changed = recipe("cc-stage2-b", "cc-stage1-b", "", "make install CFLAGS=-O1");
        assert_ne!(
            normalised(&shipped, "cc-stage1-a"),
            normalised(&changed, "cc-stage1-b")
        );
    }
}
