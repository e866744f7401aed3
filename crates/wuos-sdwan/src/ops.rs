//! The changes that take an edge's kernel from one [`EdgeConfig`] to another. [`diff`] removes
//! before it adds (rules, then routes, then peers, then tunnels; then the reverse), and replaces
//! the nftables table in one transaction last. Each op prints as the iproute2 / nft command that
//! does the same, for logs, goldens and a user who wants to check by hand.

use std::collections::BTreeSet;
use std::fmt;

use serde::Serialize;

use crate::edge::{EdgeConfig, NFT_TABLE, Peer, Route, Rule, Tunnel, VXLAN_PORT, mac_text};

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    DeleteRule(Rule),
    DeleteRoute(Route),
    /// Removes a peer's FDB and neighbour entries.
    RemovePeer {
        tunnel: String,
        peer: Peer,
    },
    DeleteTunnel {
        name: String,
    },
    /// Creates the device (with no peers), its inner address, and sets it up.
    CreateTunnel(Box<Tunnel>),
    /// Adds a peer's static FDB entry (its MAC → its WAN address) and neighbour entry.
    AddPeer {
        tunnel: String,
        peer: Peer,
    },
    AddRoute(Route),
    AddRule(Rule),
    /// Replaces the nftables table with this script (`nft -f`).
    ReplaceNft(String),
    DeleteNft,
}

/// The ops from `old` to `new`, in the order they must run.
pub fn diff(old: &EdgeConfig, new: &EdgeConfig) -> Vec<Op> {
    let mut ops = Vec::new();
    ops.extend(old.rules.difference(&new.rules).cloned().map(Op::DeleteRule));
    // A route via a tunnel that goes away goes with it; the others are deleted one by one.
    let replaced: BTreeSet<&str> = old
        .tunnels
        .values()
        .filter(|t| !new.tunnels.get(&t.name).is_some_and(|n| n.same_device(t)))
        .map(|t| t.name.as_str())
        .collect();
    ops.extend(
        old.routes
            .difference(&new.routes)
            .filter(|r| !replaced.contains(r.dev.as_str()))
            .cloned()
            .map(Op::DeleteRoute),
    );
    for t in old.tunnels.values() {
        if replaced.contains(t.name.as_str()) {
            continue;
        }
        let kept = &new.tunnels[&t.name].peers;
        for p in t.peers.difference(kept) {
            ops.push(Op::RemovePeer {
                tunnel: t.name.clone(),
                peer: p.clone(),
            });
        }
    }
    ops.extend(replaced.iter().map(|n| Op::DeleteTunnel { name: n.to_string() }));
    for t in new.tunnels.values() {
        let fresh = !matches!(old.tunnels.get(&t.name), Some(o) if o.same_device(t));
        let had: BTreeSet<Peer> = if fresh {
            BTreeSet::new()
        } else {
            old.tunnels[&t.name].peers.clone()
        };
        if fresh {
            ops.push(Op::CreateTunnel(Box::new(Tunnel {
                peers: BTreeSet::new(),
                ..t.clone()
            })));
        }
        for p in t.peers.difference(&had) {
            ops.push(Op::AddPeer {
                tunnel: t.name.clone(),
                peer: p.clone(),
            });
        }
    }
    ops.extend(
        new.routes
            .iter()
            .filter(|r| !old.routes.contains(r) || replaced.contains(r.dev.as_str()))
            .cloned()
            .map(Op::AddRoute),
    );
    ops.extend(new.rules.difference(&old.rules).cloned().map(Op::AddRule));
    let (before, after) = (old.nft_script(), new.nft_script());
    if before != after {
        ops.push(if after.is_empty() {
            Op::DeleteNft
        } else {
            Op::ReplaceNft(after)
        });
    }
    ops
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Op::DeleteRule(r) => write!(f, "ip rule del {r}"),
            Op::DeleteRoute(r) => write!(f, "ip route del {r}"),
            Op::RemovePeer { tunnel, peer } => write!(
                f,
                "bridge fdb del {} dev {tunnel} dst {}; ip neigh del {} dev {tunnel}",
                mac_text(&peer.mac),
                peer.remote,
                peer.inner
            ),
            Op::DeleteTunnel { name } => write!(f, "ip link del {name}"),
            Op::CreateTunnel(t) => write!(
                f,
                "ip link add {} address {} mtu {} type vxlan id {} local {} dev {} dstport {VXLAN_PORT} nolearning; \
                 ip addr add {}/24 dev {}; ip link set {} up",
                t.name,
                mac_text(&t.mac),
                t.mtu,
                t.vni,
                t.local,
                t.dev,
                t.inner,
                t.name,
                t.name
            ),
            Op::AddPeer { tunnel, peer } => write!(
                f,
                "bridge fdb append {} dev {tunnel} dst {}; ip neigh replace {} lladdr {} dev {tunnel} nud permanent",
                mac_text(&peer.mac),
                peer.remote,
                peer.inner,
                mac_text(&peer.mac)
            ),
            Op::AddRoute(r) => write!(f, "ip route replace {r}"),
            Op::AddRule(r) => write!(f, "ip rule add {r}"),
            Op::ReplaceNft(script) => write!(f, "nft -f - <<EOF\n{script}EOF"),
            Op::DeleteNft => write!(f, "nft delete table ip {NFT_TABLE}"),
        }
    }
}
