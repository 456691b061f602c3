//! Unit tests of the namespace operations (no mount).
use super::*;
use crate::testutil::*;
use crate::unionfs::ROOT_INO;

fn ctx() -> Ctx {
    Ctx {
        uid: 0,
        gid: 0,
        pid: 0,
    }
}

fn look(fs: &Fs, parent: Ino, name: &str) -> Option<Attr> {
    fs.lookup(parent, OsStr::new(name)).unwrap()
}

fn read_all(fs: &Fs, ino: Ino) -> Vec<u8> {
    let fh = fs.open(ino, libc::O_RDONLY).unwrap();
    let d = fs.read(fh, 0, 1 << 20).unwrap();
    fs.release(fh);
    d
}

#[test]
fn rename_lower_dir_moves_whole_tree() {
    let s = Stack::new(2);
    s.mkdir(2, "d/sub");
    s.write(2, "d/x", "x");
    s.write(2, "d/sub/y", "y");
    s.mkdir(1, "d");
    s.write(1, "d/z", "z");
    let fs = s.fs();
    look(&fs, ROOT_INO, "d").unwrap();
    fs.rename(ROOT_INO, OsStr::new("d"), ROOT_INO, OsStr::new("e"), 0)
        .unwrap();
    assert!(look(&fs, ROOT_INO, "d").is_none());
    let e = look(&fs, ROOT_INO, "e").unwrap();
    let sub = look(&fs, e.ino, "sub").unwrap();
    let y = look(&fs, sub.ino, "y").unwrap();
    assert_eq!(read_all(&fs, y.ino), b"y");
    assert!(look(&fs, e.ino, "z").is_some());
    // On disk: a whiteout at d, an opaque upper e holding everything; lowers untouched.
    assert!(s.path(2, "d/sub/y").exists());
    assert_eq!(std::fs::read(s.path(0, "e/sub/y")).unwrap(), b"y");
    let st = nix::sys::stat::lstat(&s.path(0, "d")).unwrap();
    assert_eq!(st.st_mode & libc::S_IFMT, libc::S_IFCHR);
    // A fresh core over the same layers sees the same view.
    let fs2 = s.fs();
    assert!(look(&fs2, ROOT_INO, "d").is_none());
    let e2 = look(&fs2, ROOT_INO, "e").unwrap();
    let names: Vec<_> = fs2
        .list_dir(e2.ino)
        .unwrap()
        .into_iter()
        .map(|x| x.0.into_string().unwrap())
        .collect();
    assert_eq!(names, vec![".", "..", "sub", "x", "z"]);
}

#[test]
fn copy_up_is_atomic_and_keeps_ino_and_meta() {
    let s = Stack::new(1);
    s.write(1, "f", "hello");
    std::fs::set_permissions(
        s.path(1, "f"),
        std::os::unix::fs::PermissionsExt::from_mode(0o640),
    )
    .unwrap();
    let fs = s.fs();
    let a = look(&fs, ROOT_INO, "f").unwrap();
    let fh = fs.open(a.ino, libc::O_WRONLY).unwrap();
    fs.write(fh, 5, b" world").unwrap();
    fs.release(fh);
    assert_eq!(std::fs::read(s.path(1, "f")).unwrap(), b"hello");
    assert_eq!(std::fs::read(s.path(0, "f")).unwrap(), b"hello world");
    let b = fs.getattr(a.ino, None).unwrap();
    assert_eq!(b.ino, a.ino);
    assert_eq!(b.st.st_mode & 0o7777, 0o640);
    assert_eq!(b.st.st_mtime, a.st.st_mtime);
    // Nothing left in the work dir.
    assert_eq!(
        std::fs::read_dir(s.dir.path().join("work"))
            .unwrap()
            .count(),
        0
    );
    // Same number after forget + fresh lookup.
    fs.forget(a.ino, 1);
    assert_eq!(look(&fs, ROOT_INO, "f").unwrap().ino, a.ino);
}

#[test]
fn unlink_and_recreate_updates_index_and_whiteouts() {
    let s = Stack::new(1);
    s.write(1, "f", "lower");
    s.mkdir(1, "d");
    s.write(1, "d/in", "i");
    let fs = s.fs();
    look(&fs, ROOT_INO, "f").unwrap();
    fs.unlink(ROOT_INO, OsStr::new("f")).unwrap();
    assert!(look(&fs, ROOT_INO, "f").is_none());
    let st = nix::sys::stat::lstat(&s.path(0, "f")).unwrap();
    assert_eq!(st.st_rdev, 0);
    // rmdir of a non-empty dir fails; after emptying it works and leaves a whiteout.
    let d = look(&fs, ROOT_INO, "d").unwrap();
    assert_eq!(fs.rmdir(ROOT_INO, OsStr::new("d")), Err(Errno::ENOTEMPTY));
    fs.unlink(d.ino, OsStr::new("in")).unwrap();
    fs.rmdir(ROOT_INO, OsStr::new("d")).unwrap();
    assert!(look(&fs, ROOT_INO, "d").is_none());
    // Recreate over the whiteouts.
    let (a, fh) = fs
        .create(ROOT_INO, OsStr::new("f"), 0o644, 0o022, libc::O_RDWR, ctx())
        .unwrap();
    fs.write(fh, 0, b"new").unwrap();
    fs.release(fh);
    assert_eq!(read_all(&fs, a.ino), b"new");
    let nd = fs
        .mkdir(ROOT_INO, OsStr::new("d"), 0o755, 0, ctx())
        .unwrap();
    assert!(
        look(&fs, nd.ino, "in").is_none(),
        "new dir over whiteout is opaque"
    );
    let fs2 = s.fs();
    let nd2 = look(&fs2, ROOT_INO, "d").unwrap();
    assert!(look(&fs2, nd2.ino, "in").is_none());
    assert_eq!(
        fs2.list_dir(ROOT_INO).unwrap().len(),
        4,
        ". .. d f after recreation"
    );
}

#[test]
fn rename_file_over_lower_file_leaves_whiteout_and_hard_links_share_ino() {
    let s = Stack::new(1);
    s.write(1, "a", "A");
    s.write(1, "b", "B");
    let fs = s.fs();
    look(&fs, ROOT_INO, "a").unwrap();
    fs.rename(ROOT_INO, OsStr::new("a"), ROOT_INO, OsStr::new("b"), 0)
        .unwrap();
    assert!(look(&fs, ROOT_INO, "a").is_none());
    let b = look(&fs, ROOT_INO, "b").unwrap();
    assert_eq!(read_all(&fs, b.ino), b"A");
    let l = fs.link(b.ino, ROOT_INO, OsStr::new("c")).unwrap();
    assert_eq!(l.ino, b.ino);
    assert_eq!(l.st.st_nlink, 2);
    assert_eq!(fs.getattr(b.ino, None).unwrap().st.st_nlink, 2);
}

#[test]
fn lower_reader_sees_writes_after_copy_up_and_parent_times_kept() {
    let s = Stack::new(1);
    s.mkdir(1, "d");
    s.write(1, "d/f", "old");
    let t = nix::sys::time::TimeSpec::new(1_000_000, 0);
    nix::sys::stat::utimensat(
        nix::fcntl::AT_FDCWD,
        &s.path(1, "d"),
        &t,
        &t,
        nix::sys::stat::UtimensatFlags::NoFollowSymlink,
    )
    .unwrap();
    let fs = s.fs();
    let d = look(&fs, ROOT_INO, "d").unwrap();
    let f = look(&fs, d.ino, "f").unwrap();
    let rh = fs.open(f.ino, libc::O_RDONLY).unwrap();
    let wh = fs.open(f.ino, libc::O_RDWR).unwrap();
    fs.write(wh, 0, b"NEW").unwrap();
    assert_eq!(fs.read(rh, 0, 10).unwrap(), b"NEW");
    assert_eq!(fs.getattr(d.ino, None).unwrap().st.st_mtime, 1_000_000);
}

#[test]
fn rename_exchange_dirs_keeps_views() {
    let s = Stack::new(1);
    s.mkdir(1, "a");
    s.write(1, "a/la", "1");
    let fs = s.fs();
    fs.mkdir(ROOT_INO, OsStr::new("b"), 0o755, 0, ctx())
        .unwrap();
    let b = look(&fs, ROOT_INO, "b").unwrap();
    fs.mknod(b.ino, OsStr::new("ub"), libc::S_IFREG | 0o644, 0, 0, ctx())
        .unwrap();
    look(&fs, ROOT_INO, "a").unwrap();
    fs.rename(
        ROOT_INO,
        OsStr::new("a"),
        ROOT_INO,
        OsStr::new("b"),
        libc::RENAME_EXCHANGE,
    )
    .unwrap();
    let check = |fs: &Fs| {
        let a = look(fs, ROOT_INO, "a").unwrap();
        let b = look(fs, ROOT_INO, "b").unwrap();
        let la: Vec<_> = fs
            .list_dir(a.ino)
            .unwrap()
            .into_iter()
            .map(|e| e.0)
            .collect();
        let lb: Vec<_> = fs
            .list_dir(b.ino)
            .unwrap()
            .into_iter()
            .map(|e| e.0)
            .collect();
        assert_eq!(la, vec![".", "..", "ub"]);
        assert_eq!(lb, vec![".", "..", "la"]);
    };
    check(&fs);
    check(&s.fs());
}

#[test]
fn copy_up_of_a_lower_hard_link_keeps_known_names_together() {
    let s = Stack::new(1);
    s.mkdir(1, "d");
    s.write(1, "a", "shared");
    std::fs::hard_link(s.path(1, "a"), s.path(1, "d/b")).unwrap();
    let fs = s.fs();
    let a = look(&fs, ROOT_INO, "a").unwrap();
    let d = look(&fs, ROOT_INO, "d").unwrap();
    let b = look(&fs, d.ino, "b").unwrap();
    assert_eq!(a.ino, b.ino);
    let fh = fs.open(a.ino, libc::O_WRONLY).unwrap();
    fs.write(fh, 0, b"CHANGED").unwrap();
    fs.release(fh);
    assert_eq!(std::fs::read(s.path(0, "a")).unwrap(), b"CHANGED");
    assert_eq!(std::fs::read(s.path(0, "d/b")).unwrap(), b"CHANGED");
    assert_eq!(std::fs::read(s.path(1, "d/b")).unwrap(), b"shared");
    let fs2 = s.fs();
    let a2 = look(&fs2, ROOT_INO, "a").unwrap();
    let d2 = look(&fs2, ROOT_INO, "d").unwrap();
    let b2 = look(&fs2, d2.ino, "b").unwrap();
    assert_eq!(a2.ino, b2.ino, "still one inode after a remount");
    assert_eq!(a2.st.st_nlink, 2);
}

#[test]
fn user_flavour_writes_user_opaque_xattrs_only() {
    let s = Stack::new(1);
    s.mkdir(1, "d");
    s.write(1, "d/x", "x");
    s.mkdir(1, "m/sub");
    s.write(1, "m/sub/y", "y");
    let fs = s.fs_with(crate::format::Flavour::User);
    let d = look(&fs, ROOT_INO, "d").unwrap();
    fs.unlink(d.ino, OsStr::new("x")).unwrap();
    fs.rmdir(ROOT_INO, OsStr::new("d")).unwrap();
    fs.mkdir(ROOT_INO, OsStr::new("d"), 0o755, 0, ctx())
        .unwrap();
    // A lower dir renamed: materialized as an opaque upper dir.
    look(&fs, ROOT_INO, "m").unwrap();
    fs.rename(ROOT_INO, OsStr::new("m"), ROOT_INO, OsStr::new("n"), 0)
        .unwrap();
    for dir in ["d", "n"] {
        let p = s.path(0, dir);
        assert_eq!(
            xattr(&p, "user.overlay.opaque"),
            Some(b"y".to_vec()),
            "{dir}"
        );
        assert_eq!(xattr(&p, "trusted.overlay.opaque"), None, "{dir}");
    }
    let d = look(&fs, ROOT_INO, "d").unwrap();
    assert_eq!(fs.list_dir(d.ino).unwrap().len(), 2, "only . and ..");
}

fn xattr(p: &std::path::Path, key: &str) -> Option<Vec<u8>> {
    let dir = std::fs::File::open(p.parent().unwrap()).unwrap();
    crate::at::lgetxattr(
        std::os::fd::AsFd::as_fd(&dir),
        p.file_name().unwrap(),
        OsStr::new(key),
    )
    .ok()
}

/// Fills `l1/f` on the first `ensure` of its inode; fails for every other inode. For `l1/big`
/// (256 KiB of zeros to start with), `ensure_range` writes `b'x'` over the range asked.
struct FillOnOpen {
    path: std::path::PathBuf,
    ino: u64,
    big: std::path::PathBuf,
    big_ino: u64,
    ranges: parking_lot::Mutex<Vec<(u64, u64)>>,
    calls: std::sync::atomic::AtomicUsize,
}

impl crate::unionfs::LowerData for FillOnOpen {
    fn ensure(&self, lower: usize, ino: u64) -> Result<(), nix::errno::Errno> {
        self.calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        if lower == 0 && ino == self.big_ino {
            return self.ensure_range(lower, ino, 0, 256 << 10);
        }
        if lower != 0 || ino != self.ino {
            return Err(nix::errno::Errno::EIO);
        }
        std::fs::write(&self.path, "data").map_err(|_| nix::errno::Errno::EIO)
    }

    fn ensure_range(
        &self,
        lower: usize,
        ino: u64,
        off: u64,
        len: u64,
    ) -> Result<(), nix::errno::Errno> {
        use std::os::unix::fs::FileExt;
        if lower != 0 || ino != self.big_ino || off >= 200 << 10 {
            // The last 56 KiB of `big` cannot be had.
            return Err(nix::errno::Errno::EIO);
        }
        let len = len.min((256 << 10) - off);
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(&self.big)
            .unwrap();
        f.write_all_at(&vec![b'x'; len as usize], off).unwrap();
        self.ranges.lock().push((off, len));
        Ok(())
    }

    fn pending(&self, lower: usize, ino: u64) -> bool {
        lower != 0 || ino != self.ino
    }
}

#[test]
fn lower_data_is_ensured_before_open_and_copy_up() {
    use std::os::unix::fs::MetadataExt;
    let s = Stack::new(1);
    s.write(1, "f", "");
    s.write(1, "g", "");
    std::fs::write(s.path(1, "big"), vec![0u8; 256 << 10]).unwrap();
    let ino = std::fs::metadata(s.path(1, "f")).unwrap().ino();
    let d = std::sync::Arc::new(FillOnOpen {
        path: s.path(1, "f"),
        ino,
        big: s.path(1, "big"),
        big_ino: std::fs::metadata(s.path(1, "big")).unwrap().ino(),
        ranges: Default::default(),
        calls: Default::default(),
    });
    let fs = s.fs_lazy(d.clone());
    let f = look(&fs, ROOT_INO, "f").unwrap();
    assert_eq!(read_all(&fs, f.ino), b"data");
    // A small file the supplier cannot fill fails to open with EIO; its copy-up fails too.
    let g = look(&fs, ROOT_INO, "g").unwrap();
    assert_eq!(fs.open(g.ino, libc::O_RDONLY), Err(nix::errno::Errno::EIO));
    assert_eq!(fs.open(g.ino, libc::O_RDWR), Err(nix::errno::Errno::EIO));
    assert!(!s.path(0, "g").exists());
    // Copy-up of f asks too (and gets the data).
    std::fs::write(s.path(1, "f"), "").unwrap();
    let fh = fs.open(f.ino, libc::O_RDWR).unwrap();
    fs.release(fh);
    assert_eq!(std::fs::read(s.path(0, "f")).unwrap(), b"data");
    assert!(d.calls.load(std::sync::atomic::Ordering::SeqCst) >= 4);

    // A large file is not fetched at open: each read asks for its own range only.
    let big = look(&fs, ROOT_INO, "big").unwrap();
    let fh = fs.open(big.ino, libc::O_RDONLY).unwrap();
    assert!(d.ranges.lock().is_empty());
    assert_eq!(fs.read(fh, 8192, 4096).unwrap(), vec![b'x'; 4096]);
    assert_eq!(*d.ranges.lock(), vec![(8192, 4096)]);
    // Bytes not asked for are not there yet (the backing file still holds zeros).
    assert_eq!(std::fs::read(s.path(1, "big")).unwrap()[0], 0);
    // A range the supplier cannot have fails that read only.
    assert_eq!(fs.read(fh, 220 << 10, 4096), Err(nix::errno::Errno::EIO));
    assert_eq!(fs.read(fh, 0, 4096).unwrap(), vec![b'x'; 4096]);
    // SEEK_HOLE does not show the holes of a file still arriving.
    assert_eq!(fs.lseek(fh, 0, libc::SEEK_HOLE), Ok(256 << 10));
    fs.release(fh);
}
