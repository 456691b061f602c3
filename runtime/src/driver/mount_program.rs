//! `fuse-overlayfs`: run a fuse-overlayfs-compatible mount program, as containers-storage's
//! `mount_program` option does: `PROGRAM -o lowerdir=A:B,upperdir=U,workdir=W MOUNTPOINT`.
//! The program daemonizes once the mount is up; the guard detaches the mount on drop and the
//! daemon exits when its connection goes away. The upper dir is in the overlay format, so
//! `diff`/`commit` read it as they read the kernel overlay driver's.
//!
//! Without a configured program the installed `fuse-overlayfs` (found on `PATH`) is used; our own
//! `strata-overlay` accepts the same command line.

use std::io::{Read, Seek};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::{detach, Driver, DriverError, Layers, Mounted};

/// The driver's name for `--storage-driver`.
pub const NAME: &str = "fuse-overlayfs";
/// The program run when none is configured.
pub const DEFAULT_PROGRAM: &str = "fuse-overlayfs";

/// A driver that runs a fuse-overlayfs-compatible mount program.
pub struct MountProgramDriver {
    program: PathBuf,
}

impl MountProgramDriver {
    /// Run `program` (a path, or a name looked up on `PATH`).
    pub fn new(program: impl Into<PathBuf>) -> MountProgramDriver {
        MountProgramDriver {
            program: program.into(),
        }
    }

    /// The program this driver runs.
    pub fn program(&self) -> &Path {
        &self.program
    }

    /// The program's own line of `PROGRAM --version`: the first line starting with its file name
    /// (fuse-overlayfs 1.10 prints libfuse's `fusermount3 version: …` before its own
    /// `fuse-overlayfs: version 1.10`), else the first line.
    pub fn version(&self) -> Option<String> {
        let out = Command::new(&self.program)
            .arg("--version")
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .output()
            .ok()?;
        let text = String::from_utf8_lossy(&out.stdout);
        let name = self.program.file_name()?.to_string_lossy().into_owned();
        let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
        let own = lines.clone().find(|l| l.starts_with(&name));
        own.or_else(|| lines.next()).map(str::to_string)
    }
}

struct ProgramMount {
    path: PathBuf,
}

impl Mounted for ProgramMount {
    fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for ProgramMount {
    fn drop(&mut self) {
        let _ = detach(NAME, &self.path);
    }
}

/// The `-o` option string. `:` separates lower dirs and `,` options, and the program has no way
/// to escape either, so a path holding one is refused rather than misread.
fn options(layers: &Layers) -> std::io::Result<String> {
    let mut s = String::from("lowerdir=");
    let check = |p: &Path| -> std::io::Result<String> {
        let t = p.to_str().ok_or_else(|| invalid(p))?;
        if t.contains([':', ',']) || t.is_empty() {
            return Err(invalid(p));
        }
        Ok(t.to_string())
    };
    let lowers: Vec<String> = layers
        .lowers
        .iter()
        .map(|p| check(p))
        .collect::<Result<_, _>>()?;
    s.push_str(&lowers.join(":"));
    s.push_str(",upperdir=");
    s.push_str(&check(&layers.upper)?);
    s.push_str(",workdir=");
    s.push_str(&check(&layers.work)?);
    Ok(s)
}

fn invalid(p: &Path) -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::InvalidInput,
        format!("path {} cannot be passed to a mount program", p.display()),
    )
}

fn run(program: &Path, layers: &Layers, mountpoint: &Path) -> std::io::Result<()> {
    let opts = options(layers)?;
    // Errors go to a file, not a pipe: the daemon may keep its stderr open after the parent exits.
    let mut err = tempfile::tempfile()?;
    let status = Command::new(program)
        .arg("-o")
        .arg(&opts)
        .arg(mountpoint)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(err.try_clone()?)
        .status()
        .map_err(|e| {
            std::io::Error::new(e.kind(), format!("cannot run {}: {e}", program.display()))
        })?;
    if status.success() && super::is_mountpoint(mountpoint) {
        return Ok(());
    }
    let mut text = String::new();
    err.rewind()?;
    let _ = err.take(4096).read_to_string(&mut text);
    let last = text
        .lines()
        .map(str::trim)
        .rfind(|l| !l.is_empty())
        .unwrap_or("no mount appeared");
    let _ = super::force_unmount(mountpoint);
    Err(std::io::Error::other(format!(
        "{} exited with {status}: {last}",
        program.display()
    )))
}

impl Driver for MountProgramDriver {
    fn name(&self) -> &'static str {
        NAME
    }

    fn mount(&self, layers: &Layers, mountpoint: &Path) -> Result<Box<dyn Mounted>, DriverError> {
        super::complete_lazy(NAME, layers, mountpoint)?;
        run(&self.program, layers, mountpoint).map_err(|source| DriverError::Mount {
            driver: NAME,
            mountpoint: mountpoint.to_path_buf(),
            source,
        })?;
        Ok(Box::new(ProgramMount {
            path: mountpoint.to_path_buf(),
        }))
    }
}
