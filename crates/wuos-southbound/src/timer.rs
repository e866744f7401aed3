//! A one-shot timer that wakes the runtime once, on time.
//!
//! tokio's timer wheel keeps a deadline more than 64 ms away in a coarse slot and wakes the
//! runtime at the slot's start to move it to a finer one, then again at the deadline: two
//! wake-ups for one timer. At 1,000 daemons on two cores a wake-up costs more than the work it
//! does (docs/benchmarks.md, "The floor"), so wuosd's protocol task's ticks, about one a second,
//! use a `timerfd` on the runtime's reactor instead: the kernel wakes us once, at the deadline.
#![allow(unsafe_code)]
#![warn(clippy::undocumented_unsafe_blocks)]

use std::io;
use std::time::Duration;

use nix::sys::time::TimeSpec;
use nix::sys::timerfd::{ClockId, Expiration, TimerFd, TimerFlags, TimerSetTimeFlags};
use tokio::io::unix::AsyncFd;
use tokio::time::Instant;

/// What the reactor watches: the timer's fd.
struct Fd(TimerFd);

impl std::os::fd::AsRawFd for Fd {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        use std::os::fd::AsFd;
        self.0.as_fd().as_raw_fd()
    }
}

/// A re-armable one-shot timer (see the module documentation).
pub struct Precise {
    fd: AsyncFd<Fd>,
    /// The deadline it is armed for, if any (not re-armed for the same one).
    armed: Option<Instant>,
}

impl Precise {
    /// A disarmed timer on the monotonic clock (the clock of tokio's `Instant`). Needs a runtime
    /// with I/O enabled.
    pub fn new() -> io::Result<Self> {
        let t = TimerFd::new(
            ClockId::CLOCK_MONOTONIC,
            TimerFlags::TFD_NONBLOCK | TimerFlags::TFD_CLOEXEC,
        )?;
        // SAFETY: the fd is the TimerFd's own, open until the TimerFd drops, which it does only
        // with the AsyncFd that owns it; `Fd::as_raw_fd` always returns that one fd.
        let fd = unsafe { AsyncFd::register_with_interest(Fd(t), tokio::io::Interest::READABLE) }
            .map_err(io::Error::from)?;
        Ok(Precise { fd, armed: None })
    }

    /// Completes at `at` (at once when it has passed). Cancel-safe: dropped before then, the
    /// timer stays armed, and the next call for another deadline re-arms it.
    pub async fn sleep_until(&mut self, at: Instant) -> io::Result<()> {
        if self.armed != Some(at) {
            let now = Instant::now();
            if at <= now {
                self.fd.get_ref().0.unset()?;
                self.armed = None;
                return Ok(());
            }
            // Relative to now: a 0 would disarm it, so at least 1 µs.
            let wait = (at - now).max(Duration::from_micros(1));
            self.fd.get_ref().0.set(
                Expiration::OneShot(TimeSpec::from_duration(wait)),
                TimerSetTimeFlags::empty(),
            )?;
            self.armed = Some(at);
        }
        loop {
            let mut ready = self.fd.readable().await?;
            // Reading takes the expiration; with none (a readiness left from an expiration a
            // re-arming wiped out) it would block: wait again.
            match ready.try_io(|fd| fd.get_ref().0.wait().map_err(io::Error::from)) {
                Ok(r) => {
                    self.armed = None;
                    return r;
                }
                Err(_would_block) => continue,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn it_completes_at_its_deadline_and_can_be_re_armed() {
        let mut t = Precise::new().unwrap();
        let start = Instant::now();
        t.sleep_until(start + Duration::from_millis(30)).await.unwrap();
        assert!(start.elapsed() >= Duration::from_millis(30), "{:?}", start.elapsed());
        // Dropped before its deadline, then re-armed for an earlier one: the earlier one wins.
        let far = Instant::now() + Duration::from_secs(3600);
        assert!(
            tokio::time::timeout(Duration::from_millis(20), t.sleep_until(far))
                .await
                .is_err()
        );
        let near = Instant::now() + Duration::from_millis(10);
        tokio::time::timeout(Duration::from_secs(5), t.sleep_until(near))
            .await
            .expect("re-armed for 10 ms, it must not wait for the hour")
            .unwrap();
        assert!(Instant::now() >= near);
        // A deadline that has passed completes at once.
        t.sleep_until(start).await.unwrap();
    }
}
