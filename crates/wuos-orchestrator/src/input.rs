//! What the daemon tells the orchestrator.

use std::collections::BTreeMap;

use wuos_policy::{Candidate, Policy};

use crate::region::RegionView;

/// One message in. Time comes only from the `now_ms` of these (the daemon's monotonic clock);
/// inputs without it (the acks) happen at the latest time seen.
#[derive(Clone, Debug, PartialEq)]
pub enum Input {
    /// A telemetry sample: this router (0 hops) and every router of its neighborhood view. Each
    /// sample is where placements are decided.
    Telemetry {
        /// Monotonic clock, ms.
        now_ms: u64,
        /// The candidates, with their stale flags.
        candidates: Vec<Candidate>,
        /// Which region each router of the view says it belongs to, and the other orchestrators'
        /// placements (used only with [`Config::region`](crate::Config::region)).
        regions: RegionView,
    },
    /// New flows per second of `service` seen by the controller on `router` (its latest report
    /// replaces the previous one).
    Demand {
        /// Monotonic clock, ms.
        now_ms: u64,
        /// The service.
        service: String,
        /// The reporting router.
        router: String,
        /// New flows per second (negative or NaN is read as 0).
        flows: f64,
    },
    /// The controller on `router` reports its instance of `service` ready (health check
    /// passing).
    InstanceReady {
        /// The service.
        service: String,
        /// The router running the instance.
        router: String,
    },
    /// The controller on `router` reports its instance of `service` failed: it did not start,
    /// or it died.
    InstanceFailed {
        /// The service.
        service: String,
        /// The router.
        router: String,
        /// What happened, for the log.
        reason: String,
    },
    /// Time passes: ready timeouts, the end of drains, telemetry staleness.
    Tick {
        /// Monotonic clock, ms.
        now_ms: u64,
    },
    /// A new policy (already parsed and checked). Services keep their placements; new ones
    /// start in the data centre; removed ones are moved back there and forgotten.
    ReplacePolicy(Policy),
    /// After a restart of the daemon, once its neighborhood view has settled and before any
    /// `Telemetry`: where each service was served before (as persisted from
    /// [`Orchestrator::serving`](crate::Orchestrator::serving)) and the instances the
    /// neighborhood runs. A service whose router still advertises a healthy instance is adopted
    /// there; every other instance outside the data centre is stopped. Ignored after a
    /// `Telemetry` or a first `Restore`.
    Restore {
        /// Monotonic clock, ms.
        now_ms: u64,
        /// Service → the name of the router that served it before the restart (possibly the
        /// data centre's); a service may be missing.
        placements: BTreeMap<String, String>,
        /// Every instance of any service that a router of the neighborhood (this router and the
        /// data centre included) advertises.
        instances: Vec<AdvertisedInstance>,
        /// The regions the routers advertise: with [`Config::region`](crate::Config::region),
        /// only instances on routers of this orchestrator's region can be orphans (the others'
        /// are another orchestrator's business).
        regions: RegionView,
    },
}

/// An instance of a service that a router advertises (for [`Input::Restore`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AdvertisedInstance {
    /// The service.
    pub service: String,
    /// The router running it.
    pub router: String,
    /// Its health probe passed.
    pub ready: bool,
}
