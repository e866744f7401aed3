//! Links watched by ICMP echo (`link_dead_interval`): the protocol task probes each neighbor that
//! has a link once per sample, and the neighbor's kernel answers
//! ([`wuos_southbound::echo`]). Neither daemon wakes for it — the probes leave while we are awake
//! for the sample anyway, and their replies wait in the socket until the next one — so hellos can
//! be ten intervals apart, there only to catch a daemon that hangs while its kernel still
//! answers.
//!
//! ```text
//!  sample k:   drain replies ─▶ a reply from N: N was alive at sample k-1
//!              any N silent for link_dead_interval (no reply, no frame) ─▶ its link is closed
//!              probe every N with a link that sent no frame since sample k-1: 1 request,
//!              or 5 when the last went unanswered
//! ```
//!
//! A link counts as silent only once its neighbor has answered an echo: a neighbor behind a
//! firewall that drops ICMP, or a router of an older version that does not probe, is watched by
//! hellos alone. A lost probe is not a lost link: the link dies only when every probe of
//! `link_dead_interval` went unanswered, and a frame counts as an answer. At a 1-s interval and
//! 3 s that is a probe and the 5 sent after it, 6 round trips lost in a row: with independent
//! losses of 10 % each way, one chance in 21,000 per second (a link lost about every 6 hours),
//! with 20 % one in 460 (every 8 minutes; hellos over TCP, which retransmits, ride that out).

use std::collections::{HashMap, HashSet};
use std::io;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use tracing::{debug, warn};

/// Probes after an unanswered one.
const RETRY_PROBES: usize = 5;

/// What sends the probes and collects the replies.
pub trait Prober: Send + 'static {
    fn send(&mut self, to: Ipv4Addr) -> io::Result<()>;
    /// The addresses that answered since the last call.
    fn drain(&mut self) -> io::Result<Vec<Ipv4Addr>>;
}

impl Prober for wuos_southbound::echo::Echo {
    fn send(&mut self, to: Ipv4Addr) -> io::Result<()> {
        wuos_southbound::echo::Echo::send(self, to)
    }

    fn drain(&mut self) -> io::Result<Vec<Ipv4Addr>> {
        wuos_southbound::echo::Echo::drain(self)
    }
}

struct Link {
    address: Ipv4Addr,
    /// The last moment the neighbor was known alive: a frame, or the probe it answered.
    heard: Instant,
    /// The last probe has not been answered.
    unanswered: bool,
    /// A frame came since the last probes: no probe is needed this time.
    framed: bool,
}

/// The links' watch (see the module documentation).
pub struct Watch {
    prober: Box<dyn Prober>,
    dead: Duration,
    /// Each neighbor by the address we probe.
    by_address: HashMap<Ipv4Addr, String>,
    addresses: HashMap<String, Ipv4Addr>,
    /// The neighbors with a link.
    links: HashMap<String, Link>,
    /// The neighbors that have answered an echo since we started.
    echoing: HashSet<String>,
    /// When the last probes left.
    probed: Option<Instant>,
    failing: bool,
}

impl Watch {
    /// Watches `neighbors` (id, address) with `prober`: a link silent for `dead` is dead.
    pub fn new(
        prober: Box<dyn Prober>,
        dead: Duration,
        neighbors: impl IntoIterator<Item = (String, Ipv4Addr)>,
    ) -> Self {
        let addresses: HashMap<String, Ipv4Addr> = neighbors.into_iter().collect();
        Watch {
            prober,
            dead,
            by_address: addresses.iter().map(|(n, a)| (*a, n.clone())).collect(),
            addresses,
            links: HashMap::new(),
            echoing: HashSet::new(),
            probed: None,
            failing: false,
        }
    }

    /// A link to `neighbor` opened at `now`.
    pub fn opened(&mut self, neighbor: &str, now: Instant) {
        if let Some(&address) = self.addresses.get(neighbor) {
            let link = Link {
                address,
                heard: now,
                unanswered: false,
                framed: false,
            };
            self.links.insert(neighbor.to_owned(), link);
        }
    }

    /// The link to `neighbor` closed.
    pub fn closed(&mut self, neighbor: &str) {
        self.links.remove(neighbor);
    }

    /// A frame from `neighbor` arrived at `now`.
    pub fn heard(&mut self, neighbor: &str, now: Instant) {
        if let Some(l) = self.links.get_mut(neighbor) {
            l.heard = l.heard.max(now);
            l.unanswered = false;
            l.framed = true;
        }
    }

    /// At each sample (`now`): takes the replies to the last probes, returns the links found
    /// dead (neighbor, reason) — they are no longer watched — and probes the others.
    pub fn check(&mut self, now: Instant) -> Vec<(String, String)> {
        let replies = match self.prober.drain() {
            Ok(r) => r,
            Err(e) => {
                self.fail("cannot read the echo replies", &e);
                Vec::new()
            }
        };
        if let Some(probed) = self.probed {
            for address in replies {
                let Some(n) = self.by_address.get(&address) else {
                    continue;
                };
                if let Some(l) = self.links.get_mut(n) {
                    l.heard = l.heard.max(probed);
                    l.unanswered = false;
                    if self.echoing.insert(n.clone()) {
                        debug!(neighbor = %n, %address, "the neighbor answers echo: its link is watched");
                    }
                }
            }
        }
        let dead: Vec<(String, String)> = self
            .links
            .iter()
            .filter(|(n, l)| self.echoing.contains(*n) && now.saturating_duration_since(l.heard) >= self.dead)
            .map(|(n, l)| {
                let reason = format!(
                    "no answer to echo from {} for {} ms",
                    l.address,
                    now.saturating_duration_since(l.heard).as_millis()
                );
                (n.clone(), reason)
            })
            .collect();
        for (n, _) in &dead {
            self.links.remove(n);
        }
        let mut error = None;
        for (n, l) in self.links.iter_mut() {
            // It spoke since the last probes: alive, nothing to ask — once it has answered echo
            // at all (until then it is not judged by echo, and a link that always speaks would
            // never be).
            if std::mem::take(&mut l.framed) && self.echoing.contains(n) {
                continue;
            }
            let probes = if l.unanswered { RETRY_PROBES } else { 1 };
            for _ in 0..probes {
                // An unreachable neighbor (its route gone with the link) fails here: that is
                // an unanswered probe like any other.
                if let Err(e) = self.prober.send(l.address) {
                    error.get_or_insert(e);
                }
            }
            l.unanswered = true;
        }
        let unreachable = [
            nix::errno::Errno::ENETUNREACH as i32,
            nix::errno::Errno::EHOSTUNREACH as i32,
        ];
        if let Some(e) = error.filter(|e| !e.raw_os_error().is_some_and(|c| unreachable.contains(&c))) {
            self.fail("cannot send an echo request", &e);
        } else {
            self.failing = false;
        }
        self.probed = Some(now);
        dead
    }

    /// Says once that the socket fails (and again after it worked in between).
    fn fail(&mut self, what: &str, e: &io::Error) {
        if !self.failing {
            warn!(error = %e, "{what}");
            self.failing = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    /// A prober whose neighbors answer while they are in `alive`.
    #[derive(Clone, Default)]
    struct Fake {
        alive: Arc<Mutex<HashSet<Ipv4Addr>>>,
        pending: Arc<Mutex<Vec<Ipv4Addr>>>,
        sent: Arc<Mutex<Vec<Ipv4Addr>>>,
        /// Replies lost on the way, one per entry, taken in order.
        lose: Arc<Mutex<Vec<bool>>>,
    }

    impl Prober for Fake {
        fn send(&mut self, to: Ipv4Addr) -> io::Result<()> {
            self.sent.lock().unwrap().push(to);
            let lost = {
                let mut l = self.lose.lock().unwrap();
                if l.is_empty() { false } else { l.remove(0) }
            };
            if self.alive.lock().unwrap().contains(&to) && !lost {
                self.pending.lock().unwrap().push(to);
            }
            Ok(())
        }

        fn drain(&mut self) -> io::Result<Vec<Ipv4Addr>> {
            Ok(std::mem::take(&mut *self.pending.lock().unwrap()))
        }
    }

    const A: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
    const B: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 3);

    fn watch(fake: &Fake) -> Watch {
        let neighbors = [("r1".to_string(), A), ("r3".to_string(), B)];
        Watch::new(Box::new(fake.clone()), Duration::from_secs(3), neighbors)
    }

    fn at(t0: Instant, s: u64) -> Instant {
        t0 + Duration::from_secs(s)
    }

    #[test]
    fn a_silent_link_dies_after_the_dead_interval_and_a_live_one_does_not() {
        let fake = Fake::default();
        fake.alive.lock().unwrap().extend([A, B]);
        let mut w = watch(&fake);
        let t0 = Instant::now();
        w.opened("r1", t0);
        w.opened("r3", t0);
        for s in 0..5 {
            assert!(w.check(at(t0, s)).is_empty(), "both answer: none dies at {s} s");
        }
        // r3's link is cut just after it answered the probe of 4 s.
        fake.alive.lock().unwrap().remove(&B);
        assert!(w.check(at(t0, 5)).is_empty());
        assert!(w.check(at(t0, 6)).is_empty());
        let dead = w.check(at(t0, 7));
        assert_eq!(dead.len(), 1, "{dead:?}");
        assert_eq!(dead[0].0, "r3");
        assert!(
            dead[0].1.contains("no answer to echo from 10.0.0.3 for 3000 ms"),
            "{}",
            dead[0].1
        );
        assert!(w.check(at(t0, 8)).is_empty(), "a dead link is reported once");
        // r1 kept answering; r3 is not probed once its link is gone.
        let sent = fake.sent.lock().unwrap().clone();
        assert_eq!(sent.iter().filter(|a| **a == A).count(), 9, "one probe a sample to r1");
        assert_eq!(
            sent.iter().filter(|a| **a == B).count(),
            6 + 5,
            "one a sample to r3 while it answered, then five after an unanswered one"
        );
    }

    #[test]
    fn lost_probes_or_frames_keep_a_link() {
        let fake = Fake::default();
        fake.alive.lock().unwrap().insert(A);
        let mut w = watch(&fake);
        let t0 = Instant::now();
        w.opened("r1", t0);
        assert!(w.check(t0).is_empty());
        assert!(w.check(at(t0, 1)).is_empty());
        // The next probe and four of the five after it are lost: one answer is enough.
        fake.lose.lock().unwrap().extend([true, true, true, true, true, false]);
        for s in 2..=6 {
            assert!(w.check(at(t0, s)).is_empty(), "a lost probe is not a lost link ({s} s)");
        }
        // Nothing answers any more, but frames still come: alive, and not probed.
        fake.alive.lock().unwrap().clear();
        let probes = fake.sent.lock().unwrap().len();
        for s in 7..=12 {
            w.heard("r1", at(t0, s));
            assert!(w.check(at(t0, s)).is_empty(), "frames keep it ({s} s)");
        }
        assert_eq!(
            fake.sent.lock().unwrap().len(),
            probes,
            "a link that speaks is not probed"
        );
        assert_eq!(w.check(at(t0, 15)).len(), 1, "silent for 3 s: dead");
    }

    #[test]
    fn a_link_that_always_speaks_is_probed_until_its_neighbor_answers_echo() {
        let fake = Fake::default();
        fake.alive.lock().unwrap().insert(A);
        let mut w = watch(&fake);
        let t0 = Instant::now();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        let probes = || fake.sent.lock().unwrap().len();
        w.opened("r1", t0);
        // A frame before it ever answered echo: probed all the same (else a link that always
        // speaks would never be judged by echo, and a cut would wait for the hellos).
        w.heard("r1", ms(500));
        w.check(ms(1000));
        assert_eq!(probes(), 1, "probed although it spoke");
        // It answered: from now on a frame since the last check spares the probe.
        w.heard("r1", ms(1500));
        w.check(ms(2000));
        assert_eq!(probes(), 1, "a frame spares it once it answered echo");
        // Cut: frames and replies stop; it is judged by echo, 3 s after the frame of 1.5 s.
        fake.alive.lock().unwrap().clear();
        let dead: Vec<u64> = (3..8).filter(|s| !w.check(at(t0, *s)).is_empty()).collect();
        assert_eq!(dead, [5], "lost at the first check 3 s after it was last heard");
    }

    #[test]
    fn a_neighbor_that_never_answered_is_left_to_the_hellos() {
        let fake = Fake::default();
        let mut w = watch(&fake);
        let t0 = Instant::now();
        w.opened("r3", t0);
        for s in 0..10 {
            assert!(
                w.check(at(t0, s)).is_empty(),
                "no echo ever: not judged by echo ({s} s)"
            );
        }
        // Once it answered, its silence counts.
        fake.alive.lock().unwrap().insert(B);
        w.check(at(t0, 10));
        w.check(at(t0, 11));
        fake.alive.lock().unwrap().clear();
        fake.pending.lock().unwrap().clear();
        let dead: Vec<u64> = (12..20).filter(|s| !w.check(at(t0, *s)).is_empty()).collect();
        assert_eq!(
            dead,
            [13],
            "heard at 10 s (the probe its reply answered), dead 3 s later"
        );
        // A new link starts afresh, counted from its opening.
        w.opened("r3", at(t0, 20));
        assert!(w.check(at(t0, 22)).is_empty());
        assert_eq!(w.check(at(t0, 23)).len(), 1);
    }
}
