//! A network of protocol instances joined by simulated links: a discrete-event simulator that
//! opens a session (the `Neighbor.Link` stream) on every link, the router whose id sorts first
//! dialling, delivers the instances' frames over it (each taking the link's delay, lost while the
//! link is down), closes it when an instance says so, fires ticks (every quarter hello interval,
//! as the daemon does) and samples periodically, and logs the events the instances report.
//! Deterministic: events at the same time run in the order they were scheduled.
//!
//! A stopped router is silent: its sessions are not closed, its neighbors notice by the dead
//! interval. A dialler finds a session whose other end restarted reset at its next tick (TCP
//! would tell it on its next write) and opens a new one.
#![allow(dead_code)]

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};

use wuos_proto::instance::{Action, Input, Instance, InstanceConfig};
use wuos_proto::neighbor::NeighborConfig;
use wuos_proto::pb;

/// Wall clock of simulated time 0, ns since the Unix epoch.
pub const EPOCH_UNIX_NS: i64 = 1_700_000_000_000_000_000;

/// Network-wide protocol settings.
#[derive(Clone, Debug)]
pub struct Params {
    pub hop_limit: u32,
    pub hello_interval_ms: u32,
    pub dead_interval_ms: u32,
    pub telemetry_interval_ms: u32,
    pub stale_after_intervals: u32,
    /// Quiet adverts (`InstanceConfig::quiet_intervals`); 1 in the golden scenarios.
    pub quiet_intervals: u32,
    /// Whether periodic samples keep the same figures (so that quiet adverts stay quiet)
    /// rather than moving at every sample.
    pub steady: bool,
    /// Delay of every link unless set otherwise.
    pub delay_ms: u64,
    /// Whether routers sample periodically (every telemetry interval, half an interval after
    /// their ticks).
    pub sample: bool,
    /// Whether to log every flood request sent, not only the instances' events.
    pub log_floods: bool,
}

impl Default for Params {
    fn default() -> Self {
        Params {
            hop_limit: 2,
            hello_interval_ms: 1000,
            dead_interval_ms: 3000,
            telemetry_interval_ms: 1000,
            stale_after_intervals: 3,
            quiet_intervals: 1,
            steady: false,
            delay_ms: 1,
            sample: true,
            log_floods: false,
        }
    }
}

struct Router {
    index: usize,
    inst: Option<Instance>,
    generation: u64,
    sampling: bool,
    samples: u64,
}

#[derive(Clone, Copy, Debug)]
pub struct Link {
    pub up: bool,
    pub delay_ms: u64,
}

/// An open `Neighbor.Link` stream between two routers (key order), valid while both are the
/// incarnations it was opened with.
#[derive(Clone, Copy, Debug)]
struct Session {
    id: u64,
    generations: (u64, u64),
}

#[derive(Debug)]
enum Event {
    Tick {
        router: String,
        generation: u64,
    },
    Sample {
        router: String,
        generation: u64,
    },
    Opened {
        router: String,
        neighbor: String,
        session: u64,
    },
    Closed {
        router: String,
        neighbor: String,
        session: u64,
        reason: String,
    },
    Frame {
        from: String,
        to: String,
        session: u64,
        frame: Box<pb::Frame>,
    },
}

pub struct Sim {
    pub now: u64,
    pub params: Params,
    routers: BTreeMap<String, Router>,
    links: BTreeMap<(String, String), Link>,
    sessions: BTreeMap<(String, String), Session>,
    queue: BinaryHeap<Reverse<(u64, u64)>>,
    events: BTreeMap<u64, Event>,
    seq: u64,
    pub log: Vec<String>,
}

fn key(a: &str, b: &str) -> (String, String) {
    if a <= b {
        (a.into(), b.into())
    } else {
        (b.into(), a.into())
    }
}

pub fn topology(spec: &str) -> (Vec<String>, Vec<(String, String)>) {
    let (kind, n) = spec.split_once(':').expect("topology is KIND:N");
    let n: usize = n.parse().expect("topology size");
    let names: Vec<String> = (1..=n).map(|i| format!("r{i}")).collect();
    let mut links: Vec<_> = (1..n).map(|i| (names[i - 1].clone(), names[i].clone())).collect();
    match kind {
        "line" => {}
        "ring" => links.push((names[n - 1].clone(), names[0].clone())),
        other => panic!("unknown topology {other}"),
    }
    (names, links)
}

impl Sim {
    pub fn new(params: Params, routers: &[String], links: &[(String, String)]) -> Self {
        let mut sim = Sim {
            now: 0,
            params,
            routers: BTreeMap::new(),
            links: BTreeMap::new(),
            sessions: BTreeMap::new(),
            queue: BinaryHeap::new(),
            events: BTreeMap::new(),
            seq: 0,
            log: Vec::new(),
        };
        for (a, b) in links {
            sim.links.insert(
                key(a, b),
                Link {
                    up: true,
                    delay_ms: sim.params.delay_ms,
                },
            );
        }
        for (index, r) in routers.iter().enumerate() {
            sim.routers.insert(
                r.clone(),
                Router {
                    index,
                    inst: None,
                    generation: 0,
                    sampling: sim.params.sample,
                    samples: 0,
                },
            );
        }
        for r in routers {
            sim.start(r, 1);
        }
        sim
    }

    pub fn config(&self, router: &str, boot_id: u64) -> InstanceConfig {
        let p = &self.params;
        let mut c = InstanceConfig::new(router, pb::Role::Edge, boot_id);
        c.hop_limit = p.hop_limit;
        c.hello_interval_ms = p.hello_interval_ms;
        c.dead_interval_ms = p.dead_interval_ms;
        c.telemetry_interval_ms = p.telemetry_interval_ms;
        c.stale_after_intervals = p.stale_after_intervals;
        c.quiet_intervals = p.quiet_intervals;
        c.neighbors = self
            .neighbors_of(router)
            .into_iter()
            .map(|other| NeighborConfig {
                address: format!("{other}:7470"),
                interface: format!("to-{other}"),
                id: other,
            })
            .collect();
        c.validate().expect("simulated configuration");
        c
    }

    fn neighbors_of(&self, router: &str) -> Vec<String> {
        self.links
            .keys()
            .filter_map(|(a, b)| {
                if a == router {
                    Some(b.clone())
                } else if b == router {
                    Some(a.clone())
                } else {
                    None
                }
            })
            .collect()
    }

    pub fn instance(&self, router: &str) -> Option<&Instance> {
        self.routers[router].inst.as_ref()
    }

    pub fn instance_mut(&mut self, router: &str) -> Option<&mut Instance> {
        self.routers.get_mut(router).unwrap().inst.as_mut()
    }

    pub fn router_names(&self) -> Vec<String> {
        self.routers.keys().cloned().collect()
    }

    pub fn link_mut(&mut self, a: &str, b: &str) -> &mut Link {
        self.links
            .get_mut(&key(a, b))
            .unwrap_or_else(|| panic!("no link {a}-{b}"))
    }

    fn alive(&self, router: &str, generation: u64) -> bool {
        self.routers
            .get(router)
            .is_some_and(|r| r.inst.is_some() && r.generation == generation)
    }

    fn generation(&self, router: &str) -> u64 {
        self.routers[router].generation
    }

    fn schedule(&mut self, at: u64, e: Event) {
        self.seq += 1;
        self.events.insert(self.seq, e);
        self.queue.push(Reverse((at, self.seq)));
    }

    fn link(&self, a: &str, b: &str) -> Option<Link> {
        self.links.get(&key(a, b)).copied()
    }

    fn say(&mut self, line: String) {
        self.log.push(format!("t={} {line}", self.now));
    }

    fn tick_ms(&self) -> u64 {
        (u64::from(self.params.hello_interval_ms) / 4).max(10)
    }

    pub fn start(&mut self, router: &str, boot_id: u64) {
        let cfg = self.config(router, boot_id);
        let r = self.routers.get_mut(router).unwrap();
        r.generation += 1;
        r.inst = Some(Instance::new(cfg));
        let g = r.generation;
        self.schedule(
            self.now,
            Event::Tick {
                router: router.into(),
                generation: g,
            },
        );
        let offset = u64::from(self.params.telemetry_interval_ms) / 2;
        self.schedule(
            self.now + offset,
            Event::Sample {
                router: router.into(),
                generation: g,
            },
        );
    }

    pub fn stop(&mut self, router: &str) {
        let r = self.routers.get_mut(router).unwrap();
        r.generation += 1;
        r.inst = None;
    }

    pub fn set_sampling(&mut self, router: &str, on: bool) {
        self.routers.get_mut(router).unwrap().sampling = on;
    }

    pub fn input(&mut self, router: &str, input: Input) {
        let Some(inst) = self.instance_mut(router) else { return };
        let actions = inst.process(input);
        self.execute(router, actions);
    }

    /// Delivers `frame` to `router` as if it came from `from` on their link; the outcome is
    /// logged when it is refused.
    pub fn deliver(&mut self, router: &str, from: &str, frame: &pb::Frame) -> Result<(), String> {
        let now = self.now;
        let Some(inst) = self.instance_mut(router) else {
            return Err(format!("{router} is stopped"));
        };
        let (actions, r) = inst.on_frame(now, from, frame, None);
        self.execute(router, actions);
        r.map_err(|e| e.to_string())
    }

    pub fn sample(&mut self, router: &str, cpu: f64, mem: f64) {
        let input = Input::Sample {
            now_ms: self.now,
            timestamp_unix_ns: EPOCH_UNIX_NS + self.now as i64 * 1_000_000,
            resources: pb::Resources {
                cpu_used_pct: cpu,
                cpu_capacity_cores: 1.0,
                mem_used_pct: mem,
                mem_total_bytes: 256 << 20,
                free_cpu_cores: 1.0 - cpu / 100.0,
                ..Default::default()
            },
            links: vec![],
            demand: vec![],
            services: vec![],
            region: String::new(),
            placements: vec![],
            sdwan: None,
        };
        self.input(router, input);
    }

    /// The session on the link `a`-`b`, if one is open and both ends are still the routers it
    /// was opened with.
    fn session(&self, a: &str, b: &str) -> Option<u64> {
        let k = key(a, b);
        let s = self.sessions.get(&k)?;
        (self.generation(&k.0) == s.generations.0 && self.generation(&k.1) == s.generations.1).then_some(s.id)
    }

    /// `router` dials its neighbors that sort after it where no valid session runs (and tells
    /// itself of a session reset by a restarted peer).
    fn dial(&mut self, router: &str) {
        for n in self.neighbors_of(router) {
            if router > n.as_str() {
                continue;
            }
            let k = key(router, &n);
            // A stopped peer is silent: nothing tells us until the dead interval.
            if self.session(router, &n).is_some() || self.routers[&n].inst.is_none() {
                continue;
            }
            if let Some(old) = self.sessions.remove(&k) {
                // Its peer restarted: our end finds the stream reset.
                if self.generation(router) == old.generations.0 {
                    self.input(
                        router,
                        Input::LinkClosed {
                            now_ms: self.now,
                            neighbor: n.clone(),
                            reason: "connection reset".into(),
                        },
                    );
                }
            }
            let alive = self.routers[&n].inst.is_some();
            let Some(link) = self.link(router, &n).filter(|l| l.up && alive) else {
                continue;
            };
            self.seq += 1;
            let id = self.seq;
            self.sessions.insert(
                k,
                Session {
                    id,
                    generations: (self.generation(router), self.generation(&n)),
                },
            );
            // The acceptor learns of it when the first bytes arrive; the dialler once the
            // handshake's answer is back.
            self.schedule(
                self.now + link.delay_ms,
                Event::Opened {
                    router: n.clone(),
                    neighbor: router.into(),
                    session: id,
                },
            );
            self.schedule(
                self.now + 2 * link.delay_ms,
                Event::Opened {
                    router: router.into(),
                    neighbor: n,
                    session: id,
                },
            );
        }
    }

    pub fn execute(&mut self, router: &str, actions: Vec<Action>) {
        for a in actions {
            match a {
                Action::SendFrame { neighbor, frame } => {
                    let Some(session) = self.session(router, &neighbor) else {
                        continue;
                    };
                    if self.params.log_floods {
                        self.say(format!("{router} -> {neighbor} {}", describe_frame(&frame)));
                    }
                    let d = self.link(router, &neighbor).map_or(0, |l| l.delay_ms);
                    self.schedule(
                        self.now + d,
                        Event::Frame {
                            from: router.into(),
                            to: neighbor,
                            session,
                            frame,
                        },
                    );
                }
                Action::CloseLink { neighbor, reason } => {
                    self.say(format!("{router} closes its link to {neighbor}: {reason}"));
                    if let Some(session) = self.session(router, &neighbor) {
                        self.sessions.remove(&key(router, &neighbor));
                        let d = self.link(router, &neighbor).map_or(0, |l| l.delay_ms);
                        self.schedule(
                            self.now + d,
                            Event::Closed {
                                router: neighbor,
                                neighbor: router.into(),
                                session,
                                reason: "closed by the peer".into(),
                            },
                        );
                    }
                }
                Action::NeighborUp { neighbor } => self.say(format!("{router} neighbor {neighbor} up")),
                Action::NeighborDown { neighbor, reason } => {
                    self.say(format!("{router} neighbor {neighbor} down: {reason}"))
                }
                Action::ViewAdded { origin } => self.say(format!("{router} view + {origin}")),
                Action::ViewWithdrawn { origin, reason } => self.say(format!("{router} view - {origin}: {reason}")),
            }
        }
    }

    pub fn run_until(&mut self, until: u64) {
        while let Some(&Reverse((at, seq))) = self.queue.peek() {
            if at > until {
                break;
            }
            self.queue.pop();
            self.now = at;
            let e = self.events.remove(&seq).unwrap();
            self.dispatch(e);
        }
        self.now = until;
    }

    fn dispatch(&mut self, e: Event) {
        let now = self.now;
        match e {
            Event::Tick { router, generation } => {
                if !self.alive(&router, generation) {
                    return;
                }
                self.dial(&router);
                // `next_tick_ms` is a promise: a tick before it does nothing (the daemon sleeps
                // until it). Every scenario and property run checks it at every tick.
                let before = self
                    .instance(&router)
                    .filter(|i| i.next_tick_ms().is_none_or(|t| now < t))
                    .map(|i| (i.counters().clone(), i.next_tick_ms()));
                if let Some((counters, next)) = before {
                    let inst = self.instance_mut(&router).unwrap();
                    let actions = inst.process(Input::Tick { now_ms: now });
                    assert!(
                        actions.is_empty() && *inst.counters() == counters,
                        "{router} ticked at {now}, before its next tick {next:?}, and did {actions:?}"
                    );
                } else {
                    self.input(&router, Input::Tick { now_ms: now });
                }
                let next = now + self.tick_ms();
                self.schedule(next, Event::Tick { router, generation });
            }
            Event::Sample { router, generation } => {
                if !self.alive(&router, generation) {
                    return;
                }
                let r = self.routers.get_mut(&router).unwrap();
                if r.sampling {
                    r.samples += 1;
                    let (i, n) = (r.index as u64, if self.params.steady { 0 } else { r.samples });
                    let cpu = ((i * 17 + n * 7) % 90) as f64 + 0.5;
                    let mem = ((i * 11 + n * 3) % 80) as f64 + 10.0;
                    self.sample(&router, cpu, mem);
                }
                let next = now + u64::from(self.params.telemetry_interval_ms);
                self.schedule(next, Event::Sample { router, generation });
            }
            Event::Opened {
                router,
                neighbor,
                session,
            } => {
                if self.session(&router, &neighbor) != Some(session) {
                    return;
                }
                self.input(&router, Input::LinkOpened { now_ms: now, neighbor });
            }
            Event::Closed {
                router,
                neighbor,
                session,
                reason,
            } => {
                if self.routers[&router].inst.is_none() {
                    return;
                }
                // Only the session it has: a reopened one is not closed by an old close.
                if self
                    .sessions
                    .get(&key(&router, &neighbor))
                    .is_some_and(|s| s.id != session)
                {
                    return;
                }
                self.input(
                    &router,
                    Input::LinkClosed {
                        now_ms: now,
                        neighbor,
                        reason,
                    },
                );
            }
            Event::Frame {
                from,
                to,
                session,
                frame,
            } => {
                // Bytes in flight arrive even if their sender stopped since; the receiver must be
                // the incarnation the session was opened with.
                let k = key(&from, &to);
                let receiver_ok = self.sessions.get(&k).is_some_and(|s| {
                    let g = if k.0 == to { s.generations.0 } else { s.generations.1 };
                    s.id == session && self.alive(&to, g)
                });
                if !receiver_ok || !self.link(&from, &to).is_some_and(|l| l.up) {
                    if self.params.log_floods {
                        self.say(format!("{from} -> {to} frame lost"));
                    }
                    return;
                }
                if let Err(e) = self.deliver(&to, &from, &frame) {
                    self.say(format!("{to} rejected a frame from {from}: {e}"));
                }
            }
        }
    }

    pub fn views(&self) -> BTreeMap<String, BTreeMap<String, u32>> {
        self.routers
            .iter()
            .filter_map(|(id, r)| {
                let inst = r.inst.as_ref()?;
                Some((
                    id.clone(),
                    inst.view()
                        .iter()
                        .map(|e| (e.advert.origin.clone(), e.hops_at(self.now)))
                        .collect(),
                ))
            })
            .collect()
    }

    pub fn distances(&self, from: &str) -> BTreeMap<String, u32> {
        let mut dist = BTreeMap::from([(from.to_owned(), 0u32)]);
        let mut frontier = vec![from.to_owned()];
        while !frontier.is_empty() {
            let mut next = Vec::new();
            for u in frontier {
                let du = dist[&u];
                for ((a, b), l) in &self.links {
                    if !l.up {
                        continue;
                    }
                    let v = if *a == u {
                        b
                    } else if *b == u {
                        a
                    } else {
                        continue;
                    };
                    if self.routers[v].inst.is_some() && !dist.contains_key(v) {
                        dist.insert(v.clone(), du + 1);
                        next.push(v.clone());
                    }
                }
            }
            frontier = next;
        }
        dist.remove(from);
        dist
    }
}

pub fn describe_frame(f: &pb::Frame) -> String {
    let mut parts = Vec::new();
    if let Some(h) = &f.hello {
        parts.push(format!("hello boot {}", h.boot_id));
    }
    if !f.need_full.is_empty() {
        parts.push(format!("need_full=[{}]", f.need_full.join(" ")));
    }
    let withdrawals: Vec<String> = f
        .withdrawals
        .iter()
        .map(|w| format!("{}#{}/{} ({})", w.origin, w.boot_id, w.hop_limit, w.reason))
        .collect();
    if !withdrawals.is_empty() {
        parts.push(format!("withdrawals=[{}]", withdrawals.join(" ")));
    }
    let adverts: Vec<String> = f
        .adverts
        .iter()
        .map(|a| format!("{}#{}.{}/{}", a.origin, a.boot_id, a.sequence, a.hop_limit))
        .collect();
    if !adverts.is_empty() {
        parts.push(format!("adverts=[{}]", adverts.join(" ")));
    }
    let deltas: Vec<String> = f
        .deltas
        .iter()
        .map(|d| {
            format!(
                "{}#{}.{}<{}/{}",
                d.origin, d.boot_id, d.sequence, d.base_sequence, d.hop_limit
            )
        })
        .collect();
    if !deltas.is_empty() {
        parts.push(format!("deltas=[{}]", deltas.join(" ")));
    }
    if parts.is_empty() {
        "frame (keepalive)".into()
    } else {
        format!("frame {}", parts.join(" "))
    }
}
