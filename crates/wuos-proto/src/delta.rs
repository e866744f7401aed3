//! Adverts sent as changes ([`pb::AdvertDelta`]) against one the receiver already holds.
//!
//! Between two adverts of one origin boot most of what an advert says stays the same: its role,
//! interval and control address never change within a boot, its services and demand rarely, and
//! of its links only those whose figures moved. [`diff`] keeps what changed; [`apply`] rebuilds
//! the whole advert from the base and the delta. A delta is only ever made when applying it
//! gives back exactly the advert it stands for ([`diff`] checks), so a receiver that holds the
//! base and one that got the whole advert end up with the same bytes.

use crate::pb;

/// Why a delta does not apply to a base.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeltaError {
    /// The base is another origin, another boot or another sequence than the delta's.
    #[error("delta of {origin} #{boot_id}.{base_sequence} does not apply to #{have_boot}.{have_sequence}")]
    Base {
        /// The delta's origin.
        origin: String,
        /// The delta's boot.
        boot_id: u64,
        /// The sequence the delta is against.
        base_sequence: u64,
        /// The base's boot.
        have_boot: u64,
        /// The base's sequence.
        have_sequence: u64,
    },
    /// A removed link is not in the base.
    #[error("delta of {origin} removes link {interface:?}, which its base does not have")]
    Link {
        /// The delta's origin.
        origin: String,
        /// The interface named.
        interface: String,
    },
}

/// The change from `base` to `new` (which must be the same origin boot, `new` not older), or
/// `None` when a delta cannot say it: another origin or boot, an older `new`, or a change of
/// what a boot keeps fixed (role, interval, quiet intervals, control address) or of its region. The delta carries `new`'s hop
/// limit; a sender sets its own.
pub fn diff(base: &pb::TelemetryAdvert, new: &pb::TelemetryAdvert) -> Option<pb::AdvertDelta> {
    if base.origin != new.origin
        || base.boot_id != new.boot_id
        || base.sequence > new.sequence
        || base.role != new.role
        || base.interval_ms != new.interval_ms
        || base.quiet_intervals != new.quiet_intervals
        || base.control_address != new.control_address
        || base.region != new.region
    {
        return None;
    }
    let links = new
        .links
        .iter()
        .filter(|l| !base.links.iter().any(|b| b == *l))
        .cloned()
        .collect();
    let links_removed = base
        .links
        .iter()
        .filter(|b| !new.links.iter().any(|l| l.interface == b.interface))
        .map(|b| b.interface.clone())
        .collect();
    let d = pb::AdvertDelta {
        origin: new.origin.clone(),
        boot_id: new.boot_id,
        sequence: new.sequence,
        base_sequence: base.sequence,
        timestamp_unix_ns: new.timestamp_unix_ns,
        hop_limit: new.hop_limit,
        resources: (base.resources != new.resources).then(|| new.resources.unwrap_or_default()),
        links,
        links_removed,
        services: (base.services != new.services).then(|| pb::ServiceList {
            items: new.services.clone(),
        }),
        demand: (base.demand != new.demand).then(|| pb::DemandList {
            items: new.demand.clone(),
        }),
        placements: (base.placements != new.placements).then(|| pb::PlacementList {
            items: new.placements.clone(),
        }),
        // An empty state stands for "none any more".
        sdwan: (base.sdwan != new.sdwan).then(|| new.sdwan.clone().unwrap_or_default()),
    };
    // Link order or duplicate interfaces can defeat the merge: then the whole advert goes.
    (apply(base, &d).as_ref() == Ok(new)).then_some(d)
}

/// The advert `d` stands for, rebuilt on `base` (same origin, boot, and sequence
/// `d.base_sequence`).
pub fn apply(base: &pb::TelemetryAdvert, d: &pb::AdvertDelta) -> Result<pb::TelemetryAdvert, DeltaError> {
    if base.origin != d.origin || base.boot_id != d.boot_id || base.sequence != d.base_sequence {
        return Err(DeltaError::Base {
            origin: d.origin.clone(),
            boot_id: d.boot_id,
            base_sequence: d.base_sequence,
            have_boot: base.boot_id,
            have_sequence: base.sequence,
        });
    }
    let mut links = base.links.clone();
    for gone in &d.links_removed {
        let before = links.len();
        links.retain(|l| &l.interface != gone);
        if links.len() == before {
            return Err(DeltaError::Link {
                origin: d.origin.clone(),
                interface: gone.clone(),
            });
        }
    }
    for l in &d.links {
        match links.iter_mut().find(|b| b.interface == l.interface) {
            Some(b) => *b = l.clone(),
            None => links.push(l.clone()),
        }
    }
    // Every field named (no `..base.clone()`, which would copy the lists a second time only to
    // drop them): a field added to the advert must be decided here.
    Ok(pb::TelemetryAdvert {
        origin: base.origin.clone(),
        boot_id: base.boot_id,
        sequence: d.sequence,
        timestamp_unix_ns: d.timestamp_unix_ns,
        hop_limit: d.hop_limit,
        interval_ms: base.interval_ms,
        quiet_intervals: base.quiet_intervals,
        role: base.role,
        control_address: base.control_address.clone(),
        region: base.region.clone(),
        resources: d.resources.or(base.resources),
        services: d
            .services
            .as_ref()
            .map_or_else(|| base.services.clone(), |s| s.items.clone()),
        demand: d
            .demand
            .as_ref()
            .map_or_else(|| base.demand.clone(), |s| s.items.clone()),
        placements: d
            .placements
            .as_ref()
            .map_or_else(|| base.placements.clone(), |s| s.items.clone()),
        sdwan: match &d.sdwan {
            None => base.sdwan.clone(),
            Some(s) if *s == pb::SdwanEdgeState::default() => None,
            Some(s) => Some(s.clone()),
        },
        links,
    })
}

/// "The same advert, with hop limit `hop_limit`": a delta against itself.
pub fn hop_only(a: &pb::TelemetryAdvert, hop_limit: u32) -> pb::AdvertDelta {
    pb::AdvertDelta {
        origin: a.origin.clone(),
        boot_id: a.boot_id,
        sequence: a.sequence,
        base_sequence: a.sequence,
        timestamp_unix_ns: a.timestamp_unix_ns,
        hop_limit,
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link(interface: &str, rx: u64) -> pb::LinkMetrics {
        pb::LinkMetrics {
            interface: interface.into(),
            neighbor: "r9".into(),
            rx_bytes_per_s: rx,
            up: true,
            ..Default::default()
        }
    }

    fn advert(sequence: u64, cpu: f64, links: Vec<pb::LinkMetrics>) -> pb::TelemetryAdvert {
        pb::TelemetryAdvert {
            origin: "r1".into(),
            boot_id: 7,
            sequence,
            timestamp_unix_ns: sequence as i64 * 1_000_000_000,
            hop_limit: 2,
            interval_ms: 1000,
            role: pb::Role::Edge as i32,
            resources: Some(pb::Resources {
                cpu_used_pct: cpu,
                mem_used_pct: 20.0,
                ..Default::default()
            }),
            links,
            ..Default::default()
        }
    }

    #[test]
    fn a_delta_keeps_only_what_changed_and_rebuilds_the_advert() {
        let base = advert(1, 5.0, vec![link("a", 1), link("b", 2), link("c", 3)]);
        let new = advert(2, 5.0, vec![link("a", 1), link("b", 20), link("d", 4)]);
        let d = diff(&base, &new).expect("a delta");
        assert_eq!(d.resources, None, "resources did not change");
        assert_eq!(d.links, vec![link("b", 20), link("d", 4)]);
        assert_eq!(d.links_removed, vec!["c".to_string()]);
        assert_eq!(d.services, None);
        assert_eq!(apply(&base, &d), Ok(new.clone()));
        let new_cpu = advert(3, 6.0, new.links.clone());
        let d = diff(&new, &new_cpu).expect("a delta");
        assert!(d.resources.is_some() && d.links.is_empty());
        assert_eq!(apply(&new, &d), Ok(new_cpu));
    }

    #[test]
    fn sdwan_state_travels_in_deltas_and_its_end_too() {
        let state = |up| pb::SdwanEdgeState {
            generation: 3,
            tunnels: 1,
            tunnels_up: u32::from(up),
            failed_ops: 0,
            items: vec![pb::TunnelState {
                name: "wo1-mpls".into(),
                up,
            }],
            ..Default::default()
        };
        let base = advert(1, 5.0, vec![]);
        let with = pb::TelemetryAdvert {
            sdwan: Some(state(true)),
            ..advert(2, 5.0, vec![])
        };
        let d = diff(&base, &with).expect("a delta");
        assert_eq!(d.sdwan, Some(state(true)));
        assert_eq!(apply(&base, &d), Ok(with.clone()));
        let same = pb::TelemetryAdvert {
            sequence: 3,
            ..with.clone()
        };
        assert_eq!(diff(&with, &same).unwrap().sdwan, None, "unchanged: left out");
        let down = pb::TelemetryAdvert {
            sdwan: Some(state(false)),
            ..advert(4, 5.0, vec![])
        };
        assert_eq!(apply(&same, &diff(&same, &down).unwrap()), Ok(down.clone()));
        let gone = advert(5, 5.0, vec![]);
        let d = diff(&down, &gone).unwrap();
        assert_eq!(
            d.sdwan,
            Some(pb::SdwanEdgeState::default()),
            "the end of the state is said"
        );
        assert_eq!(apply(&down, &d), Ok(gone));
    }

    #[test]
    fn what_a_delta_cannot_say_is_refused() {
        let base = advert(4, 5.0, vec![]);
        let mut other_boot = advert(5, 5.0, vec![]);
        other_boot.boot_id = 8;
        assert_eq!(diff(&base, &other_boot), None);
        assert_eq!(diff(&base, &advert(3, 5.0, vec![])), None, "older");
        let mut moved = advert(5, 5.0, vec![]);
        moved.control_address = "10.0.0.1:7471".into();
        assert_eq!(diff(&base, &moved), None, "control address is fixed within a boot");
        let mut quieter = advert(5, 5.0, vec![]);
        quieter.quiet_intervals = base.quiet_intervals + 5;
        assert_eq!(diff(&base, &quieter), None, "quiet intervals are fixed within a boot");
        let mut same = advert(5, 6.0, vec![]);
        same.quiet_intervals = base.quiet_intervals;
        let d = diff(&base, &same).expect("a delta");
        assert_eq!(apply(&base, &d).map(|a| a.quiet_intervals), Ok(base.quiet_intervals));
        // A reordering the merge cannot express.
        let a = advert(1, 5.0, vec![link("a", 1), link("b", 2)]);
        let b = advert(2, 5.0, vec![link("b", 2), link("a", 1)]);
        assert_eq!(diff(&a, &b), None);
    }

    #[test]
    fn a_delta_on_the_wrong_base_is_an_error() {
        let base = advert(1, 5.0, vec![link("a", 1)]);
        let d = diff(&base, &advert(2, 6.0, vec![])).unwrap();
        let err = apply(&advert(3, 5.0, vec![link("a", 1)]), &d).unwrap_err();
        assert!(err.to_string().contains("#7.1 does not apply to #7.3"), "{err}");
        let mut bad = d.clone();
        bad.links_removed = vec!["zz".into()];
        assert!(matches!(apply(&base, &bad), Err(DeltaError::Link { .. })));
    }

    #[test]
    fn hop_only_is_the_same_advert() {
        let a = advert(3, 5.0, vec![link("a", 1)]);
        let back = apply(&a, &hop_only(&a, 5)).unwrap();
        assert_eq!(back, pb::TelemetryAdvert { hop_limit: 5, ..a });
    }
}
