//! Emulated networks of wuos routers on one Linux host: every router a network namespace plus a
//! cgroup (its "hardware"), links veth pairs with token-bucket rates and user-space delay, jitter
//! and loss, routes computed from the topology and installed over netlink.
//!
//! Every operation of the `wuos lab` command is a call here; the CLI only parses and prints.
//!
//! # Layout
//! - [`env`](mod@env): host paths the lab uses (state dir, `/run/netns`, cgroup root, `/proc`).
//! - [`names`]: how namespaces, cgroups, interfaces and MACs are named.
//! - [`state`]: the persisted lab state, written before anything is created.
//! - [`plan`]: pure — a lab as stages of typed [`plan::Op`]s (cgroups, namespaces with their
//!   sysctls, veths, addresses, routes, tc, relays, offloads), and the difference of two plans.
//! - [`execute`]: runs a plan through the southbound traits (a [`execute::Host`]): namespaces on
//!   worker threads, pipelined netlink, one tc batch per namespace; undoes what it made on failure.
//! - [`relays`]: starting and stopping link relays, behind the [`relays::Relays`] trait (processes,
//!   or a recording fake).
//! - [`up`]: topology → plan → executed → daemons started; rolls back on failure.
//! - [`link`]: `link set` on a running lab: the difference of the lab's plans before and after.
//! - [`daemons`]: a `wuosd` per router, their configs and the supervisor.
//! - [`down`]: removes everything a lab made, also after a crash.
//! - [`impair`]: the user-space delay/jitter/loss relay (`wuos lab relay`).
//! - [`status`]: `list` and `status`.
//! - [`exec`]: enter a router's namespace and cgroup.
//! - [`probe`]: parsing `ping` output.
//! - [`progress`]: progress reporting trait.
//! - [`error`](mod@error): the lab's error type, and the executor's.
//!
//! Module graph (an arrow: "uses"; no module uses one that uses it back):
//!
//! ```text
//!  up ──▶ plan, execute, session, daemons, down      link ──▶ plan, execute, session
//!  session ──▶ execute (Host), relays                execute ──▶ plan, relays, progress
//!  relays ──▶ plan (Relay), spawn                    plan ──▶ names, state (LinkRuntime)
//!  error ──▶ plan, state                             daemons, down, status, exec ──▶ state, names
//!  spawn ──▶ state                                   daemons ──▶ spawn;  state ──▶ env
//! ```
//! (`error` and `env` are used by most modules and use none of them back.) `tests/modules.rs`
//! fails on a cycle.

pub mod daemons;
pub mod down;
pub mod env;
pub mod error;
pub mod exec;
pub mod execute;
pub mod host;
pub mod impair;
pub mod link;
pub mod names;
pub mod plan;
pub mod probe;
pub mod progress;
pub mod relays;
mod session;
mod spawn;
pub mod state;
pub mod status;
pub mod up;

pub use env::LabEnv;
pub use error::LabError;
