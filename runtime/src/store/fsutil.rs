//! Small crash-safety helpers: atomic file replacement, directory fsync, staging names, flock.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use nix::fcntl::{Flock, FlockArg};

use super::{io_at, Result};

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// A fresh unique name in `tmp/`: `<pid>-<nanos>-<n>`. The pid prefix lets `clean_stale_tmp`
/// tell staging of live processes from leftovers.
pub(crate) fn unique_tmp(tmp: &Path, what: &str) -> PathBuf {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    tmp.join(format!("{}-{nanos}-{n}-{what}", std::process::id()))
}

/// Remove `tmp/` entries whose creating process is gone.
pub(crate) fn clean_stale_tmp(tmp: &Path) {
    let Ok(rd) = std::fs::read_dir(tmp) else {
        return;
    };
    for e in rd.flatten() {
        let name = e.file_name();
        let name = name.to_string_lossy();
        let pid = name.split('-').next().and_then(|p| p.parse::<u32>().ok());
        let alive = pid.is_some_and(|p| Path::new(&format!("/proc/{p}")).exists());
        if !alive {
            let _ = remove_any(&e.path());
        }
    }
}

/// Remove a file or a whole tree, never following symlinks (std's remove_dir_all does not).
pub(crate) fn remove_any(p: &Path) -> io::Result<()> {
    match std::fs::symlink_metadata(p) {
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(p),
        Ok(_) => std::fs::remove_file(p),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

pub(crate) fn fsync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|f| f.sync_all())
        .map_err(io_at(dir))
}

/// Replace `path` with `bytes`: write a sibling temp file, fsync, rename, fsync the directory.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        path.file_name()
            .map(|n| n.to_string_lossy())
            .unwrap_or_default(),
        std::process::id()
    ));
    let mut f = File::create(&tmp).map_err(io_at(&tmp))?;
    f.write_all(bytes)
        .and_then(|_| f.sync_all())
        .map_err(io_at(&tmp))?;
    drop(f);
    std::fs::rename(&tmp, path).map_err(io_at(path))?;
    fsync_dir(dir)
}

/// The store-wide lock; released on drop.
pub(crate) struct StoreLock {
    _lock: Flock<File>,
}

pub(crate) fn lock(root: &Path, exclusive: bool) -> Result<StoreLock> {
    let p = root.join("store.lock");
    let f = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .read(true)
        .open(&p)
        .map_err(io_at(&p))?;
    let arg = if exclusive {
        FlockArg::LockExclusive
    } else {
        FlockArg::LockShared
    };
    let lock = Flock::lock(f, arg).map_err(|(_, e)| io_at(&p)(e.into()))?;
    Ok(StoreLock { _lock: lock })
}

/// A staging path removed on drop unless `keep()` was called.
pub(crate) struct Staging {
    path: PathBuf,
    keep: bool,
}

impl Staging {
    pub(crate) fn new(path: PathBuf) -> Staging {
        Staging { path, keep: false }
    }
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }
    pub(crate) fn keep(mut self) {
        self.keep = true;
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if !self.keep {
            let _ = remove_any(&self.path);
        }
    }
}
