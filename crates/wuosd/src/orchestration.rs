//! The orchestrator host (fog routers with `[orchestrator]`): feeds the pure
//! [`wuos_orchestrator::Orchestrator`] with this router's view of its neighborhood, the demand the
//! routers advertise and the controllers' answers, and carries out what it asks: intents over
//! `Control` sessions to each router's controller, and decisions into the log.
//!
//! ```text
//!  every telemetry interval: own advert + view ──Telemetry, Demand, Tick──▶ Orchestrator
//!  controllers' Ack / IntentError ──InstanceReady / InstanceFailed──────────▶     │
//!  wuos policy apply ──ReplacePolicy (parsed, services checked)─────────────▶     │
//!        ◀── Intent{router} ── session to router's control_address ◀─────────────┤
//!        ◀── Decision ── log (memory + store), `wuos decisions` ◀────────────────┘
//! ```
//!
//! Everything runs on one task that owns the orchestrator, so inputs are handled in order.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tracing::{info, warn};
use wuos_orchestrator::{Candidate, Config, Figures, Input, Intent, Orchestrator, Output, Placement, Policy, Role};
use wuos_proto::pb;
use wuos_proto::pb::session_envelope::Body;
use wuos_proto::session::Session;

use crate::config::OrchestratorConfig;
use crate::daemon::{Shared, unix_ns};

/// Decisions kept (in memory and in the store).
const MAX_DECISIONS: usize = 1000;
const POLICY_KEY: &str = "orchestrator/policy";
const DECISIONS_KEY: &str = "orchestrator/decisions";

/// Requests to the orchestration task.
pub enum Event {
    /// A controller answered.
    Reply { router: String, body: Body },
    /// `wuos policy apply`.
    ApplyPolicy {
        text: String,
        source: String,
        done: oneshot::Sender<Result<pb::PolicyReply, String>>,
    },
}

/// What the admin API reads, and the door into the task.
#[derive(Debug)]
pub struct Orchestration {
    events: mpsc::Sender<Event>,
    log: Mutex<Log>,
}

#[derive(Debug, Default)]
struct Log {
    decisions: VecDeque<pb::DecisionRecord>,
    policy: String,
    services: Vec<String>,
    serving: BTreeMap<String, String>,
}

impl Orchestration {
    /// Applies a policy (through the task, so it takes effect in order).
    pub async fn apply_policy(&self, text: String, source: String) -> Result<pb::PolicyReply, String> {
        let (done, rx) = oneshot::channel();
        self.events
            .send(Event::ApplyPolicy { text, source, done })
            .await
            .map_err(|_| "the orchestrator is not running".to_string())?;
        rx.await.map_err(|_| "the orchestrator stopped".to_string())?
    }

    pub fn policy(&self) -> pb::PolicyReply {
        let l = self.log.lock().unwrap_or_else(|p| p.into_inner());
        pb::PolicyReply {
            text: l.policy.clone(),
            services: l.services.clone(),
        }
    }

    pub fn decisions(&self) -> pb::DecisionList {
        let l = self.log.lock().unwrap_or_else(|p| p.into_inner());
        pb::DecisionList {
            decisions: l.decisions.iter().cloned().collect(),
            serving: l.serving.clone().into_iter().collect(),
        }
    }
}

/// Starts the orchestration task; returns the handle the daemon keeps.
pub fn start(shared: Arc<Shared>, cfg: OrchestratorConfig) -> Arc<Orchestration> {
    let (tx, rx) = mpsc::channel(256);
    let mut log = Log::default();
    if let Ok(Some(raw)) = shared.store.get_blob(DECISIONS_KEY)
        && let Ok(d) = serde_json::from_slice::<Vec<serde_json::Value>>(&raw)
    {
        log.decisions = d.iter().filter_map(record_from_json).collect();
    }
    let o = Arc::new(Orchestration {
        events: tx.clone(),
        log: Mutex::new(log),
    });
    tokio::spawn(run(shared, cfg, o.clone(), tx, rx));
    o
}

struct Task {
    shared: Arc<Shared>,
    cfg: OrchestratorConfig,
    handle: Arc<Orchestration>,
    events: mpsc::Sender<Event>,
    orch: Option<Orchestrator>,
    links: HashMap<String, Link>,
    /// Intent id → (router, service, whether it starts an instance).
    pending: HashMap<u64, (String, String, bool)>,
    /// Stops and routes that could not be delivered (the router's controller was down), by
    /// (router, what they decide): sent again each round until delivered or superseded.
    undelivered: BTreeMap<(String, String), pb::Intent>,
    next_id: u64,
    session_id: u64,
}

/// A session to one controller.
struct Link {
    session: Arc<Mutex<Session>>,
    tx: mpsc::Sender<pb::SessionEnvelope>,
}

async fn run(
    shared: Arc<Shared>,
    cfg: OrchestratorConfig,
    handle: Arc<Orchestration>,
    events: mpsc::Sender<Event>,
    mut rx: mpsc::Receiver<Event>,
) {
    let mut t = Task {
        session_id: shared.boot_id().max(1),
        shared,
        cfg,
        handle,
        events,
        orch: None,
        links: HashMap::new(),
        pending: HashMap::new(),
        undelivered: BTreeMap::new(),
        next_id: 1,
    };
    t.load_policy().await;
    let mut tick = tokio::time::interval(t.shared.cfg.telemetry_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => t.telemetry().await,
            ev = rx.recv() => match ev {
                Some(Event::Reply { router, body }) => t.reply(router, body).await,
                Some(Event::ApplyPolicy { text, source, done }) => {
                    let r = t.replace_policy(&text, &source).await;
                    let _ = done.send(r);
                }
                None => return,
            },
        }
    }
}

fn role_of(r: pb::Role) -> Role {
    match r {
        pb::Role::Fog => Role::Fog,
        pb::Role::Dc => Role::Dc,
        pb::Role::Host => Role::Host,
        pb::Role::Edge | pb::Role::Unspecified => Role::Edge,
    }
}

fn figures(r: Option<&pb::Resources>) -> Figures {
    let Some(r) = r else { return Figures::default() };
    Figures {
        cpu_used_pct: Some(r.cpu_used_pct),
        mem_used_pct: Some(r.mem_used_pct),
        cpu_free_cores: Some(r.free_cpu_cores),
        mem_free_mib: Some(r.free_mem_bytes as f64 / (1 << 20) as f64),
        cpu_pressure: r.cpu_pressure.map(|p| p.some_avg10),
        mem_pressure: r.mem_pressure.map(|p| p.some_avg10),
        io_pressure: r.io_pressure.map(|p| p.some_avg10),
    }
}

impl Task {
    fn config(&self) -> Config {
        let mut c = Config::new(self.shared.cfg.router_id.clone(), self.cfg.datacenter.clone());
        c.confirm_samples = self.cfg.confirm_samples;
        c.drain_ms = self.cfg.drain.as_millis() as u64;
        c.ready_timeout_ms = self.cfg.ready_timeout.as_millis() as u64;
        c.min_demand_flows = self.cfg.min_demand_flows;
        // Three missed telemetry intervals make the whole view stale.
        c.max_staleness_ms = (self.shared.cfg.telemetry_interval.as_millis() as u64 * 3).max(1000);
        c
    }

    /// The policy from the store (applied earlier) or from the config file.
    async fn load_policy(&mut self) {
        let stored = self
            .shared
            .store
            .get_blob(POLICY_KEY)
            .ok()
            .flatten()
            .map(|b| (String::from_utf8_lossy(&b).into_owned(), "stored policy".to_string()));
        let from_file = || {
            let p = self.cfg.policy.as_ref()?;
            Some((std::fs::read_to_string(p).ok()?, p.display().to_string()))
        };
        if let Some((text, source)) = stored.or_else(from_file)
            && let Err(e) = self.replace_policy(&text, &source).await
        {
            warn!(error = %e, "the orchestrator starts without a policy");
        }
    }

    /// Parses, checks and installs a policy; the one in force stays on error.
    async fn replace_policy(&mut self, text: &str, source: &str) -> Result<pb::PolicyReply, String> {
        let policy = Policy::parse(text).map_err(|e| format!("{source}:{e}"))?;
        let known = self.known_services().await;
        let known_ref: Vec<&str> = known.iter().map(String::as_str).collect();
        policy.check_services(&known_ref).map_err(|e| format!("{source}:{e}"))?;
        let canonical = policy.to_string();
        let services: Vec<String> = policy.services.iter().map(|s| s.name.clone()).collect();
        let outputs = match &mut self.orch {
            Some(o) => o.handle(Input::ReplacePolicy(policy)),
            None => {
                let cfg = self.config();
                cfg.validate().map_err(|e| e.to_string())?;
                self.orch = Some(Orchestrator::new(cfg, policy));
                Vec::new()
            }
        };
        let _ = self.shared.store.put_blob(POLICY_KEY, canonical.as_bytes());
        {
            let mut l = self.handle.log.lock().unwrap_or_else(|p| p.into_inner());
            l.policy = canonical.clone();
            l.services = services.clone();
        }
        info!(%source, services = ?services, "policy applied");
        self.execute(outputs).await;
        Ok(pb::PolicyReply {
            text: canonical,
            services,
        })
    }

    /// The services the catalog knows (this router's; a fog router without domains knows none).
    async fn known_services(&self) -> Vec<String> {
        let s = self.shared.clone();
        tokio::task::spawn_blocking(move || {
            s.domains
                .as_ref()
                .map(|d| d.lock().unwrap_or_else(|p| p.into_inner()).catalog_services())
                .unwrap_or_default()
        })
        .await
        .unwrap_or_default()
    }

    /// One round: intents owed to controllers that were down, the neighborhood's figures and
    /// demand, then a tick.
    async fn telemetry(&mut self) {
        if self.orch.is_none() {
            return;
        }
        let owed: Vec<((String, String), pb::Intent)> =
            self.undelivered.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        for ((router, key), intent) in owed {
            let body = Body::Intents(pb::IntentBatch { intents: vec![intent] });
            if self.deliver(&router, body).await.is_ok() {
                info!(%router, %key, "delivered an intent owed since the controller was down");
                self.undelivered.remove(&(router, key));
            }
        }
        let now = self.shared.now_ms();
        let status = self.shared.status();
        let me = self.shared.cfg.router_id.to_string();
        let mut candidates = Vec::new();
        let mut demand = Vec::new();
        if let Some(own) = &status.own {
            candidates.push(Candidate {
                name: me.clone(),
                hops: 0,
                latency_ms: Some(0.0),
                role: role_of(own.role()),
                stale: false,
                figures: figures(own.resources.as_ref()),
            });
            demand.extend(own.demand.iter().map(|d| (me.clone(), d.clone())));
        }
        for v in &status.view {
            let Some(a) = &v.advert else { continue };
            candidates.push(Candidate {
                name: a.origin.clone(),
                hops: v.hops,
                latency_ms: Some(v.latency_ms.max(0.0)),
                role: role_of(a.role()),
                stale: v.stale,
                figures: figures(a.resources.as_ref()),
            });
            if !v.stale {
                demand.extend(a.demand.iter().map(|d| (a.origin.clone(), d.clone())));
            }
        }
        let mut outputs = Vec::new();
        if let Some(o) = &mut self.orch {
            for (router, d) in demand {
                outputs.extend(o.handle(Input::Demand {
                    now_ms: now,
                    service: d.service,
                    router,
                    flows: d.flows_per_s,
                }));
            }
            outputs.extend(o.handle(Input::Telemetry {
                now_ms: now,
                candidates,
            }));
            outputs.extend(o.handle(Input::Tick { now_ms: now }));
        }
        self.execute(outputs).await;
    }

    async fn reply(&mut self, router: String, body: Body) {
        let (ids, failure): (Vec<u64>, Option<String>) = match body {
            Body::Ack(a) => (a.intent_ids, None),
            Body::Error(e) => (vec![e.intent_id], Some(format!("{}: {}", e.code, e.message))),
            Body::Intents(_) => return,
        };
        let mut outputs = Vec::new();
        for id in ids {
            let Some((to, service, start)) = self.pending.remove(&id) else {
                if let Some(f) = &failure {
                    warn!(%router, error = %f, "controller reported an error");
                }
                continue;
            };
            if to != router {
                continue;
            }
            match (&failure, start) {
                (None, true) => {
                    if let Some(o) = &mut self.orch {
                        outputs.extend(o.handle(Input::InstanceReady { service, router: to }));
                    }
                }
                (Some(reason), true) => {
                    if let Some(o) = &mut self.orch {
                        outputs.extend(o.handle(Input::InstanceFailed {
                            service,
                            router: to,
                            reason: reason.clone(),
                        }));
                    }
                }
                (Some(reason), false) => warn!(router = %to, %service, %reason, "intent failed"),
                (None, false) => {}
            }
        }
        self.execute(outputs).await;
    }

    async fn execute(&mut self, outputs: Vec<Output>) {
        for out in outputs {
            match out {
                Output::Intent { router, intent } => {
                    if let Intent::RouteService { service, .. } = &intent {
                        self.mark_switched(service);
                    }
                    self.send(router, intent).await
                }
                Output::Decision(d) => self.record(d),
                Output::Ignored { reason } => tracing::debug!(%reason, "orchestrator ignored an input"),
            }
        }
        let serving: BTreeMap<String, String> = self
            .orch
            .iter()
            .flat_map(|o| {
                o.services()
                    .map(|(n, s)| (n.to_string(), self.name_of(s.phase().serving())))
            })
            .collect();
        self.handle.log.lock().unwrap_or_else(|p| p.into_inner()).serving = serving;
    }

    /// Notes when the latest move of `service` switched its routes.
    fn mark_switched(&mut self, service: &str) {
        let mut l = self.handle.log.lock().unwrap_or_else(|p| p.into_inner());
        let last = l
            .decisions
            .iter_mut()
            .rev()
            .find(|d| d.service == service && d.kind != "abort");
        if let Some(d) = last
            && d.switched_unix_ms == 0
        {
            d.switched_unix_ms = unix_ns() / 1_000_000;
        }
    }

    fn name_of(&self, p: &Placement) -> String {
        match p {
            Placement::Local => self.shared.cfg.router_id.to_string(),
            Placement::Router(r) => r.clone(),
            Placement::Datacenter => self.cfg.datacenter.to_string(),
        }
    }

    fn record(&mut self, d: wuos_orchestrator::Decision) {
        info!(decision = %d, "orchestrator decision");
        let now_ms = self.shared.now_ms();
        let at_unix_ms = unix_ns() / 1_000_000 - now_ms.saturating_sub(d.at_ms) as i64;
        let rec = pb::DecisionRecord {
            at_unix_ms,
            service: d.service.clone(),
            kind: d.kind.to_string(),
            from: self.name_of(&d.from),
            to: self.name_of(&d.to),
            rule: d.rule.map(|r| r.to_string()).unwrap_or_default(),
            reason: d.reason.clone(),
            switched_unix_ms: 0,
        };
        let mut l = self.handle.log.lock().unwrap_or_else(|p| p.into_inner());
        l.decisions.push_back(rec);
        while l.decisions.len() > MAX_DECISIONS {
            l.decisions.pop_front();
        }
        let json: Vec<serde_json::Value> = l.decisions.iter().map(record_json).collect();
        if let Ok(raw) = serde_json::to_vec(&json) {
            let _ = self.shared.store.put_blob(DECISIONS_KEY, &raw);
        }
    }

    /// Sends one intent to `router`'s controller (a start that cannot be delivered fails at once).
    async fn send(&mut self, router: String, intent: Intent) {
        let id = self.next_id;
        self.next_id += 1;
        let (kind, service, start) = match intent {
            Intent::StartInstance { service } => (
                pb::intent::Kind::ServiceInstance(pb::ServiceInstanceIntent {
                    service: service.clone(),
                    present: true,
                }),
                service,
                true,
            ),
            Intent::StopInstance { service } => (
                pb::intent::Kind::ServiceInstance(pb::ServiceInstanceIntent {
                    service: service.clone(),
                    present: false,
                }),
                service,
                false,
            ),
            Intent::RouteService {
                service,
                vip,
                to_router,
            } => {
                let Some(vip) = vip else {
                    warn!(%service, "the policy gives the service no VIP (match ... to ADDRESS): nothing to route");
                    return;
                };
                (
                    pb::intent::Kind::ServiceRule(pb::ServiceRuleIntent {
                        service: service.clone(),
                        vip: vip.to_string(),
                        local: to_router == router,
                        serving_router: to_router,
                    }),
                    service,
                    false,
                )
            }
        };
        self.pending.insert(id, (router.clone(), service.clone(), start));
        let key = match &kind {
            pb::intent::Kind::ServiceRule(_) => format!("rule/{service}"),
            _ => format!("instance/{service}"),
        };
        let intent = pb::Intent { id, kind: Some(kind) };
        // A newer intent supersedes one still owed.
        self.undelivered.remove(&(router.clone(), key.clone()));
        let batch = Body::Intents(pb::IntentBatch {
            intents: vec![intent.clone()],
        });
        if let Err(e) = self.deliver(&router, batch).await {
            warn!(%router, %service, error = %e, "cannot deliver an intent");
            self.pending.remove(&id);
            if !start {
                // Stops and routes are owed until the controller is back.
                self.undelivered.insert((router.clone(), key), intent);
            }
            if start && let Some(o) = &mut self.orch {
                let outputs = o.handle(Input::InstanceFailed {
                    service,
                    router,
                    reason: e,
                });
                Box::pin(self.execute(outputs)).await;
            }
        }
    }

    async fn deliver(&mut self, router: &str, body: Body) -> Result<(), String> {
        // A session whose stream ended (the controller restarted) is opened again.
        if self.links.get(router).is_some_and(|l| l.tx.is_closed()) {
            self.links.remove(router);
        }
        if !self.links.contains_key(router) {
            let link = self.connect(router).await?;
            self.links.insert(router.to_string(), link);
        }
        let link = &self.links[router];
        let env = link.session.lock().unwrap_or_else(|p| p.into_inner()).envelope(body);
        self.shared.metrics.bytes("sent", prost::Message::encoded_len(&env));
        if link.tx.send(env).await.is_err() {
            self.links.remove(router);
            return Err(format!("the session to {router} closed"));
        }
        Ok(())
    }

    async fn connect(&self, router: &str) -> Result<Link, String> {
        let address = self
            .shared
            .control_address_of(router)
            .ok_or_else(|| format!("{router} is not in the view (no control address)"))?;
        let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{address}"))
            .map_err(|e| e.to_string())?
            .connect_timeout(Duration::from_secs(2));
        let channel = endpoint
            .connect()
            .await
            .map_err(|e| format!("cannot connect to {router}'s controller at {address}: {e}"))?;
        let mut client = pb::control_client::ControlClient::new(channel);
        let (tx, rx) = mpsc::channel::<pb::SessionEnvelope>(64);
        let mut replies = client
            .session(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
            .map_err(|e| format!("{router} refused the session: {}", e.message()))?
            .into_inner();
        let session = Arc::new(Mutex::new(Session::opened(
            self.shared.cfg.router_id.clone(),
            self.session_id,
        )));
        let (events, session2, name) = (self.events.clone(), session.clone(), router.to_string());
        tokio::spawn(async move {
            while let Ok(Some(env)) = replies.message().await {
                let checked = session2
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .receive(&env)
                    .cloned();
                match checked {
                    Ok(body) => {
                        let _ = events
                            .send(Event::Reply {
                                router: name.clone(),
                                body,
                            })
                            .await;
                    }
                    Err(e) => warn!(router = %name, body = ?e.body, "bad envelope from a controller"),
                }
            }
            info!(router = %name, "session to the controller ended");
        });
        info!(%router, %address, "session to the controller opened");
        Ok(Link { session, tx })
    }
}

fn record_json(d: &pb::DecisionRecord) -> serde_json::Value {
    serde_json::json!({
        "at_unix_ms": d.at_unix_ms, "service": d.service, "kind": d.kind, "from": d.from,
        "to": d.to, "rule": d.rule, "reason": d.reason, "switched_unix_ms": d.switched_unix_ms,
    })
}

fn record_from_json(v: &serde_json::Value) -> Option<pb::DecisionRecord> {
    let s = |k: &str| v[k].as_str().map(str::to_string);
    Some(pb::DecisionRecord {
        at_unix_ms: v["at_unix_ms"].as_i64()?,
        service: s("service")?,
        kind: s("kind")?,
        from: s("from")?,
        to: s("to")?,
        rule: s("rule").unwrap_or_default(),
        reason: s("reason").unwrap_or_default(),
        switched_unix_ms: v["switched_unix_ms"].as_i64().unwrap_or(0),
    })
}
