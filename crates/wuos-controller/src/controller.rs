//! The controller's state machine: intents admitted, filed and answered, instances ensured.
//!
//! ```text
//!  Intent{sender} ──admit (region)──▶ refused: answer with why (crate::region)
//!  Intent::Instance{present} ──▶ Persist, Ensure ──Ensured──▶ present: wait until the instance
//!       (a newer intent of the same sender answers the older one "superseded")  is ready (ack)
//!                                                                              or failed (error)
//!                                                             absent: ack
//!       a stop that leaves another sender's wish: ack at once, the instance stays
//!  Intent::Rule ──▶ Persist, Reconcile ──Reconciled{outcome}──▶ ack, or the reason it is not
//!                                                               applied yet (it is kept and
//!                                                               applied at a later reconcile)
//!  Region changed ──▶ rules it no longer admits dropped (Persist, their routes withdrawn)
//!  Instances / Addresses changed (what a rule needs) ──▶ Reconcile;   Tick ──▶ Reconcile
//! ```
//!
//! An instance counts as ready only when the domains report it so: running and its health probe
//! passed (or it has none). There is no timer here: a start that never becomes ready is given up
//! by the orchestrator (its ready timeout), whose stop intent supersedes the start.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use wuos_model::{RouterId, ServiceId};

use crate::intent::{Intent, IntentKey, Kept, Origin};
use crate::region::{self, Region};
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
    /// An intent from the orchestrator on router `sender` (this router for the local
    /// orchestrator; another's as its certificate or session says).
    Intent {
        from: Origin,
        sender: RouterId,
        intent: Intent,
    },
    /// The region this router belongs to now (see [`crate::region`]); until the first, the
    /// region is [`Region::Unknown`].
    Region(Region),
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
    /// Keep (or forget) the intent in force under `key` (its text is the store's key), in the
    /// store.
    Persist { key: IntentKey, kept: Option<Kept> },
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
    region: Region,
    pub(crate) intents: BTreeMap<IntentKey, Intent>,
    /// Withdrawn or dropped rules whose route may still be in the kernel, and their VIP.
    pub(crate) withdrawn: BTreeMap<IntentKey, Ipv4Addr>,
    pub(crate) instances: BTreeMap<ServiceId, LocalInstance>,
    pub(crate) addresses: BTreeMap<RouterId, Ipv4Addr>,
    /// Starts and stops being carried out, by service and sender.
    waiting: BTreeMap<(ServiceId, RouterId), Waiter>,
    /// Rules to answer after the next reconcile (one per key: a newer one supersedes).
    rule_answers: BTreeMap<IntentKey, Origin>,
}

impl Controller {
    /// The controller of router `me`; `xdp`: the router has the XDP data path (redirects). Its
    /// region is unknown until an [`Input::Region`].
    pub fn new(me: RouterId, xdp: bool) -> Self {
        Controller {
            me,
            xdp,
            region: Region::Unknown,
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

    /// The region it was last told.
    pub fn region(&self) -> &Region {
        &self.region
    }

    /// Whether it would take `intent` from `sender` now, or why not: the check every
    /// [`Input::Intent`] goes through first (refused intents are answered with this error's
    /// text). For models that count refusals by reason (the simulator).
    pub fn admits(&self, sender: &RouterId, intent: &Intent) -> Result<(), region::RefusedError> {
        region::admit(&self.me, &self.region, sender, intent)
    }

    pub(crate) fn xdp(&self) -> bool {
        self.xdp
    }

    /// The intents in force, by key (with their sender).
    pub fn intents(&self) -> &BTreeMap<IntentKey, Intent> {
        &self.intents
    }

    /// The rules in force: sender (if known), service, VIP, serving router.
    pub fn rules_in_force(&self) -> impl Iterator<Item = (Option<&RouterId>, &ServiceId, Ipv4Addr, &RouterId)> {
        self.intents.iter().filter_map(|(k, i)| match i {
            Intent::Rule {
                service,
                vip,
                serving: Some(r),
            } => Some((k.sender(), service, *vip, r)),
            _ => None,
        })
    }

    /// Whether any sender wants an instance of `service` here.
    pub fn wanted(&self, service: &ServiceId) -> bool {
        self.intents
            .keys()
            .any(|k| matches!(k, IntentKey::Instance { service: s, .. } if s == service))
    }

    /// After a daemon restart: the persisted intents back in force. Instances are ensured (a
    /// running one is kept, one that vanished is started), rules reconciled; nobody is answered.
    pub fn restore(&mut self, kept: impl IntoIterator<Item = Kept>) -> Vec<Op> {
        let mut out = Vec::new();
        let mut ensure = BTreeSet::new();
        for k in kept {
            if k.intent.is_removal() {
                continue;
            }
            if let Intent::Instance { service, .. } = &k.intent {
                ensure.insert(service.clone());
            }
            self.intents.insert(k.key(), k.intent);
        }
        for service in ensure {
            out.push(Op::Ensure { service, present: true });
        }
        out.push(Op::Reconcile);
        out
    }

    /// Handles one input; returns the ops to carry out, in order.
    pub fn handle(&mut self, input: Input) -> Vec<Op> {
        let mut out = Vec::new();
        match input {
            Input::Intent { from, sender, intent } => self.intent(from, sender, intent, &mut out),
            Input::Region(r) => self.set_region(r, &mut out),
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
                    if outcome.is_ok() && !self.intents.contains_key(&key) {
                        self.withdrawn.remove(&key);
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

    /// Forgets a kept intent (persisted), withdrawing a rule's route.
    fn forget(&mut self, key: &IntentKey, out: &mut Vec<Op>) {
        if let Some(Intent::Rule { vip, .. }) = self.intents.remove(key) {
            self.withdrawn.insert(key.clone(), vip);
        }
        out.push(Op::Persist {
            key: key.clone(),
            kept: None,
        });
    }

    fn intent(&mut self, from: Origin, sender: RouterId, intent: Intent, out: &mut Vec<Op>) {
        if let Err(e) = region::admit(&self.me, &self.region, &sender, &intent) {
            out.push(Op::Answer {
                to: from,
                outcome: Err(e.to_string()),
            });
            return;
        }
        let key = intent.key(Some(&sender));
        let service = intent.service().clone();
        let replaced: Vec<IntentKey> = self
            .intents
            .keys()
            .chain(self.rule_answers.keys())
            .filter(|old| region::replaces(&self.region, &sender, &key, old))
            .cloned()
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        match intent {
            Intent::Instance { present, .. } => {
                // The wishes this intent withdraws (a start keeps the sender's own, renewed).
                let withdraws_all = !present && region::stop_withdraws_all(&self.region, &sender);
                let removed: Vec<IntentKey> = if withdraws_all {
                    self.intents
                        .keys()
                        .filter(|k| matches!(k, IntentKey::Instance { service: s, .. } if *s == service))
                        .cloned()
                        .collect()
                } else {
                    replaced
                };
                let mut had_wish = false;
                for k in removed.iter().filter(|k| !present || **k != key) {
                    if self.intents.contains_key(k) {
                        had_wish = true;
                        self.forget(k, out);
                    }
                }
                // Superseded: the sender's own pending start or stop, and those of the senders
                // whose wish this one withdrew.
                let superseded: Vec<(ServiceId, RouterId)> = self
                    .waiting
                    .keys()
                    .filter(|(s, w)| *s == service && (*w == sender || removed.iter().any(|k| k.sender() == Some(w))))
                    .cloned()
                    .collect();
                for w in superseded {
                    let old = self.waiting.remove(&w).expect("listed above");
                    out.push(Op::Answer {
                        to: old.from,
                        outcome: Err(format!("superseded by a newer intent for {service}")),
                    });
                }
                if present {
                    let kept = Kept {
                        sender: Some(sender.clone()),
                        intent: Intent::Instance {
                            service: service.clone(),
                            present,
                        },
                    };
                    self.intents.insert(key.clone(), kept.intent.clone());
                    out.push(Op::Persist { key, kept: Some(kept) });
                } else if self.wanted(&service) || !(withdraws_all || had_wish) {
                    // Another sender still wants it, or this sender never did (and may not stop
                    // others'): it stays; this sender's wish, if any, is gone.
                    out.push(Op::Answer {
                        to: from,
                        outcome: Ok(()),
                    });
                    return;
                }
                self.waiting.insert(
                    (service.clone(), sender),
                    Waiter {
                        from,
                        present,
                        ensured: false,
                    },
                );
                out.push(Op::Ensure { service, present });
            }
            Intent::Rule { vip, serving, .. } => {
                for k in &replaced {
                    if let Some(old) = self.rule_answers.remove(k) {
                        out.push(Op::Answer {
                            to: old,
                            outcome: Err(format!("superseded by a newer intent for {service}")),
                        });
                    }
                    if *k != key && self.intents.contains_key(k) {
                        self.forget(k, out);
                    }
                }
                match serving {
                    Some(_) => {
                        self.withdrawn.remove(&key);
                        let kept = Kept {
                            sender: Some(sender),
                            intent: Intent::Rule { service, vip, serving },
                        };
                        self.intents.insert(key.clone(), kept.intent.clone());
                        out.push(Op::Persist {
                            key: key.clone(),
                            kept: Some(kept),
                        });
                    }
                    None => {
                        self.intents.remove(&key);
                        self.withdrawn.insert(key.clone(), vip);
                        out.push(Op::Persist {
                            key: key.clone(),
                            kept: None,
                        });
                    }
                }
                self.rule_answers.insert(key, from);
                out.push(Op::Reconcile);
            }
        }
    }

    /// A new region: the rules it does not admit are dropped (and their asker, if still waiting,
    /// told why).
    fn set_region(&mut self, region: Region, out: &mut Vec<Op>) {
        if region == self.region {
            return;
        }
        let old = std::mem::replace(&mut self.region, region);
        // Losing sight of every orchestrator (ours restarts, or its adverts went stale) is no
        // reason to tear the data plane down: the rules in force stay until another orchestrator
        // takes this router into its region (and announces its own). Nor is seeing none yet:
        // a restarted daemon's first sample comes before its neighbors are up, and its
        // persisted rules must not be withdrawn for that.
        if matches!((&old, &self.region), (Region::Of(_) | Region::Unknown, Region::Shared)) {
            return;
        }
        let dropped: Vec<IntentKey> = self
            .rules_in_force()
            .filter(|(sender, _, _, serving)| !region::keeps_rule(&self.me, &self.region, *sender, serving))
            .map(|(sender, service, _, _)| IntentKey::Rule {
                service: service.clone(),
                sender: sender.cloned(),
            })
            .collect();
        for k in &dropped {
            self.forget(k, out);
            if let Some(to) = self.rule_answers.remove(k) {
                let who = k
                    .sender()
                    .map_or_else(|| "an unknown sender".to_string(), ToString::to_string);
                out.push(Op::Answer {
                    to,
                    outcome: Err(format!(
                        "{} moved from {old} to {}: {who}'s rule for {} dropped",
                        self.me,
                        self.region,
                        k.service()
                    )),
                });
            }
        }
        if !dropped.is_empty() {
            out.push(Op::Reconcile);
        }
    }

    fn ensured(&mut self, service: ServiceId, present: bool, outcome: Result<(), String>, out: &mut Vec<Op>) {
        let matching: Vec<(ServiceId, RouterId)> = self
            .waiting
            .iter()
            .filter(|((s, _), w)| *s == service && w.present == present && !w.ensured)
            .map(|(k, _)| k.clone())
            .collect();
        let ready = self
            .instances
            .get(&service)
            .is_some_and(|i| i.state == InstanceState::Ready);
        for k in matching {
            let w = self.waiting.get_mut(&k).expect("listed above");
            w.ensured = true;
            // Only "ready" is taken from the instances now: the domains' report may not show the
            // instance this ensure made yet (a failure is taken from the next report).
            let answer = match &outcome {
                Err(e) => Some(Err(e.clone())),
                Ok(()) if !present || ready => Some(Ok(())),
                Ok(()) => None,
            };
            if let Some(outcome) = answer {
                let w = self.waiting.remove(&k).expect("listed above");
                out.push(Op::Answer { to: w.from, outcome });
            }
        }
    }

    /// Answers the starts whose instance is now ready, or failed.
    fn answer_waiters(&mut self, out: &mut Vec<Op>) {
        let done: Vec<((ServiceId, RouterId), Result<(), String>)> = self
            .waiting
            .iter()
            .filter(|(_, w)| w.present && w.ensured)
            .filter_map(|(k, _)| {
                let s = &k.0;
                match self.instances.get(s).map(|i| &i.state) {
                    Some(InstanceState::Ready) => Some((k.clone(), Ok(()))),
                    Some(InstanceState::Failed(why)) => Some((k.clone(), Err(format!("instance {s} failed: {why}")))),
                    Some(InstanceState::Stopped) => Some((k.clone(), Err(format!("instance {s} stopped")))),
                    _ => None,
                }
            })
            .collect();
        for (k, outcome) in done {
            let w = self.waiting.remove(&k).expect("listed above");
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
