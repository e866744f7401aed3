//! `wuos bench lab`: how fast a lab comes up and goes down — bare (the network alone) and with a
//! daemon in every router (ready = every daemon answers a Status call) — beside Mininet building
//! the same grid in the same run, and VLSP's published figures; all-pairs reachability on small
//! labs; memory per router; the impairment relay ([`relay`]).
//!
//! Runs are interleaved (wuos bare, wuos with daemons, Mininet, then the next run), so that a
//! drift of the machine hits every case alike.

pub mod mininet;
pub mod relay;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde::Serialize;
use wuos_lab::daemons::DaemonOptions;
use wuos_lab::progress::Silent;
use wuos_lab::{LabEnv, down, status, up};
use wuos_model::Topology;
use wuos_model::generate::{Generator, generate};

use crate::BenchOptions;
use crate::host::{Machine, mem_available};
use crate::node::{Node, runtime};
use crate::report::{Clock, begin, print_clocks, write_json};
use crate::stats::{Runs, at_resolution};
use crate::table::Table;

/// VLSP (seeds/004): time to create a router, a link, and to delete a router (its paper).
const VLSP_ROUTER_MS: f64 = 800.0;
const VLSP_LINK_MS: f64 = 180.0;
const VLSP_DELETE_MS: f64 = 30.0;
/// Labs up to this many routers are checked all pairs (every router pings every loopback);
/// larger ones from the first router to the last.
const ALL_PAIRS_MAX: usize = 25;
/// How often a router's daemon is asked for its status until it answers.
const READY_POLL: Duration = Duration::from_millis(5);
const LAB: &str = "bench";

/// What `wuos bench lab` measures.
#[derive(Clone, Debug)]
pub struct Options {
    pub out: PathBuf,
    pub runs: usize,
    /// Generators measured bare (and with daemons, when `daemons`).
    pub topologies: Vec<String>,
    pub daemons: bool,
    /// Of `topologies`, those also built by Mininet.
    pub mininet: Vec<String>,
    /// random:1000, bare, one run.
    pub random: bool,
    /// Pings through the impairment relay (0: skip the relay).
    pub relay_pings: u32,
}

impl BenchOptions for Options {
    const NAME: &'static str = "lab";

    /// The full benchmark: 5 runs of grid:10x10, tree:4x4, tree:16x2 and grid:3x3 bare and with
    fn full(out: PathBuf) -> Self {
        Self {
            out,
            runs: 5,
            topologies: ["grid:10x10", "tree:4x4", "tree:16x2", "grid:3x3"]
                .map(String::from)
                .to_vec(),
            daemons: true,
            mininet: vec!["grid:10x10".into()],
            random: true,
            relay_pings: 200,
        }
    }

    fn quick(out: PathBuf) -> Self {
        Self {
            runs: 1,
            topologies: ["grid:3x3", "grid:10x10"].map(String::from).to_vec(),
            random: false,
            relay_pings: 50,
            ..Self::full(out)
        }
    }

    fn runs_mut(&mut self) -> &mut usize {
        &mut self.runs
    }
}

#[derive(Clone, Debug, Serialize)]
struct Bare {
    up_ms: Runs,
    down_ms: Runs,
    per_router_ms: Runs,
    per_link_ms: Runs,
    routes_ms: Runs,
    per_deletion_median_ms: f64,
    memory_per_router_bytes: Option<u64>,
}

#[derive(Clone, Debug, Serialize)]
struct WithDaemons {
    /// `up()` returned (every daemon's admin socket exists).
    returned_ms: Runs,
    /// Every router's daemon answered a Status call.
    ready_ms: Runs,
    down_ms: Runs,
}

#[derive(Clone, Debug, Serialize)]
struct Mininet {
    python: String,
    hosts: usize,
    links: usize,
    up_ms: Runs,
    stop_ms: Runs,
    /// wuos ÷ Mininet, medians: bare up, up with daemons ready, down ÷ stop.
    ratio_bare_up: f64,
    ratio_daemons_ready: Option<f64>,
    ratio_down_vs_stop: f64,
}

#[derive(Clone, Debug, Default, Serialize)]
struct Reachability {
    /// "all pairs" or "first to last".
    mode: String,
    pings: usize,
    failed: usize,
    failures: Vec<String>,
}

#[derive(Clone, Debug, Serialize)]
struct TopoResult {
    topology: String,
    routers: usize,
    links: usize,
    routes: usize,
    runs: usize,
    bare: Bare,
    daemons: Option<WithDaemons>,
    mininet: Option<Mininet>,
    reachability: Reachability,
}

#[derive(Serialize)]
struct Report {
    machine: Machine,
    runs: usize,
    vlsp_router_ms: f64,
    vlsp_link_ms: f64,
    vlsp_deletion_ms: f64,
    topologies: Vec<TopoResult>,
    relay: Option<relay::RelayResult>,
    clocks: Vec<Clock>,
}

fn clocks() -> Vec<Clock> {
    vec![
        Clock::new(
            "up (bare)",
            "wuos_lab::up::up is called (nothing of the lab exists)",
            "it returns: cgroups, namespaces, veths, addresses and every route installed",
            "daemons (--no-daemons); the bench's own process start",
            "std::time::Instant (ns); quoted to 1 ms",
        ),
        Clock::new(
            "ready (with daemons)",
            "wuos_lab::up::up is called, daemons on (lab up's defaults)",
            "the last router's daemon has answered a Status call on its admin socket",
            "nothing after that answer (telemetry convergence is `wuos bench telemetry`'s)",
            "each router polled every 5 ms after up() returns: quoted to 5 ms",
        ),
        Clock::new(
            "down",
            "wuos_lab::down::down is called",
            "it returns: every namespace unmounted, every process killed, every cgroup removed",
            "the kernel freeing the namespaces and their veths afterwards (asynchronous)",
            "std::time::Instant (ns); quoted to 1 ms",
        ),
        Clock::new(
            "Mininet up / stop",
            "Python: before Mininet() (time.monotonic)",
            "net.start() returned (up); net.stop() returned (stop)",
            "the Python interpreter's start and the import of Mininet; routes (Mininet installs none, wuos does)",
            "time.monotonic (ns); quoted to 1 ms",
        ),
    ]
}

/// The daemons a run brings up: `wuos lab up`'s defaults.
fn daemon_options() -> DaemonOptions {
    DaemonOptions::default()
}

fn stage(r: &up::UpReport, names: &[&str]) -> f64 {
    r.stages_ms
        .iter()
        .filter(|(n, _)| names.contains(&n.as_str()))
        .map(|(_, ms)| ms)
        .sum()
}

/// What the reachability loop printed (`ok ADDR` / `fail ADDR` per ping): how many answered, and
/// the addresses that did not.
fn parse_reach(out: &str) -> (usize, Vec<String>) {
    let mut ok = 0;
    let mut failed = Vec::new();
    for l in out.lines() {
        match l.split_once(' ') {
            Some(("ok", _)) => ok += 1,
            Some(("fail", a)) => failed.push(a.trim().to_string()),
            _ => {}
        }
    }
    (ok, failed)
}

/// A shell loop that pings each of `dsts` once and prints `ok ADDR` or `fail ADDR`.
fn reach_argv(dsts: &[String]) -> Vec<String> {
    let script = format!(
        "for a in {}; do if ping -n -q -c 1 -W 2 $a >/dev/null 2>&1; then echo ok $a; else echo fail $a; fi; done",
        dsts.join(" ")
    );
    vec!["sh".into(), "-c".into(), script]
}

/// Pings every router's loopback from every router (small labs), else the last from the first.
fn reachability(env: &LabEnv, lab: &str) -> Result<Reachability> {
    let st = status::status(env, lab)?;
    let all_pairs = st.nodes.len() <= ALL_PAIRS_MAX;
    let (sources, dsts): (Vec<&str>, Vec<String>) = if all_pairs {
        (
            st.nodes.iter().map(|n| n.name.as_str()).collect(),
            st.nodes.iter().map(|n| n.loopback.to_string()).collect(),
        )
    } else {
        let (first, last) = (
            st.nodes.first().context("empty lab")?,
            st.nodes.last().context("empty lab")?,
        );
        (vec![first.name.as_str()], vec![last.loopback.to_string()])
    };
    let argv = reach_argv(&dsts);
    let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
    let mut r = Reachability {
        mode: if all_pairs { "all pairs" } else { "first to last" }.into(),
        ..Default::default()
    };
    for src in sources {
        let out = Node::new(env, lab, src).output(&argv, Duration::from_secs(3 * dsts.len() as u64 + 5))?;
        let (ok, failed) = parse_reach(&String::from_utf8_lossy(&out.stdout));
        if ok + failed.len() == 0 {
            bail!("no ping ran on {src}: {}", String::from_utf8_lossy(&out.stderr).trim());
        }
        r.pings += ok + failed.len();
        r.failed += failed.len();
        r.failures.extend(failed.into_iter().map(|d| format!("{src} -> {d}")));
    }
    Ok(r)
}

/// Waits until every router's daemon answers a Status call; when the last one did.
fn await_ready(env: &LabEnv, t: &Topology, timeout: Duration) -> Result<Instant> {
    let rt = runtime()?;
    rt.block_on(async {
        let mut set = tokio::task::JoinSet::new();
        for n in &t.nodes {
            let sock = Node::new(env, LAB, &n.name).socket();
            let name = n.name.clone();
            set.spawn(async move {
                let deadline = Instant::now() + timeout;
                loop {
                    if wuos_proto::admin::status(sock.clone()).await.is_ok() {
                        return Ok(Instant::now());
                    }
                    if Instant::now() > deadline {
                        bail!("the daemon of {name} did not answer within {timeout:?}");
                    }
                    tokio::time::sleep(READY_POLL).await;
                }
            });
        }
        let mut last = None;
        while let Some(r) = set.join_next().await {
            let at = r??;
            last = Some(last.map_or(at, |l: Instant| l.max(at)));
        }
        last.context("a lab without routers")
    })
}

struct RunSamples {
    up: Vec<f64>,
    down: Vec<f64>,
    per_router: Vec<f64>,
    per_link: Vec<f64>,
    routes: Vec<f64>,
    d_returned: Vec<f64>,
    d_ready: Vec<f64>,
    d_down: Vec<f64>,
    mn: Vec<mininet::MininetRun>,
}

fn runs_of(v: &[f64]) -> Runs {
    Runs::of(v).unwrap_or(Runs {
        median: f64::NAN,
        min: f64::NAN,
        max: f64::NAN,
        runs: Vec::new(),
    })
}

fn bench_topology(env: &LabEnv, spec: &str, runs: usize, daemons: bool, with_mininet: bool) -> Result<TopoResult> {
    let g: Generator = spec.parse().map_err(|e| anyhow::anyhow!("{spec}: {e}"))?;
    let t = generate(&g, 1);
    let measure_mem = t.nodes.len() >= 100;
    let mn_setup = if with_mininet {
        let plan = wuos_model::plan::address_plan(&t)?;
        let dir = std::env::temp_dir().join(format!("wuos-bench-mininet-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        Some((mininet::python()?, mininet::script(&t, &plan), dir))
    } else {
        None
    };
    let mut s = RunSamples {
        up: vec![],
        down: vec![],
        per_router: vec![],
        per_link: vec![],
        routes: vec![],
        d_returned: vec![],
        d_ready: vec![],
        d_down: vec![],
        mn: vec![],
    };
    let (mut routes, mut mem, mut reach) = (0, None, Reachability::default());
    for run in 0..runs {
        // Bare.
        let before = mem_available(&env.proc_root);
        let opts = up::UpOptions {
            name: LAB.into(),
            workers: up::default_workers(),
            daemons: None,
        };
        let r = up::up(env, t.clone(), &opts, &Silent)?;
        if measure_mem && run == 0 {
            std::thread::sleep(Duration::from_millis(300));
            if let (Some(b), Some(a)) = (before, mem_available(&env.proc_root)) {
                mem = Some(b.saturating_sub(a) / r.nodes as u64);
            }
        }
        if run == 0 {
            reach = reachability(env, LAB).inspect_err(|_| {
                let _ = down::down(env, LAB, &Silent);
            })?;
        }
        routes = r.routes;
        s.up.push(r.total_ms);
        s.per_router
            .push(stage(&r, &["cgroups", "namespaces"]) / r.nodes as f64);
        s.per_link
            .push(stage(&r, &["veths", "addresses"]) / r.links.max(1) as f64);
        s.routes.push(stage(&r, &["routes"]));
        let d = down::down(env, LAB, &Silent)?;
        s.down.push(d.total_ms);
        let mut line = format!(
            "  {spec} run {}: bare up {:.0} ms, down {:.0} ms",
            run + 1,
            r.total_ms,
            d.total_ms
        );
        // Let the kernel finish freeing the namespaces before the next lab.
        std::thread::sleep(Duration::from_millis(500));

        if daemons {
            let opts = up::UpOptions {
                daemons: Some(daemon_options()),
                ..opts
            };
            let t0 = Instant::now();
            let r = up::up(env, t.clone(), &opts, &Silent);
            let returned = t0.elapsed();
            let ready = r
                .map_err(anyhow::Error::from)
                .and_then(|_| await_ready(env, &t, Duration::from_secs(60)));
            let d = down::down(env, LAB, &Silent)?;
            let ready = ready?.duration_since(t0);
            s.d_returned.push(returned.as_secs_f64() * 1e3);
            s.d_ready.push(ready.as_secs_f64() * 1e3);
            s.d_down.push(d.total_ms);
            line += &format!(
                "; with daemons up() {:.0} ms, ready {:.0} ms, down {:.0} ms",
                returned.as_secs_f64() * 1e3,
                ready.as_secs_f64() * 1e3,
                d.total_ms
            );
            std::thread::sleep(Duration::from_millis(500));
        }
        if let Some((python, script, dir)) = &mn_setup {
            let m = mininet::run(python, script, dir)?;
            line += &format!("; Mininet up {:.0} ms, stop {:.0} ms", m.up_ms, m.stop_ms);
            s.mn.push(m);
            std::thread::sleep(Duration::from_millis(500));
        }
        eprintln!("{line}");
    }
    if let Some((_, _, dir)) = &mn_setup {
        let _ = std::fs::remove_dir_all(dir);
    }
    let bare = Bare {
        up_ms: runs_of(&s.up),
        down_ms: runs_of(&s.down),
        per_router_ms: runs_of(&s.per_router),
        per_link_ms: runs_of(&s.per_link),
        routes_ms: runs_of(&s.routes),
        per_deletion_median_ms: runs_of(&s.down).median / t.nodes.len() as f64,
        memory_per_router_bytes: mem,
    };
    let daemons = daemons.then(|| WithDaemons {
        returned_ms: runs_of(&s.d_returned),
        ready_ms: runs_of(&s.d_ready),
        down_ms: runs_of(&s.d_down),
    });
    let mininet = mn_setup.map(|(python, _, _)| {
        let up = runs_of(&s.mn.iter().map(|m| m.up_ms).collect::<Vec<_>>());
        let stop = runs_of(&s.mn.iter().map(|m| m.stop_ms).collect::<Vec<_>>());
        Mininet {
            python: python.display().to_string(),
            hosts: s.mn.first().map_or(0, |m| m.hosts),
            links: s.mn.first().map_or(0, |m| m.links),
            ratio_bare_up: bare.up_ms.median / up.median,
            ratio_daemons_ready: daemons.as_ref().map(|d| d.ready_ms.median / up.median),
            ratio_down_vs_stop: bare.down_ms.median / stop.median,
            up_ms: up,
            stop_ms: stop,
        }
    });
    Ok(TopoResult {
        topology: spec.into(),
        routers: t.nodes.len(),
        links: t.links.len(),
        routes,
        runs,
        bare,
        daemons,
        mininet,
        reachability: reach,
    })
}

/// Runs `wuos bench lab`.
pub fn run(o: &Options) -> Result<()> {
    let (env, mut machine) = begin(o.runs)?;
    eprintln!("wuos bench lab — {machine}");
    let mut topologies = Vec::new();
    for spec in &o.topologies {
        topologies.push(bench_topology(&env, spec, o.runs, o.daemons, o.mininet.contains(spec))?);
    }
    if o.random {
        topologies.push(bench_topology(&env, "random:1000", 1, false, false)?);
    }
    let relay = (o.relay_pings > 0)
        .then(|| relay::measure(&env, o.relay_pings))
        .transpose()?;
    machine.finish();
    let mut report = Report {
        machine,
        runs: o.runs,
        vlsp_router_ms: VLSP_ROUTER_MS,
        vlsp_link_ms: VLSP_LINK_MS,
        vlsp_deletion_ms: VLSP_DELETE_MS,
        topologies,
        clocks: clocks(),
        relay,
    };
    if let Some(r) = &report.relay {
        report.clocks.push(r.clock.clone());
    }
    print(&report);
    write_json(&o.out, &report)?;
    let unreachable: Vec<String> = report
        .topologies
        .iter()
        .filter(|t| t.reachability.failed > 0)
        .map(|t| format!("{}: {}", t.topology, t.reachability.failures.join(", ")))
        .collect();
    if !unreachable.is_empty() {
        bail!("unreachable loopbacks: {}", unreachable.join("; "));
    }
    Ok(())
}

fn print(r: &Report) {
    let random = r.topologies.iter().any(|t| t.topology == "random:1000");
    println!(
        "wuos bench lab — {} — {}{}",
        r.machine,
        if r.runs == 1 {
            "1 run".to_string()
        } else {
            format!("medians of {} runs (min–max)", r.runs)
        },
        if random { "; random:1000: 1 run" } else { "" }
    );
    let ms = |v: &Runs| v.show(1.0);
    let mut t = Table::new([
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
        "mem/router",
    ]);
    for x in &r.topologies {
        let b = &x.bare;
        t.row([
            x.topology.clone(),
            x.routers.to_string(),
            x.links.to_string(),
            x.routes.to_string(),
            ms(&b.up_ms),
            ms(&b.down_ms),
            at_resolution(b.per_router_ms.median, 0.01),
            at_resolution(b.per_link_ms.median, 0.01),
            at_resolution(b.routes_ms.median, 1.0),
            at_resolution(b.per_deletion_median_ms, 0.01),
            b.memory_per_router_bytes
                .map_or("-".into(), |m| format!("{:.2} MB", m as f64 / 1e6)),
        ]);
    }
    t.row([
        "VLSP (paper)".to_string(),
        String::new(),
        String::new(),
        String::new(),
        String::new(),
        String::new(),
        at_resolution(VLSP_ROUTER_MS, 1.0),
        at_resolution(VLSP_LINK_MS, 1.0),
        String::new(),
        at_resolution(VLSP_DELETE_MS, 1.0),
    ]);
    println!("bare labs (--no-daemons):\n{t}");
    let mut t = Table::new([
        "topology",
        "up() ms",
        "ready ms",
        "down ms",
        "bare up ms",
        "Mininet up ms",
        "Mininet stop ms",
        "bare/Mininet up",
        "ready/Mininet up",
        "down/Mininet stop",
    ]);
    // Two significant digits: a ratio of 25 ms to 5 s is 0.0050, not 0.00.
    let ratio = |v: Option<f64>| {
        v.map_or("-".into(), |v| {
            let digits = if v > 0.0 {
                (1 - v.log10().floor() as i32).max(0) as usize
            } else {
                2
            };
            format!("{v:.digits$}")
        })
    };
    for x in &r.topologies {
        let d = x.daemons.as_ref();
        let m = x.mininet.as_ref();
        if d.is_none() && m.is_none() {
            continue;
        }
        t.row([
            x.topology.clone(),
            d.map_or("-".into(), |d| ms(&d.returned_ms)),
            d.map_or("-".into(), |d| d.ready_ms.show(5.0)),
            d.map_or("-".into(), |d| ms(&d.down_ms)),
            ms(&x.bare.up_ms),
            m.map_or("-".into(), |m| ms(&m.up_ms)),
            m.map_or("-".into(), |m| ms(&m.stop_ms)),
            ratio(m.map(|m| m.ratio_bare_up)),
            ratio(m.and_then(|m| m.ratio_daemons_ready)),
            ratio(m.map(|m| m.ratio_down_vs_stop)),
        ]);
    }
    println!(
        "with daemons (ready = every daemon answers Status), and Mininet on the same grid (hosts, no routes):\n{t}"
    );
    let mut by_mode: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
    for x in &r.topologies {
        let e = by_mode.entry(x.reachability.mode.as_str()).or_default();
        e.0 += x.reachability.pings;
        e.1 += x.reachability.failed;
        println!(
            "reachability {}: {} pings ({}), {} failed{}",
            x.topology,
            x.reachability.pings,
            x.reachability.mode,
            x.reachability.failed,
            if x.reachability.failures.is_empty() {
                String::new()
            } else {
                format!(": {}", x.reachability.failures.join(", "))
            }
        );
    }
    if let Some(i) = &r.relay {
        let q = |v: f64| at_resolution(v, i.added_resolution_ms);
        println!(
            "impairment relay: {} ms configured one way -> added {} ms median, {} ms p99, {} ms max ({} pings; resolution {} ms); TCP {:.2} Gbit/s through the relay vs {:.2} Gbit/s direct",
            i.configured_delay_ms,
            q(i.added_one_way_ms.median),
            q(i.added_one_way_ms.p99),
            q(i.added_one_way_ms.max),
            i.added_one_way_ms.n,
            i.added_resolution_ms,
            i.relay_tcp_gbps,
            i.direct_tcp_gbps
        );
    }
    print_clocks(&r.clocks);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reachability_output_counts_failures_by_address() {
        let out = "ok 10.254.0.1\nfail 10.254.0.9\nok 10.254.0.2\nnoise\nfail 10.254.0.7\n";
        assert_eq!(
            parse_reach(out),
            (2, vec!["10.254.0.9".to_string(), "10.254.0.7".to_string()])
        );
        assert_eq!(parse_reach(""), (0, vec![]));
    }

    #[test]
    fn the_reachability_loop_pings_each_address_once() {
        let argv = reach_argv(&["10.254.0.1".into(), "10.254.0.2".into()]);
        assert_eq!(argv[..2], ["sh".to_string(), "-c".to_string()]);
        assert!(argv[2].starts_with("for a in 10.254.0.1 10.254.0.2; do"), "{}", argv[2]);
        assert!(argv[2].contains("ping -n -q -c 1 -W 2 $a"));
    }

    #[test]
    fn the_quick_run_keeps_the_mininet_grid_among_its_topologies() {
        let q = Options::quick("x.json".into());
        assert!(q.mininet.iter().all(|m| q.topologies.contains(m)), "{q:?}");
        let f = Options::full("x.json".into());
        assert!(f.mininet.iter().all(|m| f.topologies.contains(m)), "{f:?}");
        assert!(
            f.topologies
                .iter()
                .any(|t| generate(&t.parse().unwrap(), 1).nodes.len() <= ALL_PAIRS_MAX)
        );
    }
}
