//! Memory: `/proc/meminfo`, cgroup `memory.stat` and limits.
//!
//! - Whole machine: used is `MemTotal − MemAvailable`.
//! - Cgroup: used is the working set, usage (`memory.usage_in_bytes` v1, `memory.current` v2)
//!   minus the inactive file cache (`total_inactive_file` v1, `inactive_file` v2: the kernel
//!   drops it first under pressure, so it is not "used" in the sense of "unavailable"). The total
//!   is the smallest limit of the cgroup and its ancestors (v1: `memory.limit_in_bytes` and
//!   `hierarchical_memory_limit`; v2: `memory.max` of each level), at most the host's
//!   `MemTotal`. Unlimited is `max` on v2 and a huge number on v1 (2^63 rounded down to a
//!   page): any v1 value ≥ 2^62 is taken as unlimited.

use super::CgroupVersion;

/// v1 limits at or above this are "unlimited".
pub const V1_UNLIMITED: u64 = 1 << 62;

/// What `/proc/meminfo` says, in bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemInfo {
    pub total_bytes: u64,
    pub available_bytes: u64,
}

/// What `memory.stat` says, in bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MemoryStat {
    /// `total_inactive_file` (v1, the cgroup and its descendants) or `inactive_file` (v2).
    pub inactive_file: u64,
    /// v1 `hierarchical_memory_limit` when below [`V1_UNLIMITED`].
    pub hierarchical_limit: Option<u64>,
}

/// Parses `MemTotal` and `MemAvailable` (kB) of `/proc/meminfo`.
pub fn parse_meminfo(text: &str) -> Result<MemInfo, &'static str> {
    let (mut total, mut available) = (None, None);
    for line in text.lines() {
        let slot = if let Some(v) = line.strip_prefix("MemTotal:") {
            (&mut total, v)
        } else if let Some(v) = line.strip_prefix("MemAvailable:") {
            (&mut available, v)
        } else {
            continue;
        };
        let kb = slot.1.trim().strip_suffix("kB").unwrap_or(slot.1).trim();
        *slot.0 = Some(
            kb.parse::<u64>()
                .map_err(|_| "a MemTotal or MemAvailable value is not a number")?
                * 1024,
        );
        if total.is_some() && available.is_some() {
            break;
        }
    }
    Ok(MemInfo {
        total_bytes: total.filter(|&t| t > 0).ok_or("there is no positive MemTotal line")?,
        available_bytes: available.ok_or("there is no MemAvailable line (kernel older than 3.14?)")?,
    })
}

/// Parses the fields of `memory.stat` the monitor uses. A missing inactive-file line counts as 0
/// (the figure is then the whole usage).
pub fn parse_memory_stat(text: &str, version: &CgroupVersion) -> Result<MemoryStat, &'static str> {
    let inactive_key = match version {
        CgroupVersion::V1 => "total_inactive_file",
        CgroupVersion::V2 => "inactive_file",
    };
    let mut stat = MemoryStat::default();
    for line in text.lines() {
        let Some((key, value)) = line.split_once(' ') else {
            continue;
        };
        if key == inactive_key {
            stat.inactive_file = value
                .trim()
                .parse()
                .map_err(|_| "the inactive file figure is not a number")?;
        } else if key == "hierarchical_memory_limit" {
            let limit: u64 = value
                .trim()
                .parse()
                .map_err(|_| "hierarchical_memory_limit is not a number")?;
            stat.hierarchical_limit = Some(limit).filter(|&l| l < V1_UNLIMITED);
        }
    }
    Ok(stat)
}

/// A byte count on its own (`memory.usage_in_bytes`, `memory.current`).
pub fn parse_bytes(text: &str) -> Result<u64, &'static str> {
    text.trim().parse().map_err(|_| "the byte count is not a number")
}

/// `memory.limit_in_bytes` (v1): `None` when unlimited.
pub fn parse_limit_in_bytes(text: &str) -> Result<Option<u64>, &'static str> {
    // Writing -1 sets "unlimited"; the kernel reads it back as a huge number, but accept both.
    if text.trim() == "-1" {
        return Ok(None);
    }
    Ok(Some(parse_bytes(text)?).filter(|&l| l < V1_UNLIMITED))
}

/// `memory.max` (v2): `None` for `max`.
pub fn parse_memory_max(text: &str) -> Result<Option<u64>, &'static str> {
    match text.trim() {
        "max" => Ok(None),
        t => t.parse().map(Some).map_err(|_| "the limit is neither a number nor max"),
    }
}

/// `used` in % of `total`, clamped to 0–100.
pub fn used_pct(used: u64, total: u64) -> f64 {
    if total == 0 {
        0.0
    } else {
        (100.0 * used as f64 / total as f64).clamp(0.0, 100.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meminfo_of_a_real_kernel() {
        let m = parse_meminfo(include_str!("fixtures/meminfo")).unwrap();
        assert_eq!(m.total_bytes, 24_684_096 * 1024);
        assert_eq!(m.available_bytes, 23_986_492 * 1024);
        let used = m.total_bytes - m.available_bytes;
        assert!((used_pct(used, m.total_bytes) - 2.827).abs() < 0.001);
    }

    #[test]
    fn meminfo_errors() {
        assert!(
            parse_meminfo("MemTotal: 100 kB\n")
                .unwrap_err()
                .contains("MemAvailable")
        );
        assert!(
            parse_meminfo("MemAvailable: 100 kB\n")
                .unwrap_err()
                .contains("MemTotal")
        );
        assert!(parse_meminfo("MemTotal: x kB\nMemAvailable: 1 kB\n").is_err());
    }

    #[test]
    fn memory_stat_v1_of_a_real_kernel_is_unlimited() {
        let s = parse_memory_stat(include_str!("fixtures/memory.stat.v1"), &CgroupVersion::V1).unwrap();
        // total_inactive_file, not the cgroup's own inactive_file (217088).
        assert_eq!(s.inactive_file, 517_758_976);
        // hierarchical_memory_limit 9223372036854771712
        assert_eq!(s.hierarchical_limit, None);
    }

    #[test]
    fn memory_stat_v2() {
        let s = parse_memory_stat(include_str!("fixtures/memory.stat.v2"), &CgroupVersion::V2).unwrap();
        assert_eq!(
            s,
            MemoryStat {
                inactive_file: 20_480_000,
                hierarchical_limit: None
            }
        );
    }

    #[test]
    fn limits() {
        assert_eq!(parse_limit_in_bytes("9223372036854771712\n"), Ok(None));
        assert_eq!(parse_limit_in_bytes("-1\n"), Ok(None));
        assert_eq!(parse_limit_in_bytes("268435456\n"), Ok(Some(256 << 20)));
        assert_eq!(parse_memory_max("max\n"), Ok(None));
        assert_eq!(parse_memory_max("268435456\n"), Ok(Some(256 << 20)));
        assert!(parse_memory_max("lots\n").is_err());
        assert_eq!(used_pct(1, 0), 0.0);
        assert_eq!(used_pct(3, 2), 100.0);
    }
}
