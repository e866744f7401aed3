//! The bookkeeping of one decision-latency run: from the telemetry sample that crossed the
//! threshold, through the orchestrator round that decided, to the moment the last router's kernel
//! held the new VIP route. Pure: times in, figures out.
//!
//! ```text
//!  sample ≥ threshold ──wait──▶ round decides ──apply──▶ last router's FIB points at the new router
//!  (timestamp_unix_ns)          (at_unix_ms)             (first poll that saw it, for good)
//!  └──────────────────────────── decision latency ─────────────────────────┘
//! ```

use serde::Serialize;

/// When a router's kernel got the route for good: the first observation of the trailing run of
/// observations that match, given every observation (time, matches) in time order; `None` when
/// the last observation does not match (never applied, or taken back).
pub fn applied_at(observations: &[(i64, bool)]) -> Option<i64> {
    let (_, last) = observations.last()?;
    if !last {
        return None;
    }
    let start = observations.iter().rposition(|(_, m)| !m).map_or(0, |i| i + 1);
    Some(observations[start].0)
}

/// The figures of one run, all in ms.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RunLatency {
    /// Sample → the last router's kernel holds the new route.
    pub total_ms: f64,
    /// Sample → the orchestrator round that decided (`at_unix_ms`).
    pub sample_to_round_ms: f64,
    /// That round → the last router's kernel holds the new route.
    pub round_to_applied_ms: f64,
    /// The orchestrator's own record of when it told the routers (`switched_unix_ms`), after the
    /// round.
    pub round_to_switch_told_ms: f64,
    /// Per router whose route changed: sample → its kernel held the new route.
    pub per_router_ms: Vec<(String, f64)>,
    /// Routers whose route already led to the new serving router before the deciding round (the
    /// same next hop before and after: nothing to apply); they do not end the run.
    pub unchanged: Vec<String>,
}

/// The run's figures from the crossing sample's time (ns), the decision's round and switch
/// times (Unix ms) and each router's applied time (ns). A router whose route already matched
/// before the round needed no change and is set apart. `None` when no router changed.
pub fn run_latency(
    sample_ns: i64,
    round_ms: i64,
    switched_ms: i64,
    applied_ns: &[(String, i64)],
) -> Option<RunLatency> {
    let round_ns = round_ms * 1_000_000;
    let (changed, unchanged): (Vec<_>, Vec<_>) = applied_ns.iter().partition(|(_, t)| *t > round_ns);
    let last = changed.iter().map(|(_, t)| *t).max()?;
    let ms = |ns: i64| ns as f64 / 1e6;
    Some(RunLatency {
        total_ms: ms(last - sample_ns),
        sample_to_round_ms: ms(round_ns - sample_ns),
        round_to_applied_ms: ms(last - round_ns),
        round_to_switch_told_ms: (switched_ms - round_ms) as f64,
        per_router_ms: changed.iter().map(|(r, t)| (r.clone(), ms(t - sample_ns))).collect(),
        unchanged: unchanged.iter().map(|(r, _)| r.clone()).collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_route_is_applied_when_it_last_became_right() {
        assert_eq!(applied_at(&[(1, false), (2, true), (3, true)]), Some(2));
        assert_eq!(
            applied_at(&[(1, true), (2, false), (3, true), (4, true)]),
            Some(3),
            "a flap restarts it"
        );
        assert_eq!(
            applied_at(&[(1, true), (2, true)]),
            Some(1),
            "right from the first poll"
        );
        assert_eq!(applied_at(&[(1, false), (2, true), (3, false)]), None, "taken back");
        assert_eq!(applied_at(&[]), None);
    }

    #[test]
    fn the_last_router_ends_the_run_and_the_parts_add_up() {
        let sample_ns = 1_000_000_000_000_000_000; // a Unix time in ns
        let round_ms = 1_000_000_000_150; // 150 ms after the sample
        let applied = [
            ("edge1".to_string(), sample_ns + 170_000_000),
            ("fog".to_string(), sample_ns + 190_500_000),
            ("dc".to_string(), sample_ns + 160_000_000),
            // Its route already led there (the same next hop): seen long before the round.
            ("edge2".to_string(), sample_ns - 360_000_000),
        ];
        let r = run_latency(sample_ns, round_ms, round_ms + 30, &applied).unwrap();
        assert_eq!(r.total_ms, 190.5, "the last router (fog) ends it");
        assert_eq!(r.sample_to_round_ms, 150.0);
        assert_eq!(r.round_to_applied_ms, 40.5);
        assert_eq!(r.sample_to_round_ms + r.round_to_applied_ms, r.total_ms);
        assert_eq!(r.round_to_switch_told_ms, 30.0);
        assert_eq!(r.per_router_ms[2], ("dc".to_string(), 160.0));
        assert_eq!(r.unchanged, ["edge2"], "an unchanged route does not end the run");
        assert!(run_latency(sample_ns, round_ms, 0, &[]).is_none());
        let nothing_changed = [("edge2".to_string(), sample_ns - 1)];
        assert!(run_latency(sample_ns, round_ms, 0, &nothing_changed).is_none());
    }
}
