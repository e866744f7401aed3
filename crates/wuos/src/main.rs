//! `wuos`: the command-line tool. It parses, calls the libraries, prints; nothing else.
//!
//! # Layout
//! - `main.rs`: the command tree and exit codes.
//! - `lab.rs`: `wuos lab …` (up, down, list, status, exec, graph, link set, relay).
//! - `bench.rs`: `wuos bench lab|telemetry|domains|isolation|xdp|orchestration`, the options of
//!   each; the benchmarks themselves are `wuos_bench`'s.
//! - `demo.rs`: `wuos demo` (a sample lab), `wuos demo voip` (the README's main demo, the VoIP
//!   scenario) and `wuos demo sdwan` (SLA classes through degradations), the options of each; the
//!   demos are `wuos_bench`'s.
//! - `router.rs`: `wuos status`, `wuos top` (router daemons), `wuos hog` (a load).
//! - `policy.rs`: `wuos policy apply|show`, `wuos decisions` (the orchestrator of a fog router).
//! - `service.rs`: `wuos service …` (domains on a router).
//! - `pki.rs`: `wuos pki init|issue|revoke|list` (the deployment's CA and router certificates;
//!   the library is `wuos_pki`).
//! - `sdwan.rs`: `wuos sdwan …` (overlays, classes, status) through the SD-WAN controller's NBI.
//! - `sim.rs`: `wuos sim run` (a simulated network, `wuos_sim`), its options, progress and report.
//! - `topo.rs`: a topology argument (file or generator) and helpers shared by the above.

mod bench;
mod demo;
mod lab;
mod pki;
mod policy;
mod router;
mod sdwan;
mod service;
mod sim;
mod target;
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
    /// Demos: `wuos demo voip` (the main one: a PABX placed by policy, calls measured),
    /// `wuos demo sdwan` (SD-WAN classes steered by their SLA while the underlays degrade), or
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
    /// The private CA of a deployment: create it, issue (and rotate) router certificates, revoke,
    /// list (mutual TLS between routers; docs/pki.md).
    Pki(pki::PkiArgs),
    /// Hold memory and CPU for a while (a load for tests and demos; run it with `wuos lab exec`).
    Hog(router::HogArgs),
    /// Simulated networks: the daemon's protocol and orchestrators at scale, no kernel needed.
    #[command(subcommand)]
    Sim(sim::SimCmd),
    /// SD-WAN overlays and traffic classes, through the SD-WAN controller's NBI (docs/sdwan.md).
    Sdwan(sdwan::SdwanArgs),
}

/// Exit codes, so scripts can tell failures apart: the class of the error
/// ([`wuos_model::ErrorClass::exit_code`]: 3 bad input, 4 not found, 5 conflict, 6 unavailable,
/// 1 anything else), and 77 when root is needed.
pub(crate) mod exit {
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
        Cmd::Pki(a) => pki::run(a),
        Cmd::Sim(c) => sim::run(c),
        Cmd::Sdwan(a) => sdwan::run(a),
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
    if matches!(
        e.downcast_ref::<wuos_lab::LabError>(),
        Some(wuos_lab::LabError::NotRoot)
    ) {
        return exit::NO_PERMISSION;
    }
    class_of(e).exit_code()
}

/// The class of the first error in `e`'s chain that has one (`Internal` if none does).
fn class_of(e: &anyhow::Error) -> wuos_model::ErrorClass {
    use wuos_model::Classify;
    e.chain()
        .find_map(|cause| {
            None.or_else(|| cause.downcast_ref::<topo::BadInput>().map(Classify::class))
                .or_else(|| cause.downcast_ref::<topo::NotFound>().map(Classify::class))
                .or_else(|| cause.downcast_ref::<wuos_lab::LabError>().map(Classify::class))
                .or_else(|| {
                    cause
                        .downcast_ref::<wuos_proto::admin::AdminError>()
                        .map(Classify::class)
                })
                .or_else(|| cause.downcast_ref::<wuos_model::RemoteError>().map(Classify::class))
                .or_else(|| {
                    cause
                        .downcast_ref::<wuos_model::daemon::ConfigError>()
                        .map(Classify::class)
                })
                .or_else(|| cause.downcast_ref::<wuos_model::UnitError>().map(Classify::class))
                .or_else(|| cause.downcast_ref::<wuos_pki::PkiError>().map(Classify::class))
                .or_else(|| cause.downcast_ref::<wuos_sim::SimError>().map(Classify::class))
                .or_else(|| cause.downcast_ref::<wuos_sim::EventsError>().map(Classify::class))
                .or_else(|| cause.downcast_ref::<wuos_proto::nbi::NbiError>().map(Classify::class))
        })
        .unwrap_or(wuos_model::ErrorClass::Internal)
}
