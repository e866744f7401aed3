//! `wuos pki init|issue|revoke|list`: the deployment's private CA (docs/pki.md), in a directory
//! (`--dir`, default [`DEFAULT_DIR`]).

use std::collections::BTreeSet;
use std::path::PathBuf;

use anyhow::Result;
use clap::{Args, Subcommand};
use wuos_model::{Role, RouterId};
use wuos_pki::{Capability, InitOptions, Pki, PkiError, RevokeTarget, Validity};

/// Where the PKI lives unless `--dir` says otherwise.
pub const DEFAULT_DIR: &str = "/var/lib/wuos/pki";

#[derive(Args)]
pub struct PkiArgs {
    #[command(subcommand)]
    cmd: PkiCmd,
    /// The PKI directory.
    #[arg(long, global = true, default_value = DEFAULT_DIR)]
    dir: PathBuf,
}

#[derive(Subcommand)]
enum PkiCmd {
    /// Create the CA (ca.pem, ca.key, an empty crl.pem, index.json). Refuses a directory that
    /// has one unless --force, which starts over (every certificate issued stops being trusted).
    Init {
        #[arg(long)]
        force: bool,
    },
    /// Issue a certificate and key to ROUTER (routers/ROUTER.pem, .key). Issuing again rotates:
    /// a new key and serial; the old certificate stays valid until revoked.
    Issue {
        /// The router id (1-64 of A-Z a-z 0-9 . _ -).
        router: String,
        /// edge, fog, dc or host.
        #[arg(long)]
        role: String,
        /// Capabilities, comma-separated: orchestrator, controller.
        #[arg(long, value_delimiter = ',')]
        may: Vec<String>,
        /// Days of validity.
        #[arg(long, default_value_t = 365)]
        days: u32,
    },
    /// Revoke a certificate by SERIAL, or every certificate of ROUTER (with --superseded, all but
    /// its newest: the end of a rotation); signs a new crl.pem. Say router:X or serial:X if X is
    /// both.
    Revoke {
        /// A router id or a serial (as `wuos pki list` shows it).
        target: String,
        /// Keep the router's newest certificate.
        #[arg(long)]
        superseded: bool,
    },
    /// Every certificate issued, oldest first.
    List {
        #[arg(long)]
        json: bool,
    },
}

pub fn run(a: PkiArgs) -> Result<()> {
    match a.cmd {
        PkiCmd::Init { force } => {
            let pki = Pki::init(
                &a.dir,
                &InitOptions {
                    force,
                    ..InitOptions::default()
                },
            )?;
            println!("CA created in {}", pki.dir().display());
            println!("  certificate {}", pki.ca_path().display());
            println!("  key         {}", pki.dir().join("ca.key").display());
            println!("  CRL         {}", pki.crl_path().display());
        }
        PkiCmd::Issue {
            router,
            role,
            may,
            days,
        } => {
            let router = RouterId::new(router).map_err(PkiError::from)?;
            let role: Role = role.parse().map_err(PkiError::from)?;
            let capabilities = may
                .iter()
                .filter(|m| !m.is_empty())
                .map(|m| m.parse::<Capability>().map_err(PkiError::from))
                .collect::<Result<BTreeSet<_>, _>>()?;
            if days == 0 {
                return Err(crate::topo::BadInput("--days must be at least 1".into()).into());
            }
            let pki = Pki::open(&a.dir)?;
            let id = pki.issue(&router, role, &capabilities, Validity::days(days))?;
            let caps: Vec<&str> = id.capabilities.iter().map(|c| c.as_str()).collect();
            println!(
                "issued {} ({}{}) serial {} until {}",
                id.router,
                id.role,
                if caps.is_empty() {
                    String::new()
                } else {
                    format!(", may {}", caps.join(","))
                },
                id.serial,
                id.not_after.date()
            );
            println!("  certificate {}", pki.cert_path(&router).display());
            println!("  key         {}", pki.key_path(&router).display());
        }
        PkiCmd::Revoke { target, superseded } => {
            let pki = Pki::open(&a.dir)?;
            let mut t = pki.resolve_target(&target)?;
            if superseded {
                t = match t {
                    RevokeTarget::Router(r) => RevokeTarget::Superseded(r),
                    _ => {
                        return Err(crate::topo::BadInput(format!(
                            "--superseded needs a router, and {target:?} is a serial"
                        ))
                        .into());
                    }
                };
            }
            let revoked = pki.revoke(&t)?;
            if revoked.is_empty() {
                println!("nothing to revoke: {target} has no unrevoked certificate to revoke");
            }
            for e in &revoked {
                println!("revoked {} serial {}", e.router, e.serial);
            }
            if !revoked.is_empty() {
                println!("  CRL {} (peers use it after they reload)", pki.crl_path().display());
            }
        }
        PkiCmd::List { json } => {
            let pki = Pki::open(&a.dir)?;
            let list = pki.list()?;
            if json {
                println!("{}", serde_json::to_string_pretty(&list)?);
                return Ok(());
            }
            if list.is_empty() {
                println!("no certificate issued in {}", pki.dir().display());
                return Ok(());
            }
            println!(
                "{:<20} {:<5} {:<26} {:<32} {:<10} status",
                "router", "role", "may", "serial", "expires"
            );
            let now = wuos_pki::time::OffsetDateTime::now_utc();
            for e in &list {
                let caps: Vec<&str> = e.capabilities.iter().map(|c| c.as_str()).collect();
                let status = match e.revoked_at {
                    Some(at) => format!("revoked {}", at.date()),
                    None if e.not_after < now => "expired".into(),
                    None => "valid".into(),
                };
                println!(
                    "{:<20} {:<5} {:<26} {:<32} {:<10} {status}",
                    e.router.as_str(),
                    e.role.as_str(),
                    if caps.is_empty() { "-".into() } else { caps.join(",") },
                    e.serial,
                    e.not_after.date().to_string(),
                );
            }
        }
    }
    Ok(())
}
