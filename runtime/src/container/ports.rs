//! Published ports (`-p`): a userspace proxy like docker-proxy. The supervisor binds the host
//! port before anything else is set up (so a taken port fails the start with nothing left
//! behind), then each accepted connection gets a thread that `setns`es itself into the
//! container's network namespace, connects to the container port on loopback there, and copies
//! bytes both ways.

use std::io;
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;

use nix::sched::{setns, CloneFlags};

use super::record::PortMapping;
use super::ContainerError;

/// Parse one `-p` value: `[IP:][HOST:]CONTAINER[/tcp]` (IPv6 hosts as `[::1]`).
pub fn parse_publish(s: &str) -> Result<PortMapping, ContainerError> {
    let bad = || ContainerError::InvalidPort(s.to_string());
    let (spec, proto) = match s.rsplit_once('/') {
        Some((a, p)) => (a, p.to_string()),
        None => (s, "tcp".to_string()),
    };
    if proto != "tcp" {
        return Err(ContainerError::UnsupportedProto(proto));
    }
    let (ip, rest) = if let Some(stripped) = spec.strip_prefix('[') {
        let (ip, rest) = stripped.split_once("]:").ok_or_else(bad)?;
        (Some(ip.to_string()), rest)
    } else {
        let parts: Vec<&str> = spec.split(':').collect();
        match parts.len() {
            1 | 2 => (None, spec),
            3 => (Some(parts[0].to_string()), &spec[parts[0].len() + 1..]),
            _ => return Err(bad()),
        }
    };
    let (host, ctr) = match rest.split_once(':') {
        Some((h, c)) => (h, c),
        None => ("", rest),
    };
    let container_port: u16 = ctr.parse().map_err(|_| bad())?;
    if container_port == 0 {
        return Err(bad());
    }
    let host_port: u16 = if host.is_empty() {
        0
    } else {
        host.parse().map_err(|_| bad())?
    };
    let host_ip = match ip {
        Some(ip) if !ip.is_empty() => {
            ip.parse::<std::net::IpAddr>().map_err(|_| bad())?;
            ip
        }
        _ => "0.0.0.0".to_string(),
    };
    Ok(PortMapping {
        host_ip,
        host_port,
        container_port,
        proto,
    })
}

/// Docker's rendering: `0.0.0.0:8080->80/tcp`.
pub fn render(p: &PortMapping) -> String {
    format!(
        "{}:{}->{}/{}",
        p.host_ip, p.host_port, p.container_port, p.proto
    )
}

/// Host listeners bound for a container, with the ports as actually bound.
pub struct Listeners {
    pub bound: Vec<(PortMapping, TcpListener)>,
}

/// Bind every host port, or none: the first failure drops the listeners already bound.
pub fn bind_all(ports: &[PortMapping]) -> Result<Listeners, ContainerError> {
    let mut bound = Vec::new();
    for p in ports {
        check_unprivileged_port(p.host_port)?;
        let addr = if p.host_ip.contains(':') {
            format!("[{}]:{}", p.host_ip, p.host_port)
        } else {
            format!("{}:{}", p.host_ip, p.host_port)
        };
        let listener = TcpListener::bind(&addr).map_err(|source| {
            if source.kind() == io::ErrorKind::AddrInUse {
                ContainerError::PortAllocated { addr: addr.clone() }
            } else {
                ContainerError::Bind {
                    addr: addr.clone(),
                    source,
                }
            }
        })?;
        let mut actual = p.clone();
        if let Ok(local) = listener.local_addr() {
            actual.host_port = local.port();
        }
        bound.push((actual, listener));
    }
    Ok(Listeners { bound })
}

/// Rootless: a host port below `net.ipv4.ip_unprivileged_port_start` cannot be bound; say so as
/// podman does instead of a bare EACCES.
fn check_unprivileged_port(port: u16) -> Result<(), ContainerError> {
    if port == 0 || !crate::rootless::in_user_namespace() {
        return Ok(());
    }
    let start: u16 = std::fs::read_to_string("/proc/sys/net/ipv4/ip_unprivileged_port_start")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(1024);
    if port >= start {
        return Ok(());
    }
    Err(ContainerError::Start {
        code: 125,
        msg: format!(
            "rootlessport cannot expose privileged port {port}, you can add \
             'net.ipv4.ip_unprivileged_port_start={port}' to /etc/sysctl.conf (currently {start}), \
             or choose a larger port number (>= {start})"
        ),
    })
}

/// Serve every listener on its own thread until the process exits.
pub fn serve(listeners: Listeners, netns: Arc<OwnedFd>) {
    for (mapping, listener) in listeners.bound {
        let netns = Arc::clone(&netns);
        let port = mapping.container_port;
        let _ = std::thread::Builder::new()
            .name(format!("proxy-{}", mapping.host_port))
            .spawn(move || accept_loop(listener, netns, port));
    }
}

fn accept_loop(listener: TcpListener, netns: Arc<OwnedFd>, port: u16) {
    for conn in listener.incoming() {
        let Ok(client) = conn else {
            continue;
        };
        let netns = Arc::clone(&netns);
        let _ = std::thread::Builder::new()
            .name("proxy-conn".to_string())
            .spawn(move || {
                let _ = forward(client, &netns, port);
            });
    }
}

fn forward(client: TcpStream, netns: &OwnedFd, port: u16) -> io::Result<()> {
    // setns(CLONE_NEWNET) changes the network namespace of this thread only, so the connect
    // below happens inside the container while the accepted socket stays on the host.
    setns(netns.as_fd(), CloneFlags::CLONE_NEWNET).map_err(io::Error::from)?;
    let upstream = match TcpStream::connect(("127.0.0.1", port)) {
        Ok(s) => s,
        Err(e) => {
            let _ = client.shutdown(Shutdown::Both);
            return Err(e);
        }
    };
    let (mut c_read, mut u_write) = (client.try_clone()?, upstream.try_clone()?);
    let up = std::thread::spawn(move || {
        let _ = io::copy(&mut c_read, &mut u_write);
        let _ = u_write.shutdown(Shutdown::Write);
    });
    let (mut u_read, mut c_write) = (upstream, client);
    let _ = io::copy(&mut u_read, &mut c_write);
    let _ = c_write.shutdown(Shutdown::Write);
    let _ = up.join();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_forms() {
        let p = parse_publish("8080:80").unwrap();
        assert_eq!(
            (p.host_ip.as_str(), p.host_port, p.container_port),
            ("0.0.0.0", 8080, 80)
        );
        assert_eq!(render(&p), "0.0.0.0:8080->80/tcp");
        let p = parse_publish("127.0.0.1:9000:90/tcp").unwrap();
        assert_eq!((p.host_ip.as_str(), p.host_port), ("127.0.0.1", 9000));
        let p = parse_publish("80").unwrap();
        assert_eq!((p.host_port, p.container_port), (0, 80));
        let p = parse_publish("[::1]:81:80").unwrap();
        assert_eq!(p.host_ip, "::1");
        assert!(parse_publish("x:80").is_err());
        assert!(parse_publish("80/udp").is_err());
        assert!(parse_publish("1.2.3:80:80").is_err());
    }

    #[test]
    fn taken_port_is_reported_like_docker() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let p = parse_publish(&format!("127.0.0.1:{port}:80")).unwrap();
        let e = bind_all(&[p]).err().unwrap().to_string();
        assert_eq!(
            e,
            format!("Bind for 127.0.0.1:{port} failed: port is already allocated")
        );
    }
}
