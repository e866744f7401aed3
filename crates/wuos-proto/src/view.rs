//! The view: the latest advert of every origin heard within the flooding radius, with how far
//! away it is, which neighbor it came from and when.
//!
//! An advert is identified by its origin. [`View::judge`] orders a received advert against the
//! stored one:
//!
//! - newer: another boot id and a later sample timestamp, or the same boot id and a higher
//!   sequence;
//! - shorter: the same (boot id, sequence) with a higher remaining hop limit — the same advert,
//!   come by a shorter path;
//! - otherwise a duplicate (same boot id and sequence) or older.
//!
//! An entry is stale once not refreshed for `stale_after_intervals` × the advert's own
//! interval × the intervals its origin may stay quiet, and expires (is removed) after twice that.
//! An **orphan** (the neighbor it came from was lost) ages by its interval alone, and is removed
//! at the latest one fresh period (`stale_after_intervals` intervals) after its orphaning; it
//! takes the same advert by any path ([`Verdict::Rerouted`]): nothing may refresh it through the
//! lost neighbor, and its origin, quiet, may not advertise for a long time.
//!
//! Hops are held ([`Entry::hops_at`]): a newer advert that comes by more hops than its origin's
//! last one did is stored at once (its figures are fresher), but the entry reads the old hop
//! count for up to one interval of the origin's, while the copy by the shorter path may still be
//! on its way — copies of one advert race over the paths, and the longer path's can win. Without
//! it a view would read an origin two hops away as three for as long as the shorter copy takes.

use std::collections::BTreeMap;

use crate::pb;

/// Most origins a view holds: adverts of further new origins are dropped (a bound on what a
/// misbehaving neighbor can make us store; a network within the flooding radius is far smaller).
pub const MAX_VIEW_ENTRIES: usize = 4096;

/// One origin's latest advert as this router knows it.
#[derive(Clone, Debug, PartialEq)]
pub struct Entry {
    /// The advert as received (its hop_limit is what was left when it got here).
    pub advert: pb::TelemetryAdvert,
    /// Hops from this router to the origin, as this advert travelled (1 = a neighbor); what the
    /// entry reads is [`Entry::hops_at`].
    pub path_hops: u32,
    /// The hops of the origin's previous advert, read instead of more `path_hops` until a
    /// shorter copy of this advert comes or the time is up ([`HeldHops`]).
    pub held: Option<HeldHops>,
    /// The neighbor it came from.
    pub learned_from: String,
    /// When it was accepted (monotonic ms). A shorter-path copy of the same advert does not
    /// change it: the data is no fresher.
    pub received_ms: u64,
    /// The change from the advert this one replaced (same boot, older sequence), to send to
    /// neighbors that hold that one. `None` for a first advert or one a delta cannot express.
    pub delta: Option<pb::AdvertDelta>,
    /// When the neighbor it came from was lost (monotonic ms), if it was since: the entry no
    /// longer waits for its origin's quiet intervals to age (nothing may bring it a refresh), only
    /// for its interval from then on.
    pub orphaned_ms: Option<u64>,
}

/// Hops an entry keeps reading while a shorter copy of its advert may still come.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HeldHops {
    /// The hops the origin's previous advert came by.
    pub hops: u32,
    /// Until when (monotonic ms, excluded).
    pub until_ms: u64,
}

impl HeldHops {
    /// What a newer advert of `path_hops` replacing `previous` holds: the hops the previous entry
    /// read (its own path's, or those it held itself: two newer adverts can both come by the
    /// longer path before either's shorter copy), for one interval of the origin's from
    /// `now_ms`, when they are fewer and the neighbor it came from is still there to bring a
    /// shorter copy (not an orphan).
    pub fn on_newer(previous: &Entry, path_hops: u32, interval_ms: u32, now_ms: u64) -> Option<HeldHops> {
        let hops = previous.hops_at(now_ms);
        (!previous.is_orphan() && hops < path_hops).then(|| HeldHops {
            hops,
            until_ms: now_ms.saturating_add(u64::from(interval_ms)),
        })
    }
}

impl Entry {
    /// Hops from this router to the origin at `now_ms`: the path's, or fewer while held.
    pub fn hops_at(&self, now_ms: u64) -> u32 {
        match self.held {
            Some(h) if now_ms < h.until_ms => h.hops.min(self.path_hops),
            _ => self.path_hops,
        }
    }

    /// Whether its hops are held at `now_ms` ([`Entry::hops_at`] may differ from `path_hops`).
    pub fn is_held(&self, now_ms: u64) -> bool {
        self.hops_at(now_ms) < self.path_hops
    }

    /// Whether the neighbor it came from was lost since ([`Entry::orphaned_ms`]).
    pub fn is_orphan(&self) -> bool {
        self.orphaned_ms.is_some()
    }

    /// Milliseconds since it was received.
    pub fn age_ms(&self, now_ms: u64) -> u64 {
        now_ms.saturating_sub(self.received_ms)
    }

    /// How long it stays fresh after its reception: `stale_after_intervals` × the advert's
    /// interval × the intervals its origin may stay quiet (at least 1).
    pub fn fresh_ms(&self, stale_after_intervals: u32) -> u64 {
        self.interval_fresh_ms(stale_after_intervals) * u64::from(self.advert.quiet_intervals.max(1))
    }

    /// `stale_after_intervals` × the advert's interval: how long an orphan stays fresh.
    fn interval_fresh_ms(&self, stale_after_intervals: u32) -> u64 {
        u64::from(stale_after_intervals) * u64::from(self.advert.interval_ms)
    }

    /// When it goes stale (after `periods` = 1) or expires (2): `periods` × [`Entry::fresh_ms`]
    /// after its reception; for an orphan, sooner: `periods` × the interval-only fresh period
    /// after its reception, but no sooner than `periods` − 1 such periods after its orphaning
    /// (an orphan of a long-quiet origin is stale at once, and gone one period later: the time
    /// its other neighbors have to answer for it, and its origin to advertise anew).
    fn after_ms(&self, stale_after_intervals: u32, periods: u64) -> u64 {
        let normal = self
            .received_ms
            .saturating_add(periods * self.fresh_ms(stale_after_intervals));
        let Some(orphaned) = self.orphaned_ms else {
            return normal;
        };
        let f = self.interval_fresh_ms(stale_after_intervals);
        let orphan = self
            .received_ms
            .saturating_add(periods * f)
            .max(orphaned.saturating_add((periods - 1) * f));
        normal.min(orphan)
    }

    /// Whether it is stale: not refreshed for [`Entry::fresh_ms`] (an orphan: sooner, see
    /// [`Entry::expires_ms`]).
    pub fn is_stale(&self, now_ms: u64, stale_after_intervals: u32) -> bool {
        now_ms >= self.after_ms(stale_after_intervals, 1)
    }

    /// Whether it has been stale for as long again, and is to be removed.
    pub fn is_expired(&self, now_ms: u64, stale_after_intervals: u32) -> bool {
        now_ms >= self.expires_ms(stale_after_intervals)
    }

    /// When it expires ([`Entry::is_expired`]): twice [`Entry::fresh_ms`] after its reception;
    /// an orphan, twice the interval-only fresh period after it, or one such period after its
    /// orphaning if that is later, but never later than it would have as no orphan.
    pub fn expires_ms(&self, stale_after_intervals: u32) -> u64 {
        self.after_ms(stale_after_intervals, 2)
    }

    /// Its receive time less its origin's sample time, in ms: the wall clock now
    /// (`now_unix_ns`) less its age is the wall-clock time of reception.
    pub fn latency_ms(&self, now_ms: u64, now_unix_ns: i64) -> f64 {
        let received_unix_ns = now_unix_ns as f64 - self.age_ms(now_ms) as f64 * 1e6;
        (received_unix_ns - self.advert.timestamp_unix_ns as f64) / 1e6
    }

    /// The admin API's view of it. `now_unix_ns` is the wall clock now, used to estimate the
    /// wall-clock time of reception for the latency.
    pub fn to_pb(&self, now_ms: u64, now_unix_ns: i64, stale_after_intervals: u32) -> pb::ViewEntry {
        let age_ms = self.age_ms(now_ms);
        pb::ViewEntry {
            advert: Some(self.advert.clone()),
            hops: self.hops_at(now_ms),
            age_ms,
            learned_from: self.learned_from.clone(),
            stale: self.is_stale(now_ms, stale_after_intervals),
            latency_ms: self.latency_ms(now_ms, now_unix_ns),
            origin: self.advert.origin.clone(),
        }
    }
}

/// How a received advert compares with the stored one of its origin.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Nothing is stored for the origin.
    New,
    /// A later advert than the stored one.
    Newer,
    /// The stored advert, come by a shorter path.
    Shorter,
    /// The stored advert again, by a path no shorter, for an orphan: it takes the new path
    /// (whatever its length: the old one is gone).
    Rerouted,
    /// The stored advert again, by a path no shorter.
    Duplicate,
    /// An earlier advert than the stored one.
    Older,
}

impl Verdict {
    /// Whether the advert is to be stored and forwarded.
    pub fn accepted(self) -> bool {
        matches!(
            self,
            Verdict::New | Verdict::Newer | Verdict::Shorter | Verdict::Rerouted
        )
    }
}

/// Whether `a` is a later advert than `stored` (of the same origin).
pub fn is_newer(a: &pb::TelemetryAdvert, stored: &pb::TelemetryAdvert) -> bool {
    if a.boot_id == stored.boot_id {
        a.sequence > stored.sequence
    } else {
        a.timestamp_unix_ns > stored.timestamp_unix_ns
    }
}

/// The entries, by origin.
#[derive(Clone, Debug, Default)]
pub struct View {
    entries: BTreeMap<String, Entry>,
    /// Changes at every change of an entry ([`View::generation`]).
    generation: u64,
    /// [`View::next_expiry_ms`] as last computed: (generation, stale_after_intervals, answer).
    /// The daemon asks before every sleep; the view changes far less often.
    expiry: std::cell::Cell<Option<(u64, u32, Option<u64>)>>,
}

impl View {
    /// An empty view.
    pub fn new() -> Self {
        View::default()
    }

    /// How `a` compares with what is stored for its origin.
    pub fn judge(&self, a: &pb::TelemetryAdvert) -> Verdict {
        let Some(e) = self.entries.get(&a.origin) else {
            return Verdict::New;
        };
        let s = &e.advert;
        if is_newer(a, s) {
            Verdict::Newer
        } else if a.boot_id == s.boot_id && a.sequence == s.sequence {
            if a.hop_limit > s.hop_limit {
                Verdict::Shorter
            } else if e.is_orphan() {
                Verdict::Rerouted
            } else {
                Verdict::Duplicate
            }
        } else {
            Verdict::Older
        }
    }

    /// The entry of `origin`.
    pub fn get(&self, origin: &str) -> Option<&Entry> {
        self.entries.get(origin)
    }

    /// Stores `e`, replacing its origin's entry; returns the replaced one.
    pub fn insert(&mut self, e: Entry) -> Option<Entry> {
        let added = self.expiry.get().map(|(_, s, _)| e.expires_ms(s));
        self.generation += 1;
        let old = self.entries.insert(e.advert.origin.clone(), e);
        self.keep_expiry(old.as_ref(), added);
        old
    }

    /// Carries [`View::next_expiry_ms`]'s answer over one change — `removed` gone, an entry that
    /// expires at `added` stored — without a pass over the entries, unless `removed` may have
    /// been the first to expire (then the next call makes one). A view that takes a new advert
    /// every few milliseconds and is asked before every sleep made that pass each time.
    fn keep_expiry(&self, removed: Option<&Entry>, added: Option<u64>) {
        let Some((g, s, at)) = self.expiry.get() else {
            return;
        };
        if g + 1 != self.generation {
            return;
        }
        let first_may_go = match (removed, at) {
            (Some(r), Some(first)) => r.expires_ms(s) <= first,
            (Some(_), None) => true,
            (None, _) => false,
        };
        if !first_may_go {
            let at = match (at, added) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            self.expiry.set(Some((self.generation, s, at)));
        }
    }

    /// Marks every entry learned from `neighbor` an orphan at `now_ms` ([`Entry::orphaned_ms`]);
    /// returns their origins, in order.
    pub fn orphan_learned_from(&mut self, neighbor: &str, now_ms: u64) -> Vec<String> {
        let mut orphans = Vec::new();
        for e in self.entries.values_mut().filter(|e| e.learned_from == neighbor) {
            e.orphaned_ms.get_or_insert(now_ms);
            orphans.push(e.advert.origin.clone());
            self.generation += 1;
        }
        orphans
    }

    /// Marks `origin`'s entry an orphan at `now_ms` (unless it is one already); returns its
    /// origin, or nothing without an entry.
    pub fn orphan(&mut self, origin: &str, now_ms: u64) -> Vec<String> {
        let Some(e) = self.entries.get_mut(origin) else {
            return Vec::new();
        };
        e.orphaned_ms.get_or_insert(now_ms);
        self.generation += 1;
        vec![origin.to_owned()]
    }

    /// Removes `origin`'s entry.
    pub fn remove(&mut self, origin: &str) -> Option<Entry> {
        let e = self.entries.remove(origin);
        if e.is_some() {
            self.generation += 1;
            self.keep_expiry(e.as_ref(), None);
        }
        e
    }

    /// A number that changes whenever an entry is stored, changed or removed: two equal
    /// readings mean the same entries (whose staleness may still have moved with time).
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// How many entries' hops are held at `now_ms` ([`Entry::is_held`]).
    pub fn held_count(&self, now_ms: u64) -> usize {
        self.iter().filter(|e| e.is_held(now_ms)).count()
    }

    /// How many entries are stale at `now_ms`.
    pub fn stale_count(&self, now_ms: u64, stale_after_intervals: u32) -> usize {
        self.iter()
            .filter(|e| e.is_stale(now_ms, stale_after_intervals))
            .count()
    }

    /// The entries, by origin.
    pub fn iter(&self) -> impl Iterator<Item = &Entry> {
        self.entries.values()
    }

    /// How many origins are known.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no origin is known.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// When the first entry expires ([`Entry::is_expired`]), if any.
    pub fn next_expiry_ms(&self, stale_after_intervals: u32) -> Option<u64> {
        if let Some((g, s, at)) = self.expiry.get()
            && (g, s) == (self.generation, stale_after_intervals)
        {
            return at;
        }
        let at = self.iter().map(|e| e.expires_ms(stale_after_intervals)).min();
        self.expiry.set(Some((self.generation, stale_after_intervals, at)));
        at
    }

    /// The origins whose entries have expired at `now_ms`, in order.
    pub fn expired(&self, now_ms: u64, stale_after_intervals: u32) -> Vec<String> {
        self.entries
            .values()
            .filter(|e| e.is_expired(now_ms, stale_after_intervals))
            .map(|e| e.advert.origin.clone())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn advert(boot_id: u64, sequence: u64, ts: i64, hop_limit: u32) -> pb::TelemetryAdvert {
        pb::TelemetryAdvert {
            origin: "r3".into(),
            boot_id,
            sequence,
            timestamp_unix_ns: ts,
            hop_limit,
            interval_ms: 1000,
            ..Default::default()
        }
    }

    fn view_with(a: pb::TelemetryAdvert) -> View {
        let mut v = View::new();
        v.insert(Entry {
            advert: a,
            path_hops: 1,
            held: None,
            learned_from: "r2".into(),
            received_ms: 0,
            delta: None,
            orphaned_ms: None,
        });
        v
    }

    #[test]
    fn ordering_of_adverts() {
        let v = View::new();
        assert_eq!(v.judge(&advert(1, 5, 100, 2)), Verdict::New);
        let v = view_with(advert(1, 5, 100, 1));
        assert_eq!(
            v.judge(&advert(1, 6, 50, 1)),
            Verdict::Newer,
            "sequence wins within a boot"
        );
        assert_eq!(v.judge(&advert(1, 4, 200, 2)), Verdict::Older);
        assert_eq!(v.judge(&advert(1, 5, 100, 2)), Verdict::Shorter);
        assert_eq!(v.judge(&advert(1, 5, 100, 1)), Verdict::Duplicate);
        assert_eq!(
            v.judge(&advert(2, 1, 101, 1)),
            Verdict::Newer,
            "timestamp wins across boots"
        );
        assert_eq!(v.judge(&advert(2, 9, 100, 2)), Verdict::Older, "not later is not newer");
        assert!(Verdict::Shorter.accepted() && !Verdict::Duplicate.accepted());
        // An orphan takes the same advert by a path no shorter: its own path is gone.
        let mut v = v;
        v.orphan_learned_from("r2", 10);
        assert_eq!(v.judge(&advert(1, 5, 100, 1)), Verdict::Rerouted);
        assert_eq!(v.judge(&advert(1, 5, 100, 2)), Verdict::Shorter);
        assert_eq!(v.judge(&advert(1, 4, 200, 2)), Verdict::Older);
        assert!(Verdict::Rerouted.accepted());
    }

    #[test]
    fn ageing() {
        let v = view_with(advert(1, 1, 0, 1));
        let e = v.get("r3").unwrap();
        assert!(!e.is_stale(2999, 3));
        assert!(e.is_stale(3000, 3));
        assert!(!e.is_expired(5999, 3));
        assert!(e.is_expired(6000, 3));
        assert_eq!(v.expired(5999, 3), Vec::<String>::new());
        assert_eq!(v.expired(6000, 3), vec!["r3".to_string()]);
    }

    #[test]
    fn a_quiet_origin_stays_fresh_as_long_as_it_may_stay_quiet() {
        let mut a = advert(1, 1, 0, 1);
        a.quiet_intervals = 10;
        let v = view_with(a);
        let e = v.get("r3").unwrap();
        assert!(!e.is_stale(29_999, 3));
        assert!(e.is_stale(30_000, 3));
        assert!(!e.is_expired(59_999, 3));
        assert!(e.is_expired(60_000, 3));
        assert_eq!(v.next_expiry_ms(3), Some(60_000));
        // Its neighbor lost at 20 s, nothing may refresh it: it ages by its interval alone, and
        // having said nothing for 20 s it is stale at once and gone 3 intervals later.
        let (mut quiet, mut fresh) = (v.clone(), v);
        assert_eq!(quiet.orphan_learned_from("r2", 20_000), vec!["r3".to_string()]);
        assert_eq!(quiet.next_expiry_ms(3), Some(23_000));
        let e = quiet.get("r3").unwrap();
        assert!(e.is_stale(20_000, 3));
        assert!(!e.is_expired(22_999, 3) && e.is_expired(23_000, 3));
        // Lost again before it was re-attached: it keeps the first orphaning's clock.
        quiet.orphan_learned_from("r2", 21_000);
        assert_eq!(quiet.next_expiry_ms(3), Some(23_000));
        assert_eq!(quiet.orphan_learned_from("r9", 21_000), Vec::<String>::new());
        // Orphaned 1 s after its last advert, it ages by its interval from that advert.
        fresh.orphan_learned_from("r2", 1_000);
        assert_eq!(fresh.next_expiry_ms(3), Some(6_000));
        assert!(!fresh.get("r3").unwrap().is_stale(2_999, 3));
    }

    proptest::proptest! {
        /// The first expiry carried over inserts and removals is the one a pass over the
        /// entries finds, whichever entry changes and whether it was the first to expire.
        #[test]
        fn the_first_expiry_carried_over_changes_is_the_first(
            ops in proptest::collection::vec((0u8..6, 0u64..50, 1u32..4, proptest::bool::ANY), 1..60),
        ) {
            let mut v = View::new();
            for (origin, received, quiet, remove) in ops {
                let origin = format!("r{origin}");
                if remove {
                    v.remove(&origin);
                } else {
                    let mut a = advert(1, 1, 0, 1);
                    a.origin = origin;
                    a.quiet_intervals = quiet;
                    v.insert(Entry {
                        advert: a,
                        path_hops: 1,
                        held: None,
                        learned_from: "r9".into(),
                        received_ms: received * 100,
                        delta: None,
                        orphaned_ms: None,
                    });
                }
                let pass = v.iter().map(|e| e.expires_ms(3)).min();
                proptest::prop_assert_eq!(v.next_expiry_ms(3), pass);
            }
        }
    }

    #[test]
    fn held_hops() {
        let mut v = view_with(advert(1, 1, 0, 2));
        let mut e = v.get("r3").unwrap().clone();
        e.path_hops = 2;
        // A newer advert by more hops holds the fewer for one interval; by as many, nothing.
        assert_eq!(
            HeldHops::on_newer(&e, 3, 1000, 50),
            Some(HeldHops {
                hops: 2,
                until_ms: 1050
            })
        );
        assert_eq!(HeldHops::on_newer(&e, 2, 1000, 50), None);
        assert_eq!(HeldHops::on_newer(&e, 1, 1000, 50), None);
        e.path_hops = 3;
        e.held = Some(HeldHops {
            hops: 2,
            until_ms: 1050,
        });
        assert_eq!((e.hops_at(1049), e.hops_at(1050)), (2, 3));
        assert!(e.is_held(1049) && !e.is_held(1050));
        // Another newer advert by the longer path while held: it holds what the entry read.
        assert_eq!(
            HeldHops::on_newer(&e, 3, 1000, 60),
            Some(HeldHops {
                hops: 2,
                until_ms: 1060
            })
        );
        assert_eq!(HeldHops::on_newer(&e, 3, 1000, 1050), None, "no longer held");
        v.insert(e.clone());
        assert_eq!((v.held_count(1049), v.held_count(1050)), (1, 0));
        assert_eq!(v.get("r3").unwrap().to_pb(1049, 0, 3).hops, 2);
        // Its neighbor lost (an orphan), a shorter copy cannot come: nothing is held.
        v.orphan_learned_from("r2", 60);
        e = v.get("r3").unwrap().clone();
        e.path_hops = 2;
        assert_eq!(HeldHops::on_newer(&e, 3, 1000, 50), None);
    }

    #[test]
    fn latency_estimate() {
        let mut a = advert(1, 1, 1_000_000_000, 1);
        a.timestamp_unix_ns = 1_000_000_000;
        let v = view_with(a);
        // Received at 0 ms; now is 500 ms later and the wall clock reads 1.505 s: received at
        // 1.005 s, sampled at 1.000 s.
        let p = v.get("r3").unwrap().to_pb(500, 1_505_000_000, 3);
        assert_eq!(p.age_ms, 500);
        assert!((p.latency_ms - 5.0).abs() < 1e-9, "{}", p.latency_ms);
        assert!(!p.stale);
    }
}
