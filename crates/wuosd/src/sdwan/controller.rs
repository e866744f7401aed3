//! The SD-WAN controller component (on the designated router): the desired overlays and
//! classes, changed only by [`Action`]s from the NBI, persisted; each change realised per edge,
//! cut into pieces, and the pieces that changed sent to the edges over `Control` sessions (the
//! SBI); each edge's answers tracked, so the status says which edge holds which generation.
//!
//! ```text
//!  NBI (REST, gRPC) ──Act(action)──▶ controller task ──▶ store: sdwan/desired, sdwan/sent/EDGE
//!                   ◀─ generation ─┤ Desired::apply (refused: nothing changes)
//!                                  │ per edge: realise → split → changed pieces
//!                                  ├──▶ Links: Control session per edge ──▶ edge's wuosd
//!  Reply{edge, intent, outcome} ───┘◀──────────── Ack / IntentError ◀──────────┘
//!  every RETRY_EVERY: edges with an error or an unanswered piece get their pieces again
//! ```
//!
//! After a restart the controller knows the desired state and the keys of the pieces it had
//! sent, not whether they arrived: it sends every edge all its pieces (and removes the keys that
//! went away); an edge that already holds them changes nothing.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot, watch};
use tracing::{info, warn};
use wuos_model::RouterId;
use wuos_proto::neighborhood::Neighborhood;
use wuos_proto::pb;
use wuos_sdwan::slice::{Slices, changed, split};
use wuos_sdwan::{Action, Desired, EdgeConfig, Inventory, SdwanError};

use crate::delivery::Links;
use crate::metrics::Metrics;
use crate::orchestration::Reply;
use crate::protocol::AnyConnector;
use crate::sdwan::edge::{EdgeHandle, Piece};
use crate::store::Store;

/// How long a piece may go unanswered, or an edge stay in error, before its pieces are sent
/// again.
pub const RETRY_EVERY: Duration = Duration::from_secs(5);
/// At most this many pieces per batch (the protocol's limit is 256 intents).
const BATCH_PIECES: usize = 200;
/// At most about this many bytes of pieces per batch (a Control envelope may be 256 KiB).
const BATCH_BYTES: usize = 160 * 1024;

const DESIRED_KEY: &str = "sdwan/desired";
const SENT_PREFIX: &str = "sdwan/sent/";

/// A tunnel of an edge, as the controller configured it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TunnelStatus {
    pub name: String,
    pub overlay: String,
    pub underlay: String,
    pub vni: u32,
    /// The remote sites it reaches.
    pub peers: Vec<String>,
}

/// One edge, as the controller sees it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct EdgeStatus {
    /// The edge has answered every piece of the latest generation, without an error.
    pub in_sync: bool,
    /// The newest generation the edge is known to hold entirely.
    pub synced_generation: u64,
    /// Pieces sent and not yet answered.
    pub pending: usize,
    /// The last failure (delivery or apply), until the edge holds its pieces.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub tunnels: Vec<TunnelStatus>,
    /// Class → the overlay it rides, for the classes marked on this edge.
    pub classes: BTreeMap<String, String>,
    /// Remote LAN prefixes no tunnel of this edge reaches, and why.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unreachable: Vec<String>,
    /// What the edge's own adverts say of its tunnels, when they reach the controller (within
    /// the flooding radius).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub advertised: Option<Advertised>,
}

/// An edge's SD-WAN state as its adverts carry it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Advertised {
    /// Hops from the controller.
    pub hops: u32,
    pub generation: u64,
    pub tunnels: u32,
    pub tunnels_up: u32,
    pub failed_ops: u32,
    /// Tunnels it reports down (at most 64 listed).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub down: Vec<String>,
    /// The paths it monitors, with their figures (protocol 2.2; at most 64 listed, those down
    /// first, of `paths_total`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub paths: Vec<AdvertisedPath>,
    #[serde(default)]
    pub paths_total: u32,
    /// Where its steered classes go (at most 64 listed, those whose SLA is not met first, of
    /// `steering_total`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub steering: Vec<AdvertisedSteering>,
    #[serde(default)]
    pub steering_total: u32,
}

/// A path an edge monitors, as its adverts carry it (figures rounded to 0.1).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AdvertisedPath {
    pub overlay: String,
    pub underlay: String,
    pub site: String,
    pub up: bool,
    /// Round trip (ms); absent before the first answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rtt_ms: Option<f64>,
    pub loss_pct: f64,
    pub jitter_ms: f64,
}

/// Where a steered class goes towards a site, as the edge's adverts carry it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AdvertisedSteering {
    pub class: String,
    pub site: String,
    /// `OVERLAY/UNDERLAY`, several when balanced.
    pub paths: Vec<String>,
    /// Whether its SLA is met (absent: not known yet).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub met: Option<bool>,
}

impl From<pb::PathState> for AdvertisedPath {
    fn from(p: pb::PathState) -> Self {
        AdvertisedPath {
            overlay: p.overlay,
            underlay: p.underlay,
            site: p.site,
            up: p.up,
            rtt_ms: p.rtt_ms,
            loss_pct: p.loss_pct,
            jitter_ms: p.jitter_ms,
        }
    }
}

impl From<AdvertisedPath> for pb::PathState {
    fn from(p: AdvertisedPath) -> Self {
        pb::PathState {
            overlay: p.overlay,
            underlay: p.underlay,
            site: p.site,
            up: p.up,
            rtt_ms: p.rtt_ms,
            loss_pct: p.loss_pct,
            jitter_ms: p.jitter_ms,
        }
    }
}

impl From<pb::SteerState> for AdvertisedSteering {
    fn from(c: pb::SteerState) -> Self {
        AdvertisedSteering {
            class: c.class_name,
            site: c.site,
            paths: c.paths,
            met: c.met,
        }
    }
}

impl From<AdvertisedSteering> for pb::SteerState {
    fn from(c: AdvertisedSteering) -> Self {
        pb::SteerState {
            class_name: c.class,
            site: c.site,
            paths: c.paths,
            met: c.met,
        }
    }
}

/// The SD-WAN as the controller sees it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Status {
    /// The desired state's generation: one more for every accepted action.
    pub generation: u64,
    pub overlays: usize,
    pub classes: usize,
    /// Site → its status.
    pub edges: BTreeMap<String, EdgeStatus>,
}

/// Why a list of actions was not carried out (nothing changed).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// Action `index` (from 0) was refused.
    #[error("action {index}: {error}")]
    Action { index: usize, error: SdwanError },
    /// The change could not be persisted.
    #[error("cannot persist the change, nothing changed: {0}")]
    Store(String),
}

impl Refused {
    /// What to tell the caller: a single action's error alone, otherwise which action and why.
    pub fn message(&self) -> String {
        match self {
            Refused::Action { index: 0, error } => error.to_string(),
            r => r.to_string(),
        }
    }
}

enum Msg {
    Act(Vec<Action>, oneshot::Sender<Result<u64, Refused>>),
    Desired(oneshot::Sender<(u64, Desired)>),
    Status(oneshot::Sender<Status>),
}

/// The door into the controller task; cheap to clone.
#[derive(Clone, Debug)]
pub struct SdwanHandle {
    tx: mpsc::Sender<Msg>,
    inventory: Arc<Inventory>,
}

/// The controller task is gone (the daemon is stopping).
#[derive(Debug, thiserror::Error)]
#[error("the SD-WAN controller is not running")]
pub struct Stopped;

impl SdwanHandle {
    /// Carries out `actions`, all or none: the new generation, or which one was refused and why
    /// (then nothing changed).
    pub async fn act(&self, actions: Vec<Action>) -> Result<Result<u64, Refused>, Stopped> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(Msg::Act(actions, reply)).await.map_err(|_| Stopped)?;
        rx.await.map_err(|_| Stopped)
    }

    /// The generation and the desired state.
    pub async fn desired(&self) -> Result<(u64, Desired), Stopped> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(Msg::Desired(reply)).await.map_err(|_| Stopped)?;
        rx.await.map_err(|_| Stopped)
    }

    pub async fn status(&self) -> Result<Status, Stopped> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(Msg::Status(reply)).await.map_err(|_| Stopped)?;
        rx.await.map_err(|_| Stopped)
    }

    pub fn inventory(&self) -> &Inventory {
        &self.inventory
    }
}

/// What the controller works with.
pub struct Parts {
    pub me: RouterId,
    pub inventory: Inventory,
    pub store: Arc<Store>,
    /// Plain TCP or mutual TLS to the edges' `Control` services.
    pub connector: AnyConnector,
    pub metrics: Arc<Metrics>,
    /// Numbers the sessions to the edges (the boot id).
    pub session_id: u64,
    /// This router's own edge component (when the controller's router is a site too).
    pub local_edge: EdgeHandle,
    /// For the control addresses of sites the inventory gives none for.
    pub neighborhood: watch::Receiver<Arc<Neighborhood>>,
}

#[derive(Default)]
struct Track {
    /// The pieces the edge was last told to hold.
    sent: Slices,
    /// Remote LAN prefixes no tunnel of the edge reaches, and why (from the last realisation).
    unreachable: Vec<String>,
    /// Intent id → when it was sent.
    pending: BTreeMap<u64, Instant>,
    /// The newest generation the edge is known to hold entirely.
    synced: u64,
    error: Option<String>,
}

struct Ctl {
    me: RouterId,
    inv: Arc<Inventory>,
    store: Arc<Store>,
    links: Links,
    local_edge: EdgeHandle,
    local_answers: mpsc::Sender<crate::controller::Answer>,
    neighborhood: watch::Receiver<Arc<Neighborhood>>,
    desired: Desired,
    generation: u64,
    edges: BTreeMap<String, Track>,
    next_id: u64,
}

impl Ctl {
    /// The edge's pieces, and the prefixes it cannot reach.
    fn pieces_of(&self, site: &str) -> (Slices, Vec<String>) {
        let config = EdgeConfig::realise(&self.desired, &self.inv, site);
        (split(&config, &self.desired), config.unreachable)
    }

    fn address_of(&self, site: &str) -> Option<SocketAddr> {
        self.inv.sites.get(site).and_then(|s| s.control).or_else(|| {
            let n = self.neighborhood.borrow();
            n.get(site).and_then(|r| r.control_address)
        })
    }

    /// Persists the desired state (before it is sent: what an edge is told is never lost).
    fn persist(&self) -> Result<(), String> {
        let desired = serde_json::to_vec(&(self.generation, &self.desired)).map_err(|e| e.to_string())?;
        self.store
            .update(&[(DESIRED_KEY, &desired)], &[])
            .map_err(|e| e.to_string())
    }

    /// Persists the keys of the pieces sent to `sites` (after a restart, the keys that went away
    /// are removed from those edges).
    fn persist_sent(&self, sites: &[String]) {
        let sent: Vec<(String, Vec<u8>)> = sites
            .iter()
            .filter_map(|site| {
                let keys: Vec<&String> = self.edges.get(site)?.sent.keys().collect();
                Some((
                    format!("{SENT_PREFIX}{site}"),
                    serde_json::to_vec(&keys).expect("keys serialize"),
                ))
            })
            .collect();
        let puts: Vec<(&str, &[u8])> = sent.iter().map(|(k, v)| (k.as_str(), v.as_slice())).collect();
        if let Err(e) = self.store.update(&puts, &[]) {
            warn!(error = %e, "cannot persist the keys of the SD-WAN pieces sent");
        }
    }

    /// Sends every edge the pieces that changed (all of them when `all`), then persists the keys
    /// of the edges whose set of pieces changed.
    async fn push(&mut self, all: bool) {
        let sites: Vec<String> = self.inv.sites.keys().cloned().collect();
        let mut rekeyed = Vec::new();
        for site in sites {
            let (new, unreachable) = self.pieces_of(&site);
            let track = self.edges.entry(site.clone()).or_default();
            track.unreachable = unreachable;
            let old = if all {
                Slices::new()
            } else {
                std::mem::take(&mut track.sent)
            };
            let mut ch = changed(&old, &new);
            if all {
                // Pieces once sent and gone since: removed.
                for k in track.sent.keys().filter(|k| !new.contains_key(*k)) {
                    ch.insert(k.clone(), None);
                }
            }
            if !track.sent.keys().eq(new.keys()) {
                rekeyed.push(site.clone());
            }
            track.sent = new;
            if ch.is_empty() {
                if track.pending.is_empty() && track.error.is_none() {
                    track.synced = self.generation;
                }
                continue;
            }
            self.send(&site, ch).await;
        }
        if !rekeyed.is_empty() {
            self.persist_sent(&rekeyed);
        }
    }

    async fn send(&mut self, site: &str, pieces: BTreeMap<String, Option<EdgeConfig>>) {
        let generation = self.generation;
        // Batches of at most BATCH_PIECES pieces and about BATCH_BYTES of JSON.
        let mut batches: Vec<Vec<pb::Intent>> = Vec::new();
        let mut bytes = 0;
        for (key, config) in pieces {
            self.next_id += 1;
            let json = config
                .as_ref()
                .map(|c| serde_json::to_vec(c).expect("an EdgeConfig always serializes"))
                .unwrap_or_default();
            if batches
                .last()
                .is_none_or(|b| b.len() >= BATCH_PIECES || bytes + json.len() > BATCH_BYTES)
            {
                batches.push(Vec::new());
                bytes = 0;
            }
            bytes += json.len();
            batches.last_mut().expect("pushed above").push(pb::Intent {
                id: self.next_id,
                kind: Some(pb::intent::Kind::SdwanPiece(pb::SdwanPieceIntent {
                    key,
                    present: config.is_some(),
                    config_json: json,
                    generation,
                })),
            });
        }
        let now = Instant::now();
        let router = RouterId::new(site).ok();
        let address = self.address_of(site);
        for batch in batches {
            let track = self.edges.entry(site.to_string()).or_default();
            track.pending.extend(batch.iter().map(|i| (i.id, now)));
            let ids: Vec<u64> = batch.iter().map(|i| i.id).collect();
            let outcome = match &router {
                // This router's own edge, in-process: the same pieces.
                Some(r) if *r == self.me => {
                    let pieces = batch
                        .iter()
                        .filter_map(|i| match &i.kind {
                            Some(pb::intent::Kind::SdwanPiece(p)) => Piece::from_pb(i.id, p).ok(),
                            _ => None,
                        })
                        .collect();
                    self.local_edge.submit(pieces, self.local_answers.clone()).await;
                    Ok(())
                }
                Some(r) => self.links.send(r, address, batch).await,
                None => Err(format!("site {site:?} is not a router id")),
            };
            if let Err(e) = outcome {
                let track = self.edges.entry(site.to_string()).or_default();
                for id in &ids {
                    track.pending.remove(id);
                }
                warn!(%site, error = %e, "cannot send SD-WAN pieces; retrying");
                track.error = Some(format!("cannot reach the edge: {e}"));
                return;
            }
        }
    }

    fn reply(&mut self, r: Reply) {
        let generation = self.generation;
        let Some(track) = self.edges.get_mut(r.router.as_str()) else {
            return;
        };
        if track.pending.remove(&r.intent_id).is_none() {
            return; // an answer to a piece sent again since
        }
        match r.outcome {
            Ok(()) => {
                if track.pending.is_empty() && track.error.is_none() {
                    track.synced = generation;
                }
            }
            Err(e) => {
                warn!(edge = %r.router, error = %e, "an edge could not apply SD-WAN pieces");
                track.error = Some(e);
            }
        }
    }

    /// Edges with an error or a piece unanswered for too long get all their pieces again.
    async fn retry(&mut self) {
        let now = Instant::now();
        let due: Vec<String> = self
            .edges
            .iter()
            .filter(|(_, t)| t.error.is_some() || t.pending.values().any(|at| now - *at >= RETRY_EVERY))
            .map(|(s, _)| s.clone())
            .collect();
        for site in due {
            let track = self.edges.get_mut(&site).expect("listed above");
            track.pending.clear();
            track.error = None;
            let pieces = track.sent.iter().map(|(k, v)| (k.clone(), Some(v.clone()))).collect();
            info!(%site, "sending an edge its SD-WAN pieces again");
            self.send(&site, pieces).await;
        }
    }

    async fn act(&mut self, actions: Vec<Action>) -> Result<u64, Refused> {
        let mut next = self.desired.clone();
        for (index, a) in actions.into_iter().enumerate() {
            next.apply(a, &self.inv)
                .map_err(|error| Refused::Action { index, error })?;
        }
        let before = std::mem::replace(&mut self.desired, next);
        self.generation += 1;
        if let Err(e) = self.persist() {
            self.desired = before;
            self.generation -= 1;
            return Err(Refused::Store(e));
        }
        self.push(false).await;
        Ok(self.generation)
    }

    fn status(&self) -> Status {
        let view = self.neighborhood.borrow().clone();
        let mut edges = BTreeMap::new();
        for site in self.inv.sites.keys() {
            let t = self.edges.get(site);
            let (mut tunnels, mut classes) = (Vec::new(), BTreeMap::new());
            for piece in t.into_iter().flat_map(|t| t.sent.values()) {
                tunnels.extend(piece.tunnels.values().map(|tn| TunnelStatus {
                    name: tn.name.clone(),
                    overlay: tn.overlay.clone(),
                    underlay: tn.underlay.clone(),
                    vni: tn.vni,
                    peers: tn.peers.iter().map(|p| p.site.clone()).collect(),
                }));
                for m in &piece.marks {
                    if let Some(c) = self.desired.classes.get(&m.class) {
                        classes.insert(c.name.clone(), c.overlay.clone());
                    }
                }
            }
            tunnels.sort_by(|a, b| a.name.cmp(&b.name));
            edges.insert(
                site.clone(),
                EdgeStatus {
                    in_sync: t
                        .is_some_and(|t| t.synced == self.generation && t.pending.is_empty() && t.error.is_none()),
                    synced_generation: t.map_or(0, |t| t.synced),
                    pending: t.map_or(0, |t| t.pending.len()),
                    error: t.and_then(|t| t.error.clone()),
                    tunnels,
                    classes,
                    unreachable: t.map(|t| t.unreachable.clone()).unwrap_or_default(),
                    advertised: view.get(site).and_then(|r| {
                        r.sdwan.as_ref().map(|s| Advertised {
                            hops: r.hops,
                            generation: s.generation,
                            tunnels: s.tunnels,
                            tunnels_up: s.tunnels_up,
                            failed_ops: s.failed_ops,
                            down: s.items.iter().filter(|t| !t.up).map(|t| t.name.clone()).collect(),
                            paths: s.paths.iter().cloned().map(AdvertisedPath::from).collect(),
                            paths_total: s.paths_total,
                            steering: s.steering.iter().cloned().map(AdvertisedSteering::from).collect(),
                            steering_total: s.steering_total,
                        })
                    }),
                },
            );
        }
        Status {
            generation: self.generation,
            overlays: self.desired.overlays.len(),
            classes: self.desired.classes.len(),
            edges,
        }
    }
}

/// Starts the controller task: the stored desired state back, every edge sent its pieces, then
/// actions as they come.
pub fn spawn(parts: Parts) -> SdwanHandle {
    let (tx, mut rx) = mpsc::channel(64);
    let inv = Arc::new(parts.inventory);
    let (generation, desired) = match parts.store.get_blob(DESIRED_KEY) {
        Ok(Some(v)) => serde_json::from_slice::<(u64, Desired)>(&v).unwrap_or_else(|e| {
            warn!(error = %e, "the stored SD-WAN desired state is unreadable; starting empty");
            (0, Desired::default())
        }),
        _ => (0, Desired::default()),
    };
    let mut edges: BTreeMap<String, Track> = BTreeMap::new();
    for (k, v) in parts.store.blobs_with_prefix(SENT_PREFIX).unwrap_or_default() {
        let keys: Vec<String> = serde_json::from_slice(&v).unwrap_or_default();
        let t = edges.entry(k.trim_start_matches(SENT_PREFIX).to_string()).or_default();
        // Only the keys matter until the first push, which sends every piece again.
        t.sent = keys.into_iter().map(|k| (k, EdgeConfig::default())).collect();
    }
    let (local_answers, answers) = mpsc::channel::<crate::controller::Answer>(256);
    let (replies_tx, mut replies) = mpsc::channel::<Reply>(1024);
    let links = Links::remote_only(
        parts.me.clone(),
        replies_tx.clone(),
        parts.session_id,
        parts.metrics,
        parts.connector,
    );
    crate::delivery::forward_answers(parts.me.clone(), answers, replies_tx);
    let mut ctl = Ctl {
        me: parts.me,
        inv: inv.clone(),
        store: parts.store,
        links,
        local_edge: parts.local_edge,
        local_answers,
        neighborhood: parts.neighborhood,
        desired,
        generation,
        edges,
        next_id: 0,
    };
    tokio::spawn(async move {
        info!(
            generation = ctl.generation,
            overlays = ctl.desired.overlays.len(),
            classes = ctl.desired.classes.len(),
            sites = ctl.inv.sites.len(),
            "SD-WAN controller running"
        );
        ctl.push(true).await;
        let mut retry = tokio::time::interval(RETRY_EVERY);
        retry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                m = rx.recv() => match m {
                    Some(Msg::Act(actions, reply)) => {
                        let outcome = ctl.act(actions).await;
                        let _ = reply.send(outcome);
                    }
                    Some(Msg::Desired(reply)) => {
                        let _ = reply.send((ctl.generation, ctl.desired.clone()));
                    }
                    Some(Msg::Status(reply)) => {
                        let _ = reply.send(ctl.status());
                    }
                    None => return,
                },
                Some(r) = replies.recv() => ctl.reply(r),
                _ = retry.tick() => ctl.retry().await,
            }
        }
    });
    SdwanHandle { tx, inventory: inv }
}

#[cfg(test)]
pub(crate) mod tests;
