//! The VoIP scenario of the router-OS paper, shared by `wuos demo voip` ([`run`]) and
//! `wuos bench orchestration` ([`Scenario`]).
//!
//! ```text
//!  actor1 (SIPp caller) ── edge1 ── fog ── edge2 ── actor2 (SIPp answerer)
//!                                    │ 30 ms each way
//!                                    dc (PABX = Kamailio at first)
//! ```
//!
//! 1. Calls run through the PABX's VIP (10.255.0.10) to the data centre; each call lasts a few
//!    seconds (SIPp `-d`), so calls are in flight across every move.
//! 2. The fog router's orchestrator sees the demand (XDP flow counts in the adverts) and that it
//!    satisfies the policy (`examples/voip.policy`): it starts a PABX on the fog router, waits for
//!    it to be healthy, switches every router's VIP route, drains and keeps the dc's.
//! 3. A `stress` VNF pushes the fog router's memory use above 30%: the PABX moves away (to a
//!    router within two hops that satisfies the policy, else back to the data centre).
//!
//! The demo prints the decisions with their reasons; per phase, call-setup time (INVITE → 200 OK,
//! SIPp's response time) median and p99, calls completed and failed, and SIPp's retransmissions
//! (caller and answerer); a plot of setup time over time with the decisions marked (PNG and SVG);
//! `--json` for scripts.

pub mod sipp;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde::Serialize;
use wuos_lab::daemons::DaemonOptions;
use wuos_lab::progress::Silent;
use wuos_lab::{LabEnv, down, up};
use wuos_proto::pb;

use crate::node::{Node, runtime};
use crate::report::Clock;
use crate::stats::{opt_at_resolution, percentile};
use crate::table::Table;
use sipp::{Setup, StatRow, Stats};

pub const TOPOLOGY: &str = include_str!("../../../examples/voip.toml");
pub const POLICY: &str = include_str!("../../../examples/voip.policy");
/// The lab `wuos demo voip` brings up (the VoIP end-to-end test looks at it by this name).
pub const LAB: &str = "voip";
pub const VIP: &str = "10.255.0.10";
/// The fog router's memory use (%) above which `examples/voip.policy` moves the PABX away.
pub const MEM_THRESHOLD_PCT: f64 = 30.0;
/// The lab's telemetry interval.
pub const TELEMETRY: Duration = Duration::from_millis(200);

/// Progress lines with the time since the start; to stderr when stdout carries JSON.
pub struct Say {
    json: bool,
    t0: Instant,
}

impl Say {
    pub fn new(json: bool) -> Self {
        Self {
            json,
            t0: Instant::now(),
        }
    }

    pub fn line(&self, s: &str) {
        let t = self.t0.elapsed().as_secs_f64();
        if self.json {
            eprintln!("[{t:6.1}s] {s}");
        } else {
            println!("[{t:6.1}s] {s}");
        }
    }
}

/// A demo's output directory, made if missing, without the traces (`.csv`, `.log`) of an earlier
/// run; its canonical path.
pub(crate) fn prepare_out(out: &Path) -> Result<PathBuf> {
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    let out = out.canonicalize()?;
    for e in std::fs::read_dir(&out)?.flatten() {
        let n = e.file_name().to_string_lossy().into_owned();
        if n.ends_with(".csv") || n.ends_with(".log") {
            let _ = std::fs::remove_file(e.path());
        }
    }
    Ok(out)
}

/// Takes down lab `lab` if an earlier run left it.
pub(crate) fn remove_stale_lab(env: &LabEnv, lab: &str, say: &Say) -> Result<()> {
    if wuos_lab::state::LabState::exists(env, lab) {
        say.line(&format!("removing the {lab} lab left from an earlier run"));
        down::down(env, lab, &Silent)?;
    }
    Ok(())
}

/// A demo's end: `report` into `out/results.json`, then printed as JSON (`json`) or by `print`;
/// with `keep`, how to remove the lab that stays up.
pub(crate) fn finish<R: Serialize>(
    report: &R,
    out: &Path,
    json: bool,
    keep: Option<&str>,
    say: &Say,
    print: impl FnOnce(),
) -> Result<()> {
    let text = serde_json::to_string_pretty(report)?;
    std::fs::write(out.join("results.json"), &text)?;
    if json {
        println!("{text}");
    } else {
        print();
    }
    if let Some(lab) = keep {
        say.line(&format!("the lab stays up (--keep): wuos lab down {lab} removes it"));
    }
    Ok(())
}

/// Wall clock, ms since the Unix epoch.
pub fn unix_ms() -> i64 {
    unix_ns() / 1_000_000
}

/// Wall clock, ns since the Unix epoch (the clock the daemons stamp their samples with).
pub fn unix_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64)
}

/// The calls placed: new calls per second and how long each lasts.
#[derive(Clone, Copy, Debug)]
pub struct Calls {
    pub rate: f64,
    pub duration: Duration,
}

/// The scenario up to calls running — the lab, the PABX in the dc, the policy on fog, SIPp's
/// answerer and caller. Everything it started is stopped on drop (also on error), and the lab is
/// taken down unless it is kept.
pub struct Scenario {
    pub env: LabEnv,
    /// The lab's name.
    pub lab: String,
    pub rt: tokio::runtime::Runtime,
    keep: bool,
    callers: Callers,
    /// When the caller started (Unix ms).
    pub calls_start_ms: f64,
}

impl Drop for Scenario {
    fn drop(&mut self) {
        self.callers.kill();
        if !self.keep {
            let _ = down::down(&self.env, &self.lab, &Silent);
        }
    }
}

impl Scenario {
    /// Brings the scenario up as lab `lab`; SIPp's files go to `dir`.
    pub fn start(env: &LabEnv, lab: &str, calls: Calls, keep: bool, dir: &Path, say: &Say) -> Result<Self> {
        // 1. The lab, with the PABX's static user (actor2) known to every router's PABX instances.
        let topo = wuos_model::file::parse(TOPOLOGY, "examples/voip.toml")?;
        let plan = wuos_model::plan::address_plan(&topo)?;
        let addr = |node: &str| -> Result<String> {
            let i = topo.node_index(node).context("node of the voip topology")?;
            Ok(plan.loopbacks[i].to_string())
        };
        let (actor1, actor2) = (addr("actor1")?, addr("actor2")?);
        remove_stale_lab(env, lab, say)?;
        say.line("bringing up the lab: actor1 — edge1 — fog — edge2 — actor2, fog — dc (30 ms each way)");
        let params = BTreeMap::from([(
            "pabx".to_string(),
            BTreeMap::from([("static_users".to_string(), format!("2000={actor2}:5060"))]),
        )]);
        let opts = up::UpOptions {
            name: lab.into(),
            workers: up::default_workers(),
            daemons: Some(DaemonOptions {
                telemetry_interval: TELEMETRY,
                xdp: true,
                service_params: params,
                ..Default::default()
            }),
        };
        up::up(env, topo, &opts, &Silent)?;
        let mut s = Scenario {
            env: env.clone(),
            lab: lab.into(),
            rt: runtime()?,
            keep,
            callers: Callers::default(),
            calls_start_ms: 0.0,
        };

        // 2. The PABX in the data centre, and the policy on the fog router.
        let d = s.rt.block_on(async {
            s.node("dc")
                .admin()
                .await?
                .start_service("pabx", "pabx", BTreeMap::new())
                .await
                .context("cannot start the PABX in the dc")
        })?;
        say.line(&format!(
            "PABX (Kamailio) running in the dc at {} (VIP {VIP})",
            d.address
        ));
        s.rt.block_on(async {
            s.node("fog")
                .admin()
                .await?
                .apply_policy(POLICY, "examples/voip.policy")
                .await
                .context("policy refused")
        })?;
        say.line("policy applied on fog: PABX local while mem.used_pct < 30, else within 2 hops, else dc");

        // 3. Callers: SIPp answerer on actor2, caller on actor1 (a socket per call: each call a
        //    flow), both writing their statistics every second.
        let uas = sipp_argv(&["-sn", "uas", "-i", &actor2, "-p", "5060"], "uas_stat.csv");
        let child = s.node("actor2").spawn_logged(&uas, dir, &dir.join("uas.log"))?;
        s.callers.answerer(child);
        std::thread::sleep(Duration::from_millis(500));
        let rate = format!("{}", calls.rate);
        let duration = format!("{}", calls.duration.as_millis());
        let target = format!("{VIP}:5060");
        let mut uac = sipp_argv(
            &[
                "-sn",
                "uac",
                &target,
                "-s",
                "2000",
                "-i",
                &actor1,
                "-p",
                "5061",
                "-t",
                "un",
                "-max_socket",
                "5000",
                "-r",
                &rate,
                "-d",
                &duration,
                "-trace_rtt",
                "-rtt_freq",
                "1",
                // Unexpected messages and timeouts, for the post-mortem of a failed call.
                "-trace_err",
            ],
            "stat.csv",
        );
        uac.push("-nostdin".into());
        s.calls_start_ms = unix_ms() as f64;
        let child = s.node("actor1").spawn_logged(&uac, dir, &dir.join("uac.log"))?;
        s.callers.caller(child);
        say.line(&format!(
            "calls: {rate} new calls/s of {} s each from actor1 to user 2000 on actor2 via {VIP}",
            calls.duration.as_secs_f64()
        ));
        Ok(s)
    }

    pub fn node<'a>(&'a self, name: &'a str) -> Node<'a> {
        Node::new(&self.env, &self.lab, name)
    }

    /// The fog orchestrator's decision log.
    pub fn decisions(&self) -> Result<pb::DecisionList> {
        self.rt
            .block_on(async { Ok(self.node("fog").admin().await?.decisions().await?) })
    }

    /// The fog router's status (its own advert, view, neighbors, counters).
    pub fn fog_status(&self) -> Result<pb::StatusReply> {
        self.rt
            .block_on(async { Ok(self.node("fog").admin().await?.status().await?) })
    }

    /// Waits until the orchestrator logs a move that `pick` accepts and has switched the routes
    /// to it (the new instance healthy); returns it.
    pub fn await_decision(
        &self,
        timeout: Duration,
        pick: impl Fn(&pb::DecisionRecord) -> bool,
    ) -> Result<pb::DecisionRecord> {
        let deadline = Instant::now() + timeout;
        loop {
            let l = self.decisions()?;
            if let Some(d) = l.decisions.iter().find(|d| pick(d) && d.switched_unix_ms > 0) {
                return Ok(d.clone());
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

    /// Starts the `stress` VNF on the fog router: 200 MiB held for 10 minutes, which takes the
    /// fog router (640 MiB) over the policy's 30% memory use.
    pub fn start_stress(&self) -> Result<()> {
        let params = [("memory", "200MiB"), ("cpus", "0"), ("duration", "600s")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        self.rt.block_on(async {
            self.node("fog")
                .admin()
                .await?
                .start_service("stress", "stress", params)
                .await
                .context("cannot start the stress VNF")
        })?;
        Ok(())
    }

    /// Removes the `stress` VNF from the fog router.
    pub fn stop_stress(&self) -> Result<()> {
        self.rt.block_on(async {
            self.node("fog")
                .admin()
                .await?
                .domain(wuos_proto::admin::DomainVerb::Destroy, "stress")
                .await
                .context("cannot remove the stress VNF")
        })?;
        Ok(())
    }

    /// Stops calling and every SIPp ([`Callers::stop`]).
    pub fn stop_calls(&mut self, wait: Duration) {
        self.callers.stop(wait);
    }
}

/// The SIPp processes of a scenario — answerers and one caller — killed on drop.
#[derive(Debug, Default)]
pub struct Callers {
    children: Vec<Child>,
    caller: Option<u32>,
}

impl Callers {
    pub fn answerer(&mut self, child: Child) {
        self.children.push(child);
    }

    pub fn caller(&mut self, child: Child) {
        self.caller = Some(child.id());
        self.children.push(child);
    }

    /// Stops calling (SIGUSR1: SIPp places no new calls and lets the running ones finish), waits
    /// up to `wait` for the caller to exit, then stops every SIPp.
    pub fn stop(&mut self, wait: Duration) {
        if let Some(pid) = self.caller {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGUSR1,
            );
            let deadline = Instant::now() + wait;
            while Instant::now() < deadline
                && self
                    .children
                    .iter_mut()
                    .find(|c| c.id() == pid)
                    .is_some_and(|c| c.try_wait().ok().flatten().is_none())
            {
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        self.kill();
    }

    /// Kills every SIPp at once.
    pub fn kill(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        self.children.clear();
        self.caller = None;
    }
}

impl Drop for Callers {
    fn drop(&mut self) {
        self.kill();
    }
}

/// SIPp with `args`, writing its statistics every second to `stat_file`.
pub(crate) fn sipp_argv(args: &[&str], stat_file: &str) -> Vec<String> {
    std::iter::once("sipp")
        .chain(args.iter().copied())
        .chain(["-trace_stat", "-stf", stat_file, "-fd", "1", "-nostdin"])
        .map(String::from)
        .collect()
}

/// What `wuos demo voip` does.
#[derive(Clone, Debug)]
pub struct Options {
    /// A short run (about a minute) for tests.
    pub quick: bool,
    /// Print the results as JSON (the progress goes to stderr).
    pub json: bool,
    /// Leave the lab up at the end.
    pub keep: bool,
    /// The lab's name ([`LAB`] by default).
    pub lab: String,
    pub calls: Calls,
    /// Where the plot, the SIPp traces and results.json go.
    pub out: PathBuf,
}

/// A phase of the demo: where the PABX is, from when to when (Unix ms).
#[derive(Clone, Debug)]
pub struct Phase {
    pub name: String,
    pub pabx_at: String,
    pub start_ms: f64,
    pub end_ms: f64,
}

/// What SIPp saw of the calls in an interval of time.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CallFigures {
    /// Calls that ended (BYE answered) in the interval, and calls that failed in it.
    pub calls_completed: u64,
    pub calls_failed: u64,
    /// Calls in flight when the interval began (a move that began it happened under them).
    pub calls_in_flight_at_start: u64,
    /// SIPp's retransmissions in the interval: the caller's and the answerer's.
    pub retransmissions: u64,
    pub answerer_retransmissions: u64,
    /// Calls whose 200 OK arrived in the interval, and their setup times.
    pub calls_measured: usize,
    pub setup_median_ms: Option<f64>,
    pub setup_p99_ms: Option<f64>,
}

impl CallFigures {
    /// The figures from `start_ms` to `end_ms` (Unix ms) from the caller's (`uac`) and
    /// answerer's (`uas`) statistics and the setups (placed by their 200 OK's time).
    pub fn between(start_ms: f64, end_ms: f64, setups: &[Setup], uac: &Stats, uas: &Stats) -> Self {
        let ms: Vec<f64> = setups
            .iter()
            .filter(|s| s.at_ms >= start_ms && s.at_ms < end_ms)
            .map(|s| s.ms)
            .collect();
        let c: StatRow = uac.between(start_ms, end_ms);
        Self {
            calls_completed: c.successful,
            calls_failed: c.failed,
            calls_in_flight_at_start: c.current,
            retransmissions: c.retransmissions,
            answerer_retransmissions: uas.between(start_ms, end_ms).retransmissions,
            calls_measured: ms.len(),
            setup_median_ms: percentile(&ms, 0.5),
            setup_p99_ms: percentile(&ms, 0.99),
        }
    }
}

/// A phase's figures.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PhaseResult {
    pub phase: String,
    pub pabx_at: String,
    /// Unix seconds.
    pub start: f64,
    pub end: f64,
    #[serde(flatten)]
    pub calls: CallFigures,
}

impl PhaseResult {
    /// The figures of `p` ([`CallFigures::between`] its start and end).
    pub fn compute(p: &Phase, setups: &[Setup], uac: &Stats, uas: &Stats, calls_end_ms: f64) -> Self {
        Self {
            phase: p.name.clone(),
            pabx_at: p.pabx_at.clone(),
            start: p.start_ms / 1000.0,
            end: p.end_ms.min(calls_end_ms) / 1000.0,
            calls: CallFigures::between(p.start_ms, p.end_ms, setups, uac, uas),
        }
    }
}

#[derive(Serialize)]
struct DemoReport {
    phases: Vec<PhaseResult>,
    decisions: Vec<pb::DecisionRecord>,
    calls_completed: u64,
    calls_failed: u64,
    retransmissions: u64,
    answerer_retransmissions: u64,
    rate: f64,
    call_seconds: f64,
    /// The step of SIPp's response times observed in this run (its clock's tick).
    setup_resolution_ms: f64,
    clock: Clock,
    plot: Option<BTreeMap<&'static str, String>>,
}

pub(crate) fn setup_clock(resolution_ms: f64) -> Clock {
    Clock::new(
        "call setup",
        "SIPp's caller sends the INVITE (its response-time timer 1 starts)",
        "it receives the 200 OK",
        "the call's duration (-d) and its teardown; calls are placed in a phase by their 200 OK's time",
        &format!("SIPp's own clock: response times came in steps of {resolution_ms} ms in this run"),
    )
}

/// Runs `wuos demo voip`.
pub fn run(o: &Options) -> Result<()> {
    let say = Say::new(o.json);
    let env = LabEnv::system();
    let phase_len = Duration::from_secs(if o.quick { 6 } else { 20 });
    let out = prepare_out(&o.out)?;
    let mut sc = Scenario::start(&env, &o.lab, o.calls, o.keep, &out, &say)?;

    // Phase 1 ends when the orchestrator has moved the PABX to the fog router.
    let first = sc.await_decision(Duration::from_secs(90), |d| d.to == "fog")?;
    say.line(&format!(
        "decision: {} {} → {}: {}",
        first.kind, first.from, first.to, first.reason
    ));
    std::thread::sleep(phase_len);

    // Phase 3: memory pressure on the fog router.
    sc.start_stress()?;
    say.line("stress VNF on fog: 200 MiB held (the fog router has 640 MiB)");
    let second = sc.await_decision(Duration::from_secs(60), |d| d.from == "fog")?;
    say.line(&format!(
        "decision: {} {} → {}: {}",
        second.kind, second.from, second.to, second.reason
    ));
    std::thread::sleep(phase_len);

    let calls_end = unix_ms() as f64;
    sc.stop_calls(o.calls.duration + Duration::from_secs(10));
    let decisions = sc.decisions()?;

    let uac = Stats::read(&out.join("stat.csv"));
    let uas = Stats::read(&out.join("uas_stat.csv"));
    let setups = sipp::read_rtt(&out, uac.start_ms.unwrap_or(sc.calls_start_ms));
    let (b1, b2) = (first.switched_unix_ms as f64, second.switched_unix_ms as f64);
    let tail = (o.calls.duration + Duration::from_secs(10)).as_secs_f64() * 1e3;
    let phases = [
        ("1: PABX in the data centre", "dc".to_string(), sc.calls_start_ms, b1),
        ("2: PABX on the fog router", "fog".to_string(), b1, b2),
        ("3: fog under memory pressure", second.to.clone(), b2, calls_end + tail),
    ]
    .map(|(name, pabx_at, start_ms, end_ms)| Phase {
        name: name.into(),
        pabx_at,
        start_ms,
        end_ms,
    });
    let phases: Vec<PhaseResult> = phases
        .iter()
        .map(|p| PhaseResult::compute(p, &setups, &uac, &uas, calls_end))
        .collect();
    let resolution = sipp::observed_step(&setups.iter().map(|s| s.ms).collect::<Vec<_>>()).unwrap_or(1.0);
    let plot = crate::plot::plot(
        &out,
        &setups
            .iter()
            .map(|s| ((s.at_ms - sc.calls_start_ms) / 1000.0, s.ms))
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
                ((t as f64 - sc.calls_start_ms) / 1000.0, format!("→ {}", d.to))
            })
            .collect::<Vec<_>>(),
    );
    let total = uac.last();
    let report = DemoReport {
        phases,
        decisions: decisions.decisions.clone(),
        calls_completed: total.successful,
        calls_failed: total.failed,
        retransmissions: total.retransmissions,
        answerer_retransmissions: uas.last().retransmissions,
        rate: o.calls.rate,
        call_seconds: o.calls.duration.as_secs_f64(),
        setup_resolution_ms: resolution,
        clock: setup_clock(resolution),
        plot: plot
            .as_ref()
            .ok()
            .map(|(png, svg)| BTreeMap::from([("png", png.clone()), ("svg", svg.clone())])),
    };
    finish(&report, &out, o.json, o.keep.then_some(o.lab.as_str()), &say, || {
        print(&report, &out);
        if let Err(e) = &plot {
            println!("plot: not drawn: {e:#}");
        }
    })?;
    drop(sc);
    Ok(())
}

fn print(r: &DemoReport, out: &Path) {
    println!("\ndecisions (fog's orchestrator):");
    for d in &r.decisions {
        println!("  {} {} → {} [{}]: {}", d.kind, d.from, d.to, d.rule, d.reason);
    }
    let q = |v: Option<f64>| opt_at_resolution(v, r.setup_resolution_ms);
    let mut t = Table::new([
        "phase",
        "PABX at",
        "in flight at start",
        "completed",
        "failed",
        "retransmissions (caller/answerer)",
        "setup p50 ms",
        "p99 ms",
    ]);
    for p in &r.phases {
        t.row([
            p.phase.clone(),
            p.pabx_at.clone(),
            p.calls.calls_in_flight_at_start.to_string(),
            p.calls.calls_completed.to_string(),
            p.calls.calls_failed.to_string(),
            format!("{}/{}", p.calls.retransmissions, p.calls.answerer_retransmissions),
            q(p.calls.setup_median_ms),
            q(p.calls.setup_p99_ms),
        ]);
    }
    println!("\n{t}");
    println!(
        "calls ({} s each, {} new/s): {} completed, {} failed; retransmissions {} (caller) / {} (answerer); setup times in steps of {} ms",
        r.call_seconds,
        r.rate,
        r.calls_completed,
        r.calls_failed,
        r.retransmissions,
        r.answerer_retransmissions,
        r.setup_resolution_ms
    );
    if let Some(p) = &r.plot {
        println!("plot: {} and {}", p["png"], p["svg"]);
    }
    println!("results: {}", out.join("results.json").display());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_threshold_is_the_policys() {
        let needle = format!("mem.used_pct < {MEM_THRESHOLD_PCT:.0}");
        assert!(POLICY.contains(&needle), "examples/voip.policy moves on {needle}");
    }

    #[test]
    fn sipp_is_told_to_write_statistics_every_second() {
        let a = sipp_argv(&["-sn", "uas"], "uas_stat.csv");
        assert_eq!(a[..3], ["sipp", "-sn", "uas"].map(String::from));
        assert!(a.windows(2).any(|w| w == ["-stf", "uas_stat.csv"]));
        assert!(a.windows(2).any(|w| w == ["-fd", "1"]));
    }

    #[test]
    fn a_phase_counts_its_own_calls_and_retransmissions() {
        let row = |s: f64, ok, failed, retrans, current| StatRow {
            at_ms: s * 1000.0,
            successful: ok,
            failed,
            retransmissions: retrans,
            current,
        };
        let uac = Stats {
            start_ms: Some(0.0),
            rows: vec![
                row(1.0, 0, 0, 0, 5),
                row(2.0, 4, 0, 1, 15),
                row(3.0, 9, 1, 3, 14),
                row(4.0, 15, 1, 3, 15),
            ],
        };
        let uas = Stats {
            start_ms: Some(0.0),
            rows: vec![row(1.0, 0, 0, 0, 0), row(3.0, 0, 0, 2, 0)],
        };
        let setups = [
            Setup {
                at_ms: 1500.0,
                ms: 124.0,
            },
            Setup { at_ms: 2500.0, ms: 4.0 },
            Setup { at_ms: 2600.0, ms: 8.0 },
            Setup { at_ms: 3900.0, ms: 0.0 },
        ];
        let p = Phase {
            name: "2".into(),
            pabx_at: "fog".into(),
            start_ms: 2000.0,
            end_ms: 3500.0,
        };
        let r = PhaseResult::compute(&p, &setups, &uac, &uas, 3200.0);
        let c = &r.calls;
        assert_eq!((c.calls_completed, c.calls_failed, c.retransmissions), (5, 1, 2));
        assert_eq!((c.calls_in_flight_at_start, c.answerer_retransmissions), (15, 2));
        assert_eq!(
            (c.calls_measured, c.setup_median_ms, c.setup_p99_ms),
            (2, Some(8.0), Some(8.0))
        );
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(
            json["calls_completed"], 5,
            "the call figures sit beside the phase's: {json}"
        );
        assert_eq!((r.start, r.end), (2.0, 3.2), "the end is clipped to when calls stopped");
    }
}
