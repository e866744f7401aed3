//! The lifecycle of a domain: one synchronous state machine, used by the daemon that runs it.
//!
//! [`DomainRecord::handle`] takes an [`Event`] (an operator's request, or a report of the
//! daemon's watchers), moves the [`State`] and returns the side effects to execute as data
//! ([`Action`]s). Restart policy, typed failure reasons ([`Failure`]), re-adoption after a daemon
//! restart ([`DomainRecord::readopt`]) and the **health gate** live here:
//!
//! - a running domain whose service has a probe is [`Health::Starting`] until a probe passes,
//!   then [`Health::Healthy`]; `retries` failed probes make it [`Health::Unhealthy`] and raise
//!   [`Event::HealthFailed`] (the restart policy decides); a service without a probe is
//!   [`Health::Unprobed`];
//! - [`DomainRecord::is_ready`] — what a controller waits for before it acknowledges a new
//!   instance — is true only for a running domain that is healthy or has no probe;
//! - health exists only while the domain runs: every (re)start or resume begins again at
//!   `Starting`, and a domain that stops, fails, is paused or destroyed has none, so nothing can
//!   inherit a verdict.
//!
//! ```text
//!              Start                 Pause
//!   Created ─────────▶ Running ◀───────────▶ Paused
//!      │      ┌──────▶ │  ▲ │      Resume      │
//!      │      │ Start  │  │ └─ Exited / HealthFailed: Restart (policy allows)
//!      │      │        │ Stop, Exited(0)       │ Stop, Exited
//!      │   Stopped ◀───┴───────────────────────┘
//!      │   Failed  ◀── Exited(≠0) / HealthFailed / SpawnFailed, policy exhausted
//!      │      │ Destroy  (also from Running and Paused: Kill first)
//!      └──────┴──────▶ Destroyed
//! ```
//!
//! Time is passed in (`now_ms`, monotonic milliseconds of the caller's clock).

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::domain::{DomainSpec, HealthKind, RestartPolicy};

/// How often a starting domain is probed (besides its interval): a new instance is acknowledged
/// within this much of becoming able to answer.
pub const STARTING_PROBE_MS: u64 = 100;

/// Why a domain is not running although it should be.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Failure {
    /// The main process exited with a non-zero code.
    Exited { code: i32 },
    /// The main process was killed by a signal.
    Killed,
    /// `retries` consecutive health probes failed; the last one's outcome.
    Unhealthy { detail: String },
    /// Its processes were gone when the daemon started again (how they ended is not known).
    GoneWhileDown,
    /// It exited while the daemon was down (the code, when its run directory kept it).
    ExitedWhileDown { code: Option<i32> },
    /// Its command could not be started (or restarted).
    StartFailed { error: String },
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Exited { code } => write!(f, "exited with code {code}"),
            Failure::Killed => f.write_str("was killed by a signal"),
            Failure::Unhealthy { detail } => write!(f, "failed its health check ({detail})"),
            Failure::GoneWhileDown => f.write_str("was gone when wuosd started again"),
            Failure::ExitedWhileDown { code: Some(c) } => write!(f, "exited with code {c} while wuosd was down"),
            Failure::ExitedWhileDown { code: None } => f.write_str("exited while wuosd was down"),
            Failure::StartFailed { error } => write!(f, "could not be started: {error}"),
        }
    }
}

/// Where a domain is in its lifecycle. Serialized as `{"state":"running"}`,
/// `{"state":"failed","reason":{"kind":"exited","code":3},"gave_up_after":2}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "lowercase")]
pub enum State {
    /// Resources set up (cgroup, veth, files), nothing running.
    Created,
    /// The main process runs.
    Running,
    /// Frozen (cgroup freezer).
    Paused,
    /// Not running, after a stop or a clean exit.
    Stopped,
    /// Not running after a failure the restart policy did not cover.
    Failed {
        reason: Failure,
        /// With `on-failure:N`: the restarts made before giving up.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        gave_up_after: Option<u32>,
    },
    /// Resources removed; terminal.
    Destroyed,
}

impl State {
    /// The lowercase name, as in JSON.
    pub fn as_str(&self) -> &'static str {
        match self {
            State::Created => "created",
            State::Running => "running",
            State::Paused => "paused",
            State::Stopped => "stopped",
            State::Failed { .. } => "failed",
            State::Destroyed => "destroyed",
        }
    }

    /// Whether the domain's processes should exist (running or frozen). After a daemon restart
    /// these are the domains to re-adopt.
    pub fn expects_processes(&self) -> bool {
        matches!(self, State::Running | State::Paused)
    }

    /// `it is stopped`, as used in [`LifecycleError`].
    fn describe(&self) -> String {
        match self {
            State::Created => "it has not been started".to_string(),
            State::Failed { .. } => format!("it has {self}"),
            s => format!("it is {}", s.as_str()),
        }
    }

    /// The transition `event` causes under `restart`, given the restarts made since the last
    /// explicit start. An event that makes no sense in this state is an error; late reports
    /// ([`Event::Exited`], [`Event::HealthFailed`]) about a domain that no longer runs are accepted
    /// and change nothing.
    pub fn next(
        &self,
        event: &Event,
        restart: &RestartPolicy,
        restarts_so_far: u32,
    ) -> Result<Transition, LifecycleError> {
        use Action as A;
        use State as S;
        let to = |state: State, actions: &[Action]| {
            Ok(Transition {
                state,
                actions: actions.to_vec(),
            })
        };
        let failed = |reason: Failure, gave_up_after: Option<u32>| S::Failed { reason, gave_up_after };
        match (self, event) {
            (S::Created | S::Stopped | S::Failed { .. }, Event::Start) => to(S::Running, &[A::Spawn]),
            (S::Running, Event::Pause) => to(S::Paused, &[A::Freeze]),
            (S::Paused, Event::Resume) => to(S::Running, &[A::Thaw]),
            (S::Running | S::Paused, Event::Stop) => to(S::Stopped, &[A::Kill]),
            (S::Created | S::Stopped | S::Failed { .. }, Event::Destroy) => to(S::Destroyed, &[A::Remove]),
            (S::Running | S::Paused, Event::Destroy) => to(S::Destroyed, &[A::Kill, A::Remove]),
            (S::Running, Event::Exited { code: Some(0) }) => match restart {
                RestartPolicy::Always => to(S::Running, &[A::Restart]),
                _ => to(S::Stopped, &[A::Kill]),
            },
            (S::Running, Event::Exited { .. } | Event::HealthFailed { .. }) => {
                let reason = event.failure().expect("a failure event");
                match restart {
                    RestartPolicy::Always => to(S::Running, &[A::Restart]),
                    RestartPolicy::OnFailure { max_retries } if restarts_so_far < *max_retries => {
                        to(S::Running, &[A::Restart])
                    }
                    RestartPolicy::OnFailure { max_retries } => to(failed(reason, Some(*max_retries)), &[A::Kill]),
                    RestartPolicy::Never => to(failed(reason, None), &[A::Kill]),
                }
            }
            // A start or restart that could not be carried out: no retry (it would fail again
            // at once); the operator starts it again once the cause is fixed.
            (S::Running, Event::SpawnFailed { .. }) => {
                to(failed(event.failure().expect("a failure"), None), &[A::Kill])
            }
            // Frozen processes can still die (OOM killer, SIGKILL). No restart: a restarted
            // domain would silently be unpaused.
            (S::Paused, Event::Exited { code: Some(0) }) => to(S::Stopped, &[A::Kill]),
            (S::Paused, Event::Exited { .. }) => to(failed(event.failure().expect("a failure"), None), &[A::Kill]),
            // Late reports: a probe that started before the pause, the exit of the process we
            // just killed.
            (S::Paused, Event::HealthFailed { .. })
            | (S::Stopped | S::Failed { .. } | S::Destroyed, Event::Exited { .. } | Event::HealthFailed { .. }) => {
                to(self.clone(), &[])
            }
            _ => Err(LifecycleError {
                domain: None,
                state: self.clone(),
                event: event.clone(),
            }),
        }
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            State::Failed {
                reason,
                gave_up_after: Some(n),
            } => write!(f, "failed ({reason}; gave up after {n} restarts)"),
            State::Failed { reason, .. } => write!(f, "failed ({reason})"),
            s => f.write_str(s.as_str()),
        }
    }
}

/// What happens to a domain: operator requests and reports from the daemon's watchers.
/// Serialized as `{"event":"exited","code":3}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// Run the command.
    Start,
    /// Freeze it.
    Pause,
    /// Thaw it.
    Resume,
    /// Stop it (keep its resources).
    Stop,
    /// Remove it and its resources.
    Destroy,
    /// The main process ended; `None` = killed by a signal.
    Exited { code: Option<i32> },
    /// `retries` consecutive health probes failed; the last one's outcome.
    HealthFailed { detail: String },
    /// A [`Action::Spawn`] or [`Action::Restart`] could not be carried out.
    SpawnFailed { error: String },
}

impl Event {
    /// `pause`, `report the exit of`, ... as in "cannot pause domain x".
    fn verb(&self) -> &'static str {
        match self {
            Event::Start => "start",
            Event::Pause => "pause",
            Event::Resume => "resume",
            Event::Stop => "stop",
            Event::Destroy => "destroy",
            Event::Exited { .. } => "report the exit of",
            Event::HealthFailed { .. } => "report a failed health check for",
            Event::SpawnFailed { .. } => "report a failed start of",
        }
    }

    /// The failure this event reports, if it reports one.
    fn failure(&self) -> Option<Failure> {
        match self {
            Event::Exited { code: Some(0) } => None,
            Event::Exited { code: Some(code) } => Some(Failure::Exited { code: *code }),
            Event::Exited { code: None } => Some(Failure::Killed),
            Event::HealthFailed { detail } => Some(Failure::Unhealthy { detail: detail.clone() }),
            Event::SpawnFailed { error } => Some(Failure::StartFailed { error: error.clone() }),
            _ => None,
        }
    }
}

/// A side effect for the daemon to execute, in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Start the main process (argv, env) in the domain. An explicit start: the restart count
    /// goes back to 0.
    Spawn,
    /// Freeze the domain's cgroup.
    Freeze,
    /// Thaw the domain's cgroup.
    Thaw,
    /// Make sure none of the domain's processes are left: thaw if frozen, SIGTERM, a grace
    /// period, SIGKILL. A no-op on an empty cgroup.
    Kill,
    /// [`Action::Kill`] what is left, then [`Action::Spawn`] again, counting one more restart.
    Restart,
    /// Remove the domain's cgroup, veth and files.
    Remove,
}

/// The outcome of an event: the new state and the effects to get there.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transition {
    /// The state once the actions are done.
    pub state: State,
    /// What the daemon must do, in order; empty for a late report.
    pub actions: Vec<Action>,
}

/// An event that makes no sense in the current state: `cannot pause domain pabx-1: it is stopped`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct LifecycleError {
    /// The domain, when known ([`State::next`] does not know it; [`DomainRecord::handle`] fills
    /// it in).
    pub domain: Option<String>,
    /// The state it was in.
    pub state: State,
    /// The event refused.
    pub event: Event,
}

impl LifecycleError {
    /// Names the domain in the message.
    pub fn for_domain(mut self, name: &str) -> Self {
        self.domain = Some(name.to_string());
        self
    }
}

impl fmt::Display for LifecycleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verb = self.event.verb();
        match &self.domain {
            Some(d) => write!(f, "cannot {verb} domain {d}: {}", self.state.describe()),
            None => write!(f, "cannot {verb} the domain: {}", self.state.describe()),
        }
    }
}

impl crate::error::Classify for LifecycleError {
    fn class(&self) -> crate::error::ErrorClass {
        crate::error::ErrorClass::Conflict
    }
}

/// What a running domain's probes say.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Health {
    /// No good probe yet.
    Starting,
    Healthy,
    /// `retries` consecutive failures (the restart policy then applied).
    Unhealthy,
    /// The service defines no probe beyond its process being alive.
    Unprobed,
}

impl Health {
    pub fn as_str(self) -> &'static str {
        match self {
            Health::Starting => "starting",
            Health::Healthy => "healthy",
            Health::Unhealthy => "unhealthy",
            Health::Unprobed => "unchecked",
        }
    }
}

/// The probe bookkeeping of a running domain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HealthState {
    pub health: Health,
    /// Consecutive counted failures.
    pub failures: u32,
    /// The last probe's outcome (`ok`, or what failed).
    pub detail: String,
    last_probe_ms: Option<u64>,
    last_counted_ms: Option<u64>,
}

impl HealthState {
    fn fresh(spec: &DomainSpec) -> Self {
        let probed = spec.health.as_ref().is_some_and(|h| h.kind != HealthKind::Process);
        HealthState {
            health: if probed { Health::Starting } else { Health::Unprobed },
            failures: 0,
            detail: String::new(),
            last_probe_ms: None,
            last_counted_ms: None,
        }
    }
}

/// What the daemon finds of a domain when it starts again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Found {
    Running,
    Paused,
    /// Nothing runs; the exit code when known.
    Exited {
        code: Option<i32>,
    },
    /// No trace of it (no cgroup).
    Absent,
}

/// A domain as the daemon keeps it (its lifecycle persisted as JSON; health only in memory).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DomainRecord {
    /// What it runs.
    pub spec: DomainSpec,
    /// Where it is.
    pub state: State,
    /// Automatic restarts since the last explicit start.
    pub restarts: u32,
    /// Only while running (see the module docs).
    #[serde(skip)]
    health: Option<HealthState>,
}

impl DomainRecord {
    /// A freshly created domain.
    pub fn new(spec: DomainSpec) -> Self {
        DomainRecord {
            spec,
            state: State::Created,
            restarts: 0,
            health: None,
        }
    }

    /// Applies `event`: updates state, restart count and health and returns the actions to
    /// execute. On error nothing changes.
    pub fn handle(&mut self, event: &Event) -> Result<Vec<Action>, LifecycleError> {
        let t = self
            .state
            .next(event, &self.spec.restart, self.restarts)
            .map_err(|e| e.for_domain(&self.spec.name))?;
        if t.actions.contains(&Action::Spawn) {
            self.restarts = 0;
        }
        if t.actions.contains(&Action::Restart) {
            self.restarts = self.restarts.saturating_add(1);
        }
        let begins = t
            .actions
            .iter()
            .any(|a| matches!(a, Action::Spawn | Action::Restart | Action::Thaw));
        self.state = t.state;
        if self.state != State::Running {
            self.health = None;
        } else if begins || self.health.is_none() {
            self.health = Some(HealthState::fresh(&self.spec));
        }
        Ok(t.actions)
    }

    /// What to do with this record when the daemon starts again and finds the domain as
    /// `found`. A domain that should run and does is adopted as it is (its health starts over:
    /// it is probed again before it counts as ready); one that should run and does not is
    /// treated as failed while the daemon was down (the restart policy decides); stray
    /// processes of a domain that should not run are killed; a destroyed domain is removed
    /// again.
    pub fn readopt(&mut self, found: Found) -> Vec<Action> {
        let alive = matches!(found, Found::Running | Found::Paused);
        match (&self.state, found) {
            (State::Running, Found::Paused) => {
                // Frozen behind our back (or while a pause was being recorded): it is paused.
                self.state = State::Paused;
                self.health = None;
                Vec::new()
            }
            (State::Paused, Found::Running) => {
                self.state = State::Running;
                self.health = Some(HealthState::fresh(&self.spec));
                Vec::new()
            }
            (s, _) if alive && s.expects_processes() => {
                if *s == State::Running {
                    self.health = Some(HealthState::fresh(&self.spec));
                }
                Vec::new()
            }
            (s, Found::Exited { code }) if s.expects_processes() => {
                self.gone_while_down(Failure::ExitedWhileDown { code })
            }
            (s, _) if s.expects_processes() => self.gone_while_down(Failure::GoneWhileDown),
            (State::Destroyed, _) => vec![Action::Remove],
            (_, _) if alive => vec![Action::Kill],
            _ => Vec::new(),
        }
    }

    /// A domain that should have run but did not: restarted per policy (a frozen one is not:
    /// it would silently be unpaused), or failed with `reason`.
    fn gone_while_down(&mut self, reason: Failure) -> Vec<Action> {
        let again = self.state == State::Running
            && match self.spec.restart {
                RestartPolicy::Never => false,
                RestartPolicy::Always => true,
                RestartPolicy::OnFailure { max_retries } => self.restarts < max_retries,
            };
        if again {
            self.restarts = self.restarts.saturating_add(1);
            self.health = Some(HealthState::fresh(&self.spec));
            return vec![Action::Restart];
        }
        let gave_up_after = match (self.state == State::Running, self.spec.restart) {
            (true, RestartPolicy::OnFailure { max_retries }) => Some(max_retries),
            _ => None,
        };
        self.state = State::Failed { reason, gave_up_after };
        self.health = None;
        vec![Action::Kill]
    }

    /// The probe bookkeeping, while the domain runs.
    pub fn health(&self) -> Option<&HealthState> {
        self.health.as_ref()
    }

    /// Whether the domain runs and may take traffic: its probe passed, or it has none.
    pub fn is_ready(&self) -> bool {
        self.state == State::Running
            && self
                .health
                .as_ref()
                .is_some_and(|h| matches!(h.health, Health::Healthy | Health::Unprobed))
    }

    /// Whether a probe is due at `now_ms`: a running domain with a probe, every
    /// [`STARTING_PROBE_MS`] while starting, every interval afterwards.
    pub fn probe_due(&self, now_ms: u64) -> bool {
        let (Some(h), Some(check)) = (&self.health, &self.spec.health) else {
            return false;
        };
        let every = match h.health {
            Health::Unprobed | Health::Unhealthy => return false,
            Health::Starting => STARTING_PROBE_MS.min(check.interval.as_millis() as u64),
            Health::Healthy => check.interval.as_millis() as u64,
        };
        self.state == State::Running && h.last_probe_ms.is_none_or(|t| now_ms.saturating_sub(t) >= every)
    }

    /// Records a probe's outcome at `now_ms`. While starting, failures count once per interval
    /// (a service that never came up gets as many chances as one that went down). The
    /// `retries`-th counted failure raises [`Event::HealthFailed`]: the returned actions are the
    /// restart policy's. A late outcome (the domain no longer runs) changes nothing.
    pub fn record_probe(&mut self, now_ms: u64, outcome: Result<(), String>) -> Vec<Action> {
        let Some(check) = self.spec.health.clone() else {
            return Vec::new();
        };
        let interval = check.interval.as_millis() as u64;
        let Some(h) = self.health.as_mut().filter(|_| self.state == State::Running) else {
            return Vec::new();
        };
        if h.health == Health::Unprobed {
            return Vec::new();
        }
        h.last_probe_ms = Some(now_ms);
        match outcome {
            Ok(()) => {
                h.failures = 0;
                h.health = Health::Healthy;
                h.detail = "ok".into();
                Vec::new()
            }
            Err(why) => {
                h.detail = why;
                let counts = h.health != Health::Starting
                    || h.last_counted_ms.is_none_or(|t| now_ms.saturating_sub(t) >= interval);
                if counts {
                    h.failures += 1;
                    h.last_counted_ms = Some(now_ms);
                }
                if h.failures < check.retries {
                    return Vec::new();
                }
                h.health = Health::Unhealthy;
                let detail = h.detail.clone();
                self.handle(&Event::HealthFailed { detail }).unwrap_or_default()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::domain::{DomainKind, HealthCheck, Isolation};

    fn spec() -> DomainSpec {
        DomainSpec {
            name: "pabx-1".into(),
            kind: DomainKind::Service,
            isolation: Isolation::Container,
            cpu: None,
            memory: Some(64 << 20),
            net: None,
            argv: vec!["kamailio".into()],
            env: Vec::new(),
            health: Some(HealthCheck {
                kind: HealthKind::Udp {
                    port: 5060,
                    payload: "OPTIONS".into(),
                },
                interval: Duration::from_secs(5),
                timeout: Duration::from_secs(1),
                retries: 3,
            }),
            restart: RestartPolicy::OnFailure { max_retries: 3 },
            service: Some("pabx".into()),
        }
    }

    fn health_failed() -> Event {
        Event::HealthFailed {
            detail: "no reply".into(),
        }
    }

    /// Every event from every state, under every policy.
    #[test]
    fn lifecycle_table() {
        use Action::*;
        let failed = |reason: Failure, gave_up_after| State::Failed { reason, gave_up_after };
        let states = [
            State::Created,
            State::Running,
            State::Paused,
            State::Stopped,
            failed(Failure::Killed, None),
            State::Destroyed,
        ];
        let events = [
            Event::Start,
            Event::Pause,
            Event::Resume,
            Event::Stop,
            Event::Destroy,
            Event::Exited { code: Some(0) },
            Event::Exited { code: Some(3) },
            Event::Exited { code: None },
            health_failed(),
            Event::SpawnFailed { error: "ENOENT".into() },
        ];
        let never = RestartPolicy::Never;
        let on2 = RestartPolicy::OnFailure { max_retries: 2 };
        let always = RestartPolicy::Always;
        let expect = |s: &State, e: &Event, p: &RestartPolicy, n: u32| -> Option<(State, Vec<Action>)> {
            let same = Some((s.clone(), vec![]));
            let reason = match e {
                Event::Exited { code: Some(3) } => Failure::Exited { code: 3 },
                Event::Exited { code: None } => Failure::Killed,
                Event::SpawnFailed { .. } => Failure::StartFailed { error: "ENOENT".into() },
                _ => Failure::Unhealthy {
                    detail: "no reply".into(),
                },
            };
            let gave_up = match p {
                RestartPolicy::OnFailure { .. } => Some(2),
                _ => None,
            };
            let may_restart =
                matches!(p, RestartPolicy::Always) || (matches!(p, RestartPolicy::OnFailure { .. }) && n < 2);
            match (s, e) {
                (State::Created | State::Stopped | State::Failed { .. }, Event::Start) => {
                    Some((State::Running, vec![Spawn]))
                }
                (State::Running, Event::Pause) => Some((State::Paused, vec![Freeze])),
                (State::Paused, Event::Resume) => Some((State::Running, vec![Thaw])),
                (State::Running | State::Paused, Event::Stop) => Some((State::Stopped, vec![Kill])),
                (State::Running | State::Paused, Event::Destroy) => Some((State::Destroyed, vec![Kill, Remove])),
                (State::Created | State::Stopped | State::Failed { .. }, Event::Destroy) => {
                    Some((State::Destroyed, vec![Remove]))
                }
                (State::Running, Event::Exited { code: Some(0) }) => match p {
                    RestartPolicy::Always => Some((State::Running, vec![Restart])),
                    _ => Some((State::Stopped, vec![Kill])),
                },
                (State::Running, Event::Exited { .. } | Event::HealthFailed { .. }) => {
                    if may_restart {
                        Some((State::Running, vec![Restart]))
                    } else {
                        Some((failed(reason, gave_up), vec![Kill]))
                    }
                }
                (State::Running, Event::SpawnFailed { .. }) => Some((failed(reason, None), vec![Kill])),
                (State::Paused, Event::Exited { code: Some(0) }) => Some((State::Stopped, vec![Kill])),
                (State::Paused, Event::Exited { .. }) => Some((failed(reason, None), vec![Kill])),
                (State::Paused, Event::HealthFailed { .. }) => same,
                (
                    State::Stopped | State::Failed { .. } | State::Destroyed,
                    Event::Exited { .. } | Event::HealthFailed { .. },
                ) => same,
                _ => None,
            }
        };
        let (mut ok, mut refused) = (0, 0);
        for s in &states {
            for e in &events {
                for (p, n) in [(never, 0), (on2, 0), (on2, 1), (on2, 2), (always, 0), (always, 99)] {
                    let got = s.next(e, &p, n);
                    match expect(s, e, &p, n) {
                        Some((state, actions)) => {
                            let t =
                                got.unwrap_or_else(|err| panic!("{s} + {e:?} under {p} ({n}): expected ok, got {err}"));
                            assert_eq!((t.state, t.actions), (state, actions), "{s} + {e:?} under {p} ({n})");
                            ok += 1;
                        }
                        None => {
                            let err = got.expect_err(&format!("{s} + {e:?} under {p}: expected an error"));
                            assert_eq!((&err.state, &err.event), (s, e));
                            refused += 1;
                        }
                    }
                }
            }
        }
        assert_eq!((ok, refused), (198, 162));
    }

    #[test]
    fn messages_name_the_domain_and_the_typed_reason() {
        let msg = |s: State, e: Event| {
            s.next(&e, &RestartPolicy::Never, 0)
                .unwrap_err()
                .for_domain("d")
                .to_string()
        };
        assert_eq!(
            msg(State::Stopped, Event::Pause),
            "cannot pause domain d: it is stopped"
        );
        assert_eq!(
            msg(State::Created, Event::Resume),
            "cannot resume domain d: it has not been started"
        );
        assert_eq!(
            msg(
                State::Failed {
                    reason: Failure::Exited { code: 3 },
                    gave_up_after: Some(2)
                },
                Event::Pause
            ),
            "cannot pause domain d: it has failed (exited with code 3; gave up after 2 restarts)"
        );
        assert_eq!(
            msg(State::Created, Event::Exited { code: Some(1) }),
            "cannot report the exit of domain d: it has not been started"
        );
        let json = serde_json::to_string(&State::Failed {
            reason: Failure::Unhealthy { detail: "x".into() },
            gave_up_after: None,
        })
        .unwrap();
        assert_eq!(json, r#"{"state":"failed","reason":{"kind":"unhealthy","detail":"x"}}"#);
        assert_eq!(
            serde_json::from_str::<State>(&json).unwrap(),
            State::Failed {
                reason: Failure::Unhealthy { detail: "x".into() },
                gave_up_after: None
            }
        );
    }

    #[test]
    fn a_new_instance_is_ready_only_after_its_probe_passed() {
        let mut r = DomainRecord::new(spec());
        assert!(!r.is_ready(), "created");
        r.handle(&Event::Start).unwrap();
        assert_eq!(r.health().unwrap().health, Health::Starting);
        assert!(!r.is_ready(), "running is not enough: no probe has passed");
        assert!(r.probe_due(0));
        assert!(r.record_probe(0, Err("no reply".into())).is_empty());
        assert!(!r.is_ready());
        assert!(!r.probe_due(50), "starting domains are probed every 100 ms");
        assert!(r.probe_due(100));
        r.record_probe(100, Ok(()));
        assert!(r.is_ready());
        assert!(!r.probe_due(200), "healthy: probed at its interval");
        assert!(r.probe_due(5100));
        // Without a probe: ready once running.
        let mut plain = DomainRecord::new(DomainSpec { health: None, ..spec() });
        plain.handle(&Event::Start).unwrap();
        assert_eq!(plain.health().unwrap().health, Health::Unprobed);
        assert!(plain.is_ready());
        assert!(!plain.probe_due(0));
    }

    #[test]
    fn a_probe_that_never_passes_fails_the_domain_after_its_retries_at_interval_cadence() {
        let mut r = DomainRecord::new(DomainSpec {
            restart: RestartPolicy::Never,
            ..spec()
        });
        r.handle(&Event::Start).unwrap();
        // Fast probes while starting: only one failure counted per 5 s interval.
        for t in (0..5000).step_by(100) {
            assert!(r.record_probe(t, Err("no reply".into())).is_empty());
        }
        assert_eq!(r.health().unwrap().failures, 1);
        assert!(r.record_probe(5000, Err("no reply".into())).is_empty());
        let actions = r.record_probe(10_000, Err("still no reply".into()));
        assert_eq!(
            actions,
            vec![Action::Kill],
            "the third counted failure applies the policy"
        );
        assert!(!r.is_ready());
        assert_eq!(
            r.state,
            State::Failed {
                reason: Failure::Unhealthy {
                    detail: "still no reply".into()
                },
                gave_up_after: None
            }
        );
        assert!(r.health().is_none(), "a failed domain has no health");
        assert!(
            r.record_probe(10_100, Ok(())).is_empty(),
            "a late probe changes nothing"
        );
        assert!(!r.is_ready());
    }

    #[test]
    fn nothing_inherits_a_verdict() {
        let mut r = DomainRecord::new(spec());
        r.handle(&Event::Start).unwrap();
        r.record_probe(0, Ok(()));
        assert!(r.is_ready());
        // A restart (the process died) begins again at starting.
        assert_eq!(
            r.handle(&Event::Exited { code: Some(1) }).unwrap(),
            vec![Action::Restart]
        );
        assert_eq!(r.health().unwrap().health, Health::Starting);
        assert!(!r.is_ready());
        r.record_probe(10, Ok(()));
        // Paused: no health; resumed: starting again.
        r.handle(&Event::Pause).unwrap();
        assert!(r.health().is_none());
        r.handle(&Event::Resume).unwrap();
        assert!(!r.is_ready());
        // Stopped and started again, destroyed: gone.
        r.handle(&Event::Stop).unwrap();
        assert!(r.health().is_none());
        r.handle(&Event::Start).unwrap();
        assert_eq!(r.health().unwrap().health, Health::Starting);
        r.handle(&Event::Destroy).unwrap();
        assert!(r.health().is_none() && !r.is_ready());
        // After a daemon restart the health is not persisted: probed again.
        let mut r = DomainRecord::new(spec());
        r.handle(&Event::Start).unwrap();
        r.record_probe(0, Ok(()));
        let mut again: DomainRecord = serde_json::from_str(&serde_json::to_string(&r).unwrap()).unwrap();
        assert!(again.readopt(Found::Running).is_empty());
        assert_eq!(again.health().unwrap().health, Health::Starting);
    }

    #[test]
    fn record_counts_restarts() {
        let mut r = DomainRecord::new(DomainSpec {
            restart: RestartPolicy::OnFailure { max_retries: 2 },
            ..spec()
        });
        assert_eq!(r.handle(&Event::Start), Ok(vec![Action::Spawn]));
        assert_eq!(r.handle(&health_failed()), Ok(vec![Action::Restart]));
        assert_eq!(r.handle(&Event::Exited { code: Some(1) }), Ok(vec![Action::Restart]));
        assert_eq!(r.restarts, 2);
        assert_eq!(r.handle(&Event::Exited { code: Some(1) }), Ok(vec![Action::Kill]));
        assert_eq!(
            r.state.to_string(),
            "failed (exited with code 1; gave up after 2 restarts)"
        );
        assert_eq!(r.handle(&Event::Start), Ok(vec![Action::Spawn]));
        assert_eq!((r.restarts, &r.state), (0, &State::Running));
    }

    #[test]
    fn readoption() {
        let mut r = DomainRecord::new(spec());
        assert_eq!(r.readopt(Found::Absent), vec![]);
        assert_eq!(
            r.readopt(Found::Running),
            vec![Action::Kill],
            "strays of a domain that should not run"
        );
        r.handle(&Event::Start).unwrap();
        assert_eq!(r.readopt(Found::Running), vec![]);
        assert_eq!(r.state, State::Running);
        assert_eq!(
            r.readopt(Found::Absent),
            vec![Action::Restart],
            "gone while down: the policy restarts it"
        );
        assert_eq!((r.restarts, &r.state), (1, &State::Running));
        r.spec.restart = RestartPolicy::Never;
        assert_eq!(r.readopt(Found::Exited { code: Some(9) }), vec![Action::Kill]);
        assert_eq!(
            r.state,
            State::Failed {
                reason: Failure::ExitedWhileDown { code: Some(9) },
                gave_up_after: None
            }
        );
        r.handle(&Event::Start).unwrap();
        assert_eq!(r.readopt(Found::Paused), vec![], "found frozen: paused");
        assert_eq!(r.state, State::Paused);
        assert_eq!(r.readopt(Found::Absent), vec![Action::Kill]);
        assert_eq!(r.state.to_string(), "failed (was gone when wuosd started again)");
        r.handle(&Event::Destroy).unwrap();
        assert_eq!(r.readopt(Found::Absent), vec![Action::Remove]);
    }
}
