//! `diff`: the changes of a container's upper dir against its image's layers, with Docker's
//! rules (SPEC §10.1, moby `pkg/archive/changes.go`).

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::{OsStr, OsString};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use nix::sys::stat::FileStat;
use strata_fs::at;
use strata_fs::format::{self, DirMarks, Name};

use super::{Change, ChangeKind, ChangesError, Filter};

pub(crate) fn is_dir(st: &FileStat) -> bool {
    st.st_mode & libc::S_IFMT == libc::S_IFDIR
}

/// Open a layer root (a host path the caller trusts) and read its overlay marks.
pub(crate) fn open_layer_root(path: &Path) -> Result<(OwnedFd, DirMarks), ChangesError> {
    let fd = at::open_dir(path).map_err(|source| ChangesError::Open {
        path: path.to_path_buf(),
        source,
    })?;
    let marks = format::read_dir_marks(fd.as_fd(), true);
    Ok((fd, marks))
}

/// The lower layers' view of one directory: the layers' dirs at that path, top first, cut after
/// the first opaque one (nothing below an opaque dir is visible).
pub(crate) struct LowerDir {
    /// The dir in each layer, with its overlay marks there.
    dirs: Vec<(OwnedFd, DirMarks)>,
}

impl LowerDir {
    pub(crate) fn empty() -> Self {
        LowerDir { dirs: Vec::new() }
    }

    /// Nothing is visible below (a new or opaque dir): a whiteout here hides nothing.
    fn is_empty(&self) -> bool {
        self.dirs.is_empty()
    }

    /// The root directories of `lowers` (top first).
    pub(crate) fn root(lowers: &[PathBuf]) -> Result<Self, ChangesError> {
        let mut dirs = Vec::with_capacity(lowers.len());
        for l in lowers {
            dirs.push(open_layer_root(l)?);
        }
        Ok(LowerDir { dirs })
    }

    /// `lstat` of the entry `name` as the merged lower layers show it, if visible.
    pub(crate) fn lookup(&self, name: &OsStr) -> Option<FileStat> {
        for (fd, marks) in &self.dirs {
            if let Ok(st) = at::fstatat(fd.as_fd(), name) {
                if format::is_whiteout(fd.as_fd(), name, &st, marks.xwhiteouts) {
                    return None;
                }
                return Some(st);
            }
            if marks.opaque || format::has_whiteout_entry(fd.as_fd(), name) {
                return None;
            }
        }
        None
    }

    /// The entries the merged lower layers show in this directory.
    pub(crate) fn list(&self) -> BTreeMap<OsString, FileStat> {
        let mut seen = BTreeMap::new();
        let mut hidden: BTreeSet<OsString> = BTreeSet::new();
        for (fd, marks) in &self.dirs {
            let Ok(names) = at::list_sorted(fd.as_fd()) else {
                continue;
            };
            // Whiteouts hide entries of the layers below only, never of their own layer.
            let mut layer_hidden = Vec::new();
            for name in names {
                match format::classify(name.as_bytes()) {
                    Name::Plain => {}
                    Name::Whiteout(t) => {
                        layer_hidden.push(OsStr::from_bytes(t).to_os_string());
                        continue;
                    }
                    Name::OpaqueMarker | Name::Meta | Name::Invalid => continue,
                }
                if seen.contains_key(&name) || hidden.contains(&name) {
                    continue;
                }
                match at::fstatat(fd.as_fd(), &name) {
                    Ok(st) if format::is_whiteout(fd.as_fd(), &name, &st, marks.xwhiteouts) => {
                        layer_hidden.push(name)
                    }
                    Ok(st) => {
                        seen.insert(name, st);
                    }
                    Err(_) => {}
                }
            }
            hidden.extend(layer_hidden);
            if marks.opaque {
                break;
            }
        }
        seen
    }

    /// The lower view of the child directory `name`.
    pub(crate) fn child(&self, name: &OsStr) -> LowerDir {
        let mut dirs = Vec::new();
        for (fd, marks) in &self.dirs {
            match at::fstatat(fd.as_fd(), name) {
                Ok(st) if is_dir(&st) => {
                    let Ok(child) = at::open_dir_at(fd.as_fd(), name) else {
                        break;
                    };
                    let child_marks = format::read_dir_marks(child.as_fd(), true);
                    let opaque = child_marks.opaque;
                    dirs.push((child, child_marks));
                    if opaque {
                        break;
                    }
                }
                // A file or a whiteout hides everything below it.
                Ok(_) => break,
                Err(_) => {
                    if marks.opaque || format::has_whiteout_entry(fd.as_fd(), name) {
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
    let (root, marks) = open_layer_root(upper)?;
    let lower = LowerDir::root(lowers)?;
    let mut out = Vec::new();
    walk(
        &root,
        marks.xwhiteouts,
        Path::new("/"),
        &lower,
        filter,
        &mut out,
    )?;
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
    xwhiteouts: bool,
    path: &Path,
    lower: &LowerDir,
    filter: &Filter,
    out: &mut Vec<Change>,
) -> Result<bool, ChangesError> {
    let names = at::list_sorted(dir.as_fd()).map_err(walk_err(path))?;
    let mut filtered = false;
    for name in &names {
        match format::classify(name.as_bytes()) {
            Name::Plain => {}
            // fuse-overlayfs 1.10 leaves a char 0/0 `.wh..opq` in every opaque dir it makes:
            // below a new or opaque dir no whiteout deletes anything, so none is reported.
            Name::Whiteout(_) if lower.is_empty() => continue,
            Name::Whiteout(target) => {
                let child = path.join(OsStr::from_bytes(target));
                if !filter.is_excluded(&child) {
                    out.push(Change::new(ChangeKind::Delete, child));
                }
                continue;
            }
            Name::OpaqueMarker | Name::Meta | Name::Invalid => continue,
        }
        let child = path.join(name);
        if filter.is_excluded(&child) {
            filtered = true;
            continue;
        }
        let st = match at::fstatat(dir.as_fd(), name) {
            Ok(st) => st,
            // Gone while we walked (a running container): nothing to report.
            Err(nix::errno::Errno::ENOENT) => continue,
            Err(e) => return Err(walk_err(&child)(e)),
        };
        if format::is_whiteout(dir.as_fd(), name, &st, xwhiteouts) {
            if !lower.is_empty() {
                out.push(Change::new(ChangeKind::Delete, child));
            }
            continue;
        }
        let lower_st = lower.lookup(name);
        if !is_dir(&st) {
            match lower_st {
                Some(_) => out.push(Change::new(ChangeKind::Modify, child)),
                None if filter.is_mountpoint(&child) && st.st_size == 0 => filtered = true,
                None => out.push(Change::new(ChangeKind::Add, child)),
            }
            continue;
        }
        let fd = match at::open_dir_at(dir.as_fd(), name) {
            Ok(fd) => fd,
            Err(nix::errno::Errno::ENOENT) => continue,
            Err(e) => return Err(walk_err(&child)(e)),
        };
        let marks = format::read_dir_marks(fd.as_fd(), true);
        let opaque = marks.opaque;
        let (own, child_lower, same_mode) = match &lower_st {
            None => (Some(ChangeKind::Add), LowerDir::empty(), false),
            Some(_) if opaque => (Some(ChangeKind::Delete), LowerDir::empty(), false),
            Some(l) if is_dir(l) => {
                let same_mode = l.st_mode == st.st_mode;
                let same = same_mode && l.st_size == st.st_size && same_time(l, &st);
                let own = (!same).then_some(ChangeKind::Modify);
                (own, lower.child(name), same_mode)
            }
            Some(_) => (Some(ChangeKind::Modify), LowerDir::empty(), false),
        };
        let mut sub = Vec::new();
        let runtime_made = walk(
            &fd,
            marks.xwhiteouts,
            &child,
            &child_lower,
            filter,
            &mut sub,
        )?;
        let quiet = sub.is_empty();
        match own {
            // Made by the runtime, not the container: an empty mountpoint (`/proc`,
            // `/dev/pts`…) or a dir holding only mounts Docker keeps in its init layer.
            Some(ChangeKind::Add)
                if quiet
                    && (runtime_made
                        || (filter.is_mountpoint(&child)
                            && at::list_sorted(fd.as_fd())
                                .map_err(walk_err(&child))?
                                .is_empty())) =>
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
