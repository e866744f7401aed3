//! The orchestrator's inputs from a router's typed neighborhood
//! ([`wuos_proto::neighborhood::Neighborhood`]): the one conversion, used by the daemon and by
//! the simulator alike, so that the same view leads to the same decisions in both.

use wuos_policy::{Candidate, Figures};
use wuos_proto::neighborhood::{Neighborhood, RouterView};
use wuos_proto::pb;

use crate::input::{AdvertisedInstance, Input};
use crate::region::{RegionPlacement, region_view};

/// A candidate of the policy from a router of the neighborhood.
pub fn candidate(r: &RouterView) -> Candidate {
    let figures = r.resources.map_or_else(Figures::default, |r| Figures {
        cpu_used_pct: Some(r.cpu_used_pct),
        mem_used_pct: Some(r.mem_used_pct),
        cpu_free_cores: Some(r.free_cpu_cores),
        mem_free_mib: Some(r.free_mem_bytes as f64 / (1 << 20) as f64),
        cpu_pressure: r.cpu_pressure.map(|p| p.some_avg10),
        mem_pressure: r.mem_pressure.map(|p| p.some_avg10),
        io_pressure: r.io_pressure.map(|p| p.some_avg10),
    });
    Candidate {
        name: r.id.to_string(),
        hops: r.hops,
        latency_ms: Some(r.latency_ms),
        role: r.role,
        stale: r.stale,
        figures,
    }
}

/// One round's inputs: the demand every fresh router reports, the telemetry of all (with the
/// regions they advertise), a tick.
pub fn round_inputs(n: &Neighborhood, now_ms: u64) -> Vec<Input> {
    let mut inputs = Vec::new();
    for r in n.routers.iter().filter(|r| !r.stale) {
        for (service, flows) in &r.demand {
            inputs.push(Input::Demand {
                now_ms,
                service: service.clone(),
                router: r.id.to_string(),
                flows: *flows,
            });
        }
    }
    inputs.push(Input::Telemetry {
        now_ms,
        candidates: n.routers.iter().map(candidate).collect(),
        regions: region_view(n),
    });
    inputs.push(Input::Tick { now_ms });
    inputs
}

/// The service instances fresh routers advertise (a domain named after its service), for
/// [`Input::Restore`].
pub fn advertised_instances(n: &Neighborhood) -> Vec<AdvertisedInstance> {
    n.routers
        .iter()
        .filter(|r| !r.stale)
        .flat_map(|r| {
            r.instances
                .iter()
                .filter(|i| i.name == i.service)
                .map(|i| AdvertisedInstance {
                    service: i.service.clone(),
                    router: r.id.to_string(),
                    ready: i.ready,
                })
        })
        .collect()
}

/// An orchestrator's placements ([`Orchestrator::placements`](crate::Orchestrator::placements)) as
/// its router's advert carries them.
pub fn advertised_placements(placements: &[RegionPlacement]) -> Vec<pb::Placement> {
    placements
        .iter()
        .map(|p| pb::Placement {
            service: p.service.clone(),
            serving_router: p.serving.clone(),
            vip: p.vip.map(|v| v.to_string()).unwrap_or_default(),
        })
        .collect()
}
