//! `wuos bench xdp`: what the XDP classifier costs, and what redirecting to a local instance gains,
//! beside plain kernel forwarding on the same veth path, in one run.
//!
//! ```text
//!   client ──c0═r-c── router ──r-s═s0── server    (VIP on lo; the kernel route's end)
//!                      │ classifier on r-c (cases xdp-*)
//!                     r-i═i0── instance            (VIP on lo; where redirect-* go)
//! ```
//!
//! Cases: `kernel` (no XDP), `pass-generic` / `pass-native` (classifier counting the iperf3
//! service, XDP_PASS), `redirect-generic` / `redirect-native` (local rule to the instance, one
//! hop like the server). Loads: iperf3 TCP, UDP 1400-byte and 64-byte datagrams at full speed.
//! The client runs on core 0 (where the router's forwarding runs too, in the sender's softirq),
//! the iperf3 server on core 1. Throughput and packets are the receiver's (iperf3 server for
//! UDP); TCP packets/s are the client's segments (TSO is off, see below). TX checksum offload is
//! off on the client's veth in every case, as XDP_REDIRECT needs.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde::Serialize;
use wuos_southbound::netns;
use wuos_southbound::xdp::{Classifier, LocalRule, Mode, Proto, ServiceId, ServiceKey, link_info};

use crate::BenchOptions;
use crate::host::Machine;
use crate::report::{Clock, begin, print_clocks, write_json};
use crate::stats::{Runs, median};
use crate::table::Table;

const NETNS_DIR: &str = "/run/netns";
const PREFIX: &str = "wuos.benchxdp";
const VIP: &str = "10.78.9.9";
const SERVER: &str = "10.78.2.2";
const PORT: u16 = 5201;
const SERVICE: ServiceId = ServiceId(1);

#[derive(Clone, Copy, PartialEq)]
enum Case {
    Kernel,
    Pass(Mode),
    Redirect(Mode),
}

impl Case {
    fn name(self) -> String {
        match self {
            Case::Kernel => "kernel".into(),
            Case::Pass(m) => format!("pass-{m}"),
            Case::Redirect(m) => format!("redirect-{m}"),
        }
    }
}

#[derive(Clone, Copy)]
enum Load {
    Tcp,
    Udp(u32),
}

impl Load {
    fn name(self) -> String {
        match self {
            Load::Tcp => "tcp".into(),
            Load::Udp(len) => format!("udp{len}"),
        }
    }
}

#[derive(Serialize, Clone)]
struct Sample {
    case: String,
    load: String,
    mbit_per_s: f64,
    packets_per_s: f64,
    /// Packets the classifier counted for the service (XDP cases).
    counted_packets: Option<u64>,
    /// New-flow events it reported.
    flow_events: Option<usize>,
}

#[derive(Clone, Debug)]
pub struct Options {
    pub out: PathBuf,
    pub runs: usize,
    /// Seconds each iperf3 run lasts.
    pub seconds: u64,
}

impl BenchOptions for Options {
    const NAME: &'static str = "xdp";

    fn full(out: PathBuf) -> Self {
        Self {
            out,
            runs: 5,
            seconds: 3,
        }
    }

    fn quick(out: PathBuf) -> Self {
        Self {
            out,
            runs: 1,
            seconds: 1,
        }
    }

    fn runs_mut(&mut self) -> &mut usize {
        &mut self.runs
    }
}

#[derive(Serialize)]
struct Report {
    machine: Machine,
    method: String,
    runs: usize,
    seconds: u64,
    /// Medians per case and load.
    medians: Vec<Sample>,
    /// Every run, for the spread.
    samples: Vec<Sample>,
    clocks: Vec<Clock>,
}

/// The four namespaces of the path; deleted on drop.
struct Lab {
    names: Vec<String>,
    files: Vec<File>,
}

const CLIENT: usize = 0;
const ROUTER: usize = 1;
const SERVER_NS: usize = 2;
const INSTANCE: usize = 3;

fn ip(args: &[&str]) -> Result<String> {
    let out = Command::new("ip").args(args).output().context("cannot run ip")?;
    if !out.status.success() {
        bail!(
            "ip {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

impl Lab {
    fn up() -> Result<Self> {
        let dir = Path::new(NETNS_DIR);
        let mut lab = Lab {
            names: Vec::new(),
            files: Vec::new(),
        };
        for role in ["c", "r", "s", "i"] {
            let name = format!("{PREFIX}.{role}");
            let _ = netns::delete(dir, &name);
            let (f, r) = netns::create(dir, &name, || {
                netns::sysctl(Path::new("/proc/sys"), "net/ipv4/ip_forward", "1")
            })?;
            lab.names.push(name);
            lab.files.push(f);
            r.context("cannot enable forwarding")?;
        }
        let n = |k: usize| lab.names[k].clone();
        for (peer, ours, theirs, net) in [
            (CLIENT, "r-c", "c0", 1),
            (SERVER_NS, "r-s", "s0", 2),
            (INSTANCE, "r-i", "i0", 3),
        ] {
            let (r, p) = (n(ROUTER), n(peer));
            ip(&[
                "-n", &r, "link", "add", ours, "type", "veth", "peer", "name", theirs, "netns", &p,
            ])?;
            ip(&["-n", &r, "addr", "add", &format!("10.78.{net}.1/24"), "dev", ours])?;
            ip(&["-n", &p, "addr", "add", &format!("10.78.{net}.2/24"), "dev", theirs])?;
            ip(&["-n", &r, "link", "set", ours, "up"])?;
            ip(&["-n", &p, "link", "set", theirs, "up"])?;
            ip(&["-n", &p, "route", "add", "default", "via", &format!("10.78.{net}.1")])?;
        }
        for k in 0..4 {
            ip(&["-n", &n(k), "link", "set", "lo", "up"])?;
        }
        for k in [SERVER_NS, INSTANCE] {
            ip(&["-n", &n(k), "addr", "add", &format!("{VIP}/32"), "dev", "lo"])?;
        }
        ip(&["-n", &n(ROUTER), "route", "add", &format!("{VIP}/32"), "via", SERVER])?;
        ip(&["netns", "exec", &n(CLIENT), "ethtool", "-K", "c0", "tx", "off"])?;
        // ARP everywhere before the first measurement.
        ip(&["netns", "exec", &n(CLIENT), "ping", "-c", "1", "-W", "2", SERVER])?;
        ip(&["netns", "exec", &n(ROUTER), "ping", "-c", "1", "-W", "2", "10.78.3.2"])?;
        Ok(lab)
    }

    fn tx_packets(&self, k: usize, iface: &str) -> Result<u64> {
        let out = ip(&["-n", &self.names[k], "-s", "-j", "link", "show", "dev", iface])?;
        let v: serde_json::Value = serde_json::from_str(&out)?;
        v[0]["stats64"]["tx"]["packets"]
            .as_u64()
            .context("ip -s -j link: no tx packets")
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for n in &self.names {
            if let Err(e) = netns::delete(Path::new(NETNS_DIR), n) {
                eprintln!("cleanup of {n}: {e}");
            }
        }
    }
}

/// A child process (the iperf3 server) killed and reaped if a measurement fails half-way.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// The classifier as a case sets it up; detached on drop.
fn classifier(lab: &Lab, case: Case) -> Result<Option<Classifier>> {
    let mode = match case {
        Case::Kernel => return Ok(None),
        Case::Pass(m) | Case::Redirect(m) => m,
    };
    let router = &lab.files[ROUTER];
    let mut c = Classifier::attach(Some(router), &["r-c"], mode)?;
    for proto in [Proto::Tcp, Proto::Udp] {
        let vip = VIP.parse()?;
        c.add_service(ServiceKey { vip, port: PORT, proto }, SERVICE)?;
    }
    if let Case::Redirect(mode) = case {
        // Only a native-mode redirect hands frames to i0's XDP receive path; a generic one
        // transmits an skb on r-i like the kernel's forwarding.
        if mode == Mode::Native {
            c.attach_receiver(Some(&lab.files[INSTANCE]), "i0")?;
        }
        let r_i = link_info(Some(router), "r-i")?;
        let i0 = link_info(Some(&lab.files[INSTANCE]), "i0")?;
        c.set_local_rule(
            SERVICE,
            LocalRule {
                ifindex: r_i.index,
                dst_mac: i0.mac,
                src_mac: r_i.mac,
            },
        )?;
    }
    Ok(Some(c))
}

fn measure(lab: &Lab, case: Case, load: Load, seconds: u64) -> Result<Sample> {
    let mut xdp = classifier(lab, case)?;
    let server_ns = if matches!(case, Case::Redirect(_)) {
        INSTANCE
    } else {
        SERVER_NS
    };
    let mut server = Reaped(
        Command::new("ip")
            .args(["netns", "exec", &lab.names[server_ns], "taskset", "-c", "1"])
            .args(["iperf3", "-s", "-1", "-J", "-B", VIP, "-p", &PORT.to_string()])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .context("cannot start iperf3 (is it installed?)")?,
    );
    std::thread::sleep(Duration::from_millis(300));
    let tx0 = lab.tx_packets(CLIENT, "c0")?;
    let mut client = Command::new("ip");
    client
        .args(["netns", "exec", &lab.names[CLIENT], "taskset", "-c", "0"])
        .args(["iperf3", "-c", VIP, "-p", &PORT.to_string(), "-t", &seconds.to_string()])
        .args(["--connect-timeout", "3000", "-J"]);
    if let Load::Udp(len) = load {
        client.args(["-u", "-b", "0", "-l", &len.to_string()]);
    }
    let out = client.output().context("cannot run iperf3")?;
    let tx1 = lab.tx_packets(CLIENT, "c0")?;
    if !out.status.success() {
        bail!(
            "{} {}: iperf3 client failed: {}",
            case.name(),
            load.name(),
            String::from_utf8_lossy(&out.stdout)
        );
    }
    let mut srv = Vec::new();
    if let Some(mut stdout) = server.0.stdout.take() {
        stdout.read_to_end(&mut srv)?;
    }
    server.0.wait()?;
    let v: serde_json::Value = serde_json::from_slice(&srv).context("iperf3 server -J output")?;
    let (bps, packets, secs) = match load {
        Load::Tcp => {
            let s = &v["end"]["sum_received"];
            let secs = s["seconds"].as_f64().context("iperf3: no seconds")?;
            (s["bits_per_second"].as_f64(), (tx1 - tx0) as f64, secs)
        }
        Load::Udp(_) => {
            // `packets` counts up to the highest sequence number seen; the lost ones never came.
            let s = &v["end"]["sum_received"];
            let secs = s["seconds"].as_f64().context("iperf3: no seconds")?;
            let got = s["packets"].as_f64().unwrap_or(0.0) - s["lost_packets"].as_f64().unwrap_or(0.0);
            (s["bits_per_second"].as_f64(), got, secs)
        }
    };
    let bps = bps.context("iperf3 server reported no throughput")?;
    let (counted_packets, flow_events) = match xdp.as_mut() {
        None => (None, None),
        Some(c) => {
            let counted = c
                .counters()?
                .into_iter()
                .find(|(id, _)| *id == SERVICE)
                .map_or(0, |(_, s)| s.packets);
            (Some(counted), Some(c.drain_new_flows().len()))
        }
    };
    if let Some(c) = xdp {
        c.detach()?;
    }
    Ok(Sample {
        case: case.name(),
        load: load.name(),
        mbit_per_s: bps / 1e6,
        packets_per_s: packets / secs.max(1e-9),
        counted_packets,
        flow_events,
    })
}

/// Runs `wuos bench xdp`.
pub fn run(o: &Options) -> Result<()> {
    let (runs, seconds) = (o.runs, o.seconds);
    let (_, mut machine) = begin(runs)?;
    if !nix::unistd::geteuid().is_root() {
        bail!("wuos bench xdp needs root (network namespaces, XDP)");
    }
    let cases = [
        Case::Kernel,
        Case::Pass(Mode::Generic),
        Case::Pass(Mode::Native),
        Case::Redirect(Mode::Generic),
        Case::Redirect(Mode::Native),
    ];
    let loads = [Load::Tcp, Load::Udp(1400), Load::Udp(64)];
    let lab = Lab::up()?;
    let mut samples = Vec::new();
    // Interleaved run by run, so slow drifts of the machine hit every case alike.
    for r in 0..runs {
        for load in loads {
            for case in cases {
                let s = measure(&lab, case, load, seconds)?;
                eprintln!(
                    "run {}/{runs} {:<8} {:<17} {:>9.1} Mbit/s {:>10.0} pkt/s",
                    r + 1,
                    s.load,
                    s.case,
                    s.mbit_per_s,
                    s.packets_per_s
                );
                samples.push(s);
            }
        }
    }
    drop(lab);
    let mut medians = Vec::new();
    for load in loads {
        for case in cases {
            let these: Vec<&Sample> = samples
                .iter()
                .filter(|s| s.case == case.name() && s.load == load.name())
                .collect();
            let med =
                |f: fn(&Sample) -> f64| median(&these.iter().map(|s| f(s)).collect::<Vec<_>>()).unwrap_or(f64::NAN);
            medians.push(Sample {
                case: case.name(),
                load: load.name(),
                mbit_per_s: med(|s| s.mbit_per_s),
                packets_per_s: med(|s| s.packets_per_s),
                counted_packets: these.iter().filter_map(|s| s.counted_packets).max(),
                flow_events: these.iter().filter_map(|s| s.flow_events).max(),
            });
        }
    }
    machine.finish();
    let report = Report {
        machine,
        method: format!(
            "client -> router -> server (or instance) over veths; iperf3 {seconds} s per run, client on core 0, server on core 1; \
             TX checksum offload off on the client veth in every case; classifier on the router's client-side veth; \
             UDP at full speed (-b 0); Mbit/s and UDP packets/s as received, TCP packets/s as the client's segments sent"
        ),
        runs,
        seconds,
        medians,
        samples,
        clocks: vec![Clock::new(
            "throughput, packets/s",
            "iperf3's client starts sending (its own clock); the client veth's TX counter read before it",
            "iperf3's server report at the end of the run; the TX counter read after the client exits",
            "iperf3's connection set-up; the classifier's attach and detach (outside the run)",
            "iperf3's rates as it reports them (quoted to 1 Mbit/s and 0.1 kpps); runs vary far more than that",
        )],
    };
    print_table(&report);
    print_clocks(&report.clocks);
    write_json(&o.out, &report)
}

fn print_table(report: &Report) {
    println!("wuos bench xdp — {}", report.machine);
    println!("{}", report.method);
    let get = |case: &str, load: &str| {
        report
            .medians
            .iter()
            .find(|s| s.case == case && s.load == load)
            .map_or((f64::NAN, f64::NAN), |s| (s.mbit_per_s, s.packets_per_s / 1e3))
    };
    let mut t = Table::new([
        "case",
        "TCP Mbit/s",
        "TCP kpps",
        "UDP1400 Mbit/s",
        "UDP1400 kpps",
        "UDP64 Mbit/s",
        "UDP64 kpps",
    ]);
    for case in report
        .medians
        .iter()
        .filter(|s| s.load == "tcp")
        .map(|s| s.case.as_str())
    {
        let (tm, tp) = get(case, "tcp");
        let (um, up) = get(case, "udp1400");
        let (sm, sp) = get(case, "udp64");
        t.row([
            case.to_string(),
            format!("{tm:.0}"),
            format!("{tp:.1}"),
            format!("{um:.0}"),
            format!("{up:.1}"),
            format!("{sm:.1}"),
            format!("{sp:.1}"),
        ]);
    }
    print!("{t}");
    println!("medians of {} interleaved runs; spread (min–max):", report.runs);
    for (load, unit, scale, f) in [
        ("tcp", "Mbit/s", 1.0, (|s: &Sample| s.mbit_per_s) as fn(&Sample) -> f64),
        ("udp64", "kpps", 1e-3, |s: &Sample| s.packets_per_s),
    ] {
        let spread: Vec<String> = report
            .medians
            .iter()
            .filter(|m| m.load == load)
            .filter_map(|m| {
                let v: Vec<f64> = report
                    .samples
                    .iter()
                    .filter(|s| s.load == load && s.case == m.case)
                    .map(|s| f(s) * scale)
                    .collect();
                let r = Runs::of(&v)?;
                Some(format!("{} {:.0}-{:.0}", m.case, r.min, r.max))
            })
            .collect();
        println!("  {load} {unit}: {}", spread.join(", "));
    }
}
