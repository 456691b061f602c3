//! Copy-up: bring a lower object into the upper layer, parents first, atomically.
//!
//! The copy is built under a temporary name in the work dir (data by reflink or
//! copy_file_range, then owner, mode, xattrs and times) and renamed into the upper parent with
//! `RENAME_NOREPLACE`, so a crash leaves either the old view or the new one. The copied object
//! keeps its inode number (its upper `(dev, ino)` is remapped). Copy-up never changes the merged
//! view, so the namespace lock held shared is enough, with the node's own `copyup` mutex; it
//! takes `&mut` of the namespace token, so it cannot be started under a directory index lock
//! (see `tree`).

use std::ffi::{OsStr, OsString};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::ffi::OsStrExt;

use nix::errno::Errno;

use crate::at::{self, R};
use crate::format::{self, copy_xattrs, copy_xattrs_fd};
use crate::ids::Ino;
use crate::ns::Held;
use crate::unionfs::Fs;

impl Fs {
    /// Would a copy-up of node `ino` copy at most `max` bytes of data and nothing from the
    /// network? True when it is in the upper layer already, is not a regular file (its
    /// copy-up is metadata only) or is a small lower file of a layer that is all on disk; the
    /// FUSE adapter runs such operations on the thread that answers requests, others on an
    /// offload worker. False when unsure.
    pub(crate) fn copy_up_is_small(&self, ino: Ino, max: u64) -> bool {
        let t = &self.tree;
        let Ok(n) = t.inodes.get(ino) else {
            return false;
        };
        // Only a regular lower file copies data; its kind is known without a stat.
        if ino == Ino::ROOT
            || n.kind != libc::S_IFREG
            || n.copied.load(std::sync::atomic::Ordering::Acquire)
        {
            return true;
        }
        let ns = t.ns.shared();
        let Ok(loc) = t.locate(&ns, ino) else {
            return false;
        };
        if t.layers.is_upper(loc.layer) {
            return true;
        }
        match t.stat_loc(&loc) {
            Ok(st) => self.lower_data.is_none() && (st.st_size as u64) <= max,
            Err(_) => false,
        }
    }

    /// Make sure node `ino` exists in the upper layer (copying it and its parents up).
    pub(crate) fn copy_up(&self, ns: &mut impl Held, ino: Ino) -> R<()> {
        self.copy_up_then(ns, ino, true)
    }

    /// `copy_up`, telling the kernel to drop the cached attributes of `ino` only if
    /// `inval_self`: a caller whose reply carries fresh attributes (SETATTR) saves that
    /// notification, one write to /dev/fuse per chmod of a lower file.
    pub(crate) fn copy_up_then(&self, ns: &mut impl Held, ino: Ino, inval_self: bool) -> R<()> {
        let t = &self.tree;
        t.layers.writable()?;
        if ino == Ino::ROOT {
            return Ok(());
        }
        let n = t.inodes.get(ino)?;
        let _g = n.copyup.lock();
        let (parent, name, e) = t.live_name(ns, &n)?;
        if t.layers.is_upper(e.top) {
            return Ok(());
        }
        self.copy_up(ns, parent)?;
        let src_dir = t.dirfd(parent, e.top)?;
        let up_dir = t.dirfd(parent, 0)?;
        let mut st = at::fstatat(src_dir.as_fd(), &name)?;
        if st.st_mode & libc::S_IFMT == libc::S_IFREG && self.lower_data.is_some() {
            // A lazily fetched file: its data first, then its attributes as they are now.
            self.ensure_lower_data(e.top, st.st_ino)?;
            st = at::fstatat(src_dir.as_fd(), &name)?;
        }
        let pst = at::fstat(up_dir.as_fd())?;
        let work = t.layers.work_fd()?;
        let tmp = t.layers.tmp_name();
        let kind = st.st_mode & libc::S_IFMT;
        let res = self.build_copy(src_dir.as_fd(), &name, &st, work, &tmp);
        let res = res.and_then(|()| {
            at::renameat2(work, &tmp, up_dir.as_fd(), &name, libc::RENAME_NOREPLACE)
        });
        if let Err(e) = res {
            let _ = at::unlinkat(work, &tmp, kind == libc::S_IFDIR);
            return Err(e);
        }
        // Copy-up is not a change of the parent: keep its times (as kernel overlayfs does).
        let _ = at::utimensat(up_dir.as_fd(), OsStr::new(""), &at::times_of(&pst));
        let ust = at::fstatat(up_dir.as_fd(), &name)?;
        t.inodes.remap(ust.st_dev, ust.st_ino, n.ino);
        n.copied.store(true, std::sync::atomic::Ordering::Release);
        // A copied-up directory changes its parent's link count; a file changes nothing the
        // parent shows but its ctime, so its cached attributes stay (dropping them costs a
        // GETATTR of the parent on the next path walk: one per chmod of a lower file).
        if kind == libc::S_IFDIR {
            self.inval_attr(parent);
        }
        if inval_self {
            self.inval_attr(ino);
        }
        t.with_index_mut(ns, parent, |ix| {
            if let Some(en) = ix.entries.get_mut(&name) {
                en.top = 0;
                if en.kind == libc::S_IFDIR && en.dir_layers.first() != Some(&0) {
                    en.dir_layers.insert(0, 0);
                }
            }
            Ok(())
        })?;
        if kind == libc::S_IFDIR {
            t.with_index_slot(ns, &n, |slot| {
                if let Some(ix) = slot.as_mut() {
                    if ix.layers.first() != Some(&0) {
                        ix.layers.insert(0, 0);
                    }
                }
            });
        } else if st.st_nlink > 1 {
            let dev = t.layers.dev(e.top).unwrap_or(st.st_dev);
            let others = t.claim_lower_links(ns, ino, dev, st.st_ino);
            self.link_other_names(ns, ino, &name, up_dir.as_fd(), others);
        }
        Ok(())
    }

    /// A lower file with several names known to us is one inode for the kernel, so a write
    /// through any name must show through all of them: link the other known names (`others`,
    /// from [`Tree::claim_lower_links`]) to the new upper copy `name`. Best effort: a name that
    /// fails keeps showing the lower file.
    fn link_other_names(
        &self,
        ns: &mut impl Held,
        ino: Ino,
        name: &OsStr,
        up_dir: BorrowedFd<'_>,
        others: Vec<(Ino, OsString)>,
    ) {
        let t = &self.tree;
        for (p2, n2) in others {
            let mut r = || -> R<()> {
                let e = t.entry(ns, p2, &n2)?.ok_or(Errno::ENOENT)?;
                if !e.visible() || e.ino != ino || t.layers.is_upper(e.top) {
                    return Ok(());
                }
                self.copy_up(ns, p2)?;
                let d2 = t.dirfd(p2, 0)?;
                at::linkat(up_dir, name, d2.as_fd(), &n2)?;
                t.with_index_mut(ns, p2, |ix| {
                    if let Some(en) = ix.entries.get_mut(&n2) {
                        en.top = 0;
                    }
                    Ok(())
                })
            };
            if let Err(e) = r() {
                log::warn!("copy-up of hard link {n2:?}: {e}");
            }
        }
    }

    /// Build the copy of `src_dir/name` (stat `st`) at `work/tmp`.
    fn build_copy(
        &self,
        src_dir: BorrowedFd<'_>,
        name: &OsStr,
        st: &libc::stat,
        work: BorrowedFd<'_>,
        tmp: &OsStr,
    ) -> R<()> {
        let kind = st.st_mode & libc::S_IFMT;
        let perm = st.st_mode & 0o7777;
        match kind {
            libc::S_IFREG => {
                let src = at::openat(src_dir, name, libc::O_RDONLY, 0)?;
                let dst = at::openat(
                    work,
                    tmp,
                    libc::O_CREAT | libc::O_EXCL | libc::O_WRONLY,
                    0o600,
                )?;
                at::copy_data(src.as_fd(), dst.as_fd(), st.st_size as u64)?;
                at::fchownat(dst.as_fd(), OsStr::new(""), st.st_uid, st.st_gid)?;
                at::fchmod(dst.as_fd(), perm)?;
                copy_xattrs_fd(src.as_fd(), dst.as_fd())?;
                at::utimensat(dst.as_fd(), OsStr::new(""), &at::times_of(st))?;
                if self.tree.layers.fsync_copyup() {
                    at::fsync(dst.as_fd(), false)?;
                }
            }
            libc::S_IFDIR => {
                at::mkdirat(work, tmp, 0o700)?;
                at::fchownat(work, tmp, st.st_uid, st.st_gid)?;
                at::fchmodat(work, tmp, perm)?;
                copy_xattrs(src_dir, name, work, tmp)?;
                at::utimensat(work, tmp, &at::times_of(st))?;
            }
            libc::S_IFLNK => {
                let target = at::readlinkat(src_dir, name)?;
                at::symlinkat(OsStr::from_bytes(&target), work, tmp)?;
                at::fchownat(work, tmp, st.st_uid, st.st_gid)?;
                copy_xattrs(src_dir, name, work, tmp)?;
                at::utimensat(work, tmp, &at::times_of(st))?;
            }
            _ => {
                at::mknodat(work, tmp, kind | perm, st.st_rdev)?;
                at::fchownat(work, tmp, st.st_uid, st.st_gid)?;
                at::fchmodat(work, tmp, perm)?;
                copy_xattrs(src_dir, name, work, tmp)?;
                at::utimensat(work, tmp, &at::times_of(st))?;
            }
        }
        Ok(())
    }

    /// Turn the merged directory `ino` into a pure upper, opaque directory holding everything
    /// it shows (recursively), so it can be renamed as one upper object. Each step leaves the
    /// merged view unchanged, so an interruption never exposes a half-moved tree.
    pub(crate) fn materialize(&self, ns: &mut impl Held, ino: Ino, depth: usize) -> R<()> {
        if depth > 512 {
            return Err(Errno::ELOOP);
        }
        let t = &self.tree;
        self.copy_up(ns, ino)?;
        let pure = t.with_index(ns, ino, |ix| ix.layers.len() == 1)?;
        if pure {
            return Ok(());
        }
        let entries: Vec<_> = t.with_index(ns, ino, |ix| {
            ix.entries
                .iter()
                .filter(|(_, e)| e.visible())
                .map(|(n, e)| (n.clone(), e.clone()))
                .collect()
        })?;
        for (name, e) in entries {
            if e.kind != libc::S_IFDIR && t.layers.is_upper(e.top) {
                continue;
            }
            let child = t.remember(ino, &name, &e);
            let r = if e.kind == libc::S_IFDIR {
                self.materialize(ns, child.ino, depth + 1)
            } else {
                self.copy_up(ns, child.ino)
            };
            t.forget(child.ino, 1);
            match r {
                Ok(()) | Err(Errno::ENOENT) => {}
                Err(err) => return Err(err),
            }
        }
        let up = t.dirfd(ino, 0)?;
        let flavour = t.layers.flavour();
        t.with_index_mut(ns, ino, |ix| {
            if ix.entries.values().any(|e| e.visible() && e.top != 0) {
                return Err(Errno::EAGAIN);
            }
            let whiteouts: Vec<_> = ix
                .entries
                .iter()
                .filter(|(_, e)| !e.visible())
                .map(|(n, _)| n.clone())
                .collect();
            for w in &whiteouts {
                match at::unlinkat(up.as_fd(), w, false) {
                    Ok(()) | Err(Errno::ENOENT) => {}
                    Err(e) => return Err(e),
                }
                ix.del(w);
            }
            format::set_opaque(up.as_fd(), OsStr::new(""), flavour)?;
            // An opaque dir has no lower content: a kernel-written redirect means nothing now.
            format::clear_redirect(up.as_fd(), OsStr::new(""))?;
            ix.layers = vec![0];
            for e in ix.entries.values_mut() {
                e.lower = false;
                if e.kind == libc::S_IFDIR {
                    e.dir_layers = vec![0];
                }
            }
            Ok(())
        })?;
        let n = t.inodes.get(ino)?;
        n.redirects.lock().clear();
        t.dirfds.forget_dir(ino);
        if let Some((p, name)) = n.primary() {
            t.with_index_mut(ns, p, |ix| {
                if let Some(e) = ix.entries.get_mut(&name) {
                    e.dir_layers = vec![0];
                }
                Ok(())
            })?;
        }
        Ok(())
    }
}
