//! Lazy layers: run an image whose seekable layers (eStargz, zstd:chunked) are still
//! downloading.
//!
//! # Vocabulary
//! - *lazy layer*: a stored layer (`layers/<chain>/`, with its `layer.json`, so images, GC and
//!   mounts treat it as any layer) whose `diff/` is a *skeleton* and which has a `lazy/` dir:
//!   ```text
//!   layers/<chain>/diff/              the whole tree made at once from the TOC (`skeleton`);
//!                                     regular files sparse at their final size, data to come
//!   layers/<chain>/lazy/source.json   where the blob is (registry, repository, digest, size),
//!                                     its TOC digest and offset, the diffID to expect
//!   layers/<chain>/lazy/tail          the blob's TOC bytes from the TOC offset (eStargz: to
//!                                     the end; zstd:chunked: the compressed manifest)
//!   layers/<chain>/lazy/blob          a sparse local copy of the blob, filled as ranges arrive
//!   layers/<chain>/lazy/have          append-only log of the byte ranges `blob` holds
//!   layers/<chain>/lazy/filled        append-only log of what data is in diff/: `<entry>` a
//!                                     whole file (TOC entry index), `<entry> <chunk>` one chunk
//!   layers/<chain>/lazy/lock          flock: shared by every process serving the layer
//!   ```
//! - *filling* a file: fetch the compressed ranges of its chunks (HTTP `Range` requests of up
//!   to 4 MiB, 3 in flight per read and 4 per layer, through the registry client and its
//!   auth), decode each chunk and check it against its TOC digest, and only then write it into
//!   the skeleton file (`layer`). Reads of different chunks of one file fetch at once; reads of
//!   one chunk wait for one fetch and share its result. The union filesystem asks for the
//!   chunks covering each read of a file still arriving, and for the whole file before it
//!   copies it up or opens a small one ([`strata_fs::LowerData`], `provider`).
//! - *completing* a layer: fetch every byte of the blob, fill every file, check the blob's
//!   digest, extract the blob exactly as a normal pull does (diffID checked, tar-split
//!   recorded) into staging, and exchange that staged layer with the lazy one in one
//!   `renameat2(RENAME_EXCHANGE)`. New containers then get the ordinary layer; processes
//!   still serving the old skeleton keep it (they hold its fds), and it waits in
//!   `<root>/lazy-retired/` until none holds its `lock` ([`sweep_retired`]).
//!
//! # Crash safety
//! A lazy layer is created in the store's staging dir and renamed into `layers/` under a lease
//! (like any pulled layer), so a killed `pull --lazy` leaves nothing GC cannot remove. A killed
//! supervisor leaves the logs consistent enough to resume: a range is logged after its bytes
//! were written, a file after its data; the blob digest is checked before anything is stored, so
//! a torn write is caught there (the layer then starts over). A restarted process trusts the
//! `filled` log: chunks logged there were verified before they were written, and are neither
//! fetched nor decoded again. Processes serving one layer at once (two containers) read on in
//! `have` and `filled` at each miss, so what one fetched and wrote the other takes as it is; a
//! range being fetched holds an OFD write lock on those bytes of `blob`, so a second fetch of
//! them (any process, any thread) waits and then fetches only what is still missing.

mod layer;
mod provider;
mod pull;
mod skeleton;
mod status;

use std::path::PathBuf;

use nix::errno::Errno;

pub use layer::LazyLayer;
pub use provider::{
    complete_image, complete_lowers, provider_for, report_to, Provider, SERVING_THREADS,
};
pub use pull::pull_lazy;
pub use status::{image_fetch, ImageFetch, LayerFetch};

use crate::digest::{ChainId, DiffId};
use crate::registry::RegistryError;
use crate::seekable::SeekableError;
use crate::store::StoreError;

/// Errors of lazy layers.
#[derive(Debug, thiserror::Error)]
pub enum LazyError {
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error("layer {digest}: {source}")]
    Seekable {
        digest: String,
        source: SeekableError,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: invalid lazy layer state: {source}")]
    State {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("lazy layer entry {name:?}: {source}")]
    Skeleton { name: String, source: Errno },
    #[error("filesystem layer verification failed for digest {digest}")]
    BlobDigest { digest: String },
    #[error("layer {chain} is not lazy")]
    NotLazy { chain: ChainId },
    #[error("layer {chain} is still being fetched by another process")]
    Busy { chain: ChainId },
    /// A fetch several reads waited for failed: each of them gets its error.
    #[error(transparent)]
    Shared(std::sync::Arc<LazyError>),
}

pub(crate) fn io_at(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> LazyError {
    let path = path.into();
    move |source| LazyError::Io { path, source }
}

/// The seekable format of a lazy layer's blob.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum Format {
    /// eStargz: the TOC is a gzip member (and a tar entry) at `toc_offset`, up to the footer.
    #[default]
    Estargz,
    /// zstd:chunked: the TOC ("manifest") is a zstd skippable frame at `toc_offset`.
    ZstdChunked,
}

/// Where a lazy layer's blob is, and what it must turn out to be (`lazy/source.json`).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub(crate) struct Source {
    #[serde(default)]
    pub format: Format,
    /// zstd:chunked: the manifest position (`offset:compressed:uncompressed:type`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub position: String,
    /// The registry (or Docker Hub mirror, `host[:port]`) the blob is read from.
    pub registry: String,
    /// When `registry` is a Docker Hub mirror: the image's own registry (`docker.io`), which
    /// the reads go to once the mirror stops answering.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub origin: String,
    /// A mirror named `http://…`: reached over plain HTTP.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub plain_http: bool,
    pub repo: String,
    pub insecure: Vec<String>,
    /// `sha256:…` of the compressed blob, and its size.
    pub digest: String,
    pub size: u64,
    /// The TOC digest annotation of the layer descriptor (the manifest covers it): eStargz's
    /// TOC digest, or zstd:chunked's manifest checksum.
    pub toc_digest: String,
    pub toc_offset: u64,
    pub diff_id: DiffId,
    pub chain_id: ChainId,
}

impl Source {
    /// A client for the registry or mirror the blob is read from, with its stored credentials.
    pub(crate) fn client(&self) -> Result<crate::registry::client::Client, RegistryError> {
        if self.plain_http {
            let mirror = crate::registry::mirrors::Mirror {
                host: self.registry.clone(),
                plain_http: true,
            };
            return mirror.client(&self.insecure);
        }
        crate::registry::pull::client_for(&self.registry, &self.insecure)
    }

    /// Parse and verify the TOC from `tail` (the blob's bytes from `toc_offset`: to the end
    /// for eStargz, the compressed manifest for zstd:chunked).
    pub(crate) fn parse_toc(&self, tail: &[u8]) -> Result<crate::seekable::Toc, LazyError> {
        let err = |source| LazyError::Seekable {
            digest: self.digest.clone(),
            source,
        };
        match self.format {
            Format::Estargz => {
                crate::seekable::parse_toc(tail, Some(&self.toc_digest)).map_err(err)
            }
            Format::ZstdChunked => {
                use crate::seekable::zstd_chunked;
                let pos = zstd_chunked::parse_position(&self.position).map_err(err)?;
                zstd_chunked::parse_toc(tail, &pos, Some(&self.toc_digest)).map_err(err)
            }
        }
    }
}

/// The directory retired lazy layers wait in until nobody serves them.
pub(crate) fn retired_dir(store: &crate::store::Store) -> PathBuf {
    store.root().join("lazy-retired")
}

/// Remove retired lazy layers no process serves any more (their `lazy/lock` is free).
pub fn sweep_retired(store: &crate::store::Store) {
    let dir = retired_dir(store);
    let Ok(rd) = std::fs::read_dir(&dir) else {
        return;
    };
    for e in rd.flatten() {
        let lock = e.path().join("lazy/lock");
        let free = crate::fsutil::lock_file(&lock, crate::fsutil::LockMode::TryExclusive).is_ok();
        if free || !lock.exists() {
            let _ = crate::fsutil::remove_any(&e.path());
        }
    }
}

/// Whether the layer dir holding `diff` (a `layers/<chain>/diff` path) is lazy.
pub fn is_lazy_diff(diff: &std::path::Path) -> bool {
    diff.parent()
        .is_some_and(|d| d.join("lazy/source.json").is_file())
}

/// Whether stored layer `chain` is still lazy.
pub fn is_lazy(store: &crate::store::Store, chain: &ChainId) -> bool {
    is_lazy_diff(&store.layer_diff_dir(chain))
}
