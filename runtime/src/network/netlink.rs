//! A small blocking rtnetlink client (rtnetlink(7)) for the requests the bridge driver makes:
//! create a bridge or a veth pair (the peer born directly inside the container's network
//! namespace), set a link up / its master / its MAC, delete a link, add an IPv4 address and a
//! default route, and dump the IPv4 routing table (to pick subnets that overlap nothing).
//!
//! Hand-rolled on a `NETLINK_ROUTE` socket: strata needs a dozen message kinds, and the crates
//! that wrap them either pull in an async runtime (`rtnetlink` → tokio) or a large generated
//! message model; this file is the whole client.
//!
//! Every request runs in the network namespace of the calling *thread* (see [`in_netns`]).

use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use nix::sched::{setns, unshare, CloneFlags};

const NLMSG_HDRLEN: usize = 16;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_MULTI: u16 = 0x2;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_EXCL: u16 = 0x200;
const NLM_F_CREATE: u16 = 0x400;
const NLM_F_DUMP: u16 = 0x300;
const NLA_F_NESTED: u16 = 0x8000;

const RTM_NEWLINK: u16 = 16;
const RTM_DELLINK: u16 = 17;
const RTM_NEWADDR: u16 = 20;
const RTM_NEWROUTE: u16 = 24;
const RTM_GETROUTE: u16 = 26;

const IFLA_ADDRESS: u16 = 1;
const IFLA_IFNAME: u16 = 3;
const IFLA_MASTER: u16 = 10;
const IFLA_LINKINFO: u16 = 18;
const IFLA_NET_NS_FD: u16 = 28;
const IFLA_INFO_KIND: u16 = 1;
const IFLA_INFO_DATA: u16 = 2;
const VETH_INFO_PEER: u16 = 1;

const IFA_ADDRESS: u16 = 1;
const IFA_LOCAL: u16 = 2;
const IFA_BROADCAST: u16 = 4;

const RTA_DST: u16 = 1;
const RTA_OIF: u16 = 4;
const RTA_GATEWAY: u16 = 5;
const RT_TABLE_MAIN: u8 = 254;
const RT_TABLE_LOCAL: u8 = 255;
const RTPROT_BOOT: u8 = 3;
const RTN_UNICAST: u8 = 1;

/// A message body under construction: a fixed header struct followed by attributes.
struct Msg {
    buf: Vec<u8>,
}

impl Msg {
    fn new(fixed: &[u8]) -> Msg {
        Msg {
            buf: fixed.to_vec(),
        }
    }

    fn align(&mut self) {
        while !self.buf.len().is_multiple_of(4) {
            self.buf.push(0);
        }
    }

    fn attr(&mut self, ty: u16, data: &[u8]) -> &mut Msg {
        self.align();
        let len = (4 + data.len()) as u16;
        self.buf.extend_from_slice(&len.to_ne_bytes());
        self.buf.extend_from_slice(&ty.to_ne_bytes());
        self.buf.extend_from_slice(data);
        self.align();
        self
    }

    fn attr_str(&mut self, ty: u16, s: &str) -> &mut Msg {
        let mut d = s.as_bytes().to_vec();
        d.push(0);
        self.attr(ty, &d)
    }

    fn attr_u32(&mut self, ty: u16, v: u32) -> &mut Msg {
        self.attr(ty, &v.to_ne_bytes())
    }

    /// Start a nested attribute; returns its offset for [`Msg::end`].
    fn begin(&mut self, ty: u16) -> usize {
        self.align();
        let at = self.buf.len();
        self.buf.extend_from_slice(&0u16.to_ne_bytes());
        self.buf
            .extend_from_slice(&(ty | NLA_F_NESTED).to_ne_bytes());
        at
    }

    fn end(&mut self, at: usize) {
        self.align();
        let len = (self.buf.len() - at) as u16;
        self.buf[at..at + 2].copy_from_slice(&len.to_ne_bytes());
    }

    /// Append raw bytes (a nested fixed header such as the veth peer's ifinfomsg).
    fn raw(&mut self, data: &[u8]) {
        self.align();
        self.buf.extend_from_slice(data);
    }
}

/// `struct ifinfomsg`.
fn ifinfomsg(index: i32, flags: u32, change: u32) -> [u8; 16] {
    let mut b = [0u8; 16];
    b[0] = libc::AF_UNSPEC as u8;
    b[4..8].copy_from_slice(&index.to_ne_bytes());
    b[8..12].copy_from_slice(&flags.to_ne_bytes());
    b[12..16].copy_from_slice(&change.to_ne_bytes());
    b
}

/// Iterate the attributes in `data` as (type without flags, payload).
fn attrs(mut data: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    std::iter::from_fn(move || {
        if data.len() < 4 {
            return None;
        }
        let len = u16::from_ne_bytes([data[0], data[1]]) as usize;
        let ty = u16::from_ne_bytes([data[2], data[3]]) & !NLA_F_NESTED;
        if len < 4 || len > data.len() {
            return None;
        }
        let payload = &data[4..len];
        let next = (len + 3) & !3;
        data = if next >= data.len() {
            &[]
        } else {
            &data[next..]
        };
        Some((ty, payload))
    })
}

/// A `NETLINK_ROUTE` socket bound in the calling thread's network namespace.
pub struct Netlink {
    fd: OwnedFd,
    seq: u32,
}

impl Netlink {
    pub fn open() -> io::Result<Netlink> {
        // SAFETY: plain socket(2); the fd is owned right below.
        let fd = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                libc::NETLINK_ROUTE,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd is a fresh socket nobody else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: a zeroed sockaddr_nl is valid; we set the family and bind to "kernel picks".
        let r = unsafe {
            let mut sa: libc::sockaddr_nl = std::mem::zeroed();
            sa.nl_family = libc::AF_NETLINK as u16;
            libc::bind(
                fd.as_raw_fd(),
                (&sa as *const libc::sockaddr_nl).cast(),
                std::mem::size_of::<libc::sockaddr_nl>() as u32,
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Netlink { fd, seq: 1 })
    }

    fn send(&mut self, ty: u16, flags: u16, body: &[u8]) -> io::Result<u32> {
        self.seq = self.seq.wrapping_add(1);
        let len = (NLMSG_HDRLEN + body.len()) as u32;
        let mut msg = Vec::with_capacity(len as usize);
        msg.extend_from_slice(&len.to_ne_bytes());
        msg.extend_from_slice(&ty.to_ne_bytes());
        msg.extend_from_slice(&(flags | NLM_F_REQUEST).to_ne_bytes());
        msg.extend_from_slice(&self.seq.to_ne_bytes());
        msg.extend_from_slice(&0u32.to_ne_bytes());
        msg.extend_from_slice(body);
        // SAFETY: msg is valid for msg.len() bytes.
        let n = unsafe { libc::send(self.fd.as_raw_fd(), msg.as_ptr().cast(), msg.len(), 0) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(self.seq)
    }

    /// Receive messages answering `seq`, calling `each(type, payload)` for every data message,
    /// until the ACK (or `NLMSG_DONE` for dumps). An error ACK becomes the `io::Error`.
    fn receive(&mut self, seq: u32, mut each: impl FnMut(u16, &[u8])) -> io::Result<()> {
        let mut buf = vec![0u8; 65536];
        loop {
            // SAFETY: buf is valid for buf.len() bytes.
            let n =
                unsafe { libc::recv(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            let mut data = &buf[..n as usize];
            while data.len() >= NLMSG_HDRLEN {
                let len = u32::from_ne_bytes([data[0], data[1], data[2], data[3]]) as usize;
                let ty = u16::from_ne_bytes([data[4], data[5]]);
                let flags = u16::from_ne_bytes([data[6], data[7]]);
                let mseq = u32::from_ne_bytes([data[8], data[9], data[10], data[11]]);
                if len < NLMSG_HDRLEN || len > data.len() {
                    return Err(io::Error::other("truncated netlink message"));
                }
                let payload = &data[NLMSG_HDRLEN..len];
                data = &data[((len + 3) & !3).min(data.len())..];
                if mseq != seq {
                    continue;
                }
                match ty {
                    NLMSG_ERROR => {
                        let code = payload
                            .get(..4)
                            .map(|b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
                            .unwrap_or(-libc::EIO);
                        return if code == 0 {
                            Ok(())
                        } else {
                            Err(io::Error::from_raw_os_error(-code))
                        };
                    }
                    NLMSG_DONE => return Ok(()),
                    _ => {
                        each(ty, payload);
                        if flags & NLM_F_MULTI == 0 {
                            // A single answer to a non-dump request still ends with an ACK.
                            continue;
                        }
                    }
                }
            }
        }
    }

    fn request(&mut self, ty: u16, flags: u16, body: &[u8]) -> io::Result<()> {
        let seq = self.send(ty, flags | NLM_F_ACK, body)?;
        self.receive(seq, |_, _| {})
    }

    /// Create a bridge link named `name` (down).
    pub fn create_bridge(&mut self, name: &str) -> io::Result<()> {
        let mut m = Msg::new(&ifinfomsg(0, 0, 0));
        m.attr_str(IFLA_IFNAME, name);
        let info = m.begin(IFLA_LINKINFO);
        m.attr_str(IFLA_INFO_KIND, "bridge");
        m.end(info);
        self.request(RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL, &m.buf)
    }

    /// Create a veth pair: `host` here, `peer` born inside the network namespace `peer_ns`
    /// (so it never appears on the host) with MAC `peer_mac`.
    pub fn create_veth(
        &mut self,
        host: &str,
        peer: &str,
        peer_ns: BorrowedFd<'_>,
        peer_mac: [u8; 6],
    ) -> io::Result<()> {
        let mut m = Msg::new(&ifinfomsg(0, 0, 0));
        m.attr_str(IFLA_IFNAME, host);
        let info = m.begin(IFLA_LINKINFO);
        m.attr_str(IFLA_INFO_KIND, "veth");
        let data = m.begin(IFLA_INFO_DATA);
        let p = m.begin(VETH_INFO_PEER);
        m.raw(&ifinfomsg(0, 0, 0));
        m.attr_str(IFLA_IFNAME, peer);
        m.attr(IFLA_ADDRESS, &peer_mac);
        m.attr_u32(IFLA_NET_NS_FD, peer_ns.as_raw_fd() as u32);
        m.end(p);
        m.end(data);
        m.end(info);
        self.request(RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL, &m.buf)
    }

    /// Set a link up, optionally enslaving it to `master`.
    pub fn set_up(&mut self, index: u32, master: Option<u32>) -> io::Result<()> {
        let up = libc::IFF_UP as u32;
        let mut m = Msg::new(&ifinfomsg(index as i32, up, up));
        if let Some(mi) = master {
            m.attr_u32(IFLA_MASTER, mi);
        }
        self.request(RTM_NEWLINK, 0, &m.buf)
    }

    pub fn delete_link(&mut self, index: u32) -> io::Result<()> {
        let m = Msg::new(&ifinfomsg(index as i32, 0, 0));
        self.request(RTM_DELLINK, 0, &m.buf)
    }

    /// Add `ip/prefix` (with its broadcast address) to link `index`.
    pub fn add_addr4(&mut self, index: u32, ip: Ipv4Addr, prefix: u8) -> io::Result<()> {
        let mut fixed = [0u8; 8];
        fixed[0] = libc::AF_INET as u8;
        fixed[1] = prefix;
        fixed[4..8].copy_from_slice(&index.to_ne_bytes());
        let mut m = Msg::new(&fixed);
        m.attr(IFA_LOCAL, &ip.octets());
        m.attr(IFA_ADDRESS, &ip.octets());
        let mask = if prefix == 0 {
            0
        } else {
            u32::MAX << (32 - prefix)
        };
        let bcast = Ipv4Addr::from(u32::from(ip) | !mask);
        m.attr(IFA_BROADCAST, &bcast.octets());
        self.request(RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL, &m.buf)
    }

    /// Add `ip/prefix` to link `index`, without duplicate address detection (usable at once).
    pub fn add_addr6(&mut self, index: u32, ip: std::net::Ipv6Addr, prefix: u8) -> io::Result<()> {
        const IFA_F_NODAD: u8 = 0x02;
        let mut fixed = [0u8; 8];
        fixed[0] = libc::AF_INET6 as u8;
        fixed[1] = prefix;
        fixed[2] = IFA_F_NODAD;
        fixed[4..8].copy_from_slice(&index.to_ne_bytes());
        let mut m = Msg::new(&fixed);
        m.attr(IFA_LOCAL, &ip.octets());
        m.attr(IFA_ADDRESS, &ip.octets());
        self.request(RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL, &m.buf)
    }

    /// Add the default IPv6 route via `gateway` on link `oif`.
    pub fn add_default_route6(&mut self, gateway: std::net::Ipv6Addr, oif: u32) -> io::Result<()> {
        let mut fixed = [0u8; 12];
        fixed[0] = libc::AF_INET6 as u8;
        fixed[4] = RT_TABLE_MAIN;
        fixed[5] = RTPROT_BOOT;
        fixed[6] = 0; // RT_SCOPE_UNIVERSE
        fixed[7] = RTN_UNICAST;
        let mut m = Msg::new(&fixed);
        m.attr(RTA_GATEWAY, &gateway.octets());
        m.attr_u32(RTA_OIF, oif);
        self.request(RTM_NEWROUTE, NLM_F_CREATE | NLM_F_EXCL, &m.buf)
    }

    /// Add the default IPv4 route via `gateway` on link `oif`.
    pub fn add_default_route4(&mut self, gateway: Ipv4Addr, oif: u32) -> io::Result<()> {
        let mut fixed = [0u8; 12];
        fixed[0] = libc::AF_INET as u8;
        fixed[4] = RT_TABLE_MAIN;
        fixed[5] = RTPROT_BOOT;
        fixed[6] = 0; // RT_SCOPE_UNIVERSE
        fixed[7] = RTN_UNICAST;
        let mut m = Msg::new(&fixed);
        m.attr(RTA_GATEWAY, &gateway.octets());
        m.attr_u32(RTA_OIF, oif);
        self.request(RTM_NEWROUTE, NLM_F_CREATE | NLM_F_EXCL, &m.buf)
    }

    /// Every IPv4 route destination (`addr`, prefix length) outside the local table, except
    /// default routes.
    pub fn routes4(&mut self) -> io::Result<Vec<(Ipv4Addr, u8)>> {
        Ok(self
            .routes4_oif()?
            .into_iter()
            .map(|(a, p, _)| (a, p))
            .collect())
    }

    /// [`Netlink::routes4`] with each route's output link index (0 if none).
    pub fn routes4_oif(&mut self) -> io::Result<Vec<(Ipv4Addr, u8, u32)>> {
        let mut fixed = [0u8; 12];
        fixed[0] = libc::AF_INET as u8;
        let seq = self.send(RTM_GETROUTE, NLM_F_DUMP, &fixed)?;
        let mut out = Vec::new();
        self.receive(seq, |ty, payload| {
            if ty != RTM_NEWROUTE || payload.len() < 12 {
                return;
            }
            let dst_len = payload[1];
            let table = payload[4];
            if dst_len == 0 || table == RT_TABLE_LOCAL {
                return;
            }
            let mut dst = None;
            let mut oif = 0;
            for (aty, data) in attrs(&payload[12..]) {
                if aty == RTA_DST && data.len() == 4 {
                    dst = Some(Ipv4Addr::new(data[0], data[1], data[2], data[3]));
                }
                if aty == RTA_OIF && data.len() == 4 {
                    oif = u32::from_ne_bytes([data[0], data[1], data[2], data[3]]);
                }
            }
            if let Some(d) = dst {
                out.push((d, dst_len, oif));
            }
        })?;
        Ok(out)
    }
}

/// Index of link `name` in the calling thread's network namespace.
pub fn link_index(name: &str) -> Option<u32> {
    let c = std::ffi::CString::new(name).ok()?;
    // SAFETY: c is a valid NUL-terminated string.
    let i = unsafe { libc::if_nametoindex(c.as_ptr()) };
    (i != 0).then_some(i)
}

/// Run `f` on a fresh thread that has joined the network namespace `ns` (setns(2) changes the
/// namespace of the calling thread only, so the caller's own sockets stay where they are).
pub fn in_netns<T: Send>(
    ns: BorrowedFd<'_>,
    f: impl FnOnce() -> io::Result<T> + Send,
) -> io::Result<T> {
    let raw: RawFd = ns.as_raw_fd();
    std::thread::scope(|s| {
        s.spawn(move || {
            // SAFETY: the caller's BorrowedFd outlives this scoped thread.
            let fd = unsafe { BorrowedFd::borrow_raw(raw) };
            setns(fd, CloneFlags::CLONE_NEWNET).map_err(io::Error::from)?;
            f()
        })
        .join()
        .unwrap_or_else(|_| Err(io::Error::other("network namespace thread panicked")))
    })
}

/// A new network namespace with `lo` up; the returned fd keeps it alive.
pub fn new_netns() -> io::Result<OwnedFd> {
    std::thread::scope(|s| {
        s.spawn(|| {
            // unshare(CLONE_NEWNET) moves this thread alone into the new namespace.
            unshare(CloneFlags::CLONE_NEWNET).map_err(io::Error::from)?;
            let f = std::fs::File::open("/proc/thread-self/ns/net")?;
            let mut nl = Netlink::open()?;
            nl.set_up(link_index("lo").unwrap_or(1), None)?;
            Ok(OwnedFd::from(f))
        })
        .join()
        .unwrap_or_else(|_| Err(io::Error::other("network namespace thread panicked")))
    })
}

/// The fd of the calling thread's current network namespace.
pub fn current_netns() -> io::Result<OwnedFd> {
    Ok(OwnedFd::from(std::fs::File::open(
        "/proc/thread-self/ns/net",
    )?))
}

/// Borrow helper so callers can pass `&OwnedFd` or `&File`.
pub fn borrow(fd: &impl AsFd) -> BorrowedFd<'_> {
    fd.as_fd()
}
