//! Routes behind a narrow trait: what the daemon's controller and the lab need of the kernel's
//! FIB, with the netlink implementation ([`Netlink`]) and a recording fake ([`RecordingRoutes`]).
//!
//! Lookups are the kernel's own (`RTM_GETROUTE` for one destination, as `ip route get` does):
//! nothing dumps the routing table to search it in user space.

use std::future::Future;
use std::net::Ipv4Addr;
use std::sync::{Mutex, MutexGuard};

use crate::netlink::{Netlink, NetlinkError, ROUTE_PROTOCOL, RouteSpec};

pub use wuos_model::route::{FibEntry, NextHop};

/// The kernel's routes, as wuos reads and changes them.
pub trait Routes: Send + Sync {
    /// The next hop for `dst` (`ip route get DST`); `None` when the kernel has no route.
    fn next_hop(&self, dst: Ipv4Addr) -> impl Future<Output = Result<Option<NextHop>, NetlinkError>> + Send;

    /// The FIB entry `dst` matches (`ip route get fibmatch DST`); `None` when none does.
    fn fib_match(&self, dst: Ipv4Addr) -> impl Future<Output = Result<Option<FibEntry>, NetlinkError>> + Send;

    /// Adds or replaces a route (protocol [`ROUTE_PROTOCOL`]).
    fn replace(&self, route: &RouteSpec) -> impl Future<Output = Result<(), NetlinkError>> + Send;

    /// Deletes wuos's route to `dst/prefix_len`; a missing one is not an error.
    fn delete(&self, dst: Ipv4Addr, prefix_len: u8) -> impl Future<Output = Result<(), NetlinkError>> + Send;
}

/// A shared implementation (a test keeps a handle on its fake).
impl<T: Routes> Routes for std::sync::Arc<T> {
    fn next_hop(&self, dst: Ipv4Addr) -> impl Future<Output = Result<Option<NextHop>, NetlinkError>> + Send {
        (**self).next_hop(dst)
    }

    fn fib_match(&self, dst: Ipv4Addr) -> impl Future<Output = Result<Option<FibEntry>, NetlinkError>> + Send {
        (**self).fib_match(dst)
    }

    fn replace(&self, route: &RouteSpec) -> impl Future<Output = Result<(), NetlinkError>> + Send {
        (**self).replace(route)
    }

    fn delete(&self, dst: Ipv4Addr, prefix_len: u8) -> impl Future<Output = Result<(), NetlinkError>> + Send {
        (**self).delete(dst, prefix_len)
    }
}

impl Routes for Netlink {
    async fn next_hop(&self, dst: Ipv4Addr) -> Result<Option<NextHop>, NetlinkError> {
        Ok(self.get_route(dst, false).await?.map(|e| NextHop {
            gateway: e.gateway.unwrap_or(dst),
            oif: e.oif,
        }))
    }

    async fn fib_match(&self, dst: Ipv4Addr) -> Result<Option<FibEntry>, NetlinkError> {
        self.get_route(dst, true).await
    }

    async fn replace(&self, route: &RouteSpec) -> Result<(), NetlinkError> {
        self.replace_route(route).await
    }

    async fn delete(&self, dst: Ipv4Addr, prefix_len: u8) -> Result<(), NetlinkError> {
        self.del_route(dst, prefix_len).await
    }
}

/// What a [`RecordingRoutes`] was asked to change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RouteCall {
    Replace(RouteSpec),
    Delete { dst: Ipv4Addr, prefix_len: u8 },
}

/// A fake FIB for tests: an in-memory table answered by longest-prefix match, and the list of
/// changes asked of it.
#[derive(Debug, Default)]
pub struct RecordingRoutes {
    state: Mutex<FakeFib>,
}

#[derive(Debug, Default)]
struct FakeFib {
    /// (route, protocol)
    table: Vec<(RouteSpec, u8)>,
    calls: Vec<RouteCall>,
    fail: Option<String>,
}

impl RecordingRoutes {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, FakeFib> {
        // A test that panicked while holding the lock has failed already.
        self.state.lock().expect("fake FIB lock")
    }

    /// Adds a route that is not wuos's (a connected route, one from the lab's plan).
    pub fn with_route(self, dst: Ipv4Addr, prefix_len: u8, gateway: Option<Ipv4Addr>, oif: u32) -> Self {
        self.lock().table.push((
            RouteSpec {
                dst,
                prefix_len,
                gateway: gateway.unwrap_or(Ipv4Addr::UNSPECIFIED),
                oif,
                src: None,
            },
            // RTPROT_KERNEL or RTPROT_STATIC: anything but wuos's.
            if gateway.is_none() { 2 } else { 4 },
        ));
        self
    }

    /// The changes asked so far, and forgets them.
    pub fn take_calls(&self) -> Vec<RouteCall> {
        std::mem::take(&mut self.lock().calls)
    }

    /// Every change after this one fails with `message` (until [`RecordingRoutes::heal`]).
    pub fn fail_changes(&self, message: &str) {
        self.lock().fail = Some(message.to_string());
    }

    pub fn heal(&self) {
        self.lock().fail = None;
    }

    fn matched(&self, dst: Ipv4Addr) -> Option<FibEntry> {
        let st = self.lock();
        st.table
            .iter()
            .filter(|(r, _)| {
                let mask = u32::MAX.checked_shl(32 - u32::from(r.prefix_len)).unwrap_or(0);
                u32::from(dst) & mask == u32::from(r.dst) & mask
            })
            .max_by_key(|(r, _)| r.prefix_len)
            .map(|(r, p)| FibEntry {
                dst: r.dst,
                prefix_len: r.prefix_len,
                gateway: (!r.gateway.is_unspecified()).then_some(r.gateway),
                oif: r.oif,
                protocol: *p,
            })
    }

    fn refusal(&self, what: &str) -> Option<NetlinkError> {
        self.lock()
            .fail
            .clone()
            .map(|m| NetlinkError::Refused(format!("{what}: {m}")))
    }
}

impl Routes for RecordingRoutes {
    async fn next_hop(&self, dst: Ipv4Addr) -> Result<Option<NextHop>, NetlinkError> {
        Ok(self.matched(dst).map(|e| NextHop {
            gateway: e.gateway.unwrap_or(dst),
            oif: e.oif,
        }))
    }

    async fn fib_match(&self, dst: Ipv4Addr) -> Result<Option<FibEntry>, NetlinkError> {
        Ok(self.matched(dst))
    }

    async fn replace(&self, route: &RouteSpec) -> Result<(), NetlinkError> {
        if let Some(e) = self.refusal(&format!("route {}/{}", route.dst, route.prefix_len)) {
            return Err(e);
        }
        let mut st = self.lock();
        st.calls.push(RouteCall::Replace(*route));
        st.table
            .retain(|(r, _)| !(r.dst == route.dst && r.prefix_len == route.prefix_len));
        st.table.push((*route, ROUTE_PROTOCOL));
        Ok(())
    }

    async fn delete(&self, dst: Ipv4Addr, prefix_len: u8) -> Result<(), NetlinkError> {
        if let Some(e) = self.refusal(&format!("route {dst}/{prefix_len}")) {
            return Err(e);
        }
        let mut st = self.lock();
        st.calls.push(RouteCall::Delete { dst, prefix_len });
        st.table
            .retain(|(r, p)| !(r.dst == dst && r.prefix_len == prefix_len && *p == ROUTE_PROTOCOL));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block_on<F: Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(f)
    }

    #[test]
    fn the_fake_answers_by_longest_prefix_and_records_changes() {
        let fib = RecordingRoutes::new()
            .with_route([10, 0, 0, 0].into(), 30, None, 2)
            .with_route([10, 254, 0, 0].into(), 16, Some([10, 0, 0, 2].into()), 2)
            .with_route([10, 254, 0, 7].into(), 32, Some([10, 0, 0, 6].into()), 3);
        block_on(async {
            let via = |g: [u8; 4], oif| Some(NextHop { gateway: g.into(), oif });
            assert_eq!(
                fib.next_hop([10, 254, 0, 9].into()).await.unwrap(),
                via([10, 0, 0, 2], 2)
            );
            assert_eq!(
                fib.next_hop([10, 254, 0, 7].into()).await.unwrap(),
                via([10, 0, 0, 6], 3)
            );
            assert_eq!(
                fib.next_hop([10, 0, 0, 2].into()).await.unwrap(),
                via([10, 0, 0, 2], 2),
                "on-link"
            );
            assert_eq!(fib.next_hop([192, 0, 2, 1].into()).await.unwrap(), None);
            let vip = Ipv4Addr::new(10, 255, 0, 10);
            let r = RouteSpec {
                dst: vip,
                prefix_len: 32,
                gateway: [10, 0, 0, 2].into(),
                oif: 2,
                src: None,
            };
            fib.replace(&r).await.unwrap();
            let m = fib.fib_match(vip).await.unwrap().unwrap();
            assert!(
                m.is(
                    vip,
                    32,
                    NextHop {
                        gateway: r.gateway,
                        oif: 2
                    }
                ),
                "{m:?}"
            );
            fib.delete(vip, 32).await.unwrap();
            assert_eq!(fib.fib_match(vip).await.unwrap(), None);
            assert_eq!(
                fib.take_calls(),
                vec![
                    RouteCall::Replace(r),
                    RouteCall::Delete {
                        dst: vip,
                        prefix_len: 32
                    }
                ]
            );
            fib.fail_changes("EPERM");
            assert!(fib.replace(&r).await.is_err());
            assert!(fib.take_calls().is_empty(), "a refused change is not recorded");
        });
    }
}
