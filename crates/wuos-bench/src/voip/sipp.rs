//! SIPp's files, parsed: its statistics CSV (`-trace_stat`: one row per `-fd` period with
//! cumulative counters — successful and failed calls, retransmissions, calls in flight) and its
//! response-time CSV (`-trace_rtt`: one row per call, INVITE → 200 OK).

use std::path::Path;

/// One row of SIPp's statistics: when, and the cumulative counters then.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct StatRow {
    /// Unix time of the row, ms.
    pub at_ms: f64,
    pub successful: u64,
    pub failed: u64,
    pub retransmissions: u64,
    /// Calls in progress at that moment.
    pub current: u64,
}

/// A statistics file: when SIPp started (Unix ms) and its rows.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Stats {
    pub start_ms: Option<f64>,
    pub rows: Vec<StatRow>,
}

/// SIPp writes times as `2026-11-21\t16:43:55.119533\t1795279435.119533`: the last field is Unix
/// seconds.
fn unix_ms(field: &str) -> Option<f64> {
    field
        .rsplit('\t')
        .next()?
        .trim()
        .parse::<f64>()
        .ok()
        .map(|t| t * 1000.0)
}

impl Stats {
    /// Parses the text of a `-trace_stat` file; rows that do not parse are skipped.
    pub fn parse(text: &str) -> Self {
        let mut lines = text.lines();
        let Some(header) = lines.next() else {
            return Self::default();
        };
        let cols: Vec<&str> = header.split(';').collect();
        let col = |name: &str| cols.iter().position(|c| *c == name);
        let (Some(start), Some(now), Some(ok), Some(failed), Some(retrans), Some(current)) = (
            col("StartTime"),
            col("CurrentTime"),
            col("SuccessfulCall(C)"),
            col("FailedCall(C)"),
            col("Retransmissions(C)"),
            col("CurrentCall"),
        ) else {
            return Self::default();
        };
        let mut stats = Self::default();
        for l in lines {
            let f: Vec<&str> = l.split(';').collect();
            let num = |i: usize| f.get(i)?.trim().parse::<u64>().ok();
            stats.start_ms = stats.start_ms.or_else(|| unix_ms(f.get(start)?));
            let row = (|| {
                Some(StatRow {
                    at_ms: unix_ms(f.get(now)?)?,
                    successful: num(ok)?,
                    failed: num(failed)?,
                    retransmissions: num(retrans)?,
                    current: num(current)?,
                })
            })();
            stats.rows.extend(row);
        }
        stats
    }

    /// Reads `path`; an absent file is an empty one.
    pub fn read(path: &Path) -> Self {
        Self::parse(&std::fs::read_to_string(path).unwrap_or_default())
    }

    /// The counters at `t_ms`: the last row at or before it (zeros before the first).
    pub fn at(&self, t_ms: f64) -> StatRow {
        self.rows
            .iter()
            .take_while(|r| r.at_ms <= t_ms)
            .last()
            .copied()
            .unwrap_or_default()
    }

    /// The growth of the counters between `from_ms` and `to_ms`; `current` is the value at
    /// `from_ms` (calls in flight when the interval began).
    pub fn between(&self, from_ms: f64, to_ms: f64) -> StatRow {
        let (a, b) = (self.at(from_ms), self.at(to_ms));
        StatRow {
            at_ms: to_ms,
            successful: b.successful.saturating_sub(a.successful),
            failed: b.failed.saturating_sub(a.failed),
            retransmissions: b.retransmissions.saturating_sub(a.retransmissions),
            current: a.current,
        }
    }

    /// The last row (the totals).
    pub fn last(&self) -> StatRow {
        self.rows.last().copied().unwrap_or_default()
    }
}

/// One call's setup: when SIPp recorded it (its 200 OK, Unix ms) and INVITE → 200 OK (ms).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Setup {
    pub at_ms: f64,
    pub ms: f64,
}

/// Parses a `-trace_rtt` file (`Date_ms;response_time_ms;rtd_no`, dates relative to SIPp's
/// start, which `start_unix_ms` gives).
pub fn parse_rtt(text: &str, start_unix_ms: f64) -> Vec<Setup> {
    text.lines()
        .skip(1)
        .filter_map(|l| {
            let mut f = l.split(';');
            let at: f64 = f.next()?.trim().parse().ok()?;
            let ms: f64 = f.next()?.trim().parse().ok()?;
            Some(Setup {
                at_ms: start_unix_ms + at,
                ms,
            })
        })
        .collect()
}

/// The `-trace_rtt` file SIPp wrote in `dir` (`*_rtt.csv`), parsed.
pub fn read_rtt(dir: &Path, start_unix_ms: f64) -> Vec<Setup> {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.to_string_lossy().ends_with("_rtt.csv"))
        .map_or_else(Vec::new, |f| {
            parse_rtt(&std::fs::read_to_string(f).unwrap_or_default(), start_unix_ms)
        })
}

/// The step of an instrument, read from its values: the smallest gap between two distinct
/// values (SIPp's response times come in ticks of its clock). `None` with fewer than two
/// distinct values.
pub fn observed_step(values: &[f64]) -> Option<f64> {
    let mut v: Vec<f64> = values.iter().map(|x| (x * 1e6).round() / 1e6).collect();
    v.sort_by(f64::total_cmp);
    v.dedup();
    v.windows(2).map(|w| w[1] - w[0]).reduce(f64::min)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEADER: &str = "StartTime;LastResetTime;CurrentTime;ElapsedTime(P);ElapsedTime(C);TargetRate;CallRate(P);CallRate(C);IncomingCall(P);IncomingCall(C);OutgoingCall(P);OutgoingCall(C);TotalCallCreated;CurrentCall;SuccessfulCall(P);SuccessfulCall(C);FailedCall(P);FailedCall(C);Retransmissions(P);Retransmissions(C)";

    fn row(t: f64, current: u64, ok: u64, failed: u64, retrans: u64) -> String {
        format!(
            "2026-12-05\t09:27:06.736476\t1796462826.736476;x;2026-12-05\t09:27:08.000000\t{t};00:00:00;00:00:02;5;0;2.4;0;0;0;5;5;{current};0;{ok};0;{failed};0;{retrans}"
        )
    }

    #[test]
    fn statistics_rows_give_counters_by_time() {
        let text = [
            HEADER.to_string(),
            row(1000.0, 3, 0, 0, 0),
            row(1001.0, 5, 2, 0, 1),
            row(1002.0, 4, 6, 1, 4),
            "garbage;row".to_string(),
        ]
        .join("\n");
        let s = Stats::parse(&text);
        assert!((s.start_ms.unwrap() - 1_796_462_826_736.476).abs() < 1e-3, "{s:?}");
        assert_eq!(s.rows.len(), 3, "{s:?}");
        assert_eq!(s.at(999_000.0), StatRow::default(), "before the first row");
        assert_eq!(s.at(1_001_500.0).successful, 2);
        let d = s.between(1_000_500.0, 1_002_000.0);
        assert_eq!((d.successful, d.failed, d.retransmissions, d.current), (6, 1, 4, 3));
        assert_eq!(s.last().retransmissions, 4);
    }

    #[test]
    fn a_file_without_the_columns_is_empty() {
        assert_eq!(Stats::parse("a;b;c\n1;2;3\n"), Stats::default());
        assert_eq!(Stats::parse(""), Stats::default());
    }

    #[test]
    fn response_times_are_placed_in_unix_time() {
        let s = parse_rtt(
            "Date_ms;response_time_ms;rtd_no\n1500.5;124.000000;1\nbad\n2000;4;1\n",
            1e6,
        );
        assert_eq!(
            s,
            vec![
                Setup {
                    at_ms: 1_001_500.5,
                    ms: 124.0
                },
                Setup {
                    at_ms: 1_002_000.0,
                    ms: 4.0
                }
            ]
        );
    }

    #[test]
    fn the_step_is_the_smallest_gap_between_distinct_values() {
        assert_eq!(observed_step(&[124.0, 4.0, 0.0, 4.0, 8.0, 128.0]), Some(4.0));
        assert_eq!(observed_step(&[4.0, 4.0]), None);
        assert_eq!(observed_step(&[]), None);
    }
}
