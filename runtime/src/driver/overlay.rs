//! `overlay`: kernel overlayfs.
//!
//! Mounted with the new mount API (`fsopen`/`fsconfig`/`fsmount`/`move_mount`) and one
//! `lowerdir+` parameter per layer, so a deep stack is not limited by the one-page size of the
//! classic `mount(2)` option string (128 long layer paths do not fit in 4096 bytes).

use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use super::{detach, Driver, DriverError, Layers, Mounted};

const NAME: &str = "overlay";

// From <linux/mount.h>; stable kernel ABI.
const FSCONFIG_SET_STRING: libc::c_uint = 1;
const FSCONFIG_CMD_CREATE: libc::c_uint = 6;
const FSOPEN_CLOEXEC: libc::c_uint = 1;
const FSMOUNT_CLOEXEC: libc::c_uint = 1;
const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 4;

/// Kernel overlayfs driver.
pub struct OverlayDriver;

struct OverlayMount {
    path: PathBuf,
}

impl Mounted for OverlayMount {
    fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for OverlayMount {
    fn drop(&mut self) {
        let _ = detach(NAME, &self.path);
    }
}

fn cstr(s: &[u8]) -> std::io::Result<CString> {
    CString::new(s).map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))
}

fn check(ret: libc::c_long) -> std::io::Result<libc::c_long> {
    if ret < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

fn set_string(fs: &OwnedFd, key: &str, value: &Path) -> std::io::Result<()> {
    let k = cstr(key.as_bytes())?;
    let v = cstr(value.as_os_str().as_bytes())?;
    // SAFETY: fsconfig reads two NUL-terminated strings that outlive the call; fs is a valid fd.
    check(unsafe {
        libc::syscall(
            libc::SYS_fsconfig,
            fs.as_raw_fd(),
            FSCONFIG_SET_STRING,
            k.as_ptr(),
            v.as_ptr(),
            0,
        )
    })?;
    Ok(())
}

/// FSCONFIG_SET_FLAG (linux/mount.h): a flag option without a value.
const FSCONFIG_SET_FLAG: libc::c_uint = 0;

fn set_flag(fs: &OwnedFd, key: &str) -> std::io::Result<()> {
    let k = cstr(key.as_bytes())?;
    // SAFETY: fsconfig with FSCONFIG_SET_FLAG takes a NUL-terminated key and no value.
    check(unsafe {
        libc::syscall(
            libc::SYS_fsconfig,
            fs.as_raw_fd(),
            FSCONFIG_SET_FLAG,
            k.as_ptr(),
            std::ptr::null::<libc::c_void>(),
            0,
        )
    })?;
    Ok(())
}

fn mount_overlay(layers: &Layers, mountpoint: &Path) -> std::io::Result<()> {
    let fstype = cstr(b"overlay")?;
    // SAFETY: fsopen takes a NUL-terminated string; the returned fd is owned below.
    let fd = check(unsafe { libc::syscall(libc::SYS_fsopen, fstype.as_ptr(), FSOPEN_CLOEXEC) })?;
    // SAFETY: fd was just returned by fsopen and is owned by nobody else.
    let fs = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    for lower in &layers.lowers {
        set_string(&fs, "lowerdir+", lower)?;
    }
    set_string(&fs, "upperdir", &layers.upper)?;
    set_string(&fs, "workdir", &layers.work)?;
    if crate::rootless::in_user_namespace() {
        // Rootless: overlayfs in a user namespace reads and writes `user.overlay.*` (Linux
        // 5.11+), the flavour a rootless store's layers are extracted in.
        set_flag(&fs, "userxattr")?;
    }
    // SAFETY: FSCONFIG_CMD_CREATE takes no pointers.
    check(unsafe {
        libc::syscall(
            libc::SYS_fsconfig,
            fs.as_raw_fd(),
            FSCONFIG_CMD_CREATE,
            std::ptr::null::<libc::c_char>(),
            std::ptr::null::<libc::c_void>(),
            0,
        )
    })?;
    // SAFETY: fsmount on a configured fs context fd; returns a new fd that we own.
    let mfd =
        check(unsafe { libc::syscall(libc::SYS_fsmount, fs.as_raw_fd(), FSMOUNT_CLOEXEC, 0) })?;
    // SAFETY: mfd was just returned by fsmount.
    let mnt = unsafe { OwnedFd::from_raw_fd(mfd as i32) };
    let empty = cstr(b"")?;
    let target = cstr(mountpoint.as_os_str().as_bytes())?;
    // SAFETY: move_mount with MOVE_MOUNT_F_EMPTY_PATH attaches the detached mount `mnt` at target.
    check(unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            mnt.as_raw_fd(),
            empty.as_ptr(),
            libc::AT_FDCWD,
            target.as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH,
        )
    })?;
    Ok(())
}

impl Driver for OverlayDriver {
    fn name(&self) -> &'static str {
        NAME
    }

    fn mount(&self, layers: &Layers, mountpoint: &Path) -> Result<Box<dyn Mounted>, DriverError> {
        super::complete_lazy(NAME, layers, mountpoint)?;
        mount_overlay(layers, mountpoint).map_err(|source| DriverError::Mount {
            driver: NAME,
            mountpoint: mountpoint.to_path_buf(),
            source,
        })?;
        Ok(Box::new(OverlayMount {
            path: mountpoint.to_path_buf(),
        }))
    }
}
