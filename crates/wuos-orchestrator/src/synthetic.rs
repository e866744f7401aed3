//! Deterministic synthetic neighborhoods, for benchmarks and scale tests.

use wuos_model::rng::SplitMix64;
use wuos_policy::{Candidate, Figures, Role};

/// `n` candidates from `seed` (same seed, same candidates, on every platform): first the local
/// router `r0000` (0 hops, fog), then routers `r0001`... 1–4 hops away, mostly edge and fog with
/// a few `dc` and `host` entries, latency growing with hops, figures spread over their ranges,
/// about 5% stale and about 5% missing each optional figure.
pub fn synthetic_neighborhood(n: usize, seed: u64) -> Vec<Candidate> {
    let mut rng = SplitMix64::new(seed);
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let local = i == 0;
        let hops = if local { 0 } else { 1 + rng.below(4) as u32 };
        let role = match (local, rng.below(100)) {
            (true, _) => Role::Fog,
            (false, 0..=54) => Role::Edge,
            (false, 55..=94) => Role::Fog,
            (false, 95..=97) => Role::Dc,
            (false, _) => Role::Host,
        };
        let mut maybe = |v: f64| if rng.below(100) < 5 { None } else { Some(v) };
        let cpu = maybe(0.0);
        let mem = maybe(0.0);
        let cores = maybe(0.0);
        let mib = maybe(0.0);
        let psi = [maybe(0.0), maybe(0.0), maybe(0.0)];
        let latency = maybe(0.0);
        let mut pct = || (rng.next_f64() * 1000.0).round() / 10.0;
        let figures = Figures {
            cpu_used_pct: cpu.map(|_| pct()),
            mem_used_pct: mem.map(|_| pct()),
            cpu_free_cores: cores.map(|_| (pct() / 25.0).round() / 4.0),
            mem_free_mib: mib.map(|_| (pct() * 40.0).round()),
            cpu_pressure: psi[0].map(|_| pct() / 5.0),
            mem_pressure: psi[1].map(|_| pct() / 5.0),
            io_pressure: psi[2].map(|_| pct() / 5.0),
        };
        let latency_ms = if local {
            Some(0.0)
        } else {
            latency.map(|_| f64::from(hops) * (0.5 + rng.next_f64() * 4.5))
        };
        out.push(Candidate {
            name: format!("r{i:04}"),
            hops,
            latency_ms,
            role,
            stale: !local && rng.below(100) < 5,
            figures,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_and_shaped() {
        let a = synthetic_neighborhood(1000, 7);
        assert_eq!(a, synthetic_neighborhood(1000, 7));
        assert_ne!(a, synthetic_neighborhood(1000, 8));
        assert_eq!(a.len(), 1000);
        assert_eq!((a[0].name.as_str(), a[0].hops), ("r0000", 0));
        assert!(a[1..].iter().all(|c| (1..=4).contains(&c.hops)));
        let stale = a.iter().filter(|c| c.stale).count();
        assert!((20..=90).contains(&stale), "{stale} stale");
        assert!(a.iter().any(|c| c.role == Role::Dc) && a.iter().any(|c| c.role == Role::Host));
        assert!(a.iter().any(|c| c.figures.mem_used_pct.is_none()));
        assert!(synthetic_neighborhood(0, 1).is_empty());
    }
}
