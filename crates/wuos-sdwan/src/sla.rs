//! SLA decisions: for one traffic class and one remote site, which of the candidate paths carry
//! the class, from the paths' measured figures. Pure and deterministic: figures and the time in,
//! the chosen paths and a reason out.
//!
//! - A path **complies** when it is up and its latency, loss and jitter are within the SLA. A path
//!   without figures yet is *unknown*: not evidence against the path the class is on, not a reason
//!   to move to it.
//! - **Leaving** is immediate: when a chosen path stops complying the class moves at once to the
//!   most preferred path that complies now.
//! - **Coming back** is damped: a path the class is not on is taken (failback to a preferred path,
//!   or a new path for per-flow balancing) only after it has complied with a margin (`hysteresis`:
//!   every limit scaled by 1 − h) for `damping` without a break.
//! - When **no path complies**, the class takes the least bad one (the largest ratio of a figure to
//!   its limit, smallest wins; a path that is down is worst) and the decision says the SLA cannot
//!   be met; it moves between non-compliant paths only when the other is better by the margin.
//! - With **balance**, the class is spread over every compliant path (flows are hashed over them);
//!   a chosen path stays while it complies, so flows on it never move.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::path::Figures;

/// A class's service level: each limit, when given, must hold.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Sla {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_latency_ms: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_loss_pct: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_jitter_ms: Option<f64>,
}

/// Limits are finite numbers ([`Sla::check`] refuses others), so equality is an equivalence and
/// classes that carry an SLA stay `Eq`.
impl Eq for Sla {}

impl Sla {
    /// Refuses limits that are negative or not numbers, and an SLA that limits nothing.
    pub fn check(&self) -> Result<(), String> {
        let limits = [
            ("max_latency_ms", self.max_latency_ms),
            ("max_loss_pct", self.max_loss_pct),
            ("max_jitter_ms", self.max_jitter_ms),
        ];
        for (name, v) in limits {
            if let Some(v) = v
                && (!v.is_finite() || v < 0.0)
            {
                return Err(format!("{name} {v} is not a limit (a number ≥ 0)"));
            }
        }
        if let Some(l) = self.max_loss_pct
            && l > 100.0
        {
            return Err(format!("max_loss_pct {l} is over 100"));
        }
        if limits.iter().all(|(_, v)| v.is_none()) {
            return Err("an SLA needs at least one of max_latency_ms, max_loss_pct, max_jitter_ms".into());
        }
        Ok(())
    }

    /// The figures against the limits scaled by `scale` (1: the SLA itself).
    pub fn judge(&self, f: &Figures, scale: f64) -> Verdict {
        if !f.up {
            return Verdict::Down;
        }
        let Some(rtt) = f.rtt_ms else { return Verdict::Unknown };
        let mut over = Vec::new();
        let mut worst: f64 = 0.0;
        for (what, value, limit, unit) in [
            ("rtt", rtt, self.max_latency_ms, "ms"),
            ("loss", f.loss_pct, self.max_loss_pct, "%"),
            ("jitter", f.jitter_ms, self.max_jitter_ms, "ms"),
        ] {
            let Some(limit) = limit else { continue };
            let limit = limit * scale;
            // A zero limit: any amount over it is as bad as 1,000 times a limit.
            let ratio = if limit > 0.0 {
                value / limit
            } else if value > 0.0 {
                1e3
            } else {
                0.0
            };
            worst = worst.max(ratio);
            if value > limit {
                over.push(format!("{what} {value:.1} {unit} > {limit:.1}"));
            }
        }
        if over.is_empty() {
            Verdict::Complies { worst }
        } else {
            Verdict::Violates { over, worst }
        }
    }
}

impl fmt::Display for Sla {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        if let Some(v) = self.max_latency_ms {
            parts.push(format!("rtt ≤ {v} ms"));
        }
        if let Some(v) = self.max_loss_pct {
            parts.push(format!("loss ≤ {v} %"));
        }
        if let Some(v) = self.max_jitter_ms {
            parts.push(format!("jitter ≤ {v} ms"));
        }
        f.write_str(&parts.join(", "))
    }
}

/// What a decision under an SLA can turn on in one path's figures, for a class whose SLA is met:
/// the kind of verdict and whether the path complies with the margin. Two figures with the same
/// standing on every candidate lead [`decide`] to the same step for such a class (a property test
/// below checks it); the values themselves matter only to pick the least bad path when nothing
/// complies, and to the reasons written. A caller may skip re-deciding a class whose SLA is met
/// while its candidates' standings stay the same.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Standing {
    pub kind: Kind,
    pub good: bool,
}

/// The kind of a [`Verdict`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    Complies,
    Violates,
    Unknown,
    Down,
}

impl Sla {
    /// Whether the figures are within every limit × `scale` (none: not judged, down or unknown),
    /// without writing what is over.
    fn within(&self, f: &Figures, scale: f64) -> Option<bool> {
        if !f.up {
            return None;
        }
        let rtt = f.rtt_ms?;
        let ok = |value: f64, limit: Option<f64>| limit.is_none_or(|l| value <= l * scale);
        Some(ok(rtt, self.max_latency_ms) && ok(f.loss_pct, self.max_loss_pct) && ok(f.jitter_ms, self.max_jitter_ms))
    }

    /// The figures' [`Standing`] under this SLA with `damping`'s margin.
    pub fn standing(&self, f: &Figures, damping: &Damping) -> Standing {
        let kind = match self.within(f, 1.0) {
            _ if !f.up => Kind::Down,
            None => Kind::Unknown,
            Some(true) => Kind::Complies,
            Some(false) => Kind::Violates,
        };
        Standing {
            kind,
            good: self.within(f, 1.0 - damping.hysteresis) == Some(true),
        }
    }
}

/// One path against an SLA.
#[derive(Clone, Debug, PartialEq)]
pub enum Verdict {
    /// `worst`: the largest figure-to-limit ratio (≤ 1).
    Complies {
        worst: f64,
    },
    Violates {
        over: Vec<String>,
        worst: f64,
    },
    Unknown,
    Down,
}

impl Verdict {
    pub fn complies(&self) -> bool {
        matches!(self, Verdict::Complies { .. })
    }

    /// How bad, for picking the least bad path: the worst ratio; unknown after every measured
    /// path, down last.
    fn badness(&self) -> f64 {
        match self {
            Verdict::Complies { worst } | Verdict::Violates { worst, .. } => *worst,
            Verdict::Unknown => 1e12,
            Verdict::Down => f64::INFINITY,
        }
    }
}

/// A candidate path of a class towards one remote site: an overlay's tunnel on one underlay.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PathId {
    pub overlay: String,
    pub underlay: String,
}

impl fmt::Display for PathId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.overlay, self.underlay)
    }
}

/// How decisions are damped.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Damping {
    /// Entering a path needs every limit × (1 − hysteresis).
    pub hysteresis: f64,
    /// … held this long without a break.
    #[serde(with = "secs")]
    pub hold: Duration,
}

impl Default for Damping {
    fn default() -> Self {
        Damping {
            hysteresis: 0.1,
            hold: Duration::from_secs(5),
        }
    }
}

/// What the decision function remembers for one (class, remote site).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SteerState {
    /// The paths the class is on (one, or several when balanced), in preference order.
    pub chosen: Vec<PathId>,
    /// Whether the chosen paths meet the SLA (none: not known yet).
    pub met: Option<bool>,
    /// Since when each path has complied with the margin, without a break.
    #[serde(skip)]
    pub good_since: BTreeMap<PathId, Duration>,
}

/// A change of paths (or of whether the SLA is met), with its reason.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Change {
    pub from: Vec<PathId>,
    pub to: Vec<PathId>,
    pub met: Option<bool>,
    pub reason: String,
}

fn names(p: &[PathId]) -> String {
    if p.is_empty() {
        "none".into()
    } else {
        p.iter().map(|p| p.to_string()).collect::<Vec<_>>().join(" + ")
    }
}

fn describe(p: &PathId, f: &Figures) -> String {
    format!("{p}: {f}")
}

/// One step of the decision for a class towards a remote site: `candidates` in preference order
/// with their current figures, at time `now`. Changes `state` and says what changed, if anything.
pub fn decide(
    sla: &Sla,
    balance: bool,
    candidates: &[(PathId, Figures)],
    state: &mut SteerState,
    now: Duration,
    damping: &Damping,
) -> Option<Change> {
    let verdicts: Vec<Verdict> = candidates.iter().map(|(_, f)| sla.judge(f, 1.0)).collect();
    for (p, f) in candidates {
        if sla.within(f, 1.0 - damping.hysteresis) == Some(true) {
            state.good_since.entry(p.clone()).or_insert(now);
        } else {
            state.good_since.remove(p);
        }
    }
    state.good_since.retain(|p, _| candidates.iter().any(|(c, _)| c == p));
    let held = |p: &PathId| {
        state
            .good_since
            .get(p)
            .is_some_and(|since| now.saturating_sub(*since) >= damping.hold)
    };
    let index = |p: &PathId| candidates.iter().position(|(c, _)| c == p);
    let chosen: Vec<usize> = state.chosen.iter().filter_map(index).collect();
    // A chosen path stays while nothing says it fails the SLA.
    let stays = |i: usize| matches!(verdicts[i], Verdict::Complies { .. } | Verdict::Unknown);
    let figures = |is: &[usize]| {
        is.iter()
            .map(|&i| describe(&candidates[i].0, &candidates[i].1))
            .collect::<Vec<_>>()
            .join("; ")
    };
    let leaving: Vec<usize> = chosen.iter().copied().filter(|&i| !stays(i)).collect();
    let compliant: Vec<usize> = (0..candidates.len()).filter(|&i| verdicts[i].complies()).collect();

    let (to, met, reason): (Vec<usize>, Option<bool>, String) = if candidates.is_empty() {
        (Vec::new(), Some(false), "no path to the site".into())
    } else if chosen.is_empty() && verdicts.iter().all(|v| *v == Verdict::Unknown) {
        (
            vec![0],
            None,
            format!("no figures yet: the first preference, {}", candidates[0].0),
        )
    } else if balance {
        let kept: Vec<usize> = chosen.iter().copied().filter(|&i| stays(i)).collect();
        let added: Vec<usize> = compliant
            .iter()
            .copied()
            .filter(|i| !kept.contains(i) && (held(&candidates[*i].0) || chosen.is_empty()))
            .collect();
        let mut set: Vec<usize> = kept.iter().chain(&added).copied().collect();
        set.sort_unstable();
        if !set.is_empty() {
            let mut why = Vec::new();
            if !leaving.is_empty() {
                why.push(format!(
                    "leaving {} ({})",
                    idx_names(candidates, &leaving),
                    figures(&leaving)
                ));
            }
            if !added.is_empty() && !chosen.is_empty() {
                why.push(format!(
                    "{} complied for {} s",
                    idx_names(candidates, &added),
                    damping.hold.as_secs_f64()
                ));
            }
            if why.is_empty() {
                why.push(format!("complying paths: {}", figures(&set)));
            }
            (set, Some(true), why.join("; "))
        } else if !compliant.is_empty() {
            (
                compliant.clone(),
                Some(true),
                format!(
                    "leaving {} ({}); complying now: {}",
                    idx_names(candidates, &leaving),
                    figures(&leaving),
                    figures(&compliant)
                ),
            )
        } else {
            least_bad(sla, candidates, &verdicts, &chosen, damping)
        }
    } else {
        let current = chosen.first().copied();
        match current {
            Some(c) if stays(c) => match (0..c).find(|&i| verdicts[i].complies() && held(&candidates[i].0)) {
                Some(better) => (
                    vec![better],
                    Some(true),
                    format!(
                        "failback: {} complied with a {:.0} % margin for {} s ({}), preferred to {}",
                        candidates[better].0,
                        damping.hysteresis * 100.0,
                        damping.hold.as_secs_f64(),
                        figures(&[better]),
                        candidates[c].0
                    ),
                ),
                None => (
                    vec![c],
                    if verdicts[c].complies() { Some(true) } else { state.met },
                    format!("{} complies ({})", candidates[c].0, figures(&[c])),
                ),
            },
            _ => match compliant.first() {
                Some(&best) => (
                    vec![best],
                    Some(true),
                    match current {
                        Some(c) => format!(
                            "{} fails the SLA ({}): {}; {} complies ({})",
                            candidates[c].0,
                            sla,
                            over_text(&verdicts[c], &candidates[c].1),
                            candidates[best].0,
                            figures(&[best])
                        ),
                        None => format!("{} complies ({})", candidates[best].0, figures(&[best])),
                    },
                ),
                None => least_bad(sla, candidates, &verdicts, &chosen, damping),
            },
        }
    };
    let to: Vec<PathId> = to.iter().map(|&i| candidates[i].0.clone()).collect();
    if to == state.chosen && met == state.met {
        return None;
    }
    let change = Change {
        from: std::mem::replace(&mut state.chosen, to.clone()),
        to,
        met,
        reason,
    };
    state.met = met;
    Some(change)
}

fn idx_names(candidates: &[(PathId, Figures)], is: &[usize]) -> String {
    names(&is.iter().map(|&i| candidates[i].0.clone()).collect::<Vec<_>>())
}

fn over_text(v: &Verdict, f: &Figures) -> String {
    match v {
        Verdict::Violates { over, .. } => over.join(", "),
        Verdict::Down => f.to_string(),
        _ => "complies".into(),
    }
}

/// No candidate complies: the least bad one; a chosen one is left only for one better by the
/// margin (or when it is down).
fn least_bad(
    sla: &Sla,
    candidates: &[(PathId, Figures)],
    verdicts: &[Verdict],
    chosen: &[usize],
    damping: &Damping,
) -> (Vec<usize>, Option<bool>, String) {
    let best = (0..candidates.len())
        .min_by(|&a, &b| verdicts[a].badness().total_cmp(&verdicts[b].badness()).then(a.cmp(&b)))
        .unwrap_or(0);
    let pick = match chosen.first() {
        Some(&c)
            if verdicts[c] != Verdict::Down
                && verdicts[best].badness() >= verdicts[c].badness() * (1.0 - damping.hysteresis) =>
        {
            c
        }
        _ => best,
    };
    let all = (0..candidates.len())
        .map(|i| format!("{} ({})", candidates[i].0, over_text(&verdicts[i], &candidates[i].1)))
        .collect::<Vec<_>>()
        .join("; ");
    (
        vec![pick],
        Some(false),
        format!(
            "the SLA ({sla}) cannot be met: no path complies ({all}); the least bad is {}",
            candidates[pick].0
        ),
    )
}

mod secs {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let s = f64::deserialize(d)?;
        if !s.is_finite() || s < 0.0 {
            return Err(serde::de::Error::custom(format!("{s} is not a number of seconds ≥ 0")));
        }
        Ok(Duration::from_secs_f64(s))
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const SLA: Sla = Sla {
        max_latency_ms: Some(40.0),
        max_loss_pct: Some(1.0),
        max_jitter_ms: Some(10.0),
    };

    fn p(u: &str) -> PathId {
        PathId {
            overlay: "voip".into(),
            underlay: u.into(),
        }
    }

    fn fig(rtt: f64, loss: f64) -> Figures {
        Figures {
            up: true,
            rtt_ms: Some(rtt),
            srtt_ms: Some(rtt),
            jitter_ms: 0.5,
            loss_pct: loss,
            samples: 100,
            lost_in_row: 0,
        }
    }

    fn down() -> Figures {
        Figures {
            up: false,
            lost_in_row: 2,
            ..Figures::default()
        }
    }

    fn secs(s: f64) -> Duration {
        Duration::from_secs_f64(s)
    }

    #[test]
    fn slas_are_checked() {
        assert!(SLA.check().is_ok());
        assert!(Sla::default().check().unwrap_err().contains("at least one"));
        let bad = Sla {
            max_latency_ms: Some(-1.0),
            ..Sla::default()
        };
        assert!(bad.check().unwrap_err().contains("max_latency_ms -1"));
        let bad = Sla {
            max_loss_pct: Some(101.0),
            ..Sla::default()
        };
        assert!(bad.check().unwrap_err().contains("over 100"));
        let nan = Sla {
            max_jitter_ms: Some(f64::NAN),
            ..Sla::default()
        };
        assert!(nan.check().is_err());
    }

    #[test]
    fn verdicts_name_every_limit_passed() {
        assert!(SLA.judge(&fig(30.0, 0.0), 1.0).complies());
        assert!(
            !SLA.judge(&fig(38.0, 0.0), 0.9).complies(),
            "inside the SLA, not inside the margin"
        );
        match SLA.judge(&fig(60.0, 3.0), 1.0) {
            Verdict::Violates { over, worst } => {
                assert_eq!(over, vec!["rtt 60.0 ms > 40.0", "loss 3.0 % > 1.0"]);
                assert!((worst - 3.0).abs() < 1e-9);
            }
            v => panic!("{v:?}"),
        }
        assert_eq!(SLA.judge(&down(), 1.0), Verdict::Down);
        assert_eq!(
            SLA.judge(
                &Figures {
                    up: true,
                    ..Figures::default()
                },
                1.0
            ),
            Verdict::Unknown
        );
    }

    #[test]
    fn leaving_is_immediate_and_failback_waits_for_the_damping() {
        let d = Damping::default();
        let mut s = SteerState::default();
        let c = decide(
            &SLA,
            false,
            &[(p("mpls"), fig(8.0, 0.0)), (p("inet"), fig(24.0, 0.0))],
            &mut s,
            secs(1.0),
            &d,
        )
        .unwrap();
        assert_eq!(c.to, vec![p("mpls")]);
        // Brownout on mpls: off it at once.
        let bad = [(p("mpls"), fig(70.0, 0.0)), (p("inet"), fig(24.0, 0.0))];
        let c = decide(&SLA, false, &bad, &mut s, secs(2.0), &d).unwrap();
        assert_eq!((c.from, c.to, c.met), (vec![p("mpls")], vec![p("inet")], Some(true)));
        assert!(
            c.reason.contains("voip/mpls fails the SLA") && c.reason.contains("rtt 70.0 ms > 40.0"),
            "{}",
            c.reason
        );
        // mpls recovers: nothing until it has complied (with the margin) for 5 s.
        let good = [(p("mpls"), fig(8.0, 0.0)), (p("inet"), fig(24.0, 0.0))];
        assert_eq!(decide(&SLA, false, &good, &mut s, secs(3.0), &d), None);
        assert_eq!(decide(&SLA, false, &good, &mut s, secs(7.9), &d), None);
        let c = decide(&SLA, false, &good, &mut s, secs(8.0), &d).unwrap();
        assert_eq!(c.to, vec![p("mpls")]);
        assert!(c.reason.starts_with("failback"), "{}", c.reason);
    }

    #[test]
    fn a_break_in_compliance_restarts_the_damping() {
        let d = Damping::default();
        let mut s = SteerState {
            chosen: vec![p("inet")],
            met: Some(true),
            ..SteerState::default()
        };
        let good = [(p("mpls"), fig(8.0, 0.0)), (p("inet"), fig(24.0, 0.0))];
        // Within the SLA but not within the margin (38 > 36) breaks the run.
        let edge = [(p("mpls"), fig(38.0, 0.0)), (p("inet"), fig(24.0, 0.0))];
        assert_eq!(decide(&SLA, false, &good, &mut s, secs(0.0), &d), None);
        assert_eq!(decide(&SLA, false, &edge, &mut s, secs(4.0), &d), None);
        assert_eq!(decide(&SLA, false, &good, &mut s, secs(4.5), &d), None);
        assert_eq!(decide(&SLA, false, &good, &mut s, secs(9.4), &d), None);
        assert!(decide(&SLA, false, &good, &mut s, secs(9.5), &d).is_some());
    }

    #[test]
    fn without_a_compliant_path_the_least_bad_is_taken_and_said() {
        let d = Damping::default();
        let mut s = SteerState {
            chosen: vec![p("mpls")],
            met: Some(true),
            ..SteerState::default()
        };
        let c = decide(
            &SLA,
            false,
            &[(p("mpls"), fig(90.0, 0.0)), (p("inet"), fig(45.0, 0.0))],
            &mut s,
            secs(1.0),
            &d,
        )
        .unwrap();
        assert_eq!((c.to, c.met), (vec![p("inet")], Some(false)));
        assert!(
            c.reason.contains("cannot be met") && c.reason.contains("least bad is voip/inet"),
            "{}",
            c.reason
        );
        // mpls now slightly better, not by the margin: stay.
        assert_eq!(
            decide(
                &SLA,
                false,
                &[(p("mpls"), fig(44.0, 0.0)), (p("inet"), fig(45.0, 0.0))],
                &mut s,
                secs(2.0),
                &d
            ),
            None
        );
        // inet down: to mpls, still not met.
        let c = decide(
            &SLA,
            false,
            &[(p("mpls"), fig(44.0, 0.0)), (p("inet"), down())],
            &mut s,
            secs(3.0),
            &d,
        )
        .unwrap();
        assert_eq!((c.to, c.met), (vec![p("mpls")], Some(false)));
        // mpls complies again: met, at once (leaving a failing path is not damped).
        let c = decide(
            &SLA,
            false,
            &[(p("mpls"), fig(30.0, 0.0)), (p("inet"), down())],
            &mut s,
            secs(4.0),
            &d,
        )
        .unwrap();
        assert_eq!((c.to, c.met), (vec![p("mpls")], Some(true)));
    }

    #[test]
    fn unknown_figures_keep_the_class_where_it_is() {
        let d = Damping::default();
        let unknown = Figures {
            up: true,
            ..Figures::default()
        };
        // A restarted edge: the class is on inet (from the store), nothing measured yet.
        let mut s = SteerState {
            chosen: vec![p("inet")],
            met: Some(true),
            ..SteerState::default()
        };
        assert_eq!(
            decide(
                &SLA,
                false,
                &[(p("mpls"), unknown), (p("inet"), unknown)],
                &mut s,
                secs(0.1),
                &d
            ),
            None
        );
        // Fresh: the first preference, SLA unknown.
        let mut s = SteerState::default();
        let c = decide(
            &SLA,
            false,
            &[(p("mpls"), unknown), (p("inet"), unknown)],
            &mut s,
            secs(0.1),
            &d,
        )
        .unwrap();
        assert_eq!((c.to, c.met), (vec![p("mpls")], None));
    }

    #[test]
    fn balance_spreads_over_compliant_paths_and_keeps_the_ones_that_still_comply() {
        let d = Damping::default();
        let mut s = SteerState::default();
        let all = [
            (p("mpls"), fig(8.0, 0.0)),
            (p("inet"), fig(24.0, 0.0)),
            (p("lte"), fig(80.0, 0.0)),
        ];
        assert_eq!(
            decide(&SLA, true, &all, &mut s, secs(0.0), &d).unwrap().to,
            vec![p("mpls"), p("inet")]
        );
        // inet fails: only mpls; flows on mpls stay.
        let c = decide(
            &SLA,
            true,
            &[
                (p("mpls"), fig(8.0, 0.0)),
                (p("inet"), down()),
                (p("lte"), fig(80.0, 0.0)),
            ],
            &mut s,
            secs(1.0),
            &d,
        )
        .unwrap();
        assert_eq!(c.to, vec![p("mpls")]);
        // inet back: added after the damping only.
        assert_eq!(decide(&SLA, true, &all, &mut s, secs(2.0), &d), None);
        assert_eq!(
            decide(&SLA, true, &all, &mut s, secs(7.0), &d).unwrap().to,
            vec![p("mpls"), p("inet")]
        );
        // Every path down: the least bad single one, not met.
        let c = decide(
            &SLA,
            true,
            &[(p("mpls"), down()), (p("inet"), down()), (p("lte"), fig(80.0, 0.0))],
            &mut s,
            secs(8.0),
            &d,
        )
        .unwrap();
        assert_eq!((c.to, c.met), (vec![p("lte")], Some(false)));
    }

    fn arb_figures() -> impl Strategy<Value = Figures> {
        prop_oneof![
            4 => (0.0f64..120.0, prop_oneof![3 => Just(0.0), 1 => 0.0f64..10.0], 0.0f64..20.0).prop_map(|(r, l, j)| Figures {
                jitter_ms: j,
                ..fig(r, l)
            }),
            1 => Just(down()),
        ]
    }

    proptest! {
        /// Whatever the figures, after a step the class is never on a failing path while another
        /// complies, never on no path, and says the SLA is met exactly when its paths comply.
        #[test]
        fn never_on_a_failing_path_when_one_complies(
            steps in prop::collection::vec(prop::collection::vec(arb_figures(), 3), 1..40),
            balance in any::<bool>(),
        ) {
            let d = Damping::default();
            let mut s = SteerState::default();
            let ids = [p("mpls"), p("inet"), p("lte")];
            for (n, figs) in steps.iter().enumerate() {
                let c: Vec<_> = ids.iter().cloned().zip(figs.iter().copied()).collect();
                decide(&SLA, balance, &c, &mut s, secs(n as f64 * 0.1), &d);
                prop_assert!(!s.chosen.is_empty());
                prop_assert!(balance || s.chosen.len() == 1);
                let ok = |id: &PathId| c.iter().any(|(i, f)| i == id && SLA.judge(f, 1.0).complies());
                let any_ok = c.iter().any(|(_, f)| SLA.judge(f, 1.0).complies());
                prop_assert_eq!(s.chosen.iter().all(ok), any_ok, "chosen {:?} with {:?}", s.chosen, figs);
                prop_assert_eq!(s.met, Some(any_ok));
            }
        }

        /// With figures that do not change, the decision settles: at most one change after the
        /// first (a failback once the damping has passed), none after that.
        #[test]
        fn steady_figures_do_not_flap(figs in prop::collection::vec(arb_figures(), 3), start in 0usize..3, balance in any::<bool>()) {
            let d = Damping::default();
            let ids = [p("mpls"), p("inet"), p("lte")];
            let mut s = SteerState { chosen: vec![ids[start].clone()], met: Some(true), ..SteerState::default() };
            let c: Vec<_> = ids.iter().cloned().zip(figs.iter().copied()).collect();
            let changes = (0..200).filter(|n| decide(&SLA, balance, &c, &mut s, secs(*n as f64 * 0.1), &d).is_some()).count();
            prop_assert!(changes <= 2, "{changes} changes");
        }

        /// For a class whose SLA is met, only the candidates' standings matter: the next step
        /// with other figures of the same standings is the step with the old figures.
        #[test]
        fn a_met_class_turns_only_on_standings(
            before in prop::collection::vec(arb_figures(), 3),
            after in prop::collection::vec(arb_figures(), 3),
            balance in any::<bool>(),
            later in 0.0f64..10.0,
        ) {
            let d = Damping::default();
            let ids = [p("mpls"), p("inet"), p("lte")];
            // Other figures where they stand the same, the old ones elsewhere.
            let after: Vec<Figures> = before
                .iter()
                .zip(&after)
                .map(|(a, b)| if SLA.standing(a, &d) == SLA.standing(b, &d) { *b } else { *a })
                .collect();
            let c1: Vec<_> = ids.iter().cloned().zip(before.iter().copied()).collect();
            let c2: Vec<_> = ids.iter().cloned().zip(after.iter().copied()).collect();
            let mut s = SteerState::default();
            decide(&SLA, balance, &c1, &mut s, secs(0.0), &d);
            prop_assume!(s.met == Some(true));
            let (mut s1, mut s2) = (s.clone(), s);
            let a = decide(&SLA, balance, &c1, &mut s1, secs(later), &d).map(|c| (c.to, c.met));
            let b = decide(&SLA, balance, &c2, &mut s2, secs(later), &d).map(|c| (c.to, c.met));
            prop_assert_eq!(a, b);
            prop_assert_eq!(s1, s2);
        }

        /// Balanced: a path that was chosen and still complies stays chosen (its flows never move).
        #[test]
        fn balanced_paths_that_comply_stay(
            steps in prop::collection::vec(prop::collection::vec(arb_figures(), 3), 2..40),
        ) {
            let d = Damping::default();
            let mut s = SteerState::default();
            let ids = [p("mpls"), p("inet"), p("lte")];
            for (n, figs) in steps.iter().enumerate() {
                let before = s.chosen.clone();
                let c: Vec<_> = ids.iter().cloned().zip(figs.iter().copied()).collect();
                decide(&SLA, true, &c, &mut s, secs(n as f64 * 0.1), &d);
                for (id, f) in &c {
                    if before.contains(id) && SLA.judge(f, 1.0).complies() {
                        prop_assert!(s.chosen.contains(id), "{} complies but was dropped", id);
                    }
                }
            }
        }
    }
}
