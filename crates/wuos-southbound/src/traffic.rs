//! Traffic control behind a narrow trait: one batch of `tc` commands per namespace (see
//! [`crate::tc`] for the commands), run by [`TcBinary`] and faked by [`RecordingTc`].

use crate::recording::{Journal, Recorded, Refusals};
use crate::tc::{self, TcError};

/// Runs batches of tc commands.
pub trait TrafficControl: Sync {
    /// Runs `commands` (one tc command per line, without the leading `tc`) inside namespace
    /// `netns`, as one batch.
    fn batch(&self, netns: &str, commands: &[String]) -> Result<(), TcError>;
}

/// iproute2's `tc -n NETNS -force -batch -` ([`tc::batch`]). `tc` finds the namespace by name
/// under `/run/netns`, as `ip netns` does.
#[derive(Clone, Copy, Debug, Default)]
pub struct TcBinary;

impl TrafficControl for TcBinary {
    fn batch(&self, netns: &str, commands: &[String]) -> Result<(), TcError> {
        tc::batch(netns, commands)
    }
}

/// What a [`RecordingTc`] was asked to run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TcCall {
    Batch { netns: String, commands: Vec<String> },
}

/// A fake `tc`: records batches in a [`Journal`]; refuses those of chosen namespaces.
#[derive(Debug)]
pub struct RecordingTc {
    journal: Journal,
    refused: Refusals,
}

impl RecordingTc {
    pub fn new(journal: &Journal) -> Self {
        Self {
            journal: journal.clone(),
            refused: Refusals::default(),
        }
    }

    /// Batches in namespace `netns` fail from now on.
    pub fn refuse(&self, netns: &str) {
        self.refused.add(netns);
    }
}

impl TrafficControl for RecordingTc {
    fn batch(&self, netns: &str, commands: &[String]) -> Result<(), TcError> {
        if self.refused.refuses(netns) {
            return Err(TcError::Failed {
                netns: netns.to_string(),
                stderr: "refused by the fake".into(),
                commands: commands.join("\n"),
            });
        }
        if !commands.is_empty() {
            self.journal.push(Recorded::Tc(TcCall::Batch {
                netns: netns.to_string(),
                commands: commands.to_vec(),
            }));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fake_records_batches_and_refuses_chosen_namespaces() {
        let journal = Journal::new();
        let t = RecordingTc::new(&journal);
        let lines = tc::rate("eth0", Some(10_000_000), 1500);
        t.batch("a", &lines).unwrap();
        t.batch("a", &[]).unwrap();
        t.refuse("b");
        let err = t.batch("b", &lines).unwrap_err();
        assert!(err.to_string().contains("namespace b"), "{err}");
        assert_eq!(
            journal.take(),
            vec![Recorded::Tc(TcCall::Batch {
                netns: "a".into(),
                commands: lines
            })],
            "an empty batch runs nothing, a refused one is not recorded"
        );
    }
}
