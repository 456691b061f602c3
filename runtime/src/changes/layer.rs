//! `write_layer_tar`: a container's changes as a layer tar (SPEC §3), gzip-compressed, with the
//! digests of both the compressed and the uncompressed stream computed in the same pass.
//!
//! The tar holds exactly what [`super::diff`] reports, in the same order (parents first):
//! added and changed entries as they are in the upper dir, deletions as `.wh.<name>` entries,
//! opaque dirs as the dir followed by `dir/.wh..wh..opq`. Hard links inside the layer become
//! tar hard links to the first path seen; xattrs (except the overlay's own) become PAX
//! `SCHILY.xattr.*` records, as moby's `pkg/archive` writes them.

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use flate2::write::GzEncoder;
use nix::sys::stat::FileStat;
use strata_fs::at;
use strata_fs::format;
use tar::{EntryType, Header};

use super::{Change, ChangeKind, ChangesError, Filter};
use crate::digest::{DiffId, Digest, HashingWriter};

/// What writing a layer produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerDigests {
    /// Digest of the uncompressed tar: the layer's diffID.
    pub diff_id: DiffId,
    /// Bytes of the uncompressed tar.
    pub size: u64,
    /// Digest of the gzip stream (the blob digest).
    pub compressed_digest: Digest,
    /// Bytes of the gzip stream.
    pub compressed_size: u64,
    /// Number of entries written (0: the layer is the empty tar).
    pub entries: usize,
}

/// Write the changes of `upper` against `lowers` (top first) to `out` as a gzip-compressed
/// layer tar; returns both digests. `out` receives exactly the blob bytes.
pub fn write_layer_tar<W: Write>(
    upper: &Path,
    lowers: &[PathBuf],
    filter: &Filter,
    out: W,
) -> Result<(LayerDigests, W), ChangesError> {
    let changes = super::diff::diff_filtered(upper, lowers, filter)?;
    write_changes_tar(upper, &changes, out)
}

/// Write `changes` (as [`super::diff`] returned them for `upper`) as a gzip-compressed layer tar.
pub fn write_changes_tar<W: Write>(
    upper: &Path,
    changes: &[Change],
    out: W,
) -> Result<(LayerDigests, W), ChangesError> {
    let io_err = |source: io::Error| ChangesError::Io {
        path: upper.to_path_buf(),
        source,
    };
    let compressed = HashingWriter::new(out);
    let gz = GzEncoder::new(compressed, flate2::Compression::default());
    let mut builder = tar::Builder::new(HashingWriter::new(gz));
    let mut writer = TarWriter::new(upper)?;
    for change in changes {
        writer.write(&mut builder, change)?;
    }
    let entries = writer.entries;
    let uncompressed = builder.into_inner().map_err(io_err)?;
    let (diff_id, size, gz) = uncompressed.finish();
    let compressed = gz.finish().map_err(io_err)?;
    let (compressed_digest, compressed_size, mut out) = compressed.finish();
    out.flush().map_err(io_err)?;
    Ok((
        LayerDigests {
            diff_id: DiffId::from(diff_id),
            size,
            compressed_digest,
            compressed_size,
            entries,
        },
        out,
    ))
}

/// Walks the upper dir along the change list, keeping the open dirs of the current path.
struct TarWriter {
    upper: PathBuf,
    /// Open dirs from the root down: `(container path, fd)`.
    stack: Vec<(PathBuf, OwnedFd)>,
    /// `(dev, ino)` of multiply-linked files already written → their tar path.
    links: HashMap<(u64, u64), PathBuf>,
    entries: usize,
}

impl TarWriter {
    fn new(upper: &Path) -> Result<Self, ChangesError> {
        let root = at::open_dir(upper).map_err(|source| ChangesError::Open {
            path: upper.to_path_buf(),
            source,
        })?;
        Ok(TarWriter {
            upper: upper.to_path_buf(),
            stack: vec![(PathBuf::from("/"), root)],
            links: HashMap::new(),
            entries: 0,
        })
    }

    fn walk_err(&self, path: &Path, source: nix::errno::Errno) -> ChangesError {
        ChangesError::Walk {
            path: path.to_path_buf(),
            source,
        }
    }

    fn io_err(&self, source: io::Error) -> ChangesError {
        ChangesError::Io {
            path: self.upper.clone(),
            source,
        }
    }

    /// Make the top of the stack the directory `dir` (a container path), opening components
    /// one at a time without following symlinks.
    fn enter(&mut self, dir: &Path) -> Result<&OwnedFd, ChangesError> {
        while let Some((top, _)) = self.stack.last() {
            if dir.starts_with(top) {
                break;
            }
            self.stack.pop();
        }
        let start = self.stack.len();
        let comps: Vec<OsString> = dir
            .components()
            .filter_map(|c| match c {
                Component::Normal(n) => Some(n.to_os_string()),
                _ => None,
            })
            .collect();
        for name in comps.iter().skip(start - 1) {
            let (top_path, top_fd) = self
                .stack
                .last()
                .ok_or_else(|| self.walk_err(dir, nix::errno::Errno::ENOENT))?;
            let child = top_path.join(name);
            let fd = at::open_dir_at(top_fd.as_fd(), name).map_err(|e| self.walk_err(&child, e))?;
            self.stack.push((child, fd));
        }
        let (_, fd) = self
            .stack
            .last()
            .ok_or_else(|| self.walk_err(dir, nix::errno::Errno::ENOENT))?;
        Ok(fd)
    }

    fn write<W: Write>(
        &mut self,
        builder: &mut tar::Builder<W>,
        change: &Change,
    ) -> Result<(), ChangesError> {
        let path = &change.path;
        let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
            return Ok(());
        };
        let parent = parent.to_path_buf();
        let name = name.to_os_string();
        let dir_fd = self.enter(&parent)?.try_clone();
        let dir_fd = dir_fd.map_err(|e| self.io_err(e))?;
        let st = match at::fstatat(dir_fd.as_fd(), &name) {
            Ok(st) => Some(st),
            Err(nix::errno::Errno::ENOENT) => None,
            Err(e) => return Err(self.walk_err(path, e)),
        };
        let rel = path.strip_prefix("/").unwrap_or(path).to_path_buf();
        match (change.kind, st) {
            (ChangeKind::Delete, Some(st)) if st.st_mode & libc::S_IFMT == libc::S_IFDIR => {
                // Opaque dir: the dir itself, then the marker inheriting its owner and mode.
                self.entry(builder, &dir_fd, &name, &rel, &st)?;
                let mut h = base_header(&st);
                h.set_entry_type(EntryType::Regular);
                h.set_mode(st.st_mode & 0o777);
                h.set_size(0);
                let marker = rel.join(OsStr::from_bytes(format::OPAQUE_MARKER));
                self.append(builder, h, &marker, &[], io::empty())
            }
            (ChangeKind::Delete, st) => {
                let mut h = match st {
                    Some(st) => base_header(&st),
                    None => Header::new_ustar(),
                };
                h.set_entry_type(EntryType::Regular);
                h.set_mode(0o600);
                h.set_size(0);
                let wh = format::whiteout_name(name.as_bytes());
                let wh_path = rel.with_file_name(OsStr::from_bytes(&wh));
                self.append(builder, h, &wh_path, &[], io::empty())
            }
            (_, Some(st)) => self.entry(builder, &dir_fd, &name, &rel, &st),
            // Vanished since the diff (running container, `--pause=false`): skip it.
            (_, None) => Ok(()),
        }
    }

    /// One entry for the file `name` in `dir`, stored at `rel`.
    fn entry<W: Write>(
        &mut self,
        builder: &mut tar::Builder<W>,
        dir: &OwnedFd,
        name: &OsStr,
        rel: &Path,
        st: &FileStat,
    ) -> Result<(), ChangesError> {
        // Content xattrs only (never the format's own), keys that are text (PAX records are).
        let xattrs: Vec<(String, Vec<u8>)> = at::xattrs(dir.as_fd(), name)
            .map_err(|e| self.walk_err(rel, e))?
            .into_iter()
            .filter(|(k, _)| !format::is_private_xattr(k))
            .filter_map(|(k, v)| Some((String::from_utf8(k).ok()?, v)))
            .collect();
        let mut h = base_header(st);
        match st.st_mode & libc::S_IFMT {
            libc::S_IFDIR => {
                h.set_entry_type(EntryType::Directory);
                let mut p = rel.as_os_str().to_os_string();
                p.push("/");
                self.append(builder, h, Path::new(&p), &xattrs, io::empty())
            }
            libc::S_IFLNK => {
                let target =
                    at::readlinkat(dir.as_fd(), name).map_err(|e| self.walk_err(rel, e))?;
                h.set_entry_type(EntryType::Symlink);
                self.append_link(
                    builder,
                    h,
                    rel,
                    Path::new(OsStr::from_bytes(&target)),
                    &xattrs,
                )
            }
            libc::S_IFREG => {
                let key = (st.st_dev, st.st_ino);
                if st.st_nlink > 1 {
                    if let Some(first) = self.links.get(&key).cloned() {
                        h.set_entry_type(EntryType::Link);
                        return self.append_link(builder, h, rel, &first, &xattrs);
                    }
                    self.links.insert(key, rel.to_path_buf());
                }
                let size = st.st_size.max(0) as u64;
                h.set_entry_type(EntryType::Regular);
                h.set_size(size);
                let fd = at::openat(dir.as_fd(), name, libc::O_RDONLY | libc::O_NOCTTY, 0)
                    .map_err(|e| self.walk_err(rel, e))?;
                let file = File::from(fd);
                // A file that shrinks or grows while we read (unpaused container) must not
                // corrupt the stream: exactly `size` bytes, zero-padded.
                let data = file.take(size).chain(io::repeat(0)).take(size);
                self.append(builder, h, rel, &xattrs, data)
            }
            libc::S_IFCHR | libc::S_IFBLK => {
                let kind = if st.st_mode & libc::S_IFMT == libc::S_IFCHR {
                    EntryType::Char
                } else {
                    EntryType::Block
                };
                h.set_entry_type(kind);
                let major = nix::sys::stat::major(st.st_rdev) as u32;
                let minor = nix::sys::stat::minor(st.st_rdev) as u32;
                h.set_device_major(major).map_err(|e| self.io_err(e))?;
                h.set_device_minor(minor).map_err(|e| self.io_err(e))?;
                self.append(builder, h, rel, &xattrs, io::empty())
            }
            libc::S_IFIFO => {
                h.set_entry_type(EntryType::Fifo);
                self.append(builder, h, rel, &xattrs, io::empty())
            }
            // Sockets cannot be stored in a tar (moby skips them too).
            _ => Ok(()),
        }
    }

    fn append_link<W: Write>(
        &mut self,
        builder: &mut tar::Builder<W>,
        mut h: Header,
        rel: &Path,
        target: &Path,
        xattrs: &[(String, Vec<u8>)],
    ) -> Result<(), ChangesError> {
        let mut extra = Vec::new();
        if h.set_link_name(target).is_err() {
            extra.push((
                "linkpath".to_string(),
                target.as_os_str().as_bytes().to_vec(),
            ));
            let bytes = target.as_os_str().as_bytes();
            let old = h.as_old_mut();
            let n = bytes.len().min(old.linkname.len());
            old.linkname[..n].copy_from_slice(&bytes[..n]);
        }
        extra.extend(xattrs.iter().cloned());
        self.append(builder, h, rel, &extra, io::empty())
    }

    /// Append an entry with PAX records for xattrs (and a long path when ustar cannot hold it).
    fn append<W: Write, R: Read>(
        &mut self,
        builder: &mut tar::Builder<W>,
        mut h: Header,
        path: &Path,
        records: &[(String, Vec<u8>)],
        data: R,
    ) -> Result<(), ChangesError> {
        let mut pax: Vec<(String, Vec<u8>)> = Vec::new();
        for (k, v) in records {
            if k == "linkpath" {
                pax.push((k.clone(), v.clone()));
            } else {
                pax.push((format!("SCHILY.xattr.{k}"), v.clone()));
            }
        }
        if h.set_path(path).is_err() {
            let bytes = path.as_os_str().as_bytes();
            pax.push(("path".to_string(), bytes.to_vec()));
            let old = h.as_old_mut();
            let n = bytes.len().min(old.name.len());
            old.name[..n].copy_from_slice(&bytes[..n]);
        }
        if !pax.is_empty() {
            builder
                .append_pax_extensions(pax.iter().map(|(k, v)| (k.as_str(), v.as_slice())))
                .map_err(|e| self.io_err(e))?;
        }
        h.set_cksum();
        builder.append(&h, data).map_err(|e| self.io_err(e))?;
        self.entries += 1;
        Ok(())
    }
}

/// A ustar header with the owner, mode bits and mtime (whole seconds, as moby writes) of `st`.
fn base_header(st: &FileStat) -> Header {
    let mut h = Header::new_ustar();
    h.set_mode(st.st_mode & 0o7777);
    h.set_uid(u64::from(st.st_uid));
    h.set_gid(u64::from(st.st_gid));
    h.set_mtime(st.st_mtime.max(0) as u64);
    h.set_size(0);
    h
}
