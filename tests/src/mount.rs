//! Mount guards, FUSE watchdogs and timeouts for tests that touch real mounts.
//!
//! Vocabulary:
//! - [`MountGuard`]: one mounted filesystem. Dropping it unmounts (`umount`, then `umount -l` as a
//!   last resort), and kills and reaps the daemon if the guard started one in the foreground.
//! - [`AbortHandle`]: a cheap, cloneable way to break a mount that stopped answering: it aborts the
//!   FUSE connection (`/sys/fs/fuse/connections/<minor(st_dev)>/abort`) so blocked syscalls return
//!   `ENOTCONN`, or lazily unmounts a kernel mount.
//! - [`Watchdog`]: a timer thread. When its deadline passes before [`Watchdog::finish`], it fires every
//!   registered [`AbortHandle`]; the test then fails instead of hanging. [`with_watchdog`] wraps a step.
//! - [`run_as`]: run a closure in a forked child with dropped credentials (for permission checks) and
//!   collect its result under a deadline.
//! - [`sweep_stale`]: lazily unmount mounts left under a temp-dir prefix by test processes that died.
//!
//! Nothing here mounts or unmounts anything outside the paths it is given.

use std::ffi::CString;
use std::fmt;
use std::fs;
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// Errors from mounting and unmounting.
#[derive(Debug)]
pub enum MountError {
    /// The mount command could not be started.
    Spawn { cmd: String, source: io::Error },
    /// The mount command exited with a failure status.
    Failed {
        cmd: String,
        status: String,
        stderr: String,
    },
    /// The mount command (or daemon) did not produce a mount before the deadline.
    Timeout {
        cmd: String,
        mnt: PathBuf,
        stderr: String,
    },
    /// The command succeeded but nothing is mounted on the mountpoint.
    NotMounted {
        cmd: String,
        mnt: PathBuf,
        stderr: String,
    },
    /// `umount` failed.
    Unmount { mnt: PathBuf, stderr: String },
    /// Some other I/O step failed.
    Io { what: String, source: io::Error },
}

impl fmt::Display for MountError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MountError::Spawn { cmd, source } => write!(f, "cannot run `{cmd}`: {source}"),
            MountError::Failed {
                cmd,
                status,
                stderr,
            } => {
                write!(f, "`{cmd}` failed ({status}): {}", stderr.trim())
            }
            MountError::Timeout { cmd, mnt, stderr } => write!(
                f,
                "`{cmd}` did not mount {} in time: {}",
                mnt.display(),
                stderr.trim()
            ),
            MountError::NotMounted { cmd, mnt, stderr } => write!(
                f,
                "`{cmd}` returned but {} is not a mountpoint: {}",
                mnt.display(),
                stderr.trim()
            ),
            MountError::Unmount { mnt, stderr } => {
                write!(f, "cannot unmount {}: {}", mnt.display(), stderr.trim())
            }
            MountError::Io { what, source } => write!(f, "{what}: {source}"),
        }
    }
}

impl std::error::Error for MountError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            MountError::Spawn { source, .. } | MountError::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

fn io_err(what: impl Into<String>) -> impl FnOnce(io::Error) -> MountError {
    let what = what.into();
    move |source| MountError::Io { what, source }
}

/// Mountinfo is read by the product's one reader (bytes, octal escapes): [`strata_fs::mountinfo`].
pub use strata_fs::mountinfo::{mount_at, mounts, MountInfo};

/// Is something mounted exactly on `path`?
pub fn is_mounted(path: &Path) -> bool {
    mount_at(path).is_some()
}

fn run_quiet(cmd: &mut Command) -> Result<(), String> {
    match cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
    {
        Ok(out) if out.status.success() => Ok(()),
        Ok(out) => Err(String::from_utf8_lossy(&out.stderr).into_owned()),
        Err(e) => Err(e.to_string()),
    }
}

/// `umount PATH` (no lazy flag). Fails if busy or not mounted.
pub fn unmount(path: &Path) -> Result<(), MountError> {
    run_quiet(Command::new("umount").arg(path)).map_err(|stderr| MountError::Unmount {
        mnt: path.to_path_buf(),
        stderr,
    })
}

/// `umount -l PATH`: detach now, clean up when no longer busy. Errors are ignored (last resort).
pub fn lazy_unmount(path: &Path) {
    let _ = run_quiet(Command::new("umount").arg("-l").arg(path));
}

/// Abort the FUSE connection whose device minor is `minor` (see `/sys/fs/fuse/connections`).
/// Every request in flight fails with `ENOTCONN`; the daemon sees its `/dev/fuse` fd go dead.
/// When the fusectl filesystem is not mounted on `/sys/fs/fuse/connections` (common in
/// containers and minimal VMs), a private instance is mounted in a temp dir for the write.
pub fn abort_fuse_connection(minor: u32) -> io::Result<()> {
    let sys = PathBuf::from(format!("/sys/fs/fuse/connections/{minor}/abort"));
    if sys.exists() {
        return fs::write(sys, b"1");
    }
    let dir = tempfile::Builder::new()
        .prefix("strata-fusectl-")
        .tempdir()?;
    let target = cpath(dir.path());
    let fstype = CString::new("fusectl").unwrap_or_default();
    // SAFETY: valid NUL-terminated strings; no data argument.
    let r = unsafe {
        libc::mount(
            fstype.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    let res = fs::write(dir.path().join(format!("{minor}/abort")), b"1");
    // SAFETY: unmounting the instance we just mounted.
    unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) };
    res
}

/// How to break a mount that stopped answering.
#[derive(Debug, Clone)]
pub struct AbortHandle {
    path: PathBuf,
    fuse_minor: Option<u32>,
    daemon_pid: Option<u32>,
}

impl AbortHandle {
    /// Abort the FUSE connection (if FUSE), kill the daemon the guard started (if any: a dead
    /// daemon also ends the connection), then detach the mount lazily.
    pub fn abort(&self) {
        if let Some(minor) = self.fuse_minor {
            let _ = abort_fuse_connection(minor);
        }
        if let Some(pid) = self.daemon_pid {
            // SAFETY: signalling our own child; the guard reaps it.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        }
        lazy_unmount(&self.path);
    }
}

/// A mounted filesystem, unmounted on drop.
#[derive(Debug)]
pub struct MountGuard {
    path: PathBuf,
    info: MountInfo,
    daemon: Option<Child>,
    stderr_log: Option<PathBuf>,
    unmounted: bool,
}

/// How long mount commands and unmounts may take before the guard gives up.
pub const MOUNT_TIMEOUT: Duration = Duration::from_secs(30);

fn poll_mounted(mnt: &Path, before: Option<(u32, u32)>) -> Option<MountInfo> {
    mount_at(mnt).filter(|m| Some(m.dev) != before)
}

fn read_log(path: Option<&Path>) -> String {
    path.and_then(|p| fs::read_to_string(p).ok())
        .unwrap_or_default()
}

fn wait_child(child: &mut Child, deadline: Instant) -> Option<std::process::ExitStatus> {
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(10)),
            _ => return None,
        }
    }
}

impl MountGuard {
    /// Run `sh -c CMD`, which must return once `mnt` is mounted (like `mount -t overlay …` or a
    /// daemonizing FUSE server). `stderr_log` receives the command's stderr.
    pub fn by_command(cmd: &str, mnt: &Path, stderr_log: &Path) -> Result<Self, MountError> {
        let before = mount_at(mnt).map(|m| m.dev);
        let log = fs::File::create(stderr_log).map_err(io_err("create stderr log"))?;
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(cmd)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|source| MountError::Spawn {
                cmd: cmd.to_string(),
                source,
            })?;
        let deadline = Instant::now() + MOUNT_TIMEOUT;
        let Some(status) = wait_child(&mut child, deadline) else {
            let _ = child.kill();
            let _ = child.wait();
            if let Some(info) = poll_mounted(mnt, before) {
                // Mounted but the command hung: keep nothing alive, detach.
                drop(Self::adopt(mnt, info, None, Some(stderr_log)));
            }
            return Err(MountError::Timeout {
                cmd: cmd.to_string(),
                mnt: mnt.to_path_buf(),
                stderr: read_log(Some(stderr_log)),
            });
        };
        if !status.success() {
            if let Some(info) = poll_mounted(mnt, before) {
                drop(Self::adopt(mnt, info, None, Some(stderr_log)));
            }
            return Err(MountError::Failed {
                cmd: cmd.to_string(),
                status: status.to_string(),
                stderr: read_log(Some(stderr_log)),
            });
        }
        match poll_mounted(mnt, before) {
            Some(info) => Ok(Self::adopt(mnt, info, None, Some(stderr_log))),
            None => Err(MountError::NotMounted {
                cmd: cmd.to_string(),
                mnt: mnt.to_path_buf(),
                stderr: read_log(Some(stderr_log)),
            }),
        }
    }

    /// Spawn a FUSE server that stays in the foreground (e.g. `strata-overlay -f …`), wait until
    /// `mnt` is mounted, and keep the child: dropping the guard unmounts, then reaps (or kills) it.
    pub fn foreground(mut cmd: Command, mnt: &Path, stderr_log: &Path) -> Result<Self, MountError> {
        let shown = format!("{cmd:?}");
        let before = mount_at(mnt).map(|m| m.dev);
        let log = fs::File::create(stderr_log).map_err(io_err("create stderr log"))?;
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|source| MountError::Spawn {
                cmd: shown.clone(),
                source,
            })?;
        let deadline = Instant::now() + MOUNT_TIMEOUT;
        loop {
            if let Some(info) = poll_mounted(mnt, before) {
                return Ok(Self::adopt(mnt, info, Some(child), Some(stderr_log)));
            }
            if let Ok(Some(status)) = child.try_wait() {
                return Err(MountError::Failed {
                    cmd: shown,
                    status: status.to_string(),
                    stderr: read_log(Some(stderr_log)),
                });
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                if let Some(info) = poll_mounted(mnt, before) {
                    drop(Self::adopt(mnt, info, None, Some(stderr_log)));
                }
                return Err(MountError::Timeout {
                    cmd: shown,
                    mnt: mnt.to_path_buf(),
                    stderr: read_log(Some(stderr_log)),
                });
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// Take charge of a mount that already exists on `mnt` (e.g. one made with `mount(2)`).
    pub fn existing(mnt: &Path) -> Result<Self, MountError> {
        match mount_at(mnt) {
            Some(info) => Ok(Self::adopt(mnt, info, None, None)),
            None => Err(MountError::NotMounted {
                cmd: String::from("(existing)"),
                mnt: mnt.to_path_buf(),
                stderr: String::new(),
            }),
        }
    }

    fn adopt(mnt: &Path, info: MountInfo, daemon: Option<Child>, log: Option<&Path>) -> Self {
        MountGuard {
            path: mnt.to_path_buf(),
            info,
            daemon,
            stderr_log: log.map(Path::to_path_buf),
            unmounted: false,
        }
    }

    /// The mountpoint.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The filesystem type from mountinfo.
    pub fn fstype(&self) -> &str {
        &self.info.fstype
    }

    /// Is this a FUSE mount?
    pub fn is_fuse(&self) -> bool {
        self.info.fstype == "fuse" || self.info.fstype.starts_with("fuse.")
    }

    /// What the command (or daemon) wrote on stderr so far.
    pub fn stderr(&self) -> String {
        read_log(self.stderr_log.as_deref())
    }

    /// A handle a [`Watchdog`] can use to break this mount.
    pub fn abort_handle(&self) -> AbortHandle {
        AbortHandle {
            path: self.path.clone(),
            fuse_minor: self.is_fuse().then_some(self.info.dev.1),
            daemon_pid: self.daemon.as_ref().map(Child::id),
        }
    }

    /// Unmount now and report failures (a busy mount is an error). The daemon, if any, must exit.
    pub fn unmount(mut self) -> Result<(), MountError> {
        self.unmounted = true;
        let res = self.unmount_inner(true);
        if res.is_err() {
            self.unmounted = false; // let Drop use the last resorts
        }
        res
    }

    fn is_mounted_here(&self) -> bool {
        mount_at(&self.path).map(|m| m.dev) == Some(self.info.dev)
    }

    fn unmount_inner(&mut self, strict: bool) -> Result<(), MountError> {
        if self.is_mounted_here() {
            // A FUSE release may still be in flight right after the last close(2); only a mount
            // that stays busy is an error.
            let deadline = Instant::now() + Duration::from_secs(3);
            let mut res = unmount(&self.path);
            while res.is_err() && Instant::now() < deadline && self.is_mounted_here() {
                thread::sleep(Duration::from_millis(50));
                res = unmount(&self.path);
            }
            if let (Err(e), true) = (res, self.is_mounted_here()) {
                if strict {
                    return Err(e); // Drop retries with the last resorts
                } else {
                    if self.is_fuse() {
                        let _ = abort_fuse_connection(self.info.dev.1);
                    }
                    lazy_unmount(&self.path);
                }
            }
        }
        if let Some(mut child) = self.daemon.take() {
            // A FUSE server exits on its own once unmounted; give it a moment, then kill it.
            if wait_child(&mut child, Instant::now() + Duration::from_secs(10)).is_none() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        Ok(())
    }
}

impl Drop for MountGuard {
    fn drop(&mut self) {
        if !self.unmounted {
            self.unmounted = true;
            let _ = self.unmount_inner(false);
        }
    }
}

/// A deadline for a step that touches mounts. Register mounts with [`Watchdog::watch`]; if the
/// deadline passes before [`Watchdog::finish`] (or drop), every registered mount is aborted.
pub struct Watchdog {
    handles: Arc<Mutex<Vec<AbortHandle>>>,
    fired: Arc<AtomicBool>,
    stop: Option<mpsc::Sender<()>>,
    thread: Option<thread::JoinHandle<()>>,
    timeout: Duration,
}

impl Watchdog {
    /// Start the timer.
    pub fn start(timeout: Duration) -> Self {
        let handles: Arc<Mutex<Vec<AbortHandle>>> = Arc::default();
        let fired = Arc::new(AtomicBool::new(false));
        let (tx, rx) = mpsc::channel::<()>();
        let (h, f) = (handles.clone(), fired.clone());
        let thread = thread::spawn(move || {
            if let Err(mpsc::RecvTimeoutError::Timeout) = rx.recv_timeout(timeout) {
                f.store(true, Ordering::SeqCst);
                let list = h.lock().map(|l| l.clone()).unwrap_or_default();
                for handle in list {
                    handle.abort();
                }
            }
        });
        Watchdog {
            handles,
            fired,
            stop: Some(tx),
            thread: Some(thread),
            timeout,
        }
    }

    /// Abort this mount too when the deadline passes.
    pub fn watch(&self, handle: AbortHandle) {
        if let Ok(mut list) = self.handles.lock() {
            list.push(handle);
        }
        if self.fired() {
            if let Ok(list) = self.handles.lock() {
                if let Some(h) = list.last() {
                    h.abort();
                }
            }
        }
    }

    /// Has the deadline passed (and the mounts been aborted)?
    pub fn fired(&self) -> bool {
        self.fired.load(Ordering::SeqCst)
    }

    /// The deadline this watchdog was started with.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Stop the timer. Returns `true` if it had already fired.
    pub fn finish(mut self) -> bool {
        self.stop_thread();
        self.fired()
    }

    fn stop_thread(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.stop_thread();
    }
}

/// Run `f` with the given mounts under a watchdog; panic if the deadline fired (even when `f`
/// itself returned), so a stuck mount fails the test rather than hanging it.
pub fn with_watchdog<T>(timeout: Duration, mounts: &[&MountGuard], f: impl FnOnce() -> T) -> T {
    let dog = Watchdog::start(timeout);
    for m in mounts {
        dog.watch(m.abort_handle());
    }
    let out = f();
    if dog.finish() {
        panic!("watchdog: step exceeded {timeout:?}; mounts were aborted");
    }
    out
}

/// Credentials for [`run_as`].
#[derive(Debug, Clone, Copy)]
pub struct Creds {
    pub uid: u32,
    pub gid: u32,
}

impl Creds {
    /// `nobody:nogroup` (65534:65534).
    pub const NOBODY: Creds = Creds {
        uid: 65534,
        gid: 65534,
    };
}

/// What happened to a [`run_as`] child.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChildOutcome {
    /// The closure returned these bytes.
    Done(Vec<u8>),
    /// The child died or exited without reporting (panic, signal, setup failure with this code).
    Crashed(i32),
    /// The child did not finish before the deadline and was killed.
    TimedOut,
}

/// Fork a child, drop to `creds` (no supplementary groups, all of real/effective/saved/fs ids),
/// run `f` there and return the bytes it produced. The child is always reaped; on timeout it is
/// killed with SIGKILL. `f` runs in a forked copy of a multi-threaded process: it must not take
/// locks another thread may hold (printing is fine, the child writes nothing shared).
pub fn run_as(creds: Creds, timeout: Duration, f: impl FnOnce() -> Vec<u8>) -> ChildOutcome {
    let mut fds = [0i32; 2];
    // SAFETY: `fds` is a valid array of two ints for pipe2 to fill.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return ChildOutcome::Crashed(-1);
    }
    let (rfd, wfd) = (fds[0], fds[1]);
    // SAFETY: fork in a test process; the child only runs `f` and raw syscalls, then `_exit`s
    // without running destructors or atexit handlers of the parent's state.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        // SAFETY: closing the two fds we just created.
        unsafe {
            libc::close(rfd);
            libc::close(wfd);
        }
        return ChildOutcome::Crashed(-1);
    }
    if pid == 0 {
        // SAFETY: child side: plain syscalls on values we own, then `_exit`.
        unsafe {
            libc::close(rfd);
            if libc::setgroups(0, std::ptr::null()) != 0
                || libc::setresgid(creds.gid, creds.gid, creds.gid) != 0
                || libc::setresuid(creds.uid, creds.uid, creds.uid) != 0
            {
                libc::_exit(101);
            }
        }
        let out = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
        let code = match out {
            Ok(bytes) => {
                let mut off = 0;
                while off < bytes.len() {
                    // SAFETY: writing from a live buffer into our pipe end.
                    let n = unsafe {
                        libc::write(wfd, bytes[off..].as_ptr().cast(), bytes.len() - off)
                    };
                    if n <= 0 {
                        break;
                    }
                    off += n as usize;
                }
                0
            }
            Err(_) => 102,
        };
        // SAFETY: leave the child without unwinding into the parent's test harness.
        unsafe { libc::_exit(code) };
    }
    // SAFETY: parent closes its copy of the write end; it owns `rfd` from here on.
    unsafe { libc::close(wfd) };
    // SAFETY: `rfd` is an open fd we own; File takes ownership and closes it.
    let mut reader = unsafe { <fs::File as std::os::fd::FromRawFd>::from_raw_fd(rfd) };
    let (tx, rx) = mpsc::channel();
    let reader_thread = thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = reader.read_to_end(&mut buf);
        let _ = tx.send(buf);
    });
    let deadline = Instant::now() + timeout;
    let mut status = 0;
    let timed_out = loop {
        // SAFETY: polling our own child.
        let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        if r == pid {
            break false;
        }
        if Instant::now() >= deadline {
            // SAFETY: killing and reaping our own child.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
                libc::waitpid(pid, &mut status, 0);
            }
            break true;
        }
        thread::sleep(Duration::from_millis(5));
    };
    let buf = rx.recv_timeout(Duration::from_secs(5)).unwrap_or_default();
    let _ = reader_thread.join();
    if timed_out {
        return ChildOutcome::TimedOut;
    }
    if libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0 {
        ChildOutcome::Done(buf)
    } else if libc::WIFEXITED(status) {
        ChildOutcome::Crashed(libc::WEXITSTATUS(status))
    } else {
        ChildOutcome::Crashed(-libc::WTERMSIG(status))
    }
}

/// Prefix for temp dirs whose mounts [`sweep_stale`] may clean: `<prefix><pid>-…`.
pub fn owned_prefix(tag: &str) -> String {
    format!("{tag}-{}-", std::process::id())
}

/// Lazily unmount every mount below `dir` whose path contains `<tag>-<pid>-` for a pid that is no
/// longer alive (mounts left by test processes that were killed). Mounts of live processes and
/// anything outside `dir` are never touched. Returns how many were detached.
pub fn sweep_stale(dir: &Path, tag: &str) -> usize {
    let marker = format!("{tag}-");
    let mut n = 0;
    for m in mounts().into_iter().rev() {
        let Ok(rest) = m.mount_point.strip_prefix(dir) else {
            continue;
        };
        let Some(first) = rest.components().next() else {
            continue;
        };
        let name = first.as_os_str().to_string_lossy();
        let Some(tail) = name.strip_prefix(&marker) else {
            continue;
        };
        let Some(pid) = tail.split('-').next().and_then(|p| p.parse::<i32>().ok()) else {
            continue;
        };
        let alive = Path::new(&format!("/proc/{pid}")).exists();
        if !alive {
            if m.fstype.starts_with("fuse") {
                let _ = abort_fuse_connection(m.dev.1);
            }
            lazy_unmount(&m.mount_point);
            n += 1;
        }
    }
    n
}

/// Delete the temp dirs `dir/<tag>-<pid>-…` of processes that no longer exist (left behind when a
/// test process was killed), once nothing is mounted below them. Call after [`sweep_stale`].
/// Returns how many were removed.
pub fn remove_stale_dirs(dir: &Path, tag: &str) -> usize {
    let marker = format!("{tag}-");
    let Ok(entries) = fs::read_dir(dir) else {
        return 0;
    };
    let all_mounts = mounts();
    let mut n = 0;
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(tail) = name.strip_prefix(&marker) else {
            continue;
        };
        let Some(pid) = tail.split('-').next().and_then(|p| p.parse::<i32>().ok()) else {
            continue;
        };
        let path = e.path();
        let dead = !Path::new(&format!("/proc/{pid}")).exists();
        let mounted_below = all_mounts.iter().any(|m| m.mount_point.starts_with(&path));
        let is_dir = e.file_type().map(|t| t.is_dir()).unwrap_or(false);
        // remove_dir_all does not follow symlinks; nothing is mounted below (checked above).
        if dead && is_dir && !mounted_below && fs::remove_dir_all(&path).is_ok() {
            n += 1;
        }
    }
    n
}

/// `st_dev` of `path` as (major, minor).
pub fn dev_of(path: &Path) -> io::Result<(u32, u32)> {
    let dev = fs::metadata(path)?.dev();
    Ok((libc::major(dev), libc::minor(dev)))
}

/// A path as a C string (paths in tests never contain NUL).
pub fn cpath(path: &Path) -> CString {
    CString::new(path.as_os_str().as_bytes()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_is_mounted_and_listed() {
        assert!(is_mounted(Path::new("/")));
        assert!(mounts().iter().any(|m| m.mount_point == Path::new("/")));
        assert!(!is_mounted(Path::new("/definitely/not/a/mountpoint")));
    }

    #[test]
    fn prefix_names_this_process() {
        assert_eq!(owned_prefix("x"), format!("x-{}-", std::process::id()));
    }
}
