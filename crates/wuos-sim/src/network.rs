//! The simulated network: routers by dense index ([`RouterIx`]), the links between them
//! ([`LinkIx`]) with their delay, jitter, loss and up/down state, and who is adjacent to whom.
//!
//! Built once from a [`Topology`]; only the links' state changes afterwards (events). Each
//! router's adjacency is sorted by the neighbor's name, so that the neighbor an
//! [`Action`](wuos_proto::Action) names is found by binary search, without hashing or
//! allocating. A link's end `a` is the router whose id sorts first: the one that dials
//! (`Neighbor.Link` is opened by the router whose id sorts first).

use std::collections::{HashMap, VecDeque};

use std::net::Ipv4Addr;

use wuos_model::{Ipv4Net, Role, Topology};

/// A router, by its position in the topology's node list.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RouterIx(pub u32);

impl RouterIx {
    /// As an index into per-router vectors.
    pub fn get(self) -> usize {
        self.0 as usize
    }
}

/// A link, by its position in the network's link list.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LinkIx(pub u32);

impl LinkIx {
    /// As an index into per-link vectors.
    pub fn get(self) -> usize {
        self.0 as usize
    }
}

/// One neighbor of a router: who, and over which link.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Adjacent {
    pub peer: RouterIx,
    pub link: LinkIx,
}

/// A link's state: its ends, whether it carries anything, and how it delays and loses.
#[derive(Clone, Debug, PartialEq)]
pub struct LinkState {
    /// The end whose router id sorts first (it dials).
    pub a: RouterIx,
    /// The other end.
    pub b: RouterIx,
    /// Down: nothing crosses it (segments in flight are retransmitted until it is back).
    pub up: bool,
    /// One-way delay, µs.
    pub delay_us: u64,
    /// Each segment's delay is uniform in `delay ± jitter` (never below 0), µs.
    pub jitter_us: u64,
    /// Probability that a segment is lost, percent (`0..100`).
    pub loss_pct: f64,
}

impl LinkState {
    /// The end that is not `r`.
    pub fn other(&self, r: RouterIx) -> RouterIx {
        if r == self.a { self.b } else { self.a }
    }

    /// The direction of traffic sent by `from`: 0 for `a` → `b`, 1 for `b` → `a`.
    pub fn direction_from(&self, from: RouterIx) -> usize {
        usize::from(from != self.a)
    }

    /// The round trip, µs.
    pub fn rtt_us(&self) -> u64 {
        2 * self.delay_us
    }
}

/// Link settings where the topology gives none.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LinkDefaults {
    /// One-way delay, µs.
    pub delay_us: u64,
    /// Loss, percent.
    pub loss_pct: f64,
}

/// The routers and links of a simulated network.
#[derive(Clone, Debug)]
pub struct Network {
    name: String,
    names: Vec<String>,
    roles: Vec<Role>,
    /// CPUs and memory (bytes) of each router, as the topology limits them.
    capacity: Vec<(Option<f64>, Option<u64>)>,
    by_name: HashMap<String, RouterIx>,
    /// Router `r`'s neighbors are `adjacent[start[r]..start[r + 1]]`, by the neighbor's name.
    start: Vec<u32>,
    adjacent: Vec<Adjacent>,
    links: Vec<LinkState>,
    /// Links listed twice in the topology (the later ones are ignored).
    duplicates: usize,
    /// Router `i`'s loopback is the `i + 1`-th address of this pool (as the lab numbers them).
    loopbacks: Ipv4Net,
}

impl Network {
    /// The network of `t`: every node a router, every link with its own delay, jitter and loss
    /// or `defaults`.
    pub fn new(t: &Topology, defaults: LinkDefaults) -> Self {
        let names: Vec<String> = t.nodes.iter().map(|n| n.name.clone()).collect();
        let by_name: HashMap<String, RouterIx> = names
            .iter()
            .enumerate()
            .map(|(i, n)| (n.clone(), RouterIx(i as u32)))
            .collect();
        let mut links = Vec::with_capacity(t.links.len());
        let mut seen = std::collections::HashSet::with_capacity(t.links.len());
        let mut duplicates = 0;
        for l in &t.links {
            let (Some(&x), Some(&y)) = (by_name.get(&l.a), by_name.get(&l.b)) else {
                continue;
            };
            if x == y {
                continue;
            }
            let (a, b) = if names[x.get()] <= names[y.get()] {
                (x, y)
            } else {
                (y, x)
            };
            if !seen.insert((a, b)) {
                duplicates += 1;
                continue;
            }
            let us = |d: std::time::Duration| u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
            links.push(LinkState {
                a,
                b,
                up: true,
                delay_us: l.params.delay.map_or(defaults.delay_us, us),
                jitter_us: l.params.jitter.map_or(0, us),
                loss_pct: l.params.loss_pct.unwrap_or(defaults.loss_pct),
            });
        }
        let n = names.len();
        let mut degree = vec![0u32; n];
        for l in &links {
            degree[l.a.get()] += 1;
            degree[l.b.get()] += 1;
        }
        let mut start = Vec::with_capacity(n + 1);
        let mut total = 0u32;
        start.push(0);
        for d in &degree {
            total += d;
            start.push(total);
        }
        let mut fill = start[..n].to_vec();
        let mut adjacent = vec![
            Adjacent {
                peer: RouterIx(0),
                link: LinkIx(0)
            };
            total as usize
        ];
        for (i, l) in links.iter().enumerate() {
            for (from, to) in [(l.a, l.b), (l.b, l.a)] {
                adjacent[fill[from.get()] as usize] = Adjacent {
                    peer: to,
                    link: LinkIx(i as u32),
                };
                fill[from.get()] += 1;
            }
        }
        for r in 0..n {
            adjacent[start[r] as usize..start[r + 1] as usize]
                .sort_by(|x, y| names[x.peer.get()].cmp(&names[y.peer.get()]));
        }
        Network {
            name: t.name.clone().unwrap_or_else(|| "topology".into()),
            roles: t.nodes.iter().map(|n| n.role).collect(),
            capacity: t.nodes.iter().map(|n| (n.cpus, n.memory)).collect(),
            names,
            by_name,
            start,
            adjacent,
            links,
            duplicates,
            loopbacks: t.pools.loopbacks,
        }
    }

    /// A router's loopback, as the lab would number it (the `i + 1`-th address of the
    /// topology's loopback pool; past its end, of 10.128.0.0/10).
    pub fn loopback(&self, r: RouterIx) -> Ipv4Addr {
        let n = u64::from(r.0) + 1;
        self.loopbacks
            .nth(n)
            .unwrap_or_else(|| Ipv4Addr::from(0x0a80_0000u32.wrapping_add(n as u32)))
    }

    /// The topology's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// How many routers.
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// Whether there are no routers.
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// Every router, in topology order.
    pub fn routers(&self) -> impl Iterator<Item = RouterIx> + use<> {
        (0..self.names.len() as u32).map(RouterIx)
    }

    /// A router's id.
    pub fn name_of(&self, r: RouterIx) -> &str {
        &self.names[r.get()]
    }

    /// Every router's id, by index.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// A router's role.
    pub fn role(&self, r: RouterIx) -> Role {
        self.roles[r.get()]
    }

    /// A router's CPUs and memory (bytes), where the topology limits them.
    pub fn capacity(&self, r: RouterIx) -> (Option<f64>, Option<u64>) {
        self.capacity[r.get()]
    }

    /// The router called `name`.
    pub fn index(&self, name: &str) -> Option<RouterIx> {
        self.by_name.get(name).copied()
    }

    /// A router's neighbors, by name.
    pub fn adjacent(&self, r: RouterIx) -> &[Adjacent] {
        &self.adjacent[self.start[r.get()] as usize..self.start[r.get() + 1] as usize]
    }

    /// Router `r`'s neighbor called `name`.
    pub fn neighbor(&self, r: RouterIx, name: &str) -> Option<Adjacent> {
        let adj = self.adjacent(r);
        adj.binary_search_by(|x| self.names[x.peer.get()].as_str().cmp(name))
            .ok()
            .map(|i| adj[i])
    }

    /// The link between `x` and `y`.
    pub fn link_between(&self, x: RouterIx, y: RouterIx) -> Option<LinkIx> {
        self.adjacent(x).iter().find(|a| a.peer == y).map(|a| a.link)
    }

    /// Every link.
    pub fn links(&self) -> &[LinkState] {
        &self.links
    }

    /// One link.
    pub fn link(&self, l: LinkIx) -> &LinkState {
        &self.links[l.get()]
    }

    /// One link, to change its state.
    pub fn link_mut(&mut self, l: LinkIx) -> &mut LinkState {
        &mut self.links[l.get()]
    }

    /// Links the topology listed more than once (ignored after the first).
    pub fn duplicate_links(&self) -> usize {
        self.duplicates
    }

    /// Hops from `from` to every router over the links that are up, through routers for which
    /// `alive` holds (`from` itself included); `u32::MAX` where unreachable.
    pub fn hops_from(&self, from: RouterIx, alive: impl Fn(RouterIx) -> bool) -> Vec<u32> {
        let mut dist = vec![u32::MAX; self.len()];
        if !alive(from) {
            return dist;
        }
        dist[from.get()] = 0;
        let mut q = VecDeque::from([from]);
        while let Some(u) = q.pop_front() {
            for a in self.adjacent(u) {
                if self.links[a.link.get()].up && dist[a.peer.get()] == u32::MAX && alive(a.peer) {
                    dist[a.peer.get()] = dist[u.get()] + 1;
                    q.push_back(a.peer);
                }
            }
        }
        dist
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wuos_model::generate::{Generator, generate};

    fn net(spec: &str) -> Network {
        let g: Generator = spec.parse().unwrap();
        Network::new(
            &generate(&g, 1),
            LinkDefaults {
                delay_us: 1000,
                loss_pct: 0.0,
            },
        )
    }

    #[test]
    fn adjacency_is_by_name_and_links_dial_from_the_first_id() {
        let n = net("star:12");
        let hub = n.index("hub").unwrap();
        let names: Vec<&str> = n.adjacent(hub).iter().map(|a| n.name_of(a.peer)).collect();
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(names, sorted, "sorted by name");
        assert_eq!(names[..3], ["r1", "r10", "r11"]);
        let r10 = n.neighbor(hub, "r10").expect("r10 is a neighbor of hub");
        assert_eq!(n.name_of(r10.peer), "r10");
        assert!(n.neighbor(hub, "r13").is_none());
        let l = n.link(r10.link);
        assert_eq!((n.name_of(l.a), n.name_of(l.b)), ("hub", "r10"), "hub < r10");
        assert_eq!(l.direction_from(l.a), 0);
        assert_eq!(l.direction_from(l.b), 1);
        assert_eq!(l.other(l.a), l.b);
        assert_eq!(n.link_between(r10.peer, hub), Some(r10.link));
        assert_eq!(n.loopback(hub), Ipv4Addr::new(10, 254, 0, 1));
    }

    #[test]
    fn hops_follow_up_links_and_live_routers() {
        let mut n = net("line:5");
        let r = |s: &str| n.index(s).unwrap();
        assert_eq!(n.hops_from(r("r1"), |_| true), [0, 1, 2, 3, 4]);
        let r3 = r("r3");
        assert_eq!(n.hops_from(r("r1"), |x| x != r3), [0, 1, u32::MAX, u32::MAX, u32::MAX]);
        let (r4, r5) = (r("r4"), r("r5"));
        let l = n.link_between(r4, r5).unwrap();
        n.link_mut(l).up = false;
        assert_eq!(n.hops_from(r5, |_| true), [u32::MAX, u32::MAX, u32::MAX, u32::MAX, 0]);
    }
}
