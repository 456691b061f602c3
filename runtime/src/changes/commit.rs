//! `commit`: a container's changes become a new image (SPEC §10.2; DESIGN "Data flow of
//! commit").
//!
//! Steps, each undone if a later one fails so the store is as before:
//! 1. check the `--change` instructions and the parent image (nothing written yet);
//! 2. pause the container (optional) and stream its changes as a gzip layer tar, hashing the
//!    compressed and uncompressed bytes in the same pass, into a temp file (the blob `push`
//!    sends) and at the same time into the store, which extracts it on the parent's top layer
//!    (nothing is stored for an empty change set); resume;
//! 3. check the store computed the same diffID, keep the compressed blob;
//! 4. write the new config (parent + changes + history entry) and register the image with its
//!    `parent` link and the tag (a moved tag leaves its old image dangling).

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use nix::unistd::Pid;
use serde_json::{Map, Value};

use super::{
    commit_config, diff_filtered, diff_full_tree, write_changes_tar, ChangesError, CommitMeta,
    Filter, Paused,
};
use crate::digest::{ChainId, ImageId};
use crate::reference::Reference;
use crate::store::{LayerInfo, Store, StoreError};

/// Everything `commit` needs to know about the container and the user's wishes.
#[derive(Debug, Clone)]
pub struct CommitRequest {
    /// The container's upper dir (overlay format), or its whole rootfs when `full_tree`.
    pub upper: PathBuf,
    /// `upper` holds the whole tree (the `vfs` driver): compare trees instead of reading a diff.
    pub full_tree: bool,
    /// Layers between the image and the upper dir (the container's init layer), top first.
    pub extra_lowers: Vec<PathBuf>,
    /// The image the container was created from.
    pub image: ImageId,
    /// Container ID (64 hex).
    pub container_id: String,
    /// The container's effective config (`Cmd`, `Env`, …); `None`: the image's.
    pub container_config: Option<Map<String, Value>>,
    /// Volume mountpoints: never committed.
    pub volumes: Vec<PathBuf>,
    /// The container's init process, when it runs and should be paused during the commit.
    pub pause: Option<Pid>,
    /// The container's mounted rootfs, when it runs: flushed (`syncfs`) before the upper dir is
    /// read, so writes a FUSE mount still caches reach the upper dir.
    pub rootfs: Option<PathBuf>,
    pub author: Option<String>,
    pub comment: Option<String>,
    pub changes: Vec<String>,
    /// `REPO[:TAG]` to point at the new image.
    pub reference: Option<Reference>,
}

/// A temp file in the store's `tmp/`, removed on drop.
struct TempFile(PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn temp_path(store: &Store) -> PathBuf {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    // `<pid>-…` lets `Store::open` clean it up if we die.
    store
        .tmp_dir()
        .join(format!("{}-{nanos}-commit.tar.gz", std::process::id()))
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> ChangesError + '_ {
    move |source| ChangesError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Commit the container described by `req`; returns the new image's ID.
pub fn commit(store: &Store, req: &CommitRequest) -> Result<ImageId, ChangesError> {
    // 1. Validate before writing anything.
    super::apply_changes(&mut Map::new(), &req.changes)?;
    let parent = store.image(&req.image)?;
    let parent_config = store.read_blob(&parent.id.0)?;
    let mut lowers = req.extra_lowers.clone();
    lowers.extend(store.layer_dirs(&parent)?);
    let mut filter = Filter::docker();
    for v in &req.volumes {
        filter = filter.exclude(v.clone());
    }

    // 2. + 3. The changes, with the container paused while its upper dir is read, streamed as
    // a layer into the store (none for an empty change set: `empty_layer`).
    let layer: Option<LayerInfo> = {
        let _paused = req.pause.map(Paused::pause).transpose()?;
        if let Some(r) = &req.rootfs {
            sync_fs(r);
        }
        let changes = if req.full_tree {
            diff_full_tree(&req.upper, &lowers, &filter)?
        } else {
            diff_filtered(&req.upper, &lowers, &filter)?
        };
        if changes.is_empty() {
            None
        } else {
            Some(store_layer(store, req, &changes, parent.chain_ids.last())?)
        }
    };
    // 4. Config and image.
    let meta = CommitMeta {
        author: req.author.clone(),
        comment: req.comment.clone(),
        changes: req.changes.clone(),
        container_id: req.container_id.clone(),
        container_config: req.container_config.clone(),
        created: chrono::Utc::now(),
    };
    let added = (|| {
        let config = commit_config(&parent_config, &meta, layer.as_ref().map(|l| &l.diff_id))?;
        let refs: Vec<Reference> = req.reference.iter().cloned().collect();
        Ok(store.add_image(&config, &refs, Some(&parent.id))?)
    })();
    if added.is_err() {
        if let Some(info) = &layer {
            release(store, info);
        }
    }
    added
}

/// Flush the filesystem mounted at `path` (best effort: a container that just stopped has no
/// mount any more, and then nothing is cached either).
pub(crate) fn sync_fs(path: &Path) {
    if let Ok(f) = File::open(path) {
        let _ = nix::unistd::syncfs(&f);
    }
}

/// Writes to both: the blob file and the pipe into the store's extraction.
struct Tee<A, B> {
    a: A,
    b: B,
}

impl<A: Write, B: Write> Write for Tee<A, B> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.a.write_all(buf)?;
        self.b.write_all(buf)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.a.flush()?;
        self.b.flush()
    }
}

/// Write the layer of `changes` once: the gzip stream goes to a temp file (kept as the blob
/// `push` sends) and, through a pipe, to a thread where the store extracts it — so reading the
/// upper dir, compressing, hashing and extracting overlap. Whatever fails, a layer this call
/// created is released again.
fn store_layer(
    store: &Store,
    req: &CommitRequest,
    changes: &[super::Change],
    parent: Option<&ChainId>,
) -> Result<LayerInfo, ChangesError> {
    let tmp = TempFile(temp_path(store));
    let (reader, writer) = std::io::pipe().map_err(io_err(&tmp.0))?;
    let file = File::create(&tmp.0).map_err(io_err(&tmp.0))?;
    let (written, stored) = std::thread::scope(|s| {
        let extract = s.spawn(move || store.add_layer(reader, parent, None));
        let written = write_changes_tar(
            &req.upper,
            changes,
            Tee {
                a: BufWriter::new(file),
                b: writer,
            },
        )
        .and_then(|(digests, tee)| {
            // Close the pipe first: the store sees the end of the stream.
            let Tee { a, b } = tee;
            drop(b);
            let file = a.into_inner().map_err(|e| io_err(&tmp.0)(e.into_error()))?;
            file.sync_all().map_err(io_err(&tmp.0))?;
            Ok(digests)
        });
        let stored = extract
            .join()
            .unwrap_or_else(|_| Err(StoreError::Decompress(std::io::ErrorKind::Other.into())));
        (written, stored)
    });
    let info = match (written, stored) {
        (Ok(d), Ok(info)) if info.diff_id == d.diff_id => {
            let blob = File::open(&tmp.0)
                .map_err(io_err(&tmp.0))
                .and_then(|f| Ok(store.put_blob(f, Some(&d.compressed_digest))?));
            if let Err(e) = blob {
                release(store, &info);
                return Err(e);
            }
            info
        }
        (Ok(d), Ok(info)) => {
            release(store, &info);
            return Err(StoreError::DiffIdMismatch {
                expected: d.diff_id,
                actual: info.diff_id,
            }
            .into());
        }
        // Our side failed: whatever the store made of the cut stream goes.
        (Err(e), Ok(info)) => {
            release(store, &info);
            return Err(e);
        }
        // The store's error explains a broken pipe on our side (e.g. a full disk).
        (_, Err(e)) => return Err(e.into()),
    };
    Ok(info)
}

/// Undo a layer this commit created (a layer that already existed stays).
fn release(store: &Store, info: &LayerInfo) {
    if info.created {
        let _ = store.release_layers(std::slice::from_ref(&info.chain_id));
    }
}
