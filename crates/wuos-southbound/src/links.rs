//! Network interfaces behind a narrow trait: veth pairs born in their namespaces, up and down,
//! MTU, deletion, index by name. Implemented by [`Netlink`] (one socket, bound to one namespace)
//! and faked by [`RecordingLinks`].
//!
//! A veth pair is created by one request on any socket, usually the host's: each end names the
//! namespace it is born in ([`VethSide::netns`]), so no interface ever appears elsewhere. The type
//! that names a namespace is the implementation's: an open namespace file for netlink, the
//! namespace's name for the fake.

use std::collections::BTreeMap;
use std::fs::File;
use std::future::Future;
use std::os::fd::AsFd;
use std::sync::{Mutex, MutexGuard};

use crate::netlink::{Netlink, NetlinkError, VethEnd};
use crate::recording::{Journal, Recorded};

/// One end of a veth pair: born in `netns` with a chosen name, ifindex and MAC.
#[derive(Clone, Copy, Debug)]
pub struct VethSide<'a, N> {
    pub netns: &'a N,
    pub name: &'a str,
    pub index: u32,
    pub mac: [u8; 6],
}

/// The interfaces of one namespace (and veth pairs into any namespace), as wuos changes them.
pub trait Links: Send + Sync {
    /// How a namespace is named when a veth end is born in it.
    type Netns: Sync;

    /// Creates a veth pair whose ends are born in their namespaces, with `mtu` (None: the
    /// kernel's default). The ends start down.
    fn add_veth(
        &self,
        a: VethSide<'_, Self::Netns>,
        b: VethSide<'_, Self::Netns>,
        mtu: Option<u32>,
    ) -> impl Future<Output = Result<(), NetlinkError>> + Send;

    /// Sets interface `index` up or down.
    fn set_up(&self, index: u32, up: bool) -> impl Future<Output = Result<(), NetlinkError>> + Send;

    /// Changes the MTU of interface `index`.
    fn set_mtu(&self, index: u32, mtu: u32) -> impl Future<Output = Result<(), NetlinkError>> + Send;

    /// Deletes interface `index` (deleting one end of a veth removes both).
    fn delete(&self, index: u32) -> impl Future<Output = Result<(), NetlinkError>> + Send;

    /// The index of the interface called `name`.
    fn index_of(&self, name: &str) -> impl Future<Output = Result<u32, NetlinkError>> + Send;
}

impl Links for Netlink {
    type Netns = File;

    async fn add_veth(
        &self,
        a: VethSide<'_, File>,
        b: VethSide<'_, File>,
        mtu: Option<u32>,
    ) -> Result<(), NetlinkError> {
        fn end<'a>(s: VethSide<'a, File>) -> VethEnd<'a> {
            VethEnd {
                netns: s.netns.as_fd(),
                name: s.name,
                index: s.index,
                mac: s.mac,
            }
        }
        Netlink::add_veth(self, end(a), end(b), mtu).await
    }

    async fn set_up(&self, index: u32, up: bool) -> Result<(), NetlinkError> {
        Netlink::set_up(self, index, up).await
    }

    async fn set_mtu(&self, index: u32, mtu: u32) -> Result<(), NetlinkError> {
        Netlink::set_mtu(self, index, mtu).await
    }

    async fn delete(&self, index: u32) -> Result<(), NetlinkError> {
        self.del_link(index).await
    }

    async fn index_of(&self, name: &str) -> Result<u32, NetlinkError> {
        Netlink::index_of(self, name).await
    }
}

/// One end of a recorded veth pair.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordedEnd {
    pub netns: String,
    pub name: String,
    pub index: u32,
    pub mac: [u8; 6],
}

/// What a [`RecordingLinks`] was asked to change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LinkCall {
    AddVeth {
        a: RecordedEnd,
        b: RecordedEnd,
        mtu: Option<u32>,
    },
    SetUp {
        index: u32,
        up: bool,
    },
    SetMtu {
        index: u32,
        mtu: u32,
    },
    Delete {
        index: u32,
    },
}

/// A fake socket's interfaces: records changes in a [`Journal`] (with its namespace's name) and
/// knows the interfaces created in its own namespace, by name, for [`Links::index_of`].
#[derive(Debug)]
pub struct RecordingLinks {
    netns: String,
    journal: Journal,
    state: Mutex<FakeLinks>,
}

#[derive(Debug, Default)]
struct FakeLinks {
    /// name -> index, of interfaces in this namespace.
    names: BTreeMap<String, u32>,
    fail: Option<String>,
}

impl RecordingLinks {
    /// The interfaces of namespace `netns`; a loopback (`lo`, index 1) exists from the start.
    pub fn new(netns: &str, journal: &Journal) -> Self {
        let names = BTreeMap::from([("lo".to_string(), 1)]);
        Self {
            netns: netns.to_string(),
            journal: journal.clone(),
            state: Mutex::new(FakeLinks { names, fail: None }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, FakeLinks> {
        self.state.lock().expect("fake links lock")
    }

    /// Every change after this one fails with `message` (until [`RecordingLinks::heal`]).
    pub fn fail_changes(&self, message: &str) {
        self.lock().fail = Some(message.to_string());
    }

    pub fn heal(&self) {
        self.lock().fail = None;
    }

    fn record(&self, call: LinkCall) -> Result<(), NetlinkError> {
        if let Some(m) = &self.lock().fail {
            return Err(NetlinkError::Refused(format!("{call:?} in {}: {m}", self.netns)));
        }
        self.journal.push(Recorded::Link {
            netns: self.netns.clone(),
            call,
        });
        Ok(())
    }
}

impl Links for RecordingLinks {
    type Netns = String;

    async fn add_veth(
        &self,
        a: VethSide<'_, String>,
        b: VethSide<'_, String>,
        mtu: Option<u32>,
    ) -> Result<(), NetlinkError> {
        let end = |s: &VethSide<'_, String>| RecordedEnd {
            netns: s.netns.clone(),
            name: s.name.to_string(),
            index: s.index,
            mac: s.mac,
        };
        self.record(LinkCall::AddVeth {
            a: end(&a),
            b: end(&b),
            mtu,
        })?;
        let mut st = self.lock();
        for s in [a, b].iter().filter(|s| *s.netns == self.netns) {
            st.names.insert(s.name.to_string(), s.index);
        }
        Ok(())
    }

    async fn set_up(&self, index: u32, up: bool) -> Result<(), NetlinkError> {
        self.record(LinkCall::SetUp { index, up })
    }

    async fn set_mtu(&self, index: u32, mtu: u32) -> Result<(), NetlinkError> {
        self.record(LinkCall::SetMtu { index, mtu })
    }

    async fn delete(&self, index: u32) -> Result<(), NetlinkError> {
        self.record(LinkCall::Delete { index })?;
        self.lock().names.retain(|_, i| *i != index);
        Ok(())
    }

    async fn index_of(&self, name: &str) -> Result<u32, NetlinkError> {
        self.lock()
            .names
            .get(name)
            .copied()
            .ok_or_else(|| NetlinkError::NoSuchLink(name.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fake_records_changes_and_knows_its_own_interfaces() {
        let journal = Journal::new();
        let links = RecordingLinks::new("ns1", &journal);
        let (here, there) = ("ns1".to_string(), "ns2".to_string());
        futures::executor::block_on(async {
            let side = |netns, name, index| VethSide {
                netns,
                name,
                index,
                mac: [2, 0, 0, 0, 0, index as u8],
            };
            links
                .add_veth(side(&here, "eth0", 100), side(&there, "eth9", 109), Some(9000))
                .await
                .unwrap();
            assert_eq!(links.index_of("eth0").await.unwrap(), 100);
            assert!(
                links.index_of("eth9").await.is_err(),
                "the peer is in another namespace"
            );
            links.set_up(100, true).await.unwrap();
            links.set_mtu(100, 1400).await.unwrap();
            links.delete(100).await.unwrap();
            assert!(links.index_of("eth0").await.is_err(), "deleted");
            links.fail_changes("EPERM");
            assert!(links.set_up(1, true).await.is_err());
            links.heal();
        });
        let calls: Vec<LinkCall> = journal
            .take()
            .into_iter()
            .map(|r| match r {
                Recorded::Link { netns, call } if netns == "ns1" => call,
                other => panic!("expected a link call in ns1, got {other:?}"),
            })
            .collect();
        assert_eq!(calls.len(), 4, "a refused change is not recorded: {calls:?}");
        assert!(
            matches!(&calls[0], LinkCall::AddVeth { a, b, mtu: Some(9000) } if a.netns == "ns1" && b.name == "eth9")
        );
        assert_eq!(
            calls[1..],
            [
                LinkCall::SetUp { index: 100, up: true },
                LinkCall::SetMtu { index: 100, mtu: 1400 },
                LinkCall::Delete { index: 100 }
            ]
        );
    }
}
