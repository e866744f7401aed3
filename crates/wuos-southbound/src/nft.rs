//! nftables behind a narrow trait: rulesets applied atomically (`nft -f -`) and wuos's own
//! tables listed, by the `nft` program ([`NftCommand`]) or a recording fake ([`RecordingNft`]).

use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::Mutex;

/// Why nftables refused.
#[derive(Debug, thiserror::Error)]
pub enum NftError {
    #[error("cannot run nft (apt-get install nftables): {0}")]
    Spawn(std::io::Error),
    #[error("nft: {0}")]
    Refused(String),
}

/// nftables, as wuos uses it.
pub trait Nftables: Send + Sync {
    /// Applies a ruleset script (one transaction: all of it or nothing).
    fn apply(&self, script: &str) -> Result<(), NftError>;
    /// `nft list table FAMILY NAME`, counters included.
    fn list_table(&self, family: &str, name: &str) -> Result<String, NftError>;
}

/// A shared nftables (a test keeps one end of a fake).
impl<T: Nftables + ?Sized> Nftables for std::sync::Arc<T> {
    fn apply(&self, script: &str) -> Result<(), NftError> {
        (**self).apply(script)
    }

    fn list_table(&self, family: &str, name: &str) -> Result<String, NftError> {
        (**self).list_table(family, name)
    }
}

/// The `nft` program, in the caller's network namespace.
#[derive(Clone, Copy, Debug, Default)]
pub struct NftCommand;

impl Nftables for NftCommand {
    fn apply(&self, script: &str) -> Result<(), NftError> {
        let mut child = Command::new("nft")
            .args(["-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(NftError::Spawn)?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin.write_all(script.as_bytes()).map_err(NftError::Spawn)?;
        }
        let out = child.wait_with_output().map_err(NftError::Spawn)?;
        if out.status.success() {
            Ok(())
        } else {
            Err(NftError::Refused(
                String::from_utf8_lossy(&out.stderr).trim().to_string(),
            ))
        }
    }

    fn list_table(&self, family: &str, name: &str) -> Result<String, NftError> {
        let out = Command::new("nft")
            .args(["list", "table", family, name])
            .output()
            .map_err(NftError::Spawn)?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(NftError::Refused(
                String::from_utf8_lossy(&out.stderr).trim().to_string(),
            ))
        }
    }
}

/// A fake for tests: keeps the scripts applied.
#[derive(Debug, Default)]
pub struct RecordingNft {
    pub applied: Mutex<Vec<String>>,
}

impl RecordingNft {
    pub fn scripts(&self) -> Vec<String> {
        self.applied.lock().expect("fake nft lock").clone()
    }
}

impl Nftables for RecordingNft {
    fn apply(&self, script: &str) -> Result<(), NftError> {
        self.applied.lock().expect("fake nft lock").push(script.to_string());
        Ok(())
    }

    fn list_table(&self, _family: &str, name: &str) -> Result<String, NftError> {
        Ok(self
            .applied
            .lock()
            .expect("fake nft lock")
            .iter()
            .rev()
            .find(|s| s.contains(name))
            .cloned()
            .unwrap_or_default())
    }
}
