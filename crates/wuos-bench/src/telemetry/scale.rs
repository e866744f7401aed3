//! The protocol at scale: a large lab (`random:500`, `random:1000` at 1 Hz, `grid:10x10` at
//! 10 Hz) with daemons as a user gets them, measured in two windows:
//!
//! 1. **quiet** (after a settling time, default 30 s): nothing polls the daemons; every wuosd's CPU time (`/proc/PID/stat`) before and
//!    after, and its RSS;
//! 2. **watched** (default 2 minutes): every second, every daemon's status without its view
//!    (concurrently, over its admin socket, one connection per daemon kept open): how many of its
//!    neighbors are up (the adjacencies-up fraction); and the views of a tenth of the daemons in
//!    turn ([`VIEW_SHARE`]: each daemon's view every 10 s), for the latency of each new 2-hop
//!    advert in them (sample time at the origin to storing there: the wait for the next frame of
//!    the router in between included); the `neighbor_down` counters and protocol bytes at the
//!    window's start and end. The views are most of a status reply: reading 1,000 of them a
//!    second (the daemons encode them, the bench decodes them) is load the bench itself puts on
//!    the host, and the 2-hop tail measured it (docs/benchmarks.md, "Then forwarding
//!    deadlines").

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use futures::StreamExt;
use serde::Serialize;
use wuos_lab::daemons::DaemonOptions;
use wuos_lab::daemons::socket_path;
use wuos_lab::progress::Silent;
use wuos_lab::{LabEnv, down};
use wuos_model::generate::Generator;

use crate::stats::{Summary, percentile};

/// One measured configuration.
#[derive(Clone, Debug, Serialize)]
pub struct Scale {
    pub topology: String,
    pub interval_ms: u64,
    pub transport: String,
    pub daemons: usize,
    /// Configured adjacencies (links between routers).
    pub adjacencies: usize,
    /// `lab up`, from the call to its return (daemons started, not yet converged).
    pub up_s: f64,
    /// Seconds between the warm-up and the quiet window (start-up transients: the first adverts,
    /// PSI averages coming down after `lab up`).
    pub settle_s: u64,
    pub quiet_s: u64,
    /// All daemons together, % of one core, over the quiet window.
    pub cpu_pct_total: f64,
    pub cpu_pct_median: f64,
    pub cpu_pct_max: f64,
    pub cpu_resolution_pct: f64,
    /// The whole host's busy time over the quiet window, % of one core (all CPUs; kernel
    /// threads, interrupts and softirq included, e.g. the links' packets: the daemons' figure
    /// counts only what ran in their own context).
    pub host_busy_pct: f64,
    /// How long the bench waited, before `lab up`, for the host to be quiet (busy under 10 % of
    /// a core for a second; at most 180 s): the previous lab's teardown goes on in the kernel.
    pub waited_quiet_s: f64,
    pub rss_mb_median: f64,
    pub rss_mb_max: f64,
    pub rss_mb_total: f64,
    pub watched_s: u64,
    /// Protocol bytes (sent + received, as the daemons count them) per second, all daemons.
    pub bytes_per_s_total: f64,
    pub bytes_per_s_median: f64,
    /// Each second's fraction of adjacency ends up (a neighbor "up" at a router).
    pub adjacencies_up: Summary,
    /// Growth of the daemons' `neighbor_down` counters over the watched window.
    pub neighbor_loss_events: u64,
    /// Daemons whose status did not answer at some poll.
    pub unanswered_polls: u64,
    /// 2-hop adverts: sample time at the origin to storing at the router 2 hops away.
    pub propagation_2hop_ms: Option<Summary>,
    /// Each second the views of one daemon in this many were read (in turn).
    pub view_share: usize,
    pub propagation_target_ms: f64,
}

/// Each second the views of one daemon in this many are polled (the daemons in turn).
pub const VIEW_SHARE: usize = 10;

/// What one poll of every daemon gave.
struct Poll {
    up_ends: usize,
    unanswered: u64,
}

/// One admin connection per daemon, kept open from poll to poll (a new connection each second —
/// accept, HTTP/2 handshake — cost every daemon more than the status itself) and made again after
/// a failure.
struct Pollers {
    socks: Vec<PathBuf>,
    clients: Vec<Option<wuos_proto::admin::AdminClient>>,
}

impl Pollers {
    fn new(socks: Vec<PathBuf>) -> Self {
        let clients = socks.iter().map(|_| None).collect();
        Self { socks, clients }
    }
}

/// Every daemon's status; with its view for those `with_view` says.
async fn status_all(p: &mut Pollers, with_view: impl Fn(usize) -> bool) -> Vec<Option<wuos_proto::pb::StatusReply>> {
    futures::stream::iter(p.clients.iter_mut().zip(&p.socks).enumerate())
        .map(|(i, (client, sock))| {
            let view = with_view(i);
            async move {
                if client.is_none() {
                    *client = wuos_proto::admin::AdminClient::connect(sock.as_path()).await.ok();
                }
                let c = client.as_mut()?;
                let reply = if view {
                    c.status().await.ok()
                } else {
                    c.status_without_view().await.ok()
                };
                if reply.is_none() {
                    *client = None;
                }
                reply
            }
        })
        .buffered(32)
        .collect()
        .await
}

fn counter(st: &wuos_proto::pb::StatusReply, name: &str) -> u64 {
    st.counters.iter().find(|c| c.name == name).map_or(0, |c| c.value)
}

/// Measures a running lab `name` of topology `topology` (the generator's spec).
#[allow(clippy::too_many_arguments)]
pub fn measure(
    env: &LabEnv,
    name: &str,
    topology: &str,
    transport: &str,
    interval: Duration,
    up_s: f64,
    settle_s: u64,
    quiet_s: u64,
    watched_s: u64,
) -> Result<Scale> {
    let g: Generator = topology.parse().map_err(|e| anyhow::anyhow!("{e}"))?;
    let t = wuos_model::generate::generate(&g, super::SEED);
    let socks: Vec<PathBuf> = t.nodes.iter().map(|n| socket_path(env, name, &n.name)).collect();
    let mut pollers = Pollers::new(socks);
    let adjacencies = t.links.len();
    let rt = crate::node::runtime()?;

    // Warm-up: every adjacency up, or 60 s.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let up: usize = rt
            .block_on(status_all(&mut pollers, |_| false))
            .iter()
            .flatten()
            .map(|s| s.neighbors.iter().filter(|n| n.state == "up").count())
            .sum();
        if up >= 2 * adjacencies || Instant::now() > deadline {
            eprintln!("  warm-up: {up} of {} adjacency ends up", 2 * adjacencies);
            break;
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    std::thread::sleep(interval * 3);
    if settle_s > 0 {
        eprintln!("  settling {settle_s} s");
        std::thread::sleep(Duration::from_secs(settle_s));
    }

    // Quiet window: CPU and RSS only.
    let pids = super::wuosd_pids(&env.proc_root, name);
    if pids.is_empty() {
        bail!("no wuosd processes found for lab {name}");
    }
    let usage = |p: &i32| Some((*p, crate::host::proc_usage(&env.proc_root, *p)?));
    let t0 = Instant::now();
    let busy_before = crate::host::busy_ticks(&env.proc_root);
    let before: HashMap<i32, (u64, u64)> = pids.iter().filter_map(usage).collect();
    std::thread::sleep(Duration::from_secs(quiet_s));
    let after: HashMap<i32, (u64, u64)> = pids.iter().filter_map(usage).collect();
    let busy_after = crate::host::busy_ticks(&env.proc_root);
    let elapsed = t0.elapsed().as_secs_f64();
    let host_busy_pct = match (busy_before, busy_after) {
        (Some(a), Some(b)) => b.saturating_sub(a) as f64 / super::ticks_per_s() / elapsed * 100.0,
        _ => f64::NAN,
    };
    let (mut cpu, mut rss) = (Vec::new(), Vec::new());
    for (pid, &(t_before, _)) in &before {
        if let Some(&(t_after, r)) = after.get(pid) {
            cpu.push((t_after - t_before) as f64 / super::ticks_per_s() / elapsed * 100.0);
            rss.push(r as f64 / 1e6);
        }
    }
    let q = |v: &[f64], p| percentile(v, p).unwrap_or(f64::NAN);

    // Watched window. The adverts already in the views at its start are not measured: only
    // those stored during it.
    let first = rt.block_on(status_all(&mut pollers, |_| true));
    let mut seen: HashSet<(String, String, u64, u64)> = HashSet::new();
    for (i, st) in first.iter().enumerate() {
        for v in st.iter().flat_map(|s| &s.view).filter(|v| v.hops == 2) {
            if let Some(a) = &v.advert {
                seen.insert((t.nodes[i].name.clone(), a.origin.clone(), a.boot_id, a.sequence));
            }
        }
    }
    let t1 = Instant::now();
    let mut polls = Vec::new();
    let mut latencies = Vec::new();
    let mut unanswered = 0;
    let mut round = 0;
    while t1.elapsed() < Duration::from_secs(watched_s) {
        let tick = Instant::now();
        let all = rt.block_on(status_all(&mut pollers, |i| i % VIEW_SHARE == round % VIEW_SHARE));
        round += 1;
        let mut p = Poll {
            up_ends: 0,
            unanswered: 0,
        };
        for (i, st) in all.iter().enumerate() {
            let Some(st) = st else {
                p.unanswered += 1;
                continue;
            };
            p.up_ends += st.neighbors.iter().filter(|n| n.state == "up").count();
            for v in st.view.iter().filter(|v| v.hops == 2) {
                let Some(a) = &v.advert else { continue };
                if seen.insert((t.nodes[i].name.clone(), a.origin.clone(), a.boot_id, a.sequence)) {
                    latencies.push(v.latency_ms);
                }
            }
        }
        unanswered += p.unanswered;
        polls.push(p);
        std::thread::sleep(Duration::from_secs(1).saturating_sub(tick.elapsed()));
    }
    let watched = t1.elapsed().as_secs_f64();
    let last = rt.block_on(status_all(&mut pollers, |_| false));
    let (mut losses, mut bytes) = (0, Vec::new());
    for (a, b) in first.iter().zip(&last) {
        if let (Some(a), Some(b)) = (a, b) {
            losses += counter(b, "neighbor_down").saturating_sub(counter(a, "neighbor_down"));
            let total = |s| counter(s, "bytes_sent") + counter(s, "bytes_received");
            bytes.push(total(b).saturating_sub(total(a)) as f64 / watched);
        }
    }
    let fractions: Vec<f64> = polls
        .iter()
        .map(|p| p.up_ends as f64 / (2 * adjacencies).max(1) as f64)
        .collect();
    let propagation = Summary::of(&latencies);
    Ok(Scale {
        topology: topology.to_string(),
        interval_ms: interval.as_millis() as u64,
        transport: transport.to_string(),
        daemons: cpu.len(),
        adjacencies,
        up_s,
        settle_s,
        quiet_s,
        cpu_pct_total: cpu.iter().sum(),
        cpu_pct_median: q(&cpu, 0.5),
        cpu_pct_max: q(&cpu, 1.0),
        cpu_resolution_pct: 100.0 / super::ticks_per_s() / quiet_s as f64,
        host_busy_pct,
        waited_quiet_s: 0.0,
        rss_mb_median: q(&rss, 0.5),
        rss_mb_max: q(&rss, 1.0),
        rss_mb_total: rss.iter().sum(),
        watched_s,
        bytes_per_s_total: bytes.iter().sum(),
        bytes_per_s_median: q(&bytes, 0.5),
        adjacencies_up: Summary::of(&fractions).context("no poll in the watched window")?,
        neighbor_loss_events: losses,
        unanswered_polls: unanswered,
        propagation_2hop_ms: propagation,
        view_share: VIEW_SHARE,
        propagation_target_ms: interval.as_secs_f64() * 1e3 + 20.0,
    })
}

/// Brings lab `name` up with `topology` (seed [`super::SEED`]) at `interval`; the seconds it
/// took.
pub fn up(env: &LabEnv, name: &str, topology: &str, daemons: DaemonOptions) -> Result<f64> {
    let _ = down::down(env, name, &Silent);
    let g: Generator = topology.parse().map_err(|e| anyhow::anyhow!("{e}"))?;
    let t0 = Instant::now();
    super::lab_up_with(env, name, wuos_model::generate::generate(&g, super::SEED), daemons)?;
    Ok(t0.elapsed().as_secs_f64())
}
