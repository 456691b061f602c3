//! Image archives, both directions (SPEC §5):
//! - [`load`]: docker-archive (legacy `docker save` layout, podman/skopeo variant, Docker ≥ 25
//!   OCI-in-tar) and OCI image layout (a directory or a tar of one).
//! - [`save`]: writes Docker ≥ 25's layout (`manifest.json` + `repositories` *and* a valid OCI
//!   layout with uncompressed layers), or a pure OCI layout with [`SaveFormat::Oci`].
//! - [`import`]: a rootfs tarball → one-layer image.
//!
//! Archives are hostile input: the outer tar is only *indexed* (path → offset), never extracted,
//! so no name in it ever reaches the host filesystem; layers go through the store's safe
//! extraction and are verified against the config's diffIDs.

mod import;
mod load;
mod save;
mod source;

pub use import::import;
pub use load::{load, LoadInput, Loaded};
pub use save::{save, SaveFormat, SaveItem};

use std::io;
use std::path::PathBuf;

use crate::digest::DigestError;
use crate::reference::ReferenceError;
use crate::store::config::ChangeError;
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    /// Reading the archive itself failed (Go-style text: `open X: no such file or directory`).
    #[error("open {}: {}", path.display(), go_io_error(err))]
    Io { path: PathBuf, err: io::Error },
    #[error("requested load from stdin, but stdin is empty")]
    EmptyInput,
    #[error("invalid archive: {0}")]
    Tar(#[source] io::Error),
    #[error("invalid archive: {0} not found in archive")]
    Missing(String),
    #[error("invalid archive: neither manifest.json nor an OCI index.json found")]
    NoManifest,
    #[error("invalid archive: {what}: {source}")]
    Json {
        what: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("invalid archive: {0}")]
    Invalid(String),
    #[error("invalid archive: {what} does not match its digest {expected}")]
    BadDigest { what: String, expected: String },
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A lazily pulled layer could not be completed before it was written out.
    #[error(transparent)]
    Lazy(#[from] crate::lazy::LazyError),
    #[error(transparent)]
    Reference(#[from] ReferenceError),
    #[error(transparent)]
    Digest(#[from] DigestError),
    #[error(transparent)]
    Change(#[from] ChangeError),
    #[error("writing archive: {0}")]
    Write(#[source] io::Error),
}

pub type Result<T, E = ArchiveError> = std::result::Result<T, E>;

pub(crate) const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub(crate) const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub(crate) const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub(crate) const OCI_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
pub(crate) const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub(crate) const ANNOTATION_REF_NAME: &str = "org.opencontainers.image.ref.name";
pub(crate) const ANNOTATION_IMAGE_NAME: &str = "io.containerd.image.name";

/// An I/O error as Go prints it: `no such file or directory`, without Rust's `(os error N)`.
pub fn go_io_error(e: &io::Error) -> String {
    let text = e.to_string();
    let text = match text.find(" (os error ") {
        Some(i) => &text[..i],
        None => &text,
    };
    let mut c = text.chars();
    match c.next() {
        Some(f) => f.to_lowercase().chain(c).collect(),
        None => String::new(),
    }
}

/// GOARCH name of this machine (`amd64`, `arm64`, …).
pub fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        "riscv64" => "riscv64",
        "s390x" => "s390x",
        "arm" => "arm",
        other => other,
    }
}

#[cfg(test)]
mod tests;
