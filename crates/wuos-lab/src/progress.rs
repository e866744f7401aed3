//! Progress of long lab operations, reported through a trait so the library stays free of any
//! terminal code (the CLI draws a bar with indicatif; tests and the REST API use [`Silent`]).

pub trait Progress: Sync {
    /// A new stage with `total` steps starts.
    fn stage(&self, name: &str, total: u64);
    /// `n` more steps of the current stage are done.
    fn advance(&self, n: u64);
}

/// Reports nothing.
#[derive(Debug, Default)]
pub struct Silent;

impl Progress for Silent {
    fn stage(&self, _: &str, _: u64) {}
    fn advance(&self, _: u64) {}
}
