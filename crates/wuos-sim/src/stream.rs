//! A link's `Neighbor.Link` stream, modelled as the TCP connection it is: ordered and reliable.
//!
//! Frames are never dropped by loss. A frame of `n` bytes is `⌈(n + 66) / 1448⌉` segments; when
//! one of them is lost (each with the link's loss probability) the frame arrives one
//! retransmission timeout later, the timeout doubling for every further loss of it — Linux's
//! `RTO = SRTT + max(RTTVAR·4, rto_min)` for a steady RTT is RTT + 200 ms. A frame arrives no
//! earlier than the frame sent before it in the same direction (head-of-line blocking). After 15
//! losses of one frame (`tcp_retries2`) the direction stalls: nothing more arrives on it and the
//! dead interval takes the adjacency down.
//!
//! A link that is down loses every segment: a frame due while the link is down is
//! retransmitted (at RTO, 2·RTO, …) until the link is back or the stream is closed. The end of
//! a stream ([`Payload::Fin`]) travels behind the data like any segment.

use std::collections::VecDeque;

use wuos_model::rng::SplitMix64;
use wuos_proto::pb;

use crate::network::LinkState;

/// Linux's `TCP_RTO_MIN`.
pub const RTO_MIN_US: u64 = 200_000;
/// Linux's `TCP_RTO_MAX`.
pub const RTO_MAX_US: u64 = 120_000_000;
/// Segment payload (Ethernet MTU less IPv4, TCP and timestamp headers).
pub const MSS_BYTES: usize = 1448;
/// HTTP/2 and gRPC framing around one message (frame header, length prefix), bytes.
pub const FRAMING_BYTES: usize = 14;
/// Losses of one segment after which Linux gives up (`tcp_retries2`).
pub const MAX_RETRIES: u32 = 15;

/// The retransmission timeout of a link: its RTT plus 200 ms.
pub fn rto_us(link: &LinkState) -> u64 {
    RTO_MIN_US + link.rtt_us()
}

/// The `k`-th retransmission's wait (`k` from 0): RTO doubled `k` times, at most 120 s.
pub fn backoff_us(link: &LinkState, k: u32) -> u64 {
    rto_us(link).saturating_mul(1u64 << k.min(20)).min(RTO_MAX_US)
}

/// A frame's way across a link.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Transit {
    /// How long it takes, µs; `None` when it is lost [`MAX_RETRIES`] times (the stream stalls).
    pub us: Option<u64>,
    /// How many times it was sent again.
    pub retransmissions: u32,
}

/// How a frame of `bytes` crosses `link` when sent now: the delay with its jitter, plus a
/// retransmission timeout for every time one of its segments is lost.
pub fn transit(link: &LinkState, bytes: usize, rng: &mut SplitMix64) -> Transit {
    let mut t = link.delay_us;
    if link.jitter_us > 0 {
        let spread = 2 * link.jitter_us + 1;
        t = (t + rng.below(spread)).saturating_sub(link.jitter_us);
    }
    let mut k = 0;
    if link.loss_pct > 0.0 {
        let segments = (bytes + FRAMING_BYTES).div_ceil(MSS_BYTES).max(1);
        let p_segment = (link.loss_pct / 100.0).clamp(0.0, 1.0);
        let p_frame = 1.0 - (1.0 - p_segment).powi(segments as i32);
        while rng.next_f64() < p_frame {
            if k == MAX_RETRIES {
                return Transit {
                    us: None,
                    retransmissions: k,
                };
            }
            t = t.saturating_add(backoff_us(link, k));
            k += 1;
        }
    }
    Transit {
        us: Some(t),
        retransmissions: k,
    }
}

/// What a stream carries.
// A frame is moved in once and out once; boxing it would cost an allocation per frame, and few
// wait at a time.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq)]
pub enum Payload {
    /// A frame.
    Frame(pb::Frame),
    /// The end of the stream: the sender closed it.
    Fin,
}

/// A frame (or the end) on its way.
#[derive(Clone, Debug, PartialEq)]
pub struct InFlight {
    /// When it is due at the receiver, µs.
    pub due_us: u64,
    /// Its size on the wire (the frame's encoded length), bytes.
    pub bytes: u32,
    pub payload: Payload,
}

/// One direction of a stream.
#[derive(Clone, Debug, Default)]
pub struct Direction {
    queue: VecDeque<InFlight>,
    /// When the latest frame sent is due (a later frame is never due earlier).
    tail_us: u64,
    /// Consecutive retransmissions of the head while the link was down.
    backoff: u32,
    /// A frame was lost for good: nothing more arrives.
    stalled: bool,
}

impl Direction {
    /// Queues `payload`, sent at `now_us` and `transit_us` on its way (`None`: lost for good).
    /// Returns when it is due if it is now the head (a delivery must be scheduled then).
    pub fn push(&mut self, now_us: u64, transit_us: Option<u64>, bytes: u32, payload: Payload) -> Option<u64> {
        let Some(t) = transit_us.filter(|_| !self.stalled) else {
            self.stalled = true;
            return None;
        };
        let due_us = now_us.saturating_add(t).max(self.tail_us);
        self.tail_us = due_us;
        let head = self.queue.is_empty();
        self.queue.push_back(InFlight { due_us, bytes, payload });
        head.then_some(due_us)
    }

    /// The head, due now, cannot cross (the link is down): when to try again, or `None` when
    /// the stream gives up (it stalls).
    pub fn retransmit(&mut self, now_us: u64, link: &LinkState) -> Option<u64> {
        if self.backoff >= MAX_RETRIES {
            self.stalled = true;
            self.queue.clear();
            return None;
        }
        let at = now_us.saturating_add(backoff_us(link, self.backoff));
        self.backoff += 1;
        self.tail_us = self.tail_us.max(at);
        Some(at)
    }

    /// Takes the head, which arrived; returns it and when the next one is due (a delivery must
    /// be scheduled then), no earlier than `now_us`.
    pub fn arrive(&mut self, now_us: u64) -> Option<(InFlight, Option<u64>)> {
        let head = self.queue.pop_front()?;
        self.backoff = 0;
        let next = self.queue.front().map(|f| f.due_us.max(now_us));
        Some((head, next))
    }

    /// When the next segment sent now would be due at the earliest (behind what is queued).
    pub fn tail_us(&self) -> u64 {
        self.tail_us
    }

    /// Frames (and ends) on their way.
    pub fn len(&self) -> usize {
        self.queue.len()
    }

    /// Whether nothing is on its way.
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }
}

/// An open stream between the two ends of a link, valid while both ends run the incarnations
/// (generations) it was opened with.
#[derive(Clone, Debug)]
pub struct Session {
    pub id: u32,
    /// The generations of ends `a` and `b` when it opened.
    pub generations: [u32; 2],
    /// `a` → `b`, `b` → `a`.
    pub directions: [Direction; 2],
}

impl Session {
    /// A stream with nothing on its way, whose dialler (end `a`) learns at `connected_us` that
    /// it opened: nothing arrives at either end before that (the acceptor's first bytes cannot
    /// overtake the handshake's answer, whatever the jitter).
    pub fn new(id: u32, generations: [u32; 2], connected_us: u64) -> Self {
        let direction = || Direction {
            tail_us: connected_us,
            ..Direction::default()
        };
        Session {
            id,
            generations,
            directions: [direction(), direction()],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::network::RouterIx;

    fn link(delay_us: u64, loss_pct: f64) -> LinkState {
        LinkState {
            a: RouterIx(0),
            b: RouterIx(1),
            up: true,
            delay_us,
            jitter_us: 0,
            loss_pct,
        }
    }

    #[test]
    fn a_lossless_link_takes_its_delay() {
        let mut rng = SplitMix64::new(1);
        assert_eq!(
            transit(&link(5000, 0.0), 100_000, &mut rng),
            Transit {
                us: Some(5000),
                retransmissions: 0
            }
        );
        assert_eq!(rto_us(&link(5000, 0.0)), 210_000);
        assert_eq!(backoff_us(&link(5000, 0.0), 2), 840_000);
        assert_eq!(backoff_us(&link(5000, 0.0), 30), RTO_MAX_US);
    }

    #[test]
    fn loss_delays_by_whole_timeouts_and_big_frames_lose_more() {
        let l = link(1000, 10.0);
        let mut rng = SplitMix64::new(7);
        let small: Vec<u64> = (0..10_000).map(|_| transit(&l, 100, &mut rng).us.unwrap()).collect();
        let late = small.iter().filter(|t| **t > 1000).count();
        assert!(
            (800..1200).contains(&late),
            "about 10% of one-segment frames retransmitted: {late}"
        );
        let whole: Vec<u64> = (0..10)
            .scan(1000, |t, k| {
                let now = *t;
                *t += backoff_us(&l, k);
                Some(now)
            })
            .collect();
        assert!(
            small.iter().all(|t| whole.contains(t)),
            "late by whole, doubling timeouts"
        );
        let big = (0..10_000)
            .filter(|_| transit(&l, 14_000, &mut rng).us.is_none_or(|t| t > 1000))
            .count();
        assert!(big > 5000, "a 10-segment frame loses a segment 65% of the time: {big}");
        assert_eq!(
            transit(&link(1000, 100.0), 10, &mut rng),
            Transit {
                us: None,
                retransmissions: MAX_RETRIES
            },
            "lost for good"
        );
    }

    #[test]
    fn a_direction_keeps_order_and_retransmits_while_down() {
        let l = link(1000, 0.0);
        let mut d = Direction::default();
        assert_eq!(d.push(0, Some(5000), 10, Payload::Fin), Some(5000), "head: schedule");
        assert_eq!(d.push(100, Some(1000), 10, Payload::Fin), None, "behind the head");
        assert_eq!(d.tail_us(), 5000, "never due before the frame ahead");
        assert_eq!(d.retransmit(5000, &l), Some(207_000));
        assert_eq!(d.retransmit(207_000, &l), Some(611_000), "doubled");
        let (f, next) = d.arrive(611_000).unwrap();
        assert_eq!(f.due_us, 5000);
        assert_eq!(next, Some(611_000), "the next one right behind");
        let (_, next) = d.arrive(611_000).unwrap();
        assert_eq!(next, None);
        assert!(d.is_empty());
        assert_eq!(d.push(700_000, None, 10, Payload::Fin), None);
        assert_eq!(d.push(700_000, Some(1), 10, Payload::Fin), None, "stalled for good");
        assert_eq!(d.len(), 0);
    }
}
