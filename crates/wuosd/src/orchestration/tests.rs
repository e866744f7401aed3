//! The orchestration host with a recording delivery and a neighborhood given by the test: the
//! restart and the health gate, without sockets or root.

use std::sync::{Arc, Mutex};

use wuos_proto::neighborhood::{AdvertisedInstance as Advertised, RouterView};
use wuos_proto::pb;

use super::*;

const POLICY: &str = "service pabx {
  match udp dport 5060 to 10.255.0.10
  place local when mem.used_pct < 30
  place nearby within 2 hops when mem.used_pct < 30 prefer lowest latency
  otherwise datacenter
  hold 0s
}";

/// Records every intent delivered; every delivery succeeds.
#[derive(Clone, Default)]
struct Recorder {
    sent: Arc<Mutex<Vec<(String, u64, Intent)>>>,
}

impl Recorder {
    fn take(&self) -> Vec<(String, u64, Intent)> {
        std::mem::take(&mut *self.sent.lock().unwrap())
    }
}

impl Delivery for Recorder {
    async fn deliver(
        &mut self,
        router: &RouterId,
        _: Option<SocketAddr>,
        id: u64,
        intent: Intent,
    ) -> Result<(), String> {
        self.sent.lock().unwrap().push((router.to_string(), id, intent));
        Ok(())
    }
}

fn view(id: &str, hops: u32, mem: f64, pabx: Option<bool>) -> RouterView {
    RouterView {
        id: RouterId::new(id).unwrap(),
        role: match id {
            "dc" => wuos_model::Role::Dc,
            "fog" => wuos_model::Role::Fog,
            _ => wuos_model::Role::Edge,
        },
        hops,
        latency_ms: f64::from(hops),
        stale: false,
        resources: Some(pb::Resources {
            mem_used_pct: mem,
            ..Default::default()
        }),
        control_address: None,
        demand: vec![("pabx".into(), 1.0)],
        instances: pabx
            .into_iter()
            .map(|ready| Advertised {
                service: "pabx".into(),
                name: "pabx".into(),
                state: "running".into(),
                ready,
            })
            .collect(),
        sampled_unix_ns: 0,
        // Every router but the data centre is in the fog's region (the fog advertises itself).
        region: (id != "dc").then(|| RouterId::new("fog").unwrap()),
        placements: Vec::new(),
        sdwan: None,
    }
}

fn host(
    store: Arc<Store>,
    n: Neighborhood,
    ready_timeout: Duration,
) -> (Host<Recorder>, Recorder, watch::Sender<Arc<Neighborhood>>) {
    let rec = Recorder::default();
    let (publish, neighborhood) = watch::channel(Arc::new(n));
    let mut cfg = OrchestratorConfig::new(RouterId::new("dc").unwrap());
    cfg.ready_timeout = ready_timeout;
    let parts = Parts {
        me: RouterId::new("fog").unwrap(),
        cfg,
        interval: Duration::from_millis(100),
        settle: Duration::ZERO,
        clock: Clock::start(),
        store,
        neighborhood,
        catalog: vec!["pabx".into()],
        delivery: rec.clone(),
    };
    (Host::new(parts, watch::channel(Vec::new()).0), rec, publish)
}

fn routes_to(sent: &[(String, u64, Intent)]) -> Vec<(String, String)> {
    sent.iter()
        .filter_map(|(r, _, i)| match i {
            Intent::Rule { serving: Some(s), .. } => Some((r.clone(), s.to_string())),
            _ => None,
        })
        .collect()
}

/// Issue 9's restart regression: the fog router's daemon restarts while the PABX is served from
/// edge2. The placement is rebuilt from the store and edge2's advert: edge2's healthy instance is
/// adopted, every VIP route is re-announced towards edge2 (none to the data centre), the orphan
/// on edge1 is stopped, and the log says so.
#[tokio::test]
async fn a_restarted_orchestrator_adopts_the_serving_instance_and_stops_orphans() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(dir.path()).unwrap());
    // What the orchestrator had persisted before it was killed.
    store.put_blob(POLICY_KEY, POLICY.as_bytes()).unwrap();
    store.put_blob(SERVING_KEY, br#"{"pabx":"edge2"}"#).unwrap();
    let n = Neighborhood {
        at_ms: 0,
        routers: vec![
            view("fog", 0, 80.0, None),
            view("edge1", 1, 10.0, Some(true)),
            view("edge2", 2, 10.0, Some(true)),
            view("dc", 1, 10.0, Some(true)),
        ],
    };
    let (mut h, rec, _publish) = host(store.clone(), n, Duration::from_secs(20));
    h.load_policy();
    h.round().await;
    let sent = rec.take();
    let routes = routes_to(&sent);
    assert!(!routes.is_empty(), "routes are re-announced: {sent:?}");
    // The data centre keeps its own route to its own instance (it is in no region).
    assert!(
        routes.iter().filter(|(r, _)| r != "dc").all(|(_, to)| to == "edge2"),
        "every route in the region leads to edge2, none back to the data centre: {routes:?}"
    );
    let stops: Vec<&String> = sent
        .iter()
        .filter(|(_, _, i)| matches!(i, Intent::Instance { present: false, .. }))
        .map(|(r, _, _)| r)
        .collect();
    assert_eq!(
        stops,
        vec!["edge1"],
        "the orphan is stopped, the dc's and edge2's are not"
    );
    let log = h.log();
    assert_eq!(log.serving.get("pabx").map(String::as_str), Some("edge2"));
    let kinds: Vec<(&str, &str)> = log
        .decisions
        .iter()
        .map(|d| (d.kind.as_str(), d.reason.as_str()))
        .collect();
    assert!(
        kinds
            .iter()
            .any(|(k, r)| *k == "restore" && r.contains("edge2 advertises a healthy instance: adopted")),
        "{kinds:?}"
    );
    assert!(
        kinds.iter().any(|(k, r)| *k == "orphan" && r.contains("edge1")),
        "{kinds:?}"
    );
    assert_eq!(
        store.get_blob(SERVING_KEY).unwrap().as_deref(),
        Some(&br#"{"pabx":"edge2"}"#[..]),
        "the placement stays persisted"
    );
}

/// Right after the fog restarts, its routers advertise no region (they lost sight of it): the
/// restore waits until the serving router is back in the fog's region — restoring earlier would
/// take it for a router that left and move the service to the data centre.
#[tokio::test]
async fn a_restore_waits_for_the_serving_router_to_rejoin_the_region() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(dir.path()).unwrap());
    store.put_blob(POLICY_KEY, POLICY.as_bytes()).unwrap();
    store.put_blob(SERVING_KEY, br#"{"pabx":"edge2"}"#).unwrap();
    let mut n = Neighborhood {
        at_ms: 0,
        routers: vec![
            view("fog", 0, 80.0, None),
            view("edge2", 2, 10.0, Some(true)),
            view("dc", 1, 10.0, Some(true)),
        ],
    };
    n.routers[1].region = None;
    let (mut h, rec, publish) = host(store.clone(), n.clone(), Duration::from_secs(20));
    h.parts.settle = Duration::from_secs(60);
    h.load_policy();
    h.round().await;
    assert!(rec.take().is_empty(), "nothing is restored while edge2 is in no region");
    n.routers[1].region = Some(RouterId::new("fog").unwrap());
    publish.send_replace(Arc::new(n));
    h.round().await;
    let routes = routes_to(&rec.take());
    assert!(
        !routes.is_empty() && routes.iter().filter(|(r, _)| r != "dc").all(|(_, to)| to == "edge2"),
        "edge2 adopted once back in the region: {routes:?}"
    );
    assert_eq!(h.log().serving.get("pabx").map(String::as_str), Some("edge2"));
}

/// Issue 9's health-gate regression at the orchestrator: a start whose controller never
/// acknowledges (its probe never passes) is aborted at the ready timeout, and no route is ever
/// pointed at the instance.
#[tokio::test]
async fn a_start_never_acknowledged_moves_no_route_and_is_aborted() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(dir.path()).unwrap());
    let n = Neighborhood {
        at_ms: 0,
        routers: vec![view("fog", 0, 10.0, None), view("dc", 1, 10.0, Some(true))],
    };
    let (mut h, rec, _publish) = host(store, n, Duration::from_millis(300));
    h.replace_policy(POLICY, "test.policy").await.unwrap();
    h.round().await;
    let sent = rec.take();
    assert!(
        sent.iter()
            .any(|(r, _, i)| r == "fog" && matches!(i, Intent::Instance { present: true, .. })),
        "fog starts the PABX: {sent:?}"
    );
    assert!(routes_to(&sent).iter().all(|(_, to)| to == "dc"), "{sent:?}");
    // No answer from the controller; time passes beyond the ready timeout.
    tokio::time::sleep(Duration::from_millis(400)).await;
    h.round().await;
    let sent = rec.take();
    assert!(
        routes_to(&sent).iter().all(|(_, to)| to != "fog"),
        "no route moves to an instance that never became ready: {sent:?}"
    );
    assert!(
        sent.iter()
            .any(|(r, _, i)| r == "fog" && matches!(i, Intent::Instance { present: false, .. })),
        "the start is given up: {sent:?}"
    );
    assert!(h.log().decisions.iter().any(|d| d.kind == "abort"), "{:?}", h.log());
    assert_eq!(h.log().serving.get("pabx").map(String::as_str), Some("dc"));
}

#[tokio::test]
async fn a_refused_policy_keeps_the_one_in_force() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(dir.path()).unwrap());
    let (mut h, _rec, _publish) = host(store, Neighborhood::default(), Duration::from_secs(20));
    h.replace_policy(POLICY, "good.policy").await.unwrap();
    let e = h
        .replace_policy(
            "service nosuch { match udp dport 1 otherwise datacenter }",
            "bad.policy",
        )
        .await
        .unwrap_err();
    assert_eq!(e.class(), ErrorClass::BadInput);
    assert!(e.to_string().starts_with("bad.policy:1:"), "{e}");
    assert_eq!(h.policy.services, vec!["pabx"]);
}
