//! Watching the routers' kernels: a netlink socket opened inside each router's namespace, and a
//! poller that asks each kernel which FIB entry the VIP matches (`ip route get fibmatch`), over and
//! over, recording every change with its wall-clock time.
//!
//! ```text
//!  poller thread ── every ~1 ms: fib_match(VIP) in edge1, fog, edge2, dc ──▶ changes (t, entry)
//!  bench thread  ── reads the latest entries until each is the new route ──▶ stop
//! ```

use std::net::Ipv4Addr;
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use wuos_southbound::netlink::Netlink;
use wuos_southbound::netns;
use wuos_southbound::routes::{FibEntry, NextHop, Routes};

use crate::stats::Summary;
use crate::voip::unix_ns;

/// The pause between two rounds of lookups.
const PAUSE: Duration = Duration::from_millis(1);

/// Netlink sockets in routers' namespaces.
pub struct Fibs {
    rt: tokio::runtime::Runtime,
    routers: Vec<(String, Netlink)>,
}

/// What the poller saw: per router, its entries as they changed (the first one included).
#[derive(Clone, Debug, Default)]
pub struct Seen {
    pub changes: Vec<Vec<(i64, Option<FibEntry>)>>,
    /// Times between two rounds of lookups (ms): the resolution of the times recorded.
    pub round_ms: Vec<f64>,
}

impl Seen {
    /// The latest entry of router `i`.
    pub fn latest(&self, i: usize) -> Option<FibEntry> {
        self.changes.get(i)?.last()?.1
    }

    pub fn round(&self) -> Option<Summary> {
        Summary::of(&self.round_ms)
    }
}

impl Fibs {
    /// Opens a netlink socket in each of `routers`' namespaces (`netns_dir/NAME_OF(router)`).
    pub fn open(netns_dir: &Path, routers: &[(String, String)]) -> Result<Self> {
        // The connections' tasks run on the runtime's worker, so any thread can ask.
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()?;
        let mut out = Vec::new();
        for (router, ns_name) in routers {
            let ns = netns::open(netns_dir, ns_name)?;
            let handle = rt.handle().clone();
            let nl = netns::run_in(&ns, || Netlink::connect_here(&handle))?
                .with_context(|| format!("a netlink socket in {ns_name}"))?;
            out.push((router.clone(), nl));
        }
        Ok(Self { rt, routers: out })
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.routers.iter().map(|(n, _)| n.as_str())
    }

    pub fn index(&self, router: &str) -> Option<usize> {
        self.routers.iter().position(|(n, _)| n == router)
    }

    /// The next hop router `i`'s kernel uses towards `dst`.
    pub fn next_hop(&self, i: usize, dst: Ipv4Addr) -> Result<Option<NextHop>> {
        let (name, nl) = &self.routers[i];
        self.rt
            .block_on(nl.next_hop(dst))
            .with_context(|| format!("route lookup in {name}"))
    }

    /// Polls every router's entry for `vip` until `stop`, recording changes into `seen`.
    pub fn watch(&self, vip: Ipv4Addr, stop: &AtomicBool, seen: &Mutex<Seen>) -> Result<()> {
        lock(seen).changes = vec![Vec::new(); self.routers.len()];
        let mut last_round: Option<Instant> = None;
        while !stop.load(Ordering::Relaxed) {
            let now = Instant::now();
            if let Some(l) = last_round {
                lock(seen).round_ms.push((now - l).as_secs_f64() * 1e3);
            }
            last_round = Some(now);
            for (i, (name, nl)) in self.routers.iter().enumerate() {
                let entry = self
                    .rt
                    .block_on(nl.fib_match(vip))
                    .with_context(|| format!("fib lookup in {name}"))?;
                let t = unix_ns();
                let mut s = lock(seen);
                let c = &mut s.changes[i];
                if c.last().is_none_or(|(_, e)| *e != entry) {
                    c.push((t, entry));
                }
            }
            std::thread::sleep(PAUSE);
        }
        Ok(())
    }
}

/// The poller's record; a panic while holding it has failed the bench already.
pub fn lock(seen: &Mutex<Seen>) -> std::sync::MutexGuard<'_, Seen> {
    seen.lock().unwrap_or_else(|p| p.into_inner())
}
