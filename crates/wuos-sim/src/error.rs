//! What can stop a simulation from starting: [`SimError`], classified for the CLI's exit codes.

use wuos_model::{Classify, ErrorClass};

use crate::config::ConfigError;
use crate::events::EventsError;

/// A simulation that cannot be set up.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// A setting out of range.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The events file.
    #[error(transparent)]
    Events(#[from] EventsError),
    /// A router's name that is not a router id (the protocol and the controllers need one).
    #[error("the topology's {error}; rename the node")]
    RouterName { name: String, error: wuos_model::IdError },
    /// The topology has no router.
    #[error("the topology has no routers; give it at least one node")]
    Empty,
    /// An orchestrator named that the topology does not have.
    #[error("{origin}: orchestrator {name:?} is not a router of the topology")]
    UnknownOrchestrator {
        name: String,
        /// Where it was named (`--orchestrators`).
        origin: String,
    },
    /// A policy applied to a router that runs no orchestrator.
    #[error(
        "{origin}: {name} runs no orchestrator; apply policies to the orchestrators (--orchestrators, default: the fog routers)"
    )]
    NotAnOrchestrator {
        name: String,
        /// `FILE:LINE` of the event.
        origin: String,
    },
    /// An orchestrator's configuration (e.g. it is the data centre itself).
    #[error("orchestrator on {router}: {error}")]
    Orchestrator {
        router: String,
        error: wuos_orchestrator::ConfigError,
    },
}

impl Classify for SimError {
    fn class(&self) -> ErrorClass {
        match self {
            SimError::Events(e) => e.class(),
            SimError::UnknownOrchestrator { .. } => ErrorClass::NotFound,
            _ => ErrorClass::BadInput,
        }
    }
}
