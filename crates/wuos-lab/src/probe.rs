//! Reading what measurement tools print: `ping` (iputils) summaries and per-reply times.

/// What one `ping` run reported.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PingSummary {
    pub transmitted: u32,
    pub received: u32,
    pub min_ms: Option<f64>,
    pub avg_ms: Option<f64>,
    pub max_ms: Option<f64>,
    pub mdev_ms: Option<f64>,
    /// Round-trip time of every reply, in order (empty with `ping -q`).
    pub rtts_ms: Vec<f64>,
}

/// Parses iputils `ping` output; anything missing stays zero / `None`.
pub fn parse_ping(out: &str) -> PingSummary {
    let mut s = PingSummary::default();
    for line in out.lines() {
        if let Some(t) = line.split("time=").nth(1) {
            if let Ok(v) = t.trim_end_matches(" ms").trim().parse() {
                s.rtts_ms.push(v);
            }
        } else if line.contains("packets transmitted") {
            let mut parts = line
                .split(',')
                .map(|p| p.split_whitespace().next().and_then(|n| n.parse().ok()));
            s.transmitted = parts.next().flatten().unwrap_or(0);
            s.received = parts.next().flatten().unwrap_or(0);
        } else if line.starts_with("rtt") || line.starts_with("round-trip") {
            let values: Vec<f64> = line
                .split('=')
                .nth(1)
                .unwrap_or("")
                .trim()
                .trim_end_matches("ms")
                .split('/')
                .filter_map(|v| v.trim().parse().ok())
                .collect();
            if let [min, avg, max, mdev] = values[..] {
                (s.min_ms, s.avg_ms, s.max_ms, s.mdev_ms) = (Some(min), Some(avg), Some(max), Some(mdev));
            }
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_summary_and_replies() {
        let out = "PING 10.254.0.4 (10.254.0.4) 56(84) bytes of data.\n\
                   64 bytes from 10.254.0.4: icmp_seq=1 ttl=62 time=30.1 ms\n\
                   64 bytes from 10.254.0.4: icmp_seq=3 ttl=62 time=30.4 ms\n\n\
                   --- 10.254.0.4 ping statistics ---\n\
                   3 packets transmitted, 2 received, 33.3333% packet loss, time 401ms\n\
                   rtt min/avg/max/mdev = 30.101/30.250/30.400/0.100 ms\n";
        let s = parse_ping(out);
        assert_eq!((s.transmitted, s.received), (3, 2));
        assert_eq!(s.avg_ms, Some(30.25));
        assert_eq!(s.mdev_ms, Some(0.1));
        assert_eq!(s.rtts_ms, vec![30.1, 30.4]);
    }

    #[test]
    fn garbage_gives_nothing() {
        assert_eq!(
            parse_ping("ping: connect: Network is unreachable"),
            PingSummary::default()
        );
    }
}
