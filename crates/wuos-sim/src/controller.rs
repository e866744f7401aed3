//! The controller of a simulated router: the daemon's own state machine
//! ([`wuos_controller::Controller`]), with what `wuosd` does around it modelled.
//!
//! ```text
//!  intent (sender, id) from an orchestrator ──┐                  ┌──▶ Persist: the store (survives a crash)
//!  the region, at each own sample ────────────┤ wuos_controller  ├──▶ Ensure: the domains (below)
//!  the domains: an instance is ready ─────────┤   ::Controller   ├──▶ Reconcile: done at once, every rule Ok
//!                                             └──────────────────┴──▶ Answer: to the orchestrator that asked
//! ```
//!
//! - **Intents** are taken or refused by the state machine itself, by the router's region
//!   (`wuos_controller::region`): with regions (`nearest`) it is told its region at each own
//!   sample, as the daemon's sampler tells it; without (`none`) it is never told, so any
//!   orchestrator writes and the newest wins. A refused intent is answered with why, and counted
//!   here by reason ([`Refusals`], from [`wuos_controller::Controller::admits`]).
//! - **The domains**: `Ensure` present starts an instance — `starting`, then running and healthy
//!   after the start delay (the simulator calls [`Controller::started`]), when the state machine
//!   hears it is ready and answers the starts waiting for it; `Ensure` absent removes it at once.
//!   The router's samples advertise these instances ([`Controller::advertised`]).
//! - **The kernel** is not modelled: a reconcile succeeds at once for every rule it concerns. A
//!   rule is a record: service, VIP, serving router, sender.
//! - **The store**: every `Persist` is kept. A crash or a stop loses the state machine and the
//!   instances; at the next start a new state machine restores the store (the intended instances
//!   start again, nobody is answered; the rules are in force again), its region unknown until
//!   its first sample, as in the daemon.
//!
//! Besides, for the report: when each rule in force was written, every orchestrator that ever
//! had a rule of a service taken here, and the **conflicts** — a rule taken from one orchestrator
//! that removed another orchestrator's rule of the service (what a router without a region does:
//! the newest wins).

use std::collections::{BTreeMap, VecDeque};
use std::net::Ipv4Addr;

use serde::Serialize;
use wuos_controller::{Input, Intent, IntentKey, Kept, KernelView, LocalInstance, Op, Origin, RefusedError, Region};
use wuos_model::{RouterId, ServiceId};
use wuos_proto::pb;

/// An instance's state, as the modelled domains run it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InstanceState {
    /// Started, not ready yet.
    Starting,
    /// Running and healthy.
    Running,
}

/// Intents refused, by reason ([`RefusedError`]'s variants).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Refusals {
    /// A rule from an orchestrator other than the router's region's.
    pub foreign_rule: u64,
    /// An instance start from an orchestrator other than the router's region's.
    pub foreign_start: u64,
    /// On a router of no region, a rule leading elsewhere.
    pub not_shared: u64,
}

impl Refusals {
    /// All of them.
    pub fn total(&self) -> u64 {
        self.foreign_rule + self.foreign_start + self.not_shared
    }

    /// Counts one.
    pub fn add(&mut self, e: &RefusedError) {
        match e {
            RefusedError::ForeignRule { .. } => self.foreign_rule += 1,
            RefusedError::ForeignStart { .. } => self.foreign_start += 1,
            RefusedError::NotShared { .. } => self.not_shared += 1,
        }
    }

    /// Adds `other`'s counts.
    pub fn merge(&mut self, other: &Refusals) {
        self.foreign_rule += other.foreign_rule;
        self.foreign_start += other.foreign_start;
        self.not_shared += other.not_shared;
    }
}

/// What one router's controller did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    /// Rules taken.
    pub rule_writes: u64,
    /// Rules taken that removed another orchestrator's rule of the service.
    pub conflicts: u64,
    pub refused: Refusals,
    /// Rules dropped because the router changed region.
    pub rules_dropped: u64,
}

/// What the simulator carries out after a step of a controller.
#[derive(Debug, Default, PartialEq)]
pub struct Effects {
    /// Answers to the orchestrators that asked (`Origin::session` is the orchestrator's router
    /// index, `intent_id` the intent's id).
    pub answers: Vec<(Origin, Result<(), String>)>,
    /// Instances that began to start: they are ready after the start delay.
    pub starting: Vec<ServiceId>,
}

/// What became of an intent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Admission {
    /// Refused, and why.
    Refused(RefusedError),
    /// Taken; `overwrote`: a rule that removed another orchestrator's rule of the service.
    Taken { overwrote: bool },
}

/// A rule in force (or kept in the store while the router is down).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule<'a> {
    pub service: &'a ServiceId,
    pub vip: Ipv4Addr,
    /// The router serving the service.
    pub serving: &'a RouterId,
    /// The orchestrator's router that wrote it.
    pub writer: Option<&'a RouterId>,
    /// When, ms.
    pub written_ms: u64,
}

/// One router's controller.
#[derive(Clone, Debug)]
pub struct Controller {
    me: RouterId,
    /// The state machine while the router runs.
    ctl: Option<wuos_controller::Controller>,
    /// What the state machine persisted, by key.
    store: BTreeMap<IntentKey, Kept>,
    /// The domains' instances.
    instances: BTreeMap<ServiceId, InstanceState>,
    /// When each rule in force was written, ms.
    written_ms: BTreeMap<IntentKey, u64>,
    /// Service → every orchestrator that ever had a rule of it taken here, sorted.
    writers: BTreeMap<ServiceId, Vec<RouterId>>,
    counts: Counts,
}

impl Controller {
    /// The controller of running router `me`, told `region` already if it is known (the router
    /// sampled before its first intent).
    pub fn new(me: RouterId, region: &Region) -> Self {
        let mut ctl = wuos_controller::Controller::new(me.clone(), false);
        if *region != Region::Unknown {
            let ops = ctl.handle(Input::Region(region.clone()));
            debug_assert!(ops.is_empty(), "nothing to drop yet");
        }
        Controller {
            me,
            ctl: Some(ctl),
            store: BTreeMap::new(),
            instances: BTreeMap::new(),
            written_ms: BTreeMap::new(),
            writers: BTreeMap::new(),
            counts: Counts::default(),
        }
    }

    /// The router starts (again): a new state machine restores the store.
    pub fn start(&mut self) -> Effects {
        let mut ctl = wuos_controller::Controller::new(self.me.clone(), false);
        let ops = ctl.restore(self.store.values().cloned());
        self.ctl = Some(ctl);
        let mut fx = Effects::default();
        self.carry_out(ops, &mut fx);
        fx
    }

    /// The router stopped or crashed: the state machine and the instances are gone, the store
    /// stays.
    pub fn halt(&mut self) {
        self.ctl = None;
        self.instances.clear();
    }

    /// The router's region now (its own sample chose it).
    pub fn region(&mut self, region: Region) -> Effects {
        let mut fx = Effects::default();
        let Some(ctl) = self.ctl.as_mut() else { return fx };
        let ops = ctl.handle(Input::Region(region));
        self.counts.rules_dropped += ops
            .iter()
            .filter(|op| {
                matches!(
                    op,
                    Op::Persist {
                        key: IntentKey::Rule { .. },
                        kept: None
                    }
                )
            })
            .count() as u64;
        self.carry_out(ops, &mut fx);
        fx
    }

    /// An intent from the orchestrator on `sender`, answered to `from`. The router runs.
    pub fn intent(&mut self, sender: &RouterId, from: Origin, intent: Intent, now_ms: u64) -> (Admission, Effects) {
        let ctl = self.ctl.as_mut().expect("intents reach running routers only");
        let admitted = ctl.admits(sender, &intent);
        let service = intent.service().clone();
        let others = |c: &wuos_controller::Controller| {
            c.rules_in_force()
                .filter(|(s, svc, _, _)| **svc == service && *s != Some(sender))
                .count()
        };
        let before = others(ctl);
        let rule = match &intent {
            Intent::Rule { serving, .. } => Some(serving.is_some()),
            Intent::Instance { .. } => None,
        };
        let key = intent.key(Some(sender));
        let ops = ctl.handle(Input::Intent {
            from,
            sender: sender.clone(),
            intent,
        });
        let mut fx = Effects::default();
        self.carry_out(ops, &mut fx);
        let admission = match admitted {
            Err(e) => {
                self.counts.refused.add(&e);
                Admission::Refused(e)
            }
            Ok(()) => {
                let after = self.ctl.as_ref().map_or(0, others);
                let overwrote = after < before;
                if rule == Some(true) {
                    self.written_ms.insert(key, now_ms);
                    let w = self.writers.entry(service).or_default();
                    if let Err(at) = w.binary_search(sender) {
                        w.insert(at, sender.clone());
                    }
                    self.counts.rule_writes += 1;
                }
                self.counts.conflicts += u64::from(overwrote);
                Admission::Taken { overwrote }
            }
        };
        (admission, fx)
    }

    /// The instance of `service` finished starting: it runs and is healthy, if it is still
    /// there.
    pub fn started(&mut self, service: &ServiceId) -> Effects {
        let mut fx = Effects::default();
        match self.instances.get_mut(service) {
            Some(s @ InstanceState::Starting) => *s = InstanceState::Running,
            _ => return fx,
        }
        let local = self.local();
        let Some(ctl) = self.ctl.as_mut() else { return fx };
        let ops = ctl.handle(Input::Instances(local));
        self.carry_out(ops, &mut fx);
        fx
    }

    /// Carries out the state machine's ops as the daemon would, feeding back what they lead to.
    fn carry_out(&mut self, ops: Vec<Op>, fx: &mut Effects) {
        let mut queue: VecDeque<Op> = ops.into();
        while let Some(op) = queue.pop_front() {
            let inputs = match op {
                Op::Answer { to, outcome } => {
                    fx.answers.push((to, outcome));
                    Vec::new()
                }
                Op::Persist { key, kept } => {
                    match kept {
                        Some(k) => {
                            self.store.insert(key, k);
                        }
                        None => {
                            self.store.remove(&key);
                            self.written_ms.remove(&key);
                        }
                    }
                    Vec::new()
                }
                Op::Ensure { service, present } => {
                    if !present {
                        self.instances.remove(&service);
                    } else if !self.instances.contains_key(&service) {
                        self.instances.insert(service.clone(), InstanceState::Starting);
                        fx.starting.push(service.clone());
                    }
                    vec![
                        Input::Ensured {
                            service,
                            present,
                            outcome: Ok(()),
                        },
                        Input::Instances(self.local()),
                    ]
                }
                Op::Reconcile => {
                    let ctl = self.ctl.as_ref().expect("ops come from a running state machine");
                    let concerned = ctl.plan(&KernelView::default()).concerned;
                    vec![Input::Reconciled(concerned.into_iter().map(|k| (k, Ok(()))).collect())]
                }
            };
            let ctl = self.ctl.as_mut().expect("ops come from a running state machine");
            for input in inputs {
                queue.extend(ctl.handle(input));
            }
        }
    }

    /// The instances as the domains report them to the state machine.
    fn local(&self) -> Vec<LocalInstance> {
        self.instances
            .iter()
            .map(|(service, state)| LocalInstance {
                service: service.clone(),
                state: match state {
                    InstanceState::Starting => wuos_controller::InstanceState::Starting,
                    InstanceState::Running => wuos_controller::InstanceState::Ready,
                },
                address: None,
                link: None,
            })
            .collect()
    }

    /// The instances, as the router's samples advertise them.
    pub fn advertised(&self) -> Vec<pb::ServiceInstance> {
        self.instances
            .iter()
            .map(|(service, state)| {
                let (word, health) = match state {
                    InstanceState::Starting => ("starting", "starting"),
                    InstanceState::Running => ("running", "healthy"),
                };
                pb::ServiceInstance {
                    service: service.to_string(),
                    name: service.to_string(),
                    state: word.into(),
                    health: health.into(),
                    ..Default::default()
                }
            })
            .collect()
    }

    /// The instances and their states.
    pub fn instances(&self) -> impl Iterator<Item = (&ServiceId, InstanceState)> {
        self.instances.iter().map(|(s, st)| (s, *st))
    }

    /// The rules in force (kept in the store while the router is down), by service and writer.
    pub fn rules(&self) -> impl Iterator<Item = Rule<'_>> {
        self.store.iter().filter_map(|(key, kept)| match &kept.intent {
            Intent::Rule {
                service,
                vip,
                serving: Some(serving),
            } => Some(Rule {
                service,
                vip: *vip,
                serving,
                writer: kept.sender.as_ref(),
                written_ms: self.written_ms.get(key).copied().unwrap_or_default(),
            }),
            _ => None,
        })
    }

    /// Every orchestrator that ever had a rule of `service` taken here, sorted.
    pub fn writers(&self, service: &ServiceId) -> &[RouterId] {
        self.writers.get(service).map(Vec::as_slice).unwrap_or_default()
    }

    /// The region the state machine was last told (`None` while the router is down).
    pub fn told_region(&self) -> Option<&Region> {
        self.ctl.as_ref().map(wuos_controller::Controller::region)
    }

    /// What it did.
    pub fn counts(&self) -> Counts {
        self.counts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VIP: Ipv4Addr = Ipv4Addr::new(10, 255, 0, 10);

    fn r(s: &str) -> RouterId {
        RouterId::new(s).unwrap()
    }

    fn pabx() -> ServiceId {
        ServiceId::new("pabx").unwrap()
    }

    fn origin(id: u64) -> Origin {
        Origin {
            session: 1,
            intent_id: id,
        }
    }

    fn start() -> Intent {
        Intent::Instance {
            service: pabx(),
            present: true,
        }
    }

    fn route(to: &str) -> Intent {
        Intent::Rule {
            service: pabx(),
            vip: VIP,
            serving: Some(r(to)),
        }
    }

    /// `(writer, serving)` of each rule.
    fn rules(c: &Controller) -> Vec<(String, String)> {
        c.rules()
            .map(|x| (x.writer.map_or("-".into(), ToString::to_string), x.serving.to_string()))
            .collect()
    }

    #[test]
    fn instances_start_run_stop_and_come_back_after_a_restart() {
        let mut c = Controller::new(r("edge1"), &Region::Unknown);
        let (a, fx) = c.intent(&r("foga"), origin(1), start(), 0);
        assert_eq!(a, Admission::Taken { overwrote: false });
        assert_eq!((fx.starting, fx.answers), (vec![pabx()], vec![]), "not ready yet");
        let (_, fx) = c.intent(&r("fogb"), origin(2), start(), 0);
        assert!(fx.starting.is_empty() && fx.answers.is_empty(), "starting already");
        assert_eq!(c.advertised()[0].state, "starting");
        let fx = c.started(&pabx());
        assert_eq!(fx.answers, [(origin(1), Ok(())), (origin(2), Ok(()))], "both told");
        let a = &c.advertised()[0];
        assert_eq!(
            (a.service.as_str(), a.name.as_str(), a.state.as_str(), a.health.as_str()),
            ("pabx", "pabx", "running", "healthy")
        );
        assert!(c.started(&pabx()).answers.is_empty(), "once");
        let (_, fx) = c.intent(&r("foga"), origin(3), start(), 0);
        assert_eq!(fx.answers, [(origin(3), Ok(()))], "running: at once");
        c.halt();
        assert!(c.advertised().is_empty(), "a crash stops the instances");
        let fx = c.start();
        assert_eq!(fx.starting, [pabx()], "intended: started again");
        assert!(c.started(&pabx()).answers.is_empty(), "nobody asked this time");
        // No region: a stop from anyone stops it.
        let (_, fx) = c.intent(
            &r("fogb"),
            origin(4),
            Intent::Instance {
                service: pabx(),
                present: false,
            },
            0,
        );
        assert_eq!(fx.answers, [(origin(4), Ok(()))]);
        assert!(c.advertised().is_empty());
        c.halt();
        assert!(c.start().starting.is_empty());
    }

    #[test]
    fn without_a_region_the_newest_rule_wins_and_overwrites_count_as_conflicts() {
        let mut c = Controller::new(r("edge2"), &Region::Unknown);
        let (a, fx) = c.intent(&r("foga"), origin(1), route("foga"), 10);
        assert_eq!(a, Admission::Taken { overwrote: false });
        assert_eq!(fx.answers, [(origin(1), Ok(()))], "reconciled at once");
        assert_eq!(
            c.intent(&r("foga"), origin(2), route("edge1"), 20).0,
            Admission::Taken { overwrote: false }
        );
        assert_eq!(
            c.intent(&r("fogb"), origin(3), route("fogb"), 30).0,
            Admission::Taken { overwrote: true }
        );
        assert_eq!(rules(&c), [("fogb".into(), "fogb".into())]);
        assert_eq!(c.rules().next().unwrap().written_ms, 30);
        assert_eq!(c.writers(&pabx()), [r("foga"), r("fogb")]);
        assert_eq!((c.counts().rule_writes, c.counts().conflicts), (3, 1));
        // The rules stay across a restart.
        c.halt();
        assert_eq!(rules(&c).len(), 1);
        c.start();
        assert_eq!(rules(&c).len(), 1);
    }

    #[test]
    fn with_a_region_another_orchestrator_is_refused_and_a_region_change_drops_rules() {
        let mut c = Controller::new(r("edge2"), &Region::Of(r("foga")));
        assert_eq!(
            c.intent(&r("foga"), origin(1), route("foga"), 10).0,
            Admission::Taken { overwrote: false }
        );
        let (a, fx) = c.intent(&r("fogb"), origin(2), route("fogb"), 20);
        assert!(
            matches!(a, Admission::Refused(RefusedError::ForeignRule { .. })),
            "{a:?}"
        );
        assert_eq!(
            fx.answers,
            [(
                origin(2),
                Err("edge2 is in foga's region: fogb may not route it".into())
            )]
        );
        let (a, _) = c.intent(&r("fogb"), origin(3), start(), 20);
        assert!(
            matches!(a, Admission::Refused(RefusedError::ForeignStart { .. })),
            "{a:?}"
        );
        assert_eq!(c.counts().refused.total(), 2);
        assert_eq!(rules(&c), [("foga".into(), "foga".into())]);
        // Out of sight of every orchestrator: the rule stays.
        c.region(Region::Shared);
        assert_eq!(c.counts().rules_dropped, 0);
        // Into fogb's region: foga's rule goes.
        c.region(Region::Of(r("fogb")));
        assert_eq!(c.counts().rules_dropped, 1);
        assert!(rules(&c).is_empty());
        assert_eq!(c.told_region(), Some(&Region::Of(r("fogb"))));
    }

    #[test]
    fn a_shared_router_keeps_one_rule_per_sender_to_itself() {
        let mut c = Controller::new(r("dc"), &Region::Shared);
        c.intent(&r("foga"), origin(1), route("dc"), 10);
        c.intent(&r("fogb"), origin(2), route("dc"), 20);
        let (a, _) = c.intent(&r("fogb"), origin(3), route("fogb"), 30);
        assert!(matches!(a, Admission::Refused(RefusedError::NotShared { .. })), "{a:?}");
        assert_eq!(rules(&c), [("foga".into(), "dc".into()), ("fogb".into(), "dc".into())]);
        assert_eq!(c.counts().conflicts, 0);
    }
}
