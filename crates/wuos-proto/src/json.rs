//! Serde helpers the generated messages use (see `build.rs`): enum fields by name in JSON.

/// `#[serde(with = "crate::json::role")]` for a `Role` field (an `i32` in prost): `"edge"`,
/// `"fog"`, … both ways; a number is accepted too.
pub mod role {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    use crate::pb::Role;

    pub fn serialize<S: Serializer>(v: &i32, s: S) -> Result<S::Ok, S::Error> {
        Role::try_from(*v).unwrap_or(Role::Unspecified).serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<i32, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Name(Role),
            Number(i32),
        }
        Ok(match Raw::deserialize(d)? {
            Raw::Name(r) => r as i32,
            Raw::Number(n) => n,
        })
    }
}
