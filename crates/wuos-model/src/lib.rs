//! # Layout
//!
//! - [`units`]: human-readable rates, durations, sizes and percentages
//!   (`"10mbit"`, `"20ms"`, `"256MiB"`, `"0.5%"`), parsing and formatting.
//! - [`topology`]: the typed model ([`Topology`], [`Node`], [`Link`],
//!   [`LinkParams`], [`Pools`]), [`Topology::validate`] and
//!   [`TopologyError`].
//! - [`file`](mod@file): the TOML topology format (`docs/topology.md`), with errors
//!   located by file, line, column and key.
//! - [`generate`]: synthetic topologies (`line:10`, `grid:3x3`,
//!   `random:100`, ...).
//! - [`plan`]: link and loopback addressing, and shortest-path routes with
//!   aggregation.
//! - [`dot`]: Graphviz rendering.
//! - [`route`]: IPv4 routes as values (installed, looked up).
//! - [`rng`]: the seeded SplitMix64 generator shared with the link relay.
//! - [`domain`]: domains ([`domain::DomainSpec`]: kind, CPU, memory, veth,
//!   command, health check, restart policy).
//! - [`lifecycle`]: a domain's lifecycle state machine ([`lifecycle::State`] +
//!   [`lifecycle::Event`] → [`lifecycle::Action`]s), typed failures, the health
//!   gate, and the record the daemon persists and re-adopts
//!   ([`lifecycle::DomainRecord`]).
//! - [`admission`]: routing protection (cores and memory reserved for the
//!   routing domain) and admission control of service domains.
//! - [`catalog`]: the VNF catalog format (`docs/domains.md`), templates and
//!   instantiation of catalog entries into domain specs.
//! - [`ids`]: typed identifiers ([`RouterId`], [`ServiceId`]), checked when made.
//! - [`error`](mod@error): the one classification of errors ([`ErrorClass`], [`Classify`]) and
//!   its exit codes and HTTP statuses.
//! - [`daemon`]: the configuration of `wuosd` ([`daemon::DaemonConfig`]), read by the daemon and
//!   written by the lab.
//!
//! # Purpose
//!
//! The wuos data model: what an emulated network looks like, independent of
//! how it is run. Everything here is pure; the only I/O is [`file::load`].

pub mod admission;
pub mod catalog;
pub mod daemon;
pub mod domain;
pub mod dot;
pub mod error;
pub mod file;
pub mod generate;
pub mod ids;
pub mod lifecycle;
pub mod plan;
pub mod rng;
pub mod route;
pub mod topology;
pub mod units;

pub use error::{Classify, ErrorClass, RemoteError};
pub use generate::GenerateError;
pub use ids::{IdError, RouterId, ServiceId};
pub use plan::PlanError;
pub use topology::*;
pub use units::UnitError;
