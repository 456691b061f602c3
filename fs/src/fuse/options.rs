//! How the mount presents the union to its users: fuse-overlayfs's presentation options
//! (`uidmapping=`, `gidmapping=`, `squash_to_root`, `squash_to_uid=`, `squash_to_gid=`,
//! `static_nlink`, `noxattrs`, `timeout=`, `fsync=`), applied by the FUSE adapter only: the
//! core always works with the ids and link counts on disk.
//!
//! Vocabulary: a *disk* id is the owner recorded in a layer; a *shown* id is the one the
//! kernel (and so every user of the mount) sees. An id range `host:to:len` maps disk ids
//! `host..host+len` to shown ids `to..to+len` and back; ids outside every range show as the
//! kernel's overflow id (65534) and cannot be written. Squashing changes only what is shown:
//! files created or chowned through the mount still record the caller's (mapped) id, as
//! fuse-overlayfs does.
//!
//! `xattr_permissions=1|2` (fuse-overlayfs's way to run without the right to chown): a chown or
//! chmod of a file or directory records `uid:gid:mode` (disk ids, octal mode) in
//! `security.fuseoverlayfs.override_stat` (1) or `user.containers.override_stat` (2) instead
//! of changing the inode, and that record, wherever a layer has one, is what the mount shows
//! (before id mapping). The record itself is hidden from the xattr calls. Without the option,
//! a layer whose root directory carries a record (containers/storage's `force_mask` writes
//! `user.containers.override_stat` on every file of a layer, its root included; fuse-overlayfs
//! looks there too) turns it on for the mount: see [`detect_xattr_permissions`].

use std::ffi::OsStr;
use std::time::Duration;

use nix::errno::Errno;

use crate::ids::{Fh, Ino};
use crate::ops::SetAttr;
use crate::unionfs::{Attr, Fs};

/// The override records of `xattr_permissions=1` and `=2`.
const OVERRIDE_KEYS: [&str; 2] = [
    "security.fuseoverlayfs.override_stat",
    "user.containers.override_stat",
];

/// Root-directory markers of layers written in override mode, and the `xattr_permissions` value
/// each means (fuse-overlayfs's order: the privileged record wins; its "user" mode keeps its
/// records under the containers name).
const OVERRIDE_MARKERS: [(&str, u8); 3] = [
    ("security.fuseoverlayfs.override_stat", 1),
    ("user.containers.override_stat", 2),
    ("user.fuseoverlayfs.override_stat", 2),
];

/// The `xattr_permissions` mode the layers of `fs` ask for when the option was not given: the
/// first marker (see [`OVERRIDE_MARKERS`]) found on the root of any layer, upper first; 0 if
/// none. Without it, a stack written in override mode would show the stand-in owners and modes
/// of its inodes instead of the recorded ones.
pub(crate) fn detect_xattr_permissions(fs: &Fs) -> u8 {
    let layers = &fs.tree.layers;
    for (key, mode) in OVERRIDE_MARKERS {
        for l in layers.ids() {
            let Ok(fd) = layers.fd(l) else { continue };
            if crate::at::lgetxattr(fd, OsStr::new(""), OsStr::new(key)).is_ok() {
                return mode;
            }
        }
    }
    0
}

/// One range of an id mapping: disk ids `host..host+len` are shown as `to..to+len`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IdRange {
    pub host: u32,
    pub to: u32,
    pub len: u32,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum OptionError {
    #[error("invalid mapping specified: {0}")]
    Mapping(String),
}

/// Parse fuse-overlayfs's mapping syntax: `HOST:TO:LEN[:HOST2:TO2:LEN2…]` (empty fields
/// ignored, as fuse-overlayfs does).
pub fn parse_id_map(s: &str) -> Result<Vec<IdRange>, OptionError> {
    let bad = || OptionError::Mapping(s.to_string());
    let nums = s
        .split(':')
        .filter(|p| !p.is_empty())
        .map(|p| p.parse::<u32>().map_err(|_| bad()))
        .collect::<Result<Vec<_>, _>>()?;
    if nums.is_empty() || nums.len() % 3 != 0 {
        return Err(bad());
    }
    Ok(nums
        .chunks(3)
        .map(|c| IdRange {
            host: c[0],
            to: c[1],
            len: c[2],
        })
        .collect())
}

/// Presentation options of one mount (see the module doc). The default shows the layers as
/// they are.
#[derive(Clone, Debug)]
pub struct ViewOptions {
    pub uid_map: Vec<IdRange>,
    pub gid_map: Vec<IdRange>,
    /// Show every object as owned by this uid / gid (`squash_to_uid`, `squash_to_root`).
    pub squash_uid: Option<u32>,
    pub squash_gid: Option<u32>,
    /// Directories report `st_nlink` 1 (`static_nlink`).
    pub static_nlink: bool,
    /// Extended attributes can be read and written (`noxattrs=1` turns them off: every xattr
    /// call fails with EOPNOTSUPP).
    pub xattrs: bool,
    /// How long the kernel may cache entries and attributes (`timeout=SECS`); `None` keeps
    /// our default (we are the only writer of the layers).
    pub timeout: Option<Duration>,
    /// `fsync`/`fdatasync`/`fsyncdir` reach the disk (`fsync=0` or `volatile` make them
    /// no-ops, like kernel overlayfs's `volatile`).
    pub fsync: bool,
    /// 0: owners and modes are the inodes'; 1 or 2: kept in an override xattr (module doc).
    pub xattr_permissions: u8,
}

impl Default for ViewOptions {
    fn default() -> Self {
        ViewOptions {
            uid_map: Vec::new(),
            gid_map: Vec::new(),
            squash_uid: None,
            squash_gid: None,
            static_nlink: false,
            xattrs: true,
            timeout: None,
            fsync: true,
            xattr_permissions: 0,
        }
    }
}

/// The kernel's overflow id (shown for ids no range maps; usually 65534).
pub(crate) fn overflow_id(which: &str) -> u32 {
    std::fs::read_to_string(format!("/proc/sys/kernel/overflow{which}"))
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(65534)
}

/// `uid:gid:mode[:type]` (mode in octal), as fuse-overlayfs writes it.
fn parse_override(v: &[u8]) -> Option<(u32, u32, u32)> {
    let s = std::str::from_utf8(v).ok()?;
    let mut f = s.trim_end_matches('\0').splitn(4, ':');
    let uid = f.next()?.parse().ok()?;
    let gid = f.next()?.parse().ok()?;
    let mode = u32::from_str_radix(f.next()?, 8).ok()?;
    Some((uid, gid, mode))
}

/// Disk id -> shown id through `map` (identity when empty).
fn show(id: u32, map: &[IdRange], overflow: u32) -> u32 {
    if map.is_empty() {
        return id;
    }
    map.iter()
        .find(|r| id >= r.host && id - r.host < r.len)
        .map_or(overflow, |r| r.to + (id - r.host))
}

/// Shown id -> disk id through `map` (identity when empty).
fn unshow(id: u32, map: &[IdRange], overflow: u32) -> u32 {
    if map.is_empty() {
        return id;
    }
    map.iter()
        .find(|r| id >= r.to && id - r.to < r.len)
        .map_or(overflow, |r| r.host + (id - r.to))
}

/// `ViewOptions` ready to apply: overflow ids read once.
pub(crate) struct View {
    pub opts: ViewOptions,
    overflow_uid: u32,
    overflow_gid: u32,
}

impl View {
    pub fn new(opts: ViewOptions) -> View {
        View {
            opts,
            overflow_uid: overflow_id("uid"),
            overflow_gid: overflow_id("gid"),
        }
    }

    /// Apply the presentation to a `stat` taken from disk.
    pub fn show_stat(&self, st: &mut libc::stat) {
        let o = &self.opts;
        st.st_uid = o
            .squash_uid
            .unwrap_or_else(|| show(st.st_uid, &o.uid_map, self.overflow_uid));
        st.st_gid = o
            .squash_gid
            .unwrap_or_else(|| show(st.st_gid, &o.gid_map, self.overflow_gid));
        if o.static_nlink && st.st_mode & libc::S_IFMT == libc::S_IFDIR {
            st.st_nlink = 1;
        }
    }

    /// The override record's name, when `xattr_permissions` is on.
    pub fn override_key(&self) -> Option<&'static OsStr> {
        match self.opts.xattr_permissions {
            1 | 2 => Some(OsStr::new(
                OVERRIDE_KEYS[self.opts.xattr_permissions as usize - 1],
            )),
            _ => None,
        }
    }

    /// Apply the override record of `ino` (files and directories only) to `st`.
    pub fn read_override(&self, fs: &Fs, ino: Ino, st: &mut libc::stat) {
        let Some(key) = self.override_key() else {
            return;
        };
        if !matches!(st.st_mode & libc::S_IFMT, libc::S_IFREG | libc::S_IFDIR) {
            return;
        }
        if let Some((uid, gid, mode)) = fs.getxattr(ino, key).ok().and_then(|v| parse_override(&v))
        {
            st.st_uid = uid;
            st.st_gid = gid;
            st.st_mode = (st.st_mode & libc::S_IFMT) | (mode & 0o7777);
        }
    }

    /// SETATTR under `xattr_permissions`: owner and mode of files and directories go to the
    /// override record (which copies the object up), the rest (size, times) to the inode.
    pub fn setattr(
        &self,
        fs: &Fs,
        ino: Ino,
        mut sa: SetAttr,
        fh: Option<Fh>,
    ) -> Result<Attr, Errno> {
        let ids = sa.mode.is_some() || sa.uid.is_some() || sa.gid.is_some();
        if let (Some(key), true) = (self.override_key(), ids) {
            let cur = fs.getattr(ino, fh)?;
            let mut st = cur.st;
            if matches!(st.st_mode & libc::S_IFMT, libc::S_IFREG | libc::S_IFDIR) {
                self.read_override(fs, ino, &mut st);
                let rec = format!(
                    "{}:{}:{:o}",
                    sa.uid.unwrap_or(st.st_uid),
                    sa.gid.unwrap_or(st.st_gid),
                    sa.mode.unwrap_or(st.st_mode) & 0o7777
                );
                fs.setxattr(ino, key, rec.as_bytes(), 0)?;
                (sa.uid, sa.gid, sa.mode) = (None, None, None);
            }
        }
        if sa.size.is_none()
            && sa.atime.is_none()
            && sa.mtime.is_none()
            && sa.mode.is_none()
            && sa.uid.is_none()
            && sa.gid.is_none()
        {
            return fs.getattr(ino, fh);
        }
        fs.setattr(ino, sa, fh)
    }

    /// Is `key` the override record (hidden from users when `xattr_permissions` is on)?
    pub fn is_override_key(&self, key: &OsStr) -> bool {
        self.override_key() == Some(key)
    }

    /// The disk uid to record for shown uid `id` (a caller's, or a chown's target).
    pub fn disk_uid(&self, id: u32) -> u32 {
        unshow(id, &self.opts.uid_map, self.overflow_uid)
    }

    pub fn disk_gid(&self, id: u32) -> u32 {
        unshow(id, &self.opts.gid_map, self.overflow_gid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mappings_parse_and_apply_both_ways() {
        let m = parse_id_map("0:1000:1:1:110000:65536").unwrap();
        assert_eq!(
            m,
            vec![
                IdRange {
                    host: 0,
                    to: 1000,
                    len: 1
                },
                IdRange {
                    host: 1,
                    to: 110000,
                    len: 65536
                }
            ]
        );
        assert_eq!(parse_id_map(":0:100:10").unwrap().len(), 1);
        for bad in ["", "0:1", "0:1:2:3", "a:b:c", "0:-1:2"] {
            assert!(parse_id_map(bad).is_err(), "{bad}");
        }
        assert_eq!(show(0, &m, 65534), 1000);
        assert_eq!(show(5, &m, 65534), 110004);
        assert_eq!(show(70000, &m, 65534), 65534);
        assert_eq!(unshow(110004, &m, 65534), 5);
        assert_eq!(unshow(7, &m, 65534), 65534);
        assert_eq!(show(7, &[], 65534), 7);
    }

    #[test]
    fn squash_wins_over_mapping_and_static_nlink_only_for_dirs() {
        let v = View::new(ViewOptions {
            uid_map: parse_id_map("0:1000:10").unwrap(),
            squash_gid: Some(0),
            static_nlink: true,
            ..ViewOptions::default()
        });
        // SAFETY: libc::stat is plain data; all-zero is a valid value.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        st.st_uid = 3;
        st.st_gid = 4;
        st.st_mode = libc::S_IFDIR | 0o755;
        st.st_nlink = 5;
        v.show_stat(&mut st);
        assert_eq!((st.st_uid, st.st_gid, st.st_nlink), (1003, 0, 1));
        st.st_mode = libc::S_IFREG;
        st.st_nlink = 2;
        v.show_stat(&mut st);
        assert_eq!(st.st_nlink, 2);
        assert_eq!(v.disk_uid(1003), 3);
        assert_eq!(v.disk_gid(9), 9);
    }

    #[test]
    fn override_records_parse() {
        assert_eq!(parse_override(b"1:2:755"), Some((1, 2, 0o755)));
        assert_eq!(parse_override(b"0:0:4755:file"), Some((0, 0, 0o4755)));
        assert_eq!(parse_override(b"1:2"), None);
        assert_eq!(parse_override(b"x:2:755"), None);
    }
}
