//! Read-only trees COPY reads from and looks into: the build context (one directory) and an
//! image (its layer dirs, top first, merged with overlay whiteout/opaque rules). Every access
//! is fd-relative with `O_NOFOLLOW`; symlinks are resolved here, inside the tree, never by the
//! host: in the context a link that leaves the context is refused, in an image it is clamped to
//! the image's root (as `RESOLVE_IN_ROOT` would).

use std::collections::{BTreeMap, HashSet};
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::rc::Rc;

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::{FileStat, Mode, SFlag};

/// Why a path could not be resolved.
#[derive(Debug)]
pub enum TreeError {
    /// A `..` or a symlink leaves the build context.
    Escapes,
    /// Too many symlinks.
    Loop,
    Io(Errno),
}

impl From<Errno> for TreeError {
    fn from(e: Errno) -> Self {
        TreeError::Io(e)
    }
}

/// One entry found in a tree.
#[derive(Clone)]
pub struct Node {
    pub st: FileStat,
    parent: Rc<OwnedFd>,
    pub name: OsString,
}

impl Node {
    pub fn kind(&self) -> SFlag {
        SFlag::from_bits_truncate(self.st.st_mode & SFlag::S_IFMT.bits())
    }
    pub fn is_dir(&self) -> bool {
        self.kind() == SFlag::S_IFDIR
    }
    pub fn is_symlink(&self) -> bool {
        self.kind() == SFlag::S_IFLNK
    }
    pub fn is_file(&self) -> bool {
        self.kind() == SFlag::S_IFREG
    }
    /// Permission bits (with setuid/setgid/sticky).
    pub fn mode(&self) -> u32 {
        self.st.st_mode & 0o7777
    }
    /// Open a regular file for reading.
    pub fn open(&self) -> Result<File, Errno> {
        let fd = nix::fcntl::openat(
            self.parent.as_fd(),
            self.name.as_os_str(),
            OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC | OFlag::O_NOCTTY,
            Mode::empty(),
        )?;
        Ok(File::from(fd))
    }
    pub fn readlink(&self) -> Result<OsString, Errno> {
        nix::fcntl::readlinkat(self.parent.as_fd(), self.name.as_os_str())
    }
}

/// A resolved path: its components (symlinks replaced) and the entry, if it exists.
pub type Resolved = (Vec<OsString>, Option<Node>);

/// A context directory or an image's layers.
pub struct Tree {
    /// Layer roots, top first (one for a context).
    layers: Vec<Rc<OwnedFd>>,
    /// Interpret whiteouts and opaque dirs (image layers).
    overlay: bool,
}

fn open_dir_path(p: &Path) -> Result<OwnedFd, Errno> {
    nix::fcntl::open(
        p,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
}

fn open_dir_at(dir: &OwnedFd, name: &OsStr) -> Result<OwnedFd, Errno> {
    nix::fcntl::openat(
        dir.as_fd(),
        name,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
}

fn lstat_at(dir: &OwnedFd, name: &OsStr) -> Result<FileStat, Errno> {
    nix::sys::stat::fstatat(dir.as_fd(), name, AtFlags::AT_SYMLINK_NOFOLLOW)
}

fn is_whiteout(st: &FileStat) -> bool {
    SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits()) == SFlag::S_IFCHR
        && st.st_rdev == 0
}

/// `trusted.overlay.opaque=y` (or the `user.` form) on an open directory.
fn is_opaque(dir: &OwnedFd) -> bool {
    for key in [c"trusted.overlay.opaque", c"user.overlay.opaque"] {
        let mut buf = [0u8; 4];
        // SAFETY: `dir` is an open directory fd, `key` a NUL-terminated string, `buf` writable
        // for its length.
        let n = unsafe {
            libc::fgetxattr(
                dir.as_raw_fd(),
                key.as_ptr(),
                buf.as_mut_ptr().cast(),
                buf.len(),
            )
        };
        if n == 1 && buf[0] == b'y' {
            return true;
        }
    }
    false
}

impl Tree {
    /// The build context at `dir`.
    pub fn context(dir: &Path) -> Result<Tree, Errno> {
        Ok(Tree {
            layers: vec![Rc::new(open_dir_path(dir)?)],
            overlay: false,
        })
    }

    /// An image's layer dirs, top first.
    pub fn image(layers: &[std::path::PathBuf]) -> Result<Tree, Errno> {
        let mut fds = Vec::with_capacity(layers.len());
        for l in layers {
            fds.push(Rc::new(open_dir_path(l)?));
        }
        Ok(Tree {
            layers: fds,
            overlay: true,
        })
    }

    /// The layers in which `comps` is a directory of the merged view, top first.
    fn dirs(&self, comps: &[OsString]) -> Result<Vec<Rc<OwnedFd>>, Errno> {
        let mut cur: Vec<Rc<OwnedFd>> = Vec::new();
        for l in &self.layers {
            cur.push(l.clone());
            if self.overlay && is_opaque(l) {
                break;
            }
        }
        for c in comps {
            let mut next = Vec::new();
            for fd in &cur {
                let st = match lstat_at(fd, c) {
                    Ok(st) => st,
                    Err(Errno::ENOENT) => continue,
                    Err(e) => return Err(e),
                };
                if SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits()) != SFlag::S_IFDIR {
                    // A file or whiteout hides the layers below.
                    break;
                }
                let d = open_dir_at(fd, c)?;
                let opaque = self.overlay && is_opaque(&d);
                next.push(Rc::new(d));
                if opaque {
                    break;
                }
            }
            if next.is_empty() {
                return Ok(next);
            }
            cur = next;
        }
        Ok(cur)
    }

    /// The entry at `comps` (no symlink followed), or None.
    pub fn stat(&self, comps: &[OsString]) -> Result<Option<Node>, Errno> {
        let Some((name, parent)) = comps.split_last() else {
            let root = self.dirs(&[])?;
            let Some(fd) = root.first() else {
                return Ok(None);
            };
            let st = nix::sys::stat::fstat(fd.as_fd())?;
            // The root itself: opened as "." of itself.
            return Ok(Some(Node {
                st,
                parent: fd.clone(),
                name: OsString::from("."),
            }));
        };
        for fd in self.dirs(parent)? {
            match lstat_at(&fd, name) {
                Ok(st) if self.overlay && is_whiteout(&st) => return Ok(None),
                Ok(st) => {
                    return Ok(Some(Node {
                        st,
                        parent: fd,
                        name: name.clone(),
                    }))
                }
                Err(Errno::ENOENT) => continue,
                Err(e) => return Err(e),
            }
        }
        Ok(None)
    }

    /// The entries of the directory at `comps`, by name.
    pub fn list(&self, comps: &[OsString]) -> Result<BTreeMap<OsString, Node>, Errno> {
        let mut out = BTreeMap::new();
        let mut seen: HashSet<OsString> = HashSet::new();
        for fd in self.dirs(comps)? {
            let dup = fd
                .try_clone()
                .map_err(|e| Errno::from_raw(e.raw_os_error().unwrap_or(5)))?;
            let mut dir = nix::dir::Dir::from_fd(dup)?;
            let mut names = Vec::new();
            for e in dir.iter() {
                let e = e?;
                let n = OsStr::from_bytes(e.file_name().to_bytes()).to_os_string();
                if n == "." || n == ".." {
                    continue;
                }
                names.push(n);
            }
            for n in names {
                if !seen.insert(n.clone()) {
                    continue;
                }
                if self.overlay && n.as_bytes().starts_with(b".wh.") {
                    continue;
                }
                let st = match lstat_at(&fd, &n) {
                    Ok(st) => st,
                    Err(Errno::ENOENT) => continue,
                    Err(e) => return Err(e),
                };
                if self.overlay && is_whiteout(&st) {
                    continue;
                }
                out.insert(
                    n.clone(),
                    Node {
                        st,
                        parent: fd.clone(),
                        name: n,
                    },
                );
            }
        }
        Ok(out)
    }

    /// Resolve `path` (relative to the tree's root; a leading `/` is the root) following
    /// symlinks inside the tree (the last one only with `follow_last`). Returns the resolved
    /// components and the entry, if it exists. None: a non-directory sits in the middle.
    pub fn resolve(&self, path: &str, follow_last: bool) -> Result<Option<Resolved>, TreeError> {
        let mut todo: std::collections::VecDeque<OsString> = path
            .split('/')
            .filter(|c| !c.is_empty())
            .map(OsString::from)
            .collect();
        let mut cur: Vec<OsString> = Vec::new();
        let mut links = 0;
        while let Some(c) = todo.pop_front() {
            if c == "." {
                continue;
            }
            if c == ".." {
                if cur.pop().is_none() && !self.overlay {
                    return Err(TreeError::Escapes);
                }
                continue;
            }
            cur.push(c);
            let last = todo.is_empty();
            let node = self.stat(&cur)?;
            match node {
                Some(n) if n.is_symlink() && (!last || follow_last) => {
                    links += 1;
                    if links > 40 {
                        return Err(TreeError::Loop);
                    }
                    let target = n.readlink()?;
                    cur.pop();
                    let t = target.as_bytes();
                    if t.starts_with(b"/") {
                        if !self.overlay {
                            return Err(TreeError::Escapes);
                        }
                        cur.clear();
                    }
                    for comp in t.split(|b| *b == b'/').rev() {
                        if !comp.is_empty() {
                            todo.push_front(OsStr::from_bytes(comp).to_os_string());
                        }
                    }
                }
                Some(n) if last => return Ok(Some((cur, Some(n)))),
                Some(n) if n.is_dir() => {}
                // A file in the middle of the path.
                Some(_) => return Ok(None),
                // Missing: the rest of the path is lexical (a destination to create).
                None => {
                    for c in todo {
                        if c == ".." {
                            cur.pop();
                        } else if c != "." {
                            cur.push(c);
                        }
                    }
                    return Ok(Some((cur, None)));
                }
            }
        }
        // The root itself.
        let root = self.stat(&[])?;
        Ok(Some((cur, root)))
    }

    /// Read a small regular file (e.g. `/etc/passwd`) through the tree; missing → empty.
    pub fn read_small(&self, path: &str) -> String {
        let Ok(Some((_, Some(n)))) = self.resolve(path, true) else {
            return String::new();
        };
        if !n.is_file() || n.st.st_size > 4 << 20 {
            return String::new();
        }
        let mut s = String::new();
        if let Ok(mut f) = n.open() {
            let _ = std::io::Read::read_to_string(&mut f, &mut s);
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn names(m: &BTreeMap<OsString, Node>) -> Vec<String> {
        m.keys().map(|k| k.to_string_lossy().into_owned()).collect()
    }

    #[test]
    fn context_symlinks_stay_inside() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("sub")).unwrap();
        std::fs::write(d.path().join("sub/f"), "x").unwrap();
        symlink("sub/f", d.path().join("in")).unwrap();
        symlink("../../etc/passwd", d.path().join("sub/out")).unwrap();
        symlink("/etc/passwd", d.path().join("abs")).unwrap();
        let t = Tree::context(d.path()).unwrap();
        let (comps, n) = t.resolve("in", true).unwrap().unwrap();
        assert_eq!(comps, [OsString::from("sub"), OsString::from("f")]);
        assert!(n.unwrap().is_file());
        assert!(matches!(
            t.resolve("sub/out", true),
            Err(TreeError::Escapes)
        ));
        assert!(matches!(t.resolve("abs", true), Err(TreeError::Escapes)));
        assert!(matches!(t.resolve("../x", true), Err(TreeError::Escapes)));
        let (_, n) = t.resolve("abs", false).unwrap().unwrap();
        assert!(n.unwrap().is_symlink());
        assert_eq!(t.read_small("sub/f"), "x");
    }

    #[test]
    fn merged_layers() {
        let top = tempfile::tempdir().unwrap();
        let bottom = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(bottom.path().join("d")).unwrap();
        std::fs::write(bottom.path().join("d/a"), "1").unwrap();
        std::fs::write(bottom.path().join("d/gone"), "1").unwrap();
        std::fs::create_dir_all(top.path().join("d")).unwrap();
        std::fs::write(top.path().join("d/b"), "2").unwrap();
        nix::sys::stat::mknod(&top.path().join("d/gone"), SFlag::S_IFCHR, Mode::empty(), 0)
            .unwrap();
        symlink("/d", top.path().join("link")).unwrap();
        let t = Tree::image(&[top.path().to_path_buf(), bottom.path().to_path_buf()]).unwrap();
        let comps = vec![OsString::from("d")];
        assert_eq!(names(&t.list(&comps).unwrap()), ["a", "b"]);
        assert!(t
            .stat(&[OsString::from("d"), OsString::from("gone")])
            .unwrap()
            .is_none());
        let (comps, n) = t.resolve("/link/../link/a", true).unwrap().unwrap();
        assert_eq!(comps, [OsString::from("d"), OsString::from("a")]);
        assert!(n.unwrap().is_file());
        // `..` above an image's root stays at the root.
        let (comps, _) = t.resolve("/../../d", true).unwrap().unwrap();
        assert_eq!(comps, [OsString::from("d")]);
    }
}
