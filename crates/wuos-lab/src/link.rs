//! Link emulation on a running lab: rate through a token bucket (tc tbf), delay, jitter and loss
//! through a user-space relay spliced into the link, administrative up/down, MTU.
//!
//! ```text
//!  router A                      relay namespace                     router B
//!  eth0 ──egress redirect──▶ ix0 ──▶ l7a ═[wuos lab relay]═ l7b ──▶ ix3 ──ingress redirect──▶ eth3
//!  eth0 ◀─ingress redirect── ix0 ◀── l7a ═[  delay line   ]═ l7b ◀── ix3 ◀──egress redirect── eth3
//! ```
//! The direct veth `eth0 <-> eth3` stays; the redirects (tc `mirred`) take it out of the path while
//! the link is impaired, so addresses and routes never change. `ixN` carries `ethN`'s MAC, so frames
//! redirected into `ethN` are addressed to it. This kernel has no `sch_netem`; where it exists, the
//! relay could be replaced by netem on `ethN`, but one mechanism everywhere keeps results comparable.
//!
//! What a link is made of is in [`crate::plan`] (its veth, addresses, up state, routes over it, tc
//! ops, twins and relay). `link set` computes the lab's plan before and after the change and runs
//! their difference ([`plan::diff`]) through the executor, e.g. adding a delay creates the relay
//! namespace if no link had one, the twins `ixN <-> lIa/lIb`, the splices, and starts the relay;
//! removing it undoes those; `--down` deletes the routes over the link and sets both ends down,
//! `--up` sets them up and puts those routes back.

use std::collections::BTreeMap;
use std::time::Duration;

use wuos_model::LinkParams;
use wuos_model::units::format_duration;

use crate::error::LabError;
use crate::execute::Executor;
use crate::plan::{self, Input, LinkConfig, Plan};
use crate::progress::Silent;
use crate::session::Session;
use crate::state::{LabState, LinkRuntime};

/// A change to a running link; `None` leaves a parameter as it is.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LinkChange {
    /// Bits/s; `Some(0)` removes the rate limit.
    pub rate_bps: Option<u64>,
    pub delay: Option<Duration>,
    pub jitter: Option<Duration>,
    pub loss_pct: Option<f64>,
    pub mtu: Option<u32>,
    /// `Some(false)`: take the link down; `Some(true)`: bring it back up.
    pub up: Option<bool>,
}

impl LinkChange {
    /// The link's parameters after this change.
    pub fn apply_to(&self, p: &LinkParams) -> Result<LinkParams, LabError> {
        let mut n = p.clone();
        if let Some(r) = self.rate_bps {
            n.rate_bps = (r > 0).then_some(r);
        }
        if let Some(d) = self.delay {
            n.delay = (!d.is_zero()).then_some(d);
        }
        if let Some(j) = self.jitter {
            n.jitter = (!j.is_zero()).then_some(j);
        }
        if let Some(l) = self.loss_pct {
            if !(0.0..=100.0).contains(&l) {
                return Err(LabError::BadChange(format!("loss {l}% is outside 0-100%")));
            }
            n.loss_pct = (l > 0.0).then_some(l);
        }
        if let Some(m) = self.mtu {
            if !(576..=9000).contains(&m) {
                return Err(LabError::BadChange(format!("mtu {m} is outside 576-9000")));
            }
            n.mtu = Some(m);
        }
        if n.jitter.unwrap_or_default() > n.delay.unwrap_or_default() {
            return Err(LabError::BadChange(format!(
                "jitter {} is larger than delay {}; set a delay at least as large",
                format_duration(n.jitter.unwrap_or_default()),
                format_duration(n.delay.unwrap_or_default())
            )));
        }
        Ok(n)
    }
}

/// The plan that takes link `i` of a lab in `state` through `change`: the difference between the
/// lab's plan before and after (see [`plan::diff`]), and the link's configuration after. Pure.
pub fn change_plan(state: &LabState, i: usize, change: &LinkChange) -> Result<(Plan, LinkConfig), LabError> {
    let before: Vec<LinkConfig> = state.links.iter().map(LinkConfig::from).collect();
    let mut after = before.clone();
    after[i] = LinkConfig {
        up: change.up.unwrap_or(before[i].up),
        params: change.apply_to(&before[i].params)?,
    };
    let routes = plan::static_routes(&state.topology, &state.plan);
    let input = |links| Input {
        lab: &state.name,
        topology: &state.topology,
        addresses: &state.plan,
        routes: &routes,
        links,
        // Offloads are set once, at `up`; a change never touches them.
        offloads_off: false,
    };
    let diff = plan::diff(&plan::lab(&input(&before)), &plan::lab(&input(&after)));
    Ok((diff, after.swap_remove(i)))
}

/// `wuos lab link set A B …` on a running lab: applies the difference between the lab's plan
/// before and after the change.
pub fn set(env: &crate::LabEnv, lab: &str, a: &str, b: &str, change: &LinkChange) -> Result<LinkRuntime, LabError> {
    let _lock = crate::state::LabLock::take(env, lab)?;
    let mut state = LabState::load(env, lab)?;
    let i = state
        .topology
        .links
        .iter()
        .position(|l| (l.a == a && l.b == b) || (l.a == b && l.b == a))
        .ok_or_else(|| LabError::NoSuchLink {
            lab: lab.into(),
            a: a.into(),
            b: b.into(),
        })?;
    let rt = apply(env, lab, &mut state, i, change)?;
    state.save(env)?;
    Ok(rt)
}

/// Applies `change` to every link of underlay `name` (a link labelled so, or one to a provider
/// router labelled so), one after another; the links changed, by index. A failure stops there and
/// keeps the links already changed (the lab's state says which).
pub fn set_underlay(
    env: &crate::LabEnv,
    lab: &str,
    name: &str,
    change: &LinkChange,
) -> Result<Vec<(usize, LinkRuntime)>, LabError> {
    let _lock = crate::state::LabLock::take(env, lab)?;
    let mut state = LabState::load(env, lab)?;
    let t = &state.topology;
    let links: Vec<usize> = (0..t.links.len())
        .filter(|&l| t.link_underlay(l) == Some(name))
        .collect();
    if links.is_empty() {
        let mut known: Vec<&str> = (0..t.links.len()).filter_map(|l| t.link_underlay(l)).collect();
        known.sort_unstable();
        known.dedup();
        return Err(LabError::NoSuchUnderlay {
            lab: lab.into(),
            name: name.into(),
            known: if known.is_empty() {
                "(none)".into()
            } else {
                known.join(", ")
            },
        });
    }
    let mut done = Vec::with_capacity(links.len());
    for i in links {
        match apply(env, lab, &mut state, i, change) {
            Ok(rt) => done.push((i, rt)),
            Err(e) => {
                state.save(env)?;
                return Err(e);
            }
        }
    }
    state.save(env)?;
    Ok(done)
}

/// Changes link `i` in the kernel and in `state` (not saved).
fn apply(
    env: &crate::LabEnv,
    lab: &str,
    state: &mut LabState,
    i: usize,
    change: &LinkChange,
) -> Result<LinkRuntime, LabError> {
    let (diff, after) = change_plan(state, i, change)?;
    if let Some(rt) = retune(env, lab, i, &state.links[i], &after) {
        state.links[i] = rt.clone();
        return Ok(rt);
    }
    let mut relay_pid = state.links[i].relay_pid;
    if !diff.is_empty() {
        let session = Session::new(env, lab)?;
        let pids: BTreeMap<usize, u32> = state
            .links
            .iter()
            .enumerate()
            .filter_map(|(j, l)| Some((j, l.relay_pid?)))
            .collect();
        let mut exec = Executor::new(session.host(), 1).with_relay_pids(pids);
        exec.run(&diff, &Silent)?;
        relay_pid = exec.relay_pids().get(&i).copied();
    }
    let rt = LinkRuntime {
        up: after.up,
        spliced: after.params.needs_impairment(),
        params: after.params,
        relay_pid,
    };
    state.links[i] = rt.clone();
    Ok(rt)
}

/// A change of only the delay, jitter or loss of a link whose relay runs (and keeps its kind:
/// delaying or not) goes to the running relay (its params file, then SIGHUP) instead of a new
/// relay: a restarted relay drops the link's frames while it starts, which probes see as a
/// blackout. None when the change needs the plan.
fn retune(env: &crate::LabEnv, lab: &str, i: usize, before: &LinkRuntime, after: &LinkConfig) -> Option<LinkRuntime> {
    let (old, new) = (&before.params, &after.params);
    let delaying = |p: &wuos_model::topology::LinkParams| p.delay.is_some() || p.jitter.is_some();
    let pid = before.relay_pid?;
    let same_rest = old.rate_bps == new.rate_bps && old.mtu == new.mtu && before.up == after.up;
    if !(before.spliced && new.needs_impairment() && same_rest && delaying(old) == delaying(new)) {
        return None;
    }
    if !wuos_southbound::process::cmdline_has(&env.proc_root, pid as i32, &["relay", lab]) || !hup_blocked(env, pid) {
        return None;
    }
    let imp = crate::impair::Impairment {
        delay: new.delay.unwrap_or_default(),
        jitter: new.jitter.unwrap_or_default(),
        loss_pct: new.loss_pct.unwrap_or(0.0),
        // Not used by a retune: the relay's random streams go on.
        seed: 0,
    };
    imp.validate().ok()?;
    let path = crate::relays::params_path(env, lab, i);
    let json = serde_json::to_vec(&imp).ok()?;
    std::fs::write(&path, json).ok()?;
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::Signal::SIGHUP).ok()?;
    Some(LinkRuntime {
        up: after.up,
        spliced: true,
        params: new.clone(),
        relay_pid: Some(pid),
    })
}

/// Whether relay `pid` blocks SIGHUP (it has set up its handling: before that, SIGHUP would end
/// it); waits up to a second for a relay that is just starting.
fn hup_blocked(env: &crate::LabEnv, pid: u32) -> bool {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(1);
    loop {
        let blocked = std::fs::read_to_string(env.proc_root.join(pid.to_string()).join("status"))
            .ok()
            .and_then(|s| {
                let hex = s.lines().find_map(|l| l.strip_prefix("SigBlk:"))?.trim().to_string();
                u64::from_str_radix(&hex, 16).ok()
            })
            .is_some_and(|mask| mask & 1 != 0);
        if blocked || std::time::Instant::now() > deadline {
            return blocked;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}
