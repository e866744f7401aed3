//! The parsed form of a policy file and its canonical text.
//!
//! A [`Policy`] is a list of [`Service`]s. Each service has the traffic it serves
//! ([`Match`]es), placement [`Rule`]s tried in order, one [`Fallback`] and a hold time. The
//! `Display` impls print the canonical text, which parses back to the same policy.

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use wuos_model::catalog::Proto;

use crate::candidate::Candidate;
use crate::error::PolicyError;

/// Hold time of a service without a `hold` line.
pub const DEFAULT_HOLD_MS: u64 = 10_000;
/// Longest hold time: one hour.
pub const MAX_HOLD_MS: u64 = 3_600_000;
/// Largest `within N hops`.
pub const MAX_HOPS: u32 = 8;
/// Longest service or router name.
pub const MAX_NAME_LEN: usize = 64;
/// Deepest nesting of `not` and parentheses in a condition.
pub const MAX_DEPTH: u32 = 32;

/// A place in the source: 1-based line and column (in characters).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Pos {
    /// 1-based line.
    pub line: u32,
    /// 1-based column, in characters.
    pub col: u32,
}

impl fmt::Display for Pos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.col)
    }
}

/// A whole policy file.
#[derive(Clone, Debug, PartialEq)]
pub struct Policy {
    /// The services, in file order; names are unique.
    pub services: Vec<Service>,
}

/// One `service NAME { ... }` block.
#[derive(Clone, Debug, PartialEq)]
pub struct Service {
    /// Its name.
    pub name: String,
    /// Where the name is.
    pub at: Pos,
    /// The traffic it serves (at least one).
    pub matches: Vec<Match>,
    /// Placement rules, tried in order; the first viable one wins.
    pub rules: Vec<Rule>,
    /// Where it runs when no rule is viable.
    pub fallback: Fallback,
    /// Where the `otherwise` line is.
    pub fallback_at: Pos,
    /// How long a better placement must stay viable before the service moves to it.
    pub hold_ms: u64,
}

/// `match PROTO dport PORT [to VIP]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Match {
    /// `udp` or `tcp`.
    pub proto: Proto,
    /// Destination port, 1..=65535.
    pub dport: u16,
    /// The service VIP the traffic is addressed to, if the match names one.
    pub to: Option<Ipv4Addr>,
    /// Where the `match` keyword is.
    pub at: Pos,
}

/// `place TARGET when COND [prefer ...]`.
#[derive(Clone, Debug, PartialEq)]
pub struct Rule {
    /// Where it places the service.
    pub target: Target,
    /// What a candidate's figures must satisfy.
    pub when: Cond,
    /// How viable nearby routers are ordered (only with [`Target::Nearby`]); `None` means
    /// [`Prefer::FewestHops`].
    pub prefer: Option<Prefer>,
    /// The rule as written (whitespace runs collapsed to one space, comments removed), for
    /// explanations.
    pub text: String,
    /// Where the `place` keyword is.
    pub at: Pos,
}

/// What a rule places the service on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// `local`: the router that evaluates (the candidate with 0 hops).
    Local,
    /// `nearby within N hops`: another edge or fog router 1..=N hops away (not `dc`, not
    /// `host`).
    Nearby {
        /// N, 1..=[`MAX_HOPS`].
        within_hops: u32,
    },
    /// `at NAME`: that router, wherever it is.
    At(String),
}

/// `otherwise ...`: where the service runs when no rule is viable. Unconditional.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fallback {
    /// `otherwise datacenter`.
    Datacenter,
    /// `otherwise local`.
    Local,
    /// `otherwise at NAME`.
    At(String),
}

/// `prefer ...`: which viable nearby router wins. Ties go to the smallest name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Prefer {
    /// `lowest latency` (unknown latency last).
    LowestLatency,
    /// `lowest cpu`: lowest `cpu.used_pct` (unknown last).
    LowestCpu,
    /// `lowest mem`: lowest `mem.used_pct` (unknown last).
    LowestMem,
    /// `fewest hops`, the default.
    FewestHops,
}

impl Prefer {
    /// All preferences, in documentation order.
    pub const ALL: [Prefer; 4] = [
        Prefer::LowestLatency,
        Prefer::LowestCpu,
        Prefer::LowestMem,
        Prefer::FewestHops,
    ];

    /// As written after `prefer`.
    pub fn as_str(self) -> &'static str {
        match self {
            Prefer::LowestLatency => "lowest latency",
            Prefer::LowestCpu => "lowest cpu",
            Prefer::LowestMem => "lowest mem",
            Prefer::FewestHops => "fewest hops",
        }
    }

    /// The ordering key of a candidate: lower is better, unknown is `+inf`.
    pub fn key(self, c: &Candidate) -> f64 {
        let v = match self {
            Prefer::LowestLatency => c.value(Metric::LatencyMs),
            Prefer::LowestCpu => c.value(Metric::CpuUsedPct),
            Prefer::LowestMem => c.value(Metric::MemUsedPct),
            Prefer::FewestHops => c.value(Metric::Hops),
        };
        v.unwrap_or(f64::INFINITY)
    }
}

impl fmt::Display for Prefer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A figure a condition can compare.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Metric {
    /// `cpu.used_pct`: CPU busy, percent of the router's CPUs.
    CpuUsedPct,
    /// `mem.used_pct`: memory used, percent.
    MemUsedPct,
    /// `cpu.free_cores`: idle CPUs (may be fractional).
    CpuFreeCores,
    /// `mem.free_mib`: available memory, MiB.
    MemFreeMib,
    /// `cpu.pressure`: PSI cpu "some" avg10, percent.
    CpuPressure,
    /// `mem.pressure`: PSI memory "some" avg10, percent.
    MemPressure,
    /// `io.pressure`: PSI io "some" avg10, percent.
    IoPressure,
    /// `latency_ms`: latency from this router to the candidate.
    LatencyMs,
    /// `hops`: hops from this router (0 = this router).
    Hops,
}

impl Metric {
    /// All metrics, in documentation order.
    pub const ALL: [Metric; 9] = [
        Metric::CpuUsedPct,
        Metric::MemUsedPct,
        Metric::CpuFreeCores,
        Metric::MemFreeMib,
        Metric::CpuPressure,
        Metric::MemPressure,
        Metric::IoPressure,
        Metric::LatencyMs,
        Metric::Hops,
    ];

    /// As written in conditions.
    pub fn as_str(self) -> &'static str {
        match self {
            Metric::CpuUsedPct => "cpu.used_pct",
            Metric::MemUsedPct => "mem.used_pct",
            Metric::CpuFreeCores => "cpu.free_cores",
            Metric::MemFreeMib => "mem.free_mib",
            Metric::CpuPressure => "cpu.pressure",
            Metric::MemPressure => "mem.pressure",
            Metric::IoPressure => "io.pressure",
            Metric::LatencyMs => "latency_ms",
            Metric::Hops => "hops",
        }
    }

    /// The metric written `name`.
    pub fn from_name(name: &str) -> Option<Metric> {
        Metric::ALL.into_iter().find(|m| m.as_str() == name)
    }
}

impl fmt::Display for Metric {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A comparison operator.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CmpOp {
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `>=`
    Ge,
    /// `==`
    Eq,
    /// `!=`
    Ne,
}

impl CmpOp {
    /// All operators, in documentation order.
    pub const ALL: [CmpOp; 6] = [CmpOp::Lt, CmpOp::Le, CmpOp::Gt, CmpOp::Ge, CmpOp::Eq, CmpOp::Ne];

    /// As written.
    pub fn as_str(self) -> &'static str {
        match self {
            CmpOp::Lt => "<",
            CmpOp::Le => "<=",
            CmpOp::Gt => ">",
            CmpOp::Ge => ">=",
            CmpOp::Eq => "==",
            CmpOp::Ne => "!=",
        }
    }

    /// Whether `a OP b`.
    pub fn apply(self, a: f64, b: f64) -> bool {
        match self {
            CmpOp::Lt => a < b,
            CmpOp::Le => a <= b,
            CmpOp::Gt => a > b,
            CmpOp::Ge => a >= b,
            CmpOp::Eq => a == b,
            CmpOp::Ne => a != b,
        }
    }
}

impl fmt::Display for CmpOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A condition on one candidate's figures.
///
/// Two-valued: a comparison on a missing figure is false (so `not (cpu.pressure > 10)` is true
/// when the pressure is unknown — see `docs/policy.md`).
#[derive(Clone, Debug, PartialEq)]
pub enum Cond {
    /// `METRIC OP NUMBER`.
    Compare {
        /// The figure.
        metric: Metric,
        /// The operator.
        op: CmpOp,
        /// The number it is compared with (finite, not negative).
        value: f64,
    },
    /// `not C`.
    Not(Box<Cond>),
    /// `C and C and ...` (two or more).
    And(Vec<Cond>),
    /// `C or C or ...` (two or more).
    Or(Vec<Cond>),
}

impl Cond {
    /// Whether `c` satisfies the condition. Does not allocate.
    pub fn holds(&self, c: &Candidate) -> bool {
        match self {
            Cond::Compare { metric, op, value } => c.value(*metric).is_some_and(|v| op.apply(v, *value)),
            Cond::Not(inner) => !inner.holds(c),
            Cond::And(cs) => cs.iter().all(|x| x.holds(c)),
            Cond::Or(cs) => cs.iter().any(|x| x.holds(c)),
        }
    }

    /// Calls `f` on every comparison, in source order.
    pub fn for_each_comparison(&self, f: &mut impl FnMut(Metric, CmpOp, f64)) {
        match self {
            Cond::Compare { metric, op, value } => f(*metric, *op, *value),
            Cond::Not(inner) => inner.for_each_comparison(f),
            Cond::And(cs) | Cond::Or(cs) => cs.iter().for_each(|x| x.for_each_comparison(f)),
        }
    }

    fn write(&self, f: &mut fmt::Formatter<'_>, parent: Parent) -> fmt::Result {
        let parens = matches!(
            (self, parent),
            (Cond::Or(_), Parent::And | Parent::Or | Parent::Not) | (Cond::And(_), Parent::And | Parent::Not)
        );
        if parens {
            f.write_str("(")?;
        }
        match self {
            Cond::Compare { metric, op, value } => write!(f, "{metric} {op} {value}")?,
            Cond::Not(inner) => {
                f.write_str("not ")?;
                inner.write(f, Parent::Not)?;
            }
            Cond::And(cs) | Cond::Or(cs) => {
                let (sep, me) = if matches!(self, Cond::And(_)) {
                    (" and ", Parent::And)
                } else {
                    (" or ", Parent::Or)
                };
                for (i, c) in cs.iter().enumerate() {
                    if i > 0 {
                        f.write_str(sep)?;
                    }
                    c.write(f, me)?;
                }
            }
        }
        if parens {
            f.write_str(")")?;
        }
        Ok(())
    }
}

#[derive(Clone, Copy)]
enum Parent {
    Top,
    Not,
    And,
    Or,
}

impl fmt::Display for Cond {
    /// Canonical text: parentheses only where needed, and around a nested `and`/`or` of the same
    /// kind so that the text parses back to the same tree.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.write(f, Parent::Top)
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Local => f.write_str("local"),
            Target::Nearby { within_hops: 1 } => f.write_str("nearby within 1 hop"),
            Target::Nearby { within_hops } => write!(f, "nearby within {within_hops} hops"),
            Target::At(name) => write!(f, "at {name}"),
        }
    }
}

impl fmt::Display for Fallback {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fallback::Datacenter => f.write_str("otherwise datacenter"),
            Fallback::Local => f.write_str("otherwise local"),
            Fallback::At(name) => write!(f, "otherwise at {name}"),
        }
    }
}

impl fmt::Display for Rule {
    /// Canonical text (the source as written is in [`Rule::text`]).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "place {} when {}", self.target, self.when)?;
        if let Some(p) = self.prefer {
            write!(f, " prefer {p}")?;
        }
        Ok(())
    }
}

impl fmt::Display for Match {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} dport {}", self.proto, self.dport)?;
        if let Some(to) = self.to {
            write!(f, " to {to}")?;
        }
        Ok(())
    }
}

/// A duration as written in a `hold` line: the largest unit that divides it.
pub(crate) fn format_duration(ms: u64) -> String {
    if ms > 0 && ms.is_multiple_of(60_000) {
        format!("{}m", ms / 60_000)
    } else if ms > 0 && ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

impl fmt::Display for Service {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "service {} {{", self.name)?;
        for m in &self.matches {
            writeln!(f, "  match {m}")?;
        }
        for r in &self.rules {
            writeln!(f, "  {r}")?;
        }
        writeln!(f, "  {}", self.fallback)?;
        writeln!(f, "  hold {}", format_duration(self.hold_ms))?;
        f.write_str("}\n")
    }
}

impl fmt::Display for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, s) in self.services.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{s}")?;
        }
        Ok(())
    }
}

impl Service {
    /// The service VIP: the `to` address of its match lines (they all agree).
    pub fn vip(&self) -> Option<Ipv4Addr> {
        self.matches.iter().find_map(|m| m.to)
    }
}

impl Policy {
    /// Parses a policy file's text. Errors carry line and column; prefix the file name to show
    /// them.
    pub fn parse(src: &str) -> Result<Policy, PolicyError> {
        crate::parse::parse(src)
    }

    /// The service called `name`.
    pub fn service(&self, name: &str) -> Option<&Service> {
        self.services.iter().find(|s| s.name == name)
    }

    /// Refuses a policy naming a service that is not in `known` (e.g. the VNF catalog); the
    /// error is located at the service's name.
    pub fn check_services(&self, known: &[&str]) -> Result<(), PolicyError> {
        for s in &self.services {
            if !known.contains(&s.name.as_str()) {
                let message = if known.is_empty() {
                    format!("unknown service {:?}; no services are known", s.name)
                } else {
                    let mut names: Vec<&str> = known.to_vec();
                    names.sort_unstable();
                    names.dedup();
                    format!("unknown service {:?}; known services: {}", s.name, names.join(", "))
                };
                return Err(PolicyError::new(s.at, message));
            }
        }
        Ok(())
    }
}

impl FromStr for Policy {
    type Err = PolicyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Policy::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_print_in_the_largest_unit() {
        assert_eq!(format_duration(0), "0ms");
        assert_eq!(format_duration(500), "500ms");
        assert_eq!(format_duration(10_000), "10s");
        assert_eq!(format_duration(1_500), "1500ms");
        assert_eq!(format_duration(120_000), "2m");
        assert_eq!(format_duration(90_000), "90s");
    }

    #[test]
    fn operators_compare() {
        assert!(CmpOp::Lt.apply(1.0, 2.0) && !CmpOp::Lt.apply(2.0, 2.0));
        assert!(CmpOp::Le.apply(2.0, 2.0) && !CmpOp::Le.apply(2.1, 2.0));
        assert!(CmpOp::Gt.apply(3.0, 2.0) && !CmpOp::Gt.apply(2.0, 2.0));
        assert!(CmpOp::Ge.apply(2.0, 2.0) && !CmpOp::Ge.apply(1.9, 2.0));
        assert!(CmpOp::Eq.apply(2.0, 2.0) && !CmpOp::Eq.apply(2.5, 2.0));
        assert!(CmpOp::Ne.apply(2.5, 2.0) && !CmpOp::Ne.apply(2.0, 2.0));
        for m in Metric::ALL {
            assert_eq!(Metric::from_name(m.as_str()), Some(m));
        }
        assert_eq!(Metric::from_name("mem.used"), None);
    }
}
