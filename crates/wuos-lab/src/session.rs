//! A working session on a lab: one async runtime, a netlink socket in the host namespace (which
//! creates veth pairs directly in their target namespaces) and one per lab namespace in use.

use std::collections::HashMap;
use std::fs::File;
use std::os::fd::AsFd;

use wuos_southbound::netlink::{Netlink, VethEnd};
use wuos_southbound::netns;

use crate::env::LabEnv;
use crate::error::LabError;

pub(crate) struct Session<'a> {
    pub env: &'a LabEnv,
    pub rt: tokio::runtime::Runtime,
    pub root: Netlink,
    pub ns: HashMap<String, (File, Netlink)>,
}

impl<'a> Session<'a> {
    pub fn new(env: &'a LabEnv) -> Result<Self, LabError> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(LabError::Runtime)?;
        let root = Netlink::connect_here(rt.handle())?;
        Ok(Self {
            env,
            rt,
            root,
            ns: HashMap::new(),
        })
    }

    /// Opens an existing namespace of the lab and a netlink socket inside it (once per session).
    pub fn attach(&mut self, name: &str) -> Result<&(File, Netlink), LabError> {
        if !self.ns.contains_key(name) {
            let file = netns::open(&self.env.netns_dir, name)?;
            let handle = self.rt.handle().clone();
            let nl = netns::run_in(&file, || Netlink::connect_here(&handle))??;
            self.ns.insert(name.to_string(), (file, nl));
        }
        Ok(&self.ns[name])
    }

    pub fn nl(&self, name: &str) -> &Netlink {
        &self.ns[name].1
    }

    /// Creates a veth pair between two attached namespaces.
    pub fn veth(
        &self,
        (ns_a, name_a, idx_a, mac_a): (&str, &str, u32, [u8; 6]),
        (ns_b, name_b, idx_b, mac_b): (&str, &str, u32, [u8; 6]),
        mtu: Option<u32>,
    ) -> Result<(), LabError> {
        let a = VethEnd {
            netns: self.ns[ns_a].0.as_fd(),
            name: name_a,
            index: idx_a,
            mac: mac_a,
        };
        let b = VethEnd {
            netns: self.ns[ns_b].0.as_fd(),
            name: name_b,
            index: idx_b,
            mac: mac_b,
        };
        Ok(self.rt.block_on(self.root.add_veth(a, b, mtu))?)
    }
}
