//! Orchestrators on the simulated network: a policy places a service, its rule reaches the
//! routers of the orchestrator's region, a load change moves it; two orchestrators whose
//! neighborhoods overlap overwrite each other's rules without regions, and share the network
//! cleanly with them.

mod common;

use common::{routers, rules_of, run, sim};
use wuos_sim::report::Detail;
use wuos_sim::{Regions, SimConfig};

/// tree:2x3: r0 (dc) - r0-1, r0-2 (fog) - r0-1-1, r0-1-2, r0-2-1, r0-2-2 (edge).
const TREE: &str = "tree:2x3";

const WEB: &str = "service web {
  match tcp dport 80 to 10.255.0.20
  place local when mem.used_pct < 30
  otherwise datacenter
  hold 1s
}";

fn one_orchestrator() -> SimConfig {
    let mut cfg = SimConfig::default();
    cfg.orchestrators.routers = Some(vec!["r0-1".into()]);
    cfg
}

#[test]
fn a_policy_places_a_service_and_its_rule_reaches_the_routers() {
    let events = r#"{"at": "20s", "do": "set_load", "router": "r0-1", "mem_pct": 50}"#;
    let mut s = sim(TREE, one_orchestrator(), events, Some(WEB));
    run(&mut s, 15_000);
    let report = s.report(Detail::Routers);
    let o = &report.result.orchestrators[0];
    assert_eq!((o.router.as_str(), o.datacenter.as_str()), ("r0-1", "r0"));
    let d = &o.decisions[0];
    assert_eq!(
        (d.service.as_str(), d.kind.as_str(), d.from.as_str(), d.to.as_str()),
        ("web", "move", "r0", "r0-1")
    );
    assert!(
        d.switched_ms.is_some_and(|t| t >= d.at_ms + 1000),
        "routes switched once the instance was ready: {d:?}"
    );
    assert_eq!(o.placements["web"], "r0-1");
    let r = routers(&s);
    assert_eq!(r["r0-1"].services["web"], "running");
    // Its region (every router of its view but the dc, which is in none) is told; the dc is
    // told to serve the VIP itself; the routers 3 hops away are not told.
    for router in ["r0-1", "r0-2", "r0-1-1", "r0-1-2"] {
        assert_eq!(r[router].region, "r0-1", "{router}");
        assert_eq!(
            rules_of(&r[router], "web"),
            [("r0-1".into(), "r0-1".into())],
            "{router}"
        );
    }
    assert_eq!(r["r0"].region, "", "the dc is in no region");
    assert_eq!(rules_of(&r["r0"], "web"), [("r0-1".into(), "r0".into())]);
    assert!(r["r0"].rules.iter().all(|x| x.vip == "10.255.0.20"));
    for router in ["r0-2-1", "r0-2-2"] {
        assert!(r[router].rules.is_empty(), "{router} is 3 hops away");
        assert_eq!(r[router].region, "", "{router} sees no orchestrator");
    }
    // The instance is advertised: its router's neighbors see it in their view.
    let n = s.instance("r0").unwrap().neighborhood(s.now_ms(), 0);
    let fog = n.get("r0-1").unwrap();
    assert!(
        fog.instances.iter().any(|i| i.service == "web" && i.ready),
        "{:?}",
        fog.instances
    );
    assert_eq!(
        fog.placements[0].serving.as_ref().map(|r| r.as_str()),
        Some("r0-1"),
        "placements advertised"
    );
    // Memory over the threshold: back to the data centre, the instance stopped after the drain.
    run(&mut s, 30_000);
    let report = s.report(Detail::Routers);
    let o = &report.result.orchestrators[0];
    let last = o.decisions.last().unwrap();
    assert_eq!(
        (last.kind.as_str(), last.from.as_str(), last.to.as_str()),
        ("move", "r0-1", "r0")
    );
    assert_eq!(o.placements["web"], "r0");
    let r = routers(&s);
    assert!(r["r0-1"].services.is_empty(), "stopped after the drain");
    assert_eq!(rules_of(&r["r0-1-1"], "web"), [("r0-1".into(), "r0".into())]);
    assert_eq!(report.result.totals.rule_conflicts, 0, "one orchestrator");
    assert_eq!(report.result.totals.intents_refused.total(), 0);
    assert_eq!(
        report.result.conflict_check.findings, 0,
        "{:?}",
        report.result.conflict_check
    );
}

#[test]
fn a_crashed_orchestrator_restores_then_places_again_when_it_comes_back() {
    let events = r#"
{"at": "15s", "do": "crash", "router": "r0-1"}
{"at": "17s", "do": "start", "router": "r0-1"}
"#;
    let mut s = sim(TREE, one_orchestrator(), events, Some(WEB));
    run(&mut s, 30_000);
    let report = s.report(Detail::Routers);
    let o = &report.result.orchestrators[0];
    let kinds: Vec<&str> = o.decisions.iter().map(|d| d.kind.as_str()).collect();
    // A crash kills the instance; the controller starts it again (its intent is persisted), but
    // the orchestrator's first round after the restart comes before it is ready: the restore
    // finds no healthy instance, goes back to the data centre, and the policy moves the
    // service again once the hold has passed.
    assert_eq!(kinds, ["move", "restore", "move"]);
    assert!(
        o.decisions[1].reason.contains("r0-1 advertises no healthy instance"),
        "{}",
        o.decisions[1].reason
    );
    assert!(o.decisions[1].at_ms >= 17_000);
    assert_eq!(o.placements["web"], "r0-1");
    let r = routers(&s);
    assert_eq!(r["r0-1"].boots, 2);
    assert_eq!(
        r["r0-1"].services["web"], "running",
        "the controller started its intended instance again"
    );
    assert_eq!(rules_of(&r["r0-1-1"], "web"), [("r0-1".into(), "r0-1".into())]);
}

#[test]
fn overlapping_orchestrators_overwrite_each_others_rules_without_regions() {
    // Both fog routers orchestrate (the default) and place web locally; r0 and each other are
    // in both neighborhoods.
    let mut cfg = SimConfig::default();
    cfg.orchestrators.regions = Regions::None;
    let mut s = sim(TREE, cfg, "", Some(WEB));
    run(&mut s, 15_000);
    let report = s.report(Detail::Routers);
    assert_eq!(report.result.orchestrators.len(), 2);
    assert_eq!(
        report.result.orchestrator_coverage.get(&2),
        Some(&3),
        "r0, r0-1, r0-2 are in both views"
    );
    let r = routers(&s);
    assert_eq!(r["r0"].rules.len(), 1, "the newest rule wins");
    assert_eq!(r["r0"].rules[0].writers, ["r0-1", "r0-2"]);
    assert!(r["r0"].rule_conflicts >= 1);
    assert!(report.result.totals.rule_conflicts >= 3, "{:?}", report.result.totals);
    assert_eq!(r["r0-1-1"].rules[0].writers, ["r0-1"], "only in r0-1's neighborhood");
    assert_eq!(r["r0"].in_views_of, ["r0-1", "r0-2"]);
    assert_eq!(r["r0-2-2"].in_views_of, ["r0-2"]);
    assert!(r.values().all(|x| x.region.is_empty()), "no regions advertised");
    assert_eq!(
        report.result.totals.intents_refused.total(),
        0,
        "nothing refused without regions"
    );
    // Every router is taken for one of no region: each rule leading elsewhere is a finding.
    let c = &report.result.conflict_check;
    assert!(c.not_shared > 0 && c.findings == c.not_shared, "{c:?}");
}

#[test]
fn with_regions_two_orchestrators_share_the_tree_without_conflict() {
    let mut s = sim(TREE, SimConfig::default(), "", Some(WEB));
    run(&mut s, 15_000);
    let report = s.report(Detail::Routers);
    let r = routers(&s);
    // Each fog's region: itself and its two edges; the dc in none (2 hops from each fog's edges,
    // and 1 from each fog, but a dc is every region's fallback).
    for (router, region) in [
        ("r0-1", "r0-1"),
        ("r0-1-1", "r0-1"),
        ("r0-1-2", "r0-1"),
        ("r0-2", "r0-2"),
        ("r0-2-1", "r0-2"),
        ("r0-2-2", "r0-2"),
        ("r0", ""),
    ] {
        assert_eq!(r[router].region, region, "{router}");
    }
    for o in &report.result.orchestrators {
        assert_eq!(o.placements["web"], o.router, "each serves web itself");
    }
    for (router, fog) in [("r0-1-1", "r0-1"), ("r0-2", "r0-2"), ("r0-2-2", "r0-2")] {
        assert_eq!(rules_of(&r[router], "web"), [(fog.into(), fog.into())], "{router}");
        assert_eq!(r[router].rules[0].writers, [fog], "{router}: only its region's writes");
    }
    // The dc holds one rule per orchestrator, each to itself.
    assert_eq!(
        rules_of(&r["r0"], "web"),
        [("r0-1".into(), "r0".into()), ("r0-2".into(), "r0".into())]
    );
    let t = report.result.totals;
    assert_eq!(t.rule_conflicts, 0, "{t:?}");
    assert_eq!(
        report.result.conflict_check.findings, 0,
        "{:?}",
        report.result.conflict_check
    );
}

#[test]
fn a_policy_applied_by_event_and_regions_advertised() {
    let cfg = one_orchestrator();
    let events = format!(
        r#"{{"at": "5s", "do": "apply_policy", "orchestrator": "r0-1", "text": {}}}"#,
        serde_json::to_string(WEB).unwrap()
    );
    let mut s = sim(TREE, cfg, &events, None);
    run(&mut s, 4_000);
    assert!(
        s.report(Detail::Summary).result.orchestrators[0].decisions.is_empty(),
        "no policy yet"
    );
    run(&mut s, 15_000);
    let report = s.report(Detail::Summary);
    assert_eq!(report.result.events[0].outcome, "applied");
    assert_eq!(report.result.orchestrators[0].placements["web"], "r0-1");
    let n = s.instance("r0-1").unwrap().neighborhood(s.now_ms(), 0);
    let region = |r: &str| n.get(r).and_then(|v| v.region.as_ref()).map(|x| x.to_string());
    assert_eq!(region("r0-1").as_deref(), Some("r0-1"));
    assert_eq!(region("r0-1-1").as_deref(), Some("r0-1"));
    assert_eq!(
        region("r0-2").as_deref(),
        Some("r0-1"),
        "the one orchestrator r0-2 sees"
    );
    assert_eq!(region("r0"), None, "a dc is in no region (every region's fallback)");
    assert_eq!(
        common::routers(&s)["r0-2-1"].region,
        "",
        "r0-1 is 3 hops away: out of its view"
    );
}

#[test]
fn with_regions_a_restarted_orchestrator_restores_once_the_serving_router_is_back_in_its_region() {
    // r0-1 serves web at its edge r0-1-1. While r0-1 is down (longer than the dead interval),
    // r0-1-1 sees no orchestrator: in no region, it keeps r0-1's rule and its instance. When
    // r0-1 is back, r0-1-1 advertises no region at first: a restore then would take it for a
    // router that left the region and move web away; the orchestrator waits until r0-1-1 names
    // it again, and adopts its instance.
    const AT_EDGE: &str = "service web {
  match tcp dport 80 to 10.255.0.20
  place at r0-1-1 when mem.used_pct < 30
  otherwise datacenter
  hold 1s
}";
    let events = r#"
{"at": "15s", "do": "crash", "router": "r0-1"}
{"at": "25s", "do": "start", "router": "r0-1"}
"#;
    let mut s = sim(TREE, one_orchestrator(), events, Some(AT_EDGE));
    run(&mut s, 22_000);
    assert_eq!(routers(&s)["r0-1-1"].region, "", "r0-1 out of sight");
    run(&mut s, 40_000);
    let report = s.report(Detail::Routers);
    let o = &report.result.orchestrators[0];
    let decisions: Vec<(&str, &str)> = o.decisions.iter().map(|d| (d.kind.as_str(), d.to.as_str())).collect();
    assert_eq!(
        decisions,
        [("move", "r0-1-1"), ("restore", "r0-1-1")],
        "{:#?}",
        o.decisions
    );
    assert!(o.decisions[1].at_ms >= 25_000);
    let r = routers(&s);
    assert_eq!(r["r0-1-1"].region, "r0-1");
    assert_eq!(r["r0-1-1"].services["web"], "running");
    assert_eq!(rules_of(&r["r0-1-2"], "web"), [("r0-1".into(), "r0-1-1".into())]);
    assert_eq!(
        report.result.conflict_check.findings, 0,
        "{:?}",
        report.result.conflict_check
    );
}
