//! `wuos bench failover` (issue 12): how fast a steered class leaves a degraded path, observed on
//! the wire, and what the path probes cost.
//!
//! ```text
//!  h1 ── UDP to h2:5060 every 1 ms ──▶ e1 ──wo1-mpls──▶ mpls (relays: 1 ms, retuned live) ──▶ e2 ──▶ h2
//!                                       └──wo1-inet──▶ inet ──▶ e2       ▲ observer: AF_PACKET on
//!                                                                           e2's wo1-inet
//! ```
//!
//! A `sdwan:2:2` lab with its daemons; one overlay `wan` (mpls preferred, inet); class `voip`
//! (UDP 5060) steered with an SLA of 40 ms round trip and 1 % loss. Per run: the degradation is
//! injected on every mpls link at once (the running relays retuned, no restart), and the clock
//! stops when the observer sees the first voip datagram come out of the inet tunnel at e2; then mpls is
//! restored and the class allowed to fail back before the next run. Degradations: a delay over
//! the SLA (brownout), 100 % loss (blackout), 5 % loss. At each probe interval asked for.
//!
//! Then the probes' cost: N tunnels (N/2 overlays over both underlays, each carrying a steered
//! class of its own) probed by e1; e1's and e2's daemons' CPU over a window, against the same
//! daemons with no steered class; probes per second from e1's report, bytes on the wire
//! computed from the probe's size.

use std::future::Future;
use std::net::{Ipv4Addr, UdpSocket};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde::Serialize;
use serde_json::{Value, json};
use wuos_lab::daemons::DaemonOptions;
use wuos_lab::progress::Silent;
use wuos_lab::{LabEnv, down, up};
use wuos_model::daemon::SdwanPathsConfig;
use wuos_model::generate::{Generator, generate};
use wuos_proto::nbi::NbiClient;

use crate::BenchOptions;
use crate::host::Machine;
use crate::report::{Clock, begin, print_clocks, write_json};
use crate::sdwan_lab;
use crate::stats::{Summary, at_resolution, percentile};
use crate::table::Table;

const LAB: &str = "benchfail";
/// The voip class's datagrams.
const PORT: u16 = 5060;
/// One way, on each mpls link, while nothing is injected (the relays exist, so an injection
/// only retunes them).
const BASE_DELAY: Duration = Duration::from_millis(1);
/// A probe on the wire: outer Ethernet, IPv4, UDP, VXLAN, inner Ethernet, IPv4, UDP, 44 bytes
/// of STAMP.
const PROBE_WIRE_BYTES: u64 = 14 + 20 + 8 + 8 + 14 + 20 + 8 + 44;
/// How long the probes' CPU is measured per tunnel count.
const COST_WINDOW: Duration = Duration::from_secs(10);

/// Published detection and failover times of the products users compare with (ANCHORS.md).
const ANCHORS: [(&str, &str); 3] = [
    ("Cisco SD-WAN (BFD hello 1 s x 7)", "7 s"),
    ("Fortinet SD-WAN (health check 500 ms, 5 failures)", "~2.5 s"),
    ("flexiWAN (ping 1 s, down after 15 s)", "15 s"),
];

#[derive(Clone, Debug)]
pub struct Options {
    pub out: PathBuf,
    pub runs: usize,
    /// Probe intervals.
    pub cadences: Vec<Duration>,
    /// Tunnel counts for the probes' cost (empty: not measured).
    pub tunnels: Vec<usize>,
    /// Probe every tunnel on its own (`[sdwan_paths] probe_each_tunnel`), not once per underlay
    /// path.
    pub probe_each_tunnel: bool,
}

impl BenchOptions for Options {
    const NAME: &'static str = "failover";

    fn full(out: PathBuf) -> Self {
        Self {
            out,
            runs: 20,
            cadences: vec![Duration::from_millis(100), Duration::from_secs(1)],
            tunnels: vec![10, 100, 1000],
            probe_each_tunnel: false,
        }
    }

    fn quick(out: PathBuf) -> Self {
        Self {
            out,
            runs: 3,
            cadences: vec![Duration::from_millis(100)],
            tunnels: vec![10],
            probe_each_tunnel: false,
        }
    }

    fn runs_mut(&mut self) -> &mut usize {
        &mut self.runs
    }
}

#[derive(Clone, Copy, Debug, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Degradation {
    /// 25 ms more one way on every mpls link: the round trip goes over the SLA's 40 ms.
    Brownout,
    /// 100 % loss on every mpls link.
    Blackout,
    /// 5 % of the path's round trips lost (the e1–e2 path crosses 3 mpls links each way: each
    /// loses [`loss_per_link`] % each way): over the SLA's 1 %.
    Loss5,
}

impl Degradation {
    fn all() -> [Degradation; 3] {
        [Degradation::Brownout, Degradation::Blackout, Degradation::Loss5]
    }

    fn name(self) -> &'static str {
        match self {
            Degradation::Brownout => "delay over the SLA (+25 ms per link, each way)",
            Degradation::Blackout => "100 % loss",
            Degradation::Loss5 => "5 % loss on the path's round trip",
        }
    }

    fn change(self) -> wuos_lab::link::LinkChange {
        let mut c = restore();
        match self {
            Degradation::Brownout => c.delay = Some(BASE_DELAY + Duration::from_millis(25)),
            Degradation::Blackout => c.loss_pct = Some(100.0),
            Degradation::Loss5 => c.loss_pct = Some(loss_per_link(5.0)),
        }
        c
    }
}

/// The loss on each mpls link, each way, for `path_pct` of the e1–e2 round trips to be lost.
fn loss_per_link(path_pct: f64) -> f64 {
    sdwan_lab::loss_per_link(path_pct, sdwan_lab::LINKS_CROSSED)
}

fn restore() -> wuos_lab::link::LinkChange {
    wuos_lab::link::LinkChange {
        delay: Some(BASE_DELAY),
        loss_pct: Some(0.0),
        ..Default::default()
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct FailoverRow {
    pub probe_interval_ms: f64,
    pub degradation: Degradation,
    pub failover_ms: Summary,
    pub p99_ms: f64,
    /// How long the injection itself took (all mpls relays retuned): the clock starts before it.
    pub inject_ms: Summary,
    pub runs_ms: Vec<f64>,
}

#[derive(Clone, Debug, Serialize)]
pub struct CostRow {
    pub probe_interval_ms: f64,
    pub tunnels: usize,
    /// Each tunnel probed on its own (else once per underlay path).
    pub each_tunnel: bool,
    pub probes_per_s: f64,
    /// Both directions (probe and answer), on the wire of the underlay.
    pub wire_bytes_per_s: f64,
    /// e1's daemon (the sender) over the window, less its CPU with no steered class.
    pub sender_cpu_pct: f64,
    /// e2's daemon (a reflector), the same way.
    pub reflector_cpu_pct: f64,
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub machine: Machine,
    pub failover: Vec<FailoverRow>,
    pub cost: Vec<CostRow>,
    pub anchors: Vec<(String, String)>,
    pub clocks: Vec<Clock>,
}

fn clocks() -> Vec<Clock> {
    vec![
        Clock::new(
            "failover ms",
            "before the degradation is injected (`wuos lab underlay set mpls …`: every mpls relay retuned by SIGHUP, no restart)",
            "when the observer (AF_PACKET on e2's wo1-inet) receives the first voip datagram after the start",
            "nothing between; it includes the datagram's crossing of inet (one way, ~0.2 ms in this lab); the injection's own time is reported beside it",
            "std::time::Instant, 1 µs; voip datagrams leave h1 every ~1 ms, so the figure may be late by ~1 ms: quoted to 1 ms",
        ),
        Clock::new(
            "probe CPU %",
            "utime + stime of the daemon's process (/proc/PID/stat) at the start of a 10-s window",
            "the same at its end",
            "the daemon's CPU with no steered class over an equal window (subtracted), kernel work outside the process (softirq)",
            "clock ticks of 10 ms over 10 s: 0.1 % of a core",
        ),
    ]
}

fn in_node<R: Send>(env: &LabEnv, node: &str, f: impl FnOnce() -> R + Send) -> Result<R> {
    crate::overlays::in_lab_node(env, LAB, node, f)
}

pub fn run(o: &Options) -> Result<()> {
    let (env, mut machine) = begin(o.runs)?;
    let mut failover = Vec::new();
    let mut cost = Vec::new();
    for &cadence in &o.cadences {
        let _ = down::down(&env, LAB, &Silent);
        let t = generate(&"sdwan:2:2".parse::<Generator>()?, 1);
        up::up(
            &env,
            t,
            &up::UpOptions {
                name: LAB.into(),
                workers: 2,
                daemons: Some(DaemonOptions {
                    domains: false,
                    sdwan_paths: SdwanPathsConfig {
                        probe_interval: cadence,
                        window: 20,
                        hold: Duration::from_secs(1),
                        probe_each_tunnel: o.probe_each_tunnel,
                        ..Default::default()
                    },
                    ..Default::default()
                }),
            },
            &Silent,
        )?;
        let result = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
            .block_on(measure(&env, o, cadence));
        down::down(&env, LAB, &Silent)?;
        let (f, c) = result?;
        failover.extend(f);
        cost.extend(c);
    }
    machine.finish();
    let report = Report {
        machine,
        failover,
        cost,
        anchors: ANCHORS.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect(),
        clocks: clocks(),
    };
    print(&report);
    write_json(&o.out, &report)
}

fn report_of(env: &LabEnv, node: &str) -> impl Future<Output = Result<Value>> {
    sdwan_lab::report_of(env, LAB, node)
}

async fn wait_voip_on(env: &LabEnv, path: &str, within: Duration) -> Result<()> {
    sdwan_lab::wait_steering(env, LAB, ("e1", "voip", "e2"), path, within).await
}

async fn set_mpls(env: &LabEnv, change: &wuos_lab::link::LinkChange) -> Result<()> {
    sdwan_lab::set_underlay(env, LAB, "mpls", change).await
}

/// The voip datagrams: h1 to h2's port 5060, one every millisecond, until `stop`.
fn sender(env: &LabEnv, to: Ipv4Addr, stop: Arc<AtomicBool>) -> Result<std::thread::JoinHandle<()>> {
    let sock = in_node(env, "h1", || UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)))??;
    Ok(std::thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            let _ = sock.send_to(b"voip", (to, PORT));
            std::thread::sleep(Duration::from_millis(1));
        }
    }))
}

/// When each voip datagram came out of the inet tunnel at e2 (AF_PACKET on e2's `wo1-inet`: the
/// inner frame; wuos's packet sockets do not see the frames their own host sends, so e1's side
/// of the tunnel cannot be watched this way). It left e1 one inet crossing earlier (~0.2 ms here).
fn observer(env: &LabEnv, stop: Arc<AtomicBool>) -> Result<(mpsc::Receiver<Instant>, std::thread::JoinHandle<()>)> {
    let ns = std::fs::File::open(env.netns_dir.join(wuos_lab::names::node_netns(LAB, "e2")))?;
    let sock = wuos_southbound::packet::PacketSocket::open(&ns, "wo1-inet")?;
    sock.set_read_timeout(Some(Duration::from_millis(50)))?;
    let (tx, rx) = mpsc::channel();
    let h = std::thread::spawn(move || {
        let mut buf = vec![0u8; wuos_southbound::packet::RECV_BUF_LEN];
        // virtio header, Ethernet, IPv4 (no options), then the UDP destination port.
        let at = wuos_southbound::packet::VNET_HDR_LEN + 14;
        while !stop.load(Ordering::Relaxed) {
            let n = match sock.recv(&mut buf) {
                Ok(n) => n,
                Err(wuos_southbound::packet::PacketError::Timeout { .. }) => continue,
                Err(e) => {
                    eprintln!("  the observer on e2's wo1-inet: {e}");
                    continue;
                }
            };
            let now = Instant::now();
            let f = &buf[..n];
            if f.len() >= at + 24
                && f[at - 2..at] == [0x08, 0x00]
                && f[at] == 0x45
                && f[at + 9] == 17
                && u16::from_be_bytes([f[at + 22], f[at + 23]]) == PORT
                && tx.send(now).is_err()
            {
                return;
            }
        }
    });
    Ok((rx, h))
}

async fn measure(env: &LabEnv, o: &Options, cadence: Duration) -> Result<(Vec<FailoverRow>, Vec<CostRow>)> {
    let mut c = crate::overlays_e2e::nbi(env, LAB).await?;
    // Relays on mpls first: later changes retune them. Splicing them in interrupts mpls for a
    // moment: the class comes after.
    set_mpls(env, &restore()).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let baseline = cpu_window(env).await?;
    sdwan_lab::apply(
        &mut c,
        json!([
            {"action": "create_overlay", "name": "wan", "sites": {"e1": {}, "e2": {}}, "underlays": ["mpls", "inet"]},
            {"action": "create_class", "name": "voip", "overlay": "wan", "rules": [{"proto": "udp", "dst_ports": PORT}],
             "steering": {"sla": {"max_latency_ms": 40, "max_loss_pct": 1}}}
        ]),
    )
    .await?;
    wait_voip_on(env, "wan/mpls", Duration::from_secs(60)).await?;
    let h2 = sdwan_lab::lan_addr(env, LAB, "h2")?;
    let stop = Arc::new(AtomicBool::new(false));
    let send = sender(env, h2, stop.clone())?;
    let (seen, watch) = observer(env, stop.clone())?;
    let mut rows = Vec::new();
    let mut phase = wuos_model::rng::SplitMix64::new(cadence.as_millis() as u64);
    let result: Result<()> = async {
        for d in Degradation::all() {
            let (mut times, mut injects) = (Vec::new(), Vec::new());
            for run in 0..o.runs {
                eprintln!(
                    "  probes every {} ms, {}: run {}/{}",
                    cadence.as_millis(),
                    d.name(),
                    run + 1,
                    o.runs
                );
                quiet(&seen).await?;
                // At a random point of the probes' cycle (the daemon's ticks run on their own).
                tokio::time::sleep(cadence.mul_f64(phase.next_f64())).await;
                let t0 = Instant::now();
                set_mpls(env, &d.change()).await?;
                injects.push(t0.elapsed().as_secs_f64() * 1e3);
                // Loss at 5 % takes a while to show in 20 probes; a blackout at 1 s probes too.
                let first = seen
                    .recv_timeout(cadence * 200 + Duration::from_secs(10))
                    .context("voip never left on inet")?;
                times.push(first.saturating_duration_since(t0).as_secs_f64() * 1e3);
                if std::env::var_os("WUOS_BENCH_DEBUG").is_some() {
                    let r = report_of(env, "e1").await?;
                    let d: Vec<String> = r["decisions"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .rev()
                        .take(4)
                        .map(|d| format!("{} {} {}", d["at_unix_ms"], d["to"], d["reason"]))
                        .collect();
                    eprintln!(
                        "  took {:?}; t0 {:?} ago; decisions: {d:#?}",
                        times.last(),
                        t0.elapsed()
                    );
                }
                set_mpls(env, &restore()).await?;
                // Back on mpls (after the loss window and the hold) before the next run.
                wait_voip_on(env, "wan/mpls", cadence * 40 + Duration::from_secs(30)).await?;
            }
            rows.push(FailoverRow {
                probe_interval_ms: cadence.as_secs_f64() * 1e3,
                degradation: d,
                failover_ms: Summary::of(&times).context("no run")?,
                p99_ms: percentile(&times, 0.99).unwrap_or(f64::NAN),
                inject_ms: Summary::of(&injects).context("no run")?,
                runs_ms: times,
            });
        }
        Ok(())
    }
    .await;
    stop.store(true, Ordering::Relaxed);
    let _ = send.join();
    let _ = watch.join();
    result?;
    sdwan_lab::apply(
        &mut c,
        json!([{"action": "delete_class", "name": "voip"}, {"action": "delete_overlay", "name": "wan"}]),
    )
    .await?;
    let mut costs = Vec::new();
    for &n in &o.tunnels {
        costs.push(cost(env, &mut c, cadence, n, &baseline, o.probe_each_tunnel).await?);
    }
    Ok((rows, costs))
}

/// Waits until no voip datagram has come out of the inet tunnel for 300 ms (the observer may lag
/// behind the wire under load: frames read late would be stamped after the next run's start).
async fn quiet(seen: &mpsc::Receiver<Instant>) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        while seen.try_recv().is_ok() {}
        tokio::time::sleep(Duration::from_millis(300)).await;
        if seen.try_recv().is_err() {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("voip kept coming out of the inet tunnel though the class is on mpls");
        }
    }
}

/// e1's and e2's daemons' CPU seconds over [`COST_WINDOW`], and e1's probes sent in it.
struct Window {
    sender_cpu_s: f64,
    reflector_cpu_s: f64,
    probes: u64,
    seconds: f64,
}

fn cpu_seconds(pid: u32) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // After the command name's closing parenthesis: fields 3..; utime and stime are 14 and 15.
    let rest = stat.rsplit_once(')').context("no comm in stat")?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f[11].parse::<f64>()? + f[12].parse::<f64>()?;
    Ok(ticks / 100.0)
}

async fn cpu_window(env: &LabEnv) -> Result<Window> {
    let (p1, p2) = (
        crate::overlays_e2e::daemon_pid(LAB, "e1").context("no wuosd on e1")?,
        crate::overlays_e2e::daemon_pid(LAB, "e2").context("no wuosd on e2")?,
    );
    let probes = |r: &Value| r["probes_sent"].as_u64().unwrap_or(0);
    let (c1, c2, n0, t0) = (
        cpu_seconds(p1)?,
        cpu_seconds(p2)?,
        probes(&report_of(env, "e1").await?),
        Instant::now(),
    );
    tokio::time::sleep(COST_WINDOW).await;
    Ok(Window {
        sender_cpu_s: cpu_seconds(p1)? - c1,
        reflector_cpu_s: cpu_seconds(p2)? - c2,
        probes: probes(&report_of(env, "e1").await?) - n0,
        seconds: t0.elapsed().as_secs_f64(),
    })
}

/// The probes' cost with `n` tunnels probed by e1.
async fn cost(
    env: &LabEnv,
    c: &mut NbiClient,
    cadence: Duration,
    n: usize,
    base: &Window,
    o_each: bool,
) -> Result<CostRow> {
    eprintln!("  probes every {} ms: cost with {n} tunnels", cadence.as_millis());
    let overlays = n.div_ceil(2);
    let mut create = Vec::new();
    let mut delete = Vec::new();
    for i in 0..overlays {
        create.push(json!({"action": "create_overlay", "name": format!("p{i}"), "sites": {"e1": {}, "e2": {}}}));
        create.push(
            json!({"action": "create_class", "name": format!("c{i}"), "overlay": format!("p{i}"),
            "rules": [{"proto": "udp", "dst_ports": 20_000 + i}], "steering": {"sla": {"max_latency_ms": 100}}}),
        );
        delete.push(json!({"action": "delete_class", "name": format!("c{i}")}));
        delete.push(json!({"action": "delete_overlay", "name": format!("p{i}")}));
    }
    sdwan_lab::apply(c, json!(create)).await?;
    // Every path answered.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let r = report_of(env, "e1").await?;
        let paths = r["paths"].as_array().cloned().unwrap_or_default();
        if paths.len() == overlays * 2 && paths.iter().all(|p| p["rtt_ms"].is_number()) {
            break;
        }
        if Instant::now() > deadline {
            bail!(
                "e1 did not measure its {} paths: {} measured",
                overlays * 2,
                paths.len()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let w = cpu_window(env).await?;
    sdwan_lab::apply(c, json!(delete)).await?;
    let per_s = w.probes as f64 / w.seconds;
    Ok(CostRow {
        probe_interval_ms: cadence.as_secs_f64() * 1e3,
        tunnels: overlays * 2,
        each_tunnel: o_each,
        probes_per_s: per_s,
        wire_bytes_per_s: per_s * 2.0 * PROBE_WIRE_BYTES as f64,
        sender_cpu_pct: (w.sender_cpu_s / w.seconds - base.sender_cpu_s / base.seconds) * 100.0,
        reflector_cpu_pct: (w.reflector_cpu_s / w.seconds - base.reflector_cpu_s / base.seconds) * 100.0,
    })
}

pub fn print(r: &Report) {
    println!(
        "wuos bench failover — {} cores, kernel {}",
        r.machine.cores, r.machine.kernel
    );
    let mut t = Table::new([
        "probe every",
        "degradation",
        "failover ms (median)",
        "p99",
        "min",
        "max",
        "runs",
        "inject ms (median)",
    ]);
    for row in &r.failover {
        t.row([
            format!("{} ms", row.probe_interval_ms),
            row.degradation.name().to_string(),
            at_resolution(row.failover_ms.median, 1.0),
            at_resolution(row.p99_ms, 1.0),
            at_resolution(row.failover_ms.min, 1.0),
            at_resolution(row.failover_ms.max, 1.0),
            row.runs_ms.len().to_string(),
            at_resolution(row.inject_ms.median, 1.0),
        ]);
    }
    print!("{t}");
    println!("published detection / failover times of the products users compare with:");
    for (who, time) in &r.anchors {
        println!("  {who}: {time}");
    }
    println!(
        "targets: blackout and brownout failover median ≤ 300 ms at 100-ms probes; probe CPU ≤ 2 % of a core at 1,000 tunnels"
    );
    if !r.cost.is_empty() {
        let mut t = Table::new([
            "probe every",
            "tunnels",
            "probed",
            "probes/s",
            "wire bytes/s (both ways)",
            "sender CPU % of a core",
            "reflector CPU %",
        ]);
        for c in &r.cost {
            t.row([
                format!("{} ms", c.probe_interval_ms),
                c.tunnels.to_string(),
                if c.each_tunnel {
                    "each tunnel"
                } else {
                    "per underlay path"
                }
                .to_string(),
                at_resolution(c.probes_per_s, 1.0),
                at_resolution(c.wire_bytes_per_s, 1.0),
                at_resolution(c.sender_cpu_pct, 0.1),
                at_resolution(c.reflector_cpu_pct, 0.1),
            ]);
        }
        print!("{t}");
    }
    print_clocks(&r.clocks);
}
