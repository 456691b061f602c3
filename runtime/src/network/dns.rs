//! The embedded DNS responder at 127.0.0.11:53 inside a container on a user network (Docker's
//! design): a UDP socket bound *in the container's network namespace*, served by a thread of
//! the container's supervisor. Why there rather than one server per network (aardvark-dns):
//! it lives and dies with the container, needs no address on the bridge, no extra process to
//! reap, and answers "what is on *my* networks" without any cross-network state.
//!
//! Names come from the lease files of the bridges this container is on (its own networks
//! only, so nothing resolves across networks; the default bridge has no names, as in Docker).
//! A known name gets its A records, and AAAA records on networks with IPv6; anything else is
//! forwarded to the upstream servers from the container's namespace (so it goes through the
//! bridge and NAT like the container's own traffic) and the answer relayed; no upstream or no
//! answer gives SERVFAIL. DNS over TCP (RFC 7766: two-byte length, then the message; several
//! queries on one connection) is served on the same address and port, and forwarded over TCP.

use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::BorrowedFd;
use std::path::PathBuf;
use std::time::Duration;

use super::ipam::Leases;
use super::netlink;
use super::sandbox::DNS_ADDR;

const TYPE_A: u16 = 1;
const TYPE_AAAA: u16 = 28;
const CLASS_IN: u16 = 1;
const RCODE_SERVFAIL: u8 = 2;
const RCODE_NXDOMAIN: u8 = 3;

/// What the responder of one container knows.
#[derive(Debug, Clone)]
pub struct Resolver {
    pub container_id: String,
    pub state_dir: PathBuf,
    pub upstream: Vec<SocketAddr>,
}

impl Resolver {
    /// Addresses of `name` on this container's user networks.
    pub fn lookup(&self, name: &str) -> Option<Vec<Ipv4Addr>> {
        self.lookup_both(name)
            .map(|v| v.into_iter().map(|(ip, _)| ip).collect())
    }

    /// IPv6 addresses of `name` (on networks with IPv6).
    pub fn lookup6(&self, name: &str) -> Option<Vec<Ipv6Addr>> {
        self.lookup_both(name)
            .map(|v| v.into_iter().filter_map(|(_, ip6)| ip6).collect())
    }

    fn lookup_both(&self, name: &str) -> Option<Vec<(Ipv4Addr, Option<Ipv6Addr>)>> {
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        let mut found = Vec::new();
        let mut known = false;
        for l in Leases::load_all(&self.state_dir) {
            let Some(me) = l.endpoints.get(&self.container_id) else {
                continue;
            };
            if me.network == "bridge" {
                continue;
            }
            for lease in l.endpoints.values() {
                let hit = lease.names.iter().any(|n| {
                    let n = n.to_ascii_lowercase();
                    n == name || format!("{n}.{}", me.network.to_ascii_lowercase()) == name
                });
                if hit {
                    known = true;
                    found.push((lease.ip, lease.ip6));
                }
            }
        }
        known.then_some(found)
    }
}

/// A parsed query: id, the question's name, type, and where the question section ends.
#[derive(Debug, PartialEq)]
pub struct Query {
    pub id: u16,
    pub name: String,
    pub qtype: u16,
    pub qclass: u16,
    pub question_end: usize,
}

pub fn parse_query(msg: &[u8]) -> Option<Query> {
    if msg.len() < 12 || msg[2] & 0x80 != 0 {
        return None;
    }
    let qdcount = u16::from_be_bytes([msg[4], msg[5]]);
    if qdcount != 1 {
        return None;
    }
    let mut pos = 12;
    let mut labels = Vec::new();
    loop {
        let len = *msg.get(pos)? as usize;
        pos += 1;
        if len == 0 {
            break;
        }
        if len > 63 {
            return None; // compression has no place in a question
        }
        labels.push(String::from_utf8_lossy(msg.get(pos..pos + len)?).into_owned());
        pos += len;
    }
    let qtype = u16::from_be_bytes([*msg.get(pos)?, *msg.get(pos + 1)?]);
    let qclass = u16::from_be_bytes([*msg.get(pos + 2)?, *msg.get(pos + 3)?]);
    Some(Query {
        id: u16::from_be_bytes([msg[0], msg[1]]),
        name: labels.join("."),
        qtype,
        qclass,
        question_end: pos + 4,
    })
}

/// An answer to `q` (whose raw bytes are `msg`) with `ips` as A records, or `rcode`.
pub fn answer(msg: &[u8], q: &Query, ips: &[Ipv4Addr], rcode: u8) -> Vec<u8> {
    let rdata: Vec<Vec<u8>> = ips.iter().map(|ip| ip.octets().to_vec()).collect();
    records(msg, q, TYPE_A, &rdata, rcode)
}

/// An answer to `q` with `ips` as AAAA records.
pub fn answer6(msg: &[u8], q: &Query, ips: &[Ipv6Addr]) -> Vec<u8> {
    let rdata: Vec<Vec<u8>> = ips.iter().map(|ip| ip.octets().to_vec()).collect();
    records(msg, q, TYPE_AAAA, &rdata, 0)
}

fn records(msg: &[u8], q: &Query, rtype: u16, rdata: &[Vec<u8>], rcode: u8) -> Vec<u8> {
    let ips = rdata;
    let mut out = Vec::with_capacity(q.question_end + ips.len() * 28);
    out.extend_from_slice(&q.id.to_be_bytes());
    let rd = msg[2] & 0x01;
    out.push(0x80 | 0x04 | rd); // QR, AA, RD copied
    out.push(0x80 | rcode); // RA
    out.extend_from_slice(&1u16.to_be_bytes());
    out.extend_from_slice(&(ips.len() as u16).to_be_bytes());
    out.extend_from_slice(&0u16.to_be_bytes());
    out.extend_from_slice(&0u16.to_be_bytes());
    out.extend_from_slice(&msg[12..q.question_end]);
    for data in ips {
        out.extend_from_slice(&[0xc0, 0x0c]); // the question's name
        out.extend_from_slice(&rtype.to_be_bytes());
        out.extend_from_slice(&CLASS_IN.to_be_bytes());
        out.extend_from_slice(&600u32.to_be_bytes());
        out.extend_from_slice(&(data.len() as u16).to_be_bytes());
        out.extend_from_slice(data);
    }
    out
}

/// Ask the upstream servers in turn, each over a socket of its own connected from the
/// container's namespace (so an ICMP "port unreachable" ends the wait at once).
fn forward(ns: BorrowedFd<'_>, servers: &[SocketAddr], msg: &[u8]) -> Option<Vec<u8>> {
    let msg = msg.to_vec();
    let servers = servers.to_vec();
    netlink::in_netns(ns, move || {
        let mut buf = [0u8; 4096];
        for s in &servers {
            let bind: SocketAddr = if s.is_ipv4() {
                (Ipv4Addr::UNSPECIFIED, 0).into()
            } else {
                (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
            };
            let Ok(sock) = UdpSocket::bind(bind) else {
                continue;
            };
            if sock.set_read_timeout(Some(UPSTREAM_TIMEOUT)).is_err()
                || sock.connect(s).is_err()
                || sock.send(&msg).is_err()
            {
                continue;
            }
            while let Ok(n) = sock.recv(&mut buf) {
                if n >= 2 && buf[..2] == msg[..2] {
                    return Ok(Some(buf[..n].to_vec()));
                }
            }
        }
        Ok(None)
    })
    .ok()
    .flatten()
}

/// Ask the upstream servers in turn over TCP, from the container's namespace.
fn forward_tcp(ns: BorrowedFd<'_>, servers: &[SocketAddr], msg: &[u8]) -> Option<Vec<u8>> {
    let msg = msg.to_vec();
    let servers = servers.to_vec();
    netlink::in_netns(ns, move || {
        for s in &servers {
            let Ok(mut c) = TcpStream::connect_timeout(s, UPSTREAM_TIMEOUT) else {
                continue;
            };
            if c.set_read_timeout(Some(UPSTREAM_TIMEOUT)).is_err()
                || write_framed(&mut c, &msg).is_err()
            {
                continue;
            }
            if let Ok(Some(reply)) = read_framed(&mut c) {
                return Ok(Some(reply));
            }
        }
        Ok(None)
    })
    .ok()
    .flatten()
}

/// One length-prefixed DNS message from a TCP stream; `None` at a clean end of stream.
fn read_framed(c: &mut impl Read) -> io::Result<Option<Vec<u8>>> {
    let mut len = [0u8; 2];
    match c.read_exact(&mut len) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let mut msg = vec![0u8; u16::from_be_bytes(len) as usize];
    c.read_exact(&mut msg)?;
    Ok(Some(msg))
}

fn write_framed(c: &mut impl Write, msg: &[u8]) -> io::Result<()> {
    let len = u16::try_from(msg.len()).map_err(|_| io::Error::other("DNS message too long"))?;
    let mut out = Vec::with_capacity(msg.len() + 2);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(msg);
    c.write_all(&out)
}

/// Serve one TCP client: its queries in turn until it closes or is idle for `TCP_IDLE`.
fn serve_tcp_client(mut c: TcpStream, r: &Resolver, ns: BorrowedFd<'_>) -> io::Result<()> {
    c.set_read_timeout(Some(TCP_IDLE))?;
    while let Some(msg) = read_framed(&mut c)? {
        let Some(q) = parse_query(&msg) else {
            return Ok(());
        };
        let reply = match local_answer(r, &msg, &q) {
            Some(a) => a,
            None if r.upstream.is_empty() => answer(&msg, &q, &[], RCODE_NXDOMAIN),
            None => forward_tcp(ns, &r.upstream, &msg)
                .unwrap_or_else(|| answer(&msg, &q, &[], RCODE_SERVFAIL)),
        };
        write_framed(&mut c, &reply)?;
    }
    Ok(())
}

const TCP_IDLE: Duration = Duration::from_secs(10);
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(2);
/// Forwarded queries in flight at most (a container flooding its resolver gets SERVFAIL, not
/// a supervisor with thousands of threads).
const MAX_IN_FLIGHT: usize = 64;

/// Our own answer, or `None` when the name is not ours (to be forwarded).
fn local_answer(r: &Resolver, msg: &[u8], q: &Query) -> Option<Vec<u8>> {
    if q.qclass != CLASS_IN {
        return None;
    }
    if q.qtype == TYPE_AAAA {
        return Some(answer6(msg, q, &r.lookup6(&q.name)?));
    }
    let ips = r.lookup(&q.name)?;
    // Other types of a known name: an empty NOERROR answer.
    let ips = if q.qtype == TYPE_A { ips } else { Vec::new() };
    Some(answer(msg, q, &ips, 0))
}

/// A bound, not yet served, embedded DNS socket (queries wait in its buffer).
pub struct Bound {
    sock: UdpSocket,
    tcp: TcpListener,
    ns: std::os::fd::OwnedFd,
    r: Resolver,
}

/// Bind 127.0.0.11:53 in the namespace `ns`. No thread is started yet: the supervisor forks
/// the container's init later and must be single-threaded then.
pub fn bind(ns: BorrowedFd<'_>, r: Resolver) -> io::Result<Bound> {
    let (sock, tcp) = netlink::in_netns(ns, || {
        Ok((
            UdpSocket::bind((DNS_ADDR, 53))?,
            TcpListener::bind((DNS_ADDR, 53))?,
        ))
    })?;
    Ok(Bound {
        sock,
        tcp,
        ns: ns.try_clone_to_owned()?,
        r,
    })
}

/// Serve a bound socket until the process exits: names of the container's networks on the
/// serving thread, forwarded queries each on a thread of its own (a slow upstream does not
/// hold up the network's names).
pub fn serve(b: Bound) -> io::Result<()> {
    let Bound { sock, tcp, ns, r } = b;
    let r = std::sync::Arc::new(r);
    let ns = std::sync::Arc::new(ns);
    let in_flight = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    {
        // TCP clients, each on a thread of its own (counted with the forwarded queries).
        let (r, ns, in_flight) = (r.clone(), ns.clone(), in_flight.clone());
        std::thread::Builder::new()
            .name("dns-tcp".to_string())
            .spawn(move || {
                use std::sync::atomic::Ordering;
                for conn in tcp.incoming() {
                    let Ok(c) = conn else {
                        continue;
                    };
                    if in_flight.fetch_add(1, Ordering::SeqCst) >= MAX_IN_FLIGHT {
                        in_flight.fetch_sub(1, Ordering::SeqCst);
                        continue;
                    }
                    let (r, ns, count) = (r.clone(), ns.clone(), in_flight.clone());
                    let spawned = std::thread::Builder::new()
                        .name("dns-tcp-client".to_string())
                        .spawn(move || {
                            use std::os::fd::AsFd;
                            let _ = serve_tcp_client(c, &r, ns.as_fd());
                            count.fetch_sub(1, Ordering::SeqCst);
                        });
                    if spawned.is_err() {
                        in_flight.fetch_sub(1, Ordering::SeqCst);
                    }
                }
            })?;
    }
    std::thread::Builder::new()
        .name("dns".to_string())
        .spawn(move || {
            let mut buf = [0u8; 1500];
            loop {
                let Ok((n, peer)) = sock.recv_from(&mut buf) else {
                    continue;
                };
                let msg = buf[..n].to_vec();
                let Some(q) = parse_query(&msg) else {
                    continue;
                };
                if let Some(reply) = local_answer(&r, &msg, &q) {
                    let _ = sock.send_to(&reply, peer);
                    continue;
                }
                if r.upstream.is_empty() {
                    let _ = sock.send_to(&answer(&msg, &q, &[], RCODE_NXDOMAIN), peer);
                    continue;
                }
                use std::sync::atomic::Ordering;
                if in_flight.fetch_add(1, Ordering::SeqCst) >= MAX_IN_FLIGHT {
                    in_flight.fetch_sub(1, Ordering::SeqCst);
                    let _ = sock.send_to(&answer(&msg, &q, &[], RCODE_SERVFAIL), peer);
                    continue;
                }
                let (r, ns) = (std::sync::Arc::clone(&r), std::sync::Arc::clone(&ns));
                let count = std::sync::Arc::clone(&in_flight);
                let Ok(out) = sock.try_clone() else {
                    count.fetch_sub(1, Ordering::SeqCst);
                    continue;
                };
                let spawned = std::thread::Builder::new()
                    .name("dns-forward".to_string())
                    .spawn(move || {
                        use std::os::fd::AsFd;
                        let reply = forward(ns.as_fd(), &r.upstream, &msg)
                            .unwrap_or_else(|| answer(&msg, &q, &[], RCODE_SERVFAIL));
                        let _ = out.send_to(&reply, peer);
                        count.fetch_sub(1, Ordering::SeqCst);
                    });
                if spawned.is_err() {
                    in_flight.fetch_sub(1, Ordering::SeqCst);
                }
            }
        })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tcp_framing_round_trips() {
        let mut wire = Vec::new();
        write_framed(&mut wire, b"abc").unwrap();
        write_framed(&mut wire, b"").unwrap();
        assert_eq!(wire, [0, 3, b'a', b'b', b'c', 0, 0]);
        let mut r = &wire[..];
        assert_eq!(read_framed(&mut r).unwrap(), Some(b"abc".to_vec()));
        assert_eq!(read_framed(&mut r).unwrap(), Some(Vec::new()));
        assert_eq!(read_framed(&mut r).unwrap(), None);
        let mut short = &[0u8, 5, 1][..];
        assert!(read_framed(&mut short).is_err());
    }

    fn query(name: &str, qtype: u16) -> Vec<u8> {
        let mut m = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
        for l in name.split('.') {
            m.push(l.len() as u8);
            m.extend_from_slice(l.as_bytes());
        }
        m.push(0);
        m.extend_from_slice(&qtype.to_be_bytes());
        m.extend_from_slice(&CLASS_IN.to_be_bytes());
        m
    }

    #[test]
    fn parses_and_answers() {
        let m = query("web.example", TYPE_A);
        let q = parse_query(&m).unwrap();
        assert_eq!((q.id, q.name.as_str(), q.qtype), (0x1234, "web.example", 1));
        let a = answer(&m, &q, &[Ipv4Addr::new(10, 1, 2, 3)], 0);
        assert_eq!(&a[..2], &[0x12, 0x34]);
        assert_eq!(a[2] & 0x80, 0x80);
        assert_eq!(u16::from_be_bytes([a[6], a[7]]), 1);
        assert_eq!(&a[a.len() - 4..], &[10, 1, 2, 3]);
        let nx = answer(&m, &q, &[], RCODE_NXDOMAIN);
        assert_eq!(nx[3] & 0x0f, RCODE_NXDOMAIN);
        assert!(parse_query(&a).is_none(), "a response is not a query");
        assert!(parse_query(&m[..5]).is_none());
    }
}
