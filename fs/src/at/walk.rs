//! The fd-relative tree walker of [`crate::at`].

use std::ffi::OsStr;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::ffi::OsStrExt;

use nix::errno::Errno;

use super::{fstatat, list_sorted, open_dir_at};

/// One entry met by [`walk`].
pub struct WalkEntry<'a> {
    /// The directory holding the entry.
    pub dir: BorrowedFd<'a>,
    pub name: &'a OsStr,
    /// `/`-separated path from the walk's root, for messages and keys only: never opened.
    pub path: &'a [u8],
    /// `lstat` of the entry.
    pub stat: &'a libc::stat,
}

impl WalkEntry<'_> {
    pub fn is_dir(&self) -> bool {
        self.stat.st_mode & libc::S_IFMT == libc::S_IFDIR
    }
}

/// What [`walk`] does after [`Visitor::entry`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// Go into this directory (ignored for other entries).
    Descend,
    /// Leave this entry's subtree alone.
    Skip,
}

/// The callbacks of [`walk`].
pub trait Visitor {
    type Error: From<Errno>;
    /// Called for every entry, parents before children, siblings in name order.
    fn entry(&mut self, e: &WalkEntry<'_>) -> Result<Step, Self::Error>;
    /// A directory the walk descends into, opened (`dirfd`), before its children.
    fn enter(&mut self, _e: &WalkEntry<'_>, _dirfd: BorrowedFd<'_>) -> Result<(), Self::Error> {
        Ok(())
    }
    /// The same directory after its children.
    fn leave(&mut self, _e: &WalkEntry<'_>, _dirfd: BorrowedFd<'_>) -> Result<(), Self::Error> {
        Ok(())
    }
}

/// Walk the tree below the directory `root` depth first, fd-relative: each directory is opened
/// from its parent's fd with `O_NOFOLLOW`, so a symlink (or a rename racing the walk) never
/// leads outside `root`. Entries that vanish while walking are skipped.
pub fn walk<V: Visitor>(root: BorrowedFd<'_>, v: &mut V) -> Result<(), V::Error> {
    let mut path = Vec::new();
    walk_dir(root, &mut path, v)
}

fn walk_dir<V: Visitor>(
    dir: BorrowedFd<'_>,
    path: &mut Vec<u8>,
    v: &mut V,
) -> Result<(), V::Error> {
    for name in list_sorted(dir)? {
        let st = match fstatat(dir, &name) {
            Ok(st) => st,
            Err(Errno::ENOENT) => continue,
            Err(e) => return Err(e.into()),
        };
        let len = path.len();
        if len > 0 {
            path.push(b'/');
        }
        path.extend_from_slice(name.as_bytes());
        let r = walk_one(dir, &name, &st, path, v);
        path.truncate(len);
        r?;
    }
    Ok(())
}

fn walk_one<V: Visitor>(
    dir: BorrowedFd<'_>,
    name: &OsStr,
    st: &libc::stat,
    path: &[u8],
    v: &mut V,
) -> Result<(), V::Error> {
    let e = WalkEntry {
        dir,
        name,
        path,
        stat: st,
    };
    if v.entry(&e)? == Step::Skip || !e.is_dir() {
        return Ok(());
    }
    let sub = match open_dir_at(dir, name) {
        Ok(fd) => fd,
        Err(Errno::ENOENT) => return Ok(()),
        Err(err) => return Err(err.into()),
    };
    v.enter(&e, sub.as_fd())?;
    walk_dir(sub.as_fd(), &mut path.to_vec(), v)?;
    v.leave(&e, sub.as_fd())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::at::{clear_dir, open_dir, remove_all_at, R};

    #[test]
    fn walk_visits_in_order_and_remove_all_does_not_follow_symlinks() {
        let t = tempfile::tempdir().unwrap();
        let outside = t.path().join("outside");
        std::fs::create_dir(&outside).unwrap();
        std::fs::write(outside.join("precious"), b"x").unwrap();
        let r = t.path().join("r");
        std::fs::create_dir_all(r.join("b/c")).unwrap();
        std::fs::write(r.join("a"), b"").unwrap();
        std::fs::write(r.join("b/c/f"), b"").unwrap();
        std::os::unix::fs::symlink(&outside, r.join("b/link")).unwrap();
        struct Log(Vec<String>);
        impl Visitor for Log {
            type Error = Errno;
            fn entry(&mut self, e: &WalkEntry<'_>) -> R<Step> {
                self.0.push(String::from_utf8_lossy(e.path).into_owned());
                Ok(Step::Descend)
            }
            fn leave(&mut self, e: &WalkEntry<'_>, _: BorrowedFd<'_>) -> R<()> {
                self.0.push(format!("<{}", String::from_utf8_lossy(e.path)));
                Ok(())
            }
        }
        let root = open_dir(&r).unwrap();
        let mut log = Log(Vec::new());
        walk(root.as_fd(), &mut log).unwrap();
        assert_eq!(
            log.0,
            ["a", "b", "b/c", "b/c/f", "<b/c", "b/link", "<b"].map(String::from)
        );
        remove_all_at(root.as_fd(), OsStr::new("b")).unwrap();
        assert_eq!(list_sorted(root.as_fd()).unwrap(), ["a"]);
        assert!(outside.join("precious").exists());
        clear_dir(root.as_fd()).unwrap();
        assert!(list_sorted(root.as_fd()).unwrap().is_empty());
    }
}
