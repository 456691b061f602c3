//! Garbage collection: mark from the image records, sweep what nothing reaches.
//!
//! # Vocabulary
//! - *root*: what is kept by definition — every image record (its config, its layers' chains,
//!   the compressed blobs of those layers, the manifests its `name@digest` references name, and
//!   everything those manifests name) and every live *lease*.
//! - *lease*: `<root>/leases/<pid>-<nanos>`, a file a process holds `flock`ed exclusively while it
//!   adds things that no image record names yet (a pull between committing its first layer and
//!   registering its image, a `load`, a `commit`). Each line names what it protects: `layer <hex>`
//!   or `blob <hex>`, written *before* the layer or blob is renamed into place. A lease whose
//!   file is not locked belongs to a dead process and is itself garbage.
//! - *orphan*: a layer or blob no root reaches (e.g. left by a `load` killed with SIGKILL).
//! - *stale partial*: a file in `partial/` no live download holds locked.
//! - *stale tmp entry*: a `tmp/<pid>-…` entry whose process is gone.
//!
//! # Why it is safe against a concurrent pull
//! [`Store::gc`] holds the store lock exclusively for its whole mark and sweep, so no image is
//! registered or removed meanwhile. Layers and blobs are renamed into place without the lock, so
//! the sweep lists its *candidates first* and reads the leases *after*: anything renamed into
//! place before the listing had its lease line written before that, so the later lease read
//! sees it; anything renamed after the listing is not a candidate. A pull that reuses an
//! existing layer records it with [`Store::hold_layer`] (lease line and existence check under
//! the shared store lock, so the check cannot interleave with a sweep). Staging dirs live in
//! `tmp/` under the owner's pid and partial downloads are locked by their downloader.
//!
//! Lock order: store lock, then (non-blocking) the flock of a lease or partial file.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use nix::fcntl::{Flock, FlockArg};

use super::{io_at, Result, Store};
use crate::digest::{ChainId, Digest};
use crate::fsutil::{fsync_dir, remove_any, unique_tmp, LockMode};

/// What a lease line protects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Leased {
    Layer,
    Blob,
}

/// This process's lease file per store root, and how many [`LeaseScope`]s are open on it.
struct LeaseFile {
    root: PathBuf,
    path: PathBuf,
    file: Flock<File>,
    scopes: usize,
    /// Lines were written outside any scope: keep the file until the process exits.
    unscoped: bool,
}

static LEASES: Mutex<Vec<LeaseFile>> = Mutex::new(Vec::new());

/// Keeps this process's lease on a store open; when the last scope of a root closes, the lease
/// file is removed (everything it protected is registered or was given up by then). Without an
/// open scope, the lease ends when an image is registered (`load`, `commit`, `import` add
/// layers, then the image naming them) or, failing that, with the process.
pub struct LeaseScope {
    root: PathBuf,
}

impl Drop for LeaseScope {
    fn drop(&mut self) {
        let Ok(mut leases) = LEASES.lock() else {
            return;
        };
        let Some(i) = leases.iter().position(|l| l.root == self.root) else {
            return;
        };
        let l = &mut leases[i];
        l.scopes = l.scopes.saturating_sub(1);
        if l.scopes == 0 && !l.unscoped {
            let l = leases.remove(i);
            let _ = std::fs::remove_file(&l.path);
        }
    }
}

fn leases_dir(root: &Path) -> PathBuf {
    root.join("leases")
}

fn open_lease(root: &Path) -> Result<LeaseFile> {
    let dir = leases_dir(root);
    std::fs::create_dir_all(&dir).map_err(io_at(&dir))?;
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let path = dir.join(format!("{}-{nanos}", std::process::id()));
    let f = OpenOptions::new()
        .create(true)
        .append(true)
        .read(true)
        .open(&path)
        .map_err(io_at(&path))?;
    let file =
        Flock::lock(f, FlockArg::LockExclusiveNonblock).map_err(|(_, e)| io_at(&path)(e.into()))?;
    Ok(LeaseFile {
        root: root.to_path_buf(),
        path,
        file,
        scopes: 0,
        unscoped: false,
    })
}

/// Try to lock `path` exclusively without waiting: `Some` when nobody holds it (stale).
fn try_lock(path: &Path) -> Option<Flock<File>> {
    let f = File::open(path).ok()?;
    Flock::lock(f, FlockArg::LockExclusiveNonblock).ok()
}

fn pid_is_alive(name: &str) -> bool {
    name.split('-')
        .next()
        .and_then(|p| p.parse::<u32>().ok())
        .is_some_and(|p| Path::new(&format!("/proc/{p}")).exists())
}

/// Bytes used by a file or tree (allocated blocks, hard links once), never following links.
fn disk_usage(p: &Path) -> u64 {
    let mut seen = BTreeSet::new();
    let mut total = 0;
    let mut stack = vec![p.to_path_buf()];
    while let Some(p) = stack.pop() {
        let Ok(m) = std::fs::symlink_metadata(&p) else {
            continue;
        };
        if m.is_dir() {
            if let Ok(rd) = std::fs::read_dir(&p) {
                stack.extend(rd.flatten().map(|e| e.path()));
            }
        } else if seen.insert((m.dev(), m.ino())) {
            total += m.len();
        }
    }
    total
}

/// What a sweep removed (or, for a dry run, would remove). Sizes in bytes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GcReport {
    /// Orphan layers with their size (bytes of their files).
    pub layers: Vec<(ChainId, u64)>,
    /// Orphan blobs with their size.
    pub blobs: Vec<(Digest, u64)>,
    /// Stale partial downloads (file names in `partial/`) with their size.
    pub partials: Vec<(String, u64)>,
    /// Stale `tmp/` entries and dead leases: how many, and their bytes.
    pub stale_entries: usize,
    pub stale_bytes: u64,
}

impl GcReport {
    /// Every byte reclaimed.
    pub fn bytes(&self) -> u64 {
        self.layers.iter().map(|l| l.1).sum::<u64>()
            + self.blobs.iter().map(|b| b.1).sum::<u64>()
            + self.partials.iter().map(|p| p.1).sum::<u64>()
            + self.stale_bytes
    }

    pub fn is_empty(&self) -> bool {
        self.layers.is_empty()
            && self.blobs.is_empty()
            && self.partials.is_empty()
            && self.stale_entries == 0
    }
}

impl Store {
    /// Open a lease scope for this process on this store (see the module doc): layers and blobs
    /// this process adds while it is open are safe from a concurrent [`Store::gc`].
    pub fn lease_scope(&self) -> LeaseScope {
        if let Ok(mut leases) = LEASES.lock() {
            if let Some(l) = leases.iter_mut().find(|l| l.root == self.root) {
                l.scopes += 1;
            } else if let Ok(mut l) = open_lease(&self.root) {
                l.scopes = 1;
                leases.push(l);
            }
        }
        LeaseScope {
            root: self.root.clone(),
        }
    }

    /// Record in this process's lease that `hex` (a layer's chain or a blob's digest) must be
    /// kept. Call before the thing is renamed into place.
    pub(crate) fn lease(&self, what: Leased, hex: &str) -> Result<()> {
        let mut leases = LEASES.lock().unwrap_or_else(|p| p.into_inner());
        let i = match leases.iter().position(|l| l.root == self.root) {
            Some(i) => i,
            None => {
                leases.push(open_lease(&self.root)?);
                leases.len() - 1
            }
        };
        let l = &mut leases[i];
        if l.scopes == 0 {
            l.unscoped = true;
        }
        let kind = match what {
            Leased::Layer => "layer",
            Leased::Blob => "blob",
        };
        let line = format!("{kind} {hex}\n");
        let path = l.path.clone();
        l.file.write_all(line.as_bytes()).map_err(io_at(path))
    }

    /// An image record now names what this process added: drop its lease unless a
    /// [`LeaseScope`] is open (that one ends it). Called after `add_images` succeeded.
    pub(crate) fn end_unscoped_lease(&self) {
        let Ok(mut leases) = LEASES.lock() else {
            return;
        };
        if let Some(i) = leases
            .iter()
            .position(|l| l.root == self.root && l.scopes == 0)
        {
            let l = leases.remove(i);
            let _ = std::fs::remove_file(&l.path);
        }
    }

    /// If layer `c` is stored, protect it with this process's lease and return true. The check
    /// and the lease line happen under the shared store lock, so a sweep cannot remove the layer
    /// between them. Do not call with the store lock held.
    pub fn hold_layer(&self, c: &ChainId) -> Result<bool> {
        let _l = self.lock(LockMode::Shared)?;
        if !self.has_layer(c) {
            return Ok(false);
        }
        // Best effort: on a full disk an up-to-date pull must still work (only a concurrent
        // sweep could then take the layer, and the image registration would fail cleanly).
        if let Err(e) = self.lease(Leased::Layer, c.hex()) {
            log::debug!("lease for layer {c}: {e}");
        }
        Ok(true)
    }

    /// The layers and blobs named by live leases (other processes' and this one's); dead lease
    /// files are returned in the second list.
    fn read_leases(&self) -> (BTreeSet<String>, BTreeSet<String>, Vec<PathBuf>) {
        let (mut layers, mut blobs, mut dead) = (BTreeSet::new(), BTreeSet::new(), Vec::new());
        let ours: Vec<PathBuf> = LEASES
            .lock()
            .map(|l| {
                l.iter()
                    .filter(|l| l.root == self.root)
                    .map(|l| l.path.clone())
                    .collect()
            })
            .unwrap_or_default();
        let Ok(rd) = std::fs::read_dir(leases_dir(&self.root)) else {
            return (layers, blobs, dead);
        };
        for e in rd.flatten() {
            let p = e.path();
            if !ours.contains(&p) && try_lock(&p).is_some() {
                dead.push(p);
                continue;
            }
            let mut text = String::new();
            if File::open(&p)
                .and_then(|mut f| f.read_to_string(&mut text))
                .is_err()
            {
                continue;
            }
            for line in text.lines() {
                match line.split_once(' ') {
                    Some(("layer", h)) => layers.insert(h.to_string()),
                    Some(("blob", h)) => blobs.insert(h.to_string()),
                    _ => false,
                };
            }
        }
        (layers, blobs, dead)
    }

    /// Remove lease files of dead processes (at open; cheap).
    pub(crate) fn clean_dead_leases(&self) {
        let Ok(rd) = std::fs::read_dir(leases_dir(&self.root)) else {
            return;
        };
        for e in rd.flatten() {
            if let Some(_held) = try_lock(&e.path()) {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }

    /// Mark and sweep (see the module doc). With `dry_run`, nothing is removed: the report says
    /// what would be (`system df`). Fails without removing anything when an image record cannot
    /// be read (what it needs is then unknown).
    pub fn gc(&self, dry_run: bool) -> Result<GcReport> {
        let _l = self.lock(if dry_run {
            LockMode::Shared
        } else {
            LockMode::Exclusive
        })?;
        if !dry_run {
            // Retired skeletons of lazy layers that completed, once nobody serves them.
            crate::lazy::sweep_retired(self);
        }
        // Candidates first, leases after (see the module doc).
        let layer_names: Vec<String> = list(&self.layers_dir())?;
        let blob_dir = self.root.join("blobs/sha256");
        let blob_names: Vec<String> = list(&blob_dir)?;
        let (leased_layers, leased_blobs, dead_leases) = self.read_leases();
        let m = self.read_meta()?;

        // Mark layers: every image's chains, every leased layer and its ancestors.
        let mut keep_layers: BTreeSet<String> = self
            .used_chains(&m)?
            .into_iter()
            .map(|c| c.hex().to_string())
            .collect();
        let mut todo: Vec<String> = leased_layers.into_iter().collect();
        while let Some(h) = todo.pop() {
            if !keep_layers.insert(h.clone()) {
                continue;
            }
            if let Ok(c) = ChainId::parse(&format!("sha256:{h}")) {
                if let Some(p) = self.layer(&c).ok().and_then(|l| l.parent) {
                    todo.push(p.hex().to_string());
                }
            }
        }
        // Mark blobs: image configs, manifests of digest references, compressed blobs of kept
        // layers, leased blobs, and everything those name.
        let mut roots = m.blob_roots();
        let mut layer_sizes = BTreeMap::new();
        for name in &layer_names {
            let Ok(c) = ChainId::parse(&format!("sha256:{name}")) else {
                continue;
            };
            if let Ok(info) = self.layer(&c) {
                if keep_layers.contains(name) {
                    roots.extend(info.compressed_digest.clone());
                }
                layer_sizes.insert(name.clone(), info.size);
            }
        }
        roots.extend(leased_blobs.iter().filter_map(|h| Digest::from_hex(h).ok()));
        let keep_blobs: BTreeSet<String> = self
            .blob_closure(roots)
            .into_iter()
            .map(|d| d.hex().to_string())
            .collect();

        let mut report = GcReport::default();
        let mut doomed_dirs = Vec::new();
        for name in layer_names.iter().filter(|n| !keep_layers.contains(*n)) {
            let p = self.layers_dir().join(name);
            let size = layer_sizes
                .get(name)
                .copied()
                .unwrap_or_else(|| disk_usage(&p));
            if let Ok(c) = ChainId::parse(&format!("sha256:{name}")) {
                report.layers.push((c, size));
            } else {
                report.stale_entries += 1;
                report.stale_bytes += size;
            }
            if !dry_run {
                let t = unique_tmp(&self.tmp_dir(), "gclayer");
                std::fs::rename(&p, &t).map_err(io_at(&p))?;
                doomed_dirs.push(t);
            }
        }
        for name in blob_names.iter().filter(|n| !keep_blobs.contains(*n)) {
            let p = blob_dir.join(name);
            let size = std::fs::symlink_metadata(&p).map_or(0, |m| m.len());
            match Digest::from_hex(name) {
                Ok(d) => report.blobs.push((d, size)),
                Err(_) => {
                    report.stale_entries += 1;
                    report.stale_bytes += size;
                }
            }
            if !dry_run {
                remove_any(&p).map_err(io_at(&p))?;
            }
        }
        let partial_dir = self.root.join("partial");
        for name in list(&partial_dir).unwrap_or_default() {
            let p = partial_dir.join(&name);
            // Locked: a live download. Unlink while holding its lock, so a downloader that
            // opened it meanwhile sees the file is gone and starts a new one.
            let Some(_held) = try_lock(&p) else { continue };
            let size = std::fs::metadata(&p).map_or(0, |m| m.len());
            report.partials.push((name, size));
            if !dry_run {
                remove_any(&p).map_err(io_at(&p))?;
            }
        }
        for name in list(&self.tmp_dir()).unwrap_or_default() {
            if pid_is_alive(&name) {
                continue;
            }
            let p = self.tmp_dir().join(&name);
            report.stale_entries += 1;
            report.stale_bytes += disk_usage(&p);
            if !dry_run {
                let _ = remove_any(&p);
            }
        }
        for p in dead_leases {
            report.stale_entries += 1;
            report.stale_bytes += disk_usage(&p);
            if !dry_run {
                let _ = std::fs::remove_file(&p);
            }
        }
        if !dry_run {
            let d = self.layers_dir();
            fsync_dir(&d).map_err(super::io_at(&d))?;
            fsync_dir(&blob_dir).map_err(super::io_at(&blob_dir))?;
        }
        drop(_l);
        for t in doomed_dirs {
            let _ = remove_any(&t);
        }
        Ok(report)
    }
}

/// Entry names of `dir` (none when it does not exist).
fn list(dir: &Path) -> Result<Vec<String>> {
    match std::fs::read_dir(dir) {
        Ok(rd) => Ok(rd
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(io_at(dir)(e)),
    }
}
