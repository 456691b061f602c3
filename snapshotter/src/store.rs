//! The snapshot store: metadata and snapshot directories under one root, crash-safe.
//!
//! # Layout
//! ```text
//! <root>/lock                      flock held by the daemon for its lifetime (one daemon per root)
//! <root>/metadata.json             every snapshot record (see `Meta`); replaced atomically
//! <root>/snapshots/<id>/fs/        the snapshot's layer dir, overlay on-disk format: the upper
//!                                  dir while active, the committed layer afterwards
//! <root>/snapshots/<id>/work/      the union filesystem's work dir (same filesystem as fs/)
//! <root>/tmp/                      new snapshot dirs are built here, then renamed in
//! ```
//!
//! # Vocabulary (containerd's)
//! - *key*: the name of an active snapshot or view (a transaction); *name*: the name of a
//!   committed snapshot. Both live in one namespace: a key is never a name at the same time.
//! - *parent*: the committed snapshot a snapshot starts from (`""`: an empty directory). The
//!   *chain* of a snapshot is its parent, the parent's parent, … (top first, overlayfs order).
//! - *active*: writable, may be committed; *view*: read-only, never committed; *committed*:
//!   immutable, may be a parent.
//!
//! # Crash safety
//! Every change is one atomic replacement of `metadata.json` (temp file, fsync, rename, fsync of
//! the root). Directories are made before their record is written (built in `tmp/`, renamed into
//! `snapshots/`) and removed after their record is gone, so a crash at any point leaves at worst
//! a directory without a record: [`Store::open`] and [`Store::cleanup`] remove those and
//! everything in `tmp/`. A record never points at a missing directory.
//!
//! # Locks
//! One mutex over the in-memory metadata, held for the whole of each change including its disk
//! writes: changes are rare, small and must be serialized to keep the file and the directories
//! in step. Disk usage walks (proportional to the layer) run without it.

use std::collections::{BTreeMap, HashMap};
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};

use crate::usage::{self, Usage};

/// Store errors; the service maps them to gRPC codes (containerd's errdefs).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("snapshot {0}: not found")]
    NotFound(String),
    #[error("snapshot {0}: already exists")]
    AlreadyExists(String),
    #[error("parent snapshot {0} does not exist: not found")]
    ParentNotFound(String),
    #[error("parent snapshot {0} is not committed: failed precondition")]
    ParentNotCommitted(String),
    #[error("snapshot {0} is not active: failed precondition")]
    NotActive(String),
    #[error("requested snapshot {0} not active or view: failed precondition")]
    NotActiveOrView(String),
    #[error("cannot remove snapshot {0} with child: failed precondition")]
    HasChildren(String),
    #[error("cannot update {field:?} field on snapshot {key:?}: invalid argument")]
    ImmutableField { key: String, field: String },
    #[error("snapshot key must not be empty: invalid argument")]
    EmptyKey,
    #[error("another strata-snapshotter uses {0}")]
    Locked(PathBuf),
    // The cause is in the message, not a `source` (one line in gRPC statuses and in `{:#}`).
    #[error("{path}: {err}")]
    Io { path: PathBuf, err: io::Error },
    #[error("{path}: corrupt metadata: {err}")]
    Corrupt {
        path: PathBuf,
        err: serde_json::Error,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

fn io_at(path: &Path) -> impl FnOnce(io::Error) -> Error + '_ {
    move |err| Error::Io {
        path: path.to_path_buf(),
        err,
    }
}

/// What a snapshot is (containerd's `Kind`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    View,
    Active,
    Committed,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::View => "view",
            Kind::Active => "active",
            Kind::Committed => "committed",
        }
    }
}

/// The number naming a snapshot's directory (`snapshots/<id>`); never reused while the store
/// lives, so a key can be removed and prepared again while the old directory is still going.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SnapshotId(pub u64);

/// A point in time, stored as seconds + nanoseconds since the epoch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stamp {
    pub secs: u64,
    pub nanos: u32,
}

impl Stamp {
    pub fn now() -> Stamp {
        let d = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        Stamp {
            secs: d.as_secs(),
            nanos: d.subsec_nanos(),
        }
    }

    pub fn to_system_time(self) -> SystemTime {
        UNIX_EPOCH + Duration::new(self.secs, self.nanos)
    }
}

/// One snapshot's record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub id: SnapshotId,
    pub kind: Kind,
    /// Name of the committed parent; empty for none.
    #[serde(default)]
    pub parent: String,
    #[serde(default)]
    pub labels: HashMap<String, String>,
    pub created: Stamp,
    pub updated: Stamp,
    /// Measured at commit (committed snapshots only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
}

/// A record with its key, as returned to callers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Snapshot {
    pub key: String,
    pub record: Record,
}

/// The content of `metadata.json`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct Meta {
    version: u32,
    next_id: u64,
    snapshots: BTreeMap<String, Record>,
}

const META_VERSION: u32 = 1;

/// The mountable parts of an active snapshot or view: its dirs and its parents' layer dirs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MountSpec {
    pub kind: Kind,
    /// The snapshot's own layer dir (`snapshots/<id>/fs`).
    pub upper: PathBuf,
    pub work: PathBuf,
    /// The layer dirs of the parent chain, top first.
    pub lowers: Vec<PathBuf>,
}

pub struct Store {
    root: PathBuf,
    meta: Mutex<Meta>,
    _lock: Flock<File>,
}

fn fsync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|f| f.sync_all())
        .map_err(io_at(dir))
}

/// Replace `path` with `bytes`: write a sibling temp file, fsync it, rename it over `path`,
/// fsync the directory.
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = dir.join(".metadata.json.tmp");
    let mut f = File::create(&tmp).map_err(io_at(&tmp))?;
    f.write_all(bytes)
        .and_then(|_| f.sync_all())
        .map_err(io_at(&tmp))?;
    drop(f);
    std::fs::rename(&tmp, path).map_err(io_at(path))?;
    fsync_dir(dir)
}

/// Remove a file or a whole tree. std's `remove_dir_all` never follows symlinks (it is the
/// fixed version of CVE-2022-21658), so hostile layer content cannot redirect it.
fn remove_any(p: &Path) -> io::Result<()> {
    match std::fs::symlink_metadata(p) {
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(p),
        Ok(_) => std::fs::remove_file(p),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

impl Store {
    /// Open (creating if needed) the store at `root`: take the root lock, read the metadata,
    /// and remove what a crash may have left (directories without a record, `tmp/`).
    pub fn open(root: &Path) -> Result<Store> {
        for d in [root.to_path_buf(), root.join("snapshots"), root.join("tmp")] {
            std::fs::create_dir_all(&d).map_err(io_at(&d))?;
        }
        let lock_path = root.join("lock");
        let f = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&lock_path)
            .map_err(io_at(&lock_path))?;
        let lock = match Flock::lock(f, FlockArg::LockExclusiveNonblock) {
            Ok(l) => l,
            Err((_, nix::errno::Errno::EWOULDBLOCK)) => {
                return Err(Error::Locked(root.to_path_buf()))
            }
            Err((_, e)) => return Err(io_at(&lock_path)(e.into())),
        };
        let meta_path = root.join("metadata.json");
        let meta = match std::fs::read(&meta_path) {
            Ok(b) => serde_json::from_slice::<Meta>(&b).map_err(|err| Error::Corrupt {
                path: meta_path.clone(),
                err,
            })?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => Meta {
                version: META_VERSION,
                next_id: 1,
                snapshots: BTreeMap::new(),
            },
            Err(e) => return Err(io_at(&meta_path)(e)),
        };
        let mut meta = meta;
        // Ids are never reused, not even those of directories a crash left without a record
        // (removed just below).
        let snaps = root.join("snapshots");
        for e in std::fs::read_dir(&snaps).map_err(io_at(&snaps))?.flatten() {
            if let Ok(id) = e.file_name().to_string_lossy().parse::<u64>() {
                meta.next_id = meta.next_id.max(id + 1);
            }
        }
        let store = Store {
            root: root.to_path_buf(),
            meta: Mutex::new(meta),
            _lock: lock,
        };
        let removed = store.cleanup()?;
        if removed > 0 {
            log::info!("removed {removed} leftover snapshot dirs");
        }
        Ok(store)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Meta> {
        // A panic while holding the lock cannot leave the in-memory copy half-changed: every
        // change is made on a clone and swapped in after it is on disk.
        self.meta.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn dir_of(&self, id: SnapshotId) -> PathBuf {
        self.root.join("snapshots").join(id.0.to_string())
    }

    /// The layer dir of snapshot `id`.
    pub fn fs_dir(&self, id: SnapshotId) -> PathBuf {
        self.dir_of(id).join("fs")
    }

    fn work_dir(&self, id: SnapshotId) -> PathBuf {
        self.dir_of(id).join("work")
    }

    /// Write `next` to disk, then make it the in-memory state.
    fn persist(&self, cur: &mut Meta, next: Meta) -> Result<()> {
        let bytes = serde_json::to_vec_pretty(&next).map_err(|err| Error::Corrupt {
            path: self.root.join("metadata.json"),
            err,
        })?;
        write_atomic(&self.root.join("metadata.json"), &bytes)?;
        *cur = next;
        Ok(())
    }

    fn chain(meta: &Meta, parent: &str) -> Vec<SnapshotId> {
        let mut out = Vec::new();
        let mut p = parent;
        while !p.is_empty() {
            let Some(r) = meta.snapshots.get(p) else {
                break;
            };
            out.push(r.id);
            p = &r.parent;
        }
        out
    }

    fn spec(&self, meta: &Meta, rec: &Record) -> MountSpec {
        MountSpec {
            kind: rec.kind,
            upper: self.fs_dir(rec.id),
            work: self.work_dir(rec.id),
            lowers: Self::chain(meta, &rec.parent)
                .into_iter()
                .map(|id| self.fs_dir(id))
                .collect(),
        }
    }

    /// Create an active snapshot (`kind` Active) or a view (`kind` View) `key` on `parent`.
    pub fn create(
        &self,
        kind: Kind,
        key: &str,
        parent: &str,
        labels: HashMap<String, String>,
    ) -> Result<MountSpec> {
        if key.is_empty() {
            return Err(Error::EmptyKey);
        }
        let mut meta = self.lock();
        if meta.snapshots.contains_key(key) {
            return Err(Error::AlreadyExists(key.to_string()));
        }
        if !parent.is_empty() {
            match meta.snapshots.get(parent) {
                None => return Err(Error::ParentNotFound(parent.to_string())),
                Some(p) if p.kind != Kind::Committed => {
                    return Err(Error::ParentNotCommitted(parent.to_string()))
                }
                Some(_) => {}
            }
        }
        let id = SnapshotId(meta.next_id);
        // Build the directory in tmp/ and rename it in before the record exists: a crash
        // leaves a directory without a record, which open/cleanup remove.
        let staging = self.root.join("tmp").join(id.0.to_string());
        let _ = remove_any(&staging);
        for d in [staging.clone(), staging.join("fs"), staging.join("work")] {
            std::fs::create_dir(&d).map_err(io_at(&d))?;
        }
        fsync_dir(&staging)?;
        let dir = self.dir_of(id);
        let _ = remove_any(&dir);
        std::fs::rename(&staging, &dir).map_err(io_at(&dir))?;
        fsync_dir(&self.root.join("snapshots"))?;
        let now = Stamp::now();
        let rec = Record {
            id,
            kind,
            parent: parent.to_string(),
            labels,
            created: now,
            updated: now,
            usage: None,
        };
        let mut next = meta.clone();
        next.next_id = id.0 + 1;
        next.snapshots.insert(key.to_string(), rec.clone());
        if let Err(e) = self.persist(&mut meta, next) {
            let _ = remove_any(&dir);
            return Err(e);
        }
        Ok(self.spec(&meta, &rec))
    }

    /// The mount parts of the active snapshot or view `key`.
    pub fn mounts(&self, key: &str) -> Result<MountSpec> {
        let meta = self.lock();
        let rec = meta
            .snapshots
            .get(key)
            .ok_or_else(|| Error::NotFound(key.to_string()))?;
        if rec.kind == Kind::Committed {
            return Err(Error::NotActiveOrView(key.to_string()));
        }
        Ok(self.spec(&meta, rec))
    }

    /// Commit the active snapshot `key` as `name`: the layer dir stays where it is and the
    /// record moves from `key` to `name`, with `labels` (containerd drops the active's).
    pub fn commit(&self, name: &str, key: &str, labels: HashMap<String, String>) -> Result<()> {
        if name.is_empty() {
            return Err(Error::EmptyKey);
        }
        // Measure outside the lock (a walk of the whole upper dir); the id is checked again
        // below, so a concurrent remove + prepare of the same key cannot mix records.
        let id = {
            let meta = self.lock();
            let rec = meta
                .snapshots
                .get(key)
                .ok_or_else(|| Error::NotFound(key.to_string()))?;
            if rec.kind != Kind::Active {
                return Err(Error::NotActive(key.to_string()));
            }
            if meta.snapshots.contains_key(name) {
                return Err(Error::AlreadyExists(name.to_string()));
            }
            rec.id
        };
        let fs = self.fs_dir(id);
        let used = usage::disk_usage(&fs).map_err(io_at(&fs))?;
        let mut meta = self.lock();
        let rec = match meta.snapshots.get(key) {
            Some(r) if r.id == id && r.kind == Kind::Active => r.clone(),
            _ => return Err(Error::NotFound(key.to_string())),
        };
        if meta.snapshots.contains_key(name) {
            return Err(Error::AlreadyExists(name.to_string()));
        }
        let now = Stamp::now();
        let mut next = meta.clone();
        next.snapshots.remove(key);
        next.snapshots.insert(
            name.to_string(),
            Record {
                id,
                kind: Kind::Committed,
                parent: rec.parent,
                labels,
                created: now,
                updated: now,
                usage: Some(used),
            },
        );
        self.persist(&mut meta, next)?;
        // The work dir is scratch space of the mounts; a committed layer has no use for it.
        let work = self.work_dir(id);
        if let Err(e) = remove_any(&work) {
            log::warn!("{}: {e}", work.display());
        }
        Ok(())
    }

    /// Remove `key` (any kind). Fails while another snapshot has it as parent.
    pub fn remove(&self, key: &str) -> Result<()> {
        let id = {
            let mut meta = self.lock();
            let rec = meta
                .snapshots
                .get(key)
                .ok_or_else(|| Error::NotFound(key.to_string()))?;
            if rec.kind == Kind::Committed && meta.snapshots.values().any(|r| r.parent == key) {
                return Err(Error::HasChildren(key.to_string()));
            }
            let id = rec.id;
            let mut next = meta.clone();
            next.snapshots.remove(key);
            self.persist(&mut meta, next)?;
            id
        };
        // The record is gone: from here on the directory is an orphan whatever happens, and
        // open/cleanup finish the job if this removal fails or is interrupted.
        let dir = self.dir_of(id);
        if let Err(e) = remove_any(&dir) {
            log::warn!("{}: {e} (left for cleanup)", dir.display());
        }
        Ok(())
    }

    pub fn stat(&self, key: &str) -> Result<Snapshot> {
        let meta = self.lock();
        meta.snapshots
            .get(key)
            .map(|r| Snapshot {
                key: key.to_string(),
                record: r.clone(),
            })
            .ok_or_else(|| Error::NotFound(key.to_string()))
    }

    /// Update the mutable fields (labels) of `key`, as containerd does: no field paths replace
    /// all labels; `labels` replaces all labels; `labels.<k>` sets (or, absent from `labels`,
    /// deletes) one; any other path is refused.
    pub fn update(
        &self,
        key: &str,
        labels: HashMap<String, String>,
        fieldpaths: &[String],
    ) -> Result<Snapshot> {
        let mut meta = self.lock();
        let mut rec = meta
            .snapshots
            .get(key)
            .cloned()
            .ok_or_else(|| Error::NotFound(key.to_string()))?;
        if fieldpaths.is_empty() {
            rec.labels = labels;
        } else {
            for path in fieldpaths {
                if path == "labels" {
                    rec.labels = labels.clone();
                } else if let Some(k) = path.strip_prefix("labels.") {
                    match labels.get(k) {
                        Some(v) => {
                            rec.labels.insert(k.to_string(), v.clone());
                        }
                        None => {
                            rec.labels.remove(k);
                        }
                    }
                } else {
                    return Err(Error::ImmutableField {
                        key: key.to_string(),
                        field: path.clone(),
                    });
                }
            }
        }
        rec.updated = Stamp::now();
        let mut next = meta.clone();
        next.snapshots.insert(key.to_string(), rec.clone());
        self.persist(&mut meta, next)?;
        Ok(Snapshot {
            key: key.to_string(),
            record: rec,
        })
    }

    /// Disk usage of `key` itself, without its parents: measured at commit for committed
    /// snapshots, walked now for active ones.
    pub fn usage(&self, key: &str) -> Result<Usage> {
        let (id, stored) = {
            let meta = self.lock();
            let rec = meta
                .snapshots
                .get(key)
                .ok_or_else(|| Error::NotFound(key.to_string()))?;
            match rec.kind {
                Kind::Active => (rec.id, None),
                Kind::View => (rec.id, Some(Usage::default())),
                Kind::Committed => (rec.id, Some(rec.usage.unwrap_or_default())),
            }
        };
        match stored {
            Some(u) => Ok(u),
            None => {
                let fs = self.fs_dir(id);
                usage::disk_usage(&fs).map_err(io_at(&fs))
            }
        }
    }

    /// Every snapshot, ordered by key.
    pub fn list(&self) -> Vec<Snapshot> {
        let meta = self.lock();
        meta.snapshots
            .iter()
            .map(|(k, r)| Snapshot {
                key: k.clone(),
                record: r.clone(),
            })
            .collect()
    }

    /// Remove directories no record names (left by a crash or a failed removal) and
    /// everything in `tmp/`. Returns how many entries were removed.
    pub fn cleanup(&self) -> Result<usize> {
        let meta = self.lock();
        let live: std::collections::HashSet<String> = meta
            .snapshots
            .values()
            .map(|r| r.id.0.to_string())
            .collect();
        let mut n = 0;
        let tmp = self.root.join("tmp");
        for e in std::fs::read_dir(&tmp).map_err(io_at(&tmp))?.flatten() {
            remove_any(&e.path()).map_err(io_at(&e.path()))?;
            n += 1;
        }
        let snaps = self.root.join("snapshots");
        for e in std::fs::read_dir(&snaps).map_err(io_at(&snaps))?.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if !live.contains(&name) {
                remove_any(&e.path()).map_err(io_at(&e.path()))?;
                n += 1;
            }
        }
        // A stale temp file of an interrupted metadata write.
        let _ = std::fs::remove_file(self.root.join(".metadata.json.tmp"));
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(kv: &[(&str, &str)]) -> HashMap<String, String> {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn dirs(root: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(root.join("snapshots"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn lifecycle_and_semantics() {
        let t = tempfile::tempdir().unwrap();
        let s = Store::open(t.path()).unwrap();
        let a = s.create(Kind::Active, "a", "", labels(&[])).unwrap();
        assert!(a.lowers.is_empty());
        std::fs::write(a.upper.join("f"), b"hello").unwrap();
        assert_eq!(s.usage("a").unwrap().inodes, 2);
        // Same key twice; parents must exist and be committed.
        assert!(matches!(
            s.create(Kind::Active, "a", "", labels(&[])),
            Err(Error::AlreadyExists(_))
        ));
        assert!(matches!(
            s.create(Kind::Active, "b", "nope", labels(&[])),
            Err(Error::ParentNotFound(_))
        ));
        assert!(matches!(
            s.create(Kind::Active, "b", "a", labels(&[])),
            Err(Error::ParentNotCommitted(_))
        ));
        s.commit("base", "a", labels(&[("x", "1")])).unwrap();
        assert!(matches!(s.stat("a"), Err(Error::NotFound(_))));
        let base = s.stat("base").unwrap();
        assert_eq!(base.record.kind, Kind::Committed);
        assert_eq!(base.record.labels, labels(&[("x", "1")]));
        assert!(!s
            .fs_dir(base.record.id)
            .parent()
            .unwrap()
            .join("work")
            .exists());
        assert!(matches!(s.mounts("base"), Err(Error::NotActiveOrView(_))));
        let u = s.usage("base").unwrap();
        assert_eq!(u.inodes, 2);
        assert!(u.size >= 5);

        let b = s.create(Kind::Active, "b", "base", labels(&[])).unwrap();
        assert_eq!(b.lowers, vec![s.fs_dir(base.record.id)]);
        s.commit("top", "b", labels(&[])).unwrap();
        let v = s.create(Kind::View, "v", "top", labels(&[])).unwrap();
        assert_eq!(v.lowers.len(), 2);
        assert_eq!(v.kind, Kind::View);
        assert!(matches!(
            s.commit("x", "v", labels(&[])),
            Err(Error::NotActive(_))
        ));
        assert!(matches!(
            s.commit("base", "missing", labels(&[])),
            Err(Error::NotFound(_))
        ));

        // Removing a parent with children fails; bottom-up works.
        assert!(matches!(s.remove("base"), Err(Error::HasChildren(_))));
        assert!(matches!(s.remove("top"), Err(Error::HasChildren(_))));
        s.remove("v").unwrap();
        s.remove("top").unwrap();
        s.remove("base").unwrap();
        assert!(s.list().is_empty());
        assert!(dirs(t.path()).is_empty());
        assert!(matches!(s.remove("base"), Err(Error::NotFound(_))));
    }

    #[test]
    fn update_follows_containerd_field_paths() {
        let t = tempfile::tempdir().unwrap();
        let s = Store::open(t.path()).unwrap();
        s.create(Kind::Active, "k", "", labels(&[("a", "1"), ("b", "2")]))
            .unwrap();
        let r = s
            .update("k", labels(&[("a", "9"), ("c", "3")]), &["labels.a".into()])
            .unwrap();
        assert_eq!(r.record.labels, labels(&[("a", "9"), ("b", "2")]));
        let r = s.update("k", labels(&[]), &["labels.b".into()]).unwrap();
        assert_eq!(r.record.labels, labels(&[("a", "9")]));
        let r = s.update("k", labels(&[("z", "0")]), &[]).unwrap();
        assert_eq!(r.record.labels, labels(&[("z", "0")]));
        assert!(matches!(
            s.update("k", labels(&[]), &["parent".into()]),
            Err(Error::ImmutableField { .. })
        ));
        assert!(r.record.updated.to_system_time() >= r.record.created.to_system_time());
        assert!(matches!(
            s.update("nope", labels(&[]), &[]),
            Err(Error::NotFound(_))
        ));
    }

    #[test]
    fn reopen_keeps_records_and_removes_leftovers() {
        let t = tempfile::tempdir().unwrap();
        {
            let s = Store::open(t.path()).unwrap();
            s.create(Kind::Active, "a", "", labels(&[("l", "v")]))
                .unwrap();
            s.commit("c", "a", labels(&[])).unwrap();
            s.create(Kind::Active, "b", "c", labels(&[])).unwrap();
            // A second daemon on the same root is refused.
            assert!(matches!(Store::open(t.path()), Err(Error::Locked(_))));
        }
        // What a crash can leave: a staging dir, a dir renamed in without its record, a temp
        // metadata file.
        std::fs::create_dir_all(t.path().join("tmp/77/fs")).unwrap();
        std::fs::create_dir_all(t.path().join("snapshots/78/fs")).unwrap();
        std::fs::write(t.path().join(".metadata.json.tmp"), b"{").unwrap();
        let s = Store::open(t.path()).unwrap();
        assert_eq!(s.list().len(), 2);
        assert_eq!(dirs(t.path()), vec!["1".to_string(), "2".to_string()]);
        assert!(std::fs::read_dir(t.path().join("tmp"))
            .unwrap()
            .next()
            .is_none());
        assert!(!t.path().join(".metadata.json.tmp").exists());
        // Ids are not reused, not even the orphan's.
        let n = s.create(Kind::Active, "n", "", labels(&[])).unwrap();
        assert!(n.upper.starts_with(t.path().join("snapshots/79")), "{n:?}");
    }

    #[test]
    fn corrupt_metadata_is_an_error_not_a_fresh_store() {
        let t = tempfile::tempdir().unwrap();
        std::fs::write(t.path().join("metadata.json"), b"{not json").unwrap();
        assert!(matches!(Store::open(t.path()), Err(Error::Corrupt { .. })));
    }
}
