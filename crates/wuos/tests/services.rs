//! Privileged end-to-end tests of domains on lab routers, through `wuos service`: a service starts
//! from the idle pool in its own namespace and cgroup with its limits, pause stops its CPU use,
//! admission refuses what does not fit (naming the short resource), and a restarted wuosd
//! re-adopts a running domain instead of losing or duplicating it.

use std::process::{Command, Output};

mod common;

use common::{Down, daemon_pids, in_router, ok, run};
use std::time::{Duration, Instant};

use serde_json::Value;
use wuos_southbound::privilege::may_run_privileged as privileged;

const LAB: &str = "t-svc";

fn svc(args: &[&str]) -> Output {
    let mut a = vec!["service"];
    a.extend_from_slice(args);
    a.extend_from_slice(&["--router", "r1", "--lab", LAB, "--json"]);
    run(&a)
}

fn json(out: &Output) -> Value {
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("--json prints JSON")
}

/// The cgroup path (v1 cpuacct or v2) of a process, and its CPU time so far in ns.
fn cpu_ns(pid: i64) -> u64 {
    let cg = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    if let Some(path) = cg.lines().find_map(|l| {
        l.split_once(":cpu,cpuacct:")
            .or_else(|| l.split_once(":cpuacct:"))
            .map(|(_, p)| p.to_string())
    }) {
        return std::fs::read_to_string(format!("/sys/fs/cgroup/cpuacct{path}/cpuacct.usage"))
            .unwrap()
            .trim()
            .parse()
            .unwrap();
    }
    let path = cg.lines().find_map(|l| l.strip_prefix("0::")).unwrap();
    let stat = std::fs::read_to_string(format!("/sys/fs/cgroup{path}/cpu.stat")).unwrap();
    stat.lines()
        .find_map(|l| l.strip_prefix("usage_usec "))
        .unwrap()
        .trim()
        .parse::<u64>()
        .unwrap()
        * 1000
}

#[test]
fn services_start_pause_refuse_and_survive_a_daemon_restart() {
    if !privileged("services") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("svc.toml");
    // r1: one core and 512 MiB; routing keeps a quarter of the memory and the control domain
    // (wuosd) 32 MiB: services get 352 MiB.
    std::fs::write(
        &file,
        "[[node]]\nname = \"r1\"\nrole = \"fog\"\ncpus = 1.0\nmemory = \"512MiB\"\n\
         [[node]]\nname = \"r2\"\nrole = \"edge\"\n[[link]]\na = \"r1\"\nb = \"r2\"\n",
    )
    .unwrap();
    let _ = run(&["lab", "down", LAB]);
    ok(&[
        "lab",
        "up",
        file.to_str().unwrap(),
        "--name",
        LAB,
        "--pool",
        "1",
        "--telemetry-interval",
        "200ms",
    ]);
    let _lab = Down(LAB);

    let list = json(&svc(&["list"]));
    assert_eq!(list["pool_idle"], 1, "one frozen domain waits in the pool: {list}");
    assert_eq!(list["free_memory"].as_u64(), Some(352 << 20), "{list}");
    // The three kinds of domain: routing and control keep their reservations, and say what they
    // hold; wuosd runs in the control domain.
    let reserved = list["reserved"].as_array().expect("the routing and control domains");
    let kinds: Vec<(&str, u64)> = reserved
        .iter()
        .map(|d| (d["kind"].as_str().unwrap(), d["memory_limit"].as_u64().unwrap()))
        .collect();
    assert_eq!(kinds, vec![("routing", 128 << 20), ("control", 32 << 20)], "{list}");
    assert!(
        reserved.iter().all(|d| !d["holds"].as_str().unwrap().is_empty()),
        "{list}"
    );
    let wuosd = daemon_pids(LAB, "r1");
    assert_eq!(
        reserved[1]["pid"].as_i64(),
        wuosd.first().map(|&p| i64::from(p)),
        "{list}"
    );
    let cgroup = std::fs::read_to_string(format!("/proc/{}/cgroup", wuosd[0])).unwrap();
    assert!(
        cgroup.contains(&format!("wuos/{LAB}/r1/control")),
        "wuosd runs in the control domain's cgroup: {cgroup}"
    );

    // Start: from the pool, in its own namespace and cgroup, with the catalog's limits.
    let d = json(&svc(&[
        "start",
        "stress",
        "--param",
        "memory=64MiB",
        "--param",
        "cpus=1",
        "--param",
        "duration=60s",
    ]));
    assert_eq!(d["state"], "running", "{d}");
    assert_eq!(d["from_pool"], true, "{d}");
    let pid = d["pid"].as_i64().unwrap();
    let ns = |p: i64| std::fs::read_link(format!("/proc/{p}/ns/net")).unwrap();
    let router_ns = std::fs::metadata(format!("/run/netns/wuos.{LAB}.r1"))
        .map(|m| std::os::unix::fs::MetadataExt::ino(&m))
        .unwrap();
    assert_ne!(
        ns(pid).to_string_lossy(),
        format!("net:[{router_ns}]"),
        "the domain has its own namespace"
    );
    let cg = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    assert!(
        cg.contains(&format!("/wuos/{LAB}/r1/services/")),
        "the domain's cgroup is under its router's:\n{cg}"
    );
    let mem_line = cg
        .lines()
        .find(|l| l.contains(":memory:"))
        .map(|l| l.rsplit(':').next().unwrap().to_string());
    if let Some(path) = mem_line {
        let limit = std::fs::read_to_string(format!("/sys/fs/cgroup/memory{path}/memory.limit_in_bytes")).unwrap();
        assert_eq!(
            limit.trim(),
            (256u64 << 20).to_string(),
            "the catalog's 256 MiB limit is in cgroupfs"
        );
    }

    // Pause: CPU use stops; resume: it goes on.
    std::thread::sleep(Duration::from_millis(300));
    ok(&["service", "pause", "stress-1", "--router", "r1", "--lab", LAB]);
    let a = cpu_ns(pid);
    std::thread::sleep(Duration::from_millis(500));
    let b = cpu_ns(pid);
    assert!(
        b - a < 1_000_000,
        "a paused domain must use no CPU, used {} ns in 500 ms",
        b - a
    );
    ok(&["service", "resume", "stress-1", "--router", "r1", "--lab", LAB]);
    std::thread::sleep(Duration::from_millis(300));
    assert!(cpu_ns(pid) > b, "a resumed busy loop uses CPU again");
    // The daemon's CPU figure (over its last 1 s supervision period): a busy thread under the
    // catalog's 0.5-core quota reads about 50%.
    std::thread::sleep(Duration::from_millis(2200));
    let l = json(&svc(&["list"]));
    let pct = l["domains"][0]["cpu_pct"].as_f64().unwrap();
    assert!(
        (30.0..=60.0).contains(&pct),
        "stress at a 0.5-core quota should read ~50% of a core, got {pct:.1}%"
    );

    // Admission: 256 MiB more does not fit in the 96 MiB left; the refusal names memory and by how much.
    let refused = svc(&["start", "stress", "--name", "big"]);
    assert_eq!(refused.status.code(), Some(3), "a refusal is bad input");
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(err.contains("memory short by 160MiB"), "{err}");
    let unknown = svc(&["start", "nosuch"]);
    assert_eq!(
        unknown.status.code(),
        Some(4),
        "{}",
        String::from_utf8_lossy(&unknown.stderr)
    );

    // The daemon dies; the supervisor restarts it; the running domain is re-adopted, same pid.
    let wuosd = daemon_pids(LAB, "r1");
    assert_eq!(wuosd.len(), 1, "one wuosd for r1: {wuosd:?}");
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(wuosd[0]), nix::sys::signal::Signal::SIGKILL).unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    let after = loop {
        std::thread::sleep(Duration::from_millis(200));
        let out = svc(&["list"]);
        if out.status.success() {
            break json(&out);
        }
        assert!(Instant::now() < deadline, "wuosd did not come back");
    };
    let domains = after["domains"].as_array().unwrap();
    assert_eq!(domains.len(), 1, "re-adopted, not lost or duplicated: {after}");
    assert_eq!(domains[0]["name"], "stress-1");
    assert_eq!(domains[0]["pid"].as_i64(), Some(pid), "the same process runs on");
    assert_eq!(domains[0]["state"], "running");

    // Destroy: its namespace and cgroup go.
    ok(&["service", "destroy", "stress-1", "--router", "r1", "--lab", LAB]);
    // (Its parent was the daemon that was killed, so it may linger as a zombie until init reaps it.)
    assert!(
        !wuos_southbound::process::alive(std::path::Path::new("/proc"), pid as i32),
        "the process is gone"
    );
    let list = json(&svc(&["list"]));
    assert!(list["domains"].as_array().unwrap().is_empty(), "{list}");
}

/// Sends a SIP OPTIONS from inside router r1's namespace and returns the status line of the answer.
fn sip_options(lab: &str, dst: &str) -> String {
    in_router(lab, "r1", || {
        let sock = std::net::UdpSocket::bind("0.0.0.0:0")?;
        sock.set_read_timeout(Some(Duration::from_secs(2)))?;
        let port = sock.local_addr()?.port();
        let msg = format!(
            "OPTIONS sip:{dst}:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 10.253.0.1:{port};branch=z9hG4bK-wuos-{port}\r\n\
             Max-Forwards: 70\r\nFrom: <sip:probe@10.253.0.1>;tag=wuos\r\nTo: <sip:{dst}>\r\n\
             Call-ID: wuos-probe-{port}\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
        );
        sock.send_to(msg.as_bytes(), (dst, 5060))?;
        let mut buf = [0u8; 2048];
        let (n, _) = sock.recv_from(&mut buf)?;
        Ok::<_, std::io::Error>(
            String::from_utf8_lossy(&buf[..n])
                .lines()
                .next()
                .unwrap_or("")
                .to_string(),
        )
    })
    .unwrap_or_else(|e| format!("no answer: {e}"))
}

#[test]
fn the_pabx_service_is_a_real_kamailio_answering_sip() {
    if !privileged("pabx") {
        return;
    }
    let lab = "t-pabx";
    let _ = run(&["lab", "down", lab]);
    ok(&["lab", "up", "line:2", "--name", lab, "--pool", "1"]);
    let _d = Down("t-pabx");
    let out = run(&[
        "service",
        "start",
        "pabx",
        "--router",
        "r1",
        "--lab",
        lab,
        "--json",
        "--param",
        "static_users=2000=10.0.4.2:5060",
    ]);
    let d = json(&out);
    let addr = d["address"].as_str().unwrap().to_string();
    // Kamailio takes a moment to bind its sockets.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut answer = String::new();
    while Instant::now() < deadline {
        answer = sip_options(lab, &addr);
        if answer.starts_with("SIP/2.0 200") {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        answer.starts_with("SIP/2.0 200"),
        "Kamailio at {addr} must answer OPTIONS, got: {answer}"
    );
    // It also answers on the service VIP (routing the VIP to the instance is the controller's work;
    // here the test adds that route by hand).
    let st = Command::new("ip")
        .args([
            "-n",
            &format!("wuos.{lab}.r1"),
            "route",
            "add",
            "10.255.0.10/32",
            "via",
            &addr,
        ])
        .status()
        .unwrap();
    assert!(st.success());
    let vip = sip_options(lab, "10.255.0.10");
    assert!(
        vip.starts_with("SIP/2.0 200"),
        "the VIP must reach Kamailio too, got: {vip}"
    );
    // The daemon's own health probe (the catalog's SIP OPTIONS over UDP) finds it healthy.
    let name = d["name"].as_str().unwrap().to_string();
    let health = |domain: &str| -> (String, String) {
        let l = json(&run(&["service", "list", "--router", "r1", "--lab", lab, "--json"]));
        let d = l["domains"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["name"] == domain)
            .cloned()
            .unwrap_or_default();
        (
            d["health"].as_str().unwrap_or("").to_string(),
            d["health_detail"].as_str().unwrap_or("").to_string(),
        )
    };
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut h = health(&name);
    while h.0 != "healthy" && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
        h = health(&name);
    }
    assert_eq!(h.0, "healthy", "probe detail: {}", h.1);
    // r1's adverts carry the instance with its own figures: r2 sees them in its view.
    let deadline = Instant::now() + Duration::from_secs(10);
    let seen = loop {
        let st = json(&run(&["status", "r2", "--lab", lab, "--json"]));
        let svc = st["view"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|e| e["advert"]["services"].as_array())
            .flatten()
            .find(|s| s["name"] == name.as_str())
            .cloned();
        match svc {
            // Healthy, with the memory Kamailio uses (more than 1 MiB).
            Some(s) if s["health"] == "healthy" && s["memory_bytes"].as_u64().unwrap_or(0) > 1 << 20 => break s,
            _ if Instant::now() > deadline => {
                panic!("r2 never saw {name} healthy and using memory in r1's adverts: {st}")
            }
            _ => std::thread::sleep(Duration::from_millis(200)),
        }
    };
    assert_eq!(seen["service"], "pabx");
    assert!(seen["memory_limit"].as_u64().unwrap() > 0, "{seen}");
    // Paused, Kamailio stops answering: the probe fails and says why (it stays paused: the
    // probes only judge running domains, so it is not restarted behind the operator's back).
    ok(&["service", "pause", &name, "--router", "r1", "--lab", lab]);
    assert_eq!(health(&name).0, "", "a paused domain is not probed");
    ok(&["service", "resume", &name, "--router", "r1", "--lab", lab]);
}
