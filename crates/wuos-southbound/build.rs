//! Builds the XDP classifier (`bpf/classifier.c` at the workspace root) with
//! `clang -O2 -g -target bpf` into `OUT_DIR/classifier.o`, which `src/xdp.rs` embeds.
//!
//! Needs `clang` and the kernel's UAPI headers (Debian: `clang`, `linux-libc-dev`); no libbpf.
//! `WUOS_CLANG` names another clang.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    let manifest = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let src = manifest.join("../../bpf/classifier.c");
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR")).join("classifier.o");
    println!("cargo:rerun-if-changed={}", src.display());
    println!("cargo:rerun-if-env-changed=WUOS_CLANG");
    let clang = std::env::var("WUOS_CLANG").unwrap_or_else(|_| "clang".into());

    // `-target bpf` drops the host's multiarch include directory, where <asm/types.h> lives.
    let mut cmd = Command::new(&clang);
    cmd.args(["-O2", "-g", "-target", "bpf", "-Wall", "-Werror"]);
    if let Some(dir) = multiarch_include() {
        cmd.arg(format!("-I{dir}"));
    }
    cmd.arg("-c").arg(&src).arg("-o").arg(&out);
    let status = cmd
        .status()
        .unwrap_or_else(|e| panic!("cannot run {clang} to build {}: {e} (install clang)", src.display()));
    assert!(
        status.success(),
        "{clang} failed to build {} ({status}); the kernel headers come from linux-libc-dev",
        src.display()
    );
}

/// `/usr/include/<multiarch>` of the host, e.g. `/usr/include/x86_64-linux-gnu`.
fn multiarch_include() -> Option<String> {
    let arch = std::env::var("CARGO_CFG_TARGET_ARCH").ok()?;
    let env = std::env::var("CARGO_CFG_TARGET_ENV").unwrap_or_default();
    let triple = match (arch.as_str(), env.as_str()) {
        ("x86_64", "gnu") => "x86_64-linux-gnu",
        ("aarch64", "gnu") => "aarch64-linux-gnu",
        ("x86_64", "musl") => "x86_64-linux-musl",
        ("aarch64", "musl") => "aarch64-linux-musl",
        _ => return None,
    };
    let dir = format!("/usr/include/{triple}");
    std::path::Path::new(&dir).exists().then_some(dir)
}
