//! A [`DomainBackend`] that touches nothing: it records every call, simulates the state machine
//! of a domain (with the real backend's errors for calls in the wrong state) and lets a test make
//! a process exit, set usage figures, or make the next call fail.
//!
//! ```text
//!  Absent ─create─▶ Exited{None} ─start / start_parked─▶ Running ◀─resume── Paused
//!    ▲                     ▲                                │ └─────pause─────▶ │
//!    └── destroy (any)     └────────── stop / exit() ───────┴───────────────────┘
//! ```
//!
//! A domain started with `start_parked` is "parked" until `run_parked` gives it its command
//! (same pid); `run_parked` on anything else fails with [`DomainError::NotParked`].
//!
//! Domains are keyed by `netns_name` (unique on a host); the test helpers accept that or the
//! domain's `name`.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use super::{ContainerSpec, DomainBackend, DomainError, Status, Usage};

/// The operations of [`DomainBackend`] that can be made to fail.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Op {
    Create,
    Start,
    StartParked,
    RunParked,
    Pause,
    Resume,
    Stop,
    Destroy,
}

/// One recorded call, with the domain's name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Call {
    Create(String),
    Start(String),
    StartParked(String),
    /// The domain's name and the command it was given.
    RunParked(String, Vec<String>),
    Pause(String),
    Resume(String),
    Stop(String, Duration),
    Destroy(String),
}

#[derive(Clone, Debug)]
struct FakeDomain {
    name: String,
    status: Status,
    usage: Usage,
    /// Started parked and not yet given a command.
    parked: bool,
}

#[derive(Debug, Default)]
struct State {
    calls: Vec<Call>,
    domains: HashMap<String, FakeDomain>,
    next_pid: i32,
    failures: Vec<(Op, String, String)>,
}

/// The recording fake. Pids start at 1000 and grow by one per start.
#[derive(Debug, Default)]
pub struct FakeBackend {
    state: Mutex<State>,
}

/// Exit code of a process stopped by SIGTERM (128 + 15), as the real backend reports it.
pub const SIGTERM_EXIT: i32 = 143;

impl FakeBackend {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Every call so far, in order.
    pub fn calls(&self) -> Vec<Call> {
        self.lock().calls.clone()
    }

    /// Returns the calls so far and forgets them.
    pub fn take_calls(&self) -> Vec<Call> {
        std::mem::take(&mut self.lock().calls)
    }

    /// The next `op` on domain `name` (name or netns_name) fails with `message`, changing nothing.
    pub fn fail_next(&self, op: Op, name: &str, message: &str) {
        self.lock().failures.push((op, name.to_owned(), message.to_owned()));
    }

    /// Simulates the domain's processes exiting with `code` (a crash, or a command that ended).
    /// Returns false when no such domain runs.
    pub fn exit(&self, name: &str, code: Option<i32>) -> bool {
        let mut st = self.lock();
        let mut hit = false;
        for d in st
            .domains
            .iter_mut()
            .filter(|(k, d)| *k == name || d.name == name)
            .map(|(_, d)| d)
        {
            if matches!(d.status, Status::Running { .. } | Status::Paused { .. }) {
                d.status = Status::Exited { code };
                d.parked = false;
                hit = true;
            }
        }
        hit
    }

    /// Sets what `usage` reports for the domain.
    pub fn set_usage(&self, name: &str, usage: Usage) {
        let mut st = self.lock();
        for (_, d) in st.domains.iter_mut().filter(|(k, d)| *k == name || d.name == name) {
            d.usage = usage;
        }
    }

    /// Names (`netns_name`) of the domains that exist, sorted.
    pub fn domains(&self) -> Vec<String> {
        let mut v: Vec<String> = self.lock().domains.keys().cloned().collect();
        v.sort();
        v
    }

    /// Records the call, then consumes an injected failure for it if there is one.
    fn begin(&self, st: &mut State, call: Call, op: Op, spec: &ContainerSpec) -> Result<(), DomainError> {
        st.calls.push(call);
        let pos = st
            .failures
            .iter()
            .position(|(o, n, _)| *o == op && (*n == spec.name || *n == spec.netns_name));
        match pos {
            Some(i) => {
                let (_, _, message) = st.failures.remove(i);
                Err(DomainError::Injected {
                    name: spec.name.clone(),
                    message,
                })
            }
            None => Ok(()),
        }
    }
}

fn not_created(spec: &ContainerSpec) -> DomainError {
    DomainError::NotCreated {
        name: spec.name.clone(),
        path: spec.cgroup_root.join(&spec.cgroup),
    }
}

/// `start` and `start_parked` of the fake.
fn launch(st: &mut State, spec: &ContainerSpec, parked: bool) -> Result<i32, DomainError> {
    spec.validate()?;
    let pid = 1000 + st.next_pid;
    let d = st.domains.get_mut(&spec.netns_name).ok_or_else(|| not_created(spec))?;
    if let Status::Running { pid } | Status::Paused { pid } = d.status {
        return Err(DomainError::AlreadyRunning {
            name: spec.name.clone(),
            pid,
        });
    }
    d.status = Status::Running { pid };
    d.parked = parked;
    st.next_pid += 1;
    Ok(pid)
}

impl DomainBackend for FakeBackend {
    fn create(&self, spec: &ContainerSpec) -> Result<(), DomainError> {
        let mut st = self.lock();
        self.begin(&mut st, Call::Create(spec.name.clone()), Op::Create, spec)?;
        spec.validate()?;
        if st.domains.contains_key(&spec.netns_name) {
            return Err(DomainError::Exists {
                name: spec.name.clone(),
                what: "network namespace",
                path: spec.netns_path(),
            });
        }
        st.domains.insert(
            spec.netns_name.clone(),
            FakeDomain {
                name: spec.name.clone(),
                status: Status::Exited { code: None },
                usage: Usage::default(),
                parked: false,
            },
        );
        Ok(())
    }

    fn start(&self, spec: &ContainerSpec) -> Result<i32, DomainError> {
        let mut st = self.lock();
        self.begin(&mut st, Call::Start(spec.name.clone()), Op::Start, spec)?;
        if spec.argv.is_empty() {
            return Err(DomainError::InvalidSpec {
                name: spec.name.clone(),
                reason: "argv must name a command to start".into(),
            });
        }
        launch(&mut st, spec, false)
    }

    fn start_parked(&self, spec: &ContainerSpec) -> Result<i32, DomainError> {
        let mut st = self.lock();
        self.begin(&mut st, Call::StartParked(spec.name.clone()), Op::StartParked, spec)?;
        launch(&mut st, spec, true)
    }

    fn run_parked(&self, spec: &ContainerSpec) -> Result<i32, DomainError> {
        let mut st = self.lock();
        let call = Call::RunParked(spec.name.clone(), spec.argv.clone());
        self.begin(&mut st, call, Op::RunParked, spec)?;
        spec.validate()?;
        if spec.argv.is_empty() {
            return Err(DomainError::InvalidSpec {
                name: spec.name.clone(),
                reason: "argv must name the command to give the parked domain".into(),
            });
        }
        let d = st.domains.get_mut(&spec.netns_name).ok_or_else(|| not_created(spec))?;
        match d.status {
            Status::Running { pid } | Status::Paused { pid } if d.parked => {
                d.status = Status::Running { pid };
                d.parked = false;
                Ok(pid)
            }
            _ => Err(DomainError::NotParked {
                name: spec.name.clone(),
                reason: "its init is not parked".into(),
            }),
        }
    }

    fn pause(&self, spec: &ContainerSpec) -> Result<(), DomainError> {
        let mut st = self.lock();
        self.begin(&mut st, Call::Pause(spec.name.clone()), Op::Pause, spec)?;
        let d = st.domains.get_mut(&spec.netns_name).ok_or_else(|| not_created(spec))?;
        match d.status {
            Status::Running { pid } | Status::Paused { pid } => {
                d.status = Status::Paused { pid };
                Ok(())
            }
            _ => Err(DomainError::NotRunning {
                name: spec.name.clone(),
                action: "pause",
            }),
        }
    }

    fn resume(&self, spec: &ContainerSpec) -> Result<(), DomainError> {
        let mut st = self.lock();
        self.begin(&mut st, Call::Resume(spec.name.clone()), Op::Resume, spec)?;
        let d = st.domains.get_mut(&spec.netns_name).ok_or_else(|| not_created(spec))?;
        if let Status::Paused { pid } = d.status {
            d.status = Status::Running { pid };
        }
        Ok(())
    }

    fn stop(&self, spec: &ContainerSpec, grace: Duration) -> Result<(), DomainError> {
        let mut st = self.lock();
        self.begin(&mut st, Call::Stop(spec.name.clone(), grace), Op::Stop, spec)?;
        if let Some(d) = st.domains.get_mut(&spec.netns_name)
            && matches!(d.status, Status::Running { .. } | Status::Paused { .. })
        {
            d.status = Status::Exited {
                code: Some(SIGTERM_EXIT),
            };
            d.parked = false;
        }
        Ok(())
    }

    fn destroy(&self, spec: &ContainerSpec) -> Result<(), DomainError> {
        let mut st = self.lock();
        self.begin(&mut st, Call::Destroy(spec.name.clone()), Op::Destroy, spec)?;
        st.domains.remove(&spec.netns_name);
        Ok(())
    }

    fn status(&self, spec: &ContainerSpec) -> Status {
        self.lock()
            .domains
            .get(&spec.netns_name)
            .map_or(Status::Absent, |d| d.status)
    }

    fn usage(&self, spec: &ContainerSpec) -> Option<Usage> {
        self.lock().domains.get(&spec.netns_name).map(|d| d.usage)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::tests::spec;

    #[test]
    fn lifecycle_is_recorded_and_simulated() {
        let f = FakeBackend::new();
        let s = spec();
        assert_eq!(f.status(&s), Status::Absent);
        f.create(&s).unwrap();
        assert_eq!(f.status(&s), Status::Exited { code: None }, "created, never started");
        let pid = f.start(&s).unwrap();
        assert_eq!(f.status(&s), Status::Running { pid });
        f.pause(&s).unwrap();
        assert_eq!(f.status(&s), Status::Paused { pid });
        f.resume(&s).unwrap();
        assert_eq!(f.status(&s), Status::Running { pid });
        f.stop(&s, Duration::from_secs(1)).unwrap();
        assert_eq!(f.status(&s), Status::Exited { code: Some(143) });
        let pid2 = f.start(&s).unwrap();
        assert_ne!(pid, pid2, "a restart gets a new pid");
        f.destroy(&s).unwrap();
        f.destroy(&s).unwrap();
        assert_eq!(f.status(&s), Status::Absent);
        let n = s.name.clone();
        assert_eq!(
            f.calls(),
            vec![
                Call::Create(n.clone()),
                Call::Start(n.clone()),
                Call::Pause(n.clone()),
                Call::Resume(n.clone()),
                Call::Stop(n.clone(), Duration::from_secs(1)),
                Call::Start(n.clone()),
                Call::Destroy(n.clone()),
                Call::Destroy(n),
            ]
        );
    }

    #[test]
    fn a_parked_domain_takes_its_command_once() {
        let f = FakeBackend::new();
        let mut s = spec();
        s.argv.clear();
        f.create(&s).unwrap();
        let pid = f.start_parked(&s).unwrap();
        f.pause(&s).unwrap();
        assert!(
            matches!(f.run_parked(&s), Err(DomainError::InvalidSpec { .. })),
            "a command is needed"
        );
        s.argv = vec!["kamailio".into()];
        assert_eq!(f.run_parked(&s).unwrap(), pid, "the parked init becomes the service");
        assert_eq!(f.status(&s), Status::Running { pid });
        assert!(
            matches!(f.run_parked(&s), Err(DomainError::NotParked { .. })),
            "only once"
        );
        assert!(
            f.calls()
                .contains(&Call::RunParked(s.name.clone(), vec!["kamailio".into()]))
        );
        let mut plain = spec();
        plain.netns_name = "other".into();
        f.create(&plain).unwrap();
        f.start(&plain).unwrap();
        assert!(matches!(f.run_parked(&plain), Err(DomainError::NotParked { .. })));
    }

    #[test]
    fn wrong_state_calls_fail_like_the_real_backend() {
        let f = FakeBackend::new();
        let s = spec();
        assert!(matches!(f.start(&s), Err(DomainError::NotCreated { .. })));
        f.create(&s).unwrap();
        assert!(matches!(f.create(&s), Err(DomainError::Exists { .. })));
        assert!(matches!(f.pause(&s), Err(DomainError::NotRunning { .. })));
        let pid = f.start(&s).unwrap();
        assert!(matches!(f.start(&s), Err(DomainError::AlreadyRunning { pid: p, .. }) if p == pid));
        let mut bad = spec();
        bad.name = "Bad Name".into();
        bad.netns_name = "other".into();
        assert!(matches!(f.create(&bad), Err(DomainError::InvalidSpec { .. })));
    }

    #[test]
    fn injected_failures_exits_and_usage() {
        let f = FakeBackend::new();
        let s = spec();
        f.fail_next(Op::Create, "pabx-1", "no memory left");
        let err = f.create(&s).unwrap_err().to_string();
        assert!(err.contains("no memory left") && err.contains("pabx-1"), "{err}");
        assert_eq!(f.status(&s), Status::Absent, "a failed call changes nothing");
        f.create(&s).unwrap();
        f.start(&s).unwrap();
        assert!(f.exit("pabx-1", Some(1)));
        assert_eq!(f.status(&s), Status::Exited { code: Some(1) });
        let u = Usage {
            cpu_ns: 5,
            memory_bytes: 7,
        };
        f.set_usage(&s.netns_name, u);
        assert_eq!(f.usage(&s), Some(u));
        assert_eq!(f.domains(), vec![s.netns_name.clone()]);
    }
}
