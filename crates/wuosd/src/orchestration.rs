//! The orchestration component (fog routers with `[orchestrator]`): a task that owns the pure
//! [`wuos_orchestrator::Orchestrator`], feeds it the typed neighborhood the protocol publishes,
//! the controllers' answers and the operator's policy, and carries out what it asks: intents to
//! controllers (this router's in-process, the others' over Control sessions), decisions into the
//! log. Where each service is served is persisted at every change, and after a restart the
//! placement is rebuilt from it and from the instances the neighborhood advertises
//! ([`Input::Restore`]), so a restart neither points the VIPs back at the data centre nor
//! orphans an instance.
//!
//! ```text
//!  each own sample: neighborhood (watch) ──(first: Restore once the view settled)───────────┐
//!                                       ──Demand, Telemetry, Tick───────────────────────────▶│ Orchestrator
//!  controllers' answers ──InstanceReady / InstanceFailed────────────────────────────────────▶│
//!  wuos policy apply ──ReplacePolicy (parsed, services checked)─────────────────────────────▶│
//!        ◀── intents: Delivery (local controller session | Control session to the router) ◀──┤
//!        ◀── decisions: log (memory + store), `wuos decisions` ◀─────────────────────────────┘
//! ```

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot, watch};
use tracing::{debug, info, warn};
use wuos_controller::Intent;
use wuos_model::daemon::OrchestratorConfig;
use wuos_model::{Classify, ErrorClass, RouterId, ServiceId};
use wuos_orchestrator::{Config, Decision, Input, Orchestrator, Output, Placement, Policy};
use wuos_proto::neighborhood::Neighborhood;

use crate::clock::Clock;
use crate::store::Store;

/// Decisions kept (in memory and in the store).
const MAX_DECISIONS: usize = 1000;
const POLICY_KEY: &str = "orchestrator/policy";
const DECISIONS_KEY: &str = "orchestrator/decisions";
const SERVING_KEY: &str = "orchestrator/serving";

/// A refused policy or request.
#[derive(Debug, thiserror::Error)]
pub enum OrchestrationError {
    /// The policy does not parse, or names a service the catalog does not know (`SOURCE:LINE:COL: …`).
    #[error("{0}")]
    Policy(String),
    #[error("the orchestrator is not running")]
    Gone,
}

impl Classify for OrchestrationError {
    fn class(&self) -> ErrorClass {
        match self {
            OrchestrationError::Policy(_) => ErrorClass::BadInput,
            OrchestrationError::Gone => ErrorClass::Unavailable,
        }
    }
}

/// One decision, as logged and persisted.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DecisionRecord {
    /// Wall clock, ms since the epoch.
    pub at_unix_ms: i64,
    pub service: String,
    /// `move`, `abort`, `failure`, `retire`, `restore`, `orphan`.
    pub kind: String,
    /// Router names (the data centre by its name).
    pub from: String,
    pub to: String,
    /// The rule that chose `to`, if one did.
    #[serde(default)]
    pub rule: String,
    pub reason: String,
    /// When the routers were told to send the service to `to` (a move, once the new instance was
    /// ready).
    #[serde(default)]
    pub switched_unix_ms: Option<i64>,
}

/// The policy in force.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PolicyView {
    /// Canonical text ("" when none).
    pub text: String,
    pub services: Vec<String>,
}

/// The decision log and where each service is served.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DecisionLog {
    pub decisions: Vec<DecisionRecord>,
    pub serving: BTreeMap<String, String>,
}

/// Where intents go. The daemon's: this router's controller in-process, other routers' over
/// Control sessions; tests record them. An answer comes back later through the sender given at
/// [`spawn`] as `(router, intent id, outcome)`.
pub trait Delivery: Send + 'static {
    /// Sends intent `id` to `router`'s controller, whose Control address (when it is not this
    /// router) is `address`.
    fn deliver(
        &mut self,
        router: &RouterId,
        address: Option<SocketAddr>,
        id: u64,
        intent: Intent,
    ) -> impl Future<Output = Result<(), String>> + Send;
}

/// A controller's answer to an intent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    pub router: RouterId,
    pub intent_id: u64,
    pub outcome: Result<(), String>,
}

enum Msg {
    ApplyPolicy {
        text: String,
        source: String,
        reply: oneshot::Sender<Result<PolicyView, OrchestrationError>>,
    },
    Policy(oneshot::Sender<PolicyView>),
    Decisions(oneshot::Sender<DecisionLog>),
}

/// The door into the orchestration task.
#[derive(Clone, Debug)]
pub struct OrchestrationHandle {
    tx: mpsc::Sender<Msg>,
    placements: watch::Receiver<Vec<wuos_proto::pb::Placement>>,
}

impl OrchestrationHandle {
    /// Where this orchestrator serves each service in its region, as its adverts say it.
    pub fn placements(&self) -> watch::Receiver<Vec<wuos_proto::pb::Placement>> {
        self.placements.clone()
    }

    /// Replaces the policy (through the task, so it takes effect in order).
    pub async fn apply_policy(&self, text: String, source: String) -> Result<PolicyView, OrchestrationError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Msg::ApplyPolicy { text, source, reply })
            .await
            .map_err(|_| OrchestrationError::Gone)?;
        rx.await.map_err(|_| OrchestrationError::Gone)?
    }

    pub async fn policy(&self) -> Result<PolicyView, OrchestrationError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Msg::Policy(reply))
            .await
            .map_err(|_| OrchestrationError::Gone)?;
        rx.await.map_err(|_| OrchestrationError::Gone)
    }

    pub async fn decisions(&self) -> Result<DecisionLog, OrchestrationError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Msg::Decisions(reply))
            .await
            .map_err(|_| OrchestrationError::Gone)?;
        rx.await.map_err(|_| OrchestrationError::Gone)
    }
}

/// What the orchestration task works with.
pub struct Parts<D> {
    pub me: RouterId,
    pub cfg: OrchestratorConfig,
    /// The telemetry interval: one round per interval.
    pub interval: Duration,
    /// How long to wait for the view to settle after a start before restoring anyway.
    pub settle: Duration,
    pub clock: Clock,
    pub store: Arc<Store>,
    pub neighborhood: watch::Receiver<Arc<Neighborhood>>,
    /// The services the catalog knows (a policy naming others is refused).
    pub catalog: Vec<String>,
    pub delivery: D,
}

/// Starts the orchestration task; `replies` is where the delivery's answers arrive.
pub fn spawn<D: Delivery>(parts: Parts<D>, replies: mpsc::Receiver<Reply>) -> OrchestrationHandle {
    let (tx, rx) = mpsc::channel(64);
    let (publish, placements) = watch::channel(Vec::new());
    let mut host = Host::new(parts, publish);
    tokio::spawn(async move {
        host.load_policy();
        host.run(rx, replies).await;
    });
    OrchestrationHandle { tx, placements }
}

/// The orchestration task's state.
pub(crate) struct Host<D> {
    parts: Parts<D>,
    orch: Option<Orchestrator>,
    policy: PolicyView,
    /// Intent id → (router, service, whether it starts an instance).
    pending: HashMap<u64, (RouterId, String, bool)>,
    /// Stops and routes that could not be delivered (the router's controller was down), by
    /// (router, what they decide): sent again each round until delivered or superseded.
    undelivered: BTreeMap<(RouterId, String), Intent>,
    next_id: u64,
    decisions: VecDeque<DecisionRecord>,
    /// Where each service was served at the last persist.
    persisted: BTreeMap<String, String>,
    /// The placements persisted before this start, until they are restored.
    to_restore: Option<BTreeMap<String, String>>,
    /// Published after each round for this router's adverts.
    placements: watch::Sender<Vec<wuos_proto::pb::Placement>>,
}

impl<D: Delivery> Host<D> {
    pub(crate) fn new(parts: Parts<D>, placements: watch::Sender<Vec<wuos_proto::pb::Placement>>) -> Self {
        let decisions = parts
            .store
            .get_blob(DECISIONS_KEY)
            .ok()
            .flatten()
            .and_then(|raw| serde_json::from_slice::<VecDeque<DecisionRecord>>(&raw).ok())
            .unwrap_or_default();
        let persisted: BTreeMap<String, String> = parts
            .store
            .get_blob(SERVING_KEY)
            .ok()
            .flatten()
            .and_then(|raw| serde_json::from_slice(&raw).ok())
            .unwrap_or_default();
        Host {
            next_id: 0,
            parts,
            orch: None,
            policy: PolicyView::default(),
            pending: HashMap::new(),
            undelivered: BTreeMap::new(),
            decisions,
            to_restore: Some(persisted.clone()),
            persisted,
            placements,
        }
    }

    fn config(&self) -> Config {
        let mut c = Config::new(self.parts.me.to_string(), self.parts.cfg.datacenter.to_string());
        c.confirm_samples = self.parts.cfg.confirm_samples;
        c.region = self.parts.cfg.regions;
        c.drain_ms = self.parts.cfg.drain.as_millis() as u64;
        c.ready_timeout_ms = self.parts.cfg.ready_timeout.as_millis() as u64;
        c.min_demand_flows = self.parts.cfg.min_demand_flows;
        // Three missed telemetry intervals make the whole view stale.
        c.max_staleness_ms = (self.parts.interval.as_millis() as u64 * 3).max(1000);
        c
    }

    /// Rounds follow this router's own samples (a round as soon as the protocol has the new
    /// figures, rather than up to an interval later), with a timer as the fallback when samples
    /// stop (ready timeouts, drains and staleness still run).
    async fn run(&mut self, mut rx: mpsc::Receiver<Msg>, mut replies: mpsc::Receiver<Reply>) {
        let mut neighborhood = self.parts.neighborhood.clone();
        let mut tick = tokio::time::interval(self.parts.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_sample = 0i64;
        let mut last_round = tokio::time::Instant::now();
        loop {
            tokio::select! {
                Ok(()) = neighborhood.changed() => {
                    let sampled = neighborhood
                        .borrow_and_update()
                        .get(self.parts.me.as_str())
                        .map_or(0, |me| me.sampled_unix_ns);
                    if sampled > last_sample {
                        last_sample = sampled;
                        last_round = tokio::time::Instant::now();
                        self.round().await;
                    }
                }
                _ = tick.tick() => {
                    if last_round.elapsed() >= self.parts.interval {
                        last_round = tokio::time::Instant::now();
                        self.round().await;
                    }
                }
                Some(r) = replies.recv() => self.reply(r).await,
                m = rx.recv() => match m {
                    Some(Msg::ApplyPolicy { text, source, reply }) => {
                        let r = self.replace_policy(&text, &source).await;
                        let _ = reply.send(r);
                    }
                    Some(Msg::Policy(reply)) => {
                        let _ = reply.send(self.policy.clone());
                    }
                    Some(Msg::Decisions(reply)) => {
                        let _ = reply.send(self.log());
                    }
                    None => return,
                },
            }
        }
    }

    /// The policy from the store (applied earlier) or from the config file.
    pub(crate) fn load_policy(&mut self) {
        let stored = self
            .parts
            .store
            .get_blob(POLICY_KEY)
            .ok()
            .flatten()
            .map(|b| (String::from_utf8_lossy(&b).into_owned(), "stored policy".to_string()));
        let from_file = || {
            let p = self.parts.cfg.policy.as_ref()?;
            Some((std::fs::read_to_string(p).ok()?, p.display().to_string()))
        };
        if let Some((text, source)) = stored.or_else(from_file) {
            // Installed without outputs: a new orchestrator decides nothing before its first
            // round (and its restore).
            match self.parse_policy(&text, &source) {
                Ok(p) => {
                    self.install(p, None);
                }
                Err(e) => warn!(error = %e, "the orchestrator starts without a policy"),
            }
        }
    }

    fn parse_policy(&self, text: &str, source: &str) -> Result<Policy, OrchestrationError> {
        let policy = Policy::parse(text).map_err(|e| OrchestrationError::Policy(format!("{source}:{e}")))?;
        let known: Vec<&str> = self.parts.catalog.iter().map(String::as_str).collect();
        policy
            .check_services(&known)
            .map_err(|e| OrchestrationError::Policy(format!("{source}:{e}")))?;
        Ok(policy)
    }

    /// Puts `policy` in force; returns the orchestrator's outputs (none for a new orchestrator).
    fn install(&mut self, policy: Policy, source: Option<&str>) -> Vec<Output> {
        let canonical = policy.to_string();
        let services: Vec<String> = policy.services.iter().map(|s| s.name.clone()).collect();
        let outputs = match &mut self.orch {
            Some(o) => o.handle(Input::ReplacePolicy(policy)),
            None => {
                self.orch = Some(Orchestrator::new(self.config(), policy));
                Vec::new()
            }
        };
        if source.is_some()
            && let Err(e) = self.parts.store.put_blob(POLICY_KEY, canonical.as_bytes())
        {
            warn!(error = %e, "cannot persist the policy");
        }
        self.policy = PolicyView {
            text: canonical,
            services,
        };
        outputs
    }

    /// Parses, checks and installs a policy; the one in force stays on error.
    pub(crate) async fn replace_policy(&mut self, text: &str, source: &str) -> Result<PolicyView, OrchestrationError> {
        let policy = self.parse_policy(text, source)?;
        let outputs = self.install(policy, Some(source));
        info!(%source, services = ?self.policy.services, "policy applied");
        self.execute(outputs).await;
        Ok(self.policy.clone())
    }

    /// Whether the view has settled enough after a start to restore the placements: every router
    /// that served a service before is heard of (fresh), or `settle` has passed.
    fn settled(&self, n: &Neighborhood, placements: &BTreeMap<String, String>) -> bool {
        if self.parts.clock.now_ms() >= self.parts.settle.as_millis() as u64 {
            return true;
        }
        // With regions, a serving router has settled once it is back in our region: right after
        // our restart it advertises none (it lost sight of us), and a restore then would take
        // it for a router that left the region and move its service away.
        let ours = |v: &wuos_proto::neighborhood::RouterView| {
            !self.parts.cfg.regions || v.region.as_ref() == Some(&self.parts.me)
        };
        placements
            .values()
            .filter(|r| **r != self.parts.cfg.datacenter && **r != self.parts.me.as_str())
            .all(|r| n.get(r).is_some_and(|v| !v.stale && ours(v)))
    }

    /// One round: after a start, the restore; then intents owed to controllers that were down,
    /// the neighborhood's figures and demand, and a tick.
    pub(crate) async fn round(&mut self) {
        if self.orch.is_none() {
            return;
        }
        let n = self.parts.neighborhood.borrow().clone();
        if n.get(self.parts.me.as_str()).is_none() {
            // Not even our own advert yet.
            return;
        }
        let now_ms = self.parts.clock.now_ms();
        if let Some(placements) = self.to_restore.take() {
            if !self.settled(&n, &placements) {
                self.to_restore = Some(placements);
                return;
            }
            let instances = wuos_orchestrator::neighborhood::advertised_instances(&n);
            info!(placements = ?placements, instances = instances.len(), "restoring the placements");
            let regions = wuos_orchestrator::region::region_view(&n);
            let outputs = self.orchestrator().handle(Input::Restore {
                regions,
                now_ms,
                placements,
                instances,
            });
            self.execute(outputs).await;
        }
        let owed: Vec<((RouterId, String), Intent)> =
            self.undelivered.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        for ((router, key), intent) in owed {
            let id = self.next_id();
            let address = n.get(router.as_str()).and_then(|r| r.control_address);
            if self.parts.delivery.deliver(&router, address, id, intent).await.is_ok() {
                info!(%router, %key, "delivered an intent owed since the controller was down");
                self.undelivered.remove(&(router, key));
            }
        }
        let mut outputs = Vec::new();
        let o = self.orchestrator();
        for input in wuos_orchestrator::neighborhood::round_inputs(&n, now_ms) {
            outputs.extend(o.handle(input));
        }
        self.execute(outputs).await;
        let placements = wuos_orchestrator::neighborhood::advertised_placements(&self.orchestrator().placements());
        self.placements.send_if_modified(|p| {
            let changed = *p != placements;
            *p = placements;
            changed
        });
    }

    fn orchestrator(&mut self) -> &mut Orchestrator {
        self.orch.as_mut().expect("called with a policy in force")
    }

    fn next_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    pub(crate) async fn reply(&mut self, r: Reply) {
        let Some((to, service, start)) = self.pending.remove(&r.intent_id) else {
            if let Err(e) = &r.outcome {
                warn!(router = %r.router, error = %e, "controller reported an error");
            }
            return;
        };
        if to != r.router {
            return;
        }
        let router = to.to_string();
        let input = match (r.outcome, start) {
            (Ok(()), true) => Input::InstanceReady { service, router },
            (Err(reason), true) => Input::InstanceFailed {
                service,
                router,
                reason,
            },
            (Err(reason), false) => {
                warn!(%router, %service, %reason, "intent failed");
                return;
            }
            (Ok(()), false) => return,
        };
        let outputs = self.orchestrator().handle(input);
        self.execute(outputs).await;
    }

    async fn execute(&mut self, outputs: Vec<Output>) {
        for out in outputs {
            match out {
                Output::Intent { router, intent } => {
                    if let wuos_orchestrator::Intent::RouteService { service, to_router, .. } = &intent {
                        self.mark_switched(service, to_router);
                    }
                    self.send(router, intent).await;
                }
                Output::Decision(d) => self.record(d),
                Output::Ignored { reason } => debug!(%reason, "orchestrator ignored an input"),
            }
        }
        let serving = self.orch.as_ref().map(Orchestrator::serving).unwrap_or_default();
        if serving != self.persisted {
            match self
                .parts
                .store
                .put_blob(SERVING_KEY, &serde_json::to_vec(&serving).expect("a map serializes"))
            {
                Ok(()) => self.persisted = serving,
                Err(e) => warn!(error = %e, "cannot persist where services are served"),
            }
        }
    }

    /// Notes when the latest move of `service` switched its routes (to `to`, where it moved):
    /// the first route intent towards it. A restore's re-announcement switches nothing.
    fn mark_switched(&mut self, service: &str, to: &str) {
        let now = self.parts.clock.unix_ms_at(self.parts.clock.now_ms());
        let latest = self
            .decisions
            .iter_mut()
            .rev()
            .find(|d| d.service == service && matches!(d.kind.as_str(), "move" | "retire" | "restore"));
        if let Some(d) = latest
            && d.kind != "restore"
            && d.to == to
            && d.switched_unix_ms.is_none()
        {
            d.switched_unix_ms = Some(now);
            self.persist_decisions();
        }
    }

    fn persist_decisions(&self) {
        if let Ok(raw) = serde_json::to_vec(&self.decisions)
            && let Err(e) = self.parts.store.put_blob(DECISIONS_KEY, &raw)
        {
            warn!(error = %e, "cannot persist the decision log");
        }
    }

    fn name_of(&self, p: &Placement) -> String {
        match p {
            Placement::Local => self.parts.me.to_string(),
            Placement::Router(r) => r.clone(),
            Placement::Datacenter => self.parts.cfg.datacenter.to_string(),
        }
    }

    fn record(&mut self, d: Decision) {
        info!(decision = %d, "orchestrator decision");
        let rec = DecisionRecord {
            at_unix_ms: self.parts.clock.unix_ms_at(d.at_ms),
            service: d.service.clone(),
            kind: d.kind.to_string(),
            from: self.name_of(&d.from),
            to: self.name_of(&d.to),
            rule: d.rule.map(|r| r.to_string()).unwrap_or_default(),
            reason: d.reason.clone(),
            switched_unix_ms: None,
        };
        self.decisions.push_back(rec);
        while self.decisions.len() > MAX_DECISIONS {
            self.decisions.pop_front();
        }
        self.persist_decisions();
    }

    /// Sends one orchestrator intent to `router`'s controller (a start that cannot be delivered
    /// fails at once; stops and routes are owed until the controller is back).
    async fn send(&mut self, router: String, intent: wuos_orchestrator::Intent) {
        use wuos_orchestrator::Intent as O;
        let Ok(to) = RouterId::new(router.as_str()) else {
            warn!(%router, "not a router id; intent dropped");
            return;
        };
        let (typed, service, start) = match intent {
            O::StartInstance { service } | O::StopInstance { service } if ServiceId::new(service.as_str()).is_err() => {
                warn!(%service, "not a service name; intent dropped");
                return;
            }
            O::StartInstance { service } => (
                Intent::Instance {
                    service: ServiceId::new(service.as_str()).expect("checked above"),
                    present: true,
                },
                service,
                true,
            ),
            O::StopInstance { service } => (
                Intent::Instance {
                    service: ServiceId::new(service.as_str()).expect("checked above"),
                    present: false,
                },
                service,
                false,
            ),
            O::RouteService {
                service,
                vip,
                to_router,
            } => {
                let Some(vip) = vip else {
                    warn!(%service, "the policy gives the service no VIP (match ... to ADDRESS): nothing to route");
                    return;
                };
                let (Ok(s), Ok(serving)) = (ServiceId::new(service.as_str()), RouterId::new(to_router.as_str())) else {
                    warn!(%service, %to_router, "not a service or router name; intent dropped");
                    return;
                };
                (
                    Intent::Rule {
                        service: s,
                        vip,
                        serving: Some(serving),
                    },
                    service,
                    false,
                )
            }
        };
        // Keyed as the target's controller keys it: by service and kind (the sender is us).
        let key = typed.key(None).to_string();
        let id = self.next_id();
        self.pending.insert(id, (to.clone(), service.clone(), start));
        // A newer intent supersedes one still owed.
        self.undelivered.remove(&(to.clone(), key.clone()));
        let address = self
            .parts
            .neighborhood
            .borrow()
            .get(to.as_str())
            .and_then(|r| r.control_address);
        if let Err(e) = self.parts.delivery.deliver(&to, address, id, typed.clone()).await {
            warn!(router = %to, %service, error = %e, "cannot deliver an intent");
            self.pending.remove(&id);
            if start {
                let outputs = self.orchestrator().handle(Input::InstanceFailed {
                    service,
                    router: to.to_string(),
                    reason: e,
                });
                Box::pin(self.execute(outputs)).await;
            } else {
                self.undelivered.insert((to, key), typed);
            }
        }
    }

    pub(crate) fn log(&self) -> DecisionLog {
        DecisionLog {
            decisions: self.decisions.iter().cloned().collect(),
            serving: self.orch.as_ref().map(Orchestrator::serving).unwrap_or_default(),
        }
    }
}

#[cfg(test)]
mod tests;
