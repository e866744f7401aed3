//! Golden SLA scenarios: `tests/golden_sla/<case>/input.json` describes a class (SLA, balance,
//! damping), its candidate paths and phases of what each path does to probes (round trip, every
//! n-th probe lost, blackout). Probes are simulated every `cadence_ms` through `PathStats`, the
//! decision function runs after each round, and every change is written, with its time and
//! reason, to a text compared with `expected.txt`.
//! `UPDATE_GOLDEN=1 cargo test -p wuos-sdwan --test sla_golden` rewrites the expected files.

use std::collections::BTreeMap;
mod common;

use std::fs;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;
use wuos_sdwan::path::PathStats;
use wuos_sdwan::sla::{Damping, PathId, Sla, SteerState, decide};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Input {
    sla: Sla,
    #[serde(default)]
    balance: bool,
    #[serde(default)]
    damping: Option<Damping>,
    /// `overlay/underlay`, in preference order.
    paths: Vec<String>,
    cadence_ms: u64,
    window: usize,
    phases: Vec<Phase>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Phase {
    until_ms: u64,
    /// Path → behaviour; a path not named keeps its behaviour from the phase before.
    paths: BTreeMap<String, Behaviour>,
}

#[derive(Clone, Copy, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Behaviour {
    rtt_ms: f64,
    /// Every n-th probe is lost (0: none).
    #[serde(default)]
    lose_every: u32,
    #[serde(default)]
    down: bool,
}

fn path_id(s: &str) -> PathId {
    let (overlay, underlay) = s.split_once('/').expect("paths are overlay/underlay");
    PathId {
        overlay: overlay.into(),
        underlay: underlay.into(),
    }
}

fn run(dir: &Path) -> String {
    let input: Input = serde_json::from_str(&fs::read_to_string(dir.join("input.json")).unwrap())
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    input.sla.check().unwrap();
    let damping = input.damping.unwrap_or_default();
    let ids: Vec<PathId> = input.paths.iter().map(|p| path_id(p)).collect();
    let mut stats: Vec<PathStats> = ids.iter().map(|_| PathStats::new(input.window)).collect();
    let mut now_behaviour: Vec<Behaviour> = vec![Behaviour::default(); ids.len()];
    let mut state = SteerState::default();
    let mut out = format!("sla: {}\n", input.sla);
    let cadence = Duration::from_millis(input.cadence_ms);
    let mut seq = 0u32;
    let mut t = Duration::ZERO;
    for phase in &input.phases {
        for (name, b) in &phase.paths {
            let i = input
                .paths
                .iter()
                .position(|p| p == name)
                .expect("a phase names an unknown path");
            now_behaviour[i] = *b;
        }
        while t < Duration::from_millis(phase.until_ms) {
            for (s, b) in stats.iter_mut().zip(&now_behaviour) {
                s.sent(seq, t);
                let lost = b.down || (b.lose_every > 0 && seq % b.lose_every == b.lose_every - 1);
                if !lost {
                    let rtt = Duration::from_secs_f64(b.rtt_ms / 1e3);
                    s.answered(seq, rtt, t + rtt);
                }
            }
            t += cadence;
            for s in &mut stats {
                s.expire(t);
            }
            let candidates: Vec<_> = ids.iter().cloned().zip(stats.iter().map(|s| s.figures())).collect();
            if let Some(c) = decide(&input.sla, input.balance, &candidates, &mut state, t, &damping) {
                let to: Vec<String> = c.to.iter().map(|p| p.to_string()).collect();
                let met = match c.met {
                    Some(true) => "SLA met",
                    Some(false) => "SLA NOT met",
                    None => "SLA unknown",
                };
                out.push_str(&format!(
                    "{:>6} ms  -> {} ({met})\n          {}\n",
                    t.as_millis(),
                    to.join(" + "),
                    c.reason
                ));
            }
            seq += 1;
        }
    }
    out
}

#[test]
fn golden_sla_scenarios() {
    common::check_cases("golden_sla", 4, run);
}
