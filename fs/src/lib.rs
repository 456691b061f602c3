//! strata-fs: the union filesystem.
//!
//! Read-only lower directories (top first, overlayfs order) plus one writable upper directory
//! and a work directory, merged into one view served over FUSE. The on-disk format is kernel
//! overlayfs's, so an upper dir written here mounts under kernel overlayfs or fuse-overlayfs
//! with the same view.
//!
//! Modules, bottom up: `at` (the `*at()` syscalls, public), `format` (the overlay on-disk
//! format: whiteouts, opaque dirs, redirects; public), `index` (a merged directory index); the
//! parts of the filesystem, each its own type with its own locks: `layers` (the layer stack),
//! `inodes` (the inode table), `dirfds` (the dirfd cache), `handles` (open files and
//! directories), `ns` (the namespace lock); `tree` (the parts together and name resolution; the
//! lock order is in its module doc); the operations, each module using only those before it:
//! `unionfs` (`Fs`, lookup, getattr, readdir), `copyup`, `ops` (namespace changes), `file` (open
//! files, data, xattrs); `fuse` (the only module that knows `fuser`).

pub mod at;
mod copyup;
mod dirfds;
mod file;
pub mod format;
mod fuse;
mod handles;
mod ids;
mod index;
mod inodes;
mod layers;
pub mod mountinfo;
mod ns;
pub mod ops;
#[cfg(test)]
mod testutil;
mod tree;
pub mod unionfs;

use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub use crate::format::Flavour;
pub use crate::fuse::options::{parse_id_map, IdRange, OptionError, ViewOptions};
pub use crate::ids::Fh;
pub use crate::ids::Ino;
pub use crate::ops::SetAttr;
pub use crate::unionfs::{Attr, Ctx, DirEnt, DirList, Fs, FsConfig, LowerData, ROOT_INO};

/// What to mount.
#[derive(Clone, Debug, Default)]
pub struct MountOptions {
    /// Read-only layers, top first.
    pub lowers: Vec<PathBuf>,
    /// The writable layer; `None` mounts read-only.
    pub upper: Option<PathBuf>,
    /// Scratch dir on the same filesystem as `upper`, for atomic copy-up.
    pub work: Option<PathBuf>,
    /// Serving threads (0 = default): that many read and answer requests, and one fewer offload
    /// workers take the operations that may take long (copy-ups, fsync); 1 answers everything
    /// on one thread.
    pub threads: usize,
    /// Source name shown in /proc/mounts.
    pub fsname: String,
    /// The form overlay xattrs are written in; `None`: [`Flavour::for_current_user`].
    pub flavour: Option<Flavour>,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("no lowerdir given")]
    NoLower,
    #[error("{path}: {source}")]
    Layer {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("upperdir and workdir must be given together")]
    UpperWithoutWork,
    #[error("workdir {work} and upperdir {upper} must be on the same filesystem")]
    WorkDev { upper: PathBuf, work: PathBuf },
    #[error("cannot prepare workdir {path}: {source}")]
    Work {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("mount {path}: {source}")]
    Mount {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("unmount {path}: {source}")]
    Unmount { path: PathBuf, source: nix::Error },
}

/// A live mount served by background threads of this process. Dropping it unmounts.
pub struct Mount {
    mountpoint: PathBuf,
    conn: Option<u64>,
    thread: Option<JoinHandle<std::io::Result<()>>>,
    fs: Arc<Fs>,
}

fn open_dir(p: &Path) -> Result<OwnedFd, Error> {
    let f = std::fs::File::open(p).map_err(|source| Error::Layer {
        path: p.to_path_buf(),
        source,
    })?;
    if !f
        .metadata()
        .map_err(|source| Error::Layer {
            path: p.to_path_buf(),
            source,
        })?
        .is_dir()
    {
        return Err(Error::Layer {
            path: p.to_path_buf(),
            source: std::io::Error::from_raw_os_error(libc::ENOTDIR),
        });
    }
    Ok(f.into())
}

/// Remove leftovers of an earlier run from the work dir.
fn clean_work(work: &Path) -> Result<(), Error> {
    let err = |e: nix::errno::Errno| Error::Work {
        path: work.to_path_buf(),
        source: e.into(),
    };
    let dir = at::open_dir(work).map_err(err)?;
    for name in at::list_sorted(dir.as_fd()).map_err(err)? {
        if name.as_encoded_bytes().starts_with(b"#strata-") {
            at::remove_all_at(dir.as_fd(), &name).map_err(err)?;
        }
    }
    Ok(())
}

/// Check the options and open the layer stack (no mount).
pub fn open_fs(opts: &MountOptions) -> Result<Fs, Error> {
    open_fs_with(opts, None)
}

/// [`open_fs`] with a supplier of lower files' data (lazily fetched layers).
pub fn open_fs_with(
    opts: &MountOptions,
    lower_data: Option<Arc<dyn LowerData>>,
) -> Result<Fs, Error> {
    if opts.lowers.is_empty() {
        return Err(Error::NoLower);
    }
    let lowers = opts
        .lowers
        .iter()
        .map(|p| open_dir(p))
        .collect::<Result<Vec<_>, _>>()?;
    let (upper, work) = match (&opts.upper, &opts.work) {
        (None, None) => (None, None),
        (Some(u), Some(w)) => {
            let uf = open_dir(u)?;
            let wf = open_dir(w)?;
            let ud = std::fs::metadata(u).map(|m| m.dev());
            let wd = std::fs::metadata(w).map(|m| m.dev());
            if ud.ok() != wd.ok() {
                return Err(Error::WorkDev {
                    upper: u.clone(),
                    work: w.clone(),
                });
            }
            clean_work(w)?;
            (Some(uf), Some(wf))
        }
        _ => return Err(Error::UpperWithoutWork),
    };
    Fs::new(FsConfig {
        lowers,
        upper,
        work,
        fsync_copyup: false,
        flavour: opts.flavour.unwrap_or_else(Flavour::for_current_user),
        lower_data,
    })
    .map_err(|e| Error::Layer {
        path: opts.lowers[0].clone(),
        source: std::io::Error::from_raw_os_error(e as i32),
    })
}

/// Mount the union described by `opts` at `mountpoint`. Returns once the mount is live; it is
/// served by background threads of this process, with dev, suid and allow_other semantics so
/// it can be a container's root filesystem.
pub fn mount(opts: MountOptions, mountpoint: &Path) -> Result<Mount, Error> {
    mount_with(opts, ViewOptions::default(), mountpoint)
}

/// [`mount`], presenting the union as `view` says (fuse-overlayfs's id mapping, squashing,
/// timeouts, …).
pub fn mount_with(
    opts: MountOptions,
    view: ViewOptions,
    mountpoint: &Path,
) -> Result<Mount, Error> {
    mount_with_data(opts, view, mountpoint, None)
}

/// [`mount_with`], with lower files whose data `lower_data` supplies on first open.
pub fn mount_with_data(
    opts: MountOptions,
    view: ViewOptions,
    mountpoint: &Path,
    lower_data: Option<Arc<dyn LowerData>>,
) -> Result<Mount, Error> {
    let fs = Arc::new(open_fs_with(&opts, lower_data)?);
    let merr = |source| Error::Mount {
        path: mountpoint.to_path_buf(),
        source,
    };
    let mp = mountpoint.canonicalize().map_err(merr)?;
    // Default: one thread per core, at least 2 (a long copy-up must not stall other requests:
    // it runs on a second thread) and at most 4 (more only adds context switches on small
    // machines).
    let threads = if opts.threads == 0 {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2)
            .clamp(2, 4)
    } else {
        opts.threads
    };
    let fsname = if opts.fsname.is_empty() {
        "strata".to_string()
    } else {
        opts.fsname.clone()
    };
    let thread = fuse::serve(fs.clone(), &mp, &fsname, threads, view).map_err(merr)?;
    let conn = fuse_minor(&mp);
    if let Some(minor) = conn {
        raise_readahead(minor);
    }
    Ok(Mount {
        mountpoint: mp,
        conn,
        thread: Some(thread),
        fs,
    })
}

/// Readahead window of our mounts, in KiB: one READ request of the largest size the kernel
/// allows (`fuse.max_pages_limit`, 256 pages). The kernel starts FUSE mounts at 128 KiB and
/// the INIT reply can only lower it, so a sequential read of a file the daemon serves took 8
/// round trips per MiB; the mount's bdi in sysfs is the one place to raise it.
const READ_AHEAD_KB: u32 = 1024;

/// Raise the readahead window of FUSE connection `minor` (best effort: sysfs may be read-only
/// or absent in a container, and then reads just use smaller requests).
fn raise_readahead(minor: u64) {
    let path = format!("/sys/class/bdi/0:{minor}/read_ahead_kb");
    let cur: u32 = match std::fs::read_to_string(&path) {
        Ok(s) => s.trim().parse().unwrap_or(0),
        Err(_) => return,
    };
    if cur < READ_AHEAD_KB {
        if let Err(e) = std::fs::write(&path, READ_AHEAD_KB.to_string()) {
            log::debug!("{path}: {e}");
        }
    }
}

/// Device minor of the mount at `mp` (its FUSE connection number), read from mountinfo.
/// Deliberately not a `stat` of the mountpoint: a request into the mount from the server
/// process itself could still be in flight when a client unmounts (EBUSY).
fn fuse_minor(mp: &Path) -> Option<u64> {
    mountinfo::mount_at(mp).map(|m| u64::from(m.dev.1))
}

impl Mount {
    pub fn mountpoint(&self) -> &Path {
        &self.mountpoint
    }

    /// The filesystem core behind this mount.
    pub fn fs(&self) -> &Arc<Fs> {
        &self.fs
    }

    /// Unmount and wait for the serving threads. Fails (and stays mounted) when busy.
    pub fn unmount(mut self) -> Result<(), Error> {
        nix::mount::umount2(&self.mountpoint, nix::mount::MntFlags::empty()).map_err(|source| {
            Error::Unmount {
                path: self.mountpoint.clone(),
                source,
            }
        })?;
        self.join(Duration::from_secs(10));
        Ok(())
    }

    /// Block until the mount goes away (unmounted by someone else), then clean up.
    pub fn wait(mut self) {
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }

    fn abort(&self) {
        if let Some(c) = self.conn {
            let _ = std::fs::write(format!("/sys/fs/fuse/connections/{c}/abort"), b"1");
        }
    }

    /// Wait for the serving threads; abort the connection after `wait`, and give up (leaving
    /// the threads behind) rather than block forever.
    fn join(&mut self, wait: Duration) {
        let Some(t) = self.thread.take() else { return };
        let finished_by = |t: &JoinHandle<_>, d: Duration| {
            let deadline = Instant::now() + d;
            while !t.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            t.is_finished()
        };
        if !finished_by(&t, wait) {
            self.abort();
            if !finished_by(&t, Duration::from_secs(5)) {
                log::warn!(
                    "{}: FUSE server threads did not stop",
                    self.mountpoint.display()
                );
                return;
            }
        }
        let _ = t.join();
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        if self.thread.is_none() {
            return;
        }
        if nix::mount::umount2(&self.mountpoint, nix::mount::MntFlags::empty()).is_err() {
            let _ = nix::mount::umount2(&self.mountpoint, nix::mount::MntFlags::MNT_DETACH);
        }
        self.join(Duration::from_secs(5));
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn fuse_minor_of_root() {
        // The root filesystem is always in mountinfo.
        assert!(super::fuse_minor(std::path::Path::new("/")).is_some());
    }
}
