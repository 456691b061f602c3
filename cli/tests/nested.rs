//! Nested: strata inside a strata container, the CI-runner case (a job that is itself a container
//! runs `strata load/run/diff/commit`). The outer container is an ordinary busybox container given
//! `/dev/fuse`, CAP_SYS_ADMIN (FUSE and the inner container's mounts) and a seccomp profile that
//! allows `pivot_root` — Docker's default plus that one call (`seccomp=unconfined` works too; the
//! default profile is Docker's, which has no `pivot_root`, so no inner container can switch to
//! its root under it); the strata binary and the host's libc are bind-mounted
//! read-only, the inner image comes from a docker-archive the test bind-mounts. The inner
//! containers use `--network host` (the outer's empty network namespace: a new one needs
//! CAP_NET_ADMIN to bring `lo` up).
//!
//! What runs where: the inner store at its default place, `/var/lib/strata`, sits on the outer
//! container's FUSE root (FUSE on FUSE): load, run, write, delete, `rm -r` + `mkdir` (opaque dir),
//! diff, commit and running the committed image all work. Two things make that work: the outer
//! filesystem stores overlay xattrs set through it escaped (`trusted.overlay.overlay.*`, as kernel
//! overlayfs ≥ 6.7 does), and where a char 0/0 whiteout cannot be made (a union filesystem refuses
//! it through itself, EPERM, as kernel overlayfs does) the inner one writes the xattr form (a
//! zero-size file with `trusted.overlay.whiteout`, parent `opaque=x`). A second inner store on a
//! tmpfs (`--tmpfs`) works too. Escapes: an inner `--privileged` container cannot open the host's
//! root block device (the outer container's device cgroup still confines it), and an outer
//! container without CAP_SYS_ADMIN, with the default seccomp profile or without `/dev/fuse`
//! cannot start inner containers at all (exit 125, one error line). Everything is removed by the
//! outer container's guard (inner mounts and processes live in its namespaces).
//!
//! Given only `/dev/fuse` (no CAP_SYS_ADMIN, the rootless podman-in-podman case), the inner
//! strata takes the rootless path as root: its own user namespace, FUSE and the inner
//! container's namespaces inside it. That needs six more seccomp grants than Docker's default
//! profile ([`USERNS_GRANTS`]; podman's default allows all six) and no masked /proc paths
//! (`--security-opt systempaths=unconfined`, podman's `unmask=/proc/*`), each shown necessary.
//!
//! Under real podman (4.3, runc, its default profile, masked paths, capabilities and read-only
//! cgroup mounts): `podman run --device /dev/fuse --cap-add SYS_ADMIN` is enough, and so is
//! `podman run --device /dev/fuse --security-opt unmask=/proc/*` without CAP_SYS_ADMIN.
//! `--cap-drop SETGID` outer containers start and run strata too.

mod containers_common;

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::Duration;

use containers_common::setup;
use strata_testkit::container::{Run, Strata};
use strata_testkit::fixtures;

const LIMIT: Duration = Duration::from_secs(180);

/// Bind mounts that let the host's (dynamically linked) strata run in a busybox image.
fn binds(img_dir: &Path) -> Vec<String> {
    let lib = format!("/usr/lib/{}-linux-gnu", std::env::consts::ARCH);
    let mut v = vec![
        format!("{}:/bin/strata:ro", env!("CARGO_BIN_EXE_strata")),
        format!("{lib}:/lib/{}-linux-gnu:ro", std::env::consts::ARCH),
        format!("{}:/img:ro", img_dir.display()),
    ];
    if Path::new("/lib64").exists() {
        v.push("/lib64:/lib64:ro".to_string());
    }
    v
}

/// `strata run --rm` of the outer busybox container with `flags`, running `script` under `sh -c`.
fn outer(s: &Strata, img_dir: &Path, flags: &[&str], script: &str) -> Run {
    let b = binds(img_dir);
    let mut args = vec!["run", "--rm", "--network", "none"];
    for v in &b {
        args.extend(["-v", v.as_str()]);
    }
    args.extend(flags);
    args.extend(["busybox", "sh", "-c", script]);
    s.run_timeout(&args, LIMIT)
}

/// Docker's default seccomp profile plus `pivot_root`, written next to the image archive:
/// `seccomp=<that file>`, the smallest seccomp grant found for the outer container.
fn profile_opt(dir: &Path) -> String {
    profile_file(dir, "seccomp.json", &["pivot_root"])
}

/// Docker's default seccomp profile plus the calls `names`, written to `dir/file`:
/// `seccomp=<that file>`.
fn profile_file(dir: &Path, file: &str, names: &[&str]) -> String {
    let mut p: serde_json::Value =
        serde_json::from_str(strata_runtime::container::seccomp::DEFAULT_PROFILE).unwrap();
    let first = &mut p["syscalls"][0];
    assert_eq!(first["action"], "SCMP_ACT_ALLOW");
    for n in names {
        first["names"].as_array_mut().unwrap().push((*n).into());
    }
    let path = dir.join(file);
    std::fs::write(&path, serde_json::to_vec(&p).unwrap()).unwrap();
    format!("seccomp={}", path.display())
}

/// A run's stdout lines, trimmed (a tty's CRLF read as LF).
fn stdout_lines(r: &Run) -> Vec<String> {
    let out = r.stdout.replace("\r\n", "\n");
    out.lines().map(|l| l.trim().to_string()).collect()
}

/// `line` is a `CapEff:` line without CAP_SYS_ADMIN (bit 21).
#[track_caller]
fn assert_no_sys_admin(line: &str, r: &Run) {
    let eff = line.strip_prefix("CapEff:").unwrap().trim();
    assert_eq!(
        u64::from_str_radix(eff, 16).unwrap() & (1 << 21),
        0,
        "{r:?}"
    );
}

/// A script for the outer container: load the inner image, `strata run --rm --network host` of
/// it with `cmd` (a shell word list), then `exit <status>`.
fn inner_run(cmd: &str) -> String {
    format!("strata load -i /img/inner.tar >/dev/null && strata run --rm --network host inner:latest {cmd}; echo \"exit $?\"")
}

fn images() -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix("strata-nested-")
        .tempdir()
        .unwrap();
    fixtures::busybox_archive(&dir.path().join("inner.tar"), "inner:latest").unwrap();
    dir
}

#[test]
fn strata_in_a_strata_container() {
    let s = setup("fuse");
    let img = images();
    let root_dev = std::fs::metadata("/").unwrap().dev();
    let (maj, min) = (libc::major(root_dev), libc::minor(root_dev));
    let script = format!(
        r#"
R="--network host"
echo "outer root: $(grep -c ' / fuse ' /proc/mounts)"
strata load -i /img/inner.tar
strata run --rm $R inner:latest cat /etc/motd
strata run --name w1 $R inner:latest sh -c 'echo hi > /etc/new; rm /etc/motd; rm -r /www; mkdir /www; echo new > /www/n'
strata diff w1 | sort
strata commit w1 inner:2 >/dev/null && echo committed
strata run --rm $R inner:2 sh -c 'cat /etc/new; ls /etc/motd 2>&1; ls /www'
strata rm w1
T="strata --root /inner/root --runroot /inner/run"
$T load -i /img/inner.tar >/dev/null
$T run --name w2 $R inner:latest sh -c 'rm /etc/motd'
$T diff w2 | sort
$T rm w2
$T run --rm --privileged --tmpfs /t $R inner:latest sh -c 'mknod /t/disk b {maj} {min} && head -c 16 /t/disk 2>&1 >/dev/null && echo READ-HOST-DISK || echo denied'
echo done
"#
    );
    let seccomp = profile_opt(img.path());
    let flags = [
        "--device",
        "/dev/fuse",
        "--cap-add",
        "SYS_ADMIN",
        "--security-opt",
        &seccomp,
        "--tmpfs",
        "/inner",
    ];
    let r = outer(&s, img.path(), &flags, &script);
    let out = r.stdout.replace("\r\n", "\n");
    let expected = [
        "outer root: 1",
        "Loaded image: inner:latest",
        "welcome to the strata busybox fixture",
        "A /etc/new",
        "A /www/n",
        "C /etc",
        "D /etc/motd",
        "D /www",
        "committed",
        "hi",
        "ls: /etc/motd: No such file or directory",
        "n",
        "w1",
        "C /etc",
        "D /etc/motd",
        "w2",
        "head: /t/disk: Permission denied",
        "denied",
        "done",
    ];
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        expected,
        "outer container: {r:?}"
    );
    assert!(r.ok(), "{r:?}");
    assert!(!out.contains("READ-HOST-DISK"));
    // The inner strata saw no cgroup filesystem and left device rules to the outer container.
    assert!(
        r.stderr
            .contains("WARNING: no cgroup filesystem in this container"),
        "{r:?}"
    );
}

#[test]
fn outer_container_without_the_grants_cannot_run_strata() {
    let s = setup("fuse");
    let img = images();
    let seccomp = profile_opt(img.path());
    let script = &inner_run("true");
    // Without CAP_SYS_ADMIN: strata takes the rootless path, and Docker's profile (plus
    // pivot_root) refuses it a user namespace (see `only_dev_fuse_needs_each_grant`).
    let r = outer(
        &s,
        img.path(),
        &["--device", "/dev/fuse", "--security-opt", &seccomp],
        script,
    );
    assert!(r.ok(), "{r:?}");
    assert!(r.stdout.ends_with("exit 125\n"), "{r:?}");
    assert_eq!(
        r.stderr, "Error: cannot set up a user namespace for root without CAP_SYS_ADMIN: unshare(CLONE_NEWUSER|CLONE_NEWNS): Operation not permitted (os error 1) (a container's seccomp profile must allow unshare, setns, mount, umount2, pivot_root and clone)\n",
        "{r:?}"
    );
    // With CAP_SYS_ADMIN but the default seccomp profile (Docker's): it has no pivot_root.
    let r = outer(
        &s,
        img.path(),
        &["--device", "/dev/fuse", "--cap-add", "SYS_ADMIN"],
        script,
    );
    assert!(r.ok(), "{r:?}");
    assert!(r.stdout.ends_with("exit 125\n"), "{r:?}");
    assert!(
        r.stderr
            .ends_with("Error: pivot_root: EPERM: Operation not permitted\n"),
        "{r:?}"
    );
    // Without /dev/fuse: nothing to mount the union filesystem with.
    let r = outer(
        &s,
        img.path(),
        &["--cap-add", "SYS_ADMIN", "--security-opt", &seccomp],
        script,
    );
    assert!(r.ok(), "{r:?}");
    assert!(r.stdout.ends_with("exit 125\n"), "{r:?}");
    // (The message names the mountpoint, not /dev/fuse: ENOENT is from opening /dev/fuse.)
    assert!(
        r.stderr.contains("storage driver fuse: cannot mount")
            && r.stderr.contains("No such file or directory"),
        "{r:?}"
    );
}

/// Docker's default profile plus `names` in its first allow rule.
fn profile_with(dir: &Path, tag: &str, names: &[&str]) -> String {
    profile_file(dir, &format!("seccomp-{tag}.json"), names)
}

/// The seccomp grants the outer container needs when it has no CAP_SYS_ADMIN (each found
/// necessary by leaving it out, [`only_dev_fuse_needs_each_grant`]): the inner strata makes a
/// user namespace (`unshare`), joins its pause process's (`setns`), mounts FUSE and the inner
/// container's filesystems (`mount`, `umount2`, `pivot_root`) and forks the inner init into new
/// namespaces (`clone` with namespace flags). Docker's profile allows them only with
/// CAP_SYS_ADMIN; podman's allows all six without (its conditional `setns` refusal comes after
/// an unconditional allow, and the first rule for a call wins in libseccomp, as runc and strata
/// compile it). `sethostname` is not needed: where it is refused, the inner init names its UTS
/// namespace through its own `/proc/sys/kernel/hostname`.
const USERNS_GRANTS: [&str; 6] = [
    "unshare",
    "setns",
    "mount",
    "umount2",
    "pivot_root",
    "clone",
];

/// `script` in an outer container given only `/dev/fuse`, [`USERNS_GRANTS`] and unmasked /proc
/// paths, plus `extra` flags: its stdout lines (trimmed) and the run.
fn only_dev_fuse_outer(extra: &[&str], script: &str) -> (Vec<String>, Run) {
    let s = setup("fuse");
    let img = images();
    let seccomp = profile_with(img.path(), "userns", &USERNS_GRANTS);
    let mut flags = vec!["--device", "/dev/fuse"];
    flags.extend(extra);
    flags.extend([
        "--security-opt",
        &seccomp,
        "--security-opt",
        "systempaths=unconfined",
    ]);
    let r = outer(&s, img.path(), &flags, script);
    (stdout_lines(&r), r)
}

/// Without CAP_SYS_ADMIN, root in the outer container takes the rootless path: a user
/// namespace of its own (ids 0…65535 mapped onto themselves; root still has CAP_SETUID), FUSE
/// and the inner container's namespaces inside it. Needs [`USERNS_GRANTS`] and
/// `systempaths=unconfined` (a fresh /proc cannot be mounted in a user namespace while masked
/// paths are mounted over files of the outer /proc).
#[test]
fn strata_in_a_container_given_only_dev_fuse() {
    let script = format!(
        "grep CapEff /proc/self/status\n{}",
        inner_session("cat /etc/motd; cat /proc/self/uid_map; id -u; hostname")
    );
    let (lines, r) = only_dev_fuse_outer(&[], &script);
    // No CAP_SYS_ADMIN (bit 21) in the outer container.
    assert_no_sys_admin(&lines[0], &r);
    let head = [
        "Loaded image: inner:latest",
        "welcome to the strata busybox fixture",
        "0          0      65536",
        "0",
        "inner-h",
    ];
    let expected = [&head[..], &SESSION_TAIL[..]].concat();
    assert_eq!(lines[1..], expected, "outer container: {r:?}");
    assert!(r.ok(), "{r:?}");
    assert_eq!(r.stderr, "", "{r:?}");
}

#[test]
fn only_dev_fuse_needs_each_grant() {
    let s = setup("fuse");
    let img = images();
    let script = &inner_run("true");
    let confined = |what: &str| {
        format!("Error: cannot set up a user namespace for root without CAP_SYS_ADMIN: {what}: Operation not permitted (os error 1) (a container's seccomp profile must allow unshare, setns, mount, umount2, pivot_root and clone)\n")
    };
    let mut cases: Vec<(Option<String>, bool, String)> = vec![
        (None, true, confined("unshare(CLONE_NEWUSER|CLONE_NEWNS)")),
        (
            Some(profile_with(img.path(), "userns", &USERNS_GRANTS)),
            false,
            "Error: mount proc on /proc: EPERM: Operation not permitted\n".to_string(),
        ),
    ];
    for left in USERNS_GRANTS {
        let rest: Vec<&str> = USERNS_GRANTS.into_iter().filter(|n| *n != left).collect();
        let err = match left {
            "unshare" => confined("unshare(CLONE_NEWUSER|CLONE_NEWNS)"),
            "setns" => confined("setns(user namespace)"),
            // (the FUSE mount: the message names the container's rootfs)
            "mount" => "rootfs: EPERM: Operation not permitted\n".to_string(),
            "umount2" => "Error: detach old root: EPERM: Operation not permitted\n".to_string(),
            "pivot_root" => "Error: pivot_root: EPERM: Operation not permitted\n".to_string(),
            "clone" => "Error: fork: EPERM: Operation not permitted\n".to_string(),
            other => unreachable!("{other}"),
        };
        cases.push((Some(profile_with(img.path(), left, &rest)), true, err));
    }
    for (seccomp, unmasked, err) in &cases {
        let mut flags = vec!["--device", "/dev/fuse"];
        if let Some(p) = seccomp {
            flags.extend(["--security-opt", p.as_str()]);
        }
        if *unmasked {
            flags.extend(["--security-opt", "systempaths=unconfined"]);
        }
        let r = outer(&s, img.path(), &flags, script);
        assert!(r.ok(), "{r:?}");
        assert!(r.stdout.ends_with("exit 125\n"), "{flags:?}: {r:?}");
        if err.starts_with("Error: ") {
            assert_eq!(&r.stderr, err, "{flags:?}: {r:?}");
        } else {
            assert!(
                r.stderr
                    .starts_with("Error: storage driver fuse: cannot mount ")
                    && r.stderr.ends_with(err.as_str())
                    && r.stderr.lines().count() == 1,
                "{flags:?}: {r:?}"
            );
        }
    }
}

/// Without CAP_SETUID the outer root can map only itself: the inner user namespace maps uid 0
/// alone (gids keep the wide map: CAP_SETGID is still there), and busybox still runs and writes.
#[test]
fn only_dev_fuse_without_setuid_maps_root_alone() {
    assert_without_cap_maps(
        "SETUID",
        "/proc/self/uid_map /proc/self/gid_map",
        &["0          0          1", "0          0      65536"],
    );
}

/// With only `/dev/fuse` and CAP_`cap` dropped, an inner container's `cat <show>` (`show`: the
/// files, maybe followed by more commands) prints `want`, then it writes a file and removes an
/// image file; nothing on stderr.
fn assert_without_cap_maps(cap: &str, show: &str, want: &[&str]) {
    let script = inner_run(&format!(
        "sh -c 'cat {show}; echo x > /tmp/f && cat /tmp/f; rm /etc/motd && echo removed'"
    ));
    let (lines, r) = only_dev_fuse_outer(&["--cap-drop", cap], &script);
    let mut expected = want.to_vec();
    expected.extend(["x", "removed", "exit 0"]);
    assert_eq!(lines, expected, "{r:?}");
    assert_eq!(r.stderr, "", "{r:?}");
}

/// Rootful podman (Debian's 4.3 with runc: podman's own default seccomp profile, masked paths,
/// capabilities and read-only cgroup mounts) as the outer container. Everything podman keeps
/// lives in a temp dir of its own (storage with vfs, run root, libpod tmp dir; no events, no
/// network); the outer root is a directory (`--rootfs`) holding the host's static busybox and
/// its applets. Containers go under a cgroup parent named after that dir (podman's conmon
/// cgroups too). Dropping it force-removes every podman container of that storage, kills what
/// still names the dir, unmounts what is left under it and removes that cgroup parent.
struct Podman {
    dir: tempfile::TempDir,
}

/// Remove the (empty) cgroup `/name` and everything below it in every mounted hierarchy.
fn remove_cgroup_tree(name: &str) {
    fn rm(dir: &Path) {
        if let Ok(entries) = std::fs::read_dir(dir) {
            for e in entries.flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    rm(&e.path());
                }
            }
        }
        let _ = std::fs::remove_dir(dir);
    }
    let top = Path::new("/sys/fs/cgroup");
    let hierarchies = std::fs::read_dir(top)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .chain([top.to_path_buf()]);
    for h in hierarchies {
        let d = h.join(name);
        if d.is_dir() {
            rm(&d);
        }
    }
}

impl Podman {
    fn new() -> Podman {
        let dir = tempfile::Builder::new()
            .prefix("strata-nested-podman-")
            .tempdir()
            .unwrap();
        let rootfs = dir.path().join("rootfs");
        for d in ["bin", "etc", "tmp", "var/lib", "run", "img"] {
            std::fs::create_dir_all(rootfs.join(d)).unwrap();
        }
        std::fs::copy("/bin/busybox", rootfs.join("bin/busybox")).unwrap();
        let list = std::process::Command::new("/bin/busybox")
            .arg("--list")
            .output()
            .unwrap();
        for applet in String::from_utf8(list.stdout).unwrap().lines() {
            if applet != "busybox" {
                std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(applet)).unwrap();
            }
        }
        std::fs::write(rootfs.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n").unwrap();
        std::fs::write(rootfs.join("etc/group"), "root:x:0:\n").unwrap();
        Podman { dir }
    }

    fn cgroup(&self) -> String {
        self.dir
            .path()
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned()
    }

    fn command(&self) -> std::process::Command {
        let d = self.dir.path();
        let mut c = std::process::Command::new("podman");
        c.arg("--root")
            .arg(d.join("storage"))
            .arg("--runroot")
            .arg(d.join("run"))
            .arg("--tmpdir")
            .arg(d.join("tmp"))
            .args(["--storage-driver", "vfs", "--events-backend", "none"]);
        c
    }

    /// `podman run --rm` of the outer container with `flags`, running `script` under `sh -c`.
    fn run(&self, img_dir: &Path, flags: &[&str], script: &str) -> Run {
        let mut c = self.command();
        c.args(["run", "--rm", "--network", "none", "--cgroup-parent"])
            .arg(format!("/{}", self.cgroup()))
            .args(strata_testkit::podman::ULIMITS);
        for v in binds(img_dir) {
            c.args(["-v", &v]);
        }
        c.args(flags)
            .arg("--rootfs")
            .arg(self.dir.path().join("rootfs"))
            .args(["sh", "-c", script])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let out = strata_testkit::container::wait_output(c.spawn().unwrap(), LIMIT);
        Run {
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        let mut c = self.command();
        c.args(["rm", "--force", "--all", "--time", "0"])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        if let Ok(child) = c.spawn() {
            let _ = strata_testkit::container::wait_output(child, Duration::from_secs(60));
        }
        strata_testkit::container::kill_processes_naming(self.dir.path());
        strata_testkit::container::lazy_unmount_under(self.dir.path());
        remove_cgroup_tree(&self.cgroup());
    }
}

/// The inner work of the only-`/dev/fuse` and podman tests: load, a first run (hostname
/// `inner-h`) running `first` under `sh -c`, then write/delete/opaque dir, diff, commit, run the
/// committed image, a detached container and `exec` in it; `echo done`.
fn inner_session(first: &str) -> String {
    format!(
        r#"
R="--network host"
strata load -i /img/inner.tar
strata run --rm $R --hostname inner-h inner:latest sh -c '{first}'
strata run --name w1 $R inner:latest sh -c 'echo hi > /etc/new; rm /etc/motd; rm -r /www; mkdir /www; echo new > /www/n'
strata diff w1 | sort
strata commit w1 inner:2 >/dev/null && echo committed
strata run --rm $R inner:2 sh -c 'cat /etc/new; ls /etc/motd 2>&1; ls /www'
strata rm w1
strata run -d --name bg --hostname bgh $R inner:latest sleep 300 >/dev/null
strata exec bg sh -c 'echo exec; hostname'
strata rm -f bg
echo done
"#
    )
}

/// What [`inner_session`] prints: "Loaded image", then `first`'s lines, then these.
const SESSION_TAIL: [&str; 14] = [
    "A /etc/new",
    "A /www/n",
    "C /etc",
    "D /etc/motd",
    "D /www",
    "committed",
    "hi",
    "ls: /etc/motd: No such file or directory",
    "n",
    "w1",
    "exec",
    "bgh",
    "bg",
    "done",
];

/// An outer podman container (with `flags`) running the script lines `before`, then
/// [`inner_session`] (its first run shows the motd, its hostname and `id`), then the one-line
/// command `after`. It must succeed and print the session's lines between those of `before`
/// and `after`'s one line. Its stdout lines, and the run.
fn podman_session(
    podman: &Podman,
    img_dir: &Path,
    flags: &[&str],
    before: &str,
    after: &str,
) -> (Vec<String>, Run) {
    let session = inner_session("cat /etc/motd; hostname; id");
    let r = podman.run(img_dir, flags, &format!("{before}\n{session}\n{after}"));
    let lines = stdout_lines(&r);
    assert!(r.ok(), "{r:?}");
    let head = [
        "Loaded image: inner:latest",
        "welcome to the strata busybox fixture",
        "inner-h",
        "uid=0(root) gid=0(root) groups=0(root)",
    ];
    let expected = [&head[..], &SESSION_TAIL[..]].concat();
    let n = before.lines().count();
    assert_eq!(lines[n..lines.len() - 1], expected[..], "{r:?}");
    (lines, r)
}

/// `podman run --device /dev/fuse --cap-add SYS_ADMIN`: nothing else. Podman's default profile
/// allows `pivot_root` (Docker's does not), its cgroup filesystems are mounted read-only (the
/// device rules are left to podman's device cgroup, one warning per inner container) and it
/// gives no CAP_MKNOD, CAP_NET_RAW or CAP_AUDIT_WRITE (the inner containers get the rest of
/// Docker's default set: nothing can grant what it does not hold).
#[test]
fn strata_in_a_podman_container_given_sys_admin_and_dev_fuse() {
    let img = images();
    let podman = Podman::new();
    let (lines, r) = podman_session(
        &podman,
        img.path(),
        &["--device", "/dev/fuse", "--cap-add", "SYS_ADMIN"],
        "grep CapBnd /proc/self/status",
        "strata run --rm --network host inner:latest grep CapEff /proc/self/status",
    );
    // Podman's default set plus SYS_ADMIN: no MKNOD (27), NET_RAW (13), AUDIT_WRITE (29).
    assert_eq!(lines[0], "CapBnd:\t00000000802405fb".trim(), "{r:?}");
    // Docker's default set less what podman withheld.
    assert_eq!(
        lines[lines.len() - 1],
        "CapEff:\t00000000800405fb".trim(),
        "{r:?}"
    );
    let warning = "WARNING: the cgroup filesystem in this container is read-only: device access is limited by the enclosing container's rules";
    assert!(
        r.stderr.lines().all(|l| l == warning) && r.stderr.contains(warning),
        "{r:?}"
    );
}

/// `podman run --device /dev/fuse --security-opt unmask=/proc/*`, no CAP_SYS_ADMIN: the inner
/// strata takes the rootless path under podman's default profile. That profile refuses
/// `sethostname` (checked: even root of a user namespace of its own gets EPERM), so the inner
/// init names its container through /proc; the `unmask` is the one grant left: the kernel
/// mounts no fresh /proc in a user namespace while masked paths cover the outer one (without it:
/// one line, exit 125). The last inner `strata run` is the outer container's first process
/// (`exec`): its binary's mount namespace empties when it joins the pause process's.
#[test]
fn strata_in_a_podman_container_given_only_dev_fuse() {
    let img = images();
    let podman = Podman::new();
    let (lines, r) = podman_session(
        &podman,
        img.path(),
        &["--device", "/dev/fuse", "--security-opt", "unmask=/proc/*"],
        "grep CapEff /proc/self/status\nunshare -r unshare -u hostname x 2>&1",
        "exec strata run --rm --network host inner:latest cat /proc/self/uid_map",
    );
    assert_no_sys_admin(&lines[0], &r);
    assert_eq!(
        lines[1], "hostname: sethostname: Operation not permitted",
        "{r:?}"
    );
    assert_eq!(lines[lines.len() - 1], "0          0      65536", "{r:?}");
    assert_eq!(r.stderr, "", "{r:?}");

    // Without the unmask: podman's masked /proc.
    let r = podman.run(img.path(), &["--device", "/dev/fuse"], &inner_run("true"));
    assert!(r.ok(), "{r:?}");
    assert_eq!(r.stdout, "exit 125\n", "{r:?}");
    assert_eq!(
        r.stderr, "Error: mount proc on /proc: EPERM: Operation not permitted\n",
        "{r:?}"
    );
}

/// `--cap-drop SETGID`: the container's init sets its groups before it takes the container's
/// capabilities (runc's order), so it starts as Docker's does, with the same `id` and without
/// CAP_SETGID (bit 6); `exec` (also as another user) too. Strata inside such a container: the
/// inner init cannot call `setgroups` at all (the kernel wants CAP_SETGID even for no change),
/// and skips it where the groups already are the container's (root's: `0`), as runc does where
/// it may not; a user whose groups would change gets the kernel's refusal in one line.
#[test]
fn cap_drop_setgid_container_starts_as_in_docker() {
    let s = setup("fuse");
    let plain = s.ok(&["run", "--rm", "--network", "none", "busybox", "id"]);
    let r = s.run(&[
        "run",
        "--rm",
        "--network",
        "none",
        "--cap-drop",
        "SETGID",
        "busybox",
        "sh",
        "-c",
        "id; grep CapEff /proc/self/status",
    ]);
    assert!(r.ok(), "{r:?}");
    assert_eq!(
        r.stdout,
        format!("{plain}CapEff:\t00000000a80425bb\n"),
        "{r:?}"
    );
    let id = s.ok(&[
        "run",
        "-d",
        "--network",
        "none",
        "--cap-drop",
        "SETGID",
        "busybox",
        "sleep",
        "60",
    ]);
    let id = id.trim();
    assert_eq!(s.ok(&["exec", id, "id"]), plain);
    assert_eq!(
        s.ok(&["exec", "-u", "65534:65534", id, "id", "-G"]),
        "65534\n"
    );
    s.ok(&["rm", "-f", id]);

    let img = images();
    let seccomp = profile_opt(img.path());
    let script = "strata load -i /img/inner.tar >/dev/null; strata run --rm --network host inner:latest sh -c 'id; grep CapEff /proc/self/status'; strata run --rm --network host --user 1000:1000 inner:latest id; echo \"exit $?\"";
    let flags = [
        "--device",
        "/dev/fuse",
        "--cap-add",
        "SYS_ADMIN",
        "--cap-drop",
        "SETGID",
        "--security-opt",
        &seccomp,
    ];
    let r = outer(&s, img.path(), &flags, script);
    assert!(r.ok(), "{r:?}");
    assert_eq!(
        r.stdout, "uid=0(root) gid=0(root) groups=0(root)\nCapEff:\t00000000a80425bb\nexit 125\n",
        "{r:?}"
    );
    assert!(
        r.stderr
            .ends_with("\nError: setgroups: EPERM: Operation not permitted\n"),
        "{r:?}"
    );
}

/// Given only `/dev/fuse` and without CAP_SETGID: the inner user namespace maps gid 0 alone
/// (and `setgroups` is `deny`, as the kernel requires for that map), the inner init leaves the
/// groups alone, and devpts goes without `gid=5` (no such group in the namespace).
#[test]
fn only_dev_fuse_without_setgid_maps_gid_0_alone() {
    assert_without_cap_maps(
        "SETGID",
        "/proc/self/uid_map /proc/self/gid_map /proc/self/setgroups; id",
        &[
            "0          0      65536",
            "0          0          1",
            "deny",
            "uid=0(root) gid=0(root) groups=0(root)",
        ],
    );
}
