//! The SD-WAN controller in a real lab (privileged): `sdwan:3:2` with its daemons under mutual
//! TLS; everything through `wuos sdwan …`, i.e. the NBI on the dc router's loopback, the
//! controller in dc's wuosd, pieces over `Control` sessions to each edge's wuosd, carried out
//! there. Traffic between the sites' LAN hosts shows which tunnel each class rides. An edge
//! daemon killed (with a rule removed by hand meanwhile) comes back and reconciles without
//! re-creating anything; the controller killed comes back with its state; bad requests are
//! refused with their class and change nothing.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::{Down, ok, run, wait_until_or};

const LAB: &str = "sdwnbi";

fn sdwan(args: &[&str]) -> String {
    let mut a = vec!["sdwan"];
    a.extend_from_slice(args);
    a.extend_from_slice(&["--lab", LAB]);
    ok(&a)
}

fn exec(node: &str, cmd: &[&str]) -> String {
    let mut a = vec!["lab", "exec", LAB, node, "--"];
    a.extend_from_slice(cmd);
    ok(&a)
}

fn lan_addr(h: &str) -> String {
    let v: serde_json::Value = serde_json::from_str(&exec(h, &["ip", "-j", "-4", "addr", "show", "eth0"])).unwrap();
    v[0]["addr_info"][0]["local"].as_str().unwrap().to_string()
}

fn tx(node: &str, dev: &str) -> u64 {
    let v: serde_json::Value = serde_json::from_str(&exec(node, &["ip", "-j", "-s", "link", "show", dev])).unwrap();
    v[0]["stats64"]["tx"]["packets"].as_u64().unwrap()
}

/// Packets each tunnel of e1 sent while `f` ran.
fn sent_during(devs: &[&str], f: impl FnOnce()) -> Vec<u64> {
    let before: Vec<u64> = devs.iter().map(|d| tx("e1", d)).collect();
    f();
    devs.iter().zip(before).map(|(d, b)| tx("e1", d) - b).collect()
}

fn ping(from: &str, to: &str) -> bool {
    run(&[
        "lab", "exec", LAB, from, "--", "ping", "-c", "3", "-i", "0.2", "-W", "1", to,
    ])
    .status
    .success()
}

fn udp_5060(to: &str) {
    let send = format!("for i in $(seq 20); do echo sip > /dev/udp/{to}/5060; done");
    exec("h1", &["bash", "-c", &send]);
}

/// What e2's kernel holds for the SD-WAN: VXLAN devices with their ifindex, rules, routes of
/// the overlays' tables.
fn held(node: &str) -> (BTreeSet<String>, BTreeSet<String>, BTreeSet<String>) {
    let links: serde_json::Value =
        serde_json::from_str(&exec(node, &["ip", "-j", "-d", "link", "show", "type", "vxlan"])).unwrap();
    let devices = links
        .as_array()
        .unwrap()
        .iter()
        .map(|l| format!("{}#{}", l["ifname"].as_str().unwrap(), l["ifindex"]))
        .collect();
    let rules = exec(node, &["ip", "rule"])
        .lines()
        .filter(|l| l.contains("lookup 100"))
        .map(str::to_string)
        .collect();
    let routes = exec(node, &["ip", "route", "show", "table", "all"])
        .lines()
        .filter(|l| l.contains("table 100"))
        .map(str::to_string)
        .collect();
    (devices, rules, routes)
}

fn refused(args: &[&str], code: i32, needle: &str) {
    let mut a = vec!["sdwan"];
    a.extend_from_slice(args);
    a.extend_from_slice(&["--lab", LAB]);
    let out = run(&a);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(code), "wuos {a:?}: {err}");
    assert!(err.contains(needle), "wuos {a:?} should name {needle:?}: {err}");
}

/// Opens a TCP connection from h1 to a listener on h2 and returns the MSS h2's socket uses.
fn tcp_mss_seen_by_h2(h2: &str) -> u32 {
    let listen = "import socket,time\ns=socket.socket()\ns.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\n\
                  s.bind(('0.0.0.0',5201))\ns.listen()\nc,_=s.accept()\ntime.sleep(5)";
    let mut server = common::wuos()
        .args(["lab", "exec", LAB, "h2", "--", "python3", "-c", listen])
        .spawn()
        .unwrap();
    wait_until_or("h2 listens on 5201", Duration::from_secs(10), String::new, || {
        exec("h2", &["ss", "-tlnH"]).contains(":5201").then_some(())
    });
    let connect = format!("exec 3<>/dev/tcp/{h2}/5201; sleep 3");
    let mut client = common::wuos()
        .args(["lab", "exec", LAB, "h1", "--", "bash", "-c", &connect])
        .spawn()
        .unwrap();
    let mss = wait_until_or(
        "the connection is established on h2",
        Duration::from_secs(10),
        String::new,
        || {
            let ss = exec("h2", &["ss", "-tinH", "state", "established", "( sport = :5201 )"]);
            ss.split_whitespace()
                .find_map(|w| w.strip_prefix("mss:"))
                .and_then(|m| m.parse::<u32>().ok())
        },
    );
    let _ = client.kill();
    let _ = server.kill();
    let _ = client.wait();
    let _ = server.wait();
    mss
}

/// Restarts `node`'s daemon by SIGKILL and waits for the supervisor's new one and its socket.
fn kill_daemon(node: &str) {
    common::kill_daemon(LAB, node, || run(&["status", node, "--lab", LAB]).status.success());
}

#[test]
fn the_controller_configures_the_edges_through_the_nbi_and_restarts_lose_nothing() {
    if !wuos_southbound::privilege::may_run_privileged("sdwan controller") {
        return;
    }
    let _ = run(&["lab", "down", LAB]);
    ok(&["lab", "up", "sdwan:3:2", "--name", LAB, "--no-domains"]);
    let down = Down(LAB);
    let h2 = lan_addr("h2");
    let token = sdwan(&["token"]);
    assert_eq!(token.trim().len(), 64, "a 256-bit token in hex: {token:?}");

    // Overlays and classes from a TOML file: bulk (id 1, the LAN's unmarked traffic) over inet,
    // voice over mpls; class sip (UDP 5060) rides voice.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("sdwan.toml");
    std::fs::write(
        &file,
        r#"
[[overlay]]
name = "bulk"
sites = { e1 = {}, e2 = {}, e3 = {} }
underlays = ["inet"]

[[overlay]]
name = "voice"
sites = { e1 = {}, e2 = {}, e3 = {} }
underlays = ["mpls"]

[[class]]
name = "sip"
overlay = "voice"
rules = [{ proto = "udp", dst_ports = 5060 }]
"#,
    )
    .unwrap();
    let out = sdwan(&["apply", file.to_str().unwrap(), "--wait", "20"]);
    assert!(out.contains("every edge holds it"), "{out}");
    let status: serde_json::Value = serde_json::from_str(&sdwan(&["status", "--json"])).unwrap();
    for e in ["e1", "e2", "e3"] {
        let edge = &status["edges"][e];
        assert_eq!(edge["in_sync"], true, "{e}: {edge}");
        let names: Vec<&str> = edge["tunnels"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["wo1-inet", "wo2-mpls"], "{e}");
        assert_eq!(edge["classes"]["sip"], "voice");
    }

    // e1's adverts (protocol 2.1) carry its tunnels' state to the controller, 2 hops away.
    let g = status["generation"].as_u64().unwrap();
    wait_until_or(
        "e1's adverts report its tunnels up at the new generation",
        Duration::from_secs(20),
        || sdwan(&["status", "--json"]),
        || {
            let s: serde_json::Value = serde_json::from_str(&sdwan(&["status", "--json"])).unwrap();
            let a = &s["edges"]["e1"]["advertised"];
            (a["generation"].as_u64() == Some(g) && a["tunnels"] == 2 && a["tunnels_up"] == 2).then_some(())
        },
    );

    let tunnels = ["wo1-inet", "wo2-mpls"];
    let sent = sent_during(&tunnels, || assert!(ping("h1", &h2), "h1 cannot reach h2 over bulk"));
    assert!(sent[0] >= 3 && sent[1] == 0, "ICMP left e1 on {tunnels:?}: {sent:?}");
    let sent = sent_during(&tunnels, || udp_5060(&h2));
    assert!(
        sent[1] >= 20 && sent[0] == 0,
        "UDP 5060 left e1 on {tunnels:?}: {sent:?}"
    );

    // TCP across the overlay: e1 clamps the SYN's MSS to what the tunnel's MTU (1450) allows,
    // 1410, where the LAN alone (MTU 1500) would give 1460; `ss` shows the segment size less the
    // 12 bytes of TCP timestamps: 1398 (unclamped: 1448).
    let mss = tcp_mss_seen_by_h2(&h2);
    assert!(
        (1398..=1410).contains(&mss),
        "h2's MSS over the overlay: {mss} (not clamped to the tunnel's MTU?)"
    );

    // Re-pointed through the NBI: sip now rides bulk.
    sdwan(&["class", "assign", "sip", "bulk", "--wait", "20"]);
    let sent = sent_during(&tunnels, || udp_5060(&h2));
    assert!(
        sent[0] >= 20 && sent[1] == 0,
        "after assign, UDP 5060 left e1 on {tunnels:?}: {sent:?}"
    );

    // Bad requests: refused with their class (exit 3 bad input, 4 not found, 5 conflict),
    // nothing changes, traffic keeps flowing.
    let generation = status["generation"].as_u64().unwrap() + 1;
    refused(&["overlay", "create", "x", "--site", "e1,e9"], 4, "e9");
    refused(
        &["overlay", "create", "x", "--site", "e1,e2", "--underlay", "lte"],
        4,
        "lte",
    );
    refused(&["overlay", "create", "voice", "--site", "e1,e2"], 5, "voice");
    refused(&["overlay", "delete", "bulk"], 5, "sip");
    let class_c = |rule: &str, code: i32, needle: &str| {
        refused(
            &["class", "add", "c", "--overlay", "voice", "--rule", rule],
            code,
            needle,
        )
    };
    class_c("proto=udp,dst_ports=70000", 3, "70000");
    class_c("proto=udp,dst_ports=5000-6000", 5, "sip");
    class_c("dst=10.0.0.0/33", 3, "10.0.0.0/33");
    refused(&["class", "assign", "sip", "nope"], 4, "nope");
    let status: serde_json::Value = serde_json::from_str(&sdwan(&["status", "--json"])).unwrap();
    assert_eq!(
        status["generation"].as_u64(),
        Some(generation),
        "the refusals changed nothing"
    );
    assert!(ping("h1", &h2), "traffic stopped after refused requests");

    // The NBI wants the token.
    let denied = run(&["sdwan", "status", "--nbi", "127.0.0.1:1"]);
    assert_eq!(denied.status.code(), Some(3), "--nbi without a token is bad input");

    // e2's daemon killed, with a rule removed by hand: the restarted daemon reads the kernel,
    // puts the rule back and re-creates nothing (same devices, same ifindexes).
    let before = held("e2");
    assert_eq!(before.0.len(), 2, "{before:?}");
    let lost = before.1.iter().find(|r| r.contains("fwmark")).unwrap().clone();
    let priority = lost.split(':').next().unwrap().to_string();
    exec("e2", &["ip", "rule", "del", "priority", &priority]);
    kill_daemon("e2");
    let after = wait_until_or(
        "e2's restarted daemon put its rules back",
        Duration::from_secs(20),
        || format!("{:?}", held("e2")),
        || {
            let h = held("e2");
            (h.1 == before.1).then_some(h)
        },
    );
    assert_eq!(after, before, "e2 after its restart");
    assert!(ping("h1", &h2));

    // The controller reaches the restarted edge with the next change.
    sdwan(&[
        "class",
        "add",
        "iperf",
        "--overlay",
        "voice",
        "--rule",
        "proto=tcp,dst_ports=5201",
        "--wait",
        "20",
    ]);
    assert!(
        exec("e2", &["ip", "rule"]).contains(&format!("fwmark {:#x}", 0x5700_0002)),
        "e2 did not get class iperf"
    );

    // The controller killed: its state comes back from its store; the edges already hold it.
    let overlays = sdwan(&["overlay", "list", "--json"]);
    kill_daemon("dc");
    let again = wait_until_or("the NBI answers again", Duration::from_secs(20), String::new, || {
        let out = run(&["sdwan", "overlay", "list", "--json", "--lab", LAB]);
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    });
    assert_eq!(again, overlays, "the controller's overlays after its restart");
    let e1_before = held("e1");
    let status = wait_until_or(
        "every edge in sync after the controller restarted",
        Duration::from_secs(20),
        String::new,
        || {
            let s: serde_json::Value = serde_json::from_str(&sdwan(&["status", "--json"])).unwrap();
            s["edges"]
                .as_object()
                .unwrap()
                .values()
                .all(|e| e["in_sync"] == true)
                .then_some(s)
        },
    );
    assert_eq!(status["classes"], 2);
    assert_eq!(held("e1"), e1_before, "the resent pieces changed nothing on e1");

    drop(down);
    let left = String::from_utf8_lossy(
        &std::process::Command::new("ip")
            .args(["netns", "list"])
            .output()
            .unwrap()
            .stdout,
    )
    .into_owned();
    assert!(
        !left.contains(&format!("wuos.{LAB}.")),
        "namespaces left after lab down:\n{left}"
    );
    let host_links = String::from_utf8_lossy(
        &std::process::Command::new("ip")
            .args(["-br", "link", "show", "type", "vxlan"])
            .output()
            .unwrap()
            .stdout,
    )
    .into_owned();
    assert!(!host_links.contains("wo"), "VXLAN devices on the host:\n{host_links}");
}
