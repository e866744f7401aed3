//! Property tests: the canonical text of any policy parses back to it; the parser never panics;
//! the evaluator and `viable_rule` agree.

use std::net::Ipv4Addr;

use proptest::prelude::*;
use wuos_policy::{
    Candidate, CmpOp, Cond, EvalOptions, Fallback, Figures, Match, Metric, Policy, Pos, Prefer, Proto, Role, Rule,
    Service, Target,
};

fn metric() -> impl Strategy<Value = Metric> {
    prop::sample::select(Metric::ALL.to_vec())
}

fn op() -> impl Strategy<Value = CmpOp> {
    prop::sample::select(CmpOp::ALL.to_vec())
}

fn cond() -> impl Strategy<Value = Cond> {
    let leaf = (metric(), op(), 0u32..200_000, 0u32..100).prop_map(|(metric, op, a, b)| Cond::Compare {
        metric,
        op,
        value: f64::from(a) + f64::from(b) / 100.0,
    });
    leaf.prop_recursive(4, 24, 4, |inner| {
        prop_oneof![
            inner.clone().prop_map(|c| Cond::Not(Box::new(c))),
            prop::collection::vec(inner.clone(), 2..4).prop_map(Cond::And),
            prop::collection::vec(inner, 2..4).prop_map(Cond::Or),
        ]
    })
}

fn router_name() -> impl Strategy<Value = String> {
    "[a-z0-9_][a-z0-9_.-]{0,8}"
}

fn rule() -> impl Strategy<Value = Rule> {
    let target = prop_oneof![
        Just(Target::Local),
        (1u32..=8).prop_map(|within_hops| Target::Nearby { within_hops }),
        router_name().prop_map(Target::At),
    ];
    let prefer = prop::option::of(prop::sample::select(Prefer::ALL.to_vec()));
    (target, cond(), prefer).prop_map(|(target, when, prefer)| Rule {
        prefer: if matches!(target, Target::Nearby { .. }) {
            prefer
        } else {
            None
        },
        target,
        when,
        text: String::new(),
        at: Pos::default(),
    })
}

fn fallback() -> impl Strategy<Value = Fallback> {
    prop_oneof![
        Just(Fallback::Datacenter),
        Just(Fallback::Local),
        router_name().prop_map(Fallback::At),
    ]
}

fn service(index: usize) -> impl Strategy<Value = Service> {
    (
        "[a-z][a-z0-9_-]{0,6}",
        prop::collection::vec(any::<bool>(), 1..4),
        prop::option::of(any::<u8>()),
        prop::collection::vec(rule(), 0..4),
        fallback(),
        0u64..=3_600_000,
    )
        .prop_map(move |(name, protos, vip, rules, fallback, hold_ms)| Service {
            name: format!("{name}{index}"),
            at: Pos::default(),
            matches: protos
                .iter()
                .enumerate()
                .map(|(j, udp)| Match {
                    proto: if *udp { Proto::Udp } else { Proto::Tcp },
                    // Distinct ports: no overlaps.
                    dport: (index * 10 + j + 1) as u16,
                    to: vip.map(|v| Ipv4Addr::new(10, 255, 0, v)),
                    at: Pos::default(),
                })
                .collect(),
            rules,
            fallback,
            fallback_at: Pos::default(),
            hold_ms,
        })
}

fn policy() -> impl Strategy<Value = Policy> {
    (1usize..4)
        .prop_flat_map(|n| (0..n).map(service).collect::<Vec<_>>())
        .prop_map(|services| Policy { services })
}

/// The policy without source positions and texts.
fn bare(mut p: Policy) -> Policy {
    for s in &mut p.services {
        s.at = Pos::default();
        s.fallback_at = Pos::default();
        for m in &mut s.matches {
            m.at = Pos::default();
        }
        for r in &mut s.rules {
            r.at = Pos::default();
            r.text.clear();
        }
    }
    p
}

fn candidates() -> impl Strategy<Value = Vec<Candidate>> {
    let fig = || prop::option::of((0u32..1000).prop_map(|v| f64::from(v) / 10.0));
    let one = (
        1u32..6,
        prop::option::of(0u32..50),
        prop::sample::select(Role::ALL.to_vec()),
        prop::bool::weighted(0.2),
        (fig(), fig(), fig(), fig(), fig(), fig(), fig()),
    );
    prop::collection::vec(one, 0..12).prop_map(|v| {
        let mut out = vec![Candidate {
            name: "self".into(),
            hops: 0,
            latency_ms: Some(0.0),
            role: Role::Fog,
            stale: false,
            figures: Figures {
                cpu_used_pct: Some(20.0),
                mem_used_pct: Some(25.0),
                ..Figures::default()
            },
        }];
        for (i, (hops, latency, role, stale, f)) in v.into_iter().enumerate() {
            out.push(Candidate {
                name: format!("r{i}"),
                hops,
                latency_ms: latency.map(f64::from),
                role,
                stale,
                figures: Figures {
                    cpu_used_pct: f.0,
                    mem_used_pct: f.1,
                    cpu_free_cores: f.2,
                    mem_free_mib: f.3,
                    cpu_pressure: f.4,
                    mem_pressure: f.5,
                    io_pressure: f.6,
                },
            });
        }
        out
    })
}

proptest! {
    #[test]
    fn canonical_text_round_trips(p in policy()) {
        let text = p.to_string();
        let parsed = Policy::parse(&text).map_err(|e| TestCaseError::fail(format!("{e}\n{text}")))?;
        prop_assert_eq!(parsed.to_string(), text.clone());
        prop_assert_eq!(bare(parsed), p, "{}", text);
    }

    #[test]
    fn parser_never_panics_on_any_text(s in "\\PC{0,200}") {
        let _ = Policy::parse(&s);
    }

    #[test]
    fn parser_never_panics_on_token_soup(words in prop::collection::vec(prop::sample::select(vec![
        "service", "s", "{", "}", "match", "udp", "tcp", "dport", "5060", "to", "10.255.0.1", "place",
        "local", "nearby", "within", "2", "hops", "at", "r1", "when", "mem.used_pct", "<", ">=", "!=", "30",
        "1.5", "and", "or", "not", "(", ")", "prefer", "lowest", "latency", "fewest", "otherwise",
        "datacenter", "hold", "10s", "#", "\n", "=", "@",
    ]), 0..60)) {
        let _ = Policy::parse(&words.join(" "));
    }

    #[test]
    fn evaluation_agrees_with_viable_rule(p in policy(), cs in candidates()) {
        for s in &p.services {
            let e = s.evaluate(&cs);
            let v = s.viable_rule(&cs, &e.placement, &EvalOptions::default());
            prop_assert_eq!(v, Some(e.rule), "{} on {:?}: {}", s, cs, e.explanation);
            if let Some(c) = e.candidate() {
                prop_assert!(!c.stale, "a stale candidate was chosen");
                prop_assert!(!e.explanation.comparisons().is_empty(), "a condition has comparisons");
            }
            // Rendering never panics and names the winning rule.
            let text = e.explanation.to_string();
            if e.rule == wuos_policy::RuleRef::Otherwise {
                prop_assert!(text.ends_with(&s.fallback.to_string()), "{}", text);
            }
        }
    }
}
