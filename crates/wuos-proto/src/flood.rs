//! Flooding arithmetic, the per-neighbor [`Outbox`] of what is due, and [`frames`], which packs
//! what goes out into frames within the limits.
//!
//! An advert leaves its origin with `hop_limit` = the flooding radius H. A router that receives
//! it with hop_limit h keeps it, at [`hops`] = H − h + 1 from the origin, and forwards it with
//! h − 1 when that is at least 1 ([`forwarded`]). Withdrawals travel the same way.
//!
//! The outbox does not hold adverts, only *which origins are due* to each neighbor: what goes
//! out is decided when the frame is built — the origin's advert as it is then, whole or as a
//! delta, or nothing when the neighbor already holds it. So an origin that changes twice
//! between two frames is sent once, and an advert that reached the neighbor by another path in
//! the meantime is not sent at all. Within one queue an origin is either due or withdrawn: the
//! later of the two replaces the earlier — except [`Outbox::withdraw_and_resend`], both.

use std::collections::{BTreeMap, BTreeSet};

use prost::Message;

use crate::pb;
use crate::validate::{MAX_ADVERTS_PER_FLOOD, MAX_MESSAGE_BYTES};

/// Room kept below [`MAX_MESSAGE_BYTES`] for the header and the framing.
const HEADROOM_BYTES: usize = 1024;

/// Hops from the receiver to the origin of an advert received with `received_hop_limit`, when
/// the origin used the flooding radius `radius` (this router's own; all routers of a network are
/// expected to use the same). At least 1.
pub fn hops(radius: u32, received_hop_limit: u32) -> u32 {
    radius.saturating_sub(received_hop_limit).saturating_add(1)
}

/// The hop limit `a` is forwarded with, or `None` when its hop limit is spent.
pub fn forwarded_hop_limit(a: &pb::TelemetryAdvert) -> Option<u32> {
    (a.hop_limit > 1).then(|| a.hop_limit - 1)
}

/// The copy of `w` to forward, or `None` when its hop limit is spent.
pub fn forwarded_withdraw(w: &pb::Withdraw) -> Option<pb::Withdraw> {
    (w.hop_limit > 1).then(|| pb::Withdraw {
        hop_limit: w.hop_limit - 1,
        ..w.clone()
    })
}

/// What is due to one neighbor.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Queue {
    /// Our hello (the first frame of a link).
    pub hello: bool,
    /// An empty frame, so that the neighbor hears us.
    pub keepalive: bool,
    /// Origins whose current advert is due (our own id for our own).
    pub due: BTreeSet<String>,
    /// Withdrawals, by origin.
    pub withdrawals: BTreeMap<String, pb::Withdraw>,
    /// Origins whose whole advert we ask the neighbor for.
    pub need_full: BTreeSet<String>,
    /// To go at the end of the current call rather than with the next periodic frame.
    pub urgent: bool,
    /// When the oldest item was queued.
    pub since_ms: Option<u64>,
    /// When the queue must leave at the latest, if sooner than a whole interval after
    /// `since_ms` (a forwarded advert's deadline).
    pub by_ms: Option<u64>,
}

/// What is due, by neighbor.
#[derive(Clone, Debug, Default)]
pub struct Outbox {
    queues: BTreeMap<String, Queue>,
}

impl Outbox {
    /// Nothing due.
    pub fn new() -> Self {
        Outbox::default()
    }

    fn queue(&mut self, neighbor: &str, now_ms: u64) -> &mut Queue {
        // No key copied when the queue exists (a hub queues hundreds of items a second).
        if !self.queues.contains_key(neighbor) {
            self.queues.insert(neighbor.to_owned(), Queue::default());
        }
        let q = self.queues.get_mut(neighbor).expect("inserted above");
        q.since_ms.get_or_insert(now_ms);
        q
    }

    /// Our hello to `neighbor`, at once.
    pub fn hello(&mut self, neighbor: &str, now_ms: u64) {
        let q = self.queue(neighbor, now_ms);
        q.hello = true;
        q.urgent = true;
    }

    /// An empty frame to `neighbor`, at once.
    pub fn keepalive(&mut self, neighbor: &str, now_ms: u64) {
        let q = self.queue(neighbor, now_ms);
        q.keepalive = true;
        q.urgent = true;
    }

    /// `origin`'s advert is due to `neighbor` (with the next frame; `urgent`: at once).
    pub fn due(&mut self, neighbor: &str, origin: &str, now_ms: u64, urgent: bool) {
        self.due_by(neighbor, origin, now_ms, urgent, None);
    }

    /// [`Outbox::due`], and the queue leaves by `by_ms` at the latest when given.
    pub fn due_by(&mut self, neighbor: &str, origin: &str, now_ms: u64, urgent: bool, by_ms: Option<u64>) {
        let q = self.queue(neighbor, now_ms);
        if let Some(by) = by_ms {
            q.by_ms = Some(q.by_ms.map_or(by, |t| t.min(by)));
        }
        q.withdrawals.remove(origin);
        if !q.due.contains(origin) {
            q.due.insert(origin.to_owned());
        }
        q.urgent |= urgent;
    }

    /// `w` to `neighbor`, at once, replacing anything due there for its origin.
    pub fn withdraw(&mut self, neighbor: &str, w: pb::Withdraw, now_ms: u64) {
        let q = self.queue(neighbor, now_ms);
        q.due.remove(&w.origin);
        q.withdrawals.insert(w.origin.clone(), w);
        q.urgent = true;
    }

    /// `w` to `neighbor`, at once, and then its origin's advert as we now hold it, in the same
    /// frame (withdrawals go first): the neighbor drops what it learned from us before it takes
    /// our copy, which may now be worse than the one it holds (a longer path).
    pub fn withdraw_and_resend(&mut self, neighbor: &str, w: pb::Withdraw, now_ms: u64) {
        let origin = w.origin.clone();
        self.withdraw(neighbor, w, now_ms);
        self.queue(neighbor, now_ms).due.insert(origin);
    }

    /// Ask `neighbor`, at once, for `origin`'s whole advert.
    pub fn need_full(&mut self, neighbor: &str, origin: &str, now_ms: u64) {
        let q = self.queue(neighbor, now_ms);
        q.need_full.insert(origin.to_owned());
        q.urgent = true;
    }

    /// Forgets what was due to `neighbor` (its link went down).
    pub fn drop_neighbor(&mut self, neighbor: &str) {
        self.queues.remove(neighbor);
    }

    /// Takes what is due to `neighbor`.
    pub fn take(&mut self, neighbor: &str) -> Option<Queue> {
        self.queues.remove(neighbor)
    }

    /// Neighbors with something due, in id order.
    pub fn neighbors(&self) -> Vec<String> {
        self.queues.keys().cloned().collect()
    }

    /// Neighbors whose queue is urgent, has reached its deadline, or has waited at least
    /// `max_wait_ms`.
    pub fn ready(&self, now_ms: u64, max_wait_ms: u64) -> Vec<String> {
        self.queues
            .iter()
            .filter(|(_, q)| {
                q.urgent
                    || q.by_ms.is_some_and(|t| now_ms >= t)
                    || q.since_ms.is_some_and(|t| now_ms.saturating_sub(t) >= max_wait_ms)
            })
            .map(|(n, _)| n.clone())
            .collect()
    }

    /// Whether `neighbor`'s queue is ready only because its deadline came.
    pub fn at_deadline(&self, neighbor: &str, now_ms: u64, max_wait_ms: u64) -> bool {
        self.queues.get(neighbor).is_some_and(|q| {
            !q.urgent
                && q.by_ms.is_some_and(|t| now_ms >= t)
                && q.since_ms.is_none_or(|t| now_ms.saturating_sub(t) < max_wait_ms)
        })
    }

    /// The earliest deadline of a queue (a forwarded advert's), if any.
    pub fn next_deadline_ms(&self) -> Option<u64> {
        self.queues.values().filter_map(|q| q.by_ms).min()
    }

    /// When the first queue becomes ready without an urgent item: its deadline, or `max_wait_ms`
    /// after its oldest item was queued.
    pub fn next_ready_ms(&self, max_wait_ms: u64) -> Option<u64> {
        self.queues
            .values()
            .filter_map(|q| {
                let waited = q.since_ms.map(|t| t.saturating_add(max_wait_ms));
                [waited, q.by_ms].into_iter().flatten().min()
            })
            .min()
    }

    /// Whether nothing is due.
    pub fn is_empty(&self) -> bool {
        self.queues.is_empty()
    }
}

/// One item of a frame.
#[derive(Clone, Debug, PartialEq)]
pub enum Item {
    /// A whole advert.
    Advert(pb::TelemetryAdvert),
    /// An advert as a delta.
    Delta(pb::AdvertDelta),
    /// A withdrawal.
    Withdraw(pb::Withdraw),
}

impl Item {
    fn encoded_len(&self) -> usize {
        match self {
            Item::Advert(a) => a.encoded_len(),
            Item::Delta(d) => d.encoded_len(),
            Item::Withdraw(w) => w.encoded_len(),
        }
    }
}

/// The frames that carry `hello`, `items` and `need_full`: as few as the limits allow (at most
/// [`MAX_ADVERTS_PER_FLOOD`] items and about [`MAX_MESSAGE_BYTES`] each); the hello and the
/// requests go in the first, requests beyond [`MAX_ADVERTS_PER_FLOOD`] in frames of their own
/// after the items (a router that lost a hub asks for hundreds of orphans). One empty frame (a
/// keepalive) when there is nothing at all.
pub fn frames(
    header: &pb::Header,
    hello: Option<pb::Hello>,
    items: Vec<Item>,
    mut need_full: Vec<String>,
) -> Vec<pb::Frame> {
    let budget = MAX_MESSAGE_BYTES - HEADROOM_BYTES;
    let empty = || pb::Frame {
        header: Some(header.clone()),
        ..Default::default()
    };
    let more_requests = need_full.split_off(need_full.len().min(MAX_ADVERTS_PER_FLOOD));
    let mut first = empty();
    first.hello = hello;
    first.need_full = need_full;
    let mut out = Vec::new();
    let mut frame = first;
    let mut size = frame.encoded_len();
    let mut count = 0;
    for item in items {
        let n = item_len(item.encoded_len());
        if count > 0 && (size + n > budget || count == MAX_ADVERTS_PER_FLOOD) {
            out.push(std::mem::replace(&mut frame, empty()));
            size = frame.encoded_len();
            count = 0;
        }
        size += n;
        count += 1;
        match item {
            Item::Advert(a) => frame.adverts.push(a),
            Item::Delta(d) => frame.deltas.push(d),
            Item::Withdraw(w) => frame.withdrawals.push(w),
        }
    }
    out.push(frame);
    for chunk in more_requests.chunks(MAX_ADVERTS_PER_FLOOD) {
        out.push(pb::Frame {
            need_full: chunk.to_vec(),
            ..empty()
        });
    }
    out
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
        assert_eq!(forwarded_hop_limit(&advert("r1", 1, 0)), Some(1));
        let mut last = advert("r1", 1, 0);
        last.hop_limit = 1;
        assert_eq!(forwarded_hop_limit(&last), None);
        assert_eq!(forwarded_withdraw(&withdraw("r1")), None);
        let mut w = withdraw("r1");
        w.hop_limit = 3;
        assert_eq!(forwarded_withdraw(&w).unwrap().hop_limit, 2);
    }

    #[test]
    fn an_origin_is_due_or_withdrawn_the_later_wins() {
        let mut o = Outbox::new();
        assert!(o.is_empty());
        o.due("r2", "r5", 10, false);
        o.due("r2", "r5", 11, false);
        o.due("r2", "r6", 12, false);
        o.withdraw("r2", withdraw("r6"), 13);
        o.withdraw("r1", withdraw("r7"), 20);
        o.due("r1", "r7", 21, false);
        o.due("r4", "r5", 30, false);
        o.drop_neighbor("r4");
        assert_eq!(o.neighbors(), vec!["r1".to_string(), "r2".to_string()]);
        let r2 = o.take("r2").unwrap();
        assert_eq!(r2.due.iter().collect::<Vec<_>>(), vec!["r5"]);
        assert_eq!(r2.withdrawals.keys().collect::<Vec<_>>(), vec!["r6"]);
        assert_eq!(r2.since_ms, Some(10), "the oldest item's time");
        assert!(r2.urgent, "a withdrawal goes at once");
        let r1 = o.take("r1").unwrap();
        assert_eq!(r1.due.iter().collect::<Vec<_>>(), vec!["r7"]);
        assert!(r1.withdrawals.is_empty());
    }

    #[test]
    fn queues_are_ready_when_urgent_or_old() {
        let mut o = Outbox::new();
        o.due("r2", "r5", 100, false);
        o.due("r3", "r5", 100, true);
        o.need_full("r4", "r9", 150);
        assert_eq!(o.ready(150, 1000), vec!["r3".to_string(), "r4".to_string()]);
        assert_eq!(o.ready(1100, 1000), vec!["r2", "r3", "r4"]);
    }

    #[test]
    fn large_batches_are_split_within_limits() {
        let items: Vec<Item> = (0..40)
            .map(|i| Item::Advert(advert(&format!("o{i:02}"), 1, 64)))
            .collect();
        let hello = pb::Hello {
            boot_id: 1,
            ..Default::default()
        };
        let fs = frames(&header("me"), Some(hello), items, vec!["x".into()]);
        assert!(fs.len() >= 5, "{}", fs.len());
        assert_eq!(fs.iter().map(|f| f.adverts.len()).sum::<usize>(), 40);
        assert!(
            fs[0].hello.is_some() && fs[1].hello.is_none(),
            "the hello goes first, once"
        );
        assert_eq!(fs[0].need_full, vec!["x".to_string()]);
        for f in &fs {
            assert!(
                f.encoded_len() <= MAX_MESSAGE_BYTES - HEADROOM_BYTES,
                "{}",
                f.encoded_len()
            );
            assert_eq!(f.header, Some(header("me")));
        }
        let many: Vec<Item> = (0..300)
            .map(|i| Item::Withdraw(withdraw(&format!("p{i:03}"))))
            .collect();
        let fs = frames(&header("me"), None, many, vec![]);
        assert_eq!(fs.len(), 2);
        assert_eq!(fs[0].withdrawals.len(), MAX_ADVERTS_PER_FLOOD);
        assert_eq!(fs[1].withdrawals.len(), 300 - MAX_ADVERTS_PER_FLOOD);
        // Requests past the limit go in frames of their own, each one valid.
        let asks: Vec<String> = (0..600).map(|i| format!("q{i:03}")).collect();
        let fs = frames(&header("me"), None, vec![Item::Withdraw(withdraw("p"))], asks.clone());
        let counts: Vec<_> = fs.iter().map(|f| (f.need_full.len(), f.withdrawals.len())).collect();
        assert_eq!(counts, [(256, 1), (256, 0), (88, 0)]);
        assert_eq!(fs.iter().flat_map(|f| f.need_full.clone()).collect::<Vec<_>>(), asks);
        for f in &fs {
            assert_eq!(crate::validate::check_frame_head(f).map(|_| ()), Ok(()));
        }
        let keepalive = frames(&header("me"), None, vec![], vec![]);
        assert_eq!(keepalive.len(), 1);
        assert!(keepalive[0].adverts.is_empty() && keepalive[0].hello.is_none());
    }
}
