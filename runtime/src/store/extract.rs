//! Hostile-input-safe extraction of a layer tar into an empty directory, in the overlay format.
//!
//! Every file operation goes through [`strata_fs::at`]: relative to a directory fd, one
//! component at a time or with `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)`, never following
//! a symlink, so a symlink planted by the tar (or a path with `..`) can never redirect a write
//! outside the layer dir: such entries are refused with [`ExtractError::Unsafe`]. Every name that
//! reaches an `*at()` call is one component of a cleaned path ([`clean_path`]: no empty names,
//! no `.`, `..` or `/`) or a whiteout target checked the same way.
//!
//! Whiteouts ([`strata_fs::format`]): `dir/.wh.name` becomes a whiteout `dir/name`;
//! `dir/.wh..wh..opq` marks `dir` opaque (in the [`Flavour`] given); other `.wh..wh.*` (AUFS
//! metadata) are ignored; `.wh..` and `.wh...` (whiteouts of `.` and `..`) are refused.
//!
//! While extracting, the uncompressed stream is hashed (the diffID) and recorded as a
//! "tar-split" (see `tarsplit.rs`), so the exact tar can be rebuilt later for `save`/`push`
//! without keeping a copy of it.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path};
use std::rc::Rc;

use nix::errno::Errno;
use strata_fs::at;
use strata_fs::format::{self, Flavour, Name};

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
    /// Rootless: the kernel lets nobody in a user namespace make device nodes (other than the
    /// 0/0 whiteout); the layer is refused rather than extracted without them.
    #[error("extracting {path:?}: the image has a device node, which a rootless user cannot create (use strata as root for this image)")]
    DeviceNode { path: String },
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

const DIR_FLAGS: libc::c_int = libc::O_RDONLY | libc::O_DIRECTORY;

fn not_beneath(shown: &str) -> ExtractError {
    unsafe_entry(shown, "parent is a symlink or not a directory")
}

/// Open `comps` (all directories) below `root` without following symlinks; create missing ones
/// (mode 0755) when `create`.
fn open_dir_path(
    root: BorrowedFd<'_>,
    comps: &[Vec<u8>],
    create: bool,
    shown: &str,
) -> Result<OwnedFd, ExtractError> {
    // Usually the directory exists: one openat2 for the whole path.
    match at::open_beneath(root, &comps.join(&b'/'), DIR_FLAGS) {
        Ok(fd) => return Ok(fd),
        Err(Errno::ENOENT) if create => {}
        Err(Errno::ELOOP) | Err(Errno::ENOTDIR) | Err(Errno::EXDEV) => {
            return Err(not_beneath(shown))
        }
        Err(e) => return Err(io_err(shown, e)),
    }
    let mut cur = at::open_beneath(root, b"", DIR_FLAGS).map_err(|e| io_err(shown, e))?;
    for c in comps {
        let name = OsStr::from_bytes(c);
        let next = match at::open_dir_at(cur.as_fd(), name) {
            Ok(fd) => fd,
            Err(Errno::ENOENT) => {
                match at::mkdirat(cur.as_fd(), name, 0o755) {
                    Ok(()) | Err(Errno::EEXIST) => {}
                    Err(e) => return Err(io_err(shown, e)),
                }
                at::open_dir_at(cur.as_fd(), name).map_err(|e| io_err(shown, e))?
            }
            Err(Errno::ELOOP) | Err(Errno::ENOTDIR) => return Err(not_beneath(shown)),
            Err(e) => return Err(io_err(shown, e)),
        };
        cur = next;
    }
    Ok(cur)
}

fn times(secs: u64) -> [libc::timespec; 2] {
    let t = libc::timespec {
        tv_sec: secs.min(i64::MAX as u64) as libc::time_t,
        tv_nsec: 0,
    };
    [t, t]
}

/// The fd itself, for the `at` calls that take `""` to mean it.
const SELF: &str = "";

struct Extractor<'a> {
    root: BorrowedFd<'a>,
    flavour: Flavour,
    size: u64,
    /// The parent directory of the previous entry (path below the root, fd): entries come
    /// grouped by directory, so most reuse it instead of opening their parent again.
    parent: Option<(Vec<u8>, OwnedFd)>,
    /// Directories whose tar mode has the set-group-ID bit: a file created below one of them
    /// takes the directory's group, so its owner must be set even when it is ours.
    sgid_dirs: HashSet<Vec<u8>>,
    /// Who files are created as, and the umask they are created with: a file whose owner and
    /// mode come out right at creation needs no `fchown`/`fchmod`.
    euid: u32,
    egid: u32,
    umask: u32,
    /// tar-split record number of the content of each extracted path.
    file_segment: HashMap<Vec<u8>, u64>,
    patches: Vec<(u64, Vec<u8>)>,
    /// Directories (paths below the root) and their mtimes, set once their children exist.
    dir_times: Vec<(Vec<u8>, u64)>,
    /// File contents are copied through this buffer: large chunks mean fewer inflate calls
    /// and write(2)s than io::copy's 8 KiB (34 MB file: ~4,200 writes -> ~130).
    buf: Vec<u8>,
}

/// Extract the (uncompressed) tar `input` into the empty directory `root`, writing its
/// tar-split record to `split` and opaque directories in `flavour`.
pub fn extract<R: Read>(
    input: R,
    root: BorrowedFd<'_>,
    flavour: Flavour,
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
        flavour,
        size: 0,
        parent: None,
        sgid_dirs: HashSet::new(),
        euid: nix::unistd::geteuid().as_raw(),
        egid: nix::unistd::getegid().as_raw(),
        umask: current_umask(),
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
    for (path, mtime) in ex.dir_times.iter().rev() {
        if let Ok(fd) = at::open_beneath(root, path, DIR_FLAGS) {
            let _ = at::utimensat(fd.as_fd(), OsStr::new(SELF), &times(*mtime));
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
        entry: tar::Entry<'_, R>,
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
        let dir_key = comps.join(&b'/');
        let parent = match self.parent.take() {
            Some((k, fd)) if k == dir_key => fd,
            _ => open_dir_path(self.root, &comps, true, &shown)?,
        };
        self.entry_in(
            entry,
            state,
            parent.as_fd(),
            &dir_key,
            &comps,
            &base,
            &shown,
        )?;
        self.parent = Some((dir_key, parent));
        Ok(())
    }

    /// Remove what this layer already has at `key` (`name` in `parent`), recording file
    /// contents the tar-split still refers to.
    fn clear(
        &mut self,
        parent: BorrowedFd<'_>,
        name: &OsStr,
        key: &[u8],
        shown: &str,
    ) -> Result<(), ExtractError> {
        self.forget(key)?;
        at::remove_all_at(parent, name).map_err(|e| io_err(shown, e))
    }

    /// Does a file created in `dir_key` take a group other than ours (a set-group-ID
    /// directory, or one below it that inherited the bit)?
    fn inherits_group(&self, dir_key: &[u8]) -> bool {
        !self.sgid_dirs.is_empty()
            && (self.sgid_dirs.contains(dir_key)
                || dir_key
                    .iter()
                    .enumerate()
                    .any(|(i, &b)| b == b'/' && self.sgid_dirs.contains(&dir_key[..i])))
    }

    #[allow(clippy::too_many_arguments)]
    fn entry_in<R: Read>(
        &mut self,
        mut entry: tar::Entry<'_, R>,
        state: &Rc<RefCell<RecState<'_>>>,
        parent: BorrowedFd<'_>,
        dir_key: &[u8],
        comps: &[Vec<u8>],
        base: &[u8],
        shown: &str,
    ) -> Result<(), ExtractError> {
        let kind = entry.header().entry_type();
        let shown = shown.to_string();
        let base_os = OsStr::from_bytes(base);

        match format::classify(base) {
            Name::Plain => {}
            Name::OpaqueMarker => {
                format::set_opaque(parent.as_fd(), OsStr::new(SELF), self.flavour)
                    .map_err(|e| io_err(&shown, e))?;
                return Ok(());
            }
            // AUFS metadata (.wh..wh.plnk, ...): ignored.
            Name::Meta => return Ok(()),
            // `.wh..` / `.wh...` would remove the layer dir's own contents or its parent's.
            Name::Invalid => return Err(unsafe_entry(&shown, "whiteout of \".\" or \"..\"")),
            Name::Whiteout(hidden) => {
                let name = OsStr::from_bytes(hidden);
                at::check_name(name).map_err(|_| unsafe_entry(&shown, "invalid whiteout"))?;
                let mut key = comps.join(&b'/');
                if !key.is_empty() {
                    key.push(b'/');
                }
                key.extend_from_slice(hidden);
                self.clear(parent, name, &key, &shown)?;
                // The xattr form where the store cannot hold a char 0/0 node (a store inside
                // another union filesystem: strata nested in a container).
                if format::make_whiteout_any(parent, name, self.flavour)
                    .map_err(|e| io_err(&shown, e))?
                {
                    format::mark_xwhiteouts(parent, self.flavour).map_err(|e| io_err(&shown, e))?;
                }
                return Ok(());
            }
        }

        let h = entry.header().clone();
        // Like Go's archive/tar, an empty numeric field reads as 0.
        let pax = pax_records(&mut entry)?;
        let mode = h.mode().unwrap_or(0) & 0o7777;
        let uid = pax.uid.unwrap_or_else(|| h.uid().unwrap_or(0)) as u32;
        let gid = pax.gid.unwrap_or_else(|| h.gid().unwrap_or(0)) as u32;
        let mtime = pax.mtime.unwrap_or_else(|| h.mtime().unwrap_or(0));
        let xattrs = pax.xattrs;
        let mut key = dir_key.to_vec();
        if !key.is_empty() {
            key.push(b'/');
        }
        key.extend_from_slice(base);
        // Whatever this layer already has at that name is replaced (a directory over a
        // directory is merged). The create is tried first: the name is usually free.
        let parent_fd = parent;
        let ours = uid == self.euid && gid == self.egid && !self.inherits_group(dir_key);

        match kind {
            tar::EntryType::Directory => {
                match at::mkdirat(parent_fd, base_os, 0o700) {
                    Ok(()) => {}
                    Err(Errno::EEXIST) => {
                        let is_dir = at::fstatat(parent_fd, base_os)
                            .is_ok_and(|st| st.st_mode & libc::S_IFMT == libc::S_IFDIR);
                        if !is_dir {
                            self.clear(parent_fd, base_os, &key, &shown)?;
                            at::mkdirat(parent_fd, base_os, 0o700)
                                .map_err(|e| io_err(&shown, e))?;
                        }
                    }
                    Err(e) => return Err(io_err(&shown, e)),
                }
                if mode & libc::S_ISGID != 0 {
                    self.sgid_dirs.insert(key.clone());
                }
                let fd = at::open_dir_at(parent_fd, base_os).map_err(|e| match e {
                    Errno::ELOOP | Errno::ENOTDIR => not_beneath(&shown),
                    e => io_err(&shown, e),
                })?;
                at::fchownat(fd.as_fd(), OsStr::new(SELF), uid, gid)
                    .map_err(|e| io_err(&shown, e))?;
                at::fchmod(fd.as_fd(), mode).map_err(|e| io_err(&shown, e))?;
                apply_xattrs(fd.as_fd(), &xattrs, &shown)?;
                self.dir_times.push((key, mtime));
            }
            tar::EntryType::Regular | tar::EntryType::Continuous | tar::EntryType::GNUSparse => {
                let flags = libc::O_CREAT | libc::O_EXCL | libc::O_WRONLY;
                // Created with its final mode when the umask keeps it and no special bit is
                // set (those are set after the owner, which clears them).
                let exact = mode & 0o7000 == 0 && mode & self.umask == 0;
                let create_mode = if exact { mode } else { 0o600 };
                let fd = match at::openat(parent_fd, base_os, flags, create_mode) {
                    Err(Errno::EEXIST) => {
                        self.clear(parent_fd, base_os, &key, &shown)?;
                        at::openat(parent_fd, base_os, flags, create_mode)
                    }
                    r => r,
                }
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
                // A new inode (O_EXCL): hard links to it are `Link` entries, counted never.
                self.size += copied;
                if !ours {
                    at::fchownat(file.as_fd(), OsStr::new(SELF), uid, gid)
                        .map_err(|e| io_err(&shown, e))?;
                }
                if !ours || !exact {
                    at::fchmod(file.as_fd(), mode).map_err(|e| io_err(&shown, e))?;
                }
                apply_xattrs(file.as_fd(), &xattrs, &shown)?;
                at::utimensat(file.as_fd(), OsStr::new(SELF), &times(mtime))
                    .map_err(|e| io_err(&shown, e))?;
            }
            tar::EntryType::Symlink => {
                let target = entry
                    .link_name_bytes()
                    .ok_or_else(|| unsafe_entry(&shown, "symlink without target"))?
                    .into_owned();
                let link = || at::symlinkat(OsStr::from_bytes(&target), parent_fd, base_os);
                match link() {
                    Err(Errno::EEXIST) => {
                        self.clear(parent_fd, base_os, &key, &shown)?;
                        link()
                    }
                    r => r,
                }
                .map_err(|e| io_err(&shown, e))?;
                self.size += target.len() as u64;
                if !ours {
                    at::fchownat(parent_fd, base_os, uid, gid).map_err(|e| io_err(&shown, e))?;
                }
                let _ = at::utimensat(parent_fd, base_os, &times(mtime));
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
                let link =
                    || at::linkat(tdir.as_fd(), OsStr::from_bytes(&tbase), parent_fd, base_os);
                match link() {
                    Err(Errno::EEXIST) => {
                        self.clear(parent_fd, base_os, &key, &shown)?;
                        link()
                    }
                    r => r,
                }
                .map_err(|e| match e {
                    Errno::ENOENT => unsafe_entry(&shown, "hard link target is not in this layer"),
                    Errno::EPERM => unsafe_entry(&shown, "hard link to a directory"),
                    e => io_err(&shown, e),
                })?;
            }
            tar::EntryType::Char | tar::EntryType::Block | tar::EntryType::Fifo => {
                let sflag = match kind {
                    tar::EntryType::Char => libc::S_IFCHR,
                    tar::EntryType::Block => libc::S_IFBLK,
                    _ => libc::S_IFIFO,
                };
                let major = h.device_major().ok().flatten().unwrap_or(0);
                let minor = h.device_minor().ok().flatten().unwrap_or(0);
                let dev = libc::makedev(major, minor);
                let make = || at::mknodat(parent_fd, base_os, sflag | mode, dev);
                match make() {
                    Err(Errno::EEXIST) => {
                        self.clear(parent_fd, base_os, &key, &shown)?;
                        make()
                    }
                    r => r,
                }
                .map_err(|e| match e {
                    // Rootless: the kernel refuses device nodes; say which entry, never drop it.
                    Errno::EPERM if sflag != libc::S_IFIFO => ExtractError::DeviceNode {
                        path: shown.clone(),
                    },
                    e => io_err(&shown, e),
                })?;
                at::fchownat(parent_fd, base_os, uid, gid).map_err(|e| io_err(&shown, e))?;
                let _ = at::utimensat(parent_fd, base_os, &times(mtime));
            }
            _ => {
                // Unknown entry types (e.g. Solaris ACLs): skipped, content recorded raw; what
                // the layer had at that name is replaced all the same.
                if at::fstatat(parent_fd, base_os).is_ok() {
                    self.clear(parent_fd, base_os, &key, &shown)?;
                }
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
            let fd =
                at::open_beneath(self.root, &k, libc::O_RDONLY).map_err(|e| io_err(&shown, e))?;
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
                if format::is_private_xattr(name.as_bytes()) {
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
        match at::lsetxattr(fd, OsStr::new(SELF), OsStr::new(k), v, 0) {
            Ok(()) | Err(Errno::ENOTSUP) => {}
            Err(e) => return Err(io_err(shown, e)),
        }
    }
    Ok(())
}

/// The process's umask, read without changing it (`umask(2)` can only set it, and another
/// thread may be creating files); all bits when unknown, so nothing is assumed.
fn current_umask() -> u32 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Umask:"))
                .and_then(|v| u32::from_str_radix(v.trim(), 8).ok())
        })
        .unwrap_or(0o7777)
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
