//! `wuos bench lab`: lab up/down times beside VLSP's published figures, the cost of a router and a
//! link, memory per router, and the user-space impairment path. Prints a table and writes JSON.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Subcommand;
use serde::Serialize;
use wuos_lab::link::LinkChange;
use wuos_lab::probe::parse_ping;
use wuos_lab::progress::Silent;
use wuos_lab::{LabEnv, down, status, up};
use wuos_model::generate::{Generator, generate};

use crate::lab::exec_output;

/// VLSP (seeds/004): time to create a router, a link, and to delete a router.
const VLSP_ROUTER_MS: f64 = 800.0;
const VLSP_LINK_MS: f64 = 180.0;
const VLSP_DELETE_MS: f64 = 30.0;

#[derive(Subcommand)]
pub enum BenchCmd {
    /// Domains: start-to-ready of a container created on demand and from the idle pool, memory
    /// per domain.
    Domains {
        #[arg(long, default_value = "bench-results/domains.json")]
        out: PathBuf,
        #[arg(long, default_value_t = 20)]
        runs: usize,
    },
    /// Routing under service load: forwarding latency and throughput through a router whose
    /// services run CPU and memory stress, with the routing reservation on and off.
    Isolation {
        #[arg(long, default_value = "bench-results/isolation.json")]
        out: PathBuf,
        #[arg(long, default_value_t = 3000)]
        pings: u32,
        #[arg(long, default_value_t = 5)]
        runs: usize,
    },
    /// Orchestration: placement time over 1,000 routers, and decision latency (telemetry over the
    /// policy's threshold → the new instance serving, routes switched) on the VoIP lab.
    Orchestration {
        #[arg(long, default_value = "bench-results/orchestration.json")]
        out: PathBuf,
        #[arg(long, default_value_t = 5)]
        runs: usize,
    },
    /// XDP classifier: throughput and packets/s through a router with no XDP, the classifier
    /// counting (XDP_PASS), and redirecting to a local instance, side by side.
    Xdp {
        #[arg(long, default_value = "bench-results/xdp.json")]
        out: PathBuf,
        #[arg(long, default_value_t = 5)]
        runs: usize,
        /// Seconds each iperf3 run lasts.
        #[arg(long, default_value_t = 3)]
        seconds: u64,
    },
    /// Router daemons: telemetry propagation latency 2 hops away at 10 Hz, protocol bytes/s per
    /// router, wuosd CPU and RSS at 1 Hz and 10 Hz in grid:10x10.
    Telemetry {
        #[arg(long, default_value = "bench-results/telemetry.json")]
        out: PathBuf,
        /// Seconds each measurement window lasts.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
    },
    /// Lab up/down for grid:10x10, tree:4x4, tree:16x2 and random:1000, and the impairment path.
    Lab {
        /// Runs per topology (medians are reported).
        #[arg(long, default_value_t = 5)]
        runs: usize,
        #[arg(long, default_value = "bench-results/lab.json")]
        out: PathBuf,
        /// Skip random:1000.
        #[arg(long)]
        no_random: bool,
        /// Skip the impairment-path measurements.
        #[arg(long)]
        no_impair: bool,
    },
}

#[derive(Serialize)]
struct TopoResult {
    topology: String,
    routers: usize,
    links: usize,
    routes: usize,
    runs: usize,
    up_median_ms: f64,
    down_median_ms: f64,
    per_router_median_ms: f64,
    per_link_median_ms: f64,
    routes_median_ms: f64,
    per_deletion_median_ms: f64,
    memory_per_router_bytes: Option<u64>,
    reachable_check: bool,
    up_runs_ms: Vec<f64>,
    down_runs_ms: Vec<f64>,
}

#[derive(Serialize)]
struct ImpairResult {
    configured_delay_ms: f64,
    samples: usize,
    /// Round trip without the relay, subtracted to get the added delay.
    base_rtt_median_ms: f64,
    /// (RTT - base RTT) / 2 per ping: the one-way delay the relay added.
    added_one_way_median_ms: f64,
    added_one_way_p99_ms: f64,
    relay_tcp_gbps: f64,
    direct_tcp_gbps: f64,
}

#[derive(Serialize)]
struct Report {
    machine: String,
    vlsp_router_ms: f64,
    vlsp_link_ms: f64,
    vlsp_deletion_ms: f64,
    topologies: Vec<TopoResult>,
    impairment: Option<ImpairResult>,
}

/// The `p`-quantile (0..=1, nearest rank) of `v`; NaN when empty. Sorts `v`.
pub(crate) fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    if v.is_empty() {
        f64::NAN
    } else {
        v[((v.len() - 1) as f64 * p).round() as usize]
    }
}

fn median(v: &[f64]) -> f64 {
    pct(&mut v.to_vec(), 0.5)
}

fn stage(r: &up::UpReport, names: &[&str]) -> f64 {
    r.stages_ms
        .iter()
        .filter(|(n, _)| names.contains(&n.as_str()))
        .map(|(_, ms)| ms)
        .sum()
}

fn mem_available() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/meminfo").ok()?;
    let l = s.lines().find(|l| l.starts_with("MemAvailable:"))?;
    Some(l.split_whitespace().nth(1)?.parse::<u64>().ok()? * 1024)
}

pub fn machine() -> String {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mem = mem_available().map_or(0, |m| m >> 30);
    format!("{cpus} cores, {mem} GiB available, kernel {}", kernel.trim())
}

fn bench_topology(env: &LabEnv, spec: &str, runs: usize, measure_mem: bool) -> Result<TopoResult> {
    let g: Generator = spec.parse().map_err(|e| anyhow::anyhow!("{e}"))?;
    let t = generate(&g, 1);
    let name = "bench".to_string();
    let (mut ups, mut downs, mut routers, mut links, mut routes_ms) = (vec![], vec![], vec![], vec![], vec![]);
    let (mut routes, mut mem, mut reachable) = (0, None, true);
    for run in 0..runs {
        let before = mem_available();
        let r = up::up(
            env,
            t.clone(),
            &up::UpOptions {
                name: name.clone(),
                workers: up::default_workers(),
                // The network alone: daemons are measured by `wuos bench telemetry`.
                daemons: None,
            },
            &Silent,
        )?;
        if measure_mem && run == 0 {
            // Settle, then read what the lab took.
            std::thread::sleep(Duration::from_millis(300));
            if let (Some(b), Some(a)) = (before, mem_available()) {
                mem = Some(b.saturating_sub(a) / r.nodes as u64);
            }
        }
        if run == 0 {
            let st = status::status(env, &name)?;
            let last = st.nodes.last().context("empty lab")?;
            let out = exec_output(
                &name,
                &st.nodes[0].name,
                &["ping", "-c", "1", "-W", "2", &last.loopback.to_string()],
                Duration::from_secs(4),
            )?;
            reachable = parse_ping(&String::from_utf8_lossy(&out.stdout)).received == 1;
        }
        routes = r.routes;
        ups.push(r.total_ms);
        routers.push(stage(&r, &["cgroups", "namespaces"]) / r.nodes as f64);
        links.push(stage(&r, &["veths", "addresses"]) / r.links.max(1) as f64);
        routes_ms.push(stage(&r, &["routes"]));
        let d = down::down(env, &name, &Silent)?;
        downs.push(d.total_ms);
        eprintln!(
            "  {spec} run {}: up {:.0} ms, down {:.0} ms",
            run + 1,
            r.total_ms,
            d.total_ms
        );
        // Let the kernel finish freeing the namespaces before the next run.
        std::thread::sleep(Duration::from_millis(500));
    }
    Ok(TopoResult {
        topology: spec.into(),
        routers: t.nodes.len(),
        links: t.links.len(),
        routes,
        runs,
        up_median_ms: median(&ups),
        down_median_ms: median(&downs),
        per_router_median_ms: median(&routers),
        per_link_median_ms: median(&links),
        routes_median_ms: median(&routes_ms),
        per_deletion_median_ms: median(&downs) / t.nodes.len() as f64,
        memory_per_router_bytes: mem,
        reachable_check: reachable,
        up_runs_ms: ups,
        down_runs_ms: downs,
    })
}

fn iperf(lab: &str, server: &str, client: &str, addr: &str) -> Result<f64> {
    let exe = std::env::current_exe()?;
    let mut srv = std::process::Command::new(exe)
        .args(["lab", "exec", lab, server, "--", "iperf3", "-s", "-1"])
        .stdout(std::process::Stdio::null())
        .spawn()?;
    std::thread::sleep(Duration::from_millis(300));
    let out = exec_output(
        lab,
        client,
        &["iperf3", "-c", addr, "-t", "3", "-J"],
        Duration::from_secs(10),
    )?;
    let _ = srv.wait();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).context("iperf3 -J output")?;
    v["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .map(|b| b / 1e9)
        .context("iperf3 reported no throughput")
}

/// Round-trip times (ms) of `count` pings from r1, one per line of ping's output.
fn ping_rtts(lab: &str, dst: &str, count: u32) -> Result<Vec<f64>> {
    let out = exec_output(
        lab,
        "r1",
        &["ping", "-c", &count.to_string(), "-i", "0.02", dst],
        Duration::from_secs(30),
    )?;
    Ok(parse_ping(&String::from_utf8_lossy(&out.stdout)).rtts_ms)
}

fn set_delay(env: &LabEnv, lab: &str, delay: Duration) -> Result<()> {
    let change = LinkChange {
        delay: Some(delay),
        ..Default::default()
    };
    wuos_lab::link::set(env, lab, "r1", "r2", &change)?;
    Ok(())
}

fn bench_impair(env: &LabEnv) -> Result<ImpairResult> {
    let name = "benchimp";
    let t = generate(&Generator::Line(2), 1);
    up::up(
        env,
        t,
        &up::UpOptions {
            name: name.into(),
            workers: 2,
            daemons: None,
        },
        &Silent,
    )?;
    let res = (|| -> Result<ImpairResult> {
        let st = status::status(env, name)?;
        let dst = st.nodes[1].loopback.to_string();
        let direct = iperf(name, "r2", "r1", &dst)?;
        let base = median(&ping_rtts(name, &dst, 100)?);
        set_delay(env, name, Duration::from_millis(20))?;
        ping_rtts(name, &dst, 1)?; // ARP through the relay
        let mut added: Vec<f64> = ping_rtts(name, &dst, 200)?.iter().map(|r| (r - base) / 2.0).collect();
        if added.is_empty() {
            bail!("no ping replies through the relay");
        }
        added.sort_by(|a, b| a.total_cmp(b));
        // TCP throughput through the relay at a small delay (a 40 ms RTT would measure TCP's
        // window, not the relay).
        set_delay(env, name, Duration::from_micros(100))?;
        let relay = iperf(name, "r2", "r1", &dst)?;
        Ok(ImpairResult {
            configured_delay_ms: 20.0,
            samples: added.len(),
            base_rtt_median_ms: base,
            added_one_way_median_ms: median(&added),
            added_one_way_p99_ms: added[(added.len() * 99 / 100).min(added.len() - 1)],
            relay_tcp_gbps: relay,
            direct_tcp_gbps: direct,
        })
    })();
    down::down(env, name, &Silent)?;
    res
}

pub fn run(cmd: BenchCmd) -> Result<()> {
    let (runs, out, no_random, no_impair) = match cmd {
        BenchCmd::Lab {
            runs,
            out,
            no_random,
            no_impair,
        } => (runs, out, no_random, no_impair),
        BenchCmd::Telemetry { out, seconds } => return crate::bench_telemetry::run(&out, seconds),
        BenchCmd::Domains { out, runs } => return crate::bench_domains::run(&out, runs),
        BenchCmd::Isolation { out, pings, runs } => return crate::bench_isolation::run(&out, pings, runs),
        BenchCmd::Orchestration { out, runs } => return crate::bench_orchestration::run(&out, runs),
        BenchCmd::Xdp { out, runs, seconds } => return crate::bench_xdp::run(&out, runs, seconds),
    };
    if runs == 0 {
        bail!("--runs must be at least 1");
    }
    let env = LabEnv::system();
    let mut topologies = Vec::new();
    for spec in ["grid:10x10", "tree:4x4", "tree:16x2"] {
        topologies.push(bench_topology(&env, spec, runs, spec == "grid:10x10")?);
    }
    if !no_random {
        topologies.push(bench_topology(&env, "random:1000", 1, true)?);
    }
    let impairment = if no_impair { None } else { Some(bench_impair(&env)?) };
    let report = Report {
        machine: machine(),
        vlsp_router_ms: VLSP_ROUTER_MS,
        vlsp_link_ms: VLSP_LINK_MS,
        vlsp_deletion_ms: VLSP_DELETE_MS,
        topologies,
        impairment,
    };
    println!(
        "wuos bench lab — {} — medians of {runs} runs (random:1000: 1 run)",
        report.machine
    );
    println!(
        "{:<12} {:>7} {:>6} {:>7} {:>9} {:>9} {:>11} {:>9} {:>10} {:>10} {:>8}",
        "topology",
        "routers",
        "links",
        "routes",
        "up ms",
        "down ms",
        "ms/router",
        "ms/link",
        "routes ms",
        "ms/delete",
        "mem/rtr"
    );
    for t in &report.topologies {
        println!(
            "{:<12} {:>7} {:>6} {:>7} {:>9.0} {:>9.0} {:>11.2} {:>9.2} {:>10.0} {:>10.2} {:>8}",
            t.topology,
            t.routers,
            t.links,
            t.routes,
            t.up_median_ms,
            t.down_median_ms,
            t.per_router_median_ms,
            t.per_link_median_ms,
            t.routes_median_ms,
            t.per_deletion_median_ms,
            t.memory_per_router_bytes
                .map_or("-".into(), |b| format!("{:.2} MB", b as f64 / 1e6))
        );
    }
    println!(
        "{:<12} {:>7} {:>6} {:>7} {:>9} {:>9} {:>11.2} {:>9.2} {:>10} {:>10.2} {:>8}",
        "VLSP (paper)", "", "", "", "", "", VLSP_ROUTER_MS, VLSP_LINK_MS, "", VLSP_DELETE_MS, ""
    );
    if let Some(i) = &report.impairment {
        println!(
            "impairment relay: 20 ms configured one way -> added {:.3} ms median, {:.3} ms p99 ({} pings); TCP {:.2} Gbit/s through the relay vs {:.2} Gbit/s direct",
            i.added_one_way_median_ms, i.added_one_way_p99_ms, i.samples, i.relay_tcp_gbps, i.direct_tcp_gbps
        );
    }
    if let Some(dir) = out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&out, serde_json::to_string_pretty(&report)?)?;
    println!("wrote {}", out.display());
    Ok(())
}
