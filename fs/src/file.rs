//! Open files and directories, data I/O, and xattrs: the operations on the handle tables
//! (see `handles`).

use std::ffi::OsStr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use nix::errno::Errno;

use crate::at::{self as sys, R};
use crate::format::{escaped_xattr, is_private_xattr, unescaped_xattr};
use crate::handles::Handle;
use crate::ids::{Fh, Ino};
use crate::ops::Make;
use crate::unionfs::{Attr, Ctx, DirEnt, Fs};

/// An open file as the FUSE adapter sees it.
pub(crate) struct OpenInfo {
    pub ino: Ino,
    pub fd: Arc<OwnedFd>,
    pub writable: bool,
    /// Opened on a lower layer (a later copy-up may move the data).
    pub lower: bool,
    /// A lazily fetched lower file whose data is not all in place yet: its reads must come
    /// through us (no passthrough) and its cached pages must not outlive the open.
    pub lazy: bool,
}

/// Lower files smaller than this are read whole at their first open (the FUSE adapter pushes
/// them into the page cache); a lazily fetched one is then fetched whole at open too.
pub(crate) const SMALL_FILE: u32 = 128 * 1024;

/// Flags we never pass to the backing file: the kernel already handled them (O_APPEND offsets
/// come with each write; O_CREAT/O_EXCL/O_TRUNC were done by create/setattr).
const STRIP: i32 =
    libc::O_CREAT | libc::O_EXCL | libc::O_NOCTTY | libc::O_APPEND | libc::O_TRUNC | libc::O_DIRECT;

impl Fs {
    pub fn open(&self, ino: Ino, flags: i32) -> R<Fh> {
        let t = &self.tree;
        let mut ns = t.ns.shared();
        let acc = flags & libc::O_ACCMODE;
        let writable = acc != libc::O_RDONLY;
        if writable || flags & libc::O_TRUNC != 0 {
            t.layers.writable()?;
            self.copy_up(&mut ns, ino)?;
        }
        let n = t.inodes.get(ino)?;
        let mut lower = false;
        let mut lazy = None;
        let fd = if n.primary().is_none() {
            // Open of an unlinked file through /proc/self/fd of a still-open one.
            n.last_open.lock().upgrade().ok_or(Errno::ENOENT)?
        } else {
            let loc = t.locate(&ns, ino)?;
            lower = !t.layers.is_upper(loc.layer);
            let dir = t.loc_dir(&loc)?;
            let fd = sys::openat(dir.as_fd(), &loc.name, flags & !STRIP, 0)?;
            if lower && self.lower_data.is_some() {
                // A lazily fetched lower file: a small one is fetched whole now (it is read whole
                // into the page cache at open); a larger one range by range as it is read.
                let st = sys::fstat(fd.as_fd())?;
                if st.st_size < i64::from(SMALL_FILE) {
                    self.ensure_lower_data(loc.layer, st.st_ino)?;
                } else {
                    lazy = self.lazy_lower(loc.layer, st.st_ino);
                }
            }
            Arc::new(fd)
        };
        if flags & libc::O_TRUNC != 0 {
            sys::ftruncate(fd.as_fd(), 0)?;
        }
        *n.last_open.lock() = Arc::downgrade(&fd);
        Ok(self
            .handles
            .add(Handle::new(ino, fd, writable, lower).with_lazy(lazy)))
    }

    pub fn create(
        &self,
        parent: Ino,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        ctx: Ctx,
    ) -> R<(Attr, Fh)> {
        let (attr, file) = self.make(parent, name, Make::File { mode, flags }, umask, ctx)?;
        let fd = Arc::new(file.ok_or(Errno::EIO)?);
        if let Ok(n) = self.tree.inodes.get(attr.ino) {
            *n.last_open.lock() = Arc::downgrade(&fd);
        }
        let writable = flags & libc::O_ACCMODE != libc::O_RDONLY;
        let fh = self.handles.add(Handle::new(attr.ino, fd, writable, false));
        Ok((attr, fh))
    }

    /// Switch a lower read-only handle to the upper copy once the file has been copied up.
    fn refresh(&self, h: &Handle) {
        if !h.is_lower() {
            return;
        }
        let t = &self.tree;
        let copied = t
            .inodes
            .get(h.ino)
            .is_ok_and(|n| n.copied.load(Ordering::Acquire));
        if !copied {
            return;
        }
        let ns = t.ns.shared();
        let Ok(loc) = t.locate(&ns, h.ino) else {
            return;
        };
        if !t.layers.is_upper(loc.layer) {
            return;
        }
        let Ok(dir) = t.loc_dir(&loc) else { return };
        if let Ok(fd) = sys::openat(dir.as_fd(), &loc.name, libc::O_RDONLY, 0) {
            h.switch_to_upper(fd);
        }
    }

    pub fn read(&self, fh: Fh, off: u64, size: u32) -> R<Vec<u8>> {
        self.read_with(fh, off, size, |d| d.to_vec())
    }

    /// Read up to `size` bytes at `off` into a per-thread buffer and hand them to `f`. The
    /// buffer is reused across requests: no allocation (and no fresh zero pages to fault in)
    /// per read.
    pub fn read_with<T>(&self, fh: Fh, off: u64, size: u32, f: impl FnOnce(&[u8]) -> T) -> R<T> {
        let h = self.handles.get(fh).ok_or(Errno::EBADF)?;
        self.handles.count_read();
        self.refresh(&h);
        if let (Some((lower, st_ino)), Some(d), true) = (h.lazy, &self.lower_data, h.is_lower()) {
            d.ensure_range(lower, st_ino, off, u64::from(size))?;
        }
        pread_with(h.fd().as_fd(), off, size, f)
    }

    /// At the first open of a lower file that is smaller than `max` bytes (and not empty),
    /// hand its whole content to `f` (which pushes it into the kernel's page cache, see
    /// `fuse::Adapter::prefill`); `None` otherwise, and for every later open of the inode.
    /// Not counted as a READ request.
    ///
    /// Runs under the node's copy-up lock, and not at all once the file was copied up or while
    /// it is being copied up: data changes only after a copy-up, so nothing written through the
    /// mount can be overwritten in the kernel's cache by the older bytes read here.
    pub(crate) fn small_lower_file_with<T>(
        &self,
        fh: Fh,
        max: u32,
        f: impl FnOnce(&[u8]) -> T,
    ) -> R<Option<T>> {
        let h = self.handles.get(fh).ok_or(Errno::EBADF)?;
        if !h.is_lower() {
            return Ok(None);
        }
        let n = self.tree.inodes.get(h.ino)?;
        if n.prefilled.swap(true, Ordering::AcqRel) {
            return Ok(None);
        }
        // A copy-up of this file under way (on an offload worker) may take long: skip the
        // prefill rather than hold up the thread that answers every other request.
        let Some(_g) = n.copyup.try_lock() else {
            return Ok(None);
        };
        if n.copied.load(Ordering::Acquire) {
            return Ok(None);
        }
        let fd = h.fd();
        let size = sys::fstat(fd.as_fd())?.st_size;
        if size <= 0 || size >= i64::from(max) {
            return Ok(None);
        }
        pread_with(fd.as_fd(), 0, size as u32, f).map(Some)
    }

    pub fn write(&self, fh: Fh, off: u64, data: &[u8]) -> R<u32> {
        let h = self.handles.get(fh).ok_or(Errno::EBADF)?;
        let fd = h.fd();
        let mut done = 0;
        while done < data.len() {
            done += sys::pwrite(fd.as_fd(), &data[done..], off + done as u64)?;
        }
        Ok(done as u32)
    }

    pub fn release(&self, fh: Fh) {
        self.handles.remove(fh);
    }

    pub fn fsync(&self, fh: Fh, datasync: bool) -> R<()> {
        let h = self.handles.get(fh).ok_or(Errno::EBADF)?;
        sys::fsync(h.fd().as_fd(), datasync)
    }

    pub fn fallocate(&self, fh: Fh, off: u64, len: u64, mode: i32) -> R<()> {
        let h = self.handles.get(fh).ok_or(Errno::EBADF)?;
        sys::fallocate(h.fd().as_fd(), mode, off, len)
    }

    pub fn lseek(&self, fh: Fh, off: i64, whence: i32) -> R<i64> {
        let h = self.handles.get(fh).ok_or(Errno::EBADF)?;
        let pending = match (h.lazy, &self.lower_data) {
            (Some((lower, st_ino)), Some(d)) => h.is_lower() && d.pending(lower, st_ino),
            _ => false,
        };
        if pending && (whence == libc::SEEK_DATA || whence == libc::SEEK_HOLE) {
            // The holes of a file still being fetched are not the file's: answer as a
            // filesystem without holes does (data up to the end).
            let size = sys::fstat(h.fd().as_fd())?.st_size;
            if off < 0 || off >= size {
                return Err(Errno::ENXIO);
            }
            return Ok(if whence == libc::SEEK_DATA { off } else { size });
        }
        sys::lseek(h.fd().as_fd(), off, whence)
    }

    /// What the FUSE adapter needs to hand an open file to the kernel (passthrough).
    pub(crate) fn open_info(&self, fh: Fh) -> Option<OpenInfo> {
        let h = self.handles.get(fh)?;
        Some(OpenInfo {
            ino: h.ino,
            fd: h.fd(),
            writable: h.writable,
            lower: h.is_lower(),
            lazy: h.is_lower()
                && h.lazy
                    .zip(self.lower_data.as_ref())
                    .is_some_and(|((lower, st_ino), d)| d.pending(lower, st_ino)),
        })
    }

    /// A read-write fd of the upper file of `ino`: a backing file every later open of the
    /// inode (read or write) can share. Fails for lower and unlinked files.
    pub(crate) fn upper_rw_fd(&self, ino: Ino) -> R<OwnedFd> {
        let t = &self.tree;
        let ns = t.ns.shared();
        let loc = t.locate(&ns, ino)?;
        if !t.layers.is_upper(loc.layer) {
            return Err(Errno::EROFS);
        }
        let dir = t.loc_dir(&loc)?;
        sys::openat(dir.as_fd(), &loc.name, libc::O_RDWR, 0)
    }

    /// How many READ requests reached this process (reads of passthrough opens do not).
    pub fn reads_served(&self) -> u64 {
        self.handles.reads()
    }

    /// How many file handles are open. The kernel sends RELEASE asynchronously after the last
    /// `close`, so tests that need every handle gone poll this.
    pub fn open_files(&self) -> usize {
        self.handles.open_files()
    }

    /// The inode of an open file handle.
    pub fn handle_ino(&self, fh: Fh) -> Option<Ino> {
        self.handles.get(fh).map(|h| h.ino)
    }

    pub fn opendir(&self, ino: Ino) -> R<Fh> {
        let n = self.tree.inodes.get(ino)?;
        if !n.is_dir() {
            return Err(Errno::ENOTDIR);
        }
        Ok(self.handles.add_dir(ino))
    }

    /// The next entries of an open directory after cookie `offset`. Cookies are positions in
    /// the directory's stable order (not per handle), so handles may share the kernel's cache.
    pub fn readdir(&self, fh: Fh, offset: u64, max: usize) -> R<Vec<DirEnt>> {
        let ino = self.handles.dir(fh).ok_or(Errno::EBADF)?;
        self.read_dir(ino, offset, max)
    }

    pub fn releasedir(&self, fh: Fh) {
        self.handles.remove_dir(fh);
    }

    pub fn getxattr(&self, ino: Ino, key: &OsStr) -> R<Vec<u8>> {
        let key = stored_key(key)?;
        let ns = self.tree.ns.shared();
        let loc = self.tree.locate(&ns, ino)?;
        let d = self.tree.loc_dir(&loc)?;
        sys::lgetxattr(d.as_fd(), &loc.name, &key)
    }

    /// List xattr names; `privileged` callers (CAP_SYS_ADMIN) also see `trusted.*`.
    pub fn listxattr(&self, ino: Ino, privileged: bool) -> R<Vec<u8>> {
        let ns = self.tree.ns.shared();
        let loc = self.tree.locate(&ns, ino)?;
        let d = self.tree.loc_dir(&loc)?;
        let raw = sys::llistxattr(d.as_fd(), &loc.name)?;
        let mut out = Vec::with_capacity(raw.len());
        for k in raw.split(|&b| b == 0).filter(|k| !k.is_empty()) {
            let shown = if is_private_xattr(k) {
                match unescaped_xattr(k) {
                    Some(u) => u,
                    None => continue,
                }
            } else {
                k.to_vec()
            };
            if privileged || !shown.starts_with(b"trusted.") {
                out.extend_from_slice(&shown);
                out.push(0);
            }
        }
        Ok(out)
    }

    pub fn setxattr(&self, ino: Ino, key: &OsStr, val: &[u8], flags: i32) -> R<()> {
        let t = &self.tree;
        t.layers.writable()?;
        let key = stored_key(key).map_err(|_| Errno::EOPNOTSUPP)?;
        let mut ns = t.ns.shared();
        self.copy_up(&mut ns, ino)?;
        let loc = t.locate(&ns, ino)?;
        let d = t.loc_dir(&loc)?;
        sys::lsetxattr(d.as_fd(), &loc.name, &key, val, flags)
    }

    pub fn removexattr(&self, ino: Ino, key: &OsStr) -> R<()> {
        let t = &self.tree;
        t.layers.writable()?;
        let key = stored_key(key)?;
        let mut ns = t.ns.shared();
        let loc = t.locate(&ns, ino)?;
        // Nothing to copy up when the attribute does not exist.
        sys::lgetxattr(t.loc_dir(&loc)?.as_fd(), &loc.name, &key)?;
        self.copy_up(&mut ns, ino)?;
        let loc = t.locate(&ns, ino)?;
        let d = t.loc_dir(&loc)?;
        sys::lremovexattr(d.as_fd(), &loc.name, &key)
    }
}

/// The name a caller's xattr `key` is stored under: overlay xattrs escaped (see
/// [`escaped_xattr`]), other private ones refused with ENODATA.
fn stored_key(key: &OsStr) -> R<std::ffi::OsString> {
    use std::os::unix::ffi::OsStringExt;
    let k = key.as_bytes();
    if !is_private_xattr(k) {
        return Ok(key.to_os_string());
    }
    escaped_xattr(k)
        .map(std::ffi::OsString::from_vec)
        .ok_or(Errno::ENODATA)
}

/// Read up to `size` bytes of `fd` at `off` into a per-thread buffer and hand them to `f`.
fn pread_with<T>(fd: BorrowedFd<'_>, off: u64, size: u32, f: impl FnOnce(&[u8]) -> T) -> R<T> {
    thread_local! {
        static BUF: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    BUF.with(|b| {
        let mut guard = b.try_borrow_mut();
        let mut local = Vec::new();
        let buf: &mut Vec<u8> = match guard.as_deref_mut() {
            Ok(v) => v,
            Err(_) => &mut local,
        };
        if buf.len() < size as usize {
            buf.resize(size as usize, 0);
        }
        let buf = &mut buf[..size as usize];
        // A short read of a regular file is its end: no second pread to hear "0".
        let mut done = 0;
        while done < buf.len() {
            let want = buf.len() - done;
            let n = sys::pread(fd, &mut buf[done..], off + done as u64)?;
            done += n;
            if n < want {
                break;
            }
        }
        Ok(f(&buf[..done]))
    })
}
