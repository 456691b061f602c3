//! The one reader of `/proc/self/mountinfo` (proc(5)): which filesystems are mounted where.
//!
//! Fields are separated by single spaces; a mount point holding a space, tab, newline or
//! backslash has it written as an octal escape (`\040`, `\011`, `\012`, `\134`), and every other
//! byte as it is — non-ASCII bytes included, so a line is bytes, not text.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// One line of mountinfo.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MountInfo {
    /// `major:minor` of the mounted filesystem (`st_dev` of its files).
    pub dev: (u32, u32),
    /// Where it is mounted, unescaped.
    pub mount_point: PathBuf,
    /// Filesystem type (`overlay`, `fuse.strata`, `tmpfs`, …).
    pub fstype: String,
}

/// Undo mountinfo's octal escapes (`\040` for a space, …); other bytes are kept as they are.
pub fn unescape(field: &[u8]) -> Vec<u8> {
    let b = field;
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let d = |k: usize| u32::from(b[i + k] - b'0');
            out.push((d(1) * 64 + d(2) * 8 + d(3)) as u8);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    out
}

/// Parse mountinfo text; malformed lines are skipped.
pub fn parse(text: &[u8]) -> Vec<MountInfo> {
    text.split(|&b| b == b'\n')
        .filter_map(|line| {
            let mut f = line.split(|&b| b == b' ');
            let dev = f.nth(2)?;
            let mount_point = f.nth(1)?;
            // Optional fields end at a lone "-"; the filesystem type follows it.
            let fstype = f.find(|x| *x == b"-").and_then(|_| f.next())?;
            let dev = std::str::from_utf8(dev).ok()?.split_once(':')?;
            Some(MountInfo {
                dev: (dev.0.parse().ok()?, dev.1.parse().ok()?),
                mount_point: PathBuf::from(OsStr::from_bytes(&unescape(mount_point))),
                fstype: String::from_utf8_lossy(fstype).into_owned(),
            })
        })
        .collect()
}

/// The mounts of this process's mount namespace, in mount order (empty when `/proc` is not
/// readable).
pub fn mounts() -> Vec<MountInfo> {
    std::fs::read("/proc/self/mountinfo")
        .map(|t| parse(&t))
        .unwrap_or_default()
}

/// The top-most mount on exactly `path` (as written, not canonicalized), if any.
pub fn mount_at(path: &Path) -> Option<MountInfo> {
    mounts().into_iter().rev().find(|m| m.mount_point == path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_and_raw_bytes() {
        assert_eq!(unescape(b"/a\\040b\\134c"), b"/a b\\c");
        assert_eq!(unescape(b"/x\\04"), b"/x\\04");
        assert_eq!(unescape(b"/x\\9999"), b"/x\\9999");
        let line = b"36 35 0:45 / /mnt/caf\xc3\xa9\\040x rw,relatime shared:1 master:2 - fuse.strata strata rw\n\
                     37 35 8:1 / / rw - ext4 /dev/sda1 rw";
        let m = parse(line);
        assert_eq!(m.len(), 2);
        assert_eq!(m[0].dev, (0, 45));
        assert_eq!(m[0].fstype, "fuse.strata");
        assert_eq!(
            m[0].mount_point.as_os_str().as_bytes(),
            "/mnt/café x".as_bytes()
        );
        assert_eq!(m[1].mount_point, Path::new("/"));
        assert_eq!(m[1].fstype, "ext4");
        // The root filesystem is always there.
        assert!(mount_at(Path::new("/")).is_some());
    }
}
