//! SD-WAN overlays on one edge (docs/sdwan.md): the [`Op`]s of `wuos-sdwan` carried out in the
//! namespace of a [`Netlink`] handle — VXLAN devices, their inner addresses, static FDB and
//! neighbour entries, routes in the overlays' tables and `ip rule`s over rtnetlink, marks and
//! MSS clamps through [`Nftables`] — by [`NetlinkOverlays`], behind the [`Overlays`] trait.
//!
//! Removing what is already gone (a device, an entry, a route, a rule) is not an error, so a
//! reconcile that repeats a deletion converges; creating what exists is, so a reconcile that
//! would duplicate a device is told.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr};

use futures::TryStreamExt;
use rtnetlink::packet_route::AddressFamily;
use rtnetlink::packet_route::address::AddressAttribute;
use rtnetlink::packet_route::link::{InfoData, InfoKind, InfoVxlan, LinkAttribute, LinkInfo, LinkMessage};
use rtnetlink::packet_route::neighbour::{NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage};
use rtnetlink::packet_route::route::{RouteAddress, RouteAttribute, RouteProtocol};
use rtnetlink::packet_route::rule::{RuleAction, RuleAttribute, RuleFlags, RuleMessage};
use rtnetlink::{IpVersion, LinkUnspec, LinkVxlan, RouteMessageBuilder};
use wuos_sdwan::Op;
use wuos_sdwan::edge::{
    Action, EdgeConfig, NFT_TABLE, Peer, RULE_PRIORITIES, Route, Rule, Selector, TABLE_BASE, Tunnel, VXLAN_PORT,
};

use crate::netlink::{Netlink, NetlinkError, ROUTE_PROTOCOL};
use crate::nft::{NftError, Nftables};

/// Why an op failed.
#[derive(Debug, thiserror::Error)]
pub enum OverlayError {
    #[error("{op}: {source}")]
    Netlink { op: String, source: NetlinkError },
    #[error("{op}: {source}")]
    Nft { op: String, source: NftError },
}

/// An edge's SD-WAN data plane.
pub trait Overlays: Send + Sync {
    /// Carries out one op.
    fn apply(&self, op: &Op) -> impl Future<Output = Result<(), OverlayError>> + Send;

    /// What the kernel holds (tunnels `wo*` with their peers, routes in the overlays' tables,
    /// rules in wuos's priorities), for `wuos_sdwan::reconcile`: no marks, no site or overlay
    /// names.
    fn read(&self) -> impl Future<Output = Result<EdgeConfig, NetlinkError>> + Send;

    /// Deletes several tunnels at once (`names` not empty); a missing one is not an error.
    fn delete_tunnels(&self, names: &[String]) -> impl Future<Output = Result<(), OverlayError>> + Send;
}

/// The device group tunnels are moved into just before they are deleted together: one
/// RTM_DELLINK for the group waits for the kernel's unregistration (RCU) once, not once per
/// device — 1,000 VXLAN devices in 0.12 s instead of 16 s one by one (`ip link del group`,
/// measured here).
pub const DOOMED_GROUP: u32 = 0x5757_dead;

/// Carries out `ops` in order; the ones that failed, by position (the others still run: a
/// failed peer does not stop the next tunnel).
/// Consecutive tunnel deletions go together ([`Overlays::delete_tunnels`]).
pub async fn apply_all<O: Overlays>(overlays: &O, ops: &[Op]) -> Vec<(usize, OverlayError)> {
    let mut failed = Vec::new();
    let mut i = 0;
    while i < ops.len() {
        let run = ops[i..]
            .iter()
            .take_while(|op| matches!(op, Op::DeleteTunnel { .. }))
            .count();
        if run > 1 {
            let names: Vec<String> = ops[i..i + run]
                .iter()
                .filter_map(|op| match op {
                    Op::DeleteTunnel { name } => Some(name.clone()),
                    _ => None,
                })
                .collect();
            if let Err(e) = overlays.delete_tunnels(&names).await {
                let text = e.to_string();
                failed.extend((i..i + run).map(|k| {
                    (
                        k,
                        OverlayError::Netlink {
                            op: ops[k].to_string(),
                            source: NetlinkError::Refused(text.clone()),
                        },
                    )
                }));
            }
            i += run;
            continue;
        }
        if let Err(e) = overlays.apply(&ops[i]).await {
            failed.push((i, e));
        }
        i += 1;
    }
    failed
}

/// rtnetlink and nftables in one namespace.
#[derive(Clone, Debug)]
pub struct NetlinkOverlays<N> {
    pub netlink: Netlink,
    pub nft: N,
}

impl NetlinkOverlays<crate::nft::NftCommand> {
    /// rtnetlink and the `nft` program in the calling thread's namespace; the netlink
    /// connection runs on `rt`.
    pub fn connect_here(rt: &tokio::runtime::Handle) -> Result<Self, NetlinkError> {
        Ok(NetlinkOverlays {
            netlink: Netlink::connect_here(rt)?,
            nft: crate::nft::NftCommand,
        })
    }
}

impl<N: Nftables> Overlays for NetlinkOverlays<N> {
    async fn apply(&self, op: &Op) -> Result<(), OverlayError> {
        let nl = |source| OverlayError::Netlink {
            op: op.to_string(),
            source,
        };
        match op {
            Op::CreateTunnel(t) => self.netlink.create_vxlan(t).await.map_err(nl),
            Op::DeleteTunnel { name } => match self.netlink.index_of(name).await {
                Ok(index) => self.netlink.del_link(index).await.map_err(nl),
                Err(NetlinkError::NoSuchLink(_)) => Ok(()),
                Err(e) => Err(nl(e)),
            },
            Op::AddPeer { tunnel, peer } => self.netlink.add_peer(tunnel, peer).await.map_err(nl),
            Op::RemovePeer { tunnel, peer } => self.netlink.remove_peer(tunnel, peer).await.map_err(nl),
            Op::AddRoute(r) => self.netlink.table_route(r, true).await.map_err(nl),
            Op::DeleteRoute(r) => self.netlink.table_route(r, false).await.map_err(nl),
            Op::AddRule(r) => self.netlink.rule(r, true).await.map_err(nl),
            Op::DeleteRule(r) => self.netlink.rule(r, false).await.map_err(nl),
            Op::ReplaceNft(script) => self.nft.apply(script).map_err(|source| OverlayError::Nft {
                op: "nft -f (the SD-WAN table)".into(),
                source,
            }),
            Op::DeleteNft => match self
                .nft
                .apply(&format!("table ip {NFT_TABLE}\ndelete table ip {NFT_TABLE}\n"))
            {
                Ok(()) => Ok(()),
                Err(source) => Err(OverlayError::Nft {
                    op: op.to_string(),
                    source,
                }),
            },
        }
    }

    async fn read(&self) -> Result<EdgeConfig, NetlinkError> {
        self.netlink.read_overlays().await
    }

    async fn delete_tunnels(&self, names: &[String]) -> Result<(), OverlayError> {
        let failed = |source| OverlayError::Netlink {
            op: format!("ip link del group (tunnels {})", names.join(", ")),
            source,
        };
        let mut any = false;
        for name in names {
            match self.netlink.index_of(name).await {
                Ok(index) => {
                    let msg = LinkUnspec::new_with_index(index)
                        .append_extra_attribute(LinkAttribute::Group(DOOMED_GROUP))
                        .build();
                    self.netlink.handle.link().set(msg).execute().await.map_err(|source| {
                        failed(NetlinkError::Request {
                            what: format!("cannot move {name} to the group of tunnels to delete"),
                            source,
                        })
                    })?;
                    any = true;
                }
                Err(NetlinkError::NoSuchLink(_)) => {}
                Err(e) => return Err(failed(e)),
            }
        }
        if !any {
            return Ok(());
        }
        let mut msg = LinkMessage::default();
        msg.attributes.push(LinkAttribute::Group(DOOMED_GROUP));
        self.netlink
            .handle
            .link()
            .del_with_message(msg)
            .execute()
            .await
            .map_err(|source| {
                failed(NetlinkError::Request {
                    what: "cannot delete the group of tunnels".into(),
                    source,
                })
            })
    }
}

/// Whether a netlink request failed with `errno`.
fn is_errno(e: &rtnetlink::Error, errno: i32) -> bool {
    matches!(e, rtnetlink::Error::NetlinkError(m) if m.raw_code() == -errno)
}

impl Netlink {
    /// A VXLAN device over `t.dev` with its MAC, MTU, VNI, local address, port 4789 and no
    /// learning; its inner address; then up.
    async fn create_vxlan(&self, t: &Tunnel) -> Result<(), NetlinkError> {
        let dev = self.index_of(&t.dev).await?;
        let msg = LinkVxlan::new(&t.name, t.vni)
            .dev(dev)
            .local(t.local)
            .port(VXLAN_PORT)
            .learning(false)
            .mtu(t.mtu)
            .address(t.mac.to_vec())
            .build();
        self.handle
            .link()
            .add(msg)
            .execute()
            .await
            .map_err(|source| NetlinkError::Request {
                what: format!("cannot create VXLAN device {}", t.name),
                source,
            })?;
        let index = self.index_of(&t.name).await?;
        self.add_address(index, t.inner, 24).await?;
        self.set_up(index, true).await
    }

    /// A peer's static FDB entry (its MAC to its WAN address) and permanent neighbour entry.
    async fn add_peer(&self, tunnel: &str, p: &Peer) -> Result<(), NetlinkError> {
        let index = self.index_of(tunnel).await?;
        let request = |what: String| move |source| NetlinkError::Request { what, source };
        self.handle
            .neighbours()
            .add_bridge(index, &p.mac)
            .flags(NeighbourFlags::Own)
            .destination(IpAddr::V4(p.remote))
            .replace()
            .execute()
            .await
            .map_err(request(format!("cannot add the FDB entry of {} on {tunnel}", p.site)))?;
        self.handle
            .neighbours()
            .add(index, IpAddr::V4(p.inner))
            .link_layer_address(&p.mac)
            .replace()
            .execute()
            .await
            .map_err(request(format!(
                "cannot add the neighbour entry of {} on {tunnel}",
                p.site
            )))
    }

    async fn remove_peer(&self, tunnel: &str, p: &Peer) -> Result<(), NetlinkError> {
        let index = match self.index_of(tunnel).await {
            Ok(i) => i,
            Err(NetlinkError::NoSuchLink(_)) => return Ok(()),
            Err(e) => return Err(e),
        };
        let mut fdb = NeighbourMessage::default();
        fdb.header.family = AddressFamily::Bridge;
        fdb.header.ifindex = index;
        fdb.header.flags = NeighbourFlags::Own;
        fdb.attributes
            .push(NeighbourAttribute::LinkLayerAddress(p.mac.to_vec()));
        fdb.attributes
            .push(NeighbourAttribute::Destination(NeighbourAddress::Inet(p.remote)));
        let mut neigh = NeighbourMessage::default();
        neigh.header.family = AddressFamily::Inet;
        neigh.header.ifindex = index;
        neigh
            .attributes
            .push(NeighbourAttribute::Destination(NeighbourAddress::Inet(p.inner)));
        for (msg, what) in [(fdb, "FDB"), (neigh, "neighbour")] {
            match self.handle.neighbours().del(msg).execute().await {
                Ok(()) => {}
                Err(e) if is_errno(&e, libc::ENOENT) => {}
                Err(source) => {
                    return Err(NetlinkError::Request {
                        what: format!("cannot remove the {what} entry of {} on {tunnel}", p.site),
                        source,
                    });
                }
            }
        }
        Ok(())
    }

    /// Adds (replaces) or deletes a route in an overlay's table.
    async fn table_route(&self, r: &Route, add: bool) -> Result<(), NetlinkError> {
        let dev = match self.index_of(&r.dev).await {
            Ok(i) => i,
            // Deleting a route via a device that is gone: the kernel took it with the device.
            Err(NetlinkError::NoSuchLink(_)) if !add => return Ok(()),
            Err(e) => return Err(e),
        };
        let msg = RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(r.dst.0, r.dst.1)
            .gateway(r.via)
            .output_interface(dev)
            .table_id(r.table)
            .protocol(RouteProtocol::Other(ROUTE_PROTOCOL))
            .build();
        let result = if add {
            self.handle.route().add(msg).replace().execute().await
        } else {
            match self.handle.route().del(msg).execute().await {
                Err(e) if is_errno(&e, libc::ESRCH) => Ok(()),
                other => other,
            }
        };
        result.map_err(|source| NetlinkError::Request {
            what: format!("cannot {} route {r}", if add { "add" } else { "delete" }),
            source,
        })
    }

    /// Adds or deletes an `ip rule`; adding one that exists, or deleting one that does not, is
    /// not an error.
    async fn rule(&self, r: &Rule, add: bool) -> Result<(), NetlinkError> {
        let action = match r.action {
            Action::Lookup => RuleAction::ToTable,
            Action::Goto(_) => RuleAction::Goto,
            Action::Nop => RuleAction::Nop,
        };
        let mut req = self
            .handle
            .rule()
            .add()
            .v4()
            .priority(r.priority)
            .table_id(r.table)
            .action(action);
        if let Action::Goto(target) = r.action {
            req.message_mut().attributes.push(RuleAttribute::Goto(target));
        }
        req = match &r.selector {
            Selector::Fwmark(m) => req.fw_mark(*m),
            Selector::Iif(i) => req.input_interface(i.clone()),
            Selector::NotFwmark { mark, mask } => {
                let msg = req.message_mut();
                msg.header.flags |= RuleFlags::Invert;
                msg.attributes.push(RuleAttribute::FwMark(*mark));
                msg.attributes.push(RuleAttribute::FwMask(*mask));
                req
            }
            Selector::All => req,
        };
        let result = if add {
            match req.execute().await {
                Err(e) if is_errno(&e, libc::EEXIST) => Ok(()),
                other => other,
            }
        } else {
            let msg = req.message_mut().clone();
            match self.handle.rule().del(msg).execute().await {
                Err(e) if is_errno(&e, libc::ENOENT) => Ok(()),
                other => other,
            }
        };
        result.map_err(|source| NetlinkError::Request {
            what: format!("cannot {} rule {r}", if add { "add" } else { "delete" }),
            source,
        })
    }
}

/// A rule in wuos's priorities as [`Rule`] (none: another priority, or a shape wuos never
/// makes, such as an inverted `iif`, which a reconcile then leaves alone).
fn our_rule(m: &RuleMessage) -> Option<Rule> {
    let (mut priority, mut table) = (0, u32::from(m.header.table));
    let (mut mark, mut mask, mut iif, mut target) = (None, None, None, None);
    for a in &m.attributes {
        match a {
            RuleAttribute::Priority(p) => priority = *p,
            RuleAttribute::Table(t) => table = *t,
            RuleAttribute::FwMark(f) => mark = Some(*f),
            RuleAttribute::FwMask(f) => mask = Some(*f),
            RuleAttribute::Iifname(i) => iif = Some(i.clone()),
            RuleAttribute::Goto(g) => target = Some(*g),
            _ => {}
        }
    }
    if !RULE_PRIORITIES.contains(&priority) {
        return None;
    }
    let invert = m.header.flags.contains(RuleFlags::Invert);
    let selector = match (mark, mask.unwrap_or(u32::MAX), iif, invert) {
        (Some(mark), u32::MAX, None, false) => Selector::Fwmark(mark),
        (Some(mark), mask, None, true) => Selector::NotFwmark { mark, mask },
        (None, _, Some(i), false) => Selector::Iif(i),
        (None, _, None, false) => Selector::All,
        _ => return None,
    };
    let action = match (m.header.action, target) {
        (RuleAction::ToTable, _) => Action::Lookup,
        (RuleAction::Goto, Some(t)) => Action::Goto(t),
        (RuleAction::Nop, _) => Action::Nop,
        _ => return None,
    };
    Some(Rule {
        priority,
        selector,
        table: if action == Action::Lookup { table } else { 0 },
        action,
    })
}

impl Netlink {
    /// One link by index (none: it went away meanwhile).
    async fn link_by_index(&self, index: u32) -> Result<Option<LinkMessage>, NetlinkError> {
        let mut s = self.handle.link().get().match_index(index).execute();
        match s.try_next().await {
            Ok(l) => Ok(l),
            Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc::ENODEV => Ok(None),
            Err(source) => Err(NetlinkError::Request {
                what: format!("cannot get link {index}"),
                source,
            }),
        }
    }

    /// Reads the SD-WAN state of this namespace back (see [`Overlays::read`]).
    async fn read_overlays(&self) -> Result<EdgeConfig, NetlinkError> {
        let dump = |what: &str| {
            let what = format!("cannot list {what}");
            move |source| NetlinkError::Request { what, source }
        };
        // Tunnels are found by their inner address (its label is the device's name) and by their
        // FDB and neighbour entries, then fetched one request each: a full link dump of 2,000
        // tunnels is parsed into ~35 MiB at once (every attribute of every device), while 2,000
        // single gets take ~30 ms and almost no memory (measured here).
        let mut found: BTreeMap<u32, Ipv4Addr> = BTreeMap::new();
        let mut addrs = self.handle.address().get().execute();
        while let Some(m) = addrs.try_next().await.map_err(dump("addresses"))? {
            let (mut label, mut ip) = (None, None);
            for a in &m.attributes {
                match a {
                    AddressAttribute::Label(l) => label = Some(l),
                    AddressAttribute::Address(IpAddr::V4(i)) => ip = Some(*i),
                    _ => {}
                }
            }
            if let (Some(l), Some(ip)) = (label, ip)
                && l.starts_with("wo")
            {
                found.insert(m.header.index, ip);
            }
        }
        // Peers: an FDB entry (MAC -> WAN address) and a neighbour entry (inner address -> MAC).
        let mut fdb: BTreeMap<(u32, [u8; 6]), Ipv4Addr> = BTreeMap::new();
        let mut neigh: BTreeMap<(u32, [u8; 6]), Ipv4Addr> = BTreeMap::new();
        for (family, into) in [(AddressFamily::Bridge, &mut fdb), (AddressFamily::Inet, &mut neigh)] {
            let mut entries = self.handle.neighbours().get().set_address_family(family).execute();
            while let Some(e) = entries.try_next().await.map_err(dump("neighbour entries"))? {
                let (mut mac, mut ip) = (None, None);
                for a in &e.attributes {
                    match a {
                        NeighbourAttribute::LinkLayerAddress(m) if m.len() == 6 => {
                            mac = Some(<[u8; 6]>::try_from(m.as_slice()).unwrap_or_default())
                        }
                        NeighbourAttribute::Destination(NeighbourAddress::Inet(i)) => ip = Some(*i),
                        // An FDB entry's (AF_BRIDGE) destination is not parsed as an address.
                        NeighbourAttribute::Destination(NeighbourAddress::Other(b)) if b.len() == 4 => {
                            ip = Some(Ipv4Addr::new(b[0], b[1], b[2], b[3]))
                        }
                        _ => {}
                    }
                }
                if let (Some(mac), Some(ip)) = (mac, ip) {
                    into.insert((e.header.ifindex, mac), ip);
                }
            }
        }
        // The devices: those with an address and those with entries (a tunnel that lost its
        // address), one get each; then their WAN devices' names.
        let mut out = EdgeConfig::default();
        let mut tunnels: BTreeMap<u32, String> = BTreeMap::new();
        let mut names: BTreeMap<u32, String> = BTreeMap::new();
        let mut devs: BTreeMap<String, u32> = BTreeMap::new();
        let candidates: std::collections::BTreeSet<u32> = found
            .keys()
            .chain(fdb.keys().map(|(i, _)| i))
            .chain(neigh.keys().map(|(i, _)| i))
            .copied()
            .collect();
        for index in candidates {
            let Some(l) = self.link_by_index(index).await? else {
                continue;
            };
            let Some(name) = l.attributes.iter().find_map(|a| match a {
                LinkAttribute::IfName(n) => Some(n.clone()),
                _ => None,
            }) else {
                continue;
            };
            if !name.starts_with("wo") {
                continue;
            }
            let mut t = Tunnel {
                name: name.clone(),
                overlay: String::new(),
                underlay: name.split_once('-').map(|(_, u)| u.to_string()).unwrap_or_default(),
                vni: 0,
                local: Ipv4Addr::UNSPECIFIED,
                dev: String::new(),
                mtu: 0,
                mac: [0; 6],
                inner: found.get(&index).copied().unwrap_or(Ipv4Addr::UNSPECIFIED),
                peers: Default::default(),
            };
            let mut vxlan = false;
            for a in &l.attributes {
                match a {
                    LinkAttribute::Mtu(m) => t.mtu = *m,
                    LinkAttribute::Address(mac) if mac.len() == 6 => t.mac.copy_from_slice(mac),
                    LinkAttribute::LinkInfo(infos) => {
                        for info in infos {
                            match info {
                                LinkInfo::Kind(InfoKind::Vxlan) => vxlan = true,
                                LinkInfo::Data(InfoData::Vxlan(data)) => {
                                    for d in data {
                                        match d {
                                            InfoVxlan::Id(v) => t.vni = *v,
                                            InfoVxlan::Local(ip) => t.local = *ip,
                                            InfoVxlan::Link(dev) => {
                                                devs.insert(name.clone(), *dev);
                                            }
                                            _ => {}
                                        }
                                    }
                                }
                                _ => {}
                            }
                        }
                    }
                    _ => {}
                }
            }
            if vxlan {
                names.insert(index, name.clone());
                tunnels.insert(index, name.clone());
                out.tunnels.insert(name, t);
            }
        }
        let wan: std::collections::BTreeSet<u32> = devs.values().copied().collect();
        for index in wan {
            if let Some(l) = self.link_by_index(index).await?
                && let Some(n) = l.attributes.iter().find_map(|a| match a {
                    LinkAttribute::IfName(n) => Some(n.clone()),
                    _ => None,
                })
            {
                names.insert(index, n);
            }
        }
        for (name, dev) in devs {
            if let Some(t) = out.tunnels.get_mut(&name) {
                t.dev = names.get(&dev).cloned().unwrap_or_default();
            }
        }
        for ((index, mac), remote) in fdb {
            let (Some(inner), Some(t)) = (
                neigh.get(&(index, mac)),
                tunnels.get(&index).and_then(|n| out.tunnels.get_mut(n)),
            ) else {
                continue;
            };
            t.peers.insert(Peer {
                site: String::new(),
                remote,
                inner: *inner,
                mac,
            });
        }
        let ours = |t: u32| {
            (TABLE_BASE + 1..=TABLE_BASE + u32::from(u16::MAX)).contains(&t) || wuos_sdwan::steer::TABLES.contains(&t)
        };
        let mut routes = self
            .handle
            .route()
            .get(RouteMessageBuilder::<Ipv4Addr>::new().build())
            .execute();
        while let Some(m) = routes.try_next().await.map_err(dump("routes"))? {
            let (mut table, mut via, mut dev, mut dst) = (u32::from(m.header.table), None, None, Ipv4Addr::UNSPECIFIED);
            for a in &m.attributes {
                match a {
                    RouteAttribute::Table(t) => table = *t,
                    RouteAttribute::Gateway(RouteAddress::Inet(g)) => via = Some(*g),
                    RouteAttribute::Oif(o) => dev = names.get(o).cloned(),
                    RouteAttribute::Destination(RouteAddress::Inet(d)) => dst = *d,
                    _ => {}
                }
            }
            if let (true, Some(via), Some(dev)) = (ours(table), via, dev) {
                out.routes.insert(Route {
                    table,
                    dst: (dst, m.header.destination_prefix_length),
                    via,
                    dev,
                });
            }
        }
        let mut rules = self.handle.rule().get(IpVersion::V4).execute();
        while let Some(m) = rules.try_next().await.map_err(dump("rules"))? {
            if let Some(r) = our_rule(&m) {
                out.rules.insert(r);
            }
        }
        Ok(out)
    }
}
