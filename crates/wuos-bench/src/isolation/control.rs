//! The routing control plane as `wuos bench isolation` sees it, from the daemons' own status
//! replies sampled during a case: hello round trips between neighbors (`neighbors[].rtt_ms`, a new
//! value per answered hello), the regularity of the stressed router's own telemetry samples
//! (`own.sequence`, `own.timestamp_unix_ns`), and neighbor losses (`counters`).
//!
//! Pure bookkeeping: replies in, figures out.

use std::collections::BTreeMap;

use serde::Serialize;
use wuos_proto::pb;

use crate::stats::Summary;

/// Counters whose growth during a case counts as the control plane being hurt.
pub const LOSS_COUNTERS: [&str; 2] = ["neighbor_down", "links_closed"];

/// What was seen of the control plane during one case.
#[derive(Clone, Debug, Default)]
pub struct ControlSamples {
    /// Hello RTTs per (router, neighbor), each new value once.
    rtts: BTreeMap<(String, String), Vec<f64>>,
    /// The observed router's own adverts: (sequence, sample time ns), each sequence once.
    adverts: Vec<(u64, i64)>,
    /// Loss counters per router: the first and the last value seen.
    counters: BTreeMap<(String, &'static str), (u64, u64)>,
}

/// The control plane's figures for one case.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ControlFigures {
    /// Every hello RTT sampled, all pairs pooled.
    pub hello_rtt_ms: Option<Summary>,
    /// Mean |difference| between consecutive RTTs of the same pair.
    pub hello_jitter_ms: Option<f64>,
    /// Gaps between consecutive own samples (sequence n → n+1) of the observed router.
    pub sample_gap_ms: Option<Summary>,
    /// Sequences the poller did not see (their gaps are not in `sample_gap_ms`).
    pub samples_unseen: u64,
    /// Growth of [`LOSS_COUNTERS`] summed over the routers.
    pub neighbor_losses: u64,
    pub links_closed: u64,
}

impl ControlSamples {
    /// Takes in one status reply of `router`; `own` says whether its own adverts are followed.
    pub fn observe(&mut self, router: &str, st: &pb::StatusReply, own: bool) {
        for n in &st.neighbors {
            if let Some(rtt) = n.rtt_ms {
                let v = self.rtts.entry((router.to_string(), n.id.clone())).or_default();
                // The same value again is the same hello; a new one is a new answer.
                if v.last() != Some(&rtt) {
                    v.push(rtt);
                }
            }
        }
        if own
            && let Some(a) = &st.own
            && self.adverts.last().is_none_or(|(seq, _)| a.sequence > *seq)
        {
            self.adverts.push((a.sequence, a.timestamp_unix_ns));
        }
        for c in &st.counters {
            if let Some(name) = LOSS_COUNTERS.iter().find(|n| **n == c.name) {
                self.counters
                    .entry((router.to_string(), name))
                    .and_modify(|e| e.1 = c.value)
                    .or_insert((c.value, c.value));
            }
        }
    }

    pub fn figures(&self) -> ControlFigures {
        // The first value of each pair predates the case (the hello answered before it).
        let rtts: Vec<f64> = self.rtts.values().flat_map(|v| v.iter().skip(1).copied()).collect();
        let diffs: Vec<f64> = self
            .rtts
            .values()
            .flat_map(|v| v.windows(2).skip(1).map(|w| (w[1] - w[0]).abs()))
            .collect();
        let mut gaps = Vec::new();
        let mut unseen = 0;
        for w in self.adverts.windows(2) {
            let ((s0, t0), (s1, t1)) = (w[0], w[1]);
            if s1 == s0 + 1 {
                gaps.push((t1 - t0) as f64 / 1e6);
            } else {
                unseen += s1 - s0 - 1;
            }
        }
        let growth = |name: &str| -> u64 {
            self.counters
                .iter()
                .filter(|((_, n), _)| *n == name)
                .map(|(_, (first, last))| last.saturating_sub(*first))
                .sum()
        };
        ControlFigures {
            hello_rtt_ms: Summary::of(&rtts),
            hello_jitter_ms: (!diffs.is_empty()).then(|| diffs.iter().sum::<f64>() / diffs.len() as f64),
            sample_gap_ms: Summary::of(&gaps),
            samples_unseen: unseen,
            neighbor_losses: growth("neighbor_down"),
            links_closed: growth("links_closed"),
        }
    }
}

/// Whether the unreserved case is measurably worse than both others for one figure (per-run
/// values of each case): its median lies above every run of the idle and the reserved case.
pub fn measurably_worse(idle: &[f64], reserved: &[f64], unreserved: &[f64]) -> Option<bool> {
    let top = idle.iter().chain(reserved).copied().reduce(f64::max)?;
    Some(crate::stats::median(unreserved)? > top)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(rtts: &[(&str, f64)], seq: u64, ts_ms: i64, downs: u64) -> pb::StatusReply {
        pb::StatusReply {
            neighbors: rtts
                .iter()
                .map(|(id, rtt)| pb::NeighborState {
                    id: id.to_string(),
                    rtt_ms: Some(*rtt),
                    ..Default::default()
                })
                .collect(),
            own: Some(pb::TelemetryAdvert {
                sequence: seq,
                timestamp_unix_ns: ts_ms * 1_000_000,
                ..Default::default()
            }),
            counters: vec![
                pb::Counter {
                    name: "neighbor_down".into(),
                    value: downs,
                },
                pb::Counter {
                    name: "hellos_sent".into(),
                    value: 99,
                },
            ],
            ..Default::default()
        }
    }

    #[test]
    fn hellos_gaps_and_losses_are_counted_once_each() {
        let mut s = ControlSamples::default();
        s.observe("r2", &reply(&[("h1", 0.3), ("h3", 0.4)], 10, 1000, 1), true);
        s.observe("r2", &reply(&[("h1", 0.3), ("h3", 0.4)], 10, 1000, 1), true); // nothing new
        s.observe("r2", &reply(&[("h1", 0.5), ("h3", 0.4)], 11, 1100, 1), true);
        s.observe("r2", &reply(&[("h1", 0.2), ("h3", 0.6)], 12, 1230, 2), true);
        s.observe("r2", &reply(&[("h1", 0.2), ("h3", 0.6)], 15, 1530, 3), true); // 13, 14 unseen
        s.observe("h1", &reply(&[("r2", 0.7)], 500, 0, 0), false);
        let f = s.figures();
        // New RTTs after each pair's first: h1 0.5, 0.2; h3 0.6; (h1→r2 has only its first).
        let rtt = f.hello_rtt_ms.clone().unwrap();
        assert_eq!((rtt.n, rtt.min, rtt.max), (3, 0.2, 0.6));
        // Jitter: |0.2 − 0.5| for r2→h1 (the first difference involves the pre-case value).
        assert!((f.hello_jitter_ms.unwrap() - 0.3).abs() < 1e-9, "{f:?}");
        let gaps = f.sample_gap_ms.clone().unwrap();
        assert_eq!((gaps.n, gaps.min, gaps.max), (2, 100.0, 130.0));
        assert_eq!(f.samples_unseen, 2);
        assert_eq!((f.neighbor_losses, f.links_closed), (2, 0));
    }

    #[test]
    fn an_empty_case_has_no_figures() {
        let f = ControlSamples::default().figures();
        assert_eq!((f.hello_rtt_ms, f.hello_jitter_ms, f.sample_gap_ms), (None, None, None));
    }

    #[test]
    fn worse_means_above_every_run_of_the_others() {
        assert_eq!(measurably_worse(&[1.0, 1.2], &[1.1, 1.3], &[1.5, 1.6, 1.2]), Some(true));
        assert_eq!(
            measurably_worse(&[1.0, 1.2], &[1.1, 1.7], &[1.5, 1.6, 1.2]),
            Some(false)
        );
        assert_eq!(measurably_worse(&[], &[], &[1.0]), None);
    }
}
