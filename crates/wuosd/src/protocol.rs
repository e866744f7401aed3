//! The protocol component: one task owns the augmented SD-WAN protocol's state machine
//! ([`wuos_proto::Instance`]) and everything comes to it as a message; it sends to neighbors
//! through one queue and worker per neighbor, and publishes the typed [`Neighborhood`] for the
//! orchestrator and the controller.
//!
//! ```text
//!  Neighbor gRPC (hello, flood) ──ProtoMsg + oneshot reply──▶ ┌──────────────────┐
//!  sampler ──────────────────────ProtoMsg::Sample───────────▶ │ protocol task    │──▶ watch<Neighborhood>
//!  peer workers ─────────────────Answered / Unanswered───────▶ │ owns Instance    │
//!  ticker (hello interval / 4) ──────────────────────────────▶ └──────────────────┘
//!        ▲                                                            │ SendHello / SendFlood
//!        └──────────── one queue + worker per neighbor ◀──────────────┘
//! ```

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use prost::Message;
use tokio::sync::{mpsc, oneshot, watch};
use tonic::transport::{Channel, Endpoint};
use tracing::{debug, info, warn};
use wuos_proto::neighborhood::Neighborhood;
use wuos_proto::pb;
use wuos_proto::pb::neighbor_client::NeighborClient;
use wuos_proto::{Action, Input, Instance, MAX_MESSAGE_BYTES, ValidateError};

use crate::clock::{Clock, unix_ns};
use crate::metrics::Metrics;

/// What a sample of the router brings to its advert.
#[derive(Clone, Debug, Default)]
pub struct Sample {
    pub timestamp_unix_ns: i64,
    pub resources: pb::Resources,
    pub links: Vec<pb::LinkMetrics>,
    pub services: Vec<pb::ServiceInstance>,
    pub demand: Vec<pb::ServiceDemand>,
}

enum Msg {
    Hello {
        hello: pb::Hello,
        reply: oneshot::Sender<Result<pb::HelloReply, ValidateError>>,
    },
    Flood {
        request: pb::FloodRequest,
        reply: oneshot::Sender<Result<pb::FloodReply, ValidateError>>,
    },
    Answered {
        neighbor: String,
        reply: pb::HelloReply,
        rtt_ms: f64,
    },
    Unanswered {
        neighbor: String,
    },
    Sample(Box<Sample>),
    Status(oneshot::Sender<pb::StatusReply>),
    Shutdown(oneshot::Sender<()>),
}

enum Outgoing {
    Hello(pb::Hello),
    Flood(pb::FloodRequest),
}

/// The door into the protocol task; cheap to clone.
#[derive(Clone, Debug)]
pub struct ProtocolHandle {
    tx: mpsc::Sender<Msg>,
    neighborhood: watch::Receiver<Arc<Neighborhood>>,
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

    /// Server side of `Neighbor.Hello`.
    pub async fn hello(&self, hello: pb::Hello) -> Result<Result<pb::HelloReply, ValidateError>, Stopped> {
        self.ask(|reply| Msg::Hello { hello, reply }).await
    }

    /// Server side of `Neighbor.Flood`.
    pub async fn flood(&self, request: pb::FloodRequest) -> Result<Result<pb::FloodReply, ValidateError>, Stopped> {
        self.ask(|reply| Msg::Flood { request, reply }).await
    }

    /// A sample of this router: its advert is due.
    pub async fn sample(&self, s: Sample) {
        let _ = self.tx.send(Msg::Sample(Box::new(s))).await;
    }

    /// The admin API's status (the data path's part is the daemon's to fill in).
    pub async fn status(&self) -> Result<pb::StatusReply, Stopped> {
        self.ask(Msg::Status).await
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

/// Starts the protocol task and one worker per neighbor.
pub fn spawn(instance: Instance, clock: Clock, metrics: Arc<Metrics>) -> ProtocolHandle {
    let (tx, rx) = mpsc::channel(1024);
    let (publish, neighborhood) = watch::channel(Arc::new(Neighborhood::default()));
    let hello = Duration::from_millis(u64::from(instance.config().hello_interval_ms));
    let mut peers = HashMap::new();
    for n in &instance.config().neighbors {
        let (ptx, prx) = mpsc::channel(64);
        peers.insert(n.id.clone(), ptx);
        tokio::spawn(peer_worker(
            tx.clone(),
            n.id.clone(),
            n.address.clone(),
            hello,
            metrics.clone(),
            prx,
        ));
    }
    let task = Task {
        instance,
        clock,
        metrics,
        peers,
        publish,
    };
    tokio::spawn(task.run(rx, hello));
    ProtocolHandle { tx, neighborhood }
}

struct Task {
    instance: Instance,
    clock: Clock,
    metrics: Arc<Metrics>,
    peers: HashMap<String, mpsc::Sender<Outgoing>>,
    publish: watch::Sender<Arc<Neighborhood>>,
}

impl Task {
    async fn run(mut self, mut rx: mpsc::Receiver<Msg>, hello: Duration) {
        let mut tick = tokio::time::interval((hello / 4).max(Duration::from_millis(10)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let msg = tokio::select! {
                _ = tick.tick() => None,
                m = rx.recv() => match m {
                    Some(m) => Some(m),
                    None => return,
                },
            };
            let now_ms = self.clock.now_ms();
            let (actions, publish) = match msg {
                None => {
                    let a = self.instance.process(Input::Tick { now_ms });
                    self.mirror_counters();
                    (a, false)
                }
                Some(Msg::Hello { hello, reply }) => {
                    let r = self.instance.on_hello(now_ms, &hello);
                    let (answer, actions) = split(r);
                    if let Ok(a) = &answer {
                        self.metrics.bytes("sent", a.encoded_len());
                    }
                    let _ = reply.send(answer);
                    (actions, false)
                }
                Some(Msg::Flood { request, reply }) => {
                    let (answer, actions) = split(self.instance.on_flood(now_ms, &request));
                    let _ = reply.send(answer);
                    (actions, false)
                }
                Some(Msg::Answered {
                    neighbor,
                    reply,
                    rtt_ms,
                }) => (
                    self.instance.process(Input::HelloAnswered {
                        now_ms,
                        neighbor,
                        reply,
                        rtt_ms,
                    }),
                    false,
                ),
                Some(Msg::Unanswered { neighbor }) => {
                    (self.instance.process(Input::HelloFailed { now_ms, neighbor }), false)
                }
                Some(Msg::Sample(s)) => {
                    let s = *s;
                    let a = self.instance.process(Input::Sample {
                        now_ms,
                        timestamp_unix_ns: s.timestamp_unix_ns,
                        resources: s.resources,
                        links: s.links,
                        services: s.services,
                        demand: s.demand,
                    });
                    (a, true)
                }
                Some(Msg::Status(reply)) => {
                    let _ = reply.send(self.instance.status(now_ms, unix_ns()));
                    continue;
                }
                Some(Msg::Shutdown(done)) => {
                    let a = self.instance.process(Input::Shutdown { now_ms });
                    self.apply(a);
                    let _ = done.send(());
                    return;
                }
            };
            let view_changed = self.apply(actions);
            if publish || view_changed {
                let n = self.instance.neighborhood(now_ms, unix_ns());
                self.publish.send_replace(Arc::new(n));
            }
        }
    }

    /// Carries out the state machine's actions: messages queued to neighbors, events logged.
    /// Returns whether the view changed.
    fn apply(&mut self, actions: Vec<Action>) -> bool {
        let mut view_changed = false;
        for a in actions {
            match a {
                Action::SendHello { neighbor, hello } => self.send(&neighbor, Outgoing::Hello(hello)),
                Action::SendFlood { neighbor, request } => self.send(&neighbor, Outgoing::Flood(request)),
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
        view_changed
    }

    fn send(&self, neighbor: &str, msg: Outgoing) {
        match self.peers.get(neighbor) {
            Some(q) => {
                if q.try_send(msg).is_err() {
                    self.metrics.reject("send queue full");
                }
            }
            None => warn!(%neighbor, "state machine addressed an unconfigured neighbor"),
        }
    }

    /// The state machine's counters into the Prometheus gauges.
    fn mirror_counters(&self) {
        let m = &self.metrics;
        m.neighbors_up
            .set(self.instance.neighbors().filter(|n| n.is_up()).count() as i64);
        m.view_entries.set(self.instance.view().iter().count() as i64);
        for (name, value) in self.instance.counters().values() {
            m.protocol_events
                .get_or_create(&crate::metrics::NameLabel { name: name.to_string() })
                .set(value as i64);
        }
    }
}

fn split<T>(r: Result<(T, Vec<Action>), ValidateError>) -> (Result<T, ValidateError>, Vec<Action>) {
    match r {
        Ok((t, a)) => (Ok(t), a),
        Err(e) => (Err(e), Vec::new()),
    }
}

/// Sends queued messages to one neighbor, in order, one at a time; hello outcomes go back to the
/// protocol task.
async fn peer_worker(
    protocol: mpsc::Sender<Msg>,
    id: String,
    address: String,
    hello: Duration,
    metrics: Arc<Metrics>,
    mut rx: mpsc::Receiver<Outgoing>,
) {
    // A hello not answered within its interval (at least 50 ms, at most 2 s) is lost.
    let timeout = hello.clamp(Duration::from_millis(50), Duration::from_secs(2));
    let channel: Channel = match Endpoint::from_shared(format!("http://{address}")) {
        Ok(e) => e
            .connect_timeout(timeout)
            .timeout(timeout)
            .tcp_nodelay(true)
            .connect_lazy(),
        Err(e) => {
            warn!(neighbor = %id, %address, error = %e, "bad neighbor address");
            return;
        }
    };
    let mut client = NeighborClient::new(channel).max_decoding_message_size(MAX_MESSAGE_BYTES);
    while let Some(msg) = rx.recv().await {
        match msg {
            Outgoing::Hello(h) => {
                metrics.bytes("sent", h.encoded_len());
                let t0 = Instant::now();
                let r = client.hello(h).await;
                let rtt_ms = t0.elapsed().as_secs_f64() * 1e3;
                let msg = match r {
                    Ok(reply) => {
                        let reply = reply.into_inner();
                        metrics.bytes("received", reply.encoded_len());
                        Msg::Answered {
                            neighbor: id.clone(),
                            reply,
                            rtt_ms,
                        }
                    }
                    Err(status) => {
                        debug!(neighbor = %id, error = %status.message(), "hello failed");
                        Msg::Unanswered { neighbor: id.clone() }
                    }
                };
                if protocol.send(msg).await.is_err() {
                    return;
                }
            }
            Outgoing::Flood(f) => {
                metrics.bytes("sent", f.encoded_len());
                if let Err(status) = client.flood(f).await {
                    debug!(neighbor = %id, error = %status.message(), "flood failed");
                }
            }
        }
    }
}
