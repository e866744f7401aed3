//! # Layout
//!
//! - [`pb`]: the generated messages, clients and servers (`proto/wuos/v1/*.proto`).
//! - [`validate`]: what a receiver checks before acting: `check_*` for decoded messages,
//!   `decode_*` for raw bytes, the limits ([`MAX_MESSAGE_BYTES`], ...), and [`ValidateError`].
//! - [`neighborhood`]: the typed snapshot of a router and its view ([`neighborhood::Neighborhood`])
//!   that the daemon's orchestrator and controller read.
//! - [`neighbor`]: one configured neighbor's liveness ([`Neighbor`], [`NeighborConfig`]).
//! - [`view`]: the adverts known of other routers, their ordering and ageing ([`View`]).
//! - [`flood`]: hop arithmetic and the per-neighbor [`Outbox`](flood::Outbox) that batches
//!   flood requests.
//! - [`announce`]: announcement thresholds: which measured figures a router announces anew
//!   ([`announce::Announcer`]).
//! - [`counters`]: what an instance has done ([`Counters`]), for Prometheus and the status.
//! - [`session`]: the controller ↔ orchestrator session envelope ([`session::Session`]).
//! - [`admin`]: the client of wuosd's administration API ([`admin::AdminClient`]), by Unix socket
//!   or address, with classified errors.
//! - [`nbi`]: the client of the SD-WAN controller's REST northbound interface
//!   ([`nbi::NbiClient`]).
//! - [`status`]: error classes ([`wuos_model::ErrorClass`]) to gRPC status codes and back.
//! - `convert`: the model's types to their protocol forms and back (roles).
//! - `json`: serde helpers of the generated messages (enum fields by name).
//! - [`instance`]: the protocol state machine of one router ([`Instance`]): [`Input`]s and
//!   RPCs in, [`Action`]s out, and [`InstanceError`] for bad configurations.
//!
//! # Purpose
//!
//! The augmented SD-WAN protocol of wuos, specified in `docs/protocol.md`: routers exchange
//! hellos with their neighbors and flood telemetry adverts (CPU, memory, IO) a few hops far.
//! Everything here but the admin and NBI clients is pure: no I/O, no clocks (time comes in as monotonic
//! `now_ms`), no async. The daemon `wuosd` owns the sockets and timers and executes the returned
//! actions.

/// Generated from `proto/wuos/v1/*.proto`.
#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod pb {
    tonic::include_proto!("wuos.v1");
}

pub mod admin;
pub mod announce;
mod convert;
pub mod counters;
pub mod delta;
pub mod flood;
pub mod instance;
mod json;
pub mod nbi;
pub mod neighbor;
pub mod neighborhood;
pub mod session;
pub mod status;
pub mod validate;
pub mod view;

pub use counters::Counters;
pub use instance::{Action, Input, Instance, InstanceConfig, InstanceError};
pub use neighbor::{Neighbor, NeighborConfig};
pub use validate::{MAX_ADVERTS_PER_FLOOD, MAX_HOP_LIMIT, MAX_MESSAGE_BYTES, ValidateError};
pub use view::View;

/// How long connecting to another router's controller or to a daemon's admin API may take
/// before it counts as not answering (the one source of this timeout).
pub const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// Protocol version 2.7: major in the high 16 bits, minor in the low (docs/protocol.md).
pub const PROTOCOL_VERSION: u32 = (2 << 16) | 7;
