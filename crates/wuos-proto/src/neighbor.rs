//! One configured neighbor and its liveness: down or up, what we last heard from it, when.
//!
//! A neighbor is up from the moment we hear it — its hello reaches us, or it answers ours — and
//! down once nothing has been heard for its dead interval. Hearing it with another boot id
//! while it is up is a restart: [`Transition::Restarted`]. The neighbor's own interval
//! announcement ([`pb::Hello::dead_interval_ms`]) wins over ours once known.
//!
//! The status shows a third state, `init`: up, but our latest hello to it has not been answered
//! (we only hear it). Flooding treats `init` as up.

use crate::pb;

/// A neighbor as configured.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NeighborConfig {
    /// Its router id.
    pub id: String,
    /// Where to reach its daemon, e.g. `"10.0.0.1:7470"` (opaque to the protocol).
    pub address: String,
    /// Our interface toward it.
    pub interface: String,
}

/// Whether the neighbor is alive.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// Not heard for its dead interval, or never heard.
    Down,
    /// Heard recently.
    Up,
}

/// What hearing from the neighbor changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transition {
    /// It was up and still is.
    None,
    /// It was down and is now up.
    Up,
    /// It was up with another boot id: its daemon restarted. It is up again.
    Restarted {
        /// The boot id it had.
        old_boot_id: u64,
    },
}

/// A neighbor's liveness state.
#[derive(Clone, Debug)]
pub struct Neighbor {
    config: NeighborConfig,
    state: State,
    /// Whether our latest hello since it came up was answered.
    answered: bool,
    boot_id: Option<u64>,
    role: i32,
    last_heard_ms: Option<u64>,
    rtt_ms: Option<f64>,
    /// The dead interval it announced in its hello.
    dead_interval_ms: Option<u32>,
}

impl Neighbor {
    /// A neighbor that is down and never heard.
    pub fn new(config: NeighborConfig) -> Self {
        Neighbor {
            config,
            state: State::Down,
            answered: false,
            boot_id: None,
            role: pb::Role::Unspecified as i32,
            last_heard_ms: None,
            rtt_ms: None,
            dead_interval_ms: None,
        }
    }

    /// Its configuration.
    pub fn config(&self) -> &NeighborConfig {
        &self.config
    }

    /// Its router id.
    pub fn id(&self) -> &str {
        &self.config.id
    }

    /// Down or up.
    pub fn state(&self) -> State {
        self.state
    }

    /// Whether flooding may use it.
    pub fn is_up(&self) -> bool {
        self.state == State::Up
    }

    /// The boot id it last announced.
    pub fn boot_id(&self) -> Option<u64> {
        self.boot_id
    }

    /// Its role, as it last announced it (a [`pb::Role`] number).
    pub fn role(&self) -> i32 {
        self.role
    }

    /// The round trip of our latest answered hello.
    pub fn rtt_ms(&self) -> Option<f64> {
        self.rtt_ms
    }

    /// When we last heard from it.
    pub fn last_heard_ms(&self) -> Option<u64> {
        self.last_heard_ms
    }

    /// `"down"`, `"init"` (up, but only its hellos reach us so far) or `"up"`.
    pub fn state_name(&self) -> &'static str {
        match (self.state, self.answered) {
            (State::Down, _) => "down",
            (State::Up, false) => "init",
            (State::Up, true) => "up",
        }
    }

    /// How long it may stay silent: what it announced, or `default_ms` (ours) before it has.
    pub fn dead_interval_ms(&self, default_ms: u32) -> u32 {
        self.dead_interval_ms.unwrap_or(default_ms)
    }

    /// Its (checked) hello reached us.
    pub fn hello(&mut self, now_ms: u64, hello: &pb::Hello) -> Transition {
        self.dead_interval_ms = Some(hello.dead_interval_ms);
        self.heard(now_ms, hello.boot_id, hello.role)
    }

    /// It answered our hello with this (checked) reply.
    pub fn answered(&mut self, now_ms: u64, reply: &pb::HelloReply, rtt_ms: f64) -> Transition {
        let t = self.heard(now_ms, reply.boot_id, reply.role);
        self.answered = true;
        if rtt_ms.is_finite() && rtt_ms >= 0.0 {
            self.rtt_ms = Some(rtt_ms);
        }
        t
    }

    /// Our hello to it went unanswered. Liveness is not affected: only the dead interval takes a
    /// neighbor down.
    pub fn failed(&mut self) {
        self.answered = false;
    }

    /// Whether it is up but has been silent for its dead interval at `now_ms`.
    pub fn expired(&self, now_ms: u64, default_dead_ms: u32) -> bool {
        self.is_up()
            && self
                .last_heard_ms
                .is_none_or(|t| now_ms.saturating_sub(t) >= u64::from(self.dead_interval_ms(default_dead_ms)))
    }

    /// Declares it down. Its boot id is kept, to tell a later restart in the status.
    pub fn down(&mut self) {
        self.state = State::Down;
        self.answered = false;
    }

    /// The admin API's view of it.
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

    fn heard(&mut self, now_ms: u64, boot_id: u64, role: i32) -> Transition {
        let t = match (self.state, self.boot_id) {
            (State::Up, Some(old)) if old != boot_id => Transition::Restarted { old_boot_id: old },
            (State::Up, _) => Transition::None,
            (State::Down, _) => Transition::Up,
        };
        if t != Transition::None {
            // A new incarnation has not answered us yet.
            self.answered = false;
        }
        self.state = State::Up;
        self.boot_id = Some(boot_id);
        self.role = role;
        self.last_heard_ms = Some(self.last_heard_ms.map_or(now_ms, |t| t.max(now_ms)));
        t
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

    fn reply(boot_id: u64) -> pb::HelloReply {
        pb::HelloReply {
            header: Some(header("r2")),
            role: pb::Role::Fog as i32,
            boot_id,
        }
    }

    #[test]
    fn hello_brings_it_up_in_init_then_answer_makes_it_up() {
        let mut n = neighbor();
        assert_eq!(n.state_name(), "down");
        assert!(!n.expired(10_000, 3000), "a down neighbor does not expire");
        assert_eq!(n.hello(100, &hello(1)), Transition::Up);
        assert_eq!(n.state_name(), "init");
        assert_eq!(n.role(), pb::Role::Fog as i32);
        assert_eq!(n.hello(200, &hello(1)), Transition::None);
        assert_eq!(n.answered(250, &reply(1), 0.5), Transition::None);
        assert_eq!(n.state_name(), "up");
        assert_eq!(n.rtt_ms(), Some(0.5));
        n.failed();
        assert_eq!(n.state_name(), "init");
        assert!(n.is_up());
    }

    #[test]
    fn announced_dead_interval_wins() {
        let mut n = neighbor();
        assert_eq!(n.answered(0, &reply(1), 1.0), Transition::Up);
        assert!(!n.expired(2999, 3000));
        assert!(n.expired(3000, 3000));
        n.hello(0, &hello(1));
        assert!(n.expired(1500, 3000), "it announced 1500 ms");
        n.down();
        assert_eq!(n.state(), State::Down);
        assert_eq!(n.to_pb(2000).last_heard_ms, 2000);
    }

    #[test]
    fn boot_id_change_is_a_restart_only_while_up() {
        let mut n = neighbor();
        n.hello(0, &hello(1));
        assert_eq!(n.answered(10, &reply(2), 1.0), Transition::Restarted { old_boot_id: 1 });
        assert_eq!(n.boot_id(), Some(2));
        n.down();
        assert_eq!(n.hello(20, &hello(3)), Transition::Up);
    }

    #[test]
    fn late_reply_does_not_move_last_heard_back() {
        let mut n = neighbor();
        n.hello(1000, &hello(1));
        n.answered(900, &reply(1), f64::NAN);
        assert_eq!(n.last_heard_ms(), Some(1000));
        assert_eq!(n.rtt_ms(), None, "a NaN rtt is ignored");
    }
}
