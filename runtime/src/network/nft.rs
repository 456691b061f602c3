//! Firewall rules in a table strata owns: `table ip strata`. Nobody else's table, chain or rule
//! is ever read, flushed or rewritten.
//!
//! Each bridge gets its own chains and map inside the table, named after the bridge:
//! - `<br>_post` (nat postrouting): masquerade the subnet leaving by any other interface;
//! - `<br>_fwd` (filter forward): for `--internal` networks, drop what tries to leave or enter;
//! - `<br>_ports` (map `proto . port : address . port`) and `<br>_pre` (nat prerouting): DNAT of
//!   published ports for traffic arriving from outside to one of the host's addresses.
//!
//! A bridge with IPv6 gets the same masquerade, DNAT chain and map in `table ip6 strata`.
//!
//! [`apply`] rewrites a bridge's chains and map from its lease file in one `nft -f -`
//! transaction (flush-and-fill of our own chains only), so a chain or the whole table deleted
//! by hand comes back on the next change. [`remove`] deletes a bridge's objects and the table
//! once it holds none. The table is created on demand and never outlives the last bridge.

use std::io::Write;
use std::process::{Command, Stdio};

use super::ipam::Leases;
use super::NetworkError;

pub const TABLE: &str = "strata";

fn chain_base(bridge: &str) -> String {
    bridge.replace(['-', '.'], "_")
}

/// The ruleset of one bridge, as an nft script.
pub fn script(l: &Leases) -> String {
    let b = chain_base(&l.bridge);
    let br = &l.bridge;
    let mut s = format!("add table ip {TABLE}\n");
    s += &format!(
        "add chain ip {TABLE} {b}_post {{ type nat hook postrouting priority srcnat; policy accept; }}\n\
         flush chain ip {TABLE} {b}_post\n\
         add chain ip {TABLE} {b}_fwd {{ type filter hook forward priority filter; policy accept; }}\n\
         flush chain ip {TABLE} {b}_fwd\n\
         add chain ip {TABLE} {b}_pre {{ type nat hook prerouting priority dstnat; policy accept; }}\n\
         flush chain ip {TABLE} {b}_pre\n\
         add map ip {TABLE} {b}_ports {{ type inet_proto . inet_service : ipv4_addr . inet_service; }}\n\
         flush map ip {TABLE} {b}_ports\n"
    );
    if l.internal {
        s += &format!(
            "add rule ip {TABLE} {b}_fwd iifname \"{br}\" oifname != \"{br}\" drop\n\
             add rule ip {TABLE} {b}_fwd oifname \"{br}\" iifname != \"{br}\" drop\n"
        );
        if l.subnet6.is_some() {
            // IPv6 is forwarded host-wide once on: an internal bridge drops it both ways too.
            s += &format!(
                "add table ip6 {TABLE}\n\
                 add chain ip6 {TABLE} {b}_fwd {{ type filter hook forward priority filter; policy accept; }}\n\
                 flush chain ip6 {TABLE} {b}_fwd\n\
                 add rule ip6 {TABLE} {b}_fwd iifname \"{br}\" oifname != \"{br}\" drop\n\
                 add rule ip6 {TABLE} {b}_fwd oifname \"{br}\" iifname != \"{br}\" drop\n"
            );
        }
        return s;
    }
    s += &format!(
        "add rule ip {TABLE} {b}_post ip saddr {} oifname != \"{br}\" masquerade\n",
        l.subnet
    );
    let mut elems = Vec::new();
    for lease in l.endpoints.values() {
        for p in &lease.ports {
            let wildcard = p.host_ip.is_empty() || p.host_ip == "0.0.0.0";
            if wildcard && p.host_port != 0 {
                elems.push(format!(
                    "{} . {} : {} . {}",
                    p.proto, p.host_port, lease.ip, p.container_port
                ));
            }
        }
    }
    elems.sort();
    elems.dedup_by(|a, b| a.split(':').next() == b.split(':').next());
    if !elems.is_empty() {
        s += &format!(
            "add element ip {TABLE} {b}_ports {{ {} }}\n",
            elems.join(", ")
        );
    }
    // Traffic from the bridge itself to a published port is served by the userspace proxy
    // (hairpin): DNAT only what arrives from elsewhere for one of the host's addresses.
    s += &format!(
        "add rule ip {TABLE} {b}_pre iifname != \"{br}\" fib daddr type local \
         dnat ip to meta l4proto . th dport map @{b}_ports\n"
    );
    s += &script6(l);
    s
}

/// The IPv6 half of a bridge's rules (nothing for a bridge without IPv6).
fn script6(l: &Leases) -> String {
    let Some(net6) = l.subnet6 else {
        return String::new();
    };
    let b = chain_base(&l.bridge);
    let br = &l.bridge;
    let mut s = format!(
        "add table ip6 {TABLE}\n\
         add chain ip6 {TABLE} {b}_post {{ type nat hook postrouting priority srcnat; policy accept; }}\n\
         flush chain ip6 {TABLE} {b}_post\n\
         add chain ip6 {TABLE} {b}_pre {{ type nat hook prerouting priority dstnat; policy accept; }}\n\
         flush chain ip6 {TABLE} {b}_pre\n\
         add map ip6 {TABLE} {b}_ports {{ type inet_proto . inet_service : ipv6_addr . inet_service; }}\n\
         flush map ip6 {TABLE} {b}_ports\n\
         add rule ip6 {TABLE} {b}_post ip6 saddr {net6} oifname != \"{br}\" masquerade\n"
    );
    let mut elems = Vec::new();
    for lease in l.endpoints.values() {
        let Some(ip6) = lease.ip6 else {
            continue;
        };
        for p in &lease.ports {
            if (p.host_ip.is_empty() || p.host_ip == "::") && p.host_port != 0 {
                elems.push(format!(
                    "{} . {} : {ip6} . {}",
                    p.proto, p.host_port, p.container_port
                ));
            }
        }
    }
    elems.sort();
    elems.dedup_by(|a, b| a.split(':').next() == b.split(':').next());
    if !elems.is_empty() {
        s += &format!(
            "add element ip6 {TABLE} {b}_ports {{ {} }}\n",
            elems.join(", ")
        );
    }
    s += &format!(
        "add rule ip6 {TABLE} {b}_pre iifname != \"{br}\" fib daddr type local \
         dnat ip6 to meta l4proto . th dport map @{b}_ports\n"
    );
    s
}

fn nft(script: &str) -> Result<String, NetworkError> {
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(NetworkError::NftMissing)?;
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(script.as_bytes());
    }
    let out = child.wait_with_output().map_err(NetworkError::NftMissing)?;
    if !out.status.success() {
        return Err(NetworkError::Nft(
            String::from_utf8_lossy(&out.stderr).trim().to_string(),
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Install (or repair) the rules of one bridge from its leases.
pub fn apply(l: &Leases) -> Result<(), NetworkError> {
    nft(&script(l)).map(|_| ())
}

/// Delete strata's whole table (no bridge left).
pub fn remove_table() {
    let _ = nft(&format!("delete table ip {TABLE}\n"));
    let _ = nft(&format!("delete table ip6 {TABLE}\n"));
}

/// Delete one bridge's chains and map; the table goes when nothing of ours is left in it.
pub fn remove(bridge: &str) {
    let b = chain_base(bridge);
    let objs = [
        format!("chain ip {TABLE} {b}_post"),
        format!("chain ip {TABLE} {b}_fwd"),
        format!("chain ip {TABLE} {b}_pre"),
        format!("map ip {TABLE} {b}_ports"),
    ];
    let all: String = objs.iter().map(|o| format!("delete {o}\n")).collect();
    if nft(&all).is_err() {
        // Something was deleted by hand: one object per transaction, so a missing one does
        // not keep the others alive.
        for obj in &objs {
            let _ = nft(&format!("delete {obj}\n"));
        }
    }
    if let Ok(listing) = nft(&format!("list table ip {TABLE}\n")) {
        if !listing.contains("chain ") && !listing.contains("map ") {
            let _ = nft(&format!("delete table ip {TABLE}\n"));
        }
    }
    if let Ok(listing) = nft(&format!("list table ip6 {TABLE}\n")) {
        for obj in [
            format!("chain ip6 {TABLE} {b}_post"),
            format!("chain ip6 {TABLE} {b}_fwd"),
            format!("chain ip6 {TABLE} {b}_pre"),
            format!("map ip6 {TABLE} {b}_ports"),
        ] {
            if listing.contains(&format!(" {b}_")) {
                let _ = nft(&format!("delete {obj}\n"));
            }
        }
        if let Ok(listing) = nft(&format!("list table ip6 {TABLE}\n")) {
            if !listing.contains("chain ") && !listing.contains("map ") {
                let _ = nft(&format!("delete table ip6 {TABLE}\n"));
            }
        }
    }
}

/// The IPv6 table as `nft list table` prints it (None when it does not exist).
pub fn list6() -> Option<String> {
    nft(&format!("list table ip6 {TABLE}\n")).ok()
}

/// The table as `nft list table` prints it (None when it does not exist).
pub fn list() -> Option<String> {
    nft(&format!("list table ip {TABLE}\n")).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::container::record::PortMapping;
    use crate::network::ipam::Lease;

    fn leases(internal: bool) -> Leases {
        let port = |ip: &str, host_port| PortMapping {
            host_ip: ip.to_string(),
            host_port,
            container_port: 80,
            proto: "tcp".to_string(),
        };
        let mut l = Leases {
            bridge: "strata0".into(),
            subnet: "172.17.0.0/16".parse().unwrap(),
            gateway: "172.17.0.1".parse().unwrap(),
            internal,
            endpoints: Default::default(),
            subnet6: None,
        };
        l.endpoints.insert(
            "c1".into(),
            Lease {
                ip: "172.17.0.2".parse().unwrap(),
                mac: String::new(),
                veth: "veth1".into(),
                names: vec![],
                network: "bridge".into(),
                owner_pid: 1,
                owner_start: 0,
                ports: vec![
                    port("0.0.0.0", 8080),
                    port("::", 8080),
                    port("127.0.0.1", 9090),
                ],
                ip6: None,
            },
        );
        l
    }

    #[test]
    fn ruleset_of_a_bridge() {
        let s = script(&leases(false));
        assert!(s.starts_with("add table ip strata\n"));
        assert!(s.contains("flush chain ip strata strata0_post\n"));
        assert!(s.contains(
            "add rule ip strata strata0_post ip saddr 172.17.0.0/16 oifname != \"strata0\" masquerade\n"
        ));
        // Only wildcard IPv4 bindings are DNATed; the proxy serves the rest.
        assert!(
            s.contains("add element ip strata strata0_ports { tcp . 8080 : 172.17.0.2 . 80 }\n")
        );
        assert!(!s.contains("9090"));
        assert!(!s.contains(" drop\n"));
        // Nothing outside our own table is named.
        for line in s.lines() {
            assert!(line.contains(" ip strata"), "{line}");
        }
    }

    #[test]
    fn internal_bridge_drops_and_masquerades_nothing() {
        let s = script(&leases(true));
        assert!(s.contains("iifname \"strata0\" oifname != \"strata0\" drop"));
        assert!(!s.contains("masquerade"));
        assert!(!s.contains("dnat"));
    }

    fn leases6() -> Leases {
        let mut l = leases(false);
        l.subnet6 = Some("fd00:17::/64".parse().unwrap());
        if let Some(e) = l.endpoints.get_mut("c1") {
            e.ip6 = Some("fd00:17::2".parse().unwrap());
        }
        l
    }

    #[test]
    fn internal_ipv6_bridge_drops_forwarding() {
        let mut l = leases6();
        l.internal = true;
        let s = script(&l);
        assert!(s.contains(
            "add rule ip6 strata strata0_fwd iifname \"strata0\" oifname != \"strata0\" drop\n"
        ));
        assert!(!s.contains("masquerade"));
    }

    #[test]
    fn ipv6_half_of_a_bridge() {
        assert!(!script(&leases(false)).contains("ip6"));
        let s = script(&leases6());
        assert!(s.contains(
            "add rule ip6 strata strata0_post ip6 saddr fd00:17::/64 oifname != \"strata0\" masquerade\n"
        ));
        // Only the IPv6 (or unspecified) listings are DNATed to the IPv6 address.
        assert!(
            s.contains("add element ip6 strata strata0_ports { tcp . 8080 : fd00:17::2 . 80 }\n")
        );
        assert!(s.contains("dnat ip6 to meta l4proto . th dport map @strata0_ports"));
    }

    #[test]
    fn rulesets_pass_the_kernels_check() {
        // `nft -c` evaluates against the kernel without committing anything.
        let mut internal6 = leases6();
        internal6.internal = true;
        for l in [leases(false), leases(true), leases6(), internal6] {
            let mut child = Command::new("nft")
                .args(["-c", "-f", "-"])
                .stdin(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("nft (Debian package nftables)");
            child
                .stdin
                .take()
                .unwrap()
                .write_all(script(&l).as_bytes())
                .unwrap();
            let out = child.wait_with_output().unwrap();
            assert!(out.status.success(), "{out:?}");
        }
    }
}
