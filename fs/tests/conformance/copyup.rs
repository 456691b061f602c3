//! Copy-up: the first change to a lower file (write, chmod, chown, utimes, setxattr, truncate,
//! link) copies it into the upper dir with its data, mode, owner, times and xattrs; lower layers
//! never change (the harness checks that after every case).

use std::fs;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{FileExt, MetadataExt};

use crate::harness::Case;
use crate::util::*;

/// A lower file with distinctive metadata: mode 0640, owner 1234:5678, old mtime, one user xattr.
fn lower_file(c: &mut Case, rel: &str, data: &[u8]) {
    let l = c.lower(1);
    let p = l.join(rel);
    if let Some(parent) = p.parent() {
        mkdir(parent);
    }
    write(&p, data);
    chmod(&p, 0o640).unwrap();
    lchown(&p, 1234, 5678).unwrap();
    setxattr(&p, "user.origin", b"lower", 0).unwrap();
    set_times(&p, (1_000_000_000, 0), (1_100_000_000, 42)).unwrap();
    c.lower(0);
}

fn assert_meta_kept(m: &std::path::Path, rel: &str, check_mtime: bool) {
    let s = lstat(m.join(rel)).unwrap();
    assert_eq!(s.mode() & 0o7777, 0o640, "mode kept");
    assert_eq!((s.uid(), s.gid()), (1234, 5678), "owner kept");
    assert_eq!(
        getxattr(m.join(rel), "user.origin").unwrap(),
        b"lower",
        "xattr kept"
    );
    if check_mtime {
        assert_eq!(
            (s.mtime(), s.mtime_nsec()),
            (1_100_000_000, 42),
            "mtime kept"
        );
    }
}

fn write_copies_up(c: &mut Case) {
    lower_file(c, "f", b"hello world");
    let m = c.mount();
    let f = open(m.join("f"), libc::O_WRONLY, 0).unwrap();
    f.write_at(b"WORLD", 6).unwrap();
    drop(f);
    assert_eq!(read(m.join("f")), "hello WORLD");
    assert_meta_kept(&m, "f", false);
    assert_eq!(read(c.upper().join("f")), "hello WORLD");
    let u = lstat(c.upper().join("f")).unwrap();
    assert_eq!((u.uid(), u.gid(), u.mode() & 0o7777), (1234, 5678, 0o640));
}

fn append_copies_up(c: &mut Case) {
    lower_file(c, "f", b"start");
    let m = c.mount();
    let mut f = open(m.join("f"), libc::O_WRONLY | libc::O_APPEND, 0).unwrap();
    f.write_all(b"+more").unwrap();
    drop(f);
    assert_eq!(read(m.join("f")), "start+more");
    assert_meta_kept(&m, "f", false);
}

fn chmod_copies_up(c: &mut Case) {
    lower_file(c, "f", b"data");
    let m = c.mount();
    chmod(m.join("f"), 0o600).unwrap();
    let s = lstat(m.join("f")).unwrap();
    assert_eq!(s.mode() & 0o7777, 0o600);
    assert_eq!((s.uid(), s.gid()), (1234, 5678));
    assert_eq!(
        (s.mtime(), s.mtime_nsec()),
        (1_100_000_000, 42),
        "chmod keeps mtime"
    );
    assert_eq!(read(m.join("f")), "data");
    assert_eq!(getxattr(m.join("f"), "user.origin").unwrap(), b"lower");
    assert_eq!(lstat(c.upper().join("f")).unwrap().mode() & 0o7777, 0o600);
}

fn chown_copies_up(c: &mut Case) {
    lower_file(c, "f", b"data");
    let m = c.mount();
    lchown(m.join("f"), 99, 98).unwrap();
    let s = lstat(m.join("f")).unwrap();
    assert_eq!((s.uid(), s.gid()), (99, 98));
    assert_eq!(s.mode() & 0o7777, 0o640);
    assert_eq!(
        (s.mtime(), s.mtime_nsec()),
        (1_100_000_000, 42),
        "chown keeps mtime"
    );
    assert_eq!(read(m.join("f")), "data");
    let u = lstat(c.upper().join("f")).unwrap();
    assert_eq!((u.uid(), u.gid()), (99, 98));
}

fn utimes_copies_up(c: &mut Case) {
    lower_file(c, "f", b"data");
    let m = c.mount();
    set_times(m.join("f"), (5, 6), (7, 8)).unwrap();
    let s = lstat(m.join("f")).unwrap();
    assert_eq!((s.atime(), s.atime_nsec()), (5, 6));
    assert_eq!((s.mtime(), s.mtime_nsec()), (7, 8));
    assert_eq!(read(m.join("f")), "data");
    assert_meta_kept(&m, "f", false);
}

fn setxattr_copies_up(c: &mut Case) {
    lower_file(c, "f", b"data");
    let m = c.mount();
    setxattr(m.join("f"), "user.added", b"v", 0).unwrap();
    assert_eq!(getxattr(m.join("f"), "user.added").unwrap(), b"v");
    assert_meta_kept(&m, "f", true);
    assert_eq!(read(m.join("f")), "data");
    assert_eq!(getxattr(c.upper().join("f"), "user.added").unwrap(), b"v");
}

fn truncate_copies_up(c: &mut Case) {
    lower_file(c, "f", b"0123456789");
    let m = c.mount();
    truncate(m.join("f"), 4).unwrap();
    assert_eq!(read(m.join("f")), "0123");
    assert_meta_kept(&m, "f", false);
    truncate(m.join("f"), 8).unwrap();
    assert_eq!(read_bytes(m.join("f")), b"0123\0\0\0\0");
}

fn link_copies_up(c: &mut Case) {
    lower_file(c, "f", b"linked");
    let m = c.mount();
    link(m.join("f"), m.join("g")).unwrap();
    assert_eq!(read(m.join("g")), "linked");
    let (f, g) = (lstat(m.join("f")).unwrap(), lstat(m.join("g")).unwrap());
    assert_eq!(f.ino(), g.ino());
    assert_eq!(f.nlink(), 2);
    assert_eq!(g.nlink(), 2);
    assert_meta_kept(&m, "g", true);
    write(m.join("g"), "changed via g");
    assert_eq!(read(m.join("f")), "changed via g");
}

fn read_does_not_copy_up(c: &mut Case) {
    lower_file(c, "d/f", b"just reading");
    let m = c.mount();
    assert_eq!(read(m.join("d/f")), "just reading");
    let _ = lstat(m.join("d/f")).unwrap();
    let _ = getxattr(m.join("d/f"), "user.origin").unwrap();
    let _ = listxattr(m.join("d/f")).unwrap();
    let _ = ls(m.join("d"));
    assert!(!exists(c.upper().join("d/f")), "reads must not copy up");
}

fn copy_up_deep_parents_keep_meta(c: &mut Case) {
    let l = c.lower(1);
    mkdir(l.join("a/b/c"));
    for (d, mode, uid) in [("a", 0o755, 1), ("a/b", 0o705, 2), ("a/b/c", 0o750, 3)] {
        chmod(l.join(d), mode).unwrap();
        lchown(l.join(d), uid, uid + 100).unwrap();
        setxattr(l.join(d), "user.dir", d.as_bytes(), 0).unwrap();
    }
    write(l.join("a/b/c/f"), "x");
    for (i, d) in ["a", "a/b", "a/b/c"].into_iter().enumerate() {
        set_times(l.join(d), (1000, 0), (2000 + i as i64, 7)).unwrap();
    }
    c.lower(0);
    let m = c.mount();
    write(m.join("a/b/c/f"), "y");
    for (i, d) in ["a", "a/b", "a/b/c"].into_iter().enumerate() {
        let s = lstat(m.join(d)).unwrap();
        assert_eq!(
            (s.mtime(), s.mtime_nsec()),
            (2000 + i as i64, 7),
            "{d}: copy-up keeps dir mtime"
        );
    }
    for (d, mode, uid) in [("a", 0o755, 1), ("a/b", 0o705, 2), ("a/b/c", 0o750, 3)] {
        let s = lstat(m.join(d)).unwrap();
        assert_eq!(s.mode() & 0o7777, mode, "{d} mode");
        assert_eq!((s.uid(), s.gid()), (uid, uid + 100), "{d} owner");
        assert_eq!(getxattr(m.join(d), "user.dir").unwrap(), d.as_bytes());
        let u = lstat(c.upper().join(d)).unwrap();
        assert_eq!((u.mode() & 0o7777, u.uid()), (mode, uid), "{d} in upper");
    }
}

fn copy_up_large_file(c: &mut Case) {
    let mut rng = Rng::new(7);
    let data = rng.bytes(6 << 20);
    let l = c.lower(0);
    fs::write(l.join("big"), &data).unwrap();
    let m = c.mount();
    let f = open(m.join("big"), libc::O_WRONLY, 0).unwrap();
    f.write_at(b"PATCH", 3 << 20).unwrap();
    drop(f);
    let mut want = data.clone();
    want[3 << 20..(3 << 20) + 5].copy_from_slice(b"PATCH");
    let got = read_bytes(m.join("big"));
    assert_eq!(got.len(), want.len());
    assert!(got == want, "contents differ after copy-up of a large file");
}

fn copy_up_sparse_file(c: &mut Case) {
    let l = c.lower(0);
    let f = fs::File::create(l.join("sparse")).unwrap();
    f.write_at(b"end", 10 << 20).unwrap();
    f.write_at(b"begin", 0).unwrap();
    drop(f);
    let m = c.mount();
    let f = open(m.join("sparse"), libc::O_RDWR, 0).unwrap();
    f.write_at(b"mid", 5 << 20).unwrap();
    let mut buf = [0xffu8; 16];
    f.read_at(&mut buf, 1 << 20).unwrap();
    assert_eq!(buf, [0u8; 16], "holes read as zeros");
    assert_eq!(f.metadata().unwrap().len(), (10 << 20) + 3);
    f.read_at(&mut buf[..3], 10 << 20).unwrap();
    assert_eq!(&buf[..3], b"end");
}

fn fd_opened_before_copy_up_sees_new_data(c: &mut Case) {
    let l = c.lower(0);
    write(l.join("f"), "old!");
    let m = c.mount();
    let mut ro = open(m.join("f"), libc::O_RDONLY, 0).unwrap();
    write(m.join("f"), "new!");
    let mut s = String::new();
    ro.seek(SeekFrom::Start(0)).unwrap();
    ro.read_to_string(&mut s).unwrap();
    assert_eq!(
        s, "new!",
        "an fd opened before copy-up reads the copied-up file"
    );
}

fn open_for_write_without_writing(c: &mut Case) {
    let l = c.lower(0);
    write(l.join("f"), "same");
    let m = c.mount();
    drop(open(m.join("f"), libc::O_RDWR, 0).unwrap());
    assert_eq!(read(m.join("f")), "same");
    assert_eq!(lstat(m.join("f")).unwrap().len(), 4);
}

fn copy_up_symlink_via_lchown(c: &mut Case) {
    let l = c.lower(0);
    symlink("target/path", l.join("s"));
    let m = c.mount();
    lchown(m.join("s"), 77, 78).unwrap();
    let s = lstat(m.join("s")).unwrap();
    assert_eq!((s.uid(), s.gid()), (77, 78));
    assert_eq!(
        fs::read_link(m.join("s")).unwrap(),
        std::path::Path::new("target/path")
    );
    assert_eq!(
        fs::read_link(c.upper().join("s")).unwrap(),
        std::path::Path::new("target/path")
    );
}

fn copy_up_dir_via_chmod(c: &mut Case) {
    let (l0, l1) = (c.lower(0), c.lower(1));
    mkdir(l1.join("d"));
    write(l1.join("d/a"), "a");
    mkdir(l0.join("d"));
    write(l0.join("d/b"), "b");
    let m = c.mount();
    chmod(m.join("d"), 0o701).unwrap();
    assert_eq!(lstat(m.join("d")).unwrap().mode() & 0o7777, 0o701);
    assert_eq!(
        ls(m.join("d")),
        ["a", "b"],
        "chmod of a merged dir keeps it merged"
    );
}

fn copy_up_special_files(c: &mut Case) {
    let l = c.lower(0);
    mkfifo(l.join("fifo"), 0o600).unwrap();
    mknod(l.join("dev"), libc::S_IFCHR | 0o600, 1, 5).unwrap();
    let m = c.mount();
    chmod(m.join("fifo"), 0o644).unwrap();
    lchown(m.join("dev"), 5, 6).unwrap();
    assert_eq!(lstat(m.join("fifo")).unwrap().mode() & 0o7777, 0o644);
    let d = lstat(m.join("dev")).unwrap();
    assert_eq!((d.uid(), d.rdev()), (5, libc::makedev(1, 5)));
}

fn copy_up_preserves_all_xattrs(c: &mut Case) {
    let l = c.lower(0);
    write(l.join("f"), "x");
    setxattr(l.join("f"), "user.a", b"1", 0).unwrap();
    setxattr(l.join("f"), "user.b", &[0u8, 1, 2, 255], 0).unwrap();
    setxattr(l.join("f"), "trusted.t", b"root-only", 0).unwrap();
    let m = c.mount();
    write(m.join("f"), "y");
    assert_eq!(getxattr(m.join("f"), "user.a").unwrap(), b"1");
    assert_eq!(getxattr(m.join("f"), "user.b").unwrap(), [0u8, 1, 2, 255]);
    assert_eq!(getxattr(m.join("f"), "trusted.t").unwrap(), b"root-only");
    let names = listxattr(m.join("f")).unwrap();
    for n in ["trusted.t", "user.a", "user.b"] {
        assert!(names.contains(&n.to_string()), "{n} missing from {names:?}");
    }
}

fn copy_up_hardlinked_lower_file(c: &mut Case) {
    let l = c.lower(0);
    write(l.join("a"), "shared");
    link(l.join("a"), l.join("b")).unwrap();
    let m = c.mount();
    write(m.join("a"), "changed");
    assert_eq!(read(m.join("a")), "changed");
    // Either kept-together (index) or broken hard links are allowed; a write must never
    // corrupt the other name: it holds one of the two versions.
    let b = read(m.join("b"));
    assert!(b == "shared" || b == "changed", "b = {b:?}");
}

fn copy_up_keeps_holes(c: &mut Case) {
    // Images carry huge sparse files (/var/log/lastlog): a copy-up must not fill the holes.
    let l = c.lower(0);
    let f = fs::File::create(l.join("sparse")).unwrap();
    f.set_len(200 << 20).unwrap();
    f.write_at(b"head", 0).unwrap();
    drop(f);
    let m = c.mount();
    let mut a = open(m.join("sparse"), libc::O_WRONLY | libc::O_APPEND, 0).unwrap();
    a.write_all(b"tail").unwrap();
    drop(a);
    assert_eq!(lstat(m.join("sparse")).unwrap().len(), (200 << 20) + 4);
    let blocks = lstat(c.upper().join("sparse")).unwrap().blocks();
    assert!(
        blocks * 512 < 4 << 20,
        "copied-up file allocates {} KiB",
        blocks / 2
    );
}

fn work_dir_has_no_leftover_files(c: &mut Case) {
    let l = c.lower(0);
    mkdir(l.join("d/e"));
    for i in 0..10 {
        write(l.join(format!("d/e/f{i}")), vec![b'x'; 100_000]);
    }
    let m = c.mount();
    for i in 0..10 {
        if i % 2 == 0 {
            write(m.join(format!("d/e/f{i}")), "rewritten");
        } else {
            chmod(m.join(format!("d/e/f{i}")), 0o600).unwrap();
        }
    }
    unlink(m.join("d/e/f0")).unwrap();
    rename(m.join("d/e/f1"), m.join("d/f1")).unwrap();
    fs::remove_dir_all(m.join("d/e")).unwrap();
    mkdir_mode(m.join("d/e"), 0o755).unwrap();
    c.unmount();
    let mut stack = vec![c.work()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let ft = e.file_type().unwrap();
            assert!(
                !ft.is_file(),
                "leftover file in the work dir: {}",
                e.path().display()
            );
            if ft.is_dir() {
                stack.push(e.path());
            }
        }
    }
}

/// Metadata changes of lower files over 1 MiB (strata copies those up on an offload worker,
/// smaller ones inline): each change and the whole data show through the mount, the upper layer
/// holds the copy, the lower file is untouched.
fn metadata_changes_copy_up_large_files(c: &mut Case) {
    let data = Rng::new(9).bytes(3 << 20);
    let l = c.lower(0);
    for n in ["chmod", "chown", "xattr", "rmxattr", "link", "trunc"] {
        fs::write(l.join(n), &data).unwrap();
    }
    setxattr(l.join("rmxattr"), "user.gone", b"v", 0).unwrap();
    let m = c.mount();
    chmod(m.join("chmod"), 0o600).unwrap();
    lchown(m.join("chown"), 1234, 1234).unwrap();
    setxattr(m.join("xattr"), "user.new", b"x", 0).unwrap();
    removexattr(m.join("rmxattr"), "user.gone").unwrap();
    link(m.join("link"), m.join("link2")).unwrap();
    truncate(m.join("trunc"), (2 << 20) + 1).unwrap();
    assert_eq!(lstat(m.join("chmod")).unwrap().mode() & 0o7777, 0o600);
    assert_eq!(lstat(m.join("chown")).unwrap().uid(), 1234);
    assert_eq!(getxattr(m.join("xattr"), "user.new").unwrap(), b"x");
    assert!(getxattr(m.join("rmxattr"), "user.gone").is_err());
    // (Not the inode numbers: rootless kernel overlayfs shows two for the two names.)
    assert_eq!(lstat(m.join("link")).unwrap().nlink(), 2);
    for n in ["chmod", "chown", "xattr", "rmxattr", "link", "link2"] {
        assert!(read_bytes(m.join(n)) == data, "{n}: data after copy-up");
        assert!(lstat(c.upper().join(n)).is_ok(), "{n} in upper");
    }
    assert!(
        read_bytes(m.join("trunc")) == data[..(2 << 20) + 1],
        "trunc"
    );
    for n in ["chmod", "chown", "xattr", "rmxattr", "link", "trunc"] {
        assert!(read_bytes(l.join(n)) == data, "{n}: lower unchanged");
    }
    assert_eq!(lstat(l.join("chmod")).unwrap().mode() & 0o777, 0o644);
    assert_eq!(getxattr(l.join("rmxattr"), "user.gone").unwrap(), b"v");
}

cases!(copyup:
    write_copies_up,
    append_copies_up,
    chmod_copies_up,
    chown_copies_up,
    utimes_copies_up,
    setxattr_copies_up,
    truncate_copies_up,
    link_copies_up,
    read_does_not_copy_up,
    copy_up_deep_parents_keep_meta,
    copy_up_large_file,
    metadata_changes_copy_up_large_files,
    copy_up_sparse_file,
    fd_opened_before_copy_up_sees_new_data,
    open_for_write_without_writing,
    copy_up_symlink_via_lchown,
    copy_up_dir_via_chmod,
    copy_up_special_files,
    copy_up_preserves_all_xattrs,
    copy_up_hardlinked_lower_file,
    copy_up_keeps_holes,
    work_dir_has_no_leftover_files,
);
