//! What one edge's kernel holds for the desired state: its tunnels (one VXLAN device per
//! (overlay, underlay) with static FDB and neighbour entries for the remote edges), one routing
//! table per overlay, the `ip rule`s that lead into those tables, and the nftables marks and MSS
//! clamps. All numbers are derived from the overlay's, class's and site's stable ids:
//!
//! | what | value |
//! |---|---|
//! | tunnel interface | `wo{overlay id}-{underlay}` |
//! | segment | `overlay id × 8 + underlay position` |
//! | VNI | the segment |
//! | inner /24 | `100.64.0.0/10`, the segment-th /24; the edge's address is its site index in it |
//! | tunnel MAC | `02:57:SS:SS:00:II` (segment, site index) |
//! | routing table | `10000 + overlay id` |
//! | `fwmark` rule | priority `10000 + class id`, mark `0x57000000 | class id` |
//! | LAN rule (`iif LAN`) | priority `20000 + overlay id` |
//! | tunnel rule (`iif TUNNEL`) | priority `23000 + overlay id` |
//! | shortcuts ([`shortcuts`], the edge adds them) | priorities `10000`, `20000`, `25048` |

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};
use wuos_model::topology::Ipv4Net;

use crate::class::{MatchRule, Proto, TrafficClass};
use crate::desired::Desired;
use crate::inventory::{Inventory, Site};
use crate::overlay::Overlay;
use crate::steer::{self, Candidate, ClassPlan, Steering};

pub const TABLE_BASE: u32 = 10_000;
pub const CLASS_RULE_BASE: u32 = 10_000;
pub const LAN_RULE_BASE: u32 = 20_000;
pub const TUNNEL_RULE_BASE: u32 = 23_000;
/// Every wuos SD-WAN rule has a priority in this range (and nothing else of wuos does).
pub const RULE_PRIORITIES: std::ops::RangeInclusive<u32> = SKIP_CLASSES..=END_OF_RULES;
/// The shortcut over the class rules (see [`shortcuts`]).
pub const SKIP_CLASSES: u32 = CLASS_RULE_BASE;
/// The shortcut over the `iif` rules for locally sent packets (see [`shortcuts`]).
pub const SKIP_IIF: u32 = LAN_RULE_BASE;
/// The `nop` after the last wuos rule, where the shortcuts land.
pub const END_OF_RULES: u32 = TUNNEL_RULE_BASE + crate::desired::MAX_OVERLAYS as u32 + 1;
pub const VXLAN_PORT: u16 = 4789;
/// Outer IPv4 (20) + UDP (8) + VXLAN (8) + inner Ethernet (14).
pub const VXLAN_OVERHEAD: u32 = 50;
pub const INNER_POOL: Ipv4Net = Ipv4Net {
    addr: Ipv4Addr::new(100, 64, 0, 0),
    prefix_len: 10,
};
/// The nftables table that holds the marks and clamps (`ip wuos_sdwan`).
pub const NFT_TABLE: &str = "wuos_sdwan";

/// A remote edge on a tunnel. Two peers are the same when their addresses and MAC are: the site
/// name is a label (a kernel read back does not know it).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Peer {
    pub site: String,
    /// Its WAN address on the tunnel's underlay (the FDB entry's `dst`).
    pub remote: Ipv4Addr,
    /// Its address on the tunnel's inner segment.
    pub inner: Ipv4Addr,
    pub mac: [u8; 6],
}

impl Peer {
    fn key(&self) -> (Ipv4Addr, Ipv4Addr, [u8; 6]) {
        (self.remote, self.inner, self.mac)
    }
}

impl PartialEq for Peer {
    fn eq(&self, other: &Peer) -> bool {
        self.key() == other.key()
    }
}

impl Eq for Peer {}

impl PartialOrd for Peer {
    fn partial_cmp(&self, other: &Peer) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Peer {
    fn cmp(&self, other: &Peer) -> std::cmp::Ordering {
        self.key().cmp(&other.key())
    }
}

/// One VXLAN device.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tunnel {
    pub name: String,
    pub overlay: String,
    pub underlay: String,
    pub vni: u32,
    pub local: Ipv4Addr,
    /// The WAN interface it runs over.
    pub dev: String,
    pub mtu: u32,
    pub mac: [u8; 6],
    /// This edge's inner address (a /24).
    pub inner: Ipv4Addr,
    pub peers: BTreeSet<Peer>,
}

impl Tunnel {
    /// Whether the device itself (not its peers) is the same.
    pub fn same_device(&self, other: &Tunnel) -> bool {
        (
            &self.name, self.vni, self.local, &self.dev, self.mtu, self.mac, self.inner,
        ) == (
            &other.name,
            other.vni,
            other.local,
            &other.dev,
            other.mtu,
            other.mac,
            other.inner,
        )
    }
}

/// A route in an overlay's table.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Route {
    pub table: u32,
    pub dst: (Ipv4Addr, u8),
    pub via: Ipv4Addr,
    pub dev: String,
}

/// What an `ip rule` matches.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Selector {
    Fwmark(u32),
    Iif(String),
    /// `not fwmark MARK/MASK`: packets whose mark, masked, is not `mark`.
    NotFwmark {
        mark: u32,
        mask: u32,
    },
    /// Every packet.
    All,
}

/// What an `ip rule` does with a packet it matches.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Look the destination up in the rule's `table`.
    #[default]
    Lookup,
    /// Go on at the rule of this priority (a later one; the kernel refuses a backward jump).
    Goto(u32),
    /// Nothing: the walk goes on (a target for gotos).
    Nop,
}

impl Action {
    pub fn is_lookup(&self) -> bool {
        *self == Action::Lookup
    }
}

/// One `ip rule`. `table` is 0 unless the action is a lookup. (The action is not sent when it
/// is a lookup, so pieces read the same as before it existed.)
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Rule {
    pub priority: u32,
    pub selector: Selector,
    pub table: u32,
    #[serde(default, skip_serializing_if = "Action::is_lookup")]
    pub action: Action,
}

/// The rules an edge that holds any SD-WAN state adds before and after its own, so that a
/// packet does not walk rules that cannot match it. The kernel walks the rule list in priority
/// order for every route lookup, and an edge with 500 overlays and 500 steered classes holds
/// about 3,000 wuos rules: each probe the edge sends, and each unmarked packet it forwards,
/// walked all of them (a third of the probing daemon's CPU was `fib_rules_lookup`).
///
/// - `SKIP_CLASSES`: `not fwmark 0x57000000/0xff000000 goto SKIP_IIF` — every class rule
///   matches a mark of [`crate::class::MARK_BASE`]'s byte, so a packet without one skips them;
/// - `SKIP_IIF`: `iif lo goto END_OF_RULES` — what the edge sends itself (`iif lo`) matches no
///   `iif LAN` or `iif TUNNEL` rule (a LAN interface is never `lo`), so it skips them;
/// - `END_OF_RULES`: `nop`, where the gotos land; the walk goes on to the main table.
///
/// Each is safe alone: a goto whose target is missing is skipped by the kernel, so the order
/// in which they are added or removed never changes where a packet goes.
pub fn shortcuts() -> [Rule; 3] {
    [
        Rule {
            priority: SKIP_CLASSES,
            selector: Selector::NotFwmark {
                mark: crate::class::MARK_BASE,
                mask: 0xff00_0000,
            },
            table: 0,
            action: Action::Goto(SKIP_IIF),
        },
        Rule {
            priority: SKIP_IIF,
            selector: Selector::Iif("lo".into()),
            table: 0,
            action: Action::Goto(END_OF_RULES),
        },
        Rule {
            priority: END_OF_RULES,
            selector: Selector::All,
            table: 0,
            action: Action::Nop,
        },
    ]
}

/// One nftables marking rule: packets in on `ingress` matching `rule` get `mark`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mark {
    pub class: String,
    pub mark: u32,
    pub ingress: Vec<String>,
    pub rule: MatchRule,
}

/// Everything one edge holds for the SD-WAN.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EdgeConfig {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tunnels: BTreeMap<String, Tunnel>,
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub routes: BTreeSet<Route>,
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub rules: BTreeSet<Rule>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub marks: Vec<Mark>,
    /// Remote LAN prefixes that no tunnel reaches, and why.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unreachable: Vec<String>,
    /// The classes steered by an SLA: what the edge's monitor probes and its decisions choose
    /// between (not kernel state: their tables and rules are above).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub steer: Vec<ClassPlan>,
}

/// `overlay id × 8 + underlay position`.
pub fn segment(overlay: u16, underlay: usize) -> u32 {
    u32::from(overlay) * 8 + underlay as u32
}

pub fn inner_addr(segment: u32, site: u16) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(INNER_POOL.addr) + (segment << 8) + u32::from(site))
}

pub fn tunnel_mac(segment: u32, site: u16) -> [u8; 6] {
    [0x02, 0x57, (segment >> 8) as u8, segment as u8, 0, site as u8]
}

pub fn tunnel_name(overlay: u16, underlay: &str) -> String {
    format!("wo{overlay}-{underlay}")
}

/// Whether `ifname` has the shape of a tunnel's name (`wo{overlay id}-{underlay}`).
pub fn is_tunnel_name(ifname: &str) -> bool {
    ifname
        .strip_prefix("wo")
        .and_then(|rest| rest.split_once('-'))
        .is_some_and(|(id, underlay)| !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit()) && !underlay.is_empty())
}

pub fn table(overlay: &Overlay) -> u32 {
    TABLE_BASE + u32::from(overlay.id)
}

/// The underlays an overlay may use, in preference order.
fn allowed<'a>(o: &'a Overlay, inv: &'a Inventory) -> &'a [String] {
    if o.underlays.is_empty() {
        &inv.underlays
    } else {
        &o.underlays
    }
}

/// The prefixes a member brings: its listed ones, or all its site's LANs.
fn member_lans(o: &Overlay, name: &str, site: &Site) -> Vec<Ipv4Net> {
    match o.sites.get(name) {
        Some(m) if !m.lans.is_empty() => m.lans.clone(),
        _ => site.lans.iter().map(|l| l.prefix).collect(),
    }
}

/// The LAN interfaces of `site` that carry the member's prefixes.
fn member_ifnames(o: &Overlay, name: &str, site: &Site) -> Vec<String> {
    let prefixes = member_lans(o, name, site);
    site.lans
        .iter()
        .filter(|l| prefixes.iter().any(|p| l.prefix.contains(p.addr)))
        .map(|l| l.ifname.clone())
        .collect()
}

/// A steered class's candidate tables, their routes and `fwmark` rules, and its plan, on `edge`
/// (after the overlays' tunnels are in `out`).
fn steer_class(out: &mut EdgeConfig, c: &TrafficClass, st: &Steering, desired: &Desired, inv: &Inventory, edge: &str) {
    let Ok(paths) = desired.candidates(c, st, inv) else {
        return;
    };
    let mut plan = ClassPlan {
        class: c.name.clone(),
        mark: c.mark(),
        steering: st.clone(),
        candidates: Vec::new(),
        sites: BTreeMap::new(),
    };
    for (i, path) in paths.into_iter().enumerate() {
        let Some(o) = desired.overlays.get(&path.overlay) else {
            continue;
        };
        let tunnel = tunnel_name(o.id, &path.underlay);
        let mut cand = Candidate {
            path,
            tunnel: tunnel.clone(),
            mark: steer::mark(c, i),
            table: steer::table(c, i),
            via: BTreeMap::new(),
            outer: BTreeMap::new(),
        };
        if let Some(t) = out.tunnels.get(&tunnel) {
            for (r, _) in o.sites.iter().filter(|(r, _)| *r != edge) {
                let (Some(site), Some(next)) = (inv.sites.get(r), o.next_site(edge, r)) else {
                    continue;
                };
                let Some(peer) = t.peers.iter().find(|p| p.site == next) else {
                    continue;
                };
                cand.via.insert(r.clone(), peer.inner);
                cand.outer.insert(r.clone(), peer.remote);
                let lans = plan
                    .sites
                    .entry(r.clone())
                    .or_insert_with(|| match desired.overlays.get(&c.overlay) {
                        Some(main) if main.sites.contains_key(r) => member_lans(main, r, site),
                        _ => member_lans(o, r, site),
                    })
                    .clone();
                for p in lans {
                    out.routes.insert(Route {
                        table: cand.table,
                        dst: (p.addr, p.prefix_len),
                        via: peer.inner,
                        dev: tunnel.clone(),
                    });
                }
            }
        }
        if !cand.via.is_empty() {
            out.rules.insert(Rule {
                priority: CLASS_RULE_BASE + u32::from(c.id),
                selector: Selector::Fwmark(cand.mark),
                table: cand.table,
                action: Action::Lookup,
            });
        }
        plan.candidates.push(cand);
    }
    out.steer.push(plan);
}

impl EdgeConfig {
    /// What `edge` holds for `desired` (nothing when it is not a site).
    pub fn realise(desired: &Desired, inv: &Inventory, edge: &str) -> EdgeConfig {
        let mut out = EdgeConfig::default();
        let Some(me) = inv.sites.get(edge) else { return out };
        for o in desired.overlays.values() {
            if !o.sites.contains_key(edge) {
                continue;
            }
            let table = table(o);
            for u in allowed(o, inv) {
                let (Ok(pos), Some(wan)) = (inv.underlay(u), me.wan.get(u)) else {
                    continue;
                };
                let seg = segment(o.id, pos);
                let peers: BTreeSet<Peer> = o
                    .sites
                    .keys()
                    .filter(|r| o.joins(edge, r))
                    .filter_map(|r| {
                        let site = inv.sites.get(r)?;
                        Some(Peer {
                            site: r.clone(),
                            remote: site.wan.get(u)?.addr,
                            inner: inner_addr(seg, site.index),
                            mac: tunnel_mac(seg, site.index),
                        })
                    })
                    .collect();
                if peers.is_empty() {
                    continue;
                }
                let name = tunnel_name(o.id, u);
                out.rules.insert(Rule {
                    priority: TUNNEL_RULE_BASE + u32::from(o.id),
                    selector: Selector::Iif(name.clone()),
                    table,
                    action: Action::Lookup,
                });
                out.tunnels.insert(
                    name.clone(),
                    Tunnel {
                        name,
                        overlay: o.name.clone(),
                        underlay: u.clone(),
                        vni: seg,
                        local: wan.addr,
                        dev: wan.ifname.clone(),
                        mtu: wan.mtu.saturating_sub(VXLAN_OVERHEAD),
                        mac: tunnel_mac(seg, me.index),
                        inner: inner_addr(seg, me.index),
                        peers,
                    },
                );
            }
            for (r, _) in o.sites.iter().filter(|(r, _)| *r != edge) {
                let Some(site) = inv.sites.get(r) else { continue };
                let lans = member_lans(o, r, site);
                let Some(next) = o.next_site(edge, r) else {
                    // Partial mesh without a pair: no route, by design.
                    continue;
                };
                // The first underlay, in the overlay's order, with a tunnel to `next`.
                let hop = allowed(o, inv).iter().find_map(|u| {
                    let t = out.tunnels.get(&tunnel_name(o.id, u))?;
                    t.peers
                        .iter()
                        .find(|p| p.site == next)
                        .map(|p| (t.name.clone(), p.inner))
                });
                match hop {
                    Some((dev, via)) => {
                        for p in lans {
                            out.routes.insert(Route {
                                table,
                                dst: (p.addr, p.prefix_len),
                                via,
                                dev: dev.clone(),
                            });
                        }
                    }
                    None => out.unreachable.extend(
                        lans.iter()
                            .map(|p| format!("overlay {}: {p} of {r} (no underlay shared with {next})", o.name)),
                    ),
                }
            }
            for ifname in member_ifnames(o, edge, me) {
                out.rules.insert(Rule {
                    priority: LAN_RULE_BASE + u32::from(o.id),
                    selector: Selector::Iif(ifname),
                    table,
                    action: Action::Lookup,
                });
            }
        }
        for c in desired.classes.values() {
            let Some(o) = desired.overlays.get(&c.overlay) else {
                continue;
            };
            if !o.sites.contains_key(edge) {
                continue;
            }
            out.rules.insert(Rule {
                priority: CLASS_RULE_BASE + u32::from(c.id),
                selector: Selector::Fwmark(c.mark()),
                table: table(o),
                action: Action::Lookup,
            });
            if let Some(st) = &c.steering {
                steer_class(&mut out, c, st, desired, inv, edge);
            }
            let lans = member_ifnames(o, edge, me);
            for rule in &c.rules {
                let ingress: Vec<String> = if rule.ingress.is_empty() {
                    lans.clone()
                } else {
                    rule.ingress.iter().filter(|i| lans.contains(i)).cloned().collect()
                };
                if !ingress.is_empty() {
                    out.marks.push(Mark {
                        class: c.name.clone(),
                        mark: c.mark(),
                        ingress,
                        rule: rule.clone(),
                    });
                }
            }
        }
        out
    }

    /// The nftables script that makes the table hold exactly these marks and clamps (`nft -f`,
    /// one transaction). Empty when the edge needs no table.
    pub fn nft_script(&self) -> String {
        nft_script(&self.marks, !self.tunnels.is_empty())
    }
}

/// One marking rule's match in nft syntax.
fn nft_match(ingress: &[String], r: &MatchRule) -> String {
    let mut m = Vec::new();
    let names: Vec<String> = ingress.iter().map(|i| format!("\"{i}\"")).collect();
    m.push(if names.len() == 1 {
        format!("iifname {}", names[0])
    } else {
        format!("iifname {{ {} }}", names.join(", "))
    });
    if let Some(n) = &r.src {
        m.push(format!("ip saddr {n}"));
    }
    if let Some(n) = &r.dst {
        m.push(format!("ip daddr {n}"));
    }
    if let Some(d) = r.dscp {
        m.push(format!("ip dscp {d}"));
    }
    match r.proto {
        Some(Proto::Icmp) => m.push("ip protocol icmp".into()),
        Some(p) => {
            m.push(format!("meta l4proto {}", p.as_str()));
            if let Some(ports) = &r.src_ports {
                m.push(format!("{} sport {ports}", p.as_str()));
            }
            if let Some(ports) = &r.dst_ports {
                m.push(format!("{} dport {ports}", p.as_str()));
            }
        }
        None => {}
    }
    m.join(" ")
}

impl fmt::Display for Route {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}/{} via {} dev {} table {}",
            self.dst.0, self.dst.1, self.via, self.dev, self.table
        )
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "priority {}", self.priority)?;
        match &self.selector {
            Selector::Fwmark(m) => write!(f, " fwmark {m:#x}")?,
            Selector::Iif(i) => write!(f, " iif {i}")?,
            Selector::NotFwmark { mark, mask } => write!(f, " not fwmark {mark:#x}/{mask:#x}")?,
            Selector::All => {}
        }
        match self.action {
            Action::Lookup => write!(f, " lookup {}", self.table),
            Action::Goto(p) => write!(f, " goto {p}"),
            Action::Nop => write!(f, " nop"),
        }
    }
}

/// `aa:bb:cc:dd:ee:ff`.
/// The nftables script for `marks`, with the MSS clamp when the edge has a tunnel; empty when it
/// needs neither.
pub fn nft_script(marks: &[Mark], any_tunnel: bool) -> String {
    if marks.is_empty() && !any_tunnel {
        return String::new();
    }
    let mut s = format!(
        "table ip {NFT_TABLE}\ndelete table ip {NFT_TABLE}\ntable ip {NFT_TABLE} {{\n  chain classify {{\n    type filter hook prerouting priority mangle; policy accept;\n"
    );
    for m in marks {
        s.push_str(&format!(
            "    {} meta mark set {:#x} comment \"{}\"\n",
            nft_match(&m.ingress, &m.rule),
            m.mark,
            m.class
        ));
    }
    // One clamp for every tunnel: SYNs leaving into a tunnel get at most the MSS its route's
    // MTU allows (the kernel only ever lowers it). The SYN-ACK back is clamped by the far edge.
    s.push_str("  }\n  chain clamp {\n    type filter hook forward priority mangle; policy accept;\n");
    s.push_str("    oifname \"wo*\" tcp flags syn / syn,rst tcp option maxseg size set rt mtu\n");
    s.push_str("  }\n}\n");
    s
}

pub fn mac_text(mac: &[u8; 6]) -> String {
    mac.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":")
}
