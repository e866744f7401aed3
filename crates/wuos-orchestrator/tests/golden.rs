//! Golden scenarios: `tests/golden/<scenario>/input.txt` is replayed through an
//! [`Orchestrator`], and every input that produced outputs is written, with its outputs, to a
//! text compared with `expected.txt`. `UPDATE_GOLDEN=1 cargo test -p wuos-orchestrator --test
//! golden` rewrites the expected files; `expect` and `never` lines are assertions that hold
//! whatever the expected files say.
//!
//! # Input format
//!
//! One command per line; `#` starts a comment. Untimed lines come first:
//!
//! | line | what |
//! |---|---|
//! | `config KEY=VALUE ...` | [`Config`] fields (`local` and `datacenter` required; `region=on\|off`) |
//! | `policy FILE` | the policy, a file next to `input.txt` |
//! | `router NAME hops=N role=ROLE [FIGURE=V ...] [region=ORCH] [stale]` | a candidate of the telemetry table, and the region its advert names |
//! | `never TEXT` | no output line contains TEXT |
//!
//! Timed lines are `at T COMMAND`, where `T` is a time in ms or `A..B/STEP` (every STEP from A
//! to B inclusive). They run in time order, lines of the same time in file order:
//!
//! | command | input |
//! |---|---|
//! | `sample` | `Telemetry` with the table as it is |
//! | `set NAME [FIGURE=V ...] [region=ORCH] [stale] [fresh]` | changes the table (`V` = `-` for missing, `region=-` for none) |
//! | `add NAME hops=N role=ROLE ...` / `remove NAME` | adds or removes a candidate |
//! | `tick` | `Tick` |
//! | `demand SERVICE ROUTER FLOWS` | `Demand` |
//! | `ready SERVICE ROUTER` | `InstanceReady` |
//! | `failed SERVICE ROUTER REASON...` | `InstanceFailed` |
//! | `policy FILE` | `ReplacePolicy` |
//! | `restore [placed=S@R ...] [ready=S@R ...] [unready=S@R ...]` | `Restore`: S was served at R before the restart; R advertises an instance of S, ready or not (with the table's regions) |
//! | `expect SERVICE PHASE...` | the service's phase starts with PHASE (`stable at local`, `starting r2`, `gone`) |
//!
//! Figures: `latency` (ms), `cpu`, `mem` (used %), `cores`, `mib` (free), `cpu_psi`,
//! `mem_psi`, `io_psi`.
//!
//! # Output format
//!
//! `t=T COMMAND` for each input with outputs, then each output indented by two spaces, as its
//! `Display` (the daemon's log line).

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use wuos_orchestrator::{
    AdvertisedInstance, Candidate, Config, Figures, Input, Orchestrator, Output, Policy, RegionView, Role,
};

enum Cmd {
    Sample,
    Tick,
    Set(String, Vec<String>),
    Add(Candidate, Option<String>),
    Remove(String),
    Demand(String, String, f64),
    Ready(String, String),
    Failed(String, String, String),
    Policy(String),
    Restore(BTreeMap<String, String>, Vec<AdvertisedInstance>),
    Expect(String, String),
}

struct Event {
    at: u64,
    text: String,
    line: usize,
    cmd: Cmd,
}

struct Script {
    config: Config,
    policy: Policy,
    table: Vec<Candidate>,
    regions: BTreeMap<String, String>,
    events: Vec<Event>,
    never: Vec<String>,
}

fn scenario_dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden").join(name)
}

fn load_policy(dir: &Path, file: &str) -> Policy {
    let path = dir.join(file);
    let text = fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    Policy::parse(&text).unwrap_or_else(|e| panic!("{}:{e}", path.display()))
}

fn number<T: std::str::FromStr>(what: &str, v: &str, line: usize) -> T {
    v.parse()
        .unwrap_or_else(|_| panic!("line {line}: {what} {v:?} is not a number"))
}

/// Applies `KEY=VALUE` / `stale` / `fresh` words to a candidate and its advertised region.
fn apply(c: &mut Candidate, region: &mut Option<String>, words: &[String], line: usize) {
    for w in words {
        match w.as_str() {
            "stale" => c.stale = true,
            "fresh" => c.stale = false,
            _ => {
                let (k, v) = w
                    .split_once('=')
                    .unwrap_or_else(|| panic!("line {line}: expected KEY=VALUE, found {w:?}"));
                let f = |v: &str| (v != "-").then(|| number::<f64>(k, v, line));
                match k {
                    "region" => *region = (v != "-").then(|| v.to_string()),
                    "hops" => c.hops = number(k, v, line),
                    "role" => {
                        c.role = Role::ALL
                            .into_iter()
                            .find(|r| r.as_str() == v)
                            .unwrap_or_else(|| panic!("line {line}: unknown role {v:?}"))
                    }
                    "latency" => c.latency_ms = f(v),
                    "cpu" => c.figures.cpu_used_pct = f(v),
                    "mem" => c.figures.mem_used_pct = f(v),
                    "cores" => c.figures.cpu_free_cores = f(v),
                    "mib" => c.figures.mem_free_mib = f(v),
                    "cpu_psi" => c.figures.cpu_pressure = f(v),
                    "mem_psi" => c.figures.mem_pressure = f(v),
                    "io_psi" => c.figures.io_pressure = f(v),
                    _ => panic!("line {line}: unknown figure {k:?}"),
                }
            }
        }
    }
}

fn candidate(words: &[String], line: usize) -> (Candidate, Option<String>) {
    let (name, rest) = words
        .split_first()
        .unwrap_or_else(|| panic!("line {line}: a router needs a name"));
    let mut c = Candidate {
        name: name.clone(),
        hops: u32::MAX,
        latency_ms: None,
        role: Role::Edge,
        stale: false,
        figures: Figures::default(),
    };
    let mut region = None;
    apply(&mut c, &mut region, rest, line);
    assert!(c.hops != u32::MAX, "line {line}: router {name} needs hops=N");
    (c, region)
}

/// The regions of the table, as a sample carries them.
fn region_view(regions: &BTreeMap<String, String>) -> RegionView {
    RegionView {
        members: regions.clone(),
        placements: BTreeMap::new(),
    }
}

/// `placed=S@R`, `ready=S@R`, `unready=S@R` words: the placements and instances of a restore.
fn restore(words: &[String], line: usize) -> Cmd {
    let mut placements = BTreeMap::new();
    let mut instances = Vec::new();
    for w in words {
        let parsed = w.split_once('=').and_then(|(k, v)| Some((k, v.split_once('@')?)));
        let Some((k, (service, router))) = parsed else {
            panic!("line {line}: expected placed=, ready= or unready=SERVICE@ROUTER, found {w:?}");
        };
        let (service, router) = (service.to_string(), router.to_string());
        match k {
            "placed" => {
                placements.insert(service, router);
            }
            "ready" | "unready" => instances.push(AdvertisedInstance {
                service,
                router,
                ready: k == "ready",
            }),
            _ => panic!("line {line}: unknown restore word {k:?} (placed, ready or unready)"),
        }
    }
    Cmd::Restore(placements, instances)
}

/// `T` or `A..B/STEP`.
fn times(spec: &str, line: usize) -> Vec<u64> {
    match spec.split_once("..") {
        None => vec![number("time", spec, line)],
        Some((a, rest)) => {
            let (b, step) = rest
                .split_once('/')
                .unwrap_or_else(|| panic!("line {line}: a range needs a step: A..B/STEP"));
            let (a, b, step): (u64, u64, u64) = (
                number("time", a, line),
                number("time", b, line),
                number("step", step, line),
            );
            assert!(step > 0, "line {line}: step 0");
            (a..=b).step_by(step as usize).collect()
        }
    }
}

fn parse_script(dir: &Path) -> Script {
    let path = dir.join("input.txt");
    let text = fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut config = None;
    let mut policy = None;
    let mut table = Vec::new();
    let mut regions = BTreeMap::new();
    let mut events = Vec::new();
    let mut never = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let body = raw.split('#').next().unwrap_or("").trim();
        if body.is_empty() {
            continue;
        }
        let words: Vec<String> = body.split_whitespace().map(str::to_string).collect();
        match words[0].as_str() {
            "config" => {
                let mut c = Config::new("", "");
                for w in &words[1..] {
                    let (k, v) = w
                        .split_once('=')
                        .unwrap_or_else(|| panic!("line {line}: expected KEY=VALUE"));
                    match k {
                        "local" => c.local = v.into(),
                        "datacenter" => c.datacenter = v.into(),
                        "confirm_samples" => c.confirm_samples = number(k, v, line),
                        "ready_timeout_ms" => c.ready_timeout_ms = number(k, v, line),
                        "drain_ms" => c.drain_ms = number(k, v, line),
                        "min_demand_flows" => c.min_demand_flows = number(k, v, line),
                        "demand_window_ms" => c.demand_window_ms = number(k, v, line),
                        "max_staleness_ms" => c.max_staleness_ms = number(k, v, line),
                        "failure_backoff_ms" => c.failure_backoff_ms = number(k, v, line),
                        "region" => {
                            c.region = match v {
                                "on" => true,
                                "off" => false,
                                _ => panic!("line {line}: region is on or off, not {v:?}"),
                            }
                        }
                        _ => panic!("line {line}: unknown config key {k:?}"),
                    }
                }
                c.validate().unwrap_or_else(|e| panic!("line {line}: {e}"));
                config = Some(c);
            }
            "policy" => policy = Some(load_policy(dir, &words[1])),
            "router" => {
                let (c, region) = candidate(&words[1..], line);
                if let Some(r) = region {
                    regions.insert(c.name.clone(), r);
                }
                table.push(c);
            }
            "never" => never.push(body["never".len()..].trim().to_string()),
            "at" => {
                let spec = words.get(1).unwrap_or_else(|| panic!("line {line}: at what time?"));
                let rest = &words[2..];
                let text = rest.join(" ");
                let arg = |k: usize| {
                    rest.get(k)
                        .cloned()
                        .unwrap_or_else(|| panic!("line {line}: {text:?} needs more arguments"))
                };
                for at in times(spec, line) {
                    let cmd = match rest.first().map(String::as_str) {
                        Some("sample") => Cmd::Sample,
                        Some("tick") => Cmd::Tick,
                        Some("set") => Cmd::Set(arg(1), rest[2..].to_vec()),
                        Some("add") => {
                            let (c, region) = candidate(&rest[1..], line);
                            Cmd::Add(c, region)
                        }
                        Some("remove") => Cmd::Remove(arg(1)),
                        Some("demand") => Cmd::Demand(arg(1), arg(2), number("flows", &arg(3), line)),
                        Some("ready") => Cmd::Ready(arg(1), arg(2)),
                        Some("failed") => Cmd::Failed(arg(1), arg(2), rest[3..].join(" ")),
                        Some("policy") => Cmd::Policy(arg(1)),
                        Some("restore") => restore(&rest[1..], line),
                        Some("expect") => Cmd::Expect(arg(1), rest[2..].join(" ")),
                        other => panic!("line {line}: unknown command {other:?}"),
                    };
                    events.push(Event {
                        at,
                        text: text.clone(),
                        line,
                        cmd,
                    });
                }
            }
            other => panic!("line {line}: unknown line {other:?}"),
        }
    }
    events.sort_by_key(|e| e.at); // stable: same time keeps file order
    Script {
        config: config.unwrap_or_else(|| panic!("{}: no config line", path.display())),
        policy: policy.unwrap_or_else(|| panic!("{}: no policy line", path.display())),
        table,
        regions,
        events,
        never,
    }
}

/// Runs a scenario; returns the output text.
fn run(dir: &Path) -> String {
    let script = parse_script(dir);
    let mut orch = Orchestrator::new(script.config, script.policy);
    let mut table = script.table;
    let mut regions = script.regions;
    let mut log = String::new();
    for e in script.events {
        let line = e.line;
        let input = match e.cmd {
            Cmd::Sample => Input::Telemetry {
                now_ms: e.at,
                candidates: table.clone(),
                regions: region_view(&regions),
            },
            Cmd::Tick => Input::Tick { now_ms: e.at },
            Cmd::Set(name, words) => {
                let c = table
                    .iter_mut()
                    .find(|c| c.name == name)
                    .unwrap_or_else(|| panic!("line {line}: no router {name}"));
                let mut region = regions.get(&name).cloned();
                apply(c, &mut region, &words, line);
                match region {
                    Some(r) => regions.insert(name, r),
                    None => regions.remove(&name),
                };
                continue;
            }
            Cmd::Add(c, region) => {
                if let Some(r) = region {
                    regions.insert(c.name.clone(), r);
                }
                table.push(c);
                continue;
            }
            Cmd::Remove(name) => {
                table.retain(|c| c.name != name);
                regions.remove(&name);
                continue;
            }
            Cmd::Demand(service, router, flows) => Input::Demand {
                now_ms: e.at,
                service,
                router,
                flows,
            },
            Cmd::Ready(service, router) => Input::InstanceReady { service, router },
            Cmd::Failed(service, router, reason) => Input::InstanceFailed {
                service,
                router,
                reason,
            },
            Cmd::Policy(file) => Input::ReplacePolicy(load_policy(dir, &file)),
            Cmd::Restore(placements, instances) => Input::Restore {
                now_ms: e.at,
                placements,
                instances,
                regions: region_view(&regions),
            },
            Cmd::Expect(service, want) => {
                let got = orch
                    .service(&service)
                    .map_or_else(|| "gone".to_string(), |s| s.phase().to_string());
                assert!(
                    got.starts_with(&want),
                    "{}: line {line} (t={}): expected {service} to be {want:?}, it is {got:?}",
                    dir.display(),
                    e.at
                );
                continue;
            }
        };
        let outputs: Vec<Output> = orch.handle(input);
        if !outputs.is_empty() {
            log.push_str(&format!("t={} {}\n", e.at, e.text));
            for o in &outputs {
                log.push_str(&format!("  {o}\n"));
            }
        }
    }
    for text in &script.never {
        if let Some(l) = log.lines().find(|l| l.contains(text.as_str())) {
            panic!("{}: expected no output containing {text:?}, found {l:?}", dir.display());
        }
    }
    log
}

fn golden(name: &str) {
    let dir = scenario_dir(name);
    let got = run(&dir);
    let path = dir.join("expected.txt");
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        fs::write(&path, &got).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        return;
    }
    let want = fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (run with UPDATE_GOLDEN=1 to create it)", path.display()));
    if got != want {
        let first = got
            .lines()
            .zip(want.lines())
            .position(|(a, b)| a != b)
            .unwrap_or_else(|| got.lines().count().min(want.lines().count()));
        panic!(
            "{name}: outputs differ from {} at line {} (UPDATE_GOLDEN=1 rewrites it after review)\n\
             expected: {:?}\n     got: {:?}\n--- full output ---\n{got}",
            path.display(),
            first + 1,
            want.lines().nth(first),
            got.lines().nth(first),
        );
    }
}

macro_rules! scenarios {
    ($($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                golden(stringify!($name));
            }
        )*

        #[test]
        fn every_scenario_directory_is_run() {
            let listed = [$(stringify!($name)),*];
            let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
            for entry in fs::read_dir(&root).unwrap() {
                let name = entry.unwrap().file_name().into_string().unwrap();
                assert!(listed.contains(&name.as_str()), "tests/golden/{name} is not listed in golden.rs");
            }
        }
    };
}

scenarios!(
    a_local_viable,
    b_nearby_lowest_latency,
    c_nothing_viable,
    d_flapping,
    e_stale_neighbor,
    f_start_failed,
    g_ready_timeout,
    h_sticky_neighbors,
    i_demand,
    j_confirm_samples,
    k_restore_adopted,
    l_restore_instance_gone,
    m_restore_orphan,
    n_restore_nothing_persisted,
    o_restore_not_ready,
    p_region_confined,
    q_region_restore,
);
