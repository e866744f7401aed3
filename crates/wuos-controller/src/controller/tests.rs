use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use wuos_model::route::{FibEntry, NextHop, ROUTE_PROTOCOL, RouteSpec};
use wuos_model::{RouterId, ServiceId};

use super::*;
use crate::reconcile::{DataplaneOp, KernelView};
use wuos_model::domain::InstanceLink;

fn r(s: &str) -> RouterId {
    RouterId::new(s).unwrap()
}

fn svc(s: &str) -> ServiceId {
    ServiceId::new(s).unwrap()
}

const VIP: Ipv4Addr = Ipv4Addr::new(10, 255, 0, 10);

fn from(id: u64) -> Origin {
    Origin {
        session: 1,
        intent_id: id,
    }
}

/// The orchestrator of these tests (its router).
const ORCH: &str = "orch";

fn start(id: u64) -> Input {
    Input::Intent {
        from: from(id),
        sender: r(ORCH),
        intent: Intent::Instance {
            service: svc("pabx"),
            present: true,
        },
    }
}

fn rule(id: u64, serving: Option<&str>) -> Input {
    Input::Intent {
        from: from(id),
        sender: r(ORCH),
        intent: Intent::Rule {
            service: svc("pabx"),
            vip: VIP,
            serving: serving.map(r),
        },
    }
}

fn instance(state: InstanceState) -> Input {
    Input::Instances(vec![LocalInstance {
        service: svc("pabx"),
        state,
        address: Some(Ipv4Addr::new(10, 253, 0, 2)),
        link: Some(InstanceLink {
            host_if: "d0".into(),
            netns: "/run/netns/wuos.l.fog.pabx".into(),
            dom_if: "eth0".into(),
        }),
    }])
}

/// The daemon's store, as the controller's `Persist` ops leave it: key text → JSON.
#[derive(Default)]
struct Store(BTreeMap<String, String>);

impl Store {
    fn apply(&mut self, ops: &[Op]) {
        for op in ops {
            if let Op::Persist { key, kept } = op {
                match kept {
                    Some(k) => self.0.insert(key.to_string(), serde_json::to_string(k).unwrap()),
                    None => self.0.remove(&key.to_string()),
                };
            }
        }
    }

    fn load(&self) -> Vec<Kept> {
        self.0.values().map(|v| serde_json::from_str(v).unwrap()).collect()
    }
}

fn rule_key() -> IntentKey {
    IntentKey::Rule {
        service: svc("pabx"),
        sender: Some(r(ORCH)),
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

/// Issue 9's health-gate regression: a new instance is acknowledged only once the domains report
/// it ready (its probe passed) — never at "running", never from a stale report.
#[test]
fn a_start_is_acknowledged_only_when_the_instance_is_ready() {
    let mut c = Controller::new(r("fog"), false);
    let ops = c.handle(start(7));
    assert_eq!(
        ops,
        vec![
            Op::Persist {
                key: IntentKey::Instance {
                    service: svc("pabx"),
                    sender: Some(r(ORCH))
                },
                kept: Some(Kept {
                    sender: Some(r(ORCH)),
                    intent: Intent::Instance {
                        service: svc("pabx"),
                        present: true
                    }
                })
            },
            Op::Ensure {
                service: svc("pabx"),
                present: true
            }
        ]
    );
    // Starting before the ensure is done (a stale report): nothing.
    assert!(answers(&c.handle(instance(InstanceState::Starting))).is_empty());
    let ops = c.handle(Input::Ensured {
        service: svc("pabx"),
        present: true,
        outcome: Ok(()),
    });
    assert!(answers(&ops).is_empty(), "running but not healthy: no ack");
    assert!(answers(&c.handle(instance(InstanceState::Starting))).is_empty());
    assert_eq!(answers(&c.handle(instance(InstanceState::Ready))), vec![(7, Ok(()))]);
    assert!(
        answers(&c.handle(instance(InstanceState::Ready))).is_empty(),
        "answered once"
    );
}

#[test]
fn a_start_whose_probe_never_passes_is_never_acknowledged_and_nothing_is_routed_to_it() {
    let mut c = Controller::new(r("fog"), true);
    c.handle(start(1));
    c.handle(Input::Ensured {
        service: svc("pabx"),
        present: true,
        outcome: Ok(()),
    });
    for _ in 0..5 {
        assert!(answers(&c.handle(instance(InstanceState::Starting))).is_empty());
    }
    // The orchestrator gives up (its ready timeout) and stops it: the start is superseded.
    let ops = c.handle(Input::Intent {
        from: from(2),
        sender: r(ORCH),
        intent: Intent::Instance {
            service: svc("pabx"),
            present: false,
        },
    });
    assert_eq!(
        answers(&ops),
        vec![(1, Err("superseded by a newer intent for pabx".into()))]
    );
    // Or it fails: the error is the answer.
    let mut c = Controller::new(r("fog"), true);
    c.handle(start(1));
    c.handle(Input::Ensured {
        service: svc("pabx"),
        present: true,
        outcome: Ok(()),
    });
    let ops = c.handle(instance(InstanceState::Failed(
        "failed its health check (no reply)".into(),
    )));
    assert_eq!(
        answers(&ops),
        vec![(
            1,
            Err("instance pabx failed: failed its health check (no reply)".into())
        )]
    );
    // A rule to this router with a failed instance is kept, not applied.
    c.handle(rule(3, Some("fog")));
    let plan = c.plan(&KernelView::default());
    assert!(plan.ops.is_empty(), "{plan:?}");
    assert!(plan.unapplied[&rule_key()].contains("no running local instance"));
}

#[test]
fn an_ensure_that_fails_is_the_answer() {
    let mut c = Controller::new(r("fog"), false);
    c.handle(start(4));
    let ops = c.handle(Input::Ensured {
        service: svc("pabx"),
        present: true,
        outcome: Err("memory short by 128MiB".into()),
    });
    assert_eq!(answers(&ops), vec![(4, Err("memory short by 128MiB".into()))]);
    // A late report of another ensure changes nothing.
    assert!(
        c.handle(Input::Ensured {
            service: svc("pabx"),
            present: true,
            outcome: Ok(())
        })
        .is_empty()
    );
}

fn view(next_hop: Option<NextHop>, vip: Option<FibEntry>) -> KernelView {
    let mut v = KernelView::default();
    v.next_hops.insert(Ipv4Addr::new(10, 254, 0, 9), next_hop);
    v.vips.insert(VIP, vip);
    v
}

/// The op that routes the VIP through `via`.
fn vip_route(via: NextHop) -> DataplaneOp {
    DataplaneOp::ReplaceRoute(RouteSpec {
        dst: VIP,
        prefix_len: 32,
        gateway: via.gateway,
        oif: via.oif,
        src: None,
    })
}

#[test]
fn a_rule_routes_the_vip_by_the_kernels_next_hop_and_leaves_a_right_route_alone() {
    let mut c = Controller::new(r("edge1"), false);
    let ops = c.handle(rule(5, Some("edge2")));
    assert_eq!(ops.last(), Some(&Op::Reconcile));
    // edge2 not in the view yet: kept, answered with why.
    let plan = c.plan(&KernelView::default());
    let key = rule_key();
    assert_eq!(plan.unapplied[&key], "serving router edge2 is not in edge1's view");
    let ops = c.handle(Input::Reconciled(plan.outcomes(&BTreeMap::new())));
    assert_eq!(
        answers(&ops),
        vec![(5, Err("serving router edge2 is not in edge1's view".into()))]
    );
    // edge2 appears: a reconcile is due.
    let ops = c.handle(Input::Addresses([(r("edge2"), Ipv4Addr::new(10, 254, 0, 9))].into()));
    assert_eq!(ops, vec![Op::Reconcile]);
    let l = c.lookups();
    assert!(l.next_hops.contains(&Ipv4Addr::new(10, 254, 0, 9)) && l.vips.contains(&VIP));
    let via = NextHop {
        gateway: Ipv4Addr::new(10, 0, 0, 2),
        oif: 3,
    };
    let plan = c.plan(&view(Some(via), None));
    assert_eq!(plan.ops, vec![(key.clone(), vip_route(via))]);
    // Already there: nothing to do.
    let installed = FibEntry {
        dst: VIP,
        prefix_len: 32,
        gateway: Some(via.gateway),
        oif: 3,
        protocol: ROUTE_PROTOCOL,
    };
    assert!(c.plan(&view(Some(via), Some(installed))).ops.is_empty());
    // A covering aggregate is not the VIP's route: replaced.
    let aggregate = FibEntry {
        dst: Ipv4Addr::new(10, 255, 0, 0),
        prefix_len: 16,
        protocol: 4,
        ..installed
    };
    assert_eq!(c.plan(&view(Some(via), Some(aggregate))).ops.len(), 1);
    // No route to the serving router: kept, not applied.
    let plan = c.plan(&view(None, None));
    assert!(plan.unapplied[&key].contains("has no route to 10.254.0.9"), "{plan:?}");
    // An unchanged address needs no reconcile.
    assert!(
        c.handle(Input::Addresses([(r("edge2"), Ipv4Addr::new(10, 254, 0, 9))].into()))
            .is_empty()
    );
}

#[test]
fn a_serving_router_beyond_the_view_is_reached_through_the_rules_writer() {
    // edge1 is 2 hops from its orchestrator, the serving router edge2 2 hops on the other side:
    // edge2 is not in edge1's view, the orchestrator is.
    let mut c = Controller::new(r("edge1"), false);
    let orch = Ipv4Addr::new(10, 254, 0, 9);
    c.handle(Input::Addresses([(r(ORCH), orch)].into()));
    c.handle(rule(5, Some("edge2")));
    assert!(c.lookups().next_hops.contains(&orch));
    let via = NextHop {
        gateway: Ipv4Addr::new(10, 0, 0, 2),
        oif: 3,
    };
    let plan = c.plan(&view(Some(via), None));
    assert!(plan.unapplied.is_empty(), "{:?}", plan.unapplied);
    assert_eq!(plan.ops, vec![(rule_key(), vip_route(via))]);
    // Once edge2 is in the view, the route is towards edge2 itself.
    let edge2 = Ipv4Addr::new(10, 254, 0, 12);
    c.handle(Input::Addresses([(r(ORCH), orch), (r("edge2"), edge2)].into()));
    assert!(c.lookups().next_hops.contains(&edge2) && !c.lookups().next_hops.contains(&orch));
}

#[test]
fn serving_locally_routes_to_the_instance_and_redirects_then_a_withdrawal_removes_both() {
    let mut c = Controller::new(r("fog"), true);
    c.handle(instance(InstanceState::Ready));
    c.handle(rule(1, Some("fog")));
    let inst = Ipv4Addr::new(10, 253, 0, 2);
    assert!(c.lookups().next_hops.contains(&inst));
    let mut v = KernelView::default();
    v.next_hops.insert(inst, Some(NextHop { gateway: inst, oif: 9 }));
    let plan = c.plan(&v);
    let kinds: Vec<&DataplaneOp> = plan.ops.iter().map(|(_, o)| o).collect();
    assert!(matches!(kinds[0], DataplaneOp::ReplaceRoute(r) if r.gateway == inst && r.oif == 9));
    assert!(matches!(kinds[1], DataplaneOp::SetRedirect { to, .. } if to.host_if == "d0"));
    // The instance restarting (starting again) keeps the route; stopped, the redirect goes.
    v.redirects.insert(
        svc("pabx"),
        InstanceLink {
            host_if: "d0".into(),
            netns: "/run/netns/wuos.l.fog.pabx".into(),
            dom_if: "eth0".into(),
        },
    );
    assert_eq!(
        c.handle(instance(InstanceState::Starting)),
        vec![],
        "same target: no reconcile"
    );
    let ops = c.handle(instance(InstanceState::Stopped));
    assert_eq!(ops, vec![Op::Reconcile]);
    let plan = c.plan(&v);
    assert!(
        plan.ops
            .iter()
            .any(|(_, o)| matches!(o, DataplaneOp::ClearRedirect { .. }))
    );
    // Withdrawn: the wuos /32 is deleted once, then the rule is forgotten.
    c.handle(rule(2, None));
    assert!(c.intents().is_empty());
    v.vips.insert(
        VIP,
        Some(FibEntry {
            dst: VIP,
            prefix_len: 32,
            gateway: None,
            oif: 9,
            protocol: ROUTE_PROTOCOL,
        }),
    );
    let plan = c.plan(&v);
    assert!(plan.ops.iter().any(|(_, o)| *o
        == DataplaneOp::DeleteRoute {
            dst: VIP,
            prefix_len: 32
        }));
    let ops = c.handle(Input::Reconciled(plan.outcomes(&BTreeMap::new())));
    assert_eq!(answers(&ops), vec![(2, Ok(()))]);
    v.vips.insert(VIP, None);
    assert!(c.lookups().vips.is_empty(), "forgotten once deleted");
}

#[test]
fn a_failed_op_is_the_rules_answer_and_intents_survive_a_restore() {
    let mut c = Controller::new(r("edge1"), false);
    let mut store = Store::default();
    c.handle(Input::Addresses([(r("edge2"), Ipv4Addr::new(10, 254, 0, 9))].into()));
    store.apply(&c.handle(rule(1, Some("edge2"))));
    store.apply(&c.handle(start(2)));
    let plan = c.plan(&view(
        Some(NextHop {
            gateway: Ipv4Addr::new(10, 0, 0, 2),
            oif: 3,
        }),
        None,
    ));
    let failed: BTreeMap<IntentKey, String> = [(rule_key(), "netlink: EPERM".to_string())].into();
    let ops = c.handle(Input::Reconciled(plan.outcomes(&failed)));
    assert_eq!(answers(&ops), vec![(1, Err("netlink: EPERM".into()))]);
    // What the store keeps: the intents in force with their senders, typed, as JSON.
    assert_eq!(
        store.0.keys().collect::<Vec<_>>(),
        vec!["instance/pabx@orch", "rule/pabx@orch"]
    );
    let mut again = Controller::new(r("edge1"), false);
    let ops = again.restore(store.load());
    assert_eq!(
        ops,
        vec![
            Op::Ensure {
                service: svc("pabx"),
                present: true
            },
            Op::Reconcile
        ]
    );
    assert_eq!(again.intents(), c.intents());
    assert!(answers(&ops).is_empty(), "a restore answers nobody");
}
