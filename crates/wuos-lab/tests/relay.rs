//! Privileged tests of the user-space impairment relay ([`wuos_lab::impair::run_relay`]) on a
//! real link: namespaces A and B joined by veth `ethx` <-> `ethy`, whose traffic tc diverts
//! through relay namespace R (`A:ixx <-> R:ra`, `B:ixy <-> R:rb`), exactly as the lab does.
//!
//! Needs root, `ip`, `tc`, `ping` and `iperf3`. Skipped (with a message) when not root, except
//! under `CI=true`, where skipping fails. Throughput and delay figures are printed: run with
//! `--nocapture` to see them. The measured figures (delay accuracy, throughput) are in
//! `wuos bench lab`.

use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use wuos_lab::impair::{ImpairError, Impairment, RelaySpec, RelayStats, run_relay};
use wuos_southbound::tc;
use wuos_southbound::traffic::{TcBinary, TrafficControl};

const ADDR_A: &str = "10.199.0.0";
const ADDR_B: &str = "10.199.0.1";
const MAC_A: &str = "02:99:00:00:00:0a";
const MAC_B: &str = "02:99:00:00:00:0b";

use wuos_southbound::privilege::may_run_privileged as privileged;

/// The tests measure timing and throughput on a small machine: one at a time.
fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

fn run(cmd: &str, args: &[&str]) -> Output {
    Command::new(cmd)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("could not run {cmd}: {e}"))
}

fn must(cmd: &str, args: &[&str]) -> String {
    let out = run(cmd, args);
    assert!(
        out.status.success(),
        "{cmd} {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// One impaired link A <-> B through relay namespace R. Deletes its namespaces on drop.
struct Link {
    a: String,
    b: String,
    r: String,
}

impl Link {
    fn new(tag: &str) -> Link {
        let prefix = format!("wuos-relaytest-{}-{tag}", std::process::id());
        let link = Link {
            a: format!("{prefix}-a"),
            b: format!("{prefix}-b"),
            r: format!("{prefix}-r"),
        };
        link.delete(); // leftovers of a crashed run with the same pid
        for ns in [&link.a, &link.b, &link.r] {
            must("ip", &["netns", "add", ns]);
            // No IPv6 chatter (DAD, router solicitations) through the relay.
            for key in ["all", "default"] {
                let kv = format!("net.ipv6.conf.{key}.disable_ipv6=1");
                must("ip", &["netns", "exec", ns, "sysctl", "-qw", &kv]);
            }
            must("ip", &["-n", ns, "link", "set", "lo", "up"]);
        }
        let (a, b, r) = (link.a.as_str(), link.b.as_str(), link.r.as_str());
        let ipn = |ns: &str, args: &[&str]| {
            let mut v = vec!["-n", ns];
            v.extend_from_slice(args);
            must("ip", &v);
        };
        ipn(
            a,
            &[
                "link", "add", "ethx", "type", "veth", "peer", "name", "ethy", "netns", b,
            ],
        );
        ipn(
            a,
            &["link", "add", "ixx", "type", "veth", "peer", "name", "ra", "netns", r],
        );
        ipn(
            b,
            &["link", "add", "ixy", "type", "veth", "peer", "name", "rb", "netns", r],
        );
        for (ns, eth, ix, mac, addr, peer_addr, peer_mac) in [
            (a, "ethx", "ixx", MAC_A, ADDR_A, ADDR_B, MAC_B),
            (b, "ethy", "ixy", MAC_B, ADDR_B, ADDR_A, MAC_A),
        ] {
            ipn(ns, &["link", "set", eth, "address", mac]);
            ipn(ns, &["link", "set", ix, "address", mac]);
            ipn(ns, &["addr", "add", &format!("{addr}/31"), "dev", eth]);
            ipn(ns, &["link", "set", eth, "up"]);
            ipn(ns, &["link", "set", ix, "up"]);
            // Static neighbours: no ARP through a lossy relay.
            ipn(
                ns,
                &[
                    "neigh",
                    "replace",
                    peer_addr,
                    "lladdr",
                    peer_mac,
                    "dev",
                    eth,
                    "nud",
                    "permanent",
                ],
            );
            // The splice the lab makes (plan::Op::Splice), through the same tc batch.
            TcBinary
                .batch(ns, &tc::redirect_through(eth, ix))
                .unwrap_or_else(|e| panic!("{e}"));
        }
        ipn(r, &["link", "set", "ra", "up"]);
        ipn(r, &["link", "set", "rb", "up"]);
        link
    }

    fn spec(&self, impairment: Impairment) -> RelaySpec {
        RelaySpec {
            netns: format!("/run/netns/{}", self.r).into(),
            if_a: "ra".into(),
            if_b: "rb".into(),
            impairment,
        }
    }

    fn delete(&self) {
        for ns in [&self.a, &self.b, &self.r] {
            let _ = run("ip", &["netns", "del", ns]);
        }
    }

    /// `ping` from A to B; returns the per-reply RTTs (ms) and the number of requests sent.
    fn ping(&self, count: u32, interval: &str) -> (Vec<f64>, u32) {
        self.ping_to(ADDR_B, count, interval)
    }

    fn ping_to(&self, dst: &str, count: u32, interval: &str) -> (Vec<f64>, u32) {
        let c = count.to_string();
        let out = run(
            "ip",
            &[
                "netns", "exec", &self.a, "ping", "-n", "-c", &c, "-i", interval, "-W", "1", dst,
            ],
        );
        let text = String::from_utf8_lossy(&out.stdout);
        let rtts: Vec<f64> = text
            .lines()
            .filter_map(|l| l.split("time=").nth(1))
            .filter_map(|t| t.split_whitespace().next()?.parse().ok())
            .collect();
        let sent = text
            .lines()
            .find(|l| l.contains(" packets transmitted"))
            .and_then(|l| l.split_whitespace().next()?.parse().ok())
            .unwrap_or(count);
        (rtts, sent)
    }

    /// Waits until a ping goes through (the relay is up), at most `within`.
    fn wait_reachable(&self, within: Duration) {
        let t0 = Instant::now();
        while t0.elapsed() < within {
            let out = run(
                "ip",
                &["netns", "exec", &self.a, "ping", "-n", "-c", "1", "-W", "1", ADDR_B],
            );
            if out.status.success() {
                return;
            }
        }
        panic!("B is not reachable from A through the relay after {within:?}");
    }

    /// iperf3 TCP from A to B for `secs` seconds; returns the received bit rate (bit/s) and
    /// the retransmissions.
    fn iperf(&self, secs: u32) -> (f64, u64) {
        self.iperf_to(ADDR_B, secs)
    }

    fn iperf_to(&self, dst: &str, secs: u32) -> (f64, u64) {
        let _server = Server::start(&self.b, dst);
        let t = secs.to_string();
        let out = run(
            "ip",
            &[
                "netns",
                "exec",
                &self.a,
                "iperf3",
                "-c",
                dst,
                "-t",
                &t,
                "-J",
                "--connect-timeout",
                "3000",
            ],
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "iperf3 output is not JSON ({e}): {} {}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )
        });
        assert!(out.status.success(), "iperf3 failed: {}", v["error"]);
        let bps = v["end"]["sum_received"]["bits_per_second"].as_f64().unwrap_or(0.0);
        let retr = v["end"]["sum_sent"]["retransmits"].as_u64().unwrap_or(0);
        (bps, retr)
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        self.delete();
    }
}

/// An `iperf3 -s -1` in a namespace, killed (by pid) on drop.
struct Server(Child);

impl Server {
    fn start(ns: &str, addr: &str) -> Server {
        let child = Command::new("ip")
            .args(["netns", "exec", ns, "iperf3", "-s", "-1", "-B", addr])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start iperf3 server");
        let server = Server(child);
        let t0 = Instant::now();
        while !must("ip", &["netns", "exec", ns, "ss", "-Hltn"]).contains(":5201") {
            assert!(t0.elapsed() < Duration::from_secs(5), "iperf3 server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        server
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A relay running on its own thread; stopped (and joined) by `finish` or on drop.
struct Relay {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<Result<RelayStats, ImpairError>>>,
}

impl Relay {
    fn start(link: &Link, impairment: Impairment) -> Relay {
        let spec = link.spec(impairment);
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let handle = std::thread::spawn(move || run_relay(&spec, &s));
        Relay {
            stop,
            handle: Some(handle),
        }
    }

    fn finish(mut self) -> RelayStats {
        self.stop.store(true, Ordering::Relaxed);
        let t0 = Instant::now();
        let stats = self.handle.take().unwrap().join().expect("relay panicked");
        assert!(
            t0.elapsed() < Duration::from_secs(1),
            "relay took {:?} to stop",
            t0.elapsed()
        );
        stats.expect("relay failed")
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

fn delay(ms: u64) -> Impairment {
    Impairment {
        delay: Duration::from_millis(ms),
        ..Impairment::default()
    }
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len() as f64
}

#[test]
fn delay_10ms_each_way_gives_20ms_rtt() {
    if !privileged("delay_10ms_each_way_gives_20ms_rtt") {
        return;
    }
    let _serial = serial();
    let link = Link::new("delay");
    let relay = Relay::start(&link, delay(10));
    link.wait_reachable(Duration::from_secs(5));
    let (rtts, sent) = link.ping(10, "0.2");
    let stats = relay.finish();
    assert_eq!(rtts.len() as u32, sent, "lost pings without loss configured: {stats:?}");
    let (min, avg, max) = (
        rtts.iter().copied().fold(f64::MAX, f64::min),
        mean(&rtts),
        rtts.iter().copied().fold(0.0, f64::max),
    );
    println!("10 ms each way: ping RTT min/avg/max = {min:.3}/{avg:.3}/{max:.3} ms; {stats:?}");
    assert!(min >= 20.0, "RTT below 20 ms: {rtts:?}");
    assert!(avg <= 23.0, "mean RTT above 23 ms: {rtts:?}");
    assert!(stats.forwarded[0] >= 10 && stats.forwarded[1] >= 10, "{stats:?}");
}

#[test]
fn loss_50pct_drops_about_half_the_frames() {
    if !privileged("loss_50pct_drops_about_half_the_frames") {
        return;
    }
    let _serial = serial();
    let link = Link::new("loss");
    let relay = Relay::start(
        &link,
        Impairment {
            loss_pct: 50.0,
            seed: 0x5eed,
            ..Impairment::default()
        },
    );
    // No readiness signal without traffic through a lossy relay: the sockets open in ms.
    std::thread::sleep(Duration::from_millis(300));
    let (rtts, sent) = link.ping(200, "0.01");
    let stats = relay.finish();
    let lost_pct = 100.0 * (1.0 - rtts.len() as f64 / f64::from(sent));
    let ab = stats.forwarded[0] + stats.dropped_loss[0];
    let frame_loss_pct = 100.0 * stats.dropped_loss[0] as f64 / ab as f64;
    println!(
        "loss 50%: {lost_pct:.1}% of {sent} pings lost, {frame_loss_pct:.1}% of {ab} A->B frames dropped; {stats:?}"
    );
    // Each direction loses half its frames: requests are lost half the time...
    assert!(ab >= 190, "the relay saw only {ab} frames from A: {stats:?}");
    assert!(
        (25.0..=75.0).contains(&frame_loss_pct),
        "{frame_loss_pct}% of A->B frames lost"
    );
    // ... and a ping needs its request and its reply to get through: 75% expected.
    assert!((55.0..=92.0).contains(&lost_pct), "{lost_pct}% of pings lost");
    assert_eq!(stats.dropped_queue, [0, 0]);
}

#[test]
fn tcp_goes_through_the_relay() {
    if !privileged("tcp_goes_through_the_relay") {
        return;
    }
    let _serial = serial();
    let link = Link::new("tcp");
    for (what, imp) in [
        ("no impairment", Impairment::default()),
        (
            "5 ms ± 1 ms each way",
            Impairment {
                delay: Duration::from_millis(5),
                jitter: Duration::from_millis(1),
                ..Impairment::default()
            },
        ),
    ] {
        let relay = Relay::start(&link, imp);
        link.wait_reachable(Duration::from_secs(5));
        let (bps, retr) = link.iperf(2);
        let stats = relay.finish();
        println!(
            "TCP through relay, {what}: {:.2} Gbit/s, {retr} retransmits; {stats:?}",
            bps / 1e9
        );
        assert!(bps > 0.0, "no TCP throughput with {what}");
        assert!(stats.forwarded[0] > 0 && stats.forwarded[1] > 0, "{stats:?}");
    }
}

#[test]
fn relay_ends_when_its_namespace_is_deleted() {
    if !privileged("relay_ends_when_its_namespace_is_deleted") {
        return;
    }
    let _serial = serial();
    let link = Link::new("del");
    let relay = Relay::start(&link, delay(1));
    link.wait_reachable(Duration::from_secs(5));
    must("ip", &["netns", "del", &link.r]);
    let t0 = Instant::now();
    let handle = relay.handle.as_ref().unwrap();
    while !handle.is_finished() {
        assert!(t0.elapsed() < Duration::from_secs(2), "relay still running");
        std::thread::sleep(Duration::from_millis(10));
    }
    let stats = relay.finish();
    assert!(stats.forwarded[0] >= 1, "{stats:?}");
}

#[test]
fn relay_ends_when_an_interface_disappears() {
    if !privileged("relay_ends_when_an_interface_disappears") {
        return;
    }
    let _serial = serial();
    let link = Link::new("gone");
    let relay = Relay::start(&link, Impairment::default());
    link.wait_reachable(Duration::from_secs(5));
    must("ip", &["-n", &link.b, "link", "del", "ixy"]); // takes R:rb with it
    let t0 = Instant::now();
    let handle = relay.handle.as_ref().unwrap();
    while !handle.is_finished() {
        assert!(t0.elapsed() < Duration::from_secs(2), "relay still running");
        std::thread::sleep(Duration::from_millis(10));
    }
    relay.finish();
}
