//! The SD-WAN edge component (every router): the pieces of its SD-WAN configuration that the
//! SD-WAN controller sent (`SdwanPieceIntent`, one per overlay and per class), persisted in the
//! store, their union carried out on the kernel by the southbound executor, each piece answered.
//!
//! ```text
//!  Control session (server.rs) ──Pieces{batch, answers}──▶ edge task ──▶ store: sdwan/piece/KEY
//!                                                          │ holds the pieces and what the
//!                                                          │ kernel was last made to hold
//!                               ◀── Answer per piece ───────┤──▶ Overlays: diff(held, union)
//!  start:  stored pieces ─▶ kernel read back ─▶ reconcile ──┘     (rtnetlink + nft)
//! ```
//!
//! A restarted daemon reads what the kernel holds and carries out only the difference to its
//! stored pieces ([`wuos_sdwan::reconcile`]): nothing is created twice. When an op fails, the
//! whole batch is answered with the failure, the pieces stay (they are what is wanted) and the
//! next batch — or the retry every [`RETRY_EVERY`] — starts from a fresh kernel read. Otherwise
//! a batch costs what it changes: the ops between its pieces' old and new contents (pieces own
//! disjoint devices, routes and rules), and the nftables table only when the marks change.

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio::sync::{mpsc, oneshot};
use tracing::{info, warn};
use wuos_sdwan::slice::{Slices, merge, nft_script};
use wuos_sdwan::{EdgeConfig, Op, diff, reconcile};
use wuos_southbound::overlays::{Overlays, apply_all};

use crate::controller::Answer;
use crate::store::Store;

const KEY_PREFIX: &str = "sdwan/piece/";

/// How often an edge whose last change partly failed tries again from a kernel read.
pub const RETRY_EVERY: Duration = Duration::from_secs(5);

/// One piece from the controller.
#[derive(Clone, Debug, PartialEq)]
pub struct Piece {
    pub intent_id: u64,
    pub key: String,
    /// `None`: remove the piece.
    pub config: Option<EdgeConfig>,
    pub generation: u64,
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
}

impl EdgeHandle {
    /// Pieces of one batch; each is answered on `answers` once the batch is carried out.
    pub async fn submit(&self, pieces: Vec<Piece>, answers: mpsc::Sender<Answer>) {
        let _ = self.tx.send(Msg::Pieces { pieces, answers }).await;
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
    /// The pieces: what the kernel holds while `failed` is empty.
    pieces: Slices,
    /// The nftables script last applied.
    nft: String,
    generation: u64,
    failed: Vec<String>,
}

impl<O: Overlays> Edge<O> {
    /// From a kernel read to the pieces' union; the ops carried out.
    async fn reconcile(&mut self) -> Vec<Op> {
        let want = merge(self.pieces.values());
        let kernel = match self.overlays.read().await {
            Ok(k) => k,
            Err(e) => {
                self.failed = vec![format!("cannot read what the kernel holds: {e}")];
                return Vec::new();
            }
        };
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
    async fn take(&mut self, batch: &[Piece]) -> Result<(), String> {
        let mut puts: Vec<(String, Vec<u8>)> = Vec::new();
        let mut deletes: Vec<String> = Vec::new();
        for p in batch {
            let key = format!("{KEY_PREFIX}{}", p.key);
            match &p.config {
                Some(c) => puts.push((key, serde_json::to_vec(c).map_err(|e| e.to_string())?)),
                None => deletes.push(key),
            }
        }
        let puts_ref: Vec<(&str, &[u8])> = puts.iter().map(|(k, v)| (k.as_str(), v.as_slice())).collect();
        let deletes_ref: Vec<&str> = deletes.iter().map(String::as_str).collect();
        self.store
            .update(&puts_ref, &deletes_ref)
            .map_err(|e| format!("cannot persist the pieces: {e}"))?;
        drop(puts);
        self.generation = self
            .generation
            .max(batch.iter().map(|p| p.generation).max().unwrap_or(0));
        let old = merge(batch.iter().filter_map(|p| self.pieces.get(&p.key)));
        let new = merge(batch.iter().filter_map(|p| p.config.as_ref()));
        for p in batch {
            match &p.config {
                Some(c) => self.pieces.insert(p.key.clone(), c.clone()),
                None => self.pieces.remove(&p.key),
            };
        }
        if self.failed.is_empty() {
            let mut ops: Vec<Op> = diff(&old, &new)
                .into_iter()
                .filter(|op| !matches!(op, Op::ReplaceNft(_) | Op::DeleteNft))
                .collect();
            let nft = nft_script(&self.pieces);
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

    fn state(&self) -> EdgeState {
        EdgeState {
            generation: self.generation,
            pieces: self.pieces.len(),
            tunnels: self
                .pieces
                .values()
                .flat_map(|p| p.tunnels.keys().cloned())
                .collect::<std::collections::BTreeSet<_>>()
                .into_iter()
                .collect(),
            failed: self.failed.clone(),
        }
    }
}

/// Starts the edge task: the stored pieces back on the kernel (reconciled from a kernel read),
/// then pieces as they come.
pub fn spawn<O: Overlays + 'static>(overlays: O, store: Arc<Store>) -> EdgeHandle {
    let (tx, mut rx) = mpsc::channel(64);
    let mut pieces = Slices::new();
    for (k, v) in store.blobs_with_prefix(KEY_PREFIX).unwrap_or_default() {
        match serde_json::from_slice::<EdgeConfig>(&v) {
            Ok(c) => {
                pieces.insert(k.trim_start_matches(KEY_PREFIX).to_string(), c);
            }
            Err(e) => warn!(key = %k, error = %e, "dropping an unreadable stored SD-WAN piece"),
        }
    }
    let mut edge = Edge {
        overlays,
        store,
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
        let mut retry = tokio::time::interval(RETRY_EVERY);
        retry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                m = rx.recv() => match m {
                    Some(Msg::Pieces { pieces, answers }) => {
                        let outcome = edge.take(&pieces).await;
                        if let Err(e) = &outcome {
                            warn!(error = %e, "SD-WAN pieces not fully applied");
                        }
                        for p in &pieces {
                            let _ = answers.send(Answer { intent_id: p.intent_id, outcome: outcome.clone() }).await;
                        }
                    }
                    Some(Msg::State(reply)) => {
                        let _ = reply.send(edge.state());
                    }
                    None => return,
                },
                _ = retry.tick() => {
                    if !edge.failed.is_empty() {
                        edge.reconcile().await;
                    }
                }
            }
        }
    });
    EdgeHandle { tx }
}

#[cfg(test)]
pub(crate) mod tests;
