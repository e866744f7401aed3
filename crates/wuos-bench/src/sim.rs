//! `wuos bench sim`: how fast the simulator (`wuos_sim`) runs networks of wuos routers, and how
//! much memory a simulated router takes.
//!
//! Networks `random:N` (Barabási–Albert, m = 2, seed 1) of 1,000, 10,000 and 100,000 routers
//! (`--quick`: not 100,000), default protocol timers (hello and samples every second, radius 2),
//! links of 1 ms, loads that random-walk (so every advert changes), in two modes:
//!
//! - **protocol**: every router runs the protocol instance, no orchestrator (and no regions: with
//!   no orchestrator there is none to choose, and the figures stay comparable with runs made
//!   before the simulator had regions);
//! - **protocol + orchestrators**: also an orchestrator on one router in 50 (`r1`, `r51`, …),
//!   with the VoIP policy (`examples/voip.policy`) and every router reporting 1 flow/s of demand,
//!   with regions as the daemon runs them (`nearest`): every router chooses its region at each
//!   sample, each orchestrator places and routes inside its own, and each router's controller
//!   refuses what another orchestrator asks of it. The table counts the rules overwritten by
//!   another orchestrator (conflicts), the intents refused, and what the conflict check
//!   (`wuos_orchestrator::conflict::check`) finds at the end.
//!
//! Every run is a process of its own (`wuos bench sim-case`, which this benchmark starts with
//! the `wuos` executable it is given), so that the memory it measures is only its network's:
//!
//! - **router-seconds per wall-second**: routers × simulated seconds ÷ the wall time of the run.
//!   The clock starts once the network is built and every router's start is scheduled
//!   (`Sim::new` returned) and stops when `Sim::run_until` returns; it excludes generating the
//!   topology and building the network (reported apart as the build time) and writing reports.
//!   `std::time::Instant` (ns); quoted to 3 significant digits.
//! - **memory per router**: (`VmRSS` after the run − `VmRSS` before the topology is generated)
//!   ÷ routers, from `/proc/self/status` (kB; pages of 4 KiB), the allocator's retained memory
//!   included.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use wuos_model::generate::{Generator, RandomModel, generate};
use wuos_policy::Policy;
use wuos_sim::report::Detail;
use wuos_sim::{LoadModel, Network, Regions, Script, Sim, SimConfig};

use crate::BenchOptions;
use crate::host::{Machine, loadavg, meminfo_bytes, proc_usage, ticks_per_s};
use crate::report::{Clock, begin, print_clocks, write_json};
use crate::stats::{Runs, at_resolution};
use crate::table::Table;

#[derive(Clone, Debug)]
pub struct Options {
    pub out: PathBuf,
    pub runs: usize,
    /// Network sizes (routers).
    pub sizes: Vec<usize>,
    /// Simulated seconds per run.
    pub seconds: u64,
    /// One orchestrator per this many routers in the second mode.
    pub orchestrator_every: usize,
    /// Runs of networks of [`LARGE`] routers or more (instead of `runs`).
    pub large_runs: usize,
    /// The `wuos` executable that runs each case (`wuos bench sim-case`).
    pub exe: PathBuf,
}

impl BenchOptions for Options {
    const NAME: &'static str = "sim";

    fn full(out: PathBuf) -> Self {
        Self {
            out,
            runs: 3,
            sizes: vec![1_000, 10_000, 100_000],
            seconds: 60,
            orchestrator_every: 50,
            large_runs: 1,
            exe: PathBuf::from("wuos"),
        }
    }

    fn quick(out: PathBuf) -> Self {
        Self {
            out,
            runs: 1,
            sizes: vec![1_000, 10_000],
            seconds: 10,
            orchestrator_every: 50,
            large_runs: 1,
            exe: PathBuf::from("wuos"),
        }
    }

    fn runs_mut(&mut self) -> &mut usize {
        &mut self.runs
    }
}

/// Networks this large run [`Options::large_runs`] times.
pub const LARGE: usize = 100_000;

/// One run: a network size, a mode, simulated seconds, a seed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaseSpec {
    pub routers: usize,
    /// One orchestrator per this many routers; `None`: protocol only.
    pub orchestrator_every: Option<usize>,
    pub seconds: u64,
    pub seed: u64,
}

/// What one run measured (`wuos bench sim-case` prints it as JSON).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CaseResult {
    pub spec: CaseSpec,
    pub links: usize,
    pub orchestrators: usize,
    /// Generating the topology, building the network and `Sim::new`, s.
    pub build_s: f64,
    /// `Sim::run_until`, s.
    pub run_s: f64,
    pub router_seconds_per_wall_second: f64,
    /// CPU time (user + system) of the process during `Sim::run_until`, s.
    pub cpu_s: f64,
    /// Routers × simulated seconds ÷ `cpu_s`: the speed without the other processes of the
    /// machine.
    pub router_seconds_per_cpu_second: f64,
    pub events: u64,
    pub events_per_s: f64,
    pub frames: u64,
    pub bytes: u64,
    pub view_mean_entries: f64,
    pub view_max_entries: usize,
    pub decisions: usize,
    pub rule_writes: u64,
    pub rule_conflicts: u64,
    /// Intents the controllers refused (another region's orchestrator; a route on a router of
    /// no region leading elsewhere).
    pub intents_refused: u64,
    /// Rules dropped by controllers whose router changed region.
    pub rules_dropped: u64,
    /// What the conflict check finds at the end.
    pub conflict_findings: usize,
    pub rss_before_bytes: u64,
    pub rss_after_bytes: u64,
    pub bytes_per_router: f64,
    /// The machine's load averages when the run started and ended (it is shared: a load above
    /// its 2 cores slows the wall figure, not the CPU one).
    pub loadavg_before: Option<[f64; 3]>,
    pub loadavg_after: Option<[f64; 3]>,
}

/// `VmRSS` of this process.
fn rss(proc_root: &Path) -> Result<u64> {
    let status = std::fs::read_to_string(proc_root.join("self/status")).context("cannot read /proc/self/status")?;
    meminfo_bytes(&status, "VmRSS").context("no VmRSS in /proc/self/status")
}

/// Runs one case in this process (the child's side).
pub fn case(spec: CaseSpec, proc_root: &Path) -> Result<CaseResult> {
    let rss_before = rss(proc_root)?;
    let t0 = Instant::now();
    let cfg = SimConfig {
        seed: spec.seed,
        load: LoadModel::Walk { step_pct: 2.0 },
        orchestrators: wuos_sim::config::OrchestratorsConfig {
            routers: Some(match spec.orchestrator_every {
                Some(k) => (1..=spec.routers).step_by(k.max(1)).map(|i| format!("r{i}")).collect(),
                None => Vec::new(),
            }),
            regions: match spec.orchestrator_every {
                Some(_) => Regions::Nearest,
                None => Regions::None,
            },
            ..Default::default()
        },
        ..SimConfig::default()
    };
    let g = Generator::Random {
        n: spec.routers,
        model: RandomModel::BarabasiAlbert { m: 2 },
    };
    let topology = generate(&g, spec.seed);
    let net = Network::new(&topology, cfg.link_defaults());
    drop(topology);
    let policy = match spec.orchestrator_every {
        Some(_) => Some((
            Policy::parse(crate::voip::POLICY).map_err(|e| anyhow::anyhow!("examples/voip.policy:{e}"))?,
            "examples/voip.policy".to_string(),
        )),
        None => None,
    };
    let mut sim = Sim::new(net, cfg, Script::default(), policy)?;
    let build_s = t0.elapsed().as_secs_f64();
    let pid = std::process::id() as i32;
    let cpu = || proc_usage(proc_root, pid).map(|(ticks, _)| ticks as f64 / ticks_per_s());
    let load = || loadavg(&std::fs::read_to_string(proc_root.join("loadavg")).unwrap_or_default());
    let loadavg_before = load();
    let cpu_before = cpu().context("cannot read this process's CPU time")?;
    sim.run_until(spec.seconds * 1000, &mut |_| {});
    let cpu_s = cpu().context("cannot read this process's CPU time")? - cpu_before;
    let loadavg_after = load();
    let rss_after = rss(proc_root)?;
    let r = sim.report(Detail::Summary);
    let run_s = sim.wall().as_secs_f64();
    let t = r.result.totals;
    // Freeing every instance takes seconds at 100,000 routers; the case's process ends next.
    std::mem::forget(sim);
    Ok(CaseResult {
        spec,
        links: r.result.links,
        orchestrators: r.result.orchestrators.len(),
        build_s,
        run_s,
        router_seconds_per_wall_second: r.performance.router_seconds_per_wall_second,
        cpu_s,
        router_seconds_per_cpu_second: (spec.routers as u64 * spec.seconds) as f64 / cpu_s.max(1e-3),
        events: t.events,
        events_per_s: r.performance.events_per_s,
        frames: t.frames_sent,
        bytes: t.bytes_sent,
        view_mean_entries: r.result.views.mean_entries,
        view_max_entries: r.result.views.max_entries,
        decisions: r.result.orchestrators.iter().map(|o| o.decisions.len()).sum(),
        rule_writes: t.rule_writes,
        rule_conflicts: t.rule_conflicts,
        intents_refused: t.intents_refused.total(),
        rules_dropped: t.rules_dropped,
        conflict_findings: r.result.conflict_check.findings,
        rss_before_bytes: rss_before,
        rss_after_bytes: rss_after,
        bytes_per_router: rss_after.saturating_sub(rss_before) as f64 / spec.routers as f64,
        loadavg_before,
        loadavg_after,
    })
}

/// Runs one case in a child process: `EXE bench sim-case …`.
fn spawn_case(exe: &Path, spec: CaseSpec) -> Result<CaseResult> {
    let mut cmd = Command::new(exe);
    cmd.args(["bench", "sim-case"])
        .args(["--routers", &spec.routers.to_string()])
        .args(["--seconds", &spec.seconds.to_string()])
        .args(["--seed", &spec.seed.to_string()]);
    if let Some(k) = spec.orchestrator_every {
        cmd.args(["--orchestrator-every", &k.to_string()]);
    }
    let out = cmd
        .output()
        .with_context(|| format!("cannot run {} bench sim-case", exe.display()))?;
    if !out.status.success() {
        bail!(
            "{} bench sim-case failed ({}): {}",
            exe.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    serde_json::from_slice(&out.stdout).context("sim-case printed no result")
}

/// One size and mode over its runs.
#[derive(Serialize)]
struct Row {
    routers: usize,
    mode: &'static str,
    links: usize,
    orchestrators: usize,
    router_seconds_per_wall_second: Runs,
    router_seconds_per_cpu_second: Runs,
    run_s: Runs,
    build_s: Runs,
    events_per_s: Runs,
    bytes_per_router: Runs,
    frames_per_router_second: f64,
    bytes_per_router_second: f64,
    view_mean_entries: f64,
    view_max_entries: usize,
    decisions: usize,
    rule_conflicts: u64,
    intents_refused: u64,
    conflict_findings: usize,
    runs: Vec<CaseResult>,
}

#[derive(Serialize)]
struct Report<'a> {
    machine: &'a Machine,
    simulated_seconds: u64,
    orchestrator_every: usize,
    /// False while the benchmark runs: the file is rewritten after every size and mode, so
    /// that a run cut short keeps what it measured.
    complete: bool,
    rows: &'a [Row],
    clocks: &'a [Clock],
}

/// How each figure is measured.
fn clocks() -> Vec<Clock> {
    vec![
        Clock::new(
            "router-s per wall-s",
            "Sim::new returned: the network is built and every router's start is scheduled",
            "Sim::run_until returned at the simulated end",
            "generating the topology, building the network, the report",
            "std::time::Instant (ns); quoted to 3 significant digits",
        ),
        Clock::new(
            "router-s per CPU-s",
            "the same start, as this process's utime + stime",
            "the same stop",
            "what other processes took from the machine (the wall figure includes it)",
            "/proc/self/stat clock ticks (10 ms); quoted to 3 significant digits",
        ),
        Clock::new(
            "KiB per router",
            "VmRSS before the topology is generated (a fresh process per run)",
            "VmRSS after the run",
            "nothing the process holds: the allocator's retained memory counts",
            "/proc/self/status VmRSS (kB, 4 KiB pages); quoted to 0.1 KiB",
        ),
    ]
}

/// Writes the report so far, quietly.
fn write_partial(path: &Path, report: &Report) -> Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let text = serde_json::to_string_pretty(report).context("the report does not serialise")?;
    std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))
}

/// Three significant digits.
fn sig3(v: f64) -> String {
    if v <= 0.0 || !v.is_finite() {
        return at_resolution(v, 1.0);
    }
    let resolution = 10f64.powi(v.log10().floor() as i32 - 2);
    at_resolution(v, resolution)
}

pub fn run(o: &Options) -> Result<()> {
    let (_env, mut machine) = begin(o.runs)?;
    println!("wuos bench sim: {machine}");
    println!(
        "random:N (Barabási–Albert m=2), {} simulated s, hello/telemetry 1 s, radius 2, loads walking; \
         one orchestrator per {} routers in the second mode",
        o.seconds, o.orchestrator_every
    );
    let clocks = clocks();
    let mut rows = Vec::new();
    for &n in &o.sizes {
        for (mode, every) in [
            ("protocol", None),
            ("protocol + orchestrators", Some(o.orchestrator_every)),
        ] {
            let mut runs = Vec::new();
            let count = if n >= LARGE { o.large_runs.max(1) } else { o.runs };
            for run in 0..count {
                let spec = CaseSpec {
                    routers: n,
                    orchestrator_every: every,
                    seconds: o.seconds,
                    seed: 1,
                };
                let r = spawn_case(&o.exe, spec).with_context(|| format!("{n} routers, {mode}, run {}", run + 1))?;
                eprintln!(
                    "  {n} routers, {mode}, run {}: {:.1} s ({:.1} s of CPU), {} router-s per wall-s, {:.1} KiB per router",
                    run + 1,
                    r.run_s,
                    r.cpu_s,
                    sig3(r.router_seconds_per_wall_second),
                    r.bytes_per_router / 1024.0
                );
                runs.push(r);
            }
            let of = |f: fn(&CaseResult) -> f64| Runs::of(&runs.iter().map(f).collect::<Vec<_>>()).expect("runs >= 1");
            let first = &runs[0];
            let router_s = (n as u64 * o.seconds) as f64;
            rows.push(Row {
                routers: n,
                mode,
                links: first.links,
                orchestrators: first.orchestrators,
                router_seconds_per_wall_second: of(|r| r.router_seconds_per_wall_second),
                router_seconds_per_cpu_second: of(|r| r.router_seconds_per_cpu_second),
                run_s: of(|r| r.run_s),
                build_s: of(|r| r.build_s),
                events_per_s: of(|r| r.events_per_s),
                bytes_per_router: of(|r| r.bytes_per_router),
                frames_per_router_second: first.frames as f64 / router_s,
                bytes_per_router_second: first.bytes as f64 / router_s,
                view_mean_entries: first.view_mean_entries,
                view_max_entries: first.view_max_entries,
                decisions: first.decisions,
                rule_conflicts: first.rule_conflicts,
                intents_refused: first.intents_refused,
                conflict_findings: first.conflict_findings,
                runs,
            });
            let partial = Report {
                machine: &machine,
                simulated_seconds: o.seconds,
                orchestrator_every: o.orchestrator_every,
                complete: false,
                rows: &rows,
                clocks: &clocks,
            };
            write_partial(&o.out, &partial)?;
        }
    }
    machine.finish();
    let mut t = Table::new([
        "routers",
        "mode",
        "router-s per wall-s",
        "router-s per CPU-s",
        "run s",
        "build s",
        "events/s",
        "KiB per router",
        "frames per router-s",
        "bytes per router-s",
        "decisions",
        "rule conflicts",
        "refused intents",
        "conflict-check findings",
    ]);
    for r in &rows {
        let show = |runs: &Runs, f: fn(f64) -> String| {
            if runs.runs.len() < 2 {
                f(runs.median)
            } else {
                format!("{} ({}–{})", f(runs.median), f(runs.min), f(runs.max))
            }
        };
        t.row([
            r.routers.to_string(),
            r.mode.to_string(),
            show(&r.router_seconds_per_wall_second, sig3),
            show(&r.router_seconds_per_cpu_second, sig3),
            show(&r.run_s, |v| at_resolution(v, 0.1)),
            show(&r.build_s, |v| at_resolution(v, 0.01)),
            show(&r.events_per_s, sig3),
            show(&r.bytes_per_router, |v| at_resolution(v / 1024.0, 0.1)),
            at_resolution(r.frames_per_router_second, 0.01),
            at_resolution(r.bytes_per_router_second, 1.0),
            r.decisions.to_string(),
            r.rule_conflicts.to_string(),
            r.intents_refused.to_string(),
            r.conflict_findings.to_string(),
        ]);
    }
    println!("{t}");
    println!(
        "(medians of {} runs, {} at {LARGE} routers or more; min–max in parentheses; {machine})",
        o.runs,
        o.large_runs.max(1)
    );
    print_clocks(&clocks);
    write_json(
        &o.out,
        &Report {
            machine: &machine,
            simulated_seconds: o.seconds,
            orchestrator_every: o.orchestrator_every,
            complete: true,
            rows: &rows,
            clocks: &clocks,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_small_case_runs_in_process() {
        let r = case(
            CaseSpec {
                routers: 100,
                orchestrator_every: Some(50),
                seconds: 5,
                seed: 1,
            },
            Path::new("/proc"),
        )
        .unwrap();
        assert_eq!((r.links, r.orchestrators), (197, 2));
        assert!(r.frames > 0 && r.router_seconds_per_wall_second > 0.0, "{r:?}");
        assert_eq!((r.rule_conflicts, r.conflict_findings), (0, 0), "regions: {r:?}");
        assert_eq!(sig3(123_456.0), "123000");
        assert_eq!(sig3(1.2345), "1.23");
    }
}
