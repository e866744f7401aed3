//! The protocol component: one task owns the augmented SD-WAN protocol's state machine
//! ([`wuos_proto::Instance`]) and everything comes to it as a message. Each adjacency is one
//! long-lived `Neighbor.Link` stream (protocol 2.0), dialled by the router whose id sorts first
//! ([`dial`]) or accepted by the server (`crate::server`); a reader task per link turns its
//! frames into messages, and the task writes frames straight into the link's queue. The task
//! publishes the typed [`Neighborhood`] for the orchestrator and the controller.
//!
//! ```text
//!  dialers (ids after ours) ─┐  LinkOpened{tx} / Frame / LinkClosed   ┌──────────────────┐
//!  Neighbor.Link (server) ───┴──────────────────────────────────────▶ │ protocol task    │──▶ watch<Neighborhood>
//!  sampler ─────────────────────────────Sample──────────────────────▶ │ owns Instance    │
//!  ticker (hello interval / 4) ─────────────────────────────────────▶ └──────────────────┘
//!        ▲                                                                  │ SendFrame: stamped, queued
//!        └────────────── one outbound queue per link (the stream's sender) ◀┘ CloseLink: queue dropped
//! ```
//!
//! Round trips are measured on the frames themselves: each frame says when it left
//! (`sent_us`, our monotonic µs) and echoes the peer's latest `sent_us` with how long we held
//! it; the reader of the echo subtracts both. A frame that cannot be queued (the peer stopped
//! reading) closes the link: the neighbor holds less than the state machine thinks, and a new
//! link starts from nothing.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use prost::Message;
use tokio::sync::{mpsc, oneshot, watch};
use tonic::transport::{Channel, Endpoint};
use tracing::{debug, info, warn};
use wuos_proto::neighborhood::Neighborhood;
use wuos_proto::pb;
use wuos_proto::pb::neighbor_client::NeighborClient;
use wuos_proto::{Action, Input, Instance, MAX_MESSAGE_BYTES};

use wuos_model::daemon::LinkTransport;

use crate::clock::{Clock, unix_ns};
use crate::metrics::Metrics;

/// Frames queued to one link before it counts as stuck and is closed.
const LINK_QUEUE: usize = 256;

/// What a sample of the router brings to its advert.
#[derive(Clone, Debug, Default)]
pub struct Sample {
    pub timestamp_unix_ns: i64,
    pub resources: pb::Resources,
    pub links: Vec<pb::LinkMetrics>,
    pub services: Vec<pb::ServiceInstance>,
    pub demand: Vec<pb::ServiceDemand>,
    pub region: String,
    pub placements: Vec<pb::Placement>,
    /// Its SD-WAN tunnels, when it is an SD-WAN edge holding any.
    pub sdwan: Option<pb::SdwanEdgeState>,
}

/// One link's outbound side.
#[derive(Debug)]
struct LinkTx {
    /// Unique among the links of this daemon.
    id: u64,
    /// The stream's outbound queue.
    tx: mpsc::Sender<pb::Frame>,
}

enum Msg {
    LinkOpened {
        neighbor: String,
        link: LinkTx,
    },
    LinkClosed {
        neighbor: String,
        link: u64,
        reason: String,
    },
    Frame {
        neighbor: String,
        link: u64,
        frame: Box<pb::Frame>,
        received_us: u64,
        rtt_ms: Option<f64>,
    },
    Sample(Box<Sample>),
    Status {
        view: bool,
        reply: oneshot::Sender<pb::StatusReply>,
    },
    Shutdown(oneshot::Sender<()>),
}

/// The door into the protocol task; cheap to clone.
#[derive(Clone, Debug)]
pub struct ProtocolHandle {
    tx: mpsc::Sender<Msg>,
    neighborhood: watch::Receiver<Arc<Neighborhood>>,
    next_link: Arc<AtomicU64>,
    clock: Clock,
}

/// The protocol task is gone (the daemon is stopping).
#[derive(Debug, thiserror::Error)]
#[error("the protocol task is not running")]
pub struct Stopped;

impl ProtocolHandle {
    async fn ask<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Msg) -> Result<T, Stopped> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(make(reply)).await.map_err(|_| Stopped)?;
        rx.await.map_err(|_| Stopped)
    }

    /// Microseconds on the daemon's monotonic clock (frames' `sent_us`).
    pub fn now_us(&self) -> u64 {
        self.clock.origin().elapsed().as_micros() as u64
    }

    /// A link to `neighbor` is open (dialled or accepted, any transport): its id, and the queue
    /// of the frames to send on it (the state machine queues its hello first).
    pub async fn open_link(&self, neighbor: &str) -> Result<(u64, mpsc::Receiver<pb::Frame>), Stopped> {
        let (tx, rx) = mpsc::channel(LINK_QUEUE);
        let id = self.next_link.fetch_add(1, Ordering::Relaxed) + 1;
        let link = LinkTx { id, tx };
        let neighbor = neighbor.to_owned();
        self.tx
            .send(Msg::LinkOpened { neighbor, link })
            .await
            .map_err(|_| Stopped)?;
        Ok((id, rx))
    }

    /// Link `link` to `neighbor` closed.
    pub async fn link_closed(&self, neighbor: &str, link: u64, reason: String) {
        let neighbor = neighbor.to_owned();
        let _ = self.tx.send(Msg::LinkClosed { neighbor, link, reason }).await;
    }

    /// A frame arrived on link `link` from `neighbor`.
    pub async fn frame(&self, neighbor: &str, link: u64, frame: impl Into<Box<pb::Frame>>) -> Result<(), Stopped> {
        let frame = frame.into();
        let received_us = self.now_us();
        // The round trip its echo measures: now, less when our echoed frame left, less how long
        // the peer held it before answering.
        let rtt_ms = (frame.echo_us > 0 && received_us >= frame.echo_us + frame.echo_held_us)
            .then(|| (received_us - frame.echo_us - frame.echo_held_us) as f64 / 1e3);
        let msg = Msg::Frame {
            neighbor: neighbor.to_owned(),
            link,
            frame,
            received_us,
            rtt_ms,
        };
        self.tx.send(msg).await.map_err(|_| Stopped)
    }

    /// A sample of this router: its advert is due.
    pub async fn sample(&self, s: Sample) {
        let _ = self.tx.send(Msg::Sample(Box::new(s))).await;
    }

    /// The admin API's status (the data path's part is the daemon's to fill in); `view`: with
    /// the view.
    pub async fn status(&self, view: bool) -> Result<pb::StatusReply, Stopped> {
        self.ask(|reply| Msg::Status { view, reply }).await
    }

    /// A receiver woken at every new neighborhood.
    pub fn watch(&self) -> watch::Receiver<Arc<Neighborhood>> {
        self.neighborhood.clone()
    }

    /// Withdraws this router from its neighbors and stops the task; returns once the
    /// withdrawals are queued.
    pub async fn shutdown(&self) {
        let _ = self.ask(Msg::Shutdown).await;
    }
}

/// How the dialers reach their neighbors.
pub trait Connector: Clone + Send + Sync + 'static {
    /// A channel to `neighbor` at `address` (plain TCP, or TLS that checks it is `neighbor`),
    /// for the gRPC link of a 2.3 router.
    fn channel(
        &self,
        neighbor: &str,
        address: &str,
        timeout: Duration,
    ) -> impl std::future::Future<Output = Result<Channel, String>> + Send;

    /// A byte stream to `neighbor` at `address`, for a framed link (`crate::link`).
    fn stream(
        &self,
        neighbor: &str,
        address: &str,
        timeout: Duration,
    ) -> impl std::future::Future<Output = Result<Box<dyn crate::link::Io>, String>> + Send;
}

async fn tcp(address: &str, timeout: Duration) -> Result<tokio::net::TcpStream, String> {
    let tcp = tokio::time::timeout(timeout, tokio::net::TcpStream::connect(address))
        .await
        .map_err(|_| format!("cannot connect to {address}: no answer within {timeout:?}"))?
        .map_err(|e| format!("cannot connect to {address}: {e}"))?;
    let _ = tcp.set_nodelay(true);
    Ok(tcp)
}

/// Plain TCP (no TLS).
#[derive(Clone, Debug)]
pub struct Plain;

impl Connector for Plain {
    async fn channel(&self, _neighbor: &str, address: &str, timeout: Duration) -> Result<Channel, String> {
        Endpoint::from_shared(format!("http://{address}"))
            .map_err(|e| format!("bad neighbor address {address:?}: {e}"))?
            .connect_timeout(timeout)
            .tcp_nodelay(true)
            .connect()
            .await
            .map_err(|e| format!("cannot connect to {address}: {}", error_chain(&e)))
    }

    async fn stream(
        &self,
        _neighbor: &str,
        address: &str,
        timeout: Duration,
    ) -> Result<Box<dyn crate::link::Io>, String> {
        Ok(Box::new(tcp(address, timeout).await?))
    }
}

/// Mutual TLS: the neighbor must present a certificate of our CA naming it.
#[derive(Clone, Debug)]
pub struct Tls(pub wuos_pki::TlsContext);

impl Connector for Tls {
    async fn channel(&self, neighbor: &str, address: &str, timeout: Duration) -> Result<Channel, String> {
        let expected = wuos_model::RouterId::new(neighbor).map_err(|e| e.to_string())?;
        Endpoint::from_shared(format!("http://{address}"))
            .map_err(|e| format!("bad neighbor address {address:?}: {e}"))?
            .connect_timeout(timeout)
            .connect_with_connector(wuos_pki::GrpcConnector::new(self.0.clone(), expected, timeout))
            .await
            .map_err(|e| format!("cannot connect to {address}: {}", error_chain(&e)))
    }

    async fn stream(
        &self,
        neighbor: &str,
        address: &str,
        timeout: Duration,
    ) -> Result<Box<dyn crate::link::Io>, String> {
        let expected = wuos_model::RouterId::new(neighbor).map_err(|e| e.to_string())?;
        let addr: std::net::SocketAddr = address
            .parse()
            .map_err(|e| format!("bad neighbor address {address:?}: {e}"))?;
        let (stream, _) = wuos_pki::connect(&self.0, addr, &expected, timeout)
            .await
            .map_err(|e| format!("cannot connect to {address}: {}", error_chain(&e)))?;
        Ok(Box::new(stream))
    }
}

/// Plain TCP or mutual TLS, as configured.
#[derive(Clone, Debug)]
pub enum AnyConnector {
    Plain(Plain),
    Tls(Tls),
}

impl Connector for AnyConnector {
    async fn channel(&self, neighbor: &str, address: &str, timeout: Duration) -> Result<Channel, String> {
        match self {
            AnyConnector::Plain(p) => p.channel(neighbor, address, timeout).await,
            AnyConnector::Tls(t) => t.channel(neighbor, address, timeout).await,
        }
    }

    async fn stream(
        &self,
        neighbor: &str,
        address: &str,
        timeout: Duration,
    ) -> Result<Box<dyn crate::link::Io>, String> {
        match self {
            AnyConnector::Plain(p) => p.stream(neighbor, address, timeout).await,
            AnyConnector::Tls(t) => t.stream(neighbor, address, timeout).await,
        }
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(x) = src {
        s.push_str(": ");
        s.push_str(&x.to_string());
        src = x.source();
    }
    s
}

/// Starts the protocol task and a dialer for each neighbor whose id sorts after ours; the dialers
/// open framed links (`crate::link`) unless `transport` says gRPC. With `liveness`, the links
/// are also watched by ICMP echo (`crate::liveness`).
pub fn spawn(
    instance: Instance,
    clock: Clock,
    metrics: Arc<Metrics>,
    connector: impl Connector,
    transport: LinkTransport,
    liveness: Option<crate::liveness::Watch>,
) -> ProtocolHandle {
    let (tx, rx) = mpsc::channel(4096);
    let (publish, neighborhood) = watch::channel(Arc::new(Neighborhood::default()));
    let hello = Duration::from_millis(u64::from(instance.config().hello_interval_ms));
    let handle = ProtocolHandle {
        tx,
        neighborhood,
        next_link: Arc::new(AtomicU64::new(0)),
        clock,
    };
    let me = instance.router_id().to_owned();
    for n in &instance.config().neighbors {
        if me.as_str() < n.id.as_str() {
            tokio::spawn(dial(
                handle.clone(),
                connector.clone(),
                n.id.clone(),
                n.address.clone(),
                hello,
                metrics.clone(),
                transport,
            ));
        }
    }
    let task = Task {
        instance,
        clock,
        metrics,
        links: HashMap::new(),
        echo: HashMap::new(),
        publish,
        published: None,
        handle: handle.clone(),
        watch: liveness,
        gauges: Vec::new(),
    };
    tokio::spawn(task.run(rx, hello));
    handle
}

/// The latest frame received on a link: its `sent_us` and when it arrived (our µs).
#[derive(Clone, Copy)]
struct Echo {
    peer_sent_us: u64,
    received_us: u64,
}

struct Task {
    instance: Instance,
    clock: Clock,
    metrics: Arc<Metrics>,
    /// The current link to each neighbor that has one.
    links: HashMap<String, LinkTx>,
    echo: HashMap<String, Echo>,
    publish: watch::Sender<Arc<Neighborhood>>,
    /// What the last neighborhood published was made of ([`Instance::neighborhood_key`]).
    published: Option<wuos_proto::neighborhood::NeighborhoodKey>,
    handle: ProtocolHandle,
    /// The links' watch by ICMP echo, when on.
    watch: Option<crate::liveness::Watch>,
    /// The Prometheus gauges of the state machine's counters, in their order (looked up once:
    /// each lookup hashed and allocated the label).
    gauges: Vec<prometheus_client::metrics::gauge::Gauge>,
}

impl Task {
    async fn run(mut self, mut rx: mpsc::Receiver<Msg>, hello: Duration) {
        // The instance says when a tick next matters (a dead interval, a keepalive, an expiry,
        // something queued); the task sleeps until then rather than ticking four times a
        // second — each wake-up of a daemon costs more than the tick's work — but never ticks
        // more often than every quarter beat, nor sleeps longer than a hello interval; the beat
        // is the hello interval, or the telemetry interval when that is shorter (hellos are ten
        // intervals apart while echo watches the links, and view entries must still expire on
        // time). It wakes an eighth of a beat after the deadline (the quarter-beat ticks acted
        // up to a quarter late): a keepalive falls due one interval after the last frame, just
        // when the next sample's frame goes, and the sample must win that race.
        // A forwarding deadline is kept on time, neither graced nor held back by the period
        // (about once an interval at most: its tick sends everything queued), only never closer
        // than 10 ms to the last tick.
        // The ticks wait on a timerfd (`wuos_southbound::timer`), which wakes us once, not on
        // tokio's wheel, which wakes us twice for a deadline more than 64 ms away.
        let beat = hello.min(Duration::from_millis(u64::from(
            self.instance.config().telemetry_interval_ms,
        )));
        let period = (beat / 4).max(Duration::from_millis(10));
        let grace = beat / 8;
        let mut last_tick = tokio::time::Instant::now();
        let mut timer = match wuos_southbound::timer::Precise::new() {
            Ok(t) => Some(t),
            Err(e) => {
                warn!(error = %e, "no timerfd: the protocol's ticks use tokio's timer");
                None
            }
        };
        loop {
            let now = tokio::time::Instant::now();
            let origin = tokio::time::Instant::from_std(self.clock.origin());
            let due = self.instance.next_tick_ms().map_or(now + hello, |ms| {
                let at = origin + Duration::from_millis(ms) + grace;
                at.min(now + hello)
            });
            let mut at = due.max(last_tick + period);
            if let Some(ms) = self.instance.next_deadline_ms() {
                at = at.min((origin + Duration::from_millis(ms)).max(last_tick + Duration::from_millis(10)));
            }
            let sleep = async {
                match &mut timer {
                    Some(t) => {
                        if let Err(e) = t.sleep_until(at).await {
                            warn!(error = %e, "the timerfd failed: the protocol's ticks use tokio's timer");
                            timer = None;
                            tokio::time::sleep_until(at).await;
                        }
                    }
                    None => tokio::time::sleep_until(at).await,
                }
            };
            let msg = tokio::select! {
                _ = sleep => {
                    last_tick = tokio::time::Instant::now();
                    None
                }
                m = rx.recv() => match m {
                    Some(m) => Some(m),
                    None => return,
                },
            };
            let now_ms = self.clock.now_ms();
            let (actions, publish) = match msg {
                None => (self.instance.process(Input::Tick { now_ms }), false),
                Some(Msg::LinkOpened { neighbor, link }) => {
                    if let Some(old) = self.links.insert(neighbor.clone(), link) {
                        debug!(%neighbor, old = old.id, "a new link replaces the old one");
                    }
                    self.echo.remove(&neighbor);
                    if let Some(w) = &mut self.watch {
                        w.opened(&neighbor, std::time::Instant::now());
                    }
                    (self.instance.process(Input::LinkOpened { now_ms, neighbor }), false)
                }
                Some(Msg::LinkClosed { neighbor, link, reason }) => {
                    if self.links.get(&neighbor).is_none_or(|l| l.id != link) {
                        // An old link, already replaced or closed by us.
                        continue;
                    }
                    self.forget(&neighbor);
                    let input = Input::LinkClosed {
                        now_ms,
                        neighbor,
                        reason,
                    };
                    (self.instance.process(input), false)
                }
                Some(Msg::Frame {
                    neighbor,
                    link,
                    frame,
                    received_us,
                    rtt_ms,
                }) => {
                    if self.links.get(&neighbor).is_none_or(|l| l.id != link) {
                        continue;
                    }
                    self.echo.insert(
                        neighbor.clone(),
                        Echo {
                            peer_sent_us: frame.sent_us,
                            received_us,
                        },
                    );
                    if let Some(w) = &mut self.watch {
                        w.heard(&neighbor, std::time::Instant::now());
                    }
                    let (actions, r) = self.instance.on_frame(now_ms, &neighbor, &frame, rtt_ms);
                    if let Err(e) = r {
                        self.metrics.reject(e.reason());
                        warn!(%neighbor, reason = %e, "refused a frame");
                        if e.reason() == "version" {
                            self.close(&neighbor, format!("refused: {e}"));
                        }
                    }
                    (actions, false)
                }
                Some(Msg::Sample(s)) => {
                    let s = *s;
                    let mut a = self.instance.process(Input::Sample {
                        now_ms,
                        timestamp_unix_ns: s.timestamp_unix_ns,
                        resources: s.resources,
                        links: s.links,
                        services: s.services,
                        demand: s.demand,
                        region: s.region,
                        placements: s.placements,
                        sdwan: s.sdwan,
                    });
                    a.extend(self.watch_links(now_ms));
                    // Prometheus's copy of the counters, once per sample (a scrape sees them at
                    // most one interval old).
                    self.mirror_counters();
                    (a, true)
                }
                Some(Msg::Status { view, reply }) => {
                    let _ = reply.send(if view {
                        self.instance.status(now_ms, unix_ns())
                    } else {
                        self.instance.status_without_view(now_ms)
                    });
                    continue;
                }
                Some(Msg::Shutdown(done)) => {
                    let a = self.instance.process(Input::Shutdown { now_ms });
                    self.apply(now_ms, a);
                    let _ = done.send(());
                    return;
                }
            };
            let view_changed = self.apply(now_ms, actions);
            if publish || view_changed {
                // Every publication wakes the consumers (the controller's reconcile and the TLS
                // files' look ride it), but a neighborhood made of the same entries is published
                // again rather than rebuilt.
                let key = self.instance.neighborhood_key(now_ms);
                if self.published == Some(key) {
                    self.publish.send_modify(|_| {});
                } else {
                    let n = self.instance.neighborhood(now_ms, unix_ns());
                    self.publish.send_replace(Arc::new(n));
                    self.published = Some(key);
                }
            }
        }
    }

    /// Carries out the state machine's actions — frames queued to links, links closed, events
    /// logged — and what a link that failed meanwhile causes. Returns whether the view changed.
    fn apply(&mut self, now_ms: u64, actions: Vec<Action>) -> bool {
        let mut view_changed = false;
        let mut pending = actions;
        while !pending.is_empty() {
            let mut broken = Vec::new();
            for a in pending {
                match a {
                    Action::SendFrame { neighbor, frame } => {
                        if let Err(reason) = self.send(&neighbor, *frame) {
                            broken.push((neighbor, reason));
                        }
                    }
                    Action::CloseLink { neighbor, reason } => self.close(&neighbor, reason),
                    Action::NeighborUp { neighbor } => info!(%neighbor, "neighbor up"),
                    Action::NeighborDown { neighbor, reason } => warn!(%neighbor, %reason, "neighbor down"),
                    Action::ViewAdded { origin } => {
                        debug!(%origin, "view: added");
                        view_changed = true;
                    }
                    Action::ViewWithdrawn { origin, reason } => {
                        info!(%origin, %reason, "view: withdrawn");
                        view_changed = true;
                    }
                }
            }
            pending = Vec::new();
            for (neighbor, reason) in broken {
                if self.forget(&neighbor) {
                    warn!(%neighbor, %reason, "closing the link");
                    pending.extend(self.instance.process(Input::LinkClosed {
                        now_ms,
                        neighbor,
                        reason,
                    }));
                }
            }
        }
        view_changed
    }

    /// Stamps `frame` for the round-trip measurement and queues it on the neighbor's link.
    fn send(&mut self, neighbor: &str, mut frame: pb::Frame) -> Result<(), String> {
        let Some(link) = self.links.get(neighbor) else {
            return Err("no link".into());
        };
        let now_us = self.handle.now_us();
        frame.sent_us = now_us;
        if let Some(e) = self.echo.get(neighbor) {
            frame.echo_us = e.peer_sent_us;
            frame.echo_held_us = now_us.saturating_sub(e.received_us);
        }
        let len = frame.encoded_len();
        match link.tx.try_send(frame) {
            Ok(()) => {
                self.metrics.bytes("sent", len);
                Ok(())
            }
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.metrics.reject("send_queue_full");
                Err(format!("{LINK_QUEUE} frames waiting: the neighbor does not read"))
            }
            Err(mpsc::error::TrySendError::Closed(_)) => Err("the link's stream ended".into()),
        }
    }

    /// Drops the link's queue: its stream ends, the peer sees the link close.
    fn close(&mut self, neighbor: &str, reason: String) {
        if self.forget(neighbor) {
            info!(%neighbor, %reason, "link closed");
        }
    }

    /// Forgets the link to `neighbor` everywhere the task keeps it (its queue, the round-trip
    /// stamps, the echo watch); whether there was one.
    fn forget(&mut self, neighbor: &str) -> bool {
        if let Some(w) = &mut self.watch {
            w.closed(neighbor);
        }
        self.echo.remove(neighbor);
        self.links.remove(neighbor).is_some()
    }

    /// At a sample, with the links watched by echo: closes the links found silent (their
    /// neighbors are lost at once) and probes the others; what the instance says of the losses.
    fn watch_links(&mut self, now_ms: u64) -> Vec<Action> {
        let Some(w) = &mut self.watch else {
            return Vec::new();
        };
        let mut actions = Vec::new();
        for (neighbor, reason) in w.check(std::time::Instant::now()) {
            actions.extend(self.instance.process(Input::LinkClosed {
                now_ms,
                neighbor: neighbor.clone(),
                reason: reason.clone(),
            }));
            self.close(&neighbor, reason);
        }
        actions
    }

    /// The state machine's counters into the Prometheus gauges.
    fn mirror_counters(&mut self) {
        let m = &self.metrics;
        m.neighbors_up
            .set(self.instance.neighbors().filter(|n| n.is_up()).count() as i64);
        m.view_entries.set(self.instance.view().len() as i64);
        let values = self.instance.counters().values();
        if self.gauges.len() != values.len() {
            self.gauges = values
                .iter()
                .map(|(name, _)| {
                    m.protocol_events
                        .get_or_create(&crate::metrics::NameLabel { name: name.to_string() })
                        .clone()
                })
                .collect();
        }
        for (g, (_, value)) in self.gauges.iter().zip(values) {
            g.set(value as i64);
        }
    }
}

/// Reads a link's frames into the protocol task until the stream ends; then reports the close.
pub async fn read_link(
    protocol: ProtocolHandle,
    metrics: Arc<Metrics>,
    neighbor: String,
    link: u64,
    mut inbound: tonic::Streaming<pb::Frame>,
) {
    let reason = loop {
        match inbound.message().await {
            Ok(Some(frame)) => {
                let len = frame.encoded_len();
                metrics.bytes("received", len);
                if len > MAX_MESSAGE_BYTES {
                    metrics.reject("too_large");
                    break format!("a frame of {len} bytes, the limit is {MAX_MESSAGE_BYTES}");
                }
                if protocol.frame(&neighbor, link, frame).await.is_err() {
                    return;
                }
            }
            Ok(None) => break "closed by the peer".to_string(),
            Err(status) => break format!("stream error: {}", status.message()),
        }
    };
    protocol.link_closed(&neighbor, link, reason).await;
}

/// Runs an open framed link (`crate::link`) until either side ends it, in one task (the halves are
/// polled together, so a peer that stops reading cannot stop us reading): frames read go to the protocol task, frames
/// queued in `rx` go out. Reports the close to the protocol task (which ignores it for a link it
/// closed itself).
pub async fn run_framed(
    io: impl crate::link::Io,
    protocol: ProtocolHandle,
    metrics: Arc<Metrics>,
    neighbor: String,
    link: u64,
    rx: mpsc::Receiver<pb::Frame>,
) {
    let (r, w) = tokio::io::split(io);
    let reason = tokio::select! {
        r = read_loop(r, &protocol, &metrics, &neighbor, link) => match r {
            Some(reason) => reason,
            None => return,
        },
        reason = crate::link::write_loop(w, rx) => reason,
    };
    protocol.link_closed(&neighbor, link, reason).await;
}

/// Reads records into the protocol task; the reason the link ended, or `None` when the protocol
/// task is gone.
async fn read_loop(
    r: impl tokio::io::AsyncRead + Unpin,
    protocol: &ProtocolHandle,
    metrics: &Metrics,
    neighbor: &str,
    link: u64,
) -> Option<String> {
    let mut r = tokio::io::BufReader::with_capacity(16 * 1024, r);
    let mut buf = Vec::new();
    let mut heard = false;
    loop {
        match crate::link::read_record(&mut r, &mut buf).await {
            Ok(Some(crate::link::Record::Frame(frame, len))) => {
                heard = true;
                metrics.bytes("received", len);
                protocol.frame(neighbor, link, frame).await.ok()?;
            }
            // Before its first frame, a close is the server refusing our first frame.
            Ok(Some(crate::link::Record::Close(reason))) if !heard => {
                return Some(format!("{neighbor} refused the link: {reason}"));
            }
            Ok(Some(crate::link::Record::Close(reason))) => return Some(format!("closed by the peer: {reason}")),
            Ok(None) => return Some("closed by the peer".into()),
            Err(e) => {
                if let Some(label) = e.label() {
                    metrics.reject(label);
                }
                return Some(e.to_string());
            }
        }
    }
}

/// Keeps a link to `neighbor` open (we dial it: its id sorts after ours): connects, opens
/// `Neighbor.Link`, reads it until it ends, and tries again — at once after a link that was up
/// ended (a restarted neighbor is back within a round trip of listening again), then with pauses
/// doubling from 50 ms up to a hello interval (at most 1 s), and only every ten hello intervals
/// while the neighbor speaks protocol 1.x.
async fn dial(
    protocol: ProtocolHandle,
    connector: impl Connector,
    neighbor: String,
    address: String,
    hello: Duration,
    metrics: Arc<Metrics>,
    transport: LinkTransport,
) {
    let timeout = hello.clamp(Duration::from_millis(50), Duration::from_secs(2));
    let longest = hello.min(Duration::from_secs(1));
    let first = Duration::from_millis(50).min(longest);
    let mut pause = first;
    let mut quiet = false;
    loop {
        let t0 = std::time::Instant::now();
        let opened = match transport {
            LinkTransport::Framed => open(&protocol, &connector, &neighbor, &address, timeout, &metrics).await,
            LinkTransport::Grpc => open_grpc(&protocol, &connector, &neighbor, &address, timeout, &metrics).await,
        };
        match opened {
            // A link that lived: dial again at once. One that ended at once (the peer refuses
            // it as soon as it is open) backs off like a failure.
            Ok(()) if t0.elapsed() >= longest => {
                quiet = false;
                pause = first;
                continue;
            }
            Ok(()) => {}
            Err(DialError::Old(e)) => {
                metrics.reject("peer_version");
                warn!(%neighbor, %address, "{e}");
                tokio::time::sleep(hello * 10).await;
                continue;
            }
            Err(DialError::Other(e)) => {
                // A neighbor that is down fails every time: say so once until it works.
                if !quiet {
                    info!(%neighbor, %address, error = %e, "cannot open the link; retrying");
                    quiet = true;
                }
            }
            Err(DialError::Stopped) => return,
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(longest);
    }
}

enum DialError {
    /// The neighbor speaks protocol 1.x.
    Old(String),
    Other(String),
    Stopped,
}

/// One link's life on the dialling side; returns when it ends. A framed link first; the gRPC
/// `Neighbor.Link` when the neighbor does not answer the framed opening (it runs 2.3 or older).
async fn open(
    protocol: &ProtocolHandle,
    connector: &impl Connector,
    neighbor: &str,
    address: &str,
    timeout: Duration,
    metrics: &Arc<Metrics>,
) -> Result<(), DialError> {
    let io = connector
        .stream(neighbor, address, timeout)
        .await
        .map_err(DialError::Other)?;
    match crate::link::open(io, timeout).await.map_err(DialError::Other)? {
        crate::link::Opening::Framed(io) => {
            let (id, rx) = protocol.open_link(neighbor).await.map_err(|_| DialError::Stopped)?;
            metrics.link_opened("framed");
            run_framed(io, protocol.clone(), metrics.clone(), neighbor.to_owned(), id, rx).await;
            Ok(())
        }
        crate::link::Opening::NotFramed => {
            debug!(%neighbor, "no framed link: opening the gRPC one (a 2.3 router)");
            open_grpc(protocol, connector, neighbor, address, timeout, metrics).await
        }
    }
}

/// A gRPC `Neighbor.Link` (protocol 2.0–2.3).
async fn open_grpc(
    protocol: &ProtocolHandle,
    connector: &impl Connector,
    neighbor: &str,
    address: &str,
    timeout: Duration,
    metrics: &Arc<Metrics>,
) -> Result<(), DialError> {
    let channel = connector
        .channel(neighbor, address, timeout)
        .await
        .map_err(DialError::Other)?;
    let mut client = NeighborClient::new(channel).max_decoding_message_size(4 * MAX_MESSAGE_BYTES);
    // The call returns once the server answers the stream's headers.
    let (id, rx) = protocol.open_link(neighbor).await.map_err(|_| DialError::Stopped)?;
    let inbound = match client.link(tokio_stream::wrappers::ReceiverStream::new(rx)).await {
        Ok(r) => r.into_inner(),
        Err(status) => {
            let reason = if status.code() == tonic::Code::Unimplemented {
                format!("{neighbor} does not serve Neighbor.Link: it speaks protocol 1.x, this router 2.x; upgrade it")
            } else {
                format!("{neighbor} refused the link: {}", status.message())
            };
            protocol.link_closed(neighbor, id, reason.clone()).await;
            return Err(if status.code() == tonic::Code::Unimplemented {
                DialError::Old(reason)
            } else {
                DialError::Other(reason)
            });
        }
    };
    metrics.link_opened("grpc");
    read_link(protocol.clone(), metrics.clone(), neighbor.to_owned(), id, inbound).await;
    Ok(())
}
