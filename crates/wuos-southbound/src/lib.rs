//! Linux side effects of wuos: everything that touches the kernel goes through this crate.
//!
//! # Layout
//! - [`netns`]: named network namespaces (create on a dedicated thread, enter, delete, list).
//! - [`netlink`]: rtnetlink links (veth born in their target namespaces), addresses, routes.
//! - [`routes`]: the [`routes::Routes`] trait (next hop and FIB match by kernel lookup, replace,
//!   delete), implemented by [`netlink::Netlink`] and faked by [`routes::RecordingRoutes`].
//! - [`cgroup`]: cgroup v1 and v2 — create with CPU quota and memory limit, pin cores, weigh,
//!   freeze and thaw, read usage and children's budgets, join, kill, remove.
//! - [`domain`]: isolated domains of a router — the `DomainBackend` trait, the container backend
//!   (namespace + cgroup + read-only mount namespace, launched through `domain-init`) and a fake.
//! - [`tc`]: traffic control through `tc -batch` (token buckets, redirects into user space).
//! - [`nft`]: nftables rulesets (the [`nft::Nftables`] trait, the `nft` program, a fake).
//! - [`packet`]: AF_PACKET sockets with virtio-net headers, for the user-space link relay.
//! - [`privilege`]: the root-or-skip rule of privileged tests.
//! - [`process`]: finding processes by namespace or command line, and stopping them.
//! - [`xdp`]: the XDP classifier (`bpf/classifier.c`): service counters, new-flow events, and
//!   redirects to local service instances; the [`xdp::XdpMaps`] trait and its fake.
//!
//! Every host path (`/run/netns`, `/sys/fs/cgroup`, `/proc`) is a parameter, so tests use temp dirs.

pub mod cgroup;
pub mod domain;
pub mod netlink;
pub mod netns;
pub mod nft;
pub mod packet;
pub mod privilege;
pub mod process;
pub mod routes;
pub mod tc;
pub mod xdp;
