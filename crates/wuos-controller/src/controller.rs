//! The controller's state machine: intents filed and answered, instances ensured.
//!
//! ```text
//!  Intent::Instance{present} ──▶ Persist, Ensure ──Ensured──▶ present: wait until the instance
//!       (a newer intent for the same service answers the older one "superseded")   is ready (ack)
//!                                                                                 or failed (error)
//!                                                             absent: ack
//!  Intent::Rule ──▶ Persist, Reconcile ──Reconciled{outcome}──▶ ack, or the reason it is not
//!                                                               applied yet (it is kept and
//!                                                               applied at a later reconcile)
//!  Instances / Addresses changed (what a rule needs) ──▶ Reconcile;   Tick ──▶ Reconcile
//! ```
//!
//! An instance counts as ready only when the domains report it so: running and its health probe
//! passed (or it has none). There is no timer here: a start that never becomes ready is given up
//! by the orchestrator (its ready timeout), whose stop intent supersedes the start.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use wuos_model::{RouterId, ServiceId};

use crate::intent::{Intent, IntentKey, Origin};
use wuos_model::domain::InstanceLink;

/// Where a local instance is, as the domains report it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum InstanceState {
    /// Running, its probe has not passed yet.
    Starting,
    /// Running and healthy (or without a probe): it may take traffic.
    Ready,
    Paused,
    Stopped,
    /// Failed, and why.
    Failed(String),
}

/// This router's instance of a service (the domain named after the service).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalInstance {
    pub service: ServiceId,
    pub state: InstanceState,
    pub address: Option<Ipv4Addr>,
    /// Its veth, for an XDP redirect.
    pub link: Option<InstanceLink>,
}

impl LocalInstance {
    /// Running (starting or ready).
    pub fn is_running(&self) -> bool {
        matches!(self.state, InstanceState::Starting | InstanceState::Ready)
    }
}

/// One message in.
#[derive(Clone, Debug, PartialEq)]
pub enum Input {
    /// An intent from an orchestrator.
    Intent { from: Origin, intent: Intent },
    /// The domains carried out an [`Op::Ensure`].
    Ensured {
        service: ServiceId,
        present: bool,
        outcome: Result<(), String>,
    },
    /// Every local instance, as the domains report them now.
    Instances(Vec<LocalInstance>),
    /// Each router of the neighborhood and the IPv4 address its controller is reached at.
    Addresses(BTreeMap<RouterId, Ipv4Addr>),
    /// A reconcile ran: for each rule it concerned, applied or why not.
    Reconciled(BTreeMap<IntentKey, Result<(), String>>),
    /// Time to put the kernel back in line (a lost route, a rule that could not be applied yet).
    Tick,
}

/// One effect out, for the daemon to carry out in order.
#[derive(Clone, Debug, PartialEq)]
pub enum Op {
    /// Answer the asker: acknowledged, or the reason it failed.
    Answer { to: Origin, outcome: Result<(), String> },
    /// Keep (or forget) the intent in force under `key`, in the store.
    Persist { key: IntentKey, intent: Option<Intent> },
    /// Start (or keep) the service's instance, or remove it; answer with [`Input::Ensured`].
    Ensure { service: ServiceId, present: bool },
    /// Look up the kernel ([`Controller::lookups`]), plan ([`Controller::plan`]), carry out the
    /// plan and answer with [`Input::Reconciled`].
    Reconcile,
}

/// A start or stop being carried out, to answer when it is done.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Waiter {
    from: Origin,
    present: bool,
    /// The domains have carried out the ensure.
    ensured: bool,
}

/// The controller of one router.
#[derive(Clone, Debug)]
pub struct Controller {
    me: RouterId,
    xdp: bool,
    pub(crate) intents: BTreeMap<IntentKey, Intent>,
    /// Withdrawn rules whose route may still be in the kernel: service → VIP.
    pub(crate) withdrawn: BTreeMap<ServiceId, Ipv4Addr>,
    pub(crate) instances: BTreeMap<ServiceId, LocalInstance>,
    pub(crate) addresses: BTreeMap<RouterId, Ipv4Addr>,
    waiting: BTreeMap<ServiceId, Waiter>,
    /// Rules to answer after the next reconcile (one per key: a newer one supersedes).
    rule_answers: BTreeMap<IntentKey, Origin>,
}

impl Controller {
    /// The controller of router `me`; `xdp`: the router has the XDP data path (redirects).
    pub fn new(me: RouterId, xdp: bool) -> Self {
        Controller {
            me,
            xdp,
            intents: BTreeMap::new(),
            withdrawn: BTreeMap::new(),
            instances: BTreeMap::new(),
            addresses: BTreeMap::new(),
            waiting: BTreeMap::new(),
            rule_answers: BTreeMap::new(),
        }
    }

    /// The router it controls.
    pub fn me(&self) -> &RouterId {
        &self.me
    }

    pub(crate) fn xdp(&self) -> bool {
        self.xdp
    }

    /// The intents in force, by key.
    pub fn intents(&self) -> &BTreeMap<IntentKey, Intent> {
        &self.intents
    }

    /// After a daemon restart: the persisted intents back in force. Instances are ensured (a
    /// running one is kept, one that vanished is started), rules reconciled; nobody is answered.
    pub fn restore(&mut self, intents: impl IntoIterator<Item = Intent>) -> Vec<Op> {
        let mut out = Vec::new();
        for i in intents {
            if i.is_removal() {
                continue;
            }
            if let Intent::Instance { service, present } = &i {
                out.push(Op::Ensure {
                    service: service.clone(),
                    present: *present,
                });
            }
            self.intents.insert(i.key(), i);
        }
        out.push(Op::Reconcile);
        out
    }

    /// Handles one input; returns the ops to carry out, in order.
    pub fn handle(&mut self, input: Input) -> Vec<Op> {
        let mut out = Vec::new();
        match input {
            Input::Intent { from, intent } => self.intent(from, intent, &mut out),
            Input::Ensured {
                service,
                present,
                outcome,
            } => self.ensured(service, present, outcome, &mut out),
            Input::Instances(list) => {
                let before = self.rule_inputs();
                self.instances = list.into_iter().map(|i| (i.service.clone(), i)).collect();
                self.answer_waiters(&mut out);
                if self.rule_inputs() != before {
                    out.push(Op::Reconcile);
                }
            }
            Input::Addresses(a) => {
                let before = self.rule_inputs();
                self.addresses = a;
                if self.rule_inputs() != before {
                    out.push(Op::Reconcile);
                }
            }
            Input::Reconciled(outcomes) => {
                for (key, outcome) in outcomes {
                    if let IntentKey::Rule(service) = &key
                        && outcome.is_ok()
                        && !self.intents.contains_key(&key)
                    {
                        self.withdrawn.remove(service);
                    }
                    if let Some(to) = self.rule_answers.remove(&key) {
                        out.push(Op::Answer { to, outcome });
                    }
                }
            }
            Input::Tick => out.push(Op::Reconcile),
        }
        out
    }

    fn intent(&mut self, from: Origin, intent: Intent, out: &mut Vec<Op>) {
        let key = intent.key();
        out.push(Op::Persist {
            key: key.clone(),
            intent: (!intent.is_removal()).then(|| intent.clone()),
        });
        match intent {
            Intent::Instance { service, present } => {
                if let Some(old) = self.waiting.remove(&service) {
                    out.push(Op::Answer {
                        to: old.from,
                        outcome: Err(format!("superseded by a newer intent for {service}")),
                    });
                }
                if present {
                    self.intents.insert(
                        key,
                        Intent::Instance {
                            service: service.clone(),
                            present,
                        },
                    );
                } else {
                    self.intents.remove(&key);
                }
                self.waiting.insert(
                    service.clone(),
                    Waiter {
                        from,
                        present,
                        ensured: false,
                    },
                );
                out.push(Op::Ensure { service, present });
            }
            Intent::Rule { service, vip, serving } => {
                if let Some(old) = self.rule_answers.remove(&key) {
                    out.push(Op::Answer {
                        to: old,
                        outcome: Err(format!("superseded by a newer intent for {service}")),
                    });
                }
                match serving {
                    Some(_) => {
                        self.withdrawn.remove(&service);
                        self.intents.insert(key.clone(), Intent::Rule { service, vip, serving });
                    }
                    None => {
                        self.intents.remove(&key);
                        self.withdrawn.insert(service, vip);
                    }
                }
                self.rule_answers.insert(key, from);
                out.push(Op::Reconcile);
            }
        }
    }

    fn ensured(&mut self, service: ServiceId, present: bool, outcome: Result<(), String>, out: &mut Vec<Op>) {
        let Some(w) = self
            .waiting
            .get_mut(&service)
            .filter(|w| w.present == present && !w.ensured)
        else {
            return;
        };
        w.ensured = true;
        match outcome {
            Err(e) => {
                let w = self.waiting.remove(&service).expect("found above");
                out.push(Op::Answer {
                    to: w.from,
                    outcome: Err(e),
                });
            }
            Ok(()) if !present => {
                let w = self.waiting.remove(&service).expect("found above");
                out.push(Op::Answer {
                    to: w.from,
                    outcome: Ok(()),
                });
            }
            // Only "ready" is taken from the instances now: the domains' report may not show the
            // instance this ensure made yet (a failure is taken from the next report).
            Ok(()) => {
                if self
                    .instances
                    .get(&service)
                    .is_some_and(|i| i.state == InstanceState::Ready)
                {
                    let w = self.waiting.remove(&service).expect("found above");
                    out.push(Op::Answer {
                        to: w.from,
                        outcome: Ok(()),
                    });
                }
            }
        }
    }

    /// Answers the starts whose instance is now ready, or failed.
    fn answer_waiters(&mut self, out: &mut Vec<Op>) {
        let done: Vec<(ServiceId, Result<(), String>)> = self
            .waiting
            .iter()
            .filter(|(_, w)| w.present && w.ensured)
            .filter_map(|(s, _)| match self.instances.get(s).map(|i| &i.state) {
                Some(InstanceState::Ready) => Some((s.clone(), Ok(()))),
                Some(InstanceState::Failed(why)) => Some((s.clone(), Err(format!("instance {s} failed: {why}")))),
                Some(InstanceState::Stopped) => Some((s.clone(), Err(format!("instance {s} stopped")))),
                _ => None,
            })
            .collect();
        for (s, outcome) in done {
            let w = self.waiting.remove(&s).expect("listed above");
            out.push(Op::Answer { to: w.from, outcome });
        }
    }

    /// What the rules' targets depend on: the local instances of the services this router
    /// serves, and the addresses of the serving routers.
    fn rule_inputs(&self) -> Vec<String> {
        let mut v = Vec::new();
        for i in self.intents.values() {
            if let Intent::Rule {
                service,
                serving: Some(r),
                ..
            } = i
            {
                if *r == self.me {
                    let inst = self.instances.get(service);
                    v.push(format!(
                        "{service}: {:?} {:?} {:?}",
                        inst.map(LocalInstance::is_running),
                        inst.and_then(|i| i.address),
                        inst.and_then(|i| i.link.clone())
                    ));
                } else {
                    v.push(format!("{r}: {:?}", self.addresses.get(r)));
                }
            }
        }
        v
    }
}

#[cfg(test)]
mod tests;
