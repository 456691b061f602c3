//! Files written at a path the user named (`save -o`, `login`'s credentials file, later `export -o`,
//! `--iidfile`): validated as Docker validates them, then written through a temp file and renamed.
//!
//! Docker (`docker/cli` `ValidateOutputPath`) refuses an existing path that is neither a regular
//! file nor a directory: `invalid output path: "/dev/null" must be a directory or a regular file:
//! got a device`. Renaming a temp file over such a path would replace the host's `/dev/null` with
//! a regular file, which is what this module exists to prevent. We refuse FIFOs and sockets too
//! (Docker would replace them), and a directory (the rename could not succeed anyway). A symlink is
//! followed: the file it points to is replaced, the link stays.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// Why a user-named output path cannot be written.
#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    #[error("invalid output path: directory {0:?} does not exist")]
    NoDirectory(PathBuf),
    #[error("invalid output path: {path:?} must be a directory or a regular file: got {kind}")]
    NotRegular { path: PathBuf, kind: &'static str },
    #[error("invalid output path: {0:?} is a directory")]
    IsDirectory(PathBuf),
    #[error("{}: {source}", .path.display())]
    Io { path: PathBuf, source: io::Error },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> OutputError + '_ {
    move |source| OutputError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Check `path` as Docker does and return the file that will really be replaced: `path` itself, or
/// the end of its symlink chain.
pub fn validate(path: &Path) -> Result<PathBuf, OutputError> {
    let target = resolve_links(path)?;
    let dir = parent_of(&target);
    if !dir.is_dir() {
        return Err(OutputError::NoDirectory(dir.to_path_buf()));
    }
    match std::fs::symlink_metadata(&target) {
        Ok(md) => {
            let ft = md.file_type();
            let kind = if ft.is_file() {
                return Ok(target);
            } else if ft.is_dir() {
                return Err(OutputError::IsDirectory(path.to_path_buf()));
            } else if ft.is_block_device() || ft.is_char_device() {
                "a device"
            } else if ft.is_fifo() {
                "a named pipe"
            } else if ft.is_socket() {
                "a socket"
            } else {
                "an irregular file"
            };
            Err(OutputError::NotRegular {
                path: path.to_path_buf(),
                kind,
            })
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(target),
        Err(e) => Err(io_err(path)(e)),
    }
}

fn parent_of(p: &Path) -> &Path {
    p.parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

/// Follow `path` while it is a symlink (a dangling link names the file to create). Bounded like
/// the kernel's own limit, so a loop is an error rather than a hang.
fn resolve_links(path: &Path) -> Result<PathBuf, OutputError> {
    let mut cur = path.to_path_buf();
    for _ in 0..40 {
        match std::fs::symlink_metadata(&cur) {
            Ok(md) if md.file_type().is_symlink() => {
                let next = std::fs::read_link(&cur).map_err(io_err(path))?;
                cur = if next.is_absolute() {
                    next
                } else {
                    parent_of(&cur).join(next)
                };
            }
            _ => return Ok(cur),
        }
    }
    Err(io_err(path)(io::Error::from_raw_os_error(libc::ELOOP)))
}

/// An output file being written: a temp file beside the target, renamed over it by
/// [`OutputFile::commit`]; dropped without commit, the temp file is removed and the target is
/// untouched.
#[derive(Debug)]
pub struct OutputFile {
    file: File,
    tmp: PathBuf,
    target: PathBuf,
}

impl OutputFile {
    /// Validate `path` and open the temp file with `mode` (subject to the umask).
    pub fn create(path: &Path, mode: u32) -> Result<OutputFile, OutputError> {
        let target = validate(path)?;
        let name = target
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "out".into());
        let tmp = parent_of(&target).join(format!(".{name}.strata-tmp{}", std::process::id()));
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)
            .map_err(io_err(&tmp))?;
        Ok(OutputFile { file, tmp, target })
    }

    /// The file to write into.
    pub fn file(&mut self) -> &mut File {
        &mut self.file
    }

    /// Flush to disk and rename over the target.
    pub fn commit(mut self) -> Result<(), OutputError> {
        self.file.sync_all().map_err(io_err(&self.tmp))?;
        std::fs::rename(&self.tmp, &self.target).map_err(io_err(&self.target))?;
        self.tmp = PathBuf::new();
        Ok(())
    }
}

impl Drop for OutputFile {
    fn drop(&mut self) {
        if !self.tmp.as_os_str().is_empty() {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn devices_fifos_sockets_and_dirs_are_refused() {
        let e = validate(Path::new("/dev/null")).unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid output path: \"/dev/null\" must be a directory or a regular file: got a device"
        );
        let d = tempfile::tempdir().unwrap();
        let fifo = d.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        assert!(validate(&fifo)
            .unwrap_err()
            .to_string()
            .ends_with("got a named pipe"));
        let sock = d.path().join("sock");
        let _l = std::os::unix::net::UnixListener::bind(&sock).unwrap();
        assert!(validate(&sock)
            .unwrap_err()
            .to_string()
            .ends_with("got a socket"));
        assert!(matches!(
            validate(d.path()).unwrap_err(),
            OutputError::IsDirectory(_)
        ));
        let missing = d.path().join("no/such/file");
        assert!(validate(&missing)
            .unwrap_err()
            .to_string()
            .contains("does not exist"));
        // Refused before anything was created.
        assert!(std::fs::symlink_metadata(&fifo)
            .unwrap()
            .file_type()
            .is_fifo());
    }

    #[test]
    fn a_symlink_is_followed_not_replaced_and_drop_leaves_nothing() {
        let d = tempfile::tempdir().unwrap();
        let real = d.path().join("real");
        std::fs::write(&real, b"old").unwrap();
        let link = d.path().join("link");
        std::os::unix::fs::symlink("real", &link).unwrap();
        let mut out = OutputFile::create(&link, 0o644).unwrap();
        out.file().write_all(b"new").unwrap();
        out.commit().unwrap();
        assert!(std::fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink());
        assert_eq!(std::fs::read(&real).unwrap(), b"new");

        let mut out = OutputFile::create(&real, 0o644).unwrap();
        out.file().write_all(b"half").unwrap();
        drop(out);
        assert_eq!(std::fs::read(&real).unwrap(), b"new");
        let names: Vec<_> = std::fs::read_dir(d.path()).unwrap().collect();
        assert_eq!(names.len(), 2, "temp file left behind: {names:?}");

        // A symlink pointing at a device is refused, and the device is untouched.
        let dev = d.path().join("devlink");
        std::os::unix::fs::symlink("/dev/null", &dev).unwrap();
        assert!(OutputFile::create(&dev, 0o644)
            .unwrap_err()
            .to_string()
            .ends_with("got a device"));
        assert!(std::fs::metadata("/dev/null")
            .unwrap()
            .file_type()
            .is_char_device());
    }
}
