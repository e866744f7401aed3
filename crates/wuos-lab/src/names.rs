//! How lab objects are named on the host. Names are derived from the lab and node names alone, so
//! `wuos lab down` finds everything a lab made even when its state file was never completed.

/// Prefix of every namespace of lab `lab`. Lab names have no `.`, so one lab's prefix never
/// matches another lab's namespaces.
pub fn netns_prefix(lab: &str) -> String {
    format!("wuos.{lab}.")
}

/// The namespace of router `node`.
pub fn node_netns(lab: &str, node: &str) -> String {
    format!("wuos.{lab}.{node}")
}

/// The namespace that holds the user-space impairment relays' interfaces (node names start with a
/// letter or digit, so this never collides with a router).
pub fn relay_netns(lab: &str) -> String {
    format!("wuos.{lab}._relay")
}

/// The cgroup (relative to each hierarchy root) of lab `lab`.
pub fn lab_cgroup(lab: &str) -> String {
    format!("wuos/{lab}")
}

/// The cgroup of router `node`: its "hardware".
pub fn node_cgroup(lab: &str, node: &str) -> String {
    format!("wuos/{lab}/{node}")
}

/// The leaf cgroup of router `node`'s own processes (its daemon, `wuos lab exec` commands) on a
/// cgroup v2 host: v2 lets a cgroup hold processes or controlled children, not both, and the
/// router's service domains are children of its cgroup. (On v1 they join the router's cgroup.)
pub fn node_system_cgroup(lab: &str, node: &str) -> String {
    format!("wuos/{lab}/{node}/system")
}

/// ifindex of a router's `eth{n}`; chosen at creation so no lookup is needed afterwards.
pub fn eth_index(n: usize) -> u32 {
    100 + n as u32
}

/// ifindex of the relay-side twin `ix{n}` of `eth{n}` in the router's namespace.
pub fn ix_index(n: usize) -> u32 {
    20_000 + n as u32
}

pub fn ix_name(eth: &str) -> String {
    format!("ix{}", eth.trim_start_matches("eth"))
}

/// Names and indexes of the two relay-namespace ends of link `link` (side 0 faces `a`, 1 faces `b`).
pub fn relay_if(link: usize, side: u8) -> (String, u32) {
    let name = format!("l{link}{}", if side == 0 { 'a' } else { 'b' });
    (name, 100 + 2 * link as u32 + u32::from(side))
}

/// A locally administered MAC, stable for (lab, link, side). `kind` 0 is the router end (its `ix`
/// twin shares it), 1 the relay end.
pub fn mac(lab: &str, link: usize, side: u8, kind: u8) -> [u8; 6] {
    // FNV-1a of the lab name, so two labs' MACs differ.
    let h = lab
        .bytes()
        .fold(0x811c_9dc5u32, |h, b| (h ^ u32::from(b)).wrapping_mul(0x0100_0193));
    let l = link as u32;
    [
        0x02,
        (h & 0xff) as u8,
        (l >> 16) as u8,
        (l >> 8) as u8,
        l as u8,
        side | (kind << 1),
    ]
}

/// Lab names: lowercase letters, digits and `-`, 1–16 characters, starting with a letter or digit.
pub fn check_lab_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 16
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "bad lab name {name:?}: use 1-16 lowercase letters, digits or '-', not starting with '-'"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macs_are_unicast_local_and_distinct() {
        let a = mac("demo", 7, 0, 0);
        assert_eq!(a[0] & 0x03, 0x02, "locally administered unicast");
        assert_ne!(a, mac("demo", 7, 1, 0));
        assert_ne!(a, mac("demo", 8, 0, 0));
        assert_ne!(a, mac("other", 7, 0, 0));
        assert_ne!(a, mac("demo", 7, 0, 1));
    }

    #[test]
    fn lab_names_are_checked() {
        assert!(check_lab_name("grid-10x10").is_ok());
        for bad in ["", "-x", "UPPER", "a_b", "seventeen-chars-x"] {
            assert!(check_lab_name(bad).is_err(), "{bad:?} must be refused");
        }
    }

    #[test]
    fn relay_interface_names_fit_ifnamsiz() {
        let (n, _) = relay_if(99_999, 1);
        assert!(n.len() <= 15, "{n}");
    }
}
