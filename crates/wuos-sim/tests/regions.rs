//! Issue 10's acceptance in the simulator: 1,000 routers with 20 fog orchestrators reach
//! non-conflicting placements — with regions, as the daemon runs them; and without, the same
//! network does conflict (so this test can fail).
//!
//! The network is `random:1000:ba:3` (Barabási–Albert, m = 3), seed 1, at the default radius
//! (2 hops). Its 20 fog routers are chosen greedily so that every router is within 2 hops of
//! one (with m = 2, 20 fogs leave about 45 routers out of every fog's sight, which would then
//! be in no region); the dc is the router of highest degree that is not a fog. Every fog runs
//! `examples/voip.policy`; every fourth fog is at 50% memory, so it serves the PABX on a router
//! of its region rather than itself.
//!
//! Simulated time: 15 s with regions — the routers start within the first second, the regions
//! form as the views fill, the PABX moves after the policy's 5 s hold and its routes switch once
//! the new instance is ready: the last decision comes at 7.7 s, the last rule is written at
//! 8.7 s, which leaves 6 s of steady state; 6 s without regions (the orchestrators first route
//! their whole views to the data centre about a second after they start, and overwrite each
//! other then). Longer runs change nothing this test checks and cost about 1.5 s of CPU per
//! simulated second in a debug build (the whole test: about 32 s of CPU).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use common::{routers, run, sim_of};
use wuos_model::{Role, Topology};
use wuos_sim::report::Detail;
use wuos_sim::{Regions, SimConfig};

const VOIP: &str = include_str!("../../../examples/voip.policy");
const SPEC: &str = "random:1000:ba:3";
const SEED: u64 = 1;
const FOGS: usize = 20;
const RADIUS: u32 = 2;

/// The topology, its fogs chosen to cover every router within the radius, and the dc.
fn network() -> (Topology, Vec<String>, String) {
    let mut t = common::topology(SPEC, SEED);
    let balls = common::expected_views(&t, RADIUS, &[], &[]);
    let mut uncovered: BTreeSet<&str> = balls.keys().map(String::as_str).collect();
    let mut fogs: Vec<String> = Vec::new();
    while fogs.len() < FOGS {
        let newly = |name: &str| {
            usize::from(uncovered.contains(name))
                + balls[name].keys().filter(|x| uncovered.contains(x.as_str())).count()
        };
        // The most routers newly in sight, then the smallest name.
        let best = balls
            .keys()
            .filter(|n| !fogs.contains(n))
            .max_by(|a, b| newly(a).cmp(&newly(b)).then_with(|| b.cmp(a)))
            .expect("more routers than fogs")
            .clone();
        uncovered.remove(best.as_str());
        for x in balls[&best].keys() {
            uncovered.remove(x.as_str());
        }
        fogs.push(best);
    }
    assert!(
        uncovered.is_empty(),
        "{FOGS} fogs leave {} routers of {SPEC} out of sight: {uncovered:?}",
        uncovered.len()
    );
    let degree = |n: &str| t.links.iter().filter(|l| l.a == n || l.b == n).count();
    let dc = t
        .nodes
        .iter()
        .map(|n| n.name.clone())
        .filter(|n| !fogs.contains(n))
        .max_by(|a, b| degree(a).cmp(&degree(b)).then_with(|| b.cmp(a)))
        .expect("a router left for the dc");
    for n in &mut t.nodes {
        if fogs.contains(&n.name) {
            n.role = Role::Fog;
        } else if n.name == dc {
            n.role = Role::Dc;
        }
    }
    fogs.sort();
    (t, fogs, dc)
}

/// Every fourth fog at 50% memory from the start: not viable for `place local`.
fn events(fogs: &[String]) -> String {
    fogs.iter()
        .step_by(4)
        .map(|f| format!(r#"{{"at": 0, "do": "set_load", "router": "{f}", "mem_pct": 50}}"#))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn a_thousand_routers_and_twenty_fogs_reach_non_conflicting_placements_with_regions_only() {
    let (t, fogs, dc) = network();
    let events = events(&fogs);

    // With regions (the default).
    let t0 = Instant::now();
    let mut s = sim_of(&t, SimConfig::default(), &events, Some(VOIP));
    run(&mut s, 15_000);
    let wall_nearest = t0.elapsed();
    let report = s.report(Detail::Routers);
    let res = &report.result;
    let r = routers(&s);
    assert_eq!(res.orchestrators.len(), FOGS, "every fog orchestrates");
    assert_eq!(res.running, 1000);

    // Every router but the dc is in exactly one region: it names a fog, and that fog alone
    // counts it as a member.
    let mut members: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for site in s.sites() {
        let o = site.orchestrator().expect("a policy in force");
        for m in o.region_members() {
            members.entry(m).or_default().push(o.config().local.clone());
        }
    }
    for (name, router) in &r {
        if *name == dc {
            assert_eq!(router.region, "", "the dc is in no region");
            assert!(!members.contains_key(name), "the dc in {:?}'s region", members[name]);
            continue;
        }
        assert!(
            fogs.contains(&router.region),
            "{name} advertises region {:?}, not a fog's",
            router.region
        );
        assert_eq!(
            members.get(name),
            Some(&vec![router.region.clone()]),
            "{name} names {}: the orchestrators counting it",
            router.region
        );
    }

    for o in &res.orchestrators {
        // Each serves the PABX in its region (itself or one of its routers, not the dc).
        let serving = &o.placements["pabx"];
        assert!(
            *serving == o.router || r[serving].region == o.router,
            "{} serves pabx at {serving}, of region {:?}",
            o.router,
            r[serving].region
        );
        // Its decision log says so: the latest move or restore leads there, routes switched.
        let last = o
            .decisions
            .iter()
            .rev()
            .find(|d| d.service == "pabx" && matches!(d.kind.as_str(), "move" | "restore"))
            .unwrap_or_else(|| panic!("{} decided nothing", o.router));
        assert_eq!(&last.to, serving, "{}'s log ends with {last:?}", o.router);
        assert!(last.switched_ms.is_some(), "{}: {last:?}", o.router);
        // And every router of its region routes the PABX there, by its rule alone.
        for (name, router) in r.iter().filter(|(_, x)| x.region == o.router) {
            let rules: Vec<(&str, &str)> = router
                .rules
                .iter()
                .map(|x| (x.writer.as_str(), x.serving.as_str()))
                .collect();
            assert_eq!(rules, [(o.router.as_str(), serving.as_str())], "{name}");
        }
    }
    // Every rule on a router was written by its region's orchestrator; the dc's lead to itself.
    for (name, router) in &r {
        for rule in &router.rules {
            if *name == dc {
                assert_eq!(rule.serving, dc, "{rule:?}");
            } else {
                assert_eq!(rule.writer, router.region, "{name}: {rule:?}");
            }
        }
    }
    let totals = res.totals;
    assert_eq!(totals.rule_conflicts, 0, "{totals:?}");
    assert_eq!(s.conflicts(), [], "the conflict check");
    let in_services: usize = r.values().filter(|x| x.services.contains_key("pabx")).count();
    let last_written = r.values().flat_map(|x| &x.rules).map(|x| x.written_ms).max();
    let last_decision = res
        .orchestrators
        .iter()
        .flat_map(|o| &o.decisions)
        .map(|d| d.at_ms)
        .max();
    eprintln!("last rule written at {last_written:?} ms, last decision at {last_decision:?} ms");
    eprintln!(
        "with regions: {} s simulated in {:.1} s; {FOGS} orchestrators, {} decisions, {} rules written, \
         {} conflicts, refused {:?}, {} rules dropped on a region change, {} conflict-check findings, \
         {in_services} routers running pabx",
        res.sim_time_ms / 1000,
        wall_nearest.as_secs_f64(),
        res.orchestrators.iter().map(|o| o.decisions.len()).sum::<usize>(),
        totals.rule_writes,
        totals.rule_conflicts,
        totals.intents_refused,
        totals.rules_dropped,
        res.conflict_check.findings,
    );

    // Without regions, the same network conflicts.
    let t0 = Instant::now();
    let mut cfg = SimConfig::default();
    cfg.orchestrators.regions = Regions::None;
    let mut s = sim_of(&t, cfg, &events, Some(VOIP));
    run(&mut s, 6_000);
    let report = s.report(Detail::Summary);
    let res = &report.result;
    let totals = res.totals;
    eprintln!(
        "without regions: {} s simulated in {:.1} s; {} rules written, {} conflicts, refused {:?}, \
         {} conflict-check findings ({} not shared)",
        res.sim_time_ms / 1000,
        t0.elapsed().as_secs_f64(),
        totals.rule_writes,
        totals.rule_conflicts,
        totals.intents_refused,
        res.conflict_check.findings,
        res.conflict_check.not_shared,
    );
    assert!(
        totals.rule_conflicts > 0,
        "without regions, orchestrators overwrite each other's rules: {totals:?}"
    );
    assert!(res.conflict_check.findings > 0, "{:?}", res.conflict_check);
}
