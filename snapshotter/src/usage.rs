//! Disk usage of one layer dir, as containerd counts it (`fs.DiskUsage`): every inode once
//! (hard links are one inode), size = allocated blocks × 512, the root directory included.
//! The walk is fd-relative and never follows a symlink: layer contents are hostile.

use std::collections::HashSet;
use std::ffi::OsStr;
use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::path::Path;

use serde::{Deserialize, Serialize};
use strata_fs::at;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    pub size: i64,
    pub inodes: i64,
}

struct Walk {
    seen: HashSet<(u64, u64)>,
    usage: Usage,
}

impl Walk {
    fn count(&mut self, st: &libc::stat) {
        if self.seen.insert((st.st_dev, st.st_ino)) {
            self.usage.inodes += 1;
            self.usage.size += st.st_blocks * 512;
        }
    }

    fn dir(&mut self, dir: BorrowedFd<'_>, dev: u64) -> io::Result<()> {
        for (name, _, _) in at::read_dir_fd(dir)? {
            let st = at::fstatat(dir, &name)?;
            self.count(&st);
            // Stay on the layer's filesystem: something mounted inside is not the layer's.
            if st.st_mode & libc::S_IFMT == libc::S_IFDIR && st.st_dev == dev {
                let sub = at::openat(dir, &name, libc::O_RDONLY | libc::O_DIRECTORY, 0)?;
                self.dir(sub.as_fd(), dev)?;
            }
        }
        Ok(())
    }
}

/// Usage of the tree at `path` (itself included).
pub fn disk_usage(path: &Path) -> io::Result<Usage> {
    let root = std::fs::File::open(path)?;
    let st = at::fstatat(root.as_fd(), OsStr::new(""))?;
    let mut w = Walk {
        seen: HashSet::new(),
        usage: Usage::default(),
    };
    w.count(&st);
    w.dir(root.as_fd(), st.st_dev)?;
    Ok(w.usage)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_inodes_once_and_blocks() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path();
        std::fs::create_dir_all(p.join("a/b")).unwrap();
        std::fs::write(p.join("a/b/f"), vec![7u8; 10_000]).unwrap();
        std::fs::hard_link(p.join("a/b/f"), p.join("a/g")).unwrap();
        std::os::unix::fs::symlink("/etc", p.join("link")).unwrap();
        let u = disk_usage(p).unwrap();
        // root, a, a/b, f (= g), link
        assert_eq!(u.inodes, 5);
        assert!(u.size >= 10_000, "{u:?}");
        // The symlink was not followed into /etc.
        let plain = disk_usage(&p.join("a")).unwrap();
        assert_eq!(plain.inodes, 3);
    }
}
