//! Message counts grow with the routers, not with the square of the degree: a router sends
//! one frame per neighbor per sample, whatever it forwards (protocol 2.0 batches), and at most
//! one more per interval when a forwarding deadline comes before its sample (2.5).

mod common;

use common::{run, sim};
use wuos_sim::SimConfig;

fn frames_per_router_second(spec: &str) -> (f64, u64) {
    let mut s = sim(spec, SimConfig::default(), "", None);
    run(&mut s, 5_000);
    let before = s.totals();
    run(&mut s, 25_000);
    let after = s.totals();
    let routers = s.network().len() as f64;
    let frames = (after.frames_sent - before.frames_sent) as f64;
    (frames / routers / 20.0, s.traffic("hub").unwrap().frames_sent)
}

#[test]
fn a_star_sends_frames_in_proportion_to_its_routers() {
    let (small, _) = frames_per_router_second("star:10");
    let (big, hub) = frames_per_router_second("star:40");
    // Every link carries one frame per sample each way: 2 × 40 frames a second over 41
    // routers, and a few more for forwarding deadlines (the leaves whose adverts reach the hub
    // just after its sample); the square of the hub's degree would be 1,600 items a second.
    assert!(
        big / small < 1.2,
        "frames per router-second grow from {small:.2} to {big:.2}"
    );
    assert!((1.8..2.3).contains(&big), "{big:.2} frames per router-second");
    // Over the 30 s: one frame per leaf per second, and at most one more per leaf in the
    // seconds with a deadline; in this run about one second in ten has one.
    assert!(
        hub < 40 * 30 * 5 / 4,
        "the hub sends about one frame per leaf per second: {hub}"
    );
}
