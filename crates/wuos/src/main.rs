//! `wuos`: the command-line tool. It parses, calls the libraries, prints; nothing else.
//!
//! # Layout
//! - `main.rs`: the command tree and exit codes.
//! - `lab.rs`: `wuos lab …` (up, down, list, status, exec, graph, link set, relay).
//! - `bench.rs`, `bench_telemetry.rs`, `bench_domains.rs`, `bench_isolation.rs`, `bench_xdp.rs`: `wuos bench lab|telemetry|domains|isolation|xdp`, tables and JSON.
//! - `demo.rs`: `wuos demo` (a sample lab) and `demo_voip.rs` + `demo_plot.rs`: `wuos demo voip`, the
//!   README's main demo (the VoIP scenario, its plot).
//! - `router.rs`: `wuos status`, `wuos top` (router daemons), `wuos hog` (a load).
//! - `policy.rs`: `wuos policy apply|show`, `wuos decisions` (the orchestrator of a fog router).
//! - `service.rs`: `wuos service …` (domains on a router).
//! - `topo.rs`: a topology argument (file or generator) and helpers shared by the above.

mod bench;
mod bench_domains;
mod bench_isolation;
mod bench_orchestration;
mod bench_telemetry;
mod bench_xdp;
mod demo;
mod demo_plot;
mod demo_voip;
mod lab;
mod policy;
mod router;
mod service;
mod topo;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "wuos",
    version,
    about = "wuos: a router meta-operating system for edge and fog computing"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Emulated networks of wuos routers on this host.
    #[command(subcommand)]
    Lab(lab::LabCmd),
    /// Benchmarks: print a table and write JSON.
    #[command(subcommand)]
    Bench(bench::BenchCmd),
    /// Demos: `wuos demo voip` (the main one: a PABX placed by policy, calls measured), or
    /// `wuos demo` alone (a sample lab, its reachability and link delay).
    Demo(demo::DemoArgs),
    /// A router daemon's own telemetry and its neighborhood view.
    Status(router::StatusArgs),
    /// A live table of every router's telemetry in a lab.
    Top(router::TopArgs),
    /// Services (domains) on a router: list, start, stop, pause, resume, destroy.
    Service(service::ServiceArgs),
    /// A UDP echo server (the `echo` VNF: latency probes).
    Echo(router::EchoArgs),
    /// The orchestrator's placement policy: apply a file, show the one in force.
    Policy(policy::PolicyArgs),
    /// The orchestrator's decision log: each move with its reason.
    Decisions(policy::DecisionsArgs),
    /// Hold memory and CPU for a while (a load for tests and demos; run it with `wuos lab exec`).
    Hog(router::HogArgs),
}

/// Exit codes, so scripts can tell failures apart.
pub(crate) mod exit {
    /// Something failed while running.
    pub const FAILURE: u8 = 1;
    /// The input (topology, option value) is invalid.
    pub const BAD_INPUT: u8 = 3;
    /// The named lab, node or link does not exist.
    pub const NOT_FOUND: u8 = 4;
    /// Needs root.
    pub const NO_PERMISSION: u8 = 77;
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let r = match cli.cmd {
        Cmd::Lab(c) => lab::run(c),
        Cmd::Bench(c) => bench::run(c),
        Cmd::Demo(a) => demo::run(a),
        Cmd::Status(a) => router::status(a),
        Cmd::Top(a) => router::top(a),
        Cmd::Hog(a) => router::hog(a),
        Cmd::Echo(a) => router::echo(a),
        Cmd::Service(a) => service::run(a),
        Cmd::Policy(a) => policy::policy(a),
        Cmd::Decisions(a) => policy::decisions(a),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("wuos: error: {e:#}");
            ExitCode::from(exit_code(&e))
        }
    }
}

fn exit_code(e: &anyhow::Error) -> u8 {
    use wuos_lab::LabError as L;
    if e.downcast_ref::<topo::BadInput>().is_some() {
        return exit::BAD_INPUT;
    }
    if e.downcast_ref::<topo::NotFound>().is_some() {
        return exit::NOT_FOUND;
    }
    match e.downcast_ref::<L>() {
        Some(L::NotRoot) => exit::NO_PERMISSION,
        Some(L::Topology(_) | L::BadName(_) | L::BadChange(_)) => exit::BAD_INPUT,
        Some(L::NoSuchLab { .. } | L::NoSuchNode { .. } | L::NoSuchLink { .. } | L::NoLabs) => exit::NOT_FOUND,
        Some(L::RolledBack { cause, .. }) if matches!(**cause, L::Topology(_)) => exit::BAD_INPUT,
        _ => exit::FAILURE,
    }
}
