//! Golden plans: what `lab up` makes for a few labs, and what `link set` changes on a running one,
//! as JSON in `tests/golden/`. No root needed: plans are pure. Regenerate with
//! `UPDATE_GOLDEN=1 cargo test -p wuos-lab --test plan` and review the diff.

mod common;

use std::time::Duration;

use common::{check_golden, generated, lab_plan, shaped, state};
use wuos_lab::link::{LinkChange, change_plan};
use wuos_lab::plan::{Op, Plan, StageName};
use wuos_lab::state::LabState;

fn stage_names(p: &Plan) -> Vec<StageName> {
    p.stages.iter().map(|s| s.name).collect()
}

#[test]
fn up_line3() {
    let p = lab_plan(&state("t", generated("line:3")), false);
    check_golden("up_line3", &p);
}

#[test]
fn up_grid2x2() {
    let p = lab_plan(&state("t", generated("grid:2x2")), false);
    check_golden("up_grid2x2", &p);
}

#[test]
fn up_shaped_and_impaired_links() {
    let p = lab_plan(&state("t", shaped()), false);
    use StageName::*;
    assert_eq!(
        stage_names(&p),
        [
            Cgroups, Namespaces, Veths, Addresses, Routes, Emulation, Relays, Offloads
        ]
    );
    let relays = p.ops().filter(|o| matches!(o, Op::StartRelay(_))).count();
    assert_eq!(relays, 2, "one relay per link with delay, jitter or loss");
    let twins: Vec<&str> = p
        .ops()
        .filter_map(|o| match o {
            Op::UnrelayableGsoOff { dev, .. } => Some(dev.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(
        twins.len(),
        4,
        "both twins of each relayed link segment what the relay cannot carry: {twins:?}"
    );
    assert!(twins.iter().all(|d| d.starts_with("ix")), "{twins:?}");
    check_golden("up_shaped", &p);
}

#[test]
fn up_xdp_turns_tx_checksum_offload_off_on_every_link_end() {
    let p = lab_plan(&state("t", generated("line:2")), true);
    assert_eq!(p.stages.last().map(|s| s.name), Some(StageName::Offloads));
    check_golden("up_xdp", &p);
}

/// The plan of `link set` on link `i` of `st`; checks that the change's own plan is what the lab's
/// plan after it says (applying the diff to the old plan's state gives the new one's).
fn set(st: &LabState, i: usize, change: LinkChange) -> Plan {
    let (diff, after) = change_plan(st, i, &change).unwrap();
    let mut next = st.clone();
    next.links[i].up = after.up;
    next.links[i].params = after.params;
    assert!(
        change_plan(&next, i, &LinkChange::default()).unwrap().0.is_empty(),
        "no change, no ops"
    );
    diff
}

fn ms(n: u64) -> Option<Duration> {
    Some(Duration::from_millis(n))
}

#[test]
fn set_rate_added_puts_a_token_bucket_on_both_ends() {
    let p = set(
        &state("t", generated("line:3")),
        0,
        LinkChange {
            rate_bps: Some(10_000_000),
            ..Default::default()
        },
    );
    assert!(p.ops().all(|o| matches!(o, Op::SetRate { .. })) && p.ops().count() == 2);
    check_golden("set_rate_added", &p);
}

#[test]
fn set_delay_added_splices_a_relay_into_the_link() {
    let p = set(
        &state("t", generated("line:3")),
        0,
        LinkChange {
            delay: ms(20),
            ..Default::default()
        },
    );
    use StageName::*;
    assert_eq!(
        stage_names(&p),
        [Namespaces, Veths, Addresses, Emulation, Relays, Offloads],
        "the relay namespace first, the relay and its twins' offloads last"
    );
    assert!(
        !p.ops()
            .any(|o| matches!(o, Op::ReplaceRoute { .. } | Op::AddAddress { .. })),
        "addresses and routes never change"
    );
    check_golden("set_delay_added", &p);
}

fn with_delay(topology: &str, i: usize, delay: u64) -> LabState {
    let mut st = state("t", generated(topology));
    st.topology.links[i].params.delay = ms(delay);
    st.links[i].params.delay = ms(delay);
    st.links[i].spliced = true;
    st.links[i].relay_pid = Some(4242);
    st
}

#[test]
fn set_delay_removed_unsplices_the_relay_and_deletes_its_namespace() {
    let p = set(
        &with_delay("line:3", 0, 20),
        0,
        LinkChange {
            delay: Some(Duration::ZERO),
            ..Default::default()
        },
    );
    use StageName::*;
    assert_eq!(
        stage_names(&p),
        [Relays, Emulation, Veths, Namespaces],
        "undone newest stage first"
    );
    assert!(matches!(p.stages[0].ops[..], [Op::StopRelay { link: 0 }]));
    check_golden("set_delay_removed", &p);
}

#[test]
fn set_impairment_removed_moves_the_rate_back_and_keeps_the_other_relay() {
    // shaped link 2: rate, delay and jitter; link 1 keeps its relay (and the relay namespace).
    let p = set(
        &state("t", shaped()),
        2,
        LinkChange {
            delay: Some(Duration::ZERO),
            jitter: Some(Duration::ZERO),
            ..Default::default()
        },
    );
    assert!(!p.ops().any(|o| matches!(o, Op::DeleteNamespace { .. })));
    let rates: Vec<&str> = p
        .ops()
        .filter_map(|o| match o {
            Op::SetRate { dev, .. } | Op::RemoveRate { dev, .. } => Some(dev.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(
        rates,
        ["ix0", "ix1", "eth1", "eth0"],
        "off the twins (newest first), onto the link"
    );
    check_golden("set_impairment_removed", &p);
}

#[test]
fn set_delay_changed_restarts_the_relay() {
    let p = set(
        &with_delay("line:3", 0, 20),
        0,
        LinkChange {
            delay: ms(30),
            jitter: ms(5),
            ..Default::default()
        },
    );
    assert!(matches!(
        p.ops().collect::<Vec<_>>()[..],
        [Op::StopRelay { link: 0 }, Op::StartRelay(_)]
    ));
    check_golden("set_delay_changed", &p);
}

#[test]
fn set_mtu_changes_the_link_and_its_relay_twins() {
    let p = set(
        &with_delay("line:3", 0, 20),
        0,
        LinkChange {
            mtu: Some(9000),
            ..Default::default()
        },
    );
    let mtus = p.ops().filter(|o| matches!(o, Op::SetMtu { mtu: 9000, .. })).count();
    assert_eq!(mtus, 6, "both ends of the link and of both twins");
    check_golden("set_mtu", &p);
}

#[test]
fn set_down_takes_both_ends_down_and_their_routes_over_it() {
    let st = state("t", generated("line:3"));
    let p = set(
        &st,
        1,
        LinkChange {
            up: Some(false),
            ..Default::default()
        },
    );
    use StageName::*;
    assert_eq!(stage_names(&p), [Routes, Addresses]);
    check_golden("set_down", &p);
}

#[test]
fn set_up_brings_both_ends_up_then_their_routes_back() {
    let mut st = state("t", generated("line:3"));
    st.links[1].up = false;
    let p = set(
        &st,
        1,
        LinkChange {
            up: Some(true),
            ..Default::default()
        },
    );
    use StageName::*;
    assert_eq!(stage_names(&p), [Addresses, Routes]);
    let routes = p.ops().filter(|o| matches!(o, Op::ReplaceRoute { .. })).count();
    assert_eq!(
        routes, 2,
        "r2 reaches r3, r3 reaches everything over this link (one aggregate)"
    );
    check_golden("set_up", &p);
}

#[test]
fn golden_files_are_all_checked() {
    // A golden file no test writes would go stale unnoticed.
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let mut files: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.ends_with(".json"))
        .collect();
    files.sort();
    let src = include_str!("plan.rs");
    for f in files {
        let name = f.trim_end_matches(".json");
        assert!(
            src.contains(&format!("\"{name}\"")),
            "tests/golden/{f} is checked by no test in tests/plan.rs"
        );
    }
}
