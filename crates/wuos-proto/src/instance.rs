//! The protocol state machine of one router: neighbors, the view, flooding.
//!
//! [`Instance`] is driven by the daemon and never does I/O itself. Timers and local samples
//! come in through [`Instance::process`] as [`Input`]s; the two RPCs it serves come in through
//! [`Instance::on_hello`] and [`Instance::on_flood`]. Each call returns what must happen as
//! [`Action`]s: messages to send (at most one flood request per neighbor per call, unless it
//! would exceed the message limits) and events to log. Time is the daemon's monotonic clock in
//! milliseconds, passed in with every call.
//!
//! The rules are specified in `docs/protocol.md`; in short:
//!
//! - a configured neighbor is up once heard (its hello, or its answer to ours) and down after
//!   its dead interval of silence, or, briefly, when its boot id changes (a restart);
//! - every sample becomes our own advert, flooded to the up neighbors with the flooding radius
//!   as hop limit; a received advert is stored when newer or come by a shorter path, and
//!   forwarded, with one hop less, to the up neighbors other than its sender and origin;
//! - entries age: stale after `stale_after_intervals` of the origin's interval, removed after
//!   twice that;
//! - losing a neighbor removes its advert and floods a withdrawal, which removes the origin at
//!   routers that learned it through us.

use std::collections::{BTreeMap, BTreeSet};

use crate::counters::Counters;
use crate::flood::{self, Outbox};
use crate::neighbor::{Neighbor, NeighborConfig, Transition};
use crate::pb;
use crate::validate::{
    self, MAX_DEAD_INTERVAL_MS, MAX_HOP_LIMIT, MAX_INTERVAL_MS, MAX_ITEMS_PER_ADVERT, MIN_INTERVAL_MS, ValidateError,
};
use crate::view::{Entry, MAX_VIEW_ENTRIES, Verdict, View};

/// Default hello interval.
pub const DEFAULT_HELLO_INTERVAL_MS: u32 = 1000;
/// Default dead interval: three hello intervals.
pub const DEFAULT_DEAD_INTERVAL_MS: u32 = 3 * DEFAULT_HELLO_INTERVAL_MS;
/// Default telemetry interval.
pub const DEFAULT_TELEMETRY_INTERVAL_MS: u32 = 1000;
/// Default flooding radius: neighbors and their neighbors.
pub const DEFAULT_HOP_LIMIT: u32 = 2;
/// Default number of missed telemetry intervals after which an entry is stale.
pub const DEFAULT_STALE_AFTER_INTERVALS: u32 = 3;

/// Why a ViewWithdrawn happened: the entry aged out.
pub const REASON_STALE: &str = "stale";
/// Why a ViewWithdrawn happened, and the reason a withdrawal carries: a neighbor was lost.
pub const REASON_NEIGHBOR_LOST: &str = "neighbor lost";
/// Why a ViewWithdrawn happened: a neighbor restarted (its old advert is obsolete).
pub const REASON_NEIGHBOR_RESTARTED: &str = "neighbor restarted";
/// The reason of the withdrawal a router floods about itself when it shuts down.
pub const REASON_SHUTDOWN: &str = "shutdown";

/// A configuration the instance cannot run with.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum InstanceError {
    /// The router id or a neighbor id is not a router id.
    #[error("{field} {value:?} is not a valid router id (1-64 characters of A-Z a-z 0-9 . _ -)")]
    RouterId {
        /// `router_id` or `neighbor id`.
        field: &'static str,
        /// The id.
        value: String,
    },
    /// A neighbor listed twice.
    #[error("neighbor {id:?} is configured twice")]
    DuplicateNeighbor {
        /// Its id.
        id: String,
    },
    /// The router listed as its own neighbor.
    #[error("router {id:?} lists itself as a neighbor")]
    SelfNeighbor {
        /// Its id.
        id: String,
    },
    /// A boot id of 0.
    #[error("boot_id is 0; use a number that changes at every start")]
    BootId,
    /// A number out of range.
    #[error("{field} {value} is outside {min}-{max}")]
    Range {
        /// The setting.
        field: &'static str,
        /// Its value.
        value: u32,
        /// Smallest allowed.
        min: u32,
        /// Largest allowed.
        max: u32,
    },
    /// A dead interval not longer than the hello interval.
    #[error("dead_interval_ms {dead} is not longer than hello_interval_ms {hello}")]
    DeadInterval {
        /// The dead interval.
        dead: u32,
        /// The hello interval.
        hello: u32,
    },
}

/// How one router runs the protocol.
#[derive(Clone, Debug)]
pub struct InstanceConfig {
    /// This router's id.
    pub router_id: String,
    /// Its role.
    pub role: pb::Role,
    /// Changes at every start of the daemon (never 0).
    pub boot_id: u64,
    /// How often hellos are sent.
    pub hello_interval_ms: u32,
    /// How long a neighbor may stay silent before it is down (we announce it in our hellos; a
    /// neighbor's announcement wins for that neighbor).
    pub dead_interval_ms: u32,
    /// How often the daemon samples; announced in our adverts.
    pub telemetry_interval_ms: u32,
    /// Flooding radius: how many hops our adverts travel.
    pub hop_limit: u32,
    /// Missed intervals after which an entry is stale (removed after twice as many).
    pub stale_after_intervals: u32,
    /// The configured neighbors.
    pub neighbors: Vec<NeighborConfig>,
    /// Where our controller takes intents (`ADDRESS:PORT`), announced in our adverts; empty: none.
    pub control_address: String,
}

impl InstanceConfig {
    /// A configuration with the default timers and radius, and no neighbors.
    pub fn new(router_id: impl Into<String>, role: pb::Role, boot_id: u64) -> Self {
        InstanceConfig {
            router_id: router_id.into(),
            role,
            boot_id,
            hello_interval_ms: DEFAULT_HELLO_INTERVAL_MS,
            dead_interval_ms: DEFAULT_DEAD_INTERVAL_MS,
            telemetry_interval_ms: DEFAULT_TELEMETRY_INTERVAL_MS,
            hop_limit: DEFAULT_HOP_LIMIT,
            stale_after_intervals: DEFAULT_STALE_AFTER_INTERVALS,
            neighbors: Vec::new(),
            control_address: String::new(),
        }
    }

    /// Checks the configuration: ids, timers within what [`validate`] accepts from others.
    pub fn validate(&self) -> Result<(), InstanceError> {
        if !validate::is_router_id(&self.router_id) {
            return Err(InstanceError::RouterId {
                field: "router_id",
                value: self.router_id.clone(),
            });
        }
        if self.boot_id == 0 {
            return Err(InstanceError::BootId);
        }
        let range = |field, value: u32, min, max| {
            if (min..=max).contains(&value) {
                Ok(())
            } else {
                Err(InstanceError::Range { field, value, min, max })
            }
        };
        range(
            "hello_interval_ms",
            self.hello_interval_ms,
            MIN_INTERVAL_MS,
            MAX_INTERVAL_MS,
        )?;
        range(
            "dead_interval_ms",
            self.dead_interval_ms,
            MIN_INTERVAL_MS,
            MAX_DEAD_INTERVAL_MS,
        )?;
        if self.dead_interval_ms <= self.hello_interval_ms {
            return Err(InstanceError::DeadInterval {
                dead: self.dead_interval_ms,
                hello: self.hello_interval_ms,
            });
        }
        range(
            "telemetry_interval_ms",
            self.telemetry_interval_ms,
            MIN_INTERVAL_MS,
            MAX_INTERVAL_MS,
        )?;
        range("hop_limit", self.hop_limit, 1, MAX_HOP_LIMIT)?;
        range("stale_after_intervals", self.stale_after_intervals, 1, 1000)?;
        let mut seen = BTreeSet::new();
        for n in &self.neighbors {
            if !validate::is_router_id(&n.id) {
                return Err(InstanceError::RouterId {
                    field: "neighbor id",
                    value: n.id.clone(),
                });
            }
            if n.id == self.router_id {
                return Err(InstanceError::SelfNeighbor { id: n.id.clone() });
            }
            if !seen.insert(n.id.as_str()) {
                return Err(InstanceError::DuplicateNeighbor { id: n.id.clone() });
            }
        }
        Ok(())
    }
}

/// What the daemon tells the instance.
#[derive(Clone, Debug, PartialEq)]
pub enum Input {
    /// Periodic tick (the daemon calls it every hello interval or faster): sends hellos when
    /// one is due, detects dead neighbors, removes expired view entries.
    Tick {
        /// Monotonic clock, ms.
        now_ms: u64,
    },
    /// A new local sample: becomes our own advert (next sequence, hop limit = the flooding
    /// radius) and is flooded to every neighbor that is up.
    Sample {
        /// Monotonic clock, ms.
        now_ms: u64,
        /// When the sample was taken, wall clock.
        timestamp_unix_ns: i64,
        /// The figures.
        resources: pb::Resources,
        /// Per-interface figures.
        links: Vec<pb::LinkMetrics>,
        /// Services hosted here.
        services: Vec<pb::ServiceInstance>,
        /// Demand for services seen by our data path.
        demand: Vec<pb::ServiceDemand>,
    },
    /// Our hello to `neighbor` was answered.
    HelloAnswered {
        /// Monotonic clock, ms.
        now_ms: u64,
        /// The neighbor the hello was sent to.
        neighbor: String,
        /// Its reply.
        reply: pb::HelloReply,
        /// The measured round trip.
        rtt_ms: f64,
    },
    /// Our hello to `neighbor` failed (timeout, connection refused).
    HelloFailed {
        /// Monotonic clock, ms.
        now_ms: u64,
        /// The neighbor the hello was sent to.
        neighbor: String,
    },
    /// The daemon is stopping: tell the up neighbors to forget us (a withdrawal of our own
    /// origin). The instance is not to be used afterwards.
    Shutdown {
        /// Monotonic clock, ms.
        now_ms: u64,
    },
}

/// What the daemon must do, or may log.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// Call `Neighbor.Hello` on the neighbor; report the outcome as
    /// [`Input::HelloAnswered`] or [`Input::HelloFailed`].
    SendHello {
        /// The neighbor.
        neighbor: String,
        /// The hello.
        hello: pb::Hello,
    },
    /// Call `Neighbor.Flood` on the neighbor (fire and forget: failures need no report).
    SendFlood {
        /// The neighbor.
        neighbor: String,
        /// The request.
        request: pb::FloodRequest,
    },
    /// A neighbor came up (or back up after a restart).
    NeighborUp {
        /// The neighbor.
        neighbor: String,
    },
    /// A neighbor went down.
    NeighborDown {
        /// The neighbor.
        neighbor: String,
        /// Why, for the log.
        reason: String,
    },
    /// An origin entered the view.
    ViewAdded {
        /// The origin.
        origin: String,
    },
    /// An origin left the view.
    ViewWithdrawn {
        /// The origin.
        origin: String,
        /// Why: `stale`, `neighbor lost`, `neighbor restarted`, or `withdrawn by SENDER: REASON`.
        reason: String,
    },
}

/// The effects of one call, collected as it runs.
#[derive(Default)]
struct Effects {
    actions: Vec<Action>,
    outbox: Outbox,
}

/// One router's protocol state.
#[derive(Clone, Debug)]
pub struct Instance {
    cfg: InstanceConfig,
    neighbors: BTreeMap<String, Neighbor>,
    view: View,
    own: Option<pb::TelemetryAdvert>,
    sequence: u64,
    next_hello_ms: Option<u64>,
    started_ms: Option<u64>,
    counters: Counters,
}

impl Instance {
    /// An instance with every neighbor down and an empty view.
    ///
    /// `cfg` should have passed [`InstanceConfig::validate`]; if not, out-of-range numbers are
    /// clamped into range and neighbors equal to the router itself are ignored.
    pub fn new(mut cfg: InstanceConfig) -> Self {
        cfg.boot_id = cfg.boot_id.max(1);
        cfg.hello_interval_ms = cfg.hello_interval_ms.clamp(MIN_INTERVAL_MS, MAX_INTERVAL_MS);
        cfg.dead_interval_ms = cfg
            .dead_interval_ms
            .clamp(cfg.hello_interval_ms + 1, MAX_DEAD_INTERVAL_MS);
        cfg.telemetry_interval_ms = cfg.telemetry_interval_ms.clamp(MIN_INTERVAL_MS, MAX_INTERVAL_MS);
        cfg.hop_limit = cfg.hop_limit.clamp(1, MAX_HOP_LIMIT);
        cfg.stale_after_intervals = cfg.stale_after_intervals.max(1);
        let neighbors = cfg
            .neighbors
            .iter()
            .filter(|n| n.id != cfg.router_id)
            .map(|n| (n.id.clone(), Neighbor::new(n.clone())))
            .collect();
        Instance {
            cfg,
            neighbors,
            view: View::new(),
            own: None,
            sequence: 0,
            next_hello_ms: None,
            started_ms: None,
            counters: Counters::default(),
        }
    }

    /// The configuration (after clamping).
    pub fn config(&self) -> &InstanceConfig {
        &self.cfg
    }

    /// This router's id.
    pub fn router_id(&self) -> &str {
        &self.cfg.router_id
    }

    /// The header of every message we send.
    pub fn header(&self) -> pb::Header {
        validate::header(&self.cfg.router_id)
    }

    /// Our latest advert.
    pub fn own(&self) -> Option<&pb::TelemetryAdvert> {
        self.own.as_ref()
    }

    /// What we know of other routers.
    pub fn view(&self) -> &View {
        &self.view
    }

    /// The neighbors, by id.
    pub fn neighbors(&self) -> impl Iterator<Item = &Neighbor> {
        self.neighbors.values()
    }

    /// One neighbor.
    pub fn neighbor(&self, id: &str) -> Option<&Neighbor> {
        self.neighbors.get(id)
    }

    /// The counters, for Prometheus.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// Handles a timer, a sample or the outcome of one of our hellos.
    pub fn process(&mut self, input: Input) -> Vec<Action> {
        let mut fx = Effects::default();
        match input {
            Input::Tick { now_ms } => {
                self.start(now_ms);
                self.tick(now_ms, &mut fx);
            }
            Input::Sample {
                now_ms,
                timestamp_unix_ns,
                resources,
                links,
                services,
                demand,
            } => {
                self.start(now_ms);
                self.sample(timestamp_unix_ns, resources, links, services, demand, &mut fx);
            }
            Input::HelloAnswered {
                now_ms,
                neighbor,
                reply,
                rtt_ms,
            } => {
                self.start(now_ms);
                if let Err(e) = self.hello_answered(now_ms, &neighbor, &reply, rtt_ms, &mut fx) {
                    self.counters.reject(&e);
                }
            }
            Input::HelloFailed { now_ms, neighbor } => {
                self.start(now_ms);
                if let Some(n) = self.neighbors.get_mut(&neighbor) {
                    n.failed();
                    self.counters.hellos_failed += 1;
                }
            }
            Input::Shutdown { now_ms } => {
                self.start(now_ms);
                let w = pb::Withdraw {
                    origin: self.cfg.router_id.clone(),
                    boot_id: self.cfg.boot_id,
                    hop_limit: self.cfg.hop_limit,
                    reason: REASON_SHUTDOWN.to_owned(),
                };
                for id in self.up_neighbors() {
                    fx.outbox.withdraw(&id, w.clone());
                }
            }
        }
        self.finish(fx)
    }

    /// Server side of `Neighbor.Hello`: checks the hello, refreshes its sender (which must be a
    /// configured neighbor) and replies. The actions are what hearing the neighbor caused — on
    /// coming up, our advert and view for it.
    pub fn on_hello(&mut self, now_ms: u64, hello: &pb::Hello) -> Result<(pb::HelloReply, Vec<Action>), ValidateError> {
        self.start(now_ms);
        let mut fx = Effects::default();
        if let Err(e) = self.hello(now_ms, hello, &mut fx) {
            self.counters.reject(&e);
            return Err(e);
        }
        let reply = pb::HelloReply {
            header: Some(self.header()),
            role: self.cfg.role as i32,
            boot_id: self.cfg.boot_id,
        };
        Ok((reply, self.finish(fx)))
    }

    /// Server side of `Neighbor.Flood`: checks the request (header, limits, sender a configured
    /// neighbor, in any state — else the whole request is rejected), then each withdrawal and each
    /// advert on its own: an invalid one is counted and skipped, a valid one applied and
    /// forwarded as the flooding rules say. The reply counts the items that changed the view
    /// (`accepted`) and the invalid ones (`rejected`); the rest were duplicates.
    pub fn on_flood(
        &mut self,
        now_ms: u64,
        request: &pb::FloodRequest,
    ) -> Result<(pb::FloodReply, Vec<Action>), ValidateError> {
        self.start(now_ms);
        let sender = match self.flood_sender(request) {
            Ok(s) => s,
            Err(e) => {
                self.counters.reject(&e);
                return Err(e);
            }
        };
        self.counters.floods_received += 1;
        let mut fx = Effects::default();
        let (mut accepted, mut rejected) = (0, 0);
        for w in &request.withdrawals {
            match validate::check_withdraw(w) {
                Ok(()) => accepted += u32::from(self.withdrawal(&sender, w, &mut fx)),
                Err(e) => {
                    self.counters.reject(&e);
                    rejected += 1;
                }
            }
        }
        for a in &request.adverts {
            match validate::check_advert(a) {
                Ok(()) => accepted += u32::from(self.advert(now_ms, &sender, a, &mut fx)),
                Err(e) => {
                    self.counters.reject(&e);
                    rejected += 1;
                }
            }
        }
        let reply = pb::FloodReply {
            header: Some(self.header()),
            accepted,
            rejected,
        };
        Ok((reply, self.finish(fx)))
    }

    /// The admin API's status. `now_unix_ns` (wall clock) is used for the view's latencies.
    pub fn status(&self, now_ms: u64, now_unix_ns: i64) -> pb::StatusReply {
        pb::StatusReply {
            router_id: self.cfg.router_id.clone(),
            role: self.cfg.role as i32,
            boot_id: self.cfg.boot_id,
            own: self.own.clone(),
            view: self
                .view
                .iter()
                .map(|e| e.to_pb(now_ms, now_unix_ns, self.cfg.stale_after_intervals))
                .collect(),
            neighbors: self.neighbors.values().map(|n| n.to_pb(now_ms)).collect(),
            counters: self.counters.to_pb(),
            uptime_ms: self.started_ms.map_or(0, |t| now_ms.saturating_sub(t)),
            // Filled in by the daemon, which owns the data path.
            datapath: Vec::new(),
        }
    }

    fn start(&mut self, now_ms: u64) {
        self.started_ms.get_or_insert(now_ms);
    }

    fn up_neighbors(&self) -> Vec<String> {
        self.neighbors
            .values()
            .filter(|n| n.is_up())
            .map(|n| n.id().to_owned())
            .collect()
    }

    fn tick(&mut self, now_ms: u64, fx: &mut Effects) {
        let dead_default = self.cfg.dead_interval_ms;
        let expired: Vec<(String, u32)> = self
            .neighbors
            .values()
            .filter(|n| n.expired(now_ms, dead_default))
            .map(|n| (n.id().to_owned(), n.dead_interval_ms(dead_default)))
            .collect();
        for (id, dead) in expired {
            self.neighbor_down(&id, format!("nothing heard for {dead} ms"), fx);
        }
        for origin in self.view.expired(now_ms, self.cfg.stale_after_intervals) {
            self.view.remove(&origin);
            self.withdrawn(origin, REASON_STALE.to_owned(), fx);
        }
        if self.next_hello_ms.is_none_or(|t| now_ms >= t) {
            self.next_hello_ms = Some(now_ms + u64::from(self.cfg.hello_interval_ms));
            for n in self.neighbors.values() {
                let hello = pb::Hello {
                    header: Some(validate::header(&self.cfg.router_id)),
                    role: self.cfg.role as i32,
                    boot_id: self.cfg.boot_id,
                    hello_interval_ms: self.cfg.hello_interval_ms,
                    dead_interval_ms: self.cfg.dead_interval_ms,
                    interface: n.config().interface.clone(),
                };
                fx.actions.push(Action::SendHello {
                    neighbor: n.id().to_owned(),
                    hello,
                });
                self.counters.hellos_sent += 1;
            }
        }
    }

    fn sample(
        &mut self,
        timestamp_unix_ns: i64,
        resources: pb::Resources,
        mut links: Vec<pb::LinkMetrics>,
        mut services: Vec<pb::ServiceInstance>,
        mut demand: Vec<pb::ServiceDemand>,
        fx: &mut Effects,
    ) {
        links.truncate(MAX_ITEMS_PER_ADVERT);
        services.truncate(MAX_ITEMS_PER_ADVERT);
        demand.truncate(MAX_ITEMS_PER_ADVERT);
        let advert = pb::TelemetryAdvert {
            origin: self.cfg.router_id.clone(),
            boot_id: self.cfg.boot_id,
            sequence: self.sequence + 1,
            timestamp_unix_ns,
            hop_limit: self.cfg.hop_limit,
            interval_ms: self.cfg.telemetry_interval_ms,
            role: self.cfg.role as i32,
            resources: Some(sanitize(resources)),
            services,
            links,
            control_address: self.cfg.control_address.clone(),
            demand,
        };
        if validate::check_advert(&advert).is_err() {
            self.counters.samples_rejected += 1;
            return;
        }
        self.sequence += 1;
        self.counters.adverts_originated += 1;
        for id in self.up_neighbors() {
            fx.outbox.advert(&id, advert.clone());
        }
        self.own = Some(advert);
    }

    fn hello(&mut self, now_ms: u64, hello: &pb::Hello, fx: &mut Effects) -> Result<(), ValidateError> {
        validate::check_hello(hello)?;
        let sender = hello.header.as_ref().map(|h| h.sender.as_str()).unwrap_or_default();
        let n = self
            .neighbors
            .get_mut(sender)
            .ok_or_else(|| ValidateError::UnknownNeighbor {
                sender: sender.to_owned(),
            })?;
        self.counters.hellos_received += 1;
        let t = n.hello(now_ms, hello);
        self.transition(now_ms, sender, t, hello.boot_id, fx);
        Ok(())
    }

    fn hello_answered(
        &mut self,
        now_ms: u64,
        neighbor: &str,
        reply: &pb::HelloReply,
        rtt_ms: f64,
        fx: &mut Effects,
    ) -> Result<(), ValidateError> {
        if !self.neighbors.contains_key(neighbor) {
            return Err(ValidateError::UnknownNeighbor {
                sender: neighbor.to_owned(),
            });
        }
        validate::check_hello_reply(reply)?;
        let sender = reply.header.as_ref().map(|h| h.sender.as_str()).unwrap_or_default();
        if sender != neighbor {
            return Err(ValidateError::SenderMismatch {
                expected: neighbor.to_owned(),
                got: sender.to_owned(),
            });
        }
        let n = self.neighbors.get_mut(neighbor).expect("checked above");
        self.counters.hellos_answered += 1;
        let t = n.answered(now_ms, reply, rtt_ms);
        self.transition(now_ms, neighbor, t, reply.boot_id, fx);
        Ok(())
    }

    /// Acts on what hearing neighbor `id` (now with `boot_id`) changed.
    fn transition(&mut self, now_ms: u64, id: &str, t: Transition, boot_id: u64, fx: &mut Effects) {
        match t {
            Transition::None => {}
            Transition::Up => self.neighbor_up(now_ms, id, fx),
            Transition::Restarted { old_boot_id } => {
                self.counters.neighbor_down += 1;
                fx.actions.push(Action::NeighborDown {
                    neighbor: id.to_owned(),
                    reason: format!("restarted (boot id {old_boot_id} is now {boot_id})"),
                });
                fx.outbox.drop_neighbor(id);
                // Its advert of the old boot is obsolete; one of the new boot (come by another
                // path already) is kept.
                if self.view.get(id).is_some_and(|e| e.advert.boot_id != boot_id) {
                    self.lose_origin(id, REASON_NEIGHBOR_RESTARTED, fx);
                }
                self.neighbor_up(now_ms, id, fx);
            }
        }
    }

    /// A neighbor came up: it gets our latest advert and the view entries it would have
    /// received from us had it been up when they arrived.
    fn neighbor_up(&mut self, now_ms: u64, id: &str, fx: &mut Effects) {
        self.counters.neighbor_up += 1;
        fx.actions.push(Action::NeighborUp {
            neighbor: id.to_owned(),
        });
        if let Some(own) = &self.own {
            fx.outbox.advert(id, own.clone());
        }
        for e in self.view.iter() {
            if e.advert.origin != id
                && e.learned_from != id
                && !e.is_stale(now_ms, self.cfg.stale_after_intervals)
                && let Some(copy) = flood::forwarded(&e.advert)
            {
                fx.outbox.advert(id, copy);
            }
        }
    }

    fn neighbor_down(&mut self, id: &str, reason: String, fx: &mut Effects) {
        let Some(n) = self.neighbors.get_mut(id) else { return };
        if !n.is_up() {
            return;
        }
        n.down();
        self.counters.neighbor_down += 1;
        fx.actions.push(Action::NeighborDown {
            neighbor: id.to_owned(),
            reason,
        });
        fx.outbox.drop_neighbor(id);
        self.lose_origin(id, REASON_NEIGHBOR_LOST, fx);
    }

    /// Removes neighbor `origin`'s advert and tells the other up neighbors, within our flooding
    /// radius less the hop to the lost neighbor.
    fn lose_origin(&mut self, origin: &str, why: &str, fx: &mut Effects) {
        let Some(e) = self.view.remove(origin) else { return };
        self.withdrawn(origin.to_owned(), why.to_owned(), fx);
        if self.cfg.hop_limit < 2 {
            return;
        }
        let w = pb::Withdraw {
            origin: origin.to_owned(),
            boot_id: e.advert.boot_id,
            hop_limit: self.cfg.hop_limit - 1,
            reason: REASON_NEIGHBOR_LOST.to_owned(),
        };
        for id in self.up_neighbors() {
            if id != origin {
                fx.outbox.withdraw(&id, w.clone());
            }
        }
    }

    fn withdrawn(&mut self, origin: String, reason: String, fx: &mut Effects) {
        self.counters.view_withdrawn += 1;
        fx.actions.push(Action::ViewWithdrawn { origin, reason });
    }

    fn flood_sender(&self, request: &pb::FloodRequest) -> Result<String, ValidateError> {
        let h = validate::check_flood_request(request)?;
        // A neighbor we consider down is heard all the same: it may have come up on its side
        // before our hello reply reached it (and sent us its view at once), or restarted.
        if self.neighbors.contains_key(&h.sender) {
            Ok(h.sender.clone())
        } else {
            Err(ValidateError::UnknownNeighbor {
                sender: h.sender.clone(),
            })
        }
    }

    /// Applies a (checked) withdrawal from `sender`; whether it removed an entry.
    ///
    /// It removes the origin's entry of the same boot when we learned that entry from `sender`
    /// (our path to the origin went through the router that lost it), or when the origin is
    /// `sender` itself (it is shutting down). An applied withdrawal is forwarded like an advert.
    fn withdrawal(&mut self, sender: &str, w: &pb::Withdraw, fx: &mut Effects) -> bool {
        let applies = w.origin != self.cfg.router_id
            && self
                .view
                .get(&w.origin)
                .is_some_and(|e| e.advert.boot_id == w.boot_id && (e.learned_from == sender || w.origin == sender));
        if !applies {
            self.counters.withdrawals_ignored += 1;
            return false;
        }
        self.counters.withdrawals_applied += 1;
        self.view.remove(&w.origin);
        self.withdrawn(w.origin.clone(), format!("withdrawn by {sender}: {}", w.reason), fx);
        if let Some(copy) = flood::forwarded_withdraw(w) {
            for id in self.up_neighbors() {
                if id != sender && id != w.origin {
                    fx.outbox.withdraw(&id, copy.clone());
                }
            }
        }
        true
    }

    /// Applies a (checked) advert from `sender`; whether it was stored.
    fn advert(&mut self, now_ms: u64, sender: &str, a: &pb::TelemetryAdvert, fx: &mut Effects) -> bool {
        if a.origin == self.cfg.router_id {
            self.counters.adverts_own += 1;
            return false;
        }
        let verdict = self.view.judge(a);
        let received_ms = match verdict {
            Verdict::Duplicate => {
                self.counters.adverts_duplicate += 1;
                return false;
            }
            Verdict::Older => {
                self.counters.adverts_older += 1;
                return false;
            }
            Verdict::Shorter => {
                self.counters.adverts_shorter += 1;
                self.view.get(&a.origin).map_or(now_ms, |e| e.received_ms)
            }
            Verdict::New if self.view.len() >= MAX_VIEW_ENTRIES => {
                self.counters.adverts_view_full += 1;
                return false;
            }
            Verdict::New | Verdict::Newer => {
                self.counters.adverts_accepted += 1;
                now_ms
            }
        };
        // From the origin itself it is one hop, whatever radius the origin uses.
        let hops = if a.origin == sender {
            1
        } else {
            flood::hops(self.cfg.hop_limit, a.hop_limit)
        };
        self.view.insert(Entry {
            advert: a.clone(),
            hops,
            learned_from: sender.to_owned(),
            received_ms,
        });
        if verdict == Verdict::New {
            self.counters.view_added += 1;
            fx.actions.push(Action::ViewAdded {
                origin: a.origin.clone(),
            });
        }
        if let Some(copy) = flood::forwarded(a) {
            for id in self.up_neighbors() {
                if id != sender && id != a.origin {
                    fx.outbox.advert(&id, copy.clone());
                }
            }
        }
        true
    }

    /// Turns the outbox into SendFlood actions (for neighbors still up), after the events.
    fn finish(&mut self, fx: Effects) -> Vec<Action> {
        let mut actions = fx.actions;
        let header = self.header();
        for (neighbor, request) in fx.outbox.into_requests(&header) {
            if !self.neighbors.get(&neighbor).is_some_and(Neighbor::is_up) {
                continue;
            }
            let c = &mut self.counters;
            c.floods_sent += 1;
            c.adverts_sent += request.adverts.len() as u64;
            c.adverts_forwarded += request
                .adverts
                .iter()
                .filter(|a| a.origin != self.cfg.router_id)
                .count() as u64;
            c.withdrawals_sent += request.withdrawals.len() as u64;
            actions.push(Action::SendFlood { neighbor, request });
        }
        actions
    }
}

/// A sample made valid where it can be: percentages clamped into 0-100, other quantities that
/// are negative or not finite set to 0.
fn sanitize(mut r: pb::Resources) -> pb::Resources {
    fn pct(v: &mut f64) {
        *v = if v.is_nan() { 0.0 } else { v.clamp(0.0, 100.0) };
    }
    fn qty(v: &mut f64) {
        if !(v.is_finite() && *v >= 0.0) {
            *v = 0.0;
        }
    }
    pct(&mut r.cpu_used_pct);
    pct(&mut r.mem_used_pct);
    qty(&mut r.cpu_capacity_cores);
    qty(&mut r.free_cpu_cores);
    for p in [&mut r.cpu_pressure, &mut r.mem_pressure, &mut r.io_pressure]
        .into_iter()
        .flatten()
    {
        pct(&mut p.some_avg10);
        pct(&mut p.full_avg10);
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(id: &str, neighbors: &[&str]) -> InstanceConfig {
        let mut c = InstanceConfig::new(id, pb::Role::Edge, 100);
        c.neighbors = neighbors
            .iter()
            .map(|n| NeighborConfig {
                id: (*n).into(),
                address: format!("{n}:7470"),
                interface: format!("to-{n}"),
            })
            .collect();
        c
    }

    fn hello_from(id: &str, boot_id: u64) -> pb::Hello {
        pb::Hello {
            header: Some(validate::header(id)),
            role: pb::Role::Fog as i32,
            boot_id,
            hello_interval_ms: 1000,
            dead_interval_ms: 3000,
            interface: "eth0".into(),
        }
    }

    fn reply_from(id: &str, boot_id: u64) -> pb::HelloReply {
        pb::HelloReply {
            header: Some(validate::header(id)),
            role: pb::Role::Fog as i32,
            boot_id,
        }
    }

    fn advert(origin: &str, boot_id: u64, sequence: u64, hop_limit: u32) -> pb::TelemetryAdvert {
        pb::TelemetryAdvert {
            origin: origin.into(),
            boot_id,
            sequence,
            timestamp_unix_ns: sequence as i64 * 1_000_000_000,
            hop_limit,
            interval_ms: 1000,
            role: pb::Role::Edge as i32,
            resources: Some(pb::Resources {
                cpu_used_pct: 10.0,
                mem_used_pct: 20.0,
                ..Default::default()
            }),
            services: vec![],
            links: vec![],
            ..Default::default()
        }
    }

    fn flood_from(id: &str, adverts: Vec<pb::TelemetryAdvert>, withdrawals: Vec<pb::Withdraw>) -> pb::FloodRequest {
        pb::FloodRequest {
            header: Some(validate::header(id)),
            adverts,
            withdrawals,
        }
    }

    fn withdraw(origin: &str, boot_id: u64, hop_limit: u32) -> pb::Withdraw {
        pb::Withdraw {
            origin: origin.into(),
            boot_id,
            hop_limit,
            reason: REASON_NEIGHBOR_LOST.into(),
        }
    }

    fn sample(now_ms: u64, cpu: f64) -> Input {
        Input::Sample {
            now_ms,
            timestamp_unix_ns: now_ms as i64 * 1_000_000,
            resources: pb::Resources {
                cpu_used_pct: cpu,
                mem_used_pct: 50.0,
                cpu_capacity_cores: 1.0,
                ..Default::default()
            },
            links: vec![],
            services: vec![],
            demand: vec![],
        }
    }

    /// r1 with neighbors r2, r3, r4, all up (heard at time 0).
    fn up(neighbors: &[&str]) -> Instance {
        let mut i = Instance::new(cfg("r1", neighbors));
        for n in neighbors {
            i.on_hello(0, &hello_from(n, 1)).unwrap();
        }
        i
    }

    /// The flood requests of `actions`.
    /// (neighbor, [(advert origin, hop limit)], [(withdrawn origin, hop limit)]).
    type Flood = (String, Vec<(String, u32)>, Vec<(String, u32)>);

    fn floods(actions: &[Action]) -> Vec<Flood> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::SendFlood { neighbor, request } => Some((
                    neighbor.clone(),
                    request
                        .adverts
                        .iter()
                        .map(|a| (a.origin.clone(), a.hop_limit))
                        .collect(),
                    request
                        .withdrawals
                        .iter()
                        .map(|w| (w.origin.clone(), w.hop_limit))
                        .collect(),
                )),
                _ => None,
            })
            .collect()
    }

    fn events(actions: &[Action]) -> Vec<String> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::NeighborUp { neighbor } => Some(format!("up {neighbor}")),
                Action::NeighborDown { neighbor, reason } => Some(format!("down {neighbor}: {reason}")),
                Action::ViewAdded { origin } => Some(format!("added {origin}")),
                Action::ViewWithdrawn { origin, reason } => Some(format!("withdrawn {origin}: {reason}")),
                _ => None,
            })
            .collect()
    }

    fn s(v: &str) -> String {
        v.to_owned()
    }

    #[test]
    fn config_checks() {
        assert_eq!(cfg("r1", &["r2"]).validate(), Ok(()));
        type Edit = fn(&mut InstanceConfig);
        let bad: Vec<(Edit, &str)> = vec![
            (
                |c| c.router_id = "r 1".into(),
                "router_id \"r 1\" is not a valid router id (1-64 characters of A-Z a-z 0-9 . _ -)",
            ),
            (
                |c| c.boot_id = 0,
                "boot_id is 0; use a number that changes at every start",
            ),
            (|c| c.hello_interval_ms = 1, "hello_interval_ms 1 is outside 10-600000"),
            (
                |c| c.dead_interval_ms = 1000,
                "dead_interval_ms 1000 is not longer than hello_interval_ms 1000",
            ),
            (
                |c| c.telemetry_interval_ms = 0,
                "telemetry_interval_ms 0 is outside 10-600000",
            ),
            (|c| c.hop_limit = 9, "hop_limit 9 is outside 1-8"),
            (
                |c| c.stale_after_intervals = 0,
                "stale_after_intervals 0 is outside 1-1000",
            ),
            (
                |c| c.neighbors[0].id = "r1".into(),
                "router \"r1\" lists itself as a neighbor",
            ),
            (
                |c| c.neighbors.push(c.neighbors[0].clone()),
                "neighbor \"r2\" is configured twice",
            ),
            (
                |c| c.neighbors[0].id = String::new(),
                "neighbor id \"\" is not a valid router id (1-64 characters of A-Z a-z 0-9 . _ -)",
            ),
        ];
        for (edit, msg) in bad {
            let mut c = cfg("r1", &["r2"]);
            edit(&mut c);
            assert_eq!(c.validate().unwrap_err().to_string(), msg);
        }
        // An invalid configuration is clamped rather than trusted.
        let mut c = cfg("r1", &["r1", "r2"]);
        c.hop_limit = 99;
        c.dead_interval_ms = 0;
        let i = Instance::new(c);
        assert_eq!(i.config().hop_limit, MAX_HOP_LIMIT);
        assert_eq!(i.config().dead_interval_ms, 1001);
        assert_eq!(i.neighbors().count(), 1);
    }

    #[test]
    fn ticks_send_hellos_every_interval() {
        let mut i = Instance::new(cfg("r1", &["r2", "r3"]));
        let a = i.process(Input::Tick { now_ms: 5 });
        let hellos: Vec<_> = a
            .iter()
            .map(|a| match a {
                Action::SendHello { neighbor, hello } => {
                    assert_eq!(hello.interface, format!("to-{neighbor}"));
                    assert_eq!(validate::check_hello(hello), Ok(()));
                    assert_eq!(hello.boot_id, 100);
                    neighbor.as_str()
                }
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(hellos, ["r2", "r3"]);
        assert!(i.process(Input::Tick { now_ms: 1004 }).is_empty());
        assert_eq!(i.process(Input::Tick { now_ms: 1005 }).len(), 2);
        assert_eq!(i.counters().hellos_sent, 4);
    }

    #[test]
    fn hellos_are_checked_and_bring_neighbors_up() {
        let mut i = Instance::new(cfg("r1", &["r2"]));
        i.process(sample(0, 10.0));
        let e = i.on_hello(1, &hello_from("r9", 1)).unwrap_err();
        assert_eq!(e.to_string(), "\"r9\" is not a configured neighbor of this router");
        let mut v2 = hello_from("r2", 1);
        v2.header.as_mut().unwrap().version = 2 << 16;
        assert_eq!(i.on_hello(1, &v2).unwrap_err().reason(), "version");
        assert_eq!(i.counters().rejected_total(), 2);
        assert_eq!(i.neighbor("r2").unwrap().state_name(), "down");

        let (reply, actions) = i.on_hello(10, &hello_from("r2", 1)).unwrap();
        let mut want = reply_from("r1", 100);
        want.role = pb::Role::Edge as i32;
        assert_eq!(reply, want);
        assert_eq!(events(&actions), ["up r2"]);
        assert_eq!(
            floods(&actions),
            [(s("r2"), vec![(s("r1"), 2)], vec![])],
            "our advert, at once"
        );
        assert_eq!(i.neighbor("r2").unwrap().state_name(), "init");
        let (_, again) = i.on_hello(20, &hello_from("r2", 1)).unwrap();
        assert!(again.is_empty());
        assert_eq!(i.counters().hellos_received, 2);
    }

    #[test]
    fn replies_must_come_from_the_neighbor_asked() {
        let mut i = Instance::new(cfg("r1", &["r2"]));
        let answered = |n: &str, reply| Input::HelloAnswered {
            now_ms: 5,
            neighbor: n.into(),
            reply,
            rtt_ms: 0.3,
        };
        assert!(i.process(answered("r2", reply_from("r7", 1))).is_empty());
        assert!(i.process(answered("r5", reply_from("r5", 1))).is_empty());
        assert!(i.process(answered("r2", reply_from("r2", 0))).is_empty());
        assert_eq!(
            i.counters().rejected,
            BTreeMap::from([("boot_id", 1), ("sender_mismatch", 1), ("unknown_neighbor", 1)])
        );
        assert_eq!(i.neighbor("r2").unwrap().state_name(), "down");
        assert_eq!(events(&i.process(answered("r2", reply_from("r2", 1)))), ["up r2"]);
        assert_eq!(i.neighbor("r2").unwrap().state_name(), "up");
        assert_eq!(i.neighbor("r2").unwrap().rtt_ms(), Some(0.3));
        i.process(Input::HelloFailed {
            now_ms: 6,
            neighbor: "r2".into(),
        });
        assert_eq!(i.neighbor("r2").unwrap().state_name(), "init");
        assert_eq!(i.counters().hellos_failed, 1);
    }

    #[test]
    fn samples_become_adverts_for_up_neighbors() {
        let mut i = Instance::new(cfg("r1", &["r2", "r3"]));
        assert!(i.process(sample(0, 10.0)).is_empty(), "nobody is up");
        i.on_hello(1, &hello_from("r2", 1)).unwrap();
        let a = i.process(sample(1000, 130.0));
        assert_eq!(floods(&a), [(s("r2"), vec![(s("r1"), 2)], vec![])]);
        let own = i.own().unwrap();
        assert_eq!((own.sequence, own.interval_ms, own.hop_limit), (2, 1000, 2));
        assert_eq!(own.resources.unwrap().cpu_used_pct, 100.0, "clamped");
        let mut bad = sample(2000, 1.0);
        if let Input::Sample { links, .. } = &mut bad {
            links.push(pb::LinkMetrics {
                neighbor: "not an id".into(),
                ..Default::default()
            });
        }
        assert!(i.process(bad).is_empty());
        assert_eq!(i.counters().samples_rejected, 1);
        assert_eq!(
            i.own().unwrap().sequence,
            2,
            "a rejected sample uses no sequence number"
        );
        assert_eq!(i.counters().adverts_originated, 2);
    }

    #[test]
    fn floods_are_accepted_forwarded_and_deduplicated() {
        let mut i = up(&["r2", "r3", "r4"]);
        let mut down = Instance::new(cfg("r1", &["r2"]));
        let (reply, _) = down
            .on_flood(0, &flood_from("r2", vec![advert("r2", 1, 1, 2)], vec![]))
            .unwrap();
        assert_eq!(
            reply.accepted, 1,
            "a neighbor that is down on our side is heard all the same"
        );
        assert_eq!(
            i.on_flood(0, &flood_from("r8", vec![], vec![])).unwrap_err().reason(),
            "unknown_neighbor"
        );

        // r3's advert, straight from r3: one hop; forwarded to r2 and r4 with one hop less.
        let (reply, a) = i
            .on_flood(10, &flood_from("r3", vec![advert("r3", 1, 1, 2)], vec![]))
            .unwrap();
        assert_eq!((reply.accepted, reply.rejected), (1, 0));
        assert_eq!(events(&a), ["added r3"]);
        assert_eq!(
            floods(&a),
            [
                (s("r2"), vec![(s("r3"), 1)], vec![]),
                (s("r4"), vec![(s("r3"), 1)], vec![])
            ]
        );
        assert_eq!(i.view().get("r3").unwrap().hops, 1);

        // The same advert via r2: a duplicate, dropped, not forwarded.
        let (reply, a) = i
            .on_flood(11, &flood_from("r2", vec![advert("r3", 1, 1, 1)], vec![]))
            .unwrap();
        assert_eq!((reply.accepted, reply.rejected), (0, 0));
        assert!(a.is_empty());
        // The duplicate again, our own advert back, and an invalid one.
        let mut invalid = advert("r5", 1, 1, 1);
        invalid.resources = None;
        let (reply, a) = i
            .on_flood(
                12,
                &flood_from(
                    "r2",
                    vec![advert("r3", 1, 1, 1), advert("r1", 100, 9, 1), invalid],
                    vec![],
                ),
            )
            .unwrap();
        assert_eq!((reply.accepted, reply.rejected), (0, 1));
        assert!(a.is_empty());
        let c = i.counters();
        assert_eq!((c.adverts_accepted, c.adverts_duplicate, c.adverts_own), (1, 2, 1));
        assert_eq!(c.rejected["missing"], 1);

        // A newer one from two hops away, whose limit is spent: stored, not forwarded.
        let (_, a) = i
            .on_flood(20, &flood_from("r2", vec![advert("r5", 1, 1, 1)], vec![]))
            .unwrap();
        assert_eq!(events(&a), ["added r5"]);
        assert!(floods(&a).is_empty());
        assert_eq!(i.view().get("r5").unwrap().hops, 2);
        assert_eq!(i.view().get("r5").unwrap().learned_from, "r2");
        let (_, a) = i
            .on_flood(21, &flood_from("r2", vec![advert("r5", 1, 1, 1)], vec![]))
            .unwrap();
        assert!(a.is_empty());
        let (_, a) = i
            .on_flood(22, &flood_from("r4", vec![advert("r5", 1, 2, 1)], vec![]))
            .unwrap();
        assert!(events(&a).is_empty(), "newer, but not new");
        assert_eq!(i.view().get("r5").unwrap().learned_from, "r4");
        assert_eq!(i.view().get("r5").unwrap().advert.sequence, 2);
        assert_eq!(i.view().get("r5").unwrap().received_ms, 22);
        let (_, a) = i
            .on_flood(23, &flood_from("r4", vec![advert("r5", 1, 1, 1)], vec![]))
            .unwrap();
        assert!(a.is_empty());
        assert_eq!(i.counters().adverts_older, 1);
    }

    #[test]
    fn a_shorter_path_upgrades_hops_and_is_forwarded_again() {
        let mut i = up(&["r2", "r3"]);
        // r4's advert first via r2, two hops...
        let (_, a) = i
            .on_flood(10, &flood_from("r2", vec![advert("r4", 1, 1, 2)], vec![]))
            .unwrap();
        assert_eq!(floods(&a), [(s("r3"), vec![(s("r4"), 1)], vec![])]);
        // ... then the same advert with more hop limit left via r3: one hop shorter.
        let (reply, a) = i
            .on_flood(15, &flood_from("r3", vec![advert("r4", 1, 1, 3)], vec![]))
            .unwrap();
        assert_eq!(reply.accepted, 1);
        assert!(events(&a).is_empty());
        assert_eq!(floods(&a), [(s("r2"), vec![(s("r4"), 2)], vec![])]);
        let e = i.view().get("r4").unwrap();
        assert_eq!((e.hops, e.learned_from.as_str(), e.received_ms), (1, "r3", 10));
        assert_eq!(i.counters().adverts_shorter, 1);
    }

    #[test]
    fn withdrawals_follow_the_path_the_advert_took() {
        let mut i = up(&["r2", "r3", "r4"]);
        i.on_flood(
            1,
            &flood_from("r2", vec![advert("r5", 1, 1, 2), advert("r6", 1, 1, 1)], vec![]),
        )
        .unwrap();
        i.on_flood(1, &flood_from("r3", vec![advert("r7", 1, 1, 1)], vec![]))
            .unwrap();
        // Not from the neighbor we learned r7 from, wrong boot, unknown origin, ourselves.
        let (reply, a) = i
            .on_flood(
                2,
                &flood_from(
                    "r2",
                    vec![],
                    vec![
                        withdraw("r7", 1, 1),
                        withdraw("r5", 9, 1),
                        withdraw("r9", 1, 1),
                        withdraw("r1", 100, 1),
                    ],
                ),
            )
            .unwrap();
        assert_eq!((reply.accepted, reply.rejected), (0, 0));
        assert!(a.is_empty());
        assert_eq!(i.counters().withdrawals_ignored, 4);
        // From the neighbor we learned them from: removed; forwarded while the limit allows.
        let (reply, a) = i
            .on_flood(
                3,
                &flood_from("r2", vec![], vec![withdraw("r5", 1, 2), withdraw("r6", 1, 1)]),
            )
            .unwrap();
        assert_eq!(reply.accepted, 2);
        assert_eq!(
            events(&a),
            [
                "withdrawn r5: withdrawn by r2: neighbor lost",
                "withdrawn r6: withdrawn by r2: neighbor lost"
            ]
        );
        assert_eq!(
            floods(&a),
            [
                (s("r3"), vec![], vec![(s("r5"), 1)]),
                (s("r4"), vec![], vec![(s("r5"), 1)])
            ]
        );
        // A router withdrawing itself (shutdown) is believed whatever path we learned it by.
        let mut w = withdraw("r3", 1, 2);
        w.reason = REASON_SHUTDOWN.into();
        i.on_flood(4, &flood_from("r3", vec![advert("r3", 1, 1, 2)], vec![]))
            .unwrap();
        let (_, a) = i.on_flood(5, &flood_from("r3", vec![], vec![w])).unwrap();
        assert_eq!(events(&a), ["withdrawn r3: withdrawn by r3: shutdown"]);
        assert_eq!(floods(&a).len(), 2);
    }

    #[test]
    fn a_dead_neighbor_is_withdrawn_and_its_loss_flooded() {
        let mut i = up(&["r2", "r3"]);
        i.on_flood(
            100,
            &flood_from("r2", vec![advert("r2", 7, 1, 2), advert("r5", 1, 1, 1)], vec![]),
        )
        .unwrap();
        i.on_hello(2000, &hello_from("r3", 1)).unwrap();
        assert!(events(&i.process(Input::Tick { now_ms: 2999 })).is_empty());
        let a = i.process(Input::Tick { now_ms: 3000 });
        assert_eq!(
            events(&a),
            ["down r2: nothing heard for 3000 ms", "withdrawn r2: neighbor lost"]
        );
        assert_eq!(floods(&a), [(s("r3"), vec![], vec![(s("r2"), 1)])]);
        let w = match a.iter().find(|a| matches!(a, Action::SendFlood { .. })).unwrap() {
            Action::SendFlood { request, .. } => request.withdrawals[0].clone(),
            _ => unreachable!(),
        };
        assert_eq!((w.boot_id, w.reason.as_str()), (7, REASON_NEIGHBOR_LOST));
        assert!(
            i.view().get("r5").is_some(),
            "learned via r2, but only ageing removes it"
        );
        assert_eq!(i.neighbor("r2").unwrap().state_name(), "down");
    }

    #[test]
    fn a_restart_is_a_down_and_an_up_with_a_resync() {
        let mut i = up(&["r2", "r3"]);
        i.process(sample(5, 1.0));
        i.on_flood(10, &flood_from("r2", vec![advert("r2", 1, 4, 2)], vec![]))
            .unwrap();
        i.on_flood(
            10,
            &flood_from("r3", vec![advert("r3", 1, 4, 2), advert("r6", 1, 4, 2)], vec![]),
        )
        .unwrap();
        let (_, a) = i.on_hello(20, &hello_from("r2", 2)).unwrap();
        assert_eq!(
            events(&a),
            [
                "down r2: restarted (boot id 1 is now 2)",
                "withdrawn r2: neighbor restarted",
                "up r2"
            ]
        );
        assert_eq!(
            floods(&a),
            [
                (s("r2"), vec![(s("r1"), 2), (s("r3"), 1), (s("r6"), 1)], vec![]),
                (s("r3"), vec![], vec![(s("r2"), 1)]),
            ]
        );
        // Its new adverts (sequence from 1 again) are accepted.
        let mut fresh = advert("r2", 2, 1, 2);
        fresh.timestamp_unix_ns = 99_000_000_000;
        let (reply, a) = i.on_flood(21, &flood_from("r2", vec![fresh], vec![])).unwrap();
        assert_eq!(reply.accepted, 1);
        assert_eq!(events(&a), ["added r2"]);
    }

    #[test]
    fn entries_age_stale_then_expire() {
        let mut i = up(&["r2"]);
        i.on_flood(0, &flood_from("r2", vec![advert("r2", 1, 1, 2)], vec![]))
            .unwrap();
        let view = |i: &Instance, t| i.status(t, 0).view.iter().map(|e| e.stale).collect::<Vec<_>>();
        assert_eq!(view(&i, 2999), [false]);
        assert_eq!(view(&i, 3000), [true]);
        // Keep r2 alive: only its adverts stop.
        for t in [1000, 2000, 3000, 4000, 5000] {
            i.on_hello(t, &hello_from("r2", 1)).unwrap();
            assert!(events(&i.process(Input::Tick { now_ms: t })).is_empty());
        }
        let a = i.process(Input::Tick { now_ms: 6000 });
        assert_eq!(events(&a), ["withdrawn r2: stale"]);
        assert!(floods(&a).is_empty(), "ageing floods nothing");
        assert!(i.view().is_empty());
    }

    #[test]
    fn a_new_neighbor_gets_what_it_missed() {
        let mut i = Instance::new(cfg("r1", &["r2", "r3", "r4"]));
        for n in ["r2", "r3"] {
            i.on_hello(0, &hello_from(n, 1)).unwrap();
        }
        let adverts = vec![advert("r2", 1, 1, 2), advert("r5", 1, 1, 1), advert("r6", 1, 1, 2)];
        i.on_flood(1, &flood_from("r2", adverts, vec![])).unwrap();
        // r4 is down on our side, but its flood is heard.
        i.on_flood(1, &flood_from("r4", vec![advert("r7", 1, 1, 2)], vec![]))
            .unwrap();
        // r4 comes up: it gets the entries with hop limit to spare (not r5), except those
        // learned from it (r7).
        let (_, a) = i.on_hello(2, &hello_from("r4", 1)).unwrap();
        assert_eq!(floods(&a), [(s("r4"), vec![(s("r2"), 1), (s("r6"), 1)], vec![])]);
        // Stale entries are not handed out: r3 restarts once everything is stale.
        let (_, a) = i.on_hello(5000, &hello_from("r3", 5)).unwrap();
        assert_eq!(events(&a), ["down r3: restarted (boot id 1 is now 5)", "up r3"]);
        assert_eq!(floods(&a), Vec::new());
    }

    #[test]
    fn shutdown_withdraws_ourselves() {
        let mut i = up(&["r2", "r3"]);
        let a = i.process(Input::Shutdown { now_ms: 9 });
        assert_eq!(
            floods(&a),
            [
                (s("r2"), vec![], vec![(s("r1"), 2)]),
                (s("r3"), vec![], vec![(s("r1"), 2)])
            ]
        );
        assert_eq!(i.counters().withdrawals_sent, 2);
    }

    #[test]
    fn status_reports_everything() {
        let mut i = Instance::new(cfg("r1", &["r2", "r3", "r4"]));
        i.process(Input::Tick { now_ms: 1000 });
        i.on_hello(1100, &hello_from("r2", 1)).unwrap();
        i.process(Input::HelloAnswered {
            now_ms: 1200,
            neighbor: "r3".into(),
            reply: reply_from("r3", 1),
            rtt_ms: 2.5,
        });
        i.process(sample(1300, 5.0));
        i.on_flood(
            1400,
            &flood_from(
                "r3",
                vec![pb::TelemetryAdvert {
                    timestamp_unix_ns: 1_000_000_000,
                    ..advert("r3", 1, 1, 2)
                }],
                vec![],
            ),
        )
        .unwrap();
        let st = i.status(1500, 1_200_000_000);
        assert_eq!((st.router_id.as_str(), st.boot_id, st.uptime_ms), ("r1", 100, 500));
        assert_eq!(st.own.as_ref().unwrap().sequence, 1);
        let n: Vec<_> = st
            .neighbors
            .iter()
            .map(|n| (n.id.as_str(), n.state.as_str(), n.rtt_ms, n.last_heard_ms))
            .collect();
        assert_eq!(
            n,
            [
                ("r2", "init", None, 400),
                ("r3", "up", Some(2.5), 300),
                ("r4", "down", None, 0)
            ]
        );
        assert_eq!(st.neighbors[0].address, "r2:7470");
        let v = &st.view[0];
        assert_eq!(
            (v.hops, v.age_ms, v.learned_from.as_str(), v.stale),
            (1, 100, "r3", false)
        );
        // Received at wall clock 1.1 s, sampled at 1.0 s.
        assert!((v.latency_ms - 100.0).abs() < 1e-6, "{}", v.latency_ms);
        let counter = |name: &str| st.counters.iter().find(|c| c.name == name).unwrap().value;
        assert_eq!(counter("hellos_sent"), 3);
        assert_eq!(counter("adverts_accepted"), 1);
        assert_eq!(counter("neighbor_up"), 2);
    }

    #[test]
    fn the_view_is_bounded() {
        let mut i = up(&["r2"]);
        for chunk in 0..MAX_VIEW_ENTRIES / 256 + 1 {
            let adverts = (0..256).map(|k| advert(&format!("o{chunk}-{k}"), 1, 1, 1)).collect();
            i.on_flood(1, &flood_from("r2", adverts, vec![])).unwrap();
        }
        assert_eq!(i.view().len(), MAX_VIEW_ENTRIES);
        assert_eq!(i.counters().adverts_view_full, 256);
        // Known origins are still updated.
        let (reply, _) = i
            .on_flood(2, &flood_from("r2", vec![advert("o0-0", 1, 2, 1)], vec![]))
            .unwrap();
        assert_eq!(reply.accepted, 1);
    }

    #[test]
    fn one_flood_per_neighbor_per_call() {
        let mut i = up(&["r2", "r3"]);
        let adverts = (0..10).map(|k| advert(&format!("o{k}"), 1, 1, 2)).collect();
        let (_, a) = i.on_flood(1, &flood_from("r2", adverts, vec![])).unwrap();
        let f = floods(&a);
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].1.len(), 10);
        assert_eq!(i.counters().floods_sent, 1);
        assert_eq!(i.counters().adverts_forwarded, 10);
    }
}
