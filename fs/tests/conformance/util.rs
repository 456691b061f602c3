//! Small syscall wrappers and tree snapshots used by the cases. Everything returns `io::Result` so a
//! case can assert the exact errno with [`errno`] / `assert_errno!`.

use std::collections::BTreeMap;
use std::ffi::CString;
use std::fs;
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

pub use strata_testkit::mount::cpath;

/// Turn a `-1` return into the thread's errno.
pub fn check(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

fn check_ssize(ret: libc::ssize_t) -> io::Result<usize> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret as usize)
    }
}

/// The errno of a failed result; panics (with the value) on success.
pub fn errno<T: std::fmt::Debug>(r: io::Result<T>) -> i32 {
    match r {
        Ok(v) => panic!("expected an error, got Ok({v:?})"),
        Err(e) => e.raw_os_error().unwrap_or(-1),
    }
}

/// Assert that an `io::Result` failed with exactly this errno.
macro_rules! assert_errno {
    ($res:expr, $errno:expr) => {{
        let got = $crate::util::errno($res);
        assert_eq!(
            got,
            $errno,
            "expected errno {} ({}), got {} ({})",
            $errno,
            std::io::Error::from_raw_os_error($errno),
            got,
            std::io::Error::from_raw_os_error(got)
        );
    }};
}

pub fn write(path: impl AsRef<Path>, data: impl AsRef<[u8]>) {
    let path = path.as_ref();
    fs::write(path, data).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

pub fn read(path: impl AsRef<Path>) -> String {
    let path = path.as_ref();
    fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

pub fn read_bytes(path: impl AsRef<Path>) -> Vec<u8> {
    let path = path.as_ref();
    fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

pub fn mkdir(path: impl AsRef<Path>) {
    let path = path.as_ref();
    fs::create_dir_all(path).unwrap_or_else(|e| panic!("mkdir {}: {e}", path.display()));
}

pub fn symlink(target: impl AsRef<Path>, link: impl AsRef<Path>) {
    let link = link.as_ref();
    std::os::unix::fs::symlink(target, link)
        .unwrap_or_else(|e| panic!("symlink {}: {e}", link.display()));
}

pub fn chmod(path: impl AsRef<Path>, mode: u32) -> io::Result<()> {
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
}

pub fn lchown(path: impl AsRef<Path>, uid: u32, gid: u32) -> io::Result<()> {
    let c = cpath(path.as_ref());
    // SAFETY: valid NUL-terminated path.
    check(unsafe { libc::lchown(c.as_ptr(), uid, gid) }).map(drop)
}

pub fn lstat(path: impl AsRef<Path>) -> io::Result<fs::Metadata> {
    fs::symlink_metadata(path)
}

pub fn exists(path: impl AsRef<Path>) -> bool {
    fs::symlink_metadata(path).is_ok()
}

/// Sorted names in a directory (no `.`/`..`).
pub fn ls(dir: impl AsRef<Path>) -> Vec<String> {
    let dir = dir.as_ref();
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("readdir {}: {e}", dir.display()))
        .map(|e| {
            e.expect("dirent")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    v.sort();
    v
}

/// Every name returned by `getdents` including `.` and `..`, in the order given, with `d_ino`.
pub fn raw_readdir(dir: impl AsRef<Path>) -> io::Result<Vec<(String, u64)>> {
    let c = cpath(dir.as_ref());
    // SAFETY: valid path; the DIR* is closed below.
    let d = unsafe { libc::opendir(c.as_ptr()) };
    if d.is_null() {
        return Err(io::Error::last_os_error());
    }
    let mut out = Vec::new();
    loop {
        // SAFETY: `d` is an open DIR*; readdir returns NULL at the end.
        let ent = unsafe { libc::readdir64(d) };
        if ent.is_null() {
            break;
        }
        // SAFETY: `ent` points at a valid dirent64 until the next readdir call.
        let (name, ino) = unsafe {
            let name = std::ffi::CStr::from_ptr((*ent).d_name.as_ptr());
            (name.to_string_lossy().into_owned(), (*ent).d_ino)
        };
        out.push((name, ino));
    }
    // SAFETY: closing the DIR* we opened.
    unsafe { libc::closedir(d) };
    Ok(out)
}

pub fn mknod(path: impl AsRef<Path>, mode: u32, major: u32, minor: u32) -> io::Result<()> {
    let c = cpath(path.as_ref());
    // SAFETY: valid path.
    check(unsafe { libc::mknod(c.as_ptr(), mode, libc::makedev(major, minor)) }).map(drop)
}

pub fn mkfifo(path: impl AsRef<Path>, mode: u32) -> io::Result<()> {
    let c = cpath(path.as_ref());
    // SAFETY: valid path.
    check(unsafe { libc::mkfifo(c.as_ptr(), mode) }).map(drop)
}

pub fn mkdir_mode(path: impl AsRef<Path>, mode: u32) -> io::Result<()> {
    let c = cpath(path.as_ref());
    // SAFETY: valid path.
    check(unsafe { libc::mkdir(c.as_ptr(), mode) }).map(drop)
}

pub fn open(path: impl AsRef<Path>, flags: i32, mode: u32) -> io::Result<fs::File> {
    let c = cpath(path.as_ref());
    // SAFETY: valid path; on success we own the returned fd.
    let fd = check(unsafe { libc::open(c.as_ptr(), flags | libc::O_CLOEXEC, mode) })?;
    // SAFETY: `fd` is a fresh fd owned by nobody else.
    Ok(unsafe { <fs::File as std::os::fd::FromRawFd>::from_raw_fd(fd) })
}

pub fn rename(from: impl AsRef<Path>, to: impl AsRef<Path>) -> io::Result<()> {
    fs::rename(from, to)
}

pub fn renameat2(from: impl AsRef<Path>, to: impl AsRef<Path>, flags: u32) -> io::Result<()> {
    let (a, b) = (cpath(from.as_ref()), cpath(to.as_ref()));
    // SAFETY: valid paths; AT_FDCWD with absolute or relative paths.
    check(unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            a.as_ptr(),
            libc::AT_FDCWD,
            b.as_ptr(),
            flags,
        )
    })
    .map(drop)
}

pub fn link(from: impl AsRef<Path>, to: impl AsRef<Path>) -> io::Result<()> {
    fs::hard_link(from, to)
}

pub fn unlink(path: impl AsRef<Path>) -> io::Result<()> {
    fs::remove_file(path)
}

pub fn rmdir(path: impl AsRef<Path>) -> io::Result<()> {
    fs::remove_dir(path)
}

pub fn truncate(path: impl AsRef<Path>, len: i64) -> io::Result<()> {
    let c = cpath(path.as_ref());
    // SAFETY: valid path.
    check(unsafe { libc::truncate(c.as_ptr(), len) }).map(drop)
}

/// Set atime and mtime (seconds, nanoseconds) without following symlinks.
pub fn set_times(path: impl AsRef<Path>, atime: (i64, i64), mtime: (i64, i64)) -> io::Result<()> {
    let c = cpath(path.as_ref());
    let ts = [
        libc::timespec {
            tv_sec: atime.0,
            tv_nsec: atime.1,
        },
        libc::timespec {
            tv_sec: mtime.0,
            tv_nsec: mtime.1,
        },
    ];
    // SAFETY: valid path and a two-element timespec array.
    check(unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            c.as_ptr(),
            ts.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    })
    .map(drop)
}

fn cname(name: &str) -> CString {
    CString::new(name).expect("xattr name")
}

pub fn setxattr(path: impl AsRef<Path>, name: &str, value: &[u8], flags: i32) -> io::Result<()> {
    let (c, n) = (cpath(path.as_ref()), cname(name));
    // SAFETY: valid path, name and value buffer.
    check(unsafe {
        libc::lsetxattr(
            c.as_ptr(),
            n.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            flags,
        )
    })
    .map(drop)
}

pub fn getxattr(path: impl AsRef<Path>, name: &str) -> io::Result<Vec<u8>> {
    let (c, n) = (cpath(path.as_ref()), cname(name));
    let mut buf = vec![0u8; 65536];
    // SAFETY: valid path and name; buffer of the given length.
    let len = check_ssize(unsafe {
        libc::lgetxattr(c.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len())
    })?;
    buf.truncate(len);
    Ok(buf)
}

/// The size `getxattr` reports for a zero-length buffer.
pub fn getxattr_size(path: impl AsRef<Path>, name: &str) -> io::Result<usize> {
    let (c, n) = (cpath(path.as_ref()), cname(name));
    // SAFETY: a NULL buffer of size 0 asks for the value's size.
    check_ssize(unsafe { libc::lgetxattr(c.as_ptr(), n.as_ptr(), std::ptr::null_mut(), 0) })
}

pub fn listxattr(path: impl AsRef<Path>) -> io::Result<Vec<String>> {
    let c = cpath(path.as_ref());
    let mut buf = vec![0u8; 65536];
    // SAFETY: valid path; buffer of the given length.
    let len =
        check_ssize(unsafe { libc::llistxattr(c.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) })?;
    buf.truncate(len);
    let mut names: Vec<String> = buf
        .split(|b| *b == 0)
        .filter(|s| !s.is_empty())
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect();
    names.sort();
    Ok(names)
}

/// The size `listxattr` reports for a zero-length buffer.
pub fn listxattr_size(path: impl AsRef<Path>) -> io::Result<usize> {
    let c = cpath(path.as_ref());
    // SAFETY: a NULL buffer of size 0 asks for the list's size.
    check_ssize(unsafe { libc::llistxattr(c.as_ptr(), std::ptr::null_mut(), 0) })
}

pub fn removexattr(path: impl AsRef<Path>, name: &str) -> io::Result<()> {
    let (c, n) = (cpath(path.as_ref()), cname(name));
    // SAFETY: valid path and name.
    check(unsafe { libc::lremovexattr(c.as_ptr(), n.as_ptr()) }).map(drop)
}

pub fn statvfs(path: impl AsRef<Path>) -> io::Result<libc::statvfs> {
    let c = cpath(path.as_ref());
    // SAFETY: zeroed statvfs is a valid out-parameter.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: valid path and out-parameter.
    check(unsafe { libc::statvfs(c.as_ptr(), &mut st) })?;
    Ok(st)
}

pub fn is_whiteout(path: impl AsRef<Path>) -> bool {
    match lstat(path) {
        Ok(m) => m.file_type().is_char_device() && m.rdev() == 0,
        Err(_) => false,
    }
}

/// The name of overlay xattr `name` in the flavour of this run: `trusted.overlay.NAME` as root,
/// `user.overlay.NAME` in the rootless run (`userxattr`).
pub fn ovl(name: &str) -> String {
    let ns = if crate::rootless::active() {
        "user"
    } else {
        "trusted"
    };
    format!("{ns}.overlay.{name}")
}

pub fn is_opaque(dir: impl AsRef<Path>) -> bool {
    getxattr(dir, &ovl("opaque"))
        .map(|v| v == b"y")
        .unwrap_or(false)
}

/// One file system object as a snapshot sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub kind: char,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    pub rdev: u64,
    pub data: Option<u64>,
    pub target: Option<PathBuf>,
    pub xattrs: BTreeMap<String, Vec<u8>>,
    /// Only in raw snapshots (lower dirs): times and identity must not change at all.
    pub raw: Option<(i64, i64, i64, i64, u64, u64)>,
    /// mtime of non-directories (kept in view snapshots).
    pub mtime: Option<(i64, i64)>,
}

fn fnv(data: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in data {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x100000001b3);
    }
    h
}

fn entry(path: &Path, meta: &fs::Metadata, raw: bool) -> Entry {
    let ft = meta.file_type();
    let kind = if ft.is_dir() {
        'd'
    } else if ft.is_file() {
        'f'
    } else if ft.is_symlink() {
        'l'
    } else if ft.is_char_device() {
        'c'
    } else if ft.is_block_device() {
        'b'
    } else if ft.is_fifo() {
        'p'
    } else {
        's'
    };
    let mut xattrs = BTreeMap::new();
    if let Ok(names) = listxattr(path) {
        for n in names {
            if let Ok(v) = getxattr(path, &n) {
                xattrs.insert(n, v);
            }
        }
    }
    Entry {
        kind,
        mode: meta.mode(),
        uid: meta.uid(),
        gid: meta.gid(),
        size: if kind == 'd' { 0 } else { meta.size() },
        rdev: meta.rdev(),
        data: (kind == 'f').then(|| fs::read(path).map(|d| fnv(&d)).unwrap_or(0)),
        target: (kind == 'l').then(|| fs::read_link(path).unwrap_or_default()),
        xattrs,
        raw: raw.then(|| {
            (
                meta.mtime(),
                meta.mtime_nsec(),
                meta.ctime(),
                meta.ctime_nsec(),
                meta.ino(),
                meta.nlink(),
            )
        }),
        mtime: (kind != 'd').then(|| (meta.mtime(), meta.mtime_nsec())),
    }
}

fn walk(root: &Path, rel: &Path, raw: bool, out: &mut BTreeMap<PathBuf, Entry>) {
    let path = root.join(rel);
    let Ok(meta) = fs::symlink_metadata(&path) else {
        return;
    };
    out.insert(rel.to_path_buf(), entry(&path, &meta, raw));
    if meta.is_dir() {
        let Ok(rd) = fs::read_dir(&path) else { return };
        let mut names: Vec<_> = rd.filter_map(|e| e.ok()).map(|e| e.file_name()).collect();
        names.sort();
        for n in names {
            walk(root, &rel.join(n), raw, out);
        }
    }
}

/// A merged view: kinds, modes, owners, contents, symlink targets, xattrs, file mtimes.
pub fn view(root: impl AsRef<Path>) -> BTreeMap<PathBuf, Entry> {
    let mut out = BTreeMap::new();
    walk(root.as_ref(), Path::new(""), false, &mut out);
    out
}

/// A raw snapshot (adds mtime, ctime, ino, nlink): used to prove lower dirs never change.
pub fn raw_tree(root: impl AsRef<Path>) -> BTreeMap<PathBuf, Entry> {
    let mut out = BTreeMap::new();
    walk(root.as_ref(), Path::new(""), true, &mut out);
    out
}

/// Describe the differences of two snapshots, one line per path.
pub fn diff_trees(a: &BTreeMap<PathBuf, Entry>, b: &BTreeMap<PathBuf, Entry>) -> Vec<String> {
    let mut out = Vec::new();
    for (p, ea) in a {
        match b.get(p) {
            None => out.push(format!("only in first: {}", p.display())),
            Some(eb) if ea != eb => out.push(format!("{}: {ea:?} != {eb:?}", p.display())),
            _ => {}
        }
    }
    for p in b.keys() {
        if !a.contains_key(p) {
            out.push(format!("only in second: {}", p.display()));
        }
    }
    out
}

/// A tiny seeded PRNG (splitmix64): deterministic, no dependencies.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e3779b97f4a7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58476d1ce4e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d049bb133111eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    pub fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next() as u8).collect()
    }
}
