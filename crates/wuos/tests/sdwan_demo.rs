//! The SD-WAN demo end to end (`wuos demo sdwan --quick`), privileged: a `sdwan:3:2` lab with its
//! daemons, SIPp calls in the voip class and iperf3 in the bulk class while mpls browns out, inet
//! loses packets and both come back. From the JSON: no call fails in any phase and every phase
//! completes calls; voip leaves the late mpls for inet while bulk stays on inet; with loss on inet
//! too, voip takes the least bad path and the decision says its SLA cannot be met; after the
//! restorations voip fails back to mpls, not before the hold; the plot is drawn.

mod common;

use std::time::Duration;

use common::{Down, ok, run};
use serde_json::Value;

const LAB: &str = "sdwdemo";
/// The daemons' failback hold (wuosd's default, which the demo keeps).
const HOLD: Duration = Duration::from_secs(5);

fn phase<'a>(r: &'a Value, step: &str) -> &'a Value {
    r["phases"]
        .as_array()
        .expect("phases")
        .iter()
        .find(|p| p["step"] == step)
        .unwrap_or_else(|| panic!("no phase {step} in {}", r["phases"]))
}

fn paths(v: &Value) -> Vec<&str> {
    v.as_array()
        .unwrap_or_else(|| panic!("a list of paths: {v}"))
        .iter()
        .map(|p| p.as_str().expect("a path"))
        .collect()
}

#[test]
fn voip_follows_its_sla_through_brownout_loss_and_failback_and_no_call_fails() {
    if !wuos_southbound::privilege::may_run_privileged("sdwan demo") {
        return;
    }
    let _ = run(&["lab", "down", LAB]);
    let _down = Down(LAB);
    let out = tempfile::tempdir().unwrap();
    let dir = out.path().to_str().unwrap();
    let r: Value = serde_json::from_str(&ok(&["demo", "sdwan", "--quick", "--json", "--lab", LAB, "--out", dir]))
        .expect("--json prints JSON");
    // Every failure message carries the phases and e1's decisions.
    let summary = format!(
        "phases: {:#}\ndecisions: {:#}\nSIPp's errors: {:#}",
        r["phases"], r["decisions"], r["sipp_errors"]
    );

    let phases = r["phases"].as_array().expect("phases");
    let steps: Vec<&str> = phases.iter().map(|p| p["step"].as_str().unwrap()).collect();
    assert_eq!(
        steps,
        ["baseline", "brownout", "inet_loss", "inet_restored", "mpls_restored"],
        "{summary}"
    );
    assert_eq!(r["calls_failed"], 0, "no call fails across the moves: {summary}");
    for p in phases {
        assert_eq!(p["calls_failed"], 0, "no call fails in {}: {summary}", p["phase"]);
        assert!(
            p["calls_completed"].as_u64().unwrap() > 0,
            "calls complete in {}: {summary}",
            p["phase"]
        );
        assert!(
            p["bulk_mbps"].as_f64().is_some_and(|m| m > 0.0),
            "bulk flows in {}: {summary}",
            p["phase"]
        );
        // With loss on inet two probes in a row are sometimes lost: inet is down for a moment,
        // which any class leaves (for the hold); not a matter of bulk's SLA.
        if p["step"] != "inet_loss" {
            assert_eq!(
                paths(&p["bulk_paths"]),
                ["wan/inet"],
                "bulk on inet at the end of {}: {summary}",
                p["phase"]
            );
        }
    }
    assert_eq!(paths(&phase(&r, "baseline")["voip_paths"]), ["wan/mpls"], "{summary}");

    // The brownout: voip leaves mpls for inet, which meets its SLA.
    let d = &phase(&r, "brownout")["decision"];
    assert_eq!(
        (paths(&d["from"]), paths(&d["to"]), d["met"].as_bool()),
        (vec!["wan/mpls"], vec!["wan/inet"], Some(true)),
        "{summary}"
    );
    assert!(
        d["reason"].as_str().unwrap().contains("rtt"),
        "the reason names the latency: {d}"
    );
    let brownout = phase(&r, "brownout");
    let (from, to) = (
        brownout["start"].as_f64().unwrap() * 1e3,
        brownout["end"].as_f64().unwrap() * 1e3,
    );
    let bulk_moves: Vec<&Value> = r["decisions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["class"] == "bulk" && d["site"] == "e2" && d["from"] != d["to"])
        .filter(|d| (from..to).contains(&d["at_unix_ms"].as_f64().unwrap()))
        .collect();
    assert!(
        bulk_moves.is_empty(),
        "bulk stays on inet in the brownout: {bulk_moves:?}"
    );

    // Loss on inet too: no path complies; the least bad is taken and the decision says so.
    let loss = phase(&r, "inet_loss");
    assert_eq!(loss["decision"]["met"], false, "{summary}");
    assert!(
        loss["decision"]["reason"].as_str().unwrap().contains("cannot be met"),
        "{summary}"
    );
    assert_eq!(loss["voip_met"], false, "still not met at the phase's end: {summary}");

    // Restored: back on inet with its SLA met, then a damped failback to mpls.
    assert_eq!(phase(&r, "inet_restored")["decision"]["met"], true, "{summary}");
    let back = phase(&r, "mpls_restored");
    assert_eq!(
        (paths(&back["decision"]["to"]), back["decision"]["met"].as_bool()),
        (vec!["wan/mpls"], Some(true)),
        "{summary}"
    );
    let after = back["decided_after_ms"].as_f64().unwrap();
    assert!(
        after >= HOLD.as_secs_f64() * 1e3,
        "the failback came {after} ms after mpls was restored, before the {HOLD:?} hold: {summary}"
    );
    assert_eq!(paths(&back["voip_paths"]), ["wan/mpls"], "{summary}");

    for f in ["sdwan.png", "sdwan.svg", "results.json"] {
        let len = std::fs::metadata(out.path().join(f)).map_or(0, |m| m.len());
        assert!(len > 0, "{f} written and not empty");
    }
    let samples = r["samples"].as_array().unwrap();
    assert!(
        samples.len() > 100,
        "e1's paths sampled every 250 ms: {} samples",
        samples.len()
    );
    assert!(
        !ok(&["lab", "list"]).contains(LAB),
        "the demo takes its lab down without --keep"
    );
}
