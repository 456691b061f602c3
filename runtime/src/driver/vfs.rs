//! `vfs`: the reference driver. The first mount applies every layer, bottom first, into the
//! upper dir (whiteouts and opaque dirs honoured, so the result is exactly the merged view), then
//! bind-mounts the upper dir at the mountpoint. Later mounts reuse the copy (a stamp file in the
//! work dir records that it is complete). Slow and space-hungry on purpose: it has no union
//! logic to get wrong, which makes it the yardstick for the other drivers.
//!
//! Because the upper dir holds the full tree, a vfs container's upper dir is not a diff against
//! its image; `diff`/`commit` must compare trees for this driver.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::mount::{mount, MsFlags};
use strata_fs::at::{self, Step, Visitor, WalkEntry};
use strata_fs::format::{self, Name};

use super::{detach, Driver, DriverError, Layers, Mounted};

const NAME: &str = "vfs";
const STAMP: &str = "vfs-complete";

/// Full-copy driver.
pub struct VfsDriver;

struct VfsMount {
    path: PathBuf,
}

impl Mounted for VfsMount {
    fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for VfsMount {
    fn drop(&mut self) {
        let _ = detach(NAME, &self.path);
    }
}

impl Driver for VfsDriver {
    fn name(&self) -> &'static str {
        NAME
    }

    fn mount(&self, layers: &Layers, mountpoint: &Path) -> Result<Box<dyn Mounted>, DriverError> {
        super::complete_lazy(NAME, layers, mountpoint)?;
        let stamp = layers.work.join(STAMP);
        if !stamp.exists() {
            for lower in layers.lowers.iter().rev() {
                apply_layer(lower, &layers.upper)?;
            }
            fs::write(&stamp, b"").map_err(|source| DriverError::Copy {
                path: stamp.clone(),
                source,
            })?;
        }
        mount(
            Some(&layers.upper),
            mountpoint,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(|e| DriverError::Mount {
            driver: NAME,
            mountpoint: mountpoint.to_path_buf(),
            source: e.into(),
        })?;
        Ok(Box::new(VfsMount {
            path: mountpoint.to_path_buf(),
        }))
    }
}

/// Apply one overlay-format layer dir on top of `dest`: whiteouts remove, opaque dirs replace,
/// everything else is copied with owner, mode, xattrs (not the format's own) and times. Both
/// trees are walked fd-relative ([`at::walk`]), so a symlink in either never leads outside it.
pub fn apply_layer(layer: &Path, dest: &Path) -> Result<(), DriverError> {
    let fail = |path: &Path, e: Errno| DriverError::Copy {
        path: path.to_path_buf(),
        source: e.into(),
    };
    let src = at::open_dir(layer).map_err(|e| fail(layer, e))?;
    let dst = at::open_dir(dest).map_err(|e| fail(dest, e))?;
    let xwhiteouts = format::read_dir_marks(src.as_fd(), false).xwhiteouts;
    let root = dst.try_clone().map_err(|e| DriverError::Copy {
        path: dest.to_path_buf(),
        source: e,
    })?;
    let mut apply = Apply {
        root,
        dirs: vec![(dst, xwhiteouts)],
        links: HashMap::new(),
    };
    at::walk(src.as_fd(), &mut apply)
        .map_err(|f| fail(&layer.join(OsStr::from_bytes(&f.path)), f.errno))
}

/// A failed step of [`apply_layer`]: the path below the layer root, and why.
struct Failed {
    path: Vec<u8>,
    errno: Errno,
}

impl From<Errno> for Failed {
    fn from(errno: Errno) -> Failed {
        Failed {
            path: Vec::new(),
            errno,
        }
    }
}

struct Apply {
    /// The destination root.
    root: OwnedFd,
    /// The destination dir of the layer dir being walked (top), and whether that layer dir
    /// holds xattr whiteouts.
    dirs: Vec<(OwnedFd, bool)>,
    /// `(dev, ino)` of multiply-linked layer files → their first copy (path below `root`).
    links: HashMap<(u64, u64), Vec<u8>>,
}

impl Apply {
    fn top(&self) -> Result<(BorrowedFd<'_>, bool), Errno> {
        self.dirs
            .last()
            .map(|(fd, x)| (fd.as_fd(), *x))
            .ok_or(Errno::EBADF)
    }

    fn copy(&mut self, e: &WalkEntry<'_>) -> Result<(), Errno> {
        let (dest, _) = self.dirs.last().ok_or(Errno::EBADF)?;
        let dest = dest.as_fd();
        let (src_dir, name, st) = (e.dir, e.name, e.stat);
        at::remove_all_at(dest, name)?;
        if st.st_nlink > 1 && st.st_mode & libc::S_IFMT != libc::S_IFDIR {
            if let Some(first) = self.links.get(&(st.st_dev, st.st_ino)) {
                let (dir, base) = match first.iter().rposition(|&b| b == b'/') {
                    Some(i) => (&first[..i], &first[i + 1..]),
                    None => (&b""[..], &first[..]),
                };
                let d = at::open_beneath(self.root.as_fd(), dir, libc::O_PATH | libc::O_DIRECTORY)?;
                return at::linkat(d.as_fd(), OsStr::from_bytes(base), dest, name);
            }
            self.links.insert((st.st_dev, st.st_ino), e.path.to_vec());
        }
        match st.st_mode & libc::S_IFMT {
            libc::S_IFLNK => {
                let target = at::readlinkat(src_dir, name)?;
                at::symlinkat(OsStr::from_bytes(&target), dest, name)?;
            }
            libc::S_IFREG => {
                let from = at::openat(src_dir, name, libc::O_RDONLY, 0)?;
                let flags = libc::O_CREAT | libc::O_EXCL | libc::O_WRONLY;
                let to = at::openat(dest, name, flags, 0o600)?;
                at::copy_data(from.as_fd(), to.as_fd(), st.st_size as u64)?;
            }
            fmt => at::mknodat(dest, name, fmt | (st.st_mode & 0o7777), st.st_rdev)?,
        }
        copy_meta(src_dir, dest, name, st)
    }
}

impl Visitor for Apply {
    type Error = Failed;

    fn entry(&mut self, e: &WalkEntry<'_>) -> Result<Step, Failed> {
        let at_path = |errno| Failed {
            path: e.path.to_vec(),
            errno,
        };
        let (dest, xwhiteouts) = self.top()?;
        match format::classify(e.name.as_bytes()) {
            Name::Plain => {}
            Name::Whiteout(target) => {
                at::remove_all_at(dest, OsStr::from_bytes(target)).map_err(at_path)?;
                return Ok(Step::Skip);
            }
            Name::OpaqueMarker | Name::Meta | Name::Invalid => return Ok(Step::Skip),
        }
        if format::is_whiteout(e.dir, e.name, e.stat, xwhiteouts) {
            at::remove_all_at(dest, e.name).map_err(at_path)?;
            return Ok(Step::Skip);
        }
        if e.is_dir() {
            return Ok(Step::Descend);
        }
        self.copy(e).map_err(at_path)?;
        Ok(Step::Skip)
    }

    fn enter(&mut self, e: &WalkEntry<'_>, dirfd: BorrowedFd<'_>) -> Result<(), Failed> {
        let at_path = |errno| Failed {
            path: e.path.to_vec(),
            errno,
        };
        let (dest, _) = self.top()?;
        let marks = format::read_dir_marks(dirfd, true);
        match at::fstatat(dest, e.name) {
            Ok(st) if st.st_mode & libc::S_IFMT == libc::S_IFDIR => {
                if marks.opaque {
                    let d = at::open_dir_at(dest, e.name).map_err(at_path)?;
                    at::clear_dir(d.as_fd()).map_err(at_path)?;
                }
            }
            Ok(_) => {
                at::remove_all_at(dest, e.name).map_err(at_path)?;
                at::mkdirat(dest, e.name, 0o700).map_err(at_path)?;
            }
            Err(_) => at::mkdirat(dest, e.name, 0o700).map_err(at_path)?,
        }
        let d = at::open_dir_at(dest, e.name).map_err(at_path)?;
        self.dirs.push((d, marks.xwhiteouts));
        Ok(())
    }

    fn leave(&mut self, e: &WalkEntry<'_>, _dirfd: BorrowedFd<'_>) -> Result<(), Failed> {
        self.dirs.pop();
        let (dest, _) = self.top()?;
        copy_meta(e.dir, dest, e.name, e.stat).map_err(|errno| Failed {
            path: e.path.to_vec(),
            errno,
        })
    }
}

/// Owner, mode, xattrs (best effort, not the overlay format's own) and times of `src/name`
/// onto `dst/name`.
fn copy_meta(
    src: BorrowedFd<'_>,
    dst: BorrowedFd<'_>,
    name: &OsStr,
    st: &libc::stat,
) -> Result<(), Errno> {
    at::fchownat(dst, name, st.st_uid, st.st_gid)?;
    if st.st_mode & libc::S_IFMT != libc::S_IFLNK {
        at::fchmodat(dst, name, st.st_mode & 0o7777)?;
    }
    let _ = format::copy_xattrs(src, name, dst, name);
    at::utimensat(dst, name, &at::times_of(st))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};

    fn setxattr(p: &Path, k: &str, v: &[u8]) {
        let d = at::open_dir(p.parent().unwrap()).unwrap();
        let name = p.file_name().unwrap();
        at::lsetxattr(d.as_fd(), name, OsStr::new(k), v, 0).unwrap();
    }

    #[test]
    fn apply_layer_copies_metadata_links_and_honours_whiteouts() {
        let t = tempfile::tempdir().unwrap();
        let (l, d) = (t.path().join("layer"), t.path().join("dest"));
        fs::create_dir_all(l.join("opq")).unwrap();
        fs::create_dir_all(d.join("opq")).unwrap();
        fs::create_dir_all(d.join("gone-dir/x")).unwrap();
        fs::write(d.join("opq/old"), b"").unwrap();
        fs::write(d.join("gone"), b"").unwrap();
        fs::write(t.path().join("outside"), b"keep").unwrap();
        fs::write(l.join("f"), b"data").unwrap();
        fs::set_permissions(l.join("f"), fs::Permissions::from_mode(0o4751)).unwrap();
        setxattr(&l.join("f"), "user.k", b"v");
        setxattr(&l.join("f"), "trusted.overlay.origin", b"o");
        fs::hard_link(l.join("f"), l.join("opq/link")).unwrap();
        std::os::unix::fs::symlink("/nowhere", l.join("sym")).unwrap();
        nix::unistd::mkfifo(
            &l.join("fifo"),
            nix::sys::stat::Mode::from_bits_truncate(0o640),
        )
        .unwrap();
        setxattr(&l.join("opq"), "trusted.overlay.opaque", b"y");
        fs::write(l.join(".wh.gone"), b"").unwrap();
        format::make_whiteout(at::open_dir(&l).unwrap().as_fd(), OsStr::new("gone-dir")).unwrap();
        // A hostile `.wh.` name (a whiteout of `..`) is not content and removes nothing.
        fs::write(l.join(".wh..."), b"").unwrap();

        apply_layer(&l, &d).unwrap();
        let names = |p: &Path| {
            let mut v: Vec<_> = fs::read_dir(p)
                .unwrap()
                .map(|e| e.unwrap().file_name().into_string().unwrap())
                .collect();
            v.sort();
            v
        };
        assert_eq!(names(&d), ["f", "fifo", "opq", "sym"]);
        assert_eq!(names(&d.join("opq")), ["link"]);
        assert_eq!(fs::read(t.path().join("outside")).unwrap(), b"keep");
        let f = fs::metadata(d.join("f")).unwrap();
        assert_eq!(f.mode() & 0o7777, 0o4751);
        assert_eq!(f.ino(), fs::metadata(d.join("opq/link")).unwrap().ino());
        assert_eq!(f.mtime(), fs::metadata(l.join("f")).unwrap().mtime());
        assert_eq!(fs::read(d.join("f")).unwrap(), b"data");
        let df = at::open_dir(&d).unwrap();
        let xs = at::xattrs(df.as_fd(), OsStr::new("f")).unwrap();
        assert_eq!(xs, vec![(b"user.k".to_vec(), b"v".to_vec())]);
        assert_eq!(fs::read_link(d.join("sym")).unwrap(), Path::new("/nowhere"));
        assert!(fs::symlink_metadata(d.join("fifo"))
            .unwrap()
            .file_type()
            .is_fifo());
        // The opaque xattr is format, not content.
        assert!(at::xattrs(df.as_fd(), OsStr::new("opq"))
            .unwrap()
            .is_empty());
    }
}
