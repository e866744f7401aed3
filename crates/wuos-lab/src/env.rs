//! Where a lab lives on the host. Every path is a parameter so tests can use temp dirs; the
//! defaults can be overridden with environment variables.

use std::path::PathBuf;

/// Host paths and programs the lab uses.
#[derive(Clone, Debug)]
pub struct LabEnv {
    /// Lab state, one directory per lab (`WUOS_STATE_DIR`, default `/run/wuos`). `/run` is right:
    /// namespaces and cgroups do not survive a reboot either.
    pub state_dir: PathBuf,
    /// Named network namespaces (`/run/netns`, shared with iproute2).
    pub netns_dir: PathBuf,
    /// cgroup filesystem root (`WUOS_CGROUP_ROOT`, default `/sys/fs/cgroup`).
    pub cgroup_root: PathBuf,
    /// procfs (`/proc`).
    pub proc_root: PathBuf,
    /// The `wuos` executable, started as `wuos lab relay …` for links with delay, jitter or loss.
    pub relay_exe: PathBuf,
    /// The router daemon (`WUOSD_EXE`, default: `wuosd` next to the `wuos` executable).
    pub wuosd_exe: PathBuf,
    /// The VNF catalog (`WUOS_CATALOG`, default: a `catalog` directory beside or above the
    /// executable — the repository's when run from `target/`).
    pub catalog_dir: Option<PathBuf>,
}

impl LabEnv {
    /// The host's paths, with environment overrides.
    pub fn system() -> Self {
        let var = |k: &str, d: &str| std::env::var_os(k).map_or_else(|| PathBuf::from(d), PathBuf::from);
        let relay_exe = std::env::var_os("WUOS_EXE")
            .map(PathBuf::from)
            .or_else(|| std::env::current_exe().ok())
            .unwrap_or_else(|| PathBuf::from("wuos"));
        let wuosd_exe = std::env::var_os("WUOSD_EXE")
            .map(PathBuf::from)
            .unwrap_or_else(|| relay_exe.with_file_name("wuosd"));
        let catalog_dir = std::env::var_os("WUOS_CATALOG").map(PathBuf::from).or_else(|| {
            relay_exe
                .ancestors()
                .skip(1)
                .take(4)
                .map(|d| d.join("catalog"))
                .find(|c| c.join("stress.toml").exists())
        });
        Self {
            state_dir: var("WUOS_STATE_DIR", "/run/wuos"),
            netns_dir: PathBuf::from("/run/netns"),
            cgroup_root: var("WUOS_CGROUP_ROOT", "/sys/fs/cgroup"),
            proc_root: PathBuf::from("/proc"),
            relay_exe,
            wuosd_exe,
            catalog_dir,
        }
    }

    pub fn labs_dir(&self) -> PathBuf {
        self.state_dir.join("labs")
    }

    pub fn lab_dir(&self, lab: &str) -> PathBuf {
        self.labs_dir().join(lab)
    }
}
