//! The user-space impairment relay of a link (this kernel has no `sch_netem`): the delay it adds
//! and its TCP throughput, on a two-router lab.
//!
//! The added delay comes from `ping`'s round trips: (RTT through the relay − median RTT without
//! it) / 2 per reply. iputils `ping` prints `time=` with 3 decimals below 1 ms, 2 below 10 ms,
//! 1 below 100 ms and none above ([`crate::node::printed_resolution_ms`] reads what it printed): a 20 ms delay
//! (≈ 40 ms RTT) is read to 0.1 ms, so the added one-way delay has a 0.05 ms resolution, and it
//! is quoted at that.

use std::time::Duration;

use anyhow::{Result, bail};
use serde::Serialize;
use wuos_lab::link::LinkChange;
use wuos_lab::probe::parse_ping;
use wuos_lab::progress::Silent;
use wuos_lab::{LabEnv, down, status, up};
use wuos_model::generate::{Generator, generate};

use crate::node::{Node, iperf_gbps, printed_resolution_ms};
use crate::report::Clock;
use crate::stats::{Summary, median};

const LAB: &str = "benchimp";

#[derive(Clone, Debug, Serialize)]
pub struct RelayResult {
    pub configured_delay_ms: f64,
    /// Round trip without the relay, its median (what is subtracted).
    pub base_rtt_median_ms: f64,
    /// (RTT − base RTT) / 2 per reply, rounded to `added_resolution_ms`.
    pub added_one_way_ms: Summary,
    /// The resolution of the added delay: half the coarser of the two RTTs' printed resolutions.
    pub added_resolution_ms: f64,
    pub relay_tcp_gbps: f64,
    pub direct_tcp_gbps: f64,
    pub clock: Clock,
}

/// (RTTs in ms, their printed resolution) of `count` pings from r1 to `dst`, 20 ms apart.
fn pings(env: &LabEnv, dst: &str, count: u32) -> Result<(Vec<f64>, f64)> {
    let out = Node::new(env, LAB, "r1").ping(
        &[],
        &["-c", &count.to_string(), "-i", "0.02"],
        dst,
        Duration::from_secs(u64::from(count) / 20 + 10),
    )?;
    let res = printed_resolution_ms(&out).unwrap_or(f64::NAN);
    Ok((parse_ping(&out).rtts_ms, res))
}

fn set_delay(env: &LabEnv, delay: Duration) -> Result<()> {
    let change = LinkChange {
        delay: Some(delay),
        ..Default::default()
    };
    wuos_lab::link::set(env, LAB, "r1", "r2", &change)?;
    Ok(())
}

/// Measures the relay on a line:2 lab (brought up and down here) with `count` pings.
pub fn measure(env: &LabEnv, count: u32) -> Result<RelayResult> {
    let _ = down::down(env, LAB, &Silent);
    let opts = up::UpOptions {
        name: LAB.into(),
        workers: 2,
        daemons: None,
    };
    up::up(env, generate(&Generator::Line(2), 1), &opts, &Silent)?;
    let res = measure_up(env, count);
    down::down(env, LAB, &Silent)?;
    res
}

fn measure_up(env: &LabEnv, count: u32) -> Result<RelayResult> {
    let st = status::status(env, LAB)?;
    let dst = st.nodes[1].loopback.to_string();
    let (r1, r2) = (Node::new(env, LAB, "r1"), Node::new(env, LAB, "r2"));
    let direct = iperf_gbps(r2, r1, &dst, 3, &[])?;
    let (base_rtts, base_res) = pings(env, &dst, 100)?;
    let Some(base) = median(&base_rtts) else {
        bail!("no ping replies on the link without the relay");
    };
    let configured = Duration::from_millis(20);
    set_delay(env, configured)?;
    pings(env, &dst, 1)?; // ARP through the relay
    let (rtts, res) = pings(env, &dst, count)?;
    let resolution = base_res.max(res) / 2.0;
    let added: Vec<f64> = rtts
        .iter()
        .map(|r| ((r - base) / 2.0 / resolution).round() * resolution)
        .collect();
    let Some(added_one_way_ms) = Summary::of(&added) else {
        bail!("no ping replies through the relay");
    };
    // TCP through the relay at a small delay (a 40 ms RTT would measure TCP's window, not the
    // relay).
    set_delay(env, Duration::from_micros(100))?;
    let relay = iperf_gbps(r2, r1, &dst, 3, &[])?;
    Ok(RelayResult {
        configured_delay_ms: configured.as_secs_f64() * 1e3,
        base_rtt_median_ms: base,
        added_one_way_ms,
        added_resolution_ms: resolution,
        relay_tcp_gbps: relay,
        direct_tcp_gbps: direct,
        clock: Clock::new(
            "relay: added one-way delay",
            "ping sends an echo request from r1 (kernel timestamp)",
            "ping receives the reply through the relay; minus the median RTT of the same link without the relay, halved",
            "nothing of the relay; the link's own round trip is subtracted",
            &format!(
                "ping prints RTTs with {} ms here through the relay and {} ms without; added delay resolution {} ms",
                res, base_res, resolution
            ),
        ),
    })
}
