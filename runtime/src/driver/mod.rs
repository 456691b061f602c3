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
//! implementation every other driver must agree with). All three pass the same conformance suite
//! (`conformance.rs`).

use std::path::{Path, PathBuf};

pub mod fuse;
pub mod overlay;
pub mod vfs;

#[cfg(test)]
mod conformance;

/// Errors of the storage drivers.
#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    #[error("unknown storage driver {0:?} (choose fuse, overlay or vfs)")]
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

/// Look a driver up by name.
pub fn by_name(name: &str) -> Result<Box<dyn Driver>, DriverError> {
    match name {
        "fuse" => Ok(Box::new(fuse::FuseDriver)),
        "overlay" | "overlay2" => Ok(Box::new(overlay::OverlayDriver)),
        "vfs" => Ok(Box::new(vfs::VfsDriver)),
        other => Err(DriverError::Unknown(other.to_string())),
    }
}

/// True if `path` is a mount point (its device differs from its parent's, or it is listed in
/// `/proc/self/mountinfo`).
pub fn is_mountpoint(path: &Path) -> bool {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    let want = path.to_string_lossy();
    info.lines().any(|l| {
        l.split(' ')
            .nth(4)
            .is_some_and(|m| unescape_mountinfo(m) == want)
    })
}

fn unescape_mountinfo(s: &str) -> String {
    // mountinfo escapes space, tab, newline and backslash as \ooo.
    let mut out = String::with_capacity(s.len());
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 4], 8) {
                out.push(v as char);
                i += 4;
                continue;
            }
        }
        out.push(b[i] as char);
        i += 1;
    }
    out
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
    }

    #[test]
    fn mountinfo_escapes() {
        assert_eq!(unescape_mountinfo("/a\\040b"), "/a b");
        assert_eq!(unescape_mountinfo("/plain"), "/plain");
    }
}
