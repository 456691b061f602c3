//! Unit tests of diff and the layer tar on hand-made upper dirs and on real kernel-overlay
//! upper dirs (root only, as every strata test).

use std::ffi::CString;
use std::fs;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};

use super::*;

fn write(p: &Path, data: &str) {
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(p, data).unwrap();
}

fn whiteout(p: &Path) {
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    nix::sys::stat::mknod(
        p,
        nix::sys::stat::SFlag::S_IFCHR,
        nix::sys::stat::Mode::empty(),
        0,
    )
    .unwrap();
}

fn set_xattr(p: &Path, key: &str, value: &[u8]) {
    let path = CString::new(p.as_os_str().as_bytes()).unwrap();
    let key = CString::new(key).unwrap();
    // SAFETY: valid C strings and a buffer of `value.len()` bytes.
    let r = unsafe {
        libc::lsetxattr(
            path.as_ptr(),
            key.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    assert_eq!(r, 0, "setxattr {key:?} on {}", p.display());
}

fn lines(changes: &[Change]) -> Vec<String> {
    changes.iter().map(|c| c.to_string()).collect()
}

/// The SPEC §3 example (`rm /etc/shadow; rm -rf /usr/sbin; mkdir /usr/sbin; echo hi >
/// /usr/sbin/newtool; rm -rf /home; echo new > /etc/motd`) as a hand-made upper dir, plus the
/// runtime's own files that must never show up.
fn spec_example(t: &Path) -> (PathBuf, PathBuf) {
    let lower = t.join("lower");
    let upper = t.join("upper");
    write(&lower.join("etc/passwd"), "root:x:0:0\n");
    write(&lower.join("etc/shadow"), "root:*\n");
    write(&lower.join("etc/motd"), "old\n");
    write(&lower.join("usr/sbin/oldtool"), "x");
    write(&lower.join("home/user/.profile"), "x");
    write(&lower.join("bin/sh"), "x");
    whiteout(&upper.join("etc/shadow"));
    write(&upper.join("etc/motd"), "new\n");
    write(&upper.join("etc/hosts"), "127.0.0.1 localhost\n");
    write(&upper.join("etc/resolv.conf"), "");
    whiteout(&upper.join("home"));
    write(&upper.join("usr/sbin/newtool"), "hi\n");
    set_xattr(&upper.join("usr/sbin"), "trusted.overlay.opaque", b"y");
    fs::create_dir_all(upper.join("proc")).unwrap();
    (upper, lower)
}

#[test]
fn diff_spec_example() {
    let t = tempfile::tempdir().unwrap();
    let (upper, lower) = spec_example(t.path());
    let got = lines(&diff(&upper, &[lower]).unwrap());
    assert_eq!(
        got,
        [
            "C /etc",
            "C /etc/motd",
            "D /etc/shadow",
            "D /home",
            "C /usr",
            "D /usr/sbin",
            "A /usr/sbin/newtool"
        ]
    );
}

#[test]
fn diff_ancestors_unchanged_dirs_and_wh_forms() {
    let t = tempfile::tempdir().unwrap();
    let lower = t.path().join("lower");
    let upper = t.path().join("upper");
    write(&lower.join("usr/share/nginx/html/index.html"), "welcome");
    write(&lower.join("var/lib/keep"), "k");
    write(&lower.join("opt/a"), "a");
    write(&lower.join("opt/b"), "b");
    // Copied-up ancestors with the same metadata as below: only reported because of a child.
    write(&upper.join("usr/share/nginx/html/index.html"), "hello");
    for d in [
        "usr/share/nginx/html",
        "usr/share/nginx",
        "usr/share",
        "usr",
    ] {
        let meta = fs::metadata(lower.join(d)).unwrap();
        let up = upper.join(d);
        fs::set_permissions(&up, meta.permissions()).unwrap();
        let mtime = nix::sys::time::TimeSpec::new(
            std::os::unix::fs::MetadataExt::mtime(&meta),
            std::os::unix::fs::MetadataExt::mtime_nsec(&meta),
        );
        nix::sys::stat::utimensat(
            nix::fcntl::AT_FDCWD,
            &up,
            &mtime,
            &mtime,
            nix::sys::stat::UtimensatFlags::NoFollowSymlink,
        )
        .unwrap();
    }
    // An unchanged copied-up dir with nothing reported inside: skipped entirely.
    fs::create_dir_all(upper.join("var/lib")).unwrap();
    for d in ["var/lib", "var"] {
        let meta = fs::metadata(lower.join(d)).unwrap();
        let mtime = nix::sys::time::TimeSpec::new(
            std::os::unix::fs::MetadataExt::mtime(&meta),
            std::os::unix::fs::MetadataExt::mtime_nsec(&meta),
        );
        fs::set_permissions(upper.join(d), meta.permissions()).unwrap();
        nix::sys::stat::utimensat(
            nix::fcntl::AT_FDCWD,
            &upper.join(d),
            &mtime,
            &mtime,
            nix::sys::stat::UtimensatFlags::NoFollowSymlink,
        )
        .unwrap();
    }
    // fuse-overlayfs style: `.wh.` whiteout files and a `.wh..wh..opq` marker.
    write(&upper.join("opt/.wh.a"), "");
    write(&upper.join("srv/new/.wh..wh..opq"), "");
    write(&upper.join("srv/new/file"), "f");
    let got = lines(&diff(&upper, &[lower]).unwrap());
    assert_eq!(
        got,
        [
            "C /opt",
            "D /opt/a",
            "A /srv",
            "A /srv/new",
            "A /srv/new/file",
            "C /usr",
            "C /usr/share",
            "C /usr/share/nginx",
            "C /usr/share/nginx/html",
            "C /usr/share/nginx/html/index.html",
        ]
    );
}

#[test]
fn diff_respects_whiteouts_and_opaque_in_lowers() {
    let t = tempfile::tempdir().unwrap();
    let l0 = t.path().join("l0"); // bottom
    let l1 = t.path().join("l1"); // top
    let upper = t.path().join("upper");
    write(&l0.join("a/gone"), "x");
    write(&l0.join("b/hidden"), "x");
    whiteout(&l1.join("a/gone"));
    fs::create_dir_all(l1.join("b")).unwrap();
    set_xattr(&l1.join("b"), "trusted.overlay.opaque", b"y");
    // Re-created over a lower whiteout / under a lower opaque dir: these are additions.
    write(&upper.join("a/gone"), "again");
    write(&upper.join("b/hidden"), "again");
    let got = lines(&diff(&upper, &[l1, l0]).unwrap());
    assert_eq!(got, ["C /a", "A /a/gone", "C /b", "A /b/hidden"]);
}

#[test]
fn diff_never_follows_symlinks_out_of_the_layer() {
    let t = tempfile::tempdir().unwrap();
    let lower = t.path().join("lower");
    let upper = t.path().join("upper");
    let outside = t.path().join("outside");
    write(&outside.join("secret/file"), "s");
    fs::create_dir_all(&lower).unwrap();
    fs::create_dir_all(&upper).unwrap();
    // A lower symlink to a host dir must not make `/evil/file` look like a change of it.
    symlink(outside.join("secret"), lower.join("evil")).unwrap();
    fs::create_dir_all(upper.join("evil")).unwrap();
    write(&upper.join("evil/file"), "mine");
    let got = lines(&diff(&upper, &[lower]).unwrap());
    assert_eq!(got, ["C /evil", "A /evil/file"]);
}

#[test]
fn volumes_are_excluded() {
    let t = tempfile::tempdir().unwrap();
    let (upper, lower) = spec_example(t.path());
    write(&upper.join("data/db"), "x");
    let filter = Filter::docker().exclude("/data").exclude("/usr");
    let got = lines(&diff_filtered(&upper, &[lower], &filter).unwrap());
    assert_eq!(got, ["C /etc", "C /etc/motd", "D /etc/shadow", "D /home"]);
}

struct Entry {
    path: String,
    kind: tar::EntryType,
    link: Option<String>,
    data: Vec<u8>,
    xattrs: Vec<(String, Vec<u8>)>,
    mode: u32,
}

fn read_layer(blob: &[u8]) -> (Vec<u8>, Vec<Entry>) {
    let mut plain = Vec::new();
    flate2::read::GzDecoder::new(blob)
        .read_to_end(&mut plain)
        .unwrap();
    let mut entries = Vec::new();
    let mut ar = tar::Archive::new(plain.as_slice());
    for e in ar.entries().unwrap() {
        let mut e = e.unwrap();
        let mut xattrs = Vec::new();
        if let Some(pax) = e.pax_extensions().unwrap() {
            for r in pax {
                let r = r.unwrap();
                if let Some(k) = r.key().unwrap().strip_prefix("SCHILY.xattr.") {
                    xattrs.push((k.to_string(), r.value_bytes().to_vec()));
                }
            }
        }
        let path = String::from_utf8(e.path_bytes().to_vec()).unwrap();
        let kind = e.header().entry_type();
        let link = e
            .link_name_bytes()
            .map(|l| String::from_utf8(l.to_vec()).unwrap());
        let mode = e.header().mode().unwrap();
        let mut data = Vec::new();
        e.read_to_end(&mut data).unwrap();
        entries.push(Entry {
            path,
            kind,
            link,
            data,
            xattrs,
            mode,
        });
    }
    (plain, entries)
}

#[test]
fn layer_tar_of_spec_example() {
    let t = tempfile::tempdir().unwrap();
    let (upper, lower) = spec_example(t.path());
    write(&upper.join("srv/a"), "linked");
    fs::hard_link(upper.join("srv/a"), upper.join("srv/b")).unwrap();
    symlink("/etc/motd", upper.join("srv/motd")).unwrap();
    set_xattr(&upper.join("srv/a"), "user.note", b"hello");
    fs::set_permissions(upper.join("srv/a"), fs::Permissions::from_mode(0o4755)).unwrap();
    let long = "d".repeat(120);
    write(&upper.join(format!("srv/{long}/{long}/f")), "deep");
    nix::unistd::mkfifo(
        &upper.join("srv/fifo"),
        nix::sys::stat::Mode::from_bits_truncate(0o644),
    )
    .unwrap();

    let (digests, blob) = write_layer_tar(&upper, &[lower], &Filter::docker(), Vec::new()).unwrap();
    let (plain, entries) = read_layer(&blob);
    assert_eq!(
        digests.diff_id.as_str(),
        format!("sha256:{}", hex::encode(Sha256::digest(&plain)))
    );
    assert_eq!(digests.size, plain.len() as u64);
    assert_eq!(
        digests.compressed_digest.as_str(),
        format!("sha256:{}", hex::encode(Sha256::digest(&blob)))
    );
    assert_eq!(digests.compressed_size, blob.len() as u64);
    assert_eq!(digests.entries, entries.len());

    let names: Vec<&str> = entries.iter().map(|e| e.path.as_str()).collect();
    let deep = format!("srv/{long}/{long}/f");
    let expected = vec![
        "etc/".to_string(),
        "etc/motd".into(),
        "etc/.wh.shadow".into(),
        ".wh.home".into(),
        "srv/".into(),
        "srv/a".into(),
        "srv/b".into(),
        format!("srv/{long}/"),
        format!("srv/{long}/{long}/"),
        deep.clone(),
        "srv/fifo".into(),
        "srv/motd".into(),
        "usr/".into(),
        "usr/sbin/".into(),
        "usr/sbin/.wh..wh..opq".into(),
        "usr/sbin/newtool".into(),
    ];
    assert_eq!(names, expected);
    let by = |p: &str| entries.iter().find(|e| e.path == p).unwrap();
    assert_eq!(by("etc/motd").data, b"new\n");
    assert_eq!(by("etc/.wh.shadow").kind, tar::EntryType::Regular);
    assert_eq!(by("srv/a").kind, tar::EntryType::Regular);
    assert_eq!(by("srv/a").mode, 0o4755);
    assert_eq!(
        by("srv/a").xattrs,
        vec![("user.note".to_string(), b"hello".to_vec())]
    );
    assert_eq!(by("srv/b").kind, tar::EntryType::Link);
    assert_eq!(by("srv/b").link.as_deref(), Some("srv/a"));
    assert_eq!(by("srv/motd").kind, tar::EntryType::Symlink);
    assert_eq!(by("srv/motd").link.as_deref(), Some("/etc/motd"));
    assert_eq!(by("srv/fifo").kind, tar::EntryType::Fifo);
    assert_eq!(by(&deep).data, b"deep");
    assert!(
        by("usr/sbin/").xattrs.is_empty(),
        "overlay xattrs are not content"
    );
}

#[test]
fn empty_changes_make_the_empty_tar() {
    let t = tempfile::tempdir().unwrap();
    let lower = t.path().join("lower");
    let upper = t.path().join("upper");
    write(&lower.join("bin/sh"), "x");
    write(&lower.join("etc/passwd"), "x");
    // The runtime's mounts: /etc copied up with a new mtime, /dev and /run/.containerenv added.
    write(&upper.join("etc/hosts"), "127.0.0.1 localhost\n");
    write(&upper.join("run/.containerenv"), "");
    fs::create_dir_all(upper.join("dev/pts")).unwrap();
    assert!(diff(&upper, std::slice::from_ref(&lower))
        .unwrap()
        .is_empty());
    // …but an empty dir the container made is a change.
    fs::create_dir_all(upper.join("srv/empty")).unwrap();
    assert_eq!(
        lines(&diff(&upper, std::slice::from_ref(&lower)).unwrap()),
        ["A /srv", "A /srv/empty"]
    );
    fs::remove_dir_all(upper.join("srv")).unwrap();
    let (d, blob) = write_layer_tar(&upper, &[lower], &Filter::docker(), Vec::new()).unwrap();
    assert_eq!(d.entries, 0);
    let (plain, entries) = read_layer(&blob);
    assert!(entries.is_empty());
    assert!(plain.iter().all(|b| *b == 0));
}

/// Unmounts on drop, lazily if busy.
struct Mounted(PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        if nix::mount::umount(&self.0).is_err() {
            let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
        }
    }
}

/// The same changes made through a real kernel overlay mount: our reading of the upper dir the
/// kernel wrote must match what the SPEC says Docker prints.
#[test]
fn diff_of_a_real_kernel_overlay_upper() {
    let t = tempfile::tempdir().unwrap();
    let lower = t.path().join("lower");
    let upper = t.path().join("upper");
    let work = t.path().join("work");
    let merged = t.path().join("merged");
    write(&lower.join("etc/shadow"), "root:*\n");
    write(&lower.join("etc/motd"), "old\n");
    write(&lower.join("usr/sbin/oldtool"), "x");
    write(&lower.join("home/user/.profile"), "x");
    write(&lower.join("www/index.html"), "welcome");
    for d in [&upper, &work, &merged] {
        fs::create_dir_all(d).unwrap();
    }
    let opts = format!(
        "lowerdir={},upperdir={},workdir={}",
        lower.display(),
        upper.display(),
        work.display()
    );
    nix::mount::mount(
        Some("overlay"),
        &merged,
        Some("overlay"),
        nix::mount::MsFlags::empty(),
        Some(opts.as_str()),
    )
    .unwrap();
    let guard = Mounted(merged.clone());
    fs::remove_file(merged.join("etc/shadow")).unwrap();
    fs::remove_dir_all(merged.join("usr/sbin")).unwrap();
    fs::create_dir(merged.join("usr/sbin")).unwrap();
    fs::write(merged.join("usr/sbin/newtool"), "hi\n").unwrap();
    fs::remove_dir_all(merged.join("home")).unwrap();
    fs::write(merged.join("etc/motd"), "new\n").unwrap();
    fs::write(merged.join("www/index.html"), "<h1>Hello strata</h1>\n").unwrap();
    drop(guard);
    let got = lines(&diff(&upper, std::slice::from_ref(&lower)).unwrap());
    assert_eq!(
        got,
        [
            "C /etc",
            "C /etc/motd",
            "D /etc/shadow",
            "D /home",
            "C /usr",
            "D /usr/sbin",
            "A /usr/sbin/newtool",
            "C /www",
            "C /www/index.html",
        ]
    );
    let (_, blob) = write_layer_tar(&upper, &[lower], &Filter::docker(), Vec::new()).unwrap();
    let (_, entries) = read_layer(&blob);
    let names: Vec<&str> = entries.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(
        names,
        [
            "etc/",
            "etc/motd",
            "etc/.wh.shadow",
            ".wh.home",
            "usr/",
            "usr/sbin/",
            "usr/sbin/.wh..wh..opq",
            "usr/sbin/newtool",
            "www/",
            "www/index.html"
        ]
    );
}

mod commit_tests {
    use super::*;
    use crate::digest::ImageId;
    use crate::reference::Reference;
    use crate::store::Store;
    use strata_testkit::fixtures;

    /// A store holding the two-layer fixture image `web:v1`; returns (store, image ID).
    fn store_with_image(root: &Path) -> (Store, ImageId) {
        let store = Store::open(root).unwrap();
        let spec = fixtures::layered_spec("web:v1").unwrap();
        let mut parent = None;
        for l in &spec.layers {
            let info = store
                .add_layer(l.as_slice(), parent.as_ref(), None)
                .unwrap();
            parent = Some(info.chain_id);
        }
        let r = Reference::parse_with_default_tag("web:v1").unwrap();
        let id = store.add_image(&spec.config_bytes(), &[r], None).unwrap();
        (store, id)
    }

    fn request(upper: &Path, image: &ImageId, tag: Option<&str>) -> CommitRequest {
        CommitRequest {
            upper: upper.to_path_buf(),
            full_tree: false,
            extra_lowers: vec![],
            image: image.clone(),
            container_id: crate::container::ContainerId::parse(&"c".repeat(64)).unwrap(),
            container_config: None,
            volumes: vec![],
            pause: None,
            rootfs: None,
            author: Some("Jane".into()),
            comment: Some("new page".into()),
            changes: vec![r#"CMD ["httpd", "-f"]"#.into()],
            reference: tag.map(|t| Reference::parse_with_default_tag(t).unwrap()),
        }
    }

    fn snapshot(root: &Path) -> Vec<String> {
        let mut out = Vec::new();
        for e in walk(root) {
            if !e.starts_with(root.join("tmp")) && !e.ends_with("store.lock") {
                out.push(e.display().to_string());
            }
        }
        out.sort();
        out
    }

    fn walk(p: &Path) -> Vec<PathBuf> {
        let mut out = vec![p.to_path_buf()];
        if p.is_dir() && !p.is_symlink() {
            for e in fs::read_dir(p).unwrap() {
                out.extend(walk(&e.unwrap().path()));
            }
        }
        out
    }

    #[test]
    fn commit_adds_layer_config_history_parent_and_tag() {
        let t = tempfile::tempdir().unwrap();
        let (store, base) = store_with_image(&t.path().join("root"));
        let upper = t.path().join("upper");
        write(&upper.join("www/index.html"), "<h1>Hello strata</h1>\n");
        whiteout(&upper.join("etc/passwd"));
        let id = commit(&store, &request(&upper, &base, Some("web:v2"))).unwrap();

        let rec = store.resolve("web:v2").unwrap();
        assert_eq!(rec.id, id);
        assert_eq!(rec.parent.as_ref(), Some(&base));
        let cfg: serde_json::Value =
            serde_json::from_slice(&store.read_blob(id.digest()).unwrap()).unwrap();
        assert_eq!(cfg["rootfs"]["diff_ids"].as_array().unwrap().len(), 3);
        let hist = cfg["history"].as_array().unwrap();
        assert_eq!(hist.len(), 3);
        assert_eq!(hist[2]["created_by"], serde_json::json!("sh"));
        assert_eq!(hist[2]["author"], serde_json::json!("Jane"));
        assert_eq!(hist[2]["comment"], serde_json::json!("new page"));
        assert_eq!(cfg["config"]["Cmd"], serde_json::json!(["httpd", "-f"]));
        assert_eq!(cfg["container"], serde_json::json!("c".repeat(64)));

        // The new layer dir holds the changes in overlay format; the merged stack sees them.
        let dirs = store.layer_dirs(&rec).unwrap();
        assert_eq!(dirs.len(), 3);
        assert_eq!(
            fs::read_to_string(dirs[0].join("www/index.html")).unwrap(),
            "<h1>Hello strata</h1>\n"
        );
        let st = nix::sys::stat::lstat(&dirs[0].join("etc/passwd")).unwrap();
        assert!(
            st.st_mode & libc::S_IFMT == libc::S_IFCHR && st.st_rdev == 0,
            "whiteout"
        );
        // The store rebuilds the very tar we hashed.
        let mut tar = Vec::new();
        let info = store
            .layer_tar(rec.chain_ids.last().unwrap(), &mut tar)
            .unwrap();
        assert_eq!(
            info.diff_id.as_str(),
            cfg["rootfs"]["diff_ids"][2].as_str().unwrap()
        );
        assert_eq!(
            format!("sha256:{}", hex::encode(Sha256::digest(&tar))),
            info.diff_id.as_str()
        );
        // The compressed blob is kept for push.
        let blob = info.compressed_digest.expect("compressed digest recorded");
        assert!(store.has_blob(&blob));

        // Moving the tag leaves the first commit dangling.
        write(&upper.join("www/other.html"), "x");
        let id2 = commit(&store, &request(&upper, &base, Some("web:v2"))).unwrap();
        assert_ne!(id, id2);
        assert!(store.image(&id).unwrap().repo_tags.is_empty());
        assert_eq!(store.resolve("web:v2").unwrap().id, id2);
    }

    #[test]
    fn commit_of_no_changes_is_an_empty_layer() {
        let t = tempfile::tempdir().unwrap();
        let (store, base) = store_with_image(&t.path().join("root"));
        let upper = t.path().join("upper");
        write(&upper.join("etc/hosts"), "127.0.0.1 localhost\n");
        let id = commit(&store, &request(&upper, &base, None)).unwrap();
        let cfg: serde_json::Value =
            serde_json::from_slice(&store.read_blob(id.digest()).unwrap()).unwrap();
        assert_eq!(cfg["rootfs"]["diff_ids"].as_array().unwrap().len(), 2);
        assert_eq!(cfg["history"][2]["empty_layer"], serde_json::json!(true));
        assert!(store.image(&id).unwrap().repo_tags.is_empty());
    }

    #[test]
    fn bad_change_or_full_disk_leaves_the_store_as_it_was() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().join("root");
        let (store, base) = store_with_image(&root);
        let upper = t.path().join("upper");
        write(&upper.join("www/index.html"), "x");
        let before = snapshot(&root);
        let mut req = request(&upper, &base, Some("web:v2"));
        req.changes = vec!["FROM scratch".into()];
        let e = commit(&store, &req).unwrap_err();
        assert_eq!(e.to_string(), "from is not a valid change command");
        assert_eq!(snapshot(&root), before);

        // A store on a tmpfs too small for the layer.
        let small = t.path().join("small");
        fs::create_dir_all(&small).unwrap();
        nix::mount::mount(
            Some("tmpfs"),
            &small,
            Some("tmpfs"),
            nix::mount::MsFlags::empty(),
            Some("size=2m"),
        )
        .unwrap();
        let _guard = Mounted(small.clone());
        let (store, base) = store_with_image(&small.join("root"));
        let before = snapshot(&small.join("root"));
        // Incompressible data, bigger than what is left.
        let mut big = vec![0u8; 3 << 20];
        let mut x: u64 = 0x9e3779b97f4a7c15;
        for b in big.iter_mut() {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            *b = x as u8;
        }
        fs::create_dir_all(upper.join("data")).unwrap();
        fs::write(upper.join("data/big"), &big).unwrap();
        let e = commit(&store, &request(&upper, &base, Some("web:v2"))).unwrap_err();
        assert!(e.to_string().contains("No space left on device"), "{e}");
        assert_eq!(snapshot(&small.join("root")), before);
        assert!(store.resolve("web:v2").is_err());
    }
}

/// The vfs driver's writable dir is the whole tree: compared with the lowers, not read as a diff.
#[test]
fn full_tree_diff_like_moby_changes_dirs() {
    let t = tempfile::tempdir().unwrap();
    let lower = t.path().join("lower");
    let full = t.path().join("full");
    write(&lower.join("etc/motd"), "old\n");
    write(&lower.join("etc/passwd"), "root\n");
    write(&lower.join("home/user/.profile"), "x");
    write(&lower.join("www/index.html"), "welcome");
    write(&lower.join("bin/sh"), "x");
    fs::create_dir_all(&full).unwrap();
    let st = std::process::Command::new("cp")
        .args([
            "-a",
            &format!("{}/.", lower.display()),
            full.to_str().unwrap(),
        ])
        .status()
        .unwrap();
    assert!(st.success());
    assert!(
        diff_full_tree(&full, std::slice::from_ref(&lower), &Filter::docker())
            .unwrap()
            .is_empty()
    );
    fs::write(full.join("www/index.html"), "<h1>Hello strata</h1>").unwrap();
    fs::remove_dir_all(full.join("home")).unwrap();
    fs::remove_file(full.join("etc/passwd")).unwrap();
    write(&full.join("srv/new/file"), "n");
    write(&full.join("etc/hosts"), "127.0.0.1 localhost\n");
    let got =
        lines(&diff_full_tree(&full, std::slice::from_ref(&lower), &Filter::docker()).unwrap());
    assert_eq!(
        got,
        [
            "C /etc",
            "D /etc/passwd",
            "D /home",
            "A /srv",
            "A /srv/new",
            "A /srv/new/file",
            "C /www",
            "C /www/index.html"
        ]
    );
    // The same change list makes a layer of the full tree.
    let changes = diff_full_tree(&full, &[lower], &Filter::docker()).unwrap();
    let (_, blob) = write_changes_tar(&full, &changes, Vec::new()).unwrap();
    let (_, entries) = read_layer(&blob);
    let names: Vec<&str> = entries.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(
        names,
        [
            "etc/",
            "etc/.wh.passwd",
            ".wh.home",
            "srv/",
            "srv/new/",
            "srv/new/file",
            "www/",
            "www/index.html"
        ]
    );
}
