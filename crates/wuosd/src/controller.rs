//! The controller component: a task that owns the controller state machine
//! ([`wuos_controller::Controller`]) and carries out its ops — intents persisted, instances
//! ensured by the domains component, VIP routes resolved by kernel lookups and installed, XDP
//! redirects set — answering each intent on the session it came from.
//!
//! ```text
//!  Control sessions (server.rs) ─┐                      ┌─▶ store: intent/KEY (JSON)
//!  local orchestrator ───────────┼─ Intents{session} ─▶ │ controller task │─▶ domains: ensure ──Ensured──┐
//!  domains snapshot (watch) ─────┤   Instances          │  owns Controller│─▶ Routes: next_hop, fib_match,│
//!  neighborhood (watch) ─────────┤   Addresses          │                 │     replace, delete           │
//!  every 2 s (ridden) ───────────┘   Tick               └────────┬────────┘─▶ data path: redirects      │
//!        ◀────────── answers per session (ack | error) ───────────┘      ◀──────────────────────────────┘
//! ```
//!
//! The local orchestrator is a session like a remote one, but in-process: intents for this router
//! never leave it.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tracing::{info, warn};
use wuos_controller::{
    Controller, DataplaneOp, Input, InstanceState, Intent, IntentKey, Kept, KernelView, LocalInstance, Op, Origin,
    Region,
};
use wuos_model::lifecycle::State;
use wuos_model::{RouterId, ServiceId};
use wuos_proto::neighborhood::Neighborhood;
use wuos_southbound::routes::Routes;

use crate::datapath::DatapathHandle;
use crate::domains::DomainsSnapshot;
use crate::domains::component::DomainsHandle;
use crate::store::Store;

/// How often the controller puts the kernel back in line with the intents in force (at the
/// first wake-up of its task after this much time, at the latest twice this much).
pub const RECONCILE_EVERY: Duration = Duration::from_secs(2);

const KEY_PREFIX: &str = "intent/";

/// The answer to one intent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Answer {
    pub intent_id: u64,
    pub outcome: Result<(), String>,
}

enum Msg {
    Open {
        session: u64,
        answers: mpsc::Sender<Answer>,
    },
    Close {
        session: u64,
    },
    Intents {
        session: u64,
        sender: RouterId,
        intents: Vec<(u64, Intent)>,
    },
    Region(Region),
    Ensured {
        service: ServiceId,
        present: bool,
        outcome: Result<(), String>,
    },
    /// The intents in force (admin API).
    InForce(tokio::sync::oneshot::Sender<BTreeMap<IntentKey, Intent>>),
}

/// The door into the controller task; cheap to clone.
#[derive(Clone, Debug)]
pub struct ControllerHandle {
    tx: mpsc::Sender<Msg>,
    sessions: Arc<std::sync::atomic::AtomicU64>,
}

impl ControllerHandle {
    /// Opens a session: its number, and where its answers arrive.
    pub async fn open(&self) -> (u64, mpsc::Receiver<Answer>) {
        let session = self.sessions.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let (answers, rx) = mpsc::channel(256);
        let _ = self.tx.send(Msg::Open { session, answers }).await;
        (session, rx)
    }

    pub async fn close(&self, session: u64) {
        let _ = self.tx.send(Msg::Close { session }).await;
    }

    /// Intents of `session`, in order, each with its id.
    /// Intents of session `session`, sent by the orchestrator on router `sender` (from its
    /// certificate under mutual TLS; this router for the local orchestrator).
    pub async fn submit(&self, session: u64, sender: RouterId, intents: Vec<(u64, Intent)>) {
        let _ = self
            .tx
            .send(Msg::Intents {
                session,
                sender,
                intents,
            })
            .await;
    }

    /// The region this router is in (chosen at each sample): whose intents it takes.
    pub async fn region(&self, region: Region) {
        let _ = self.tx.send(Msg::Region(region)).await;
    }

    /// The intents in force.
    pub async fn intents(&self) -> BTreeMap<IntentKey, Intent> {
        let (reply, rx) = tokio::sync::oneshot::channel();
        if self.tx.send(Msg::InForce(reply)).await.is_err() {
            return BTreeMap::new();
        }
        rx.await.unwrap_or_default()
    }
}

/// What the controller works with.
pub struct Parts<R> {
    pub me: RouterId,
    pub routes: R,
    pub store: Arc<Store>,
    pub domains: Option<DomainsHandle>,
    pub datapath: Option<DatapathHandle>,
    pub neighborhood: watch::Receiver<Arc<Neighborhood>>,
}

/// Starts the controller task: the persisted intents back in force, then intents as they come.
pub fn spawn<R: Routes + 'static>(parts: Parts<R>) -> ControllerHandle {
    let (tx, rx) = mpsc::channel(256);
    let handle = ControllerHandle {
        tx: tx.clone(),
        sessions: Arc::new(std::sync::atomic::AtomicU64::new(1)),
    };
    let mut ctl = Controller::new(parts.me.clone(), parts.datapath.is_some());
    let stored: Vec<Kept> = parts
        .store
        .blobs_with_prefix(KEY_PREFIX)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|(k, v)| match serde_json::from_slice::<Kept>(&v) {
            Ok(i) => Some(i),
            Err(e) => {
                warn!(key = %k, error = %e, "dropping an unreadable stored intent");
                None
            }
        })
        .collect();
    if !stored.is_empty() {
        info!(intents = stored.len(), "intents restored from the store");
    }
    let first = ctl.restore(stored);
    let task = Task {
        ctl,
        parts,
        sessions: BTreeMap::new(),
        tx,
    };
    tokio::spawn(task.run(rx, first));
    handle
}

struct Task<R> {
    ctl: Controller,
    parts: Parts<R>,
    sessions: BTreeMap<u64, mpsc::Sender<Answer>>,
    tx: mpsc::Sender<Msg>,
}

/// The local instances (domains named after their service) as the controller sees them.
fn instances(s: &DomainsSnapshot) -> Vec<LocalInstance> {
    s.domains
        .iter()
        .filter(|d| d.service.as_deref() == Some(d.name.as_str()))
        .filter_map(|d| {
            Some(LocalInstance {
                service: ServiceId::new(d.name.as_str()).ok()?,
                state: match &d.state {
                    State::Running if d.ready => InstanceState::Ready,
                    State::Running => InstanceState::Starting,
                    State::Paused => InstanceState::Paused,
                    State::Failed { .. } => InstanceState::Failed(d.state.to_string()),
                    State::Created | State::Stopped | State::Destroyed => InstanceState::Stopped,
                },
                address: d.address,
                link: d.link.clone(),
            })
        })
        .collect()
}

/// Each router of the neighborhood and its controller's IPv4 address.
fn addresses(n: &Neighborhood) -> BTreeMap<RouterId, std::net::Ipv4Addr> {
    n.routers
        .iter()
        .filter_map(|r| Some((r.id.clone(), r.control_ipv4()?)))
        .collect()
}

impl<R: Routes> Task<R> {
    async fn run(mut self, mut rx: mpsc::Receiver<Msg>, first: Vec<Op>) {
        let mut neighborhood = self.parts.neighborhood.clone();
        let mut domains = self.parts.domains.as_ref().map(DomainsHandle::watch);
        // What is known already, then the restored intents.
        let mut ops = self
            .ctl
            .handle(Input::Addresses(addresses(&neighborhood.borrow_and_update())));
        if let Some(d) = &mut domains {
            ops.extend(self.ctl.handle(Input::Instances(instances(&d.borrow_and_update()))));
        }
        ops.extend(first);
        self.execute(ops).await;
        // Reconciles ride whatever wakes the task — the protocol publishes the neighborhood at
        // every sample — once RECONCILE_EVERY has passed: a timer of its own would wake the
        // daemon for it alone. The fallback timer covers a task nothing wakes; it is made anew at
        // each turn of the loop and dropped when something else wakes the task. (One timer reset
        // later and later stays in tokio's wheel at its first deadline and wakes the runtime there
        // for nothing: that was one wake-up every two seconds of every daemon.)
        let mut last_reconcile = tokio::time::Instant::now();
        loop {
            if last_reconcile.elapsed() >= RECONCILE_EVERY {
                last_reconcile = tokio::time::Instant::now();
                let ops = self.ctl.handle(Input::Tick);
                self.execute(ops).await;
            }
            let input = tokio::select! {
                m = rx.recv() => match m {
                    None => return,
                    Some(Msg::Open { session, answers }) => {
                        self.sessions.insert(session, answers);
                        continue;
                    }
                    Some(Msg::Close { session }) => {
                        self.sessions.remove(&session);
                        continue;
                    }
                    Some(Msg::InForce(reply)) => {
                        let _ = reply.send(self.ctl.intents().clone());
                        continue;
                    }
                    Some(Msg::Intents { session, sender, intents }) => {
                        let mut ops = Vec::new();
                        for (intent_id, intent) in intents {
                            info!(%intent, session, %sender, "intent");
                            let from = Origin { session, intent_id };
                            ops.extend(self.ctl.handle(Input::Intent { from, sender: sender.clone(), intent }));
                        }
                        self.execute(ops).await;
                        continue;
                    }
                    Some(Msg::Region(region)) => {
                        if *self.ctl.region() == region {
                            continue;
                        }
                        info!(?region, "region");
                        Input::Region(region)
                    }
                    Some(Msg::Ensured { service, present, outcome }) => Input::Ensured { service, present, outcome },
                },
                Ok(()) = neighborhood.changed() => Input::Addresses(addresses(&neighborhood.borrow_and_update())),
                Some(Ok(())) = async { match &mut domains { Some(d) => Some(d.changed().await), None => None } } => {
                    let list = instances(&domains.as_mut().expect("matched").borrow_and_update());
                    Input::Instances(list)
                }
                // Past RECONCILE_EVERY by now: the reconcile at the loop's top.
                () = tokio::time::sleep_until(last_reconcile + RECONCILE_EVERY * 2) => continue,
            };
            let ops = self.ctl.handle(input);
            self.execute(ops).await;
        }
    }

    /// Carries out ops in order; reconciles (at most once per call) where the first asks.
    async fn execute(&mut self, ops: Vec<Op>) {
        let mut reconcile = false;
        for op in ops {
            match op {
                Op::Answer { to, outcome } => self.answer(to, outcome),
                Op::Persist { key, kept } => {
                    let k = format!("{KEY_PREFIX}{key}");
                    let r = match &kept {
                        Some(i) => self
                            .parts
                            .store
                            .put_blob(&k, &serde_json::to_vec(i).expect("intents serialize")),
                        None => self.parts.store.delete_blob(&k),
                    };
                    if let Err(e) = r {
                        warn!(%key, error = %e, "cannot persist an intent");
                    }
                }
                Op::Ensure { service, present } => self.ensure(service, present).await,
                Op::Reconcile => reconcile = true,
            }
        }
        if reconcile {
            let outcomes = self.reconcile().await;
            let ops = self.ctl.handle(Input::Reconciled(outcomes));
            Box::pin(self.execute(ops)).await;
        }
    }

    fn answer(&self, to: Origin, outcome: Result<(), String>) {
        if let Err(e) = &outcome {
            warn!(session = to.session, intent = to.intent_id, error = %e, "intent failed");
        }
        if let Some(s) = self.sessions.get(&to.session) {
            let _ = s.try_send(Answer {
                intent_id: to.intent_id,
                outcome,
            });
        }
    }

    /// Hands an ensure to the domains (it may take a while: a start) and feeds the outcome back
    /// as a message, so intents keep flowing meanwhile.
    async fn ensure(&mut self, service: ServiceId, present: bool) {
        let Some(domains) = self.parts.domains.clone() else {
            let outcome = Err(format!(
                "{} runs no domains (no [domains] in its config)",
                self.ctl.me()
            ));
            let ops = self.ctl.handle(Input::Ensured {
                service,
                present,
                outcome,
            });
            Box::pin(self.execute(ops)).await;
            return;
        };
        let tx = self.tx.clone();
        tokio::spawn(async move {
            let outcome = domains
                .ensure(service.as_str(), present)
                .await
                .map_err(|e| e.to_string());
            let _ = tx
                .send(Msg::Ensured {
                    service,
                    present,
                    outcome,
                })
                .await;
        });
    }

    /// Looks the kernel up, plans and carries out the plan; the outcome of each rule concerned.
    async fn reconcile(&mut self) -> BTreeMap<IntentKey, Result<(), String>> {
        let lookups = self.ctl.lookups();
        let mut view = KernelView::default();
        for a in lookups.next_hops {
            match self.parts.routes.next_hop(a).await {
                Ok(nh) => {
                    view.next_hops.insert(a, nh);
                }
                Err(e) => warn!(address = %a, error = %e, "route lookup failed"),
            }
        }
        for v in lookups.vips {
            match self.parts.routes.fib_match(v).await {
                Ok(m) => {
                    view.vips.insert(v, m);
                }
                Err(e) => warn!(vip = %v, error = %e, "route lookup failed"),
            }
        }
        if let Some(dp) = &self.parts.datapath {
            for (service, t) in dp.redirects().await {
                if let Ok(s) = ServiceId::new(service) {
                    view.redirects.insert(s, t);
                }
            }
        }
        let plan = self.ctl.plan(&view);
        let mut failed: BTreeMap<IntentKey, String> = BTreeMap::new();
        for (key, op) in &plan.ops {
            let r = match op {
                DataplaneOp::ReplaceRoute(route) => {
                    info!(dst = %route.dst, via = %route.gateway, oif = route.oif, %key, "VIP route");
                    self.parts.routes.replace(route).await.map_err(|e| e.to_string())
                }
                DataplaneOp::DeleteRoute { dst, prefix_len } => {
                    info!(%dst, %key, "VIP route withdrawn");
                    self.parts
                        .routes
                        .delete(*dst, *prefix_len)
                        .await
                        .map_err(|e| e.to_string())
                }
                DataplaneOp::SetRedirect { service, to } => match &self.parts.datapath {
                    Some(dp) => {
                        // Without the redirect the route still carries the traffic.
                        if let Err(e) = dp.redirect(service.as_str(), Some(to.clone())).await {
                            warn!(%service, error = %e, "no XDP redirect to the local instance; the route carries it");
                        }
                        Ok(())
                    }
                    None => Ok(()),
                },
                DataplaneOp::ClearRedirect { service } => {
                    if let Some(dp) = &self.parts.datapath
                        && let Err(e) = dp.redirect(service.as_str(), None).await
                    {
                        warn!(%service, error = %e, "cannot clear an XDP redirect");
                    }
                    Ok(())
                }
            };
            if let Err(e) = r {
                failed.entry(key.clone()).or_insert(e);
            }
        }
        for (key, why) in &plan.unapplied {
            tracing::debug!(%key, %why, "rule kept, not applied yet");
        }
        plan.outcomes(&failed)
    }
}

#[cfg(test)]
mod tests;
