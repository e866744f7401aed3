//! The per-router controller of wuos: it takes the intents orchestrators send (which service
//! instances this router runs, where each service's VIP leads), keeps them, and turns them —
//! with what the kernel and the domains report — into operations. Pure: no I/O, no clock, no
//! async; the daemon (`wuosd`'s controller component) feeds inputs and carries out the ops.
//!
//! # Layout
//! - [`intent`]: the typed intents ([`Intent`], keyed by [`IntentKey`] with their sender), what
//!   the store keeps ([`Kept`]) and where the answer goes ([`Origin`]).
//! - [`region`]: who may write what on this router: its [`Region`] decides which orchestrators'
//!   intents are taken ([`RefusedError`] otherwise) and which a new one replaces.
//! - [`controller`]: [`Controller`], the state machine: [`Input`]s in, [`Op`]s out — intents
//!   filed and persisted, instances ensured, answers when an instance is ready (its health probe
//!   passed) or failed, rules answered once reconciled.
//! - [`reconcile`]: what the kernel should look like: the lookups to make ([`Lookups`]), and
//!   from their results ([`KernelView`]) the [`Plan`] of data-plane ops (VIP routes, XDP
//!   redirects) with the rules that cannot be applied yet and why.
//!
//! ```text
//!  Control session / local orchestrator ──Intent{sender}──▶ ┌────────────┐ ──Persist, Instance{ensure}──▶ store, domains
//!  the router's region (from its view) ─────Region────────▶ │            │
//!  domains: instances (state, ready, address) ────────────▶ │ Controller │ ──Answer(ack | error)────────▶ the asker
//!  kernel: next hops, FIB matches, redirects ─────────────▶ └────────────┘ ──Plan: routes, redirects───▶ netlink, XDP
//! ```

pub mod controller;
pub mod intent;
pub mod reconcile;
pub mod region;

pub use controller::{Controller, Input, InstanceState, LocalInstance, Op};
pub use intent::{Intent, IntentKey, Kept, Origin};
pub use reconcile::{DataplaneOp, KernelView, Lookups, Plan};
pub use region::{RefusedError, Region};
pub use wuos_model::domain::InstanceLink;
