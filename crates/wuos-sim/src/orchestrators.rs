//! The orchestrators of a simulated network: a set of [`Site`]s, each an
//! [`Orchestrator`](wuos_orchestrator::Orchestrator) on one router, driven as `wuosd` drives
//! its own (`crates/wuosd/src/orchestration.rs`):
//!
//! ```text
//!  each own sample: Instance::neighborhood ──(first: Restore once the view settled)──┐
//!                                           ──round_inputs: Demand, Telemetry, Tick──▶│ Orchestrator
//!  controllers' answers to starts ──InstanceReady / InstanceFailed──────────────────▶│
//!  events: apply_policy ──ReplacePolicy (or a new orchestrator)──────────────────────▶│
//!        ◀── Send { to, id, intent } for the simulator to deliver (owed while unreachable) ◀┤
//!        ◀── decisions: the site's log ◀─────────────────────────────────────────────┘
//! ```
//!
//! As in the daemon: an orchestrator intent becomes the controller's typed intent
//! ([`wuos_controller::Intent`]; a route without a VIP, or a name that is not a service's or a
//! router's, is dropped); it goes to a router's controller when that router is this one or a
//! running router of the latest neighborhood (it advertises a control address); a start that
//! cannot be delivered fails at once ([`Input::InstanceFailed`]); stops and routes are owed and
//! sent again each round. A start's answer comes back by its id: ready, or failed with the
//! controller's reason (a refusal by the router's region, a newer intent) as
//! [`Input::InstanceFailed`]; the answers to stops and routes change nothing. Where each service
//! is served is persisted at every change and, after the router restarts, restored once the view
//! has settled: every router that served (but this one and the data centre) is heard of again,
//! fresh and, with regions, back in this orchestrator's region — or the dead interval and two
//! telemetry intervals have passed. The policy in force is persisted too.
//!
//! Each site keeps the routers of its latest neighborhood (its view; with regions it works in
//! the part of it whose adverts name it, see [`crate::region`]).

use std::collections::{BTreeMap, VecDeque};

use serde::Serialize;
use wuos_model::{RouterId, ServiceId};
use wuos_orchestrator::{Config, Decision, Input, Intent, Orchestrator, Output, Placement, Policy};
use wuos_proto::neighborhood::Neighborhood;
use wuos_proto::pb;

use crate::network::{Network, RouterIx};

/// An intent for the simulator to deliver to a router's controller.
#[derive(Clone, Debug, PartialEq)]
pub struct Send {
    pub to: RouterIx,
    /// Its id: the controller answers with it.
    pub id: u64,
    pub intent: wuos_controller::Intent,
}

/// One decision, as the daemon logs it (routers by name, the data centre by its name).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DecisionRecord {
    /// Simulated time, ms.
    pub at_ms: u64,
    pub service: String,
    /// `move`, `abort`, `failure`, `retire`, `restore`, `orphan`.
    pub kind: String,
    pub from: String,
    pub to: String,
    /// The rule that chose `to`, if one did.
    pub rule: String,
    pub reason: String,
    /// When the routers were told to send the service to `to` (a move, once the new instance
    /// was ready), ms.
    pub switched_ms: Option<u64>,
}

/// What a site did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct SiteCounters {
    /// Rounds run (one per own sample with a policy in force).
    pub rounds: u64,
    /// Intents handed to the network.
    pub intents_sent: u64,
    /// Starts that could not be delivered (failed at once).
    pub starts_undeliverable: u64,
    /// Stops and routes owed to unreachable routers, then delivered.
    pub owed_delivered: u64,
    /// Routes without a VIP, names that are not a service's or a router's, routers the network
    /// does not have.
    pub intents_dropped: u64,
    /// Starts a controller answered with an error (refused by the router's region, superseded).
    pub starts_failed: u64,
    /// Inputs the orchestrator ignored (late acks, unknown services).
    pub ignored: u64,
    /// Policies applied.
    pub policies_applied: u64,
}

/// One orchestrator, on its router.
#[derive(Clone, Debug)]
pub struct Site {
    router: RouterIx,
    config: Config,
    /// How long after a start the placements are restored even if the view has not settled.
    settle_ms: u64,
    orch: Option<Orchestrator>,
    /// The policy in force (persisted).
    policy: Option<(Policy, String)>,
    /// Where each service was served at the last change (persisted).
    persisted: BTreeMap<String, String>,
    to_restore: Option<BTreeMap<String, String>>,
    started_ms: u64,
    /// Stops and routes not delivered yet, by (router, what they decide).
    owed: BTreeMap<(RouterIx, String), wuos_controller::Intent>,
    /// Starts sent and not answered yet: intent id → (router, service).
    pending: BTreeMap<u64, (RouterIx, String)>,
    /// The last intent id given (never reset: an answer to an earlier incarnation finds nothing).
    next_id: u64,
    decisions: Vec<DecisionRecord>,
    /// The running routers of the latest neighborhood that advertise a control address, and
    /// this one: where intents can go. Sorted.
    reachable: Vec<RouterIx>,
    /// Routers of the latest neighborhood (this one included), by name.
    view: Vec<String>,
    counters: SiteCounters,
}

/// What a site needs of the network while it works: names, and who runs.
pub struct Reach<'a> {
    pub net: &'a Network,
    pub running: &'a dyn Fn(RouterIx) -> bool,
}

impl Site {
    /// The orchestrator of `router`, not started; `config` names this router and the data
    /// centre.
    pub fn new(router: RouterIx, config: Config, settle_ms: u64) -> Self {
        Site {
            router,
            config,
            settle_ms,
            orch: None,
            policy: None,
            persisted: BTreeMap::new(),
            to_restore: None,
            started_ms: 0,
            owed: BTreeMap::new(),
            pending: BTreeMap::new(),
            next_id: 0,
            decisions: Vec::new(),
            reachable: Vec::new(),
            view: Vec::new(),
            counters: SiteCounters::default(),
        }
    }

    /// Its router.
    pub fn router(&self) -> RouterIx {
        self.router
    }

    /// Its configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The orchestrator, while its router runs with a policy in force.
    pub fn orchestrator(&self) -> Option<&Orchestrator> {
        self.orch.as_ref()
    }

    /// The policy in force and where it came from.
    pub fn policy(&self) -> Option<&(Policy, String)> {
        self.policy.as_ref()
    }

    /// The decision log.
    pub fn decisions(&self) -> &[DecisionRecord] {
        &self.decisions
    }

    /// What it did.
    pub fn counters(&self) -> SiteCounters {
        self.counters
    }

    /// Routers of its latest neighborhood, itself included.
    pub fn view(&self) -> &[String] {
        &self.view
    }

    /// Intents owed to unreachable routers.
    pub fn owed(&self) -> usize {
        self.owed.len()
    }

    /// Where each service is served (persisted across restarts).
    pub fn serving(&self) -> &BTreeMap<String, String> {
        &self.persisted
    }

    /// Its placements as its router advertises them.
    pub fn placements(&self) -> Vec<pb::Placement> {
        let Some(o) = &self.orch else { return Vec::new() };
        wuos_orchestrator::neighborhood::advertised_placements(&o.placements())
    }

    /// The policy of its daemon's configuration, in force from its router's start.
    pub fn configure(&mut self, policy: Policy, source: String) {
        self.policy = Some((policy, source));
    }

    /// Its router started at `now_ms`: an orchestrator with the persisted policy, which restores
    /// the persisted placements at its first settled round.
    pub fn start(&mut self, now_ms: u64) {
        self.started_ms = now_ms;
        self.to_restore = Some(self.persisted.clone());
        self.orch = self
            .policy
            .as_ref()
            .map(|(p, _)| Orchestrator::new(self.config.clone(), p.clone()));
    }

    /// Its router stopped or crashed: what was not persisted is lost.
    pub fn halt(&mut self) {
        self.orch = None;
        self.to_restore = None;
        self.owed.clear();
        self.pending.clear();
        self.reachable.clear();
    }

    /// Puts `policy` in force (the router runs): a new policy for the orchestrator, or a new
    /// orchestrator, which decides nothing before its first round.
    pub fn apply_policy(&mut self, policy: Policy, source: String, now_ms: u64, reach: &Reach) -> Vec<Send> {
        self.counters.policies_applied += 1;
        self.policy = Some((policy.clone(), source));
        match &mut self.orch {
            Some(o) => {
                let out = o.handle(Input::ReplacePolicy(policy));
                self.execute(out, now_ms, reach)
            }
            None => {
                self.orch = Some(Orchestrator::new(self.config.clone(), policy));
                Vec::new()
            }
        }
    }

    /// One round at an own sample of its router, with the router's neighborhood `n`: the
    /// restore after a start, the intents owed, then the neighborhood's figures and demand and
    /// a tick.
    pub fn round(&mut self, n: &Neighborhood, now_ms: u64, reach: &Reach) -> Vec<Send> {
        self.view = n.routers.iter().map(|r| r.id.to_string()).collect();
        let mut reachable: Vec<RouterIx> = n
            .routers
            .iter()
            .filter(|r| r.control_address.is_some())
            .filter_map(|r| reach.net.index(r.id.as_str()))
            .collect();
        reachable.push(self.router);
        reachable.sort_unstable();
        reachable.dedup();
        self.reachable = reachable;
        if self.orch.is_none() || n.get(reach.net.name_of(self.router)).is_none() {
            return Vec::new();
        }
        self.counters.rounds += 1;
        let mut sends = Vec::new();
        if let Some(placements) = self.to_restore.take() {
            if !self.settled(n, &placements, now_ms) {
                self.to_restore = Some(placements);
                return sends;
            }
            let instances = wuos_orchestrator::neighborhood::advertised_instances(n);
            let out = self.handle(Input::Restore {
                now_ms,
                placements,
                instances,
                regions: wuos_orchestrator::region::region_view(n),
            });
            sends.extend(self.execute(out, now_ms, reach));
        }
        let owed: Vec<(RouterIx, String)> = self.owed.keys().cloned().collect();
        for key in owed {
            if self.deliverable(key.0, reach) {
                let intent = self.owed.remove(&key).expect("listed above");
                self.counters.owed_delivered += 1;
                self.counters.intents_sent += 1;
                // As the daemon: nobody waits for the answer to a stop or a route.
                let id = self.next_id();
                sends.push(Send { to: key.0, id, intent });
            }
        }
        let mut out = Vec::new();
        for input in wuos_orchestrator::neighborhood::round_inputs(n, now_ms) {
            out.extend(self.handle(input));
        }
        sends.extend(self.execute(out, now_ms, reach));
        sends
    }

    /// The controller on `router` answers intent `id`: a start's instance is ready, or failed
    /// (the answers to stops and routes change nothing, as in the daemon).
    pub fn answer(
        &mut self,
        id: u64,
        router: RouterIx,
        outcome: Result<(), String>,
        now_ms: u64,
        reach: &Reach,
    ) -> Vec<Send> {
        let Some((to, service)) = self.pending.remove(&id) else {
            return Vec::new();
        };
        if to != router {
            return Vec::new();
        }
        let router = reach.net.name_of(to).to_owned();
        let input = match outcome {
            Ok(()) => Input::InstanceReady { service, router },
            Err(reason) => {
                self.counters.starts_failed += 1;
                Input::InstanceFailed {
                    service,
                    router,
                    reason,
                }
            }
        };
        let out = self.handle(input);
        self.execute(out, now_ms, reach)
    }

    fn next_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    fn handle(&mut self, input: Input) -> Vec<Output> {
        self.orch.as_mut().map(|o| o.handle(input)).unwrap_or_default()
    }

    /// Whether the placements can be restored, as the daemon decides it: every router that
    /// served before (but this one and the data centre) is heard of, fresh and, with regions,
    /// back in this region — right after a restart a serving router advertises none (it lost
    /// sight of us), and a restore then would take it for a router that left the region — or the
    /// settling time has passed.
    fn settled(&self, n: &Neighborhood, placements: &BTreeMap<String, String>, now_ms: u64) -> bool {
        if now_ms.saturating_sub(self.started_ms) >= self.settle_ms {
            return true;
        }
        let me = self.config.local.as_str();
        let ours = |v: &wuos_proto::neighborhood::RouterView| {
            !self.config.region || v.region.as_ref().is_some_and(|r| r.as_str() == me)
        };
        placements
            .values()
            .filter(|r| **r != self.config.datacenter && **r != me)
            .all(|r| n.get(r).is_some_and(|v| !v.stale && ours(v)))
    }

    fn deliverable(&self, to: RouterIx, reach: &Reach) -> bool {
        self.reachable.binary_search(&to).is_ok() && (reach.running)(to)
    }

    /// Carries out the orchestrator's outputs (and those of the failures they cause); returns
    /// the intents to deliver.
    fn execute(&mut self, outputs: Vec<Output>, now_ms: u64, reach: &Reach) -> Vec<Send> {
        let mut sends = Vec::new();
        let mut work: VecDeque<Output> = outputs.into();
        while let Some(out) = work.pop_front() {
            match out {
                Output::Intent { router, intent } => {
                    if let Intent::RouteService { service, to_router, .. } = &intent {
                        self.mark_switched(service, to_router, now_ms);
                    }
                    if let Some(failed) = self.send(&router, intent, reach, &mut sends) {
                        work.extend(self.handle(failed));
                    }
                }
                Output::Decision(d) => self.record(d),
                Output::Ignored { .. } => self.counters.ignored += 1,
            }
        }
        if let Some(o) = &self.orch {
            let serving = o.serving();
            if serving != self.persisted {
                self.persisted = serving;
            }
        }
        sends
    }

    /// Sends one intent, or owes it; a start that cannot be delivered comes back as the
    /// failure to feed the orchestrator.
    fn send(&mut self, router: &str, intent: Intent, reach: &Reach, sends: &mut Vec<Send>) -> Option<Input> {
        let Some((typed, service, start)) = typed(intent) else {
            self.counters.intents_dropped += 1;
            return None;
        };
        let Some(to) = reach.net.index(router) else {
            self.counters.intents_dropped += 1;
            return None;
        };
        // Keyed as the target's controller keys it: by service and kind (the sender is us).
        let key = typed.key(None).to_string();
        // A newer intent supersedes one still owed.
        self.owed.remove(&(to, key.clone()));
        if self.deliverable(to, reach) {
            self.counters.intents_sent += 1;
            let id = self.next_id();
            if start {
                self.pending.insert(id, (to, service));
            }
            sends.push(Send { to, id, intent: typed });
            return None;
        }
        if start {
            self.counters.starts_undeliverable += 1;
            return Some(Input::InstanceFailed {
                service,
                router: router.to_owned(),
                reason: format!("cannot reach the controller of {router}"),
            });
        }
        self.owed.insert((to, key), typed);
        None
    }

    /// Notes when the latest move of `service` switched its routes (to `to`): the first route
    /// intent towards it. A restore's re-announcement switches nothing.
    fn mark_switched(&mut self, service: &str, to: &str, now_ms: u64) {
        let latest = self
            .decisions
            .iter_mut()
            .rev()
            .find(|d| d.service == service && matches!(d.kind.as_str(), "move" | "retire" | "restore"));
        if let Some(d) = latest
            && d.kind != "restore"
            && d.to == to
            && d.switched_ms.is_none()
        {
            d.switched_ms = Some(now_ms);
        }
    }

    fn name_of(&self, p: &Placement) -> String {
        match p {
            Placement::Local => self.config.local.clone(),
            Placement::Router(r) => r.clone(),
            Placement::Datacenter => self.config.datacenter.clone(),
        }
    }

    fn record(&mut self, d: Decision) {
        self.decisions.push(DecisionRecord {
            at_ms: d.at_ms,
            service: d.service.clone(),
            kind: d.kind.to_string(),
            from: self.name_of(&d.from),
            to: self.name_of(&d.to),
            rule: d.rule.map(|r| r.to_string()).unwrap_or_default(),
            reason: d.reason,
            switched_ms: None,
        });
    }
}

/// The controller's intent for an orchestrator's, as the daemon converts it, with its service
/// and whether it is a start; `None` for what the daemon drops: a route without a VIP (nothing
/// to route) and names that are not a service's or a router's.
fn typed(intent: Intent) -> Option<(wuos_controller::Intent, String, bool)> {
    use wuos_controller::Intent as C;
    let id = |s: &str| ServiceId::new(s).ok();
    Some(match intent {
        Intent::StartInstance { service } => (
            C::Instance {
                service: id(&service)?,
                present: true,
            },
            service,
            true,
        ),
        Intent::StopInstance { service } => (
            C::Instance {
                service: id(&service)?,
                present: false,
            },
            service,
            false,
        ),
        Intent::RouteService {
            service,
            vip,
            to_router,
        } => (
            C::Rule {
                service: id(&service)?,
                vip: vip?,
                serving: Some(RouterId::new(to_router).ok()?),
            },
            service,
            false,
        ),
    })
}
