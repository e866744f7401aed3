//! The orchestrator: every service's [`ServiceState`], driven by [`Input`]s, returning
//! [`Output`]s.
//!
//! # Decisions
//!
//! Made at each telemetry sample, for each service in [`Phase::Stable`], with the policy's
//! evaluator ([`Service::evaluate_with`]) and [`Service::viable_rule`] of the serving
//! placement:
//!
//! - **leave**: the serving placement is viable under no rule (its figures fail, it went stale
//!   or left the view, its instance failed) for `confirm_samples` consecutive samples → move to
//!   what the evaluator chose now;
//! - **upgrade**: a rule earlier than the serving placement's has had a viable candidate for
//!   the policy's `hold` (continuously, and for at least `confirm_samples` samples) → move to
//!   what the evaluator chose now;
//! - **stay** otherwise — in particular while the serving placement stays viable under the rule
//!   the evaluator picks, even when the evaluator would now prefer another router of that rule
//!   (stickiness).
//!
//! No move happens without demand: a service whose demand in the window is 0 (or under
//! `min_demand_flows`) stays where it is, viable or not.
//!
//! # Moves
//!
//! Make before break: start the new instance, wait for it to be ready, move the routes of every
//! router of the neighborhood, let the old instance drain, stop it. The data centre always runs
//! the service: a move there switches the routes at once, and its instance is never stopped.
//! A start that fails or times out is aborted (the new instance is stopped, the service stays)
//! and that router is not chosen again for `failure_backoff_ms`.
//!
//! # Restart
//!
//! The daemon persists [`Orchestrator::serving`] at every change. After a restart it sends one
//! [`Input::Restore`] before any telemetry: the persisted placements and the instances the
//! neighborhood advertises. For each service of the policy, in name order:
//!
//! | persisted | advertised at the persisted router | served at | outputs |
//! |---|---|---|---|
//! | router R (not the data centre) | a ready instance | R (adopted) | `restore` decision |
//! | router R | an instance not ready | the data centre | `restore` decision, stop at R |
//! | router R | nothing | the data centre | `restore` decision |
//! | the data centre, or nothing | — | the data centre | `restore` decision only with orphans |
//!
//! Every other instance outside the data centre, in router order, is an orphan: an `orphan`
//! decision and a stop. Instances of services not in the policy are left alone (an operator
//! started them, not this orchestrator). The routes
//! are not touched: the first telemetry sample announces the restored placements to every
//! router of the neighborhood, as it announces a new service. A `Restore` after a telemetry
//! sample, or a second one, is ignored.
//!
//! # Regions
//!
//! With [`Config::region`] (the default) the orchestrator works only inside its region
//! ([`crate::region`]): the routers whose latest adverts name it, and its own.
//!
//! - **Placement**: the policy is evaluated over this router, its region's routers and the data
//!   centre only; a rule naming a router outside the region chooses the data centre instead.
//! - **Routes**: VIP rules go to the routers of the region only (never to another
//!   orchestrator's router). The data centre, shared by every region, is told once to route each
//!   VIP to its own instance, and never anything else.
//! - **Membership changes**: a router that joins the region is told where each service is
//!   served; one that leaves is forgotten (its controller drops this orchestrator's rules itself
//!   when it changes region) and told again if it comes back. A service served by a router that
//!   left the region moves at once (after `confirm_samples`, demand or not); a start on a router
//!   that left is aborted.
//! - **Restart**: only instances on routers of the region can be orphans.
//! - **Neighbors**: the other orchestrators' advertised placements are kept
//!   ([`Orchestrator::neighbor_placements`]) and its own are published
//!   ([`Orchestrator::placements`]); no decision uses a neighbor region's instance yet.
//!
//! So a decision that says a service is served at X holds for every router of the region: each
//! was told X when the routes moved, or when it joined.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use wuos_policy::{Candidate, EvalOptions, Placement, Policy, Role, RuleRef, Service};

use crate::config::Config;
use crate::demand::DemandTable;
use crate::input::{AdvertisedInstance, Input};
use crate::output::{Decision, DecisionKind, Intent, Output};
use crate::region::{RegionPlacement, RegionView};
use crate::service::{Phase, ServiceState};

/// The placement state machine of one router's orchestrator. Pure: no I/O, no clock.
#[derive(Clone, Debug)]
pub struct Orchestrator {
    cfg: Config,
    policy: Policy,
    services: BTreeMap<String, ServiceState>,
    candidates: Vec<Candidate>,
    /// With regions: the candidates it may place on (this router, its region, the data centre).
    eligible: Vec<Candidate>,
    /// The latest sample's regions.
    regions: RegionView,
    /// Who is told routes: without regions this router and every non-host router of the latest
    /// telemetry; with regions this router, its region's routers and the data centre.
    neighborhood: BTreeSet<String>,
    last_telemetry_ms: Option<u64>,
    /// When a `Restore` was handled.
    restored_ms: Option<u64>,
    now_ms: u64,
    demand: DemandTable,
}

/// A move decided: from where, to where, by which rule, why.
struct Move {
    from: Placement,
    to: Placement,
    rule: RuleRef,
    reason: String,
}

/// What the per-service steps read: everything but the service states.
struct Ctx<'a> {
    cfg: &'a Config,
    policy: &'a Policy,
    /// What placements are chosen from: every candidate, or with regions the eligible ones.
    candidates: &'a [Candidate],
    neighborhood: &'a BTreeSet<String>,
    regions: &'a RegionView,
    demand: &'a DemandTable,
    now_ms: u64,
}

/// The router a placement names.
fn router_of<'p>(cfg: &'p Config, p: &'p Placement) -> &'p str {
    match p {
        Placement::Local => &cfg.local,
        Placement::Router(name) => name,
        Placement::Datacenter => &cfg.datacenter,
    }
}

impl Ctx<'_> {
    /// The router a placement names.
    fn router_of<'p>(&'p self, p: &'p Placement) -> &'p str {
        router_of(self.cfg, p)
    }

    /// `Router(local)` is `Local`, `Router(datacenter)` is `Datacenter`.
    fn normalize(&self, p: Placement) -> Placement {
        match p {
            Placement::Router(name) if name == self.cfg.local => Placement::Local,
            Placement::Router(name) if name == self.cfg.datacenter => Placement::Datacenter,
            p => p,
        }
    }

    /// Whether the orchestrator may serve at `p`: always without regions; with regions this
    /// router, the data centre or a router of its region.
    fn in_region(&self, p: &Placement) -> bool {
        match p {
            Placement::Router(name) if self.cfg.region => self.candidates.iter().any(|c| c.name == *name),
            _ => true,
        }
    }

    /// With regions, the data centre is told only to serve the VIPs itself.
    fn is_shared_dc(&self, router: &str) -> bool {
        self.cfg.region && router == self.cfg.datacenter
    }

    /// Where `router` is told to send a service served at `to`.
    fn target_for<'p>(&'p self, router: &str, to: &'p Placement) -> &'p str {
        if self.is_shared_dc(router) {
            &self.cfg.datacenter
        } else {
            self.router_of(to)
        }
    }

    fn route(&self, out: &mut Vec<Output>, router: &str, service: &str, vip: Option<Ipv4Addr>, to: &str) {
        self.intent(
            out,
            router,
            Intent::RouteService {
                service: service.to_string(),
                vip,
                to_router: to.to_string(),
            },
        );
    }

    fn intent(&self, out: &mut Vec<Output>, router: &str, intent: Intent) {
        out.push(Output::Intent {
            router: router.to_string(),
            intent,
        });
    }

    fn decision(
        &self,
        out: &mut Vec<Output>,
        service: &str,
        kind: DecisionKind,
        (from, to): (&Placement, &Placement),
        rule: Option<RuleRef>,
        reason: String,
    ) {
        out.push(Output::Decision(Decision {
            at_ms: self.now_ms,
            service: service.to_string(),
            kind,
            from: from.clone(),
            to: to.clone(),
            rule,
            reason,
        }));
    }

    /// Tells every router of the neighborhood to send the service to `to` (with regions, the
    /// data centre only once: it always serves the VIP itself).
    fn route_all(&self, out: &mut Vec<Output>, service: &str, st: &mut ServiceState, to: &Placement) {
        for r in self.neighborhood {
            let told = st.routed.as_ref().is_some_and(|routed| routed.contains(r));
            if !(self.is_shared_dc(r) && told) {
                self.route(out, r, service, st.vip, self.target_for(r, to));
            }
        }
        st.routed = Some(self.neighborhood.clone());
    }

    /// Tells the routers new to the neighborhood where the service is: all of them when the
    /// service is new (the VIP leads to the data centre until a move), then each router that
    /// joins.
    fn announce(&self, out: &mut Vec<Output>, service: &str, st: &mut ServiceState) {
        let routed = st.routed.get_or_insert_with(Default::default);
        for r in self.neighborhood {
            if routed.insert(r.clone()) {
                self.route(out, r, service, st.vip, self.target_for(r, st.phase.serving()));
            }
        }
    }

    /// With regions, after a membership change: routers that left are forgotten (told again if
    /// they come back) and a start on a router that left is aborted.
    fn rehome(&self, out: &mut Vec<Output>, service: &str, st: &mut ServiceState) {
        if !self.cfg.region {
            return;
        }
        if let Some(routed) = &mut st.routed {
            routed.retain(|r| self.neighborhood.contains(r));
        }
        if let Phase::Starting { to, .. } = &st.phase
            && !self.in_region(to)
        {
            let why = format!("{} left {}'s region", self.router_of(to), self.cfg.local);
            self.abort(out, service, st, why);
        }
    }

    /// Ready timeouts and the end of drains.
    fn timers(&self, out: &mut Vec<Output>, service: &str, st: &mut ServiceState) {
        match &st.phase {
            Phase::Starting { to, since_ms, .. }
                if self.now_ms.saturating_sub(*since_ms) >= self.cfg.ready_timeout_ms =>
            {
                let reason = format!(
                    "{} not ready after {} ms",
                    self.router_of(to),
                    self.now_ms.saturating_sub(*since_ms)
                );
                self.abort(out, service, st, reason);
            }
            Phase::Draining { old, new, until_ms } if self.now_ms >= *until_ms => {
                if *old != Placement::Datacenter {
                    let service = service.to_string();
                    self.intent(out, self.router_of(old), Intent::StopInstance { service });
                }
                st.phase = Phase::Stable { at: new.clone() };
            }
            _ => {}
        }
    }

    /// Gives up a start: stop the new instance, stay, keep away from that router for a while.
    fn abort(&self, out: &mut Vec<Output>, service: &str, st: &mut ServiceState, why: String) {
        let Phase::Starting { from, to, rule, .. } = st.phase.clone() else {
            return;
        };
        let router = self.router_of(&to).to_string();
        let reason = format!(
            "{why}; staying at {from}; {router} not chosen for {service} again for {} ms",
            self.cfg.failure_backoff_ms
        );
        self.decision(out, service, DecisionKind::Abort, (&from, &to), Some(rule), reason);
        let until = self.now_ms.saturating_add(self.cfg.failure_backoff_ms);
        self.intent(
            out,
            &router,
            Intent::StopInstance {
                service: service.to_string(),
            },
        );
        st.backoff.insert(router, until);
        st.phase = Phase::Stable { at: from };
        st.reset_counters();
    }

    /// Begins a move from the serving placement to `to`.
    fn start_move(&self, out: &mut Vec<Output>, service: &str, st: &mut ServiceState, m: Move) {
        let Move { from, to, rule, reason } = m;
        self.decision(out, service, DecisionKind::Move, (&from, &to), Some(rule), reason);
        st.reset_counters();
        if to == Placement::Datacenter {
            self.route_all(out, service, st, &to);
            st.phase = Phase::Draining {
                old: from,
                new: to,
                until_ms: self.now_ms.saturating_add(self.cfg.drain_ms),
            };
        } else {
            let router = self.router_of(&to).to_string();
            self.intent(
                out,
                &router,
                Intent::StartInstance {
                    service: service.to_string(),
                },
            );
            st.phase = Phase::Starting {
                from,
                to,
                since_ms: self.now_ms,
                rule,
            };
        }
    }

    /// The placement decision of one service at one sample; see the module docs.
    fn decide(&self, out: &mut Vec<Output>, svc: &Service, st: &mut ServiceState, demand: f64, note: &str) {
        let Phase::Stable { at } = &st.phase else { return };
        let at = at.clone();
        let now = self.now_ms;
        st.backoff.retain(|_, until| *until > now);
        let exclude: Vec<String> = st.backoff.keys().cloned().collect();
        let focus = match &at {
            Placement::Datacenter => None,
            p => Some(self.router_of(p)),
        };
        let opts = EvalOptions {
            exclude: &exclude,
            focus,
        };
        let eval = svc.evaluate_with(self.candidates, &opts);
        let mut best = self.normalize(eval.placement.clone());
        let mut outside_note = String::new();
        if !self.in_region(&best) {
            // A rule naming a router of another region (`place at`, `otherwise at`).
            outside_note = format!(
                "; {best} is outside {}'s region: the data centre instead",
                self.cfg.local
            );
            best = Placement::Datacenter;
        }
        // With regions, a serving router that left the region is not viable, whatever the policy.
        let outside = !self.in_region(&at);
        let mut current = if outside {
            None
        } else {
            svc.viable_rule(self.candidates, &at, &opts)
        };
        if at == Placement::Datacenter {
            // The data centre may also be named by a `place at` rule.
            let named = svc.viable_rule(self.candidates, &Placement::Router(self.cfg.datacenter.clone()), &opts);
            current = match (current, named) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
        }
        let demand_ok = demand > 0.0 && demand >= self.cfg.min_demand_flows;
        let reason = |why: String| {
            format!(
                "{note}{why}; {}{outside_note}; demand {demand:.1} flows/s",
                eval.explanation
            )
        };
        match current {
            None => {
                st.better_since_ms = None;
                st.better_samples = 0;
                st.unviable_samples = st.unviable_samples.saturating_add(1);
                // Leaving the region does not wait for demand.
                if st.unviable_samples >= self.cfg.confirm_samples && best != at && (demand_ok || outside) {
                    let n = st.unviable_samples;
                    let why = if outside {
                        format!("{at} left {}'s region", self.cfg.local)
                    } else if n > 1 {
                        format!("{at} not viable for {n} samples")
                    } else {
                        format!("{at} not viable")
                    };
                    let m = Move {
                        from: at,
                        to: best,
                        rule: eval.rule,
                        reason: reason(why),
                    };
                    self.start_move(out, &svc.name, st, m);
                }
            }
            Some(rule) => {
                st.unviable_samples = 0;
                if eval.rule < rule && best != at {
                    let since = *st.better_since_ms.get_or_insert(now);
                    st.better_samples = st.better_samples.saturating_add(1);
                    let held = now.saturating_sub(since);
                    if held >= svc.hold_ms && st.better_samples >= self.cfg.confirm_samples && demand_ok {
                        let why = format!(
                            "{} viable for {held} ms (hold {} ms), better than {rule} at {at}",
                            eval.rule, svc.hold_ms
                        );
                        let m = Move {
                            from: at,
                            to: best,
                            rule: eval.rule,
                            reason: reason(why),
                        };
                        self.start_move(out, &svc.name, st, m);
                    }
                } else {
                    st.better_since_ms = None;
                    st.better_samples = 0;
                }
            }
        }
    }

    /// Restores one service of the policy after a restart (see the module docs): `persisted`
    /// is the router that served it before, `found` every router advertising an instance of it
    /// (true when ready).
    fn restore(
        &self,
        out: &mut Vec<Output>,
        service: &str,
        st: &mut ServiceState,
        persisted: Option<&str>,
        found: &BTreeMap<String, bool>,
    ) {
        let dc = Placement::Datacenter;
        let from = persisted.map_or(dc.clone(), |r| self.normalize(Placement::Router(r.to_string())));
        let mut stop_at = None;
        let (to, reason) = match (&from, persisted) {
            (Placement::Datacenter, Some(_)) => (
                dc.clone(),
                format!("restart: {service} was served at the data centre: stays there"),
            ),
            (Placement::Datacenter, None) => (
                dc.clone(),
                format!("restart: nothing persisted for {service}: served at the data centre"),
            ),
            (p, _) => {
                let r = self.router_of(p);
                let was = format!("restart: {service} was served at {r}; {r} advertises");
                match found.get(r) {
                    Some(true) => (p.clone(), format!("{was} a healthy instance: adopted")),
                    Some(false) => {
                        stop_at = Some(r.to_string());
                        let reason = format!(
                            "{was} no healthy instance (its instance is not ready: stopped): back to the data centre"
                        );
                        (dc.clone(), reason)
                    }
                    None => (
                        dc.clone(),
                        format!("{was} no healthy instance: back to the data centre"),
                    ),
                }
            }
        };
        // The persisted router's instance is adopted or stopped above; the data centre's always
        // runs; with regions, an instance outside the region is another orchestrator's business.
        let orphans: Vec<&String> = found
            .keys()
            .filter(|r| **r != self.cfg.datacenter && (from == dc || r.as_str() != self.router_of(&from)))
            .filter(|r| !self.cfg.region || **r == self.cfg.local || self.regions.is_member(r, &self.cfg.local))
            .collect();
        if from != dc || !orphans.is_empty() {
            self.decision(out, service, DecisionKind::Restore, (&from, &to), None, reason);
        }
        if let Some(router) = stop_at {
            let service = service.to_string();
            self.intent(out, &router, Intent::StopInstance { service });
        }
        for router in orphans {
            let why = format!("restart: {service} instance at {router} is not serving; stopped");
            self.orphan(out, service, router, why);
        }
        *st = ServiceState::new(st.vip);
        st.phase = Phase::Stable { at: to };
    }

    /// Stops an instance that serves nothing, found after a restart.
    fn orphan(&self, out: &mut Vec<Output>, service: &str, router: &str, reason: String) {
        let at = self.normalize(Placement::Router(router.to_string()));
        self.decision(out, service, DecisionKind::Orphan, (&at, &at), None, reason);
        let service = service.to_string();
        self.intent(out, router, Intent::StopInstance { service });
    }

    /// Sends a service that left the policy back to the data centre.
    fn retire(&self, out: &mut Vec<Output>, service: &str, st: &mut ServiceState) {
        let serving = st.phase.serving().clone();
        let stop = |out: &mut Vec<Output>, p: &Placement| {
            if *p != Placement::Datacenter {
                let service = service.to_string();
                self.intent(out, self.router_of(p), Intent::StopInstance { service });
            }
        };
        let pending = match &st.phase {
            Phase::Starting { to, .. } => Some(to.clone()),
            Phase::Draining { old, .. } => Some(old.clone()),
            Phase::Stable { .. } => None,
        };
        if serving == Placement::Datacenter && pending.is_none() {
            return;
        }
        let reason = format!("{service} is no longer in the policy");
        let dc = Placement::Datacenter;
        self.decision(out, service, DecisionKind::Retire, (&serving, &dc), None, reason);
        if let Some(p) = pending {
            stop(out, &p);
        }
        st.reset_counters();
        if serving == Placement::Datacenter {
            st.phase = Phase::Stable { at: dc };
        } else {
            self.route_all(out, service, st, &dc);
            st.phase = Phase::Draining {
                old: serving,
                new: dc,
                until_ms: self.now_ms.saturating_add(self.cfg.drain_ms),
            };
        }
    }
}

/// The routers told routes: this router and every router of the view that is not a host; with
/// regions, only those of its region, and the data centre.
fn neighborhood(cfg: &Config, candidates: &[Candidate], regions: &RegionView) -> BTreeSet<String> {
    let mut set: BTreeSet<String> = candidates
        .iter()
        .filter(|c| c.role != Role::Host)
        .filter(|c| !cfg.region || c.name == cfg.datacenter || regions.is_member(&c.name, &cfg.local))
        .map(|c| c.name.clone())
        .collect();
    set.insert(cfg.local.clone());
    set
}

/// With regions, the candidates a service may be placed on: this router, the routers of its
/// region, the data centre.
fn eligible(cfg: &Config, candidates: &[Candidate], regions: &RegionView) -> Vec<Candidate> {
    if !cfg.region {
        return Vec::new();
    }
    candidates
        .iter()
        .filter(|c| c.name == cfg.local || c.name == cfg.datacenter || regions.is_member(&c.name, &cfg.local))
        .cloned()
        .collect()
}

impl Orchestrator {
    /// An orchestrator with every service of `policy` in the data centre and no telemetry yet.
    ///
    /// `cfg` should have passed [`Config::validate`]; if not, numbers are clamped into range.
    pub fn new(cfg: Config, policy: Policy) -> Self {
        let cfg = cfg.clamped();
        let services = policy
            .services
            .iter()
            .map(|s| (s.name.clone(), ServiceState::new(s.vip())))
            .collect();
        let neighborhood = neighborhood(&cfg, &[], &RegionView::default());
        Orchestrator {
            cfg,
            policy,
            services,
            candidates: Vec::new(),
            eligible: Vec::new(),
            regions: RegionView::default(),
            neighborhood,
            last_telemetry_ms: None,
            restored_ms: None,
            now_ms: 0,
            demand: DemandTable::default(),
        }
    }

    /// The configuration (after clamping).
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// The policy in force.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// One service's state (also of a service being retired).
    pub fn service(&self, name: &str) -> Option<&ServiceState> {
        self.services.get(name)
    }

    /// Every service's state, by name.
    pub fn services(&self) -> impl Iterator<Item = (&str, &ServiceState)> {
        self.services.iter().map(|(n, s)| (n.as_str(), s))
    }

    /// The latest telemetry (stale flags forced on once it is older than `max_staleness_ms`).
    pub fn candidates(&self) -> &[Candidate] {
        &self.candidates
    }

    /// Who is told routes: without regions, this router and every router of the view but hosts;
    /// with regions, this router, the routers of its region and the data centre (in view).
    pub fn routers_told(&self) -> &BTreeSet<String> {
        &self.neighborhood
    }

    /// With regions, the routers of its region as the latest sample says (this router included).
    pub fn region_members(&self) -> BTreeSet<String> {
        let mut set: BTreeSet<String> = self
            .regions
            .members
            .iter()
            .filter(|(_, o)| **o == self.cfg.local)
            .map(|(r, _)| r.clone())
            .collect();
        if self.cfg.region {
            set.insert(self.cfg.local.clone());
        }
        set
    }

    /// What its router advertises as its placements: for each service of the policy, the router
    /// serving it now and its VIP.
    pub fn placements(&self) -> Vec<RegionPlacement> {
        self.services
            .iter()
            .filter(|(_, st)| st.in_policy)
            .map(|(name, st)| RegionPlacement {
                service: name.clone(),
                serving: router_of(&self.cfg, st.phase.serving()).to_string(),
                vip: st.vip,
            })
            .collect()
    }

    /// The placements the other orchestrators of the view advertise, by orchestrator (fresh
    /// adverts of the latest sample). Kept for the status; no decision uses them.
    pub fn neighbor_placements(&self) -> impl Iterator<Item = (&str, &[RegionPlacement])> {
        self.regions
            .placements
            .iter()
            .filter(|(o, _)| **o != self.cfg.local)
            .map(|(o, p)| (o.as_str(), p.as_slice()))
    }

    /// Where each service of the policy is served now: service → router name (this router's
    /// or the data centre's included). The daemon persists it at every change and gives it back
    /// in [`Input::Restore`] after a restart.
    pub fn serving(&self) -> BTreeMap<String, String> {
        self.services
            .iter()
            .filter(|(_, st)| st.in_policy)
            .map(|(name, st)| (name.clone(), router_of(&self.cfg, st.phase.serving()).to_string()))
            .collect()
    }

    /// The latest time seen, ms.
    pub fn now_ms(&self) -> u64 {
        self.now_ms
    }

    /// A service's demand now: new flows per second over the reports in the window.
    pub fn demand(&self, service: &str) -> f64 {
        self.demand.total(service, self.now_ms, self.cfg.demand_window_ms)
    }

    /// Handles one input; returns the intents to send and the decisions to log, in order.
    pub fn handle(&mut self, input: Input) -> Vec<Output> {
        let mut out = Vec::new();
        match input {
            Input::Telemetry {
                now_ms,
                candidates,
                regions,
            } => {
                self.advance(now_ms, &mut out);
                self.eligible = eligible(&self.cfg, &candidates, &regions);
                self.neighborhood = neighborhood(&self.cfg, &candidates, &regions);
                self.candidates = candidates;
                self.regions = regions;
                self.last_telemetry_ms = Some(self.now_ms);
                let (ctx, services) = self.split();
                for (name, st) in services.iter_mut() {
                    ctx.rehome(&mut out, name, st);
                    ctx.announce(&mut out, name, st);
                }
                self.decide_all("", &mut out);
            }
            Input::Demand {
                now_ms,
                service,
                router,
                flows,
            } => {
                self.advance(now_ms, &mut out);
                if self.services.contains_key(&service) {
                    self.demand.record(service, router, self.now_ms, flows);
                } else {
                    out.push(Output::Ignored {
                        reason: format!("demand for unknown service {service:?} from {router}"),
                    });
                }
            }
            Input::InstanceReady { service, router } => self.ready(&service, &router, &mut out),
            Input::InstanceFailed {
                service,
                router,
                reason,
            } => self.failed(&service, &router, &reason, &mut out),
            Input::Tick { now_ms } => {
                self.advance(now_ms, &mut out);
                self.demand.prune(self.now_ms, self.cfg.demand_window_ms);
                if let Some(t) = self.last_telemetry_ms {
                    let age = self.now_ms.saturating_sub(t);
                    if age > self.cfg.max_staleness_ms {
                        for c in self.candidates.iter_mut().chain(self.eligible.iter_mut()) {
                            c.stale = true;
                        }
                        self.decide_all(&format!("no telemetry for {age} ms; "), &mut out);
                    }
                }
            }
            Input::ReplacePolicy(policy) => self.replace(policy, &mut out),
            Input::Restore {
                now_ms,
                placements,
                instances,
                regions,
            } => self.restore(now_ms, &placements, instances, regions, &mut out),
        }
        out
    }

    /// The read-only context and the service states, borrowed apart.
    fn split(&mut self) -> (Ctx<'_>, &mut BTreeMap<String, ServiceState>) {
        let ctx = Ctx {
            cfg: &self.cfg,
            policy: &self.policy,
            candidates: if self.cfg.region {
                &self.eligible
            } else {
                &self.candidates
            },
            neighborhood: &self.neighborhood,
            regions: &self.regions,
            demand: &self.demand,
            now_ms: self.now_ms,
        };
        (ctx, &mut self.services)
    }

    /// Moves the clock (never backwards) and runs the timers; forgets retired services once
    /// back in the data centre.
    fn advance(&mut self, now_ms: u64, out: &mut Vec<Output>) {
        self.now_ms = self.now_ms.max(now_ms);
        let (ctx, services) = self.split();
        for (name, st) in services.iter_mut() {
            ctx.timers(out, name, st);
        }
        self.services.retain(|_, st| {
            st.in_policy
                || st.phase
                    != Phase::Stable {
                        at: Placement::Datacenter,
                    }
        });
    }

    fn decide_all(&mut self, note: &str, out: &mut Vec<Output>) {
        let (ctx, services) = self.split();
        for (name, st) in services.iter_mut() {
            if !st.in_policy {
                continue;
            }
            let Some(svc) = ctx.policy.service(name) else { continue };
            let demand = ctx.demand.total(name, ctx.now_ms, ctx.cfg.demand_window_ms);
            ctx.decide(out, svc, st, demand, note);
        }
    }

    fn ready(&mut self, service: &str, router: &str, out: &mut Vec<Output>) {
        let (ctx, services) = self.split();
        let Some(st) = services.get_mut(service) else {
            out.push(Output::Ignored {
                reason: format!("{service} ready at {router}, but {service} is not a known service"),
            });
            return;
        };
        match st.phase.clone() {
            Phase::Starting { from, to, .. } if ctx.router_of(&to) == router => {
                ctx.route_all(out, service, st, &to);
                st.phase = Phase::Draining {
                    old: from,
                    new: to,
                    until_ms: ctx.now_ms.saturating_add(ctx.cfg.drain_ms),
                };
            }
            phase => out.push(Output::Ignored {
                reason: format!("{service} ready at {router}, but {service} is {phase}"),
            }),
        }
    }

    fn failed(&mut self, service: &str, router: &str, reason: &str, out: &mut Vec<Output>) {
        let (ctx, services) = self.split();
        let Some(st) = services.get_mut(service) else {
            out.push(Output::Ignored {
                reason: format!("{service} failed at {router} ({reason}), but {service} is not a known service"),
            });
            return;
        };
        match st.phase.clone() {
            Phase::Starting { to, .. } if ctx.router_of(&to) == router => {
                ctx.abort(out, service, st, format!("instance at {router} failed: {reason}"));
            }
            Phase::Stable { at } | Phase::Draining { new: at, .. }
                if at != Placement::Datacenter && ctx.router_of(&at) == router =>
            {
                let backoff = ctx.cfg.failure_backoff_ms;
                let why = format!(
                    "instance at {router} failed: {reason}; {router} not chosen for {service} for {backoff} ms"
                );
                ctx.decision(out, service, DecisionKind::Failure, (&at, &at), None, why);
                st.backoff
                    .insert(router.to_string(), ctx.now_ms.saturating_add(backoff));
            }
            phase => out.push(Output::Ignored {
                reason: format!("{service} failed at {router} ({reason}), but {service} is {phase}"),
            }),
        }
    }

    fn restore(
        &mut self,
        now_ms: u64,
        placements: &BTreeMap<String, String>,
        instances: Vec<AdvertisedInstance>,
        regions: RegionView,
        out: &mut Vec<Output>,
    ) {
        let refused = match (self.restored_ms, self.last_telemetry_ms) {
            (Some(at), _) => Some(format!("placements were already restored at {at} ms")),
            (None, Some(at)) => Some(format!(
                "telemetry was handled at {at} ms, placements have been decided since"
            )),
            (None, None) => None,
        };
        if let Some(why) = refused {
            out.push(Output::Ignored {
                reason: format!("restore at {now_ms} ms, but {why}"),
            });
            return;
        }
        self.advance(now_ms, out);
        self.restored_ms = Some(self.now_ms);
        self.regions = regions;
        // Service → router → ready (a router listed twice is ready if either says so).
        let mut advertised: BTreeMap<String, BTreeMap<String, bool>> = BTreeMap::new();
        for i in instances {
            *advertised.entry(i.service).or_default().entry(i.router).or_default() |= i.ready;
        }
        let none = BTreeMap::new();
        let (ctx, services) = self.split();
        // Instances of services the policy does not name are not the orchestrator's (an operator
        // started them): left alone.
        for (name, st) in services.iter_mut().filter(|(_, st)| st.in_policy) {
            let found = advertised.get(name).unwrap_or(&none);
            ctx.restore(out, name, st, placements.get(name).map(String::as_str), found);
        }
    }

    fn replace(&mut self, policy: Policy, out: &mut Vec<Output>) {
        self.policy = policy;
        let (ctx, services) = self.split();
        for (name, st) in services.iter_mut() {
            st.reset_counters();
            match ctx.policy.service(name) {
                Some(svc) => {
                    st.in_policy = true;
                    st.vip = svc.vip();
                }
                None if st.in_policy => {
                    st.in_policy = false;
                    ctx.retire(out, name, st);
                }
                None => {}
            }
        }
        for svc in &self.policy.services {
            self.services
                .entry(svc.name.clone())
                .or_insert_with(|| ServiceState::new(svc.vip()));
        }
        self.services.retain(|_, st| {
            st.in_policy
                || st.phase
                    != Phase::Stable {
                        at: Placement::Datacenter,
                    }
        });
    }
}

#[cfg(test)]
mod tests {
    use wuos_policy::Figures;

    use super::*;
    use crate::synthetic::synthetic_neighborhood;

    const VOIP: &str = "service voip {
  match udp dport 5060 to 10.255.0.10
  place local when mem.used_pct < 30
  place nearby within 2 hops when mem.used_pct < 30 prefer lowest latency
  otherwise datacenter
  hold 0s
}";

    fn cand(name: &str, hops: u32, mem: f64) -> Candidate {
        Candidate {
            name: name.into(),
            hops,
            latency_ms: Some(f64::from(hops)),
            role: if hops == 0 { Role::Fog } else { Role::Edge },
            stale: false,
            figures: Figures {
                mem_used_pct: Some(mem),
                ..Figures::default()
            },
        }
    }

    /// Without regions: every router of the view is a candidate and is told routes.
    fn orch(policy: &str) -> Orchestrator {
        let mut cfg = Config::new("r1", "dc1");
        cfg.drain_ms = 1000;
        cfg.region = false;
        Orchestrator::new(cfg, Policy::parse(policy).unwrap())
    }

    fn lines(out: &[Output]) -> Vec<String> {
        out.iter().map(ToString::to_string).collect()
    }

    fn telemetry(o: &mut Orchestrator, now_ms: u64, candidates: Vec<Candidate>) -> Vec<String> {
        lines(&o.handle(Input::Telemetry {
            now_ms,
            candidates,
            regions: RegionView::default(),
        }))
    }

    fn demand(o: &mut Orchestrator, now_ms: u64) {
        o.handle(Input::Demand {
            now_ms,
            service: "voip".into(),
            router: "r1".into(),
            flows: 1.0,
        });
    }

    /// voip served locally, routes moved, drain over.
    fn at_local() -> Orchestrator {
        let mut o = orch(VOIP);
        demand(&mut o, 0);
        let out = telemetry(&mut o, 0, vec![cand("r1", 0, 10.0), cand("r2", 1, 10.0)]);
        // A new service is routed to the data centre everywhere first.
        assert_eq!(
            out[..2],
            [
                "intent r1: route voip 10.255.0.10 -> dc1",
                "intent r2: route voip 10.255.0.10 -> dc1"
            ]
        );
        assert_eq!(out[3], "intent r1: start voip");
        o.handle(Input::InstanceReady {
            service: "voip".into(),
            router: "r1".into(),
        });
        o.handle(Input::Tick { now_ms: 1000 });
        assert_eq!(
            o.service("voip").unwrap().phase(),
            &Phase::Stable { at: Placement::Local }
        );
        o
    }

    #[test]
    fn new_routers_are_told_where_the_service_is() {
        let mut o = at_local();
        demand(&mut o, 1000);
        let out = telemetry(
            &mut o,
            2000,
            vec![cand("r1", 0, 10.0), cand("r2", 1, 10.0), cand("r9", 2, 90.0)],
        );
        assert_eq!(out, vec!["intent r9: route voip 10.255.0.10 -> r1"]);
        let out = telemetry(&mut o, 3000, vec![cand("r1", 0, 10.0), cand("r9", 2, 90.0)]);
        assert!(out.is_empty(), "{out:?}");
    }

    #[test]
    fn a_removed_service_goes_back_to_the_datacenter_and_is_forgotten() {
        let mut o = at_local();
        let other = "service web { match tcp dport 80 place local when mem.used_pct < 99 otherwise datacenter }";
        let out = lines(&o.handle(Input::ReplacePolicy(Policy::parse(other).unwrap())));
        assert_eq!(
            out,
            vec![
                "decision voip retire local -> datacenter: voip is no longer in the policy",
                "intent r1: route voip 10.255.0.10 -> dc1",
                "intent r2: route voip 10.255.0.10 -> dc1",
            ]
        );
        assert!(!o.service("voip").unwrap().in_policy());
        assert_eq!(
            o.service("web").unwrap().phase(),
            &Phase::Stable {
                at: Placement::Datacenter
            }
        );
        let out = lines(&o.handle(Input::Tick { now_ms: 2000 }));
        assert_eq!(out, vec!["intent r1: stop voip"]);
        assert!(o.service("voip").is_none(), "forgotten once back in the data centre");
        assert_eq!(o.services().map(|(n, _)| n).collect::<Vec<_>>(), vec!["web"]);
    }

    #[test]
    fn a_removed_service_that_is_starting_is_cancelled() {
        let mut o = orch(VOIP);
        demand(&mut o, 0);
        telemetry(&mut o, 0, vec![cand("r1", 0, 10.0)]);
        let other = "service web { match tcp dport 80 otherwise datacenter }";
        let out = lines(&o.handle(Input::ReplacePolicy(Policy::parse(other).unwrap())));
        assert_eq!(
            out,
            vec![
                "decision voip retire datacenter -> datacenter: voip is no longer in the policy",
                "intent r1: stop voip",
            ]
        );
        assert!(o.service("voip").is_none());
        // A late ack is ignored.
        let out = lines(&o.handle(Input::InstanceReady {
            service: "voip".into(),
            router: "r1".into(),
        }));
        assert_eq!(out, vec!["ignored: voip ready at r1, but voip is not a known service"]);
    }

    #[test]
    fn lost_telemetry_moves_services_to_their_fallback() {
        let mut o = at_local();
        demand(&mut o, 5000);
        // The latest telemetry is from t=0.
        assert!(
            lines(&o.handle(Input::Tick { now_ms: 10_000 })).is_empty(),
            "10 s is not too old"
        );
        let out = lines(&o.handle(Input::Tick { now_ms: 10_001 }));
        assert_eq!(out.len(), 3, "{out:?}");
        assert!(
            out[0].starts_with("decision voip move local -> datacenter (otherwise): no telemetry for 10001 ms; local not viable; rule 1 \"place local when mem.used_pct < 30\": local router stale;"),
            "{}",
            out[0]
        );
        assert!(lines(&o.handle(Input::Tick { now_ms: 10_500 })).is_empty());
    }

    #[test]
    fn a_failed_serving_instance_is_left() {
        let mut o = at_local();
        let out = lines(&o.handle(Input::InstanceFailed {
            service: "voip".into(),
            router: "r1".into(),
            reason: "oom".into(),
        }));
        assert_eq!(
            out,
            vec![
                "decision voip failure local -> local: instance at r1 failed: oom; r1 not chosen for voip for 60000 ms"
            ]
        );
        demand(&mut o, 1000);
        let out = telemetry(&mut o, 1000, vec![cand("r1", 0, 10.0), cand("r2", 1, 10.0)]);
        assert!(out[0].starts_with("decision voip move local -> r2 (rule 2): local not viable; rule 1 \"place local when mem.used_pct < 30\": local router excluded;"), "{}", out[0]);
        assert_eq!(out[1], "intent r2: start voip");
        // The data centre's instance failing is not acted upon.
        let out = lines(&o.handle(Input::InstanceFailed {
            service: "voip".into(),
            router: "dc1".into(),
            reason: "x".into(),
        }));
        assert_eq!(
            out,
            vec!["ignored: voip failed at dc1 (x), but voip is starting r2 (from local since 1000)"]
        );
    }

    #[test]
    fn unexpected_inputs_are_ignored() {
        let mut o = orch(VOIP);
        let out = lines(&o.handle(Input::Demand {
            now_ms: 0,
            service: "nope".into(),
            router: "r2".into(),
            flows: 3.0,
        }));
        assert_eq!(out, vec!["ignored: demand for unknown service \"nope\" from r2"]);
        let out = lines(&o.handle(Input::InstanceReady {
            service: "voip".into(),
            router: "r2".into(),
        }));
        assert_eq!(out, vec!["ignored: voip ready at r2, but voip is stable at datacenter"]);
        let out = lines(&o.handle(Input::InstanceFailed {
            service: "nope".into(),
            router: "r2".into(),
            reason: "x".into(),
        }));
        assert_eq!(
            out,
            vec!["ignored: nope failed at r2 (x), but nope is not a known service"]
        );
    }

    #[test]
    fn the_datacenter_named_by_a_rule_is_the_datacenter() {
        let p = "service voip { match udp dport 5060 place at dc1 when mem.used_pct < 50 otherwise local hold 0s }";
        let mut o = orch(p);
        demand(&mut o, 0);
        let mut dc = cand("dc1", 3, 10.0);
        dc.role = Role::Dc;
        let out = telemetry(&mut o, 0, vec![cand("r1", 0, 10.0), dc.clone()]);
        assert!(
            out.iter().all(|l| l.contains(": route voip -> dc1")),
            "already in the data centre, viable under rule 1: only the first routes: {out:?}"
        );
        dc.figures.mem_used_pct = Some(60.0);
        let out = telemetry(&mut o, 1000, vec![cand("r1", 0, 10.0), dc]);
        assert_eq!(out[1], "intent r1: start voip", "{out:?}");
    }

    #[test]
    fn the_clock_never_goes_back() {
        let mut o = at_local();
        o.handle(Input::Tick { now_ms: 5000 });
        o.handle(Input::Tick { now_ms: 10 });
        assert_eq!(o.now_ms(), 5000);
    }

    #[test]
    fn a_large_neighborhood() {
        let mut policy = String::new();
        for i in 0..8 {
            policy.push_str(&format!(
                "service s{i} {{ match udp dport {} place local when mem.used_pct < 5 and cpu.used_pct < 5
                   place nearby within 2 hops when mem.used_pct < {} and cpu.pressure < 10 prefer lowest latency
                   place nearby within 4 hops when mem.free_mib > 1000 prefer lowest cpu
                   otherwise datacenter hold 0s }}\n",
                1000 + i,
                10 + i
            ));
        }
        let policy = Policy::parse(&policy).unwrap();
        let candidates = synthetic_neighborhood(1000, 42);
        let run = || {
            let mut cfg = Config::new("r0000", "dc1");
            cfg.region = false;
            let mut o = Orchestrator::new(cfg, policy.clone());
            for i in 0..8 {
                o.handle(Input::Demand {
                    now_ms: 0,
                    service: format!("s{i}"),
                    router: "r0000".into(),
                    flows: 1.0,
                });
            }
            o.handle(Input::Telemetry {
                now_ms: 0,
                candidates: candidates.clone(),
                regions: RegionView::default(),
            })
        };
        let out = run();
        assert_eq!(out, run(), "deterministic");
        let starts = out
            .iter()
            .filter(|o| {
                matches!(
                    o,
                    Output::Intent {
                        intent: Intent::StartInstance { .. },
                        ..
                    }
                )
            })
            .count();
        assert_eq!(starts, 8, "every service moves out of the data centre: {out:#?}");
        // One evaluation of one service over the 1000 candidates, as the benchmark does.
        let e = policy.services[0].evaluate(&candidates);
        assert!(!e.explanation.to_string().is_empty());
    }

    const PABX: &str = "service pabx {
  match udp dport 5060 to 10.255.0.20
  place local when mem.used_pct < 30
  place nearby within 2 hops when mem.used_pct < 30 prefer lowest latency
  otherwise datacenter
  hold 0s
}
service web {
  match tcp dport 80 to 10.255.0.80
  place local when mem.used_pct < 30
  otherwise datacenter
  hold 0s
}";

    /// The fog router `fog1` of the bug report, its data centre `dc`, policy [`PABX`]; without
    /// regions.
    fn fog() -> Orchestrator {
        let mut cfg = Config::new("fog1", "dc");
        cfg.drain_ms = 1000;
        cfg.region = false;
        Orchestrator::new(cfg, Policy::parse(PABX).unwrap())
    }

    /// fog1 is not viable (memory); edge1 and edge2 are, edge1 with the lower latency.
    fn fog_view(edge2_mem: f64) -> Vec<Candidate> {
        let mut dc = cand("dc", 2, 10.0);
        dc.role = Role::Dc;
        vec![
            cand("fog1", 0, 50.0),
            cand("edge1", 1, 10.0),
            cand("edge2", 1, edge2_mem),
            dc,
        ]
    }

    fn restore(
        o: &mut Orchestrator,
        now_ms: u64,
        placements: &[(&str, &str)],
        instances: &[(&str, &str, bool)],
    ) -> Vec<Output> {
        o.handle(Input::Restore {
            now_ms,
            placements: placements.iter().map(|(s, r)| (s.to_string(), r.to_string())).collect(),
            instances: instances
                .iter()
                .map(|(service, router, ready)| AdvertisedInstance {
                    service: service.to_string(),
                    router: router.to_string(),
                    ready: *ready,
                })
                .collect(),
            regions: RegionView::default(),
        })
    }

    fn pabx_demand(o: &mut Orchestrator, now_ms: u64) {
        o.handle(Input::Demand {
            now_ms,
            service: "pabx".into(),
            router: "fog1".into(),
            flows: 2.0,
        });
    }

    fn stable(at: Placement) -> Phase {
        Phase::Stable { at }
    }

    fn serving(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(s, r)| (s.to_string(), r.to_string())).collect()
    }

    /// pabx restored at edge2 (persisted there, edge2 advertises a ready instance), at t=500.
    fn restored_at_edge2() -> Orchestrator {
        let mut o = fog();
        let out = restore(
            &mut o,
            500,
            &[("pabx", "edge2")],
            &[("pabx", "edge2", true), ("pabx", "dc", true)],
        );
        assert_eq!(
            lines(&out),
            vec![
                "decision pabx restore edge2 -> edge2: restart: pabx was served at edge2; edge2 advertises a healthy instance: adopted"
            ]
        );
        o
    }

    #[test]
    fn restore_adopts_a_neighbor_that_advertises_a_healthy_instance() {
        let mut o = fog();
        assert_eq!(o.serving(), serving(&[("pabx", "dc"), ("web", "dc")]));
        let out = restore(
            &mut o,
            500,
            &[("pabx", "edge2")],
            &[("pabx", "edge2", true), ("pabx", "dc", true)],
        );
        let [Output::Decision(d)] = out.as_slice() else {
            panic!("expected one decision, got {out:?}");
        };
        assert_eq!((d.at_ms, d.kind, d.rule), (500, DecisionKind::Restore, None));
        assert_eq!(
            (&d.from, &d.to),
            (&Placement::Router("edge2".into()), &Placement::Router("edge2".into()))
        );
        let st = o.service("pabx").unwrap();
        assert_eq!(st.phase(), &stable(Placement::Router("edge2".into())));
        assert_eq!(
            st.routed, None,
            "the next telemetry announces the restored placement to every router"
        );
        assert!(st.backoff().is_empty() && st.unviable_samples == 0 && st.better_since_ms.is_none());
        assert_eq!(o.service("web").unwrap().phase(), &stable(Placement::Datacenter));
        assert_eq!(o.serving(), serving(&[("pabx", "edge2"), ("web", "dc")]));
        assert_eq!(o.now_ms(), 500);
        assert_eq!(
            (DecisionKind::Restore.to_string(), DecisionKind::Orphan.to_string()),
            ("restore".into(), "orphan".into())
        );
    }

    #[test]
    fn the_first_telemetry_after_a_restore_routes_to_the_restored_router() {
        let mut o = restored_at_edge2();
        pabx_demand(&mut o, 1000);
        let out = telemetry(&mut o, 1000, fog_view(10.0));
        let pabx: Vec<&String> = out.iter().filter(|l| l.contains("route pabx")).collect();
        assert_eq!(
            pabx,
            vec![
                "intent dc: route pabx 10.255.0.20 -> edge2",
                "intent edge1: route pabx 10.255.0.20 -> edge2",
                "intent edge2: route pabx 10.255.0.20 -> edge2",
                "intent fog1: route pabx 10.255.0.20 -> edge2",
            ],
            "{out:#?}"
        );
        assert!(
            !out.iter().any(|l| l.contains("route pabx 10.255.0.20 -> dc")),
            "never silently back to the data centre: {out:#?}"
        );
        assert_eq!(
            out.len(),
            8,
            "the pabx and web routes only, no decision, no start: {out:#?}"
        );
        // edge2 stays viable: pabx stays there although edge1 has the lower latency.
        for t in [2000, 3000, 4000] {
            pabx_demand(&mut o, t);
            let out = telemetry(&mut o, t, fog_view(10.0));
            assert!(out.is_empty(), "t={t}: {out:?}");
        }
        assert_eq!(
            o.service("pabx").unwrap().phase(),
            &stable(Placement::Router("edge2".into()))
        );
    }

    #[test]
    fn a_move_after_a_restore_starts_from_the_restored_placement() {
        let mut o = restored_at_edge2();
        pabx_demand(&mut o, 1000);
        telemetry(&mut o, 1000, fog_view(10.0));
        pabx_demand(&mut o, 2000);
        let out = telemetry(&mut o, 2000, fog_view(50.0));
        assert!(
            out[0].starts_with("decision pabx move edge2 -> edge1 (rule 2): edge2 not viable;"),
            "{out:#?}"
        );
        assert_eq!(out[1..], ["intent edge1: start pabx"]);
        let out = lines(&o.handle(Input::InstanceReady {
            service: "pabx".into(),
            router: "edge1".into(),
        }));
        assert_eq!(
            out,
            vec![
                "intent dc: route pabx 10.255.0.20 -> edge1",
                "intent edge1: route pabx 10.255.0.20 -> edge1",
                "intent edge2: route pabx 10.255.0.20 -> edge1",
                "intent fog1: route pabx 10.255.0.20 -> edge1",
            ]
        );
        assert_eq!(o.serving()["pabx"], "edge1");
        let out = lines(&o.handle(Input::Tick { now_ms: 3000 }));
        assert_eq!(
            out,
            vec!["intent edge2: stop pabx"],
            "the adopted instance is drained and stopped"
        );
        assert_eq!(
            o.service("pabx").unwrap().phase(),
            &stable(Placement::Router("edge1".into()))
        );
    }

    #[test]
    fn restore_adopts_this_routers_own_instance() {
        let mut o = fog();
        let out = lines(&restore(&mut o, 0, &[("pabx", "fog1")], &[("pabx", "fog1", true)]));
        assert_eq!(
            out,
            vec![
                "decision pabx restore local -> local: restart: pabx was served at fog1; fog1 advertises a healthy instance: adopted"
            ]
        );
        assert_eq!(o.service("pabx").unwrap().phase(), &stable(Placement::Local));
        assert_eq!(o.serving()["pabx"], "fog1");
    }

    #[test]
    fn a_persisted_router_without_an_instance_sends_the_service_back_to_the_datacenter() {
        let mut o = fog();
        let out = lines(&restore(&mut o, 0, &[("pabx", "edge2")], &[("pabx", "dc", true)]));
        assert_eq!(
            out,
            vec![
                "decision pabx restore edge2 -> datacenter: restart: pabx was served at edge2; edge2 advertises no healthy instance: back to the data centre"
            ]
        );
        assert_eq!(o.service("pabx").unwrap().phase(), &stable(Placement::Datacenter));
        let out = telemetry(&mut o, 1000, fog_view(10.0));
        let pabx: Vec<&String> = out.iter().filter(|l| l.contains("route pabx")).collect();
        assert!(
            pabx.len() == 4 && pabx.iter().all(|l| l.ends_with("-> dc")),
            "every router is told the data centre serves pabx: {out:#?}"
        );
    }

    #[test]
    fn a_persisted_router_whose_instance_is_not_ready_is_told_to_stop_it() {
        let mut o = fog();
        let out = lines(&restore(&mut o, 0, &[("pabx", "edge2")], &[("pabx", "edge2", false)]));
        assert_eq!(
            out,
            vec![
                "decision pabx restore edge2 -> datacenter: restart: pabx was served at edge2; edge2 advertises no healthy instance (its instance is not ready: stopped): back to the data centre",
                "intent edge2: stop pabx",
            ]
        );
        assert_eq!(o.service("pabx").unwrap().phase(), &stable(Placement::Datacenter));
        assert_eq!(o.serving()["pabx"], "dc");
    }

    #[test]
    fn nothing_persisted_or_the_datacenter_changes_nothing() {
        let mut o = fog();
        let out = restore(
            &mut o,
            0,
            &[("pabx", "dc")],
            &[("pabx", "dc", true), ("web", "dc", false)],
        );
        assert!(out.is_empty(), "no decision when nothing changes: {out:?}");
        assert_eq!(o.serving(), serving(&[("pabx", "dc"), ("web", "dc")]));
        assert_eq!(o.service("web").unwrap().routed, None);
    }

    #[test]
    fn orphans_are_stopped_in_router_order() {
        let mut o = fog();
        let instances = [
            ("pabx", "fog1", false),
            ("pabx", "edge2", true),
            ("pabx", "edge3", true),
            ("pabx", "edge3", true),
            ("pabx", "dc", true),
        ];
        let out = restore(&mut o, 700, &[("pabx", "edge2")], &instances);
        assert_eq!(
            lines(&out),
            vec![
                "decision pabx restore edge2 -> edge2: restart: pabx was served at edge2; edge2 advertises a healthy instance: adopted",
                "decision pabx orphan edge3 -> edge3: restart: pabx instance at edge3 is not serving; stopped",
                "intent edge3: stop pabx",
                "decision pabx orphan local -> local: restart: pabx instance at fog1 is not serving; stopped",
                "intent fog1: stop pabx",
            ],
            "one stop per orphan (edge3 advertised twice), none to the adopted router or the data centre"
        );
        let Output::Decision(d) = &out[1] else {
            panic!("{out:?}")
        };
        assert_eq!((d.at_ms, d.kind), (700, DecisionKind::Orphan));
        assert_eq!(
            o.service("pabx").unwrap().phase(),
            &stable(Placement::Router("edge2".into()))
        );
    }

    #[test]
    fn orphans_without_a_persisted_placement() {
        let mut o = fog();
        let out = lines(&restore(&mut o, 0, &[], &[("pabx", "edge1", true)]));
        assert_eq!(
            out,
            vec![
                "decision pabx restore datacenter -> datacenter: restart: nothing persisted for pabx: served at the data centre",
                "decision pabx orphan edge1 -> edge1: restart: pabx instance at edge1 is not serving; stopped",
                "intent edge1: stop pabx",
            ]
        );
        assert_eq!(o.service("pabx").unwrap().phase(), &stable(Placement::Datacenter));
    }

    #[test]
    fn a_persisted_router_that_is_not_the_serving_one_is_not_an_orphan_twice() {
        // Persisted at edge2 (not ready: stopped once, by the restore), served by the data
        // centre; the persisted data centre name is the data centre.
        let mut o = fog();
        let out = lines(&restore(
            &mut o,
            0,
            &[("pabx", "edge2"), ("web", "dc")],
            &[
                ("pabx", "edge2", false),
                ("pabx", "edge1", false),
                ("web", "fog1", true),
            ],
        ));
        assert_eq!(
            out,
            vec![
                "decision pabx restore edge2 -> datacenter: restart: pabx was served at edge2; edge2 advertises no healthy instance (its instance is not ready: stopped): back to the data centre",
                "intent edge2: stop pabx",
                "decision pabx orphan edge1 -> edge1: restart: pabx instance at edge1 is not serving; stopped",
                "intent edge1: stop pabx",
                "decision web restore datacenter -> datacenter: restart: web was served at the data centre: stays there",
                "decision web orphan local -> local: restart: web instance at fog1 is not serving; stopped",
                "intent fog1: stop web",
            ]
        );
    }

    #[test]
    fn instances_of_services_not_in_the_policy_are_left_alone() {
        let mut o = fog();
        let out = lines(&restore(
            &mut o,
            0,
            &[("old", "edge1"), ("zzz", "dc")],
            &[
                ("zzz", "edge2", false),
                ("old", "edge1", true),
                ("old", "dc", true),
                ("web", "edge3", true),
            ],
        ));
        assert_eq!(
            out,
            vec![
                "decision web restore datacenter -> datacenter: restart: nothing persisted for web: served at the data centre",
                "decision web orphan edge3 -> edge3: restart: web instance at edge3 is not serving; stopped",
                "intent edge3: stop web",
            ],
            "old and zzz are not the orchestrator's: an operator started them"
        );
        assert!(o.service("old").is_none() && o.service("zzz").is_none());
        assert_eq!(o.serving(), serving(&[("pabx", "dc"), ("web", "dc")]));
    }

    #[test]
    fn restore_after_telemetry_is_ignored() {
        let mut o = fog();
        telemetry(&mut o, 0, fog_view(10.0));
        let out = lines(&restore(
            &mut o,
            1000,
            &[("pabx", "edge2")],
            &[("pabx", "edge2", true), ("pabx", "edge1", true)],
        ));
        assert_eq!(
            out,
            vec!["ignored: restore at 1000 ms, but telemetry was handled at 0 ms, placements have been decided since"]
        );
        assert_eq!(o.service("pabx").unwrap().phase(), &stable(Placement::Datacenter));
        assert_eq!(o.now_ms(), 0, "an ignored restore changes nothing, the clock included");
    }

    #[test]
    fn a_second_restore_is_ignored() {
        let mut o = restored_at_edge2();
        let out = lines(&restore(
            &mut o,
            600,
            &[("pabx", "edge1")],
            &[("pabx", "edge1", true), ("pabx", "edge2", true)],
        ));
        assert_eq!(
            out,
            vec!["ignored: restore at 600 ms, but placements were already restored at 500 ms"]
        );
        assert_eq!(o.serving(), serving(&[("pabx", "edge2"), ("web", "dc")]));
    }

    #[test]
    fn serving_names_the_router_in_every_phase() {
        let mut o = at_local();
        assert_eq!(o.serving(), serving(&[("voip", "r1")]));
        // Starting: still served where it was.
        let other = "service voip { match udp dport 5060 to 10.255.0.10 place nearby within 1 hops when mem.used_pct < 30 otherwise datacenter hold 0s }";
        o.handle(Input::ReplacePolicy(Policy::parse(other).unwrap()));
        demand(&mut o, 2000);
        let out = telemetry(&mut o, 2000, vec![cand("r1", 0, 10.0), cand("r2", 1, 10.0)]);
        assert_eq!(out[1], "intent r2: start voip", "{out:#?}");
        assert_eq!(o.serving(), serving(&[("voip", "r1")]));
        // Draining: served by the new one.
        o.handle(Input::InstanceReady {
            service: "voip".into(),
            router: "r2".into(),
        });
        assert_eq!(o.serving(), serving(&[("voip", "r2")]));
        // A retired service is not persisted.
        let web = "service web { match tcp dport 80 otherwise datacenter }";
        o.handle(Input::ReplacePolicy(Policy::parse(web).unwrap()));
        assert_eq!(o.serving(), serving(&[("web", "dc1")]));
    }

    /// foga with regions: edge1 and edge2 in its region, edge4 in fogb's, the dc in none.
    fn region_fog() -> (Orchestrator, Vec<Candidate>, RegionView) {
        let mut cfg = Config::new("foga", "dc");
        cfg.drain_ms = 1000;
        let o = Orchestrator::new(cfg, Policy::parse(PABX).unwrap());
        let mut dc = cand("dc", 1, 10.0);
        dc.role = Role::Dc;
        let view = vec![
            cand("foga", 0, 50.0),
            cand("edge1", 1, 10.0),
            cand("edge2", 1, 20.0),
            cand("edge4", 2, 5.0),
            dc,
        ];
        let mut regions = RegionView::default();
        for (r, o) in [
            ("foga", "foga"),
            ("edge1", "foga"),
            ("edge2", "foga"),
            ("edge4", "fogb"),
        ] {
            regions.members.insert(r.into(), o.into());
        }
        (o, view, regions)
    }

    fn sample(o: &mut Orchestrator, now_ms: u64, candidates: &[Candidate], regions: &RegionView) -> Vec<String> {
        lines(&o.handle(Input::Telemetry {
            now_ms,
            candidates: candidates.to_vec(),
            regions: regions.clone(),
        }))
    }

    #[test]
    fn a_start_on_a_router_that_leaves_the_region_is_aborted() {
        let (mut o, view, mut regions) = region_fog();
        pabx_demand(&mut o, 0);
        let out = sample(&mut o, 0, &view, &regions);
        assert!(out.contains(&"intent edge1: start pabx".to_string()), "{out:#?}");
        assert!(
            !out.iter().any(|l| l.starts_with("intent edge4")),
            "edge4 is fogb's: {out:#?}"
        );
        assert_eq!(
            o.routers_told().iter().collect::<Vec<_>>(),
            vec!["dc", "edge1", "edge2", "foga"]
        );
        assert_eq!(
            o.region_members().into_iter().collect::<Vec<_>>(),
            vec!["edge1", "edge2", "foga"]
        );
        regions.members.insert("edge1".into(), "fogb".into());
        pabx_demand(&mut o, 1000);
        let out = sample(&mut o, 1000, &view, &regions);
        assert_eq!(
            out[..2],
            [
                "decision pabx abort datacenter -> edge1 (rule 2): edge1 left foga's region; staying at datacenter; edge1 not chosen for pabx again for 60000 ms",
                "intent edge1: stop pabx",
            ],
            "{out:#?}"
        );
        assert!(
            out[2].starts_with("decision pabx move datacenter -> edge2 (rule 2)"),
            "the next router of the region: {out:#?}"
        );
    }

    #[test]
    fn its_placements_are_published_and_the_neighbors_kept() {
        let (mut o, view, mut regions) = region_fog();
        regions.placements.insert(
            "fogb".into(),
            vec![RegionPlacement {
                service: "pabx".into(),
                serving: "edge4".into(),
                vip: Some(std::net::Ipv4Addr::new(10, 255, 0, 20)),
            }],
        );
        regions.placements.insert("foga".into(), Vec::new());
        sample(&mut o, 0, &view, &regions);
        let neighbors: Vec<String> = o
            .neighbor_placements()
            .flat_map(|(orch, p)| p.iter().map(move |p| format!("{orch}: {p}")))
            .collect();
        assert_eq!(
            neighbors,
            vec!["fogb: pabx at edge4 (10.255.0.20)"],
            "its own are not a neighbor's"
        );
        assert_eq!(
            o.placements().iter().map(ToString::to_string).collect::<Vec<_>>(),
            vec!["pabx at dc (10.255.0.20)", "web at dc (10.255.0.80)"]
        );
        let pb = crate::neighborhood::advertised_placements(&o.placements());
        assert_eq!(
            (
                pb[0].service.as_str(),
                pb[0].serving_router.as_str(),
                pb[0].vip.as_str()
            ),
            ("pabx", "dc", "10.255.0.20")
        );
    }
}
