//! SD-WAN overlays in a real lab (privileged): `sdwan:3:2` (three sites over `mpls` and `inet`),
//! the ops of `wuos-sdwan` carried out in each edge's namespace by the southbound executor
//! (rtnetlink + nft), and real traffic between the sites' LAN hosts, its path shown by the
//! tunnels' packet counters.
//!
//! Phase 1: three full-mesh overlays share every site's LAN interface (what VRF-lite cannot):
//! `base` over mpls (the LAN's unmarked traffic), `voice` over mpls, `bulk` over inet; class `sip`
//! (UDP 5060) rides `voice`, class `iperf` (TCP 5201) rides `bulk`. Phase 2: read back, every
//! kernel holds what was asked, and a rule and a route removed by hand come back once on a
//! reconcile; a refused request changes nothing and traffic keeps flowing. Phase 3: everything
//! replaced by one hub-and-spoke overlay with hub e1; spoke-to-spoke traffic goes through the hub.

mod common;

use std::collections::BTreeMap;
use std::process::{Command, Stdio};

use common::{Down, in_router, ok, run};
use wuos_model::generate::{Generator, generate};
use wuos_model::plan::address_plan;
use wuos_sdwan::{Action, Desired, EdgeConfig, Inventory, Op, diff, reconcile};
use wuos_southbound::overlays::{NetlinkOverlays, Overlays, apply_all};

const LAB: &str = "sdwtest";
const SPEC: &str = "sdwan:3:2";

/// The desired state of every site, and what each site's kernel holds now.
struct Sdwan {
    inv: Inventory,
    desired: Desired,
    held: BTreeMap<String, EdgeConfig>,
}

impl Sdwan {
    fn new() -> Sdwan {
        let t = generate(&SPEC.parse::<Generator>().unwrap(), 1);
        let inv = Inventory::from_topology(&t, &address_plan(&t).unwrap()).unwrap();
        let held = inv.sites.keys().map(|s| (s.clone(), EdgeConfig::default())).collect();
        Sdwan {
            inv,
            desired: Desired::default(),
            held,
        }
    }

    fn act(&mut self, actions: &str) {
        let actions: Vec<Action> = serde_json::from_str(actions).unwrap();
        for a in actions {
            let text = format!("{a:?}");
            self.desired
                .apply(a, &self.inv)
                .unwrap_or_else(|e| panic!("{text} refused: {e}"));
        }
    }

    /// What `site`'s kernel should hold, as wuosd's edge makes it: the desired state and, when
    /// there is any, the shortcuts.
    fn want(&self, site: &str) -> EdgeConfig {
        let mut w = EdgeConfig::realise(&self.desired, &self.inv, site);
        if !w.rules.is_empty() || !w.tunnels.is_empty() {
            w.rules.extend(wuos_sdwan::edge::shortcuts());
        }
        w
    }

    /// Carries every site from what it holds to the desired state.
    fn converge(&mut self) {
        let sites: Vec<String> = self.held.keys().cloned().collect();
        for site in sites {
            let want = self.want(&site);
            let held = self.held.get_mut(&site).unwrap();
            let ops = diff(held, &want);
            on_edge(&site, |_| ops);
            *held = want;
        }
    }

    /// As a restarted daemon would: reads what `site`'s kernel holds, and carries out the ops
    /// from there to the desired state; the ops.
    fn reconcile(&mut self, site: &str) -> Vec<Op> {
        let want = self.want(site);
        let ops = on_edge(site, |held| reconcile(held, &want));
        self.held.insert(site.to_string(), want);
        ops
    }
}

/// In `site`'s namespace: reads what its kernel holds, makes ops of it with `plan` and carries
/// them out, asserting that none failed; the ops.
fn on_edge(site: &str, plan: impl FnOnce(&EdgeConfig) -> Vec<Op> + Send) -> Vec<Op> {
    let (ops, failed) = in_router(LAB, site, || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let overlays = NetlinkOverlays::connect_here(rt.handle()).unwrap();
        let held = rt.block_on(overlays.read()).unwrap();
        let ops = plan(&held);
        let failed: Vec<String> = rt
            .block_on(apply_all(&overlays, &ops))
            .into_iter()
            .map(|(i, e)| format!("{}: {e}", ops[i]))
            .collect();
        (ops, failed)
    });
    assert!(failed.is_empty(), "{site}: ops failed:\n{}", failed.join("\n"));
    ops
}

/// A tunnel's transmitted and received packets on `node`.
fn counters(node: &str, dev: &str) -> (u64, u64) {
    let out = ok(&["lab", "exec", LAB, node, "--", "ip", "-j", "-s", "link", "show", dev]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let s = &v[0]["stats64"];
    (
        s["tx"]["packets"].as_u64().unwrap(),
        s["rx"]["packets"].as_u64().unwrap(),
    )
}

/// The LAN address of host `h` (its end of the link to its edge).
fn lan_addr(h: &str) -> String {
    let out = ok(&["lab", "exec", LAB, h, "--", "ip", "-j", "-4", "addr", "show", "eth0"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    v[0]["addr_info"][0]["local"].as_str().unwrap().to_string()
}

fn ping(from: &str, to: &str) -> bool {
    run(&[
        "lab", "exec", LAB, from, "--", "ping", "-c", "3", "-i", "0.2", "-W", "1", to,
    ])
    .status
    .success()
}

/// Packets each named tunnel of `node` sent while `f` ran.
fn sent_during(node: &str, devs: &[&str], f: impl FnOnce()) -> Vec<u64> {
    let before: Vec<u64> = devs.iter().map(|d| counters(node, d).0).collect();
    f();
    devs.iter().zip(before).map(|(d, b)| counters(node, d).0 - b).collect()
}

#[test]
fn overlays_carry_lan_traffic_by_class_and_through_a_hub() {
    if !wuos_southbound::privilege::may_run_privileged("sdwan overlays") {
        return;
    }
    let _ = run(&["lab", "down", LAB]);
    ok(&["lab", "up", SPEC, "--name", LAB, "--no-domains"]);
    let down = Down(LAB);
    let (h2, h3) = (lan_addr("h2"), lan_addr("h3"));
    let mut sd = Sdwan::new();

    // Without an overlay the sites' LANs do not reach each other (the underlays do not route them).
    assert!(!ping("h1", &h2), "h1 reached h2 with no overlay");

    sd.act(
        r#"[{"action":"create_overlay","name":"base","sites":{"e1":{},"e2":{},"e3":{}},"underlays":["mpls"]},
            {"action":"create_overlay","name":"voice","sites":{"e1":{},"e2":{},"e3":{}},"underlays":["mpls"]},
            {"action":"create_overlay","name":"bulk","sites":{"e1":{},"e2":{},"e3":{}},"underlays":["inet"]},
            {"action":"create_class","name":"sip","overlay":"voice","rules":[{"proto":"udp","dst_ports":"5060"}]},
            {"action":"create_class","name":"iperf","overlay":"bulk","rules":[{"proto":"tcp","dst_ports":"5201"}]}]"#,
    );
    sd.converge();
    let tunnels = ["wo1-mpls", "wo2-mpls", "wo3-inet"];

    // Unmarked (ICMP): the LAN's first overlay, `base`, both ways (the replies come back from
    // h2's LAN address through the overlay, not by the loopback routes).
    let received = counters("e1", "wo1-mpls").1;
    let sent = sent_during("e1", &tunnels, || {
        assert!(ping("h1", &h2), "h1 cannot reach h2 over the overlay")
    });
    assert!(
        sent[0] >= 3 && sent[1] == 0 && sent[2] == 0,
        "ping left e1 on {tunnels:?}: {sent:?}"
    );
    let received = counters("e1", "wo1-mpls").1 - received;
    assert!(
        received >= 3,
        "the replies did not come back through wo1-mpls: {received} packets"
    );

    // Class sip (UDP 5060): `voice`.
    let sent = sent_during("e1", &tunnels, || {
        let send = format!("for i in $(seq 20); do echo sip > /dev/udp/{h2}/5060; done");
        ok(&["lab", "exec", LAB, "h1", "--", "bash", "-c", &send]);
    });
    assert!(
        sent[0] == 0 && sent[1] >= 20 && sent[2] == 0,
        "UDP 5060 left e1 on {tunnels:?}: {sent:?}"
    );

    // Class iperf (TCP 5201): `bulk`, over the other underlay.
    let mut server = common::wuos()
        .args(["lab", "exec", LAB, "h2", "--", "iperf3", "-s", "-1", "-p", "5201"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let sent = sent_during("e1", &tunnels, || {
        common::wait_until_or(
            "an iperf3 run from h1 to h2 on TCP 5201",
            std::time::Duration::from_secs(10),
            String::new,
            || {
                run(&[
                    "lab", "exec", LAB, "h1", "--", "iperf3", "-c", &h2, "-p", "5201", "-t", "1", "-b", "20M",
                ])
                .status
                .success()
                .then_some(())
            },
        );
    });
    let _ = server.kill();
    let _ = server.wait();
    // 20 Mbit/s for 1 s in GSO segments of up to 64 KB: tens of packets on the tunnel.
    assert!(
        sent[0] == 0 && sent[1] == 0 && sent[2] >= 20,
        "TCP 5201 left e1 on {tunnels:?}: {sent:?}"
    );

    // Read back, each site's kernel holds what was asked: a reconcile (as after a restart) only
    // rewrites the nft table, which cannot be read back as marks.
    for site in ["e1", "e2", "e3"] {
        let ops = sd.reconcile(site);
        assert!(
            ops.len() == 1 && matches!(ops[0], Op::ReplaceNft(_)),
            "{site}: a reconcile of an untouched kernel did more: {:#?}",
            ops.iter().map(ToString::to_string).collect::<Vec<_>>()
        );
    }
    // The shortcuts, as `ip` prints them (the traffic above went through them).
    let rules = ok(&["lab", "exec", LAB, "e1", "--", "ip", "rule"]);
    for shortcut in [
        "10000:\tnot from all fwmark 0x57000000/0xff000000 goto 20000",
        "20000:\tfrom all iif lo goto 25048",
        "25048:\tfrom all nop",
    ] {
        assert!(rules.contains(shortcut), "no {shortcut:?} on e1:\n{rules}");
    }
    // A rule and a route removed behind wuos's back come back once; nothing is duplicated.
    ok(&["lab", "exec", LAB, "e2", "--", "ip", "rule", "del", "priority", "20002"]);
    let route = sd.held["e2"].routes.iter().find(|r| r.table == 10_003).unwrap().clone();
    let dst = format!("{}/{}", route.dst.0, route.dst.1);
    ok(&[
        "lab", "exec", LAB, "e2", "--", "ip", "route", "del", &dst, "table", "10003",
    ]);
    let ops: Vec<String> = sd.reconcile("e2").iter().map(ToString::to_string).collect();
    assert_eq!(ops.len(), 3, "{ops:#?}");
    assert!(
        ops[0].starts_with("ip route replace") && ops[0].contains(&dst),
        "{ops:#?}"
    );
    assert!(ops[1] == "ip rule add priority 20002 iif eth2 lookup 10002", "{ops:#?}");
    let rules = ok(&["lab", "exec", LAB, "e2", "--", "ip", "rule"]);
    for overlay in ["10001", "10002", "10003"] {
        let n = rules
            .lines()
            .filter(|l| l.contains("iif eth2") && l.ends_with(&format!("lookup {overlay}")))
            .count();
        assert_eq!(n, 1, "LAN rules for table {overlay} on e2:\n{rules}");
    }
    assert!(ping("h2", &lan_addr("h1")), "traffic after the reconcile");

    // A refused request (a class overlapping sip) changes nothing, and traffic keeps flowing.
    let before = sd.desired.clone();
    let refused: Action = serde_json::from_str(
        r#"{"action":"create_class","name":"rtp","overlay":"bulk","rules":[{"proto":"udp","dst_ports":"5000-5100"}]}"#,
    )
    .unwrap();
    let e = sd.desired.apply(refused, &sd.inv).unwrap_err().to_string();
    assert!(e.contains("overlaps class \"sip\""), "{e}");
    assert_eq!(sd.desired, before);
    for site in ["e1", "e2", "e3"] {
        assert!(diff(&sd.held[site], &sd.want(site)).is_empty());
    }
    assert!(ping("h1", &h2));

    // Everything replaced by a hub-and-spoke overlay (hub e1) over inet: spoke to spoke through e1.
    sd.act(
        r#"[{"action":"delete_class","name":"sip"},{"action":"delete_class","name":"iperf"},
            {"action":"delete_overlay","name":"base"},{"action":"delete_overlay","name":"voice"},
            {"action":"delete_overlay","name":"bulk"},
            {"action":"create_overlay","name":"star","layout":{"kind":"hub_and_spoke","hub":"e1"},
             "sites":{"e1":{},"e2":{},"e3":{}},"underlays":["inet"]}]"#,
    );
    sd.converge();
    let gone = ok(&["lab", "exec", LAB, "e2", "--", "ip", "-br", "link"]);
    assert!(
        !gone.contains("wo1-mpls") && !gone.contains("wo2-") && !gone.contains("wo3-"),
        "old tunnels left on e2:\n{gone}"
    );
    let rules = ok(&["lab", "exec", LAB, "e2", "--", "ip", "rule"]);
    assert!(
        !rules.lines().any(|l| l.contains("fwmark") && l.contains("lookup")),
        "class rules left on e2:\n{rules}"
    );
    let hub_before = counters("e1", "wo1-inet");
    assert!(ping("h2", &h3), "h2 cannot reach h3 through the hub");
    let hub_after = counters("e1", "wo1-inet");
    assert!(
        hub_after.0 - hub_before.0 >= 6 && hub_after.1 - hub_before.1 >= 6,
        "spoke-to-spoke traffic did not cross the hub: e1 wo1-inet (tx, rx) {hub_before:?} -> {hub_after:?}"
    );
    let fdb = ok(&[
        "lab", "exec", LAB, "e2", "--", "bridge", "fdb", "show", "dev", "wo1-inet",
    ]);
    assert_eq!(
        fdb.lines().filter(|l| l.contains("dst")).count(),
        1,
        "a spoke tunnels to the hub only:\n{fdb}"
    );

    // A spoke leaves: the hub drops its peer (FDB and neighbour entries) and its routes; e3's
    // tunnel goes; h2 no longer reaches h3, h1 still reaches h2.
    sd.act(r#"[{"action":"remove_site","overlay":"star","site":"e3"}]"#);
    sd.converge();
    let fdb = ok(&[
        "lab", "exec", LAB, "e1", "--", "bridge", "fdb", "show", "dev", "wo1-inet",
    ]);
    assert_eq!(
        fdb.lines().filter(|l| l.contains("dst")).count(),
        1,
        "the hub keeps e2 only:\n{fdb}"
    );
    let neigh = ok(&["lab", "exec", LAB, "e1", "--", "ip", "neigh", "show", "dev", "wo1-inet"]);
    assert_eq!(neigh.lines().count(), 1, "the hub's neighbours:\n{neigh}");
    assert!(!ok(&["lab", "exec", LAB, "e3", "--", "ip", "-br", "link"]).contains("wo1-inet"));
    assert!(!ping("h2", &h3), "h2 still reaches h3 after e3 left");
    assert!(ping("h1", &h2), "h1 -> h2 after e3 left");
    // Nothing of wuos is left in e3's rules: no overlay's, no shortcut.
    let rules = ok(&["lab", "exec", LAB, "e3", "--", "ip", "rule"]);
    let wuos: Vec<&str> = rules
        .lines()
        .filter(|l| {
            l.split(':')
                .next()
                .and_then(|p| p.trim().parse::<u32>().ok())
                .is_some_and(|p| wuos_sdwan::edge::RULE_PRIORITIES.contains(&p))
        })
        .collect();
    assert!(
        wuos.is_empty(),
        "wuos rules left on e3 after it left its last overlay: {wuos:?}"
    );

    drop(down);
    let left =
        String::from_utf8_lossy(&Command::new("ip").args(["netns", "list"]).output().unwrap().stdout).into_owned();
    assert!(
        !left.contains(&format!("wuos.{LAB}.")),
        "namespaces left after lab down:\n{left}"
    );
}
