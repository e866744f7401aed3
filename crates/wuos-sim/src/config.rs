//! How a simulation runs: the protocol's timers (as every daemon of the network runs them), the
//! links' defaults, start times, the load, the demand, the modelled controllers and the
//! orchestrators. [`SimConfig::validate`] checks it all before a run.

use wuos_proto::instance::{
    DEFAULT_DEAD_INTERVAL_MS, DEFAULT_HELLO_INTERVAL_MS, DEFAULT_HOP_LIMIT, DEFAULT_STALE_AFTER_INTERVALS,
    DEFAULT_TELEMETRY_INTERVAL_MS,
};
use wuos_proto::{InstanceConfig, InstanceError, pb};

use crate::load::LoadModel;
use crate::network::LinkDefaults;
use crate::region::Regions;

/// Largest delay, jitter or start stagger accepted: one minute.
pub const MAX_DELAY_MS: u64 = 60_000;

/// A configuration the simulator cannot run with.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum ConfigError {
    /// A protocol timer or the radius, as the daemon would refuse it.
    #[error(transparent)]
    Protocol(#[from] InstanceError),
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

/// The protocol's settings, the same at every router (a daemon's `hello_interval`,
/// `dead_multiplier`, `telemetry_interval`, `hop_limit`, `stale_after_intervals`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ProtocolConfig {
    pub hello_interval_ms: u32,
    pub dead_interval_ms: u32,
    pub telemetry_interval_ms: u32,
    pub hop_limit: u32,
    pub stale_after_intervals: u32,
}

impl Default for ProtocolConfig {
    fn default() -> Self {
        ProtocolConfig {
            hello_interval_ms: DEFAULT_HELLO_INTERVAL_MS,
            dead_interval_ms: DEFAULT_DEAD_INTERVAL_MS,
            telemetry_interval_ms: DEFAULT_TELEMETRY_INTERVAL_MS,
            hop_limit: DEFAULT_HOP_LIMIT,
            stale_after_intervals: DEFAULT_STALE_AFTER_INTERVALS,
        }
    }
}

impl ProtocolConfig {
    /// How often a daemon ticks its instance: a quarter hello interval, at least 10 ms.
    pub fn tick_ms(&self) -> u64 {
        (u64::from(self.hello_interval_ms) / 4).max(10)
    }

    /// An instance configuration with these settings (no neighbors).
    pub fn instance(&self, router_id: &str, role: pb::Role, boot_id: u64) -> InstanceConfig {
        let mut c = InstanceConfig::new(router_id, role, boot_id);
        c.hello_interval_ms = self.hello_interval_ms;
        c.dead_interval_ms = self.dead_interval_ms;
        c.telemetry_interval_ms = self.telemetry_interval_ms;
        c.hop_limit = self.hop_limit;
        c.stale_after_intervals = self.stale_after_intervals;
        c
    }
}

/// The modelled controllers (see [`crate::controller`]).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ControllerConfig {
    /// From a start intent's arrival to the instance running and healthy.
    pub start_delay_ms: u64,
    /// How long an intent, or a controller's answer, takes between two routers (the Control
    /// session is not simulated over the links; an orchestrator's own router gets its intents
    /// at once).
    pub control_delay_ms: u64,
}

impl Default for ControllerConfig {
    fn default() -> Self {
        ControllerConfig {
            start_delay_ms: 1000,
            control_delay_ms: 5,
        }
    }
}

/// Which routers orchestrate, and how.
#[derive(Clone, Debug, PartialEq)]
pub struct OrchestratorsConfig {
    /// The orchestrators' routers; `None`: every router with role fog (as the lab configures
    /// its daemons).
    pub routers: Option<Vec<String>>,
    /// The data centre; `None`: the first router with role dc, else `dc` (a router outside the
    /// simulated network, assumed to run every service).
    pub datacenter: Option<String>,
    /// `wuos_orchestrator::Config`'s settings, as a daemon's `[orchestrator]` gives them.
    pub confirm_samples: u32,
    pub drain_ms: u64,
    pub ready_timeout_ms: u64,
    pub min_demand_flows: f64,
    /// Whether routers choose a region (default: `nearest`, as the daemon runs regions).
    pub regions: Regions,
}

impl Default for OrchestratorsConfig {
    fn default() -> Self {
        let d = wuos_orchestrator::Config::new("a", "b");
        OrchestratorsConfig {
            routers: None,
            datacenter: None,
            confirm_samples: d.confirm_samples,
            drain_ms: d.drain_ms,
            ready_timeout_ms: d.ready_timeout_ms,
            min_demand_flows: d.min_demand_flows,
            regions: Regions::default(),
        }
    }
}

/// A whole simulation's settings.
#[derive(Clone, Debug, PartialEq)]
pub struct SimConfig {
    /// Seeds every random choice: start times, sample phases, jitter, loss, load walks.
    pub seed: u64,
    pub protocol: ProtocolConfig,
    /// One-way delay of links whose topology gives none, µs.
    pub default_delay_us: u64,
    /// Loss of links whose topology gives none, percent.
    pub default_loss_pct: f64,
    /// Routers start at times uniform in `[0, stagger)`, ms (0: all at once).
    pub stagger_ms: u64,
    pub load: LoadModel,
    /// New flows per second every router reports for every service of the policies in force,
    /// unless an event sets it.
    pub demand_flows_per_s: f64,
    pub controller: ControllerConfig,
    pub orchestrators: OrchestratorsConfig,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            seed: 1,
            protocol: ProtocolConfig::default(),
            default_delay_us: 1000,
            default_loss_pct: 0.0,
            stagger_ms: 1000,
            load: LoadModel::default(),
            demand_flows_per_s: 1.0,
            controller: ControllerConfig::default(),
            orchestrators: OrchestratorsConfig::default(),
        }
    }
}

impl SimConfig {
    /// What links get where the topology gives nothing.
    pub fn link_defaults(&self) -> LinkDefaults {
        LinkDefaults {
            delay_us: self.default_delay_us,
            loss_pct: self.default_loss_pct,
        }
    }

    /// Checks every setting: the protocol's as a daemon checks them, the others' ranges.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.protocol.instance("r1", pb::Role::Edge, 1).validate()?;
        let range = |field, value: f64, ok: bool, expected| {
            if ok {
                Ok(())
            } else {
                Err(ConfigError::Range {
                    field,
                    value: value.to_string(),
                    expected,
                })
            }
        };
        let ms = |field, v: u64| range(field, v as f64, v <= MAX_DELAY_MS, "0-60000 ms");
        range(
            "default delay",
            self.default_delay_us as f64 / 1000.0,
            self.default_delay_us <= MAX_DELAY_MS * 1000,
            "0-60000 ms",
        )?;
        let loss = self.default_loss_pct;
        range(
            "default loss",
            loss,
            (0.0..100.0).contains(&loss),
            "0 to less than 100 %",
        )?;
        ms("stagger", self.stagger_ms)?;
        ms("start delay", self.controller.start_delay_ms)?;
        ms("control delay", self.controller.control_delay_ms)?;
        let d = self.demand_flows_per_s;
        range("demand", d, d.is_finite() && d >= 0.0, "flows per second, 0 or more")?;
        let o = &self.orchestrators;
        let mut c = wuos_orchestrator::Config::new("a", "b");
        c.confirm_samples = o.confirm_samples;
        c.drain_ms = o.drain_ms;
        c.ready_timeout_ms = o.ready_timeout_ms;
        c.min_demand_flows = o.min_demand_flows;
        c.validate().map_err(|e| match e {
            wuos_orchestrator::ConfigError::Range { field, value, expected } => {
                ConfigError::Range { field, value, expected }
            }
            other => ConfigError::Range {
                field: "orchestrator",
                value: other.to_string(),
                expected: "a valid orchestrator configuration",
            },
        })?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_pass_and_bad_values_are_named() {
        assert_eq!(SimConfig::default().validate(), Ok(()));
        let e = |f: fn(&mut SimConfig)| {
            let mut c = SimConfig::default();
            f(&mut c);
            c.validate().unwrap_err().to_string()
        };
        assert_eq!(
            e(|c| c.protocol.dead_interval_ms = 500),
            "dead_interval_ms 500 is not longer than hello_interval_ms 1000"
        );
        assert_eq!(
            e(|c| c.default_loss_pct = 100.0),
            "default loss 100 is out of range (0 to less than 100 %)"
        );
        assert_eq!(
            e(|c| c.stagger_ms = 60_001),
            "stagger 60001 is out of range (0-60000 ms)"
        );
        assert_eq!(
            e(|c| c.orchestrators.confirm_samples = 0),
            "confirm_samples 0 is out of range (1-1000)"
        );
        assert_eq!(SimConfig::default().protocol.tick_ms(), 250);
    }
}
