//! Tree comparison for drivers whose writable dir holds the whole rootfs (`vfs`): the full tree
//! against the merged view of the lowers, with moby's `ChangesDirs` rules (`statDifferent`:
//! mode, owner, rdev, and for non-directories mtime and size). Added directories report their
//! whole subtree as `A`; a deleted directory is one `D`; every ancestor of a change is `C`.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use nix::sys::stat::FileStat;
use strata_fs::at;
use strata_fs::format::{self, Name};

use super::diff::{is_dir, open_layer_root, LowerDir};
use super::{Change, ChangeKind, ChangesError, Filter};

/// The changes of the full tree `full` against `lowers` (top first), in `diff` order.
pub fn diff_full_tree(
    full: &Path,
    lowers: &[PathBuf],
    filter: &Filter,
) -> Result<Vec<Change>, ChangesError> {
    let (root, _) = open_layer_root(full)?;
    let lower = LowerDir::root(lowers)?;
    let mut out = Vec::new();
    compare(&root, Path::new("/"), &lower, filter, &mut out)?;
    Ok(out)
}

fn walk_err(path: &Path) -> impl FnOnce(nix::errno::Errno) -> ChangesError + '_ {
    move |source| ChangesError::Walk {
        path: path.to_path_buf(),
        source,
    }
}

fn stat_different(old: &FileStat, new: &FileStat) -> bool {
    let dir = is_dir(old);
    old.st_mode != new.st_mode
        || old.st_uid != new.st_uid
        || old.st_gid != new.st_gid
        || old.st_rdev != new.st_rdev
        || (!dir
            && (old.st_mtime != new.st_mtime
                || old.st_mtime_nsec != new.st_mtime_nsec
                || old.st_size != new.st_size))
}

/// Compare the directory `dir` of the full tree with `lower` (empty below added dirs).
fn compare(
    dir: &OwnedFd,
    path: &Path,
    lower: &LowerDir,
    filter: &Filter,
    out: &mut Vec<Change>,
) -> Result<(), ChangesError> {
    let mut new: BTreeMap<OsString, FileStat> = BTreeMap::new();
    let xwhiteouts = format::read_dir_marks(dir.as_fd(), false).xwhiteouts;
    for name in at::list_sorted(dir.as_fd()).map_err(walk_err(path))? {
        if format::classify(name.as_bytes()) != Name::Plain {
            continue;
        }
        match at::fstatat(dir.as_fd(), &name) {
            Ok(st) if !format::is_whiteout(dir.as_fd(), &name, &st, xwhiteouts) => {
                new.insert(name, st);
            }
            Ok(_) | Err(nix::errno::Errno::ENOENT) => {}
            Err(e) => return Err(walk_err(&path.join(&name))(e)),
        }
    }
    let old = lower.list();
    let mut names: Vec<&OsString> = new.keys().chain(old.keys()).collect();
    names.sort();
    names.dedup();
    for name in names {
        let child = path.join(name);
        if filter.is_excluded(&child) {
            continue;
        }
        match (old.get(name), new.get(name)) {
            (Some(_), None) => out.push(Change::new(ChangeKind::Delete, child)),
            (None, Some(st)) => {
                if filter.is_mountpoint(&child) && (is_dir(st) || st.st_size == 0) {
                    continue;
                }
                out.push(Change::new(ChangeKind::Add, child.clone()));
                if is_dir(st) {
                    let fd = at::open_dir_at(dir.as_fd(), name).map_err(walk_err(&child))?;
                    compare(&fd, &child, &LowerDir::empty(), filter, out)?;
                }
            }
            (Some(o), Some(n)) => {
                let both_dirs = is_dir(o) && is_dir(n);
                let changed = stat_different(o, n) || (is_dir(o) != is_dir(n));
                let mut sub = Vec::new();
                if is_dir(n) {
                    let fd = at::open_dir_at(dir.as_fd(), name).map_err(walk_err(&child))?;
                    let child_lower = if both_dirs {
                        lower.child(name)
                    } else {
                        LowerDir::empty()
                    };
                    compare(&fd, &child, &child_lower, filter, &mut sub)?;
                }
                if changed || !sub.is_empty() {
                    out.push(Change::new(ChangeKind::Modify, child));
                }
                out.append(&mut sub);
            }
            (None, None) => {}
        }
    }
    Ok(())
}
