//! Errors across gRPC: an [`ErrorClass`] becomes a gRPC status code here and only here, and a
//! status received becomes a classified [`RemoteError`].

use tonic::{Code, Status};
use wuos_model::{Classify, ErrorClass, RemoteError};

/// The gRPC code of an error class.
pub fn code_of(class: ErrorClass) -> Code {
    match class {
        ErrorClass::BadInput => Code::InvalidArgument,
        ErrorClass::NotFound => Code::NotFound,
        ErrorClass::Conflict => Code::FailedPrecondition,
        ErrorClass::Unavailable => Code::Unavailable,
        ErrorClass::Internal => Code::Internal,
    }
}

/// The class of a gRPC code (codes wuos does not send are mapped to the nearest class).
pub fn class_of(code: Code) -> ErrorClass {
    match code {
        Code::InvalidArgument | Code::OutOfRange => ErrorClass::BadInput,
        Code::NotFound => ErrorClass::NotFound,
        Code::FailedPrecondition | Code::AlreadyExists | Code::Aborted | Code::ResourceExhausted => {
            ErrorClass::Conflict
        }
        Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled => ErrorClass::Unavailable,
        Code::Ok
        | Code::Unknown
        | Code::PermissionDenied
        | Code::Unimplemented
        | Code::Internal
        | Code::DataLoss
        | Code::Unauthenticated => ErrorClass::Internal,
    }
}

/// The status that carries `e` back to a client: its class as the code, its message (with its
/// sources) as the message.
pub fn to_status<E: Classify + std::error::Error>(e: &E) -> Status {
    let mut message = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !message.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        source = s.source();
    }
    Status::new(code_of(e.class()), message)
}

/// What a client got back.
pub fn from_status(s: &Status) -> RemoteError {
    RemoteError {
        class: class_of(s.code()),
        message: s.message().to_string(),
    }
}

impl Classify for crate::ValidateError {
    fn class(&self) -> ErrorClass {
        ErrorClass::BadInput
    }
}

impl Classify for crate::InstanceError {
    fn class(&self) -> ErrorClass {
        ErrorClass::BadInput
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_class_survives_the_trip_through_a_status() {
        for class in ErrorClass::ALL {
            let e = RemoteError {
                class,
                message: "it went wrong".into(),
            };
            let back = from_status(&to_status(&e));
            assert_eq!(back, e, "{class}");
        }
    }
}
