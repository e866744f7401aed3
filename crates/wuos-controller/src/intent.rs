//! Intents: what an orchestrator asks of this router's controller.

use std::fmt;
use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};
use wuos_model::{RouterId, ServiceId};

/// What an intent decides, and who asked (the orchestrator's router): a newer intent with the
/// same key replaces the older. Which other keys it replaces depends on the router's region
/// ([`crate::region`]).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum IntentKey {
    /// Whether `sender` wants this router to run an instance of the service.
    Instance {
        service: ServiceId,
        /// `None`: persisted before senders were recorded.
        sender: Option<RouterId>,
    },
    /// Where `sender` has the service's VIP lead.
    Rule {
        service: ServiceId,
        /// `None`: persisted before senders were recorded.
        sender: Option<RouterId>,
    },
}

impl IntentKey {
    pub fn service(&self) -> &ServiceId {
        match self {
            IntentKey::Instance { service, .. } | IntentKey::Rule { service, .. } => service,
        }
    }

    pub fn sender(&self) -> Option<&RouterId> {
        match self {
            IntentKey::Instance { sender, .. } | IntentKey::Rule { sender, .. } => sender.as_ref(),
        }
    }
}

impl fmt::Display for IntentKey {
    /// `instance/pabx@foga`, `rule/pabx@foga` (also the store's key); without a sender
    /// `instance/pabx`, `rule/pabx`, as keys were before senders were recorded.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self {
            IntentKey::Instance { .. } => "instance",
            IntentKey::Rule { .. } => "rule",
        };
        write!(f, "{kind}/{}", self.service())?;
        if let Some(s) = self.sender() {
            write!(f, "@{s}")?;
        }
        Ok(())
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
    /// Its key when `sender` asks for it.
    pub fn key(&self, sender: Option<&RouterId>) -> IntentKey {
        let sender = sender.cloned();
        match self {
            Intent::Instance { service, .. } => IntentKey::Instance {
                service: service.clone(),
                sender,
            },
            Intent::Rule { service, .. } => IntentKey::Rule {
                service: service.clone(),
                sender,
            },
        }
    }

    pub fn service(&self) -> &ServiceId {
        match self {
            Intent::Instance { service, .. } | Intent::Rule { service, .. } => service,
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

/// An intent in force and who asked for it: what the store keeps (as JSON, the intent's fields
/// and `sender`). A value persisted before senders were recorded (an intent alone) loads with
/// `sender: None`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Kept {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sender: Option<RouterId>,
    #[serde(flatten)]
    pub intent: Intent,
}

impl Kept {
    pub fn key(&self) -> IntentKey {
        self.intent.key(self.sender.as_ref())
    }
}

/// Who asked, so the answer goes back: a Control session (numbered by the daemon) and the
/// intent's id in it. The local orchestrator is session 0.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Origin {
    pub session: u64,
    pub intent_id: u64,
}
