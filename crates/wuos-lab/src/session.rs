//! A working session on a lab: the Linux implementations of the executor's [`Host`], and the
//! async runtime that drives their netlink sockets (one in the host namespace, which creates veth
//! pairs directly in their target namespaces, and one per lab namespace in use).

use wuos_southbound::cgroups::HostCgroups;
use wuos_southbound::namespaces::LinuxNamespaces;
use wuos_southbound::offloads::Ethtool;
use wuos_southbound::sysctls::ProcSys;
use wuos_southbound::traffic::TcBinary;

use crate::env::LabEnv;
use crate::error::LabError;
use crate::execute::Host;
use crate::relays::RelayProcesses;

pub(crate) struct Session<'a> {
    pub namespaces: LinuxNamespaces,
    pub sysctls: ProcSys,
    pub cgroups: HostCgroups,
    pub tc: TcBinary,
    pub offloads: Ethtool,
    pub relays: RelayProcesses<'a>,
    /// Last: dropped after the sockets it drives.
    _rt: tokio::runtime::Runtime,
}

impl<'a> Session<'a> {
    /// A session on lab `lab`, with every path from `env`.
    pub fn new(env: &'a LabEnv, lab: &str) -> Result<Self, LabError> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(LabError::Runtime)?;
        Ok(Self {
            namespaces: LinuxNamespaces::new(&env.netns_dir, rt.handle())?,
            sysctls: ProcSys::new(&env.proc_root.join("sys")),
            cgroups: HostCgroups::detect(&env.cgroup_root, &env.proc_root)?,
            tc: TcBinary,
            offloads: Ethtool::new(&env.netns_dir),
            relays: RelayProcesses::new(env, lab),
            _rt: rt,
        })
    }

    pub fn host(&self) -> Host<'_, LinuxNamespaces> {
        Host {
            namespaces: &self.namespaces,
            sysctls: &self.sysctls,
            cgroups: &self.cgroups,
            tc: &self.tc,
            offloads: &self.offloads,
            relays: &self.relays,
        }
    }
}
