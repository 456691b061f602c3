//! `inspect CONTAINER`: Docker's JSON shape (the fields strata has), built from the record.

use chrono::SecondsFormat;
use serde_json::{json, Map, Value};

use super::{ports, Container, NetworkMode, Status};

const ZERO_TIME: &str = "0001-01-01T00:00:00Z";

fn time(t: Option<chrono::DateTime<chrono::Utc>>) -> String {
    t.map(|t| t.to_rfc3339_opts(SecondsFormat::Nanos, true))
        .unwrap_or_else(|| ZERO_TIME.to_string())
}

/// The container as `docker inspect` shows it.
pub fn to_json(c: &Container) -> Value {
    let cfg = &c.config;
    let st = &c.state;
    let argv = cfg.argv();
    let ports_src = if st.ports.is_empty() {
        &cfg.ports
    } else {
        &st.ports
    };
    // PortBindings: as asked (`HostIp` "" = every address); Ports: as bound while running
    // (IPv4 and IPv6 entries under one key, as Docker lists them).
    let mut net_ports = Map::new();
    let mut bindings = Map::new();
    let add = |m: &mut Map<String, Value>, p: &super::PortMapping| {
        let key = format!("{}/{}", p.container_port, p.proto);
        let b = json!({"HostIp": p.host_ip, "HostPort": p.host_port.to_string()});
        match m.entry(key).or_insert_with(|| json!([])) {
            Value::Array(a) => a.push(b),
            other => *other = json!([b]),
        }
    };
    for p in &cfg.ports {
        add(&mut bindings, p);
        net_ports.insert(format!("{}/{}", p.container_port, p.proto), Value::Null);
    }
    if c.is_running() {
        net_ports.clear();
        for p in ports_src {
            add(&mut net_ports, p);
        }
    }
    let binds: Vec<String> = cfg
        .volumes
        .iter()
        .map(|v| {
            format!(
                "{}:{}{}",
                v.source.display(),
                v.target,
                if v.read_only { ":ro" } else { "" }
            )
        })
        .collect();
    let mounts: Vec<Value> = cfg
        .volumes
        .iter()
        .map(|v| {
            json!({"Type": "bind", "Source": v.source, "Destination": v.target,
                   "Mode": if v.read_only { "ro" } else { "" }, "RW": !v.read_only,
                   "Propagation": "rprivate"})
        })
        .collect();
    let lower_dir = c
        .layers()
        .lowers
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(":");
    let exposed: Map<String, Value> = cfg
        .ports
        .iter()
        .map(|p| (format!("{}/{}", p.container_port, p.proto), json!({})))
        .collect();
    let mut out = json!({
        "Id": cfg.id.as_str(),
        "Created": cfg.created.to_rfc3339_opts(SecondsFormat::Nanos, true),
        "Path": argv.first().cloned().unwrap_or_default(),
        "Args": argv.iter().skip(1).collect::<Vec<_>>(),
        "State": {
            "Status": st.status.as_str(),
            "Running": st.status == Status::Running,
            "Paused": super::manage::is_paused(&cfg.id),
            "Restarting": false,
            "OOMKilled": false,
            "Dead": false,
            "Pid": st.pid,
            "ExitCode": st.exit_code,
            "Error": st.error,
            "StartedAt": time(st.started_at),
            "FinishedAt": time(st.finished_at),
        },
        "Image": cfg.image_id.as_ref().map_or("", |i| i.as_str()),
        "ResolvConfPath": c.paths.resolv_conf(),
        "HostnamePath": c.paths.hostname(),
        "HostsPath": c.paths.hosts(),
        "LogPath": c.paths.log(),
        "Name": format!("/{}", cfg.name),
        "RestartCount": st.restart_count,
        "Driver": cfg.driver.name(),
        "Platform": "linux",
        "HostConfig": {
            "Binds": binds,
            "NetworkMode": network_mode(c),
            "Dns": cfg.net.dns,
            "DnsSearch": cfg.net.dns_search,
            "ExtraHosts": if cfg.net.add_hosts.is_empty() { Value::Null } else { json!(cfg.net.add_hosts) },
            "PortBindings": bindings,
            "AutoRemove": cfg.auto_remove,
            "Runtime": cfg.runtime,
            "Memory": cfg.resources.memory.unwrap_or(0),
            "NanoCpus": cfg.resources.cpus.map(|c| (c * 1e9) as i64).unwrap_or(0),
            "PidsLimit": cfg.resources.pids_limit,
            "Privileged": cfg.security.privileged,
            "CapAdd": none_if_empty(&cfg.security.cap_add),
            "CapDrop": none_if_empty(&cfg.security.cap_drop),
            "SecurityOpt": match &cfg.security.seccomp {
                super::SeccompMode::Default => serde_json::Value::Null,
                super::SeccompMode::Unconfined => serde_json::json!(["seccomp=unconfined"]),
                // Docker keeps the profile's text here too.
                super::SeccompMode::Profile(p) => serde_json::json!([format!("seccomp={p}")]),
            },
            "ReadonlyRootfs": cfg.security.read_only,
            "Tmpfs": cfg.security.tmpfs.iter().map(|t| (t.target.clone(), serde_json::Value::from(t.options.join(",")))).collect::<serde_json::Map<_, _>>(),
            "Devices": cfg.security.devices.iter().map(|d| serde_json::json!({
                "PathInContainer": d.node.path,
                "CgroupPermissions": d.access,
            })).collect::<Vec<_>>(),
            "LogConfig": cfg.log_config,
            "Ulimits": if cfg.security.ulimits.is_empty() { Value::Null } else {
                json!(cfg.security.ulimits.iter().map(|u| json!({"Name": u.name, "Hard": u.hard, "Soft": u.soft})).collect::<Vec<_>>())
            },
            "ShmSize": cfg.security.shm_size.unwrap_or(64 << 20),
            "Sysctls": if cfg.security.sysctls.is_empty() { Value::Null } else { json!(cfg.security.sysctls) },
            "GroupAdd": none_if_empty(&cfg.security.group_add),
            "PidMode": if cfg.security.pid_host { "host".to_string() } else if !cfg.security.pid_container.is_empty() { format!("container:{}", cfg.security.pid_container) } else { String::new() },
            "IpcMode": if cfg.security.ipc_host { "host".to_string() } else if cfg.security.ipc_none { "none".to_string() } else if cfg.security.ipc_shareable { "shareable".to_string() } else if !cfg.security.ipc_container.is_empty() { format!("container:{}", cfg.security.ipc_container) } else { "private".to_string() },
            "UTSMode": if cfg.security.uts_host { "host" } else { "" },
        },
        "GraphDriver": {
            "Name": cfg.driver.name(),
            "Data": {
                "LowerDir": lower_dir,
                "UpperDir": c.paths.upper(),
                "WorkDir": c.paths.work(),
                "MergedDir": c.paths.rootfs(),
            },
        },
        "Mounts": mounts,
        "Config": {
            "Hostname": cfg.hostname,
            "User": cfg.user,
            "Tty": cfg.tty,
            "OpenStdin": cfg.open_stdin,
            "Env": cfg.env,
            "Cmd": cfg.cmd,
            "Entrypoint": if cfg.entrypoint.is_empty() { Value::Null } else { json!(cfg.entrypoint) },
            "Image": cfg.image,
            "WorkingDir": cfg.working_dir,
            "ExposedPorts": exposed,
            "StopSignal": cfg.stop_signal,
            "Labels": cfg.labels,
        },
        "NetworkSettings": network_settings(c, net_ports, ports_src),
    });
    // Docker shows `no` for the default policy. (Set here: one more field in the literal above
    // passes serde_json's macro recursion limit.)
    // Docker's zero values for what was not set.
    let r = &cfg.resources;
    let hc = &mut out["HostConfig"];
    hc["MemorySwap"] = json!(r.memory_swap.unwrap_or(0));
    hc["MemoryReservation"] = json!(r.memory_reservation.unwrap_or(0));
    hc["CpuShares"] = json!(r.cpu_shares.unwrap_or(0));
    hc["CpusetCpus"] = json!(r.cpuset_cpus.as_deref().unwrap_or(""));
    hc["CpusetMems"] = json!(r.cpuset_mems.as_deref().unwrap_or(""));
    hc["DeviceCgroupRules"] = none_if_empty(&cfg.security.device_cgroup_rules);
    out["HostConfig"]["OomScoreAdj"] = json!(cfg.oom_score_adj);
    out["Config"]["Domainname"] = json!(cfg.domainname);
    out["HostConfig"]["RestartPolicy"] = json!({
        "Name": if cfg.restart.is_none() { "no" } else { cfg.restart.name.as_str() },
        "MaximumRetryCount": cfg.restart.max_retries,
    });
    // Docker shows `State.Health` and `Config.Healthcheck` only for a container with a check.
    if let Some(h) = &cfg.healthcheck {
        out["Config"]["Healthcheck"] = json!(h);
        if let Some(state) = super::health::read(c) {
            out["State"]["Health"] = json!(state);
        }
    }
    out
}

/// `HostConfig.NetworkMode`: Docker's names (`bridge`, a user network, `container:<id>`).
fn network_mode(c: &Container) -> String {
    let cfg = &c.config;
    match cfg.network {
        NetworkMode::Bridge => cfg
            .net
            .networks
            .first()
            .map(|n| n.network.clone())
            .unwrap_or_else(|| "bridge".to_string()),
        NetworkMode::Container => format!("container:{}", cfg.net.container),
        other => other.as_str().to_string(),
    }
}

/// `NetworkSettings`: the default bridge's endpoint at the top level, every endpoint under
/// `Networks` (addresses only while running, as Docker).
fn network_settings(
    c: &Container,
    net_ports: Map<String, Value>,
    ports_src: &[super::PortMapping],
) -> Value {
    let cfg = &c.config;
    let st = &c.state;
    let mut networks = Map::new();
    let names: Vec<(String, Vec<String>)> = match cfg.network {
        NetworkMode::Bridge => cfg
            .net
            .effective_networks()
            .into_iter()
            .map(|e| (e.network, e.aliases))
            .chain(
                st.networks
                    .iter()
                    .filter(|(n, _)| {
                        !cfg.net
                            .effective_networks()
                            .iter()
                            .any(|e| &e.network == *n)
                    })
                    .map(|(n, e)| (n.clone(), e.aliases.clone())),
            )
            .collect(),
        NetworkMode::Host => vec![("host".to_string(), vec![])],
        NetworkMode::None => vec![("none".to_string(), vec![])],
        _ => vec![],
    };
    for (name, aliases) in names {
        let ep = st.networks.get(&name).cloned().unwrap_or_default();
        let mut dns_names = vec![cfg.name.clone(), cfg.id.short().to_string()];
        dns_names.extend(aliases.iter().cloned());
        networks.insert(
            name.clone(),
            json!({
                "IPAMConfig": Value::Null,
                "Links": Value::Null,
                "Aliases": if aliases.is_empty() { Value::Null } else { json!(aliases) },
                "MacAddress": ep.mac,
                "NetworkID": ep.network_id,
                "EndpointID": if ep.ip.is_empty() { String::new() } else { cfg.id.to_string() },
                "Gateway": ep.gateway,
                "IPAddress": ep.ip,
                "IPPrefixLen": ep.prefix,
                "IPv6Gateway": ep.gateway6,
                "GlobalIPv6Address": ep.ip6,
                "GlobalIPv6PrefixLen": ep.prefix6,
                "DriverOpts": Value::Null,
                "DNSNames": if name == "bridge" || ep.ip.is_empty() { Value::Null } else { json!(dns_names) },
            }),
        );
    }
    let def = st.networks.get("bridge").cloned().unwrap_or_default();
    json!({
        "Bridge": "",
        "SandboxID": if st.sandbox_key.is_empty() { String::new() } else { cfg.id.to_string() },
        "SandboxKey": st.sandbox_key,
        "Ports": net_ports,
        "PortsSummary": ports_src.iter().map(ports::render).collect::<Vec<_>>(),
        "HairpinMode": false,
        "EndpointID": if def.ip.is_empty() { String::new() } else { cfg.id.to_string() },
        "Gateway": def.gateway,
        "GlobalIPv6Address": def.ip6,
        "GlobalIPv6PrefixLen": def.prefix6,
        "IPAddress": def.ip,
        "IPPrefixLen": def.prefix,
        "IPv6Gateway": def.gateway6,
        "MacAddress": def.mac,
        "Networks": networks,
    })
}

/// Docker shows an empty list of capabilities as `null`.
fn none_if_empty(v: &[String]) -> serde_json::Value {
    if v.is_empty() {
        serde_json::Value::Null
    } else {
        serde_json::json!(v)
    }
}
