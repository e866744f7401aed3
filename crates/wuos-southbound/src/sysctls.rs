//! Sysctls behind a narrow trait, implemented by [`ProcSys`] (files under `/proc/sys`) and faked by
//! [`RecordingSysctls`].
//!
//! A network sysctl belongs to the namespace of the thread that writes it (`/proc/sys/net` shows
//! the namespace of the thread that opens it), so it is set on the thread that lives in the
//! namespace: the one that created it ([`crate::namespaces::Namespaces::create`] runs a closure
//! there) or one that entered it ([`crate::netns::run_in`]).

use std::io;
use std::path::{Path, PathBuf};

use crate::recording::{Journal, Recorded, Refusals};

#[derive(Debug, thiserror::Error)]
#[error("cannot set sysctl {key} to {value:?} ({path}): {source}")]
pub struct SysctlError {
    pub key: String,
    pub value: String,
    pub path: PathBuf,
    pub source: io::Error,
}

impl SysctlError {
    /// Whether the key does not exist on this kernel (e.g. IPv6 keys with IPv6 disabled).
    pub fn is_missing(&self) -> bool {
        self.source.kind() == io::ErrorKind::NotFound
    }
}

/// Sets sysctls of the calling thread's namespace.
pub trait Sysctls: Sync {
    /// Sets `key` (a path below `/proc/sys`, e.g. `net/ipv4/ip_forward`) to `value`.
    fn set(&self, key: &str, value: &str) -> Result<(), SysctlError>;
}

/// Sysctl files under a procfs `sys` directory (`/proc/sys` on a host).
#[derive(Clone, Debug)]
pub struct ProcSys {
    dir: PathBuf,
}

impl ProcSys {
    /// Sysctls under `dir`, usually `/proc/sys`.
    pub fn new(dir: &Path) -> Self {
        Self { dir: dir.to_owned() }
    }
}

impl Sysctls for ProcSys {
    fn set(&self, key: &str, value: &str) -> Result<(), SysctlError> {
        let path = self.dir.join(key);
        std::fs::write(&path, value).map_err(|source| SysctlError {
            key: key.to_string(),
            value: value.to_string(),
            path,
            source,
        })
    }
}

/// What a [`RecordingSysctls`] was asked to set.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SysctlCall {
    Set { key: String, value: String },
}

/// A fake: records sysctls in a [`Journal`]; refuses chosen keys.
#[derive(Debug)]
pub struct RecordingSysctls {
    journal: Journal,
    refused: Refusals,
}

impl RecordingSysctls {
    pub fn new(journal: &Journal) -> Self {
        Self {
            journal: journal.clone(),
            refused: Refusals::default(),
        }
    }

    /// Setting `key` fails from now on, as a missing key would.
    pub fn refuse(&self, key: &str) {
        self.refused.add(key);
    }
}

impl Sysctls for RecordingSysctls {
    fn set(&self, key: &str, value: &str) -> Result<(), SysctlError> {
        if self.refused.refuses(key) {
            return Err(SysctlError {
                key: key.to_string(),
                value: value.to_string(),
                path: PathBuf::from(key),
                source: io::Error::new(io::ErrorKind::NotFound, "refused by the fake"),
            });
        }
        self.journal.push(Recorded::Sysctl(SysctlCall::Set {
            key: key.to_string(),
            value: value.to_string(),
        }));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_sys_writes_the_file_below_its_directory() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("net/ipv4")).unwrap();
        let s = ProcSys::new(dir.path());
        s.set("net/ipv4/ip_forward", "1").unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.path().join("net/ipv4/ip_forward")).unwrap(),
            "1"
        );
        let e = s.set("net/ipv6/conf/all/disable_ipv6", "1").unwrap_err();
        assert!(e.is_missing(), "{e}");
        assert!(e.to_string().contains("net/ipv6/conf/all/disable_ipv6"), "{e}");
    }

    #[test]
    fn the_fake_records_and_refuses() {
        let journal = Journal::new();
        let s = RecordingSysctls::new(&journal);
        s.set("net/ipv4/ip_forward", "1").unwrap();
        s.refuse("net/ipv6/conf/all/disable_ipv6");
        assert!(s.set("net/ipv6/conf/all/disable_ipv6", "1").unwrap_err().is_missing());
        assert_eq!(
            journal.take(),
            vec![Recorded::Sysctl(SysctlCall::Set {
                key: "net/ipv4/ip_forward".into(),
                value: "1".into()
            })]
        );
    }
}
