//! Test fixtures shared by the components' tests: a catalog, a store and domains on the
//! recording fake backend, in a temporary directory.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use wuos_model::admission::HostBudget;
use wuos_southbound::domain::{DomainBackend, FakeBackend};

use crate::config::DomainsConfig;
use crate::domains::Domains;
use crate::store::Store;

const ECHO: &str = r#"
name = "echo"
description = "echo"
command = ["wuos", "echo", "--port", "{port}"]
ports = [{ proto = "udp", port = 7 }]
vip = "10.255.0.7"
cpus = 0.2
memory = "32MiB"
restart = "on-failure:1"

[health]
kind = "udp"
port = 7
payload = "probe"
interval = "5s"
timeout = "500ms"
retries = 2
"#;

const PLAIN: &str = r#"
name = "plain"
description = "plain"
command = ["sleep", "1000"]
cpus = 0.2
memory = "32MiB"
restart = "never"
"#;

pub struct Fixture {
    pub dir: tempfile::TempDir,
    pub backend: Arc<FakeBackend>,
    pub store: Arc<Store>,
}

fn cfg(root: &Path, pool: u32) -> DomainsConfig {
    DomainsConfig {
        catalog: root.join("catalog"),
        run_dir: root.join("run"),
        router_netns: None,
        netns_dir: root.join("netns"),
        cgroup: "wuos/t/r1".into(),
        netns_prefix: "wuos.t.r1".into(),
        subnet: "10.253.0.0/26".parse().unwrap(),
        routing_cores: Vec::new(),
        routing_memory: None,
        control_domain: true,
        control_memory: None,
        pool,
        init_exe: Some("/bin/true".into()),
        params: BTreeMap::new(),
    }
}

fn budget() -> HostBudget {
    HostBudget {
        cpus: 2.0,
        cpu_ids: vec![0, 1],
        memory: 256 << 20,
    }
}

impl Fixture {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("catalog")).unwrap();
        std::fs::write(dir.path().join("catalog/echo.toml"), ECHO).unwrap();
        std::fs::write(dir.path().join("catalog/plain.toml"), PLAIN).unwrap();
        let store = Arc::new(Store::open(&dir.path().join("data")).unwrap());
        Self {
            dir,
            backend: Arc::new(FakeBackend::new()),
            store,
        }
    }

    pub fn open(&self, pool: u32) -> Domains {
        let backend: Arc<dyn DomainBackend> = self.backend.clone();
        Domains::open(
            cfg(self.dir.path(), pool),
            "/sys/fs/cgroup".into(),
            budget(),
            self.store.clone(),
            backend,
        )
        .unwrap()
    }
}
