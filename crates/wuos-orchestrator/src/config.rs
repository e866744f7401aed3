//! How an orchestrator runs: its router, the data centre, timers and thresholds.

/// Default [`Config::confirm_samples`].
pub const DEFAULT_CONFIRM_SAMPLES: u32 = 1;
/// Default [`Config::ready_timeout_ms`]: a QEMU/TCG guest boots in about 3 s here; leave room.
pub const DEFAULT_READY_TIMEOUT_MS: u64 = 30_000;
/// Default [`Config::drain_ms`].
pub const DEFAULT_DRAIN_MS: u64 = 5_000;
/// Default [`Config::min_demand_flows`]: any demand at all.
pub const DEFAULT_MIN_DEMAND_FLOWS: f64 = 0.0;
/// Default [`Config::demand_window_ms`].
pub const DEFAULT_DEMAND_WINDOW_MS: u64 = 10_000;
/// Default [`Config::max_staleness_ms`].
pub const DEFAULT_MAX_STALENESS_MS: u64 = 10_000;
/// Default [`Config::failure_backoff_ms`].
pub const DEFAULT_FAILURE_BACKOFF_MS: u64 = 60_000;
/// Upper bound of every duration setting: one day.
pub const MAX_DURATION_MS: u64 = 86_400_000;
/// Upper bound of [`Config::confirm_samples`].
pub const MAX_CONFIRM_SAMPLES: u32 = 1000;

/// A configuration the orchestrator cannot run with.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum ConfigError {
    /// A router name is empty.
    #[error("{field} is empty; give the router's id")]
    EmptyName {
        /// `local` or `datacenter`.
        field: &'static str,
    },
    /// The orchestrator's router is the data centre.
    #[error("local and datacenter are the same router {name:?}; the data centre is another router")]
    SameRouter {
        /// The name.
        name: String,
    },
    /// A number out of range.
    #[error("{field} {value} is out of range ({expected})")]
    Range {
        /// The setting.
        field: &'static str,
        /// Its value, as given.
        value: String,
        /// What is allowed.
        expected: &'static str,
    },
}

/// How one orchestrator runs.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    /// The router this orchestrator runs on ([`Placement::Local`](wuos_policy::Placement)).
    pub local: String,
    /// The data-centre router: assumed to always run every service, never told to start or stop
    /// one. Every service starts out placed there.
    pub datacenter: String,
    /// Consecutive telemetry samples a placement must stay not viable before the service
    /// leaves it, and a better one must be viable before the service moves to it (besides the
    /// policy's `hold`).
    pub confirm_samples: u32,
    /// How long a new instance may take to report ready before the move is aborted.
    pub ready_timeout_ms: u64,
    /// How long the old instance keeps running after the routes moved, for flows in flight.
    pub drain_ms: u64,
    /// Demand (new flows per second, summed over the routers that reported within the window)
    /// a service needs before it is moved at all; a service with no demand in the window stays
    /// where it is. Any positive demand counts when 0.
    pub min_demand_flows: f64,
    /// How long a demand report counts.
    pub demand_window_ms: u64,
    /// How old the latest telemetry may get: past this, every router (this one included) is
    /// taken as stale at each tick, which moves services to their fallback.
    pub max_staleness_ms: u64,
    /// How long a router where an instance failed (or did not get ready) is not chosen again
    /// for that service.
    pub failure_backoff_ms: u64,
    /// Regions (`crate::region`): place instances only on routers of this orchestrator's region
    /// (the routers whose adverts name it) or in the data centre, route only them, and tell the
    /// data centre only to serve the VIPs itself. Off: every router of the view is a candidate and
    /// is told routes, the data centre included (one orchestrator per neighborhood, as before
    /// regions).
    pub region: bool,
}

impl Config {
    /// The defaults for `local` with the data centre `datacenter` (regions on).
    pub fn new(local: impl Into<String>, datacenter: impl Into<String>) -> Self {
        Config {
            local: local.into(),
            datacenter: datacenter.into(),
            confirm_samples: DEFAULT_CONFIRM_SAMPLES,
            ready_timeout_ms: DEFAULT_READY_TIMEOUT_MS,
            drain_ms: DEFAULT_DRAIN_MS,
            min_demand_flows: DEFAULT_MIN_DEMAND_FLOWS,
            demand_window_ms: DEFAULT_DEMAND_WINDOW_MS,
            max_staleness_ms: DEFAULT_MAX_STALENESS_MS,
            failure_backoff_ms: DEFAULT_FAILURE_BACKOFF_MS,
            region: true,
        }
    }

    /// Checks names and ranges.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.local.is_empty() {
            return Err(ConfigError::EmptyName { field: "local" });
        }
        if self.datacenter.is_empty() {
            return Err(ConfigError::EmptyName { field: "datacenter" });
        }
        if self.local == self.datacenter {
            return Err(ConfigError::SameRouter {
                name: self.local.clone(),
            });
        }
        if !(1..=MAX_CONFIRM_SAMPLES).contains(&self.confirm_samples) {
            return Err(ConfigError::Range {
                field: "confirm_samples",
                value: self.confirm_samples.to_string(),
                expected: "1-1000",
            });
        }
        for (field, value, min) in [
            ("ready_timeout_ms", self.ready_timeout_ms, 1),
            ("drain_ms", self.drain_ms, 0),
            ("demand_window_ms", self.demand_window_ms, 1),
            ("max_staleness_ms", self.max_staleness_ms, 1),
            ("failure_backoff_ms", self.failure_backoff_ms, 0),
        ] {
            if !(min..=MAX_DURATION_MS).contains(&value) {
                return Err(ConfigError::Range {
                    field,
                    value: value.to_string(),
                    expected: if min == 1 { "1-86400000 ms" } else { "0-86400000 ms" },
                });
            }
        }
        if !(self.min_demand_flows.is_finite() && self.min_demand_flows >= 0.0) {
            return Err(ConfigError::Range {
                field: "min_demand_flows",
                value: self.min_demand_flows.to_string(),
                expected: "a finite number of flows per second, 0 or more",
            });
        }
        Ok(())
    }

    /// The configuration with every number forced into range (names are left alone).
    pub(crate) fn clamped(mut self) -> Self {
        self.confirm_samples = self.confirm_samples.clamp(1, MAX_CONFIRM_SAMPLES);
        self.ready_timeout_ms = self.ready_timeout_ms.clamp(1, MAX_DURATION_MS);
        self.drain_ms = self.drain_ms.min(MAX_DURATION_MS);
        self.demand_window_ms = self.demand_window_ms.clamp(1, MAX_DURATION_MS);
        self.max_staleness_ms = self.max_staleness_ms.clamp(1, MAX_DURATION_MS);
        self.failure_backoff_ms = self.failure_backoff_ms.min(MAX_DURATION_MS);
        if !(self.min_demand_flows.is_finite() && self.min_demand_flows >= 0.0) {
            self.min_demand_flows = DEFAULT_MIN_DEMAND_FLOWS;
        }
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation() {
        let ok = Config::new("r1", "dc1");
        assert_eq!(ok.validate(), Ok(()));
        let e = |f: fn(&mut Config)| {
            let mut c = ok.clone();
            f(&mut c);
            c.validate().unwrap_err().to_string()
        };
        assert_eq!(e(|c| c.local.clear()), "local is empty; give the router's id");
        assert_eq!(e(|c| c.datacenter.clear()), "datacenter is empty; give the router's id");
        assert_eq!(
            e(|c| c.datacenter = "r1".into()),
            "local and datacenter are the same router \"r1\"; the data centre is another router"
        );
        assert_eq!(
            e(|c| c.confirm_samples = 0),
            "confirm_samples 0 is out of range (1-1000)"
        );
        assert_eq!(
            e(|c| c.ready_timeout_ms = 0),
            "ready_timeout_ms 0 is out of range (1-86400000 ms)"
        );
        assert_eq!(
            e(|c| c.drain_ms = MAX_DURATION_MS + 1),
            "drain_ms 86400001 is out of range (0-86400000 ms)"
        );
        assert_eq!(
            e(|c| c.min_demand_flows = f64::NAN),
            "min_demand_flows NaN is out of range (a finite number of flows per second, 0 or more)"
        );
        let mut bad = ok.clone();
        bad.confirm_samples = 0;
        bad.min_demand_flows = -1.0;
        bad.ready_timeout_ms = 0;
        assert_eq!(bad.clamped().validate(), Ok(()));
    }
}
