//! Whether the orchestrators share the network cleanly now: the daemon's own check,
//! [`wuos_orchestrator::conflict::check`], over what the simulated network holds.
//!
//! It reads, of the running routers, the region each advertises (its latest advert; "" is none)
//! and the rules its controller holds, with their writers; of the running orchestrators with a
//! policy, where each serves the services it routes by VIP (`Orchestrator::placements`); which
//! routers are hosts (told no routes). Routers that are down are left out. Without regions no router names one, so every router is taken
//! for a router of no region: the check then lists every rule that leads elsewhere than its
//! router (`NotShared`).

use std::collections::BTreeMap;

use serde::Serialize;
use wuos_orchestrator::conflict::{self, Conflict, HeldRule, Network};

use crate::sim::Sim;

/// How many findings a report quotes.
pub const QUOTED: usize = 20;

/// What the check found.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ConflictSummary {
    pub findings: usize,
    /// A rule on a router of a region written by another orchestrator.
    pub foreign: usize,
    /// On a router of no region, a rule leading elsewhere.
    pub not_shared: usize,
    /// Rules of one service by several writers on one router.
    pub two_writers: usize,
    /// A router of a region whose rule does not lead where its orchestrator says the service is
    /// served.
    pub untruthful: usize,
    /// The first findings (at most [`QUOTED`]), in words, sorted.
    pub first: Vec<String>,
}

impl ConflictSummary {
    /// The summary of `conflicts`.
    pub fn of(conflicts: &[Conflict]) -> Self {
        let mut s = ConflictSummary {
            findings: conflicts.len(),
            first: conflicts.iter().take(QUOTED).map(ToString::to_string).collect(),
            ..Default::default()
        };
        for c in conflicts {
            match c {
                Conflict::Foreign { .. } => s.foreign += 1,
                Conflict::NotShared { .. } => s.not_shared += 1,
                Conflict::TwoWriters { .. } => s.two_writers += 1,
                Conflict::Untruthful { .. } => s.untruthful += 1,
            }
        }
        s
    }
}

impl Sim {
    /// What the conflict check reads, now.
    pub fn conflict_network(&self) -> Network {
        let mut n = Network::default();
        for r in self.net.routers() {
            let rt = &self.routers[r.get()];
            let Some(inst) = &rt.inst else { continue };
            let name = self.net.name_of(r).to_owned();
            let region = inst.own().map(|a| a.region.clone()).filter(|x| !x.is_empty());
            if let Some(c) = &rt.controller {
                let held: Vec<HeldRule> = c
                    .rules()
                    .map(|rule| HeldRule {
                        service: rule.service.to_string(),
                        writer: rule.writer.map(ToString::to_string),
                        serving: rule.serving.to_string(),
                    })
                    .collect();
                if !held.is_empty() {
                    n.rules.insert(name.clone(), held);
                }
            }
            if self.net.role(r) == wuos_model::Role::Host {
                n.hosts.insert(name.clone());
            }
            n.regions.insert(name, region);
        }
        for s in &self.sites {
            if self.routers[s.router().get()].inst.is_none() {
                continue;
            }
            let Some(o) = s.orchestrator() else { continue };
            let routed: BTreeMap<String, String> = o
                .placements()
                .into_iter()
                .filter(|p| p.vip.is_some())
                .map(|p| (p.service, p.serving))
                .collect();
            n.serving.insert(self.net.name_of(s.router()).to_owned(), routed);
        }
        n
    }

    /// Every conflict the check finds now, sorted.
    pub fn conflicts(&self) -> Vec<Conflict> {
        conflict::check(&self.conflict_network())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_summary_counts_by_kind_and_quotes_the_first() {
        let foreign = Conflict::Foreign {
            router: "edge2".into(),
            service: "pabx".into(),
            writer: Some("fogb".into()),
            region: "foga".into(),
        };
        let untruthful = Conflict::Untruthful {
            orchestrator: "foga".into(),
            service: "pabx".into(),
            serving: "foga".into(),
            router: "edge2".into(),
            routes: None,
        };
        let s = ConflictSummary::of(&[foreign, untruthful]);
        assert_eq!(
            (s.findings, s.foreign, s.not_shared, s.two_writers, s.untruthful),
            (2, 1, 0, 0, 1)
        );
        assert_eq!(
            s.first,
            [
                "edge2 is in foga's region, but holds fogb's rule for pabx",
                "foga serves pabx at foga, but edge2 of its region holds no rule for it"
            ]
        );
    }
}
