//! Property: on any connected network, every router's view converges to exactly the routers
//! within the flooding radius, each at its shortest-path distance in hops — and converges again
//! after a link fails, once the dead interval and the ageing have run their course.

mod sim;

use proptest::collection::vec;
use proptest::prelude::*;
use sim::{Params, Sim};

/// A connected graph on `n` routers: a random spanning tree plus random extra links, each with
/// a delay.
fn network() -> impl Strategy<Value = (usize, Vec<(usize, usize, u64)>)> {
    (2..=8usize).prop_flat_map(|n| {
        let tree = vec((any::<prop::sample::Index>(), 1..=20u64), n - 1);
        let extra = vec((0..n, 0..n, 1..=20u64), 0..n);
        (Just(n), tree, extra).prop_map(|(n, tree, extra)| {
            let mut links: Vec<(usize, usize, u64)> = Vec::new();
            for (child, (parent, d)) in (1..n).zip(tree) {
                links.push((parent.index(child), child, d));
            }
            for (a, b, d) in extra {
                let (a, b) = (a.min(b), a.max(b));
                if a != b && !links.iter().any(|&(x, y, _)| (x.min(y), x.max(y)) == (a, b)) {
                    links.push((a, b, d));
                }
            }
            (n, links)
        })
    })
}

fn build(n: usize, links: &[(usize, usize, u64)], hop_limit: u32, quiet_intervals: u32) -> Sim {
    let name = |i: usize| format!("r{}", i + 1);
    let routers: Vec<String> = (0..n).map(name).collect();
    let pairs: Vec<(String, String)> = links.iter().map(|&(a, b, _)| (name(a), name(b))).collect();
    let params = Params {
        hop_limit,
        quiet_intervals,
        // Quiet adverts stay quiet only while the figures do.
        steady: quiet_intervals > 1,
        ..Params::default()
    };
    let mut sim = Sim::new(params, &routers, &pairs);
    for &(a, b, d) in links {
        sim.link_mut(&name(a), &name(b)).delay_ms = d;
    }
    sim
}

fn check_views(sim: &Sim, hop_limit: u32) -> Result<(), TestCaseError> {
    for (router, view) in sim.views() {
        let want: std::collections::BTreeMap<String, u32> = sim
            .distances(&router)
            .into_iter()
            .filter(|(_, d)| *d <= hop_limit)
            .collect();
        prop_assert_eq!(&view, &want, "view of {} at t={}", router, sim.now);
    }
    Ok(())
}

/// [`check_views`] every 50 ms from now until `end_ms`.
fn check_views_until(sim: &mut Sim, hop_limit: u32, end_ms: u64) -> Result<(), TestCaseError> {
    while sim.now + 50 <= end_ms {
        sim.run_until(sim.now + 50);
        check_views(sim, hop_limit)?;
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn views_converge_to_the_flooding_radius((n, links) in network(), hop_limit in 1..=3u32, fail in any::<prop::sample::Index>(), quiet in prop_oneof![Just(1u32), Just(4u32)]) {
        let mut sim = build(n, &links, hop_limit, quiet);
        // Samples at 500, 1500, 2500...; by 3400 the round of 2500 has settled everywhere.
        sim.run_until(3400);
        check_views(&sim, hop_limit)?;
        // And at every moment after: each new round's copies race over the paths, and a copy
        // by a longer path that comes first must not make a view read the longer distance.
        check_views_until(&mut sim, hop_limit, 6400)?;
        // A link fails (at 6400). Within the dead interval (3 s) both ends notice; entries no longer
        // refreshed expire 6 s after their last refresh, and are removed at the next tick. A
        // copy sampled before the failure may still be forwarded for up to one interval per hop
        // beyond the first (each router forwards with its next frame): with a radius of 3, the
        // last refresh of a dead path is at most 2 s after the failure. With quiet adverts
        // (steady figures, re-sent every `quiet` intervals) entries stay fresh `quiet` times
        // longer, and the routers at both ends of the failed link advertise at once.
        let (a, b, _) = links[fail.index(links.len())];
        sim.link_mut(&format!("r{}", a + 1), &format!("r{}", b + 1)).up = false;
        let converged = 6400 + 2000 + 6000 * u64::from(quiet) + 1000;
        sim.run_until(converged);
        check_views(&sim, hop_limit)?;
        check_views_until(&mut sim, hop_limit, converged + 3000)?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// With the default quiet adverts (an unchanged advert re-sent every 100 intervals), a view
    /// converges again after a link fails without waiting for the origins' next adverts: entries
    /// orphaned by the failure are asked of the other neighbors and re-attached at once.
    #[test]
    fn views_converge_after_a_failure_without_waiting_for_quiet_origins((n, links) in network(), hop_limit in 1..=3u32, fail in any::<prop::sample::Index>()) {
        let quiet = wuos_proto::instance::DEFAULT_QUIET_INTERVALS;
        let mut sim = build(n, &links, hop_limit, quiet);
        sim.run_until(3400);
        check_views(&sim, hop_limit)?;
        let (a, b, _) = links[fail.index(links.len())];
        sim.link_mut(&format!("r{}", a + 1), &format!("r{}", b + 1)).up = false;
        // The dead interval (3 s), the last copies of the dead path (2 s), an orphan's grace (3
        // intervals), and a second for the ticks and the answers.
        let converged = 6400 + 3000 + 2000 + 3000 + 1000;
        sim.run_until(converged);
        check_views(&sim, hop_limit)?;
        check_views_until(&mut sim, hop_limit, converged + 3000)?;
    }
}
