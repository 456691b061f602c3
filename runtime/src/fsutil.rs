//! Crash-safety helpers on host paths the runtime owns (the store root, container dirs, the
//! runroot): atomic file replacement, directory fsync, advisory file locks, staging names. One
//! owner for each: store, registry and container code all use these.
//!
//! Paths here are the runtime's own, never names taken from an image: those go through
//! [`strata_fs::at`].

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use nix::fcntl::{Flock, FlockArg};

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// A fresh unique name in `tmp/`: `<pid>-<nanos>-<n>-<what>`. The pid prefix lets
/// [`clean_stale_tmp`] tell staging of live processes from leftovers.
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

/// fsync a directory, so the names created, renamed or removed in it are durable.
pub(crate) fn fsync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir).and_then(|f| f.sync_all())
}

/// Replace `path` with `bytes` so a crash leaves the old or the new content, never a mix:
/// write a sibling temp file, fsync it, rename it over `path`, fsync the directory.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    replace(path, bytes, true)
}

/// [`write_atomic`] without the fsyncs, for state that need not survive a crash (files under
/// the runroot, a tmpfs): readers still never see a half-written file.
pub(crate) fn write_atomic_volatile(path: &Path, bytes: &[u8]) -> io::Result<()> {
    replace(path, bytes, false)
}

fn replace(path: &Path, bytes: &[u8], durable: bool) -> io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let tmp = dir.join(format!(".{name}.{}-{n}.tmp", std::process::id()));
    let written = (|| {
        let mut f = OpenOptions::new().write(true).create_new(true).open(&tmp)?;
        f.write_all(bytes)?;
        if durable {
            f.sync_all()?;
        }
        std::fs::rename(&tmp, path)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written?;
    if durable {
        fsync_dir(dir)?;
    }
    Ok(())
}

/// How [`lock_file`] locks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum LockMode {
    Shared,
    Exclusive,
    /// Exclusive, or fail at once with `EWOULDBLOCK` when someone else holds it.
    TryExclusive,
}

/// Open (creating it, never truncating) and `flock(2)` the file at `path`; the lock lasts as
/// long as the returned value (and the kernel drops it when the process dies). The file stays
/// readable and writable through the guard.
pub(crate) fn lock_file(path: &Path, mode: LockMode) -> io::Result<Flock<File>> {
    let f = OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(path)?;
    let arg = match mode {
        LockMode::Shared => FlockArg::LockShared,
        LockMode::Exclusive => FlockArg::LockExclusive,
        LockMode::TryExclusive => FlockArg::LockExclusiveNonblock,
    };
    Flock::lock(f, arg).map_err(|(_, e)| e.into())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_atomic_replaces_and_leaves_no_temp() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("f.json");
        write_atomic(&p, b"one").unwrap();
        write_atomic(&p, b"two").unwrap();
        write_atomic_volatile(&p, b"three").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"three");
        assert_eq!(std::fs::read_dir(t.path()).unwrap().count(), 1);
        // A failed write leaves the old content and no temp file.
        assert!(write_atomic(&t.path().join("missing/f"), b"x").is_err());
        assert_eq!(std::fs::read_dir(t.path()).unwrap().count(), 1);
    }

    #[test]
    fn lock_file_excludes_and_shares() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("lock");
        let held = lock_file(&p, LockMode::Exclusive).unwrap();
        let e = lock_file(&p, LockMode::TryExclusive).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EWOULDBLOCK));
        drop(held);
        let a = lock_file(&p, LockMode::Shared).unwrap();
        let b = lock_file(&p, LockMode::Shared).unwrap();
        assert!(lock_file(&p, LockMode::TryExclusive).is_err());
        drop((a, b));
        lock_file(&p, LockMode::TryExclusive).unwrap();
    }
}
