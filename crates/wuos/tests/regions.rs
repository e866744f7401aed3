//! Two orchestrators share a network without fighting (privileged: real namespaces, XDP,
//! Kamailio, SIPp, mutual TLS). The issue's line, both fogs linked to a data centre 30 ms away:
//!
//! ```text
//!   actor1 ── edge1 ── foga ── edge2 ── fogb ── edge3 ── actor3
//!                        │                │
//!                        └────── dc ──────┘   (30 ms each)
//! ```
//!
//! With the VoIP policy on both fogs, each places the PABX in its own region; each actor's
//! calls reach its region's instance (the VIP routes and the Kamailio that logged the calls say
//! so); no router took a route from another region's orchestrator; each decision log agrees
//! with the routes.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{Down, ok, run};
use serde_json::Value;

const LAB: &str = "rgn2test";

const TOPOLOGY: &str = r#"
name = "rgn2test"
[[node]]
name = "actor1"
role = "host"
[[node]]
name = "edge1"
role = "edge"
[[node]]
name = "foga"
role = "fog"
cpus = 1
memory = "640MiB"
[[node]]
name = "edge2"
role = "edge"
[[node]]
name = "fogb"
role = "fog"
cpus = 1
memory = "640MiB"
[[node]]
name = "edge3"
role = "edge"
[[node]]
name = "actor3"
role = "host"
[[node]]
name = "dc"
role = "dc"
memory = "2GiB"
[[link]]
a = "actor1"
b = "edge1"
[[link]]
a = "edge1"
b = "foga"
[[link]]
a = "foga"
b = "edge2"
[[link]]
a = "edge2"
b = "fogb"
[[link]]
a = "fogb"
b = "edge3"
[[link]]
a = "edge3"
b = "actor3"
[[link]]
a = "foga"
b = "dc"
delay = "30ms"
[[link]]
a = "fogb"
b = "dc"
delay = "30ms"
"#;

const VIP: &str = "10.255.0.10";

fn json(args: &[&str]) -> Value {
    serde_json::from_str(&ok(args)).expect("--json prints JSON")
}

fn wait_until<T>(what: &str, within: Duration, f: impl FnMut() -> Option<T>) -> T {
    common::wait_until_or(what, within, diagnosis, f)
}

/// What a failure message shows: both decision logs and the tails of the fogs' logs.
fn diagnosis() -> String {
    let mut d = String::new();
    for fog in ["foga", "fogb"] {
        let out = run(&["decisions", "--lab", LAB, "--router", fog]);
        d += &format!("--- decisions of {fog}\n{}", String::from_utf8_lossy(&out.stdout));
        let log = std::fs::read_to_string(format!("/run/wuos/labs/{LAB}/logs/{fog}.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        d += &format!(
            "--- {fog}.log\n{}\n",
            lines[lines.len().saturating_sub(12)..].join("\n")
        );
    }
    d
}

/// The gateway (or, for a local instance, the device) of `node`'s route to `dst`.
fn next_hop(node: &str, dst: &str) -> String {
    let out = ok(&["lab", "exec", LAB, node, "--", "ip", "-j", "route", "get", dst]);
    let v: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("ip -j route get {dst} on {node}: {e}: {out}"));
    let r = &v[0];
    r["gateway"]
        .as_str()
        .map(|g| format!("via {g}"))
        .unwrap_or_else(|| format!("dev {}", r["dev"].as_str().unwrap_or("?")))
}

/// A SIPp process in `node`: `args` after the common ones.
fn sipp(node: &str, dir: &std::path::Path, args: &[&str]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_wuos"))
        .args(["lab", "exec", LAB, node, "--", "sipp"])
        .args(args)
        .args(["-nostdin"])
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// What the SIPp processes that ran in `dir` logged as errors (`-trace_err`), last lines first
/// cut to a screenful.
fn sipp_errors(dir: &std::path::Path) -> String {
    let mut out = String::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.ends_with("_errors.log") {
            let text = std::fs::read_to_string(e.path()).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            out += &format!("--- {name}\n{}\n", lines[lines.len().saturating_sub(40)..].join("\n"));
        }
    }
    out
}

/// (successful, failed) calls of the SIPp caller whose statistics are `dir/stat.csv`.
fn calls_of(dir: &std::path::Path) -> (u64, u64) {
    let stat = std::fs::read_to_string(dir.join("stat.csv")).unwrap_or_default();
    let mut lines = stat.lines();
    let header: Vec<&str> = lines.next().unwrap_or_default().split(';').collect();
    let last: Vec<&str> = lines.last().unwrap_or_default().split(';').collect();
    let get = |name: &str| {
        header
            .iter()
            .position(|c| *c == name)
            .and_then(|i| last.get(i)?.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {name} in SIPp's statistics: {stat}"))
    };
    (get("SuccessfulCall(C)"), get("FailedCall(C)"))
}

#[test]
fn two_orchestrators_each_serve_their_region_and_never_route_the_other() {
    if !wuos_southbound::privilege::may_run_privileged("two orchestrators") {
        return;
    }
    let _ = run(&["lab", "down", LAB]);
    let _down = Down(LAB);
    let tmp = tempfile::tempdir().unwrap();
    let topo = tmp.path().join("rgn2.toml");
    std::fs::write(&topo, TOPOLOGY).unwrap();
    // Loopbacks follow the nodes' order (checked below): actor1 10.254.0.1, actor3 10.254.0.7.
    ok(&[
        "lab",
        "up",
        topo.to_str().unwrap(),
        "--name",
        LAB,
        "--xdp",
        "--param",
        "pabx.static_users=1000=10.254.0.1:5060 2000=10.254.0.7:5060",
    ]);
    let status = json(&["lab", "status", LAB, "--json"]);
    let loopback = |n: &str| -> String {
        status["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["name"] == n)
            .and_then(|x| x["loopback"].as_str())
            .unwrap_or_else(|| panic!("{n}'s loopback in {status}"))
            .to_string()
    };
    assert_eq!(
        (loopback("actor1").as_str(), loopback("actor3").as_str()),
        ("10.254.0.1", "10.254.0.7")
    );

    // Regions: nearest orchestrator, ties to the smaller id (edge2 is one hop from both).
    let want = [
        ("actor1", "foga"),
        ("edge1", "foga"),
        ("foga", "foga"),
        ("edge2", "foga"),
        ("fogb", "fogb"),
        ("edge3", "fogb"),
        ("actor3", "fogb"),
        ("dc", ""),
    ];
    wait_until("every router advertises its region", Duration::from_secs(30), || {
        want.iter()
            .all(|(n, region)| {
                let s = json(&["status", "--lab", LAB, n, "--json"]);
                s["own"]["region"].as_str().unwrap_or("") == *region
            })
            .then_some(())
    });

    // The data centre runs the PABX from the start (every region's fallback), as an operator
    // starts it; then the VoIP policy on both fogs.
    ok(&[
        "service", "start", "pabx", "--name", "pabx", "--router", "dc", "--lab", LAB,
    ]);
    let policy = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/voip.policy");
    for fog in ["foga", "fogb"] {
        ok(&["policy", "apply", policy, "--lab", LAB, "--router", fog]);
    }
    // Answerers on both actors; callers both ways at once: actor1 calls user 2000 (actor3),
    // actor3 calls user 1000 (actor1).
    let (d1, d3) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut uas1 = sipp(
        "actor1",
        d1.path(),
        &["-sn", "uas", "-i", "10.254.0.1", "-p", "5060", "-trace_err"],
    );
    let mut uas3 = sipp(
        "actor3",
        d3.path(),
        &["-sn", "uas", "-i", "10.254.0.7", "-p", "5060", "-trace_err"],
    );
    std::thread::sleep(Duration::from_millis(500));
    let caller = |node: &str, me: &str, user: &str, dir: &std::path::Path, n: &str| {
        sipp(
            node,
            dir,
            &[
                "-sn",
                "uac",
                &format!("{VIP}:5060"),
                "-s",
                user,
                "-i",
                me,
                "-p",
                "5062",
                // A socket per call: each call is a new flow the data path counts as demand.
                "-t",
                "un",
                "-max_socket",
                "100",
                "-r",
                "5",
                "-m",
                n,
                "-trace_stat",
                "-stf",
                "stat.csv",
                "-trace_err",
                "-fd",
                "1",
                "-timeout",
                "90s",
            ],
        )
    };
    // The calls' demand (counted by each region's data path) is what moves the PABX out of the
    // data centre: each fog places it on itself (its memory is low), and its log says so.
    let (w1, w3) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut warm1 = caller("actor1", "10.254.0.1", "2000", w1.path(), "300");
    let mut warm3 = caller("actor3", "10.254.0.7", "1000", w3.path(), "300");
    for fog in ["foga", "fogb"] {
        wait_until(
            &format!("{fog} serves the PABX itself"),
            Duration::from_secs(60),
            || {
                let d = json(&["decisions", "--lab", LAB, "--router", fog, "--json"]);
                (d["serving"]["pabx"] == fog).then_some(())
            },
        );
    }
    for c in [&mut warm1, &mut warm3] {
        let _ = c.kill();
        let _ = c.wait();
    }

    // The routes agree with the logs: each region's routers send the VIP to their own fog, each
    // fog to its local instance.
    for (node, fog) in [("edge1", "foga"), ("edge2", "foga"), ("edge3", "fogb")] {
        let fog_lo = loopback(fog);
        wait_until(
            &format!("{node} routes the VIP towards {fog}"),
            Duration::from_secs(20),
            || (next_hop(node, VIP) == next_hop(node, &fog_lo)).then_some(()),
        );
    }
    for fog in ["foga", "fogb"] {
        let hop = next_hop(fog, VIP);
        let via_domain = hop.starts_with("via 10.253.") || !hop.starts_with("via ");
        assert!(via_domain, "{fog} routes the VIP to its own instance, not on: {hop}");
    }

    // Calls both ways once both fogs serve: every one completes.
    let kamailio_log = |fog: &str| -> String {
        std::fs::read_to_string(format!("/run/wuos/labs/{LAB}/domains/{fog}/pabx/output.log"))
            .unwrap_or_else(|e| panic!("{fog}'s PABX log: {e}"))
    };
    let before = (
        kamailio_log("foga").lines().count(),
        kamailio_log("fogb").lines().count(),
    );
    let mut uac1 = caller("actor1", "10.254.0.1", "2000", d1.path(), "20");
    let mut uac3 = caller("actor3", "10.254.0.7", "1000", d3.path(), "20");
    uac1.wait().unwrap();
    uac3.wait().unwrap();
    for c in [&mut uas1, &mut uas3] {
        let _ = c.kill();
        let _ = c.wait();
    }
    assert_eq!(
        calls_of(d1.path()),
        (20, 0),
        "actor1's calls through foga's PABX; SIPp's errors:\n{}",
        sipp_errors(d1.path())
    );
    assert_eq!(
        calls_of(d3.path()),
        (20, 0),
        "actor3's calls through fogb's PABX; SIPp's errors:\n{}",
        sipp_errors(d3.path())
    );

    // Which Kamailio took which calls: each instance logs one line per new call (those of the
    // 40 calls above come after the lines counted before them).
    let calls_in = |fog: &str, skip: usize| -> (usize, usize) {
        let log = kamailio_log(fog);
        let lines: Vec<&str> = log.lines().skip(skip).filter(|l| l.contains("call ")).collect();
        let from = |ip: &str| lines.iter().filter(|l| l.contains(&format!("@{ip}"))).count();
        (from("10.254.0.1"), from("10.254.0.7"))
    };
    assert_eq!(
        calls_in("foga", before.0),
        (20, 0),
        "foga's instance took actor1's calls, none of actor3's"
    );
    assert_eq!(
        calls_in("fogb", before.1),
        (0, 20),
        "fogb's instance took actor3's calls, none of actor1's"
    );

    // No router took a route from another region's orchestrator (every route intent a
    // controller received is logged with its sender, from the sender's certificate).
    for (node, region) in want {
        let log = std::fs::read_to_string(format!("/run/wuos/labs/{LAB}/logs/{node}.log")).unwrap();
        for line in log.lines().filter(|l| l.contains("intent=route pabx")) {
            let sender = line
                .split_whitespace()
                .find_map(|w| w.strip_prefix("sender="))
                .unwrap_or_else(|| panic!("a route intent without its sender: {line}"));
            let allowed = if region.is_empty() {
                // The data centre is in no region: each orchestrator only points it at itself.
                line.contains("-> dc")
            } else {
                sender == region
            };
            assert!(allowed, "{node} (region {region:?}) got a route from {sender}: {line}");
        }
    }
    // Each decision log agrees with the routes, once more at the end.
    for (fog, node) in [("foga", "edge1"), ("fogb", "edge3")] {
        let d = json(&["decisions", "--lab", LAB, "--router", fog, "--json"]);
        assert_eq!(d["serving"]["pabx"], fog, "{d}");
        assert_eq!(next_hop(node, VIP), next_hop(node, &loopback(fog)));
    }
}
