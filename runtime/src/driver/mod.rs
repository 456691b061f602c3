//! Storage drivers: turn an image's layer dirs plus a container's upper/work dirs into a mounted
//! root filesystem.
//!
//! Vocabulary:
//! - *lowers*: read-only layer dirs in overlay format, **top first** (overlayfs `lowerdir` order).
//! - *upper*: the container's writable layer; *work*: scratch dir on the same filesystem.
//! - *mountpoint*: where the merged view appears (`<root>/containers/<id>/rootfs`).
//! - a [`Mounted`] guard: the merged view stays mounted while it lives; dropping it unmounts
//!   (lazily, so open files elsewhere never make a drop fail or hang).
//!
//! Drivers: [`fuse`] (ours, in-process FUSE threads; the default), [`overlay`] (kernel
//! overlayfs), [`vfs`] (a full copy of the layers into the upper dir, bind-mounted; the reference
//! implementation every other driver must agree with), [`mount_program`] (`fuse-overlayfs`: runs
//! a fuse-overlayfs-compatible mount program). All pass the same conformance suite
//! (`conformance.rs`).
//!
//! A driver is named by a *spec*: its name, or for `fuse-overlayfs` with another mount program
//! `fuse-overlayfs:PROGRAM` (see [`with_mount_program`]); containers record the spec.

use std::path::{Path, PathBuf};

pub mod fuse;
pub mod mount_program;
pub mod overlay;
pub mod vfs;

#[cfg(test)]
mod conformance;

/// Errors of the storage drivers.
#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    #[error("unknown storage driver {0:?} (choose fuse, overlay, vfs or fuse-overlayfs)")]
    Unknown(String),
    #[error("storage driver {driver}: cannot mount {mountpoint}: {source}")]
    Mount {
        driver: &'static str,
        mountpoint: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("storage driver {driver}: cannot unmount {mountpoint}: {source}")]
    Unmount {
        driver: &'static str,
        mountpoint: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("vfs driver: cannot copy {path}: {source}")]
    Copy {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The layers of one container rootfs.
#[derive(Debug, Clone)]
pub struct Layers {
    /// Read-only layer dirs, top first.
    pub lowers: Vec<PathBuf>,
    /// The container's writable layer.
    pub upper: PathBuf,
    /// Scratch dir on the same filesystem as `upper`.
    pub work: PathBuf,
}

/// A mounted rootfs. Dropping the guard unmounts it.
pub trait Mounted: Send {
    /// Where the merged view is mounted.
    fn path(&self) -> &Path;
}

/// A storage driver.
pub trait Driver: Send + Sync {
    /// The name given to `--storage-driver`.
    fn name(&self) -> &'static str;
    /// Mount `layers` at `mountpoint` (an existing empty directory).
    fn mount(&self, layers: &Layers, mountpoint: &Path) -> Result<Box<dyn Mounted>, DriverError>;
}

/// The driver used when none is configured.
pub const DEFAULT_DRIVER: &str = "fuse";

/// The spec of the `fuse-overlayfs` driver running `program` instead of the installed binary.
pub fn with_mount_program(program: &Path) -> String {
    format!("{}:{}", mount_program::NAME, program.display())
}

/// The mount-program driver a spec names, if it names one.
pub fn mount_program_of(spec: &str) -> Option<mount_program::MountProgramDriver> {
    if spec == mount_program::NAME {
        return Some(mount_program::MountProgramDriver::new(
            mount_program::DEFAULT_PROGRAM,
        ));
    }
    let program = spec.strip_prefix(mount_program::NAME)?.strip_prefix(':')?;
    (!program.is_empty()).then(|| mount_program::MountProgramDriver::new(program))
}

/// The driver name a spec stands for (`fuse-overlayfs:PROGRAM` → `fuse-overlayfs`), as
/// `inspect` shows it.
pub fn name_of(spec: &str) -> &str {
    if mount_program_of(spec).is_some() {
        mount_program::NAME
    } else {
        spec
    }
}

/// Look a driver up by its spec (its name, or `fuse-overlayfs:PROGRAM`).
pub fn by_name(name: &str) -> Result<Box<dyn Driver>, DriverError> {
    if let Some(d) = mount_program_of(name) {
        return Ok(Box::new(d));
    }
    match name {
        "fuse" => Ok(Box::new(fuse::FuseDriver)),
        "overlay" | "overlay2" => Ok(Box::new(overlay::OverlayDriver)),
        "vfs" => Ok(Box::new(vfs::VfsDriver)),
        other => Err(DriverError::Unknown(other.to_string())),
    }
}

/// Drivers that serve layer dirs as they are (kernel overlay, vfs, fuse-overlayfs) would show
/// a lazily pulled layer's not-yet-fetched files as zeros: its data is fetched first, and the
/// layer becomes an ordinary one (`crate::lazy`). Only our `fuse` driver serves it as it comes.
pub(crate) fn complete_lazy(
    driver: &'static str,
    layers: &Layers,
    mountpoint: &Path,
) -> Result<(), DriverError> {
    crate::lazy::complete_lowers(&layers.lowers).map_err(|e| DriverError::Mount {
        driver,
        mountpoint: mountpoint.to_path_buf(),
        source: std::io::Error::other(e.to_string()),
    })
}

/// True if something is mounted exactly on `path` (listed in `/proc/self/mountinfo`).
pub fn is_mountpoint(path: &Path) -> bool {
    strata_fs::mountinfo::mount_at(path).is_some()
}

/// Detach whatever is mounted at `path` (every stacked mount), ignoring "not mounted". Used to
/// clean up after a supervisor that died without unmounting.
pub fn force_unmount(path: &Path) -> Result<(), DriverError> {
    for _ in 0..16 {
        if !is_mountpoint(path) {
            return Ok(());
        }
        // MNT_DETACH: a dead FUSE server or open files must never make cleanup fail or hang.
        if let Err(e) = nix::mount::umount2(path, nix::mount::MntFlags::MNT_DETACH) {
            if e == nix::errno::Errno::EINVAL || e == nix::errno::Errno::ENOENT {
                return Ok(());
            }
            return Err(DriverError::Unmount {
                driver: "any",
                mountpoint: path.to_path_buf(),
                source: e.into(),
            });
        }
    }
    Ok(())
}

/// Unmount helper shared by the drivers that mount with the kernel.
pub(crate) fn detach(driver: &'static str, path: &Path) -> Result<(), DriverError> {
    nix::mount::umount2(path, nix::mount::MntFlags::MNT_DETACH).map_err(|e| DriverError::Unmount {
        driver,
        mountpoint: path.to_path_buf(),
        source: e.into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_driver_is_an_error() {
        assert!(matches!(by_name("zfs"), Err(DriverError::Unknown(_))));
        assert_eq!(by_name("vfs").map(|d| d.name()).ok(), Some("vfs"));
        assert!(matches!(
            by_name("fuse-overlayfs:"),
            Err(DriverError::Unknown(_))
        ));
        let d = mount_program_of(&with_mount_program(Path::new("/opt/x/prog"))).unwrap();
        assert_eq!(d.program(), Path::new("/opt/x/prog"));
        assert_eq!(name_of("fuse-overlayfs:/opt/x/prog"), "fuse-overlayfs");
        assert_eq!(name_of("overlay"), "overlay");
        assert_eq!(
            mount_program_of("fuse-overlayfs").unwrap().program(),
            Path::new("fuse-overlayfs")
        );
    }
}
