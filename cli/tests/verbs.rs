//! End-to-end tests of the everyday verbs: `create`, the `container` group, `rename`,
//! `pause`/`unpause`, `top`, `stats`, `export`, `cp` (both directions, `-` streams, stopped
//! containers, the CVE-2018-15664 symlink-exchange race), concurrent `rm -f`.

mod containers_common;

use std::io::{Read, Write};
use std::process::Stdio;
use std::time::Duration;

use containers_common::{busybox_rm, default_driver, ps_status, setup};
use strata_testkit::container::{eventually, mounts_under};

fn tar_names(data: &[u8]) -> Vec<String> {
    let mut ar = tar::Archive::new(data);
    ar.entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().to_string_lossy().into_owned())
        .collect()
}

#[test]
fn create_container_group_rename_pause_top_stats_export() {
    let s = setup(&default_driver());
    let id = s.ok(&["create", "--name", "c1", "busybox", "sleep", "300"]);
    let id = id.trim();
    assert!(
        id.len() == 64 && id.chars().all(|c| c.is_ascii_hexdigit()),
        "{id}"
    );
    assert_eq!(ps_status(&s, "c1", true), "Created");
    assert_eq!(s.ok(&["container", "ls", "-aq"]).trim(), &id[..12]);
    assert_eq!(s.ok(&["start", "c1"]), "c1\n");
    assert!(
        ps_status(&s, "c1", true).starts_with("Up "),
        "{}",
        ps_status(&s, "c1", true)
    );

    // rename: Docker's messages for the two refusals.
    s.ok(&["container", "rename", "c1", "web"]);
    assert_eq!(s.ok(&["ps", "--format", "{{.Names}}"]), "web\n");
    let r = s.run(&["rename", "web", "web"]);
    assert_eq!(r.code, Some(1));
    assert_eq!(
        r.stderr,
        "Error: Renaming a container with the same name as its current name\n"
    );
    let r = s.run(&["rename", "nope", "x1"]);
    assert_eq!(r.stderr, "Error: No such container: nope\n");

    // top: ps -ef columns, the container's sleep listed, nothing of the host's.
    let top = s.ok(&["top", "web"]);
    let mut lines = top.lines();
    let header: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        ["UID", "PID", "PPID", "C", "STIME", "TTY", "TIME", "CMD"]
    );
    let rows: Vec<&str> = lines.collect();
    assert_eq!(rows.len(), 1, "{top}");
    assert!(rows[0].ends_with("sleep 300"), "{top}");
    let top = s.ok(&["container", "top", "web", "-o", "pid,comm"]);
    assert!(
        top.starts_with("    PID COMMAND\n") || top.contains("COMMAND"),
        "{top}"
    );
    assert!(top.contains("sleep"), "{top}");

    // pause / unpause through the freezer.
    assert_eq!(s.ok(&["pause", "web"]), "web\n");
    assert!(
        ps_status(&s, "web", true).ends_with("(Paused)"),
        "{}",
        ps_status(&s, "web", true)
    );
    assert_eq!(
        s.ok(&["inspect", "-f", "{{.State.Paused}}", "web"]),
        "true\n"
    );
    let r = s.run(&["exec", "web", "true"]);
    assert_eq!(
        r.stderr,
        format!("Error: Container {id} is paused, unpause the container before exec\n")
    );
    let r = s.run(&["pause", "web"]);
    assert_eq!(r.code, Some(1));
    assert!(r.stderr.contains("is already paused"), "{r:?}");
    let stat = std::fs::read_to_string(format!(
        "/proc/{}/stat",
        s.ok(&["inspect", "-f", "{{.State.Pid}}", "web"]).trim()
    ))
    .unwrap();
    let state = stat.rsplit_once(") ").unwrap().1.chars().next().unwrap();
    assert_eq!(state, 'D', "a frozen task sleeps uninterruptibly: {stat}");
    assert_eq!(s.ok(&["unpause", "web"]), "web\n");
    assert!(!ps_status(&s, "web", true).contains("Paused"));

    // stats --no-stream: Docker's columns; one row for the running container.
    let st = s.ok(&["stats", "--no-stream"]);
    let mut lines = st.lines();
    let header: Vec<&str> = lines
        .next()
        .unwrap()
        .split("  ")
        .filter(|x| !x.is_empty())
        .map(str::trim)
        .collect();
    assert_eq!(
        header,
        [
            "CONTAINER ID",
            "NAME",
            "CPU %",
            "MEM USAGE / LIMIT",
            "MEM %",
            "NET I/O",
            "BLOCK I/O",
            "PIDS"
        ]
    );
    let row = lines.next().unwrap();
    assert!(
        row.starts_with(&id[..12]) && row.contains("web") && row.trim_end().ends_with('1'),
        "{st}"
    );
    let f = s.ok(&[
        "stats",
        "--no-stream",
        "--format",
        "{{.Name}} {{.PIDs}} {{.MemUsage}}",
    ]);
    assert!(f.starts_with("web 1 ") && f.contains("iB / "), "{f}");

    // export, running and stopped: the rootfs as a tar (busybox, the init layer's mount targets).
    let t = tempfile::tempdir().unwrap();
    let out = t.path().join("web.tar");
    s.ok(&["export", "-o", out.to_str().unwrap(), "web"]);
    let names = tar_names(&std::fs::read(&out).unwrap());
    assert!(names.iter().any(|n| n == "bin/busybox"), "{names:?}");
    assert!(names.iter().any(|n| n == "etc/hosts"), "{names:?}");
    s.ok(&["exec", "web", "sh", "-c", "echo hi > /made-here"]);
    s.ok(&["stop", "-t", "0", "web"]);
    let r = s.command(&["container", "export", "web"]).output().unwrap();
    assert!(r.status.success(), "{r:?}");
    let names = tar_names(&r.stdout);
    assert!(names.iter().any(|n| n == "made-here"), "{names:?}");
    assert!(
        mounts_under(s.root_path()).is_empty(),
        "the export mount is gone"
    );
    let r = s.run(&["export", "-o", "/dev/null", "web"]);
    assert_eq!(r.code, Some(1));
    assert!(
        r.stderr
            .contains("must be a directory or a regular file: got a device"),
        "{r:?}"
    );

    // container prune removes the stopped container; image pull is an alias.
    let r = s.run(&["container", "prune", "-f"]);
    assert!(r.ok(), "{r:?}");
    assert!(
        r.stdout.starts_with(&format!(
            "Deleted Containers:\n{id}\n\nTotal reclaimed space: "
        )),
        "{r:?}"
    );
    assert_eq!(s.ok(&["ps", "-aq"]), "");
    // container prune --filter: label= takes only what has the label, label! spares what has
    // it, until= spares what is newer; a bad key or time is refused.
    s.ok(&[
        "create", "--name", "tagged", "-l", "keep=yes", "busybox", "true",
    ]);
    s.ok(&["create", "--name", "plain", "busybox", "true"]);
    let r = s.run(&["container", "prune", "-f", "--filter", "label=keep=yes"]);
    assert!(r.stdout.starts_with("Deleted Containers:\n"), "{r:?}");
    assert_eq!(s.ok(&["ps", "-a", "--format", "{{.Names}}"]), "plain\n");
    s.ok(&[
        "create", "--name", "tagged", "-l", "keep=yes", "busybox", "true",
    ]);
    let r = s.run(&["container", "prune", "-f", "--filter", "until=1h"]);
    assert!(r.ok() && !r.stdout.contains("Deleted Containers"), "{r:?}");
    let r = s.run(&["container", "prune", "-f", "--filter", "label!=keep"]);
    assert!(r.ok(), "{r:?}");
    assert_eq!(s.ok(&["ps", "-a", "--format", "{{.Names}}"]), "tagged\n");
    s.ok(&["rm", "tagged"]);
    let r = s.run(&["container", "prune", "-f", "--filter", "color=red"]);
    assert_eq!(r.stderr, "Error: invalid filter 'color'\n");
    let r = s.run(&["container", "prune", "-f", "--filter", "until=soon"]);
    assert_eq!(r.stderr, "Error: invalid filter 'until=soon'\n");
    // system prune takes the same filters for containers (and images).
    s.ok(&[
        "create", "--name", "tagged", "-l", "keep=yes", "busybox", "true",
    ]);
    s.ok(&["create", "--name", "plain", "busybox", "true"]);
    let r = s.run(&["system", "prune", "-f", "--filter", "label=keep=yes"]);
    assert!(r.stdout.starts_with("Deleted Containers:\n"), "{r:?}");
    assert_eq!(s.ok(&["ps", "-a", "--format", "{{.Names}}"]), "plain\n");
    s.ok(&["rm", "plain"]);
    let r = s.run(&["system", "prune", "-f", "--filter", "color=red"]);
    assert_eq!(r.stderr, "Error: invalid filter 'color'\n");
    let r = s.run(&["image", "pull", "--help"]);
    assert!(r.ok(), "{r:?}");
}

#[test]
fn cp_both_directions_running_and_stopped() {
    let s = setup(&default_driver());
    s.ok(&["run", "-d", "--name", "c1", "busybox", "sh", "-c", "mkdir -p /data/sub && echo one > /data/a && echo two > /data/sub/b && ln -sf /etc/passwd /data/link; sleep 300"]);
    eventually(Duration::from_secs(20), || {
        s.run(&["exec", "c1", "test", "-L", "/data/link"])
            .ok()
            .then_some(())
    })
    .expect("container set up its files");
    let t = tempfile::tempdir().unwrap();
    let host = t.path();

    // Host → container: a file, with Docker's message (tar bytes, decimal units).
    std::fs::write(host.join("in.txt"), "hello\n").unwrap();
    let r = s.run(&[
        "cp",
        host.join("in.txt").to_str().unwrap(),
        "c1:/tmp/in.txt",
    ]);
    assert!(r.ok(), "{r:?}");
    assert_eq!(r.stderr, "Successfully copied 2.05kB to c1:/tmp/in.txt\n");
    assert_eq!(s.ok(&["exec", "c1", "cat", "/tmp/in.txt"]), "hello\n");
    assert_eq!(
        s.ok(&["exec", "c1", "stat", "-c", "%u:%g %a", "/tmp/in.txt"])
            .trim(),
        "0:0 644"
    );

    // Container → host: a directory into an existing dir, into a new name, `/.` contents.
    s.ok(&["cp", "c1:/data", host.to_str().unwrap()]);
    assert_eq!(
        std::fs::read_to_string(host.join("data/sub/b")).unwrap(),
        "two\n"
    );
    assert_eq!(
        std::fs::read_link(host.join("data/link")).unwrap().to_str(),
        Some("/etc/passwd")
    );
    s.ok(&["cp", "c1:/data", host.join("renamed").to_str().unwrap()]);
    assert_eq!(
        std::fs::read_to_string(host.join("renamed/a")).unwrap(),
        "one\n"
    );
    std::fs::create_dir(host.join("contents")).unwrap();
    s.ok(&["cp", "c1:/data/.", host.join("contents").to_str().unwrap()]);
    assert_eq!(
        std::fs::read_to_string(host.join("contents/sub/b")).unwrap(),
        "two\n"
    );
    // -L follows the link (to the container's own passwd, never the host's).
    s.ok(&[
        "cp",
        "-L",
        "c1:/data/link",
        host.join("pw").to_str().unwrap(),
    ]);
    let container_pw = s.ok(&["exec", "c1", "cat", "/etc/passwd"]);
    assert_eq!(
        std::fs::read_to_string(host.join("pw")).unwrap(),
        container_pw
    );
    // A missing source.
    let r = s.run(&["cp", "c1:/nope", host.to_str().unwrap()]);
    assert_eq!(r.code, Some(1));
    assert_eq!(
        r.stderr,
        "Error: Could not find the file /nope in container c1\n"
    );
    // A device destination is refused, not replaced.
    let r = s.run(&["cp", "c1:/data/a", "/dev/null"]);
    assert_eq!(r.code, Some(1), "{r:?}");
    assert!(std::fs::metadata("/dev/null")
        .unwrap()
        .file_type()
        .is_char_device_like());

    // `-` streams: a tar out, a tar in.
    let out = s.command(&["cp", "c1:/data/sub", "-"]).output().unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(tar_names(&out.stdout), ["sub/", "sub/b"]);
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(6);
    h.set_mode(0o600);
    h.set_entry_type(tar::EntryType::Regular);
    b.append_data(&mut h, "streamed/x", &b"piped\n"[..])
        .unwrap();
    let data = b.into_inner().unwrap();
    let mut child = s
        .command(&["cp", "-", "c1:/tmp"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(&data).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(s.ok(&["exec", "c1", "cat", "/tmp/streamed/x"]), "piped\n");

    // A stopped container: copies in and out through a mount made for the copy; the change is
    // in its upper layer (diff shows it) and the container starts afterwards.
    s.ok(&["stop", "-t", "0", "c1"]);
    s.ok(&[
        "cp",
        host.join("in.txt").to_str().unwrap(),
        "c1:/stopped.txt",
    ]);
    s.ok(&[
        "cp",
        "c1:/stopped.txt",
        host.join("back.txt").to_str().unwrap(),
    ]);
    assert_eq!(
        std::fs::read_to_string(host.join("back.txt")).unwrap(),
        "hello\n"
    );
    assert!(s.ok(&["diff", "c1"]).contains("A /stopped.txt"));
    assert!(mounts_under(s.root_path()).is_empty());
    s.ok(&["start", "c1"]);
    assert_eq!(s.ok(&["exec", "c1", "cat", "/stopped.txt"]), "hello\n");
}

trait CharDev {
    fn is_char_device_like(&self) -> bool;
}
impl CharDev for std::fs::FileType {
    fn is_char_device_like(&self) -> bool {
        use std::os::unix::fs::FileTypeExt;
        self.is_char_device()
    }
}

/// CVE-2018-15664: the container swaps a path between a directory and a symlink to `/` in a
/// loop while `cp` runs, in both directions. Nothing outside the container's root may be read
/// or written.
#[test]
fn cp_symlink_exchange_race_stays_in_the_root() {
    let s = setup(&default_driver());
    let host_dir = tempfile::Builder::new()
        .prefix("strata-cve-")
        .tempdir()
        .unwrap();
    let uniq = host_dir
        .path()
        .file_name()
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    // The host has /tmp/<uniq>/secret; the container its own copy of that path, so the escape
    // would be visible as which file was read.
    std::fs::write(host_dir.path().join("secret"), "HOST\n").unwrap();
    let script = format!(
        "mkdir -p /tmp/{uniq} /w/x/tmp/{uniq} && echo CTR > /tmp/{uniq}/secret && \
         echo CTR > /w/x/tmp/{uniq}/secret && \
         while true; do mv /w/x /w/d; ln -s / /w/x; rm /w/x; mv /w/d /w/x; done"
    );
    s.ok(&[
        "run", "-d", "--name", "racer", "busybox", "sh", "-c", &script,
    ]);
    let t = tempfile::tempdir().unwrap();
    let mut copied = 0;
    for i in 0..40 {
        let dest = t.path().join(format!("got{i}"));
        let r = s.run(&[
            "cp",
            &format!("racer:/w/x/tmp/{uniq}/secret"),
            dest.to_str().unwrap(),
        ]);
        if r.ok() {
            copied += 1;
            assert_eq!(
                std::fs::read_to_string(&dest).unwrap(),
                "CTR\n",
                "read outside the root"
            );
        }
        let src = t.path().join("planted");
        std::fs::write(&src, "x").unwrap();
        let _ = s.run(&[
            "cp",
            src.to_str().unwrap(),
            &format!("racer:/w/x/tmp/{uniq}/planted"),
        ]);
        assert!(
            !host_dir.path().join("planted").exists(),
            "wrote outside the root"
        );
    }
    assert!(copied > 0, "some copies found the file");
    let mut secret = String::new();
    std::fs::File::open(host_dir.path().join("secret"))
        .unwrap()
        .read_to_string(&mut secret)
        .unwrap();
    assert_eq!(secret, "HOST\n");
}

/// Four concurrent `rm -f` of one container: exactly one removes it, the others report
/// `No such container`, as Docker.
#[test]
fn concurrent_rm_force_one_wins() {
    let s = setup(&default_driver());
    s.ok(&["run", "-d", "--name", "same", "busybox", "sleep", "300"]);
    let children: Vec<_> = (0..4)
        .map(|_| {
            s.command(&["rm", "-f", "same"])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let outs: Vec<_> = children
        .into_iter()
        .map(|c| c.wait_with_output().unwrap())
        .collect();
    let won: Vec<_> = outs.iter().filter(|o| o.status.success()).collect();
    assert_eq!(won.len(), 1, "{outs:?}");
    assert_eq!(won[0].stdout, b"same\n");
    for o in outs.iter().filter(|o| !o.status.success()) {
        assert_eq!(o.status.code(), Some(1));
        assert_eq!(
            String::from_utf8_lossy(&o.stderr),
            "Error: No such container: same\n"
        );
        assert!(o.stdout.is_empty());
    }
    assert_eq!(s.ok(&["ps", "-aq"]), "");
}

/// `attach` to a detached `-i` container: its later output, our input into its stdin, and its
/// exit code at the end.
#[test]
fn attach_streams_output_and_stdin() {
    let s = setup(&default_driver());
    s.ok(&[
        "run",
        "-d",
        "-i",
        "--name",
        "echoer",
        "busybox",
        "sh",
        "-c",
        "echo before; while read l; do [ \"$l\" = quit ] && exit 3; echo \"got $l\"; done",
    ]);
    let r = s.run(&["attach", "nope"]);
    assert_eq!(r.stderr, "Error: No such container: nope\n");
    let mut child = s
        .command(&["attach", "echoer"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    // Until attach is connected, lines may be read by nobody: send until one is answered.
    let mut stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut all = String::new();
        let _ = stdout.read_to_string(&mut all);
        all
    });
    std::thread::sleep(Duration::from_millis(500));
    stdin.write_all(b"hello\n").unwrap();
    std::thread::sleep(Duration::from_millis(500));
    stdin.write_all(b"quit\n").unwrap();
    let status = strata_testkit::container::wait_output(child, Duration::from_secs(30)).status;
    let out = reader.join().unwrap();
    assert_eq!(status.code(), Some(3), "{out}");
    assert_eq!(out, "got hello\n", "only output after attaching");
    let r = s.run(&["attach", "echoer"]);
    assert_eq!(r.code, Some(1));
    assert_eq!(
        r.stderr,
        "Error: You cannot attach to a stopped container, start it first\n"
    );
}

/// `--restart on-failure:3` with a process that always exits 1: restarted three times (Docker's
/// backoff), then left exited; `always` is cancelled by `stop`.
#[test]
fn restart_policies() {
    let s = setup(&default_driver());
    s.ok(&[
        "run",
        "-d",
        "--name",
        "fails",
        "--restart",
        "on-failure:3",
        "busybox",
        "sh",
        "-c",
        "echo run; exit 1",
    ]);
    let done = eventually(Duration::from_secs(30), || {
        let out = s.ok(&[
            "inspect",
            "-f",
            "{{.RestartCount}} {{.State.Status}}",
            "fails",
        ]);
        (out.trim() == "3 exited").then_some(())
    });
    assert!(
        done.is_some(),
        "{}",
        s.ok(&[
            "inspect",
            "-f",
            "{{.RestartCount}} {{.State.Status}}",
            "fails"
        ])
    );
    // Nothing restarts it any more: the supervisor is gone.
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        s.ok(&[
            "inspect",
            "-f",
            "{{.RestartCount}} {{.State.ExitCode}}",
            "fails"
        ])
        .trim(),
        "3 1"
    );
    assert_eq!(s.ok(&["logs", "fails"]), "run\nrun\nrun\nrun\n");

    let r = s.run(&["run", "--rm", "--restart", "always", "busybox", "true"]);
    assert_eq!(r.code, Some(125));
    assert_eq!(r.stderr, "Error: Conflicting options: --restart and --rm\n");
    let r = s.run(&["run", "--restart", "sometimes", "busybox", "true"]);
    assert_eq!(r.code, Some(125));
    assert!(
        r.stderr
            .contains("invalid restart policy format: sometimes"),
        "{r:?}"
    );

    s.ok(&[
        "run",
        "-d",
        "--name",
        "loops",
        "--restart",
        "always",
        "busybox",
        "sh",
        "-c",
        "sleep 0.2",
    ]);
    eventually(Duration::from_secs(30), || {
        let n: u32 = s
            .ok(&["inspect", "-f", "{{.RestartCount}}", "loops"])
            .trim()
            .parse()
            .ok()?;
        (n >= 2).then_some(())
    })
    .expect("always restarts");
    s.ok(&["stop", "-t", "1", "loops"]);
    let n = s.ok(&["inspect", "-f", "{{.RestartCount}}", "loops"]);
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        s.ok(&[
            "inspect",
            "-f",
            "{{.RestartCount}} {{.State.Status}}",
            "loops"
        ]),
        format!("{} exited\n", n.trim())
    );
}

/// `--init`: the command runs as a child of a minimal pid 1 that forwards signals (so `stop`
/// ends a `sleep` with SIGTERM instead of waiting for SIGKILL) and reaps orphans.
#[test]
fn init_reaps_and_forwards_signals() {
    let s = setup(&default_driver());
    let out = s.ok(&busybox_rm(
        &["--init"],
        &["sh", "-c", "echo $$; cat /proc/1/cmdline | tr '\\0' ' '"],
    ));
    let mut lines = out.lines();
    assert_ne!(lines.next(), Some("1"), "the command is not pid 1: {out}");
    // Orphans are reaped: a grandchild whose parent exited leaves no zombie.
    let out = s.ok(&busybox_rm(
        &["--init"],
        &[
            "sh",
            "-c",
            "(sleep 0.2 &); sleep 1; ps -o stat | grep -c '^Z' || true",
        ],
    ));
    assert_eq!(out.trim(), "0", "{out}");
    // Exit code and signal forwarding.
    let r = s.run(&["run", "--rm", "--init", "busybox", "sh", "-c", "exit 7"]);
    assert_eq!(r.code, Some(7));
    s.ok(&[
        "run", "-d", "--init", "--name", "sleeper", "busybox", "sleep", "300",
    ]);
    s.ok(&["stop", "-t", "20", "sleeper"]);
    assert_eq!(
        s.ok(&["inspect", "-f", "{{.State.ExitCode}}", "sleeper"])
            .trim(),
        "143"
    );
    let r = s.run(&busybox_rm(&["--init", "--runtime", "runc"], &["true"]));
    assert_eq!(r.code, Some(125));
}

/// `update`: limits reach a running container's cgroups at once (every process of it, in
/// controllers it had no limit in before) and its record; a new restart policy is what the
/// supervisor follows at the next exit; Docker's refusals change nothing.
#[test]
fn update_limits_live_and_restart_policy() {
    let s = setup(&default_driver());
    let id = s.ok(&[
        "run",
        "-d",
        "--name",
        "up",
        "busybox",
        "sh",
        "-c",
        "sleep 1000 & echo ready; wait",
    ]);
    let id = id.trim().to_string();
    eventually(Duration::from_secs(30), || {
        (s.run(&["logs", "up"]).stdout == "ready\n").then_some(())
    })
    .expect("the container never started its child");
    let cg = |ctrl: &str, file: &str| {
        std::fs::read_to_string(format!("/sys/fs/cgroup/{ctrl}/strata/{id}/{file}"))
            .map(|v| v.trim().to_string())
            .unwrap_or_default()
    };
    assert_eq!(
        cg("pids", "pids.max"),
        "",
        "no pids cgroup before the update"
    );
    let out = s.ok(&[
        "update",
        "--memory",
        "64m",
        // Docker's rule: no memory limit before means no memory plus swap either (0), and a
        // memory limit above that needs a new one with it.
        "--memory-swap",
        "128m",
        "--pids-limit",
        "20",
        "--cpus",
        "0.5",
        "up",
    ]);
    assert_eq!(out, "up\n");
    assert_eq!(
        cg("memory", "memory.limit_in_bytes"),
        (64u64 << 20).to_string()
    );
    assert_eq!(cg("pids", "pids.max"), "20");
    assert_eq!(cg("cpu", "cpu.cfs_quota_us"), "50000");
    // Both the shell and its `sleep` child moved in (not only the init).
    let procs = cg("pids", "cgroup.procs");
    assert_eq!(procs.lines().count(), 2, "{procs:?}");
    assert_eq!(cg("pids", "pids.current"), "2");
    // A process exec'd afterwards lands there too.
    assert_eq!(
        s.ok(&[
            "exec",
            "up",
            "sh",
            "-c",
            "cat /proc/self/cgroup | grep -c strata/"
        ])
        .trim()
        .parse::<u32>()
        .map(|n| n >= 3),
        Ok(true)
    );
    assert_eq!(
        s.ok(&[
            "inspect",
            "-f",
            "{{.HostConfig.Memory}} {{.HostConfig.NanoCpus}} {{.HostConfig.PidsLimit}}",
            "up"
        ]),
        "67108864 500000000 20\n"
    );
    // Unset flags keep their values.
    s.ok(&["container", "update", "--pids-limit", "30", "up"]);
    assert_eq!(cg("pids", "pids.max"), "30");
    assert_eq!(
        s.ok(&[
            "inspect",
            "-f",
            "{{.HostConfig.Memory}} {{.HostConfig.PidsLimit}}",
            "up"
        ]),
        "67108864 30\n"
    );

    // No flag, an unknown container among known ones: Docker's messages and exit codes.
    let r = s.run(&["update", "up"]);
    assert_eq!(r.code, Some(1));
    assert_eq!(
        r.stderr,
        "Error: you must provide one or more flags when using this command\n"
    );
    let r = s.run(&["update", "--pids-limit", "40", "nosuch", "up"]);
    assert_eq!(r.code, Some(1));
    assert_eq!(r.stdout, "up\n");
    assert!(r.stderr.contains("No such container: nosuch"), "{r:?}");
    assert_eq!(cg("pids", "pids.max"), "40");
    s.ok(&["rm", "-f", "up"]);

    // A restart policy set on a created container is the one its supervisor follows.
    s.ok(&[
        "create",
        "--name",
        "later",
        "busybox",
        "sh",
        "-c",
        "echo run; exit 3",
    ]);
    assert_eq!(
        s.ok(&["update", "--restart", "on-failure:2", "later"]),
        "later\n"
    );
    assert_eq!(
        s.ok(&[
            "inspect",
            "-f",
            "{{.HostConfig.RestartPolicy.Name}} {{.HostConfig.RestartPolicy.MaximumRetryCount}}",
            "later"
        ]),
        "on-failure 2\n"
    );
    s.ok(&["start", "later"]);
    let done = eventually(Duration::from_secs(30), || {
        let out = s.ok(&[
            "inspect",
            "-f",
            "{{.RestartCount}} {{.State.Status}}",
            "later",
        ]);
        // Between two runs the record briefly reads `exited` with the next count: the third
        // run's output is what says it ran.
        (out.trim() == "2 exited" && s.ok(&["logs", "later"]) == "run\nrun\nrun\n").then_some(())
    });
    assert!(done.is_some(), "{}", s.ok(&["inspect", "later"]));
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        s.ok(&[
            "inspect",
            "-f",
            "{{.RestartCount}} {{.State.Status}}",
            "later"
        ]),
        "2 exited\n",
        "no restart beyond on-failure:2"
    );
    assert_eq!(s.ok(&["logs", "later"]), "run\nrun\nrun\n");

    // --rm containers keep "no": refused in Docker's words, the record unchanged.
    s.ok(&["create", "--rm", "--name", "gone", "busybox", "true"]);
    let full = s.ok(&["inspect", "-f", "{{.Id}}", "gone"]);
    let r = s.run(&["update", "--restart", "always", "gone"]);
    assert_eq!(r.code, Some(1));
    assert_eq!(
        r.stderr,
        format!(
            "Error: Cannot update container {}: Restart policy cannot be updated because AutoRemove is enabled for the container\n",
            full.trim()
        )
    );
    assert_eq!(
        s.ok(&[
            "inspect",
            "-f",
            "{{.HostConfig.RestartPolicy.Name}}",
            "gone"
        ]),
        "no\n"
    );
    s.ok(&["rm", "-f", "later", "gone"]);
}

/// `exec --privileged`: the command gets every capability (so it can do what the container's
/// own processes cannot, e.g. change a link of the container's network namespace), while the
/// container's seccomp filter still applies (Docker's exec through runc).
#[test]
fn exec_privileged_gets_every_capability() {
    let s = setup(&default_driver());
    s.ok(&["run", "-d", "--name", "px", "busybox", "sleep", "1000"]);
    let status = |privileged: bool| {
        let mut a = vec!["exec"];
        if privileged {
            a.push("--privileged");
        }
        a.extend([
            "px",
            "grep",
            "-E",
            "^(CapEff|CapBnd|Seccomp):",
            "/proc/self/status",
        ]);
        s.ok(&a)
    };
    assert_eq!(
        status(false),
        "CapEff:\t00000000a80425fb\nCapBnd:\t00000000a80425fb\nSeccomp:\t2\n"
    );
    // Every capability the caller can hand on: its own bounding set.
    let all = std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("CapBnd:\t").map(str::to_string))
        .unwrap();
    assert_ne!(all, "00000000a80425fb");
    assert_eq!(
        status(true),
        format!("CapEff:\t{all}\nCapBnd:\t{all}\nSeccomp:\t2\n")
    );
    // CAP_NET_ADMIN in the container's own network namespace: refused, then done.
    let r = s.run(&["exec", "px", "ip", "link", "set", "lo", "mtu", "1280"]);
    assert_eq!(
        r.stderr, "ip: SIOCSIFMTU: Operation not permitted\n",
        "{r:?}"
    );
    s.ok(&[
        "exec",
        "--privileged",
        "px",
        "ip",
        "link",
        "set",
        "lo",
        "mtu",
        "1280",
    ]);
    assert_eq!(
        s.ok(&["exec", "px", "cat", "/sys/class/net/lo/mtu"]),
        "1280\n"
    );
    // The filter is the container's: sethostname needs CAP_SYS_ADMIN in the container's
    // profile, which the exec's capabilities do not change.
    let r = s.run(&["exec", "--privileged", "px", "hostname", "renamed"]);
    assert_eq!(r.code, Some(1), "{r:?}");
    s.ok(&["rm", "-f", "px"]);
}

/// `--log-opt max-size/max-file` (json-file rotation, Docker's sizes and limits), `--log-driver
/// none`, and the refusals of bad options (nothing created).
#[test]
fn log_rotation_and_the_none_driver() {
    let s = setup(&default_driver());
    s.ok(&[
        "run",
        "--name",
        "rot",
        "--log-opt",
        "max-size=2k",
        "--log-opt",
        "max-file=3",
        "busybox",
        "sh",
        "-c",
        "i=1; while [ $i -le 300 ]; do echo line-$i; i=$((i+1)); done",
    ]);
    let dir_of = |name: &str| {
        s.root_path()
            .join("containers")
            .join(s.ok(&["inspect", "-f", "{{.Id}}", name]).trim())
    };
    let dir = dir_of("rot");
    let sizes: Vec<u64> = ["container.log", "container.log.1", "container.log.2"]
        .iter()
        .map(|f| std::fs::metadata(dir.join(f)).unwrap().len())
        .collect();
    assert!(!dir.join("container.log.3").exists());
    // 2k is 2,000 bytes (go-units): a file is rotated once it holds that, one record over at most.
    assert!(sizes.iter().all(|&n| n <= 2_000 + 100), "{sizes:?}");
    let logs = s.ok(&["logs", "rot"]);
    let nums: Vec<u32> = logs
        .lines()
        .map(|l| l.trim_start_matches("line-").parse().unwrap())
        .collect();
    assert_eq!(nums.last(), Some(&300));
    assert!(nums[0] > 1, "the oldest lines were rotated out");
    assert_eq!(
        nums,
        (nums[0]..=300).collect::<Vec<_>>(),
        "the kept tail, in order"
    );
    assert_eq!(
        s.ok(&["logs", "--tail", "2", "rot"]),
        "line-299\nline-300\n"
    );
    let v: serde_json::Value =
        serde_json::from_str(&s.ok(&["inspect", "-f", "{{json .HostConfig.LogConfig}}", "rot"]))
            .unwrap();
    assert_eq!(
        v,
        serde_json::json!({"Type": "json-file", "Config": {"max-file": "3", "max-size": "2k"}})
    );

    // none: nothing written, `logs` refuses in Docker's words.
    s.ok(&[
        "run",
        "--name",
        "quiet",
        "--log-driver",
        "none",
        "busybox",
        "echo",
        "hi",
    ]);
    assert!(!dir_of("quiet").join("container.log").exists());
    let r = s.run(&["logs", "quiet"]);
    assert_eq!(r.code, Some(1));
    assert_eq!(
        r.stderr,
        "Error: configured logging driver does not support reading\n"
    );
    // No attributes: --details still puts its (empty) field and a space first, as Docker does.
    assert_eq!(
        s.ok(&["logs", "--details", "rot"]).lines().last(),
        Some(" line-300")
    );
    s.ok(&["rm", "rot", "quiet"]);

    // labels= / env=: the named labels and variables in every record; `logs --details`.
    s.ok(&[
        "run",
        "--name",
        "attrs",
        "-l",
        "team=web",
        "-l",
        "other=x",
        "-e",
        "STAGE=blue green",
        "--log-opt",
        "labels=team,missing",
        "--log-opt",
        "env=STAGE",
        "busybox",
        "echo",
        "hi",
    ]);
    assert_eq!(s.ok(&["logs", "attrs"]), "hi\n");
    assert_eq!(
        s.ok(&["logs", "--details", "attrs"]),
        "STAGE=blue+green,team=web hi\n"
    );
    let raw = std::fs::read_to_string(dir_of("attrs").join("container.log")).unwrap();
    let rec: serde_json::Value = serde_json::from_str(raw.lines().next().unwrap()).unwrap();
    assert_eq!(
        rec["attrs"],
        serde_json::json!({"STAGE": "blue green", "team": "web"})
    );
    s.ok(&["rm", "attrs"]);

    for (args, msg) in [
        (
            vec!["--log-opt", "tag={{.Name}}"],
            "log opt 'tag' is not supported by strata's json-file log driver",
        ),
        (
            vec!["--log-opt", "max-file=0"],
            "max-file cannot be less than 1",
        ),
        (
            vec!["--log-opt", "foo=bar"],
            "unknown log opt 'foo' for json-file log driver",
        ),
        (
            vec!["--log-driver", "syslog"],
            "logger: no log driver named 'syslog' is registered",
        ),
    ] {
        let mut a = vec!["run", "--rm"];
        a.extend(args);
        a.extend(["busybox", "true"]);
        let r = s.run(&a);
        assert_eq!(r.code, Some(125), "{r:?}");
        assert_eq!(r.stderr, format!("Error: {msg}\n"));
    }
    assert_eq!(s.ok(&["ps", "-aq"]), "");
}
