//! `changes` owns what a container changed: `diff` of its upper dir against its image's layers
//! (Docker's `A`/`C`/`D` rules), the layer tar of those changes (`write_layer_tar`), and the
//! config of a committed image (`--change` instructions, history entry).
//!
//! Vocabulary: the *upper* dir is the container's writable layer in kernel-overlay format; the
//! *lowers* are the image's extracted layer dirs, top first (overlayfs order). A *change* is one
//! path with a kind: added, changed (modified) or deleted. Paths are absolute container paths.
//!
//! Every walk is fd-relative with `O_NOFOLLOW` (through [`strata_fs::at`]), and the overlay
//! format is read and written through [`strata_fs::format`]: the upper dir is written by the
//! container and its symlinks are hostile input.

mod commit;
mod config;
mod container;
mod diff;
mod instructions;
mod layer;
mod naive;
mod pause;

use std::path::{Path, PathBuf};

pub use commit::{commit, CommitRequest};
pub use config::{commit_config, CommitMeta};
pub use container::{commit_container, container_diff, CommitOptions};
pub use diff::{diff, diff_filtered};
pub use instructions::apply_changes;
pub use layer::{write_changes_tar, write_layer_tar, LayerDigests};
pub use naive::diff_full_tree;
pub use pause::Paused;

/// Kind of a change, as `docker diff` prints it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChangeKind {
    /// `A`: not in the image.
    Add,
    /// `C`: in the image and changed (or a directory whose contents changed).
    Modify,
    /// `D`: deleted (a whiteout, or an opaque directory that hides the image's contents).
    Delete,
}

impl ChangeKind {
    pub fn letter(self) -> char {
        match self {
            ChangeKind::Add => 'A',
            ChangeKind::Modify => 'C',
            ChangeKind::Delete => 'D',
        }
    }
}

/// One line of `docker diff`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Change {
    pub kind: ChangeKind,
    /// Absolute path inside the container.
    pub path: PathBuf,
}

impl Change {
    pub fn new(kind: ChangeKind, path: PathBuf) -> Self {
        Change { kind, path }
    }
}

impl std::fmt::Display for Change {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.kind.letter(), self.path.display())
    }
}

/// Paths a diff or a commit leaves out.
#[derive(Debug, Clone)]
pub struct Filter {
    /// Never reported, with everything under them (Docker-managed files, volumes).
    excluded: Vec<PathBuf>,
    /// Reported only when they are more than an empty mountpoint the runtime created.
    mountpoints: Vec<PathBuf>,
}

impl Filter {
    /// Docker's rule: `/etc/hosts`, `/etc/hostname`, `/etc/resolv.conf` are mounts Docker
    /// manages, and the mountpoints its init layer creates never show up.
    pub fn docker() -> Self {
        Filter {
            excluded: ["/etc/hosts", "/etc/hostname", "/etc/resolv.conf"]
                .iter()
                .map(PathBuf::from)
                .collect(),
            mountpoints: [
                "/proc",
                "/sys",
                "/dev",
                "/dev/pts",
                "/dev/shm",
                "/dev/mqueue",
                "/dev/console",
                "/etc/mtab",
                "/.dockerenv",
                "/run/.containerenv",
            ]
            .iter()
            .map(PathBuf::from)
            .collect(),
        }
    }

    /// Also leave out `path` (absolute) and everything under it, e.g. a volume.
    pub fn exclude(mut self, path: impl Into<PathBuf>) -> Self {
        self.excluded.push(path.into());
        self
    }

    pub fn is_excluded(&self, path: &Path) -> bool {
        self.excluded.iter().any(|e| path.starts_with(e))
    }

    pub fn is_mountpoint(&self, path: &Path) -> bool {
        self.mountpoints.iter().any(|m| m == path)
    }
}

impl Default for Filter {
    fn default() -> Self {
        Filter::docker()
    }
}

/// Errors of diff and commit.
#[derive(Debug, thiserror::Error)]
pub enum ChangesError {
    #[error("cannot open layer directory {path}: {source}")]
    Open {
        path: PathBuf,
        source: nix::errno::Errno,
    },
    #[error("cannot read {path} in the container's changes: {source}")]
    Walk {
        path: PathBuf,
        source: nix::errno::Errno,
    },
    #[error("writing the layer of {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error("invalid parent image config: {source}")]
    ParentConfig { source: serde_json::Error },
    #[error("{instruction} is not a valid change command")]
    InvalidChange { instruction: String },
    #[error("{instruction} requires at least one argument")]
    MissingArgument { instruction: String },
    #[error("{instruction} must have two arguments")]
    TwoArguments { instruction: String },
    #[error("{instruction} names can not be blank")]
    BlankName { instruction: String },
    #[error("cannot pause process {pid}: {source}")]
    Pause { pid: i32, source: nix::errno::Errno },
    #[error("invalid containerPort: {port}")]
    InvalidPort { port: String },
}

#[cfg(test)]
mod tests;
