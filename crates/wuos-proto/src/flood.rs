//! Flooding arithmetic and the outbox that batches what one call sends to each neighbor.
//!
//! An advert leaves its origin with `hop_limit` = the flooding radius H. A router that receives
//! it with hop_limit h keeps it, at [`hops`] = H − h + 1 from the origin, and forwards it with
//! h − 1 when that is at least 1 ([`forwarded`]). Withdrawals travel the same way.
//!
//! [`Outbox`] collects, during one call into the state machine, what goes to each neighbor, and
//! turns it into flood requests: one per neighbor, or more when one would exceed
//! [`MAX_ADVERTS_PER_FLOOD`] items or [`MAX_MESSAGE_BYTES`] encoded. Within one batch an origin
//! appears at most once: a later advert or withdrawal for the same origin replaces an earlier
//! one, so the order in which the receiver applies a request's items does not matter.

use std::collections::BTreeMap;

use prost::Message;

use crate::pb;
use crate::validate::{MAX_ADVERTS_PER_FLOOD, MAX_MESSAGE_BYTES};

/// Room kept below [`MAX_MESSAGE_BYTES`] for the header and the gRPC framing.
const HEADROOM_BYTES: usize = 1024;

/// Hops from the receiver to the origin of an advert received with `received_hop_limit`, when
/// the origin used the flooding radius `radius` (this router's own; all routers of a network are
/// expected to use the same). At least 1.
pub fn hops(radius: u32, received_hop_limit: u32) -> u32 {
    radius.saturating_sub(received_hop_limit).saturating_add(1)
}

/// The copy of `a` to forward, or `None` when its hop limit is spent.
pub fn forwarded(a: &pb::TelemetryAdvert) -> Option<pb::TelemetryAdvert> {
    (a.hop_limit > 1).then(|| pb::TelemetryAdvert {
        hop_limit: a.hop_limit - 1,
        ..a.clone()
    })
}

/// The copy of `w` to forward, or `None` when its hop limit is spent.
pub fn forwarded_withdraw(w: &pb::Withdraw) -> Option<pb::Withdraw> {
    (w.hop_limit > 1).then(|| pb::Withdraw {
        hop_limit: w.hop_limit - 1,
        ..w.clone()
    })
}

#[derive(Clone, Debug, Default)]
struct Batch {
    adverts: BTreeMap<String, pb::TelemetryAdvert>,
    withdrawals: BTreeMap<String, pb::Withdraw>,
}

/// What one call sends, by neighbor.
#[derive(Clone, Debug, Default)]
pub struct Outbox {
    batches: BTreeMap<String, Batch>,
}

impl Outbox {
    /// Nothing queued.
    pub fn new() -> Self {
        Outbox::default()
    }

    /// Queues `a` for `neighbor`, replacing anything queued there for its origin.
    pub fn advert(&mut self, neighbor: &str, a: pb::TelemetryAdvert) {
        let b = self.batches.entry(neighbor.to_owned()).or_default();
        b.withdrawals.remove(&a.origin);
        b.adverts.insert(a.origin.clone(), a);
    }

    /// Queues `w` for `neighbor`, replacing anything queued there for its origin.
    pub fn withdraw(&mut self, neighbor: &str, w: pb::Withdraw) {
        let b = self.batches.entry(neighbor.to_owned()).or_default();
        b.adverts.remove(&w.origin);
        b.withdrawals.insert(w.origin.clone(), w);
    }

    /// Forgets what was queued for `neighbor` (it went down).
    pub fn drop_neighbor(&mut self, neighbor: &str) {
        self.batches.remove(neighbor);
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.batches.is_empty()
    }

    /// The flood requests, by neighbor in id order, each within the size and count limits.
    pub fn into_requests(self, header: &pb::Header) -> Vec<(String, pb::FloodRequest)> {
        let budget = MAX_MESSAGE_BYTES - HEADROOM_BYTES;
        let empty = || pb::FloodRequest {
            header: Some(header.clone()),
            adverts: Vec::new(),
            withdrawals: Vec::new(),
        };
        let mut out = Vec::new();
        for (neighbor, batch) in self.batches {
            let mut req = empty();
            let mut size = req.encoded_len();
            let mut items = 0;
            let mut flush = |req: &mut pb::FloodRequest, size: &mut usize, items: &mut usize| {
                if *items > 0 {
                    out.push((neighbor.clone(), std::mem::replace(req, empty())));
                }
                *size = req.encoded_len();
                *items = 0;
            };
            // A withdrawal and an advert count against separate limits of MAX_ADVERTS_PER_FLOOD;
            // counting them together is simpler and stricter.
            for w in batch.withdrawals.into_values() {
                let n = item_len(w.encoded_len());
                if items > 0 && (size + n > budget || items == MAX_ADVERTS_PER_FLOOD) {
                    flush(&mut req, &mut size, &mut items);
                }
                size += n;
                items += 1;
                req.withdrawals.push(w);
            }
            for a in batch.adverts.into_values() {
                let n = item_len(a.encoded_len());
                if items > 0 && (size + n > budget || items == MAX_ADVERTS_PER_FLOOD) {
                    flush(&mut req, &mut size, &mut items);
                }
                size += n;
                items += 1;
                req.adverts.push(a);
            }
            flush(&mut req, &mut size, &mut items);
        }
        out
    }
}

/// Encoded size of a repeated message field entry whose body is `len` bytes: tag, length, body.
fn item_len(len: usize) -> usize {
    1 + prost::length_delimiter_len(len) + len
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validate::header;

    fn advert(origin: &str, sequence: u64, pad: usize) -> pb::TelemetryAdvert {
        pb::TelemetryAdvert {
            origin: origin.into(),
            boot_id: 1,
            sequence,
            hop_limit: 2,
            services: vec![
                pb::ServiceInstance {
                    service: "s".repeat(60),
                    state: "x".repeat(60),
                    ..Default::default()
                };
                pad
            ],
            ..Default::default()
        }
    }

    fn withdraw(origin: &str) -> pb::Withdraw {
        pb::Withdraw {
            origin: origin.into(),
            boot_id: 1,
            hop_limit: 1,
            reason: "neighbor lost".into(),
        }
    }

    #[test]
    fn hop_arithmetic() {
        assert_eq!(hops(2, 2), 1, "from a neighbor");
        assert_eq!(hops(2, 1), 2, "from a neighbor's neighbor");
        assert_eq!(hops(2, 5), 1, "a larger radius than ours is clamped");
        assert_eq!(forwarded(&advert("r1", 1, 0)).unwrap().hop_limit, 1);
        let mut last = advert("r1", 1, 0);
        last.hop_limit = 1;
        assert_eq!(forwarded(&last), None);
        assert_eq!(forwarded_withdraw(&withdraw("r1")), None);
        let mut w = withdraw("r1");
        w.hop_limit = 3;
        assert_eq!(forwarded_withdraw(&w).unwrap().hop_limit, 2);
    }

    #[test]
    fn one_request_per_neighbor_one_item_per_origin() {
        let mut o = Outbox::new();
        assert!(o.is_empty());
        o.advert("r2", advert("r5", 1, 0));
        o.advert("r2", advert("r5", 2, 0));
        o.advert("r2", advert("r6", 1, 0));
        o.withdraw("r2", withdraw("r6"));
        o.advert("r1", advert("r5", 2, 0));
        o.withdraw("r1", withdraw("r7"));
        o.advert("r1", advert("r7", 3, 0));
        o.advert("r4", advert("r5", 2, 0));
        o.drop_neighbor("r4");
        let reqs = o.into_requests(&header("me"));
        let summary: Vec<_> = reqs
            .iter()
            .map(|(n, r)| {
                (
                    n.as_str(),
                    r.adverts
                        .iter()
                        .map(|a| (a.origin.as_str(), a.sequence))
                        .collect::<Vec<_>>(),
                    r.withdrawals.iter().map(|w| w.origin.as_str()).collect::<Vec<_>>(),
                )
            })
            .collect();
        assert_eq!(
            summary,
            vec![
                ("r1", vec![("r5", 2), ("r7", 3)], vec![]),
                ("r2", vec![("r5", 2)], vec!["r6"]),
            ]
        );
        assert!(reqs.iter().all(|(_, r)| r.header == Some(header("me"))));
    }

    #[test]
    fn large_batches_are_split_within_limits() {
        let mut o = Outbox::new();
        for i in 0..40 {
            // About 8 KiB each: eight fit under 63 KiB.
            o.advert("r2", advert(&format!("o{i:02}"), 1, 64));
        }
        for i in 0..300 {
            o.advert("r3", advert(&format!("p{i:03}"), 1, 0));
        }
        let reqs = o.into_requests(&header("me"));
        let to = |n: &str| reqs.iter().filter(|(x, _)| x == n).map(|(_, r)| r).collect::<Vec<_>>();
        let r2 = to("r2");
        assert!(r2.len() >= 5, "{}", r2.len());
        assert_eq!(r2.iter().map(|r| r.adverts.len()).sum::<usize>(), 40);
        for r in &r2 {
            assert!(
                r.encoded_len() <= MAX_MESSAGE_BYTES - HEADROOM_BYTES,
                "{}",
                r.encoded_len()
            );
            assert!(crate::validate::check_flood_request(r).is_ok());
        }
        let r3 = to("r3");
        assert_eq!(r3.len(), 2);
        assert_eq!(r3[0].adverts.len(), MAX_ADVERTS_PER_FLOOD);
        assert_eq!(r3[1].adverts.len(), 300 - MAX_ADVERTS_PER_FLOOD);
    }
}
