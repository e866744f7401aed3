//! Path figures from probes: round-trip latency, loss over a sliding window, jitter (RFC 3550
//! style), and whether the path is up. Pure: the caller says when each probe left and came back
//! (times as offsets from any fixed instant).
//!
//! | figure | how |
//! |---|---|
//! | `rtt_ms` | the median of the newest 3 probes that say something: an answered one gives its round trip, one still unanswered at twice the median round trip gives its age so far (a lower bound). One late probe does not move it, two do — before they are answered |
//! | `srtt_ms` | exponentially smoothed round trip, gain 1/8 (as TCP's SRTT) |
//! | `jitter_ms` | J += (\|D\| − J) / 16, D the difference of consecutive round trips (RFC 3550 §6.4.1) |
//! | `loss_pct` | probes unanswered after [`LOSS_AFTER`] (or the timeout, if longer) ÷ probes whose fate is known, over the window; a late answer clears its probe |
//! | `up` | false once [`DOWN_AFTER`] probes in a row are overdue (unanswered past the timeout: 3 median round trips, 50 ms to 1 s); true at the next answer |

use std::collections::VecDeque;
use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Overdue probes in a row that make a path down.
pub const DOWN_AFTER: u32 = 2;
/// A probe is overdue when it is unanswered [`TIMEOUT_RTTS`] median round trips, at least this
/// long …
pub const MIN_TIMEOUT: Duration = Duration::from_millis(50);
pub const TIMEOUT_RTTS: u32 = 3;
/// … and at most this long.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(1);
/// A probe counts as lost when it is unanswered this long (or the timeout, if longer): a probe
/// that is merely late is not loss.
pub const LOSS_AFTER: Duration = Duration::from_secs(1);

/// One probe's fate.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Probe {
    pub seq: u32,
    /// When it left (offset).
    #[serde(with = "millis")]
    pub sent: Duration,
    /// Its round trip, once answered.
    #[serde(default, with = "opt_millis", skip_serializing_if = "Option::is_none")]
    pub rtt: Option<Duration>,
    /// Unanswered after [`LOSS_AFTER`] (an answer after that still records `rtt` and clears it).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub lost: bool,
}

/// A path's figures at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Figures {
    pub up: bool,
    /// Median of the newest 3 probes that say something (ms); none before the first answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rtt_ms: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub srtt_ms: Option<f64>,
    pub jitter_ms: f64,
    /// Over the probes of the window whose fate is known.
    pub loss_pct: f64,
    /// Probes in the window whose fate is known.
    pub samples: u32,
    /// Overdue probes in a row, the newest ones.
    pub lost_in_row: u32,
}

impl Figures {
    /// Whether enough is known to judge the path: an answer, or a blackout.
    pub fn known(&self) -> bool {
        self.rtt_ms.is_some() || !self.up
    }
}

impl fmt::Display for Figures {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.up {
            return write!(f, "down ({} probes overdue in a row)", self.lost_in_row);
        }
        match self.rtt_ms {
            Some(r) => write!(
                f,
                "rtt {r:.1} ms, loss {:.1} % of {}, jitter {:.1} ms",
                self.loss_pct, self.samples, self.jitter_ms
            ),
            None => f.write_str("no answer yet"),
        }
    }
}

/// The probes of one path and the figures kept from them.
#[derive(Clone, Debug)]
pub struct PathStats {
    window: VecDeque<Probe>,
    capacity: usize,
    srtt: Option<f64>,
    jitter: f64,
    last_rtt: Option<f64>,
    overdue_in_row: u32,
    answered_once: bool,
    /// The latest time the stats were told (ages are counted to it).
    now: Duration,
}

impl PathStats {
    /// Keeps the last `window` probes (at least 1).
    pub fn new(window: usize) -> PathStats {
        PathStats {
            window: VecDeque::with_capacity(window.max(1)),
            capacity: window.max(1),
            srtt: None,
            jitter: 0.0,
            last_rtt: None,
            overdue_in_row: 0,
            answered_once: false,
            now: Duration::ZERO,
        }
    }

    /// A probe left at `now`.
    pub fn sent(&mut self, seq: u32, now: Duration) {
        self.now = self.now.max(now);
        if self.window.len() == self.capacity {
            self.window.pop_front();
        }
        self.window.push_back(Probe {
            seq,
            sent: now,
            rtt: None,
            lost: false,
        });
    }

    /// Probe `seq` came back at `now` with round trip `rtt`; false when it is not in the window
    /// (too old, never sent, or answered twice).
    pub fn answered(&mut self, seq: u32, rtt: Duration, now: Duration) -> bool {
        self.now = self.now.max(now);
        let Some(p) = self.window.iter_mut().rev().find(|p| p.seq == seq) else {
            return false;
        };
        if p.rtt.is_some() {
            return false;
        }
        p.rtt = Some(rtt);
        p.lost = false;
        self.answered_once = true;
        self.count_overdue();
        let ms = rtt.as_secs_f64() * 1e3;
        self.srtt = Some(match self.srtt {
            Some(s) => s + (ms - s) / 8.0,
            None => ms,
        });
        if let Some(last) = self.last_rtt {
            self.jitter += ((ms - last).abs() - self.jitter) / 16.0;
        }
        self.last_rtt = Some(ms);
        true
    }

    /// How long an unanswered probe is waited for before it is overdue.
    pub fn timeout(&self) -> Duration {
        match self.median_answered() {
            Some(m) => (m * TIMEOUT_RTTS).clamp(MIN_TIMEOUT, MAX_TIMEOUT),
            None => MIN_TIMEOUT.max(Duration::from_millis(200)),
        }
    }

    /// How long before an unanswered probe counts as lost.
    pub fn loss_timeout(&self) -> Duration {
        LOSS_AFTER.max(self.timeout())
    }

    /// At `now`: the probes unanswered for longer than the loss timeout are lost; how many were
    /// newly lost.
    pub fn expire(&mut self, now: Duration) -> u32 {
        self.now = self.now.max(now);
        let after = self.loss_timeout();
        let mut newly = 0;
        for p in self.window.iter_mut() {
            if p.rtt.is_none() && !p.lost && self.now.saturating_sub(p.sent) >= after {
                p.lost = true;
                newly += 1;
            }
        }
        self.count_overdue();
        newly
    }

    /// The newest probes overdue in a row (those too young to be overdue skipped).
    fn count_overdue(&mut self) {
        let timeout = self.timeout();
        let overdue = |p: &Probe| p.rtt.is_none() && self.now.saturating_sub(p.sent) >= timeout;
        self.overdue_in_row = self
            .window
            .iter()
            .rev()
            .skip_while(|p| p.rtt.is_none() && !overdue(p))
            .take_while(|p| overdue(p))
            .count() as u32;
    }

    /// The median round trip of the newest 3 answered probes.
    fn median_answered(&self) -> Option<Duration> {
        let v: Vec<Duration> = self.window.iter().rev().filter_map(|p| p.rtt).take(3).collect();
        median(v)
    }

    /// The median of the newest 3 probes that say something: an answered one its round trip, an
    /// unanswered one older than twice the median round trip its age (at least that).
    fn latency(&self) -> Option<Duration> {
        let m = self.median_answered()?;
        let v: Vec<Duration> = self
            .window
            .iter()
            .rev()
            .filter_map(|p| match p.rtt {
                Some(r) => Some(r),
                None => Some(self.now.saturating_sub(p.sent)).filter(|age| *age >= m * 2),
            })
            .take(3)
            .collect();
        median(v)
    }

    pub fn figures(&self) -> Figures {
        let known = self.window.iter().filter(|p| p.rtt.is_some() || p.lost).count();
        let lost = self.window.iter().filter(|p| p.lost).count();
        Figures {
            up: self.overdue_in_row < DOWN_AFTER,
            rtt_ms: self.latency().map(|d| d.as_secs_f64() * 1e3),
            srtt_ms: self.srtt,
            jitter_ms: self.jitter,
            loss_pct: if known == 0 {
                0.0
            } else {
                lost as f64 * 100.0 / known as f64
            },
            samples: known as u32,
            lost_in_row: self.overdue_in_row,
        }
    }

    /// The raw window, oldest first.
    pub fn window(&self) -> impl Iterator<Item = &Probe> {
        self.window.iter()
    }

    /// Whether the figures move with time alone: a probe unanswered long enough to count with
    /// its age (twice the median round trip), or not yet lost. While false, the figures only
    /// change when a probe is sent, answered or lost.
    pub fn aging(&self) -> bool {
        let Some(m) = self.median_answered() else {
            return self.window.iter().any(|p| p.rtt.is_none() && !p.lost);
        };
        self.window
            .iter()
            .any(|p| p.rtt.is_none() && !p.lost && self.now.saturating_sub(p.sent) >= m * 2)
    }

    /// Overdue probes in a row, the newest ones (`Figures::lost_in_row`, without working out
    /// the rest).
    pub fn overdue_in_row(&self) -> u32 {
        self.overdue_in_row
    }

    /// Whether any probe was ever answered.
    pub fn answered_once(&self) -> bool {
        self.answered_once
    }
}

fn median(mut v: Vec<Duration>) -> Option<Duration> {
    v.sort();
    v.get(v.len() / 2).copied()
}

mod millis {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64() * 1e3)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let ms = f64::deserialize(d)?;
        Ok(Duration::from_secs_f64(ms.max(0.0) / 1e3))
    }
}

mod opt_millis {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_some(&(d.as_secs_f64() * 1e3)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        let ms = Option::<f64>::deserialize(d)?;
        Ok(ms.map(|m| Duration::from_secs_f64(m.max(0.0) / 1e3)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// Probes every 100 ms; `rtt(i)` is the i-th probe's round trip or none when lost; each
    /// answer comes back within the round; the stats are told the time at the round's end.
    fn run(stats: &mut PathStats, from: u32, n: u32, rtt: impl Fn(u32) -> Option<u64>) {
        for i in from..from + n {
            let t = ms(u64::from(i) * 100);
            stats.sent(i, t);
            if let Some(r) = rtt(i) {
                stats.answered(i, ms(r), t + ms(r));
            }
            stats.expire(t + ms(99));
        }
    }

    #[test]
    fn a_clean_path_has_its_latency_and_no_loss() {
        let mut s = PathStats::new(100);
        run(&mut s, 0, 20, |_| Some(10));
        let f = s.figures();
        assert!(f.up && f.known());
        assert_eq!(f.rtt_ms, Some(10.0));
        assert_eq!(f.loss_pct, 0.0);
        assert_eq!(f.samples, 20);
        assert!(f.jitter_ms.abs() < 1e-9);
    }

    #[test]
    fn the_median_ignores_one_late_probe_but_follows_two() {
        let mut s = PathStats::new(100);
        run(&mut s, 0, 10, |_| Some(10));
        run(&mut s, 10, 1, |_| Some(80));
        assert_eq!(s.figures().rtt_ms, Some(10.0));
        run(&mut s, 11, 1, |_| Some(80));
        assert_eq!(s.figures().rtt_ms, Some(80.0));
        // The smoothed figure lags.
        assert!(s.figures().srtt_ms.unwrap() < 40.0);
    }

    #[test]
    fn overdue_probes_count_with_their_age_before_they_are_answered() {
        let mut s = PathStats::new(100);
        run(&mut s, 0, 10, |_| Some(10));
        // A brownout: probe 10 leaves at 1000 ms and is not back 45 ms later.
        s.sent(10, ms(1000));
        s.expire(ms(1045));
        assert_eq!(
            s.figures().rtt_ms,
            Some(10.0),
            "one late probe does not move the median"
        );
        s.sent(11, ms(1100));
        s.expire(ms(1145));
        // Ages 145 and 45 ms, and 10: the median is 45 — the path is seen slow before any answer.
        assert_eq!(s.figures().rtt_ms, Some(45.0));
        assert!(
            s.figures().up,
            "one probe overdue (the 50-ms timeout), the newer one not yet"
        );
        assert_eq!(s.figures().loss_pct, 0.0, "late is not lost");
        // Both answered at 150 ms: the round trips replace the ages.
        s.answered(10, ms(150), ms(1150));
        s.answered(11, ms(150), ms(1250));
        assert_eq!(s.figures().rtt_ms, Some(150.0));
    }

    #[test]
    fn a_blackout_is_down_after_two_overdue_probes_and_up_at_the_next_answer() {
        let mut s = PathStats::new(100);
        run(&mut s, 0, 10, |_| Some(10));
        run(&mut s, 10, 1, |_| None);
        assert!(s.figures().up, "one overdue probe is not a blackout");
        run(&mut s, 11, 1, |_| None);
        let f = s.figures();
        assert!(!f.up && f.known());
        assert_eq!(f.lost_in_row, 2);
        assert_eq!(f.loss_pct, 0.0, "overdue, not lost yet");
        s.expire(ms(2200));
        assert!((s.figures().loss_pct - 100.0 * 2.0 / 12.0).abs() < 1e-9);
        run(&mut s, 22, 1, |_| Some(10));
        assert!(s.figures().up);
    }

    #[test]
    fn loss_is_counted_over_the_window_only() {
        let mut s = PathStats::new(20);
        // Every 10th probe lost, then 20 clean ones push the losses out.
        run(&mut s, 0, 40, |i| (i % 10 != 0).then_some(10));
        s.expire(ms(5000));
        assert!((s.figures().loss_pct - 10.0).abs() < 1e-9);
        run(&mut s, 50, 20, |_| Some(10));
        assert_eq!(s.figures().loss_pct, 0.0);
    }

    #[test]
    fn a_late_answer_clears_the_loss_it_was_counted_as() {
        let mut s = PathStats::new(100);
        run(&mut s, 0, 5, |_| Some(10));
        s.sent(5, ms(500));
        s.expire(ms(1600));
        assert_eq!(s.figures().samples, 6);
        assert!(s.figures().loss_pct > 0.0);
        assert!(s.answered(5, ms(1150), ms(1650)));
        assert_eq!(s.figures().loss_pct, 0.0);
        assert!(!s.answered(5, ms(1150), ms(1650)), "answered twice");
        assert!(!s.answered(99, ms(1), ms(1650)), "never sent");
    }

    #[test]
    fn jitter_follows_rfc_3550() {
        let mut s = PathStats::new(100);
        // Alternating 10 / 20 ms: |D| = 10 every time; J converges towards 10.
        run(&mut s, 0, 200, |i| Some(if i % 2 == 0 { 10 } else { 20 }));
        let j = s.figures().jitter_ms;
        assert!((9.9..=10.0).contains(&j), "{j}");
    }

    #[test]
    fn the_timeout_follows_the_round_trip_within_bounds() {
        let mut s = PathStats::new(10);
        assert_eq!(s.timeout(), ms(200));
        run(&mut s, 0, 3, |_| Some(5));
        assert_eq!(s.timeout(), MIN_TIMEOUT);
        run(&mut s, 3, 3, |_| Some(100));
        assert_eq!(s.timeout(), ms(300));
        run(&mut s, 6, 3, |_| Some(900));
        assert_eq!(s.timeout(), MAX_TIMEOUT);
        assert_eq!(s.loss_timeout(), LOSS_AFTER);
    }
}
