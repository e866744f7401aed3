//! wuos's benchmarks and demos, as a library: the `wuos` command's `bench` and `demo`
//! subcommands only parse their options and call `run` here.
//!
//! # Layout
//! - [`lab`]: `wuos bench lab` — lab up/down bare and with daemons, all-pairs reachability,
//!   Mininet side by side ([`lab::mininet`]), the impairment relay ([`lab::relay`]).
//! - [`telemetry`]: `wuos bench telemetry` — advert propagation two hops away, daemon CPU, RSS
//!   and protocol bytes.
//! - [`domains`]: `wuos bench domains` — domain starts as the caller sees them and as the daemon
//!   reports them (on demand, idle pool, microVM), idle-domain memory.
//! - [`isolation`]: `wuos bench isolation` — the routing control plane (hello RTT and jitter,
//!   telemetry regularity, neighbor losses; [`isolation::control`]) and forwarding under service
//!   stress, reserved vs unreserved vs idle.
//! - [`xdp`]: `wuos bench xdp` — the XDP classifier vs kernel forwarding.
//! - [`orchestration`]: `wuos bench orchestration` — placement time, and decision latency from
//!   the crossing sample to the routes in every kernel ([`orchestration::fib`] watches the FIBs,
//!   [`orchestration::latency`] keeps the books).
//! - [`overlays`]: `wuos bench overlays` — creating 1 to 1,000 SD-WAN overlays on an edge (time,
//!   CPU, memory), wuos's rtnetlink executor beside pyroute2 doing the same ops.
//! - [`sim`]: `wuos bench sim` — the simulator's speed (router-seconds per wall-second) and
//!   memory per simulated router, at 1,000 to 100,000 routers, each run in a process of its own.
//! - [`voip`]: the VoIP scenario ([`voip::Scenario`], shared by `wuos demo voip` and the
//!   orchestration bench) and the demo itself; [`voip::sipp`] parses SIPp's files.
//! - [`failover`]: `wuos bench failover` — how fast a steered SD-WAN class leaves a degraded
//!   path, on the wire; what the path probes cost.
//! - [`sdwan_demo`]: `wuos demo sdwan` — three sites over two underlays, SIP calls and a bulk
//!   transfer in SLA classes through a timeline of degradations.
//! - [`sdwan_lab`]: what those two do to an SD-WAN lab (intents, an edge's path report, an
//!   underlay retuned live).
//! - [`plot`]: the demos' plots (PNG and SVG).
//! - [`demo`]: `wuos demo` — the sample lab.
//! - Shared helpers: [`stats`] (the percentile helper, summaries, runs, rounding to a
//!   resolution), [`table`] (the table printer), [`report`] (clocks, JSON), [`host`] (the
//!   machine, procfs), [`node`] (commands and daemons of a lab router, ping, iperf3).
//!
//! # Conventions
//! Every benchmark states the machine it ran on, runs several times and reports medians with
//! their spread, prints a table and writes JSON (`bench-results/NAME.json` by default), and says
//! for each headline figure where its clock starts and stops, what it excludes and the
//! instrument's resolution ([`report::Clock`]); no figure is quoted finer than that resolution.
//! Where a peer exists (Mininet for the lab) it is measured side by side in the same run.
//!
//! A benchmark harness is tooling (STYLE §8): errors are `anyhow` with context, and the
//! benchmarks bring up real labs (namespaces named `wuos.*`, root needed) and always take them
//! down again.

use std::path::PathBuf;

/// What the options of every benchmark have: a full and a quick (smoke) form, a number of runs,
/// and the name its JSON is written under by default (`bench-results/NAME.json`).
pub trait BenchOptions: Sized {
    const NAME: &'static str;
    fn full(out: PathBuf) -> Self;
    /// A smoke run: proves the benchmark works end to end; its figures are not for quoting.
    fn quick(out: PathBuf) -> Self;
    fn runs_mut(&mut self) -> &mut usize;
}

pub mod demo;
pub mod domains;
pub mod failover;
pub mod host;
pub mod isolation;
pub mod lab;
pub mod node;
pub mod orchestration;
pub mod overlays;
pub mod overlays_e2e;
pub mod plot;
pub mod report;
pub mod sdwan_demo;
pub mod sdwan_lab;
pub mod sim;
pub mod stats;
pub mod table;
pub mod telemetry;
pub mod voip;
pub mod xdp;
