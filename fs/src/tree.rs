//! The merged tree: the layer stack, the inode table and the dirfd cache together, and how a
//! merged name is resolved through them (directory indexes, locations, attributes).
//!
//! Lock order (outer first); the types make the other order hard to write:
//! 1. the namespace lock ([`Namespace`]): shared by every operation, exclusive for directory
//!    renames. Its guard is a token ([`Held`]) the functions below take.
//! 2. a node's `copyup` mutex: taken only by copy-up, which takes `&mut` of the token.
//! 3. directory index locks (`Node::dir`): [`Tree::with_index`] (a brief read; takes `&` of the
//!    token) and [`Tree::with_index_mut`] (takes `&mut` of the token, so its closure can neither
//!    start a copy-up nor lock another index); two at once only through [`Tree::lock_pair`],
//!    in ino order, with the namespace lock held exclusive.
//! 4. leaf locks: the inode table ([`InodeTable`]), the dirfd cache ([`DirFds`]), the handle
//!    tables, a node's `names`/`redirects`/`last_open`. Taken and released inside their
//!    types' methods, never held across I/O.
//!
//! Indexes are never invalidated wholesale: lower layers do not change under a mount and every
//! change to the upper goes through us and updates the indexes it touches in place. A removed
//! directory's index is dropped (`None`) and rebuilt if the node is used again.

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::sync::Arc;

use nix::errno::Errno;
use parking_lot::RwLockWriteGuard;

use crate::at::{self, R};
use crate::dirfds::DirFds;
use crate::ids::{Ino, LayerId};
use crate::index::{self, DirIndex, Entry};
use crate::inodes::{InodeTable, Node};
use crate::layers::LayerStack;
use crate::ns::{Exclusive, Held, Namespace};

/// Attributes of a merged object: the backing `stat` with our inode number.
#[derive(Clone, Copy)]
pub struct Attr {
    pub ino: Ino,
    pub st: libc::stat,
}

/// Where a merged object lives: its layer, the merged directory holding it (`None` for the
/// root itself) and its name there (empty for the root).
#[derive(Clone, Debug)]
pub(crate) struct Loc {
    pub layer: LayerId,
    pub parent: Option<Ino>,
    pub name: OsString,
}

pub(crate) struct Tree {
    pub layers: LayerStack,
    pub inodes: InodeTable,
    pub dirfds: DirFds,
    pub ns: Namespace,
}

/// Two directory indexes locked for a rename: the old parent's and the new parent's (one lock
/// when they are the same directory).
pub(crate) struct PairGuard<'a> {
    first: RwLockWriteGuard<'a, Option<DirIndex>>,
    second: Option<RwLockWriteGuard<'a, Option<DirIndex>>>,
    /// The old parent is the second lock.
    flip: bool,
}

impl PairGuard<'_> {
    fn slot(&mut self, second: bool) -> R<&mut DirIndex> {
        let g = match (second, &mut self.second) {
            (true, Some(g)) => g,
            _ => &mut self.first,
        };
        g.as_mut().ok_or(Errno::EAGAIN)
    }

    /// The old parent's index (renamed from).
    pub fn from(&mut self) -> R<&mut DirIndex> {
        self.slot(self.flip)
    }

    /// The new parent's index (renamed to).
    pub fn to(&mut self) -> R<&mut DirIndex> {
        self.slot(!self.flip)
    }
}

impl Tree {
    /// An `O_PATH` fd of merged directory `ino` in layer `l` (cached).
    pub fn dirfd(&self, ino: Ino, l: LayerId) -> R<Arc<OwnedFd>> {
        if let Some(fd) = self.dirfds.get(ino, l) {
            return Ok(fd);
        }
        let path = self.layer_path(ino, l)?;
        let fd = Arc::new(at::open_beneath(
            self.layers.fd(l)?,
            &path,
            libc::O_PATH | libc::O_DIRECTORY,
        )?);
        self.dirfds.insert(ino, l, fd.clone());
        Ok(fd)
    }

    /// A fresh fd of directory `ino` in layer `l`, opened for reading its entries. When no fd of
    /// it is cached, this one (one open instead of an O_PATH open plus a reopen) is cached too
    /// once the caller is done listing: `*at()` calls do not care about its position, and a
    /// listing always reopens a cached fd.
    fn open_dir_for_listing(&self, ino: Ino, l: LayerId) -> R<(Arc<OwnedFd>, bool)> {
        const FLAGS: i32 = libc::O_RDONLY | libc::O_DIRECTORY;
        if let Some(d) = self.dirfds.get(ino, l) {
            return Ok((Arc::new(at::open_beneath(d.as_fd(), b"", FLAGS)?), false));
        }
        let path = self.layer_path(ino, l)?;
        let fd = at::open_beneath(self.layers.fd(l)?, &path, FLAGS)?;
        Ok((Arc::new(fd), true))
    }

    /// Where directory-or-file node `ino` lives in layer `l` (relative to the layer root, empty
    /// for the root): its merged path, except below a redirect (kernel overlayfs
    /// `redirect_dir`): an absolute redirect names the path from the layer root, a relative one
    /// a name in the parent's directory of that layer.
    pub fn layer_path(&self, ino: Ino, l: LayerId) -> R<Vec<u8>> {
        let mut comps: Vec<Vec<u8>> = Vec::new();
        let mut cur = ino;
        while cur != Ino::ROOT {
            let n = self.inodes.get(cur)?;
            let (p, name) = n.primary().ok_or(Errno::ENOENT)?;
            let redirect = n
                .redirects
                .lock()
                .iter()
                .rev()
                .find(|(holder, _)| *holder < l)
                .map(|(_, r)| r.clone());
            match redirect {
                Some(r) if r.first() == Some(&b'/') => {
                    comps.push(r[1..].to_vec());
                    break;
                }
                Some(r) => comps.push(r),
                None => comps.push(name.as_bytes().to_vec()),
            }
            cur = p;
            if comps.len() > 4096 {
                return Err(Errno::ELOOP);
            }
        }
        let mut out = Vec::new();
        for c in comps.iter().rev().filter(|c| !c.is_empty()) {
            if !out.is_empty() {
                out.push(b'/');
            }
            out.extend_from_slice(c);
        }
        Ok(out)
    }

    /// Candidate layers of the directory node `ino` (see `index` module doc).
    fn candidate_layers(&self, ns: &impl Held, ino: Ino) -> R<Vec<LayerId>> {
        if ino == Ino::ROOT {
            return Ok(self.layers.ids().collect());
        }
        let n = self.inodes.get(ino)?;
        let (p, name) = n.primary().ok_or(Errno::ENOENT)?;
        let e = self.entry(ns, p, &name)?.ok_or(Errno::ENOENT)?;
        if e.kind != libc::S_IFDIR {
            return Err(Errno::ENOTDIR);
        }
        Ok(e.dir_layers)
    }

    /// The directory node `ino`.
    fn dir_node(&self, ino: Ino) -> R<Arc<Node>> {
        let n = self.inodes.get(ino)?;
        if !n.is_dir() {
            return Err(Errno::ENOTDIR);
        }
        Ok(n)
    }

    /// Run `f` on the index of directory `ino`, building it if needed.
    pub fn with_index<T>(&self, ns: &impl Held, ino: Ino, f: impl FnOnce(&DirIndex) -> T) -> R<T> {
        let n = self.dir_node(ino)?;
        {
            let g = n.dir.read();
            if let Some(ix) = g.as_ref() {
                return Ok(f(ix));
            }
        }
        self.build_missing_index(ns, &n)?;
        let g = n.dir.read();
        g.as_ref().map(f).ok_or(Errno::EIO)
    }

    /// Run `f` with the index of `ino` locked for writing (built first if needed).
    pub fn with_index_mut<T>(
        &self,
        ns: &mut impl Held,
        ino: Ino,
        f: impl FnOnce(&mut DirIndex) -> R<T>,
    ) -> R<T> {
        let n = self.dir_node(ino)?;
        loop {
            {
                let mut g = n.dir.write();
                if let Some(ix) = g.as_mut() {
                    return f(ix);
                }
            }
            self.build_missing_index(&*ns, &n)?;
        }
    }

    /// The index slot of node `n` itself, locked for writing (to drop or adjust it).
    pub fn with_index_slot<T>(
        &self,
        _ns: &mut impl Held,
        n: &Node,
        f: impl FnOnce(&mut Option<DirIndex>) -> T,
    ) -> T {
        f(&mut n.dir.write())
    }

    /// Lock the indexes of directories `old` and `new` (built first if needed) for a rename.
    pub fn lock_pair<'a>(
        &'a self,
        ns: &'a mut Exclusive<'_>,
        old: &'a Node,
        new: &'a Node,
    ) -> R<PairGuard<'a>> {
        for n in [old, new] {
            if !n.is_dir() {
                return Err(Errno::ENOTDIR);
            }
            if n.dir.read().is_none() {
                self.build_missing_index(&*ns, n)?;
            }
        }
        let flip = old.ino > new.ino;
        let (a, b) = if flip { (new, old) } else { (old, new) };
        let first = a.dir.write();
        let second = (a.ino != b.ino).then(|| b.dir.write());
        Ok(PairGuard {
            first,
            second,
            flip,
        })
    }

    /// Build the index of directory `n` (no index lock held while reading the layers) and
    /// install it unless another thread was first.
    fn build_missing_index(&self, ns: &impl Held, n: &Node) -> R<()> {
        loop {
            // A hard-link split (`claim_lower_links`) renumbers the lower names of an inode in
            // the indexes it finds; one built meanwhile could install the old number after its
            // pass, so it is built again.
            let epoch = self.inodes.renumbered();
            let cand = self.candidate_layers(ns, n.ino)?;
            let ix = self.build_index(n.ino, &cand)?;
            let mut g = n.dir.write();
            if g.is_some() {
                return Ok(());
            }
            if self.inodes.renumbered() == epoch {
                *g = Some(ix);
                return Ok(());
            }
        }
    }

    fn build_index(&self, ino: Ino, cand: &[LayerId]) -> R<DirIndex> {
        let mut entries = HashMap::new();
        let mut layers = Vec::new();
        let mut cand = cand.to_vec();
        let node = if ino == Ino::ROOT {
            None
        } else {
            self.inodes.get(ino).ok()
        };
        let mut i = 0;
        while i < cand.len() {
            let l = cand[i];
            i += 1;
            let (fd, fresh) = match self.open_dir_for_listing(ino, l) {
                Ok(x) => x,
                Err(Errno::ENOENT) | Err(Errno::ENOTDIR) if !layers.is_empty() => continue,
                Err(e) => return Err(e),
            };
            let ld = index::read_layer_dir(fd.as_fd())?;
            if fresh {
                self.dirfds.insert(ino, l, fd);
            }
            let opaque = ld.opaque;
            let redirect = ld.redirect.clone();
            layers.push(l);
            index::merge_layer(&mut entries, l, self.layers.is_upper(l), ld, |l, i| {
                self.inodes.number(self.layers.dev(l).unwrap_or(0), i)
            });
            if opaque {
                break;
            }
            if let (Some(r), Some(n)) = (redirect, &node) {
                // The layers below hold this directory at the redirect: find them anew. (On-disk
                // redirects only go away through `materialize`, which forgets them.)
                let new = {
                    let mut rs = n.redirects.lock();
                    let new = !rs.iter().any(|(h, _)| *h == l);
                    if new {
                        rs.push((l, r));
                        rs.sort_by_key(|(h, _)| *h);
                    }
                    new
                };
                if new {
                    // Fds of the layers below, if any were opened by name, are the wrong dirs.
                    self.dirfds.forget_below(ino, l);
                }
                cand.truncate(i);
                cand.extend(self.redirected_layers(ino, l)?);
            }
        }
        index::finish(&mut entries);
        Ok(DirIndex::new(layers, entries))
    }

    /// The layers below `holder` in which directory `ino` (redirected at `holder`) exists, top
    /// first, as kernel overlayfs looks them up: a missing path skips a layer; a whiteout or
    /// non-directory on the way (or an escape from the layer) ends the search.
    fn redirected_layers(&self, ino: Ino, holder: LayerId) -> R<Vec<LayerId>> {
        let mut out = Vec::new();
        for l in holder + 1..self.layers.len() {
            let path = self.layer_path(ino, l)?;
            match at::open_beneath(self.layers.fd(l)?, &path, libc::O_PATH | libc::O_DIRECTORY) {
                Ok(_) => out.push(l),
                Err(Errno::ENOENT) => continue,
                Err(_) => break,
            }
        }
        Ok(out)
    }

    /// The index entry for `name` in directory `parent` (whiteouts included).
    pub fn entry(&self, ns: &impl Held, parent: Ino, name: &OsStr) -> R<Option<Entry>> {
        self.with_index(ns, parent, |ix| ix.get(name).cloned())
    }

    /// The visible entry for `name` in directory `parent`, or ENOENT.
    pub fn visible_entry(&self, ns: &impl Held, parent: Ino, name: &OsStr) -> R<Entry> {
        self.entry(ns, parent, name)?
            .filter(Entry::visible)
            .ok_or(Errno::ENOENT)
    }

    /// Where node `ino` lives now.
    pub fn locate(&self, ns: &impl Held, ino: Ino) -> R<Loc> {
        if ino == Ino::ROOT {
            let l = self.with_index(ns, Ino::ROOT, |ix| ix.layers.first().copied())?;
            return Ok(Loc {
                layer: l.ok_or(Errno::EIO)?,
                parent: None,
                name: OsString::new(),
            });
        }
        let n = self.inodes.get(ino)?;
        let (p, name, e) = self.live_name(ns, &n)?;
        Ok(Loc {
            layer: e.top,
            parent: Some(p),
            name,
        })
    }

    /// The first of node `n`'s merged names that still shows `n`, with its index entry. A
    /// node's name list can hold a name that no longer shows it: a lookup that read the entry
    /// just before another thread unlinked the name remembers it just after (the kernel holds
    /// the node through its other names); such names are skipped, never trusted.
    pub fn live_name(&self, ns: &impl Held, n: &Node) -> R<(Ino, OsString, Entry)> {
        let shows = |p: Ino, name: &OsStr| match self.entry(ns, p, name) {
            Ok(Some(e)) if e.visible() && e.ino == n.ino => Ok(Some(e)),
            Ok(_) => Ok(None),
            Err(err) => Err(err),
        };
        // The primary name first, without copying the list: it is the live one but for a race.
        let (p, name) = n.primary().ok_or(Errno::ENOENT)?;
        let mut first_err = match shows(p, &name) {
            Ok(Some(e)) => return Ok((p, name, e)),
            Ok(None) => Errno::ENOENT,
            Err(err) => err,
        };
        let rest: Vec<_> = n.names.read().iter().skip(1).cloned().collect();
        for (p, name) in rest {
            match shows(p, &name) {
                Ok(Some(e)) => return Ok((p, name, e)),
                Ok(None) => {}
                Err(err) if first_err == Errno::ENOENT => first_err = err,
                Err(_) => {}
            }
        }
        Err(first_err)
    }

    /// An `O_PATH` fd of the directory holding `loc` in its layer (the root itself for the root).
    pub fn loc_dir(&self, loc: &Loc) -> R<Arc<OwnedFd>> {
        self.dirfd(loc.parent.unwrap_or(Ino::ROOT), loc.layer)
    }

    pub fn stat_loc(&self, loc: &Loc) -> R<libc::stat> {
        let d = self.loc_dir(loc)?;
        at::fstatat(d.as_fd(), &loc.name)
    }

    /// Attributes of `ino` as the merged view shows them.
    pub fn attr_of(&self, ns: &impl Held, ino: Ino) -> R<Attr> {
        let loc = self.locate(ns, ino)?;
        let st = self.stat_loc(&loc)?;
        Ok(self.fix_attr(ns, ino, st))
    }

    /// Attributes of the object `e` found as `name` in `parent` (no second index probe).
    pub fn attr_at(&self, ns: &impl Held, parent: Ino, name: &OsStr, e: &Entry) -> R<Attr> {
        let d = self.dirfd(parent, e.top)?;
        let st = at::fstatat(d.as_fd(), name)?;
        Ok(self.fix_attr_known(ns, e.ino, st, Some(e)))
    }

    pub fn fix_attr(&self, ns: &impl Held, ino: Ino, st: libc::stat) -> Attr {
        self.fix_attr_known(ns, ino, st, None)
    }

    /// [`Tree::fix_attr`], with the object's entry in its parent when the caller has it.
    fn fix_attr_known(
        &self,
        ns: &impl Held,
        ino: Ino,
        mut st: libc::stat,
        e: Option<&Entry>,
    ) -> Attr {
        st.st_ino = self.inodes.st_ino(ino);
        if st.st_mode & libc::S_IFMT == libc::S_IFDIR && self.dir_merged(ns, ino, e) {
            // Kernel overlayfs reports 1 for merged directories (counting the subdirectories
            // of every layer is not worth it; `find` and friends accept 1) and the real count
            // of the one directory otherwise.
            st.st_nlink = 1;
        }
        Attr { ino, st }
    }

    /// Does directory `ino` merge more than one layer (its contributing layers, see `index`)?
    /// Known exactly once its index is built; before that (a `stat` of a directory nobody
    /// listed yet) from its candidate layers in the parent's index (`e`, when the caller has
    /// it) and the opaque marks of the top one, without reading the directory. Unknown counts
    /// as merged.
    fn dir_merged(&self, ns: &impl Held, ino: Ino, e: Option<&Entry>) -> bool {
        let Ok(n) = self.inodes.get(ino) else {
            return true;
        };
        if let Some(merged) = n.dir.read().as_ref().map(|ix| ix.layers.len() > 1) {
            return merged;
        }
        let found;
        let e = match e {
            Some(e) => e,
            None => {
                let Some((p, name)) = n.primary() else {
                    return true;
                };
                let Ok(Some(e)) = self.entry(ns, p, &name) else {
                    return true;
                };
                found = e;
                &found
            }
        };
        match e.dir_layers.as_slice() {
            [] | [_] => false,
            [top, ..] => !self
                .dirfd(ino, *top)
                .is_ok_and(|d| crate::format::read_dir_marks(d.as_fd(), true).opaque),
        }
    }

    /// Register one kernel lookup of the object `e` reached as `(parent, name)`.
    pub fn remember(&self, parent: Ino, name: &OsStr, e: &Entry) -> Arc<Node> {
        self.inodes.remember(parent, name, e.ino, e.kind)
    }

    /// Drop `nlookup` kernel lookups of `ino` (and its cached fds with its last one).
    pub fn forget(&self, ino: Ino, nlookup: u64) {
        if let Some(n) = self.inodes.forget(ino, nlookup) {
            if n.is_dir() {
                self.dirfds.forget_dir(ino);
            }
        }
    }

    /// After copy-up of one name of a hard-linked lower file (inode `ino`, `(dev, st_ino)` in
    /// its lower layer), decide for every other lower name of that inode in one step per
    /// directory, under the directory's index lock (the lock a lookup remembers a name under):
    /// - a name the kernel knows as `ino` (in the node's names) stays `ino`; it is returned, to
    ///   be linked to the new copy (the hard link is kept, as with kernel overlayfs `index=on`);
    /// - any other name still shows the lower file, a different object from now on, and gets a
    ///   fresh inode number: in every directory index built so far, and through the remap for
    ///   indexes built later. Sharing `ino` would make the kernel treat them as one inode whose
    ///   link count is the copy's (an unlink of the lower name then takes it to 0, and a later
    ///   link() of the copy fails with ENOENT).
    ///
    /// Deciding both from one look at each index is what makes it race-free: a lookup that
    /// remembers a name before the look is linked, one after sees the fresh number.
    pub fn claim_lower_links(
        &self,
        _ns: &mut impl Held,
        ino: Ino,
        dev: u64,
        st_ino: u64,
    ) -> Vec<(Ino, OsString)> {
        let node = self.inodes.get(ino).ok();
        let known = |p: Ino, name: &OsStr| {
            node.as_ref()
                .is_some_and(|n| n.names.read().iter().any(|(q, x)| *q == p && x == name))
        };
        let fresh = self.inodes.renumber(dev, st_ino);
        let mut linked = Vec::new();
        for d in self.inodes.dirs() {
            let mut g = d.dir.write();
            let Some(ix) = g.as_mut() else { continue };
            let mut hit = false;
            for (name, e) in ix.entries.iter_mut() {
                if e.ino != ino || self.layers.is_upper(e.top) {
                    continue;
                }
                if known(d.ino, name) {
                    linked.push((d.ino, name.clone()));
                } else {
                    e.ino = fresh;
                    hit = true;
                }
            }
            // Listings the kernel cached show the old number: new opens read from us.
            ix.changed |= hit;
        }
        linked
    }
}
