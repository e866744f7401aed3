//! Intents: what an orchestrator asks of this router's controller.

use std::fmt;
use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};
use wuos_model::{RouterId, ServiceId};

/// What an intent decides; a newer intent with the same key replaces the older.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", content = "service", rename_all = "snake_case")]
pub enum IntentKey {
    /// Whether this router runs an instance of the service.
    Instance(ServiceId),
    /// Where the service's VIP leads.
    Rule(ServiceId),
}

impl fmt::Display for IntentKey {
    /// `instance/pabx`, `rule/pabx` (also the store's key).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IntentKey::Instance(s) => write!(f, "instance/{s}"),
            IntentKey::Rule(s) => write!(f, "rule/{s}"),
        }
    }
}

/// One intent, typed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Intent {
    /// Run (or keep) the one instance of `service` here — the domain is named after the service —
    /// or remove it.
    Instance { service: ServiceId, present: bool },
    /// Route `vip` towards the router serving `service` (this one included); `None`: withdraw
    /// the route.
    Rule {
        service: ServiceId,
        vip: Ipv4Addr,
        serving: Option<RouterId>,
    },
}

impl Intent {
    pub fn key(&self) -> IntentKey {
        match self {
            Intent::Instance { service, .. } => IntentKey::Instance(service.clone()),
            Intent::Rule { service, .. } => IntentKey::Rule(service.clone()),
        }
    }

    /// Whether it removes what its key decides (kept intents are only the others).
    pub fn is_removal(&self) -> bool {
        matches!(
            self,
            Intent::Instance { present: false, .. } | Intent::Rule { serving: None, .. }
        )
    }
}

impl fmt::Display for Intent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Intent::Instance { service, present: true } => write!(f, "start {service}"),
            Intent::Instance {
                service,
                present: false,
            } => write!(f, "stop {service}"),
            Intent::Rule {
                service,
                vip,
                serving: Some(r),
            } => write!(f, "route {service} {vip} -> {r}"),
            Intent::Rule {
                service,
                vip,
                serving: None,
            } => write!(f, "withdraw {service} {vip}"),
        }
    }
}

/// Who asked, so the answer goes back: a Control session (numbered by the daemon) and the
/// intent's id in it. The local orchestrator is session 0.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Origin {
    pub session: u64,
    pub intent_id: u64,
}
