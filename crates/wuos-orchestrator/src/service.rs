//! One service's placement state: where it is served, a move in progress, hysteresis counters.
//!
//! ```text
//!            decide (telemetry)               InstanceReady(new)
//!   Stable(at) ──────────────► Starting(new) ───────────────────► Draining(old → new)
//!     ▲   │  to the data centre: routes now    │ InstanceFailed /            │ drain over:
//!     │   └──────────────────────────────────────────────────────►           │ stop old (never
//!     │                                         │ ready timeout:             │ the data centre)
//!     │◄──── abort: stop new, stay at old ──────┘                            │
//!     └◄─────────────────────────────────────────── Stable(new) ◄────────────┘
//!
//!   Restore (after a restart, before any telemetry): Stable(datacenter) ──► Stable(persisted
//!   router) if it advertises a ready instance, else Stable(datacenter); routes announced at
//!   the next telemetry.
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::Ipv4Addr;

use wuos_policy::{Placement, RuleRef};

/// Where a service is in its placement life cycle.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Served at `at`; decisions are made only in this phase.
    Stable {
        /// Where.
        at: Placement,
    },
    /// An instance is starting at `to`; traffic still goes to `from`.
    Starting {
        /// Serving now.
        from: Placement,
        /// Starting there.
        to: Placement,
        /// When the start was asked for.
        since_ms: u64,
        /// The rule that chose `to`.
        rule: RuleRef,
    },
    /// Routes point to `new`; the instance at `old` finishes its flows until `until_ms`.
    Draining {
        /// Draining (stopped at the end unless it is the data centre).
        old: Placement,
        /// Serving now.
        new: Placement,
        /// When `old` is stopped.
        until_ms: u64,
    },
}

impl Phase {
    /// Where the service's traffic goes now.
    pub fn serving(&self) -> &Placement {
        match self {
            Phase::Stable { at } => at,
            Phase::Starting { from, .. } => from,
            Phase::Draining { new, .. } => new,
        }
    }
}

impl fmt::Display for Phase {
    /// `stable at local`, `starting r2 (from datacenter since 1000)`, `draining local (now at r2
    /// until 5000)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Phase::Stable { at } => write!(f, "stable at {at}"),
            Phase::Starting { from, to, since_ms, .. } => write!(f, "starting {to} (from {from} since {since_ms})"),
            Phase::Draining { old, new, until_ms } => write!(f, "draining {old} (now at {new} until {until_ms})"),
        }
    }
}

/// One service's state in the orchestrator.
#[derive(Clone, Debug, PartialEq)]
pub struct ServiceState {
    pub(crate) phase: Phase,
    /// False once the service left the policy: it is being moved back to the data centre.
    pub(crate) in_policy: bool,
    pub(crate) vip: Option<Ipv4Addr>,
    /// Consecutive samples where the serving placement was not viable.
    pub(crate) unviable_samples: u32,
    /// Since when an earlier rule than the serving one has been viable, continuously.
    pub(crate) better_since_ms: Option<u64>,
    /// For how many consecutive samples.
    pub(crate) better_samples: u32,
    /// Routers told where the service is; `None` while no router was told since the
    /// orchestrator started (traffic goes to the data centre by default, or after a restore
    /// wherever the routers were told before the restart): the next telemetry tells them all.
    pub(crate) routed: Option<BTreeSet<String>>,
    /// Routers not to choose, until when.
    pub(crate) backoff: BTreeMap<String, u64>,
}

impl ServiceState {
    /// A service served by the data centre, as every service starts.
    pub(crate) fn new(vip: Option<Ipv4Addr>) -> Self {
        ServiceState {
            phase: Phase::Stable {
                at: Placement::Datacenter,
            },
            in_policy: true,
            vip,
            unviable_samples: 0,
            better_since_ms: None,
            better_samples: 0,
            routed: None,
            backoff: BTreeMap::new(),
        }
    }

    /// Where it is in its life cycle.
    pub fn phase(&self) -> &Phase {
        &self.phase
    }

    /// Whether it is in the current policy (false while it is retired to the data centre).
    pub fn in_policy(&self) -> bool {
        self.in_policy
    }

    /// Its VIP, from the policy.
    pub fn vip(&self) -> Option<Ipv4Addr> {
        self.vip
    }

    /// Routers it will not be placed on, and until when (ms).
    pub fn backoff(&self) -> &BTreeMap<String, u64> {
        &self.backoff
    }

    /// Forgets the hysteresis counters (after a move, an abort or a new policy).
    pub(crate) fn reset_counters(&mut self) {
        self.unviable_samples = 0;
        self.better_since_ms = None;
        self.better_samples = 0;
    }
}
