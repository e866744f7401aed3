//! Helpers of the simulator's tests: a simulation from a generator spec, events and a policy
//! as text, and the expected views from a breadth-first search of the topology.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use wuos_model::Topology;
use wuos_model::generate::{Generator, generate};
use wuos_policy::Policy;
use wuos_sim::report::{Detail, RouterReport};
use wuos_sim::{Network, Script, Sim, SimConfig, events};

/// The topology of a generator spec.
pub fn topology(spec: &str, seed: u64) -> Topology {
    let g: Generator = spec.parse().unwrap_or_else(|e| panic!("spec {spec}: {e}"));
    generate(&g, seed)
}

/// A simulation of `t` with `events` (JSON lines) and `policy` (text).
pub fn sim_of(t: &Topology, cfg: SimConfig, events: &str, policy: Option<&str>) -> Sim {
    let net = Network::new(t, cfg.link_defaults());
    let script = if events.is_empty() {
        Script::default()
    } else {
        events::parse(events, "events.jsonl", &net, &|f| {
            panic!("no policy files in tests: {f}")
        })
        .unwrap_or_else(|e| panic!("events: {e}"))
    };
    let policy = policy.map(|p| {
        (
            Policy::parse(p).unwrap_or_else(|e| panic!("policy: {e}")),
            "test.policy".to_string(),
        )
    });
    Sim::new(net, cfg, script, policy).unwrap_or_else(|e| panic!("sim: {e}"))
}

/// A simulation of a generator spec.
pub fn sim(spec: &str, cfg: SimConfig, events: &str, policy: Option<&str>) -> Sim {
    sim_of(&topology(spec, cfg.seed), cfg, events, policy)
}

/// Runs to `ms`.
pub fn run(s: &mut Sim, ms: u64) {
    s.run_until(ms, &mut |_| {});
}

/// Every router's report, by id.
pub fn routers(s: &Sim) -> BTreeMap<String, RouterReport> {
    s.report(Detail::Routers)
        .result
        .per_router
        .expect("asked for")
        .into_iter()
        .map(|r| (r.id.clone(), r))
        .collect()
}

/// Router `r`'s rules of `service`, as (writer, serving), by writer.
pub fn rules_of(r: &RouterReport, service: &str) -> Vec<(String, String)> {
    r.rules
        .iter()
        .filter(|x| x.service == service)
        .map(|x| (x.writer.clone(), x.serving.clone()))
        .collect()
}

/// Router → origin → hops, of the running routers' views.
pub fn views(s: &Sim) -> BTreeMap<String, BTreeMap<String, u32>> {
    routers(s)
        .into_iter()
        .filter(|(_, r)| r.running)
        .map(|(id, r)| (id, r.view.into_iter().map(|(o, e)| (o, e.hops)).collect()))
        .collect()
}

/// What the views must be: every router within `radius` hops of each live router, at its
/// shortest-path distance, over the links not in `down` and the routers not in `dead`.
pub fn expected_views(
    t: &Topology,
    radius: u32,
    down: &[(&str, &str)],
    dead: &[&str],
) -> BTreeMap<String, BTreeMap<String, u32>> {
    let dead: BTreeSet<&str> = dead.iter().copied().collect();
    let is_down = |a: &str, b: &str| down.iter().any(|(x, y)| (*x == a && *y == b) || (*x == b && *y == a));
    let mut adj: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for l in &t.links {
        if is_down(&l.a, &l.b) || dead.contains(l.a.as_str()) || dead.contains(l.b.as_str()) {
            continue;
        }
        adj.entry(&l.a).or_default().push(&l.b);
        adj.entry(&l.b).or_default().push(&l.a);
    }
    let mut out = BTreeMap::new();
    for n in t.nodes.iter().filter(|n| !dead.contains(n.name.as_str())) {
        let mut dist: BTreeMap<&str, u32> = BTreeMap::from([(n.name.as_str(), 0)]);
        let mut q = VecDeque::from([n.name.as_str()]);
        while let Some(u) = q.pop_front() {
            let d = dist[u];
            if d == radius {
                continue;
            }
            for v in adj.get(u).into_iter().flatten() {
                if !dist.contains_key(v) {
                    dist.insert(v, d + 1);
                    q.push_back(v);
                }
            }
        }
        dist.remove(n.name.as_str());
        out.insert(
            n.name.clone(),
            dist.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
        );
    }
    out
}
