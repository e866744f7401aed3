//! User-space link impairment (delay, jitter, loss) for links of the lab.
//!
//! The kernel of the lab host may lack `sch_netem`, so impairments are applied in user space
//! by a relay: the two ends of an impaired link are diverted (tc `mirred`) into
//! two veths `if_a`/`if_b` of a relay namespace, and [`run_relay`] copies every frame read on
//! one of them to the other one, after the impairment, in both directions.
//!
//! Per direction, a receiver thread stamps every frame with its departure instant
//! ([`DelayLine`]) and appends it to a bounded queue (drop-tail, see [`QUEUE_MAX_FRAMES`] and
//! [`QUEUE_MAX_BYTES`]); a sender thread waits until the departure of the queue head and sends
//! it. Without delay and jitter the receiver sends directly (loss still applies).
//!
//! Differences from netem:
//! * frames are never reordered: with jitter, a frame whose drawn departure is earlier than
//!   the previous frame's leaves right after it, so jitter also adds some delay on busy links
//!   (netem instead lets such a frame overtake earlier ones: it reorders);
//! * loss and delay are independent per direction: the two directions use different PRNG
//!   streams derived from [`Impairment::seed`], and a `loss_pct` of 50 loses half the frames
//!   *in each direction* (so about 75% of ping round trips fail);
//! * the queue limits are in frames and bytes of the super-frames carried by the veths (a
//!   GSO/TSO frame of 64 KiB counts as one frame).

use std::collections::VecDeque;
use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::thread::ScopedJoinHandle;
use std::time::{Duration, Instant};
use wuos_model::rng::SplitMix64;

use wuos_southbound::packet::{PacketError, PacketSocket, RECV_BUF_LEN};

/// Most frames queued in one direction; further frames are dropped (`dropped_queue`).
pub const QUEUE_MAX_FRAMES: usize = 16 * 1024;
/// Most bytes queued in one direction; further frames are dropped (`dropped_queue`).
/// 32 MiB carry 20 ms of ~13 Gbit/s.
pub const QUEUE_MAX_BYTES: usize = 32 << 20;
/// Largest accepted `delay + jitter`.
pub const MAX_DELAY: Duration = Duration::from_secs(10);

/// How often blocked threads look at the stop flag and at their interfaces.
const POLL: Duration = Duration::from_millis(100);
/// The sender sleeps until this long before a departure, then spins: sleeping wake-ups are
/// late by the timer slack (50 µs) plus scheduling latency.
const SPIN: Duration = Duration::from_micros(200);

/// Impairment of a link, applied independently in each direction.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Impairment {
    /// One-way delay added to every frame.
    pub delay: Duration,
    /// Frames are delayed by `delay` plus a uniform offset in `[-jitter, +jitter]` (never
    /// below zero, never reordered).
    pub jitter: Duration,
    /// Percentage (0–100) of frames lost, independently per frame and per direction.
    pub loss_pct: f64,
    /// Seed of the pseudo-random draws (loss, jitter): a relay is deterministic for a given
    /// seed and arrival sequence.
    pub seed: u64,
}

impl Impairment {
    /// True if the impairment changes nothing (no delay, jitter or loss).
    pub fn is_noop(&self) -> bool {
        self.delay.is_zero() && self.jitter.is_zero() && self.loss_pct == 0.0
    }

    /// Checks the values are usable: `loss_pct` in 0–100, `delay + jitter` at most
    /// [`MAX_DELAY`].
    pub fn validate(&self) -> Result<(), ImpairError> {
        if !(0.0..=100.0).contains(&self.loss_pct) {
            return Err(ImpairError::Invalid(format!(
                "the loss percentage {} is not between 0 and 100",
                self.loss_pct
            )));
        }
        if self.delay.saturating_add(self.jitter) > MAX_DELAY {
            return Err(ImpairError::Invalid(format!(
                "a delay of {:?} with a jitter of {:?} exceeds the maximum of {:?}",
                self.delay, self.jitter, MAX_DELAY
            )));
        }
        Ok(())
    }

    /// The same impairment with the seed of the reverse (B to A) direction of a relay.
    fn reverse_direction(&self) -> Impairment {
        Impairment {
            seed: SplitMix64::new(self.seed ^ 0x5157_4f53_5245_4c41).next_u64(),
            ..self.clone()
        }
    }
}

/// A running relay's impairment, changed while it runs ([`Tuning::set`], e.g. on SIGHUP): both
/// directions take the new values from their next frame, without a gap (a relay restarted for
/// a new delay would drop the link's frames while it starts).
#[derive(Debug, Default)]
pub struct Tuning {
    generation: AtomicU64,
    current: Mutex<Option<Impairment>>,
}

impl Tuning {
    /// The relay's impairment from now on (its seed is ignored: the random streams go on).
    pub fn set(&self, imp: Impairment) -> Result<(), ImpairError> {
        imp.validate()?;
        *self.current.lock().unwrap_or_else(|e| e.into_inner()) = Some(imp);
        self.generation.fetch_add(1, Ordering::Release);
        Ok(())
    }

    /// When the impairment changed since generation `seen`: the new one (`reverse`: with the
    /// reverse direction's seed, unused by retune) and the generation now.
    fn changed(&self, seen: u64) -> Option<(Impairment, u64)> {
        let g = self.generation.load(Ordering::Acquire);
        if g == seen {
            return None;
        }
        let imp = self.current.lock().unwrap_or_else(|e| e.into_inner()).clone()?;
        Some((imp, g))
    }
}

/// The pure, deterministic delay line of one direction: decides for each frame whether it is
/// dropped and when it leaves.
#[derive(Clone, Debug)]
pub struct DelayLine {
    delay_ns: u64,
    jitter_ns: u64,
    /// Loss probability in `[0, 1]`.
    loss: f64,
    rng: SplitMix64,
    last: Option<Instant>,
}

impl DelayLine {
    /// A delay line for `imp` (a `loss_pct` outside 0–100 is clamped).
    pub fn new(imp: &Impairment) -> Self {
        let ns = |d: Duration| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX / 4);
        let loss = if imp.loss_pct.is_nan() {
            0.0
        } else {
            imp.loss_pct.clamp(0.0, 100.0) / 100.0
        };
        DelayLine {
            delay_ns: ns(imp.delay).min(u64::MAX / 4),
            jitter_ns: ns(imp.jitter).min(u64::MAX / 4),
            loss,
            rng: SplitMix64::new(imp.seed),
            last: None,
        }
    }

    /// Takes `imp`'s delay, jitter and loss from the next frame on, keeping its random stream
    /// and the last departure (frames stay in order across the change).
    pub fn retune(&mut self, imp: &Impairment) {
        let fresh = DelayLine::new(imp);
        self.delay_ns = fresh.delay_ns;
        self.jitter_ns = fresh.jitter_ns;
        self.loss = fresh.loss;
    }

    /// True if frames leave as soon as they arrive (no delay, no jitter).
    pub fn is_immediate(&self) -> bool {
        self.delay_ns == 0 && self.jitter_ns == 0
    }

    /// Frame arriving at `now` (monotonic); returns `None` if lost, else the instant it must
    /// be sent.
    ///
    /// The departure is `now + delay + U[-jitter, +jitter]`, never before `now`. Frames are
    /// never reordered: a frame never leaves before the previous one (unlike netem, which
    /// lets a frame with a smaller drawn delay overtake earlier ones). Callers must pass
    /// non-decreasing `now`s.
    pub fn admit(&mut self, now: Instant) -> Option<Instant> {
        if self.loss > 0.0 && self.rng.next_f64() < self.loss {
            return None;
        }
        let mut delay = i128::from(self.delay_ns);
        if self.jitter_ns > 0 {
            let offset = self.rng.below(2 * self.jitter_ns + 1);
            delay += i128::from(offset) - i128::from(self.jitter_ns);
        }
        let delay = Duration::from_nanos(delay.max(0) as u64);
        let mut depart = now.checked_add(delay).unwrap_or(now);
        if let Some(last) = self.last
            && depart < last
        {
            depart = last;
        }
        self.last = Some(depart);
        Some(depart)
    }
}

/// Counters of a relay. Index 0 is the A-to-B direction (frames read on `if_a`, sent on
/// `if_b`), index 1 is B to A.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct RelayStats {
    /// Frames sent (GSO super-frames count as one).
    pub forwarded: [u64; 2],
    /// Frames dropped by the configured loss.
    pub dropped_loss: [u64; 2],
    /// Frames dropped because the direction's queue was full.
    pub dropped_queue: [u64; 2],
    /// Frames the kernel dropped because the relay did not read them fast enough (receive
    /// buffer of the relay's socket full).
    pub dropped_socket: [u64; 2],
    /// Frames the kernel refused to send (no buffer space, interface down, malformed).
    pub send_errors: [u64; 2],
    /// Frames read but unusable (bigger than the buffer, or with an offload the virtio
    /// header cannot express).
    pub rx_errors: [u64; 2],
}

/// Errors of the relay.
#[derive(Debug, thiserror::Error)]
pub enum ImpairError {
    #[error("Invalid impairment: {0}.")]
    Invalid(String),
    #[error("The relay interfaces must differ, both are {0}.")]
    SameInterface(String),
    #[error("Could not open network namespace {}: {source}", path.display())]
    OpenNetns {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Packet(#[from] PacketError),
    #[error("Could not start relay thread {name}: {source}")]
    Spawn {
        name: String,
        #[source]
        source: std::io::Error,
    },
    #[error("Relay thread {name} panicked.")]
    Panicked { name: String },
}

/// What [`run_relay`] relays: frames between `if_a` and `if_b` of namespace `netns`.
#[derive(Clone, Debug, PartialEq)]
pub struct RelaySpec {
    /// The relay namespace, e.g. `/run/netns/NAME`.
    pub netns: PathBuf,
    pub if_a: String,
    pub if_b: String,
    pub impairment: Impairment,
}

/// Runs both directions until `stop` is set, an interface disappears, or the namespace file
/// `spec.netns` is deleted (`ip netns del`), then returns `Ok` with the counters. Blocking;
/// reacts within about 100 ms.
///
/// The relay's sockets keep the namespace alive: after `ip netns del` its interfaces only
/// vanish once the relay has returned. Frames still queued when the relay stops are
/// discarded. Errors are returned for setup failures and unexpected socket errors.
pub fn run_relay(spec: &RelaySpec, stop: &AtomicBool) -> Result<RelayStats, ImpairError> {
    run_tunable_relay(spec, stop, &Tuning::default())
}

/// [`run_relay`] whose impairment `tuning` changes while it runs. A direction that started
/// without delay or jitter forwards at once and keeps doing so (a new loss applies; a new delay
/// needs a relay started with one).
pub fn run_tunable_relay(spec: &RelaySpec, stop: &AtomicBool, tuning: &Tuning) -> Result<RelayStats, ImpairError> {
    spec.impairment.validate()?;
    if spec.if_a == spec.if_b {
        return Err(ImpairError::SameInterface(spec.if_a.clone()));
    }
    let open_err = |source| ImpairError::OpenNetns {
        path: spec.netns.clone(),
        source,
    };
    let ns = File::open(&spec.netns).map_err(open_err)?;
    let ns_id = ns.metadata().map(|m| (m.dev(), m.ino())).map_err(open_err)?;
    let sock_a = PacketSocket::open(&ns, &spec.if_a)?;
    let sock_b = PacketSocket::open(&ns, &spec.if_b)?;
    drop(ns);
    sock_a.set_read_timeout(Some(POLL))?;
    sock_b.set_read_timeout(Some(POLL))?;

    let ctl = Control {
        stop,
        halt: AtomicBool::new(false),
    };
    let counters = [Counters::default(), Counters::default()];
    let queues = [Queue::default(), Queue::default()];
    let lines = [
        DelayLine::new(&spec.impairment),
        DelayLine::new(&spec.impairment.reverse_direction()),
    ];
    let dirs = [
        (&sock_a, &sock_b, "ab"), // read on A, send on B
        (&sock_b, &sock_a, "ba"),
    ];

    let result = std::thread::scope(|s| {
        let mut handles: Vec<(String, ScopedJoinHandle<'_, Result<(), ImpairError>>)> = Vec::new();
        let mut spawn_err = None;
        for (i, line) in lines.into_iter().enumerate() {
            let (rx, tx, tag) = dirs[i];
            let (ctl, c, q) = (&ctl, &counters[i], &queues[i]);
            let tune = Retune { tuning, seen: 0 };
            let mut bodies: Vec<(String, ThreadBody<'_>)> = Vec::new();
            if line.is_immediate() {
                bodies.push((
                    format!("relay-{tag}"),
                    Box::new(move || forward_loop(rx, tx, line, tune, c, ctl)),
                ));
            } else {
                bodies.push((
                    format!("relay-rx-{tag}"),
                    Box::new(move || receive_loop(rx, line, tune, q, c, ctl)),
                ));
                bodies.push((format!("relay-tx-{tag}"), Box::new(move || send_loop(tx, q, c, ctl))));
            }
            for (name, body) in bodies {
                let spawned = std::thread::Builder::new().name(name.clone()).spawn_scoped(s, move || {
                    let r = body();
                    if r.is_err() {
                        ctl.halt();
                    }
                    r
                });
                match spawned {
                    Ok(h) => handles.push((name, h)),
                    Err(source) => {
                        spawn_err.get_or_insert(ImpairError::Spawn { name, source });
                        ctl.halt();
                    }
                }
            }
        }

        // Supervise: notice the deletion of the namespace and threads that end early; read
        // the kernel's drop counters (32-bit, reset on read) before they can wrap.
        let mut last_stats = Instant::now();
        while !handles.iter().all(|(_, h)| h.is_finished()) {
            if ctl.running() && !same_file(&spec.netns, ns_id) {
                ctl.halt();
            }
            if handles.iter().any(|(_, h)| h.is_finished()) {
                ctl.halt();
            }
            if last_stats.elapsed() >= Duration::from_secs(1) {
                collect_socket_drops([&sock_a, &sock_b], &counters);
                last_stats = Instant::now();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        collect_socket_drops([&sock_a, &sock_b], &counters);
        let mut first_err = spawn_err;
        for (name, h) in handles {
            let r = h.join().unwrap_or(Err(ImpairError::Panicked { name }));
            if let Err(e) = r {
                first_err.get_or_insert(e);
            }
        }
        first_err.map_or(Ok(()), Err)
    });
    result.map(|()| RelayStats {
        forwarded: counters.each(|c| &c.forwarded),
        dropped_loss: counters.each(|c| &c.dropped_loss),
        dropped_queue: counters.each(|c| &c.dropped_queue),
        dropped_socket: counters.each(|c| &c.dropped_socket),
        send_errors: counters.each(|c| &c.send_errors),
        rx_errors: counters.each(|c| &c.rx_errors),
    })
}

/// The work of one relay thread.
type ThreadBody<'a> = Box<dyn FnOnce() -> Result<(), ImpairError> + Send + 'a>;

/// Adds the kernel's receive drops of each direction's receiving socket to its counters.
fn collect_socket_drops(rx: [&PacketSocket; 2], counters: &[Counters; 2]) {
    for (sock, c) in rx.into_iter().zip(counters) {
        if let Ok(st) = sock.take_statistics() {
            c.dropped_socket.fetch_add(st.dropped, Ordering::Relaxed);
        }
    }
}

/// Whether `path` still is the file identified by `id` (device, inode).
fn same_file(path: &Path, id: (u64, u64)) -> bool {
    std::fs::metadata(path).is_ok_and(|m| (m.dev(), m.ino()) == id)
}

/// Shared run state of the relay's threads.
struct Control<'a> {
    stop: &'a AtomicBool,
    /// Set when the relay ends on its own (interface or namespace gone, error).
    halt: AtomicBool,
}

impl Control<'_> {
    fn running(&self) -> bool {
        !self.stop.load(Ordering::Relaxed) && !self.halt.load(Ordering::Relaxed)
    }

    fn halt(&self) {
        self.halt.store(true, Ordering::Relaxed);
    }
}

/// Counters of one direction.
#[derive(Default)]
struct Counters {
    forwarded: AtomicU64,
    dropped_loss: AtomicU64,
    dropped_queue: AtomicU64,
    dropped_socket: AtomicU64,
    send_errors: AtomicU64,
    rx_errors: AtomicU64,
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

trait EachDirection {
    fn each(&self, f: impl Fn(&Counters) -> &AtomicU64) -> [u64; 2];
}

impl EachDirection for [Counters; 2] {
    fn each(&self, f: impl Fn(&Counters) -> &AtomicU64) -> [u64; 2] {
        [f(&self[0]).load(Ordering::Relaxed), f(&self[1]).load(Ordering::Relaxed)]
    }
}

/// A frame waiting for its departure.
struct Frame {
    depart: Instant,
    data: Vec<u8>,
}

/// The bounded queue of one direction (departures are non-decreasing).
#[derive(Default)]
struct Queue {
    state: Mutex<QueueState>,
    /// Signalled when the queue becomes non-empty.
    nonempty: Condvar,
}

#[derive(Default)]
struct QueueState {
    frames: VecDeque<Frame>,
    bytes: usize,
}

impl Queue {
    fn lock(&self) -> MutexGuard<'_, QueueState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Appends a frame; false (frame dropped) if the queue is full.
    fn push(&self, depart: Instant, data: &[u8]) -> bool {
        let mut st = self.lock();
        if st.frames.len() >= QUEUE_MAX_FRAMES || st.bytes + data.len() > QUEUE_MAX_BYTES {
            return false;
        }
        let was_empty = st.frames.is_empty();
        st.bytes += data.len();
        st.frames.push_back(Frame {
            depart,
            data: data.to_vec(),
        });
        drop(st);
        // The sender only waits without deadline (well, for POLL) when the queue is empty;
        // otherwise it sleeps until the head's departure, which a new frame cannot precede.
        if was_empty {
            self.nonempty.notify_one();
        }
        true
    }
}

/// Classifies a receive error; `Err` for errors that end the relay.
fn on_recv_error(e: PacketError, rx: &PacketSocket, c: &Counters, ctl: &Control<'_>) -> Result<(), ImpairError> {
    match e {
        PacketError::Timeout { .. } | PacketError::InterfaceDown { .. } | PacketError::InterfaceGone { .. } => {
            // Down interfaces deliver nothing until they are up again: keep waiting, unless
            // the interface is gone for good.
            if !rx.interface_exists() {
                ctl.halt();
            }
            Ok(())
        }
        PacketError::Truncated { .. } | PacketError::UnsupportedOffload { .. } => {
            bump(&c.rx_errors);
            Ok(())
        }
        e => Err(e.into()),
    }
}

/// Sends one frame and counts the outcome; false if the interface is gone.
fn send_counted(tx: &PacketSocket, data: &[u8], c: &Counters, ctl: &Control<'_>) -> bool {
    match tx.send(data) {
        Ok(()) => bump(&c.forwarded),
        Err(PacketError::InterfaceGone { .. }) => {
            ctl.halt();
            return false;
        }
        // ENOBUFS, down interface, malformed frame...: the frame is lost, like on a wire.
        Err(_) => bump(&c.send_errors),
    }
    true
}

/// A direction's view of its relay's [`Tuning`].
struct Retune<'a> {
    tuning: &'a Tuning,
    seen: u64,
}

impl Retune<'_> {
    /// Applies a change of the relay's impairment to `line`, if there was one.
    fn apply(&mut self, line: &mut DelayLine) {
        if let Some((imp, g)) = self.tuning.changed(self.seen) {
            line.retune(&imp);
            self.seen = g;
        }
    }
}

/// Receive-and-send loop of a direction without delay.
fn forward_loop(
    rx: &PacketSocket,
    tx: &PacketSocket,
    mut line: DelayLine,
    mut tune: Retune<'_>,
    c: &Counters,
    ctl: &Control<'_>,
) -> Result<(), ImpairError> {
    let mut buf = vec![0u8; RECV_BUF_LEN];
    while ctl.running() {
        let n = match rx.recv(&mut buf) {
            Ok(n) => n,
            Err(e) => {
                on_recv_error(e, rx, c, ctl)?;
                continue;
            }
        };
        tune.apply(&mut line);
        if line.admit(Instant::now()).is_none() {
            bump(&c.dropped_loss);
            continue;
        }
        if !send_counted(tx, &buf[..n], c, ctl) {
            break;
        }
    }
    Ok(())
}

/// Receiver of a delayed direction: stamps frames and queues them.
fn receive_loop(
    rx: &PacketSocket,
    mut line: DelayLine,
    mut tune: Retune<'_>,
    q: &Queue,
    c: &Counters,
    ctl: &Control<'_>,
) -> Result<(), ImpairError> {
    let mut buf = vec![0u8; RECV_BUF_LEN];
    while ctl.running() {
        let n = match rx.recv(&mut buf) {
            Ok(n) => n,
            Err(e) => {
                on_recv_error(e, rx, c, ctl)?;
                continue;
            }
        };
        tune.apply(&mut line);
        match line.admit(Instant::now()) {
            None => bump(&c.dropped_loss),
            Some(depart) => {
                if !q.push(depart, &buf[..n]) {
                    bump(&c.dropped_queue);
                }
            }
        }
    }
    Ok(())
}

/// Sender of a delayed direction: sends each queued frame at its departure instant.
fn send_loop(tx: &PacketSocket, q: &Queue, c: &Counters, ctl: &Control<'_>) -> Result<(), ImpairError> {
    let mut due: Vec<Frame> = Vec::new();
    'run: while ctl.running() {
        let mut st = q.lock();
        // Wait until the head is due.
        loop {
            if !ctl.running() {
                break 'run;
            }
            let Some(head) = st.frames.front() else {
                st = q.nonempty.wait_timeout(st, POLL).unwrap_or_else(|e| e.into_inner()).0;
                continue;
            };
            let depart = head.depart;
            let now = Instant::now();
            if depart <= now {
                break;
            }
            let left = depart - now;
            if left > SPIN {
                // Nobody signals this wait: new frames leave after the head.
                st = q
                    .nonempty
                    .wait_timeout(st, (left - SPIN).min(POLL))
                    .unwrap_or_else(|e| e.into_inner())
                    .0;
            } else {
                drop(st);
                while Instant::now() < depart {
                    std::hint::spin_loop();
                }
                st = q.lock();
            }
        }
        // Take every due frame, send them outside the lock.
        let now = Instant::now();
        while st.frames.front().is_some_and(|f| f.depart <= now) {
            if let Some(f) = st.frames.pop_front() {
                st.bytes -= f.data.len();
                due.push(f);
            }
        }
        drop(st);
        for f in due.drain(..) {
            if !send_counted(tx, &f.data, c, ctl) {
                break 'run;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn imp(delay_ms: u64, jitter_ms: u64, loss_pct: f64, seed: u64) -> Impairment {
        Impairment {
            delay: Duration::from_millis(delay_ms),
            jitter: Duration::from_millis(jitter_ms),
            loss_pct,
            seed,
        }
    }

    #[test]
    fn no_impairment_leaves_immediately() {
        let mut l = DelayLine::new(&Impairment::default());
        assert!(l.is_immediate());
        let t = Instant::now();
        for i in 0..100 {
            let now = t + Duration::from_micros(i);
            assert_eq!(l.admit(now), Some(now));
        }
    }

    #[test]
    fn fixed_delay() {
        let mut l = DelayLine::new(&imp(20, 0, 0.0, 1));
        assert!(!l.is_immediate());
        let t = Instant::now();
        for i in 0..100 {
            let now = t + Duration::from_millis(i);
            assert_eq!(l.admit(now), Some(now + Duration::from_millis(20)));
        }
    }

    #[test]
    fn a_retuned_line_takes_the_new_delay_and_never_reorders() {
        let mut l = DelayLine::new(&imp(50, 0, 0.0, 1));
        let t = Instant::now();
        assert_eq!(l.admit(t), Some(t + Duration::from_millis(50)));
        let tuning = Tuning::default();
        let mut tune = Retune {
            tuning: &tuning,
            seen: 0,
        };
        tune.apply(&mut l);
        assert_eq!(l.admit(t), Some(t + Duration::from_millis(50)), "nothing set yet");
        tuning.set(imp(5, 0, 0.0, 9)).unwrap();
        tune.apply(&mut l);
        // Shorter now, but not before the frame admitted with the old delay.
        assert_eq!(
            l.admit(t + Duration::from_millis(1)),
            Some(t + Duration::from_millis(50))
        );
        let later = t + Duration::from_millis(100);
        assert_eq!(l.admit(later), Some(later + Duration::from_millis(5)));
        tuning.set(imp(5, 0, 100.0, 9)).unwrap();
        tune.apply(&mut l);
        assert_eq!(l.admit(later), None, "100 % loss");
        assert!(tuning.set(imp(5, 0, 101.0, 9)).is_err(), "a bad value is refused");
    }

    #[test]
    fn jitter_stays_in_bounds_and_never_reorders() {
        let mut l = DelayLine::new(&imp(10, 5, 0.0, 42));
        let t = Instant::now();
        let mut prev = t;
        let mut clamped = 0;
        for i in 0..20_000u64 {
            // Arrivals every 100 µs: much closer than the jitter, so clamping happens.
            let now = t + Duration::from_micros(100 * i);
            let d = l.admit(now).unwrap();
            assert!(d >= prev, "reordered at frame {i}");
            let delay = d - now;
            if d == prev {
                clamped += 1;
            }
            prev = d;
            // Clamping only ever lengthens a delay, up to the largest drawn one.
            assert!(
                delay >= Duration::from_millis(5) && delay <= Duration::from_millis(15),
                "{delay:?}"
            );
        }
        assert!(clamped > 0);
        // With sparse arrivals (1 s apart) every delay is drawn freely in [5, 15] ms.
        let mut l = DelayLine::new(&imp(10, 5, 0.0, 42));
        let (mut min, mut max, mut sum) = (Duration::MAX, Duration::ZERO, Duration::ZERO);
        let n = 20_000u32;
        for i in 0..n {
            let now = t + Duration::from_secs(u64::from(i));
            let delay = l.admit(now).unwrap() - now;
            assert!(delay >= Duration::from_millis(5) && delay <= Duration::from_millis(15));
            min = min.min(delay);
            max = max.max(delay);
            sum += delay;
        }
        assert!(min < Duration::from_micros(5100), "{min:?}");
        assert!(max > Duration::from_micros(14900), "{max:?}");
        let mean = sum / n;
        assert!(
            mean > Duration::from_micros(9900) && mean < Duration::from_micros(10100),
            "{mean:?}"
        );
    }

    #[test]
    fn jitter_larger_than_delay_is_clamped_at_zero() {
        let mut l = DelayLine::new(&imp(1, 3, 0.0, 9));
        let t = Instant::now();
        let mut zero = 0;
        for i in 0..10_000u64 {
            let now = t + Duration::from_secs(i);
            let d = l.admit(now).unwrap();
            assert!(d >= now && d <= now + Duration::from_millis(4));
            if d == now {
                zero += 1;
            }
        }
        // P(drawn delay <= 0) = (2 ms + 1 ns) / (6 ms + 1 ns), about a third.
        assert!((2_800..3_900).contains(&zero), "{zero}");
    }

    #[test]
    fn loss_rate_and_determinism() {
        let run = |seed| {
            let mut l = DelayLine::new(&imp(0, 0, 30.0, seed));
            let t = Instant::now();
            (0..100_000).map(|_| l.admit(t).is_some()).collect::<Vec<_>>()
        };
        let a = run(5);
        let lost = a.iter().filter(|kept| !**kept).count();
        assert!((29_000..31_000).contains(&lost), "{lost}");
        assert_eq!(a, run(5));
        assert_ne!(a, run(6));

        let t = Instant::now();
        let mut all = DelayLine::new(&imp(0, 0, 100.0, 1));
        assert!((0..1000).all(|_| all.admit(t).is_none()));
        let mut none = DelayLine::new(&imp(0, 0, 0.0, 1));
        assert!((0..1000).all(|_| none.admit(t).is_some()));
    }

    #[test]
    fn directions_use_different_streams() {
        let i = imp(0, 0, 50.0, 77);
        let r = i.reverse_direction();
        assert_ne!(r.seed, i.seed);
        assert_eq!(Impairment { seed: i.seed, ..r }, i);
        let t = Instant::now();
        let (mut a, mut b) = (DelayLine::new(&i), DelayLine::new(&r));
        let same = (0..1000)
            .filter(|_| a.admit(t).is_some() == b.admit(t).is_some())
            .count();
        assert!((400..600).contains(&same), "{same}");
    }

    #[test]
    fn validation() {
        assert!(imp(20, 5, 0.0, 0).validate().is_ok());
        assert!(imp(0, 0, 100.0, 0).validate().is_ok());
        for bad in [-1.0, 100.5, f64::NAN] {
            let e = imp(0, 0, bad, 0).validate().unwrap_err();
            assert!(
                e.to_string().starts_with("Invalid impairment: the loss percentage"),
                "{e}"
            );
        }
        assert!(imp(9_000, 2_000, 0.0, 0).validate().is_err());
        assert!(Impairment::default().is_noop());
        assert!(!imp(0, 0, 1.0, 0).is_noop());
    }

    #[test]
    fn impairment_serde_round_trip() {
        let i = imp(20, 2, 12.5, 99);
        let json = serde_json::to_string(&i).unwrap();
        assert_eq!(serde_json::from_str::<Impairment>(&json).unwrap(), i);
        let stats = RelayStats {
            forwarded: [3, 4],
            ..RelayStats::default()
        };
        let v = serde_json::to_value(&stats).unwrap();
        assert_eq!(v["forwarded"], serde_json::json!([3, 4]));
    }

    #[test]
    fn queue_is_bounded() {
        let q = Queue::default();
        let t = Instant::now();
        let big = vec![0u8; QUEUE_MAX_BYTES / 4];
        for _ in 0..4 {
            assert!(q.push(t, &big));
        }
        assert!(!q.push(t, &[0u8; 1]));
        let q = Queue::default();
        for _ in 0..QUEUE_MAX_FRAMES {
            assert!(q.push(t, &[0u8; 1]));
        }
        assert!(!q.push(t, &[0u8; 1]));
        assert_eq!(q.lock().bytes, QUEUE_MAX_FRAMES);
    }

    #[test]
    fn relay_rejects_bad_specs_before_touching_the_system() {
        let stop = AtomicBool::new(false);
        let spec = |a: &str, b: &str, loss| RelaySpec {
            netns: "/nonexistent/netns".into(),
            if_a: a.into(),
            if_b: b.into(),
            impairment: imp(0, 0, loss, 0),
        };
        assert!(matches!(
            run_relay(&spec("ra", "rb", 101.0), &stop),
            Err(ImpairError::Invalid(_))
        ));
        assert!(matches!(
            run_relay(&spec("ra", "ra", 0.0), &stop),
            Err(ImpairError::SameInterface(_))
        ));
        let e = run_relay(&spec("ra", "rb", 0.0), &stop).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("Could not open network namespace /nonexistent/netns: "),
            "{e}"
        );
    }
}
