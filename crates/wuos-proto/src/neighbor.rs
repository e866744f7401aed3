//! One configured neighbor: its link, its liveness, and what it is known to hold.
//!
//! Since 2.0 two neighbors talk over one long-lived **link** (`Neighbor.Link`, a stream of
//! frames both ways). The neighbor is `down` while there is no link, `init` once a link is open
//! and we wait for its hello (the first frame from its side), and `up` from that hello until the
//! link closes or nothing is heard for its dead interval. Any frame counts as hearing it. A
//! hello with another boot id while up is a restart: [`Transition::Restarted`]. The neighbor's
//! own dead interval (in its hello) wins over ours once known.
//!
//! [`Neighbor::holds`] records, per origin, the newest advert the neighbor is known to have —
//! because we sent it on this link or it sent it to us — so that flooding neither re-sends what
//! it has nor sends a whole advert where a delta does. A new link starts with nothing held.

use std::collections::HashMap;

use crate::pb;

/// A neighbor as configured: its router id, its address, our interface toward it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NeighborConfig {
    /// Its router id.
    pub id: String,
    /// Where its `Neighbor` service listens (`ADDRESS:PORT`).
    pub address: String,
    /// Our interface on the link to it.
    pub interface: String,
}

/// Link and liveness state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// No link.
    Down,
    /// A link is open; its hello has not arrived yet.
    Init,
    /// Its hello arrived on the current link and it has been heard within its dead interval.
    Up,
}

/// What hearing a hello changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transition {
    /// Nothing (it was up with this boot id).
    None,
    /// It came up.
    Up,
    /// It was up with another boot id: it restarted.
    Restarted {
        /// The boot id it had.
        old_boot_id: u64,
    },
}

/// The newest advert of one origin a neighbor is known to hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Held {
    /// The advert's boot.
    pub boot_id: u64,
    /// Its sequence.
    pub sequence: u64,
    /// The hop limit of the neighbor's copy.
    pub hop_limit: u32,
}

impl Held {
    /// Whether a neighbor holding this needs nothing of an advert `(boot_id, sequence)` with
    /// `hop_limit` to spare: it has that advert or a newer one of the same boot, with at least as
    /// many hops left.
    pub fn covers(&self, boot_id: u64, sequence: u64, hop_limit: u32) -> bool {
        self.boot_id == boot_id
            && (self.sequence > sequence || (self.sequence == sequence && self.hop_limit >= hop_limit))
    }
}

/// One configured neighbor.
#[derive(Clone, Debug)]
pub struct Neighbor {
    config: NeighborConfig,
    state: State,
    boot_id: Option<u64>,
    role: i32,
    link_opened_ms: Option<u64>,
    last_heard_ms: Option<u64>,
    last_sent_ms: Option<u64>,
    rtt_ms: Option<f64>,
    dead_interval_ms: Option<u32>,
    holds: HashMap<String, Held>,
}

impl Neighbor {
    /// A neighbor without a link.
    pub fn new(config: NeighborConfig) -> Self {
        Neighbor {
            config,
            state: State::Down,
            boot_id: None,
            role: pb::Role::Unspecified as i32,
            link_opened_ms: None,
            last_heard_ms: None,
            last_sent_ms: None,
            rtt_ms: None,
            dead_interval_ms: None,
            holds: HashMap::new(),
        }
    }

    /// As configured.
    pub fn config(&self) -> &NeighborConfig {
        &self.config
    }

    /// Its router id.
    pub fn id(&self) -> &str {
        &self.config.id
    }

    /// Its state.
    pub fn state(&self) -> State {
        self.state
    }

    /// Whether it is up (flooding goes to up neighbors only).
    pub fn is_up(&self) -> bool {
        self.state == State::Up
    }

    /// Whether a link to it is open (init or up).
    pub fn has_link(&self) -> bool {
        self.state != State::Down
    }

    /// Its boot id, once heard.
    pub fn boot_id(&self) -> Option<u64> {
        self.boot_id
    }

    /// Its role, once heard.
    pub fn role(&self) -> i32 {
        self.role
    }

    /// The latest round trip measured on the link.
    pub fn rtt_ms(&self) -> Option<f64> {
        self.rtt_ms
    }

    /// When it was last heard.
    pub fn last_heard_ms(&self) -> Option<u64> {
        self.last_heard_ms
    }

    /// When we last sent it a frame.
    pub fn last_sent_ms(&self) -> Option<u64> {
        self.last_sent_ms
    }

    /// `down`, `init` or `up`.
    pub fn state_name(&self) -> &'static str {
        match self.state {
            State::Down => "down",
            State::Init => "init",
            State::Up => "up",
        }
    }

    /// Its announced dead interval, or `default_ms` before it announced one.
    pub fn dead_interval_ms(&self, default_ms: u32) -> u32 {
        self.dead_interval_ms.unwrap_or(default_ms)
    }

    /// A link to it opened: init, nothing held.
    pub fn link_opened(&mut self, now_ms: u64) {
        self.state = State::Init;
        self.link_opened_ms = Some(now_ms);
        self.holds.clear();
    }

    /// Its hello arrived on the link.
    pub fn hello(&mut self, now_ms: u64, hello: &pb::Hello) -> Transition {
        let t = match (self.state, self.boot_id) {
            (State::Up, Some(old)) if old != hello.boot_id => Transition::Restarted { old_boot_id: old },
            (State::Up, _) => Transition::None,
            _ => Transition::Up,
        };
        if matches!(t, Transition::Restarted { .. }) {
            self.holds.clear();
        }
        self.state = State::Up;
        self.boot_id = Some(hello.boot_id);
        self.role = hello.role;
        self.dead_interval_ms = Some(hello.dead_interval_ms);
        self.heard(now_ms);
        t
    }

    /// A frame arrived from it; `rtt_ms` is the round trip the frame's echo measured.
    pub fn heard(&mut self, now_ms: u64) {
        self.last_heard_ms = Some(self.last_heard_ms.map_or(now_ms, |t| t.max(now_ms)));
    }

    /// A round trip measured on the link (ignored unless finite and ≥ 0).
    pub fn rtt(&mut self, rtt_ms: f64) {
        if rtt_ms.is_finite() && rtt_ms >= 0.0 {
            self.rtt_ms = Some(rtt_ms);
        }
    }

    /// We sent it a frame.
    pub fn sent(&mut self, now_ms: u64) {
        self.last_sent_ms = Some(now_ms);
    }

    /// Whether it is to be declared down: up and not heard for its dead interval, or init and
    /// no hello within the dead interval since the link opened.
    pub fn expired(&self, now_ms: u64, default_dead_ms: u32) -> bool {
        let dead = u64::from(self.dead_interval_ms(default_dead_ms));
        let since = match self.state {
            State::Down => return false,
            State::Init => self.link_opened_ms,
            State::Up => self.last_heard_ms,
        };
        since.is_none_or(|t| now_ms.saturating_sub(t) >= dead)
    }

    /// When [`Neighbor::expired`] becomes true (0: it is already), or `None` while down.
    pub fn expires_at_ms(&self, default_dead_ms: u32) -> Option<u64> {
        let dead = u64::from(self.dead_interval_ms(default_dead_ms));
        let since = match self.state {
            State::Down => return None,
            State::Init => self.link_opened_ms,
            State::Up => self.last_heard_ms,
        };
        Some(since.map_or(0, |t| t.saturating_add(dead)))
    }

    /// The link is gone.
    pub fn down(&mut self) {
        self.state = State::Down;
        self.link_opened_ms = None;
        self.holds.clear();
    }

    /// What it holds of `origin`.
    pub fn holds(&self, origin: &str) -> Option<Held> {
        self.holds.get(origin).copied()
    }

    /// It holds `held` of `origin` (kept only if newer or with more hops than what it held).
    pub fn hold(&mut self, origin: &str, held: Held) {
        match self.holds.get_mut(origin) {
            Some(h) if h.covers(held.boot_id, held.sequence, held.hop_limit) => {}
            Some(h) => *h = held,
            None => {
                self.holds.insert(origin.to_owned(), held);
            }
        }
    }

    /// It holds nothing of `origin` (withdrawn, or it asked for the whole advert).
    pub fn forget(&mut self, origin: &str) {
        self.holds.remove(origin);
    }

    /// For the admin API.
    pub fn to_pb(&self, now_ms: u64) -> pb::NeighborState {
        pb::NeighborState {
            id: self.config.id.clone(),
            address: self.config.address.clone(),
            interface: self.config.interface.clone(),
            state: self.state_name().to_owned(),
            rtt_ms: self.rtt_ms,
            last_heard_ms: self.last_heard_ms.map_or(0, |t| now_ms.saturating_sub(t)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validate::header;

    fn neighbor() -> Neighbor {
        Neighbor::new(NeighborConfig {
            id: "r2".into(),
            address: "10.0.0.2:7470".into(),
            interface: "eth0".into(),
        })
    }

    fn hello(boot_id: u64) -> pb::Hello {
        pb::Hello {
            header: Some(header("r2")),
            role: pb::Role::Fog as i32,
            boot_id,
            hello_interval_ms: 500,
            dead_interval_ms: 1500,
            interface: "eth9".into(),
        }
    }

    #[test]
    fn a_link_then_a_hello_bring_it_up() {
        let mut n = neighbor();
        assert_eq!(n.state_name(), "down");
        assert!(!n.expired(10_000, 3000), "a down neighbor does not expire");
        n.link_opened(100);
        assert_eq!(n.state_name(), "init");
        assert!(!n.is_up() && n.has_link());
        assert!(n.expired(3100, 3000), "init for a dead interval without a hello");
        assert_eq!(n.hello(200, &hello(1)), Transition::Up);
        assert_eq!(n.state_name(), "up");
        assert_eq!(n.role(), pb::Role::Fog as i32);
        assert_eq!(n.hello(300, &hello(1)), Transition::None);
        n.rtt(0.5);
        n.rtt(f64::NAN);
        assert_eq!(n.rtt_ms(), Some(0.5), "a NaN rtt is ignored");
    }

    #[test]
    fn announced_dead_interval_wins() {
        let mut n = neighbor();
        n.link_opened(0);
        n.hello(0, &hello(1));
        assert!(!n.expired(1499, 3000));
        assert!(n.expired(1500, 3000), "it announced 1500 ms");
        n.heard(1000);
        n.heard(900);
        assert_eq!(n.last_heard_ms(), Some(1000), "a late report does not move it back");
        n.down();
        assert_eq!(n.state(), State::Down);
        assert_eq!(n.to_pb(2000).last_heard_ms, 1000);
    }

    #[test]
    fn boot_id_change_is_a_restart_only_while_up() {
        let mut n = neighbor();
        n.link_opened(0);
        n.hello(0, &hello(1));
        assert_eq!(n.hello(10, &hello(2)), Transition::Restarted { old_boot_id: 1 });
        assert_eq!(n.boot_id(), Some(2));
        n.down();
        n.link_opened(15);
        assert_eq!(n.hello(20, &hello(3)), Transition::Up);
    }

    #[test]
    fn holds_keep_the_best_and_reset_with_the_link() {
        let mut n = neighbor();
        n.link_opened(0);
        n.hold(
            "r9",
            Held {
                boot_id: 1,
                sequence: 5,
                hop_limit: 1,
            },
        );
        n.hold(
            "r9",
            Held {
                boot_id: 1,
                sequence: 4,
                hop_limit: 2,
            },
        );
        assert_eq!(n.holds("r9").unwrap().sequence, 5, "an older one does not replace it");
        n.hold(
            "r9",
            Held {
                boot_id: 1,
                sequence: 5,
                hop_limit: 2,
            },
        );
        assert_eq!(n.holds("r9").unwrap().hop_limit, 2, "more hops left replaces it");
        assert!(n.holds("r9").unwrap().covers(1, 5, 1));
        assert!(!n.holds("r9").unwrap().covers(1, 6, 1));
        assert!(!n.holds("r9").unwrap().covers(2, 1, 1), "another boot");
        n.link_opened(10);
        assert_eq!(n.holds("r9"), None, "a new link holds nothing");
    }
}
