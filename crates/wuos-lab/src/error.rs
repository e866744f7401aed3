//! Errors of lab operations.

use wuos_southbound::cgroup::CgroupError;
use wuos_southbound::namespaces::NamespaceError;
use wuos_southbound::netlink::NetlinkError;
use wuos_southbound::netns::NetnsError;
use wuos_southbound::offloads::OffloadError;
use wuos_southbound::sysctls::SysctlError;
use wuos_southbound::tc::TcError;

use crate::plan::{Op, StageName};
use crate::state::StateError;

#[derive(Debug, thiserror::Error)]
pub enum LabError {
    #[error("{0}")]
    BadName(String),
    #[error("lab {0} already exists; take it down first with `wuos lab down {0}`")]
    Exists(String),
    #[error("no lab named {name}{}", known_labs(.known))]
    NoSuchLab { name: String, known: Vec<String> },
    #[error("no lab is up; start one with `wuos lab up <file|generator>`")]
    NoLabs,
    #[error("several labs are up ({}); name one", .0.join(", "))]
    Ambiguous(Vec<String>),
    #[error("lab {lab} has no node {node}{}", suggest(.known))]
    NoSuchNode {
        lab: String,
        node: String,
        known: Vec<String>,
    },
    #[error("lab {lab} has no link between {a} and {b}")]
    NoSuchLink { lab: String, a: String, b: String },
    #[error("lab {lab} has no underlay {name:?}; its underlays are: {known}")]
    NoSuchUnderlay { lab: String, name: String, known: String },
    #[error("invalid topology: {0}")]
    Topology(String),
    #[error("this needs root (CAP_NET_ADMIN and CAP_SYS_ADMIN): run it as root")]
    NotRoot,
    #[error("host limits: {0}")]
    Host(String),
    #[error("invalid link change: {0}")]
    BadChange(String),
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Netns(#[from] NetnsError),
    #[error(transparent)]
    Netlink(#[from] NetlinkError),
    #[error(transparent)]
    Cgroup(#[from] CgroupError),
    #[error(transparent)]
    Tc(#[from] TcError),
    #[error(transparent)]
    Namespace(#[from] NamespaceError),
    #[error(transparent)]
    Sysctl(#[from] SysctlError),
    #[error(transparent)]
    Offload(#[from] OffloadError),
    #[error(transparent)]
    Execute(#[from] ExecError),
    #[error("{what}: {source}")]
    Io { what: String, source: std::io::Error },
    /// The lab has no SD-WAN controller (no underlays in its topology), so no NBI or token.
    #[error(
        "lab {lab} has no SD-WAN controller: its topology labels no link or router with an underlay \
         (try a generator such as sdwan:3:2)"
    )]
    NoSdwanController { lab: String },
    #[error("router daemons: {0}")]
    Daemons(String),
    #[error("cannot start the async runtime: {0}")]
    Runtime(std::io::Error),
    #[error("lab up failed ({cause}); everything it had made was removed{}", .logs.as_ref().map(|l| format!("; its logs are kept in {}", l.display())).unwrap_or_default())]
    RolledBack {
        cause: Box<LabError>,
        logs: Option<std::path::PathBuf>,
    },
}

fn known_labs(known: &[String]) -> String {
    if known.is_empty() {
        "; no lab is up".into()
    } else {
        format!("; labs that are up: {}", known.join(", "))
    }
}

fn suggest(known: &[String]) -> String {
    if known.len() <= 12 {
        format!("; its nodes are {}", known.join(", "))
    } else {
        format!("; it has {} nodes ({}, …)", known.len(), known[..6].join(", "))
    }
}

impl wuos_model::Classify for LabError {
    fn class(&self) -> wuos_model::ErrorClass {
        use wuos_model::ErrorClass as C;
        match self {
            LabError::BadName(_) | LabError::Topology(_) | LabError::BadChange(_) => C::BadInput,
            LabError::Ambiguous(_) => C::BadInput,
            LabError::Exists(_) => C::Conflict,
            LabError::NoSuchLab { .. }
            | LabError::NoLabs
            | LabError::NoSuchNode { .. }
            | LabError::NoSuchLink { .. }
            | LabError::NoSuchUnderlay { .. }
            | LabError::NoSdwanController { .. } => C::NotFound,
            LabError::NotRoot | LabError::Host(_) => C::Unavailable,
            LabError::Netns(NetnsError::Exists { .. })
            | LabError::Namespace(NamespaceError::Netns(NetnsError::Exists { .. })) => C::Conflict,
            LabError::RolledBack { cause, .. } => cause.class(),
            LabError::Execute(e) => e.cause.class(),
            LabError::State(_)
            | LabError::Netns(_)
            | LabError::Netlink(_)
            | LabError::Cgroup(_)
            | LabError::Tc(_)
            | LabError::Namespace(_)
            | LabError::Sysctl(_)
            | LabError::Offload(_)
            | LabError::Io { .. }
            | LabError::Daemons(_)
            | LabError::Runtime(_) => C::Internal,
        }
    }
}

/// A plan that failed part way, and what was undone.
#[derive(Debug, thiserror::Error)]
#[error("{stage}: {op}: {cause}{}", rollback_note(.rolled_back, .rollback_failures))]
pub struct ExecError {
    pub stage: StageName,
    /// The op that failed.
    pub op: String,
    pub cause: Box<LabError>,
    /// The ops that undid what had been made, in the order they ran.
    pub rolled_back: Vec<Op>,
    /// Undo ops that failed, with why.
    pub rollback_failures: Vec<String>,
}

fn rollback_note(undone: &[Op], failed: &[String]) -> String {
    match (undone.len(), failed.is_empty()) {
        (0, _) => String::new(),
        (n, true) => format!(" (undid {n} changes)"),
        (n, false) => format!(" (undid {n} changes; these failed: {})", failed.join("; ")),
    }
}
