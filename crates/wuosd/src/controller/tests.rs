//! The controller task with the domains thread on the fake backend and a fake FIB: no root.

use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use wuos_model::route::{NextHop, ROUTE_PROTOCOL};
use wuos_proto::neighborhood::RouterView;
use wuos_southbound::routes::{RecordingRoutes, RouteCall};

use super::*;
use crate::testing::Fixture;

/// What the fake probes answer (a `fn` probe runner cannot capture).
static PROBES_PASS: AtomicBool = AtomicBool::new(false);

fn probe(_: &crate::domains::probe::Probe) -> Result<(), String> {
    if PROBES_PASS.load(Ordering::SeqCst) {
        Ok(())
    } else {
        Err("udp 10.253.0.2:7: no reply".into())
    }
}

fn router(id: &str, addr: [u8; 4]) -> RouterView {
    RouterView {
        id: RouterId::new(id).unwrap(),
        role: wuos_model::Role::Edge,
        hops: 1,
        latency_ms: 1.0,
        stale: false,
        resources: None,
        control_address: Some((Ipv4Addr::from(addr), 7470).into()),
        demand: Vec::new(),
        instances: Vec::new(),
        sampled_unix_ns: 0,
        region: None,
        placements: Vec::new(),
        sdwan: None,
    }
}

async fn next(rx: &mut mpsc::Receiver<Answer>, within: Duration) -> Option<Answer> {
    tokio::time::timeout(within, rx.recv()).await.ok().flatten()
}

/// Issue 9's regression, through the components: a start is acknowledged only after the
/// instance's probe passed — never while it runs unprobed — and a rule is answered once its
/// route is installed, found by a kernel lookup.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_is_acknowledged_only_after_the_probe_passed_and_rules_install_routes() {
    PROBES_PASS.store(false, Ordering::SeqCst);
    let f = Fixture::new();
    let (domains, _thread) = crate::domains::component::spawn(f.open(0), Instant::now(), probe).unwrap();
    let routes = Arc::new(
        RecordingRoutes::new()
            .with_route([10, 0, 0, 0].into(), 30, None, 2)
            .with_route([10, 254, 0, 0].into(), 16, Some([10, 0, 0, 2].into()), 2),
    );
    let n = Neighborhood {
        at_ms: 0,
        routers: vec![router("fog", [10, 254, 0, 1]), router("edge2", [10, 254, 0, 9])],
    };
    let (_publish, watch) = watch::channel(Arc::new(n));
    let ctl = spawn(Parts {
        me: RouterId::new("fog").unwrap(),
        routes: routes.clone(),
        store: f.store.clone(),
        domains: Some(domains.clone()),
        datapath: None,
        neighborhood: watch,
    });
    let (session, mut answers) = ctl.open().await;
    let echo = ServiceId::new("echo").unwrap();
    ctl.submit(
        session,
        RouterId::new("fog").unwrap(),
        vec![(
            1,
            Intent::Instance {
                service: echo.clone(),
                present: true,
            },
        )],
    )
    .await;
    // Running (the fake backend starts it at once) but its probes fail: no answer.
    assert_eq!(
        next(&mut answers, Duration::from_millis(800)).await,
        None,
        "acknowledged before healthy"
    );
    let s = domains.snapshot();
    let inst = s.instance("echo").expect("the instance runs");
    assert_eq!(inst.state, State::Running);
    assert!(!inst.ready);
    // The probe passes: acknowledged.
    PROBES_PASS.store(true, Ordering::SeqCst);
    let a = next(&mut answers, Duration::from_secs(5))
        .await
        .expect("an answer once healthy");
    assert_eq!(
        a,
        Answer {
            intent_id: 1,
            outcome: Ok(())
        }
    );
    // A rule to edge2: its route is found by lookup and installed, then acknowledged.
    let vip = Ipv4Addr::new(10, 255, 0, 7);
    ctl.submit(
        session,
        RouterId::new("fog").unwrap(),
        vec![(
            2,
            Intent::Rule {
                service: echo.clone(),
                vip,
                serving: Some(RouterId::new("edge2").unwrap()),
            },
        )],
    )
    .await;
    let a = next(&mut answers, Duration::from_secs(5))
        .await
        .expect("the rule's answer");
    assert_eq!(
        a,
        Answer {
            intent_id: 2,
            outcome: Ok(())
        }
    );
    let m = routes.fib_match(vip).await.unwrap().expect("the VIP's route");
    assert!(m.is(
        vip,
        32,
        NextHop {
            gateway: [10, 0, 0, 2].into(),
            oif: 2
        }
    ));
    assert_eq!(m.protocol, ROUTE_PROTOCOL);
    assert!(matches!(routes.take_calls()[..], [RouteCall::Replace(_)]));
    // The intents are in force and persisted.
    assert_eq!(ctl.intents().await.len(), 2);
    assert_eq!(f.store.blobs_with_prefix("intent/").unwrap().len(), 2);
    domains.shutdown();
}
