//! What the kernel should hold for the rules in force, and the ops that put it there.
//!
//! The daemon asks the kernel what [`Controller::lookups`] lists (one route lookup per address:
//! the next hop towards each serving router or local instance, and the FIB entry each VIP matches
//! now), gathers the answers and the data path's current redirects in a [`KernelView`], and
//! carries out the [`Plan`] that [`Controller::plan`] makes of it. Nothing is listed or searched
//! in user space, and a kernel that already holds the right route is left alone.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use serde::Serialize;
use wuos_model::ServiceId;
use wuos_model::domain::InstanceLink;
use wuos_model::route::{FibEntry, NextHop, RouteSpec};

use crate::controller::Controller;
use crate::intent::{Intent, IntentKey};

/// What to ask the kernel before planning.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Lookups {
    /// Addresses whose next hop is needed (`ip route get`).
    pub next_hops: BTreeSet<Ipv4Addr>,
    /// VIPs whose current FIB entry is needed (`ip route get fibmatch`).
    pub vips: BTreeSet<Ipv4Addr>,
}

/// The kernel's answers to [`Lookups`], and the data path's redirects now.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KernelView {
    pub next_hops: BTreeMap<Ipv4Addr, Option<NextHop>>,
    pub vips: BTreeMap<Ipv4Addr, Option<FibEntry>>,
    pub redirects: BTreeMap<ServiceId, InstanceLink>,
}

/// One change of the data plane.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DataplaneOp {
    ReplaceRoute(RouteSpec),
    DeleteRoute { dst: Ipv4Addr, prefix_len: u8 },
    SetRedirect { service: ServiceId, to: InstanceLink },
    ClearRedirect { service: ServiceId },
}

/// What a reconcile does, and what it cannot do yet.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// The ops, each with the rule it serves, in order.
    pub ops: Vec<(IntentKey, DataplaneOp)>,
    /// Rules kept but not applied, and why (no route to the serving router yet, the serving
    /// router not in the view, no running local instance).
    pub unapplied: BTreeMap<IntentKey, String>,
    /// Every rule the plan concerned (applied, unapplied or withdrawn).
    pub concerned: BTreeSet<IntentKey>,
}

impl Plan {
    /// The outcome of each concerned rule once the ops ran, given the ops that failed.
    pub fn outcomes(&self, failed: &BTreeMap<IntentKey, String>) -> BTreeMap<IntentKey, Result<(), String>> {
        self.concerned
            .iter()
            .map(|k| {
                let outcome = match (self.unapplied.get(k), failed.get(k)) {
                    (Some(why), _) | (None, Some(why)) => Err(why.clone()),
                    (None, None) => Ok(()),
                };
                (k.clone(), outcome)
            })
            .collect()
    }
}

/// Where a kept rule's traffic must go: the address to route the VIP towards, and the local
/// instance's redirect when this router serves it.
enum Target {
    At(Ipv4Addr, Option<InstanceLink>),
    Unapplied(String),
}

impl Controller {
    /// `sender` wrote the rule: when the serving router is beyond this router's view (its region
    /// reaches further than the flooding radius: a router 2 hops from its orchestrator, the
    /// serving router 2 hops on the other side), the VIP goes towards the sender, whose own rule
    /// leads on. No loop: the orchestrator places within its view, so the path from this
    /// router's next hop towards it to the serving router is shorter than any through this router.
    fn target(
        &self,
        service: &ServiceId,
        vip: Ipv4Addr,
        serving: &wuos_model::RouterId,
        sender: Option<&wuos_model::RouterId>,
    ) -> Target {
        if serving == self.me() {
            match self.instances.get(service).filter(|i| i.is_running()) {
                Some(i) => match i.address {
                    Some(a) => Target::At(a, i.link.clone().filter(|_| self.xdp())),
                    None => Target::Unapplied(format!("the local instance of {service} has no address")),
                },
                None => Target::Unapplied(format!("no running local instance of {service} to route {vip} to")),
            }
        } else {
            let towards_sender = sender.filter(|s| *s != self.me()).and_then(|s| self.addresses.get(s));
            match self.addresses.get(serving).or(towards_sender) {
                Some(a) => Target::At(*a, None),
                None => Target::Unapplied(format!("serving router {serving} is not in {}'s view", self.me())),
            }
        }
    }

    /// The rules in force with their keys.
    fn rules(&self) -> impl Iterator<Item = (&IntentKey, &ServiceId, Ipv4Addr, &wuos_model::RouterId)> {
        self.intents.iter().filter_map(|(k, i)| match i {
            Intent::Rule {
                service,
                vip,
                serving: Some(r),
            } => Some((k, service, *vip, r)),
            _ => None,
        })
    }

    /// What to look up in the kernel for [`Controller::plan`].
    pub fn lookups(&self) -> Lookups {
        let mut l = Lookups::default();
        for (key, service, vip, serving) in self.rules() {
            l.vips.insert(vip);
            if let Target::At(a, _) = self.target(service, vip, serving, key.sender()) {
                l.next_hops.insert(a);
            }
        }
        l.vips.extend(self.withdrawn.values().copied());
        l
    }

    /// The ops that bring the kernel from `view` to what the rules in force want. Several rules
    /// for one VIP (on a router of no region, one per sender, all towards this router) make one
    /// route, under the first rule's key.
    pub fn plan(&self, view: &KernelView) -> Plan {
        let mut plan = Plan::default();
        let mut wanted_redirects: BTreeMap<&ServiceId, (IntentKey, InstanceLink)> = BTreeMap::new();
        let mut routed: BTreeSet<Ipv4Addr> = BTreeSet::new();
        for (key, service, vip, serving) in self.rules() {
            let key = key.clone();
            plan.concerned.insert(key.clone());
            let (target, redirect) = match self.target(service, vip, serving, key.sender()) {
                Target::At(a, r) => (a, r),
                Target::Unapplied(why) => {
                    plan.unapplied.insert(key, why);
                    continue;
                }
            };
            let Some(via) = view.next_hops.get(&target).copied().flatten() else {
                plan.unapplied
                    .insert(key, format!("{} has no route to {target} ({serving})", self.me()));
                continue;
            };
            let current = view.vips.get(&vip).copied().flatten();
            if routed.insert(vip) && !current.is_some_and(|c| c.is(vip, 32, via)) {
                plan.ops.push((
                    key.clone(),
                    DataplaneOp::ReplaceRoute(RouteSpec {
                        dst: vip,
                        prefix_len: 32,
                        gateway: via.gateway,
                        oif: via.oif,
                        src: None,
                    }),
                ));
            }
            if let Some(r) = redirect {
                wanted_redirects.entry(service).or_insert((key, r));
            }
        }
        let wanted: BTreeSet<Ipv4Addr> = self.rules().map(|(_, _, vip, _)| vip).collect();
        for (key, vip) in &self.withdrawn {
            plan.concerned.insert(key.clone());
            // Another rule in force routes the same VIP: its route stays.
            if !wanted.contains(vip)
                && view
                    .vips
                    .get(vip)
                    .copied()
                    .flatten()
                    .is_some_and(|c| c.is_wuos() && c.dst == *vip && c.prefix_len == 32)
            {
                plan.ops.push((
                    key.clone(),
                    DataplaneOp::DeleteRoute {
                        dst: *vip,
                        prefix_len: 32,
                    },
                ));
            }
        }
        // Redirects: set what is wanted and differs; clear the rest.
        for (service, (key, to)) in &wanted_redirects {
            if view.redirects.get(*service) != Some(to) {
                plan.ops.push((
                    key.clone(),
                    DataplaneOp::SetRedirect {
                        service: (*service).clone(),
                        to: to.clone(),
                    },
                ));
            }
        }
        for service in view.redirects.keys().filter(|s| !wanted_redirects.contains_key(s)) {
            // Under the key of the rule that set it, if still known; else a sender-less one.
            let key = self
                .withdrawn
                .keys()
                .find(|k| k.service() == service)
                .cloned()
                .unwrap_or_else(|| IntentKey::Rule {
                    service: service.clone(),
                    sender: None,
                });
            plan.ops.push((
                key,
                DataplaneOp::ClearRedirect {
                    service: service.clone(),
                },
            ));
        }
        plan
    }
}
