//! `fuse`: strata's own union filesystem, served by FUSE threads of the calling process (so the
//! container supervisor, which lives as long as the container, must be the one that mounts).

use std::path::Path;

use super::{Driver, DriverError, Layers, Mounted};

const NAME: &str = "fuse";

/// Our FUSE union filesystem.
#[derive(Default)]
pub struct FuseDriver;

impl Driver for FuseDriver {
    fn name(&self) -> &'static str {
        NAME
    }

    fn mount(&self, _layers: &Layers, mountpoint: &Path) -> Result<Box<dyn Mounted>, DriverError> {
        // Wired to `strata_fs::mount` once the union filesystem lands (branch `fs`).
        Err(DriverError::Mount {
            driver: NAME,
            mountpoint: mountpoint.to_path_buf(),
            source: std::io::Error::from_raw_os_error(libc::ENOSYS),
        })
    }
}
