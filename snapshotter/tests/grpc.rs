//! The snapshots API straight over the snapshotter's socket (no containerd in between, so
//! these are our semantics, not containerd's metadata layer): containerd's rules for active,
//! view and committed snapshots, labels, usage, List filters, Cleanup, and the returned mounts
//! performed for real (bind and `mount.fuse3` → strata-overlay), whiteouts included.

mod common;

use std::collections::HashMap;
use std::os::unix::fs::FileTypeExt;

use common::{guarded, mount, World, STEP};
use containerd_snapshots::tonic::Code;

fn labels(kv: &[(&str, &str)]) -> HashMap<String, String> {
    kv.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn snapshot_rules_labels_usage_and_list() {
    let mut w = World::snapshotter_only();
    let mut c = w.client();

    // Active without parent, committed with labels; the key is gone after commit.
    c.prepare_labels("a", "", labels(&[("containerd.io/snapshot/x", "1")]))
        .unwrap();
    let st = c.stat("a").unwrap();
    assert_eq!((st.name.as_str(), st.kind), ("a", 2));
    assert_eq!(st.labels, labels(&[("containerd.io/snapshot/x", "1")]));
    assert_eq!(c.prepare("a", "").unwrap_err().code(), Code::AlreadyExists);
    c.commit("base", "a", labels(&[("l", "v")])).unwrap();
    assert_eq!(c.stat("a").unwrap_err().code(), Code::NotFound);
    let base = c.stat("base").unwrap();
    assert_eq!(base.kind, 3);
    assert_eq!(base.parent, "");
    assert_eq!(base.labels, labels(&[("l", "v")]));
    assert_eq!(
        c.commit("base", "missing", HashMap::new())
            .unwrap_err()
            .code(),
        Code::NotFound
    );

    // Parents must exist and be committed; committed snapshots have no mounts.
    assert_eq!(c.prepare("b", "nope").unwrap_err().code(), Code::NotFound);
    c.prepare("act", "base").unwrap();
    assert_eq!(
        c.prepare("b", "act").unwrap_err().code(),
        Code::FailedPrecondition
    );
    assert_eq!(
        c.mounts("base").unwrap_err().code(),
        Code::FailedPrecondition
    );
    let m = c.mounts("act").unwrap();
    assert_eq!(
        m[0].r#type,
        format!("fuse3.{}", w.mount_program().display())
    );

    // Views: read-only, never committed.
    c.view("v", "base").unwrap();
    assert_eq!(c.stat("v").unwrap().kind, 1);
    assert_eq!(
        c.commit("vv", "v", HashMap::new()).unwrap_err().code(),
        Code::FailedPrecondition
    );

    // Labels round-trip through Update with containerd's field paths.
    let mut info = c.stat("base").unwrap();
    info.labels = labels(&[("l", "w"), ("n", "1")]);
    let up = c.update(info.clone(), &["labels.n"]).unwrap();
    assert_eq!(up.labels, labels(&[("l", "v"), ("n", "1")]));
    assert!(up.updated_at.unwrap().seconds >= up.created_at.unwrap().seconds);
    let up = c.update(info.clone(), &[]).unwrap();
    assert_eq!(up.labels, labels(&[("l", "w"), ("n", "1")]));
    assert_eq!(
        c.update(info.clone(), &["parent"]).unwrap_err().code(),
        Code::InvalidArgument
    );
    assert_eq!(c.stat("base").unwrap().labels, up.labels);

    // List and its filters.
    let names = |v: Vec<containerd_snapshots::api::snapshots::v1::Info>| {
        let mut n: Vec<String> = v.into_iter().map(|i| i.name).collect();
        n.sort();
        n
    };
    assert_eq!(names(c.list(&[]).unwrap()), ["act", "base", "v"]);
    assert_eq!(names(c.list(&["parent==base"]).unwrap()), ["act", "v"]);
    assert_eq!(
        names(c.list(&["kind==committed", "name==v"]).unwrap()),
        ["base", "v"]
    );
    assert_eq!(names(c.list(&["labels.n==1"]).unwrap()), ["base"]);
    assert_eq!(
        c.list(&["name~=x"]).unwrap_err().code(),
        Code::InvalidArgument
    );

    // Removing a parent with children fails; the children first, then it works.
    let err = c.remove("base").unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert!(err.message().contains("child"), "{}", err.message());
    c.remove("act").unwrap();
    c.remove("v").unwrap();
    c.remove("base").unwrap();
    assert_eq!(c.remove("base").unwrap_err().code(), Code::NotFound);
    assert!(c.list(&[]).unwrap().is_empty());
    let left: Vec<_> = std::fs::read_dir(w.snap_root().join("snapshots"))
        .unwrap()
        .collect();
    assert!(left.is_empty(), "{left:?}");

    // Cleanup removes directories without a record (as a crash leaves them).
    std::fs::create_dir_all(w.snap_root().join("snapshots/999/fs")).unwrap();
    c.cleanup().unwrap();
    assert!(!w.snap_root().join("snapshots/999").exists());
    drop(c);

    // One daemon per root: a second one is refused, one line, exit 125, no socket left.
    let other = w.path().join("other.sock");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_strata-snapshotter"))
        .arg("--root")
        .arg(w.snap_root())
        .arg("--address")
        .arg(&other)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(125));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.starts_with("Error: another strata-snapshotter uses"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(!other.exists());

    // SIGTERM: a clean exit that removes the socket.
    let st = w.stop_snapshotter().expect("stopped in time");
    assert!(st.success(), "{st}");
    assert!(!w.snap_sock().exists());
}

#[test]
fn mounts_stack_layers_through_strata_overlay() {
    let w = World::snapshotter_only();
    let mut c = w.client();
    // A fresh mountpoint per mount: a strata-overlay daemon that is still exiting after its
    // unmount would unmount a new mount at the same path (see docs/snapshotter.md, "Known
    // issue"); containerd itself uses a new path per mount.
    let mnt_no = std::cell::Cell::new(0);
    let next_mnt = || {
        mnt_no.set(mnt_no.get() + 1);
        w.path().join(format!("mnt{}", mnt_no.get()))
    };
    guarded(w.path(), STEP, || {
        // Layer 1 through a read-write bind mount (no parent).
        let m = c.prepare("l1", "").unwrap();
        assert_eq!(m[0].r#type, "bind");
        {
            let mnt = next_mnt();
            let g = mount(&m[0], &mnt);
            std::fs::create_dir(mnt.join("etc")).unwrap();
            std::fs::write(mnt.join("etc/keep"), b"keep").unwrap();
            std::fs::write(mnt.join("etc/gone"), b"gone").unwrap();
            g.unmount().unwrap();
        }
        c.commit("L1", "l1", HashMap::new()).unwrap();
        let (size, inodes) = c.usage("L1").unwrap();
        assert_eq!(inodes, 4, "root, etc, keep, gone");
        assert!(size > 0);

        // Layer 2 on top: the union mount, a delete becomes a whiteout in the layer dir.
        let m = c.prepare("l2", "L1").unwrap();
        assert!(m[0].r#type.starts_with("fuse3."), "{m:?}");
        {
            let mnt = next_mnt();
            let g = mount(&m[0], &mnt);
            assert!(g.is_fuse());
            assert_eq!(std::fs::read(mnt.join("etc/keep")).unwrap(), b"keep");
            std::fs::remove_file(mnt.join("etc/gone")).unwrap();
            std::fs::write(mnt.join("new"), b"new").unwrap();
            let (_, inodes) = c.usage("l2").unwrap();
            assert!(inodes >= 4, "root, etc, whiteout, new: {inodes}");
            g.unmount().unwrap();
        }
        c.commit("L2", "l2", HashMap::new()).unwrap();
        let l2_dir = w.layer_dir("L2");
        let wh = std::fs::symlink_metadata(l2_dir.join("etc/gone")).unwrap();
        assert!(wh.file_type().is_char_device(), "char 0/0 whiteout");
        {
            use std::os::fd::AsFd;
            let d = std::fs::File::open(l2_dir.join("etc")).unwrap();
            let st = strata_fs::at::fstatat(d.as_fd(), std::ffi::OsStr::new("gone")).unwrap();
            assert!(strata_fs::format::is_whiteout(
                d.as_fd(),
                std::ffi::OsStr::new("gone"),
                &st,
                false
            ));
        }

        // A view of the two-layer stack: read-only union, whiteout applied.
        let m = c.view("v", "L2").unwrap();
        assert_eq!(m[0].options.len(), 1, "lowerdir only: {m:?}");
        {
            let mnt = next_mnt();
            let g = mount(&m[0], &mnt);
            assert!(!mnt.join("etc/gone").exists());
            assert_eq!(std::fs::read(mnt.join("new")).unwrap(), b"new");
            assert!(
                std::fs::write(mnt.join("x"), b"x").is_err(),
                "view is read-only"
            );
            g.unmount().unwrap();
        }
        // A view of one layer: a read-only bind of that layer.
        let m = c.view("v1", "L1").unwrap();
        assert_eq!(m[0].r#type, "bind");
        assert!(m[0].options.contains(&"ro".to_string()));
        {
            let mnt = next_mnt();
            let g = mount(&m[0], &mnt);
            assert!(mnt.join("etc/gone").exists());
            assert!(std::fs::write(mnt.join("x"), b"x").is_err());
            g.unmount().unwrap();
        }
        for k in ["v", "v1", "L2", "L1"] {
            c.remove(k).unwrap();
        }
    });
}
