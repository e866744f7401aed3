//! The controller (every router): applies the intents an orchestrator sends over a `Control`
//! session — service instances (domains), and service rules (where a service's VIP leads) —
//! acknowledges each, persists the intents in force, and after a restart reconciles the kernel
//! with them.
//!
//! ```text
//!  orchestrator ──IntentBatch──▶ session (server.rs) ──▶ Controller::apply ──▶ Domains / netlink
//!               ◀──Ack / IntentError── (an instance is acknowledged once its health probe passes)
//! ```
//!
//! Intents are keyed by what they decide (`instance/SERVICE`, `rule/SERVICE`): a newer intent for
//! the same key replaces the older, in memory and in the store. Applying is idempotent — a running
//! instance is not started twice, a route is replaced — so re-applying after a restart (or
//! periodically, [`Controller::reconcile`]) duplicates nothing and restores what is missing.
//!
//! One instance per service per router: the domain is named after the service (`pabx`).

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prost::Message;
use tracing::{info, warn};
use wuos_proto::pb;
use wuos_proto::pb::intent::Kind;
use wuos_southbound::netlink::{Netlink, RouteSpec};

use crate::daemon::Shared;
use crate::store::Store;

const KEY_PREFIX: &str = "intent/";

/// How an applied intent is acknowledged.
#[derive(Debug, PartialEq, Eq)]
pub enum Applied {
    /// Done: acknowledge now.
    Now,
    /// An instance started (or already running): acknowledge once domain `0` is healthy.
    WhenHealthy(String),
}

/// The controller's state: the intents in force.
#[derive(Debug)]
pub struct Controller {
    store: Arc<Store>,
    intents: Mutex<BTreeMap<String, pb::Intent>>,
}

/// The key an intent is filed under, or `None` for intents the controller does not keep.
fn key(intent: &pb::Intent) -> Option<String> {
    match intent.kind.as_ref()? {
        Kind::ServiceInstance(s) => Some(format!("instance/{}", s.service)),
        Kind::ServiceRule(r) => Some(format!("rule/{}", r.service)),
        Kind::Route(_) | Kind::Policy(_) => None,
    }
}

/// The route that `addr` takes: the longest matching prefix (ties: the first listed).
pub fn lookup(routes: &[RouteSpec], addr: Ipv4Addr) -> Option<&RouteSpec> {
    let a = u32::from(addr);
    let mut best: Option<&RouteSpec> = None;
    for r in routes {
        let mask = if r.prefix_len == 0 {
            0
        } else {
            u32::MAX << (32 - u32::from(r.prefix_len.min(32)))
        };
        if a & mask == u32::from(r.dst) & mask && best.is_none_or(|b| r.prefix_len > b.prefix_len) {
            best = Some(r);
        }
    }
    best
}

/// The next hop towards `target` as a route to install for another destination: the gateway of
/// `target`'s route, or `target` itself when it is on-link.
pub fn next_hop_towards(routes: &[RouteSpec], target: Ipv4Addr) -> Option<(Ipv4Addr, u32)> {
    let r = lookup(routes, target)?;
    let gw = if r.gateway.is_unspecified() { target } else { r.gateway };
    Some((gw, r.oif))
}

impl Controller {
    /// Loads the persisted intents.
    pub fn open(store: Arc<Store>) -> Self {
        let mut intents = BTreeMap::new();
        for (k, v) in store.blobs_with_prefix(KEY_PREFIX).unwrap_or_default() {
            match pb::Intent::decode(v.as_slice()) {
                Ok(i) => {
                    intents.insert(k.trim_start_matches(KEY_PREFIX).to_string(), i);
                }
                Err(e) => warn!(key = %k, error = %e, "dropping an undecodable stored intent"),
            }
        }
        Self {
            store,
            intents: Mutex::new(intents),
        }
    }

    /// The intents in force, by key.
    pub fn intents(&self) -> BTreeMap<String, pb::Intent> {
        self.intents.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn remember(&self, intent: &pb::Intent) {
        let Some(k) = key(intent) else { return };
        let gone = matches!(
            &intent.kind,
            Some(Kind::ServiceInstance(s)) if !s.present
        ) || matches!(&intent.kind, Some(Kind::ServiceRule(r)) if r.serving_router.is_empty());
        let mut map = self.intents.lock().unwrap_or_else(|p| p.into_inner());
        let stored = if gone {
            map.remove(&k);
            self.store.delete_blob(&format!("{KEY_PREFIX}{k}"))
        } else {
            map.insert(k.clone(), intent.clone());
            self.store
                .put_blob(&format!("{KEY_PREFIX}{k}"), &intent.encode_to_vec())
        };
        if let Err(e) = stored {
            warn!(key = %k, error = %e, "cannot persist an intent");
        }
    }

    /// Applies one intent and files it; `Err` is the reason to send back.
    pub async fn apply(&self, shared: &Arc<Shared>, nl: &Netlink, intent: &pb::Intent) -> Result<Applied, String> {
        let applied = match intent.kind.as_ref() {
            Some(Kind::ServiceInstance(s)) => instance(shared, &s.service, s.present).await,
            Some(Kind::ServiceRule(r)) => {
                let done = rule(shared, nl, r).await.map(|()| Applied::Now);
                // A rule that cannot be applied yet (the serving router not in our view yet, no
                // route to it) is kept all the same: the reconciler applies it once it can.
                if let Err(e) = &done {
                    warn!(service = %r.service, error = %e, "service rule kept, to be applied when possible");
                    self.remember(intent);
                }
                done
            }
            Some(Kind::Route(_)) => Err("route intents are not taken: use a service rule".into()),
            Some(Kind::Policy(_)) => Err("policies are applied through the admin API (wuos policy apply)".into()),
            None => Err("the intent has no kind".into()),
        }?;
        self.remember(intent);
        Ok(applied)
    }

    /// Re-applies every intent in force (after a restart, and periodically: a route lost or a
    /// serving router that moved is put right; a running instance is left alone).
    pub async fn reconcile(&self, shared: &Arc<Shared>, nl: &Netlink) {
        for (k, i) in self.intents() {
            let r = match i.kind.as_ref() {
                Some(Kind::ServiceInstance(s)) => instance(shared, &s.service, s.present).await.map(drop),
                Some(Kind::ServiceRule(r)) => rule(shared, nl, r).await,
                _ => Ok(()),
            };
            if let Err(e) = r {
                warn!(intent = %k, error = %e, "reconcile: not applied yet");
            }
        }
    }
}

/// Starts (or keeps) the service's instance, or destroys it.
async fn instance(shared: &Arc<Shared>, service: &str, present: bool) -> Result<Applied, String> {
    let s = shared.clone();
    let service = service.to_string();
    tokio::task::spawn_blocking(move || {
        let Some(d) = &s.domains else {
            return Err(format!(
                "{} runs no domains (no [domains] in its config)",
                s.cfg.router_id
            ));
        };
        let mut d = d.lock().unwrap_or_else(|p| p.into_inner());
        let existing = d.state_of(&service).map(|(state, _)| state.to_string());
        if !present {
            if existing.is_some() {
                d.destroy(&service).map_err(|e| e.to_string())?;
                info!(%service, "instance removed (intent)");
            }
            return Ok(Applied::Now);
        }
        match existing {
            Some(state) if state == "running" || state == "paused" => {}
            Some(_) => {
                // Stopped or failed: start it afresh.
                d.destroy(&service).map_err(|e| e.to_string())?;
                d.start_service(&service, &service, &BTreeMap::new())
                    .map_err(|e| e.to_string())?;
            }
            None => {
                d.start_service(&service, &service, &BTreeMap::new())
                    .map_err(|e| e.to_string())?;
                info!(%service, "instance started (intent)");
            }
        }
        Ok(Applied::WhenHealthy(service))
    })
    .await
    .map_err(|e| format!("the instance task failed: {e}"))?
}

/// Installs (or removes) the route of the service's VIP towards the router serving it.
async fn rule(shared: &Arc<Shared>, nl: &Netlink, r: &pb::ServiceRuleIntent) -> Result<(), String> {
    let vip: Ipv4Addr = r
        .vip
        .parse()
        .map_err(|_| format!("vip {:?} is not an IPv4 address", r.vip))?;
    if r.serving_router.is_empty() {
        return nl.del_route(vip, 32).await.map_err(|e| e.to_string());
    }
    let me = &shared.cfg.router_id;
    let target: Ipv4Addr = if &r.serving_router == me {
        // The local instance's address.
        let s = shared.clone();
        let service = r.service.clone();
        tokio::task::spawn_blocking(move || {
            let d = s.domains.as_ref()?;
            let d = d.lock().unwrap_or_else(|p| p.into_inner());
            match d.state_of(&service)? {
                ("running", addr) => addr,
                _ => None,
            }
        })
        .await
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("no running local instance of {} to route {vip} to", r.service))?
    } else {
        let address = shared
            .control_address_of(&r.serving_router)
            .ok_or_else(|| format!("serving router {} is not in {me}'s view", r.serving_router))?;
        host_of(&address).ok_or_else(|| format!("{}'s address {address:?} is not IPv4", r.serving_router))?
    };
    let routes = nl.routes_v4().await.map_err(|e| e.to_string())?;
    let (gateway, oif) = next_hop_towards(&routes, target).ok_or_else(|| format!("{me} has no route to {target}"))?;
    nl.replace_route(&RouteSpec {
        dst: vip,
        prefix_len: 32,
        gateway,
        oif,
        src: None,
    })
    .await
    .map_err(|e| e.to_string())?;
    // The data path: redirect the service's packets onto the local instance's veth, or stop.
    if let Some(dp) = &shared.datapath {
        if &r.serving_router == me {
            let s = shared.clone();
            let service = r.service.clone();
            let link = tokio::task::spawn_blocking(move || {
                s.domains
                    .as_ref()?
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .instance_link(&service)
            })
            .await
            .map_err(|e| e.to_string())?;
            match link {
                Some((host_if, netns, dom_if)) => {
                    if let Err(e) = dp.set_local(&r.service, &host_if, &netns, &dom_if) {
                        warn!(service = %r.service, error = %e, "no XDP redirect to the local instance; the route carries it");
                    }
                }
                None => dp.clear_local(&r.service),
            }
        } else {
            dp.clear_local(&r.service);
        }
    }
    Ok(())
}

/// `10.0.0.1` of `10.0.0.1:7470`.
fn host_of(address: &str) -> Option<Ipv4Addr> {
    address.rsplit_once(':').map_or(address, |(h, _)| h).parse().ok()
}

/// Waits until domain `name` is healthy (or gives up after `timeout`), probing it every 50 ms
/// meanwhile rather than at its configured interval: a move waits on this.
pub async fn await_healthy(shared: &Arc<Shared>, name: &str, timeout: Duration) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    loop {
        let (healthy, probe) = shared.domains.as_ref().map_or((false, None), |d| {
            let mut d = d.lock().unwrap_or_else(|p| p.into_inner());
            if d.is_healthy(name) {
                (true, None)
            } else {
                (false, d.probe_now(name))
            }
        });
        if healthy {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(format!("instance {name} did not become healthy within {timeout:?}"));
        }
        if let Some(p) = probe {
            let s = shared.clone();
            let _ = tokio::task::spawn_blocking(move || {
                // Only a pass is recorded: these extra probes must not count a service that is
                // still starting towards `unhealthy` (its own probes at their interval do).
                let result = crate::health::run(&p);
                if result.is_ok()
                    && let Some(d) = &s.domains
                {
                    d.lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .record_probes(vec![(p.domain.clone(), result)]);
                }
            })
            .await;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(dst: [u8; 4], len: u8, gw: [u8; 4], oif: u32) -> RouteSpec {
        RouteSpec {
            dst: dst.into(),
            prefix_len: len,
            gateway: gw.into(),
            oif,
            src: None,
        }
    }

    #[test]
    fn the_longest_prefix_wins_and_on_link_targets_are_their_own_next_hop() {
        let routes = vec![
            r([0, 0, 0, 0], 0, [10, 0, 0, 1], 2),
            r([10, 1, 0, 0], 16, [10, 0, 0, 2], 3),
            r([10, 1, 2, 0], 24, [10, 0, 0, 3], 4),
            r([10, 9, 9, 0], 30, [0, 0, 0, 0], 7),
        ];
        assert_eq!(
            next_hop_towards(&routes, [10, 1, 2, 9].into()),
            Some(([10, 0, 0, 3].into(), 4))
        );
        assert_eq!(
            next_hop_towards(&routes, [10, 1, 3, 9].into()),
            Some(([10, 0, 0, 2].into(), 3))
        );
        assert_eq!(
            next_hop_towards(&routes, [192, 0, 2, 1].into()),
            Some(([10, 0, 0, 1].into(), 2))
        );
        assert_eq!(
            next_hop_towards(&routes, [10, 9, 9, 2].into()),
            Some(([10, 9, 9, 2].into(), 7))
        );
        assert_eq!(next_hop_towards(&routes[1..], [192, 0, 2, 1].into()), None);
    }

    #[test]
    fn intents_are_keyed_by_what_they_decide() {
        let i = |kind| pb::Intent {
            id: 1,
            kind: Some(kind),
        };
        assert_eq!(
            key(&i(Kind::ServiceInstance(pb::ServiceInstanceIntent {
                service: "pabx".into(),
                present: true
            }))),
            Some("instance/pabx".into())
        );
        assert_eq!(
            key(&i(Kind::ServiceRule(pb::ServiceRuleIntent {
                service: "pabx".into(),
                ..Default::default()
            }))),
            Some("rule/pabx".into())
        );
        assert_eq!(key(&i(Kind::Policy(pb::PolicyIntent { text: String::new() }))), None);
        assert_eq!(host_of("10.0.0.1:7470"), Some([10, 0, 0, 1].into()));
        assert_eq!(host_of("10.0.0.1"), Some([10, 0, 0, 1].into()));
        assert_eq!(host_of("r1:7470"), None);
    }

    #[test]
    fn intents_persist_and_a_removal_forgets_them() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(dir.path()).unwrap());
        let c = Controller::open(store.clone());
        let start = pb::Intent {
            id: 7,
            kind: Some(Kind::ServiceInstance(pb::ServiceInstanceIntent {
                service: "pabx".into(),
                present: true,
            })),
        };
        c.remember(&start);
        let rule = pb::Intent {
            id: 8,
            kind: Some(Kind::ServiceRule(pb::ServiceRuleIntent {
                service: "pabx".into(),
                vip: "10.255.0.10".into(),
                local: true,
                serving_router: "fog".into(),
            })),
        };
        c.remember(&rule);
        let again = Controller::open(store.clone());
        assert_eq!(again.intents().len(), 2);
        assert_eq!(again.intents()["instance/pabx"], start);
        let stop = pb::Intent {
            id: 9,
            kind: Some(Kind::ServiceInstance(pb::ServiceInstanceIntent {
                service: "pabx".into(),
                present: false,
            })),
        };
        again.remember(&stop);
        assert_eq!(
            Controller::open(store).intents().keys().collect::<Vec<_>>(),
            ["rule/pabx"]
        );
    }
}
