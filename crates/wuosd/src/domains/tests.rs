//! The domains manager against the recording fake backend: no root needed.

use std::collections::BTreeMap;

use wuos_model::lifecycle::{Failure, Health, State};
use wuos_southbound::domain::fake::{Call, Op};

use super::*;
use crate::testing::Fixture;

fn view<'a>(s: &'a DomainsSnapshot, name: &str) -> &'a DomainView {
    s.domains.iter().find(|d| d.name == name).expect("the domain is listed")
}

/// The regression of issue 9: a new instance whose probe never passes is never ready, and a
/// destroyed instance's verdict is not inherited by the next one.
#[test]
fn an_instance_is_ready_only_once_its_probe_passed_and_a_new_one_inherits_nothing() {
    let f = Fixture::new();
    let mut d = f.open(0);
    d.ensure("echo", true).unwrap();
    let s = d.snapshot();
    let echo = view(&s, "echo");
    assert_eq!(echo.state, State::Running);
    assert_eq!(echo.health.as_ref().map(|h| h.0), Some(Health::Starting));
    assert!(!echo.ready, "running but never probed: not ready");
    // Probes fail for a while: never ready.
    let probes = d.due_probes(0);
    assert_eq!(probes.len(), 1);
    assert_eq!(probes[0].addr, Ipv4Addr::new(10, 253, 0, 2));
    let pid = probes[0].pid;
    d.record_probe("echo", pid, 0, Err("udp 10.253.0.2:7: no reply".into()));
    assert!(!view(&d.snapshot(), "echo").ready);
    assert!(
        d.due_probes(50).is_empty(),
        "starting instances are probed every 100 ms"
    );
    assert_eq!(d.due_probes(100).len(), 1);
    d.record_probe("echo", pid, 100, Ok(()));
    assert!(view(&d.snapshot(), "echo").ready, "ready once a probe passed");
    // Destroyed and started again: starting over, not ready.
    d.ensure("echo", false).unwrap();
    assert!(d.snapshot().domains.is_empty());
    d.ensure("echo", true).unwrap();
    let again = d.snapshot();
    assert!(!view(&again, "echo").ready, "a new instance does not inherit 'healthy'");
    // An outcome about the old incarnation is dropped.
    let new_pid = view(&again, "echo").pid;
    assert_ne!(new_pid, pid);
    d.record_probe("echo", pid, 200, Ok(()));
    assert!(!view(&d.snapshot(), "echo").ready);
}

#[test]
fn a_probe_that_never_passes_applies_the_restart_policy_then_fails_the_domain() {
    let f = Fixture::new();
    let mut d = f.open(0);
    d.ensure("echo", true).unwrap();
    f.backend.take_calls();
    let pid = view(&d.snapshot(), "echo").pid;
    // retries = 2 at a 5 s interval: counted at 0 and 5000 ms.
    d.record_probe("echo", pid, 0, Err("no reply".into()));
    d.record_probe("echo", pid, 5000, Err("no reply".into()));
    let s = d.snapshot();
    let echo = view(&s, "echo");
    assert_eq!(
        (echo.state.clone(), echo.restarts),
        (State::Running, 1),
        "on-failure:1 restarts once"
    );
    assert!(!echo.ready);
    let calls = f.backend.take_calls();
    assert!(
        calls.iter().any(|c| matches!(c, Call::Start(_))),
        "restarted: {calls:?}"
    );
    let pid = echo.pid;
    d.record_probe("echo", pid, 10_000, Err("no reply".into()));
    d.record_probe("echo", pid, 15_000, Err("still no reply".into()));
    let s = d.snapshot();
    let echo = view(&s, "echo");
    assert_eq!(
        echo.state,
        State::Failed {
            reason: Failure::Unhealthy {
                detail: "still no reply".into()
            },
            gave_up_after: Some(1)
        }
    );
    assert!(echo.health.is_none() && !echo.ready);
}

#[test]
fn services_without_a_probe_are_ready_once_running_and_an_exit_is_a_typed_failure() {
    let f = Fixture::new();
    let mut d = f.open(0);
    let v = d.start_service("plain", "", &BTreeMap::new()).unwrap();
    assert_eq!(v.name, "plain-1");
    assert!(v.ready, "no probe: ready once running");
    assert!(f.backend.exit("plain-1", Some(3)));
    d.supervise();
    let s = d.snapshot();
    assert_eq!(
        view(&s, "plain-1").state,
        State::Failed {
            reason: Failure::Exited { code: 3 },
            gave_up_after: None
        }
    );
}

#[test]
fn refusals_are_typed_and_classified_and_change_nothing() {
    let f = Fixture::new();
    let mut d = f.open(0);
    let e = d.start_service("nosuch", "", &BTreeMap::new()).unwrap_err();
    assert_eq!(e.class(), ErrorClass::NotFound, "{e}");
    d.start_service("plain", "p", &BTreeMap::new()).unwrap();
    let e = d.start_service("plain", "p", &BTreeMap::new()).unwrap_err();
    assert_eq!(e.class(), ErrorClass::Conflict, "{e}");
    d.stop("p").unwrap();
    let e = d.pause("p").unwrap_err();
    assert_eq!(e.to_string(), "cannot pause domain p: it is stopped");
    assert_eq!(e.class(), ErrorClass::Conflict);
    let e = d.pause("nope").unwrap_err();
    assert_eq!(e.class(), ErrorClass::NotFound);
    // 256 MiB of budget: 32 MiB each; the 9th does not fit.
    for i in 0..7 {
        d.start_service("plain", &format!("x{i}"), &BTreeMap::new()).unwrap();
    }
    let e = d.start_service("plain", "big", &BTreeMap::new()).unwrap_err();
    assert_eq!(e.class(), ErrorClass::BadInput, "admission: {e}");
    assert!(e.to_string().contains("memory"), "{e}");
    assert_eq!(d.report().domains.len(), 8, "nothing was added or lost");
    // A backend failure on start is internal and leaves no domain behind.
    f.backend.fail_next(Op::Start, "wuos.t.r1.y", "spawn failed");
    d.destroy("x0").unwrap();
    let e = d.start_service("plain", "y", &BTreeMap::new()).unwrap_err();
    assert_eq!(e.class(), ErrorClass::Internal, "{e}");
    assert!(d.report().domains.iter().all(|v| v.name != "y"));
}

#[test]
fn a_restarted_daemon_readopts_running_domains_and_applies_the_policy_to_vanished_ones() {
    let f = Fixture::new();
    {
        let mut d = f.open(0);
        d.start_service("plain", "keep", &BTreeMap::new()).unwrap();
        d.start_service("echo", "echo", &BTreeMap::new()).unwrap();
        d.start_service("plain", "gone", &BTreeMap::new()).unwrap();
    }
    let pid_keep = f.backend.calls().len();
    assert!(pid_keep > 0);
    // While the daemon is down: "gone" dies; "echo" dies too (restart on-failure:1).
    f.backend.exit("gone", Some(1));
    f.backend.exit("echo", None);
    f.backend.take_calls();
    let d = f.open(0);
    let s = d.snapshot();
    assert_eq!(view(&s, "keep").state, State::Running, "adopted");
    assert_eq!(
        view(&s, "gone").state,
        State::Failed {
            reason: Failure::ExitedWhileDown { code: Some(1) },
            gave_up_after: None
        }
    );
    let echo = view(&s, "echo");
    assert_eq!(
        (echo.state.clone(), echo.restarts),
        (State::Running, 1),
        "restarted by its policy"
    );
    assert!(
        !echo.ready,
        "re-adopted or restarted instances are probed again before they count"
    );
    let calls = f.backend.take_calls();
    assert!(
        !calls.iter().any(|c| matches!(c, Call::Start(n) if n == "keep")),
        "a running domain is not started twice: {calls:?}"
    );
}

#[test]
fn the_pool_is_refilled_and_a_start_takes_a_pooled_domain() {
    let f = Fixture::new();
    let mut d = f.open(1);
    d.fill_pool();
    assert_eq!(d.report().pool_idle, 1);
    f.backend.take_calls();
    let v = d.start_service("plain", "a", &BTreeMap::new()).unwrap();
    assert!(v.from_pool);
    assert_eq!(d.report().pool_idle, 0, "the start itself does not refill");
    let calls = f.backend.take_calls();
    assert!(matches!(&calls[..], [Call::RunParked(..)]), "{calls:?}");
    assert!(
        f.store.get_blob("domain/a").unwrap().is_none() && f.store.get_blob("pool/pool-0").unwrap().is_some(),
        "written after the caller has its answer: until then the store lists the pool member"
    );
    d.persist_deferred();
    assert!(f.store.get_blob("domain/a").unwrap().is_some() && f.store.get_blob("pool/pool-0").unwrap().is_none());
    d.fill_pool();
    assert_eq!(d.report().pool_idle, 1);
    // A restarted daemon removes the old pool members and makes new ones; "a" is adopted.
    drop(d);
    f.backend.take_calls();
    let mut d = f.open(1);
    let calls = f.backend.take_calls();
    assert!(
        calls
            .iter()
            .any(|c| matches!(c, Call::Destroy(n) if n.starts_with("pool-"))),
        "{calls:?}"
    );
    d.fill_pool();
    assert_eq!(d.report().pool_idle, 1);
}
