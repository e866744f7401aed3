//! The persisted state of a lab: written *before* anything is created, so that `wuos lab down`
//! can remove a lab whose `up` was killed half way.
//!
//! One JSON file per lab (`STATE_DIR/labs/NAME/lab.json`), replaced atomically. A plain file rather
//! than the redb store: several `wuos` processes (up, exec, status, down, relays) read it at
//! once, and redb holds an exclusive lock per database.

use std::fs;
use std::io;
use std::path::PathBuf;

use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};
use wuos_model::plan::AddressPlan;
use wuos_model::{LinkParams, Topology};

use crate::env::LabEnv;

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("cannot read lab state {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("lab state {path} is corrupt: {source}")]
    Corrupt { path: PathBuf, source: serde_json::Error },
    #[error("cannot write lab state {path}: {source}")]
    Write { path: PathBuf, source: io::Error },
    #[error("cannot lock lab {lab} ({path}): {source}")]
    Lock {
        lab: String,
        path: PathBuf,
        source: io::Error,
    },
}

/// An exclusive lock on one lab, held while `up`, `down` or `link set` change it, so that two
/// `wuos` processes never interleave changes to the same lab. Other labs are not blocked.
#[derive(Debug)]
pub struct LabLock {
    _lock: Flock<fs::File>,
    path: PathBuf,
}

impl LabLock {
    /// Waits for and takes the lock of `lab`.
    pub fn take(env: &LabEnv, lab: &str) -> Result<Self, StateError> {
        let path = env.labs_dir().join(format!("{lab}.lock"));
        let err = |source| StateError::Lock {
            lab: lab.to_string(),
            path: path.clone(),
            source,
        };
        fs::create_dir_all(env.labs_dir()).map_err(err)?;
        let file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(err)?;
        let lock =
            Flock::lock(file, FlockArg::LockExclusive).map_err(|(_, e)| err(io::Error::from_raw_os_error(e as i32)))?;
        Ok(Self { _lock: lock, path })
    }

    /// Removes the lock file (the lab is gone); the lock is released when `self` drops.
    pub fn remove_file(&self) {
        let _ = fs::remove_file(&self.path);
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// `up` is running, or died while running.
    Creating,
    Up,
}

/// Runtime state of one link.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LinkRuntime {
    /// Administrative state (`wuos lab link set --down/--up`).
    pub up: bool,
    /// Current parameters (the topology's, changed by `link set`).
    pub params: LinkParams,
    /// Pid of the user-space relay carrying this link's delay, jitter and loss, if any.
    pub relay_pid: Option<u32>,
    /// Whether the relay plumbing (twin interfaces and redirects) exists.
    pub spliced: bool,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LabState {
    pub name: String,
    pub phase: Phase,
    pub created_unix_ms: u64,
    pub topology: Topology,
    pub plan: AddressPlan,
    pub links: Vec<LinkRuntime>,
    /// Pid of the daemon supervisor, when the lab runs router daemons.
    #[serde(default)]
    pub supervisor_pid: Option<u32>,
}

impl LabState {
    pub fn path(env: &LabEnv, lab: &str) -> PathBuf {
        env.lab_dir(lab).join("lab.json")
    }

    pub fn exists(env: &LabEnv, lab: &str) -> bool {
        Self::path(env, lab).exists()
    }

    pub fn load(env: &LabEnv, lab: &str) -> Result<Self, StateError> {
        let path = Self::path(env, lab);
        let text = fs::read_to_string(&path).map_err(|source| StateError::Read {
            path: path.clone(),
            source,
        })?;
        serde_json::from_str(&text).map_err(|source| StateError::Corrupt { path, source })
    }

    /// Writes the state to a temp file and renames it over the old one.
    pub fn save(&self, env: &LabEnv) -> Result<(), StateError> {
        let path = Self::path(env, &self.name);
        let err = |source| StateError::Write {
            path: path.clone(),
            source,
        };
        fs::create_dir_all(env.lab_dir(&self.name)).map_err(err)?;
        let tmp = path.with_extension("json.tmp");
        let text = serde_json::to_vec_pretty(self).expect("lab state always serializes");
        fs::write(&tmp, text).map_err(err)?;
        fs::rename(&tmp, &path).map_err(err)
    }

    /// Names of every lab that has state.
    pub fn list(env: &LabEnv) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(env.labs_dir())
            .into_iter()
            .flatten()
            .filter_map(|e| e.ok())
            .filter(|e| e.path().join("lab.json").exists())
            .filter_map(|e| e.file_name().into_string().ok())
            .collect();
        v.sort();
        v
    }

    pub fn log_dir(env: &LabEnv, lab: &str) -> PathBuf {
        env.lab_dir(lab).join("logs")
    }
}

/// Removes a lab's state directory; a missing one is fine.
pub fn remove(env: &LabEnv, lab: &str) -> io::Result<()> {
    match fs::remove_dir_all(env.lab_dir(lab)) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
