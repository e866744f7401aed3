//! The SD-WAN's desired state — overlays and traffic classes — and the actions that change it.
//! [`Desired::apply`] checks an action against the state and the [`Inventory`] and changes
//! nothing when it refuses it; the NBI's REST and gRPC layers and the CLI all end here.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::class::{self, MatchRule, TrafficClass};
use crate::error::{SdwanError, list};
use crate::inventory::Inventory;
use crate::overlay::{Layout, Member, Overlay};
use crate::steer::{self, Steering};

/// Overlay ids run 1..=this (each takes a table, a VNI per underlay and an inner /24 per underlay).
pub const MAX_OVERLAYS: usize = 2047;
/// Class ids run 1..=this.
pub const MAX_CLASSES: usize = 4095;
/// Longest overlay, class or service name.
pub const MAX_NAME: usize = 32;

/// A request to create an overlay.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OverlaySpec {
    pub name: String,
    #[serde(default)]
    pub layout: Layout,
    /// Site name → membership.
    #[serde(default)]
    pub sites: BTreeMap<String, Member>,
    /// Underlays in order of preference; empty: all.
    #[serde(default)]
    pub underlays: Vec<String>,
}

/// A request to create a traffic class.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ClassSpec {
    pub name: String,
    pub overlay: String,
    #[serde(default)]
    pub rules: Vec<MatchRule>,
    /// An SLA and candidate paths (application-aware routing).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub steering: Option<Steering>,
}

/// Every change the NBI can ask for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "action", rename_all = "snake_case", deny_unknown_fields)]
pub enum Action {
    CreateOverlay(OverlaySpec),
    DeleteOverlay {
        name: String,
    },
    AddSite {
        overlay: String,
        site: String,
        #[serde(default)]
        member: Member,
    },
    RemoveSite {
        overlay: String,
        site: String,
    },
    CreateClass(ClassSpec),
    DeleteClass {
        name: String,
    },
    /// Sends a class's packets to another overlay.
    AssignClass {
        class: String,
        overlay: String,
    },
    /// Gives a class an SLA and candidate paths, or (none) takes them away.
    SetSteering {
        class: String,
        #[serde(default)]
        steering: Option<Steering>,
    },
    /// Adds a microservice's match rules to a class (the seed's Fig. 4).
    AddService {
        class: String,
        service: String,
        rules: Vec<MatchRule>,
    },
    RemoveService {
        class: String,
        service: String,
    },
}

/// The overlays and classes in force.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Desired {
    pub overlays: BTreeMap<String, Overlay>,
    pub classes: BTreeMap<String, TrafficClass>,
}

impl Desired {
    /// Carries out `action`, or refuses it and changes nothing.
    pub fn apply(&mut self, action: Action, inv: &Inventory) -> Result<(), SdwanError> {
        match action {
            Action::CreateOverlay(spec) => {
                name_ok("overlay", &spec.name)?;
                if self.overlays.contains_key(&spec.name) {
                    return Err(SdwanError::OverlayExists(spec.name));
                }
                let id = free_id(self.overlays.values().map(|o| o.id), MAX_OVERLAYS, "overlay")?;
                let overlay = Overlay {
                    name: spec.name,
                    id,
                    layout: spec.layout,
                    sites: spec.sites,
                    underlays: spec.underlays,
                };
                check_overlay(&overlay, inv)?;
                self.overlays.insert(overlay.name.clone(), overlay);
            }
            Action::DeleteOverlay { name } => {
                self.overlay(&name)?;
                let users: Vec<String> = self
                    .classes
                    .values()
                    .filter(|c| c.overlays().any(|o| o == name))
                    .map(|c| c.name.clone())
                    .collect();
                if !users.is_empty() {
                    return Err(SdwanError::OverlayInUse {
                        overlay: name,
                        classes: users.join(", "),
                    });
                }
                self.overlays.remove(&name);
            }
            Action::AddSite { overlay, site, member } => {
                let mut o = self.overlay(&overlay)?.clone();
                if o.sites.insert(site.clone(), member).is_some() {
                    return Err(SdwanError::SiteInOverlay { overlay, site });
                }
                check_overlay(&o, inv)?;
                self.overlays.insert(overlay, o);
            }
            Action::RemoveSite { overlay, site } => {
                let mut o = self.overlay(&overlay)?.clone();
                if o.sites.remove(&site).is_none() {
                    return Err(SdwanError::SiteNotInOverlay { overlay, site });
                }
                match &mut o.layout {
                    Layout::HubAndSpoke { hub } if *hub == site => {
                        return Err(SdwanError::RemoveHub { overlay, hub: site });
                    }
                    Layout::Partial { pairs } => pairs.retain(|(a, b)| *a != site && *b != site),
                    _ => {}
                }
                self.overlays.insert(overlay, o);
            }
            Action::CreateClass(spec) => {
                name_ok("class", &spec.name)?;
                if self.classes.contains_key(&spec.name) {
                    return Err(SdwanError::ClassExists(spec.name));
                }
                let id = free_id(self.classes.values().map(|c| c.id), MAX_CLASSES, "traffic class")?;
                let class = TrafficClass {
                    name: spec.name,
                    id,
                    overlay: spec.overlay,
                    rules: spec.rules,
                    steering: spec.steering,
                };
                self.check_class(&class, inv)?;
                self.classes.insert(class.name.clone(), class);
            }
            Action::DeleteClass { name } => {
                self.class(&name)?;
                self.classes.remove(&name);
            }
            Action::AssignClass { class, overlay } => {
                let mut c = self.class(&class)?.clone();
                c.overlay = overlay;
                self.check_class(&c, inv)?;
                self.classes.insert(class, c);
            }
            Action::SetSteering { class, steering } => {
                let mut c = self.class(&class)?.clone();
                c.steering = steering;
                self.check_class(&c, inv)?;
                self.classes.insert(class, c);
            }
            Action::AddService { class, service, rules } => {
                name_ok("service", &service)?;
                let mut c = self.class(&class)?.clone();
                if c.rules.iter().any(|r| r.service.as_deref() == Some(service.as_str())) {
                    return Err(SdwanError::ServiceExists { class, service });
                }
                if rules.is_empty() {
                    return Err(SdwanError::BadValue {
                        field: "rules",
                        value: "[]".into(),
                        why: format!("service {service:?} needs at least one match rule"),
                    });
                }
                c.rules.extend(rules.into_iter().map(|r| MatchRule {
                    service: Some(service.clone()),
                    ..r
                }));
                self.check_class(&c, inv)?;
                self.classes.insert(class, c);
            }
            Action::RemoveService { class, service } => {
                let mut c = self.class(&class)?.clone();
                let before = c.rules.len();
                c.rules.retain(|r| r.service.as_deref() != Some(service.as_str()));
                if c.rules.len() == before {
                    return Err(SdwanError::UnknownService { class, service });
                }
                self.classes.insert(class, c);
            }
        }
        Ok(())
    }

    pub fn overlay(&self, name: &str) -> Result<&Overlay, SdwanError> {
        self.overlays.get(name).ok_or_else(|| SdwanError::UnknownOverlay {
            name: name.to_string(),
            known: list(self.overlays.keys()),
        })
    }

    pub fn class(&self, name: &str) -> Result<&TrafficClass, SdwanError> {
        self.classes.get(name).ok_or_else(|| SdwanError::UnknownClass {
            name: name.to_string(),
            known: list(self.classes.keys()),
        })
    }

    /// Checks a class (new or changed) against the overlays, the inventory and the other classes.
    fn check_class(&self, class: &TrafficClass, inv: &Inventory) -> Result<(), SdwanError> {
        let overlay = self.overlay(&class.overlay)?;
        let lans: BTreeSet<&str> = overlay
            .sites
            .keys()
            .filter_map(|s| inv.sites.get(s))
            .flat_map(|s| s.lans.iter().map(|l| l.ifname.as_str()))
            .collect();
        for (i, rule) in class.rules.iter().enumerate() {
            let bad = |why: String| SdwanError::BadRule {
                class: class.name.clone(),
                rule: i,
                why,
            };
            rule.check().map_err(bad)?;
            if let Some(unknown) = rule.ingress.iter().find(|i| !lans.contains(i.as_str())) {
                return Err(bad(format!(
                    "ingress {unknown:?} is not a LAN interface of any site of overlay {:?} (they are: {})",
                    overlay.name,
                    if lans.is_empty() {
                        "(none)".to_string()
                    } else {
                        lans.iter().copied().collect::<Vec<_>>().join(", ")
                    }
                )));
            }
        }
        if let Some(st) = &class.steering {
            self.candidates(class, st, inv)?;
        }
        class::overlap(class, self.classes.values())
    }

    /// A steered class's candidate paths, checked against the overlays.
    pub fn candidates(
        &self,
        class: &TrafficClass,
        steering: &Steering,
        inv: &Inventory,
    ) -> Result<Vec<crate::sla::PathId>, SdwanError> {
        steer::candidates(class, steering, |name| {
            let o = self.overlay(name)?;
            Ok(if o.underlays.is_empty() {
                inv.underlays.clone()
            } else {
                o.underlays.clone()
            })
        })
    }
}

/// `[a-z0-9][a-z0-9_-]*`, at most [`MAX_NAME`] characters.
pub fn name_ok(what: &'static str, name: &str) -> Result<(), SdwanError> {
    let why = if name.is_empty() {
        Some("it is empty")
    } else if name.len() > MAX_NAME {
        Some("it is longer than 32 characters")
    } else if !name.as_bytes()[0].is_ascii_lowercase() && !name.as_bytes()[0].is_ascii_digit() {
        Some("it must start with a lowercase letter or a digit")
    } else if !name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
    {
        Some("only a-z, 0-9, '-' and '_' are allowed")
    } else {
        None
    };
    match why {
        Some(why) => Err(SdwanError::BadName {
            what,
            name: name.to_string(),
            why,
        }),
        None => Ok(()),
    }
}

/// The smallest id in 1..=max that `used` does not hold.
fn free_id(used: impl Iterator<Item = u16>, max: usize, what: &'static str) -> Result<u16, SdwanError> {
    let used: BTreeSet<u16> = used.collect();
    (1..=max as u16)
        .find(|i| !used.contains(i))
        .ok_or(SdwanError::TooMany { what, max })
}

/// Checks an overlay against the inventory: known sites and underlays, a shared underlay for
/// every member, LAN prefixes on the sites' LANs and not overlapping, the hub and pairs members.
pub fn check_overlay(o: &Overlay, inv: &Inventory) -> Result<(), SdwanError> {
    let mut seen = BTreeSet::new();
    for u in &o.underlays {
        inv.underlay(u)?;
        if !seen.insert(u) {
            return Err(SdwanError::BadValue {
                field: "underlays",
                value: u.clone(),
                why: "listed twice".into(),
            });
        }
    }
    let allowed: Vec<&String> = if o.underlays.is_empty() {
        inv.underlays.iter().collect()
    } else {
        o.underlays.iter().collect()
    };
    let mut prefixes: Vec<(&str, wuos_model::topology::Ipv4Net)> = Vec::new();
    for (name, member) in &o.sites {
        let site = inv.site(name)?;
        if !allowed.iter().any(|u| site.wan.contains_key(*u)) {
            return Err(SdwanError::NoCommonUnderlay {
                overlay: o.name.clone(),
                site: name.clone(),
                underlays: list(allowed.iter().copied()),
                has: list(site.wan.keys()),
            });
        }
        for p in &member.lans {
            if !site
                .lans
                .iter()
                .any(|l| l.prefix.contains(p.addr) && p.prefix_len >= l.prefix.prefix_len)
            {
                return Err(SdwanError::PrefixNotOnLan {
                    overlay: o.name.clone(),
                    site: name.clone(),
                    prefix: p.to_string(),
                    lans: if site.lans.is_empty() {
                        "(none)".into()
                    } else {
                        site.lans
                            .iter()
                            .map(|l| format!("{} {}", l.ifname, l.prefix))
                            .collect::<Vec<_>>()
                            .join(", ")
                    },
                });
            }
        }
        let mine: Vec<_> = if member.lans.is_empty() {
            site.lans.iter().map(|l| l.prefix).collect()
        } else {
            member.lans.clone()
        };
        for p in mine {
            if let Some((other_site, other)) = prefixes.iter().find(|(_, q)| q.overlaps(&p)) {
                return Err(SdwanError::LanOverlap {
                    overlay: o.name.clone(),
                    site: name.clone(),
                    prefix: p.to_string(),
                    other_site: other_site.to_string(),
                    other: other.to_string(),
                });
            }
            prefixes.push((name, p));
        }
    }
    match &o.layout {
        Layout::FullMesh => {}
        Layout::HubAndSpoke { hub } => {
            if !o.sites.contains_key(hub) {
                return Err(SdwanError::HubNotMember {
                    overlay: o.name.clone(),
                    hub: hub.clone(),
                });
            }
        }
        Layout::Partial { pairs } => {
            if let Some((a, b)) = pairs
                .iter()
                .find(|(a, b)| !o.sites.contains_key(a) || !o.sites.contains_key(b))
            {
                return Err(SdwanError::PairNotMember {
                    overlay: o.name.clone(),
                    a: a.clone(),
                    b: b.clone(),
                });
            }
        }
    }
    Ok(())
}
