//! What the orchestrator asks for, and what it logs.
//!
//! The `Display` impls are the log lines (and the golden test format):
//!
//! ```text
//! decision voip move datacenter -> local (rule 1): rule 1 viable for 10000 ms (hold 10s); rule 1 "...": ...
//! intent r1: start voip
//! intent r2: route voip 10.255.0.10 -> r1
//! decision pabx restore r2 -> r2: restart: pabx was served at r2; r2 advertises a healthy instance: adopted
//! decision pabx orphan r3 -> r3: restart: pabx instance at r3 is not serving; stopped
//! ```

use std::fmt;
use std::net::Ipv4Addr;

use serde::Serialize;
use wuos_policy::{Placement, RuleRef};

/// One effect, or one log entry.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Output {
    /// Send `intent` to the controller of `router` (this router included).
    Intent {
        /// The router whose controller acts.
        router: String,
        /// What it is to do.
        intent: Intent,
    },
    /// A placement decision, for the log and the admin API.
    Decision(Decision),
    /// An input that did not fit the state (a late ack, an unknown service), for a debug log.
    Ignored {
        /// What and why.
        reason: String,
    },
}

/// What a controller is asked to do.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Intent {
    /// Start an instance of the service; answer with `InstanceReady` or `InstanceFailed`.
    StartInstance {
        /// The service.
        service: String,
    },
    /// Stop the instance of the service.
    StopInstance {
        /// The service.
        service: String,
    },
    /// Steer the service's traffic toward `to_router` (which may be the router itself).
    RouteService {
        /// The service.
        service: String,
        /// Its VIP; `None` when its match lines name none (steer by the match lines).
        vip: Option<Ipv4Addr>,
        /// The router serving it now.
        to_router: String,
    },
}

/// What kind of decision.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DecisionKind {
    /// A move begins (an instance is started, or routes go to the data centre).
    Move,
    /// A move is given up: the new instance failed or was not ready in time.
    Abort,
    /// The instance serving now failed; the router is excluded for a while.
    Failure,
    /// The service left the policy and goes back to the data centre.
    Retire,
    /// After a restart, where the service is served: adopted where it was served before if
    /// that router still advertises a healthy instance, else the data centre.
    Restore,
    /// After a restart, an instance that serves nothing (not where the service is served, or of
    /// a service not in the policy) is stopped.
    Orphan,
}

impl fmt::Display for DecisionKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DecisionKind::Move => "move",
            DecisionKind::Abort => "abort",
            DecisionKind::Failure => "failure",
            DecisionKind::Retire => "retire",
            DecisionKind::Restore => "restore",
            DecisionKind::Orphan => "orphan",
        })
    }
}

/// A placement decision: the log line.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Decision {
    /// When, monotonic ms.
    pub at_ms: u64,
    /// The service.
    pub service: String,
    /// What kind.
    pub kind: DecisionKind,
    /// Where it was served (for a restore: where it was served before the restart; for an
    /// orphan: where the instance runs).
    pub from: Placement,
    /// Where it goes (for an abort: where it was going; for an orphan: where the instance
    /// runs).
    pub to: Placement,
    /// The rule that chose `to`, when a rule did.
    pub rule: Option<RuleRef>,
    /// Why: the evaluator's explanation, and the demand when it mattered.
    pub reason: String,
}

impl fmt::Display for Decision {
    /// `SERVICE KIND FROM -> TO (RULE): REASON`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} {} -> {}", self.service, self.kind, self.from, self.to)?;
        if let Some(rule) = self.rule {
            write!(f, " ({rule})")?;
        }
        write!(f, ": {}", self.reason)
    }
}

impl fmt::Display for Intent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Intent::StartInstance { service } => write!(f, "start {service}"),
            Intent::StopInstance { service } => write!(f, "stop {service}"),
            Intent::RouteService {
                service,
                vip: Some(vip),
                to_router,
            } => write!(f, "route {service} {vip} -> {to_router}"),
            Intent::RouteService {
                service,
                vip: None,
                to_router,
            } => write!(f, "route {service} -> {to_router}"),
        }
    }
}

impl fmt::Display for Output {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Output::Intent { router, intent } => write!(f, "intent {router}: {intent}"),
            Output::Decision(d) => write!(f, "decision {d}"),
            Output::Ignored { reason } => write!(f, "ignored: {reason}"),
        }
    }
}
