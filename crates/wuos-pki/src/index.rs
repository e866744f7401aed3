//! `index.json`: every certificate the CA issued ([`IndexEntry`]), whether revoked, and the
//! number of the last CRL.
//!
//! ```json
//! { "crl_number": 2,
//!   "certificates": [ { "serial": "4f…", "router": "r1", "role": "fog",
//!                       "capabilities": ["orchestrator"],
//!                       "not_before": "2026-05-01T10:00:00Z", "not_after": "2027-05-01T10:00:00Z",
//!                       "revoked_at": null } ] }
//! ```

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use wuos_model::{Role, RouterId};

use crate::identity::{Capability, Identity};

/// One issued certificate.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IndexEntry {
    /// Its serial number, lowercase hex.
    pub serial: String,
    /// The router it was issued to.
    pub router: RouterId,
    /// The router's role.
    pub role: Role,
    /// The router's capabilities.
    pub capabilities: BTreeSet<Capability>,
    /// Start of validity.
    #[serde(with = "time::serde::rfc3339")]
    pub not_before: OffsetDateTime,
    /// End of validity.
    #[serde(with = "time::serde::rfc3339")]
    pub not_after: OffsetDateTime,
    /// When it was revoked, if it was.
    #[serde(with = "time::serde::rfc3339::option")]
    pub revoked_at: Option<OffsetDateTime>,
}

impl IndexEntry {
    /// The identity this certificate carries.
    pub fn identity(&self) -> Identity {
        Identity {
            router: self.router.clone(),
            role: self.role,
            capabilities: self.capabilities.clone(),
            serial: self.serial.clone(),
            not_after: self.not_after,
        }
    }

    /// Whether it has been revoked.
    pub fn is_revoked(&self) -> bool {
        self.revoked_at.is_some()
    }
}

/// The whole of `index.json`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Index {
    /// The number of the CRL in `crl.pem` (it grows by one each time the CRL is signed).
    pub crl_number: u64,
    /// Every issued certificate, oldest first.
    pub certificates: Vec<IndexEntry>,
}

impl Index {
    /// The entries of a router, oldest first.
    pub fn of_router<'a>(&'a self, router: &'a str) -> impl Iterator<Item = &'a IndexEntry> + 'a {
        self.certificates.iter().filter(move |e| e.router.as_str() == router)
    }

    /// The entry with this serial.
    pub fn by_serial(&self, serial: &str) -> Option<&IndexEntry> {
        self.certificates.iter().find(|e| e.serial == serial)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_index_round_trips_through_json() {
        let t = OffsetDateTime::from_unix_timestamp(1_780_000_000).unwrap();
        let index = Index {
            crl_number: 3,
            certificates: vec![IndexEntry {
                serial: "4f01".into(),
                router: RouterId::new("r1").unwrap(),
                role: Role::Dc,
                capabilities: BTreeSet::from([Capability::Controller]),
                not_before: t,
                not_after: t + time::Duration::days(1),
                revoked_at: Some(t),
            }],
        };
        let text = serde_json::to_string_pretty(&index).unwrap();
        assert!(text.contains("\"capabilities\": [\n        \"controller\""), "{text}");
        assert!(text.contains("\"revoked_at\": \"20"), "times are RFC 3339: {text}");
        assert_eq!(serde_json::from_str::<Index>(&text).unwrap(), index);
        assert_eq!(index.of_router("r1").count(), 1);
        assert!(index.by_serial("4f01").unwrap().is_revoked());
    }
}
