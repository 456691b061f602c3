//! `run` flags that reach the container's init: `--ulimit`, `--shm-size`, `--sysctl`,
//! `--group-add`, `--pid host`, `--ipc host`, `--uts host` — seen from inside real containers
//! (and their `exec`s), plus Docker's refusals (exit 125, nothing created).

mod containers_common;

use containers_common::{default_driver, setup};
use std::time::Duration;

use strata_testkit::container::{eventually, mounts_under, Strata};

fn out(s: &Strata, args: &[&str]) -> String {
    let r = s.run(args);
    assert_eq!(r.code, Some(0), "{args:?}: {r:?}");
    r.stdout
}

/// A detached container removed (with its mounts) even when the test fails.
struct Running<'a> {
    s: &'a Strata,
    name: &'a str,
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        let _ = self.s.run(&["rm", "-f", self.name]);
    }
}

#[test]
fn ulimit_in_the_init_and_in_exec() {
    let s = setup(&default_driver());
    let o = out(
        &s,
        &[
            "run",
            "--rm",
            "--network",
            "none",
            "--ulimit",
            "nofile=1024:2048",
            "--ulimit",
            "core=-1",
            "busybox",
            "sh",
            "-c",
            "ulimit -n; ulimit -Hn; ulimit -c",
        ],
    );
    assert_eq!(o, "1024\n2048\nunlimited\n");
    // The soft limit alone sets both.
    let o = out(
        &s,
        &[
            "run",
            "--rm",
            "--network",
            "none",
            "--ulimit",
            "nproc=77",
            "busybox",
            "sh",
            "-c",
            "ulimit -u; ulimit -Hu",
        ],
    );
    assert_eq!(o, "77\n77\n");
    // Docker's execs inherit the container's ulimits (not the caller's).
    let _c = Running { s: &s, name: "ul" };
    out(
        &s,
        &[
            "run",
            "-d",
            "--name",
            "ul",
            "--network",
            "none",
            "--ulimit",
            "nofile=333:444",
            "busybox",
            "sleep",
            "100",
        ],
    );
    let o = out(&s, &["exec", "ul", "sh", "-c", "ulimit -n; ulimit -Hn"]);
    assert_eq!(o, "333\n444\n");
    let v: serde_json::Value = serde_json::from_str(&out(&s, &["inspect", "ul"])).unwrap();
    assert_eq!(
        v[0]["HostConfig"]["Ulimits"],
        serde_json::json!([{"Name": "nofile", "Hard": 444, "Soft": 333}])
    );
    assert_eq!(v[0]["HostConfig"]["ShmSize"], 64 << 20);
}

/// runc runs the same bundle: `process.rlimits`, `linux.sysctl`, `additionalGids` and the
/// namespaces list carry the flags.
#[test]
fn runc_bundle_carries_the_flags() {
    let s = setup(&default_driver());
    let o = out(
        &s,
        &[
            "run",
            "--rm",
            "--runtime",
            "runc",
            "--network",
            "none",
            "--ulimit",
            "nofile=555:666",
            "--sysctl",
            "net.core.somaxconn=777",
            "--group-add",
            "nogroup",
            "--shm-size",
            "32m",
            "--ipc",
            "host",
            "busybox",
            "sh",
            "-c",
            "ulimit -n; ulimit -Hn; cat /proc/sys/net/core/somaxconn; id -G; readlink /proc/self/ns/ipc",
        ],
    );
    let lines: Vec<&str> = o.lines().collect();
    assert_eq!(lines[..3], ["555", "666", "777"], "{o}");
    assert!(lines[3].split(' ').any(|g| g == "65534"), "{o}");
    assert_eq!(lines[4], ns_inode("ipc"), "{o}");
    assert!(mounts_under(s.root_path()).is_empty());
}

#[test]
fn shm_size_sets_the_dev_shm_tmpfs() {
    let s = setup(&default_driver());
    let kb = |args: &[&str]| -> u64 {
        let mut a = vec!["run", "--rm", "--network", "none"];
        a.extend_from_slice(args);
        a.extend_from_slice(&["busybox", "df", "-k", "/dev/shm"]);
        let o = out(&s, &a);
        let line = o.lines().nth(1).unwrap_or_default().to_string();
        line.split_whitespace()
            .nth(1)
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("df: {o}"))
    };
    assert_eq!(kb(&[]), 65536, "Docker's default 64m");
    assert_eq!(kb(&["--shm-size", "128m"]), 131072);
    assert_eq!(kb(&["--shm-size", "1g"]), 1 << 20);
}

#[test]
fn sysctl_written_in_the_containers_namespaces() {
    let s = setup(&default_driver());
    let host = std::fs::read_to_string("/proc/sys/net/core/somaxconn").unwrap();
    let want = if host.trim() == "1234" {
        "1235"
    } else {
        "1234"
    };
    let o = out(
        &s,
        &[
            "run",
            "--rm",
            "--network",
            "none",
            "--sysctl",
            &format!("net.core.somaxconn={want}"),
            "--sysctl",
            "kernel.shmmni=1111",
            "busybox",
            "sh",
            "-c",
            "cat /proc/sys/net/core/somaxconn /proc/sys/kernel/shmmni; \
             echo 1 > /proc/sys/kernel/shmmni || echo read-only",
        ],
    );
    assert!(
        o.starts_with(&format!("{want}\n1111\n")),
        "container's values: {o}"
    );
    // /proc/sys is read-only again once the init has written them.
    assert!(o.ends_with("read-only\n"), "{o}");
    // The host's own values are untouched.
    assert_eq!(
        std::fs::read_to_string("/proc/sys/net/core/somaxconn").unwrap(),
        host
    );
}

#[test]
fn group_add_in_the_init_and_in_exec() {
    let s = setup(&default_driver());
    let groups = |o: &str| -> Vec<String> { o.split_whitespace().map(str::to_string).collect() };
    let o = out(
        &s,
        &[
            "run",
            "--rm",
            "--network",
            "none",
            "--group-add",
            "nogroup",
            "--group-add",
            "1234",
            "busybox",
            "id",
            "-G",
        ],
    );
    let g = groups(&o);
    for want in ["0", "65534", "1234"] {
        assert!(g.iter().any(|x| x == want), "{want} in {o}");
    }
    let o = out(
        &s,
        &["run", "--rm", "--network", "none", "busybox", "id", "-G"],
    );
    assert_eq!(groups(&o), vec!["0"]);
    let _c = Running { s: &s, name: "ga" };
    out(
        &s,
        &[
            "run",
            "-d",
            "--name",
            "ga",
            "--network",
            "none",
            "--group-add",
            "4321",
            "busybox",
            "sleep",
            "100",
        ],
    );
    let g = groups(&out(&s, &["exec", "ga", "id", "-G"]));
    assert!(g.iter().any(|x| x == "4321"), "{g:?}");
    let g = groups(&out(&s, &["exec", "-u", "nobody", "ga", "id", "-G"]));
    assert!(g.iter().any(|x| x == "4321"), "exec -u keeps it: {g:?}");
    // A name the image's /etc/group lacks: the start fails, nothing is left.
    let r = s.run(&[
        "run",
        "--rm",
        "--network",
        "none",
        "--group-add",
        "nosuchgroup",
        "busybox",
        "true",
    ]);
    assert_eq!(r.code, Some(125), "{r:?}");
    assert!(
        r.stderr
            .contains("Unable to find group nosuchgroup: no matching entries in group file"),
        "{r:?}"
    );
}

/// SIGKILL a host pid at the end of a test (a process a failed assertion would leave).
struct KillOnDrop(i32);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        // Only while it is still the container's `sleep` (the pid may have been reused).
        let cmd = std::fs::read_to_string(format!("/proc/{}/cmdline", self.0)).unwrap_or_default();
        if cmd.starts_with("sleep\x001000") {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(self.0),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

fn ns_inode(kind: &str) -> String {
    std::fs::read_link(format!("/proc/self/ns/{kind}"))
        .unwrap()
        .display()
        .to_string()
}

#[test]
fn host_namespaces_on_request() {
    let s = setup(&default_driver());
    let me = std::process::id().to_string();
    // --pid host: the test's own pid is among the container's processes.
    let o = out(
        &s,
        &[
            "run",
            "--rm",
            "--network",
            "none",
            "--pid",
            "host",
            "busybox",
            "ps",
            "-o",
            "pid",
        ],
    );
    assert!(o.lines().any(|l| l.trim() == me), "pid {me} in {o}");
    let o = out(
        &s,
        &[
            "run",
            "--rm",
            "--network",
            "none",
            "busybox",
            "ps",
            "-o",
            "pid",
        ],
    );
    assert!(!o.lines().any(|l| l.trim() == me), "own namespace: {o}");
    // The rest of the confinement stays Docker's: masked paths, capabilities, seccomp.
    let o = out(
        &s,
        &[
            "run",
            "--rm",
            "--network",
            "none",
            "--pid",
            "host",
            "--ipc",
            "host",
            "--uts",
            "host",
            "busybox",
            "sh",
            "-c",
            "grep -c ' /proc/keys ' /proc/self/mountinfo; grep -E '^(CapEff|Seccomp):' /proc/self/status",
        ],
    );
    assert_eq!(o, "1\nCapEff:\t00000000a80425fb\nSeccomp:\t2\n");
    // The processes a --pid host container leaves behind go with it (no pid namespace takes
    // them along: its cgroup is killed, as Docker does), --privileged (no device cgroup) too.
    for extra in [&[][..], &["--privileged"]] {
        let mut a = vec!["run", "--rm", "--network", "none", "--pid", "host"];
        a.extend_from_slice(extra);
        a.extend_from_slice(&[
            "busybox",
            "sh",
            "-c",
            "sleep 1000 >/dev/null 2>&1 & echo $!",
        ]);
        let o = out(&s, &a);
        let left: i32 = o.trim().parse().unwrap_or_else(|_| panic!("pid: {o}"));
        let _reap = KillOnDrop(left);
        let gone = eventually(Duration::from_secs(10), || {
            let stat = std::fs::read_to_string(format!("/proc/{left}/stat")).unwrap_or_default();
            // Gone, or a zombie waiting for the host's init.
            (stat.is_empty() || stat.contains(") Z ")).then_some(())
        });
        assert!(gone.is_some(), "{a:?}: pid {left} outlived its container");
    }
    // --ipc host: the host's IPC namespace; by default a new one.
    let ipc = |extra: &[&str]| {
        let mut a = vec!["run", "--rm", "--network", "none"];
        a.extend_from_slice(extra);
        a.extend_from_slice(&["busybox", "readlink", "/proc/self/ns/ipc"]);
        out(&s, &a).trim().to_string()
    };
    assert_eq!(ipc(&["--ipc", "host"]), ns_inode("ipc"));
    assert_ne!(ipc(&[]), ns_inode("ipc"));
    assert_ne!(ipc(&["--ipc", "shareable"]), ns_inode("ipc"));
    // --ipc none: its own namespace and no /dev/shm.
    assert_ne!(ipc(&["--ipc", "none"]), ns_inode("ipc"));
    let o = out(
        &s,
        &[
            "run",
            "--rm",
            "--network",
            "none",
            "--ipc",
            "none",
            "busybox",
            "sh",
            "-c",
            "grep ' /dev/shm ' /proc/self/mountinfo || echo no-shm",
        ],
    );
    assert_eq!(o, "no-shm\n");
    // --uts host: the host's name, in the container and in its /etc/hostname.
    let host = nix::unistd::gethostname().unwrap().into_string().unwrap();
    let o = out(
        &s,
        &[
            "run",
            "--rm",
            "--network",
            "none",
            "--uts",
            "host",
            "busybox",
            "sh",
            "-c",
            "hostname; cat /etc/hostname; readlink /proc/self/ns/uts",
        ],
    );
    assert_eq!(o, format!("{host}\n{host}\n{}\n", ns_inode("uts")));
    // exec in such a container: the same namespaces.
    let _c = Running {
        s: &s,
        name: "hostns",
    };
    out(
        &s,
        &[
            "run",
            "-d",
            "--name",
            "hostns",
            "--network",
            "none",
            "--pid",
            "host",
            "--ipc",
            "host",
            "--uts",
            "host",
            "busybox",
            "sleep",
            "100",
        ],
    );
    let o = out(
        &s,
        &[
            "exec",
            "hostns",
            "sh",
            "-c",
            &format!("hostname; readlink /proc/self/ns/ipc; test -d /proc/{me} && echo seen"),
        ],
    );
    assert_eq!(o, format!("{host}\n{}\nseen\n", ns_inode("ipc")));
    // The host's name is unchanged afterwards.
    assert_eq!(
        nix::unistd::gethostname().unwrap().into_string().unwrap(),
        host
    );
}

#[test]
fn refusals_exit_125_and_create_nothing() {
    let s = setup(&default_driver());
    let cases: &[(&[&str], &str)] = &[
        (&["--ulimit", "nofile"], "invalid ulimit argument: nofile"),
        (&["--ulimit", "files=1"], "invalid ulimit type: files"),
        (
            &["--ulimit", "nofile=20:10"],
            "ulimit soft limit must be less than or equal to hard limit: 20 > 10",
        ),
        (&["--ulimit", "nofile=x"], "invalid syntax"),
        (&["--shm-size", "lots"], "invalid size: 'lots'"),
        (
            &["--sysctl", "vm.swappiness=1"],
            "sysctl 'vm.swappiness=1' is not allowed",
        ),
        (
            &["--sysctl", "kernel.hostname=x"],
            "sysctl 'kernel.hostname=x' is not allowed",
        ),
        (
            &["--network", "host", "--sysctl", "net.core.somaxconn=1"],
            "sysctl \"net.core.somaxconn\" is not allowed in the hosts network namespace",
        ),
        (
            &["--ipc", "host", "--sysctl", "kernel.shmmax=1"],
            "sysctl \"kernel.shmmax\" is not allowed in the hosts ipc namespace",
        ),
        (
            &["--uts", "host", "--hostname", "x"],
            "conflicting options: hostname and the UTS mode",
        ),
        (&["--pid", "bogus"], "--pid: invalid PID mode"),
        (&["--ipc", "bogus"], "--ipc: invalid IPC mode"),
        (&["--uts", "bogus"], "--uts: invalid UTS mode"),
    ];
    for (flags, msg) in cases {
        for verb in ["run", "create"] {
            let mut a = vec![verb, "--name", "refused"];
            a.extend_from_slice(flags);
            a.extend_from_slice(&["busybox", "true"]);
            let r = s.run(&a);
            assert_eq!(r.code, Some(125), "{a:?}: {r:?}");
            assert!(r.stderr.contains(msg), "{a:?}: want {msg:?}: {r:?}");
            assert_eq!(r.stderr.trim().lines().count(), 1, "one line: {r:?}");
            assert_eq!(s.ok(&["ps", "-aq"]), "", "{a:?} left a container");
        }
    }
    // A limit the kernel refuses (above fs.nr_open): a start error, nothing left.
    let r = s.run(&["run", "--ulimit", "nofile=2147483647", "busybox", "true"]);
    assert_eq!(r.code, Some(125), "{r:?}");
    assert!(
        r.stderr.contains("error setting rlimit type RLIMIT_NOFILE"),
        "{r:?}"
    );
    assert_eq!(s.ok(&["ps", "-aq"]), "");
    assert!(mounts_under(s.root_path()).is_empty());
}

/// Rootless (an unprivileged user with subordinate ranges): the flags that need nothing of the
/// host work as for root.
#[test]
fn rootless_flags() {
    use std::path::Path;
    use strata_testkit::user::TestUser;
    let user = TestUser::new(true).unwrap();
    let bin = Path::new(env!("CARGO_BIN_EXE_strata"));
    let archive = user.home.join("busybox.tar");
    strata_testkit::fixtures::busybox_archive(&archive, "busybox:latest").unwrap();
    std::os::unix::fs::chown(&archive, Some(user.uid), None).unwrap();
    let run = |args: &[&str]| {
        let o = user.command(bin, args).output().unwrap();
        (
            o.status.code(),
            String::from_utf8_lossy(&o.stdout).into_owned(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    };
    let (code, _, err) = run(&["load", "-i", "busybox.tar"]);
    assert_eq!(code, Some(0), "{err}");
    let sh = |flags: &[&str], script: &str| -> String {
        let mut a = vec!["run", "--rm"];
        a.extend_from_slice(flags);
        a.extend_from_slice(&["busybox", "sh", "-c", script]);
        let (code, out, err) = run(&a);
        assert_eq!(code, Some(0), "{a:?}: {err}");
        out
    };
    assert_eq!(
        sh(&["--ulimit", "nofile=100:200"], "ulimit -n; ulimit -Hn"),
        "100\n200\n"
    );
    let df = sh(&["--shm-size", "16m"], "df -k /dev/shm | tail -1");
    assert_eq!(df.split_whitespace().nth(1), Some("16384"), "{df}");
    assert_eq!(
        sh(
            &["--sysctl", "net.core.somaxconn=99"],
            "cat /proc/sys/net/core/somaxconn"
        ),
        "99\n"
    );
    let g = sh(&["--group-add", "nogroup"], "id -G");
    assert!(g.split_whitespace().any(|x| x == "65534"), "{g}");
    // --pid host: the host's /proc (bound: no proc of the host's pid namespace can be mounted
    // from the user's namespace), with Docker's masked paths still over it.
    let me = std::process::id();
    let o = sh(
        &["--pid", "host"],
        &format!("test -d /proc/{me} && echo seen; grep -c ' /proc/keys ' /proc/self/mountinfo"),
    );
    assert_eq!(o, "seen\n1\n");
    let o = sh(&[], &format!("test -d /proc/{me} && echo seen; true"));
    assert_eq!(o, "");
    let o = sh(&["--ipc", "host"], "readlink /proc/self/ns/ipc");
    assert_eq!(o.trim(), ns_inode("ipc"));
    let host = nix::unistd::gethostname().unwrap().into_string().unwrap();
    assert_eq!(sh(&["--uts", "host"], "hostname"), format!("{host}\n"));
    let (code, _, err) = run(&[
        "run",
        "-d",
        "--name",
        "app",
        "--ipc",
        "shareable",
        "busybox",
        "sleep",
        "100",
    ]);
    assert_eq!(code, Some(0), "{err}");
    let (code, app_ipc, err) = run(&[
        "exec",
        "app",
        "sh",
        "-c",
        "readlink /proc/self/ns/ipc; echo hi > /dev/shm/from-app",
    ]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(
        sh(
            &["--ipc", "container:app"],
            "readlink /proc/self/ns/ipc; cat /dev/shm/from-app"
        ),
        format!("{app_ipc}hi\n")
    );
    // Joining another container's pid namespace needs the host's: refused, nothing made.
    let (code, _, err) = run(&["run", "--rm", "--pid", "container:app", "busybox", "true"]);
    assert_eq!(code, Some(125), "{err}");
    assert!(
        err.contains("--pid container:app is not supported for rootless containers"),
        "{err}"
    );
    let (_, ps, _) = run(&["ps", "-aq"]);
    assert_eq!(ps.lines().count(), 1, "{ps}");
    run(&["rm", "-f", "app"]);
}

/// A `--pid host` container whose supervisor is killed: the next command's clean-up kills what
/// the container left behind (its cgroup), not only its init.
#[test]
fn pid_host_leftovers_go_when_the_supervisor_dies() {
    let s = setup(&default_driver());
    let _c = Running {
        s: &s,
        name: "orphans",
    };
    let id = out(
        &s,
        &[
            "run",
            "-d",
            "--name",
            "orphans",
            "--network",
            "none",
            "--pid",
            "host",
            "busybox",
            "sh",
            "-c",
            "sleep 1000 >/dev/null 2>&1 & wait",
        ],
    );
    let state: serde_json::Value = serde_json::from_slice(
        &std::fs::read(
            s.root_path()
                .join("containers")
                .join(id.trim())
                .join("state.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let sup = state["supervisor_pid"].as_i64().unwrap() as i32;
    let init = state["pid"].as_i64().unwrap() as i32;
    let child = eventually(Duration::from_secs(10), || {
        std::fs::read_to_string(format!("/proc/{init}/task/{init}/children"))
            .ok()
            .and_then(|c| {
                c.split_whitespace()
                    .next()
                    .and_then(|p| p.parse::<i32>().ok())
            })
    })
    .expect("the container's sleep");
    let _reap = KillOnDrop(child);
    // SAFETY: signalling the supervisor this test started.
    unsafe { libc::kill(sup, libc::SIGKILL) };
    let gone = eventually(Duration::from_secs(10), || {
        (!std::path::Path::new(&format!("/proc/{sup}")).exists()).then_some(())
    });
    assert!(gone.is_some());
    // `ps -a` finds the dead supervisor and cleans up.
    s.ok(&["ps", "-a"]);
    let gone = eventually(Duration::from_secs(10), || {
        let stat = std::fs::read_to_string(format!("/proc/{child}/stat")).unwrap_or_default();
        (stat.is_empty() || stat.contains(") Z ")).then_some(())
    });
    assert!(gone.is_some(), "pid {child} outlived its dead supervisor");
    assert!(mounts_under(s.root_path()).is_empty());
}

/// `--pid container:X`, `--ipc container:X`: another container's namespaces (and its
/// `/dev/shm`), as a debugging sidecar uses them.
#[test]
fn another_containers_namespaces() {
    let s = setup(&default_driver());
    let _app = Running { s: &s, name: "app" };
    out(
        &s,
        &[
            "run",
            "-d",
            "--name",
            "app",
            "--network",
            "none",
            "--ipc",
            "shareable",
            "--shm-size",
            "8m",
            "busybox",
            "sleep",
            "100",
        ],
    );
    out(
        &s,
        &["exec", "app", "sh", "-c", "echo from-app > /dev/shm/a"],
    );
    let app_ipc = out(&s, &["exec", "app", "readlink", "/proc/self/ns/ipc"]);
    let app_pid = out(&s, &["exec", "app", "readlink", "/proc/self/ns/pid"]);
    let o = out(
        &s,
        &[
            "run",
            "--rm",
            "--network",
            "none",
            "--pid",
            "container:app",
            "--ipc",
            "container:app",
            "busybox",
            "sh",
            "-c",
            "cat /proc/1/cmdline | tr '\\0' ' '; echo; readlink /proc/self/ns/pid; readlink /proc/self/ns/ipc; cat /dev/shm/a; echo from-side > /dev/shm/b; df -k /dev/shm | tail -1 | awk '{print $2}'",
        ],
    );
    assert_eq!(
        o,
        format!("sleep 100 \n{app_pid}{app_ipc}from-app\n8192\n"),
        "the sidecar sees app's processes, IPC namespace and /dev/shm (POSIX shared memory)"
    );
    assert_eq!(
        out(&s, &["exec", "app", "cat", "/dev/shm/b"]),
        "from-side\n"
    );
    let v: serde_json::Value = serde_json::from_str(&out(&s, &["inspect", "app"])).unwrap();
    assert_eq!(v[0]["HostConfig"]["IpcMode"], "shareable");
    // A private IPC namespace is not shared (Docker 20.10+): refused, nothing left.
    let _private = Running {
        s: &s,
        name: "private",
    };
    out(
        &s,
        &["run", "-d", "--name", "private", "busybox", "sleep", "100"],
    );
    let private_id = out(&s, &["inspect", "-f", "{{.Id}}", "private"]);
    let r = s.run(&[
        "run",
        "--rm",
        "--ipc",
        "container:private",
        "busybox",
        "true",
    ]);
    assert_eq!(r.code, Some(125), "{r:?}");
    assert!(
        r.stderr.contains(&format!(
            "container {}: non-shareable IPC (hint: use IpcMode:shareable for the donor container)",
            private_id.trim()
        )),
        "{r:?}"
    );
    out(&s, &["rm", "-f", "private"]);
    // app is untouched by the sidecar's end.
    assert_eq!(out(&s, &["exec", "app", "cat", "/proc/1/comm"]), "sleep\n");
    let v: serde_json::Value = serde_json::from_str(&out(&s, &["inspect", "app"])).unwrap();
    let app_id = v[0]["Id"].as_str().unwrap().to_string();
    let _side = Running {
        s: &s,
        name: "side",
    };
    out(
        &s,
        &[
            "create",
            "--name",
            "side",
            "--pid",
            "container:app",
            "busybox",
            "true",
        ],
    );
    let v: serde_json::Value = serde_json::from_str(&out(&s, &["inspect", "side"])).unwrap();
    assert_eq!(v[0]["HostConfig"]["PidMode"], format!("container:{app_id}"));
    // Refusals: no such container (at create), not running (at start): 125, nothing left.
    let r = s.run(&[
        "run",
        "--rm",
        "--pid",
        "container:nosuch",
        "busybox",
        "true",
    ]);
    assert_eq!(r.code, Some(125), "{r:?}");
    assert!(r.stderr.contains("No such container: nosuch"), "{r:?}");
    // The shareable /dev/shm lives as long as app runs (a host-side tmpfs), and goes with it.
    let shm_mounts = || {
        std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap()
            .lines()
            .filter(|l| l.contains(&app_id) && l.contains("/shm "))
            .count()
    };
    assert_eq!(shm_mounts(), 1);
    out(&s, &["rm", "-f", "app"]);
    assert_eq!(shm_mounts(), 0);
    let r = s.run(&["run", "--rm", "--ipc", "container:side", "busybox", "true"]);
    assert_eq!(r.code, Some(125), "{r:?}");
    let side_id = serde_json::from_str::<serde_json::Value>(&out(&s, &["inspect", "side"]))
        .unwrap()[0]["Id"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        r.stderr.contains(&format!(
            "cannot join IPC of a non running container: {side_id}"
        )),
        "{r:?}"
    );
    assert_eq!(
        out(&s, &["ps", "-aq"]).lines().count(),
        1,
        "only side is left"
    );
    assert!(mounts_under(s.root_path()).is_empty());
}

/// `--ipc shareable`: the host-side `/dev/shm` tmpfs a SIGKILLed supervisor leaves mounted is
/// detached by the next verb that finds the supervisor dead, and a restart mounts a fresh one.
#[test]
fn shareable_shm_goes_when_the_supervisor_dies() {
    let s = setup(&default_driver());
    let _c = Running { s: &s, name: "shm" };
    let id = out(
        &s,
        &[
            "run",
            "-d",
            "--name",
            "shm",
            "--network",
            "none",
            "--ipc",
            "shareable",
            "busybox",
            "sleep",
            "1000",
        ],
    );
    let id = id.trim().to_string();
    let shm_mounts = || {
        std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap()
            .lines()
            .filter(|l| l.contains(&id) && l.contains("/shm "))
            .count()
    };
    assert_eq!(shm_mounts(), 1);
    out(&s, &["exec", "shm", "sh", "-c", "echo x > /dev/shm/old"]);
    let state: serde_json::Value = serde_json::from_slice(
        &std::fs::read(
            s.root_path()
                .join("containers")
                .join(&id)
                .join("state.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let sup = state["supervisor_pid"].as_i64().unwrap() as i32;
    // SAFETY: signalling the supervisor this test started.
    unsafe { libc::kill(sup, libc::SIGKILL) };
    let gone = eventually(Duration::from_secs(10), || {
        (!std::path::Path::new(&format!("/proc/{sup}")).exists()).then_some(())
    });
    assert!(gone.is_some());
    assert_eq!(shm_mounts(), 1, "left behind by the killed supervisor");
    s.ok(&["ps", "-a"]);
    assert_eq!(shm_mounts(), 0);
    s.ok(&["start", "shm"]);
    assert_eq!(shm_mounts(), 1);
    assert_eq!(
        out(&s, &["exec", "shm", "ls", "/dev/shm"]),
        "",
        "a fresh tmpfs"
    );
    out(&s, &["rm", "-f", "shm"]);
    assert_eq!(shm_mounts(), 0);
    assert!(mounts_under(s.root_path()).is_empty());
}

/// `--domainname` names the container's UTS namespace's NIS domain; `--oom-score-adj` is the
/// init's and every `exec`'s OOM adjustment; Docker's range check. (A negative value needs
/// CAP_SYS_RESOURCE, which this machine's own bounding set lacks: positive values here.)
#[test]
fn domainname_and_oom_score_adj() {
    let s = setup(&default_driver());
    let _c = Running { s: &s, name: "oom" };
    out(
        &s,
        &[
            "run",
            "-d",
            "--name",
            "oom",
            "--network",
            "none",
            "--domainname",
            "example.org",
            "--oom-score-adj",
            "500",
            "busybox",
            "sleep",
            "1000",
        ],
    );
    assert_eq!(
        out(
            &s,
            &[
                "exec",
                "oom",
                "cat",
                "/proc/sys/kernel/domainname",
                "/proc/1/oom_score_adj",
                "/proc/self/oom_score_adj"
            ]
        ),
        "example.org\n500\n500\n"
    );
    let host_domain = std::fs::read_to_string("/proc/sys/kernel/domainname").unwrap();
    assert_ne!(host_domain, "example.org\n", "the host's own is untouched");
    assert_eq!(
        out(
            &s,
            &[
                "inspect",
                "-f",
                "{{.Config.Domainname}} {{.HostConfig.OomScoreAdj}}",
                "oom"
            ]
        ),
        "example.org 500\n"
    );
    out(&s, &["rm", "-f", "oom"]);
    let o = out(
        &s,
        &[
            "run",
            "--rm",
            "--network",
            "none",
            "busybox",
            "cat",
            "/proc/self/oom_score_adj",
        ],
    );
    assert_eq!(o, "0\n", "unset: the default");
    let r = s.run(&["run", "--rm", "--oom-score-adj", "1001", "busybox", "true"]);
    assert_eq!(r.code, Some(125), "{r:?}");
    assert_eq!(
        r.stderr,
        "Error: Invalid value 1001, range for oom score adj is [-1000, 1000]\n"
    );
    assert_eq!(out(&s, &["ps", "-aq"]), "");
}
