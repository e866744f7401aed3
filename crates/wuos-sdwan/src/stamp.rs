//! STAMP test packets (RFC 8762, unauthenticated mode): the Session-Sender's packet and the
//! stateless Session-Reflector's answer, byte for byte, with NTP timestamps. Pure: the caller
//! reads the clock and owns the socket.
//!
//! ```text
//! Session-Sender (44 bytes)            Session-Reflector (44 bytes)
//!  0 Sequence Number (4)                0 Sequence Number (4)        copied (stateless)
//!  4 Timestamp (8, NTP)                 4 Timestamp (8)              when the answer left
//! 12 Error Estimate (2)                12 Error Estimate (2)
//! 14 MBZ (30)                          14 MBZ (2)
//!                                      16 Receive Timestamp (8)      when the test packet came
//!                                      24 Session-Sender Sequence Number (4)
//!                                      28 Session-Sender Timestamp (8)
//!                                      36 Session-Sender Error Estimate (2)
//!                                      38 MBZ (2)
//!                                      40 Ses-Sender TTL (1)
//!                                      41 MBZ (3)
//! ```

use std::time::Duration;

/// The STAMP well-known port (RFC 8762 §4.1).
pub const PORT: u16 = 862;
/// Both packets' length in unauthenticated mode.
pub const LEN: usize = 44;
/// Seconds from the NTP era (1900-01-01) to the Unix epoch.
const NTP_UNIX_OFFSET: u64 = 2_208_988_800;

/// A 64-bit NTP timestamp: seconds since 1900 and a binary fraction of a second.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct NtpTime(pub u64);

impl NtpTime {
    /// From the time since the Unix epoch (`SystemTime::now().duration_since(UNIX_EPOCH)`).
    pub fn from_unix(d: Duration) -> NtpTime {
        let secs = d.as_secs() + NTP_UNIX_OFFSET;
        let frac = (u64::from(d.subsec_nanos()) << 32) / 1_000_000_000;
        NtpTime((secs << 32) | frac)
    }

    /// The time since the Unix epoch (zero before it).
    pub fn to_unix(self) -> Duration {
        let secs = (self.0 >> 32).saturating_sub(NTP_UNIX_OFFSET);
        let nanos = ((self.0 & 0xffff_ffff) * 1_000_000_000) >> 32;
        Duration::new(secs, nanos as u32)
    }

    /// `self - earlier`, zero when `earlier` is later.
    pub fn since(self, earlier: NtpTime) -> Duration {
        let d = self.0.saturating_sub(earlier.0);
        Duration::new(d >> 32, (((d & 0xffff_ffff) * 1_000_000_000) >> 32) as u32)
    }
}

/// The Error Estimate field (RFC 4656 §4.1.2): S (synchronised to UTC), Z (0: NTP format),
/// Scale and Multiplier; the error is Multiplier × 2^-32 × 2^Scale seconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ErrorEstimate(pub u16);

impl ErrorEstimate {
    /// Unsynchronised, NTP format, an error of `multiplier` × 2^(scale − 32) s.
    pub fn new(synchronised: bool, scale: u8, multiplier: u8) -> ErrorEstimate {
        ErrorEstimate((u16::from(synchronised) << 15) | (u16::from(scale & 0x3f) << 8) | u16::from(multiplier))
    }

    /// What wuos sends: not synchronised to UTC, NTP format, 1 µs (≈ 2^-20 s: scale 12, ×1).
    pub const WUOS: ErrorEstimate = ErrorEstimate((12 << 8) | 1);

    pub fn synchronised(self) -> bool {
        self.0 & 0x8000 != 0
    }

    /// Z: the timestamps are PTP (1) or NTP (0).
    pub fn ptp(self) -> bool {
        self.0 & 0x4000 != 0
    }
}

/// Why a datagram is not a STAMP packet wuos can use.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum StampError {
    #[error("a STAMP packet has {LEN} bytes in unauthenticated mode; this one has {0}")]
    Length(usize),
    #[error("the timestamps are in PTP format (Z bit set); wuos reads NTP timestamps only")]
    Ptp,
}

/// A Session-Sender test packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Test {
    pub seq: u32,
    pub timestamp: NtpTime,
    pub error: ErrorEstimate,
}

impl Test {
    pub fn encode(&self) -> [u8; LEN] {
        let mut b = [0u8; LEN];
        b[0..4].copy_from_slice(&self.seq.to_be_bytes());
        b[4..12].copy_from_slice(&self.timestamp.0.to_be_bytes());
        b[12..14].copy_from_slice(&self.error.0.to_be_bytes());
        b
    }

    /// Reads a test packet; longer datagrams (a sender's padding) are accepted, shorter are not.
    /// The MBZ bytes are not checked (RFC 8762 §4.2.1: the reflector ignores them).
    pub fn decode(b: &[u8]) -> Result<Test, StampError> {
        if b.len() < LEN {
            return Err(StampError::Length(b.len()));
        }
        Ok(Test {
            seq: be32(&b[0..4]),
            timestamp: NtpTime(be64(&b[4..12])),
            error: ErrorEstimate(be16(&b[12..14])),
        })
    }
}

/// A Session-Reflector answer (stateless: its sequence number is the sender's).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reflected {
    pub seq: u32,
    /// When the answer was sent.
    pub timestamp: NtpTime,
    pub error: ErrorEstimate,
    /// When the test packet was received.
    pub received: NtpTime,
    pub sender_seq: u32,
    pub sender_timestamp: NtpTime,
    pub sender_error: ErrorEstimate,
    /// The test packet's IP TTL as received.
    pub sender_ttl: u8,
}

impl Reflected {
    /// The stateless reflector's answer to `test`, received at `received` with `ttl`, leaving at
    /// `now`.
    pub fn answer(test: &Test, received: NtpTime, ttl: u8, now: NtpTime) -> Reflected {
        Reflected {
            seq: test.seq,
            timestamp: now,
            error: ErrorEstimate::WUOS,
            received,
            sender_seq: test.seq,
            sender_timestamp: test.timestamp,
            sender_error: test.error,
            sender_ttl: ttl,
        }
    }

    pub fn encode(&self) -> [u8; LEN] {
        let mut b = [0u8; LEN];
        b[0..4].copy_from_slice(&self.seq.to_be_bytes());
        b[4..12].copy_from_slice(&self.timestamp.0.to_be_bytes());
        b[12..14].copy_from_slice(&self.error.0.to_be_bytes());
        b[16..24].copy_from_slice(&self.received.0.to_be_bytes());
        b[24..28].copy_from_slice(&self.sender_seq.to_be_bytes());
        b[28..36].copy_from_slice(&self.sender_timestamp.0.to_be_bytes());
        b[36..38].copy_from_slice(&self.sender_error.0.to_be_bytes());
        b[40] = self.sender_ttl;
        b
    }

    pub fn decode(b: &[u8]) -> Result<Reflected, StampError> {
        if b.len() < LEN {
            return Err(StampError::Length(b.len()));
        }
        let r = Reflected {
            seq: be32(&b[0..4]),
            timestamp: NtpTime(be64(&b[4..12])),
            error: ErrorEstimate(be16(&b[12..14])),
            received: NtpTime(be64(&b[16..24])),
            sender_seq: be32(&b[24..28]),
            sender_timestamp: NtpTime(be64(&b[28..36])),
            sender_error: ErrorEstimate(be16(&b[36..38])),
            sender_ttl: b[40],
        };
        if r.error.ptp() {
            return Err(StampError::Ptp);
        }
        Ok(r)
    }

    /// The round trip without the reflector's turnaround: (T4 − T1) − (T3 − T2), where T1 is the
    /// sender's timestamp, T2 `received`, T3 `timestamp` and T4 `arrived` (the sender's clock).
    /// Only differences of one clock are taken, so the two clocks need not agree.
    pub fn round_trip(&self, arrived: NtpTime) -> Duration {
        arrived
            .since(self.sender_timestamp)
            .saturating_sub(self.timestamp.since(self.received))
    }
}

fn be16(b: &[u8]) -> u16 {
    u16::from_be_bytes([b[0], b[1]])
}

fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

fn be64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_be_bytes(a)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ntp_time_is_1900_based_with_a_binary_fraction() {
        // 2026-12-06T00:00:00.5Z
        let unix = Duration::new(1_796_515_200, 500_000_000);
        let t = NtpTime::from_unix(unix);
        assert_eq!(t.0 >> 32, 1_796_515_200 + 2_208_988_800);
        assert_eq!(t.0 & 0xffff_ffff, 0x8000_0000);
        assert_eq!(t.to_unix(), unix);
        let later = NtpTime::from_unix(unix + Duration::from_micros(1_250));
        let d = later.since(t);
        assert!(
            d.abs_diff(Duration::from_micros(1_250)) < Duration::from_nanos(2),
            "{d:?}"
        );
        assert_eq!(t.since(later), Duration::ZERO);
    }

    #[test]
    fn test_packet_fields_sit_at_the_rfc_offsets() {
        let t = Test {
            seq: 0x0102_0304,
            timestamp: NtpTime(0x1112_1314_1516_1718),
            error: ErrorEstimate::new(true, 12, 1),
        };
        let b = t.encode();
        assert_eq!(&b[0..4], &[1, 2, 3, 4]);
        assert_eq!(&b[4..12], &[0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17, 0x18]);
        assert_eq!(&b[12..14], &[0x8c, 0x01]);
        assert!(b[14..].iter().all(|&x| x == 0));
        assert_eq!(Test::decode(&b).unwrap(), t);
        assert_eq!(Test::decode(&b[..43]).unwrap_err(), StampError::Length(43));
        // Padding after the 44 bytes is allowed.
        let mut long = b.to_vec();
        long.extend([0; 20]);
        assert_eq!(Test::decode(&long).unwrap(), t);
    }

    #[test]
    fn reflected_packet_fields_sit_at_the_rfc_offsets() {
        let test = Test {
            seq: 7,
            timestamp: NtpTime(0xaaaa_0000_0000_0001),
            error: ErrorEstimate(0x0c01),
        };
        let r = Reflected::answer(
            &test,
            NtpTime(0xbbbb_0000_0000_0002),
            63,
            NtpTime(0xcccc_0000_0000_0003),
        );
        let b = r.encode();
        assert_eq!(&b[0..4], &[0, 0, 0, 7]);
        assert_eq!(&b[4..12], &0xcccc_0000_0000_0003u64.to_be_bytes());
        assert_eq!(&b[12..14], &[0x0c, 0x01]);
        assert_eq!(&b[14..16], &[0, 0]);
        assert_eq!(&b[16..24], &0xbbbb_0000_0000_0002u64.to_be_bytes());
        assert_eq!(&b[24..28], &[0, 0, 0, 7]);
        assert_eq!(&b[28..36], &0xaaaa_0000_0000_0001u64.to_be_bytes());
        assert_eq!(&b[36..38], &[0x0c, 0x01]);
        assert_eq!(&b[38..40], &[0, 0]);
        assert_eq!(b[40], 63);
        assert_eq!(&b[41..44], &[0, 0, 0]);
        assert_eq!(Reflected::decode(&b).unwrap(), r);
        let mut ptp = b;
        ptp[12] |= 0x40;
        assert_eq!(Reflected::decode(&ptp).unwrap_err(), StampError::Ptp);
    }

    #[test]
    fn round_trip_leaves_out_the_reflectors_turnaround() {
        let base = Duration::from_secs(1_800_000_000);
        let at = |us: u64| NtpTime::from_unix(base + Duration::from_micros(us));
        let test = Test {
            seq: 1,
            timestamp: at(0),
            error: ErrorEstimate::WUOS,
        };
        // Out 5 ms, 2 ms in the reflector, back 6 ms: 11 ms of network.
        let r = Reflected::answer(&test, at(5_000), 64, at(7_000));
        let rtt = r.round_trip(at(13_000));
        assert!(
            rtt.abs_diff(Duration::from_millis(11)) < Duration::from_micros(1),
            "{rtt:?}"
        );
    }
}
