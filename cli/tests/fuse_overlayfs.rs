//! The fuse-overlayfs driver from the command line: Debian's `fuse-overlayfs`
//! (`--storage-driver fuse-overlayfs`) and our own `strata-overlay` as a mount program
//! (`--storage-opt mount_program=PATH`): run, write, diff, commit, run the committed image; the
//! mount program's FUSE mount while the container runs, nothing mounted and no daemon after.

mod containers_common;

use std::path::Path;

use containers_common::{setup, strata_overlay};
use strata_testkit::container::{mounts_under, Strata};
use strata_testkit::mount::mounts;

/// Processes other than this test whose command line names the store (a mount daemon left behind).
fn daemons_naming(root: &Path) -> Vec<String> {
    let needle = root.to_str().unwrap();
    let me = std::process::id().to_string();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_str()
                .is_some_and(|n| n != me && n.parse::<u32>().is_ok())
        })
        .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
        .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
        .filter(|c| c.contains(needle))
        .collect()
}

fn roundtrip(s: &Strata, opts: &[&str], spec: &str, fstype: &str) {
    let with =
        |args: &[&str]| -> Vec<String> { opts.iter().chain(args).map(|a| a.to_string()).collect() };
    let ok = |args: &[&str]| {
        let a = with(args);
        s.ok(&a.iter().map(String::as_str).collect::<Vec<_>>())
    };
    // Running: the merged view is the mount program's FUSE mount.
    let id = ok(&["run", "-d", "--name", "live", "busybox", "sleep", "100"]);
    let id = id.trim();
    let rootfs = s.root_path().join("containers").join(id).join("rootfs");
    let m = mounts()
        .into_iter()
        .find(|m| m.mount_point == rootfs)
        .unwrap_or_else(|| panic!("{spec}: no mount at {}", rootfs.display()));
    assert_eq!(m.fstype, fstype, "{spec}");
    let cfg = std::fs::read_to_string(
        s.root_path()
            .join("containers")
            .join(id)
            .join("config.json"),
    )
    .unwrap();
    assert!(cfg.contains(&format!("\"driver\": \"{spec}\"")), "{cfg}");
    assert_eq!(
        ok(&["inspect", "-f", "{{.Driver}} {{.GraphDriver.Name}}", "live"]),
        "fuse-overlayfs fuse-overlayfs\n"
    );
    assert_eq!(
        ok(&["exec", "live", "sh", "-c", "echo x > /tmp/x; cat /tmp/x"]),
        "x\n"
    );
    ok(&["rm", "-f", "live"]);
    assert!(
        mounts_under(s.root_path()).is_empty(),
        "{spec}: unmounted at rm"
    );

    // Write, exit: unmounted, the daemon gone; diff and commit read the overlay-format upper.
    ok(&[
        "run",
        "--name",
        "writer",
        "busybox",
        "sh",
        "-c",
        "echo hi > /www/new.txt && rm /etc/motd",
    ]);
    assert!(
        mounts_under(s.root_path()).is_empty(),
        "{spec}: unmounted at exit"
    );
    let left = daemons_naming(s.root_path());
    assert!(left.is_empty(), "{spec}: mount daemons left: {left:?}");
    let diff = ok(&["diff", "writer"]);
    for line in ["C /etc", "D /etc/motd", "C /www", "A /www/new.txt"] {
        assert!(diff.lines().any(|l| l == line), "{spec}: {line} in {diff}");
    }
    ok(&["commit", "writer", "committed:fo"]);
    assert_eq!(
        ok(&[
            "run",
            "--rm",
            "committed:fo",
            "sh",
            "-c",
            "cat /www/new.txt; test -e /etc/motd || echo gone"
        ]),
        "hi\ngone\n"
    );
    ok(&["rm", "writer"]);
    assert!(mounts_under(s.root_path()).is_empty());
    assert!(daemons_naming(s.root_path()).is_empty());
}

#[test]
fn debian_fuse_overlayfs() {
    let s = setup("fuse-overlayfs");
    roundtrip(&s, &[], "fuse-overlayfs", "fuse.fuse-overlayfs");
    let info = s.ok(&["info"]);
    assert!(info.contains(" Storage Driver: fuse-overlayfs\n"), "{info}");
    assert!(
        info.contains("  Mount Program: /usr/bin/fuse-overlayfs\n"),
        "{info}"
    );
    assert!(
        info.contains("  Mount Program Version: fuse-overlayfs: version "),
        "{info}"
    );
}

#[test]
fn strata_overlay_as_mount_program() {
    let bin = strata_overlay();
    let opt = format!("mount_program={}", bin.display());
    let s = setup("fuse-overlayfs");
    let spec = format!("fuse-overlayfs:{}", bin.display());
    roundtrip(&s, &["--storage-opt", &opt], &spec, "fuse");
    let info = s.ok(&["--storage-opt", &opt, "info"]);
    assert!(
        info.contains(&format!("  Mount Program: {}\n", bin.display())),
        "{info}"
    );
    assert!(
        info.contains("  Mount Program Version: strata-overlay "),
        "{info}"
    );
}

#[test]
fn bad_storage_opts_and_failing_mount_programs() {
    let s = setup("fuse-overlayfs");
    let r = s.run(&["--storage-opt", "size=1G", "run", "--rm", "busybox", "true"]);
    assert_eq!(r.code, Some(125), "{r:?}");
    assert!(
        r.stderr.contains("unknown storage option \"size\""),
        "{r:?}"
    );
    let r = s.run(&[
        "--storage-driver",
        "vfs",
        "--storage-opt",
        "mount_program=/bin/true",
        "run",
        "--rm",
        "busybox",
        "true",
    ]);
    assert_eq!(r.code, Some(125), "{r:?}");
    // A mount program that fails: one line naming it, nothing left behind.
    let r = s.run(&[
        "--storage-opt",
        "mount_program=/bin/false",
        "run",
        "--name",
        "nomount",
        "busybox",
        "true",
    ]);
    assert_eq!(r.code, Some(125), "{r:?}");
    assert!(
        r.stderr.contains("/bin/false exited with exit status: 1"),
        "{r:?}"
    );
    assert_eq!(r.stderr.lines().count(), 1, "{r:?}");
    assert!(s.ok(&["ps", "-aq"]).is_empty());
    assert!(mounts_under(s.root_path()).is_empty());
}
