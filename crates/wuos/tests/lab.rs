//! Privileged integration tests of `wuos lab`: real namespaces, veths, routes, cgroups, tc and the
//! user-space relay, driven through the `wuos` binary the way a user drives it.
//!
//! They need root. Outside CI they skip (printing why) when not root; with CI=true a skip fails.

use std::path::Path;
use std::process::Output;
use std::time::{Duration, Instant};

use wuos_lab::probe::parse_ping;
mod common;

use common::{ok, run, wuos};
use wuos_southbound::privilege::may_run_privileged as privileged;

/// Tears the lab down when the test ends, even on panic.
struct Lab(&'static str);

impl Lab {
    fn up(name: &'static str, topology: &str) -> Self {
        let _ = run(&["lab", "down", name]);
        ok(&["lab", "up", topology, "--name", name, "--no-daemons"]);
        Lab(name)
    }

    fn loopback(&self, node: &str) -> String {
        let v: serde_json::Value = serde_json::from_str(&ok(&["lab", "status", self.0, "--json"])).unwrap();
        v["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["name"] == node)
            .unwrap_or_else(|| panic!("node {node} not in status"))["loopback"]
            .as_str()
            .unwrap()
            .to_string()
    }

    fn exec(&self, node: &str, cmd: &[&str]) -> Output {
        let mut args = vec!["lab", "exec", self.0, node, "--"];
        args.extend_from_slice(cmd);
        run(&args)
    }

    /// (received, avg rtt ms) of `ping -c count -i interval`.
    fn ping(&self, from: &str, to_addr: &str, count: u32, interval: &str) -> (u32, Option<f64>) {
        let out = self.exec(
            from,
            &[
                "ping",
                "-q",
                "-c",
                &count.to_string(),
                "-i",
                interval,
                "-W",
                "1",
                to_addr,
            ],
        );
        let p = parse_ping(&String::from_utf8_lossy(&out.stdout));
        (p.received, p.avg_ms)
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let _ = run(&["lab", "down", self.0]);
    }
}

/// Everything a lab can leave behind: namespaces, cgroups, relay processes, state.
fn leftovers(lab: &str) -> Vec<String> {
    let mut found = Vec::new();
    let prefix = format!("wuos.{lab}.");
    for e in std::fs::read_dir("/run/netns").into_iter().flatten().flatten() {
        let n = e.file_name().to_string_lossy().into_owned();
        if n.starts_with(&prefix) {
            found.push(format!("namespace {n}"));
        }
    }
    for e in std::fs::read_dir("/sys/fs/cgroup").into_iter().flatten().flatten() {
        let p = e.path().join("wuos").join(lab);
        if p.exists() {
            found.push(format!("cgroup {}", p.display()));
        }
    }
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        if let Ok(cmd) = std::fs::read(e.path().join("cmdline")) {
            let args: Vec<&[u8]> = cmd.split(|&b| b == 0).collect();
            let mine = args.contains(&lab.as_bytes())
                && (args.contains(&b"relay".as_slice()) || args.contains(&b"supervise".as_slice()));
            let daemon = String::from_utf8_lossy(&cmd).contains(&format!("/labs/{lab}/"));
            if mine || daemon {
                found.push(format!(
                    "process {}: {}",
                    e.file_name().to_string_lossy(),
                    String::from_utf8_lossy(&cmd).replace('\0', " ")
                ));
            }
        }
    }
    if Path::new("/run/wuos/labs").join(lab).exists() {
        found.push("state directory".into());
    }
    if Path::new("/run/wuos/labs").join(format!("{lab}.lock")).exists() {
        found.push("lock file".into());
    }
    found
}

fn host_interfaces() -> usize {
    std::fs::read_dir("/sys/class/net").map(|d| d.count()).unwrap_or(0)
}

#[test]
fn line10_pings_end_to_end_and_leaves_nothing_behind() {
    if !privileged("line10") {
        return;
    }
    let ifs_before = host_interfaces();
    // With router daemons: teardown must stop them and their supervisor too.
    let _ = run(&["lab", "down", "t-line"]);
    let up = ok(&[
        "lab",
        "up",
        "line:10",
        "--name",
        "t-line",
        "--telemetry-interval",
        "200ms",
    ]);
    assert!(up.contains("10 daemons"), "{up}");
    let lab = Lab("t-line");
    let r10 = lab.loopback("r10");
    let (rx, rtt) = lab.ping("r1", &r10, 3, "0.2");
    assert_eq!(rx, 3, "r1 must reach r10 ({r10}) over 9 hops; rtt {rtt:?}");
    let trace = lab.exec("r1", &["cat", "/proc/self/cgroup"]);
    let cg = String::from_utf8_lossy(&trace.stdout);
    assert!(
        cg.contains("/wuos/t-line/r1"),
        "lab exec must run in the router's cgroup:\n{cg}"
    );
    assert_eq!(
        host_interfaces(),
        ifs_before,
        "no interface may appear in the host namespace"
    );
    drop(lab);
    let left = leftovers("t-line");
    assert!(left.is_empty(), "after down, these remain: {left:?}");
    assert_eq!(host_interfaces(), ifs_before, "host interfaces changed");
}

#[test]
fn grid3x3_all_pairs_reach_each_other() {
    if !privileged("grid3x3") {
        return;
    }
    let lab = Lab::up("t-grid", "grid:3x3");
    let v: serde_json::Value = serde_json::from_str(&ok(&["lab", "status", "t-grid", "--json"])).unwrap();
    let nodes: Vec<(String, String)> = v["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| {
            (
                n["name"].as_str().unwrap().to_string(),
                n["loopback"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(nodes.len(), 9);
    let mut failed = Vec::new();
    for (from, _) in &nodes {
        for (to, addr) in &nodes {
            if from != to && lab.ping(from, addr, 1, "0.2").0 != 1 {
                failed.push(format!("{from}->{to}"));
            }
        }
    }
    assert!(failed.is_empty(), "unreachable pairs: {failed:?}");
}

#[test]
fn delay_20ms_gives_rtt_40_to_45ms_and_jitter_and_loss_work() {
    if !privileged("delay") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("delay.toml");
    std::fs::write(
        &file,
        "[[node]]\nname = \"r1\"\nrole = \"edge\"\n[[node]]\nname = \"r2\"\nrole = \"fog\"\n[[node]]\nname = \"r3\"\nrole = \"edge\"\n\
         [[link]]\na = \"r1\"\nb = \"r2\"\ndelay = \"20ms\"\n[[link]]\na = \"r2\"\nb = \"r3\"\n",
    )
    .unwrap();
    let lab = Lab::up("t-delay", file.to_str().unwrap());
    let r2 = lab.loopback("r2");
    lab.ping("r1", &r2, 1, "0.2"); // ARP
    let (rx, rtt) = lab.ping("r1", &r2, 10, "0.2");
    assert_eq!(rx, 10, "no loss configured");
    let rtt = rtt.unwrap();
    assert!(
        (40.0..=45.0).contains(&rtt),
        "20 ms each way must give an RTT of 40-45 ms, got {rtt:.2} ms"
    );
    // The undelayed link stays fast.
    let r3 = lab.loopback("r3");
    let (_, fast) = lab.ping("r2", &r3, 5, "0.2");
    assert!(fast.unwrap() < 5.0, "r2-r3 has no delay, got {fast:?} ms");
    // Changing the delay at run time takes effect.
    ok(&["lab", "link", "set", "r1", "r2", "--lab", "t-delay", "--delay", "5ms"]);
    let (_, rtt5) = lab.ping("r1", &r2, 10, "0.2");
    let rtt5 = rtt5.unwrap();
    assert!(
        (10.0..=14.0).contains(&rtt5),
        "5 ms each way must give 10-14 ms, got {rtt5:.2} ms"
    );
    // Jitter spreads the round trips; frames stay in order.
    ok(&[
        "lab", "link", "set", "r1", "r2", "--lab", "t-delay", "--delay", "10ms", "--jitter", "5ms",
    ]);
    let out = lab.exec("r1", &["ping", "-q", "-c", "30", "-i", "0.05", &r2]);
    let text = String::from_utf8_lossy(&out.stdout);
    let mdev = parse_ping(&text)
        .mdev_ms
        .unwrap_or_else(|| panic!("no rtt line in {text}"));
    assert!(
        mdev >= 1.0,
        "5 ms of jitter each way must spread the RTT (mdev >= 1 ms), got {mdev} ms"
    );
    // 50% loss in each direction: a round trip survives with probability 0.25.
    ok(&[
        "lab", "link", "set", "r1", "r2", "--lab", "t-delay", "--delay", "1ms", "--jitter", "0", "--loss", "50%",
    ]);
    let (rx, _) = lab.ping("r1", &r2, 200, "0.01");
    assert!(
        (20..=80).contains(&rx),
        "expected about 50 of 200 round trips to survive 50% loss each way, got {rx}"
    );
}

#[test]
fn rate_of_10mbit_is_enforced_within_10_percent() {
    if !privileged("rate") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("rate.toml");
    std::fs::write(
        &file,
        "[[node]]\nname = \"r1\"\nrole = \"edge\"\n[[node]]\nname = \"r2\"\nrole = \"edge\"\n[[link]]\na = \"r1\"\nb = \"r2\"\nrate = \"10mbit\"\n",
    )
    .unwrap();
    let lab = Lab::up("t-rate", file.to_str().unwrap());
    let r2 = lab.loopback("r2");
    let mut srv = wuos()
        .args(["lab", "exec", "t-rate", "r2", "--", "iperf3", "-s", "-1"])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(400));
    let out = lab.exec("r1", &["iperf3", "-c", &r2, "-t", "4", "-J"]);
    let _ = srv.wait();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("iperf3 -J output ({e}): {}", String::from_utf8_lossy(&out.stdout)));
    let mbps = v["end"]["sum_received"]["bits_per_second"].as_f64().unwrap() / 1e6;
    assert!(
        (9.0..=11.0).contains(&mbps),
        "10 Mbit/s configured, iperf3 measured {mbps:.2} Mbit/s"
    );
}

#[test]
fn link_down_breaks_and_up_restores_reachability() {
    if !privileged("updown") {
        return;
    }
    let lab = Lab::up("t-updown", "line:3");
    let r3 = lab.loopback("r3");
    assert_eq!(lab.ping("r1", &r3, 1, "0.2").0, 1, "reachable before");
    ok(&["lab", "link", "set", "r2", "r3", "--lab", "t-updown", "--down"]);
    assert_eq!(
        lab.ping("r1", &r3, 2, "0.2").0,
        0,
        "r2-r3 is down: r3 must be unreachable"
    );
    let st = ok(&["lab", "status", "t-updown", "--json"]);
    assert!(st.contains("\"up\": false"), "status must show the link down:\n{st}");
    ok(&["lab", "link", "set", "r2", "r3", "--lab", "t-updown", "--up"]);
    assert_eq!(lab.ping("r1", &r3, 2, "0.2").0, 2, "reachable again after --up");
}

#[test]
fn down_removes_a_lab_whose_up_was_killed_half_way() {
    if !privileged("sigkill") {
        return;
    }
    let _ = run(&["lab", "down", "t-kill"]);
    let mut child = wuos()
        .args([
            "lab",
            "up",
            "grid:10x10",
            "--name",
            "t-kill",
            "--workers",
            "1",
            "--no-daemons",
        ])
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let made = std::fs::read_dir("/run/netns")
            .map(|d| {
                d.flatten()
                    .filter(|e| e.file_name().to_string_lossy().starts_with("wuos.t-kill."))
                    .count()
            })
            .unwrap_or(0);
        if made >= 20 {
            break;
        }
        assert!(Instant::now() < deadline, "lab up made only {made} namespaces in 20 s");
        std::thread::sleep(Duration::from_millis(2));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    assert!(
        !leftovers("t-kill").is_empty(),
        "the killed up must have left something to clean"
    );
    let out = ok(&["lab", "down", "t-kill"]);
    assert!(out.contains("is down"), "{out}");
    let left = leftovers("t-kill");
    assert!(left.is_empty(), "after down, these remain: {left:?}");
    // Idempotent.
    let again = ok(&["lab", "down", "t-kill"]);
    assert!(again.contains("not up"), "{again}");
}

#[test]
fn status_json_graph_and_list_describe_the_lab() {
    if !privileged("status") {
        return;
    }
    let lab = Lab::up("t-status", "tree:2x3");
    let v: serde_json::Value = serde_json::from_str(&ok(&["lab", "status", lab.0, "--json"])).unwrap();
    let nodes = v["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 7, "tree:2x3 has 7 routers");
    for n in nodes {
        assert!(
            n["name"].is_string() && n["role"].is_string() && n["loopback"].is_string(),
            "{n}"
        );
    }
    assert_eq!(nodes[0]["role"], "dc", "the tree root is the data center");
    let dot = ok(&["lab", "graph", lab.0]);
    assert!(dot.starts_with("graph") || dot.contains("graph "), "{dot}");
    assert!(dot.contains("r0"), "{dot}");
    let svg = ok(&["lab", "graph", lab.0, "--format", "svg"]);
    assert!(
        svg.contains("<svg"),
        "graphviz must render SVG: {}",
        &svg[..svg.len().min(200)]
    );
    let list = ok(&["lab", "list"]);
    assert!(list.contains("t-status"), "{list}");
}

#[test]
fn bad_topology_is_refused_with_its_location() {
    // Needs no root: validation happens before anything is created.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.toml");
    std::fs::write(
        &file,
        "[[node]]\nname = \"r1\"\nrole = \"edge\"\n[[link]]\na = \"r1\"\nb = \"r9\"\n",
    )
    .unwrap();
    let out = run(&["lab", "up", file.to_str().unwrap(), "--name", "t-bad"]);
    assert_eq!(out.status.code(), Some(3), "bad input exits with 3");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad.toml:6:"),
        "the error must give file:line:col, got: {err}"
    );
    assert!(err.contains("r9"), "the error must name the unknown node: {err}");
    assert!(
        !Path::new("/run/wuos/labs/t-bad").exists(),
        "nothing may be created for a refused topology"
    );
    let out = run(&["lab", "up", "grid:3", "--name", "t-bad"]);
    assert_eq!(
        out.status.code(),
        Some(3),
        "a malformed generator is bad input: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn router_cgroup_enforces_its_cpu_quota_and_memory_limit() {
    if !privileged("cgroup") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("hw.toml");
    std::fs::write(
        &file,
        "[[node]]\nname = \"small\"\nrole = \"edge\"\ncpus = 0.2\nmemory = \"64MiB\"\n\
         [[node]]\nname = \"big\"\nrole = \"dc\"\n[[link]]\na = \"small\"\nb = \"big\"\n",
    )
    .unwrap();
    let lab = Lab::up("t-hw", file.to_str().unwrap());
    let v: serde_json::Value = serde_json::from_str(&ok(&["lab", "status", lab.0, "--json"])).unwrap();
    let small = &v["nodes"][0];
    assert_eq!(small["cpus"].as_f64(), Some(0.2), "{small}");
    assert_eq!(small["memory"].as_u64(), Some(64 << 20), "{small}");
    assert!(
        v["nodes"][1]["memory"].is_null(),
        "no limit given means unlimited: {}",
        v["nodes"][1]
    );

    // Memory: buffering 256 MiB (`tail -n 1` keeps a line without a newline in memory) inside a 64 MiB router
    // must be killed.
    let out = lab.exec(
        "small",
        &["sh", "-c", "head -c 268435456 /dev/zero | tail -n 1 >/dev/null"],
    );
    assert!(
        !out.status.success(),
        "a 256 MiB allocation in a 64 MiB router must fail"
    );
    let out = lab.exec(
        "big",
        &["sh", "-c", "head -c 268435456 /dev/zero | tail -n 1 >/dev/null"],
    );
    assert!(
        out.status.success(),
        "the same allocation in an unlimited router must succeed"
    );

    // CPU: a busy loop in a 0.2-core router gets throttled by the CFS quota.
    let stat = |node: &str| -> u64 {
        let p = if Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
            format!("/sys/fs/cgroup/wuos/t-hw/{node}/cpu.stat")
        } else {
            format!("/sys/fs/cgroup/cpu/wuos/t-hw/{node}/cpu.stat")
        };
        let s = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{p}: {e}"));
        s.lines()
            .find_map(|l| l.strip_prefix("nr_throttled "))
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or_else(|| panic!("no nr_throttled in {p}"))
    };
    let before = stat("small");
    lab.exec("small", &["timeout", "1", "sh", "-c", "while :; do :; done"]);
    let after = stat("small");
    assert!(
        after > before,
        "a busy loop under a 0.2-core quota must be throttled ({before} -> {after})"
    );
}

/// The cgroup v2 code path on a real cgroup2 filesystem. On this CI machine cpu and memory are
/// bound to v1, so the v2 mount (`/sys/fs/cgroup/unified`) can only show that routers get a cgroup,
/// that `exec` joins it and that `down` kills and removes it; on a v2-only host the other tests
/// already run on v2.
#[test]
fn cgroup_v2_path_creates_joins_and_removes_router_cgroups() {
    if !privileged("cgroup v2") {
        return;
    }
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap();
    let root = mounts
        .lines()
        .find(|l| l.split_whitespace().nth(2) == Some("cgroup2"))
        .and_then(|l| l.split_whitespace().nth(1))
        .expect("a cgroup2 filesystem is mounted")
        .to_string();
    let with_root = |args: &[&str]| {
        wuos()
            .env("WUOS_CGROUP_ROOT", &root)
            .args(args)
            .output()
            .expect("wuos runs")
    };
    let _ = with_root(&["lab", "down", "t-v2"]);
    let out = with_root(&["lab", "up", "line:2", "--name", "t-v2", "--no-daemons"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.stdout.starts_with(b"lab t-v2 is up") && String::from_utf8_lossy(&out.stdout).contains("cgroup v2"));
    let dir = Path::new(&root).join("wuos/t-v2/r1");
    assert!(dir.join("cgroup.procs").exists(), "{} must be a cgroup", dir.display());
    let out = with_root(&["lab", "exec", "t-v2", "r1", "--", "cat", "/proc/self/cgroup"]);
    let cg = String::from_utf8_lossy(&out.stdout);
    // On v2 a router's own processes live in its `system` leaf (its domains are its other
    // children, and v2 lets a cgroup hold processes or controlled children, not both).
    assert!(
        cg.lines().any(|l| l == "0::/wuos/t-v2/r1/system"),
        "exec must join the router's v2 leaf cgroup:\n{cg}"
    );
    // A process left running in the router is killed by down, and the cgroup removed.
    let mut bg = wuos()
        .env("WUOS_CGROUP_ROOT", &root)
        .args(["lab", "exec", "t-v2", "r1", "--", "sleep", "300"])
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while std::fs::read_to_string(dir.join("system/cgroup.procs"))
        .unwrap_or_default()
        .trim()
        .is_empty()
    {
        assert!(
            Instant::now() < deadline,
            "the sleep never appeared in the router's system cgroup"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let out = with_root(&["lab", "down", "t-v2"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let status = bg.wait().unwrap();
    assert!(!status.success(), "the process in the router must have been killed");
    assert!(
        !Path::new(&root).join("wuos/t-v2").exists(),
        "the lab's v2 cgroup must be gone"
    );
}

#[test]
fn bad_requests_are_refused_and_the_running_lab_is_untouched() {
    if !privileged("bad requests") {
        return;
    }
    let lab = Lab::up("t-refuse", "line:3");
    let r3 = lab.loopback("r3");
    let again = run(&["lab", "up", "line:5", "--name", "t-refuse"]);
    assert!(
        !again.status.success(),
        "a second lab with the same name must be refused"
    );
    assert!(String::from_utf8_lossy(&again.stderr).contains("already exists"));
    let bad_node = run(&["lab", "exec", "t-refuse", "r9", "--", "true"]);
    assert_eq!(bad_node.status.code(), Some(4), "unknown node exits with 4");
    assert!(String::from_utf8_lossy(&bad_node.stderr).contains("no node r9"));
    let bad_link = run(&["lab", "link", "set", "r1", "r3", "--lab", "t-refuse", "--delay", "5ms"]);
    assert_eq!(bad_link.status.code(), Some(4), "r1-r3 is not a link");
    let bad_value = run(&[
        "lab",
        "link",
        "set",
        "r1",
        "r2",
        "--lab",
        "t-refuse",
        "--delay",
        "5 parsecs",
    ]);
    assert_eq!(bad_value.status.code(), Some(3), "a bad unit is bad input");
    let bad_jitter = run(&["lab", "link", "set", "r1", "r2", "--lab", "t-refuse", "--jitter", "5ms"]);
    assert_eq!(bad_jitter.status.code(), Some(3), "jitter without delay is refused");
    let st: serde_json::Value = serde_json::from_str(&ok(&["lab", "status", "t-refuse", "--json"])).unwrap();
    assert_eq!(st["nodes"].as_array().unwrap().len(), 3, "the running lab is unchanged");
    assert!(
        st["links"][0]["delay"].is_null(),
        "no refused change was applied: {}",
        st["links"][0]
    );
    assert_eq!(lab.ping("r1", &r3, 1, "0.2").0, 1, "the running lab still forwards");
}
