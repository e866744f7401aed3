//! The journal the recording fakes write to: every change a fake was asked to make, in the order
//! the fakes saw them. Fakes built on one [`Journal`] share it, so a test of code that drives
//! several traits (the lab's executor) sees one sequence across all of them.
//!
//! A refused change (a fake told to fail) is not recorded: the journal holds what would have
//! changed on a real host.

use std::sync::{Arc, Mutex, MutexGuard};

use crate::addresses::AddressCall;
use crate::cgroups::CgroupCall;
use crate::links::LinkCall;
use crate::namespaces::NamespaceCall;
use crate::offloads::OffloadCall;
use crate::routes::RouteCall;
use crate::sysctls::SysctlCall;
use crate::traffic::TcCall;

/// One recorded change. Calls made on a socket carry the namespace of the socket.
#[derive(Clone, Debug, PartialEq)]
pub enum Recorded {
    Namespace(NamespaceCall),
    /// A sysctl of the calling thread's namespace (the one being created, when the executor sets it).
    Sysctl(SysctlCall),
    Link {
        netns: String,
        call: LinkCall,
    },
    Address {
        netns: String,
        call: AddressCall,
    },
    Route {
        netns: String,
        call: RouteCall,
    },
    Tc(TcCall),
    Cgroup(CgroupCall),
    Offload(OffloadCall),
}

/// A shared, ordered list of [`Recorded`] changes. Cloning shares it.
#[derive(Clone, Debug, Default)]
pub struct Journal(Arc<Mutex<Vec<Recorded>>>);

impl Journal {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, Vec<Recorded>> {
        // A test that panicked while holding the lock has failed already.
        self.0.lock().expect("journal lock")
    }

    pub fn push(&self, r: Recorded) {
        self.lock().push(r);
    }

    /// Everything recorded so far, and forgets it.
    pub fn take(&self) -> Vec<Recorded> {
        std::mem::take(&mut *self.lock())
    }
}

/// Targets (names, paths, keys) a fake refuses to change; shared by the fakes' `refuse` methods.
#[derive(Debug, Default)]
pub(crate) struct Refusals(Mutex<Vec<String>>);

impl Refusals {
    pub(crate) fn add(&self, target: &str) {
        self.0.lock().expect("refusals lock").push(target.to_string());
    }

    pub(crate) fn refuses(&self, target: &str) -> bool {
        self.0.lock().expect("refusals lock").iter().any(|t| t == target)
    }
}
