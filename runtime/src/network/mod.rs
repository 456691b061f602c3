//! Container networking (rootful), in netavark's shape: network records, a bridge driver that
//! sets up links, IPAM apart from link setup, firewall rules in a table of strata's own, and an
//! embedded DNS responder.
//!
//! Vocabulary:
//! - *network*: a record (`<root>/networks.json`: name, id, subnet, gateway, internal, bridge
//!   link name). `bridge` (the default, link `strata0` unless `"bridge"` in `<root>/strata.json`
//!   says otherwise), `host` and `none` always exist and are never stored.
//! - *bridge*: the Linux bridge link of a network, created when its first endpoint attaches
//!   and deleted with its last endpoint (so nothing stays on the host once no container runs).
//! - *lease* / *endpoint*: one container on one network: an address, a MAC, a veth pair (host end
//!   on the bridge, peer `eth0`… inside the container's network namespace), DNS names and DNATed
//!   ports. Leases of a bridge are host-wide state in [`state_dir`]`/<bridge>.json`.
//! - *sandbox*: a container's network namespace and its endpoints ([`sandbox::Sandbox`]); the
//!   supervisor holds it, and dropping it detaches every endpoint.
//! - *owner*: the supervisor (pid + start time) holding a lease. A lease whose owner died is
//!   *stale*: the next network operation reclaims its address, veth and NAT rules.
//!
//! Lock order: the host-wide network lock ([`NetLock`], `<state dir>/.lock`) is taken alone,
//! around every change to links, leases, records and nft rules; it is never held while waiting
//! on a container.

use std::fs::File;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

pub mod api;
pub mod dns;
pub mod driver;
pub mod ipam;
pub mod netlink;
pub mod nft;
pub mod records;
pub mod sandbox;

pub use crate::container::record::EndpointState;
pub use ipam::{Ipv4Net, Ipv6Net};
pub use records::{NetworkRecord, Networks};
pub use sandbox::Sandbox;

/// Errors of network operations; `Display` texts are Docker's where Docker has one.
#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("corrupt network state {path}: {source}")]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    /// Writing a container's or a network's record.
    #[error(transparent)]
    Record(Box<crate::container::ContainerError>),
    #[error("Cannot link to a non running container: /{name} AS /{from}/{alias}")]
    LinkNotRunning {
        name: String,
        from: String,
        alias: String,
    },
    #[error("invalid network name \"{0}\", only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed")]
    InvalidName(String),
    #[error("container cannot be connected to network {network} ({driver} driver)")]
    WrongDriver { network: String, driver: String },
    #[error("container sharing network namespace with another container or host cannot be connected to any other network ({0})")]
    SharedNamespace(String),
    #[error("network {0} not found")]
    NotFound(String),
    #[error("network with name {0} already exists")]
    Exists(String),
    #[error("invalid subnet {0}")]
    InvalidSubnet(String),
    #[error("invalid gateway {0}")]
    InvalidGateway(String),
    #[error("Pool overlaps with other one on this address space")]
    Overlap,
    #[error("could not find an available, non-overlapping IPv4 address pool among the defaults to assign to the network")]
    NoPool,
    #[error("no available IPv4 addresses on this network's address pools: {0}")]
    PoolExhausted(Ipv4Net),
    #[error("Address already in use: {0}")]
    AddressInUse(Ipv4Addr),
    #[error(
        "invalid address {ip}: It does not belong to any of this network's subnets ({subnet})"
    )]
    AddressOutsideSubnet { ip: Ipv4Addr, subnet: Ipv4Net },
    #[error("user specified IP address is supported only when connecting to networks with user configured subnets")]
    IpOnDefaultBridge,
    /// `--ip6` with an address already leased on the network.
    #[error("Address already in use: {0}")]
    AddressInUse6(std::net::Ipv6Addr),
    /// `--ip6` outside the network's IPv6 subnet (Docker's wording for `--ip`, with the subnet).
    #[error(
        "invalid address {ip}: It does not belong to any of this network's subnets ({subnet})"
    )]
    AddressOutsideSubnet6 {
        ip: std::net::Ipv6Addr,
        subnet: Ipv6Net,
    },
    #[error("no available IPv6 addresses on this network's address pools: {0}")]
    PoolExhausted6(Ipv6Net),
    #[error("{0} is a pre-defined network and cannot be removed")]
    Predefined(String),
    #[error("error while removing network: network {name} id {id} has active endpoints")]
    ActiveEndpoints { name: String, id: String },
    #[error("bridge {bridge} is in use with subnet {have}, not {want}")]
    BridgeSubnet {
        bridge: String,
        have: Ipv4Net,
        want: Ipv4Net,
    },
    #[error("{what}: {source}")]
    Netlink {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot run nft (Debian package nftables): {0}")]
    NftMissing(#[source] std::io::Error),
    #[error("nft: {0}")]
    Nft(String),
    #[error("container {container} is already connected to network {network}")]
    AlreadyConnected { container: String, network: String },
    #[error("container {container} is not connected to network {network}")]
    NotConnected { container: String, network: String },
    #[error("network-scoped alias is supported only for containers in user defined networks")]
    AliasOnDefault,
    #[error("invalid MAC address: {0}")]
    InvalidMac(String),
    #[error("cannot join the network of container {0}: it is not running")]
    JoinNotRunning(String),
}

pub type Result<T, E = NetworkError> = std::result::Result<T, E>;

impl From<crate::container::ContainerError> for NetworkError {
    fn from(e: crate::container::ContainerError) -> NetworkError {
        NetworkError::Record(Box::new(e))
    }
}

pub(crate) fn io_at(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> NetworkError {
    let path = path.into();
    move |source| NetworkError::Io { path, source }
}

pub(crate) fn nl(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> NetworkError {
    let what = what.into();
    move |source| NetworkError::Netlink { what, source }
}

/// Host-wide runtime state of links (leases per bridge): `/run/strata/net`, or
/// `$STRATA_NET_STATE`. Links are host-wide, so this is not under `--root`.
pub fn state_dir() -> PathBuf {
    std::env::var_os("STRATA_NET_STATE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/run/strata/net"))
}

/// The host-wide network lock (flock on `<state dir>/.lock`), released on drop.
pub struct NetLock {
    _lock: nix::fcntl::Flock<File>,
    pub dir: PathBuf,
}

impl NetLock {
    pub fn acquire() -> Result<NetLock> {
        let dir = state_dir();
        std::fs::create_dir_all(&dir).map_err(io_at(&dir))?;
        let path = dir.join(".lock");
        let f = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io_at(&path))?;
        let lock = nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusive)
            .map_err(|(_, e)| io_at(&path)(std::io::Error::from(e)))?;
        Ok(NetLock { _lock: lock, dir })
    }
}

/// Reclaim every stale lease (owner gone): its veth, address and DNAT rules; bridges left
/// without endpoints go too. Cheap when nothing is stale.
pub fn reclaim_stale() -> Result<()> {
    let lock = NetLock::acquire()?;
    driver::reclaim(&lock);
    Ok(())
}

/// Release every endpoint of a container (its supervisor is gone or it is being removed).
pub fn release_container(container_id: &str) {
    if let Ok(lock) = NetLock::acquire() {
        driver::release_all(&lock, container_id, true);
    }
}

/// `<root>/strata.json`, the daemon.json-like config: `bridge` (link name of the default
/// network), `bip` (its gateway/prefix), `default-address-pools` (`[{"base", "size"}]`).
#[derive(Debug, Clone, Default)]
pub struct NetConfigFile {
    pub bridge: Option<String>,
    pub bip: Option<(Ipv4Addr, u8)>,
    pub pools: Vec<Ipv4Net>,
    /// `"ipv6": true`: the default bridge gets IPv6 (`"fixed-cidr-v6"`, else a ULA /64).
    pub ipv6: bool,
    pub fixed_cidr_v6: Option<Ipv6Net>,
}

impl NetConfigFile {
    pub fn read(root: &Path) -> NetConfigFile {
        let v: serde_json::Value = std::fs::read(root.join("strata.json"))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        let bridge = v.get("bridge").and_then(|b| b.as_str()).map(str::to_string);
        let bip = v.get("bip").and_then(|b| b.as_str()).and_then(|s| {
            let (a, p) = s.split_once('/')?;
            Some((a.parse().ok()?, p.parse().ok()?))
        });
        let mut pools = Vec::new();
        if let Some(arr) = v.get("default-address-pools").and_then(|p| p.as_array()) {
            for p in arr {
                let (Some(base), Some(size)) = (
                    p.get("base").and_then(|b| b.as_str()),
                    p.get("size").and_then(|s| s.as_u64()),
                ) else {
                    continue;
                };
                let Ok(base) = base.parse::<Ipv4Net>() else {
                    continue;
                };
                let size = size.clamp(base.prefix as u64, 30) as u8;
                let count = 1u32 << (size - base.prefix).min(16);
                for i in 0..count {
                    let step = 1u64 << (32 - size as u32);
                    let addr = u32::from(base.addr) as u64 + i as u64 * step;
                    pools.push(Ipv4Net::new(Ipv4Addr::from(addr as u32), size));
                }
            }
        }
        let ipv6 = v.get("ipv6").and_then(|b| b.as_bool()).unwrap_or(false);
        let fixed_cidr_v6 = v
            .get("fixed-cidr-v6")
            .and_then(|b| b.as_str())
            .and_then(|s| s.parse().ok());
        NetConfigFile {
            bridge,
            bip,
            pools,
            ipv6,
            fixed_cidr_v6,
        }
    }

    pub fn bridge_name(&self) -> String {
        self.bridge.clone().unwrap_or_else(|| "strata0".to_string())
    }

    pub fn pools(&self) -> Vec<Ipv4Net> {
        if self.pools.is_empty() {
            ipam::default_pools()
        } else {
            self.pools.clone()
        }
    }
}
