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
//! `fuse-overlayfs:PROGRAM`; [`DriverKind`] is the typed form, and containers record the spec.

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
pub const DEFAULT_DRIVER: DriverKind = DriverKind::Fuse;

/// Which storage driver a container's rootfs is mounted with. Recorded in each container's
/// `config.json` as its *spec* string (`fuse`, `overlay`, `vfs`, `fuse-overlayfs` or
/// `fuse-overlayfs:PROGRAM`), which [`DriverKind::parse`] reads and `Display` writes back.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub enum DriverKind {
    /// Ours: in-process FUSE threads.
    #[default]
    Fuse,
    /// Kernel overlayfs (`overlay2` is accepted as a name for it).
    Overlay,
    /// A full copy of the layers into the upper dir.
    Vfs,
    /// A fuse-overlayfs-compatible mount program: the installed `fuse-overlayfs` (`None`) or
    /// the given program.
    MountProgram(Option<PathBuf>),
}

impl DriverKind {
    /// Read a spec (a `--storage-driver` name, or `fuse-overlayfs:PROGRAM`).
    pub fn parse(spec: &str) -> Result<DriverKind, DriverError> {
        if let Some(rest) = spec.strip_prefix(mount_program::NAME) {
            return match rest.strip_prefix(':') {
                None if rest.is_empty() => Ok(DriverKind::MountProgram(None)),
                Some(program) if !program.is_empty() => {
                    Ok(DriverKind::MountProgram(Some(PathBuf::from(program))))
                }
                _ => Err(DriverError::Unknown(spec.to_string())),
            };
        }
        match spec {
            "fuse" => Ok(DriverKind::Fuse),
            "overlay" | "overlay2" => Ok(DriverKind::Overlay),
            "vfs" => Ok(DriverKind::Vfs),
            other => Err(DriverError::Unknown(other.to_string())),
        }
    }

    /// The driver's name as `--storage-driver` and `inspect` show it (no mount program).
    pub fn name(&self) -> &'static str {
        match self {
            DriverKind::Fuse => "fuse",
            DriverKind::Overlay => "overlay",
            DriverKind::Vfs => "vfs",
            DriverKind::MountProgram(_) => mount_program::NAME,
        }
    }

    /// The mount-program driver, if this is one.
    pub fn mount_program(&self) -> Option<mount_program::MountProgramDriver> {
        match self {
            DriverKind::MountProgram(p) => Some(mount_program::MountProgramDriver::new(
                p.as_deref()
                    .unwrap_or(Path::new(mount_program::DEFAULT_PROGRAM)),
            )),
            _ => None,
        }
    }

    /// True when the upper dir holds the whole tree (a full copy of the layers) rather than
    /// only the changes over them: a diff must then compare it with the layers file by file.
    pub fn upper_is_full_copy(&self) -> bool {
        matches!(self, DriverKind::Vfs)
    }

    /// The driver itself.
    pub fn driver(&self) -> Box<dyn Driver> {
        match self {
            DriverKind::Fuse => Box::new(fuse::FuseDriver),
            DriverKind::Overlay => Box::new(overlay::OverlayDriver),
            DriverKind::Vfs => Box::new(vfs::VfsDriver),
            DriverKind::MountProgram(p) => Box::new(mount_program::MountProgramDriver::new(
                p.as_deref()
                    .unwrap_or(Path::new(mount_program::DEFAULT_PROGRAM)),
            )),
        }
    }
}

impl std::fmt::Display for DriverKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DriverKind::MountProgram(Some(p)) => {
                write!(f, "{}:{}", mount_program::NAME, p.display())
            }
            other => f.write_str(other.name()),
        }
    }
}

impl std::str::FromStr for DriverKind {
    type Err = DriverError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        DriverKind::parse(s)
    }
}

impl serde::Serialize for DriverKind {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for DriverKind {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        DriverKind::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// Look a driver up by its spec (its name, or `fuse-overlayfs:PROGRAM`).
pub fn by_name(spec: &str) -> Result<Box<dyn Driver>, DriverError> {
    Ok(DriverKind::parse(spec)?.driver())
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
            DriverKind::parse("fuse-overlayfs:"),
            Err(DriverError::Unknown(_))
        ));
        assert!(matches!(
            DriverKind::parse("fuse-overlayfsx"),
            Err(DriverError::Unknown(_))
        ));
    }

    #[test]
    fn specs_round_trip() {
        for spec in [
            "fuse",
            "overlay",
            "vfs",
            "fuse-overlayfs",
            "fuse-overlayfs:/opt/x/prog",
        ] {
            let kind = DriverKind::parse(spec).unwrap();
            assert_eq!(kind.to_string(), spec);
            let json = serde_json::to_string(&kind).unwrap();
            assert_eq!(json, format!("\"{spec}\""));
            assert_eq!(serde_json::from_str::<DriverKind>(&json).unwrap(), kind);
        }
        let d = DriverKind::parse("fuse-overlayfs:/opt/x/prog").unwrap();
        assert_eq!(d.name(), "fuse-overlayfs");
        assert_eq!(
            d.mount_program().unwrap().program(),
            Path::new("/opt/x/prog")
        );
        assert_eq!(
            DriverKind::parse("fuse-overlayfs")
                .unwrap()
                .mount_program()
                .unwrap()
                .program(),
            Path::new("fuse-overlayfs")
        );
        assert_eq!(DriverKind::parse("overlay2").unwrap(), DriverKind::Overlay);
        assert!(DriverKind::Vfs.upper_is_full_copy());
        assert!(!DriverKind::Fuse.upper_is_full_copy());
    }
}
