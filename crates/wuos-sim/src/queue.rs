//! The event queue: a binary heap ordered by (time, sequence), so that events due at the same
//! time run in the order they were scheduled — the simulation is deterministic.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

struct Scheduled<E> {
    at_us: u64,
    seq: u64,
    event: E,
}

impl<E> PartialEq for Scheduled<E> {
    fn eq(&self, other: &Self) -> bool {
        (self.at_us, self.seq) == (other.at_us, other.seq)
    }
}

impl<E> Eq for Scheduled<E> {}

impl<E> PartialOrd for Scheduled<E> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl<E> Ord for Scheduled<E> {
    /// Reversed: the heap's greatest is the earliest.
    fn cmp(&self, other: &Self) -> Ordering {
        (other.at_us, other.seq).cmp(&(self.at_us, self.seq))
    }
}

/// Events by due time (µs), ties in scheduling order.
pub struct EventQueue<E> {
    heap: BinaryHeap<Scheduled<E>>,
    seq: u64,
}

impl<E> Default for EventQueue<E> {
    fn default() -> Self {
        EventQueue {
            heap: BinaryHeap::new(),
            seq: 0,
        }
    }
}

impl<E> EventQueue<E> {
    /// `event` at `at_us`.
    pub fn push(&mut self, at_us: u64, event: E) {
        self.seq += 1;
        self.heap.push(Scheduled {
            at_us,
            seq: self.seq,
            event,
        });
    }

    /// The earliest event, if it is due at or before `until_us`.
    pub fn pop_until(&mut self, until_us: u64) -> Option<(u64, E)> {
        if self.heap.peek()?.at_us > until_us {
            return None;
        }
        self.heap.pop().map(|s| (s.at_us, s.event))
    }

    /// Events waiting.
    pub fn len(&self) -> usize {
        self.heap.len()
    }

    /// Whether none is waiting.
    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn earliest_first_then_in_scheduling_order() {
        let mut q = EventQueue::default();
        q.push(20, "c");
        q.push(10, "a");
        q.push(20, "d");
        q.push(10, "b");
        q.push(30, "e");
        let mut out = Vec::new();
        while let Some((t, e)) = q.pop_until(20) {
            out.push((t, e));
        }
        assert_eq!(out, [(10, "a"), (10, "b"), (20, "c"), (20, "d")]);
        assert_eq!(q.len(), 1);
        assert_eq!(q.pop_until(u64::MAX), Some((30, "e")));
        assert!(q.is_empty());
    }
}
