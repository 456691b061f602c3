//! Record which files of an image a run opens, in the order it first opens them: the prefetch
//! list `image convert --estargz --record` places before `.prefetch.landmark`.
//!
//! The union filesystem serves a container's reads from the store's layer directories
//! (`<root>/layers/<chain>/diff/…`), so every file the container opens is opened there too. A
//! fanotify *filesystem* mark (`fanotify_mark(2)`, `FAN_MARK_FILESYSTEM`: every mount of the
//! store's filesystem, in every mount namespace) with `FAN_OPEN` reports those opens with an fd
//! of the opened file; its path (`/proc/self/fd/N`) under a layer of the image is the path in
//! the image. Opens of anything else on that filesystem are read and dropped. Notification
//! class only: nobody's open waits for us.

use std::collections::HashSet;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("recording file accesses (fanotify, needs root): {0}")]
    Fanotify(#[source] io::Error),
    #[error("recording file accesses: {path}: {source}")]
    Path {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// A running recorder; [`Recorder::finish`] stops it and returns the paths.
pub struct Recorder {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Vec<String>>>,
}

/// Start recording opens of files under `<layers_dir>/<hex>/diff/` for the chain IDs `hexes`.
pub fn start(layers_dir: &Path, hexes: &[String]) -> Result<Recorder, RecordError> {
    let layers = layers_dir
        .canonicalize()
        .map_err(|source| RecordError::Path {
            path: layers_dir.to_path_buf(),
            source,
        })?;
    // SAFETY: plain syscall; the returned fd is owned below.
    let fd = unsafe {
        libc::fanotify_init(
            libc::FAN_CLASS_NOTIF | libc::FAN_CLOEXEC | libc::FAN_NONBLOCK,
            (libc::O_RDONLY | libc::O_LARGEFILE | libc::O_CLOEXEC) as libc::c_uint,
        )
    };
    if fd < 0 {
        return Err(RecordError::Fanotify(io::Error::last_os_error()));
    }
    // SAFETY: `fd` is a fresh descriptor nobody else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let c_path = std::ffi::CString::new(layers.as_os_str().as_encoded_bytes())
        .map_err(|e| RecordError::Fanotify(io::Error::new(io::ErrorKind::InvalidInput, e)))?;
    // SAFETY: valid fd and NUL-terminated path.
    let r = unsafe {
        libc::fanotify_mark(
            fd.as_raw_fd(),
            libc::FAN_MARK_ADD | libc::FAN_MARK_FILESYSTEM,
            libc::FAN_OPEN,
            libc::AT_FDCWD,
            c_path.as_ptr(),
        )
    };
    if r < 0 {
        return Err(RecordError::Fanotify(io::Error::last_os_error()));
    }
    let stop = Arc::new(AtomicBool::new(false));
    let stop2 = stop.clone();
    let hexes: HashSet<String> = hexes.iter().cloned().collect();
    let thread = std::thread::spawn(move || read_events(fd, &layers, &hexes, &stop2));
    Ok(Recorder {
        stop,
        thread: Some(thread),
    })
}

impl Recorder {
    /// Stop and return the image paths opened, first open first.
    pub fn finish(mut self) -> Vec<String> {
        self.stop.store(true, Ordering::SeqCst);
        self.thread
            .take()
            .and_then(|t| t.join().ok())
            .unwrap_or_default()
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The image path of a layer file: `<layers>/<hex>/diff/<rel>` with `hex` one of ours.
fn image_path(p: &Path, layers: &Path, hexes: &HashSet<String>) -> Option<String> {
    let rest = p.strip_prefix(layers).ok()?;
    let mut comps = rest.components();
    let hex = comps.next()?.as_os_str().to_str()?;
    if !hexes.contains(hex) || comps.next()?.as_os_str() != "diff" {
        return None;
    }
    let rel = comps.as_path().to_str()?;
    (!rel.is_empty()).then(|| rel.to_string())
}

fn read_events(
    fd: OwnedFd,
    layers: &Path,
    hexes: &HashSet<String>,
    stop: &AtomicBool,
) -> Vec<String> {
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    let mut buf = vec![0u8; 64 << 10];
    let meta_len = std::mem::size_of::<libc::fanotify_event_metadata>();
    loop {
        let mut pfd = libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        let ready = unsafe { libc::poll(&mut pfd, 1, 50) };
        if ready <= 0 {
            if stop.load(Ordering::SeqCst) {
                return out;
            }
            continue;
        }
        // SAFETY: reading into a buffer we own, of its length.
        let n = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        if n <= 0 {
            continue;
        }
        let n = n as usize;
        let mut off = 0;
        while off + meta_len <= n {
            // SAFETY: the kernel wrote whole event records; read_unaligned copes with alignment.
            let ev: libc::fanotify_event_metadata =
                unsafe { std::ptr::read_unaligned(buf[off..].as_ptr().cast()) };
            if (ev.event_len as usize) < meta_len {
                break;
            }
            off += ev.event_len as usize;
            if ev.fd < 0 {
                continue;
            }
            // SAFETY: the event's fd is ours to close.
            let file = unsafe { OwnedFd::from_raw_fd(ev.fd) };
            let Ok(p) = std::fs::read_link(format!("/proc/self/fd/{}", file.as_raw_fd())) else {
                continue;
            };
            drop(file);
            if let Some(rel) = image_path(&p, layers, hexes) {
                if seen.insert(rel.clone()) {
                    out.push(rel);
                }
            }
        }
    }
}
