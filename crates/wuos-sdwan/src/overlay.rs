//! Overlays: a name, a layout (full mesh, hub-and-spoke, partial), member sites with the LAN
//! prefixes they bring, and the underlays the overlay may use.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use wuos_model::topology::Ipv4Net;

use crate::net;

/// Which member sites have tunnels to which.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Layout {
    /// Every pair of members.
    #[default]
    FullMesh,
    /// Every spoke to the hub only; spoke-to-spoke traffic goes through the hub.
    HubAndSpoke { hub: String },
    /// Only the listed pairs; no transit.
    Partial {
        #[schema(value_type = Vec<Vec<String>>)]
        pairs: Vec<(String, String)>,
    },
}

/// A member site of an overlay.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Member {
    /// The LAN prefixes the site brings into the overlay; each on one of its LANs. Empty: all of
    /// the site's LANs.
    #[serde(default, with = "net::vec", skip_serializing_if = "Vec::is_empty")]
    #[schema(value_type = Vec<String>)]
    pub lans: Vec<Ipv4Net>,
}

/// An overlay network.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Overlay {
    pub name: String,
    /// Stable for the overlay's life: its VNIs, table, inner segments and interface names come
    /// from it.
    pub id: u16,
    pub layout: Layout,
    /// Site name → membership.
    pub sites: BTreeMap<String, Member>,
    /// The underlays it may use, in order of preference. Empty: every underlay.
    pub underlays: Vec<String>,
}

impl Overlay {
    /// Whether members `a` and `b` have a tunnel between them.
    pub fn joins(&self, a: &str, b: &str) -> bool {
        if a == b || !self.sites.contains_key(a) || !self.sites.contains_key(b) {
            return false;
        }
        match &self.layout {
            Layout::FullMesh => true,
            Layout::HubAndSpoke { hub } => a == hub || b == hub,
            Layout::Partial { pairs } => pairs.iter().any(|(x, y)| (x == a && y == b) || (x == b && y == a)),
        }
    }

    /// The member whose tunnel carries `from`'s traffic to `to`: `to` itself when they are
    /// joined, the hub when both are spokes of a hub-and-spoke overlay, else none.
    pub fn next_site<'a>(&'a self, from: &str, to: &'a str) -> Option<&'a str> {
        if self.joins(from, to) {
            return Some(to);
        }
        match &self.layout {
            Layout::HubAndSpoke { hub }
                if from != to && self.sites.contains_key(to) && self.sites.contains_key(from) =>
            {
                Some(hub.as_str())
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn overlay(layout: Layout) -> Overlay {
        Overlay {
            name: "o".into(),
            id: 1,
            layout,
            sites: ["a", "b", "c"]
                .iter()
                .map(|s| (s.to_string(), Member::default()))
                .collect(),
            underlays: vec![],
        }
    }

    #[test]
    fn layouts_join_the_right_pairs() {
        let mesh = overlay(Layout::FullMesh);
        assert!(mesh.joins("a", "b") && mesh.joins("c", "a") && !mesh.joins("a", "a") && !mesh.joins("a", "x"));
        let hub = overlay(Layout::HubAndSpoke { hub: "a".into() });
        assert!(hub.joins("a", "b") && hub.joins("c", "a") && !hub.joins("b", "c"));
        assert_eq!(hub.next_site("b", "c"), Some("a"));
        assert_eq!(hub.next_site("b", "a"), Some("a"));
        let partial = overlay(Layout::Partial {
            pairs: vec![("a".into(), "b".into())],
        });
        assert!(partial.joins("b", "a") && !partial.joins("a", "c"));
        assert_eq!(partial.next_site("b", "c"), None);
    }
}
