//! Linux side effects of wuos: everything that touches the kernel goes through this crate.
//!
//! # Layout
//! - [`netns`]: named network namespaces (create on a dedicated thread, enter, delete, list).
//! - [`netlink`]: rtnetlink links (veth born in their target namespaces), addresses, routes.
//! - [`routes`]: the [`routes::Routes`] trait (next hop and FIB match by kernel lookup, replace,
//!   delete), implemented by [`netlink::Netlink`] and faked by [`routes::RecordingRoutes`].
//! - [`links`]: the [`links::Links`] trait (veth pairs born in their namespaces, up/down, MTU,
//!   delete, index by name), implemented by [`netlink::Netlink`], faked by
//!   [`links::RecordingLinks`].
//! - [`addresses`]: the [`addresses::Addresses`] trait (add an IPv4 address), implemented by
//!   [`netlink::Netlink`], faked by [`addresses::RecordingAddresses`].
//! - [`namespaces`]: the [`namespaces::Namespaces`] trait (create with code run inside, open,
//!   delete; a socket per namespace that is [`links::Links`] + [`addresses::Addresses`] +
//!   [`routes::Routes`]), implemented by [`namespaces::LinuxNamespaces`], faked by
//!   [`namespaces::RecordingNamespaces`].
//! - [`sysctls`]: the [`sysctls::Sysctls`] trait (of the calling thread's namespace), implemented
//!   by [`sysctls::ProcSys`], faked by [`sysctls::RecordingSysctls`].
//! - [`cgroups`]: the [`cgroups::Cgroups`] trait (create with limits, destroy, exists), implemented
//!   by [`cgroups::HostCgroups`] over [`cgroup::CgroupFs`], faked by [`cgroups::RecordingCgroups`].
//! - [`traffic`]: the [`traffic::TrafficControl`] trait (a `tc` batch in a namespace), implemented
//!   by [`traffic::TcBinary`], faked by [`traffic::RecordingTc`].
//! - [`overlays`]: the SD-WAN ops of `wuos-sdwan` (VXLAN tunnels, FDB and neighbour entries,
//!   overlay tables, rules over rtnetlink; marks and clamps through [`nft`]), the
//!   [`overlays::Overlays`] trait implemented by [`overlays::NetlinkOverlays`].
//! - [`offloads`]: the [`offloads::Offloads`] trait (TX checksum offload), implemented by
//!   [`offloads::Ethtool`] (the `ethtool` binary), faked by [`offloads::RecordingOffloads`].
//! - [`recording`]: the [`recording::Journal`] the recording fakes share, so a test sees one
//!   ordered list of changes across traits.
//! - [`cgroup`]: cgroup v1 and v2 — create with CPU quota and memory limit, pin cores, weigh,
//!   freeze and thaw, read usage and children's budgets, join, kill, remove.
//! - [`domain`]: isolated domains of a router — the `DomainBackend` trait, the container backend
//!   (namespace + cgroup + read-only mount namespace, launched through `domain-init`) and a fake.
//! - [`tc`]: traffic control through `tc -batch` (token buckets, redirects into user space).
//! - [`nft`]: nftables rulesets (the [`nft::Nftables`] trait, the `nft` program, a fake).
//! - [`echo`]: ICMP echo to the neighbors, answered by their kernels (link liveness without
//!   waking their daemons).
//! - [`packet`]: AF_PACKET sockets with virtio-net headers, for the user-space link relay.
//! - [`privilege`]: the root-or-skip rule of privileged tests.
//! - [`process`]: finding processes by namespace or command line, and stopping them.
//! - [`xdp`]: the XDP classifier (`bpf/classifier.c`): service counters, new-flow events, and
//!   redirects to local service instances; the [`xdp::XdpMaps`] trait and its fake.
//!
//! Every host path (`/run/netns`, `/sys/fs/cgroup`, `/proc`) is a parameter, so tests use temp dirs.

pub mod addresses;
pub mod cgroup;
pub mod cgroups;
mod classify;
pub mod domain;
pub mod echo;
pub mod links;
pub mod malloc;
pub mod namespaces;
pub mod netlink;
pub mod netns;
pub mod nft;
pub mod offloads;
pub mod overlays;
pub mod packet;
pub mod privilege;
pub mod process;
pub mod recording;
pub mod routes;
pub mod sysctls;
pub mod tc;
pub mod timer;
pub mod traffic;
pub mod xdp;
