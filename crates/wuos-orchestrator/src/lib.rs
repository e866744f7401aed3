//! # Layout
//!
//! - [`config`]: [`Config`] (the router, the data centre, timers, thresholds),
//!   [`Config::validate`] and [`ConfigError`].
//! - [`input`]: what the daemon tells the orchestrator ([`Input`]): telemetry, demand, acks of
//!   the controllers, ticks, a new policy, and after a restart the persisted placements with the
//!   [`AdvertisedInstance`]s of the neighborhood.
//! - [`output`]: what it asks for and logs ([`Output`]): [`Intent`]s to controllers and
//!   [`Decision`]s.
//! - [`service`]: one service's placement state ([`ServiceState`], [`Phase`]): the
//!   make-before-break migration state machine.
//! - `demand` (private): the latest demand reports and their window.
//! - [`neighborhood`]: the inputs of one round from a router's typed neighborhood (the one
//!   conversion, shared by the daemon and the simulator), and the placements its advert carries.
//! - [`region`]: which orchestrator's region a router belongs to ([`region::choose`]), what a
//!   sample says about regions ([`RegionView`]) and an orchestrator's advertised placements
//!   ([`RegionPlacement`]).
//! - [`conflict`]: the check that several orchestrators share a network without conflict
//!   ([`conflict::check`]), for tests and the simulator.
//! - [`orchestrator`]: [`Orchestrator`], the state machine over all services: decisions with
//!   hysteresis, moves, aborts, the restore after a restart ([`Orchestrator::serving`] is what
//!   the daemon persists).
//! - [`synthetic`]: deterministic neighborhoods for benchmarks ([`synthetic_neighborhood`]).
//!
//! # Purpose
//!
//! The SD-WAN orchestrator of a fog router decides where each service runs — on this router, on
//! a router a hop or two away, or in the data centre — from the telemetry of its neighborhood,
//! the demand its controllers see and the policy (`wuos-policy`, `docs/policy.md`), and tells
//! the controllers what to start, stop and route. Pure: no I/O, no clock, no async; the daemon
//! feeds [`Input`]s to [`Orchestrator::handle`] and executes the returned [`Output`]s.
//!
//! The daemon persists where each service is served ([`Orchestrator::serving`]); after a
//! restart it gives that back, with the instances the neighborhood advertises, in one
//! [`Input::Restore`] before any telemetry, so that a service served by a neighbor is adopted
//! there (not silently routed back to the data centre) and instances serving nothing are
//! stopped.
//!
//! Several orchestrators share a network by regions ([`region`]): each router belongs to at most
//! one orchestrator's region (the nearest fog, carried in its adverts), and an orchestrator
//! places instances and installs routes only inside its own; the data centre is in none and
//! serves every region's VIPs itself. The daemon feeds each router's region to its controller,
//! which refuses rules from any other orchestrator (`wuos-controller`).
//!
//! ```text
//!  wuosd (restart): persisted placements
//!    + advertised instances ────Restore────►┐ (once, before any Telemetry)
//!  wuosd: view + local sample ──Telemetry──►│
//!  controllers: flows/s ────────Demand─────►│ Orchestrator::handle ──► Intent{router, ...} ──► controllers
//!  controllers: acks ──InstanceReady/Failed►│                      ──► Decision ──► log, admin API
//!  timer ───────────────────────Tick───────►┘
//!  Orchestrator::serving ──► wuosd: persisted at every change
//! ```

pub mod config;
pub mod conflict;
mod demand;
pub mod input;
pub mod neighborhood;
pub mod orchestrator;
pub mod output;
pub mod region;
pub mod service;
pub mod synthetic;

pub use config::{Config, ConfigError};
pub use input::{AdvertisedInstance, Input};
pub use orchestrator::Orchestrator;
pub use output::{Decision, DecisionKind, Intent, Output};
pub use region::{RegionPlacement, RegionView};
pub use service::{Phase, ServiceState};
pub use synthetic::synthetic_neighborhood;
pub use wuos_policy::{Candidate, Figures, Placement, Policy, PolicyError, Role, RuleRef};
