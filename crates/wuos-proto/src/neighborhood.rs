//! A typed snapshot of what a router knows of its neighborhood: itself and every router of its
//! view, with their figures, demand and service instances as their adverts say. The daemon
//! publishes it for its orchestrator and controller (which never read the admin API's status).

use std::net::{Ipv4Addr, SocketAddr};

use wuos_model::{Role, RouterId};

use crate::instance::Instance;
use crate::pb;

/// A service instance as a router advertises it.
#[derive(Clone, Debug, PartialEq)]
pub struct AdvertisedInstance {
    pub service: String,
    /// Its domain's name.
    pub name: String,
    /// `running`, `paused`, `stopped`, `failed`, … (its lifecycle state's name).
    pub state: String,
    /// Running and healthy (or without a probe): it may take traffic.
    pub ready: bool,
}

/// Where an orchestrator says it serves a service in its region.
#[derive(Clone, Debug, PartialEq)]
pub struct AdvertisedPlacement {
    pub service: String,
    /// The router serving it, if any.
    pub serving: Option<RouterId>,
    pub vip: Option<Ipv4Addr>,
}

/// One router of the neighborhood (this one included, at 0 hops).
#[derive(Clone, Debug, PartialEq)]
pub struct RouterView {
    pub id: RouterId,
    pub role: Role,
    pub hops: u32,
    /// Receive time minus the origin's sample time (0 for this router).
    pub latency_ms: f64,
    pub stale: bool,
    pub resources: Option<pb::Resources>,
    /// Where its controller listens.
    pub control_address: Option<SocketAddr>,
    /// New flows per second of each service, as its data path counts them.
    pub demand: Vec<(String, f64)>,
    pub instances: Vec<AdvertisedInstance>,
    /// When its latest advert was sampled (its clock), ns since the epoch.
    pub sampled_unix_ns: i64,
    /// The orchestrator whose region it belongs to, as it says.
    pub region: Option<RouterId>,
    /// Its orchestrator's placements, if it runs one.
    pub placements: Vec<AdvertisedPlacement>,
    /// Its SD-WAN tunnels, when it is an SD-WAN edge holding any.
    pub sdwan: Option<pb::SdwanEdgeState>,
}

impl RouterView {
    /// The IPv4 address of its controller, if it advertises one.
    pub fn control_ipv4(&self) -> Option<Ipv4Addr> {
        match self.control_address?.ip() {
            std::net::IpAddr::V4(a) => Some(a),
            std::net::IpAddr::V6(_) => None,
        }
    }
}

/// What a neighborhood is made of ([`Instance::neighborhood_key`]): the view's generation, our
/// own advert's sequence (one boot per instance), how many entries are stale and how many hold
/// their hops ([`crate::view::Entry::hops_at`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NeighborhoodKey {
    view_generation: u64,
    own_sequence: u64,
    stale: usize,
    held: usize,
}

/// The neighborhood at one moment.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Neighborhood {
    /// Monotonic ms of the snapshot.
    pub at_ms: u64,
    /// This router (once it has sampled itself), then every router of the view, by id.
    pub routers: Vec<RouterView>,
}

impl Neighborhood {
    pub fn get(&self, id: &str) -> Option<&RouterView> {
        self.routers.iter().find(|r| r.id == id)
    }
}

/// Whether an advertised instance may take traffic.
pub fn is_ready(s: &pb::ServiceInstance) -> bool {
    s.state == "running" && matches!(s.health.as_str(), "healthy" | "unchecked")
}

fn router(a: &pb::TelemetryAdvert, hops: u32, latency_ms: f64, stale: bool) -> Option<RouterView> {
    Some(RouterView {
        id: RouterId::new(a.origin.as_str()).ok()?,
        role: a.role().model(),
        hops,
        latency_ms,
        stale,
        resources: a.resources,
        control_address: a.control_address.parse().ok(),
        demand: a.demand.iter().map(|d| (d.service.clone(), d.flows_per_s)).collect(),
        instances: a
            .services
            .iter()
            .map(|s| AdvertisedInstance {
                service: s.service.clone(),
                name: s.name.clone(),
                state: s.state.clone(),
                ready: is_ready(s),
            })
            .collect(),
        sampled_unix_ns: a.timestamp_unix_ns,
        region: RouterId::new(a.region.as_str()).ok(),
        placements: a
            .placements
            .iter()
            .map(|p| AdvertisedPlacement {
                service: p.service.clone(),
                serving: RouterId::new(p.serving_router.as_str()).ok(),
                vip: p.vip.parse().ok(),
            })
            .collect(),
        sdwan: a.sdwan.clone(),
    })
}

impl Instance {
    /// The neighborhood now (`now_unix_ns`, the wall clock, for the view's latencies).
    pub fn neighborhood(&self, now_ms: u64, now_unix_ns: i64) -> Neighborhood {
        let stale_after = self.config().stale_after_intervals;
        let mut routers: Vec<RouterView> = self.own().and_then(|a| router(a, 0, 0.0, false)).into_iter().collect();
        routers.extend(self.view().iter().filter_map(|e| {
            let latency_ms = e.latency_ms(now_ms, now_unix_ns).max(0.0);
            router(
                &e.advert,
                e.hops_at(now_ms),
                latency_ms,
                e.is_stale(now_ms, stale_after),
            )
        }));
        Neighborhood { at_ms: now_ms, routers }
    }

    /// What the neighborhood is made of, as a key: while it reads the same, a new
    /// [`Instance::neighborhood`] would say the same (but for `at_ms`), and the last one may be
    /// published again instead of rebuilt (rebuilding it at every sample, with a copy of every
    /// advert of the view, was 6.5 % of the busy CPU samples of a quiet `random:1000` lab).
    pub fn neighborhood_key(&self, now_ms: u64) -> NeighborhoodKey {
        NeighborhoodKey {
            view_generation: self.view().generation(),
            own_sequence: self.own().map_or(0, |a| a.sequence),
            stale: self.view().stale_count(now_ms, self.config().stale_after_intervals),
            held: self.view().held_count(now_ms),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{InstanceConfig, NeighborConfig};

    #[test]
    fn the_snapshot_holds_this_router_and_its_view_typed() {
        let mut i = Instance::new(InstanceConfig {
            neighbors: vec![NeighborConfig {
                id: "r2".into(),
                address: "10.0.0.2:7470".into(),
                interface: "eth0".into(),
            }],
            control_address: "10.254.0.1:7470".into(),
            ..InstanceConfig::new("r1", pb::Role::Fog, 7)
        });
        i.process(crate::Input::Sample {
            now_ms: 0,
            timestamp_unix_ns: 1,
            resources: pb::Resources {
                mem_used_pct: 12.0,
                ..Default::default()
            },
            links: Vec::new(),
            services: vec![pb::ServiceInstance {
                service: "pabx".into(),
                name: "pabx".into(),
                state: "running".into(),
                health: "starting".into(),
                ..Default::default()
            }],
            demand: vec![pb::ServiceDemand {
                service: "pabx".into(),
                flows_per_s: 2.5,
                packets: 9,
            }],
            region: "r1".into(),
            placements: Vec::new(),
            sdwan: None,
        });
        let n = i.neighborhood(10, 2);
        let me = n.get("r1").expect("this router");
        assert_eq!((me.role, me.hops, me.stale), (Role::Fog, 0, false));
        assert_eq!(me.control_ipv4(), Some(Ipv4Addr::new(10, 254, 0, 1)));
        assert_eq!(me.demand, vec![("pabx".to_string(), 2.5)]);
        assert_eq!(me.resources.unwrap().mem_used_pct, 12.0);
        assert!(!me.instances[0].ready, "running but still starting: not ready");
        let ok = |state: &str, health: &str| {
            is_ready(&pb::ServiceInstance {
                state: state.into(),
                health: health.into(),
                ..Default::default()
            })
        };
        assert!(ok("running", "healthy") && ok("running", "unchecked"));
        assert!(!ok("paused", "") && !ok("failed", "") && !ok("running", "unhealthy"));
    }

    #[test]
    fn the_key_moves_with_what_the_neighborhood_is_made_of() {
        let mut i = Instance::new(InstanceConfig {
            neighbors: vec![NeighborConfig {
                id: "r2".into(),
                address: "10.0.0.2:7470".into(),
                interface: "eth0".into(),
            }],
            ..InstanceConfig::new("r1", pb::Role::Edge, 7)
        });
        let sample = |now_ms: u64, cpu: f64| crate::Input::Sample {
            now_ms,
            timestamp_unix_ns: now_ms as i64 * 1_000_000,
            resources: pb::Resources {
                cpu_used_pct: cpu,
                ..Default::default()
            },
            links: Vec::new(),
            services: Vec::new(),
            demand: Vec::new(),
            region: String::new(),
            placements: Vec::new(),
            sdwan: None,
        };
        i.process(sample(0, 5.0));
        let k0 = i.neighborhood_key(0);
        i.process(sample(1000, 5.0));
        assert_eq!(i.neighborhood_key(1000), k0, "a quiet sample changes nothing");
        i.process(sample(2000, 9.0));
        let k1 = i.neighborhood_key(2000);
        assert_ne!(k1, k0, "our own advert changed");
        // r2 comes up and sends its advert: a new entry.
        i.process(crate::Input::LinkOpened {
            now_ms: 2000,
            neighbor: "r2".into(),
        });
        let header = Some(crate::validate::header("r2"));
        let advert = pb::TelemetryAdvert {
            origin: "r2".into(),
            boot_id: 3,
            sequence: 1,
            hop_limit: 2,
            interval_ms: 1000,
            resources: Some(pb::Resources::default()),
            ..Default::default()
        };
        let frame = pb::Frame {
            header,
            hello: Some(pb::Hello {
                header: Some(crate::validate::header("r2")),
                boot_id: 3,
                hello_interval_ms: 1000,
                dead_interval_ms: 3000,
                ..Default::default()
            }),
            adverts: vec![advert],
            ..Default::default()
        };
        let (_, r) = i.on_frame(2000, "r2", &frame, None);
        r.expect("a valid frame");
        let k2 = i.neighborhood_key(2000);
        assert_ne!(k2, k1, "a new entry");
        assert_eq!(i.neighborhood_key(2500), k2);
        // r2's entry goes stale (quiet_intervals 0 in its advert: 3 intervals) with time alone.
        assert_ne!(i.neighborhood_key(5000), k2, "an entry went stale");
        assert!(i.neighborhood(5000, 0).get("r2").unwrap().stale);
    }
}
