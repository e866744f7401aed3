//! `wuos bench orchestration`: how fast the orchestrator decides and how fast a decision takes
//! effect.
//!
//! - **Placement computation**: one evaluation of the VoIP policy over a synthetic neighborhood of
//!   1,000 routers (`wuos_orchestrator::synthetic_neighborhood`), and one whole telemetry round
//!   through the orchestrator (candidates copied in, decisions out).
//! - **Decision latency**, on the VoIP scenario ([`crate::voip::Scenario`]) with calls running
//!   and the PABX on the fog router: a `stress` VNF pushes the fog router's memory over the
//!   policy's 30%. The clock **starts** at the fog router's own telemetry sample that first
//!   crossed the threshold (its `timestamp_unix_ns`) and **stops** when every router has applied
//!   the new VIP route, read back from its kernel ([`fib`]: each router's FIB polled for the
//!   VIP until it is the /32 towards the new serving router). It is split at the orchestrator
//!   round that decided (`at_unix_ms`): sample → round, and round → routes applied everywhere
//!   ([`latency`]). The stress is then removed, the PABX comes back (after the policy's hold),
//!   and the next run starts from a settled placement (the orchestrator decides nothing for a
//!   service in the middle of a move).

pub mod fib;
pub mod latency;

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde::Serialize;
use wuos_lab::names;
use wuos_lab::state::LabState;
use wuos_orchestrator::{Config, Input, Orchestrator, Policy, RegionView, synthetic_neighborhood};
use wuos_southbound::routes::FibEntry;

use crate::BenchOptions;
use crate::host::Machine;
use crate::report::{Clock, begin, print_clocks, write_json};
use crate::stats::{Runs, Summary, at_resolution};
use crate::table::Table;
use crate::voip::{Calls, MEM_THRESHOLD_PCT, POLICY, Say, Scenario, TELEMETRY, VIP, unix_ms, unix_ns};
use fib::{Fibs, Seen, lock};
use latency::{RunLatency, applied_at, run_latency};

#[derive(Clone, Debug)]
pub struct Options {
    pub out: PathBuf,
    pub runs: usize,
    /// Placement evaluations timed.
    pub iterations: usize,
}

impl BenchOptions for Options {
    const NAME: &'static str = "orchestration";

    fn full(out: PathBuf) -> Self {
        Self {
            out,
            runs: 5,
            iterations: 2000,
        }
    }

    fn quick(out: PathBuf) -> Self {
        Self {
            out,
            runs: 1,
            iterations: 200,
        }
    }

    fn runs_mut(&mut self) -> &mut usize {
        &mut self.runs
    }
}

const NEIGHBORHOOD: usize = 1000;
/// The VoIP scenario's lab here: not `voip`, so that a demo or test running meanwhile keeps its
/// own.
const LAB: &str = "benchorch";

#[derive(Serialize)]
struct Placement {
    neighborhood_routers: usize,
    evaluate_us: Summary,
    telemetry_round_us: Summary,
}

/// One run of the decision latency, with what was seen to get it.
#[derive(Serialize)]
struct DecisionRun {
    from: String,
    to: String,
    reason: String,
    /// The fog router's sample that crossed the threshold: sequence and memory use.
    crossing_sequence: u64,
    crossing_mem_pct: f64,
    /// Whether the sample before it (one sequence earlier) was seen below the threshold; if not,
    /// an earlier crossing sample may have been missed and the start may be late by an interval.
    previous_sample_seen: bool,
    latency: RunLatency,
    /// FIB poll rounds during the run (ms): the resolution of the stop.
    poll_round_ms: Option<Summary>,
}

#[derive(Serialize)]
struct Report {
    machine: Machine,
    placement: Placement,
    telemetry_interval_ms: u64,
    decision_runs: Vec<DecisionRun>,
    total_ms: Option<Runs>,
    sample_to_round_ms: Option<Runs>,
    round_to_applied_ms: Option<Runs>,
    clocks: Vec<Clock>,
}

fn placement(n: usize, iterations: usize) -> Result<Placement> {
    let policy = Policy::parse(POLICY).map_err(|e| anyhow::anyhow!("examples/voip.policy:{e}"))?;
    let svc = policy.services[0].clone();
    let mut candidates = synthetic_neighborhood(n, 7);
    candidates[0].name = "fog".into();
    let mut times = Vec::with_capacity(iterations);
    for _ in 0..iterations {
        let t = Instant::now();
        let e = svc.evaluate(&candidates);
        std::hint::black_box(&e);
        times.push(t.elapsed().as_secs_f64() * 1e6);
    }
    // Without regions: the synthetic routers name no region, so with regions only this router
    // and the data centre would be candidates.
    let mut cfg = Config::new("fog", "dc");
    cfg.region = false;
    let mut o = Orchestrator::new(cfg, policy);
    let mut rounds = Vec::with_capacity(iterations);
    for i in 0..iterations {
        let c = candidates.clone();
        let t = Instant::now();
        let out = o.handle(Input::Telemetry {
            now_ms: i as u64 * 100,
            candidates: c,
            regions: RegionView::default(),
        });
        std::hint::black_box(&out);
        rounds.push(t.elapsed().as_secs_f64() * 1e6);
    }
    Ok(Placement {
        neighborhood_routers: n,
        evaluate_us: Summary::of(&times).context("no iteration")?,
        telemetry_round_us: Summary::of(&rounds).context("no iteration")?,
    })
}

/// The fog router's first own sample at or above the threshold after `after_ns`: (sequence,
/// timestamp ns, memory %, whether the sample just before it was seen below).
fn crossing(sc: &Scenario, after_ns: i64, timeout: Duration) -> Result<(u64, i64, f64, bool)> {
    let deadline = Instant::now() + timeout;
    let mut last_below: Option<u64> = None;
    loop {
        if let Some(own) = sc.fog_status()?.own {
            let mem = own.resources.as_ref().map_or(0.0, |r| r.mem_used_pct);
            if mem < MEM_THRESHOLD_PCT {
                last_below = Some(own.sequence);
            } else if own.timestamp_unix_ns > after_ns {
                let seen_before = last_below.is_some_and(|s| s + 1 == own.sequence);
                return Ok((own.sequence, own.timestamp_unix_ns, mem, seen_before));
            }
        }
        if Instant::now() > deadline {
            bail!("fog's memory use never reached {MEM_THRESHOLD_PCT}%");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// What router `i`'s VIP entry must be once `to` serves: the /32 towards `to`'s loopback, or on
/// `to` itself towards its running instance.
fn expected(sc: &Scenario, fibs: &Fibs, i: usize, to: &str) -> Result<Vec<wuos_southbound::routes::NextHop>> {
    let me = fibs.names().nth(i).context("router index")?.to_string();
    let targets: Vec<Ipv4Addr> = if me == to {
        let l = sc
            .rt
            .block_on(async { Ok::<_, anyhow::Error>(sc.node(to).admin().await?.list_domains().await?) })?;
        l.domains
            .iter()
            .filter(|d| d.service == "pabx" && d.state == "running")
            .filter_map(|d| d.address.parse().ok())
            .collect()
    } else {
        let st = LabState::load(&sc.env, &sc.lab)?;
        let k = st.topology.node_index(to).with_context(|| format!("router {to}"))?;
        vec![st.plan.loopbacks[k]]
    };
    let mut hops = Vec::new();
    for t in targets {
        hops.extend(fibs.next_hop(i, t)?);
    }
    Ok(hops)
}

fn matches(entry: Option<FibEntry>, vip: Ipv4Addr, hops: &[wuos_southbound::routes::NextHop]) -> bool {
    entry.is_some_and(|e| hops.iter().any(|h| e.is(vip, 32, *h)))
}

/// One decision-latency run from a settled placement on fog.
fn decision_run(sc: &Scenario, fibs: &Fibs, say: &Say, run: usize) -> Result<DecisionRun> {
    let vip: Ipv4Addr = VIP.parse()?;
    let stop = AtomicBool::new(false);
    let seen = Mutex::new(Seen::default());
    let (before_ns, before_ms) = (unix_ns(), unix_ms());
    std::thread::scope(|s| {
        let watcher = s.spawn(|| fibs.watch(vip, &stop, &seen));
        let r = (|| -> Result<DecisionRun> {
            sc.start_stress()?;
            let (seq, sample_ns, mem, seen_before) = crossing(sc, before_ns, Duration::from_secs(20))?;
            let d = sc
                .await_decision(Duration::from_secs(30), |d| {
                    d.from == "fog" && d.at_unix_ms >= before_ms
                })
                .with_context(|| format!("run {run}: the move away from fog"))?;
            let hops: Vec<_> = (0..fibs.names().count())
                .map(|i| expected(sc, fibs, i, &d.to))
                .collect::<Result<_>>()?;
            // Until every kernel holds the new route (the watcher keeps recording).
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                let all = (0..hops.len()).all(|i| matches(lock(&seen).latest(i), vip, &hops[i]));
                if all {
                    break;
                }
                if Instant::now() > deadline {
                    let s = lock(&seen);
                    let wrong: Vec<String> = fibs
                        .names()
                        .enumerate()
                        .filter(|(i, _)| !matches(s.latest(*i), vip, &hops[*i]))
                        .map(|(i, n)| format!("{n}: {:?}", s.latest(i)))
                        .collect();
                    bail!(
                        "run {run}: not every router routes {VIP} to {} after 10 s: {}",
                        d.to,
                        wrong.join("; ")
                    );
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            // One more poll round, then stop.
            std::thread::sleep(Duration::from_millis(20));
            stop.store(true, Ordering::Relaxed);
            let s = lock(&seen);
            let mut applied = Vec::new();
            for (i, name) in fibs.names().enumerate() {
                let obs: Vec<(i64, bool)> = s.changes[i]
                    .iter()
                    .map(|(t, e)| (*t, matches(*e, vip, &hops[i])))
                    .collect();
                let at = applied_at(&obs).with_context(|| format!("run {run}: {name} lost the route again"))?;
                applied.push((name.to_string(), at));
            }
            let latency = run_latency(sample_ns, d.at_unix_ms, d.switched_unix_ms, &applied)
                .context("no router's route changed after the deciding round")?;
            say.line(&format!(
                "run {run}: {} → {}: sample → routes applied everywhere {:.0} ms (sample → round {:.0} ms, round → applied {:.0} ms)",
                d.from, d.to, latency.total_ms, latency.sample_to_round_ms, latency.round_to_applied_ms
            ));
            Ok(DecisionRun {
                from: d.from.clone(),
                to: d.to.clone(),
                reason: d.reason.clone(),
                crossing_sequence: seq,
                crossing_mem_pct: mem,
                previous_sample_seen: seen_before,
                latency,
                poll_round_ms: s.round(),
            })
        })();
        stop.store(true, Ordering::Relaxed);
        let watched = watcher.join().expect("the FIB watcher panicked");
        let r = r?;
        watched?;
        Ok(r)
    })
}

/// `round_ms`: the FIB poll round's (median, p99, max).
fn clocks(round_ms: Option<(f64, f64, f64)>) -> Vec<Clock> {
    let poll = round_ms.map_or("-".to_string(), |(median, p99, max)| {
        format!("{median:.1} ms median, {p99:.1} ms p99, {max:.1} ms max")
    });
    vec![
        Clock::new(
            "decision latency",
            "the fog router's own telemetry sample whose mem_used_pct first reached 30% (its timestamp_unix_ns)",
            "the last router's kernel holds the VIP /32 towards the new serving router (fib_match polled in every non-host router's namespace; the first poll that saw it for good)",
            "nothing after that poll: calls reaching the new instance are the VoIP demo's",
            &format!("start: the daemon's CLOCK_REALTIME (ns); stop: one FIB poll round ({poll}); quoted to 1 ms"),
        ),
        Clock::new(
            "sample → round",
            "the same sample",
            "the orchestrator round that decided the move (DecisionRecord.at_unix_ms)",
            "-",
            "at_unix_ms is truncated to the ms (the round may be up to 1 ms later than it says); quoted to 1 ms",
        ),
        Clock::new(
            "round → routes applied",
            "that round (at_unix_ms)",
            "the last router's kernel holds the new route (as above)",
            "-",
            "1 ms (at_unix_ms) plus one FIB poll round; quoted to 1 ms",
        ),
        Clock::new(
            "placement",
            "before one evaluation of the VoIP policy (or one orchestrator round)",
            "after it returns",
            "copying the candidates in (for evaluate; the round includes it)",
            "std::time::Instant (ns); quoted to 0.1 µs",
        ),
    ]
}

/// Runs `wuos bench orchestration`.
pub fn run(o: &Options) -> Result<()> {
    let (env, mut machine) = begin(o.runs)?;
    eprintln!("placement over a {NEIGHBORHOOD}-router neighborhood");
    let placement = placement(NEIGHBORHOOD, o.iterations.max(1))?;

    eprintln!("decision latency on the VoIP lab ({} runs)", o.runs);
    let dir = std::env::temp_dir().join(format!("wuos-bench-orchestration-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let say = Say::new(true);
    let calls = Calls {
        rate: 5.0,
        duration: Duration::from_secs(3),
    };
    let result = (|| -> Result<Vec<DecisionRun>> {
        let sc = Scenario::start(&env, LAB, calls, false, &dir, &say)?;
        let st = LabState::load(&env, LAB)?;
        let routers: Vec<(String, String)> = st
            .topology
            .nodes
            .iter()
            .filter(|n| n.role != wuos_model::Role::Host)
            .map(|n| (n.name.clone(), names::node_netns(LAB, &n.name)))
            .collect();
        let fibs = Fibs::open(&env.netns_dir, &routers)?;
        sc.await_decision(Duration::from_secs(90), |d| d.to == "fog")
            .context("the first move to fog")?;
        let mut runs = Vec::new();
        for i in 1..=o.runs {
            // The move to fog drains the old instance for 2 s: start from a settled placement.
            std::thread::sleep(Duration::from_secs(3));
            runs.push(decision_run(&sc, &fibs, &say, i)?);
            sc.stop_stress()?;
            if i < o.runs {
                let back = unix_ms();
                sc.await_decision(Duration::from_secs(60), |d| d.to == "fog" && d.at_unix_ms >= back)
                    .with_context(|| format!("run {i}: the move back to fog"))?;
            }
        }
        Ok(runs)
    })();
    let _ = std::fs::remove_dir_all(&dir);
    let decision_runs = result?;
    machine.finish();
    let of = |f: fn(&RunLatency) -> f64| Runs::of(&decision_runs.iter().map(|r| f(&r.latency)).collect::<Vec<_>>());
    // The FIB poll round over all runs: the median of the runs' medians, the largest p99 and max.
    let polls: Vec<&Summary> = decision_runs.iter().filter_map(|r| r.poll_round_ms.as_ref()).collect();
    let round = crate::stats::median(&polls.iter().map(|s| s.median).collect::<Vec<_>>()).map(|median| {
        let worst = |f: fn(&Summary) -> f64| polls.iter().map(|s| f(s)).fold(f64::NAN, f64::max);
        (median, worst(|s| s.p99), worst(|s| s.max))
    });
    let report = Report {
        machine,
        placement,
        telemetry_interval_ms: TELEMETRY.as_millis() as u64,
        total_ms: of(|l| l.total_ms),
        sample_to_round_ms: of(|l| l.sample_to_round_ms),
        round_to_applied_ms: of(|l| l.round_to_applied_ms),
        decision_runs,
        clocks: clocks(round),
    };
    print(&report);
    write_json(&o.out, &report)
}

fn print(r: &Report) {
    println!("wuos bench orchestration — {}", r.machine);
    let p = &r.placement;
    let us = |v: f64| format!("{} µs", at_resolution(v, 0.1));
    let mut t = Table::new(["", "median", "p99", "target"]);
    t.row([
        format!("placement, {}-router neighborhood (evaluate)", p.neighborhood_routers),
        us(p.evaluate_us.median),
        us(p.evaluate_us.p99),
        "1 ms".into(),
    ]);
    t.row([
        "telemetry round through the orchestrator".to_string(),
        us(p.telemetry_round_us.median),
        us(p.telemetry_round_us.p99),
        String::new(),
    ]);
    print!("{t}");
    let show = |v: &Option<Runs>| v.as_ref().map_or("-".into(), |v| format!("{} ms", v.show(1.0)));
    let mut t = Table::new(["decision latency (medians of runs, min–max)", "ms", "target"]);
    t.row([
        format!(
            "sample ≥ {MEM_THRESHOLD_PCT:.0}% → routes applied in every kernel ({} runs, telemetry every {} ms)",
            r.decision_runs.len(),
            r.telemetry_interval_ms
        ),
        show(&r.total_ms),
        "500 ms".into(),
    ]);
    t.row([
        "  sample → orchestrator round that decided".to_string(),
        show(&r.sample_to_round_ms),
        String::new(),
    ]);
    t.row([
        "  that round → routes applied everywhere".to_string(),
        show(&r.round_to_applied_ms),
        String::new(),
    ]);
    print!("{t}");
    for (i, d) in r.decision_runs.iter().enumerate() {
        let per: Vec<String> = d
            .latency
            .per_router_ms
            .iter()
            .map(|(n, ms)| format!("{n} {}", at_resolution(*ms, 1.0)))
            .collect();
        println!(
            "  run {}: {} → {} (sample #{} at {:.1}% memory{}); route applied (ms after the sample): {}{}",
            i + 1,
            d.from,
            d.to,
            d.crossing_sequence,
            d.crossing_mem_pct,
            if d.previous_sample_seen {
                ""
            } else {
                "; the sample before it was not seen: the start may be late by one interval"
            },
            per.join(", "),
            if d.latency.unchanged.is_empty() {
                String::new()
            } else {
                format!(
                    "; already leading there (same next hop): {}",
                    d.latency.unchanged.join(", ")
                )
            }
        );
    }
    print_clocks(&r.clocks);
}
