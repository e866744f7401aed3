//! What `wuos bench failover` and `wuos demo sdwan` do to a running `sdwan:S:U` lab: intents
//! through the controller's NBI, an edge's path report (its admin API, as `wuos sdwan paths
//! ROUTER --json` prints it), where a class goes in it, and an underlay's relays retuned live.
//!
//! An edge's report is JSON: `paths` [{overlay, underlay, site, tunnel, target, up, rtt_ms,
//! loss_pct, jitter_ms, …}], `steering` [{class, site, paths, met}], `decisions` (oldest first)
//! [{at_unix_ms, class, site, from, to, met, reason}].

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::Value;
use wuos_lab::LabEnv;
use wuos_lab::link::LinkChange;
use wuos_proto::admin::{AdminClient, Target};
use wuos_proto::nbi::NbiClient;

/// Links a path between e1 and e2 of an `sdwan:S:U` lab crosses one way on one underlay
/// (e1–u1, u1–u2, u2–e2).
pub(crate) const LINKS_CROSSED: i32 = 3;

/// Applies `actions` through the NBI and waits until every edge holds them.
pub(crate) async fn apply(c: &mut NbiClient, actions: Value) -> Result<()> {
    let v = c.post("/v1/actions", &actions).await?;
    let g = v["generation"].as_u64().context("no generation")?;
    c.wait_synced(g, Duration::from_millis(50), Duration::from_secs(120))
        .await
        .map_err(anyhow::Error::msg)?;
    Ok(())
}

/// `node`'s path report, from its daemon's admin API.
pub(crate) async fn report_of(env: &LabEnv, lab: &str, node: &str) -> Result<Value> {
    let sock = wuos_lab::daemons::socket_path(env, lab, node);
    let mut a = AdminClient::connect(Target::Socket(sock))
        .await
        .with_context(|| format!("the daemon of {node}"))?;
    Ok(serde_json::from_str(&a.sdwan_paths().await?)?)
}

/// Where `class` goes towards `site` in report `r`, and whether its SLA is met.
pub(crate) fn steering(r: &Value, class: &str, site: &str) -> (Vec<String>, Option<bool>) {
    let s = r["steering"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|s| s["class"] == class && s["site"] == site);
    match s {
        Some(s) => (
            s["paths"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|p| p.as_str().map(str::to_string))
                .collect(),
            s["met"].as_bool(),
        ),
        None => (Vec::new(), None),
    }
}

/// Waits until `node` sends `class` towards `site` on `path` alone with its SLA met.
pub(crate) async fn wait_steering(
    env: &LabEnv,
    lab: &str,
    (node, class, site): (&str, &str, &str),
    path: &str,
    within: Duration,
) -> Result<()> {
    let deadline = Instant::now() + within;
    loop {
        let r = report_of(env, lab, node).await?;
        let now = steering(&r, class, site);
        if now == (vec![path.to_string()], Some(true)) {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "{node} did not settle {class} towards {site} on {path} with its SLA met within {within:?}: it is on {} (met: {:?})",
                if now.0.is_empty() {
                    "nothing".into()
                } else {
                    now.0.join(" + ")
                },
                now.1
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `wuos lab underlay set NAME …` (it runs a runtime of its own: on a blocking thread).
pub(crate) async fn set_underlay(env: &LabEnv, lab: &str, underlay: &str, change: &LinkChange) -> Result<()> {
    let (env, lab, underlay, change) = (env.clone(), lab.to_string(), underlay.to_string(), change.clone());
    tokio::task::spawn_blocking(move || wuos_lab::link::set_underlay(&env, &lab, &underlay, &change))
        .await?
        .context("cannot change the underlay")?;
    Ok(())
}

/// The loss on each link, each way, for `path_pct` of a path's round trips to be lost when it
/// crosses `links` links one way: 1 − (1 − p)^(2 × links) = path_pct.
pub(crate) fn loss_per_link(path_pct: f64, links: i32) -> f64 {
    (1.0 - (1.0 - path_pct / 100.0).powf(1.0 / f64::from(2 * links))) * 100.0
}

/// A LAN host's address (its eth0).
pub(crate) fn lan_addr(env: &LabEnv, lab: &str, host: &str) -> Result<Ipv4Addr> {
    let out = crate::overlays::in_lab_node(env, lab, host, || {
        std::process::Command::new("ip")
            .args(["-j", "-4", "addr", "show", "eth0"])
            .output()
    })??;
    let v: Value = serde_json::from_slice(&out.stdout)?;
    v[0]["addr_info"][0]["local"]
        .as_str()
        .with_context(|| format!("no IPv4 address on {host}'s eth0"))?
        .parse()
        .context("a bad address")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_loss_per_link_compounds_to_the_path_loss() {
        let l = loss_per_link(10.0, 3) / 100.0;
        let path = 1.0 - (1.0 - l).powi(6);
        assert!((path - 0.10).abs() < 1e-12, "{path}");
        assert_eq!(loss_per_link(0.0, 3), 0.0);
    }

    #[test]
    fn steering_is_read_per_class_and_site() {
        let r = json!({"steering": [
            {"class": "voip", "site": "e3", "paths": ["wan/inet"], "met": false},
            {"class": "voip", "site": "e2", "paths": ["wan/mpls"], "met": true},
        ]});
        assert_eq!(steering(&r, "voip", "e2"), (vec!["wan/mpls".to_string()], Some(true)));
        assert_eq!(steering(&r, "voip", "e3").1, Some(false));
        assert_eq!(steering(&r, "bulk", "e2"), (Vec::new(), None));
    }
}
