//! Hard links, st_nlink, and inode numbers: stable for the life of the mount, shared by hard links,
//! distinct for distinct files even when lower layers sit on different filesystems.

use std::collections::HashMap;
use std::os::unix::fs::{DirEntryExt, MetadataExt};

use crate::harness::{Case, Opq};
use crate::util::*;

fn hardlink_new_file(c: &mut Case) {
    c.lower(0);
    let m = c.mount();
    write(m.join("a"), "one");
    link(m.join("a"), m.join("b")).unwrap();
    let (a, b) = (lstat(m.join("a")).unwrap(), lstat(m.join("b")).unwrap());
    assert_eq!(a.ino(), b.ino());
    assert_eq!((a.nlink(), b.nlink()), (2, 2));
    write(m.join("b"), "two");
    assert_eq!(read(m.join("a")), "two");
    unlink(m.join("a")).unwrap();
    assert_eq!(lstat(m.join("b")).unwrap().nlink(), 1);
    assert_eq!(read(m.join("b")), "two");
}

fn hardlinks_in_lower_share_ino(c: &mut Case) {
    let l = c.lower(0);
    mkdir(l.join("d"));
    write(l.join("a"), "same");
    link(l.join("a"), l.join("d/b")).unwrap();
    write(l.join("other"), "");
    let m = c.mount();
    let (a, b) = (lstat(m.join("a")).unwrap(), lstat(m.join("d/b")).unwrap());
    assert_eq!(
        a.ino(),
        b.ino(),
        "hard links inside one layer share one inode"
    );
    assert_eq!((a.nlink(), b.nlink()), (2, 2));
    assert_ne!(a.ino(), lstat(m.join("other")).unwrap().ino());
}

fn link_outlives_unlinked_lower_original(c: &mut Case) {
    let l = c.lower(0);
    mkdir(l.join("d"));
    write(l.join("d/orig"), "payload");
    let m = c.mount();
    link(m.join("d/orig"), m.join("keep")).unwrap();
    unlink(m.join("d/orig")).unwrap();
    rmdir(m.join("d")).unwrap();
    assert_eq!(read(m.join("keep")), "payload");
    assert_eq!(lstat(m.join("keep")).unwrap().nlink(), 1);
}

/// "Install a new version" as package scripts do (found by fuse-overlayfs's stress script): a
/// lower file with two names, one changed (copy-up), the other removed and linked anew.
fn relink_after_copy_up_of_other_name(c: &mut Case) {
    let l = c.lower(0);
    for d in ["a", "b", "c"] {
        mkdir(l.join(d));
        write(l.join(d).join("p"), "v1");
        link(l.join(d).join("p"), l.join(d).join("p_v1")).unwrap();
    }
    let m = c.mount();
    // a: `p` never looked up before the copy-up of `p_v1`; b: both names listed first.
    let _ = ls(m.join("b"));
    for d in ["a", "b"] {
        let (p, v1) = (m.join(d).join("p"), m.join(d).join("p_v1"));
        lchown(&v1, 1000, 1000).unwrap();
        unlink(&p).unwrap();
        link(&v1, &p).unwrap_or_else(|e| panic!("{d}: ln p_v1 p: {e}"));
        let (sp, sv) = (lstat(&p).unwrap(), lstat(&v1).unwrap());
        assert_eq!(sp.ino(), sv.ino(), "{d}: one inode");
        assert_eq!((sp.nlink(), sv.nlink()), (2, 2), "{d}: two links");
        assert_eq!((sp.uid(), sv.uid()), (1000, 1000), "{d}: owner");
        assert_eq!(read(&p), "v1");
        // And the other way round (fuse-overlayfs's test: remove the versioned name, link it
        // back from the plain one).
        unlink(&v1).unwrap();
        link(&p, &v1).unwrap_or_else(|e| panic!("{d}: ln p p_v1: {e}"));
        assert_eq!(lstat(&v1).unwrap().nlink(), 2, "{d}");
        assert_eq!(read(&v1), "v1");
    }
    // c: after a write through one name, two names that share an inode number share their
    // content and link count (whether the link is kept or broken), also after a remount.
    write(m.join("c/p_v1"), "v2");
    let check = |m: &std::path::Path| {
        let (p, v1) = (m.join("c/p"), m.join("c/p_v1"));
        let (sp, sv) = (lstat(&p).unwrap(), lstat(&v1).unwrap());
        assert_eq!(read(&v1), "v2");
        if sp.ino() == sv.ino() {
            assert_eq!(read(&p), "v2", "same inode, same content");
            assert!(sp.nlink() >= 2 && sv.nlink() >= 2, "same inode, two links");
        }
        (read(&p), read(&v1))
    };
    let before = check(&m);
    c.unmount();
    let m = c.mount();
    assert_eq!(check(&m), before, "same view after a remount");
    for d in ["a", "b"] {
        assert_eq!(lstat(m.join(d).join("p")).unwrap().nlink(), 2, "{d}");
    }
}

fn link_count_three(c: &mut Case) {
    let l = c.lower(0);
    write(l.join("f"), "x");
    let m = c.mount();
    link(m.join("f"), m.join("g")).unwrap();
    link(m.join("g"), m.join("h")).unwrap();
    for n in ["f", "g", "h"] {
        assert_eq!(lstat(m.join(n)).unwrap().nlink(), 3, "{n}");
    }
    unlink(m.join("g")).unwrap();
    assert_eq!(lstat(m.join("f")).unwrap().nlink(), 2);
    assert_eq!(lstat(m.join("h")).unwrap().nlink(), 2);
}

fn link_errors(c: &mut Case) {
    let l = c.lower(0);
    mkdir(l.join("d"));
    write(l.join("f"), "");
    write(l.join("g"), "");
    let m = c.mount();
    assert_errno!(link(m.join("d"), m.join("d2")), libc::EPERM);
    assert_errno!(link(m.join("f"), m.join("g")), libc::EEXIST);
    assert_errno!(link(m.join("missing"), m.join("x")), libc::ENOENT);
}

fn link_symlink_itself(c: &mut Case) {
    let l = c.lower(0);
    symlink("target", l.join("s"));
    let m = c.mount();
    link(m.join("s"), m.join("s2")).unwrap();
    assert!(lstat(m.join("s2")).unwrap().file_type().is_symlink());
    assert_eq!(
        std::fs::read_link(m.join("s2")).unwrap(),
        std::path::Path::new("target")
    );
}

fn ino_stable_over_time(c: &mut Case) {
    let (l0, l1) = (c.lower(0), c.lower(1));
    mkdir(l0.join("d"));
    mkdir(l1.join("d"));
    write(l0.join("d/a"), "");
    write(l1.join("d/b"), "");
    let m = c.mount();
    let before: Vec<u64> = ["", "d", "d/a", "d/b"]
        .iter()
        .map(|p| lstat(m.join(p)).unwrap().ino())
        .collect();
    // Generate churn so caches may drop entries.
    for i in 0..200 {
        write(m.join(format!("tmp{i}")), "");
        let _ = ls(&m);
        unlink(m.join(format!("tmp{i}"))).unwrap();
    }
    let after: Vec<u64> = ["", "d", "d/a", "d/b"]
        .iter()
        .map(|p| lstat(m.join(p)).unwrap().ino())
        .collect();
    assert_eq!(before, after);
}

fn ino_stable_after_cache_drop(c: &mut Case) {
    // Dropping the kernel's dentry/inode caches makes a FUSE server see FORGET and fresh
    // LOOKUPs: the numbers must not change.
    let (l0, l1) = (c.lower(0), c.lower(1));
    mkdir(l0.join("d"));
    mkdir(l1.join("d/sub"));
    write(l0.join("d/a"), "");
    write(l1.join("d/sub/b"), "");
    write(l1.join("copied"), "");
    let m = c.mount();
    write(m.join("d/upper"), "");
    chmod(m.join("copied"), 0o600).unwrap();
    let paths = ["", "d", "d/a", "d/sub", "d/sub/b", "d/upper", "copied"];
    let before: Vec<u64> = paths
        .iter()
        .map(|p| lstat(m.join(p)).unwrap().ino())
        .collect();
    std::fs::write("/proc/sys/vm/drop_caches", "2").unwrap();
    let after: Vec<u64> = paths
        .iter()
        .map(|p| lstat(m.join(p)).unwrap().ino())
        .collect();
    assert_eq!(before, after, "inode numbers of {paths:?}");
}

fn ino_stable_across_copy_up(c: &mut Case) {
    let l = c.lower(0);
    mkdir(l.join("d"));
    write(l.join("d/f"), "x");
    let m = c.mount();
    let (d0, f0) = (
        lstat(m.join("d")).unwrap().ino(),
        lstat(m.join("d/f")).unwrap().ino(),
    );
    write(m.join("d/f"), "changed");
    chmod(m.join("d"), 0o700).unwrap();
    assert_eq!(
        lstat(m.join("d/f")).unwrap().ino(),
        f0,
        "copy-up keeps the file's ino"
    );
    assert_eq!(
        lstat(m.join("d")).unwrap().ino(),
        d0,
        "copy-up keeps the dir's ino"
    );
}

fn ino_stable_while_open_and_renamed(c: &mut Case) {
    let l = c.lower(0);
    write(l.join("f"), "x");
    let m = c.mount();
    let f = open(m.join("f"), libc::O_RDONLY, 0).unwrap();
    let ino = f.metadata().unwrap().ino();
    rename(m.join("f"), m.join("g")).unwrap();
    assert_eq!(lstat(m.join("g")).unwrap().ino(), ino);
    assert_eq!(f.metadata().unwrap().ino(), ino);
}

fn distinct_inos_same_fs(c: &mut Case) {
    let (l0, l1, l2) = (c.lower(0), c.lower(1), c.lower(2));
    for (i, l) in [&l0, &l1, &l2].into_iter().enumerate() {
        mkdir(l.join("d"));
        for j in 0..20 {
            write(l.join(format!("d/f{i}_{j}")), "");
        }
    }
    let m = c.mount();
    for j in 0..10 {
        write(m.join(format!("d/new{j}")), "");
    }
    let mut seen = HashMap::new();
    for name in ls(m.join("d")) {
        let s = lstat(m.join("d").join(&name)).unwrap();
        if let Some(prev) = seen.insert((s.dev(), s.ino()), name.clone()) {
            panic!(
                "{name} and {prev} share (dev, ino) {:?}",
                (s.dev(), s.ino())
            );
        }
    }
    assert_eq!(seen.len(), 70);
}

/// Every layer on one filesystem (the case's temp dir): st_ino and d_ino are the backing
/// files' own numbers, as with kernel overlayfs (xino) and fuse-overlayfs, so 32-bit programs
/// without large-file support see small numbers; a copy-up keeps the lower file's number.
fn ino_is_backing_ino_on_one_filesystem(c: &mut Case) {
    let (l0, l1) = (c.lower(0), c.lower(1));
    write(l0.join("f"), "x");
    mkdir(l0.join("d"));
    mkdir(l0.join("merged"));
    mkdir(l1.join("merged/sub"));
    write(l1.join("merged/below"), "b");
    symlink("f", l0.join("s"));
    let m = c.mount();
    write(m.join("new"), "n");
    mkdir(m.join("newdir"));
    let ino = |p: std::path::PathBuf| lstat(p).unwrap().ino();
    let want = [
        ("f", ino(l0.join("f"))),
        ("d", ino(l0.join("d"))),
        ("merged", ino(l0.join("merged"))),
        ("merged/sub", ino(l1.join("merged/sub"))),
        ("merged/below", ino(l1.join("merged/below"))),
        ("s", ino(l0.join("s"))),
        ("new", ino(c.upper().join("new"))),
        ("newdir", ino(c.upper().join("newdir"))),
    ];
    for (rel, backing) in want {
        assert_eq!(ino(m.join(rel)), backing, "st_ino of {rel}");
    }
    assert_eq!(
        ino(m.clone()),
        ino(c.upper()),
        "the root shows the upper root's number"
    );
    let listed: HashMap<String, u64> = raw_readdir(&m).unwrap().into_iter().collect();
    for rel in ["f", "d", "merged", "s", "new", "newdir"] {
        assert_eq!(listed[rel], ino(m.join(rel)), "d_ino of {rel}");
    }
    assert_eq!(listed["."], ino(m.clone()), "d_ino of .");
    let sub: HashMap<String, u64> = raw_readdir(m.join("d")).unwrap().into_iter().collect();
    assert_eq!(sub[".."], ino(m.clone()), "d_ino of .. in a top-level dir");
    // Copy-up (data and metadata) keeps the lower file's number.
    write(m.join("f"), "changed");
    chmod(m.join("merged/below"), 0o600).unwrap();
    assert_eq!(ino(m.join("f")), want[0].1);
    assert_eq!(ino(m.join("merged/below")), want[4].1);
}

fn distinct_inos_lowers_on_different_filesystems(c: &mut Case) {
    // Two fresh tmpfs instances hand out the same small inode numbers: the union must not.
    let (t0, t1) = (c.tmpfs_lower(0), c.tmpfs_lower(1));
    let ext = c.lower(2);
    for (i, l) in [&t0, &t1, &ext].into_iter().enumerate() {
        for j in 0..15 {
            write(l.join(format!("f{i}_{j}")), format!("{i}{j}"));
        }
        mkdir(l.join(format!("dir{i}")));
    }
    let m = c.mount();
    let mut seen = HashMap::new();
    for name in ls(&m) {
        let s = lstat(m.join(&name)).unwrap();
        if let Some(prev) = seen.insert((s.dev(), s.ino()), name.clone()) {
            panic!(
                "{name} and {prev} share (st_dev, st_ino) {:?}",
                (s.dev(), s.ino())
            );
        }
    }
    assert_eq!(seen.len(), 48);
    assert_eq!(read(m.join("f1_3")), "13");
}

fn readdir_d_ino_matches_stat(c: &mut Case) {
    let (l0, l1) = (c.lower(0), c.lower(1));
    mkdir(l0.join("d"));
    mkdir(l1.join("d/sub"));
    write(l0.join("d/a"), "");
    write(l1.join("d/b"), "");
    let m = c.mount();
    write(m.join("d/c"), "");
    for e in std::fs::read_dir(m.join("d")).unwrap() {
        let e = e.unwrap();
        let st = lstat(e.path()).unwrap();
        assert_eq!(e.ino(), st.ino(), "d_ino of {:?}", e.file_name());
    }
}

fn dir_nlink_sane(c: &mut Case) {
    let (l0, l1) = (c.lower(0), c.lower(1));
    mkdir(l0.join("merged/s1"));
    mkdir(l1.join("merged/s2"));
    mkdir(l0.join("lower_only/x"));
    let m = c.mount();
    mkdir(m.join("fresh/a"));
    mkdir(m.join("fresh/b"));
    for (d, subdirs) in [("", 3u64), ("merged", 2), ("lower_only", 1), ("fresh", 2)] {
        let n = lstat(m.join(d)).unwrap().nlink();
        assert!(
            n == 1 || n == 2 + subdirs,
            "{d:?}: st_nlink {n} (want 1 or {})",
            2 + subdirs
        );
    }
    assert_eq!(
        lstat(m.join("fresh/a")).unwrap().nlink(),
        2,
        "a new empty dir has 2 links"
    );
}

/// st_nlink of directories as kernel overlayfs reports it: 1 for a directory merged from several
/// layers, the real count (2 + subdirectories) for one that lives in one layer only (or whose top
/// layer is opaque), also when it is stat'ed before anything listed it.
fn dir_nlink_like_kernel(c: &mut Case) {
    let (l0, l1) = (c.lower(0), c.lower(1));
    mkdir(l0.join("lower_only/s1"));
    mkdir(l0.join("lower_only/s2"));
    mkdir(l1.join("bottom_only/s1/deep"));
    mkdir(l1.join("bottom_only/s2"));
    mkdir(l1.join("bottom_only/s3"));
    mkdir(l0.join("merged/s1"));
    mkdir(l1.join("merged/s2"));
    mkdir(l0.join("opq/s1"));
    c.opaque(l0.join("opq"), Opq::Xattr);
    mkdir(l1.join("opq/s2"));
    mkdir(l1.join("opq/s3"));
    mkdir(l0.join("grows/s1"));
    let m = c.mount();
    mkdir(m.join("fresh/a"));
    mkdir(m.join("fresh/b"));
    let want = [
        ("lower_only", 4),
        ("bottom_only", 5),
        ("bottom_only/s1", 3),
        ("merged", 1),
        ("opq", 3),
        ("fresh", 4),
        ("fresh/a", 2),
        ("", 1),
    ];
    let got = |m: &std::path::Path| {
        want.iter()
            .map(|(d, _)| (*d, lstat(m.join(d)).unwrap().nlink()))
            .collect::<Vec<_>>()
    };
    assert_eq!(got(&m), want, "stat before any listing");
    for (d, _) in want {
        let _ = ls(m.join(d));
    }
    assert_eq!(got(&m), want, "stat after listing");
    // A change copies the directory up: it is merged from then on (kernel: 1).
    mkdir(m.join("grows/s2"));
    assert_eq!(lstat(m.join("grows")).unwrap().nlink(), 1);
}

fn file_nlink_one(c: &mut Case) {
    let l = c.lower(0);
    write(l.join("f"), "");
    let m = c.mount();
    write(m.join("g"), "");
    mkfifo(m.join("p"), 0o600).unwrap();
    symlink("f", m.join("s"));
    for n in ["f", "g", "p", "s"] {
        assert_eq!(lstat(m.join(n)).unwrap().nlink(), 1, "{n}");
    }
}

fn root_and_dotdot(c: &mut Case) {
    let l = c.lower(0);
    mkdir(l.join("d/e"));
    let m = c.mount();
    let root = lstat(&m).unwrap();
    assert!(root.is_dir());
    assert_eq!(lstat(m.join("d/e/../..")).unwrap().ino(), root.ino());
    let raw = raw_readdir(m.join("d")).unwrap();
    let dot = raw.iter().find(|(n, _)| n == ".").expect(". listed");
    let dotdot = raw.iter().find(|(n, _)| n == "..").expect(".. listed");
    assert_ne!(dot.1, 0);
    assert_ne!(dotdot.1, 0);
}

cases!(inode:
    hardlink_new_file,
    hardlinks_in_lower_share_ino,
    link_count_three,
    relink_after_copy_up_of_other_name,
    link_outlives_unlinked_lower_original,
    link_errors,
    link_symlink_itself,
    ino_stable_over_time,
    ino_stable_after_cache_drop,
    ino_stable_across_copy_up,
    ino_stable_while_open_and_renamed,
    distinct_inos_same_fs,
    ino_is_backing_ino_on_one_filesystem,
    distinct_inos_lowers_on_different_filesystems,
    readdir_d_ino_matches_stat,
    dir_nlink_sane,
    dir_nlink_like_kernel,
    file_nlink_one,
    root_and_dotdot,
);
