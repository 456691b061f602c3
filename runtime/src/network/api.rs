//! What the `network` verbs do: connect/disconnect containers, prune, and Docker's
//! `network inspect` shape.

use std::fs::File;
use std::os::fd::OwnedFd;

use chrono::SecondsFormat;
use serde_json::{json, Map, Value};

use super::ipam::Leases;
use super::records::{NetworkRecord, Networks};
use super::sandbox::connect_endpoint;
use super::{driver, NetLock, NetworkError, Result};
use crate::container::record::{self, EndpointConfig, NetworkMode};
use crate::container::{Container, Runtime};

fn bridged(c: &Container) -> Result<()> {
    if c.config.network == NetworkMode::Bridge {
        Ok(())
    } else {
        Err(NetworkError::SharedNamespace(c.config.name.clone()))
    }
}

/// `network connect`: record the network in the container's config and, if it runs, attach
/// an endpoint now (owned by its supervisor).
pub fn connect(rt: &Runtime, c: &Container, ep: EndpointConfig) -> Result<()> {
    bridged(c)?;
    let net = Networks::open(rt.root()).get(&ep.network)?;
    let mut cfg = c.config.clone();
    let mut eps = cfg.net.effective_networks();
    if eps.iter().any(|e| e.network == net.name) {
        return Err(NetworkError::AlreadyConnected {
            container: c.config.name.clone(),
            network: net.name,
        });
    }
    let ep = EndpointConfig {
        network: net.name.clone(),
        ..ep
    };
    super::sandbox::validate_endpoint(&net, &ep)?;
    if c.is_running() && c.state.pid > 0 {
        let path = format!("/proc/{}/ns/net", c.state.pid);
        let ns = OwnedFd::from(File::open(&path).map_err(super::io_at(&path))?);
        let owner = (c.state.supervisor_pid, c.state.supervisor_start);
        let (name, st) = connect_endpoint(rt.root(), c, &ns, &ep, &[], false, owner)?;
        let mut state = c.state.clone();
        state.networks.insert(name, st);
        record::write_json(&c.paths.state(), &state).map_err(NetworkError::from)?;
    }
    eps.push(ep);
    cfg.net.networks = eps;
    record::write_json(&c.paths.config(), &cfg).map_err(NetworkError::from)
}

/// `network disconnect`.
pub fn disconnect(rt: &Runtime, c: &Container, network: &str) -> Result<()> {
    bridged(c)?;
    let net = Networks::open(rt.root()).get(network)?;
    let mut cfg = c.config.clone();
    let mut eps = cfg.net.effective_networks();
    let before = eps.len();
    eps.retain(|e| e.network != net.name);
    if eps.len() == before {
        return Err(NetworkError::NotConnected {
            container: c.config.name.clone(),
            network: net.name,
        });
    }
    if c.is_running() {
        let lock = NetLock::acquire()?;
        driver::detach(&lock, c.id().as_str(), &net.bridge, true);
        let mut state = c.state.clone();
        state.networks.remove(&net.name);
        record::write_json(&c.paths.state(), &state).map_err(NetworkError::from)?;
    }
    cfg.net.networks = eps;
    record::write_json(&c.paths.config(), &cfg).map_err(NetworkError::from)
}

/// Containers of this root attached to `net` right now: (id, name, lease).
fn attached(rt: &Runtime, net: &NetworkRecord) -> Vec<(String, String, super::ipam::Lease)> {
    let Ok(Some(l)) = Leases::load(&super::state_dir(), &net.bridge) else {
        return Vec::new();
    };
    l.endpoints
        .into_iter()
        .filter(|(_, lease)| lease.owner_alive())
        .filter_map(|(id, lease)| {
            let c = rt.lookup(&id).ok()?;
            Some((id, c.config.name, lease))
        })
        .collect()
}

/// `network prune`: remove user networks no running container is attached to.
pub fn prune(rt: &Runtime) -> Result<Vec<String>> {
    let nets = Networks::open(rt.root());
    let mut removed = Vec::new();
    for n in nets.list()? {
        if n.is_predefined() || !attached(rt, &n).is_empty() {
            continue;
        }
        if nets.remove(&n.name).is_ok() {
            removed.push(n.name);
        }
    }
    Ok(removed)
}

/// `network inspect`: Docker's shape.
pub fn inspect_json(rt: &Runtime, n: &NetworkRecord) -> Value {
    let mut containers = Map::new();
    for (id, name, lease) in attached(rt, n) {
        containers.insert(
            id.clone(),
            json!({
                "Name": name,
                "EndpointID": id,
                "MacAddress": lease.mac,
                "IPv4Address": format!("{}/{}", lease.ip, n.subnet.map(|s| s.prefix).unwrap_or(0)),
                "IPv6Address": lease.ip6.map(|i| format!("{i}/{}", n.subnet6.map(|s| s.prefix).unwrap_or(0))).unwrap_or_default(),
            }),
        );
    }
    let mut config: Vec<Value> = match (n.subnet, n.gateway) {
        (Some(s), Some(g)) => vec![json!({"Subnet": s.to_string(), "Gateway": g.to_string()})],
        _ => vec![],
    };
    if let Some(s6) = n.subnet6 {
        config.push(json!({"Subnet": s6.to_string(), "Gateway": s6.nth(1).to_string()}));
    }
    let mut options = Map::new();
    if !n.bridge.is_empty() {
        options.insert("com.docker.network.bridge.name".into(), json!(n.bridge));
    }
    json!({
        "Name": n.name,
        "Id": n.id,
        "Created": n.created.to_rfc3339_opts(SecondsFormat::Nanos, true),
        "Scope": "local",
        "Driver": n.driver,
        "EnableIPv6": n.subnet6.is_some(),
        "IPAM": {"Driver": "default", "Options": Value::Null, "Config": config},
        "Internal": n.internal,
        "Attachable": false,
        "Ingress": false,
        "ConfigFrom": {"Network": ""},
        "ConfigOnly": false,
        "Containers": containers,
        "Options": options,
        "Labels": {},
    })
}

/// Names of the networks a container is on (`ps`'s NETWORKS column).
pub fn container_networks(c: &Container) -> String {
    match c.config.network {
        NetworkMode::Bridge => c
            .config
            .net
            .effective_networks()
            .iter()
            .map(|e| e.network.clone())
            .collect::<Vec<_>>()
            .join(","),
        NetworkMode::Container => format!("container:{}", c.config.net.container),
        other => other.as_str().to_string(),
    }
}
