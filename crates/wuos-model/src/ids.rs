//! Typed identifiers: [`RouterId`] and [`ServiceId`].
//!
//! Both are checked when made (from a string, from TOML or JSON), so code that holds one never
//! re-checks it, and a router id cannot be passed where a service is meant. Both compare, hash and
//! order as their text and borrow as `str`, so maps keyed by them are looked up with a `&str`.

use std::borrow::Borrow;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::domain::domain_name_problem;

/// Longest router id.
pub const MAX_ROUTER_ID_LEN: usize = 64;

/// A name that is not a valid id, and why.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{what} {value:?} is not valid: {reason}")]
pub struct IdError {
    /// `"router id"` or `"service name"`.
    pub what: &'static str,
    /// The text as given.
    pub value: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

/// A router's id: 1–64 of `A-Z a-z 0-9 . _ -` (the protocol's sender and origin field, a lab
/// node's name).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct RouterId(String);

/// A catalog service's name (and the name of the domain that runs its one instance on a
/// router): `[a-z0-9][a-z0-9-]*`, at most 24 characters.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ServiceId(String);

/// Why `id` is not a router id, if it is not.
pub fn router_id_problem(id: &str) -> Option<&'static str> {
    if id.is_empty() {
        Some("it is empty")
    } else if id.len() > MAX_ROUTER_ID_LEN {
        Some("it is longer than 64 bytes")
    } else if !id
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        Some("use only letters, digits, '.', '_' and '-'")
    } else {
        None
    }
}

macro_rules! id_type {
    ($t:ident, $what:literal, $check:path) => {
        impl $t {
            /// Checks `s` and makes the id.
            pub fn new(s: impl Into<String>) -> Result<Self, IdError> {
                let s = s.into();
                match $check(&s) {
                    None => Ok($t(s)),
                    Some(reason) => Err(IdError {
                        what: $what,
                        value: s,
                        reason,
                    }),
                }
            }

            /// The id as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl FromStr for $t {
            type Err = IdError;

            fn from_str(s: &str) -> Result<Self, IdError> {
                $t::new(s)
            }
        }

        impl TryFrom<String> for $t {
            type Error = IdError;

            fn try_from(s: String) -> Result<Self, IdError> {
                $t::new(s)
            }
        }

        impl TryFrom<&str> for $t {
            type Error = IdError;

            fn try_from(s: &str) -> Result<Self, IdError> {
                $t::new(s)
            }
        }

        impl From<$t> for String {
            fn from(id: $t) -> String {
                id.0
            }
        }

        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $t {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl Borrow<str> for $t {
            fn borrow(&self) -> &str {
                &self.0
            }
        }

        impl PartialEq<str> for $t {
            fn eq(&self, other: &str) -> bool {
                self.0 == other
            }
        }

        impl PartialEq<&str> for $t {
            fn eq(&self, other: &&str) -> bool {
                self.0 == *other
            }
        }

        impl PartialEq<$t> for String {
            fn eq(&self, other: &$t) -> bool {
                *self == other.0
            }
        }

        impl PartialEq<$t> for &str {
            fn eq(&self, other: &$t) -> bool {
                *self == other.0
            }
        }

        impl PartialEq<$t> for str {
            fn eq(&self, other: &$t) -> bool {
                self == other.0
            }
        }
    };
}

id_type!(RouterId, "router id", router_id_problem);
id_type!(ServiceId, "service name", domain_name_problem);

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    #[test]
    fn ids_are_checked_when_made_and_say_why_not() {
        assert_eq!(RouterId::new("edge-1.a_b").unwrap().as_str(), "edge-1.a_b");
        let e = RouterId::new("r 1").unwrap_err();
        assert_eq!(
            e.to_string(),
            "router id \"r 1\" is not valid: use only letters, digits, '.', '_' and '-'"
        );
        assert!(RouterId::new("").is_err());
        assert!(RouterId::new("x".repeat(65)).is_err());
        assert!(ServiceId::new("pabx").is_ok());
        let e = ServiceId::new("PABX").unwrap_err();
        assert!(e.to_string().starts_with("service name \"PABX\" is not valid"), "{e}");
    }

    #[test]
    fn ids_travel_as_plain_strings_and_are_checked_on_the_way_in() {
        let id: RouterId = serde_json::from_str("\"fog\"").unwrap();
        assert_eq!(serde_json::to_string(&id).unwrap(), "\"fog\"");
        let bad = serde_json::from_str::<RouterId>("\"no way\"").unwrap_err();
        assert!(bad.to_string().contains("router id"), "{bad}");
        let mut m = BTreeMap::new();
        m.insert(ServiceId::new("pabx").unwrap(), 1);
        assert_eq!(m.get("pabx"), Some(&1), "maps are looked up by &str");
    }
}
