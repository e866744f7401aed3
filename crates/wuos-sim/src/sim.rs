//! The engine: every router's protocol [`Instance`], their streams, the orchestrators and the
//! modelled controllers, driven by one event queue.
//!
//! ```text
//!   Start ──▶ Instance::new (new boot id) ─┬─▶ Tick every hello/4 ──▶ dial, Input::Tick ─┐
//!                                          ├─▶ Deadline (a forwarding one) ─▶ Input::Tick ─┤
//!                                          └─▶ Sample every interval ─▶ Input::Sample ───┤──▶ Actions
//!   Opened / Closed ──▶ Input::LinkOpened / LinkClosed ──────────────────────────────────┤    │
//!   Deliver (head of a stream direction) ──▶ Instance::on_frame ─────────────────────────┘    │
//!        ▲      SendFrame: onto the link's stream (delay, jitter, loss → RTO)  ◀──────────────┘
//!        └──────CloseLink: the stream ends, the peer is told after the delay
//!   Sample ──▶ region (nearest: wuos_orchestrator::region::choose) ──▶ its controller, its advert
//!   Sample at an orchestrator's router ──▶ Site::round ──▶ intents ──▶ Control (controllers)
//!   Control: intent ──▶ wuos_controller::Controller ──▶ answers back, instances ready later
//!   Script (the events file) ──▶ links up/down/set, stop/crash/start, load, demand, policy
//! ```
//!
//! Routers, links and streams live in vectors indexed by dense ids; the queue holds small
//! events (frames wait in their stream, not in the queue). Everything random draws from
//! generators seeded by the run's seed, and events due at the same time run in the order they
//! were scheduled, so a run is a function of its inputs and seed.
//!
//! Sessions follow the daemon's rules: the router whose id sorts first dials, at each of its
//! ticks, every neighbor that runs and has no valid stream with it; the acceptor learns of the
//! stream one delay later, the dialler two. A stream is valid while both ends run the
//! incarnations it was opened with. A crashed router is silent: its streams stay until its
//! neighbors' dead intervals close them, and a dialler whose peer restarted finds the old stream
//! reset at its next tick. A stopped router withdraws itself, then its streams end behind the
//! withdrawals.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use prost::Message;
use wuos_controller::{Origin, Region};
use wuos_model::rng::SplitMix64;
use wuos_model::{RouterId, ServiceId};
use wuos_orchestrator::{Config, Policy};
use wuos_proto::neighbor::NeighborConfig;
use wuos_proto::{Action, Input, Instance, pb};

use crate::config::SimConfig;
use crate::controller::{Admission, Controller, Effects, Refusals};
use crate::error::SimError;
use crate::events::{self, Script};
use crate::load::Load;
use crate::network::{Adjacent, LinkIx, Network, RouterIx};
use crate::orchestrators::{Reach, Send, Site};
use crate::queue::EventQueue;
use crate::stream::{self, Payload, Session};

/// Wall clock of simulated time 0, ns since the Unix epoch (every router's clock agrees).
pub const EPOCH_UNIX_NS: i64 = 1_700_000_000_000_000_000;
/// The port every neighbor address and control address names.
pub const PROTOCOL_PORT: u16 = 7470;

/// What happens, when.
#[derive(Debug)]
enum Event {
    /// A router starts (again).
    Start(RouterIx),
    Tick {
        router: RouterIx,
        generation: u32,
    },
    Sample {
        router: RouterIx,
        generation: u32,
    },
    /// A forwarding deadline of the router's instance ([`Instance::next_deadline_ms`]), on time
    /// as the daemon keeps it, between its periodic ticks.
    Deadline {
        router: RouterIx,
        generation: u32,
        at_ms: u64,
    },
    /// One end (`side` 0: `a`, 1: `b`) learns that the stream opened.
    Opened {
        link: LinkIx,
        session: u32,
        side: u8,
    },
    /// One end learns that its peer closed the stream.
    Closed {
        link: LinkIx,
        session: u32,
        side: u8,
    },
    /// The head of one direction of a stream is due.
    Deliver {
        link: LinkIx,
        session: u32,
        direction: u8,
    },
    /// An event of the events file, by index.
    Script(u32),
    /// Between orchestrators and controllers (rare: boxed to keep events small).
    Control(Box<Control>),
}

#[derive(Debug)]
enum Control {
    /// Intent `id` reaches `to`'s controller, from the orchestrator on `from`.
    Intent {
        to: RouterIx,
        from: RouterIx,
        id: u64,
        intent: wuos_controller::Intent,
    },
    /// An instance finished starting.
    Started {
        router: RouterIx,
        generation: u32,
        service: ServiceId,
    },
    /// The answer of `router`'s controller to intent `id` reaches the orchestrator on `site`.
    Answer {
        site: RouterIx,
        router: RouterIx,
        id: u64,
        outcome: Result<(), String>,
    },
}

/// What one router's daemon put on and took off the wire, across its restarts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Traffic {
    pub frames_sent: u64,
    /// Sum of the frames' `encoded_len`.
    pub bytes_sent: u64,
    pub frames_received: u64,
    pub bytes_received: u64,
    /// Frames refused as a whole by the receiving instance.
    pub frames_rejected: u64,
}

/// One router.
pub(crate) struct Router {
    /// Its protocol instance while it runs.
    pub(crate) inst: Option<Instance>,
    /// Changes at every start and stop: events of an earlier incarnation are ignored.
    pub(crate) generation: u32,
    /// Starts so far (its boot id is this count).
    pub(crate) boots: u32,
    /// When its first sample comes after a start.
    sample_phase_us: u64,
    /// The forwarding deadline a [`Event::Deadline`] is queued for.
    deadline_ms: Option<u64>,
    pub(crate) load: Load,
    pub(crate) controller: Option<Box<Controller>>,
    /// The region its controller was last told in this incarnation (with regions, at each of
    /// its samples).
    region: Region,
    /// Its orchestrator, if it runs one (index into the sites).
    pub(crate) site: Option<u32>,
    pub(crate) traffic: Traffic,
}

/// Network-wide counts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Totals {
    pub events: u64,
    pub frames_sent: u64,
    pub bytes_sent: u64,
    pub frames_delivered: u64,
    pub bytes_delivered: u64,
    /// Arrived at a router that is not the incarnation the stream was opened with.
    pub frames_lost: u64,
    /// Sent while no valid stream ran (the instance had not heard yet that it ended).
    pub frames_unsent: u64,
    /// Frames sent again: one of their segments was lost, or their link was down.
    pub retransmissions: u64,
    /// Streams given up after too many losses.
    pub streams_stalled: u64,
    pub sessions_opened: u64,
    pub intents_delivered: u64,
    /// Intents that reached a router that had gone down.
    pub intents_lost: u64,
    /// Intents a controller refused, by reason (its router's region).
    pub intents_refused: Refusals,
    /// Rules taken by a controller.
    pub rule_writes: u64,
    /// Rules taken that removed another orchestrator's rule of the service.
    pub rule_conflicts: u64,
    /// Rules a controller dropped because its router changed region.
    pub rules_dropped: u64,
}

/// What became of an event of the events file.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct ScriptOutcome {
    pub at_ms: u64,
    pub line: usize,
    /// The event, in words.
    pub event: String,
    /// `applied`, or why not.
    pub outcome: String,
}

/// How far a run is, for progress reports.
#[derive(Clone, Copy, Debug)]
pub struct Progress {
    pub sim_ms: u64,
    pub until_ms: u64,
    pub events: u64,
    pub wall: Duration,
}

/// A simulated network and everything running on it.
pub struct Sim {
    pub(crate) cfg: SimConfig,
    pub(crate) net: Network,
    /// Each router's id, by index.
    pub(crate) ids: Vec<RouterId>,
    pub(crate) routers: Vec<Router>,
    sessions: Vec<Option<Session>>,
    queue: EventQueue<Event>,
    pub(crate) script: Script,
    pub(crate) script_log: Vec<ScriptOutcome>,
    pub(crate) sites: Vec<Site>,
    is_orchestrator: Vec<bool>,
    /// Services every router reports demand for (those of the policies applied).
    services: BTreeSet<String>,
    /// Demand set by events: router → service → flows per second.
    demand: BTreeMap<RouterIx, BTreeMap<String, f64>>,
    rng: SplitMix64,
    now_us: u64,
    next_session: u32,
    pub(crate) totals: Totals,
    pub(crate) wall: Duration,
}

impl Sim {
    /// A network of `net` with its routers about to start (staggered as configured), the
    /// orchestrators chosen by the configuration running `policy` (if any), and `script` to
    /// play.
    pub fn new(
        net: Network,
        cfg: SimConfig,
        script: Script,
        policy: Option<(Policy, String)>,
    ) -> Result<Sim, SimError> {
        cfg.validate()?;
        if net.is_empty() {
            return Err(SimError::Empty);
        }
        let n = net.len();
        let ids = net
            .routers()
            .map(|r| {
                RouterId::new(net.name_of(r)).map_err(|error| SimError::RouterName {
                    name: net.name_of(r).to_owned(),
                    error,
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let mut rng = SplitMix64::new(cfg.seed);
        let telemetry_us = u64::from(cfg.protocol.telemetry_interval_ms) * 1000;
        let mut routers: Vec<Router> = (0..n)
            .map(|i| Router {
                inst: None,
                generation: 0,
                boots: 0,
                sample_phase_us: 0,
                deadline_ms: None,
                load: Load::new(cfg.load, cfg.seed, i),
                controller: None,
                region: Region::Unknown,
                site: None,
                traffic: Traffic::default(),
            })
            .collect();
        let mut queue = EventQueue::default();
        for (i, r) in routers.iter_mut().enumerate() {
            let start = if cfg.stagger_ms > 0 {
                rng.below(cfg.stagger_ms * 1000)
            } else {
                0
            };
            r.sample_phase_us = rng.below(telemetry_us.max(1));
            queue.push(start, Event::Start(RouterIx(i as u32)));
        }
        let orchestrators: Vec<RouterIx> = match &cfg.orchestrators.routers {
            None => net
                .routers()
                .filter(|r| net.role(*r) == wuos_model::Role::Fog)
                .collect(),
            Some(names) => {
                let mut v = Vec::new();
                for name in names {
                    let r = net.index(name).ok_or_else(|| SimError::UnknownOrchestrator {
                        name: name.clone(),
                        origin: "--orchestrators".into(),
                    })?;
                    if !v.contains(&r) {
                        v.push(r);
                    }
                }
                v
            }
        };
        let datacenter = cfg.orchestrators.datacenter.clone().unwrap_or_else(|| {
            net.routers()
                .find(|r| net.role(*r) == wuos_model::Role::Dc)
                .map_or_else(|| "dc".to_owned(), |r| net.name_of(r).to_owned())
        });
        let p = &cfg.protocol;
        let settle_ms = u64::from(p.dead_interval_ms) + 2 * u64::from(p.telemetry_interval_ms);
        let mut sites = Vec::with_capacity(orchestrators.len());
        let mut is_orchestrator = vec![false; n];
        for r in orchestrators {
            let o = &cfg.orchestrators;
            let mut c = Config::new(net.name_of(r), datacenter.clone());
            c.confirm_samples = o.confirm_samples;
            c.drain_ms = o.drain_ms;
            c.ready_timeout_ms = o.ready_timeout_ms;
            c.min_demand_flows = o.min_demand_flows;
            // As the daemon's `[orchestrator] regions`: on with regions (`nearest`), off without.
            c.region = o.regions.on();
            // As the daemon: three missed telemetry intervals make the whole view stale.
            c.max_staleness_ms = (3 * u64::from(p.telemetry_interval_ms)).max(1000);
            c.validate().map_err(|error| SimError::Orchestrator {
                router: net.name_of(r).to_owned(),
                error,
            })?;
            let mut site = Site::new(r, c, settle_ms);
            if let Some((policy, source)) = &policy {
                site.configure(policy.clone(), source.clone());
            }
            routers[r.get()].site = Some(sites.len() as u32);
            is_orchestrator[r.get()] = true;
            sites.push(site);
        }
        for e in &script.events {
            if let events::Action::ApplyPolicy { orchestrator, .. } = &e.action
                && !is_orchestrator[orchestrator.get()]
            {
                return Err(SimError::NotAnOrchestrator {
                    name: net.name_of(*orchestrator).to_owned(),
                    origin: format!("{}:{}", script.source, e.line),
                });
            }
        }
        for (i, e) in script.events.iter().enumerate() {
            queue.push(e.at_us, Event::Script(i as u32));
        }
        let services = policy
            .iter()
            .flat_map(|(p, _)| p.services.iter().map(|s| s.name.clone()))
            .collect();
        Ok(Sim {
            sessions: vec![None; net.links().len()],
            cfg,
            net,
            ids,
            routers,
            queue,
            script,
            script_log: Vec::new(),
            sites,
            is_orchestrator,
            services,
            demand: BTreeMap::new(),
            rng,
            now_us: 0,
            next_session: 0,
            totals: Totals::default(),
            wall: Duration::ZERO,
        })
    }

    /// Runs until simulated time `until_ms`; `progress` is called about once a second of wall
    /// time.
    pub fn run_until(&mut self, until_ms: u64, progress: &mut dyn FnMut(&Progress)) {
        let until_us = until_ms.saturating_mul(1000);
        let t0 = Instant::now();
        let mut reported = t0;
        while let Some((at, event)) = self.queue.pop_until(until_us) {
            self.now_us = at;
            self.totals.events += 1;
            self.dispatch(event);
            if self.totals.events.is_multiple_of(4096) && reported.elapsed() >= Duration::from_secs(1) {
                reported = Instant::now();
                progress(&Progress {
                    sim_ms: self.now_ms(),
                    until_ms,
                    events: self.totals.events,
                    wall: self.wall + t0.elapsed(),
                });
            }
        }
        self.now_us = self.now_us.max(until_us);
        self.wall += t0.elapsed();
    }

    /// Simulated time, ms.
    pub fn now_ms(&self) -> u64 {
        self.now_us / 1000
    }

    /// Wall time spent running so far.
    pub fn wall(&self) -> Duration {
        self.wall
    }

    /// The network (links in their current state).
    pub fn network(&self) -> &Network {
        &self.net
    }

    /// The configuration.
    pub fn config(&self) -> &SimConfig {
        &self.cfg
    }

    /// Router `name`'s instance, while it runs.
    pub fn instance(&self, name: &str) -> Option<&Instance> {
        self.routers[self.net.index(name)?.get()].inst.as_ref()
    }

    /// Router `name`'s controller, once an intent reached it.
    pub fn controller(&self, name: &str) -> Option<&Controller> {
        self.routers[self.net.index(name)?.get()].controller.as_deref()
    }

    /// The orchestrators.
    pub fn sites(&self) -> &[Site] {
        &self.sites
    }

    /// The network-wide counts.
    pub fn totals(&self) -> Totals {
        self.totals
    }

    /// What a router put on and took off the wire.
    pub fn traffic(&self, name: &str) -> Option<Traffic> {
        Some(self.routers[self.net.index(name)?.get()].traffic)
    }

    /// Events waiting in the queue.
    pub fn pending_events(&self) -> usize {
        self.queue.len()
    }

    fn now_ms_u(&self) -> u64 {
        self.now_us / 1000
    }

    fn unix_ns(&self) -> i64 {
        EPOCH_UNIX_NS + (self.now_us as i64).saturating_mul(1000)
    }

    fn running(&self, r: RouterIx) -> bool {
        self.routers[r.get()].inst.is_some()
    }

    fn alive(&self, r: RouterIx, generation: u32) -> bool {
        let rt = &self.routers[r.get()];
        rt.inst.is_some() && rt.generation == generation
    }

    /// The link's stream, if one is open and both ends run the incarnations it opened with.
    fn valid_session(&self, link: LinkIx) -> Option<u32> {
        let s = self.sessions[link.get()].as_ref()?;
        let l = self.net.link(link);
        let ok = self.alive(l.a, s.generations[0]) && self.alive(l.b, s.generations[1]);
        ok.then_some(s.id)
    }

    fn dispatch(&mut self, event: Event) {
        match event {
            Event::Start(r) => {
                self.start(r);
            }
            Event::Tick { router, generation } => self.tick(router, generation),
            Event::Sample { router, generation } => self.sample(router, generation),
            Event::Deadline {
                router,
                generation,
                at_ms,
            } => self.deadline(router, generation, at_ms),
            Event::Opened { link, session, side } => self.opened(link, session, side),
            Event::Closed { link, session, side } => self.closed(link, session, side),
            Event::Deliver {
                link,
                session,
                direction,
            } => self.deliver(link, session, usize::from(direction)),
            Event::Script(i) => self.play(i as usize),
            Event::Control(c) => self.control(*c),
        }
    }

    /// Starts a router that is down; false if it runs already.
    fn start(&mut self, r: RouterIx) -> bool {
        if self.running(r) {
            return false;
        }
        let now = self.now_us;
        let net = &self.net;
        let rt = &mut self.routers[r.get()];
        rt.generation += 1;
        rt.boots += 1;
        rt.deadline_ms = None;
        let mut c = self
            .cfg
            .protocol
            .instance(net.name_of(r), net.role(r).into(), u64::from(rt.boots));
        c.neighbors = net
            .adjacent(r)
            .iter()
            .enumerate()
            .map(|(k, a)| NeighborConfig {
                id: net.name_of(a.peer).to_owned(),
                address: format!("{}:{PROTOCOL_PORT}", net.loopback(a.peer)),
                interface: format!("eth{k}"),
            })
            .collect();
        c.control_address = format!("{}:{PROTOCOL_PORT}", net.loopback(r));
        rt.inst = Some(Instance::new(c));
        // Its controller's region is unknown until its first sample.
        rt.region = Region::Unknown;
        let generation = rt.generation;
        let restart = rt.controller.as_mut().map(|c| c.start()).unwrap_or_default();
        let phase = rt.sample_phase_us;
        let site = rt.site;
        self.queue.push(now, Event::Tick { router: r, generation });
        self.queue.push(now + phase, Event::Sample { router: r, generation });
        self.carry_out(r, restart);
        if let Some(s) = site {
            self.sites[s as usize].start(now / 1000);
        }
        true
    }

    /// Stops (`graceful`: withdraws itself and ends its streams) or crashes a running router;
    /// false if it is down already.
    fn halt(&mut self, r: RouterIx, graceful: bool) -> bool {
        if !self.running(r) {
            return false;
        }
        if graceful {
            let now_ms = self.now_ms_u();
            let actions = self.inst_mut(r).process(Input::Shutdown { now_ms });
            self.execute(r, actions);
            for k in 0..self.net.adjacent(r).len() {
                let a = self.net.adjacent(r)[k];
                if let Some(id) = self.valid_session(a.link) {
                    self.push(r, a, id, 0, Payload::Fin);
                }
            }
        }
        let rt = &mut self.routers[r.get()];
        rt.inst = None;
        rt.generation += 1;
        if let Some(c) = rt.controller.as_mut() {
            c.halt();
        }
        if let Some(s) = rt.site {
            self.sites[s as usize].halt();
        }
        true
    }

    fn inst_mut(&mut self, r: RouterIx) -> &mut Instance {
        self.routers[r.get()].inst.as_mut().expect("the router runs")
    }

    fn tick(&mut self, r: RouterIx, generation: u32) {
        if !self.alive(r, generation) {
            return;
        }
        self.dial(r);
        let now_ms = self.now_ms_u();
        let actions = self.inst_mut(r).process(Input::Tick { now_ms });
        self.execute(r, actions);
        let next = self.now_us + self.cfg.protocol.tick_ms() * 1000;
        self.queue.push(next, Event::Tick { router: r, generation });
    }

    fn deadline(&mut self, r: RouterIx, generation: u32, at_ms: u64) {
        if !self.alive(r, generation) || self.routers[r.get()].deadline_ms != Some(at_ms) {
            return;
        }
        self.routers[r.get()].deadline_ms = None;
        let now_ms = self.now_ms_u();
        let actions = self.inst_mut(r).process(Input::Tick { now_ms });
        self.execute(r, actions);
        self.schedule_deadline(r);
    }

    /// Queues a [`Event::Deadline`] for `r`'s earliest forwarding deadline, unless one as early
    /// is queued already (it queues the next when it comes).
    fn schedule_deadline(&mut self, r: RouterIx) {
        let now_ms = self.now_ms_u();
        let rt = &self.routers[r.get()];
        let Some(at_ms) = rt.inst.as_ref().and_then(Instance::next_deadline_ms) else {
            return;
        };
        if rt.deadline_ms.is_some_and(|t| t >= now_ms && t <= at_ms) {
            return;
        }
        let generation = rt.generation;
        self.routers[r.get()].deadline_ms = Some(at_ms);
        let at_us = (at_ms * 1000).max(self.now_us);
        self.queue.push(
            at_us,
            Event::Deadline {
                router: r,
                generation,
                at_ms,
            },
        );
    }

    fn sample(&mut self, r: RouterIx, generation: u32) {
        if !self.alive(r, generation) {
            return;
        }
        let now_ms = self.now_ms_u();
        let timestamp_unix_ns = self.unix_ns();
        let model = self.cfg.load;
        let (cores, memory) = self.net.capacity(r);
        let cores = cores.unwrap_or(1.0);
        let mem_total = memory.unwrap_or(1 << 30);
        let rt = &mut self.routers[r.get()];
        let (cpu, mem) = rt.load.next(model);
        let resources = pb::Resources {
            cpu_used_pct: cpu,
            cpu_capacity_cores: cores,
            mem_used_pct: mem,
            mem_used_bytes: (mem_total as f64 * mem / 100.0) as u64,
            mem_total_bytes: mem_total,
            free_cpu_cores: cores * (1.0 - cpu / 100.0),
            free_mem_bytes: (mem_total as f64 * (1.0 - mem / 100.0)) as u64,
            ..Default::default()
        };
        let services = rt.controller.as_ref().map(|c| c.advertised()).unwrap_or_default();
        let set = self.demand.get(&r);
        let demand = self
            .services
            .iter()
            .filter_map(|s| {
                let flows = set
                    .and_then(|m| m.get(s))
                    .copied()
                    .unwrap_or(self.cfg.demand_flows_per_s);
                (flows > 0.0).then(|| pb::ServiceDemand {
                    service: s.clone(),
                    flows_per_s: flows,
                    packets: 0,
                })
            })
            .collect();
        // As the daemon's sampler: the region first goes to the controller, then into the advert
        // (an orchestrator routes a router once its advert names it, and the controller must by
        // then take its intents).
        let inst = self.routers[r.get()].inst.as_ref().expect("alive");
        let chosen = self.cfg.orchestrators.regions.choose(
            &self.ids[r.get()],
            self.net.role(r),
            self.is_orchestrator[r.get()],
            inst,
            now_ms,
            timestamp_unix_ns,
        );
        let region = crate::region::advertised(chosen.as_ref());
        if let Some(chosen) = chosen {
            self.tell_region(r, chosen);
        }
        let site = self.routers[r.get()].site.map(|s| s as usize);
        let placements = site.map(|s| self.sites[s].placements()).unwrap_or_default();
        let actions = self.inst_mut(r).process(Input::Sample {
            now_ms,
            timestamp_unix_ns,
            resources,
            links: Vec::new(),
            services,
            demand,
            region,
            placements,
            sdwan: None,
        });
        self.execute(r, actions);
        if let Some(s) = site {
            self.round(r, s);
        }
        let next = self.now_us + u64::from(self.cfg.protocol.telemetry_interval_ms) * 1000;
        self.queue.push(next, Event::Sample { router: r, generation });
    }

    /// The orchestrator on `r` runs a round with `r`'s neighborhood.
    fn round(&mut self, r: RouterIx, s: usize) {
        let now_ms = self.now_ms_u();
        let inst = self.routers[r.get()].inst.as_ref().expect("alive");
        let n = inst.neighborhood(now_ms, self.unix_ns());
        let routers = &self.routers;
        let running = |x: RouterIx| routers[x.get()].inst.is_some();
        let reach = Reach {
            net: &self.net,
            running: &running,
        };
        let sends = self.sites[s].round(&n, now_ms, &reach);
        self.dispatch_intents(r, sends);
    }

    /// Tells router `r`'s controller its region, if it changed.
    fn tell_region(&mut self, r: RouterIx, region: Region) {
        let rt = &mut self.routers[r.get()];
        if rt.region == region {
            return;
        }
        rt.region = region.clone();
        let Some(c) = rt.controller.as_mut() else { return };
        let dropped = c.counts().rules_dropped;
        let fx = c.region(region);
        self.totals.rules_dropped += c.counts().rules_dropped - dropped;
        self.carry_out(r, fx);
    }

    /// Sends intents from the orchestrator on `from` towards their controllers.
    fn dispatch_intents(&mut self, from: RouterIx, sends: Vec<Send>) {
        let delay = self.cfg.controller.control_delay_ms * 1000;
        for Send { to, id, intent } in sends {
            let at = if to == from { self.now_us } else { self.now_us + delay };
            self.queue
                .push(at, Event::Control(Box::new(Control::Intent { to, from, id, intent })));
        }
    }

    /// What router `r`'s controller asks of the simulator: instances ready after the start
    /// delay, answers to the orchestrators (at once to its own).
    fn carry_out(&mut self, r: RouterIx, fx: Effects) {
        let generation = self.routers[r.get()].generation;
        let start_us = self.cfg.controller.start_delay_ms * 1000;
        for service in fx.starting {
            self.queue.push(
                self.now_us + start_us,
                Event::Control(Box::new(Control::Started {
                    router: r,
                    generation,
                    service,
                })),
            );
        }
        for (to, outcome) in fx.answers {
            let site = RouterIx(to.session as u32);
            let delay = if site == r {
                0
            } else {
                self.cfg.controller.control_delay_ms * 1000
            };
            self.queue.push(
                self.now_us + delay,
                Event::Control(Box::new(Control::Answer {
                    site,
                    router: r,
                    id: to.intent_id,
                    outcome,
                })),
            );
        }
    }

    fn control(&mut self, c: Control) {
        let now_ms = self.now_ms_u();
        match c {
            Control::Intent { to, from, id, intent } => {
                if !self.running(to) {
                    self.totals.intents_lost += 1;
                    return;
                }
                self.totals.intents_delivered += 1;
                let is_rule = matches!(intent, wuos_controller::Intent::Rule { serving: Some(_), .. });
                let rt = &mut self.routers[to.get()];
                let region = &rt.region;
                let ctl = rt
                    .controller
                    .get_or_insert_with(|| Box::new(Controller::new(self.ids[to.get()].clone(), region)));
                // The answer goes back to the orchestrator's router, by the intent's id.
                let origin = Origin {
                    session: u64::from(from.0),
                    intent_id: id,
                };
                let (admission, fx) = ctl.intent(&self.ids[from.get()], origin, intent, now_ms);
                match admission {
                    Admission::Refused(e) => self.totals.intents_refused.add(&e),
                    Admission::Taken { overwrote } => {
                        self.totals.rule_writes += u64::from(is_rule);
                        self.totals.rule_conflicts += u64::from(overwrote);
                    }
                }
                self.carry_out(to, fx);
            }
            Control::Started {
                router,
                generation,
                service,
            } => {
                if !self.alive(router, generation) {
                    return;
                }
                let fx = match self.routers[router.get()].controller.as_mut() {
                    Some(c) => c.started(&service),
                    None => return,
                };
                self.carry_out(router, fx);
            }
            Control::Answer {
                site,
                router,
                id,
                outcome,
            } => {
                if !self.running(site) {
                    return;
                }
                let Some(s) = self.routers[site.get()].site else { return };
                let routers = &self.routers;
                let running = |x: RouterIx| routers[x.get()].inst.is_some();
                let reach = Reach {
                    net: &self.net,
                    running: &running,
                };
                let sends = self.sites[s as usize].answer(id, router, outcome, now_ms, &reach);
                self.dispatch_intents(site, sends);
            }
        }
    }

    /// Router `r` opens a stream to each neighbor that sorts after it, runs, and has no valid
    /// stream with it (telling itself of a stream its restarted peer reset).
    fn dial(&mut self, r: RouterIx) {
        for k in 0..self.net.adjacent(r).len() {
            let a = self.net.adjacent(r)[k];
            let l = self.net.link(a.link);
            if l.a != r || self.valid_session(a.link).is_some() || !self.running(a.peer) {
                // Not ours to dial, open already, or a silent peer: nothing tells us until the
                // dead interval.
                continue;
            }
            let up = l.up;
            let delay = l.delay_us;
            if let Some(old) = self.sessions[a.link.get()].take()
                && old.generations[0] == self.routers[r.get()].generation
            {
                // Its peer restarted: our end finds the stream reset.
                let input = Input::LinkClosed {
                    now_ms: self.now_ms_u(),
                    neighbor: self.net.name_of(a.peer).to_owned(),
                    reason: "connection reset".into(),
                };
                let actions = self.inst_mut(r).process(input);
                self.execute(r, actions);
            }
            if !up {
                continue;
            }
            self.next_session = self.next_session.wrapping_add(1);
            let id = self.next_session;
            let generations = [self.routers[r.get()].generation, self.routers[a.peer.get()].generation];
            self.sessions[a.link.get()] = Some(Session::new(id, generations, self.now_us + 2 * delay));
            self.totals.sessions_opened += 1;
            // The acceptor learns of it when the first bytes arrive; the dialler once the
            // handshake's answer is back.
            let link = a.link;
            self.queue.push(
                self.now_us + delay,
                Event::Opened {
                    link,
                    session: id,
                    side: 1,
                },
            );
            self.queue.push(
                self.now_us + 2 * delay,
                Event::Opened {
                    link,
                    session: id,
                    side: 0,
                },
            );
        }
    }

    fn opened(&mut self, link: LinkIx, session: u32, side: u8) {
        if self.valid_session(link) != Some(session) {
            return;
        }
        let l = self.net.link(link);
        let (me, peer) = if side == 0 { (l.a, l.b) } else { (l.b, l.a) };
        if !l.up {
            if side == 0 {
                // The handshake did not complete: the dialler tries again at a later tick.
                self.sessions[link.get()] = None;
            }
            return;
        }
        let input = Input::LinkOpened {
            now_ms: self.now_ms_u(),
            neighbor: self.net.name_of(peer).to_owned(),
        };
        let actions = self.inst_mut(me).process(input);
        self.execute(me, actions);
    }

    fn closed(&mut self, link: LinkIx, session: u32, side: u8) {
        let l = self.net.link(link);
        let (me, peer) = if side == 0 { (l.a, l.b) } else { (l.b, l.a) };
        if !self.running(me) {
            return;
        }
        // Only the stream it has: a reopened one is not closed by an old close.
        if self.sessions[link.get()].as_ref().is_some_and(|s| s.id != session) {
            return;
        }
        self.end_of_stream(me, peer);
    }

    /// `me` finds that `peer` closed their stream.
    fn end_of_stream(&mut self, me: RouterIx, peer: RouterIx) {
        let input = Input::LinkClosed {
            now_ms: self.now_ms_u(),
            neighbor: self.net.name_of(peer).to_owned(),
            reason: "closed by the peer".into(),
        };
        let actions = self.inst_mut(me).process(input);
        self.execute(me, actions);
    }

    /// Puts `payload` on the stream `id` of the link to `a`, from `r`.
    fn push(&mut self, r: RouterIx, a: Adjacent, id: u32, bytes: usize, payload: Payload) {
        let l = self.net.link(a.link);
        let direction = l.direction_from(r);
        let transit = stream::transit(l, bytes, &mut self.rng);
        let s = self.sessions[a.link.get()].as_mut().expect("a valid stream");
        let d = &mut s.directions[direction];
        self.totals.retransmissions += u64::from(transit.retransmissions);
        if transit.us.is_none() {
            self.totals.streams_stalled += 1;
        }
        if let Some(due) = d.push(self.now_us, transit.us, bytes as u32, payload) {
            self.queue.push(
                due,
                Event::Deliver {
                    link: a.link,
                    session: id,
                    direction: direction as u8,
                },
            );
        }
    }

    /// Carries out router `r`'s actions.
    fn execute(&mut self, r: RouterIx, actions: Vec<Action>) {
        for action in actions {
            match action {
                Action::SendFrame { neighbor, frame } => {
                    let Some(a) = self.net.neighbor(r, &neighbor) else {
                        continue;
                    };
                    let Some(id) = self.valid_session(a.link) else {
                        self.totals.frames_unsent += 1;
                        continue;
                    };
                    let bytes = frame.encoded_len();
                    let t = &mut self.routers[r.get()].traffic;
                    t.frames_sent += 1;
                    t.bytes_sent += bytes as u64;
                    self.totals.frames_sent += 1;
                    self.totals.bytes_sent += bytes as u64;
                    self.push(r, a, id, bytes, Payload::Frame(*frame));
                }
                Action::CloseLink { neighbor, .. } => {
                    let Some(a) = self.net.neighbor(r, &neighbor) else {
                        continue;
                    };
                    let Some(id) = self.valid_session(a.link) else { continue };
                    let s = self.sessions[a.link.get()].take().expect("valid");
                    let l = self.net.link(a.link);
                    if l.up {
                        let d = l.direction_from(r);
                        let at = (self.now_us + l.delay_us).max(s.directions[d].tail_us());
                        let side = if a.peer == l.a { 0 } else { 1 };
                        self.queue.push(
                            at,
                            Event::Closed {
                                link: a.link,
                                session: id,
                                side,
                            },
                        );
                    }
                }
                Action::NeighborUp { .. }
                | Action::NeighborDown { .. }
                | Action::ViewAdded { .. }
                | Action::ViewWithdrawn { .. } => {}
            }
        }
    }

    /// The head of one direction of the stream `session` on `link` is due.
    fn deliver(&mut self, link: LinkIx, session: u32, direction: usize) {
        let l = self.net.link(link);
        let Some(s) = self.sessions[link.get()].as_mut().filter(|s| s.id == session) else {
            return;
        };
        let d = &mut s.directions[direction];
        if !l.up {
            match d.retransmit(self.now_us, l) {
                Some(at) => {
                    self.totals.retransmissions += 1;
                    self.queue.push(
                        at,
                        Event::Deliver {
                            link,
                            session,
                            direction: direction as u8,
                        },
                    );
                }
                None => self.totals.streams_stalled += 1,
            }
            return;
        }
        let Some((head, next)) = d.arrive(self.now_us) else {
            return;
        };
        if let Some(at) = next {
            self.queue.push(
                at,
                Event::Deliver {
                    link,
                    session,
                    direction: direction as u8,
                },
            );
        }
        let (from, to) = if direction == 0 { (l.a, l.b) } else { (l.b, l.a) };
        let rtt_ms = l.rtt_us() as f64 / 1000.0;
        // Bytes in flight arrive even if their sender stopped since; the receiver must be the
        // incarnation the stream was opened with.
        let receiver_generation = s.generations[1 - direction];
        if !self.alive(to, receiver_generation) {
            self.totals.frames_lost += u64::from(matches!(head.payload, Payload::Frame(_)));
            return;
        }
        match head.payload {
            Payload::Frame(frame) => {
                let t = &mut self.routers[to.get()].traffic;
                t.frames_received += 1;
                t.bytes_received += u64::from(head.bytes);
                self.totals.frames_delivered += 1;
                self.totals.bytes_delivered += u64::from(head.bytes);
                let now_ms = self.now_ms_u();
                let inst = self.routers[to.get()].inst.as_mut().expect("alive");
                let (actions, r) = inst.on_frame(now_ms, self.net.name_of(from), &frame, Some(rtt_ms));
                if r.is_err() {
                    self.routers[to.get()].traffic.frames_rejected += 1;
                }
                self.execute(to, actions);
                self.schedule_deadline(to);
            }
            Payload::Fin => {
                self.sessions[link.get()] = None;
                self.end_of_stream(to, from);
            }
        }
    }

    /// Event `action` in words.
    fn describe(&self, action: &events::Action) -> String {
        let name = |r: &RouterIx| self.net.name_of(*r);
        let link = |l: &LinkIx| {
            let l = self.net.link(*l);
            format!("{}-{}", self.net.name_of(l.a), self.net.name_of(l.b))
        };
        match action {
            events::Action::LinkDown(l) => format!("link_down {}", link(l)),
            events::Action::LinkUp(l) => format!("link_up {}", link(l)),
            events::Action::LinkSet { link: l, .. } => format!("link_set {}", link(l)),
            events::Action::Stop(r) => format!("stop {}", name(r)),
            events::Action::Crash(r) => format!("crash {}", name(r)),
            events::Action::Start(r) => format!("start {}", name(r)),
            events::Action::SetLoad { router, .. } => format!("set_load {}", name(router)),
            events::Action::SetDemand {
                router,
                service,
                flows_per_s,
            } => format!("set_demand {} {service} {flows_per_s}", name(router)),
            events::Action::ApplyPolicy {
                orchestrator, source, ..
            } => format!("apply_policy {} {source}", name(orchestrator)),
        }
    }

    /// Plays event `i` of the events file.
    fn play(&mut self, i: usize) {
        let e = self.script.events[i].clone();
        let event = self.describe(&e.action);
        let applied = "applied".to_owned();
        let outcome = match e.action {
            events::Action::LinkDown(l) => {
                self.net.link_mut(l).up = false;
                applied
            }
            events::Action::LinkUp(l) => {
                self.net.link_mut(l).up = true;
                applied
            }
            events::Action::LinkSet {
                link,
                delay_us,
                jitter_us,
                loss_pct,
            } => {
                let l = self.net.link_mut(link);
                l.delay_us = delay_us.unwrap_or(l.delay_us);
                l.jitter_us = jitter_us.unwrap_or(l.jitter_us);
                l.loss_pct = loss_pct.unwrap_or(l.loss_pct);
                applied
            }
            events::Action::Stop(r) | events::Action::Crash(r) => {
                let graceful = matches!(e.action, events::Action::Stop(_));
                if self.halt(r, graceful) {
                    applied
                } else {
                    "ignored: the router is down already".into()
                }
            }
            events::Action::Start(r) => {
                if self.start(r) {
                    applied
                } else {
                    "ignored: the router runs already".into()
                }
            }
            events::Action::SetLoad {
                router,
                cpu_pct,
                mem_pct,
            } => {
                self.routers[router.get()].load.pin(cpu_pct, mem_pct);
                applied
            }
            events::Action::SetDemand {
                router,
                service,
                flows_per_s,
            } => {
                self.services.insert(service.clone());
                self.demand.entry(router).or_default().insert(service, flows_per_s);
                applied
            }
            events::Action::ApplyPolicy {
                orchestrator,
                policy,
                source,
            } => {
                if self.running(orchestrator) {
                    self.services.extend(policy.services.iter().map(|s| s.name.clone()));
                    let s = self.routers[orchestrator.get()].site.expect("checked at start") as usize;
                    let now_ms = self.now_ms_u();
                    let routers = &self.routers;
                    let running = |x: RouterIx| routers[x.get()].inst.is_some();
                    let reach = Reach {
                        net: &self.net,
                        running: &running,
                    };
                    let sends = self.sites[s].apply_policy(policy, source, now_ms, &reach);
                    self.dispatch_intents(orchestrator, sends);
                    applied
                } else {
                    "refused: the router is down (its admin API does not answer)".into()
                }
            }
        };
        self.script_log.push(ScriptOutcome {
            at_ms: self.now_ms_u(),
            line: e.line,
            event,
            outcome,
        });
    }
}
