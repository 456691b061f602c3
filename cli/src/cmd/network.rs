//! `strata network …` and the network flags of `run`.

use std::io::Write;
use std::net::Ipv4Addr;

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use strata_runtime::container::record::{EndpointConfig, Link, NetSettings, NetworkMode};
use strata_runtime::network::api;
use strata_runtime::network::records::CreateNetwork;

use super::Global;
use crate::template::Format;

/// Network flags of `run`.
#[derive(clap::Args, Debug, Default)]
pub struct RunNetArgs {
    /// Add network-scoped alias for the container
    #[arg(long = "network-alias", alias = "net-alias")]
    pub network_alias: Vec<String>,
    /// IPv4 address (e.g., 172.30.100.104)
    #[arg(long)]
    pub ip: Option<String>,
    /// IPv6 address (e.g., 2001:db8::33)
    #[arg(long)]
    pub ip6: Option<String>,
    /// Container MAC address (e.g., 92:d0:c6:0a:29:33)
    #[arg(long = "mac-address")]
    pub mac_address: Option<String>,
    /// Set custom DNS servers
    #[arg(long)]
    pub dns: Vec<String>,
    /// Set custom DNS search domains
    #[arg(long = "dns-search")]
    pub dns_search: Vec<String>,
    /// Add a custom host-to-IP mapping (host:ip)
    #[arg(long = "add-host")]
    pub add_host: Vec<String>,
    /// Publish all exposed ports to random ports
    #[arg(short = 'P', long = "publish-all")]
    pub publish_all: bool,
    /// Add link to another container (name[:alias])
    #[arg(long)]
    pub link: Vec<String>,
}

fn parse_ip(flag: &str, s: &str) -> Result<Ipv4Addr> {
    s.parse().map_err(|_| {
        anyhow::anyhow!("invalid argument \"{s}\" for \"--{flag}\" flag: invalid IP address: {s}")
    })
}

/// `--ip6`: an IPv6 address (an IPv4 one is Docker's daemon error, in one line).
fn parse_ip6(flag: &str, s: &str) -> Result<std::net::Ipv6Addr> {
    match s.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V6(ip)) if !ip.is_unspecified() => Ok(ip),
        Ok(_) => bail!("invalid IPv6 address: {s}"),
        Err(_) => bail!("invalid argument \"{s}\" for \"--{flag}\" flag: invalid IP address: {s}"),
    }
}

/// The container's network settings from `--network` and its companions.
pub fn run_settings(global: &Global, network: &str, a: &RunNetArgs) -> Result<NetSettings> {
    for h in &a.add_host {
        let ok = h.split_once(':').is_some_and(|(n, ip)| {
            !n.is_empty() && (ip == "host-gateway" || ip.parse::<std::net::IpAddr>().is_ok())
        });
        if !ok {
            bail!("invalid argument \"{h}\" for \"--add-host\" flag: bad format for add-host: \"{h}\"");
        }
    }
    for d in &a.dns {
        parse_dns(d)?;
    }
    let mut links = Vec::new();
    for l in &a.link {
        let (name, alias) = l.split_once(':').unwrap_or((l, l));
        let name = name.trim_start_matches('/');
        let alias = alias.trim_start_matches('/');
        if name.is_empty() || alias.is_empty() {
            bail!("invalid argument \"{l}\" for \"--link\" flag: invalid link format");
        }
        let c = global
            .containers()
            .lookup(name)
            .with_context(|| format!("could not get container for {name}"))?;
        links.push(Link {
            id: c.id().to_string(),
            name: c.config.name.clone(),
            alias: alias.to_string(),
        });
    }
    if !links.is_empty() && !matches!(NetworkMode::parse(network), Some(NetworkMode::Bridge)) {
        bail!("conflicting options: container type network can't be used with links. This would result in undefined behavior");
    }
    let mut net = NetSettings {
        links,
        dns: a.dns.clone(),
        dns_search: a.dns_search.clone(),
        add_hosts: a.add_host.clone(),
        ..Default::default()
    };
    match NetworkMode::parse(network) {
        Some(NetworkMode::Container) => {
            let target = network.trim_start_matches("container:");
            let c = global.containers().lookup(target)?;
            net.container = c.id().to_string();
        }
        Some(NetworkMode::Bridge) => {
            let name = if network == "default" {
                "bridge"
            } else {
                network
            };
            let rec = global.engine().networks().get(name)?;
            let ip = a.ip.as_deref().map(|s| parse_ip("ip", s)).transpose()?;
            let ip6 = a.ip6.as_deref().map(|s| parse_ip6("ip6", s)).transpose()?;
            let ep = EndpointConfig {
                network: rec.name.clone(),
                aliases: a.network_alias.clone(),
                ip,
                mac: a.mac_address.clone(),
                ip6,
            };
            strata_runtime::network::sandbox::validate_endpoint(&rec, &ep)?;
            if rec.name != "bridge"
                || ip.is_some()
                || ep.ip6.is_some()
                || ep.mac.is_some()
                || !ep.aliases.is_empty()
            {
                net.networks.push(ep);
            }
        }
        _ => {}
    }
    Ok(net)
}

fn parse_dns(d: &str) -> Result<std::net::IpAddr> {
    d.parse()
        .map_err(|_| anyhow::anyhow!("{d} is not an ip address"))
}

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(clap::Subcommand, Debug)]
enum Cmd {
    /// Create a network
    Create(CreateArgs),
    /// List networks
    #[command(alias = "list")]
    Ls(LsArgs),
    /// Remove one or more networks
    #[command(alias = "remove")]
    Rm(RmArgs),
    /// Display detailed information on one or more networks
    Inspect(InspectArgs),
    /// Connect a container to a network
    Connect(ConnectArgs),
    /// Disconnect a container from a network
    Disconnect(DisconnectArgs),
    /// Remove all unused networks
    Prune(PruneArgs),
}

#[derive(clap::Args, Debug)]
struct CreateArgs {
    /// Driver to manage the Network
    #[arg(short, long, default_value = "bridge")]
    driver: String,
    /// Subnet in CIDR format that represents a network segment (an IPv4 one and, with
    /// --ipv6, an IPv6 one)
    #[arg(long)]
    subnet: Vec<String>,
    /// IPv4 Gateway for the master subnet
    #[arg(long)]
    gateway: Option<String>,
    /// Restrict external access to the network
    #[arg(long)]
    internal: bool,
    /// Enable or disable IPv6 networking
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    ipv6: Option<bool>,
    name: String,
}

#[derive(clap::Args, Debug)]
struct LsArgs {
    /// Only display network IDs
    #[arg(short, long)]
    quiet: bool,
    /// Do not truncate the output
    #[arg(long)]
    no_trunc: bool,
    /// Format output using a custom template
    #[arg(long)]
    format: Option<String>,
    /// Provide filter values (e.g. "driver=bridge", "name=app", "id=…")
    #[arg(short, long)]
    filter: Vec<String>,
}

#[derive(clap::Args, Debug)]
struct RmArgs {
    #[arg(required = true)]
    networks: Vec<String>,
}

#[derive(clap::Args, Debug)]
struct InspectArgs {
    /// Format output using a custom template
    #[arg(short, long)]
    format: Option<String>,
    #[arg(required = true)]
    networks: Vec<String>,
}

#[derive(clap::Args, Debug)]
struct ConnectArgs {
    /// Add network-scoped alias for the container
    #[arg(long)]
    alias: Vec<String>,
    /// IPv4 address (e.g., 172.30.100.104)
    #[arg(long)]
    ip: Option<String>,
    /// IPv6 address (e.g., 2001:db8::33)
    #[arg(long)]
    ip6: Option<String>,
    network: String,
    container: String,
}

#[derive(clap::Args, Debug)]
struct DisconnectArgs {
    /// Force the container to disconnect from a network
    #[arg(short, long)]
    force: bool,
    network: String,
    container: String,
}

#[derive(clap::Args, Debug)]
struct PruneArgs {
    /// Do not prompt for confirmation
    #[arg(short, long)]
    force: bool,
}

pub fn run(global: &Global, args: Args) -> Result<()> {
    let nets = global.engine().networks();
    match args.cmd {
        Cmd::Create(a) => {
            if a.driver != "bridge" {
                bail!("plugin \"{}\" not found", a.driver);
            }
            let (v6, v4): (Vec<String>, Vec<String>) =
                a.subnet.into_iter().partition(|s| s.contains(':'));
            if v4.len() > 1 || v6.len() > 1 {
                bail!("multiple overlapping subnet configuration is not supported");
            }
            let ipv6 = a.ipv6.unwrap_or(false) || !v6.is_empty();
            let rec = nets.create(&CreateNetwork {
                name: a.name,
                subnet: v4.into_iter().next(),
                gateway: a.gateway,
                internal: a.internal,
                ipv6,
                subnet6: v6.into_iter().next(),
            })?;
            println!("{}", rec.id);
        }
        Cmd::Ls(a) => {
            let mut list = nets.list()?;
            let f = strata_runtime::filters::Filters::parse(
                &a.filter,
                &["name", "driver", "id", "type"],
            )?;
            f.check_values("type", &["builtin", "custom"])?;
            list.retain(|n| {
                f.any_of("name", |v| n.name.contains(v))
                    && f.any_of("driver", |v| n.driver == v)
                    && f.any_of("id", |v| n.id.starts_with(v))
                    && f.any_of("type", |v| (v == "builtin") == n.is_predefined())
            });
            let id = |n: &strata_runtime::network::NetworkRecord| {
                if a.no_trunc {
                    n.id.clone()
                } else {
                    n.short_id().to_string()
                }
            };
            if a.quiet {
                for n in &list {
                    println!("{}", id(n));
                }
                return Ok(());
            }
            let format = Format::new(
                a.format.as_deref(),
                "{{.ID}}\t{{.Name}}\t{{.Driver}}\t{{.Scope}}",
            )?;
            let header = json!({"ID": "NETWORK ID", "Name": "NAME", "Driver": "DRIVER",
                                "Scope": "SCOPE", "Internal": "INTERNAL", "IPv6": "IPV6",
                                "CreatedAt": "CREATED AT"});
            let rows: Vec<Value> = list
                .iter()
                .map(|n| {
                    json!({"ID": id(n), "Name": n.name, "Driver": n.driver, "Scope": "local",
                           "Internal": n.internal.to_string(), "IPv6": "false",
                           "CreatedAt": n.created.format("%Y-%m-%d %H:%M:%S %z UTC").to_string()})
                })
                .collect();
            let text = format.render(&header, &rows)?;
            std::io::stdout().lock().write_all(text.as_bytes())?;
        }
        Cmd::Rm(a) => {
            let mut failed = false;
            for n in &a.networks {
                match nets.remove(n) {
                    Ok(_) => println!("{n}"),
                    Err(e) => {
                        eprintln!("Error: {e}");
                        failed = true;
                    }
                }
            }
            if failed {
                return Err(super::ExitStatus(1).into());
            }
        }
        Cmd::Inspect(a) => {
            let rt = global.containers();
            let mut objects = Vec::new();
            let mut missing = Vec::new();
            for n in &a.networks {
                match nets.get(n) {
                    Ok(rec) => objects.push(api::inspect_json(rt, &rec)),
                    Err(e) => missing.push(e),
                }
            }
            super::inspect::print(&objects, a.format.as_deref())?;
            if let Some(e) = missing.into_iter().next() {
                return Err(e.into());
            }
        }
        Cmd::Connect(a) => {
            let rt = global.containers();
            let c = rt.lookup(&a.container)?;
            let ip = a.ip.as_deref().map(|s| parse_ip("ip", s)).transpose()?;
            let ip6 = a.ip6.as_deref().map(|s| parse_ip6("ip6", s)).transpose()?;
            api::connect(
                rt,
                &c,
                EndpointConfig {
                    network: a.network,
                    aliases: a.alias,
                    ip,
                    mac: None,
                    ip6,
                },
            )?;
        }
        Cmd::Disconnect(a) => {
            let rt = global.containers();
            let c = rt.lookup(&a.container)?;
            let _ = a.force;
            api::disconnect(rt, &c, &a.network)?;
        }
        Cmd::Prune(a) => {
            if !a.force
                && !super::image::confirm(
                    "WARNING! This will remove all custom networks not used by at least one container.",
                )?
            {
                return Ok(());
            }
            let removed = api::prune(global.containers()).context("prune networks")?;
            if !removed.is_empty() {
                println!("Deleted Networks:");
                for n in removed {
                    println!("{n}");
                }
            }
        }
    }
    Ok(())
}
