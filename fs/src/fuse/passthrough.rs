//! FUSE passthrough: which opens hand their backing file to the kernel, so reads and writes
//! never reach this process.
//!
//! The kernel's rules (fs/fuse/iomode.c): while an inode has a passthrough open, every other
//! passthrough open of it must use the same backing (the same backing id) and a cached
//! (page-cache) open is refused with ETXTBSY; while it has a cached open, a passthrough open is
//! refused. An open with `FOPEN_DIRECT_IO` and no passthrough is always allowed.
//!
//! Our policy:
//! - a lazily fetched lower file whose data is still arriving (`OpenInfo::lazy`) is opened
//!   cached (or direct): every read of a page not cached reaches us, which fetch its range
//!   first. Its cached pages are kept (`FOPEN_KEEP_CACHE`): each was read through us after its
//!   range was in place. (Without it the open drops the pages, which waits in the kernel for
//!   reads of the file in flight: one process's open would wait for another's fetch.)
//! - a file whose data may still move is opened cached: a lower file on a writable mount (a
//!   later copy-up switches its readers to the upper copy, which a passthrough open could not
//!   follow);
//! - every other file (upper files; any file of a read-only mount) is opened passthrough, with
//!   one backing per inode shared by all its opens, read-write when we can, so writers can
//!   share it too;
//! - when the two meet (an inode still has cached opens from before its copy-up), new opens
//!   stay cached until the last one closes; an open that can use neither (a writer while the
//!   shared backing is read-only) goes `FOPEN_DIRECT_IO` through us.

use std::collections::HashMap;
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};

use fuser::BackingId;
use parking_lot::Mutex;

use crate::ids::{Fh, Ino};
use crate::unionfs::Fs;

/// How to answer an open.
pub(crate) enum Mode {
    Passthrough(Arc<BackingId>),
    /// Through the page cache; `keep`: the cached pages are still valid. Not so when a
    /// passthrough open was refused: earlier passthrough writes bypassed the page cache.
    Cached {
        keep: bool,
    },
    Direct,
}

struct Backing {
    id: Weak<BackingId>,
    rw: bool,
}

struct Open {
    ino: Ino,
    cached: bool,
    _backing: Option<Arc<BackingId>>,
}

#[derive(Default)]
struct State {
    backing: HashMap<Ino, Backing>,
    /// Live cached opens per inode.
    cached: HashMap<Ino, usize>,
    opens: HashMap<Fh, Open>,
}

#[derive(Default)]
pub(crate) struct Passthrough {
    /// Negotiated with the kernel in `init`.
    pub enabled: AtomicBool,
    state: Mutex<State>,
}

impl Passthrough {
    /// Decide how to answer the open of handle `fh`; `register` turns an fd into a backing id
    /// (the reply's `open_backing`).
    pub fn open(
        &self,
        fs: &Fs,
        fh: Fh,
        register: impl FnOnce(BorrowedFd<'_>) -> std::io::Result<BackingId>,
    ) -> Mode {
        let Some(info) = fs.open_info(fh) else {
            return Mode::Cached { keep: false };
        };
        let mut st = self.state.lock();
        let live = st
            .backing
            .get(&info.ino)
            .and_then(|b| b.id.upgrade().map(|id| (id, b.rw)));
        let movable = info.lower && !fs.read_only();
        let mode = if info.lazy {
            // Data still arriving: every read not served from the page cache must come to us
            // (pages cached came through us, after their range was in place).
            if live.is_some() {
                Mode::Direct
            } else {
                Mode::Cached { keep: true }
            }
        } else if !self.enabled.load(Ordering::Relaxed)
            || movable
            || st.cached.get(&info.ino).is_some_and(|&n| n > 0)
        {
            if live.is_some() {
                Mode::Direct
            } else {
                Mode::Cached { keep: true }
            }
        } else if let Some((id, rw)) = live {
            if rw || !info.writable {
                Mode::Passthrough(id)
            } else {
                Mode::Direct
            }
        } else {
            let (fd, rw) = if info.writable || fs.read_only() {
                (info.fd.clone(), info.writable)
            } else {
                match fs.upper_rw_fd(info.ino) {
                    Ok(fd) => (Arc::new(fd), true),
                    Err(_) => (info.fd.clone(), false),
                }
            };
            match register(fd.as_fd()) {
                Ok(id) => {
                    let id = Arc::new(id);
                    st.backing.insert(
                        info.ino,
                        Backing {
                            id: Arc::downgrade(&id),
                            rw,
                        },
                    );
                    Mode::Passthrough(id)
                }
                Err(e) => {
                    log::debug!("passthrough open of inode {}: {e}", info.ino);
                    Mode::Cached { keep: false }
                }
            }
        };
        let cached = matches!(mode, Mode::Cached { .. });
        if cached {
            *st.cached.entry(info.ino).or_insert(0) += 1;
        }
        let backing = match &mode {
            Mode::Passthrough(id) => Some(id.clone()),
            _ => None,
        };
        st.opens.insert(
            fh,
            Open {
                ino: info.ino,
                cached,
                _backing: backing,
            },
        );
        mode
    }

    /// Forget handle `fh` (its release); the last open of an inode drops its backing id.
    pub fn release(&self, fh: Fh) {
        let mut st = self.state.lock();
        let Some(o) = st.opens.remove(&fh) else {
            return;
        };
        if o.cached {
            if let Some(n) = st.cached.get_mut(&o.ino) {
                *n -= 1;
                if *n == 0 {
                    st.cached.remove(&o.ino);
                }
            }
        }
        let ino = o.ino;
        drop(o);
        if st
            .backing
            .get(&ino)
            .is_some_and(|b| b.id.strong_count() == 0)
        {
            st.backing.remove(&ino);
        }
    }
}
