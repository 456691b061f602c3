//! Shared by the network and build tests: a strata installation whose default bridge has a
//! test-unique name and subnet, the test's "fake internet" (a network namespace the test makes,
//! with a veth to the host and busybox httpd inside), and the offline Debian fixture that
//! `scripts/setup` downloads once (a small Debian image and the .debs of jq, served by the
//! tests from an apt repository of their own inside the fake internet).
//!
//! Traffic goes only to addresses inside namespaces a test made; every namespace, link, nft
//! object and container is removed in Drop guards, even when a test fails.

#![allow(dead_code)]

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use crate::containers_common::install_busybox;
use strata_runtime::network::ipam::Leases;
use strata_runtime::network::netlink::{link_index, Netlink};
use strata_runtime::network::{nft, Ipv4Net};
use strata_testkit::container::{eventually, Strata};

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A /24 in 10.100.0.0–10.199.255.0 that overlaps no route and no live strata bridge.
pub fn free_subnet() -> Ipv4Net {
    let routes: Vec<Ipv4Net> = Netlink::open()
        .unwrap()
        .routes4()
        .unwrap()
        .into_iter()
        .map(|(a, p)| Ipv4Net::new(a, p))
        .collect();
    let live: Vec<Ipv4Net> = Leases::load_all(&strata_runtime::network::state_dir())
        .iter()
        .map(|l| l.subnet)
        .collect();
    let start = (std::process::id() * 37) % 20000;
    loop {
        let n = start + NEXT.fetch_add(1, Ordering::SeqCst);
        let cand = Ipv4Net::new(
            Ipv4Addr::new(10, 100 + ((n / 200) % 100) as u8, (n % 200) as u8 + 20, 0),
            24,
        );
        if !routes.iter().chain(&live).any(|r| r.overlaps(&cand)) {
            return cand;
        }
    }
}

/// A short unique link name with `prefix` (IFNAMSIZ is 16).
pub fn unique_name(prefix: &str) -> String {
    let n = NEXT.fetch_add(1, Ordering::SeqCst);
    format!("{prefix}{:x}{n:x}", std::process::id() % 0xffff)
}

pub fn sh(args: &[&str]) -> std::process::Output {
    Command::new(args[0]).args(&args[1..]).output().unwrap()
}

pub fn sh_ok(args: &[&str]) {
    let out = sh(args);
    assert!(out.status.success(), "{args:?}: {out:?}");
}

/// A strata installation whose default bridge has a test-unique name and subnet; on drop,
/// removes its containers and networks, then whatever of its bridges is left on the host.
pub struct NetStrata {
    pub s: Strata,
    pub bridge: String,
    pub subnet: Ipv4Net,
}

impl NetStrata {
    pub fn new() -> NetStrata {
        NetStrata::with_driver("overlay")
    }

    pub fn with_driver(driver: &str) -> NetStrata {
        let s = Strata::new(env!("CARGO_BIN_EXE_strata")).with_driver(driver);
        install_busybox(s.root_path(), "busybox:latest", serde_json::json!({}));
        install_busybox(
            s.root_path(),
            "web:1",
            serde_json::json!({"ExposedPorts": {"80/tcp": {}},
                               "Cmd": ["httpd", "-f", "-p", "80", "-h", "/www"]}),
        );
        let bridge = unique_name("stt");
        let subnet = free_subnet();
        let bip = format!("{}/24", subnet.nth(1).unwrap());
        std::fs::write(
            s.root_path().join("strata.json"),
            serde_json::json!({"bridge": bridge, "bip": bip}).to_string(),
        )
        .unwrap();
        NetStrata { s, bridge, subnet }
    }

    pub fn ok(&self, args: &[&str]) -> String {
        self.s.ok(args)
    }

    /// `network create --subnet <fresh /24> NAME [extra]`; returns the bridge link name.
    pub fn create_network(&self, name: &str, extra: &[&str]) -> String {
        let subnet = free_subnet().to_string();
        let mut args = vec!["network", "create", "--subnet", &subnet];
        args.extend_from_slice(extra);
        args.push(name);
        self.ok(&args);
        self.inspect_network(
            name,
            "{{index .Options \"com.docker.network.bridge.name\"}}",
        )
    }

    pub fn inspect_network(&self, name: &str, format: &str) -> String {
        self.ok(&["network", "inspect", "-f", format, name])
            .trim()
            .to_string()
    }

    pub fn ip_of(&self, container: &str, network: &str) -> Ipv4Addr {
        let f = format!("{{{{with index .NetworkSettings.Networks \"{network}\"}}}}{{{{.IPAddress}}}}{{{{end}}}}");
        let out = self.ok(&["inspect", "-f", &f, container]);
        out.trim()
            .parse()
            .unwrap_or_else(|_| panic!("no address for {container}: {out:?}"))
    }

    pub fn bridges(&self) -> Vec<String> {
        let mut v = vec![self.bridge.clone()];
        let ls = self.s.run(&["network", "ls", "-q", "--no-trunc"]);
        for id in ls.stdout.split_whitespace() {
            let r = self.s.run(&[
                "network",
                "inspect",
                "-f",
                "{{index .Options \"com.docker.network.bridge.name\"}}",
                id,
            ]);
            let b = r.stdout.trim().to_string();
            if !b.is_empty() && !v.contains(&b) {
                v.push(b);
            }
        }
        v
    }
}

pub fn chains_of(bridge: &str) -> bool {
    nft::list().is_some_and(|t| t.contains(&format!("{bridge}_post")))
}

impl Drop for NetStrata {
    fn drop(&mut self) {
        let bridges = self.bridges();
        self.s.cleanup();
        let _ = self.s.run(&["network", "prune", "-f"]);
        for b in bridges {
            if let (Some(i), Ok(mut nl)) = (link_index(&b), Netlink::open()) {
                let _ = nl.delete_link(i);
            }
            nft::remove(&b);
            let _ = std::fs::remove_file(Leases::path(&strata_runtime::network::state_dir(), &b));
        }
    }
}

/// The test's "internet": a namespace with a veth to the host and busybox httpd on .2 of a
/// fresh /24 (the host end is .1). Removed on drop.
pub struct FakeInternet {
    pub ns: String,
    pub veth: String,
    pub host_ip: Ipv4Addr,
    pub ip: Ipv4Addr,
    httpd: Option<Child>,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl FakeInternet {
    pub fn new() -> FakeInternet {
        FakeInternet::serving(None)
    }

    /// The fake internet with httpd serving `www` (default: an index page "fake internet").
    pub fn serving(www: Option<&Path>) -> FakeInternet {
        let ns = unique_name("stfake");
        let veth = unique_name("vfk");
        let subnet = free_subnet();
        let host_ip = subnet.nth(1).unwrap();
        let ip = subnet.nth(2).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let www = match www {
            Some(w) => w.to_path_buf(),
            None => {
                let w = dir.path().join("www");
                std::fs::create_dir(&w).unwrap();
                w
            }
        };
        // The page the start-up probe fetches (and the one the network tests expect).
        if !www.join("index.html").exists() {
            std::fs::write(www.join("index.html"), "fake internet\n").unwrap();
        }
        let log = dir.path().join("httpd.log");
        let mut f = FakeInternet {
            ns,
            veth,
            host_ip,
            ip,
            httpd: None,
            log,
            _dir: dir,
        };
        sh_ok(&["ip", "netns", "add", &f.ns]);
        sh_ok(&[
            "ip", "link", "add", &f.veth, "type", "veth", "peer", "name", "eth0", "netns", &f.ns,
        ]);
        sh_ok(&[
            "ip",
            "addr",
            "add",
            &format!("{host_ip}/24"),
            "dev",
            &f.veth,
        ]);
        sh_ok(&["ip", "link", "set", &f.veth, "up"]);
        sh_ok(&[
            "ip",
            "-n",
            &f.ns,
            "addr",
            "add",
            &format!("{ip}/24"),
            "dev",
            "eth0",
        ]);
        sh_ok(&["ip", "-n", &f.ns, "link", "set", "eth0", "up"]);
        sh_ok(&["ip", "-n", &f.ns, "link", "set", "lo", "up"]);
        let logf = std::fs::File::create(&f.log).unwrap();
        let www = www.to_string_lossy().into_owned();
        f.httpd = Some(
            Command::new("ip")
                .args(["netns", "exec", &f.ns, "busybox", "httpd", "-f", "-vv"])
                .args(["-p", &format!("{ip}:80"), "-h", &www])
                .stdout(Stdio::null())
                .stderr(logf)
                .spawn()
                .unwrap(),
        );
        let up = eventually(Duration::from_secs(10), || {
            let o = Command::new("ip")
                .args(["netns", "exec", &f.ns, "busybox", "wget", "-q", "-O", "-"])
                .arg(format!("http://{ip}/"))
                .output()
                .ok()?;
            o.status.success().then_some(())
        });
        assert!(up.is_some(), "fake internet httpd did not start");
        f
    }

    pub fn url(&self) -> String {
        format!("http://{}/", self.ip)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for FakeInternet {
    fn drop(&mut self) {
        if let Some(mut c) = self.httpd.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = sh(&["ip", "link", "del", &self.veth]);
        let _ = sh(&["ip", "netns", "del", &self.ns]);
    }
}

/// The Debian fixture `scripts/setup` downloads once: `rootfs.tar.zst` (mmdebstrap's `apt`
/// variant, no apt sources) and `debs/` (jq and its libraries). A missing fixture fails the
/// test: it is never skipped.
pub fn debian_fixture() -> PathBuf {
    let cache = std::env::var_os("STRATA_TEST_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/cache/strata-test"));
    let suite = std::fs::read_to_string("/etc/os-release")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VERSION_CODENAME=").map(str::to_string))
        })
        .unwrap_or_else(|| "bookworm".to_string());
    let dir = cache.join(format!("debian-{}", suite.trim_matches('"')));
    assert!(
        dir.join(".done").exists(),
        "the Debian test fixture is missing at {}: run scripts/setup (it downloads it once)",
        dir.display()
    );
    dir
}

/// `strata import` the fixture's root filesystem as `tag`.
pub fn import_debian(s: &Strata, tag: &str) {
    let tar = debian_fixture().join("rootfs.tar.zst");
    let out = s.ok(&["import", tar.to_str().unwrap(), tag]);
    assert!(out.starts_with("sha256:"), "{out}");
}

/// A flat apt repository (the fixture's .debs and a `Packages` index made by
/// dpkg-scanpackages) in a fresh temp dir; returns it and the names of its packages.
pub fn debian_mirror() -> (tempfile::TempDir, Vec<String>) {
    let dir = tempfile::tempdir().unwrap();
    let mut names = Vec::new();
    for e in std::fs::read_dir(debian_fixture().join("debs")).unwrap() {
        let e = e.unwrap();
        let name = e.file_name().to_string_lossy().into_owned();
        if let Some(stem) = name.strip_suffix(".deb") {
            std::fs::copy(e.path(), dir.path().join(&name)).unwrap();
            names.push(stem.split('_').next().unwrap().to_string());
        }
    }
    names.sort();
    let out = Command::new("dpkg-scanpackages")
        .args(["-m", ".", "/dev/null"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "dpkg-scanpackages: {out:?}");
    std::fs::write(dir.path().join("Packages"), &out.stdout).unwrap();
    (dir, names)
}

/// sources.list text naming the fake internet's mirror (no signature: `[trusted=yes]`).
pub fn sources_list(inet: &FakeInternet) -> String {
    format!("deb [trusted=yes] http://{}/ ./", inet.ip)
}
