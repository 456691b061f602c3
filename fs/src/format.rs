//! The overlay on-disk format: the only code that knows how a layer dir spells whiteouts, opaque
//! directories and redirects, and how a layer tar names them. Everything else (the union
//! filesystem, layer extraction, tar writing, diff, the vfs driver) asks this module.
//!
//! Read, in every form kernel overlayfs, fuse-overlayfs and layer tools write:
//! - *whiteout*: a char device 0/0; a `.wh.<name>` entry (AUFS/OCI style); a zero-size regular
//!   file carrying `trusted.overlay.whiteout` / `user.overlay.whiteout` — only in a directory
//!   whose opaque xattr is `x`, which marks "holds xattr whiteouts" and is *not* opaque
//!   (kernel overlayfs ≥ 6.7, `Documentation/filesystems/overlayfs.rst`).
//! - *opaque directory*: `trusted.overlay.opaque=y`, `user.overlay.opaque=y`, or a
//!   `.wh..wh..opq` entry inside it (fuse-overlayfs 1.x writes that marker).
//! - *redirect*: `trusted.overlay.redirect` / `user.overlay.redirect` on a renamed directory
//!   (kernel `redirect_dir=on`): where its lower content lives.
//!
//! Written in one [`Flavour`]: whiteouts as char 0/0 (allowed unprivileged since Linux 5.8),
//! opaque directories as `<flavour>.overlay.opaque=y`. Never the `.wh..wh..opq` marker in a
//! layer dir: kernel overlayfs would show it as a file. Layer tars use `.wh.<name>` and
//! `.wh..wh..opq` ([`WH_PREFIX`], [`OPAQUE_MARKER`]).
//!
//! Vocabulary: the *target* of a `.wh.<name>` entry is `<name>`; *AUFS metadata* are the other
//! `.wh..wh.*` names (`.wh..wh.plnk`, `.wh..wh.aufs`), never content and never whiteouts.

use std::ffi::OsStr;
use std::os::fd::BorrowedFd;
use std::os::unix::ffi::OsStrExt;

use nix::errno::Errno;

use crate::at::{self, R};

/// Name prefix of a whiteout entry (`.wh.<name>`), in layer tars and `.wh.`-style dirs.
pub const WH_PREFIX: &[u8] = b".wh.";
/// The opaque-directory marker entry, in layer tars and fuse-overlayfs upper dirs.
pub const OPAQUE_MARKER: &[u8] = b".wh..wh..opq";
/// Prefix of AUFS metadata names (the marker is one of them).
const META_PREFIX: &[u8] = b".wh..wh.";

/// Opaque-directory xattrs, in [`Flavour::ALL`] order.
pub const XATTR_OPAQUE: [&str; 2] = ["trusted.overlay.opaque", "user.overlay.opaque"];
/// Whiteout xattrs (on a zero-size file in an `opaque=x` directory), in [`Flavour::ALL`] order.
pub const XATTR_WHITEOUT: [&str; 2] = ["trusted.overlay.whiteout", "user.overlay.whiteout"];
/// Redirect xattrs, in [`Flavour::ALL`] order: an absolute path from the layer root (`/a/sub`)
/// or a name in the parent's lower dirs (`a`).
pub const XATTR_REDIRECT: [&str; 2] = ["trusted.overlay.redirect", "user.overlay.redirect"];

/// Which xattr namespace the format is written in: `trusted.overlay.*` needs CAP_SYS_ADMIN
/// (what root and kernel overlayfs use); `user.overlay.*` is what a rootless user can write
/// (kernel overlayfs `userxattr`, fuse-overlayfs without privileges). Both are always read.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Flavour {
    #[default]
    Trusted,
    User,
}

impl Flavour {
    /// Every flavour, in the order readers try them.
    pub const ALL: [Flavour; 2] = [Flavour::Trusted, Flavour::User];

    /// The flavour this process can write: `Trusted` as root of the initial user namespace,
    /// `User` otherwise — also as uid 0 of a user namespace (rootless podman's mount_program,
    /// rootless strata), where the kernel refuses `trusted.*` xattrs.
    pub fn for_current_user() -> Flavour {
        if nix::unistd::geteuid().is_root() && !in_user_namespace() {
            Flavour::Trusted
        } else {
            Flavour::User
        }
    }

    fn idx(self) -> usize {
        match self {
            Flavour::Trusted => 0,
            Flavour::User => 1,
        }
    }

    pub fn opaque_xattr(self) -> &'static str {
        XATTR_OPAQUE[self.idx()]
    }

    pub fn whiteout_xattr(self) -> &'static str {
        XATTR_WHITEOUT[self.idx()]
    }

    pub fn redirect_xattr(self) -> &'static str {
        XATTR_REDIRECT[self.idx()]
    }
}

/// Overlay-private xattrs (kernel overlayfs's in both flavours, and fuse-overlayfs's own):
/// metadata of the format, never content. Not copied up, not shown through a mount, not put in
/// a layer tar, not taken from one.
pub fn is_private_xattr(name: &[u8]) -> bool {
    [
        &b"trusted.overlay."[..],
        b"user.overlay.",
        b"user.fuseoverlayfs.",
        b"trusted.fuseoverlayfs.",
    ]
    .iter()
    .any(|p| name.starts_with(p))
}

/// What an entry's name alone says about it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Name<'a> {
    /// An ordinary name (it may still be a char 0/0 or xattr whiteout: see [`is_whiteout`]).
    Plain,
    /// `.wh.<target>`: hides `<target>` of the layers below.
    Whiteout(&'a [u8]),
    /// `.wh..wh..opq`: the directory holding it is opaque.
    OpaqueMarker,
    /// Other AUFS metadata (`.wh..wh.plnk`, …), or `.wh.` alone: ignored.
    Meta,
    /// `.wh..` or `.wh...`: a whiteout of `.` or `..`, which no layer may hold. Readers skip
    /// it; extraction refuses it.
    Invalid,
}

/// Classify a directory-entry or tar base name.
pub fn classify(name: &[u8]) -> Name<'_> {
    if name == OPAQUE_MARKER {
        return Name::OpaqueMarker;
    }
    if name.starts_with(META_PREFIX) {
        return Name::Meta;
    }
    match name.strip_prefix(WH_PREFIX) {
        None => Name::Plain,
        Some(b"") => Name::Meta,
        Some(b".") | Some(b"..") => Name::Invalid,
        // A name from a directory entry never holds `/`; a tar base name never does either.
        Some(t) if t.contains(&b'/') => Name::Invalid,
        Some(t) => Name::Whiteout(t),
    }
}

/// The `.wh.<target>` name that whites `target` out in a tar or a `.wh.`-style dir.
pub fn whiteout_name(target: &[u8]) -> Vec<u8> {
    let mut n = Vec::with_capacity(WH_PREFIX.len() + target.len());
    n.extend_from_slice(WH_PREFIX);
    n.extend_from_slice(target);
    n
}

/// Copy the xattrs of `src_dir/src_name` to `dst_dir/dst_name`, except overlay-private ones.
pub fn copy_xattrs(
    src_dir: BorrowedFd<'_>,
    src_name: &OsStr,
    dst_dir: BorrowedFd<'_>,
    dst_name: &OsStr,
) -> R<()> {
    copy_listed(
        at::llistxattr(src_dir, src_name),
        |k| at::lgetxattr(src_dir, src_name, k),
        |k, v| at::lsetxattr(dst_dir, dst_name, k, v, 0),
    )
}

/// [`copy_xattrs`] between two open files (a regular file's copy-up, which holds both open):
/// `flistxattr`/`fgetxattr`/`fsetxattr`, no path walk through `/proc/self/fd`.
pub fn copy_xattrs_fd(src: BorrowedFd<'_>, dst: BorrowedFd<'_>) -> R<()> {
    copy_listed(
        at::flistxattr(src),
        |k| at::fgetxattr(src, k),
        |k, v| at::fsetxattr(dst, k, v, 0),
    )
}

/// The copy loop of both: every listed xattr but the overlay-private ones (escaped overlay
/// xattrs — a nested union filesystem's marks — are content and copied); a name gone since
/// the listing is skipped, one the destination refuses (EPERM, ENOTSUP) too.
fn copy_listed(
    list: R<Vec<u8>>,
    get: impl Fn(&OsStr) -> R<Vec<u8>>,
    set: impl Fn(&OsStr, &[u8]) -> R<()>,
) -> R<()> {
    let list = match list {
        Ok(l) => l,
        Err(Errno::ENOTSUP) => return Ok(()),
        Err(e) => return Err(e),
    };
    for key in list.split(|&b| b == 0).filter(|k| !k.is_empty()) {
        if is_private_xattr(key) && unescaped_xattr(key).is_none() {
            continue;
        }
        let k = OsStr::from_bytes(key);
        let v = match get(k) {
            Ok(v) => v,
            Err(Errno::ENODATA) => continue,
            Err(e) => return Err(e),
        };
        match set(k, &v) {
            Ok(()) | Err(Errno::EPERM) | Err(Errno::ENOTSUP) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// The overlay marks of one layer's directory.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DirMarks {
    /// Nothing of the layers below shows through (`opaque=y`, or the marker entry when looked
    /// for).
    pub opaque: bool,
    /// `opaque=x`: zero-size files with a whiteout xattr in it are whiteouts.
    pub xwhiteouts: bool,
    /// The redirect xattr, when set and not empty.
    pub redirect: Option<Vec<u8>>,
}

/// The value of the opaque xattr on the directory `dirfd` itself: `b'y'`, `b'x'` or 0.
pub fn opaque_value(dirfd: BorrowedFd<'_>) -> u8 {
    for key in XATTR_OPAQUE {
        if let Ok(v) = at::lgetxattr(dirfd, OsStr::new(""), OsStr::new(key)) {
            if let Some(&c) = v.first() {
                return c;
            }
        }
    }
    0
}

/// Read the marks of the directory `dirfd` (opened for reading). The `.wh..wh..opq` entry is
/// only looked for when `look_for_marker` (a caller listing the directory finds it there
/// anyway, see [`classify`]).
pub fn read_dir_marks(dirfd: BorrowedFd<'_>, look_for_marker: bool) -> DirMarks {
    // Most layer dirs have no xattrs at all: one flistxattr says so (instead of a getxattr per
    // form).
    let names = at::flistxattr_small(dirfd);
    let has = |keys: &[&str]| match &names {
        Ok(names) => names
            .split(|&b| b == 0)
            .any(|n| keys.iter().any(|k| k.as_bytes() == n)),
        Err(_) => true, // unknown: ask for each key
    };
    let opq = if has(&XATTR_OPAQUE) {
        opaque_value(dirfd)
    } else {
        0
    };
    let redirect = if has(&XATTR_REDIRECT) {
        XATTR_REDIRECT.iter().find_map(|k| {
            at::lgetxattr(dirfd, OsStr::new(""), OsStr::new(k))
                .ok()
                .filter(|v| !v.is_empty())
        })
    } else {
        None
    };
    let marker = look_for_marker
        && opq != b'y'
        && at::fstatat(dirfd, OsStr::from_bytes(OPAQUE_MARKER)).is_ok();
    DirMarks {
        opaque: opq == b'y' || marker,
        xwhiteouts: opq == b'x',
        redirect,
    }
}

/// Is the entry `name` of `dir` (already `lstat`ed as `st`) a whiteout in one of the forms that
/// live on the entry itself: char 0/0, or — when the directory is marked `xwhiteouts` (see
/// [`DirMarks`]) — a zero-size regular file with a whiteout xattr? (`.wh.` names are told by
/// [`classify`].)
pub fn is_whiteout(dir: BorrowedFd<'_>, name: &OsStr, st: &libc::stat, xwhiteouts: bool) -> bool {
    let fmt = st.st_mode & libc::S_IFMT;
    if fmt == libc::S_IFCHR && st.st_rdev == 0 {
        return true;
    }
    if xwhiteouts && fmt == libc::S_IFREG && st.st_size == 0 {
        return XATTR_WHITEOUT
            .iter()
            .any(|k| at::lgetxattr(dir, name, OsStr::new(k)).is_ok());
    }
    false
}

/// Does `dir` hold a `.wh.<name>` entry for `name`?
pub fn has_whiteout_entry(dir: BorrowedFd<'_>, name: &OsStr) -> bool {
    at::fstatat(dir, OsStr::from_bytes(&whiteout_name(name.as_bytes()))).is_ok()
}

/// Escaping of overlay xattrs set *through* a mount (kernel overlayfs does the same since 6.7):
/// `trusted.overlay.X` / `user.overlay.X` given by a caller is stored in the layer as
/// `trusted.overlay.overlay.X` / `user.overlay.overlay.X`, so a union filesystem nested on ours
/// (strata in a strata container: its upper dir is inside our mount) keeps its whiteouts and
/// opaque marks, and ours never mistake them for our own. The stored name for `name`, if `name`
/// is an overlay xattr; other private xattrs (fuse-overlayfs's) stay refused.
pub fn escaped_xattr(name: &[u8]) -> Option<Vec<u8>> {
    ["trusted.overlay.", "user.overlay."]
        .iter()
        .find(|p| name.starts_with(p.as_bytes()))
        .map(|p| {
            let mut v = p.as_bytes().to_vec();
            v.extend_from_slice(b"overlay.");
            v.extend_from_slice(&name[p.len()..]);
            v
        })
}

/// The name shown through a mount for the stored xattr `stored`: the unescaped name of an
/// escaped overlay xattr (see [`escaped_xattr`]); `None` for a stored name that is private.
pub fn unescaped_xattr(stored: &[u8]) -> Option<Vec<u8>> {
    for p in ["trusted.overlay.", "user.overlay."] {
        if let Some(rest) = stored
            .strip_prefix(p.as_bytes())
            .and_then(|r| r.strip_prefix(b"overlay."))
        {
            let mut v = p.as_bytes().to_vec();
            v.extend_from_slice(rest);
            return Some(v);
        }
    }
    None
}

/// Create a whiteout `name` in `dir` as [`make_whiteout`] does, or, where the filesystem refuses
/// the char 0/0 node (EPERM: an upper dir inside another union filesystem, strata nested in a
/// container), in the xattr form: a zero-size file carrying `flavour`'s whiteout xattr. Returns
/// whether the xattr form was used: then the parent dir must be marked with
/// [`mark_xwhiteouts`].
pub fn make_whiteout_any(dir: BorrowedFd<'_>, name: &OsStr, flavour: Flavour) -> R<bool> {
    match make_whiteout(dir, name) {
        Err(Errno::EPERM) => {}
        other => return other.map(|()| false),
    }
    let fd = at::openat(
        dir,
        name,
        libc::O_CREAT | libc::O_EXCL | libc::O_WRONLY | libc::O_CLOEXEC,
        0o600,
    )?;
    drop(fd);
    if let Err(e) = at::lsetxattr(dir, name, OsStr::new(flavour.whiteout_xattr()), b"", 0) {
        let _ = at::unlinkat(dir, name, false);
        return Err(e);
    }
    Ok(true)
}

/// Mark the directory `dirfd` `opaque=x` (it holds xattr whiteouts), unless it is opaque already.
pub fn mark_xwhiteouts(dirfd: BorrowedFd<'_>, flavour: Flavour) -> R<()> {
    if opaque_value(dirfd) == b'y' {
        return Ok(());
    }
    at::lsetxattr(
        dirfd,
        OsStr::new(""),
        OsStr::new(flavour.opaque_xattr()),
        b"x",
        0,
    )
}

/// Create a whiteout `name` in `dir` (char device 0/0: the same in both flavours).
pub fn make_whiteout(dir: BorrowedFd<'_>, name: &OsStr) -> R<()> {
    at::mknodat(dir, name, libc::S_IFCHR, 0)
}

/// Mark the directory `name` in `dir` (`""`: `dir` itself) opaque.
pub fn set_opaque(dir: BorrowedFd<'_>, name: &OsStr, flavour: Flavour) -> R<()> {
    at::lsetxattr(dir, name, OsStr::new(flavour.opaque_xattr()), b"y", 0)
}

/// Remove the redirect xattrs (both flavours) of the directory `name` in `dir` (`""`: `dir`
/// itself): an opaque directory has no lower content to point at. Without CAP_SYS_ADMIN in
/// the initial user namespace (rootless) the kernel answers EPERM for `trusted.*`: such a
/// process cannot have written one and a `userxattr` mount never reads it, so that is skipped.
pub fn clear_redirect(dir: BorrowedFd<'_>, name: &OsStr) -> R<()> {
    for (k, fl) in XATTR_REDIRECT.iter().zip(Flavour::ALL) {
        match at::lremovexattr(dir, name, OsStr::new(k)) {
            Ok(()) | Err(Errno::ENODATA) | Err(Errno::ENOTSUP) => {}
            Err(Errno::EPERM) if fl == Flavour::Trusted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Is this process in a user namespace other than the initial one (its uid map is not the
/// identity map of all 2^32 ids)?
pub fn in_user_namespace() -> bool {
    match std::fs::read_to_string("/proc/self/uid_map") {
        Ok(map) => map.split_whitespace().collect::<Vec<_>>() != ["0", "0", "4294967295"],
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::{AsFd, OwnedFd};

    fn open_dir(p: &std::path::Path) -> OwnedFd {
        std::fs::File::open(p).unwrap().into()
    }

    #[test]
    fn names() {
        assert_eq!(classify(b"a"), Name::Plain);
        assert_eq!(classify(b".wh.a"), Name::Whiteout(b"a"));
        assert_eq!(classify(b".wh..wh..opq"), Name::OpaqueMarker);
        assert_eq!(classify(b".wh..wh.plnk"), Name::Meta);
        assert_eq!(classify(b".wh."), Name::Meta);
        assert_eq!(classify(b".wh.."), Name::Invalid);
        assert_eq!(classify(b".wh..."), Name::Invalid);
        assert_eq!(classify(b".wh.a/b"), Name::Invalid);
        assert_eq!(classify(b".wh....."), Name::Whiteout(b"...."));
        assert_eq!(whiteout_name(b"x"), b".wh.x");
        assert!(is_private_xattr(b"user.overlay.opaque"));
        assert!(is_private_xattr(b"trusted.fuseoverlayfs.x"));
        assert!(!is_private_xattr(b"user.mime_type"));
        assert_eq!(Flavour::User.opaque_xattr(), "user.overlay.opaque");
        assert_eq!(
            Flavour::Trusted.redirect_xattr(),
            "trusted.overlay.redirect"
        );
    }

    #[test]
    fn marks_and_writers_round_trip() {
        let t = tempfile::tempdir().unwrap();
        let d = open_dir(t.path());
        let d = d.as_fd();
        for fl in Flavour::ALL {
            let n = OsStr::new(fl.opaque_xattr());
            at::mkdirat(d, n, 0o755).unwrap();
            let sub = open_dir(&t.path().join(fl.opaque_xattr()));
            assert_eq!(read_dir_marks(sub.as_fd(), true), DirMarks::default());
            set_opaque(d, n, fl).unwrap();
            assert!(read_dir_marks(sub.as_fd(), false).opaque);
            let v = at::lgetxattr(d, n, OsStr::new(fl.opaque_xattr())).unwrap();
            assert_eq!(v, b"y");
        }
        // The marker entry counts only when looked for.
        at::mkdirat(d, OsStr::new("m"), 0o755).unwrap();
        std::fs::write(t.path().join("m/.wh..wh..opq"), b"").unwrap();
        let m = open_dir(&t.path().join("m"));
        assert!(read_dir_marks(m.as_fd(), true).opaque);
        assert!(!read_dir_marks(m.as_fd(), false).opaque);
        // Whiteouts: char 0/0 anywhere, xattr whiteouts only in an `x` dir.
        make_whiteout(d, OsStr::new("gone")).unwrap();
        let st = at::fstatat(d, OsStr::new("gone")).unwrap();
        assert!(is_whiteout(d, OsStr::new("gone"), &st, false));
        std::fs::write(t.path().join("xw"), b"").unwrap();
        at::lsetxattr(d, OsStr::new("xw"), OsStr::new(XATTR_WHITEOUT[0]), b"", 0).unwrap();
        let st = at::fstatat(d, OsStr::new("xw")).unwrap();
        assert!(!is_whiteout(d, OsStr::new("xw"), &st, false));
        assert!(is_whiteout(d, OsStr::new("xw"), &st, true));
        std::fs::write(t.path().join(".wh.w"), b"").unwrap();
        assert!(has_whiteout_entry(d, OsStr::new("w")));
        assert!(!has_whiteout_entry(d, OsStr::new("v")));
        // Redirects are read and cleared in both flavours.
        at::lsetxattr(d, OsStr::new("m"), OsStr::new(XATTR_REDIRECT[1]), b"/a", 0).unwrap();
        assert_eq!(
            read_dir_marks(m.as_fd(), false).redirect,
            Some(b"/a".to_vec())
        );
        clear_redirect(d, OsStr::new("m")).unwrap();
        assert_eq!(read_dir_marks(m.as_fd(), false).redirect, None);
        // `x` means xattr whiteouts, not opaque.
        at::lsetxattr(d, OsStr::new("m"), OsStr::new(XATTR_OPAQUE[0]), b"x", 0).unwrap();
        let mk = read_dir_marks(m.as_fd(), false);
        assert!(mk.xwhiteouts && !mk.opaque);
    }
}
