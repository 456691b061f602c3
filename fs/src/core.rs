//! The filesystem core: layer stack, inode table, path resolution, lookup, getattr, readdir.
//!
//! Vocabulary: a *node* is one merged object known to the kernel (ino -> `Arc<Node>`); it
//! remembers the merged names it is reachable by (`(parent ino, name)`, several for hard links,
//! none once unlinked). Where an object lives on disk is never cached in the node: the parent's
//! [`DirIndex`] says which layer holds each name, and the path is rebuilt from the names chain.
//!
//! Lock order (outer first): `ns` (read by every operation, write only by directory renames) ->
//! a node's `copyup` mutex -> directory index locks (`Node::dir`, several taken in ino order) ->
//! the `nodes` table / `inos` maps (never held across I/O). No copy-up is started while holding a
//! directory index lock.

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};

use nix::errno::Errno;
use parking_lot::{Mutex, RwLock};

use crate::at::{self as sys, R};
use crate::index::{self, DirIndex, Entry, LayerId};

pub const ROOT_INO: u64 = 1;

/// A directory listing: (name, ino, `S_IFMT` kind).
pub type DirList = Vec<(OsString, u64, u32)>;

/// One directory entry as readdir returns it; `off` is the cookie to resume after it.
#[derive(Clone, Debug)]
pub struct DirEnt {
    pub name: OsString,
    pub ino: u64,
    pub kind: u32,
    pub off: u64,
}

impl DirEnt {
    fn new(name: &str, ino: u64, kind: u32, off: u64) -> DirEnt {
        DirEnt {
            name: OsString::from(name),
            ino,
            kind,
            off,
        }
    }
}
const INO_SHIFT: u32 = 48;
const FALLBACK_BASE: u64 = 0xFFFF << INO_SHIFT;

/// Who is asking (from the FUSE request header).
#[derive(Clone, Copy, Debug)]
pub struct Ctx {
    pub uid: u32,
    pub gid: u32,
    pub pid: u32,
}

/// Attributes of a merged object: the backing `stat` with our inode number.
#[derive(Clone, Copy)]
pub struct Attr {
    pub ino: u64,
    pub st: libc::stat,
}

pub(crate) struct Layer {
    pub fd: OwnedFd,
    pub dev: u64,
}

pub(crate) struct Node {
    pub ino: u64,
    pub kind: u32,
    pub lookups: AtomicU64,
    pub names: RwLock<Vec<(u64, OsString)>>,
    pub dir: RwLock<Option<DirIndex>>,
    pub copyup: Mutex<()>,
    /// Set once the object has been copied up (open lower handles then switch over).
    pub copied: AtomicBool,
    pub last_open: Mutex<Weak<OwnedFd>>,
    /// Redirects found while building this directory's index: (layer holding the xattr, its
    /// value). Layers below a holder find the directory at the redirect, not at its own name.
    pub redirects: Mutex<Vec<(LayerId, Vec<u8>)>>,
}

impl Node {
    fn new(ino: u64, kind: u32, parent: u64, name: &OsStr) -> Node {
        Node {
            ino,
            kind,
            lookups: AtomicU64::new(0),
            names: RwLock::new(if parent == 0 {
                vec![]
            } else {
                vec![(parent, name.to_os_string())]
            }),
            dir: RwLock::new(None),
            copyup: Mutex::new(()),
            copied: AtomicBool::new(false),
            last_open: Mutex::new(Weak::new()),
            redirects: Mutex::new(Vec::new()),
        }
    }
    pub fn primary(&self) -> Option<(u64, OsString)> {
        self.names.read().first().cloned()
    }
    pub fn is_dir(&self) -> bool {
        self.kind == libc::S_IFDIR
    }
}

/// Inode numbers. The number the kernel knows an object by (its FUSE node id) is also the
/// `st_ino` users see (fuser puts one value in both fields of an entry reply), so it must be
/// unique across the union and never 0 or 1 (the root's node id):
/// - every layer on one filesystem (`same_dev`): the backing file's own `st_ino`, as kernel
///   overlayfs (xino) and fuse-overlayfs report it; distinct objects of one filesystem never
///   share one, and 32-bit programs without large-file support keep working;
/// - otherwise `(index of the filesystem << 48) | st_ino`, so equal numbers on two filesystems
///   never collide;
/// - numbers that fit neither form (and fresh identities) come from a counter above
///   `FALLBACK_BASE`.
///
/// A copied-up object keeps the number of its origin (`remap`).
#[derive(Default)]
struct InoMap {
    /// The device of every layer, when they are all on one filesystem.
    same_dev: Option<u64>,
    devs: HashMap<u64, u64>,
    /// Upper inodes made by copy-up keep the number of their origin: (dev, st_ino) -> ino.
    remap: HashMap<(u64, u64), u64>,
    /// Inodes that do not fit the packed form.
    overflow: HashMap<(u64, u64), u64>,
    next_fallback: u64,
}

/// Where a merged object lives: its layer, the merged directory holding it (`parent`, 0 for the
/// root itself) and its name there (empty for the root).
#[derive(Clone, Debug)]
pub(crate) struct Loc {
    pub layer: LayerId,
    pub parent: u64,
    pub name: OsString,
}

/// Most directory fds kept open (the fd limit is shared with open files).
const DIRFD_CACHE_MAX: usize = 4096;

pub struct Fs {
    /// `st_ino` shown for the root (its node id is always [`ROOT_INO`]).
    root_st_ino: u64,
    pub(crate) layers: Vec<Layer>,
    pub(crate) has_upper: bool,
    pub(crate) work: Option<OwnedFd>,
    pub(crate) nodes: RwLock<HashMap<u64, Arc<Node>>>,
    inos: Mutex<InoMap>,
    pub(crate) ns: RwLock<()>,
    pub(crate) gen: AtomicU64,
    pub(crate) tmp_counter: AtomicU64,
    pid: std::sync::OnceLock<u32>,
    pub(crate) fsync_copyup: bool,
    pub(crate) handles: crate::file::Handles,
    /// `O_PATH` fds of merged directories in each layer: (dir ino, layer) -> fd. A directory fd
    /// follows its directory through renames, so entries stay valid for the node's life; they
    /// are dropped when the directory is removed or forgotten.
    dirfds: Mutex<HashMap<(u64, LayerId), Arc<OwnedFd>>>,
    /// Tells the kernel to drop its cached attributes of an inode (set by the FUSE adapter).
    notify: std::sync::OnceLock<Box<dyn Fn(u64) + Send + Sync>>,
}

/// Configuration of the core.
pub struct FsConfig {
    pub lowers: Vec<OwnedFd>,
    pub upper: Option<OwnedFd>,
    pub work: Option<OwnedFd>,
    pub fsync_copyup: bool,
}

pub(crate) fn check_name(name: &OsStr) -> R<()> {
    let b = name.as_bytes();
    if b.len() > 255 {
        return Err(Errno::ENAMETOOLONG);
    }
    if b.is_empty() || b == b"." || b == b".." || b.contains(&b'/') || b.contains(&0) {
        return Err(Errno::EINVAL);
    }
    Ok(())
}

impl Fs {
    pub fn new(cfg: FsConfig) -> R<Fs> {
        let mut layers = Vec::new();
        let has_upper = cfg.upper.is_some();
        for fd in cfg.upper.into_iter().chain(cfg.lowers) {
            let st = sys::fstat(fd.as_fd())?;
            if st.st_mode & libc::S_IFMT != libc::S_IFDIR {
                return Err(Errno::ENOTDIR);
            }
            layers.push(Layer { fd, dev: st.st_dev });
        }
        if layers.is_empty() {
            return Err(Errno::EINVAL);
        }
        let dev0 = layers[0].dev;
        let same_dev = layers.iter().all(|l| l.dev == dev0).then_some(dev0);
        // Kernel overlayfs shows the top layer's root directory's own number for the root.
        let root_st_ino = sys::fstat(layers[0].fd.as_fd())
            .map(|st| st.st_ino)
            .ok()
            .filter(|&i| i > ROOT_INO && i < 1 << INO_SHIFT)
            .unwrap_or(ROOT_INO);
        let fs = Fs {
            root_st_ino,
            layers,
            has_upper,
            work: cfg.work,
            nodes: RwLock::new(HashMap::new()),
            inos: Mutex::new(InoMap {
                same_dev,
                next_fallback: FALLBACK_BASE,
                ..InoMap::default()
            }),
            ns: RwLock::new(()),
            gen: AtomicU64::new(1),
            tmp_counter: AtomicU64::new(0),
            pid: std::sync::OnceLock::new(),
            fsync_copyup: cfg.fsync_copyup,
            handles: crate::file::Handles::default(),
            notify: std::sync::OnceLock::new(),
            dirfds: Mutex::new(HashMap::new()),
        };
        let root = Arc::new(Node::new(ROOT_INO, libc::S_IFDIR, 0, OsStr::new("")));
        root.lookups.store(1, Ordering::Relaxed);
        fs.nodes.write().insert(ROOT_INO, root);
        Ok(fs)
    }

    /// Install the callback that invalidates the kernel's cached attributes of an inode.
    pub fn set_attr_invalidator(&self, f: Box<dyn Fn(u64) + Send + Sync>) {
        let _ = self.notify.set(f);
    }

    /// The attributes of `ino` changed behind the kernel's back (e.g. a copy-up touched it).
    pub(crate) fn inval_attr(&self, ino: u64) {
        if let Some(f) = self.notify.get() {
            f(ino);
        }
    }

    pub fn read_only(&self) -> bool {
        !self.has_upper
    }

    pub(crate) fn is_upper(&self, l: LayerId) -> bool {
        self.has_upper && l == 0
    }

    pub(crate) fn layer_fd(&self, l: LayerId) -> R<BorrowedFd<'_>> {
        self.layers
            .get(l as usize)
            .map(|l| l.fd.as_fd())
            .ok_or(Errno::EIO)
    }

    /// Our inode number for `st_ino` found in layer `l`.
    pub(crate) fn make_ino(&self, l: LayerId, st_ino: u64) -> u64 {
        let dev = self.layers.get(l as usize).map(|l| l.dev).unwrap_or(0);
        self.make_ino_dev(dev, st_ino)
    }

    pub(crate) fn make_ino_dev(&self, dev: u64, st_ino: u64) -> u64 {
        let mut m = self.inos.lock();
        if let Some(&i) = m.remap.get(&(dev, st_ino)) {
            return i;
        }
        if m.same_dev == Some(dev) {
            if st_ino > ROOT_INO && st_ino < (1 << INO_SHIFT) {
                return st_ino;
            }
        } else {
            let n = m.devs.len() as u64 + 1;
            let idx = *m.devs.entry(dev).or_insert(n);
            if st_ino < (1 << INO_SHIFT) && idx < 0xFFFF {
                return (idx << INO_SHIFT) | st_ino;
            }
        }
        if let Some(&i) = m.overflow.get(&(dev, st_ino)) {
            return i;
        }
        m.next_fallback += 1;
        let i = m.next_fallback;
        m.overflow.insert((dev, st_ino), i);
        i
    }

    pub(crate) fn remap_ino(&self, dev: u64, st_ino: u64, ino: u64) {
        self.inos.lock().remap.insert((dev, st_ino), ino);
    }

    /// Forget the remapping of an upper inode that is gone (its number may be reused).
    pub(crate) fn drop_remap(&self, dev: u64, st_ino: u64) {
        self.inos.lock().remap.remove(&(dev, st_ino));
    }

    /// After copy-up of one name of a hard-linked lower file (inode `ino`, `(dev, st_ino)` in
    /// its lower layer): the names of that lower inode that were not re-linked to the copy
    /// (never looked up, so not known as names of `ino`) still show the lower file, a different
    /// object from now on. They get a fresh inode number of their own: in every directory
    /// index built so far, and through the remap for indexes built later. Sharing `ino` would
    /// make the kernel treat them as one inode whose link count is the copy's (an unlink of
    /// the lower name then takes it to 0, and a later link() of the copy fails with ENOENT).
    pub(crate) fn split_lower_links(&self, ino: u64, dev: u64, st_ino: u64) {
        let fresh = self.fresh_ino();
        self.remap_ino(dev, st_ino, fresh);
        let dirs: Vec<Arc<Node>> = self
            .nodes
            .read()
            .values()
            .filter(|n| n.is_dir())
            .cloned()
            .collect();
        for d in dirs {
            let mut g = d.dir.write();
            let Some(ix) = g.as_mut() else { continue };
            let mut hit = false;
            for e in ix.entries.values_mut() {
                if e.ino == ino && !self.is_upper(e.top) {
                    e.ino = fresh;
                    hit = true;
                }
            }
            // Listings the kernel cached show the old number: new opens read from us.
            ix.changed |= hit;
        }
    }

    pub(crate) fn fresh_ino(&self) -> u64 {
        let mut m = self.inos.lock();
        m.next_fallback += 1;
        m.next_fallback
    }

    pub(crate) fn node(&self, ino: u64) -> R<Arc<Node>> {
        self.nodes.read().get(&ino).cloned().ok_or(Errno::ENOENT)
    }

    pub(crate) fn tmp_name(&self) -> OsString {
        let n = self.tmp_counter.fetch_add(1, Ordering::Relaxed);
        // The pid of the serving process (read once: getpid is a syscall, and this runs on
        // every copy-up), so names never collide with a crashed earlier server's leftovers.
        let pid = *self.pid.get_or_init(std::process::id);
        OsString::from(format!("#strata-{pid}-{n}"))
    }

    pub(crate) fn work_fd(&self) -> R<BorrowedFd<'_>> {
        self.work.as_ref().map(|f| f.as_fd()).ok_or(Errno::EROFS)
    }

    /// An `O_PATH` fd of merged directory `ino` in layer `l` (cached).
    pub(crate) fn dirfd(&self, ino: u64, l: LayerId) -> R<Arc<OwnedFd>> {
        if let Some(fd) = self.dirfds.lock().get(&(ino, l)) {
            return Ok(fd.clone());
        }
        let path = self.layer_path(ino, l)?;
        let fd = Arc::new(sys::open_beneath(
            self.layer_fd(l)?,
            &path,
            libc::O_PATH | libc::O_DIRECTORY,
        )?);
        self.cache_dirfd(ino, l, fd.clone());
        Ok(fd)
    }

    fn cache_dirfd(&self, ino: u64, l: LayerId, fd: Arc<OwnedFd>) {
        let mut c = self.dirfds.lock();
        if c.len() >= DIRFD_CACHE_MAX {
            let victims: Vec<_> = c.keys().take(DIRFD_CACHE_MAX / 4).copied().collect();
            for k in victims {
                c.remove(&k);
            }
        }
        c.insert((ino, l), fd);
    }

    /// A fresh fd of directory `ino` in layer `l`, opened for reading its entries. When no fd of
    /// it is cached, this one (one open instead of an O_PATH open plus a reopen) is cached too
    /// once the caller is done listing: `*at()` calls do not care about its position, and a
    /// listing always reopens a cached fd.
    fn open_dir_for_listing(&self, ino: u64, l: LayerId) -> R<(Arc<OwnedFd>, bool)> {
        const FLAGS: i32 = libc::O_RDONLY | libc::O_DIRECTORY;
        if let Some(d) = self.dirfds.lock().get(&(ino, l)).cloned() {
            return Ok((Arc::new(sys::open_beneath(d.as_fd(), b"", FLAGS)?), false));
        }
        let path = self.layer_path(ino, l)?;
        let fd = sys::open_beneath(self.layer_fd(l)?, &path, FLAGS)?;
        Ok((Arc::new(fd), true))
    }

    /// Forget the cached fds of directory `ino` (removed, replaced or forgotten).
    pub(crate) fn drop_dirfds(&self, ino: u64) {
        self.dirfds.lock().retain(|k, _| k.0 != ino);
    }

    /// Where directory-or-file node `ino` lives in layer `l` (relative to the layer root, empty
    /// for the root): its merged path, except below a redirect (kernel overlayfs
    /// `redirect_dir`): an absolute redirect names the path from the layer root, a relative one
    /// a name in the parent's directory of that layer.
    pub(crate) fn layer_path(&self, ino: u64, l: LayerId) -> R<Vec<u8>> {
        let mut comps: Vec<Vec<u8>> = Vec::new();
        let mut cur = ino;
        while cur != ROOT_INO {
            let n = self.node(cur)?;
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
    fn candidate_layers(&self, ino: u64) -> R<Vec<LayerId>> {
        if ino == ROOT_INO {
            return Ok((0..self.layers.len() as LayerId).collect());
        }
        let n = self.node(ino)?;
        let (p, name) = n.primary().ok_or(Errno::ENOENT)?;
        let e = self.entry(p, &name)?.ok_or(Errno::ENOENT)?;
        if e.kind != libc::S_IFDIR {
            return Err(Errno::ENOTDIR);
        }
        Ok(e.dir_layers)
    }

    /// Run `f` on the (fresh) index of directory `ino`, building it if needed.
    pub(crate) fn with_index<T>(&self, ino: u64, f: impl FnOnce(&DirIndex) -> T) -> R<T> {
        let n = self.node(ino)?;
        if !n.is_dir() {
            return Err(Errno::ENOTDIR);
        }
        let gen = self.gen.load(Ordering::Acquire);
        {
            let g = n.dir.read();
            if let Some(ix) = g.as_ref().filter(|ix| ix.gen == gen) {
                return Ok(f(ix));
            }
        }
        self.rebuild_index(&n)?;
        let g = n.dir.read();
        g.as_ref().map(f).ok_or(Errno::EIO)
    }

    /// Run `f` with the index of `ino` locked for writing (built first if needed).
    pub(crate) fn with_index_mut<T>(
        &self,
        ino: u64,
        f: impl FnOnce(&mut DirIndex) -> R<T>,
    ) -> R<T> {
        let n = self.node(ino)?;
        if !n.is_dir() {
            return Err(Errno::ENOTDIR);
        }
        loop {
            let gen = self.gen.load(Ordering::Acquire);
            {
                let mut g = n.dir.write();
                if let Some(ix) = g.as_mut().filter(|ix| ix.gen == gen) {
                    return f(ix);
                }
            }
            self.rebuild_index(&n)?;
        }
    }

    fn rebuild_index(&self, n: &Node) -> R<()> {
        let gen = self.gen.load(Ordering::Acquire);
        let cand = self.candidate_layers(n.ino)?;
        let mut ix = self.build_index(n.ino, &cand, gen)?;
        let mut g = n.dir.write();
        if g.as_ref().is_none_or(|old| old.gen != gen) {
            ix.changed = g.as_ref().is_some_and(|old| old.changed);
            *g = Some(ix);
        }
        Ok(())
    }

    pub(crate) fn build_index(&self, ino: u64, cand: &[LayerId], gen: u64) -> R<DirIndex> {
        let mut entries = HashMap::new();
        let mut layers = Vec::new();
        let mut cand = cand.to_vec();
        let node = if ino == ROOT_INO {
            None
        } else {
            self.node(ino).ok()
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
                self.cache_dirfd(ino, l, fd);
            }
            let opaque = ld.opaque;
            let redirect = ld.redirect.clone();
            layers.push(l);
            index::merge_layer(&mut entries, l, self.is_upper(l), ld, |l, i| {
                self.make_ino(l, i)
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
                    self.dirfds.lock().retain(|k, _| k.0 != ino || k.1 <= l);
                }
                cand.truncate(i);
                cand.extend(self.redirected_layers(ino, l)?);
            }
        }
        index::finish(&mut entries);
        Ok(DirIndex::new(gen, layers, entries))
    }

    /// The layers below `holder` in which directory `ino` (redirected at `holder`) exists, top
    /// first, as kernel overlayfs looks them up: a missing path skips a layer; a whiteout or
    /// non-directory on the way (or an escape from the layer) ends the search.
    fn redirected_layers(&self, ino: u64, holder: LayerId) -> R<Vec<LayerId>> {
        let mut out = Vec::new();
        for l in holder + 1..self.layers.len() as LayerId {
            let path = self.layer_path(ino, l)?;
            match sys::open_beneath(self.layer_fd(l)?, &path, libc::O_PATH | libc::O_DIRECTORY) {
                Ok(_) => out.push(l),
                Err(Errno::ENOENT) => continue,
                Err(_) => break,
            }
        }
        Ok(out)
    }

    /// The index entry for `name` in directory `parent` (whiteouts included).
    pub(crate) fn entry(&self, parent: u64, name: &OsStr) -> R<Option<Entry>> {
        self.with_index(parent, |ix| ix.get(name).cloned())
    }

    /// Where node `ino` lives now.
    pub(crate) fn locate(&self, ino: u64) -> R<Loc> {
        if ino == ROOT_INO {
            let l = self.with_index(ROOT_INO, |ix| ix.layers.first().copied())?;
            return Ok(Loc {
                layer: l.ok_or(Errno::EIO)?,
                parent: 0,
                name: OsString::new(),
            });
        }
        let n = self.node(ino)?;
        let (p, name) = n.primary().ok_or(Errno::ENOENT)?;
        let e = self
            .entry(p, &name)?
            .filter(|e| e.visible())
            .ok_or(Errno::ENOENT)?;
        Ok(Loc {
            layer: e.top,
            parent: p,
            name,
        })
    }

    /// An `O_PATH` fd of the directory holding `loc` in its layer (the root itself for the root).
    pub(crate) fn loc_dir(&self, loc: &Loc) -> R<Arc<OwnedFd>> {
        let dir = if loc.parent == 0 {
            ROOT_INO
        } else {
            loc.parent
        };
        self.dirfd(dir, loc.layer)
    }

    pub(crate) fn stat_loc(&self, loc: &Loc) -> R<libc::stat> {
        let d = self.loc_dir(loc)?;
        sys::fstatat(d.as_fd(), &loc.name)
    }

    /// Attributes of `ino` as the merged view shows them.
    pub(crate) fn attr_of(&self, ino: u64) -> R<Attr> {
        let loc = self.locate(ino)?;
        let st = self.stat_loc(&loc)?;
        Ok(self.fix_attr(ino, st))
    }

    pub(crate) fn fix_attr(&self, ino: u64, mut st: libc::stat) -> Attr {
        st.st_ino = self.st_ino(ino);
        if st.st_mode & libc::S_IFMT == libc::S_IFDIR && self.dir_merged(ino) {
            // Kernel overlayfs reports 1 for merged directories (counting the subdirectories
            // of every layer is not worth it; `find` and friends accept 1) and the real count
            // of the one directory otherwise.
            st.st_nlink = 1;
        }
        Attr { ino, st }
    }

    /// The `st_ino` users see for node `ino` (see [`InoMap`]).
    pub fn st_ino(&self, ino: u64) -> u64 {
        if ino == ROOT_INO {
            self.root_st_ino
        } else {
            ino
        }
    }

    /// Does directory `ino` merge more than one layer (its contributing layers, see `index`)?
    /// Known exactly once its index is built; before that (a `stat` of a directory nobody
    /// listed yet) from its candidate layers in the parent's index and the opaque marks of the
    /// top one, without reading the directory. Unknown counts as merged.
    fn dir_merged(&self, ino: u64) -> bool {
        let Some(n) = self.nodes.read().get(&ino).cloned() else {
            return true;
        };
        if let Some(merged) = n.dir.read().as_ref().map(|ix| ix.layers.len() > 1) {
            return merged;
        }
        let Some((p, name)) = n.primary() else {
            return true;
        };
        let Ok(Some(e)) = self.entry(p, &name) else {
            return true;
        };
        match e.dir_layers.as_slice() {
            [] | [_] => false,
            [top, ..] => !self
                .dirfd(ino, *top)
                .is_ok_and(|d| crate::format::read_dir_marks(d.as_fd(), true).opaque),
        }
    }

    /// Register one kernel lookup of the object `e` reached as `(parent, name)`.
    pub(crate) fn remember(&self, parent: u64, name: &OsStr, e: &Entry) -> Arc<Node> {
        // Fast path under the read lock: `forget` removes nodes under the write lock only, so a
        // count raised here cannot be lost.
        {
            let t = self.nodes.read();
            if let Some(n) = t.get(&e.ino).filter(|n| n.kind == e.kind) {
                let known = n
                    .names
                    .read()
                    .iter()
                    .any(|(p, x)| *p == parent && x == name);
                if !known {
                    let mut names = n.names.write();
                    if !names.iter().any(|(p, x)| *p == parent && x == name) {
                        names.push((parent, name.to_os_string()));
                    }
                }
                n.lookups.fetch_add(1, Ordering::Relaxed);
                return n.clone();
            }
        }
        let mut t = self.nodes.write();
        if let Some(n) = t.get(&e.ino) {
            if n.kind == e.kind {
                let mut names = n.names.write();
                if !names.iter().any(|(p, x)| *p == parent && x == name) {
                    names.push((parent, name.to_os_string()));
                }
                drop(names);
                n.lookups.fetch_add(1, Ordering::Relaxed);
                return n.clone();
            }
        }
        let n = Arc::new(Node::new(e.ino, e.kind, parent, name));
        n.lookups.store(1, Ordering::Relaxed);
        t.insert(e.ino, n.clone());
        n
    }

    /// Look `name` up in `parent`; `None` when it does not exist (a negative entry).
    pub fn lookup(&self, parent: u64, name: &OsStr) -> R<Option<Attr>> {
        let _ns = self.ns.read_recursive();
        if name.len() > 255 {
            return Err(Errno::ENAMETOOLONG);
        }
        if name == "." || name == ".." {
            // Only sent for exported handles (FUSE_EXPORT_SUPPORT): the dir itself or its parent.
            let ino = if name == "." || parent == ROOT_INO {
                parent
            } else {
                self.node(parent)?
                    .primary()
                    .map(|p| p.0)
                    .ok_or(Errno::ENOENT)?
            };
            let n = self.node(ino)?;
            n.lookups.fetch_add(1, Ordering::Relaxed);
            return match self.attr_of(ino) {
                Ok(a) => Ok(Some(a)),
                Err(err) => {
                    self.forget(ino, 1);
                    Err(err)
                }
            };
        }
        let Some(e) = self.entry(parent, name)?.filter(Entry::visible) else {
            return Ok(None);
        };
        let n = self.remember(parent, name, &e);
        match self.attr_of(n.ino) {
            Ok(a) => Ok(Some(a)),
            Err(err) => {
                self.forget(n.ino, 1);
                Err(err)
            }
        }
    }

    pub fn forget(&self, ino: u64, nlookup: u64) {
        if ino == ROOT_INO {
            return;
        }
        let mut t = self.nodes.write();
        if let Some(n) = t.get(&ino) {
            let prev = n.lookups.fetch_sub(
                nlookup.min(n.lookups.load(Ordering::Relaxed)),
                Ordering::Relaxed,
            );
            if prev <= nlookup {
                let dir = n.is_dir();
                t.remove(&ino);
                drop(t);
                if dir {
                    self.drop_dirfds(ino);
                }
            }
        }
    }

    /// Number of nodes the kernel holds (for tests and stats).
    pub fn node_count(&self) -> usize {
        self.nodes.read().len()
    }

    pub fn getattr(&self, ino: u64, fh: Option<u64>) -> R<Attr> {
        let _ns = self.ns.read_recursive();
        let n = self.node(ino)?;
        if let Some(h) = fh.and_then(|fh| self.handles.get(fh)) {
            let mut st = sys::fstat(h.fd().as_fd())?;
            if n.primary().is_none() && ino != ROOT_INO {
                st.st_nlink = 0;
            }
            return Ok(self.fix_attr(ino, st));
        }
        if n.primary().is_none() && ino != ROOT_INO {
            // Unlinked but still open somewhere.
            let fd = n.last_open.lock().upgrade().ok_or(Errno::ENOENT)?;
            let mut st = sys::fstat(fd.as_fd())?;
            st.st_nlink = 0;
            return Ok(self.fix_attr(ino, st));
        }
        self.attr_of(ino)
    }

    pub fn readlink(&self, ino: u64) -> R<Vec<u8>> {
        let _ns = self.ns.read_recursive();
        let loc = self.locate(ino)?;
        let d = self.loc_dir(&loc)?;
        sys::readlinkat(d.as_fd(), &loc.name)
    }

    /// May the kernel cache the listing of directory `ino` (FOPEN_CACHE_DIR)? Only while no
    /// name was added to or removed from it through this mount. The kernel's listing cache is
    /// not safe under concurrent change: a READDIR answered before a rename can land in the
    /// cache after another opener recorded the directory's post-rename version, and that
    /// stale listing is then served as current (seen as a renamed-away name still listed).
    /// A directory that never changed has nothing to go stale; once it changes, new opens read
    /// it from us.
    pub fn listing_cacheable(&self, ino: u64) -> bool {
        self.read_only()
            || self
                .node(ino)
                .is_ok_and(|n| !n.dir.read().as_ref().is_some_and(|ix| ix.changed))
    }

    /// Up to `max` entries of directory `ino` after readdir cookie `offset` (0 = from the
    /// start), in the directory's stable order: `.` (cookie 1), `..` (2), then the entries.
    pub fn read_dir(&self, ino: u64, offset: u64, max: usize) -> R<Vec<DirEnt>> {
        let _ns = self.ns.read_recursive();
        let mut out = Vec::new();
        if offset < 2 {
            let parent = if ino == ROOT_INO {
                ROOT_INO
            } else {
                self.node(ino)?.primary().map(|p| p.0).unwrap_or(ROOT_INO)
            };
            if offset == 0 {
                out.push(DirEnt::new(".", ino, libc::S_IFDIR, 1));
            }
            out.push(DirEnt::new("..", parent, libc::S_IFDIR, 2));
        }
        self.with_index(ino, |ix| {
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
    pub fn list_dir(&self, ino: u64) -> R<DirList> {
        Ok(self
            .read_dir(ino, 0, usize::MAX)?
            .into_iter()
            .map(|d| (d.name, d.ino, d.kind))
            .collect())
    }

    pub fn statfs(&self) -> R<libc::statvfs> {
        let fd = self.layer_fd(0)?;
        sys::fstatvfs(fd)
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
