//! An edge's configuration in pieces: one per overlay (`overlay/NAME`: its tunnels, the routes
//! in its table and the `iif` rules to its table) and one per class (`class/NAME`: its marks
//! and its `fwmark` rule). The
//! controller sends each edge one intent per piece, so a change re-sends only the pieces it
//! touched, and 1,000 overlays travel as 1,000 small intents rather than one message of
//! hundreds of kilobytes; the edge [`merge`]s the pieces it holds back into one [`EdgeConfig`].

use std::collections::BTreeMap;

use crate::desired::Desired;
use crate::edge::{EdgeConfig, Mark, Selector, table};
use crate::steer;

/// Piece key → piece.
pub type Slices = BTreeMap<String, EdgeConfig>;

/// The key of an overlay's piece.
pub fn overlay_key(name: &str) -> String {
    format!("overlay/{name}")
}

/// The key of a class's piece.
pub fn class_key(name: &str) -> String {
    format!("class/{name}")
}

/// Whether `key` names a piece (`overlay/NAME` or `class/NAME` with a valid name).
pub fn key_ok(key: &str) -> bool {
    match key.split_once('/') {
        Some(("overlay" | "class", name)) => crate::desired::name_ok("piece", name).is_ok(),
        _ => false,
    }
}

/// `config` (what [`EdgeConfig::realise`] gave for `desired`) cut into pieces; a piece is never
/// empty. The list of unreachable prefixes is the controller's to report and stays out.
pub fn split(config: &EdgeConfig, desired: &Desired) -> Slices {
    let by_table: BTreeMap<u32, &str> = desired.overlays.values().map(|o| (table(o), o.name.as_str())).collect();
    let mut out = Slices::new();
    for t in config.tunnels.values() {
        out.entry(overlay_key(&t.overlay))
            .or_default()
            .tunnels
            .insert(t.name.clone(), t.clone());
    }
    // A steered class's candidates: their tables and rules are the class's.
    let mut steered_tables: BTreeMap<u32, &str> = BTreeMap::new();
    let mut by_mark: BTreeMap<u32, &str> = desired.classes.values().map(|c| (c.mark(), c.name.as_str())).collect();
    for c in desired.classes.values().filter(|c| c.steering.is_some()) {
        for i in 0..steer::MAX_CANDIDATES {
            steered_tables.insert(steer::table(c, i), c.name.as_str());
            by_mark.insert(steer::mark(c, i), c.name.as_str());
        }
    }
    for r in &config.routes {
        if let Some(name) = by_table.get(&r.table) {
            out.entry(overlay_key(name)).or_default().routes.insert(r.clone());
        } else if let Some(class) = steered_tables.get(&r.table) {
            out.entry(class_key(class)).or_default().routes.insert(r.clone());
        }
    }
    for r in &config.rules {
        // A class's fwmark rule is the class's: re-pointing a class does not touch the overlays.
        let key = match &r.selector {
            Selector::Fwmark(m) => by_mark.get(m).map(|c| class_key(c)),
            Selector::Iif(_) => by_table.get(&r.table).map(|o| overlay_key(o)),
            // The shortcuts are the edge's own, not a piece's.
            Selector::NotFwmark { .. } | Selector::All => None,
        };
        if let Some(key) = key {
            out.entry(key).or_default().rules.insert(r.clone());
        }
    }
    for m in &config.marks {
        out.entry(class_key(&m.class)).or_default().marks.push(m.clone());
    }
    for p in &config.steer {
        out.entry(class_key(&p.class)).or_default().steer.push(p.clone());
    }
    out
}

/// The configuration the pieces make together.
pub fn merge<'a>(pieces: impl IntoIterator<Item = &'a EdgeConfig>) -> EdgeConfig {
    merge_owned(pieces.into_iter().cloned())
}

/// [`merge`] of pieces given by value, one at a time (each dropped once merged).
pub fn merge_owned(pieces: impl IntoIterator<Item = EdgeConfig>) -> EdgeConfig {
    let mut out = EdgeConfig::default();
    for p in pieces {
        out.tunnels.extend(p.tunnels);
        out.routes.extend(p.routes);
        out.rules.extend(p.rules);
        out.marks.extend(p.marks);
        out.steer.extend(p.steer);
    }
    // The marks in realise's order: by class name, then as listed in the class.
    out.marks.sort_by(|a, b| a.class.cmp(&b.class));
    out.steer.sort_by(|a, b| a.class.cmp(&b.class));
    out
}

/// The nftables script of the pieces' union: `merge(pieces).nft_script()` without the merge.
pub fn nft_script(pieces: &Slices) -> String {
    let marks: Vec<Mark> = pieces.values().flat_map(|p| p.marks.iter().cloned()).collect();
    crate::edge::nft_script(&marks, pieces.values().any(|p| !p.tunnels.is_empty()))
}

/// The pieces that differ between `old` and `new`: the changed or new ones (`Some`), the
/// removed ones (`None`).
pub fn changed(old: &Slices, new: &Slices) -> BTreeMap<String, Option<EdgeConfig>> {
    let mut out = BTreeMap::new();
    for (k, v) in new {
        if old.get(k) != Some(v) {
            out.insert(k.clone(), Some(v.clone()));
        }
    }
    for k in old.keys().filter(|k| !new.contains_key(*k)) {
        out.insert(k.clone(), None);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Inventory;
    use crate::desired::Action;
    use wuos_model::generate::{Generator, generate};
    use wuos_model::plan::address_plan;

    fn setup(actions: &str) -> (Desired, Inventory) {
        let t = generate(&"sdwan:3:2".parse::<Generator>().unwrap(), 1);
        let inv = Inventory::from_topology(&t, &address_plan(&t).unwrap()).unwrap();
        let mut d = Desired::default();
        for a in serde_json::from_str::<Vec<Action>>(actions).unwrap() {
            d.apply(a, &inv).unwrap();
        }
        (d, inv)
    }

    const TWO: &str = r#"[
        {"action":"create_overlay","name":"voice","sites":{"e1":{},"e2":{},"e3":{}},"underlays":["mpls"]},
        {"action":"create_overlay","name":"bulk","sites":{"e1":{},"e2":{}}},
        {"action":"create_class","name":"sip","overlay":"voice","rules":[{"proto":"udp","dst_ports":5060}]},
        {"action":"create_class","name":"web","overlay":"bulk","rules":[{"proto":"tcp","dst_ports":443},{"proto":"tcp","dst_ports":80}]}
    ]"#;

    #[test]
    fn pieces_merge_back_into_the_whole_and_survive_json() {
        let (d, inv) = setup(TWO);
        for edge in ["e1", "e2", "e3"] {
            let mut whole = EdgeConfig::realise(&d, &inv, edge);
            let pieces = split(&whole, &d);
            assert!(pieces.keys().all(|k| key_ok(k)), "{pieces:?}");
            assert!(pieces.values().all(|p| *p != EdgeConfig::default()), "no empty piece");
            let back: Slices = serde_json::from_str(&serde_json::to_string(&pieces).unwrap()).unwrap();
            assert_eq!(back, pieces, "{edge}: a piece survives its JSON form");
            whole.unreachable.clear();
            assert_eq!(merge(back.values()), whole, "{edge}");
            assert_eq!(nft_script(&back), whole.nft_script(), "{edge}");
        }
        let e3 = split(&EdgeConfig::realise(&d, &inv, "e3"), &d);
        assert_eq!(
            e3.keys().collect::<Vec<_>>(),
            ["class/sip", "overlay/voice"],
            "e3 is not in bulk"
        );
    }

    #[test]
    fn a_change_touches_only_its_pieces() {
        let (d, inv) = setup(TWO);
        let old = split(&EdgeConfig::realise(&d, &inv, "e1"), &d);
        let mut d2 = d.clone();
        d2.apply(
            serde_json::from_str(r#"{"action":"delete_class","name":"web"}"#).unwrap(),
            &inv,
        )
        .unwrap();
        d2.apply(
            serde_json::from_str(r#"{"action":"remove_site","overlay":"voice","site":"e3"}"#).unwrap(),
            &inv,
        )
        .unwrap();
        let new = split(&EdgeConfig::realise(&d2, &inv, "e1"), &d2);
        let c = changed(&old, &new);
        assert_eq!(c.keys().collect::<Vec<_>>(), ["class/web", "overlay/voice"]);
        assert_eq!(c["class/web"], None);
        assert!(c["overlay/voice"].as_ref().unwrap().tunnels["wo1-mpls"].peers.len() == 1);
        assert!(changed(&new, &new).is_empty());
    }

    #[test]
    fn the_shortcuts_skip_only_rules_that_cannot_match() {
        use crate::edge::{Action, END_OF_RULES, RULE_PRIORITIES, SKIP_CLASSES, SKIP_IIF, shortcuts};
        let (d, inv) = setup(
            r#"[
            {"action":"create_overlay","name":"voice","sites":{"e1":{},"e2":{},"e3":{}}},
            {"action":"create_overlay","name":"bulk","sites":{"e1":{},"e2":{}},"underlays":["inet"]},
            {"action":"create_class","name":"sip","overlay":"voice","rules":[{"proto":"udp","dst_ports":5060}],
             "steering":{"sla":{"max_latency_ms":40,"max_loss_pct":1,"max_jitter_ms":10}}},
            {"action":"create_class","name":"web","overlay":"bulk","rules":[{"proto":"tcp","dst_ports":443}]}
        ]"#,
        );
        let [skip_classes, skip_iif, end] = shortcuts();
        assert_eq!(
            (skip_classes.action, skip_iif.action),
            (Action::Goto(SKIP_IIF), Action::Goto(END_OF_RULES))
        );
        assert_eq!(end.action, Action::Nop);
        for edge in ["e1", "e2", "e3"] {
            let c = EdgeConfig::realise(&d, &inv, edge);
            let (mut marks, mut iifs) = (0, 0);
            for r in &c.rules {
                assert!(
                    RULE_PRIORITIES.contains(&r.priority) && r.action == Action::Lookup,
                    "{r}"
                );
                match &r.selector {
                    // Jumped over by a packet whose mark is not wuos's: it must carry wuos's byte.
                    Selector::Fwmark(m) => {
                        assert!(r.priority > SKIP_CLASSES && r.priority < SKIP_IIF, "{r}");
                        assert_eq!(m & 0xff00_0000, crate::class::MARK_BASE, "{r}");
                        marks += 1;
                    }
                    // Jumped over by what the edge sends itself: never `iif lo`.
                    Selector::Iif(i) => {
                        assert!(r.priority > SKIP_IIF && r.priority < END_OF_RULES, "{r}");
                        assert_ne!(i, "lo", "{r}");
                        iifs += 1;
                    }
                    _ => panic!("realise made a rule that is not a class's or an overlay's: {r}"),
                }
            }
            assert!(marks >= 3 && iifs >= 2, "{edge}: {marks} mark rules, {iifs} iif rules");
            // Given a configuration that holds them, the pieces still leave them out.
            let mut held = c.clone();
            held.rules.extend(shortcuts());
            let pieces = split(&held, &d);
            assert!(
                pieces
                    .values()
                    .all(|p| shortcuts().iter().all(|s| !p.rules.contains(s))),
                "the shortcuts are the edge's, in no piece"
            );
        }
        let text: Vec<String> = shortcuts().iter().map(ToString::to_string).collect();
        assert_eq!(
            text,
            [
                "priority 10000 not fwmark 0x57000000/0xff000000 goto 20000",
                "priority 20000 iif lo goto 25048",
                "priority 25048 nop"
            ]
        );
    }

    #[test]
    fn tunnel_names_are_told_from_other_interfaces() {
        use crate::edge::is_tunnel_name;
        let (d, inv) = setup(TWO);
        let c = EdgeConfig::realise(&d, &inv, "e1");
        assert!(!c.tunnels.is_empty());
        assert!(c.tunnels.keys().all(|t| is_tunnel_name(t)), "{:?}", c.tunnels.keys());
        for other in ["eth0", "lo", "wo", "wo-mpls", "wo1-", "woa-mpls", "wonder", "two1-mpls"] {
            assert!(!is_tunnel_name(other), "{other}");
        }
    }

    #[test]
    fn keys_are_checked() {
        for good in ["overlay/voice", "class/sip-1"] {
            assert!(key_ok(good), "{good}");
        }
        for bad in ["overlay/", "voice", "table/voice", "class/a b", ""] {
            assert!(!key_ok(bad), "{bad}");
        }
    }
}
