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

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};

use crate::counters::Counters;
use crate::delta;
use crate::flood::{self, Item, Outbox};
use crate::neighbor::{Held, Neighbor, NeighborConfig, Transition};
use crate::pb;
use crate::validate::{
    self, MAX_DEAD_INTERVAL_MS, MAX_HOP_LIMIT, MAX_INTERVAL_MS, MAX_ITEMS_PER_ADVERT, MIN_INTERVAL_MS, ValidateError,
};
use crate::view::{Entry, HeldHops, MAX_VIEW_ENTRIES, Verdict, View};

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
/// Default number of intervals an unchanged advert waits before it is sent again.
pub const DEFAULT_QUIET_INTERVALS: u32 = wuos_model::daemon::DEFAULT_QUIET_INTERVALS;

/// The share of its origin's interval within which a forwarded advert leaves, counted from the
/// origin's sample (the rest is left for the links and the wake-ups on the way): without it, an
/// advert received just after our own sample would wait a whole interval for the next.
///
/// 8/10 since 2.7 (9/10 in 2.5 and 2.6): at 1,000 daemons on two cores, the wake-ups on the way
/// took more than the 100 ms the 9/10 left before an interval + 20 ms (a 2-hop p99 of 1,048 ms
/// was measured); with refreshes a tenth as frequent, the deadline flushes it adds are few.
pub const FORWARD_BUDGET: (u64, u64) = (8, 10);

/// Why a ViewWithdrawn happened: the entry aged out.
pub const REASON_STALE: &str = "stale";
/// Why a ViewWithdrawn happened, and the reason a withdrawal carries: a neighbor was lost.
pub const REASON_NEIGHBOR_LOST: &str = "neighbor lost";
/// Why a ViewWithdrawn happened: a neighbor restarted (its old advert is obsolete).
pub const REASON_NEIGHBOR_RESTARTED: &str = "neighbor restarted";
/// The reason of the withdrawal a router floods about itself when it shuts down.
pub const REASON_SHUTDOWN: &str = "shutdown";
/// Withdrawal reason: an orphan re-attached by a longer path (its copy follows).
pub const REASON_REROUTED: &str = "rerouted";

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
    /// Quiet adverts: a sample that says nothing new (only its sequence and timestamp would
    /// move) is not sent, until this many intervals have passed since our last advert; 1 sends
    /// every sample. Announced in our adverts (receivers keep our entry fresh that much longer).
    pub quiet_intervals: u32,
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
            quiet_intervals: DEFAULT_QUIET_INTERVALS,
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
        range(
            "quiet_intervals",
            self.quiet_intervals,
            1,
            validate::MAX_QUIET_INTERVALS,
        )?;
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
// A sample is the large variant; inputs are built once and moved in, never stored.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq)]
pub enum Input {
    /// Periodic tick (the daemon calls it at least every quarter hello interval): detects dead
    /// neighbors, removes expired view entries, sends keepalives and frames that waited a whole
    /// telemetry interval.
    Tick {
        /// Monotonic clock, ms.
        now_ms: u64,
    },
    /// A new local sample: becomes our own advert (next sequence, hop limit = the flooding
    /// radius), and every up neighbor gets one frame with it and everything else due to it.
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
        /// The orchestrator whose region this router belongs to ("" for none).
        region: String,
        /// This router's orchestrator's placements (empty unless it runs one).
        placements: Vec<pb::Placement>,
        /// Its SD-WAN tunnels, when it is an SD-WAN edge holding any.
        sdwan: Option<pb::SdwanEdgeState>,
    },
    /// A link to `neighbor` opened (we dialled it, or it dialled us and its first frame named
    /// it): our hello goes out on it.
    LinkOpened {
        /// Monotonic clock, ms.
        now_ms: u64,
        /// The neighbor.
        neighbor: String,
    },
    /// The link to `neighbor` closed (either side, or the transport failed).
    LinkClosed {
        /// Monotonic clock, ms.
        now_ms: u64,
        /// The neighbor.
        neighbor: String,
        /// Why, for the log.
        reason: String,
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
    /// Send the frame on the link to the neighbor (fire and forget: a link that fails is
    /// reported as [`Input::LinkClosed`]).
    SendFrame {
        /// The neighbor.
        neighbor: String,
        /// The frame.
        frame: Box<pb::Frame>,
    },
    /// Close the link to the neighbor (declared dead, or it broke the protocol); a new one may
    /// be opened afterwards.
    CloseLink {
        /// The neighbor.
        neighbor: String,
        /// Why, for the log.
        reason: String,
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

/// What one sample brings to our advert.
struct Own {
    timestamp_unix_ns: i64,
    resources: pb::Resources,
    links: Vec<pb::LinkMetrics>,
    services: Vec<pb::ServiceInstance>,
    demand: Vec<pb::ServiceDemand>,
    region: String,
    placements: Vec<pb::Placement>,
    sdwan: Option<pb::SdwanEdgeState>,
}

/// One router's protocol state.
#[derive(Clone, Debug)]
pub struct Instance {
    cfg: InstanceConfig,
    neighbors: BTreeMap<String, Neighbor>,
    view: View,
    own: Option<pb::TelemetryAdvert>,
    /// The change from our previous advert to `own`.
    own_delta: Option<pb::AdvertDelta>,
    sequence: u64,
    /// Samples since our last advert that said nothing new (quiet adverts).
    quiet_samples: u32,
    /// A neighbor came up or went down since our last advert: the next sample is sent even if
    /// it says the same, so that routers which dropped us with a withdrawal along the broken
    /// path hear us again by another within an interval, as without quiet adverts.
    neighbors_changed: bool,
    started_ms: Option<u64>,
    /// Our last sample's monotonic time and wall clock: the wall clock at any other time, for the
    /// age of a received advert (its origin's sample time is wall clock).
    wall: Option<(u64, i64)>,
    counters: Counters,
    /// What is due to each neighbor; kept between calls.
    outbox: Outbox,
    /// Events of the current call.
    events: Vec<Action>,
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
        cfg.quiet_intervals = cfg.quiet_intervals.clamp(1, validate::MAX_QUIET_INTERVALS);
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
            own_delta: None,
            sequence: 0,
            quiet_samples: 0,
            wall: None,
            neighbors_changed: false,
            started_ms: None,
            counters: Counters::default(),
            outbox: Outbox::new(),
            events: Vec::new(),
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

    /// Our hello: the first frame of every link carries it.
    pub fn hello(&self, interface: &str) -> pb::Hello {
        pb::Hello {
            header: Some(self.header()),
            role: self.cfg.role as i32,
            boot_id: self.cfg.boot_id,
            hello_interval_ms: self.cfg.hello_interval_ms,
            dead_interval_ms: self.cfg.dead_interval_ms,
            interface: interface.to_owned(),
        }
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

    /// Handles a timer, a sample, or a change of a link.
    pub fn process(&mut self, input: Input) -> Vec<Action> {
        let now_ms = match &input {
            Input::Tick { now_ms }
            | Input::Sample { now_ms, .. }
            | Input::LinkOpened { now_ms, .. }
            | Input::LinkClosed { now_ms, .. }
            | Input::Shutdown { now_ms } => *now_ms,
        };
        self.start(now_ms);
        let mut flush_all = false;
        match input {
            Input::Tick { now_ms } => self.tick(now_ms),
            Input::Sample {
                now_ms,
                timestamp_unix_ns,
                resources,
                links,
                services,
                demand,
                region,
                placements,
                sdwan,
            } => {
                let own = Own {
                    timestamp_unix_ns,
                    resources,
                    links,
                    services,
                    demand,
                    region,
                    placements,
                    sdwan,
                };
                self.sample(now_ms, own);
                flush_all = true;
            }
            Input::LinkOpened { now_ms, neighbor } => {
                if let Some(n) = self.neighbors.get(&neighbor) {
                    if n.has_link() {
                        self.neighbor_down(now_ms, &neighbor, "its link was replaced by a new one".into());
                    }
                    let n = self.neighbors.get_mut(&neighbor).expect("checked above");
                    n.link_opened(now_ms);
                    self.counters.links_opened += 1;
                    self.outbox.hello(&neighbor, now_ms);
                }
            }
            Input::LinkClosed {
                now_ms,
                neighbor,
                reason,
            } => {
                if self.neighbors.get(&neighbor).is_some_and(Neighbor::has_link) {
                    self.counters.links_closed += 1;
                    self.neighbor_down(now_ms, &neighbor, format!("link closed: {reason}"));
                }
            }
            Input::Shutdown { now_ms } => {
                let w = pb::Withdraw {
                    origin: self.cfg.router_id.clone(),
                    boot_id: self.cfg.boot_id,
                    hop_limit: self.cfg.hop_limit,
                    reason: REASON_SHUTDOWN.to_owned(),
                };
                for id in self.up_neighbors() {
                    self.outbox.withdraw(&id, w.clone(), now_ms);
                }
            }
        }
        self.finish(now_ms, flush_all)
    }

    /// A frame from `neighbor`, on its link. Checks the frame as a whole (header, limits, hello,
    /// sender = `neighbor`, a configured neighbor whose hello came first) — else it is rejected
    /// whole, counted, and the error returned beside the actions — then each withdrawal, advert
    /// and delta on its own: an invalid one is counted and skipped, a valid one applied and
    /// forwarded as the flooding rules say. `rtt_ms` is the round trip the transport measured
    /// with the frame's echo, if any. The actions are to be executed whatever the outcome (a
    /// rejected frame may still have brought its sender up before the error was found).
    pub fn on_frame(
        &mut self,
        now_ms: u64,
        neighbor: &str,
        frame: &pb::Frame,
        rtt_ms: Option<f64>,
    ) -> (Vec<Action>, Result<(), ValidateError>) {
        self.start(now_ms);
        let r = self.frame(now_ms, neighbor, frame, rtt_ms);
        if let Err(e) = &r {
            self.counters.reject(e);
        }
        (self.finish(now_ms, false), r)
    }

    /// The admin API's status. `now_unix_ns` (wall clock) is used for the view's latencies.
    pub fn status(&self, now_ms: u64, now_unix_ns: i64) -> pb::StatusReply {
        pb::StatusReply {
            view: self
                .view
                .iter()
                .map(|e| e.to_pb(now_ms, now_unix_ns, self.cfg.stale_after_intervals))
                .collect(),
            ..self.status_without_view(now_ms)
        }
    }

    /// [`Instance::status`] with an empty view.
    pub fn status_without_view(&self, now_ms: u64) -> pb::StatusReply {
        pb::StatusReply {
            router_id: self.cfg.router_id.clone(),
            role: self.cfg.role as i32,
            boot_id: self.cfg.boot_id,
            own: self.own.clone(),
            view: Vec::new(),
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

    /// The earliest time at which an [`Input::Tick`] may do anything: a neighbor's dead interval
    /// ending, a keepalive falling due, a view entry expiring, something queued reaching its
    /// telemetry interval. Before it a tick changes nothing and sends nothing, so a daemon may
    /// sleep until then instead of ticking on a fixed period; `None`: nothing will until another
    /// input.
    pub fn next_tick_ms(&self) -> Option<u64> {
        let dead_default = self.cfg.dead_interval_ms;
        let hello = u64::from(self.cfg.hello_interval_ms);
        let neighbors = self.neighbors.values().flat_map(|n| {
            let keepalive = n
                .is_up()
                .then(|| n.last_sent_ms().map_or(0, |t| t.saturating_add(hello)));
            [n.expires_at_ms(dead_default), keepalive]
        });
        let queued = self.outbox.next_ready_ms(u64::from(self.cfg.telemetry_interval_ms));
        neighbors
            .chain([self.view.next_expiry_ms(self.cfg.stale_after_intervals), queued])
            .flatten()
            .min()
    }

    /// The earliest forwarding deadline (docs/protocol.md, "Forwarding deadline"), which
    /// [`Instance::next_tick_ms`] counts too: a daemon that lets its timers' ticks come a little
    /// late should tick on time for this one.
    pub fn next_deadline_ms(&self) -> Option<u64> {
        self.outbox.next_deadline_ms()
    }

    fn tick(&mut self, now_ms: u64) {
        let dead_default = self.cfg.dead_interval_ms;
        let expired: Vec<(String, bool, u32)> = self
            .neighbors
            .values()
            .filter(|n| n.expired(now_ms, dead_default))
            .map(|n| (n.id().to_owned(), n.is_up(), n.dead_interval_ms(dead_default)))
            .collect();
        for (id, up, dead) in expired {
            let reason = if up {
                format!("nothing heard for {dead} ms")
            } else {
                format!("no hello within {dead} ms of the link opening")
            };
            self.events.push(Action::CloseLink {
                neighbor: id.clone(),
                reason: reason.clone(),
            });
            self.counters.links_closed += 1;
            self.neighbor_down(now_ms, &id, reason);
        }
        for origin in self.view.expired(now_ms, self.cfg.stale_after_intervals) {
            let Some(e) = self.view.remove(&origin) else { continue };
            self.withdrawn(origin, REASON_STALE.to_owned());
            // Routers that learned it from us keep it as long as our link to them lives: they
            // are told (an orphan we could not re-attach, mostly).
            let except = e.learned_from.clone();
            self.withdraw_downstream(now_ms, &e, &except, REASON_STALE, false);
        }
        // Keepalives: a neighbor must hear us at least every hello interval.
        self.keepalives(now_ms, 0);
    }

    /// A keepalive to every up neighbor that will have heard nothing from us for a hello
    /// interval `ahead_ms` from now (0 at a tick: those that have not already).
    fn keepalives(&mut self, now_ms: u64, ahead_ms: u64) {
        let hello = u64::from(self.cfg.hello_interval_ms);
        let quiet: Vec<String> = self
            .neighbors
            .values()
            .filter(|n| {
                n.is_up()
                    && n.last_sent_ms()
                        .is_none_or(|t| now_ms.saturating_sub(t).saturating_add(ahead_ms) >= hello)
            })
            .map(|n| n.id().to_owned())
            .collect();
        for id in quiet {
            self.outbox.keepalive(&id, now_ms);
        }
    }

    fn sample(&mut self, now_ms: u64, mut own: Own) {
        self.wall = Some((now_ms, own.timestamp_unix_ns));
        own.placements.truncate(MAX_ITEMS_PER_ADVERT);
        own.links.truncate(MAX_ITEMS_PER_ADVERT);
        own.services.truncate(MAX_ITEMS_PER_ADVERT);
        own.demand.truncate(MAX_ITEMS_PER_ADVERT);
        if let Some(s) = &mut own.sdwan {
            s.items.truncate(MAX_ITEMS_PER_ADVERT);
        }
        let advert = pb::TelemetryAdvert {
            origin: self.cfg.router_id.clone(),
            boot_id: self.cfg.boot_id,
            sequence: self.sequence + 1,
            timestamp_unix_ns: own.timestamp_unix_ns,
            hop_limit: self.cfg.hop_limit,
            interval_ms: self.cfg.telemetry_interval_ms,
            quiet_intervals: self.cfg.quiet_intervals,
            role: self.cfg.role as i32,
            resources: Some(sanitize(own.resources)),
            services: own.services,
            links: own.links,
            control_address: self.cfg.control_address.clone(),
            demand: own.demand,
            region: own.region,
            placements: own.placements,
            sdwan: own.sdwan,
        };
        if validate::check_advert(&advert).is_err() {
            self.counters.samples_rejected += 1;
            return;
        }
        // Quiet adverts: a sample that says what our last advert said is not sent, until
        // `quiet_intervals` intervals have passed since it; our neighbors still hear from us.
        if let Some(last) = &self.own
            && !self.neighbors_changed
            && self.quiet_samples + 1 < self.cfg.quiet_intervals
            && says_the_same(last, &advert)
        {
            self.quiet_samples += 1;
            self.counters.samples_quiet += 1;
            // Our neighbors must still hear us: those that would not before our next sample get
            // a keepalive now, with the sample, rather than at a tick of their own between two
            // samples (one wake-up, not two). Strictly before: hence the millisecond less.
            let next = u64::from(self.cfg.telemetry_interval_ms);
            self.keepalives(now_ms, next - 1);
            return;
        }
        self.quiet_samples = 0;
        self.neighbors_changed = false;
        self.sequence += 1;
        self.counters.adverts_originated += 1;
        self.own_delta = self.own.as_ref().and_then(|prev| delta::diff(prev, &advert));
        let me = self.cfg.router_id.clone();
        for id in self.up_neighbors() {
            self.outbox.due(&id, &me, now_ms, false);
        }
        self.own = Some(advert);
    }

    /// Everything about one frame but the counting of its rejection.
    fn frame(
        &mut self,
        now_ms: u64,
        neighbor: &str,
        frame: &pb::Frame,
        rtt_ms: Option<f64>,
    ) -> Result<(), ValidateError> {
        let h = validate::check_frame_head(frame)?;
        if h.sender != neighbor {
            return Err(ValidateError::SenderMismatch {
                expected: neighbor.to_owned(),
                got: h.sender.clone(),
            });
        }
        let Some(n) = self.neighbors.get_mut(neighbor) else {
            return Err(ValidateError::UnknownNeighbor {
                sender: neighbor.to_owned(),
            });
        };
        if let Some(hello) = &frame.hello {
            if !n.has_link() {
                // The transport reports the link before its frames; a hello without one is a
                // peer that dialled while we had declared it down: the link is open all the same.
                n.link_opened(now_ms);
                self.counters.links_opened += 1;
                self.outbox.hello(neighbor, now_ms);
            }
            let n = self.neighbors.get_mut(neighbor).expect("checked above");
            self.counters.hellos_received += 1;
            let t = n.hello(now_ms, hello);
            self.transition(now_ms, neighbor, t, hello.boot_id);
        }
        let n = self.neighbors.get_mut(neighbor).expect("checked above");
        if !n.is_up() {
            return Err(ValidateError::NotUp {
                sender: neighbor.to_owned(),
            });
        }
        n.heard(now_ms);
        if let Some(rtt) = rtt_ms {
            n.rtt(rtt);
        }
        self.counters.frames_received += 1;
        for origin in &frame.need_full {
            self.send_whole(now_ms, neighbor, origin);
        }
        for w in &frame.withdrawals {
            match validate::check_withdraw(w) {
                Ok(()) => self.withdrawal(now_ms, neighbor, w),
                Err(e) => self.counters.reject(&e),
            }
        }
        for a in &frame.adverts {
            match validate::check_advert(a) {
                Ok(()) => self.advert(now_ms, neighbor, Cow::Borrowed(a), None),
                Err(e) => self.counters.reject(&e),
            }
        }
        for d in &frame.deltas {
            match validate::check_delta(d) {
                Ok(()) => self.delta(now_ms, neighbor, d),
                Err(e) => self.counters.reject(&e),
            }
        }
        Ok(())
    }

    /// The neighbor asked for `origin`'s whole advert: it holds nothing of it we can build on,
    /// or it lost the neighbor it had it from. Never one we learned from it (split horizon: our
    /// copy would lean on the path it asks for another to).
    fn send_whole(&mut self, now_ms: u64, neighbor: &str, origin: &str) {
        if let Some(n) = self.neighbors.get_mut(neighbor) {
            n.forget(origin);
        }
        let ours = origin == self.cfg.router_id || self.view.get(origin).is_some_and(|e| e.learned_from != neighbor);
        if ours && origin != neighbor {
            self.outbox.due(neighbor, origin, now_ms, true);
        }
    }

    /// Acts on what hearing neighbor `id`'s hello (with `boot_id`) changed.
    fn transition(&mut self, now_ms: u64, id: &str, t: Transition, boot_id: u64) {
        match t {
            Transition::None => {}
            Transition::Up => self.neighbor_up(now_ms, id),
            Transition::Restarted { old_boot_id } => {
                self.counters.neighbor_down += 1;
                self.events.push(Action::NeighborDown {
                    neighbor: id.to_owned(),
                    reason: format!("restarted (boot id {old_boot_id} is now {boot_id})"),
                });
                // Its advert of the old boot is obsolete; one of the new boot (come by another
                // path already) is kept.
                if self.view.get(id).is_some_and(|e| e.advert.boot_id != boot_id) {
                    self.lose_origin(now_ms, id, REASON_NEIGHBOR_RESTARTED);
                }
                self.neighbor_up(now_ms, id);
            }
        }
    }

    /// A neighbor came up: it gets, at once, our latest advert and the view entries it would
    /// have received from us had it been up when they arrived.
    fn neighbor_up(&mut self, now_ms: u64, id: &str) {
        self.counters.neighbor_up += 1;
        self.neighbors_changed = true;
        self.events.push(Action::NeighborUp {
            neighbor: id.to_owned(),
        });
        if self.own.is_some() {
            let me = self.cfg.router_id.clone();
            self.outbox.due(id, &me, now_ms, true);
        }
        let due: Vec<String> = self
            .view
            .iter()
            .filter(|e| {
                e.advert.origin != id
                    && e.learned_from != id
                    && e.advert.hop_limit > 1
                    && !e.is_stale(now_ms, self.cfg.stale_after_intervals)
            })
            .map(|e| e.advert.origin.clone())
            .collect();
        for origin in due {
            self.outbox.due(id, &origin, now_ms, true);
        }
    }

    fn neighbor_down(&mut self, now_ms: u64, id: &str, reason: String) {
        self.neighbors_changed = true;
        let Some(n) = self.neighbors.get_mut(id) else { return };
        let was_up = n.is_up();
        n.down();
        self.outbox.drop_neighbor(id);
        if !was_up {
            return;
        }
        self.counters.neighbor_down += 1;
        self.events.push(Action::NeighborDown {
            neighbor: id.to_owned(),
            reason,
        });
        self.lose_origin(now_ms, id, REASON_NEIGHBOR_LOST);
        // What came through it is kept until it ages out or is re-attached to another path; with
        // quiet adverts that ageing must not wait for the origin's quiet intervals, nor the
        // re-attaching for its next advert: the other up neighbors are asked for it at once, and
        // those that hold it by a path not through us answer with their copy.
        let orphans = self.view.orphan_learned_from(id, now_ms);
        self.ask_for(now_ms, orphans, id);
    }

    /// Asks the up neighbors but `except` (and the origin) for each of `orphans`: those that
    /// hold it by a path not through us answer with their copy, which re-attaches it
    /// ([`Verdict::Rerouted`]).
    fn ask_for(&mut self, now_ms: u64, orphans: Vec<String>, except: &str) {
        let others = self.up_neighbors();
        for origin in orphans {
            let ask: Vec<&String> = others.iter().filter(|n| **n != origin && *n != except).collect();
            if !ask.is_empty() {
                self.counters.orphans_asked += 1;
            }
            for n in ask {
                self.counters.need_full_sent += 1;
                self.outbox.need_full(n, &origin, now_ms);
            }
        }
    }

    /// Tells the up neighbors that may have learned `e`'s advert from us (all but `except`, the
    /// one we have it from, and its origin) that we no longer hold it as we sent it — removed,
    /// or (`resend`) re-attached to a longer path, whose copy follows the withdrawal in the same
    /// frame. Nothing when we did not forward it (its hop limit was spent here).
    fn withdraw_downstream(&mut self, now_ms: u64, e: &Entry, except: &str, reason: &str, resend: bool) {
        let Some(hop_limit) = flood::forwarded_hop_limit(&e.advert) else {
            return;
        };
        let w = pb::Withdraw {
            origin: e.advert.origin.clone(),
            boot_id: e.advert.boot_id,
            hop_limit,
            reason: reason.to_owned(),
        };
        for id in self.up_neighbors() {
            if id != except && id != e.advert.origin {
                if resend {
                    self.outbox.withdraw_and_resend(&id, w.clone(), now_ms);
                } else {
                    self.outbox.withdraw(&id, w.clone(), now_ms);
                }
            }
        }
    }

    /// Removes neighbor `origin`'s advert and tells the other up neighbors, within our flooding
    /// radius less the hop to the lost neighbor.
    fn lose_origin(&mut self, now_ms: u64, origin: &str, why: &str) {
        let Some(e) = self.view.remove(origin) else { return };
        self.withdrawn(origin.to_owned(), why.to_owned());
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
                self.outbox.withdraw(&id, w.clone(), now_ms);
            }
        }
    }

    fn withdrawn(&mut self, origin: String, reason: String) {
        self.counters.view_withdrawn += 1;
        self.events.push(Action::ViewWithdrawn { origin, reason });
    }

    /// Applies a (checked) withdrawal from `sender`.
    ///
    /// It removes the origin's entry of the same boot when we learned that entry from `sender`
    /// (our path to the origin went through the router that lost it), or when the origin is
    /// `sender` itself (it is shutting down). An applied withdrawal is forwarded like an advert.
    fn withdrawal(&mut self, now_ms: u64, sender: &str, w: &pb::Withdraw) {
        if let Some(n) = self.neighbors.get_mut(sender) {
            n.forget(&w.origin);
        }
        let applies = w.origin != self.cfg.router_id
            && self
                .view
                .get(&w.origin)
                .is_some_and(|e| e.advert.boot_id == w.boot_id && (e.learned_from == sender || w.origin == sender));
        if !applies {
            self.counters.withdrawals_ignored += 1;
            return;
        }
        self.counters.withdrawals_applied += 1;
        // A path withdrawal (2.7: the sender no longer holds the origin by the path it sent, but
        // the origin did not go) makes an orphan of our entry, as losing the sender would: it is
        // asked of the other neighbors, and removed — and withdrawn in turn — only when none has
        // it within its grace. The copy of a re-attached one follows in the same frame.
        if w.origin != sender && (w.reason == REASON_STALE || w.reason == REASON_REROUTED) {
            let orphans = self.view.orphan(&w.origin, now_ms);
            self.ask_for(now_ms, orphans, sender);
            return;
        }
        self.view.remove(&w.origin);
        self.withdrawn(w.origin.clone(), format!("withdrawn by {sender}: {}", w.reason));
        if let Some(copy) = flood::forwarded_withdraw(w) {
            for id in self.up_neighbors() {
                if id != sender && id != w.origin {
                    self.outbox.withdraw(&id, copy.clone(), now_ms);
                }
            }
        }
    }

    /// Applies a (checked) delta from `sender`: rebuilt on the advert we hold when that is its
    /// base, else the whole advert is asked for.
    fn delta(&mut self, now_ms: u64, sender: &str, d: &pb::AdvertDelta) {
        self.counters.deltas_received += 1;
        if d.origin == self.cfg.router_id {
            self.counters.adverts_own += 1;
            return;
        }
        // The delta itself, when it rebuilt the advert on our entry: it is then the change from
        // our entry to the new advert, which we forward as it is instead of diffing again.
        let (rebuilt, known) = match self.view.get(&d.origin) {
            Some(e) if e.advert.boot_id == d.boot_id && e.advert.sequence == d.base_sequence => {
                (delta::apply(&e.advert, d).ok(), Some(d))
            }
            // The same advert as ours, by another path: only its hop limit matters.
            Some(e) if e.advert.boot_id == d.boot_id && e.advert.sequence == d.sequence => (
                Some(pb::TelemetryAdvert {
                    hop_limit: d.hop_limit,
                    ..e.advert.clone()
                }),
                None,
            ),
            // Older than ours: nothing to build, nothing to ask for.
            Some(e) if e.advert.boot_id == d.boot_id && e.advert.sequence > d.sequence => {
                self.counters.adverts_older += 1;
                self.note_held(sender, &d.origin, d.boot_id, d.sequence, d.hop_limit);
                return;
            }
            _ => (None, None),
        };
        match rebuilt {
            Some(a) => match validate::check_advert(&a) {
                Ok(()) => self.advert(now_ms, sender, Cow::Owned(a), known),
                Err(e) => self.counters.reject(&e),
            },
            None => {
                self.counters.deltas_unmatched += 1;
                self.counters.need_full_sent += 1;
                self.outbox.need_full(sender, &d.origin, now_ms);
            }
        }
    }

    /// `sender` holds `origin`'s advert `(boot_id, sequence)`: the copy it sent us had
    /// `hop_limit` left, so its own had one more.
    fn note_held(&mut self, sender: &str, origin: &str, boot_id: u64, sequence: u64, hop_limit: u32) {
        if let Some(n) = self.neighbors.get_mut(sender) {
            n.hold(
                origin,
                Held {
                    boot_id,
                    sequence,
                    hop_limit: hop_limit.saturating_add(1),
                },
            );
        }
    }

    /// Applies a (checked, whole) advert from `sender`; `known`, when given, is a delta from the
    /// view's entry of its origin to `a`.
    fn advert(&mut self, now_ms: u64, sender: &str, a: Cow<'_, pb::TelemetryAdvert>, known: Option<&pb::AdvertDelta>) {
        if a.origin == self.cfg.router_id {
            self.counters.adverts_own += 1;
            return;
        }
        self.note_held(sender, &a.origin, a.boot_id, a.sequence, a.hop_limit);
        let verdict = self.view.judge(&a);
        let (received_ms, delta) = match verdict {
            Verdict::Duplicate => {
                self.counters.adverts_duplicate += 1;
                return;
            }
            Verdict::Older => {
                self.counters.adverts_older += 1;
                return;
            }
            Verdict::Shorter | Verdict::Rerouted => {
                if verdict == Verdict::Shorter {
                    self.counters.adverts_shorter += 1;
                } else {
                    self.counters.adverts_rerouted += 1;
                }
                let e = self.view.get(&a.origin);
                (e.map_or(now_ms, |e| e.received_ms), e.and_then(|e| e.delta.clone()))
            }
            Verdict::New if self.view.len() >= MAX_VIEW_ENTRIES => {
                self.counters.adverts_view_full += 1;
                return;
            }
            Verdict::New | Verdict::Newer => {
                self.counters.adverts_accepted += 1;
                let delta = self.view.get(&a.origin).and_then(|e| match known {
                    Some(d) if d.boot_id == e.advert.boot_id && d.base_sequence == e.advert.sequence => Some(d.clone()),
                    _ => delta::diff(&e.advert, &a),
                });
                (now_ms, delta)
            }
        };
        // From the origin itself it is one hop, whatever radius the origin uses.
        let hops = if a.origin == sender {
            1
        } else {
            flood::hops(self.cfg.hop_limit, a.hop_limit)
        };
        // A newer advert by a longer path keeps reading the previous one's hops while the copy
        // by the shorter path may still come; a shorter copy keeps what the first one held.
        let held = match (verdict, self.view.get(&a.origin)) {
            (Verdict::Newer, Some(e)) => HeldHops::on_newer(e, hops, a.interval_ms, now_ms),
            (Verdict::Shorter, Some(e)) => e.held,
            _ => None,
        };
        let origin = a.origin.clone();
        let forward = a.hop_limit > 1;
        let by_ms = if forward {
            self.forward_by(now_ms, a.timestamp_unix_ns, a.interval_ms)
        } else {
            None
        };
        // An orphan re-attached by a longer path: what we forwarded of it had more hops left
        // than we can now vouch for, and our neighbors would keep that as a duplicate-or-better
        // copy. They drop it and take ours, in one frame.
        let longer = match (verdict, self.view.get(&a.origin)) {
            (Verdict::Rerouted, Some(e)) if a.hop_limit < e.advert.hop_limit => Some(e.clone()),
            _ => None,
        };
        if let Some(e) = &longer {
            self.withdraw_downstream(now_ms, e, sender, REASON_REROUTED, true);
        }
        self.view.insert(Entry {
            advert: a.into_owned(),
            path_hops: hops,
            held,
            learned_from: sender.to_owned(),
            received_ms,
            delta,
            orphaned_ms: None,
        });
        if verdict == Verdict::New {
            self.counters.view_added += 1;
            self.events.push(Action::ViewAdded { origin: origin.clone() });
        }
        // (Re-attached by a longer path, it went with the withdrawals above.)
        if forward && longer.is_none() {
            for n in self.neighbors.values().filter(|n| n.is_up()) {
                let id = n.id();
                if id != sender && id != origin {
                    self.outbox.due_by(id, &origin, now_ms, false, by_ms);
                }
            }
        }
    }

    /// When an advert sampled at `sampled_unix_ns` by an origin sampling every `interval_ms`
    /// must leave at the latest, received now: so that it reaches the next router within
    /// [`FORWARD_BUDGET`] of an interval after it was sampled, whatever the phase of our own next
    /// sample (with which it goes when that comes first). Its age is our wall clock (known from
    /// our last sample) minus its sample time; `None` before our first sample: it waits for it.
    fn forward_by(&self, now_ms: u64, sampled_unix_ns: i64, interval_ms: u32) -> Option<u64> {
        let (at_ms, at_unix_ns) = self.wall?;
        let now_unix_ns = at_unix_ns.saturating_add((now_ms.saturating_sub(at_ms) as i64).saturating_mul(1_000_000));
        let age_ms = (now_unix_ns.saturating_sub(sampled_unix_ns) / 1_000_000).max(0) as u64;
        let (num, den) = FORWARD_BUDGET;
        let budget = u64::from(interval_ms) * num / den;
        Some(now_ms + budget.saturating_sub(age_ms))
    }

    /// What goes to `neighbor` for `origin` now: our current advert of it (our own, or the
    /// view's with one hop less) as a whole advert or a delta, or nothing when the neighbor
    /// holds it already, the hop limit is spent, or the entry is gone or stale.
    fn item_for(&mut self, now_ms: u64, neighbor: &str, origin: &str) -> Option<Item> {
        // The advert as it would go (our own, or the view's with one hop less), borrowed: it is
        // copied only when it goes whole — a hub forwards hundreds of adverts a second, nearly all
        // as deltas.
        let (advert, hop_limit, delta) = if origin == self.cfg.router_id {
            let own = self.own.as_ref()?;
            (own, own.hop_limit, self.own_delta.as_ref())
        } else {
            let e = self.view.get(origin)?;
            if e.is_stale(now_ms, self.cfg.stale_after_intervals) {
                return None;
            }
            (&e.advert, flood::forwarded_hop_limit(&e.advert)?, e.delta.as_ref())
        };
        let n = self.neighbors.get_mut(neighbor)?;
        let held = n.holds(origin);
        if held.is_some_and(|h| h.covers(advert.boot_id, advert.sequence, hop_limit)) {
            self.counters.adverts_suppressed += 1;
            return None;
        }
        let item = match held {
            Some(h) if h.boot_id == advert.boot_id && h.sequence == advert.sequence => {
                Item::Delta(delta::hop_only(advert, hop_limit))
            }
            Some(h) if delta.is_some_and(|d| d.boot_id == h.boot_id && d.base_sequence == h.sequence) => {
                let mut d = delta.cloned().expect("checked above");
                d.hop_limit = hop_limit;
                Item::Delta(d)
            }
            _ => Item::Advert(pb::TelemetryAdvert {
                hop_limit,
                ..advert.clone()
            }),
        };
        n.hold(
            origin,
            Held {
                boot_id: advert.boot_id,
                sequence: advert.sequence,
                hop_limit,
            },
        );
        let c = &mut self.counters;
        match item {
            Item::Delta(_) => c.deltas_sent += 1,
            _ => c.adverts_sent += 1,
        }
        if origin != self.cfg.router_id {
            c.adverts_forwarded += 1;
        }
        Some(item)
    }

    /// Builds the frames of `neighbor`'s queue.
    fn flush(&mut self, now_ms: u64, neighbor: &str, actions: &mut Vec<Action>) {
        let Some(q) = self.outbox.take(neighbor) else { return };
        let Some(n) = self.neighbors.get(neighbor) else { return };
        let interface = n.config().interface.clone();
        let up = n.is_up();
        if !n.has_link() {
            return;
        }
        let hello = q.hello.then(|| self.hello(&interface));
        let mut items = Vec::new();
        if up {
            for (origin, w) in q.withdrawals {
                if let Some(n) = self.neighbors.get_mut(neighbor) {
                    n.forget(&origin);
                }
                self.counters.withdrawals_sent += 1;
                items.push(Item::Withdraw(w));
            }
            for origin in &q.due {
                if let Some(item) = self.item_for(now_ms, neighbor, origin) {
                    items.push(item);
                }
            }
        }
        let need_full: Vec<String> = if up {
            q.need_full.into_iter().collect()
        } else {
            Vec::new()
        };
        if hello.is_none() && items.is_empty() && need_full.is_empty() && !q.keepalive {
            // Everything due was already held: nothing to send.
            return;
        }
        if hello.is_some() {
            self.counters.hellos_sent += 1;
        } else if items.is_empty() && need_full.is_empty() {
            self.counters.keepalives_sent += 1;
        }
        let header = self.header();
        for frame in flood::frames(&header, hello, items, need_full) {
            self.counters.frames_sent += 1;
            actions.push(Action::SendFrame {
                neighbor: neighbor.to_owned(),
                frame: Box::new(frame),
            });
        }
        if let Some(n) = self.neighbors.get_mut(neighbor) {
            n.sent(now_ms);
        }
    }

    /// The call's events, then its frames: every queue when `all` (a sample), else the urgent
    /// ones and those that waited a whole telemetry interval.
    fn finish(&mut self, now_ms: u64, all: bool) -> Vec<Action> {
        let mut actions = std::mem::take(&mut self.events);
        let interval = u64::from(self.cfg.telemetry_interval_ms);
        let mut ready = if all {
            self.outbox.neighbors()
        } else {
            self.outbox.ready(now_ms, interval)
        };
        // A forwarding deadline takes everything queued, as a sample would: the adverts that
        // need one arrived just after our sample, so they all go in one flush, not one each.
        if !all && ready.iter().any(|id| self.outbox.at_deadline(id, now_ms, interval)) {
            self.counters.forward_deadlines += 1;
            ready = self.outbox.neighbors();
        }
        for id in ready {
            self.flush(now_ms, &id, &mut actions);
        }
        actions
    }
}

/// Whether advert `new` says what `last` said: everything but its sequence, timestamp and hop
/// limit is the same (fields named one by one: one added to the advert must be decided here).
fn says_the_same(last: &pb::TelemetryAdvert, new: &pb::TelemetryAdvert) -> bool {
    let pb::TelemetryAdvert {
        origin,
        boot_id,
        sequence: _,
        timestamp_unix_ns: _,
        hop_limit: _,
        interval_ms,
        quiet_intervals,
        role,
        resources,
        services,
        links,
        control_address,
        demand,
        region,
        placements,
        sdwan,
    } = new;
    *origin == last.origin
        && *boot_id == last.boot_id
        && *interval_ms == last.interval_ms
        && *quiet_intervals == last.quiet_intervals
        && *role == last.role
        && *resources == last.resources
        && *services == last.services
        && *links == last.links
        && *control_address == last.control_address
        && *demand == last.demand
        && *region == last.region
        && *placements == last.placements
        && *sdwan == last.sdwan
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

    /// Every sample sent (`quiet_intervals` 1), as the tests written before quiet adverts expect.
    fn cfg(id: &str, neighbors: &[&str]) -> InstanceConfig {
        let mut c = InstanceConfig::new(id, pb::Role::Edge, 100);
        c.quiet_intervals = 1;
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
                cpu_used_pct: 10.0 + sequence as f64,
                mem_used_pct: 20.0,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn frame(id: &str) -> pb::Frame {
        pb::Frame {
            header: Some(validate::header(id)),
            ..Default::default()
        }
    }

    fn adverts_from(id: &str, adverts: Vec<pb::TelemetryAdvert>) -> pb::Frame {
        pb::Frame { adverts, ..frame(id) }
    }

    fn withdrawals_from(id: &str, withdrawals: Vec<pb::Withdraw>) -> pb::Frame {
        pb::Frame {
            withdrawals,
            ..frame(id)
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
            region: String::new(),
            placements: vec![],
            sdwan: None,
        }
    }

    fn opened(now_ms: u64, n: &str) -> Input {
        Input::LinkOpened {
            now_ms,
            neighbor: n.into(),
        }
    }

    /// Delivers `f` from `n`, expecting it to be accepted as a whole.
    fn deliver(i: &mut Instance, now_ms: u64, n: &str, f: pb::Frame) -> Vec<Action> {
        let (actions, r) = i.on_frame(now_ms, n, &f, None);
        r.unwrap_or_else(|e| panic!("frame from {n} refused: {e}"));
        actions
    }

    /// r1 with the given neighbors, all up (links opened and hellos heard at time 0).
    fn up(neighbors: &[&str]) -> Instance {
        up_with(cfg("r1", neighbors), neighbors)
    }

    /// An instance of `c` with links to `neighbors` open and their hellos heard at 0.
    fn up_with(c: InstanceConfig, neighbors: &[&str]) -> Instance {
        let mut i = Instance::new(c);
        for n in neighbors {
            i.process(opened(0, n));
            let f = pb::Frame {
                hello: Some(hello_from(n, 1)),
                ..frame(n)
            };
            deliver(&mut i, 0, n, f);
        }
        i
    }

    /// What the frames of `actions` carry, per frame: (neighbor, items), an item being
    /// `a:ORIGIN/HOP` (whole advert), `d:ORIGIN/HOP` (delta), `w:ORIGIN/HOP` (withdrawal),
    /// `hello`, `need:ORIGIN`.
    fn sent(actions: &[Action]) -> Vec<(String, Vec<String>)> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::SendFrame { neighbor, frame } => {
                    let mut items = Vec::new();
                    if frame.hello.is_some() {
                        items.push("hello".to_string());
                    }
                    items.extend(frame.need_full.iter().map(|o| format!("need:{o}")));
                    items.extend(
                        frame
                            .withdrawals
                            .iter()
                            .map(|w| format!("w:{}/{}", w.origin, w.hop_limit)),
                    );
                    items.extend(frame.adverts.iter().map(|a| format!("a:{}/{}", a.origin, a.hop_limit)));
                    items.extend(frame.deltas.iter().map(|d| format!("d:{}/{}", d.origin, d.hop_limit)));
                    Some((neighbor.clone(), items))
                }
                _ => None,
            })
            .collect()
    }

    fn to(n: &str, items: &[&str]) -> (String, Vec<String>) {
        (n.to_string(), items.iter().map(|s| s.to_string()).collect())
    }

    fn events(actions: &[Action]) -> Vec<String> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::NeighborUp { neighbor } => Some(format!("up {neighbor}")),
                Action::NeighborDown { neighbor, reason } => Some(format!("down {neighbor}: {reason}")),
                Action::ViewAdded { origin } => Some(format!("added {origin}")),
                Action::ViewWithdrawn { origin, reason } => Some(format!("withdrawn {origin}: {reason}")),
                Action::CloseLink { neighbor, reason } => Some(format!("close {neighbor}: {reason}")),
                Action::SendFrame { .. } => None,
            })
            .collect()
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
    fn a_link_carries_our_hello_first_and_theirs_brings_them_up() {
        let mut i = Instance::new(cfg("r1", &["r2", "r3"]));
        i.process(sample(0, 10.0));
        assert!(
            sent(&i.process(Input::Tick { now_ms: 5 })).is_empty(),
            "no link, nothing sent"
        );
        let a = i.process(opened(10, "r2"));
        assert_eq!(sent(&a), [to("r2", &["hello"])]);
        let Action::SendFrame { frame: f, .. } = &a[0] else {
            unreachable!()
        };
        let hello = f.hello.as_ref().unwrap();
        assert_eq!(validate::check_hello(hello), Ok(()));
        assert_eq!((hello.boot_id, hello.interface.as_str()), (100, "to-r2"));
        assert_eq!(i.neighbor("r2").unwrap().state_name(), "init");
        // Their hello: up, and they get our advert at once.
        let a = deliver(
            &mut i,
            20,
            "r2",
            pb::Frame {
                hello: Some(hello_from("r2", 1)),
                ..frame("r2")
            },
        );
        assert_eq!(events(&a), ["up r2"]);
        assert_eq!(sent(&a), [to("r2", &["a:r1/2"])]);
        assert_eq!(i.neighbor("r2").unwrap().state_name(), "up");
        assert_eq!(i.counters().hellos_sent, 1);
        assert_eq!(i.counters().hellos_received, 1);
    }

    #[test]
    fn frames_are_checked_as_a_whole() {
        let mut i = up(&["r2"]);
        let refused = |i: &mut Instance, n: &str, f: pb::Frame| i.on_frame(5, n, &f, None).1.unwrap_err();
        let e = refused(&mut i, "r9", frame("r9"));
        assert_eq!(e.to_string(), "\"r9\" is not a configured neighbor of this router");
        assert_eq!(refused(&mut i, "r2", frame("r3")).reason(), "sender_mismatch");
        let mut v1 = frame("r2");
        v1.header.as_mut().unwrap().version = (1 << 16) | 1;
        let e = refused(&mut i, "r2", v1);
        assert_eq!(
            e.to_string(),
            "unsupported protocol version 1.1 (this router speaks 2.x)"
        );
        let mut r3 = Instance::new(cfg("r1", &["r3"]));
        r3.process(opened(0, "r3"));
        assert_eq!(
            refused(&mut r3, "r3", frame("r3")).reason(),
            "not_up",
            "a frame before the hello"
        );
        assert_eq!(
            i.counters().rejected,
            BTreeMap::from([("sender_mismatch", 1), ("unknown_neighbor", 1), ("version", 1)])
        );
    }

    #[test]
    fn samples_become_one_frame_per_up_neighbor_and_then_deltas() {
        let mut i = Instance::new(cfg("r1", &["r2", "r3"]));
        assert!(sent(&i.process(sample(0, 10.0))).is_empty(), "nobody is up");
        i.process(opened(1, "r2"));
        deliver(
            &mut i,
            1,
            "r2",
            pb::Frame {
                hello: Some(hello_from("r2", 1)),
                ..frame("r2")
            },
        );
        let a = i.process(sample(1000, 130.0));
        assert_eq!(sent(&a), [to("r2", &["d:r1/2"])], "r2 holds sequence 1: a delta");
        let own = i.own().unwrap();
        assert_eq!((own.sequence, own.interval_ms, own.hop_limit), (2, 1000, 2));
        assert_eq!(own.resources.unwrap().cpu_used_pct, 100.0, "clamped");
        let Action::SendFrame { frame: f, .. } = &a[0] else {
            unreachable!()
        };
        assert_eq!(f.deltas[0].base_sequence, 1);
        let mut bad = sample(2000, 1.0);
        if let Input::Sample { links, .. } = &mut bad {
            links.push(pb::LinkMetrics {
                neighbor: "not an id".into(),
                ..Default::default()
            });
        }
        assert!(sent(&i.process(bad)).is_empty());
        assert_eq!(i.counters().samples_rejected, 1);
        assert_eq!(
            i.own().unwrap().sequence,
            2,
            "a rejected sample uses no sequence number"
        );
        assert_eq!(i.counters().adverts_originated, 2);
        assert_eq!((i.counters().adverts_sent, i.counters().deltas_sent), (1, 1));
    }

    #[test]
    fn forwarding_waits_for_our_next_frame_and_skips_who_holds_it() {
        let mut i = up(&["r2", "r3", "r4"]);
        // r3's advert, straight from r3: one hop; due to r2 and r4 with one hop less, sent with
        // our next sample.
        let a = deliver(&mut i, 10, "r3", adverts_from("r3", vec![advert("r3", 1, 1, 2)]));
        assert_eq!(events(&a), ["added r3"]);
        assert!(sent(&a).is_empty(), "forwarding waits for the next frame");
        assert_eq!(i.view().get("r3").unwrap().path_hops, 1);
        // r2 meanwhile sends us the same advert (it got it from r3 directly): it holds it.
        let a = deliver(&mut i, 11, "r2", adverts_from("r2", vec![advert("r3", 1, 1, 1)]));
        assert!(a.is_empty());
        // Our own invalid and duplicate items are counted and skipped.
        let mut invalid = advert("r5", 1, 1, 1);
        invalid.resources = None;
        let a = deliver(
            &mut i,
            12,
            "r2",
            adverts_from("r2", vec![advert("r3", 1, 1, 1), advert("r1", 100, 9, 1), invalid]),
        );
        assert!(a.is_empty());
        let c = i.counters();
        assert_eq!((c.adverts_accepted, c.adverts_duplicate, c.adverts_own), (1, 2, 1));
        assert_eq!(c.rejected["missing"], 1);
        let a = i.process(sample(500, 5.0));
        assert_eq!(
            sent(&a),
            [
                to("r2", &["a:r1/2"]),
                to("r3", &["a:r1/2"]),
                to("r4", &["a:r1/2", "a:r3/1"])
            ],
            "r2 holds r3's advert already; r3 is its origin"
        );
        assert_eq!(i.counters().adverts_suppressed, 1);
        // Nothing is sent twice: a second sample carries only our own (as a delta).
        let a = i.process(sample(1500, 6.0));
        assert_eq!(
            sent(&a),
            [to("r2", &["d:r1/2"]), to("r3", &["d:r1/2"]), to("r4", &["d:r1/2"])]
        );
        // A newer r3 advert is forwarded as a delta to r4, which holds the previous one.
        deliver(&mut i, 1600, "r3", adverts_from("r3", vec![advert("r3", 1, 2, 2)]));
        let a = i.process(sample(2500, 7.0));
        assert_eq!(sent(&a)[2], to("r4", &["d:r1/2", "d:r3/1"]));
        // Without a sample, what is due leaves by its forwarding deadline: 8/10 of an interval
        // after it came at the latest (sampled, by its timestamp, after our clock's now).
        deliver(&mut i, 2600, "r3", adverts_from("r3", vec![advert("r3", 1, 3, 2)]));
        // (or with the keepalives, when those are due first).
        deliver(&mut i, 2600, "r2", frame("r2"));
        deliver(&mut i, 2600, "r4", frame("r4"));
        assert!(sent(&i.process(Input::Tick { now_ms: 3399 })).is_empty());
        assert_eq!(
            sent(&i.process(Input::Tick { now_ms: 3400 })),
            [to("r2", &["d:r3/1"]), to("r4", &["d:r3/1"])]
        );
        // r3, which heard nothing from us since our sample, gets its keepalive a hello later.
        assert_eq!(sent(&i.process(Input::Tick { now_ms: 3500 })), [to("r3", &[])]);
    }

    #[test]
    fn a_status_without_view_is_the_status_less_its_view() {
        let mut i = up(&["r2", "r3"]);
        i.process(sample(1000, 5.0));
        deliver(&mut i, 1010, "r3", adverts_from("r3", vec![advert("r3", 1, 1, 2)]));
        let full = i.status(1100, 1_100_000_000);
        assert_eq!(full.view.len(), 1);
        let brief = i.status_without_view(1100);
        assert!(brief.view.is_empty());
        assert_eq!(
            brief,
            pb::StatusReply {
                view: Vec::new(),
                ..full
            }
        );
    }

    #[test]
    fn a_forwarded_advert_leaves_within_its_budget_of_an_interval() {
        let sampled_at = |ms: i64, seq: u64| pb::TelemetryAdvert {
            timestamp_unix_ns: ms * 1_000_000,
            ..advert("r3", 1, seq, 2)
        };
        let mut i = up(&["r2", "r3"]);
        // Before our first sample we do not know our wall clock: it waits a whole interval.
        deliver(&mut i, 100, "r3", adverts_from("r3", vec![sampled_at(90, 1)]));
        assert_eq!(i.next_tick_ms(), Some(1000), "our keepalives fall due at 1000 too");
        assert!(sent(&i.process(Input::Tick { now_ms: 999 })).is_empty());
        // Our sample at 1000 (wall clock 1000 ms) carries it.
        let a = i.process(sample(1000, 5.0));
        assert_eq!(sent(&a), [to("r2", &["a:r1/2", "a:r3/1"]), to("r3", &["a:r1/2"])]);
        // Sampled at 1010, received at 1030 just after our sample: waiting for our next (2000)
        // would take it 990 ms past its sample; it leaves 800 ms after it instead, at 1810.
        deliver(&mut i, 1030, "r3", adverts_from("r3", vec![sampled_at(1010, 2)]));
        assert_eq!(i.next_tick_ms(), Some(1810));
        assert!(sent(&i.process(Input::Tick { now_ms: 1809 })).is_empty());
        assert_eq!(sent(&i.process(Input::Tick { now_ms: 1810 })), [to("r2", &["d:r3/1"])]);
        assert_eq!(i.counters().forward_deadlines, 1);
        // Sampled at 1950, received at 1960: our sample at 2000 comes first and carries it.
        deliver(&mut i, 1960, "r3", adverts_from("r3", vec![sampled_at(1950, 3)]));
        assert_eq!(i.next_tick_ms(), Some(2000));
        let a = i.process(sample(2000, 6.0));
        assert_eq!(sent(&a), [to("r2", &["d:r1/2", "d:r3/1"]), to("r3", &["d:r1/2"])]);
        // One older than its budget when it arrives goes at once.
        let a = deliver(&mut i, 2100, "r3", adverts_from("r3", vec![sampled_at(1100, 4)]));
        assert_eq!(sent(&a), [to("r2", &["d:r3/1"])]);
        assert_eq!(i.counters().forward_deadlines, 2);
    }

    #[test]
    fn a_deadline_takes_everything_queued_at_once() {
        let from = |origin: &str, ms: i64| pb::TelemetryAdvert {
            timestamp_unix_ns: ms * 1_000_000,
            ..advert(origin, 1, 1, 2)
        };
        let mut i = up(&["r2", "r3", "r4"]);
        i.process(sample(1000, 5.0));
        // r3's advert needs its deadline (1810); r4's, received later, would go with our sample
        // at 2000 (its own deadline is 2290), but leaves with r3's in the one flush.
        deliver(&mut i, 1030, "r3", adverts_from("r3", vec![from("r3", 1010)]));
        deliver(&mut i, 1500, "r4", adverts_from("r4", vec![from("r4", 1490)]));
        assert_eq!(i.next_deadline_ms(), Some(1810));
        assert_eq!(
            sent(&i.process(Input::Tick { now_ms: 1810 })),
            [
                to("r2", &["a:r3/1", "a:r4/1"]),
                to("r3", &["a:r4/1"]),
                to("r4", &["a:r3/1"])
            ]
        );
        assert_eq!((i.counters().forward_deadlines, i.next_deadline_ms()), (1, None));
    }

    #[test]
    fn deltas_are_rebuilt_or_the_whole_advert_asked_for() {
        let mut i = up(&["r2", "r3"]);
        deliver(&mut i, 1, "r2", adverts_from("r2", vec![advert("r5", 1, 1, 1)]));
        let d = delta::diff(&advert("r5", 1, 1, 1), &advert("r5", 1, 2, 1)).unwrap();
        deliver(
            &mut i,
            2,
            "r2",
            pb::Frame {
                deltas: vec![d.clone()],
                ..frame("r2")
            },
        );
        assert_eq!(i.view().get("r5").unwrap().advert, advert("r5", 1, 2, 1), "rebuilt");
        // A delta on a base we do not have: we ask for the whole advert, at once.
        let d = delta::diff(&advert("r6", 1, 4, 1), &advert("r6", 1, 5, 1)).unwrap();
        let a = deliver(
            &mut i,
            3,
            "r3",
            pb::Frame {
                deltas: vec![d],
                ..frame("r3")
            },
        );
        assert_eq!(sent(&a), [to("r3", &["need:r6"])]);
        assert!(i.view().get("r6").is_none());
        assert_eq!(i.counters().deltas_unmatched, 1);
        // Asked for a whole advert, we send it at once even though we sent it before.
        i.process(sample(10, 1.0));
        let a = deliver(
            &mut i,
            11,
            "r3",
            pb::Frame {
                need_full: vec!["r1".into()],
                ..frame("r3")
            },
        );
        assert_eq!(sent(&a), [to("r3", &["a:r1/2"])]);
    }

    #[test]
    fn a_shorter_path_upgrades_hops_and_is_forwarded_again() {
        let mut c = cfg("r1", &["r2", "r3", "r5"]);
        c.hop_limit = 3;
        let mut i = Instance::new(c);
        for n in ["r2", "r3", "r5"] {
            i.process(opened(0, n));
            deliver(
                &mut i,
                0,
                n,
                pb::Frame {
                    hello: Some(hello_from(n, 1)),
                    ..frame(n)
                },
            );
        }
        // r4's advert first via r2, two hops...
        deliver(&mut i, 10, "r2", adverts_from("r2", vec![advert("r4", 1, 1, 2)]));
        assert_eq!(sent(&i.process(sample(12, 1.0)))[2], to("r5", &["a:r1/3", "a:r4/1"]));
        // ... then the same advert with more hop limit left via r3: one hop shorter. r5 gets
        // the better copy as a delta that says only its hop limit; r2 and r3 hold better ones.
        deliver(&mut i, 15, "r3", adverts_from("r3", vec![advert("r4", 1, 1, 3)]));
        let e = i.view().get("r4").unwrap();
        assert_eq!((e.path_hops, e.learned_from.as_str(), e.received_ms), (1, "r3", 10));
        assert_eq!(i.counters().adverts_shorter, 1);
        let a = i.process(sample(20, 1.0));
        assert_eq!(
            sent(&a),
            [
                to("r2", &["d:r1/3"]),
                to("r3", &["d:r1/3"]),
                to("r5", &["d:r1/3", "d:r4/2"])
            ]
        );
    }

    #[test]
    fn a_newer_advert_by_a_longer_path_reads_the_old_hops_until_the_shorter_copy_or_an_interval() {
        let mut c = cfg("r1", &["r2", "r3"]);
        c.hop_limit = 3;
        let mut i = up_with(c, &["r2", "r3"]);
        let a = |sequence, hop_limit| pb::TelemetryAdvert {
            interval_ms: 100,
            ..advert("r4", 1, sequence, hop_limit)
        };
        let hops = |i: &Instance, now_ms| {
            let e = i.view().get("r4").unwrap();
            (e.hops_at(now_ms), e.path_hops, e.advert.sequence)
        };
        // Sequence 1 via r3, two hops.
        deliver(&mut i, 10, "r3", adverts_from("r3", vec![a(1, 2)]));
        assert_eq!(hops(&i, 10), (2, 2, 1));
        // Sequence 2 via r2 first, three hops: stored, but reads two hops for one interval.
        deliver(&mut i, 20, "r2", adverts_from("r2", vec![a(2, 1)]));
        assert_eq!(hops(&i, 20), (2, 3, 2));
        assert_eq!(hops(&i, 119), (2, 3, 2));
        assert_eq!(
            hops(&i, 120),
            (3, 3, 2),
            "no shorter copy within an interval: the path's hops"
        );
        // Sequence 2's best copy came by three hops: sequence 3 by three is not held; its copy
        // via r3 makes it two.
        deliver(&mut i, 130, "r2", adverts_from("r2", vec![a(3, 1)]));
        assert_eq!(hops(&i, 131), (3, 3, 3));
        deliver(&mut i, 140, "r3", adverts_from("r3", vec![a(3, 2)]));
        assert_eq!(hops(&i, 140), (2, 2, 3));
        assert_eq!(hops(&i, 1000), (2, 2, 3));
        // The neighborhood and the status read the held hops too.
        deliver(&mut i, 150, "r2", adverts_from("r2", vec![a(4, 1)]));
        let n = i.neighborhood(150, 0);
        assert_eq!(
            n.routers.iter().find(|r| r.id.as_str() == "r4").map(|r| r.hops),
            Some(2)
        );
        assert_ne!(
            i.neighborhood_key(150),
            i.neighborhood_key(250),
            "a hold running out changes the neighborhood"
        );
    }

    #[test]
    fn withdrawals_follow_the_path_the_advert_took_at_once() {
        let mut i = up(&["r2", "r3", "r4"]);
        deliver(
            &mut i,
            1,
            "r2",
            adverts_from("r2", vec![advert("r5", 1, 1, 2), advert("r6", 1, 1, 1)]),
        );
        deliver(&mut i, 1, "r3", adverts_from("r3", vec![advert("r7", 1, 1, 1)]));
        // Not from the neighbor we learned r7 from, wrong boot, unknown origin, ourselves.
        let a = deliver(
            &mut i,
            2,
            "r2",
            withdrawals_from(
                "r2",
                vec![
                    withdraw("r7", 1, 1),
                    withdraw("r5", 9, 1),
                    withdraw("r9", 1, 1),
                    withdraw("r1", 100, 1),
                ],
            ),
        );
        assert!(a.is_empty());
        assert_eq!(i.counters().withdrawals_ignored, 4);
        // From the neighbor we learned them from: removed; forwarded while the limit allows.
        let a = deliver(
            &mut i,
            3,
            "r2",
            withdrawals_from("r2", vec![withdraw("r5", 1, 2), withdraw("r6", 1, 1)]),
        );
        assert_eq!(
            events(&a),
            [
                "withdrawn r5: withdrawn by r2: neighbor lost",
                "withdrawn r6: withdrawn by r2: neighbor lost"
            ]
        );
        assert_eq!(sent(&a), [to("r3", &["w:r5/1"]), to("r4", &["w:r5/1"])], "at once");
        // A router withdrawing itself (shutdown) is believed whatever path we learned it by.
        let mut w = withdraw("r3", 1, 2);
        w.reason = REASON_SHUTDOWN.into();
        deliver(&mut i, 4, "r3", adverts_from("r3", vec![advert("r3", 1, 1, 2)]));
        let a = deliver(&mut i, 5, "r3", withdrawals_from("r3", vec![w]));
        assert_eq!(events(&a), ["withdrawn r3: withdrawn by r3: shutdown"]);
        assert_eq!(sent(&a).len(), 2);
    }

    #[test]
    fn a_silent_neighbor_is_closed_withdrawn_and_its_loss_flooded() {
        let mut i = up(&["r2", "r3"]);
        deliver(
            &mut i,
            100,
            "r2",
            adverts_from("r2", vec![advert("r2", 7, 1, 2), advert("r5", 1, 1, 1)]),
        );
        deliver(&mut i, 2000, "r3", frame("r3"));
        assert!(events(&i.process(Input::Tick { now_ms: 3099 })).is_empty());
        let a = i.process(Input::Tick { now_ms: 3100 });
        assert_eq!(
            events(&a),
            [
                "close r2: nothing heard for 3000 ms",
                "down r2: nothing heard for 3000 ms",
                "withdrawn r2: neighbor lost"
            ]
        );
        assert_eq!(
            sent(&a)[0],
            to("r3", &["need:r5", "w:r2/1"]),
            "r5, learned via r2, is asked of r3"
        );
        assert!(
            i.view().get("r5").is_some(),
            "learned via r2, but only ageing removes it"
        );
        assert_eq!(i.neighbor("r2").unwrap().state_name(), "down");
        // A link closed by the transport is the same loss.
        let a = i.process(Input::LinkClosed {
            now_ms: 3200,
            neighbor: "r3".into(),
            reason: "connection reset".into(),
        });
        assert_eq!(events(&a), ["down r3: link closed: connection reset"]);
    }

    #[test]
    fn an_orphan_is_asked_of_the_other_neighbors_and_taken_by_their_path() {
        let mut i = up(&["r2", "r3", "r4"]);
        // r5 two hops away through r2, and through r3 (a duplicate: r3 holds it too).
        deliver(
            &mut i,
            100,
            "r2",
            adverts_from("r2", vec![advert("r2", 7, 1, 2), advert("r5", 1, 1, 1)]),
        );
        deliver(&mut i, 110, "r3", adverts_from("r3", vec![advert("r5", 1, 1, 1)]));
        assert_eq!(i.view().get("r5").map(|e| e.learned_from.as_str()), Some("r2"));
        // r2 lost: r5 is asked of r3 and r4 at once, not left to age or to r5's next advert.
        let a = i.process(Input::LinkClosed {
            now_ms: 200,
            neighbor: "r2".into(),
            reason: "connection reset".into(),
        });
        assert_eq!(
            sent(&a),
            [to("r3", &["need:r5", "w:r2/1"]), to("r4", &["need:r5", "w:r2/1"])]
        );
        assert_eq!(i.counters().orphans_asked, 1);
        assert!(i.view().get("r5").is_some_and(|e| e.is_orphan()));
        // r3 answers with its copy, by a path no shorter: the orphan takes it, as it was.
        let a = deliver(&mut i, 210, "r3", adverts_from("r3", vec![advert("r5", 1, 1, 1)]));
        assert!(events(&a).is_empty(), "neither withdrawn nor added: {:?}", events(&a));
        let e = i.view().get("r5").unwrap();
        assert_eq!((e.learned_from.as_str(), e.path_hops, e.is_orphan()), ("r3", 2, false));
        assert_eq!(e.received_ms, 100, "the data is no fresher");
        assert_eq!(i.counters().adverts_rerouted, 1);
        // A later duplicate is a duplicate again.
        deliver(&mut i, 220, "r4", adverts_from("r4", vec![advert("r5", 1, 1, 1)]));
        assert_eq!(i.counters().adverts_rerouted, 1);
        // Split horizon: asked by r3 for what we have from r3, we send nothing back.
        let ask = pb::Frame {
            need_full: vec!["r5".into()],
            ..frame("r3")
        };
        let a = deliver(&mut i, 230, "r3", ask);
        assert!(sent(&a).iter().all(|(_, items)| items.is_empty()), "{:?}", sent(&a));
    }

    #[test]
    fn a_path_withdrawal_orphans_and_a_longer_copy_replaces_what_we_forwarded() {
        let mut c = cfg("r1", &["r2", "r3", "r4"]);
        c.hop_limit = 4;
        let mut i = up_with(c, &["r2", "r3", "r4"]);
        // r9 two hops away through r2 (hop limit 3 left); we forward it to r3 and r4 with 2.
        let a = deliver(&mut i, 100, "r2", adverts_from("r2", vec![advert("r9", 1, 1, 3)]));
        assert_eq!(events(&a), ["added r9"]);
        let a = i.process(sample(1000, 5.0));
        assert!(sent(&a).contains(&to("r3", &["a:r1/4", "a:r9/2"])), "{:?}", sent(&a));
        // r2 no longer holds it by that path (it aged out there): ours becomes an orphan, asked
        // of the others; nothing is removed or withdrawn yet.
        let mut w = withdraw("r9", 1, 2);
        w.reason = REASON_STALE.into();
        let a = deliver(&mut i, 1100, "r2", withdrawals_from("r2", vec![w]));
        assert!(events(&a).is_empty(), "{:?}", events(&a));
        assert_eq!(sent(&a), [to("r3", &["need:r9"]), to("r4", &["need:r9"])]);
        assert_eq!(i.counters().withdrawals_applied, 1);
        // r3 has it by a longer path (hop limit 2 left when it reaches us): r4, which has our
        // copy with 2 left, gets a withdrawal and then ours with 1 left, in one frame; so does
        // r2, which lost its own path (the withdrawal is ignored there, the copy is news).
        let a = deliver(&mut i, 1110, "r3", adverts_from("r3", vec![advert("r9", 1, 1, 2)]));
        assert!(events(&a).is_empty(), "{:?}", events(&a));
        assert_eq!(
            sent(&a),
            [to("r2", &["w:r9/2", "a:r9/1"]), to("r4", &["w:r9/2", "a:r9/1"])]
        );
        let e = i.view().get("r9").unwrap();
        assert_eq!((e.learned_from.as_str(), e.path_hops), ("r3", 3));
        // Had nobody answered, the orphan would have gone as it would have without the
        // withdrawal (6 intervals after its advert: at least 3 after it became an orphan), and
        // been withdrawn from those we forwarded it to.
        let mut j = up_with(
            InstanceConfig {
                hop_limit: 4,
                ..cfg("r1", &["r2", "r3"])
            },
            &["r2", "r3"],
        );
        deliver(&mut j, 100, "r2", adverts_from("r2", vec![advert("r9", 1, 1, 3)]));
        let mut w = withdraw("r9", 1, 2);
        w.reason = REASON_STALE.into();
        deliver(&mut j, 1100, "r2", withdrawals_from("r2", vec![w]));
        for t in [2500, 5000] {
            deliver(&mut j, t, "r2", frame("r2"));
            deliver(&mut j, t, "r3", frame("r3"));
        }
        assert!(events(&j.process(Input::Tick { now_ms: 6099 })).is_empty());
        let a = j.process(Input::Tick { now_ms: 6100 });
        assert_eq!(events(&a), ["withdrawn r9: stale"]);
        assert_eq!(sent(&a), [to("r3", &["w:r9/2"])]);
    }

    #[test]
    fn an_open_link_without_a_hello_is_closed() {
        let mut i = Instance::new(cfg("r1", &["r2"]));
        i.process(opened(0, "r2"));
        let a = i.process(Input::Tick { now_ms: 3000 });
        assert_eq!(events(&a), ["close r2: no hello within 3000 ms of the link opening"]);
        assert_eq!(i.neighbor("r2").unwrap().state_name(), "down");
    }

    #[test]
    fn a_restart_is_a_down_and_an_up_with_a_resync() {
        let mut i = up(&["r2", "r3"]);
        i.process(sample(5, 1.0));
        deliver(&mut i, 10, "r2", adverts_from("r2", vec![advert("r2", 1, 4, 2)]));
        deliver(
            &mut i,
            10,
            "r3",
            adverts_from("r3", vec![advert("r3", 1, 4, 2), advert("r6", 1, 4, 2)]),
        );
        // r2 restarted: a new link, whose hello has another boot id.
        i.process(Input::LinkClosed {
            now_ms: 19,
            neighbor: "r2".into(),
            reason: "reset".into(),
        });
        i.process(opened(19, "r2"));
        let a = deliver(
            &mut i,
            20,
            "r2",
            pb::Frame {
                hello: Some(hello_from("r2", 2)),
                ..frame("r2")
            },
        );
        assert_eq!(events(&a), ["up r2"]);
        assert_eq!(
            sent(&a),
            [to("r2", &["a:r1/2", "a:r3/1", "a:r6/1"])],
            "a new link holds nothing"
        );
        // The same on one link: another boot id in a hello.
        let a = deliver(
            &mut i,
            30,
            "r3",
            pb::Frame {
                hello: Some(hello_from("r3", 5)),
                ..frame("r3")
            },
        );
        assert_eq!(
            events(&a),
            [
                "down r3: restarted (boot id 1 is now 5)",
                "withdrawn r3: neighbor restarted",
                "up r3"
            ]
        );
        assert_eq!(sent(&a), [to("r2", &["w:r3/1"]), to("r3", &["a:r1/2"])]);
    }

    #[test]
    fn entries_age_stale_then_expire() {
        let mut i = up(&["r2"]);
        deliver(&mut i, 0, "r2", adverts_from("r2", vec![advert("r2", 1, 1, 2)]));
        let view = |i: &Instance, t| i.status(t, 0).view.iter().map(|e| e.stale).collect::<Vec<_>>();
        assert_eq!(view(&i, 2999), [false]);
        assert_eq!(view(&i, 3000), [true]);
        // Keep r2 alive: only its adverts stop.
        for t in [1000, 2000, 3000, 4000, 5000] {
            deliver(&mut i, t, "r2", frame("r2"));
            assert!(events(&i.process(Input::Tick { now_ms: t })).is_empty());
        }
        let a = i.process(Input::Tick { now_ms: 6000 });
        assert_eq!(events(&a), ["withdrawn r2: stale"]);
        assert!(
            sent(&a).iter().all(|(_, items)| items.is_empty()),
            "ageing floods nothing"
        );
        assert!(i.view().is_empty());
    }

    #[test]
    fn quiet_samples_send_nothing_new_but_every_neighbor_hears_us() {
        let mut c = cfg("r1", &["r2", "r3"]);
        c.quiet_intervals = 3;
        let mut i = up_with(c, &["r2", "r3"]);
        assert_eq!(own_advert_sent(&i.process(sample(1000, 1.0))), 2);
        assert_eq!(i.own().map(|a| (a.sequence, a.quiet_intervals)), Some((1, 3)));
        // The same figures: no advert, but a keepalive to each (both would otherwise not hear
        // us for two intervals).
        let a = i.process(sample(2000, 1.0));
        assert_eq!(sent(&a), [to("r2", &[]), to("r3", &[])]);
        assert_eq!(i.own().map(|a| a.sequence), Some(1));
        assert_eq!(i.process(sample(3000, 1.0)).len(), 2);
        assert_eq!(i.counters().samples_quiet, 2);
        // The third interval since the last advert: sent again although it says the same.
        let a = i.process(sample(4000, 1.0));
        assert_eq!(sent(&a), [to("r2", &["d:r1/2"]), to("r3", &["d:r1/2"])]);
        assert_eq!(i.own().map(|a| a.sequence), Some(2));
        // A change goes at once.
        let a = i.process(sample(5000, 7.0));
        assert_eq!(sent(&a), [to("r2", &["d:r1/2"]), to("r3", &["d:r1/2"])]);
        assert_eq!(i.own().map(|a| a.sequence), Some(3));
        assert_eq!(i.counters().adverts_originated, 3);
        // A neighbor that heard from us since the last sample still gets its keepalive: waiting
        // for the next sample would leave it more than a hello interval without a word.
        deliver(&mut i, 5500, "r2", frame("r2"));
        let a = i.process(sample(6000, 7.0));
        assert_eq!(sent(&a), [to("r2", &[]), to("r3", &[])]);
        // A neighbor lost: the next sample goes although it says the same (routers that dropped
        // us along the broken path hear us again by another at once, not quiet_intervals later).
        i.process(Input::LinkClosed {
            now_ms: 6100,
            neighbor: "r3".into(),
            reason: "test".into(),
        });
        let a = i.process(sample(7000, 7.0));
        assert_eq!(sent(&a), [to("r2", &["d:r1/2"])]);
        assert_eq!(i.process(sample(8000, 7.0)).len(), 1, "quiet again: r2's keepalive");
    }

    /// How many frames of `actions` carry our own advert (whole or as a delta).
    fn own_advert_sent(actions: &[Action]) -> usize {
        sent(actions)
            .iter()
            .filter(|(_, items)| items.iter().any(|i| i.contains("r1/")))
            .count()
    }

    #[test]
    fn keepalives_only_when_nothing_else_went() {
        let mut i = up(&["r2"]);
        i.process(sample(0, 1.0));
        assert!(sent(&i.process(Input::Tick { now_ms: 999 })).is_empty());
        assert_eq!(sent(&i.process(Input::Tick { now_ms: 1000 })), [to("r2", &[])]);
        assert_eq!(i.counters().keepalives_sent, 1);
        i.process(sample(1500, 1.0));
        assert!(sent(&i.process(Input::Tick { now_ms: 2400 })).is_empty());
    }

    #[test]
    fn a_new_neighbor_gets_what_it_missed() {
        // r4 configured but not up yet.
        let mut i = up_with(cfg("r1", &["r2", "r3", "r4"]), &["r2", "r3"]);
        let adverts = vec![advert("r2", 1, 1, 2), advert("r5", 1, 1, 1), advert("r6", 1, 1, 2)];
        deliver(&mut i, 1, "r2", adverts_from("r2", adverts));
        // r4 comes up: it gets the entries with hop limit to spare (not r5), at once.
        i.process(opened(2, "r4"));
        let a = deliver(
            &mut i,
            2,
            "r4",
            pb::Frame {
                hello: Some(hello_from("r4", 1)),
                ..frame("r4")
            },
        );
        assert_eq!(sent(&a), [to("r4", &["a:r2/1", "a:r6/1"])]);
        // Stale entries are not handed out: r3 restarts once everything is stale.
        let a = deliver(
            &mut i,
            5000,
            "r3",
            pb::Frame {
                hello: Some(hello_from("r3", 5)),
                ..frame("r3")
            },
        );
        assert_eq!(events(&a), ["down r3: restarted (boot id 1 is now 5)", "up r3"]);
        assert!(sent(&a).iter().all(|(n, _)| n != "r3"));
    }

    #[test]
    fn shutdown_withdraws_ourselves() {
        let mut i = up(&["r2", "r3"]);
        let a = i.process(Input::Shutdown { now_ms: 9 });
        assert_eq!(sent(&a), [to("r2", &["w:r1/2"]), to("r3", &["w:r1/2"])]);
        assert_eq!(i.counters().withdrawals_sent, 2);
    }

    #[test]
    fn status_reports_everything() {
        let mut i = Instance::new(cfg("r1", &["r2", "r3", "r4"]));
        i.process(Input::Tick { now_ms: 1000 });
        i.process(opened(1100, "r2"));
        i.process(opened(1200, "r3"));
        deliver(
            &mut i,
            1200,
            "r3",
            pb::Frame {
                hello: Some(hello_from("r3", 1)),
                ..frame("r3")
            },
        );
        let (_, r) = i.on_frame(1250, "r3", &frame("r3"), Some(2.5));
        r.unwrap();
        i.process(sample(1300, 5.0));
        deliver(
            &mut i,
            1400,
            "r3",
            adverts_from(
                "r3",
                vec![pb::TelemetryAdvert {
                    timestamp_unix_ns: 1_000_000_000,
                    ..advert("r3", 1, 1, 2)
                }],
            ),
        );
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
                ("r2", "init", None, 0),
                ("r3", "up", Some(2.5), 100),
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
        assert_eq!(counter("hellos_sent"), 2);
        assert_eq!(counter("adverts_accepted"), 1);
        assert_eq!(counter("neighbor_up"), 1);
    }

    #[test]
    fn the_view_is_bounded() {
        let mut i = up(&["r2"]);
        for chunk in 0..MAX_VIEW_ENTRIES / 256 + 1 {
            let adverts = (0..256).map(|k| advert(&format!("o{chunk}-{k}"), 1, 1, 1)).collect();
            deliver(&mut i, 1, "r2", adverts_from("r2", adverts));
        }
        assert_eq!(i.view().len(), MAX_VIEW_ENTRIES);
        assert_eq!(i.counters().adverts_view_full, 256);
        // Known origins are still updated.
        deliver(&mut i, 2, "r2", adverts_from("r2", vec![advert("o0-0", 1, 2, 1)]));
        assert_eq!(i.counters().adverts_accepted, MAX_VIEW_ENTRIES as u64 + 1);
    }

    #[test]
    fn one_frame_per_neighbor_per_sample() {
        let mut i = up(&["r2", "r3"]);
        for k in 0..10 {
            deliver(
                &mut i,
                1,
                "r2",
                adverts_from("r2", vec![advert(&format!("o{k}"), 1, 1, 2)]),
            );
        }
        let before = i.counters().frames_sent;
        let a = i.process(sample(2, 1.0));
        let f = sent(&a);
        assert_eq!(f.len(), 2);
        assert_eq!(f[1].1.len(), 11, "our advert and the ten forwarded");
        assert_eq!(i.counters().frames_sent - before, 2);
        assert_eq!(i.counters().adverts_forwarded, 10);
    }
}
