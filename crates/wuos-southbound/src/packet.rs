//! Raw `AF_PACKET` sockets bound to one interface of one network namespace.
//!
//! Used by the user-space link-impairment relay of the lab: the relay reads every frame one
//! side of a link transmits and writes it, later or never, to the other side.
//!
//! Every socket is opened with:
//!
//! * `PACKET_VNET_HDR`: each datagram read or written starts with a [`VNET_HDR_LEN`]-byte
//!   `struct virtio_net_hdr` (see [`VnetHdr`]). GSO/TSO super-frames (bigger than the MTU) and
//!   `CHECKSUM_PARTIAL` frames coming out of a veth are carried with their offload metadata and
//!   re-injected intact on the other side. Without it TCP breaks through a relay.
//!   A datagram read by [`PacketSocket::recv`] can be passed unchanged to [`PacketSocket::send`]
//!   of another socket.
//! * `PACKET_IGNORE_OUTGOING`: frames this host sends on the interface (including the ones the
//!   relay itself writes) are not read back.
//! * big kernel buffers (`SO_RCVBUFFORCE`/`SO_SNDBUFFORCE`, falling back to the non-forcing
//!   options when not privileged).
//! * `PACKET_AUXDATA`: the kernel strips the (outer) VLAN tag of received frames and reports it
//!   aside; [`PacketSocket::recv`] puts it back in the frame.
//!
//! `PACKET_QDISC_BYPASS` is left off by default ([`PacketSocket::set_qdisc_bypass`]): on veths
//! (`noqueue`) it brought no measurable throughput, and with it frames sent skip any qdisc
//! (e.g. a `tbf` rate limit) of the interface and are invisible to `tcpdump` on it.

// This module wraps socket system calls: `unsafe` (denied crate-wide) is allowed here, and
// every block carries a SAFETY comment.
#![allow(unsafe_code)]
#![warn(clippy::undocumented_unsafe_blocks)]

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::mem;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

/// Length of the `struct virtio_net_hdr` prefix of every datagram (no `num_buffers` field).
pub const VNET_HDR_LEN: usize = 10;

/// Biggest frame (Ethernet header included, virtio header excluded) the sockets carry.
///
/// GSO frames are bounded by the interface's `gso_max_size` (65536 unless BIG TCP is
/// configured), plus the link-layer header; the margin covers VLAN tags.
pub const MAX_FRAME_LEN: usize = 65536 + 256;

/// Size of a buffer able to hold any datagram [`PacketSocket::recv`] returns.
pub const RECV_BUF_LEN: usize = VNET_HDR_LEN + MAX_FRAME_LEN + VLAN_HLEN;

/// Length of an 802.1Q/802.1ad tag.
pub const VLAN_HLEN: usize = 4;
const ETH_P_8021Q: u16 = 0x8100;

// GSO super-frames reach 64 KiB of L3 packet plus Ethernet and VLAN headers.
const _: () = assert!(RECV_BUF_LEN - VLAN_HLEN >= VNET_HDR_LEN + 65536 + 14 + 4);

/// Receive buffer requested from the kernel for each socket (bytes).
const RCVBUF_BYTES: libc::c_int = 16 << 20;
/// Send buffer requested from the kernel for each socket (bytes).
const SNDBUF_BYTES: libc::c_int = 8 << 20;

/// `VIRTIO_NET_HDR_F_NEEDS_CSUM`: the checksum at `csum_start + csum_offset` must be completed.
pub const VNET_F_NEEDS_CSUM: u8 = 1;
/// `VIRTIO_NET_HDR_F_DATA_VALID`: the checksum was already verified.
pub const VNET_F_DATA_VALID: u8 = 2;
/// `VIRTIO_NET_HDR_GSO_NONE`.
pub const VNET_GSO_NONE: u8 = 0;
/// `VIRTIO_NET_HDR_GSO_TCPV4`.
pub const VNET_GSO_TCPV4: u8 = 1;
/// `VIRTIO_NET_HDR_GSO_UDP`.
pub const VNET_GSO_UDP: u8 = 3;
/// `VIRTIO_NET_HDR_GSO_TCPV6`.
pub const VNET_GSO_TCPV6: u8 = 4;
/// `VIRTIO_NET_HDR_GSO_UDP_L4`.
pub const VNET_GSO_UDP_L4: u8 = 5;
/// `VIRTIO_NET_HDR_GSO_ECN` flag of `gso_type`.
pub const VNET_GSO_ECN: u8 = 0x80;

/// The `struct virtio_net_hdr` that prefixes every datagram of a [`PacketSocket`].
///
/// Fields are in host byte order (the legacy virtio layout `PACKET_VNET_HDR` uses).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VnetHdr {
    pub flags: u8,
    pub gso_type: u8,
    pub hdr_len: u16,
    pub gso_size: u16,
    pub csum_start: u16,
    pub csum_offset: u16,
}

impl VnetHdr {
    /// Header of a plain frame: no offload, checksums complete.
    pub const PLAIN: VnetHdr = VnetHdr {
        flags: 0,
        gso_type: VNET_GSO_NONE,
        hdr_len: 0,
        gso_size: 0,
        csum_start: 0,
        csum_offset: 0,
    };

    /// Parses the header at the start of `datagram`; `None` if it is too short.
    pub fn parse(datagram: &[u8]) -> Option<VnetHdr> {
        let b = datagram.get(..VNET_HDR_LEN)?;
        let u16_at = |i: usize| u16::from_ne_bytes([b[i], b[i + 1]]);
        Some(VnetHdr {
            flags: b[0],
            gso_type: b[1],
            hdr_len: u16_at(2),
            gso_size: u16_at(4),
            csum_start: u16_at(6),
            csum_offset: u16_at(8),
        })
    }

    /// The header's wire bytes.
    pub fn to_bytes(&self) -> [u8; VNET_HDR_LEN] {
        let mut b = [0u8; VNET_HDR_LEN];
        b[0] = self.flags;
        b[1] = self.gso_type;
        b[2..4].copy_from_slice(&self.hdr_len.to_ne_bytes());
        b[4..6].copy_from_slice(&self.gso_size.to_ne_bytes());
        b[6..8].copy_from_slice(&self.csum_start.to_ne_bytes());
        b[8..10].copy_from_slice(&self.csum_offset.to_ne_bytes());
        b
    }

    /// True if the datagram is a GSO super-frame (to be segmented by whoever receives it).
    pub fn is_gso(&self) -> bool {
        self.gso_type & !VNET_GSO_ECN != VNET_GSO_NONE
    }

    /// Builds a datagram (header followed by `frame`) ready for [`PacketSocket::send`].
    pub fn prepend_to(&self, frame: &[u8]) -> Vec<u8> {
        let mut v = Vec::with_capacity(VNET_HDR_LEN + frame.len());
        v.extend_from_slice(&self.to_bytes());
        v.extend_from_slice(frame);
        v
    }
}

/// The Ethernet frame of a datagram (what follows the virtio header).
pub fn frame_of(datagram: &[u8]) -> &[u8] {
    datagram.get(VNET_HDR_LEN..).unwrap_or(&[])
}

/// Kernel counters of a [`PacketSocket`], see [`PacketSocket::take_statistics`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PacketStats {
    /// Frames queued to the socket.
    pub received: u64,
    /// Frames dropped because the socket's receive buffer was full.
    pub dropped: u64,
}

/// Errors of [`PacketSocket`].
#[derive(Debug, thiserror::Error)]
pub enum PacketError {
    #[error("{ifname:?} is not a valid interface name")]
    InvalidName { ifname: String },
    #[error("Could not enter network namespace {netns} to open a packet socket on {ifname}: {source}")]
    EnterNetns {
        netns: String,
        ifname: String,
        #[source]
        source: io::Error,
    },
    #[error("Interface {ifname} does not exist in network namespace {netns}.")]
    NoSuchInterface { ifname: String, netns: String },
    #[error("Could not {op} for the packet socket on {ifname} in network namespace {netns}: {source}")]
    Setup {
        op: &'static str,
        ifname: String,
        netns: String,
        #[source]
        source: io::Error,
    },
    #[error("The thread opening a packet socket on {ifname} in network namespace {netns} failed: {reason}")]
    Thread {
        ifname: String,
        netns: String,
        reason: String,
    },
    #[error("Timed out waiting for a frame on {ifname}.")]
    Timeout { ifname: String },
    #[error("Interface {ifname} is down.")]
    InterfaceDown { ifname: String },
    #[error("Interface {ifname} no longer exists.")]
    InterfaceGone { ifname: String },
    #[error("A frame of {len} bytes received on {ifname} did not fit in the {cap}-byte buffer and was dropped.")]
    Truncated { ifname: String, len: usize, cap: usize },
    #[error(
        "The kernel could not convert a frame received on {ifname} to a virtio_net_hdr datagram (unsupported offload); it was dropped."
    )]
    UnsupportedOffload { ifname: String },
    #[error("The kernel had no buffer space to send a frame on {ifname}; it was dropped.")]
    NoBuffers { ifname: String },
    #[error("The kernel rejected a frame of {len} bytes sent on {ifname}: {source}")]
    Rejected {
        ifname: String,
        len: usize,
        #[source]
        source: io::Error,
    },
    #[error("Could not receive a frame on {ifname}: {source}")]
    Recv {
        ifname: String,
        #[source]
        source: io::Error,
    },
    #[error("Could not send a frame on {ifname}: {source}")]
    Send {
        ifname: String,
        #[source]
        source: io::Error,
    },
}

/// An `AF_PACKET`/`SOCK_RAW` socket (all protocols) bound to one interface of one network
/// namespace, with `PACKET_VNET_HDR` datagrams (see the module documentation).
///
/// `recv` and `send` take `&self`: one thread may receive while another sends on the same
/// socket.
#[derive(Debug)]
pub struct PacketSocket {
    fd: OwnedFd,
    ifindex: i32,
    ifname: String,
    netns: String,
}

impl PacketSocket {
    /// Opens an `AF_PACKET` `SOCK_RAW` socket (`ETH_P_ALL`) bound to `ifname` inside the
    /// network namespace `netns` (an open file of `/run/netns/NAME` or `/proc/PID/ns/net`).
    ///
    /// The socket is created on a short-lived thread that `setns()`es into the namespace:
    /// sockets stay bound to the namespace they were created in, and the calling thread's
    /// namespace is never changed. Needs `CAP_NET_RAW` and `CAP_SYS_ADMIN`.
    ///
    /// Note that the socket keeps the namespace alive: deleting `/run/netns/NAME` does not
    /// destroy its interfaces while the socket is open.
    pub fn open(netns: &File, ifname: &str) -> Result<Self, PacketError> {
        let netns_name = describe_netns(netns);
        let c_ifname = match CString::new(ifname) {
            Ok(c) if !ifname.is_empty() && ifname.len() < libc::IFNAMSIZ => c,
            _ => {
                return Err(PacketError::InvalidName {
                    ifname: ifname.to_owned(),
                });
            }
        };
        let result = std::thread::scope(|s| {
            let handle = std::thread::Builder::new()
                .name("wuos-pktsock".into())
                .spawn_scoped(s, || open_in_netns(netns, &c_ifname, ifname, &netns_name));
            match handle {
                Ok(h) => h.join().map_err(|_| "it panicked".to_owned()),
                Err(e) => Err(format!("it could not be spawned: {e}")),
            }
        });
        match result {
            Ok(r) => r,
            Err(reason) => Err(PacketError::Thread {
                ifname: ifname.to_owned(),
                netns: netns_name,
                reason,
            }),
        }
    }

    /// Receives one datagram (virtio header + frame) into `buf`, blocking until one arrives
    /// or the read timeout expires ([`PacketError::Timeout`]).
    ///
    /// `buf` should be [`RECV_BUF_LEN`] bytes long; bigger frames are dropped
    /// ([`PacketError::Truncated`]). The kernel takes the (outer) VLAN tag out of received
    /// frames; `recv` puts it back (it needs [`VLAN_HLEN`] spare bytes in `buf` for that), so
    /// that the datagram can be sent as is. When the interface goes down or is deleted, a blocked
    /// `recv` returns [`PacketError::InterfaceDown`] once; see [`PacketSocket::interface_exists`].
    pub fn recv(&self, buf: &mut [u8]) -> Result<usize, PacketError> {
        // Keep room to put back a VLAN tag the kernel took out of the frame.
        let cap = buf.len().saturating_sub(VLAN_HLEN);
        loop {
            let mut iov = libc::iovec {
                iov_base: buf.as_mut_ptr().cast(),
                iov_len: cap,
            };
            // 64 bytes, 8-byte aligned: room for the one `tpacket_auxdata` message (40 bytes).
            let mut control = [0u64; 8];
            // SAFETY: `msghdr` is a plain C struct for which all-zero bytes is a valid value.
            let mut msg: libc::msghdr = unsafe { mem::zeroed() };
            msg.msg_iov = &raw mut iov;
            msg.msg_iovlen = 1;
            msg.msg_control = control.as_mut_ptr().cast();
            msg.msg_controllen = mem::size_of_val(&control) as _;
            // SAFETY: `msg` points to one iovec describing `cap` writable bytes of `buf` and to
            // the writable `control` buffer of the length given; all outlive the call. The fd
            // is an open socket owned by `self`.
            let n = unsafe { libc::recvmsg(self.fd.as_raw_fd(), &mut msg, libc::MSG_TRUNC) };
            if n >= 0 {
                let n = n as usize;
                if n > cap {
                    return Err(PacketError::Truncated {
                        ifname: self.ifname.clone(),
                        len: n,
                        cap,
                    });
                }
                return Ok(match vlan_of(&msg) {
                    Some((tpid, tci)) => insert_vlan_tag(buf, n, tpid, tci),
                    None => n,
                });
            }
            let err = io::Error::last_os_error();
            let ifname = self.ifname.clone();
            return Err(match err.raw_os_error() {
                Some(libc::EINTR) => continue,
                Some(libc::EAGAIN) => PacketError::Timeout { ifname },
                Some(libc::ENETDOWN) => PacketError::InterfaceDown { ifname },
                Some(libc::ENXIO | libc::ENODEV) => PacketError::InterfaceGone { ifname },
                Some(libc::EINVAL) => PacketError::UnsupportedOffload { ifname },
                _ => PacketError::Recv { ifname, source: err },
            });
        }
    }

    /// Sets (or, with `None`, removes) the timeout of [`PacketSocket::recv`].
    pub fn set_read_timeout(&self, t: Option<Duration>) -> Result<(), PacketError> {
        let tv = match t {
            None => libc::timeval { tv_sec: 0, tv_usec: 0 },
            Some(d) => {
                // A zero timeval means "no timeout": round tiny timeouts up to 1 µs.
                let d = d.max(Duration::from_micros(1));
                libc::timeval {
                    tv_sec: d.as_secs().min(libc::time_t::MAX as u64) as libc::time_t,
                    tv_usec: d.subsec_micros() as libc::suseconds_t,
                }
            }
        };
        setsockopt(self.fd.as_fd(), libc::SOL_SOCKET, libc::SO_RCVTIMEO, &tv).map_err(|source| PacketError::Setup {
            op: "set the receive timeout",
            ifname: self.ifname.clone(),
            netns: self.netns.clone(),
            source,
        })
    }

    /// Sends one datagram (virtio header + frame), typically one returned by
    /// [`PacketSocket::recv`] of another socket, or built with [`VnetHdr::prepend_to`].
    ///
    /// Errors the caller will usually count and ignore (the frame is lost):
    /// [`PacketError::NoBuffers`] (`ENOBUFS`/`EAGAIN`: the device or qdisc is full),
    /// [`PacketError::InterfaceDown`] and [`PacketError::Rejected`] (`EMSGSIZE`/`EINVAL`: a
    /// malformed frame or virtio header). [`PacketError::InterfaceGone`] means the interface
    /// was deleted.
    pub fn send(&self, frame: &[u8]) -> Result<(), PacketError> {
        loop {
            // SAFETY: `frame` is a valid readable region of `frame.len()` bytes for the duration
            // of the call, and `self.fd` is an open socket owned by `self`.
            let n = unsafe { libc::send(self.fd.as_raw_fd(), frame.as_ptr().cast(), frame.len(), 0) };
            if n >= 0 {
                return Ok(());
            }
            let err = io::Error::last_os_error();
            let ifname = self.ifname.clone();
            return Err(match err.raw_os_error() {
                Some(libc::EINTR) => continue,
                Some(libc::ENOBUFS | libc::EAGAIN) => PacketError::NoBuffers { ifname },
                Some(libc::ENETDOWN) => PacketError::InterfaceDown { ifname },
                Some(libc::ENXIO | libc::ENODEV) => PacketError::InterfaceGone { ifname },
                Some(libc::EMSGSIZE | libc::EINVAL) => PacketError::Rejected {
                    ifname,
                    len: frame.len(),
                    source: err,
                },
                _ => PacketError::Send { ifname, source: err },
            });
        }
    }

    /// Whether the interface the socket is bound to still exists in its namespace (asked
    /// through the socket itself, so from any thread). Errors other than "no such device"
    /// count as "exists".
    pub fn interface_exists(&self) -> bool {
        // SAFETY: `ifreq` is a plain C struct for which all-zero bytes is a valid value.
        let mut req: libc::ifreq = unsafe { mem::zeroed() };
        req.ifr_ifru.ifru_ifindex = self.ifindex;
        // SAFETY: SIOCGIFNAME reads `ifr_ifindex` and writes `ifr_name` of the `ifreq` we pass,
        // which lives for the whole call; the fd is an open socket owned by `self`. Interface
        // ioctls on a socket act in the socket's network namespace.
        let r = unsafe { libc::ioctl(self.fd.as_raw_fd(), libc::SIOCGIFNAME, &mut req) };
        if r == 0 {
            return true;
        }
        !matches!(
            io::Error::last_os_error().raw_os_error(),
            Some(libc::ENODEV | libc::ENXIO)
        )
    }

    /// Reads and resets the kernel's counters of the socket (`PACKET_STATISTICS`): frames
    /// received and frames dropped because the receive buffer was full, since the last call.
    pub fn take_statistics(&self) -> Result<PacketStats, PacketError> {
        let mut st = libc::tpacket_stats {
            tp_packets: 0,
            tp_drops: 0,
        };
        let mut len = mem::size_of::<libc::tpacket_stats>() as libc::socklen_t;
        // SAFETY: `st` is a live `tpacket_stats` of the `len` bytes passed, which the kernel
        // fills; `len` is a live `socklen_t`; the fd is an open socket owned by `self`.
        let r = unsafe {
            libc::getsockopt(
                self.fd.as_raw_fd(),
                libc::SOL_PACKET,
                libc::PACKET_STATISTICS,
                (&raw mut st).cast(),
                &mut len,
            )
        };
        if r < 0 {
            return Err(PacketError::Setup {
                op: "read PACKET_STATISTICS",
                ifname: self.ifname.clone(),
                netns: self.netns.clone(),
                source: io::Error::last_os_error(),
            });
        }
        // tp_packets counts dropped frames too.
        Ok(PacketStats {
            received: u64::from(st.tp_packets.saturating_sub(st.tp_drops)),
            dropped: u64::from(st.tp_drops),
        })
    }

    /// Enables or disables `PACKET_QDISC_BYPASS` (off after [`PacketSocket::open`]): sent frames
    /// go straight to the driver, skipping the qdisc, `tc` egress filters and `tcpdump`.
    pub fn set_qdisc_bypass(&self, on: bool) -> Result<(), PacketError> {
        setsockopt(
            self.fd.as_fd(),
            libc::SOL_PACKET,
            libc::PACKET_QDISC_BYPASS,
            &libc::c_int::from(on),
        )
        .map_err(|source| PacketError::Setup {
            op: "set PACKET_QDISC_BYPASS",
            ifname: self.ifname.clone(),
            netns: self.netns.clone(),
            source,
        })
    }

    /// Name of the interface the socket is bound to.
    pub fn ifname(&self) -> &str {
        &self.ifname
    }

    /// Index of the interface (in its namespace) the socket is bound to.
    pub fn ifindex(&self) -> i32 {
        self.ifindex
    }

    /// Description of the namespace of the socket (the path of the namespace file, when known).
    pub fn netns(&self) -> &str {
        &self.netns
    }
}

impl AsFd for PacketSocket {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// A readable name for a namespace file: its path, from `/proc/self/fd`.
fn describe_netns(netns: &File) -> String {
    std::fs::read_link(format!("/proc/self/fd/{}", netns.as_raw_fd()))
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| format!("fd {}", netns.as_raw_fd()))
}

/// The VLAN tag (TPID, TCI) the kernel took out of a received frame, from its
/// `PACKET_AUXDATA` control message.
fn vlan_of(msg: &libc::msghdr) -> Option<(u16, u16)> {
    // SAFETY: `msg` was filled by a successful recvmsg(2): its control buffer and length are
    // valid, so the CMSG_* macros stay within it.
    let mut cmsg = unsafe { libc::CMSG_FIRSTHDR(msg) };
    while !cmsg.is_null() {
        // SAFETY: `cmsg` is non-null and points to a control message header inside the buffer.
        let hdr = unsafe { &*cmsg };
        if hdr.cmsg_level == libc::SOL_PACKET
            && hdr.cmsg_type == libc::PACKET_AUXDATA
            && hdr.cmsg_len as usize >= mem::size_of::<libc::cmsghdr>() + mem::size_of::<libc::tpacket_auxdata>()
        {
            // SAFETY: the message is long enough to hold a `tpacket_auxdata` after its header
            // (checked above); the data may be unaligned, hence `read_unaligned`.
            let aux: libc::tpacket_auxdata =
                unsafe { std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast::<libc::tpacket_auxdata>()) };
            if aux.tp_status & libc::TP_STATUS_VLAN_VALID == 0 {
                return None;
            }
            let tpid = if aux.tp_status & libc::TP_STATUS_VLAN_TPID_VALID != 0 {
                aux.tp_vlan_tpid
            } else {
                ETH_P_8021Q
            };
            return Some((tpid, aux.tp_vlan_tci));
        }
        // SAFETY: `msg` and `cmsg` are valid as above; CMSG_NXTHDR returns null at the end.
        cmsg = unsafe { libc::CMSG_NXTHDR(msg, cmsg) };
    }
    None
}

/// Puts a VLAN tag back after the MAC addresses of the datagram `buf[..len]` (virtio header
/// and frame) and shifts the virtio header's offsets accordingly; returns the new length.
/// `buf` must have [`VLAN_HLEN`] spare bytes after `len`. Frames too short to have MAC
/// addresses are left alone.
fn insert_vlan_tag(buf: &mut [u8], len: usize, tpid: u16, tci: u16) -> usize {
    let at = VNET_HDR_LEN + 12;
    if len < at || buf.len() < len + VLAN_HLEN {
        return len;
    }
    buf.copy_within(at..len, at + VLAN_HLEN);
    buf[at..at + 2].copy_from_slice(&tpid.to_be_bytes());
    buf[at + 2..at + 4].copy_from_slice(&tci.to_be_bytes());
    if let Some(mut h) = VnetHdr::parse(buf) {
        if h.flags & VNET_F_NEEDS_CSUM != 0 {
            h.csum_start = h.csum_start.saturating_add(VLAN_HLEN as u16);
        }
        if h.hdr_len != 0 {
            h.hdr_len = h.hdr_len.saturating_add(VLAN_HLEN as u16);
        }
        buf[..VNET_HDR_LEN].copy_from_slice(&h.to_bytes());
    }
    len + VLAN_HLEN
}

/// Body of the short-lived thread of [`PacketSocket::open`].
fn open_in_netns(
    netns: &File,
    c_ifname: &CString,
    ifname: &str,
    netns_name: &str,
) -> Result<PacketSocket, PacketError> {
    nix::sched::setns(netns, nix::sched::CloneFlags::CLONE_NEWNET).map_err(|e| PacketError::EnterNetns {
        netns: netns_name.to_owned(),
        ifname: ifname.to_owned(),
        source: io::Error::from(e),
    })?;
    let setup = |op: &'static str| {
        move |source: io::Error| PacketError::Setup {
            op,
            ifname: ifname.to_owned(),
            netns: netns_name.to_owned(),
            source,
        }
    };

    // SAFETY: `c_ifname` is a valid NUL-terminated string that outlives the call.
    let ifindex = unsafe { libc::if_nametoindex(c_ifname.as_ptr()) };
    if ifindex == 0 {
        let err = io::Error::last_os_error();
        return Err(match err.raw_os_error() {
            Some(libc::ENODEV | libc::ENXIO) => PacketError::NoSuchInterface {
                ifname: ifname.to_owned(),
                netns: netns_name.to_owned(),
            },
            _ => setup("look up the interface index")(err),
        });
    }
    let ifindex = ifindex as i32;

    // Protocol 0: the socket receives nothing until it is bound to the interface below (so
    // no frame of another interface sneaks in between socket() and bind()).
    // SAFETY: plain socket(2) call with constant arguments.
    let raw: RawFd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
    if raw < 0 {
        return Err(setup("create the socket")(io::Error::last_os_error()));
    }
    // SAFETY: `raw` is a freshly created, valid descriptor that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };

    let one: libc::c_int = 1;
    setsockopt(fd.as_fd(), libc::SOL_PACKET, libc::PACKET_VNET_HDR, &one).map_err(setup("enable PACKET_VNET_HDR"))?;
    setsockopt(fd.as_fd(), libc::SOL_PACKET, libc::PACKET_AUXDATA, &one).map_err(setup("enable PACKET_AUXDATA"))?;
    setsockopt(fd.as_fd(), libc::SOL_PACKET, libc::PACKET_IGNORE_OUTGOING, &one)
        .map_err(setup("enable PACKET_IGNORE_OUTGOING"))?;

    set_buffer(fd.as_fd(), libc::SO_RCVBUFFORCE, libc::SO_RCVBUF, RCVBUF_BYTES)
        .map_err(setup("set the receive buffer size"))?;
    set_buffer(fd.as_fd(), libc::SO_SNDBUFFORCE, libc::SO_SNDBUF, SNDBUF_BYTES)
        .map_err(setup("set the send buffer size"))?;

    // SAFETY: `sockaddr_ll` is a plain C struct for which all-zero bytes is a valid value.
    let mut sll: libc::sockaddr_ll = unsafe { mem::zeroed() };
    sll.sll_family = libc::AF_PACKET as u16;
    sll.sll_protocol = (libc::ETH_P_ALL as u16).to_be();
    sll.sll_ifindex = ifindex;
    // SAFETY: `sll` is a fully initialized `sockaddr_ll` and the length passed is its size.
    let r = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&raw const sll).cast::<libc::sockaddr>(),
            mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        )
    };
    if r < 0 {
        let err = io::Error::last_os_error();
        return Err(match err.raw_os_error() {
            Some(libc::ENODEV | libc::ENXIO) => PacketError::NoSuchInterface {
                ifname: ifname.to_owned(),
                netns: netns_name.to_owned(),
            },
            _ => setup("bind the socket to the interface")(err),
        });
    }
    Ok(PacketSocket {
        fd,
        ifindex,
        ifname: ifname.to_owned(),
        netns: netns_name.to_owned(),
    })
}

/// Sets a socket buffer size, with the privileged `*BUFFORCE` option when allowed.
fn set_buffer(fd: BorrowedFd<'_>, force_opt: libc::c_int, opt: libc::c_int, bytes: libc::c_int) -> io::Result<()> {
    match setsockopt(fd, libc::SOL_SOCKET, force_opt, &bytes) {
        Ok(()) => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => setsockopt(fd, libc::SOL_SOCKET, opt, &bytes),
        Err(e) => Err(e),
    }
}

/// `setsockopt(2)` with a value of plain C type `T`.
fn setsockopt<T: Copy>(fd: BorrowedFd<'_>, level: libc::c_int, name: libc::c_int, value: &T) -> io::Result<()> {
    // SAFETY: `value` points to a live, initialized `T` (a plain C type: int or timeval) of
    // exactly the length passed; `fd` is a valid descriptor for the duration of the call.
    let r = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (value as *const T).cast(),
            mem::size_of::<T>() as libc::socklen_t,
        )
    };
    if r < 0 { Err(io::Error::last_os_error()) } else { Ok(()) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;
    use std::time::Instant;

    #[test]
    fn vnet_hdr_round_trip() {
        let h = VnetHdr {
            flags: VNET_F_NEEDS_CSUM,
            gso_type: VNET_GSO_TCPV4 | VNET_GSO_ECN,
            hdr_len: 66,
            gso_size: 1448,
            csum_start: 34,
            csum_offset: 16,
        };
        let bytes = h.to_bytes();
        assert_eq!(VnetHdr::parse(&bytes), Some(h));
        assert!(h.is_gso());
        assert!(!VnetHdr::PLAIN.is_gso());
        assert!(
            !VnetHdr {
                gso_type: VNET_GSO_ECN,
                ..VnetHdr::PLAIN
            }
            .is_gso()
        );
        assert_eq!(VnetHdr::parse(&bytes[..9]), None);
        assert_eq!(bytes[2..4], 66u16.to_ne_bytes());
    }

    #[test]
    fn prepend_and_frame_of() {
        let d = VnetHdr::PLAIN.prepend_to(&[1, 2, 3]);
        assert_eq!(d.len(), VNET_HDR_LEN + 3);
        assert_eq!(frame_of(&d), &[1, 2, 3]);
        assert_eq!(VnetHdr::parse(&d), Some(VnetHdr::PLAIN));
        assert_eq!(frame_of(&[0; 4]), &[] as &[u8]);
    }

    #[test]
    fn vlan_tag_is_reinserted_and_offsets_shifted() {
        let h = VnetHdr {
            flags: VNET_F_NEEDS_CSUM,
            gso_type: VNET_GSO_TCPV4,
            hdr_len: 66,
            gso_size: 1448,
            csum_start: 34,
            csum_offset: 16,
        };
        let frame: Vec<u8> = (0..40u8).collect();
        let mut buf = h.prepend_to(&frame);
        let len = buf.len();
        buf.resize(len + VLAN_HLEN, 0xee);
        let n = insert_vlan_tag(&mut buf, len, 0x8100, 0x2064);
        assert_eq!(n, len + 4);
        let f = frame_of(&buf[..n]);
        assert_eq!(&f[..12], &frame[..12]);
        assert_eq!(&f[12..16], &[0x81, 0x00, 0x20, 0x64]);
        assert_eq!(&f[16..], &frame[12..]);
        let h2 = VnetHdr::parse(&buf).unwrap();
        assert_eq!((h2.csum_start, h2.hdr_len), (38, 70));
        assert_eq!((h2.gso_size, h2.csum_offset, h2.gso_type), (1448, 16, VNET_GSO_TCPV4));

        // No checksum offload: offsets untouched.
        let mut buf = VnetHdr::PLAIN.prepend_to(&frame);
        buf.resize(buf.len() + VLAN_HLEN, 0);
        let n = insert_vlan_tag(&mut buf, VNET_HDR_LEN + frame.len(), 0x88a8, 7);
        assert_eq!(VnetHdr::parse(&buf[..n]), Some(VnetHdr::PLAIN));
        assert_eq!(&frame_of(&buf[..n])[12..16], &[0x88, 0xa8, 0, 7]);

        // Too short, or no room: unchanged.
        let mut short = vec![0u8; VNET_HDR_LEN + 8 + VLAN_HLEN];
        assert_eq!(
            insert_vlan_tag(&mut short, VNET_HDR_LEN + 8, 0x8100, 1),
            VNET_HDR_LEN + 8
        );
        let mut full = VnetHdr::PLAIN.prepend_to(&frame);
        let l = full.len();
        assert_eq!(insert_vlan_tag(&mut full, l, 0x8100, 1), l);
    }

    #[test]
    fn invalid_names_are_rejected_before_any_syscall() {
        let ns = File::open("/proc/self/ns/net").unwrap();
        for bad in ["", "a-name-longer-than-15", "nul\0inside"] {
            let e = PacketSocket::open(&ns, bad).unwrap_err();
            assert!(matches!(e, PacketError::InvalidName { .. }), "{bad:?}: {e}");
        }
    }

    #[test]
    fn error_messages_name_interface_and_namespace() {
        let e = PacketError::NoSuchInterface {
            ifname: "ra".into(),
            netns: "/run/netns/r1".into(),
        };
        assert_eq!(
            e.to_string(),
            "Interface ra does not exist in network namespace /run/netns/r1."
        );
        let e = PacketError::Setup {
            op: "enable PACKET_VNET_HDR",
            ifname: "rb".into(),
            netns: "/run/netns/r1".into(),
            source: io::Error::from_raw_os_error(libc::EPERM),
        };
        let s = e.to_string();
        assert!(
            s.starts_with(
                "Could not enable PACKET_VNET_HDR for the packet socket on rb in network namespace /run/netns/r1: "
            ),
            "{s}"
        );
    }

    #[test]
    fn describes_namespace_by_path() {
        let f = File::open("/proc/self/ns/net").unwrap();
        // nsfs files opened through /proc read back as "net:[inode]".
        assert!(describe_netns(&f).starts_with("net:["), "{}", describe_netns(&f));
    }

    // ---- privileged tests: a private namespace with a veth pair ----

    use crate::privilege::may_run_privileged as privileged;

    fn ip(args: &[&str]) {
        let out = Command::new("ip").args(args).output().expect("run ip");
        assert!(
            out.status.success(),
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// A namespace holding veth pair v0 <-> v1, deleted on drop.
    struct TestNs {
        name: String,
    }

    impl TestNs {
        fn new(tag: &str) -> TestNs {
            let name = format!("wuos-pkttest-{}-{tag}", std::process::id());
            let _ = Command::new("ip").args(["netns", "del", &name]).output();
            ip(&["netns", "add", &name]);
            let ns = TestNs { name };
            let n = ns.name.as_str();
            ip(&["-n", n, "link", "add", "v0", "type", "veth", "peer", "name", "v1"]);
            for dev in ["v0", "v1"] {
                // No IPv6 chatter (router solicitations, DAD) in the frames we read.
                let _ = Command::new("ip")
                    .args(["netns", "exec", n, "sysctl", "-qw"])
                    .arg(format!("net.ipv6.conf.{dev}.disable_ipv6=1"))
                    .output();
                ip(&["-n", n, "link", "set", dev, "up"]);
            }
            ns
        }

        fn file(&self) -> File {
            File::open(format!("/run/netns/{}", self.name)).unwrap()
        }
    }

    impl Drop for TestNs {
        fn drop(&mut self) {
            let _ = Command::new("ip").args(["netns", "del", &self.name]).output();
        }
    }

    /// A frame of an experimental ethertype between two locally administered MACs.
    fn test_frame(payload_len: usize, tag: u8) -> Vec<u8> {
        let mut f = vec![0x02, 0, 0, 0, 0, 0x01, 0x02, 0, 0, 0, 0, 0x02, 0x88, 0xb5];
        f.extend((0..payload_len).map(|i| (i as u8) ^ tag));
        f
    }

    /// Receives frames until one with our ethertype arrives (ignoring any stray traffic).
    fn recv_test_frame(s: &PacketSocket, buf: &mut [u8]) -> Result<usize, PacketError> {
        loop {
            let n = s.recv(buf)?;
            if frame_of(&buf[..n]).get(12..14) == Some(&[0x88, 0xb5]) {
                return Ok(n);
            }
        }
    }

    #[test]
    fn open_missing_interface_fails_with_its_name() {
        if !privileged("open_missing_interface_fails_with_its_name") {
            return;
        }
        let ns = TestNs::new("missing");
        let e = PacketSocket::open(&ns.file(), "nosuchif0").unwrap_err();
        match &e {
            PacketError::NoSuchInterface { ifname, netns } => {
                assert_eq!(ifname, "nosuchif0");
                assert!(netns.ends_with(&ns.name), "{netns}");
            }
            other => panic!("unexpected error: {other}"),
        }
    }

    #[test]
    fn frames_cross_a_veth_and_are_not_read_back() {
        if !privileged("frames_cross_a_veth_and_are_not_read_back") {
            return;
        }
        let ns = TestNs::new("xfer");
        let f = ns.file();
        let s0 = PacketSocket::open(&f, "v0").unwrap();
        let s1 = PacketSocket::open(&f, "v1").unwrap();
        assert_eq!(s0.ifname(), "v0");
        assert!(s0.interface_exists());
        s0.set_qdisc_bypass(true).unwrap();
        s0.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
        s1.set_read_timeout(Some(Duration::from_secs(2))).unwrap();

        let mut buf = vec![0u8; RECV_BUF_LEN];
        for (len, tag) in [(46, 1u8), (1486, 2), (100, 3)] {
            let frame = test_frame(len, tag);
            s0.send(&VnetHdr::PLAIN.prepend_to(&frame)).unwrap();
            let n = recv_test_frame(&s1, &mut buf).unwrap();
            assert_eq!(frame_of(&buf[..n]), &frame[..]);
            assert_eq!(VnetHdr::parse(&buf[..n]).unwrap().gso_type, VNET_GSO_NONE);
        }
        let st = s1.take_statistics().unwrap();
        assert!(st.received >= 3 && st.dropped == 0, "{st:?}");
        // PACKET_IGNORE_OUTGOING: s0 does not see what it sent.
        let t0 = Instant::now();
        match recv_test_frame(&s0, &mut buf) {
            Err(PacketError::Timeout { ifname }) => assert_eq!(ifname, "v0"),
            other => panic!("expected a timeout, got {other:?}"),
        }
        assert!(t0.elapsed() >= Duration::from_millis(150));

        // VLAN tags survive: the kernel moves them out of the frame, recv puts them back.
        for tpid in [0x8100u16, 0x88a8] {
            let mut frame = test_frame(60, 5);
            let tag = [(tpid >> 8) as u8, tpid as u8, 0x20, 0x64]; // priority 1, VID 100
            frame.splice(12..12, tag);
            s0.send(&VnetHdr::PLAIN.prepend_to(&frame)).unwrap();
            let n = loop {
                let n = s1.recv(&mut buf).unwrap();
                if frame_of(&buf[..n]).get(16..18) == Some(&[0x88, 0xb5]) {
                    break n;
                }
            };
            assert_eq!(frame_of(&buf[..n]), &frame[..], "TPID {tpid:#x}");
        }

        // A non-GSO frame bigger than the MTU is refused by the kernel.
        let big = VnetHdr::PLAIN.prepend_to(&test_frame(3000, 4));
        assert!(matches!(s0.send(&big), Err(PacketError::Rejected { .. })));
    }

    #[test]
    fn deleted_interface_is_reported() {
        if !privileged("deleted_interface_is_reported") {
            return;
        }
        let ns = TestNs::new("gone");
        let s1 = PacketSocket::open(&ns.file(), "v1").unwrap();
        s1.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        ip(&["-n", &ns.name, "link", "del", "v0"]); // takes v1 with it
        let mut buf = vec![0u8; RECV_BUF_LEN];
        let t0 = Instant::now();
        let e = s1.recv(&mut buf).unwrap_err();
        assert!(matches!(e, PacketError::InterfaceDown { .. }), "{e}");
        assert!(t0.elapsed() < Duration::from_secs(1));
        assert!(!s1.interface_exists());
        let e = s1.send(&VnetHdr::PLAIN.prepend_to(&test_frame(46, 0))).unwrap_err();
        assert!(matches!(e, PacketError::InterfaceGone { .. }), "{e}");
    }
}
