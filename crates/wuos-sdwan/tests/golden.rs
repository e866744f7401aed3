//! Golden layouts: `tests/golden/<case>/input.json` holds an inventory and steps of NBI actions;
//! each step's outcome (ok, or the refusal) and, for every site, the ops from the configuration
//! before the step to the one after it are written to a text compared with `expected.txt`.
//! `UPDATE_GOLDEN=1 cargo test -p wuos-sdwan --test golden` rewrites the expected files.

use std::collections::BTreeMap;
mod common;

use std::fs;
use std::path::Path;

use serde::Deserialize;
use wuos_sdwan::{Action, Desired, EdgeConfig, Inventory, diff};

#[derive(Deserialize)]
struct Input {
    inventory: Inventory,
    steps: Vec<Vec<Action>>,
}

fn run(dir: &Path) -> String {
    let input: Input = serde_json::from_str(&fs::read_to_string(dir.join("input.json")).unwrap())
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    let mut desired = Desired::default();
    let mut configs: BTreeMap<&String, EdgeConfig> = input
        .inventory
        .sites
        .keys()
        .map(|s| (s, EdgeConfig::default()))
        .collect();
    let mut out = String::new();
    for (n, step) in input.steps.into_iter().enumerate() {
        out.push_str(&format!("== step {n}\n"));
        for action in step {
            let text = serde_json::to_string(&action).unwrap();
            let before = desired.clone();
            match desired.apply(action, &input.inventory) {
                Ok(()) => out.push_str(&format!("ok {text}\n")),
                Err(e) => {
                    assert_eq!(desired, before, "a refused action changed the state: {text}");
                    out.push_str(&format!("refused {text}\n  {e}\n"));
                }
            }
        }
        for (site, old) in configs.iter_mut() {
            let new = EdgeConfig::realise(&desired, &input.inventory, site);
            let ops = diff(old, &new);
            if !ops.is_empty() || !new.unreachable.is_empty() {
                out.push_str(&format!("-- {site}\n"));
            }
            for op in ops {
                for line in op.to_string().lines() {
                    out.push_str(&format!("  {line}\n"));
                }
            }
            for u in &new.unreachable {
                out.push_str(&format!("  unreachable: {u}\n"));
            }
            *old = new;
        }
    }
    out
}

#[test]
fn golden_layouts() {
    common::check_cases("golden", 3, run);
}
