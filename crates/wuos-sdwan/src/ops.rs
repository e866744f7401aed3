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

impl Op {
    /// Whether the op is on the nftables table (replaced or deleted as a whole).
    pub fn is_nft(&self) -> bool {
        matches!(self, Op::ReplaceNft(_) | Op::DeleteNft)
    }
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

/// The ops from what a kernel holds, read back (`held`: tunnels with their peers, routes in the
/// overlays' tables, rules in wuos's priorities; no marks, no site names), to `want` — after a
/// restart, so nothing is created twice. The nftables table cannot be read back as marks, so it
/// is replaced (one transaction) whatever it holds, or deleted when nothing wants it.
pub fn reconcile(held: &EdgeConfig, want: &EdgeConfig) -> Vec<Op> {
    let mut ops: Vec<Op> = diff(held, want).into_iter().filter(|op| !op.is_nft()).collect();
    let script = want.nft_script();
    ops.push(if script.is_empty() {
        Op::DeleteNft
    } else {
        Op::ReplaceNft(script)
    });
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::desired::Desired;
    use crate::edge::{Rule, Selector};
    use crate::inventory::Inventory;

    fn state() -> (Desired, Inventory) {
        let inv: Inventory = serde_json::from_value(serde_json::json!({
            "underlays": ["inet"],
            "sites": {
                "a": {"index": 1, "wan": {"inet": {"addr": "10.1.0.1", "ifname": "eth0", "mtu": 1500}},
                      "lans": [{"ifname": "eth1", "prefix": "192.168.1.0/24"}]},
                "b": {"index": 2, "wan": {"inet": {"addr": "10.2.0.1", "ifname": "eth0", "mtu": 1500}},
                      "lans": [{"ifname": "eth1", "prefix": "192.168.2.0/24"}]}
            }
        }))
        .unwrap();
        let mut d = Desired::default();
        for a in [
            r#"{"action":"create_overlay","name":"o","sites":{"a":{},"b":{}}}"#,
            r#"{"action":"create_class","name":"c","overlay":"o","rules":[{"proto":"udp","dst_ports":"53"}]}"#,
        ] {
            d.apply(serde_json::from_str(a).unwrap(), &inv).unwrap();
        }
        (d, inv)
    }

    /// What a kernel read back looks like: no site names, no marks, no overlay names.
    fn read_back(c: &EdgeConfig) -> EdgeConfig {
        let mut held = c.clone();
        held.marks.clear();
        for t in held.tunnels.values_mut() {
            t.overlay.clear();
            t.peers = t
                .peers
                .iter()
                .map(|p| Peer {
                    site: String::new(),
                    ..p.clone()
                })
                .collect();
        }
        held
    }

    #[test]
    fn a_kernel_that_holds_everything_gets_only_the_nft_table() {
        let (d, inv) = state();
        let want = EdgeConfig::realise(&d, &inv, "a");
        let ops = reconcile(&read_back(&want), &want);
        assert_eq!(ops, vec![Op::ReplaceNft(want.nft_script())]);
        assert_eq!(
            reconcile(&EdgeConfig::default(), &EdgeConfig::default()),
            vec![Op::DeleteNft]
        );
    }

    #[test]
    fn reconcile_removes_what_is_stale_and_adds_what_is_missing_once() {
        let (d, inv) = state();
        let want = EdgeConfig::realise(&d, &inv, "a");
        let mut held = read_back(&want);
        let stale = Rule {
            priority: 10_007,
            selector: Selector::Fwmark(0x5700_0007),
            table: 10_001,
            action: Default::default(),
        };
        held.rules.insert(stale.clone());
        let missing = held.routes.pop_first().unwrap();
        let ops = reconcile(&held, &want);
        assert_eq!(
            ops,
            vec![
                Op::DeleteRule(stale),
                Op::AddRoute(missing),
                Op::ReplaceNft(want.nft_script())
            ]
        );
        // A tunnel whose device differs (another MTU) is recreated with its peers.
        let mut held = read_back(&want);
        held.tunnels.values_mut().next().unwrap().mtu = 1400;
        let ops = reconcile(&held, &want);
        assert!(matches!(ops[0], Op::DeleteTunnel { .. }), "{ops:?}");
        assert!(matches!(ops[1], Op::CreateTunnel(_)), "{ops:?}");
        assert!(matches!(ops[2], Op::AddPeer { .. }), "{ops:?}");
        assert!(ops.iter().filter(|o| matches!(o, Op::AddRoute(_))).count() == want.routes.len());
    }
}
