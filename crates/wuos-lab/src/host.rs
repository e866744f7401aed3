//! Host-wide limits a lab depends on.
//!
//! The kernel's ARP table is one per host, shared by every network namespace, and so is its size
//! limit (`net.ipv4.neigh.default.gc_thresh3`, 1,024 by default; only the initial namespace sets
//! it). Each link end of a lab holds an entry for its peer, so a lab of 1,000 routers (about
//! 3,700 link ends) overflows the default: the kernel refuses new entries ("No buffer space
//! available"), the routers' sessions cannot connect, and the table churns (a forced garbage
//! collection on every resolution). `lab up` therefore raises the limits so that the lab fits
//! beside what the table already holds; it never lowers them, and says what it changed.

use std::io;
use std::path::Path;

/// A host limit `lab up` raised.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Raised {
    pub key: String,
    pub from: u64,
    pub to: u64,
}

const THRESH2: &str = "net/ipv4/neigh/default/gc_thresh2";
const THRESH3: &str = "net/ipv4/neigh/default/gc_thresh3";

/// What the limits should be for `link_ends` more entries when the table holds `entries`: the
/// soft limit (above which the kernel collects entries older than 5 s) twice the need, the hard
/// one four times (entries of links that flap are replaced before the old ones are collected).
/// Never below `current`: the defaults hold a small lab as they are.
pub fn wanted(current: (u64, u64), entries: u64, link_ends: u64) -> (u64, u64) {
    let need = entries + link_ends;
    (current.0.max(2 * need), current.1.max(4 * need))
}

/// Entries in the host's ARP table (the first column of `/proc/net/stat/arp_cache`, hex).
fn arp_entries(proc_root: &Path) -> u64 {
    std::fs::read_to_string(proc_root.join("net/stat/arp_cache"))
        .ok()
        .and_then(|t| {
            let line = t.lines().nth(1)?;
            u64::from_str_radix(line.split_whitespace().next()?, 16).ok()
        })
        .unwrap_or(0)
}

fn read(proc_root: &Path, key: &str) -> io::Result<u64> {
    let text = std::fs::read_to_string(proc_root.join("sys").join(key))?;
    text.trim()
        .parse()
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("{key}: {text:?}: {e}")))
}

/// Raises the ARP table's limits under `proc_root` (`/proc`) so that `link_ends` more entries
/// fit; what was raised. Must run in the initial network namespace.
pub fn make_neighbour_room(proc_root: &Path, link_ends: usize) -> io::Result<Vec<Raised>> {
    let current = (read(proc_root, THRESH2)?, read(proc_root, THRESH3)?);
    let (t2, t3) = wanted(current, arp_entries(proc_root), link_ends as u64);
    let mut raised = Vec::new();
    // The hard limit first: the kernel keeps thresh2 ≤ thresh3 only by convention, but a reader
    // between the two writes should never see the soft one above the hard one.
    for (key, from, to) in [(THRESH3, current.1, t3), (THRESH2, current.0, t2)] {
        if to > from {
            let path = proc_root.join("sys").join(key);
            std::fs::write(&path, to.to_string())
                .map_err(|e| io::Error::new(e.kind(), format!("cannot raise {}: {e}", path.display())))?;
            raised.push(Raised {
                key: key.replace('/', "."),
                from,
                to,
            });
        }
    }
    Ok(raised)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_limits_grow_with_the_lab_and_never_shrink() {
        // The defaults, an empty table, a 1,000-router lab's 3,700 link ends.
        assert_eq!(wanted((512, 1024), 0, 3700), (7400, 14800));
        // A small lab fits in the defaults: nothing changes.
        assert_eq!(wanted((512, 1024), 10, 4), (512, 1024));
        assert_eq!(wanted((8192, 16384), 0, 3700), (8192, 16384));
        // What the table already holds (another lab) counts.
        assert_eq!(wanted((512, 1024), 3000, 100), (6200, 12400));
    }

    #[test]
    fn raises_what_is_too_low_and_reads_the_table() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path();
        std::fs::create_dir_all(p.join("sys/net/ipv4/neigh/default")).unwrap();
        std::fs::create_dir_all(p.join("net/stat")).unwrap();
        std::fs::write(p.join("sys").join(THRESH2), "512\n").unwrap();
        std::fs::write(p.join("sys").join(THRESH3), "1024\n").unwrap();
        std::fs::write(
            p.join("net/stat/arp_cache"),
            "entries  allocs\n00000400 0003e88f\n00000400 0005360e\n",
        )
        .unwrap();
        let raised = make_neighbour_room(p, 3700).unwrap();
        assert_eq!(
            raised,
            [
                Raised {
                    key: "net.ipv4.neigh.default.gc_thresh3".into(),
                    from: 1024,
                    to: 18896
                },
                Raised {
                    key: "net.ipv4.neigh.default.gc_thresh2".into(),
                    from: 512,
                    to: 9448
                },
            ]
        );
        assert_eq!(read(p, THRESH3).unwrap(), 18896);
        // Again: everything fits, nothing is written.
        assert!(make_neighbour_room(p, 3700).unwrap().is_empty());
    }
}
