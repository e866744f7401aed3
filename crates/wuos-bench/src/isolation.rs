//! `wuos bench isolation`: what the routing reservation protects on a router that forwards in the
//! kernel — its **routing control plane** under service stress — and its forwarding, for the
//! reserved, the unreserved and the idle router, in one run.
//!
//! ```text
//!   h1 ── r2 ── h3        r2: 2 cores, 1 GiB by default; its services run CPU + memory stress
//!   │     │     │
//!   wuosd wuosd wuosd     hellos every 100 ms between neighbors, telemetry sampled every 100 ms
//! ```
//!
//! While a case runs, a sampler asks the three daemons for their status every 50 ms
//! ([`control`]): hello round trips between r2 and its neighbors (and back), the gaps between r2's
//! own telemetry samples, and neighbor losses. Meanwhile pings (from core 0, every 2 ms) and an
//! iperf3 run measure forwarding through r2 as before: the traffic endpoints are pinned to core 0,
//! so the kernel forwards their packets on core 0 — what IRQ affinity does for a NIC. With the
//! reservation, core 0 and a quarter of the memory are the routing domain's, services are pinned
//! to the other core and admission lets in what fits; without it, services may use everything.
//!
//! Cases are interleaved run by run, so that a drift of the machine hits all three alike.

pub mod control;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde::Serialize;
use wuos_lab::daemons::DaemonOptions;
use wuos_lab::probe::parse_ping;
use wuos_lab::progress::Silent;
use wuos_lab::{LabEnv, down, status, up};

use crate::BenchOptions;
use crate::host::Machine;
use crate::node::{Node, iperf_gbps, printed_resolution_ms, runtime};
use crate::report::{Clock, begin, print_clocks, write_json};
use crate::stats::{Runs, Summary};
use crate::table::Table;
use control::{ControlFigures, ControlSamples, measurably_worse};

const LAB: &str = "benchiso";
const TELEMETRY: Duration = Duration::from_millis(100);
const SAMPLE_EVERY: Duration = Duration::from_millis(50);

#[derive(Clone, Debug)]
pub struct Options {
    pub out: PathBuf,
    pub runs: usize,
    /// Pings per case (2 ms apart).
    pub pings: u32,
    /// The shortest control-plane window per case, seconds (it also covers the forwarding tests).
    pub seconds: u64,
    /// Stress domains asked for on r2.
    pub stress: usize,
    /// Memory each stress domain keeps touched.
    pub stress_memory: String,
    /// r2's memory.
    pub router_memory: String,
}

impl BenchOptions for Options {
    const NAME: &'static str = "isolation";

    fn full(out: PathBuf) -> Self {
        Self {
            out,
            runs: 5,
            pings: 3000,
            seconds: 15,
            stress: 4,
            stress_memory: "200MiB".into(),
            router_memory: "1GiB".into(),
        }
    }

    fn quick(out: PathBuf) -> Self {
        Self {
            runs: 1,
            pings: 500,
            seconds: 5,
            ..Self::full(out)
        }
    }

    fn runs_mut(&mut self) -> &mut usize {
        &mut self.runs
    }
}

#[derive(Clone, Debug, Serialize)]
struct Case {
    case: String,
    /// Stress domains asked for, and how many admission let in.
    stress_requested: usize,
    stress_domains: usize,
    control: ControlFigures,
    ping_samples: usize,
    ping_resolution_us: f64,
    ping_p50_us: f64,
    ping_p99_us: f64,
    throughput_gbps: f64,
}

/// One case over the runs: the median of each figure and every run's value.
#[derive(Clone, Debug, Serialize)]
struct CaseRuns {
    case: String,
    stress_domains: usize,
    hello_rtt_median_ms: Option<Runs>,
    hello_rtt_p99_ms: Option<Runs>,
    hello_jitter_ms: Option<Runs>,
    sample_gap_p99_ms: Option<Runs>,
    sample_gap_max_ms: Option<Runs>,
    neighbor_losses: Runs,
    links_closed: Runs,
    ping_p50_us: Option<Runs>,
    ping_p99_us: Option<Runs>,
    throughput_gbps: Option<Runs>,
}

#[derive(Serialize)]
struct Verdict {
    figure: String,
    /// Whether the unreserved median lies above every idle and reserved run.
    unreserved_measurably_worse: Option<bool>,
}

#[derive(Serialize)]
struct Report {
    machine: Machine,
    method: String,
    cases: Vec<CaseRuns>,
    verdicts: Vec<Verdict>,
    /// Every run of every case.
    runs: Vec<Case>,
    clocks: Vec<Clock>,
}

fn topology(o: &Options) -> String {
    format!(
        "[[node]]\nname = \"h1\"\nrole = \"host\"\n\
         [[node]]\nname = \"r2\"\nrole = \"fog\"\ncpus = 2.0\nmemory = \"{}\"\n\
         [[node]]\nname = \"h3\"\nrole = \"host\"\n\
         [[link]]\na = \"h1\"\nb = \"r2\"\n[[link]]\na = \"r2\"\nb = \"h3\"\n",
        o.router_memory
    )
}

/// Samples the control plane of h1, r2, h3 until `stop`; r2's own adverts are followed.
fn sample(env: &LabEnv, stop: &AtomicBool) -> Result<ControlSamples> {
    let rt = runtime()?;
    let nodes = ["h1", "r2", "h3"];
    let mut s = ControlSamples::default();
    rt.block_on(async {
        let mut clients = Vec::new();
        for n in nodes {
            clients.push((n, Node::new(env, LAB, n).admin().await?));
        }
        while !stop.load(Ordering::Relaxed) {
            let t = Instant::now();
            for (n, c) in &mut clients {
                // A daemon too slow to answer is itself a finding: its next reply still counts.
                if let Ok(st) = c.status().await {
                    s.observe(n, &st, *n == "r2");
                }
            }
            tokio::time::sleep(SAMPLE_EVERY.saturating_sub(t.elapsed())).await;
        }
        Ok(s)
    })
}

/// Pings and iperf3 from h1 to h3 through r2, endpoints on core 0: (RTTs µs, resolution µs,
/// Gbit/s).
fn forwarding(env: &LabEnv, pings: u32) -> Result<(Vec<f64>, f64, f64)> {
    let st = status::status(env, LAB)?;
    let h3 = st
        .nodes
        .iter()
        .find(|n| n.name == "h3")
        .context("h3")?
        .loopback
        .to_string();
    let h1 = Node::new(env, LAB, "h1");
    let out = h1.ping(
        &["taskset", "-c", "0"],
        &["-i", "0.002", "-c", &pings.to_string(), "-W", "1"],
        &h3,
        Duration::from_secs(u64::from(pings) / 200 + 15),
    )?;
    let rtts: Vec<f64> = parse_ping(&out).rtts_ms.into_iter().map(|ms| ms * 1e3).collect();
    if rtts.len() < (pings as usize) * 9 / 10 {
        bail!("only {} of {pings} pings answered", rtts.len());
    }
    let res = printed_resolution_ms(&out).unwrap_or(f64::NAN) * 1e3;
    let gbps = iperf_gbps(Node::new(env, LAB, "h3"), h1, &h3, 3, &["taskset", "-c", "0"])?;
    Ok((rtts, res, gbps))
}

fn start_stress(env: &LabEnv, o: &Options, n: usize) -> Result<usize> {
    let rt = runtime()?;
    let mut admitted = 0;
    for i in 0..n {
        // Each: two busy threads (capped by the catalog's 0.5-core quota) and memory kept touched.
        let params = [
            ("memory", o.stress_memory.as_str()),
            ("cpus", "2"),
            ("duration", "600s"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let r = rt.block_on(async {
            Node::new(env, LAB, "r2")
                .admin()
                .await?
                .start_service("stress", &format!("load{i}"), params)
                .await
                .map_err(anyhow::Error::from)
        });
        match r {
            Ok(_) => admitted += 1,
            // Admission refusing what would eat into the routing reservation is the protection.
            Err(e)
                if e.downcast_ref::<wuos_proto::admin::AdminError>()
                    .is_some_and(|a| wuos_model::Classify::class(a) == wuos_model::ErrorClass::BadInput) => {}
            Err(e) => return Err(e.context("start stress")),
        }
    }
    Ok(admitted)
}

fn one_case(env: &LabEnv, o: &Options, name: &str, reservation: bool, stress: usize) -> Result<Case> {
    let _ = down::down(env, LAB, &Silent);
    let opts = up::UpOptions {
        name: LAB.into(),
        workers: 2,
        daemons: Some(DaemonOptions {
            routing_reservation: reservation,
            telemetry_interval: TELEMETRY,
            ..Default::default()
        }),
    };
    up::up(env, wuos_model::file::parse(&topology(o), "bench")?, &opts, &Silent)?;
    let r = (|| -> Result<Case> {
        // Neighbors up and a first hello answered before the load starts.
        std::thread::sleep(Duration::from_secs(2));
        let admitted = start_stress(env, o, stress)?;
        std::thread::sleep(Duration::from_secs(1));
        let stop = Arc::new(AtomicBool::new(false));
        let t0 = Instant::now();
        let (control, fwd) = std::thread::scope(|s| {
            let sampler = s.spawn(|| sample(env, &stop));
            let fwd = forwarding(env, o.pings);
            let rest = Duration::from_secs(o.seconds).saturating_sub(t0.elapsed());
            std::thread::sleep(rest);
            stop.store(true, Ordering::Relaxed);
            (sampler.join().expect("the control-plane sampler panicked"), fwd)
        });
        let (control, (mut rtts, res, gbps)) = (control?, fwd?);
        rtts.sort_by(f64::total_cmp);
        let s = Summary::of(&rtts).context("no ping replies")?;
        Ok(Case {
            case: name.into(),
            stress_requested: stress,
            stress_domains: admitted,
            control: control.figures(),
            ping_samples: rtts.len(),
            ping_resolution_us: res,
            ping_p50_us: s.median,
            ping_p99_us: s.p99,
            throughput_gbps: gbps,
        })
    })();
    down::down(env, LAB, &Silent)?;
    r
}

fn case_runs(runs: &[Case]) -> CaseRuns {
    let of = |f: &dyn Fn(&Case) -> Option<f64>| Runs::of(&runs.iter().filter_map(f).collect::<Vec<_>>());
    let count = |f: &dyn Fn(&Case) -> u64| {
        Runs::of(&runs.iter().map(|c| f(c) as f64).collect::<Vec<_>>()).expect("at least one run")
    };
    CaseRuns {
        case: runs[0].case.clone(),
        stress_domains: runs[0].stress_domains,
        hello_rtt_median_ms: of(&|c| Some(c.control.hello_rtt_ms.as_ref()?.median)),
        hello_rtt_p99_ms: of(&|c| Some(c.control.hello_rtt_ms.as_ref()?.p99)),
        hello_jitter_ms: of(&|c| c.control.hello_jitter_ms),
        sample_gap_p99_ms: of(&|c| Some(c.control.sample_gap_ms.as_ref()?.p99)),
        sample_gap_max_ms: of(&|c| Some(c.control.sample_gap_ms.as_ref()?.max)),
        neighbor_losses: count(&|c| c.control.neighbor_losses),
        links_closed: count(&|c| c.control.links_closed),
        ping_p50_us: of(&|c| Some(c.ping_p50_us)),
        ping_p99_us: of(&|c| Some(c.ping_p99_us)),
        throughput_gbps: of(&|c| Some(c.throughput_gbps)),
    }
}

fn verdicts(idle: &[Case], reserved: &[Case], unreserved: &[Case]) -> Vec<Verdict> {
    type Pick = fn(&Case) -> Option<f64>;
    let figures: [(&str, Pick); 6] = [
        ("hello RTT p99", |c| Some(c.control.hello_rtt_ms.as_ref()?.p99)),
        ("hello jitter", |c| c.control.hello_jitter_ms),
        ("telemetry sample gap p99", |c| {
            Some(c.control.sample_gap_ms.as_ref()?.p99)
        }),
        ("neighbor losses + failed hellos", |c| {
            Some((c.control.neighbor_losses + c.control.links_closed) as f64)
        }),
        ("forwarding ping p99", |c| Some(c.ping_p99_us)),
        ("forwarding throughput (lower is worse)", |c| Some(-c.throughput_gbps)),
    ];
    figures
        .into_iter()
        .map(|(figure, f)| {
            let v = |cases: &[Case]| cases.iter().filter_map(f).collect::<Vec<f64>>();
            Verdict {
                figure: figure.into(),
                unreserved_measurably_worse: measurably_worse(&v(idle), &v(reserved), &v(unreserved)),
            }
        })
        .collect()
}

fn clocks(o: &Options) -> Vec<Clock> {
    vec![
        Clock::new(
            "hello RTT",
            "a daemon sends a hello to a neighbor (its own monotonic clock)",
            "the neighbor's reply arrives; read from StatusReply.neighbors[].rtt_ms, each new value once (first value of each pair dropped)",
            "the sampler's own polling (every 50 ms); hellos answered between two polls with the same value count once",
            "wuosd's monotonic clock (ns); quoted to 0.01 ms",
        ),
        Clock::new(
            "telemetry sample gap",
            "r2's daemon samples its telemetry (own.timestamp_unix_ns of sequence n)",
            "its next sample (sequence n+1); nominal 100 ms",
            "pairs whose sequences the sampler did not both see (counted as unseen)",
            "CLOCK_REALTIME in wuosd (ns); quoted to 0.1 ms",
        ),
        Clock::new(
            "forwarding ping",
            "ping on h1 (core 0) sends an echo request to h3 through r2",
            "the reply is received",
            "nothing",
            "ping prints RTTs below 1 ms with 3 decimals: 1 µs",
        ),
        Clock::new(
            "stress",
            &format!("{} stress domains asked for on r2 after its neighbors are up", o.stress),
            "the lab is torn down",
            "admission refusals (with the reservation fewer domains fit: the protection)",
            "-",
        ),
    ]
}

/// Runs `wuos bench isolation`.
pub fn run(o: &Options) -> Result<()> {
    let (env, mut machine) = begin(o.runs)?;
    let (mut idle, mut reserved, mut unreserved) = (Vec::new(), Vec::new(), Vec::new());
    for r in 0..o.runs {
        eprintln!("run {}/{}: idle, reserved, unreserved", r + 1, o.runs);
        idle.push(one_case(&env, o, "idle", true, 0)?);
        reserved.push(one_case(&env, o, "reserved", true, o.stress)?);
        unreserved.push(one_case(&env, o, "unreserved", false, o.stress)?);
    }
    machine.finish();
    let report = Report {
        machine,
        method: format!(
            "h1 -> r2 -> h3 (r2: 2 cores, {}); daemons at 100 ms; {} stress domains asked for on r2 (2 busy threads and {} each, 0.5-core quota), admitted as the reservation allows; control plane sampled every 50 ms for at least {} s; {} pings at 2 ms and iperf3 3 s, endpoints on core 0",
            o.router_memory, o.stress, o.stress_memory, o.seconds, o.pings
        ),
        cases: vec![case_runs(&idle), case_runs(&reserved), case_runs(&unreserved)],
        verdicts: verdicts(&idle, &reserved, &unreserved),
        runs: idle.into_iter().chain(reserved).chain(unreserved).collect(),
        clocks: clocks(o),
    };
    print(&report, o.runs);
    write_json(&o.out, &report)
}

fn print(r: &Report, runs: usize) {
    println!("wuos bench isolation — {}", r.machine);
    println!("{}", r.method);
    let show = |v: &Option<Runs>, res: f64| v.as_ref().map_or("-".into(), |v| v.show(res));
    let mut t = Table::new([
        "case",
        "services",
        "hello RTT med ms",
        "hello RTT p99 ms",
        "hello jitter ms",
        "sample gap p99 ms",
        "sample gap max ms",
        "neighbor losses",
        "hellos failed",
    ]);
    for c in &r.cases {
        t.row([
            c.case.clone(),
            format!("{}", c.stress_domains),
            show(&c.hello_rtt_median_ms, 0.01),
            show(&c.hello_rtt_p99_ms, 0.01),
            show(&c.hello_jitter_ms, 0.01),
            show(&c.sample_gap_p99_ms, 0.1),
            show(&c.sample_gap_max_ms, 0.1),
            c.neighbor_losses.show(1.0),
            c.links_closed.show(1.0),
        ]);
    }
    println!("routing control plane (medians of {runs} interleaved runs, min–max):\n{t}");
    let mut t = Table::new(["case", "ping p50 µs", "ping p99 µs", "Gbit/s"]);
    for c in &r.cases {
        t.row([
            c.case.clone(),
            show(&c.ping_p50_us, 1.0),
            show(&c.ping_p99_us, 1.0),
            show(&c.throughput_gbps, 0.01),
        ]);
    }
    println!("forwarding through r2:\n{t}");
    let unseen: u64 = r.runs.iter().map(|c| c.control.samples_unseen).sum();
    if unseen > 0 {
        println!("{unseen} telemetry samples were not seen by the sampler (their gaps are left out)");
    }
    for v in &r.verdicts {
        let says = match v.unreserved_measurably_worse {
            Some(true) => "unreserved is measurably worse (its median is above every idle and reserved run)",
            Some(false) => "unreserved is NOT measurably worse: its median lies within the other cases' runs",
            None => "not measured",
        };
        println!("  {}: {says}", v.figure);
    }
    if r.verdicts
        .iter()
        .take(4)
        .all(|v| v.unreserved_measurably_worse != Some(true))
    {
        println!(
            "the unreserved router's control plane was NOT measurably hurt by this load: the reservation's benefit is not shown by this run"
        );
    }
    print_clocks(&r.clocks);
}
