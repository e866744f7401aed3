//! Privileged: the Linux implementations of the lab's traits against a real kernel, in two
//! namespaces of their own (`wuos.sbtest.PID.{a,b}`, deleted on drop): [`LinuxNamespaces`] with
//! sysctls set by [`ProcSys`] on the creating thread, [`Links`] and [`Addresses`] over netlink
//! (a veth pair born from the host socket directly in both namespaces), [`TcBinary`] and
//! [`Ethtool`]. What the kernel holds is read back with `ip`, `tc` and `ethtool`.

use std::path::Path;
use std::process::Command;

use wuos_southbound::addresses::Addresses;
use wuos_southbound::links::{Links, VethSide};
use wuos_southbound::namespaces::{LinuxNamespaces, NamespaceError, Namespaces};
use wuos_southbound::netns;
use wuos_southbound::offloads::{Ethtool, Offloads};
use wuos_southbound::privilege::may_run_privileged;
use wuos_southbound::sysctls::{ProcSys, Sysctls};
use wuos_southbound::tc;
use wuos_southbound::traffic::{TcBinary, TrafficControl};

const DIR: &str = "/run/netns";

struct Cleanup(Vec<String>);

impl Drop for Cleanup {
    fn drop(&mut self) {
        for n in &self.0 {
            let _ = netns::delete(Path::new(DIR), n);
        }
    }
}

/// `cmd args…` must succeed; its stdout.
fn out(cmd: &str, args: &[&str]) -> String {
    let o = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd}: {e}"));
    assert!(
        o.status.success(),
        "{cmd} {args:?} failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn namespaces_sysctls_links_addresses_tc_and_offloads_on_a_real_kernel() {
    if !may_run_privileged("namespaces") {
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let pid = std::process::id();
    let (na, nb) = (format!("wuos.sbtest.{pid}.a"), format!("wuos.sbtest.{pid}.b"));
    let _cleanup = Cleanup(vec![na.clone(), nb.clone()]);
    for n in [&na, &nb] {
        let _ = netns::delete(Path::new(DIR), n);
    }
    let spaces = LinuxNamespaces::new(Path::new(DIR), rt.handle()).unwrap();
    let sysctls = ProcSys::new(Path::new("/proc/sys"));

    // Sysctls set inside reach the new namespace, not the host.
    let host_forward = std::fs::read_to_string("/proc/sys/net/ipv4/ip_default_ttl").unwrap();
    let (fa, sa, set) = spaces
        .create(&na, || sysctls.set("net/ipv4/ip_default_ttl", "200"))
        .unwrap();
    set.unwrap();
    let (fb, sb, ()) = spaces.create(&nb, || ()).unwrap();
    assert!(matches!(
        spaces.create(&na, || ()),
        Err(NamespaceError::Netns(netns::NetnsError::Exists { .. }))
    ));
    let inside = netns::run_in(&fa, || std::fs::read_to_string("/proc/sys/net/ipv4/ip_default_ttl")).unwrap();
    assert_eq!(inside.unwrap().trim(), "200");
    assert_eq!(
        std::fs::read_to_string("/proc/sys/net/ipv4/ip_default_ttl").unwrap(),
        host_forward,
        "the host keeps its own"
    );

    rt.block_on(async {
        let side = |netns, name, index, last| VethSide {
            netns,
            name,
            index,
            mac: [2, 0x5b, 0, 0, 0, last],
        };
        // Through the traits (Netlink's inherent methods of the same names would win otherwise).
        Links::add_veth(
            spaces.host(),
            side(&fa, "va", 10, 1),
            side(&fb, "vb", 11, 2),
            Some(1400),
        )
        .await
        .unwrap();
        assert_eq!(Links::index_of(&sa, "va").await.unwrap(), 10);
        assert_eq!(Links::index_of(&sb, "vb").await.unwrap(), 11);
        assert!(
            Links::index_of(&sa, "vb").await.is_err(),
            "each end lives in its own namespace"
        );
        assert!(
            Links::index_of(spaces.host(), "va").await.is_err(),
            "nothing appears in the host's namespace"
        );
        Links::set_up(&sa, 10, true).await.unwrap();
        Links::set_up(&sb, 11, true).await.unwrap();
        Links::set_mtu(&sa, 10, 1300).await.unwrap();
        Addresses::add(&sa, 10, [10, 91, 0, 0].into(), 31).await.unwrap();
        Addresses::add(&sa, 10, [10, 91, 0, 0].into(), 31).await.unwrap();
    });
    let link = out("ip", &["-n", &na, "-o", "addr", "show", "dev", "va"]);
    assert!(link.contains("10.91.0.0/31"), "{link}");
    let link = out("ip", &["-n", &na, "-o", "link", "show", "dev", "va"]);
    assert!(
        link.contains("mtu 1300") && link.contains("02:5b:00:00:00:01"),
        "{link}"
    );
    let peer = out("ip", &["-n", &nb, "-o", "link", "show", "dev", "vb"]);
    assert!(peer.contains("mtu 1400") && peer.contains("state UP"), "{peer}");

    TcBinary.batch(&na, &tc::rate("va", Some(10_000_000), 1300)).unwrap();
    let q = out("tc", &["-n", &na, "qdisc", "show", "dev", "va"]);
    assert!(q.contains("tbf") && q.contains("10Mbit"), "{q}");
    assert!(TcBinary.batch(&na, &["qdisc del dev nosuch root".into()]).is_err());

    Ethtool::new(Path::new(DIR)).set_tx_checksum(&na, "va", false).unwrap();
    let k = out("ip", &["netns", "exec", &na, "ethtool", "-k", "va"]);
    assert!(k.contains("tx-checksumming: off"), "{k}");
    Ethtool::new(Path::new(DIR))
        .set_unrelayable_gso(&na, "va", false)
        .unwrap();
    let k = out("ip", &["netns", "exec", &na, "ethtool", "-k", "va"]);
    assert!(
        k.contains("tx-udp_tnl-segmentation: off") && k.contains("tx-gso-list: off"),
        "{k}"
    );
    assert!(
        Ethtool::new(Path::new(DIR))
            .set_tx_checksum(&na, "nosuch", false)
            .is_err()
    );

    // A socket opened later reaches the same namespace; deleting one end takes both.
    let (_, again) = spaces.open(&nb).unwrap();
    rt.block_on(async { Links::delete(&sa, 10).await.unwrap() });
    rt.block_on(async { assert!(Links::index_of(&again, "vb").await.is_err(), "the peer went with it") });
    drop((fa, fb, sa, sb, again));
    assert!(spaces.delete(&na).unwrap());
    assert!(spaces.delete(&nb).unwrap());
    assert!(!spaces.delete(&na).unwrap());
    assert!(spaces.open(&na).is_err());
}
