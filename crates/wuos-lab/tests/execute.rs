//! The executor against the recording fakes of every southbound trait: the order changes are made
//! in, and what a failure part way undoes (what the executor made, newest first) and leaves alone
//! (everything else). No root needed.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{generated, lab_plan, shaped, state};
use wuos_lab::error::ExecError;
use wuos_lab::execute::{Executor, Host};
use wuos_lab::link::{LinkChange, change_plan};
use wuos_lab::plan::{Op, Plan, StageName};
use wuos_lab::progress::Progress;
use wuos_lab::relays::{RecordingRelays, RelayCall};
use wuos_southbound::cgroups::{CgroupCall, RecordingCgroups};
use wuos_southbound::links::LinkCall;
use wuos_southbound::namespaces::{HOST, NamespaceCall, Namespaces, RecordingNamespaces};
use wuos_southbound::offloads::RecordingOffloads;
use wuos_southbound::recording::{Journal, Recorded};
use wuos_southbound::sysctls::RecordingSysctls;
use wuos_southbound::traffic::{RecordingTc, TcCall};

/// Every fake, on one journal.
struct Fakes {
    journal: Journal,
    namespaces: RecordingNamespaces,
    sysctls: RecordingSysctls,
    cgroups: RecordingCgroups,
    tc: RecordingTc,
    offloads: RecordingOffloads,
    relays: RecordingRelays,
}

impl Fakes {
    /// A host where another lab (`other`) exists already.
    fn new() -> Self {
        let journal = Journal::new();
        Self {
            namespaces: RecordingNamespaces::new(&journal).with_namespace("wuos.other.r1"),
            sysctls: RecordingSysctls::new(&journal),
            cgroups: RecordingCgroups::new(&journal).with_cgroup("wuos/other/r1"),
            tc: RecordingTc::new(&journal),
            offloads: RecordingOffloads::new(&journal),
            relays: RecordingRelays::new(),
            journal,
        }
    }

    fn host(&self) -> Host<'_, RecordingNamespaces> {
        Host {
            namespaces: &self.namespaces,
            sysctls: &self.sysctls,
            cgroups: &self.cgroups,
            tc: &self.tc,
            offloads: &self.offloads,
            relays: &self.relays,
        }
    }

    /// Runs `plan` with one namespace worker (a deterministic order).
    fn run(&self, plan: &Plan) -> Result<(), ExecError> {
        Executor::new(self.host(), 1).run(plan, &Stages::default()).map(|_| ())
    }
}

/// Records the stages progress is told about.
#[derive(Default)]
struct Stages(std::sync::Mutex<Vec<(String, u64, u64)>>);

impl Progress for Stages {
    fn stage(&self, name: &str, total: u64) {
        self.0.lock().unwrap().push((name.to_string(), total, 0));
    }
    fn advance(&self, n: u64) {
        if let Some(last) = self.0.lock().unwrap().last_mut() {
            last.2 += n;
        }
    }
}

/// What kind of change a journal entry is, for order checks.
fn kind(r: &Recorded) -> &'static str {
    match r {
        Recorded::Cgroup(CgroupCall::Create { .. }) => "cgroup",
        Recorded::Cgroup(CgroupCall::Destroy { .. }) => "destroy cgroup",
        Recorded::Namespace(NamespaceCall::Create { .. }) | Recorded::Sysctl(_) => "namespace",
        Recorded::Namespace(NamespaceCall::Delete { .. }) => "delete namespace",
        Recorded::Link {
            call: LinkCall::AddVeth { .. },
            ..
        } => "veth",
        Recorded::Link { .. } | Recorded::Address { .. } => "interface",
        Recorded::Route { .. } => "route",
        Recorded::Tc(_) => "tc",
        Recorded::Offload(_) => "offload",
    }
}

/// `kinds` with runs of the same kind collapsed.
fn runs(journal: &[Recorded]) -> Vec<&'static str> {
    let mut v: Vec<&'static str> = journal.iter().map(kind).collect();
    v.dedup();
    v
}

#[test]
fn a_lab_is_made_stage_by_stage_each_change_on_the_right_socket() {
    let st = state("t", shaped());
    let plan = lab_plan(&st, true);
    let f = Fakes::new();
    let progress = Stages::default();
    let mut exec = Executor::new(f.host(), 1);
    exec.run(&plan, &progress).unwrap();
    let j = f.journal.take();
    assert_eq!(
        runs(&j),
        ["cgroup", "namespace", "veth", "interface", "route", "tc", "offload"],
        "relays are started between tc and offloads: {:?}",
        f.relays.take_calls()
    );
    // Each namespace is created, then gets its sysctls, before the next one (one worker).
    let mut i = 0;
    while let Some(p) = j[i..]
        .iter()
        .position(|r| matches!(r, Recorded::Namespace(NamespaceCall::Create { .. })))
    {
        let sysctls = j[i + p + 1..]
            .iter()
            .take_while(|r| matches!(r, Recorded::Sysctl(_)))
            .count();
        assert_eq!(sysctls, 7, "{:?}", j[i + p]);
        i += p + 1;
    }
    // Veths are made by the host's socket, everything else by the namespace's own.
    for r in &j {
        match r {
            Recorded::Link {
                netns,
                call: LinkCall::AddVeth { .. },
            } => assert_eq!(netns, HOST),
            Recorded::Link { netns, .. } | Recorded::Address { netns, .. } | Recorded::Route { netns, .. } => {
                assert!(netns.starts_with("wuos.t."), "{r:?}")
            }
            _ => {}
        }
    }
    // Every route op reached the FIB of its router.
    for op in plan.ops() {
        if let Op::ReplaceRoute { netns, dst, oif, .. } = op {
            let fib = f.namespaces.socket(netns).unwrap();
            let hop = futures::executor::block_on(wuos_southbound::routes::Routes::fib_match(fib.routes(), *dst));
            assert_eq!(hop.unwrap().map(|e| e.oif), Some(*oif), "{op}");
        }
    }
    // One tc batch per namespace with tc ops.
    let batches: Vec<&str> = j
        .iter()
        .filter_map(|r| match r {
            Recorded::Tc(TcCall::Batch { netns, .. }) => Some(netns.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(batches, ["wuos.t.r1", "wuos.t.r2", "wuos.t.r3", "wuos.t.h1"]);
    let relays: Vec<usize> = f
        .relays
        .take_calls()
        .into_iter()
        .map(|c| match c {
            RelayCall::Start(r) => r.link,
            other => panic!("only starts, got {other:?}"),
        })
        .collect();
    assert_eq!(relays, [1, 2]);
    assert_eq!(exec.relay_pids().keys().copied().collect::<Vec<_>>(), [1, 2]);
    // Progress saw every stage, and every op of each.
    let seen = progress.0.lock().unwrap().clone();
    let names: Vec<&str> = plan.stages.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(seen.iter().map(|(n, ..)| n.as_str()).collect::<Vec<_>>(), names);
    assert!(seen.iter().all(|(_, total, done)| total == done), "{seen:?}");
    assert_eq!(
        f.namespaces.names().len(),
        1 + 4 + 1,
        "the other lab's, four routers, the relay namespace"
    );
}

/// The ops undone after a failure, as the journal recorded them after the last change made.
fn undone(j: &[Recorded]) -> Vec<Recorded> {
    let first = j
        .iter()
        .position(|r| {
            matches!(
                r,
                Recorded::Namespace(NamespaceCall::Delete { .. }) | Recorded::Cgroup(CgroupCall::Destroy { .. })
            )
        })
        .expect("something was undone");
    j[first..].to_vec()
}

fn deleted(names: &[&str]) -> Vec<Recorded> {
    names
        .iter()
        .map(|n| Recorded::Namespace(NamespaceCall::Delete { name: n.to_string() }))
        .collect()
}

#[test]
fn a_tc_failure_undoes_the_namespaces_and_cgroups_made_and_touches_nothing_else() {
    let plan = lab_plan(&state("t", shaped()), true);
    let f = Fakes::new();
    f.tc.refuse("wuos.t.r3");
    let err = f.run(&plan).unwrap_err();
    assert_eq!(err.stage, StageName::Emulation);
    assert!(err.op.contains("wuos.t.r3"), "the failed op is named: {err}");
    assert!(err.to_string().contains("refused by the fake"), "{err}");
    let j = f.journal.take();
    let undo = undone(&j);
    let mut expected = deleted(&["wuos.t._relay", "wuos.t.h1", "wuos.t.r3", "wuos.t.r2", "wuos.t.r1"]);
    expected.push(Recorded::Cgroup(CgroupCall::Destroy { path: "wuos/t".into() }));
    assert_eq!(undo, expected, "newest first; router cgroups go with the lab's");
    assert_eq!(err.rolled_back.len(), expected.len());
    assert!(err.rollback_failures.is_empty());
    let before = &j[..j.len() - undo.len()];
    assert!(
        !before.iter().any(|r| matches!(r, Recorded::Offload(_))),
        "nothing after the failed op ran"
    );
    assert!(f.relays.take_calls().is_empty(), "no relay was started");
    assert_eq!(f.namespaces.names(), ["wuos.other.r1"], "the other lab is untouched");
    assert_eq!(f.cgroups.existing(), ["wuos/other/r1"]);
}

#[test]
fn a_relay_that_does_not_start_stops_the_ones_started() {
    let plan = lab_plan(&state("t", shaped()), false);
    let f = Fakes::new();
    f.relays.refuse(2);
    let err = f.run(&plan).unwrap_err();
    assert_eq!(err.stage, StageName::Relays);
    assert!(matches!(err.rolled_back[0], Op::StopRelay { link: 1 }), "{err}");
    let calls = f.relays.take_calls();
    assert!(
        matches!(&calls[..], [RelayCall::Start(r), RelayCall::Stop { link: 1, pid }] if r.link == 1 && *pid == 1000),
        "{calls:?}"
    );
    assert_eq!(f.namespaces.names(), ["wuos.other.r1"]);
}

#[test]
fn a_namespace_that_cannot_be_made_stops_the_others_and_undoes_those_made() {
    let plan = lab_plan(&state("t", generated("line:3")), false);
    let f = Fakes::new();
    f.namespaces.refuse("wuos.t.r2");
    let err = f.run(&plan).unwrap_err();
    assert_eq!(err.stage, StageName::Namespaces);
    assert_eq!(err.op, "create namespace wuos.t.r2");
    let j = f.journal.take();
    assert!(
        !j.iter()
            .any(|r| matches!(r, Recorded::Namespace(NamespaceCall::Create { name }) if name == "wuos.t.r3")),
        "no namespace is started after a failure (one worker)"
    );
    let mut expected = deleted(&["wuos.t.r1"]);
    expected.push(Recorded::Cgroup(CgroupCall::Destroy { path: "wuos/t".into() }));
    assert_eq!(undone(&j), expected);
    assert_eq!(f.namespaces.names(), ["wuos.other.r1"]);
}

#[test]
fn a_failed_veth_rolls_back_with_many_workers_too() {
    let plan = lab_plan(&state("t", generated("grid:3x3")), false);
    let f = Fakes::new();
    f.namespaces.host().links().fail_changes("EEXIST");
    let err = Executor::new(f.host(), 4).run(&plan, &Stages::default()).unwrap_err();
    assert_eq!(err.stage, StageName::Veths);
    let mut left = f.namespaces.names();
    left.sort();
    assert_eq!(left, ["wuos.other.r1"]);
    assert_eq!(f.cgroups.existing(), ["wuos/other/r1"]);
    assert_eq!(err.rolled_back.len(), 9 + 1, "nine namespaces, the lab's cgroup");
}

/// A running lab on the fakes: its namespaces exist (not recorded), its relays have pids.
fn running(st: &wuos_lab::state::LabState) -> Fakes {
    let journal = Journal::new();
    let mut spaces = RecordingNamespaces::new(&journal);
    for n in &st.topology.nodes {
        spaces = spaces.with_namespace(&wuos_lab::names::node_netns(&st.name, &n.name));
    }
    if st.links.iter().any(|l| l.spliced) {
        spaces = spaces.with_namespace(&wuos_lab::names::relay_netns(&st.name));
    }
    Fakes {
        namespaces: spaces,
        sysctls: RecordingSysctls::new(&journal),
        cgroups: RecordingCgroups::new(&journal),
        tc: RecordingTc::new(&journal),
        offloads: RecordingOffloads::new(&journal),
        relays: RecordingRelays::new(),
        journal,
    }
}

#[test]
fn link_set_runs_only_the_difference_on_the_namespaces_that_exist() {
    let mut st = state("t", generated("line:3"));
    st.topology.links[0].params.delay = Some(Duration::from_millis(20));
    st.links[0].params.delay = Some(Duration::from_millis(20));
    st.links[0].spliced = true;
    let f = running(&st);
    let change = LinkChange {
        delay: Some(Duration::ZERO),
        ..Default::default()
    };
    let (plan, _) = change_plan(&st, 0, &change).unwrap();
    let mut exec = Executor::new(f.host(), 1).with_relay_pids(BTreeMap::from([(0, 4242)]));
    exec.run(&plan, &Stages::default()).unwrap();
    assert!(exec.relay_pids().is_empty());
    assert_eq!(f.relays.take_calls(), [RelayCall::Stop { link: 0, pid: 4242 }]);
    let j = f.journal.take();
    assert_eq!(runs(&j), ["tc", "interface", "delete namespace"], "{j:#?}");
    for r in &j {
        if let Recorded::Link { netns, call } = r {
            assert!(
                matches!(call, LinkCall::Delete { index: 20_000 }),
                "only the twins go: {netns} {call:?}"
            );
        }
    }
    assert_eq!(f.namespaces.names(), ["wuos.t.r1", "wuos.t.r2", "wuos.t.r3"]);
}
