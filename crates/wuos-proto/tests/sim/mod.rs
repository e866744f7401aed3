//! A network of protocol instances joined by simulated links: a discrete-event simulator that
//! executes the instances' actions (hellos as request and reply, floods as one-way messages,
//! each taking the link's delay), fires their ticks and samples periodically, and logs the
//! events they report. Deterministic: events at the same time run in the order they were
//! scheduled.
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
            delay_ms: 1,
            sample: true,
            log_floods: false,
        }
    }
}

struct Router {
    index: usize,
    inst: Option<Instance>,
    /// Bumped at every stop and start: periodic events of an older generation are dropped.
    generation: u64,
    sampling: bool,
    samples: u64,
}

#[derive(Clone, Copy, Debug)]
pub struct Link {
    pub up: bool,
    pub delay_ms: u64,
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
    /// A hello arriving at `to`.
    Hello {
        from: String,
        to: String,
        hello: pb::Hello,
        sent_ms: u64,
        generation: u64,
    },
    /// The outcome of `from`'s hello to `to`, arriving back at `from`.
    HelloOutcome {
        from: String,
        to: String,
        reply: Option<pb::HelloReply>,
        sent_ms: u64,
        generation: u64,
    },
    /// A flood request arriving at `to`.
    Flood {
        from: String,
        to: String,
        request: pb::FloodRequest,
    },
}

/// The simulated network.
pub struct Sim {
    pub now: u64,
    pub params: Params,
    routers: BTreeMap<String, Router>,
    links: BTreeMap<(String, String), Link>,
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

/// `line:N` or `ring:N` as router names r1..rN and links.
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
    /// A network of `routers` joined by `links`, every router started with boot id 1 at time 0.
    pub fn new(params: Params, routers: &[String], links: &[(String, String)]) -> Self {
        let mut sim = Sim {
            now: 0,
            params,
            routers: BTreeMap::new(),
            links: BTreeMap::new(),
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
        c.neighbors = self
            .links
            .keys()
            .filter_map(|(a, b)| {
                let other = if a == router {
                    b
                } else if b == router {
                    a
                } else {
                    return None;
                };
                Some(NeighborConfig {
                    id: other.clone(),
                    address: format!("{other}:7470"),
                    interface: format!("to-{other}"),
                })
            })
            .collect();
        c.validate().expect("simulated configuration");
        c
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

    /// Starts (or restarts) a router with a fresh instance.
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

    /// Stops a router abruptly (a crash): it sends and answers nothing.
    pub fn stop(&mut self, router: &str) {
        let r = self.routers.get_mut(router).unwrap();
        r.generation += 1;
        r.inst = None;
    }

    pub fn set_sampling(&mut self, router: &str, on: bool) {
        self.routers.get_mut(router).unwrap().sampling = on;
    }

    /// Feeds an input to a router now and executes the resulting actions.
    pub fn input(&mut self, router: &str, input: Input) {
        let Some(inst) = self.instance_mut(router) else { return };
        let actions = inst.process(input);
        self.execute(router, actions);
    }

    /// A sample of `router` now with the given figures.
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
        };
        self.input(router, input);
    }

    /// Executes `router`'s actions: messages are scheduled, events logged.
    pub fn execute(&mut self, router: &str, actions: Vec<Action>) {
        let generation = self.generation(router);
        for a in actions {
            match a {
                Action::SendHello { neighbor, hello } => {
                    let d = self.link(router, &neighbor).map_or(0, |l| l.delay_ms);
                    self.schedule(
                        self.now + d,
                        Event::Hello {
                            from: router.into(),
                            to: neighbor,
                            hello,
                            sent_ms: self.now,
                            generation,
                        },
                    );
                }
                Action::SendFlood { neighbor, request } => {
                    if self.params.log_floods {
                        self.say(format!("{router} -> {neighbor} {}", describe_flood(&request)));
                    }
                    let d = self.link(router, &neighbor).map_or(0, |l| l.delay_ms);
                    self.schedule(
                        self.now + d,
                        Event::Flood {
                            from: router.into(),
                            to: neighbor,
                            request,
                        },
                    );
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

    /// Runs every event up to and including time `until`.
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
                self.input(&router, Input::Tick { now_ms: now });
                let next = now + u64::from(self.params.hello_interval_ms);
                self.schedule(next, Event::Tick { router, generation });
            }
            Event::Sample { router, generation } => {
                if !self.alive(&router, generation) {
                    return;
                }
                let r = self.routers.get_mut(&router).unwrap();
                if r.sampling {
                    r.samples += 1;
                    let (i, n) = (r.index as u64, r.samples);
                    let cpu = ((i * 17 + n * 7) % 90) as f64 + 0.5;
                    let mem = ((i * 11 + n * 3) % 80) as f64 + 10.0;
                    self.sample(&router, cpu, mem);
                }
                let next = now + u64::from(self.params.telemetry_interval_ms);
                self.schedule(next, Event::Sample { router, generation });
            }
            Event::Hello {
                from,
                to,
                hello,
                sent_ms,
                generation,
            } => {
                let link = self.link(&from, &to);
                let d = link.map_or(0, |l| l.delay_ms);
                let mut reply = None;
                if link.is_some_and(|l| l.up)
                    && let Some(inst) = self.instance_mut(&to)
                {
                    match inst.on_hello(now, &hello) {
                        Ok((r, actions)) => {
                            reply = Some(r);
                            self.execute(&to, actions);
                        }
                        Err(e) => self.say(format!("{to} rejected hello from {from}: {e}")),
                    }
                }
                self.schedule(
                    now + d,
                    Event::HelloOutcome {
                        from,
                        to,
                        reply,
                        sent_ms,
                        generation,
                    },
                );
            }
            Event::HelloOutcome {
                from,
                to,
                reply,
                sent_ms,
                generation,
            } => {
                if !self.alive(&from, generation) {
                    return;
                }
                let back = self.link(&from, &to).is_some_and(|l| l.up);
                let input = match reply {
                    Some(reply) if back => Input::HelloAnswered {
                        now_ms: now,
                        neighbor: to,
                        reply,
                        rtt_ms: (now - sent_ms) as f64,
                    },
                    _ => Input::HelloFailed {
                        now_ms: now,
                        neighbor: to,
                    },
                };
                self.input(&from, input);
            }
            Event::Flood { from, to, request } => {
                if !self.link(&from, &to).is_some_and(|l| l.up) {
                    if self.params.log_floods {
                        self.say(format!("{from} -> {to} flood lost"));
                    }
                    return;
                }
                let Some(inst) = self.instance_mut(&to) else { return };
                match inst.on_flood(now, &request) {
                    Ok((_, actions)) => self.execute(&to, actions),
                    Err(e) => self.say(format!("{to} rejected flood from {from}: {e}")),
                }
            }
        }
    }

    /// Each live router's view: origin → hops.
    pub fn views(&self) -> BTreeMap<String, BTreeMap<String, u32>> {
        self.routers
            .iter()
            .filter_map(|(id, r)| {
                let inst = r.inst.as_ref()?;
                Some((
                    id.clone(),
                    inst.view().iter().map(|e| (e.advert.origin.clone(), e.hops)).collect(),
                ))
            })
            .collect()
    }

    /// Hop distances over the links that are up, from `from`, to routers that are alive.
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

/// `flood adverts=[r3#2/1 ...] withdrawals=[r5#1/1 (reason)]`: origin, sequence (or boot id for
/// withdrawals), remaining hop limit.
pub fn describe_flood(r: &pb::FloodRequest) -> String {
    let adverts: Vec<String> = r
        .adverts
        .iter()
        .map(|a| format!("{}#{}.{}/{}", a.origin, a.boot_id, a.sequence, a.hop_limit))
        .collect();
    let withdrawals: Vec<String> = r
        .withdrawals
        .iter()
        .map(|w| format!("{}#{}/{} ({})", w.origin, w.boot_id, w.hop_limit, w.reason))
        .collect();
    let mut s = String::from("flood");
    if !adverts.is_empty() {
        s += &format!(" adverts=[{}]", adverts.join(" "));
    }
    if !withdrawals.is_empty() {
        s += &format!(" withdrawals=[{}]", withdrawals.join(" "));
    }
    s
}
