//! `wuos demo [voip|sdwan]`: the options; the demos are `wuos_bench`'s (`demo`, `voip`,
//! `sdwan_demo`).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;
use clap::Args;
use wuos_bench::{sdwan_demo, voip};

use crate::lab::Bar;
use crate::topo::BadInput;

#[derive(Args)]
pub struct DemoArgs {
    #[command(subcommand)]
    scenario: Option<Scenario>,
    /// Leave the lab up at the end.
    #[arg(long)]
    keep: bool,
}

#[derive(clap::Subcommand)]
enum Scenario {
    /// The VoIP scenario: a PABX moved by the fog router's orchestrator between the data centre
    /// and the fog router while calls go on; timeline, call-setup times, retransmissions, plot.
    Voip(VoipArgs),
    /// SD-WAN: three sites over two underlays, SIP calls in a VoIP class with an SLA and an iperf3
    /// transfer in a bulk class while mpls browns out and inet loses packets; e1's decisions, per
    /// phase the calls and the throughput, a plot of the paths' latency and loss.
    Sdwan(SdwanArgs),
}

/// What every scenario takes.
#[derive(Args)]
pub struct Common {
    /// A short run (about a minute once the lab is up), for tests.
    #[arg(long)]
    quick: bool,
    /// Print the results as JSON (the progress goes to stderr).
    #[arg(long)]
    json: bool,
    /// Leave the lab up at the end.
    #[arg(long)]
    keep: bool,
}

#[derive(Args)]
pub struct SdwanArgs {
    #[command(flatten)]
    common: Common,
    /// Where the plot, the SIPp and iperf3 traces and results.json go.
    #[arg(long, default_value = "sdwan-results")]
    out: PathBuf,
    /// The lab's name.
    #[arg(long, default_value = sdwan_demo::LAB)]
    lab: String,
}

#[derive(Args)]
pub struct VoipArgs {
    #[command(flatten)]
    common: Common,
    /// New calls per second.
    #[arg(long, default_value_t = 5.0)]
    rate: f64,
    /// How long each call lasts, seconds (SIPp -d): calls are in flight across the moves.
    #[arg(long, default_value_t = 3.0)]
    call_seconds: f64,
    /// Where the plot, the SIPp traces and results.json go.
    #[arg(long, default_value = "voip-results")]
    out: PathBuf,
    /// The lab's name.
    #[arg(long, default_value = voip::LAB)]
    lab: String,
}

pub fn run(args: DemoArgs) -> Result<()> {
    let a = match args.scenario {
        None => {
            let bar = Bar::new();
            return wuos_bench::demo::run(args.keep, &bar, || bar.finish());
        }
        Some(Scenario::Sdwan(a)) => {
            return sdwan_demo::run(&sdwan_demo::Options {
                quick: a.common.quick,
                json: a.common.json,
                keep: a.common.keep || args.keep,
                lab: a.lab,
                out: a.out,
            });
        }
        Some(Scenario::Voip(a)) => a,
    };
    if !(a.rate > 0.0 && a.rate <= 200.0) {
        return Err(BadInput(format!("--rate {}: use 0 < rate ≤ 200 calls/s", a.rate)).into());
    }
    if !(0.0..=60.0).contains(&a.call_seconds) {
        return Err(BadInput(format!("--call-seconds {}: use 0 to 60 s", a.call_seconds)).into());
    }
    voip::run(&voip::Options {
        quick: a.common.quick,
        json: a.common.json,
        keep: a.common.keep || args.keep,
        lab: a.lab,
        calls: voip::Calls {
            rate: a.rate,
            duration: Duration::from_secs_f64(a.call_seconds),
        },
        out: a.out,
    })
}
