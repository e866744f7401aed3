//! `wuos policy apply FILE | show` and `wuos decisions`: the orchestrator of a lab's fog router,
//! through its daemon's admin socket.

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use serde_json::json;
use wuos_lab::state::LabState;
use wuos_lab::{LabEnv, daemons, status};
use wuos_proto::pb;

use crate::topo::{BadInput, NotFound};

#[derive(Args)]
pub struct PolicyArgs {
    #[command(subcommand)]
    cmd: PolicyCmd,
    /// The router running the orchestrator (default: the lab's fog router, if it has one).
    #[arg(long, global = true)]
    router: Option<String>,
    #[arg(long, global = true)]
    lab: Option<String>,
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
    #[arg(long)]
    lab: Option<String>,
    #[arg(long)]
    json: bool,
}

/// The lab and the orchestrating router: the one named, or the lab's only fog router.
fn target(lab: Option<&str>, router: Option<String>) -> Result<(LabEnv, String, String)> {
    let env = LabEnv::system();
    let lab = status::resolve(&env, lab)?;
    if let Some(r) = router {
        return Ok((env, lab, r));
    }
    let st = LabState::load(&env, &lab)?;
    let fogs: Vec<String> = st
        .topology
        .nodes
        .iter()
        .filter(|n| n.role == wuos_model::Role::Fog)
        .map(|n| n.name.clone())
        .collect();
    match fogs.as_slice() {
        [one] => Ok((env, lab, one.clone())),
        [] => Err(NotFound(format!(
            "lab {lab} has no fog router: name the orchestrator with --router R"
        ))
        .into()),
        many => Err(BadInput(format!(
            "lab {lab} has several fog routers ({}): choose one with --router R",
            many.join(", ")
        ))
        .into()),
    }
}

fn refused(s: tonic::Status) -> anyhow::Error {
    match s.code() {
        tonic::Code::InvalidArgument => BadInput(s.message().to_string()).into(),
        tonic::Code::FailedPrecondition | tonic::Code::NotFound => NotFound(s.message().to_string()).into(),
        _ => anyhow::anyhow!("{}", s.message()),
    }
}

pub fn policy(a: PolicyArgs) -> Result<()> {
    let (env, lab, router) = target(a.lab.as_deref(), a.router)?;
    let sock = daemons::socket_path(&env, &lab, &router);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(async {
        let mut c = wuosd::admin::client(&sock).await?;
        let reply = match a.cmd {
            PolicyCmd::Apply { file } => {
                let text = std::fs::read_to_string(&file)
                    .map_err(|e| BadInput(format!("cannot read {}: {e}", file.display())))?;
                c.apply_policy(pb::ApplyPolicyRequest {
                    text,
                    source: file.display().to_string(),
                })
                .await
                .map_err(refused)?
                .into_inner()
            }
            PolicyCmd::Show => c
                .get_policy(pb::GetPolicyRequest {})
                .await
                .map_err(refused)?
                .into_inner(),
        };
        if a.json {
            println!(
                "{}",
                serde_json::to_string_pretty(
                    &json!({"router": router, "services": reply.services, "text": reply.text})
                )?
            );
        } else if reply.text.is_empty() {
            println!("{router}: no policy in force");
        } else {
            println!("# policy in force on {router} ({})", reply.services.join(", "));
            print!("{}", reply.text);
        }
        Ok(())
    })
}

/// One decision as `wuos decisions --json` and `wuos demo voip --json` print it.
pub fn decision_json(d: &pb::DecisionRecord) -> serde_json::Value {
    json!({
        "at": d.at_unix_ms as f64 / 1000.0, "service": d.service, "kind": d.kind, "from": d.from,
        "to": d.to, "rule": d.rule, "reason": d.reason,
        "switched_at": (d.switched_unix_ms > 0).then(|| d.switched_unix_ms as f64 / 1000.0),
    })
}

/// The decision log of `router`.
pub async fn fetch_decisions(sock: &std::path::Path) -> Result<pb::DecisionList> {
    let mut c = wuosd::admin::client(sock).await?;
    c.decisions(pb::DecisionsRequest {})
        .await
        .map_err(refused)
        .map(tonic::Response::into_inner)
        .context("decisions")
}

pub fn decisions(a: DecisionsArgs) -> Result<()> {
    let (env, lab, router) = target(a.lab.as_deref(), a.router)?;
    let sock = daemons::socket_path(&env, &lab, &router);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let l = rt.block_on(fetch_decisions(&sock))?;
    if a.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({
                "router": router,
                "serving": l.serving,
                "decisions": l.decisions.iter().map(decision_json).collect::<Vec<_>>(),
            }))?
        );
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
