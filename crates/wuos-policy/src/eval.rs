//! Placement: the first rule of a service that some candidate satisfies, and why.
//!
//! [`Service::evaluate`] tries the rules in order:
//!
//! - `place local`: the candidate with 0 hops;
//! - `place nearby within N hops`: every `edge` or `fog` candidate 1..=N hops away; of the
//!   viable ones, the best by the rule's `prefer` (default `fewest hops`), ties to the smallest
//!   name;
//! - `place at NAME`: the candidate called NAME.
//!
//! A candidate is viable for a rule when it is not stale, not excluded by the caller and
//! satisfies the rule's condition. The first rule with a viable candidate wins; when none has
//! one, the `otherwise` fallback does, unconditionally.
//!
//! One pass over the candidates per rule, no allocation per candidate or comparison: the
//! [`Explanation`] records which candidate each checked rule looked at, and renders the
//! comparisons only when displayed.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::candidate::Candidate;
use crate::policy::{CmpOp, Cond, Fallback, Metric, Prefer, Rule, Service, Target};

/// Where a service runs, as seen from the router that evaluates.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Placement {
    /// On the evaluating router.
    Local,
    /// On another router.
    Router(String),
    /// In the data centre (which always runs it).
    Datacenter,
}

impl fmt::Display for Placement {
    /// `local`, the router's name, or `datacenter`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Placement::Local => f.write_str("local"),
            Placement::Router(name) => f.write_str(name),
            Placement::Datacenter => f.write_str("datacenter"),
        }
    }
}

/// Which rule of a service chose a placement. Orders like the rules: earlier is better, the
/// fallback last.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RuleRef {
    /// `place ...` rule, 0-based index into [`Service::rules`] (displayed 1-based).
    Place(usize),
    /// The `otherwise` line.
    Otherwise,
}

impl fmt::Display for RuleRef {
    /// `rule 1`, `rule 2`, ... or `otherwise`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RuleRef::Place(i) => write!(f, "rule {}", i + 1),
            RuleRef::Otherwise => f.write_str("otherwise"),
        }
    }
}

/// Knobs of one evaluation.
#[derive(Clone, Copy, Debug, Default)]
pub struct EvalOptions<'o> {
    /// Routers not to choose (e.g. where an instance just failed to start); treated like stale
    /// ones, and explained as `excluded`.
    pub exclude: &'o [String],
    /// The router whose failure a `place nearby` explanation shows, when it is among the
    /// failures (usually the router serving now); otherwise the failure with the smallest name.
    pub focus: Option<&'o str>,
}

impl EvalOptions<'_> {
    fn excluded(&self, c: &Candidate) -> bool {
        self.exclude.contains(&c.name)
    }
}

/// Why a candidate was not viable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Why {
    Stale,
    Excluded,
    Failed,
}

/// What checking one rule found (indices into the candidates).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Verdict {
    /// Viable: `candidate` won among `viable` viable ones.
    Chosen { candidate: usize, viable: u32 },
    /// `local` without a 0-hop candidate, or `at NAME` without NAME.
    Missing,
    /// The one candidate of a `local` or `at` rule was not viable.
    Not(usize, Why),
    /// No candidate of a `nearby` rule was viable.
    NoneViable {
        in_range: u32,
        stale: u32,
        excluded: u32,
        failed: u32,
        example: Option<(usize, Why)>,
    },
}

/// One comparison of a condition against a candidate.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Comparison {
    /// The figure.
    pub metric: Metric,
    /// The operator.
    pub op: CmpOp,
    /// The number in the rule.
    pub threshold: f64,
    /// The candidate's figure; `None` when missing.
    pub value: Option<f64>,
    /// Whether the comparison holds (false when the figure is missing).
    pub holds: bool,
}

impl fmt::Display for Comparison {
    /// `mem.used_pct 12.4 < 30 ✓`, or `cpu.pressure missing ✗`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mark = if self.holds { "✓" } else { "✗" };
        match self.value {
            Some(v) => write!(f, "{} {} {} {} {mark}", self.metric, Figure(v), self.op, self.threshold),
            None => write!(f, "{} missing {mark}", self.metric),
        }
    }
}

/// A measured figure: one decimal, or two when one would lose it (`12.4`, `8.0`, `0.35`).
struct Figure(f64);

impl fmt::Display for Figure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let v = self.0;
        if ((v * 10.0).round() / 10.0 - v).abs() < 1e-9 {
            write!(f, "{v:.1}")
        } else {
            write!(f, "{v:.2}")
        }
    }
}

/// Why an [`Evaluation`] chose what it chose: every rule checked, in order, with the candidate
/// it looked at and the figures compared. Rendered by `Display`, only when asked, e.g.
///
/// `rule 1 "place local when mem.used_pct < 30": mem.used_pct 41.2 < 30 ✗; rule 2 "place
/// nearby within 2 hops when mem.used_pct < 30 prefer lowest latency": r3 (2 hops, latency 1.0
/// ms; best of 2 by lowest latency): mem.used_pct 12.0 < 30 ✓`
#[derive(Clone, Debug)]
pub struct Explanation<'a> {
    service: &'a Service,
    candidates: &'a [Candidate],
    checks: Vec<Verdict>,
    fallback: bool,
}

/// The outcome of [`Service::evaluate`].
#[derive(Clone, Debug)]
pub struct Evaluation<'a> {
    /// Where the service should run.
    pub placement: Placement,
    /// The rule that chose it.
    pub rule: RuleRef,
    /// Why.
    pub explanation: Explanation<'a>,
}

impl<'a> Evaluation<'a> {
    /// The candidate chosen by a `place` rule (`None` for the fallback).
    pub fn candidate(&self) -> Option<&'a Candidate> {
        self.explanation.chosen().map(|(_, c)| c)
    }
}

impl<'a> Explanation<'a> {
    /// The chosen rule and candidate, if a `place` rule won.
    fn chosen(&self) -> Option<(&'a Rule, &'a Candidate)> {
        match self.checks.last() {
            Some(Verdict::Chosen { candidate, .. }) if !self.fallback => {
                let rule = self.service.rules.get(self.checks.len() - 1)?;
                Some((rule, self.candidates.get(*candidate)?))
            }
            _ => None,
        }
    }

    /// The comparisons of the winning rule's condition against the chosen candidate, in source
    /// order (empty when the fallback won).
    pub fn comparisons(&self) -> Vec<Comparison> {
        let mut out = Vec::new();
        if let Some((rule, c)) = self.chosen() {
            rule.when.for_each_comparison(&mut |metric, op, threshold| {
                let value = c.value(metric);
                out.push(Comparison {
                    metric,
                    op,
                    threshold,
                    value,
                    holds: value.is_some_and(|v| op.apply(v, threshold)),
                });
            });
        }
        out
    }

    /// `CANDIDATE (N hops, latency X ms): ` before a trace; nothing for `place local`.
    fn write_who(&self, f: &mut fmt::Formatter<'_>, rule: &Rule, c: &Candidate, viable: u32) -> fmt::Result {
        match rule.target {
            Target::Local => Ok(()),
            Target::At(_) => write!(f, "{}: ", c.name),
            Target::Nearby { .. } => {
                let s = if c.hops == 1 { "" } else { "s" };
                write!(f, "{} ({} hop{s}, ", c.name, c.hops)?;
                match c.value(Metric::LatencyMs) {
                    Some(l) => write!(f, "latency {} ms", Figure(l))?,
                    None => f.write_str("latency unknown")?,
                }
                if viable > 1 {
                    let prefer = rule.prefer.unwrap_or(Prefer::FewestHops);
                    write!(f, "; best of {viable} by {prefer}")?;
                }
                f.write_str("): ")
            }
        }
    }

    /// `a ✓, b ✗, ...`: every comparison of `cond` against `c`.
    fn write_trace(f: &mut fmt::Formatter<'_>, cond: &Cond, c: &Candidate) -> fmt::Result {
        let mut res = Ok(());
        let mut first = true;
        cond.for_each_comparison(&mut |metric, op, threshold| {
            if res.is_err() {
                return;
            }
            let value = c.value(metric);
            let cmp = Comparison {
                metric,
                op,
                threshold,
                value,
                holds: value.is_some_and(|v| op.apply(v, threshold)),
            };
            res = if first {
                write!(f, "{cmp}")
            } else {
                write!(f, ", {cmp}")
            };
            first = false;
        });
        res
    }

    fn write_not(&self, f: &mut fmt::Formatter<'_>, rule: &Rule, c: &Candidate, why: Why) -> fmt::Result {
        let name = if matches!(rule.target, Target::Local) {
            "local router"
        } else {
            c.name.as_str()
        };
        match why {
            Why::Stale => write!(f, "{name} stale"),
            Why::Excluded => write!(f, "{name} excluded"),
            Why::Failed => {
                self.write_who(f, rule, c, 1)?;
                Self::write_trace(f, &rule.when, c)
            }
        }
    }

    fn write_check(&self, f: &mut fmt::Formatter<'_>, number: usize, rule: &Rule, v: Verdict) -> fmt::Result {
        write!(f, "rule {number} \"{}\": ", rule.text)?;
        let cand = |i: usize| self.candidates.get(i);
        match v {
            Verdict::Chosen { candidate, viable } => {
                let Some(c) = cand(candidate) else { return Ok(()) };
                self.write_who(f, rule, c, viable)?;
                Self::write_trace(f, &rule.when, c)
            }
            Verdict::Missing => match &rule.target {
                Target::At(name) => write!(f, "{name} not in the neighborhood"),
                _ => f.write_str("no local router in the telemetry"),
            },
            Verdict::Not(i, why) => match cand(i) {
                Some(c) => self.write_not(f, rule, c, why),
                None => Ok(()),
            },
            Verdict::NoneViable {
                in_range,
                stale,
                excluded,
                failed,
                example,
            } => {
                let within = match rule.target {
                    Target::Nearby { within_hops: 1 } => "1 hop".to_string(),
                    Target::Nearby { within_hops } => format!("{within_hops} hops"),
                    _ => String::new(),
                };
                if in_range == 0 {
                    return write!(f, "no edge or fog router within {within}");
                }
                let s = if in_range == 1 { "" } else { "s" };
                write!(f, "none of {in_range} router{s} within {within} is viable (")?;
                let mut sep = "";
                for (n, what) in [
                    (stale, "stale"),
                    (excluded, "excluded"),
                    (failed, "failed the condition"),
                ] {
                    if n > 0 {
                        write!(f, "{sep}{n} {what}")?;
                        sep = ", ";
                    }
                }
                f.write_str(")")?;
                if let Some((i, why)) = example
                    && let Some(c) = cand(i)
                {
                    f.write_str("; ")?;
                    if why == Why::Failed {
                        // Name the router even though it is a `nearby` rule.
                        self.write_who(f, rule, c, 1)?;
                        Self::write_trace(f, &rule.when, c)?;
                    } else {
                        self.write_not(f, rule, c, why)?;
                    }
                }
                Ok(())
            }
        }
    }
}

impl fmt::Display for Explanation<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut sep = "";
        for (i, (rule, v)) in self.service.rules.iter().zip(&self.checks).enumerate() {
            f.write_str(sep)?;
            self.write_check(f, i + 1, rule, *v)?;
            sep = "; ";
        }
        if self.fallback {
            write!(f, "{sep}{}", self.service.fallback)?;
        }
        Ok(())
    }
}

impl Service {
    /// Where the service should run given `candidates` (the evaluating router with 0 hops, and
    /// its neighborhood). See the [module docs](self) for the rules.
    pub fn evaluate<'a>(&'a self, candidates: &'a [Candidate]) -> Evaluation<'a> {
        self.evaluate_with(candidates, &EvalOptions::default())
    }

    /// [`Service::evaluate`] with options: routers to exclude, the router to explain.
    pub fn evaluate_with<'a>(&'a self, candidates: &'a [Candidate], opts: &EvalOptions<'_>) -> Evaluation<'a> {
        let local = candidates.iter().position(|c| c.hops == 0);
        let mut checks = Vec::with_capacity(self.rules.len());
        for (i, rule) in self.rules.iter().enumerate() {
            let v = check(rule, candidates, local, opts);
            checks.push(v);
            if let Verdict::Chosen { candidate, .. } = v
                && let Some(c) = candidates.get(candidate)
            {
                let placement = if c.hops == 0 {
                    Placement::Local
                } else {
                    Placement::Router(c.name.clone())
                };
                return Evaluation {
                    placement,
                    rule: RuleRef::Place(i),
                    explanation: Explanation {
                        service: self,
                        candidates,
                        checks,
                        fallback: false,
                    },
                };
            }
        }
        let placement = match &self.fallback {
            Fallback::Datacenter => Placement::Datacenter,
            Fallback::Local => Placement::Local,
            Fallback::At(name) if local.and_then(|i| candidates.get(i)).is_some_and(|c| c.name == *name) => {
                Placement::Local
            }
            Fallback::At(name) => Placement::Router(name.clone()),
        };
        Evaluation {
            placement,
            rule: RuleRef::Otherwise,
            explanation: Explanation {
                service: self,
                candidates,
                checks,
                fallback: true,
            },
        }
    }

    /// The earliest rule under which `placement` is viable now, if any: the current placement
    /// is kept while this is `Some`. The fallback's own placement is always viable (under
    /// [`RuleRef::Otherwise`]); [`Placement::Datacenter`] is viable only that way.
    ///
    /// Consistent with [`Service::evaluate`]: for candidates with distinct names,
    /// `viable_rule(evaluate().placement) == Some(evaluate().rule)`.
    pub fn viable_rule(
        &self,
        candidates: &[Candidate],
        placement: &Placement,
        opts: &EvalOptions<'_>,
    ) -> Option<RuleRef> {
        let found = match placement {
            Placement::Local => candidates.iter().find(|c| c.hops == 0),
            Placement::Router(name) => candidates.iter().find(|c| c.name == *name),
            Placement::Datacenter => None,
        };
        if let Some(c) = found
            && !c.stale
            && !opts.excluded(c)
        {
            for (i, rule) in self.rules.iter().enumerate() {
                let applies = match &rule.target {
                    Target::Local => c.hops == 0,
                    Target::Nearby { within_hops } => c.is_nearby(*within_hops),
                    Target::At(name) => c.name == *name,
                };
                if applies && rule.when.holds(c) {
                    return Some(RuleRef::Place(i));
                }
            }
        }
        let is_local = matches!(placement, Placement::Local) || found.is_some_and(|c| c.hops == 0);
        let fallback = match (&self.fallback, placement) {
            (Fallback::Datacenter, Placement::Datacenter) => true,
            (Fallback::Local, _) => is_local,
            (Fallback::At(name), Placement::Router(p)) => name == p,
            (Fallback::At(name), Placement::Local) => found.is_some_and(|c| c.name == *name),
            _ => false,
        };
        fallback.then_some(RuleRef::Otherwise)
    }
}

/// Checks one rule; see the module docs.
fn check(rule: &Rule, candidates: &[Candidate], local: Option<usize>, opts: &EvalOptions<'_>) -> Verdict {
    let why_not = |c: &Candidate| {
        if c.stale {
            Some(Why::Stale)
        } else if opts.excluded(c) {
            Some(Why::Excluded)
        } else if !rule.when.holds(c) {
            Some(Why::Failed)
        } else {
            None
        }
    };
    let single = |i: Option<usize>| {
        let Some((i, c)) = i.and_then(|i| Some((i, candidates.get(i)?))) else {
            return Verdict::Missing;
        };
        match why_not(c) {
            Some(why) => Verdict::Not(i, why),
            None => Verdict::Chosen {
                candidate: i,
                viable: 1,
            },
        }
    };
    match &rule.target {
        Target::Local => single(local),
        Target::At(name) => single(candidates.iter().position(|c| c.name == *name)),
        Target::Nearby { within_hops } => {
            let prefer = rule.prefer.unwrap_or(Prefer::FewestHops);
            let (mut in_range, mut stale, mut excluded, mut failed, mut viable) = (0u32, 0u32, 0u32, 0u32, 0u32);
            let mut best: Option<(usize, f64)> = None;
            let mut example: Option<(usize, Why)> = None;
            let is_focus = |c: &Candidate| opts.focus == Some(c.name.as_str());
            for (i, c) in candidates.iter().enumerate() {
                if !c.is_nearby(*within_hops) {
                    continue;
                }
                in_range += 1;
                if let Some(why) = why_not(c) {
                    match why {
                        Why::Stale => stale += 1,
                        Why::Excluded => excluded += 1,
                        Why::Failed => failed += 1,
                    }
                    let keep = example
                        .and_then(|(e, _)| candidates.get(e))
                        .is_some_and(|e| is_focus(e) || (!is_focus(c) && e.name <= c.name));
                    if !keep {
                        example = Some((i, why));
                    }
                    continue;
                }
                viable += 1;
                let key = prefer.key(c);
                let better = match best.and_then(|(b, k)| Some((candidates.get(b)?, k))) {
                    None => true,
                    Some((b, bk)) => key.total_cmp(&bk).then_with(|| c.name.cmp(&b.name)).is_lt(),
                };
                if better {
                    best = Some((i, key));
                }
            }
            match best {
                Some((candidate, _)) => Verdict::Chosen { candidate, viable },
                None => Verdict::NoneViable {
                    in_range,
                    stale,
                    excluded,
                    failed,
                    example,
                },
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use wuos_model::Role;

    use super::*;
    use crate::candidate::Figures;
    use crate::policy::Policy;

    const VOIP: &str = "service voip {
  match udp dport 5060 to 10.255.0.10
  place local when mem.used_pct < 30 and cpu.used_pct < 70
  place nearby within 2 hops when mem.used_pct < 30 prefer lowest latency
  otherwise datacenter
  hold 10s
}";

    fn policy(src: &str) -> Service {
        Policy::parse(src).unwrap().services.remove(0)
    }

    fn cand(name: &str, hops: u32, latency: Option<f64>, cpu: Option<f64>, mem: Option<f64>) -> Candidate {
        Candidate {
            name: name.into(),
            hops,
            latency_ms: latency,
            role: if hops == 0 { Role::Fog } else { Role::Edge },
            stale: false,
            figures: Figures {
                cpu_used_pct: cpu,
                mem_used_pct: mem,
                ..Figures::default()
            },
        }
    }

    #[test]
    fn local_viable() {
        let s = policy(VOIP);
        let cs = [cand("r1", 0, Some(0.0), Some(8.0), Some(12.4))];
        let e = s.evaluate(&cs);
        assert_eq!(e.placement, Placement::Local);
        assert_eq!(e.rule, RuleRef::Place(0));
        assert_eq!(e.candidate().map(|c| c.name.as_str()), Some("r1"));
        assert_eq!(
            e.explanation.to_string(),
            "rule 1 \"place local when mem.used_pct < 30 and cpu.used_pct < 70\": mem.used_pct 12.4 < 30 ✓, \
             cpu.used_pct 8.0 < 70 ✓"
        );
        let cmps = e.explanation.comparisons();
        assert_eq!(cmps.len(), 2);
        assert_eq!(cmps[0].value, Some(12.4));
        assert!(cmps.iter().all(|c| c.holds));
    }

    #[test]
    fn nearby_prefers_lowest_latency_within_range() {
        let s = policy(VOIP);
        let cs = [
            cand("r1", 0, Some(0.0), Some(8.0), Some(41.2)),
            cand("r2", 1, Some(5.0), Some(10.0), Some(10.0)),
            cand("r3", 2, Some(2.0), Some(10.0), Some(20.0)),
            cand("r4", 3, Some(1.0), Some(10.0), Some(1.0)),  // too far
            cand("r5", 1, Some(0.5), Some(10.0), Some(35.0)), // fails the condition
        ];
        let e = s.evaluate(&cs);
        assert_eq!(e.placement, Placement::Router("r3".into()));
        assert_eq!(e.rule, RuleRef::Place(1));
        assert_eq!(
            e.explanation.to_string(),
            "rule 1 \"place local when mem.used_pct < 30 and cpu.used_pct < 70\": mem.used_pct 41.2 < 30 ✗, \
             cpu.used_pct 8.0 < 70 ✓; rule 2 \"place nearby within 2 hops when mem.used_pct < 30 prefer lowest \
             latency\": r3 (2 hops, latency 2.0 ms; best of 2 by lowest latency): mem.used_pct 20.0 < 30 ✓"
        );
    }

    #[test]
    fn prefer_orders_and_ties_by_name() {
        let mk = |prefer: &str| {
            policy(&format!(
                "service s {{ match tcp dport 1 place nearby within 3 hops when hops > 0 {prefer} otherwise datacenter }}"
            ))
        };
        let cs = [
            cand("a", 0, Some(0.0), Some(0.0), Some(0.0)),
            cand("rb", 2, Some(3.0), Some(20.0), Some(5.0)),
            cand("rc", 1, Some(9.0), Some(50.0), Some(60.0)),
            cand("rd", 3, Some(1.0), Some(10.0), Some(70.0)),
            cand("re", 1, None, None, None),
        ];
        let pick = |prefer: &str| match mk(prefer).evaluate(&cs).placement {
            Placement::Router(n) => n,
            other => panic!("expected a router, got {other}"),
        };
        assert_eq!(pick("prefer lowest latency"), "rd");
        assert_eq!(pick("prefer lowest cpu"), "rd");
        assert_eq!(pick("prefer lowest mem"), "rb");
        assert_eq!(
            pick("prefer fewest hops"),
            "rc",
            "rc and re tie at 1 hop; rc is first by name"
        );
        assert_eq!(pick(""), "rc", "the default is fewest hops");
        // Unknown figures sort last; input order does not matter.
        let mut rev = cs.to_vec();
        rev.reverse();
        let e = mk("prefer fewest hops");
        assert_eq!(e.evaluate(&rev).placement, Placement::Router("rc".into()));
        let only_unknown = [cs[0].clone(), cs[4].clone(), cs[2].clone()];
        assert_eq!(
            mk("prefer lowest latency").evaluate(&only_unknown).placement,
            Placement::Router("rc".into())
        );
        // Equal keys: the smallest name.
        let tie = [
            cand("r9", 1, Some(1.0), None, None),
            cand("r10", 1, Some(1.0), None, None),
        ];
        assert_eq!(
            mk("prefer lowest latency").evaluate(&tie).placement,
            Placement::Router("r10".into())
        );
    }

    #[test]
    fn nearby_skips_dc_and_hosts() {
        let s = policy("service s { match tcp dport 1 place nearby within 2 hops when hops > 0 otherwise local }");
        let mut dc = cand("dc1", 1, Some(1.0), None, None);
        dc.role = Role::Dc;
        let mut host = cand("h1", 1, Some(1.0), None, None);
        host.role = Role::Host;
        let cs = [cand("r1", 0, None, None, None), dc, host];
        let e = s.evaluate(&cs);
        assert_eq!(e.placement, Placement::Local);
        assert_eq!(e.rule, RuleRef::Otherwise);
        assert_eq!(
            e.explanation.to_string(),
            "rule 1 \"place nearby within 2 hops when hops > 0\": no edge or fog router within 2 hops; otherwise local"
        );
    }

    #[test]
    fn place_at_and_fallbacks() {
        let s = policy(
            "service s { match tcp dport 1 place at r7 when cpu.used_pct <= 50 place at r1 when hops == 0 otherwise at r9 }",
        );
        let mut cs = vec![
            cand("r1", 0, None, None, None),
            cand("r7", 3, Some(4.0), Some(50.0), None),
        ];
        let e = s.evaluate(&cs);
        assert_eq!(
            (e.placement, e.rule),
            (Placement::Router("r7".into()), RuleRef::Place(0))
        );
        assert_eq!(
            e.explanation.to_string(),
            "rule 1 \"place at r7 when cpu.used_pct <= 50\": r7: cpu.used_pct 50.0 <= 50 ✓"
        );
        cs[1].figures.cpu_used_pct = Some(50.5);
        let e = s.evaluate(&cs);
        assert_eq!(
            (e.placement, e.rule),
            (Placement::Local, RuleRef::Place(1)),
            "at the local router"
        );
        cs.remove(0);
        let e = s.evaluate(&cs);
        assert_eq!(
            (e.placement.clone(), e.rule),
            (Placement::Router("r9".into()), RuleRef::Otherwise)
        );
        assert_eq!(
            e.explanation.to_string(),
            "rule 1 \"place at r7 when cpu.used_pct <= 50\": r7: cpu.used_pct 50.5 <= 50 ✗; rule 2 \"place at r1 \
             when hops == 0\": r1 not in the neighborhood; otherwise at r9"
        );
        assert!(e.candidate().is_none() && e.explanation.comparisons().is_empty());
        // A fallback `at` the local router is local.
        let s = policy("service s { match tcp dport 1 otherwise at r1 }");
        let cs = [cand("r1", 0, None, None, None)];
        assert_eq!(s.evaluate(&cs).placement, Placement::Local);
    }

    #[test]
    fn missing_figures_are_false_and_said() {
        let s = policy(
            "service s { match tcp dport 1 place local when cpu.pressure < 10 or mem.used_pct < 30 otherwise datacenter }",
        );
        let cs = [cand("r1", 0, None, None, Some(50.0))];
        let e = s.evaluate(&cs);
        assert_eq!(e.placement, Placement::Datacenter);
        assert_eq!(
            e.explanation.to_string(),
            "rule 1 \"place local when cpu.pressure < 10 or mem.used_pct < 30\": cpu.pressure missing ✗, \
             mem.used_pct 50.0 < 30 ✗; otherwise datacenter"
        );
        // No local candidate at all.
        let e = s.evaluate(&[]);
        assert_eq!(
            e.explanation.to_string(),
            "rule 1 \"place local when cpu.pressure < 10 or mem.used_pct < 30\": no local router in the telemetry; \
             otherwise datacenter"
        );
        // Latency unknown is a missing figure too; `not` of a missing comparison is true.
        let s = policy("service s { match tcp dport 1 place local when not latency_ms > 1 otherwise datacenter }");
        let cs = [cand("r1", 0, None, None, None)];
        assert_eq!(s.evaluate(&cs).placement, Placement::Local);
    }

    #[test]
    fn stale_is_never_chosen() {
        let s = policy(VOIP);
        let mut local = cand("r1", 0, Some(0.0), Some(1.0), Some(1.0));
        local.stale = true;
        let mut best = cand("r2", 1, Some(0.1), Some(1.0), Some(1.0));
        best.stale = true;
        let ok = cand("r3", 2, Some(9.0), Some(1.0), Some(29.0));
        let cs = [local, best, ok];
        let e = s.evaluate(&cs);
        assert_eq!(e.placement, Placement::Router("r3".into()));
        assert!(e.explanation.to_string().starts_with(
            "rule 1 \"place local when mem.used_pct < 30 and cpu.used_pct < 70\": local router stale; rule 2"
        ));
        let cs = [cs[0].clone(), cs[1].clone()];
        let e = s.evaluate(&cs);
        assert_eq!(e.placement, Placement::Datacenter);
        assert_eq!(
            e.explanation.to_string(),
            "rule 1 \"place local when mem.used_pct < 30 and cpu.used_pct < 70\": local router stale; rule 2 \"place \
             nearby within 2 hops when mem.used_pct < 30 prefer lowest latency\": none of 1 router within 2 hops is \
             viable (1 stale); r2 stale; otherwise datacenter"
        );
        assert_eq!(
            s.viable_rule(&cs, &Placement::Router("r2".into()), &EvalOptions::default()),
            None
        );
    }

    #[test]
    fn exclusion_and_focus() {
        let s = policy(VOIP);
        let cs = [
            cand("r1", 0, Some(0.0), Some(90.0), Some(90.0)),
            cand("r2", 1, Some(1.0), None, Some(10.0)),
            cand("r3", 1, Some(2.0), None, Some(40.0)),
            cand("r4", 1, Some(2.0), None, Some(50.0)),
        ];
        let exclude = vec!["r2".to_string()];
        let opts = EvalOptions {
            exclude: &exclude,
            focus: Some("r4"),
        };
        let e = s.evaluate_with(&cs, &opts);
        assert_eq!(e.placement, Placement::Datacenter);
        assert!(
            e.explanation.to_string().ends_with(
                "none of 3 routers within 2 hops is viable (1 excluded, 2 failed the condition); r4 (1 hop, latency 2.0 \
                 ms): mem.used_pct 50.0 < 30 ✗; otherwise datacenter"
            ),
            "{}",
            e.explanation
        );
        let no_focus = EvalOptions {
            exclude: &exclude,
            focus: None,
        };
        assert!(
            s.evaluate_with(&cs, &no_focus)
                .explanation
                .to_string()
                .contains("; r2 excluded; otherwise")
        );
        assert_eq!(s.viable_rule(&cs, &Placement::Router("r2".into()), &opts), None);
        assert_eq!(
            s.viable_rule(&cs, &Placement::Router("r2".into()), &EvalOptions::default()),
            Some(RuleRef::Place(1))
        );
    }

    #[test]
    fn viable_rule_of_current_placements() {
        let s = policy(VOIP);
        let cs = [
            cand("r1", 0, Some(0.0), Some(10.0), Some(10.0)),
            cand("r2", 1, Some(1.0), None, Some(10.0)),
            cand("r3", 3, Some(1.0), None, Some(10.0)),
        ];
        let o = EvalOptions::default();
        assert_eq!(s.viable_rule(&cs, &Placement::Local, &o), Some(RuleRef::Place(0)));
        assert_eq!(
            s.viable_rule(&cs, &Placement::Router("r1".into()), &o),
            Some(RuleRef::Place(0))
        );
        assert_eq!(
            s.viable_rule(&cs, &Placement::Router("r2".into()), &o),
            Some(RuleRef::Place(1))
        );
        assert_eq!(s.viable_rule(&cs, &Placement::Router("r3".into()), &o), None, "too far");
        assert_eq!(s.viable_rule(&cs, &Placement::Router("r9".into()), &o), None, "unknown");
        assert_eq!(s.viable_rule(&cs, &Placement::Datacenter, &o), Some(RuleRef::Otherwise));
        let l = policy("service s { match tcp dport 1 otherwise local }");
        assert_eq!(l.viable_rule(&cs, &Placement::Datacenter, &o), None);
        assert_eq!(l.viable_rule(&cs, &Placement::Local, &o), Some(RuleRef::Otherwise));
        assert_eq!(
            l.viable_rule(&cs, &Placement::Router("r1".into()), &o),
            Some(RuleRef::Otherwise)
        );
        assert!(RuleRef::Place(0) < RuleRef::Place(1) && RuleRef::Place(7) < RuleRef::Otherwise);
    }

    #[test]
    fn figures_format() {
        assert_eq!(Figure(8.0).to_string(), "8.0");
        assert_eq!(Figure(12.4).to_string(), "12.4");
        assert_eq!(Figure(0.35).to_string(), "0.35");
        assert_eq!(Figure(1234.0).to_string(), "1234.0");
    }
}
