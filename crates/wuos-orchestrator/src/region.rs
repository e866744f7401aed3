//! Regions: which orchestrator each router belongs to, and what an orchestrator learns of the
//! others.
//!
//! ```text
//!   actor1 ─ edge1 ─ foga ─ edge2 ─ fogb ─ edge3 ─ actor3        region of each router
//!                     │               │                          (hop limit H = 2):
//!                     └──── dc ───────┘  (30 ms)                 edge1 → foga (1 hop)
//!                                                                edge2 → foga (1 hop each: id tie-break)
//!   ┌─ foga's region ──────┐ ┌ fogb's ──────┐                     edge3 → fogb (1 hop)
//!   │ edge1  foga  edge2   │ │ fogb  edge3  │   dc: no region     foga, fogb → themselves
//!   └──────────────────────┘ └──────────────┘   (every region's fallback)
//! ```
//!
//! # Membership ([`choose`])
//!
//! Every router picks its region from its own view, as a pure function of it:
//!
//! 1. a data-centre router (role `dc`) belongs to no region: it is every region's shared
//!    fallback (this wins even over an orchestrator configured on it);
//! 2. a router that runs an orchestrator is its own region;
//! 3. any other router joins the nearest router of its view that advertises itself as an
//!    orchestrator (its advert's `region` is its own id) and is not stale: fewest hops, ties
//!    broken by the smallest router id;
//! 4. no such router in its view: no region.
//!
//! The router advertises its choice (`region` in its adverts); an orchestrator takes as its
//! region the routers whose adverts name it ([`RegionView::members`]).
//!
//! **Why it is stable.** The choice depends only on which orchestrators a router sees, their hop
//! counts and their ids — never on load, latency or placements, so nothing an orchestrator does
//! moves a router to another region (no feedback loop). Hop counts change only when the topology
//! does, and an orchestrator leaves a view only when its adverts go stale (several missed
//! telemetry intervals) or are withdrawn. Two routers with the same view make the same choice.
//! Latency is deliberately not used: it is the receive time minus the origin's sample time, so
//! it jitters from sample to sample and carries the clocks' skew.
//!
//! **How wide.** A router joins only an orchestrator of its view, which holds routers at most H
//! hops away (H, the flooding radius, 2 by default). So every member is at most H hops from its
//! orchestrator, a region spans at most 2H hops, and (with one H for all routers) every member is
//! in its orchestrator's view, whose adverts carry its figures and control address.
//!
//! **When a fog dies.** Its adverts go stale (then are withdrawn); each of its routers re-homes
//! to the next nearest orchestrator it sees, or to none. The routers' controllers drop the rules
//! of the orchestrator they left; the new orchestrator announces its routes to them when their
//! adverts name it.
//!
//! # What orchestrators learn of each other
//!
//! An orchestrator's router advertises its placements ([`RegionPlacement`], `placements` in the
//! advert): where each service is served in its region. The others keep them
//! ([`RegionView::placements`], shown by the orchestrator's
//! [`neighbor_placements`](crate::Orchestrator::neighbor_placements)); nothing acts on them yet.
//!
//! # What the daemon does with regions on
//!
//! At each own sample, before it becomes an advert:
//!
//! 1. `region = choose(me, role, runs_orchestrator, &neighborhood)`;
//! 2. the controller is told first (`wuos_controller::Input::Region(Region::from_choice(region))`),
//!    so that by the time an orchestrator reads the advert below, the controller takes its routes;
//! 3. the sample carries `region` (the id, or "" for none) and, on an orchestrator's router,
//!    `placements` ([`advertised_placements`](crate::neighborhood::advertised_placements) of
//!    [`Orchestrator::placements`](crate::Orchestrator::placements)).
//!
//! Every intent reaches the controller with its sender: the orchestrator's router id, from the
//! Control session's mTLS certificate (or its header until then); this router's id for its own
//! orchestrator. With regions off, the daemon tells the controller nothing (its region stays
//! unknown: any orchestrator may write, the newest wins, as before regions).

use std::collections::BTreeMap;
use std::fmt;
use std::net::Ipv4Addr;

use serde::Serialize;
use wuos_model::{Role, RouterId};
use wuos_proto::neighborhood::{Neighborhood, RouterView};

/// The region `me` belongs to (the orchestrator's router id), from its view `n`; see the module
/// docs. `runs_orchestrator`: this router runs an orchestrator.
pub fn choose(me: &RouterId, my_role: Role, runs_orchestrator: bool, n: &Neighborhood) -> Option<RouterId> {
    if my_role == Role::Dc {
        return None;
    }
    if runs_orchestrator {
        return Some(me.clone());
    }
    n.routers
        .iter()
        .filter(|r| r.id != *me && is_orchestrator(r))
        .min_by(|a, b| a.hops.cmp(&b.hops).then_with(|| a.id.cmp(&b.id)))
        .map(|r| r.id.clone())
}

/// A fresh advert that names its own router as its region: that router runs an orchestrator.
pub fn is_orchestrator(r: &RouterView) -> bool {
    !r.stale && r.region.as_ref() == Some(&r.id)
}

/// Where an orchestrator serves a service in its region (what its advert's `placements` say).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct RegionPlacement {
    pub service: String,
    /// The router serving it (the data centre's name when it serves it).
    pub serving: String,
    pub vip: Option<Ipv4Addr>,
}

impl fmt::Display for RegionPlacement {
    /// `pabx at foga (10.255.0.10)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} at {}", self.service, self.serving)?;
        if let Some(vip) = self.vip {
            write!(f, " ({vip})")?;
        }
        Ok(())
    }
}

/// What one sample says about regions.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RegionView {
    /// Router → the orchestrator whose region it says it belongs to (routers that name none are
    /// missing).
    pub members: BTreeMap<String, String>,
    /// Orchestrator → its advertised placements: every fresh router of the view that names
    /// itself as its region (this router included; the orchestrator skips its own).
    pub placements: BTreeMap<String, Vec<RegionPlacement>>,
}

impl RegionView {
    /// Whether `router` says it belongs to `orchestrator`'s region.
    pub fn is_member(&self, router: &str, orchestrator: &str) -> bool {
        self.members.get(router).is_some_and(|o| o == orchestrator)
    }
}

/// The region view of a neighborhood: every router's advertised region, and the placements of
/// the fresh orchestrators.
pub fn region_view(n: &Neighborhood) -> RegionView {
    let mut v = RegionView::default();
    for r in &n.routers {
        if let Some(region) = &r.region {
            v.members.insert(r.id.to_string(), region.to_string());
        }
        if is_orchestrator(r) {
            let mut placements: Vec<RegionPlacement> = r
                .placements
                .iter()
                .map(|p| RegionPlacement {
                    service: p.service.clone(),
                    serving: p.serving.as_ref().map(ToString::to_string).unwrap_or_default(),
                    vip: p.vip,
                })
                .collect();
            placements.sort();
            v.placements.insert(r.id.to_string(), placements);
        }
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> RouterId {
        RouterId::new(s).unwrap()
    }

    fn router(name: &str, hops: u32, region: Option<&str>) -> RouterView {
        RouterView {
            id: id(name),
            role: Role::Edge,
            hops,
            latency_ms: f64::from(hops),
            stale: false,
            resources: None,
            control_address: None,
            demand: Vec::new(),
            instances: Vec::new(),
            sampled_unix_ns: 0,
            region: region.map(id),
            placements: Vec::new(),
            sdwan: None,
        }
    }

    /// A fresh orchestrator `name` at `hops`.
    fn orch(name: &str, hops: u32) -> RouterView {
        let mut r = router(name, hops, Some(name));
        r.role = Role::Fog;
        r
    }

    fn view(routers: Vec<RouterView>) -> Neighborhood {
        Neighborhood { at_ms: 0, routers }
    }

    fn of(n: &Neighborhood) -> Option<String> {
        choose(&id("me"), Role::Edge, false, n).map(|r| r.to_string())
    }

    #[test]
    fn the_nearest_orchestrator_by_hops() {
        let n = view(vec![router("me", 0, Some("fogb")), orch("foga", 2), orch("fogb", 1)]);
        assert_eq!(of(&n).as_deref(), Some("fogb"));
        // Latency does not count: only hops.
        let mut n = n;
        n.routers[2].latency_ms = 500.0;
        assert_eq!(of(&n).as_deref(), Some("fogb"));
    }

    #[test]
    fn a_tie_in_hops_goes_to_the_smallest_id_whatever_the_order() {
        let a = view(vec![orch("fogb", 1), orch("foga", 1), orch("fog0", 2)]);
        assert_eq!(of(&a).as_deref(), Some("foga"));
        let mut b = a.clone();
        b.routers.reverse();
        assert_eq!(of(&b).as_deref(), Some("foga"), "the view's order does not matter");
    }

    #[test]
    fn a_stale_orchestrator_is_passed_over() {
        let mut n = view(vec![orch("foga", 1), orch("fogb", 2)]);
        n.routers[0].stale = true;
        assert_eq!(
            of(&n).as_deref(),
            Some("fogb"),
            "foga's adverts went stale: re-homed to fogb"
        );
        n.routers[1].stale = true;
        assert_eq!(of(&n), None, "no fresh orchestrator in view: no region");
    }

    #[test]
    fn only_a_router_naming_itself_is_an_orchestrator() {
        // edge5 belongs to foga (out of this view): it is no orchestrator; neither is a router
        // naming no region.
        let n = view(vec![router("edge5", 1, Some("foga")), router("edge6", 1, None)]);
        assert_eq!(of(&n), None);
        let n = view(vec![router("edge5", 1, Some("foga")), orch("fogc", 2)]);
        assert_eq!(of(&n).as_deref(), Some("fogc"));
    }

    #[test]
    fn an_orchestrators_router_is_its_own_region_and_a_dc_is_in_none() {
        let n = view(vec![orch("foga", 1)]);
        assert_eq!(choose(&id("me"), Role::Fog, true, &n), Some(id("me")));
        assert_eq!(choose(&id("me"), Role::Dc, false, &n), None);
        assert_eq!(
            choose(&id("me"), Role::Dc, true, &n),
            None,
            "a dc is the shared fallback even with an orchestrator"
        );
        // This router's own advert (0 hops) never makes it an orchestrator by itself.
        let n = view(vec![router("me", 0, Some("me")), orch("foga", 2)]);
        assert_eq!(of(&n).as_deref(), Some("foga"));
    }

    #[test]
    fn the_region_view_keeps_claims_and_fresh_orchestrators_placements() {
        let mut a = orch("foga", 1);
        a.placements = vec![
            wuos_proto::neighborhood::AdvertisedPlacement {
                service: "web".into(),
                serving: Some(id("dc")),
                vip: None,
            },
            wuos_proto::neighborhood::AdvertisedPlacement {
                service: "pabx".into(),
                serving: Some(id("edge1")),
                vip: Some(Ipv4Addr::new(10, 255, 0, 10)),
            },
        ];
        let mut b = orch("fogb", 2);
        b.stale = true;
        let n = view(vec![router("me", 0, Some("foga")), a, b, router("edge3", 2, None)]);
        let v = region_view(&n);
        assert_eq!(
            v.members,
            [("me", "foga"), ("foga", "foga"), ("fogb", "fogb")]
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .into()
        );
        assert!(v.is_member("me", "foga") && !v.is_member("edge3", "foga"));
        assert_eq!(
            v.placements.keys().collect::<Vec<_>>(),
            vec!["foga"],
            "stale fogb's placements are not kept"
        );
        assert_eq!(
            v.placements["foga"].iter().map(ToString::to_string).collect::<Vec<_>>(),
            vec!["pabx at edge1 (10.255.0.10)", "web at dc"]
        );
    }
}
