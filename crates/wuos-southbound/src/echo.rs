//! ICMP echo to the neighbors: a link's liveness checked by the far end's kernel, in the manner
//! of BFD's echo function (RFC 5880, section 6.4) — the peer's forwarding plane answers, its
//! control plane (the daemon) is never woken.
//!
//! A daemon's keepalive frame wakes the neighbor that reads it; at 1,000 daemons on two cores
//! those wake-ups were most of the protocol's cost (docs/benchmarks.md). An echo request is
//! answered by the neighbor's kernel, and the reply waits in our socket's buffer: the socket is
//! never polled, only drained when the daemon is awake anyway (at its sample), so a probe costs
//! neither side a wake-up.
//!
//! The socket is a raw ICMP socket (`CAP_NET_RAW`) with the kernel's `ICMP_FILTER` letting only
//! echo replies in; a reply is ours when it carries our identifier.
#![allow(unsafe_code)]
#![warn(clippy::undocumented_unsafe_blocks)]

use std::io;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::{AsRawFd, OwnedFd};

use nix::sys::socket::{
    AddressFamily, MsgFlags, SockFlag, SockProtocol, SockType, SockaddrIn, recvfrom, sendto, socket,
};

const ECHO_REPLY: u8 = 0;
const ECHO_REQUEST: u8 = 8;
/// `ICMP_FILTER` on a raw ICMP socket (linux/icmp.h): a bit set drops that type.
const ICMP_FILTER: libc::c_int = 1;
/// The payload: what identifies a probe's sender beyond the identifier.
const MAGIC: [u8; 8] = *b"wuosecho";

/// A raw ICMP socket that sends echo requests and collects their replies (see the module
/// documentation).
pub struct Echo {
    fd: OwnedFd,
    id: u16,
    seq: u16,
}

impl Echo {
    /// A socket in the calling thread's network namespace; `id` tells our replies from the
    /// others' (e.g. a `ping` run in the same namespace). Needs `CAP_NET_RAW`.
    pub fn new(id: u16) -> io::Result<Self> {
        let fd = socket(
            AddressFamily::Inet,
            SockType::Raw,
            SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
            SockProtocol::Icmp,
        )?;
        let filter: u32 = !(1u32 << ECHO_REPLY);
        // SAFETY: `fd` is an open socket; the option value is a u32 that lives across the call,
        // and its size is passed with it.
        let r = unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_RAW,
                ICMP_FILTER,
                (&filter as *const u32).cast(),
                std::mem::size_of::<u32>() as libc::socklen_t,
            )
        };
        if r != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Echo { fd, id, seq: 0 })
    }

    /// Sends one echo request to `to`.
    pub fn send(&mut self, to: Ipv4Addr) -> io::Result<()> {
        self.seq = self.seq.wrapping_add(1);
        let packet = request(self.id, self.seq);
        let addr = SockaddrIn::from(SocketAddrV4::new(to, 0));
        sendto(self.fd.as_raw_fd(), &packet, &addr, MsgFlags::empty())?;
        Ok(())
    }

    /// The addresses whose replies to our requests arrived since the last drain (one entry per
    /// reply); never blocks.
    pub fn drain(&mut self) -> io::Result<Vec<Ipv4Addr>> {
        let mut from = Vec::new();
        let mut buf = [0u8; 256];
        loop {
            match recvfrom::<SockaddrIn>(self.fd.as_raw_fd(), &mut buf) {
                Ok((n, Some(addr))) => {
                    if is_reply(&buf[..n], self.id) {
                        from.push(addr.ip());
                    }
                }
                Ok((_, None)) => {}
                Err(nix::errno::Errno::EAGAIN) => return Ok(from),
                Err(nix::errno::Errno::EINTR) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
}

/// An echo request: type, code, checksum, identifier, sequence, then [`MAGIC`].
pub fn request(id: u16, seq: u16) -> [u8; 16] {
    let mut p = [0u8; 16];
    p[0] = ECHO_REQUEST;
    p[4..6].copy_from_slice(&id.to_be_bytes());
    p[6..8].copy_from_slice(&seq.to_be_bytes());
    p[8..].copy_from_slice(&MAGIC);
    let sum = checksum(&p);
    p[2..4].copy_from_slice(&sum.to_be_bytes());
    p
}

/// Whether `packet` (an IPv4 packet, as a raw socket reads it) is an echo reply to one of our
/// requests: ICMP, type 0, our identifier and payload.
pub fn is_reply(packet: &[u8], id: u16) -> bool {
    let Some(&first) = packet.first() else {
        return false;
    };
    let header = usize::from(first & 0x0f) * 4;
    if first >> 4 != 4 || header < 20 || packet.len() < header + 16 || packet[9] != 1 {
        return false;
    }
    let icmp = &packet[header..];
    icmp[0] == ECHO_REPLY && icmp[4..6] == id.to_be_bytes() && icmp[8..16] == MAGIC
}

/// The Internet checksum (RFC 1071) of `data`.
fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = data
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], c.get(1).copied().unwrap_or(0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An IPv4 header (no options) around `icmp`.
    fn ip(icmp: &[u8]) -> Vec<u8> {
        let mut p = vec![0x45, 0, 0, 0, 0, 0, 0, 0, 64, 1, 0, 0, 10, 0, 0, 1, 10, 0, 0, 0];
        p.extend_from_slice(icmp);
        p
    }

    #[test]
    fn a_request_checksums_to_zero_and_its_reply_is_recognized() {
        let r = request(0x1234, 7);
        assert_eq!(checksum(&r), 0, "a packet with its checksum sums to zero");
        assert_eq!(&r[4..8], &[0x12, 0x34, 0, 7]);
        let mut reply = r;
        reply[0] = ECHO_REPLY;
        assert!(is_reply(&ip(&reply), 0x1234));
        assert!(!is_reply(&ip(&reply), 0x1235), "another identifier");
        assert!(!is_reply(&ip(&r), 0x1234), "a request is not a reply");
        let mut other = reply;
        other[8] = b'x';
        assert!(!is_reply(&ip(&other), 0x1234), "another payload");
        assert!(!is_reply(&ip(&reply)[..30], 0x1234), "truncated");
        assert!(!is_reply(&[], 0x1234));
        let mut udp = ip(&reply);
        udp[9] = 17;
        assert!(!is_reply(&udp, 0x1234), "not ICMP");
    }

    #[test]
    fn the_checksum_is_rfc_1071s() {
        // RFC 1071's example, section 3: the ones' complement sum of these bytes is 0xddf2.
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(checksum(&data), !0xddf2);
        assert_eq!(checksum(&[0xff]), !0xff00, "an odd byte is padded with zero");
    }

    #[test]
    fn loopback_answers_an_echo() {
        if !crate::privilege::may_run_privileged("echo") {
            return;
        }
        let mut e = Echo::new(std::process::id() as u16).unwrap();
        e.send(Ipv4Addr::LOCALHOST).unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
        let mut from = Vec::new();
        while from.is_empty() && std::time::Instant::now() < deadline {
            from = e.drain().unwrap();
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert_eq!(from, [Ipv4Addr::LOCALHOST]);
        assert!(e.drain().unwrap().is_empty(), "drained");
    }
}
