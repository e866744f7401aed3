//! The simulator agrees with the lab where both can run (privileged): the same topology
//! (`random:20`, seed 7) brought up as a lab of real daemons and simulated by `wuos-sim` with the
//! same protocol settings gives every router the same view — the same origins at the same hop
//! counts.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::{Down, ok, run};
use serde_json::Value;
use wuos_model::generate::{Generator, generate};
use wuos_sim::report::Detail;
use wuos_sim::{Network, Script, Sim, SimConfig};

const LAB: &str = "simagree";
/// The topology; `WUOS_AGREEMENT_SPEC` overrides it for a larger one-off comparison, e.g.
/// `WUOS_AGREEMENT_SPEC=random:500 cargo test --release -p wuos --test sim_agreement` (500
/// daemons need the release build; docs/benchmarks.md quotes that run).
const SPEC: &str = "random:20";
const SEED: u64 = 7;

type Views = BTreeMap<String, BTreeMap<String, u32>>;

/// Every router's view in the lab (origin → hops), fresh entries only.
fn lab_views(nodes: &[String]) -> Views {
    nodes
        .iter()
        .map(|n| {
            let s: Value = serde_json::from_str(&ok(&["status", "--lab", LAB, n, "--json"])).unwrap();
            let view = s["view"]
                .as_array()
                .map(|v| {
                    v.iter()
                        .filter(|e| !e["stale"].as_bool().unwrap_or(false))
                        .map(|e| {
                            (
                                e["origin"].as_str().unwrap().to_string(),
                                e["hops"].as_u64().unwrap() as u32,
                            )
                        })
                        .collect()
                })
                .unwrap_or_default();
            (n.clone(), view)
        })
        .collect()
}

#[test]
fn the_simulator_and_the_lab_agree_on_every_view() {
    if !wuos_southbound::privilege::may_run_privileged("lab versus simulator") {
        return;
    }
    let spec = std::env::var("WUOS_AGREEMENT_SPEC").unwrap_or_else(|_| SPEC.to_string());
    let _ = run(&["lab", "down", LAB]);
    let _down = Down(LAB);
    ok(&[
        "lab",
        "up",
        &spec,
        "--seed",
        &SEED.to_string(),
        "--name",
        LAB,
        "--no-domains",
    ]);
    let topology = generate(&spec.parse::<Generator>().unwrap(), SEED);
    let nodes: Vec<String> = topology.nodes.iter().map(|n| n.name.clone()).collect();

    // The simulator: the same topology and protocol settings as the lab's daemons (1 s
    // telemetry, radius 2), 20 simulated seconds.
    let cfg = SimConfig {
        seed: SEED,
        ..SimConfig::default()
    };
    let net = Network::new(&topology, cfg.link_defaults());
    let mut sim = Sim::new(net, cfg, Script::default(), None).unwrap();
    sim.run_until(20_000, &mut |_| {});
    let report = serde_json::to_value(sim.report(Detail::Routers)).unwrap();
    let simulated: Views = report["result"]["per_router"]
        .as_array()
        .expect("per-router reports")
        .iter()
        .map(|r| {
            let view = r["view"]
                .as_object()
                .unwrap()
                .iter()
                .filter(|(_, e)| !e["stale"].as_bool().unwrap_or(false))
                .map(|(o, e)| (o.clone(), e["hops"].as_u64().unwrap() as u32))
                .collect();
            (r["id"].as_str().unwrap().to_string(), view)
        })
        .collect();
    assert_eq!(simulated.len(), nodes.len());

    // The lab converges within a few intervals; compare once it has (or say where it differs).
    let deadline = Instant::now() + Duration::from_secs(30);
    let lab = loop {
        let v = lab_views(&nodes);
        if v == simulated || Instant::now() > deadline {
            break v;
        }
        std::thread::sleep(Duration::from_secs(1));
    };
    let differ: Vec<String> = nodes
        .iter()
        .filter(|n| lab.get(*n) != simulated.get(*n))
        .map(|n| format!("{n}: lab {:?} / sim {:?}", lab.get(n), simulated.get(n)))
        .collect();
    let entries: usize = simulated.values().map(BTreeMap::len).sum();
    eprintln!(
        "{spec}: {} routers, {entries} view entries compared, {} routers differ",
        nodes.len(),
        differ.len()
    );
    assert!(differ.is_empty(), "views differ:\n{}", differ.join("\n"));
}
