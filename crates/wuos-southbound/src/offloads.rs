//! NIC offloads behind a narrow trait, implemented by [`Ethtool`] (the `ethtool` binary, run
//! inside the interface's namespace) and faked by [`RecordingOffloads`].
//!
//! Why the lab turns TX checksum offload off: an XDP redirect drops a frame's partial-checksum
//! state, so frames must leave a veth with complete checksums (see the platform notes).

use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::netns::{self, NetnsError};
use crate::recording::{Journal, Recorded, Refusals};

#[derive(Debug, thiserror::Error)]
pub enum OffloadError {
    #[error("cannot run ethtool for {ifname} in {netns} (apt-get install ethtool): {source}")]
    Spawn {
        netns: String,
        ifname: String,
        source: io::Error,
    },
    #[error("ethtool -K {ifname} tx {state} in {netns} failed: {stderr}")]
    Failed {
        netns: String,
        ifname: String,
        state: &'static str,
        stderr: String,
    },
    #[error(transparent)]
    Netns(#[from] NetnsError),
}

/// Offload settings of interfaces in named namespaces.
pub trait Offloads: Sync {
    /// Turns TX checksum offload of `ifname` in namespace `netns` on or off
    /// (`ethtool -K IFNAME tx on|off`).
    fn set_tx_checksum(&self, netns: &str, ifname: &str, on: bool) -> Result<(), OffloadError>;
}

/// `ethtool`, run on a thread that entered the namespace (found under `netns_dir`).
#[derive(Clone, Debug)]
pub struct Ethtool {
    netns_dir: PathBuf,
}

impl Ethtool {
    /// Namespaces are found under `netns_dir`, usually `/run/netns`.
    pub fn new(netns_dir: &Path) -> Self {
        Self {
            netns_dir: netns_dir.to_owned(),
        }
    }
}

impl Offloads for Ethtool {
    fn set_tx_checksum(&self, netns: &str, ifname: &str, on: bool) -> Result<(), OffloadError> {
        let state = if on { "on" } else { "off" };
        let ns = netns::open(&self.netns_dir, netns)?;
        // A child inherits the network namespace of the thread that spawns it.
        let out = netns::run_in(&ns, || {
            Command::new("ethtool").args(["-K", ifname, "tx", state]).output()
        })?;
        match out {
            Ok(o) if o.status.success() => Ok(()),
            Ok(o) => Err(OffloadError::Failed {
                netns: netns.to_string(),
                ifname: ifname.to_string(),
                state,
                stderr: String::from_utf8_lossy(&o.stderr).trim().to_string(),
            }),
            Err(source) => Err(OffloadError::Spawn {
                netns: netns.to_string(),
                ifname: ifname.to_string(),
                source,
            }),
        }
    }
}

/// What a [`RecordingOffloads`] was asked to change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OffloadCall {
    TxChecksum { netns: String, ifname: String, on: bool },
}

/// A fake: records changes in a [`Journal`]; refuses chosen interfaces (by name).
#[derive(Debug)]
pub struct RecordingOffloads {
    journal: Journal,
    refused: Refusals,
}

impl RecordingOffloads {
    pub fn new(journal: &Journal) -> Self {
        Self {
            journal: journal.clone(),
            refused: Refusals::default(),
        }
    }

    /// Changes to interface `ifname` (in any namespace) fail from now on.
    pub fn refuse(&self, ifname: &str) {
        self.refused.add(ifname);
    }
}

impl Offloads for RecordingOffloads {
    fn set_tx_checksum(&self, netns: &str, ifname: &str, on: bool) -> Result<(), OffloadError> {
        if self.refused.refuses(ifname) {
            return Err(OffloadError::Failed {
                netns: netns.to_string(),
                ifname: ifname.to_string(),
                state: if on { "on" } else { "off" },
                stderr: "refused by the fake".into(),
            });
        }
        self.journal.push(Recorded::Offload(OffloadCall::TxChecksum {
            netns: netns.to_string(),
            ifname: ifname.to_string(),
            on,
        }));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fake_records_and_refuses() {
        let journal = Journal::new();
        let o = RecordingOffloads::new(&journal);
        o.set_tx_checksum("ns1", "eth0", false).unwrap();
        o.refuse("eth1");
        let e = o.set_tx_checksum("ns1", "eth1", false).unwrap_err();
        assert!(e.to_string().contains("eth1 tx off in ns1"), "{e}");
        assert_eq!(
            journal.take(),
            vec![Recorded::Offload(OffloadCall::TxChecksum {
                netns: "ns1".into(),
                ifname: "eth0".into(),
                on: false
            })]
        );
    }

    #[test]
    fn ethtool_names_a_missing_namespace() {
        let dir = tempfile::tempdir().unwrap();
        let e = Ethtool::new(dir.path())
            .set_tx_checksum("nope", "eth0", false)
            .unwrap_err();
        assert!(matches!(e, OffloadError::Netns(_)), "{e}");
        assert!(e.to_string().contains("nope"), "{e}");
    }
}
