//! `wuos bench …`: the options of each benchmark; the benchmarks are `wuos_bench`'s.

use std::path::PathBuf;

use anyhow::Result;
use clap::{Args, Subcommand};
use wuos_bench::{BenchOptions, domains, failover, isolation, lab, orchestration, overlays, sim, telemetry, xdp};

/// `TOPOLOGY@INTERVAL_MS,...`, or `none`.
fn parse_scale(specs: &[String]) -> anyhow::Result<Vec<(String, u64)>> {
    if specs.iter().any(|s| s == "none") {
        return Ok(Vec::new());
    }
    specs
        .iter()
        .map(|s| {
            let (t, ms) = s.rsplit_once('@').ok_or_else(|| {
                anyhow::anyhow!("--scale {s:?}: expected TOPOLOGY@INTERVAL_MS, e.g. random:1000@1000")
            })?;
            let ms: u64 = ms
                .parse()
                .map_err(|_| anyhow::anyhow!("--scale {s:?}: {ms:?} is not a number of milliseconds"))?;
            Ok((t.to_string(), ms))
        })
        .collect()
}

#[derive(Subcommand)]
pub enum BenchCmd {
    /// Lab up/down bare and with daemons (ready = every daemon answers Status), Mininet on the
    /// same grid side by side, all-pairs reachability, memory per router, the impairment relay.
    Lab(LabArgs),
    /// Router daemons: telemetry propagation 2 hops away at 10 Hz, protocol bytes/s, wuosd CPU and
    /// RSS at 1 Hz and 10 Hz in grid:10x10; at scale (random:500 and random:1000 at 1 Hz,
    /// grid:10x10 at 10 Hz): CPU, RSS, bytes/s, adjacencies up, neighbor losses, 2-hop propagation.
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
    /// SD-WAN overlays (seed 001, Fig. 5-8): creating 1 to 1,000 overlays between two edges over
    /// two underlays on one edge — time, CPU time, memory — with wuos's executor and pyroute2 side by
    /// side; then end to end through the NBI (request to traffic on every tunnel) and the edge
    /// daemon's memory.
    Overlays(OverlaysArgs),
    /// SD-WAN failover (issue 12): time from a degradation of a steered class's path (delay over
    /// its SLA, 100 % loss, 5 % loss) to its packets leaving on another path, seen on the wire,
    /// at 100-ms and 1-s probes; the probes' cost for 10, 100 and 1,000 tunnels.
    Failover(FailoverArgs),
    /// The simulator: router-seconds simulated per wall-second and memory per router at 1,000,
    /// 10,000 and 100,000 routers, protocol only and with orchestrators (no root needed).
    Sim(SimArgs),
    /// One run of `wuos bench sim`, in this process: prints its result as JSON.
    #[command(hide = true)]
    SimCase(SimCaseArgs),
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
    /// Scale configurations instead of the defaults, each TOPOLOGY@INTERVAL_MS (e.g.
    /// random:1000@1000); `none` skips the scale part.
    #[arg(long, value_delimiter = ',')]
    scale: Option<Vec<String>>,
    /// Seconds of the scale part's watched window (adjacencies, losses, propagation).
    #[arg(long)]
    watch: Option<u64>,
    /// Seconds between the scale part's warm-up (every adjacency up) and its CPU window, for
    /// the start-up transients to pass (default 30; 10 with --quick).
    #[arg(long)]
    settle: Option<u64>,
    /// Transports of the scale part, side by side (`-grpc`: links carried over gRPC, as
    /// protocol 2.3 did).
    #[arg(long, value_delimiter = ',', value_parser = ["plain", "mtls", "plain-grpc", "mtls-grpc"])]
    transports: Option<Vec<String>>,
    /// Sample phases of the scale part, side by side: `free` (each daemon one interval after its
    /// start) or `aligned` (all at the multiples of the interval on the host's clock).
    #[arg(long, value_delimiter = ',')]
    phases: Option<Vec<wuos_model::daemon::SamplePhase>>,
    /// Hello intervals of the scale part, side by side: `default` (the daemon's: the telemetry
    /// interval, or ten of them while echo watches the links) or a duration (e.g. `3s`):
    /// keepalives at most this far apart, a neighbor lost after three.
    #[arg(long, value_delimiter = ',')]
    hellos: Option<Vec<String>>,
    /// Who watches the links in the scale part, side by side: `echo` (ICMP echo answered by the
    /// neighbors' kernels, the daemon's default at intervals of 1 s or more) or `hellos` (hellos
    /// alone, as before echo watched them).
    #[arg(long, value_delimiter = ',', value_parser = ["echo", "hellos"])]
    liveness: Option<Vec<String>>,
    /// The scale part's routers host no domains: the protocol alone, without the domains'
    /// supervision of cgroups.
    #[arg(long)]
    no_domains: bool,
    /// Only the scale part (not the line:5 propagation and the grid:10x10 cost).
    #[arg(long)]
    scale_only: bool,
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
pub struct OverlaysArgs {
    #[command(flatten)]
    common: Common,
    /// Overlay counts, e.g. 1,10,100,1000.
    #[arg(long, value_delimiter = ',')]
    counts: Option<Vec<usize>>,
    /// Without pyroute2 beside wuos.
    #[arg(long)]
    no_peer: bool,
    /// Without the end-to-end half (NBI request to traffic on every tunnel, daemon memory).
    #[arg(long)]
    no_e2e: bool,
}

#[derive(Args)]
pub struct FailoverArgs {
    #[command(flatten)]
    common: Common,
    /// Probe intervals, e.g. 100ms,1s.
    #[arg(long, value_delimiter = ',')]
    probe_intervals: Option<Vec<String>>,
    /// Tunnel counts for the probes' cost, e.g. 10,100,1000 (0: skip it).
    #[arg(long, value_delimiter = ',')]
    tunnels: Option<Vec<usize>>,
    /// Probe every tunnel on its own (by default tunnels over the same underlay path share probes).
    #[arg(long)]
    probe_each_tunnel: bool,
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
pub struct SimArgs {
    #[command(flatten)]
    common: Common,
    /// Network sizes (routers), instead of 1000,10000,100000 (--quick: 1000,10000).
    #[arg(long, value_delimiter = ',')]
    sizes: Option<Vec<usize>>,
    /// Simulated seconds per run.
    #[arg(long)]
    seconds: Option<u64>,
    /// Runs of networks of 100,000 routers or more (default: 1; one takes the better part of
    /// an hour).
    #[arg(long)]
    large_runs: Option<usize>,
}

#[derive(Args)]
pub struct SimCaseArgs {
    #[arg(long)]
    routers: usize,
    #[arg(long)]
    seconds: u64,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// One orchestrator per this many routers (none: protocol only).
    #[arg(long)]
    orchestrator_every: Option<usize>,
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
            o.watch_seconds = a.watch.unwrap_or(o.watch_seconds);
            o.settle_seconds = a.settle.unwrap_or(o.settle_seconds);
            if let Some(t) = a.transports {
                o.transports = t;
            }
            if let Some(p) = a.phases {
                o.phases = p;
            }
            if let Some(h) = a.hellos {
                o.hellos = h
                    .iter()
                    .map(|h| match h.as_str() {
                        "default" => Ok(None),
                        d => wuos_model::units::parse_duration(d)
                            .map(Some)
                            .map_err(|e| anyhow::anyhow!("--hellos {d}: {e}")),
                    })
                    .collect::<Result<_>>()?;
            }
            if let Some(l) = a.liveness {
                o.echo_watch = l.iter().map(|l| l == "echo").collect();
            }
            o.domains = !a.no_domains;
            o.scale_only = a.scale_only;
            if let Some(specs) = a.scale {
                o.scale = parse_scale(&specs)?;
            }
            telemetry::run(&o)
        }
        BenchCmd::Domains(a) => {
            let mut o: domains::Options = a.common.options();
            o.vm_runs = a.vm_runs.unwrap_or(o.vm_runs);
            domains::run(&o)
        }
        BenchCmd::Overlays(a) => {
            let mut o: overlays::Options = a.common.options();
            if let Some(c) = a.counts {
                o.counts = c;
            }
            o.peer = !a.no_peer;
            o.e2e = !a.no_e2e;
            overlays::run(&o)
        }
        BenchCmd::Failover(a) => {
            let mut o: failover::Options = a.common.options();
            if let Some(p) = a.probe_intervals {
                o.cadences = p
                    .iter()
                    .map(|t| wuos_model::units::parse_duration(t))
                    .collect::<Result<_, _>>()
                    .map_err(|e| crate::topo::BadInput(format!("--probe-intervals: {e}")))?;
            }
            if let Some(t) = a.tunnels {
                o.tunnels = t.into_iter().filter(|&n| n > 0).collect();
            }
            o.probe_each_tunnel = a.probe_each_tunnel;
            failover::run(&o)
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
        BenchCmd::Sim(a) => {
            let mut o: sim::Options = a.common.options();
            if let Some(s) = a.sizes {
                o.sizes = s;
            }
            o.seconds = a.seconds.unwrap_or(o.seconds);
            o.large_runs = a.large_runs.unwrap_or(o.large_runs);
            o.exe = std::env::current_exe()?;
            sim::run(&o)
        }
        BenchCmd::SimCase(a) => {
            let spec = sim::CaseSpec {
                routers: a.routers,
                orchestrator_every: a.orchestrator_every,
                seconds: a.seconds,
                seed: a.seed,
            };
            let r = sim::case(spec, std::path::Path::new("/proc"))?;
            println!("{}", serde_json::to_string(&r)?);
            Ok(())
        }
    }
}
