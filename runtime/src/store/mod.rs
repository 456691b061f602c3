//! The on-disk image store: blobs, layers, images and references under one root.
//!
//! # Layout
//! ```text
//! <root>/blobs/sha256/<hex>        verified blobs: configs (the image ID is the config's digest),
//!                                  manifests, compressed layers
//! <root>/layers/<chainhex>/diff/   the layer's files, overlay on-disk format (whiteout = char 0/0,
//!                                  opaque dir = trusted.overlay.opaque=y; `strata_fs::format`)
//! <root>/layers/<chainhex>/layer.json      LayerInfo
//! <root>/layers/<chainhex>/tar-split.gz    recorded tar headers: rebuilds the exact layer tar
//! <root>/layers/<chainhex>/tar-split.patches  (rare) contents of files replaced within the tar
//! <root>/images.json               image records (parent link, size), see `images.rs`
//! <root>/repositories.json         references (canonical string) -> image ID
//! <root>/store.lock                flock: exclusive for metadata updates, shared for reads
//! <root>/tmp/<pid>-…               staging; entries of dead pids removed by `Store::open`
//! <root>/leases/<pid>-<nanos>      what a live process added but no image names yet (`gc.rs`)
//! <root>/partial/                  resumable downloads of the registry client (flocked while used)
//! ```
//!
//! # Vocabulary
//! - *blob*: bytes named by their sha256 ([`Digest`]); written to `tmp/`, hashed, verified,
//!   fsynced, renamed into place ([`Store::put_blob`]).
//! - *layer*: one extracted layer tar, keyed by its [`ChainId`] (its diff on top of its
//!   parent chain). [`Store::add_layer`] streams a gzip/zstd/plain tar into a staging dir,
//!   refuses hostile entries, verifies the diffID and renames the dir into place; adding an
//!   existing chain is a no-op. Layers are shared by images and deleted when no image uses them.
//! - *image*: a config blob ([`ImageId`] = its digest) + the layers of `rootfs.diff_ids`
//!   ([`Store::add_image`]). Deleting an image deletes its config, the manifests/indexes naming
//!   it and the compressed blobs of its released layers, unless something kept still reaches
//!   them (`Store::gc_blobs`). A *reference* (`name:tag` or `name@digest`, [`Reference`]) points
//!   at one image; moving a tag to another image leaves the old one *dangling*.
//! - *in use*: the store does not read container records; callers pass [`ContainerUse`]s.
//!
//! # Public API (summary)
//! - `Store::open(root) -> Result<Store>`; `root()`, `blob_path(&Digest)`, `read_blob`
//! - `put_blob(reader, expected: Option<&Digest>) -> Result<Digest>`, `has_blob`
//! - `add_layer(reader, parent: Option<&ChainId>, expected: Option<&DiffId>) -> Result<LayerInfo>`
//! - `stage_layer(reader, expected) -> Result<StagedLayer>` + `commit_layer(staged, parent)`: the
//!   two halves of `add_layer`, so a caller can verify the input digest in between
//! - `layer(&ChainId) -> Result<LayerInfo>`, `has_layer`, `layer_tar(&ChainId, &mut dyn Write)`
//! - `release_layers(&[ChainId])` (undo layers a failed import added, if no image uses them)
//! - `add_image(config_bytes, refs: &[Reference], parent: Option<&ImageId>) -> Result<ImageId>`,
//!   `add_images(&[NewImage])` (several at once, all or none)
//! - `tag(&ImageId, &Reference)`, `untag(&Reference) -> Result<ImageId>`
//! - `resolve(&str) -> Result<ImageRecord>` (SPEC §1.3), `image(&ImageId)`, `images()`
//! - `layer_dirs(&ImageRecord) -> Result<Vec<PathBuf>>` top layer first (union mount lowers)
//! - `children(&ImageId)`, `delete_image_unchecked(&ImageId)` (no conflict checks)
//! - `remove_image(query, force, prune, &[ContainerUse]) -> Result<Vec<RemoveEvent>>` (Docker's
//!   `rmi` rules and conflict texts), `prune_images(all, &[ContainerUse], filter)`
//! - `RunConfig::apply_change("CMD [\"sh\"]")` (`--change`, shared by import and commit)
//! - `gc(dry_run) -> Result<GcReport>`: mark from image records and live leases, sweep orphan
//!   layers and blobs, stale partial downloads and `tmp/` entries; `lease_scope()`, `hold_layer`
//!
//! Archives (`docker save`/`load`, OCI layout, `import`) live in [`crate::archive`].
//!
//! # Locking
//! One lock, `store.lock`. Metadata updates hold it exclusively for read-modify-write of the JSON
//! files (each rewritten via temp file + fsync + rename). Layer extraction happens *outside* the
//! lock in a private staging dir; only the final rename is shared state, and it is atomic.

mod blobs;
pub mod config;
pub mod extract;
mod gc;
mod images;
mod layers;
mod remove;
mod tarsplit;

use std::io;
use std::path::{Path, PathBuf};

pub use config::{History, ImageConfig, RootFs, RunConfig};
pub use extract::ExtractError;
pub(crate) use gc::Leased;
pub use gc::{GcReport, LeaseScope};
pub use images::{ContainerUse, ImageRecord, NewImage};
pub use layers::{decompress, detect_compression, Compression, LayerInfo, StagedLayer};
pub use remove::RemoveEvent;

pub use crate::digest::{ChainId, DiffId, Digest, ImageId};
pub use crate::reference::Reference;

use crate::digest::DigestError;
use crate::reference::ReferenceError;

/// Errors of the image store. `Display` texts are Docker's where Docker has one.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("No such image: {0}")]
    NoSuchImage(String),
    #[error("layer {0} does not exist")]
    NoSuchLayer(ChainId),
    #[error("digest mismatch: expected {expected}, got {actual}")]
    DigestMismatch { expected: Digest, actual: Digest },
    #[error("layer diffID mismatch: expected {expected}, got {actual}")]
    DiffIdMismatch { expected: DiffId, actual: DiffId },
    #[error("{}", extract_text(.0))]
    Extract(#[from] ExtractError),
    #[error("invalid layer archive: {0}")]
    Decompress(#[source] io::Error),
    #[error("invalid image config: {0}")]
    InvalidConfig(#[source] serde_json::Error),
    #[error("corrupt store metadata {path}: {source}")]
    CorruptMetadata {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error(transparent)]
    Reference(#[from] ReferenceError),
    #[error(transparent)]
    Digest(#[from] DigestError),
    #[error("{0}")]
    Conflict(String),
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// An extraction that failed for lack of space is not an invalid archive (Docker words it
/// `failed to register layer: … no space left on device`).
fn extract_text(e: &ExtractError) -> String {
    let io = match e {
        ExtractError::Tar(io) | ExtractError::Io { source: io, .. } => Some(io),
        _ => None,
    };
    let full = io.is_some_and(|io| {
        matches!(
            io.raw_os_error(),
            Some(nix::libc::ENOSPC) | Some(nix::libc::EDQUOT)
        ) || matches!(
            io.kind(),
            io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded
        )
    });
    if full {
        format!("failed to register layer: {e}")
    } else {
        format!("invalid layer archive: {e}")
    }
}

pub(crate) fn io_at(path: impl Into<PathBuf>) -> impl FnOnce(io::Error) -> StoreError {
    let path = path.into();
    move |source| StoreError::Io { path, source }
}

/// A handle on one store root. Cheap; every method re-reads the metadata it needs.
#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
    /// The runroot whose events log image events go to ([`Store::with_events`]); `None`:
    /// nothing is recorded.
    events: Option<PathBuf>,
}

impl Store {
    /// Open (creating if needed) the store at `root`; removes staging left by dead processes.
    pub fn open(root: &Path) -> Result<Store> {
        for d in ["blobs/sha256", "layers", "tmp", "leases"] {
            let p = root.join(d);
            std::fs::create_dir_all(&p).map_err(io_at(&p))?;
        }
        let store = Store {
            root: root.to_path_buf(),
            events: None,
        };
        crate::fsutil::clean_stale_tmp(&store.tmp_dir());
        store.clean_dead_leases();
        Ok(store)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Record image events in the events log under `runroot` (the engine's store does).
    pub fn with_events(mut self, runroot: &Path) -> Store {
        self.events = Some(runroot.to_path_buf());
        self
    }

    /// Record `ev` in the events log, if this store records events (never fails).
    pub fn event(&self, ev: crate::events::Event) {
        if let Some(runroot) = &self.events {
            crate::events::record(runroot, &ev);
        }
    }

    /// Record an image event on `id` (`sha256:…`): Docker's `LogImageEvent` attributes, the
    /// image's labels and `name`.
    pub fn image_event(&self, action: &str, id: &str, name: &str) {
        if self.events.is_none() {
            return;
        }
        let mut ev = crate::events::Event::image(action, id, name);
        if let Ok(rec) = self.resolve(id) {
            if let Some(labels) = rec.config.config.as_ref().and_then(|c| c.labels.as_ref()) {
                for (k, v) in labels {
                    ev.attributes.entry(k.clone()).or_insert_with(|| v.clone());
                }
            }
        }
        self.event(ev);
    }

    pub(crate) fn tmp_dir(&self) -> PathBuf {
        self.root.join("tmp")
    }

    pub(crate) fn layers_dir(&self) -> PathBuf {
        self.root.join("layers")
    }
}

#[cfg(test)]
mod tests;
