//! NIC offloads behind a narrow trait, implemented by [`Ethtool`] (the `ethtool` binary, run
//! inside the interface's namespace) and faked by [`RecordingOffloads`].
//!
//! Why the lab turns TX checksum offload off: an XDP redirect drops a frame's partial-checksum
//! state, so frames must leave a veth with complete checksums (see the platform notes).
//!
//! Why it turns the [`UNRELAYABLE_GSO`] segmentation offloads off on the interfaces that lead into
//! a relay: the relay reads frames from an `AF_PACKET` socket with `PACKET_VNET_HDR`, whose
//! `virtio_net_hdr` can describe TCP and UDP super-frames only; the kernel drops any other GSO
//! super-frame on that socket (`virtio_net_hdr_from_skb` fails). A VXLAN tunnel's TCP is such a
//! super-frame (`SKB_GSO_UDP_TUNNEL`): through a relay it got ~0.3 Mbit/s, every full-sized
//! segment lost and only retransmissions of single segments getting through. With the offload
//! off on the interface the frame is sent on, the kernel segments it before the relay sees it.

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
    #[error("ethtool -K {ifname} {features} in {netns} failed: {stderr}")]
    Failed {
        netns: String,
        ifname: String,
        /// The features asked for, as ethtool's arguments (`tx off`).
        features: String,
        stderr: String,
    },
    #[error(transparent)]
    Netns(#[from] NetnsError),
}

/// The segmentation offloads (ethtool's feature names) whose super-frames an `AF_PACKET` socket
/// with `PACKET_VNET_HDR` cannot carry: tunnels (VXLAN and other UDP tunnels, GRE, IP in IP),
/// SCTP, and fraglist GSO.
pub const UNRELAYABLE_GSO: [&str; 8] = [
    "tx-udp_tnl-segmentation",
    "tx-udp_tnl-csum-segmentation",
    "tx-gre-segmentation",
    "tx-gre-csum-segmentation",
    "tx-ipxip4-segmentation",
    "tx-ipxip6-segmentation",
    "tx-sctp-segmentation",
    "tx-gso-list",
];

fn on_off(on: bool) -> &'static str {
    if on { "on" } else { "off" }
}

/// Offload settings of interfaces in named namespaces.
pub trait Offloads: Sync {
    /// Turns TX checksum offload of `ifname` in namespace `netns` on or off
    /// (`ethtool -K IFNAME tx on|off`).
    fn set_tx_checksum(&self, netns: &str, ifname: &str, on: bool) -> Result<(), OffloadError>;

    /// Turns the [`UNRELAYABLE_GSO`] segmentation offloads of `ifname` in namespace `netns` on or
    /// off (off: the kernel segments such frames before `ifname` sends them).
    fn set_unrelayable_gso(&self, netns: &str, ifname: &str, on: bool) -> Result<(), OffloadError>;
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

impl Ethtool {
    /// `ethtool -K IFNAME FEATURE on|off …` in namespace `netns`.
    fn set(&self, netns: &str, ifname: &str, features: &[&str], on: bool) -> Result<(), OffloadError> {
        let args: Vec<&str> = features.iter().flat_map(|f| [*f, on_off(on)]).collect();
        let ns = netns::open(&self.netns_dir, netns)?;
        // A child inherits the network namespace of the thread that spawns it.
        let out = netns::run_in(&ns, || {
            Command::new("ethtool").arg("-K").arg(ifname).args(&args).output()
        })?;
        match out {
            Ok(o) if o.status.success() => Ok(()),
            Ok(o) => Err(OffloadError::Failed {
                netns: netns.to_string(),
                ifname: ifname.to_string(),
                features: args.join(" "),
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

impl Offloads for Ethtool {
    fn set_tx_checksum(&self, netns: &str, ifname: &str, on: bool) -> Result<(), OffloadError> {
        self.set(netns, ifname, &["tx"], on)
    }

    fn set_unrelayable_gso(&self, netns: &str, ifname: &str, on: bool) -> Result<(), OffloadError> {
        self.set(netns, ifname, &UNRELAYABLE_GSO, on)
    }
}

/// What a [`RecordingOffloads`] was asked to change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OffloadCall {
    TxChecksum { netns: String, ifname: String, on: bool },
    UnrelayableGso { netns: String, ifname: String, on: bool },
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

impl RecordingOffloads {
    fn record(&self, netns: &str, ifname: &str, features: &str, call: OffloadCall) -> Result<(), OffloadError> {
        if self.refused.refuses(ifname) {
            return Err(OffloadError::Failed {
                netns: netns.to_string(),
                ifname: ifname.to_string(),
                features: features.to_string(),
                stderr: "refused by the fake".into(),
            });
        }
        self.journal.push(Recorded::Offload(call));
        Ok(())
    }
}

impl Offloads for RecordingOffloads {
    fn set_tx_checksum(&self, netns: &str, ifname: &str, on: bool) -> Result<(), OffloadError> {
        let call = OffloadCall::TxChecksum {
            netns: netns.to_string(),
            ifname: ifname.to_string(),
            on,
        };
        self.record(netns, ifname, &format!("tx {}", on_off(on)), call)
    }

    fn set_unrelayable_gso(&self, netns: &str, ifname: &str, on: bool) -> Result<(), OffloadError> {
        let call = OffloadCall::UnrelayableGso {
            netns: netns.to_string(),
            ifname: ifname.to_string(),
            on,
        };
        self.record(netns, ifname, &format!("{} {}", UNRELAYABLE_GSO[0], on_off(on)), call)
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
        o.set_unrelayable_gso("ns1", "ix0", false).unwrap();
        o.refuse("eth1");
        let e = o.set_tx_checksum("ns1", "eth1", false).unwrap_err();
        assert!(e.to_string().contains("eth1 tx off in ns1"), "{e}");
        assert!(o.set_unrelayable_gso("ns1", "eth1", false).is_err());
        assert_eq!(
            journal.take(),
            vec![
                Recorded::Offload(OffloadCall::TxChecksum {
                    netns: "ns1".into(),
                    ifname: "eth0".into(),
                    on: false
                }),
                Recorded::Offload(OffloadCall::UnrelayableGso {
                    netns: "ns1".into(),
                    ifname: "ix0".into(),
                    on: false
                })
            ]
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
