//! # Layout
//!
//! - [`network`]: routers by dense index ([`RouterIx`]), links ([`LinkIx`]) with their delay,
//!   jitter, loss and state, adjacency sorted by name ([`Network`]).
//! - [`stream`]: a link's `Neighbor.Link` stream as the TCP connection it is: ordered, reliable,
//!   loss paid as retransmission timeouts ([`stream::Session`]).
//! - [`queue`]: the event queue, ordered by (time, sequence).
//! - [`load`]: CPU and memory traces ([`LoadModel`]: constant or a seeded random walk).
//! - [`controller`]: a router's controller: the daemon's state machine
//!   (`wuos_controller::Controller`) with its store, domains and kernel modelled; refusals,
//!   conflicts and rules with their writers counted.
//! - [`orchestrators`]: the orchestrators ([`orchestrators::Site`]), driven as the daemon drives
//!   its own, with their decision logs and per-orchestrator views.
//! - [`region`]: whether routers choose a region, with the daemon's function ([`Regions`]).
//! - [`conflicts`]: the daemon's conflict check over the network now
//!   ([`conflicts::ConflictSummary`]).
//! - [`events`]: the events file (JSON lines): links down/up/set, stop/crash/start, load,
//!   demand, policies ([`Script`]).
//! - [`config`]: [`SimConfig`] and its validation ([`ConfigError`]).
//! - [`sim`]: the engine ([`Sim`]): routers, streams and the event loop.
//! - [`report`]: what a run says ([`Report`]): JSON and a summary.
//! - [`error`](mod@error): [`SimError`].
//!
//! # Purpose
//!
//! A discrete-event simulator of wuos networks that runs the **same** pure state machines as
//! the router daemon — the protocol instance `wuos_proto::Instance` on every router; the
//! orchestrator `wuos_orchestrator::Orchestrator` on the orchestrating routers, fed from the
//! instance's neighborhood by the same conversion (`wuos_orchestrator::neighborhood`); the
//! controller `wuos_controller::Controller` on every router an intent reaches; the region each
//! router chooses (`wuos_orchestrator::region::choose`) — over a simulated network, at
//! 1,000–100,000 routers, deterministically (seeded). No kernel, no data plane, no domains:
//! what the controller asks of them is modelled ([`controller`]). What is and is not modelled,
//! the events file and the output are described in `docs/sim.md`.
//!
//! ```no_run
//! use wuos_model::generate::{Generator, generate};
//! use wuos_sim::{Detail, Network, Script, Sim, SimConfig};
//!
//! let cfg = SimConfig::default();
//! let topology = generate(&"random:1000".parse::<Generator>().unwrap(), cfg.seed);
//! let net = Network::new(&topology, cfg.link_defaults());
//! let mut sim = Sim::new(net, cfg, Script::default(), None).unwrap();
//! sim.run_until(60_000, &mut |_| {});
//! println!("{}", sim.report(Detail::Summary));
//! ```

pub mod config;
pub mod conflicts;
pub mod controller;
pub mod error;
pub mod events;
pub mod load;
pub mod network;
pub mod orchestrators;
pub mod queue;
pub mod region;
pub mod report;
pub mod sim;
pub mod stream;

pub use config::{ConfigError, SimConfig};
pub use error::SimError;
pub use events::{EventsError, Script};
pub use load::LoadModel;
pub use network::{LinkIx, Network, RouterIx};
pub use region::Regions;
pub use report::{Detail, Report};
pub use sim::{Progress, Sim};
