//! End-to-end container tests: the real `strata` binary, as root, on temp roots. The driver is
//! `STRATA_TEST_DRIVER` (default fuse); `containers_drivers.rs` runs a lifecycle on every driver.

mod containers_common;

use std::time::Duration;

use containers_common::{busybox_rm, default_driver, install_busybox, ps_status, setup};
use strata_testkit::container::{
    abort_fuse_under, eventually, free_port, http_get, mounts_under, Strata,
};
use strata_testkit::fixtures::INDEX_HTML;

#[test]
fn run_exit_codes_and_output() {
    let s = setup(&default_driver());
    let r = s.run(&busybox_rm(
        &[],
        &["sh", "-c", "echo hello; echo err >&2; exit 3"],
    ));
    assert_eq!(r.code, Some(3), "{r:?}");
    assert_eq!(r.stdout, "hello\n");
    assert_eq!(r.stderr, "err\n");
    let r = s.run(&["run", "--rm", "busybox", "true"]);
    assert_eq!(r.code, Some(0), "{r:?}");
    let r = s.run(&["run", "--rm", "busybox", "nosuchcmd"]);
    assert_eq!(r.code, Some(127), "{r:?}");
    assert!(
        r.stderr.contains("executable file not found in $PATH"),
        "{r:?}"
    );
    let r = s.run(&["run", "--rm", "busybox", "/etc/motd"]);
    assert_eq!(r.code, Some(126), "{r:?}");
    let r = s.run(&["run", "--rm", "nosuchimage"]);
    assert_eq!(r.code, Some(125), "{r:?}");
    assert!(
        r.stderr
            .contains("Unable to find image 'nosuchimage:latest' locally"),
        "{r:?}"
    );
    assert!(mounts_under(s.root_path()).is_empty());
    assert_eq!(s.ok(&["ps", "-aq"]), "");
}

#[test]
fn env_user_workdir_from_image_and_flags() {
    let s = Strata::new(env!("CARGO_BIN_EXE_strata")).with_driver(&default_driver());
    install_busybox(
        s.root_path(),
        "cfg:1",
        serde_json::json!({"Env": ["PATH=/bin:/usr/bin", "FOO=image"], "WorkingDir": "/data",
                           "Entrypoint": ["sh", "-c"], "Cmd": ["echo default-cmd"]}),
    );
    let envfile = s.root_path().join("envfile");
    std::fs::write(&envfile, "# comment\nFROMFILE=yes\n").unwrap();
    let script = "echo $FOO $BAR $FROMFILE; pwd; id -u; echo $HOME; hostname";
    let out = s.ok(&[
        "run",
        "--rm",
        "-e",
        "BAR=flag",
        "--env-file",
        envfile.to_str().unwrap(),
        "--hostname",
        "box1",
        "cfg:1",
        script,
    ]);
    assert_eq!(out, "image flag yes\n/data\n0\n/root\nbox1\n");
    let out = s.ok(&[
        "run", "--rm", "-w", "/tmp", "-u", "nobody", "-e", "FOO=over", "cfg:1", script,
    ]);
    assert!(
        out.starts_with("over\n/tmp\n65534\n/nonexistent\n"),
        "{out}"
    );
    assert_eq!(s.ok(&["run", "--rm", "cfg:1"]), "default-cmd\n");
    let out = s.ok(&["run", "--rm", "--entrypoint", "echo", "cfg:1", "x", "y"]);
    assert_eq!(out, "x y\n");
    let out = s.ok(&["run", "--rm", "-u", "1234:5678", "cfg:1", "id -u; id -g"]);
    assert_eq!(out, "1234\n5678\n");
    // A variable needs a name (Docker's ValidateEnv); nothing is created.
    let r = s.run(&["run", "--rm", "-e", "=bad", "cfg:1", "true"]);
    assert_eq!(r.code, Some(125), "{r:?}");
    assert_eq!(r.stderr, "Error: invalid environment variable: =bad\n");
    assert_eq!(s.ok(&["ps", "-aq"]), "");
}

#[test]
fn nobody_gets_permission_errors() {
    let s = setup(&default_driver());
    let r = s.run(&busybox_rm(
        &["-u", "nobody"],
        &[
            "sh",
            "-c",
            "ls /root; touch /etc/x; echo ok > /tmp/ok && cat /tmp/ok",
        ],
    ));
    assert_eq!(r.code, Some(0), "{r:?}");
    assert!(r.stderr.contains("Permission denied"), "{r:?}");
    assert_eq!(r.stdout, "ok\n");
    // Root in the container keeps Docker's default capabilities only.
    let r = s.run(&busybox_rm(
        &[],
        &["sh", "-c", "grep CapEff /proc/self/status; hostname foo"],
    ));
    assert!(r.stdout.contains("00000000a80425fb"), "{r:?}");
    assert_ne!(r.code, Some(0), "sethostname needs CAP_SYS_ADMIN: {r:?}");
}

#[test]
fn detached_logs_follow_and_stop() {
    let s = setup(&default_driver());
    let id = s.ok(&[
        "run",
        "-d",
        "--name",
        "talker",
        "busybox",
        "sh",
        "-c",
        "trap 'echo bye; exit 0' TERM; echo one; sleep 0.3; echo two >&2; while true; do sleep 0.1; done",
    ]);
    let id = id.trim();
    assert_eq!(id.len(), 64, "{id}");
    assert!(ps_status(&s, "talker", true).starts_with("Up "));
    let mut follow = s.command(&["logs", "-f", "talker"]);
    follow
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let follower = follow.spawn().unwrap();
    let logs = eventually(Duration::from_secs(20), || {
        let out = s.run(&["logs", "talker"]);
        (out.stdout == "one\n" && out.stderr == "two\n").then_some(out)
    });
    assert!(logs.is_some(), "{:?}", s.run(&["logs", "talker"]));
    let t = s.run(&["logs", "-t", "--tail", "1", "talker"]);
    assert_eq!(t.stdout, "");
    assert!(
        t.stderr.len() > 30 && t.stderr.contains('T') && t.stderr.ends_with("Z two\n"),
        "{t:?}"
    );
    // --since/--until: times as `-t` prints them (both ends included), or relative.
    let one_at = s.ok(&["logs", "-t", "talker"]);
    let one_at = one_at.split(' ').next().unwrap();
    let two_at = t.stderr.split(' ').next().unwrap();
    let r = s.run(&["logs", "--until", one_at, "talker"]);
    assert_eq!((r.stdout.as_str(), r.stderr.as_str()), ("one\n", ""));
    let r = s.run(&["logs", "--since", two_at, "talker"]);
    assert_eq!((r.stdout.as_str(), r.stderr.as_str()), ("", "two\n"));
    let r = s.run(&["logs", "--since", "1h", "talker"]);
    assert_eq!((r.stdout.as_str(), r.stderr.as_str()), ("one\n", "two\n"));
    let r = s.run(&["logs", "--since", "soon", "talker"]);
    assert_eq!(r.code, Some(1), "{r:?}");
    assert!(
        r.stderr
            .contains("failed to parse value as time or duration: \"soon\""),
        "{r:?}"
    );
    assert_eq!(s.ok(&["stop", "-t", "10", "talker"]), "talker\n");
    let followed = strata_testkit::container::wait_output(follower, Duration::from_secs(30));
    let out = String::from_utf8_lossy(&followed.stdout);
    assert_eq!(
        out, "one\nbye\n",
        "logs -f follows until the container exits"
    );
    assert!(
        ps_status(&s, "talker", true).starts_with("Exited (0) "),
        "{}",
        ps_status(&s, "talker", true)
    );
    assert_eq!(s.ok(&["wait", "talker"]), "0\n");
    assert!(mounts_under(s.root_path()).is_empty());
    assert_eq!(s.ok(&["rm", "talker"]), "talker\n");
    assert!(!s.root_path().join("containers").join(id).exists());
}

#[test]
fn published_port_serves_http() {
    let s = setup(&default_driver());
    let port = free_port();
    let publish = format!("{port}:80");
    let id = s.ok(&[
        "run", "-d", "-p", &publish, "--name", "web", "busybox", "httpd", "-f", "-p", "80", "-h",
        "/www",
    ]);
    let got = eventually(Duration::from_secs(20), || {
        http_get("127.0.0.1", port, "/").ok()
    });
    let (code, body) = got.expect("HTTP through the published port");
    assert_eq!(code, 200);
    assert_eq!(body, INDEX_HTML);
    let ps = s.ok(&["ps"]);
    assert!(ps.contains(&format!("0.0.0.0:{port}->80/tcp")), "{ps}");
    assert!(ps.contains(&id.trim()[..12]), "{ps}");
    // Docker's dual listing: IPv4 and (when the host has it) IPv6 on the same port.
    let ports = s.ok(&["port", "web"]);
    assert!(
        ports == format!("80/tcp -> 0.0.0.0:{port}\n")
            || ports == format!("80/tcp -> 0.0.0.0:{port}\n80/tcp -> [::]:{port}\n"),
        "{ports}"
    );
    let (code, _) = http_get("127.0.0.1", port, "/nope.html").unwrap();
    assert_eq!(code, 404);
    // The port is taken now: a second container cannot have it, and leaves nothing behind.
    let r = s.run(&[
        "run", "-d", "-p", &publish, "--name", "web2", "busybox", "httpd", "-f", "-p", "80",
    ]);
    assert_eq!(r.code, Some(125), "{r:?}");
    assert!(
        r.stderr.contains(&format!(
            "Bind for 0.0.0.0:{port} failed: port is already allocated"
        )),
        "{r:?}"
    );
    assert_eq!(s.ok(&["ps", "-aq"]).lines().count(), 1);
    assert_eq!(
        mounts_under(s.root_path()).len(),
        1,
        "only web's rootfs is mounted"
    );
    assert_eq!(s.ok(&["rm", "-f", "web"]), "web\n");
    assert!(mounts_under(s.root_path()).is_empty());
    assert!(
        http_get("127.0.0.1", port, "/").is_err(),
        "listener gone with the container"
    );
}

#[test]
fn exec_into_running_container() {
    let s = setup(&default_driver());
    s.ok(&[
        "run",
        "-d",
        "--name",
        "box",
        "--hostname",
        "boxhost",
        "busybox",
        "sleep",
        "1000",
    ]);
    let out = s.ok(&[
        "exec",
        "box",
        "sh",
        "-c",
        "hostname; cat /proc/1/cmdline | tr '\\0' ' '; echo; id -u",
    ]);
    assert_eq!(out, "boxhost\nsleep 1000 \n0\n");
    let r = s.run(&["exec", "box", "sh", "-c", "exit 7"]);
    assert_eq!(r.code, Some(7));
    assert_eq!(
        s.ok(&[
            "exec",
            "-u",
            "nobody",
            "-w",
            "/tmp",
            "-e",
            "X=1",
            "box",
            "sh",
            "-c",
            "id -u; pwd; echo $X"
        ]),
        "65534\n/tmp\n1\n"
    );
    // --env-file first, -e over it.
    let envs = tempfile::tempdir().unwrap();
    let env_file = envs.path().join("env");
    std::fs::write(&env_file, "# comment\nA=file\nB=file\n").unwrap();
    assert_eq!(
        s.ok(&[
            "exec",
            "--env-file",
            env_file.to_str().unwrap(),
            "-e",
            "B=flag",
            "box",
            "sh",
            "-c",
            "echo $A $B"
        ]),
        "file flag\n"
    );
    let r = s.run(&["exec", "box", "nosuch"]);
    assert_eq!(r.code, Some(127), "{r:?}");
    // Files written by exec are seen by the container's other processes (same rootfs).
    s.ok(&["exec", "box", "sh", "-c", "echo shared > /tmp/f"]);
    assert_eq!(s.ok(&["exec", "box", "cat", "/tmp/f"]), "shared\n");
    s.ok(&["exec", "-d", "box", "sh", "-c", "echo bg > /tmp/bg"]);
    let bg = eventually(Duration::from_secs(10), || {
        let r = s.run(&["exec", "box", "cat", "/tmp/bg"]);
        (r.stdout == "bg\n").then_some(())
    });
    assert!(bg.is_some());
    let mp = s.ok(&["mount", "box"]);
    assert!(
        std::path::Path::new(mp.trim()).join("tmp/f").exists(),
        "{mp}"
    );
    s.ok(&["kill", "box"]);
    assert_eq!(s.ok(&["wait", "box"]), "137\n");
    let r = s.run(&["exec", "box", "true"]);
    assert_ne!(r.code, Some(0));
    assert!(r.stderr.contains("is not running"), "{r:?}");
}

#[test]
fn start_keeps_the_upper_dir() {
    let s = setup(&default_driver());
    let cmd = "cat /keep 2>/dev/null; echo run >> /keep";
    assert_eq!(
        s.ok(&["run", "--name", "keeper", "busybox", "sh", "-c", cmd]),
        ""
    );
    assert_eq!(s.ok(&["start", "-a", "keeper"]), "run\n");
    assert_eq!(s.ok(&["start", "keeper"]), "keeper\n");
    assert_eq!(s.ok(&["wait", "keeper"]), "0\n");
    assert_eq!(s.ok(&["start", "-a", "keeper"]), "run\nrun\nrun\n");
    assert_eq!(s.ok(&["logs", "keeper"]), "run\nrun\nrun\nrun\nrun\nrun\n");
    s.ok(&["restart", "-t", "1", "keeper"]);
    assert_eq!(s.ok(&["wait", "keeper"]), "0\n");
}

#[test]
fn rm_flag_and_name_conflicts() {
    let s = setup(&default_driver());
    s.ok(&["run", "--rm", "--name", "gone", "busybox", "true"]);
    assert_eq!(s.ok(&["ps", "-aq"]), "");
    assert!(std::fs::read_dir(s.root_path().join("containers"))
        .unwrap()
        .flatten()
        .all(|e| e.file_name().len() != 64));
    let id = s.ok(&[
        "run",
        "-d",
        "--name",
        "webserver",
        "busybox",
        "sleep",
        "1000",
    ]);
    let r = s.run(&["run", "-d", "--name", "webserver", "busybox", "true"]);
    assert_eq!(r.code, Some(125));
    assert_eq!(
        r.stderr,
        format!(
            "Error: Conflict. The container name \"/webserver\" is already in use by container \"{}\". You have to remove (or rename) that container to be able to reuse that name.\n",
            id.trim()
        )
    );
    let r = s.run(&["rm", "webserver"]);
    assert_eq!(r.code, Some(1));
    assert!(
        r.stderr.contains("You cannot remove a running container"),
        "{r:?}"
    );
    let r = s.run(&["rm", "nosuch"]);
    assert_eq!(r.stderr, "Error: No such container: nosuch\n");
    // Generated names look like Docker's.
    s.ok(&["run", "busybox", "true"]);
    let names = s.ok(&["ps", "-a", "--format", "{{.Names}}"]);
    assert!(
        names.lines().any(|n| n != "webserver" && n.contains('_')),
        "{names}"
    );
    let q = s.ok(&["ps", "-a", "-f", "status=exited", "-q"]);
    assert_eq!(q.lines().count(), 1);
    let q = s.ok(&["ps", "-a", "-f", "ancestor=busybox", "-q"]);
    assert_eq!(q.lines().count(), 2);
    // One key given twice: either value (Docker's OR); two keys: both (AND).
    let q = s.ok(&[
        "ps",
        "-a",
        "-f",
        "status=exited",
        "-f",
        "status=running",
        "-q",
    ]);
    assert_eq!(q.lines().count(), 2);
    let q = s.ok(&[
        "ps",
        "-a",
        "-f",
        "status=running",
        "-f",
        "name=webserver",
        "-q",
    ]);
    assert_eq!(q.lines().count(), 1);
    let r = s.run(&["ps", "-f", "status=sleeping"]);
    assert_eq!(r.stderr, "Error: invalid filter 'status=sleeping'\n");
}

#[test]
fn five_containers_at_once() {
    let s = setup(&default_driver());
    let mut ids = Vec::new();
    for i in 0..5 {
        let n = format!("c{i}");
        ids.push(s.ok(&[
            "run",
            "-d",
            "--name",
            &n,
            "busybox",
            "sh",
            "-c",
            &format!("echo {i} > /me; sleep 1000"),
        ]));
    }
    assert_eq!(s.ok(&["ps", "-q"]).lines().count(), 5);
    assert_eq!(
        mounts_under(s.root_path())
            .iter()
            .filter(|m| m.ends_with("rootfs"))
            .count(),
        5
    );
    for i in 0..5 {
        assert_eq!(
            s.ok(&["exec", &format!("c{i}"), "cat", "/me"]),
            format!("{i}\n")
        );
    }
    let all: Vec<&str> = ids.iter().map(|i| i.trim()).collect();
    let mut args = vec!["rm", "-f"];
    args.extend(all.iter());
    s.ok(&args);
    assert!(mounts_under(s.root_path()).is_empty());
    assert_eq!(s.ok(&["ps", "-aq"]), "");
}

#[test]
fn fault_supervisor_killed() {
    let s = setup(&default_driver());
    let id = s.ok(&["run", "-d", "--name", "victim", "busybox", "sleep", "1000"]);
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
    // SAFETY: signalling the supervisor this test started.
    unsafe { libc::kill(sup, libc::SIGKILL) };
    let gone = eventually(Duration::from_secs(10), || {
        (!std::path::Path::new(&format!("/proc/{sup}")).exists()).then_some(())
    });
    assert!(gone.is_some());
    assert!(
        ps_status(&s, "victim", true).starts_with("Exited (137)"),
        "{}",
        ps_status(&s, "victim", true)
    );
    assert!(
        !std::path::Path::new(&format!("/proc/{init}/cmdline")).exists()
            || std::fs::read(format!("/proc/{init}/cmdline"))
                .unwrap()
                .is_empty()
    );
    assert!(
        mounts_under(s.root_path()).is_empty(),
        "ps cleaned the dead supervisor's mount"
    );
    s.ok(&["rm", "victim"]);
}

#[test]
fn fault_immediate_exit_and_killed_cli() {
    let s = setup(&default_driver());
    s.ok(&[
        "run", "-d", "--name", "quick", "busybox", "sh", "-c", "exit 5",
    ]);
    assert_eq!(s.ok(&["wait", "quick"]), "5\n");
    assert!(ps_status(&s, "quick", true).starts_with("Exited (5)"));
    assert!(mounts_under(s.root_path()).is_empty());
    // Kill the CLI at various points of `run -d`: any mount left must belong to a listed
    // container, and removing every listed container must leave no mount.
    for delay in [0u64, 5, 20, 50] {
        let mut c = s.command(&["run", "-d", "busybox", "sleep", "1000"]);
        c.stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        let mut child = c.spawn().unwrap();
        std::thread::sleep(Duration::from_millis(delay));
        let _ = child.kill();
        let _ = child.wait();
    }
    std::thread::sleep(Duration::from_millis(500));
    let ids = s.ok(&["ps", "-aq", "--no-trunc"]);
    for m in mounts_under(s.root_path()) {
        let id = m
            .parent()
            .unwrap()
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned();
        assert!(ids.contains(&id), "mount {m:?} without a record");
    }
    for id in ids.split_whitespace() {
        s.ok(&["rm", "-f", id]);
    }
    assert!(mounts_under(s.root_path()).is_empty());
}

#[test]
fn image_stop_signal_and_resource_limits() {
    let s = Strata::new(env!("CARGO_BIN_EXE_strata")).with_driver(&default_driver());
    install_busybox(
        s.root_path(),
        "usr1:1",
        serde_json::json!({"StopSignal": "SIGUSR1"}),
    );
    let id = s.ok(&[
        "run",
        "-d",
        "--name",
        "lim",
        "--memory",
        "64m",
        "--pids-limit",
        "20",
        "--cpus",
        "0.5",
        "usr1:1",
        "sh",
        "-c",
        "trap 'echo got-usr1; exit 0' USR1; echo ready; while true; do sleep 0.1; done",
    ]);
    let id = id.trim();
    // The shell is PID 1: a signal that arrives before its trap is set is ignored. Wait for it.
    let ready = eventually(Duration::from_secs(30), || {
        (s.run(&["logs", "lim"]).stdout == "ready\n").then_some(())
    });
    assert!(ready.is_some(), "the container never set its trap");
    let cg = |ctrl: &str, file: &str| {
        std::fs::read_to_string(format!("/sys/fs/cgroup/{ctrl}/strata/{id}/{file}"))
            .map(|v| v.trim().to_string())
            .unwrap_or_default()
    };
    assert_eq!(
        cg("memory", "memory.limit_in_bytes"),
        (64u64 << 20).to_string()
    );
    assert_eq!(cg("pids", "pids.max"), "20");
    assert_eq!(cg("cpu", "cpu.cfs_quota_us"), "50000");
    let state: serde_json::Value = serde_json::from_slice(
        &std::fs::read(s.root_path().join("containers").join(id).join("state.json")).unwrap(),
    )
    .unwrap();
    let init = state["pid"].as_i64().unwrap().to_string();
    assert!(
        cg("pids", "cgroup.procs").lines().any(|p| p == init),
        "init is in the pids cgroup"
    );
    // stop sends the image's StopSignal (SIGUSR1), which the container traps and exits 0 on.
    s.ok(&["stop", "-t", "20", "lim"]);
    assert_eq!(s.ok(&["wait", "lim"]), "0\n");
    assert_eq!(s.ok(&["logs", "lim"]), "ready\ngot-usr1\n");
    s.ok(&["rm", "lim"]);
    assert!(!std::path::Path::new(&format!("/sys/fs/cgroup/pids/strata/{id}")).exists());
}

#[test]
fn network_modes() {
    let s = setup(&default_driver());
    let ifaces = |net: &str| {
        s.ok(&busybox_rm(
            &["--network", net],
            &[
                "sh",
                "-c",
                "tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' '",
            ],
        ))
    };
    assert_eq!(ifaces("private"), "lo\n");
    assert_eq!(ifaces("none"), "lo\n");
    let host_links = || -> std::collections::BTreeSet<String> {
        std::fs::read_to_string("/proc/net/dev")
            .unwrap()
            .lines()
            .skip(2)
            .filter_map(|l| l.split(':').next().map(|n| n.trim().to_string()))
            .collect()
    };
    // Other tests create and delete bridges and veths meanwhile: compare with the links that
    // existed before and after.
    let before = host_links();
    let seen: std::collections::BTreeSet<String> =
        ifaces("host").lines().map(str::to_string).collect();
    let after = host_links();
    assert!(
        before.intersection(&after).all(|l| seen.contains(l)),
        "{seen:?} vs {before:?}"
    );
    assert!(
        seen.iter().all(|l| before.contains(l)
            || after.contains(l)
            || l.starts_with("veth")
            || l.starts_with("strata")),
        "{seen:?}"
    );
    // Loopback works inside a private namespace: a server and a client in one container.
    let out = s.ok(&busybox_rm(
        &[],
        &[
            "sh",
            "-c",
            "httpd -p 127.0.0.1:8080 -h /www; wget -q -O - http://127.0.0.1:8080/",
        ],
    ));
    assert_eq!(out, INDEX_HTML);
    let r = s.run(&busybox_rm(&["--network", "none", "-p", "80"], &["true"]));
    assert_eq!(r.code, Some(125));
    assert!(r.stderr.contains("conflicting options"), "{r:?}");
}

#[test]
fn attached_cli_proxies_signals_and_one_supervisor_per_container() {
    let s = setup(&default_driver());
    let mut c = s.command(&[
        "run",
        "--name",
        "sig",
        "busybox",
        "sh",
        "-c",
        "trap 'echo got-term; exit 9' TERM; echo ready; while true; do sleep 0.1; done",
    ]);
    c.stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let child = c.spawn().unwrap();
    let ready = eventually(Duration::from_secs(20), || {
        (s.run(&["logs", "sig"]).stdout == "ready\n").then_some(())
    });
    assert!(ready.is_some());
    // A second start of a running container does not start a second supervisor.
    assert_eq!(s.ok(&["start", "sig"]), "sig\n");
    // SAFETY: signalling the CLI this test started.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let out = strata_testkit::container::wait_output(child, Duration::from_secs(30));
    assert_eq!(out.status.code(), Some(9), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "ready\ngot-term\n");
    assert!(mounts_under(s.root_path()).is_empty());
}

#[test]
fn bind_volumes() {
    let s = setup(&default_driver());
    let host = tempfile::tempdir().unwrap();
    std::fs::write(host.path().join("in"), "from host\n").unwrap();
    let rw = format!("{}:/data", host.path().display());
    let out = s.ok(&busybox_rm(
        &["-v", &rw],
        &["sh", "-c", "cat /data/in; echo from ctr > /data/out"],
    ));
    assert_eq!(out, "from host\n");
    assert_eq!(
        std::fs::read_to_string(host.path().join("out")).unwrap(),
        "from ctr\n"
    );
    let ro = format!("{}:/data:ro", host.path().display());
    let r = s.run(&busybox_rm(
        &["-v", &ro],
        &["sh", "-c", "cat /data/in; echo x > /data/nope"],
    ));
    assert_ne!(r.code, Some(0));
    assert!(r.stderr.contains("Read-only file system"), "{r:?}");
    assert!(!host.path().join("nope").exists());
    let r = s.run(&busybox_rm(
        &["-v", "/nonexistent-strata-src:/x"],
        &["true"],
    ));
    assert_eq!(r.code, Some(125), "{r:?}");
    assert!(
        r.stderr.contains("bind source path does not exist"),
        "{r:?}"
    );
    assert!(mounts_under(s.root_path()).is_empty());
    assert_eq!(s.ok(&["ps", "-aq"]), "");
}

#[test]
fn stdin_with_i_for_run_and_exec() {
    use std::io::Write as _;
    let s = setup(&default_driver());
    let feed = |args: &[&str], input: &str| {
        let mut c = s.command(args);
        c.stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let mut child = c.spawn().unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
        strata_testkit::container::wait_output(child, Duration::from_secs(30))
    };
    let out = feed(
        &[
            "run",
            "--rm",
            "-i",
            "busybox",
            "sh",
            "-c",
            "read x; echo got $x; cat",
        ],
        "line1\nrest\n",
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "got line1\nrest\n");
    assert_eq!(out.status.code(), Some(0));
    s.ok(&["run", "-d", "--name", "ib", "busybox", "sleep", "1000"]);
    let out = feed(&["exec", "-i", "ib", "sh", "-c", "tr a-z A-Z"], "shout\n");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "SHOUT\n");
    // Without -i the process gets no stdin (EOF at once).
    let out = feed(&["exec", "ib", "sh", "-c", "cat; echo done"], "ignored\n");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "done\n");
}

#[test]
fn inspect_finds_containers_first_then_images() {
    let s = setup(&default_driver());
    let r = s.run(&["run", "--name", "probe", "busybox", "sh", "-c", "exit 4"]);
    assert_eq!(r.code, Some(4), "{r:?}");
    let out = s.ok(&["inspect", "probe"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let c = &v[0];
    assert_eq!(c["Name"], "/probe", "{out}");
    assert_eq!(c["State"]["Status"], "exited", "{out}");
    assert_eq!(c["State"]["ExitCode"], 4, "{out}");
    let full = c["Id"].as_str().unwrap().to_string();
    assert_eq!(full.len(), 64);
    // by id prefix, with a template, and mixed with an image in one call
    let t = s.ok(&["inspect", "--format", "{{.State.ExitCode}}", &full[..12]]);
    assert_eq!(t, "4\n");
    let both = s.ok(&["inspect", "--format", "{{.Id}}", "probe", "busybox"]);
    let lines: Vec<&str> = both.lines().collect();
    assert_eq!(lines.len(), 2, "{both}");
    assert_eq!(lines[0], full);
    assert!(lines[1].starts_with("sha256:"), "{both}");
    // --type image skips containers; an unknown name is an error with exit 1
    let r = s.run(&["inspect", "--type", "image", "probe"]);
    assert_eq!(r.code, Some(1), "{r:?}");
    assert_eq!(r.stderr, "Error: No such image: probe\n");
    let r = s.run(&["inspect", "nosuch"]);
    assert_eq!(r.code, Some(1), "{r:?}");
    assert_eq!(r.stderr, "Error: No such object: nosuch\n");
    s.ok(&["rm", "probe"]);
}

/// The testkit's last-resort cleanup: aborting the FUSE connection of a container's mount makes
/// the mount answer ENOTCONN at once (nothing blocked on it can stay blocked), and the container
/// can still be removed with nothing left mounted.
#[test]
fn aborted_fuse_mount_fails_fast_and_is_still_removed() {
    if default_driver() != "fuse" {
        return;
    }
    let s = setup("fuse");
    s.ok(&["run", "-d", "--name", "stuck", "busybox", "sleep", "60"]);
    let fuse: Vec<_> = strata_testkit::mount::mounts()
        .into_iter()
        .filter(|m| m.mount_point.starts_with(s.root_path()) && m.fstype.starts_with("fuse"))
        .collect();
    assert_eq!(fuse.len(), 1, "one FUSE mount for the container: {fuse:?}");
    assert!(std::fs::read_dir(&fuse[0].mount_point).is_ok());
    abort_fuse_under(s.root_path());
    let err = std::fs::read_dir(&fuse[0].mount_point).expect_err("aborted mount still answers");
    assert_eq!(err.raw_os_error(), Some(libc::ENOTCONN), "{err}");
    let r = s.run(&["rm", "-f", "stuck"]);
    assert!(r.ok(), "{r:?}");
    assert!(mounts_under(s.root_path()).is_empty());
    assert_eq!(s.ok(&["ps", "-aq"]), "");
}

/// `run`/`create` flags that describe the container: labels (over the image's), `--stop-signal`,
/// `--cidfile`, `--expose` with `-P`, `--pull never|always`.
#[test]
fn create_labels_stop_signal_cidfile_expose_and_pull_policy() {
    let s = setup(&default_driver());
    install_busybox(
        s.root_path(),
        "labelled:1",
        serde_json::json!({"Labels": {"from": "image", "tier": "x"}}),
    );
    let dir = tempfile::tempdir().unwrap();
    let label_file = dir.path().join("labels");
    std::fs::write(&label_file, "# team\nteam=core\n\n").unwrap();
    let cid = dir.path().join("cid");
    let cid_s = cid.to_str().unwrap();
    let id = s.ok(&[
        "create",
        "--name",
        "c1",
        "-l",
        "tier=web",
        "--label",
        "solo",
        "--label-file",
        label_file.to_str().unwrap(),
        "--stop-signal",
        "SIGUSR1",
        "--cidfile",
        cid_s,
        "--expose",
        "8000-8001",
        "-P",
        "labelled:1",
        "sh",
        "-c",
        "trap 'echo got-usr1; exit 0' USR1; while :; do sleep 0.1; done",
    ]);
    assert_eq!(std::fs::read_to_string(&cid).unwrap(), id.trim());
    let v: serde_json::Value = serde_json::from_str(&s.ok(&["inspect", "c1"])).unwrap();
    assert_eq!(
        v[0]["Config"]["Labels"],
        serde_json::json!({"from": "image", "solo": "", "team": "core", "tier": "web"})
    );
    assert_eq!(v[0]["Config"]["StopSignal"], "SIGUSR1");
    assert_eq!(
        s.ok(&["ps", "-a", "-f", "label=tier=web", "--format", "{{.Names}}"]),
        "c1\n"
    );
    assert_eq!(s.ok(&["ps", "-aq", "-f", "label=tier=db"]), "");
    assert_eq!(
        s.ok(&["ps", "-a", "--format", "{{.Labels}}"]),
        "from=image,solo=,team=core,tier=web\n"
    );
    // The cidfile is claimed: a second create refuses it and makes nothing.
    let r = s.run(&["create", "--cidfile", cid_s, "busybox", "true"]);
    assert_eq!(r.code, Some(125), "{r:?}");
    assert!(r.stderr.contains("Container ID file found"), "{r:?}");
    assert_eq!(s.ok(&["ps", "-aq"]).lines().count(), 1);

    // -P publishes the exposed ports; stop sends the stop signal.
    s.ok(&["start", "c1"]);
    let ports = s.ok(&["port", "c1"]);
    assert!(
        ports.contains("8000/tcp -> ") && ports.contains("8001/tcp -> "),
        "{ports}"
    );
    s.ok(&["stop", "-t", "10", "c1"]);
    assert_eq!(s.ok(&["logs", "c1"]), "got-usr1\n");
    assert_eq!(
        s.ok(&["inspect", "-f", "{{.State.ExitCode}}", "c1"]).trim(),
        "0"
    );

    // Sizes: the writable layer and the whole root fs (image + writable layer).
    s.ok(&[
        "run",
        "--name",
        "sized",
        "busybox",
        "sh",
        "-c",
        "head -c 50000 /dev/zero > /big",
    ]);
    let v: serde_json::Value = serde_json::from_str(&s.ok(&["inspect", "-s", "sized"])).unwrap();
    let rw = v[0]["SizeRw"].as_u64().unwrap();
    let root = v[0]["SizeRootFs"].as_u64().unwrap();
    assert!((50_000..60_000).contains(&rw), "{rw}");
    assert!(root > rw + 1_000_000, "{root}");
    let size = s.ok(&[
        "ps",
        "-a",
        "-s",
        "-f",
        "name=sized",
        "--format",
        "{{.Size}}",
    ]);
    assert!(
        size.starts_with("5") && size.contains("kB (virtual "),
        "{size}"
    );
    let table = s.ok(&["ps", "-a", "-s", "-f", "name=sized"]);
    assert!(table.lines().next().unwrap().ends_with("SIZE"), "{table}");
    assert!(s.ok(&["inspect", "sized"]).find("SizeRw").is_none());
    s.ok(&["rm", "sized"]);

    // stop --signal overrides the container's stop signal.
    s.ok(&[
        "run",
        "-d",
        "--name",
        "c2",
        "busybox",
        "sh",
        "-c",
        "trap 'echo got-usr2; exit 3' USR2; while :; do sleep 0.1; done",
    ]);
    assert_eq!(s.ok(&["stop", "-s", "USR2", "-t", "10", "c2"]), "c2\n");
    assert_eq!(s.ok(&["logs", "c2"]), "got-usr2\n");
    assert_eq!(
        s.ok(&["inspect", "-f", "{{.State.ExitCode}}", "c2"]).trim(),
        "3"
    );
    s.ok(&["rm", "c2"]);

    // --pull never: a missing image is an error, nothing is pulled; bad values are refused.
    let r = s.run(&["run", "--pull", "never", "nosuch"]);
    assert_eq!(r.code, Some(125), "{r:?}");
    assert!(r.stderr.contains("No such image: nosuch:latest"), "{r:?}");
    assert!(!r.stderr.contains("Unable to find image"), "{r:?}");
    let r = s.run(&["run", "--pull", "sometimes", "busybox", "true"]);
    assert_eq!(r.code, Some(125), "{r:?}");
    assert!(
        r.stderr.contains("invalid pull option: 'sometimes'"),
        "{r:?}"
    );
    // --pull always pulls even a local image (here from a registry that is not there: fails,
    // where the default uses the local copy).
    install_busybox(s.root_path(), "127.0.0.1:1/local:1", serde_json::json!({}));
    assert_eq!(
        s.ok(&["run", "--rm", "127.0.0.1:1/local:1", "echo", "local"]),
        "local\n"
    );
    let r = s.run(&[
        "run",
        "--rm",
        "--pull",
        "always",
        "127.0.0.1:1/local:1",
        "true",
    ]);
    assert_eq!(r.code, Some(125), "{r:?}");
    let r = s.run(&["run", "--stop-signal", "NOPE", "busybox", "true"]);
    assert_eq!(r.code, Some(125), "{r:?}");
    assert!(r.stderr.contains("invalid signal: NOPE"), "{r:?}");
    assert_eq!(s.ok(&["ps", "-aq"]).lines().count(), 1);
}
