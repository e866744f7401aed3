//! Interfaces: `/proc/net/dev` and per-interface rates.
//!
//! `/proc/net/dev` lists the interfaces of the network namespace of the reading process, which
//! is what the daemon wants: it runs inside the router's namespace. `lo` is skipped.
//!
//! Rates are against the previous reading of the same interface name; an interface seen for the
//! first time, or whose counters went backwards (deleted and re-created), has rates 0 for that
//! interval.

use super::InterfaceRates;
use super::sample::per_second;

/// Counters of one interface.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct InterfaceCounters {
    pub rx_bytes: u64,
    pub rx_packets: u64,
    pub tx_bytes: u64,
    pub tx_packets: u64,
}

/// The interfaces of `/proc/net/dev` but `lo`, in file order, with their counters.
pub fn parse_net_dev(text: &str) -> impl Iterator<Item = Result<(&str, InterfaceCounters), &'static str>> {
    // Two header lines; then `name: rx_bytes rx_packets errs drop fifo frame compressed multicast
    // tx_bytes tx_packets …`. A long rx_bytes can touch the colon: split there, not on spaces.
    text.lines().skip(2).filter_map(|line| {
        let (name, counters) = line.split_once(':')?;
        let name = name.trim();
        if name == "lo" {
            return None;
        }
        Some(parse_counters(counters).map(|c| (name, c)))
    })
}

fn parse_counters(text: &str) -> Result<InterfaceCounters, &'static str> {
    let mut fields = text.split_ascii_whitespace();
    let mut next = |skip| -> Result<u64, &'static str> {
        fields
            .nth(skip)
            .ok_or("an interface line is too short")?
            .parse()
            .map_err(|_| "an interface counter is not a number")
    };
    Ok(InterfaceCounters {
        rx_bytes: next(0)?,
        rx_packets: next(0)?,
        tx_bytes: next(6)?,
        tx_packets: next(0)?,
    })
}

/// Rates of the interfaces of `/proc/net/dev` text against `prev` (the counters of the previous
/// reading, over `elapsed_secs`), and replaces `prev` with the current counters.
///
/// `prev` is kept in file order, so in the steady state each interface is found at its own index
/// and nothing is allocated but the returned names.
pub fn update_rates(
    text: &str,
    prev: &mut Vec<(String, InterfaceCounters)>,
    elapsed_secs: f64,
) -> Result<Vec<InterfaceRates>, &'static str> {
    let mut rates = Vec::with_capacity(prev.len());
    for (i, line) in parse_net_dev(text).enumerate() {
        let (name, cur) = line?;
        let old = match prev.get(i) {
            Some((n, c)) if n == name => Some(*c),
            _ => match prev.iter().skip(i + 1).position(|(n, _)| n == name) {
                Some(j) => {
                    prev.swap(i, i + 1 + j);
                    Some(prev[i].1)
                }
                None => {
                    prev.insert(i, (name.to_owned(), cur));
                    None
                }
            },
        };
        prev[i].1 = cur;
        let rate = |f: fn(&InterfaceCounters) -> u64| old.map_or(0.0, |o| per_second(f(&o), f(&cur), elapsed_secs));
        rates.push(InterfaceRates {
            name: name.to_owned(),
            rx_bytes_per_s: rate(|c| c.rx_bytes),
            tx_bytes_per_s: rate(|c| c.tx_bytes),
            rx_packets_per_s: rate(|c| c.rx_packets),
            tx_packets_per_s: rate(|c| c.tx_packets),
        });
    }
    prev.truncate(rates.len());
    Ok(rates)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEADER: &str = "Inter-|   Receive                                                |  Transmit\n \
        face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n";

    fn dev(lines: &[(&str, u64, u64, u64, u64)]) -> String {
        let mut s = HEADER.to_owned();
        for (name, rb, rp, tb, tp) in lines {
            s += &format!(
                "{name:>6}: {rb:>8} {rp:>7}    0    0    0     0          0         0 {tb:>8} {tp:>7}    0    0    0     0       0          0\n"
            );
        }
        s
    }

    #[test]
    fn net_dev_of_a_real_kernel_skips_lo() {
        let ifaces: Vec<_> = parse_net_dev(include_str!("fixtures/net_dev"))
            .collect::<Result<_, _>>()
            .unwrap();
        let names: Vec<&str> = ifaces.iter().map(|(n, _)| *n).collect();
        assert_eq!(names, ["ifb0", "ifb1", "eth0"]);
        assert_eq!(
            ifaces[2].1,
            InterfaceCounters {
                rx_bytes: 146_089_523,
                rx_packets: 7867,
                tx_bytes: 458_451,
                tx_packets: 4515
            }
        );
    }

    #[test]
    fn counter_touching_the_colon() {
        let text = format!("{HEADER}eth0:12345678901 10 0 0 0 0 0 0 20 2 0 0 0 0 0 0\n");
        let (name, c) = parse_net_dev(&text).next().unwrap().unwrap();
        assert_eq!((name, c.rx_bytes, c.tx_packets), ("eth0", 12_345_678_901, 2));
        assert!(
            parse_net_dev(&format!("{HEADER}eth0: 1 2 3\n"))
                .next()
                .unwrap()
                .is_err()
        );
    }

    #[test]
    fn rates_follow_interfaces_by_name() {
        let mut prev = Vec::new();
        let r = update_rates(&dev(&[("lo", 5, 5, 5, 5), ("eth0", 1000, 10, 500, 5)]), &mut prev, 0.0).unwrap();
        assert_eq!(r.len(), 1);
        assert_eq!((r[0].name.as_str(), r[0].rx_bytes_per_s), ("eth0", 0.0));

        // Two seconds later, a new interface appears before eth0.
        let text = dev(&[("eth1", 7, 7, 7, 7), ("eth0", 3000, 30, 900, 9)]);
        let r = update_rates(&text, &mut prev, 2.0).unwrap();
        assert_eq!(
            r[0],
            InterfaceRates {
                name: "eth1".into(),
                ..Default::default()
            },
            "new: no rate yet"
        );
        assert_eq!(
            r[1],
            InterfaceRates {
                name: "eth0".into(),
                rx_bytes_per_s: 1000.0,
                tx_bytes_per_s: 200.0,
                rx_packets_per_s: 10.0,
                tx_packets_per_s: 2.0,
            }
        );

        // eth1 goes away; eth0 is re-created (counters restart).
        let r = update_rates(&dev(&[("eth0", 100, 1, 100, 1)]), &mut prev, 1.0).unwrap();
        assert_eq!(
            r,
            [InterfaceRates {
                name: "eth0".into(),
                ..Default::default()
            }]
        );
        assert_eq!(prev.len(), 1);
    }
}
