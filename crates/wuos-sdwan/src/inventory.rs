//! What the SD-WAN is built on: the sites (edge routers), the underlays each one is attached to
//! (its WAN address and interface on each) and its LANs. The lab derives it from a topology's
//! `underlay` labels ([`Inventory::from_topology`]); a real deployment learns it from its edges.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};

use serde::{Deserialize, Serialize};
use wuos_model::plan::AddressPlan;
use wuos_model::topology::{Ipv4Net, Role, Topology};

use crate::error::{SdwanError, list};
use crate::net;

/// At most this many underlays (each (overlay, underlay) pair takes a VNI and an inner /24).
pub const MAX_UNDERLAYS: usize = 8;
/// Sites are numbered 1..=this (the host part of an inner /24).
pub const MAX_SITES: usize = 250;

/// A site's attachment to one underlay.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Wan {
    /// The tunnels' local address on this underlay.
    #[schema(value_type = String)]
    pub addr: Ipv4Addr,
    /// The interface it is on.
    pub ifname: String,
    /// That interface's MTU.
    pub mtu: u32,
}

/// A LAN behind a site's edge.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Lan {
    pub ifname: String,
    #[serde(with = "net")]
    #[schema(value_type = String)]
    pub prefix: Ipv4Net,
}

/// One site: an edge router with its WAN attachments and LANs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Site {
    /// 1..=[`MAX_SITES`], stable for the site's life: its host number on every inner segment.
    pub index: u16,
    /// Underlay name → attachment.
    pub wan: BTreeMap<String, Wan>,
    pub lans: Vec<Lan>,
    /// Where the SD-WAN controller reaches the edge's wuosd (its `Control` service); absent:
    /// the control address the edge advertises.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub control: Option<SocketAddr>,
}

/// Every site and underlay of one SD-WAN.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Inventory {
    /// The underlays, in a fixed order: a tunnel's VNI and inner segment use the position.
    pub underlays: Vec<String>,
    /// Site (edge router) name → site.
    pub sites: BTreeMap<String, Site>,
}

impl Inventory {
    pub fn site(&self, name: &str) -> Result<&Site, SdwanError> {
        self.sites.get(name).ok_or_else(|| SdwanError::UnknownSite {
            name: name.to_string(),
            known: list(self.sites.keys()),
        })
    }

    /// The position of an underlay.
    pub fn underlay(&self, name: &str) -> Result<usize, SdwanError> {
        self.underlays
            .iter()
            .position(|u| u == name)
            .ok_or_else(|| SdwanError::UnknownUnderlay {
                name: name.to_string(),
                known: list(&self.underlays),
            })
    }

    /// Sites and underlays from a topology: every edge router with a link labelled
    /// `underlay = "NAME"` (or to a provider router labelled so) is a site, its address on that link its WAN address there, and its
    /// links to hosts its LANs. Site indices follow the sites' names in order.
    pub fn from_topology(t: &Topology, plan: &AddressPlan) -> Result<Inventory, SdwanError> {
        let mut inv = Inventory::default();
        let ends = t.link_ends();
        for (i, node) in t.nodes.iter().enumerate() {
            // Provider routers carry an underlay label; sites are the edges attached to them.
            if node.role != Role::Edge || node.underlay.is_some() {
                continue;
            }
            let mut site = Site {
                index: 0,
                wan: BTreeMap::new(),
                lans: Vec::new(),
                control: None,
            };
            for (l, link) in t.links.iter().enumerate() {
                let Some((a, b)) = ends[l] else { continue };
                if a != i && b != i {
                    continue;
                }
                let (other, addr, ifname) = if a == i {
                    (b, plan.links[l].a, &plan.links[l].a_ifname)
                } else {
                    (a, plan.links[l].b, &plan.links[l].b_ifname)
                };
                let mtu = link.params.mtu.unwrap_or(1500);
                if let Some(u) = t.link_underlay(l).map(str::to_string) {
                    if !inv.underlays.contains(&u) {
                        inv.underlays.push(u.clone());
                    }
                    site.wan.entry(u).or_insert(Wan {
                        addr,
                        ifname: ifname.clone(),
                        mtu,
                    });
                } else if t.nodes[other].role == Role::Host {
                    site.lans.push(Lan {
                        ifname: ifname.clone(),
                        prefix: plan.links[l].subnet(),
                    });
                }
            }
            if !site.wan.is_empty() {
                inv.sites.insert(node.name.clone(), site);
            }
        }
        if inv.sites.len() > MAX_SITES {
            return Err(SdwanError::TooMany {
                what: "site",
                max: MAX_SITES,
            });
        }
        if inv.underlays.len() > MAX_UNDERLAYS {
            return Err(SdwanError::TooMany {
                what: "underlay",
                max: MAX_UNDERLAYS,
            });
        }
        inv.underlays.sort();
        for (n, site) in inv.sites.values_mut().enumerate() {
            site.index = n as u16 + 1;
        }
        Ok(inv)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wuos_model::generate::{Generator, generate};
    use wuos_model::plan::address_plan;

    #[test]
    fn sites_come_from_edges_on_underlays() {
        let t = generate(&"sdwan:3:2:2".parse::<Generator>().unwrap(), 1);
        let plan = address_plan(&t).unwrap();
        let inv = Inventory::from_topology(&t, &plan).unwrap();
        assert_eq!(inv.underlays, ["inet", "mpls"]);
        assert_eq!(
            inv.sites.keys().collect::<Vec<_>>(),
            ["e1", "e2", "e3"],
            "not dc, not provider routers"
        );
        for (n, (name, site)) in inv.sites.iter().enumerate() {
            assert_eq!(usize::from(site.index), n + 1);
            assert_eq!(site.wan.keys().collect::<Vec<_>>(), ["inet", "mpls"], "{name}");
            assert_eq!(site.lans.len(), 2, "{name}");
            for w in site.wan.values() {
                assert_eq!(w.mtu, 1500);
                assert!(plan.links.iter().any(|l| l.a == w.addr || l.b == w.addr));
            }
        }
        let e1 = &inv.sites["e1"];
        assert!(
            e1.lans
                .iter()
                .all(|l| l.prefix.prefix_len == 31 && l.ifname.starts_with("eth"))
        );
    }
}
