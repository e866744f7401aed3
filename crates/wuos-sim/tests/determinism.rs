//! A run is a function of its inputs and its seed: the same seed gives the same JSON (the
//! `result` part; `performance` is wall time), another seed another run.

mod common;

use common::{run, sim};
use wuos_sim::report::Detail;
use wuos_sim::{LoadModel, SimConfig};

const POLICY: &str = "service pabx {
  match udp dport 5060 to 10.255.0.10
  place local when mem.used_pct < 30 and cpu.used_pct < 70
  place nearby within 2 hops when mem.used_pct < 30 prefer lowest latency
  otherwise datacenter
  hold 2s
}";

const EVENTS: &str = r#"
{"at": "5s", "do": "link_set", "a": "r1", "b": "r2", "delay": "15ms", "jitter": "5ms", "loss_pct": 3}
{"at": "8s", "do": "crash", "router": "r7"}
{"at": "9s", "do": "link_down", "a": "r1", "b": "r3"}
{"at": "12s", "do": "stop", "router": "r12"}
{"at": "14s", "do": "start", "router": "r7"}
{"at": "15s", "do": "link_up", "a": "r1", "b": "r3"}
{"at": "16s", "do": "set_load", "router": "r2", "mem_pct": 80}
"#;

fn result_json(seed: u64) -> String {
    let mut cfg = SimConfig {
        seed,
        load: LoadModel::Walk { step_pct: 5.0 },
        default_loss_pct: 1.0,
        ..SimConfig::default()
    };
    cfg.orchestrators.routers = Some(vec!["r1".into(), "r2".into(), "r9".into()]);
    let mut s = sim("random:30", cfg, EVENTS, Some(POLICY));
    run(&mut s, 25_000);
    let report = s.report(Detail::Routers);
    assert!(report.result.totals.intents_delivered > 0, "the orchestrators acted");
    serde_json::to_string(&report.result).unwrap()
}

#[test]
fn the_same_seed_gives_the_same_json() {
    let a = result_json(7);
    assert_eq!(a, result_json(7));
    assert_ne!(a, result_json(8), "another seed, another run");
}
