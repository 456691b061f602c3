//! `fuse`: strata's own union filesystem, served by FUSE threads of the calling process (so the
//! container supervisor, which lives as long as the container, must be the one that mounts).

use std::path::{Path, PathBuf};

use super::{Driver, DriverError, Layers, Mounted};

const NAME: &str = "fuse";

/// Our FUSE union filesystem.
pub struct FuseDriver;

struct FuseMount {
    path: PathBuf,
    /// Unmounts (lazily if busy) and stops the serving threads when dropped.
    _mount: strata_fs::Mount,
}

impl Mounted for FuseMount {
    fn path(&self) -> &Path {
        &self.path
    }
}

fn io_error(e: strata_fs::Error) -> std::io::Error {
    match e {
        strata_fs::Error::Layer { source, .. }
        | strata_fs::Error::Work { source, .. }
        | strata_fs::Error::Mount { source, .. } => source,
        strata_fs::Error::Unmount { source, .. } => source.into(),
        other => std::io::Error::new(std::io::ErrorKind::InvalidInput, other.to_string()),
    }
}

/// `strata_fs::Mount` aborts a connection that does not finish after a lazy unmount (a file
/// still open on it) through `/sys/fs/fuse/connections/<n>/abort`. Without fusectl mounted
/// there, the abort silently fails and the unmount waits forever, so make sure it is mounted.
fn ensure_fusectl() {
    let dir = Path::new("/sys/fs/fuse/connections");
    if dir.exists() && !super::is_mountpoint(dir) {
        let _ = nix::mount::mount(
            Some("fusectl"),
            dir,
            Some("fusectl"),
            nix::mount::MsFlags::empty(),
            None::<&str>,
        );
    }
}

impl Driver for FuseDriver {
    fn name(&self) -> &'static str {
        NAME
    }

    fn mount(&self, layers: &Layers, mountpoint: &Path) -> Result<Box<dyn Mounted>, DriverError> {
        ensure_fusectl();
        let mut opts = strata_fs::MountOptions {
            lowers: layers.lowers.clone(),
            upper: Some(layers.upper.clone()),
            work: Some(layers.work.clone()),
            threads: 0,
            fsname: "strata".to_string(),
            // trusted.* as root; user.* inside a rootless user namespace (where euid is 0 but
            // trusted.* xattrs are refused).
            flavour: Some(crate::rootless::flavour()),
        };
        // Lazily pulled layers get their data from the registry on first open.
        let lower_data = crate::lazy::provider_for(&layers.lowers)
            .map_err(|e| DriverError::Mount {
                driver: NAME,
                mountpoint: mountpoint.to_path_buf(),
                source: std::io::Error::other(e.to_string()),
            })?
            .map(|p| p as std::sync::Arc<dyn strata_fs::LowerData>);
        if lower_data.is_some() {
            // Reads waiting for the network hold a serving thread each.
            opts.threads = crate::lazy::SERVING_THREADS;
        }
        let view = strata_fs::ViewOptions::default();
        let mount =
            strata_fs::mount_with_data(opts, view, mountpoint, lower_data).map_err(|e| {
                DriverError::Mount {
                    driver: NAME,
                    mountpoint: mountpoint.to_path_buf(),
                    source: io_error(e),
                }
            })?;
        Ok(Box::new(FuseMount {
            path: mountpoint.to_path_buf(),
            _mount: mount,
        }))
    }
}
