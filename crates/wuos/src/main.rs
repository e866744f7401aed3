//! `wuos`: the command-line tool. It parses, calls the libraries, prints; nothing else.
//!
//! # Layout
//! - `main.rs`: the command tree and exit codes.
//! - `lab.rs`: `wuos lab …` (up, down, list, status, exec, graph, link set, relay).
//! - `bench.rs`, `bench_telemetry.rs`, `bench_domains.rs`, `bench_isolation.rs`: `wuos bench lab|telemetry|domains|isolation`, tables and JSON.
//! - `demo.rs`: `wuos demo`, the README's main demo.
//! - `router.rs`: `wuos status`, `wuos top` (router daemons), `wuos hog` (a load).
//! - `service.rs`: `wuos service …` (domains on a router).
//! - `topo.rs`: a topology argument (file or generator) and helpers shared by the above.

mod bench;
mod bench_domains;
mod bench_isolation;
mod bench_telemetry;
mod demo;
mod lab;
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
    /// The main demo: a sample lab, its reachability and link delay, then teardown.
    Demo(demo::DemoArgs),
    /// A router daemon's own telemetry and its neighborhood view.
    Status(router::StatusArgs),
    /// A live table of every router's telemetry in a lab.
    Top(router::TopArgs),
    /// Services (domains) on a router: list, start, stop, pause, resume, destroy.
    Service(service::ServiceArgs),
    /// A UDP echo server (the `echo` VNF: latency probes).
    Echo(router::EchoArgs),
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
