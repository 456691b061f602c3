//! Fd-relative helpers for walking layer directories: every lookup is `*at()` relative to an
//! open directory with `O_NOFOLLOW`, so a symlink planted by a container can never lead us out
//! of the layer.
//!
//! Overlay formats read here (DESIGN.md, FACTS.md): whiteouts as char device 0/0, a `.wh.<name>`
//! entry, or a file carrying `trusted.overlay.whiteout` / `user.overlay.whiteout`; opaque dirs as
//! `trusted.overlay.opaque=y`, `user.overlay.opaque=y` or a `.wh..wh..opq` entry.

use std::ffi::{CString, OsStr, OsString};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::Path;

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::{FileStat, Mode, SFlag};

/// Name prefix of a whiteout entry in a layer tar (and in `.wh.`-style upper dirs).
pub const WHITEOUT_PREFIX: &str = ".wh.";
/// Name of the opaque-directory marker entry.
pub const OPAQUE_MARKER: &str = ".wh..wh..opq";

/// Xattrs that belong to the overlay format, never to the file's content.
pub fn is_overlay_xattr(name: &[u8]) -> bool {
    name.starts_with(b"trusted.overlay.") || name.starts_with(b"user.overlay.")
}

/// Open a directory given by a host path the caller trusts (a layer root).
pub fn open_root(path: &Path) -> nix::Result<OwnedFd> {
    nix::fcntl::open(
        path,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
}

/// Open the child directory `name` of `dir` without following symlinks.
pub fn open_dir_at(dir: impl AsFd, name: &OsStr) -> nix::Result<OwnedFd> {
    nix::fcntl::openat(
        dir,
        name,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
}

/// Open the regular file `name` of `dir` for reading without following symlinks.
pub fn open_file_at(dir: impl AsFd, name: &OsStr) -> nix::Result<OwnedFd> {
    nix::fcntl::openat(
        dir,
        name,
        OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC | OFlag::O_NOCTTY,
        Mode::empty(),
    )
}

/// `lstat` of `name` inside `dir`.
pub fn lstat_at(dir: impl AsFd, name: &OsStr) -> nix::Result<FileStat> {
    nix::sys::stat::fstatat(dir, name, AtFlags::AT_SYMLINK_NOFOLLOW)
}

/// `fstat` of the directory itself.
pub fn stat_self(dir: impl AsFd) -> nix::Result<FileStat> {
    nix::sys::stat::fstat(dir)
}

/// The entries of `dir` except `.` and `..`, sorted by name (bytes), so walks are deterministic.
pub fn list_sorted(dir: impl AsFd) -> nix::Result<Vec<OsString>> {
    // Open "." again: `Dir` takes ownership of its fd and moves its offset.
    let fd = nix::fcntl::openat(
        dir,
        ".",
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?;
    let mut d = nix::dir::Dir::from_fd(fd)?;
    let mut names = Vec::new();
    for entry in d.iter() {
        let entry = entry?;
        let name = entry.file_name().to_bytes();
        if name == b"." || name == b".." {
            continue;
        }
        names.push(OsString::from_vec(name.to_vec()));
    }
    names.sort();
    Ok(names)
}

pub fn file_type(st: &FileStat) -> SFlag {
    SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits())
}

pub fn is_dir(st: &FileStat) -> bool {
    file_type(st) == SFlag::S_IFDIR
}

/// A character device 0/0: the kernel overlay whiteout.
pub fn is_char_whiteout(st: &FileStat) -> bool {
    file_type(st) == SFlag::S_IFCHR && st.st_rdev == 0
}

/// The path `/proc/self/fd/<dir>/<name>`: the final component is resolved by the `l*xattr`
/// calls without following it, and `<dir>` is already an open directory, so nothing in the
/// layer can redirect the lookup. (Needed because `fgetxattr` does not work on `O_PATH` fds and
/// symlinks cannot be opened otherwise.)
fn proc_path(dir: &impl AsRawFd, name: &OsStr) -> Option<CString> {
    let mut p = format!("/proc/self/fd/{}/", dir.as_raw_fd()).into_bytes();
    p.extend_from_slice(name.as_bytes());
    CString::new(p).ok()
}

/// Value of xattr `key` on `name` in `dir` (not following symlinks); `None` when absent or
/// unsupported.
pub fn get_xattr(dir: &impl AsRawFd, name: &OsStr, key: &str) -> Option<Vec<u8>> {
    let path = proc_path(dir, name)?;
    let key = CString::new(key).ok()?;
    let mut buf = vec![0u8; 256];
    loop {
        // SAFETY: `path` and `key` are NUL-terminated C strings that live across the call; `buf`
        // is a valid writable buffer of `buf.len()` bytes.
        let n = unsafe {
            libc::lgetxattr(
                path.as_ptr(),
                key.as_ptr(),
                buf.as_mut_ptr().cast(),
                buf.len(),
            )
        };
        if n >= 0 {
            buf.truncate(n as usize);
            return Some(buf);
        }
        if Errno::last() == Errno::ERANGE && buf.len() < 1 << 20 {
            let len = buf.len() * 4;
            buf.resize(len, 0);
            continue;
        }
        return None;
    }
}

/// All xattrs of `name` in `dir` (not following symlinks), names sorted.
pub fn list_xattrs(dir: &impl AsRawFd, name: &OsStr) -> nix::Result<Vec<(String, Vec<u8>)>> {
    let Some(path) = proc_path(dir, name) else {
        return Ok(Vec::new());
    };
    let mut buf = vec![0u8; 1024];
    let len = loop {
        // SAFETY: `path` is a NUL-terminated C string; `buf` is writable for `buf.len()` bytes.
        let n = unsafe { libc::llistxattr(path.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
        if n >= 0 {
            break n as usize;
        }
        match Errno::last() {
            Errno::ERANGE if buf.len() < 1 << 20 => {
                let len = buf.len() * 4;
                buf.resize(len, 0);
            }
            Errno::ENOTSUP => return Ok(Vec::new()),
            e => return Err(e),
        }
    };
    let mut out = Vec::new();
    for key in buf[..len].split(|b| *b == 0).filter(|k| !k.is_empty()) {
        let Ok(key) = std::str::from_utf8(key) else {
            continue;
        };
        if let Some(value) = get_xattr(dir, name, key) {
            out.push((key.to_string(), value));
        }
    }
    out.sort();
    Ok(out)
}

fn xattr_is(dir: &impl AsRawFd, name: &OsStr, suffix: &str, want: &[u8]) -> bool {
    ["trusted.overlay.", "user.overlay."].iter().any(|p| {
        get_xattr(dir, name, &format!("{p}{suffix}")).is_some_and(|v| v.as_slice() == want)
    })
}

/// Is `name` (already `lstat`ed as `st`) in `dir` a whiteout in any of the overlay forms that
/// live on the entry itself (char 0/0, or the whiteout xattr on an empty regular file)?
pub fn is_whiteout(dir: &impl AsRawFd, name: &OsStr, st: &FileStat) -> bool {
    if is_char_whiteout(st) {
        return true;
    }
    file_type(st) == SFlag::S_IFREG
        && st.st_size == 0
        && ["trusted.overlay.whiteout", "user.overlay.whiteout"]
            .iter()
            .any(|k| get_xattr(dir, name, k).is_some())
}

/// Is the directory `name` in `dir` opaque (xattr form, or a `.wh..wh..opq` entry inside it)?
pub fn is_opaque_dir(dir: &(impl AsRawFd + AsFd), name: &OsStr) -> bool {
    if xattr_is(dir, name, "opaque", b"y") {
        return true;
    }
    match open_dir_at(dir.as_fd(), name) {
        Ok(fd) => lstat_at(&fd, OsStr::new(OPAQUE_MARKER)).is_ok(),
        Err(_) => false,
    }
}

/// Does `dir` hold a `.wh.<name>` whiteout entry for `name`?
pub fn has_wh_entry(dir: impl AsFd, name: &OsStr) -> bool {
    let mut wh = OsString::from(WHITEOUT_PREFIX);
    wh.push(name);
    lstat_at(dir, &wh).is_ok()
}

/// If `name` is a `.wh.`-style whiteout entry, the name it whites out (`None` for the opaque
/// marker and other AUFS metadata names, which are not whiteouts of a sibling).
pub fn wh_target(name: &OsStr) -> Option<&OsStr> {
    let rest = name.as_bytes().strip_prefix(WHITEOUT_PREFIX.as_bytes())?;
    if rest.starts_with(WHITEOUT_PREFIX.as_bytes()) || rest.is_empty() {
        return None;
    }
    Some(OsStr::from_bytes(rest))
}

/// Is `name` overlay metadata that never shows up as content (`.wh..wh..opq`, `.wh..wh.plnk`, …)?
pub fn is_aufs_meta(name: &OsStr) -> bool {
    name.as_bytes().starts_with(b".wh..wh.")
}
