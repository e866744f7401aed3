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

use std::process::Command;
use std::time::Duration;

use futures::future::try_join_all;
use wuos_model::LinkParams;
use wuos_model::units::format_duration;
use wuos_southbound::{process, tc};

use crate::error::LabError;
use crate::names;
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

/// The two ends of link `i`: (node index, namespace, local interface name, interface number).
pub(crate) struct Ends {
    pub ns: [String; 2],
    pub eth: [String; 2],
    pub num: [usize; 2],
    pub node: [usize; 2],
}

pub(crate) fn ends(state: &LabState, i: usize) -> Ends {
    let l = &state.topology.links[i];
    let a = state.topology.node_index(&l.a).expect("validated topology");
    let b = state.topology.node_index(&l.b).expect("validated topology");
    let la = &state.plan.links[i];
    let num = |s: &str| s.trim_start_matches("eth").parse::<usize>().unwrap_or(0);
    Ends {
        ns: [
            names::node_netns(&state.name, &l.a),
            names::node_netns(&state.name, &l.b),
        ],
        eth: [la.a_ifname.clone(), la.b_ifname.clone()],
        num: [num(&la.a_ifname), num(&la.b_ifname)],
        node: [a, b],
    }
}

/// Brings link `i` from runtime state `old` to parameters `new`: splices or unsplices the relay,
/// restarts it with the new impairment, and sets the token bucket on whichever interface now carries
/// the link's egress. The namespaces of both ends must be attached to the session.
pub(crate) fn apply(
    s: &mut Session<'_>,
    state: &LabState,
    i: usize,
    old: &LinkRuntime,
    new: &LinkParams,
) -> Result<LinkRuntime, LabError> {
    let e = ends(state, i);
    let lab = &state.name;
    let mtu = new.mtu.unwrap_or(1500);
    let mut rt = LinkRuntime {
        up: old.up,
        params: new.clone(),
        relay_pid: old.relay_pid,
        spliced: old.spliced,
    };
    let want_splice = new.needs_impairment();
    let mut tc_lines: [Vec<String>; 2] = [Vec::new(), Vec::new()];

    // The stored pid is only signalled if it still is this lab's relay.
    let old_relay = rt.relay_pid.take().map(|p| p as i32);
    if let Some(pid) = old_relay.filter(|&p| process::cmdline_has(&s.env.proc_root, p, &["relay", lab])) {
        process::terminate(&s.env.proc_root, &[pid], Duration::from_millis(200));
    }
    if want_splice && !rt.spliced {
        let relay_ns = names::relay_netns(lab);
        ensure_relay_ns(s, &relay_ns)?;
        for side in 0..2u8 {
            let k = usize::from(side);
            let ix = names::ix_name(&e.eth[k]);
            let (rname, ridx) = names::relay_if(i, side);
            s.veth(
                (&e.ns[k], &ix, names::ix_index(e.num[k]), names::mac(lab, i, side, 0)),
                (&relay_ns, &rname, ridx, names::mac(lab, i, side, 1)),
                Some(mtu),
            )?;
            let relay_nl = s.nl(&relay_ns).clone();
            let router_nl = s.nl(&e.ns[k]).clone();
            s.rt.block_on(async {
                router_nl.set_up(names::ix_index(e.num[k]), true).await?;
                relay_nl.set_up(ridx, true).await
            })?;
            if old.params.rate_bps.is_some() {
                tc_lines[k].extend(tc::rate(&e.eth[k], None, mtu));
            }
            tc_lines[k].extend(tc::redirect_through(&e.eth[k], &ix));
        }
        rt.spliced = true;
    } else if !want_splice && rt.spliced {
        for k in 0..2 {
            // Deleting the router-side twin removes its relay-side peer and its qdiscs with it.
            tc_lines_run(&e.ns[k], &[format!("qdisc del dev {} clsact", e.eth[k])])?;
            let nl = s.nl(&e.ns[k]).clone();
            s.rt.block_on(nl.del_link(names::ix_index(e.num[k])))?;
        }
        rt.spliced = false;
    }
    if new.mtu != old.params.mtu {
        for k in 0..2 {
            let nl = s.nl(&e.ns[k]).clone();
            let mut idx = vec![names::eth_index(e.num[k])];
            if rt.spliced {
                idx.push(names::ix_index(e.num[k]));
            }
            s.rt.block_on(try_join_all(idx.into_iter().map(|x| {
                let nl = nl.clone();
                async move { nl.set_mtu(x, mtu).await }
            })))?;
        }
    }
    // The token bucket sits on the interface whose queue the link's frames pass through.
    let rate_changed = new.rate_bps != old.params.rate_bps || rt.spliced != old.spliced;
    if rate_changed {
        for (k, lines) in tc_lines.iter_mut().enumerate() {
            let dev = if rt.spliced {
                names::ix_name(&e.eth[k])
            } else {
                e.eth[k].clone()
            };
            let had = old.params.rate_bps.is_some() && rt.spliced == old.spliced;
            if new.rate_bps.is_some() || had {
                lines.extend(tc::rate(&dev, new.rate_bps, mtu));
            }
        }
    }
    for (ns, lines) in e.ns.iter().zip(&tc_lines) {
        tc_lines_run(ns, lines)?;
    }
    if want_splice {
        rt.relay_pid = Some(spawn_relay(s, state, i, new)?);
    }
    Ok(rt)
}

fn tc_lines_run(ns: &str, lines: &[String]) -> Result<(), LabError> {
    Ok(tc::batch(ns, lines)?)
}

fn ensure_relay_ns(s: &mut Session<'_>, name: &str) -> Result<(), LabError> {
    if !s.env.netns_dir.join(name).exists() {
        let handle = s.rt.handle().clone();
        let proc_sys = s.env.proc_root.join("sys");
        let (file, nl) = wuos_southbound::netns::create(&s.env.netns_dir, name, || {
            crate::up::configure_sysctls(&proc_sys, false);
            wuos_southbound::netlink::Netlink::connect_here(&handle)
        })?;
        s.ns.insert(name.to_string(), (file, nl?));
    }
    s.attach(name)?;
    Ok(())
}

/// Starts `wuos lab relay` for link `i` as a detached process; its output goes to the lab's logs.
fn spawn_relay(s: &Session<'_>, state: &LabState, i: usize, p: &LinkParams) -> Result<u32, LabError> {
    let log = crate::spawn::log_file(s.env, &state.name, &format!("relay-{i}"))?;
    let (a, _) = names::relay_if(i, 0);
    let (b, _) = names::relay_if(i, 1);
    let seed = names::mac(&state.name, i, 0, 0)
        .iter()
        .fold(i as u64, |h, &x| h.wrapping_mul(31).wrapping_add(u64::from(x)));
    let mut cmd = Command::new(&s.env.relay_exe);
    cmd.args(["lab", "relay", "--lab", &state.name, "--link", &i.to_string()])
        .arg("--netns")
        .arg(s.env.netns_dir.join(names::relay_netns(&state.name)))
        .args(["--a", &a, "--b", &b])
        .args(["--delay", &format_duration(p.delay.unwrap_or_default())])
        .args(["--jitter", &format_duration(p.jitter.unwrap_or_default())])
        .args(["--loss", &format!("{}", p.loss_pct.unwrap_or(0.0))])
        .args(["--seed", &seed.to_string()]);
    Ok(crate::spawn::spawn_logged(cmd, log, true, &format!("the relay of link {i}"))?.id())
}

/// `wuos lab link set A B …` on a running lab.
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
    let old = state.links[i].clone();
    let new = change.apply_to(&old.params)?;
    let mut s = Session::new(env)?;
    let e = ends(&state, i);
    for ns in &e.ns {
        s.attach(ns)?;
    }
    let mut rt = apply(&mut s, &state, i, &old, &new)?;
    state.links[i] = rt.clone();
    if let Some(up) = change.up.filter(|&up| up != old.up) {
        set_admin(&mut s, &mut state, i, up)?;
        rt.up = up;
    }
    state.links[i] = rt.clone();
    state.save(env)?;
    Ok(rt)
}

/// Takes link `i` down or up on both ends. Taking an interface down makes the kernel drop the
/// routes through it; bringing it up reinstalls both ends' routes from the route plan.
fn set_admin(s: &mut Session<'_>, state: &mut LabState, i: usize, up: bool) -> Result<(), LabError> {
    let e = ends(state, i);
    for k in 0..2 {
        let nl = s.nl(&e.ns[k]).clone();
        s.rt.block_on(nl.set_up(names::eth_index(e.num[k]), up))?;
    }
    state.links[i].up = up;
    if up {
        crate::up::install_routes(s, state, &e.node)?;
    }
    Ok(())
}
