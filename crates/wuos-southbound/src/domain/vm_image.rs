//! The guest image of a `vm` domain: the host's own kernel, uncompressed (QEMU's `microvm`
//! boots an ELF `vmlinux` through PVH), and a small initramfs holding a static busybox, the
//! kernel modules the guest needs (virtio-mmio, virtio-net, virtio-console, 9p) in load order,
//! and the wuos guest init ([`GUEST_INIT`]).
//!
//! Both are built once per kernel release into a cache directory and reused; a build writes a
//! temporary file and renames it, so concurrent daemons never see half an image.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Modules the guest loads (with their dependencies, resolved from `modules.dep`).
pub const GUEST_MODULES: [&str; 5] = ["virtio_mmio", "virtio_net", "virtio_console", "9pnet_virtio", "9p"];

/// The wuos guest init: PID 1 of a `vm` domain (busybox `sh`). It loads the modules, configures
/// the network from the kernel command line (`wuos.addr=A/P wuos.gw=G wuos.vips=V,V`), mounts the
/// host filesystem read-only (9p tag `hostroot`) with private `/tmp` and `/run`, mounts the
/// domain's run directory (9p tag `rundir`) at `/run/domain`, runs `/run/domain/vm.run` chrooted
/// into the host view, and powers off when it exits. It reports on the run directory
/// (`vm.ready`, `vm.exit`, `vm.error`) and listens on the virtio-serial port `wuos.control`
/// (`stop` ends the command).
pub const GUEST_INIT: &str = r#"#!/bin/busybox sh
# wuos guest init (PID 1 of a wuos vm domain).
/bin/busybox mkdir -p /proc /sys /dev /usr/bin /usr/sbin /sbin
/bin/busybox --install -s
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
R=/host/run/domain
say() { echo "wuos-init: $*"; }
fail() { say "$*"; echo "$*" > $R/vm.error 2>/dev/null; sync; reboot -f; }
for m in $(cat /modules.load); do insmod "/lib/modules/$m.ko" || fail "cannot load module $m"; done
addr=; gw=; vips=
for kv in $(cat /proc/cmdline); do
  case "$kv" in
    wuos.addr=*) addr="${kv#wuos.addr=}";;
    wuos.gw=*) gw="${kv#wuos.gw=}";;
    wuos.vips=*) vips="${kv#wuos.vips=}";;
  esac
done
mkdir -p /host
mount -t 9p -o trans=virtio,version=9p2000.L,ro hostroot /host || fail "cannot mount the host filesystem (9p hostroot)"
mount -t tmpfs tmpfs /host/tmp
mount -t tmpfs tmpfs /host/run
mkdir -p $R
mount -t 9p -o trans=virtio,version=9p2000.L rundir $R || fail "cannot mount the run directory (9p rundir)"
mount -t proc proc /host/proc
mount -t sysfs sysfs /host/sys
mount -t devtmpfs devtmpfs /host/dev
ip link set lo up
if [ -n "$addr" ]; then
  ip link set eth0 up || fail "no eth0 (virtio-net)"
  ip addr add "$addr" dev eth0 || fail "cannot put $addr on eth0"
  if [ -n "$gw" ]; then ip route add default via "$gw" || fail "cannot route via $gw"; fi
fi
for v in $(echo "$vips" | tr , ' '); do ip addr add "$v/32" dev lo || fail "cannot put VIP $v on lo"; done
port=
for p in /sys/class/virtio-ports/*; do
  [ "$(cat "$p/name" 2>/dev/null)" = wuos.control ] && port="/dev/${p##*/}"
done
chroot /host /bin/sh /run/domain/vm.run > $R/guest.log 2>&1 &
child=$!
cut -d' ' -f1 /proc/uptime > $R/vm.ready
# The port reads end-of-file while the daemon is not connected: poll for it.
if [ -n "$port" ]; then
  ( while :; do
      if read -r cmd < "$port"; then
        case "$cmd" in stop) say "stop requested"; kill -TERM "$child";; esac
      else
        sleep 0.2
      fi
    done ) &
fi
wait "$child"
echo $? > $R/vm.exit
sync
reboot -f
"#;

/// Errors of image preparation; each names the file involved.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error(
        "no kernel found: no /boot/vmlinuz-* with modules in {modules}; install linux-image-amd64 or set the kernel path"
    )]
    NoKernel { modules: PathBuf },
    #[error("cannot read {path}: {error}")]
    Read { path: PathBuf, error: io::Error },
    #[error("cannot write {path}: {error}")]
    Write { path: PathBuf, error: io::Error },
    #[error("{path} is neither an ELF vmlinux nor a bzImage with an xz, gzip or zstd payload")]
    UnknownKernel { path: PathBuf },
    #[error("cannot decompress the kernel {path} with {tool}: {reason} (is {tool} installed?)")]
    Decompress {
        path: PathBuf,
        tool: &'static str,
        reason: String,
    },
    #[error("kernel module {module} is neither in {dep} nor built in; this kernel cannot run wuos vm guests")]
    NoModule { module: String, dep: PathBuf },
    #[error("kernel module {path} is compressed ({ext}); busybox insmod needs plain .ko files")]
    CompressedModule { path: PathBuf, ext: String },
    #[error("{path} is not a static binary; install busybox-static")]
    NotStatic { path: PathBuf },
}

/// A built guest image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GuestImage {
    /// Kernel release, e.g. `6.1.0-56-amd64`.
    pub release: String,
    /// The uncompressed ELF kernel.
    pub kernel: PathBuf,
    /// The initramfs (newc cpio).
    pub initramfs: PathBuf,
}

/// Where the inputs come from.
#[derive(Clone, Debug)]
pub struct ImageSources {
    /// The kernel (bzImage or ELF); `None`: the newest `/boot/vmlinuz-*` with modules.
    pub kernel: Option<PathBuf>,
    /// `/boot`, searched when `kernel` is `None`.
    pub boot_dir: PathBuf,
    /// `/lib/modules`.
    pub modules_dir: PathBuf,
    /// A static busybox, `/bin/busybox` from busybox-static.
    pub busybox: PathBuf,
}

impl Default for ImageSources {
    fn default() -> Self {
        Self {
            kernel: None,
            boot_dir: "/boot".into(),
            modules_dir: "/lib/modules".into(),
            busybox: "/bin/busybox".into(),
        }
    }
}

/// Builds (or finds in `cache_dir`) the guest image.
pub fn prepare(src: &ImageSources, cache_dir: &Path) -> Result<GuestImage, ImageError> {
    let (kernel_src, release) = find_kernel(src)?;
    fs::create_dir_all(cache_dir).map_err(|error| ImageError::Write {
        path: cache_dir.to_owned(),
        error,
    })?;
    let kernel = cache_dir.join(format!("vmlinux-{release}"));
    if !kernel.exists() {
        let elf = kernel_elf(&kernel_src)?;
        write_atomically(&kernel, &elf)?;
    }
    let modules = src.modules_dir.join(&release);
    let busybox = read(&src.busybox)?;
    if !is_static_elf(&busybox) {
        return Err(ImageError::NotStatic {
            path: src.busybox.clone(),
        });
    }
    let order = module_order(&modules, &GUEST_MODULES)?;
    // The cache key covers what goes in: a changed init or module set makes a new file.
    let key = fnv64(GUEST_INIT.as_bytes()) ^ fnv64(order.join(",").as_bytes()) ^ fnv64(&busybox);
    let initramfs = cache_dir.join(format!("initramfs-{release}-{key:016x}.cpio"));
    if !initramfs.exists() {
        let mut cpio = Cpio::default();
        for d in ["bin", "dev", "proc", "sys", "host", "tmp", "run", "lib", "lib/modules"] {
            cpio.dir(d);
        }
        cpio.char_dev("dev/console", 5, 1);
        cpio.file("bin/busybox", 0o755, &busybox);
        cpio.file("init", 0o755, GUEST_INIT.as_bytes());
        let mut load = String::new();
        for rel in &order {
            let path = modules.join(rel);
            let name = module_name(rel);
            cpio.file(&format!("lib/modules/{name}.ko"), 0o644, &read(&path)?);
            load.push_str(&name);
            load.push('\n');
        }
        cpio.file("modules.load", 0o644, load.as_bytes());
        write_atomically(&initramfs, &cpio.finish())?;
    }
    Ok(GuestImage {
        release,
        kernel,
        initramfs,
    })
}

fn read(path: &Path) -> Result<Vec<u8>, ImageError> {
    fs::read(path).map_err(|error| ImageError::Read {
        path: path.to_owned(),
        error,
    })
}

fn write_atomically(path: &Path, data: &[u8]) -> Result<(), ImageError> {
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let werr = |error| ImageError::Write {
        path: path.to_owned(),
        error,
    };
    fs::write(&tmp, data).map_err(werr)?;
    fs::rename(&tmp, path).map_err(|e| {
        let _ = fs::remove_file(&tmp);
        werr(e)
    })
}

/// The kernel to boot and its release (the part of the file name after `vmlinuz-`, which names
/// its modules directory).
fn find_kernel(src: &ImageSources) -> Result<(PathBuf, String), ImageError> {
    if let Some(k) = &src.kernel {
        let file = k
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_default();
        let release = file
            .strip_prefix("vmlinuz-")
            .or_else(|| file.strip_prefix("vmlinux-"))
            .unwrap_or(&file)
            .to_owned();
        return Ok((k.clone(), release));
    }
    let mut found: Vec<(String, PathBuf)> = fs::read_dir(&src.boot_dir)
        .map_err(|error| ImageError::Read {
            path: src.boot_dir.clone(),
            error,
        })?
        .filter_map(Result::ok)
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let release = name.strip_prefix("vmlinuz-")?.to_owned();
            src.modules_dir
                .join(&release)
                .join("modules.dep")
                .exists()
                .then(|| (release, e.path()))
        })
        .collect();
    found.sort_by_key(|a| version_key(&a.0));
    found.pop().map(|(r, p)| (p, r)).ok_or_else(|| ImageError::NoKernel {
        modules: src.modules_dir.clone(),
    })
}

/// Orders releases like `6.1.0-56-amd64` numerically part by part.
fn version_key(release: &str) -> Vec<u64> {
    release
        .split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .filter_map(|s| s.parse().ok())
        .collect()
}

fn is_elf(data: &[u8]) -> bool {
    data.starts_with(b"\x7fELF")
}

/// An ELF without a `PT_INTERP` program header (statically linked).
fn is_static_elf(data: &[u8]) -> bool {
    if !is_elf(data) || data.len() < 64 || data[4] != 2 {
        return false;
    }
    let u64_at = |o: usize| {
        data.get(o..o + 8)
            .map(|b| u64::from_le_bytes(b.try_into().unwrap_or([0; 8])))
    };
    let u16_at = |o: usize| data.get(o..o + 2).map(|b| u16::from_le_bytes([b[0], b[1]]));
    let (Some(phoff), Some(phentsize), Some(phnum)) = (u64_at(32), u16_at(54), u16_at(56)) else {
        return false;
    };
    (0..usize::from(phnum)).all(|i| {
        let off = phoff as usize + i * usize::from(phentsize);
        data.get(off..off + 4).is_some_and(|t| t != [3, 0, 0, 0])
    })
}

/// The uncompressed kernel: the file itself if it is ELF, else the payload of the bzImage,
/// decompressed by the tool its magic names.
fn kernel_elf(path: &Path) -> Result<Vec<u8>, ImageError> {
    let data = read(path)?;
    if is_elf(&data) {
        return Ok(data);
    }
    let formats: [(&[u8], &'static str, &[&str]); 3] = [
        (b"\xfd7zXZ\x00", "xz", &["-dc", "--single-stream"]),
        (b"\x28\xb5\x2f\xfd", "zstd", &["-dcq"]),
        (b"\x1f\x8b\x08", "gzip", &["-dc"]),
    ];
    for (magic, tool, args) in formats {
        let mut from = 0;
        while let Some(at) = find(&data[from..], magic).map(|i| from + i) {
            if let Ok(out) = decompress(tool, args, &data[at..])
                && is_elf(&out)
            {
                return Ok(out);
            }
            from = at + 1;
        }
    }
    // Nothing decompressed to an ELF: say so, or name the missing tool if one is missing.
    Err(match which_missing(&["xz", "zstd", "gzip"]) {
        Some(tool) => ImageError::Decompress {
            path: path.to_owned(),
            tool,
            reason: "the tool is not installed".into(),
        },
        None => ImageError::UnknownKernel { path: path.to_owned() },
    })
}

fn which_missing(tools: &[&'static str]) -> Option<&'static str> {
    tools.iter().copied().find(|t| {
        Command::new(t)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_err()
    })
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn decompress(tool: &str, args: &[&str], input: &[u8]) -> io::Result<Vec<u8>> {
    let mut child = Command::new(tool)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let mut stdin = child.stdin.take().ok_or_else(|| io::Error::other("no stdin"))?;
    let input = input.to_vec();
    // Feed from a thread: the tool's output fills its pipe long before the input is consumed.
    let feeder = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let out = child.wait_with_output()?;
    let _ = feeder.join();
    // Trailing bytes after the stream make some tools exit non-zero: the output is what counts.
    Ok(out.stdout)
}

/// Module paths (relative to the modules directory) to load, dependencies first.
fn module_order(modules: &Path, wanted: &[&str]) -> Result<Vec<String>, ImageError> {
    let dep_path = modules.join("modules.dep");
    let dep = fs::read_to_string(&dep_path).map_err(|error| ImageError::Read {
        path: dep_path.clone(),
        error,
    })?;
    let builtin = fs::read_to_string(modules.join("modules.builtin")).unwrap_or_default();
    let builtin: BTreeSet<String> = builtin.lines().map(module_name).collect();
    let mut deps: BTreeMap<String, (String, Vec<String>)> = BTreeMap::new();
    for line in dep.lines() {
        let Some((path, rest)) = line.split_once(':') else {
            continue;
        };
        deps.insert(
            module_name(path),
            (path.to_owned(), rest.split_whitespace().map(module_name).collect()),
        );
    }
    let mut order = Vec::new();
    let mut seen = BTreeSet::new();
    fn visit(
        m: &str,
        deps: &BTreeMap<String, (String, Vec<String>)>,
        seen: &mut BTreeSet<String>,
        order: &mut Vec<String>,
    ) {
        if !seen.insert(m.to_owned()) {
            return;
        }
        if let Some((path, ds)) = deps.get(m) {
            for d in ds {
                visit(d, deps, seen, order);
            }
            order.push(path.clone());
        }
    }
    for m in wanted {
        let m = m.replace('-', "_");
        if !deps.contains_key(&m) {
            if builtin.contains(&m) {
                continue;
            }
            return Err(ImageError::NoModule {
                module: m,
                dep: dep_path,
            });
        }
        visit(&m, &deps, &mut seen, &mut order);
    }
    for rel in &order {
        if !rel.ends_with(".ko") {
            let ext = rel.rsplit('.').next().unwrap_or_default().to_owned();
            return Err(ImageError::CompressedModule {
                path: modules.join(rel),
                ext,
            });
        }
    }
    Ok(order)
}

/// `kernel/fs/9p/9p.ko` → `9p`; module names use `_` where files may use `-`.
fn module_name(path: &str) -> String {
    let file = path.rsplit('/').next().unwrap_or(path);
    let stem = file.split(".ko").next().unwrap_or(file);
    stem.replace('-', "_")
}

fn fnv64(data: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in data {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// A newc ("070701") cpio archive, as the kernel unpacks an initramfs.
#[derive(Default)]
struct Cpio {
    out: Vec<u8>,
    ino: u32,
}

impl Cpio {
    fn entry(&mut self, name: &str, mode: u32, rdev: (u32, u32), data: &[u8]) {
        self.ino += 1;
        let fields = [
            self.ino,
            mode,
            0,
            0,
            if mode & 0o170000 == 0o040000 { 2 } else { 1 },
            0,
            data.len() as u32,
            0,
            0,
            rdev.0,
            rdev.1,
            name.len() as u32 + 1,
            0,
        ];
        self.out.extend_from_slice(b"070701");
        for f in fields {
            self.out.extend_from_slice(format!("{f:08x}").as_bytes());
        }
        self.out.extend_from_slice(name.as_bytes());
        self.out.push(0);
        self.pad();
        self.out.extend_from_slice(data);
        self.pad();
    }

    fn pad(&mut self) {
        while !self.out.len().is_multiple_of(4) {
            self.out.push(0);
        }
    }

    fn dir(&mut self, name: &str) {
        self.entry(name, 0o040755, (0, 0), &[]);
    }

    fn file(&mut self, name: &str, perm: u32, data: &[u8]) {
        self.entry(name, 0o100000 | perm, (0, 0), data);
    }

    fn char_dev(&mut self, name: &str, major: u32, minor: u32) {
        self.entry(name, 0o020600, (major, minor), &[]);
    }

    fn finish(mut self) -> Vec<u8> {
        self.entry("TRAILER!!!", 0, (0, 0), &[]);
        // The kernel reads the archive in 512-byte blocks.
        while !self.out.len().is_multiple_of(512) {
            self.out.push(0);
        }
        self.out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn module_names_normalise_paths_and_dashes() {
        assert_eq!(module_name("kernel/fs/9p/9p.ko"), "9p");
        assert_eq!(module_name("kernel/drivers/net/virtio-net.ko"), "virtio_net");
        assert_eq!(module_name("kernel/drivers/virtio/virtio_mmio.ko.xz"), "virtio_mmio");
    }

    #[test]
    fn modules_load_after_their_dependencies_and_builtins_are_skipped() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(
            dir.path().join("modules.dep"),
            "kernel/virtio_mmio.ko: kernel/virtio.ko kernel/virtio_ring.ko\n\
             kernel/virtio.ko: kernel/virtio_ring.ko\nkernel/virtio_ring.ko:\n\
             kernel/virtio_net.ko: kernel/net_failover.ko kernel/failover.ko kernel/virtio.ko kernel/virtio_ring.ko\n\
             kernel/net_failover.ko: kernel/failover.ko\nkernel/failover.ko:\n",
        )
        .unwrap();
        fs::write(dir.path().join("modules.builtin"), "kernel/fs/9p/9p.ko\n").unwrap();
        let order = module_order(dir.path(), &["virtio_mmio", "virtio_net", "9p"]).unwrap();
        let pos = |m: &str| order.iter().position(|p| p == &format!("kernel/{m}.ko")).unwrap();
        assert!(pos("virtio_ring") < pos("virtio"));
        assert!(pos("virtio") < pos("virtio_mmio"));
        assert!(pos("failover") < pos("net_failover"));
        assert!(pos("net_failover") < pos("virtio_net"));
        assert_eq!(order.len(), 6, "each module once: {order:?}");
        let err = module_order(dir.path(), &["nosuch"]).unwrap_err().to_string();
        assert!(err.contains("nosuch") && err.contains("built in"), "{err}");
    }

    #[test]
    fn cpio_entries_are_aligned_newc_with_a_trailer() {
        let mut c = Cpio::default();
        c.dir("bin");
        c.file("init", 0o755, b"#!/bin/sh\n");
        let out = c.finish();
        assert!(out.starts_with(b"070701"));
        assert_eq!(out.len() % 512, 0);
        let text = String::from_utf8_lossy(&out);
        assert!(text.contains("TRAILER!!!") && text.contains("#!/bin/sh"));
        // The second header starts on a 4-byte boundary right after the first entry.
        let second = find(&out[6..], b"070701").unwrap() + 6;
        assert_eq!(second % 4, 0);
    }

    #[test]
    fn static_and_dynamic_elves_are_told_apart() {
        assert!(!is_static_elf(b"not an elf"));
        // This test binary is dynamically linked (it has an interpreter).
        let me = fs::read(std::env::current_exe().unwrap()).unwrap();
        assert!(!is_static_elf(&me));
        if let Ok(bb) = fs::read("/bin/busybox")
            && Command::new("ldd")
                .arg("/bin/busybox")
                .output()
                .is_ok_and(|o| !o.status.success())
        {
            assert!(is_static_elf(&bb), "busybox-static is static");
        }
    }

    #[test]
    fn releases_sort_numerically() {
        let mut v = ["6.1.0-9-amd64", "6.1.0-56-amd64", "5.10.0-1-amd64"];
        v.sort_by_key(|r| version_key(r));
        assert_eq!(v, ["5.10.0-1-amd64", "6.1.0-9-amd64", "6.1.0-56-amd64"]);
    }

    #[test]
    fn an_elf_kernel_is_taken_as_it_is_and_garbage_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let elf = dir.path().join("vmlinux-test");
        fs::write(&elf, b"\x7fELF\x02rest").unwrap();
        assert_eq!(kernel_elf(&elf).unwrap(), b"\x7fELF\x02rest");
        let junk = dir.path().join("vmlinuz-junk");
        fs::write(&junk, b"MZ nothing compressed here").unwrap();
        let err = kernel_elf(&junk).unwrap_err().to_string();
        assert!(err.contains("vmlinuz-junk"), "{err}");
    }
}
