//! `wuos demo voip`: the VoIP scenario of the router-OS paper, end to end on a lab.
//!
//! ```text
//!  actor1 (SIPp caller) ── edge1 ── fog ── edge2 ── actor2 (SIPp answerer)
//!                                    │ 30 ms each way
//!                                    dc (PABX = Kamailio at first)
//! ```
//!
//! 1. Calls run through the PABX's VIP (10.255.0.10) to the data centre.
//! 2. The fog router's orchestrator sees the demand (XDP flow counts in the adverts) and that it
//!    satisfies the policy (`examples/voip.policy`): it starts a PABX on the fog router, waits for
//!    it to be healthy, switches every router's VIP route, drains and keeps the dc's.
//! 3. A `stress` VNF pushes the fog router's memory use above 30%: the PABX moves away (to a
//!    router within two hops that satisfies the policy, else back to the data centre).
//!
//! Calls never stop. The output: the decisions with their reasons; per phase, call-setup time
//! (INVITE → 200 OK, SIPp's response time) median and p99, calls completed and failed; a plot of
//! setup time over time with the decisions marked (PNG and SVG); `--json` for scripts.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Args;
use serde_json::json;
use wuos_lab::daemons::{DaemonOptions, socket_path};
use wuos_lab::progress::Silent;
use wuos_lab::{LabEnv, down, up};
use wuos_proto::pb;

use crate::bench::pct;

const TOPOLOGY: &str = include_str!("../../../examples/voip.toml");
const POLICY: &str = include_str!("../../../examples/voip.policy");
const LAB: &str = "voip";
const VIP: &str = "10.255.0.10";

#[derive(Args)]
pub struct VoipArgs {
    /// A short run (about a minute) for tests.
    #[arg(long)]
    quick: bool,
    /// Print the results as JSON (the progress goes to stderr).
    #[arg(long)]
    json: bool,
    /// Leave the lab up at the end.
    #[arg(long)]
    keep: bool,
    /// New calls per second.
    #[arg(long, default_value_t = 5.0)]
    rate: f64,
    /// Where the plot, the SIPp traces and results.json go.
    #[arg(long, default_value = "voip-results")]
    out: PathBuf,
}

/// Everything the demo started, stopped on drop (also on error).
pub(crate) struct Run {
    env: LabEnv,
    keep: bool,
    children: Vec<Child>,
}

impl Drop for Run {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        if !self.keep {
            let _ = down::down(&self.env, LAB, &Silent);
        }
    }
}

pub(crate) struct Say {
    json: bool,
    t0: Instant,
}

impl Say {
    pub(crate) fn new(json: bool) -> Self {
        Self {
            json,
            t0: Instant::now(),
        }
    }

    pub(crate) fn line(&self, s: &str) {
        let t = self.t0.elapsed().as_secs_f64();
        if self.json {
            eprintln!("[{t:6.1}s] {s}");
        } else {
            println!("[{t:6.1}s] {s}");
        }
    }
}

pub(crate) fn unix_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// A command inside a lab node (`wuos lab exec`, which joins its namespace and cgroup and then
/// becomes the command, so the child's pid is the command's).
fn spawn_in(node: &str, argv: &[String], cwd: &Path, log: &Path) -> Result<Child> {
    let out = std::fs::File::create(log).with_context(|| format!("cannot create {}", log.display()))?;
    Command::new(std::env::current_exe()?)
        .args(["lab", "exec", LAB, node, "--"])
        .args(argv)
        .current_dir(cwd)
        .stdin(Stdio::null())
        .stdout(Stdio::from(out.try_clone()?))
        .stderr(Stdio::from(out))
        .spawn()
        .with_context(|| format!("cannot start {} on {node}", argv[0]))
}

pub(crate) async fn admin(node: &str) -> Result<wuos_proto::admin::AdminClient> {
    Ok(wuos_proto::admin::AdminClient::connect(socket_path(&LabEnv::system(), LAB, node)).await?)
}

/// The decision log of the orchestrator behind admin socket `sock`.
async fn fetch_decisions(sock: &Path) -> Result<pb::DecisionList> {
    Ok(wuos_proto::admin::AdminClient::connect(sock).await?.decisions().await?)
}

/// Waits until the orchestrator logs a move that `pick` accepts; returns it.
pub(crate) fn await_decision(
    rt: &tokio::runtime::Runtime,
    timeout: Duration,
    pick: impl Fn(&pb::DecisionRecord) -> bool,
) -> Result<pb::DecisionRecord> {
    let sock = socket_path(&LabEnv::system(), LAB, "fog");
    let deadline = Instant::now() + timeout;
    loop {
        let l = rt.block_on(fetch_decisions(&sock))?;
        if let Some(d) = l.decisions.iter().find(|d| pick(d)) {
            // Wait for the switch too (the new instance healthy, the routes moved).
            if d.switched_unix_ms > 0 {
                return Ok(d.clone());
            }
        }
        if Instant::now() > deadline {
            bail!(
                "no such decision of the orchestrator within {timeout:?}; decisions so far: {:?}",
                l.decisions
                    .iter()
                    .map(|d| format!("{} {} → {}: {}", d.kind, d.from, d.to, d.reason))
                    .collect::<Vec<_>>()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// One call's setup time: when SIPp recorded it (its 200 OK, Unix ms) and INVITE → 200 OK (ms).
struct Setup {
    at_ms: f64,
    ms: f64,
}

/// SIPp's `-trace_rtt` file: `Date_ms;response_time_ms;rtd_no`, dates relative to its start.
fn read_rtt(dir: &Path, start_unix_ms: f64) -> Vec<Setup> {
    let Some(file) = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.to_string_lossy().ends_with("_rtt.csv"))
    else {
        return Vec::new();
    };
    std::fs::read_to_string(file)
        .unwrap_or_default()
        .lines()
        .skip(1)
        .filter_map(|l| {
            let mut f = l.split(';');
            let at: f64 = f.next()?.trim().parse().ok()?;
            let ms: f64 = f.next()?.trim().parse().ok()?;
            Some(Setup {
                at_ms: start_unix_ms + at,
                ms,
            })
        })
        .collect()
}

/// SIPp's `-trace_stat` file: (Unix ms, successful calls so far, failed calls so far) per row,
/// and its start time.
fn read_stat(path: &Path) -> (Option<f64>, Vec<(f64, u64, u64)>) {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut lines = text.lines();
    let Some(header) = lines.next() else {
        return (None, Vec::new());
    };
    let cols: Vec<&str> = header.split(';').collect();
    let col = |name: &str| cols.iter().position(|c| *c == name);
    let (Some(start), Some(now), Some(ok), Some(failed)) = (
        col("StartTime"),
        col("CurrentTime"),
        col("SuccessfulCall(C)"),
        col("FailedCall(C)"),
    ) else {
        return (None, Vec::new());
    };
    // Times look like "2026-11-21\t16:43:55.119533\t1795279435.119533": the last field is Unix.
    let unix = |s: &str| s.rsplit('\t').next()?.trim().parse::<f64>().ok().map(|t| t * 1000.0);
    let mut first = None;
    let rows = lines
        .filter_map(|l| {
            let f: Vec<&str> = l.split(';').collect();
            first = first.or_else(|| unix(f.get(start)?));
            Some((
                unix(f.get(now)?)?,
                f.get(ok)?.trim().parse().ok()?,
                f.get(failed)?.trim().parse().ok()?,
            ))
        })
        .collect();
    (first, rows)
}

/// The cumulative (ok, failed) counts at `t` (the last row at or before it).
fn counts_at(rows: &[(f64, u64, u64)], t: f64) -> (u64, u64) {
    rows.iter()
        .take_while(|r| r.0 <= t)
        .last()
        .map_or((0, 0), |r| (r.1, r.2))
}

struct Phase {
    name: &'static str,
    pabx_at: String,
    start: f64,
    end: f64,
}

/// The scenario up to calls running: the lab, the PABX in the dc, the policy on fog, the SIPp
/// answerer and caller (shared with `wuos bench orchestration`).
/// Starts the `stress` VNF on the fog router: 200 MiB held for 10 minutes, which takes the fog
/// router (512 MiB) over the policy's 30% memory use.
pub(crate) fn start_stress(rt: &tokio::runtime::Runtime) -> Result<()> {
    rt.block_on(async {
        admin("fog")
            .await?
            .start_service(
                "stress",
                "stress",
                [("memory", "200MiB"), ("cpus", "0"), ("duration", "600s")]
                    .into_iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            )
            .await
            .context("cannot start the stress VNF")
    })?;
    Ok(())
}

pub(crate) struct Started {
    pub run: Run,
    pub rt: tokio::runtime::Runtime,
    pub uac_pid: i32,
    pub calls_start: f64,
}

pub(crate) fn start(env: &LabEnv, rate: f64, keep: bool, out: &Path, say: &Say) -> Result<Started> {
    // 1. The lab, with the PABX's static user (actor2) known to every router's PABX instances.
    let topo = wuos_model::file::parse(TOPOLOGY, "examples/voip.toml")?;
    let plan = wuos_model::plan::address_plan(&topo)?;
    let addr = |node: &str| -> Result<String> {
        let i = topo.node_index(node).context("node of the voip topology")?;
        Ok(plan.loopbacks[i].to_string())
    };
    let (actor1, actor2) = (addr("actor1")?, addr("actor2")?);
    if wuos_lab::state::LabState::exists(env, LAB) {
        say.line("removing the voip lab left from an earlier run");
        down::down(env, LAB, &Silent)?;
    }
    say.line("bringing up the lab: actor1 — edge1 — fog — edge2 — actor2, fog — dc (30 ms each way)");
    let mut params = BTreeMap::new();
    params.insert(
        "pabx".to_string(),
        BTreeMap::from([("static_users".to_string(), format!("2000={actor2}:5060"))]),
    );
    up::up(
        env,
        topo,
        &up::UpOptions {
            name: LAB.into(),
            workers: up::default_workers(),
            daemons: Some(DaemonOptions {
                telemetry_interval: Duration::from_millis(200),
                xdp: true,
                service_params: params,
                ..Default::default()
            }),
        },
        &Silent,
    )?;
    let mut run = Run {
        env: env.clone(),
        keep,
        children: Vec::new(),
    };
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;

    // 2. The PABX in the data centre, and the policy on the fog router.
    let d = rt.block_on(async {
        admin("dc")
            .await?
            .start_service("pabx", "pabx", BTreeMap::new())
            .await
            .context("cannot start the PABX in the dc")
    })?;
    say.line(&format!(
        "PABX (Kamailio) running in the dc at {} (VIP {VIP})",
        d.address
    ));
    rt.block_on(async {
        admin("fog")
            .await?
            .apply_policy(POLICY, "examples/voip.policy")
            .await
            .context("policy refused")
    })?;
    say.line("policy applied on fog: PABX local while mem.used_pct < 30, else within 2 hops, else dc");

    // 3. Callers: SIPp answerer on actor2, caller on actor1 (a socket per call: each call a flow).
    let uas: Vec<String> = ["sipp", "-sn", "uas", "-i", &actor2, "-p", "5060", "-nostdin"]
        .map(String::from)
        .to_vec();
    run.children.push(spawn_in("actor2", &uas, out, &out.join("uas.log"))?);
    std::thread::sleep(Duration::from_millis(500));
    let uac: Vec<String> = vec![
        "sipp".into(),
        "-sn".into(),
        "uac".into(),
        format!("{VIP}:5060"),
        "-s".into(),
        "2000".into(),
        "-i".into(),
        actor1.clone(),
        "-p".into(),
        "5061".into(),
        "-t".into(),
        "un".into(),
        "-max_socket".into(),
        "5000".into(),
        "-r".into(),
        format!("{}", rate),
        "-trace_rtt".into(),
        "-rtt_freq".into(),
        "1".into(),
        "-trace_stat".into(),
        "-stf".into(),
        "stat.csv".into(),
        "-fd".into(),
        "1".into(),
        "-nostdin".into(),
    ];
    let calls_start = unix_ms() as f64;
    let uac_child = spawn_in("actor1", &uac, out, &out.join("uac.log"))?;
    let uac_pid = uac_child.id() as i32;
    run.children.push(uac_child);
    say.line(&format!(
        "calls: {} new calls/s from actor1 to user 2000 on actor2 via {VIP}",
        rate
    ));
    Ok(Started {
        run,
        rt,
        uac_pid,
        calls_start,
    })
}

pub fn run(a: VoipArgs) -> Result<()> {
    if !(a.rate > 0.0 && a.rate <= 200.0) {
        return Err(crate::topo::BadInput(format!("--rate {}: use 0 < rate ≤ 200 calls/s", a.rate)).into());
    }
    let say = Say {
        json: a.json,
        t0: Instant::now(),
    };
    let env = LabEnv::system();
    let phase_len = Duration::from_secs(if a.quick { 6 } else { 20 });
    std::fs::create_dir_all(&a.out).with_context(|| format!("cannot create {}", a.out.display()))?;
    let out = a.out.canonicalize()?;
    for e in std::fs::read_dir(&out)?.flatten() {
        let n = e.file_name().to_string_lossy().into_owned();
        if n.ends_with(".csv") || n.ends_with(".log") {
            let _ = std::fs::remove_file(e.path());
        }
    }

    let Started {
        mut run,
        rt,
        uac_pid,
        calls_start,
    } = start(&env, a.rate, a.keep, &out, &say)?;

    // Phase 1 ends when the orchestrator has moved the PABX to the fog router.
    let first = await_decision(&rt, Duration::from_secs(90), |d| d.to == "fog")?;
    say.line(&format!(
        "decision: {} {} → {}: {}",
        first.kind, first.from, first.to, first.reason
    ));
    std::thread::sleep(phase_len);

    // Phase 3: memory pressure on the fog router.
    start_stress(&rt)?;
    say.line("stress VNF on fog: 200 MiB held (the fog router has 512 MiB)");
    let second = await_decision(&rt, Duration::from_secs(60), |d| d.from == "fog")?;
    say.line(&format!(
        "decision: {} {} → {}: {}",
        second.kind, second.from, second.to, second.reason
    ));
    std::thread::sleep(phase_len);

    // Stop calling (SIGUSR1: SIPp stops new calls and lets the running ones finish).
    let calls_end = unix_ms() as f64;
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(uac_pid), nix::sys::signal::Signal::SIGUSR1);
    let deadline = Instant::now() + Duration::from_secs(10);
    let uac_running = |run: &mut Run| {
        run.children
            .iter_mut()
            .find(|c| c.id() as i32 == uac_pid)
            .is_some_and(|c| c.try_wait().ok().flatten().is_none())
    };
    while Instant::now() < deadline && uac_running(&mut run) {
        std::thread::sleep(Duration::from_millis(100));
    }
    let decisions = rt.block_on(fetch_decisions(&socket_path(&env, LAB, "fog")))?;
    for c in &mut run.children {
        let _ = c.kill();
        let _ = c.wait();
    }
    run.children.clear();

    // Results.
    let (stat_start, rows) = read_stat(&out.join("stat.csv"));
    let setups = read_rtt(&out, stat_start.unwrap_or(calls_start));
    let b1 = first.switched_unix_ms as f64;
    let b2 = second.switched_unix_ms as f64;
    let phases = [
        Phase {
            name: "1: PABX in the data centre",
            pabx_at: "dc".into(),
            start: calls_start,
            end: b1,
        },
        Phase {
            name: "2: PABX on the fog router",
            pabx_at: "fog".into(),
            start: b1,
            end: b2,
        },
        Phase {
            name: "3: fog under memory pressure",
            pabx_at: second.to.clone(),
            start: b2,
            end: calls_end + 10_000.0,
        },
    ];
    let mut phase_json = Vec::new();
    for p in &phases {
        let mut ms: Vec<f64> = setups
            .iter()
            .filter(|s| s.at_ms >= p.start && s.at_ms < p.end)
            .map(|s| s.ms)
            .collect();
        let (ok0, failed0) = counts_at(&rows, p.start);
        let (ok1, failed1) = counts_at(&rows, p.end);
        let measured = ms.len();
        phase_json.push(json!({
            "phase": p.name,
            "pabx_at": p.pabx_at,
            "start": p.start / 1000.0,
            "end": p.end.min(calls_end) / 1000.0,
            "calls_completed": ok1.saturating_sub(ok0),
            "calls_failed": failed1.saturating_sub(failed0),
            "calls_measured": measured,
            "setup_median_ms": (measured > 0).then(|| pct(&mut ms, 0.5)),
            "setup_p99_ms": (measured > 0).then(|| pct(&mut ms, 0.99)),
        }));
    }
    let total = rows.last().map_or((0, 0), |r| (r.1, r.2));
    let decisions_json: Vec<serde_json::Value> = decisions
        .decisions
        .iter()
        .map(|d| serde_json::to_value(d).expect("decisions serialize"))
        .collect();
    let plot = crate::demo_plot::plot(
        &out,
        &setups
            .iter()
            .map(|s| ((s.at_ms - calls_start) / 1000.0, s.ms))
            .collect::<Vec<_>>(),
        &decisions
            .decisions
            .iter()
            .map(|d| {
                let t = if d.switched_unix_ms > 0 {
                    d.switched_unix_ms
                } else {
                    d.at_unix_ms
                };
                ((t as f64 - calls_start) / 1000.0, format!("→ {}", d.to))
            })
            .collect::<Vec<_>>(),
    );
    let result = json!({
        "phases": phase_json,
        "decisions": decisions_json,
        "calls_completed": total.0,
        "calls_failed": total.1,
        "rate": a.rate,
        "plot": plot.as_ref().ok().map(|(png, svg)| json!({"png": png, "svg": svg})),
    });
    std::fs::write(out.join("results.json"), serde_json::to_string_pretty(&result)?)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&result)?);
    } else {
        println!("\ndecisions (fog's orchestrator):");
        for d in &decisions.decisions {
            println!("  {} {} → {} [{}]: {}", d.kind, d.from, d.to, d.rule, d.reason);
        }
        println!(
            "\n{:<32} {:>8} {:>10} {:>7} {:>12} {:>10}",
            "phase", "PABX at", "completed", "failed", "setup p50 ms", "p99 ms"
        );
        for p in &phase_json {
            let f = |k: &str| p[k].as_f64().map_or("-".to_string(), |v| format!("{v:.1}"));
            println!(
                "{:<32} {:>8} {:>10} {:>7} {:>12} {:>10}",
                p["phase"].as_str().unwrap_or(""),
                p["pabx_at"].as_str().unwrap_or(""),
                p["calls_completed"].as_u64().unwrap_or(0),
                p["calls_failed"].as_u64().unwrap_or(0),
                f("setup_median_ms"),
                f("setup_p99_ms")
            );
        }
        println!("calls: {} completed, {} failed", total.0, total.1);
        match &plot {
            Ok((png, svg)) => println!("plot: {png} and {svg}"),
            Err(e) => println!("plot: not drawn: {e:#}"),
        }
        println!("results: {}", out.join("results.json").display());
    }
    if a.keep {
        say.line("the lab stays up (--keep): wuos lab down voip removes it");
    }
    drop(run);
    Ok(())
}
