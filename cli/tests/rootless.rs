//! Rootless strata: push/pull through the loopback registry and the tutorial as a throw-away unprivileged user with subordinate ranges (the
//! test binary runs as root and makes the user; `TestUser`'s Drop removes it, its processes and
//! files even on failure), files on disk owned by the user or its range, never by root; bad
//! input: no /etc/subuid entry, a privileged port → one-line errors, nothing left running.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use strata_testkit::container::{eventually, free_port, http_get};
use strata_testkit::fixtures::busybox_archive;
use strata_testkit::registry::Registry;
use strata_testkit::user::TestUser;

const BIN: &str = env!("CARGO_BIN_EXE_strata");

/// The strata binary at a path the user can execute: the build's own if every directory above it
/// lets others through, else a copy in a world-readable temp dir.
fn user_binary(user: &TestUser) -> (PathBuf, Option<tempfile::TempDir>) {
    let ok = user
        .command(Path::new(BIN), &["--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if ok {
        return (PathBuf::from(BIN), None);
    }
    let dir = tempfile::Builder::new()
        .prefix("strata-rootless-bin-")
        .tempdir()
        .unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let copy = dir.path().join("strata");
    std::fs::copy(BIN, &copy).unwrap();
    std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o755)).unwrap();
    (copy, Some(dir))
}

/// strata run as `user` (from a binary it can execute; the copy's temp dir, if one was needed,
/// goes with it).
struct As<'a> {
    user: &'a TestUser,
    bin: PathBuf,
    _bin_dir: Option<tempfile::TempDir>,
}

impl<'a> As<'a> {
    fn new(user: &'a TestUser) -> As<'a> {
        let (bin, bin_dir) = user_binary(user);
        As {
            user,
            bin,
            _bin_dir: bin_dir,
        }
    }

    /// `load -i busybox.tar` of a busybox archive written to the user's home (theirs); the
    /// output.
    fn load_busybox(&self) -> String {
        let archive = self.user.home.join("busybox.tar");
        busybox_archive(&archive, "busybox:latest").unwrap();
        std::os::unix::fs::chown(&archive, Some(self.user.uid), None).unwrap();
        self.ok(&["load", "-i", "busybox.tar"])
    }

    fn run(&self, args: &[&str]) -> Output {
        self.user.command(&self.bin, args).output().unwrap()
    }

    fn ok(&self, args: &[&str]) -> String {
        self.user.ok(&self.bin, args)
    }
}

fn page(port: u16) -> String {
    eventually(Duration::from_secs(10), || {
        http_get("127.0.0.1", port, "/")
            .ok()
            .filter(|(code, _)| *code == 200)
            .map(|(_, body)| body)
    })
    .unwrap_or_else(|| panic!("no page on 127.0.0.1:{port}"))
}

/// Every file under `dir` (not following symlinks) is owned by the user or an id of its range.
fn assert_owned_by(user: &TestUser, dir: &Path, at_least: usize) {
    let mut stack = vec![dir.to_path_buf()];
    let mut seen = 0;
    while let Some(p) = stack.pop() {
        let m = std::fs::symlink_metadata(&p).unwrap();
        assert!(
            user.owns_id(m.uid()) && user.owns_id(m.gid()),
            "{} is owned by {}:{}, not by {} or its range",
            p.display(),
            m.uid(),
            m.gid(),
            user.name
        );
        seen += 1;
        if m.is_dir() {
            for e in std::fs::read_dir(&p).unwrap() {
                stack.push(e.unwrap().path());
            }
        }
    }
    assert!(
        seen >= at_least,
        "only {seen} files under {}",
        dir.display()
    );
}

#[test]
fn rootless_tutorial_as_an_unprivileged_user() {
    let user = TestUser::new(true).unwrap();
    let s = As::new(&user);
    let loaded = s.load_busybox();
    assert!(loaded.contains("busybox:latest"), "{loaded}");
    // Through the loopback registry: push, forget, pull back.
    let reg = Registry::start();
    let remote = format!("{}/rootless/busybox:1", reg.addr());
    s.ok(&["tag", "busybox", &remote]);
    s.ok(&["push", &remote]);
    s.ok(&["rmi", "busybox", &remote]);
    assert_eq!(s.ok(&["images", "-q"]), "");
    s.ok(&["pull", &remote]);
    s.ok(&["tag", &remote, "busybox"]);
    let (p1, p2) = (free_port(), free_port());
    let httpd = ["httpd", "-f", "-p", "80", "-h", "/www"];
    let publish1 = format!("{p1}:80");
    let mut args = vec!["run", "-d", "--name", "web", "-p", &publish1, "busybox"];
    args.extend(httpd);
    s.ok(&args);
    page(p1);
    // Outbound network through pasta: the container has an interface with a default route
    // (no traffic is sent; the route table is read).
    let routes = s.ok(&["exec", "web", "cat", "/proc/net/route"]);
    assert!(
        routes
            .lines()
            .any(|l| l.split_whitespace().nth(1) == Some("00000000")),
        "no default route in the container:\n{routes}"
    );
    s.ok(&[
        "exec",
        "web",
        "sh",
        "-c",
        "echo '<h1>Hello rootless</h1>' > /www/index.html",
    ]);
    assert!(page(p1).contains("Hello rootless"));
    let diff = s.ok(&["diff", "web"]);
    assert!(diff.lines().any(|l| l == "C /www/index.html"), "{diff}");
    s.ok(&["commit", "web", "web:v2"]);
    let history = s.ok(&["history", "web:v2"]);
    assert!(history.lines().count() >= 3, "{history}");
    let publish2 = format!("{p2}:80");
    let mut args = vec!["run", "-d", "--name", "web2", "-p", &publish2, "web:v2"];
    args.extend(httpd);
    s.ok(&args);
    assert!(page(p2).contains("Hello rootless"));

    // A privileged port: podman's error, exit 125, nothing more running.
    let out = s.run(&["run", "-d", "-p", "80:80", "busybox", "sleep", "60"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(125), "{err}");
    assert!(
        err.contains("rootlessport cannot expose privileged port 80, you can add 'net.ipv4.ip_unprivileged_port_start=80' to /etc/sysctl.conf"),
        "{err}"
    );
    assert_eq!(s.ok(&["ps", "-q"]).lines().count(), 2);

    s.ok(&["stop", "web", "web2"]);
    s.ok(&["rm", "web", "web2"]);
    s.ok(&["save", "-o", "v2.tar", "web:v2"]);
    s.ok(&["rmi", "web:v2"]);
    assert!(!s.ok(&["images"]).contains("web "));
    s.ok(&["load", "-i", "v2.tar"]);
    assert!(s.ok(&["images"]).contains("web "));
    s.ok(&["rmi", "web:v2"]);

    // Storage under ~/.local/share/strata, state in a private /tmp dir (no XDG_RUNTIME_DIR):
    // everything the user's or its range's, nothing root's.
    let store = user.home.join(".local/share/strata");
    assert_owned_by(&user, &store, 20);
    let runroot = PathBuf::from(format!("/tmp/strata-{}", user.uid));
    let m = std::fs::symlink_metadata(&runroot).unwrap();
    assert_eq!(m.mode() & 0o777, 0o700);
    assert_owned_by(&user, &runroot, 3);
    // Nothing left mounted in the user's namespace once the containers are gone.
    let pause: i32 = std::fs::read_to_string(runroot.join("pause.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let mounts = std::fs::read_to_string(format!("/proc/{pause}/mounts")).unwrap();
    let home = user.home.display().to_string();
    assert!(
        !mounts.lines().any(|l| l.contains(&home)),
        "left mounted:\n{mounts}"
    );
}

#[test]
fn rootless_without_subordinate_ranges_names_the_files_to_edit() {
    let user = TestUser::new(false).unwrap();
    let s = As::new(&user);
    let out = s.run(&["images"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(125), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with("Error: ") && err.contains("/etc/subuid") && err.contains("/etc/subgid"),
        "{err}"
    );
    assert!(err.contains(&user.name), "{err}");
    assert!(
        user.processes().is_empty(),
        "processes left: {:?}",
        user.processes()
    );
}

/// Layers extracted inside the namespace: an image file of uid/gid 1000 lands at range+999 on
/// disk, a setuid bit is kept, whiteouts are char 0/0 and opaque dirs `user.overlay.*` (kernel
/// overlayfs mounts them with `userxattr`: a lower dir removed and made again, a lower dir
/// renamed — on both the `overlay` and the `fuse` driver — seen and diffed as Docker does); an
/// image with a device node is refused with a clear error, not extracted without it.
#[test]
fn rootless_layers_map_ids_and_kernel_overlay_reads_them() {
    use strata_testkit::fixtures::{busybox_layer, write_docker_archive, ImageSpec, LayerTar};
    let user = TestUser::new(true).unwrap();
    let s = As::new(&user);
    let mut top = LayerTar::new();
    top.file_owned("home/owned", b"mine\n", 0o4755, 1000, 1000)
        .whiteout("etc/motd")
        .opaque("usr")
        .file("usr/only", b"top\n", 0o644);
    let spec = ImageSpec::new(
        &["layered:1"],
        vec![busybox_layer().unwrap(), top.into_bytes()],
    );
    let mut dev = LayerTar::new();
    dev.device("dev/sda", true, 8, 0);
    let bad = ImageSpec::new(&["withdev:1"], vec![dev.into_bytes()]);
    for (name, spec) in [("layered.tar", spec), ("dev.tar", bad)] {
        let path = user.home.join(name);
        write_docker_archive(&path, &[spec]).unwrap();
        std::os::unix::fs::chown(&path, Some(user.uid), None).unwrap();
    }
    s.ok(&["load", "-i", "layered.tar"]);
    let start = user.range_start.unwrap();
    let layers = user.home.join(".local/share/strata/layers");
    let owned = std::fs::read_dir(&layers)
        .unwrap()
        .map(|e| e.unwrap().path().join("diff/home/owned"))
        .find(|p| p.exists())
        .expect("no layer with home/owned");
    let m = std::fs::metadata(&owned).unwrap();
    assert_eq!((m.uid() as u64, m.gid() as u64), (start + 999, start + 999));
    assert_eq!(m.mode() & 0o7777, 0o4755);
    assert_owned_by(&user, &user.home.join(".local/share/strata"), 20);

    let script = "stat -c '%u %a' /home/owned; cat /etc/motd 2>&1; ls /usr; \
                  rm -rf /home && mkdir /home && touch /home/new && mv /var /var2 && ls / | tr '\\n' ' ' \
                  && echo && ls /var2 | tr '\\n' ' '";
    for driver in ["overlay", "fuse"] {
        let name = format!("layered-{driver}");
        let out = s.run(&[
            "--storage-driver",
            driver,
            "run",
            "--name",
            &name,
            "layered:1",
            "sh",
            "-c",
            script,
        ]);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{driver}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let lines: Vec<&str> = stdout.lines().collect();
        assert_eq!(lines[0], "1000 4755", "{driver}: {stdout}");
        assert!(lines[1].contains("No such file"), "{driver}: {stdout}");
        assert_eq!(lines[2], "only", "{driver}: {stdout}");
        assert!(
            lines[3].contains("var2") && !lines[3].contains("var "),
            "{driver}: {stdout}"
        );
        // The renamed lower dir shows its content under the new name; `diff` as Docker's
        // overlay2 shows it (the re-made /home is opaque: deleted, then its new content).
        assert_eq!(
            lines[4].split_whitespace().collect::<Vec<_>>(),
            ["log", "www"],
            "{driver}: {stdout}"
        );
        let diff = s.ok(&["--storage-driver", driver, "diff", &name]);
        assert_eq!(
            diff.lines().collect::<Vec<_>>(),
            [
                "D /home",
                "A /home/new",
                "D /var",
                "A /var2",
                "A /var2/log",
                "A /var2/www"
            ],
            "{driver}"
        );
        s.ok(&["--storage-driver", driver, "rm", &name]);
    }

    let out = s.run(&["load", "-i", "dev.tar"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("device node") && err.contains("rootless"),
        "{err}"
    );
    assert!(!s.ok(&["images"]).contains("withdev"));
}

/// A cgroup subtree delegated to the test user the way systemd's `Delegate=yes` does (the
/// directory and its `cgroup.procs`/`cgroup.subtree_control`/`cgroup.threads`/`tasks` chowned,
/// the user's commands run in a `session` child), on the unified hierarchy and on the v1
/// `memory` and `pids` hierarchies (this kind of hybrid host binds those controllers to v1).
/// Drop kills what runs in them and removes them bottom-up, even on failure.
struct Delegated {
    roots: Vec<PathBuf>,
}

impl Delegated {
    fn new(user: &TestUser) -> Delegated {
        Delegated::with(user, &["unified", "memory", "pids"], "")
    }

    /// A subtree on each of the hierarchies `hs` (`tag` keeps two tests' names apart). A v1
    /// cpuset cgroup takes no task before its CPUs and nodes are set: root copies them in
    /// from the parent, as an administrator delegating one does.
    fn with(user: &TestUser, hs: &[&str], tag: &str) -> Delegated {
        let name = format!("strata-deleg{tag}-{}", std::process::id());
        let mut d = Delegated { roots: Vec::new() };
        for h in hs {
            let root = Path::new("/sys/fs/cgroup").join(h).join(&name);
            std::fs::create_dir(&root).unwrap();
            d.roots.push(root.clone());
            for dir in [root.clone(), root.join("session")] {
                if dir != root {
                    std::fs::create_dir(&dir).unwrap();
                }
                if *h == "cpuset" {
                    let parent = dir.parent().unwrap();
                    for f in ["cpuset.cpus", "cpuset.mems"] {
                        let v = std::fs::read_to_string(parent.join(f)).unwrap();
                        std::fs::write(dir.join(f), v.trim()).unwrap();
                    }
                }
                for f in [
                    "",
                    "cgroup.procs",
                    "cgroup.subtree_control",
                    "cgroup.threads",
                    "tasks",
                ] {
                    let p = dir.join(f);
                    if p.exists() {
                        std::os::unix::fs::chown(&p, Some(user.uid), Some(user.uid)).unwrap();
                    }
                }
            }
        }
        d
    }

    /// `cmd` (a `TestUser::command`) started in the `session` cgroups (moved there as root).
    fn wrap(&self, cmd: &std::process::Command) -> std::process::Command {
        let mut script = String::new();
        for r in &self.roots {
            script.push_str(&format!(
                "echo $$ > {}/session/cgroup.procs && ",
                r.display()
            ));
        }
        script.push_str("exec \"$@\"");
        let mut c = std::process::Command::new("sh");
        c.arg("-c").arg(script).arg("sh").arg(cmd.get_program());
        c.args(cmd.get_args());
        if let Some(dir) = cmd.get_current_dir() {
            c.current_dir(dir);
        }
        c
    }

    /// Every cgroup dir under the roots, deepest first.
    fn dirs(&self) -> Vec<PathBuf> {
        let mut all = Vec::new();
        let mut stack = self.roots.clone();
        while let Some(d) = stack.pop() {
            if let Ok(rd) = std::fs::read_dir(&d) {
                for e in rd.flatten() {
                    if e.file_type().is_ok_and(|t| t.is_dir()) {
                        stack.push(e.path());
                    }
                }
            }
            all.push(d);
        }
        all.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
        all
    }
}

impl Drop for Delegated {
    fn drop(&mut self) {
        for _ in 0..100 {
            let mut any = false;
            for d in self.dirs() {
                let procs = std::fs::read_to_string(d.join("cgroup.procs")).unwrap_or_default();
                for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
                    any = true;
                    // SAFETY: kill(2) of a pid listed in our test cgroup.
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                }
            }
            if !any {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        for d in self.dirs() {
            let _ = std::fs::remove_dir(&d);
        }
    }
}

/// `-c/--cpu-shares` and `--cpuset-cpus` rootless, in delegated v1 `cpu` and `cpuset` subtrees
/// (the container's cpuset cgroup filled from its parent before the container joins it): the
/// values reach the container's cgroup files at `run` and through `update`; without a
/// delegated home for them, Docker's per-limit warnings and the container runs.
#[test]
fn rootless_cpu_shares_and_cpuset_in_delegated_v1_cgroups() {
    let user = TestUser::new(true).unwrap();
    let s = As::new(&user);
    s.load_busybox();
    let deleg = Delegated::with(&user, &["memory"], "-nocpu");
    let out = deleg
        .wrap(&user.command(
            &s.bin,
            &[
                "run",
                "--rm",
                "--network",
                "none",
                "-c",
                "512",
                "--cpuset-cpus",
                "0",
                "busybox",
                "echo",
                "ran",
            ],
        ))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "ran\n");
    assert_eq!(
        err,
        "WARNING: Your kernel does not support CPU shares or the cgroup is not mounted. Shares discarded.\n\
         WARNING: Your kernel does not support cpuset or the cgroup is not mounted. Cpuset discarded.\n"
    );
    drop(deleg);

    let deleg = Delegated::with(&user, &["cpu", "cpuset"], "-cpu");
    let in_deleg =
        |args: &[&str]| -> Output { deleg.wrap(&user.command(&s.bin, args)).output().unwrap() };
    let out = in_deleg(&[
        "run",
        "-d",
        "--name",
        "cpu",
        "--network",
        "none",
        "-c",
        "512",
        "--cpuset-cpus",
        "1",
        "busybox",
        "sh",
        "-c",
        "sleep 300 & wait",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert_eq!(err, "", "no warning with delegated cgroups");
    let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let name = deleg.roots[0]
        .file_name()
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    let read = |h: &str, f: &str| {
        std::fs::read_to_string(
            Path::new("/sys/fs/cgroup")
                .join(h)
                .join(&name)
                .join("strata")
                .join(&id)
                .join(f),
        )
        .map(|v| v.trim().to_string())
        .unwrap_or_default()
    };
    assert_eq!(read("cpu", "cpu.shares"), "512");
    assert_eq!(read("cpuset", "cpuset.cpus"), "1");
    let pid = s.ok(&["inspect", "-f", "{{.State.Pid}}", "cpu"]);
    let status = std::fs::read_to_string(format!("/proc/{}/status", pid.trim())).unwrap();
    assert!(status.contains("Cpus_allowed_list:\t1\n"), "{status}");
    let out = in_deleg(&["update", "-c", "256", "--cpuset-cpus", "0", "cpu"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(read("cpu", "cpu.shares"), "256");
    assert_eq!(read("cpuset", "cpuset.cpus"), "0");
    assert_eq!(
        s.ok(&[
            "inspect",
            "-f",
            "{{.HostConfig.CpuShares}} {{.HostConfig.CpusetCpus}}",
            "cpu"
        ]),
        "256 0\n"
    );
    s.ok(&["rm", "-f", "cpu"]);
    for h in ["cpu", "cpuset"] {
        let dir = Path::new("/sys/fs/cgroup")
            .join(h)
            .join(&name)
            .join("strata")
            .join(&id);
        assert!(!dir.exists(), "{} left", dir.display());
    }
}

/// cgroup limits rootless: without a delegated cgroup `--memory`/`--pids-limit` get podman's
/// one-line warning and the container runs; in a delegated subtree (v2 placement, v1 `memory`
/// and `pids` here) they apply — read back from the container's cgroup files, the pids limit
/// stops an `exec`'s fork bomb — and the container's cgroups go with it.
#[test]
fn rootless_limits_apply_in_a_delegated_cgroup() {
    let user = TestUser::new(true).unwrap();
    let s = As::new(&user);
    s.load_busybox();
    let limits = ["--memory", "64m", "--pids-limit", "20"];

    let mut args = vec!["run", "--rm", "--network", "none"];
    args.extend(limits);
    args.extend(["busybox", "echo", "ran"]);
    let out = s.run(&args);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "ran\n");
    assert_eq!(
        err,
        "WARNING: Resource limits are not supported and ignored on rootless systems without cgroup delegation\n"
    );

    // `info` as the user: rootless, its paths, the network and that limits are ignored.
    let info = s.ok(&["info"]);
    let home = user.home.display().to_string();
    for want in [
        " Rootless: true".to_string(),
        format!(" Strata Root Dir: {home}/.local/share/strata"),
        format!(" Strata Run Root: /tmp/strata-{}", user.uid),
        "  Network: pasta (".to_string(),
        "  Cgroups: not delegated: resource limits are ignored".to_string(),
        format!(
            "  UID Map: 0:{}:1 1:{}:{}",
            user.uid,
            user.range_start.unwrap(),
            strata_testkit::user::RANGE
        ),
        "  Passthrough: off".to_string(),
    ] {
        assert!(
            info.lines().any(|l| l.starts_with(&want)),
            "no {want:?} in:\n{info}"
        );
    }

    let deleg = Delegated::new(&user);
    let in_deleg =
        |args: &[&str]| -> Output { deleg.wrap(&user.command(&s.bin, args)).output().unwrap() };
    let out = in_deleg(&["info", "--format", "{{.Rootless}} {{.RootlessCgroups}}"]);
    let cg = String::from_utf8_lossy(&out.stdout);
    let name = deleg.roots[0]
        .file_name()
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        cg.starts_with("true delegated: v2 /sys/fs/cgroup/unified/")
            && cg.contains(&format!("v1 /sys/fs/cgroup/memory/{name} (memory)"))
            && cg.contains(&format!("v1 /sys/fs/cgroup/pids/{name} (pids)")),
        "{cg}"
    );
    // The pause process is already up (outside the subtree): only the commands are in it.
    let mut args = vec!["run", "-d", "--name", "lim", "--network", "none"];
    args.extend(limits);
    args.extend(["busybox", "sleep", "300"]);
    let out = in_deleg(&args);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert_eq!(err, "", "no warning with a delegated cgroup");
    let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let pid = s.ok(&["inspect", "-f", "{{.State.Pid}}", "lim"]);
    let cgroups = std::fs::read_to_string(format!("/proc/{}/cgroup", pid.trim())).unwrap();
    let name = deleg.roots[0].file_name().unwrap().to_str().unwrap();
    let want = format!("/{name}/strata/{id}");
    for (prefix, h) in [
        ("0::", "unified"),
        (":memory:", "memory"),
        (":pids:", "pids"),
    ] {
        assert!(
            cgroups
                .lines()
                .any(|l| l.contains(prefix) && l.ends_with(&want)),
            "{h}: container not in {want}:\n{cgroups}"
        );
    }
    let read = |h: &str, f: &str| {
        std::fs::read_to_string(Path::new("/sys/fs/cgroup").join(h).join(&want[1..]).join(f))
            .unwrap()
            .trim()
            .to_string()
    };
    assert_eq!(read("memory", "memory.limit_in_bytes"), "67108864");
    assert_eq!(read("pids", "pids.max"), "20");
    // An exec joins the container's cgroups: its fork bomb hits the pids limit.
    let out = in_deleg(&[
        "exec",
        "lim",
        "sh",
        "-c",
        "i=0; while [ $i -lt 40 ]; do sleep 30 >/dev/null 2>&1 & i=$((i+1)); done; echo started",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("can't fork"), "{err}");
    assert!(!err.contains("WARNING"), "{err}");
    // An exec from a session outside the delegated subtree may not move its process into the
    // container's v2 cgroup (the common ancestor is not the user's): it runs, and says so in
    // one line (the v1 hierarchies have no such rule: it joins those).
    let out = s.run(&["exec", "lim", "echo", "outside"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "outside\n");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with(
            "WARNING: exec: cannot join the container's cgroup /sys/fs/cgroup/unified/"
        ) && err.contains(&want),
        "{err}"
    );
    s.ok(&["rm", "-f", "lim"]);
    for h in ["unified", "memory", "pids"] {
        let dir = Path::new("/sys/fs/cgroup").join(h).join(&want[1..]);
        assert!(!dir.exists(), "{} left", dir.display());
    }
}

/// A one-request HTTP server on 127.0.0.1 (a thread; answers `body` to every request until
/// dropped).
struct LoopbackServer {
    port: u16,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl LoopbackServer {
    fn start(body: &'static str) -> LoopbackServer {
        use std::io::{Read, Write};
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.set_nonblocking(true).unwrap();
        let port = l.local_addr().unwrap().port();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                match l.accept() {
                    Ok((mut c, _)) => {
                        let _ = c.set_nonblocking(false);
                        let _ = c.set_read_timeout(Some(Duration::from_secs(5)));
                        let mut buf = [0u8; 4096];
                        let _ = c.read(&mut buf);
                        let _ = write!(
                            c,
                            "HTTP/1.0 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
                            body.len()
                        );
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        LoopbackServer {
            port,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for LoopbackServer {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// pasta is attached before the container's first process runs: that process's very first
/// action reads a page from a server the test made on the host's 127.0.0.1 (forwarded by pasta
/// from the container's loopback, `-T PORT` from `pasta-options` in `<root>/strata.json`,
/// podman's `pasta_options`) and sees its default route — every time.
#[test]
fn rootless_first_command_has_pastas_network() {
    let user = TestUser::new(true).unwrap();
    let s = As::new(&user);
    s.load_busybox();
    let server = LoopbackServer::start("hello from the host\n");
    let config = user.home.join(".local/share/strata/strata.json");
    let port = server.port.to_string();
    std::fs::write(&config, format!(r#"{{"pasta-options": ["-T", "{port}"]}}"#)).unwrap();
    std::os::unix::fs::chown(&config, Some(user.uid), None).unwrap();
    let url = format!("http://127.0.0.1:{port}/");
    for _ in 0..5 {
        let out = s.ok(&["run", "--rm", "busybox", "wget", "-q", "-O", "-", &url]);
        assert_eq!(out, "hello from the host\n");
        let routes = s.ok(&["run", "--rm", "busybox", "cat", "/proc/net/route"]);
        assert!(
            routes
                .lines()
                .any(|l| l.split_whitespace().nth(1) == Some("00000000")),
            "no default route for the first command:\n{routes}"
        );
    }
}

/// The command line of `pid` split at NULs (empty once it is gone).
fn cmdline(pid: i32) -> Vec<String> {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .unwrap_or_default()
        .split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect()
}

/// `pid` exists and is not a zombie.
fn live(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            let rest = s.get(s.rfind(')')? + 2..)?.to_string();
            Some(!rest.starts_with('Z') && !rest.starts_with('X'))
        })
        .unwrap_or(false)
}

/// Live pasta processes (`pasta`, or `passt.avx2` as Debian's re-executes itself) of `user` whose command line names `needle`.
fn pastas(user: &TestUser, needle: &str) -> Vec<i32> {
    user.processes()
        .into_iter()
        .filter(|p| {
            live(*p)
                && std::fs::read_to_string(format!("/proc/{p}/comm"))
                    .is_ok_and(|c| c.starts_with("pasta") || c.starts_with("passt"))
                && cmdline(*p).iter().any(|a| a.contains(needle))
        })
        .collect()
}

/// `kill -9` of a rootless supervisor leaves nothing behind once the next command notices:
/// `ps -a` records the exit, and then no pasta attached to the container's network namespace
/// runs, the namespace's bind mount is gone from the pause process's mount namespace, and
/// `rm -f` removes the container (its run dir too). The same after a second container whose
/// supervisor is killed and which is removed directly with `rm -f`.
#[test]
fn rootless_killed_supervisor_leaves_no_pasta_nor_netns_mount() {
    let user = TestUser::new(true).unwrap();
    let s = As::new(&user);
    s.load_busybox();
    let runroot = PathBuf::from(format!("/tmp/strata-{}", user.uid));
    for (name, next) in [("k1", "ps"), ("k2", "rm")] {
        let id = s.ok(&["run", "-d", "--name", name, "busybox", "sleep", "300"]);
        let id = id.trim().to_string();
        let run_dir = runroot.join("containers").join(&id);
        let ns_file = run_dir.join("netns").display().to_string();
        let pasta = pastas(&user, &ns_file);
        assert_eq!(
            pasta.len(),
            1,
            "{name}: no pasta on {ns_file}: {:?}",
            user.processes()
                .into_iter()
                .map(|p| (
                    std::fs::read_to_string(format!("/proc/{p}/comm")),
                    cmdline(p)
                ))
                .collect::<Vec<_>>()
        );
        let pause: i32 = std::fs::read_to_string(runroot.join("pause.pid"))
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let mountinfo = || std::fs::read_to_string(format!("/proc/{pause}/mountinfo")).unwrap();
        assert!(mountinfo().contains(&ns_file), "{name}: netns not bound");
        // The supervisor: the process whose command line names the container and that is the
        // parent of its init.
        let init: i32 = s
            .ok(&["inspect", "-f", "{{.State.Pid}}", name])
            .trim()
            .parse()
            .unwrap();
        let stat = std::fs::read_to_string(format!("/proc/{init}/stat")).unwrap();
        let ppid: i32 = stat[stat.rfind(')').unwrap() + 2..]
            .split_whitespace()
            .nth(1)
            .unwrap()
            .parse()
            .unwrap();
        assert!(
            cmdline(ppid).iter().any(|a| a == &id),
            "{name}: {ppid} is not the supervisor: {:?}",
            cmdline(ppid)
        );
        // SAFETY: kill(2) of the supervisor pid checked just above.
        assert_eq!(unsafe { libc::kill(ppid, libc::SIGKILL) }, 0);
        assert!(eventually(Duration::from_secs(10), || (!live(ppid)).then_some(())).is_some());
        if next == "ps" {
            let ps = s.ok(&["ps", "-a", "--format", "{{.Names}} {{.Status}}"]);
            assert!(
                ps.lines().any(|l| l.starts_with(&format!("{name} Exited"))),
                "{ps}"
            );
            assert!(
                eventually(Duration::from_secs(5), || pastas(&user, &ns_file)
                    .is_empty()
                    .then_some(()))
                .is_some(),
                "{name}: pasta {pasta:?} still runs after `ps -a`"
            );
            assert!(
                !mountinfo().contains(&ns_file),
                "{name}: netns still bound after `ps -a`"
            );
        }
        s.ok(&["rm", "-f", name]);
        assert!(
            eventually(Duration::from_secs(5), || pastas(&user, &ns_file)
                .is_empty()
                .then_some(()))
            .is_some(),
            "{name}: pasta {pasta:?} still runs after `rm -f`"
        );
        assert!(!mountinfo().contains(&ns_file), "{name}: netns still bound");
        assert!(!run_dir.exists(), "{name}: {} left", run_dir.display());
        assert!(!live(init), "{name}: init {init} still runs");
    }
    assert_eq!(s.ok(&["ps", "-aq"]), "");
}
