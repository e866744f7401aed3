//! Intents between their typed form ([`wuos_controller::Intent`]) and the protocol's messages —
//! the one place they are converted, both ways.

use wuos_controller::Intent;
use wuos_model::{RouterId, ServiceId};
use wuos_proto::pb;
use wuos_proto::pb::intent::Kind;

/// A protocol intent this router does not take, and why.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IntentError {
    #[error("the intent has no kind")]
    NoKind,
    #[error("route intents are not taken: use a service rule")]
    Route,
    #[error("policies are applied through the admin API (wuos policy apply)")]
    Policy,
    #[error("{0}")]
    Id(#[from] wuos_model::IdError),
    #[error("vip {0:?} is not an IPv4 address")]
    Vip(String),
    #[error("an SD-WAN piece is not a controller intent (the edge component takes it)")]
    SdwanPiece,
}

/// The typed form of a protocol intent.
pub fn from_pb(i: &pb::Intent) -> Result<Intent, IntentError> {
    match i.kind.as_ref().ok_or(IntentError::NoKind)? {
        Kind::ServiceInstance(s) => Ok(Intent::Instance {
            service: ServiceId::new(s.service.as_str())?,
            present: s.present,
        }),
        Kind::ServiceRule(r) => Ok(Intent::Rule {
            service: ServiceId::new(r.service.as_str())?,
            vip: r.vip.parse().map_err(|_| IntentError::Vip(r.vip.clone()))?,
            serving: if r.serving_router.is_empty() {
                None
            } else {
                Some(RouterId::new(r.serving_router.as_str())?)
            },
        }),
        Kind::Route(_) => Err(IntentError::Route),
        Kind::Policy(_) => Err(IntentError::Policy),
        Kind::SdwanPiece(_) => Err(IntentError::SdwanPiece),
    }
}

/// The protocol form of intent `id`, sent to `to`.
pub fn to_pb(id: u64, intent: &Intent, to: &RouterId) -> pb::Intent {
    let kind = match intent {
        Intent::Instance { service, present } => Kind::ServiceInstance(pb::ServiceInstanceIntent {
            service: service.to_string(),
            present: *present,
        }),
        Intent::Rule { service, vip, serving } => Kind::ServiceRule(pb::ServiceRuleIntent {
            service: service.to_string(),
            vip: vip.to_string(),
            local: serving.as_ref() == Some(to),
            serving_router: serving.as_ref().map(ToString::to_string).unwrap_or_default(),
        }),
    };
    pb::Intent { id, kind: Some(kind) }
}

impl wuos_model::Classify for IntentError {
    fn class(&self) -> wuos_model::ErrorClass {
        wuos_model::ErrorClass::BadInput
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intents_survive_the_trip_and_bad_ones_say_why() {
        let to = RouterId::new("edge2").unwrap();
        for i in [
            Intent::Instance {
                service: ServiceId::new("pabx").unwrap(),
                present: true,
            },
            Intent::Rule {
                service: ServiceId::new("pabx").unwrap(),
                vip: [10, 255, 0, 10].into(),
                serving: Some(to.clone()),
            },
            Intent::Rule {
                service: ServiceId::new("pabx").unwrap(),
                vip: [10, 255, 0, 10].into(),
                serving: None,
            },
        ] {
            let p = to_pb(7, &i, &to);
            assert_eq!(p.id, 7);
            assert_eq!(from_pb(&p).unwrap(), i);
        }
        let bad = |kind| pb::Intent {
            id: 1,
            kind: Some(kind),
        };
        assert_eq!(
            from_pb(&bad(Kind::ServiceRule(pb::ServiceRuleIntent {
                service: "pabx".into(),
                vip: "nope".into(),
                ..Default::default()
            }))),
            Err(IntentError::Vip("nope".into()))
        );
        assert!(
            from_pb(&bad(Kind::ServiceInstance(pb::ServiceInstanceIntent {
                service: "Bad Name".into(),
                present: true
            })))
            .is_err()
        );
        assert_eq!(from_pb(&pb::Intent { id: 1, kind: None }), Err(IntentError::NoKind));
    }
}
