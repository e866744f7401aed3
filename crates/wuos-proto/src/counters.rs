//! What one router's protocol instance has done, counted since it started: for Prometheus and
//! for the admin API's status. Bytes on the wire are counted by the daemon, not here.

use std::collections::BTreeMap;

use crate::pb;
use crate::validate::ValidateError;

/// Monotonic event counters of an [`Instance`](crate::instance::Instance).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Hellos sent (one per link opened).
    pub hellos_sent: u64,
    /// Hellos received.
    pub hellos_received: u64,
    /// Frames sent.
    pub frames_sent: u64,
    /// Frames received (valid as a whole).
    pub frames_received: u64,
    /// Empty frames sent so that a neighbor hears us.
    pub keepalives_sent: u64,
    /// Links to neighbors opened.
    pub links_opened: u64,
    /// Links closed (by either side, or declared dead).
    pub links_closed: u64,
    /// Own adverts made from samples.
    pub adverts_originated: u64,
    /// Samples that did not make a valid advert.
    pub samples_rejected: u64,
    /// Samples that said nothing new and were not sent (quiet adverts).
    pub samples_quiet: u64,
    /// Adverts (whole or rebuilt from a delta) new or newer than the view's.
    pub adverts_accepted: u64,
    /// The same advert come by a shorter path.
    pub adverts_shorter: u64,
    /// The same advert by another path, taken by an orphan ([`Verdict::Rerouted`](crate::view::Verdict::Rerouted)).
    pub adverts_rerouted: u64,
    /// Duplicates.
    pub adverts_duplicate: u64,
    /// Older than the view's.
    pub adverts_older: u64,
    /// Our own adverts come back.
    pub adverts_own: u64,
    /// New origins dropped because the view is full.
    pub adverts_view_full: u64,
    /// Whole adverts sent (own and forwarded).
    pub adverts_sent: u64,
    /// Adverts sent as deltas (own and forwarded).
    pub deltas_sent: u64,
    /// Other origins' adverts sent, whole or as deltas.
    pub adverts_forwarded: u64,
    /// Flushes of what was queued at a forwarded advert's deadline, before our next sample.
    pub forward_deadlines: u64,
    /// Adverts due to a neighbor not sent because it already held them.
    pub adverts_suppressed: u64,
    /// Deltas received.
    pub deltas_received: u64,
    /// Deltas whose base we did not hold (the whole advert was asked for).
    pub deltas_unmatched: u64,
    /// Origins whose whole advert we asked a neighbor for (a delta we could not apply, or an
    /// orphan: [`orphans_asked`](Self::orphans_asked)).
    pub need_full_sent: u64,
    /// Orphans (entries whose neighbor was lost) asked of the other up neighbors, one per origin.
    pub orphans_asked: u64,
    /// Withdrawals sent.
    pub withdrawals_sent: u64,
    /// Withdrawals that removed an entry.
    pub withdrawals_applied: u64,
    /// Withdrawals that removed nothing.
    pub withdrawals_ignored: u64,
    /// Neighbors come up.
    pub neighbor_up: u64,
    /// Neighbors gone down.
    pub neighbor_down: u64,
    /// Origins added to the view.
    pub view_added: u64,
    /// Origins removed from the view.
    pub view_withdrawn: u64,
    /// Rejected messages and items, by [`ValidateError::reason`].
    pub rejected: BTreeMap<&'static str, u64>,
}

impl Counters {
    /// Counts a rejection.
    pub fn reject(&mut self, e: &ValidateError) {
        *self.rejected.entry(e.reason()).or_default() += 1;
    }

    /// Rejections of all reasons.
    pub fn rejected_total(&self) -> u64 {
        self.rejected.values().sum()
    }

    /// Every counter but [`rejected`](Self::rejected), by name, in a fixed order.
    pub fn values(&self) -> [(&'static str, u64); 33] {
        [
            ("hellos_sent", self.hellos_sent),
            ("hellos_received", self.hellos_received),
            ("frames_sent", self.frames_sent),
            ("frames_received", self.frames_received),
            ("keepalives_sent", self.keepalives_sent),
            ("links_opened", self.links_opened),
            ("links_closed", self.links_closed),
            ("adverts_originated", self.adverts_originated),
            ("samples_rejected", self.samples_rejected),
            ("samples_quiet", self.samples_quiet),
            ("adverts_accepted", self.adverts_accepted),
            ("adverts_shorter", self.adverts_shorter),
            ("adverts_rerouted", self.adverts_rerouted),
            ("adverts_duplicate", self.adverts_duplicate),
            ("adverts_older", self.adverts_older),
            ("adverts_own", self.adverts_own),
            ("adverts_view_full", self.adverts_view_full),
            ("adverts_sent", self.adverts_sent),
            ("deltas_sent", self.deltas_sent),
            ("adverts_forwarded", self.adverts_forwarded),
            ("forward_deadlines", self.forward_deadlines),
            ("adverts_suppressed", self.adverts_suppressed),
            ("deltas_received", self.deltas_received),
            ("deltas_unmatched", self.deltas_unmatched),
            ("need_full_sent", self.need_full_sent),
            ("orphans_asked", self.orphans_asked),
            ("withdrawals_sent", self.withdrawals_sent),
            ("withdrawals_applied", self.withdrawals_applied),
            ("withdrawals_ignored", self.withdrawals_ignored),
            ("neighbor_up", self.neighbor_up),
            ("neighbor_down", self.neighbor_down),
            ("view_added", self.view_added),
            ("view_withdrawn", self.view_withdrawn),
        ]
    }

    /// All counters for the admin API; rejections are named `rejected.REASON`.
    pub fn to_pb(&self) -> Vec<pb::Counter> {
        let plain = self.values().into_iter().map(|(name, value)| pb::Counter {
            name: name.to_owned(),
            value,
        });
        let rejected = self.rejected.iter().map(|(reason, value)| pb::Counter {
            name: format!("rejected.{reason}"),
            value: *value,
        });
        plain.chain(rejected).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejections_are_counted_by_reason() {
        let mut c = Counters::default();
        c.reject(&ValidateError::Version { version: 1 << 16 });
        c.reject(&ValidateError::Version { version: 3 << 16 });
        c.reject(&ValidateError::UnknownNeighbor { sender: "r2".into() });
        assert_eq!(c.rejected_total(), 3);
        assert_eq!(c.rejected["version"], 2);
        let names: Vec<_> = c.to_pb().into_iter().map(|c| (c.name, c.value)).collect();
        assert_eq!(names.len(), 35);
        assert_eq!(names[0], ("hellos_sent".to_string(), 0));
        assert_eq!(names[33], ("rejected.unknown_neighbor".to_string(), 1));
        assert_eq!(names[34], ("rejected.version".to_string(), 2));
    }
}
