//! Whether several orchestrators share a network without conflict: a pure check over what the
//! routers' controllers hold, for tests and the simulator.
//!
//! Given each router's region, the VIP rules its controller holds with their writers, and where
//! each orchestrator says its services are served, [`check`] lists every [`Conflict`]:
//!
//! - a rule on a router of a region written by any other orchestrator ([`Conflict::Foreign`]);
//! - on a router of no region (the data centre), a rule that sends the VIP anywhere but to the
//!   router's own instance ([`Conflict::NotShared`]);
//! - two writers of a rule for one router and service, unless the router is in no region and
//!   every rule sends the VIP to itself ([`Conflict::TwoWriters`]);
//! - a router of an orchestrator's region whose rule does not lead where the orchestrator says
//!   the service is served, or that holds none ([`Conflict::Untruthful`]): its decision log would
//!   not be true. Hosts are left out: they choose a region like any router, but an orchestrator
//!   tells them no routes (they are endpoints, behind a router that has the route).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// A VIP rule a router's controller holds.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct HeldRule {
    pub service: String,
    /// The orchestrator that wrote it (`None`: not known, e.g. persisted before writers were).
    pub writer: Option<String>,
    /// Where it sends the VIP.
    pub serving: String,
}

/// What [`check`] reads.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Network {
    /// Each router's region (the orchestrator's router id); a router missing or `None` is in no
    /// region.
    pub regions: BTreeMap<String, Option<String>>,
    /// The rules each router holds.
    pub rules: BTreeMap<String, Vec<HeldRule>>,
    /// Orchestrator → service → the router serving it, for the services it routes by VIP.
    pub serving: BTreeMap<String, BTreeMap<String, String>>,
    /// The routers that are hosts (role `host`): told no routes, so never untruthful.
    pub hosts: BTreeSet<String>,
}

/// One way the network is not shared cleanly.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Conflict {
    /// `router` is in `region`'s region, but holds a rule for `service` by another writer.
    Foreign {
        router: String,
        service: String,
        writer: Option<String>,
        region: String,
    },
    /// `router` is in no region, but holds a rule sending `service` to another router.
    NotShared {
        router: String,
        service: String,
        writer: Option<String>,
        serving: String,
    },
    /// `router` holds rules for `service` by several writers.
    TwoWriters {
        router: String,
        service: String,
        writers: Vec<Option<String>>,
    },
    /// `orchestrator` says `service` is served at `serving`, but `router` of its region routes it
    /// to `routes` (`None`: holds no rule of it).
    Untruthful {
        orchestrator: String,
        service: String,
        serving: String,
        router: String,
        routes: Option<String>,
    },
}

fn who(w: &Option<String>) -> &str {
    w.as_deref().unwrap_or("an unknown writer")
}

impl fmt::Display for Conflict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Conflict::Foreign {
                router,
                service,
                writer,
                region,
            } => write!(
                f,
                "{router} is in {region}'s region, but holds {}'s rule for {service}",
                who(writer)
            ),
            Conflict::NotShared {
                router,
                service,
                writer,
                serving,
            } => write!(
                f,
                "{router} is in no region, but holds {}'s rule sending {service} to {serving}",
                who(writer)
            ),
            Conflict::TwoWriters {
                router,
                service,
                writers,
            } => {
                let names: Vec<&str> = writers.iter().map(who).collect();
                write!(f, "{router} holds rules for {service} by {}", names.join(", "))
            }
            Conflict::Untruthful {
                orchestrator,
                service,
                serving,
                router,
                routes,
            } => match routes {
                Some(r) => write!(
                    f,
                    "{orchestrator} serves {service} at {serving}, but {router} of its region routes it to {r}"
                ),
                None => write!(
                    f,
                    "{orchestrator} serves {service} at {serving}, but {router} of its region holds no rule for it"
                ),
            },
        }
    }
}

/// Every conflict of `n`, sorted.
pub fn check(n: &Network) -> Vec<Conflict> {
    let mut out = Vec::new();
    let region_of = |r: &str| n.regions.get(r).cloned().flatten();
    for (router, rules) in &n.rules {
        let region = region_of(router);
        let mut by_service: BTreeMap<&str, Vec<&HeldRule>> = BTreeMap::new();
        for rule in rules {
            by_service.entry(&rule.service).or_default().push(rule);
            match &region {
                Some(o) if rule.writer.as_ref() != Some(o) => out.push(Conflict::Foreign {
                    router: router.clone(),
                    service: rule.service.clone(),
                    writer: rule.writer.clone(),
                    region: o.clone(),
                }),
                None if rule.serving != *router => out.push(Conflict::NotShared {
                    router: router.clone(),
                    service: rule.service.clone(),
                    writer: rule.writer.clone(),
                    serving: rule.serving.clone(),
                }),
                _ => {}
            }
        }
        for (service, held) in by_service {
            let writers: BTreeSet<&Option<String>> = held.iter().map(|r| &r.writer).collect();
            let shared = region.is_none() && held.iter().all(|r| r.serving == *router);
            if writers.len() > 1 && !shared {
                out.push(Conflict::TwoWriters {
                    router: router.clone(),
                    service: service.to_string(),
                    writers: writers.into_iter().cloned().collect(),
                });
            }
        }
    }
    for (orchestrator, services) in &n.serving {
        let members = n
            .regions
            .iter()
            .filter(|(r, o)| o.as_ref() == Some(orchestrator) && !n.hosts.contains(*r))
            .map(|(r, _)| r);
        for router in members {
            let held = n.rules.get(router).map(Vec::as_slice).unwrap_or_default();
            for (service, serving) in services {
                let routes = held
                    .iter()
                    .find(|r| r.service == *service && r.writer.as_ref() == Some(orchestrator))
                    .map(|r| r.serving.clone());
                if routes.as_ref() != Some(serving) {
                    out.push(Conflict::Untruthful {
                        orchestrator: orchestrator.clone(),
                        service: service.clone(),
                        serving: serving.clone(),
                        router: router.clone(),
                        routes,
                    });
                }
            }
        }
    }
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(service: &str, writer: Option<&str>, serving: &str) -> HeldRule {
        HeldRule {
            service: service.into(),
            writer: writer.map(str::to_string),
            serving: serving.into(),
        }
    }

    /// foga's region: edge1, foga, edge2; fogb's: fogb, edge3; dc in none. pabx served at foga
    /// and at fogb, each region's routers routing it there, the dc to itself for both.
    fn clean() -> Network {
        let mut n = Network::default();
        for (r, o) in [
            ("edge1", "foga"),
            ("foga", "foga"),
            ("edge2", "foga"),
            ("fogb", "fogb"),
            ("edge3", "fogb"),
        ] {
            n.regions.insert(r.into(), Some(o.into()));
            n.rules.insert(r.into(), vec![rule("pabx", Some(o), o)]);
        }
        n.regions.insert("dc".into(), None);
        n.rules.insert(
            "dc".into(),
            vec![rule("pabx", Some("foga"), "dc"), rule("pabx", Some("fogb"), "dc")],
        );
        for o in ["foga", "fogb"] {
            n.serving.insert(o.into(), [("pabx".to_string(), o.to_string())].into());
        }
        n
    }

    fn lines(n: &Network) -> Vec<String> {
        check(n).iter().map(ToString::to_string).collect()
    }

    #[test]
    fn two_regions_and_a_shared_dc_are_clean() {
        assert_eq!(lines(&clean()), Vec::<String>::new());
    }

    #[test]
    fn last_writer_wins_is_caught() {
        // The issue: fogb's intent overwrote foga's own route at edge2.
        let mut n = clean();
        n.rules.insert("edge2".into(), vec![rule("pabx", Some("fogb"), "fogb")]);
        assert_eq!(
            lines(&n),
            vec![
                "edge2 is in foga's region, but holds fogb's rule for pabx",
                "foga serves pabx at foga, but edge2 of its region holds no rule for it",
            ]
        );
        n.rules
            .get_mut("edge2")
            .unwrap()
            .push(rule("pabx", Some("foga"), "foga"));
        assert_eq!(
            lines(&n),
            vec![
                "edge2 is in foga's region, but holds fogb's rule for pabx",
                "edge2 holds rules for pabx by foga, fogb",
            ]
        );
    }

    #[test]
    fn a_host_of_a_region_needs_no_rule() {
        // actor1 is a host behind edge1: in foga's region, told no routes.
        let mut n = clean();
        n.regions.insert("actor1".into(), Some("foga".into()));
        assert_eq!(
            lines(&n),
            vec!["foga serves pabx at foga, but actor1 of its region holds no rule for it"]
        );
        n.hosts.insert("actor1".into());
        assert_eq!(lines(&n), Vec::<String>::new());
        // A rule it holds is still checked.
        n.rules
            .insert("actor1".into(), vec![rule("pabx", Some("fogb"), "fogb")]);
        assert_eq!(
            lines(&n),
            vec!["actor1 is in foga's region, but holds fogb's rule for pabx"]
        );
    }

    #[test]
    fn the_dc_may_only_serve_itself_and_a_log_must_match_the_routes() {
        let mut n = clean();
        n.rules.get_mut("dc").unwrap()[1].serving = "fogb".into();
        n.rules.insert("edge1".into(), vec![rule("pabx", Some("foga"), "dc")]);
        n.rules.insert("edge3".into(), vec![rule("pabx", None, "fogb")]);
        assert_eq!(
            lines(&n),
            vec![
                "edge3 is in fogb's region, but holds an unknown writer's rule for pabx",
                "dc is in no region, but holds fogb's rule sending pabx to fogb",
                "dc holds rules for pabx by foga, fogb",
                "foga serves pabx at foga, but edge1 of its region routes it to dc",
                "fogb serves pabx at fogb, but edge3 of its region holds no rule for it",
            ]
        );
    }
}
