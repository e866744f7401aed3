//! Privileged: the netlink [`Routes`] against a real kernel FIB, in a namespace of its own
//! (`wuos.routestest.PID`, deleted on drop): lookups are the kernel's, and they agree with what
//! was installed.

use std::net::Ipv4Addr;
use std::path::Path;

use wuos_southbound::netlink::{Netlink, RouteSpec, VethEnd};
use wuos_southbound::netns;
use wuos_southbound::privilege::may_run_privileged;
use wuos_southbound::routes::{NextHop, Routes};

struct Ns(String);

impl Drop for Ns {
    fn drop(&mut self) {
        let _ = netns::delete(Path::new("/run/netns"), &self.0);
    }
}

#[test]
fn kernel_lookups_find_the_next_hop_and_the_matching_fib_entry() {
    if !may_run_privileged("routes") {
        return;
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let name = format!("wuos.routestest.{}", std::process::id());
    let dir = Path::new("/run/netns");
    let _ = netns::delete(dir, &name);
    let (ns, nl) = netns::create(dir, &name, || Netlink::connect_here(rt.handle())).unwrap();
    let _ns = Ns(name);
    let nl = nl.unwrap();
    let fd = std::os::fd::AsFd::as_fd(&ns);
    rt.block_on(async {
        // A veth pair with both ends here: 10.9.0.1/30 on a, b up.
        let end = |name, index, last| VethEnd {
            netns: fd,
            name,
            index,
            mac: [2, 0, 0, 0, 0, last],
        };
        nl.add_veth(end("a", 10, 1), end("b", 11, 2), None).await.unwrap();
        nl.add_address(10, [10, 9, 0, 1].into(), 30).await.unwrap();
        nl.set_up(10, true).await.unwrap();
        nl.set_up(11, true).await.unwrap();
        let gw = Ipv4Addr::new(10, 9, 0, 2);
        assert_eq!(
            nl.next_hop(gw).await.unwrap(),
            Some(NextHop { gateway: gw, oif: 10 }),
            "on-link: the destination is its own next hop"
        );
        let vip = Ipv4Addr::new(10, 255, 0, 10);
        assert_eq!(nl.next_hop(vip).await.unwrap(), None, "no route yet");
        let via = NextHop { gateway: gw, oif: 10 };
        nl.replace(&RouteSpec {
            dst: vip,
            prefix_len: 32,
            gateway: gw,
            oif: 10,
            src: None,
        })
        .await
        .unwrap();
        assert_eq!(nl.next_hop(vip).await.unwrap(), Some(via));
        let m = nl.fib_match(vip).await.unwrap().expect("the /32 matches");
        assert!(m.is(vip, 32, via), "{m:?}");
        let m = nl.fib_match(gw).await.unwrap().expect("the connected /30 matches");
        assert_eq!((m.dst, m.prefix_len, m.gateway), (Ipv4Addr::new(10, 9, 0, 0), 30, None));
        assert!(!m.is(gw, 32, via));
        nl.delete(vip, 32).await.unwrap();
        nl.delete(vip, 32).await.unwrap();
        assert_eq!(
            nl.fib_match(vip).await.unwrap(),
            None,
            "gone, and a second delete is fine"
        );
    });
}
