//! Network records of one strata root (`<root>/networks.json`, rewritten atomically under the
//! network lock) and the three predefined networks: `bridge`, `host`, `none`.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::ipam::{self, Ipv4Net, Ipv6Net, Leases};
use super::netlink::Netlink;
use super::{io_at, nl, NetConfigFile, NetLock, NetworkError, Result};
use crate::container::record::{self, ContainerId};

/// One network.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NetworkRecord {
    pub id: String,
    pub name: String,
    /// `bridge`, `host` or `null` (Docker's driver names).
    pub driver: String,
    /// The bridge link (empty for host/none).
    #[serde(default)]
    pub bridge: String,
    pub subnet: Option<Ipv4Net>,
    pub gateway: Option<Ipv4Addr>,
    #[serde(default)]
    pub internal: bool,
    /// The subnet was given by the user (so `--ip` is allowed, as in Docker).
    #[serde(default)]
    pub user_subnet: bool,
    pub created: DateTime<Utc>,
    /// `--ipv6` / daemon.json `ipv6: true`: the IPv6 subnet (given, or a ULA /64).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subnet6: Option<Ipv6Net>,
    /// The IPv6 subnet was given by the user (so `--ip6` is allowed, as in Docker).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub user_subnet6: bool,
}

impl NetworkRecord {
    pub fn is_predefined(&self) -> bool {
        matches!(self.name.as_str(), "bridge" | "host" | "none")
    }
    pub fn short_id(&self) -> &str {
        &self.id[..12.min(self.id.len())]
    }
}

/// What `network create` asks for.
#[derive(Debug, Clone, Default)]
pub struct CreateNetwork {
    pub name: String,
    pub subnet: Option<String>,
    pub gateway: Option<String>,
    pub internal: bool,
    /// `--ipv6`, with the IPv6 `--subnet` if one was given.
    pub ipv6: bool,
    pub subnet6: Option<String>,
}

/// The networks of one strata root.
#[derive(Debug, Clone)]
pub struct Networks {
    root: PathBuf,
    /// The runroot whose events log gets `create`/`destroy` ([`Networks::with_events`]).
    events: Option<PathBuf>,
}

fn stable_id(root: &Path, name: &str) -> String {
    let mut h = Sha256::new();
    h.update(root.as_os_str().as_encoded_bytes());
    h.update(b"\0");
    h.update(name.as_bytes());
    hex::encode(h.finalize())
}

/// Subnets already in use on the host: routes, live bridges' leases, and (optionally) records.
/// Routes through the link `own` (a bridge being re-used) do not count.
pub(crate) fn taken_subnets(extra: &[Ipv4Net], own: Option<&str>) -> Result<Vec<Ipv4Net>> {
    let mut nlk = Netlink::open().map_err(nl("netlink socket"))?;
    let own = own.and_then(super::netlink::link_index);
    let mut taken: Vec<Ipv4Net> = nlk
        .routes4_oif()
        .map_err(nl("list routes"))?
        .into_iter()
        .filter(|(_, _, oif)| Some(*oif) != own)
        .map(|(a, p, _)| Ipv4Net::new(a, p))
        .collect();
    taken.extend(
        Leases::load_all(&super::state_dir())
            .iter()
            .map(|l| l.subnet),
    );
    taken.extend_from_slice(extra);
    Ok(taken)
}

impl Networks {
    pub fn open(root: &Path) -> Networks {
        Networks {
            root: root.to_path_buf(),
            events: None,
        }
    }

    /// Record network events in the events log under `runroot`.
    pub fn with_events(mut self, runroot: &Path) -> Networks {
        self.events = Some(runroot.to_path_buf());
        self
    }

    /// Docker's network event: the network id, its `name` and `type` (driver).
    fn event(&self, action: &str, rec: &NetworkRecord) {
        if let Some(runroot) = &self.events {
            let ev = crate::events::Event::new("network", action, &rec.id)
                .attr("name", rec.name.clone())
                .attr("type", rec.driver.clone());
            crate::events::record(runroot, &ev);
        }
    }

    fn file(&self) -> PathBuf {
        self.root.join("networks.json")
    }

    fn stored(&self) -> Result<BTreeMap<String, NetworkRecord>> {
        let p = self.file();
        match std::fs::read(&p) {
            Ok(b) => {
                serde_json::from_slice(&b).map_err(|source| NetworkError::Json { path: p, source })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(BTreeMap::new()),
            Err(e) => Err(io_at(p)(e)),
        }
    }

    fn save(&self, all: &BTreeMap<String, NetworkRecord>) -> Result<()> {
        let p = self.file();
        std::fs::create_dir_all(&self.root).map_err(io_at(&self.root))?;
        let data = serde_json::to_vec_pretty(all).map_err(|source| NetworkError::Json {
            path: p.clone(),
            source,
        })?;
        record::write_atomic(&p, &data).map_err(NetworkError::from)
    }

    /// The default `bridge` network: its link from the config, its subnet from the live
    /// bridge's leases, else `bip`, else the first default pool that overlaps no route.
    pub fn default_bridge(&self) -> Result<NetworkRecord> {
        let cfg = NetConfigFile::read(&self.root);
        let bridge = cfg.bridge_name();
        let (subnet, gateway) = if let Some(l) = Leases::load(&super::state_dir(), &bridge)? {
            (l.subnet, l.gateway)
        } else if let Some((gw, prefix)) = cfg.bip {
            (Ipv4Net::new(gw, prefix), gw)
        } else {
            let taken = taken_subnets(&[], Some(&bridge))?;
            let subnet = ipam::pick_subnet(&cfg.pools(), &taken).ok_or(NetworkError::NoPool)?;
            (subnet, subnet.nth(1).ok_or(NetworkError::NoPool)?)
        };
        let ula = Ipv6Net::ula_for(&format!("bridge {bridge}"));
        Ok(NetworkRecord {
            id: stable_id(&self.root, "bridge"),
            name: "bridge".to_string(),
            driver: "bridge".to_string(),
            bridge,
            subnet: Some(subnet),
            gateway: Some(gateway),
            internal: false,
            user_subnet: cfg.bip.is_some(),
            created: DateTime::<Utc>::from(std::time::UNIX_EPOCH),
            subnet6: if cfg.ipv6 {
                Some(cfg.fixed_cidr_v6.unwrap_or(ula))
            } else {
                None
            },
            user_subnet6: cfg.ipv6 && cfg.fixed_cidr_v6.is_some(),
        })
    }

    fn predefined(&self, name: &str) -> NetworkRecord {
        NetworkRecord {
            id: stable_id(&self.root, name),
            name: name.to_string(),
            driver: if name == "host" { "host" } else { "null" }.to_string(),
            bridge: String::new(),
            subnet: None,
            gateway: None,
            internal: false,
            user_subnet: false,
            created: DateTime::<Utc>::from(std::time::UNIX_EPOCH),
            subnet6: None,
            user_subnet6: false,
        }
    }

    /// Every network: the predefined ones, then the user's, by name.
    pub fn list(&self) -> Result<Vec<NetworkRecord>> {
        let mut v = vec![
            self.default_bridge()?,
            self.predefined("host"),
            self.predefined("none"),
        ];
        v.extend(self.stored()?.into_values());
        v.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(v)
    }

    /// By name, full id or unique id prefix.
    pub fn get(&self, key: &str) -> Result<NetworkRecord> {
        match key {
            "bridge" => return self.default_bridge(),
            "host" | "none" => return Ok(self.predefined(key)),
            _ => {}
        }
        let stored = self.stored()?;
        if let Some(n) = stored.get(key) {
            return Ok(n.clone());
        }
        let all = self.list()?;
        if let Some(n) = all.iter().find(|n| n.id == key) {
            return Ok(n.clone());
        }
        let mut hits = all
            .iter()
            .filter(|n| !key.is_empty() && n.id.starts_with(key));
        match (hits.next(), hits.next()) {
            (Some(n), None) => Ok(n.clone()),
            _ => Err(NetworkError::NotFound(key.to_string())),
        }
    }

    /// `network create`: pick or check the subnet (no overlap with routes, live bridges or
    /// other networks of this root), store the record. The bridge link appears with the first
    /// container.
    pub fn create(&self, req: &CreateNetwork) -> Result<NetworkRecord> {
        let _lock = NetLock::acquire()?;
        let mut all = self.stored()?;
        if matches!(req.name.as_str(), "bridge" | "host" | "none") || all.contains_key(&req.name) {
            return Err(NetworkError::Exists(req.name.clone()));
        }
        if !record::valid_name(&req.name) {
            return Err(NetworkError::InvalidName(req.name.clone()));
        }
        let mut ours: Vec<Ipv4Net> = all.values().filter_map(|n| n.subnet).collect();
        ours.extend(self.default_bridge().ok().and_then(|b| b.subnet));
        let cfg = NetConfigFile::read(&self.root);
        let (subnet, user_subnet) = match &req.subnet {
            Some(s) => {
                let n: Ipv4Net = s.parse()?;
                if n.to_string() != *s && !s.starts_with(&format!("{}/", n.addr)) {
                    return Err(NetworkError::InvalidSubnet(s.clone()));
                }
                if ours.iter().any(|o| o.overlaps(&n)) {
                    return Err(NetworkError::Overlap);
                }
                (n, true)
            }
            None => {
                let taken = taken_subnets(&ours, None)?;
                (
                    ipam::pick_subnet(&cfg.pools(), &taken).ok_or(NetworkError::NoPool)?,
                    false,
                )
            }
        };
        let gateway = match &req.gateway {
            Some(g) => {
                let ip: Ipv4Addr = g
                    .parse()
                    .map_err(|_| NetworkError::InvalidGateway(g.clone()))?;
                if !subnet.contains(ip) || ip == subnet.addr || ip == subnet.broadcast() {
                    return Err(NetworkError::InvalidGateway(g.clone()));
                }
                ip
            }
            None => subnet.nth(1).ok_or(NetworkError::NoPool)?,
        };
        let id = ContainerId::generate().to_string();
        let subnet6 = match (&req.subnet6, req.ipv6) {
            (Some(s), _) => Some(s.parse::<Ipv6Net>()?),
            (None, true) => Some(Ipv6Net::ula_for(&id)),
            (None, false) => None,
        };
        let rec = NetworkRecord {
            subnet6,
            user_subnet6: req.subnet6.is_some(),
            bridge: format!("strata{}", &id[..8]),
            id,
            name: req.name.clone(),
            driver: "bridge".to_string(),
            subnet: Some(subnet),
            gateway: Some(gateway),
            internal: req.internal,
            user_subnet,
            created: Utc::now(),
        };
        all.insert(rec.name.clone(), rec.clone());
        self.save(&all)?;
        self.event("create", &rec);
        Ok(rec)
    }

    /// `network rm`: refused for predefined networks and while a live container is attached.
    pub fn remove(&self, key: &str) -> Result<NetworkRecord> {
        let rec = self.get(key)?;
        if rec.is_predefined() {
            return Err(NetworkError::Predefined(rec.name));
        }
        let lock = NetLock::acquire()?;
        super::driver::reclaim(&lock);
        if let Some(l) = Leases::load(&lock.dir, &rec.bridge)? {
            if !l.endpoints.is_empty() {
                return Err(NetworkError::ActiveEndpoints {
                    name: rec.name,
                    id: rec.id,
                });
            }
        }
        let mut all = self.stored()?;
        all.remove(&rec.name);
        self.save(&all)?;
        self.event("destroy", &rec);
        Ok(rec)
    }
}
