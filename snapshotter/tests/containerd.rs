//! Debian's containerd 1.6 with strata-snapshotter as its `strata` proxy plugin, driven by
//! `ctr` as a user would: pull from the loopback registry, run containers on strata's union
//! filesystem, commit a container's snapshot, view, usage, list, labels, remove.

mod common;

use std::ffi::OsStr;
use std::os::fd::AsFd;
use std::time::Duration;

use common::{guarded, mount, World, STEP};
use containerd_snapshots::tonic::Code;
use strata_testkit::container::eventually;
use strata_testkit::fixtures::LayerTar;
use strata_testkit::registry::{images, skopeo_copy, Registry};

/// busybox, then a layer that adds `/etc/layer2`, deletes `/etc/motd` (a `.wh.` entry) and
/// replaces `/www` (opaque) with one new page.
fn image() -> images::Image {
    let mut t = LayerTar::new();
    t.dir("etc/", 0o755)
        .file("etc/layer2", b"two\n", 0o644)
        .whiteout("etc/motd")
        .dir("www/", 0o755)
        .opaque("www")
        .file("www/page.html", b"layer two page\n", 0o644);
    images::image(vec![
        images::busybox(),
        images::layer_from_tar(t.into_bytes()),
    ])
}

fn push(reg: &Registry, repo_tag: &str, img: &images::Image) {
    let dir = tempfile::tempdir().unwrap();
    images::write_oci_layout(dir.path(), "t", img);
    skopeo_copy(
        &format!("oci:{}:t", dir.path().display()),
        &format!("docker://{}/{repo_tag}", reg.addr()),
        &[],
    );
}

fn is_whiteout(dir: &std::path::Path, name: &str) -> bool {
    let d = std::fs::File::open(dir).unwrap();
    match strata_fs::at::fstatat(d.as_fd(), OsStr::new(name)) {
        Ok(st) => strata_fs::format::is_whiteout(d.as_fd(), OsStr::new(name), &st, false),
        Err(_) => false,
    }
}

fn committed(w: &World) -> usize {
    w.metadata()["snapshots"]
        .as_object()
        .map(|m| m.values().filter(|r| r["kind"] == "committed").count())
        .unwrap_or(0)
}

#[test]
fn pull_run_commit_view_usage_labels_remove() {
    let reg = Registry::start();
    let img = image();
    push(&reg, "busybox:strata", &img);
    let r = format!("{}/busybox:strata", reg.addr());
    let w = World::start();
    let snap = |args: &[&str]| {
        let mut a = vec!["snapshots", "--snapshotter", "strata"];
        a.extend_from_slice(args);
        w.ctr_ok(&a)
    };

    guarded(w.path(), STEP * 3, || {
        // Pull: containerd unpacks each layer into a snapshot of ours (the second one through
        // a strata-overlay mount, so its whiteout lands in our layer dir as char 0/0).
        w.ctr_ok(&[
            "images",
            "pull",
            "--plain-http",
            "--snapshotter",
            "strata",
            &r,
        ]);
        assert_eq!(committed(&w), 2, "{}", w.metadata());
        let ls = snap(&["ls"]);
        assert_eq!(
            ls.lines().filter(|l| l.contains("Committed")).count(),
            2,
            "{ls}"
        );
        let top = w.metadata()["snapshots"]
            .as_object()
            .unwrap()
            .iter()
            .find(|(_, r)| r["kind"] == "committed" && r["parent"] != "")
            .map(|(k, _)| k.clone())
            .expect("layer 2 snapshot");
        let l2 = w.layer_dir(&top);
        assert_eq!(std::fs::read(l2.join("etc/layer2")).unwrap(), b"two\n");
        assert!(is_whiteout(&l2.join("etc"), "motd"), "etc/motd whiteout");

        // Run a command: the root filesystem is strata's FUSE mount with layer 2 applied.
        let out = w.run_container(
            true,
            &r,
            "c-run",
            &[
                "sh",
                "-c",
                "cat /etc/layer2; ls /etc/motd 2>&1; ls /www; grep ' / / ' /proc/self/mountinfo",
            ],
        );
        assert!(out.contains("two\n"), "{out}");
        assert!(out.contains("No such file"), "motd deleted: {out}");
        assert!(
            out.contains("page.html") && !out.contains("index.html"),
            "{out}"
        );
        assert!(out.contains(" - fuse "), "rootfs is a FUSE mount: {out}");

        // Write files in a container, keep its snapshot and commit it.
        w.run_container(
            false,
            &r,
            "c1",
            &[
                "sh",
                "-c",
                "echo hi > /hello && rm /etc/layer2 && mkdir -p /data && echo d > /data/f",
            ],
        );
        snap(&["commit", "c1-layer", "c1"]);
        let key = w.backend_key("c1-layer").expect("backend record");
        let layer = w.layer_dir(&key);
        assert_eq!(std::fs::read(layer.join("hello")).unwrap(), b"hi\n");
        assert_eq!(std::fs::read(layer.join("data/f")).unwrap(), b"d\n");
        assert!(is_whiteout(&layer.join("etc"), "layer2"));
        assert!(!layer.join("bin/busybox").exists(), "only the changes");

        // View of the three-layer stack: mounts through strata-overlay, read-only.
        snap(&["view", "v1", "c1-layer"]);
        let target = w.path().join("view");
        let cmd = snap(&["mounts", target.to_str().unwrap(), "v1"]);
        assert!(cmd.contains("fuse3.") && cmd.contains("lowerdir="), "{cmd}");
        let vkey = w.backend_key("v1").unwrap();
        let m = w.client().mounts(&vkey).unwrap();
        assert_eq!(m[0].options[0].matches(':').count(), 2, "{m:?}");
        {
            let g = mount(&m[0], &target);
            assert_eq!(std::fs::read(target.join("hello")).unwrap(), b"hi\n");
            assert!(!target.join("etc/layer2").exists());
            assert!(!target.join("etc/motd").exists());
            assert!(target.join("bin/busybox").exists());
            assert!(std::fs::write(target.join("x"), b"x").is_err());
            g.unmount().unwrap();
        }

        // Usage as containerd reports it is ours.
        let usage = snap(&["usage", "c1-layer"]);
        let (size, inodes) = w.client().usage(&key).unwrap();
        assert!(inodes >= 6, "root, hello, etc, whiteout, data, f: {inodes}");
        assert!(
            usage.lines().any(|l| l.starts_with("c1-layer")
                && l.split_whitespace().last() == Some(inodes.to_string().as_str())),
            "{usage} vs {size} {inodes}"
        );

        // Labels: containerd passes `containerd.io/snapshot/` labels on to us and back.
        snap(&[
            "label",
            "c1-layer",
            "containerd.io/snapshot/strata.test=yes",
        ]);
        let info = snap(&["info", "c1-layer"]);
        assert!(
            info.contains("\"containerd.io/snapshot/strata.test\": \"yes\""),
            "{info}"
        );
        let st = w.client().stat(&key).unwrap();
        assert_eq!(
            st.labels
                .get("containerd.io/snapshot/strata.test")
                .map(String::as_str),
            Some("yes")
        );

        // A parent with children cannot be removed: in containerd's metadata and in ours.
        let err = w.ctr_err(&["snapshots", "--snapshotter", "strata", "rm", "c1-layer"]);
        assert!(err.contains("child"), "{err}");
        let e = w.client().remove(&key).unwrap_err();
        assert_eq!(e.code(), Code::FailedPrecondition);

        // Remove everything: containerd's garbage collector removes our snapshots.
        snap(&["rm", "v1"]);
        snap(&["rm", "c1-layer"]);
        w.ctr_ok(&["containers", "rm", "c1"]);
        w.ctr_ok(&["images", "rm", &r]);
        // (A Remove drops the record first and the directory after it: wait for both.)
        let snaps = w.snap_root().join("snapshots");
        let gone = eventually(Duration::from_secs(30), || {
            let m = w.metadata();
            let no_records = m["snapshots"].as_object().is_some_and(|s| s.is_empty());
            let no_dirs = std::fs::read_dir(&snaps).ok()?.next().is_none();
            (no_records && no_dirs).then_some(())
        });
        let dirs: Vec<_> = std::fs::read_dir(&snaps).unwrap().collect();
        assert!(gone.is_some(), "left: {} {dirs:?}", w.metadata());
    });
    // Every mount daemon went away with its mount.
    let fuse_left = strata_testkit::mount::mounts()
        .into_iter()
        .filter(|m| m.mount_point.starts_with(w.path()))
        .count();
    assert_eq!(fuse_left, 0);
}
