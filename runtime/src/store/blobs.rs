//! Content-addressed blobs: `blobs/sha256/<hex>`. A name is never trusted without its hash.

use std::collections::BTreeSet;
use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use super::gc::Leased;
use super::images::Meta;
use super::{io_at, Result, Store, StoreError};
use crate::digest::{Digest, HashingWriter};
use crate::fsutil::{fsync_dir, unique_tmp, Staging};

impl Store {
    pub fn blob_path(&self, d: &Digest) -> PathBuf {
        self.root.join("blobs/sha256").join(d.hex())
    }

    pub fn has_blob(&self, d: &Digest) -> bool {
        self.blob_path(d).is_file()
    }

    /// Ingest a blob: stream to `tmp/`, hash, check against `expected`, fsync, rename into place.
    /// An existing blob with the same digest is left as is.
    pub fn put_blob(&self, mut reader: impl Read, expected: Option<&Digest>) -> Result<Digest> {
        let staging = Staging::new(unique_tmp(&self.tmp_dir(), "blob"));
        let f = File::create(staging.path()).map_err(io_at(staging.path()))?;
        let mut w = HashingWriter::new(f);
        io::copy(&mut reader, &mut w).map_err(io_at(staging.path()))?;
        let (actual, _, f) = w.finish();
        if let Some(exp) = expected {
            if *exp != actual {
                return Err(StoreError::DigestMismatch {
                    expected: exp.clone(),
                    actual,
                });
            }
        }
        f.sync_all().map_err(io_at(staging.path()))?;
        drop(f);
        self.lease(Leased::Blob, actual.hex())?;
        let dest = self.blob_path(&actual);
        if !dest.exists() {
            std::fs::rename(staging.path(), &dest).map_err(io_at(&dest))?;
            if let Some(dir) = dest.parent() {
                fsync_dir(dir).map_err(io_at(dir))?;
            }
        }
        Ok(actual)
    }

    /// Move the file at `path` (on the store's filesystem) into place as blob `digest`, which
    /// the caller has verified (a download hashed as it arrived): no copy, no second hash.
    /// Fsynced before the rename, like [`Store::put_blob`]. If the blob exists, `path` stays.
    /// Returns true when `path` was moved (the blob is new).
    pub(crate) fn adopt_blob(&self, path: &Path, digest: &Digest) -> Result<bool> {
        // Best effort: a rename needs no space, the lease line does (see `hold_layer`).
        if let Err(e) = self.lease(Leased::Blob, digest.hex()) {
            log::debug!("lease for blob {digest}: {e}");
        }
        let dest = self.blob_path(digest);
        if dest.exists() {
            return Ok(false);
        }
        File::open(path)
            .and_then(|f| f.sync_all())
            .map_err(io_at(path))?;
        std::fs::rename(path, &dest).map_err(io_at(&dest))?;
        if let Some(dir) = dest.parent() {
            fsync_dir(dir).map_err(io_at(dir))?;
        }
        Ok(true)
    }

    /// Delete blobs a failed operation added, unless the metadata reaches them meanwhile
    /// (another image uses the same blob). Best effort.
    pub(crate) fn discard_blobs(&self, blobs: Vec<Digest>) -> Result<()> {
        if blobs.is_empty() {
            return Ok(());
        }
        let _l = self.lock(crate::fsutil::LockMode::Exclusive)?;
        let m = self.read_meta()?;
        self.gc_blobs(&m, blobs);
        Ok(())
    }

    /// Ingest bytes already in memory.
    pub fn put_blob_bytes(&self, bytes: &[u8]) -> Result<Digest> {
        self.put_blob(bytes, None)
    }

    /// Read a whole blob, verifying its digest.
    pub fn read_blob(&self, d: &Digest) -> Result<Vec<u8>> {
        let p = self.blob_path(d);
        let bytes = std::fs::read(&p).map_err(io_at(&p))?;
        let actual = Digest::of_bytes(&bytes);
        if actual != *d {
            return Err(StoreError::DigestMismatch {
                expected: d.clone(),
                actual,
            });
        }
        Ok(bytes)
    }

    /// Open a blob for streaming (unverified; the caller hashes if it needs to).
    pub fn open_blob(&self, d: &Digest) -> Result<File> {
        let p = self.blob_path(d);
        File::open(&p).map_err(io_at(&p))
    }
}

/// Manifests and indexes bigger than this are not read for the digests they name.
const MAX_MANIFEST: u64 = 4 << 20;

impl Store {
    /// The digests a manifest or index blob names (its config, layers and child manifests);
    /// nothing for any other blob (configs name no `digest`, layers are not JSON).
    fn blob_names(&self, d: &Digest) -> Vec<Digest> {
        let p = self.blob_path(d);
        if std::fs::metadata(&p).map_or(true, |m| m.len() > MAX_MANIFEST) {
            return vec![];
        }
        let Ok(bytes) = std::fs::read(&p) else {
            return vec![];
        };
        if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
            return vec![];
        }
        let Ok(v) = serde_json::from_slice::<serde_json::Value>(&bytes) else {
            return vec![];
        };
        let named = |x: &serde_json::Value| {
            x.get("digest")
                .and_then(|s| s.as_str())
                .and_then(|s| Digest::parse(s).ok())
        };
        let mut out: Vec<Digest> = v.get("config").and_then(named).into_iter().collect();
        for key in ["layers", "manifests"] {
            if let Some(items) = v.get(key).and_then(|a| a.as_array()) {
                out.extend(items.iter().filter_map(named));
            }
        }
        out
    }

    /// `roots` and every blob they name, transitively.
    pub(crate) fn blob_closure(&self, roots: impl IntoIterator<Item = Digest>) -> BTreeSet<Digest> {
        let mut seen = BTreeSet::new();
        let mut todo: Vec<Digest> = roots.into_iter().collect();
        while let Some(d) = todo.pop() {
            if seen.insert(d.clone()) {
                todo.extend(self.blob_names(&d));
            }
        }
        seen
    }

    /// The manifests and indexes that name any of `targets`, directly or through each other
    /// (found by reading every small JSON blob: configs, manifests, indexes).
    fn blobs_naming(&self, targets: &[Digest]) -> Vec<Digest> {
        let dir = self.root.join("blobs/sha256");
        let Ok(entries) = std::fs::read_dir(&dir) else {
            return vec![];
        };
        let mut parents: Vec<(Digest, Vec<Digest>)> = Vec::new();
        for e in entries.flatten() {
            let Ok(d) = Digest::from_hex(&e.file_name().to_string_lossy()) else {
                continue;
            };
            let names = self.blob_names(&d);
            if !names.is_empty() {
                parents.push((d, names));
            }
        }
        let mut found: BTreeSet<Digest> = targets.iter().cloned().collect();
        loop {
            let before = found.len();
            for (d, names) in &parents {
                if names.iter().any(|n| found.contains(n)) {
                    found.insert(d.clone());
                }
            }
            if found.len() == before {
                break;
            }
        }
        found.into_iter().filter(|d| !targets.contains(d)).collect()
    }

    /// Delete the blobs of something just removed: `candidates` (an image's config, the
    /// manifests its references named, the compressed blobs of its released layers), the
    /// manifests and indexes naming them, and what all those name, except what the remaining metadata still reaches (image configs, manifests of
    /// references, compressed blobs of stored layers, and what those name). Only blobs of the
    /// removed thing are considered, never the whole directory, so blobs a concurrent pull or
    /// load wrote and has not registered yet are left alone. Call with the store lock held
    /// exclusively, after `m` was written and the released layers were moved away. Best
    /// effort: a blob that cannot be removed stays (it is only unused space).
    pub(crate) fn gc_blobs(&self, m: &Meta, mut candidates: Vec<Digest>) {
        // The manifests (and indexes) it was pulled by, though its references are gone.
        candidates.extend(self.blobs_naming(&candidates));
        let doomed = self.blob_closure(candidates);
        if doomed.is_empty() {
            return;
        }
        let mut roots = m.blob_roots();
        if let Ok(layers) = self.layers() {
            roots.extend(layers.into_iter().filter_map(|l| l.compressed_digest));
        } else {
            return; // cannot tell what is still used: keep everything
        }
        let keep = self.blob_closure(roots);
        for d in doomed.difference(&keep) {
            let _ = std::fs::remove_file(self.blob_path(d));
        }
    }
}
