//! What a run says: [`Report`], written as JSON (`--out`) and summarised for people
//! ([`Report`]'s `Display`).
//!
//! `result` is a function of the inputs and the seed (the same run gives the same bytes);
//! `performance` is how long it took on this machine.

use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;

use crate::conflicts::ConflictSummary;
use crate::orchestrators::{DecisionRecord, SiteCounters};
use crate::sim::{ScriptOutcome, Sim, Totals, Traffic};

/// How much a report holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Detail {
    /// Totals, orchestrators and the events' outcomes.
    Summary,
    /// And every router's view, neighbors, counters, traffic, services and rules.
    Routers,
}

/// A run's report.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// What the run computed.
    pub result: Outcome,
    /// How long it took.
    pub performance: Performance,
}

/// The settings a run used.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Settings {
    pub hello_interval_ms: u32,
    pub dead_interval_ms: u32,
    pub telemetry_interval_ms: u32,
    pub hop_limit: u32,
    pub stale_after_intervals: u32,
    pub default_delay_ms: f64,
    pub default_loss_pct: f64,
    pub stagger_ms: u64,
    pub load: String,
    pub demand_flows_per_s: f64,
    pub start_delay_ms: u64,
    pub control_delay_ms: u64,
    pub regions: String,
}

/// The deterministic part of a report.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Outcome {
    pub topology: String,
    pub routers: usize,
    pub links: usize,
    pub seed: u64,
    /// Simulated time at the end, ms.
    pub sim_time_ms: u64,
    pub settings: Settings,
    /// Routers running at the end.
    pub running: usize,
    pub totals: Totals,
    /// The running instances' counters, summed (`rejected.REASON` included; an instance counts
    /// since its latest start).
    pub protocol: BTreeMap<String, u64>,
    pub views: ViewSummary,
    pub orchestrators: Vec<OrchestratorReport>,
    /// How many routers are in the views of 0, 1, 2, … orchestrators.
    pub orchestrator_coverage: BTreeMap<usize, usize>,
    /// The conflict check (`wuos_orchestrator::conflict::check`) over the network now.
    pub conflict_check: ConflictSummary,
    /// The events file's events and what became of them.
    pub events: Vec<ScriptOutcome>,
    /// Every router, with [`Detail::Routers`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub per_router: Option<Vec<RouterReport>>,
}

/// The views at the end, over the running routers.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct ViewSummary {
    pub mean_entries: f64,
    pub max_entries: usize,
    pub stale_entries: usize,
}

/// One view entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct ViewEntry {
    pub hops: u32,
    pub stale: bool,
}

/// A rule as a router holds it (one per service and writer).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RuleReport {
    pub service: String,
    pub serving: String,
    pub vip: String,
    /// The orchestrator that wrote it.
    pub writer: String,
    pub written_ms: u64,
    /// Every orchestrator that ever had a rule of the service taken on this router.
    pub writers: Vec<String>,
}

/// One router at the end.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RouterReport {
    pub id: String,
    pub role: String,
    pub running: bool,
    /// Its starts (its boot id is this count).
    pub boots: u32,
    /// Origin → hops and staleness.
    pub view: BTreeMap<String, ViewEntry>,
    /// Neighbor → `down`, `init` or `up`.
    pub neighbors: BTreeMap<String, String>,
    /// Its instance's counters that are not 0.
    pub counters: BTreeMap<String, u64>,
    pub traffic: Traffic,
    /// Service → `starting` or `running`.
    pub services: BTreeMap<String, String>,
    /// Its rules, by service and writer.
    pub rules: Vec<RuleReport>,
    /// Rules taken that removed another orchestrator's rule.
    pub rule_conflicts: u64,
    /// Intents its controller refused.
    pub intents_refused: u64,
    /// Rules its controller dropped when it changed region.
    pub rules_dropped: u64,
    /// The region its latest advert names ("" for none).
    pub region: String,
    /// The orchestrators whose latest neighborhood holds it.
    pub in_views_of: Vec<String>,
}

/// One orchestrator at the end.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct OrchestratorReport {
    pub router: String,
    pub running: bool,
    pub datacenter: String,
    /// Where its policy came from.
    pub policy: Option<String>,
    pub services: Vec<String>,
    /// Service → the router serving it.
    pub placements: BTreeMap<String, String>,
    pub decisions: Vec<DecisionRecord>,
    pub counters: SiteCounters,
    /// Intents owed to routers it could not reach.
    pub owed: usize,
    /// The routers of its latest neighborhood, itself included.
    pub view: Vec<String>,
}

/// How long a run took on this machine.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Performance {
    /// Wall time inside [`Sim::run_until`], ms (setting up excluded).
    pub wall_ms: f64,
    pub events_per_s: f64,
    /// Routers × simulated seconds / wall seconds.
    pub router_seconds_per_wall_second: f64,
    /// Filled in by the caller, which can read its own process's memory.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory: Option<Memory>,
}

/// The process's memory (`VmRSS` of `/proc/self/status`).
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Memory {
    /// Before the topology was built.
    pub rss_before_bytes: u64,
    /// After the run.
    pub rss_after_bytes: u64,
    /// The growth per simulated router.
    pub bytes_per_router: f64,
}

impl Sim {
    /// The report now.
    pub fn report(&self, detail: Detail) -> Report {
        let net = &self.net;
        let cfg = &self.cfg;
        let p = &cfg.protocol;
        let mut protocol: BTreeMap<String, u64> = BTreeMap::new();
        let (mut entries, mut max_entries, mut stale_entries, mut running) = (0usize, 0usize, 0usize, 0usize);
        let now_ms = self.now_ms();
        for r in &self.routers {
            let Some(inst) = &r.inst else { continue };
            running += 1;
            for (name, v) in inst.counters().values() {
                *protocol.entry(name.to_owned()).or_default() += v;
            }
            for (reason, v) in &inst.counters().rejected {
                *protocol.entry(format!("rejected.{reason}")).or_default() += v;
            }
            let n = inst.view().len();
            entries += n;
            max_entries = max_entries.max(n);
            stale_entries += inst
                .view()
                .iter()
                .filter(|e| e.is_stale(now_ms, p.stale_after_intervals))
                .count();
        }
        let mut coverage = vec![0usize; net.len()];
        for s in &self.sites {
            for name in s.view() {
                if let Some(r) = net.index(name) {
                    coverage[r.get()] += 1;
                }
            }
        }
        let mut orchestrator_coverage = BTreeMap::new();
        for c in coverage {
            *orchestrator_coverage.entry(c).or_default() += 1;
        }
        let orchestrators = self
            .sites
            .iter()
            .map(|s| OrchestratorReport {
                router: net.name_of(s.router()).to_owned(),
                running: self.routers[s.router().get()].inst.is_some(),
                datacenter: s.config().datacenter.clone(),
                policy: s.policy().map(|(_, src)| src.clone()),
                services: s
                    .policy()
                    .map(|(p, _)| p.services.iter().map(|x| x.name.clone()).collect())
                    .unwrap_or_default(),
                placements: s.serving().clone(),
                decisions: s.decisions().to_vec(),
                counters: s.counters(),
                owed: s.owed(),
                view: s.view().to_vec(),
            })
            .collect();
        let per_router = (detail == Detail::Routers).then(|| {
            let mut in_views_of: Vec<Vec<String>> = vec![Vec::new(); net.len()];
            for s in &self.sites {
                for name in s.view() {
                    if let Some(r) = net.index(name) {
                        in_views_of[r.get()].push(net.name_of(s.router()).to_owned());
                    }
                }
            }
            net.routers()
                .map(|ix| {
                    let r = &self.routers[ix.get()];
                    let (view, neighbors, counters) = match &r.inst {
                        Some(inst) => (
                            inst.view()
                                .iter()
                                .map(|e| {
                                    (
                                        e.advert.origin.clone(),
                                        ViewEntry {
                                            hops: e.hops_at(now_ms),
                                            stale: e.is_stale(now_ms, p.stale_after_intervals),
                                        },
                                    )
                                })
                                .collect(),
                            inst.neighbors()
                                .map(|n| (n.id().to_owned(), n.state_name().to_owned()))
                                .collect(),
                            inst.counters()
                                .values()
                                .into_iter()
                                .map(|(k, v)| (k.to_owned(), v))
                                .chain(
                                    inst.counters()
                                        .rejected
                                        .iter()
                                        .map(|(k, v)| (format!("rejected.{k}"), *v)),
                                )
                                .filter(|(_, v)| *v > 0)
                                .collect(),
                        ),
                        None => Default::default(),
                    };
                    let (services, rules, counts) = match &r.controller {
                        Some(c) => (
                            c.instances()
                                .map(|(s, st)| {
                                    let word = match st {
                                        crate::controller::InstanceState::Starting => "starting",
                                        crate::controller::InstanceState::Running => "running",
                                    };
                                    (s.to_string(), word.to_owned())
                                })
                                .collect(),
                            c.rules()
                                .map(|rule| RuleReport {
                                    service: rule.service.to_string(),
                                    serving: rule.serving.to_string(),
                                    vip: rule.vip.to_string(),
                                    writer: rule.writer.map(ToString::to_string).unwrap_or_default(),
                                    written_ms: rule.written_ms,
                                    writers: c.writers(rule.service).iter().map(ToString::to_string).collect(),
                                })
                                .collect(),
                            c.counts(),
                        ),
                        None => Default::default(),
                    };
                    RouterReport {
                        id: net.name_of(ix).to_owned(),
                        role: net.role(ix).as_str().to_owned(),
                        running: r.inst.is_some(),
                        boots: r.boots,
                        view,
                        neighbors,
                        counters,
                        traffic: r.traffic,
                        services,
                        rules,
                        rule_conflicts: counts.conflicts,
                        intents_refused: counts.refused.total(),
                        rules_dropped: counts.rules_dropped,
                        region: r
                            .inst
                            .as_ref()
                            .and_then(|i| i.own())
                            .map(|a| a.region.clone())
                            .unwrap_or_default(),
                        in_views_of: std::mem::take(&mut in_views_of[ix.get()]),
                    }
                })
                .collect()
        });
        let wall_s = self.wall.as_secs_f64();
        let per_s = |v: f64| if wall_s > 0.0 { v / wall_s } else { 0.0 };
        Report {
            result: Outcome {
                topology: net.name().to_owned(),
                routers: net.len(),
                links: net.links().len(),
                seed: cfg.seed,
                sim_time_ms: now_ms,
                settings: Settings {
                    hello_interval_ms: p.hello_interval_ms,
                    dead_interval_ms: p.dead_interval_ms,
                    telemetry_interval_ms: p.telemetry_interval_ms,
                    hop_limit: p.hop_limit,
                    stale_after_intervals: p.stale_after_intervals,
                    default_delay_ms: cfg.default_delay_us as f64 / 1000.0,
                    default_loss_pct: cfg.default_loss_pct,
                    stagger_ms: cfg.stagger_ms,
                    load: cfg.load.to_string(),
                    demand_flows_per_s: cfg.demand_flows_per_s,
                    start_delay_ms: cfg.controller.start_delay_ms,
                    control_delay_ms: cfg.controller.control_delay_ms,
                    regions: cfg.orchestrators.regions.to_string(),
                },
                running,
                totals: self.totals,
                protocol,
                views: ViewSummary {
                    mean_entries: if running > 0 {
                        entries as f64 / running as f64
                    } else {
                        0.0
                    },
                    max_entries,
                    stale_entries,
                },
                orchestrators,
                orchestrator_coverage,
                conflict_check: ConflictSummary::of(&self.conflicts()),
                events: self.script_log.clone(),
                per_router,
            },
            performance: Performance {
                wall_ms: wall_s * 1000.0,
                events_per_s: per_s(self.totals.events as f64),
                router_seconds_per_wall_second: per_s(net.len() as f64 * now_ms as f64 / 1000.0),
                memory: None,
            },
        }
    }
}

/// `1234567` → `1,234,567`.
fn thousands(v: u64) -> String {
    let s = v.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

impl fmt::Display for Report {
    /// A short summary for people.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let r = &self.result;
        let p = &self.performance;
        let t = &r.totals;
        let sim_s = r.sim_time_ms as f64 / 1000.0;
        writeln!(
            f,
            "simulated {} ({} routers, {} links) for {sim_s:.1} s, seed {}",
            r.topology,
            thousands(r.routers as u64),
            thousands(r.links as u64),
            r.seed
        )?;
        writeln!(
            f,
            "wall time {:.2} s: {} router-seconds per wall-second, {} events ({} per second)",
            p.wall_ms / 1000.0,
            thousands(p.router_seconds_per_wall_second.round() as u64),
            thousands(t.events),
            thousands(p.events_per_s.round() as u64)
        )?;
        if let Some(m) = p.memory {
            writeln!(
                f,
                "memory: {:.1} MiB resident after the run, {:.1} KiB per router",
                m.rss_after_bytes as f64 / (1 << 20) as f64,
                m.bytes_per_router / 1024.0
            )?;
        }
        let router_s = (r.routers as f64 * sim_s).max(f64::MIN_POSITIVE);
        writeln!(
            f,
            "routers running: {}; views: {:.1} origins on average, at most {}, {} stale",
            thousands(r.running as u64),
            r.views.mean_entries,
            r.views.max_entries,
            r.views.stale_entries
        )?;
        writeln!(
            f,
            "messages: {} frames, {} bytes ({:.2} frames and {:.0} bytes per router-second); {} lost, {} retransmissions",
            thousands(t.frames_sent),
            thousands(t.bytes_sent),
            t.frames_sent as f64 / router_s,
            t.bytes_sent as f64 / router_s,
            thousands(t.frames_lost),
            thousands(t.retransmissions)
        )?;
        if !r.orchestrators.is_empty() {
            let decisions: usize = r.orchestrators.iter().map(|o| o.decisions.len()).sum();
            let with_policy = r.orchestrators.iter().filter(|o| o.policy.is_some()).count();
            writeln!(
                f,
                "orchestrators: {} ({with_policy} with a policy, regions {}), {decisions} decisions, {} intents delivered; rules written {}, conflicts {}",
                r.orchestrators.len(),
                r.settings.regions,
                thousands(t.intents_delivered),
                thousands(t.rule_writes),
                thousands(t.rule_conflicts)
            )?;
            let refused = &t.intents_refused;
            writeln!(
                f,
                "controllers: {} intents refused ({} foreign rules, {} foreign starts, {} not shared), {} rules dropped on a region change",
                thousands(refused.total()),
                thousands(refused.foreign_rule),
                thousands(refused.foreign_start),
                thousands(refused.not_shared),
                thousands(t.rules_dropped)
            )?;
            let c = &r.conflict_check;
            write!(f, "conflict check: {} findings", thousands(c.findings as u64))?;
            if c.findings > 0 {
                write!(
                    f,
                    " ({} foreign, {} not shared, {} two writers, {} untruthful); the first: {}",
                    c.foreign, c.not_shared, c.two_writers, c.untruthful, c.first[0]
                )?;
            }
            writeln!(f)?;
        }
        if !r.events.is_empty() {
            let applied = r.events.iter().filter(|e| e.outcome == "applied").count();
            writeln!(f, "events: {} played, {applied} applied", r.events.len())?;
            for e in r.events.iter().filter(|e| e.outcome != "applied") {
                writeln!(f, "  line {} ({}): {}", e.line, e.event, e.outcome)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thousands_are_grouped() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(1_234_567), "1,234,567");
    }
}
