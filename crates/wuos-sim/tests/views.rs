//! The final views are the routers within the flooding radius, at their shortest-path hops
//! (compared with a breadth-first search of the topology), with routers starting at random
//! times and sampling at random phases.

mod common;

use common::{expected_views, run, sim_of, topology, views};
use wuos_sim::SimConfig;

fn converges(spec: &str, hop_limit: u32) {
    let mut cfg = SimConfig::default();
    cfg.protocol.hop_limit = hop_limit;
    let t = topology(spec, cfg.seed);
    let mut s = sim_of(&t, cfg, "", None);
    for at in [10_000, 15_000, 20_500] {
        run(&mut s, at);
        let got = views(&s);
        let want = expected_views(&t, hop_limit, &[], &[]);
        for (r, v) in &want {
            assert_eq!(
                got.get(r),
                Some(v),
                "{spec} radius {hop_limit} at {at} ms: the view of {r}"
            );
        }
        assert_eq!(got.len(), want.len());
    }
}

#[test]
fn a_line_of_six() {
    converges("line:6", 2);
    converges("line:6", 3);
}

#[test]
fn a_ring_of_eight() {
    converges("ring:8", 2);
    converges("ring:8", 4);
}

#[test]
fn a_random_network_of_thirty() {
    converges("random:30", 2);
}

/// With a radius of 3 an origin 2 hops away can also be reached by a path of 3, and since each
/// router forwards with its next sample (phases differ), a new advert may come by the longer
/// path first; it is stored at 3 hops until the copy of the shorter path upgrades it. So at
/// any moment every router has exactly the origins within the radius, each at no fewer hops
/// than the shortest path and within the radius; and most at exactly the shortest.
#[test]
fn a_random_network_of_thirty_with_a_radius_of_three() {
    let mut cfg = SimConfig::default();
    cfg.protocol.hop_limit = 3;
    let t = topology("random:30", cfg.seed);
    let mut s = sim_of(&t, cfg, "", None);
    let want = expected_views(&t, 3, &[], &[]);
    let (mut exact, mut total) = (0, 0);
    for at in (10_000..=20_000).step_by(250) {
        run(&mut s, at);
        for (r, v) in views(&s) {
            let w = &want[&r];
            assert_eq!(
                v.keys().collect::<Vec<_>>(),
                w.keys().collect::<Vec<_>>(),
                "the origins in the view of {r} at {at} ms"
            );
            for (o, hops) in &v {
                assert!(
                    (w[o]..=3).contains(hops),
                    "{r} has {o} at {hops} hops at {at} ms, shortest {}",
                    w[o]
                );
                exact += usize::from(*hops == w[o]);
                total += 1;
            }
        }
    }
    assert!(
        exact * 100 >= total * 95,
        "{exact} of {total} entries at the shortest distance"
    );
}
