//! SD-WAN overlays and traffic classes (seed 001): the desired state in, what each edge's kernel
//! must hold out, and the ops between two such states. Pure: no I/O; `wuos-southbound` carries
//! the ops out and `wuosd`'s controller decides when.
//!
//! ```text
//!  LAN ──► nft mark (class) ──► ip rule fwmark ──► overlay table ──► VXLAN wo<id>-<underlay> ──► underlay
//!  LAN ──► ip rule iif LAN (unmarked) ─────────────┘
//! ```
//!
//! # Layout
//! - [`inventory`]: the sites, their WAN attachments per underlay and their LANs.
//! - [`overlay`]: overlays and their layouts (full mesh, hub-and-spoke, partial).
//! - [`class`]: traffic classes, match rules and their overlap check.
//! - [`desired`]: the desired state and the actions that change it (what the NBI calls).
//! - [`edge`]: what one edge's kernel holds for a desired state, every number derived from ids.
//! - [`ops`]: the ops from one edge configuration to another.
//! - [`slice`]: an edge's configuration in pieces (one per overlay and class), as the
//!   controller sends it.
//! - [`stamp`]: STAMP test packets (RFC 8762), the probes of each path.
//! - [`path`]: a path's figures (latency, loss, jitter, up) from its probes.
//! - [`sla`]: which paths carry a class with an SLA, from the paths' figures.
//! - [`steer`]: a steered class's candidate paths, their tables and marks, and the nftables
//!   table that carries out the decisions.
//! - [`error`]: why a request is refused.

pub mod class;
pub mod desired;
pub mod edge;
pub mod error;
pub mod inventory;
mod net;
pub mod ops;
pub mod overlay;
pub mod path;
pub mod sla;
pub mod slice;
pub mod stamp;
pub mod steer;

pub use class::{MatchRule, PortRange, Proto, TrafficClass};
pub use desired::{Action, ClassSpec, Desired, OverlaySpec};
pub use edge::EdgeConfig;
pub use error::{ErrorKind, SdwanError};
pub use inventory::{Inventory, Lan, Site, Wan};
pub use ops::{Op, diff, reconcile};
pub use overlay::{Layout, Member, Overlay};
