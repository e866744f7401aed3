//! The controller with its own router as a site (e1, in-process) and two sites it cannot reach
//! (e2, e3: no control address): actions realised and sent, refusals change nothing, the state
//! survives a restart, unreachable edges are reported and retried.

use super::*;
use crate::sdwan::edge::tests::FakeKernel;
use wuos_model::generate::{Generator, generate};
use wuos_model::plan::address_plan;

pub struct Setup {
    pub dir: tempfile::TempDir,
    pub kernel: FakeKernel,
}

impl Setup {
    pub fn new() -> Setup {
        Setup {
            dir: tempfile::tempdir().unwrap(),
            kernel: FakeKernel::default(),
        }
    }

    /// A controller on router e1 of `sdwan:3:2`, with its store in `dir`.
    pub async fn start(&self) -> SdwanHandle {
        let t = generate(&"sdwan:3:2".parse::<Generator>().unwrap(), 1);
        let inventory = Inventory::from_topology(&t, &address_plan(&t).unwrap()).unwrap();
        let store = loop {
            match Store::open(self.dir.path()) {
                Ok(s) => break Arc::new(s),
                Err(_) => tokio::task::yield_now().await,
            }
        };
        let (_tx, neighborhood) = watch::channel(Arc::new(Neighborhood::default()));
        spawn(Parts {
            me: RouterId::new("e1").unwrap(),
            inventory,
            store: store.clone(),
            connector: AnyConnector::Plain(crate::protocol::Plain),
            metrics: Metrics::new("e1"),
            session_id: 1,
            local_edge: crate::sdwan::edge::spawn(self.kernel.clone(), store, crate::sdwan::edge::RETRY_EVERY),
            neighborhood,
        })
    }
}

pub fn actions(json: &str) -> Vec<Action> {
    serde_json::from_str(json).unwrap()
}

/// Waits until e1 holds generation `g` without a pending piece.
pub async fn e1_synced(h: &SdwanHandle, g: u64) -> Status {
    loop {
        let s = h.status().await.unwrap();
        if s.edges["e1"].in_sync && s.edges["e1"].synced_generation == g {
            return s;
        }
        tokio::task::yield_now().await;
    }
}

const CREATE: &str = r#"[
    {"action":"create_overlay","name":"voice","sites":{"e1":{},"e2":{},"e3":{}},"underlays":["mpls"]},
    {"action":"create_class","name":"sip","overlay":"voice","rules":[{"proto":"udp","dst_ports":5060}]}
]"#;

#[tokio::test]
async fn actions_reach_the_edge_refusals_change_nothing_and_a_restart_loses_nothing() {
    let s = Setup::new();
    {
        let h = s.start().await;
        assert_eq!(h.act(actions(CREATE)).await.unwrap(), Ok(1));
        let st = e1_synced(&h, 1).await;
        let e1 = &st.edges["e1"];
        assert_eq!(
            e1.tunnels
                .iter()
                .map(|t| (t.name.as_str(), t.peers.len()))
                .collect::<Vec<_>>(),
            [("wo1-mpls", 2)]
        );
        assert_eq!(e1.classes["sip"], "voice");
        assert!(s.kernel.held.lock().unwrap().tunnels.contains_key("wo1-mpls"));
        // e2 and e3 have no control address: reported, not in sync.
        for e in ["e2", "e3"] {
            let err = st.edges[e].error.as_deref().unwrap_or_default();
            assert!(err.contains("is not in the view"), "{e}: {err}");
            assert!(!st.edges[e].in_sync);
        }

        // All or none: the second action is refused, so the first does not happen either.
        let r = h
            .act(actions(
                r#"[{"action":"create_overlay","name":"bulk","sites":{"e1":{},"e2":{}}},
                    {"action":"create_class","name":"web","overlay":"nope","rules":[]}]"#,
            ))
            .await
            .unwrap()
            .unwrap_err();
        assert!(
            matches!(&r, Refused::Action { index: 1, error } if error.kind() == ErrorKind::NotFound),
            "{r:?}"
        );
        assert!(r.to_string().contains("\"nope\""), "{r}");
        let (g, d) = h.desired().await.unwrap();
        assert_eq!((g, d.overlays.len()), (1, 1), "nothing changed");
    }
    let created = *s.kernel.created.lock().unwrap();
    assert_eq!(created, 1);

    // Restarted: the desired state is back, e1 gets its pieces again and creates nothing twice.
    let h = s.start().await;
    let (g, d) = h.desired().await.unwrap();
    assert_eq!((g, d.overlays.len(), d.classes.len()), (1, 1, 1));
    e1_synced(&h, 1).await;
    assert_eq!(*s.kernel.created.lock().unwrap(), created);

    // Deleting everything empties e1.
    let g = h
        .act(actions(
            r#"[{"action":"delete_class","name":"sip"},{"action":"delete_overlay","name":"voice"}]"#,
        ))
        .await
        .unwrap()
        .unwrap();
    e1_synced(&h, g).await;
    assert_eq!(*s.kernel.held.lock().unwrap(), EdgeConfig::default());
}

use wuos_sdwan::ErrorKind;
