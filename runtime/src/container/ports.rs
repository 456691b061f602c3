//! Published ports (`-p`): a userspace proxy like docker-proxy. The supervisor binds the host
//! port before anything else is set up (so a taken port fails the start with nothing left
//! behind), then each accepted connection gets a thread that `setns`es itself into the
//! container's network namespace, connects to the container port on loopback there, and copies
//! bytes both ways. UDP (`-p 5353:53/udp`) as docker-proxy does it: one socket in the
//! container per client address, replies sent back from the host port, forgotten after 90 s
//! of silence.

use std::collections::HashMap;
use std::io;
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::{AsFd, OwnedFd};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::sched::{setns, CloneFlags};

use super::record::PortMapping;
use super::ContainerError;

/// Parse one `-p` value: `[IP:][HOST:]CONTAINER[/tcp|/udp]` (IPv6 hosts as `[::1]`).
pub fn parse_publish(s: &str) -> Result<PortMapping, ContainerError> {
    let bad = || ContainerError::InvalidPort(s.to_string());
    let (spec, proto) = match s.rsplit_once('/') {
        Some((a, p)) => (a, p.to_string()),
        None => (s, "tcp".to_string()),
    };
    if proto != "tcp" && proto != "udp" {
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
        // Unspecified: every address, IPv4 and IPv6 (see `bind_all`), shown as Docker does.
        _ => String::new(),
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

/// A bound host port.
pub enum HostSocket {
    Tcp(TcpListener),
    Udp(UdpSocket),
}

/// Host listeners bound for a container, with the ports as actually bound.
pub struct Listeners {
    pub bound: Vec<(PortMapping, HostSocket)>,
}

/// A listener on an IPv6 address that leaves IPv4 alone (`IPV6_V6ONLY`), so `0.0.0.0:P` and
/// `[::]:P` can be bound side by side, as Docker binds them.
fn listen_v6_only(addr: std::net::SocketAddrV6, udp: bool) -> io::Result<OwnedFd> {
    use std::os::fd::{AsRawFd, FromRawFd};
    let kind = if udp {
        libc::SOCK_DGRAM
    } else {
        libc::SOCK_STREAM
    };
    // SAFETY: socket(2); the fd is owned right below.
    let raw = unsafe { libc::socket(libc::AF_INET6, kind | libc::SOCK_CLOEXEC, 0) };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: raw is a fresh socket owned by nobody else.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    let one: libc::c_int = 1;
    let check = |r: libc::c_int| {
        if r < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    };
    for opt in [
        (libc::IPPROTO_IPV6, libc::IPV6_V6ONLY),
        (libc::SOL_SOCKET, libc::SO_REUSEADDR),
    ] {
        // SAFETY: an int option, passed by pointer with its size.
        check(unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                opt.0,
                opt.1,
                (&one as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as u32,
            )
        })?;
    }
    // SAFETY: a zeroed sockaddr_in6 is valid; the fields are filled in network byte order.
    let sa = unsafe {
        let mut sa: libc::sockaddr_in6 = std::mem::zeroed();
        sa.sin6_family = libc::AF_INET6 as u16;
        sa.sin6_port = addr.port().to_be();
        sa.sin6_addr.s6_addr = addr.ip().octets();
        sa
    };
    // SAFETY: sa is a valid sockaddr_in6 for the duration of the call.
    check(unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&sa as *const libc::sockaddr_in6).cast(),
            std::mem::size_of::<libc::sockaddr_in6>() as u32,
        )
    })?;
    if !udp {
        // SAFETY: listen on our own socket.
        check(unsafe { libc::listen(fd.as_raw_fd(), 128) })?;
    }
    Ok(fd)
}

fn bind_one(ip: &str, port: u16, proto: &str) -> Result<HostSocket, ContainerError> {
    let (addr, shown) = if ip.contains(':') {
        (format!("[{ip}]:{port}"), format!("[{ip}]:{port}"))
    } else {
        (format!("{ip}:{port}"), format!("{ip}:{port}"))
    };
    let udp = proto == "udp";
    let r = match (addr.parse::<std::net::SocketAddr>(), udp) {
        (Ok(std::net::SocketAddr::V6(a)), false) => {
            listen_v6_only(a, false).map(|fd| HostSocket::Tcp(TcpListener::from(fd)))
        }
        (Ok(std::net::SocketAddr::V6(a)), true) => {
            listen_v6_only(a, true).map(|fd| HostSocket::Udp(UdpSocket::from(fd)))
        }
        (_, false) => TcpListener::bind(&addr).map(HostSocket::Tcp),
        (_, true) => UdpSocket::bind(&addr).map(HostSocket::Udp),
    };
    r.map_err(|source| {
        if source.kind() == io::ErrorKind::AddrInUse {
            ContainerError::PortAllocated { addr: shown }
        } else {
            ContainerError::Bind {
                addr: shown,
                source,
            }
        }
    })
}

/// Bind every host port, or none: the first failure drops the listeners already bound. An
/// unspecified host address binds `0.0.0.0` and `::` (when the host has IPv6) on one port.
pub fn bind_all(ports: &[PortMapping]) -> Result<Listeners, ContainerError> {
    let mut bound = Vec::new();
    for p in ports {
        check_unprivileged_port(p.host_port)?;
        let ip = if p.host_ip.is_empty() {
            "0.0.0.0"
        } else {
            p.host_ip.as_str()
        };
        let listener = bind_one(ip, p.host_port, &p.proto)?;
        let mut actual = p.clone();
        actual.host_ip = ip.to_string();
        let local = match &listener {
            HostSocket::Tcp(l) => l.local_addr(),
            HostSocket::Udp(u) => u.local_addr(),
        };
        if let Ok(local) = local {
            actual.host_port = local.port();
        }
        bound.push((actual.clone(), listener));
        if p.host_ip.is_empty() && ipv6_available() {
            let l6 = bind_one("::", actual.host_port, &p.proto)?;
            let mut v6 = actual;
            v6.host_ip = "::".to_string();
            bound.push((v6, l6));
        }
    }
    Ok(Listeners { bound })
}

fn ipv6_available() -> bool {
    std::path::Path::new("/proc/net/if_inet6").exists()
        && std::fs::read_to_string("/proc/sys/net/ipv6/conf/all/disable_ipv6")
            .map(|s| s.trim() == "0")
            .unwrap_or(false)
}

/// `-P`: every exposed port (`80/tcp`, `53/udp`; other protocols are not published) on a free
/// host port.
pub fn publish_all(exposed: &[String]) -> Vec<PortMapping> {
    exposed
        .iter()
        .filter_map(|e| {
            let (port, proto) = e.split_once('/').unwrap_or((e.as_str(), "tcp"));
            (proto == "tcp" || proto == "udp").then_some(())?;
            Some(PortMapping {
                host_ip: String::new(),
                host_port: 0,
                container_port: port.parse().ok().filter(|p| *p != 0)?,
                proto: proto.to_string(),
            })
        })
        .collect()
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
            .spawn(move || match listener {
                HostSocket::Tcp(l) => accept_loop(l, netns, port),
                HostSocket::Udp(u) => udp_loop(u, netns, port),
            });
    }
}

/// How long a UDP client's socket in the container lives without traffic (docker-proxy's).
const UDP_IDLE: Duration = Duration::from_secs(90);
/// UDP client flows at most (each holds a socket and a thread until it goes idle); datagrams
/// of new clients beyond that are dropped, as a full conntrack table would.
const UDP_MAX_FLOWS: usize = 1024;

type UdpClients = Arc<Mutex<HashMap<SocketAddr, Arc<UdpSocket>>>>;

fn udp_loop(host: UdpSocket, netns: Arc<OwnedFd>, port: u16) {
    let host = Arc::new(host);
    let clients: UdpClients = Arc::new(Mutex::new(HashMap::new()));
    let mut buf = vec![0u8; 65535];
    loop {
        let Ok((n, client)) = host.recv_from(&mut buf) else {
            continue;
        };
        let (known, flows) = match clients.lock() {
            Ok(m) => (m.get(&client).cloned(), m.len()),
            Err(_) => continue,
        };
        let up = match known {
            Some(u) => u,
            None if flows >= UDP_MAX_FLOWS => continue,
            None => match udp_upstream(&host, &netns, port, client, &clients) {
                Ok(u) => u,
                Err(_) => continue,
            },
        };
        let _ = up.send(&buf[..n]);
    }
}

/// A socket in the container's namespace, connected to the container port on its loopback,
/// for one client; its replies go back to that client from the host port.
fn udp_upstream(
    host: &Arc<UdpSocket>,
    netns: &Arc<OwnedFd>,
    port: u16,
    client: SocketAddr,
    clients: &UdpClients,
) -> io::Result<Arc<UdpSocket>> {
    let ns = Arc::clone(netns);
    // A socket stays in the namespace it was made in: make it on a thread that joined the
    // container's (setns changes only the calling thread's).
    let up = std::thread::spawn(move || -> io::Result<UdpSocket> {
        setns(ns.as_fd(), CloneFlags::CLONE_NEWNET).map_err(io::Error::from)?;
        let s = UdpSocket::bind(("127.0.0.1", 0))?;
        s.connect(("127.0.0.1", port))?;
        Ok(s)
    })
    .join()
    .map_err(|_| io::Error::other("udp proxy thread panicked"))??;
    up.set_read_timeout(Some(UDP_IDLE))?;
    let up = Arc::new(up);
    if let Ok(mut m) = clients.lock() {
        m.insert(client, Arc::clone(&up));
    }
    let (reply, host, clients) = (Arc::clone(&up), Arc::clone(host), Arc::clone(clients));
    let _ = std::thread::Builder::new()
        .name("proxy-udp".to_string())
        .spawn(move || {
            let mut buf = vec![0u8; 65535];
            // Until the client is silent for UDP_IDLE (or the container port refuses).
            while let Ok(n) = reply.recv(&mut buf) {
                let _ = host.send_to(&buf[..n], client);
            }
            if let Ok(mut m) = clients.lock() {
                m.remove(&client);
            }
        });
    Ok(up)
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
            ("", 8080, 80)
        );
        let p = parse_publish("0.0.0.0:8080:80").unwrap();
        assert_eq!(render(&p), "0.0.0.0:8080->80/tcp");
        let p = parse_publish("[::]:8080:80").unwrap();
        assert_eq!(render(&p), ":::8080->80/tcp");
        let p = parse_publish("127.0.0.1:9000:90/tcp").unwrap();
        assert_eq!((p.host_ip.as_str(), p.host_port), ("127.0.0.1", 9000));
        let p = parse_publish("80").unwrap();
        assert_eq!((p.host_port, p.container_port), (0, 80));
        let p = parse_publish("[::1]:81:80").unwrap();
        assert_eq!(p.host_ip, "::1");
        assert!(parse_publish("x:80").is_err());
        let p = parse_publish("5353:53/udp").unwrap();
        assert_eq!(render(&p), ":5353->53/udp");
        assert!(parse_publish("80/sctp").is_err());
        assert!(parse_publish("1.2.3:80:80").is_err());
    }

    #[test]
    fn unspecified_binds_both_families_on_one_port() {
        let l = bind_all(&[parse_publish("80").unwrap()]).unwrap();
        let got: Vec<_> = l.bound.iter().map(|(m, _)| m.clone()).collect();
        assert_eq!(got[0].host_ip, "0.0.0.0");
        assert_ne!(got[0].host_port, 0);
        if ipv6_available() {
            assert_eq!(got.len(), 2);
            assert_eq!(got[1].host_ip, "::");
            assert_eq!(got[1].host_port, got[0].host_port);
        }
        let all = publish_all(&["80/tcp".into(), "53/udp".into(), "8080".into()]);
        assert_eq!(
            all.iter().map(|p| p.container_port).collect::<Vec<_>>(),
            [80, 53, 8080]
        );
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
