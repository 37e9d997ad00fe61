//! The package graph of a recipe tree: dependency closures in a deterministic
//! topological order, levels and a ready-set scheduler for `-j N`, and the
//! layer orders of build roots and bundle images.
//!
//! An edge runs from a package to each of its `build.deps` and `runtime`
//! packages: both must exist before the package is built and bundled.
//! Ties are broken by name, so every order here is a function of the tree.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet};

use crate::recipe::{Recipe, RecipeSet};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GraphError {
    #[error("unknown package `{name}`{}", did_you_mean(.suggestion))]
    UnknownPackage {
        name: String,
        suggestion: Option<String>,
    },
}

fn did_you_mean(suggestion: &Option<String>) -> String {
    suggestion
        .as_ref()
        .map(|s| format!(" (did you mean `{s}`?)"))
        .unwrap_or_default()
}

/// A view of a valid [`RecipeSet`] (no unknown names, no cycles).
pub struct Graph<'a> {
    set: &'a RecipeSet,
    dependants: BTreeMap<&'a str, Vec<&'a str>>,
}

impl<'a> Graph<'a> {
    pub fn new(set: &'a RecipeSet) -> Self {
        let mut dependants: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for r in set.iter() {
            for dep in edges_of(r) {
                dependants.entry(dep).or_default().push(&r.name);
            }
        }
        Graph { set, dependants }
    }

    pub fn set(&self) -> &'a RecipeSet {
        self.set
    }

    /// The recipe of `name`, or an error naming it (with a suggestion).
    pub fn recipe(&self, name: &str) -> Result<&'a Recipe, GraphError> {
        self.set
            .get(name)
            .ok_or_else(|| GraphError::UnknownPackage {
                name: name.to_owned(),
                suggestion: self.set.suggest(name).map(str::to_owned),
            })
    }

    /// Direct edges of `name`: its build deps, then its runtime packages.
    pub fn edges(&self, name: &str) -> Vec<&'a str> {
        self.set.get(name).map(edges_of).unwrap_or_default()
    }

    /// Packages with an edge to `name`, in name order.
    pub fn dependants(&self, name: &str) -> &[&'a str] {
        self.dependants.get(name).map_or(&[], Vec::as_slice)
    }

    /// Packages nothing depends on, in name order.
    pub fn roots(&self) -> Vec<&'a str> {
        self.set
            .iter()
            .map(|r| r.name.as_str())
            .filter(|n| self.dependants(n).is_empty())
            .collect()
    }

    /// `roots` and everything they reach, dependencies before dependants;
    /// among packages whose dependencies are all placed, the smallest name
    /// comes first. All packages when `roots` is empty.
    pub fn closure(&self, roots: &[&str]) -> Result<Vec<&'a Recipe>, GraphError> {
        let members = self.members(roots)?;
        let mut waiting: BTreeMap<&str, usize> =
            members.iter().map(|n| (*n, self.edges(n).len())).collect();
        let mut ready: BTreeSet<&str> = waiting
            .iter()
            .filter(|(_, c)| **c == 0)
            .map(|(n, _)| *n)
            .collect();
        let mut order = Vec::with_capacity(members.len());
        while let Some(n) = ready.pop_first() {
            order.push(&self.set.get(n).expect("member of the set").name);
            for d in self.dependants(n) {
                if let Some(c) = waiting.get_mut(d) {
                    *c -= 1;
                    if *c == 0 {
                        ready.insert(d);
                    }
                }
            }
        }
        debug_assert_eq!(order.len(), members.len(), "a valid set has no cycle");
        Ok(order
            .into_iter()
            .map(|n| self.set.get(n).expect("member of the set"))
            .collect())
    }

    /// The closure of `roots` in levels: level 0 depends on nothing, level
    /// k+1 only on levels up to k. Each level in name order.
    pub fn levels(&self, roots: &[&str]) -> Result<Vec<Vec<&'a str>>, GraphError> {
        let mut level: BTreeMap<&str, usize> = BTreeMap::new();
        let mut out: Vec<Vec<&str>> = Vec::new();
        for r in self.closure(roots)? {
            let l = self
                .edges(&r.name)
                .iter()
                .map(|d| level[d] + 1)
                .max()
                .unwrap_or(0);
            level.insert(&r.name, l);
            if out.len() <= l {
                out.resize_with(l + 1, Vec::new);
            }
            out[l].push(&r.name);
        }
        for l in &mut out {
            l.sort_unstable();
        }
        Ok(out)
    }

    /// A scheduler over the closure of `roots` for running up to N builds
    /// at once.
    pub fn schedule(&self, roots: &[&str]) -> Result<Schedule, GraphError> {
        let order = self.closure(roots)?;
        // Longest chain of dependants above each package: starting the
        // packages with the longest chains first shortens the whole build.
        let mut height: BTreeMap<&str, usize> = BTreeMap::new();
        for r in order.iter().rev() {
            let h = self
                .dependants(&r.name)
                .iter()
                .filter_map(|d| height.get(d))
                .map(|h| h + 1)
                .max()
                .unwrap_or(0);
            height.insert(&r.name, h);
        }
        let mut s = Schedule::default();
        for r in &order {
            let n = r.name.clone();
            let deps = self.edges(&r.name);
            for d in &deps {
                s.dependants
                    .entry(d.to_string())
                    .or_default()
                    .push(n.clone());
            }
            s.priority.insert(n.clone(), height[r.name.as_str()]);
            if deps.is_empty() {
                s.ready.insert((Reverse(height[r.name.as_str()]), n));
            } else {
                s.waiting.insert(n, deps.len());
            }
        }
        Ok(s)
    }

    /// The bundle image of `name`: its runtime closure, one layer per
    /// package, bottom first and `name` last. Depth first through `runtime`
    /// in declared order, each package once, after all it needs.
    pub fn runtime_closure(&self, name: &str) -> Vec<&'a str> {
        let mut out = Vec::new();
        self.push_runtime(name, &mut out);
        out
    }

    /// The layers of `name`'s build root, bottom first: the runtime closure
    /// of each of its deps in declared order, each package once (at its
    /// first, lowest place). Empty for `kind = "debs"`.
    pub fn build_root(&self, name: &str) -> Vec<&'a str> {
        let mut out = Vec::new();
        if let Some(r) = self.set.get(name) {
            for dep in r.deps() {
                self.push_runtime(dep, &mut out);
            }
        }
        out
    }

    fn push_runtime(&self, name: &str, out: &mut Vec<&'a str>) {
        let Some(r) = self.set.get(name) else { return };
        if out.contains(&r.name.as_str()) {
            return;
        }
        for dep in &r.runtime {
            self.push_runtime(dep, out);
        }
        if !out.contains(&r.name.as_str()) {
            out.push(&r.name);
        }
    }

    /// Names of the closure of `roots` (all packages when empty).
    fn members(&self, roots: &[&str]) -> Result<BTreeSet<&'a str>, GraphError> {
        if roots.is_empty() {
            return Ok(self.set.iter().map(|r| r.name.as_str()).collect());
        }
        let mut seen = BTreeSet::new();
        let mut todo: Vec<&'a str> = roots
            .iter()
            .map(|n| self.recipe(n).map(|r| r.name.as_str()))
            .collect::<Result<_, _>>()?;
        while let Some(n) = todo.pop() {
            if seen.insert(n) {
                todo.extend(self.edges(n));
            }
        }
        Ok(seen)
    }
}

/// Hands out packages whose dependencies are built: the one with the longest
/// chain of dependants first, then by name.
#[derive(Debug, Default)]
pub struct Schedule {
    waiting: BTreeMap<String, usize>,
    ready: BTreeSet<(Reverse<usize>, String)>,
    running: BTreeSet<String>,
    dependants: BTreeMap<String, Vec<String>>,
    priority: BTreeMap<String, usize>,
}

impl Schedule {
    /// The next package to start, now marked running; `None` when nothing is
    /// ready (everything left waits on running packages, or all is done).
    pub fn next_ready(&mut self) -> Option<String> {
        let (_, name) = self.ready.pop_first()?;
        self.running.insert(name.clone());
        Some(name)
    }

    /// `name` finished successfully: its dependants may become ready.
    pub fn complete(&mut self, name: &str) {
        self.running.remove(name);
        for d in self.dependants.get(name).into_iter().flatten() {
            if let Some(c) = self.waiting.get_mut(d) {
                *c -= 1;
                if *c == 0 {
                    self.waiting.remove(d);
                    self.ready.insert((Reverse(self.priority[d]), d.clone()));
                }
            }
        }
    }

    /// `name` failed: everything that depends on it, directly or not, will
    /// never be ready. Returns those packages in name order.
    pub fn fail(&mut self, name: &str) -> Vec<String> {
        self.running.remove(name);
        let mut cancelled = BTreeSet::new();
        let mut todo = vec![name.to_owned()];
        while let Some(n) = todo.pop() {
            for d in self.dependants.get(&n).into_iter().flatten() {
                if self.waiting.remove(d).is_some() {
                    cancelled.insert(d.clone());
                    todo.push(d.clone());
                }
            }
        }
        cancelled.into_iter().collect()
    }

    /// Packages started and not yet completed or failed.
    pub fn running(&self) -> usize {
        self.running.len()
    }

    /// Nothing ready, running or waiting.
    pub fn is_finished(&self) -> bool {
        self.ready.is_empty() && self.running.is_empty() && self.waiting.is_empty()
    }
}

/// A recipe's edges: build deps then runtime packages, each once.
pub(crate) fn edges_of(r: &Recipe) -> Vec<&str> {
    let mut out: Vec<&str> = Vec::new();
    for d in r.deps().iter().chain(&r.runtime) {
        if !out.contains(&d.as_str()) {
            out.push(d);
        }
    }
    out
}
