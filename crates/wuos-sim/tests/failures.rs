//! Links that fail and routers that crash, stop and start: what the views lose, and when.

mod common;

use common::{expected_views, routers, run, sim_of, topology, views};
use wuos_sim::SimConfig;

/// Line r1 - r2 - r3 - r4 - r5 - r6, radius 2, everything up by 10 s.
fn line() -> (wuos_model::Topology, SimConfig) {
    let cfg = SimConfig::default();
    (topology("line:6", cfg.seed), cfg)
}

#[test]
fn a_link_down_removes_what_it_should_after_the_dead_interval_and_the_ageing() {
    let (t, cfg) = line();
    let events = r#"
{"at": "10s", "do": "link_down", "a": "r3", "b": "r4"}
{"at": "25s", "do": "link_up", "a": "r4", "b": "r3"}
"#;
    let mut s = sim_of(&t, cfg, events, None);
    run(&mut s, 10_000);
    assert_eq!(views(&s), expected_views(&t, 2, &[], &[]), "all up");
    // Within the dead interval nothing is noticed (r4 was last heard in the second before the
    // failure: it sends at least a frame a second).
    run(&mut s, 11_900);
    let r = routers(&s);
    assert_eq!(r["r3"].neighbors["r4"], "up", "not yet dead");
    // After it (3 s, ticks every 250 ms): the ends close the link and withdraw each other.
    run(&mut s, 13_300);
    let r = routers(&s);
    assert_eq!(
        (r["r3"].neighbors["r4"].as_str(), r["r4"].neighbors["r3"].as_str()),
        ("down", "down")
    );
    for (router, gone) in [("r3", "r4"), ("r2", "r4"), ("r4", "r3"), ("r5", "r3")] {
        assert!(
            !r[router].view.contains_key(gone),
            "{router} still has {gone}: withdrawn at once"
        );
    }
    // What came through the dead link is not withdrawn (it was learned from a live neighbor
    // of its origin): it ages by its interval alone (an orphan: its quiet intervals no longer
    // count), so by now it is stale — or already removed, when r5's last advert (it sends one
    // every 10 s while its figures stay the same) is more than 6 s old.
    assert!(
        r["r3"].view.get("r5").is_none_or(|e| e.stale),
        "r3's r5 is still fresh 3 s after the link died"
    );
    run(&mut s, 10_000 + 3_000 + 6_000 + 1_000);
    assert_eq!(
        views(&s),
        expected_views(&t, 2, &[("r3", "r4")], &[]),
        "the views without the link, after the ageing"
    );
    // Back up: the dialler (r3 sorts first) opens a new stream at its next tick.
    run(&mut s, 30_000);
    assert_eq!(views(&s), expected_views(&t, 2, &[], &[]), "all back");
    let r = routers(&s);
    assert_eq!(r["r3"].counters["links_opened"], 3, "to r2, to r4, and to r4 again");
    assert!(
        s.totals().retransmissions > 0,
        "segments in flight when the link went down were retransmitted"
    );
}

#[test]
fn a_crashed_router_disappears_and_comes_back_with_a_new_boot() {
    let (t, cfg) = line();
    let events = r#"
{"at": "10s", "do": "crash", "router": "r3"}
{"at": "30s", "do": "start", "router": "r3"}
"#;
    let mut s = sim_of(&t, cfg, events, None);
    run(&mut s, 12_000);
    let r = routers(&s);
    assert!(!r["r3"].running);
    assert!(
        r["r2"].view.contains_key("r3"),
        "a crash is silent: not noticed before the dead interval"
    );
    run(&mut s, 10_000 + 3_000 + 6_000 + 1_000);
    assert_eq!(views(&s), expected_views(&t, 2, &[], &["r3"]), "r3 gone everywhere");
    run(&mut s, 40_000);
    assert_eq!(views(&s), expected_views(&t, 2, &[], &[]), "r3 back");
    assert_eq!(routers(&s)["r3"].boots, 2);
}

#[test]
fn a_stopped_router_withdraws_itself_at_once() {
    let (t, cfg) = line();
    let events = r#"
{"at": "10s", "do": "stop", "router": "r3"}
{"at": "11s", "do": "stop", "router": "r3"}
"#;
    let mut s = sim_of(&t, cfg, events, None);
    run(&mut s, 10_100);
    let r = routers(&s);
    for router in ["r1", "r2", "r4", "r5"] {
        assert!(
            !r[router].view.contains_key("r3"),
            "{router} still has r3 100 ms after its shutdown"
        );
    }
    assert_eq!(
        r["r2"].neighbors["r3"], "down",
        "its stream ended behind the withdrawal"
    );
    assert_eq!(r["r2"].counters["links_closed"], 1);
    run(&mut s, 20_000);
    assert_eq!(views(&s), expected_views(&t, 2, &[], &["r3"]));
    let played = s.report(wuos_sim::Detail::Summary).result.events;
    assert_eq!(played[1].outcome, "ignored: the router is down already");
}

#[test]
fn loss_delays_frames_but_loses_none() {
    let cfg = SimConfig {
        default_loss_pct: 5.0,
        ..SimConfig::default()
    };
    let t = topology("ring:8", cfg.seed);
    let mut s = sim_of(&t, cfg, "", None);
    run(&mut s, 20_000);
    assert_eq!(views(&s), expected_views(&t, 2, &[], &[]), "converged despite 5% loss");
    let tot = s.totals();
    assert_eq!(tot.frames_lost, 0, "TCP loses nothing");
    assert!(tot.retransmissions > 0, "it retransmits: {tot:?}");
    assert!(tot.frames_delivered + 64 >= tot.frames_sent, "{tot:?}");
}

#[test]
fn jitter_neither_reorders_a_stream_nor_flaps_a_link() {
    let (t, cfg) = line();
    let events: String = (1..6)
        .map(|i| {
            format!(
                "{{\"at\": 0, \"do\": \"link_set\", \"a\": \"r{i}\", \"b\": \"r{}\", \"delay\": \"3ms\", \"jitter\": \"3ms\"}}\n",
                i + 1
            )
        })
        .collect();
    let mut s = sim_of(&t, cfg, &events, None);
    run(&mut s, 20_000);
    assert_eq!(views(&s), expected_views(&t, 2, &[], &[]));
    for (id, r) in routers(&s) {
        let degree = r.neighbors.len() as u64;
        assert_eq!(r.counters["links_opened"], degree, "{id}: every link opened once");
        assert_eq!(r.counters.get("neighbor_down"), None, "{id}: no neighbor went down");
    }
}
