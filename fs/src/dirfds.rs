//! The dirfd cache: `O_PATH` fds of merged directories in each layer, `(dir ino, layer) -> fd`.
//!
//! A directory fd follows its directory through renames, so entries stay valid for the node's
//! life; they are dropped when the directory is removed, replaced or forgotten. The cache's lock
//! is a leaf: taken and released inside these methods (no guard leaves this module), never held
//! across I/O — callers open the fd first and insert it after.

use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::sync::Arc;

use parking_lot::Mutex;

use crate::ids::{Ino, LayerId};

/// Most directory fds kept open (the fd limit is shared with open files).
const DIRFD_CACHE_MAX: usize = 4096;

#[derive(Default)]
pub(crate) struct DirFds {
    map: Mutex<HashMap<(Ino, LayerId), Arc<OwnedFd>>>,
}

impl DirFds {
    pub fn get(&self, ino: Ino, l: LayerId) -> Option<Arc<OwnedFd>> {
        self.map.lock().get(&(ino, l)).cloned()
    }

    pub fn insert(&self, ino: Ino, l: LayerId, fd: Arc<OwnedFd>) {
        let mut c = self.map.lock();
        if c.len() >= DIRFD_CACHE_MAX {
            let victims: Vec<_> = c.keys().take(DIRFD_CACHE_MAX / 4).copied().collect();
            for k in victims {
                c.remove(&k);
            }
        }
        c.insert((ino, l), fd);
    }

    /// Forget the fds of directory `ino` (removed, replaced or forgotten).
    pub fn forget_dir(&self, ino: Ino) {
        self.map.lock().retain(|k, _| k.0 != ino);
    }

    /// Forget the fds of directory `ino` in the layers below `l` (a redirect found at `l`
    /// means they were opened by the wrong name).
    pub fn forget_below(&self, ino: Ino, l: LayerId) {
        self.map.lock().retain(|k, _| k.0 != ino || k.1 <= l);
    }
}
