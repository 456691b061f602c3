//! Reading a container's files safely: a tar stream of a tree, written fd-relative
//! (`strata_fs::at::walk`: every directory opened from its parent with `O_NOFOLLOW`), so a
//! container swapping a directory for a symlink while we read (the CVE-2018-15664 race) never
//! makes us read outside its root. Used by `export` and `cp` out of a container; container
//! paths named by the user are resolved with `openat2(RESOLVE_IN_ROOT)`.

use std::ffi::OsStr;
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use nix::errno::Errno;
use strata_fs::at::{self, Step, Visitor, WalkEntry};

/// Errors of reading a container's tree.
#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    #[error("Could not find the file {0} in container {1}")]
    NotFound(String, String),
    #[error("{path}: {source}")]
    Sys {
        path: String,
        #[source]
        source: Errno,
    },
    #[error("writing the archive: {0}")]
    Write(#[source] std::io::Error),
}

impl From<Errno> for CopyError {
    fn from(source: Errno) -> Self {
        CopyError::Sys {
            path: String::new(),
            source,
        }
    }
}

/// [`at::open_in_root`] of a container path given as a string.
pub fn open_in_root(
    root: BorrowedFd<'_>,
    path: &str,
    flags: libc::c_int,
    follow: bool,
) -> Result<OwnedFd, Errno> {
    strata_fs::at::open_in_root(root, path.as_bytes(), flags, follow)
}

fn header_for(st: &libc::stat) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_mode(st.st_mode & 0o7777);
    h.set_uid(st.st_uid as u64);
    h.set_gid(st.st_gid as u64);
    h.set_mtime(st.st_mtime.max(0) as u64);
    h.set_size(0);
    h
}

/// Append one entry (already `lstat`ed as `st`, named `name` in `dir`) to `b` as `path`.
fn append_entry<W: Write>(
    b: &mut tar::Builder<W>,
    dir: BorrowedFd<'_>,
    name: &OsStr,
    path: &[u8],
    st: &libc::stat,
) -> Result<(), CopyError> {
    let shown = || String::from_utf8_lossy(path).into_owned();
    let mut h = header_for(st);
    let p = Path::new(OsStr::from_bytes(path));
    let werr = CopyError::Write;
    match st.st_mode & libc::S_IFMT {
        libc::S_IFDIR => {
            h.set_entry_type(tar::EntryType::Directory);
            let mut with_slash = path.to_vec();
            with_slash.push(b'/');
            b.append_data(
                &mut h,
                Path::new(OsStr::from_bytes(&with_slash)),
                std::io::empty(),
            )
            .map_err(werr)
        }
        libc::S_IFREG => {
            let fd =
                at::openat(dir, name, libc::O_RDONLY | libc::O_NOFOLLOW, 0).map_err(|source| {
                    CopyError::Sys {
                        path: shown(),
                        source,
                    }
                })?;
            let f = std::fs::File::from(fd);
            let len = f.metadata().map(|m| m.len()).unwrap_or(0);
            h.set_entry_type(tar::EntryType::Regular);
            h.set_size(len);
            // `take`: a file growing meanwhile must not overrun its header's size.
            let mut data = f.take(len);
            let mut reader = Padded {
                inner: &mut data,
                left: len,
            };
            b.append_data(&mut h, p, &mut reader).map_err(werr)
        }
        libc::S_IFLNK => {
            let target = at::readlinkat(dir, name).map_err(|source| CopyError::Sys {
                path: shown(),
                source,
            })?;
            h.set_entry_type(tar::EntryType::Symlink);
            b.append_link(&mut h, p, Path::new(OsStr::from_bytes(&target)))
                .map_err(werr)
        }
        kind => {
            let t = match kind {
                libc::S_IFCHR => tar::EntryType::Char,
                libc::S_IFBLK => tar::EntryType::Block,
                libc::S_IFIFO => tar::EntryType::Fifo,
                // Sockets do not go into archives.
                _ => return Ok(()),
            };
            h.set_entry_type(t);
            let _ = h.set_device_major(libc::major(st.st_rdev));
            let _ = h.set_device_minor(libc::minor(st.st_rdev));
            b.append_data(&mut h, p, std::io::empty()).map_err(werr)
        }
    }
}

/// A reader that yields exactly `left` bytes: the file's, then zeros if it shrank meanwhile.
struct Padded<'a, R: Read> {
    inner: &'a mut R,
    left: u64,
}

impl<R: Read> Read for Padded<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.left == 0 {
            return Ok(0);
        }
        let want = buf.len().min(self.left as usize);
        let n = match self.inner.read(&mut buf[..want])? {
            0 => {
                buf[..want].fill(0);
                want
            }
            n => n,
        };
        self.left -= n as u64;
        Ok(n)
    }
}

struct TarVisitor<'a, W: Write> {
    b: &'a mut tar::Builder<W>,
    prefix: Vec<u8>,
}

impl<W: Write> Visitor for TarVisitor<'_, W> {
    type Error = CopyError;
    fn entry(&mut self, e: &WalkEntry<'_>) -> Result<Step, CopyError> {
        let mut path = self.prefix.clone();
        if !path.is_empty() {
            path.push(b'/');
        }
        path.extend_from_slice(e.path);
        append_entry(self.b, e.dir, e.name, &path, e.stat)?;
        Ok(Step::Descend)
    }
}

/// Write the tree below the directory `dir` to `b`, entries named `prefix/…` (no prefix: the
/// tree's own names, as `export` writes them).
pub fn tar_dir<W: Write>(
    b: &mut tar::Builder<W>,
    dir: BorrowedFd<'_>,
    prefix: &[u8],
) -> Result<(), CopyError> {
    let mut v = TarVisitor {
        b,
        prefix: prefix.to_vec(),
    };
    at::walk(dir, &mut v)
}

/// `export`: the whole root filesystem at `root` as a tar stream into `out`.
pub fn export(root: &Path, out: impl Write) -> Result<(), CopyError> {
    let fd = at::open_dir(root).map_err(|source| CopyError::Sys {
        path: root.display().to_string(),
        source,
    })?;
    let mut b = tar::Builder::new(out);
    tar_dir(&mut b, fd.as_fd(), b"")?;
    b.into_inner()
        .map_err(CopyError::Write)?
        .flush()
        .map_err(CopyError::Write)
}

/// `cp CONTAINER:SRC`: the entry `src` of the root at `root` (resolved in the root, its last
/// component followed only with `follow`) as a tar stream named `name` (default: its base
/// name; `SRC/.`: its contents, unnamed), as Docker's archive for `cp` is.
pub fn tar_path(
    root: &Path,
    container: &str,
    src: &str,
    follow: bool,
    name: Option<&[u8]>,
    out: impl Write,
) -> Result<(), CopyError> {
    let rootfd = at::open_dir(root).map_err(|source| CopyError::Sys {
        path: root.display().to_string(),
        source,
    })?;
    let not_found = || CopyError::NotFound(src.to_string(), container.to_string());
    let contents_only = src.ends_with("/.");
    let fd =
        open_in_root(rootfd.as_fd(), src, libc::O_PATH, follow || contents_only).map_err(|e| {
            if e == Errno::ENOENT {
                not_found()
            } else {
                CopyError::Sys {
                    path: src.to_string(),
                    source: e,
                }
            }
        })?;
    let st = at::fstat(fd.as_fd()).map_err(|source| CopyError::Sys {
        path: src.to_string(),
        source,
    })?;
    let trimmed = src.trim_end_matches("/.").trim_end_matches('/');
    let base = match name {
        Some(n) => n.to_vec(),
        None => Path::new(trimmed)
            .file_name()
            .map(|n| n.as_bytes().to_vec())
            .unwrap_or_else(|| b".".to_vec()),
    };
    let mut b = tar::Builder::new(out);
    let is_dir = st.st_mode & libc::S_IFMT == libc::S_IFDIR;
    if is_dir {
        let dirfd = reopen(fd.as_fd(), libc::O_RDONLY | libc::O_DIRECTORY).map_err(|source| {
            CopyError::Sys {
                path: src.to_string(),
                source,
            }
        })?;
        if contents_only {
            tar_dir(&mut b, dirfd.as_fd(), b"")?;
        } else {
            append_entry(&mut b, fd.as_fd(), OsStr::new(""), &base, &st)?;
            tar_dir(&mut b, dirfd.as_fd(), &base)?;
        }
    } else {
        // The entry itself: reopened from the O_PATH fd (never by name, which could have
        // been swapped meanwhile).
        append_self(&mut b, fd.as_fd(), &base, &st)?;
    }
    b.into_inner()
        .map_err(CopyError::Write)?
        .flush()
        .map_err(CopyError::Write)
}

/// Append the non-directory entry `fd` (an `O_PATH` fd) itself.
fn append_self<W: Write>(
    b: &mut tar::Builder<W>,
    fd: BorrowedFd<'_>,
    name: &[u8],
    st: &libc::stat,
) -> Result<(), CopyError> {
    let shown = || String::from_utf8_lossy(name).into_owned();
    let p = Path::new(OsStr::from_bytes(name));
    let mut h = header_for(st);
    match st.st_mode & libc::S_IFMT {
        libc::S_IFREG => {
            let f = std::fs::File::from(reopen(fd, libc::O_RDONLY).map_err(|source| {
                CopyError::Sys {
                    path: shown(),
                    source,
                }
            })?);
            h.set_entry_type(tar::EntryType::Regular);
            h.set_size(st.st_size as u64);
            let mut data = f.take(st.st_size as u64);
            let mut reader = Padded {
                inner: &mut data,
                left: st.st_size as u64,
            };
            b.append_data(&mut h, p, &mut reader)
                .map_err(CopyError::Write)
        }
        libc::S_IFLNK => {
            let target = at::readlinkat(fd, OsStr::new("")).map_err(|source| CopyError::Sys {
                path: shown(),
                source,
            })?;
            h.set_entry_type(tar::EntryType::Symlink);
            b.append_link(&mut h, p, Path::new(OsStr::from_bytes(&target)))
                .map_err(CopyError::Write)
        }
        _ => append_entry(b, fd, OsStr::new(""), name, st),
    }
}

/// Open the file an `O_PATH` fd names (through its `/proc/self/fd` link: the same inode, never
/// a path lookup that a rename could redirect).
pub fn reopen(fd: BorrowedFd<'_>, flags: libc::c_int) -> Result<OwnedFd, Errno> {
    let p = std::ffi::CString::new(format!("/proc/self/fd/{}", fd.as_raw_fd()))
        .map_err(|_| Errno::EINVAL)?;
    // SAFETY: a NUL-terminated path; the returned fd is owned below.
    let r = unsafe { libc::open(p.as_ptr(), flags | libc::O_CLOEXEC) };
    if r < 0 {
        return Err(Errno::last());
    }
    // SAFETY: a fresh fd.
    Ok(unsafe { OwnedFd::from_raw_fd(r) })
}

/// What a container path is, resolved in the root (last component followed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathKind {
    Missing,
    Dir,
    Other,
}

/// Stat `path` inside `root` (`RESOLVE_IN_ROOT`, last component followed).
pub fn kind_in_root(root: &Path, path: &str) -> Result<PathKind, CopyError> {
    let rootfd = at::open_dir(root).map_err(|source| CopyError::Sys {
        path: root.display().to_string(),
        source,
    })?;
    match open_in_root(rootfd.as_fd(), path, libc::O_PATH, true) {
        Ok(fd) => {
            let st = at::fstat(fd.as_fd()).map_err(|source| CopyError::Sys {
                path: path.to_string(),
                source,
            })?;
            Ok(if st.st_mode & libc::S_IFMT == libc::S_IFDIR {
                PathKind::Dir
            } else {
                PathKind::Other
            })
        }
        Err(Errno::ENOENT) => Ok(PathKind::Missing),
        Err(source) => Err(CopyError::Sys {
            path: path.to_string(),
            source,
        }),
    }
}

/// True when `path` inside `root` is a regular file (its last component followed with `follow`).
pub fn is_regular_in_root(root: &Path, path: &str, follow: bool) -> bool {
    let Ok(fd) = at::open_dir(root) else {
        return false;
    };
    open_in_root(fd.as_fd(), path, libc::O_PATH, follow)
        .ok()
        .and_then(|f| at::fstat(f.as_fd()).ok())
        .is_some_and(|st| st.st_mode & libc::S_IFMT == libc::S_IFREG)
}

/// Unpack the tar stream `input` into the directory `dest` of the root at `root`. Each entry's
/// parent is resolved in the root (`RESOLVE_IN_ROOT`: symlinks, even ones the container swaps
/// in while we write, resolve inside it) and the entry is created there with `*at` calls that
/// never follow a final symlink. Owners are root's, or the archive's with `keep_owner` (`-a`).
/// Returns the bytes read from `input`.
pub fn extract(
    root: &Path,
    dest: &str,
    input: impl Read,
    keep_owner: bool,
) -> Result<u64, CopyError> {
    let rootfd = at::open_dir(root).map_err(|source| CopyError::Sys {
        path: root.display().to_string(),
        source,
    })?;
    let mut counter = Counting { inner: input, n: 0 };
    let mut ar = tar::Archive::new(&mut counter);
    let entries = ar.entries().map_err(CopyError::Write)?;
    for entry in entries {
        let mut entry = entry.map_err(CopyError::Write)?;
        let raw = entry.path_bytes().into_owned();
        let rel = clean_entry_path(&raw).ok_or_else(|| CopyError::Sys {
            path: String::from_utf8_lossy(&raw).into_owned(),
            source: Errno::EINVAL,
        })?;
        if rel.is_empty() {
            continue;
        }
        let full = format!("{}/{}", dest.trim_end_matches('/'), rel);
        let (parent, name) = full.rsplit_once('/').unwrap_or(("", full.as_str()));
        let sys = |source| CopyError::Sys {
            path: full.clone(),
            source,
        };
        let pfd = match open_in_root(
            rootfd.as_fd(),
            parent,
            libc::O_PATH | libc::O_DIRECTORY,
            true,
        ) {
            Err(Errno::ENOENT) => make_parents(rootfd.as_fd(), dest, &rel).map_err(sys)?,
            r => r.map_err(sys)?,
        };
        let dir = pfd.as_fd();
        let name = OsStr::new(name);
        let h = entry.header().clone();
        let mode = h.mode().unwrap_or(0o644) & 0o7777;
        let (uid, gid) = if keep_owner {
            (h.uid().unwrap_or(0) as u32, h.gid().unwrap_or(0) as u32)
        } else {
            (0, 0)
        };
        let kind = h.entry_type();
        let existing = at::fstatat(dir, name).ok();
        let existing_dir = existing.is_some_and(|st| st.st_mode & libc::S_IFMT == libc::S_IFDIR);
        if existing.is_some() && !(kind.is_dir() && existing_dir) {
            if existing_dir {
                at::remove_all_at(dir, name).map_err(sys)?;
            } else {
                at::unlinkat(dir, name, false).map_err(sys)?;
            }
        }
        match kind {
            tar::EntryType::Directory => {
                if !existing_dir {
                    at::mkdirat(dir, name, mode).map_err(sys)?;
                }
            }
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                let fd = at::openat(
                    dir,
                    name,
                    libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL,
                    mode,
                )
                .map_err(sys)?;
                let mut f = std::fs::File::from(fd);
                std::io::copy(&mut entry, &mut f).map_err(CopyError::Write)?;
            }
            tar::EntryType::Symlink => {
                let target = entry
                    .link_name_bytes()
                    .map(|t| t.into_owned())
                    .unwrap_or_default();
                at::symlinkat(OsStr::from_bytes(&target), dir, name).map_err(sys)?;
            }
            tar::EntryType::Char | tar::EntryType::Block | tar::EntryType::Fifo => {
                let t = match kind {
                    tar::EntryType::Char => libc::S_IFCHR,
                    tar::EntryType::Block => libc::S_IFBLK,
                    _ => libc::S_IFIFO,
                };
                let dev = libc::makedev(
                    h.device_major().ok().flatten().unwrap_or(0),
                    h.device_minor().ok().flatten().unwrap_or(0),
                );
                at::mknodat(dir, name, t | mode, dev).map_err(sys)?;
            }
            tar::EntryType::Link => {
                // Hard links inside the copied tree: linked by resolving the target in the root.
                let target = entry
                    .link_name_bytes()
                    .map(|t| t.into_owned())
                    .unwrap_or_default();
                let Some(trel) = clean_entry_path(&target) else {
                    continue;
                };
                let tfull = format!("{}/{}", dest.trim_end_matches('/'), trel);
                let (tp, tn) = tfull.rsplit_once('/').unwrap_or(("", tfull.as_str()));
                let tdir = open_in_root(rootfd.as_fd(), tp, libc::O_PATH | libc::O_DIRECTORY, true)
                    .map_err(sys)?;
                at::linkat(tdir.as_fd(), OsStr::new(tn), dir, name).map_err(sys)?;
                continue;
            }
            // Pax/GNU metadata entries are consumed by the tar reader; others are skipped.
            _ => continue,
        }
        if kind != tar::EntryType::Symlink {
            at::fchownat(dir, name, uid, gid).map_err(sys)?;
            // After chown, which clears set-id bits.
            at::fchmodat(dir, name, mode).map_err(sys)?;
            if let Ok(mtime) = h.mtime() {
                let t = libc::timespec {
                    tv_sec: mtime as libc::time_t,
                    tv_nsec: 0,
                };
                let _ = at::utimensat(dir, name, &[t, t]);
            }
        } else {
            let _ = at::fchownat(dir, name, uid, gid);
        }
    }
    let _ = ar;
    // Read to the end (the archive's trailing zero blocks count, as Docker counts them).
    let _ = std::io::copy(&mut counter, &mut std::io::sink());
    Ok(counter.n)
}

/// Create the missing directories between `dest` and the entry `rel` (an archive may omit
/// them), each from its parent's fd, never following a symlink; returns the entry's parent.
fn make_parents(root: BorrowedFd<'_>, dest: &str, rel: &str) -> Result<OwnedFd, Errno> {
    let mut cur = open_in_root(root, dest, libc::O_PATH | libc::O_DIRECTORY, true)?;
    let comps: Vec<&str> = rel.split('/').collect();
    for c in &comps[..comps.len().saturating_sub(1)] {
        let name = OsStr::new(c);
        match at::mkdirat(cur.as_fd(), name, 0o755) {
            Ok(()) | Err(Errno::EEXIST) => {}
            Err(e) => return Err(e),
        }
        cur = at::openat(cur.as_fd(), name, libc::O_PATH | libc::O_DIRECTORY, 0)?;
    }
    Ok(cur)
}

/// An archive entry's path as `/`-joined normal components (`./a/b/` → `a/b`); `None` when it
/// holds `..` (archives are hostile input).
fn clean_entry_path(raw: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(raw).ok()?;
    let mut parts = Vec::new();
    for c in text.split('/') {
        match c {
            "" | "." => {}
            ".." => return None,
            c => parts.push(c),
        }
    }
    Some(parts.join("/"))
}

/// Counts the bytes read through it.
struct Counting<R: Read> {
    inner: R,
    n: u64,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.n += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_paths_are_cleaned_and_dotdot_refused() {
        assert_eq!(clean_entry_path(b"./a/b/").as_deref(), Some("a/b"));
        assert_eq!(clean_entry_path(b"/etc/x").as_deref(), Some("etc/x"));
        assert_eq!(clean_entry_path(b"a/../../x"), None);
    }

    #[test]
    fn resolution_stays_in_the_root() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().join("root");
        std::fs::create_dir_all(root.join("d")).unwrap();
        std::fs::write(root.join("d/f"), b"inside").unwrap();
        std::os::unix::fs::symlink("/", root.join("up")).unwrap();
        std::os::unix::fs::symlink("../../../..", root.join("dots")).unwrap();
        std::fs::write(t.path().join("outside"), b"host").unwrap();
        let fd = at::open_dir(&root).unwrap();
        // `/up/d/f` and `/dots/d/f` are the root's own `d/f`.
        for p in ["/up/d/f", "dots/d/f"] {
            let f = open_in_root(fd.as_fd(), p, libc::O_RDONLY, true).unwrap();
            let mut s = String::new();
            std::fs::File::from(f).read_to_string(&mut s).unwrap();
            assert_eq!(s, "inside", "{p}");
        }
        assert_eq!(
            open_in_root(fd.as_fd(), "/up/outside", libc::O_RDONLY, true).err(),
            Some(Errno::ENOENT)
        );
        // Extraction through a symlink to / lands in the root.
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(3);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::Regular);
        b.append_data(&mut h, "planted", &b"bad"[..]).unwrap();
        let data = b.into_inner().unwrap();
        extract(&root, "/up", &data[..], false).unwrap();
        assert_eq!(std::fs::read(root.join("planted")).unwrap(), b"bad");
        assert!(!Path::new("/planted").exists());
    }
}
