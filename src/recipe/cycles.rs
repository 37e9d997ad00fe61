//! Dependency cycles of a recipe tree: one per strongly connected
//! component (Tarjan), printed `a -> b -> a` at the recipe that closes it.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

/// One cycle per strongly connected component that has one (Tarjan), each
/// starting and ending at the component's smallest name and following the
/// shortest way round, components in order of that name. Names absent from
/// `edges` are ignored.
pub(super) fn find_cycles<'a>(edges: &BTreeMap<&'a str, Vec<&'a str>>) -> Vec<Vec<&'a str>> {
    let mut t = Tarjan {
        edges,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        next: 0,
        components: Vec::new(),
    };
    for n in edges.keys() {
        if !t.index.contains_key(n) {
            t.visit(n);
        }
    }
    let mut cycles: Vec<Vec<&str>> = t
        .components
        .iter()
        .filter_map(|comp| shortest_cycle(edges, comp))
        .collect();
    cycles.sort();
    cycles
}

struct Tarjan<'e, 'a> {
    edges: &'e BTreeMap<&'a str, Vec<&'a str>>,
    index: BTreeMap<&'a str, usize>,
    low: BTreeMap<&'a str, usize>,
    stack: Vec<&'a str>,
    on_stack: BTreeSet<&'a str>,
    next: usize,
    components: Vec<BTreeSet<&'a str>>,
}

impl<'a> Tarjan<'_, 'a> {
    fn visit(&mut self, n: &'a str) {
        self.index.insert(n, self.next);
        self.low.insert(n, self.next);
        self.next += 1;
        self.stack.push(n);
        self.on_stack.insert(n);
        for &m in &self.edges[n] {
            if !self.edges.contains_key(m) {
                continue;
            }
            if !self.index.contains_key(m) {
                self.visit(m);
                let low = self.low[n].min(self.low[m]);
                self.low.insert(n, low);
            } else if self.on_stack.contains(m) {
                let low = self.low[n].min(self.index[m]);
                self.low.insert(n, low);
            }
        }
        if self.low[n] == self.index[n] {
            let mut comp = BTreeSet::new();
            while let Some(m) = self.stack.pop() {
                self.on_stack.remove(m);
                comp.insert(m);
                if m == n {
                    break;
                }
            }
            self.components.push(comp);
        }
    }
}

/// Breadth first from the component's smallest member back to itself.
fn shortest_cycle<'a>(
    edges: &BTreeMap<&'a str, Vec<&'a str>>,
    comp: &BTreeSet<&'a str>,
) -> Option<Vec<&'a str>> {
    let start = *comp.first()?;
    let mut parent: BTreeMap<&str, &str> = BTreeMap::new();
    let mut queue = VecDeque::from([start]);
    while let Some(n) = queue.pop_front() {
        for &m in &edges[n] {
            if m == start {
                let mut path = vec![n];
                while let Some(&p) = path.last().and_then(|l| parent.get(l)) {
                    path.push(p);
                }
                path.reverse();
                path.push(start);
                return Some(path);
            }
            if comp.contains(m) && !parent.contains_key(m) {
                parent.insert(m, n);
                queue.push_back(m);
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn graph(
        spec: &[(&'static str, &[&'static str])],
    ) -> BTreeMap<&'static str, Vec<&'static str>> {
        spec.iter().map(|(n, e)| (*n, e.to_vec())).collect()
    }

    #[test]
    fn cycles_start_at_smallest_name() {
        let g = graph(&[
            ("c", &["a"]),
            ("a", &["b"]),
            ("b", &["c"]),
            ("d", &["d"]),
            ("e", &[]),
        ]);
        assert_eq!(
            find_cycles(&g),
            vec![vec!["a", "b", "c", "a"], vec!["d", "d"]]
        );
    }

    #[test]
    fn shortest_way_round() {
        let g = graph(&[
            ("a", &["x", "b"]),
            ("x", &["y"]),
            ("y", &["a"]),
            ("b", &["a"]),
        ]);
        assert_eq!(find_cycles(&g), vec![vec!["a", "b", "a"]]);
        assert!(find_cycles(&graph(&[("a", &["b"]), ("b", &[])])).is_empty());
    }
}
