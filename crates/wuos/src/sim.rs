//! `wuos sim run TOPOLOGY|GENERATOR`: a simulated network of wuos routers (`wuos_sim`), the
//! options of a run, progress on stderr, a summary on stdout and the report as JSON.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use wuos_model::Topology;
use wuos_model::generate::{Generator, generate, looks_like_generator};
use wuos_model::units::parse_duration;
use wuos_policy::Policy;
use wuos_sim::report::{Detail, Memory};
use wuos_sim::{LoadModel, Network, Regions, Script, Sim, SimConfig, events};

use crate::topo::BadInput;

/// Largest generated network `wuos sim` takes (the lab takes 10,000).
pub const MAX_SIM_ROUTERS: usize = 1_000_000;

#[derive(Subcommand)]
pub enum SimCmd {
    /// Run a simulated network: every router runs the daemon's protocol instance, the
    /// orchestrators the daemon's orchestrator (docs/sim.md).
    Run(Box<RunArgs>),
}

#[derive(Args)]
pub struct RunArgs {
    /// A topology file (docs/topology.md) or a generator (`random:1000`, `grid:10x10`, `line:6`).
    topology: String,
    /// Simulated time to run (e.g. 60s, 1500ms).
    #[arg(long, default_value = "60s")]
    duration: String,
    /// Events during the run (JSON lines; docs/sim.md).
    #[arg(long)]
    events: Option<PathBuf>,
    /// Seeds the generator (random topologies) and every random choice of the run.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// The orchestrators' policy (docs/policy.md), in force from their start.
    #[arg(long)]
    policy: Option<PathBuf>,
    /// The routers running an orchestrator (default: every fog router).
    #[arg(long, value_delimiter = ',')]
    orchestrators: Option<Vec<String>>,
    /// The data centre (default: the first dc router, else `dc`, outside the network).
    #[arg(long)]
    datacenter: Option<String>,
    /// Regions: nearest (each router joins its nearest orchestrator, as the daemon does; the
    /// orchestrators work inside their regions), or none (no regions: any orchestrator routes
    /// its whole view, the newest rule wins).
    #[arg(long, default_value = "nearest")]
    regions: String,
    /// The report as JSON, every router included.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Flooding radius.
    #[arg(long, default_value_t = wuos_proto::instance::DEFAULT_HOP_LIMIT)]
    hop_limit: u32,
    #[arg(long, default_value = "1s")]
    hello_interval: String,
    /// Default: three hello intervals.
    #[arg(long)]
    dead_interval: Option<String>,
    #[arg(long, default_value = "1s")]
    telemetry_interval: String,
    /// One-way delay of links whose topology gives none.
    #[arg(long, default_value = "1ms")]
    delay: String,
    /// Loss of links whose topology gives none, percent (paid as TCP retransmissions).
    #[arg(long, default_value_t = 0.0)]
    loss: f64,
    /// Routers start at random times within this window.
    #[arg(long, default_value = "1s")]
    stagger: String,
    /// CPU and memory of every router: constant:CPU:MEM or walk[:STEP] (a seeded random walk).
    #[arg(long, default_value = "constant:20:20")]
    load: String,
    /// New flows per second every router reports for every service of the policies.
    #[arg(long, default_value_t = 1.0)]
    demand: f64,
    /// From a start intent to the instance running (the modelled controller).
    #[arg(long, default_value = "1s")]
    start_delay: String,
    /// How long an intent or an answer takes between two routers' controllers.
    #[arg(long, default_value = "5ms")]
    control_delay: String,
    /// No progress on stderr.
    #[arg(long)]
    quiet: bool,
}

fn bad(e: impl std::fmt::Display) -> anyhow::Error {
    BadInput(e.to_string()).into()
}

fn ms(option: &str, s: &str) -> Result<u64> {
    let d = parse_duration(s).map_err(|e| bad(format!("--{option}: {e}")))?;
    Ok(d.as_millis() as u64)
}

fn ms32(option: &str, s: &str) -> Result<u32> {
    u32::try_from(ms(option, s)?).map_err(|_| bad(format!("--{option} {s} is too long")))
}

/// A topology file or a generator spec, generators up to [`MAX_SIM_ROUTERS`] routers.
pub fn load_topology(arg: &str, seed: u64) -> Result<Topology> {
    if looks_like_generator(arg) && !Path::new(arg).exists() {
        let g = Generator::parse_with_max_nodes(arg, MAX_SIM_ROUTERS).map_err(bad)?;
        Ok(generate(&g, seed))
    } else {
        Ok(crate::topo::load(arg, seed)?)
    }
}

impl RunArgs {
    fn config(&self) -> Result<SimConfig> {
        let mut c = SimConfig {
            seed: self.seed,
            default_delay_us: parse_duration(&self.delay)
                .map_err(|e| bad(format!("--delay: {e}")))?
                .as_micros() as u64,
            default_loss_pct: self.loss,
            stagger_ms: ms("stagger", &self.stagger)?,
            load: self.load.parse::<LoadModel>().map_err(bad)?,
            demand_flows_per_s: self.demand,
            ..SimConfig::default()
        };
        let p = &mut c.protocol;
        p.hop_limit = self.hop_limit;
        p.hello_interval_ms = ms32("hello-interval", &self.hello_interval)?;
        p.dead_interval_ms = match &self.dead_interval {
            Some(d) => ms32("dead-interval", d)?,
            None => p.hello_interval_ms.saturating_mul(3),
        };
        p.telemetry_interval_ms = ms32("telemetry-interval", &self.telemetry_interval)?;
        c.controller.start_delay_ms = ms("start-delay", &self.start_delay)?;
        c.controller.control_delay_ms = ms("control-delay", &self.control_delay)?;
        c.orchestrators.routers = self.orchestrators.clone();
        c.orchestrators.datacenter = self.datacenter.clone();
        c.orchestrators.regions = self.regions.parse::<Regions>().map_err(bad)?;
        c.validate().map_err(bad)?;
        Ok(c)
    }
}

/// `VmRSS` of this process, bytes.
fn rss(proc_root: &Path) -> Option<u64> {
    let status = std::fs::read_to_string(proc_root.join("self/status")).ok()?;
    wuos_bench::host::meminfo_bytes(&status, "VmRSS")
}

/// Progress on stderr: a bar on a terminal, a line every 10 s otherwise, nothing when quiet.
struct Reporter {
    bar: Option<ProgressBar>,
    plain: bool,
    last_plain: Duration,
    routers: usize,
}

impl Reporter {
    fn new(quiet: bool, until_ms: u64, routers: usize) -> Self {
        let terminal = std::io::stderr().is_terminal();
        let bar = (!quiet && terminal).then(|| {
            let pb = ProgressBar::new(until_ms);
            pb.set_style(
                ProgressStyle::with_template("simulated {pos}/{len} ms [{bar:30}] {elapsed} {msg}")
                    .expect("static template")
                    .progress_chars("=> "),
            );
            pb
        });
        Reporter {
            bar,
            plain: !quiet && !terminal,
            last_plain: Duration::ZERO,
            routers,
        }
    }

    fn progress(&mut self, p: &wuos_sim::Progress) {
        let rate = self.routers as f64 * p.sim_ms as f64 / 1000.0 / p.wall.as_secs_f64().max(1e-9);
        let msg = format!("{} events, {rate:.0} router-s per wall-s", p.events);
        if let Some(pb) = &self.bar {
            pb.set_position(p.sim_ms);
            pb.set_message(msg);
        } else if self.plain && p.wall >= self.last_plain + Duration::from_secs(10) {
            self.last_plain = p.wall;
            eprintln!(
                "wuos sim: {:.1}/{:.1} s simulated after {:.0} s, {msg}",
                p.sim_ms as f64 / 1000.0,
                p.until_ms as f64 / 1000.0,
                p.wall.as_secs_f64()
            );
        }
    }

    fn finish(&self) {
        if let Some(pb) = &self.bar {
            pb.finish_and_clear();
        }
    }
}

pub fn run(cmd: SimCmd) -> Result<()> {
    match cmd {
        SimCmd::Run(a) => run_one(*a),
    }
}

fn run_one(a: RunArgs) -> Result<()> {
    let proc_root = Path::new("/proc");
    let rss_before = rss(proc_root);
    let cfg = a.config()?;
    let duration_ms = ms("duration", &a.duration)?;
    let topology = load_topology(&a.topology, a.seed)?;
    let net = Network::new(&topology, cfg.link_defaults());
    drop(topology);
    let script = match &a.events {
        Some(path) => events::load(path, &net)?,
        None => Script::default(),
    };
    let policy = match &a.policy {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| bad(format!("cannot read the policy {}: {e}", path.display())))?;
            let p = Policy::parse(&text).map_err(|e| bad(format!("{}:{e}", path.display())))?;
            Some((p, path.display().to_string()))
        }
        None => None,
    };
    let routers = net.len();
    let mut sim = Sim::new(net, cfg, script, policy)?;
    let mut reporter = Reporter::new(a.quiet, duration_ms, routers);
    sim.run_until(duration_ms, &mut |p| reporter.progress(p));
    reporter.finish();
    let rss_after = rss(proc_root);
    let detail = if a.out.is_some() {
        Detail::Routers
    } else {
        Detail::Summary
    };
    let mut report = sim.report(detail);
    if let (Some(before), Some(after)) = (rss_before, rss_after) {
        report.performance.memory = Some(Memory {
            rss_before_bytes: before,
            rss_after_bytes: after,
            bytes_per_router: after.saturating_sub(before) as f64 / routers as f64,
        });
    }
    print!("{report}");
    if let Some(out) = &a.out {
        if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        }
        let file = std::fs::File::create(out).with_context(|| format!("cannot write {}", out.display()))?;
        serde_json::to_writer_pretty(std::io::BufWriter::new(file), &report)
            .with_context(|| format!("cannot write {}", out.display()))?;
        println!("wrote {}", out.display());
    }
    // Freeing 100,000 instances one by one takes seconds; the process ends here anyway.
    std::mem::forget(sim);
    Ok(())
}
