//! IP address management: subnets, picking a subnet that overlaps no route, and the lease file
//! of a bridge (which container holds which address), kept apart from link setup.
//!
//! Leases live with the link they describe, host-wide (a bridge is a host-wide object, so two
//! strata roots sharing `strata0` must share its leases): `<state dir>/<bridge>.json`, read and
//! rewritten atomically under the network lock (see [`super::NetLock`]).

use std::collections::BTreeMap;
use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::NetworkError;
use crate::container::record::{self, PortMapping};

/// An IPv4 network `addr/prefix` (host bits zero).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ipv4Net {
    pub addr: Ipv4Addr,
    pub prefix: u8,
}

impl Ipv4Net {
    pub fn new(addr: Ipv4Addr, prefix: u8) -> Ipv4Net {
        let prefix = prefix.min(32);
        Ipv4Net {
            addr: Ipv4Addr::from(u32::from(addr) & mask(prefix)),
            prefix,
        }
    }

    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & mask(self.prefix) == u32::from(self.addr)
    }

    pub fn overlaps(&self, other: &Ipv4Net) -> bool {
        self.contains(other.addr) || other.contains(self.addr)
    }

    /// The `n`th address of the network (0 = the network address).
    pub fn nth(&self, n: u32) -> Option<Ipv4Addr> {
        let size = self.size();
        (n < size).then(|| Ipv4Addr::from(u32::from(self.addr) + n))
    }

    pub fn size(&self) -> u32 {
        if self.prefix == 0 {
            u32::MAX
        } else {
            1u32 << (32 - self.prefix)
        }
    }

    pub fn broadcast(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.addr) | !mask(self.prefix))
    }
}

fn mask(prefix: u8) -> u32 {
    if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - prefix as u32)
    }
}

impl fmt::Display for Ipv4Net {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl FromStr for Ipv4Net {
    type Err = NetworkError;
    fn from_str(s: &str) -> Result<Ipv4Net, NetworkError> {
        let bad = || NetworkError::InvalidSubnet(s.to_string());
        let (a, p) = s.split_once('/').ok_or_else(bad)?;
        let addr: Ipv4Addr = a.parse().map_err(|_| bad())?;
        let prefix: u8 = p.parse().map_err(|_| bad())?;
        if !(8..=30).contains(&prefix) {
            return Err(bad());
        }
        Ok(Ipv4Net::new(addr, prefix))
    }
}

impl Serialize for Ipv4Net {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Ipv4Net {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Ipv4Net, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// An IPv6 network `addr/prefix` (host bits zero); strata's bridges use /64s.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ipv6Net {
    pub addr: Ipv6Addr,
    pub prefix: u8,
}

fn mask6(prefix: u8) -> u128 {
    if prefix == 0 {
        0
    } else {
        u128::MAX << (128 - prefix as u32)
    }
}

impl Ipv6Net {
    pub fn new(addr: Ipv6Addr, prefix: u8) -> Ipv6Net {
        let prefix = prefix.min(128);
        Ipv6Net {
            addr: Ipv6Addr::from(u128::from(addr) & mask6(prefix)),
            prefix,
        }
    }

    pub fn contains(&self, ip: Ipv6Addr) -> bool {
        u128::from(ip) & mask6(self.prefix) == u128::from(self.addr)
    }

    /// The `n`th address of the network.
    pub fn nth(&self, n: u32) -> Ipv6Addr {
        Ipv6Addr::from(u128::from(self.addr) | n as u128)
    }

    /// A unique local /64 (RFC 4193: `fd` + a 40-bit global id, here from `seed`).
    pub fn ula_for(seed: &str) -> Ipv6Net {
        let d = crate::digest::Digest::of_bytes(seed.as_bytes());
        let hex = d.hex();
        let byte = |i: usize| u8::from_str_radix(&hex[i * 2..i * 2 + 2], 16).unwrap_or(0);
        let mut o = [0u8; 16];
        o[0] = 0xfd;
        for (i, b) in o[1..6].iter_mut().enumerate() {
            *b = byte(i);
        }
        Ipv6Net::new(Ipv6Addr::from(o), 64)
    }
}

impl fmt::Display for Ipv6Net {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl FromStr for Ipv6Net {
    type Err = NetworkError;
    fn from_str(s: &str) -> Result<Ipv6Net, NetworkError> {
        let bad = || NetworkError::InvalidSubnet(s.to_string());
        let (a, p) = s.split_once('/').ok_or_else(bad)?;
        let addr: Ipv6Addr = a.parse().map_err(|_| bad())?;
        let prefix: u8 = p.parse().map_err(|_| bad())?;
        // Room for the IPv4 host part the addresses are derived from.
        if !(48..=96).contains(&prefix) {
            return Err(bad());
        }
        Ok(Ipv6Net::new(addr, prefix))
    }
}

impl Serialize for Ipv6Net {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Ipv6Net {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Ipv6Net, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Docker's default address pools: 172.17.0.0/16 … 172.31.0.0/16, then the /20 slices of
/// 192.168.0.0/16.
pub fn default_pools() -> Vec<Ipv4Net> {
    let mut v: Vec<Ipv4Net> = (17..=31)
        .map(|b| Ipv4Net::new(Ipv4Addr::new(172, b, 0, 0), 16))
        .collect();
    v.extend((0..16).map(|i| Ipv4Net::new(Ipv4Addr::new(192, 168, i * 16, 0), 20)));
    v
}

/// The first candidate that overlaps none of `taken`.
pub fn pick_subnet(candidates: &[Ipv4Net], taken: &[Ipv4Net]) -> Option<Ipv4Net> {
    candidates
        .iter()
        .find(|c| !taken.iter().any(|t| t.overlaps(c)))
        .copied()
}

/// One container's address on a bridge.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Lease {
    pub ip: Ipv4Addr,
    pub mac: String,
    /// The host end of the veth pair.
    pub veth: String,
    /// Names this endpoint answers to in the network's DNS (name, short id, aliases).
    #[serde(default)]
    pub names: Vec<String>,
    /// The network record's name (user networks are per strata root).
    #[serde(default)]
    pub network: String,
    /// The supervisor holding the lease (pid and start time): a lease whose owner is gone is
    /// stale and reclaimed.
    pub owner_pid: i32,
    pub owner_start: u64,
    /// Published ports DNATed to this endpoint.
    #[serde(default)]
    pub ports: Vec<PortMapping>,
    /// Its IPv6 address (networks with IPv6 enabled).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip6: Option<Ipv6Addr>,
}

impl Lease {
    pub fn owner_alive(&self) -> bool {
        record::process_alive(self.owner_pid, self.owner_start)
    }
}

/// The state of one bridge link: its subnet and its leases by container id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Leases {
    pub bridge: String,
    pub subnet: Ipv4Net,
    pub gateway: Ipv4Addr,
    #[serde(default)]
    pub internal: bool,
    #[serde(default)]
    pub endpoints: BTreeMap<String, Lease>,
    /// The IPv6 subnet (`--ipv6`); the bridge holds its `::1`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subnet6: Option<Ipv6Net>,
}

impl Leases {
    pub fn path(dir: &Path, bridge: &str) -> PathBuf {
        dir.join(format!("{bridge}.json"))
    }

    pub fn load(dir: &Path, bridge: &str) -> Result<Option<Leases>, NetworkError> {
        let p = Leases::path(dir, bridge);
        match std::fs::read(&p) {
            Ok(b) => serde_json::from_slice(&b)
                .map(Some)
                .map_err(|source| NetworkError::Json { path: p, source }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(NetworkError::Io { path: p, source }),
        }
    }

    /// Every lease file in `dir`.
    pub fn load_all(dir: &Path) -> Vec<Leases> {
        let Ok(rd) = std::fs::read_dir(dir) else {
            return Vec::new();
        };
        let mut v = Vec::new();
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if let Some(bridge) = name.strip_suffix(".json") {
                if let Ok(Some(l)) = Leases::load(dir, bridge) {
                    v.push(l);
                }
            }
        }
        v
    }

    pub fn save(&self, dir: &Path) -> Result<(), NetworkError> {
        let p = Leases::path(dir, &self.bridge);
        let data = serde_json::to_vec_pretty(self).map_err(|source| NetworkError::Json {
            path: p.clone(),
            source,
        })?;
        record::write_atomic(&p, &data).map_err(NetworkError::from)
    }

    pub fn remove(&self, dir: &Path) {
        let _ = std::fs::remove_file(Leases::path(dir, &self.bridge));
    }

    /// The IPv6 gateway (the bridge's address) when IPv6 is on.
    pub fn gateway6(&self) -> Option<Ipv6Addr> {
        self.subnet6.map(|n| n.nth(1))
    }

    /// The IPv6 address that goes with the IPv4 address `ip`: the same host number in the
    /// IPv6 subnet (so it is as unique as the IPv4 lease).
    pub fn ip6_for(&self, ip: Ipv4Addr) -> Option<Ipv6Addr> {
        let host = u32::from(ip) - u32::from(self.subnet.addr);
        self.subnet6.map(|n| n.nth(host))
    }

    /// The lowest free host address (after the gateway's), or `want` if it is free.
    pub fn allocate(&self, want: Option<Ipv4Addr>) -> Result<Ipv4Addr, NetworkError> {
        let used = |ip: Ipv4Addr| {
            ip == self.gateway
                || ip == self.subnet.addr
                || ip == self.subnet.broadcast()
                || self.endpoints.values().any(|l| l.ip == ip)
        };
        if let Some(ip) = want {
            if !self.subnet.contains(ip) {
                return Err(NetworkError::AddressOutsideSubnet {
                    ip,
                    subnet: self.subnet,
                });
            }
            if used(ip) {
                return Err(NetworkError::AddressInUse(ip));
            }
            return Ok(ip);
        }
        (1..self.subnet.size().saturating_sub(1))
            .filter_map(|n| self.subnet.nth(n))
            .find(|ip| !used(*ip))
            .ok_or(NetworkError::PoolExhausted(self.subnet))
    }

    /// The IPv6 address of a new endpoint whose IPv4 address is `ip4` (None without IPv6):
    /// `want` if it is in the subnet and free (`--ip6`), else the address with `ip4`'s host
    /// number ([`Leases::ip6_for`]) if no `--ip6` took it, else the lowest free one.
    pub fn allocate6(
        &self,
        want: Option<Ipv6Addr>,
        ip4: Ipv4Addr,
    ) -> Result<Option<Ipv6Addr>, NetworkError> {
        let Some(net) = self.subnet6 else {
            return Ok(None);
        };
        let used = |ip: Ipv6Addr| {
            ip == net.addr
                || Some(ip) == self.gateway6()
                || self.endpoints.values().any(|l| l.ip6 == Some(ip))
        };
        if let Some(ip) = want {
            if !net.contains(ip) {
                return Err(NetworkError::AddressOutsideSubnet6 { ip, subnet: net });
            }
            if used(ip) {
                return Err(NetworkError::AddressInUse6(ip));
            }
            return Ok(Some(ip));
        }
        if let Some(ip) = self.ip6_for(ip4).filter(|ip| !used(*ip)) {
            return Ok(Some(ip));
        }
        // As many candidates as the IPv4 subnet has addresses: one of them is free.
        (2..self.subnet.size().saturating_add(2))
            .map(|n| net.nth(n))
            .find(|ip| !used(*ip))
            .map(Some)
            .ok_or(NetworkError::PoolExhausted6(net))
    }
}

/// Docker's MAC for an address: `02:42:` followed by the four address bytes.
pub fn mac_for(ip: Ipv4Addr) -> [u8; 6] {
    let o = ip.octets();
    [0x02, 0x42, o[0], o[1], o[2], o[3]]
}

pub fn format_mac(m: &[u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

pub fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let parts: Vec<&str> = s.split(':').collect();
    if parts.len() != 6 {
        return None;
    }
    let mut m = [0u8; 6];
    for (i, p) in parts.iter().enumerate() {
        if p.len() != 2 {
            return None;
        }
        m[i] = u8::from_str_radix(p, 16).ok()?;
    }
    // A multicast MAC cannot be a unicast interface address.
    (m[0] & 1 == 0).then_some(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subnets() {
        let n: Ipv4Net = "172.18.5.9/16".parse().unwrap();
        assert_eq!(n.to_string(), "172.18.0.0/16");
        assert!(n.contains(Ipv4Addr::new(172, 18, 255, 1)));
        assert!(!n.contains(Ipv4Addr::new(172, 19, 0, 1)));
        assert_eq!(n.broadcast(), Ipv4Addr::new(172, 18, 255, 255));
        let small: Ipv4Net = "172.18.3.0/24".parse().unwrap();
        assert!(n.overlaps(&small) && small.overlaps(&n));
        assert!("10.0.0.0/33".parse::<Ipv4Net>().is_err());
        assert!("nonsense".parse::<Ipv4Net>().is_err());
    }

    #[test]
    fn picks_a_subnet_overlapping_no_route() {
        let pools = default_pools();
        let taken = vec![
            "172.17.0.0/16".parse().unwrap(),
            "172.16.0.0/12".parse::<Ipv4Net>().unwrap(),
        ];
        let got = pick_subnet(&pools, &taken).unwrap();
        assert_eq!(got.to_string(), "192.168.0.0/20");
        let taken = vec!["172.17.3.0/24".parse().unwrap()];
        assert_eq!(
            pick_subnet(&pools, &taken).unwrap().to_string(),
            "172.18.0.0/16"
        );
    }

    #[test]
    fn ipv6_subnets_and_addresses() {
        let n: Ipv6Net = "fd12:3456:789a:1::/64".parse().unwrap();
        assert_eq!(n.to_string(), "fd12:3456:789a:1::/64");
        assert!("fd00::/120".parse::<Ipv6Net>().is_err());
        assert!("10.0.0.0/64".parse::<Ipv6Net>().is_err());
        let l = Leases {
            bridge: "b".into(),
            subnet: "10.9.0.0/24".parse().unwrap(),
            gateway: Ipv4Addr::new(10, 9, 0, 1),
            internal: false,
            endpoints: BTreeMap::new(),
            subnet6: Some(n),
        };
        assert_eq!(l.gateway6().unwrap().to_string(), "fd12:3456:789a:1::1");
        assert_eq!(
            l.ip6_for(Ipv4Addr::new(10, 9, 0, 7)).unwrap().to_string(),
            "fd12:3456:789a:1::7"
        );
        let u = Ipv6Net::ula_for("some network id");
        assert_eq!((u.addr.octets()[0], u.prefix), (0xfd, 64));
        assert_eq!(u, Ipv6Net::ula_for("some network id"));
        assert_ne!(u, Ipv6Net::ula_for("another"));
    }

    #[test]
    fn allocation_is_lowest_free_and_reuses() {
        let mut l = Leases {
            bridge: "b".into(),
            subnet: "10.9.0.0/29".parse().unwrap(),
            gateway: Ipv4Addr::new(10, 9, 0, 1),
            internal: false,
            endpoints: BTreeMap::new(),
            subnet6: None,
        };
        let lease = |ip| Lease {
            ip,
            mac: String::new(),
            veth: String::new(),
            names: vec![],
            network: String::new(),
            owner_pid: 0,
            owner_start: 0,
            ports: vec![],
            ip6: None,
        };
        let a = l.allocate(None).unwrap();
        assert_eq!(a, Ipv4Addr::new(10, 9, 0, 2));
        l.endpoints.insert("a".into(), lease(a));
        let b = l.allocate(None).unwrap();
        assert_eq!(b, Ipv4Addr::new(10, 9, 0, 3));
        l.endpoints.insert("b".into(), lease(b));
        l.endpoints.remove("a");
        assert_eq!(l.allocate(None).unwrap(), a);
        assert!(matches!(
            l.allocate(Some(b)),
            Err(NetworkError::AddressInUse(_))
        ));
        for n in 4..=6 {
            l.endpoints
                .insert(n.to_string(), lease(Ipv4Addr::new(10, 9, 0, n)));
        }
        l.endpoints.insert("a".into(), lease(a));
        assert!(matches!(
            l.allocate(None),
            Err(NetworkError::PoolExhausted(_))
        ));
    }

    #[test]
    fn ip6_allocation_fixed_derived_and_fallback() {
        let net: Ipv6Net = "fd12:3456:789a:1::/64".parse().unwrap();
        let mut l = Leases {
            bridge: "b".into(),
            subnet: "10.9.0.0/29".parse().unwrap(),
            gateway: Ipv4Addr::new(10, 9, 0, 1),
            internal: false,
            endpoints: BTreeMap::new(),
            subnet6: Some(net),
        };
        let lease = |ip, ip6: Ipv6Addr| Lease {
            ip,
            mac: String::new(),
            veth: String::new(),
            names: vec![],
            network: String::new(),
            owner_pid: 0,
            owner_start: 0,
            ports: vec![],
            ip6: Some(ip6),
        };
        let v6 = |s: &str| s.parse::<Ipv6Addr>().unwrap();
        let ip = |n| Ipv4Addr::new(10, 9, 0, n);
        // `--ip6` in the subnet: taken as is; the network's and the gateway's are in use.
        assert_eq!(
            l.allocate6(Some(v6("fd12:3456:789a:1::3")), ip(2)).unwrap(),
            Some(v6("fd12:3456:789a:1::3"))
        );
        for taken in ["fd12:3456:789a:1::", "fd12:3456:789a:1::1"] {
            assert!(matches!(
                l.allocate6(Some(v6(taken)), ip(2)),
                Err(NetworkError::AddressInUse6(_))
            ));
        }
        assert!(matches!(
            l.allocate6(Some(v6("fd12:3456:789a:2::3")), ip(2)),
            Err(NetworkError::AddressOutsideSubnet6 { .. })
        ));
        l.endpoints
            .insert("a".into(), lease(ip(2), v6("fd12:3456:789a:1::3")));
        assert!(matches!(
            l.allocate6(Some(v6("fd12:3456:789a:1::3")), ip(3)),
            Err(NetworkError::AddressInUse6(_))
        ));
        // IPv4 .3 derives ::3, which `a` took: the lowest free one (::2) instead.
        assert_eq!(
            l.allocate6(None, ip(3)).unwrap(),
            Some(v6("fd12:3456:789a:1::2"))
        );
        assert_eq!(
            l.allocate6(None, ip(4)).unwrap(),
            Some(v6("fd12:3456:789a:1::4"))
        );
        // Without IPv6 there is none.
        l.subnet6 = None;
        assert_eq!(l.allocate6(None, ip(4)).unwrap(), None);
    }

    #[test]
    fn macs() {
        let m = mac_for(Ipv4Addr::new(172, 17, 0, 2));
        assert_eq!(format_mac(&m), "02:42:ac:11:00:02");
        assert_eq!(parse_mac("02:42:ac:11:00:02"), Some(m));
        assert_eq!(parse_mac("01:00:00:00:00:00"), None);
        assert_eq!(parse_mac("zz"), None);
    }
}
