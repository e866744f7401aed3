//! Several orchestrators sharing one network: each router's view is built from a hand-made
//! topology (every router within the flooding radius, 2 hops), each router chooses its region
//! ([`region::choose`]) and advertises it, each orchestrator runs a round on its view
//! ([`neighborhood::round_inputs`]), and its intents go to the routers' controllers
//! (`wuos-controller`, told their region, as the daemon will) with the orchestrator's router as
//! the sender. The domains are simulated: an instance is ready as soon as it is ensured.
//! [`conflict::check`] then compares what the controllers hold with the regions and with what
//! each orchestrator says it serves.
//!
//! - the issue's line, `actor1–edge1–foga–edge2–fogb–edge3–actor3` with a dc 30 ms from both
//!   fogs and `examples/voip.policy` on both: reproduced without regions (fogb's route
//!   overwrites foga's), clean with them; then foga dies and its routers re-home;
//! - 1,000 routers (a 40×25 grid) with 20 fog orchestrators and a dc linked to every fog.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use wuos_controller::{Controller, Input as CtlInput, Op, Origin, Region};
use wuos_model::rng::SplitMix64;
use wuos_model::{Role, RouterId, ServiceId};
use wuos_orchestrator::conflict::{self, Conflict, HeldRule, Network};
use wuos_orchestrator::neighborhood::round_inputs;
use wuos_orchestrator::region::choose;
use wuos_orchestrator::{Config, Decision, DecisionKind, Input, Intent, Orchestrator, Output, Placement, Policy};
use wuos_proto::neighborhood::{AdvertisedPlacement, Neighborhood, RouterView};
use wuos_proto::pb;

const VOIP: &str = include_str!("../../../examples/voip.policy");
const HOP_LIMIT: u32 = 2;
const DC: &str = "dc";

fn id(s: &str) -> RouterId {
    RouterId::new(s).unwrap()
}

struct Node {
    role: Role,
    mem_used_pct: f64,
    /// Added to the hop count as the latency others see of it, ms.
    latency_ms: f64,
    /// New flows per second of pabx it reports.
    demand: f64,
}

/// An orchestrator intent as delivered, for the checks.
struct Delivered {
    orchestrator: String,
    router: String,
    intent: Intent,
}

enum Event {
    Orch(String, Input),
    Out(String, Output),
    Ctl(String, CtlInput),
}

/// The network, every router's controller, every orchestrator.
struct Net {
    nodes: BTreeMap<String, Node>,
    links: BTreeMap<String, BTreeSet<String>>,
    dead: BTreeSet<String>,
    /// What each router advertises as its region.
    regions: BTreeMap<String, Option<RouterId>>,
    orchs: BTreeMap<String, Orchestrator>,
    ctls: BTreeMap<String, Controller>,
    /// Whether controllers are told their region (off: as before regions).
    feed_regions: bool,
    running: BTreeMap<String, BTreeSet<ServiceId>>,
    /// (orchestrator, intent id) → (router, service, is a start).
    pending: BTreeMap<(String, u64), (String, String, bool)>,
    next_id: u64,
    delivered: Vec<Delivered>,
    refused: Vec<String>,
    decisions: BTreeMap<String, Vec<Decision>>,
}

impl Net {
    fn new(regions_on: bool) -> Self {
        Net {
            nodes: BTreeMap::new(),
            links: BTreeMap::new(),
            dead: BTreeSet::new(),
            regions: BTreeMap::new(),
            orchs: BTreeMap::new(),
            ctls: BTreeMap::new(),
            feed_regions: regions_on,
            running: BTreeMap::new(),
            pending: BTreeMap::new(),
            next_id: 0,
            delivered: Vec::new(),
            refused: Vec::new(),
            decisions: BTreeMap::new(),
        }
    }

    fn node(&mut self, name: &str, role: Role, mem_used_pct: f64, latency_ms: f64, demand: f64) {
        self.nodes.insert(
            name.into(),
            Node {
                role,
                mem_used_pct,
                latency_ms,
                demand,
            },
        );
        self.ctls.insert(name.into(), Controller::new(id(name), false));
        self.regions.insert(name.into(), None);
        if role == Role::Dc {
            // The dc always runs every service (an operator started it).
            self.running
                .entry(name.into())
                .or_default()
                .insert(ServiceId::new("pabx").unwrap());
        }
    }

    fn orchestrator(&mut self, name: &str) {
        let mut cfg = Config::new(name, DC);
        cfg.region = self.feed_regions;
        cfg.drain_ms = 2000;
        self.orchs
            .insert(name.into(), Orchestrator::new(cfg, Policy::parse(VOIP).unwrap()));
        self.regions.insert(name.into(), Some(id(name)));
    }

    fn link(&mut self, a: &str, b: &str) {
        self.links.entry(a.into()).or_default().insert(b.into());
        self.links.entry(b.into()).or_default().insert(a.into());
    }

    fn alive(&self, r: &str) -> bool {
        !self.dead.contains(r)
    }

    /// Routers within the flooding radius of `me`, with their hops (breadth first).
    fn within_radius(&self, me: &str) -> BTreeMap<String, u32> {
        let mut hops = BTreeMap::from([(me.to_string(), 0)]);
        let mut queue = VecDeque::from([me.to_string()]);
        while let Some(r) = queue.pop_front() {
            let h = hops[&r];
            if h == HOP_LIMIT {
                continue;
            }
            for n in self.links.get(&r).into_iter().flatten() {
                if self.alive(n) && !hops.contains_key(n) {
                    hops.insert(n.clone(), h + 1);
                    queue.push_back(n.clone());
                }
            }
        }
        hops
    }

    /// `me`'s neighborhood as its protocol instance would publish it.
    fn view(&self, me: &str, at_ms: u64) -> Neighborhood {
        let mut routers: Vec<RouterView> = self
            .within_radius(me)
            .into_iter()
            .map(|(name, hops)| {
                let n = &self.nodes[&name];
                let placements = self.orchs.get(&name).map_or_else(Vec::new, |o| {
                    o.placements()
                        .into_iter()
                        .map(|p| AdvertisedPlacement {
                            service: p.service,
                            serving: RouterId::new(p.serving).ok(),
                            vip: p.vip,
                        })
                        .collect()
                });
                RouterView {
                    id: id(&name),
                    role: n.role,
                    hops,
                    latency_ms: if hops == 0 { 0.0 } else { f64::from(hops) + n.latency_ms },
                    stale: false,
                    resources: Some(pb::Resources {
                        mem_used_pct: n.mem_used_pct,
                        cpu_used_pct: 10.0,
                        ..Default::default()
                    }),
                    control_address: None,
                    demand: if n.demand > 0.0 {
                        vec![("pabx".to_string(), n.demand)]
                    } else {
                        Vec::new()
                    },
                    instances: Vec::new(),
                    sampled_unix_ns: 0,
                    region: self.regions[&name].clone(),
                    placements,
                    sdwan: None,
                }
            })
            .collect();
        // This router first, then the view by id, as the protocol publishes it.
        routers.sort_by_key(|r| (r.hops != 0, r.id.clone()));
        Neighborhood { at_ms, routers }
    }

    /// One telemetry interval: every router chooses its region (its controller told first, then
    /// its adverts say it), then every orchestrator runs a round.
    fn round(&mut self, now_ms: u64) {
        let alive: Vec<String> = self.nodes.keys().filter(|r| self.alive(r)).cloned().collect();
        let chosen: Vec<(String, Option<RouterId>)> = alive
            .iter()
            .map(|r| {
                let runs = self.orchs.contains_key(r);
                (
                    r.clone(),
                    choose(&id(r), self.nodes[r].role, runs, &self.view(r, now_ms)),
                )
            })
            .collect();
        let mut events = VecDeque::new();
        for (r, region) in chosen {
            if self.feed_regions {
                events.push_back(Event::Ctl(
                    r.clone(),
                    CtlInput::Region(Region::from_choice(region.clone())),
                ));
            }
            self.regions.insert(r, region);
        }
        self.run(events);
        let orchs: Vec<String> = self.orchs.keys().filter(|o| self.alive(o)).cloned().collect();
        for o in orchs {
            let view = self.view(&o, now_ms);
            let events = round_inputs(&view, now_ms)
                .into_iter()
                .map(|i| Event::Orch(o.clone(), i))
                .collect();
            self.run(events);
        }
    }

    fn run(&mut self, mut events: VecDeque<Event>) {
        while let Some(e) = events.pop_front() {
            match e {
                Event::Orch(o, input) => {
                    for out in self.orchs.get_mut(&o).unwrap().handle(input) {
                        events.push_back(Event::Out(o.clone(), out));
                    }
                }
                Event::Out(o, Output::Decision(d)) => self.decisions.entry(o).or_default().push(d),
                Event::Out(_, Output::Ignored { .. }) => {}
                Event::Out(o, Output::Intent { router, intent }) => self.deliver(&o, router, intent, &mut events),
                Event::Ctl(r, input) => {
                    let ops = self.ctls.get_mut(&r).unwrap().handle(input);
                    self.carry_out(&r, ops, &mut events);
                }
            }
        }
    }

    /// As the daemon's delivery: the orchestrator's intent to a controller, the orchestrator's
    /// router as the sender.
    fn deliver(&mut self, o: &str, router: String, intent: Intent, events: &mut VecDeque<Event>) {
        self.delivered.push(Delivered {
            orchestrator: o.to_string(),
            router: router.clone(),
            intent: intent.clone(),
        });
        let (typed, service, start) = match intent {
            Intent::StartInstance { service } => (
                wuos_controller::Intent::Instance {
                    service: ServiceId::new(service.as_str()).unwrap(),
                    present: true,
                },
                service,
                true,
            ),
            Intent::StopInstance { service } => (
                wuos_controller::Intent::Instance {
                    service: ServiceId::new(service.as_str()).unwrap(),
                    present: false,
                },
                service,
                false,
            ),
            Intent::RouteService {
                service,
                vip,
                to_router,
            } => (
                wuos_controller::Intent::Rule {
                    service: ServiceId::new(service.as_str()).unwrap(),
                    vip: vip.expect("voip.policy names a VIP"),
                    serving: Some(id(&to_router)),
                },
                service,
                false,
            ),
        };
        if !self.alive(&router) {
            if start {
                let reason = format!("{router} does not answer");
                events.push_back(Event::Orch(
                    o.to_string(),
                    Input::InstanceFailed {
                        service,
                        router,
                        reason,
                    },
                ));
            }
            return;
        }
        self.next_id += 1;
        let intent_id = self.next_id;
        self.pending
            .insert((o.to_string(), intent_id), (router.clone(), service, start));
        let session = self.orchs.keys().position(|k| k == o).unwrap() as u64 + 1;
        events.push_back(Event::Ctl(
            router,
            CtlInput::Intent {
                from: Origin { session, intent_id },
                sender: id(o),
                intent: typed,
            },
        ));
    }

    /// The daemon's side of a controller's ops: domains ensured at once (ready), every reconcile
    /// successful, answers back to the orchestrators; persistence and kernel routes are not
    /// simulated.
    fn carry_out(&mut self, router: &str, ops: Vec<Op>, events: &mut VecDeque<Event>) {
        for op in ops {
            match op {
                Op::Ensure { service, present } => {
                    let running = self.running.entry(router.to_string()).or_default();
                    if present {
                        running.insert(service.clone());
                    } else {
                        running.remove(&service);
                    }
                    let list = running
                        .iter()
                        .map(|s| wuos_controller::LocalInstance {
                            service: s.clone(),
                            state: wuos_controller::InstanceState::Ready,
                            address: None,
                            link: None,
                        })
                        .collect();
                    events.push_back(Event::Ctl(
                        router.to_string(),
                        CtlInput::Ensured {
                            service,
                            present,
                            outcome: Ok(()),
                        },
                    ));
                    events.push_back(Event::Ctl(router.to_string(), CtlInput::Instances(list)));
                }
                Op::Answer { to, outcome } => {
                    let o = self.orchs.keys().nth(to.session as usize - 1).unwrap().clone();
                    let Some((router, service, start)) = self.pending.remove(&(o.clone(), to.intent_id)) else {
                        continue;
                    };
                    match (start, outcome) {
                        (true, Ok(())) => events.push_back(Event::Orch(o, Input::InstanceReady { service, router })),
                        (true, Err(reason)) => {
                            self.refused.push(format!("{o} → {router}: start {service}: {reason}"));
                            events.push_back(Event::Orch(
                                o,
                                Input::InstanceFailed {
                                    service,
                                    router,
                                    reason,
                                },
                            ));
                        }
                        (false, Err(reason)) => self.refused.push(format!("{o} → {router}: {service}: {reason}")),
                        (false, Ok(())) => {}
                    }
                }
                Op::Reconcile => {
                    let concerned = self.ctls[router]
                        .plan(&wuos_controller::KernelView::default())
                        .concerned;
                    let outcomes = concerned.into_iter().map(|k| (k, Ok(()))).collect();
                    events.push_back(Event::Ctl(router.to_string(), CtlInput::Reconciled(outcomes)));
                }
                Op::Persist { .. } => {}
            }
        }
    }

    /// What the conflict check reads: regions, the rules every live controller holds, where
    /// every live orchestrator serves (no hosts: the actors run no daemon here).
    fn network(&self) -> Network {
        let alive = |r: &&String| self.alive(r);
        Network {
            regions: self
                .regions
                .iter()
                .filter(|(r, _)| alive(r))
                .map(|(r, o)| (r.clone(), o.as_ref().map(ToString::to_string)))
                .collect(),
            rules: self
                .ctls
                .iter()
                .filter(|(r, _)| alive(r))
                .map(|(r, c)| {
                    let held = c
                        .rules_in_force()
                        .map(|(sender, service, _, serving)| HeldRule {
                            service: service.to_string(),
                            writer: sender.map(ToString::to_string),
                            serving: serving.to_string(),
                        })
                        .collect();
                    (r.clone(), held)
                })
                .collect(),
            serving: self
                .orchs
                .iter()
                .filter(|(o, _)| alive(o))
                .map(|(o, orch)| {
                    let routed = orch
                        .placements()
                        .into_iter()
                        .filter(|p| p.vip.is_some())
                        .map(|p| (p.service, p.serving))
                        .collect();
                    (o.clone(), routed)
                })
                .collect(),
            hosts: BTreeSet::new(),
        }
    }

    fn conflicts(&self) -> Vec<String> {
        conflict::check(&self.network())
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    /// The region of `r` as a name ("-" for none).
    fn region(&self, r: &str) -> String {
        self.regions[r].as_ref().map_or("-".into(), ToString::to_string)
    }

    /// Where `o` serves pabx.
    fn serving(&self, o: &str) -> String {
        self.orchs[o].serving()["pabx"].clone()
    }

    /// The decision log is true: its latest move (or restore) of pabx names where `o` serves it.
    fn assert_log_is_true(&self, o: &str) {
        let last = self.decisions[o]
            .iter()
            .rev()
            .find(|d| d.service == "pabx" && matches!(d.kind, DecisionKind::Move | DecisionKind::Restore))
            .unwrap_or_else(|| panic!("{o} decided nothing"));
        let to = match &last.to {
            Placement::Local => o.to_string(),
            Placement::Datacenter => DC.to_string(),
            Placement::Router(r) => r.clone(),
        };
        assert_eq!(to, self.serving(o), "{o}'s log ends with {last}");
    }

    /// Every route an orchestrator sent went to a router of its region at the time, or told the
    /// dc to serve the VIP itself; every start went inside its region.
    fn assert_confined(&self, from: usize) {
        for d in &self.delivered[from..] {
            let shared_dc =
                d.router == DC && matches!(&d.intent, Intent::RouteService { to_router, .. } if to_router == DC);
            assert!(
                shared_dc || self.region(&d.router) == d.orchestrator,
                "{} sent {:?} to {}, in {}'s region",
                d.orchestrator,
                d.intent,
                d.router,
                self.region(&d.router)
            );
        }
    }
}

/// The issue's network: `actor1–edge1–foga–edge2–fogb–edge3–actor3`, a dc 30 ms from both fogs
/// (the actors are hosts without a daemon: not in any view). foga may serve pabx itself (memory
/// 10%); fogb may not (50%), and edge2 is nearer to it than edge3 (latency).
fn two_fogs(regions_on: bool) -> Net {
    let mut n = Net::new(regions_on);
    n.node("edge1", Role::Edge, 10.0, 0.2, 2.0);
    n.node("foga", Role::Fog, 10.0, 0.1, 0.0);
    n.node("edge2", Role::Edge, 10.0, 0.1, 2.0);
    n.node("fogb", Role::Fog, 50.0, 0.1, 0.0);
    n.node("edge3", Role::Edge, 10.0, 0.5, 2.0);
    n.node(DC, Role::Dc, 10.0, 30.0, 0.0);
    for (a, b) in [
        ("edge1", "foga"),
        ("foga", "edge2"),
        ("edge2", "fogb"),
        ("fogb", "edge3"),
        ("foga", DC),
        ("fogb", DC),
    ] {
        n.link(a, b);
    }
    n.orchestrator("foga");
    n.orchestrator("fogb");
    n
}

#[test]
fn without_regions_the_last_writer_wins_as_the_issue_reports() {
    let mut n = two_fogs(false);
    for t in 0..12 {
        n.round(t * 1000);
    }
    assert_eq!((n.serving("foga"), n.serving("fogb")), ("foga".into(), "edge2".into()));
    let conflicts = n.conflicts();
    for expected in [
        "foga is in foga's region, but holds fogb's rule for pabx",
        "edge2 is in foga's region, but holds fogb's rule for pabx",
        "foga serves pabx at foga, but edge2 of its region holds no rule for it",
    ] {
        assert!(
            conflicts.iter().any(|c| c == expected),
            "expected {expected:?} among {conflicts:#?}"
        );
    }
}

#[test]
fn two_fogs_with_regions_share_the_line_without_conflict() {
    let mut n = two_fogs(true);
    for t in 0..12 {
        n.round(t * 1000);
    }
    // Each router belongs to exactly one region (edge2 ties at 1 hop: the smaller id); the dc
    // to none.
    let regions: Vec<(&str, String)> = ["edge1", "foga", "edge2", "fogb", "edge3", DC]
        .into_iter()
        .map(|r| (r, n.region(r)))
        .collect();
    assert_eq!(
        regions,
        vec![
            ("edge1", "foga".into()),
            ("foga", "foga".into()),
            ("edge2", "foga".into()),
            ("fogb", "fogb".into()),
            ("edge3", "fogb".into()),
            (DC, "-".into()),
        ]
    );
    assert_eq!(
        n.orchs["foga"].region_members().into_iter().collect::<Vec<_>>(),
        vec!["edge1", "edge2", "foga"]
    );
    // Each serves pabx in its own region: fogb at edge3, although edge2 is nearer to it.
    assert_eq!((n.serving("foga"), n.serving("fogb")), ("foga".into(), "edge3".into()));
    n.assert_confined(0);
    assert!(n.refused.is_empty(), "{:#?}", n.refused);
    assert_eq!(n.conflicts(), Vec::<String>::new());
    n.assert_log_is_true("foga");
    n.assert_log_is_true("fogb");
    // What each router holds, by writer: the dc serves the VIP itself for both.
    let held: BTreeMap<&str, Vec<String>> = n
        .ctls
        .iter()
        .map(|(r, c)| {
            let rules = c
                .rules_in_force()
                .map(|(s, _, _, to)| format!("{} → {to}", s.unwrap()))
                .collect();
            (r.as_str(), rules)
        })
        .collect();
    assert_eq!(
        held,
        BTreeMap::from([
            (DC, vec!["foga → dc".to_string(), "fogb → dc".to_string()]),
            ("edge1", vec!["foga → foga".to_string()]),
            ("edge2", vec!["foga → foga".to_string()]),
            ("edge3", vec!["fogb → edge3".to_string()]),
            ("foga", vec!["foga → foga".to_string()]),
            ("fogb", vec!["fogb → edge3".to_string()]),
        ])
    );
    // Each learns the other's placement from its adverts.
    let seen: Vec<String> = n.orchs["foga"]
        .neighbor_placements()
        .flat_map(|(o, p)| p.iter().map(move |p| format!("{o}: {p}")))
        .collect();
    assert_eq!(seen, vec!["fogb: pabx at edge3 (10.255.0.10)"]);

    // foga dies: edge2 re-homes to fogb (next nearest), edge1 sees no orchestrator any more.
    let mark = n.delivered.len();
    n.dead.insert("foga".into());
    for t in 12..16 {
        n.round(t * 1000);
    }
    assert_eq!(
        (n.region("edge1"), n.region("edge2"), n.region("edge3")),
        ("-".into(), "fogb".into(), "fogb".into())
    );
    // edge1 sees no orchestrator: it keeps the rule in force (the data plane does not depend on
    // a control plane being in sight) until another orchestrator takes it into its region.
    assert_eq!(
        n.ctls["edge1"]
            .rules_in_force()
            .map(|(s, _, _, to)| format!("{} → {to}", s.unwrap()))
            .collect::<Vec<_>>(),
        vec!["foga → foga"],
        "edge1 keeps foga's rule"
    );
    assert_eq!(
        n.ctls["edge2"]
            .rules_in_force()
            .map(|(s, _, _, to)| format!("{} → {to}", s.unwrap()))
            .collect::<Vec<_>>(),
        vec!["fogb → edge3"],
        "fogb announced pabx to edge2 when it joined"
    );
    n.assert_confined(mark);
    assert!(n.refused.is_empty(), "{:#?}", n.refused);
    // The one thing the check reports is edge1's kept rule: true of the network (a router in no
    // region still sends the VIP to the dead fog) and no fight — nobody else wrote it.
    assert_eq!(
        n.conflicts(),
        vec!["edge1 is in no region, but holds foga's rule sending pabx to foga".to_string()]
    );
    n.assert_log_is_true("fogb");
}

/// 1,000 routers: a 40×25 grid, 20 fogs (every 4 columns and 12 rows, so that routers between
/// two fogs tie), each running an orchestrator, a dc linked to every fog.
#[test]
fn a_thousand_routers_and_twenty_fog_orchestrators_place_without_conflict() {
    let (w, h) = (40, 25);
    let name = |x: usize, y: usize| format!("r{:04}", y * w + x);
    let mut fogs = BTreeSet::new();
    for fx in (2..w).step_by(4) {
        for fy in [6, 18] {
            fogs.insert(name(fx, fy));
        }
    }
    assert_eq!(fogs.len(), 20);
    let mut rng = SplitMix64::new(7);
    let mut n = Net::new(true);
    for y in 0..h {
        for x in 0..w {
            let r = name(x, y);
            let fog = fogs.contains(&r);
            // Half the fogs can serve pabx themselves; edges are mostly under 30% memory.
            let mem = if fog {
                if rng.below(2) == 0 { 10.0 } else { 60.0 }
            } else {
                (rng.next_f64() * 40.0).round()
            };
            let latency = (rng.next_f64() * 10.0).round() / 10.0;
            let role = if fog { Role::Fog } else { Role::Edge };
            n.node(&r, role, mem, latency, if fog { 0.0 } else { 1.0 });
        }
    }
    n.node(DC, Role::Dc, 10.0, 30.0, 0.0);
    for y in 0..h {
        for x in 0..w {
            if x + 1 < w {
                n.link(&name(x, y), &name(x + 1, y));
            }
            if y + 1 < h {
                n.link(&name(x, y), &name(x, y + 1));
            }
        }
    }
    for f in &fogs {
        n.link(f, DC);
        n.orchestrator(f);
    }
    for t in 0..10 {
        n.round(t * 1000);
    }
    // Regions: every router within 2 hops of a fog belongs to one, at most 2 hops from it;
    // between two fogs, the smaller id.
    let mut members = 0;
    for r in n.nodes.keys().filter(|r| *r != DC) {
        let near: Vec<(u32, String)> = fogs
            .iter()
            .filter_map(|f| n.within_radius(r).get(f).map(|h| (*h, f.clone())))
            .collect();
        let expected = near.iter().min().map(|(_, f)| f.clone());
        assert_eq!(n.regions[r].as_ref().map(ToString::to_string), expected, "{r}");
        members += usize::from(expected.is_some());
    }
    assert!(members > 200, "{members} routers in a region");
    assert_eq!(n.region(DC), "-");
    // Every orchestrator placed pabx inside its region (demand everywhere, routers to spare).
    for f in &fogs {
        let at = n.serving(f);
        assert!(
            at != DC && n.region(&at) == *f,
            "{f} serves pabx at {at}, in {}'s region",
            n.region(&at)
        );
        n.assert_log_is_true(f);
    }
    n.assert_confined(0);
    assert!(n.refused.is_empty(), "{:#?}", n.refused);
    let conflicts: Vec<Conflict> = conflict::check(&n.network());
    assert!(conflicts.is_empty(), "{conflicts:#?}");
    assert_eq!(
        n.ctls[DC].rules_in_force().count(),
        20,
        "the dc serves the VIP itself, for every region"
    );
}
