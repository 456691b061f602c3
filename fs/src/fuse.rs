//! The FUSE adapter: the only module that knows `fuser`. It turns requests into calls of the
//! core (`Fs`) and results into replies; errors become errno in [`errno`] only.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{
    AccessFlags, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation,
    INodeNo, InitFlags, KernelConfig, LockOwner, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate,
    ReplyData, ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyLseek, ReplyOpen,
    ReplyStatfs, ReplyWrite, ReplyXattr, Request, TimeOrNow, WriteFlags,
};

use crate::ids::{Fh, Ino};
use crate::ops::SetAttr;
use crate::unionfs::{Attr, Ctx, Fs};

pub mod options;
mod passthrough;
use options::{View, ViewOptions};
use passthrough::{Mode, Passthrough};

/// Files smaller than this are pushed into the page cache at their first open
/// (`Adapter::prefill`): most files of an image are.
const PREFILL: u32 = crate::file::SMALL_FILE;

/// Copy-ups of at most this many bytes run on the thread that answers requests (see
/// `Adapter::copying`); larger ones on an offload worker.
const INLINE_COPY_UP: u64 = 1 << 20;

/// We are the only writer of the layers: the kernel may cache entries and attributes long
/// (unless `timeout=` says otherwise).
const TTL: Duration = Duration::from_secs(3600);

/// The inode the kernel names by node id `n`.
fn node(n: INodeNo) -> Ino {
    Ino::from_raw(n.0)
}

/// The handle the kernel names by `f`.
fn handle(f: FileHandle) -> Fh {
    Fh::from_raw(f.0)
}

/// Map a core error to the errno the kernel gets. The one place errors become errno.
fn errno(e: nix::errno::Errno) -> Errno {
    Errno::from_i32(e as i32)
}

/// A stat time as `SystemTime`; out-of-range times (hostile images) clamp to the epoch instead
/// of overflowing.
fn ts(sec: i64, nsec: i64) -> SystemTime {
    let nsec = Duration::from_nanos(nsec.clamp(0, 999_999_999) as u64);
    let t = if sec >= 0 {
        UNIX_EPOCH.checked_add(Duration::from_secs(sec as u64))
    } else {
        UNIX_EPOCH.checked_sub(Duration::from_secs(sec.unsigned_abs()))
    };
    t.and_then(|t| t.checked_add(nsec)).unwrap_or(UNIX_EPOCH)
}

fn kind(mode: u32) -> FileType {
    match mode & libc::S_IFMT {
        libc::S_IFDIR => FileType::Directory,
        libc::S_IFLNK => FileType::Symlink,
        libc::S_IFCHR => FileType::CharDevice,
        libc::S_IFBLK => FileType::BlockDevice,
        libc::S_IFIFO => FileType::NamedPipe,
        libc::S_IFSOCK => FileType::Socket,
        _ => FileType::RegularFile,
    }
}

/// Answer an operation with no payload.
fn reply_empty(reply: ReplyEmpty, r: Result<(), nix::errno::Errno>) {
    match r {
        Ok(()) => reply.ok(),
        Err(e) => reply.error(errno(e)),
    }
}

/// `a` as a `FileAttr` with `ino` as its inode number.
fn file_attr(ino: u64, st: &libc::stat) -> FileAttr {
    FileAttr {
        ino: INodeNo(ino),
        size: st.st_size as u64,
        blocks: st.st_blocks as u64,
        atime: ts(st.st_atime, st.st_atime_nsec),
        mtime: ts(st.st_mtime, st.st_mtime_nsec),
        ctime: ts(st.st_ctime, st.st_ctime_nsec),
        crtime: UNIX_EPOCH,
        kind: kind(st.st_mode),
        perm: (st.st_mode & 0o7777) as u16,
        nlink: st.st_nlink as u32,
        uid: st.st_uid,
        gid: st.st_gid,
        rdev: st.st_rdev as u32,
        blksize: st.st_blksize as u32,
        flags: 0,
    }
}

fn negative() -> FileAttr {
    FileAttr {
        ino: INodeNo(0),
        size: 0,
        blocks: 0,
        atime: UNIX_EPOCH,
        mtime: UNIX_EPOCH,
        ctime: UNIX_EPOCH,
        crtime: UNIX_EPOCH,
        kind: FileType::RegularFile,
        perm: 0,
        nlink: 0,
        uid: 0,
        gid: 0,
        rdev: 0,
        blksize: 0,
        flags: 0,
    }
}

fn to_timespec(t: TimeOrNow) -> Option<libc::timespec> {
    match t {
        TimeOrNow::Now => None,
        TimeOrNow::SpecificTime(st) => Some(match st.duration_since(UNIX_EPOCH) {
            Ok(d) => libc::timespec {
                tv_sec: d.as_secs() as i64,
                tv_nsec: d.subsec_nanos() as i64,
            },
            Err(e) => {
                let d = e.duration();
                let mut sec = -(d.as_secs() as i64);
                let mut nsec = d.subsec_nanos() as i64;
                if nsec > 0 {
                    sec -= 1;
                    nsec = 1_000_000_000 - nsec;
                }
                libc::timespec {
                    tv_sec: sec,
                    tv_nsec: nsec,
                }
            }
        }),
    }
}

/// What answering a request needs: a few `Arc`s, cloned into each offload worker.
#[derive(Clone)]
pub(crate) struct Core {
    pub fs: Arc<Fs>,
    pt: Arc<Passthrough>,
    /// Pushes data into the kernel's page cache (set once the session exists).
    notifier: Arc<OnceLock<fuser::Notifier>>,
    view: Arc<View>,
    ttl: Duration,
}

/// The `fuser` filesystem. Several threads read and answer the requests; operations that may
/// take long (those that can copy a file up, fsync, fallocate) are handed to the offload
/// workers, which reply from there (fuser's replies are `Send`), so no reader waits on them.
///
/// Readers: the kernel wakes the FUSE reader that has waited longest, so two readers take turns
/// on consecutive requests of one caller and the scheduler stops keeping caller and daemon on
/// one CPU. Under load from other processes that made one reader cheaper (`ls -lR`, daemon CPU
/// 621 -> 174 ms); on a quiet machine one reader doubled `ls -lR`'s wall time and made untar
/// 1.35x slower than two (full benches/compare fixture, 7 interleaved runs each;
/// docs/performance.md), so every mount keeps `threads` readers.
pub(crate) struct Adapter {
    core: Core,
    offload: Option<Offload>,
}

impl std::ops::Deref for Adapter {
    type Target = Core;
    fn deref(&self) -> &Core {
        &self.core
    }
}

type Job = Box<dyn FnOnce(&Core) + Send>;

/// Worker threads for the operations that may take long (see [`Adapter`]).
struct Offload {
    tx: Option<std::sync::mpsc::Sender<Job>>,
    workers: Vec<std::thread::JoinHandle<()>>,
}

impl Offload {
    fn start(core: &Core, n: usize) -> std::io::Result<Offload> {
        let (tx, rx) = std::sync::mpsc::channel::<Job>();
        let rx = Arc::new(parking_lot::Mutex::new(rx));
        let mut workers = Vec::with_capacity(n);
        for i in 0..n {
            let (core, rx) = (core.clone(), rx.clone());
            let w = std::thread::Builder::new()
                .name(format!("strata-slow-{i}"))
                .spawn(move || loop {
                    // One worker waits in `recv` at a time; the lock is released before the job.
                    let job = rx.lock().recv();
                    match job {
                        Ok(job) => job(&core),
                        Err(_) => return, // the session ended
                    }
                });
            match w {
                Ok(w) => workers.push(w),
                Err(e) if workers.is_empty() => return Err(e),
                Err(e) => {
                    log::warn!("offload worker {i}: {e}");
                    break;
                }
            }
        }
        Ok(Offload {
            tx: Some(tx),
            workers,
        })
    }

    /// Close the queue and wait for the jobs already in it.
    fn stop(&mut self) {
        self.tx = None;
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

impl Adapter {
    /// Run `f`, an operation that may copy node `ino` up: here when that copies at most
    /// `INLINE_COPY_UP` bytes (a chmod of a small lower file: a hand-off to a worker would cost
    /// two more wakeups than the copy), else on an offload worker.
    fn copying(&self, ino: INodeNo, f: impl FnOnce(&Core) + Send + 'static) {
        if self.offload.is_none() || self.fs.copy_up_is_small(node(ino), INLINE_COPY_UP) {
            f(&self.core)
        } else {
            self.offload(f)
        }
    }

    /// Run `f` on an offload worker, or here when there is none.
    fn offload(&self, f: impl FnOnce(&Core) + Send + 'static) {
        match self.offload.as_ref().and_then(|o| o.tx.as_ref()) {
            Some(tx) => {
                if let Err(std::sync::mpsc::SendError(job)) = tx.send(Box::new(f)) {
                    job(&self.core);
                }
            }
            None => f(&self.core),
        }
    }
}

impl Core {
    fn ctx(&self, req: &Request) -> Ctx {
        Ctx {
            uid: self.view.disk_uid(req.uid()),
            gid: self.view.disk_gid(req.gid()),
            pid: req.pid(),
        }
    }

    /// Attributes for an entry reply: fuser sends `ino` as the node id too, so it is the node
    /// id. The two differ only for the root (see `Fs::st_ino`), whose entry is only ever `.`
    /// or `..`.
    fn fattr(&self, a: &Attr) -> FileAttr {
        let mut st = a.st;
        self.view.read_override(&self.fs, a.ino, &mut st);
        self.view.show_stat(&mut st);
        file_attr(a.ino.get(), &st)
    }

    /// Attributes for an attribute reply (and `.`/`..` listings): the `st_ino` users see.
    fn stat_attr(&self, a: &Attr) -> FileAttr {
        let mut st = a.st;
        self.view.read_override(&self.fs, a.ino, &mut st);
        self.view.show_stat(&mut st);
        file_attr(st.st_ino, &st)
    }

    /// Answer an operation that creates or finds a name.
    fn reply_entry(&self, reply: ReplyEntry, r: Result<Attr, nix::errno::Errno>) {
        match r {
            Ok(a) => reply.entry(&self.ttl, &self.fattr(&a), Generation(0)),
            Err(e) => reply.error(errno(e)),
        }
    }

    /// Push a small lower file (under `PREFILL` bytes) into the kernel's page cache at its
    /// first open (FUSE_NOTIFY_STORE, before the open's reply): it is then read without a READ
    /// round trip. The pages stay valid (`FOPEN_KEEP_CACHE`; see `Fs::small_lower_file_with`
    /// for why they cannot be older than a write). Later opens of the inode find the pages
    /// there, or READ them as usual after an eviction.
    fn prefill(&self, ino: Ino, fh: Fh) {
        let Some(n) = self.notifier.get() else { return };
        // Whole small files only: a larger file keeps the kernel's aligned readahead requests.
        let r = self
            .fs
            .small_lower_file_with(fh, PREFILL, |d| n.store(INodeNo(ino.get()), 0, d));
        if let Ok(Some(Err(e))) = r {
            log::debug!("prefill of inode {ino}: {e}");
        }
    }

    /// Answer an OPEN: passthrough, page cache or direct I/O (see `passthrough` for the rules).
    fn open(&self, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let fh = match self.fs.open(node(ino), flags.0) {
            Ok(fh) => fh,
            Err(e) => return reply.error(errno(e)),
        };
        match self.pt.open(&self.fs, fh, |fd| reply.open_backing(fd)) {
            Mode::Passthrough(id) => {
                reply.opened_passthrough(FileHandle(fh.get()), FopenFlags::FOPEN_NOFLUSH, &id)
            }
            Mode::Cached { keep } => {
                if keep && flags.0 & libc::O_ACCMODE == libc::O_RDONLY {
                    self.prefill(node(ino), fh);
                }
                reply.opened(FileHandle(fh.get()), cached_flags(keep))
            }
            Mode::Direct => reply.opened(
                FileHandle(fh.get()),
                FopenFlags::FOPEN_DIRECT_IO | FopenFlags::FOPEN_NOFLUSH,
            ),
        }
    }

    /// `noxattrs`: ENOSYS makes the kernel stop asking and answer EOPNOTSUPP itself.
    fn xattrs_off(&self) -> bool {
        !self.view.opts.xattrs
    }
}

impl Filesystem for Adapter {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        let want = [
            InitFlags::FUSE_DO_READDIRPLUS,
            InitFlags::FUSE_READDIRPLUS_AUTO,
            InitFlags::FUSE_PARALLEL_DIROPS,
            InitFlags::FUSE_CACHE_SYMLINKS,
            InitFlags::FUSE_EXPORT_SUPPORT,
        ];
        for f in want {
            let _ = config.add_capabilities(f);
        }
        // Backing files live on a plain filesystem (depth 0); depth 1 leaves room for one
        // overlay mounted on top of us.
        let pt = config.add_capabilities(InitFlags::FUSE_PASSTHROUGH).is_ok()
            && config.set_max_stack_depth(1).is_ok();
        self.pt
            .enabled
            .store(pt, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }

    fn destroy(&mut self) {
        if let Some(o) = self.offload.as_mut() {
            o.stop();
        }
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        match self.fs.lookup(node(parent), name) {
            Ok(Some(a)) => reply.entry(&self.ttl, &self.fattr(&a), Generation(0)),
            Ok(None) => reply.entry(&self.ttl, &negative(), Generation(0)),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        self.fs.forget(node(ino), nlookup);
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.fs.getattr(node(ino), fh.map(handle)) {
            Ok(a) => reply.attr(&self.ttl, &self.stat_attr(&a)),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let sa = SetAttr {
            mode,
            uid: uid.map(|u| self.view.disk_uid(u)),
            gid: gid.map(|g| self.view.disk_gid(g)),
            size,
            atime: atime.map(to_timespec),
            mtime: mtime.map(to_timespec),
        };
        // May copy the file up.
        self.copying(ino, move |c| {
            match c.view.setattr(&c.fs, node(ino), sa, fh.map(handle)) {
                Ok(a) => reply.attr(&c.ttl, &c.stat_attr(&a)),
                Err(e) => reply.error(errno(e)),
            }
        })
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        match self.fs.readlink(node(ino)) {
            Ok(d) => reply.data(&d),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        rdev: u32,
        reply: ReplyEntry,
    ) {
        self.reply_entry(
            reply,
            self.fs
                .mknod(node(parent), name, mode, umask, rdev as u64, self.ctx(req)),
        )
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        self.reply_entry(
            reply,
            self.fs
                .mkdir(node(parent), name, mode, umask, self.ctx(req)),
        )
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        reply_empty(reply, self.fs.unlink(node(parent), name))
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        reply_empty(reply, self.fs.rmdir(node(parent), name))
    }

    fn symlink(
        &self,
        req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &Path,
        reply: ReplyEntry,
    ) {
        self.reply_entry(
            reply,
            self.fs
                .symlink(node(parent), link_name, target.as_os_str(), self.ctx(req)),
        )
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        // May copy a directory up: offloaded.
        let (name, newname) = (name.to_os_string(), newname.to_os_string());
        self.offload(move |c| {
            reply_empty(
                reply,
                c.fs.rename(node(parent), &name, node(newparent), &newname, flags.bits()),
            )
        })
    }

    fn link(
        &self,
        _req: &Request,
        ino: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        let newname = newname.to_os_string();
        // May copy the file up.
        self.copying(ino, move |c| {
            c.reply_entry(reply, c.fs.link(node(ino), node(newparent), &newname))
        })
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        if flags.0 & libc::O_ACCMODE != libc::O_RDONLY || flags.0 & libc::O_TRUNC != 0 {
            // May copy the file up.
            self.copying(ino, move |c| c.open(ino, flags, reply))
        } else {
            self.core.open(ino, flags, reply)
        }
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let mut reply = Some(reply);
        let r = self.fs.read_with(handle(fh), offset, size, |d| {
            if let Some(r) = reply.take() {
                r.data(d);
            }
        });
        if let (Err(e), Some(r)) = (r, reply.take()) {
            r.error(errno(e));
        }
    }

    fn write(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        match self.fs.write(handle(fh), offset, data) {
            Ok(n) => reply.written(n),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        reply.ok();
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        // Passthrough state first: `Fs::open_files` reaching 0 then means both are released.
        self.pt.release(handle(fh));
        self.fs.release(handle(fh));
        reply.ok();
    }

    fn fsync(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        datasync: bool,
        reply: ReplyEmpty,
    ) {
        if !self.view.opts.fsync {
            // fsync=0 / volatile: ENOSYS, and the kernel treats every later fsync as done.
            return reply.error(Errno::ENOSYS);
        }
        // Slow: offloaded.
        self.offload(move |c| reply_empty(reply, c.fs.fsync(handle(fh), datasync)))
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        if self.fs.read_only() {
            // Nothing ever changes: answer ENOSYS, and the kernel (>= 5.1) stops sending
            // OPENDIR and RELEASEDIR at all (two round trips fewer per directory walked) and
            // opens directories itself with FOPEN_KEEP_CACHE | FOPEN_CACHE_DIR.
            return reply.error(Errno::ENOSYS);
        }
        // Writable: the kernel's listing cache may only be used for directories that never
        // changed (see `Fs::listing_cacheable`); listings are read by inode, the handle only
        // checks the directory still exists.
        let flags = if self.fs.listing_cacheable(node(ino)) {
            FopenFlags::FOPEN_CACHE_DIR | FopenFlags::FOPEN_KEEP_CACHE
        } else {
            FopenFlags::empty()
        };
        match self.fs.opendir(node(ino)) {
            Ok(fh) => reply.opened(FileHandle(fh.get()), flags),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let list = match self.fs.read_dir(node(ino), offset, 1024) {
            Ok(l) => l,
            Err(e) => return reply.error(errno(e)),
        };
        for d in &list {
            if reply.add(INodeNo(self.fs.st_ino(d.ino)), d.off, kind(d.kind), &d.name) {
                break;
            }
        }
        reply.ok();
    }

    fn readdirplus(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectoryPlus,
    ) {
        let list = match self.fs.read_dir(node(ino), offset, 256) {
            Ok(l) => l,
            Err(e) => return reply.error(errno(e)),
        };
        for d in &list {
            let dots = d.name.as_bytes() == b"." || d.name.as_bytes() == b"..";
            let attr = if dots {
                match self.fs.getattr(d.ino, None) {
                    Ok(a) => a,
                    Err(_) => continue,
                }
            } else {
                match self.fs.lookup(node(ino), &d.name) {
                    Ok(Some(a)) => a,
                    _ => continue,
                }
            };
            // The kernel links no inode for `.` and `..`, only lists their `ino`.
            let fa = if dots {
                self.stat_attr(&attr)
            } else {
                self.fattr(&attr)
            };
            if reply.add(fa.ino, d.off, &d.name, &self.ttl, &fa, Generation(0)) {
                if !dots {
                    self.fs.forget(attr.ino, 1);
                }
                break;
            }
        }
        reply.ok();
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        self.fs.releasedir(handle(fh));
        reply.ok();
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        reply.ok();
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        match self.fs.statfs() {
            Ok(s) => reply.statfs(
                s.f_blocks,
                s.f_bfree,
                s.f_bavail,
                s.f_files,
                s.f_ffree,
                s.f_bsize as u32,
                255,
                s.f_frsize as u32,
            ),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn setxattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        name: &OsStr,
        value: &[u8],
        flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        if self.xattrs_off() {
            return reply.error(Errno::ENOSYS);
        }
        if self.view.is_override_key(name) {
            return reply.error(Errno::EPERM);
        }
        let (name, value) = (name.to_os_string(), value.to_vec());
        // May copy the file up.
        self.copying(ino, move |c| {
            reply_empty(reply, c.fs.setxattr(node(ino), &name, &value, flags))
        })
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        if self.xattrs_off() {
            return reply.error(Errno::ENOSYS);
        }
        if self.view.is_override_key(name) {
            return reply.error(Errno::ENODATA);
        }
        xattr_reply(self.fs.getxattr(node(ino), name), size, reply);
    }

    fn listxattr(&self, req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        // The kernel leaves filtering of `trusted.*` to the filesystem; uid 0 stands in for
        // CAP_SYS_ADMIN (FUSE does not tell us the caller's capabilities).
        if self.xattrs_off() {
            return reply.error(Errno::ENOSYS);
        }
        let list =
            self.fs
                .listxattr(node(ino), req.uid() == 0)
                .map(|l| match self.view.override_key() {
                    Some(k) => l
                        .split(|&b| b == 0)
                        .filter(|n| !n.is_empty() && *n != k.as_bytes())
                        .flat_map(|n| n.iter().copied().chain([0]))
                        .collect(),
                    None => l,
                });
        xattr_reply(list, size, reply);
    }

    fn removexattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        if self.xattrs_off() {
            return reply.error(Errno::ENOSYS);
        }
        if self.view.is_override_key(name) {
            return reply.error(Errno::EPERM);
        }
        let name = name.to_os_string();
        // May copy the file up.
        self.copying(ino, move |c| {
            reply_empty(reply, c.fs.removexattr(node(ino), &name))
        })
    }

    fn access(&self, _req: &Request, _ino: INodeNo, _mask: AccessFlags, reply: ReplyEmpty) {
        // default_permissions: the kernel checks modes itself.
        reply.ok();
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let (a, fh) = match self
            .fs
            .create(node(parent), name, mode, umask, flags, self.ctx(req))
        {
            Ok(r) => r,
            Err(e) => return reply.error(errno(e)),
        };
        let (attr, fh) = (self.fattr(&a), FileHandle(fh.get()));
        match self
            .pt
            .open(&self.fs, handle(fh), |fd| reply.open_backing(fd))
        {
            Mode::Passthrough(id) => reply.created_passthrough(
                &self.ttl,
                &attr,
                Generation(0),
                fh,
                FopenFlags::FOPEN_NOFLUSH,
                &id,
            ),
            Mode::Cached { keep } => {
                reply.created(&self.ttl, &attr, Generation(0), fh, cached_flags(keep))
            }
            Mode::Direct => reply.created(
                &self.ttl,
                &attr,
                Generation(0),
                fh,
                FopenFlags::FOPEN_DIRECT_IO | FopenFlags::FOPEN_NOFLUSH,
            ),
        }
    }

    fn fallocate(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        // Slow: offloaded.
        self.offload(move |c| reply_empty(reply, c.fs.fallocate(handle(fh), offset, length, mode)))
    }

    fn lseek(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: i64,
        whence: i32,
        reply: ReplyLseek,
    ) {
        match self.fs.lseek(handle(fh), offset, whence) {
            Ok(o) => reply.offset(o),
            Err(e) => reply.error(errno(e)),
        }
    }
}

/// Open flags of a page-cache open. We are the only writer: cached pages stay valid across
/// opens unless `keep` is false. No FLUSH on close: we buffer nothing, and locks are kept by
/// the kernel (POSIX_LOCKS not negotiated).
fn cached_flags(keep: bool) -> FopenFlags {
    if keep {
        FopenFlags::FOPEN_KEEP_CACHE | FopenFlags::FOPEN_NOFLUSH
    } else {
        FopenFlags::FOPEN_NOFLUSH
    }
}

fn xattr_reply(r: Result<Vec<u8>, nix::errno::Errno>, size: u32, reply: ReplyXattr) {
    match r {
        Ok(v) if size == 0 => reply.size(v.len() as u32),
        Ok(v) if v.len() <= size as usize => reply.data(&v),
        Ok(_) => reply.error(Errno::ERANGE),
        Err(e) => reply.error(errno(e)),
    }
}

/// Mount a FUSE filesystem at `mountpoint` (as fuser's own pure-Rust mount does: `mount(2)` of
/// type `fuse` with an open `/dev/fuse`) and return that fd for [`fuser::Session::from_fd`].
/// fuser then owns no mount: a session that outlives its mount (unmounted by someone else, e.g.
/// containerd, which may mount again at the same path) never unmounts by path whatever is
/// mounted there by then, as fuser's drop would. Whoever mounted unmounts (`Mounted`, `umount`,
/// `fusermount3 -u`). `dev` and `suid` are allowed (a container rootfs needs both);
/// `allow_other` + `default_permissions`: every uid may use it, the kernel checks permissions.
fn mount_fuse(
    mountpoint: &Path,
    fsname: &str,
    read_only: bool,
) -> std::io::Result<std::os::fd::OwnedFd> {
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let rootmode = std::fs::File::open(mountpoint)?
        .metadata()?
        .permissions()
        .mode();
    let dev = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_CLOEXEC)
        .open("/dev/fuse")?;
    let data = format!(
        "fd={},rootmode={rootmode:o},user_id={},group_id={},default_permissions,allow_other",
        dev.as_raw_fd(),
        nix::unistd::getuid(),
        nix::unistd::getgid()
    );
    let mut flags = nix::mount::MsFlags::empty();
    if read_only {
        flags |= nix::mount::MsFlags::MS_RDONLY;
    }
    nix::mount::mount(
        Some(fsname),
        mountpoint,
        Some("fuse"),
        flags,
        Some(data.as_str()),
    )
    .map_err(|e| {
        std::io::Error::new(
            std::io::Error::from(e).kind(),
            format!("mount fuse on {}: {e}", mountpoint.display()),
        )
    })?;
    Ok(std::os::fd::OwnedFd::from(dev))
}

/// Mount `fs` at `mountpoint` and serve it from `threads` background threads. Returns once the
/// kernel has finished the FUSE handshake (the mount is live).
pub(crate) fn serve(
    fs: Arc<Fs>,
    mountpoint: &Path,
    fsname: &str,
    threads: usize,
    view: ViewOptions,
) -> std::io::Result<std::thread::JoinHandle<std::io::Result<()>>> {
    let mut cfg = fuser::Config::default();
    cfg.acl = fuser::SessionACL::All;
    // `threads` threads read and answer requests; `threads - 1` workers take the slow
    // operations (big copy-ups, renames, fsync; see `Adapter`) so no reader waits on them. One
    // reader alone measured better only on a loaded machine (fewer cross-CPU wakeups when other
    // work competes); on a quiet one it doubled ls -lR and made untar 1.35x slower than two
    // (docs/performance.md). A mount with lazily fetched lower files reads them from the
    // network inside OPEN and READ and gets no workers: its readers wait for fetches instead.
    let lazy = fs.has_lazy_lower();
    cfg.n_threads = Some(threads.max(1));
    cfg.clone_fd = true;
    let mut view = view;
    if view.xattr_permissions == 0 {
        view.xattr_permissions = options::detect_xattr_permissions(&fs);
        if view.xattr_permissions != 0 {
            log::info!(
                "a layer carries override records: xattr_permissions={}",
                view.xattr_permissions
            );
        }
    }
    let notifier_slot = Arc::new(OnceLock::new());
    let core = Core {
        fs: fs.clone(),
        pt: Arc::new(Passthrough::default()),
        notifier: notifier_slot.clone(),
        ttl: view.timeout.unwrap_or(TTL),
        view: Arc::new(View::new(view)),
    };
    let offload = match threads {
        _ if lazy => None,
        0 | 1 => None,
        n => Some(Offload::start(&core, n - 1)?),
    };
    let dev = mount_fuse(mountpoint, fsname, fs.read_only())?;
    let session =
        fuser::Session::from_fd(Adapter { core, offload }, dev, fuser::SessionACL::All, cfg)?;
    let notifier = session.notifier();
    let _ = notifier_slot.set(session.notifier());
    fs.set_attr_invalidator(Box::new(move |ino| {
        // Offset -1: attributes only, no page-cache range (takes no inode lock in the kernel).
        let _ = notifier.inval_inode(INodeNo(ino.get()), -1, 0);
    }));
    std::thread::Builder::new()
        .name("strata-fuse".into())
        .spawn(move || session.run())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extreme_times_do_not_panic() {
        let _ = ts(i64::MIN, 0);
        let _ = ts(i64::MAX, 999_999_999);
        assert_eq!(ts(-1, 500_000_000), UNIX_EPOCH - Duration::from_millis(500));
        assert_eq!(ts(1, 5), UNIX_EPOCH + Duration::new(1, 5));
    }
}
