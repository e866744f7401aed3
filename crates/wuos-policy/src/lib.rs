//! # Layout
//!
//! - [`policy`]: the parsed form of a policy file ([`Policy`], [`Service`], [`Match`],
//!   [`Rule`], [`Target`], [`Fallback`], [`Cond`], [`Metric`], [`CmpOp`], [`Prefer`]), its
//!   canonical text (`Display`) and [`Policy::check_services`].
//! - `lex` (private): the tokens of the language, with their byte spans and 1-based
//!   line and column.
//! - [`parse`](mod@parse): the recursive-descent parser, [`Policy::parse`].
//! - [`error`]: [`PolicyError`], located by line and column.
//! - [`candidate`]: what the evaluator reads: a router that could run a service
//!   ([`Candidate`]) and its figures ([`Figures`]).
//! - [`eval`]: placement: [`Service::evaluate`] → [`Evaluation`] (a [`Placement`], the
//!   [`RuleRef`] that chose it and a lazily rendered [`Explanation`]), and
//!   [`Service::viable_rule`] for the current placement.
//!
//! # Purpose
//!
//! The wuos policy language (`docs/policy.md`): per service, which traffic it serves and where
//! it may run — on this router, on a router a few hops away, on a named router or in the data
//! centre — under conditions on the telemetry of the candidates. Pure: no I/O, no clock.
//!
//! ```
//! use wuos_policy::{Candidate, Figures, Placement, Policy, Role};
//!
//! let policy: Policy = "service voip {
//!   match udp dport 5060 to 10.255.0.10
//!   place local when mem.used_pct < 30
//!   otherwise datacenter
//! }"
//! .parse()
//! .unwrap();
//! let local = Candidate {
//!     name: "r1".into(),
//!     hops: 0,
//!     latency_ms: Some(0.0),
//!     role: Role::Fog,
//!     stale: false,
//!     figures: Figures { mem_used_pct: Some(12.4), ..Figures::default() },
//! };
//! let candidates = [local];
//! let e = policy.services[0].evaluate(&candidates);
//! assert_eq!(e.placement, Placement::Local);
//! assert_eq!(
//!     e.explanation.to_string(),
//!     r#"rule 1 "place local when mem.used_pct < 30": mem.used_pct 12.4 < 30 ✓"#
//! );
//! ```

pub mod candidate;
pub mod error;
pub mod eval;
mod lex;
pub mod parse;
pub mod policy;

pub use candidate::{Candidate, Figures};
pub use error::PolicyError;
pub use eval::{Comparison, EvalOptions, Evaluation, Explanation, Placement, RuleRef};
pub use policy::{
    CmpOp, Cond, DEFAULT_HOLD_MS, Fallback, MAX_DEPTH, MAX_HOLD_MS, MAX_HOPS, MAX_NAME_LEN, Match, Metric, Policy, Pos,
    Prefer, Rule, Service, Target,
};
pub use wuos_model::Role;
pub use wuos_model::catalog::Proto;
