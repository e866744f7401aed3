//! CPU: counters (`/proc/stat`, `cpuacct.usage`, `cpu.stat`), capacity (online CPUs, CFS
//! quotas) and use as a share of capacity.
//!
//! - Whole machine: use is `1 - Δ(idle + iowait) / Δtotal` over the aggregate `cpu` line of
//!   `/proc/stat`, where total is the sum of user, nice, system, idle, iowait, irq, softirq and
//!   steal (guest and guest_nice are left out: the kernel already counts them in user and nice).
//!   The denominator is jiffies, not wall time, so the figure is independent of when the caller
//!   samples. Capacity is the number of `cpuN` lines (the online CPUs the aggregate line sums).
//! - Cgroup: use is `Δusage / (Δwall × capacity)`, capacity being the smallest CFS quota of the
//!   cgroup and its ancestors, at most the host's CPU count. Short windows can make usage run a
//!   little ahead of the quota (CFS burst, read-versus-`Instant` skew): the share is clamped to
//!   100 %.

/// What `/proc/stat` says about CPUs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProcStat {
    /// Jiffies not idle (everything but idle and iowait), summed over online CPUs.
    pub busy: u64,
    /// All jiffies (see the module documentation), summed over online CPUs.
    pub total: u64,
    /// Online CPUs (`cpuN` lines).
    pub cpus: u32,
}

/// A CPU counter of one sampling.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CpuCounter {
    /// From `/proc/stat`.
    Jiffies { busy: u64, total: u64 },
    /// From a cgroup, in nanoseconds.
    UsageNs(u64),
}

/// Parses the `cpu` lines at the top of `/proc/stat` (stops at the first other line: the
/// interrupt lines that follow are long and not needed).
pub fn parse_proc_stat(text: &str) -> Result<ProcStat, &'static str> {
    let mut aggregate = None;
    let mut cpus = 0;
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("cpu") else { break };
        if rest.starts_with(|c: char| c.is_ascii_digit()) {
            cpus += 1;
        } else if rest.starts_with(' ') {
            let mut total = 0u64;
            let mut idle = 0u64;
            let mut n = 0;
            for (i, field) in rest.split_ascii_whitespace().take(8).enumerate() {
                let v: u64 = field
                    .parse()
                    .map_err(|_| "a field of the aggregate cpu line is not a number")?;
                total = total.wrapping_add(v);
                if i == 3 || i == 4 {
                    idle = idle.wrapping_add(v);
                }
                n += 1;
            }
            if n < 4 {
                return Err("the aggregate cpu line has fewer than 4 fields");
            }
            aggregate = Some((total.saturating_sub(idle), total));
        }
    }
    let (busy, total) = aggregate.ok_or("there is no aggregate cpu line")?;
    if cpus == 0 {
        return Err("there is no cpuN line");
    }
    Ok(ProcStat { busy, total, cpus })
}

/// `cpuacct.usage` (cgroup v1): nanoseconds.
pub fn parse_cpuacct_usage(text: &str) -> Result<u64, &'static str> {
    text.trim().parse().map_err(|_| "the usage is not a number")
}

/// `usage_usec` of `cpu.stat` (cgroup v2): microseconds.
pub fn parse_cpu_stat_usage_usec(text: &str) -> Result<u64, &'static str> {
    for line in text.lines() {
        if let Some(v) = line.strip_prefix("usage_usec ") {
            return v.trim().parse().map_err(|_| "usage_usec is not a number");
        }
    }
    Err("there is no usage_usec line")
}

/// `cpu.cfs_quota_us` (cgroup v1): `None` for `-1` (no quota).
pub fn parse_cfs_quota_us(text: &str) -> Result<Option<u64>, &'static str> {
    let q: i64 = text.trim().parse().map_err(|_| "the quota is not a number")?;
    Ok(u64::try_from(q).ok().filter(|&q| q > 0))
}

/// `cpu.cfs_period_us` (cgroup v1).
pub fn parse_cfs_period_us(text: &str) -> Result<u64, &'static str> {
    match text.trim().parse() {
        Ok(0) | Err(_) => Err("the period is not a positive number"),
        Ok(p) => Ok(p),
    }
}

/// Cores granted by a v1 quota and period.
pub fn cfs_cores(quota_us: u64, period_us: u64) -> Option<f64> {
    (period_us > 0).then(|| quota_us as f64 / period_us as f64)
}

/// `cpu.max` (cgroup v2), `"QUOTA PERIOD"` or `"max PERIOD"`: cores, `None` for no quota.
pub fn parse_cpu_max(text: &str) -> Result<Option<f64>, &'static str> {
    let mut it = text.split_ascii_whitespace();
    let quota = it.next().ok_or("the file is empty")?;
    if quota == "max" {
        return Ok(None);
    }
    let quota: u64 = quota.parse().map_err(|_| "the quota is neither a number nor max")?;
    let period: u64 = it
        .next()
        .ok_or("the period is missing")?
        .parse()
        .map_err(|_| "the period is not a number")?;
    cfs_cores(quota, period).map(Some).ok_or("the period is 0")
}

/// CPU use between two counters, in % of `capacity` cores, clamped to 0–100.
pub fn used_pct(prev: CpuCounter, cur: CpuCounter, elapsed_secs: f64, capacity: f64) -> f64 {
    let pct = match (prev, cur) {
        (CpuCounter::Jiffies { busy: b0, total: t0 }, CpuCounter::Jiffies { busy: b1, total: t1 }) => {
            let total = t1.saturating_sub(t0);
            if total == 0 {
                return 0.0;
            }
            100.0 * b1.saturating_sub(b0) as f64 / total as f64
        }
        (CpuCounter::UsageNs(u0), CpuCounter::UsageNs(u1)) => {
            if elapsed_secs <= 0.0 || capacity <= 0.0 {
                return 0.0;
            }
            100.0 * u1.saturating_sub(u0) as f64 / 1e9 / (elapsed_secs * capacity)
        }
        _ => return 0.0,
    };
    pct.clamp(0.0, 100.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_stat_of_a_real_kernel() {
        let s = parse_proc_stat(include_str!("fixtures/proc_stat")).unwrap();
        // cpu  123633 0 35602 307234 1441 0 6429 150 0 0
        assert_eq!(s.total, 123633 + 35602 + 307234 + 1441 + 6429 + 150);
        assert_eq!(s.busy, 123633 + 35602 + 6429 + 150);
        assert_eq!(s.cpus, 2);
    }

    #[test]
    fn cpu_percent_from_two_proc_stat_snapshots() {
        let a =
            "cpu  100 0 100 800 0 0 0 0 0 0\ncpu0 50 0 50 400 0 0 0 0 0 0\ncpu1 50 0 50 400 0 0 0 0 0 0\nintr 1 2\n";
        // 200 jiffies later: 50 user + 10 system + 10 iowait + 130 idle; guest (in user) ignored.
        let b = "cpu  150 0 110 930 10 0 0 0 40 0\ncpu0 75 0 55 465 5 0 0 0 20 0\ncpu1 75 0 55 465 5 0 0 0 20 0\n";
        let (a, b) = (parse_proc_stat(a).unwrap(), parse_proc_stat(b).unwrap());
        assert_eq!(b.total - a.total, 200);
        let c = |s: ProcStat| CpuCounter::Jiffies {
            busy: s.busy,
            total: s.total,
        };
        assert_eq!(used_pct(c(a), c(b), 1.0, 2.0), 30.0);
        assert_eq!(used_pct(c(a), c(a), 1.0, 2.0), 0.0, "no jiffies elapsed");
    }

    #[test]
    fn proc_stat_errors() {
        assert_eq!(parse_proc_stat("intr 1\n"), Err("there is no aggregate cpu line"));
        assert_eq!(
            parse_proc_stat("cpu  1 2 3\ncpu0 1 2 3 4\n"),
            Err("the aggregate cpu line has fewer than 4 fields")
        );
        assert_eq!(
            parse_proc_stat("cpu  1 2 x 4\n"),
            Err("a field of the aggregate cpu line is not a number")
        );
    }

    #[test]
    fn cgroup_usage_files() {
        assert_eq!(parse_cpuacct_usage("1625294857920\n"), Ok(1_625_294_857_920));
        assert_eq!(
            parse_cpu_stat_usage_usec(include_str!("fixtures/cpu.stat")),
            Ok(1_656_655_835)
        );
        assert_eq!(
            parse_cpu_stat_usage_usec("user_usec 1\n"),
            Err("there is no usage_usec line")
        );
    }

    #[test]
    fn quotas() {
        assert_eq!(parse_cfs_quota_us("-1\n"), Ok(None));
        assert_eq!(parse_cfs_quota_us("50000\n"), Ok(Some(50_000)));
        assert_eq!(parse_cfs_period_us("100000\n"), Ok(100_000));
        assert!(parse_cfs_period_us("0\n").is_err());
        assert_eq!(cfs_cores(50_000, 100_000), Some(0.5));
        assert_eq!(parse_cpu_max("max 100000\n"), Ok(None));
        assert_eq!(parse_cpu_max("50000 100000\n"), Ok(Some(0.5)));
        assert_eq!(parse_cpu_max("150000 100000\n"), Ok(Some(1.5)));
        assert!(parse_cpu_max("50000 0\n").is_err());
        assert!(parse_cpu_max("").is_err());
    }

    #[test]
    fn cgroup_cpu_percent_uses_wall_time_and_capacity() {
        // 0.25 s of CPU over 1 s on half a core: 50 %.
        let pct = used_pct(
            CpuCounter::UsageNs(1_000_000_000),
            CpuCounter::UsageNs(1_250_000_000),
            1.0,
            0.5,
        );
        assert!((pct - 50.0).abs() < 1e-9, "{pct}");
        // Running ahead of the quota is clamped.
        assert_eq!(
            used_pct(CpuCounter::UsageNs(0), CpuCounter::UsageNs(2_000_000_000), 1.0, 0.5),
            100.0
        );
        assert_eq!(
            used_pct(CpuCounter::UsageNs(0), CpuCounter::UsageNs(1), 0.0, 0.5),
            0.0,
            "no time elapsed"
        );
        // A counter that went backwards (cgroup recreated) gives 0, not a huge figure.
        assert_eq!(used_pct(CpuCounter::UsageNs(5), CpuCounter::UsageNs(1), 1.0, 1.0), 0.0);
    }
}
