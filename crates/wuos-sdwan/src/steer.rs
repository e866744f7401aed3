//! Steering classes by their SLA. A class with [`Steering`] has candidate paths (an overlay's
//! tunnel on one underlay), each with its own routing table and mark on every edge; which
//! candidates a packet may take is the decision ([`crate::sla::decide`]) per remote site, written
//! as an nftables table of its own (`ip wuos_steer`, [`nft_script`]) after the classifying one:
//!
//! ```text
//!  LAN ─► classify: mark = class (0x57000ccc) ─► steer: dst in site S's LANs
//!         ─► mark = class | (candidate+1) << 16 ─► ip rule fwmark ─► the candidate's table
//!         ─► VXLAN wo<overlay>-<underlay> ─► underlay
//! ```
//!
//! | what | value |
//! |---|---|
//! | candidate `i`'s mark | `class mark | (i + 1) << 16` (at most 15 candidates) |
//! | candidate `i`'s table | `100000 + class id × 16 + i` |
//! | its rule | priority `10000 + class id`, `fwmark` the mark |
//!
//! Without a steering table (no edge daemon has decided yet) the class's own rule still sends
//! its packets to its overlay's table. Flows: with `balance`, new flows are hashed (`jhash` of
//! addresses, protocol and ports) over the chosen paths and a flow stays on its path while that
//! path is chosen (`ct mark`); with `sticky`, a flow stays on its path while the path is up, and
//! only new flows follow a decision; otherwise every packet follows the decision at once.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};
use wuos_model::topology::Ipv4Net;

use crate::class::TrafficClass;
use crate::error::SdwanError;
use crate::sla::{PathId, Sla};

/// Candidate tables start here …
pub const TABLE_BASE: u32 = 100_000;
/// … and every candidate table of every class is in this range.
pub const TABLES: std::ops::RangeInclusive<u32> =
    TABLE_BASE..=TABLE_BASE + crate::desired::MAX_CLASSES as u32 * 16 + MAX_CANDIDATES as u32;
/// Candidates per class.
pub const MAX_CANDIDATES: usize = 15;
/// The nftables table the decisions are written to (`ip wuos_steer`).
pub const NFT_TABLE: &str = "wuos_steer";

/// How a class follows its SLA.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Steering {
    pub sla: Sla,
    /// Candidate paths in order of preference: `OVERLAY` (each underlay it may use, in its
    /// order) or `OVERLAY/UNDERLAY`. Empty: the class's overlay.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub prefer: Vec<String>,
    /// Spread flows over every compliant path (a flow stays on its path while it complies).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub balance: bool,
    /// Keep a flow on its path while the path is up; only new flows follow a decision.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub sticky: bool,
}

pub fn mark(class: &TrafficClass, candidate: usize) -> u32 {
    class.mark() | ((candidate as u32 + 1) << 16)
}

pub fn table(class: &TrafficClass, candidate: usize) -> u32 {
    TABLE_BASE + u32::from(class.id) * 16 + candidate as u32
}

/// A candidate path on one edge: the tunnel, and per remote site the peer that carries the
/// class there (the site itself, or the hub).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Candidate {
    pub path: PathId,
    pub tunnel: String,
    pub mark: u32,
    pub table: u32,
    /// Remote site → the peer's inner address on this tunnel (what the probes go to).
    pub via: BTreeMap<String, Ipv4Addr>,
    /// Remote site → the peer's WAN address on the underlay (the tunnel's outer destination):
    /// tunnels of several overlays with the same underlay and outer destination cross the same
    /// underlay path.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub outer: BTreeMap<String, Ipv4Addr>,
}

/// What one edge needs to steer one class: its SLA, its candidates and the remote sites' LANs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClassPlan {
    pub class: String,
    /// The class's own mark (set by the classifying table).
    pub mark: u32,
    pub steering: Steering,
    pub candidates: Vec<Candidate>,
    /// Remote site → its LAN prefixes (where the class's packets to it are headed).
    #[serde(with = "site_lans")]
    pub sites: BTreeMap<String, Vec<Ipv4Net>>,
}

impl ClassPlan {
    /// The candidates that reach `site`, in preference order, with their index.
    pub fn towards<'a>(&'a self, site: &'a str) -> impl Iterator<Item = (usize, &'a Candidate)> + 'a {
        self.candidates
            .iter()
            .enumerate()
            .filter(move |(_, c)| c.via.contains_key(site))
    }
}

/// Checks a class's steering against the overlays it names; the candidate paths when it is good.
pub fn candidates(
    class: &TrafficClass,
    steering: &Steering,
    overlay_underlays: impl Fn(&str) -> Result<Vec<String>, SdwanError>,
) -> Result<Vec<PathId>, SdwanError> {
    let bad = |why: String| SdwanError::BadValue {
        field: "steering",
        value: class.name.clone(),
        why,
    };
    steering.sla.check().map_err(&bad)?;
    if steering.balance && steering.sticky {
        return Err(bad(
            "balance already keeps each flow on its path while it complies; sticky is for one path at a time".into(),
        ));
    }
    let prefer = if steering.prefer.is_empty() {
        vec![class.overlay.clone()]
    } else {
        steering.prefer.clone()
    };
    let mut out: Vec<PathId> = Vec::new();
    for p in &prefer {
        let (overlay, only) = match p.split_once('/') {
            Some((o, u)) => (o, Some(u)),
            None => (p.as_str(), None),
        };
        let underlays = overlay_underlays(overlay)?;
        let chosen: Vec<String> = match only {
            Some(u) if underlays.iter().any(|x| x == u) => vec![u.to_string()],
            Some(u) => {
                return Err(bad(format!(
                    "prefer {p:?}: overlay {overlay:?} does not use underlay {u:?} (it uses: {})",
                    underlays.join(", ")
                )));
            }
            None => underlays,
        };
        for u in chosen {
            let id = PathId {
                overlay: overlay.to_string(),
                underlay: u,
            };
            if out.contains(&id) {
                return Err(bad(format!("prefer names path {id} twice")));
            }
            out.push(id);
        }
    }
    if out.len() > MAX_CANDIDATES {
        return Err(bad(format!("{} candidate paths; at most {MAX_CANDIDATES}", out.len())));
    }
    Ok(out)
}

/// The candidates a flow of a class towards one site may take, as the decision left them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Choice {
    /// Candidate indices new packets (or new flows) go to.
    pub chosen: Vec<usize>,
    /// Candidate indices whose flows stay where they are (balance: the chosen ones; sticky: the
    /// ones that are up).
    pub keep: Vec<usize>,
}

/// The steering table for these plans and choices (plan's class → site → choice), one `nft -f`
/// transaction; empty when nothing is steered.
pub fn nft_script(plans: &[ClassPlan], choices: &BTreeMap<String, BTreeMap<String, Choice>>) -> String {
    let mut body = String::new();
    for plan in plans {
        let Some(sites) = choices.get(&plan.class) else {
            continue;
        };
        for (site, choice) in sites {
            let (Some(lans), false) = (plan.sites.get(site), choice.chosen.is_empty()) else {
                continue;
            };
            let marks = |is: &[usize]| -> Vec<String> {
                is.iter()
                    .filter_map(|&i| plan.candidates.get(i))
                    .map(|c| format!("{:#x}", c.mark))
                    .collect()
            };
            let dst = format!(
                "meta mark {:#x} ip daddr {{ {} }}",
                plan.mark,
                lans.iter().map(|l| l.to_string()).collect::<Vec<_>>().join(", ")
            );
            let chosen = marks(&choice.chosen);
            let names: Vec<String> = choice
                .chosen
                .iter()
                .filter_map(|&i| plan.candidates.get(i))
                .map(|c| c.path.to_string())
                .collect();
            let comment = format!("comment \"{} to {site}: {}\"", plan.class, names.join(" + "));
            let keep = marks(&choice.keep);
            let pinned = plan.steering.balance || plan.steering.sticky;
            if pinned && !keep.is_empty() {
                let _ = writeln!(
                    body,
                    "    {dst} ct mark {{ {} }} meta mark set ct mark accept",
                    keep.join(", ")
                );
            }
            let set = if chosen.len() == 1 {
                chosen[0].clone()
            } else {
                let map: Vec<String> = chosen.iter().enumerate().map(|(i, m)| format!("{i} : {m}")).collect();
                format!(
                    "jhash ip saddr . ip daddr . meta l4proto . th sport . th dport mod {} map {{ {} }}",
                    chosen.len(),
                    map.join(", ")
                )
            };
            let save = if pinned { " ct mark set meta mark" } else { "" };
            let _ = writeln!(body, "    {dst} meta mark set {set}{save} {comment}");
        }
    }
    if body.is_empty() {
        return String::new();
    }
    format!(
        "table ip {NFT_TABLE}\ndelete table ip {NFT_TABLE}\ntable ip {NFT_TABLE} {{\n  chain steer {{\n    type filter hook prerouting priority mangle + 1; policy accept;\n{body}  }}\n}}\n"
    )
}

/// The script that removes the steering table (when no class is steered any more).
pub fn nft_remove() -> String {
    format!("table ip {NFT_TABLE}\ndelete table ip {NFT_TABLE}\n")
}

mod site_lans {
    use std::collections::BTreeMap;

    use serde::{Deserialize, Deserializer, Serialize, Serializer};
    use wuos_model::topology::Ipv4Net;

    pub fn serialize<S: Serializer>(m: &BTreeMap<String, Vec<Ipv4Net>>, s: S) -> Result<S::Ok, S::Error> {
        let text: BTreeMap<&String, Vec<String>> = m
            .iter()
            .map(|(k, v)| (k, v.iter().map(|n| n.to_string()).collect()))
            .collect();
        text.serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<String, Vec<Ipv4Net>>, D::Error> {
        let text = BTreeMap::<String, Vec<String>>::deserialize(d)?;
        text.into_iter()
            .map(|(k, v)| {
                let nets = v
                    .iter()
                    .map(|n| n.parse().map_err(|e| serde::de::Error::custom(format!("{n}: {e}"))))
                    .collect::<Result<Vec<Ipv4Net>, D::Error>>()?;
                Ok((k, nets))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use wuos_model::generate::{Generator, generate};
    use wuos_model::plan::address_plan;

    use super::*;
    use crate::desired::{Action, Desired};
    use crate::edge::{EdgeConfig, Selector};
    use crate::inventory::Inventory;
    use crate::slice;

    fn setup(actions: &str) -> (Desired, Inventory, Result<(), SdwanError>) {
        let t = generate(&"sdwan:3:2".parse::<Generator>().unwrap(), 1);
        let inv = Inventory::from_topology(&t, &address_plan(&t).unwrap()).unwrap();
        let mut d = Desired::default();
        let mut last = Ok(());
        for a in serde_json::from_str::<Vec<Action>>(actions).unwrap() {
            last = d.apply(a, &inv);
        }
        (d, inv, last)
    }

    const VOIP: &str = r#"[
        {"action":"create_overlay","name":"wan","sites":{"e1":{},"e2":{},"e3":{}},"underlays":["mpls","inet"]},
        {"action":"create_class","name":"voip","overlay":"wan","rules":[{"proto":"udp","dst_ports":5060}],
         "steering":{"sla":{"max_latency_ms":40,"max_loss_pct":1,"max_jitter_ms":10}}}
    ]"#;

    #[test]
    fn a_steered_class_gets_a_table_and_mark_per_candidate_and_a_plan() {
        let (d, inv, last) = setup(VOIP);
        last.unwrap();
        let c = &d.classes["voip"];
        let e1 = EdgeConfig::realise(&d, &inv, "e1");
        let plan = &e1.steer[0];
        assert_eq!(plan.class, "voip");
        let paths: Vec<String> = plan.candidates.iter().map(|c| c.path.to_string()).collect();
        assert_eq!(paths, ["wan/mpls", "wan/inet"]);
        assert_eq!(plan.sites.keys().collect::<Vec<_>>(), ["e2", "e3"]);
        for (i, cand) in plan.candidates.iter().enumerate() {
            assert_eq!(cand.mark, c.mark() | ((i as u32 + 1) << 16));
            assert_eq!(cand.table, 100_000 + u32::from(c.id) * 16 + i as u32);
            assert!(
                e1.rules
                    .iter()
                    .any(|r| r.selector == Selector::Fwmark(cand.mark) && r.table == cand.table)
            );
            // A route to each remote site's LANs via that site's inner address on the tunnel.
            for (site, lans) in &plan.sites {
                let via = cand.via[site];
                for l in lans {
                    assert!(
                        e1.routes.iter().any(|r| r.table == cand.table
                            && r.dst == (l.addr, l.prefix_len)
                            && r.via == via
                            && r.dev == cand.tunnel),
                        "{} has no route to {l} of {site}",
                        cand.path
                    );
                }
            }
        }
        // The class's own rule still leads to its overlay's table.
        assert!(e1.rules.iter().any(|r| r.selector == Selector::Fwmark(c.mark())));
        // In pieces, everything of the steering is the class's.
        let pieces = slice::split(&e1, &d);
        let class = &pieces["class/voip"];
        assert_eq!(class.steer.len(), 1);
        assert!(class.routes.iter().all(|r| TABLES.contains(&r.table)));
        assert_eq!(class.routes.len(), 4, "2 candidates × 2 remote sites");
        assert!(pieces["overlay/wan"].routes.iter().all(|r| !TABLES.contains(&r.table)));
        assert_eq!(
            slice::merge(pieces.values()),
            EdgeConfig {
                unreachable: vec![],
                ..e1
            }
        );
    }

    #[test]
    fn the_example_file_applies_on_sdwan_3_2() {
        let (d, inv, last) = setup(include_str!("../../../examples/sdwan-steered.json"));
        last.unwrap();
        assert_eq!(d.classes.len(), 2);
        let e1 = EdgeConfig::realise(&d, &inv, "e1");
        let bulk = e1.steer.iter().find(|p| p.class == "bulk").unwrap();
        assert!(bulk.steering.balance);
        assert_eq!(bulk.candidates[0].path.to_string(), "wan/inet");
    }

    #[test]
    fn steering_is_checked() {
        let refuse = |steering: &str, want: &str| {
            let actions = format!(
                r#"[{{"action":"create_overlay","name":"wan","sites":{{"e1":{{}},"e2":{{}}}},"underlays":["mpls"]}},
                   {{"action":"create_overlay","name":"net","sites":{{"e1":{{}},"e2":{{}}}}}},
                   {{"action":"create_class","name":"voip","overlay":"wan","steering":{steering}}}]"#
            );
            let (d, _, last) = setup(&actions);
            let e = last.unwrap_err().to_string();
            assert!(e.contains(want), "{steering}: {e}");
            assert!(d.classes.is_empty(), "a refused class was kept");
        };
        refuse(r#"{"sla":{}}"#, "at least one of");
        refuse(r#"{"sla":{"max_latency_ms":-3}}"#, "max_latency_ms -3");
        refuse(
            r#"{"sla":{"max_loss_pct":1},"prefer":["wan/inet"]}"#,
            "does not use underlay \"inet\"",
        );
        refuse(r#"{"sla":{"max_loss_pct":1},"prefer":["nope"]}"#, "nope");
        refuse(r#"{"sla":{"max_loss_pct":1},"prefer":["net","net/mpls"]}"#, "twice");
        refuse(r#"{"sla":{"max_loss_pct":1},"balance":true,"sticky":true}"#, "sticky");
        // An overlay a class prefers cannot be deleted under it.
        let (mut d, inv, last) = setup(
            r#"[{"action":"create_overlay","name":"wan","sites":{"e1":{},"e2":{}},"underlays":["mpls"]},
                {"action":"create_overlay","name":"net","sites":{"e1":{},"e2":{}}},
                {"action":"create_class","name":"voip","overlay":"wan","steering":{"sla":{"max_loss_pct":1},"prefer":["wan","net/inet"]}}]"#,
        );
        last.unwrap();
        let e = d.apply(Action::DeleteOverlay { name: "net".into() }, &inv).unwrap_err();
        assert!(e.to_string().contains("voip"), "{e}");
    }

    fn plan() -> ClassPlan {
        let (d, inv, last) = setup(VOIP);
        last.unwrap();
        EdgeConfig::realise(&d, &inv, "e1").steer.remove(0)
    }

    fn choice(chosen: &[usize], keep: &[usize]) -> Choice {
        Choice {
            chosen: chosen.to_vec(),
            keep: keep.to_vec(),
        }
    }

    #[test]
    fn the_nft_script_follows_the_choices() {
        let p = plan();
        let m = |i: usize| format!("{:#x}", p.candidates[i].mark);
        let lans_e2 = p.sites["e2"]
            .iter()
            .map(|l| l.to_string())
            .collect::<Vec<_>>()
            .join(", ");
        let choices = BTreeMap::from([(
            "voip".to_string(),
            BTreeMap::from([
                ("e2".to_string(), choice(&[1], &[])),
                ("e3".to_string(), choice(&[0], &[])),
            ]),
        )]);
        let s = nft_script(std::slice::from_ref(&p), &choices);
        assert!(
            s.starts_with("table ip wuos_steer\ndelete table ip wuos_steer\n"),
            "{s}"
        );
        assert!(s.contains("priority mangle + 1"));
        assert!(
            s.contains(&format!(
                "meta mark {:#x} ip daddr {{ {lans_e2} }} meta mark set {} comment \"voip to e2: wan/inet\"",
                p.mark,
                m(1)
            )),
            "{s}"
        );
        assert!(!s.contains("ct mark"), "one path, not pinned: no conntrack\n{s}");
        // Balanced over both: pinned flows first, then a hash over the two.
        let mut bal = p.clone();
        bal.steering.balance = true;
        let choices = BTreeMap::from([(
            "voip".to_string(),
            BTreeMap::from([("e2".to_string(), choice(&[0, 1], &[0, 1]))]),
        )]);
        let s = nft_script(std::slice::from_ref(&bal), &choices);
        let keep = s.find("ct mark { ").expect("a keep rule");
        let hash = s.find("jhash").expect("a hash rule");
        assert!(keep < hash, "{s}");
        assert!(
            s.contains(&format!(
                "mod 2 map {{ 0 : {}, 1 : {} }} ct mark set meta mark",
                m(0),
                m(1)
            )),
            "{s}"
        );
        assert_eq!(nft_script(std::slice::from_ref(&p), &BTreeMap::new()), "");
    }
}
