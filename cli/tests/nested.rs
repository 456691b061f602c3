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
//! container's namespaces inside it. That needs seven more seccomp grants than Docker's default
//! profile ([`USERNS_GRANTS`]; podman's default lacks `setns` and `sethostname` of them) and
//! `--security-opt systempaths=unconfined` (no masked /proc paths), each shown necessary.

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
    let mut p: serde_json::Value =
        serde_json::from_str(strata_runtime::container::seccomp::DEFAULT_PROFILE).unwrap();
    let first = &mut p["syscalls"][0];
    assert_eq!(first["action"], "SCMP_ACT_ALLOW");
    first["names"]
        .as_array_mut()
        .unwrap()
        .push("pivot_root".into());
    let path = dir.join("seccomp.json");
    std::fs::write(&path, serde_json::to_vec(&p).unwrap()).unwrap();
    format!("seccomp={}", path.display())
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
    let script = "strata load -i /img/inner.tar >/dev/null && strata run --rm --network host inner:latest true; echo \"exit $?\"";
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
        r.stderr, "Error: cannot set up a user namespace for root without CAP_SYS_ADMIN: unshare(CLONE_NEWUSER|CLONE_NEWNS): Operation not permitted (os error 1) (a container's seccomp profile must allow unshare, setns, mount, umount2, pivot_root, clone and sethostname)\n",
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
    let mut p: serde_json::Value =
        serde_json::from_str(strata_runtime::container::seccomp::DEFAULT_PROFILE).unwrap();
    let first = &mut p["syscalls"][0];
    assert_eq!(first["action"], "SCMP_ACT_ALLOW");
    for n in names {
        first["names"].as_array_mut().unwrap().push((*n).into());
    }
    let path = dir.join(format!("seccomp-{tag}.json"));
    std::fs::write(&path, serde_json::to_vec(&p).unwrap()).unwrap();
    format!("seccomp={}", path.display())
}

/// The seccomp grants the outer container needs when it has no CAP_SYS_ADMIN (each found
/// necessary by leaving it out): the inner strata makes a user namespace (`unshare`), joins its
/// pause process's (`setns`), mounts FUSE and the inner container's filesystems (`mount`,
/// `umount2`, `pivot_root`), forks the inner init into new namespaces (`clone` with namespace
/// flags) and names it (`sethostname`). Docker's profile allows all of them only with
/// CAP_SYS_ADMIN; podman's allows all but `setns` and `sethostname` unconditionally.
const USERNS_GRANTS: [&str; 7] = [
    "unshare",
    "setns",
    "mount",
    "umount2",
    "pivot_root",
    "clone",
    "sethostname",
];

/// Without CAP_SYS_ADMIN, root in the outer container takes the rootless path: a user
/// namespace of its own (ids 0…65535 mapped onto themselves; root still has CAP_SETUID), FUSE
/// and the inner container's namespaces inside it. Needs [`USERNS_GRANTS`] and
/// `systempaths=unconfined` (a fresh /proc cannot be mounted in a user namespace while masked
/// paths are mounted over files of the outer /proc).
#[test]
fn strata_in_a_container_given_only_dev_fuse() {
    let s = setup("fuse");
    let img = images();
    let script = r#"
R="--network host"
grep CapEff /proc/self/status
strata load -i /img/inner.tar
strata run --rm $R inner:latest sh -c 'cat /etc/motd; cat /proc/self/uid_map; id -u'
strata run --name w1 $R inner:latest sh -c 'echo hi > /etc/new; rm /etc/motd; rm -r /www; mkdir /www; echo new > /www/n'
strata diff w1 | sort
strata commit w1 inner:2 >/dev/null && echo committed
strata run --rm $R inner:2 sh -c 'cat /etc/new; ls /etc/motd 2>&1; ls /www'
strata rm w1
echo done
"#;
    let seccomp = profile_with(img.path(), "userns", &USERNS_GRANTS);
    let flags = [
        "--device",
        "/dev/fuse",
        "--security-opt",
        &seccomp,
        "--security-opt",
        "systempaths=unconfined",
    ];
    let r = outer(&s, img.path(), &flags, script);
    let out = r.stdout.replace("\r\n", "\n");
    let lines: Vec<&str> = out.lines().map(str::trim).collect();
    // No CAP_SYS_ADMIN (bit 21) in the outer container.
    let eff = lines[0].strip_prefix("CapEff:").unwrap().trim();
    assert_eq!(
        u64::from_str_radix(eff, 16).unwrap() & (1 << 21),
        0,
        "{r:?}"
    );
    let expected = [
        "Loaded image: inner:latest",
        "welcome to the strata busybox fixture",
        "0          0      65536",
        "0",
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
        "done",
    ];
    assert_eq!(lines[1..], expected, "outer container: {r:?}");
    assert!(r.ok(), "{r:?}");
    assert_eq!(r.stderr, "", "{r:?}");
}

#[test]
fn only_dev_fuse_needs_each_grant() {
    let s = setup("fuse");
    let img = images();
    let script = "strata load -i /img/inner.tar >/dev/null && strata run --rm --network host inner:latest true; echo \"exit $?\"";
    let all = profile_with(img.path(), "userns", &USERNS_GRANTS);
    let podman = profile_with(
        img.path(),
        "podman",
        &["unshare", "mount", "umount2", "pivot_root", "clone"],
    );
    let unmask = "systempaths=unconfined";
    for (seccomp, unmasked, err) in [
        (None, true, "Error: cannot set up a user namespace for root without CAP_SYS_ADMIN: unshare(CLONE_NEWUSER|CLONE_NEWNS): Operation not permitted (os error 1) (a container's seccomp profile must allow unshare, setns, mount, umount2, pivot_root, clone and sethostname)\n"),
        (Some(&podman), true, "Error: cannot set up a user namespace for root without CAP_SYS_ADMIN: setns(user namespace): Operation not permitted (os error 1) (a container's seccomp profile must allow unshare, setns, mount, umount2, pivot_root, clone and sethostname)\n"),
        (Some(&all), false, "Error: mount proc on /proc: EPERM: Operation not permitted\n"),
    ] {
        let mut flags = vec!["--device", "/dev/fuse"];
        if let Some(p) = seccomp {
            flags.extend(["--security-opt", p.as_str()]);
        }
        if unmasked {
            flags.extend(["--security-opt", unmask]);
        }
        let r = outer(&s, img.path(), &flags, script);
        assert!(r.ok(), "{r:?}");
        assert!(r.stdout.ends_with("exit 125\n"), "{flags:?}: {r:?}");
        assert_eq!(r.stderr, err, "{flags:?}: {r:?}");
    }
}

/// Without CAP_SETUID the outer root can map only itself: the inner user namespace maps uid 0
/// alone (gids keep the wide map: CAP_SETGID is still there), and busybox still runs and writes.
#[test]
fn only_dev_fuse_without_setuid_maps_root_alone() {
    let s = setup("fuse");
    let img = images();
    let script = "strata load -i /img/inner.tar >/dev/null && strata run --rm --network host inner:latest sh -c 'cat /proc/self/uid_map /proc/self/gid_map; echo x > /tmp/f && cat /tmp/f; rm /etc/motd && echo removed'; echo \"exit $?\"";
    let seccomp = profile_with(img.path(), "userns", &USERNS_GRANTS);
    let flags = [
        "--device",
        "/dev/fuse",
        "--cap-drop",
        "SETUID",
        "--security-opt",
        &seccomp,
        "--security-opt",
        "systempaths=unconfined",
    ];
    let r = outer(&s, img.path(), &flags, script);
    let out = r.stdout.replace("\r\n", "\n");
    let lines: Vec<&str> = out.lines().map(str::trim).collect();
    assert_eq!(
        lines,
        [
            "0          0          1",
            "0          0      65536",
            "x",
            "removed",
            "exit 0"
        ],
        "{r:?}"
    );
    assert_eq!(r.stderr, "", "{r:?}");
}
