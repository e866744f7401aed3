//! The daemon's clocks: monotonic milliseconds since it started (what every state machine is
//! fed), and the wall clock for what leaves the router (advert timestamps, decision times).

use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// Monotonic time since the daemon started.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    origin: Instant,
}

impl Clock {
    pub fn start() -> Self {
        Clock { origin: Instant::now() }
    }

    /// Milliseconds since the start.
    pub fn now_ms(&self) -> u64 {
        self.origin.elapsed().as_millis() as u64
    }

    pub fn origin(&self) -> Instant {
        self.origin
    }

    /// The wall-clock time (ms since the epoch) of monotonic time `at_ms`.
    pub fn unix_ms_at(&self, at_ms: u64) -> i64 {
        unix_ns() / 1_000_000 - self.now_ms().saturating_sub(at_ms) as i64
    }
}

/// The wall clock, ns since the epoch.
pub fn unix_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64)
}
