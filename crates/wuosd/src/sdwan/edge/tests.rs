//! The edge component against a kernel held in memory: pieces applied, persisted, reconciled
//! after a restart without creating anything twice, failures answered and retried.

use std::sync::{Arc, Mutex};

use wuos_model::generate::{Generator, generate};
use wuos_model::plan::address_plan;
use wuos_sdwan::slice::split;
use wuos_sdwan::{Action, Desired, EdgeConfig, Inventory, Op};
use wuos_southbound::netlink::NetlinkError;
use wuos_southbound::overlays::{OverlayError, Overlays};

use super::*;

/// A kernel in memory: what it holds, how many devices were ever created, and whether the next
/// tunnel creation fails.
#[derive(Clone, Default)]
pub struct FakeKernel {
    pub held: Arc<Mutex<EdgeConfig>>,
    pub created: Arc<Mutex<usize>>,
    pub fail_creates: Arc<Mutex<bool>>,
}

fn refused(op: &Op, why: &str) -> OverlayError {
    OverlayError::Netlink {
        op: op.to_string(),
        source: NetlinkError::Refused(why.into()),
    }
}

impl Overlays for FakeKernel {
    async fn apply(&self, op: &Op) -> Result<(), OverlayError> {
        let mut k = self.held.lock().unwrap();
        match op {
            Op::CreateTunnel(t) => {
                if *self.fail_creates.lock().unwrap() {
                    return Err(refused(op, "no such device (injected)"));
                }
                if k.tunnels.contains_key(&t.name) {
                    return Err(refused(op, "File exists"));
                }
                *self.created.lock().unwrap() += 1;
                let mut t = (**t).clone();
                t.peers.clear();
                k.tunnels.insert(t.name.clone(), t);
            }
            Op::DeleteTunnel { name } => {
                k.tunnels.remove(name);
                k.routes.retain(|r| r.dev != *name);
            }
            Op::AddPeer { tunnel, peer } => {
                let t = k.tunnels.get_mut(tunnel).ok_or_else(|| refused(op, "no such device"))?;
                if !t.peers.insert(peer.clone()) {
                    return Err(refused(op, "File exists"));
                }
            }
            Op::RemovePeer { tunnel, peer } => {
                if let Some(t) = k.tunnels.get_mut(tunnel) {
                    t.peers.remove(peer);
                }
            }
            Op::AddRoute(r) => {
                if !k.routes.insert(r.clone()) {
                    return Err(refused(op, "File exists"));
                }
            }
            Op::DeleteRoute(r) => {
                k.routes.remove(r);
            }
            Op::AddRule(r) => {
                if !k.rules.insert(r.clone()) {
                    return Err(refused(op, "File exists"));
                }
            }
            Op::DeleteRule(r) => {
                k.rules.remove(r);
            }
            Op::ReplaceNft(_) | Op::DeleteNft => {}
        }
        Ok(())
    }

    async fn read(&self) -> Result<EdgeConfig, NetlinkError> {
        // As a kernel read back: no overlay or site names, no marks.
        let mut c = self.held.lock().unwrap().clone();
        for t in c.tunnels.values_mut() {
            t.overlay.clear();
            t.peers = std::mem::take(&mut t.peers)
                .into_iter()
                .map(|mut p| {
                    p.site.clear();
                    p
                })
                .collect();
        }
        c.marks.clear();
        Ok(c)
    }

    async fn delete_tunnels(&self, names: &[String]) -> Result<(), OverlayError> {
        let mut k = self.held.lock().unwrap();
        for n in names {
            k.tunnels.remove(n);
            k.routes.retain(|r| r.dev != *n);
        }
        Ok(())
    }
}

fn inventory() -> Inventory {
    let t = generate(&"sdwan:3:2".parse::<Generator>().unwrap(), 1);
    Inventory::from_topology(&t, &address_plan(&t).unwrap()).unwrap()
}

fn desired(inv: &Inventory, actions: &str) -> Desired {
    let mut d = Desired::default();
    for a in serde_json::from_str::<Vec<Action>>(actions).unwrap() {
        d.apply(a, inv).unwrap();
    }
    d
}

const VOICE_BULK: &str = r#"[
    {"action":"create_overlay","name":"voice","sites":{"e1":{},"e2":{},"e3":{}},"underlays":["mpls"]},
    {"action":"create_overlay","name":"bulk","sites":{"e1":{},"e2":{}}},
    {"action":"create_class","name":"sip","overlay":"voice","rules":[{"proto":"udp","dst_ports":5060}]}
]"#;

/// The pieces of `desired` for e1, numbered from `first_id`.
fn pieces(inv: &Inventory, d: &Desired, first_id: u64, generation: u64) -> Vec<Piece> {
    split(&EdgeConfig::realise(d, inv, "e1"), d)
        .into_iter()
        .enumerate()
        .map(|(i, (key, c))| Piece {
            intent_id: first_id + i as u64,
            key,
            json: Some(serde_json::to_vec(&c).unwrap()),
            generation,
        })
        .collect()
}

async fn send(edge: &EdgeHandle, batch: Vec<Piece>) -> Vec<Answer> {
    let (tx, mut rx) = mpsc::channel(256);
    let n = batch.len();
    edge.submit(batch, tx).await;
    let mut out = Vec::new();
    while out.len() < n {
        out.push(rx.recv().await.unwrap());
    }
    out
}

/// What e1's kernel should hold for `d`: its pieces' union and the shortcuts.
fn want(inv: &Inventory, d: &Desired) -> EdgeConfig {
    let mut w = EdgeConfig::realise(d, inv, "e1");
    w.unreachable.clear();
    w.rules.extend(wuos_sdwan::edge::shortcuts());
    w
}

#[tokio::test]
async fn pieces_are_applied_persisted_and_reconciled_after_a_restart_without_duplicates() {
    let dir = tempfile::tempdir().unwrap();
    let inv = inventory();
    let d = desired(&inv, VOICE_BULK);
    let kernel = FakeKernel::default();
    {
        let store = Arc::new(Store::open(dir.path()).unwrap());
        let edge = spawn(kernel.clone(), store, RETRY_EVERY);
        let answers = send(&edge, pieces(&inv, &d, 1, 3)).await;
        assert_eq!(answers.len(), 3, "overlay/bulk, overlay/voice, class/sip");
        assert!(answers.iter().all(|a| a.outcome.is_ok()), "{answers:?}");
        let st = edge.state().await;
        assert_eq!((st.generation, st.pieces), (3, 3));
        assert_eq!(st.tunnels, ["wo1-mpls", "wo2-inet", "wo2-mpls"]);
        assert!(st.failed.is_empty());
    }
    let held = kernel.held.lock().unwrap().clone();
    let mut w = want(&inv, &d);
    w.marks.clear();
    assert_eq!(held, w, "the kernel holds the pieces' union");
    assert_eq!(*kernel.created.lock().unwrap(), 3);

    // Restarted (a new task on the same store and kernel): nothing created again, and a rule
    // lost meanwhile comes back.
    let lost = held.rules.iter().next().unwrap().clone();
    kernel.held.lock().unwrap().rules.remove(&lost);
    // The first task ends once its handle is gone, and lets go of the store.
    let store = loop {
        match Store::open(dir.path()) {
            Ok(s) => break Arc::new(s),
            Err(_) => tokio::task::yield_now().await,
        }
    };
    let edge = spawn(kernel.clone(), store, RETRY_EVERY);
    let st = edge.state().await;
    assert_eq!(st.pieces, 3, "the pieces came back from the store");
    assert!(st.failed.is_empty(), "{:?}", st.failed);
    assert_eq!(*kernel.created.lock().unwrap(), 3, "no device created twice");
    assert!(
        kernel.held.lock().unwrap().rules.contains(&lost),
        "the lost rule is back"
    );

    // The same pieces again (a controller that restarted): nothing changes.
    let answers = send(&edge, pieces(&inv, &d, 10, 3)).await;
    assert!(answers.iter().all(|a| a.outcome.is_ok()));
    assert_eq!(*kernel.created.lock().unwrap(), 3);

    // A piece removed: its tunnels and rules go.
    let gone = vec![Piece {
        intent_id: 20,
        key: "overlay/bulk".into(),
        json: None,
        generation: 4,
    }];
    assert!(send(&edge, gone).await[0].outcome.is_ok());
    let k = kernel.held.lock().unwrap().clone();
    assert_eq!(k.tunnels.keys().collect::<Vec<_>>(), ["wo1-mpls"]);
    assert!(k.routes.iter().all(|r| r.dev == "wo1-mpls"));
    assert_eq!(edge.state().await.generation, 4);
    let shortcuts = wuos_sdwan::edge::shortcuts();
    assert!(
        shortcuts.iter().all(|r| k.rules.contains(r)),
        "the shortcuts stay while a piece does"
    );

    // The last pieces removed: nothing of wuos is left, the shortcuts included.
    let last: Vec<Piece> = ["overlay/voice", "class/sip"]
        .into_iter()
        .enumerate()
        .map(|(i, key)| Piece {
            intent_id: 30 + i as u64,
            key: key.into(),
            json: None,
            generation: 5,
        })
        .collect();
    assert!(send(&edge, last).await.iter().all(|a| a.outcome.is_ok()));
    let k = kernel.held.lock().unwrap().clone();
    assert_eq!(k, EdgeConfig::default(), "the kernel holds nothing of wuos");
}

#[tokio::test]
async fn a_tunnel_deleted_behind_its_back_comes_back_and_the_advert_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let inv = inventory();
    let d = desired(&inv, VOICE_BULK);
    let kernel = FakeKernel::default();
    let edge = spawn(kernel.clone(), Arc::new(Store::open(dir.path()).unwrap()), RETRY_EVERY);
    let mut advert = edge.advert();
    assert_eq!(*advert.borrow(), None, "no pieces, nothing to advertise");
    assert!(
        send(&edge, pieces(&inv, &d, 1, 7))
            .await
            .iter()
            .all(|a| a.outcome.is_ok())
    );
    let a = advert.borrow_and_update().clone().unwrap();
    assert_eq!((a.generation, a.tunnels, a.tunnels_up, a.failed_ops), (7, 3, 3, 0));
    assert!(a.items.iter().all(|t| t.up));
    // Deleted by hand: within a check interval the edge puts it back.
    kernel.held.lock().unwrap().tunnels.remove("wo2-inet");
    let deadline = tokio::time::Instant::now() + RETRY_EVERY * 3;
    while !kernel.held.lock().unwrap().tunnels.contains_key("wo2-inet") {
        assert!(tokio::time::Instant::now() < deadline, "the tunnel did not come back");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(
        *kernel.created.lock().unwrap(),
        4,
        "only the deleted one was created again"
    );
    let mut w = want(&inv, &d);
    w.marks.clear();
    assert_eq!(*kernel.held.lock().unwrap(), w);
}

#[tokio::test]
async fn a_failed_op_is_answered_and_retried_from_a_kernel_read() {
    let dir = tempfile::tempdir().unwrap();
    let inv = inventory();
    let d = desired(&inv, VOICE_BULK);
    let kernel = FakeKernel::default();
    *kernel.fail_creates.lock().unwrap() = true;
    let edge = spawn(kernel.clone(), Arc::new(Store::open(dir.path()).unwrap()), RETRY_EVERY);
    let answers = send(&edge, pieces(&inv, &d, 1, 1)).await;
    for a in &answers {
        let e = a.outcome.as_ref().unwrap_err();
        assert!(
            e.contains("no such device (injected)") && e.contains("ip link add"),
            "{e}"
        );
    }
    assert!(!edge.state().await.failed.is_empty());
    let a = edge.advert().borrow().clone().unwrap();
    assert!(a.failed_ops > 0 && a.tunnels_up < a.tunnels, "{a:?}");
    // The fault clears; the retry (every RETRY_EVERY) puts the kernel in line by itself.
    *kernel.fail_creates.lock().unwrap() = false;
    let deadline = tokio::time::Instant::now() + RETRY_EVERY * 3;
    while !edge.state().await.failed.is_empty() {
        assert!(tokio::time::Instant::now() < deadline, "no retry");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(*kernel.created.lock().unwrap(), 3);
    let mut w = want(&inv, &d);
    w.marks.clear();
    assert_eq!(*kernel.held.lock().unwrap(), w);
}

#[test]
fn a_malformed_piece_is_refused_naming_why() {
    let ok = pb::SdwanPieceIntent {
        key: "overlay/voice".into(),
        present: true,
        config_json: br#"{"rules":[{"priority":20001,"selector":{"iif":"eth2"},"table":10001}]}"#.to_vec(),
        generation: 2,
    };
    let p = Piece::from_pb(9, &ok).unwrap();
    assert_eq!(
        (p.intent_id, p.generation, p.json.as_deref()),
        (9, 2, Some(ok.config_json.as_slice()))
    );
    let removal = pb::SdwanPieceIntent {
        present: false,
        config_json: Vec::new(),
        ..ok.clone()
    };
    assert_eq!(Piece::from_pb(1, &removal).unwrap().json, None);
    let bad = pb::SdwanPieceIntent {
        key: "table/x".into(),
        ..ok.clone()
    };
    let e = Piece::from_pb(1, &bad).unwrap_err();
    assert!(e.contains("overlay/NAME") && e.contains("\"table/x\""), "{e}");
}

#[tokio::test]
async fn a_piece_that_does_not_parse_is_answered_alone() {
    let dir = tempfile::tempdir().unwrap();
    let inv = inventory();
    let d = desired(&inv, VOICE_BULK);
    let kernel = FakeKernel::default();
    let edge = spawn(kernel.clone(), Arc::new(Store::open(dir.path()).unwrap()), RETRY_EVERY);
    let mut batch = pieces(&inv, &d, 1, 1);
    batch.push(Piece {
        intent_id: 99,
        key: "overlay/broken".into(),
        json: Some(b"{\"tunnels\": 3}".to_vec()),
        generation: 1,
    });
    let answers = send(&edge, batch).await;
    let broken = answers.iter().find(|a| a.intent_id == 99).unwrap();
    let e = broken.outcome.as_ref().unwrap_err();
    assert!(e.contains("overlay/broken") && e.contains("invalid type"), "{e}");
    assert!(
        answers.iter().filter(|a| a.intent_id != 99).all(|a| a.outcome.is_ok()),
        "{answers:?}"
    );
    assert_eq!(edge.state().await.pieces, 3, "the others are applied");
}
