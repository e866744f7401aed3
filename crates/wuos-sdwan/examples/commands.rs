//! Prints, for a generated topology and a JSON list of actions, every site's ops as iproute2 /
//! nft commands (`SITE<TAB>COMMAND` per line) — for checking a layout by hand in a lab:
//! `cargo run -p wuos-sdwan --example commands -- sdwan:3:2 actions.json`.

use std::collections::BTreeMap;

use wuos_model::generate::{Generator, generate};
use wuos_model::plan::address_plan;
use wuos_sdwan::{Action, Desired, EdgeConfig, Inventory, diff};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, spec, actions] = &args[..] else {
        eprintln!("usage: commands GENERATOR ACTIONS.json");
        std::process::exit(2);
    };
    let t = generate(&spec.parse::<Generator>().expect("generator"), 1);
    let inv = Inventory::from_topology(&t, &address_plan(&t).expect("plan")).expect("inventory");
    let actions: Vec<Action> = serde_json::from_str(&std::fs::read_to_string(actions).expect("read")).expect("json");
    let mut desired = Desired::default();
    for a in actions {
        desired.apply(a, &inv).unwrap_or_else(|e| panic!("{e}"));
    }
    let empty = EdgeConfig::default();
    let configs: BTreeMap<&String, EdgeConfig> = inv
        .sites
        .keys()
        .map(|s| (s, EdgeConfig::realise(&desired, &inv, s)))
        .collect();
    for (site, config) in configs {
        for op in diff(&empty, &config) {
            println!("{site}\t{}", op.to_string().replace('\n', "\\n"));
        }
    }
}
