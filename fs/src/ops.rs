//! Namespace-changing operations: create, mkdir, mknod, symlink, link, unlink, rmdir, rename,
//! setattr. Each one copies up what it needs first (no index lock held), then changes the upper
//! layer and the parent's index together under that index's write lock. New opaque directories
//! are marked in the mount's [`Flavour`](crate::format::Flavour).

use std::ffi::OsStr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Arc;

use nix::errno::Errno;

use crate::at::{self as sys, check_name, R};
use crate::format::{make_whiteout_any, mark_xwhiteouts, set_opaque};
use crate::ids::Fh;
use crate::ids::Ino;
use crate::index::{DirIndex, Entry};
use crate::ns::Held;
use crate::unionfs::{Attr, Ctx, Fs};

/// Attribute changes requested by setattr.
#[derive(Default, Clone, Copy, Debug)]
pub struct SetAttr {
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub size: Option<u64>,
    /// `None` = leave, `Some(None)` = now, `Some(Some(ts))` = that time.
    pub atime: Option<Option<libc::timespec>>,
    pub mtime: Option<Option<libc::timespec>>,
}

/// What to create.
pub(crate) enum Make<'a> {
    File { mode: u32, flags: i32 },
    Dir { mode: u32 },
    Node { mode: u32, rdev: u64 },
    Symlink { target: &'a OsStr },
}

impl Fs {
    /// Open the upper directory of merged directory `ino` (copying it up first).
    fn upper_dir(&self, ns: &mut impl Held, ino: Ino) -> R<Arc<OwnedFd>> {
        self.copy_up(ns, ino)?;
        self.tree.dirfd(ino, 0)
    }

    /// Create a new object `name` in `parent` as `ctx`.
    pub(crate) fn make(
        &self,
        parent: Ino,
        name: &OsStr,
        what: Make<'_>,
        umask: u32,
        ctx: Ctx,
    ) -> R<(Attr, Option<OwnedFd>)> {
        let t = &self.tree;
        t.layers.writable()?;
        check_name(name)?;
        let mut ns = t.ns.shared();
        let pfd = self.upper_dir(&mut ns, parent)?;
        let flavour = t.layers.flavour();
        let pst = sys::fstat(pfd.as_fd())?;
        let gid = if pst.st_mode & libc::S_ISGID != 0 {
            pst.st_gid
        } else {
            ctx.gid
        };
        let (n, st, file) = t.with_index_mut(&mut ns, parent, |ix| {
            let existing = ix.get(name).cloned();
            if existing.as_ref().is_some_and(Entry::visible) {
                return Err(Errno::EEXIST);
            }
            let replace = existing.as_ref().is_some_and(|e| t.layers.is_upper(e.top));
            let work = if replace {
                Some(t.layers.work_fd()?)
            } else {
                None
            };
            let tmp = t.layers.tmp_name();
            let (tdir, tname): (BorrowedFd<'_>, &OsStr) = match work {
                Some(w) => (w, &tmp),
                None => (pfd.as_fd(), name),
            };
            let mut file = None;
            let res = (|| -> R<u32> {
                match &what {
                    Make::File { mode, flags } => {
                        let acc = flags & libc::O_ACCMODE;
                        let f =
                            sys::openat(tdir, tname, libc::O_CREAT | libc::O_EXCL | acc, 0o600)?;
                        sys::fchownat(f.as_fd(), OsStr::new(""), ctx.uid, gid)?;
                        sys::fchmod(f.as_fd(), mode & !umask & 0o7777)?;
                        file = Some(f);
                        Ok(libc::S_IFREG)
                    }
                    Make::Dir { mode } => {
                        let mut m = mode & !umask & 0o7777;
                        if pst.st_mode & libc::S_ISGID != 0 {
                            m |= libc::S_ISGID;
                        }
                        sys::mkdirat(tdir, tname, 0o700)?;
                        sys::fchownat(tdir, tname, ctx.uid, gid)?;
                        sys::fchmodat(tdir, tname, m)?;
                        if existing.is_some() {
                            set_opaque(tdir, tname, flavour)?;
                        }
                        Ok(libc::S_IFDIR)
                    }
                    Make::Node { mode, rdev } => {
                        let kind = mode & libc::S_IFMT;
                        let kind = if kind == 0 { libc::S_IFREG } else { kind };
                        sys::mknodat(tdir, tname, kind | 0o600, *rdev)?;
                        sys::fchownat(tdir, tname, ctx.uid, gid)?;
                        sys::fchmodat(tdir, tname, mode & !umask & 0o7777)?;
                        Ok(kind)
                    }
                    Make::Symlink { target } => {
                        sys::symlinkat(target, tdir, tname)?;
                        sys::fchownat(tdir, tname, ctx.uid, gid)?;
                        Ok(libc::S_IFLNK)
                    }
                }
            })();
            let kind = match res {
                Ok(k) => k,
                Err(e) => {
                    let _ = sys::unlinkat(tdir, tname, matches!(what, Make::Dir { .. }));
                    return Err(e);
                }
            };
            if let Some(w) = work {
                let r = if kind == libc::S_IFDIR {
                    sys::renameat2(w, &tmp, pfd.as_fd(), name, libc::RENAME_EXCHANGE)
                        .and_then(|()| sys::unlinkat(w, &tmp, false))
                } else {
                    sys::renameat2(w, &tmp, pfd.as_fd(), name, 0)
                };
                if let Err(e) = r {
                    let _ = sys::unlinkat(w, &tmp, kind == libc::S_IFDIR);
                    return Err(e);
                }
            }
            let st = sys::fstatat(pfd.as_fd(), name)?;
            let ino = t.inodes.number_new_upper(st.st_dev, st.st_ino);
            let e = Entry::new_upper(kind, ino, existing.is_some_and(|e| e.lower));
            ix.put(name, e.clone());
            let n = t.remember(parent, name, &e);
            Ok((n, st, file))
        })?;
        if n.is_dir() {
            // A new directory's index is known without reading it (unless a lookup in another
            // thread built it from the disk already, as the same empty upper dir).
            t.with_index_slot(&mut ns, &n, |slot| {
                if slot.is_none() {
                    *slot = Some(DirIndex::new(vec![0], Default::default()));
                }
            });
        }
        Ok((t.fix_attr(&ns, n.ino, st), file))
    }

    pub fn mkdir(&self, parent: Ino, name: &OsStr, mode: u32, umask: u32, ctx: Ctx) -> R<Attr> {
        self.make(parent, name, Make::Dir { mode }, umask, ctx)
            .map(|r| r.0)
    }

    pub fn mknod(
        &self,
        parent: Ino,
        name: &OsStr,
        mode: u32,
        umask: u32,
        rdev: u64,
        ctx: Ctx,
    ) -> R<Attr> {
        // A char device 0/0 is a whiteout on disk; kernel overlayfs refuses to create one too.
        if mode & libc::S_IFMT == libc::S_IFCHR && rdev == 0 {
            return Err(Errno::EPERM);
        }
        self.make(parent, name, Make::Node { mode, rdev }, umask, ctx)
            .map(|r| r.0)
    }

    pub fn symlink(&self, parent: Ino, name: &OsStr, target: &OsStr, ctx: Ctx) -> R<Attr> {
        self.make(parent, name, Make::Symlink { target }, 0, ctx)
            .map(|r| r.0)
    }

    /// Remove the upper object `pfd/name` (whose entry is `e`), leaving a whiteout if a lower
    /// layer has the name. For directories the upper dir must be empty of visible entries.
    fn remove_upper(&self, pfd: BorrowedFd<'_>, name: &OsStr, e: &Entry) -> R<()> {
        let is_dir = e.kind == libc::S_IFDIR;
        let t = &self.tree;
        let flavour = t.layers.flavour();
        if !t.layers.is_upper(e.top) {
            if make_whiteout_any(pfd, name, flavour)? {
                mark_xwhiteouts(pfd, flavour)?;
            }
            return Ok(());
        }
        let st = sys::fstatat(pfd, name)?;
        if is_dir {
            clear_whiteouts(pfd, name)?;
        }
        // Before the inode can be freed and its number reused by the filesystem.
        if is_dir || st.st_nlink <= 1 {
            t.inodes.drop_remap(st.st_dev, st.st_ino);
        }
        if e.lower {
            let work = t.layers.work_fd()?;
            let tmp = t.layers.tmp_name();
            let xattr_form = make_whiteout_any(work, &tmp, flavour)?;
            let flags = if is_dir { libc::RENAME_EXCHANGE } else { 0 };
            if let Err(err) = sys::renameat2(work, &tmp, pfd, name, flags) {
                let _ = sys::unlinkat(work, &tmp, false);
                return Err(err);
            }
            if xattr_form {
                mark_xwhiteouts(pfd, flavour)?;
            }
            if is_dir {
                sys::unlinkat(work, &tmp, true)?;
            }
        } else {
            sys::unlinkat(pfd, name, is_dir)?;
        }
        Ok(())
    }

    pub fn unlink(&self, parent: Ino, name: &OsStr) -> R<()> {
        self.remove(parent, name, false)
    }

    pub fn rmdir(&self, parent: Ino, name: &OsStr) -> R<()> {
        self.remove(parent, name, true)
    }

    fn remove(&self, parent: Ino, name: &OsStr, dir: bool) -> R<()> {
        let t = &self.tree;
        t.layers.writable()?;
        if name.len() > 255 {
            return Err(Errno::ENAMETOOLONG);
        }
        let mut ns = t.ns.shared();
        let e = t.visible_entry(&ns, parent, name)?;
        match (dir, e.kind == libc::S_IFDIR) {
            (true, false) => return Err(Errno::ENOTDIR),
            (false, true) => return Err(Errno::EISDIR),
            _ => {}
        }
        if dir {
            let child = t.remember(parent, name, &e);
            let empty = t.with_index(&ns, child.ino, |ix| ix.is_empty());
            t.forget(child.ino, 1);
            if !empty? {
                return Err(Errno::ENOTEMPTY);
            }
        }
        let pfd = self.upper_dir(&mut ns, parent)?;
        t.with_index_mut(&mut ns, parent, |ix| {
            let cur = ix
                .get(name)
                .filter(|c| c.visible() && c.ino == e.ino)
                .cloned()
                .ok_or(Errno::ENOENT)?;
            self.remove_upper(pfd.as_fd(), name, &cur)?;
            if cur.lower {
                ix.put(name, Entry::whiteout_upper());
            } else {
                ix.del(name);
            }
            Ok(())
        })?;
        t.inodes.drop_name(e.ino, parent, name);
        if dir {
            t.dirfds.forget_dir(e.ino);
            if let Ok(n) = t.inodes.get(e.ino) {
                t.with_index_slot(&mut ns, &n, |slot| *slot = None);
            }
        }
        Ok(())
    }

    pub fn link(&self, ino: Ino, newparent: Ino, newname: &OsStr) -> R<Attr> {
        let t = &self.tree;
        t.layers.writable()?;
        check_name(newname)?;
        let mut ns = t.ns.shared();
        let n = t.inodes.get(ino)?;
        if n.is_dir() {
            return Err(Errno::EPERM);
        }
        self.copy_up(&mut ns, ino)?;
        let src = t.locate(&ns, ino)?;
        let sdir = t.loc_dir(&src)?;
        let pfd = self.upper_dir(&mut ns, newparent)?;
        let st = t.with_index_mut(&mut ns, newparent, |ix| {
            let existing = ix.get(newname).cloned();
            if existing.as_ref().is_some_and(Entry::visible) {
                return Err(Errno::EEXIST);
            }
            if existing.as_ref().is_some_and(|e| t.layers.is_upper(e.top)) {
                let work = t.layers.work_fd()?;
                let tmp = t.layers.tmp_name();
                sys::linkat(sdir.as_fd(), &src.name, work, &tmp)?;
                if let Err(err) = sys::renameat2(work, &tmp, pfd.as_fd(), newname, 0) {
                    let _ = sys::unlinkat(work, &tmp, false);
                    return Err(err);
                }
            } else {
                sys::linkat(sdir.as_fd(), &src.name, pfd.as_fd(), newname)?;
            }
            let e = Entry::new_upper(n.kind, ino, existing.is_some_and(|e| e.lower));
            ix.put(newname, e.clone());
            t.remember(newparent, newname, &e);
            sys::fstatat(pfd.as_fd(), newname)
        })?;
        Ok(t.fix_attr(&ns, ino, st))
    }

    pub fn rename(
        &self,
        parent: Ino,
        name: &OsStr,
        newparent: Ino,
        newname: &OsStr,
        flags: u32,
    ) -> R<()> {
        let mut tries = 0;
        loop {
            match self.rename_once(parent, name, newparent, newname, flags) {
                Err(Errno::EAGAIN) if tries < 8 => tries += 1,
                r => return r,
            }
        }
    }

    fn rename_once(
        &self,
        parent: Ino,
        name: &OsStr,
        newparent: Ino,
        newname: &OsStr,
        flags: u32,
    ) -> R<()> {
        let t = &self.tree;
        t.layers.writable()?;
        check_name(newname)?;
        if name.len() > 255 {
            return Err(Errno::ENAMETOOLONG);
        }
        if flags & !(libc::RENAME_NOREPLACE | libc::RENAME_EXCHANGE) != 0 {
            return Err(Errno::EINVAL);
        }
        let exchange = flags & libc::RENAME_EXCHANGE != 0;
        // Copy-ups first, with the namespace lock held shared only.
        let (src, dst) = {
            let mut ns = t.ns.shared();
            let src = t.visible_entry(&ns, parent, name)?;
            let dst = t.entry(&ns, newparent, newname)?.filter(Entry::visible);
            if exchange && dst.is_none() {
                return Err(Errno::ENOENT);
            }
            if flags & libc::RENAME_NOREPLACE != 0 && dst.is_some() {
                return Err(Errno::EEXIST);
            }
            if let Some(d) = &dst {
                if d.ino == src.ino {
                    return Ok(());
                }
                if !exchange {
                    match (src.kind == libc::S_IFDIR, d.kind == libc::S_IFDIR) {
                        (true, false) => return Err(Errno::ENOTDIR),
                        (false, true) => return Err(Errno::EISDIR),
                        (true, true) => {
                            let dn = t.remember(newparent, newname, d);
                            let empty = t.with_index(&ns, dn.ino, |ix| ix.is_empty());
                            t.forget(dn.ino, 1);
                            if !empty? {
                                return Err(Errno::ENOTEMPTY);
                            }
                        }
                        _ => {}
                    }
                }
            }
            for (p, nm, e) in [
                (parent, name, Some(&src)),
                (newparent, newname, dst.as_ref()),
            ] {
                let Some(e) = e else { continue };
                if !exchange && p == newparent && nm == newname {
                    continue;
                }
                let node = t.remember(p, nm, e);
                let r = if e.kind == libc::S_IFDIR {
                    self.materialize(&mut ns, node.ino, 0)
                } else {
                    self.copy_up(&mut ns, node.ino)
                };
                t.forget(node.ino, 1);
                r?;
            }
            self.copy_up(&mut ns, newparent)?;
            (src, dst)
        };
        let mut ns = t.ns.exclusive();
        let ofd = self.upper_dir(&mut ns, parent)?;
        let nfd = self.upper_dir(&mut ns, newparent)?;
        let (po, pn) = (t.inodes.get(parent)?, t.inodes.get(newparent)?);
        let mut ix = t.lock_pair(&mut ns, &po, &pn)?;
        let s = ix
            .from()?
            .get(name)
            .cloned()
            .filter(|e| e.ino == src.ino && e.visible());
        let s = s.ok_or(Errno::ENOENT)?;
        let d = ix.to()?.get(newname).cloned();
        let dvis = d.clone().filter(Entry::visible);
        if dvis.as_ref().map(|e| e.ino) != dst.as_ref().map(|e| e.ino) {
            return Err(Errno::EAGAIN);
        }
        let upper = |e: &Entry| t.layers.is_upper(e.top);
        if !upper(&s) || (exchange && dvis.as_ref().is_some_and(|e| !upper(e))) {
            return Err(Errno::EAGAIN);
        }
        let flavour = t.layers.flavour();
        if exchange {
            let dv = dvis.ok_or(Errno::ENOENT)?;
            // A directory moving onto a name that lower layers hold must hide them.
            if s.kind == libc::S_IFDIR && dv.lower {
                set_opaque(ofd.as_fd(), name, flavour)?;
            }
            if dv.kind == libc::S_IFDIR && s.lower {
                set_opaque(nfd.as_fd(), newname, flavour)?;
            }
            sys::renameat2(
                ofd.as_fd(),
                name,
                nfd.as_fd(),
                newname,
                libc::RENAME_EXCHANGE,
            )?;
            let mut s2 = dv.clone();
            s2.lower = s.lower;
            let mut d2 = s.clone();
            d2.lower = dv.lower;
            ix.from()?.put(name, s2);
            ix.to()?.put(newname, d2);
            drop(ix);
            t.inodes.rename(s.ino, parent, name, newparent, newname);
            t.inodes.rename(dv.ino, newparent, newname, parent, name);
            return Ok(());
        }
        // A directory landing on a name that lower layers hold must hide them.
        let d_lower = d.as_ref().is_some_and(|e| e.lower);
        if s.kind == libc::S_IFDIR && d_lower {
            set_opaque(ofd.as_fd(), name, flavour)?;
        }
        if let Some(dv) = dvis.as_ref().filter(|e| upper(e)) {
            if dv.kind == libc::S_IFDIR {
                clear_whiteouts(nfd.as_fd(), newname)?;
            } else if let Ok(st) = sys::fstatat(nfd.as_fd(), newname) {
                if st.st_nlink <= 1 {
                    t.inodes.drop_remap(st.st_dev, st.st_ino);
                }
            }
        }
        let need_wh = s.lower;
        let over_upper_wh = d.as_ref().is_some_and(|e| !e.visible() && upper(e));
        if s.kind == libc::S_IFDIR && over_upper_wh {
            // A directory cannot replace the whiteout (a non-directory): swap them, then keep
            // the whiteout at the old name if it is needed there.
            sys::renameat2(
                ofd.as_fd(),
                name,
                nfd.as_fd(),
                newname,
                libc::RENAME_EXCHANGE,
            )?;
            if !need_wh {
                sys::unlinkat(ofd.as_fd(), name, false)?;
            }
        } else {
            let mut rflags = if need_wh { libc::RENAME_WHITEOUT } else { 0 };
            let mut r = sys::renameat2(ofd.as_fd(), name, nfd.as_fd(), newname, rflags);
            if matches!(r, Err(Errno::EINVAL)) && need_wh {
                rflags = 0;
                r = sys::renameat2(ofd.as_fd(), name, nfd.as_fd(), newname, 0);
            }
            r?;
            if need_wh && rflags == 0 && make_whiteout_any(ofd.as_fd(), name, flavour)? {
                mark_xwhiteouts(ofd.as_fd(), flavour)?;
            }
        }
        let mut moved = s.clone();
        moved.lower = d.as_ref().is_some_and(|e| e.lower || !e.visible());
        if moved.kind == libc::S_IFDIR {
            moved.dir_layers = vec![0];
        }
        if need_wh {
            ix.from()?.put(name, Entry::whiteout_upper());
        } else {
            ix.from()?.del(name);
        }
        ix.to()?.put(newname, moved);
        drop(ix);
        if let Some(dv) = dvis {
            t.inodes.drop_name(dv.ino, newparent, newname);
            if dv.kind == libc::S_IFDIR {
                t.dirfds.forget_dir(dv.ino);
            }
        }
        t.inodes.rename(s.ino, parent, name, newparent, newname);
        Ok(())
    }

    pub fn setattr(&self, ino: Ino, sa: SetAttr, fh: Option<Fh>) -> R<Attr> {
        let t = &self.tree;
        t.layers.writable()?;
        let mut ns = t.ns.shared();
        let n = t.inodes.get(ino)?;
        let handle = fh.and_then(|f| self.handles.get(f));
        if n.unlinked() {
            let fd = match &handle {
                Some(h) => h.fd(),
                None => n.last_open.lock().upgrade().ok_or(Errno::ENOENT)?,
            };
            apply_fd(fd.as_fd(), &sa)?;
            let mut st = sys::fstat(fd.as_fd())?;
            st.st_nlink = 0;
            return Ok(t.fix_attr(&ns, ino, st));
        }
        // The reply carries the attributes after the change: no invalidation needed.
        self.copy_up_then(&mut ns, ino, false)?;
        let loc = t.locate(&ns, ino)?;
        let dir = t.loc_dir(&loc)?;
        let name = loc.name.as_os_str();
        if sa.uid.is_some() || sa.gid.is_some() {
            sys::fchownat(
                dir.as_fd(),
                name,
                sa.uid.unwrap_or(u32::MAX),
                sa.gid.unwrap_or(u32::MAX),
            )?;
        }
        if let Some(m) = sa.mode {
            if n.kind != libc::S_IFLNK {
                sys::fchmodat(dir.as_fd(), name, m & 0o7777)?;
            }
        }
        if let Some(size) = sa.size {
            match handle.as_ref().filter(|h| h.writable) {
                Some(h) => sys::ftruncate(h.fd().as_fd(), size)?,
                None => {
                    let f = sys::openat(dir.as_fd(), name, libc::O_WRONLY, 0)?;
                    sys::ftruncate(f.as_fd(), size)?;
                }
            }
        }
        if sa.atime.is_some() || sa.mtime.is_some() {
            sys::utimensat(dir.as_fd(), name, &times(&sa))?;
        }
        let st = sys::fstatat(dir.as_fd(), name)?;
        Ok(t.fix_attr(&ns, ino, st))
    }
}

fn times(sa: &SetAttr) -> [libc::timespec; 2] {
    let conv = |t: Option<Option<libc::timespec>>| match t {
        None => libc::timespec {
            tv_sec: 0,
            tv_nsec: libc::UTIME_OMIT,
        },
        Some(None) => libc::timespec {
            tv_sec: 0,
            tv_nsec: libc::UTIME_NOW,
        },
        Some(Some(ts)) => ts,
    };
    [conv(sa.atime), conv(sa.mtime)]
}

/// Apply attribute changes through an open fd (for unlinked-but-open files).
fn apply_fd(fd: BorrowedFd<'_>, sa: &SetAttr) -> R<()> {
    if sa.uid.is_some() || sa.gid.is_some() {
        sys::fchownat(
            fd,
            OsStr::new(""),
            sa.uid.unwrap_or(u32::MAX),
            sa.gid.unwrap_or(u32::MAX),
        )?;
    }
    if let Some(m) = sa.mode {
        sys::fchmod(fd, m & 0o7777)?;
    }
    if let Some(s) = sa.size {
        sys::ftruncate(fd, s)?;
    }
    if sa.atime.is_some() || sa.mtime.is_some() {
        sys::utimensat(fd, OsStr::new(""), &times(sa))?;
    }
    Ok(())
}

/// Remove whiteouts and overlay markers from the upper directory `pfd/name`; fails with
/// ENOTEMPTY if it holds anything else.
fn clear_whiteouts(pfd: BorrowedFd<'_>, name: &OsStr) -> R<()> {
    let d = sys::openat(pfd, name, libc::O_RDONLY | libc::O_DIRECTORY, 0)?;
    let probe = sys::open_beneath(d.as_fd(), b"", libc::O_PATH | libc::O_DIRECTORY)?;
    for (n, _, _) in sys::read_dir(d)? {
        let st = sys::fstatat(probe.as_fd(), &n)?;
        let marker = std::os::unix::ffi::OsStrExt::as_bytes(n.as_os_str())
            .starts_with(crate::format::WH_PREFIX);
        if crate::format::is_whiteout(probe.as_fd(), &n, &st, true) || marker {
            sys::unlinkat(probe.as_fd(), &n, false)?;
        } else {
            return Err(Errno::ENOTEMPTY);
        }
    }
    Ok(())
}

#[cfg(test)]
#[path = "ops_tests.rs"]
mod tests;
