//! `build` turns a Dockerfile and a context into images, as Docker's classic builder does
//! (buildah `imagebuildah`, BuildKit `frontend/dockerfile/instructions`).
//!
//! Vocabulary and flow:
//! - [`parser`] splits the text into logical *lines* (directives, comments, continuations,
//!   heredocs); [`instructions`] types every line into an [`instructions::Instruction`] and
//!   groups them into *stages* (one per `FROM`). Both run before anything is built, and every
//!   error names its Dockerfile line.
//! - [`shell`] expands `$VARS` in exactly the instructions Docker expands.
//! - The *executor* ([`exec`]) builds the stages the target needs, in order. Each *step*
//!   produces an intermediate image (parent link = the previous step's image): `RUN` (`run`)
//!   runs a container through the normal create/start path (same confinement, same storage
//!   driver) and its upper dir becomes a layer through the diff/layer-tar path `commit` uses;
//!   `COPY`/`ADD` write a layer tar directly ([`copy`]); metadata instructions only change the
//!   config (`empty_layer` history entries, `stage` holds the stage's config).
//! - The *cache*: a step is reused when a child image of the same parent was made by the same
//!   instruction with the same config (for COPY/ADD the instruction text carries a digest of
//!   every source file's content, mode and owner — never its mtime).
//! - [`tree`] reads the context and images with fd-relative lookups; [`ignore`] holds Go's
//!   glob and the `.dockerignore` rules.
//!
//! This module prints nothing: progress goes to the caller as [`Event`]s.

pub mod copy;
pub mod exec;
pub mod ignore;
pub mod instructions;
mod mounts;
pub use mounts::{cache_mounts_usage, prune_cache_mounts};
mod parallel;
pub mod parser;
mod run;
pub mod shell;
mod stage;
pub mod tree;

use std::path::PathBuf;

pub use exec::{build, BuildHost, BuildOptions, Event};

use crate::changes::ChangesError;
use crate::container::ContainerError;
use crate::store::StoreError;

/// Errors of a build. `Display` texts are Docker's.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("dockerfile parse error on line {line}: {msg}")]
    Parse { line: usize, msg: String },
    #[error("the Dockerfile cannot be empty")]
    NoInstructions,
    #[error("failed to process \"{word}\": {source}")]
    Expand {
        word: String,
        source: shell::ShellError,
    },
    /// An instruction's arguments are invalid once expanded (Docker's text in `msg`).
    #[error("{msg}")]
    Instruction { line: usize, msg: String },
    #[error("failed to reach build target {0} in Dockerfile")]
    NoTarget(String),
    #[error("The command '{cmd}' returned a non-zero code: {code}")]
    NonZero { cmd: String, code: i32 },
    #[error("{instr} failed: file not found in build context or excluded by .dockerignore: stat {path}: file does not exist")]
    NotFound { instr: &'static str, path: String },
    #[error("{instr} failed: forbidden path outside the build context: {path} ()")]
    Outside { instr: &'static str, path: String },
    #[error("{instr} failed: no source files were specified")]
    NoSources { instr: &'static str },
    #[error("When using {instr} with more than one source file, the destination must be a directory and end with a /")]
    MultiDest { instr: &'static str },
    #[error("unable to convert uid/gid chown string to host mapping: can't find {what} for {kind} {name}: no such {kind}: {name}")]
    Chown {
        what: &'static str,
        kind: &'static str,
        name: String,
    },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Fs {
        path: String,
        #[source]
        source: nix::errno::Errno,
    },
    #[error("failed to GET {url}: {source}")]
    Download {
        url: String,
        #[source]
        source: Box<ureq::Error>,
    },
    #[error("failed to GET {url} with status {status}")]
    DownloadStatus { url: String, status: u16 },
    #[error("digest mismatch {expected}: {actual}")]
    Checksum { expected: String, actual: String },
    #[error("{source}")]
    Pull {
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("No image was generated. Is your Dockerfile empty?")]
    NoImage,
    #[error("secret {0}: not found")]
    SecretNotFound(String),
    #[error("build cancelled")]
    Cancelled,
    #[error("unable to prepare context: {0}")]
    Context(#[source] crate::store::ExtractError),
    #[error(transparent)]
    Container(#[from] ContainerError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Changes(#[from] ChangesError),
    #[error(transparent)]
    Reference(#[from] crate::reference::ReferenceError),
}

/// Extract a build context sent as a tar (plain, gzip or zstd) into the empty directory `dir`,
/// with the store's rules for hostile entries (nothing lands outside `dir`).
pub fn extract_context(data: impl std::io::Read, dir: &std::path::Path) -> Result<(), BuildError> {
    let root = std::fs::File::open(dir).map_err(io_at(dir))?;
    let r = crate::store::decompress(std::io::BufReader::new(data)).map_err(io_at(dir))?;
    crate::store::extract::extract(
        r,
        std::os::fd::AsFd::as_fd(&root),
        crate::rootless::flavour(),
        &mut std::io::sink(),
    )
    .map_err(BuildError::Context)?;
    Ok(())
}

pub(crate) fn io_at(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> BuildError {
    let path = path.into();
    move |source| BuildError::Io { path, source }
}
