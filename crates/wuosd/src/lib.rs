//! wuosd, the router daemon.
//!
//! # Layout
//! - [`controller`]: applies orchestrators' intents (instances, VIP routes), persists them.
//! - [`daemon`]: the tasks around the protocol state machine (diagram there).
//! - [`datapath`]: the XDP classifier on the router's interfaces (service counters, demand).
//! - [`domains`]: the hypervisor layer: domains, admission, idle pool, re-adoption.
//! - [`health`]: the catalog's health probes (tcp, udp, command) and their bookkeeping.
//! - [`orchestration`]: the orchestrator host of fog routers (policy, decisions, sessions to
//!   the controllers).
//! - [`server`]: the Neighbor (hellos, flooding) and Control (session envelope) gRPC services.
//! - [`admin`]: the local Status API on a Unix socket, and its client.
//! - [`config`]: the TOML configuration and its validation.
//! - [`store`]: the embedded redb store (boot ids, last own advert).
//! - [`metrics`]: Prometheus metrics and the `/metrics` endpoint.
//! - [`monitor`]: CPU, memory, IO, interface and pressure figures of the router, from `/proc` or
//!   from the router's cgroup.

pub mod admin;
pub mod config;
pub mod controller;
pub mod daemon;
pub mod datapath;
pub mod domains;
pub mod health;
pub mod metrics;
pub mod monitor;
pub mod orchestration;
pub mod server;
pub mod store;
