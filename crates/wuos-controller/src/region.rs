//! Who may write what on this router: its region ([`Region`], fed by the daemon from its view
//! with `wuos_orchestrator::region::choose`) decides which orchestrators' intents are taken, and
//! which intents a new one replaces.
//!
//! | region | rule (VIP route) from S | instance start from S | a stop from S withdraws |
//! |---|---|---|---|
//! | [`Region::Unknown`] (not told: no regions) | taken; replaces every rule of the service (the newest wins) | taken | every wish of the service |
//! | [`Region::Of`]`(O)` | taken from O only; refused from anyone else | taken from O only | every wish if S is O, else S's own |
//! | [`Region::Shared`] (a data centre, or no orchestrator in view) | taken only towards this router itself, one per sender | taken, one wish per sender | S's own wish |
//!
//! An instance runs while any wish for it remains, so on a data centre two orchestrators use
//! one instance and one stopping it does not stop it for the other. A withdrawal (a rule with no
//! serving router) is admitted like a rule and removes what that rule would replace.
//!
//! When the region changes, the rules it no longer admits are dropped (their routes withdrawn):
//! into `Of(O)`, every rule but O's; into `Shared`, every rule that leads elsewhere — except
//! from `Of(_)` or `Unknown`: losing sight of every orchestrator, or seeing none yet after a
//! restart, keeps the data plane as it is. Instance
//! wishes are kept: the orchestrator that left moves its service away and stops its instance
//! itself (a stop is always admitted).
//!
//! Keys persisted before senders were recorded load with no sender. Such a rule is dropped when
//! the region is first known (the region's orchestrator announces its routes to a router that
//! joins); such an instance wish is withdrawn by the next intent for that service, whoever sends
//! it.

use std::fmt;

use wuos_model::{RouterId, ServiceId};

use crate::intent::{Intent, IntentKey};

/// The region this router belongs to.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Region {
    /// Not told (regions are not in use): any orchestrator writes anything, the newest wins.
    #[default]
    Unknown,
    /// In no region: a data centre, every region's fallback, or a router that sees no
    /// orchestrator.
    Shared,
    /// In the region of the orchestrator on this router.
    Of(RouterId),
}

impl Region {
    /// From the region a router chose (`None`: no region).
    pub fn from_choice(choice: Option<RouterId>) -> Region {
        choice.map_or(Region::Shared, Region::Of)
    }
}

impl fmt::Display for Region {
    /// `foga's region`, `no region`, `an unknown region`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Region::Unknown => f.write_str("an unknown region"),
            Region::Shared => f.write_str("no region"),
            Region::Of(o) => write!(f, "{o}'s region"),
        }
    }
}

/// An intent this router does not take from its sender.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RefusedError {
    /// A rule from an orchestrator other than the router's region's.
    #[error("{router} is in {region}'s region: {sender} may not route it")]
    ForeignRule {
        router: RouterId,
        region: RouterId,
        sender: RouterId,
    },
    /// An instance start from an orchestrator other than the router's region's.
    #[error("{router} is in {region}'s region: {sender} may not start {service} there")]
    ForeignStart {
        router: RouterId,
        region: RouterId,
        sender: RouterId,
        service: ServiceId,
    },
    /// On a router of no region, a rule that leads elsewhere.
    #[error(
        "{router} is in no region (every region's fallback): {sender} may route {service} only to {router} itself, not to {serving}"
    )]
    NotShared {
        router: RouterId,
        sender: RouterId,
        service: ServiceId,
        serving: RouterId,
    },
}

/// Whether `me`, in `region`, takes `intent` from `sender`.
pub(crate) fn admit(me: &RouterId, region: &Region, sender: &RouterId, intent: &Intent) -> Result<(), RefusedError> {
    match (region, intent) {
        (Region::Unknown, _) => Ok(()),
        (Region::Of(o), Intent::Rule { .. }) if o != sender => Err(RefusedError::ForeignRule {
            router: me.clone(),
            region: o.clone(),
            sender: sender.clone(),
        }),
        (Region::Of(o), Intent::Instance { service, present: true }) if o != sender => {
            Err(RefusedError::ForeignStart {
                router: me.clone(),
                region: o.clone(),
                sender: sender.clone(),
                service: service.clone(),
            })
        }
        (
            Region::Shared,
            Intent::Rule {
                service,
                serving: Some(r),
                ..
            },
        ) if r != me => Err(RefusedError::NotShared {
            router: me.clone(),
            sender: sender.clone(),
            service: service.clone(),
            serving: r.clone(),
        }),
        _ => Ok(()),
    }
}

/// Whether an intent of `sender` with key `new` replaces the one kept under `old` (same kind
/// and service), in `region`.
pub(crate) fn replaces(region: &Region, sender: &RouterId, new: &IntentKey, old: &IntentKey) -> bool {
    if std::mem::discriminant(new) != std::mem::discriminant(old) || new.service() != old.service() {
        return false;
    }
    if old.sender().is_none_or(|s| s == sender) {
        return true;
    }
    match (new, region) {
        (IntentKey::Rule { .. }, Region::Unknown | Region::Of(_)) => true,
        (IntentKey::Rule { .. }, Region::Shared) => false,
        // A start adds a wish; a stop is handled by `stop_withdraws_all`.
        (IntentKey::Instance { .. }, _) => false,
    }
}

/// Whether a stop from `sender` withdraws every wish for the instance, not only its own.
pub(crate) fn stop_withdraws_all(region: &Region, sender: &RouterId) -> bool {
    match region {
        Region::Unknown => true,
        Region::Of(o) => o == sender,
        Region::Shared => false,
    }
}

/// Whether a rule of `sender` towards `serving` is kept when the router is in `region`.
pub(crate) fn keeps_rule(me: &RouterId, region: &Region, sender: Option<&RouterId>, serving: &RouterId) -> bool {
    match region {
        Region::Unknown => true,
        Region::Of(o) => sender == Some(o),
        Region::Shared => serving == me,
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use wuos_model::route::{FibEntry, NextHop, ROUTE_PROTOCOL};

    use super::*;
    use crate::controller::{Controller, Input, InstanceState, LocalInstance, Op};
    use crate::intent::{Kept, Origin};
    use crate::reconcile::{DataplaneOp, KernelView};

    const VIP: Ipv4Addr = Ipv4Addr::new(10, 255, 0, 10);

    fn r(s: &str) -> RouterId {
        RouterId::new(s).unwrap()
    }

    fn pabx() -> ServiceId {
        ServiceId::new("pabx").unwrap()
    }

    /// Intent `id` from the orchestrator on `sender`.
    fn from(sender: &str, id: u64, intent: Intent) -> Input {
        Input::Intent {
            from: Origin {
                session: 1,
                intent_id: id,
            },
            sender: r(sender),
            intent,
        }
    }

    fn route(to: Option<&str>) -> Intent {
        Intent::Rule {
            service: pabx(),
            vip: VIP,
            serving: to.map(r),
        }
    }

    fn instance(present: bool) -> Intent {
        Intent::Instance {
            service: pabx(),
            present,
        }
    }

    fn answers(ops: &[Op]) -> Vec<(u64, Result<(), String>)> {
        ops.iter()
            .filter_map(|o| match o {
                Op::Answer { to, outcome } => Some((to.intent_id, outcome.clone())),
                _ => None,
            })
            .collect()
    }

    fn ensures(ops: &[Op]) -> Vec<bool> {
        ops.iter()
            .filter_map(|o| match o {
                Op::Ensure { present, .. } => Some(*present),
                _ => None,
            })
            .collect()
    }

    /// `key text → kept or deleted` of the `Persist` ops.
    fn persisted(ops: &[Op]) -> Vec<(String, bool)> {
        ops.iter()
            .filter_map(|o| match o {
                Op::Persist { key, kept } => Some((key.to_string(), kept.is_some())),
                _ => None,
            })
            .collect()
    }

    /// `(sender, serving)` of each rule in force.
    fn rules(c: &Controller) -> Vec<(String, String)> {
        c.rules_in_force()
            .map(|(s, _, _, to)| (s.map_or("-".into(), ToString::to_string), to.to_string()))
            .collect()
    }

    fn in_region(me: &str, region: Region) -> Controller {
        let mut c = Controller::new(r(me), false);
        assert!(c.handle(Input::Region(region.clone())).is_empty());
        assert_eq!(c.region(), &region);
        c
    }

    #[test]
    fn a_rule_or_a_start_from_another_regions_orchestrator_is_refused() {
        let mut c = in_region("r5", Region::Of(r("foga")));
        // What it would do, typed (the simulator counts refusals by reason).
        assert!(matches!(
            c.admits(&r("fogb"), &route(Some("fogb"))),
            Err(RefusedError::ForeignRule { .. })
        ));
        assert_eq!(c.admits(&r("foga"), &route(Some("foga"))), Ok(()));
        let ops = c.handle(from("fogb", 1, route(Some("fogb"))));
        assert_eq!(
            ops,
            vec![Op::Answer {
                to: Origin {
                    session: 1,
                    intent_id: 1
                },
                outcome: Err("r5 is in foga's region: fogb may not route it".into())
            }],
            "refused: nothing persisted, nothing reconciled"
        );
        let ops = c.handle(from("fogb", 2, route(None)));
        assert_eq!(
            answers(&ops),
            vec![(2, Err("r5 is in foga's region: fogb may not route it".into()))]
        );
        let ops = c.handle(from("fogb", 3, instance(true)));
        assert_eq!(
            answers(&ops),
            vec![(3, Err("r5 is in foga's region: fogb may not start pabx there".into()))]
        );
        // The region's orchestrator is taken.
        let ops = c.handle(from("foga", 4, route(Some("foga"))));
        assert_eq!(persisted(&ops), vec![("rule/pabx@foga".into(), true)]);
        assert_eq!(ops.last(), Some(&Op::Reconcile));
        // A stop from fogb, which never asked for pabx here, stops nothing.
        c.handle(from("foga", 5, instance(true)));
        let ops = c.handle(from("fogb", 6, instance(false)));
        assert_eq!((answers(&ops), ensures(&ops)), (vec![(6, Ok(()))], vec![]));
        assert!(c.wanted(&pabx()));
        assert_eq!(rules(&c), vec![("foga".into(), "foga".into())]);
        assert_eq!(Region::from_choice(None), Region::Shared);
        assert_eq!(Region::from_choice(Some(r("foga"))), Region::Of(r("foga")));
    }

    #[test]
    fn on_a_dc_instances_and_self_routes_are_kept_per_sender() {
        let mut c = in_region("dc", Region::Shared);
        // Two orchestrators use the dc's instance.
        let ops = c.handle(from("foga", 1, instance(true)));
        assert_eq!(ensures(&ops), vec![true]);
        let ops = c.handle(from("fogb", 2, instance(true)));
        assert_eq!(ensures(&ops), vec![true]);
        let ops = c.handle(Input::Ensured {
            service: pabx(),
            present: true,
            outcome: Ok(()),
        });
        assert!(answers(&ops).is_empty(), "not ready yet");
        let ops = c.handle(Input::Instances(vec![LocalInstance {
            service: pabx(),
            state: InstanceState::Ready,
            address: Some(Ipv4Addr::new(10, 253, 0, 2)),
            link: None,
        }]));
        assert_eq!(
            answers(&ops),
            vec![(1, Ok(())), (2, Ok(()))],
            "both starts acknowledged"
        );
        // foga stops: fogb still wants it, it keeps running.
        let ops = c.handle(from("foga", 3, instance(false)));
        assert_eq!(persisted(&ops), vec![("instance/pabx@foga".into(), false)]);
        assert_eq!((answers(&ops), ensures(&ops)), (vec![(3, Ok(()))], vec![]));
        // fogb stops: the last wish, the instance goes.
        let ops = c.handle(from("fogb", 4, instance(false)));
        assert_eq!(ensures(&ops), vec![false]);
        // Routes: each may have the dc serve the VIP itself, nowhere else.
        c.handle(from("foga", 5, route(Some("dc"))));
        c.handle(from("fogb", 6, route(Some("dc"))));
        let ops = c.handle(from("fogb", 7, route(Some("fogb"))));
        assert_eq!(
            answers(&ops),
            vec![(
                7,
                Err(
                    "dc is in no region (every region's fallback): fogb may route pabx only to dc itself, not to fogb"
                        .into()
                )
            )]
        );
        assert_eq!(
            rules(&c),
            vec![("foga".into(), "dc".into()), ("fogb".into(), "dc".into())]
        );
        // One route for the two rules; foga's withdrawal leaves fogb's route in place.
        c.handle(Input::Instances(vec![LocalInstance {
            service: pabx(),
            state: InstanceState::Ready,
            address: Some(Ipv4Addr::new(10, 253, 0, 2)),
            link: None,
        }]));
        let mut v = KernelView::default();
        let inst = Ipv4Addr::new(10, 253, 0, 2);
        v.next_hops.insert(inst, Some(NextHop { gateway: inst, oif: 9 }));
        assert_eq!(c.plan(&v).ops.len(), 1, "{:?}", c.plan(&v));
        c.handle(from("foga", 8, route(None)));
        v.vips.insert(
            VIP,
            Some(FibEntry {
                dst: VIP,
                prefix_len: 32,
                gateway: Some(inst),
                oif: 9,
                protocol: ROUTE_PROTOCOL,
            }),
        );
        let plan = c.plan(&v);
        assert!(plan.ops.is_empty(), "fogb's rule keeps the route: {plan:?}");
        assert_eq!(rules(&c), vec![("fogb".into(), "dc".into())]);
    }

    #[test]
    fn a_region_change_drops_the_old_orchestrators_rules_not_its_instances() {
        let mut c = in_region("edge2", Region::Of(r("foga")));
        c.handle(Input::Addresses([(r("foga"), Ipv4Addr::new(10, 254, 0, 1))].into()));
        c.handle(from("foga", 1, instance(true)));
        c.handle(from("foga", 2, route(Some("foga"))));
        // edge2 re-homes to fogb before foga's rule was reconciled.
        let ops = c.handle(Input::Region(Region::Of(r("fogb"))));
        assert_eq!(persisted(&ops), vec![("rule/pabx@foga".into(), false)]);
        assert_eq!(
            answers(&ops),
            vec![(
                2,
                Err("edge2 moved from foga's region to fogb's region: foga's rule for pabx dropped".into())
            )]
        );
        assert_eq!(ops.last(), Some(&Op::Reconcile));
        assert!(rules(&c).is_empty());
        // Its route is withdrawn at the next reconcile.
        let mut v = KernelView::default();
        v.vips.insert(
            VIP,
            Some(FibEntry {
                dst: VIP,
                prefix_len: 32,
                gateway: Some(Ipv4Addr::new(10, 0, 0, 1)),
                oif: 3,
                protocol: ROUTE_PROTOCOL,
            }),
        );
        assert_eq!(
            c.plan(&v).ops.into_iter().map(|(_, o)| o).collect::<Vec<_>>(),
            vec![DataplaneOp::DeleteRoute {
                dst: VIP,
                prefix_len: 32
            }]
        );
        // foga's instance stays until foga stops it (a stop is always taken).
        assert!(c.wanted(&pabx()));
        let ops = c.handle(from("foga", 3, instance(false)));
        assert_eq!(ensures(&ops), vec![false]);
        // fogb routes now; the same region again changes nothing.
        let ops = c.handle(from("fogb", 4, route(Some("fogb"))));
        assert_eq!(persisted(&ops), vec![("rule/pabx@fogb".into(), true)]);
        assert!(c.handle(Input::Region(Region::Of(r("fogb")))).is_empty());
        // Into no region (fogb out of sight): its rule stays until another orchestrator takes
        // edge2 (see the next test).
        let ops = c.handle(Input::Region(Region::Shared));
        assert!(persisted(&ops).is_empty(), "{ops:?}");
    }

    #[test]
    fn losing_sight_of_the_orchestrator_keeps_its_rules_until_another_takes_over() {
        let mut c = in_region("edge2", Region::Of(r("foga")));
        c.handle(Input::Addresses([(r("foga"), Ipv4Addr::new(10, 254, 0, 1))].into()));
        c.handle(from("foga", 1, route(Some("foga"))));
        // foga restarts: edge2 sees no orchestrator for a moment. Its rule stays in force.
        let ops = c.handle(Input::Region(Region::Shared));
        assert!(persisted(&ops).is_empty() && answers(&ops).is_empty(), "{ops:?}");
        assert_eq!(rules(&c).len(), 1);
        // While in no region, another orchestrator still may not route it.
        let ops = c.handle(from("fogb", 2, route(Some("fogb"))));
        assert!(matches!(answers(&ops)[..], [(2, Err(_))]), "{ops:?}");
        // foga is back: nothing changes.
        assert!(persisted(&c.handle(Input::Region(Region::Of(r("foga"))))).is_empty());
        assert_eq!(rules(&c).len(), 1);
        // fogb takes edge2 into its region: foga's rule goes.
        c.handle(Input::Region(Region::Shared));
        let ops = c.handle(Input::Region(Region::Of(r("fogb"))));
        assert_eq!(persisted(&ops), vec![("rule/pabx@foga".into(), false)]);
        assert!(rules(&c).is_empty());
    }

    #[test]
    fn without_a_region_the_newest_writer_wins_as_before() {
        let mut c = Controller::new(r("edge2"), false);
        assert_eq!(c.region(), &Region::Unknown);
        c.handle(from("foga", 1, route(Some("foga"))));
        let ops = c.handle(from("fogb", 2, route(Some("fogb"))));
        assert_eq!(
            persisted(&ops),
            vec![("rule/pabx@foga".into(), false), ("rule/pabx@fogb".into(), true)]
        );
        assert_eq!(
            answers(&ops),
            vec![(1, Err("superseded by a newer intent for pabx".into()))]
        );
        assert_eq!(rules(&c), vec![("fogb".into(), "fogb".into())]);
        // A stop from anyone stops the instance, as before.
        c.handle(from("foga", 3, instance(true)));
        let ops = c.handle(from("fogb", 4, instance(false)));
        assert_eq!(
            answers(&ops),
            vec![(3, Err("superseded by a newer intent for pabx".into()))]
        );
        assert_eq!(ensures(&ops), vec![false]);
        // Learning the region keeps the region's orchestrator's rules.
        let ops = c.handle(Input::Region(Region::Of(r("fogb"))));
        assert!(ops.is_empty(), "{ops:?}");
    }

    #[test]
    fn a_restart_that_sees_no_orchestrator_yet_keeps_the_persisted_rules() {
        // edge2 held foga's rule when its daemon stopped; restarted, its first sample comes
        // before any neighbor is up: no orchestrator in view, no region.
        let kept = vec![Kept {
            sender: Some(r("foga")),
            intent: route(Some("foga")),
        }];
        let mut c = Controller::new(r("edge2"), false);
        c.restore(kept);
        let ops = c.handle(Input::Region(Region::Shared));
        assert!(persisted(&ops).is_empty(), "nothing withdrawn: {ops:?}");
        assert_eq!(rules(&c), vec![("foga".into(), "foga".into())]);
        // Its neighbors up, it is back in foga's region: the rule is still foga's.
        assert!(persisted(&c.handle(Input::Region(Region::Of(r("foga"))))).is_empty());
        assert_eq!(rules(&c), vec![("foga".into(), "foga".into())]);
        // Had it joined fogb's region instead, foga's rule would go.
        c.handle(Input::Region(Region::Shared));
        let ops = c.handle(Input::Region(Region::Of(r("fogb"))));
        assert_eq!(persisted(&ops), vec![("rule/pabx@foga".into(), false)]);
    }

    #[test]
    fn intents_persisted_before_senders_load_and_give_way() {
        // Values as the store held them before senders were recorded: an intent alone.
        let old = [
            r#"{"kind":"instance","service":"pabx","present":true}"#,
            r#"{"kind":"rule","service":"pabx","vip":"10.255.0.10","serving":"edge1"}"#,
        ];
        let kept: Vec<Kept> = old.iter().map(|v| serde_json::from_str(v).unwrap()).collect();
        assert!(kept.iter().all(|k| k.sender.is_none()));
        assert_eq!(
            kept.iter().map(|k| k.key().to_string()).collect::<Vec<_>>(),
            vec!["instance/pabx", "rule/pabx"],
            "the old store keys"
        );
        // And the new form: the intent's fields and the sender.
        let new = Kept {
            sender: Some(r("foga")),
            intent: route(Some("edge1")),
        };
        let json = serde_json::to_string(&new).unwrap();
        assert_eq!(
            json,
            r#"{"sender":"foga","kind":"rule","service":"pabx","vip":"10.255.0.10","serving":"edge1"}"#
        );
        assert_eq!(serde_json::from_str::<Kept>(&json).unwrap(), new);

        let mut c = Controller::new(r("edge2"), false);
        let ops = c.restore(kept);
        assert_eq!(ensures(&ops), vec![true]);
        assert_eq!(rules(&c), vec![("-".into(), "edge1".into())]);
        // The region known: the sender-less rule is dropped (foga announces when edge2 joins).
        let ops = c.handle(Input::Region(Region::Of(r("foga"))));
        assert_eq!(persisted(&ops), vec![("rule/pabx".into(), false)]);
        // The next instance intent, from anyone, replaces the sender-less wish.
        let ops = c.handle(from("foga", 1, instance(true)));
        assert_eq!(
            persisted(&ops),
            vec![("instance/pabx".into(), false), ("instance/pabx@foga".into(), true)]
        );
        assert_eq!(
            c.intents().keys().map(ToString::to_string).collect::<Vec<_>>(),
            vec!["instance/pabx@foga"]
        );
    }
}
