//! The layer stack: the upper layer (when there is one) and the lower layers, each one directory
//! fd, plus the work dir. Fixed when the filesystem is opened and never changed after: it has no
//! lock, only an atomic counter for temporary names.
//!
//! Vocabulary: a *layer id* (`LayerId`) is an index into the stack: 0 is the upper layer when
//! there is one, then the lower layers top first. The *flavour* is the [`Flavour`] the format is
//! written in (opaque directories; whiteouts are char 0/0 in both).

use std::ffi::OsString;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use nix::errno::Errno;

use crate::at::{self, R};
use crate::format::Flavour;
use crate::ids::LayerId;

struct Layer {
    fd: OwnedFd,
    dev: u64,
}

pub(crate) struct LayerStack {
    layers: Vec<Layer>,
    has_upper: bool,
    work: Option<OwnedFd>,
    fsync_copyup: bool,
    flavour: Flavour,
    tmp_counter: AtomicU64,
    pid: OnceLock<u32>,
}

impl LayerStack {
    /// The stack `upper` (if any) over `lowers` (top first); every fd must be a directory.
    pub fn new(
        upper: Option<OwnedFd>,
        lowers: Vec<OwnedFd>,
        work: Option<OwnedFd>,
        fsync_copyup: bool,
        flavour: Flavour,
    ) -> R<LayerStack> {
        let has_upper = upper.is_some();
        let mut layers = Vec::new();
        for fd in upper.into_iter().chain(lowers) {
            let st = at::fstat(fd.as_fd())?;
            if st.st_mode & libc::S_IFMT != libc::S_IFDIR {
                return Err(Errno::ENOTDIR);
            }
            layers.push(Layer { fd, dev: st.st_dev });
        }
        if layers.is_empty() || layers.len() > LayerId::MAX as usize {
            return Err(Errno::EINVAL);
        }
        Ok(LayerStack {
            layers,
            has_upper,
            work,
            fsync_copyup,
            flavour,
            tmp_counter: AtomicU64::new(0),
            pid: OnceLock::new(),
        })
    }

    /// Number of layers (upper included).
    pub fn len(&self) -> LayerId {
        self.layers.len() as LayerId
    }

    /// Every layer id, top first.
    pub fn ids(&self) -> std::ops::Range<LayerId> {
        0..self.len()
    }

    pub fn fd(&self, l: LayerId) -> R<BorrowedFd<'_>> {
        self.layers
            .get(l as usize)
            .map(|l| l.fd.as_fd())
            .ok_or(Errno::EIO)
    }

    /// The device of layer `l`'s filesystem.
    pub fn dev(&self, l: LayerId) -> Option<u64> {
        self.layers.get(l as usize).map(|l| l.dev)
    }

    /// The device shared by every layer, when they are all on one filesystem.
    pub fn same_dev(&self) -> Option<u64> {
        let dev0 = self.layers.first()?.dev;
        self.layers.iter().all(|l| l.dev == dev0).then_some(dev0)
    }

    pub fn has_upper(&self) -> bool {
        self.has_upper
    }

    pub fn is_upper(&self, l: LayerId) -> bool {
        self.has_upper && l == 0
    }

    /// `EROFS` unless there is an upper layer.
    pub fn writable(&self) -> R<()> {
        if self.has_upper {
            Ok(())
        } else {
            Err(Errno::EROFS)
        }
    }

    pub fn work_fd(&self) -> R<BorrowedFd<'_>> {
        self.work.as_ref().map(|f| f.as_fd()).ok_or(Errno::EROFS)
    }

    pub fn fsync_copyup(&self) -> bool {
        self.fsync_copyup
    }

    pub fn flavour(&self) -> Flavour {
        self.flavour
    }

    /// A fresh name for a temporary object in the work dir.
    pub fn tmp_name(&self) -> OsString {
        let n = self.tmp_counter.fetch_add(1, Ordering::Relaxed);
        // The pid of the serving process (read once: getpid is a syscall, and this runs on
        // every copy-up), so names never collide with a crashed earlier server's leftovers.
        let pid = *self.pid.get_or_init(std::process::id);
        OsString::from(format!("#strata-{pid}-{n}"))
    }
}
