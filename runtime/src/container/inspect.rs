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
    let mut net_ports = Map::new();
    let mut bindings = Map::new();
    for p in ports_src {
        let key = format!("{}/{}", p.container_port, p.proto);
        let b = json!([{"HostIp": p.host_ip, "HostPort": p.host_port.to_string()}]);
        bindings.insert(key.clone(), b.clone());
        net_ports.insert(key, if c.is_running() { b } else { Value::Null });
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
    let mut lowers = vec![c.paths.init_layer()];
    lowers.extend(cfg.layers.iter().cloned());
    let lower_dir = lowers
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(":");
    let exposed: Map<String, Value> = cfg
        .ports
        .iter()
        .map(|p| (format!("{}/{}", p.container_port, p.proto), json!({})))
        .collect();
    json!({
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
        "Image": cfg.image_id,
        "ResolvConfPath": c.paths.resolv_conf(),
        "HostnamePath": c.paths.hostname(),
        "HostsPath": c.paths.hosts(),
        "LogPath": c.paths.log(),
        "Name": format!("/{}", cfg.name),
        "RestartCount": st.restart_count,
        "Driver": cfg.driver,
        "Platform": "linux",
        "HostConfig": {
            "Binds": binds,
            "NetworkMode": match cfg.network {
                NetworkMode::Private => "private",
                NetworkMode::Host => "host",
                NetworkMode::None => "none",
            },
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
            "LogConfig": {"Type": "json-file", "Config": {}},
        },
        "GraphDriver": {
            "Name": cfg.driver,
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
        },
        "NetworkSettings": {
            "Ports": net_ports,
            "PortsSummary": ports_src.iter().map(ports::render).collect::<Vec<_>>(),
        },
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
