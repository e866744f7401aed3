//! Synthetic topologies from short specs such as `grid:3x3` or `random:100`.
//!
//! | spec | nodes | links |
//! |------|-------|-------|
//! | `line:N` | `r1`..`rN` | N-1 |
//! | `ring:N` (N ≥ 3) | `r1`..`rN` | N |
//! | `star:N` | `hub` (fog) + `r1`..`rN` | N |
//! | `grid:RxC` | `r{row}-{col}`, 1-based | (R-1)·C + R·(C-1) |
//! | `torus:RxC` (R, C ≥ 3) | as grid | 2·R·C |
//! | `tree:FxD` | 1 + F + … + F^(D-1); root `r0`, children of X are X-1..X-F | nodes - 1 |
//! | `random:N[:ba:M]` | `r1`..`rN`, Barabási–Albert (M = 2 by default) | ≈ N·M |
//! | `random:N:waxman:ALPHA:BETA` | `r1`..`rN`, Waxman, made connected | varies |
//! | `sdwan:SITES:UNDERLAYS[:LANS]` | per underlay (`mpls`, `inet`, `lte`, `sat`) 3 provider routers `mpls1`..`mpls3`; per site an edge `eI` with LAN hosts `hI` (and `hIb` with 2 LANs); a `dc` | 3·U + S·(U + L) + U |
//!
//! `sdwan`: each underlay's provider routers form a triangle (their links are that underlay's),
//! site I's edge attaches to router `((I-1) mod 3) + 1` of every underlay, so every pair of
//! sites has one path per underlay, crossing at most one provider link; the `dc` router (where
//! the SD-WAN controller runs) attaches to router 1 of every underlay with unlabelled links.
//! SITES 2..=250, UNDERLAYS 1..=4, LANS 1..=2.
//!
//! Tree roles: root dc, first level fog, the rest edge; `star`'s hub is fog;
//! everything else is edge. If a tree's hierarchical names would exceed 12
//! characters, the whole tree is numbered breadth-first instead (`r0`..).
//! Output is deterministic for a given seed (only `random` uses it), and
//! every generated topology passes [`Topology::validate`]; the link pool is
//! widened beyond the default /16 when a topology needs more link subnets.

use crate::rng::SplitMix64;
use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use crate::topology::{Ipv4Net, Link, Node, Pools, Role, Topology};

/// Largest topology the spec parser accepts (nodes).
pub const MAX_NODES: usize = 10_000;
/// Largest Barabási–Albert `m` the spec parser accepts.
pub const MAX_BA_M: usize = 100;

/// A topology shape.
#[derive(Clone, Debug, PartialEq)]
pub enum Generator {
    /// A path of N routers.
    Line(usize),
    /// A cycle of N routers.
    Ring(usize),
    /// A hub with N leaves.
    Star(usize),
    /// Rows × columns, 4-neighbour.
    Grid(usize, usize),
    /// Rows × columns, wrapping both ways.
    Torus(usize, usize),
    /// A complete tree; `depth` counts levels including the root.
    Tree {
        /// Children per inner node.
        fanout: usize,
        /// Number of levels, root included.
        depth: usize,
    },
    /// SD-WAN sites over several provider networks.
    Sdwan {
        /// Sites (edge routers with LANs).
        sites: usize,
        /// Provider networks, named from [`UNDERLAY_NAMES`].
        underlays: usize,
        /// LAN hosts per site (1 or 2).
        lans: usize,
    },
    /// A random connected graph.
    Random {
        /// Number of routers.
        n: usize,
        /// How links are drawn.
        model: RandomModel,
    },
}

/// How a random topology's links are drawn.
#[derive(Clone, Debug, PartialEq)]
pub enum RandomModel {
    /// Preferential attachment: each new node links to `m` distinct existing
    /// nodes chosen by degree.
    BarabasiAlbert {
        /// Links per new node.
        m: usize,
    },
    /// Nodes uniform in the unit square, linked with probability
    /// `beta * exp(-d / (alpha * L))`; then made connected.
    Waxman {
        /// Distance sensitivity, > 0.
        alpha: f64,
        /// Link density, in (0, 1].
        beta: f64,
    },
}

/// A generator spec that does not parse.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum GenerateError {
    /// The part before the first `:` is not a generator.
    #[error(
        "unknown generator \"{spec}\"; use line:N, ring:N, star:N, grid:ROWSxCOLS, \
         torus:ROWSxCOLS, tree:FANOUTxDEPTH, random:N or sdwan:SITES:UNDERLAYS"
    )]
    Unknown {
        /// The whole spec.
        spec: String,
    },
    /// The right generator, written the wrong way.
    #[error("bad generator \"{spec}\"; expected {form}")]
    Form {
        /// The whole spec.
        spec: String,
        /// The expected form, with an example.
        form: &'static str,
    },
    /// Well-formed but out of range.
    #[error("bad generator \"{spec}\": {problem}")]
    Range {
        /// The whole spec.
        spec: String,
        /// What is out of range.
        problem: String,
    },
}

const KINDS: [&str; 8] = ["line", "ring", "star", "grid", "torus", "tree", "random", "sdwan"];

/// The underlays of `sdwan:`, in order.
pub const UNDERLAY_NAMES: [&str; 4] = ["mpls", "inet", "lte", "sat"];
/// Provider routers per underlay in `sdwan:`.
pub const PROVIDER_ROUTERS: usize = 3;

/// Whether `s` is meant as a generator spec rather than a file name:
/// `"grid:3x3"` yes, `"lab.toml"` no.
pub fn looks_like_generator(s: &str) -> bool {
    s.split_once(':').is_some_and(|(kind, rest)| {
        KINDS.contains(&kind)
            && !rest.is_empty()
            && rest
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '.' || c == ':')
    })
}

fn form(kind: &str) -> &'static str {
    match kind {
        "line" => "line:N with N >= 1 (e.g. line:10)",
        "ring" => "ring:N with N >= 3 (e.g. ring:8)",
        "star" => "star:N with N >= 1 leaves (e.g. star:5)",
        "grid" => "grid:ROWSxCOLS (e.g. grid:3x3)",
        "torus" => "torus:ROWSxCOLS with both >= 3 (e.g. torus:4x4)",
        "tree" => "tree:FANOUTxDEPTH, depth counting the root level (e.g. tree:4x4)",
        "sdwan" => "sdwan:SITES:UNDERLAYS or sdwan:SITES:UNDERLAYS:LANS (e.g. sdwan:3:2)",
        _ => "random:N, random:N:ba:M or random:N:waxman:ALPHA:BETA (e.g. random:100:waxman:0.4:0.2)",
    }
}

impl FromStr for Generator {
    type Err = GenerateError;

    /// Parses a spec of at most [`MAX_NODES`] nodes (what a lab can hold).
    fn from_str(spec: &str) -> Result<Self, Self::Err> {
        Generator::parse_with_max_nodes(spec, MAX_NODES)
    }
}

impl Generator {
    /// Parses a spec of at most `max_nodes` nodes: the lab's limit is [`MAX_NODES`], the
    /// simulator (which runs no namespaces) takes far larger networks in the same syntax.
    pub fn parse_with_max_nodes(spec: &str, max_nodes: usize) -> Result<Self, GenerateError> {
        let parts: Vec<&str> = spec.trim().split(':').collect();
        let kind = parts[0];
        if !KINDS.contains(&kind) || parts.len() < 2 {
            return Err(GenerateError::Unknown { spec: spec.into() });
        }
        let bad_form = || GenerateError::Form {
            spec: spec.into(),
            form: form(kind),
        };
        let range = |problem: String| GenerateError::Range {
            spec: spec.into(),
            problem,
        };
        let num = |s: &str| -> Result<usize, GenerateError> {
            if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad_form());
            }
            s.parse().map_err(|_| bad_form())
        };
        let pair = |s: &str| -> Result<(usize, usize), GenerateError> {
            let (a, b) = s.split_once('x').ok_or_else(bad_form)?;
            Ok((num(a)?, num(b)?))
        };
        let cap = |nodes: Option<usize>| match nodes {
            Some(n) if n <= max_nodes => Ok(()),
            _ => Err(range(format!("more than {max_nodes} nodes"))),
        };
        let g = match (kind, parts.len()) {
            ("line" | "ring" | "star", 2) => {
                let n = num(parts[1])?;
                let min = if kind == "ring" { 3 } else { 1 };
                if n < min {
                    return Err(range(format!("{kind} needs at least {min} nodes")));
                }
                cap(Some(n))?;
                match kind {
                    "line" => Generator::Line(n),
                    "ring" => Generator::Ring(n),
                    _ => Generator::Star(n),
                }
            }
            ("grid" | "torus", 2) => {
                let (r, c) = pair(parts[1])?;
                let min = if kind == "torus" { 3 } else { 1 };
                if r < min || c < min {
                    return Err(range(format!("{kind} rows and columns must be at least {min}")));
                }
                cap(r.checked_mul(c))?;
                if kind == "grid" {
                    Generator::Grid(r, c)
                } else {
                    Generator::Torus(r, c)
                }
            }
            ("tree", 2) => {
                let (fanout, depth) = pair(parts[1])?;
                if fanout < 1 || depth < 1 {
                    return Err(range("tree fanout and depth must be at least 1".into()));
                }
                cap(tree_size(fanout, depth))?;
                Generator::Tree { fanout, depth }
            }
            ("sdwan", 3 | 4) => {
                let sites = num(parts[1])?;
                let underlays = num(parts[2])?;
                let lans = parts.get(3).map(|l| num(l)).transpose()?.unwrap_or(1);
                if !(2..=250).contains(&sites) {
                    return Err(range("sdwan needs 2 to 250 sites".into()));
                }
                if !(1..=UNDERLAY_NAMES.len()).contains(&underlays) {
                    return Err(range(format!("sdwan takes 1 to {} underlays", UNDERLAY_NAMES.len())));
                }
                if !(1..=2).contains(&lans) {
                    return Err(range("sdwan sites have 1 or 2 LANs".into()));
                }
                cap(Some(1 + PROVIDER_ROUTERS * underlays + sites * (1 + lans)))?;
                Generator::Sdwan { sites, underlays, lans }
            }
            ("random", 2 | 4 | 5) => {
                let n = num(parts[1])?;
                if n < 1 {
                    return Err(range("random needs at least 1 node".into()));
                }
                cap(Some(n))?;
                let model = match &parts[2..] {
                    [] => RandomModel::BarabasiAlbert { m: 2 },
                    ["ba", m] => {
                        let m = num(m)?;
                        if !(1..=MAX_BA_M).contains(&m) {
                            return Err(range(format!("ba m must be from 1 to {MAX_BA_M}")));
                        }
                        RandomModel::BarabasiAlbert { m }
                    }
                    ["waxman", alpha, beta] => {
                        let float = |s: &str| -> Result<f64, GenerateError> {
                            if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
                                return Err(bad_form());
                            }
                            s.parse().map_err(|_| bad_form())
                        };
                        let (alpha, beta) = (float(alpha)?, float(beta)?);
                        if alpha <= 0.0 || !(beta > 0.0 && beta <= 1.0) {
                            return Err(range("waxman needs ALPHA > 0 and BETA in (0, 1]".into()));
                        }
                        RandomModel::Waxman { alpha, beta }
                    }
                    _ => return Err(bad_form()),
                };
                Generator::Random { n, model }
            }
            _ => return Err(bad_form()),
        };
        Ok(g)
    }
}

impl fmt::Display for Generator {
    /// The spec form, which [`Generator::from_str`] parses back.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Generator::Line(n) => write!(f, "line:{n}"),
            Generator::Ring(n) => write!(f, "ring:{n}"),
            Generator::Star(n) => write!(f, "star:{n}"),
            Generator::Grid(r, c) => write!(f, "grid:{r}x{c}"),
            Generator::Torus(r, c) => write!(f, "torus:{r}x{c}"),
            Generator::Tree { fanout, depth } => write!(f, "tree:{fanout}x{depth}"),
            Generator::Sdwan { sites, underlays, lans } => write!(f, "sdwan:{sites}:{underlays}:{lans}"),
            Generator::Random {
                n,
                model: RandomModel::BarabasiAlbert { m },
            } => write!(f, "random:{n}:ba:{m}"),
            Generator::Random {
                n,
                model: RandomModel::Waxman { alpha, beta },
            } => write!(f, "random:{n}:waxman:{alpha}:{beta}"),
        }
    }
}

/// `1 + F + ... + F^(D-1)`, or `None` on overflow.
fn tree_size(fanout: usize, depth: usize) -> Option<usize> {
    let (mut total, mut level) = (0usize, 1usize);
    for i in 0..depth {
        total = total.checked_add(level)?;
        if i + 1 < depth {
            level = level.checked_mul(fanout)?;
        }
    }
    Some(total)
}

/// Accumulates nodes and links by index.
struct Builder {
    nodes: Vec<Node>,
    links: Vec<(usize, usize)>,
}

impl Builder {
    fn new() -> Self {
        Builder {
            nodes: Vec::new(),
            links: Vec::new(),
        }
    }

    fn node(&mut self, name: String, role: Role) -> usize {
        self.nodes.push(Node::new(name, role));
        self.nodes.len() - 1
    }

    /// `r1`..`rN`, all edge.
    fn numbered(&mut self, n: usize) {
        for i in 1..=n {
            self.node(format!("r{i}"), Role::Edge);
        }
    }

    fn link(&mut self, a: usize, b: usize) {
        self.links.push((a, b));
    }

    fn finish(self, name: String) -> Topology {
        let Builder { nodes, links } = self;
        let links: Vec<Link> = links
            .into_iter()
            .map(|(a, b)| Link::new(nodes[a].name.clone(), nodes[b].name.clone()))
            .collect();
        let pools = pools_for(nodes.len(), links.len());
        Topology {
            name: Some(name),
            nodes,
            links,
            pools,
        }
    }
}

/// Default pools, with the link pool widened (down to 10.0.0.0/9) and the
/// loopback pool moved to 10.128.0.0/10 when the topology needs it.
fn pools_for(nodes: usize, links: usize) -> Pools {
    let mut p = Pools::default();
    while p.link_capacity() < links as u64 && p.links.prefix_len > 9 {
        p.links.prefix_len -= 1;
    }
    if p.loopback_capacity() < nodes as u64 {
        p.loopbacks = Ipv4Net {
            addr: Ipv4Addr::new(10, 128, 0, 0),
            prefix_len: 10,
        };
    }
    p
}

/// Builds the topology `g` describes; `seed` only matters for `random`.
/// Specs that [`Generator::from_str`] accepts always produce topologies that
/// pass [`Topology::validate`].
pub fn generate(g: &Generator, seed: u64) -> Topology {
    let mut b = Builder::new();
    let name = match *g {
        Generator::Line(n) => {
            b.numbered(n);
            for i in 1..n {
                b.link(i - 1, i);
            }
            format!("line-{n}")
        }
        Generator::Ring(n) => {
            b.numbered(n);
            for i in 1..n {
                b.link(i - 1, i);
            }
            if n >= 3 {
                b.link(n - 1, 0);
            }
            format!("ring-{n}")
        }
        Generator::Star(n) => {
            let hub = b.node("hub".into(), Role::Fog);
            for i in 1..=n {
                let leaf = b.node(format!("r{i}"), Role::Edge);
                b.link(hub, leaf);
            }
            format!("star-{n}")
        }
        Generator::Grid(rows, cols) => {
            grid(&mut b, rows, cols, false);
            format!("grid-{rows}x{cols}")
        }
        Generator::Torus(rows, cols) => {
            grid(&mut b, rows, cols, true);
            format!("torus-{rows}x{cols}")
        }
        Generator::Tree { fanout, depth } => {
            tree(&mut b, fanout, depth);
            format!("tree-{fanout}x{depth}")
        }
        Generator::Sdwan { sites, underlays, lans } => {
            sdwan(&mut b, sites, underlays, lans);
            format!("sdwan-{sites}x{underlays}")
        }
        Generator::Random { n, ref model } => {
            b.numbered(n);
            let mut rng = SplitMix64::new(seed);
            match *model {
                RandomModel::BarabasiAlbert { m } => {
                    barabasi_albert(&mut b, n, m.max(1), &mut rng);
                    if m == 2 {
                        format!("random-{n}")
                    } else {
                        format!("random-{n}-ba{m}")
                    }
                }
                RandomModel::Waxman { alpha, beta } => {
                    waxman(&mut b, n, alpha, beta, &mut rng);
                    format!("random-{n}-waxman")
                }
            }
        }
    };
    b.finish(name)
}

fn sdwan(b: &mut Builder, sites: usize, underlays: usize, lans: usize) {
    let dc = b.node("dc".into(), Role::Dc);
    let mut first = Vec::with_capacity(underlays);
    for u in &UNDERLAY_NAMES[..underlays] {
        let routers: Vec<usize> = (1..=PROVIDER_ROUTERS)
            .map(|k| {
                let r = b.node(format!("{u}{k}"), Role::Edge);
                b.nodes[r].underlay = Some(u.to_string());
                r
            })
            .collect();
        for k in 0..PROVIDER_ROUTERS {
            b.link(routers[k], routers[(k + 1) % PROVIDER_ROUTERS]);
        }
        b.link(dc, routers[0]);
        first.push(routers[0]);
    }
    for i in 1..=sites {
        let edge = b.node(format!("e{i}"), Role::Edge);
        for &p in &first {
            // Router ((i-1) mod 3) + 1 of this underlay: the routers are consecutive from `p`.
            b.link(edge, p + (i - 1) % PROVIDER_ROUTERS);
        }
        for l in 0..lans {
            let name = if l == 0 { format!("h{i}") } else { format!("h{i}b") };
            let host = b.node(name, Role::Host);
            b.link(edge, host);
        }
    }
}

fn grid(b: &mut Builder, rows: usize, cols: usize, wrap: bool) {
    for r in 1..=rows {
        for c in 1..=cols {
            b.node(format!("r{r}-{c}"), Role::Edge);
        }
    }
    let at = |r: usize, c: usize| r * cols + c;
    for r in 0..rows {
        for c in 0..cols {
            if c + 1 < cols {
                b.link(at(r, c), at(r, c + 1));
            } else if wrap && cols >= 3 {
                b.link(at(r, c), at(r, 0));
            }
            if r + 1 < rows {
                b.link(at(r, c), at(r + 1, c));
            } else if wrap && rows >= 3 {
                b.link(at(r, c), at(0, c));
            }
        }
    }
}

fn tree(b: &mut Builder, fanout: usize, depth: usize) {
    let digits = fanout.to_string().len();
    let longest = 2 + (depth.saturating_sub(1)) * (1 + digits);
    let hierarchical = longest <= crate::topology::MAX_NODE_NAME_LEN;
    let role = |level: usize| match level {
        0 => Role::Dc,
        1 => Role::Fog,
        _ => Role::Edge,
    };
    if depth == 0 {
        return;
    }
    b.node("r0".into(), Role::Dc);
    // Breadth-first: (node index, level).
    let mut frontier = vec![0usize];
    for level in 1..depth {
        let mut next = Vec::with_capacity(frontier.len() * fanout);
        for &parent in &frontier {
            for k in 1..=fanout {
                let name = if hierarchical {
                    format!("{}-{k}", b.nodes[parent].name)
                } else {
                    format!("r{}", b.nodes.len())
                };
                let child = b.node(name, role(level));
                b.link(parent, child);
                next.push(child);
            }
        }
        frontier = next;
    }
}

fn barabasi_albert(b: &mut Builder, n: usize, m: usize, rng: &mut SplitMix64) {
    // Seed clique of m + 1 nodes (or all of them, if fewer).
    let k0 = n.min(m + 1);
    let mut ends: Vec<usize> = Vec::with_capacity(2 * n * m);
    for i in 0..k0 {
        for j in 0..i {
            b.link(j, i);
            ends.extend([j, i]);
        }
    }
    let mut chosen: Vec<usize> = Vec::with_capacity(m);
    for v in k0..n {
        chosen.clear();
        // v > m existing nodes, all with degree >= 1, so this terminates.
        while chosen.len() < m {
            let t = ends[rng.below(ends.len() as u64) as usize];
            if !chosen.contains(&t) {
                chosen.push(t);
            }
        }
        for &t in &chosen {
            b.link(t, v);
            ends.extend([t, v]);
        }
    }
}

fn waxman(b: &mut Builder, n: usize, alpha: f64, beta: f64, rng: &mut SplitMix64) {
    let pos: Vec<(f64, f64)> = (0..n).map(|_| (rng.next_f64(), rng.next_f64())).collect();
    let dist = |i: usize, j: usize| (pos[i].0 - pos[j].0).hypot(pos[i].1 - pos[j].1);
    let mut l_max = 0f64;
    for i in 0..n {
        for j in 0..i {
            l_max = l_max.max(dist(i, j));
        }
    }
    let scale = alpha * if l_max > 0.0 { l_max } else { 1.0 };

    let mut dsu: Vec<usize> = (0..n).collect();
    fn find(dsu: &mut [usize], mut x: usize) -> usize {
        while dsu[x] != x {
            dsu[x] = dsu[dsu[x]];
            x = dsu[x];
        }
        x
    }
    for i in 0..n {
        for j in (i + 1)..n {
            if rng.next_f64() < beta * (-dist(i, j) / scale).exp() {
                b.link(i, j);
                let (ri, rj) = (find(&mut dsu, i), find(&mut dsu, j));
                dsu[ri] = rj;
            }
        }
    }

    // Join components Prim-style: grow from node 0's component, always
    // adding the nearest outside node (and its whole component) by one link.
    if n == 0 {
        return;
    }
    let comp: Vec<usize> = (0..n).map(|i| find(&mut dsu, i)).collect();
    let mut members: Vec<Vec<usize>> = vec![Vec::new(); n];
    for (i, &c) in comp.iter().enumerate() {
        members[c].push(i);
    }
    let mut inside = vec![false; n];
    let mut best: Vec<(f64, usize)> = vec![(f64::INFINITY, 0); n];
    let mut outside = n;
    let mut add_component = |c: usize, inside: &mut Vec<bool>, best: &mut Vec<(f64, usize)>| {
        for &u in &members[c] {
            inside[u] = true;
            outside -= 1;
        }
        for &u in &members[c] {
            for w in 0..n {
                if !inside[w] {
                    let d = dist(u, w);
                    if d < best[w].0 {
                        best[w] = (d, u);
                    }
                }
            }
        }
        outside
    };
    let mut left = add_component(comp[0], &mut inside, &mut best);
    while left > 0 {
        let v = (0..n)
            .filter(|&w| !inside[w])
            .min_by(|&x, &y| best[x].0.total_cmp(&best[y].0))
            .unwrap_or(0);
        b.link(best[v].1.min(v), best[v].1.max(v));
        left = add_component(comp[v], &mut inside, &mut best);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gen_spec(spec: &str, seed: u64) -> Topology {
        let t = generate(&spec.parse().unwrap(), seed);
        t.validate().unwrap_or_else(|e| panic!("{spec}: {e}"));
        t
    }

    fn sizes(spec: &str) -> (usize, usize) {
        let t = gen_spec(spec, 1);
        (t.nodes.len(), t.links.len())
    }

    #[test]
    fn parse_specs() {
        assert_eq!("line:10".parse(), Ok(Generator::Line(10)));
        assert_eq!("ring:8".parse(), Ok(Generator::Ring(8)));
        assert_eq!("star:5".parse(), Ok(Generator::Star(5)));
        assert_eq!("grid:3x3".parse(), Ok(Generator::Grid(3, 3)));
        assert_eq!("torus:4x5".parse(), Ok(Generator::Torus(4, 5)));
        assert_eq!("tree:4x4".parse(), Ok(Generator::Tree { fanout: 4, depth: 4 }));
        assert_eq!(
            "random:100".parse(),
            Ok(Generator::Random {
                n: 100,
                model: RandomModel::BarabasiAlbert { m: 2 }
            })
        );
        assert_eq!(
            "random:100:ba:3".parse(),
            Ok(Generator::Random {
                n: 100,
                model: RandomModel::BarabasiAlbert { m: 3 }
            })
        );
        assert_eq!(
            "random:100:waxman:0.4:0.2".parse(),
            Ok(Generator::Random {
                n: 100,
                model: RandomModel::Waxman { alpha: 0.4, beta: 0.2 }
            })
        );
        for spec in [
            "line:10",
            "grid:3x4",
            "tree:2x3",
            "random:5:ba:1",
            "random:9:waxman:0.4:0.2",
        ] {
            let g: Generator = spec.parse().unwrap();
            assert_eq!(g.to_string().parse::<Generator>(), Ok(g));
        }
    }

    #[test]
    fn sdwan_sites_have_one_path_per_underlay() {
        assert_eq!(
            "sdwan:3:2".parse(),
            Ok(Generator::Sdwan {
                sites: 3,
                underlays: 2,
                lans: 1
            })
        );
        let g: Generator = "sdwan:4:3:2".parse().unwrap();
        assert_eq!(g.to_string().parse::<Generator>(), Ok(g));
        // dc + 3 provider routers per underlay + per site an edge and its LAN hosts; links:
        // a triangle and the dc's link per underlay, per site one per underlay and one per LAN.
        assert_eq!(sizes("sdwan:3:2"), (1 + 6 + 3 * 2, 2 * 4 + 3 * 3));
        assert_eq!(sizes("sdwan:5:3:2"), (1 + 9 + 5 * 3, 3 * 4 + 5 * 5));
        let t = gen_spec("sdwan:4:2", 1);
        for site in ["e1", "e2", "e3", "e4"] {
            let i = t.node_index(site).unwrap();
            let mut under: Vec<&str> = t
                .link_ends()
                .iter()
                .enumerate()
                .filter(|(_, e)| matches!(e, Some((a, b)) if *a == i || *b == i))
                .filter_map(|(l, _)| t.link_underlay(l))
                .collect();
            under.sort();
            assert_eq!(under, ["inet", "mpls"], "{site}");
        }
        let e = |s: &str| s.parse::<Generator>().unwrap_err().to_string();
        assert!(e("sdwan:1:2").contains("2 to 250 sites"), "{}", e("sdwan:1:2"));
        assert!(e("sdwan:3:5").contains("1 to 4 underlays"));
        assert!(e("sdwan:3:2:3").contains("1 or 2 LANs"));
        assert!(e("sdwan:3").contains("expected sdwan:SITES:UNDERLAYS"));
        assert!(looks_like_generator("sdwan:3:2"));
    }

    #[test]
    fn parse_errors() {
        let e = |s: &str| s.parse::<Generator>().unwrap_err();
        assert!(matches!(e("blob:3"), GenerateError::Unknown { .. }));
        assert!(matches!(e("grid"), GenerateError::Unknown { .. }));
        assert_eq!(
            e("grid:3").to_string(),
            "bad generator \"grid:3\"; expected grid:ROWSxCOLS (e.g. grid:3x3)"
        );
        assert!(e("tree:4").to_string().contains("tree:FANOUTxDEPTH"));
        assert!(e("line:x").to_string().contains("line:N"));
        assert!(e("line:-1").to_string().contains("line:N"));
        assert!(e("random:10:foo").to_string().contains("random:N:waxman:ALPHA:BETA"));
        assert!(e("random:10:ba:x").to_string().contains("random:N:ba:M"));
        assert!(matches!(e("ring:2"), GenerateError::Range { .. }));
        assert!(matches!(e("line:0"), GenerateError::Range { .. }));
        assert!(matches!(e("torus:2x5"), GenerateError::Range { .. }));
        assert!(matches!(e("grid:0x5"), GenerateError::Range { .. }));
        assert!(matches!(e("grid:1000x1000"), GenerateError::Range { .. }));
        assert!(matches!(e("tree:10x10"), GenerateError::Range { .. }));
        assert!(matches!(e("tree:99999999999x99"), GenerateError::Range { .. }));
        assert!(matches!(e("random:10:ba:0"), GenerateError::Range { .. }));
        assert!(matches!(e("random:10:waxman:0:0.5"), GenerateError::Range { .. }));
        assert!(matches!(e("random:10:waxman:0.5:1.5"), GenerateError::Range { .. }));
        assert_eq!(
            e("random:100000").to_string(),
            "bad generator \"random:100000\": more than 10000 nodes"
        );
        // The simulator's larger limit, same syntax.
        assert_eq!(
            Generator::parse_with_max_nodes("random:100000", 1_000_000),
            Ok(Generator::Random {
                n: 100_000,
                model: RandomModel::BarabasiAlbert { m: 2 }
            })
        );
        assert!(matches!(
            Generator::parse_with_max_nodes("line:11", 10),
            Err(GenerateError::Range { .. })
        ));
    }

    #[test]
    fn looks_like() {
        for yes in ["grid:3x3", "line:10", "random:100:waxman:0.4:0.2", "tree:4x4"] {
            assert!(looks_like_generator(yes), "{yes}");
        }
        for no in [
            "lab.toml",
            "grid",
            "topo/grid:3x3",
            "./line:3",
            "grid:",
            "C:/x.toml",
            "line:3.toml/",
        ] {
            assert!(!looks_like_generator(no), "{no}");
        }
    }

    #[test]
    fn shapes() {
        assert_eq!(sizes("line:1"), (1, 0));
        assert_eq!(sizes("line:10"), (10, 9));
        assert_eq!(sizes("ring:8"), (8, 8));
        assert_eq!(sizes("star:5"), (6, 5));
        assert_eq!(sizes("grid:1x1"), (1, 0));
        assert_eq!(sizes("grid:3x3"), (9, 12));
        assert_eq!(sizes("grid:10x10"), (100, 180));
        assert_eq!(sizes("torus:4x4"), (16, 32));
        assert_eq!(sizes("torus:3x5"), (15, 30));
        assert_eq!(sizes("tree:4x4"), (85, 84));
        assert_eq!(sizes("tree:16x2"), (17, 16));
        assert_eq!(sizes("tree:3x1"), (1, 0));
        assert_eq!(sizes("tree:1x5"), (5, 4));
        assert_eq!(sizes("random:1"), (1, 0));
        assert_eq!(sizes("random:2"), (2, 1));
        assert_eq!(sizes("random:3"), (3, 3));
        // BA: clique of m+1, then m links per node.
        assert_eq!(sizes("random:100"), (100, 3 + 97 * 2));
        assert_eq!(sizes("random:50:ba:3"), (50, 6 + 46 * 3));
    }

    #[test]
    fn names_and_roles() {
        let t = gen_spec("grid:2x3", 0);
        assert_eq!(t.name.as_deref(), Some("grid-2x3"));
        let names: Vec<&str> = t.nodes.iter().map(|n| n.name.as_str()).collect();
        assert_eq!(names, ["r1-1", "r1-2", "r1-3", "r2-1", "r2-2", "r2-3"]);
        assert!(t.nodes.iter().all(|n| n.role == Role::Edge));

        let t = gen_spec("star:3", 0);
        assert_eq!(t.nodes[0].name, "hub");
        assert_eq!(t.nodes[0].role, Role::Fog);
        assert_eq!((t.links[2].a.as_str(), t.links[2].b.as_str()), ("hub", "r3"));

        let t = gen_spec("tree:4x4", 0);
        assert_eq!(t.name.as_deref(), Some("tree-4x4"));
        assert_eq!(t.nodes[0].name, "r0");
        assert_eq!(t.nodes[0].role, Role::Dc);
        assert_eq!(t.nodes[1].name, "r0-1");
        assert_eq!(t.nodes[1].role, Role::Fog);
        assert_eq!(t.nodes[5].name, "r0-1-1");
        assert_eq!(t.nodes[5].role, Role::Edge);
        assert!(t.node_index("r0-3-2").is_some());
        assert!(t.node_index("r0-4-4-4").is_some());
        let (dc, fog) = (
            t.nodes.iter().filter(|n| n.role == Role::Dc).count(),
            t.nodes.iter().filter(|n| n.role == Role::Fog).count(),
        );
        assert_eq!((dc, fog), (1, 4));

        // tree:3x6 just fits (r0-1-1-1-1-1 is 12 characters) ...
        let t = gen_spec("tree:3x6", 0);
        assert_eq!(t.nodes.last().unwrap().name, "r0-3-3-3-3-3");
        // ... tree:3x7 would need 14: breadth-first numbering instead.
        let t = gen_spec("tree:3x7", 0);
        assert_eq!(t.nodes.len(), 1093);
        assert_eq!(t.nodes[0].name, "r0");
        assert_eq!(t.nodes[4].name, "r4");
        assert_eq!(t.nodes[1092].name, "r1092");
        assert_eq!((t.links[3].a.as_str(), t.links[3].b.as_str()), ("r1", "r4"));
        assert_eq!(t.nodes[1].role, Role::Fog);
        assert_eq!(t.nodes[4].role, Role::Edge);

        let t = gen_spec("ring:4", 0);
        assert_eq!((t.links[3].a.as_str(), t.links[3].b.as_str()), ("r4", "r1"));
        assert_eq!(gen_spec("random:10:ba:3", 0).name.as_deref(), Some("random-10-ba3"));
        assert_eq!(
            gen_spec("random:10:waxman:0.4:0.2", 0).name.as_deref(),
            Some("random-10-waxman")
        );
    }

    #[test]
    fn random_is_deterministic_and_connected() {
        let a = gen_spec("random:1000", 7);
        assert_eq!(a.nodes.len(), 1000);
        assert_eq!(a.links.len(), 3 + 997 * 2);
        assert_eq!(a, gen_spec("random:1000", 7));
        assert_ne!(a.links, gen_spec("random:1000", 8).links);

        for (seed, spec) in [
            (1, "random:300:waxman:0.4:0.2"),
            (2, "random:300:waxman:0.05:0.05"),
            (3, "random:50:waxman:0.01:0.01"),
        ] {
            let t = gen_spec(spec, seed); // validate() checks connectivity
            assert_eq!(t, gen_spec(spec, seed));
        }
    }

    #[test]
    fn json_round_trip() {
        for spec in ["tree:3x3", "random:30:waxman:0.4:0.2", "star:4"] {
            let t = gen_spec(spec, 5);
            let json = serde_json::to_string_pretty(&t).unwrap();
            assert_eq!(serde_json::from_str::<Topology>(&json).unwrap(), t, "{spec}");
        }
    }

    #[test]
    fn big_topologies_get_bigger_pools() {
        let t = gen_spec("torus:100x100", 0);
        assert_eq!(t.links.len(), 20_000);
        assert_eq!(t.pools, Pools::default());
        let t = gen_spec("random:10000:ba:10", 0);
        assert!(t.pools.links.prefix_len < 16);
        let t = generate(&Generator::Line(70_000), 0);
        assert_eq!(t.pools.loopbacks.to_string(), "10.128.0.0/10");
        t.validate().unwrap();
    }
}
