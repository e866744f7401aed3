//! The domains component: one OS thread owns [`Domains`] (every backend call blocks: namespaces,
//! cgroups, process spawning), takes requests over a channel, supervises, schedules health probes
//! (each run on a short-lived thread of its own, its outcome sent back as a message) and publishes
//! a [`DomainsSnapshot`] on a watch channel after every change.
//!
//! ```text
//!  DomainsHandle (admin, controller) ──Request + oneshot──▶ ┌────────────────────────┐
//!  probe threads ──────────────────────Probed──────────────▶ │ domains thread: Domains │──▶ watch<DomainsSnapshot>
//!  wakes every 100 ms while an instance is starting, else 1 s: supervise, due probes ─▶ probe threads
//! ```

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, channel};
use std::time::{Duration, Instant};

use tokio::sync::{oneshot, watch};
use tracing::warn;
use wuos_model::lifecycle::STARTING_PROBE_MS;

use super::probe::Probe;
use super::{DomainView, Domains, DomainsError, DomainsReport, DomainsSnapshot};

/// How often running domains are checked (exits, CPU and memory readings).
pub const SUPERVISE_EVERY: Duration = Duration::from_secs(1);

/// What an operator can do to a domain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verb {
    Pause,
    Resume,
    Stop,
    Destroy,
}

type Reply<T> = oneshot::Sender<Result<T, DomainsError>>;

enum Msg {
    Start {
        service: String,
        name: String,
        params: BTreeMap<String, String>,
        reply: Reply<DomainView>,
    },
    Verb {
        verb: Verb,
        name: String,
        reply: Reply<DomainView>,
    },
    Ensure {
        service: String,
        present: bool,
        reply: Reply<()>,
    },
    Report {
        reply: Reply<DomainsReport>,
    },
    Probed {
        probe: Probe,
        outcome: Result<(), String>,
    },
    Shutdown,
}

/// The door into the domains thread; cheap to clone.
#[derive(Clone, Debug)]
pub struct DomainsHandle {
    tx: Sender<Msg>,
    snapshot: watch::Receiver<Arc<DomainsSnapshot>>,
}

impl DomainsHandle {
    async fn ask<T>(&self, make: impl FnOnce(Reply<T>) -> Msg) -> Result<T, DomainsError> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(make(reply)).map_err(|_| DomainsError::Gone)?;
        rx.await.map_err(|_| DomainsError::Gone)?
    }

    /// Starts an instance of catalog service `service` (`name` empty: `SERVICE-N`). The caller
    /// has its answer before the idle pool is refilled.
    pub async fn start_service(
        &self,
        service: &str,
        name: &str,
        params: BTreeMap<String, String>,
    ) -> Result<DomainView, DomainsError> {
        let (service, name) = (service.to_string(), name.to_string());
        self.ask(|reply| Msg::Start {
            service,
            name,
            params,
            reply,
        })
        .await
    }

    pub async fn apply(&self, verb: Verb, name: &str) -> Result<DomainView, DomainsError> {
        let name = name.to_string();
        self.ask(|reply| Msg::Verb { verb, name, reply }).await
    }

    /// Starts (or keeps) the instance of `service`, or removes it.
    pub async fn ensure(&self, service: &str, present: bool) -> Result<(), DomainsError> {
        let service = service.to_string();
        self.ask(|reply| Msg::Ensure {
            service,
            present,
            reply,
        })
        .await
    }

    /// Every domain, with its usage read now.
    pub async fn report(&self) -> Result<DomainsReport, DomainsError> {
        self.ask(|reply| Msg::Report { reply }).await
    }

    /// The latest snapshot.
    pub fn snapshot(&self) -> Arc<DomainsSnapshot> {
        self.snapshot.borrow().clone()
    }

    /// A receiver that wakes at every new snapshot.
    pub fn watch(&self) -> watch::Receiver<Arc<DomainsSnapshot>> {
        self.snapshot.clone()
    }

    /// Asks the thread to stop (domains keep running); returns at once.
    pub fn shutdown(&self) {
        let _ = self.tx.send(Msg::Shutdown);
    }
}

/// How probes are run: [`super::probe::run`] in the daemon; tests pass their own.
pub type ProbeRunner = fn(&Probe) -> Result<(), String>;

/// Starts the thread; `origin` is the daemon's monotonic clock (its `now_ms` is milliseconds
/// since then).
pub fn spawn(
    mut domains: Domains,
    origin: Instant,
    run_probe: ProbeRunner,
) -> std::io::Result<(DomainsHandle, std::thread::JoinHandle<()>)> {
    let (tx, rx) = channel();
    let (publish, snapshot) = watch::channel(Arc::new(domains.snapshot()));
    let handle = DomainsHandle {
        tx: tx.clone(),
        snapshot,
    };
    let join = std::thread::Builder::new().name("domains".into()).spawn(move || {
        domains.fill_pool();
        run(domains, origin, run_probe, tx, rx, publish);
    })?;
    Ok((handle, join))
}

fn run(
    mut d: Domains,
    origin: Instant,
    run_probe: ProbeRunner,
    tx: Sender<Msg>,
    rx: Receiver<Msg>,
    publish: watch::Sender<Arc<DomainsSnapshot>>,
) {
    let now_ms = || origin.elapsed().as_millis() as u64;
    let mut last_supervise = Instant::now();
    let mut in_flight: HashSet<String> = HashSet::new();
    let mut dirty = true;
    loop {
        let fast = d.snapshot_has_starting();
        let wait = if fast {
            Duration::from_millis(STARTING_PROBE_MS)
        } else {
            SUPERVISE_EVERY.saturating_sub(last_supervise.elapsed())
        };
        match rx.recv_timeout(wait) {
            Ok(Msg::Shutdown) | Err(RecvTimeoutError::Disconnected) => return,
            Ok(Msg::Start {
                service,
                name,
                params,
                reply,
            }) => {
                let r = d.start_service(&service, &name, &params);
                let _ = reply.send(r);
                // Off the caller's path: it has its answer.
                d.persist_deferred();
                d.fill_pool();
                dirty = true;
            }
            Ok(Msg::Ensure {
                service,
                present,
                reply,
            }) => {
                let _ = reply.send(d.ensure(&service, present));
                d.persist_deferred();
                d.fill_pool();
                dirty = true;
            }
            Ok(Msg::Verb { verb, name, reply }) => {
                let r = match verb {
                    Verb::Pause => d.pause(&name),
                    Verb::Resume => d.resume(&name),
                    Verb::Stop => d.stop(&name),
                    Verb::Destroy => d.destroy(&name),
                };
                let _ = reply.send(r);
                dirty = true;
            }
            Ok(Msg::Report { reply }) => {
                let _ = reply.send(Ok(d.report()));
            }
            Ok(Msg::Probed { probe, outcome }) => {
                in_flight.remove(&probe.domain);
                d.record_probe(&probe.domain, probe.pid, now_ms(), outcome);
                dirty = true;
            }
            Err(RecvTimeoutError::Timeout) => {}
        }
        if last_supervise.elapsed() >= SUPERVISE_EVERY {
            d.supervise();
            last_supervise = Instant::now();
            dirty = true;
        }
        for probe in d.due_probes(now_ms()) {
            if !in_flight.insert(probe.domain.clone()) {
                continue;
            }
            let tx = tx.clone();
            let spawned = std::thread::Builder::new().name("probe".into()).spawn(move || {
                let outcome = run_probe(&probe);
                let _ = tx.send(Msg::Probed { probe, outcome });
            });
            if let Err(e) = spawned {
                warn!(error = %e, "cannot start a probe thread");
            }
        }
        if dirty {
            let s = d.snapshot();
            publish.send_if_modified(|cur| {
                if **cur == s {
                    false
                } else {
                    *cur = Arc::new(s);
                    true
                }
            });
            dirty = false;
        }
    }
}

impl Domains {
    /// Whether an instance is starting (probed every 100 ms until it passes).
    fn snapshot_has_starting(&self) -> bool {
        self.entries.values().any(|e| {
            e.record
                .health()
                .is_some_and(|h| h.health == wuos_model::lifecycle::Health::Starting)
        })
    }
}
