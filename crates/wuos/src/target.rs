//! Which wuosd a command talks to: a lab router (`--router R [--lab L]`), or any daemon by its
//! admin socket (`--socket PATH`) or address (`--address HOST:PORT`); and the admin client.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use wuos_lab::state::LabState;
use wuos_lab::{LabEnv, LabError, daemons, status};
use wuos_proto::admin::{AdminClient, Target};

use crate::topo::{BadInput, NotFound};

/// The daemon options shared by `status`, `service`, `policy` and `decisions`.
#[derive(Args, Clone, Debug, Default)]
pub struct DaemonArgs {
    /// The lab (default: the one lab that is up).
    #[arg(long, global = true)]
    pub lab: Option<String>,
    /// A daemon's admin socket, instead of a lab router (e.g. /run/wuos/wuosd.sock).
    #[arg(long, global = true, conflicts_with_all = ["lab", "address"])]
    pub socket: Option<PathBuf>,
    /// A daemon's admin address (its `admin_listen`), instead of a lab router.
    #[arg(long, global = true, conflicts_with_all = ["lab", "socket"])]
    pub address: Option<String>,
}

/// A resolved daemon: where to reach it, and the name to print.
#[derive(Clone, Debug)]
pub struct Daemon {
    pub target: Target,
    pub name: String,
}

impl Daemon {
    pub async fn client(&self) -> Result<AdminClient> {
        Ok(AdminClient::connect(&self.target).await?)
    }
}

impl DaemonArgs {
    /// The daemon of `router` (needed unless `--socket`/`--address` is given); for a lab router
    /// without a daemon, says why.
    pub fn resolve(&self, router: Option<&str>) -> Result<Daemon> {
        if let Some(s) = &self.socket {
            return Ok(Daemon {
                target: Target::Socket(s.clone()),
                name: router.map_or_else(|| s.display().to_string(), str::to_string),
            });
        }
        if let Some(a) = &self.address {
            return Ok(Daemon {
                target: Target::Address(a.clone()),
                name: router.unwrap_or(a).to_string(),
            });
        }
        let router =
            router.ok_or_else(|| BadInput("name the router (--router R), or give --socket or --address".into()))?;
        let env = LabEnv::system();
        let lab = status::resolve(&env, self.lab.as_deref())?;
        let sock = daemons::socket_path(&env, &lab, router);
        if !sock.exists() {
            let st = LabState::load(&env, &lab)?;
            if st.topology.node_index(router).is_none() {
                return Err(LabError::NoSuchNode {
                    lab,
                    node: router.to_string(),
                    known: st.topology.nodes.iter().map(|n| n.name.clone()).collect(),
                }
                .into());
            }
            return Err(NotFound(format!(
                "router {router} of lab {lab} runs no daemon (was the lab started with --no-daemons?)"
            ))
            .into());
        }
        Ok(Daemon {
            target: Target::Socket(sock),
            name: router.to_string(),
        })
    }

    /// The orchestrating router: the one named, or the lab's only fog router.
    pub fn orchestrator(&self, router: Option<&str>) -> Result<Daemon> {
        if router.is_some() || self.socket.is_some() || self.address.is_some() {
            return self.resolve(router);
        }
        let env = LabEnv::system();
        let lab = status::resolve(&env, self.lab.as_deref())?;
        let st = LabState::load(&env, &lab)?;
        let fogs: Vec<&str> = st
            .topology
            .nodes
            .iter()
            .filter(|n| n.role == wuos_model::Role::Fog)
            .map(|n| n.name.as_str())
            .collect();
        match fogs.as_slice() {
            [one] => self.resolve(Some(one)),
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
}

/// A runtime for one command.
pub fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread().enable_all().build()?)
}
