//! Shared by the plan and executor tests: labs in memory (no host), and golden files.

#![allow(dead_code)] // each test file uses part of this

use std::path::PathBuf;

use wuos_lab::plan::{self, Input, LinkConfig, Plan};
use wuos_lab::state::{LabState, LinkRuntime, Phase};
use wuos_model::Topology;
use wuos_model::generate::{Generator, generate};
use wuos_model::plan::address_plan;

/// `line:N`, `grid:RxC`… as `wuos lab up` reads them.
pub fn generated(spec: &str) -> Topology {
    let g: Generator = spec.parse().unwrap_or_else(|e| panic!("{spec}: {e}"));
    generate(&g, 1)
}

/// `tests/golden/shaped.toml`: a rate-limited link, a delayed and lossy one, and one with both.
pub fn shaped() -> Topology {
    wuos_model::file::parse(include_str!("../golden/shaped.toml"), "shaped.toml").unwrap()
}

/// The state of lab `lab` just brought up from `topo`.
pub fn state(lab: &str, topo: Topology) -> LabState {
    let plan = address_plan(&topo).unwrap();
    LabState {
        name: lab.into(),
        phase: Phase::Up,
        created_unix_ms: 0,
        links: topo
            .links
            .iter()
            .map(|l| LinkRuntime {
                up: true,
                params: l.params.clone(),
                relay_pid: None,
                spliced: l.params.needs_impairment(),
            })
            .collect(),
        topology: topo,
        plan,
        supervisor_pid: None,
    }
}

/// The plan `lab up` runs for a lab in state `st`.
pub fn lab_plan(st: &LabState, offloads_off: bool) -> Plan {
    let routes = plan::static_routes(&st.topology, &st.plan);
    let links: Vec<LinkConfig> = st.links.iter().map(LinkConfig::from).collect();
    plan::lab(&Input {
        lab: &st.name,
        topology: &st.topology,
        addresses: &st.plan,
        routes: &routes,
        links: &links,
        offloads_off,
    })
}

/// Compares `plan`, as pretty JSON, with `tests/golden/NAME.json`; `UPDATE_GOLDEN=1` rewrites
/// the file instead.
pub fn check_golden(name: &str, plan: &Plan) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(format!("{name}.json"));
    let got = serde_json::to_string_pretty(plan).unwrap() + "\n";
    if std::env::var_os("UPDATE_GOLDEN").is_some_and(|v| v == "1") {
        std::fs::write(&path, &got).unwrap();
        return;
    }
    let want = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e}; create it with UPDATE_GOLDEN=1", path.display()));
    if got != want {
        let line = got
            .lines()
            .zip(want.lines())
            .position(|(g, w)| g != w)
            .unwrap_or(got.lines().count().min(want.lines().count()));
        panic!(
            "the plan differs from {} from line {} on:\n  got:  {}\n  want: {}\n\
             if the change is intended, regenerate with UPDATE_GOLDEN=1 and review the diff",
            path.display(),
            line + 1,
            got.lines().nth(line).unwrap_or("<end>"),
            want.lines().nth(line).unwrap_or("<end>"),
        );
    }
}
