//! The bridge driver: attach a container's network namespace to a network (bridge link,
//! address from IPAM, veth pair, default route, nft rules) and detach it again. Every step is
//! undone if a later one fails, and teardown tolerates half-created state (a veth already gone
//! with its namespace, a bridge or chain deleted by hand).

use std::net::Ipv4Addr;
use std::os::fd::BorrowedFd;

use sha2::{Digest, Sha256};

use super::ipam::{self, Lease, Leases};
use super::netlink::{self, link_index, Netlink};
use super::records::NetworkRecord;
use super::{nft, nl, NetLock, NetworkError, Result};
use crate::container::record::PortMapping;

/// One endpoint to create.
#[derive(Debug, Clone)]
pub struct Attach<'a> {
    pub container_id: &'a str,
    pub network: &'a NetworkRecord,
    /// Interface name inside the container (`eth0`, `eth1`, …).
    pub ifname: String,
    pub ip: Option<Ipv4Addr>,
    /// `--ip6` (networks with IPv6).
    pub ip6: Option<std::net::Ipv6Addr>,
    pub mac: Option<[u8; 6]>,
    pub names: Vec<String>,
    pub ports: Vec<PortMapping>,
    /// Install the default route through this network's gateway.
    pub default_route: bool,
    pub owner_pid: i32,
    pub owner_start: u64,
}

/// What an attached endpoint got.
#[derive(Debug, Clone)]
pub struct Attached {
    pub ip: Ipv4Addr,
    pub prefix: u8,
    pub gateway: Ipv4Addr,
    pub mac: String,
    pub ip6: Option<std::net::Ipv6Addr>,
    pub prefix6: u8,
    pub gateway6: Option<std::net::Ipv6Addr>,
}

/// The host end's name: `veth` + 11 hex of (container, bridge), unique per endpoint.
fn veth_name(container_id: &str, bridge: &str) -> String {
    let h = Sha256::digest(format!("{container_id}\0{bridge}").as_bytes());
    format!("veth{}", &hex::encode(h)[..11])
}

/// Outbound traffic of a bridge needs IPv4 forwarding: turned on when off, as Docker does
/// (`--ip-forward`, default true). Never turned off again (other users may rely on it).
fn enable_forwarding() -> Result<()> {
    const P: &str = "/proc/sys/net/ipv4/ip_forward";
    if std::fs::read_to_string(P)
        .map(|s| s.trim() == "1")
        .unwrap_or(false)
    {
        return Ok(());
    }
    std::fs::write(P, b"1").map_err(super::io_at(P))
}

/// Make sure the bridge link exists, carries the gateway address and is up.
fn ensure_bridge(nlk: &mut Netlink, l: &Leases) -> Result<u32> {
    if !l.internal {
        enable_forwarding()?;
    }
    if let Some(i) = link_index(&l.bridge) {
        nlk.set_up(i, None)
            .map_err(nl(format!("set {} up", l.bridge)))?;
        // Re-adding the gateway is harmless when present (EEXIST).
        match nlk.add_addr4(i, l.gateway, l.subnet.prefix) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {}
            Err(e) => return Err(nl(format!("address {}", l.bridge))(e)),
        }
        ensure_bridge6(nlk, l, i)?;
        return Ok(i);
    }
    nlk.create_bridge(&l.bridge)
        .map_err(nl(format!("create bridge {}", l.bridge)))?;
    let i = link_index(&l.bridge).ok_or_else(|| {
        nl(format!("bridge {}", l.bridge))(std::io::Error::from_raw_os_error(libc::ENODEV))
    })?;
    nlk.add_addr4(i, l.gateway, l.subnet.prefix)
        .map_err(nl(format!("address {}", l.bridge)))?;
    nlk.set_up(i, None)
        .map_err(nl(format!("set {} up", l.bridge)))?;
    ensure_bridge6(nlk, l, i)?;
    Ok(i)
}

/// IPv6 on a bridge: its `::1` (no duplicate address detection, so it is usable at once) and,
/// as Docker does for IPv6 networks, IPv6 forwarding.
fn ensure_bridge6(nlk: &mut Netlink, l: &Leases, i: u32) -> Result<()> {
    let (Some(net), Some(gw)) = (l.subnet6, l.gateway6()) else {
        return Ok(());
    };
    if !l.internal {
        const P: &str = "/proc/sys/net/ipv6/conf/all/forwarding";
        if std::fs::read_to_string(P)
            .map(|s| s.trim() != "1")
            .unwrap_or(false)
        {
            std::fs::write(P, b"1").map_err(super::io_at(P))?;
        }
    }
    match nlk.add_addr6(i, gw, net.prefix) {
        Ok(()) => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::EEXIST) => Ok(()),
        Err(e) => Err(nl(format!("IPv6 address {}", l.bridge))(e)),
    }
}

fn delete_link_named(name: &str) {
    if let (Some(i), Ok(mut nlk)) = (link_index(name), Netlink::open()) {
        let _ = nlk.delete_link(i);
    }
}

/// Remove a bridge with no endpoints: its link, its rules, its lease file. With no other
/// bridge left, the whole table goes in one step.
fn teardown_bridge(lock: &NetLock, l: &Leases) {
    l.remove(&lock.dir);
    delete_link_named(&l.bridge);
    if Leases::load_all(&lock.dir).is_empty() {
        nft::remove_table();
    } else {
        nft::remove(&l.bridge);
    }
}

/// Lease file of `net`'s bridge, created (empty) if the bridge has none yet.
fn leases_for(lock: &NetLock, net: &NetworkRecord) -> Result<Leases> {
    let (Some(subnet), Some(gateway)) = (net.subnet, net.gateway) else {
        return Err(NetworkError::NotFound(net.name.clone()));
    };
    match Leases::load(&lock.dir, &net.bridge)? {
        Some(l) if l.subnet != subnet => Err(NetworkError::BridgeSubnet {
            bridge: net.bridge.clone(),
            have: l.subnet,
            want: subnet,
        }),
        Some(mut l) => {
            l.internal = net.internal;
            if l.endpoints.is_empty() {
                l.subnet6 = net.subnet6;
            }
            Ok(l)
        }
        None => Ok(Leases {
            bridge: net.bridge.clone(),
            subnet,
            gateway,
            internal: net.internal,
            endpoints: Default::default(),
            subnet6: net.subnet6,
        }),
    }
}

/// Attach the network namespace `ns` to `req.network`. Holds the network lock throughout.
pub fn attach(lock: &NetLock, ns: BorrowedFd<'_>, req: &Attach<'_>) -> Result<Attached> {
    reclaim(lock);
    let mut leases = leases_for(lock, req.network)?;
    if leases.endpoints.contains_key(req.container_id) {
        return Err(NetworkError::AlreadyConnected {
            container: req.container_id.to_string(),
            network: req.network.name.clone(),
        });
    }
    let ip = leases.allocate(req.ip)?;
    let ip6 = leases.allocate6(req.ip6, ip)?;
    let mac = req.mac.unwrap_or_else(|| ipam::mac_for(ip));
    let veth = veth_name(req.container_id, &leases.bridge);
    let was_empty = leases.endpoints.is_empty();
    let result = (|| -> Result<()> {
        let mut nlk = Netlink::open().map_err(nl("netlink socket"))?;
        let br = ensure_bridge(&mut nlk, &leases)?;
        // A bridge deleted by hand and just re-created gets its surviving ports back.
        for other in leases.endpoints.values() {
            if let Some(i) = link_index(&other.veth) {
                let _ = nlk.set_up(i, Some(br));
            }
        }
        delete_link_named(&veth);
        nlk.create_veth(&veth, &req.ifname, ns, mac)
            .map_err(nl(format!("create veth {veth}")))?;
        let host_end = link_index(&veth).ok_or_else(|| {
            nl(format!("veth {veth}"))(std::io::Error::from_raw_os_error(libc::ENODEV))
        })?;
        nlk.set_up(host_end, Some(br))
            .map_err(nl(format!("attach {veth} to {}", leases.bridge)))?;
        let (ifname, prefix, gateway) = (req.ifname.clone(), leases.subnet.prefix, leases.gateway);
        let route = req.default_route && !leases.internal;
        let v6 = leases
            .subnet6
            .zip(ip6)
            .zip(leases.gateway6())
            .map(|((net, ip6), gw6)| (ip6, net.prefix, gw6));
        netlink::in_netns(ns, move || {
            let mut inner = Netlink::open()?;
            let idx = link_index(&ifname)
                .ok_or_else(|| std::io::Error::from_raw_os_error(libc::ENODEV))?;
            inner.add_addr4(idx, ip, prefix)?;
            if let Some((ip6, prefix6, _)) = v6 {
                inner.add_addr6(idx, ip6, prefix6)?;
            }
            inner.set_up(idx, None)?;
            if route {
                inner.add_default_route4(gateway, idx)?;
                if let Some((_, _, gw6)) = v6 {
                    inner.add_default_route6(gw6, idx)?;
                }
            }
            Ok(())
        })
        .map_err(nl(format!("configure {} in the container", req.ifname)))?;
        leases.endpoints.insert(
            req.container_id.to_string(),
            Lease {
                ip,
                mac: ipam::format_mac(&mac),
                veth: veth.clone(),
                names: req.names.clone(),
                network: req.network.name.clone(),
                owner_pid: req.owner_pid,
                owner_start: req.owner_start,
                ports: req.ports.clone(),
                ip6: v6.map(|(ip6, _, _)| ip6),
            },
        );
        leases.save(&lock.dir)?;
        nft::apply(&leases)?;
        Ok(())
    })();
    if let Err(e) = result {
        delete_link_named(&veth);
        leases.endpoints.remove(req.container_id);
        if was_empty && leases.endpoints.is_empty() {
            teardown_bridge(lock, &leases);
        } else {
            let _ = leases.save(&lock.dir);
            let _ = nft::apply(&leases);
        }
        return Err(e);
    }
    Ok(Attached {
        ip,
        prefix: leases.subnet.prefix,
        gateway: leases.gateway,
        mac: ipam::format_mac(&mac),
        ip6,
        prefix6: leases.subnet6.map(|n| n.prefix).unwrap_or(0),
        gateway6: leases.gateway6(),
    })
}

/// Detach a container from one bridge. Returns false if it was not attached. `delete_veth`:
/// delete the pair now (a live namespace keeps it); false when the namespace is about to go
/// with its last process, which takes the pair along (saves the kernel's slow unregister).
pub fn detach(lock: &NetLock, container_id: &str, bridge: &str, delete_veth: bool) -> bool {
    let Ok(Some(mut leases)) = Leases::load(&lock.dir, bridge) else {
        return false;
    };
    let Some(lease) = leases.endpoints.remove(container_id) else {
        return false;
    };
    if delete_veth {
        delete_link_named(&lease.veth);
    }
    if leases.endpoints.is_empty() {
        teardown_bridge(lock, &leases);
    } else {
        let _ = leases.save(&lock.dir);
        let _ = nft::apply(&leases);
    }
    true
}

/// Detach a container from every bridge it is on (see [`detach`] for `delete_veth`).
pub fn release_all(lock: &NetLock, container_id: &str, delete_veth: bool) {
    for l in Leases::load_all(&lock.dir) {
        if l.endpoints.contains_key(container_id) {
            detach(lock, container_id, &l.bridge, delete_veth);
        }
    }
}

/// Reclaim stale leases everywhere, and repair rules of bridges whose chains were deleted.
pub fn reclaim(lock: &NetLock) {
    for l in Leases::load_all(&lock.dir) {
        let stale: Vec<String> = l
            .endpoints
            .iter()
            .filter(|(_, lease)| !lease.owner_alive())
            .map(|(id, _)| id.clone())
            .collect();
        for id in &stale {
            detach(lock, id, &l.bridge, true);
        }
        if stale.is_empty() && l.endpoints.is_empty() {
            teardown_bridge(lock, &l);
        }
    }
}

/// Re-create a bridge and its rules if they were deleted by hand (the next `run` calls this
/// through [`attach`]; `ensure` is for callers that only want the repair).
pub fn ensure(lock: &NetLock, net: &NetworkRecord) -> Result<()> {
    let leases = leases_for(lock, net)?;
    if leases.endpoints.is_empty() {
        return Ok(());
    }
    let mut nlk = Netlink::open().map_err(nl("netlink socket"))?;
    let br = ensure_bridge(&mut nlk, &leases)?;
    for lease in leases.endpoints.values() {
        if let Some(i) = link_index(&lease.veth) {
            let _ = nlk.set_up(i, Some(br));
        }
    }
    nft::apply(&leases)
}
