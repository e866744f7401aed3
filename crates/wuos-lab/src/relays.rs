//! Starting and stopping link relays (`wuos lab relay`, see [`crate::impair`]) behind a narrow
//! trait: [`RelayProcesses`] runs them as detached processes logging to the lab's log directory,
//! [`RecordingRelays`] records what it was asked.

use std::process::Command;
use std::sync::Mutex;
use std::time::Duration;

use wuos_model::units::format_duration;
use wuos_southbound::process;

use crate::env::LabEnv;
use crate::error::LabError;
use crate::plan::Relay;

/// Where the relay of link `link` reads a new impairment when it gets SIGHUP (the JSON form of
/// [`crate::impair::Impairment`]).
pub fn params_path(env: &LabEnv, lab: &str, link: usize) -> std::path::PathBuf {
    crate::state::LabState::log_dir(env, lab).join(format!("relay-{link}.params.json"))
}

/// The relays of one lab.
pub trait Relays: Sync {
    /// Starts `relay`; returns its pid.
    fn start(&self, relay: &Relay) -> Result<u32, LabError>;

    /// Stops the relay of link `link` that runs as `pid` (if that process still is one).
    fn stop(&self, link: usize, pid: u32);
}

/// Relays as processes: `RELAY_EXE lab relay --lab LAB --link I …`, output to
/// `LAB_DIR/logs/relay-I.log`.
#[derive(Clone, Debug)]
pub struct RelayProcesses<'a> {
    env: &'a LabEnv,
    lab: String,
}

impl<'a> RelayProcesses<'a> {
    pub fn new(env: &'a LabEnv, lab: &str) -> Self {
        Self {
            env,
            lab: lab.to_string(),
        }
    }
}

impl Relays for RelayProcesses<'_> {
    fn start(&self, r: &Relay) -> Result<u32, LabError> {
        let log = crate::spawn::log_file(self.env, &self.lab, &format!("relay-{}", r.link))?;
        let mut cmd = Command::new(&self.env.relay_exe);
        cmd.args(["lab", "relay", "--lab", &self.lab, "--link", &r.link.to_string()])
            .arg("--netns")
            .arg(self.env.netns_dir.join(&r.netns))
            .args(["--a", &r.a, "--b", &r.b])
            .args(["--delay", &format_duration(r.delay)])
            .args(["--jitter", &format_duration(r.jitter)])
            .args(["--loss", &format!("{}", r.loss_pct)])
            .args(["--seed", &r.seed.to_string()])
            .arg("--params")
            .arg(params_path(self.env, &self.lab, r.link));
        Ok(crate::spawn::spawn_logged(cmd, log, true, &format!("the relay of link {}", r.link))?.id())
    }

    fn stop(&self, _link: usize, pid: u32) {
        // The stored pid is only signalled if it still is this lab's relay.
        let pid = pid as i32;
        if process::cmdline_has(&self.env.proc_root, pid, &["relay", &self.lab]) {
            process::terminate(&self.env.proc_root, &[pid], Duration::from_millis(200));
        }
    }
}

/// What a [`RecordingRelays`] was asked.
#[derive(Clone, Debug, PartialEq)]
pub enum RelayCall {
    Start(Relay),
    Stop { link: usize, pid: u32 },
}

/// A fake: records calls, gives out pids from 1000 up, refuses to start chosen links' relays.
#[derive(Debug, Default)]
pub struct RecordingRelays {
    calls: Mutex<Vec<RelayCall>>,
    refused: Mutex<Vec<usize>>,
}

impl RecordingRelays {
    pub fn new() -> Self {
        Self::default()
    }

    /// Starting the relay of `link` fails from now on.
    pub fn refuse(&self, link: usize) {
        self.refused.lock().expect("fake relays lock").push(link);
    }

    /// The calls so far, and forgets them.
    pub fn take_calls(&self) -> Vec<RelayCall> {
        std::mem::take(&mut *self.calls.lock().expect("fake relays lock"))
    }
}

impl Relays for RecordingRelays {
    fn start(&self, relay: &Relay) -> Result<u32, LabError> {
        if self.refused.lock().expect("fake relays lock").contains(&relay.link) {
            return Err(LabError::Io {
                what: format!("cannot start the relay of link {}", relay.link),
                source: std::io::Error::other("refused by the fake"),
            });
        }
        let mut calls = self.calls.lock().expect("fake relays lock");
        calls.push(RelayCall::Start(relay.clone()));
        Ok(1000 + calls.len() as u32 - 1)
    }

    fn stop(&self, link: usize, pid: u32) {
        self.calls
            .lock()
            .expect("fake relays lock")
            .push(RelayCall::Stop { link, pid });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fake_records_starts_and_stops_and_refuses_chosen_links() {
        let r = RecordingRelays::new();
        let relay = |link| Relay {
            link,
            netns: "wuos.t._relay".into(),
            a: format!("l{link}a"),
            b: format!("l{link}b"),
            delay: Duration::from_millis(5),
            jitter: Duration::ZERO,
            loss_pct: 0.0,
            seed: 1,
        };
        let pid = r.start(&relay(0)).unwrap();
        r.stop(0, pid);
        r.refuse(1);
        assert!(r.start(&relay(1)).is_err());
        assert_eq!(
            r.take_calls(),
            vec![RelayCall::Start(relay(0)), RelayCall::Stop { link: 0, pid: 1000 }]
        );
    }
}
