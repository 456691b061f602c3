//! `image convert --estargz`: re-encode every layer of a stored image as eStargz and register
//! the result as a new image (new layer blobs, new diffIDs: the TOC entry is part of the tar, as
//! with `nerdctl image convert --estargz`; the config's `rootfs.diff_ids` name what the new
//! blobs decompress to, everything else in the config is kept).
//!
//! Each layer: the store's exact layer tar is spooled to `tmp/`, written as eStargz next to it,
//! added as a layer from that blob (the store extracts it like any pulled gzip layer and records
//! the blob as the layer's compressed form, so `push` sends it as is) and the blob is moved into
//! `blobs/`. On failure the layers this conversion created are released and its temp files go.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use super::estargz::{self, EstargzInfo, EstargzOptions};
use super::SeekableError;
use crate::digest::{ChainId, Digest, ImageId};
use crate::fsutil::{unique_tmp, Staging};
use crate::reference::Reference;
use crate::store::{ImageRecord, Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum ConvertError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Seekable(#[from] SeekableError),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("invalid image config: {0}")]
    Config(#[source] serde_json::Error),
    #[error("invalid image config: no rootfs.diff_ids")]
    NoDiffIds,
}

fn io_at(p: &Path) -> impl FnOnce(io::Error) -> ConvertError + '_ {
    move |source| ConvertError::Io {
        path: p.to_path_buf(),
        source,
    }
}

/// The converted image.
#[derive(Debug, Clone)]
pub struct Converted {
    pub id: ImageId,
    /// One per layer, base first.
    pub layers: Vec<EstargzInfo>,
}

/// Convert `src` to eStargz and register it under `refs` (none: an untagged image).
pub fn convert_image(
    store: &Store,
    src: &ImageRecord,
    refs: &[Reference],
    opts: &EstargzOptions,
) -> Result<Converted, ConvertError> {
    let dir = Staging::new(unique_tmp(&store.tmp_dir(), "convert"));
    std::fs::create_dir_all(dir.path()).map_err(io_at(dir.path()))?;
    let mut created: Vec<ChainId> = Vec::new();
    let mut blobs: Vec<Digest> = Vec::new();
    let result =
        convert_layers(store, src, opts, dir.path(), &mut created, &mut blobs).and_then(|layers| {
            let config = new_config(&store.read_blob(src.id.digest())?, &layers)?;
            let id = store.add_image(&config, refs, None)?;
            Ok(Converted { id, layers })
        });
    if result.is_err() {
        let _ = store.release_layers(&created);
        let _ = store.discard_blobs(blobs);
    }
    result
}

fn convert_layers(
    store: &Store,
    src: &ImageRecord,
    opts: &EstargzOptions,
    dir: &Path,
    created: &mut Vec<ChainId>,
    blobs: &mut Vec<Digest>,
) -> Result<Vec<EstargzInfo>, ConvertError> {
    let mut out = Vec::with_capacity(src.chain_ids.len());
    let mut parent: Option<ChainId> = None;
    for (i, chain) in src.chain_ids.iter().enumerate() {
        let tar_path = dir.join(format!("{i}.tar"));
        let mut w = BufWriter::new(File::create(&tar_path).map_err(io_at(&tar_path))?);
        store.layer_tar(chain, &mut w)?;
        w.flush().map_err(io_at(&tar_path))?;
        drop(w);

        let blob_path = dir.join(format!("{i}.estargz"));
        let info = {
            let tar = File::open(&tar_path).map_err(io_at(&tar_path))?;
            let mut w = BufWriter::new(File::create(&blob_path).map_err(io_at(&blob_path))?);
            let info = estargz::write_estargz(tar, &mut w, opts)?;
            w.flush().map_err(io_at(&blob_path))?;
            info
        };
        let _ = std::fs::remove_file(&tar_path);

        let blob = File::open(&blob_path).map_err(io_at(&blob_path))?;
        let layer = store.add_layer(blob, parent.as_ref(), Some(&info.diff_id))?;
        if layer.created {
            created.push(layer.chain_id.clone());
        }
        if store.adopt_blob(&blob_path, &info.blob_digest)? {
            blobs.push(info.blob_digest.clone());
        }
        parent = Some(layer.chain_id);
        out.push(info);
    }
    Ok(out)
}

/// `config` with `rootfs.diff_ids` replaced by the converted layers' diffIDs.
fn new_config(config: &[u8], layers: &[EstargzInfo]) -> Result<Vec<u8>, ConvertError> {
    let mut v: serde_json::Value = serde_json::from_slice(config).map_err(ConvertError::Config)?;
    let ids = v
        .get_mut("rootfs")
        .and_then(|r| r.get_mut("diff_ids"))
        .ok_or(ConvertError::NoDiffIds)?;
    *ids = serde_json::Value::Array(
        layers
            .iter()
            .map(|l| serde_json::Value::String(l.diff_id.to_string()))
            .collect(),
    );
    serde_json::to_vec(&v).map_err(ConvertError::Config)
}

/// The eStargz annotations of a stored layer blob, if it is eStargz (a TOC the footer points
/// at, parsed and validated). `uncompressed_size` is the layer's tar size.
pub fn blob_annotations(path: &Path, uncompressed_size: u64) -> Option<Vec<(String, String)>> {
    let (_, toc_digest) = estargz::inspect_file(path).ok()?;
    Some(vec![
        (
            estargz::TOC_DIGEST_ANNOTATION.to_string(),
            toc_digest.to_string(),
        ),
        (
            estargz::UNCOMPRESSED_SIZE_ANNOTATION.to_string(),
            uncompressed_size.to_string(),
        ),
    ])
}
