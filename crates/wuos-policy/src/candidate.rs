//! What the evaluator reads: the routers that could run a service and their figures.
//!
//! The daemon builds one [`Candidate`] for itself (0 hops) and one per router of its
//! neighborhood view; the evaluator never looks anything up elsewhere.

use serde::{Deserialize, Serialize};
use wuos_model::Role;

use crate::policy::Metric;

/// A router's resource figures; `None` when unknown (not reported, or not measurable there).
///
/// Percentages are 0..=100. NaN is read as unknown.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Figures {
    /// `cpu.used_pct`: CPU busy, percent of the router's CPUs.
    pub cpu_used_pct: Option<f64>,
    /// `mem.used_pct`: memory used, percent.
    pub mem_used_pct: Option<f64>,
    /// `cpu.free_cores`: idle CPUs.
    pub cpu_free_cores: Option<f64>,
    /// `mem.free_mib`: available memory, MiB.
    pub mem_free_mib: Option<f64>,
    /// `cpu.pressure`: PSI cpu some avg10, percent.
    pub cpu_pressure: Option<f64>,
    /// `mem.pressure`: PSI memory some avg10, percent.
    pub mem_pressure: Option<f64>,
    /// `io.pressure`: PSI io some avg10, percent.
    pub io_pressure: Option<f64>,
}

impl Figures {
    /// The figure of `metric`; `None` for the candidate-level metrics (`latency_ms`, `hops`,
    /// see [`Candidate::value`]) and for unknown or NaN figures.
    pub fn get(&self, metric: Metric) -> Option<f64> {
        let v = match metric {
            Metric::CpuUsedPct => self.cpu_used_pct,
            Metric::MemUsedPct => self.mem_used_pct,
            Metric::CpuFreeCores => self.cpu_free_cores,
            Metric::MemFreeMib => self.mem_free_mib,
            Metric::CpuPressure => self.cpu_pressure,
            Metric::MemPressure => self.mem_pressure,
            Metric::IoPressure => self.io_pressure,
            Metric::LatencyMs | Metric::Hops => None,
        };
        v.filter(|v| !v.is_nan())
    }
}

/// A router that could run a service, as seen from the router that evaluates.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Candidate {
    /// Router id.
    pub name: String,
    /// Hops away; 0 is the evaluating router itself.
    pub hops: u32,
    /// Latency to it, ms (give `Some(0.0)` for the evaluating router); `None` if unknown.
    pub latency_ms: Option<f64>,
    /// What it is; `place nearby` only considers `edge` and `fog` routers.
    pub role: Role,
    /// Whether its figures are out of date (the view entry is stale): never chosen.
    pub stale: bool,
    /// Its figures.
    pub figures: Figures,
}

impl Candidate {
    /// The value of `metric` for this candidate: its figures, its latency, its hops.
    pub fn value(&self, metric: Metric) -> Option<f64> {
        match metric {
            Metric::LatencyMs => self.latency_ms.filter(|v| !v.is_nan()),
            Metric::Hops => Some(f64::from(self.hops)),
            m => self.figures.get(m),
        }
    }

    /// Whether `place nearby` may consider it: another edge or fog router within `within_hops`.
    pub fn is_nearby(&self, within_hops: u32) -> bool {
        self.hops >= 1 && self.hops <= within_hops && matches!(self.role, Role::Edge | Role::Fog)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_and_nan() {
        let c = Candidate {
            name: "r2".into(),
            hops: 2,
            latency_ms: Some(f64::NAN),
            role: Role::Edge,
            stale: false,
            figures: Figures {
                cpu_used_pct: Some(12.0),
                mem_used_pct: Some(f64::NAN),
                ..Figures::default()
            },
        };
        assert_eq!(c.value(Metric::CpuUsedPct), Some(12.0));
        assert_eq!(c.value(Metric::MemUsedPct), None, "NaN is unknown");
        assert_eq!(c.value(Metric::LatencyMs), None, "NaN is unknown");
        assert_eq!(c.value(Metric::Hops), Some(2.0));
        assert_eq!(c.value(Metric::IoPressure), None);
        assert!(c.is_nearby(2) && !c.is_nearby(1));
        let dc = Candidate { role: Role::Dc, ..c };
        assert!(!dc.is_nearby(8), "a data-centre router is not nearby");
    }
}
