//! wuosd's configuration: [`wuos_model::daemon`] (one set of structs, read here and written by
//! the lab).

pub use wuos_model::daemon::{
    ConfigError, DaemonConfig as Config, DatapathConfig, DomainsConfig, NeighborConfig, OrchestratorConfig,
    ResourcesConfig, Source,
};
