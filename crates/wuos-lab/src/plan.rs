//! The lab plan: what a lab is made of, as an ordered list of typed operations grouped in stages.
//! Pure — computed from the topology, its address plan, its static routes and the state of every
//! link, with no I/O — so it can be golden-tested, shown, and diffed.
//!
//! ```text
//!  Input (topology, addresses, routes, link states) ──lab()──▶ Plan: stages of Ops
//!  lab(before), lab(after) ──diff()──▶ the Ops that take a running lab from one to the other
//! ```
//!
//! Stages, in order (empty ones are left out):
//!
//! | stage | ops |
//! |---|---|
//! | cgroups | the lab's cgroup, then one per router with its CPU quota and memory limit |
//! | namespaces | one per router with its sysctls; the relay namespace if a link is impaired |
//! | veths | one pair per link, both ends born in their namespaces; twins into the relay namespace |
//! | addresses | loopbacks; link addresses; interfaces up (or down) |
//! | routes | every router's routes, except over links that are down |
//! | link emulation | token buckets (`tbf`), relay splices (tc `mirred` redirects) |
//! | relays | one user-space delay/jitter/loss relay per impaired link |
//! | offloads | TX checksum offload off on every link end (`--xdp` labs); on each twin of an impaired link, the segmentation offloads its relay cannot carry |
//!
//! Routes are static: they are computed with every link up, and a link that is down only drops
//! its own (the kernel drops them when its interfaces go down) — it is not routed around.
//!
//! [`diff`] pairs the ops of two plans by what they configure (a cgroup, a namespace, an
//! interface, an address, a route, a qdisc, a relay): an op only in the new plan is applied, one
//! only in the old plan is undone (a veth deleted, a route deleted, a qdisc removed, a relay
//! stopped), one whose value changed is re-applied (an MTU set, a relay restarted). Undos come
//! first, newest stage first; then additions and changes in stage order.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::Ipv4Addr;
use std::time::Duration;

use serde::{Serialize, Serializer};
use wuos_model::plan::{AddressPlan, Route, route_plan};
use wuos_model::units::{self, format_duration};
use wuos_model::{LinkParams, Role, Topology};

use crate::names;
use crate::state::LinkRuntime;

/// The loopback's ifindex in every namespace.
const LO_INDEX: u32 = 1;

/// The stages of a plan, in the order [`lab`] puts them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum StageName {
    #[serde(rename = "cgroups")]
    Cgroups,
    #[serde(rename = "namespaces")]
    Namespaces,
    #[serde(rename = "veths")]
    Veths,
    #[serde(rename = "addresses")]
    Addresses,
    #[serde(rename = "routes")]
    Routes,
    #[serde(rename = "link emulation")]
    Emulation,
    #[serde(rename = "relays")]
    Relays,
    #[serde(rename = "offloads")]
    Offloads,
}

impl StageName {
    /// The name progress and timings use (`wuos bench lab` sums some of them).
    pub fn as_str(self) -> &'static str {
        match self {
            StageName::Cgroups => "cgroups",
            StageName::Namespaces => "namespaces",
            StageName::Veths => "veths",
            StageName::Addresses => "addresses",
            StageName::Routes => "routes",
            StageName::Emulation => "link emulation",
            StageName::Relays => "relays",
            StageName::Offloads => "offloads",
        }
    }
}

impl fmt::Display for StageName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Ops that run together; an executor finishes a stage before it starts the next.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Stage {
    pub name: StageName,
    pub ops: Vec<Op>,
}

/// An ordered list of stages.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Plan {
    pub stages: Vec<Stage>,
}

impl Plan {
    /// Groups `ops` into stages: consecutive ops of the same stage form one.
    fn from_ops(ops: impl IntoIterator<Item = (StageName, Op)>) -> Self {
        let mut stages: Vec<Stage> = Vec::new();
        for (name, op) in ops {
            match stages.last_mut() {
                Some(s) if s.name == name => s.ops.push(op),
                _ => stages.push(Stage { name, ops: vec![op] }),
            }
        }
        Self { stages }
    }

    /// Every op, in order.
    pub fn ops(&self) -> impl Iterator<Item = &Op> {
        self.stages.iter().flat_map(|s| &s.ops)
    }

    pub fn is_empty(&self) -> bool {
        self.stages.iter().all(|s| s.ops.is_empty())
    }

    fn staged(&self) -> impl Iterator<Item = (StageName, &Op)> {
        self.stages.iter().flat_map(|s| s.ops.iter().map(move |o| (s.name, o)))
    }
}

/// One end of a veth pair.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct VethEnd {
    pub netns: String,
    pub name: String,
    pub index: u32,
    #[serde(serialize_with = "mac_text")]
    pub mac: [u8; 6],
}

fn mac_text<S: Serializer>(mac: &[u8; 6], s: S) -> Result<S::Ok, S::Error> {
    let text: Vec<String> = mac.iter().map(|b| format!("{b:02x}")).collect();
    s.serialize_str(&text.join(":"))
}

/// The user-space relay of an impaired link (`wuos lab relay`), between two interfaces of the
/// relay namespace.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Relay {
    pub link: usize,
    pub netns: String,
    /// The interface facing the link's `a` end.
    pub a: String,
    pub b: String,
    #[serde(with = "units::duration")]
    pub delay: Duration,
    #[serde(with = "units::duration")]
    pub jitter: Duration,
    pub loss_pct: f64,
    /// Seeds the relay's loss and jitter, stable for (lab, link).
    pub seed: u64,
}

/// One change to the host. Interfaces are named by namespace and ifindex (the index is chosen at
/// creation, see [`names::eth_index`]); `dev` names the same interface for people and for tc.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Op {
    /// Creates a cgroup (and its parents) with limits (none: unlimited).
    CreateCgroup {
        path: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        cpus: Option<f64>,
        #[serde(with = "units::opt_bytes", skip_serializing_if = "Option::is_none")]
        memory: Option<u64>,
    },
    /// Kills what runs in a cgroup and below and removes them.
    DestroyCgroup {
        path: String,
    },
    /// Creates a named network namespace and sets its sysctls from inside.
    CreateNamespace {
        name: String,
        sysctls: BTreeMap<String, String>,
    },
    DeleteNamespace {
        name: String,
    },
    /// A veth pair, both ends born in their namespaces (down); `mtu` None: the kernel's default.
    AddVeth {
        a: VethEnd,
        b: VethEnd,
        #[serde(skip_serializing_if = "Option::is_none")]
        mtu: Option<u32>,
    },
    /// Deletes an interface (a veth end takes its peer with it).
    DeleteLink {
        netns: String,
        dev: String,
        index: u32,
    },
    SetLinkUp {
        netns: String,
        dev: String,
        index: u32,
        up: bool,
    },
    SetMtu {
        netns: String,
        dev: String,
        index: u32,
        mtu: u32,
    },
    AddAddress {
        netns: String,
        dev: String,
        index: u32,
        addr: Ipv4Addr,
        prefix_len: u8,
    },
    /// Adds or replaces a route (protocol 201) with the router's loopback as preferred source (its
    /// address on the link, for routes to link subnets).
    ReplaceRoute {
        netns: String,
        dst: Ipv4Addr,
        prefix_len: u8,
        gateway: Ipv4Addr,
        oif: u32,
        src: Ipv4Addr,
    },
    DeleteRoute {
        netns: String,
        dst: Ipv4Addr,
        prefix_len: u8,
    },
    /// A token bucket on `dev`'s egress (tc `tbf`).
    SetRate {
        netns: String,
        dev: String,
        rate_bps: u64,
        mtu: u32,
    },
    RemoveRate {
        netns: String,
        dev: String,
    },
    /// Splices a path through `via` into `dev`: what `dev` sends leaves through `via`, what
    /// arrives on `via` is received on `dev` (tc `mirred` redirects).
    Splice {
        netns: String,
        dev: String,
        via: String,
    },
    Unsplice {
        netns: String,
        dev: String,
        via: String,
    },
    StartRelay(Relay),
    StopRelay {
        link: usize,
    },
    /// `ethtool -K DEV tx off`.
    TxChecksumOff {
        netns: String,
        dev: String,
    },
    /// `ethtool -K DEV tx-udp_tnl-segmentation off …`: the GSO super-frames a relay's packet
    /// socket cannot carry (tunnels, SCTP, fraglist) are segmented before `dev` sends them
    /// (`wuos_southbound::offloads::UNRELAYABLE_GSO`).
    UnrelayableGsoOff {
        netns: String,
        dev: String,
    },
}

/// What an op configures: two ops with the same key configure the same thing.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Key<'a> {
    Cgroup(&'a str),
    Namespace(&'a str),
    Link(&'a str, u32),
    Up(&'a str, u32),
    Address(&'a str, u32, Ipv4Addr, u8),
    Route(&'a str, Ipv4Addr, u8),
    Rate(&'a str, &'a str),
    Splice(&'a str, &'a str),
    Relay(usize),
    Offload(&'a str, &'a str),
}

impl Op {
    /// What this op configures; `None` for ops that undo (they are not part of a lab's plan).
    fn key(&self) -> Option<Key<'_>> {
        Some(match self {
            Op::CreateCgroup { path, .. } => Key::Cgroup(path),
            Op::CreateNamespace { name, .. } => Key::Namespace(name),
            Op::AddVeth { a, .. } => Key::Link(&a.netns, a.index),
            Op::SetLinkUp { netns, index, .. } => Key::Up(netns, *index),
            Op::AddAddress {
                netns,
                index,
                addr,
                prefix_len,
                ..
            } => Key::Address(netns, *index, *addr, *prefix_len),
            Op::ReplaceRoute {
                netns, dst, prefix_len, ..
            } => Key::Route(netns, *dst, *prefix_len),
            Op::SetRate { netns, dev, .. } => Key::Rate(netns, dev),
            Op::Splice { netns, dev, .. } => Key::Splice(netns, dev),
            Op::StartRelay(r) => Key::Relay(r.link),
            Op::TxChecksumOff { netns, dev } | Op::UnrelayableGsoOff { netns, dev } => Key::Offload(netns, dev),
            Op::DestroyCgroup { .. }
            | Op::DeleteNamespace { .. }
            | Op::DeleteLink { .. }
            | Op::SetMtu { .. }
            | Op::DeleteRoute { .. }
            | Op::RemoveRate { .. }
            | Op::Unsplice { .. }
            | Op::StopRelay { .. } => return None,
        })
    }

    /// The op that takes back what this one made, when anything needs to: a link's address, its
    /// up state or an offload go with its interface.
    pub fn undo(&self) -> Option<Op> {
        Some(match self {
            Op::CreateCgroup { path, .. } => Op::DestroyCgroup { path: path.clone() },
            Op::CreateNamespace { name, .. } => Op::DeleteNamespace { name: name.clone() },
            Op::AddVeth { a, .. } => Op::DeleteLink {
                netns: a.netns.clone(),
                dev: a.name.clone(),
                index: a.index,
            },
            Op::ReplaceRoute {
                netns, dst, prefix_len, ..
            } => Op::DeleteRoute {
                netns: netns.clone(),
                dst: *dst,
                prefix_len: *prefix_len,
            },
            Op::SetRate { netns, dev, .. } => Op::RemoveRate {
                netns: netns.clone(),
                dev: dev.clone(),
            },
            Op::Splice { netns, dev, via } => Op::Unsplice {
                netns: netns.clone(),
                dev: dev.clone(),
                via: via.clone(),
            },
            Op::StartRelay(r) => Op::StopRelay { link: r.link },
            _ => return None,
        })
    }

    /// The ops that take what `old` configured to what `self` configures (same key, new value).
    fn change_from(&self, old: &Op) -> Vec<Op> {
        match (old, self) {
            (Op::AddVeth { a: oa, b: ob, .. }, Op::AddVeth { a, b, mtu }) if oa == a && ob == b => {
                let mtu = mtu.unwrap_or(DEFAULT_MTU);
                [a, b]
                    .into_iter()
                    .map(|e| Op::SetMtu {
                        netns: e.netns.clone(),
                        dev: e.name.clone(),
                        index: e.index,
                        mtu,
                    })
                    .collect()
            }
            // These replace what was there.
            (_, Op::CreateCgroup { .. } | Op::SetLinkUp { .. } | Op::ReplaceRoute { .. } | Op::SetRate { .. }) => {
                vec![self.clone()]
            }
            _ => old.undo().into_iter().chain([self.clone()]).collect(),
        }
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Op::CreateCgroup { path, .. } => write!(f, "create cgroup {path}"),
            Op::DestroyCgroup { path } => write!(f, "destroy cgroup {path}"),
            Op::CreateNamespace { name, .. } => write!(f, "create namespace {name}"),
            Op::DeleteNamespace { name } => write!(f, "delete namespace {name}"),
            Op::AddVeth { a, b, .. } => {
                write!(f, "create veth {}:{} <-> {}:{}", a.netns, a.name, b.netns, b.name)
            }
            Op::DeleteLink { netns, dev, .. } => write!(f, "delete {netns}:{dev}"),
            Op::SetLinkUp { netns, dev, up, .. } => {
                write!(f, "set {netns}:{dev} {}", if *up { "up" } else { "down" })
            }
            Op::SetMtu { netns, dev, mtu, .. } => write!(f, "set the MTU of {netns}:{dev} to {mtu}"),
            Op::AddAddress {
                netns,
                dev,
                addr,
                prefix_len,
                ..
            } => write!(f, "add {addr}/{prefix_len} to {netns}:{dev}"),
            Op::ReplaceRoute {
                netns,
                dst,
                prefix_len,
                gateway,
                ..
            } => write!(f, "route {dst}/{prefix_len} via {gateway} in {netns}"),
            Op::DeleteRoute {
                netns, dst, prefix_len, ..
            } => write!(f, "delete route {dst}/{prefix_len} in {netns}"),
            Op::SetRate {
                netns, dev, rate_bps, ..
            } => write!(f, "rate {rate_bps} bit/s on {netns}:{dev}"),
            Op::RemoveRate { netns, dev } => write!(f, "remove the rate of {netns}:{dev}"),
            Op::Splice { netns, dev, via } => write!(f, "splice {netns}:{dev} through {via}"),
            Op::Unsplice { netns, dev, .. } => write!(f, "unsplice {netns}:{dev}"),
            Op::StartRelay(r) => write!(
                f,
                "start the relay of link {} (delay {}, jitter {}, loss {}%)",
                r.link,
                format_duration(r.delay),
                format_duration(r.jitter),
                r.loss_pct
            ),
            Op::StopRelay { link } => write!(f, "stop the relay of link {link}"),
            Op::TxChecksumOff { netns, dev } => write!(f, "turn TX checksum offload off on {netns}:{dev}"),
            Op::UnrelayableGsoOff { netns, dev } => write!(
                f,
                "turn off the segmentation offloads a relay cannot carry (tunnels, SCTP, fraglist) on {netns}:{dev}"
            ),
        }
    }
}

/// MTU of a veth when the link sets none.
const DEFAULT_MTU: u32 = 1500;

/// The configured state of one link.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LinkConfig {
    /// Administrative state.
    pub up: bool,
    pub params: LinkParams,
}

impl From<&LinkRuntime> for LinkConfig {
    fn from(l: &LinkRuntime) -> Self {
        Self {
            up: l.up,
            params: l.params.clone(),
        }
    }
}

/// What a lab's plan is computed from.
#[derive(Clone, Copy, Debug)]
pub struct Input<'a> {
    pub lab: &'a str,
    /// A validated topology.
    pub topology: &'a Topology,
    pub addresses: &'a AddressPlan,
    /// Every router's routes with every link up ([`static_routes`]).
    pub routes: &'a [Vec<Route>],
    /// One per topology link.
    pub links: &'a [LinkConfig],
    /// Turn TX checksum offload off on every link end (labs whose daemons run XDP).
    pub offloads_off: bool,
}

/// Every router's routes with every link up: the lab's static routes.
pub fn static_routes(topology: &Topology, addresses: &AddressPlan) -> Vec<Vec<Route>> {
    route_plan(topology, addresses, &|_| true)
}

/// The sysctls of a lab namespace.
pub fn sysctls(forwarding: bool) -> BTreeMap<String, String> {
    [
        ("net/ipv4/ip_forward", if forwarding { "1" } else { "0" }),
        // Replies start at TTL 64; long lines and big random graphs need more.
        ("net/ipv4/ip_default_ttl", "255"),
        ("net/ipv4/icmp_ratelimit", "0"),
        ("net/ipv4/conf/all/rp_filter", "0"),
        ("net/ipv4/conf/default/rp_filter", "0"),
        // IPv4 only: no link-local addresses, DAD or MLD on every veth.
        ("net/ipv6/conf/all/disable_ipv6", "1"),
        ("net/ipv6/conf/default/disable_ipv6", "1"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// The two ends of a link: namespace, interface name and number (`eth3` → 3), node index.
struct Ends {
    ns: [String; 2],
    eth: [String; 2],
    num: [usize; 2],
    node: [usize; 2],
}

fn ends(input: &Input<'_>, i: usize) -> Ends {
    let t = input.topology;
    let l = &t.links[i];
    let la = &input.addresses.links[i];
    let num = |s: &str| s.trim_start_matches("eth").parse::<usize>().unwrap_or(0);
    Ends {
        ns: [names::node_netns(input.lab, &l.a), names::node_netns(input.lab, &l.b)],
        eth: [la.a_ifname.clone(), la.b_ifname.clone()],
        num: [num(&la.a_ifname), num(&la.b_ifname)],
        node: [
            t.node_index(&l.a).expect("validated topology"),
            t.node_index(&l.b).expect("validated topology"),
        ],
    }
}

/// The seed of link `i`'s relay: stable for (lab, link).
fn relay_seed(lab: &str, i: usize) -> u64 {
    names::mac(lab, i, 0, 0)
        .iter()
        .fold(i as u64, |h, &x| h.wrapping_mul(31).wrapping_add(u64::from(x)))
}

/// The whole plan of a lab in the state `input` describes.
pub fn lab(input: &Input<'_>) -> Plan {
    let t = input.topology;
    let lab = input.lab;
    let mut ops: Vec<(StageName, Op)> = Vec::new();
    let mut push = |stage, op| ops.push((stage, op));

    push(
        StageName::Cgroups,
        Op::CreateCgroup {
            path: names::lab_cgroup(lab),
            cpus: None,
            memory: None,
        },
    );
    for n in &t.nodes {
        push(
            StageName::Cgroups,
            Op::CreateCgroup {
                path: names::node_cgroup(lab, &n.name),
                cpus: n.cpus,
                memory: n.memory,
            },
        );
    }
    for n in &t.nodes {
        push(
            StageName::Namespaces,
            Op::CreateNamespace {
                name: names::node_netns(lab, &n.name),
                sysctls: sysctls(n.role != Role::Host),
            },
        );
    }
    if input.links.iter().any(|l| l.params.needs_impairment()) {
        push(
            StageName::Namespaces,
            Op::CreateNamespace {
                name: names::relay_netns(lab),
                sysctls: sysctls(false),
            },
        );
    }
    for (i, n) in t.nodes.iter().enumerate() {
        let netns = names::node_netns(lab, &n.name);
        push(
            StageName::Addresses,
            Op::SetLinkUp {
                netns: netns.clone(),
                dev: "lo".into(),
                index: LO_INDEX,
                up: true,
            },
        );
        push(
            StageName::Addresses,
            Op::AddAddress {
                netns,
                dev: "lo".into(),
                index: LO_INDEX,
                addr: input.addresses.loopbacks[i],
                prefix_len: 32,
            },
        );
    }
    let all_ends: Vec<Ends> = (0..t.links.len()).map(|i| ends(input, i)).collect();
    for (i, e) in all_ends.iter().enumerate() {
        link_ops(input, i, e, &mut push);
    }
    for (n, routes) in input.routes.iter().enumerate() {
        let netns = names::node_netns(lab, &t.nodes[n].name);
        for r in routes.iter().filter(|r| input.links[r.link].up) {
            let e = &all_ends[r.link];
            let k = usize::from(e.node[0] != n);
            // Routes to link subnets (a site's WAN addresses, a LAN host's remote LANs) take the
            // node's own address on the link as source: a LAN host's traffic to another LAN must
            // come from its LAN, or the replies would follow the loopback routes, not the overlay.
            let la = &input.addresses.links[r.link];
            let src = if t.pools.links.contains(r.dst) {
                if k == 0 { la.a } else { la.b }
            } else {
                input.addresses.loopbacks[n]
            };
            push(
                StageName::Routes,
                Op::ReplaceRoute {
                    netns: netns.clone(),
                    dst: r.dst,
                    prefix_len: r.prefix_len,
                    gateway: r.gateway,
                    oif: names::eth_index(e.num[k]),
                    src,
                },
            );
        }
    }
    // Stable: ops keep their order within a stage.
    ops.sort_by_key(|(stage, _)| *stage);
    Plan::from_ops(ops)
}

/// Everything that makes link `i`: its veth, addresses, up state, and its emulation.
fn link_ops(input: &Input<'_>, i: usize, e: &Ends, push: &mut impl FnMut(StageName, Op)) {
    let lab = input.lab;
    let cfg = &input.links[i];
    let p = &cfg.params;
    let la = &input.addresses.links[i];
    let addrs = [la.a, la.b];
    let mtu = p.mtu.unwrap_or(DEFAULT_MTU);
    let end = |k: usize| VethEnd {
        netns: e.ns[k].clone(),
        name: e.eth[k].clone(),
        index: names::eth_index(e.num[k]),
        mac: names::mac(lab, i, k as u8, 0),
    };
    push(
        StageName::Veths,
        Op::AddVeth {
            a: end(0),
            b: end(1),
            mtu: p.mtu,
        },
    );
    for (k, addr) in addrs.into_iter().enumerate() {
        let index = names::eth_index(e.num[k]);
        push(
            StageName::Addresses,
            Op::AddAddress {
                netns: e.ns[k].clone(),
                dev: e.eth[k].clone(),
                index,
                addr,
                prefix_len: la.prefix_len,
            },
        );
        push(
            StageName::Addresses,
            Op::SetLinkUp {
                netns: e.ns[k].clone(),
                dev: e.eth[k].clone(),
                index,
                up: cfg.up,
            },
        );
    }
    let spliced = p.needs_impairment();
    let relay_ns = names::relay_netns(lab);
    if spliced {
        for (k, side) in [(0, 0u8), (1, 1u8)] {
            let ix = names::ix_name(&e.eth[k]);
            let ix_index = names::ix_index(e.num[k]);
            let (rname, rindex) = names::relay_if(i, side);
            push(
                StageName::Veths,
                Op::AddVeth {
                    a: VethEnd {
                        netns: e.ns[k].clone(),
                        name: ix.clone(),
                        index: ix_index,
                        mac: names::mac(lab, i, side, 0),
                    },
                    b: VethEnd {
                        netns: relay_ns.clone(),
                        name: rname.clone(),
                        index: rindex,
                        mac: names::mac(lab, i, side, 1),
                    },
                    mtu: Some(mtu),
                },
            );
            push(
                StageName::Addresses,
                Op::SetLinkUp {
                    netns: e.ns[k].clone(),
                    dev: ix.clone(),
                    index: ix_index,
                    up: true,
                },
            );
            push(
                StageName::Addresses,
                Op::SetLinkUp {
                    netns: relay_ns.clone(),
                    dev: rname,
                    index: rindex,
                    up: true,
                },
            );
            // What the router sends on `ethN` leaves through `ixN`: segmented there if the relay's
            // socket could not carry it whole (a VXLAN tunnel's TCP, for one). A stage of its own
            // after the relays, so that the splices still go in one tc batch per namespace.
            push(
                StageName::Offloads,
                Op::UnrelayableGsoOff {
                    netns: e.ns[k].clone(),
                    dev: ix.clone(),
                },
            );
            push(
                StageName::Emulation,
                Op::Splice {
                    netns: e.ns[k].clone(),
                    dev: e.eth[k].clone(),
                    via: ix,
                },
            );
        }
    }
    if let Some(rate_bps) = p.rate_bps {
        // The token bucket sits on the interface whose queue the link's frames pass through.
        for k in 0..2 {
            let dev = if spliced {
                names::ix_name(&e.eth[k])
            } else {
                e.eth[k].clone()
            };
            push(
                StageName::Emulation,
                Op::SetRate {
                    netns: e.ns[k].clone(),
                    dev,
                    rate_bps,
                    mtu,
                },
            );
        }
    }
    if spliced {
        push(
            StageName::Relays,
            Op::StartRelay(Relay {
                link: i,
                netns: relay_ns,
                a: names::relay_if(i, 0).0,
                b: names::relay_if(i, 1).0,
                delay: p.delay.unwrap_or_default(),
                jitter: p.jitter.unwrap_or_default(),
                loss_pct: p.loss_pct.unwrap_or(0.0),
                seed: relay_seed(lab, i),
            }),
        );
    }
    if input.offloads_off {
        for k in 0..2 {
            push(
                StageName::Offloads,
                Op::TxChecksumOff {
                    netns: e.ns[k].clone(),
                    dev: e.eth[k].clone(),
                },
            );
        }
    }
}

/// The ops that take a lab from plan `before` to plan `after` (see the module docs).
pub fn diff(before: &Plan, after: &Plan) -> Plan {
    let old: HashMap<Key<'_>, &Op> = before.ops().filter_map(|o| Some((o.key()?, o))).collect();
    let new: HashMap<Key<'_>, &Op> = after.ops().filter_map(|o| Some((o.key()?, o))).collect();
    let staged: Vec<(StageName, &Op)> = before.staged().collect();
    let undos = staged.iter().rev().filter_map(|&(stage, op)| {
        let gone = op.key().is_some_and(|k| !new.contains_key(&k));
        gone.then(|| op.undo().map(|u| (stage, u))).flatten()
    });
    let changes = after.staged().flat_map(|(stage, op)| {
        let ops = match op.key().and_then(|k| old.get(&k)) {
            None => vec![op.clone()],
            Some(&was) if was == op => Vec::new(),
            Some(&was) => op.change_from(was),
        };
        ops.into_iter().map(move |o| (stage, o))
    });
    Plan::from_ops(undos.chain(changes).collect::<Vec<_>>())
}

#[cfg(test)]
mod tests {
    use super::*;
    use wuos_model::generate::{Generator, generate};
    use wuos_model::plan::address_plan;

    fn plan_of(t: &Topology, links: &[LinkConfig]) -> Plan {
        let a = address_plan(t).unwrap();
        let r = static_routes(t, &a);
        lab(&Input {
            lab: "t",
            topology: t,
            addresses: &a,
            routes: &r,
            links,
            offloads_off: false,
        })
    }

    fn up(t: &Topology) -> Vec<LinkConfig> {
        t.links
            .iter()
            .map(|l| LinkConfig {
                up: true,
                params: l.params.clone(),
            })
            .collect()
    }

    #[test]
    fn stages_come_in_order_and_every_route_leaves_by_a_link_of_its_router() {
        let t = generate(&Generator::Grid(3, 3), 1);
        let p = plan_of(&t, &up(&t));
        let names: Vec<StageName> = p.stages.iter().map(|s| s.name).collect();
        assert_eq!(
            names,
            [
                StageName::Cgroups,
                StageName::Namespaces,
                StageName::Veths,
                StageName::Addresses,
                StageName::Routes
            ]
        );
        let veths = p.ops().filter(|o| matches!(o, Op::AddVeth { .. })).count();
        assert_eq!(veths, t.links.len());
        for op in p.ops() {
            if let Op::ReplaceRoute { netns, oif, .. } = op {
                let here = p
                    .ops()
                    .any(|o| matches!(o, Op::AddAddress { netns: n, index, .. } if n == netns && index == oif));
                assert!(here, "{op} leaves by an interface its router has");
            }
        }
    }

    #[test]
    fn the_diff_of_a_plan_with_itself_is_empty_and_a_diff_undoes_what_is_gone() {
        let t = generate(&Generator::Line(3), 1);
        let links = up(&t);
        let p = plan_of(&t, &links);
        assert!(diff(&p, &p).is_empty());
        let mut down = links.clone();
        down[0].up = false;
        let d = diff(&p, &plan_of(&t, &down));
        assert!(
            d.ops()
                .all(|o| matches!(o, Op::DeleteRoute { .. } | Op::SetLinkUp { up: false, .. }))
        );
        assert_eq!(d.stages[0].name, StageName::Routes, "undos first");
        let back = diff(&plan_of(&t, &down), &p);
        assert!(
            back.ops()
                .all(|o| matches!(o, Op::ReplaceRoute { .. } | Op::SetLinkUp { up: true, .. }))
        );
        assert_eq!(
            back.stages.last().unwrap().name,
            StageName::Routes,
            "routes once links are up"
        );
    }
}
