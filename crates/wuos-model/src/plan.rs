//! Addressing and routes, computed purely from a [`Topology`].
//!
//! * Link `i` gets the `i`-th subnet of `pools.links`: with /31 the two
//!   addresses of the subnet, with /30 its `.1` and `.2`; end `a` gets the
//!   lower address.
//! * Node `i` gets loopback `pools.loopbacks.addr + i + 1` (a /32).
//! * On every node, interfaces are numbered `eth0`, `eth1`, ... in topology
//!   link order.
//! * Routes are hop-count shortest paths (see [`route_plan`]), aggregated
//!   into one route for the whole loopback pool plus /32 exceptions.

use std::collections::VecDeque;
use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

use crate::topology::{Ipv4Net, Topology};

/// Addresses of one link.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LinkAddrs {
    /// Address of end `a`.
    pub a: Ipv4Addr,
    /// Address of end `b`.
    pub b: Ipv4Addr,
    /// Prefix length of the link subnet (31 or 30).
    pub prefix_len: u8,
    /// Interface name on node `a`, e.g. `eth0`.
    pub a_ifname: String,
    /// Interface name on node `b`.
    pub b_ifname: String,
}

impl LinkAddrs {
    /// The link's subnet (its addresses with the host bits cleared).
    pub fn subnet(&self) -> Ipv4Net {
        let mask = Ipv4Net {
            addr: self.a,
            prefix_len: self.prefix_len,
        }
        .mask();
        Ipv4Net {
            addr: Ipv4Addr::from(u32::from(self.a) & mask),
            prefix_len: self.prefix_len,
        }
    }
}

/// All addresses of a topology.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AddressPlan {
    /// Loopback (/32) of every node, by node index.
    pub loopbacks: Vec<Ipv4Addr>,
    /// Addresses of every link, by link index.
    pub links: Vec<LinkAddrs>,
}

/// A topology that cannot be addressed (run [`Topology::validate`] first to
/// get a located, more detailed error).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    /// `pools.link_prefix_len` is neither 31 nor 30.
    #[error("link prefix /{0} is not supported; use 31 or 30")]
    BadLinkPrefix(u8),
    /// Not enough link subnets.
    #[error("link pool {net} has room for {capacity} links but the topology has {needed}; use a larger link pool")]
    LinkPoolTooSmall {
        /// The pool.
        net: Ipv4Net,
        /// Links in the topology.
        needed: u64,
        /// Links that fit.
        capacity: u64,
    },
    /// Not enough loopbacks.
    #[error(
        "loopback pool {net} has room for {capacity} nodes but the topology has {needed}; use a larger loopback pool"
    )]
    LoopbackPoolTooSmall {
        /// The pool.
        net: Ipv4Net,
        /// Nodes in the topology.
        needed: u64,
        /// Nodes that fit.
        capacity: u64,
    },
    /// A link names a node that does not exist.
    #[error("link {link} refers to unknown node \"{name}\"; validate the topology first")]
    UnknownNode {
        /// Link index.
        link: usize,
        /// The unknown name.
        name: String,
    },
}

/// Assigns link addresses, interface names and loopbacks.
pub fn address_plan(t: &Topology) -> Result<AddressPlan, PlanError> {
    let pools = &t.pools;
    let step: u64 = match pools.link_prefix_len {
        31 => 2,
        30 => 4,
        other => return Err(PlanError::BadLinkPrefix(other)),
    };
    let (needed, capacity) = (t.links.len() as u64, pools.link_capacity());
    if needed > capacity {
        return Err(PlanError::LinkPoolTooSmall {
            net: pools.links,
            needed,
            capacity,
        });
    }
    let (needed, capacity) = (t.nodes.len() as u64, pools.loopback_capacity());
    if needed > capacity {
        return Err(PlanError::LoopbackPoolTooSmall {
            net: pools.loopbacks,
            needed,
            capacity,
        });
    }
    // Both capacity checks passed, so every nth() below is inside its pool.
    let nth = |net: &Ipv4Net, n: u64| net.nth(n).unwrap_or(Ipv4Addr::UNSPECIFIED);

    let loopbacks = (0..t.nodes.len())
        .map(|i| nth(&pools.loopbacks, i as u64 + 1))
        .collect();

    let index = t.name_map();
    let mut ifcount = vec![0usize; t.nodes.len()];
    let mut links = Vec::with_capacity(t.links.len());
    for (i, l) in t.links.iter().enumerate() {
        let end = |name: &str| {
            index.get(name).copied().ok_or_else(|| PlanError::UnknownNode {
                link: i,
                name: name.to_string(),
            })
        };
        let (a, b) = (end(&l.a)?, end(&l.b)?);
        let mut ifname = |n: usize| {
            ifcount[n] += 1;
            format!("eth{}", ifcount[n] - 1)
        };
        let a_ifname = ifname(a);
        let b_ifname = ifname(b);
        let base = i as u64 * step;
        let first = if step == 4 { 1 } else { 0 };
        links.push(LinkAddrs {
            a: nth(&pools.links, base + first),
            b: nth(&pools.links, base + first + 1),
            prefix_len: pools.link_prefix_len,
            a_ifname,
            b_ifname,
        });
    }
    Ok(AddressPlan { loopbacks, links })
}

/// A route to install on a node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    /// Destination network address.
    pub dst: Ipv4Addr,
    /// Destination prefix length (the loopback pool's, or 32).
    pub prefix_len: u8,
    /// Index of the link to leave by.
    pub link: usize,
    /// The far end's address on that link.
    pub gateway: Ipv4Addr,
}

/// Routes to every other node's loopback, by node.
///
/// Paths are hop-count shortest paths over the links for which `link_up`
/// is true, computed by one BFS per node (O(N·(N+E))). Ties go to the
/// neighbour with the lowest node index. For each node, the next hop used
/// by most destinations (ties: lowest neighbour index) gets one aggregate
/// route for all of `pools.loopbacks`, and every destination reached by
/// another next hop gets a /32 (longest-prefix match makes it win); the
/// aggregate comes first, then /32s in node order.
///
/// A host (role `host`) also gets a route for the service VIP pool (10.255.0.0/16) via its
/// lowest-index neighbour.
///
/// A node with no neighbours gets no routes. When some destinations are
/// unreachable from a node (the network is partitioned), that node gets no
/// aggregate, only /32s for reachable destinations, so traffic to the
/// unreachable ones fails fast instead of looping.
pub fn route_plan(t: &Topology, plan: &AddressPlan, link_up: &dyn Fn(usize) -> bool) -> Vec<Vec<Route>> {
    let n = t.nodes.len();
    let ends = t.link_ends();
    let mut adj: Vec<Vec<(usize, usize)>> = vec![Vec::new(); n];
    for (l, e) in ends.iter().enumerate() {
        if let Some((a, b)) = *e
            && a != b
            && l < plan.links.len()
            && link_up(l)
        {
            adj[a].push((b, l));
            adj[b].push((a, l));
        }
    }
    for list in &mut adj {
        list.sort_unstable();
    }

    const NONE: usize = usize::MAX;
    let mut hop = vec![NONE; n]; // first link on the path from the source
    let mut queue = VecDeque::with_capacity(n);
    let mut count = vec![0usize; t.links.len()];
    let mut routes = Vec::with_capacity(n);
    for s in 0..n {
        if adj[s].is_empty() {
            routes.push(Vec::new());
            continue;
        }
        hop.fill(NONE);
        queue.clear();
        hop[s] = NONE - 1; // marks the source as seen
        for &(v, l) in &adj[s] {
            if hop[v] == NONE {
                hop[v] = l;
                queue.push_back(v);
            }
        }
        while let Some(u) = queue.pop_front() {
            for &(w, _) in &adj[u] {
                if hop[w] == NONE {
                    hop[w] = hop[u];
                    queue.push_back(w);
                }
            }
        }
        hop[s] = NONE;

        let mut reachable = 0;
        for &h in &hop {
            if h != NONE {
                count[h] += 1;
                reachable += 1;
            }
        }
        let gateway = |l: usize| match ends[l] {
            Some((a, _)) if a == s => plan.links[l].b,
            _ => plan.links[l].a,
        };
        let mut best = adj[s][0].1;
        for &(_, l) in &adj[s] {
            if count[l] > count[best] {
                best = l;
            }
        }
        for &(_, l) in &adj[s] {
            count[l] = 0;
        }

        let mut mine = Vec::new();
        let aggregate = reachable == n - 1;
        if aggregate {
            mine.push(Route {
                dst: t.pools.loopbacks.addr,
                prefix_len: t.pools.loopbacks.prefix_len,
                link: best,
                gateway: gateway(best),
            });
        }
        for (d, &h) in hop.iter().enumerate() {
            if h != NONE && !(aggregate && h == best) {
                mine.push(Route {
                    dst: plan.loopbacks[d],
                    prefix_len: 32,
                    link: h,
                    gateway: gateway(h),
                });
            }
        }
        // A host reaches services (their VIPs) through its first router; routers learn where
        // each VIP leads from their controllers.
        if t.nodes[s].role == crate::topology::Role::Host {
            let l = adj[s][0].1;
            mine.push(Route {
                dst: crate::topology::SERVICE_VIP_POOL.addr,
                prefix_len: crate::topology::SERVICE_VIP_POOL.prefix_len,
                link: l,
                gateway: gateway(l),
            });
            // Behind an SD-WAN site, remote LANs (link subnets) are reached through the site's
            // overlays.
            let (router, _) = adj[s][0];
            if (0..t.links.len())
                .any(|m| t.link_underlay(m).is_some() && matches!(ends[m], Some((a, b)) if a == router || b == router))
            {
                mine.push(Route {
                    dst: t.pools.links.addr,
                    prefix_len: t.pools.links.prefix_len,
                    link: l,
                    gateway: gateway(l),
                });
            }
        }
        routes.push(mine);
    }
    underlay_routes(t, plan, link_up, &mut routes);
    routes
}

/// Routes to the subnets of underlay attachment links (a link of an underlay with a node that is
/// not one of its provider routers at one end: an SD-WAN site's WAN address), for every node of
/// that underlay, over that underlay's links only and through its provider routers only. So a
/// tunnel between two sites' addresses on underlay U crosses U, whatever else joins them.
/// Shortest paths by hop count; ties to the lowest link index.
fn underlay_routes(t: &Topology, plan: &AddressPlan, link_up: &dyn Fn(usize) -> bool, routes: &mut [Vec<Route>]) {
    let ends = t.link_ends();
    let underlays: Vec<&str> = {
        let mut v: Vec<&str> = (0..t.links.len()).filter_map(|l| t.link_underlay(l)).collect();
        v.sort_unstable();
        v.dedup();
        v
    };
    let provider = |i: usize| t.nodes[i].underlay.is_some();
    for u in underlays {
        let mut adj: Vec<Vec<(usize, usize)>> = vec![Vec::new(); t.nodes.len()];
        let mut attachments = Vec::new();
        for (l, e) in ends.iter().enumerate() {
            let Some((a, b)) = *e else { continue };
            if t.link_underlay(l) != Some(u) || !link_up(l) || l >= plan.links.len() {
                continue;
            }
            adj[a].push((b, l));
            adj[b].push((a, l));
            match (provider(a), provider(b)) {
                (true, false) => attachments.push((l, a)),
                (false, true) => attachments.push((l, b)),
                _ => {}
            }
        }
        for (l, p) in attachments {
            let subnet = plan.links[l].subnet();
            let mut seen = vec![false; t.nodes.len()];
            let (a, b) = ends[l].unwrap_or_default();
            seen[a] = true;
            seen[b] = true;
            let mut queue = VecDeque::from([p]);
            while let Some(x) = queue.pop_front() {
                for &(y, m) in &adj[x] {
                    if seen[y] {
                        continue;
                    }
                    seen[y] = true;
                    let gateway = match ends[m] {
                        Some((a, _)) if a == x => plan.links[m].a,
                        _ => plan.links[m].b,
                    };
                    routes[y].push(Route {
                        dst: subnet.addr,
                        prefix_len: subnet.prefix_len,
                        link: m,
                        gateway,
                    });
                    if provider(y) {
                        queue.push_back(y);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::generate::{Generator, generate};
    use crate::topology::{Link, LinkParams, Node, Pools, Role};

    fn gen_spec(spec: &str) -> Topology {
        generate(&spec.parse::<Generator>().unwrap(), 42)
    }

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    /// Follows `routes` (and connected subnets) from `src` to the node that holds `dst` on one
    /// of its links; the nodes visited.
    fn walk_to_link_addr(
        t: &Topology,
        plan: &AddressPlan,
        routes: &[Vec<Route>],
        src: usize,
        dst: Ipv4Addr,
    ) -> Vec<usize> {
        let ends = t.link_ends();
        let mut path = vec![src];
        let mut at = src;
        loop {
            assert!(path.len() <= t.nodes.len(), "loop towards {dst}: {path:?}");
            let mut next = None;
            for (l, e) in ends.iter().enumerate() {
                let (a, b) = e.unwrap();
                let la = &plan.links[l];
                if (a == at && la.a == dst) || (b == at && la.b == dst) {
                    return path;
                }
                if (a == at || b == at) && la.subnet().contains(dst) {
                    next = Some(if a == at { b } else { a });
                }
            }
            let next = next.unwrap_or_else(|| {
                let r = routes[at]
                    .iter()
                    .filter(|r| {
                        Ipv4Net {
                            addr: r.dst,
                            prefix_len: r.prefix_len,
                        }
                        .contains(dst)
                    })
                    .max_by_key(|r| r.prefix_len)
                    .unwrap_or_else(|| panic!("{} has no route to {dst}", t.nodes[at].name));
                let (a, b) = ends[r.link].unwrap();
                if a == at { b } else { a }
            });
            path.push(next);
            at = next;
        }
    }

    #[test]
    fn sdwan_wan_addresses_are_routed_over_their_own_underlay_only() {
        let t = gen_spec("sdwan:4:2");
        let plan = address_plan(&t).unwrap();
        let routes = route_plan(&t, &plan, &|_| true);
        let ends = t.link_ends();
        let wan = |site: &str, u: &str| -> Ipv4Addr {
            let i = t.node_index(site).unwrap();
            (0..t.links.len())
                .find_map(|l| match ends[l] {
                    Some((a, _)) if a == i && t.link_underlay(l) == Some(u) => Some(plan.links[l].a),
                    Some((_, b)) if b == i && t.link_underlay(l) == Some(u) => Some(plan.links[l].b),
                    _ => None,
                })
                .unwrap()
        };
        for (src, dst) in [("e1", "e2"), ("e1", "e4"), ("e3", "e2"), ("e4", "e1")] {
            for u in ["mpls", "inet"] {
                let path = walk_to_link_addr(&t, &plan, &routes, t.node_index(src).unwrap(), wan(dst, u));
                let names: Vec<&str> = path.iter().map(|&i| t.nodes[i].name.as_str()).collect();
                assert_eq!(names.last(), Some(&dst), "{src} -> {dst} over {u}: {names:?}");
                for &i in &path[1..path.len() - 1] {
                    assert_eq!(
                        t.nodes[i].underlay.as_deref(),
                        Some(u),
                        "{src} -> {dst} over {u}: {names:?}"
                    );
                }
            }
        }
        // A LAN host sends remote LANs (link subnets) to its edge; other hosts do not get it.
        let h1 = t.node_index("h1").unwrap();
        assert!(
            routes[h1]
                .iter()
                .any(|r| r.dst == t.pools.links.addr && r.prefix_len == t.pools.links.prefix_len)
        );
        let plain = Topology {
            name: None,
            nodes: vec![
                Node::new("r1", Role::Edge),
                Node::new("r2", Role::Edge),
                Node::new("h1", Role::Host),
            ],
            links: vec![Link::new("r1", "r2"), Link::new("r1", "h1")],
            pools: Pools::default(),
        };
        let plain_plan = address_plan(&plain).unwrap();
        let plain_routes = route_plan(&plain, &plain_plan, &|_| true);
        assert_eq!(
            plain_routes[2].len(),
            2,
            "loopbacks and VIPs only: {:?}",
            plain_routes[2]
        );
        assert!(plain_routes.iter().flatten().all(|r| r.dst != plain.pools.links.addr));
    }

    /// Follows `routes` hop by hop with longest-prefix match, from node
    /// `src` towards `dst`, checking each gateway. Returns the nodes visited
    /// (including `src` and the final node) or `None` if a node has no
    /// matching route or the packet loops.
    fn forward(
        t: &Topology,
        plan: &AddressPlan,
        routes: &[Vec<Route>],
        link_up: &dyn Fn(usize) -> bool,
        src: usize,
        dst: Ipv4Addr,
    ) -> Option<Vec<usize>> {
        let ends = t.link_ends();
        let mut path = vec![src];
        let mut at = src;
        while plan.loopbacks[at] != dst {
            if path.len() > t.nodes.len() {
                return None; // loop
            }
            let r = routes[at]
                .iter()
                .filter(|r| {
                    let net = Ipv4Net {
                        addr: r.dst,
                        prefix_len: r.prefix_len,
                    };
                    net.contains(dst)
                })
                .max_by_key(|r| r.prefix_len)?;
            assert!(link_up(r.link), "route over a down link");
            let (a, b) = ends[r.link].unwrap();
            let next = if a == at {
                b
            } else {
                assert_eq!(b, at, "route leaves by a link not on this node");
                a
            };
            let far = if a == at {
                plan.links[r.link].b
            } else {
                plan.links[r.link].a
            };
            assert_eq!(r.gateway, far, "gateway is not the far end");
            path.push(next);
            at = next;
        }
        Some(path)
    }

    fn hops(t: &Topology) -> Vec<Vec<usize>> {
        // All-pairs hop counts by plain BFS, as a reference.
        let adj = t.neighbors();
        (0..t.nodes.len())
            .map(|s| {
                let mut d = vec![usize::MAX; t.nodes.len()];
                d[s] = 0;
                let mut q = VecDeque::from([s]);
                while let Some(u) = q.pop_front() {
                    for &(v, _) in &adj[u] {
                        if d[v] == usize::MAX {
                            d[v] = d[u] + 1;
                            q.push_back(v);
                        }
                    }
                }
                d
            })
            .collect()
    }

    fn assert_full_shortest_reachability(t: &Topology) {
        let plan = address_plan(t).unwrap();
        let up = |_| true;
        let routes = route_plan(t, &plan, &up);
        let dist = hops(t);
        for (s, dist_s) in dist.iter().enumerate() {
            for (d, &dist_sd) in dist_s.iter().enumerate() {
                let path = forward(t, &plan, &routes, &up, s, plan.loopbacks[d])
                    .unwrap_or_else(|| panic!("{} cannot reach {}", t.nodes[s].name, t.nodes[d].name));
                assert_eq!(*path.last().unwrap(), d);
                assert_eq!(path.len() - 1, dist_sd, "path {s}->{d} is not shortest");
            }
        }
    }

    #[test]
    fn addresses() {
        let t = gen_spec("line:3");
        let p = address_plan(&t).unwrap();
        assert_eq!(p.loopbacks, [ip("10.254.0.1"), ip("10.254.0.2"), ip("10.254.0.3")]);
        assert_eq!(
            p.links[0],
            LinkAddrs {
                a: ip("10.0.0.0"),
                b: ip("10.0.0.1"),
                prefix_len: 31,
                a_ifname: "eth0".into(),
                b_ifname: "eth0".into()
            }
        );
        assert_eq!(
            p.links[1],
            LinkAddrs {
                a: ip("10.0.0.2"),
                b: ip("10.0.0.3"),
                prefix_len: 31,
                a_ifname: "eth1".into(),
                b_ifname: "eth0".into()
            }
        );

        let mut t = gen_spec("star:3");
        t.pools.link_prefix_len = 30;
        t.pools.links = "192.168.0.0/24".parse().unwrap();
        let p = address_plan(&t).unwrap();
        assert_eq!((p.links[2].a, p.links[2].b), (ip("192.168.0.9"), ip("192.168.0.10")));
        assert_eq!(p.links[2].prefix_len, 30);
        assert_eq!(
            (p.links[2].a_ifname.as_str(), p.links[2].b_ifname.as_str()),
            ("eth2", "eth0")
        );
        let json = serde_json::to_string(&p).unwrap();
        assert_eq!(serde_json::from_str::<AddressPlan>(&json).unwrap(), p);
    }

    #[test]
    fn address_errors() {
        let mut t = gen_spec("line:5");
        t.pools.links = "10.0.0.0/30".parse().unwrap();
        assert!(matches!(
            address_plan(&t),
            Err(PlanError::LinkPoolTooSmall {
                needed: 4,
                capacity: 2,
                ..
            })
        ));
        t.pools = Pools::default();
        t.pools.loopbacks = "10.254.0.0/30".parse().unwrap();
        assert!(matches!(
            address_plan(&t),
            Err(PlanError::LoopbackPoolTooSmall {
                needed: 5,
                capacity: 3,
                ..
            })
        ));
        t.pools = Pools::default();
        t.pools.link_prefix_len = 29;
        assert_eq!(address_plan(&t), Err(PlanError::BadLinkPrefix(29)));
        t.pools = Pools::default();
        t.links[0].b = "nope".into();
        assert!(matches!(address_plan(&t), Err(PlanError::UnknownNode { link: 0, .. })));
    }

    #[test]
    fn line3_routes() {
        let t = gen_spec("line:3");
        let plan = address_plan(&t).unwrap();
        let routes = route_plan(&t, &plan, &|_| true);
        let agg = |link, gw| Route {
            dst: ip("10.254.0.0"),
            prefix_len: 16,
            link,
            gateway: ip(gw),
        };
        // r1 and r3 are leaves: one aggregate each.
        assert_eq!(routes[0], [agg(0, "10.0.0.1")]);
        assert_eq!(routes[2], [agg(1, "10.0.0.2")]);
        // r2: tie between r1 and r3; the lower index (r1) gets the aggregate.
        assert_eq!(
            routes[1],
            [
                agg(0, "10.0.0.0"),
                Route {
                    dst: ip("10.254.0.3"),
                    prefix_len: 32,
                    link: 1,
                    gateway: ip("10.0.0.3")
                }
            ]
        );
    }

    #[test]
    fn aggregation_picks_the_busiest_next_hop() {
        // r1 - r2 - r3 - r4 plus r1 - r5: from r1, three destinations go via r2.
        let node = |n: &str| Node {
            name: n.into(),
            role: Role::Edge,
            cpus: None,
            memory: None,
            underlay: None,
        };
        let link = |a: &str, b: &str| Link {
            a: a.into(),
            b: b.into(),
            params: LinkParams::default(),
            underlay: None,
        };
        let t = Topology {
            name: None,
            nodes: ["r1", "r2", "r3", "r4", "r5"].map(node).to_vec(),
            links: vec![link("r1", "r5"), link("r1", "r2"), link("r2", "r3"), link("r3", "r4")],
            pools: Pools::default(),
        };
        t.validate().unwrap();
        let plan = address_plan(&t).unwrap();
        let routes = route_plan(&t, &plan, &|_| true);
        assert_eq!(routes[0].len(), 2);
        assert_eq!((routes[0][0].prefix_len, routes[0][0].link), (16, 1));
        assert_eq!(
            (routes[0][1].dst, routes[0][1].prefix_len, routes[0][1].link),
            (ip("10.254.0.5"), 32, 0)
        );
        // A star's hub: one aggregate and N-1 host routes.
        let t = gen_spec("star:6");
        let plan = address_plan(&t).unwrap();
        let routes = route_plan(&t, &plan, &|_| true);
        assert_eq!(routes[0].len(), 6);
        assert!(routes[1..].iter().all(|r| r.len() == 1 && r[0].prefix_len == 16));
        assert_full_shortest_reachability(&t);
    }

    #[test]
    fn grid_every_node_reaches_every_loopback() {
        assert_full_shortest_reachability(&gen_spec("grid:3x3"));
        assert_full_shortest_reachability(&gen_spec("torus:4x5"));
        assert_full_shortest_reachability(&gen_spec("tree:3x3"));
        assert_full_shortest_reachability(&gen_spec("random:60"));
        assert_full_shortest_reachability(&gen_spec("random:60:waxman:0.2:0.3"));
    }

    #[test]
    fn hosts_reach_service_vips_through_their_router_and_routers_get_no_such_route() {
        let t = crate::file::parse(
            "[[node]]\nname = \"h1\"\nrole = \"host\"\n[[node]]\nname = \"r1\"\nrole = \"edge\"\n[[node]]\nname = \"r2\"\nrole = \"fog\"\n\
             [[link]]\na = \"h1\"\nb = \"r1\"\n[[link]]\na = \"r1\"\nb = \"r2\"\n",
            "t",
        )
        .unwrap();
        let plan = address_plan(&t).unwrap();
        let routes = route_plan(&t, &plan, &|_| true);
        let vip = |r: &Route| r.dst == Ipv4Addr::new(10, 255, 0, 0) && r.prefix_len == 16;
        let h1: Vec<&Route> = routes[0].iter().filter(|r| vip(r)).collect();
        assert_eq!(h1.len(), 1, "{:?}", routes[0]);
        assert_eq!((h1[0].link, h1[0].gateway), (0, plan.links[0].b));
        assert!(!routes[1].iter().any(vip) && !routes[2].iter().any(vip));
    }

    #[test]
    fn link_down_splits_a_line() {
        let t = gen_spec("line:4");
        let plan = address_plan(&t).unwrap();
        let up = |l: usize| l != 1; // r2 - r3 is down
        let routes = route_plan(&t, &plan, &up);
        // No aggregates on a partitioned network: only /32s for what is reachable.
        assert_eq!(
            routes[0],
            [Route {
                dst: plan.loopbacks[1],
                prefix_len: 32,
                link: 0,
                gateway: plan.links[0].b
            }]
        );
        assert_eq!(
            routes[1],
            [Route {
                dst: plan.loopbacks[0],
                prefix_len: 32,
                link: 0,
                gateway: plan.links[0].a
            }]
        );
        for (s, d, ok) in [
            (0, 1, true),
            (1, 0, true),
            (2, 3, true),
            (0, 2, false),
            (1, 2, false),
            (3, 0, false),
        ] {
            let got = forward(&t, &plan, &routes, &up, s, plan.loopbacks[d]);
            assert_eq!(got.is_some(), ok, "{s} -> {d}: {got:?}");
        }
        // All links down: nobody has neighbours, nobody has routes.
        let routes = route_plan(&t, &plan, &|_| false);
        assert!(routes.iter().all(Vec::is_empty));
    }

    #[test]
    fn route_plan_aggregates_on_a_large_graph() {
        let t = gen_spec("random:1000");
        let plan = address_plan(&t).unwrap();
        let routes = route_plan(&t, &plan, &|_| true);
        assert_eq!(routes.len(), 1000);
        let total: usize = routes.iter().map(Vec::len).sum();
        assert!(total < 1000 * 1000, "aggregation should save routes: {total}");
        // Spot-check forwarding on the big one.
        let up = |_| true;
        for (s, d) in [(0, 999), (999, 0), (500, 17), (123, 456)] {
            let p = forward(&t, &plan, &routes, &up, s, plan.loopbacks[d]).unwrap();
            assert_eq!(*p.last().unwrap(), d);
        }
    }
}
