//! Processes a lab starts and leaves running (link relays, the daemon supervisor, daemons): their
//! output goes to a file in the lab's log directory.

use std::fs::{File, OpenOptions};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};

use crate::env::LabEnv;
use crate::error::LabError;
use crate::state::LabState;

fn io(what: String) -> impl FnOnce(std::io::Error) -> LabError {
    move |source| LabError::Io { what, source }
}

/// Opens (appending) `LAB_DIR/logs/NAME.log`.
pub(crate) fn log_file(env: &LabEnv, lab: &str, name: &str) -> Result<File, LabError> {
    let dir = LabState::log_dir(env, lab);
    std::fs::create_dir_all(&dir).map_err(io(format!("cannot create {}", dir.display())))?;
    let path = dir.join(format!("{name}.log"));
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .map_err(io(format!("cannot open {}", path.display())))
}

/// Spawns `cmd` with no stdin and its output to `log`. `detached` puts it in its own process
/// group, so a ^C on the terminal that started the lab does not reach it.
pub(crate) fn spawn_logged(mut cmd: Command, log: File, detached: bool, what: &str) -> Result<Child, LabError> {
    let err = || io(format!("cannot start {what}"));
    cmd.stdin(Stdio::null())
        .stdout(log.try_clone().map_err(err())?)
        .stderr(log);
    if detached {
        cmd.process_group(0);
    }
    cmd.spawn().map_err(err())
}
