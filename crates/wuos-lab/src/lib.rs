//! Emulated networks of wuos routers on one Linux host: every router a network namespace plus a
//! cgroup (its "hardware"), links veth pairs with token-bucket rates and user-space delay, jitter
//! and loss, routes computed from the topology and installed over netlink.
//!
//! Every operation of the `wuos lab` command is a call here; the CLI only parses and prints.
//!
//! # Layout
//! - [`env`]: host paths the lab uses (state dir, `/run/netns`, cgroup root, `/proc`).
//! - [`names`]: how namespaces, cgroups, interfaces and MACs are named.
//! - [`state`]: the persisted lab state, written before anything is created.
//! - [`up`]: topology → running lab (cgroups, namespaces, veths, addresses, routes, emulation).
//! - [`daemons`]: a `wuosd` per router, their configs and the supervisor.
//! - [`down`]: removes everything a lab made, also after a crash.
//! - [`link`]: link emulation and `link set` on a running lab.
//! - [`impair`]: the user-space delay/jitter/loss relay (`wuos lab relay`).
//! - [`status`]: `list` and `status`.
//! - [`exec`]: enter a router's namespace and cgroup.
//! - [`probe`]: parsing `ping` output.
//! - [`progress`]: progress reporting trait.
//! - [`error`](mod@error): the lab's error type.

pub mod daemons;
pub mod down;
pub mod env;
pub mod error;
pub mod exec;
pub mod impair;
pub mod link;
pub mod names;
pub mod probe;
pub mod progress;
mod session;
mod spawn;
pub mod state;
pub mod status;
pub mod up;

pub use env::LabEnv;
pub use error::LabError;
