//! Numbers of a benchmark: the one percentile helper, the summary of a sample, the median and
//! spread of several runs, and rounding a figure to the resolution of the instrument that
//! measured it (no digit finer than the instrument is ever quoted).

use serde::Serialize;

/// The `p`-quantile (`0.0..=1.0`) of `values` by nearest rank on a sorted copy; `None` when
/// there are no values. `p` outside `0..=1` is clamped.
pub fn percentile(values: &[f64], p: f64) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let rank = ((v.len() - 1) as f64 * p.clamp(0.0, 1.0)).round() as usize;
    Some(v[rank])
}

/// The median of `values`, `None` when empty.
pub fn median(values: &[f64]) -> Option<f64> {
    percentile(values, 0.5)
}

/// A sample summarised: how many values, median, p90, p99, min, max.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Summary {
    pub n: usize,
    pub median: f64,
    pub p90: f64,
    pub p99: f64,
    pub min: f64,
    pub max: f64,
}

impl Summary {
    /// `None` for an empty sample.
    pub fn of(values: &[f64]) -> Option<Self> {
        let q = |p| percentile(values, p);
        Some(Self {
            n: values.len(),
            median: q(0.5)?,
            p90: q(0.9)?,
            p99: q(0.99)?,
            min: q(0.0)?,
            max: q(1.0)?,
        })
    }
}

/// One figure measured in several runs: the median over the runs, the spread (min–max) and every
/// run's value.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Runs {
    pub median: f64,
    pub min: f64,
    pub max: f64,
    pub runs: Vec<f64>,
}

impl Runs {
    /// `None` when there were no runs.
    pub fn of(runs: &[f64]) -> Option<Self> {
        Some(Self {
            median: median(runs)?,
            min: percentile(runs, 0.0)?,
            max: percentile(runs, 1.0)?,
            runs: runs.to_vec(),
        })
    }

    /// `median (min–max)` at `resolution`; a single run prints alone.
    pub fn show(&self, resolution: f64) -> String {
        if self.runs.len() < 2 {
            return at_resolution(self.median, resolution);
        }
        format!(
            "{} ({}–{})",
            at_resolution(self.median, resolution),
            at_resolution(self.min, resolution),
            at_resolution(self.max, resolution)
        )
    }
}

/// `value` rounded to a multiple of `resolution`, printed with the decimals that resolution
/// needs and no more (`0.05` → two decimals, `1` or `10` → none). `-` for NaN.
pub fn at_resolution(value: f64, resolution: f64) -> String {
    if !value.is_finite() {
        return "-".into();
    }
    if !(resolution > 0.0 && resolution.is_finite()) {
        return format!("{value}");
    }
    let prec = decimals(resolution);
    let rounded = (value / resolution).round() * resolution;
    let text = format!("{rounded:.prec$}");
    // A value that rounds to zero prints as zero, not "-0".
    match text.strip_prefix('-') {
        Some(rest) if rest.chars().all(|c| c == '0' || c == '.') => rest.to_string(),
        _ => text,
    }
}

/// `Option` form of [`at_resolution`]: `-` for `None`.
pub fn opt_at_resolution(value: Option<f64>, resolution: f64) -> String {
    value.map_or_else(|| "-".into(), |v| at_resolution(v, resolution))
}

/// Decimals to print multiples of `resolution` with: exactly when a decimal or two past its
/// leading digit suffice (`0.05` → 2, `0.25` → 2), else to its leading digit (`1/30` → 2).
pub fn decimals(resolution: f64) -> usize {
    let leading = (-resolution.log10()).ceil().max(0.0) as usize;
    (0..=leading + 1)
        .find(|&d| {
            let scaled = resolution * 10f64.powi(d as i32);
            (scaled - scaled.round()).abs() < 1e-6 * scaled.max(1.0)
        })
        .unwrap_or(leading)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank_on_a_sorted_copy() {
        let v = [5.0, 1.0, 4.0, 2.0, 3.0];
        assert_eq!(percentile(&v, 0.5), Some(3.0));
        assert_eq!(percentile(&v, 0.0), Some(1.0));
        assert_eq!(percentile(&v, 1.0), Some(5.0));
        assert_eq!(percentile(&v, 0.9), Some(5.0), "rank round(4 × 0.9) = 4");
        assert_eq!(percentile(&v, 0.74), Some(4.0), "rank round(4 × 0.74) = 3");
        assert_eq!(v, [5.0, 1.0, 4.0, 2.0, 3.0], "the input is left as it was");
        assert_eq!(percentile(&[], 0.5), None);
        assert_eq!(percentile(&[7.0], 0.99), Some(7.0));
        assert_eq!(percentile(&v, 2.0), Some(5.0), "p is clamped");
        // An even count takes the upper middle (rank round(1.5) = 2).
        assert_eq!(median(&[1.0, 2.0, 3.0, 10.0]), Some(3.0));
    }

    #[test]
    fn a_summary_and_runs_report_their_extremes() {
        let values: Vec<f64> = (1..=100).map(f64::from).collect();
        let s = Summary::of(&values).unwrap();
        assert_eq!((s.n, s.min, s.max), (100, 1.0, 100.0));
        assert_eq!((s.median, s.p90, s.p99), (51.0, 90.0, 99.0));
        assert!(Summary::of(&[]).is_none());
        let r = Runs::of(&[20.8, 21.2, 25.6, 17.9, 20.1]).unwrap();
        assert_eq!((r.median, r.min, r.max), (20.8, 17.9, 25.6));
        assert_eq!(r.show(1.0), "21 (18–26)");
        assert_eq!(Runs::of(&[3.3]).unwrap().show(0.1), "3.3");
    }

    #[test]
    fn figures_are_rounded_to_their_resolution() {
        assert_eq!(at_resolution(20.08, 0.05), "20.10");
        assert_eq!(at_resolution(20.06, 0.05), "20.05");
        assert_eq!(at_resolution(0.5412, 0.001), "0.541");
        assert_eq!(at_resolution(123.4, 1.0), "123");
        assert_eq!(at_resolution(123.4, 4.0), "124");
        assert_eq!(at_resolution(f64::NAN, 1.0), "-");
        assert_eq!(at_resolution(-0.3, 1.0), "0", "no negative zero");
        assert_eq!(at_resolution(-0.6, 1.0), "-1");
        assert_eq!(opt_at_resolution(None, 1.0), "-");
        assert_eq!(decimals(0.001), 3);
        assert_eq!(decimals(0.5), 1);
        assert_eq!(decimals(10.0), 0);
        assert_eq!(decimals(0.25), 2);
        assert_eq!(
            decimals(1.0 / 30.0),
            2,
            "a resolution that is no decimal: to its leading digit"
        );
        assert_eq!(at_resolution(0.41, 1.0 / 30.0), "0.40");
    }
}
