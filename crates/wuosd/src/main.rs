//! `wuosd --config FILE`: the wuos router daemon.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::EnvFilter;
use wuosd::config::Config;

#[derive(Parser)]
#[command(name = "wuosd", version, about = "The wuos router daemon")]
struct Args {
    /// Configuration file (TOML).
    #[arg(long, short)]
    config: PathBuf,
    /// Check the configuration and exit.
    #[arg(long)]
    check: bool,
}

fn main() -> ExitCode {
    // `wuosd domain-init …` enters a domain and execs its command; it must run before any thread
    // (tokio, tracing) exists, because unshare(CLONE_NEWNS) refuses multi-threaded processes.
    let mut raw = std::env::args_os();
    if raw.nth(1).is_some_and(|a| a == "domain-init") {
        wuos_southbound::domain::init::main_with(raw);
    }
    // Before the daemon allocates much: glibc's fastbins cost it a sixth of its CPU at scale.
    wuos_southbound::malloc::no_fastbins();
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_env("WUOSD_LOG").unwrap_or_else(|_| EnvFilter::new("info")))
        .with_target(false)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cfg = match Config::load(&args.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("wuosd: {e}");
            return ExitCode::from(3);
        }
    };
    if args.check {
        println!("{}: ok", args.config.display());
        return ExitCode::SUCCESS;
    }
    // One worker thread: the daemon is small and must stay under 1% of a core.
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("wuosd: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let r = rt.block_on(wuosd::daemon::run(cfg, async {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    }));
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}
