//! `wuos bench telemetry`: how fast and how cheaply the augmented SD-WAN protocol carries
//! telemetry.
//!
//! - Propagation: a line:5 lab at 10 Hz; r1's view of r3 (2 hops) is read every 20 ms during each
//!   window, and each new advert's latency (receive time at r1 minus the sample time at r3, one
//!   host clock, as r1's daemon reports it) is recorded.
//! - Cost: a grid:10x10 lab at 1 Hz, then at 10 Hz; after a warm-up, in each window every wuosd's
//!   CPU time (from `/proc/PID/stat`) and its RSS, and every router's protocol bytes/s.
//! - Scale ([`scale`]): `random:500` and `random:1000` at 1 Hz and `grid:10x10` at 10 Hz, with
//!   daemons as a user gets them: total and per-daemon CPU, RSS, bytes/s, adjacencies up (each
//!   second), neighbor losses over a watched window, 2-hop propagation.

mod scale;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde::Serialize;
use wuos_lab::daemons::{DaemonOptions, socket_path};
use wuos_lab::progress::Silent;
use wuos_lab::{LabEnv, down, up};
use wuos_model::generate::{Generator, generate};

use crate::BenchOptions;
use crate::host::{Machine, proc_usage, ticks_per_s};
use crate::node::runtime;
use crate::report::{Clock, begin, print_clocks, write_json};
use crate::stats::{Runs, Summary, at_resolution, median, percentile};
use crate::table::Table;
use wuos_model::daemon::{LinkTransport, SamplePhase};

#[derive(Clone, Debug)]
pub struct Options {
    pub out: PathBuf,
    /// Seconds each measurement window lasts.
    pub seconds: u64,
    /// Windows per measurement (medians over them are reported).
    pub runs: usize,
    /// The scale part: (topology generator, telemetry interval in ms) per configuration.
    pub scale: Vec<(String, u64)>,
    /// Transports measured side by side in the scale part (`plain`, `mtls`; with `-grpc`, the
    /// links carried over gRPC as protocol 2.3 did).
    pub transports: Vec<String>,
    /// Sample phases measured side by side in the scale part (`free`, `aligned`).
    pub phases: Vec<SamplePhase>,
    /// Hello intervals measured side by side in the scale part (`None`: the daemon's default).
    pub hellos: Vec<Option<Duration>>,
    /// Who watches the links, side by side in the scale part: `true`, ICMP echo where the
    /// daemon's default has it (`link_dead_interval`); `false`, hellos alone (as before echo).
    pub echo_watch: Vec<bool>,
    /// Seconds of the scale part's quiet (CPU) window.
    pub quiet_seconds: u64,
    /// Seconds between the scale part's warm-up and its quiet window.
    pub settle_seconds: u64,
    /// Seconds of the scale part's watched window (adjacencies, losses, propagation).
    pub watch_seconds: u64,
    /// The scale part's routers host domains (as a user gets them); off: the protocol alone.
    pub domains: bool,
    /// Only the scale part.
    pub scale_only: bool,
}

impl BenchOptions for Options {
    const NAME: &'static str = "telemetry";

    fn full(out: PathBuf) -> Self {
        Self {
            out,
            seconds: 10,
            runs: 3,
            scale: vec![
                ("random:500".into(), 1000),
                ("random:1000".into(), 1000),
                ("grid:10x10".into(), 100),
            ],
            transports: vec!["plain".into(), "mtls".into()],
            phases: vec![SamplePhase::default()],
            hellos: vec![None],
            echo_watch: vec![true],
            // One whole refresh cycle at 1 Hz (an advert that says nothing new is re-sent every
            // `quiet_intervals` intervals): a shorter window reads either the cycle's refresh
            // wave or the quiet between, by the lab-up's phase.
            quiet_seconds: u64::from(wuos_model::daemon::DEFAULT_QUIET_INTERVALS),
            settle_seconds: 30,
            watch_seconds: 120,
            domains: true,
            scale_only: false,
        }
    }

    fn quick(out: PathBuf) -> Self {
        Self {
            out,
            seconds: 3,
            runs: 1,
            scale: vec![("random:500".into(), 1000), ("grid:10x10".into(), 100)],
            transports: vec!["plain".into(), "mtls".into()],
            phases: vec![SamplePhase::default()],
            hellos: vec![None],
            echo_watch: vec![true],
            quiet_seconds: 10,
            settle_seconds: 10,
            watch_seconds: 30,
            domains: true,
            scale_only: false,
        }
    }

    fn runs_mut(&mut self) -> &mut usize {
        &mut self.runs
    }
}

#[derive(Serialize)]
struct Propagation {
    interval_ms: u64,
    /// Every advert of every window.
    latency_ms: Summary,
    /// Each window's median.
    window_median_ms: Runs,
    target_ms: f64,
}

#[derive(Serialize)]
struct Cost {
    topology: String,
    interval_ms: u64,
    daemons: usize,
    /// Per window: the median and the maximum over the daemons; then medians over the windows.
    cpu_pct_of_core_median: Runs,
    cpu_pct_of_core_max: Runs,
    cpu_resolution_pct: f64,
    rss_mb_median: Runs,
    rss_mb_max: Runs,
    protocol_bytes_per_s_median: Runs,
    protocol_bytes_per_s_max: Runs,
}

#[derive(Serialize)]
struct Report {
    machine: Machine,
    seconds: u64,
    runs: usize,
    propagation: Option<Propagation>,
    cost: Vec<Cost>,
    scale: Vec<scale::Scale>,
    /// What the issue that asked for the scale part saw with protocol 1.1 (not re-run here).
    before: &'static str,
    clocks: Vec<Clock>,
}

/// Protocol 1.1 at `random:500 --seed 7`, 1 Hz, as issue 10 reported it (its first paragraph).
const BEFORE: &str = "protocol 1.1, random:500 seed 7 at 1 Hz (issue 10, not re-run): 500 daemons used 161 % of the \
two cores, load average above 200, 2 routers not answering, 1,728 of 1,870 adjacencies up, 14,138 neighbor-lost/down \
events in about 2.5 minutes";

/// A scale transport's TLS and link transport: `plain`, `mtls`, `plain-grpc`, `mtls-grpc`.
fn parse_transport(t: &str) -> (bool, LinkTransport) {
    let link = if t.ends_with("-grpc") {
        LinkTransport::Grpc
    } else {
        LinkTransport::Framed
    };
    (t.starts_with("mtls"), link)
}

/// The seed of the random topologies (the issue's `wuos lab up random:500 --seed 7`).
const SEED: u64 = 7;

/// The propagation and cost labs run as a user gets them: over mutual TLS.
fn lab_up(env: &LabEnv, name: &str, g: Generator, interval: Duration) -> Result<()> {
    let _ = down::down(env, name, &Silent);
    lab_up_with(env, name, generate(&g, 1), daemons(interval, true, true))
}

/// The daemon settings of a bench lab: 2 hops, the given interval, TLS and domains.
fn daemons(interval: Duration, tls: bool, domains: bool) -> DaemonOptions {
    DaemonOptions {
        telemetry_interval: interval,
        hop_limit: 2,
        tls,
        domains,
        ..Default::default()
    }
}

fn lab_up_with(env: &LabEnv, name: &str, topo: wuos_model::topology::Topology, daemons: DaemonOptions) -> Result<()> {
    let opts = up::UpOptions {
        name: name.into(),
        workers: up::default_workers(),
        daemons: Some(daemons),
    };
    up::up(env, topo, &opts, &Silent)?;
    Ok(())
}

fn propagation(env: &LabEnv, o: &Options) -> Result<Propagation> {
    let name = "benchtel";
    let interval = Duration::from_millis(100);
    lab_up(env, name, Generator::Line(5), interval)?;
    let res = (|| -> Result<Propagation> {
        let rt = runtime()?;
        let sock = socket_path(env, name, "r1");
        let r3_at_two_hops = |st: &wuos_proto::pb::StatusReply| {
            st.view
                .iter()
                .filter(|v| v.hops == 2)
                .filter_map(|v| Some((v.advert.as_ref().filter(|a| a.origin == "r3")?, v.latency_ms)))
                .map(|(a, l)| ((a.boot_id, a.sequence), l))
                .collect::<Vec<_>>()
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while r3_at_two_hops(&rt.block_on(wuos_proto::admin::status(sock.clone()))?).is_empty() {
            if Instant::now() > deadline {
                bail!("r3 never reached r1's view");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let (mut all, mut medians) = (Vec::new(), Vec::new());
        for _ in 0..o.runs {
            let mut seen: HashMap<(u64, u64), f64> = HashMap::new();
            let end = Instant::now() + Duration::from_secs(o.seconds);
            while Instant::now() < end {
                let st = rt.block_on(wuos_proto::admin::status(sock.clone()))?;
                for (key, latency) in r3_at_two_hops(&st) {
                    seen.entry(key).or_insert(latency);
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let lat: Vec<f64> = seen.into_values().collect();
            medians.extend(median(&lat));
            all.extend(lat);
        }
        Ok(Propagation {
            interval_ms: 100,
            latency_ms: Summary::of(&all).context("no advert of r3 was seen")?,
            window_median_ms: Runs::of(&medians).context("no window")?,
            target_ms: 100.0 + 20.0,
        })
    })();
    down::down(env, name, &Silent)?;
    res
}

fn wuosd_pids(proc_root: &Path, lab: &str) -> Vec<i32> {
    let marker = format!("/labs/{lab}/daemons/");
    std::fs::read_dir(proc_root)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            let dir = proc_root.join(pid.to_string());
            std::fs::read_to_string(dir.join("comm")).is_ok_and(|c| c.trim() == "wuosd")
                && std::fs::read(dir.join("cmdline")).is_ok_and(|c| String::from_utf8_lossy(&c).contains(&marker))
        })
        .collect()
}

fn bytes_total(rt: &tokio::runtime::Runtime, sock: &Path) -> Option<u64> {
    let st = rt.block_on(wuos_proto::admin::status(sock)).ok()?;
    Some(
        st.counters
            .iter()
            .filter(|c| c.name == "bytes_sent" || c.name == "bytes_received")
            .map(|c| c.value)
            .sum(),
    )
}

/// One window's (CPU % median, max; RSS MB median, max; bytes/s median, max; daemons).
type Window = ([f64; 6], usize);

fn window(env: &LabEnv, rt: &tokio::runtime::Runtime, name: &str, socks: &[PathBuf], seconds: u64) -> Result<Window> {
    let pids = wuosd_pids(&env.proc_root, name);
    // Bytes: each router's counter with its own timestamps (polling 100 sockets takes time).
    let bytes_before: Vec<Option<(Instant, u64)>> = socks
        .iter()
        .map(|s| Some((Instant::now(), bytes_total(rt, s)?)))
        .collect();
    // CPU: one window, timed around the two reads of /proc.
    let t0 = Instant::now();
    let usage = |p: &i32| Some((*p, proc_usage(&env.proc_root, *p)?));
    let before: HashMap<i32, (u64, u64)> = pids.iter().filter_map(usage).collect();
    std::thread::sleep(Duration::from_secs(seconds));
    let after: HashMap<i32, (u64, u64)> = pids.iter().filter_map(usage).collect();
    let elapsed = t0.elapsed().as_secs_f64();
    let (mut cpu, mut rss) = (Vec::new(), Vec::new());
    for (pid, &(t_before, _)) in &before {
        if let Some(&(t_after, r)) = after.get(pid) {
            cpu.push((t_after - t_before) as f64 / ticks_per_s() / elapsed * 100.0);
            rss.push(r as f64 / 1e6);
        }
    }
    let bps: Vec<f64> = socks
        .iter()
        .zip(&bytes_before)
        .filter_map(|(s, b)| {
            let (t, b) = (*b)?;
            let now = bytes_total(rt, s)?;
            Some(now.saturating_sub(b) as f64 / t.elapsed().as_secs_f64())
        })
        .collect();
    if cpu.is_empty() {
        bail!("no wuosd processes found for lab {name}");
    }
    let q = |v: &[f64], p| percentile(v, p).unwrap_or(f64::NAN);
    Ok((
        [
            q(&cpu, 0.5),
            q(&cpu, 1.0),
            q(&rss, 0.5),
            q(&rss, 1.0),
            q(&bps, 0.5),
            q(&bps, 1.0),
        ],
        cpu.len(),
    ))
}

fn cost(env: &LabEnv, interval: Duration, o: &Options) -> Result<Cost> {
    let name = "benchcost";
    let g = Generator::Grid(10, 10);
    let t = generate(&g, 1);
    lab_up(env, name, g, interval)?;
    let res = (|| -> Result<Cost> {
        std::thread::sleep(Duration::from_secs(5)); // warm-up: neighbors up, views full
        let rt = runtime()?;
        let socks: Vec<_> = t.nodes.iter().map(|n| socket_path(env, name, &n.name)).collect();
        let mut windows = Vec::new();
        for _ in 0..o.runs {
            windows.push(window(env, &rt, name, &socks, o.seconds)?);
        }
        let col = |i: usize| Runs::of(&windows.iter().map(|w| w.0[i]).collect::<Vec<_>>()).context("no window");
        Ok(Cost {
            topology: "grid:10x10".into(),
            interval_ms: interval.as_millis() as u64,
            daemons: windows.iter().map(|w| w.1).min().unwrap_or(0),
            cpu_pct_of_core_median: col(0)?,
            cpu_pct_of_core_max: col(1)?,
            cpu_resolution_pct: 100.0 / ticks_per_s() / o.seconds as f64,
            rss_mb_median: col(2)?,
            rss_mb_max: col(3)?,
            protocol_bytes_per_s_median: col(4)?,
            protocol_bytes_per_s_max: col(5)?,
        })
    })();
    down::down(env, name, &Silent)?;
    res
}

fn clocks(o: &Options) -> Vec<Clock> {
    vec![
        Clock::new(
            "scale: 2-hop propagation",
            "the origin's daemon samples (the advert's timestamp_unix_ns)",
            "the daemon 2 hops away stores the advert (its view entry's latency_ms)",
            "adverts already in the views when the watched window starts, and those replaced before their daemon's view was read (each daemon's every 10 s, a tenth of them each second); the latency is the daemon's own",
            "one host clock (CLOCK_REALTIME, ns); quoted to 1 ms",
        ),
        Clock::new(
            "scale: daemon CPU",
            "first read of /proc/PID/stat of every wuosd of the lab (nothing polls them)",
            &format!("the same read {} s later", o.quiet_seconds),
            &format!(
                "lab up, the warm-up (every adjacency up, then three intervals) and {} s of settling",
                o.settle_seconds
            ),
            &format!(
                "clock ticks of {:.0} ms over {} s: {:.2}% of a core per daemon",
                1e3 / ticks_per_s(),
                o.quiet_seconds,
                100.0 / ticks_per_s() / o.quiet_seconds.max(1) as f64
            ),
        ),
        Clock::new(
            "scale: host busy",
            "a read of /proc/stat's cpu line, just before the daemons' first CPU read",
            "the same read just after their second",
            "idle and iowait; nothing else: the bench itself, kernel threads, interrupts and softirq are in it",
            &format!(
                "clock ticks of {:.0} ms, all CPUs, over {} s: {:.2}% of a core",
                1e3 / ticks_per_s(),
                o.quiet_seconds,
                100.0 / ticks_per_s() / o.quiet_seconds.max(1) as f64
            ),
        ),
        Clock::new(
            "propagation 2 hops",
            "r3's daemon samples its telemetry (the advert's timestamp_unix_ns)",
            "r1's daemon stores the advert received through r2 (its view entry's latency_ms)",
            "the reading: r1's view is polled every 20 ms, but the latency is the daemon's own receive time",
            "one host clock (CLOCK_REALTIME, ns) on both ends; quoted to 0.01 ms",
        ),
        Clock::new(
            "daemon CPU",
            "first read of /proc/PID/stat (utime+stime) of every wuosd",
            &format!("the same read {} s later", o.seconds),
            "the bench's own polls of the admin sockets (their cost in wuosd is included)",
            &format!(
                "clock ticks of {:.0} ms over a {} s window: {:.2}% of a core",
                1e3 / ticks_per_s(),
                o.seconds,
                100.0 / ticks_per_s() / o.seconds as f64
            ),
        ),
    ]
}

/// Runs `wuos bench telemetry`.
pub fn run(o: &Options) -> Result<()> {
    if o.seconds == 0 {
        bail!("--seconds must be at least 1");
    }
    let (env, mut machine) = begin(o.runs)?;
    let propagation = if o.scale_only {
        None
    } else {
        eprintln!("propagation: line:5 at 10 Hz, {} window(s) of {} s", o.runs, o.seconds);
        Some(propagation(&env, o)?)
    };
    let mut costs = Vec::new();
    for ms in [1000, 100].into_iter().filter(|_| !o.scale_only) {
        eprintln!(
            "cost: grid:10x10 at {} Hz, {} window(s) of {} s",
            1000 / ms,
            o.runs,
            o.seconds
        );
        costs.push(cost(&env, Duration::from_millis(ms), o)?);
    }
    let mut scales = Vec::new();
    for (topology, ms) in &o.scale {
        for transport in &o.transports {
            let runs = o.phases.iter().flat_map(|&p| {
                o.echo_watch
                    .iter()
                    .flat_map(move |&k| o.hellos.iter().map(move |&h| (p, k, h)))
            });
            for (phase, echo, hello) in runs {
                let interval = Duration::from_millis(*ms);
                let (tls, link) = parse_transport(transport);
                let link_dead = if echo {
                    wuos_model::daemon::default_link_dead_interval(interval, link)
                } else {
                    None
                };
                let hello_ms = hello
                    .unwrap_or_else(|| wuos_model::daemon::default_hello_interval(interval, link_dead.is_some()))
                    .as_millis();
                let watch = link_dead.map_or("hellos".to_owned(), |d| format!("echo {} ms", d.as_millis()));
                eprintln!(
                    "scale: {topology} at {} Hz over {transport}, {} samples, hello {hello_ms} ms, links watched by {watch}: quiet {} s, watched {} s",
                    1000 / ms,
                    phase.as_str(),
                    o.quiet_seconds,
                    o.watch_seconds
                );
                let name = "benchscale";
                let d = DaemonOptions {
                    sample_phase: phase,
                    link_transport: link,
                    hello_interval: hello,
                    link_dead_interval: Some(link_dead.unwrap_or(Duration::ZERO)),
                    ..daemons(interval, tls, o.domains)
                };
                let waited = crate::host::wait_quiet(&env.proc_root, 10.0, Duration::from_secs(180));
                eprintln!("  host quiet after {:.0} s", waited.as_secs_f64());
                let up_s = scale::up(&env, name, topology, d)?;
                let mut label = transport.clone();
                if !o.domains {
                    label.push_str(", no domains");
                }
                if phase != SamplePhase::default() || o.phases.len() > 1 {
                    label.push_str(&format!(", {}", phase.as_str()));
                }
                if o.echo_watch.len() > 1 {
                    label.push_str(&format!(", watched by {watch}"));
                }
                if hello.is_some() || o.hellos.len() > 1 || o.echo_watch.len() > 1 {
                    label.push_str(&format!(", hello {hello_ms} ms"));
                }
                let r = scale::measure(
                    &env,
                    name,
                    topology,
                    &label,
                    interval,
                    up_s,
                    o.settle_seconds,
                    o.quiet_seconds,
                    o.watch_seconds,
                );
                down::down(&env, name, &Silent)?;
                let mut r = r?;
                r.waited_quiet_s = waited.as_secs_f64();
                scales.push(r);
            }
        }
    }
    machine.finish();
    let report = Report {
        machine,
        seconds: o.seconds,
        runs: o.runs,
        propagation,
        cost: costs,
        scale: scales,
        before: BEFORE,
        clocks: clocks(o),
    };
    println!("wuos bench telemetry — {}", report.machine);
    if let Some(p) = &report.propagation {
        let l = &p.latency_ms;
        println!(
            "propagation 2 hops at {} ms interval: median {} ms, p99 {} ms, max {} ms over {} adverts; window medians {} ms (target: <= {:.0} ms)",
            p.interval_ms,
            at_resolution(l.median, 0.01),
            at_resolution(l.p99, 0.01),
            at_resolution(l.max, 0.01),
            l.n,
            p.window_median_ms.show(0.01),
            p.target_ms
        );
    }
    let mut t = Table::new([
        "topology",
        "interval",
        "daemons",
        "cpu% med",
        "cpu% max",
        "RSS MB med",
        "RSS MB max",
        "bytes/s med",
        "bytes/s max",
    ]);
    for c in &report.cost {
        let cpu_res = c.cpu_resolution_pct;
        t.row([
            c.topology.clone(),
            format!("{} ms", c.interval_ms),
            c.daemons.to_string(),
            c.cpu_pct_of_core_median.show(cpu_res),
            c.cpu_pct_of_core_max.show(cpu_res),
            c.rss_mb_median.show(0.1),
            c.rss_mb_max.show(0.1),
            c.protocol_bytes_per_s_median.show(1.0),
            c.protocol_bytes_per_s_max.show(1.0),
        ]);
    }
    if !report.cost.is_empty() {
        println!(
            "{t}(per window: median and max over the daemons; medians over {} window(s), min–max)",
            o.runs
        );
    }
    if !report.scale.is_empty() {
        let mut t = Table::new([
            "topology",
            "Hz",
            "transport",
            "daemons",
            "up s",
            "cpu% total",
            "cpu% med",
            "cpu% max",
            "host busy%",
            "RSS MB med",
            "bytes/s total",
            "adj. up min",
            "adj. up med",
            "losses",
            "2-hop ms med",
            "p99",
            "max",
        ]);
        for c in &report.scale {
            let r = c.cpu_resolution_pct;
            let p = c.propagation_2hop_ms.as_ref();
            let ms = |f: fn(&Summary) -> f64| p.map_or("-".into(), |p| at_resolution(f(p), 1.0));
            t.row([
                c.topology.clone(),
                format!("{}", 1000 / c.interval_ms.max(1)),
                c.transport.clone(),
                c.daemons.to_string(),
                at_resolution(c.up_s, 0.1),
                at_resolution(c.cpu_pct_total, r),
                at_resolution(c.cpu_pct_median, r),
                at_resolution(c.cpu_pct_max, r),
                at_resolution(c.host_busy_pct, r),
                at_resolution(c.rss_mb_median, 0.1),
                at_resolution(c.bytes_per_s_total, 1.0),
                format!("{:.3}", c.adjacencies_up.min),
                format!("{:.3}", c.adjacencies_up.median),
                c.neighbor_loss_events.to_string(),
                ms(|s| s.median),
                ms(|s| s.p99),
                ms(|s| s.max),
            ]);
        }
        println!(
            "{t}(scale: CPU over a quiet window of {} s (cpu%: the daemons' utime + stime; host busy%: /proc/stat's busy time, all CPUs, kernel threads and softirq included); adjacencies, losses and propagation over a watched window of {} s, every daemon's neighbors polled each second, a tenth of the views in turn; targets: random:1000 at 1 Hz all adjacencies up, 0 losses, all daemons <= 50% of one core; 2-hop propagation <= interval + 20 ms)",
            o.quiet_seconds, o.watch_seconds
        );
        println!("before: {}", report.before);
    }
    print_clocks(&report.clocks);
    write_json(&o.out, &report)
}
