//! What a router certificate says: [`Identity`] (router id, role, capabilities, serial, expiry),
//! how it is written into a certificate ([`san_uris`]) and read back ([`Identity::from_der`]).
//!
//! The identity lives in the certificate's subjectAltName as URIs, one fact each:
//!
//! ```text
//! urn:wuos:router:r1          exactly one: the router id (also the subject's CN)
//! urn:wuos:role:fog           exactly one: edge, fog, dc or host
//! urn:wuos:may:orchestrator   zero or more: the capabilities
//! urn:wuos:may:controller
//! ```
//!
//! A `urn:wuos:may:` value this version does not know is ignored (never granted), so a newer CA
//! can add capabilities without locking older routers out.

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use wuos_model::{IdError, Role, RouterId};
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

use crate::refusal::{Refusal, Refused};

/// Prefix of the SAN URI that carries the router id.
pub const ROUTER_URI: &str = "urn:wuos:router:";
/// Prefix of the SAN URI that carries the role.
pub const ROLE_URI: &str = "urn:wuos:role:";
/// Prefix of the SAN URIs that carry the capabilities.
pub const MAY_URI: &str = "urn:wuos:may:";

/// What a router may do beyond being a neighbor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Capability {
    /// May send service-placement intents to controllers.
    Orchestrator,
    /// The SD-WAN controller: may send overlay intents.
    Controller,
}

impl Capability {
    /// Every capability, in documentation order.
    pub const ALL: [Capability; 2] = [Capability::Orchestrator, Capability::Controller];

    /// The lowercase name used in certificates, files and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Capability::Orchestrator => "orchestrator",
            Capability::Controller => "controller",
        }
    }
}

impl fmt::Display for Capability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A capability name that is not one.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown capability {0:?}; fix: use orchestrator or controller")]
pub struct CapabilityError(pub String);

impl FromStr for Capability {
    type Err = CapabilityError;

    fn from_str(s: &str) -> Result<Self, CapabilityError> {
        Capability::ALL
            .into_iter()
            .find(|c| c.as_str() == s)
            .ok_or_else(|| CapabilityError(s.to_string()))
    }
}

/// Who a certificate says its holder is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    /// The router id (SAN `urn:wuos:router:…`, and the subject's CN).
    pub router: RouterId,
    /// Its role (SAN `urn:wuos:role:…`).
    pub role: Role,
    /// What it may do (SANs `urn:wuos:may:…`).
    pub capabilities: BTreeSet<Capability>,
    /// The certificate's serial number, lowercase hex without leading zero bytes.
    pub serial: String,
    /// When the certificate expires.
    #[serde(with = "time::serde::rfc3339")]
    pub not_after: OffsetDateTime,
}

/// Why a certificate carries no (or no consistent) wuos identity.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    /// Not a DER X.509 certificate.
    #[error("not an X.509 certificate ({0})")]
    NotACertificate(String),
    /// The subjectAltName extension is malformed.
    #[error("its subjectAltName extension cannot be read ({0})")]
    BadSan(String),
    /// No `urn:wuos:router:` URI.
    #[error("it names no router (no {ROUTER_URI}… URI in its subjectAltName)")]
    NoRouter,
    /// Several `urn:wuos:router:` URIs.
    #[error("it names several routers ({0:?})")]
    SeveralRouters(Vec<String>),
    /// The router id is not a valid one.
    #[error("it names an invalid router id: {0}")]
    BadRouter(IdError),
    /// No `urn:wuos:role:` URI.
    #[error("it has no role (no {ROLE_URI}… URI in its subjectAltName)")]
    NoRole,
    /// Several roles, or one that is not a role.
    #[error("its role {0:?} is not one of edge, fog, dc, host (or it has several)")]
    BadRole(String),
    /// The subject's CN is not the router id of the SAN.
    #[error("its subject CN {cn:?} is not its router id {router:?}")]
    CommonNameMismatch {
        /// The CN.
        cn: String,
        /// The router id of the SAN.
        router: String,
    },
}

impl Identity {
    /// Reads the identity of a DER certificate. Only reads: it checks no signature, validity or
    /// revocation (the TLS verifiers do that before they call this).
    pub fn from_der(der: &[u8]) -> Result<Identity, IdentityError> {
        let (_, cert) = X509Certificate::from_der(der).map_err(|e| IdentityError::NotACertificate(e.to_string()))?;
        let mut routers = Vec::new();
        let mut roles = Vec::new();
        let mut capabilities = BTreeSet::new();
        let san = cert
            .subject_alternative_name()
            .map_err(|e| IdentityError::BadSan(e.to_string()))?;
        for name in san.iter().flat_map(|ext| ext.value.general_names.iter()) {
            let GeneralName::URI(uri) = name else { continue };
            if let Some(r) = uri.strip_prefix(ROUTER_URI) {
                routers.push(r.to_string());
            } else if let Some(r) = uri.strip_prefix(ROLE_URI) {
                roles.push(r.to_string());
            } else if let Some(c) = uri.strip_prefix(MAY_URI) {
                // Unknown capabilities are not granted (see the module docs).
                if let Ok(c) = c.parse() {
                    capabilities.insert(c);
                }
            }
        }
        let router = match routers.as_slice() {
            [] => return Err(IdentityError::NoRouter),
            [r] => RouterId::new(r.as_str()).map_err(IdentityError::BadRouter)?,
            _ => return Err(IdentityError::SeveralRouters(routers)),
        };
        let role = match roles.as_slice() {
            [] => return Err(IdentityError::NoRole),
            [r] => r.parse::<Role>().map_err(|_| IdentityError::BadRole(r.clone()))?,
            _ => return Err(IdentityError::BadRole(roles.join(","))),
        };
        if let Some(cn) = cert.subject().iter_common_name().next() {
            let cn = cn.as_str().unwrap_or("");
            if cn != router.as_str() {
                return Err(IdentityError::CommonNameMismatch {
                    cn: cn.to_string(),
                    router: router.to_string(),
                });
            }
        }
        Ok(Identity {
            router,
            role,
            capabilities,
            serial: serial_hex(cert.raw_serial()),
            not_after: cert.validity().not_after.to_datetime(),
        })
    }

    /// Whether this identity may do `c`.
    pub fn may(&self, c: Capability) -> bool {
        self.capabilities.contains(&c)
    }

    /// Checks that a peer which claims to be `claimed` (in the protocol's first message) is the
    /// router its certificate names. A server learns the client's claim only after the
    /// handshake, so the daemon calls this; a mismatch is [`Refusal::IdentityMismatch`].
    pub fn check_claim(&self, claimed: &str) -> Result<(), Refused> {
        if claimed == self.router.as_str() {
            Ok(())
        } else {
            Err(Refused::new(
                Refusal::IdentityMismatch,
                format!(
                    "the peer claims to be {claimed:?} but its certificate (serial {}) is {:?}'s",
                    self.serial,
                    self.router.as_str()
                ),
            ))
        }
    }
}

/// The subjectAltName URIs that encode an identity, in the order they are written.
pub fn san_uris(router: &RouterId, role: Role, capabilities: &BTreeSet<Capability>) -> Vec<String> {
    let mut uris = vec![format!("{ROUTER_URI}{router}"), format!("{ROLE_URI}{role}")];
    uris.extend(capabilities.iter().map(|c| format!("{MAY_URI}{c}")));
    uris
}

/// A DER serial number as lowercase hex, without leading zero bytes (`"0"` for zero).
pub fn serial_hex(raw: &[u8]) -> String {
    match raw.iter().position(|b| *b != 0) {
        Some(i) => raw[i..].iter().map(|b| format!("{b:02x}")).collect(),
        None => "0".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert_with(sans: &[&str], cn: &str) -> Vec<u8> {
        let mut p = rcgen::CertificateParams::default();
        p.distinguished_name.push(rcgen::DnType::CommonName, cn);
        p.subject_alt_names = sans
            .iter()
            .map(|s| rcgen::SanType::URI((*s).try_into().unwrap()))
            .collect();
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        p.self_signed(&key).unwrap().der().to_vec()
    }

    #[test]
    fn an_identity_round_trips_through_a_certificate() {
        let router = RouterId::new("edge_1.a-b").unwrap();
        let caps = BTreeSet::from([Capability::Controller, Capability::Orchestrator]);
        let uris = san_uris(&router, Role::Fog, &caps);
        let uris: Vec<&str> = uris.iter().map(String::as_str).collect();
        let id = Identity::from_der(&cert_with(&uris, "edge_1.a-b")).unwrap();
        assert_eq!(id.router, router);
        assert_eq!(id.role, Role::Fog);
        assert_eq!(id.capabilities, caps);
        assert!(id.may(Capability::Controller));
        assert!(!id.serial.is_empty(), "a serial is read");
    }

    #[test]
    fn unknown_capabilities_are_not_granted() {
        let id = Identity::from_der(&cert_with(
            &[
                "urn:wuos:router:r1",
                "urn:wuos:role:edge",
                "urn:wuos:may:fly",
                "https://x",
            ],
            "r1",
        ))
        .unwrap();
        assert!(
            id.capabilities.is_empty(),
            "expected no capability, got {:?}",
            id.capabilities
        );
    }

    #[test]
    fn certificates_without_a_consistent_identity_are_refused() {
        let cases: [(&[&str], &str, &str); 6] = [
            (&["urn:wuos:role:edge"], "r1", "names no router"),
            (&["urn:wuos:router:r1"], "r1", "has no role"),
            (
                &["urn:wuos:router:r1", "urn:wuos:router:r2", "urn:wuos:role:dc"],
                "r1",
                "several routers",
            ),
            (&["urn:wuos:router:r 1", "urn:wuos:role:dc"], "r 1", "invalid router id"),
            (
                &["urn:wuos:router:r1", "urn:wuos:role:core"],
                "r1",
                "\"core\" is not one of",
            ),
            (
                &["urn:wuos:router:r1", "urn:wuos:role:dc"],
                "r2",
                "CN \"r2\" is not its router id",
            ),
        ];
        for (sans, cn, want) in cases {
            let e = Identity::from_der(&cert_with(sans, cn)).unwrap_err().to_string();
            assert!(e.contains(want), "for {sans:?}: expected {want:?} in {e:?}");
        }
        assert!(matches!(
            Identity::from_der(b"junk"),
            Err(IdentityError::NotACertificate(_))
        ));
    }

    #[test]
    fn a_claim_must_match_the_certificate() {
        let id = Identity::from_der(&cert_with(&["urn:wuos:router:r1", "urn:wuos:role:edge"], "r1")).unwrap();
        assert!(id.check_claim("r1").is_ok());
        let e = id.check_claim("r2").unwrap_err();
        assert_eq!(e.reason, Refusal::IdentityMismatch);
        assert!(e.to_string().contains("\"r2\""), "the message names the claim: {e}");
    }

    #[test]
    fn capabilities_parse_and_print() {
        for c in Capability::ALL {
            assert_eq!(c.as_str().parse::<Capability>().unwrap(), c);
        }
        let e = "admin".parse::<Capability>().unwrap_err().to_string();
        assert!(
            e.contains("\"admin\"") && e.contains("orchestrator or controller"),
            "{e}"
        );
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]

        /// Any valid router id, role and capability set written into a certificate reads back
        /// the same.
        #[test]
        fn any_identity_round_trips(
            router in "[A-Za-z0-9._-]{1,64}",
            role in 0..Role::ALL.len(),
            caps in proptest::collection::btree_set(0..Capability::ALL.len(), 0..=2),
        ) {
            let router = RouterId::new(router).unwrap();
            let role = Role::ALL[role];
            let caps: BTreeSet<Capability> = caps.into_iter().map(|i| Capability::ALL[i]).collect();
            let uris = san_uris(&router, role, &caps);
            let uris: Vec<&str> = uris.iter().map(String::as_str).collect();
            let id = Identity::from_der(&cert_with(&uris, router.as_str())).unwrap();
            proptest::prop_assert_eq!((id.router, id.role, id.capabilities), (router, role, caps));
        }
    }

    #[test]
    fn serials_print_without_leading_zeros() {
        assert_eq!(serial_hex(&[0, 0x8f, 0x01]), "8f01");
        assert_eq!(serial_hex(&[0]), "0");
    }
}
