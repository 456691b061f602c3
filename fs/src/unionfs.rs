//! The filesystem core: [`Fs`], the union of its parts, and the read-only operations (lookup,
//! getattr, readlink, readdir, statfs).
//!
//! `Fs` is made of parts, each a type with its own locks (the order between them is in `tree`):
//! - the layer stack (`LayerStack`, `layers`): fixed at mount, no lock;
//! - the inode table (`InodeTable`, `inodes`): `Ino -> Node`, and inode numbering;
//! - the dirfd cache (`DirFds`, `dirfds`): `O_PATH` fds of merged directories per layer;
//! - the namespace lock (`ns`), which the three above share in `Tree`, with the directory
//!   indexes kept in the nodes;
//! - the handle tables (`Handles`): open files and directories.
//!
//! The operations are layered, each module using only those before it: `unionfs` (this one:
//! reading), `copyup`, `ops` (namespace changes and setattr), `file` (open files, data,
//! xattrs).

use std::ffi::{OsStr, OsString};
use std::os::fd::{AsFd, OwnedFd};
use std::sync::{Arc, OnceLock};

use nix::errno::Errno;

use crate::at::{self, R};
use crate::dirfds::DirFds;
use crate::format::Flavour;
use crate::handles::Handles;
pub use crate::ids::Ino;
use crate::ids::{Fh, LayerId};
use crate::inodes::InodeTable;
use crate::layers::LayerStack;
use crate::ns::Namespace;
pub use crate::tree::Attr;
use crate::tree::Tree;

/// The root directory's inode.
pub const ROOT_INO: Ino = Ino::ROOT;

/// A directory listing: (name, ino, `S_IFMT` kind).
pub type DirList = Vec<(OsString, Ino, u32)>;

/// One directory entry as readdir returns it; `off` is the cookie to resume after it.
#[derive(Clone, Debug)]
pub struct DirEnt {
    pub name: OsString,
    pub ino: Ino,
    pub kind: u32,
    pub off: u64,
}

impl DirEnt {
    fn new(name: &str, ino: Ino, kind: u32, off: u64) -> DirEnt {
        DirEnt {
            name: OsString::from(name),
            ino,
            kind,
            off,
        }
    }
}

/// Who is asking (from the FUSE request header).
#[derive(Clone, Copy, Debug)]
pub struct Ctx {
    pub uid: u32,
    pub gid: u32,
    pub pid: u32,
}

pub struct Fs {
    pub(crate) tree: Tree,
    pub(crate) handles: Handles,
    /// Tells the kernel to drop its cached attributes of an inode (set by the FUSE adapter).
    notify: OnceLock<Box<dyn Fn(Ino) + Send + Sync>>,
    pub(crate) lower_data: Option<Arc<dyn LowerData>>,
}

/// Configuration of the core.
pub struct FsConfig {
    pub lowers: Vec<OwnedFd>,
    pub upper: Option<OwnedFd>,
    pub work: Option<OwnedFd>,
    pub fsync_copyup: bool,
    /// The form overlay xattrs are written in (see [`Flavour`]).
    pub flavour: Flavour,
    /// Supplies the data of lower files that are only placeholders (lazily fetched layers).
    pub lower_data: Option<Arc<dyn LowerData>>,
}

/// The data of some lower files arrives after the mount (a lazily pulled layer): such a file is
/// already in its layer dir with its final metadata and size, but its bytes are written later.
/// The filesystem asks before it reads any byte of a lower regular file: for the whole file
/// ([`LowerData::ensure`]) before it copies one up or opens a small one (under
/// [`crate::file::SMALL_FILE`] bytes, which the FUSE adapter pushes whole into the page cache), and
/// for just the range of each READ ([`LowerData::ensure_range`]) of a larger one that was still
/// [`LowerData::pending`] at its open. Such an open is never handed to the kernel (passthrough)
/// nor keeps the kernel's cached pages. The data must be in place when a call returns. Called
/// from several serving threads at once.
pub trait LowerData: Send + Sync {
    /// Make sure the data of the regular file with backing inode number `ino` in lower layer
    /// `lower` (0 = the top lower layer) is in place. An error (EIO) fails the open or copy-up.
    fn ensure(&self, lower: usize, ino: u64) -> Result<(), Errno>;
    /// Make sure bytes `[off, off + len)` of that file are in place (clamped to its size). An
    /// error (EIO) fails the read.
    fn ensure_range(&self, lower: usize, ino: u64, off: u64, len: u64) -> Result<(), Errno>;
    /// Whether some of that file's data is still to come.
    fn pending(&self, lower: usize, ino: u64) -> bool;
}

impl Fs {
    pub fn new(cfg: FsConfig) -> R<Fs> {
        let layers = LayerStack::new(
            cfg.upper,
            cfg.lowers,
            cfg.work,
            cfg.fsync_copyup,
            cfg.flavour,
        )?;
        // Kernel overlayfs shows the top layer's root directory's own number for the root.
        let root_st_ino = at::fstat(layers.fd(0)?)?.st_ino;
        let inodes = InodeTable::new(layers.same_dev(), root_st_ino);
        Ok(Fs {
            tree: Tree {
                layers,
                inodes,
                dirfds: DirFds::default(),
                ns: Namespace::default(),
            },
            handles: Handles::default(),
            notify: OnceLock::new(),
            lower_data: cfg.lower_data,
        })
    }

    /// Before reading lower file `(layer l, st_ino)`: have its data fetched if it is lazy.
    pub(crate) fn ensure_lower_data(&self, l: LayerId, st_ino: u64) -> R<()> {
        match &self.lower_data {
            Some(d) if !self.tree.layers.is_upper(l) => {
                let upper = usize::from(self.tree.layers.has_upper());
                d.ensure(l as usize - upper, st_ino)
            }
            _ => Ok(()),
        }
    }

    /// The lower index of layer `l` for [`LowerData`], when `l` is a lower layer and some of
    /// the file `st_ino` there is still to come.
    pub(crate) fn lazy_lower(&self, l: LayerId, st_ino: u64) -> Option<(usize, u64)> {
        match &self.lower_data {
            Some(d) if !self.tree.layers.is_upper(l) => {
                let lower = l as usize - usize::from(self.tree.layers.has_upper());
                d.pending(lower, st_ino).then_some((lower, st_ino))
            }
            _ => None,
        }
    }

    /// Install the callback that invalidates the kernel's cached attributes of an inode.
    pub fn set_attr_invalidator(&self, f: Box<dyn Fn(Ino) + Send + Sync>) {
        let _ = self.notify.set(f);
    }

    /// The attributes of `ino` changed behind the kernel's back (e.g. a copy-up touched it).
    pub(crate) fn inval_attr(&self, ino: Ino) {
        if let Some(f) = self.notify.get() {
            f(ino);
        }
    }

    /// Some lower files may still be fetched (a lazily pulled layer, see [`LowerData`]).
    pub(crate) fn has_lazy_lower(&self) -> bool {
        self.lower_data.is_some()
    }

    pub fn read_only(&self) -> bool {
        !self.tree.layers.has_upper()
    }

    /// The form overlay xattrs are written in.
    pub fn flavour(&self) -> Flavour {
        self.tree.layers.flavour()
    }

    /// The `st_ino` users see for node `ino` (the root's differs from its node id).
    pub fn st_ino(&self, ino: Ino) -> u64 {
        self.tree.inodes.st_ino(ino)
    }

    /// Look `name` up in `parent`; `None` when it does not exist (a negative entry).
    pub fn lookup(&self, parent: Ino, name: &OsStr) -> R<Option<Attr>> {
        let ns = self.tree.ns.shared();
        let t = &self.tree;
        if name.len() > 255 {
            return Err(Errno::ENAMETOOLONG);
        }
        if name == "." || name == ".." {
            // Only sent for exported handles (FUSE_EXPORT_SUPPORT): the dir itself or its parent.
            let ino = if name == "." || parent == Ino::ROOT {
                parent
            } else {
                t.inodes
                    .get(parent)?
                    .primary()
                    .map(|p| p.0)
                    .ok_or(Errno::ENOENT)?
            };
            let n = t.inodes.get(ino)?;
            n.lookups.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            return match t.attr_of(&ns, ino) {
                Ok(a) => Ok(Some(a)),
                Err(err) => {
                    t.forget(ino, 1);
                    Err(err)
                }
            };
        }
        // Remembered under the index's read lock: an unlink of the name (index write lock, then
        // the name dropped from the node) is then wholly before or wholly after this lookup.
        let found = t.with_index(&ns, parent, |ix| {
            let e = ix.get(name).filter(|e| e.visible())?.clone();
            let n = t.remember(parent, name, &e);
            Some((e, n))
        })?;
        let Some((e, n)) = found else {
            return Ok(None);
        };
        match t.attr_at(&ns, parent, name, &e) {
            Ok(a) => Ok(Some(a)),
            Err(err) => {
                t.forget(n.ino, 1);
                Err(err)
            }
        }
    }

    pub fn forget(&self, ino: Ino, nlookup: u64) {
        self.tree.forget(ino, nlookup)
    }

    /// Number of nodes the kernel holds (for tests and stats).
    pub fn node_count(&self) -> usize {
        self.tree.inodes.count()
    }

    pub fn getattr(&self, ino: Ino, fh: Option<Fh>) -> R<Attr> {
        let ns = self.tree.ns.shared();
        let t = &self.tree;
        let n = t.inodes.get(ino)?;
        if let Some(h) = fh.and_then(|fh| self.handles.get(fh)) {
            let mut st = at::fstat(h.fd().as_fd())?;
            if n.unlinked() {
                st.st_nlink = 0;
            }
            return Ok(t.fix_attr(&ns, ino, st));
        }
        if n.unlinked() {
            // Unlinked but still open somewhere.
            let fd = n.last_open.lock().upgrade().ok_or(Errno::ENOENT)?;
            let mut st = at::fstat(fd.as_fd())?;
            st.st_nlink = 0;
            return Ok(t.fix_attr(&ns, ino, st));
        }
        t.attr_of(&ns, ino)
    }

    pub fn readlink(&self, ino: Ino) -> R<Vec<u8>> {
        let ns = self.tree.ns.shared();
        let loc = self.tree.locate(&ns, ino)?;
        let d = self.tree.loc_dir(&loc)?;
        at::readlinkat(d.as_fd(), &loc.name)
    }

    /// May the kernel cache the listing of directory `ino` (FOPEN_CACHE_DIR)? Only while no
    /// name was added to or removed from it through this mount. The kernel's listing cache is
    /// not safe under concurrent change: a READDIR answered before a rename can land in the
    /// cache after another opener recorded the directory's post-rename version, and that
    /// stale listing is then served as current (seen as a renamed-away name still listed).
    /// A directory that never changed has nothing to go stale; once it changes, new opens read
    /// it from us.
    pub fn listing_cacheable(&self, ino: Ino) -> bool {
        self.read_only()
            || self
                .tree
                .inodes
                .get(ino)
                .is_ok_and(|n| !n.dir.read().as_ref().is_some_and(|ix| ix.changed))
    }

    /// Up to `max` entries of directory `ino` after readdir cookie `offset` (0 = from the
    /// start), in the directory's stable order: `.` (cookie 1), `..` (2), then the entries.
    pub fn read_dir(&self, ino: Ino, offset: u64, max: usize) -> R<Vec<DirEnt>> {
        let ns = self.tree.ns.shared();
        let mut out = Vec::new();
        if offset < 2 {
            let parent = if ino == Ino::ROOT {
                Ino::ROOT
            } else {
                self.tree
                    .inodes
                    .get(ino)?
                    .primary()
                    .map(|p| p.0)
                    .unwrap_or(Ino::ROOT)
            };
            if offset == 0 {
                out.push(DirEnt::new(".", ino, libc::S_IFDIR, 1));
            }
            out.push(DirEnt::new("..", parent, libc::S_IFDIR, 2));
        }
        self.tree.with_index(&ns, ino, |ix| {
            let from = offset.max(2) + 1;
            for (&seq, name) in ix.order.range(from..) {
                if out.len() >= max {
                    break;
                }
                if let Some(e) = ix.entries.get(name).filter(|e| e.visible()) {
                    out.push(DirEnt {
                        name: name.clone(),
                        ino: e.ino,
                        kind: e.kind,
                        off: seq,
                    });
                }
            }
        })?;
        Ok(out)
    }

    /// The whole merged directory as (name, ino, kind), `.` and `..` first.
    pub fn list_dir(&self, ino: Ino) -> R<DirList> {
        Ok(self
            .read_dir(ino, 0, usize::MAX)?
            .into_iter()
            .map(|d| (d.name, d.ino, d.kind))
            .collect())
    }

    pub fn statfs(&self) -> R<libc::statvfs> {
        at::fstatvfs(self.tree.layers.fd(0)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::*;

    #[test]
    fn lookup_across_layers_top_wins_and_whiteouts_hide() {
        let s = Stack::new(2);
        s.write(1, "a", "lower1");
        s.write(2, "a", "lower2");
        s.write(2, "b", "b2");
        s.write(2, "c", "c2");
        s.whiteout(1, "c");
        s.mkdir(2, "d");
        s.write(2, "d/x", "x");
        let fs = s.fs();
        let a = fs.lookup(ROOT_INO, OsStr::new("a")).unwrap().unwrap();
        assert_eq!(a.st.st_size, 6);
        assert!(fs.lookup(ROOT_INO, OsStr::new("b")).unwrap().is_some());
        assert!(fs.lookup(ROOT_INO, OsStr::new("c")).unwrap().is_none());
        assert!(fs.lookup(ROOT_INO, OsStr::new("zz")).unwrap().is_none());
        let d = fs.lookup(ROOT_INO, OsStr::new("d")).unwrap().unwrap();
        let x = fs.lookup(d.ino, OsStr::new("x")).unwrap().unwrap();
        assert_eq!(x.st.st_size, 1);
        let names: Vec<_> = fs
            .list_dir(ROOT_INO)
            .unwrap()
            .into_iter()
            .map(|e| e.0.into_string().unwrap())
            .collect();
        assert_eq!(names, vec![".", "..", "a", "b", "d"]);
        // Stable inode numbers: same on a second lookup, distinct across files.
        let a2 = fs.lookup(ROOT_INO, OsStr::new("a")).unwrap().unwrap();
        assert_eq!(a.ino, a2.ino);
        assert_ne!(a.ino, x.ino);
    }

    #[test]
    fn opaque_dir_hides_lower_contents() {
        let s = Stack::new(2);
        s.mkdir(2, "d");
        s.write(2, "d/old", "o");
        s.mkdir(1, "d");
        s.write(1, "d/new", "n");
        s.opaque(1, "d");
        let fs = s.fs();
        let d = fs.lookup(ROOT_INO, OsStr::new("d")).unwrap().unwrap();
        assert!(fs.lookup(d.ino, OsStr::new("old")).unwrap().is_none());
        assert!(fs.lookup(d.ino, OsStr::new("new")).unwrap().is_some());
    }

    #[test]
    fn lookup_of_dot_and_dotdot() {
        let s = Stack::new(1);
        s.mkdir(1, "d/e");
        let fs = s.fs();
        let d = fs.lookup(ROOT_INO, OsStr::new("d")).unwrap().unwrap();
        let e = fs.lookup(d.ino, OsStr::new("e")).unwrap().unwrap();
        assert_eq!(
            fs.lookup(e.ino, OsStr::new("..")).unwrap().unwrap().ino,
            d.ino
        );
        assert_eq!(
            fs.lookup(e.ino, OsStr::new(".")).unwrap().unwrap().ino,
            e.ino
        );
        assert_eq!(
            fs.lookup(d.ino, OsStr::new("..")).unwrap().unwrap().ino,
            ROOT_INO
        );
    }

    #[test]
    fn forget_drops_nodes() {
        let s = Stack::new(1);
        s.write(1, "f", "x");
        let fs = s.fs();
        let a = fs.lookup(ROOT_INO, OsStr::new("f")).unwrap().unwrap();
        fs.lookup(ROOT_INO, OsStr::new("f")).unwrap().unwrap();
        assert_eq!(fs.node_count(), 2);
        fs.forget(a.ino, 1);
        assert_eq!(fs.node_count(), 2);
        fs.forget(a.ino, 1);
        assert_eq!(fs.node_count(), 1);
    }
}
