//! rtnetlink: links, addresses and routes, one socket per network namespace.
//!
//! A netlink socket is bound to the namespace of the thread that opens it, so
//! [`Netlink::connect_here`] is called on a thread that has entered (or just created) the namespace;
//! afterwards the handle can be used from any task. Requests are pipelined: callers issue many and
//! await them together (`futures::future::join_all`), which is how routes are installed in batches.

use std::io;
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::{AsRawFd, BorrowedFd};

use futures::TryStreamExt;
use rtnetlink::packet_route::link::{InfoData, InfoVeth};
use rtnetlink::packet_route::route::RouteProtocol;
use rtnetlink::{LinkMessageBuilder, LinkUnspec, LinkVeth, RouteMessageBuilder};

pub use wuos_model::route::{ROUTE_PROTOCOL, RouteSpec};

#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    #[error("cannot open a netlink socket: {0}")]
    Socket(io::Error),
    #[error("{what}: {source}")]
    Request { what: String, source: rtnetlink::Error },
    #[error("no interface named {0}")]
    NoSuchLink(String),
    /// A change refused without the kernel (by a fake, in tests).
    #[error("refused: {0}")]
    Refused(String),
}

/// One end of a veth pair, created directly in its namespace with a chosen name, index and MAC.
#[derive(Clone, Copy, Debug)]
pub struct VethEnd<'a> {
    pub netns: BorrowedFd<'a>,
    pub name: &'a str,
    pub index: u32,
    pub mac: [u8; 6],
}

/// A netlink handle bound to one network namespace.
#[derive(Clone, Debug)]
pub struct Netlink {
    pub(crate) handle: rtnetlink::Handle,
}

impl Netlink {
    /// Opens a netlink socket in the calling thread's network namespace; its connection task runs
    /// on `rt`.
    pub fn connect_here(rt: &tokio::runtime::Handle) -> Result<Self, NetlinkError> {
        let _guard = rt.enter();
        let (conn, handle, _) = rtnetlink::new_connection().map_err(NetlinkError::Socket)?;
        rt.spawn(conn);
        Ok(Self { handle })
    }

    /// Creates a veth pair whose ends are born in their target namespaces, with `mtu`. One request
    /// per link; no interface ever appears in the caller's namespace. The ends start down: the
    /// kernel refuses to open a veth end before its peer is linked (ENOTCONN), so callers set them
    /// up afterwards.
    pub async fn add_veth(&self, a: VethEnd<'_>, b: VethEnd<'_>, mtu: Option<u32>) -> Result<(), NetlinkError> {
        let mut peer = LinkMessageBuilder::<LinkUnspec>::new()
            .name(b.name.to_string())
            .index(b.index)
            .address(b.mac.to_vec())
            .setns_by_fd(b.netns.as_raw_fd());
        let mut main = LinkVeth::new(a.name, b.name)
            .index(a.index)
            .address(a.mac.to_vec())
            .setns_by_fd(a.netns.as_raw_fd());
        if let Some(mtu) = mtu {
            peer = peer.mtu(mtu);
            main = main.mtu(mtu);
        }
        let msg = main.set_info_data(InfoData::Veth(InfoVeth::Peer(peer.build()))).build();
        self.handle
            .link()
            .add(msg)
            .execute()
            .await
            .map_err(failed(format!("cannot create veth {} <-> {}", a.name, b.name)))
    }

    /// Sets an interface up or down.
    pub async fn set_up(&self, index: u32, up: bool) -> Result<(), NetlinkError> {
        let b = LinkUnspec::new_with_index(index);
        let msg = if up { b.up() } else { b.down() }.build();
        self.handle.link().set(msg).execute().await.map_err(failed(format!(
            "cannot set interface {index} {}",
            if up { "up" } else { "down" }
        )))
    }

    /// Changes an interface's MTU.
    pub async fn set_mtu(&self, index: u32, mtu: u32) -> Result<(), NetlinkError> {
        let msg = LinkUnspec::new_with_index(index).mtu(mtu).build();
        self.handle
            .link()
            .set(msg)
            .execute()
            .await
            .map_err(failed(format!("cannot set the MTU of interface {index} to {mtu}")))
    }

    /// Deletes an interface (deleting one end of a veth removes both).
    pub async fn del_link(&self, index: u32) -> Result<(), NetlinkError> {
        self.handle
            .link()
            .del(index)
            .execute()
            .await
            .map_err(failed(format!("cannot delete interface {index}")))
    }

    /// Adds an address to an interface; an address that is already there is not an error.
    pub async fn add_address(&self, index: u32, addr: Ipv4Addr, prefix_len: u8) -> Result<(), NetlinkError> {
        self.handle
            .address()
            .add(index, IpAddr::V4(addr), prefix_len)
            .replace()
            .execute()
            .await
            .map_err(failed(format!("cannot add {addr}/{prefix_len} to interface {index}")))
    }

    /// Adds or replaces a route.
    pub async fn replace_route(&self, r: &RouteSpec) -> Result<(), NetlinkError> {
        let mut b = RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(r.dst, r.prefix_len)
            .gateway(r.gateway)
            .output_interface(r.oif)
            .protocol(RouteProtocol::Other(ROUTE_PROTOCOL));
        if let Some(src) = r.src {
            b = b.pref_source(src);
        }
        self.handle
            .route()
            .add(b.build())
            .replace()
            .execute()
            .await
            .map_err(failed(format!(
                "cannot install route {}/{} via {}",
                r.dst, r.prefix_len, r.gateway
            )))
    }

    /// Deletes the route to `dst/prefix_len` (that wuos installed); a missing one is not an error.
    pub async fn del_route(&self, dst: Ipv4Addr, prefix_len: u8) -> Result<(), NetlinkError> {
        let msg = RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(dst, prefix_len)
            .protocol(RouteProtocol::Other(ROUTE_PROTOCOL))
            .build();
        match self.handle.route().del(msg).execute().await {
            Ok(()) => Ok(()),
            // ESRCH: no such route.
            Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc::ESRCH => Ok(()),
            Err(e) => Err(NetlinkError::Request {
                what: format!("cannot delete route {dst}/{prefix_len}"),
                source: e,
            }),
        }
    }

    /// The route the kernel takes to `dst` (`ip route get`), or with `fib_match` the FIB entry it
    /// matches (`ip route get fibmatch`); `None` when there is no route.
    pub(crate) async fn get_route(
        &self,
        dst: Ipv4Addr,
        fib_match: bool,
    ) -> Result<Option<crate::routes::FibEntry>, NetlinkError> {
        use rtnetlink::packet_route::route::{RouteAddress, RouteAttribute, RouteFlags};
        let mut msg = RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(dst, 32)
            .build();
        if fib_match {
            msg.header.flags |= RouteFlags::FibMatch;
        }
        let mut s = self.handle.route().get(msg).execute();
        let m = match s.try_next().await {
            Ok(Some(m)) => m,
            Ok(None) => return Ok(None),
            // No route: ENETUNREACH (or EHOSTUNREACH for an unreachable route).
            Err(rtnetlink::Error::NetlinkError(e))
                if [-libc::ENETUNREACH, -libc::EHOSTUNREACH, -libc::ESRCH].contains(&e.raw_code()) =>
            {
                return Ok(None);
            }
            Err(e) => {
                return Err(NetlinkError::Request {
                    what: format!("cannot look up the route to {dst}"),
                    source: e,
                });
            }
        };
        let mut e = crate::routes::FibEntry {
            dst,
            prefix_len: m.header.destination_prefix_length,
            gateway: None,
            oif: 0,
            protocol: u8::from(m.header.protocol),
        };
        for a in &m.attributes {
            match a {
                RouteAttribute::Destination(RouteAddress::Inet(d)) => e.dst = *d,
                RouteAttribute::Gateway(RouteAddress::Inet(g)) => e.gateway = Some(*g),
                RouteAttribute::Oif(o) => e.oif = *o,
                _ => {}
            }
        }
        if !fib_match {
            e.prefix_len = 32;
        }
        Ok(Some(e))
    }

    /// The index of the interface called `name`.
    pub async fn index_of(&self, name: &str) -> Result<u32, NetlinkError> {
        let mut s = self.handle.link().get().match_name(name.to_string()).execute();
        match s.try_next().await {
            Ok(Some(m)) => Ok(m.header.index),
            Ok(None) | Err(_) => Err(NetlinkError::NoSuchLink(name.to_string())),
        }
    }
}

/// Maps a failed request to an error that says what was attempted.
fn failed(what: String) -> impl FnOnce(rtnetlink::Error) -> NetlinkError {
    move |source| NetlinkError::Request { what, source }
}
