//! The SD-WAN edge component (every router): the pieces of its SD-WAN configuration that the
//! SD-WAN controller sent (`SdwanPieceIntent`, one per overlay and per class), persisted in the
//! store, their union carried out on the kernel by the southbound executor, each piece answered.
//!
//! ```text
//!  Control session (server.rs) ──Pieces{batch, answers}──▶ edge task ──▶ store: sdwan/piece/KEY
//!                                                          │ holds the pieces (as JSON)
//!                               ◀── Answer per piece ───────┤──▶ Overlays: diff(batch's old
//!  start:  stored pieces ─▶ kernel read back ─▶ reconcile ──┘     pieces, new ones) (rtnetlink + nft)
//! ```
//!
//! A restarted daemon reads what the kernel holds and carries out only the difference to its
//! stored pieces ([`wuos_sdwan::reconcile`]): nothing is created twice. When an op fails, the
//! whole batch is answered with the failure, the pieces stay (they are what is wanted) and the
//! next batch — or the retry every [`RETRY_EVERY`] — starts from a fresh kernel read. Every
//! [`CHECK_EVERY`] the edge also reads the kernel and puts back what was changed behind its back,
//! and its tunnels' state goes into the router's adverts (protocol 2.1, `SdwanEdgeState`). Otherwise
//! a batch costs what it changes: the ops between its pieces' old and new contents (pieces own
//! disjoint devices, routes and rules), and the nftables table only when the marks change.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio::sync::{mpsc, oneshot, watch};
use tracing::{info, warn};
use wuos_proto::pb;
use wuos_sdwan::edge::{Rule, shortcuts};
use wuos_sdwan::slice::{merge, merge_owned};
use wuos_sdwan::steer::ClassPlan;
use wuos_sdwan::{EdgeConfig, Op, diff, reconcile};
use wuos_southbound::overlays::{Overlays, apply_all};

use crate::controller::Answer;
use crate::store::Store;

const KEY_PREFIX: &str = "sdwan/piece/";
/// At most this many tunnels are listed in an advert (the protocol's limit per list).
const ADVERTISED_TUNNELS: usize = wuos_proto::validate::MAX_ITEMS_PER_ADVERT;

/// How often an edge whose last change partly failed tries again from a kernel read.
pub const RETRY_EVERY: Duration = Duration::from_secs(5);
/// How often an edge holding pieces checks that the kernel still holds them (reading 1,000
/// overlays' state back takes ~55 ms here).
pub const CHECK_EVERY: Duration = Duration::from_secs(30);

/// One piece from the controller, as it came: its JSON is parsed by the edge task, a batch at a
/// time (parsed pieces waiting in the queue would cost several times their JSON).
#[derive(Clone, Debug, PartialEq)]
pub struct Piece {
    pub intent_id: u64,
    pub key: String,
    /// The JSON form of the piece's `EdgeConfig`; `None`: remove the piece.
    pub json: Option<Vec<u8>>,
    pub generation: u64,
}

impl Piece {
    /// The typed form of the SD-WAN piece of intent `id`, or why it is not one.
    pub fn from_pb(id: u64, p: &pb::SdwanPieceIntent) -> Result<Piece, String> {
        let bad = |why: String| format!("SD-WAN piece {:?}: {why}", p.key);
        if !wuos_sdwan::slice::key_ok(&p.key) {
            return Err(bad("the key is not overlay/NAME or class/NAME".into()));
        }
        Ok(Piece {
            intent_id: id,
            key: p.key.clone(),
            json: p.present.then(|| p.config_json.clone()),
            generation: p.generation,
        })
    }
}

/// What the edge holds, for status.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct EdgeState {
    /// The newest controller generation among the pieces applied.
    pub generation: u64,
    pub pieces: usize,
    pub tunnels: Vec<String>,
    /// The ops that failed on the last attempt (empty: the kernel holds the pieces).
    pub failed: Vec<String>,
}

enum Msg {
    Pieces {
        pieces: Vec<Piece>,
        answers: mpsc::Sender<Answer>,
    },
    State(oneshot::Sender<EdgeState>),
}

/// The door into the edge task; cheap to clone.
#[derive(Clone, Debug)]
pub struct EdgeHandle {
    tx: mpsc::Sender<Msg>,
    advert: watch::Receiver<Option<pb::SdwanEdgeState>>,
    plans: watch::Receiver<Option<Arc<Vec<ClassPlan>>>>,
}

impl EdgeHandle {
    /// Pieces of one batch; each is answered on `answers` once the batch is carried out.
    pub async fn submit(&self, pieces: Vec<Piece>, answers: mpsc::Sender<Answer>) {
        let _ = self.tx.send(Msg::Pieces { pieces, answers }).await;
    }

    /// The SD-WAN state for this router's adverts (none unless it holds pieces).
    pub fn advert(&self) -> watch::Receiver<Option<pb::SdwanEdgeState>> {
        self.advert.clone()
    }

    /// The steered classes' plans (none until the stored pieces are back on the kernel).
    pub fn plans(&self) -> watch::Receiver<Option<Arc<Vec<ClassPlan>>>> {
        self.plans.clone()
    }

    pub async fn state(&self) -> EdgeState {
        let (reply, rx) = oneshot::channel();
        if self.tx.send(Msg::State(reply)).await.is_err() {
            return EdgeState::default();
        }
        rx.await.unwrap_or_default()
    }
}

struct Edge<O> {
    overlays: O,
    store: Arc<Store>,
    /// What goes into this router's adverts.
    advert: watch::Sender<Option<pb::SdwanEdgeState>>,
    /// The steered classes, for the paths task.
    plans: watch::Sender<Option<Arc<Vec<ClassPlan>>>>,
    check_every: Duration,
    last_check: std::time::Instant,
    /// The pieces: what the kernel holds while `failed` is empty.
    pieces: Kept,
    /// The nftables script last applied.
    nft: String,
    generation: u64,
    failed: Vec<String>,
}

/// The pieces as kept in memory: their JSON (as stored) and their tunnels' names, parsed when
/// needed. A parsed piece is mostly B-tree nodes sized for eleven entries holding one or two —
/// several KB where its JSON is about one — so 1,000 overlays kept parsed cost the daemon
/// several MiB more.
#[derive(Default)]
struct Kept {
    json: BTreeMap<String, Box<[u8]>>,
    tunnels: BTreeMap<String, Vec<String>>,
}

impl Kept {
    fn insert(&mut self, key: String, json: Vec<u8>, config: &EdgeConfig) {
        self.tunnels
            .insert(key.clone(), config.tunnels.keys().cloned().collect());
        self.json.insert(key, json.into_boxed_slice());
    }

    fn remove(&mut self, key: &str) {
        self.json.remove(key);
        self.tunnels.remove(key);
    }

    fn parse(json: &[u8]) -> EdgeConfig {
        // Only what this component serialized (or read back from its own store) is kept.
        serde_json::from_slice(json).unwrap_or_default()
    }

    fn get(&self, key: &str) -> Option<EdgeConfig> {
        self.json.get(key).map(|j| Self::parse(j))
    }

    /// The pieces' union, parsed one piece at a time, with the [`shortcuts`] when there is any
    /// piece: what the kernel should hold.
    fn merged(&self) -> EdgeConfig {
        let mut out = merge_owned(self.json.values().map(|j| Self::parse(j)));
        out.rules.extend(shortcuts_if(!self.is_empty()));
        out
    }

    /// The nftables script of the union: the classes' marks, and the clamp if any tunnel.
    fn nft_script(&self) -> String {
        let marks: Vec<_> = self
            .json
            .iter()
            .filter(|(k, _)| k.starts_with("class/"))
            .flat_map(|(_, j)| Self::parse(j).marks)
            .collect();
        wuos_sdwan::edge::nft_script(&marks, self.tunnels.values().any(|t| !t.is_empty()))
    }

    /// Whether `kernel` (read back) holds exactly the pieces' tunnels with their peers, routes
    /// and rules, and nothing more of them; parsed one piece at a time.
    fn held_by(&self, kernel: &EdgeConfig) -> bool {
        let (mut tunnels, mut routes, mut rules) = (0, 0, 0);
        for j in self.json.values() {
            let p = Self::parse(j);
            let same = p.tunnels.values().all(|t| {
                kernel
                    .tunnels
                    .get(&t.name)
                    .is_some_and(|k| k.same_device(t) && k.peers == t.peers)
            }) && p.routes.iter().all(|r| kernel.routes.contains(r))
                && p.rules.iter().all(|r| kernel.rules.contains(r));
            if !same {
                return false;
            }
            (tunnels, routes, rules) = (
                tunnels + p.tunnels.len(),
                routes + p.routes.len(),
                rules + p.rules.len(),
            );
        }
        let ours: Vec<Rule> = shortcuts_if(!self.is_empty()).collect();
        if !ours.iter().all(|r| kernel.rules.contains(r)) {
            return false;
        }
        rules += ours.len();
        (kernel.tunnels.len(), kernel.routes.len(), kernel.rules.len()) == (tunnels, routes, rules)
    }

    fn tunnel_names(&self) -> impl Iterator<Item = &String> {
        self.tunnels.values().flatten()
    }

    fn len(&self) -> usize {
        self.json.len()
    }

    fn is_empty(&self) -> bool {
        self.json.is_empty()
    }
}

/// The [`shortcuts`] of an edge that holds a piece (`held`); none otherwise.
fn shortcuts_if(held: bool) -> impl Iterator<Item = Rule> {
    held.then(shortcuts).into_iter().flatten()
}

impl<O: Overlays> Edge<O> {
    /// From a kernel read to the pieces' union; the ops carried out.
    async fn reconcile(&mut self) -> Vec<Op> {
        match self.overlays.read().await {
            Ok(kernel) => self.reconcile_from(kernel).await,
            Err(e) => {
                self.failed = vec![format!("cannot read what the kernel holds: {e}")];
                Vec::new()
            }
        }
    }

    /// From what the kernel holds (`kernel`, read back) to the pieces' union.
    async fn reconcile_from(&mut self, kernel: EdgeConfig) -> Vec<Op> {
        let want = self.pieces.merged();
        let ops = if kernel == EdgeConfig::default() && want == EdgeConfig::default() {
            Vec::new()
        } else {
            reconcile(&kernel, &want)
        };
        self.carry_out(&ops).await;
        self.nft = want.nft_script();
        ops
    }

    async fn carry_out(&mut self, ops: &[Op]) {
        self.failed = apply_all(&self.overlays, ops)
            .await
            .into_iter()
            .map(|(_, e)| e.to_string())
            .collect();
    }

    /// Takes a batch: persisted, carried out; the batch's outcome. Pieces own disjoint devices,
    /// routes and rules, so the ops are those between the batch's old and new pieces, plus the
    /// nftables table (the marks of every class) when it changes.
    async fn take(&mut self, batch: Vec<(Piece, Option<EdgeConfig>)>) -> Result<(), String> {
        let mut puts: Vec<(String, &[u8])> = Vec::new();
        let mut deletes: Vec<String> = Vec::new();
        for (p, _) in &batch {
            let key = format!("{KEY_PREFIX}{}", p.key);
            match &p.json {
                Some(j) => puts.push((key, j)),
                None => deletes.push(key),
            }
        }
        let puts_ref: Vec<(&str, &[u8])> = puts.iter().map(|(k, v)| (k.as_str(), *v)).collect();
        let deletes_ref: Vec<&str> = deletes.iter().map(String::as_str).collect();
        self.store
            .update(&puts_ref, &deletes_ref)
            .map_err(|e| format!("cannot persist the pieces: {e}"))?;
        self.generation = self
            .generation
            .max(batch.iter().map(|(p, _)| p.generation).max().unwrap_or(0));
        let mut old = merge_owned(batch.iter().filter_map(|(p, _)| self.pieces.get(&p.key)));
        let mut new = merge(batch.iter().filter_map(|(_, c)| c.as_ref()));
        let had = !self.pieces.is_empty();
        for (p, c) in batch {
            match (p.json, c) {
                (Some(json), Some(c)) => self.pieces.insert(p.key, json, &c),
                _ => self.pieces.remove(&p.key),
            }
        }
        // The shortcuts come with the first piece and go with the last.
        old.rules.extend(shortcuts_if(had));
        new.rules.extend(shortcuts_if(!self.pieces.is_empty()));
        if self.failed.is_empty() {
            let mut ops: Vec<Op> = diff(&old, &new).into_iter().filter(|op| !op.is_nft()).collect();
            let nft = self.pieces.nft_script();
            if nft != self.nft {
                ops.push(if nft.is_empty() {
                    Op::DeleteNft
                } else {
                    Op::ReplaceNft(nft.clone())
                });
            }
            self.carry_out(&ops).await;
            if self.failed.is_empty() {
                self.nft = nft;
            }
        } else {
            self.reconcile().await;
        }
        match self.failed.as_slice() {
            [] => Ok(()),
            f => Err(format!(
                "{} op(s) failed (retried every {} s): {}",
                f.len(),
                RETRY_EVERY.as_secs(),
                f.iter().take(3).cloned().collect::<Vec<_>>().join("; ")
            )),
        }
    }

    /// Every [`RETRY_EVERY`]: after a failure, reconcile; otherwise, every `check_every`, when the
    /// edge holds pieces, read the kernel and put back what changed behind wuos's back (a
    /// device, a peer, a route or a rule deleted by hand). Then the advert's state.
    async fn check(&mut self) {
        let due = self.last_check.elapsed() >= self.check_every;
        if !self.failed.is_empty() {
            self.reconcile().await;
            self.last_check = std::time::Instant::now();
        } else if due && !self.pieces.is_empty() {
            self.last_check = std::time::Instant::now();
            match self.overlays.read().await {
                Ok(kernel) => {
                    // Compared piece by piece (no second whole configuration in memory); only
                    // when something differs is the whole difference worked out.
                    if !self.pieces.held_by(&kernel) {
                        let ops = self.reconcile_from(kernel).await;
                        let drift: Vec<&Op> = ops.iter().filter(|op| !op.is_nft()).collect();
                        warn!(
                            ops = drift.len(),
                            first = %drift.first().map(|o| o.to_string()).unwrap_or_default(),
                            "the kernel's SD-WAN state changed behind wuos's back; put it back"
                        );
                    }
                }
                Err(e) => self.failed = vec![format!("cannot read what the kernel holds: {e}")],
            }
        }
        self.publish();
    }

    /// The advert's SD-WAN state: none without pieces; otherwise the tunnels, those down first
    /// (while an op has failed, every tunnel counts as down: the failure is not tied to one).
    fn publish(&self) {
        let state = (!self.pieces.is_empty()).then(|| {
            let mut items: Vec<pb::TunnelState> = self
                .pieces
                .tunnel_names()
                .map(|t| pb::TunnelState {
                    name: t.clone(),
                    up: self.failed.is_empty(),
                })
                .collect();
            items.sort_by(|a, b| (a.up, &a.name).cmp(&(b.up, &b.name)));
            let tunnels = items.len() as u32;
            let tunnels_up = items.iter().filter(|t| t.up).count() as u32;
            items.truncate(ADVERTISED_TUNNELS);
            pb::SdwanEdgeState {
                generation: self.generation,
                tunnels,
                tunnels_up,
                failed_ops: self.failed.len() as u32,
                items,
                // The paths task's part, added by the sampler.
                ..Default::default()
            }
        });
        self.advert.send_if_modified(|a| {
            let changed = *a != state;
            if changed {
                *a = state;
            }
            changed
        });
    }

    /// The steered classes' plans, for the paths task, after the pieces changed (parsing every
    /// class piece at each check was 3 % of a probing edge's CPU at 500 classes).
    fn publish_plans(&self) {
        let plans: Vec<ClassPlan> = self
            .pieces
            .json
            .iter()
            .filter(|(k, _)| k.starts_with("class/"))
            .flat_map(|(_, j)| Kept::parse(j).steer)
            .collect();
        self.plans.send_if_modified(|p| {
            let changed = p.as_deref() != Some(&plans);
            if changed {
                *p = Some(Arc::new(plans));
            }
            changed
        });
    }

    fn state(&self) -> EdgeState {
        EdgeState {
            generation: self.generation,
            pieces: self.pieces.len(),
            tunnels: self
                .pieces
                .tunnel_names()
                .cloned()
                .collect::<std::collections::BTreeSet<_>>()
                .into_iter()
                .collect(),
            failed: self.failed.clone(),
        }
    }
}

/// Starts the edge task: the stored pieces back on the kernel (reconciled from a kernel read),
/// then pieces as they come, the kernel checked every `check_every` ([`CHECK_EVERY`] in the
/// daemon).
pub fn spawn<O: Overlays + 'static>(overlays: O, store: Arc<Store>, check_every: Duration) -> EdgeHandle {
    let (tx, mut rx) = mpsc::channel(64);
    let mut pieces = Kept::default();
    for (k, v) in store.blobs_with_prefix(KEY_PREFIX).unwrap_or_default() {
        match serde_json::from_slice::<EdgeConfig>(&v) {
            Ok(c) => {
                pieces.insert(k.trim_start_matches(KEY_PREFIX).to_string(), v, &c);
            }
            Err(e) => warn!(key = %k, error = %e, "dropping an unreadable stored SD-WAN piece"),
        }
    }
    let (advert, advert_rx) = watch::channel(None);
    let (plans, plans_rx) = watch::channel(None);
    let mut edge = Edge {
        overlays,
        store,
        advert,
        plans,
        check_every,
        last_check: std::time::Instant::now(),
        pieces,
        nft: String::new(),
        generation: 0,
        failed: Vec::new(),
    };
    tokio::spawn(async move {
        let ops = edge.reconcile().await;
        if !ops.is_empty() || !edge.pieces.is_empty() {
            info!(
                pieces = edge.pieces.len(),
                ops = ops.len(),
                failed = edge.failed.len(),
                "SD-WAN pieces reconciled with the kernel"
            );
        }
        edge.publish();
        edge.publish_plans();
        let mut retry = tokio::time::interval(RETRY_EVERY.min(check_every));
        retry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                m = rx.recv() => match m {
                    Some(Msg::Pieces { pieces, answers }) => {
                        // Parsed here, one batch at a time; a piece that does not parse is
                        // answered alone and left out.
                        let mut batch = Vec::with_capacity(pieces.len());
                        for p in pieces {
                            let parsed = match &p.json {
                                None => Ok(None),
                                Some(j) => serde_json::from_slice::<EdgeConfig>(j).map(Some),
                            };
                            match parsed {
                                Ok(c) => batch.push((p, c)),
                                Err(e) => {
                                    let why = format!("SD-WAN piece {:?}: {e}", p.key);
                                    let _ = answers.send(Answer { intent_id: p.intent_id, outcome: Err(why) }).await;
                                }
                            }
                        }
                        let ids: Vec<u64> = batch.iter().map(|(p, _)| p.intent_id).collect();
                        let outcome = if batch.is_empty() { Ok(()) } else { edge.take(batch).await };
                        if let Err(e) = &outcome {
                            warn!(error = %e, "SD-WAN pieces not fully applied");
                        }
                        edge.publish();
                        edge.publish_plans();
                        for intent_id in ids {
                            let _ = answers.send(Answer { intent_id, outcome: outcome.clone() }).await;
                        }
                    }
                    Some(Msg::State(reply)) => {
                        let _ = reply.send(edge.state());
                    }
                    None => return,
                },
                // An edge with nothing to hold and nothing failed has nothing to check.
                _ = retry.tick(), if !edge.pieces.is_empty() || !edge.failed.is_empty() => edge.check().await,
            }
        }
    });
    EdgeHandle {
        tx,
        advert: advert_rx,
        plans: plans_rx,
    }
}

#[cfg(test)]
pub(crate) mod tests;
