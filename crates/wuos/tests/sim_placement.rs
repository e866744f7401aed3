//! The simulator places services where the lab does (privileged: real namespaces, XDP, Kamailio,
//! SIPp). One fog router orchestrates 19 others, all within its 2-hop view; the VoIP policy
//! (`examples/voip.policy`) on it; the same topology, load and demand in `wuos-sim`:
//!
//! ```text
//!            h1 h6         h3 h7         h4 h8         h2 h9     h5
//!              \ |           \ |           \ |           \ |      |
//!      e6 ──── e1    e7 ──── e2    e8 ──── e3    e9 ──── e4      e5
//!               \             \             |             /      /
//!                \ 40 ms       \ 2 ms       | 6 ms  40 ms /     / 40 ms
//!                 └─────────────┴─────────── fog ─────────┴──────┘
//!                                             │ 30 ms
//!                                             dc
//! ```
//!
//! (One-way delays: fog to e1, e4 and e5 40 ms, to e2 2 ms, to e3 6 ms; e1–e6, e2–e7, e3–e8,
//! e4–e9 40 ms; the hosts' links none — the lab delays a link in a user-space relay, and frames
//! that come through one bypass the XDP classifier, so the calls are counted by e1, on h1's
//! link.) e2 holds 64 MiB of its 128 MiB from the start: over the policy's 30 %.
//!
//! 1. Calls from h1 to h2 through the VIP: the orchestrator moves the PABX from the data centre
//!    to the fog router itself (`place local`, memory under 30 %).
//! 2. The fog router (640 MiB) holds 250 MiB: no longer viable, the PABX goes `nearby within 2
//!    hops … prefer lowest latency` — to e3, 6 ms away: not e2 (2 ms, but over 30 %), not e1
//!    (the smallest name), not a 2-hop router (40 ms more at least).
//!
//! The simulator, given each router's figures as the lab's routers advertised them at each
//! phase (`set_load`) and the demand where the lab's data path counted it (`set_demand`),
//! logs the same moves in the same order. It is not agreeing by accident: with the fog
//! router's memory kept low it keeps the PABX on the fog router, and with e2's kept low it
//! picks e2 — each unlike the lab.
//!
//! Both run regions (the daemon's and the simulator's default): with one orchestrator that sees
//! every router, every router but the data centre advertises the fog router's region (checked
//! below in the lab), so the candidates are the whole view.

mod common;

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{Down, ok, run};
use serde_json::{Value, json};
use wuos_model::Topology;
use wuos_policy::Policy;
use wuos_sim::config::{OrchestratorsConfig, ProtocolConfig};
use wuos_sim::orchestrators::DecisionRecord;
use wuos_sim::{Network, Regions, Sim, SimConfig};

const LAB: &str = "simplace";
const FOG: &str = "fog";
const DC: &str = "dc";
const SERVICE: &str = "pabx";
const VIP: &str = "10.255.0.10";
const POLICY: &str = include_str!("../../../examples/voip.policy");

const TOPOLOGY: &str = r#"
name = "simplace"

[[node]]
name = "fog"
role = "fog"
cpus = 1
memory = "640MiB"
[[node]]
name = "dc"
role = "dc"
memory = "2GiB"
[[node]]
name = "e1"
role = "edge"
[[node]]
name = "e2"
role = "edge"
memory = "128MiB"
[[node]]
name = "e3"
role = "edge"
[[node]]
name = "e4"
role = "edge"
[[node]]
name = "e5"
role = "edge"
[[node]]
name = "e6"
role = "edge"
[[node]]
name = "e7"
role = "edge"
[[node]]
name = "e8"
role = "edge"
[[node]]
name = "e9"
role = "edge"
[[node]]
name = "h1"
role = "host"
[[node]]
name = "h2"
role = "host"
[[node]]
name = "h3"
role = "host"
[[node]]
name = "h4"
role = "host"
[[node]]
name = "h5"
role = "host"
[[node]]
name = "h6"
role = "host"
[[node]]
name = "h7"
role = "host"
[[node]]
name = "h8"
role = "host"
[[node]]
name = "h9"
role = "host"

[[link]]
a = "fog"
b = "dc"
delay = "30ms"
[[link]]
a = "fog"
b = "e1"
delay = "40ms"
[[link]]
a = "fog"
b = "e2"
delay = "2ms"
[[link]]
a = "fog"
b = "e3"
delay = "6ms"
[[link]]
a = "fog"
b = "e4"
delay = "40ms"
[[link]]
a = "fog"
b = "e5"
delay = "40ms"
[[link]]
a = "e1"
b = "e6"
delay = "40ms"
[[link]]
a = "e2"
b = "e7"
delay = "40ms"
[[link]]
a = "e3"
b = "e8"
delay = "40ms"
[[link]]
a = "e4"
b = "e9"
delay = "40ms"
[[link]]
a = "e1"
b = "h1"
delay = "0"
[[link]]
a = "e4"
b = "h2"
delay = "0"
[[link]]
a = "e2"
b = "h3"
delay = "0"
[[link]]
a = "e3"
b = "h4"
delay = "0"
[[link]]
a = "e5"
b = "h5"
delay = "0"
[[link]]
a = "e1"
b = "h6"
delay = "0"
[[link]]
a = "e2"
b = "h7"
delay = "0"
[[link]]
a = "e3"
b = "h8"
delay = "0"
[[link]]
a = "e4"
b = "h9"
delay = "0"
"#;

/// The protocol's settings, given to the lab's daemons and to the simulator alike: telemetry
/// (and hellos, which a lab's daemons send at the telemetry interval) every second, adverts 2
/// hops; neighbors dead and adverts stale after 3 intervals (the daemons' defaults).
const INTERVAL_MS: u32 = 1000;
const HOP_LIMIT: u32 = 2;

/// When the simulator's phases begin and when it stops, ms of simulated time: the loads of the
/// lab's first phase from the start, its second phase's from `PHASE2_MS`.
const PHASE2_MS: u64 = 20_000;
const SIM_END_MS: u64 = 35_000;

fn json_of(args: &[&str]) -> Value {
    serde_json::from_str(&ok(args)).unwrap_or_else(|e| panic!("wuos {args:?} --json: {e}"))
}

/// What one router advertised about itself at one moment.
#[derive(Clone, Debug)]
struct Advertised {
    cpu_pct: f64,
    mem_pct: f64,
    /// New flows per second of the PABX's traffic its data path counted.
    demand: f64,
    /// The orchestrator whose region it says it is in ("" for none).
    region: String,
}

type Snapshot = BTreeMap<String, Advertised>;

/// What `node` advertises now; `None` while its daemon does not answer.
fn advertised(node: &str) -> Option<Advertised> {
    let out = run(&["status", "--lab", LAB, node, "--json"]);
    if !out.status.success() {
        return None;
    }
    let s: Value = serde_json::from_slice(&out.stdout).ok()?;
    let own = &s["own"];
    let figure = |k: &str| own["resources"][k].as_f64().unwrap_or(0.0);
    let demand = own["demand"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|d| d["service"] == SERVICE)
        .map(|d| d["flows_per_s"].as_f64().unwrap_or(0.0))
        .fold(0.0, |a, b| a + b);
    Some(Advertised {
        cpu_pct: figure("cpu_used_pct"),
        mem_pct: figure("mem_used_pct"),
        demand,
        region: own["region"].as_str().unwrap_or_default().to_string(),
    })
}

/// What every router advertises now; `None` while one does not answer.
fn snapshot(nodes: &[String]) -> Option<Snapshot> {
    nodes.iter().map(|n| Some((n.clone(), advertised(n)?))).collect()
}

fn show(s: &Snapshot) -> String {
    s.iter()
        .map(|(n, a)| {
            format!(
                "{n}: cpu {:.1} % mem {:.1} % demand {:.1}/s region {:?}",
                a.cpu_pct, a.mem_pct, a.demand, a.region
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The lab orchestrator's decisions as "KIND FROM -> TO", oldest first.
fn lab_moves(d: &Value) -> Vec<String> {
    d["decisions"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|x| {
            format!(
                "{} {} -> {}",
                x["kind"].as_str().unwrap_or("?"),
                x["from"].as_str().unwrap_or("?"),
                x["to"].as_str().unwrap_or("?")
            )
        })
        .collect()
}

fn sim_moves(d: &[DecisionRecord]) -> Vec<String> {
    d.iter().map(|x| format!("{} {} -> {}", x.kind, x.from, x.to)).collect()
}

fn sim_log(d: &[DecisionRecord]) -> String {
    d.iter()
        .map(|x| {
            let switched = x.switched_ms.map_or("-".into(), |s| s.to_string());
            format!(
                "{:>6} ms {} {} -> {} [{}] switched {switched}: {}",
                x.at_ms, x.kind, x.from, x.to, x.rule, x.reason
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The lab's decision log, its fog router's view (latency, hops, memory) and the tail of its log.
fn lab_diagnosis() -> String {
    let out = run(&["decisions", "--lab", LAB, "--router", FOG]);
    let mut d = format!("--- the lab's decisions\n{}", String::from_utf8_lossy(&out.stdout));
    let st = run(&["status", "--lab", LAB, FOG, "--json"]);
    if let Ok(v) = serde_json::from_slice::<Value>(&st.stdout) {
        d += "--- the fog router's view\n";
        for e in v["view"].as_array().into_iter().flatten() {
            d += &format!(
                "{} hops {} latency {:.1} ms mem {:.1} % stale {}\n",
                e["origin"].as_str().unwrap_or("?"),
                e["hops"],
                e["latency_ms"].as_f64().unwrap_or(f64::NAN),
                e["advert"]["resources"]["mem_used_pct"].as_f64().unwrap_or(f64::NAN),
                e["stale"].as_bool().unwrap_or(false)
            );
        }
    }
    let log = std::fs::read_to_string(format!("/run/wuos/labs/{LAB}/logs/{FOG}.log")).unwrap_or_default();
    let tail: Vec<&str> = log.lines().filter(|l| !l.contains("DEBUG")).collect();
    d += &format!(
        "--- {FOG}.log (last lines)\n{}\n",
        tail[tail.len().saturating_sub(12)..].join("\n")
    );
    d
}

fn wait_until<T>(what: &str, within: Duration, f: impl FnMut() -> Option<T>) -> T {
    common::wait_until_or(what, within, lab_diagnosis, f)
}

/// Waits until the lab's orchestrator has logged `n` moves and routed the last one (its new
/// instance healthy); returns the decision list.
fn await_moves(n: usize, within: Duration) -> Value {
    wait_until(&format!("the orchestrator's move #{n}, switched"), within, || {
        let d = json_of(&["decisions", "--lab", LAB, "--router", FOG, "--json"]);
        let moves: Vec<&Value> = d["decisions"]
            .as_array()?
            .iter()
            .filter(|x| x["kind"] == "move")
            .collect();
        let last = moves.get(n.checked_sub(1)?)?;
        (last["switched_unix_ms"].as_i64().unwrap_or(0) > 0).then(|| d.clone())
    })
}

/// Processes started in the lab's routers, killed when dropped (before the lab goes down).
#[derive(Default)]
struct Procs(Vec<Child>);

impl Procs {
    /// `wuos lab exec LAB NODE -- ARGS` in the background; its output goes to `dir`.
    fn spawn(&mut self, node: &str, dir: &std::path::Path, args: &[&str]) {
        let program = std::path::Path::new(args[0]).file_name().unwrap().to_string_lossy();
        let log = std::fs::File::create(dir.join(format!("{node}-{program}.log"))).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_wuos"))
            .args(["lab", "exec", LAB, node, "--"])
            .args(args)
            .current_dir(dir)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.0.push(child);
    }
}

impl Drop for Procs {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The simulator's events: each phase's figures from its start (`set_load` for every router),
/// and the demand where the lab counted it (`set_demand`, from the start).
fn events(phases: &[(u64, &Snapshot)], demand: &BTreeMap<String, f64>) -> String {
    let mut lines = Vec::new();
    for (router, flows) in demand {
        lines.push(json!({"at": 0, "do": "set_demand", "router": router, "service": SERVICE, "flows_per_s": flows}));
    }
    for (at, snap) in phases {
        for (router, a) in *snap {
            lines.push(
                json!({"at": at, "do": "set_load", "router": router, "cpu_pct": a.cpu_pct, "mem_pct": a.mem_pct}),
            );
        }
    }
    lines.iter().map(|l| format!("{l}\n")).collect()
}

/// What the simulated orchestrator did.
struct Simulated {
    decisions: Vec<DecisionRecord>,
    /// Where it served the PABX at the end of each phase.
    serving: Vec<String>,
}

/// Simulates the topology with `events` and the VoIP policy on the fog router, with the lab's
/// protocol settings, regions as the daemon runs them, and no demand but the events'.
fn simulate(topology: &Topology, events: &str) -> Simulated {
    let cfg = SimConfig {
        protocol: ProtocolConfig {
            hello_interval_ms: INTERVAL_MS,
            dead_interval_ms: 3 * INTERVAL_MS,
            telemetry_interval_ms: INTERVAL_MS,
            hop_limit: HOP_LIMIT,
            stale_after_intervals: 3,
        },
        demand_flows_per_s: 0.0,
        orchestrators: OrchestratorsConfig {
            routers: Some(vec![FOG.to_string()]),
            datacenter: Some(DC.to_string()),
            regions: Regions::Nearest,
            ..OrchestratorsConfig::default()
        },
        ..SimConfig::default()
    };
    let net = Network::new(topology, cfg.link_defaults());
    let script = wuos_sim::events::parse(events, "lab.jsonl", &net, &|f| {
        panic!("the events name no policy file, yet {f}")
    })
    .unwrap_or_else(|e| panic!("{e}\n{events}"));
    let policy = Policy::parse(POLICY).expect("examples/voip.policy parses");
    let mut sim = Sim::new(net, cfg, script, Some((policy, "examples/voip.policy".into()))).unwrap();
    let mut serving = Vec::new();
    for end in [PHASE2_MS, SIM_END_MS] {
        sim.run_until(end, &mut |_| {});
        serving.push(sim.sites()[0].serving().get(SERVICE).cloned().unwrap_or_default());
    }
    Simulated {
        decisions: sim.sites()[0].decisions().to_vec(),
        serving,
    }
}

#[test]
fn the_simulator_moves_the_pabx_where_the_lab_does() {
    if !wuos_southbound::privilege::may_run_privileged("lab versus simulator: placements") {
        return;
    }
    let started = Instant::now();
    let _ = run(&["lab", "down", LAB]);
    let _down = Down(LAB);
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("simplace.toml");
    std::fs::write(&file, TOPOLOGY).unwrap();
    let topology = wuos_model::file::parse(TOPOLOGY, "simplace.toml").expect("the topology parses");
    let plan = wuos_model::plan::address_plan(&topology).unwrap();
    let loopback = |n: &str| plan.loopbacks[topology.node_index(n).unwrap()].to_string();
    let nodes: Vec<String> = topology.nodes.iter().map(|n| n.name.clone()).collect();
    assert_eq!(nodes.len(), 20);
    ok(&[
        "lab",
        "up",
        file.to_str().unwrap(),
        "--name",
        LAB,
        "--telemetry-interval",
        &format!("{INTERVAL_MS}ms"),
        "--hop-limit",
        &HOP_LIMIT.to_string(),
        "--xdp",
        "--param",
        &format!("pabx.static_users=2000={}:5060", loopback("h2")),
    ]);
    // Dropped before `_down`: the hogs and SIPp end before the lab goes.
    let mut procs = Procs::default();
    let wuos = env!("CARGO_BIN_EXE_wuos");
    procs.spawn(
        "e2",
        tmp.path(),
        &[wuos, "hog", "--memory", "64MiB", "--duration", "300s"],
    );

    // Regions: every router is within 2 hops of the fog router, so each joins its region (the
    // data centre none), and the lab's regions exclude no candidate the simulator has.
    wait_until(
        "every router advertises the fog router's region (the dc none), e2 its hog",
        Duration::from_secs(30),
        || {
            let s = snapshot(&nodes)?;
            let regions_ok = s.iter().all(|(n, a)| a.region == if n == DC { "" } else { FOG });
            (regions_ok && s["e2"].mem_pct > 30.0).then_some(())
        },
    );

    // The PABX in the data centre, the policy on the fog router, calls from h1 to h2.
    ok(&[
        "service", "start", SERVICE, "--name", SERVICE, "--router", DC, "--lab", LAB,
    ]);
    let policy = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/voip.policy");
    ok(&["policy", "apply", policy, "--lab", LAB, "--router", FOG]);
    let (h1, h2) = (loopback("h1"), loopback("h2"));
    procs.spawn(
        "h2",
        tmp.path(),
        &["sipp", "-sn", "uas", "-i", &h2, "-p", "5060", "-nostdin"],
    );
    std::thread::sleep(Duration::from_millis(500));
    procs.spawn(
        "h1",
        tmp.path(),
        &[
            "sipp",
            "-sn",
            "uac",
            &format!("{VIP}:5060"),
            "-s",
            "2000",
            "-i",
            &h1,
            "-p",
            "5062",
            // A socket per call: each call a new flow that the data path counts as demand.
            "-t",
            "un",
            "-max_socket",
            "100",
            "-r",
            "4",
            "-m",
            "1000",
            "-timeout",
            "120s",
            "-nostdin",
        ],
    );

    // Phase 1: the calls' demand moves the PABX out of the data centre.
    let lab1 = await_moves(1, Duration::from_secs(60));
    let phase1 = snapshot(&nodes).expect("every router's status, phase 1");
    let t1 = started.elapsed();

    // Phase 2: the fog router's memory over 30 %.
    procs.spawn(
        FOG,
        tmp.path(),
        &[wuos, "hog", "--memory", "250MiB", "--duration", "300s"],
    );
    let lab2 = await_moves(2, Duration::from_secs(45));
    let phase2 = snapshot(&nodes).expect("every router's status, phase 2");
    let lab_log = lab_diagnosis();
    let t2 = started.elapsed();
    drop(procs);
    let lab_serving: Vec<String> = [&lab1, &lab2]
        .iter()
        .map(|d| d["serving"][SERVICE].as_str().unwrap_or_default().to_string())
        .collect();
    let figures = format!(
        "--- figures, phase 1\n{}\n--- figures, phase 2\n{}",
        show(&phase1),
        show(&phase2)
    );

    // The simulator, with the lab's figures and demand.
    let mut demand: BTreeMap<String, f64> = BTreeMap::new();
    for (n, a) in phase1.iter().chain(&phase2) {
        if a.demand > 0.0 {
            let d = demand.entry(n.clone()).or_default();
            *d = d.max(a.demand);
        }
    }
    assert!(
        !demand.is_empty(),
        "the lab's data path counted the calls somewhere\n{figures}"
    );
    let sim = simulate(&topology, &events(&[(0, &phase1), (PHASE2_MS, &phase2)], &demand));
    let (lab_seen, sim_seen) = (lab_moves(&lab2), sim_moves(&sim.decisions));
    let both = format!(
        "lab: {lab_seen:?}, serving {lab_serving:?} after each phase\n\
         sim: {sim_seen:?}, serving {:?}\n\
         {lab_log}--- the simulator's decisions\n{}\n{figures}\ndemand: {demand:?}",
        sim.serving,
        sim_log(&sim.decisions)
    );
    eprintln!("{both}");
    assert_eq!(
        (&sim_seen, &sim.serving),
        (&lab_seen, &lab_serving),
        "the simulator's orchestrator decides as the lab's, in the same order\n{both}"
    );
    // The scenario as designed: local first, then the nearest viable edge, each in its phase.
    assert_eq!(lab_serving, [FOG, "e3"], "where the lab served the PABX\n{both}");
    assert_eq!(
        lab_seen,
        ["move dc -> fog", "move fog -> e3"],
        "the lab's moves\n{both}"
    );
    let at: Vec<u64> = sim.decisions.iter().map(|d| d.at_ms).collect();
    assert!(
        at[0] < PHASE2_MS && at[1] >= PHASE2_MS,
        "each simulated move comes in its phase\n{both}"
    );

    // It agrees because of the load: with the fog router's memory kept low, the PABX stays on
    // it; with e2's kept low, it goes to e2 (2 ms away) instead.
    let mut fog_low = phase2.clone();
    fog_low.get_mut(FOG).unwrap().mem_pct = phase1[FOG].mem_pct;
    let stays = simulate(&topology, &events(&[(0, &phase1), (PHASE2_MS, &fog_low)], &demand));
    assert_eq!(
        (sim_moves(&stays.decisions), &stays.serving),
        (vec!["move dc -> fog".to_string()], &vec![FOG.to_string(); 2]),
        "with the fog router's memory kept at {:.1} %, the PABX stays there\n{}",
        phase1[FOG].mem_pct,
        sim_log(&stays.decisions)
    );
    let (mut e2_low1, mut e2_low2) = (phase1.clone(), phase2.clone());
    e2_low1.get_mut("e2").unwrap().mem_pct = 10.0;
    e2_low2.get_mut("e2").unwrap().mem_pct = 10.0;
    let nearest = simulate(&topology, &events(&[(0, &e2_low1), (PHASE2_MS, &e2_low2)], &demand));
    assert_eq!(
        nearest.serving,
        [FOG, "e2"],
        "with e2's memory at 10 %, the PABX goes to e2\n{}",
        sim_log(&nearest.decisions)
    );
    eprintln!(
        "lab: phase 1 at {t1:?}, phase 2 at {t2:?}; whole test {:?}",
        started.elapsed()
    );
}
