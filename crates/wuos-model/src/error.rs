//! One classification of every wuos error, from which each transport derives its outcome.
//!
//! Every error type of wuos implements [`Classify`]. What a caller sees is derived from the class,
//! each mapping in exactly one place: the exit code of the CLI here ([`ErrorClass::exit_code`]),
//! the HTTP status here ([`ErrorClass::http_status`]), the gRPC status in
//! `wuos_proto::status` (the model does not depend on tonic).

use std::fmt;

use serde::{Deserialize, Serialize};

/// What kind of failure an error is, as a caller must react to it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorClass {
    /// The request is wrong: malformed, out of range, refused by validation or admission. Fix it
    /// and ask again.
    BadInput,
    /// What the request names does not exist (a lab, router, domain, service, orchestrator).
    NotFound,
    /// The request is well formed but conflicts with the state (a name in use, a domain that is
    /// not in a state the request applies to).
    Conflict,
    /// A peer or resource is not there just now (a daemon not answering, a router out of view);
    /// asking again later may work.
    Unavailable,
    /// Something failed that the caller cannot fix (the kernel refused, a store error, a bug).
    Internal,
}

impl ErrorClass {
    /// Every class, in documentation order.
    pub const ALL: [ErrorClass; 5] = [
        ErrorClass::BadInput,
        ErrorClass::NotFound,
        ErrorClass::Conflict,
        ErrorClass::Unavailable,
        ErrorClass::Internal,
    ];

    /// The exit code of the `wuos` command for an error of this class.
    pub fn exit_code(self) -> u8 {
        match self {
            ErrorClass::Internal => 1,
            ErrorClass::BadInput => 3,
            ErrorClass::NotFound => 4,
            ErrorClass::Conflict => 5,
            ErrorClass::Unavailable => 6,
        }
    }

    /// The HTTP status of a REST answer for an error of this class.
    pub fn http_status(self) -> u16 {
        match self {
            ErrorClass::BadInput => 400,
            ErrorClass::NotFound => 404,
            ErrorClass::Conflict => 409,
            ErrorClass::Unavailable => 503,
            ErrorClass::Internal => 500,
        }
    }

    /// The snake_case name, as in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorClass::BadInput => "bad_input",
            ErrorClass::NotFound => "not_found",
            ErrorClass::Conflict => "conflict",
            ErrorClass::Unavailable => "unavailable",
            ErrorClass::Internal => "internal",
        }
    }
}

impl fmt::Display for ErrorClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An error that knows its [`ErrorClass`].
pub trait Classify {
    /// How a caller must take this error.
    fn class(&self) -> ErrorClass;
}

/// An error that crossed a process boundary: its class and its message (what a gRPC status or a
/// REST error body carries back to the client).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct RemoteError {
    /// Its class, as the far side gave it.
    pub class: ErrorClass,
    /// Its message, as the far side gave it.
    pub message: String,
}

impl Classify for RemoteError {
    fn class(&self) -> ErrorClass {
        self.class
    }
}

impl Classify for crate::UnitError {
    fn class(&self) -> ErrorClass {
        ErrorClass::BadInput
    }
}

impl Classify for crate::ids::IdError {
    fn class(&self) -> ErrorClass {
        ErrorClass::BadInput
    }
}

impl Classify for crate::TopologyError {
    fn class(&self) -> ErrorClass {
        ErrorClass::BadInput
    }
}

impl Classify for crate::PlanError {
    fn class(&self) -> ErrorClass {
        ErrorClass::BadInput
    }
}

impl Classify for crate::GenerateError {
    fn class(&self) -> ErrorClass {
        ErrorClass::BadInput
    }
}

impl Classify for crate::domain::DomainError {
    fn class(&self) -> ErrorClass {
        ErrorClass::BadInput
    }
}

impl Classify for crate::admission::AdmissionError {
    fn class(&self) -> ErrorClass {
        match self {
            crate::admission::AdmissionError::AlreadyAdmitted { .. } => ErrorClass::Conflict,
            // A request that does not fit, or a budget or reservation that makes no sense.
            _ => ErrorClass::BadInput,
        }
    }
}

impl Classify for crate::catalog::CatalogError {
    fn class(&self) -> ErrorClass {
        match *self.kind {
            crate::catalog::CatalogErrorKind::UnknownService { .. } => ErrorClass::NotFound,
            _ => ErrorClass::BadInput,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_class_has_its_own_exit_code_and_http_status() {
        let codes: std::collections::BTreeSet<u8> = ErrorClass::ALL.iter().map(|c| c.exit_code()).collect();
        let http: std::collections::BTreeSet<u16> = ErrorClass::ALL.iter().map(|c| c.http_status()).collect();
        assert_eq!(codes.len(), 5);
        assert_eq!(http.len(), 5);
        assert_eq!(ErrorClass::BadInput.exit_code(), 3, "scripts rely on 3 for bad input");
        assert_eq!(ErrorClass::NotFound.exit_code(), 4, "scripts rely on 4 for not found");
        assert_eq!(serde_json::to_string(&ErrorClass::BadInput).unwrap(), "\"bad_input\"");
    }
}
