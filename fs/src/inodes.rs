//! The inode table: every merged object the kernel knows (`Ino -> Arc<Node>`), the numbers those
//! objects get, and each node's own state.
//!
//! Vocabulary: a *node* is one merged object known to the kernel; it remembers the merged names
//! it is reachable by (`(parent, name)`, several for hard links, none once unlinked). Where an
//! object lives on disk is never cached in the node: the parent's [`DirIndex`] says which layer
//! holds each name, and the path is rebuilt from the names chain.
//!
//! Locks: the table's own locks (`nodes`, `numbers`) are leaves. They are taken and released
//! inside the methods of [`InodeTable`] (no guard leaves this module), never held across I/O,
//! and nothing else is locked while they are held except a node's `names`, itself a leaf.

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};

use nix::errno::Errno;
use parking_lot::{Mutex, RwLock};

use crate::at::R;
use crate::ids::{Ino, LayerId};
use crate::index::DirIndex;

const INO_SHIFT: u32 = 48;
const FALLBACK_BASE: u64 = 0xFFFF << INO_SHIFT;

pub(crate) struct Node {
    pub ino: Ino,
    pub kind: u32,
    pub lookups: AtomicU64,
    pub names: RwLock<Vec<(Ino, OsString)>>,
    /// The directory's merged index (directories only; `None` until first needed, and again
    /// once the directory is removed). Lock order: see `tree`.
    pub dir: RwLock<Option<DirIndex>>,
    /// Held while the node is copied up. Lock order: see `tree`.
    pub copyup: Mutex<()>,
    /// Set once the object has been copied up (open lower handles then switch over).
    pub copied: AtomicBool,
    /// Set at the first open that may push this file into the kernel's page cache (see
    /// `Fs::small_lower_file_with`).
    pub prefilled: AtomicBool,
    pub last_open: Mutex<Weak<OwnedFd>>,
    /// Redirects found while building this directory's index: (layer holding the xattr, its
    /// value). Layers below a holder find the directory at the redirect, not at its own name.
    pub redirects: Mutex<Vec<(LayerId, Vec<u8>)>>,
}

impl Node {
    fn new(ino: Ino, kind: u32, name: Option<(Ino, &OsStr)>) -> Node {
        Node {
            ino,
            kind,
            lookups: AtomicU64::new(0),
            names: RwLock::new(
                name.map(|(p, n)| (p, n.to_os_string()))
                    .into_iter()
                    .collect(),
            ),
            dir: RwLock::new(None),
            copyup: Mutex::new(()),
            copied: AtomicBool::new(false),
            prefilled: AtomicBool::new(false),
            last_open: Mutex::new(Weak::new()),
            redirects: Mutex::new(Vec::new()),
        }
    }

    pub fn primary(&self) -> Option<(Ino, OsString)> {
        self.names.read().first().cloned()
    }

    pub fn is_dir(&self) -> bool {
        self.kind == libc::S_IFDIR
    }

    /// Unlinked (no merged name left) but still known: an open file. Never the root.
    pub fn unlinked(&self) -> bool {
        self.ino != Ino::ROOT && self.names.read().is_empty()
    }

    fn add_name(&self, parent: Ino, name: &OsStr) {
        let known = self
            .names
            .read()
            .iter()
            .any(|(p, x)| *p == parent && x == name);
        if !known {
            let mut names = self.names.write();
            if !names.iter().any(|(p, x)| *p == parent && x == name) {
                names.push((parent, name.to_os_string()));
            }
        }
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
    remap: HashMap<(u64, u64), Ino>,
    /// Inodes that do not fit the packed form.
    overflow: HashMap<(u64, u64), Ino>,
    next_fallback: u64,
}

pub(crate) struct InodeTable {
    nodes: RwLock<HashMap<Ino, Arc<Node>>>,
    numbers: Mutex<InoMap>,
    /// Bumped by every [`InodeTable::renumber`]: an index built while it changed may hold a
    /// number that is no longer the object's, and is built again.
    renumbered: AtomicU64,
    /// `st_ino` shown for the root (its node id is always [`Ino::ROOT`]).
    root_st_ino: u64,
}

impl InodeTable {
    /// A table holding the root, for layers all on `same_dev` (if any); the root shows
    /// `root_st_ino` (the top layer's root directory's own number, as kernel overlayfs does)
    /// when it is a usable number.
    pub fn new(same_dev: Option<u64>, root_st_ino: u64) -> InodeTable {
        let root = Arc::new(Node::new(Ino::ROOT, libc::S_IFDIR, None));
        root.lookups.store(1, Ordering::Relaxed);
        let root_st_ino = Some(root_st_ino)
            .filter(|&i| i > Ino::ROOT.get() && i < 1 << INO_SHIFT)
            .unwrap_or(Ino::ROOT.get());
        InodeTable {
            nodes: RwLock::new(HashMap::from([(Ino::ROOT, root)])),
            numbers: Mutex::new(InoMap {
                same_dev,
                next_fallback: FALLBACK_BASE,
                ..InoMap::default()
            }),
            root_st_ino,
            renumbered: AtomicU64::new(0),
        }
    }

    pub fn get(&self, ino: Ino) -> R<Arc<Node>> {
        self.nodes.read().get(&ino).cloned().ok_or(Errno::ENOENT)
    }

    pub fn contains(&self, ino: Ino) -> bool {
        self.nodes.read().contains_key(&ino)
    }

    /// Number of nodes the kernel holds.
    pub fn count(&self) -> usize {
        self.nodes.read().len()
    }

    /// Every directory node (a snapshot).
    pub fn dirs(&self) -> Vec<Arc<Node>> {
        self.nodes
            .read()
            .values()
            .filter(|n| n.is_dir())
            .cloned()
            .collect()
    }

    /// Register one kernel lookup of object `ino` (of type `kind`) reached as `(parent, name)`.
    pub fn remember(&self, parent: Ino, name: &OsStr, ino: Ino, kind: u32) -> Arc<Node> {
        // Fast path under the read lock: `forget` removes nodes under the write lock only, so a
        // count raised here cannot be lost.
        {
            let t = self.nodes.read();
            if let Some(n) = t.get(&ino).filter(|n| n.kind == kind) {
                n.add_name(parent, name);
                n.lookups.fetch_add(1, Ordering::Relaxed);
                return n.clone();
            }
        }
        let mut t = self.nodes.write();
        if let Some(n) = t.get(&ino).filter(|n| n.kind == kind) {
            n.add_name(parent, name);
            n.lookups.fetch_add(1, Ordering::Relaxed);
            return n.clone();
        }
        let n = Arc::new(Node::new(ino, kind, Some((parent, name))));
        n.lookups.store(1, Ordering::Relaxed);
        t.insert(ino, n.clone());
        n
    }

    /// Drop `nlookup` kernel lookups of `ino`; returns the node when that was its last one (it
    /// is gone from the table then). The root is never forgotten.
    pub fn forget(&self, ino: Ino, nlookup: u64) -> Option<Arc<Node>> {
        if ino == Ino::ROOT {
            return None;
        }
        let mut t = self.nodes.write();
        let n = t.get(&ino)?;
        let prev = n.lookups.fetch_sub(
            nlookup.min(n.lookups.load(Ordering::Relaxed)),
            Ordering::Relaxed,
        );
        if prev <= nlookup {
            t.remove(&ino)
        } else {
            None
        }
    }

    /// Forget the merged name `(parent, name)` of node `ino`.
    pub fn drop_name(&self, ino: Ino, parent: Ino, name: &OsStr) {
        if let Some(n) = self.nodes.read().get(&ino) {
            n.names
                .write()
                .retain(|(p, x)| !(*p == parent && x == name));
        }
    }

    /// The name `(p, name)` of node `ino` is now `(np, nn)`.
    pub fn rename(&self, ino: Ino, p: Ino, name: &OsStr, np: Ino, nn: &OsStr) {
        if let Some(n) = self.nodes.read().get(&ino) {
            for (pp, x) in n.names.write().iter_mut() {
                if *pp == p && x == name {
                    *pp = np;
                    *x = nn.to_os_string();
                }
            }
        }
    }

    /// Our inode number for the backing object `(dev, st_ino)`.
    pub fn number(&self, dev: u64, st_ino: u64) -> Ino {
        let mut m = self.numbers.lock();
        if let Some(&i) = m.remap.get(&(dev, st_ino)) {
            return i;
        }
        if m.same_dev == Some(dev) {
            if st_ino > Ino::ROOT.get() && st_ino < (1 << INO_SHIFT) {
                return Ino::from_raw(st_ino);
            }
        } else {
            let n = m.devs.len() as u64 + 1;
            let idx = *m.devs.entry(dev).or_insert(n);
            if st_ino < (1 << INO_SHIFT) && idx < 0xFFFF {
                return Ino::from_raw((idx << INO_SHIFT) | st_ino);
            }
        }
        if let Some(&i) = m.overflow.get(&(dev, st_ino)) {
            return i;
        }
        m.next_fallback += 1;
        let i = Ino::from_raw(m.next_fallback);
        m.overflow.insert((dev, st_ino), i);
        i
    }

    /// The backing object `(dev, st_ino)` (an upper copy) is known as `ino` from now on.
    pub fn remap(&self, dev: u64, st_ino: u64, ino: Ino) {
        self.numbers.lock().remap.insert((dev, st_ino), ino);
    }

    /// The backing object `(dev, st_ino)` is a different object from `ino` from now on (the
    /// lower names of a hard-linked file not linked to its copy): it gets a fresh number,
    /// returned. Indexes built from here on use it; see [`InodeTable::renumbered`] for those
    /// being built meanwhile.
    pub fn renumber(&self, dev: u64, st_ino: u64) -> Ino {
        let fresh = self.fresh();
        self.remap(dev, st_ino, fresh);
        self.renumbered.fetch_add(1, Ordering::SeqCst);
        fresh
    }

    /// How many times [`InodeTable::renumber`] ran: an index build reads it before it reads
    /// the layers and installs its result only if it is unchanged.
    pub fn renumbered(&self) -> u64 {
        self.renumbered.load(Ordering::SeqCst)
    }

    /// Forget the remapping of an upper inode that is gone (its number may be reused).
    pub fn drop_remap(&self, dev: u64, st_ino: u64) {
        self.numbers.lock().remap.remove(&(dev, st_ino));
    }

    /// A number no backing object has.
    pub fn fresh(&self) -> Ino {
        let mut m = self.numbers.lock();
        m.next_fallback += 1;
        Ino::from_raw(m.next_fallback)
    }

    /// The number for a new upper object `(dev, st_ino)`. A number still held by any node (an
    /// unlinked file still open, or one whose removal is in flight in another thread) is never
    /// reused for a different object: the new object gets a fresh number instead.
    pub fn number_new_upper(&self, dev: u64, st_ino: u64) -> Ino {
        let ino = self.number(dev, st_ino);
        if self.contains(ino) {
            let f = self.fresh();
            self.remap(dev, st_ino, f);
            return f;
        }
        ino
    }

    /// The `st_ino` users see for node `ino` (see [`InoMap`]).
    pub fn st_ino(&self, ino: Ino) -> u64 {
        if ino == Ino::ROOT {
            self.root_st_ino
        } else {
            ino.get()
        }
    }
}
