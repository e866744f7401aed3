//! The events file (`--events FILE`): what happens to the network during a run.
//!
//! JSON lines, one event per line; blank lines and lines starting with `#` are skipped. Every
//! event has `at` (simulated time: `"10s"`, `"1500ms"`, or a number of milliseconds) and `do`:
//!
//! | `do` | fields | effect |
//! |---|---|---|
//! | `link_down` | `a`, `b` | the link carries nothing (segments are retransmitted until it is back) |
//! | `link_up` | `a`, `b` | it carries again |
//! | `link_set` | `a`, `b`, and any of `delay`, `jitter` (durations), `loss_pct` | its impairment from now on |
//! | `stop` | `router` | the daemon stops: it withdraws itself (`Input::Shutdown`), its streams end |
//! | `crash` | `router` | the router goes silent: neighbors notice after their dead interval |
//! | `start` | `router` | a stopped or crashed router starts again, with a new boot id |
//! | `set_load` | `router`, any of `cpu_pct`, `mem_pct` | pins its figures from now on |
//! | `set_demand` | `router`, `service`, `flows_per_s` | the demand it reports for the service |
//! | `apply_policy` | `orchestrator`, and `file` (relative to the events file) or `text` | the orchestrator's new policy |
//!
//! ```text
//! {"at": "10s", "do": "link_down", "a": "r3", "b": "r4"}
//! {"at": "12s", "do": "link_set", "a": "r1", "b": "r2", "delay": "20ms", "loss_pct": 1.5}
//! {"at": 20000, "do": "crash", "router": "r5"}
//! {"at": "5s", "do": "set_load", "router": "fog1", "mem_pct": 45}
//! {"at": "1s", "do": "apply_policy", "orchestrator": "fog1", "file": "voip.policy"}
//! ```
//!
//! Events at the same time happen in file order. Names are checked against the topology when
//! the file is read: an unknown router or link is an error naming its line.

use std::path::Path;

use serde::Deserialize;
use wuos_model::units::parse_duration;
use wuos_model::{Classify, ErrorClass};
use wuos_policy::{Policy, PolicyError};

use crate::network::{LinkIx, Network, RouterIx};

/// An events file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum EventsError {
    /// The file (or a policy file it names) cannot be read.
    #[error("cannot read {file}")]
    Read {
        /// The path.
        file: String,
        #[source]
        source: std::io::Error,
    },
    /// A line is not a valid event.
    #[error("{file}:{line}: {message}")]
    Invalid {
        file: String,
        line: usize,
        /// What is wrong and what was expected.
        message: String,
    },
    /// A router the topology does not have.
    #[error("{file}:{line}: {field} {name:?} is not a router of the topology")]
    UnknownRouter {
        file: String,
        line: usize,
        /// `router`, `a`, `b` or `orchestrator`.
        field: &'static str,
        name: String,
    },
    /// Two routers without a link between them.
    #[error("{file}:{line}: there is no link between {a} and {b}")]
    UnknownLink {
        file: String,
        line: usize,
        a: String,
        b: String,
    },
    /// A policy that does not parse (`POLICY:LINE:COL: message`).
    #[error("{file}:{line}: {policy}:{error}")]
    Policy {
        file: String,
        line: usize,
        /// The policy's file, or `text`.
        policy: String,
        error: PolicyError,
    },
}

impl Classify for EventsError {
    fn class(&self) -> ErrorClass {
        match self {
            EventsError::Read { source, .. } if source.kind() == std::io::ErrorKind::NotFound => ErrorClass::NotFound,
            EventsError::UnknownRouter { .. } | EventsError::UnknownLink { .. } => ErrorClass::NotFound,
            _ => ErrorClass::BadInput,
        }
    }
}

/// What an event does, resolved against the network.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    LinkDown(LinkIx),
    LinkUp(LinkIx),
    LinkSet {
        link: LinkIx,
        delay_us: Option<u64>,
        jitter_us: Option<u64>,
        loss_pct: Option<f64>,
    },
    Stop(RouterIx),
    Crash(RouterIx),
    Start(RouterIx),
    SetLoad {
        router: RouterIx,
        cpu_pct: Option<f64>,
        mem_pct: Option<f64>,
    },
    SetDemand {
        router: RouterIx,
        service: String,
        flows_per_s: f64,
    },
    ApplyPolicy {
        orchestrator: RouterIx,
        policy: Policy,
        /// Where it came from (a file, or `FILE:LINE` for inline text).
        source: String,
    },
}

/// One event of the file.
#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    /// When, µs of simulated time.
    pub at_us: u64,
    /// Its line, 1-based.
    pub line: usize,
    pub action: Action,
}

/// The events of a file, in time order (file order within a time).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Script {
    /// Where they came from.
    pub source: String,
    pub events: Vec<Event>,
}

/// `at`: a duration or a number of milliseconds.
#[derive(Deserialize)]
#[serde(untagged)]
enum At {
    Ms(u64),
    Text(String),
}

#[derive(Deserialize)]
#[serde(tag = "do", rename_all = "snake_case", deny_unknown_fields)]
enum Line {
    LinkDown {
        a: String,
        b: String,
    },
    LinkUp {
        a: String,
        b: String,
    },
    LinkSet {
        a: String,
        b: String,
        delay: Option<String>,
        jitter: Option<String>,
        loss_pct: Option<f64>,
    },
    Stop {
        router: String,
    },
    Crash {
        router: String,
    },
    Start {
        router: String,
    },
    SetLoad {
        router: String,
        cpu_pct: Option<f64>,
        mem_pct: Option<f64>,
    },
    SetDemand {
        router: String,
        service: String,
        flows_per_s: f64,
    },
    ApplyPolicy {
        orchestrator: String,
        file: Option<String>,
        text: Option<String>,
    },
}

/// Reads the events file at `path`; policy files it names are read relative to its directory.
pub fn load(path: &Path, net: &Network) -> Result<Script, EventsError> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| EventsError::Read {
        file: file.clone(),
        source,
    })?;
    let dir = path.parent().unwrap_or(Path::new("."));
    parse(&text, &file, net, &|name| {
        let p = dir.join(name);
        std::fs::read_to_string(&p).map_err(|source| EventsError::Read {
            file: p.display().to_string(),
            source,
        })
    })
}

/// Parses events `text` from `file` against `net`; `read_policy` reads a policy file named by
/// an event.
pub fn parse(
    text: &str,
    file: &str,
    net: &Network,
    read_policy: &dyn Fn(&str) -> Result<String, EventsError>,
) -> Result<Script, EventsError> {
    let mut events = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let trimmed = raw.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let invalid = |message: String| EventsError::Invalid {
            file: file.to_owned(),
            line,
            message,
        };
        let mut value: serde_json::Value =
            serde_json::from_str(trimmed).map_err(|e| invalid(format!("not a JSON object: {e}")))?;
        let Some(obj) = value.as_object_mut() else {
            return Err(invalid("not a JSON object".into()));
        };
        let at = obj
            .remove("at")
            .ok_or_else(|| invalid("`at` is missing: when the event happens (\"10s\", \"1500ms\" or ms)".into()))?;
        let at_us = match serde_json::from_value::<At>(at) {
            Ok(At::Ms(ms)) => ms.saturating_mul(1000),
            Ok(At::Text(s)) => {
                micros(&s).map_err(|_| invalid(format!("`at` {s:?} is not a duration (\"10s\", \"1500ms\")")))?
            }
            Err(_) => {
                return Err(invalid(
                    "`at` is not a duration (\"10s\", \"1500ms\") or a number of ms".into(),
                ));
            }
        };
        let parsed: Line = serde_json::from_value(value).map_err(|e| {
            invalid(format!(
                "{e}; `do` is one of link_down, link_up, link_set, stop, crash, start, set_load, set_demand, apply_policy"
            ))
        })?;
        let router = |field: &'static str, name: &str| {
            net.index(name).ok_or_else(|| EventsError::UnknownRouter {
                file: file.to_owned(),
                line,
                field,
                name: name.to_owned(),
            })
        };
        let link = |a: &str, b: &str| {
            let (x, y) = (router("a", a)?, router("b", b)?);
            net.link_between(x, y).ok_or_else(|| EventsError::UnknownLink {
                file: file.to_owned(),
                line,
                a: a.to_owned(),
                b: b.to_owned(),
            })
        };
        let duration = |field: &str, s: Option<String>| -> Result<Option<u64>, EventsError> {
            s.map(|s| micros(&s).map_err(|_| invalid(format!("`{field}` {s:?} is not a duration (\"20ms\")"))))
                .transpose()
        };
        let pct = |field: &str, v: Option<f64>, max_exclusive: bool| -> Result<Option<f64>, EventsError> {
            match v {
                Some(p) if !(p >= 0.0 && (p < 100.0 || (!max_exclusive && p == 100.0))) => {
                    let range = if max_exclusive { "0 to less than 100" } else { "0-100" };
                    Err(invalid(format!("`{field}` {p} is outside {range}")))
                }
                v => Ok(v),
            }
        };
        let action = match parsed {
            Line::LinkDown { a, b } => Action::LinkDown(link(&a, &b)?),
            Line::LinkUp { a, b } => Action::LinkUp(link(&a, &b)?),
            Line::LinkSet {
                a,
                b,
                delay,
                jitter,
                loss_pct,
            } => Action::LinkSet {
                link: link(&a, &b)?,
                delay_us: duration("delay", delay)?,
                jitter_us: duration("jitter", jitter)?,
                loss_pct: pct("loss_pct", loss_pct, true)?,
            },
            Line::Stop { router: r } => Action::Stop(router("router", &r)?),
            Line::Crash { router: r } => Action::Crash(router("router", &r)?),
            Line::Start { router: r } => Action::Start(router("router", &r)?),
            Line::SetLoad {
                router: r,
                cpu_pct,
                mem_pct,
            } => Action::SetLoad {
                router: router("router", &r)?,
                cpu_pct: pct("cpu_pct", cpu_pct, false)?,
                mem_pct: pct("mem_pct", mem_pct, false)?,
            },
            Line::SetDemand {
                router: r,
                service,
                flows_per_s,
            } => {
                if !(flows_per_s.is_finite() && flows_per_s >= 0.0) {
                    return Err(invalid(format!("`flows_per_s` {flows_per_s} is not 0 or more")));
                }
                Action::SetDemand {
                    router: router("router", &r)?,
                    service,
                    flows_per_s,
                }
            }
            Line::ApplyPolicy {
                orchestrator,
                file: policy_file,
                text,
            } => {
                let (text, source) = match (policy_file, text) {
                    (Some(f), None) => (read_policy(&f)?, f),
                    (None, Some(t)) => (t, format!("{file}:{line}")),
                    _ => return Err(invalid("apply_policy needs either `file` or `text`".into())),
                };
                let policy = Policy::parse(&text).map_err(|error| EventsError::Policy {
                    file: file.to_owned(),
                    line,
                    policy: source.clone(),
                    error,
                })?;
                Action::ApplyPolicy {
                    orchestrator: router("orchestrator", &orchestrator)?,
                    policy,
                    source,
                }
            }
        };
        events.push(Event { at_us, line, action });
    }
    events.sort_by_key(|e| e.at_us);
    Ok(Script {
        source: file.to_owned(),
        events,
    })
}

fn micros(s: &str) -> Result<u64, wuos_model::UnitError> {
    parse_duration(s).map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::network::LinkDefaults;
    use wuos_model::generate::{Generator, generate};

    fn net() -> Network {
        let g: Generator = "line:4".parse().unwrap();
        Network::new(
            &generate(&g, 1),
            LinkDefaults {
                delay_us: 1000,
                loss_pct: 0.0,
            },
        )
    }

    fn no_files(name: &str) -> Result<String, EventsError> {
        match name {
            "p.policy" => Ok("service web { match tcp dport 80 to 10.255.0.20 place local when cpu.used_pct < 50 otherwise datacenter }".into()),
            _ => Err(EventsError::Read {
                file: name.into(),
                source: std::io::Error::from(std::io::ErrorKind::NotFound),
            }),
        }
    }

    fn parse_text(text: &str) -> Result<Script, EventsError> {
        parse(text, "ev.jsonl", &net(), &no_files)
    }

    #[test]
    fn every_kind_parses_and_events_are_sorted_stably() {
        let text = r#"
# a comment
{"at": "3s", "do": "link_down", "a": "r2", "b": "r3"}
{"at": 1000, "do": "crash", "router": "r4"}
{"at": "1s", "do": "start", "router": "r4"}
{"at": "4s", "do": "link_set", "a": "r3", "b": "r2", "delay": "20ms", "jitter": "1ms", "loss_pct": 1.5}
{"at": "5s", "do": "set_load", "router": "r1", "mem_pct": 45}
{"at": "6s", "do": "set_demand", "router": "r1", "service": "web", "flows_per_s": 2.5}
{"at": "7s", "do": "apply_policy", "orchestrator": "r2", "file": "p.policy"}
{"at": "8s", "do": "stop", "router": "r1"}
{"at": "9s", "do": "link_up", "a": "r2", "b": "r3"}
"#;
        let s = parse_text(text).unwrap();
        let kinds: Vec<(u64, usize)> = s.events.iter().map(|e| (e.at_us, e.line)).collect();
        assert_eq!(
            kinds,
            [
                (1_000_000, 4),
                (1_000_000, 5),
                (3_000_000, 3),
                (4_000_000, 6),
                (5_000_000, 7),
                (6_000_000, 8),
                (7_000_000, 9),
                (8_000_000, 10),
                (9_000_000, 11)
            ]
        );
        assert_eq!(s.events[0].action, Action::Crash(RouterIx(3)));
        assert_eq!(
            s.events[3].action,
            Action::LinkSet {
                link: LinkIx(1),
                delay_us: Some(20_000),
                jitter_us: Some(1000),
                loss_pct: Some(1.5)
            }
        );
        assert_eq!(
            s.events[4].action,
            Action::SetLoad {
                router: RouterIx(0),
                cpu_pct: None,
                mem_pct: Some(45.0)
            }
        );
        match &s.events[6].action {
            Action::ApplyPolicy {
                orchestrator,
                policy,
                source,
            } => {
                assert_eq!((*orchestrator, source.as_str()), (RouterIx(1), "p.policy"));
                assert_eq!(policy.services[0].name, "web");
            }
            other => panic!("expected apply_policy, got {other:?}"),
        }
    }

    #[test]
    fn errors_name_the_line_and_the_fix() {
        let e = |text: &str| parse_text(text).unwrap_err().to_string();
        assert_eq!(
            e("{\"at\": \"1s\", \"do\": \"crash\", \"router\": \"r9\"}"),
            "ev.jsonl:1: router \"r9\" is not a router of the topology"
        );
        assert_eq!(
            e("\n{\"at\": \"1s\", \"do\": \"link_down\", \"a\": \"r1\", \"b\": \"r3\"}"),
            "ev.jsonl:2: there is no link between r1 and r3"
        );
        assert_eq!(
            e("{\"do\": \"crash\", \"router\": \"r1\"}"),
            "ev.jsonl:1: `at` is missing: when the event happens (\"10s\", \"1500ms\" or ms)"
        );
        assert_eq!(
            e("{\"at\": \"soon\", \"do\": \"crash\", \"router\": \"r1\"}"),
            "ev.jsonl:1: `at` \"soon\" is not a duration (\"10s\", \"1500ms\")"
        );
        assert!(
            e("{\"at\": \"1s\", \"do\": \"explode\", \"router\": \"r1\"}")
                .starts_with("ev.jsonl:1: unknown variant `explode`"),
            "{}",
            e("{\"at\": \"1s\", \"do\": \"explode\", \"router\": \"r1\"}")
        );
        assert!(
            e("{\"at\": \"1s\", \"do\": \"crash\", \"router\": \"r1\", \"when\": 3}").contains("unknown field `when`")
        );
        assert_eq!(
            e("{\"at\": \"1s\", \"do\": \"set_load\", \"router\": \"r1\", \"cpu_pct\": 120}"),
            "ev.jsonl:1: `cpu_pct` 120 is outside 0-100"
        );
        assert_eq!(
            e("{\"at\": \"1s\", \"do\": \"apply_policy\", \"orchestrator\": \"r1\"}"),
            "ev.jsonl:1: apply_policy needs either `file` or `text`"
        );
        assert_eq!(
            e("{\"at\": \"1s\", \"do\": \"apply_policy\", \"orchestrator\": \"r1\", \"text\": \"service\"}"),
            "ev.jsonl:1: ev.jsonl:1:1:8: expected a service name (a letter, then letters, digits, _ . -), found end of file"
        );
        let missing =
            parse_text("{\"at\": \"1s\", \"do\": \"apply_policy\", \"orchestrator\": \"r1\", \"file\": \"x.policy\"}")
                .unwrap_err();
        assert_eq!(missing.class(), ErrorClass::NotFound);
        assert_eq!(e("[1]"), "ev.jsonl:1: not a JSON object");
    }
}
