//! `wuos demo sdwan` (issue 12): three SD-WAN sites over two underlays, real SIP calls in a VoIP
//! class with an SLA and a bulk transfer in a class of its own, through a timeline of
//! degradations. It prints e1's decisions with their reasons and, per phase, where each class
//! went, the calls completed and failed, their setup time and retransmissions, and the bulk
//! throughput; it plots e1's two paths to e2 (latency and loss) with the moves marked.
//!
//! ```text
//!                 ┌── mpls: mpls1 ─ mpls2 ─ mpls3, 1 ms per link each way ──┐
//!  h1 ── e1 ══════╡   (wo1-mpls: e1 → e2 crosses 3 links: ~7 ms round trip)  ╞══════ e2 ── h2
//!  SIPp caller    └── inet: inet1 ─ inet2 ─ inet3, 4 ms per link each way ──┘       SIPp answerer
//!  iperf3 client      (wo1-inet: ~26 ms round trip)                                 iperf3 server
//!                 e3 ── h3: the third site, probed and steered, without traffic
//!
//!  overlay wan (e1, e2, e3; mpls, inet); every edge probes each path every 100 ms (STAMP)
//!  class voip: UDP 5060, 10000-20000; SLA rtt ≤ 40 ms, loss ≤ 1 %, jitter ≤ 10 ms; mpls, then inet
//!  class bulk: TCP 5201 (both ways); SLA rtt ≤ 200 ms, loss ≤ 25 %; inet, then mpls
//! ```
//!
//! The timeline ([`Step`]): each degradation is injected by retuning the underlay's running relays
//! (no restart); each step then waits for e1's decision about voip towards e2, with a deadline,
//! and the phase lasts at least the phase length and until enough calls completed in it.
//!
//! 1. **baseline**: voip on mpls, bulk on inet.
//! 2. **brownout**: mpls 10 ms per link each way (round trip ≈ 62 ms): voip leaves mpls at once
//!    for inet, which complies; bulk stays on inet.
//! 3. **inet loss**: 10 % of inet's round trips lost (1.74 % per link each way). Nothing
//!    complies: the least bad path is mpls (its round trip is ~1.5 × the limit, inet's loss ≥ 2 ×
//!    as soon as it shows), and voip takes it; the decision says the SLA cannot be met. SIP
//!    retransmits what the loss takes from the calls on inet meanwhile. Bulk's SLA allows the
//!    loss, but when two probes in a row are lost (1 % of probe pairs at this loss) inet counts
//!    as down and every class leaves it for the hold: bulk may step onto mpls and back.
//! 4. **inet restored**: once inet's loss window (100 probes: 10 s) has forgotten the loss, inet
//!    complies again and voip leaves the late mpls for it at once.
//! 5. **mpls restored**: mpls complies again, and voip fails back to it after complying with a
//!    10 % margin for the hold (5 s).
//!
//! The calls use SIPp's own `uac` and `uas` scenarios made tolerant of reordering and loss
//! ([`sipp::write_reorder_tolerant`]). With the built-in ones about one quick run in ten lost a
//! call that no SIP endpoint would have lost: a move from a slow path to a fast one lets a 200 OK
//! overtake the 180 Ringing sent a millisecond before it, which the caller takes for an unexpected
//! message; and an INVITE retransmitted because the 180 and the 200 were both lost is one for
//! the answerer, which answers a retransmission only while it has sent one message since.
//!
//! "Restore both" is two steps because a class leaves a path that breaks its SLA at once, for any
//! path that complies: with both restored together voip, on the late mpls, would find mpls itself
//! complying a few probes later and stay, with no failback to show; restored one at a time, the
//! failback is the damped one.

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use wuos_lab::daemons::DaemonOptions;
use wuos_lab::link::LinkChange;
use wuos_lab::progress::Silent;
use wuos_lab::{LabEnv, down, up};
use wuos_model::daemon::SdwanPathsConfig;
use wuos_model::generate::{Generator, generate};

use crate::node::{Node, runtime};
use crate::report::Clock;
use crate::sdwan_lab::{self, report_of, steering};
use crate::stats::{at_resolution, opt_at_resolution};
use crate::table::Table;
use crate::voip::sipp::{self, Stats};
use crate::voip::{CallFigures, Callers, Say, finish, prepare_out, remove_stale_lab, setup_clock, sipp_argv, unix_ms};

/// The lab `wuos demo sdwan` brings up unless told another name.
pub const LAB: &str = "sdwan-demo";
const PROBE_INTERVAL: Duration = Duration::from_millis(100);
/// How long a path must comply (with the margin) before a class fails back to it.
const HOLD: Duration = Duration::from_secs(5);
/// Each mpls link, each way, except during the brownout.
const MPLS_DELAY: Duration = Duration::from_millis(1);
/// Each mpls link, each way, during the brownout: e1–e2 crosses 3 links, so ≈ 60 ms round trip.
const BROWNOUT_DELAY: Duration = Duration::from_millis(10);
/// Each inet link, each way: longer than mpls, still well under the SLA (≈ 26 ms round trip).
const INET_DELAY: Duration = Duration::from_millis(4);
/// The share of inet's e1–e2 round trips lost in the loss phase.
const INET_LOSS_PCT: f64 = 10.0;
const SIP_PORT: u16 = 5060;
const MEDIA_PORTS: &str = "10000-20000";
const BULK_PORT: u16 = 5201;
/// What iperf3 offers, bit/s: paced, so the relays' queues stay short and the figure is the
/// underlay's doing, not the host's CPU.
const BULK_RATE: &str = "20M";
const CALLS_PER_S: f64 = 5.0;
const CALL_SECONDS: f64 = 3.0;
/// The path report is sampled this often for the plot.
const SAMPLE_EVERY: Duration = Duration::from_millis(250);

/// What `wuos demo sdwan` does.
#[derive(Clone, Debug)]
pub struct Options {
    /// Short phases (about a minute once the lab is up).
    pub quick: bool,
    /// Print the results as JSON (the progress goes to stderr).
    pub json: bool,
    /// Leave the lab up at the end.
    pub keep: bool,
    /// The lab's name ([`LAB`] by default).
    pub lab: String,
    /// Where the plot, the SIPp and iperf3 traces and results.json go.
    pub out: PathBuf,
}

impl Options {
    /// How long a phase lasts at least after its move, and the calls that must complete in it.
    fn phase(&self) -> (Duration, u64) {
        if self.quick {
            (Duration::from_secs(8), 10)
        } else {
            (Duration::from_secs(20), 40)
        }
    }
}

/// The phases of the timeline, each begun by what is injected.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Step {
    Baseline,
    Brownout,
    InetLoss,
    InetRestored,
    MplsRestored,
}

impl Step {
    const ALL: [Step; 5] = [
        Step::Baseline,
        Step::Brownout,
        Step::InetLoss,
        Step::InetRestored,
        Step::MplsRestored,
    ];

    fn title(self) -> &'static str {
        match self {
            Step::Baseline => "1: baseline",
            Step::Brownout => "2: brownout on mpls",
            Step::InetLoss => "3: loss on inet too",
            Step::InetRestored => "4: inet restored",
            Step::MplsRestored => "5: mpls restored",
        }
    }

    /// The underlay changed at the start of the phase, and how.
    fn injection(self) -> Option<(&'static str, LinkChange)> {
        let delay = |d| LinkChange {
            delay: Some(d),
            ..Default::default()
        };
        let loss = |l| LinkChange {
            loss_pct: Some(l),
            ..Default::default()
        };
        match self {
            Step::Baseline => None,
            Step::Brownout => Some(("mpls", delay(BROWNOUT_DELAY))),
            Step::InetLoss => Some((
                "inet",
                loss(sdwan_lab::loss_per_link(INET_LOSS_PCT, sdwan_lab::LINKS_CROSSED)),
            )),
            Step::InetRestored => Some(("inet", loss(0.0))),
            Step::MplsRestored => Some(("mpls", delay(MPLS_DELAY))),
        }
    }

    fn injected(self) -> String {
        match self {
            Step::Baseline => String::new(),
            Step::Brownout => format!(
                "mpls: {} ms per link each way (was {} ms): its round trip goes over 40 ms",
                BROWNOUT_DELAY.as_millis(),
                MPLS_DELAY.as_millis()
            ),
            Step::InetLoss => format!(
                "inet: {:.2} % loss per link each way ({INET_LOSS_PCT} % of its round trips); mpls still late",
                sdwan_lab::loss_per_link(INET_LOSS_PCT, sdwan_lab::LINKS_CROSSED)
            ),
            Step::InetRestored => "inet: no loss".into(),
            Step::MplsRestored => format!("mpls: {} ms per link each way again", MPLS_DELAY.as_millis()),
        }
    }

    /// The decision of e1 about voip towards e2 that begins the phase.
    fn expected(self) -> Option<Expected> {
        let (want, within, what): (fn(&Decision) -> bool, _, _) = match self {
            Step::Baseline => return None,
            Step::Brownout => (
                |d| d.from == ["wan/mpls"] && d.to == ["wan/inet"] && d.met == Some(true),
                Duration::from_secs(10),
                "voip leaves the late mpls for inet",
            ),
            Step::InetLoss => (
                |d| d.met == Some(false) && d.to == ["wan/mpls"],
                Duration::from_secs(30),
                "voip takes the least bad path, mpls, and says its SLA cannot be met",
            ),
            // The loss is forgotten once it has left the window (100 probes: 10 s).
            Step::InetRestored => (
                |d| d.to == ["wan/inet"] && d.met == Some(true),
                Duration::from_secs(40),
                "voip on inet with its SLA met again",
            ),
            Step::MplsRestored => (
                |d| d.to == ["wan/mpls"] && d.met == Some(true),
                HOLD + Duration::from_secs(20),
                "voip fails back to mpls after the hold",
            ),
        };
        Some(Expected { want, within, what })
    }
}

/// A decision a phase waits for: what it must be, the longest it may take, and what it is (for
/// the error if it never comes).
struct Expected {
    want: fn(&Decision) -> bool,
    within: Duration,
    what: &'static str,
}

/// One decision of an edge, as its path report gives it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    pub at_unix_ms: u64,
    pub class: String,
    pub site: String,
    pub from: Vec<String>,
    pub to: Vec<String>,
    pub met: Option<bool>,
    pub reason: String,
}

fn decisions(report: &Value) -> Result<Vec<Decision>> {
    serde_json::from_value(report["decisions"].clone()).context("the path report's decisions")
}

/// One path of e1 towards e2 at one moment, from e1's report.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PathSample {
    pub at_unix_ms: f64,
    /// `OVERLAY/UNDERLAY`.
    pub path: String,
    pub up: bool,
    pub rtt_ms: Option<f64>,
    pub loss_pct: f64,
    pub jitter_ms: f64,
}

fn path_samples(report: &Value, at_unix_ms: f64) -> Vec<PathSample> {
    report["paths"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["site"] == "e2")
        .map(|p| PathSample {
            at_unix_ms,
            path: format!(
                "{}/{}",
                p["overlay"].as_str().unwrap_or("?"),
                p["underlay"].as_str().unwrap_or("?")
            ),
            up: p["up"].as_bool().unwrap_or(false),
            rtt_ms: p["rtt_ms"].as_f64(),
            loss_pct: p["loss_pct"].as_f64().unwrap_or(0.0),
            jitter_ms: p["jitter_ms"].as_f64().unwrap_or(0.0),
        })
        .collect()
}

/// A phase's figures.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PhaseResult {
    pub step: Step,
    pub phase: String,
    /// What was injected when the phase began (empty for the baseline).
    pub injected: String,
    /// Unix seconds: the injection, and the next one (or the end of the calls).
    pub start: f64,
    pub end: f64,
    /// e1's decision about voip towards e2 that the phase waited for, and how long after the
    /// injection it came.
    pub decision: Option<Decision>,
    pub decided_after_ms: Option<f64>,
    /// Where e1 sent each class towards e2 at the end of the phase, and whether voip's SLA was met.
    pub voip_paths: Vec<String>,
    pub voip_met: Option<bool>,
    pub bulk_paths: Vec<String>,
    /// e1's moves of bulk towards e2 in the phase (it leaves inet only when inet is down: two
    /// probes in a row lost, which the loss phase's random loss sometimes does).
    pub bulk_moves: usize,
    #[serde(flatten)]
    pub calls: CallFigures,
    /// iperf3's throughput as received on h2, the mean of its 0.5-s intervals in the phase.
    pub bulk_mbps: Option<f64>,
    /// TCP's retransmissions on h1 (iperf3's sender) in the phase.
    pub bulk_retransmissions: u64,
}

/// The demo's settings, as run.
#[derive(Clone, Debug, Serialize)]
pub struct Settings {
    pub probe_interval_ms: f64,
    pub hold_s: f64,
    pub mpls_link_delay_ms: f64,
    pub brownout_link_delay_ms: f64,
    pub inet_link_delay_ms: f64,
    pub inet_loss_pct_of_round_trips: f64,
    pub inet_loss_pct_per_link: f64,
    pub calls_per_s: f64,
    pub call_seconds: f64,
    pub bulk_offered: String,
    pub classes: Value,
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub lab: String,
    pub quick: bool,
    pub settings: Settings,
    pub phases: Vec<PhaseResult>,
    /// Every decision e1 made since the classes were created, oldest first.
    pub decisions: Vec<Decision>,
    pub calls_completed: u64,
    pub calls_failed: u64,
    pub retransmissions: u64,
    pub answerer_retransmissions: u64,
    /// What SIPp's caller said of the calls that failed (`-trace_err`: its first lines).
    pub sipp_errors: Vec<String>,
    /// The step of SIPp's response times observed in this run.
    pub setup_resolution_ms: f64,
    /// When the first call was placed (Unix ms): the plot's and the printed times' zero.
    pub calls_start_unix_ms: f64,
    pub clocks: Vec<Clock>,
    /// e1's paths to e2, sampled every 250 ms.
    pub samples: Vec<PathSample>,
    pub plot: Option<Plot>,
}

#[derive(Debug, Serialize)]
pub struct Plot {
    pub png: String,
    pub svg: String,
}

/// The overlay and the classes, as NBI actions.
fn classes() -> Value {
    json!([
        {"action": "create_overlay", "name": "wan", "sites": {"e1": {}, "e2": {}, "e3": {}}, "underlays": ["mpls", "inet"]},
        {"action": "create_class", "name": "voip", "overlay": "wan",
         "rules": [{"proto": "udp", "dst_ports": SIP_PORT}, {"proto": "udp", "dst_ports": MEDIA_PORTS}],
         "steering": {"sla": {"max_latency_ms": 40, "max_loss_pct": 1, "max_jitter_ms": 10}, "prefer": ["wan/mpls", "wan/inet"]}},
        {"action": "create_class", "name": "bulk", "overlay": "wan",
         "rules": [{"proto": "tcp", "dst_ports": BULK_PORT}, {"proto": "tcp", "src_ports": BULK_PORT}],
         "steering": {"sla": {"max_latency_ms": 200, "max_loss_pct": 25}, "prefer": ["wan/inet", "wan/mpls"]}}
    ])
}

/// An iperf3 interval line (printed with `-f m`): its throughput and, on the sender's side, its
/// retransmissions (`[  5]   0.00-0.50   sec  1.19 MBytes  20.0 Mbits/sec    3    135 KBytes`);
/// `None` for any other line, the final summaries included.
fn interval(line: &str) -> Option<(f64, Option<u64>)> {
    if line.contains("sender") || line.contains("receiver") || !line.starts_with('[') {
        return None;
    }
    let words: Vec<&str> = line.split_whitespace().collect();
    let i = words.iter().position(|w| *w == "Mbits/sec")?;
    let mbps = words.get(i.checked_sub(1)?)?.parse().ok()?;
    Some((mbps, words.get(i + 1).and_then(|w| w.parse().ok())))
}

/// Everything the demo runs in the lab; stopped on drop (also on error), and the lab taken down
/// unless it is kept.
struct Running {
    env: LabEnv,
    lab: String,
    keep: bool,
    callers: Callers,
    bulk: Vec<Child>,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.callers.kill();
        for c in &mut self.bulk {
            let _ = c.kill();
            let _ = c.wait();
        }
        if !self.keep {
            let _ = down::down(&self.env, &self.lab, &Silent);
        }
    }
}

impl Running {
    fn node<'a>(&'a self, name: &'a str) -> Node<'a> {
        Node::new(&self.env, &self.lab, name)
    }
}

/// iperf3's intervals as they were printed: (arrival, Unix ms; Mbit/s; retransmissions, on the
/// sender's side).
type Intervals = Arc<Mutex<Vec<(f64, f64, Option<u64>)>>>;

/// Runs `wuos demo sdwan`.
pub fn run(o: &Options) -> Result<()> {
    let say = Say::new(o.json);
    let env = LabEnv::system();
    let out = prepare_out(&o.out)?;
    remove_stale_lab(&env, &o.lab, &say)?;
    say.line("bringing up sdwan:3:2: sites e1..e3 (hosts h1..h3) over underlays mpls and inet, a dc");
    let opts = up::UpOptions {
        name: o.lab.clone(),
        workers: up::default_workers(),
        daemons: Some(DaemonOptions {
            domains: false,
            sdwan_paths: SdwanPathsConfig {
                probe_interval: PROBE_INTERVAL,
                hold: HOLD,
                ..Default::default()
            },
            ..Default::default()
        }),
    };
    up::up(&env, generate(&"sdwan:3:2".parse::<Generator>()?, 1), &opts, &Silent)?;
    let mut running = Running {
        env: env.clone(),
        lab: o.lab.clone(),
        keep: o.keep,
        callers: Callers::default(),
        bulk: Vec::new(),
    };
    let rt = runtime()?;
    // e1's decision log lives in its daemon: a restart would start it again.
    let e1 = crate::overlays_e2e::daemon_pid(&o.lab, "e1");
    let report = match rt.block_on(play(&mut running, o, &out, &say)) {
        Ok(r) => r,
        Err(e) => {
            keep_logs(&env, &o.lab, &out);
            let now = crate::overlays_e2e::daemon_pid(&o.lab, "e1");
            if now != e1 {
                return Err(e.context(format!(
                    "e1's wuosd was restarted during the demo (pid {e1:?}, now {now:?}): its decision log began again"
                )));
            }
            return Err(e);
        }
    };
    finish(&report, &out, o.json, o.keep.then_some(o.lab.as_str()), &say, || {
        print(&report, &out)
    })?;
    drop(running);
    Ok(())
}

/// Copies the edges' and the supervisor's logs into `out/logs` before the lab goes (for the
/// post-mortem of a failed run).
fn keep_logs(env: &LabEnv, lab: &str, out: &Path) {
    let (from, to) = (wuos_lab::state::LabState::log_dir(env, lab), out.join("logs"));
    if std::fs::create_dir_all(&to).is_ok() {
        for name in ["e1.log", "e2.log", "e3.log", "supervisor.log"] {
            let _ = std::fs::copy(from.join(name), to.join(name));
        }
        eprintln!("the lab's logs are kept in {}", to.display());
    }
}

/// The demo once the lab is up: the classes, the traffic, the timeline, the figures.
async fn play(r: &mut Running, o: &Options, out: &Path, say: &Say) -> Result<Report> {
    let (env, lab) = (r.env.clone(), r.lab.clone());
    // Relays on both underlays first: later changes only retune them. Splicing them in
    // interrupts the links for a moment: the classes come after.
    for (underlay, delay) in [("mpls", MPLS_DELAY), ("inet", INET_DELAY)] {
        let change = LinkChange {
            delay: Some(delay),
            ..Default::default()
        };
        sdwan_lab::set_underlay(&env, &lab, underlay, &change).await?;
    }
    say.line(&format!(
        "underlays: mpls {} ms per link each way, inet {} ms (e1 to e2 crosses 3 links of each)",
        MPLS_DELAY.as_millis(),
        INET_DELAY.as_millis()
    ));
    let mut nbi = crate::overlays_e2e::nbi(&env, &lab).await?;
    let classes_at = unix_ms();
    sdwan_lab::apply(&mut nbi, classes()).await?;
    say.line("overlay wan (e1, e2, e3 over mpls and inet); class voip (SLA 40 ms, 1 %, 10 ms; mpls first), class bulk (inet first)");
    for (node, site) in [("e1", "e2"), ("e2", "e1")] {
        for (class, path) in [("voip", "wan/mpls"), ("bulk", "wan/inet")] {
            sdwan_lab::wait_steering(&env, &lab, (node, class, site), path, Duration::from_secs(30)).await?;
        }
    }
    say.line("e1 and e2 steer voip on mpls and bulk on inet, both SLAs met");

    // Traffic: SIPp answerer and iperf3 server on h2; caller and client on h1.
    let h1 = sdwan_lab::lan_addr(&env, &lab, "h1")?.to_string();
    let h2 = sdwan_lab::lan_addr(&env, &lab, "h2")?.to_string();
    let port = SIP_PORT.to_string();
    // SIPp's own scenarios, but a message that a move reorders, or a retransmission, does not
    // abort a call.
    let (uac_sf, uas_sf) = sipp::write_reorder_tolerant(out)?;
    let (uac_sf, uas_sf) = (uac_sf.to_string_lossy(), uas_sf.to_string_lossy());
    let uas = sipp_argv(&["-sf", &uas_sf, "-i", &h2, "-p", &port, "-trace_err"], "uas_stat.csv");
    let child = r.node("h2").spawn_logged(&uas, out, &out.join("uas.log"))?;
    r.callers.answerer(child);
    let received = bulk(
        r,
        "h2",
        &["-s", "-1", "-p", &BULK_PORT.to_string()],
        out,
        "iperf3_server.log",
    )?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (rate, hold_ms) = (format!("{CALLS_PER_S}"), format!("{}", (CALL_SECONDS * 1e3) as u64));
    let target = format!("{h2}:{SIP_PORT}");
    // One socket from port 5060 to port 5060, so the answers are in the class too.
    let mut uac = sipp_argv(
        &[
            "-sf",
            &uac_sf,
            &target,
            "-i",
            &h1,
            "-p",
            &port,
            "-r",
            &rate,
            "-d",
            &hold_ms,
            "-trace_rtt",
            "-rtt_freq",
            "1",
            "-trace_err",
        ],
        "stat.csv",
    );
    uac.push("-nostdin".into());
    let t0 = unix_ms() as f64;
    let child = r.node("h1").spawn_logged(&uac, out, &out.join("uac.log"))?;
    r.callers.caller(child);
    let bulk_port = BULK_PORT.to_string();
    let client = ["-c", &h2, "-p", &bulk_port, "-t", "3600", "-b", BULK_RATE];
    let sent = bulk(r, "h1", &client, out, "iperf3_client.log")?;
    say.line(&format!(
        "calls: {CALLS_PER_S} new calls/s of {CALL_SECONDS} s each from h1 to h2 (SIPp, UDP {SIP_PORT}); bulk: iperf3 h1 → h2:{BULK_PORT} at {BULK_RATE}bit/s"
    ));

    let samples: Arc<Mutex<Vec<PathSample>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = tokio::spawn(sample(env.clone(), lab.clone(), samples.clone(), stop.clone()));
    let timeline = timeline(r, o, out, say, t0).await;
    stop.store(true, Ordering::Relaxed);
    let _ = sampler.await;
    let marks = timeline?;

    // The calls end: no new ones, the running ones finish; then the bulk transfer.
    let calls_end = unix_ms() as f64;
    let wait = Duration::from_secs_f64(CALL_SECONDS) + Duration::from_secs(10);
    r.callers.stop(wait);
    for c in &mut r.bulk {
        let _ = c.kill();
        let _ = c.wait();
    }
    let bulk_end = unix_ms() as f64;
    let final_report = report_of(&env, &lab, "e1").await?;
    let all: Vec<Decision> = decisions(&final_report)?
        .into_iter()
        .filter(|d| d.at_unix_ms as f64 >= classes_at as f64)
        .collect();

    let uac = Stats::read(&out.join("stat.csv"));
    let uas = Stats::read(&out.join("uas_stat.csv"));
    let setups = sipp::read_rtt(out, uac.start_ms.unwrap_or(t0));
    let received = received.lock().expect("not poisoned").clone();
    let sent = sent.lock().expect("not poisoned").clone();
    let tail = wait.as_secs_f64() * 1e3;
    let mut phases = Vec::new();
    for (i, m) in marks.iter().enumerate() {
        let end = marks.get(i + 1).map_or(calls_end + tail, |n| n.start_ms);
        let bulk_to = marks.get(i + 1).map_or(bulk_end, |n| n.start_ms);
        let within = |x: &&(f64, f64, Option<u64>)| x.0 >= m.start_ms && x.0 < bulk_to;
        let mbps: Vec<f64> = received.iter().filter(within).map(|x| x.1).collect();
        let retransmits = sent.iter().filter(within).filter_map(|x| x.2).sum();
        phases.push(PhaseResult {
            step: m.step,
            phase: m.step.title().into(),
            injected: m.step.injected(),
            start: m.start_ms / 1e3,
            end: end.min(calls_end) / 1e3,
            decided_after_ms: m.decision.as_ref().map(|d| d.at_unix_ms as f64 - m.start_ms),
            decision: m.decision.clone(),
            voip_paths: m.voip.0.clone(),
            voip_met: m.voip.1,
            bulk_paths: m.bulk.clone(),
            bulk_moves: all
                .iter()
                .filter(|d| d.class == "bulk" && d.site == "e2" && d.from != d.to)
                .filter(|d| (m.start_ms..end).contains(&(d.at_unix_ms as f64)))
                .count(),
            calls: CallFigures::between(m.start_ms, end, &setups, &uac, &uas),
            bulk_mbps: (!mbps.is_empty()).then(|| mbps.iter().sum::<f64>() / mbps.len() as f64),
            bulk_retransmissions: retransmits,
        });
    }
    let samples = samples.lock().expect("not poisoned").clone();
    let plot = draw(out, &samples, &all, &marks, t0);
    if let Err(e) = &plot {
        say.line(&format!("plot: not drawn: {e:#}"));
    }
    let resolution = sipp::observed_step(&setups.iter().map(|s| s.ms).collect::<Vec<_>>()).unwrap_or(1.0);
    let total = uac.last();
    Ok(Report {
        lab: lab.clone(),
        quick: o.quick,
        settings: Settings {
            probe_interval_ms: PROBE_INTERVAL.as_secs_f64() * 1e3,
            hold_s: HOLD.as_secs_f64(),
            mpls_link_delay_ms: MPLS_DELAY.as_secs_f64() * 1e3,
            brownout_link_delay_ms: BROWNOUT_DELAY.as_secs_f64() * 1e3,
            inet_link_delay_ms: INET_DELAY.as_secs_f64() * 1e3,
            inet_loss_pct_of_round_trips: INET_LOSS_PCT,
            inet_loss_pct_per_link: sdwan_lab::loss_per_link(INET_LOSS_PCT, sdwan_lab::LINKS_CROSSED),
            calls_per_s: CALLS_PER_S,
            call_seconds: CALL_SECONDS,
            bulk_offered: format!("{BULK_RATE}bit/s"),
            classes: classes(),
        },
        phases,
        decisions: all,
        calls_completed: total.successful,
        calls_failed: total.failed,
        retransmissions: total.retransmissions,
        answerer_retransmissions: uas.last().retransmissions,
        sipp_errors: sipp_errors(out),
        setup_resolution_ms: resolution,
        calls_start_unix_ms: t0,
        clocks: clocks(resolution),
        samples,
        plot: plot.ok().map(|(png, svg)| Plot { png, svg }),
    })
}

/// The first lines of the error traces SIPp wrote in `out` (`*_errors.log`).
fn sipp_errors(out: &Path) -> Vec<String> {
    let mut lines = Vec::new();
    for e in std::fs::read_dir(out).into_iter().flatten().flatten() {
        if e.file_name().to_string_lossy().ends_with("_errors.log") {
            let text = std::fs::read_to_string(e.path()).unwrap_or_default();
            lines.extend(text.lines().filter(|l| !l.trim().is_empty()).map(str::to_string));
        }
    }
    lines.truncate(60);
    lines
}

/// A phase as it was played: when its injection began (Unix ms), the decision it waited for, and
/// where voip (paths, met) and bulk went towards e2 at its end.
struct Mark {
    step: Step,
    start_ms: f64,
    decision: Option<Decision>,
    voip: (Vec<String>, Option<bool>),
    bulk: Vec<String>,
}

async fn timeline(r: &Running, o: &Options, out: &Path, say: &Say, t0: f64) -> Result<Vec<Mark>> {
    let (env, lab) = (&r.env, r.lab.as_str());
    let (len, min_calls) = o.phase();
    let mut marks = Vec::new();
    for step in Step::ALL {
        let start_ms = if step == Step::Baseline { t0 } else { unix_ms() as f64 };
        if let Some((underlay, change)) = step.injection() {
            sdwan_lab::set_underlay(env, lab, underlay, &change).await?;
        }
        say.line(&format!(
            "{}{}",
            step.title(),
            if step == Step::Baseline {
                String::new()
            } else {
                format!(" — {}", step.injected())
            }
        ));
        let decision = match step.expected() {
            Some(e) => {
                let d = wait_decision(env, lab, start_ms, &e).await?;
                say.line(&format!(
                    "  e1 decided {:.0} ms later: voip to e2 {} → {}{}: {}",
                    d.at_unix_ms as f64 - start_ms,
                    d.from.join(" + "),
                    d.to.join(" + "),
                    met_text(d.met),
                    d.reason
                ));
                Some(d)
            }
            None => None,
        };
        let from = decision.as_ref().map_or(start_ms, |d| d.at_unix_ms as f64);
        hold(out, from, len, min_calls).await?;
        if step == Step::InetRestored {
            // Before mpls comes back, inet's window must have forgotten the loss: at one loss in
            // 99 or 100 probes (1.01 % or 1.0 %) voip's SLA flips between unmet and met, and an
            // unmet one would leave inet for mpls at once, not after the hold.
            inet_clean(env, lab).await?;
        }
        let report = report_of(env, lab, "e1").await?;
        marks.push(Mark {
            step,
            start_ms,
            decision,
            voip: steering(&report, "voip", "e2"),
            bulk: steering(&report, "bulk", "e2").0,
        });
    }
    Ok(marks)
}

fn met_text(met: Option<bool>) -> &'static str {
    match met {
        Some(true) => " (SLA met)",
        Some(false) => " (SLA NOT met)",
        None => "",
    }
}

/// Waits for e1's first decision about voip towards e2 at or after `since_ms` that `want`
/// accepts.
async fn wait_decision(env: &LabEnv, lab: &str, since_ms: f64, e: &Expected) -> Result<Decision> {
    let (want, within, what) = (e.want, e.within, e.what);
    let deadline = Instant::now() + within;
    loop {
        let r = report_of(env, lab, "e1").await?;
        let ds = decisions(&r)?;
        let recent = || {
            ds.iter()
                .filter(|d| d.class == "voip" && d.site == "e2" && d.at_unix_ms as f64 >= since_ms)
        };
        if let Some(d) = recent().find(|d| want(d)) {
            return Ok(d.clone());
        }
        if Instant::now() > deadline {
            let (paths, met) = steering(&r, "voip", "e2");
            let figures: Vec<String> = path_samples(&r, 0.0)
                .iter()
                .map(|p| {
                    format!(
                        "{}: up {}, rtt {:?} ms, loss {:.1} %, jitter {:.1} ms",
                        p.path, p.up, p.rtt_ms, p.loss_pct, p.jitter_ms
                    )
                })
                .collect();
            // The latest few, also from before the injection (a class already moved shows here).
            let mine: Vec<&Decision> = ds.iter().filter(|d| d.class == "voip" && d.site == "e2").collect();
            let seen: Vec<String> = mine[mine.len().saturating_sub(5)..]
                .iter()
                .map(|d| {
                    format!(
                        "{:+.1} s: {} → {} (met {:?}): {}",
                        (d.at_unix_ms as f64 - since_ms) / 1e3,
                        d.from.join("+"),
                        d.to.join("+"),
                        d.met,
                        d.reason
                    )
                })
                .collect();
            bail!(
                "{what}: e1 made no such decision within {within:?}; voip to e2 is on {} (met {met:?}); e1's paths to e2: {}; its latest voip decisions (time from the injection): {seen:#?}",
                paths.join(" + "),
                figures.join("; ")
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until e1's inet path to e2 counts no loss in its window and voip is on it, SLA met.
async fn inet_clean(env: &LabEnv, lab: &str) -> Result<()> {
    let within = Duration::from_secs(30);
    let deadline = Instant::now() + within;
    loop {
        let r = report_of(env, lab, "e1").await?;
        let inet = path_samples(&r, 0.0).into_iter().find(|p| p.path == "wan/inet");
        let clean = inet.as_ref().is_some_and(|p| p.up && p.loss_pct == 0.0);
        if clean && steering(&r, "voip", "e2") == (vec!["wan/inet".to_string()], Some(true)) {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "e1's inet path to e2 did not come clean with voip on it within {within:?}: {inet:?}, voip on {:?}",
                steering(&r, "voip", "e2")
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until `len` has passed since `from_ms` and at least `min_calls` calls completed since
/// (SIPp's caller writes its statistics every second).
async fn hold(out: &Path, from_ms: f64, len: Duration, min_calls: u64) -> Result<()> {
    let give_up = from_ms + (len + Duration::from_secs(60)).as_secs_f64() * 1e3;
    loop {
        let now = unix_ms() as f64;
        let done = Stats::read(&out.join("stat.csv")).between(from_ms, now);
        if now - from_ms >= len.as_secs_f64() * 1e3 && done.successful >= min_calls {
            return Ok(());
        }
        if now > give_up {
            bail!(
                "only {} calls completed ({} failed) in the {:.0} s since the phase began, {min_calls} expected: see {}",
                done.successful,
                done.failed,
                (now - from_ms) / 1e3,
                out.join("uac.log").display()
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// e1's paths to e2 every [`SAMPLE_EVERY`] until `stop`.
async fn sample(env: LabEnv, lab: String, into: Arc<Mutex<Vec<PathSample>>>, stop: Arc<AtomicBool>) {
    while !stop.load(Ordering::Relaxed) {
        if let Ok(r) = report_of(&env, &lab, "e1").await {
            let at = unix_ms() as f64;
            into.lock().expect("not poisoned").extend(path_samples(&r, at));
        }
        tokio::time::sleep(SAMPLE_EVERY).await;
    }
}

/// iperf3 with `args` on `host`, its 0.5-s intervals read as they are printed (and logged to
/// `log` in `out`).
fn bulk(r: &mut Running, host: &str, args: &[&str], out: &Path, log: &str) -> Result<Intervals> {
    let argv: Vec<&str> = std::iter::once("iperf3")
        .chain(args.iter().copied())
        .chain(["-i", "0.5", "-f", "m", "--forceflush"])
        .collect();
    let mut child = r.node(host).spawn_piped(&argv)?;
    let stdout = child.stdout.take().context("iperf3's output")?;
    r.bulk.push(child);
    let intervals: Intervals = Arc::default();
    let (into, log) = (intervals.clone(), out.join(log));
    std::thread::spawn(move || {
        let mut log = std::fs::File::create(log).ok();
        for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(l) = log.as_mut() {
                let _ = std::io::Write::write_all(l, format!("{line}\n").as_bytes());
            }
            if let Some((mbps, retransmits)) = interval(&line) {
                into.lock()
                    .expect("not poisoned")
                    .push((unix_ms() as f64, mbps, retransmits));
            }
        }
    });
    Ok(intervals)
}

/// The plot: e1's two paths to e2, latency and loss, the injections and voip's moves to e2.
fn draw(
    out: &Path,
    samples: &[PathSample],
    decisions: &[Decision],
    marks: &[Mark],
    t0: f64,
) -> Result<(String, String)> {
    let s = |ms: f64| (ms - t0) / 1e3;
    let paths = ["wan/mpls", "wan/inet"]
        .into_iter()
        .map(|name| {
            let mine = || samples.iter().filter(move |x| x.path == name);
            crate::plot::PathSeries {
                name: name.to_string(),
                rtt_ms: mine()
                    .filter_map(|x| Some((s(x.at_unix_ms), x.rtt_ms.filter(|_| x.up)?)))
                    .collect(),
                loss_pct: mine().map(|x| (s(x.at_unix_ms), x.loss_pct)).collect(),
            }
        })
        .collect();
    let short = |step: Step| match step {
        Step::Baseline => String::new(),
        Step::Brownout => format!("mpls {} ms/link", BROWNOUT_DELAY.as_millis()),
        Step::InetLoss => format!("inet {INET_LOSS_PCT} % loss"),
        Step::InetRestored => "inet restored".into(),
        Step::MplsRestored => "mpls restored".into(),
    };
    let injected = marks
        .iter()
        .filter(|m| m.step != Step::Baseline)
        .map(|m| (s(m.start_ms), short(m.step)))
        .collect();
    let moves: Vec<(f64, &Decision)> = decisions
        .iter()
        .filter(|d| d.class == "voip" && d.site == "e2" && d.at_unix_ms as f64 >= t0 && d.from != d.to)
        .map(|d| (s(d.at_unix_ms as f64), d))
        .collect();
    let moves = label_moves(&moves);
    crate::plot::paths(
        &out.join("sdwan"),
        &crate::plot::Paths {
            title: "wuos demo sdwan: e1's paths to e2 (STAMP probes every 100 ms), voip's moves",
            x_desc: "time since the first call (s)",
            paths,
            latency_limit_ms: 40.0,
            loss_limit_pct: 1.0,
            injected,
            moves,
        },
    )
}

/// Moves closer than this to the first of a run of them share one label.
const MOVES_APART_S: f64 = 2.0;

/// The plot's marks for voip's moves (seconds, decision): every move a line, a run of moves within
/// [`MOVES_APART_S`] labelled once, at its last, with how many there were.
fn label_moves(moves: &[(f64, &Decision)]) -> Vec<(f64, String)> {
    let mut out: Vec<(f64, String)> = Vec::new();
    let mut first = 0;
    for (i, (t, d)) in moves.iter().enumerate() {
        if *t - moves[first].0 > MOVES_APART_S {
            first = i;
        }
        let last_of_run = moves
            .get(i + 1)
            .is_none_or(|(next, _)| next - moves[first].0 > MOVES_APART_S);
        let label = if last_of_run {
            let met = if d.met == Some(false) { ", SLA not met" } else { "" };
            let n = i + 1 - first;
            let run = if n > 1 {
                format!(" ({n} moves in {:.1} s{met})", t - moves[first].0)
            } else if met.is_empty() {
                String::new()
            } else {
                " (SLA not met)".into()
            };
            format!("voip → {}{run}", d.to.join(" + "))
        } else {
            String::new()
        };
        out.push((*t, label));
    }
    out
}

fn clocks(resolution: f64) -> Vec<Clock> {
    vec![
        setup_clock(resolution),
        Clock::new(
            "decided after",
            "before the underlay's relays are retuned (`wuos lab underlay set`)",
            "the time e1's daemon stamped on its decision (same host clock)",
            "nothing between: the retuning (a few ms), the probes showing it, the decision",
            "ms (the decision's stamp); the probes go every 100 ms, so a decision may come up to one probe interval later than the figures allow",
        ),
        Clock::new(
            "bulk Mbit/s",
            "the first of iperf3's 0.5-s intervals printed by the server on h2 in the phase",
            "the last one",
            "intervals that straddle the phase's edges are counted in the phase they end in",
            "iperf3's own intervals (0.5 s), placed by the time their line is read",
        ),
    ]
}

fn print(r: &Report, out: &Path) {
    let t = |ms: f64| format!("{:+7.1} s", (ms - r.calls_start_unix_ms) / 1e3);
    println!("\ndecisions of e1 (time since the first call):");
    for d in &r.decisions {
        println!(
            "  {} {} to {}: {} → {}{}: {}",
            t(d.at_unix_ms as f64),
            d.class,
            d.site,
            if d.from.is_empty() {
                "none".into()
            } else {
                d.from.join(" + ")
            },
            d.to.join(" + "),
            met_text(d.met),
            d.reason
        );
    }
    let q = |v: Option<f64>| opt_at_resolution(v, r.setup_resolution_ms);
    let mut table = Table::new([
        "phase",
        "voip to e2",
        "decided after ms",
        "calls in flight at start",
        "completed",
        "failed",
        "retransmissions (caller/answerer)",
        "setup p50 ms",
        "p99 ms",
        "bulk to e2 (moves)",
        "bulk Mbit/s",
        "TCP retransmissions",
    ]);
    for p in &r.phases {
        table.row([
            p.phase.clone(),
            format!(
                "{}{}",
                p.voip_paths.join(" + "),
                match p.voip_met {
                    Some(false) => " (SLA not met)",
                    _ => "",
                }
            ),
            p.decided_after_ms.map_or("-".into(), |v| at_resolution(v, 1.0)),
            p.calls.calls_in_flight_at_start.to_string(),
            p.calls.calls_completed.to_string(),
            p.calls.calls_failed.to_string(),
            format!("{}/{}", p.calls.retransmissions, p.calls.answerer_retransmissions),
            q(p.calls.setup_median_ms),
            q(p.calls.setup_p99_ms),
            format!("{} ({})", p.bulk_paths.join(" + "), p.bulk_moves),
            p.bulk_mbps.map_or("-".into(), |v| at_resolution(v, 0.1)),
            p.bulk_retransmissions.to_string(),
        ]);
    }
    println!("\n{table}");
    for p in r.phases.iter().filter(|p| !p.injected.is_empty()) {
        println!("  {}: {}", p.phase, p.injected);
    }
    println!(
        "calls ({} s each, {} new/s): {} completed, {} failed; retransmissions {} (caller) / {} (answerer); setup times in steps of {} ms",
        r.settings.call_seconds,
        r.settings.calls_per_s,
        r.calls_completed,
        r.calls_failed,
        r.retransmissions,
        r.answerer_retransmissions,
        r.setup_resolution_ms
    );
    if !r.sipp_errors.is_empty() {
        println!("SIPp's error trace:");
        for l in &r.sipp_errors {
            println!("  {l}");
        }
    }
    match &r.plot {
        Some(p) => println!("plot: {} and {}", p.png, p.svg),
        None => println!("plot: not drawn"),
    }
    println!("results: {}", out.join("results.json").display());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iperf3_intervals_are_read_and_summaries_skipped() {
        assert_eq!(
            interval("[  5]   0.00-0.50   sec  1.19 MBytes  20.0 Mbits/sec"),
            Some((20.0, None))
        );
        assert_eq!(
            interval("[  5]  20.00-20.50  sec  1.19 MBytes  19.9 Mbits/sec   98    135 KBytes       "),
            Some((19.9, Some(98)))
        );
        assert_eq!(
            interval("[  5]   0.00-12.03  sec  28.6 MBytes  19.9 Mbits/sec                  receiver"),
            None
        );
        assert_eq!(interval("Server listening on 5201 (test #1)"), None);
        assert_eq!(interval("[ ID] Interval           Transfer     Bitrate"), None);
    }

    #[test]
    fn the_timeline_degrades_then_restores_each_underlay() {
        let changes: Vec<(&str, LinkChange)> = Step::ALL.iter().filter_map(|s| s.injection()).collect();
        assert_eq!(
            changes.iter().map(|c| c.0).collect::<Vec<_>>(),
            ["mpls", "inet", "inet", "mpls"]
        );
        assert_eq!(changes[0].1.delay, Some(BROWNOUT_DELAY));
        assert_eq!(changes[3].1.delay, Some(MPLS_DELAY));
        assert!(changes[1].1.loss_pct.unwrap() > 1.0 && changes[2].1.loss_pct == Some(0.0));
        // mpls over the SLA's 40 ms in the brownout, inet under it: the round trip crosses 3 links
        // each way.
        assert!(BROWNOUT_DELAY.as_secs_f64() * 6e3 > 50.0);
        assert!(INET_DELAY.as_secs_f64() * 6e3 < 30.0);
        assert!(Step::ALL.iter().skip(1).all(|s| s.expected().is_some()));
    }

    #[test]
    fn a_run_of_moves_is_labelled_once() {
        let d = |to: &str, met| Decision {
            at_unix_ms: 0,
            class: "voip".into(),
            site: "e2".into(),
            from: vec![],
            to: vec![to.into()],
            met: Some(met),
            reason: String::new(),
        };
        let (a, b, c) = (d("wan/inet", true), d("wan/mpls", false), d("wan/inet", false));
        let marks = label_moves(&[(8.0, &a), (20.0, &b), (20.4, &c), (21.0, &b), (40.0, &a)]);
        let labels: Vec<&str> = marks.iter().map(|m| m.1.as_str()).collect();
        assert_eq!(
            labels,
            [
                "voip → wan/inet",
                "",
                "",
                "voip → wan/mpls (3 moves in 1.0 s, SLA not met)",
                "voip → wan/inet"
            ]
        );
    }

    #[test]
    fn e1s_paths_to_e2_are_sampled_from_its_report() {
        let r = json!({"paths": [
            {"overlay": "wan", "underlay": "mpls", "site": "e2", "up": true, "rtt_ms": 7.2, "loss_pct": 0.0, "jitter_ms": 0.4},
            {"overlay": "wan", "underlay": "inet", "site": "e2", "up": false, "loss_pct": 3.0, "jitter_ms": 1.0},
            {"overlay": "wan", "underlay": "mpls", "site": "e3", "up": true, "rtt_ms": 7.0, "loss_pct": 0.0, "jitter_ms": 0.1}
        ], "decisions": [
            {"at_unix_ms": 5, "class": "voip", "site": "e2", "from": ["wan/mpls"], "to": ["wan/inet"], "met": true, "reason": "r"}
        ]});
        let s = path_samples(&r, 1.0);
        assert_eq!(s.len(), 2, "{s:?}");
        assert_eq!((s[0].path.as_str(), s[0].rtt_ms), ("wan/mpls", Some(7.2)));
        assert_eq!((s[1].up, s[1].rtt_ms, s[1].loss_pct), (false, None, 3.0));
        let d = decisions(&r).unwrap();
        assert_eq!(d[0].to, ["wan/inet"]);
        let want = |s: Step| s.expected().unwrap().want;
        assert!(want(Step::Brownout)(&d[0]));
        assert!(!want(Step::InetLoss)(&d[0]), "its SLA is met");
        let least_bad = Decision {
            from: vec!["wan/inet".into()],
            to: vec!["wan/mpls".into()],
            met: Some(false),
            ..d[0].clone()
        };
        assert!(want(Step::InetLoss)(&least_bad));
    }
}
