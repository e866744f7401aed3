//! `wuos policy apply FILE | show` and `wuos decisions`: the orchestrator of a lab's fog router
//! (or of any daemon, `--socket`/`--address`), through its admin API.

use anyhow::Result;
use clap::{Args, Subcommand};

use crate::topo::BadInput;

#[derive(Args)]
pub struct PolicyArgs {
    #[command(subcommand)]
    cmd: PolicyCmd,
    /// The router running the orchestrator (default: the lab's fog router, if it has one).
    #[arg(long, global = true)]
    router: Option<String>,
    #[command(flatten)]
    daemon: crate::target::DaemonArgs,
    #[arg(long, global = true)]
    json: bool,
}

#[derive(Subcommand)]
enum PolicyCmd {
    /// Replace the orchestrator's policy with FILE (docs/policy.md). A policy that does not parse,
    /// or names a service the catalog does not know, is refused and the running one stays.
    Apply { file: std::path::PathBuf },
    /// The policy in force.
    Show,
}

#[derive(Args)]
pub struct DecisionsArgs {
    /// The router running the orchestrator (default: the lab's fog router, if it has one).
    #[arg(long)]
    router: Option<String>,
    #[command(flatten)]
    daemon: crate::target::DaemonArgs,
    #[arg(long)]
    json: bool,
}

pub fn policy(a: PolicyArgs) -> Result<()> {
    let daemon = a.daemon.orchestrator(a.router.as_deref())?;
    let router = daemon.name.clone();
    crate::target::runtime()?.block_on(async {
        let mut c = daemon.client().await?;
        let reply = match a.cmd {
            PolicyCmd::Apply { file } => {
                let text = std::fs::read_to_string(&file)
                    .map_err(|e| BadInput(format!("cannot read {}: {e}", file.display())))?;
                c.apply_policy(&text, &file.display().to_string()).await?
            }
            PolicyCmd::Show => c.policy().await?,
        };
        if a.json {
            let mut v = serde_json::to_value(&reply)?;
            v["router"] = router.into();
            println!("{}", serde_json::to_string_pretty(&v)?);
        } else if reply.text.is_empty() {
            println!("{router}: no policy in force");
        } else {
            println!("# policy in force on {router} ({})", reply.services.join(", "));
            print!("{}", reply.text);
        }
        Ok(())
    })
}

pub fn decisions(a: DecisionsArgs) -> Result<()> {
    let daemon = a.daemon.orchestrator(a.router.as_deref())?;
    let router = daemon.name.clone();
    let l = crate::target::runtime()?
        .block_on(async { Ok::<_, anyhow::Error>(daemon.client().await?.decisions().await?) })?;
    if a.json {
        let mut v = serde_json::to_value(&l)?;
        v["router"] = router.into();
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    println!("decisions of the orchestrator on {router} (oldest first)");
    for d in &l.decisions {
        let t = d.at_unix_ms.rem_euclid(86_400_000);
        println!(
            "{:02}:{:02}:{:02}.{:03}  {:<8} {:<7} {} → {}  [{}] {}",
            t / 3_600_000,
            t / 60_000 % 60,
            t / 1000 % 60,
            t % 1000,
            d.service,
            d.kind,
            d.from,
            d.to,
            if d.rule.is_empty() { "-" } else { &d.rule },
            d.reason
        );
    }
    let serving: Vec<String> = l.serving.iter().map(|(s, r)| format!("{s} at {r}")).collect();
    println!(
        "serving now: {}",
        if serving.is_empty() {
            "nothing placed".into()
        } else {
            serving.join(", ")
        }
    );
    Ok(())
}
