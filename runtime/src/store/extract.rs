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
//! "tar-split" ([`Segment`]s: raw header bytes plus references to extracted file contents), so
//! the exact tar can be rebuilt later for `save`/`push` without keeping a copy of it.

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

/// One piece of a recorded tar stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    /// Bytes copied verbatim (headers, padding, contents not kept as files).
    Raw(Vec<u8>),
    /// `size` bytes of content read back from the extracted file at `path`.
    File { path: Vec<u8>, size: u64 },
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
    pub segments: Vec<Segment>,
}

struct RecState {
    hasher: Hasher,
    segments: Vec<Segment>,
    raw: bool,
}

struct Recorder<R> {
    inner: R,
    state: Rc<RefCell<RecState>>,
}

impl<R: Read> Read for Recorder<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        let mut st = self.state.borrow_mut();
        st.hasher.update(&buf[..n]);
        if st.raw && n > 0 {
            match st.segments.last_mut() {
                Some(Segment::Raw(v)) => v.extend_from_slice(&buf[..n]),
                _ => st.segments.push(Segment::Raw(buf[..n].to_vec())),
            }
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
    /// index in `segments` of the content segment of each extracted path.
    file_segment: HashMap<Vec<u8>, usize>,
    dir_times: Vec<(Vec<Vec<u8>>, u64)>,
}

/// Extract the (uncompressed) tar `input` into the empty directory `root`.
pub fn extract<R: Read>(input: R, root: BorrowedFd<'_>) -> Result<Extracted, ExtractError> {
    let state = Rc::new(RefCell::new(RecState {
        hasher: Hasher::new(),
        segments: Vec::new(),
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
        dir_times: Vec::new(),
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
    drop(ex);
    let st = Rc::try_unwrap(state)
        .map_err(|_| ExtractError::Tar(io::Error::other("recorder still shared")))?
        .into_inner();
    let tar_size = st.hasher.len();
    Ok(Extracted {
        diff_id: st.hasher.finish(),
        tar_size,
        size,
        segments: st.segments,
    })
}

impl Extractor<'_> {
    fn entry<R: Read>(
        &mut self,
        mut entry: tar::Entry<'_, R>,
        state: &Rc<RefCell<RecState>>,
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
                remove_at(parent.as_fd(), name).map_err(|e| io_err(&shown, e))?;
                make_whiteout(parent.as_fd(), name).map_err(|e| io_err(&shown, e))?;
            }
            return Ok(());
        }

        let h = entry.header().clone();
        let mode = Mode::from_bits_truncate(h.mode().map_err(ExtractError::Tar)? & 0o7777);
        let uid = Uid::from_raw(h.uid().map_err(ExtractError::Tar)? as u32);
        let gid = Gid::from_raw(h.gid().map_err(ExtractError::Tar)? as u32);
        let mtime = h.mtime().unwrap_or(0);
        let xattrs = pax_xattrs(&mut entry)?;
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
                self.forget_file(&key, parent.as_fd(), base_os, state)?;
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
                    self.file_segment.insert(key.clone(), st.segments.len());
                    st.segments.push(Segment::File {
                        path: key.clone(),
                        size,
                    });
                    st.raw = false;
                }
                let copied = io::copy(&mut entry, &mut file);
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

    /// `key` is about to be replaced: if its content was recorded as a file reference, copy the
    /// old content into the recording first so the tar can still be rebuilt byte for byte.
    fn forget_file(
        &mut self,
        key: &[u8],
        parent: BorrowedFd<'_>,
        name: &OsStr,
        state: &Rc<RefCell<RecState>>,
    ) -> Result<(), ExtractError> {
        let Some(idx) = self.file_segment.remove(key) else {
            return Ok(());
        };
        let flags = OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        let shown = String::from_utf8_lossy(key).into_owned();
        let fd = openat(parent, name, flags, Mode::empty()).map_err(|e| io_err(&shown, e))?;
        let mut data = Vec::new();
        File::from(fd)
            .read_to_end(&mut data)
            .map_err(|e| io_err(&shown, e))?;
        state.borrow_mut().segments[idx] = Segment::Raw(data);
        Ok(())
    }
}

fn pax_xattrs<R: Read>(
    entry: &mut tar::Entry<'_, R>,
) -> Result<Vec<(String, Vec<u8>)>, ExtractError> {
    let mut out = Vec::new();
    if let Some(exts) = entry.pax_extensions().map_err(ExtractError::Tar)? {
        for ext in exts {
            let ext = ext.map_err(ExtractError::Tar)?;
            let Ok(key) = ext.key() else { continue };
            if let Some(name) = key.strip_prefix("SCHILY.xattr.") {
                // Overlay's own markers must come from whiteout entries, never from xattrs.
                if name.starts_with("trusted.overlay.") || name.starts_with("user.overlay.") {
                    continue;
                }
                out.push((name.to_string(), ext.value_bytes().to_vec()));
            }
        }
    }
    Ok(out)
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

/// Write the bytes of a recorded tar to `out`, reading file contents from the layer dir `root`.
pub fn rebuild(segments: &[Segment], root: BorrowedFd<'_>, out: &mut dyn Write) -> io::Result<()> {
    for seg in segments {
        match seg {
            Segment::Raw(b) => out.write_all(b)?,
            Segment::File { path, size } => {
                let shown = String::from_utf8_lossy(path).into_owned();
                let mut comps: Vec<Vec<u8>> =
                    path.split(|b| *b == b'/').map(<[u8]>::to_vec).collect();
                let base = comps.pop().unwrap_or_default();
                let dir = open_dir_path(root, &comps, false, &shown).map_err(io::Error::other)?;
                let fd = openat(
                    &dir,
                    OsStr::from_bytes(&base),
                    OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                    Mode::empty(),
                )?;
                let n = io::copy(&mut File::from(fd).take(*size), out)?;
                if n != *size {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!("layer file {shown} is shorter than recorded"),
                    ));
                }
            }
        }
    }
    Ok(())
}

/// Serialize segments: `R` u64-LE length + bytes, or `F` u32-LE path length + path + u64-LE size.
pub fn write_segments(segments: &[Segment], out: &mut dyn Write) -> io::Result<()> {
    for seg in segments {
        match seg {
            Segment::Raw(b) => {
                out.write_all(b"R")?;
                out.write_all(&(b.len() as u64).to_le_bytes())?;
                out.write_all(b)?;
            }
            Segment::File { path, size } => {
                out.write_all(b"F")?;
                out.write_all(&(path.len() as u32).to_le_bytes())?;
                out.write_all(path)?;
                out.write_all(&size.to_le_bytes())?;
            }
        }
    }
    Ok(())
}

pub fn read_segments(input: &mut dyn Read) -> io::Result<Vec<Segment>> {
    let bad = || io::Error::new(io::ErrorKind::InvalidData, "corrupt tar-split record");
    let mut out = Vec::new();
    loop {
        let mut tag = [0u8; 1];
        match input.read(&mut tag)? {
            0 => return Ok(out),
            _ => match tag[0] {
                b'R' => {
                    let mut n = [0u8; 8];
                    input.read_exact(&mut n)?;
                    let n = u64::from_le_bytes(n);
                    let mut b = Vec::new();
                    input.take(n).read_to_end(&mut b)?;
                    if b.len() as u64 != n {
                        return Err(bad());
                    }
                    out.push(Segment::Raw(b));
                }
                b'F' => {
                    let mut n = [0u8; 4];
                    input.read_exact(&mut n)?;
                    let mut p = vec![0u8; u32::from_le_bytes(n) as usize];
                    input.read_exact(&mut p)?;
                    let mut s = [0u8; 8];
                    input.read_exact(&mut s)?;
                    out.push(Segment::File {
                        path: p,
                        size: u64::from_le_bytes(s),
                    });
                }
                _ => return Err(bad()),
            },
        }
    }
}
