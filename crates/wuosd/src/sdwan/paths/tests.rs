//! The paths task against real STAMP reflectors on loopback addresses (no root): probes are
//! answered, figures come, the class goes to its preferred path; a reflector stopped is a
//! blackout and the class moves; a restarted task keeps the stored decision and writes the same
//! table.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use tokio::sync::watch;
use wuos_model::daemon::SdwanPathsConfig;
use wuos_sdwan::sla::{PathId, Sla};
use wuos_sdwan::steer::{Candidate, ClassPlan, Steering};
use wuos_southbound::nft::RecordingNft;

use super::*;

const MPLS: Ipv4Addr = Ipv4Addr::new(127, 0, 57, 2);
const INET: Ipv4Addr = Ipv4Addr::new(127, 0, 57, 3);

fn plan() -> ClassPlan {
    let cand = |i: u32, underlay: &str, via: Ipv4Addr| Candidate {
        path: PathId {
            overlay: "wan".into(),
            underlay: underlay.into(),
        },
        tunnel: format!("wo1-{underlay}"),
        mark: 0x5700_0001 | ((i + 1) << 16),
        table: 100_016 + i,
        via: BTreeMap::from([("e2".to_string(), via)]),
        outer: BTreeMap::new(),
    };
    ClassPlan {
        class: "voip".into(),
        mark: 0x5700_0001,
        steering: Steering {
            sla: Sla {
                max_latency_ms: Some(40.0),
                max_loss_pct: Some(50.0),
                max_jitter_ms: None,
            },
            prefer: vec![],
            balance: false,
            sticky: false,
        },
        candidates: vec![cand(0, "mpls", MPLS), cand(1, "inet", INET)],
        sites: BTreeMap::from([("e2".to_string(), vec!["10.2.0.0/24".parse().unwrap()])]),
    }
}

fn config(port: u16) -> SdwanPathsConfig {
    SdwanPathsConfig {
        probe_interval: Duration::from_millis(20),
        window: 20,
        stamp_port: port,
        hold: Duration::from_millis(300),
        hysteresis: 0.1,
        probe_each_tunnel: false,
    }
}

async fn until<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn on(report: &Report) -> Option<(Vec<String>, Option<bool>)> {
    report
        .steering
        .iter()
        .find(|s| s.class == "voip" && s.site == "e2")
        .map(|s| (s.paths.clone(), s.met))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probes_are_answered_and_a_blackout_moves_the_class_and_a_restart_moves_nothing() {
    let answered = Arc::new(AtomicU64::new(0));
    // Both reflectors on one port, each on its own loopback address.
    let (mpls_at, mpls_reflector) = spawn_reflector(SocketAddr::from((MPLS, 0)), answered.clone()).unwrap();
    let (_, _inet_reflector) = spawn_reflector(SocketAddr::from((INET, mpls_at.port())), answered.clone()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(dir.path()).unwrap());
    let nft = Arc::new(RecordingNft::default());
    let (plans_tx, plans) = watch::channel(None);
    let handle = spawn(plans, store.clone(), nft.clone(), config(mpls_at.port())).unwrap();
    let report = handle.report();
    // Nothing happens before the edge's first plans.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(report.borrow().probes_sent, 0);
    assert!(nft.scripts().is_empty());
    plans_tx.send_replace(Some(Arc::new(vec![plan()])));

    let r = until("both paths measured, voip on mpls with its SLA met", || {
        let r = report.borrow().clone();
        (r.paths.len() == 2
            && r.paths.iter().all(|p| p.figures.rtt_ms.is_some())
            && on(&r) == Some((vec!["wan/mpls".into()], Some(true))))
        .then_some(r)
    })
    .await;
    assert!(r.answers > 0 && answered.load(std::sync::atomic::Ordering::Relaxed) > 0);
    let p = r.paths.iter().find(|p| p.underlay == "mpls").unwrap();
    assert_eq!((p.target, p.tunnel.as_str(), p.site.as_str()), (MPLS, "wo1-mpls", "e2"));
    assert!(p.figures.rtt_ms.unwrap() < 40.0, "{p:?}");
    let script = nft.scripts().last().cloned().unwrap();
    assert!(
        script.contains("meta mark 0x57000001 ip daddr { 10.2.0.0/24 } meta mark set 0x57010001"),
        "{script}"
    );

    // mpls's reflector stops: down after 2 probes, voip moves to inet.
    mpls_reflector.abort();
    let r = until("voip on inet after the blackout", || {
        let r = report.borrow().clone();
        (on(&r) == Some((vec!["wan/inet".into()], Some(true)))).then_some(r)
    })
    .await;
    let d = r.decisions.last().unwrap();
    assert_eq!(
        (d.from.clone(), d.to.clone()),
        (vec!["wan/mpls".to_string()], vec!["wan/inet".to_string()])
    );
    assert!(d.reason.contains("wan/mpls fails the SLA"), "{}", d.reason);
    until("the table sends voip to inet", || {
        nft.scripts()
            .last()
            .is_some_and(|s| s.contains("meta mark set 0x57020001"))
            .then_some(())
    })
    .await;
    let last = nft.scripts().last().cloned().unwrap();
    until("mpls down", || {
        let r = report.borrow().clone();
        (!r.paths.iter().find(|p| p.underlay == "mpls").unwrap().figures.up).then_some(())
    })
    .await;

    // The task ends with the edge; a new one starts from the stored decision: with mpls still
    // dark and no figures yet, nothing moves and the same table is written.
    drop(plans_tx);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let nft2 = Arc::new(RecordingNft::default());
    let (plans_tx, plans) = watch::channel(Some(Arc::new(vec![plan()])));
    let handle = spawn(plans, store, nft2.clone(), config(mpls_at.port())).unwrap();
    let report = handle.report();
    until("the restarted task has figures for both paths", || {
        let r = report.borrow().clone();
        (r.paths.iter().all(|p| p.figures.known())).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let r = report.borrow().clone();
    assert_eq!(on(&r), Some((vec!["wan/inet".into()], Some(true))));
    assert!(r.decisions.is_empty(), "decisions after the restart: {:?}", r.decisions);
    assert_eq!(nft2.scripts(), vec![last]);
    drop(plans_tx);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tunnels_over_the_same_underlay_path_share_their_probes_unless_asked_not_to() {
    let answered = Arc::new(AtomicU64::new(0));
    let (at, _r1) = spawn_reflector(SocketAddr::from((MPLS, 0)), answered.clone()).unwrap();
    let (_, _r2) = spawn_reflector(SocketAddr::from((INET, at.port())), answered).unwrap();
    // Two overlays' tunnels on mpls to the same far edge (outer 192.0.2.2): inner addresses
    // MPLS and INET stand for the two tunnels' peers.
    let two = |outer: [Ipv4Addr; 2]| {
        let mut p = plan();
        for (i, c) in p.candidates.iter_mut().enumerate() {
            c.path.underlay = "mpls".into();
            c.path.overlay = format!("o{i}");
            c.outer = BTreeMap::from([("e2".to_string(), outer[i])]);
        }
        p
    };
    for (each, outer, targets) in [
        (false, [Ipv4Addr::new(192, 0, 2, 2); 2], 1),
        (false, [Ipv4Addr::new(192, 0, 2, 2), Ipv4Addr::new(192, 0, 2, 3)], 2),
        (true, [Ipv4Addr::new(192, 0, 2, 2); 2], 2),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(dir.path()).unwrap());
        let cfg = SdwanPathsConfig {
            probe_each_tunnel: each,
            ..config(at.port())
        };
        let (plans_tx, plans) = watch::channel(Some(Arc::new(vec![two(outer)])));
        let handle = spawn(plans, store, Arc::new(RecordingNft::default()), cfg).unwrap();
        let report = handle.report();
        let r = until("both paths measured", || {
            let r = report.borrow().clone();
            (r.paths.len() == 2 && r.paths.iter().all(|p| p.figures.rtt_ms.is_some())).then_some(r)
        })
        .await;
        let probed: std::collections::BTreeSet<Ipv4Addr> = r.paths.iter().map(|p| p.target).collect();
        assert_eq!(
            probed.len(),
            targets,
            "each tunnel {each}, outer {outer:?}: {:?}",
            r.paths
        );
        drop(plans_tx);
    }
}

/// Adverts carry the paths down first and the classes whose SLA is not met first, figures
/// rounded to 0.1, at most 64 of each with the totals.
#[test]
fn adverts_carry_the_worst_paths_and_classes_first_rounded() {
    let path = |i: usize, up: bool| PathReport {
        overlay: format!("o{i:03}"),
        underlay: "mpls".into(),
        site: "e2".into(),
        tunnel: format!("wo{i}-mpls"),
        target: MPLS,
        figures: Figures {
            up,
            rtt_ms: Some(4.04 + i as f64),
            loss_pct: 1.06,
            jitter_ms: 0.349,
            ..Figures::default()
        },
    };
    let steer = |i: usize, met: Option<bool>| SteerReport {
        class: format!("c{i:03}"),
        site: "e2".into(),
        paths: vec![format!("o{i:03}/mpls")],
        met,
    };
    let mut paths: Vec<PathReport> = (0..100).map(|i| path(i, true)).collect();
    paths[90] = path(90, false);
    let mut steering: Vec<SteerReport> = (0..100).map(|i| steer(i, Some(true))).collect();
    steering[70] = steer(70, Some(false));
    steering[80] = steer(80, None);
    let report = Report {
        paths,
        steering,
        ..Report::default()
    };
    let mut state = pb::SdwanEdgeState::default();
    advertise(&mut state, &report);
    assert_eq!((state.paths.len(), state.paths_total), (64, 100));
    assert_eq!((state.steering.len(), state.steering_total), (64, 100));
    assert_eq!(state.paths[0].overlay, "o090", "the path down comes first");
    assert!(!state.paths[0].up);
    assert_eq!(state.paths[1].overlay, "o000", "then in order");
    assert_eq!(
        (state.paths[1].rtt_ms, state.paths[1].loss_pct, state.paths[1].jitter_ms),
        (Some(4.0), 1.1, 0.3)
    );
    let first: Vec<(&str, Option<bool>)> = state.steering[..3]
        .iter()
        .map(|s| (s.class_name.as_str(), s.met))
        .collect();
    assert_eq!(first, [("c070", Some(false)), ("c080", None), ("c000", Some(true))]);
    let advert = pb::TelemetryAdvert {
        origin: "e1".into(),
        boot_id: 1,
        sequence: 1,
        hop_limit: 2,
        interval_ms: 1000,
        resources: Some(pb::Resources::default()),
        sdwan: Some(state),
        ..Default::default()
    };
    assert_eq!(wuos_proto::validate::check_advert(&advert), Ok(()), "a valid advert");
}

/// Prometheus: the latest report's paths and classes, and the counters.
#[test]
fn renders_the_sdwan_paths_of_the_latest_report_only() {
    let m = crate::metrics::Metrics::new("e1");
    let path = |underlay: &str, rtt: Option<f64>, up: bool| PathReport {
        overlay: "wan".into(),
        underlay: underlay.into(),
        site: "e2".into(),
        tunnel: format!("wo1-{underlay}"),
        target: std::net::Ipv4Addr::new(10, 77, 0, 2),
        figures: wuos_sdwan::path::Figures {
            up,
            rtt_ms: rtt,
            loss_pct: 2.5,
            ..Default::default()
        },
    };
    let report = |paths| Report {
        paths,
        steering: vec![SteerReport {
            class: "voip".into(),
            site: "e2".into(),
            paths: vec!["wan/inet".into()],
            met: Some(false),
        }],
        probes_sent: 40,
        answers: 31,
        decisions_total: 3,
        ..Default::default()
    };
    let (tx, rx) = tokio::sync::watch::channel(Arc::new(report(vec![
        path("mpls", Some(4.5), true),
        path("inet", None, false),
    ])));
    let reflected = Arc::new(AtomicU64::new(17));
    m.sdwan_refresh(metrics_refresh(rx, reflected.clone()));
    let text = m.render();
    for line in [
        "wuosd_sdwan_path_rtt_ms{router=\"e1\",overlay=\"wan\",underlay=\"mpls\",site=\"e2\"} 4.5",
        "wuosd_sdwan_path_loss_percent{router=\"e1\",overlay=\"wan\",underlay=\"inet\",site=\"e2\"} 2.5",
        "wuosd_sdwan_path_up{router=\"e1\",overlay=\"wan\",underlay=\"inet\",site=\"e2\"} 0",
        "wuosd_sdwan_path_up{router=\"e1\",overlay=\"wan\",underlay=\"mpls\",site=\"e2\"} 1",
        "wuosd_sdwan_steering_sla_met{router=\"e1\",class=\"voip\",site=\"e2\"} 0",
        "wuosd_sdwan_stamp_probes_sent_total{router=\"e1\"} 40",
        "wuosd_sdwan_stamp_answers_total{router=\"e1\"} 31",
        "wuosd_sdwan_stamp_reflected_total{router=\"e1\"} 17",
        "wuosd_sdwan_steering_decisions_total{router=\"e1\"} 3",
    ] {
        assert!(text.lines().any(|l| l == line), "no {line:?} in\n{text}");
    }
    assert!(
        !text.contains("underlay=\"inet\",site=\"e2\"} NaN")
            && !text.contains("rtt_ms{router=\"e1\",overlay=\"wan\",underlay=\"inet\""),
        "a path without an answer has no rtt: {text}"
    );
    // A path no longer monitored leaves the families.
    tx.send_replace(Arc::new(report(vec![path("mpls", Some(5.0), true)])));
    let text = m.render();
    assert!(!text.contains("underlay=\"inet\""), "{text}");
    assert!(text.contains("underlay=\"mpls\",site=\"e2\"} 5.0"), "{text}");
}

#[test]
fn an_answer_that_changes_no_standing_re_decides_only_the_classes_whose_sla_is_not_met() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(dir.path()).unwrap());
    let (mut p, _report) = Paths::new(store, RecordingNft::default(), config(0));
    // voip (40 ms) is met on both paths; tight (1 ms) on neither: it takes the least bad.
    let mut tight = plan();
    tight.class = "tight".into();
    tight.steering.sla.max_latency_ms = Some(1.0);
    p.set_plans(Arc::new(vec![plan(), tight]));
    let mut seq = 0;
    let mut feed = |p: &mut Paths<RecordingNft>, at: Ipv4Addr, ms: u64, n: usize| {
        for _ in 0..n {
            let now = p.start.elapsed();
            let stats = &mut p.targets.get_mut(&at).unwrap().stats;
            stats.sent(seq, now);
            assert!(stats.answered(seq, Duration::from_millis(ms), now));
            seq += 1;
        }
    };
    feed(&mut p, MPLS, 20, 10);
    feed(&mut p, INET, 30, 10);
    p.evaluate_all();
    let chosen = |p: &Paths<RecordingNft>, class: &str| {
        let s = &p.states[&(class.to_string(), "e2".to_string())];
        (names(&s.chosen), s.met)
    };
    assert_eq!(chosen(&p, "voip"), (vec!["wan/mpls".to_string()], Some(true)));
    assert_eq!(chosen(&p, "tight"), (vec!["wan/mpls".to_string()], Some(false)));

    // inet becomes much faster: for voip it stands as it did (met, within the margin), so an
    // answer re-decides tight alone — and tight takes inet, now the least bad.
    feed(&mut p, INET, 2, 15);
    let standings = p.targets[&INET].standings.clone();
    assert_eq!(p.standings(INET), standings, "no standing changed");
    assert!(p.step(&[INET], BTreeSet::new()), "tight moved");
    assert_eq!(chosen(&p, "tight"), (vec!["wan/inet".to_string()], Some(false)));
    assert_eq!(chosen(&p, "voip"), (vec!["wan/mpls".to_string()], Some(true)));
}
