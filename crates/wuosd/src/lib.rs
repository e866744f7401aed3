//! wuosd, the router daemon: components that own their state and talk over channels (the
//! diagram is in [`daemon`]).
//!
//! # Layout
//! - [`daemon`]: wires the components together and runs them (diagram there).
//! - [`protocol`]: the protocol task — owns the augmented SD-WAN protocol's state machine, sends
//!   to neighbors, publishes the typed neighborhood.
//! - [`sampler`]: samples the router every telemetry interval and hands the advert's contents to
//!   the protocol task.
//! - [`monitor`]: CPU, memory, IO, interface and pressure figures of the router, from `/proc` or
//!   from the router's cgroup.
//! - [`domains`]: the hypervisor layer — the domains manager over the typed domain lifecycle, its
//!   health probes, and the thread that owns it.
//! - [`controller`]: the controller task — intents in, instances ensured, VIP routes and XDP
//!   redirects applied (`wuos-controller` is its state machine).
//! - [`orchestration`]: the orchestrator task of fog routers — policy, decisions, placements kept
//!   across restarts; [`delivery`] carries its intents to controllers (this router's in-process,
//!   others' over Control sessions).
//! - [`sdwan`]: SD-WAN overlays — the edge component (every router), the controller and its
//!   NBI (the designated router).
//! - [`datapath`]: the XDP classifier's task (service counters, demand, redirects) and the
//!   nftables marks.
//! - [`server`]: the Neighbor and Control gRPC services (thin); [`wire`]: intents between their
//!   typed and protocol forms.
//! - [`admin`]: the local Admin API on a Unix socket (thin; protobuf conversion happens here).
//! - [`config`]: the configuration (`wuos_model::daemon`).
//! - [`store`]: the embedded redb store (boot ids, domains, intents, placements, decisions).
//! - [`metrics`]: Prometheus metrics and the `/metrics` endpoint.
//! - [`clock`]: monotonic and wall-clock time.

pub mod admin;
pub mod clock;
pub mod config;
pub mod controller;
pub mod daemon;
pub mod datapath;
pub mod delivery;
pub mod domains;
pub mod link;
pub mod liveness;
pub mod metrics;
pub mod monitor;
pub mod orchestration;
pub mod protocol;
pub mod sampler;
pub mod sdwan;
pub mod server;
pub mod store;
#[cfg(test)]
mod testing;
pub mod wire;
