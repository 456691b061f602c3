//! End-to-end networking tests: real bridges, veths, nft rules and namespaces, as root.
//!
//! Traffic goes only to namespaces a test made: the "internet" is a network namespace with a
//! veth to the host, an address in a /24 the test checked is unused on the host, and busybox
//! httpd inside it. Each test uses its own bridge name and subnets (tests run in parallel),
//! points the embedded DNS server's upstream at 127.0.0.1 (the container's own loopback) so no
//! query leaves the machine, and removes its containers, networks, links, nft objects and
//! namespaces in Drop guards, even when it fails.

mod containers_common;
mod network_common;

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::Ordering;
use std::time::Duration;

use containers_common::busybox_rm;
use network_common::{
    chains_of, debian_mirror, import_debian, sh, sh_ok, sources_list, FakeInternet, NetStrata,
};
use strata_runtime::network::ipam::Leases;
use strata_runtime::network::netlink::{link_index, Netlink};
use strata_runtime::network::{dns, nft, Ipv4Net};
use strata_testkit::container::{eventually, http_get};
use strata_testkit::fixtures::INDEX_HTML;

/// A UDP server on a socket: a thread answering each datagram with what `reply` makes of it and
/// its sender; stops on drop.
struct UdpServer {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl UdpServer {
    fn start(
        sock: std::net::UdpSocket,
        reply: impl Fn(&[u8], std::net::SocketAddr) -> Option<Vec<u8>> + Send + 'static,
    ) -> UdpServer {
        sock.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut buf = [0u8; 1500];
            while !flag.load(Ordering::SeqCst) {
                if let Ok((n, peer)) = sock.recv_from(&mut buf) {
                    if let Some(answer) = reply(&buf[..n], peer) {
                        let _ = sock.send_to(&answer, peer);
                    }
                }
            }
        });
        UdpServer {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for UdpServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A DNS server in the fake internet answering every A query with `answer` (its socket made in
/// that namespace); stops on drop.
fn fake_dns(inet: &FakeInternet, answer: Ipv4Addr) -> UdpServer {
    let ip = inet.ip;
    let sock = in_netns(&format!("/run/netns/{}", inet.ns), move || {
        std::net::UdpSocket::bind((ip, 53)).unwrap()
    });
    UdpServer::start(sock, move |query, _| {
        let q = dns::parse_query(query)?;
        let ips = if q.qtype == 1 { vec![answer] } else { vec![] };
        Some(dns::answer(query, &q, &ips, 0))
    })
}

/// `run --rm OPTS busybox wget -q -O - URL`.
fn wget_run<'a>(opts: &[&'a str], url: &'a str) -> Vec<&'a str> {
    busybox_rm(opts, &["wget", "-q", "-O", "-", url])
}

/// `url` fetched from inside the fake internet's namespace (retried for 20 s): the body,
/// trimmed.
fn wget_from_inet(inet: &FakeInternet, url: &str) -> Option<String> {
    eventually(Duration::from_secs(20), || {
        let o = Command::new("ip")
            .args([
                "netns", "exec", &inet.ns, "busybox", "wget", "-q", "-O", "-", url,
            ])
            .output()
            .ok()?;
        o.status
            .success()
            .then(|| String::from_utf8_lossy(&o.stdout).trim().to_string())
    })
}

fn lease_file(bridge: &str) -> PathBuf {
    Leases::path(&strata_runtime::network::state_dir(), bridge)
}

fn nothing_left(bridge: &str) {
    assert!(
        link_index(bridge).is_none(),
        "bridge {bridge} is still there"
    );
    assert!(!chains_of(bridge), "nft chains of {bridge} are still there");
    assert!(
        !lease_file(bridge).exists(),
        "leases of {bridge} still there"
    );
}

#[test]
fn default_bridge_masquerades_to_the_fake_internet() {
    let t = NetStrata::new();
    let inet = FakeInternet::new();
    let out = t.ok(&wget_run(&[], &inet.url()));
    assert_eq!(out, "fake internet\n");
    // The server saw the host's address on its link: the container's was masqueraded.
    let log = inet.log();
    assert!(log.contains(&format!("{}:", inet.host_ip)), "{log}");
    // While a container runs: the bridge, its address, a route and resolv.conf/hosts.
    t.ok(&["run", "-d", "--name", "c1", "busybox", "sleep", "300"]);
    let ip = t.ip_of("c1", "bridge");
    assert!(t.subnet.contains(ip), "{ip} not in {}", t.subnet);
    let f = "{{.NetworkSettings.IPAddress}} {{.NetworkSettings.Gateway}} {{.NetworkSettings.MacAddress}}";
    let o = ip.octets();
    assert_eq!(
        t.ok(&["inspect", "-f", f, "c1"]).trim(),
        format!(
            "{ip} {} 02:42:{:02x}:{:02x}:{:02x}:{:02x}",
            t.subnet.nth(1).unwrap(),
            o[0],
            o[1],
            o[2],
            o[3]
        )
    );
    let route = t.ok(&["exec", "c1", "ip", "route"]);
    assert!(
        route.contains(&format!("default via {}", t.subnet.nth(1).unwrap())),
        "{route}"
    );
    let hosts = t.ok(&["exec", "c1", "cat", "/etc/hosts"]);
    assert!(hosts.contains(&format!("{ip}\t")), "{hosts}");
    let resolv = t.ok(&["exec", "c1", "cat", "/etc/resolv.conf"]);
    assert!(resolv.contains("nameserver"), "{resolv}");
    assert!(!resolv.contains("nameserver 127."), "{resolv}");
    assert!(link_index(&t.bridge).is_some());
    assert!(chains_of(&t.bridge));
    assert!(t.ok(&["ps"]).contains("c1"));
    t.ok(&["rm", "-f", "c1"]);
    nothing_left(&t.bridge);
}

#[test]
fn user_network_names_resolve_within_and_not_across() {
    let t = NetStrata::new();
    let br_a = t.create_network("neta", &[]);
    let _br_b = t.create_network("netb", &[]);
    let ls = t.ok(&["network", "ls"]);
    assert!(
        ls.starts_with("NETWORK ID     NAME      DRIVER    SCOPE\n"),
        "{ls}"
    );
    for n in ["bridge", "host", "none", "neta", "netb"] {
        assert!(ls.contains(&format!(" {n} ")), "{ls}");
    }
    let dns = ["--dns", "127.0.0.1"];
    let mut args = vec!["run", "-d", "--name", "web", "--network", "neta"];
    args.extend_from_slice(&["--network-alias", "site"]);
    args.extend_from_slice(&dns);
    args.extend_from_slice(&["busybox", "httpd", "-f", "-p", "80", "-h", "/www"]);
    t.ok(&args);
    let fetch = |net: &str, host: &str| {
        let url = format!("http://{host}/");
        t.s.run(&wget_run(&["--network", net, "--dns", "127.0.0.1"], &url))
    };
    let r = fetch("neta", "web");
    assert_eq!(r.stdout, INDEX_HTML, "{r:?}");
    let r = fetch("neta", "site");
    assert_eq!(r.stdout, INDEX_HTML, "{r:?}");
    let r = fetch("netb", "web");
    assert_ne!(r.code, Some(0), "resolved across networks: {r:?}");
    let resolv = t.ok(&["exec", "web", "cat", "/etc/resolv.conf"]);
    assert!(resolv.contains("nameserver 127.0.0.11"), "{resolv}");
    // Two containers fetch each other's pages by name.
    let mut args = vec!["run", "-d", "--name", "peer", "--network", "neta"];
    args.extend_from_slice(&dns);
    args.extend_from_slice(&["busybox", "httpd", "-f", "-p", "80", "-h", "/www"]);
    t.ok(&args);
    let a = t.ok(&["exec", "web", "wget", "-q", "-O", "-", "http://peer/"]);
    let b = t.ok(&["exec", "peer", "wget", "-q", "-O", "-", "http://web/"]);
    assert_eq!((a.as_str(), b.as_str()), (INDEX_HTML, INDEX_HTML));
    let on_a = t.ok(&[
        "ps",
        "--filter",
        "network=neta",
        "--format",
        "{{.Names}} {{.Networks}}",
    ]);
    assert_eq!(on_a, "peer neta\nweb neta\n");
    let null = t.ok(&[
        "network",
        "ls",
        "--filter",
        "driver=null",
        "--format",
        "{{.Name}}",
    ]);
    assert_eq!(null, "none\n");
    // Connect `peer` to netb at run time: a container there now finds it by name.
    t.ok(&["network", "connect", "--alias", "peer-b", "netb", "peer"]);
    let r = fetch("netb", "peer-b");
    assert_eq!(r.stdout, INDEX_HTML, "{r:?}");
    let nets: serde_json::Value = serde_json::from_str(&t.ok(&[
        "inspect",
        "-f",
        "{{json .NetworkSettings.Networks}}",
        "peer",
    ]))
    .unwrap();
    let keys: Vec<&String> = nets.as_object().unwrap().keys().collect();
    assert_eq!(keys, ["neta", "netb"]);
    assert!(nets["netb"]["IPAddress"].as_str().unwrap().contains('.'));
    t.ok(&["network", "disconnect", "netb", "peer"]);
    let r = fetch("netb", "peer-b");
    assert_ne!(r.code, Some(0), "{r:?}");
    // A network in use cannot go; once its containers are gone, it can.
    let r = t.s.run(&["network", "rm", "neta"]);
    assert_ne!(r.code, Some(0));
    assert!(r.stderr.contains("has active endpoints"), "{r:?}");
    let r = t.s.run(&["network", "create", "neta"]);
    assert!(
        r.stderr.contains("network with name neta already exists"),
        "{r:?}"
    );
    let r = t.s.run(&["network", "rm", "bridge"]);
    assert!(
        r.stderr.contains("bridge is a pre-defined network"),
        "{r:?}"
    );
    t.ok(&["rm", "-f", "web", "peer"]);
    nothing_left(&br_a);
    assert_eq!(t.ok(&["network", "rm", "neta"]), "neta\n");
    assert_eq!(
        t.ok(&["network", "prune", "-f"]),
        "Deleted Networks:\nnetb\n"
    );
    assert_eq!(t.ok(&["network", "ls", "-q"]).lines().count(), 3);
}

#[test]
fn internal_network_has_no_way_out() {
    let t = NetStrata::new();
    let inet = FakeInternet::new();
    t.create_network("closed", &["--internal"]);
    t.create_network("open", &[]);
    let url = inet.url();
    let get = |net: &str| {
        t.s.run(&wget_run(&["--network", net, "--dns", "127.0.0.1"], &url))
    };
    let r = get("closed");
    assert_ne!(r.code, Some(0), "an internal network reached out: {r:?}");
    let r = get("open");
    assert_eq!(r.stdout, "fake internet\n", "{r:?}");
    assert_eq!(t.inspect_network("closed", "{{.Internal}}"), "true");
}

#[test]
fn publish_all_and_ipv6_ports_from_loopback() {
    let t = NetStrata::new();
    let id = t.ok(&["run", "-d", "-P", "--name", "web", "web:1"]);
    let ports = t.ok(&["port", "web"]);
    let port: u16 = ports
        .lines()
        .next()
        .and_then(|l| l.rsplit(':').next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("{ports}"));
    assert_eq!(
        ports,
        format!("80/tcp -> 0.0.0.0:{port}\n80/tcp -> [::]:{port}\n")
    );
    let ps = t.ok(&["ps", "--format", "{{.Ports}}"]);
    assert_eq!(ps, format!("0.0.0.0:{port}->80/tcp, :::{port}->80/tcp\n"));
    for host in ["127.0.0.1", "::1"] {
        let got = eventually(Duration::from_secs(20), || http_get(host, port, "/").ok());
        assert_eq!(got, Some((200, INDEX_HTML.to_string())), "{host}");
    }
    // DNAT for traffic from outside: the map element points at the container.
    let ip = t.ip_of("web", "bridge");
    let table = nft::list().unwrap_or_default();
    assert!(
        table.contains(&format!("tcp . {port} : {ip} . 80")),
        "{table}"
    );
    // From the fake internet, the host's address on its link reaches the container by DNAT:
    // a CGI shows the client's own address (the userspace proxy would show 127.0.0.1).
    let inet = FakeInternet::new();
    let port2 = strata_testkit::container::free_port();
    t.ok(&[
        "run", "-d", "--name", "dnat", "-p", &format!("{port2}:80"), "busybox", "sh", "-c",
        "mkdir -p /www/cgi-bin && printf '#!/bin/sh\\necho\\necho $REMOTE_ADDR\\n' > /www/cgi-bin/ip \
         && chmod +x /www/cgi-bin/ip && exec httpd -f -p 80 -h /www",
    ]);
    let url = format!("http://{}:{port2}/cgi-bin/ip", inet.host_ip);
    let got = wget_from_inet(&inet, &url);
    // busybox httpd listens on IPv6 and shows IPv4 clients as [::ffff:a.b.c.d].
    assert_eq!(got, Some(format!("[::ffff:{}]", inet.ip)));
    let local = format!("http://127.0.0.1:{port2}/cgi-bin/ip");
    let out = Command::new("busybox")
        .args(["wget", "-q", "-O", "-", &local])
        .output()
        .unwrap();
    let body = String::from_utf8_lossy(&out.stdout);
    assert!(body.contains("127.0.0.1"), "{out:?}");
    // An IPv6-only publish.
    let v6 = strata_testkit::container::free_port();
    t.ok(&[
        "run",
        "-d",
        "--name",
        "web6",
        "-p",
        &format!("[::1]:{v6}:80"),
        "web:1",
    ]);
    let got = eventually(Duration::from_secs(20), || http_get("::1", v6, "/").ok());
    assert_eq!(got, Some((200, INDEX_HTML.to_string())));
    assert_eq!(t.ok(&["port", "web6", "80"]), format!("[::1]:{v6}\n"));
    assert!(http_get("127.0.0.1", v6, "/").is_err());
    let f = "{{json .NetworkSettings.Ports}}";
    let p: serde_json::Value =
        serde_json::from_str(&t.ok(&["inspect", "-f", f, id.trim()])).unwrap();
    assert_eq!(p["80/tcp"][0]["HostPort"], port.to_string());
    assert_eq!(p["80/tcp"][0]["HostIp"], "0.0.0.0");
    assert_eq!(p["80/tcp"][1]["HostIp"], "::");
    assert_eq!(p["80/tcp"][1]["HostPort"], port.to_string());
}

#[test]
fn addresses_are_reused_and_distinct_under_concurrent_runs() {
    let t = NetStrata::new();
    t.ok(&["run", "-d", "--name", "ca", "busybox", "sleep", "300"]);
    let first = t.ip_of("ca", "bridge");
    assert_eq!(first, t.subnet.nth(2).unwrap());
    t.ok(&["rm", "-f", "ca"]);
    t.ok(&["run", "-d", "--name", "cb", "busybox", "sleep", "300"]);
    assert_eq!(
        t.ip_of("cb", "bridge"),
        first,
        "a released address is reused"
    );
    let names: Vec<String> = (0..20).map(|i| format!("c{i}")).collect();
    std::thread::scope(|sc| {
        for n in &names {
            let t = &t;
            sc.spawn(move || {
                t.ok(&["run", "-d", "--name", n, "busybox", "sleep", "300"]);
            });
        }
    });
    let mut seen = BTreeSet::new();
    seen.insert(first);
    for n in &names {
        let ip = t.ip_of(n, "bridge");
        assert!(t.subnet.contains(ip));
        assert!(seen.insert(ip), "{ip} handed out twice");
    }
    let leases = Leases::load(&strata_runtime::network::state_dir(), &t.bridge)
        .unwrap()
        .unwrap();
    assert_eq!(leases.endpoints.len(), 21);
}

fn supervisor_pid(root: &Path, id: &str) -> i32 {
    let state: serde_json::Value = serde_json::from_slice(
        &std::fs::read(root.join("containers").join(id).join("state.json")).unwrap(),
    )
    .unwrap();
    state["supervisor_pid"].as_i64().unwrap() as i32
}

#[test]
fn killed_supervisor_is_reclaimed_and_hand_deleted_parts_come_back() {
    let t = NetStrata::new();
    let inet = FakeInternet::new();
    let id = t.ok(&["run", "-d", "-p", "80", "--name", "k1", "web:1"]);
    let id = id.trim();
    let ip = t.ip_of("k1", "bridge");
    let veth = Leases::load(&strata_runtime::network::state_dir(), &t.bridge)
        .unwrap()
        .unwrap()
        .endpoints[id]
        .veth
        .clone();
    assert!(link_index(&veth).is_some());
    // SAFETY: killing the supervisor this test started.
    unsafe { libc::kill(supervisor_pid(t.s.root_path(), id), libc::SIGKILL) };
    let gone = eventually(Duration::from_secs(10), || {
        t.ok(&["ps", "-a", "--format", "{{.Status}}"])
            .contains("Exited")
            .then_some(())
    });
    assert!(gone.is_some());
    assert!(link_index(&veth).is_none());
    nothing_left(&t.bridge);
    // The address is free again, and a bridge deleted by hand comes back on the next run.
    t.ok(&["run", "-d", "--name", "k2", "busybox", "sleep", "300"]);
    assert_eq!(t.ip_of("k2", "bridge"), ip);
    let i = link_index(&t.bridge).unwrap();
    Netlink::open().unwrap().delete_link(i).unwrap();
    sh_ok(&[
        "nft",
        "delete",
        "chain",
        "ip",
        "strata",
        &format!("{}_post", t.bridge),
    ]);
    let out = t.ok(&wget_run(&[], &inet.url()));
    assert_eq!(out, "fake internet\n");
    assert!(link_index(&t.bridge).is_some() && chains_of(&t.bridge));
    // k2's veth was put back on the re-created bridge.
    let k2 = t.ok(&["exec", "k2", "wget", "-q", "-O", "-", &inet.url()]);
    assert_eq!(k2, "fake internet\n");
    t.ok(&["rm", "-f", "k1", "k2"]);
    nothing_left(&t.bridge);
}

#[test]
fn flags_hostname_add_host_dns_mac_ip() {
    let t = NetStrata::new();
    t.create_network("fixed", &[]);
    let subnet = t.inspect_network("fixed", "{{range .IPAM.Config}}{{.Subnet}}{{end}}");
    let net: Ipv4Net = subnet.parse().unwrap();
    let want = net.nth(77).unwrap().to_string();
    let out = t.ok(&busybox_rm(
        &[
            "--network",
            "fixed",
            "--ip",
            &want,
            "--mac-address",
            "92:d0:c6:0a:29:33",
            "--hostname",
            "box",
            "--add-host",
            "db.local:10.1.2.3",
            "--dns",
            "127.0.0.1",
        ],
        &["sh", "-c", "hostname; ip addr show eth0; cat /etc/hosts"],
    ));
    assert!(out.starts_with("box\n"), "{out}");
    assert!(out.contains(&format!("inet {want}/24")), "{out}");
    assert!(out.contains("92:d0:c6:0a:29:33"), "{out}");
    assert!(out.contains("10.1.2.3\tdb.local"), "{out}");
    let out = t.ok(&busybox_rm(
        &["--dns", "127.0.0.9"],
        &["cat", "/etc/resolv.conf"],
    ));
    assert!(out.contains("nameserver 127.0.0.9"), "{out}");
    // container:NAME shares the other's namespace.
    t.ok(&["run", "-d", "--name", "base", "busybox", "sleep", "300"]);
    let ip = t.ip_of("base", "bridge");
    let out = t.ok(&busybox_rm(
        &["--network", "container:base"],
        &["ip", "addr"],
    ));
    assert!(out.contains(&format!("inet {ip}/")), "{out}");
    let r =
        t.s.run(&["run", "--rm", "--network", "nosuchnet", "busybox", "true"]);
    assert_eq!(r.code, Some(125), "{r:?}");
    assert!(r.stderr.contains("network nosuchnet not found"), "{r:?}");
    let r =
        t.s.run(&["run", "--rm", "--ip", "10.0.0.9", "busybox", "true"]);
    assert_eq!(r.code, Some(125), "{r:?}");
}

#[test]
fn embedded_dns_forwards_other_names_upstream() {
    // The tutorial's "install a package from a mirror", on a user network: the mirror's name
    // is unknown to the network, so the embedded server asks the upstream (the fake
    // internet's DNS) from the container's namespace, through the NAT.
    let t = NetStrata::new();
    let inet = FakeInternet::new();
    let _dns = fake_dns(&inet, inet.ip);
    t.create_network("tut", &[]);
    let ns = inet.ip.to_string();
    let out = t.ok(&wget_run(
        &["--network", "tut", "--dns", &ns],
        "http://mirror.example/",
    ));
    assert_eq!(out, "fake internet\n");
    // On the default bridge, --dns goes to resolv.conf directly.
    let out = t.ok(&wget_run(&["--dns", &ns], "http://mirror.example/"));
    assert_eq!(out, "fake internet\n");
}

#[test]
fn tutorial_flow_installs_a_package_from_a_test_made_mirror() {
    // The tutorial's `apt-get update && apt-get install` on the default bridge, on the Debian
    // image made offline, from an apt repository the test serves in its fake internet (no DNS
    // query leaves the container: its only resolver is its own loopback).
    let t = NetStrata::new();
    import_debian(&t.s, "debian:test");
    let (mirror, pkgs) = debian_mirror();
    assert_eq!(pkgs, ["jq", "libjq1", "libonig5"]);
    let inet = FakeInternet::serving(Some(mirror.path()));
    let script = format!(
        "test ! -e /etc/apt/sources.list && echo '{}' > /etc/apt/sources.list \
         && apt-get update && apt-get install -y --no-install-recommends jq && jq --version \
         && echo '{{\"a\":[1,2]}}' | jq -c .a",
        sources_list(&inet)
    );
    let r = t.s.run_timeout(
        &[
            "run",
            "--rm",
            "--dns",
            "127.0.0.1",
            "debian:test",
            "sh",
            "-c",
            &script,
        ],
        Duration::from_secs(120),
    );
    assert!(r.ok(), "{r:?}");
    assert!(r.stdout.contains("Setting up jq "), "{}", r.stdout);
    assert!(r.stdout.ends_with("jq-1.6\n[1,2]\n"), "{}", r.stdout);
    // Every package came from the mirror, through the bridge's masquerading.
    let log = inet.log();
    for p in &pkgs {
        assert!(log.contains(&format!("/{p}_")), "{p} not fetched: {log}");
    }
    assert!(log.contains(&format!("{}:", inet.host_ip)), "{log}");
    assert!(!log.contains("response:5"), "{log}");
    nothing_left(&t.bridge);
}

/// Run `f` on a thread that joined the network namespace at `ns_path`.
fn in_netns<T: Send + 'static>(ns_path: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let ns = std::fs::File::open(ns_path).unwrap();
    std::thread::spawn(move || {
        nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        f()
    })
    .join()
    .unwrap()
}

/// A UDP echo server on port 53 inside a container's namespace (answering `<peer ip> says
/// <text>`); stops on drop.
fn udp_echo(ns_path: &str) -> UdpServer {
    let sock = in_netns(ns_path, || std::net::UdpSocket::bind("0.0.0.0:53").unwrap());
    UdpServer::start(sock, |text, peer| {
        let text = String::from_utf8_lossy(text);
        Some(format!("{} says {text}", peer.ip()).into_bytes())
    })
}

/// Send `text` to `to` from a socket bound to `from`; the answer, if one comes in 2 s.
fn udp_ask(from: &str, to: &str, text: &str) -> Option<String> {
    let s = std::net::UdpSocket::bind(from).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    s.send_to(text.as_bytes(), to).ok()?;
    let mut buf = [0u8; 1500];
    let n = s.recv(&mut buf).ok()?;
    Some(String::from_utf8_lossy(&buf[..n]).into_owned())
}

#[test]
fn udp_ports_by_proxy_and_dnat() {
    let t = NetStrata::new();
    let inet = FakeInternet::new();
    let hp = strata_testkit::container::free_port();
    t.ok(&[
        "run",
        "-d",
        "--name",
        "udp1",
        "-p",
        &format!("{hp}:53/udp"),
        "busybox",
        "sleep",
        "300",
    ]);
    let pid = t.ok(&["inspect", "-f", "{{.State.Pid}}", "udp1"]);
    let _echo = udp_echo(&format!("/proc/{}/ns/net", pid.trim()));
    assert_eq!(
        t.ok(&["port", "udp1"]),
        format!("53/udp -> 0.0.0.0:{hp}\n53/udp -> [::]:{hp}\n")
    );
    assert_eq!(
        t.ok(&["ps", "--format", "{{.Ports}}"]),
        format!("0.0.0.0:{hp}->53/udp, :::{hp}->53/udp\n")
    );
    // From the host's loopback (both families): the userspace proxy, which the container sees
    // as its own loopback.
    let to4 = format!("127.0.0.1:{hp}");
    let got = eventually(Duration::from_secs(10), || {
        udp_ask("127.0.0.1:0", &to4, "hi")
    });
    assert_eq!(got.as_deref(), Some("127.0.0.1 says hi"));
    let to6 = format!("[::1]:{hp}");
    assert_eq!(
        udp_ask("[::1]:0", &to6, "hi6").as_deref(),
        Some("127.0.0.1 says hi6")
    );
    // A second client gets its own flow.
    assert_eq!(
        udp_ask("127.0.0.1:0", &to4, "again").as_deref(),
        Some("127.0.0.1 says again")
    );
    // From the fake internet to the host's address on its link: DNAT, the client's own
    // address reaches the container.
    let ip = t.ip_of("udp1", "bridge");
    let table = nft::list().unwrap_or_default();
    assert!(
        table.contains(&format!("udp . {hp} : {ip} . 53")),
        "{table}"
    );
    let (from, to) = (format!("{}:0", inet.ip), format!("{}:{hp}", inet.host_ip));
    let got = in_netns(&format!("/run/netns/{}", inet.ns), move || {
        eventually(Duration::from_secs(10), || udp_ask(&from, &to, "out"))
    });
    assert_eq!(got, Some(format!("{} says out", inet.ip)));
    let r =
        t.s.run(&["run", "--rm", "-p", "53/sctp", "busybox", "true"]);
    assert_eq!(r.code, Some(125), "{r:?}");
    t.ok(&["rm", "-f", "udp1"]);
    nothing_left(&t.bridge);
}

/// A DNS query for the A record of `name`.
fn dns_query(id: u16, name: &str) -> Vec<u8> {
    let mut q = id.to_be_bytes().to_vec();
    q.extend_from_slice(&[1, 0, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.split('.') {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    q
}

#[test]
fn embedded_dns_answers_over_tcp() {
    use std::io::{Read, Write};
    let t = NetStrata::new();
    t.create_network("tcpdns", &[]);
    let run = |name: &str, extra: &[&str]| {
        let mut a = vec!["run", "-d", "--name", name, "--network", "tcpdns"];
        a.extend_from_slice(extra);
        a.extend_from_slice(&["--dns", "127.0.0.1", "busybox", "sleep", "300"]);
        t.ok(&a);
    };
    run("web", &["--network-alias", "site"]);
    run("client", &[]);
    let web = t.ip_of("web", "tcpdns");
    let pid = t.ok(&["inspect", "-f", "{{.State.Pid}}", "client"]);
    // Three queries on one connection, from the client container's namespace.
    let replies = in_netns(&format!("/proc/{}/ns/net", pid.trim()), || {
        let mut c = std::net::TcpStream::connect("127.0.0.11:53").unwrap();
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut out = Vec::new();
        for (i, name) in ["web", "site", "nosuch.invalid"].iter().enumerate() {
            let q = dns_query(0x100 + i as u16, name);
            let mut framed = (q.len() as u16).to_be_bytes().to_vec();
            framed.extend_from_slice(&q);
            c.write_all(&framed).unwrap();
            let mut len = [0u8; 2];
            c.read_exact(&mut len).unwrap();
            let mut reply = vec![0u8; u16::from_be_bytes(len) as usize];
            c.read_exact(&mut reply).unwrap();
            out.push(reply);
        }
        out
    });
    for (i, r) in replies.iter().enumerate() {
        assert_eq!(u16::from_be_bytes([r[0], r[1]]), 0x100 + i as u16, "{r:?}");
    }
    let a_record = |r: &[u8]| {
        assert_eq!(
            (r[3] & 0xf, u16::from_be_bytes([r[6], r[7]])),
            (0, 1),
            "{r:?}"
        );
        Ipv4Addr::new(
            r[r.len() - 4],
            r[r.len() - 3],
            r[r.len() - 2],
            r[r.len() - 1],
        )
    };
    assert_eq!(a_record(&replies[0]), web);
    assert_eq!(a_record(&replies[1]), web);
    // Not a name of the network: forwarded over TCP to the upstream (the container's own
    // loopback, where nothing listens): SERVFAIL.
    assert_eq!(replies[2][3] & 0xf, 2, "{:?}", replies[2]);
}

#[test]
fn legacy_links_are_hosts_entries() {
    let t = NetStrata::new();
    t.ok(&["run", "-d", "--name", "web", "web:1"]);
    let ip = t.ip_of("web", "bridge");
    let id = t.ok(&["inspect", "-f", "{{.Id}}", "web"]);
    let short = &id.trim()[..12];
    let out = t.ok(&busybox_rm(
        &["--name", "client", "--link", "web:db", "--dns", "127.0.0.1"],
        &["sh", "-c", "cat /etc/hosts; wget -q -O- http://db/"],
    ));
    assert!(out.contains(&format!("\n{ip}\tdb {short} web\n")), "{out}");
    assert!(out.ends_with(INDEX_HTML), "{out}");
    let out = t.ok(&busybox_rm(&["--link", "web"], &["cat", "/etc/hosts"]));
    assert!(out.contains(&format!("\n{ip}\tweb {short}\n")), "{out}");
    let r =
        t.s.run(&["run", "--rm", "--link", "nosuch:x", "busybox", "true"]);
    assert_eq!(r.code, Some(125), "{r:?}");
    assert!(
        r.stderr.contains("could not get container for nosuch"),
        "{r:?}"
    );
    t.ok(&["stop", "-t", "1", "web"]);
    let r = t.s.run(&[
        "run", "--rm", "--name", "late", "--link", "web:db", "busybox", "true",
    ]);
    assert_ne!(r.code, Some(0), "{r:?}");
    assert!(
        r.stderr
            .contains("Cannot link to a non running container: /web AS /late/db"),
        "{r:?}"
    );
    assert!(t
        .ok(&["ps", "-a", "--format", "{{.Names}}"])
        .lines()
        .all(|n| n != "late"));
}

/// A ULA /64 of the test's own (`fdXX:XXXX:XXXX:<n>::/64`).
fn free_subnet6(n: u16) -> String {
    let p = std::process::id();
    format!("fd5a:{:x}:{:x}:{n:x}::/64", p >> 16, p & 0xffff)
}

#[test]
fn ipv6_networks_addresses_routes_and_dnat() {
    let t = NetStrata::new();
    let sub4 = network_common::free_subnet().to_string();
    let sub6 = free_subnet6(1);
    let prefix = sub6.trim_end_matches("/64");
    t.ok(&[
        "network", "create", "--ipv6", "--subnet", &sub4, "--subnet", &sub6, "six",
    ]);
    assert_eq!(t.inspect_network("six", "{{.EnableIPv6}}"), "true");
    assert_eq!(
        t.inspect_network("six", "{{range .IPAM.Config}}{{.Subnet}} {{end}}"),
        format!("{sub4} {sub6}")
    );
    let port = strata_testkit::container::free_port();
    t.ok(&[
        "run", "-d", "--name", "web6", "--network", "six", "-p", &format!("{port}:80"),
        "busybox", "sh", "-c",
        "mkdir -p /www/cgi-bin && printf '#!/bin/sh\\necho\\necho $REMOTE_ADDR\\n' > /www/cgi-bin/ip \
         && chmod +x /www/cgi-bin/ip && exec httpd -f -p 80 -h /www",
    ]);
    let f = "{{with index .NetworkSettings.Networks \"six\"}}{{.GlobalIPv6Address}}/{{.GlobalIPv6PrefixLen}} {{.IPv6Gateway}}{{end}}";
    let got = t.ok(&["inspect", "-f", f, "web6"]);
    let ip6 = format!("{prefix}2");
    assert_eq!(got.trim(), format!("{ip6}/64 {prefix}1"));
    // Container to container over IPv6, and the container's IPv6 default route.
    let out = t.ok(&busybox_rm(
        &["--network", "six", "--dns", "127.0.0.1"],
        &[
            "sh",
            "-c",
            &format!("ip -6 route; wget -q -O - http://[{ip6}]/index.html"),
        ],
    ));
    assert!(
        out.contains(&format!("default via {prefix}1 dev eth0")),
        "{out}"
    );
    assert!(out.ends_with(INDEX_HTML), "{out}");
    // The embedded DNS answers AAAA with it.
    let out = t.ok(&busybox_rm(
        &["--network", "six", "--dns", "127.0.0.1"],
        &["busybox", "nslookup", "-type=AAAA", "web6"],
    ));
    assert!(out.contains(&format!("Address: {ip6}")), "{out}");
    // The host reaches it on the bridge.
    let got = eventually(Duration::from_secs(20), || http_get(&ip6, 80, "/").ok());
    if got.is_none() {
        let diag = |a: &[&str]| String::from_utf8_lossy(&sh(a).stdout).into_owned();
        panic!(
            "host -> [{ip6}]:80: {:?}\nroutes:\n{}\nneighbours:\n{}\naddresses:\n{}",
            http_get(&ip6, 80, "/"),
            diag(&["ip", "-6", "route"]),
            diag(&["ip", "-6", "neigh"]),
            diag(&["ip", "-6", "addr"]),
        );
    }
    assert_eq!(got, Some((200, INDEX_HTML.to_string())));
    // IPv6 DNAT of the published port, from a fake internet that has an IPv6 link to the host:
    // the CGI sees the client's own address (the proxy would show the loopback).
    let table = nft::list6().unwrap_or_default();
    assert!(
        table.contains(&format!("tcp . {port} : {ip6} . 80")),
        "{table}"
    );
    assert!(table.contains(&format!("ip6 saddr {sub6}")), "{table}");
    let inet = FakeInternet::new();
    let link6 = free_subnet6(2);
    let lp = link6.trim_end_matches("/64");
    let (host6, far6) = (format!("{lp}1"), format!("{lp}2"));
    sh_ok(&[
        "ip",
        "addr",
        "add",
        &format!("{host6}/64"),
        "dev",
        &inet.veth,
        "nodad",
    ]);
    sh_ok(&[
        "ip",
        "-n",
        &inet.ns,
        "addr",
        "add",
        &format!("{far6}/64"),
        "dev",
        "eth0",
        "nodad",
    ]);
    let url = format!("http://[{host6}]:{port}/cgi-bin/ip");
    let got = wget_from_inet(&inet, &url);
    assert_eq!(got, Some(format!("[{far6}]")));
    let br6 = t.inspect_network(
        "six",
        "{{index .Options \"com.docker.network.bridge.name\"}}",
    );
    t.ok(&["rm", "-f", "web6"]);
    t.ok(&["network", "rm", "six"]);
    let table = nft::list6().unwrap_or_default();
    assert!(
        !table.contains(&format!("{br6}_")),
        "IPv6 chains of {br6} left: {table}"
    );
}

#[test]
fn default_bridge_gets_ipv6_when_configured() {
    let t = NetStrata::new();
    let sub6 = free_subnet6(3);
    let prefix = sub6.trim_end_matches("/64").to_string();
    let bip = format!("{}/24", t.subnet.nth(1).unwrap());
    std::fs::write(
        t.s.root_path().join("strata.json"),
        serde_json::json!({"bridge": t.bridge, "bip": bip, "ipv6": true, "fixed-cidr-v6": sub6})
            .to_string(),
    )
    .unwrap();
    t.ok(&["run", "-d", "--name", "v6a", "busybox", "sleep", "300"]);
    let f = "{{.NetworkSettings.GlobalIPv6Address}} {{.NetworkSettings.IPv6Gateway}}";
    assert_eq!(
        t.ok(&["inspect", "-f", f, "v6a"]).trim(),
        format!("{prefix}2 {prefix}1")
    );
    let out = t.ok(&busybox_rm(
        &[],
        &["ping", "-6", "-c", "1", "-W", "5", &format!("{prefix}2")],
    ));
    assert!(out.contains("1 packets received"), "{out}");
    t.ok(&["rm", "-f", "v6a"]);
    nothing_left(&t.bridge);
}

/// `--ip6` on `run`, `create` and `network connect` (Docker's rules): the address must lie in the
/// IPv6 subnet the user gave the network and be free; containers reach each other over it; a
/// network without IPv6 (or without a user-given IPv6 subnet, or the default bridge) gets
/// Docker's refusal, and nothing is left of a refused `run`. A later container whose derived
/// address (its IPv4 host number) an `--ip6` took gets the lowest free one instead.
#[test]
fn ip6_fixed_addresses_on_ipv6_networks() {
    let t = NetStrata::new();
    let sub4 = network_common::free_subnet().to_string();
    let sub6 = free_subnet6(4);
    let p = sub6.trim_end_matches("/64").to_string();
    t.ok(&[
        "network", "create", "--ipv6", "--subnet", &sub4, "--subnet", &sub6, "fix6",
    ]);
    t.create_network("plain4", &[]);
    t.ok(&["network", "create", "--ipv6=true", "auto6"]);
    let (a6, b6, c6) = (format!("{p}3"), format!("{p}b2"), format!("{p}c3"));
    let v6 = |name: &str| {
        let f = "{{with index .NetworkSettings.Networks \"fix6\"}}{{.GlobalIPv6Address}}/{{.GlobalIPv6PrefixLen}}{{end}}";
        t.ok(&["inspect", "-f", f, name]).trim().to_string()
    };
    // `a` (IPv4 .2) takes `::3`, the address IPv4 .3 derives; `d` (IPv4 .3) then gets `::2`.
    t.ok(&[
        "run",
        "-d",
        "--name",
        "x6a",
        "--network",
        "fix6",
        "--ip6",
        &a6,
        "busybox",
        "httpd",
        "-f",
        "-p",
        "80",
        "-h",
        "/www",
    ]);
    t.ok(&[
        "run",
        "-d",
        "--name",
        "x6d",
        "--network",
        "fix6",
        "busybox",
        "sleep",
        "300",
    ]);
    assert_eq!(v6("x6a"), format!("{a6}/64"));
    assert_eq!(v6("x6d"), format!("{p}2/64"));
    t.ok(&[
        "create",
        "--name",
        "x6b",
        "--network",
        "fix6",
        "--ip6",
        &b6,
        "--dns",
        "127.0.0.1",
        "busybox",
        "sleep",
        "300",
    ]);
    t.ok(&["start", "x6b"]);
    t.ok(&[
        "run",
        "-d",
        "--name",
        "x6c",
        "--network",
        "plain4",
        "busybox",
        "sleep",
        "300",
    ]);
    t.ok(&["network", "connect", "--ip6", &c6, "fix6", "x6c"]);
    assert_eq!(v6("x6b"), format!("{b6}/64"));
    assert_eq!(v6("x6c"), format!("{c6}/64"));
    let addrs = t.ok(&["exec", "x6c", "ip", "-6", "addr"]);
    assert!(addrs.contains(&format!("inet6 {c6}/64")), "{addrs}");
    // Container to container over the given addresses.
    let out = t.ok(&[
        "exec",
        "x6b",
        "sh",
        "-c",
        &format!("ping -6 -c 1 -W 5 {c6} && wget -q -O - http://[{a6}]/index.html"),
    ]);
    assert!(out.contains("1 packets received"), "{out}");
    assert!(out.ends_with(INDEX_HTML), "{out}");
    let out = t.ok(&[
        "exec",
        "x6c",
        "wget",
        "-q",
        "-O",
        "-",
        &format!("http://[{a6}]/index.html"),
    ]);
    assert_eq!(out, INDEX_HTML);
    // A restart keeps the address.
    t.ok(&["restart", "-t", "1", "x6b"]);
    assert_eq!(v6("x6b"), format!("{b6}/64"));
    // The embedded DNS answers AAAA with the given address.
    let out = t.ok(&["exec", "x6b", "busybox", "nslookup", "-type=AAAA", "x6a"]);
    assert!(out.contains(&format!("Address: {a6}")), "{out}");
    // `network connect --ip6` of a stopped container: checked now, attached at start.
    let f6 = format!("{p}f1");
    t.ok(&[
        "create",
        "--name",
        "x6f",
        "--network",
        "plain4",
        "busybox",
        "sleep",
        "300",
    ]);
    t.ok(&["network", "connect", "--ip6", &f6, "fix6", "x6f"]);
    t.ok(&["start", "x6f"]);
    assert_eq!(v6("x6f"), format!("{f6}/64"));
    t.ok(&["rm", "-f", "x6f"]);

    let before = t.ok(&["ps", "-aq"]);
    let refused = |args: &[&str], err: &str| {
        let r = t.s.run(args);
        assert_eq!(r.code, Some(125), "{args:?}: {r:?}");
        assert_eq!(r.stderr, format!("Error: {err}\n"), "{args:?}: {r:?}");
    };
    let no_subnet = "user specified IP address is supported only when connecting to networks with user configured subnets";
    refused(
        &busybox_rm(&["--network", "fix6", "--ip6", &a6], &["true"]),
        &format!("Address already in use: {a6}"),
    );
    refused(
        &busybox_rm(&["--network", "fix6", "--ip6", "fd00:dead::1"], &["true"]),
        &format!("invalid address fd00:dead::1: It does not belong to any of this network's subnets ({sub6})"),
    );
    refused(
        &[
            "create",
            "--network",
            "plain4",
            "--ip6",
            &format!("{p}99"),
            "busybox",
        ],
        no_subnet,
    );
    refused(
        &busybox_rm(
            &["--network", "auto6", "--ip6", &format!("{p}99")],
            &["true"],
        ),
        no_subnet,
    );
    refused(
        &busybox_rm(&["--ip6", &format!("{p}99")], &["true"]),
        no_subnet,
    );
    refused(
        &busybox_rm(&["--network", "fix6", "--ip6", "nope"], &["true"]),
        "invalid argument \"nope\" for \"--ip6\" flag: invalid IP address: nope",
    );
    refused(
        &busybox_rm(&["--network", "fix6", "--ip6", "10.1.2.3"], &["true"]),
        "invalid IPv6 address: 10.1.2.3",
    );
    let r =
        t.s.run(&["network", "connect", "--ip6", &b6, "fix6", "x6d"]);
    assert!(
        !r.ok()
            && r.stderr
                .ends_with("container x6d is already connected to network fix6\n"),
        "{r:?}"
    );
    t.ok(&[
        "run",
        "-d",
        "--name",
        "x6e",
        "--network",
        "plain4",
        "busybox",
        "sleep",
        "300",
    ]);
    let r =
        t.s.run(&["network", "connect", "--ip6", &b6, "fix6", "x6e"]);
    assert_eq!(
        r.stderr,
        format!("Error: Address already in use: {b6}\n"),
        "{r:?}"
    );
    let r =
        t.s.run(&["network", "connect", "--ip6", &c6, "auto6", "x6e"]);
    assert_eq!(r.stderr, format!("Error: {no_subnet}\n"), "{r:?}");
    assert_eq!(
        t.ok(&["ps", "-aq"]).lines().count(),
        before.lines().count() + 1
    );
    t.ok(&["rm", "-f", "x6a", "x6b", "x6c", "x6d", "x6e"]);
    for n in ["fix6", "plain4", "auto6"] {
        t.ok(&["network", "rm", n]);
    }
}
