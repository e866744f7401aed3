//! IPv4 addresses of interfaces behind a narrow trait, implemented by [`Netlink`] (one socket,
//! bound to one namespace) and faked by [`RecordingAddresses`].

use std::future::Future;
use std::net::Ipv4Addr;
use std::sync::Mutex;

use crate::netlink::{Netlink, NetlinkError};
use crate::recording::{Journal, Recorded};

/// The addresses of one namespace's interfaces, as wuos changes them.
pub trait Addresses: Send + Sync {
    /// Adds `addr/prefix_len` to interface `index`; an address that is already there is not an
    /// error.
    fn add(&self, index: u32, addr: Ipv4Addr, prefix_len: u8) -> impl Future<Output = Result<(), NetlinkError>> + Send;
}

impl Addresses for Netlink {
    async fn add(&self, index: u32, addr: Ipv4Addr, prefix_len: u8) -> Result<(), NetlinkError> {
        self.add_address(index, addr, prefix_len).await
    }
}

/// What a [`RecordingAddresses`] was asked to change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AddressCall {
    Add { index: u32, addr: Ipv4Addr, prefix_len: u8 },
}

/// A fake socket's addresses: records changes in a [`Journal`] with its namespace's name.
#[derive(Debug)]
pub struct RecordingAddresses {
    netns: String,
    journal: Journal,
    fail: Mutex<Option<String>>,
}

impl RecordingAddresses {
    pub fn new(netns: &str, journal: &Journal) -> Self {
        Self {
            netns: netns.to_string(),
            journal: journal.clone(),
            fail: Mutex::new(None),
        }
    }

    /// Every change after this one fails with `message`.
    pub fn fail_changes(&self, message: &str) {
        *self.fail.lock().expect("fake addresses lock") = Some(message.to_string());
    }
}

impl Addresses for RecordingAddresses {
    async fn add(&self, index: u32, addr: Ipv4Addr, prefix_len: u8) -> Result<(), NetlinkError> {
        if let Some(m) = &*self.fail.lock().expect("fake addresses lock") {
            return Err(NetlinkError::Refused(format!(
                "{addr}/{prefix_len} on {index} in {}: {m}",
                self.netns
            )));
        }
        self.journal.push(Recorded::Address {
            netns: self.netns.clone(),
            call: AddressCall::Add {
                index,
                addr,
                prefix_len,
            },
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fake_records_additions_with_their_namespace() {
        let journal = Journal::new();
        let a = RecordingAddresses::new("ns1", &journal);
        futures::executor::block_on(async {
            a.add(1, [10, 254, 0, 1].into(), 32).await.unwrap();
            a.fail_changes("EEXIST");
            assert!(a.add(1, [10, 254, 0, 2].into(), 32).await.is_err());
        });
        assert_eq!(
            journal.take(),
            vec![Recorded::Address {
                netns: "ns1".into(),
                call: AddressCall::Add {
                    index: 1,
                    addr: [10, 254, 0, 1].into(),
                    prefix_len: 32
                }
            }]
        );
    }
}
