//! A domain's network: its own namespace with loopback up and, when the spec asks, a veth to the
//! router's namespace with an address on each end and a default route via the router.
//!
//! Netlink requests run on a current-thread tokio runtime built for the call on a scoped thread,
//! so these functions work from any thread, including one inside the daemon's runtime.

use std::fs::File;
use std::net::Ipv4Addr;
use std::os::fd::AsFd;
use std::path::Path;

use super::{ContainerSpec, DomainError};
use crate::netlink::{Netlink, NetlinkError, RouteSpec, VethEnd};
use crate::netns;

/// Runs `f` with a fresh current-thread runtime on a scoped thread.
fn with_runtime<R: Send>(
    name: &str,
    f: impl FnOnce(&tokio::runtime::Runtime) -> Result<R, DomainError> + Send,
) -> Result<R, DomainError> {
    std::thread::scope(|s| {
        s.spawn(|| {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_io()
                .build()
                .map_err(|error| DomainError::Runtime {
                    name: name.to_owned(),
                    error,
                })?;
            f(&rt)
        })
        .join()
        .unwrap_or_else(|_| {
            Err(DomainError::Netns {
                name: name.to_owned(),
                error: netns::NetnsError::ThreadPanicked,
            })
        })
    })
}

fn nl_err(name: &str) -> impl Fn(NetlinkError) -> DomainError + '_ {
    move |error| DomainError::Netlink {
        name: name.to_owned(),
        error,
    }
}

fn ns_err(name: &str) -> impl Fn(netns::NetnsError) -> DomainError + '_ {
    move |error| DomainError::Netns {
        name: name.to_owned(),
        error,
    }
}

/// The router's namespace file, or the daemon's own (`proc_root/self/ns/net`, the main thread's).
fn open_router_ns(spec: &ContainerSpec, proc_root: &Path) -> Result<File, DomainError> {
    let path = match &spec.router_netns {
        Some(p) => p.clone(),
        None => proc_root.join("self/ns/net"),
    };
    File::open(&path).map_err(|e| DomainError::io(&spec.name, "open the router's network namespace", &path, e))
}

/// A netlink connection into the router's namespace, on `rt`.
fn router_netlink(
    spec: &ContainerSpec,
    proc_root: &Path,
    rt: &tokio::runtime::Runtime,
) -> Result<Netlink, DomainError> {
    let name = spec.name.as_str();
    let router_ns = open_router_ns(spec, proc_root)?;
    let handle = rt.handle().clone();
    netns::run_in(&router_ns, || Netlink::connect_here(&handle))
        .map_err(ns_err(name))?
        .map_err(nl_err(name))
}

/// A locally administered MAC derived from the namespace name and the end, stable across
/// re-creations (so neighbours' ARP caches stay valid).
pub(crate) fn mac_for(netns_name: &str, end: u8) -> [u8; 6] {
    // FNV-1a, 32 bits.
    let mut h: u32 = 0x811c_9dc5;
    for b in netns_name.bytes().chain([end]) {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    let [a, b, c, d] = h.to_be_bytes();
    [0x02, 0x77, a, b, c, d]
}

/// Creates the domain's namespace, brings its loopback up and, with `spec.net`, creates the veth
/// (each end born in its namespace), addresses both ends, brings them up and adds the default
/// route. On error the namespace is left for the caller to remove (it owns the rollback).
pub fn create(spec: &ContainerSpec, proc_root: &Path) -> Result<(), DomainError> {
    let name = spec.name.as_str();
    with_runtime(name, |rt| {
        let handle = rt.handle().clone();
        let (dom_ns, dom_nl) = netns::create(&spec.netns_dir, &spec.netns_name, || Netlink::connect_here(&handle))
            .map_err(ns_err(name))?;
        let dom_nl = dom_nl.map_err(nl_err(name))?;
        rt.block_on(dom_nl.set_up(1, true)).map_err(nl_err(name))?;
        let Some(net) = &spec.net else {
            return Ok(());
        };
        let router_ns = open_router_ns(spec, proc_root)?;
        let router_nl = netns::run_in(&router_ns, || Netlink::connect_here(&handle))
            .map_err(ns_err(name))?
            .map_err(nl_err(name))?;
        rt.block_on(async {
            let host_end = VethEnd {
                netns: router_ns.as_fd(),
                name: &net.host_if,
                index: 0,
                mac: mac_for(&spec.netns_name, 0),
            };
            let dom_end = VethEnd {
                netns: dom_ns.as_fd(),
                name: &net.dom_if,
                index: 0,
                mac: mac_for(&spec.netns_name, 1),
            };
            dom_nl.add_veth(host_end, dom_end, None).await?;
            let hi = router_nl.index_of(&net.host_if).await?;
            let di = dom_nl.index_of(&net.dom_if).await?;
            router_nl.add_address(hi, net.host_addr, net.prefix_len).await?;
            dom_nl.add_address(di, net.dom_addr, net.prefix_len).await?;
            router_nl.set_up(hi, true).await?;
            dom_nl.set_up(di, true).await?;
            // The service VIPs, on the loopback (up since the namespace was made).
            for vip in &net.vips {
                dom_nl.add_address(1, *vip, 32).await?;
            }
            if net.routes_via_host {
                dom_nl
                    .replace_route(&RouteSpec {
                        dst: Ipv4Addr::UNSPECIFIED,
                        prefix_len: 0,
                        gateway: net.host_addr,
                        oif: di,
                        src: None,
                    })
                    .await?;
            }
            Ok::<(), NetlinkError>(())
        })
        .map_err(nl_err(name))
    })
}

/// Puts the service VIPs of `spec` on the loopback of its existing namespace (a domain taken from
/// the idle pool learns its VIP only then). An address already there is not an error.
pub fn add_vips(spec: &ContainerSpec) -> Result<(), DomainError> {
    let name = spec.name.as_str();
    let Some(net) = spec.net.as_ref().filter(|n| !n.vips.is_empty()) else {
        return Ok(());
    };
    with_runtime(name, |rt| {
        let handle = rt.handle().clone();
        let ns = netns::open(&spec.netns_dir, &spec.netns_name).map_err(ns_err(name))?;
        let nl = netns::run_in(&ns, || Netlink::connect_here(&handle))
            .map_err(ns_err(name))?
            .map_err(nl_err(name))?;
        rt.block_on(async {
            for vip in &net.vips {
                nl.add_address(1, *vip, 32).await?;
            }
            Ok::<(), NetlinkError>(())
        })
        .map_err(nl_err(name))
    })
}

/// Addresses and brings up the router's end of a `vm` domain: the tap `net.host_if` that QEMU
/// makes in the router's namespace when it starts (waited for up to `wait`). An address already
/// there is not an error.
pub fn address_tap(spec: &ContainerSpec, proc_root: &Path, wait: std::time::Duration) -> Result<(), DomainError> {
    let name = spec.name.as_str();
    let Some(net) = &spec.net else {
        return Ok(());
    };
    with_runtime(name, |rt| {
        let nl = router_netlink(spec, proc_root, rt)?;
        rt.block_on(async {
            let deadline = std::time::Instant::now() + wait;
            let index = loop {
                match nl.index_of(&net.host_if).await {
                    Ok(i) => break i,
                    Err(NetlinkError::NoSuchLink(_)) if std::time::Instant::now() < deadline => {
                        // Nothing else runs on this runtime but the connection, idle between requests.
                        std::thread::sleep(std::time::Duration::from_millis(5));
                    }
                    Err(e) => return Err(e),
                }
            };
            nl.add_address(index, net.host_addr, net.prefix_len).await?;
            nl.set_up(index, true).await
        })
        .map_err(nl_err(name))
    })
}

/// Deletes the veth (by its router end, if the router's namespace still exists) and the domain's
/// namespace. Missing pieces are not errors.
pub fn remove(spec: &ContainerSpec, proc_root: &Path) -> Result<(), DomainError> {
    let name = spec.name.as_str();
    let mut result = Ok(());
    if let Some(net) = &spec.net {
        let router_exists = spec.router_netns.as_ref().is_none_or(|p| p.exists());
        if router_exists {
            result = with_runtime(name, |rt| {
                let nl = router_netlink(spec, proc_root, rt)?;
                rt.block_on(async {
                    match nl.index_of(&net.host_if).await {
                        Ok(i) => nl.del_link(i).await,
                        Err(NetlinkError::NoSuchLink(_)) => Ok(()),
                        Err(e) => Err(e),
                    }
                })
                .map_err(nl_err(name))
            });
        }
    }
    let deleted = netns::delete(&spec.netns_dir, &spec.netns_name).map_err(ns_err(name));
    result.and(deleted.map(drop))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macs_are_stable_unicast_and_locally_administered() {
        let a = mac_for("wuos.demo.r1.pabx-1", 0);
        assert_eq!(a, mac_for("wuos.demo.r1.pabx-1", 0));
        assert_ne!(a, mac_for("wuos.demo.r1.pabx-1", 1));
        assert_ne!(a, mac_for("wuos.demo.r1.pabx-2", 0));
        assert_eq!(a[0] & 0x03, 0x02, "locally administered, unicast");
    }
}
