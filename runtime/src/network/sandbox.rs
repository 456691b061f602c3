//! A container's network sandbox: its network namespace, its endpoints, its `/etc/hosts` and
//! `/etc/resolv.conf`, and (on user networks) its DNS responder. The supervisor sets it up
//! before the init starts and holds it; dropping it detaches every endpoint.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::Path;

use super::driver::{self, Attach};
use super::netlink::{self, link_index};
use super::records::{NetworkRecord, Networks};
use super::{ipam, NetLock, NetworkError, Result};
use crate::container::record::{
    self, process_start_time, EndpointConfig, EndpointState, NetworkMode, PortMapping,
};
use crate::container::{Container, Runtime};

/// The address of the embedded DNS server inside the container (Docker's).
pub const DNS_ADDR: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 11);

/// A container's network namespace and endpoints (held by its supervisor).
pub struct Sandbox {
    netns: Option<OwnedFd>,
    /// Endpoints were (or may have been) attached: release them on drop.
    release: bool,
    /// Path the init (or an OCI runtime) joins: `/proc/<supervisor>/fd/<n>`.
    pub path: String,
    container_id: String,
    pub endpoints: BTreeMap<String, EndpointState>,
    /// The embedded DNS server's socket, bound, served from [`Sandbox::start_dns`].
    dns: Option<super::dns::Bound>,
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        if self.release {
            // Our namespace goes when this process exits, taking the veth pairs with it.
            if let Ok(lock) = NetLock::acquire() {
                driver::release_all(&lock, &self.container_id, false);
            }
        }
    }
}

/// The host's nameservers usable from a container: loopback ones mean nothing in another
/// network namespace and are dropped, as Docker does.
pub fn host_nameservers() -> (Vec<String>, Vec<String>) {
    let found = parse_resolv(&std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default());
    if found.0.is_empty() {
        // systemd-resolved's stub (127.0.0.53) is useless in a container: use the servers it
        // forwards to, as Docker does.
        if let Ok(t) = std::fs::read_to_string("/run/systemd/resolve/resolv.conf") {
            let real = parse_resolv(&t);
            if !real.0.is_empty() {
                return real;
            }
        }
    }
    found
}

fn parse_resolv(text: &str) -> (Vec<String>, Vec<String>) {
    let mut servers = Vec::new();
    let mut search = Vec::new();
    for line in text.lines() {
        let mut w = line.split_whitespace();
        match w.next() {
            Some("nameserver") => {
                if let Some(ns) = w.next() {
                    if !(ns.starts_with("127.") || ns == "::1") {
                        servers.push(ns.to_string());
                    }
                }
            }
            Some("search") => search = w.map(str::to_string).collect(),
            _ => {}
        }
    }
    (servers, search)
}

/// Docker's resolv.conf for a container: its `--dns` servers or the host's (Google's when
/// none is left); with the embedded DNS server, only 127.0.0.11.
pub fn resolv_conf(dns: &[String], dns_search: &[String], embedded: bool) -> String {
    let (host_servers, host_search) = host_nameservers();
    let search = if dns_search.is_empty() {
        host_search
    } else {
        dns_search.to_vec()
    };
    let mut out = String::new();
    if !search.is_empty() {
        out += &format!("search {}\n", search.join(" "));
    }
    if embedded {
        out += &format!("nameserver {DNS_ADDR}\noptions ndots:0\n");
        return out;
    }
    let servers = if !dns.is_empty() {
        dns.to_vec()
    } else if !host_servers.is_empty() {
        host_servers
    } else {
        vec!["8.8.8.8".to_string(), "8.8.4.4".to_string()]
    };
    for s in servers {
        out += &format!("nameserver {s}\n");
    }
    out
}

/// Where the embedded DNS server forwards names it does not know.
pub fn upstream_servers(dns: &[String]) -> Vec<SocketAddr> {
    let list = if dns.is_empty() {
        host_nameservers().0
    } else {
        dns.to_vec()
    };
    list.iter()
        .filter_map(|s| s.parse::<std::net::IpAddr>().ok())
        .map(|ip| SocketAddr::new(ip, 53))
        .collect()
}

/// Docker's `/etc/hosts` for a container with an address.
pub fn hosts_file(hostname: &str, ip: Option<Ipv4Addr>, extra: &[(String, String)]) -> String {
    let mut s = String::from(
        "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\nfe00::0\tip6-localnet\n\
         ff00::0\tip6-mcastprefix\nff02::1\tip6-allnodes\nff02::2\tip6-allrouters\n",
    );
    for (name, addr) in extra {
        s += &format!("{addr}\t{name}\n");
    }
    match ip {
        Some(ip) => s += &format!("{ip}\t{hostname}\n"),
        None => s += &format!("127.0.1.1\t{hostname}\n"),
    }
    s
}

/// `--add-host NAME:IP` (`host-gateway` = the first network's gateway).
fn add_hosts(c: &Container, gateway: Option<Ipv4Addr>) -> Vec<(String, String)> {
    c.config
        .net
        .add_hosts
        .iter()
        .filter_map(|h| {
            let (name, addr) = h.split_once(':')?;
            let addr = if addr == "host-gateway" {
                gateway?.to_string()
            } else {
                addr.to_string()
            };
            Some((name.to_string(), addr))
        })
        .collect()
}

/// `--link NAME[:ALIAS]`: `/etc/hosts` entries (`IP\tALIAS ID NAME`, as Docker writes them)
/// for the linked containers, at their address on a network this container is on too.
fn link_hosts(c: &Container) -> Result<Vec<(String, String)>> {
    let me = c.id().to_string();
    let leases = ipam::Leases::load_all(&super::state_dir());
    let mut out = Vec::new();
    for l in &c.config.net.links {
        let ip = leases
            .iter()
            .filter(|n| n.endpoints.contains_key(&me))
            .find_map(|n| n.endpoints.get(&l.id).map(|e| e.ip))
            .ok_or_else(|| NetworkError::LinkNotRunning {
                name: l.name.clone(),
                from: c.config.name.clone(),
                alias: l.alias.clone(),
            })?;
        let short: String = l.id.chars().take(12).collect();
        let mut names = vec![l.alias.clone(), short];
        if l.name != l.alias {
            names.push(l.name.clone());
        }
        out.push((names.join(" "), ip.to_string()));
    }
    Ok(out)
}

/// The names a container answers to on a network: its name, short id and aliases.
fn dns_names(c: &Container, ep: &EndpointConfig) -> Vec<String> {
    let mut v = vec![c.config.name.clone(), c.id().short().to_string()];
    v.extend(ep.aliases.iter().cloned());
    v
}

/// Free `ethN` name inside the namespace.
fn next_ifname(ns: &OwnedFd) -> Result<String> {
    netlink::in_netns(ns.as_fd(), || {
        Ok((0..64)
            .map(|n| format!("eth{n}"))
            .find(|n| link_index(n).is_none())
            .unwrap_or_else(|| "eth64".to_string()))
    })
    .map_err(super::nl("list links in the container"))
}

/// Docker's checks of an endpoint against its network that need no lease: a fixed address
/// (`--ip`, `--ip6`) only on a user network whose subnet of that family the user gave, and
/// inside it; aliases only on user networks. Run at `create`/`run`/`network connect` (nothing
/// is made when they fail) and again when the endpoint is attached. Whether the address is
/// free is known only then.
pub fn validate_endpoint(net: &NetworkRecord, ep: &EndpointConfig) -> Result<()> {
    let predefined = net.name == "bridge";
    if ep.ip.is_some() && (!net.user_subnet || predefined) {
        return Err(NetworkError::IpOnDefaultBridge);
    }
    if ep.ip6.is_some() && (!net.user_subnet6 || predefined) {
        return Err(NetworkError::IpOnDefaultBridge);
    }
    if let (Some(ip), Some(subnet)) = (ep.ip, net.subnet) {
        if !subnet.contains(ip) {
            return Err(NetworkError::AddressOutsideSubnet { ip, subnet });
        }
    }
    if let (Some(ip), Some(subnet)) = (ep.ip6, net.subnet6) {
        if !subnet.contains(ip) {
            return Err(NetworkError::AddressOutsideSubnet6 { ip, subnet });
        }
    }
    if predefined && !ep.aliases.is_empty() {
        return Err(NetworkError::AliasOnDefault);
    }
    Ok(())
}

/// Attach one endpoint of container `c` (namespace `ns`) to `ep.network`, on behalf of the
/// supervisor `owner`.
#[allow(clippy::too_many_arguments)]
pub fn connect_endpoint(
    root: &Path,
    c: &Container,
    ns: &OwnedFd,
    ep: &EndpointConfig,
    ports: &[PortMapping],
    default_route: bool,
    owner: (i32, u64),
) -> Result<(String, EndpointState)> {
    // Under the lock: the default bridge's subnet comes from its live leases, which another
    // strata may be creating right now.
    let lock = NetLock::acquire()?;
    let net = Networks::open(root).get(&ep.network)?;
    if net.driver != "bridge" {
        return Err(NetworkError::WrongDriver {
            network: net.name.clone(),
            driver: net.driver.clone(),
        });
    }
    validate_endpoint(&net, ep)?;
    let mac = match &ep.mac {
        Some(m) => Some(ipam::parse_mac(m).ok_or_else(|| NetworkError::InvalidMac(m.clone()))?),
        None => None,
    };
    let ifname = next_ifname(ns)?;
    let got = driver::attach(
        &lock,
        ns.as_fd(),
        &Attach {
            container_id: c.id().as_str(),
            network: &net,
            ifname,
            ip: ep.ip,
            ip6: ep.ip6,
            mac,
            names: if net.name == "bridge" {
                Vec::new()
            } else {
                dns_names(c, ep)
            },
            ports: ports.to_vec(),
            default_route,
            owner_pid: owner.0,
            owner_start: owner.1,
        },
    )?;
    Ok((
        net.name.clone(),
        EndpointState {
            network_id: net.id.clone(),
            ip: got.ip.to_string(),
            prefix: got.prefix,
            gateway: got.gateway.to_string(),
            mac: got.mac,
            aliases: ep.aliases.clone(),
            ip6: got.ip6.map(|i| i.to_string()).unwrap_or_default(),
            prefix6: got.prefix6,
            gateway6: got.gateway6.map(|i| i.to_string()).unwrap_or_default(),
        },
    ))
}

impl Sandbox {
    /// Start answering DNS queries (a thread): call once the init has been forked.
    pub fn start_dns(&mut self) -> Result<()> {
        match self.dns.take() {
            Some(b) => super::dns::serve(b).map_err(super::io_at("embedded DNS server")),
            None => Ok(()),
        }
    }

    /// Set up the network of container `c` for its supervisor (this process): `Bridge` gets a
    /// new namespace attached to its networks, `Container` joins another container's; the
    /// others need nothing here. `ports` are the published ports as bound.
    pub fn setup(rt: &Runtime, c: &Container, ports: &[PortMapping]) -> Result<Option<Sandbox>> {
        match c.config.network {
            NetworkMode::Bridge => Sandbox::bridge(rt.root(), c, ports).map(Some),
            NetworkMode::Container => {
                let other = rt
                    .lookup(&c.config.net.container)
                    .map_err(|_| NetworkError::JoinNotRunning(c.config.net.container.clone()))?;
                if !other.is_running() || other.state.pid <= 0 {
                    return Err(NetworkError::JoinNotRunning(other.config.name.clone()));
                }
                // Share the other container's name service files too.
                for (from, to) in [
                    (other.paths.hosts(), c.paths.hosts()),
                    (other.paths.resolv_conf(), c.paths.resolv_conf()),
                ] {
                    if let Ok(data) = std::fs::read(&from) {
                        record::write_atomic(&to, &data).map_err(NetworkError::from)?;
                    }
                }
                Ok(Some(Sandbox {
                    netns: None,
                    release: false,
                    path: format!("/proc/{}/ns/net", other.state.pid),
                    container_id: c.id().to_string(),
                    endpoints: BTreeMap::new(),
                    dns: None,
                }))
            }
            _ => Ok(None),
        }
    }

    fn bridge(root: &Path, c: &Container, ports: &[PortMapping]) -> Result<Sandbox> {
        let ns = netlink::new_netns().map_err(super::nl("create a network namespace"))?;
        let me = std::process::id() as i32;
        let owner = (me, process_start_time(me).unwrap_or(0));
        let mut sb = Sandbox {
            path: format!("/proc/{me}/fd/{}", ns.as_raw_fd()),
            netns: None,
            // From here on, dropping `sb` (an error below) releases whatever got attached.
            release: true,
            container_id: c.id().to_string(),
            endpoints: BTreeMap::new(),
            dns: None,
        };
        let owned = ns;
        let ns = &owned;
        let mut first: Option<EndpointState> = None;
        let mut embedded = false;
        let mut endpoints = BTreeMap::new();
        for (i, ep) in c.config.net.effective_networks().iter().enumerate() {
            let p = if i == 0 { ports } else { &[] };
            let (name, st) = connect_endpoint(root, c, ns, ep, p, i == 0, owner)?;
            embedded |= name != "bridge";
            first.get_or_insert_with(|| st.clone());
            endpoints.insert(name, st);
        }
        let ip = first.as_ref().and_then(|f| f.ip.parse().ok());
        let gw = first.as_ref().and_then(|f| f.gateway.parse().ok());
        let mut extra = add_hosts(c, gw);
        extra.extend(link_hosts(c)?);
        let hosts = hosts_file(&c.config.hostname, ip, &extra);
        let net = &c.config.net;
        let resolv = resolv_conf(&net.dns, &net.dns_search, embedded);
        for (path, data) in [(c.paths.hosts(), hosts), (c.paths.resolv_conf(), resolv)] {
            record::write_atomic(&path, data.as_bytes()).map_err(NetworkError::from)?;
        }
        if embedded {
            let bound = super::dns::bind(
                ns.as_fd(),
                super::dns::Resolver {
                    container_id: c.id().to_string(),
                    state_dir: super::state_dir(),
                    upstream: upstream_servers(&net.dns),
                },
            )
            .map_err(super::io_at("embedded DNS server"))?;
            sb.dns = Some(bound);
        }
        sb.endpoints = endpoints;
        // Keep the namespace for our whole life: `path` names this fd.
        sb.netns = Some(owned);
        Ok(sb)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolv_conf_forms() {
        let (servers, search) = parse_resolv(
            "search a.example b.example\nnameserver 127.0.0.53\nnameserver 10.0.0.2\nnameserver ::1\n",
        );
        assert_eq!(servers, ["10.0.0.2"]);
        assert_eq!(search, ["a.example", "b.example"]);
        let r = resolv_conf(&["10.9.9.9".into()], &["s.example".into()], false);
        assert_eq!(r, "search s.example\nnameserver 10.9.9.9\n");
        let r = resolv_conf(&[], &["s.example".into()], true);
        assert_eq!(
            r,
            "search s.example\nnameserver 127.0.0.11\noptions ndots:0\n"
        );
        assert_eq!(
            upstream_servers(&["10.9.9.9".into(), "bad".into()]),
            ["10.9.9.9:53".parse().unwrap()]
        );
    }

    #[test]
    fn hosts_lists_extra_hosts_and_own_address() {
        let h = hosts_file(
            "box",
            Some(Ipv4Addr::new(10, 1, 0, 2)),
            &[("db".into(), "10.2.0.9".into())],
        );
        assert!(h.starts_with("127.0.0.1\tlocalhost\n"));
        assert!(h.ends_with("10.2.0.9\tdb\n10.1.0.2\tbox\n"), "{h}");
        assert!(hosts_file("box", None, &[]).ends_with("127.0.1.1\tbox\n"));
    }
}
