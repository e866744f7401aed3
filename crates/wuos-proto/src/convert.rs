//! The one mapping between the model's types and their protocol forms.

use wuos_model::Role;

use crate::pb;

impl From<Role> for pb::Role {
    fn from(r: Role) -> Self {
        match r {
            Role::Edge => pb::Role::Edge,
            Role::Fog => pb::Role::Fog,
            Role::Dc => pb::Role::Dc,
            Role::Host => pb::Role::Host,
        }
    }
}

impl pb::Role {
    /// The model's role; an unspecified role (a 1.0 sender) is taken as an edge router.
    pub fn model(self) -> Role {
        match self {
            pb::Role::Fog => Role::Fog,
            pb::Role::Dc => Role::Dc,
            pb::Role::Host => Role::Host,
            pb::Role::Edge | pb::Role::Unspecified => Role::Edge,
        }
    }

    /// The lowercase name, as topologies and JSON spell it (`unspecified` for 0).
    pub fn name(self) -> &'static str {
        match self {
            pb::Role::Unspecified => "unspecified",
            r => r.model().as_str(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_map_both_ways_and_json_names_them() {
        for r in Role::ALL {
            assert_eq!(pb::Role::from(r).model(), r);
            assert_eq!(pb::Role::from(r).name(), r.as_str());
        }
        let reply = pb::StatusReply {
            role: pb::Role::Fog as i32,
            ..Default::default()
        };
        let v = serde_json::to_value(&reply).unwrap();
        assert_eq!(v["role"], "fog");
        let back: pb::StatusReply = serde_json::from_value(v).unwrap();
        assert_eq!(back.role(), pb::Role::Fog);
    }
}
