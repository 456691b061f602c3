//! `commit`: a container's changes become a new image (SPEC §10.2; DESIGN "Data flow of
//! commit").
//!
//! Steps, each undone if a later one fails so the store is as before:
//! 1. check the `--change` instructions and the parent image (nothing written yet);
//! 2. pause the container (optional) and write its changes as a gzip layer tar into `tmp/`,
//!    hashing the compressed and uncompressed bytes in the same pass (nothing for an empty
//!    change set); resume;
//! 3. add the layer to the store on the parent's top layer (the store extracts it and checks
//!    the diffID — or finds it already stored) and keep the compressed blob for `push`;
//! 4. write the new config (parent + changes + history entry) and register the image with its
//!    `parent` link and the tag (a moved tag leaves its old image dangling).

use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};

use nix::unistd::Pid;
use serde_json::{Map, Value};

use super::{
    commit_config, diff_filtered, diff_full_tree, write_changes_tar, ChangesError, CommitMeta,
    Filter, LayerDigests, Paused,
};
use crate::digest::{ChainId, ImageId};
use crate::fsutil::{unique_tmp, Staging};
use crate::reference::Reference;
use crate::store::{LayerInfo, Store};

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
    /// The committed container.
    pub container_id: crate::container::ContainerId,
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
    let _lease = store.lease_scope();
    let parent = store.image(&req.image)?;
    let parent_config = store.read_blob(parent.id.digest())?;
    let mut lowers = req.extra_lowers.clone();
    lowers.extend(store.layer_dirs(&parent)?);
    let mut filter = Filter::docker();
    for v in &req.volumes {
        filter = filter.exclude(v.clone());
    }

    // 2. + 3. The changes, with the container paused while its upper dir is read, streamed as
    // a layer into the store (none for an empty change set: `empty_layer`).
    let layer: Option<(Staging, LayerDigests)> = {
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
            Some(write_layer(store, req, &changes)?)
        }
    };
    // The container runs again; the store extracts the layer from the temp file.
    let layer = match layer {
        Some((tmp, digests)) => Some(store_layer(store, &tmp, &digests, parent.chain_ids.last())?),
        None => None,
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

/// Flush a FUSE filesystem mounted at `path`, so pages the kernel still caches (writeback)
/// reach the server and the upper dir. Kernel overlayfs writes straight to the upper dir's page
/// cache, and its `syncfs` would sync the whole host filesystem: skipped. Best effort: a
/// container that just stopped has no mount any more, and then nothing is cached either.
pub(crate) fn sync_fs(path: &Path) {
    let Ok(f) = File::open(path) else { return };
    let fuse = nix::sys::statfs::fstatfs(&f)
        .is_ok_and(|s| s.filesystem_type() == nix::sys::statfs::FUSE_SUPER_MAGIC);
    if fuse {
        let _ = nix::unistd::syncfs(&f);
    }
}

/// Write the layer of `changes` once — read, compressed and hashed (both forms) in one pass —
/// into a temp file in the store's `tmp/`.
fn write_layer(
    store: &Store,
    req: &CommitRequest,
    changes: &[super::Change],
) -> Result<(Staging, LayerDigests), ChangesError> {
    // `<pid>-…` lets `Store::open` clean it up if we die.
    let tmp = Staging::new(unique_tmp(&store.tmp_dir(), "commit.tar.gz"));
    let file = File::create(tmp.path()).map_err(io_err(tmp.path()))?;
    let (digests, out) = write_changes_tar(&req.upper, changes, BufWriter::new(file))?;
    out.into_inner()
        .map_err(|e| io_err(tmp.path())(e.into_error()))?;
    Ok((tmp, digests))
}

/// Add the layer in `tmp` to the store on `parent`. When the store already holds this very
/// layer (the same changes committed again), nothing is extracted: the store answers from the
/// diffID. A layer this call created is released again if keeping its blob fails.
fn store_layer(
    store: &Store,
    tmp: &Staging,
    digests: &LayerDigests,
    parent: Option<&ChainId>,
) -> Result<LayerInfo, ChangesError> {
    let f = File::open(tmp.path()).map_err(io_err(tmp.path()))?;
    let info = store.add_layer(f, parent, Some(&digests.diff_id))?;
    if info.created {
        let blob = File::open(tmp.path())
            .map_err(io_err(tmp.path()))
            .and_then(|f| Ok(store.put_blob(f, Some(&digests.compressed_digest))?));
        if let Err(e) = blob {
            release(store, &info);
            return Err(e);
        }
    }
    Ok(info)
}

/// Undo a layer this commit created (a layer that already existed stays).
fn release(store: &Store, info: &LayerInfo) {
    if info.created {
        let _ = store.release_layers(std::slice::from_ref(&info.chain_id));
    }
}
