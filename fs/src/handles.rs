//! The handle tables: open files (`Fh -> Handle`, each with its backing fd) and open
//! directories (`Fh -> Ino`).
//!
//! Locks: the tables' locks and each handle's `fd` lock are leaves, taken and released inside
//! these methods (no table guard leaves this module) and never held across I/O.

use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::RwLock;

use crate::ids::{Fh, Ino};

pub(crate) struct Handle {
    pub ino: Ino,
    fd: RwLock<Arc<OwnedFd>>,
    pub writable: bool,
    /// Opened read-only on a lower layer: after a copy-up, reads switch to the upper copy so
    /// they see writes made through other handles (as kernel overlayfs does since 4.19).
    lower: AtomicBool,
    /// A lazily fetched lower file whose data was not all in place at open: `(lower index,
    /// backing inode)` for [`crate::LowerData::ensure_range`] before each read.
    pub lazy: Option<(usize, u64)>,
}

impl Handle {
    pub fn new(ino: Ino, fd: Arc<OwnedFd>, writable: bool, lower: bool) -> Handle {
        Handle {
            ino,
            fd: RwLock::new(fd),
            writable,
            lower: AtomicBool::new(lower),
            lazy: None,
        }
    }

    /// The handle of a lazy lower file (see `lazy`).
    pub fn with_lazy(mut self, lazy: Option<(usize, u64)>) -> Handle {
        self.lazy = lazy;
        self
    }

    pub fn fd(&self) -> Arc<OwnedFd> {
        self.fd.read().clone()
    }

    pub fn is_lower(&self) -> bool {
        self.lower.load(Ordering::Relaxed)
    }

    /// The file was copied up: read from `fd` (the upper copy) from now on.
    pub fn switch_to_upper(&self, fd: OwnedFd) {
        *self.fd.write() = Arc::new(fd);
        self.lower.store(false, Ordering::Relaxed);
    }
}

#[derive(Default)]
pub(crate) struct Handles {
    files: RwLock<HashMap<Fh, Arc<Handle>>>,
    dirs: RwLock<HashMap<Fh, Ino>>,
    next: AtomicU64,
    /// READ requests served (passthrough opens send none): for tests and diagnostics.
    reads: AtomicU64,
}

impl Handles {
    fn next_fh(&self) -> Fh {
        Fh::from_raw(self.next.fetch_add(1, Ordering::Relaxed) + 1)
    }

    pub fn get(&self, fh: Fh) -> Option<Arc<Handle>> {
        self.files.read().get(&fh).cloned()
    }

    pub fn add(&self, h: Handle) -> Fh {
        let fh = self.next_fh();
        self.files.write().insert(fh, Arc::new(h));
        fh
    }

    pub fn remove(&self, fh: Fh) {
        self.files.write().remove(&fh);
    }

    pub fn open_files(&self) -> usize {
        self.files.read().len()
    }

    pub fn add_dir(&self, ino: Ino) -> Fh {
        let fh = self.next_fh();
        self.dirs.write().insert(fh, ino);
        fh
    }

    pub fn dir(&self, fh: Fh) -> Option<Ino> {
        self.dirs.read().get(&fh).copied()
    }

    pub fn remove_dir(&self, fh: Fh) {
        self.dirs.write().remove(&fh);
    }

    pub fn count_read(&self) {
        self.reads.fetch_add(1, Ordering::Relaxed);
    }

    pub fn reads(&self) -> u64 {
        self.reads.load(Ordering::Relaxed)
    }
}
