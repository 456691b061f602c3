//! `diff`: the changes of a container's upper dir against its image's layers, with Docker's
//! rules (SPEC §10.1, moby `pkg/archive/changes.go`).

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::{OsStr, OsString};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::sys::stat::FileStat;

use super::fsutil::{self as fsu};
use super::{Change, ChangeKind, ChangesError, Filter};

/// The lower layers' view of one directory: the layers' dirs at that path, top first, cut after
/// the first opaque one (nothing below an opaque dir is visible).
pub(crate) struct LowerDir {
    /// `(dir fd, dir is opaque in that layer)`.
    dirs: Vec<(OwnedFd, bool)>,
}

impl LowerDir {
    pub(crate) fn empty() -> Self {
        LowerDir { dirs: Vec::new() }
    }

    /// The root directories of `lowers` (top first).
    pub(crate) fn root(lowers: &[PathBuf]) -> Result<Self, ChangesError> {
        let mut dirs = Vec::with_capacity(lowers.len());
        for l in lowers {
            let fd = fsu::open_root(l).map_err(|source| ChangesError::Open {
                path: l.clone(),
                source,
            })?;
            dirs.push((fd, false));
        }
        Ok(LowerDir { dirs })
    }

    /// `lstat` of the entry `name` as the merged lower layers show it, if visible.
    pub(crate) fn lookup(&self, name: &OsStr) -> Option<FileStat> {
        for (fd, opaque) in &self.dirs {
            if let Ok(st) = fsu::lstat_at(fd, name) {
                if fsu::is_whiteout(fd, name, &st) {
                    return None;
                }
                return Some(st);
            }
            if *opaque || fsu::has_wh_entry(fd, name) {
                return None;
            }
        }
        None
    }

    /// The entries the merged lower layers show in this directory.
    pub(crate) fn list(&self) -> BTreeMap<OsString, FileStat> {
        let mut seen = BTreeMap::new();
        let mut hidden: BTreeSet<OsString> = BTreeSet::new();
        for (fd, opaque) in &self.dirs {
            let Ok(names) = fsu::list_sorted(fd) else {
                continue;
            };
            // Whiteouts hide entries of the layers below only, never of their own layer.
            let mut layer_hidden = Vec::new();
            for name in names {
                if let Some(t) = fsu::wh_target(&name) {
                    layer_hidden.push(t.to_os_string());
                    continue;
                }
                if fsu::is_aufs_meta(&name) || seen.contains_key(&name) || hidden.contains(&name) {
                    continue;
                }
                match fsu::lstat_at(fd, &name) {
                    Ok(st) if fsu::is_whiteout(fd, &name, &st) => layer_hidden.push(name),
                    Ok(st) => {
                        seen.insert(name, st);
                    }
                    Err(_) => {}
                }
            }
            hidden.extend(layer_hidden);
            if *opaque {
                break;
            }
        }
        seen
    }

    /// The lower view of the child directory `name`.
    pub(crate) fn child(&self, name: &OsStr) -> LowerDir {
        let mut dirs = Vec::new();
        for (fd, opaque) in &self.dirs {
            match fsu::lstat_at(fd, name) {
                Ok(st) if fsu::is_dir(&st) => {
                    let Ok(child) = fsu::open_dir_at(fd, name) else {
                        break;
                    };
                    let child_opaque = fsu::is_opaque_dir(fd, name);
                    dirs.push((child, child_opaque));
                    if child_opaque {
                        break;
                    }
                }
                // A file or a whiteout hides everything below it.
                Ok(_) => break,
                Err(_) => {
                    if *opaque || fsu::has_wh_entry(fd, name) {
                        break;
                    }
                }
            }
        }
        LowerDir { dirs }
    }
}

/// The changes of `upper` against `lowers` (top first), as `docker diff` lists them: parents
/// before children, siblings by name, `/` never reported.
pub fn diff(upper: &Path, lowers: &[PathBuf]) -> Result<Vec<Change>, ChangesError> {
    diff_filtered(upper, lowers, &Filter::docker())
}

/// [`diff`] with an explicit [`Filter`] (e.g. the container's volumes added).
pub fn diff_filtered(
    upper: &Path,
    lowers: &[PathBuf],
    filter: &Filter,
) -> Result<Vec<Change>, ChangesError> {
    let root = fsu::open_root(upper).map_err(|source| ChangesError::Open {
        path: upper.to_path_buf(),
        source,
    })?;
    let lower = LowerDir::root(lowers)?;
    let mut out = Vec::new();
    walk(&root, Path::new("/"), &lower, filter, &mut out)?;
    Ok(out)
}

fn walk_err(path: &Path) -> impl FnOnce(nix::errno::Errno) -> ChangesError + '_ {
    move |source| ChangesError::Walk {
        path: path.to_path_buf(),
        source,
    }
}

/// Go's `sameFsTime`: equal, or equal seconds when one side lacks nanoseconds.
fn same_time(a: &FileStat, b: &FileStat) -> bool {
    a.st_mtime == b.st_mtime
        && (a.st_mtime_nsec == b.st_mtime_nsec || a.st_mtime_nsec == 0 || b.st_mtime_nsec == 0)
}

/// Walk one directory of the upper dir, appending its changes to `out`. Returns whether the
/// runtime left anything of its own in it (an entry the filter hides): such a directory, when
/// nothing else in it changed, is the runtime's doing and not reported either.
fn walk(
    dir: &OwnedFd,
    path: &Path,
    lower: &LowerDir,
    filter: &Filter,
    out: &mut Vec<Change>,
) -> Result<bool, ChangesError> {
    let names = fsu::list_sorted(dir).map_err(walk_err(path))?;
    let mut filtered = false;
    for name in &names {
        if let Some(target) = fsu::wh_target(name) {
            let child = path.join(target);
            if !filter.is_excluded(&child) {
                out.push(Change::new(ChangeKind::Delete, child));
            }
            continue;
        }
        if fsu::is_aufs_meta(name) {
            continue;
        }
        let child = path.join(name);
        if filter.is_excluded(&child) {
            filtered = true;
            continue;
        }
        let st = match fsu::lstat_at(dir, name) {
            Ok(st) => st,
            // Gone while we walked (a running container): nothing to report.
            Err(nix::errno::Errno::ENOENT) => continue,
            Err(e) => return Err(walk_err(&child)(e)),
        };
        if fsu::is_whiteout(dir, name, &st) {
            out.push(Change::new(ChangeKind::Delete, child));
            continue;
        }
        let lower_st = lower.lookup(name);
        if !fsu::is_dir(&st) {
            match lower_st {
                Some(_) => out.push(Change::new(ChangeKind::Modify, child)),
                None if filter.is_mountpoint(&child) && st.st_size == 0 => filtered = true,
                None => out.push(Change::new(ChangeKind::Add, child)),
            }
            continue;
        }
        let opaque = fsu::is_opaque_dir(dir, name);
        let (own, child_lower, same_mode) = match &lower_st {
            None => (Some(ChangeKind::Add), LowerDir::empty(), false),
            Some(_) if opaque => (Some(ChangeKind::Delete), LowerDir::empty(), false),
            Some(l) if fsu::is_dir(l) => {
                let same_mode = l.st_mode == st.st_mode;
                let same = same_mode && l.st_size == st.st_size && same_time(l, &st);
                let own = (!same).then_some(ChangeKind::Modify);
                (own, lower.child(name), same_mode)
            }
            Some(_) => (Some(ChangeKind::Modify), LowerDir::empty(), false),
        };
        let fd = match fsu::open_dir_at(dir.as_fd(), name) {
            Ok(fd) => fd,
            Err(nix::errno::Errno::ENOENT) => continue,
            Err(e) => return Err(walk_err(&child)(e)),
        };
        let mut sub = Vec::new();
        let runtime_made = walk(&fd, &child, &child_lower, filter, &mut sub)?;
        let quiet = sub.is_empty();
        match own {
            // Made by the runtime, not the container: an empty mountpoint (`/proc`,
            // `/dev/pts`…) or a dir holding only mounts Docker keeps in its init layer.
            Some(ChangeKind::Add)
                if quiet
                    && (runtime_made
                        || (filter.is_mountpoint(&child)
                            && fsu::list_sorted(&fd).map_err(walk_err(&child))?.is_empty())) =>
            {
                filtered = true;
            }
            // Only its times/size changed, because the runtime added its mounts here.
            Some(ChangeKind::Modify) if quiet && runtime_made && same_mode => filtered = true,
            Some(kind) => out.push(Change::new(kind, child)),
            None if !quiet => out.push(Change::new(ChangeKind::Modify, child)),
            None => {}
        }
        out.append(&mut sub);
    }
    Ok(filtered)
}
