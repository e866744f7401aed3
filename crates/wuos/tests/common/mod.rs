//! Helpers shared by the CLI integration tests (each test file uses a part of them).
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The `wuos` binary, with `WUOSD_EXE` pointing at the `wuosd` built beside it.
pub fn wuos() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_wuos"));
    c.env("WUOSD_EXE", wuosd_exe());
    c
}

/// `target/…/wuosd`; the test script builds every binary before the tests.
pub fn wuosd_exe() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_wuos")).with_file_name("wuosd")
}

pub fn run(args: &[&str]) -> Output {
    wuos().args(args).output().expect("the wuos binary runs")
}

/// Runs `wuos ARGS`, asserts it succeeded and returns its stdout.
pub fn ok(args: &[&str]) -> String {
    let out = run(args);
    assert!(
        out.status.success(),
        "wuos {args:?} failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Takes lab `0` down when dropped, even when the test panics.
pub struct Down(pub &'static str);

impl Drop for Down {
    fn drop(&mut self) {
        let _ = run(&["lab", "down", self.0]);
    }
}

/// Runs `f` on a thread inside router `node`'s namespace (its sockets live there).
pub fn in_router<R: Send>(lab: &str, node: &str, f: impl FnOnce() -> R + Send) -> R {
    let ns = wuos_southbound::netns::open(Path::new("/run/netns"), &format!("wuos.{lab}.{node}"))
        .unwrap_or_else(|e| panic!("router {node} of lab {lab}: {e}"));
    wuos_southbound::netns::run_in(&ns, f).expect("entering the router's namespace")
}

/// The Prometheus text of the wuosd listening on `addr:9470`, fetched from inside router `from`
/// (the lab's metrics endpoints are on its routers' loopbacks).
pub fn scrape_metrics(lab: &str, from: &str, addr: &str) -> String {
    let text = in_router(lab, from, || {
        use std::io::{Read, Write};
        let mut conn = std::net::TcpStream::connect((addr, 9470))?;
        conn.write_all(b"GET /metrics HTTP/1.0\r\n\r\n")?;
        let mut body = String::new();
        conn.read_to_string(&mut body)?;
        Ok::<_, std::io::Error>(body)
    })
    .unwrap_or_else(|e| panic!("the metrics endpoint {addr}:9470 answers from inside {from}: {e}"));
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    text
}

/// Pids of the wuosd of router `node` in lab `lab` (found by its config path).
pub fn daemon_pids(lab: &str, node: &str) -> Vec<i32> {
    let config = format!("/labs/{lab}/daemons/{node}.toml");
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|p| {
            std::fs::read_to_string(format!("/proc/{p}/comm")).is_ok_and(|c| c.trim() == "wuosd")
                && std::fs::read(format!("/proc/{p}/cmdline"))
                    .is_ok_and(|c| String::from_utf8_lossy(&c).contains(&config))
        })
        .collect()
}

/// Polls `f` every 250 ms until it gives a value, or fails after `within` saying `what` and
/// what `diagnosis` shows of the lab then.
#[allow(dead_code)]
pub fn wait_until_or<T>(
    what: &str,
    within: std::time::Duration,
    diagnosis: impl Fn() -> String,
    mut f: impl FnMut() -> Option<T>,
) -> T {
    let deadline = std::time::Instant::now() + within;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "timed out after {within:?}: {what}\n{}",
            diagnosis()
        );
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
}

/// SIGKILLs `node`'s daemon and waits until the supervisor's new one is `ready`.
#[allow(dead_code)]
pub fn kill_daemon(lab: &str, node: &str, ready: impl Fn() -> bool) {
    let old = daemon_pids(lab, node);
    assert_eq!(old.len(), 1, "{node}'s daemons: {old:?}");
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(old[0]), nix::sys::signal::Signal::SIGKILL).unwrap();
    wait_until_or(
        &format!("{node}'s daemon restarted"),
        std::time::Duration::from_secs(20),
        || ok(&["lab", "status", lab]),
        || {
            let now = daemon_pids(lab, node);
            (now.len() == 1 && now != old && ready()).then_some(())
        },
    );
}
