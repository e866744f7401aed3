//! Whether a privileged test may run, the same way in every crate: root runs it; otherwise it is
//! skipped with a printed reason, except under `CI=true`, where a skip is a failure.

/// Returns true when `test` may run; prints why not, or panics under `CI=true`.
pub fn may_run_privileged(test: &str) -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    let msg = format!("{test}: skipped, needs root (network namespaces, cgroups, raw sockets)");
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{msg}; CI=true forbids skipping");
    }
    eprintln!("{msg}");
    false
}
