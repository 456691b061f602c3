//! One lazy layer being served: its state files, the ranges of the blob it has, the files it
//! has filled, and filling and completing (see the module doc of `lazy`).
//!
//! Chunks of one file: a read claims the missing chunks it needs (`Fill::busy`, a ticket per
//! fetch) and fetches them itself, so reads of different chunks of one file fetch at once; a
//! read that needs a chunk another fetch claimed waits for that fetch (`Fill::ended`) and gets
//! its result: two reads of one chunk fetch it once, and a failed fetch fails both. Requests of
//! one layer in flight are bounded ([`IN_FLIGHT_LAYER`]).
//!
//! Locks: `have`, `filled`, a file's `busy` and the layer's `slots` are held only for in-memory
//! updates and one append, never across network I/O; reads of chunks already in place take no
//! lock (`Fill`'s flags, set after the data is written). Never two of them at once, except
//! `busy` then `filled`.

use std::collections::{BTreeSet, HashMap};
use std::ffi::OsStr;
use std::fs::{File, OpenOptions};
use std::io::{BufReader, Seek, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use nix::fcntl::Flock;
use parking_lot::{Condvar, Mutex};
use strata_fs::at;

use super::{io_at, LazyError, Source};
use crate::digest::{Digest, Hasher};
use crate::fsutil::{lock_file, LockMode};
use crate::registry::blob::fetch_range_with;
use crate::registry::client::Client;
use crate::registry::RegistryError;
use crate::seekable::{self, Toc};
use crate::store::Store;

/// Bound on each HTTP attempt of a range fetch: a registry that accepts and then says nothing
/// fails the read (EIO) instead of hanging the container.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(15);
/// Largest range fetched in one request, and how many requests of one fetch run at once.
const MAX_REQUEST: u64 = 4 << 20;
const IN_FLIGHT: usize = 3;
/// Requests of one layer in flight at once, over every reader of it.
const IN_FLIGHT_LAYER: usize = 4;
/// Gaps smaller than this between missing ranges are fetched too (one request instead of two).
const COALESCE_GAP: u64 = 64 << 10;
/// Chunks fetched ahead of a sequential reader of a file (at most [`IN_FLIGHT`] requests).
const READ_AHEAD: usize = 2;
/// Background step.
const STEP: u64 = 2 << 20;
/// A range being received is logged every this many bytes.
const LOG_EVERY: u64 = 256 << 10;

/// How long after the last demand fetch the background goes on: demand (a container waiting
/// for a file) never queues behind it. `STRATA_LAZY_QUIET_MS` overrides the 1.5 s default
/// (a long value keeps the background out of a measurement).
fn quiet() -> Duration {
    static Q: std::sync::OnceLock<Duration> = std::sync::OnceLock::new();
    *Q.get_or_init(|| {
        std::env::var("STRATA_LAZY_QUIET_MS")
            .ok()
            .and_then(|v| v.parse().ok())
            .map(Duration::from_millis)
            .unwrap_or(Duration::from_millis(1500))
    })
}

/// Sorted, disjoint `[start, end)` ranges of the blob held locally, and their log.
struct Have {
    ranges: Vec<(u64, u64)>,
    log: Log,
    /// The blob's size (a logged range past it is ignored).
    size: u64,
}

impl Have {
    /// Take in the ranges other processes serving the layer logged since the last look.
    fn refresh(&mut self) {
        for r in self.log.read_new() {
            if let [s, e] = r[..] {
                if s < e && e <= self.size {
                    self.insert(s, e);
                }
            }
        }
    }

    fn insert(&mut self, s: u64, e: u64) {
        self.ranges.push((s, e));
        self.ranges.sort_unstable();
        let mut out: Vec<(u64, u64)> = Vec::with_capacity(self.ranges.len());
        for &(a, b) in &self.ranges {
            match out.last_mut() {
                Some(last) if a <= last.1 => last.1 = last.1.max(b),
                _ => out.push((a, b)),
            }
        }
        self.ranges = out;
    }

    /// The parts of `[s, e)` not held, with small gaps between them closed.
    fn missing(&self, s: u64, e: u64) -> Vec<(u64, u64)> {
        let mut out: Vec<(u64, u64)> = Vec::new();
        let mut pos = s;
        for &(a, b) in &self.ranges {
            if b <= pos {
                continue;
            }
            if a >= e {
                break;
            }
            if a > pos {
                out.push((pos, a));
            }
            pos = pos.max(b);
        }
        if pos < e {
            out.push((pos, e));
        }
        let mut merged: Vec<(u64, u64)> = Vec::with_capacity(out.len());
        for (a, b) in out {
            match merged.last_mut() {
                Some(last) if a - last.1 < COALESCE_GAP => last.1 = b,
                _ => merged.push((a, b)),
            }
        }
        merged
    }

    fn covers(&self, s: u64, e: u64) -> bool {
        self.missing(s, e).is_empty()
    }
}

/// An append-only log of lines of numbers, shared by every process serving the layer. Each
/// line is appended with one `write` (so it is whole, never mixed with another process's), and
/// each process reads on from where it last read ([`Log::read_new`]).
struct Log {
    file: File,
    /// Bytes read so far (whole lines).
    seen: u64,
}

impl Log {
    /// Open (create) the log at `path`. A line a crash left without its newline is closed with
    /// a mark that makes it unreadable, so it never joins the next line.
    fn open(path: &Path) -> Result<(Log, Vec<Vec<u64>>), LazyError> {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .read(true)
            .open(path)
            .map_err(io_at(path))?;
        let mut log = Log { file, seen: 0 };
        let lines = log.read_new();
        let len = log.file.metadata().map_err(io_at(path))?.len();
        if len > log.seen {
            log.append("x");
        }
        Ok((log, lines))
    }

    /// The whole lines appended since the last call (a line that is not all numbers is
    /// skipped).
    fn read_new(&mut self) -> Vec<Vec<u64>> {
        let Ok(len) = self.file.metadata().map(|m| m.len()) else {
            return Vec::new();
        };
        if len <= self.seen {
            return Vec::new();
        }
        let mut buf = vec![0u8; (len - self.seen) as usize];
        if self.file.read_exact_at(&mut buf, self.seen).is_err() {
            return Vec::new();
        }
        let Some(end) = buf.iter().rposition(|&b| b == b'\n') else {
            return Vec::new();
        };
        self.seen += end as u64 + 1;
        String::from_utf8_lossy(&buf[..end])
            .lines()
            .filter_map(|line| {
                let nums: Option<Vec<u64>> =
                    line.split_whitespace().map(|n| n.parse().ok()).collect();
                nums.filter(|n| !n.is_empty())
            })
            .collect()
    }

    /// Append `line` (one write).
    fn append(&mut self, line: &str) {
        let _ = self.file.write_all(format!("{line}\n").as_bytes());
    }
}

/// What of one file is in its skeleton file. Chunks are written whole, each verified first, and
/// logged in `filled` (`<entry> <chunk>`, or `<entry>` once all are) after they are written: a
/// restarted process starts from what the log says is in place and fetches or decodes only the
/// rest.
struct Fill {
    /// Every chunk is in place (and the file is logged as filled).
    done: AtomicBool,
    /// Per chunk of the file (`Toc::file_chunks`): in place (zeros chunks always are). Set
    /// (Release) after its data is written.
    chunks: Vec<AtomicBool>,
    /// Which chunks are being fetched, by which fetch.
    busy: Mutex<Busy>,
    /// Signalled when a fetch of some of the file's chunks ends (or one of its chunks is in).
    ended: Condvar,
    /// The file's times before any chunk was written, restored after each write (the data
    /// changes nothing the container can see but the content).
    times: OnceLock<[libc::timespec; 2]>,
    /// A read-ahead of this file's next chunks is running.
    ahead: AtomicBool,
}

/// The fetches of one file's chunks in progress.
struct Busy {
    /// Per chunk: the ticket of the fetch that claimed it (0: none).
    owner: Vec<u64>,
    /// Per chunk: how its last fetch failed (given to the reads that waited for it).
    failed: Vec<Option<Arc<LazyError>>>,
    /// The last ticket handed out.
    last: u64,
}

impl Fill {
    fn new(chunks: Vec<AtomicBool>) -> Fill {
        let n = chunks.len();
        Fill {
            done: AtomicBool::new(false),
            chunks,
            busy: Mutex::new(Busy {
                owner: vec![0; n],
                failed: vec![None; n],
                last: 0,
            }),
            ended: Condvar::new(),
            times: OnceLock::new(),
            ahead: AtomicBool::new(false),
        }
    }

    fn has(&self, k: usize) -> bool {
        self.chunks.get(k).is_none_or(|c| c.load(Ordering::Acquire))
    }

    fn all_in(&self) -> bool {
        self.chunks.iter().all(|c| c.load(Ordering::Acquire))
    }
}

/// A bound on the requests in flight (a counting semaphore).
struct Slots {
    free: Mutex<usize>,
    freed: Condvar,
}

impl Slots {
    fn take(&self) -> SlotGuard<'_> {
        let mut n = self.free.lock();
        while *n == 0 {
            self.freed.wait(&mut n);
        }
        *n -= 1;
        SlotGuard(self)
    }
}

struct SlotGuard<'a>(&'a Slots);

impl Drop for SlotGuard<'_> {
    fn drop(&mut self) {
        *self.0.free.lock() += 1;
        self.0.freed.notify_one();
    }
}

/// A lazy layer opened for serving (held for the life of the mount).
pub struct LazyLayer {
    /// `layers/<chain>` when opened (messages; the fds below stay valid after a move).
    dir: PathBuf,
    /// Device and inode of that dir: completion exchanges it only if it is still this one.
    dir_id: (u64, u64),
    diff: OwnedFd,
    source: Source,
    toc: Toc,
    /// The client of the registry (or mirror) the layer was pulled from.
    client: Client,
    /// The image's own registry, once the mirror stopped answering (`on_origin`).
    origin: OnceLock<Client>,
    on_origin: AtomicBool,
    blob: File,
    blob_path: PathBuf,
    have: Mutex<Have>,
    filled: Mutex<Log>,
    /// Files still to fill: backing inode → TOC entry.
    by_ino: HashMap<u64, usize>,
    /// Per entry to fill: which of its chunks are in the file.
    pending: HashMap<usize, Fill>,
    last_demand: Mutex<Instant>,
    /// Demand fetches running (a long one must not let the background in).
    demanding: AtomicUsize,
    /// Requests in flight for this layer.
    slots: Slots,
    _lock: Flock<File>,
}

impl LazyLayer {
    /// Open the lazy layer `layers/<chain>` at `dir` (shared lock on its `lazy/lock` until
    /// dropped).
    pub fn open(dir: &Path) -> Result<LazyLayer, LazyError> {
        let state = dir.join("lazy");
        let lock = lock_file(&state.join("lock"), LockMode::Shared).map_err(io_at(&state))?;
        let sp = state.join("source.json");
        let source: Source = serde_json::from_slice(&std::fs::read(&sp).map_err(io_at(&sp))?)
            .map_err(|source| LazyError::State {
                path: sp.clone(),
                source,
            })?;
        let tp = state.join("tail");
        let tail = std::fs::read(&tp).map_err(io_at(&tp))?;
        let toc = source.parse_toc(&tail)?;
        let client = source.client()?;
        let blob_path = state.join("blob");
        let blob = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&blob_path)
            .map_err(io_at(&blob_path))?;
        let (log, ranges) = Log::open(&state.join("have"))?;
        let mut have = Have {
            ranges: Vec::new(),
            log,
            size: source.size,
        };
        for r in ranges {
            if let [s, e] = r[..] {
                if s < e && e <= source.size {
                    have.insert(s, e);
                }
            }
        }
        let (filled, lines) = Log::open(&state.join("filled"))?;
        // `<entry>`: the whole file is in place; `<entry> <chunk>`: that chunk is.
        let mut done = BTreeSet::new();
        let mut chunks_in: HashMap<usize, BTreeSet<usize>> = HashMap::new();
        for l in &lines {
            match l[..] {
                [i] => {
                    done.insert(i as usize);
                }
                [i, k] => {
                    chunks_in.entry(i as usize).or_default().insert(k as usize);
                }
                _ => {}
            }
        }
        let diffp = dir.join("diff");
        let diff = at::open_dir(&diffp).map_err(|e| io_at(&diffp)(e.into()))?;
        let mut by_ino = HashMap::new();
        let mut pending = HashMap::new();
        for (i, e) in toc.entries.iter().enumerate() {
            if e.kind != "reg" || e.size == 0 || done.contains(&i) {
                continue;
            }
            if toc.file_chunks(i).iter().all(|c| c.zeros) {
                continue;
            }
            // A name a later entry replaced has another inode (or none): nothing to fill.
            let Ok(fd) = at::open_beneath(diff.as_fd(), e.name.as_bytes(), libc::O_PATH) else {
                continue;
            };
            let Ok(st) = at::fstat(fd.as_fd()) else {
                continue;
            };
            if st.st_mode & libc::S_IFMT == libc::S_IFREG {
                by_ino.insert(st.st_ino, i);
                let logged = chunks_in.get(&i);
                let chunks = toc
                    .file_chunks(i)
                    .iter()
                    .enumerate()
                    .map(|(k, c)| {
                        AtomicBool::new(c.zeros || logged.is_some_and(|l| l.contains(&k)))
                    })
                    .collect();
                pending.insert(i, Fill::new(chunks));
            }
        }
        let meta = std::fs::metadata(dir).map_err(io_at(dir))?;
        Ok(LazyLayer {
            dir: dir.to_path_buf(),
            dir_id: (meta.dev(), meta.ino()),
            diff,
            source,
            toc,
            client,
            origin: OnceLock::new(),
            on_origin: AtomicBool::new(false),
            blob,
            blob_path,
            have: Mutex::new(have),
            filled: Mutex::new(filled),
            by_ino,
            pending,
            last_demand: Mutex::new(Instant::now()),
            demanding: AtomicUsize::new(0),
            slots: Slots {
                free: Mutex::new(IN_FLIGHT_LAYER),
                freed: Condvar::new(),
            },
            _lock: lock,
        })
    }

    /// The layer's chain ID.
    pub fn chain_id(&self) -> &crate::digest::ChainId {
        &self.source.chain_id
    }

    /// The blob digest of the layer (for messages).
    pub fn digest(&self) -> &str {
        &self.source.digest
    }

    /// Files whose data is still to come.
    pub fn unfilled(&self) -> usize {
        self.pending
            .values()
            .filter(|f| !f.done.load(Ordering::Acquire))
            .count()
    }

    /// Whether some of the file with backing inode `ino` is still to come.
    pub fn pending_ino(&self, ino: u64) -> bool {
        self.by_ino
            .get(&ino)
            .and_then(|i| self.pending.get(i))
            .is_some_and(|f| !f.done.load(Ordering::Acquire))
    }

    /// Make sure bytes `[off, off + len)` of the file with backing inode `ino` are in place:
    /// only the chunks covering them are fetched (a demand, as [`LazyLayer::ensure_ino`]).
    /// A file read from its start or on from a chunk already in place is read sequentially:
    /// its next [`READ_AHEAD`] chunks are then fetched by a thread of their own, so the next
    /// read finds them (or waits for them) instead of starting its fetch only then.
    pub fn ensure_ino_range(
        self: &Arc<Self>,
        ino: u64,
        off: u64,
        len: u64,
    ) -> Result<(), LazyError> {
        let Some(&i) = self.by_ino.get(&ino) else {
            return Ok(());
        };
        let end = off.saturating_add(len);
        self.demand(|| self.fill_range(i, off, end))?;
        self.read_ahead(i, off, end);
        Ok(())
    }

    /// Start the read-ahead of file `i` after a read of `[off, end)` when that read looks
    /// sequential (see [`LazyLayer::ensure_ino_range`]).
    fn read_ahead(self: &Arc<Self>, i: usize, off: u64, end: u64) {
        let Some(m) = self.pending.get(&i) else {
            return;
        };
        let all = self.toc.file_chunks(i);
        let covering = |c: &seekable::Chunk| c.file_offset < end && c.file_offset + c.size > off;
        let (Some(first), Some(last)) = (
            all.iter().position(covering),
            all.iter().rposition(covering),
        ) else {
            return;
        };
        let ahead = &all[last + 1..all.len().min(last + 1 + READ_AHEAD)];
        let (Some(a), Some(b)) = (ahead.first(), ahead.last()) else {
            return;
        };
        let (from, to) = (a.file_offset, b.file_offset + b.size);
        let sequential = first == 0 || m.chunks[first - 1].load(Ordering::Acquire);
        let missing = m.chunks[last + 1..last + 1 + ahead.len()]
            .iter()
            .any(|c| !c.load(Ordering::Acquire));
        if m.done.load(Ordering::Acquire) || !sequential || !missing {
            return;
        }
        if m.ahead.swap(true, Ordering::AcqRel) {
            return;
        }
        let me = Arc::clone(self);
        let spawned = std::thread::Builder::new()
            .name("lazy-read-ahead".into())
            .spawn(move || {
                // An error is met again by the read that needs the chunk.
                let _ = me.fill_range(i, from, to);
                if let Some(m) = me.pending.get(&i) {
                    m.ahead.store(false, Ordering::Release);
                }
            });
        if spawned.is_err() {
            m.ahead.store(false, Ordering::Release);
        }
    }

    /// Make sure the file with backing inode `ino` has its data (a demand: the background
    /// waits for a quiet moment).
    pub fn ensure_ino(&self, ino: u64) -> Result<(), LazyError> {
        let Some(&i) = self.by_ino.get(&ino) else {
            return Ok(());
        };
        self.demand(|| self.fill(i))
    }

    /// Run the demand fetch `f`: the background waits while it runs and for a quiet moment
    /// after it.
    fn demand(&self, f: impl FnOnce() -> Result<(), LazyError>) -> Result<(), LazyError> {
        self.demanding.fetch_add(1, Ordering::AcqRel);
        *self.last_demand.lock() = Instant::now();
        let r = f();
        *self.last_demand.lock() = Instant::now();
        self.demanding.fetch_sub(1, Ordering::AcqRel);
        r
    }

    /// Name of TOC entry `i` (for messages).
    pub fn entry_name(&self, ino: u64) -> Option<&str> {
        self.by_ino
            .get(&ino)
            .and_then(|&i| self.toc.entries.get(i))
            .map(|e| e.name.as_str())
    }

    /// Have bytes `[s, e)` of the blob in the local copy, fetching what is missing. What
    /// arrives is written and logged as it comes (every [`LOG_EVERY`] bytes), so a killed
    /// process or a dropped connection keeps it.
    fn ensure_range(&self, s: u64, e: u64) -> Result<(), LazyError> {
        let missing = {
            let mut h = self.have.lock();
            h.refresh();
            h.missing(s, e.min(self.source.size))
        };
        // Requests of at most MAX_REQUEST bytes, up to IN_FLIGHT of them at once.
        let mut pieces = Vec::new();
        for (a, b) in missing {
            let mut pos = a;
            while pos < b {
                let end = b.min(pos + MAX_REQUEST);
                pieces.push((pos, end));
                pos = end;
            }
        }
        for batch in pieces.chunks(IN_FLIGHT) {
            if let [(a, b)] = batch {
                self.fetch_piece(*a, *b)?;
                continue;
            }
            std::thread::scope(|sc| {
                let handles: Vec<_> = batch
                    .iter()
                    .map(|&(a, b)| sc.spawn(move || self.fetch_piece(a, b)))
                    .collect();
                let mut first = Ok(());
                for h in handles {
                    let r = h.join().unwrap_or(Err(LazyError::Io {
                        path: self.blob_path.clone(),
                        source: std::io::Error::other("range fetch thread panicked"),
                    }));
                    if first.is_ok() {
                        first = r;
                    }
                }
                first
            })?;
        }
        Ok(())
    }

    /// Fetch blob bytes `[a, b)` into the local blob, logging them as they arrive. A fetch of
    /// any of them in progress (by another process serving the layer, or another thread) is
    /// waited for first, and only what it did not bring is fetched.
    fn fetch_piece(&self, a: u64, b: u64) -> Result<(), LazyError> {
        let _slot = self.slots.take();
        let _range = self.lock_blob_range(a, b);
        let rest = {
            let mut h = self.have.lock();
            h.refresh();
            h.missing(a, b)
        };
        for (x, y) in rest {
            self.fetch_from_source(x, y)?;
        }
        Ok(())
    }

    /// A write lock on bytes `[a, b)` of the local blob, held while they are fetched: an OFD
    /// lock on an open of its own (so it holds against other threads of this process too),
    /// dropped with the returned file, or by the kernel with a killed process. Best effort:
    /// `None` when it cannot be had (the bytes are then maybe fetched twice).
    fn lock_blob_range(&self, a: u64, b: u64) -> Option<File> {
        use std::os::fd::AsRawFd;
        let f = OpenOptions::new()
            .write(true)
            .open(format!("/proc/self/fd/{}", self.blob.as_raw_fd()))
            .ok()?;
        let lock = libc::flock {
            l_type: libc::F_WRLCK as libc::c_short,
            l_whence: libc::SEEK_SET as libc::c_short,
            l_start: i64::try_from(a).ok()?,
            l_len: i64::try_from(b.checked_sub(a)?).ok()?,
            l_pid: 0,
        };
        nix::fcntl::fcntl(&f, nix::fcntl::FcntlArg::F_OFD_SETLKW(&lock)).ok()?;
        Some(f)
    }

    /// Fetch blob bytes `[a, b)` from the registry mirror the layer was pulled from, while it
    /// answers; once it does not (after the bounded retries of a request), from the image's own
    /// registry for the rest of this process's life, as Docker falls back from a mirror, with
    /// one line in the log.
    fn fetch_from_source(&self, a: u64, b: u64) -> Result<(), LazyError> {
        if !self.on_origin.load(Ordering::Acquire) {
            match self.fetch_piece_from(&self.client, a, b) {
                Err(LazyError::Registry(e)) if !self.source.origin.is_empty() => {
                    if !self.on_origin.swap(true, Ordering::AcqRel) {
                        super::provider::report(&format!(
                            "lazy layer {}: registry mirror {} not answering ({e}); reading from {}",
                            self.source.digest, self.source.registry, self.source.origin
                        ));
                    }
                }
                r => return r,
            }
        }
        let origin = match self.origin.get() {
            Some(c) => c,
            None => {
                let c =
                    crate::registry::pull::client_for(&self.source.origin, &self.source.insecure)?;
                self.origin.get_or_init(|| c)
            }
        };
        // What the mirror's response brought before it failed is kept.
        let rest = self.have.lock().missing(a, b);
        for (x, y) in rest {
            self.fetch_piece_from(origin, x, y)?;
        }
        Ok(())
    }

    /// Fetch blob bytes `[a, b)` from the registry behind `client`.
    fn fetch_piece_from(&self, client: &Client, a: u64, b: u64) -> Result<(), LazyError> {
        let mut logged = a;
        let mut io_err = None;
        let r = fetch_range_with(
            client,
            &self.source.repo,
            &self.source.digest,
            a,
            b,
            ATTEMPT_TIMEOUT,
            &mut |off, bytes| {
                if let Err(e) = self.blob.write_all_at(bytes, off) {
                    io_err = Some(e);
                    return Err(RegistryError::BodyIo {
                        url: self.blob_path.display().to_string(),
                        source: std::io::Error::other("local write failed"),
                    });
                }
                let done = off + bytes.len() as u64;
                if done - logged >= LOG_EVERY || done == b {
                    self.log_range(logged, done);
                    logged = done;
                }
                Ok(())
            },
        );
        if let Some(e) = io_err {
            return Err(io_at(&self.blob_path)(e));
        }
        Ok(r?)
    }

    /// Record that the local blob holds `[s, e)` (after the bytes were written: a crash loses
    /// a range, never claims one).
    fn log_range(&self, s: u64, e: u64) {
        if s < e {
            let mut h = self.have.lock();
            h.insert(s, e);
            h.log.append(&format!("{s} {e}"));
        }
    }

    /// Fill TOC entry `i`: its chunks fetched, each verified before it is written.
    fn fill(&self, i: usize) -> Result<(), LazyError> {
        self.fill_range(i, 0, u64::MAX)
    }

    /// Fill the chunks of TOC entry `i` that cover file bytes `[off, end)` and are not in place
    /// yet. The missing ones no other fetch claimed are claimed and fetched here (their
    /// compressed span in one go: coalesced requests, streamed to the local blob), then each
    /// decoded, checked against its digest and only then written; then this waits for the
    /// chunks other fetches claimed, and fails as they failed. Memory stays one chunk, whatever
    /// the span. The file is logged as filled once every chunk is in.
    fn fill_range(&self, i: usize, off: u64, end: u64) -> Result<(), LazyError> {
        let Some(m) = self.pending.get(&i) else {
            return Ok(());
        };
        let all = self.toc.file_chunks(i);
        loop {
            if m.done.load(Ordering::Acquire) {
                return Ok(());
            }
            let want: Vec<usize> = (0..all.len())
                .filter(|&k| {
                    let c = &all[k];
                    !m.has(k) && c.file_offset < end && c.file_offset + c.size.max(1) > off
                })
                .collect();
            if want.is_empty() {
                break;
            }
            // Chunks another process serving the layer wrote since the last look are in.
            self.refresh_filled();
            // Claim what nobody fetches; note what others do.
            let (ticket, mine, theirs) = {
                let mut b = m.busy.lock();
                b.last += 1;
                let ticket = b.last;
                let (mut mine, mut theirs) = (Vec::new(), Vec::new());
                for k in want {
                    if m.has(k) {
                        continue;
                    }
                    match b.owner[k] {
                        0 => {
                            b.owner[k] = ticket;
                            b.failed[k] = None;
                            mine.push(k);
                        }
                        t => theirs.push((k, t)),
                    }
                }
                (ticket, mine, theirs)
            };
            if !mine.is_empty() {
                let r = self.fill_chunks(i, m, ticket, &mine).map_err(Arc::new);
                let mut b = m.busy.lock();
                for &k in &mine {
                    if b.owner[k] == ticket {
                        b.owner[k] = 0;
                        if let Err(e) = &r {
                            b.failed[k] = Some(e.clone());
                        }
                    }
                }
                drop(b);
                m.ended.notify_all();
                r.map_err(LazyError::Shared)?;
            }
            // The chunks other fetches claimed: their result is this read's.
            let mut retry = false;
            for (k, t) in theirs {
                let mut b = m.busy.lock();
                while b.owner[k] == t && !m.has(k) {
                    m.ended.wait(&mut b);
                }
                if !m.has(k) {
                    match (&b.failed[k], b.owner[k]) {
                        (Some(e), 0) => return Err(LazyError::Shared(e.clone())),
                        // Failed, and claimed again since: wait for that fetch.
                        _ => retry = true,
                    }
                }
            }
            if !retry {
                break;
            }
        }
        if m.all_in() && !m.done.swap(true, Ordering::AcqRel) {
            self.filled.lock().append(&i.to_string());
        }
        Ok(())
    }

    /// Take in the chunks and files other processes serving the layer logged as written since
    /// the last look.
    fn refresh_filled(&self) {
        let lines = self.filled.lock().read_new();
        for l in lines {
            let (i, chunk) = match l[..] {
                [i] => (i as usize, None),
                [i, k] => (i as usize, Some(k as usize)),
                _ => continue,
            };
            let Some(m) = self.pending.get(&i) else {
                continue;
            };
            for (k, c) in m.chunks.iter().enumerate() {
                if chunk.is_none_or(|want| want == k) {
                    c.store(true, Ordering::Release);
                }
            }
            if chunk.is_none() {
                m.done.store(true, Ordering::Release);
            }
        }
    }

    /// Fetch, verify and write chunks `mine` of TOC entry `i` (claimed with `ticket`), each
    /// handed back (and its waiters woken) as soon as it is in place.
    fn fill_chunks(
        &self,
        i: usize,
        m: &Fill,
        ticket: u64,
        mine: &[usize],
    ) -> Result<(), LazyError> {
        let e = &self.toc.entries[i];
        let all = self.toc.file_chunks(i);
        // Runs of consecutive chunks: a chunk between two of them may be another fetch's.
        let mut runs: Vec<(usize, usize)> = Vec::new();
        for &k in mine {
            match runs.last_mut() {
                Some(r) if r.1 + 1 == k => r.1 = k,
                _ => runs.push((k, k)),
            }
        }
        for &(a, b) in &runs {
            self.ensure_range(all[a].start, all[b].end)?;
        }
        let name_err = |x: nix::errno::Errno| LazyError::Skeleton {
            name: e.name.clone(),
            source: x,
        };
        let fd = at::open_beneath(self.diff.as_fd(), e.name.as_bytes(), libc::O_WRONLY)
            .map_err(name_err)?;
        // Taken before this fetch writes anything (and so before any fetch did).
        let fst = at::fstat(fd.as_fd()).map_err(name_err)?;
        let times = *m.times.get_or_init(|| at::times_of(&fst));
        let mut raw = Vec::new();
        let mut res = Ok(());
        for &k in mine {
            let c = &all[k];
            raw.resize((c.end - c.start) as usize, 0);
            if let Err(x) = self.blob.read_exact_at(&mut raw, c.start) {
                res = Err(io_at(&self.blob_path)(x));
                break;
            }
            let data = match seekable::decode_chunk(&raw, c) {
                Ok(d) => d,
                Err(x) => {
                    res = Err(LazyError::Seekable {
                        digest: self.source.digest.clone(),
                        source: x,
                    });
                    break;
                }
            };
            let mut o = 0;
            while o < data.len() {
                match at::pwrite(fd.as_fd(), &data[o..], c.file_offset + o as u64) {
                    Ok(n) => o += n,
                    Err(x) => {
                        res = Err(name_err(x));
                        break;
                    }
                }
            }
            if res.is_err() {
                break;
            }
            m.chunks[k].store(true, Ordering::Release);
            {
                let mut b = m.busy.lock();
                if b.owner[k] == ticket {
                    b.owner[k] = 0;
                }
                if all.len() > 1 {
                    self.filled.lock().append(&format!("{i} {k}"));
                }
            }
            m.ended.notify_all();
        }
        // Also when a chunk failed after others were written.
        at::utimensat(fd.as_fd(), OsStr::new(""), &times).map_err(name_err)?;
        res
    }

    /// Fetch and fill the files before the prefetch landmark (what a run of the image reads
    /// first, as the converter recorded it), yielding to demand fetches. Errors are left for
    /// [`LazyLayer::complete`] to meet again.
    pub fn prefetch(&self, stop: &dyn Fn() -> bool) {
        let Some(mark) = self.toc.prefetch_landmark() else {
            return;
        };
        let mut todo: Vec<usize> = self.pending.keys().copied().filter(|&i| i < mark).collect();
        todo.sort_unstable();
        for i in todo {
            if !self.wait_quiet(stop) || self.fill(i).is_err() {
                return;
            }
        }
    }

    /// The local blob from its start, through a clone of its fd (whose offset is the clone's
    /// alone to use: everything else reads and writes it with pread/pwrite).
    fn blob_reader(&self) -> Result<BufReader<File>, LazyError> {
        let mut f: File = self.blob.try_clone().map_err(io_at(&self.blob_path))?;
        f.seek(std::io::SeekFrom::Start(0))
            .map_err(io_at(&self.blob_path))?;
        Ok(BufReader::with_capacity(1 << 20, f))
    }

    /// Wait until no demand fetch happened for a while (or `stop`).
    fn wait_quiet(&self, stop: &dyn Fn() -> bool) -> bool {
        loop {
            if stop() {
                return false;
            }
            let since = self.last_demand.lock().elapsed();
            if since >= quiet() && self.demanding.load(Ordering::Acquire) == 0 {
                return true;
            }
            std::thread::sleep(
                quiet()
                    .saturating_sub(since)
                    .clamp(Duration::from_millis(20), Duration::from_millis(200)),
            );
        }
    }

    /// Fetch the rest of the blob in the background order (the blob's order: eStargz puts the
    /// files a run reads first at its front), fill every file, then verify the blob and turn the
    /// layer into an ordinary stored one. `Ok(false)`: stopped, or another process completed
    /// it first.
    /// `patient`: yield to demand fetches (the background of a running container).
    pub fn complete(
        &self,
        store: &Store,
        patient: bool,
        stop: &dyn Fn() -> bool,
    ) -> Result<bool, LazyError> {
        let size = self.source.size;
        let mut pos = 0;
        while pos < size {
            if stop() || (patient && !self.wait_quiet(stop)) {
                return Ok(false);
            }
            let end = size.min(pos + STEP);
            self.ensure_range(pos, end)?;
            pos = end;
        }
        let mut todo: Vec<usize> = self.pending.keys().copied().collect();
        todo.sort_unstable();
        for i in todo {
            if stop() {
                return Ok(false);
            }
            self.fill(i)?;
        }
        if !self.have.lock().covers(0, size) {
            return Ok(false);
        }
        // The blob's digest before anything is stored.
        let mut h = Hasher::new();
        let mut buf = vec![0u8; 1 << 20];
        let mut off = 0;
        while off < size {
            let n = buf.len().min((size - off) as usize);
            self.blob
                .read_exact_at(&mut buf[..n], off)
                .map_err(io_at(&self.blob_path))?;
            h.update(&buf[..n]);
            off += n as u64;
        }
        if h.finish().as_str() != self.source.digest {
            return Err(LazyError::BlobDigest {
                digest: self.source.digest.clone(),
            });
        }
        let input = self.blob_reader()?;
        let staged = store.stage_layer(input, Some(&self.source.diff_id))?;
        if staged.input_digest().as_str() != self.source.digest {
            return Err(LazyError::BlobDigest {
                digest: self.source.digest.clone(),
            });
        }
        if let Ok(d) = Digest::parse(&self.source.digest) {
            // The compressed blob is kept as a normal pull keeps it. Copied, not moved: another
            // process serving the same lazy layer may still write ranges into the local blob,
            // and the store's blobs must never be written after they are verified.
            if !store.has_blob(&d) {
                store.put_blob(self.blob_reader()?, Some(&d))?;
            }
        }
        let retired = super::retired_dir(store);
        std::fs::create_dir_all(&retired).map_err(io_at(&retired))?;
        let to = retired.join(format!(
            "{}-{}-{}",
            self.source.chain_id.hex(),
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0)
        ));
        let swapped = store.exchange_lazy_layer(staged, &self.source.chain_id, self.dir_id, &to)?;
        if swapped {
            log::info!(
                "layer {}: complete at {}",
                self.source.digest,
                self.dir.display()
            );
        }
        Ok(swapped)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn have(ranges: &[(u64, u64)]) -> Have {
        let mut h = Have {
            ranges: Vec::new(),
            log: Log {
                file: tempfile::tempfile().unwrap(),
                seen: 0,
            },
            size: u64::MAX,
        };
        for &(s, e) in ranges {
            h.insert(s, e);
        }
        h
    }

    #[test]
    fn log_lines_are_whole_and_a_torn_one_never_joins_the_next() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("log");
        // A crash left "3 4" of "3 45\n".
        std::fs::write(&p, "1 2\n3 4").unwrap();
        let (mut log, lines) = Log::open(&p).unwrap();
        assert_eq!(lines, vec![vec![1, 2]]);
        log.append("5 6");
        assert_eq!(log.read_new(), vec![vec![5, 6]]);
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "1 2\n3 4x\n5 6\n");
        // Another process reads on where it left off.
        let (mut other, lines) = Log::open(&p).unwrap();
        assert_eq!(lines, vec![vec![1, 2], vec![5, 6]]);
        log.append("7");
        assert_eq!(other.read_new(), vec![vec![7]]);
        assert!(other.read_new().is_empty());
    }

    #[test]
    fn ranges_merge_and_gaps_are_coalesced() {
        let h = have(&[(100, 200), (150, 300), (300, 400), (1 << 20, 2 << 20)]);
        assert_eq!(h.ranges, vec![(100, 400), (1 << 20, 2 << 20)]);
        assert!(h.covers(120, 400));
        assert!(!h.covers(0, 400));
        // Missing pieces closer than COALESCE_GAP become one request.
        assert_eq!(h.missing(0, 500), vec![(0, 500)]);
        assert_eq!(
            h.missing(0, 3 << 20),
            vec![(0, 1 << 20), (2 << 20, 3 << 20)]
        );
        assert_eq!(h.missing(150, 350), vec![]);
    }
}
