//! Named network namespaces with a socket in each, behind a narrow trait: what an executor needs
//! to create namespaces (running code on the creating thread, e.g. [`crate::sysctls`]), reach
//! existing ones, and talk to each one's links, addresses and routes. Implemented by
//! [`LinuxNamespaces`] ([`crate::netns`] + a [`Netlink`] socket per namespace) and faked by
//! [`RecordingNamespaces`] (a [`RecordingSocket`] per namespace).
//!
//! The socket of a namespace implements [`Links`], [`Addresses`] and [`Routes`]; the host's socket
//! ([`Namespaces::host`]) creates veth pairs directly in their target namespaces.

use std::collections::BTreeMap;
use std::fs::File;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::addresses::{Addresses, RecordingAddresses};
use crate::links::{Links, RecordingLinks, VethSide};
use crate::netlink::{Netlink, NetlinkError, RouteSpec};
use crate::netns::{self, NetnsError};
use crate::recording::{Journal, Recorded, Refusals};
use crate::routes::{FibEntry, NextHop, RecordingRoutes, RouteCall, Routes};

#[derive(Debug, thiserror::Error)]
pub enum NamespaceError {
    #[error(transparent)]
    Netns(#[from] NetnsError),
    #[error("cannot open a netlink socket in namespace {name}: {source}")]
    Socket { name: String, source: NetlinkError },
}

/// Network namespaces by name, each with a socket.
pub trait Namespaces: Sync {
    /// A handle that keeps a namespace reachable (and names it when a veth end is born in it).
    type Netns: Send + Sync;
    /// A socket bound to one namespace.
    type Socket: Links<Netns = Self::Netns> + Addresses + Routes + Clone + Send + Sync + 'static;

    /// The socket in the caller's own namespace.
    fn host(&self) -> &Self::Socket;

    /// Creates namespace `name`, runs `inside` on the creating thread while it is in the new
    /// namespace, and opens a socket there. Fails if the namespace exists; on failure nothing is
    /// left behind.
    fn create<R: Send>(
        &self,
        name: &str,
        inside: impl FnOnce() -> R + Send,
    ) -> Result<(Self::Netns, Self::Socket, R), NamespaceError>;

    /// Opens existing namespace `name` and a socket in it.
    fn open(&self, name: &str) -> Result<(Self::Netns, Self::Socket), NamespaceError>;

    /// Deletes namespace `name`; `Ok(false)` if it did not exist. The kernel frees it, and every
    /// interface in it, once no process, mount or socket holds it.
    fn delete(&self, name: &str) -> Result<bool, NamespaceError>;
}

/// The host's named namespaces under a directory (usually `/run/netns`), with their netlink
/// connections driven by a tokio runtime.
#[derive(Debug)]
pub struct LinuxNamespaces {
    dir: PathBuf,
    rt: tokio::runtime::Handle,
    host: Netlink,
}

impl LinuxNamespaces {
    /// Namespaces under `dir`; the host socket is opened in the caller's namespace and every
    /// socket's connection runs on `rt`.
    pub fn new(dir: &Path, rt: &tokio::runtime::Handle) -> Result<Self, NetlinkError> {
        Ok(Self {
            dir: dir.to_owned(),
            rt: rt.clone(),
            host: Netlink::connect_here(rt)?,
        })
    }
}

impl Namespaces for LinuxNamespaces {
    type Netns = File;
    type Socket = Netlink;

    fn host(&self) -> &Netlink {
        &self.host
    }

    fn create<R: Send>(
        &self,
        name: &str,
        inside: impl FnOnce() -> R + Send,
    ) -> Result<(File, Netlink, R), NamespaceError> {
        let rt = &self.rt;
        let (file, (r, nl)) = netns::create(&self.dir, name, || {
            let r = inside();
            (r, Netlink::connect_here(rt))
        })?;
        match nl {
            Ok(nl) => Ok((file, nl, r)),
            Err(source) => {
                drop(file);
                let _ = netns::delete(&self.dir, name);
                Err(NamespaceError::Socket {
                    name: name.to_string(),
                    source,
                })
            }
        }
    }

    fn open(&self, name: &str) -> Result<(File, Netlink), NamespaceError> {
        let file = netns::open(&self.dir, name)?;
        let rt = &self.rt;
        let nl = netns::run_in(&file, || Netlink::connect_here(rt))?.map_err(|source| NamespaceError::Socket {
            name: name.to_string(),
            source,
        })?;
        Ok((file, nl))
    }

    fn delete(&self, name: &str) -> Result<bool, NamespaceError> {
        Ok(netns::delete(&self.dir, name)?)
    }
}

/// What a [`RecordingNamespaces`] was asked to change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NamespaceCall {
    Create { name: String },
    Delete { name: String },
}

/// The name the fake host socket's changes are recorded under.
pub const HOST: &str = "(host)";

/// A fake set of namespaces: records creations and deletions in a [`Journal`] (a creation before
/// what `inside` records), gives every namespace a [`RecordingSocket`] on the same journal, and
/// refuses to create chosen names.
#[derive(Debug)]
pub struct RecordingNamespaces {
    journal: Journal,
    host: RecordingSocket,
    sockets: Mutex<BTreeMap<String, RecordingSocket>>,
    refused: Refusals,
}

impl RecordingNamespaces {
    pub fn new(journal: &Journal) -> Self {
        Self {
            journal: journal.clone(),
            host: RecordingSocket::new(HOST, journal),
            sockets: Mutex::new(BTreeMap::new()),
            refused: Refusals::default(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<String, RecordingSocket>> {
        self.sockets.lock().expect("fake namespaces lock")
    }

    /// A namespace that exists from the start (not recorded).
    pub fn with_namespace(self, name: &str) -> Self {
        let s = RecordingSocket::new(name, &self.journal);
        self.lock().insert(name.to_string(), s);
        self
    }

    /// Creating `name` fails from now on.
    pub fn refuse(&self, name: &str) {
        self.refused.add(name);
    }

    /// The names of the namespaces that exist, sorted.
    pub fn names(&self) -> Vec<String> {
        self.lock().keys().cloned().collect()
    }

    /// The socket of namespace `name`, if it exists.
    pub fn socket(&self, name: &str) -> Option<RecordingSocket> {
        self.lock().get(name).cloned()
    }
}

impl Namespaces for RecordingNamespaces {
    type Netns = String;
    type Socket = RecordingSocket;

    fn host(&self) -> &RecordingSocket {
        &self.host
    }

    fn create<R: Send>(
        &self,
        name: &str,
        inside: impl FnOnce() -> R + Send,
    ) -> Result<(String, RecordingSocket, R), NamespaceError> {
        let path = PathBuf::from(name);
        if self.lock().contains_key(name) {
            return Err(NetnsError::Exists { path }.into());
        }
        if self.refused.refuses(name) {
            return Err(NetnsError::Create {
                path,
                source: std::io::Error::other("refused by the fake"),
            }
            .into());
        }
        self.journal
            .push(Recorded::Namespace(NamespaceCall::Create { name: name.to_string() }));
        let r = inside();
        let s = RecordingSocket::new(name, &self.journal);
        self.lock().insert(name.to_string(), s.clone());
        Ok((name.to_string(), s, r))
    }

    fn open(&self, name: &str) -> Result<(String, RecordingSocket), NamespaceError> {
        match self.socket(name) {
            Some(s) => Ok((name.to_string(), s)),
            None => Err(NetnsError::Open {
                path: PathBuf::from(name),
                source: std::io::Error::from(std::io::ErrorKind::NotFound),
            }
            .into()),
        }
    }

    fn delete(&self, name: &str) -> Result<bool, NamespaceError> {
        self.journal
            .push(Recorded::Namespace(NamespaceCall::Delete { name: name.to_string() }));
        Ok(self.lock().remove(name).is_some())
    }
}

/// A fake socket in one namespace: [`RecordingLinks`], [`RecordingAddresses`] and a
/// [`RecordingRoutes`] FIB, all recording into one journal under the namespace's name.
#[derive(Clone, Debug)]
pub struct RecordingSocket(Arc<SocketFakes>);

#[derive(Debug)]
struct SocketFakes {
    netns: String,
    journal: Journal,
    links: RecordingLinks,
    addresses: RecordingAddresses,
    routes: RecordingRoutes,
}

impl RecordingSocket {
    pub fn new(netns: &str, journal: &Journal) -> Self {
        Self(Arc::new(SocketFakes {
            netns: netns.to_string(),
            journal: journal.clone(),
            links: RecordingLinks::new(netns, journal),
            addresses: RecordingAddresses::new(netns, journal),
            routes: RecordingRoutes::new(),
        }))
    }

    pub fn links(&self) -> &RecordingLinks {
        &self.0.links
    }

    pub fn addresses(&self) -> &RecordingAddresses {
        &self.0.addresses
    }

    /// The namespace's fake FIB.
    pub fn routes(&self) -> &RecordingRoutes {
        &self.0.routes
    }

    fn record_route(&self, call: RouteCall) {
        self.0.journal.push(Recorded::Route {
            netns: self.0.netns.clone(),
            call,
        });
    }
}

impl Links for RecordingSocket {
    type Netns = String;

    async fn add_veth(
        &self,
        a: VethSide<'_, String>,
        b: VethSide<'_, String>,
        mtu: Option<u32>,
    ) -> Result<(), NetlinkError> {
        self.0.links.add_veth(a, b, mtu).await
    }

    async fn set_up(&self, index: u32, up: bool) -> Result<(), NetlinkError> {
        self.0.links.set_up(index, up).await
    }

    async fn set_mtu(&self, index: u32, mtu: u32) -> Result<(), NetlinkError> {
        self.0.links.set_mtu(index, mtu).await
    }

    async fn delete(&self, index: u32) -> Result<(), NetlinkError> {
        Links::delete(&self.0.links, index).await
    }

    async fn index_of(&self, name: &str) -> Result<u32, NetlinkError> {
        self.0.links.index_of(name).await
    }
}

impl Addresses for RecordingSocket {
    async fn add(&self, index: u32, addr: Ipv4Addr, prefix_len: u8) -> Result<(), NetlinkError> {
        self.0.addresses.add(index, addr, prefix_len).await
    }
}

impl Routes for RecordingSocket {
    async fn next_hop(&self, dst: Ipv4Addr) -> Result<Option<NextHop>, NetlinkError> {
        self.0.routes.next_hop(dst).await
    }

    async fn fib_match(&self, dst: Ipv4Addr) -> Result<Option<FibEntry>, NetlinkError> {
        self.0.routes.fib_match(dst).await
    }

    async fn replace(&self, route: &RouteSpec) -> Result<(), NetlinkError> {
        self.0.routes.replace(route).await?;
        self.record_route(RouteCall::Replace(*route));
        Ok(())
    }

    async fn delete(&self, dst: Ipv4Addr, prefix_len: u8) -> Result<(), NetlinkError> {
        Routes::delete(&self.0.routes, dst, prefix_len).await?;
        self.record_route(RouteCall::Delete { dst, prefix_len });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::links::LinkCall;

    #[test]
    fn the_fake_creates_opens_and_deletes_and_its_sockets_record_under_their_namespace() {
        let journal = Journal::new();
        let ns = RecordingNamespaces::new(&journal).with_namespace("other");
        let (name, sock, inside) = ns
            .create("a", || {
                journal.push(Recorded::Sysctl(crate::sysctls::SysctlCall::Set {
                    key: "k".into(),
                    value: "v".into(),
                }));
                7
            })
            .unwrap();
        assert_eq!((name.as_str(), inside), ("a", 7));
        assert!(matches!(
            ns.create("a", || ()),
            Err(NamespaceError::Netns(NetnsError::Exists { .. }))
        ));
        ns.refuse("b");
        assert!(ns.create("b", || ()).is_err());
        assert!(ns.open("b").is_err());
        let (_, again) = ns.open("a").unwrap();
        let route = RouteSpec {
            dst: [10, 254, 0, 0].into(),
            prefix_len: 16,
            gateway: [10, 0, 0, 1].into(),
            oif: 100,
            src: None,
        };
        futures::executor::block_on(async {
            sock.set_up(1, true).await.unwrap();
            again.replace(&route).await.unwrap();
            assert_eq!(
                sock.next_hop([10, 254, 0, 9].into()).await.unwrap().map(|h| h.oif),
                Some(100),
                "one FIB per namespace, whichever handle"
            );
            Routes::delete(&sock, route.dst, 16).await.unwrap();
        });
        assert!(ns.delete("a").unwrap());
        assert!(!ns.delete("a").unwrap());
        assert_eq!(ns.names(), vec!["other".to_string()]);
        assert_eq!(
            journal.take(),
            vec![
                Recorded::Namespace(NamespaceCall::Create { name: "a".into() }),
                Recorded::Sysctl(crate::sysctls::SysctlCall::Set {
                    key: "k".into(),
                    value: "v".into()
                }),
                Recorded::Link {
                    netns: "a".into(),
                    call: LinkCall::SetUp { index: 1, up: true }
                },
                Recorded::Route {
                    netns: "a".into(),
                    call: RouteCall::Replace(route)
                },
                Recorded::Route {
                    netns: "a".into(),
                    call: RouteCall::Delete {
                        dst: route.dst,
                        prefix_len: 16
                    }
                },
                Recorded::Namespace(NamespaceCall::Delete { name: "a".into() }),
                Recorded::Namespace(NamespaceCall::Delete { name: "a".into() }),
            ]
        );
    }
}
