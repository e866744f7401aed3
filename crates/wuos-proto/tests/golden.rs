//! Golden scenarios: `tests/golden/<scenario>/input.jsonl` is replayed through a simulated
//! network of instances (`tests/sim`), and the log of what happened plus the final state of
//! every router is compared with `expected.json`. `WUOS_REGENERATE_GOLDEN=1 cargo test -p
//! wuos-proto --test golden` rewrites the expected files; `expect` lines in the inputs are
//! assertions that hold whatever the expected files say.
//!
//! # Input format
//!
//! One JSON object per line, `op` naming the operation; lines starting with `//` are comments.
//!
//! | op | fields | what |
//! |---|---|---|
//! | `setup` | `topology` (`line:N`, `ring:N`) or `routers` + `links`; optional `hop_limit`, `hello_interval_ms`, `dead_interval_ms`, `telemetry_interval_ms`, `stale_after_intervals`, `delay_ms`, `sample` (periodic samples, default true), `log_floods` (default false), `delays` (`[[a, b, ms]]`) | first line: builds the network, starts every router at t=0 with boot id 1 |
//! | `run` | `until` | runs the network up to that time (ms) |
//! | `link` | `a`, `b`, `up`?, `delay_ms`? | changes a link |
//! | `stop` / `start` | `router`, `boot_id` (start) | crash / start a router with a fresh instance |
//! | `shutdown` | `router` | graceful stop: Input::Shutdown, then stop |
//! | `mute` | `router`, `sampling` | stops or resumes a router's periodic samples |
//! | `sample` | `router`, `cpu`, `mem` | a sample now |
//! | `tick` | `router` | an extra tick now |
//! | `frame` | `router`, `from`, `sender`? (header sender, default `from`), `version`?, `hello`? {`boot_id`?, `dead_interval_ms`?}, `adverts` [{`origin`, `boot_id`, `sequence`, `hop_limit`, `cpu`, `mem`, `timestamp_ms`?}], `withdrawals` [{`origin`, `boot_id`, `hop_limit`, `reason`?}] | a scripted frame delivered to `router` on its link to `from` |
//! | `close` | `router`, `from`, `reason` | the transport reports `router`'s link to `from` closed |
//! | `expect` | `router`, `view`? (origin → hops, exact), `lacks`?, `stale`?, `neighbors`? (id → state), `counters`? (name → value), `boot`? (origin → boot id) | assertions |
//!
//! # Output format
//!
//! `log`: one line per event (`t=MS ROUTER ...`): neighbor up/down, view added/withdrawn,
//! rejected frames, scripted inputs and their outcome, and with `log_floods` every frame sent. `final`: per live router, its view (origin → hops, stale, learned_from), its
//! neighbors' states and its non-zero counters.

mod sim;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::{Value, json};
use sim::{EPOCH_UNIX_NS, Params, Sim};
use wuos_proto::instance::Input;
use wuos_proto::{PROTOCOL_VERSION, pb};

#[derive(Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
enum Op {
    Setup {
        topology: Option<String>,
        routers: Option<Vec<String>>,
        links: Option<Vec<(String, String)>>,
        hop_limit: Option<u32>,
        hello_interval_ms: Option<u32>,
        dead_interval_ms: Option<u32>,
        telemetry_interval_ms: Option<u32>,
        stale_after_intervals: Option<u32>,
        delay_ms: Option<u64>,
        #[serde(default)]
        delays: Vec<(String, String, u64)>,
        sample: Option<bool>,
        log_floods: Option<bool>,
    },
    Run {
        until: u64,
    },
    Link {
        a: String,
        b: String,
        up: Option<bool>,
        delay_ms: Option<u64>,
    },
    Stop {
        router: String,
    },
    Start {
        router: String,
        boot_id: u64,
    },
    Shutdown {
        router: String,
    },
    Mute {
        router: String,
        sampling: bool,
    },
    Sample {
        router: String,
        cpu: f64,
        mem: f64,
    },
    Tick {
        router: String,
    },
    Frame {
        router: String,
        from: String,
        sender: Option<String>,
        version: Option<u32>,
        hello: Option<HelloSpec>,
        #[serde(default)]
        adverts: Vec<AdvertSpec>,
        #[serde(default)]
        withdrawals: Vec<WithdrawSpec>,
    },
    Close {
        router: String,
        from: String,
        reason: String,
    },
    Expect {
        router: String,
        view: Option<BTreeMap<String, u32>>,
        #[serde(default)]
        lacks: Vec<String>,
        #[serde(default)]
        stale: Vec<String>,
        neighbors: Option<BTreeMap<String, String>>,
        #[serde(default)]
        counters: BTreeMap<String, u64>,
        #[serde(default)]
        boot: BTreeMap<String, u64>,
    },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HelloSpec {
    boot_id: Option<u64>,
    dead_interval_ms: Option<u32>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AdvertSpec {
    origin: String,
    #[serde(default = "one")]
    boot_id: u64,
    #[serde(default = "one")]
    sequence: u64,
    #[serde(default = "two")]
    hop_limit: u32,
    #[serde(default)]
    cpu: f64,
    #[serde(default)]
    mem: f64,
    timestamp_ms: Option<i64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WithdrawSpec {
    origin: String,
    #[serde(default = "one")]
    boot_id: u64,
    #[serde(default = "one_u32")]
    hop_limit: u32,
    #[serde(default)]
    reason: String,
}

fn one() -> u64 {
    1
}
fn one_u32() -> u32 {
    1
}
fn two() -> u32 {
    2
}

fn header(sender: &str, version: Option<u32>) -> Option<pb::Header> {
    Some(pb::Header {
        version: version.unwrap_or(PROTOCOL_VERSION),
        sender: sender.into(),
    })
}

/// Replays a scenario; the output document, or the first failed expectation.
fn run(input: &str) -> Result<Value, String> {
    let mut sim: Option<Sim> = None;
    for (n, line) in input.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with("//") {
            continue;
        }
        let at = |e: String| format!("input.jsonl:{}: {e}", n + 1);
        let op: Op = serde_json::from_str(line).map_err(|e| at(e.to_string()))?;
        if let Op::Setup {
            topology,
            routers,
            links,
            hop_limit,
            hello_interval_ms,
            dead_interval_ms,
            telemetry_interval_ms,
            stale_after_intervals,
            delay_ms,
            delays,
            sample,
            log_floods,
        } = op
        {
            let d = Params::default();
            let hello = hello_interval_ms.unwrap_or(d.hello_interval_ms);
            let params = Params {
                hop_limit: hop_limit.unwrap_or(d.hop_limit),
                hello_interval_ms: hello,
                dead_interval_ms: dead_interval_ms.unwrap_or(3 * hello),
                telemetry_interval_ms: telemetry_interval_ms.unwrap_or(d.telemetry_interval_ms),
                stale_after_intervals: stale_after_intervals.unwrap_or(d.stale_after_intervals),
                delay_ms: delay_ms.unwrap_or(d.delay_ms),
                sample: sample.unwrap_or(d.sample),
                log_floods: log_floods.unwrap_or(d.log_floods),
                ..d
            };
            let (routers, links) = match (topology, routers, links) {
                (Some(t), None, None) => sim::topology(&t),
                (None, Some(r), Some(l)) => (r, l),
                _ => return Err(at("setup needs topology, or routers and links".into())),
            };
            let mut s = Sim::new(params, &routers, &links);
            for (a, b, ms) in delays {
                s.link_mut(&a, &b).delay_ms = ms;
            }
            sim = Some(s);
            continue;
        }
        let s = sim
            .as_mut()
            .ok_or_else(|| at("the first operation must be setup".into()))?;
        if let Err(e) = apply(s, op) {
            // WUOS_GOLDEN_LOG=1 shows what happened up to the failure.
            let log = if std::env::var("WUOS_GOLDEN_LOG").is_ok_and(|v| v == "1") {
                format!("\n{}", s.log.join("\n"))
            } else {
                String::new()
            };
            return Err(at(e) + &log);
        }
    }
    let s = sim.ok_or("empty scenario")?;
    Ok(json!({ "log": s.log, "final": final_state(&s) }))
}

fn apply(s: &mut Sim, op: Op) -> Result<(), String> {
    let now = s.now;
    match op {
        Op::Setup { .. } => return Err("setup may only come first".into()),
        Op::Run { until } => {
            if until < now {
                return Err(format!("run until {until}, but it is already {now}"));
            }
            s.run_until(until);
        }
        Op::Link { a, b, up, delay_ms } => {
            let l = s.link_mut(&a, &b);
            if let Some(up) = up {
                l.up = up;
            }
            if let Some(d) = delay_ms {
                l.delay_ms = d;
            }
            let line = format!(
                "t={now} link {a}-{b} {} delay {} ms",
                if l.up { "up" } else { "down" },
                l.delay_ms
            );
            s.log.push(line);
        }
        Op::Stop { router } => {
            s.log.push(format!("t={now} {router} stopped"));
            s.stop(&router);
        }
        Op::Start { router, boot_id } => {
            s.log.push(format!("t={now} {router} started, boot id {boot_id}"));
            s.start(&router, boot_id);
        }
        Op::Shutdown { router } => {
            s.log.push(format!("t={now} {router} shutting down"));
            s.input(&router, Input::Shutdown { now_ms: now });
            s.stop(&router);
        }
        Op::Mute { router, sampling } => {
            s.log.push(format!(
                "t={now} {router} sampling {}",
                if sampling { "on" } else { "off" }
            ));
            s.set_sampling(&router, sampling);
        }
        Op::Sample { router, cpu, mem } => s.sample(&router, cpu, mem),
        Op::Tick { router } => s.input(&router, Input::Tick { now_ms: now }),
        Op::Frame {
            router,
            from,
            sender,
            version,
            hello,
            adverts,
            withdrawals,
        } => {
            let sender = sender.unwrap_or_else(|| from.clone());
            let frame = pb::Frame {
                header: header(&sender, version),
                hello: hello.map(|h| pb::Hello {
                    header: header(&sender, version),
                    role: pb::Role::Edge as i32,
                    boot_id: h.boot_id.unwrap_or(1),
                    hello_interval_ms: s.params.hello_interval_ms,
                    dead_interval_ms: h.dead_interval_ms.unwrap_or(s.params.dead_interval_ms),
                    interface: format!("to-{router}"),
                }),
                adverts: adverts
                    .into_iter()
                    .map(|a| pb::TelemetryAdvert {
                        origin: a.origin,
                        boot_id: a.boot_id,
                        sequence: a.sequence,
                        timestamp_unix_ns: EPOCH_UNIX_NS + a.timestamp_ms.unwrap_or(now as i64) * 1_000_000,
                        hop_limit: a.hop_limit,
                        interval_ms: s.params.telemetry_interval_ms,
                        role: pb::Role::Edge as i32,
                        resources: Some(pb::Resources {
                            cpu_used_pct: a.cpu,
                            mem_used_pct: a.mem,
                            ..Default::default()
                        }),
                        ..Default::default()
                    })
                    .collect(),
                withdrawals: withdrawals
                    .into_iter()
                    .map(|w| pb::Withdraw {
                        origin: w.origin,
                        boot_id: w.boot_id,
                        hop_limit: w.hop_limit,
                        reason: w.reason,
                    })
                    .collect(),
                ..Default::default()
            };
            match s.deliver(&router, &from, &frame) {
                Ok(()) => s
                    .log
                    .push(format!("t={now} {router} took a scripted frame from {from}")),
                Err(e) => s
                    .log
                    .push(format!("t={now} {router} rejected a scripted frame from {from}: {e}")),
            }
        }
        Op::Close { router, from, reason } => {
            s.log
                .push(format!("t={now} {router}'s link to {from} closed: {reason}"));
            s.input(
                &router,
                Input::LinkClosed {
                    now_ms: now,
                    neighbor: from,
                    reason,
                },
            );
        }
        Op::Expect {
            router,
            view,
            lacks,
            stale,
            neighbors,
            counters,
            boot,
        } => {
            let inst = s.instance(&router).ok_or("router is stopped")?;
            let fail = |what: String| Err(format!("t={now} expect {router}: {what}"));
            let got: BTreeMap<String, u32> = inst
                .view()
                .iter()
                .map(|e| (e.advert.origin.clone(), e.hops_at(s.now)))
                .collect();
            if let Some(view) = view
                && view != got
            {
                return fail(format!("view (origin → hops) is {got:?}, expected {view:?}"));
            }
            for o in lacks {
                if got.contains_key(&o) {
                    return fail(format!("{o} is in the view"));
                }
            }
            let cfg = inst.config();
            for o in stale {
                match inst.view().get(&o) {
                    Some(e) if e.is_stale(now, cfg.stale_after_intervals) => {}
                    _ => return fail(format!("{o} is not a stale entry")),
                }
            }
            if let Some(want) = neighbors {
                let got: BTreeMap<String, String> = inst
                    .neighbors()
                    .map(|n| (n.id().to_owned(), n.state_name().to_owned()))
                    .collect();
                if want != got {
                    return fail(format!("neighbors are {got:?}, expected {want:?}"));
                }
            }
            let all = counter_map(inst);
            for (name, want) in counters {
                let got = all.get(&name).copied().unwrap_or(0);
                if got != want {
                    return fail(format!("counter {name} is {got}, expected {want}"));
                }
            }
            for (o, want) in boot {
                let got = inst.view().get(&o).map(|e| e.advert.boot_id);
                if got != Some(want) {
                    return fail(format!("{o}'s boot id is {got:?}, expected {want}"));
                }
            }
        }
    }
    Ok(())
}

fn counter_map(inst: &wuos_proto::Instance) -> BTreeMap<String, u64> {
    inst.counters().to_pb().into_iter().map(|c| (c.name, c.value)).collect()
}

fn final_state(s: &Sim) -> Value {
    let mut out = serde_json::Map::new();
    for id in s.router_names() {
        let Some(inst) = s.instance(&id) else {
            out.insert(id, json!("stopped"));
            continue;
        };
        let stale_after = inst.config().stale_after_intervals;
        let view: serde_json::Map<String, Value> = inst
            .view()
            .iter()
            .map(|e| {
                (
                    e.advert.origin.clone(),
                    json!({ "hops": e.hops_at(s.now), "stale": e.is_stale(s.now, stale_after), "learned_from": e.learned_from }),
                )
            })
            .collect();
        let neighbors: serde_json::Map<String, Value> = inst
            .neighbors()
            .map(|n| (n.id().to_owned(), json!(n.state_name())))
            .collect();
        let counters: serde_json::Map<String, Value> = counter_map(inst)
            .into_iter()
            .filter(|(_, v)| *v != 0)
            .map(|(k, v)| (k, json!(v)))
            .collect();
        out.insert(
            id,
            json!({ "boot_id": inst.config().boot_id, "view": view, "neighbors": neighbors, "counters": counters }),
        );
    }
    Value::Object(out)
}

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

fn check(name: &str) {
    let dir = golden_dir().join(name);
    let input = std::fs::read_to_string(dir.join("input.jsonl")).expect("input.jsonl");
    let got = match run(&input) {
        Ok(v) => v,
        Err(e) => panic!("scenario {name}: {e}"),
    };
    let got_text = serde_json::to_string_pretty(&got).unwrap() + "\n";
    let path = dir.join("expected.json");
    if std::env::var("WUOS_REGENERATE_GOLDEN").is_ok_and(|v| v == "1") {
        std::fs::write(&path, &got_text).unwrap();
        return;
    }
    let want_text = std::fs::read_to_string(&path).unwrap_or_else(|_| {
        panic!(
            "{} is missing; create it with WUOS_REGENERATE_GOLDEN=1 cargo test -p wuos-proto --test golden",
            path.display()
        )
    });
    let want: Value = serde_json::from_str(&want_text).expect("expected.json parses");
    if want != got {
        let (w, g): (Vec<_>, Vec<_>) = (want_text.lines().collect(), got_text.lines().collect());
        let first = w
            .iter()
            .zip(&g)
            .position(|(a, b)| a != b)
            .unwrap_or(w.len().min(g.len()));
        let from = first.saturating_sub(3);
        let show = |v: &[&str]| {
            v.iter()
                .skip(from)
                .take(12)
                .map(|l| format!("  {l}\n"))
                .collect::<String>()
        };
        panic!(
            "scenario {name} differs from expected.json at line {} (regenerate with WUOS_REGENERATE_GOLDEN=1 if the change is intended)\n--- expected\n{}--- got\n{}",
            first + 1,
            show(&w),
            show(&g)
        );
    }
}

macro_rules! scenarios {
    ($($name:ident),* $(,)?) => {
        $(#[test] fn $name() { check(stringify!($name)); })*
        const SCENARIOS: &[&str] = &[$(stringify!($name)),*];
    };
}

scenarios!(
    line6_reach,
    ring_duplicates,
    shorter_path,
    stale_ageing,
    neighbor_loss,
    ring_path_loss,
    restart,
    rejected,
    shutdown,
);

#[test]
fn every_scenario_directory_is_run() {
    let mut dirs: Vec<String> = std::fs::read_dir(golden_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    dirs.sort();
    let mut listed: Vec<String> = SCENARIOS.iter().map(|s| s.to_string()).collect();
    listed.sort();
    assert_eq!(dirs, listed);
}
