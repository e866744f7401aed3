//! The end-to-end half of `wuos bench overlays` (the seed's Fig. 6): on a `sdwan:2:2` lab with
//! its daemons (mutual TLS, no domains), one NBI request (`POST /v1/actions`, N overlays of e1
//! and e2 over both underlays) until every one of the 2N tunnels has carried a datagram from e1
//! to e2 and the echo back; and what the edge's daemon keeps for them (RSS).
//!
//! ```text
//!  bench ──POST /v1/actions──▶ dc: NBI ─▶ controller ─▶ Control sessions ─▶ e1, e2: wuosd edge
//!  e1 (prober thread in e1's namespace): UDP to e2's inner address on each tunnel (every 20 ms,
//!     at most 250 tunnels a round),
//!     until each answered ◀── e2 (echo thread in e2's namespace) ◀──┘
//! ```

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde::Serialize;
use serde_json::json;
use wuos_lab::daemons::DaemonOptions;
use wuos_lab::progress::Silent;
use wuos_lab::state::LabState;
use wuos_lab::{LabEnv, down, up};
use wuos_model::generate::{Generator, generate};
use wuos_proto::nbi::NbiClient;
use wuos_sdwan::Inventory;
use wuos_sdwan::edge::{inner_addr, segment};

use crate::host::meminfo_bytes;
use crate::report::Clock;
use crate::stats::Summary;

const LAB: &str = "benchsdwe";
const ECHO_PORT: u16 = 7499;
/// How often the prober sends to the tunnels that have not answered …
const ROUND: Duration = Duration::from_millis(20);
/// … to at most this many of them per round, in turn: at 1,000 overlays, sending to all 2,000
/// every round took most of a core from the daemons being measured (perf, this machine).
const PER_ROUND: usize = 250;
/// How often the NBI's status is polled for "every edge holds the generation".
const STATUS_POLL: Duration = Duration::from_millis(20);
/// Longer than the edge's kernel check interval (wuosd's `CHECK_EVERY`, 30 s).
const CHECK_WAIT: Duration = Duration::from_secs(36);
/// How long one creation may take before the bench gives up.
const TIMEOUT: Duration = Duration::from_secs(120);

/// One creation, end to end.
#[derive(Clone, Debug, Serialize)]
pub struct E2eRun {
    /// Request sent → the last tunnel's echo received.
    pub e2e_seconds: f64,
    /// Request sent → the NBI's status says every edge holds the generation.
    pub synced_seconds: f64,
    /// The prober's own CPU time in that span (the instrument's cost, taken from the daemons).
    pub prober_cpu_seconds: f64,
    /// The edge daemon's (e1) resident memory with the N overlays.
    pub edge_rss_bytes: u64,
    /// The controller daemon's (dc) resident memory with them.
    pub controller_rss_bytes: u64,
    /// Delete request sent → every edge holds the empty state again.
    pub delete_synced_seconds: f64,
    /// e1's daemon RSS once it has also checked its kernel (after the edge's check interval);
    /// measured on the first run of the largest count only.
    pub edge_rss_after_check_bytes: Option<u64>,
}

#[derive(Clone, Debug, Serialize)]
pub struct E2eRow {
    pub overlays: usize,
    pub tunnels: usize,
    pub e2e_ms: Summary,
    pub synced_ms: Summary,
    pub delete_ms: Summary,
    /// e1's daemon RSS with N overlays minus its RSS before the first overlay.
    pub edge_rss_growth_mib: Summary,
    pub controller_rss_growth_mib: Summary,
    /// The prober thread's CPU time per run (the instrument's own cost).
    pub prober_cpu_ms: Summary,
    pub runs: Vec<E2eRun>,
}

#[derive(Clone, Debug, Serialize)]
pub struct E2e {
    pub rows: Vec<E2eRow>,
    /// e1's daemon RSS growth with the most overlays once it has also checked its kernel.
    pub edge_rss_growth_after_check_mib: Option<f64>,
    /// e1's and dc's daemon RSS before the first overlay.
    pub edge_rss_base_mib: f64,
    pub controller_rss_base_mib: f64,
}

pub fn clocks() -> Vec<Clock> {
    vec![
        Clock::new(
            "e2e ms",
            "before the NBI request (one POST /v1/actions creating the N overlays) is written",
            "when the prober in e1's namespace received the echo from e2's inner address on the last of the 2N tunnels",
            "nothing in between (the request, the controller, the Control sessions, both edges' kernels, the probes); not the NBI connection's setup",
            "std::time::Instant, 1 µs; the prober sends every 20 ms to at most 250 unanswered tunnels in turn and reads every 1 ms, so quoted to 1 ms; the figure may be late by one round (20 ms) per 250 tunnels still unanswered when the last came up (its CPU time is reported)",
        ),
        Clock::new(
            "synced ms",
            "the same",
            "when GET /v1/status (polled every 20 ms) says every edge holds the generation",
            "the same",
            "20 ms polls; quoted to 1 ms",
        ),
        Clock::new(
            "daemon RSS growth",
            "VmRSS of the daemon before the first overlay",
            "VmRSS with the N overlays, right after e2e (and, for the largest N's first run, again 36 s later: after the edge's first 30-s kernel check)",
            "memory the allocator keeps after deletions (the counts run upwards, so each N grows from the previous)",
            "/proc/PID/status, 1 kB",
        ),
    ]
}

/// The pid of `node`'s wuosd in lab `lab`.
pub(crate) fn daemon_pid(lab: &str, node: &str) -> Option<u32> {
    let config = format!("/{lab}/daemons/{node}.toml");
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: u32 = e.file_name().to_str()?.parse().ok()?;
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
        let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
        (comm.trim() == "wuosd" && String::from_utf8_lossy(&cmd).contains(&config)).then_some(pid)
    })
}

fn rss_of(node: &str) -> Result<u64> {
    let pid = daemon_pid(LAB, node).with_context(|| format!("{node}'s wuosd is not running"))?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    meminfo_bytes(&status, "VmRSS").context("no VmRSS")
}

fn in_node<R: Send>(env: &LabEnv, node: &str, f: impl FnOnce() -> R + Send) -> Result<R> {
    crate::overlays::in_lab_node(env, LAB, node, f)
}

/// A UDP echo in e2's namespace until `stop`.
fn echo(env: &LabEnv, stop: Arc<AtomicBool>) -> Result<std::thread::JoinHandle<()>> {
    let sock = in_node(env, "e2", || UdpSocket::bind((Ipv4Addr::UNSPECIFIED, ECHO_PORT)))??;
    sock.set_read_timeout(Some(Duration::from_millis(100)))?;
    Ok(std::thread::spawn(move || {
        let mut buf = [0u8; 64];
        while !stop.load(Ordering::Relaxed) {
            if let Ok((n, from)) = sock.recv_from(&mut buf) {
                let _ = sock.send_to(&buf[..n], from);
            }
        }
    }))
}

/// What the prober saw.
struct Probed {
    last_echo: Instant,
    /// The prober thread's CPU time (s).
    cpu_seconds: f64,
}

/// Sends from e1 every [`ROUND`] to up to [`PER_ROUND`] targets that have not echoed (in
/// turn, from where the last round stopped) until each echoed; when the last did.
fn probe(sock: UdpSocket, targets: Vec<Ipv4Addr>, start: Instant) -> Result<Probed> {
    let cpu0 = crate::overlays::thread_cpu();
    let mut pending: BTreeMap<Ipv4Addr, ()> = targets.into_iter().map(|t| (t, ())).collect();
    sock.set_nonblocking(true)?;
    let mut buf = [0u8; 64];
    let mut last = Instant::now();
    let mut next_round = start;
    let mut from = Ipv4Addr::UNSPECIFIED;
    loop {
        let now = Instant::now();
        if now >= next_round {
            let turn: Vec<Ipv4Addr> = pending
                .range(from..)
                .chain(pending.range(..from))
                .map(|(t, _)| *t)
                .take(PER_ROUND)
                .collect();
            for t in &turn {
                // Before the tunnel exists the route may be missing: not an error here.
                let _ = sock.send_to(b"wuos", SocketAddr::from((*t, ECHO_PORT)));
            }
            from = turn
                .last()
                .map(|t| Ipv4Addr::from(u32::from(*t).wrapping_add(1)))
                .unwrap_or(from);
            next_round = now + ROUND;
        }
        loop {
            match sock.recv_from(&mut buf) {
                Ok((_, SocketAddr::V4(from))) => {
                    if pending.remove(from.ip()).is_some() {
                        last = Instant::now();
                    }
                }
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(_) => {}
            }
        }
        if pending.is_empty() {
            return Ok(Probed {
                last_echo: last,
                cpu_seconds: crate::overlays::thread_cpu() - cpu0,
            });
        }
        if now - start > TIMEOUT {
            bail!(
                "{} tunnel(s) never carried an echo, e.g. to {}",
                pending.len(),
                pending.keys().next().expect("not empty")
            );
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// A client of lab `lab`'s NBI (inside its controller's namespace), once it answers (30 s).
pub(crate) async fn nbi(env: &LabEnv, lab: &str) -> Result<NbiClient> {
    let st = LabState::load(env, lab)?;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match wuos_lab::daemons::nbi_stream(env, &st) {
            Ok((stream, addr, token)) => {
                stream.set_nonblocking(true)?;
                let s = tokio::net::TcpStream::from_std(stream)?;
                return Ok(NbiClient::over(s, &addr.to_string(), &token).await?);
            }
            Err(e) if Instant::now() > deadline => return Err(e.into()),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// Polls the status until every edge holds `generation`; when.
async fn synced(c: &mut NbiClient, generation: u64) -> Result<Instant> {
    c.wait_synced(generation, STATUS_POLL, TIMEOUT)
        .await
        .map_err(anyhow::Error::msg)?;
    Ok(Instant::now())
}

pub fn run(env: &LabEnv, counts: &[usize], runs: usize) -> Result<E2e> {
    let t = generate(&"sdwan:2:2".parse::<Generator>()?, 1);
    let plan = wuos_model::plan::address_plan(&t)?;
    let inv = Inventory::from_topology(&t, &plan)?;
    let _ = down::down(env, LAB, &Silent);
    up::up(
        env,
        t,
        &up::UpOptions {
            name: LAB.into(),
            workers: 2,
            daemons: Some(DaemonOptions {
                domains: false,
                ..Default::default()
            }),
        },
        &Silent,
    )?;
    let stop = Arc::new(AtomicBool::new(false));
    let result = (|| {
        let echo = echo(env, stop.clone())?;
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let r = rt.block_on(measure(env, &inv, counts, runs));
        stop.store(true, Ordering::Relaxed);
        let _ = echo.join();
        r
    })();
    stop.store(true, Ordering::Relaxed);
    down::down(env, LAB, &Silent)?;
    result
}

async fn measure(env: &LabEnv, inv: &Inventory, counts: &[usize], runs: usize) -> Result<E2e> {
    let mut c = nbi(env, LAB).await?;
    // The daemons settle (sessions, first samples) before the baseline.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let edge_base = rss_of("e1")?;
    let controller_base = rss_of("dc")?;
    let mib = |b: u64, base: u64| (b as f64 - base as f64) / (1 << 20) as f64;
    let e2 = inv.sites["e2"].index;
    let mut rows = Vec::new();
    for &n in counts {
        eprintln!("{n} overlays end to end: {runs} runs");
        let create: Vec<serde_json::Value> = (1..=n)
            .map(|i| json!({"action": "create_overlay", "name": format!("o{i}"), "sites": {"e1": {}, "e2": {}}}))
            .collect();
        let delete: Vec<serde_json::Value> = (1..=n)
            .map(|i| json!({"action": "delete_overlay", "name": format!("o{i}")}))
            .collect();
        // Overlay ids are the lowest free ones: 1..=n on an empty controller.
        let mut targets = Vec::new();
        for id in 1..=n {
            for u in &inv.underlays {
                targets.push(inner_addr(segment(id as u16, inv.underlay(u)?), e2));
            }
        }
        let mut done = Vec::new();
        for _ in 0..runs {
            let sock = in_node(env, "e1", || UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)))??;
            let t0 = Instant::now();
            let tg = targets.clone();
            let prober = std::thread::spawn(move || probe(sock, tg, t0));
            let v = c.post("/v1/actions", &json!(create)).await?;
            let generation = v["generation"].as_u64().context("no generation")?;
            let synced_at = synced(&mut c, generation).await?;
            let probed = prober.join().map_err(|_| anyhow::anyhow!("the prober panicked"))??;
            let overlays = c.get("/v1/overlays").await?;
            let ids: Vec<u64> = overlays
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|o| o["id"].as_u64())
                .collect();
            if ids.len() != n || ids.iter().any(|&i| i == 0 || i > n as u64) {
                bail!("the overlays got ids {ids:?}, not 1..={n}: the probes went to the wrong addresses");
            }
            let (edge_rss, controller_rss) = (rss_of("e1")?, rss_of("dc")?);
            let after_check = if n == *counts.iter().max().unwrap_or(&0) && done.is_empty() {
                eprintln!(
                    "  waiting for e1's kernel check ({} s) before its RSS",
                    CHECK_WAIT.as_secs()
                );
                tokio::time::sleep(CHECK_WAIT).await;
                Some(rss_of("e1")?)
            } else {
                None
            };
            let d0 = Instant::now();
            let v = c.post("/v1/actions", &json!(delete)).await?;
            let g = v["generation"].as_u64().context("no generation")?;
            let deleted = synced(&mut c, g).await?;
            done.push(E2eRun {
                e2e_seconds: (probed.last_echo - t0).as_secs_f64(),
                prober_cpu_seconds: probed.cpu_seconds,
                synced_seconds: (synced_at - t0).as_secs_f64(),
                edge_rss_bytes: edge_rss,
                controller_rss_bytes: controller_rss,
                delete_synced_seconds: (deleted - d0).as_secs_f64(),
                edge_rss_after_check_bytes: after_check,
            });
        }
        let s = |f: &dyn Fn(&E2eRun) -> f64| Summary::of(&done.iter().map(f).collect::<Vec<_>>()).context("no run");
        rows.push(E2eRow {
            overlays: n,
            tunnels: targets.len(),
            e2e_ms: s(&|r| r.e2e_seconds * 1e3)?,
            synced_ms: s(&|r| r.synced_seconds * 1e3)?,
            delete_ms: s(&|r| r.delete_synced_seconds * 1e3)?,
            edge_rss_growth_mib: s(&|r| mib(r.edge_rss_bytes, edge_base))?,
            controller_rss_growth_mib: s(&|r| mib(r.controller_rss_bytes, controller_base))?,
            prober_cpu_ms: s(&|r| r.prober_cpu_seconds * 1e3)?,
            runs: done,
        });
    }
    let after_check = rows
        .last()
        .and_then(|r: &E2eRow| r.runs.first())
        .and_then(|r| r.edge_rss_after_check_bytes)
        .map(|b| mib(b, edge_base));
    Ok(E2e {
        rows,
        edge_rss_growth_after_check_mib: after_check,
        edge_rss_base_mib: edge_base as f64 / (1 << 20) as f64,
        controller_rss_base_mib: controller_base as f64 / (1 << 20) as f64,
    })
}
