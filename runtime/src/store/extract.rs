//! Hostile-input-safe extraction of a layer tar into an empty directory, in the overlay format.
//!
//! Every file operation is relative to a directory fd opened with `O_NOFOLLOW` at each step
//! (`openat`, `mkdirat`, `mknodat`, `symlinkat`, `linkat` without `AT_SYMLINK_FOLLOW`), so a
//! symlink planted by the tar (or a path with `..`) can never redirect a write outside the
//! layer dir: such entries are refused with [`ExtractError::Unsafe`].
//!
//! Whiteouts: `dir/.wh.name` becomes a char device 0/0 `dir/name`; `dir/.wh..wh..opq` sets
//! `trusted.overlay.opaque=y` on `dir`; other `.wh..wh.*` (AUFS metadata) are ignored.
//!
//! While extracting, the uncompressed stream is hashed (the diffID) and recorded as a
//! "tar-split" (see `tarsplit.rs`), so the exact tar can be rebuilt later for `save`/`push`
//! without keeping a copy of it.

use std::cell::RefCell;
use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path};
use std::rc::Rc;

use nix::errno::Errno;
use nix::fcntl::{openat, AtFlags, OFlag};
use nix::sys::stat::{fchmod, fstatat, mkdirat, mknodat, utimensat, Mode, SFlag, UtimensatFlags};
use nix::sys::time::TimeSpec;
use nix::unistd::{fchown, fchownat, linkat, symlinkat, unlinkat, Gid, Uid, UnlinkatFlags};

use super::tarsplit::SplitWriter;
use crate::digest::{Digest, Hasher};

#[derive(Debug, thiserror::Error)]
pub enum ExtractError {
    #[error("{0}")]
    Tar(#[source] io::Error),
    #[error("refusing unsafe archive entry {path:?}: {why}")]
    Unsafe { path: String, why: &'static str },
    #[error("extracting {path:?}: {source}")]
    Io {
        path: String,
        #[source]
        source: io::Error,
    },
}

fn io_err(path: &str, e: impl Into<io::Error>) -> ExtractError {
    ExtractError::Io {
        path: path.to_string(),
        source: e.into(),
    }
}

fn unsafe_entry(path: &str, why: &'static str) -> ExtractError {
    ExtractError::Unsafe {
        path: path.to_string(),
        why,
    }
}

/// What extraction produced.
#[derive(Debug)]
pub struct Extracted {
    /// sha256 of the uncompressed tar.
    pub diff_id: Digest,
    /// Bytes of the uncompressed tar.
    pub tar_size: u64,
    /// Docker's layer size: regular file bytes (hard links once) plus symlink target lengths.
    pub size: u64,
    /// Old contents of tar-split file records whose file was replaced later in the tar.
    pub patches: Vec<(u64, Vec<u8>)>,
}

struct RecState<'a> {
    hasher: Hasher,
    split: SplitWriter<'a>,
    raw: bool,
}

struct Recorder<'a, R> {
    inner: R,
    state: Rc<RefCell<RecState<'a>>>,
}

impl<R: Read> Read for Recorder<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        let mut st = self.state.borrow_mut();
        st.hasher.update(&buf[..n]);
        if st.raw && n > 0 {
            st.split.raw(&buf[..n])?;
        }
        Ok(n)
    }
}

/// Turn a tar path into safe relative components; refuse absolute paths and `..`.
pub(crate) fn clean_path(raw: &Path, shown: &str) -> Result<Vec<Vec<u8>>, ExtractError> {
    let mut out = Vec::new();
    for c in raw.components() {
        match c {
            Component::Normal(n) => out.push(n.as_bytes().to_vec()),
            Component::CurDir => {}
            Component::RootDir | Component::Prefix(_) => {
                return Err(unsafe_entry(shown, "absolute path"))
            }
            Component::ParentDir => return Err(unsafe_entry(shown, "path contains \"..\"")),
        }
    }
    Ok(out)
}

/// Open `comps` (all directories) below `root` without following symlinks; create missing ones
/// (mode 0755) when `create`.
pub(crate) fn open_dir_path(
    root: BorrowedFd<'_>,
    comps: &[Vec<u8>],
    create: bool,
    shown: &str,
) -> Result<OwnedFd, ExtractError> {
    let flags = OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_RDONLY | OFlag::O_CLOEXEC;
    let mut cur = openat(root, ".", flags, Mode::empty()).map_err(|e| io_err(shown, e))?;
    for c in comps {
        let name = OsStr::from_bytes(c);
        let next = match openat(&cur, name, flags, Mode::empty()) {
            Ok(fd) => fd,
            Err(Errno::ENOENT) if create => {
                match mkdirat(&cur, name, Mode::from_bits_truncate(0o755)) {
                    Ok(()) | Err(Errno::EEXIST) => {}
                    Err(e) => return Err(io_err(shown, e)),
                }
                openat(&cur, name, flags, Mode::empty()).map_err(|e| io_err(shown, e))?
            }
            Err(Errno::ELOOP) | Err(Errno::ENOTDIR) => {
                return Err(unsafe_entry(
                    shown,
                    "parent is a symlink or not a directory",
                ))
            }
            Err(e) => return Err(io_err(shown, e)),
        };
        cur = next;
    }
    Ok(cur)
}

/// Remove `name` in `dir` (recursively for directories), never following symlinks.
pub(crate) fn remove_at(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<()> {
    match unlinkat(dir, name, UnlinkatFlags::NoRemoveDir) {
        Ok(()) | Err(Errno::ENOENT) => return Ok(()),
        Err(Errno::EISDIR) | Err(Errno::EPERM) => {}
        Err(e) => return Err(e.into()),
    }
    let flags = OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_RDONLY | OFlag::O_CLOEXEC;
    let sub = openat(dir, name, flags, Mode::empty())?;
    let names: Vec<Vec<u8>> = {
        let mut d = nix::dir::Dir::from_fd(nix::unistd::dup(&sub)?)?;
        d.iter()
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_bytes().to_vec())
            .filter(|n| n != b"." && n != b"..")
            .collect()
    };
    for n in names {
        remove_at(sub.as_fd(), OsStr::from_bytes(&n))?;
    }
    unlinkat(dir, name, UnlinkatFlags::RemoveDir)?;
    Ok(())
}

fn exists_kind(dir: BorrowedFd<'_>, name: &OsStr) -> Option<SFlag> {
    fstatat(dir, name, AtFlags::AT_SYMLINK_NOFOLLOW)
        .ok()
        .map(|st| SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits()))
}

fn set_xattr(fd: BorrowedFd<'_>, key: &str, value: &[u8]) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let k =
        std::ffi::CString::new(key).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: `k` is a valid NUL-terminated string, `value` a valid slice for its length, and
    // `fd` an open descriptor borrowed for the duration of the call.
    let r = unsafe {
        libc::fsetxattr(
            fd.as_raw_fd(),
            k.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Mark an open directory opaque (kernel overlayfs format; `user.` form when not root).
pub(crate) fn set_opaque(dir: BorrowedFd<'_>) -> io::Result<()> {
    match set_xattr(dir, "trusted.overlay.opaque", b"y") {
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => {
            set_xattr(dir, "user.overlay.opaque", b"y")
        }
        r => r,
    }
}

/// Create a char 0/0 whiteout `name` in `dir`.
pub(crate) fn make_whiteout(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<()> {
    mknodat(dir, name, SFlag::S_IFCHR, Mode::empty(), 0)?;
    Ok(())
}

fn timespec(secs: u64) -> TimeSpec {
    TimeSpec::new(secs.min(i64::MAX as u64) as i64, 0)
}

struct Extractor<'a> {
    root: BorrowedFd<'a>,
    size: u64,
    /// (dev, ino) of regular files already counted, so hard links count once.
    counted: HashMap<(u64, u64), ()>,
    /// tar-split record number of the content of each extracted path.
    file_segment: HashMap<Vec<u8>, u64>,
    patches: Vec<(u64, Vec<u8>)>,
    dir_times: Vec<(Vec<Vec<u8>>, u64)>,
    /// File contents are copied through this buffer: large chunks mean fewer inflate calls
    /// and write(2)s than io::copy's 8 KiB (34 MB file: ~4,200 writes -> ~130).
    buf: Vec<u8>,
}

/// Extract the (uncompressed) tar `input` into the empty directory `root`, writing its
/// tar-split record to `split`.
pub fn extract<R: Read>(
    input: R,
    root: BorrowedFd<'_>,
    split: &mut dyn Write,
) -> Result<Extracted, ExtractError> {
    let state = Rc::new(RefCell::new(RecState {
        hasher: Hasher::new(),
        split: SplitWriter::new(split),
        raw: true,
    }));
    let rec = Recorder {
        inner: input,
        state: state.clone(),
    };
    let mut ar = tar::Archive::new(rec);
    let mut ex = Extractor {
        root,
        size: 0,
        counted: HashMap::new(),
        file_segment: HashMap::new(),
        patches: Vec::new(),
        dir_times: Vec::new(),
        buf: Vec::new(),
    };
    {
        let entries = ar.entries().map_err(ExtractError::Tar)?;
        for entry in entries {
            let entry = entry.map_err(ExtractError::Tar)?;
            ex.entry(entry, &state)?;
        }
    }
    // Trailing zero blocks and anything after them belong to the stream too.
    let mut rest = ar.into_inner();
    io::copy(&mut rest, &mut io::sink()).map_err(ExtractError::Tar)?;
    drop(rest);
    // Directory times last: creating children changed them.
    for (comps, mtime) in ex.dir_times.iter().rev() {
        if let Ok(fd) = open_dir_path(root, comps, false, "") {
            let t = timespec(*mtime);
            let _ = nix::sys::stat::futimens(&fd, &t, &t);
        }
    }
    let size = ex.size;
    let patches = std::mem::take(&mut ex.patches);
    drop(ex);
    let st = Rc::try_unwrap(state)
        .map_err(|_| ExtractError::Tar(io::Error::other("recorder still shared")))?
        .into_inner();
    st.split.finish().map_err(|e| io_err("tar-split", e))?;
    let tar_size = st.hasher.len();
    Ok(Extracted {
        diff_id: st.hasher.finish(),
        tar_size,
        size,
        patches,
    })
}

impl Extractor<'_> {
    fn entry<R: Read>(
        &mut self,
        mut entry: tar::Entry<'_, R>,
        state: &Rc<RefCell<RecState<'_>>>,
    ) -> Result<(), ExtractError> {
        let kind = entry.header().entry_type();
        if matches!(
            kind,
            tar::EntryType::XGlobalHeader | tar::EntryType::XHeader | tar::EntryType::GNULongName
        ) {
            return Ok(());
        }
        let raw_path = entry.path().map_err(ExtractError::Tar)?.into_owned();
        let shown = raw_path.to_string_lossy().into_owned();
        let mut comps = clean_path(&raw_path, &shown)?;
        let Some(base) = comps.pop() else {
            return Ok(()); // the root itself: keep the layer dir's own metadata
        };
        let parent = open_dir_path(self.root, &comps, true, &shown)?;
        let base_os = OsStr::from_bytes(&base);

        if let Some(hidden) = base.strip_prefix(b".wh.") {
            if hidden == b".wh..opq" {
                set_opaque(parent.as_fd()).map_err(|e| io_err(&shown, e))?;
            } else if hidden.starts_with(b".wh.") || hidden.is_empty() {
                // AUFS metadata (.wh..wh.plnk, ...): ignored.
            } else {
                let name = OsStr::from_bytes(hidden);
                let mut key = comps.join(&b'/');
                if !key.is_empty() {
                    key.push(b'/');
                }
                key.extend_from_slice(hidden);
                self.forget(&key)?;
                remove_at(parent.as_fd(), name).map_err(|e| io_err(&shown, e))?;
                make_whiteout(parent.as_fd(), name).map_err(|e| io_err(&shown, e))?;
            }
            return Ok(());
        }

        let h = entry.header().clone();
        // Like Go's archive/tar, an empty numeric field reads as 0.
        let pax = pax_records(&mut entry)?;
        let mode = Mode::from_bits_truncate(h.mode().unwrap_or(0) & 0o7777);
        let uid = Uid::from_raw(pax.uid.unwrap_or_else(|| h.uid().unwrap_or(0)) as u32);
        let gid = Gid::from_raw(pax.gid.unwrap_or_else(|| h.gid().unwrap_or(0)) as u32);
        let mtime = pax.mtime.unwrap_or_else(|| h.mtime().unwrap_or(0));
        let xattrs = pax.xattrs;
        let mut key = comps.join(&b'/');
        if !key.is_empty() {
            key.push(b'/');
        }
        key.extend_from_slice(&base);

        // Replace whatever this layer already has at that name, unless dir over dir.
        let existing = exists_kind(parent.as_fd(), base_os);
        let is_dir = kind == tar::EntryType::Directory;
        if let Some(k) = existing {
            if !(is_dir && k == SFlag::S_IFDIR) {
                self.forget(&key)?;
                remove_at(parent.as_fd(), base_os).map_err(|e| io_err(&shown, e))?;
            }
        }

        match kind {
            tar::EntryType::Directory => {
                if existing != Some(SFlag::S_IFDIR) {
                    mkdirat(&parent, base_os, Mode::from_bits_truncate(0o700))
                        .map_err(|e| io_err(&shown, e))?;
                }
                let fd = open_dir_path(parent.as_fd(), std::slice::from_ref(&base), false, &shown)?;
                fchown(&fd, Some(uid), Some(gid)).map_err(|e| io_err(&shown, e))?;
                fchmod(&fd, mode).map_err(|e| io_err(&shown, e))?;
                apply_xattrs(fd.as_fd(), &xattrs, &shown)?;
                let mut full = comps.clone();
                full.push(base);
                self.dir_times.push((full, mtime));
            }
            tar::EntryType::Regular | tar::EntryType::Continuous | tar::EntryType::GNUSparse => {
                let flags = OFlag::O_CREAT
                    | OFlag::O_EXCL
                    | OFlag::O_WRONLY
                    | OFlag::O_NOFOLLOW
                    | OFlag::O_CLOEXEC;
                let fd = openat(&parent, base_os, flags, Mode::from_bits_truncate(0o600))
                    .map_err(|e| io_err(&shown, e))?;
                let mut file = File::from(fd);
                let sparse = kind == tar::EntryType::GNUSparse;
                let size = entry.size();
                if !sparse && size > 0 {
                    let mut st = state.borrow_mut();
                    let idx = st.split.file(&key, size).map_err(|e| io_err(&shown, e))?;
                    self.file_segment.insert(key.clone(), idx);
                    st.raw = false;
                }
                let copied = copy_big(&mut entry, &mut file, &mut self.buf);
                state.borrow_mut().raw = true;
                let copied = copied.map_err(ExtractError::Tar)?;
                if !sparse && copied != size {
                    return Err(ExtractError::Tar(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "truncated file content",
                    )));
                }
                let st = nix::sys::stat::fstat(&file).map_err(|e| io_err(&shown, e))?;
                if self.counted.insert((st.st_dev, st.st_ino), ()).is_none() {
                    self.size += copied;
                }
                fchown(&file, Some(uid), Some(gid)).map_err(|e| io_err(&shown, e))?;
                fchmod(&file, mode).map_err(|e| io_err(&shown, e))?;
                apply_xattrs(file.as_fd(), &xattrs, &shown)?;
                let t = timespec(mtime);
                nix::sys::stat::futimens(&file, &t, &t).map_err(|e| io_err(&shown, e))?;
            }
            tar::EntryType::Symlink => {
                let target = entry
                    .link_name_bytes()
                    .ok_or_else(|| unsafe_entry(&shown, "symlink without target"))?
                    .into_owned();
                symlinkat(OsStr::from_bytes(&target), &parent, base_os)
                    .map_err(|e| io_err(&shown, e))?;
                self.size += target.len() as u64;
                fchownat(
                    &parent,
                    base_os,
                    Some(uid),
                    Some(gid),
                    AtFlags::AT_SYMLINK_NOFOLLOW,
                )
                .map_err(|e| io_err(&shown, e))?;
                let t = timespec(mtime);
                let _ = utimensat(&parent, base_os, &t, &t, UtimensatFlags::NoFollowSymlink);
            }
            tar::EntryType::Link => {
                let target = entry
                    .link_name()
                    .map_err(ExtractError::Tar)?
                    .ok_or_else(|| unsafe_entry(&shown, "hard link without target"))?
                    .into_owned();
                let mut tcomps = clean_path(&target, &shown)?;
                let tbase = tcomps
                    .pop()
                    .ok_or_else(|| unsafe_entry(&shown, "hard link to the root"))?;
                let tdir =
                    open_dir_path(self.root, &tcomps, false, &shown).map_err(|e| match e {
                        ExtractError::Io { .. } => {
                            unsafe_entry(&shown, "hard link target is not in this layer")
                        }
                        other => other,
                    })?;
                // Flags 0: link the target itself even if it is a symlink; never dereference.
                linkat(
                    &tdir,
                    OsStr::from_bytes(&tbase),
                    &parent,
                    base_os,
                    AtFlags::empty(),
                )
                .map_err(|e| match e {
                    Errno::ENOENT => unsafe_entry(&shown, "hard link target is not in this layer"),
                    Errno::EPERM => unsafe_entry(&shown, "hard link to a directory"),
                    e => io_err(&shown, e),
                })?;
            }
            tar::EntryType::Char | tar::EntryType::Block | tar::EntryType::Fifo => {
                let sflag = match kind {
                    tar::EntryType::Char => SFlag::S_IFCHR,
                    tar::EntryType::Block => SFlag::S_IFBLK,
                    _ => SFlag::S_IFIFO,
                };
                let major = h.device_major().ok().flatten().unwrap_or(0);
                let minor = h.device_minor().ok().flatten().unwrap_or(0);
                let dev = libc::makedev(major, minor);
                mknodat(&parent, base_os, sflag, mode, dev).map_err(|e| io_err(&shown, e))?;
                fchownat(
                    &parent,
                    base_os,
                    Some(uid),
                    Some(gid),
                    AtFlags::AT_SYMLINK_NOFOLLOW,
                )
                .map_err(|e| io_err(&shown, e))?;
                let t = timespec(mtime);
                let _ = utimensat(&parent, base_os, &t, &t, UtimensatFlags::NoFollowSymlink);
            }
            _ => {
                // Unknown entry types (e.g. Solaris ACLs): skipped, content recorded raw.
            }
        }
        Ok(())
    }

    /// `key` (and, for a directory, everything below it) is about to be removed or replaced:
    /// contents recorded as file references are copied into the recording first, so the tar
    /// can still be rebuilt byte for byte.
    fn forget(&mut self, key: &[u8]) -> Result<(), ExtractError> {
        let mut prefix = key.to_vec();
        prefix.push(b'/');
        let doomed: Vec<Vec<u8>> = self
            .file_segment
            .keys()
            .filter(|k| k.as_slice() == key || k.starts_with(&prefix))
            .cloned()
            .collect();
        for k in doomed {
            let Some(idx) = self.file_segment.remove(&k) else {
                continue;
            };
            let shown = String::from_utf8_lossy(&k).into_owned();
            let mut comps: Vec<Vec<u8>> = k.split(|b| *b == b'/').map(<[u8]>::to_vec).collect();
            let base = comps.pop().unwrap_or_default();
            let dir = open_dir_path(self.root, &comps, false, &shown)?;
            let flags = OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
            let fd = openat(&dir, OsStr::from_bytes(&base), flags, Mode::empty())
                .map_err(|e| io_err(&shown, e))?;
            let mut data = Vec::new();
            File::from(fd)
                .read_to_end(&mut data)
                .map_err(|e| io_err(&shown, e))?;
            self.patches.push((idx, data));
        }
        Ok(())
    }
}

/// What a PAX header says about an entry beyond its path and size.
#[derive(Default)]
struct Pax {
    xattrs: Vec<(String, Vec<u8>)>,
    uid: Option<u64>,
    gid: Option<u64>,
    mtime: Option<u64>,
}

fn pax_records<R: Read>(entry: &mut tar::Entry<'_, R>) -> Result<Pax, ExtractError> {
    let mut pax = Pax::default();
    let out = &mut pax.xattrs;
    let num = |v: &[u8]| -> Option<u64> {
        let s = std::str::from_utf8(v).ok()?;
        s.split('.').next()?.parse().ok()
    };
    if let Some(exts) = entry.pax_extensions().map_err(ExtractError::Tar)? {
        for ext in exts {
            let ext = ext.map_err(ExtractError::Tar)?;
            let Ok(key) = ext.key() else { continue };
            match key {
                "uid" => pax.uid = num(ext.value_bytes()),
                "gid" => pax.gid = num(ext.value_bytes()),
                "mtime" => pax.mtime = num(ext.value_bytes()),
                _ => {}
            }
            if let Some(name) = key.strip_prefix("SCHILY.xattr.") {
                // Overlay's own markers must come from whiteout entries, never from xattrs.
                if name.starts_with("trusted.overlay.") || name.starts_with("user.overlay.") {
                    continue;
                }
                out.push((name.to_string(), ext.value_bytes().to_vec()));
            }
        }
    }
    Ok(pax)
}

fn apply_xattrs(
    fd: BorrowedFd<'_>,
    xattrs: &[(String, Vec<u8>)],
    shown: &str,
) -> Result<(), ExtractError> {
    for (k, v) in xattrs {
        match set_xattr(fd, k, v) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::ENOTSUP) => {}
            Err(e) => return Err(io_err(shown, e)),
        }
    }
    Ok(())
}

/// `io::copy` through `buf` (grown to 256 KiB on first use).
fn copy_big(r: &mut impl Read, w: &mut impl Write, buf: &mut Vec<u8>) -> io::Result<u64> {
    if buf.is_empty() {
        buf.resize(256 << 10, 0);
    }
    let mut n = 0u64;
    loop {
        let got = match r.read(buf) {
            Ok(0) => return Ok(n),
            Ok(k) => k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        w.write_all(&buf[..got])?;
        n += got as u64;
    }
}
