//! `wuos sdwan …`: SD-WAN overlays, traffic classes and their state, all through the SD-WAN
//! controller's NBI (REST) — a lab's (`--lab`, reached inside its controller router's
//! namespace) or any deployment's (`--nbi HOST:PORT --token-file F`).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use serde_json::{Value, json};
use wuos_lab::{LabEnv, daemons, state::LabState, status};
use wuos_proto::nbi::NbiClient;

use crate::topo::BadInput;

#[derive(Args)]
pub struct SdwanArgs {
    #[command(subcommand)]
    cmd: SdwanCmd,
    /// The lab (default: the one lab that is up).
    #[arg(long, global = true, conflicts_with = "nbi")]
    lab: Option<String>,
    /// A deployment's NBI address (HOST:PORT), instead of a lab's.
    #[arg(long, global = true)]
    nbi: Option<String>,
    /// The file holding the NBI's bearer token (with --nbi; or set WUOS_NBI_TOKEN).
    #[arg(long, global = true, requires = "nbi")]
    token_file: Option<PathBuf>,
    /// Print JSON.
    #[arg(long, global = true)]
    json: bool,
    /// After a change: wait up to this many seconds until every edge holds it.
    #[arg(long, global = true, value_name = "SECONDS")]
    wait: Option<f64>,
}

#[derive(Subcommand)]
enum SdwanCmd {
    /// Print the lab's NBI bearer token (generated at `lab up`).
    Token,
    /// Per edge: in sync or not, its tunnels, which class rides which overlay.
    Status,
    /// The sites: WAN attachments per underlay, LANs.
    Sites,
    /// Overlays: create, list, delete, add or remove a site.
    #[command(subcommand)]
    Overlay(OverlayCmd),
    /// Traffic classes: add, list, delete, assign to another overlay.
    #[command(subcommand)]
    Class(ClassCmd),
    /// Apply a file: TOML with `[[overlay]]` and `[[class]]` tables (created in that order), or
    /// JSON, a list of NBI actions. All or none.
    Apply { file: PathBuf },
    /// One edge's monitored paths (latency, loss, jitter), where its steered classes go and its
    /// steering decisions, from its daemon (a lab router, or --socket/--address).
    Paths {
        /// The edge router.
        router: Option<String>,
        /// A daemon's admin socket, instead of a lab router.
        #[arg(long, conflicts_with = "address")]
        socket: Option<PathBuf>,
        /// A daemon's admin address (its `admin_listen`), instead of a lab router.
        #[arg(long)]
        address: Option<String>,
    },
}

#[derive(Subcommand)]
enum OverlayCmd {
    /// Create an overlay (full mesh unless --hub or --pair).
    Create {
        name: String,
        /// Member sites (repeat, or comma-separated).
        #[arg(long = "site", value_delimiter = ',', required = true)]
        sites: Vec<String>,
        /// Hub-and-spoke with this hub.
        #[arg(long, conflicts_with = "pairs")]
        hub: Option<String>,
        /// Partial mesh: the pairs with a tunnel, A:B (repeat).
        #[arg(long = "pair", value_delimiter = ',')]
        pairs: Vec<String>,
        /// Underlays it may use, in order of preference (default: all).
        #[arg(long = "underlay", value_delimiter = ',')]
        underlays: Vec<String>,
    },
    List,
    Delete {
        name: String,
    },
    /// Add a site (bringing all its LANs, or the --lan prefixes).
    AddSite {
        overlay: String,
        site: String,
        #[arg(long = "lan", value_delimiter = ',')]
        lans: Vec<String>,
    },
    RemoveSite {
        overlay: String,
        site: String,
    },
}

#[derive(Subcommand)]
enum ClassCmd {
    /// Add a class: packets matching any of its rules ride the overlay.
    Add {
        name: String,
        #[arg(long)]
        overlay: String,
        /// A match rule, KEY=VALUE pairs separated by commas: proto=tcp|udp|icmp,
        /// src_ports=P[-Q], dst_ports=P[-Q], src=PREFIX, dst=PREFIX, dscp=0-63,
        /// ingress=IF[+IF…] (repeat for several rules).
        #[arg(long = "rule", required = true)]
        rules: Vec<String>,
    },
    List,
    Delete {
        name: String,
    },
    /// Send a class's packets to another overlay.
    Assign {
        name: String,
        overlay: String,
    },
}

/// A match rule from `proto=udp,dst_ports=5060,ingress=eth2+eth3`, as the NBI's JSON.
fn rule(text: &str) -> Result<Value, BadInput> {
    let mut m = serde_json::Map::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (k, v) = part
            .split_once('=')
            .ok_or_else(|| BadInput(format!("rule {text:?}: {part:?} is not KEY=VALUE")))?;
        let value = match k {
            "dscp" => json!(
                v.parse::<u64>()
                    .map_err(|_| BadInput(format!("rule {text:?}: dscp {v:?} is not a number")))?
            ),
            "ingress" => json!(v.split('+').collect::<Vec<_>>()),
            _ => json!(v),
        };
        if m.insert(k.to_string(), value).is_some() {
            return Err(BadInput(format!("rule {text:?}: {k} given twice")));
        }
    }
    Ok(Value::Object(m))
}

/// The actions of a TOML file (`[[overlay]]`, then `[[class]]`) or a JSON list.
fn actions_of(path: &PathBuf) -> Result<Value> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    if path.extension().is_some_and(|e| e == "json") {
        let v: Value = serde_json::from_str(&text).map_err(|e| BadInput(format!("{}: {e}", path.display())))?;
        return Ok(v);
    }
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct File {
        #[serde(default)]
        overlay: Vec<Value>,
        #[serde(default)]
        class: Vec<Value>,
    }
    let f: File = toml::from_str(&text).map_err(|e| BadInput(format!("{}: {e}", path.display())))?;
    let tag = |action: &str, mut v: Value| {
        if let Some(o) = v.as_object_mut() {
            o.insert("action".into(), json!(action));
        }
        v
    };
    let mut list: Vec<Value> = f.overlay.into_iter().map(|v| tag("create_overlay", v)).collect();
    list.extend(f.class.into_iter().map(|v| tag("create_class", v)));
    Ok(Value::Array(list))
}

async fn client(a: &SdwanArgs) -> Result<NbiClient> {
    if let Some(addr) = &a.nbi {
        let token = match (&a.token_file, std::env::var("WUOS_NBI_TOKEN")) {
            (Some(f), _) => std::fs::read_to_string(f).with_context(|| format!("cannot read {}", f.display()))?,
            (None, Ok(t)) => t,
            (None, Err(_)) => return Err(BadInput("--nbi needs --token-file FILE or WUOS_NBI_TOKEN".into()).into()),
        };
        return Ok(NbiClient::connect(addr, &token).await?);
    }
    let env = LabEnv::system();
    let lab = status::resolve(&env, a.lab.as_deref())?;
    let st = LabState::load(&env, &lab)?;
    let (stream, addr, token) = daemons::nbi_stream(&env, &st)?;
    stream.set_nonblocking(true)?;
    let stream = tokio::net::TcpStream::from_std(stream)?;
    Ok(NbiClient::over(stream, &addr.to_string(), &token).await?)
}

pub fn run(a: SdwanArgs) -> Result<()> {
    if let SdwanCmd::Token = a.cmd {
        let env = LabEnv::system();
        let lab = status::resolve(&env, a.lab.as_deref())?;
        println!("{}", daemons::sdwan_token(&env, &lab)?);
        return Ok(());
    }
    if let SdwanCmd::Paths {
        router,
        socket,
        address,
    } = &a.cmd
    {
        let daemon = crate::target::DaemonArgs {
            lab: a.lab.clone(),
            socket: socket.clone(),
            address: address.clone(),
        }
        .resolve(router.as_deref())?;
        let text = crate::target::runtime()?
            .block_on(async { Ok::<_, anyhow::Error>(daemon.client().await?.sdwan_paths().await?) })?;
        let report: Value = serde_json::from_str(&text).context("the daemon's paths report is not JSON")?;
        return print_paths(&daemon.name, &report, a.json);
    }
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(run_nbi(a))
}

/// Whether a steered class's SLA is met, in words.
fn sla_met(met: &Value) -> &'static str {
    match met.as_bool() {
        Some(true) => "SLA met",
        Some(false) => "SLA NOT met",
        None => "SLA not known yet",
    }
}

/// A paths report as tables: paths, steering, the last decisions.
fn print_paths(router: &str, r: &Value, json: bool) -> Result<()> {
    if json {
        let mut v = r.clone();
        v["router"] = router.into();
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    let list = |k: &str| r[k].as_array().cloned().unwrap_or_default();
    let num = |v: &Value, d: usize| v.as_f64().map_or("-".to_string(), |x| format!("{x:.d$}"));
    println!(
        "paths monitored by {router} (STAMP; probes sent {}, answers {})",
        r["probes_sent"], r["answers"]
    );
    println!(
        "{:<8} {:<16} {:<12} {:<4} {:>8} {:>8} {:>9}",
        "site", "path", "tunnel", "up", "rtt ms", "loss %", "jitter ms"
    );
    for p in list("paths") {
        println!(
            "{:<8} {:<16} {:<12} {:<4} {:>8} {:>8} {:>9}",
            p["site"].as_str().unwrap_or("?"),
            format!(
                "{}/{}",
                p["overlay"].as_str().unwrap_or("?"),
                p["underlay"].as_str().unwrap_or("?")
            ),
            p["tunnel"].as_str().unwrap_or("?"),
            if p["up"].as_bool() == Some(true) { "yes" } else { "NO" },
            num(&p["rtt_ms"], 1),
            num(&p["loss_pct"], 1),
            num(&p["jitter_ms"], 1)
        );
    }
    println!("steering:");
    for s in list("steering") {
        let met = sla_met(&s["met"]);
        let paths: Vec<&str> = strs(&s["paths"]);
        println!(
            "  {} to {}: {} ({met})",
            s["class"].as_str().unwrap_or("?"),
            s["site"].as_str().unwrap_or("?"),
            paths.join(" + ")
        );
    }
    if let Some(e) = r["nft_error"].as_str() {
        println!("the steering table could not be written: {e}");
    }
    println!("decisions (oldest first):");
    for d in list("decisions") {
        let t = d["at_unix_ms"].as_u64().unwrap_or(0) % 86_400_000;
        let to: Vec<&str> = strs(&d["to"]);
        println!(
            "  {:02}:{:02}:{:02}.{:03} {} to {} -> {}: {}",
            t / 3_600_000,
            t / 60_000 % 60,
            t / 1000 % 60,
            t % 1000,
            d["class"].as_str().unwrap_or("?"),
            d["site"].as_str().unwrap_or("?"),
            to.join(" + "),
            d["reason"].as_str().unwrap_or("")
        );
    }
    Ok(())
}

async fn run_nbi(a: SdwanArgs) -> Result<()> {
    let mut c = client(&a).await?;
    let changed = match &a.cmd {
        SdwanCmd::Token | SdwanCmd::Paths { .. } => unreachable!("handled above"),
        SdwanCmd::Status => {
            let s = c.get("/v1/status").await?;
            print_status(&s, a.json)?;
            None
        }
        SdwanCmd::Sites => {
            let s = c.get("/v1/sites").await?;
            if a.json {
                println!("{}", serde_json::to_string_pretty(&s)?);
            } else {
                for (name, site) in s["sites"].as_object().into_iter().flatten() {
                    let wan: Vec<String> = site["wan"]
                        .as_object()
                        .into_iter()
                        .flatten()
                        .map(|(u, w)| {
                            format!(
                                "{u} {} ({})",
                                w["addr"].as_str().unwrap_or("?"),
                                w["ifname"].as_str().unwrap_or("?")
                            )
                        })
                        .collect();
                    let lans: Vec<String> = site["lans"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(|l| {
                            format!(
                                "{} ({})",
                                l["prefix"].as_str().unwrap_or("?"),
                                l["ifname"].as_str().unwrap_or("?")
                            )
                        })
                        .collect();
                    println!("{name:<8} wan: {}   lans: {}", wan.join(", "), lans.join(", "));
                }
            }
            None
        }
        SdwanCmd::Overlay(OverlayCmd::Create {
            name,
            sites,
            hub,
            pairs,
            underlays,
        }) => {
            let layout = match (hub, pairs.is_empty()) {
                (Some(h), _) => json!({"kind": "hub_and_spoke", "hub": h}),
                (None, false) => {
                    let pairs: Vec<Value> = pairs
                        .iter()
                        .map(|p| {
                            p.split_once(':')
                                .map(|(x, y)| json!([x, y]))
                                .ok_or_else(|| BadInput(format!("--pair {p:?}: write A:B")))
                        })
                        .collect::<Result<_, _>>()?;
                    json!({"kind": "partial", "pairs": pairs})
                }
                (None, true) => json!({"kind": "full_mesh"}),
            };
            let members: serde_json::Map<String, Value> = sites.iter().map(|s| (s.clone(), json!({}))).collect();
            Some(
                c.post(
                    "/v1/overlays",
                    &json!({"name": name, "layout": layout, "sites": members, "underlays": underlays}),
                )
                .await?,
            )
        }
        SdwanCmd::Overlay(OverlayCmd::List) => {
            let v = c.get("/v1/overlays").await?;
            if a.json {
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                println!(
                    "{:<16} {:>4}  {:<14} {:<14} SITES",
                    "OVERLAY", "ID", "LAYOUT", "UNDERLAYS"
                );
                for o in v.as_array().into_iter().flatten() {
                    let layout = match o["layout"]["kind"].as_str() {
                        Some("hub_and_spoke") => format!("hub {}", o["layout"]["hub"].as_str().unwrap_or("?")),
                        Some(k) => k.replace('_', "-"),
                        None => "?".into(),
                    };
                    let unders: Vec<&str> = strs(&o["underlays"]);
                    let sites: Vec<&String> = o["sites"].as_object().into_iter().flat_map(|m| m.keys()).collect();
                    println!(
                        "{:<16} {:>4}  {:<14} {:<14} {}",
                        o["name"].as_str().unwrap_or("?"),
                        o["id"],
                        layout,
                        if unders.is_empty() {
                            "all".to_string()
                        } else {
                            unders.join(",")
                        },
                        sites.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(",")
                    );
                }
            }
            None
        }
        SdwanCmd::Overlay(OverlayCmd::Delete { name }) => Some(c.delete(&format!("/v1/overlays/{name}")).await?),
        SdwanCmd::Overlay(OverlayCmd::AddSite { overlay, site, lans }) => Some(
            c.post(
                &format!("/v1/overlays/{overlay}/sites"),
                &json!({"site": site, "member": {"lans": lans}}),
            )
            .await?,
        ),
        SdwanCmd::Overlay(OverlayCmd::RemoveSite { overlay, site }) => {
            Some(c.delete(&format!("/v1/overlays/{overlay}/sites/{site}")).await?)
        }
        SdwanCmd::Class(ClassCmd::Add { name, overlay, rules }) => {
            let rules: Vec<Value> = rules.iter().map(|r| rule(r)).collect::<Result<_, _>>()?;
            Some(
                c.post(
                    "/v1/classes",
                    &json!({"name": name, "overlay": overlay, "rules": rules}),
                )
                .await?,
            )
        }
        SdwanCmd::Class(ClassCmd::List) => {
            let v = c.get("/v1/classes").await?;
            if a.json {
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                println!("{:<16} {:>4}  {:<16} RULES", "CLASS", "ID", "OVERLAY");
                for k in v.as_array().into_iter().flatten() {
                    let rules: Vec<String> = k["rules"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(|r| {
                            r.as_object()
                                .into_iter()
                                .flatten()
                                .map(|(k, v)| {
                                    format!("{k}={}", v.as_str().map_or_else(|| v.to_string(), str::to_string))
                                })
                                .collect::<Vec<_>>()
                                .join(",")
                        })
                        .collect();
                    println!(
                        "{:<16} {:>4}  {:<16} {}",
                        k["name"].as_str().unwrap_or("?"),
                        k["id"],
                        k["overlay"].as_str().unwrap_or("?"),
                        rules.join(" | ")
                    );
                }
            }
            None
        }
        SdwanCmd::Class(ClassCmd::Delete { name }) => Some(c.delete(&format!("/v1/classes/{name}")).await?),
        SdwanCmd::Class(ClassCmd::Assign { name, overlay }) => Some(
            c.put(&format!("/v1/classes/{name}/overlay"), &json!({"overlay": overlay}))
                .await?,
        ),
        SdwanCmd::Apply { file } => Some(c.post("/v1/actions", &actions_of(file)?).await?),
    };
    let Some(v) = changed else { return Ok(()) };
    let generation = v["generation"].as_u64().unwrap_or_default();
    match a.wait {
        Some(secs) if secs > 0.0 => {
            let s = c
                .wait_synced(generation, Duration::from_millis(50), Duration::from_secs_f64(secs))
                .await
                .map_err(|e| wuos_model::RemoteError {
                    class: wuos_model::ErrorClass::Unavailable,
                    message: e,
                })?;
            if a.json {
                println!("{}", serde_json::to_string_pretty(&s)?);
            } else {
                println!("generation {generation}: every edge holds it");
            }
        }
        _ if a.json => println!("{}", serde_json::to_string_pretty(&v)?),
        _ => println!("generation {generation} (sent to the edges; `wuos sdwan status` shows which hold it)"),
    }
    Ok(())
}

fn print_status(s: &Value, json_out: bool) -> Result<()> {
    if json_out {
        println!("{}", serde_json::to_string_pretty(s)?);
        return Ok(());
    }
    println!(
        "generation {}: {} overlay(s), {} class(es)",
        s["generation"], s["overlays"], s["classes"]
    );
    for (name, e) in s["edges"].as_object().into_iter().flatten() {
        let state = if e["in_sync"] == true {
            "in sync".to_string()
        } else {
            format!(
                "holds generation {}, {} piece(s) pending{}",
                e["synced_generation"],
                e["pending"],
                e["error"].as_str().map(|x| format!(", error: {x}")).unwrap_or_default()
            )
        };
        println!("{name}: {state}");
        let a = &e["advertised"];
        if a.is_object() {
            let down: Vec<&str> = strs(&a["down"]);
            println!(
                "  adverts ({} hop(s) away): generation {}, {}/{} tunnels up{}{}",
                a["hops"],
                a["generation"],
                a["tunnels_up"],
                a["tunnels"],
                if a["failed_ops"].as_u64().unwrap_or(0) > 0 {
                    format!(", {} op(s) failed", a["failed_ops"])
                } else {
                    String::new()
                },
                if down.is_empty() {
                    String::new()
                } else {
                    format!(", down: {}", down.join(","))
                }
            );
            let num = |v: &Value| v.as_f64().map_or("-".to_string(), |x| format!("{x:.1}"));
            let paths = a["paths"].as_array().cloned().unwrap_or_default();
            if !paths.is_empty() {
                println!(
                    "  paths ({} of {}): rtt ms / loss % / jitter ms",
                    paths.len(),
                    a["paths_total"]
                );
            }
            for p in &paths {
                println!(
                    "    to {:<8} {:<16} {:<4} {:>8} {:>7} {:>7}",
                    p["site"].as_str().unwrap_or("?"),
                    format!(
                        "{}/{}",
                        p["overlay"].as_str().unwrap_or("?"),
                        p["underlay"].as_str().unwrap_or("?")
                    ),
                    if p["up"] == true { "up" } else { "DOWN" },
                    num(&p["rtt_ms"]),
                    num(&p["loss_pct"]),
                    num(&p["jitter_ms"])
                );
            }
            for c in a["steering"].as_array().into_iter().flatten() {
                let met = sla_met(&c["met"]);
                println!(
                    "  steers {} to {} over {} ({met})",
                    c["class"].as_str().unwrap_or("?"),
                    c["site"].as_str().unwrap_or("?"),
                    strs(&c["paths"]).join(" + ")
                );
            }
        }
        for t in e["tunnels"].as_array().into_iter().flatten() {
            let peers: Vec<&str> = strs(&t["peers"]);
            println!(
                "  tunnel {:<14} overlay {:<12} underlay {:<6} vni {:<6} to {}",
                t["name"].as_str().unwrap_or("?"),
                t["overlay"].as_str().unwrap_or("?"),
                t["underlay"].as_str().unwrap_or("?"),
                t["vni"],
                peers.join(",")
            );
        }
        for (class, overlay) in e["classes"].as_object().into_iter().flatten() {
            println!("  class  {class:<14} rides {}", overlay.as_str().unwrap_or("?"));
        }
        for u in e["unreachable"].as_array().into_iter().flatten() {
            println!("  unreachable: {}", u.as_str().unwrap_or("?"));
        }
    }
    Ok(())
}

/// A JSON array of strings (anything else: none).
fn strs(v: &Value) -> Vec<&str> {
    v.as_array().into_iter().flatten().filter_map(Value::as_str).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_parse_into_the_nbi_json() {
        assert_eq!(
            rule("proto=udp,dst_ports=5060-5070,dscp=46,ingress=eth2+eth3").unwrap(),
            json!({"proto": "udp", "dst_ports": "5060-5070", "dscp": 46, "ingress": ["eth2", "eth3"]})
        );
        for bad in ["proto", "dscp=ef", "proto=udp,proto=tcp"] {
            assert!(rule(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_toml_file_becomes_overlays_then_classes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sdwan.toml");
        std::fs::write(
            &path,
            r#"
[[class]]
name = "sip"
overlay = "voice"
rules = [{ proto = "udp", dst_ports = 5060 }]

[[overlay]]
name = "voice"
sites = { e1 = {}, e2 = {} }
underlays = ["mpls"]
"#,
        )
        .unwrap();
        let v = actions_of(&path).unwrap();
        assert_eq!(v[0]["action"], "create_overlay");
        assert_eq!(v[0]["sites"]["e2"], json!({}));
        assert_eq!(v[1]["action"], "create_class");
        assert_eq!(v[1]["rules"][0]["dst_ports"], 5060);
        std::fs::write(&path, "[[overlays]]\nname = \"x\"\n").unwrap();
        assert!(actions_of(&path).unwrap_err().to_string().contains("overlays"));
    }
}
