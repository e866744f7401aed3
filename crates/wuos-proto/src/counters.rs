//! What one router's protocol instance has done, counted since it started: for Prometheus and
//! for the admin API's status. Bytes on the wire are counted by the daemon, not here.

use std::collections::BTreeMap;

use crate::pb;
use crate::validate::ValidateError;

/// Monotonic event counters of an [`Instance`](crate::instance::Instance).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Hellos we sent.
    pub hellos_sent: u64,
    /// Valid hellos we received from configured neighbors.
    pub hellos_received: u64,
    /// Our hellos that were answered with a valid reply.
    pub hellos_answered: u64,
    /// Our hellos that failed (timeout, refused).
    pub hellos_failed: u64,
    /// Flood requests we sent.
    pub floods_sent: u64,
    /// Flood requests we accepted for processing (header and limits valid).
    pub floods_received: u64,
    /// Samples turned into our own adverts.
    pub adverts_originated: u64,
    /// Samples that could not be turned into a valid advert (dropped).
    pub samples_rejected: u64,
    /// Received adverts stored because they were new or newer.
    pub adverts_accepted: u64,
    /// Received adverts stored because they came by a shorter path.
    pub adverts_shorter: u64,
    /// Received copies of the stored advert, by a path no shorter (dropped).
    pub adverts_duplicate: u64,
    /// Received adverts older than the stored one (dropped).
    pub adverts_older: u64,
    /// Our own adverts received back from a neighbor (dropped).
    pub adverts_own: u64,
    /// Adverts of new origins dropped because the view is full.
    pub adverts_view_full: u64,
    /// Advert copies sent, our own included.
    pub adverts_sent: u64,
    /// Advert copies sent that were other routers' (forwarded or synchronised).
    pub adverts_forwarded: u64,
    /// Withdrawals sent, forwarded ones included.
    pub withdrawals_sent: u64,
    /// Received withdrawals that removed an entry.
    pub withdrawals_applied: u64,
    /// Received withdrawals that matched nothing (dropped).
    pub withdrawals_ignored: u64,
    /// Neighbor transitions to up (restarts included).
    pub neighbor_up: u64,
    /// Neighbor transitions to down (restarts included).
    pub neighbor_down: u64,
    /// Origins added to the view.
    pub view_added: u64,
    /// Origins removed from the view, for any reason.
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
    pub fn values(&self) -> [(&'static str, u64); 23] {
        [
            ("hellos_sent", self.hellos_sent),
            ("hellos_received", self.hellos_received),
            ("hellos_answered", self.hellos_answered),
            ("hellos_failed", self.hellos_failed),
            ("floods_sent", self.floods_sent),
            ("floods_received", self.floods_received),
            ("adverts_originated", self.adverts_originated),
            ("samples_rejected", self.samples_rejected),
            ("adverts_accepted", self.adverts_accepted),
            ("adverts_shorter", self.adverts_shorter),
            ("adverts_duplicate", self.adverts_duplicate),
            ("adverts_older", self.adverts_older),
            ("adverts_own", self.adverts_own),
            ("adverts_view_full", self.adverts_view_full),
            ("adverts_sent", self.adverts_sent),
            ("adverts_forwarded", self.adverts_forwarded),
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
        c.reject(&ValidateError::Version { version: 2 << 16 });
        c.reject(&ValidateError::Version { version: 3 << 16 });
        c.reject(&ValidateError::UnknownNeighbor { sender: "r2".into() });
        assert_eq!(c.rejected_total(), 3);
        assert_eq!(c.rejected["version"], 2);
        let names: Vec<_> = c.to_pb().into_iter().map(|c| (c.name, c.value)).collect();
        assert_eq!(names.len(), 25);
        assert_eq!(names[0], ("hellos_sent".to_string(), 0));
        assert_eq!(names[23], ("rejected.unknown_neighbor".to_string(), 1));
        assert_eq!(names[24], ("rejected.version".to_string(), 2));
    }
}
