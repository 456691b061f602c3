//! `commit`: a container's changes become a new image (SPEC §10.2; DESIGN "Data flow of
//! commit").
//!
//! Steps, each undone if a later one fails so the store is as before:
//! 1. check the `--change` instructions and the parent image (nothing written yet);
//! 2. pause the container (optional) and stream its changes as a gzip layer tar into `tmp/`,
//!    hashing compressed and uncompressed bytes in the same pass; resume;
//! 3. unless the layer is empty, add it to the store on the parent's top layer (the store
//!    extracts it and checks the diffID) and keep the compressed blob for `push`;
//! 4. write the new config (parent + changes + history entry) and register the image with its
//!    `parent` link and the tag (a moved tag leaves its old image dangling).

use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};

use nix::unistd::Pid;
use serde_json::{Map, Value};

use super::{
    commit_config, diff_filtered, diff_full_tree, write_changes_tar, ChangesError, CommitMeta,
    Filter, Paused,
};
use crate::digest::ImageId;
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
    /// Container ID (64 hex).
    pub container_id: String,
    /// The container's effective config (`Cmd`, `Env`, …); `None`: the image's.
    pub container_config: Option<Map<String, Value>>,
    /// Volume mountpoints: never committed.
    pub volumes: Vec<PathBuf>,
    /// The container's init process, when it runs and should be paused during the commit.
    pub pause: Option<Pid>,
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

    // 2. The layer tar, with the container paused while its upper dir is read.
    let tmp = TempFile(temp_path(store));
    let digests = {
        let _paused = req.pause.map(Paused::pause).transpose()?;
        let file = File::create(&tmp.0).map_err(io_err(&tmp.0))?;
        let changes = if req.full_tree {
            diff_full_tree(&req.upper, &lowers, &filter)?
        } else {
            diff_filtered(&req.upper, &lowers, &filter)?
        };
        let (digests, out) = write_changes_tar(&req.upper, &changes, BufWriter::new(file))?;
        let file = out
            .into_inner()
            .map_err(|e| io_err(&tmp.0)(e.into_error()))?;
        file.sync_all().map_err(io_err(&tmp.0))?;
        digests
    };

    // 3. The layer (none for an empty change set: `empty_layer`).
    let layer: Option<LayerInfo> = if digests.entries == 0 {
        None
    } else {
        let f = File::open(&tmp.0).map_err(io_err(&tmp.0))?;
        let info = store.add_layer(f, parent.chain_ids.last(), Some(&digests.diff_id))?;
        let keep_blob = File::open(&tmp.0)
            .map_err(io_err(&tmp.0))
            .and_then(|f| Ok(store.put_blob(f, Some(&digests.compressed_digest))?));
        if let Err(e) = keep_blob {
            release(store, &info);
            return Err(e);
        }
        Some(info)
    };
    drop(tmp);

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

/// Undo a layer this commit created (a layer that already existed stays).
fn release(store: &Store, info: &LayerInfo) {
    if info.created {
        let _ = store.release_layers(std::slice::from_ref(&info.chain_id));
    }
}
