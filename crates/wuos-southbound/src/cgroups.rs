//! cgroups behind a narrow trait — what the lab does to a router's "hardware": create with
//! limits, destroy (killing what runs inside), check. Implemented by [`HostCgroups`] (a
//! [`CgroupFs`] and the procfs its processes are found in) and faked by [`RecordingCgroups`].
//!
//! Paths are relative to the root of each hierarchy, e.g. `wuos/demo/r1`.

use std::collections::BTreeSet;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::cgroup::{CgroupError, CgroupFs, Limits, Version};
use crate::recording::{Journal, Recorded, Refusals};

/// cgroups, as wuos creates and removes them.
pub trait Cgroups: Sync {
    /// Creates cgroup `path` (and its parents) and applies `limits`; an existing one gets the
    /// limits.
    fn create(&self, path: &str, limits: &Limits) -> Result<(), CgroupError>;

    /// Kills every process in `path` and below, then removes the cgroups; a missing one is fine.
    fn destroy(&self, path: &str) -> Result<(), CgroupError>;

    /// Whether cgroup `path` exists.
    fn exists(&self, path: &str) -> bool;
}

/// The host's cgroups: a detected [`CgroupFs`], and `/proc` (a parameter) to find the processes
/// [`Cgroups::destroy`] must stop.
#[derive(Clone, Debug)]
pub struct HostCgroups {
    fs: CgroupFs,
    proc_root: PathBuf,
}

impl HostCgroups {
    /// Detects the cgroup version under `cgroup_root` (see [`CgroupFs::detect`]).
    pub fn detect(cgroup_root: &Path, proc_root: &Path) -> Result<Self, CgroupError> {
        Ok(Self {
            fs: CgroupFs::detect(cgroup_root)?,
            proc_root: proc_root.to_owned(),
        })
    }

    pub fn version(&self) -> Version {
        *self.fs.version()
    }
}

impl Cgroups for HostCgroups {
    fn create(&self, path: &str, limits: &Limits) -> Result<(), CgroupError> {
        self.fs.create(path, limits)
    }

    fn destroy(&self, path: &str) -> Result<(), CgroupError> {
        self.fs.destroy(path, &self.proc_root)
    }

    fn exists(&self, path: &str) -> bool {
        self.fs.exists(path)
    }
}

/// What a [`RecordingCgroups`] was asked to change.
#[derive(Clone, Debug, PartialEq)]
pub enum CgroupCall {
    Create { path: String, limits: Limits },
    Destroy { path: String },
}

/// A fake: records changes in a [`Journal`], keeps the set of cgroups that exist, refuses to
/// create chosen paths.
#[derive(Debug)]
pub struct RecordingCgroups {
    journal: Journal,
    existing: Mutex<BTreeSet<String>>,
    refused: Refusals,
}

impl RecordingCgroups {
    pub fn new(journal: &Journal) -> Self {
        Self {
            journal: journal.clone(),
            existing: Mutex::new(BTreeSet::new()),
            refused: Refusals::default(),
        }
    }

    /// A cgroup that exists from the start (not recorded).
    pub fn with_cgroup(self, path: &str) -> Self {
        self.existing
            .lock()
            .expect("fake cgroups lock")
            .insert(path.to_string());
        self
    }

    /// Creating `path` fails from now on.
    pub fn refuse(&self, path: &str) {
        self.refused.add(path);
    }

    /// Every cgroup that exists, sorted.
    pub fn existing(&self) -> Vec<String> {
        self.existing
            .lock()
            .expect("fake cgroups lock")
            .iter()
            .cloned()
            .collect()
    }
}

impl Cgroups for RecordingCgroups {
    fn create(&self, path: &str, limits: &Limits) -> Result<(), CgroupError> {
        if self.refused.refuses(path) {
            return Err(CgroupError::Create {
                path: PathBuf::from(path),
                source: io::Error::other("refused by the fake"),
            });
        }
        self.journal.push(Recorded::Cgroup(CgroupCall::Create {
            path: path.to_string(),
            limits: *limits,
        }));
        self.existing
            .lock()
            .expect("fake cgroups lock")
            .insert(path.to_string());
        Ok(())
    }

    fn destroy(&self, path: &str) -> Result<(), CgroupError> {
        self.journal
            .push(Recorded::Cgroup(CgroupCall::Destroy { path: path.to_string() }));
        let below = format!("{path}/");
        self.existing
            .lock()
            .expect("fake cgroups lock")
            .retain(|p| p != path && !p.starts_with(&below));
        Ok(())
    }

    fn exists(&self, path: &str) -> bool {
        self.existing.lock().expect("fake cgroups lock").contains(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_cgroups_create_and_destroy_under_their_root() {
        // A cgroup v2 root with no controllers: directories only.
        let root = tempfile::tempdir().unwrap();
        std::fs::write(root.path().join("cgroup.controllers"), "").unwrap();
        let cg = HostCgroups::detect(root.path(), Path::new("/nonexistent-proc")).unwrap();
        assert_eq!(cg.version(), Version::V2);
        cg.create("wuos/t/r1", &Limits::default()).unwrap();
        assert!(cg.exists("wuos/t/r1") && root.path().join("wuos/t/r1").is_dir());
        cg.destroy("wuos/t").unwrap();
        assert!(!cg.exists("wuos/t/r1") && !cg.exists("wuos/t"));
        assert!(cg.exists("wuos"), "only the destroyed subtree goes");
        cg.destroy("wuos/t").unwrap();
    }

    #[test]
    fn the_fake_records_changes_and_keeps_what_exists() {
        let journal = Journal::new();
        let cg = RecordingCgroups::new(&journal).with_cgroup("wuos/other");
        let half = Limits {
            cpus: Some(0.5),
            memory: None,
        };
        cg.create("wuos/t", &Limits::default()).unwrap();
        cg.create("wuos/t/r1", &half).unwrap();
        cg.refuse("wuos/t/r2");
        assert!(cg.create("wuos/t/r2", &half).is_err());
        assert!(cg.exists("wuos/t/r1") && !cg.exists("wuos/t/r2"));
        cg.destroy("wuos/t").unwrap();
        assert_eq!(cg.existing(), vec!["wuos/other".to_string()]);
        assert_eq!(
            journal.take(),
            vec![
                Recorded::Cgroup(CgroupCall::Create {
                    path: "wuos/t".into(),
                    limits: Limits::default()
                }),
                Recorded::Cgroup(CgroupCall::Create {
                    path: "wuos/t/r1".into(),
                    limits: half
                }),
                Recorded::Cgroup(CgroupCall::Destroy { path: "wuos/t".into() }),
            ]
        );
    }
}
