//! Demand: the latest new-flows-per-second report of each (service, router), and the total
//! of a service over the reports still inside the window.

use std::collections::BTreeMap;

/// The latest report of each (service, router): (when, flows per second).
#[derive(Clone, Debug, Default)]
pub(crate) struct DemandTable {
    latest: BTreeMap<(String, String), (u64, f64)>,
}

impl DemandTable {
    /// Records a report; negative or NaN flows count as 0.
    pub(crate) fn record(&mut self, service: String, router: String, now_ms: u64, flows: f64) {
        let flows = if flows.is_finite() && flows > 0.0 { flows } else { 0.0 };
        self.latest.insert((service, router), (now_ms, flows));
    }

    /// New flows per second of `service`: the sum of the reports younger than `window_ms` (0,
    /// never -0, when there are none: an empty `f64` sum is -0).
    pub(crate) fn total(&self, service: &str, now_ms: u64, window_ms: u64) -> f64 {
        0.0 + self
            .latest
            .range((service.to_string(), String::new())..)
            .take_while(|((s, _), _)| s == service)
            .filter(|(_, (at, _))| now_ms.saturating_sub(*at) < window_ms)
            .map(|(_, (_, flows))| flows)
            .sum::<f64>()
    }

    /// Drops the reports older than the window.
    pub(crate) fn prune(&mut self, now_ms: u64, window_ms: u64) {
        self.latest.retain(|_, (at, _)| now_ms.saturating_sub(*at) < window_ms);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latest_reports_within_the_window() {
        let mut d = DemandTable::default();
        d.record("voip".into(), "r1".into(), 0, 2.0);
        d.record("voip".into(), "r1".into(), 1000, 3.0); // replaces
        d.record("voip".into(), "r2".into(), 500, 1.5);
        d.record("voip2".into(), "r1".into(), 500, 100.0);
        d.record("vo".into(), "r1".into(), 500, 100.0);
        d.record("voip".into(), "r3".into(), 500, f64::NAN);
        assert_eq!(d.total("voip", 1000, 10_000), 4.5);
        assert_eq!(d.total("voip", 10_499, 10_000), 4.5);
        assert_eq!(d.total("voip", 10_500, 10_000), 3.0, "r2's report left the window");
        assert_eq!(d.total("other", 0, 10_000), 0.0);
        assert!(d.total("other", 0, 10_000).is_sign_positive(), "no -0 in the log");
        d.prune(10_500, 10_000);
        assert_eq!(d.latest.len(), 1);
    }
}
