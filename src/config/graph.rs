//! The dependency graph behind the cycle check of `validate`, in time linear
//! in services + edges + stages (plus one sort by name).
//!
//! A service `x` depends on every target of its `after`/`requires` entries
//! and on every service of an earlier stage. Written out, the stage part is
//! one edge per pair of services in different stages (1000 services in 20
//! stages: ~475 000 edges); here it is one node per stage instead,
//! "stage k or earlier", which `x` of stage k+1 points to and which points
//! to the members of stage k and to "stage k-1 or earlier". Reachability
//! between services, and so their strongly connected components, is the
//! same as in the written-out graph.
//!
//! The cycle reported is the one the check always reported (error messages
//! are part of the interface, `tests/bad-configs/`): the first explicit edge
//! in file order that lies on a cycle, closed by the shortest path back,
//! found by a breadth-first search that visits successors in a fixed order
//! (explicit targets in file order, then earlier-stage services by name).
//! [`first_cycle`] finds that edge with one component pass and runs that
//! search once, expanding the stage edges of a breadth-first level at most
//! once per stage.

use std::collections::VecDeque;

/// A dependency graph over services `0..names.len()`.
pub(crate) struct Graph<'a> {
    /// Service names (distinct).
    pub(crate) names: Vec<&'a str>,
    /// Each service's stage index; `None` for services in no stage.
    pub(crate) stage: Vec<Option<usize>>,
    /// Explicit edges `(from, to, key)` in file order (`key` is `after` or
    /// `requires`): `from` starts after `to`.
    pub(crate) edges: Vec<(usize, usize, &'static str)>,
}

/// One step of a cycle: a service and how it depends on the next one
/// (`Some(key)` for an explicit entry, `None` for stage order).
pub(crate) type Step = (usize, Option<&'static str>);

/// A dependency cycle through an explicit edge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Cycle {
    /// Index into [`Graph::edges`] of the edge `from -> to` that closes it.
    pub(crate) edge: usize,
    /// The shortest path back, `to` first and `from` last (whose step is
    /// `None`): each step names how its service depends on the next one.
    pub(crate) path: Vec<Step>,
}

/// The first explicit edge (in [`Graph::edges`] order) that lies on a cycle,
/// with the shortest path that closes it; `None` when there is no cycle
/// through an explicit edge (stage order alone cannot make one).
pub(crate) fn first_cycle(g: &Graph<'_>) -> Option<Cycle> {
    let n = g.names.len();
    let stages = g.stage.iter().flatten().map(|&s| s + 1).max().unwrap_or(0);
    // Nodes 0..n: services; n + k: "stage k or earlier".
    let mut adj: Vec<Vec<usize>> = vec![Vec::new(); n + stages];
    for &(from, to, _) in &g.edges {
        adj[from].push(to);
    }
    for (i, st) in g.stage.iter().enumerate() {
        if let Some(k) = *st {
            adj[n + k].push(i);
            if let Some(before) = k.checked_sub(1) {
                adj[i].push(n + before);
            }
        }
    }
    for k in 1..stages {
        adj[n + k].push(n + k - 1);
    }
    let comp = components(&adj);
    let mut out: Option<Vec<Vec<(usize, &'static str)>>> = None;
    for (index, &(from, to, _)) in g.edges.iter().enumerate() {
        if from != to && comp[from] != comp[to] {
            continue;
        }
        let out = out.get_or_insert_with(|| {
            let mut out = vec![Vec::new(); n];
            for &(from, to, key) in &g.edges {
                out[from].push((to, key));
            }
            out
        });
        if let Some(path) = shortest_path(g, out, to, from) {
            return Some(Cycle { edge: index, path });
        }
    }
    None
}

/// Breadth-first search from `start` to `goal` (never through `start`
/// again), successors in the order described in the module documentation;
/// the path as in [`Cycle::path`].
fn shortest_path(
    g: &Graph<'_>,
    out: &[Vec<(usize, &'static str)>],
    start: usize,
    goal: usize,
) -> Option<Vec<Step>> {
    let n = g.names.len();
    // Members of each stage, by name.
    let mut members: Vec<Vec<usize>> = Vec::new();
    for (i, st) in g.stage.iter().enumerate() {
        if let Some(k) = *st {
            if members.len() <= k {
                members.resize_with(k + 1, Vec::new);
            }
            members[k].push(i);
        }
    }
    let mut visited = vec![false; n];
    let mut prev: Vec<Option<Step>> = vec![None; n];
    visited[start] = true;
    // Every service of a stage below this one has been visited: once a
    // service of stage k is expanded, all of stages 0..k are.
    let mut expanded_below = 0;
    let mut queue = VecDeque::from([start]);
    let mut found = start == goal;
    while let Some(x) = queue.pop_front() {
        if x == goal {
            found = true;
            break;
        }
        for &(y, key) in &out[x] {
            if !visited[y] {
                visited[y] = true;
                prev[y] = Some((x, Some(key)));
                queue.push_back(y);
            }
        }
        if let Some(k) = g.stage[x].filter(|&k| k > expanded_below) {
            let mut fresh: Vec<usize> = members[expanded_below..k]
                .iter()
                .flatten()
                .copied()
                .filter(|&y| !visited[y])
                .collect();
            fresh.sort_unstable_by_key(|&y| g.names[y]);
            for y in fresh {
                visited[y] = true;
                prev[y] = Some((x, None));
                queue.push_back(y);
            }
            expanded_below = k;
        }
    }
    if !found {
        return None;
    }
    let mut path = vec![(goal, None)];
    let mut cur = goal;
    while cur != start {
        let (p, how) = prev[cur]?;
        path.push((p, how));
        cur = p;
    }
    path.reverse();
    Some(path)
}

/// Strongly connected component of each node (Tarjan's algorithm, with an
/// explicit stack instead of recursion).
fn components(adj: &[Vec<usize>]) -> Vec<usize> {
    const UNSEEN: usize = usize::MAX;
    let n = adj.len();
    let mut index = vec![UNSEEN; n];
    let mut low = vec![0; n];
    let mut on_stack = vec![false; n];
    let mut comp = vec![UNSEEN; n];
    let mut stack: Vec<usize> = Vec::new();
    // (node, position of its next successor)
    let mut calls: Vec<(usize, usize)> = Vec::new();
    let mut next_index = 0;
    let mut next_comp = 0;
    for root in 0..n {
        if index[root] != UNSEEN {
            continue;
        }
        index[root] = next_index;
        low[root] = next_index;
        next_index += 1;
        stack.push(root);
        on_stack[root] = true;
        calls.push((root, 0));
        while let Some((v, pos)) = calls.last_mut() {
            let v = *v;
            if let Some(&w) = adj[v].get(*pos) {
                *pos += 1;
                if index[w] == UNSEEN {
                    index[w] = next_index;
                    low[w] = next_index;
                    next_index += 1;
                    stack.push(w);
                    on_stack[w] = true;
                    calls.push((w, 0));
                } else if on_stack[w] {
                    low[v] = low[v].min(index[w]);
                }
                continue;
            }
            calls.pop();
            if let Some(&(parent, _)) = calls.last() {
                low[parent] = low[parent].min(low[v]);
            }
            if low[v] == index[v] {
                while let Some(w) = stack.pop() {
                    on_stack[w] = false;
                    comp[w] = next_comp;
                    if w == v {
                        break;
                    }
                }
                next_comp += 1;
            }
        }
    }
    comp
}

#[cfg(test)]
// A failed unwrap is the test failure (as in the other test modules).
#[allow(clippy::unwrap_used)]
mod tests {
    use std::collections::{BTreeMap, VecDeque};

    use proptest::prelude::*;

    use super::*;

    /// A cycle's path by name.
    type NamedPath = Vec<(String, Option<&'static str>)>;

    /// Services, stages, explicit edges `(from, to, requires?)`.
    type Shape = (usize, Vec<Option<usize>>, Vec<(usize, usize, bool)>);

    /// The cycle search as `validate` did it before this module: for each
    /// explicit edge in order, a breadth-first search by name from its
    /// target back to its source, successors computed by scanning every edge
    /// and every staged service (quadratic and worse; the reference).
    fn reference(g: &Graph<'_>) -> Option<(usize, NamedPath)> {
        let stage_of: BTreeMap<String, usize> = g
            .names
            .iter()
            .zip(&g.stage)
            .filter_map(|(n, s)| s.map(|s| (n.to_string(), s)))
            .collect();
        let edges: Vec<(&str, &str, &'static str)> = g
            .edges
            .iter()
            .map(|&(f, t, k)| (g.names[f], g.names[t], k))
            .collect();
        let successors = |x: &str| -> Vec<(String, Option<&'static str>)> {
            let mut out: Vec<(String, Option<&'static str>)> = edges
                .iter()
                .filter(|e| e.0 == x)
                .map(|e| (e.1.to_string(), Some(e.2)))
                .collect();
            if let Some(&sx) = stage_of.get(x) {
                for (name, &sy) in &stage_of {
                    if sy < sx && !out.iter().any(|(n, _)| n == name) {
                        out.push((name.clone(), None));
                    }
                }
            }
            out
        };
        for (index, &(from, to, _)) in edges.iter().enumerate() {
            let mut prev: BTreeMap<String, (String, Option<&'static str>)> = BTreeMap::new();
            let mut queue = VecDeque::from([to.to_string()]);
            let mut found = to == from;
            while let Some(x) = queue.pop_front() {
                if x == from {
                    found = true;
                    break;
                }
                for (y, how) in successors(&x) {
                    if y != to && !prev.contains_key(&y) {
                        prev.insert(y.clone(), (x.clone(), how));
                        queue.push_back(y);
                    }
                }
            }
            if !found {
                continue;
            }
            let mut path = vec![(from.to_string(), None)];
            let mut cur = from.to_string();
            while cur != to {
                let (p, how) = prev.get(&cur).cloned().unwrap();
                path.push((p.clone(), how));
                cur = p;
            }
            path.reverse();
            return Some((index, path));
        }
        None
    }

    /// Whether the written-out graph (explicit edges plus one edge per pair
    /// of services in different stages) has a cycle through an explicit
    /// edge: transitive closure by repeated relaxation.
    fn has_cycle(g: &Graph<'_>) -> bool {
        let n = g.names.len();
        let mut reach = vec![vec![false; n]; n];
        for &(f, t, _) in &g.edges {
            reach[f][t] = true;
        }
        for (row, sx) in reach.iter_mut().zip(&g.stage) {
            for (cell, sy) in row.iter_mut().zip(&g.stage) {
                if let (Some(sx), Some(sy)) = (sx, sy) {
                    *cell |= sy < sx;
                }
            }
        }
        for k in 0..n {
            for i in 0..n {
                for j in 0..n {
                    if reach[i][k] && reach[k][j] {
                        reach[i][j] = true;
                    }
                }
            }
        }
        g.edges.iter().any(|&(f, t, _)| f == t || reach[t][f])
    }

    const NAMES: [&str; 10] = [
        "mcr", "api", "zeta", "b", "dns", "a", "ca", "web", "b-2", "db",
    ];

    fn graph() -> impl Strategy<Value = Shape> {
        (1usize..=NAMES.len()).prop_flat_map(|n| {
            (
                Just(n),
                proptest::collection::vec(proptest::option::weighted(0.9, 0usize..4), n),
                proptest::collection::vec((0..n, 0..n, any::<bool>()), 0..=2 * n),
            )
        })
    }

    fn build(
        n: usize,
        stage: Vec<Option<usize>>,
        edges: &[(usize, usize, bool)],
    ) -> Graph<'static> {
        Graph {
            names: NAMES[..n].to_vec(),
            stage,
            edges: edges
                .iter()
                .map(|&(f, t, r)| (f, t, if r { "requires" } else { "after" }))
                .collect(),
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// Same edge, same path as the reference on random small graphs
        /// (self-loops, duplicates, empty and unstaged services included).
        #[test]
        fn agrees_with_reference((n, stage, edges) in graph()) {
            let g = build(n, stage, &edges);
            let got = first_cycle(&g).map(|c| {
                (c.edge, c.path.iter().map(|&(i, how)| (g.names[i].to_string(), how)).collect::<Vec<_>>())
            });
            prop_assert_eq!(got, reference(&g));
        }

        /// A cycle is reported exactly when the written-out graph has one,
        /// and the reported one is a cycle of it.
        #[test]
        fn reports_exactly_the_cycles((n, stage, edges) in graph()) {
            let g = build(n, stage, &edges);
            let got = first_cycle(&g);
            prop_assert_eq!(got.is_some(), has_cycle(&g));
            if let Some(c) = got {
                let (from, to, key) = g.edges[c.edge];
                prop_assert_eq!(c.path.first().map(|s| s.0), Some(to));
                prop_assert_eq!(c.path.last(), Some(&(from, None)));
                // from -> to is the edge itself; each step follows an edge.
                prop_assert!(g.edges.contains(&(from, to, key)));
                for w in c.path.windows(2) {
                    let ((x, how), (y, _)) = (w[0], w[1]);
                    match how {
                        Some(k) => prop_assert!(g.edges.contains(&(x, y, k))),
                        None => prop_assert!(matches!((g.stage[x], g.stage[y]), (Some(sx), Some(sy)) if sy < sx)),
                    }
                }
            }
        }
    }

    #[test]
    fn a_long_chain_through_stages() {
        // 5000 services, each after the one before, 50 stages; the last
        // edge closes the chain into one cycle.
        let names: Vec<String> = (0..5000).map(|i| format!("s{i:05}")).collect();
        let mut g = Graph {
            names: names.iter().map(String::as_str).collect(),
            stage: (0..5000).map(|i| Some(i / 100)).collect(),
            edges: (1..5000).map(|i| (i, i - 1, "after")).collect(),
        };
        assert_eq!(first_cycle(&g), None);
        g.edges.push((0, 4999, "after"));
        let c = first_cycle(&g).unwrap();
        // The first edge on the cycle: 1 -> 0; back from 0 to 1 through the
        // new edge 0 -> 4999, then stage order straight to stage 0's `s00001`.
        assert_eq!(c.edge, 0);
        assert_eq!(c.path, vec![(0, Some("after")), (4999, None), (1, None)]);
    }
}
