//! Store unit tests on real temp dirs (run as root: whiteouts are char devices).

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use strata_testkit::fixtures::{self, LayerTar};

use super::*;
use crate::digest::chain_ids;

fn store() -> (tempfile::TempDir, Store) {
    let t = tempfile::tempdir().unwrap();
    let s = Store::open(t.path()).unwrap();
    (t, s)
}

fn listing(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    fn walk(base: &Path, p: &Path, out: &mut Vec<String>) {
        let mut v: Vec<_> = std::fs::read_dir(p).unwrap().flatten().collect();
        v.sort_by_key(|e| e.file_name());
        for e in v {
            let path = e.path();
            out.push(path.strip_prefix(base).unwrap().display().to_string());
            if e.file_type().unwrap().is_dir() {
                walk(base, &path, out);
            }
        }
    }
    walk(root, root, &mut out);
    out.retain(|p| p != "store.lock");
    out
}

fn overlay_xattr(p: &Path, k: &str) -> Option<Vec<u8>> {
    use std::os::unix::ffi::OsStrExt;
    let cp = std::ffi::CString::new(p.as_os_str().as_bytes()).unwrap();
    let ck = std::ffi::CString::new(k).unwrap();
    let mut buf = [0u8; 16];
    let n = unsafe { libc::lgetxattr(cp.as_ptr(), ck.as_ptr(), buf.as_mut_ptr().cast(), 16) };
    (n >= 0).then(|| buf[..n as usize].to_vec())
}

#[test]
fn layer_roundtrip_and_overlay_format() {
    let (_t, s) = store();
    let base = fixtures::busybox_layer().unwrap();
    let l0 = s.add_layer(&base[..], None, None).unwrap();
    assert!(l0.created);
    assert_eq!(l0.diff_id.as_str(), fixtures::sha256(&base));
    assert_eq!(l0.chain_id.as_str(), l0.diff_id.as_str());
    let mut top = LayerTar::new();
    top.whiteout("etc/motd")
        .dir("home/", 0o755)
        .opaque("home")
        .file("home/new", b"new\n", 0o644)
        .file("data/a", b"x", 0o600)
        .hardlink("data/b", "data/a")
        .symlink("data/link", "/etc/passwd")
        .fifo("data/fifo")
        .file(".wh..wh.plnk", b"", 0o600);
    let top = top.into_bytes();
    let gz = fixtures::gzip(&top);
    let l1 = s.add_layer(&gz[..], Some(&l0.chain_id), None).unwrap();
    assert_eq!(l1.diff_id.as_str(), fixtures::sha256(&top));
    assert_eq!(
        l1.compressed_digest.as_ref().unwrap().as_str(),
        fixtures::sha256(&gz)
    );
    assert_eq!(l1.parent.as_ref(), Some(&l0.chain_id));
    let d = s.layer_diff_dir(&l1.chain_id);
    let wh = std::fs::symlink_metadata(d.join("etc/motd")).unwrap();
    assert!(wh.file_type().is_char_device());
    assert_eq!(wh.rdev(), 0);
    assert_eq!(
        overlay_xattr(&d.join("home"), "trusted.overlay.opaque"),
        Some(b"y".to_vec())
    );
    assert!(!d.join("home/.wh..wh..opq").exists());
    assert!(!d.join(".wh..wh.plnk").exists());
    let a = std::fs::metadata(d.join("data/a")).unwrap();
    let b = std::fs::metadata(d.join("data/b")).unwrap();
    assert_eq!(a.ino(), b.ino());
    assert_eq!(a.mode() & 0o7777, 0o600);
    assert_eq!(
        std::fs::read_link(d.join("data/link")).unwrap(),
        Path::new("/etc/passwd")
    );
    assert!(std::fs::symlink_metadata(d.join("data/fifo"))
        .unwrap()
        .file_type()
        .is_fifo());
    assert_eq!(l1.size, 4 + 1 + "/etc/passwd".len() as u64);

    // The exact tar comes back.
    let mut out = Vec::new();
    s.layer_tar(&l1.chain_id, &mut out).unwrap();
    assert_eq!(out, top);
    let mut out = Vec::new();
    s.layer_tar(&l0.chain_id, &mut out).unwrap();
    assert_eq!(out, base);

    // Idempotent, with and without a known diffID.
    let again = s.add_layer(&top[..], Some(&l0.chain_id), None).unwrap();
    assert!(!again.created);
    let known = s
        .add_layer(std::io::empty(), Some(&l0.chain_id), Some(&l1.diff_id))
        .unwrap();
    assert_eq!(known.chain_id, l1.chain_id);
    let dirs = s.layers().unwrap();
    assert_eq!(dirs.len(), 2);
}

#[test]
fn zstd_layers_are_detected() {
    let (_t, s) = store();
    let mut t = LayerTar::new();
    t.file("hello", b"world", 0o644);
    let t = t.into_bytes();
    let z = zstd::stream::encode_all(&t[..], 3).unwrap();
    let l = s.add_layer(&z[..], None, None).unwrap();
    assert_eq!(l.diff_id.as_str(), fixtures::sha256(&t));
    assert_eq!(
        std::fs::read(s.layer_diff_dir(&l.chain_id).join("hello")).unwrap(),
        b"world"
    );
}

fn assert_refused(s: &Store, root: &Path, tar: &[u8], parent: Option<&ChainId>, what: &str) {
    let before = listing(root);
    let err = s.add_layer(tar, parent, None).unwrap_err();
    let msg = err.to_string();
    assert!(!msg.contains('\n'), "{what}: multi-line error {msg}");
    assert_eq!(listing(root), before, "{what}: store changed ({msg})");
}

#[test]
fn hostile_layers_are_refused_and_leave_nothing() {
    let (t, s) = store();
    let outside = tempfile::tempdir().unwrap();
    let victim = outside.path().join("victim");
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("absolute", {
            let mut l = LayerTar::new();
            l.file("/abs", b"x", 0o644);
            l.into_bytes()
        }),
        ("dotdot", {
            let mut l = LayerTar::new();
            l.file("a/../../escape", b"x", 0o644);
            l.into_bytes()
        }),
        ("symlink-dir-escape", {
            let mut l = LayerTar::new();
            l.symlink("evil", outside.path().to_str().unwrap()).file(
                "evil/victim",
                b"pwned",
                0o644,
            );
            l.into_bytes()
        }),
        ("relative-symlink-escape", {
            let mut l = LayerTar::new();
            l.symlink("up", "../../../../../../../..")
                .file("up/tmp/victim", b"pwned", 0o644);
            l.into_bytes()
        }),
        ("hardlink-outside", {
            let mut l = LayerTar::new();
            l.hardlink("passwd", "/etc/passwd");
            l.into_bytes()
        }),
        ("hardlink-dotdot", {
            let mut l = LayerTar::new();
            l.hardlink("passwd", "../../../../etc/passwd");
            l.into_bytes()
        }),
        ("hardlink-missing", {
            let mut l = LayerTar::new();
            l.hardlink("x", "etc/passwd");
            l.into_bytes()
        }),
        ("hardlink-through-symlink", {
            let mut l = LayerTar::new();
            l.symlink("etc", "/etc").hardlink("x", "etc/passwd");
            l.into_bytes()
        }),
        ("whiteout-of-dot", {
            let mut l = LayerTar::new();
            l.file("keep", b"x", 0o644).file(".wh..", b"", 0o644);
            l.into_bytes()
        }),
        ("whiteout-of-dotdot", {
            let mut l = LayerTar::new();
            l.file("keep", b"x", 0o644).file(".wh...", b"", 0o644);
            l.into_bytes()
        }),
        ("whiteout-of-dotdot-in-subdir", {
            let mut l = LayerTar::new();
            l.file("keep", b"x", 0o644).file("sub/.wh...", b"", 0o644);
            l.into_bytes()
        }),
        ("truncated-gzip", {
            let mut l = LayerTar::new();
            l.file("big", &vec![7u8; 100_000], 0o644);
            let gz = fixtures::gzip(&l.into_bytes());
            gz[..gz.len() / 2].to_vec()
        }),
        ("truncated-tar", {
            let mut l = LayerTar::new();
            l.file("big", &vec![7u8; 100_000], 0o644);
            let b = l.into_bytes();
            b[..50_000].to_vec()
        }),
    ];
    for (what, tar) in &cases {
        assert_refused(&s, t.path(), tar, None, what);
    }
    assert!(!victim.exists());
    assert!(std::fs::read_dir(outside.path()).unwrap().next().is_none());

    for (what, tar) in cases.iter().filter(|(w, _)| w.starts_with("whiteout-of")) {
        let err = s.add_layer(&tar[..], None, None).unwrap_err().to_string();
        assert!(err.contains("whiteout of \".\" or \"..\""), "{what}: {err}");
    }

    // Wrong diffID.
    let mut l = LayerTar::new();
    l.file("ok", b"fine", 0o644);
    let good = l.into_bytes();
    let before = listing(t.path());
    let wrong = DiffId::from(Digest::of_bytes(b"not it"));
    let e = s.add_layer(&good[..], None, Some(&wrong)).unwrap_err();
    assert!(matches!(e, StoreError::DiffIdMismatch { .. }), "{e}");
    assert_eq!(listing(t.path()), before);
}

/// A whiteout of `.` or `..` is refused before it reaches an `*at()` call: the files next to
/// the extraction root, the root's own earlier entries and the parent of a subdir stay.
#[test]
fn whiteouts_of_dot_and_dotdot_touch_nothing() {
    for (name, entry) in [
        ("dot", ".wh.."),
        ("dotdot", ".wh..."),
        ("dotdot-in-subdir", "sub/.wh..."),
        ("dot-in-subdir", "sub/.wh.."),
    ] {
        let t = tempfile::tempdir().unwrap();
        std::fs::write(t.path().join("precious"), b"keep me").unwrap();
        let root = t.path().join("layer");
        std::fs::create_dir(&root).unwrap();
        let mut l = LayerTar::new();
        l.file("a", b"1", 0o644)
            .file("sub/b", b"2", 0o644)
            .file(entry, b"", 0o644);
        let tar = l.into_bytes();
        let fd = std::fs::File::open(&root).unwrap();
        use std::os::fd::AsFd;
        let err = extract::extract(
            &tar[..],
            fd.as_fd(),
            strata_fs::format::Flavour::Trusted,
            &mut std::io::sink(),
        )
        .unwrap_err();
        let msg = err.to_string();
        assert!(!msg.contains('\n'), "{name}: {msg}");
        assert_eq!(
            msg,
            format!("refusing unsafe archive entry {entry:?}: whiteout of \".\" or \"..\""),
            "{name}"
        );
        assert_eq!(
            std::fs::read(t.path().join("precious")).unwrap(),
            b"keep me",
            "{name}"
        );
        assert_eq!(std::fs::read(root.join("a")).unwrap(), b"1", "{name}");
        assert_eq!(std::fs::read(root.join("sub/b")).unwrap(), b"2", "{name}");
    }
}

fn config_for(layers: &[&[u8]], created: &str) -> Vec<u8> {
    let ids: Vec<String> = layers.iter().map(|l| fixtures::sha256(l)).collect();
    serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64", "os": "linux", "created": created,
        "config": {"Cmd": ["sh"]},
        "rootfs": {"type": "layers", "diff_ids": ids},
    }))
    .unwrap()
}

#[test]
fn images_refs_and_resolution() {
    let (_t, s) = store();
    let mut l = LayerTar::new();
    l.file("a", b"a", 0o644);
    let la = l.into_bytes();
    let info = s.add_layer(&la[..], None, None).unwrap();
    let r = |x: &str| Reference::parse(x).unwrap();
    let c1 = config_for(&[&la], "2024-01-01T00:00:00Z");
    let id1 = s
        .add_image(&c1, &[r("busybox"), r("busybox:1")], None)
        .unwrap();
    assert_eq!(id1.as_str(), fixtures::sha256(&c1));
    let rec = s.resolve("busybox").unwrap();
    assert_eq!(rec.id, id1);
    assert_eq!(rec.size, info.size);
    let tags: Vec<String> = rec.repo_tags.iter().map(|r| r.familiar()).collect();
    assert_eq!(tags, ["busybox:1", "busybox:latest"]);
    assert_eq!(s.resolve(id1.hex()).unwrap().id, id1);
    assert_eq!(s.resolve(id1.as_str()).unwrap().id, id1);
    assert_eq!(s.resolve(&id1.hex()[..3]).unwrap().id, id1);
    assert_eq!(s.resolve("docker.io/library/busybox:1").unwrap().id, id1);
    assert_eq!(
        s.resolve("nope").unwrap_err().to_string(),
        "No such image: nope:latest"
    );
    assert_eq!(
        s.resolve("Nope").unwrap_err().to_string(),
        "invalid reference format: repository name (library/Nope) must be lowercase"
    );
    assert_eq!(
        s.layer_dirs(&rec).unwrap(),
        vec![s.layer_diff_dir(&info.chain_id)]
    );

    // Moving a tag leaves the old image dangling.
    let c2 = config_for(&[&la], "2024-02-01T00:00:00Z");
    let id2 = s
        .add_image(&c2, &[r("busybox:1"), r("busybox:latest")], Some(&id1))
        .unwrap();
    let old = s.image(&id1).unwrap();
    assert!(old.is_untagged());
    let all = s.images().unwrap();
    assert_eq!(all.len(), 2);
    assert_eq!(all[0].id, id2, "newest first");
    assert_eq!(all[0].parent.as_ref(), Some(&id1));
    assert_eq!(s.children(&id1).unwrap(), vec![id2.clone()]);
    s.tag(&id1, &r("other:v1")).unwrap();
    assert_eq!(s.resolve("other:v1").unwrap().id, id1);
    assert_eq!(s.untag(&r("other:v1")).unwrap(), id1);
    assert!(s.untag(&r("other:v1")).is_err());

    // An image whose layers are missing is refused.
    let c3 = config_for(&[b"missing"], "2024-01-01T00:00:00Z");
    assert!(matches!(
        s.add_image(&c3, &[], None),
        Err(StoreError::NoSuchLayer(_))
    ));

    // Deleting drops refs and only unshared layers.
    let gone = s.delete_image_unchecked(&id2).unwrap();
    assert!(gone.is_empty(), "layer still used by id1");
    let gone = s.delete_image_unchecked(&id1).unwrap();
    assert_eq!(gone, vec![info.chain_id.clone()]);
    assert!(!s.has_layer(&info.chain_id));
    assert!(s.images().unwrap().is_empty());
}

#[test]
fn blobs_verify_digest() {
    let (t, s) = store();
    let d = s.put_blob(&b"hello"[..], None).unwrap();
    assert_eq!(s.read_blob(&d).unwrap(), b"hello");
    let before = listing(t.path());
    let wrong = Digest::of_bytes(b"other");
    assert!(matches!(
        s.put_blob(&b"hello!"[..], Some(&wrong)),
        Err(StoreError::DigestMismatch { .. })
    ));
    assert_eq!(listing(t.path()), before);
}

fn small_layer(s: &Store, name: &str, parent: Option<&ChainId>) -> (Vec<u8>, LayerInfo) {
    let mut l = LayerTar::new();
    l.file(name, name.as_bytes(), 0o644);
    let b = l.into_bytes();
    let info = s.add_layer(&b[..], parent, None).unwrap();
    (b, info)
}

#[test]
fn rmi_conflicts_follow_docker() {
    let (_t, s) = store();
    let r = |x: &str| Reference::parse(x).unwrap();
    let (la, _) = small_layer(&s, "a", None);
    let (lb, _) = small_layer(&s, "b", Some(&ChainId::from(Digest::of_bytes(&la))));
    let base_cfg = config_for(&[&la], "2024-01-01T00:00:00Z");
    let base = s
        .add_image(&base_cfg, &[r("base:1"), r("base:2")], None)
        .unwrap();
    let child_cfg = config_for(&[&la, &lb], "2024-02-01T00:00:00Z");
    let child = s
        .add_image(&child_cfg, &[r("child:1")], Some(&base))
        .unwrap();
    let ctr = ContainerUse {
        container_id: crate::container::ContainerId::parse(&"0123456789abcdef".repeat(4)).unwrap(),
        image: child.clone(),
        running: false,
    };
    let err = |q: &str, force: bool, c: &[ContainerUse]| {
        s.remove_image(q, force, true, c).unwrap_err().to_string()
    };
    // By ID with two tags (children are checked first, as moby does).
    s.tag(&child, &r("child:2")).unwrap();
    assert_eq!(
        err(child.hex(), false, &[]),
        format!("conflict: unable to delete {} (must be forced) - image is referenced in multiple repositories", child.short())
    );
    s.untag(&r("child:2")).unwrap();
    // Forced, but it has a child: hard conflict.
    assert_eq!(
        err(base.hex(), true, &[]),
        format!(
            "conflict: unable to delete {} (cannot be forced) - image has dependent child images",
            base.short()
        )
    );
    // The only tag of an image a container uses.
    assert_eq!(
        err("child:1", false, std::slice::from_ref(&ctr)),
        format!("conflict: unable to remove repository reference \"child:1\" (must force) - container 0123456789ab is using its referenced image {}", child.short())
    );
    assert_eq!(
        err(child.hex(), false, std::slice::from_ref(&ctr)),
        format!("conflict: unable to delete {} (must be forced) - image is being used by stopped container 0123456789ab", child.short())
    );
    let running = ContainerUse {
        running: true,
        ..ctr.clone()
    };
    assert_eq!(
        err(child.hex(), true, std::slice::from_ref(&running)),
        format!("conflict: unable to delete {} (cannot be forced) - image is being used by running container 0123456789ab", child.short())
    );
    // Forced past a stopped container: untagged, kept for the container.
    let ev = s
        .remove_image("child:1", true, true, std::slice::from_ref(&ctr))
        .unwrap();
    assert_eq!(
        ev,
        vec![RemoveEvent::Untagged(r("child:1").with_default_tag())]
    );
    assert!(s.image(&child).is_ok());
    // Without the container: deleting the child prunes nothing else (base is tagged), and
    // releases only the child's own layer.
    let ev = s.remove_image(child.short(), false, true, &[]).unwrap();
    let top = chain_ids(&[
        DiffId::from(Digest::of_bytes(&la)),
        DiffId::from(Digest::of_bytes(&lb)),
    ]);
    assert_eq!(
        ev,
        vec![
            RemoveEvent::Deleted(child.digest().clone()),
            RemoveEvent::Deleted(top[1].digest().clone())
        ]
    );
    // Untag one of two tags, then the last one deletes the image and its layer.
    assert_eq!(
        s.remove_image("base:1", false, true, &[]).unwrap(),
        vec![RemoveEvent::Untagged(r("base:1"))]
    );
    let ev = s.remove_image("base:2", false, true, &[]).unwrap();
    assert_eq!(
        ev,
        vec![
            RemoveEvent::Untagged(r("base:2")),
            RemoveEvent::Deleted(base.digest().clone()),
            RemoveEvent::Deleted(top[0].digest().clone())
        ]
    );
    assert!(s.layers().unwrap().is_empty());
    assert!(s.images().unwrap().is_empty());
}

#[test]
fn untagged_parents_are_pruned_with_their_child() {
    let (_t, s) = store();
    let r = |x: &str| Reference::parse(x).unwrap();
    let (la, _) = small_layer(&s, "a", None);
    let base = s
        .add_image(&config_for(&[&la], "2024-01-01T00:00:00Z"), &[], None)
        .unwrap();
    let child = s
        .add_image(
            &config_for(&[&la], "2024-02-01T00:00:00Z"),
            &[r("c:1")],
            Some(&base),
        )
        .unwrap();
    let ev = s.remove_image("c:1", false, true, &[]).unwrap();
    assert_eq!(ev.len(), 4, "{ev:?}"); // untag, child, parent, layer
    assert_eq!(ev[1], RemoveEvent::Deleted(child.digest().clone()));
    assert_eq!(ev[2], RemoveEvent::Deleted(base.digest().clone()));
    assert!(s.images().unwrap().is_empty());
}

#[test]
fn concurrent_tags_are_never_lost() {
    let (_t, s) = store();
    let (la, _) = small_layer(&s, "a", None);
    let id = s
        .add_image(&config_for(&[&la], "2024-01-01T00:00:00Z"), &[], None)
        .unwrap();
    std::thread::scope(|sc| {
        for i in 0..16 {
            let s = s.clone();
            let id = id.clone();
            sc.spawn(move || {
                s.tag(&id, &Reference::parse(&format!("t{i}:v")).unwrap())
                    .unwrap();
            });
        }
    });
    assert_eq!(s.image(&id).unwrap().repo_tags.len(), 16);
}

#[test]
fn stale_staging_is_cleaned_on_open() {
    let (t, _s) = store();
    let stale = t.path().join("tmp/999999999-1-0-layer");
    std::fs::create_dir_all(stale.join("diff")).unwrap();
    let live = t
        .path()
        .join(format!("tmp/{}-1-0-layer", std::process::id()));
    std::fs::create_dir_all(&live).unwrap();
    Store::open(t.path()).unwrap();
    assert!(!stale.exists());
    assert!(live.exists());
}

#[test]
fn long_names_xattrs_devices_and_rewrites() {
    let (_t, s) = store();
    let mut b = tar::Builder::new(Vec::new());
    let long_dir = format!("{}/{}", "d".repeat(120), "e".repeat(90));
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Directory);
    h.set_mode(0o755);
    h.set_size(0);
    b.append_data(&mut h, format!("{long_dir}/"), std::io::empty())
        .unwrap();
    let mut h = tar::Header::new_gnu();
    h.set_mode(0o644);
    h.set_size(3);
    b.append_data(
        &mut h,
        format!("{long_dir}/{}", "f".repeat(150)),
        &b"abc"[..],
    )
    .unwrap();
    // PAX xattr record on a file.
    b.append_pax_extensions([("SCHILY.xattr.user.test", &b"hello"[..])])
        .unwrap();
    let mut h = tar::Header::new_ustar();
    h.set_mode(0o644);
    h.set_size(2);
    b.append_data(&mut h, "withxattr", &b"xy"[..]).unwrap();
    // Overlay markers smuggled as xattrs are dropped.
    b.append_pax_extensions([("SCHILY.xattr.trusted.overlay.opaque", &b"y"[..])])
        .unwrap();
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(tar::EntryType::Directory);
    h.set_mode(0o755);
    h.set_size(0);
    b.append_data(&mut h, "notopaque/", std::io::empty())
        .unwrap();
    // A device node.
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(tar::EntryType::Char);
    h.set_mode(0o666);
    h.set_size(0);
    h.set_device_major(1).unwrap();
    h.set_device_minor(3).unwrap();
    b.append_data(&mut h, "dev/null", std::io::empty()).unwrap();
    // The same path twice: the later entry wins, and the tar still rebuilds exactly.
    for content in [&b"first version"[..], &b"second"[..]] {
        let mut h = tar::Header::new_ustar();
        h.set_mode(0o644);
        h.set_size(content.len() as u64);
        b.append_data(&mut h, "twice", content).unwrap();
    }
    let bytes = b.into_inner().unwrap();
    let l = s.add_layer(&bytes[..], None, None).unwrap();
    let d = s.layer_diff_dir(&l.chain_id);
    assert_eq!(
        std::fs::read(d.join(&long_dir).join("f".repeat(150))).unwrap(),
        b"abc"
    );
    assert_eq!(
        overlay_xattr(&d.join("withxattr"), "user.test"),
        Some(b"hello".to_vec())
    );
    assert_eq!(
        overlay_xattr(&d.join("notopaque"), "trusted.overlay.opaque"),
        None
    );
    let dev = std::fs::symlink_metadata(d.join("dev/null")).unwrap();
    assert!(dev.file_type().is_char_device());
    assert_eq!(dev.rdev(), libc::makedev(1, 3));
    assert_eq!(std::fs::read(d.join("twice")).unwrap(), b"second");
    let mut out = Vec::new();
    s.layer_tar(&l.chain_id, &mut out).unwrap();
    assert_eq!(out, bytes);
}

/// Owners and modes come out exactly as the tar says whether or not extraction could skip
/// `fchown`/`fchmod`: files below a set-group-ID directory keep the tar's group (not the
/// directory's), special bits survive, modes the umask would strip are restored, and an entry
/// replacing another of a different kind in the same layer replaces it.
#[test]
fn owners_and_modes_are_exact_below_setgid_dirs_and_across_kinds() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let (_t, s) = store();
    let mut b = tar::Builder::new(Vec::new());
    let entry = |b: &mut tar::Builder<Vec<u8>>, kind, path: &str, mode, gid, data: &[u8]| {
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_uid(0);
        h.set_gid(gid);
        h.set_size(data.len() as u64);
        b.append_data(&mut h, path, data).unwrap();
    };
    use tar::EntryType::{Directory, Regular};
    entry(&mut b, Directory, "mail/", 0o2775, 8, b"");
    entry(&mut b, Directory, "mail/sub/", 0o755, 0, b"");
    entry(&mut b, Regular, "mail/f", 0o644, 0, b"f");
    entry(&mut b, Regular, "mail/sub/g", 0o600, 0, b"g");
    entry(&mut b, Regular, "suid", 0o4755, 0, b"s");
    entry(&mut b, Regular, "open", 0o666, 0, b"o");
    entry(&mut b, Regular, "x", 0o644, 0, b"file first");
    entry(&mut b, Directory, "x/", 0o700, 0, b"");
    entry(&mut b, Directory, "y/", 0o755, 0, b"");
    entry(&mut b, Regular, "y/in", 0o644, 0, b"in");
    entry(&mut b, Regular, "y", 0o640, 5, b"file over dir");
    let bytes = b.into_inner().unwrap();
    let l = s.add_layer(&bytes[..], None, None).unwrap();
    let d = s.layer_diff_dir(&l.chain_id);
    let md = |p: &str| std::fs::symlink_metadata(d.join(p)).unwrap();
    assert_eq!((md("mail").gid(), md("mail").mode() & 0o7777), (8, 0o2775));
    assert_eq!(
        md("mail/f").gid(),
        0,
        "group from the tar, not the setgid dir"
    );
    assert_eq!(md("mail/sub").gid(), 0);
    assert_eq!(md("mail/sub/g").gid(), 0);
    assert_eq!(md("mail/sub/g").permissions().mode() & 0o7777, 0o600);
    assert_eq!(md("suid").mode() & 0o7777, 0o4755);
    assert_eq!(md("open").mode() & 0o7777, 0o666, "umask bits restored");
    assert!(md("x").is_dir());
    assert_eq!(md("x").mode() & 0o7777, 0o700);
    assert!(md("y").is_file());
    assert_eq!((md("y").gid(), md("y").mode() & 0o7777), (5, 0o640));
    assert_eq!(std::fs::read(d.join("y")).unwrap(), b"file over dir");
    let mut out = Vec::new();
    s.layer_tar(&l.chain_id, &mut out).unwrap();
    assert_eq!(out, bytes);
}

#[test]
fn replacing_a_dir_or_whiting_out_in_the_same_layer_still_rebuilds() {
    let (_t, s) = store();
    let mut l = LayerTar::new();
    l.dir("d/", 0o755)
        .file("d/f", b"inside d", 0o644)
        .dir("d/sub/", 0o755)
        .file("d/sub/g", b"deeper", 0o644)
        .file("d", b"d is a file now", 0o644)
        .file("w", b"to be whited out", 0o644)
        .whiteout("w");
    let bytes = l.into_bytes();
    let info = s.add_layer(&bytes[..], None, None).unwrap();
    let d = s.layer_diff_dir(&info.chain_id);
    assert_eq!(std::fs::read(d.join("d")).unwrap(), b"d is a file now");
    assert!(std::fs::symlink_metadata(d.join("w"))
        .unwrap()
        .file_type()
        .is_char_device());
    let mut out = Vec::new();
    s.layer_tar(&info.chain_id, &mut out).unwrap();
    assert_eq!(out, bytes);
}

#[test]
fn until_accepts_docker_forms() {
    let now = chrono::DateTime::parse_from_rfc3339("2024-06-01T12:00:00Z")
        .unwrap()
        .with_timezone(&chrono::Utc);
    let t = |s: &str| crate::timeargs::parse_time_arg(s, now).map(|t| t.to_rfc3339());
    assert_eq!(t("24h").unwrap(), "2024-05-31T12:00:00+00:00");
    assert_eq!(t("1h30m").unwrap(), "2024-06-01T10:30:00+00:00");
    assert_eq!(t("2024-01-02").unwrap(), "2024-01-02T00:00:00+00:00");
    assert_eq!(
        t("2024-01-02T03:04:05").unwrap(),
        "2024-01-02T03:04:05+00:00"
    );
    assert_eq!(
        t("2024-01-02T03:04:05Z").unwrap(),
        "2024-01-02T03:04:05+00:00"
    );
    assert_eq!(t("1704067200").unwrap(), "2024-01-01T00:00:00+00:00");
    assert!(t("soon").is_none());
    assert!(t("10x").is_none());
}

#[test]
fn gnu_sparse_entries_extract_and_rebuild() {
    let (t, s) = store();
    let src = t.path().join("sparse-src");
    std::fs::create_dir(&src).unwrap();
    let f = std::fs::File::create(src.join("holes")).unwrap();
    use std::io::{Seek, Write};
    let mut f = f;
    f.write_all(b"head").unwrap();
    f.seek(std::io::SeekFrom::Start(1 << 20)).unwrap();
    f.write_all(b"tail").unwrap();
    drop(f);
    let tar = t.path().join("sparse.tar");
    let ok = std::process::Command::new("tar")
        .args(["--sparse", "--format=gnu", "-cf"])
        .arg(&tar)
        .arg("-C")
        .arg(&src)
        .arg("holes")
        .status()
        .unwrap()
        .success();
    assert!(ok);
    let bytes = std::fs::read(&tar).unwrap();
    let info = s.add_layer(&bytes[..], None, None).unwrap();
    let got = std::fs::read(s.layer_diff_dir(&info.chain_id).join("holes")).unwrap();
    assert_eq!(got.len(), (1 << 20) + 4);
    assert_eq!(&got[..4], b"head");
    assert_eq!(&got[1 << 20..], b"tail");
    assert!(got[4..1 << 20].iter().all(|b| *b == 0));
    let mut out = Vec::new();
    s.layer_tar(&info.chain_id, &mut out).unwrap();
    assert_eq!(out, bytes);
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(bytes).unwrap();
    gz.finish().unwrap()
}

fn blob_names(root: &Path) -> std::collections::BTreeSet<String> {
    std::fs::read_dir(root.join("blobs/sha256"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

/// An image as a pull leaves it: compressed layer blobs, layers recording them, a manifest
/// (and optionally an index naming it) referenced by `name@digest`, and the config.
fn pulled_image(s: &Store, name: &str, tars: &[&[u8]], index: bool) -> (ImageId, Vec<Digest>) {
    let mut blobs = Vec::new();
    let mut parent: Option<ChainId> = None;
    let mut layers = Vec::new();
    for tar in tars {
        let gz = gzip(tar);
        let d = s.put_blob(&gz[..], None).unwrap();
        let info = s.add_layer(&gz[..], parent.as_ref(), None).unwrap();
        assert_eq!(info.compressed_digest.as_ref(), Some(&d));
        parent = Some(info.chain_id);
        layers.push(serde_json::json!({"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip", "digest": d.to_string(), "size": gz.len()}));
        blobs.push(d);
    }
    let config = config_for(tars, "2024-01-01T00:00:00Z");
    let config_digest = Digest::of_bytes(&config);
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "digest": config_digest.to_string(), "size": config.len()},
        "layers": layers,
    }))
    .unwrap();
    let mut top = s.put_blob(&manifest[..], None).unwrap();
    blobs.push(top.clone());
    if index {
        let idx = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": [{"mediaType": "application/vnd.docker.distribution.manifest.v2+json", "digest": top.to_string(), "size": manifest.len(), "platform": {"os": "linux", "architecture": "amd64"}}],
        }))
        .unwrap();
        top = s.put_blob(&idx[..], None).unwrap();
        blobs.push(top.clone());
    }
    let r = |s: &str| Reference::parse(s).unwrap();
    let refs = [r(&format!("{name}:latest")), r(&format!("{name}@{top}"))];
    let id = s.add_image(&config, &refs, None).unwrap();
    blobs.push(id.digest().clone());
    (id, blobs)
}

#[test]
fn removing_an_image_deletes_the_blobs_only_it_used() {
    let (t, s) = store();
    let mut base = LayerTar::new();
    base.file("etc/base", b"base\n", 0o644);
    let base = base.into_bytes();
    let mut a = LayerTar::new();
    a.file("a", b"only a\n", 0o644);
    let a = a.into_bytes();
    let mut b = LayerTar::new();
    b.file("b", b"only b\n", 0o644);
    let b = b.into_bytes();
    let (ida, blobs_a) = pulled_image(&s, "a", &[&base, &a], true);
    let (idb, blobs_b) = pulled_image(&s, "b", &[&base, &b], false);
    // A blob nothing registered yet (as a concurrent pull leaves it): never collected.
    let stray = s.put_blob(&b"in flight"[..], None).unwrap();
    let hexes = |v: &[Digest]| -> std::collections::BTreeSet<String> {
        v.iter().map(|d| d.hex().to_string()).collect()
    };
    let mut all = hexes(&blobs_a);
    all.extend(hexes(&blobs_b));
    all.insert(stray.hex().to_string());
    assert_eq!(blob_names(t.path()), all);

    s.delete_image_unchecked(&ida).unwrap();
    // Left: everything of b (the shared base layer's blob among it) and the stray blob.
    let mut want = hexes(&blobs_b);
    want.insert(stray.hex().to_string());
    assert_eq!(blob_names(t.path()), want);
    assert!(s.resolve("b:latest").is_ok());

    s.delete_image_unchecked(&idb).unwrap();
    assert_eq!(
        blob_names(t.path()),
        [stray.hex().to_string()].into_iter().collect()
    );
    assert!(s.layers().unwrap().is_empty());
}

fn one_file_layer(name: &str) -> Vec<u8> {
    let mut t = LayerTar::new();
    t.file(name, name.as_bytes(), 0o644);
    t.into_bytes()
}

#[test]
fn gc_keeps_what_images_and_live_leases_need_and_sweeps_the_rest() {
    let (t, s) = store();
    // An image: its config blob and layer are roots.
    let kept = one_file_layer("kept");
    let l = {
        let _scope = s.lease_scope();
        s.add_layer(&kept[..], None, None).unwrap()
    };
    let cfg = serde_json::json!({"architecture": "amd64", "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": [l.diff_id.as_str()]}});
    let id = s
        .add_image(
            cfg.to_string().as_bytes(),
            &[Reference::parse("kept:1").unwrap()],
            None,
        )
        .unwrap();
    let before = listing(t.path());

    // In flight: a layer and a blob under a live lease (an open scope of this process).
    let scope = s.lease_scope();
    let pending = s
        .add_layer(&one_file_layer("pending")[..], None, None)
        .unwrap();
    let pending_blob = s.put_blob_bytes(b"pending blob").unwrap();
    let report = s.gc(false).unwrap();
    assert!(
        report.layers.is_empty() && report.blobs.is_empty(),
        "{report:?}"
    );
    assert!(s.has_layer(&pending.chain_id) && s.has_blob(&pending_blob));

    // The operation died: its lease is gone, what it added is orphaned; a partial download
    // nobody holds and another process's dead staging and lease go with it.
    drop(scope);
    std::fs::create_dir_all(t.path().join("partial")).unwrap();
    std::fs::write(t.path().join("partial/sha256-00.partial"), b"half").unwrap();
    std::fs::create_dir_all(t.path().join("tmp/999999999-1-0-layer/diff")).unwrap();
    std::fs::write(
        t.path().join("leases/999999999-1"),
        format!("layer {}\n", pending.chain_id.hex()),
    )
    .unwrap();
    let dry = s.gc(true).unwrap();
    assert_eq!(dry.layers.len(), 1, "{dry:?}");
    assert!(s.has_layer(&pending.chain_id), "a dry run removes nothing");
    let report = s.gc(false).unwrap();
    assert_eq!(report, dry);
    assert_eq!(
        report.layers.iter().map(|l| &l.0).collect::<Vec<_>>(),
        vec![&pending.chain_id]
    );
    assert_eq!(
        report.blobs.iter().map(|b| &b.0).collect::<Vec<_>>(),
        vec![&pending_blob]
    );
    assert_eq!(report.partials, vec![("sha256-00.partial".to_string(), 4)]);
    assert_eq!(report.stale_entries, 2, "dead staging and dead lease");
    assert!(report.bytes() > 0);
    let mut after = listing(t.path());
    after.retain(|p| p != "partial");
    assert_eq!(after, before);
    assert!(s.image(&id).is_ok() && s.has_layer(&l.chain_id));
}

#[test]
fn a_locked_partial_download_is_not_swept() {
    let (t, s) = store();
    std::fs::create_dir_all(t.path().join("partial")).unwrap();
    let p = t.path().join("partial/sha256-11.partial");
    std::fs::write(&p, b"downloading").unwrap();
    let f = std::fs::File::open(&p).unwrap();
    let held = nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusive).unwrap();
    assert!(s.gc(false).unwrap().partials.is_empty());
    assert!(p.exists());
    drop(held);
    assert_eq!(s.gc(false).unwrap().partials.len(), 1);
    assert!(!p.exists());
}
