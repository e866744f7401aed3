//! Path monitoring and SLA steering on an edge (issue 12, docs/sdwan.md): a STAMP reflector
//! (RFC 8762, stateless, unauthenticated) on every edge, and for the classes steered by an SLA
//! a STAMP session-sender probing each candidate path, the figures kept per path
//! ([`wuos_sdwan::path`]), the decision per class and remote site ([`wuos_sdwan::sla::decide`])
//! and the steering table written from the decisions ([`wuos_sdwan::steer::nft_script`]).
//!
//! ```text
//!  edge task ── plans (steered classes: candidates, probe targets) ──▶ paths task
//!  paths task ── STAMP test every probe_interval ──▶ peer's inner address on the tunnel ──▶
//!      reflector (the far edge's wuosd) ── answer ──▶ figures ──▶ decide ──▶ nft table wuos_steer
//!                                                                    └──▶ store sdwan/steer/CLASS/SITE
//! ```
//!
//! Probes go from this edge's inner address on a tunnel to the far edge's inner address on the
//! same tunnel (the connected route of the tunnel's /24), so each measures that tunnel over its
//! underlay. Several classes (or sites behind one hub) sharing a tunnel and peer share its
//! probes. A decision is persisted before it is written to the kernel; a restarted daemon starts
//! from the stored decisions and, with no figures yet, keeps them (nothing moves).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket as StdUdpSocket};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use tokio::net::UdpSocket;
use tokio::sync::watch;
use tracing::{info, warn};
use wuos_model::daemon::SdwanPathsConfig;
use wuos_proto::pb;
use wuos_sdwan::path::{Figures, PathStats};
use wuos_sdwan::sla::{Damping, PathId, Sla, Standing, SteerState, decide};
use wuos_sdwan::stamp::{self, ErrorEstimate, NtpTime, Reflected, Test};
use wuos_sdwan::steer::{self, Choice, ClassPlan};
use wuos_southbound::nft::Nftables;

use crate::store::Store;

const KEY_PREFIX: &str = "sdwan/steer/";
/// Decisions kept for reports.
const DECISIONS_KEPT: usize = 200;
/// How often the report is refreshed when nothing was decided.
const REPORT_EVERY: Duration = Duration::from_secs(1);
/// How long after a failed nft transaction the table is tried again.
const NFT_RETRY: Duration = Duration::from_secs(1);
/// Socket buffers of the sender and the reflector: a round to 1,000 paths is 1,000 datagrams at
/// once each way, more than the default buffers hold.
const SOCKET_BUFFER: usize = 4 << 20;

/// Larger buffers (past `net.core.*mem_max`: the daemon runs as root); kept default if refused.
fn big_buffers(sock: &StdUdpSocket) {
    use nix::sys::socket::{setsockopt, sockopt};
    for r in [
        setsockopt(sock, sockopt::RcvBufForce, &SOCKET_BUFFER),
        setsockopt(sock, sockopt::SndBufForce, &SOCKET_BUFFER),
    ] {
        if let Err(e) = r {
            warn!(error = %e, "cannot enlarge a STAMP socket's buffers; large rounds may drop probes");
            return;
        }
    }
}

fn now_ntp() -> NtpTime {
    NtpTime::from_unix(SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default())
}

// ---- reflector -------------------------------------------------------------------------------

/// Binds the STAMP reflector on `at` (the daemon: all addresses of its router's namespace, port
/// 862) and answers every test packet in a task of its own; the number answered is counted in
/// `answered`. Its address, and the task (aborting it stops the reflector).
pub fn spawn_reflector(
    at: SocketAddr,
    answered: Arc<std::sync::atomic::AtomicU64>,
) -> io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let sock = StdUdpSocket::bind(at)?;
    sock.set_nonblocking(true)?;
    big_buffers(&sock);
    nix::sys::socket::setsockopt(&sock, nix::sys::socket::sockopt::Ipv4RecvTtl, &true).map_err(io::Error::from)?;
    let local = sock.local_addr()?;
    let sock = UdpSocket::from_std(sock)?;
    let task = tokio::spawn(async move {
        let mut buf = [0u8; 1500];
        loop {
            if let Err(e) = sock.readable().await {
                warn!(error = %e, "the STAMP reflector stopped");
                return;
            }
            let got = match sock.try_io(tokio::io::Interest::READABLE, || recv_with_ttl(&sock, &mut buf)) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                got => got,
            };
            let received = now_ntp();
            match got {
                Ok((n, from, ttl)) => {
                    // Not a test packet (too short): not answered (RFC 8762 §4.3).
                    let Ok(test) = Test::decode(&buf[..n]) else { continue };
                    let answer = Reflected::answer(&test, received, ttl, now_ntp());
                    if sock.try_send_to(&answer.encode(), from).is_ok() {
                        answered.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                }
                Err(e) => warn!(error = %e, "the STAMP reflector could not read a datagram"),
            }
        }
    });
    Ok((local, task))
}

/// One datagram with the sender's address and the packet's IP TTL (`IP_RECVTTL`).
fn recv_with_ttl(sock: &UdpSocket, buf: &mut [u8]) -> io::Result<(usize, SocketAddr, u8)> {
    use nix::sys::socket::{ControlMessageOwned, MsgFlags, SockaddrIn, recvmsg};
    let mut iov = [io::IoSliceMut::new(buf)];
    let mut cmsg = nix::cmsg_space!(nix::libc::c_int);
    let msg = recvmsg::<SockaddrIn>(sock.as_raw_fd(), &mut iov, Some(&mut cmsg), MsgFlags::empty())
        .map_err(io::Error::from)?;
    let mut ttl = 0u8;
    for c in msg.cmsgs().map_err(io::Error::from)? {
        if let ControlMessageOwned::Ipv4Ttl(t) = c {
            ttl = t.clamp(0, 255) as u8;
        }
    }
    let from = msg
        .address
        .map(|a| SocketAddr::V4(SocketAddrV4::new(a.ip(), a.port())))
        .ok_or_else(|| io::Error::other("a datagram without a sender"))?;
    Ok((msg.bytes, from, ttl))
}

// ---- reports ---------------------------------------------------------------------------------

/// A path's figures: a candidate of some class towards one remote site.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PathReport {
    pub overlay: String,
    pub underlay: String,
    pub site: String,
    pub tunnel: String,
    /// Where its probes go (the far edge's inner address on the tunnel).
    pub target: Ipv4Addr,
    #[serde(flatten)]
    pub figures: Figures,
}

/// Where a class goes towards one site now.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SteerReport {
    pub class: String,
    pub site: String,
    pub paths: Vec<String>,
    /// Whether the SLA is met (none: not known yet).
    pub met: Option<bool>,
}

/// One decision, as logged.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DecisionReport {
    pub at_unix_ms: u64,
    pub class: String,
    pub site: String,
    pub from: Vec<String>,
    pub to: Vec<String>,
    pub met: Option<bool>,
    pub reason: String,
}

/// What the paths task publishes.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Report {
    pub paths: Vec<PathReport>,
    pub steering: Vec<SteerReport>,
    /// The newest last.
    pub decisions: Vec<DecisionReport>,
    pub probes_sent: u64,
    pub answers: u64,
    /// Decisions made since the start (the newest are in `decisions`).
    pub decisions_total: u64,
    /// The last nft failure, if the steering table could not be written.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nft_error: Option<String>,
}

/// At most this many paths and steered classes go into an advert (the protocol's limit).
const ADVERTISED: usize = wuos_proto::validate::MAX_ITEMS_PER_ADVERT;

fn tenth(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

/// Adds the report's paths and steering to the edge's advert state (protocol 2.2): the paths
/// down first and the classes whose SLA is not met first, then in order, figures rounded to 0.1
/// (an advert changes only when a figure moves by that much), at most 64 of each.
pub fn advertise(state: &mut pb::SdwanEdgeState, r: &Report) {
    let mut paths: Vec<&PathReport> = r.paths.iter().collect();
    paths.sort_by_key(|p| p.figures.up);
    state.paths = paths
        .into_iter()
        .take(ADVERTISED)
        .map(|p| pb::PathState {
            overlay: p.overlay.clone(),
            underlay: p.underlay.clone(),
            site: p.site.clone(),
            up: p.figures.up,
            rtt_ms: p.figures.rtt_ms.map(tenth),
            loss_pct: tenth(p.figures.loss_pct),
            jitter_ms: tenth(p.figures.jitter_ms),
        })
        .collect();
    state.paths_total = r.paths.len() as u32;
    let mut steering: Vec<&SteerReport> = r.steering.iter().collect();
    steering.sort_by_key(|s| s.met == Some(true));
    state.steering = steering
        .into_iter()
        .take(ADVERTISED)
        .map(|s| pb::SteerState {
            class_name: s.class.clone(),
            site: s.site.clone(),
            paths: s.paths.iter().take(ADVERTISED).cloned().collect(),
            met: s.met,
        })
        .collect();
    state.steering_total = r.steering.len() as u32;
}

/// Fills the daemon's SD-WAN metrics from the paths task's latest report at each scrape (paths no
/// longer monitored leave the families), and the reflector's count of answered test packets.
pub fn metrics_refresh(
    report: watch::Receiver<Arc<Report>>,
    reflected: Arc<std::sync::atomic::AtomicU64>,
) -> crate::metrics::SdwanRefresh {
    use crate::metrics::{PathLabel, SteerLabel};
    Box::new(move |m| {
        let r = report.borrow().clone();
        for f in [&m.rtt_ms, &m.loss_pct, &m.jitter_ms] {
            f.clear();
        }
        m.up.clear();
        m.sla_met.clear();
        for p in &r.paths {
            let l = PathLabel {
                overlay: p.overlay.clone(),
                underlay: p.underlay.clone(),
                site: p.site.clone(),
            };
            if let Some(rtt) = p.figures.rtt_ms {
                m.rtt_ms.get_or_create(&l).set(rtt);
            }
            m.loss_pct.get_or_create(&l).set(p.figures.loss_pct);
            m.jitter_ms.get_or_create(&l).set(p.figures.jitter_ms);
            m.up.get_or_create(&l).set(i64::from(p.figures.up));
        }
        for c in &r.steering {
            if let Some(met) = c.met {
                let l = SteerLabel {
                    class: c.class.clone(),
                    site: c.site.clone(),
                };
                m.sla_met.get_or_create(&l).set(i64::from(met));
            }
        }
        let relaxed = std::sync::atomic::Ordering::Relaxed;
        m.probes_sent.inner().store(r.probes_sent, relaxed);
        m.answers.inner().store(r.answers, relaxed);
        m.decisions.inner().store(r.decisions_total, relaxed);
        m.reflected.inner().store(reflected.load(relaxed), relaxed);
    })
}

fn names(p: &[PathId]) -> Vec<String> {
    p.iter().map(|p| p.to_string()).collect()
}

// ---- the paths task --------------------------------------------------------------------------

/// A path towards one site.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct PathKey {
    path: PathId,
    site: String,
}

struct Target {
    stats: PathStats,
    /// A probe of it was lost or went overdue since the last step.
    changed: bool,
    /// The SLAs of the classes its figures feed (indices into `Paths::slas`).
    slas: Vec<usize>,
    /// Its standing under each of them when all those classes were last decided.
    standings: Option<Vec<Standing>>,
}

struct Paths<N> {
    cfg: SdwanPathsConfig,
    damping: Damping,
    store: Arc<Store>,
    nft: Arc<N>,
    plans: Arc<Vec<ClassPlan>>,
    /// By the far edge's inner address.
    targets: BTreeMap<Ipv4Addr, Target>,
    /// Sequence numbers are the sender's, across all targets, so an answer is matched by its
    /// number whatever address it comes from: the probes not answered yet, oldest first.
    next_seq: u32,
    outstanding: BTreeMap<u32, Ipv4Addr>,
    order: VecDeque<u32>,
    keys: BTreeMap<PathKey, (Ipv4Addr, String)>,
    /// Target → the (plan index, site) pairs whose decision its figures feed.
    users: BTreeMap<Ipv4Addr, BTreeSet<(usize, String)>>,
    /// The distinct SLAs of the plans.
    slas: Vec<Sla>,
    /// (plan index, site) → the target probed for each of its candidates towards the site, in
    /// `ClassPlan::towards` order.
    probed: BTreeMap<(usize, String), Vec<Option<Ipv4Addr>>>,
    /// The (plan index, site) pairs whose decision moves with time: a failback hold running, or
    /// nothing known yet. Kept by `decide`.
    pending: BTreeSet<(usize, String)>,
    /// The (plan index, site) pairs whose SLA is not met, or not known. Kept by `decide`.
    unmet: BTreeSet<(usize, String)>,
    /// (class, site) → what the decision remembers.
    states: BTreeMap<(String, String), SteerState>,
    decisions: VecDeque<DecisionReport>,
    /// The steering script last written (None: nothing written since the start).
    script: Option<String>,
    nft_error: Option<(Instant, String)>,
    start: Instant,
    probes_sent: u64,
    answers: u64,
    decisions_total: u64,
    report: watch::Sender<Arc<Report>>,
}

/// The door to the paths task.
#[derive(Clone, Debug)]
pub struct PathsHandle {
    report: watch::Receiver<Arc<Report>>,
}

impl PathsHandle {
    pub fn report(&self) -> watch::Receiver<Arc<Report>> {
        self.report.clone()
    }
}

/// Whether a (class, site) decision moves with time: nothing known yet, or a hold running on a
/// path the class could still take (balanced: any; else one preferred to where it is).
fn pending(plan: &ClassPlan, site: &str, st: &SteerState) -> bool {
    if st.met.is_none() {
        return true;
    }
    let order: Vec<&PathId> = plan.towards(site).map(|(_, c)| &c.path).collect();
    let first_chosen = order.iter().position(|p| st.chosen.contains(p)).unwrap_or(order.len());
    st.good_since.keys().any(|p| {
        !st.chosen.contains(p)
            && (plan.steering.balance || order.iter().position(|q| *q == p).is_some_and(|i| i < first_chosen))
    })
}

/// The figures of a path nobody probes (not yet planned): up, nothing known.
const UNPROBED: Figures = Figures {
    up: true,
    rtt_ms: None,
    srtt_ms: None,
    jitter_ms: 0.0,
    loss_pct: 0.0,
    samples: 0,
    lost_in_row: 0,
};

impl<N: Nftables + 'static> Paths<N> {
    /// A task's state with the decisions stored in `store`, no plans yet; its report's receiver.
    fn new(store: Arc<Store>, nft: N, cfg: SdwanPathsConfig) -> (Paths<N>, watch::Receiver<Arc<Report>>) {
        let (report, report_rx) = watch::channel(Arc::new(Report::default()));
        let mut states = BTreeMap::new();
        for (k, v) in store.blobs_with_prefix(KEY_PREFIX).unwrap_or_default() {
            let Some((class, site)) = k.trim_start_matches(KEY_PREFIX).split_once('/') else {
                continue;
            };
            match serde_json::from_slice::<SteerState>(&v) {
                Ok(s) => {
                    states.insert((class.to_string(), site.to_string()), s);
                }
                Err(e) => warn!(key = %k, error = %e, "dropping an unreadable steering decision"),
            }
        }
        let damping = Damping {
            hysteresis: cfg.hysteresis,
            hold: cfg.hold,
        };
        let paths = Paths {
            damping,
            cfg,
            store,
            nft: Arc::new(nft),
            plans: Arc::new(Vec::new()),
            targets: BTreeMap::new(),
            users: BTreeMap::new(),
            slas: Vec::new(),
            probed: BTreeMap::new(),
            pending: BTreeSet::new(),
            unmet: BTreeSet::new(),
            next_seq: 0,
            outstanding: BTreeMap::new(),
            order: VecDeque::new(),
            keys: BTreeMap::new(),
            states,
            decisions: VecDeque::new(),
            script: None,
            nft_error: None,
            start: Instant::now(),
            probes_sent: 0,
            answers: 0,
            decisions_total: 0,
            report,
        };
        (paths, report_rx)
    }

    fn figures(&self, key: &PathKey) -> Figures {
        self.keys
            .get(key)
            .and_then(|(a, _)| self.targets.get(a))
            .map_or(UNPROBED, |t| t.stats.figures())
    }

    /// A target's standing under each SLA of the classes it feeds.
    fn standings(&self, addr: Ipv4Addr) -> Option<Vec<Standing>> {
        let t = self.targets.get(&addr)?;
        let f = t.stats.figures();
        Some(
            t.slas
                .iter()
                .map(|&i| self.slas[i].standing(&f, &self.damping))
                .collect(),
        )
    }

    fn set_plans(&mut self, plans: Arc<Vec<ClassPlan>>) {
        // Each path is probed at its peer's inner address on its tunnel; unless every tunnel is
        // probed on its own, the paths crossing the same underlay path (underlay, outer
        // destination) share the probes of one of them (the lowest inner address).
        let mut keys = BTreeMap::new();
        let mut users: BTreeMap<Ipv4Addr, BTreeSet<(usize, String)>> = BTreeMap::new();
        let mut shared: BTreeMap<(String, Ipv4Addr), Ipv4Addr> = BTreeMap::new();
        let each = self.cfg.probe_each_tunnel;
        for plan in plans.iter() {
            for c in &plan.candidates {
                for (site, addr) in &c.via {
                    if let (false, Some(outer)) = (each, c.outer.get(site)) {
                        let rep = shared.entry((c.path.underlay.clone(), *outer)).or_insert(*addr);
                        *rep = (*rep).min(*addr);
                    }
                }
            }
        }
        for (pi, plan) in plans.iter().enumerate() {
            for c in &plan.candidates {
                for (site, addr) in &c.via {
                    let probed = match (each, c.outer.get(site)) {
                        (false, Some(outer)) => shared[&(c.path.underlay.clone(), *outer)],
                        _ => *addr,
                    };
                    users.entry(probed).or_default().insert((pi, site.clone()));
                    keys.insert(
                        PathKey {
                            path: c.path.clone(),
                            site: site.clone(),
                        },
                        (probed, c.tunnel.clone()),
                    );
                }
            }
        }
        let mut slas: Vec<Sla> = Vec::new();
        for plan in plans.iter() {
            if !slas.contains(&plan.steering.sla) {
                slas.push(plan.steering.sla);
            }
        }
        let addrs: BTreeSet<Ipv4Addr> = keys.values().map(|(a, _)| *a).collect();
        self.targets.retain(|a, _| addrs.contains(a));
        for a in addrs {
            let t = self.targets.entry(a).or_insert_with(|| Target {
                stats: PathStats::new(self.cfg.window as usize),
                changed: true,
                slas: Vec::new(),
                standings: None,
            });
            let mut used: Vec<usize> = users[&a]
                .iter()
                .filter_map(|(pi, _)| slas.iter().position(|s| *s == plans[*pi].steering.sla))
                .collect();
            used.sort_unstable();
            used.dedup();
            t.slas = used;
            t.standings = None;
        }
        self.slas = slas;
        self.keys = keys;
        self.users = users;
        self.probed = plans
            .iter()
            .enumerate()
            .flat_map(|(pi, plan)| plan.sites.keys().map(move |site| (pi, plan, site)))
            .map(|(pi, plan, site)| {
                let probed = plan
                    .towards(site)
                    .map(|(_, c)| {
                        self.keys
                            .get(&PathKey {
                                path: c.path.clone(),
                                site: site.clone(),
                            })
                            .map(|(a, _)| *a)
                    })
                    .collect();
                ((pi, site.clone()), probed)
            })
            .collect();
        // Every pair is decided again after new plans (`evaluate_all`), which fills these.
        self.pending.clear();
        self.unmet.clear();
        let wanted: BTreeSet<(String, String)> = plans
            .iter()
            .flat_map(|p| p.sites.keys().map(|s| (p.class.clone(), s.clone())))
            .collect();
        let gone: Vec<(String, String)> = self.states.keys().filter(|k| !wanted.contains(*k)).cloned().collect();
        for (class, site) in gone {
            self.states.remove(&(class.clone(), site.clone()));
            if let Err(e) = self.store.delete_blob(&format!("{KEY_PREFIX}{class}/{site}")) {
                warn!(error = %e, %class, %site, "cannot forget a steering decision");
            }
        }
        self.plans = plans;
    }

    /// A decision step for every class towards every site; whether anything changed. Every
    /// target's standings are recorded.
    fn evaluate_all(&mut self) -> bool {
        let pairs = self.probed.keys().cloned().collect();
        let targets: Vec<Ipv4Addr> = self.targets.keys().copied().collect();
        let changed = self.decide(pairs);
        for a in targets {
            let standings = self.standings(a);
            if let Some(t) = self.targets.get_mut(&a) {
                t.standings = standings;
            }
        }
        changed
    }

    /// A decision step for the classes these targets' figures feed, after they changed (an
    /// answer, a probe lost or overdue), and for `also`; whether anything changed. A target that
    /// stands under every SLA as it did when its classes were last decided can only move the
    /// classes whose SLA is not met (or not known: the least bad path turns on the figures'
    /// values), so only those are decided (500 classes sharing one probe stream re-decided on each
    /// of its answers took 10 % of a core); otherwise all of them, and its standings are recorded.
    fn step(&mut self, targets: &[Ipv4Addr], also: BTreeSet<(usize, String)>) -> bool {
        let mut pairs = also;
        let mut recorded = Vec::new();
        for &a in targets {
            let Some(users) = self.users.get(&a) else { continue };
            let now = self.standings(a);
            let same = self
                .targets
                .get(&a)
                .is_some_and(|t| t.standings.is_some() && t.standings == now);
            if same {
                // Few are unmet: asking each of the stream's users (500 here) was a fifth of
                // the probing daemon's CPU.
                pairs.extend(self.unmet.iter().filter(|p| users.contains(*p)).cloned());
            } else {
                pairs.extend(users.iter().cloned());
                recorded.push((a, now));
            }
        }
        let changed = self.decide(pairs);
        for (a, standings) in recorded {
            if let Some(t) = self.targets.get_mut(&a) {
                t.standings = standings;
            }
        }
        changed
    }

    /// A decision step for these (plan, site) pairs; whether anything changed. Each target's
    /// figures are worked out once.
    fn decide(&mut self, pairs: BTreeSet<(usize, String)>) -> bool {
        let now = self.start.elapsed();
        let mut changed = false;
        let plans = self.plans.clone();
        let mut figures: BTreeMap<Ipv4Addr, Figures> = BTreeMap::new();
        for pair in pairs {
            let plan = &plans[pair.0];
            let site = pair.1.clone();
            let probed = self.probed.get(&pair).map(Vec::as_slice).unwrap_or_default();
            let candidates: Vec<(PathId, Figures)> = plan
                .towards(&site)
                .enumerate()
                .map(|(i, (_, c))| {
                    let f = match probed.get(i).copied().flatten() {
                        Some(a) => *figures
                            .entry(a)
                            .or_insert_with(|| self.targets.get(&a).map_or(UNPROBED, |t| t.stats.figures())),
                        None => UNPROBED,
                    };
                    (c.path.clone(), f)
                })
                .collect();
            let state = self.states.entry((plan.class.clone(), site.clone())).or_default();
            let change = decide(
                &plan.steering.sla,
                plan.steering.balance,
                &candidates,
                state,
                now,
                &self.damping,
            );
            if state.met == Some(true) {
                self.unmet.remove(&pair);
            } else {
                self.unmet.insert(pair.clone());
            }
            if pending(plan, &site, state) {
                self.pending.insert(pair);
            } else {
                self.pending.remove(&pair);
            }
            let Some(change) = change else {
                continue;
            };
            changed = true;
            let (from, to) = (names(&change.from), names(&change.to));
            info!(
                class = %plan.class,
                %site,
                from = %from.join("+"),
                to = %to.join("+"),
                met = ?change.met,
                reason = %change.reason,
                "SD-WAN steering decision"
            );
            let key = format!("{KEY_PREFIX}{}/{site}", plan.class);
            match serde_json::to_vec(&*state) {
                Ok(json) => {
                    if let Err(e) = self.store.put_blob(&key, &json) {
                        warn!(error = %e, "cannot persist a steering decision");
                    }
                }
                Err(e) => warn!(error = %e, "cannot encode a steering decision"),
            }
            self.decisions_total += 1;
            if self.decisions.len() == DECISIONS_KEPT {
                self.decisions.pop_front();
            }
            self.decisions.push_back(DecisionReport {
                at_unix_ms: SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map(|d| d.as_millis() as u64)
                    .unwrap_or(0),
                class: plan.class.clone(),
                site: site.clone(),
                from,
                to,
                met: change.met,
                reason: change.reason,
            });
        }
        changed
    }

    /// The choices the decisions make, for the steering table.
    fn choices(&self) -> BTreeMap<String, BTreeMap<String, Choice>> {
        let mut out: BTreeMap<String, BTreeMap<String, Choice>> = BTreeMap::new();
        for plan in self.plans.iter() {
            for site in plan.sites.keys() {
                let Some(state) = self.states.get(&(plan.class.clone(), site.clone())) else {
                    continue;
                };
                let index = |p: &PathId| plan.candidates.iter().position(|c| &c.path == p);
                let chosen: Vec<usize> = state.chosen.iter().filter_map(index).collect();
                let keep = if plan.steering.balance {
                    chosen.clone()
                } else if plan.steering.sticky {
                    plan.towards(site)
                        .filter(|(_, c)| {
                            self.figures(&PathKey {
                                path: c.path.clone(),
                                site: site.clone(),
                            })
                            .up
                        })
                        .map(|(i, _)| i)
                        .collect()
                } else {
                    Vec::new()
                };
                out.entry(plan.class.clone())
                    .or_default()
                    .insert(site.clone(), Choice { chosen, keep });
            }
        }
        out
    }

    /// Writes the steering table when it differs from the last one written.
    async fn write_table(&mut self) {
        let script = steer::nft_script(&self.plans, &self.choices());
        if self.script.as_deref() == Some(script.as_str()) {
            return;
        }
        if let Some((at, _)) = &self.nft_error
            && at.elapsed() < NFT_RETRY
        {
            return;
        }
        let text = if script.is_empty() {
            steer::nft_remove()
        } else {
            script.clone()
        };
        let nft = self.nft.clone();
        let outcome = tokio::task::spawn_blocking(move || nft.apply(&text))
            .await
            .map_err(|e| e.to_string())
            .and_then(|r| r.map_err(|e| e.to_string()));
        match outcome {
            Ok(()) => {
                self.script = Some(script);
                self.nft_error = None;
            }
            Err(e) => {
                warn!(error = %e, "cannot write the SD-WAN steering table");
                self.nft_error = Some((Instant::now(), e));
            }
        }
    }

    fn publish(&self) {
        let mut paths: Vec<PathReport> = self
            .keys
            .iter()
            .map(|(k, (addr, tunnel))| PathReport {
                overlay: k.path.overlay.clone(),
                underlay: k.path.underlay.clone(),
                site: k.site.clone(),
                tunnel: tunnel.clone(),
                target: *addr,
                figures: self.figures(k),
            })
            .collect();
        paths.sort_by(|a, b| (&a.site, &a.overlay, &a.underlay).cmp(&(&b.site, &b.overlay, &b.underlay)));
        let steering = self
            .states
            .iter()
            .map(|((class, site), s)| SteerReport {
                class: class.clone(),
                site: site.clone(),
                paths: names(&s.chosen),
                met: s.met,
            })
            .collect();
        self.report.send_replace(Arc::new(Report {
            paths,
            steering,
            decisions: self.decisions.iter().cloned().collect(),
            probes_sent: self.probes_sent,
            answers: self.answers,
            decisions_total: self.decisions_total,
            nft_error: self.nft_error.as_ref().map(|(_, e)| e.clone()),
        }));
    }

    /// One round: a test packet to every target; then the probes past their timeout are lost.
    async fn probe(&mut self, sock: &UdpSocket, send: bool) {
        let now = self.start.elapsed();
        let port = stamp_port(&self.cfg);
        if send {
            for (addr, t) in self.targets.iter_mut() {
                let seq = self.next_seq;
                self.next_seq = self.next_seq.wrapping_add(1);
                let test = Test {
                    seq,
                    timestamp: now_ntp(),
                    error: ErrorEstimate::WUOS,
                };
                // A send that fails (no route while a tunnel is re-made) is a lost probe.
                let _ = sock.try_send_to(&test.encode(), SocketAddr::from((*addr, port)));
                t.stats.sent(seq, now);
                self.probes_sent += 1;
                self.outstanding.insert(seq, *addr);
                self.order.push_back(seq);
            }
            // Past the window an answer no longer counts: forget those probes.
            let keep = self.targets.len() * self.cfg.window as usize;
            while self.order.len() > keep {
                if let Some(old) = self.order.pop_front() {
                    self.outstanding.remove(&old);
                }
            }
        }
        for t in self.targets.values_mut() {
            let before = t.stats.overdue_in_row();
            if t.stats.expire(now) > 0 || t.stats.overdue_in_row() != before {
                t.changed = true;
            }
        }
    }

    /// The targets whose figures moved or move with time now: late or outstanding probes, a
    /// probe just lost or gone overdue.
    fn moving(&mut self) -> Vec<Ipv4Addr> {
        let out = self
            .targets
            .iter()
            .filter(|(_, t)| t.stats.aging() || t.changed)
            .map(|(a, _)| *a)
            .collect();
        for t in self.targets.values_mut() {
            t.changed = false;
        }
        out
    }

    /// An answer: its path's figures; the target it answers for, if it counted.
    fn answered(&mut self, from: SocketAddr, datagram: &[u8]) -> Option<Ipv4Addr> {
        let arrived = now_ntp();
        let (SocketAddr::V4(_), Ok(r)) = (from, Reflected::decode(datagram)) else {
            return None;
        };
        let addr = self.outstanding.remove(&r.sender_seq)?;
        let t = self.targets.get_mut(&addr)?;
        if t.stats
            .answered(r.sender_seq, r.round_trip(arrived), self.start.elapsed())
        {
            self.answers += 1;
            Some(addr)
        } else {
            None
        }
    }
}

/// Starts the paths task: it waits for the edge's first plans (`None` until the edge has
/// reconciled its pieces), then probes, decides and writes the steering table.
pub fn spawn<N: Nftables + 'static>(
    mut plans: watch::Receiver<Option<Arc<Vec<ClassPlan>>>>,
    store: Arc<Store>,
    nft: N,
    cfg: SdwanPathsConfig,
) -> io::Result<PathsHandle> {
    let std_sock = StdUdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))?;
    std_sock.set_nonblocking(true)?;
    big_buffers(&std_sock);
    let (mut paths, report_rx) = Paths::new(store, nft, cfg);
    tokio::spawn(async move {
        let sock = match UdpSocket::from_std(std_sock) {
            Ok(s) => s,
            Err(e) => {
                warn!(error = %e, "the STAMP sender has no socket; paths are not monitored");
                return;
            }
        };
        // The edge's first plans, once its pieces are back on the kernel.
        loop {
            if let Some(p) = plans.borrow_and_update().clone() {
                paths.set_plans(p);
                break;
            }
            if plans.changed().await.is_err() {
                return;
            }
        }
        if !paths.states.is_empty() {
            info!(decisions = paths.states.len(), "SD-WAN steering decisions restored");
        }
        paths.evaluate_all();
        paths.write_table().await;
        paths.publish();
        // Half rounds: probes leave every other tick; expiry runs on every one, so a lost probe
        // counts half a round after its timeout at most.
        let mut tick = tokio::time::interval(paths.cfg.probe_interval / 2);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut half = false;
        let mut last_report = Instant::now();
        let mut buf = [0u8; 1500];
        loop {
            let mut decided = false;
            tokio::select! {
                // Without a target nothing is probed, nothing moves with time, and the task
                // sleeps until new plans: a router with no steered class (every router of a
                // 1,000-router lab) was woken 20 times a second for nothing.
                _ = tick.tick(), if !paths.targets.is_empty() => {
                    half = !half;
                    paths.probe(&sock, half).await;
                    // Figures move with time only while probes are late or outstanding, and a
                    // hold runs out with time: the classes those figures feed and those waiting
                    // out a hold are stepped, the rest wait for an answer (500 classes
                    // re-decided 20 times a second cost 15 % of a core).
                    let moving = paths.moving();
                    decided = paths.step(&moving, paths.pending.clone());
                }
                r = sock.recv_from(&mut buf) => {
                    if let Ok((n, from)) = r
                        && let Some(target) = paths.answered(from, &buf[..n])
                    {
                        decided = paths.step(&[target], BTreeSet::new());
                    }
                }
                c = plans.changed() => {
                    if c.is_err() {
                        return;
                    }
                    if let Some(p) = plans.borrow_and_update().clone() {
                        paths.set_plans(p);
                    }
                    paths.evaluate_all();
                    // The table follows the plans even without a new decision.
                    decided = true;
                }
            }
            if decided || paths.nft_error.is_some() {
                paths.write_table().await;
            }
            if decided || last_report.elapsed() >= REPORT_EVERY {
                paths.publish();
                last_report = Instant::now();
            }
        }
    });
    Ok(PathsHandle { report: report_rx })
}

/// The STAMP port probes go to: the configured one, the well-known one when this edge runs no
/// reflector (0).
pub fn stamp_port(cfg: &SdwanPathsConfig) -> u16 {
    if cfg.stamp_port == 0 {
        stamp::PORT
    } else {
        cfg.stamp_port
    }
}

#[cfg(test)]
mod tests;
