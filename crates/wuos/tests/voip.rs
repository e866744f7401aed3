//! The VoIP scenario end to end (`wuos demo voip --quick`), privileged: real namespaces, XDP,
//! Kamailio as the PABX, SIPp callers. Then the controller of the router serving the PABX is
//! killed and restarted by the lab supervisor: it must keep serving, without a second instance.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::{Down, daemon_pids, ok, run};
use serde_json::Value;

const LAB: &str = "voip";

fn privileged() -> bool {
    wuos_southbound::privilege::may_run_privileged("voip scenario")
}

fn json(args: &[&str]) -> Value {
    serde_json::from_str(&ok(args)).expect("--json prints JSON")
}

/// SIPp calls from actor1 to user 2000 (a SIPp answerer on actor2) through the VIP, running in
/// the background; [`Calls::finish`] waits for them and counts.
struct Calls {
    dir: tempfile::TempDir,
    uas: std::process::Child,
    uac: std::process::Child,
}

impl Calls {
    /// `n` calls at `rate` per second, each held `hold_ms` before its BYE (calls in flight).
    fn start(n: u32, rate: u32, hold_ms: u32) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let uas = Command::new(env!("CARGO_BIN_EXE_wuos"))
            .args(["lab", "exec", LAB, "actor2", "--"])
            .args(["sipp", "-sn", "uas", "-i", "10.254.0.5", "-p", "5060", "-nostdin"])
            .current_dir(dir.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(500));
        let uac = Command::new(env!("CARGO_BIN_EXE_wuos"))
            .args(["lab", "exec", LAB, "actor1", "--"])
            .args([
                "sipp",
                "-sn",
                "uac",
                "10.255.0.10:5060",
                "-s",
                "2000",
                "-i",
                "10.254.0.1",
                "-p",
                "5062",
            ])
            .args([
                "-t",
                "un",
                "-max_socket",
                "100",
                "-r",
                &rate.to_string(),
                "-m",
                &n.to_string(),
            ])
            .args(["-d", &hold_ms.to_string(), "-nostdin"])
            .args([
                "-trace_stat",
                "-stf",
                "stat.csv",
                "-fd",
                "1",
                "-timeout",
                "60s",
                "-trace_err",
            ])
            .current_dir(dir.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        Calls { dir, uas, uac }
    }

    /// Waits for the caller; (successful, failed).
    fn finish(mut self) -> (u64, u64) {
        let out = self.uac.wait_with_output().unwrap();
        let _ = self.uas.kill();
        let _ = self.uas.wait();
        let stat = std::fs::read_to_string(self.dir.path().join("stat.csv")).unwrap_or_default();
        let mut lines = stat.lines();
        let header: Vec<&str> = lines.next().unwrap_or_default().split(';').collect();
        let last: Vec<&str> = lines.last().unwrap_or_default().split(';').collect();
        let get = |name: &str| {
            header
                .iter()
                .position(|c| *c == name)
                .and_then(|i| last.get(i)?.trim().parse().ok())
                .unwrap_or_else(|| {
                    panic!(
                        "no {name} in SIPp's statistics: {}",
                        String::from_utf8_lossy(&out.stderr)
                    )
                })
        };
        let (good, bad) = (get("SuccessfulCall(C)"), get("FailedCall(C)"));
        if bad > 0 {
            // What SIPp saw of the failed calls (uac_PID_errors.log), for the failure's message.
            for e in std::fs::read_dir(self.dir.path()).unwrap().flatten() {
                if e.file_name().to_string_lossy().ends_with("_errors.log") {
                    let text = std::fs::read_to_string(e.path()).unwrap_or_default();
                    eprintln!(
                        "SIPp's error trace ({}):\n{}",
                        e.path().display(),
                        text.chars().take(6000).collect::<String>()
                    );
                }
            }
        }
        (good, bad)
    }
}

/// Runs `n` calls (10 per second) and waits for them.
fn calls(n: u32) -> (u64, u64) {
    Calls::start(n, 10, 0).finish()
}

#[test]
fn the_pabx_follows_the_policy_calls_never_fail_and_a_restarted_controller_keeps_serving() {
    if !privileged() {
        return;
    }
    let _ = run(&["lab", "down", LAB]);
    let _down = Down(LAB);
    let out = tempfile::tempdir().unwrap();
    let r = json(&[
        "demo",
        "voip",
        "--quick",
        "--json",
        "--keep",
        "--out",
        out.path().to_str().unwrap(),
    ]);
    // What the failure messages show: the results and the routers' logs.
    let diag = |what: &str| -> String {
        let mut d = format!("{what}\nresults: {r}\n");
        for node in ["fog", "dc", "edge1"] {
            let log = std::fs::read_to_string(format!("/run/wuos/labs/{LAB}/logs/{node}.log")).unwrap_or_default();
            let tail: Vec<&str> = log.lines().filter(|l| !l.contains("DEBUG")).collect();
            d.push_str(&format!(
                "--- {node}.log (last lines)\n{}\n",
                tail[tail.len().saturating_sub(15)..].join("\n")
            ));
        }
        d
    };
    let phases = r["phases"].as_array().expect("phases");
    assert_eq!(phases.len(), 3, "{r}");
    let at: Vec<&str> = phases.iter().map(|p| p["pabx_at"].as_str().unwrap()).collect();
    assert_eq!(at[..2], ["dc", "fog"], "{r}");
    assert_ne!(at[2], "fog", "memory pressure moves the PABX off the fog router: {r}");
    for p in phases {
        assert_eq!(
            p["calls_failed"],
            0,
            "{}",
            diag(&format!("no call fails across the moves: {p}"))
        );
        assert!(
            p["calls_completed"].as_u64().unwrap() > 0,
            "{}",
            diag(&format!("calls in every phase: {p}"))
        );
    }
    let median = |i: usize| phases[i]["setup_median_ms"].as_f64().expect("a median");
    assert!(
        median(1) + 50.0 <= median(0),
        "setup on the fog router ({} ms) at least 50 ms below the data centre ({} ms)",
        median(1),
        median(0)
    );
    let decisions = r["decisions"].as_array().unwrap();
    assert!(decisions.len() >= 2, "{r}");
    assert_eq!(
        (decisions[0]["from"].as_str(), decisions[0]["to"].as_str()),
        (Some("dc"), Some("fog"))
    );
    assert!(decisions[1]["reason"].as_str().unwrap().contains("mem.used_pct"), "{r}");
    for f in ["voip.png", "voip.svg", "results.json"] {
        assert!(out.path().join(f).exists(), "{f} written");
    }

    // A policy that does not parse, or names a service the catalog does not know, is refused with
    // its location, and the one in force stays.
    let before = json(&["policy", "show", "--lab", LAB, "--json"]);
    for (text, needle) in [
        (
            "service pabx {\n  match udp dport 5060 to 10.255.0.10\n  place local when mem.used_pct lt 30\n  otherwise datacenter\n}\n",
            ":3:",
        ),
        (
            "service nosuch {\n  match udp dport 5060\n  otherwise datacenter\n}\n",
            "unknown service \"nosuch\"",
        ),
    ] {
        let f = out.path().join("bad.policy");
        std::fs::write(&f, text).unwrap();
        let r = run(&["policy", "apply", f.to_str().unwrap(), "--lab", LAB]);
        let err = String::from_utf8_lossy(&r.stderr);
        assert_eq!(r.status.code(), Some(3), "refused as bad input: {err}");
        assert!(err.contains("bad.policy:") && err.contains(needle), "{err}");
        assert_eq!(
            json(&["policy", "show", "--lab", LAB, "--json"]),
            before,
            "the policy in force stays"
        );
    }

    // The fog router's daemon — the orchestrator — is SIGKILLed while the PABX is served from a
    // neighbor and calls are in flight. On restart it rebuilds the placement from its store and
    // the neighbor's advert: the neighbor's instance is adopted (the decision log says so), no
    // VIP route is pointed back at the data centre, no instance is orphaned, no call fails.
    let serving = at[2].to_string();
    assert!(
        ["edge1", "edge2"].contains(&serving.as_str()),
        "the PABX is on a neighbor of fog: {r}"
    );
    let in_flight = Calls::start(60, 10, 2000);
    std::thread::sleep(Duration::from_millis(1500));
    let fog = daemon_pids(LAB, "fog");
    assert_eq!(fog.len(), 1, "one daemon on fog");
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(fog[0]), nix::sys::signal::Signal::SIGKILL).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let restored = loop {
        let d = run(&["decisions", "--lab", LAB, "--json"]);
        let found = d
            .status
            .success()
            .then(|| serde_json::from_slice::<Value>(&d.stdout).unwrap())
            .and_then(|d| {
                d["decisions"]
                    .as_array()?
                    .iter()
                    .find(|x| x["kind"] == "restore")
                    .cloned()
            });
        if let Some(x) = found {
            break x;
        }
        assert!(
            Instant::now() < deadline,
            "fog's orchestrator restarts and restores its placement"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let reason = restored["reason"].as_str().unwrap();
    assert!(
        reason.contains(&format!("served at {serving}")) && reason.contains("adopted"),
        "the decision log explains the re-adoption: {restored}"
    );
    let moved = r["decisions"]
        .as_array()
        .unwrap()
        .iter()
        .rev()
        .find(|d| d["kind"] == "move" && d["to"] == serving.as_str())
        .cloned()
        .unwrap_or_else(|| panic!("the move to {serving}: {r}"));
    let switched = moved["switched_unix_ms"].as_i64().unwrap_or(0);
    assert!(
        switched > 0 && switched < restored["at_unix_ms"].as_i64().unwrap(),
        "the move switched before the restart, and the restore switches nothing: {moved} / {restored}"
    );
    let (good, bad) = in_flight.finish();
    assert_eq!((good, bad), (60, 0), "calls across the orchestrator's restart");
    let d = json(&["decisions", "--lab", LAB, "--json"]);
    assert_eq!(d["serving"]["pabx"], serving.as_str(), "still served where it was: {d}");
    assert!(
        !d["decisions"].as_array().unwrap().iter().any(|x| x["kind"] == "orphan"),
        "nothing was orphaned to stop: {d}"
    );
    let on_routers: Vec<(String, usize)> = ["edge1", "fog", "edge2"]
        .iter()
        .map(|n| {
            let count = json(&["service", "list", "--router", n, "--lab", LAB, "--json"])["domains"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|x| x["service"] == "pabx")
                .count();
            (n.to_string(), count)
        })
        .collect();
    assert_eq!(
        on_routers.iter().map(|c| c.1).sum::<usize>(),
        1,
        "one PABX outside the dc, no orphan: {on_routers:?}"
    );
    // Every other router's VIP route, read back from its kernel, still leads where the serving
    // router's address does (not towards the data centre).
    let serving_addr = json(&["status", &serving, "--lab", LAB, "--json"])["own"]["control_address"]
        .as_str()
        .unwrap()
        .split(':')
        .next()
        .unwrap()
        .to_string();
    let next_hop = |node: &str, dst: &str| -> String {
        let route = ok(&["lab", "exec", LAB, node, "--", "ip", "route", "get", dst]);
        // "DST via GW dev IF src …" or "DST dev IF src …": the part up to "src".
        route
            .split(" src ")
            .next()
            .unwrap()
            .trim_start_matches(dst)
            .trim()
            .to_string()
    };
    for node in ["edge1", "fog", "edge2"].into_iter().filter(|n| *n != serving) {
        assert_eq!(
            next_hop(node, "10.255.0.10"),
            next_hop(node, &serving_addr),
            "{node}'s route to the VIP leads towards {serving}"
        );
    }

    // The daemons (controllers) of the data centre and of the router serving the PABX are killed
    // and restarted by the lab supervisor. The data centre re-adopts its PABX (same process, no
    // second one); the orchestrator moves the service off the router that went silent, and the
    // stop it owes that router is delivered once its controller is back: in the end exactly one
    // PABX runs outside the data centre, where the orchestrator says, and calls complete.
    // The serving router's XDP classifier counted the calls and redirects them to the instance.
    let st = json(&["status", &serving, "--lab", LAB, "--json"]);
    let dp = st["datapath"]
        .as_array()
        .and_then(|a| a.iter().find(|d| d["service"] == "pabx"))
        .cloned()
        .unwrap_or_else(|| panic!("{serving} reports its data path: {st}"));
    assert!(
        dp["packets"].as_u64().unwrap() > 0 && dp["flows"].as_u64().unwrap() > 0,
        "{dp}"
    );
    assert_ne!(
        dp["redirect_to"], "",
        "the PABX's packets are redirected to the local instance: {dp}"
    );
    // Where XDP does not fit — packets a router sends itself — nftables counts and marks them.
    let sent = run(&[
        "lab",
        "exec",
        LAB,
        "fog",
        "--",
        "bash",
        "-c",
        "echo probe > /dev/udp/10.255.0.10/5060",
    ]);
    assert!(sent.status.success(), "{}", String::from_utf8_lossy(&sent.stderr));
    let table = ok(&["lab", "exec", LAB, "fog", "--", "nft", "list", "table", "ip", "wuos"]);
    let line = table
        .lines()
        .find(|l| l.contains("udp dport 5060") && l.contains("comment \"pabx\""))
        .unwrap_or_else(|| panic!("fog marks the PABX's traffic: {table}"));
    assert!(line.contains("meta mark set 0x57"), "{line}");
    assert!(
        !line.contains("counter packets 0 "),
        "the router's own datagram was counted: {line}"
    );
    let pabx_on = |node: &str| -> Vec<Value> {
        json(&["service", "list", "--router", node, "--lab", LAB, "--json"])["domains"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|d| d["service"] == "pabx")
            .cloned()
            .collect()
    };
    let dc_before = pabx_on("dc");
    assert_eq!(dc_before.len(), 1);
    assert_eq!(pabx_on(&serving).len(), 1);
    for node in ["dc", serving.as_str()] {
        let pids = daemon_pids(LAB, node);
        assert_eq!(pids.len(), 1, "one daemon on {node}");
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pids[0]), nix::sys::signal::Signal::SIGKILL).unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    for node in ["dc", serving.as_str()] {
        while !run(&["status", node, "--lab", LAB, "--json"]).status.success() {
            assert!(Instant::now() < deadline, "the supervisor restarts {node}'s daemon");
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    let dc_after = pabx_on("dc");
    assert_eq!(dc_after.len(), 1, "no duplicate PABX in the dc: {dc_after:?}");
    assert_eq!(
        dc_after[0]["pid"], dc_before[0]["pid"],
        "the dc's PABX was re-adopted, not restarted"
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    let (where_now, counts) = loop {
        let d = json(&["decisions", "--lab", LAB, "--json"]);
        let where_now = d["serving"]["pabx"].as_str().unwrap_or_default().to_string();
        let counts: Vec<(String, usize)> = ["edge1", "fog", "edge2"]
            .iter()
            .map(|n| (n.to_string(), pabx_on(n).len()))
            .collect();
        let total: usize = counts.iter().map(|c| c.1).sum();
        let at_serving = counts.iter().find(|c| c.0 == where_now).map_or(0, |c| c.1);
        if total == 1 && at_serving == 1 {
            break (where_now, counts);
        }
        assert!(
            Instant::now() < deadline,
            "never converged to one PABX where the orchestrator serves it ({where_now}): {counts:?}"
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    eprintln!("after the restarts the PABX is served at {where_now}: {counts:?}");
    let (good, bad) = calls(10);
    assert_eq!(
        (good, bad),
        (10, 0),
        "calls through the VIP after the controllers restarted"
    );
}
