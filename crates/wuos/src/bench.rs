//! `wuos bench …`: the options of each benchmark; the benchmarks are `wuos_bench`'s.

use std::path::PathBuf;

use anyhow::Result;
use clap::{Args, Subcommand};
use wuos_bench::{BenchOptions, domains, isolation, lab, orchestration, telemetry, xdp};

#[derive(Subcommand)]
pub enum BenchCmd {
    /// Lab up/down bare and with daemons (ready = every daemon answers Status), Mininet on the
    /// same grid side by side, all-pairs reachability, memory per router, the impairment relay.
    Lab(LabArgs),
    /// Router daemons: telemetry propagation 2 hops away at 10 Hz, protocol bytes/s, wuosd CPU and
    /// RSS at 1 Hz and 10 Hz in grid:10x10.
    Telemetry(TelemetryArgs),
    /// Domains: start as the caller sees it (client-side wall time around StartService) beside the
    /// daemon's own figure — on demand, from the idle pool, microVM — and memory per idle domain.
    Domains(DomainsArgs),
    /// What the routing reservation protects: the routing control plane (hello RTT and jitter,
    /// telemetry regularity, neighbor losses) and forwarding through a router whose services run
    /// CPU and memory stress, reserved vs unreserved vs idle.
    Isolation(IsolationArgs),
    /// XDP classifier: throughput and packets/s with no XDP, counting (XDP_PASS), and redirecting
    /// to a local instance, side by side.
    Xdp(XdpArgs),
    /// Orchestration: placement time over 1,000 routers, and decision latency on the VoIP lab
    /// (the sample over the policy's threshold → the new VIP route in every router's kernel).
    Orchestration(OrchestrationArgs),
}

/// Options every benchmark has.
#[derive(Args)]
pub struct Common {
    /// A short smoke run (fewer runs, shorter windows): proves the benchmark works, its figures
    /// are not for quoting.
    #[arg(long)]
    quick: bool,
    /// Runs (medians are reported).
    #[arg(long)]
    runs: Option<usize>,
    /// Where the JSON goes (default: bench-results/NAME.json).
    #[arg(long)]
    out: Option<PathBuf>,
}

impl Common {
    /// The benchmark's options: full or quick, with the common overrides applied.
    fn options<O: BenchOptions>(&self) -> O {
        let out = self
            .out
            .clone()
            .unwrap_or_else(|| PathBuf::from(format!("bench-results/{}.json", O::NAME)));
        let mut o = if self.quick { O::quick(out) } else { O::full(out) };
        if let Some(runs) = self.runs {
            *o.runs_mut() = runs;
        }
        o
    }
}

#[derive(Args)]
pub struct LabArgs {
    #[command(flatten)]
    common: Common,
    /// Topologies (generators) to measure, instead of the default set.
    #[arg(long, value_delimiter = ',')]
    topologies: Option<Vec<String>>,
    /// Skip the lab with daemons.
    #[arg(long)]
    no_daemons: bool,
    /// Skip Mininet.
    #[arg(long)]
    no_mininet: bool,
    /// Skip random:1000.
    #[arg(long)]
    no_random: bool,
    /// Skip the impairment relay.
    #[arg(long)]
    no_impair: bool,
}

#[derive(Args)]
pub struct TelemetryArgs {
    #[command(flatten)]
    common: Common,
    /// Seconds each measurement window lasts.
    #[arg(long)]
    seconds: Option<u64>,
}

#[derive(Args)]
pub struct DomainsArgs {
    #[command(flatten)]
    common: Common,
    /// MicroVM starts (0: none).
    #[arg(long)]
    vm_runs: Option<usize>,
}

#[derive(Args)]
pub struct IsolationArgs {
    #[command(flatten)]
    common: Common,
    /// Pings per case.
    #[arg(long)]
    pings: Option<u32>,
    /// Stress domains asked for on the router.
    #[arg(long)]
    stress: Option<usize>,
    /// Memory each stress domain keeps touched (e.g. 200MiB).
    #[arg(long)]
    stress_memory: Option<String>,
    /// The router's memory (e.g. 1GiB).
    #[arg(long)]
    router_memory: Option<String>,
}

#[derive(Args)]
pub struct XdpArgs {
    #[command(flatten)]
    common: Common,
    /// Seconds each iperf3 run lasts.
    #[arg(long)]
    seconds: Option<u64>,
}

#[derive(Args)]
pub struct OrchestrationArgs {
    #[command(flatten)]
    common: Common,
}

pub fn run(cmd: BenchCmd) -> Result<()> {
    match cmd {
        BenchCmd::Lab(a) => {
            let mut o: lab::Options = a.common.options();
            if let Some(t) = a.topologies {
                o.mininet.retain(|m| t.contains(m));
                o.topologies = t;
            }
            o.daemons &= !a.no_daemons;
            if a.no_mininet {
                o.mininet.clear();
            }
            o.random &= !a.no_random;
            if a.no_impair {
                o.relay_pings = 0;
            }
            lab::run(&o)
        }
        BenchCmd::Telemetry(a) => {
            let mut o: telemetry::Options = a.common.options();
            o.seconds = a.seconds.unwrap_or(o.seconds);
            telemetry::run(&o)
        }
        BenchCmd::Domains(a) => {
            let mut o: domains::Options = a.common.options();
            o.vm_runs = a.vm_runs.unwrap_or(o.vm_runs);
            domains::run(&o)
        }
        BenchCmd::Isolation(a) => {
            let mut o: isolation::Options = a.common.options();
            o.pings = a.pings.unwrap_or(o.pings);
            o.stress = a.stress.unwrap_or(o.stress);
            o.stress_memory = a.stress_memory.unwrap_or(o.stress_memory);
            o.router_memory = a.router_memory.unwrap_or(o.router_memory);
            isolation::run(&o)
        }
        BenchCmd::Xdp(a) => {
            let mut o: xdp::Options = a.common.options();
            o.seconds = a.seconds.unwrap_or(o.seconds);
            xdp::run(&o)
        }
        BenchCmd::Orchestration(a) => orchestration::run(&a.common.options()),
    }
}
