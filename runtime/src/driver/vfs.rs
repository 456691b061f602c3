//! `vfs`: the reference driver. The first mount applies every layer, bottom first, into the
//! upper dir (whiteouts and opaque dirs honoured, so the result is exactly the merged view), then
//! bind-mounts the upper dir at the mountpoint. Later mounts reuse the copy (a stamp file in the
//! work dir records that it is complete). Slow and space-hungry on purpose: it has no union
//! logic to get wrong, which makes it the yardstick for the other drivers.
//!
//! Because the upper dir holds the full tree, a vfs container's upper dir is not a diff against
//! its image; `diff`/`commit` must compare trees for this driver.

use std::collections::HashMap;
use std::fs;
use std::io;
use std::os::unix::fs::{chown, lchown, FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::mount::{mount, MsFlags};
use nix::sys::stat::{mknod, Mode, SFlag};

use super::{detach, Driver, DriverError, Layers, Mounted};

const NAME: &str = "vfs";
const STAMP: &str = "vfs-complete";

/// Full-copy driver.
pub struct VfsDriver;

struct VfsMount {
    path: PathBuf,
}

impl Mounted for VfsMount {
    fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for VfsMount {
    fn drop(&mut self) {
        let _ = detach(NAME, &self.path);
    }
}

impl Driver for VfsDriver {
    fn name(&self) -> &'static str {
        NAME
    }

    fn mount(&self, layers: &Layers, mountpoint: &Path) -> Result<Box<dyn Mounted>, DriverError> {
        let stamp = layers.work.join(STAMP);
        if !stamp.exists() {
            for lower in layers.lowers.iter().rev() {
                apply_layer(lower, &layers.upper)?;
            }
            fs::write(&stamp, b"").map_err(|source| DriverError::Copy {
                path: stamp.clone(),
                source,
            })?;
        }
        mount(
            Some(&layers.upper),
            mountpoint,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(|e| DriverError::Mount {
            driver: NAME,
            mountpoint: mountpoint.to_path_buf(),
            source: e.into(),
        })?;
        Ok(Box::new(VfsMount {
            path: mountpoint.to_path_buf(),
        }))
    }
}

fn err(path: &Path) -> impl FnOnce(io::Error) -> DriverError + '_ {
    move |source| DriverError::Copy {
        path: path.to_path_buf(),
        source,
    }
}

/// Apply one overlay-format layer dir on top of `dest`.
pub fn apply_layer(layer: &Path, dest: &Path) -> Result<(), DriverError> {
    let mut links = HashMap::new();
    apply_dir(layer, dest, &mut links)
}

fn is_opaque(dir: &Path) -> bool {
    for key in ["trusted.overlay.opaque", "user.overlay.opaque"] {
        if let Some(v) = getxattr(dir, key) {
            if v == b"y" {
                return true;
            }
        }
    }
    dir.join(".wh..wh..opq").exists()
}

fn is_whiteout(path: &Path, md: &fs::Metadata) -> bool {
    if md.file_type().is_char_device() && md.rdev() == 0 {
        return true;
    }
    md.is_file()
        && md.len() == 0
        && ["trusted.overlay.whiteout", "user.overlay.whiteout"]
            .iter()
            .any(|k| getxattr(path, k).is_some())
}

fn remove_any(path: &Path) -> io::Result<()> {
    match fs::symlink_metadata(path) {
        Ok(md) if md.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

fn clear_dir(dir: &Path) -> io::Result<()> {
    for entry in fs::read_dir(dir)? {
        remove_any(&entry?.path())?;
    }
    Ok(())
}

fn apply_dir(
    src: &Path,
    dest: &Path,
    links: &mut HashMap<(u64, u64), PathBuf>,
) -> Result<(), DriverError> {
    let mut entries: Vec<_> = fs::read_dir(src)
        .map_err(err(src))?
        .collect::<Result<_, _>>()
        .map_err(err(src))?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let name = entry.file_name();
        let name_s = name.to_string_lossy();
        let from = entry.path();
        if name_s == ".wh..wh..opq" {
            continue;
        }
        if let Some(hidden) = name_s.strip_prefix(".wh.") {
            remove_any(&dest.join(hidden)).map_err(err(&from))?;
            continue;
        }
        let to = dest.join(&name);
        let md = fs::symlink_metadata(&from).map_err(err(&from))?;
        if is_whiteout(&from, &md) {
            remove_any(&to).map_err(err(&to))?;
            continue;
        }
        if md.is_dir() {
            match fs::symlink_metadata(&to) {
                Ok(existing) if existing.is_dir() => {
                    if is_opaque(&from) {
                        clear_dir(&to).map_err(err(&to))?;
                    }
                }
                Ok(_) => {
                    remove_any(&to).map_err(err(&to))?;
                    fs::create_dir(&to).map_err(err(&to))?;
                }
                Err(_) => fs::create_dir(&to).map_err(err(&to))?,
            }
            apply_dir(&from, &to, links)?;
            copy_meta(&from, &to, &md).map_err(err(&to))?;
            continue;
        }
        remove_any(&to).map_err(err(&to))?;
        if md.nlink() > 1 {
            if let Some(first) = links.get(&(md.dev(), md.ino())) {
                fs::hard_link(first, &to).map_err(err(&to))?;
                continue;
            }
            links.insert((md.dev(), md.ino()), to.clone());
        }
        let ft = md.file_type();
        if ft.is_symlink() {
            let target = fs::read_link(&from).map_err(err(&from))?;
            std::os::unix::fs::symlink(target, &to).map_err(err(&to))?;
        } else if ft.is_file() {
            fs::copy(&from, &to).map_err(err(&to))?;
        } else {
            let kind = if ft.is_char_device() {
                SFlag::S_IFCHR
            } else if ft.is_block_device() {
                SFlag::S_IFBLK
            } else if ft.is_fifo() {
                SFlag::S_IFIFO
            } else {
                SFlag::S_IFSOCK
            };
            mknod(
                &to,
                kind,
                Mode::from_bits_truncate(md.mode() & 0o7777),
                md.rdev(),
            )
            .map_err(|e| DriverError::Copy {
                path: to.clone(),
                source: e.into(),
            })?;
        }
        copy_meta(&from, &to, &md).map_err(err(&to))?;
    }
    Ok(())
}

fn copy_meta(from: &Path, to: &Path, md: &fs::Metadata) -> io::Result<()> {
    if md.file_type().is_symlink() {
        lchown(to, Some(md.uid()), Some(md.gid()))?;
    } else {
        chown(to, Some(md.uid()), Some(md.gid()))?;
        fs::set_permissions(to, fs::Permissions::from_mode(md.mode() & 0o7777))?;
    }
    copy_xattrs(from, to);
    let times = [
        libc::timespec {
            tv_sec: md.atime(),
            tv_nsec: md.atime_nsec(),
        },
        libc::timespec {
            tv_sec: md.mtime(),
            tv_nsec: md.mtime_nsec(),
        },
    ];
    let c = std::ffi::CString::new(std::os::unix::ffi::OsStrExt::as_bytes(to.as_os_str()))
        .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: c is NUL-terminated and times points to two valid timespecs for the call.
    let r = unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            c.as_ptr(),
            times.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn c_path(p: &Path) -> Option<std::ffi::CString> {
    std::ffi::CString::new(std::os::unix::ffi::OsStrExt::as_bytes(p.as_os_str())).ok()
}

fn getxattr(path: &Path, key: &str) -> Option<Vec<u8>> {
    let c = c_path(path)?;
    let k = std::ffi::CString::new(key).ok()?;
    let mut buf = vec![0u8; 256];
    // SAFETY: buffers are valid for their stated lengths for the duration of the call.
    let n = unsafe { libc::lgetxattr(c.as_ptr(), k.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if n < 0 {
        return None;
    }
    buf.truncate(n as usize);
    Some(buf)
}

/// Copy user-visible xattrs (not the overlay markers, which only mean something inside a layer).
fn copy_xattrs(from: &Path, to: &Path) {
    let (Some(cf), Some(ct)) = (c_path(from), c_path(to)) else {
        return;
    };
    let mut names = vec![0u8; 4096];
    // SAFETY: names is valid for its length.
    let n = unsafe { libc::llistxattr(cf.as_ptr(), names.as_mut_ptr().cast(), names.len()) };
    if n <= 0 {
        return;
    }
    names.truncate(n as usize);
    for key in names.split(|b| *b == 0).filter(|k| !k.is_empty()) {
        let Ok(key_s) = std::str::from_utf8(key) else {
            continue;
        };
        if key_s.contains(".overlay.") {
            continue;
        }
        let Some(value) = getxattr(from, key_s) else {
            continue;
        };
        let Ok(k) = std::ffi::CString::new(key) else {
            continue;
        };
        // SAFETY: all pointers are valid for the call; failures are ignored (best effort).
        unsafe {
            libc::lsetxattr(
                ct.as_ptr(),
                k.as_ptr(),
                value.as_ptr().cast(),
                value.len(),
                0,
            );
        }
    }
}
