//! Runs a [`Plan`] through the southbound traits ([`Host`]): the real ones for `lab up` and
//! `link set`, the recording fakes in tests.
//!
//! ```text
//!  stage by stage, in order; within a stage, runs of ops of one kind:
//!   create namespace ........ W worker threads; each creates, sets the sysctls from inside, and
//!                             opens the namespace's socket
//!   veth / link / address /
//!   route ops ............... netlink, pipelined: per socket at most 256 requests in flight, all
//!                             sockets at once; veths on the host socket, born in their namespaces
//!   rate / splice ops ....... one `tc -batch` per namespace
//!   the rest (cgroups, namespace deletion, relays, offloads) ... one at a time, in plan order
//!
//!  on failure: what the executor made (relays, namespaces, cgroups) is undone, newest first;
//!  everything else it made lives inside those and goes with them
//! ```
//!
//! Ops within a stage must not depend on each other (the plan's stages are built so); namespaces
//! an op names but that the plan does not create are opened on first use.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Instant;

use futures::{StreamExt, TryStreamExt, stream};
use serde::Serialize;
use wuos_southbound::addresses::Addresses;
use wuos_southbound::cgroup::Limits;
use wuos_southbound::cgroups::Cgroups;
use wuos_southbound::links::{Links, VethSide};
use wuos_southbound::namespaces::Namespaces;
use wuos_southbound::netlink::{NetlinkError, RouteSpec};
use wuos_southbound::offloads::Offloads;
use wuos_southbound::routes::Routes;
use wuos_southbound::sysctls::{SysctlError, Sysctls};
use wuos_southbound::tc;
use wuos_southbound::traffic::TrafficControl;

use crate::error::{ExecError, LabError};
use crate::plan::{Op, Plan, VethEnd};
use crate::progress::Progress;
use crate::relays::Relays;

/// Netlink requests in flight per socket; bounded so replies never overflow the socket buffer.
pub const IN_FLIGHT: usize = 256;

/// The implementations an executor runs ops through.
pub struct Host<'a, N: Namespaces> {
    pub namespaces: &'a N,
    pub sysctls: &'a dyn Sysctls,
    pub cgroups: &'a dyn Cgroups,
    pub tc: &'a dyn TrafficControl,
    pub offloads: &'a dyn Offloads,
    pub relays: &'a dyn Relays,
}

/// Wall time of each stage run, in order, in milliseconds.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Timings {
    pub stages_ms: Vec<(String, f64)>,
}

/// How the executor runs a stretch of ops.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    NewNamespace,
    Netlink,
    Tc,
    One,
}

fn kind(op: &Op) -> Kind {
    match op {
        Op::CreateNamespace { .. } => Kind::NewNamespace,
        Op::AddVeth { .. }
        | Op::DeleteLink { .. }
        | Op::SetLinkUp { .. }
        | Op::SetMtu { .. }
        | Op::AddAddress { .. }
        | Op::ReplaceRoute { .. }
        | Op::DeleteRoute { .. } => Kind::Netlink,
        Op::SetRate { .. } | Op::RemoveRate { .. } | Op::Splice { .. } | Op::Unsplice { .. } => Kind::Tc,
        Op::CreateCgroup { .. }
        | Op::DestroyCgroup { .. }
        | Op::DeleteNamespace { .. }
        | Op::StartRelay(_)
        | Op::StopRelay { .. }
        | Op::TxChecksumOff { .. }
        | Op::UnrelayableGsoOff { .. } => Kind::One,
    }
}

/// A failed op: its index in a run of ops, and why.
type Failed = (usize, Box<LabError>);

fn failed(i: usize, e: impl Into<LabError>) -> Failed {
    (i, Box::new(e.into()))
}

/// The ops of a run that one socket carries (`None`: the host's), with their indexes.
type SocketGroup<'o> = (Option<&'o str>, Vec<(usize, &'o Op)>);

/// Runs plans; keeps the namespaces it reached open, and the relays' pids.
pub struct Executor<'a, N: Namespaces> {
    host: Host<'a, N>,
    workers: usize,
    open: HashMap<String, (N::Netns, N::Socket)>,
    relay_pids: BTreeMap<usize, u32>,
    /// Undo ops of what this executor made, oldest first.
    made: Vec<Op>,
}

impl<'a, N: Namespaces> Executor<'a, N> {
    /// An executor creating namespaces on `workers` threads.
    pub fn new(host: Host<'a, N>, workers: usize) -> Self {
        Self {
            host,
            workers: workers.max(1),
            open: HashMap::new(),
            relay_pids: BTreeMap::new(),
            made: Vec::new(),
        }
    }

    /// The pids of relays already running (by link), so that a plan can stop them.
    pub fn with_relay_pids(mut self, pids: BTreeMap<usize, u32>) -> Self {
        self.relay_pids = pids;
        self
    }

    /// The pids of the relays running now, by link.
    pub fn relay_pids(&self) -> &BTreeMap<usize, u32> {
        &self.relay_pids
    }

    /// Runs `plan`. On failure, undoes what this executor made and says what failed.
    pub fn run(&mut self, plan: &Plan, progress: &dyn Progress) -> Result<Timings, ExecError> {
        let mut timings = Timings::default();
        for stage in &plan.stages {
            let t0 = Instant::now();
            progress.stage(stage.name.as_str(), stage.ops.len() as u64);
            if let Err((i, cause)) = self.run_stage(&stage.ops, progress) {
                let (rolled_back, rollback_failures) = self.rollback();
                return Err(ExecError {
                    stage: stage.name,
                    op: stage.ops[i].to_string(),
                    cause,
                    rolled_back,
                    rollback_failures,
                });
            }
            timings
                .stages_ms
                .push((stage.name.as_str().to_string(), t0.elapsed().as_secs_f64() * 1e3));
        }
        Ok(timings)
    }

    fn run_stage(&mut self, ops: &[Op], progress: &dyn Progress) -> Result<(), Failed> {
        let mut i = 0;
        while i < ops.len() {
            let k = kind(&ops[i]);
            let n = ops[i..].iter().take_while(|o| kind(o) == k).count();
            let run = &ops[i..i + n];
            let at = |(j, e): Failed| (i + j, e);
            match k {
                Kind::NewNamespace => self.create_namespaces(run, progress).map_err(at)?,
                Kind::Netlink => self.netlink(run, progress).map_err(at)?,
                Kind::Tc => self.tc(run, progress).map_err(at)?,
                Kind::One => {
                    for (j, op) in run.iter().enumerate() {
                        self.one(op).map_err(|e| failed(i + j, e))?;
                        progress.advance(1);
                    }
                }
            }
            i += n;
        }
        Ok(())
    }

    /// Creates namespaces on worker threads, each setting its sysctls from inside. After a failure
    /// no more are started; every one that was made is kept (and undone on rollback).
    fn create_namespaces(&mut self, ops: &[Op], progress: &dyn Progress) -> Result<(), Failed> {
        type Made<N> = (
            Option<(<N as Namespaces>::Netns, <N as Namespaces>::Socket)>,
            Option<LabError>,
        );
        let next = AtomicUsize::new(0);
        let stop = AtomicBool::new(false);
        let out: Mutex<Vec<Option<Made<N>>>> = Mutex::new((0..ops.len()).map(|_| None).collect());
        let (spaces, sysctls) = (self.host.namespaces, self.host.sysctls);
        std::thread::scope(|sc| {
            for _ in 0..self.workers.min(ops.len()) {
                sc.spawn(|| {
                    while !stop.load(Ordering::Relaxed) {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(op) = ops.get(i) else { break };
                        let Op::CreateNamespace { name, sysctls: keys } = op else {
                            unreachable!("a run of namespace creations")
                        };
                        let made: Made<N> = match spaces.create(name, || set_sysctls(sysctls, keys)) {
                            Ok((ns, sock, Ok(()))) => (Some((ns, sock)), None),
                            Ok((ns, sock, Err(e))) => (Some((ns, sock)), Some(e.into())),
                            Err(e) => (None, Some(e.into())),
                        };
                        if made.1.is_some() {
                            stop.store(true, Ordering::Relaxed);
                        }
                        out.lock().unwrap_or_else(|p| p.into_inner())[i] = Some(made);
                        progress.advance(1);
                    }
                });
            }
        });
        let mut first = None;
        let results = out.into_inner().unwrap_or_else(|p| p.into_inner());
        for (i, (op, made)) in ops.iter().zip(results).enumerate() {
            let (Op::CreateNamespace { name, .. }, Some((handles, err))) = (op, made) else {
                continue;
            };
            if let Some(h) = handles {
                self.open.insert(name.clone(), h);
                self.made.push(Op::DeleteNamespace { name: name.clone() });
            }
            if let Some(e) = err {
                first.get_or_insert(failed(i, e));
            }
        }
        first.map_or(Ok(()), Err)
    }

    /// Opens namespace `name` unless this executor has it already.
    fn attach(&mut self, name: &str) -> Result<(), LabError> {
        if !self.open.contains_key(name) {
            let h = self.host.namespaces.open(name)?;
            self.open.insert(name.to_string(), h);
        }
        Ok(())
    }

    /// Netlink ops, grouped by socket (veths on the host's), pipelined per socket.
    fn netlink(&mut self, ops: &[Op], progress: &dyn Progress) -> Result<(), Failed> {
        for (i, op) in ops.iter().enumerate() {
            let names: Vec<&str> = match op {
                Op::AddVeth { a, b, .. } => vec![&a.netns, &b.netns],
                Op::DeleteLink { netns, .. }
                | Op::SetLinkUp { netns, .. }
                | Op::SetMtu { netns, .. }
                | Op::AddAddress { netns, .. }
                | Op::ReplaceRoute { netns, .. }
                | Op::DeleteRoute { netns, .. } => vec![netns],
                _ => Vec::new(),
            };
            for n in names {
                self.attach(n).map_err(|e| failed(i, e))?;
            }
        }
        // One group per socket, in order of first use; `None` is the host's.
        let mut groups: Vec<SocketGroup<'_>> = Vec::new();
        let mut slot: HashMap<Option<&str>, usize> = HashMap::new();
        for (i, op) in ops.iter().enumerate() {
            let sock = match op {
                Op::AddVeth { .. } => None,
                Op::DeleteLink { netns, .. }
                | Op::SetLinkUp { netns, .. }
                | Op::SetMtu { netns, .. }
                | Op::AddAddress { netns, .. }
                | Op::ReplaceRoute { netns, .. }
                | Op::DeleteRoute { netns, .. } => Some(netns.as_str()),
                _ => unreachable!("a run of netlink ops"),
            };
            let g = *slot.entry(sock).or_insert_with(|| {
                groups.push((sock, Vec::new()));
                groups.len() - 1
            });
            groups[g].1.push((i, op));
        }
        let open = &self.open;
        let host = self.host.namespaces.host();
        let per_socket = groups.iter().map(|(sock, items)| {
            let sock = match sock {
                None => host,
                Some(n) => &open[*n].1,
            };
            stream::iter(items.iter())
                .map(move |&(i, op)| async move {
                    netlink_op::<N>(sock, open, op).await.map_err(|e| failed(i, e))?;
                    progress.advance(1);
                    Ok::<(), Failed>(())
                })
                .buffer_unordered(IN_FLIGHT)
                .try_collect::<()>()
        });
        futures::executor::block_on(futures::future::try_join_all(per_socket)).map(|_| ())
    }

    /// tc ops become one batch per namespace (namespaces in order of first use, lines in op
    /// order).
    fn tc(&mut self, ops: &[Op], progress: &dyn Progress) -> Result<(), Failed> {
        let mut batches: Vec<(&str, Vec<String>, Vec<usize>)> = Vec::new();
        for (i, op) in ops.iter().enumerate() {
            let (netns, lines) = match op {
                Op::SetRate {
                    netns,
                    dev,
                    rate_bps,
                    mtu,
                } => (netns, tc::rate(dev, Some(*rate_bps), *mtu)),
                Op::RemoveRate { netns, dev } => (netns, tc::rate(dev, None, 0)),
                Op::Splice { netns, dev, via } => (netns, tc::redirect_through(dev, via)),
                Op::Unsplice { netns, dev, via } => (netns, tc::unredirect(dev, via)),
                _ => unreachable!("a run of tc ops"),
            };
            match batches.iter_mut().find(|(n, ..)| n == netns) {
                Some((_, l, idx)) => {
                    l.extend(lines);
                    idx.push(i);
                }
                None => batches.push((netns, lines, vec![i])),
            }
        }
        for (netns, lines, idx) in batches {
            self.host.tc.batch(netns, &lines).map_err(|e| failed(idx[0], e))?;
            progress.advance(idx.len() as u64);
        }
        Ok(())
    }

    /// An op run on its own.
    fn one(&mut self, op: &Op) -> Result<(), LabError> {
        let h = &self.host;
        match op {
            Op::CreateCgroup { path, cpus, memory } => {
                // A create that fails half way may leave directories: undo it either way.
                self.made.push(Op::DestroyCgroup { path: path.clone() });
                h.cgroups.create(
                    path,
                    &Limits {
                        cpus: *cpus,
                        memory: *memory,
                    },
                )?;
            }
            Op::DestroyCgroup { path } => h.cgroups.destroy(path)?,
            Op::DeleteNamespace { name } => {
                // Our socket and handle would keep it alive.
                self.open.remove(name);
                h.namespaces.delete(name)?;
            }
            Op::StartRelay(r) => {
                let pid = h.relays.start(r)?;
                self.relay_pids.insert(r.link, pid);
                self.made.push(Op::StopRelay { link: r.link });
            }
            Op::StopRelay { link } => {
                if let Some(pid) = self.relay_pids.remove(link) {
                    h.relays.stop(*link, pid);
                }
            }
            Op::TxChecksumOff { netns, dev } => h.offloads.set_tx_checksum(netns, dev, false)?,
            Op::UnrelayableGsoOff { netns, dev } => h.offloads.set_unrelayable_gso(netns, dev, false)?,
            _ => unreachable!("{op} is not run on its own"),
        }
        Ok(())
    }

    /// Undoes what this executor made, newest first; a cgroup inside one that is destroyed too
    /// goes with it.
    fn rollback(&mut self) -> (Vec<Op>, Vec<String>) {
        let undo: Vec<Op> = self.made.drain(..).rev().collect();
        let whole: Vec<String> = undo
            .iter()
            .filter_map(|o| match o {
                Op::DestroyCgroup { path } => Some(format!("{path}/")),
                _ => None,
            })
            .collect();
        let undo: Vec<Op> = undo
            .into_iter()
            .filter(|o| !matches!(o, Op::DestroyCgroup { path } if whole.iter().any(|w| path.starts_with(w))))
            .collect();
        let mut failures = Vec::new();
        for op in &undo {
            if let Err(e) = self.one(op) {
                failures.push(format!("{op}: {e}"));
            }
        }
        (undo, failures)
    }
}

/// Sets a new namespace's sysctls from its creating thread; keys this kernel lacks (IPv6 ones
/// when IPv6 is off) are skipped.
fn set_sysctls(sysctls: &dyn Sysctls, keys: &BTreeMap<String, String>) -> Result<(), SysctlError> {
    for (k, v) in keys {
        match sysctls.set(k, v) {
            Err(e) if !e.is_missing() => return Err(e),
            _ => {}
        }
    }
    Ok(())
}

async fn netlink_op<N: Namespaces>(
    sock: &N::Socket,
    open: &HashMap<String, (N::Netns, N::Socket)>,
    op: &Op,
) -> Result<(), NetlinkError> {
    match op {
        Op::AddVeth { a, b, mtu } => {
            fn side<'a, T>(open: &'a HashMap<String, (T, impl Sized)>, e: &'a VethEnd) -> VethSide<'a, T> {
                VethSide {
                    netns: &open[&e.netns].0,
                    name: &e.name,
                    index: e.index,
                    mac: e.mac,
                }
            }
            sock.add_veth(side(open, a), side(open, b), *mtu).await
        }
        Op::DeleteLink { index, .. } => Links::delete(sock, *index).await,
        Op::SetLinkUp { index, up, .. } => sock.set_up(*index, *up).await,
        Op::SetMtu { index, mtu, .. } => sock.set_mtu(*index, *mtu).await,
        Op::AddAddress {
            index,
            addr,
            prefix_len,
            ..
        } => sock.add(*index, *addr, *prefix_len).await,
        Op::ReplaceRoute {
            dst,
            prefix_len,
            gateway,
            oif,
            src,
            ..
        } => {
            sock.replace(&RouteSpec {
                dst: *dst,
                prefix_len: *prefix_len,
                gateway: *gateway,
                oif: *oif,
                src: Some(*src),
            })
            .await
        }
        Op::DeleteRoute { dst, prefix_len, .. } => Routes::delete(sock, *dst, *prefix_len).await,
        _ => unreachable!("{op} is not a netlink op"),
    }
}
