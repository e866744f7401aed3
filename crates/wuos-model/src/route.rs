//! IPv4 unicast routes as values: what wuos installs ([`RouteSpec`]) and what it reads back from a
//! kernel ([`NextHop`], [`FibEntry`]). The southbound crate carries them to and from netlink; the
//! controller plans with them without touching a kernel.

use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

/// Routes installed by wuos carry this protocol number, so they can be told apart from others
/// (`ip route show proto 201`).
pub const ROUTE_PROTOCOL: u8 = 201;

/// A unicast IPv4 route.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteSpec {
    pub dst: Ipv4Addr,
    pub prefix_len: u8,
    pub gateway: Ipv4Addr,
    pub oif: u32,
    /// Preferred source address (the router's loopback), so replies come back to a routed address.
    pub src: Option<Ipv4Addr>,
}

/// Where a kernel sends packets for a destination: the next hop (the destination itself when it
/// is on-link) and the outgoing interface.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NextHop {
    pub gateway: Ipv4Addr,
    pub oif: u32,
}

/// The FIB entry a destination matches (`ip route get fibmatch`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FibEntry {
    pub dst: Ipv4Addr,
    pub prefix_len: u8,
    /// `None`: on-link (a connected route).
    pub gateway: Option<Ipv4Addr>,
    pub oif: u32,
    /// The route's protocol ([`ROUTE_PROTOCOL`] for routes wuos installed).
    pub protocol: u8,
}

impl FibEntry {
    /// Whether this entry is wuos's route for exactly `dst/prefix_len` via `via`.
    pub fn is(&self, dst: Ipv4Addr, prefix_len: u8, via: NextHop) -> bool {
        self.dst == dst
            && self.prefix_len == prefix_len
            && self.protocol == ROUTE_PROTOCOL
            && self.oif == via.oif
            && self.gateway.unwrap_or(dst) == via.gateway
    }

    /// Whether wuos installed it.
    pub fn is_wuos(&self) -> bool {
        self.protocol == ROUTE_PROTOCOL
    }
}
