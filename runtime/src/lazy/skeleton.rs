//! The skeleton of a lazy layer: its whole tree made at once from the TOC, in the overlay
//! format the store's extractor writes (`store::extract`), except that regular files are
//! created sparse at their final size, their data to come (see `fetch`).
//!
//! Every name comes from a TOC the seekable parser already cleaned (relative, no `..`), and is
//! still resolved beneath the layer dir without following any symlink (`open_beneath`): a TOC
//! whose symlink would redirect a later entry is refused, as the extractor refuses such a tar.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;

use nix::errno::Errno;
use strata_fs::at;
use strata_fs::format::{self, Flavour, Name};

use super::LazyError;
use crate::seekable::{estargz, Toc, TocEntry};

const DIR_FLAGS: libc::c_int = libc::O_RDONLY | libc::O_DIRECTORY;

/// The fd itself, for the `at` calls that take `""` to mean it.
const SELF: &str = "";

fn err(name: &str, source: Errno) -> LazyError {
    LazyError::Skeleton {
        name: name.to_string(),
        source,
    }
}

/// Seconds since the epoch of a TOC `modtime` (RFC 3339; empty or invalid: 0).
pub(crate) fn mtime(e: &TocEntry) -> i64 {
    chrono::DateTime::parse_from_rfc3339(&e.mod_time)
        .map(|t| t.timestamp())
        .unwrap_or(0)
}

fn times(secs: i64) -> [libc::timespec; 2] {
    let t = libc::timespec {
        tv_sec: secs as libc::time_t,
        tv_nsec: 0,
    };
    [t, t]
}

/// Split `a/b/c` into (`a/b`, `c`).
fn split(name: &str) -> (&str, &str) {
    match name.rsplit_once('/') {
        Some((p, b)) => (p, b),
        None => ("", name),
    }
}

/// Open directory `path` beneath `root`, creating missing components (mode 0755, as the
/// extractor makes implied parents).
fn open_dir_path(root: BorrowedFd<'_>, path: &str) -> Result<OwnedFd, LazyError> {
    match at::open_beneath(root, path.as_bytes(), DIR_FLAGS) {
        Ok(fd) => return Ok(fd),
        Err(Errno::ENOENT) => {}
        Err(e) => return Err(err(path, e)),
    }
    let mut cur = at::open_beneath(root, b"", DIR_FLAGS).map_err(|e| err(path, e))?;
    for c in path.split('/').filter(|c| !c.is_empty()) {
        let name = OsStr::new(c);
        let next = match at::open_dir_at(cur.as_fd(), name) {
            Ok(fd) => fd,
            Err(Errno::ENOENT) => {
                match at::mkdirat(cur.as_fd(), name, 0o755) {
                    Ok(()) | Err(Errno::EEXIST) => {}
                    Err(e) => return Err(err(path, e)),
                }
                at::open_dir_at(cur.as_fd(), name).map_err(|e| err(path, e))?
            }
            Err(e) => return Err(err(path, e)),
        };
        cur = next;
    }
    Ok(cur)
}

fn set_xattrs(fd: BorrowedFd<'_>, e: &TocEntry) -> Result<(), LazyError> {
    for (k, v) in &e.xattrs {
        // Overlay's own markers come from whiteout entries, never from xattrs.
        if format::is_private_xattr(k.as_bytes()) {
            continue;
        }
        match at::lsetxattr(fd, OsStr::new(SELF), OsStr::new(k), v, 0) {
            Ok(()) | Err(Errno::ENOTSUP) => {}
            Err(x) => return Err(err(&e.name, x)),
        }
    }
    Ok(())
}

/// Whether `name` is the TOC's own tar entry: the TOC cannot list itself, so the skeleton
/// writes it from the tail ([`write_toc_file`]).
fn is_toc_file(name: &str) -> bool {
    name == estargz::TOC_TAR_NAME
}

/// The TOC is a file of the layer tar too (`stargz.index.json`, the first entry of the gzip
/// member at the TOC offset), so the extracted layer has it: write it, whole, with its header's
/// attributes. `tail` is the verified blob tail from the TOC offset.
pub(crate) fn write_toc_file(root: BorrowedFd<'_>, tail: &[u8]) -> Result<(), LazyError> {
    use std::io::Read;
    let name = estargz::TOC_TAR_NAME;
    let bad = |_| err(name, Errno::EINVAL);
    let mut dec = flate2::read::GzDecoder::new(tail);
    let mut block = [0u8; 512];
    dec.read_exact(&mut block).map_err(bad)?;
    let h = tar::Header::from_byte_slice(&block);
    let size = h.entry_size().map_err(bad)?;
    let mut data = Vec::new();
    (&mut dec).take(size).read_to_end(&mut data).map_err(bad)?;
    if data.len() as u64 != size {
        return Err(err(name, Errno::EINVAL));
    }
    let n = OsStr::new(name);
    if at::fstatat(root, n).is_ok() {
        at::remove_all_at(root, n).map_err(|x| err(name, x))?;
    }
    let fd = at::openat(
        root,
        n,
        libc::O_CREAT | libc::O_EXCL | libc::O_WRONLY,
        0o600,
    )
    .map_err(|x| err(name, x))?;
    let mut off = 0;
    while off < data.len() {
        off += at::pwrite(fd.as_fd(), &data[off..], off as u64).map_err(|x| err(name, x))?;
    }
    let e = TocEntry {
        name: name.to_string(),
        mode: h.mode().map_err(bad)?,
        uid: h.uid().map_err(bad)? as u32,
        gid: h.gid().map_err(bad)? as u32,
        mod_time: chrono::DateTime::from_timestamp(h.mtime().map_err(bad)? as i64, 0)
            .map(|t| t.to_rfc3339())
            .unwrap_or_default(),
        ..TocEntry::default()
    };
    attrs(fd.as_fd(), &e)
}

/// Build the tree of `toc` in the empty directory `root`. Directory times are set last (after
/// their children exist).
pub(crate) fn build(root: BorrowedFd<'_>, toc: &Toc, flavour: Flavour) -> Result<(), LazyError> {
    let mut dir_times: HashMap<String, i64> = HashMap::new();
    for e in &toc.entries {
        if e.kind == "chunk" || is_toc_file(&e.name) {
            continue;
        }
        if e.name.is_empty() {
            // The layer root: its attributes.
            if e.kind == "dir" {
                let fd = at::open_beneath(root, b"", DIR_FLAGS).map_err(|x| err("/", x))?;
                attrs(fd.as_fd(), e)?;
                dir_times.insert(String::new(), mtime(e));
            }
            continue;
        }
        let (parent, base) = split(&e.name);
        let pfd = open_dir_path(root, parent)?;
        let p = pfd.as_fd();
        let bname = OsStr::new(base);
        match format::classify(base.as_bytes()) {
            Name::OpaqueMarker => {
                format::set_opaque(p, OsStr::new(SELF), flavour).map_err(|x| err(&e.name, x))?;
                continue;
            }
            Name::Whiteout(target) => {
                let t = OsStr::from_bytes(target);
                at::check_name(t).map_err(|x| err(&e.name, x))?;
                at::remove_all_at(p, t).map_err(|x| err(&e.name, x))?;
                format::make_whiteout(p, t).map_err(|x| err(&e.name, x))?;
                continue;
            }
            Name::Meta => continue,
            Name::Invalid => return Err(err(&e.name, Errno::EINVAL)),
            Name::Plain => {}
        }
        // A later entry of the same name replaces the earlier one (a directory stays).
        if let Ok(st) = at::fstatat(p, bname) {
            let is_dir = st.st_mode & libc::S_IFMT == libc::S_IFDIR;
            if !(is_dir && e.kind == "dir") {
                at::remove_all_at(p, bname).map_err(|x| err(&e.name, x))?;
            }
        }
        let perm = e.mode & 0o7777;
        match e.kind.as_str() {
            "dir" => {
                match at::mkdirat(p, bname, 0o700) {
                    Ok(()) | Err(Errno::EEXIST) => {}
                    Err(x) => return Err(err(&e.name, x)),
                }
                let fd = at::open_dir_at(p, bname).map_err(|x| err(&e.name, x))?;
                attrs(fd.as_fd(), e)?;
                dir_times.insert(e.name.clone(), mtime(e));
            }
            "reg" => {
                let fd = at::openat(
                    p,
                    bname,
                    libc::O_CREAT | libc::O_EXCL | libc::O_WRONLY,
                    0o600,
                )
                .map_err(|x| err(&e.name, x))?;
                // Sparse: the size is final, the blocks come when the data is fetched.
                at::ftruncate(fd.as_fd(), e.size).map_err(|x| err(&e.name, x))?;
                attrs(fd.as_fd(), e)?;
            }
            "symlink" => {
                at::symlinkat(OsStr::new(&e.link_name), p, bname).map_err(|x| err(&e.name, x))?;
                at::fchownat(p, bname, e.uid, e.gid).map_err(|x| err(&e.name, x))?;
                at::utimensat(p, bname, &times(mtime(e))).map_err(|x| err(&e.name, x))?;
            }
            "hardlink" => {
                let (tp, tb) = split(&e.link_name);
                let tfd = at::open_beneath(root, tp.as_bytes(), DIR_FLAGS)
                    .map_err(|x| err(&e.name, x))?;
                at::linkat(tfd.as_fd(), OsStr::new(tb), p, bname).map_err(|x| err(&e.name, x))?;
            }
            "char" | "block" | "fifo" => {
                let kind = match e.kind.as_str() {
                    "char" => libc::S_IFCHR,
                    "block" => libc::S_IFBLK,
                    _ => libc::S_IFIFO,
                };
                let dev = libc::makedev(e.dev_major, e.dev_minor);
                at::mknodat(p, bname, kind | perm, dev).map_err(|x| err(&e.name, x))?;
                at::fchownat(p, bname, e.uid, e.gid).map_err(|x| err(&e.name, x))?;
                at::fchmodat(p, bname, perm).map_err(|x| err(&e.name, x))?;
                at::utimensat(p, bname, &times(mtime(e))).map_err(|x| err(&e.name, x))?;
            }
            _ => return Err(err(&e.name, Errno::EINVAL)),
        }
    }
    // Deepest first, so setting a child's times does not touch its parent's again.
    let mut dirs: Vec<_> = dir_times.into_iter().collect();
    dirs.sort_by_key(|(n, _)| {
        std::cmp::Reverse(n.matches('/').count() + usize::from(!n.is_empty()))
    });
    for (name, t) in dirs {
        let fd = at::open_beneath(root, name.as_bytes(), DIR_FLAGS).map_err(|x| err(&name, x))?;
        at::utimensat(fd.as_fd(), OsStr::new(SELF), &times(t)).map_err(|x| err(&name, x))?;
    }
    Ok(())
}

/// Owner, mode, xattrs and times of an entry opened as `fd` (owner before mode: chown clears
/// set-user-ID bits).
fn attrs(fd: BorrowedFd<'_>, e: &TocEntry) -> Result<(), LazyError> {
    at::fchownat(fd, OsStr::new(SELF), e.uid, e.gid).map_err(|x| err(&e.name, x))?;
    at::fchmod(fd, e.mode & 0o7777).map_err(|x| err(&e.name, x))?;
    set_xattrs(fd, e)?;
    at::utimensat(fd, OsStr::new(SELF), &times(mtime(e))).map_err(|x| err(&e.name, x))
}
