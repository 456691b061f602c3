//! Random access to the files of an archive: an indexed tar (path → byte range of the tar
//! file, read with `pread`) or a directory (OCI layout on disk).

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::{ArchiveError, Result};

/// Lexically normalize an archive path: drop `.`/empty parts and leading `/`, resolve `..`.
/// Returns `None` when `..` climbs above the root.
pub(crate) fn normalize(p: &str) -> Option<String> {
    let mut out: Vec<&str> = Vec::new();
    for c in p.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                out.pop()?;
            }
            c => out.push(c),
        }
    }
    Some(out.join("/"))
}

pub(crate) enum Source {
    Tar {
        file: File,
        /// path → (offset of content, size)
        files: HashMap<String, (u64, u64)>,
        /// path → normalized target path (symlinks and hard links)
        links: HashMap<String, String>,
    },
    Dir(PathBuf),
}

/// A byte range of a file, read with `pread` so several can share one descriptor.
pub(crate) struct Range<'a> {
    file: &'a File,
    pos: u64,
    end: u64,
}

impl Read for Range<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.end.saturating_sub(self.pos);
        if left == 0 {
            return Ok(0);
        }
        let n = (buf.len() as u64).min(left) as usize;
        let got = self.file.read_at(&mut buf[..n], self.pos)?;
        if got == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "archive is truncated",
            ));
        }
        self.pos += got as u64;
        Ok(got)
    }
}

impl Source {
    /// Index a tar file without extracting anything.
    pub(crate) fn index_tar(file: File) -> Result<Source> {
        let mut files = HashMap::new();
        let mut links = HashMap::new();
        {
            let mut ar = tar::Archive::new(&file);
            // Seek over contents: indexing reads headers only.
            let entries = ar.entries_with_seek().map_err(ArchiveError::Tar)?;
            for e in entries {
                let e = e.map_err(ArchiveError::Tar)?;
                let path = e.path().map_err(ArchiveError::Tar)?;
                let Some(path) = normalize(&path.to_string_lossy()) else {
                    continue;
                };
                let kind = e.header().entry_type();
                if kind.is_file() {
                    files.insert(path, (e.raw_file_position(), e.size()));
                } else if kind.is_symlink() || kind.is_hard_link() {
                    let Some(target) = e.link_name().map_err(ArchiveError::Tar)? else {
                        continue;
                    };
                    let target = target.to_string_lossy().into_owned();
                    let joined = if kind.is_symlink() && !target.starts_with('/') {
                        match path.rsplit_once('/') {
                            Some((dir, _)) => format!("{dir}/{target}"),
                            None => target,
                        }
                    } else {
                        target
                    };
                    if let Some(t) = normalize(&joined) {
                        links.insert(path, t);
                    }
                }
            }
        }
        if files.is_empty() {
            return Err(ArchiveError::Tar(io::Error::new(
                io::ErrorKind::InvalidData,
                "no files in archive",
            )));
        }
        Ok(Source::Tar { file, files, links })
    }

    fn resolve(&self, path: &str) -> Option<String> {
        let Source::Tar { files, links, .. } = self else {
            return normalize(path);
        };
        let mut p = normalize(path)?;
        for _ in 0..16 {
            if files.contains_key(&p) {
                return Some(p);
            }
            p = links.get(&p)?.clone();
        }
        None
    }

    pub(crate) fn has(&self, path: &str) -> bool {
        match self {
            Source::Tar { .. } => self.resolve(path).is_some(),
            Source::Dir(d) => normalize(path).is_some_and(|p| d.join(p).is_file()),
        }
    }

    /// Open a file of the archive for streaming.
    pub(crate) fn open(&self, path: &str) -> Result<Box<dyn Read + '_>> {
        match self {
            Source::Tar { file, files, .. } => {
                let p = self
                    .resolve(path)
                    .ok_or_else(|| ArchiveError::Missing(path.to_string()))?;
                let (off, size) = files[&p];
                Ok(Box::new(Range {
                    file,
                    pos: off,
                    end: off + size,
                }))
            }
            Source::Dir(d) => {
                let p = normalize(path).ok_or_else(|| ArchiveError::Missing(path.to_string()))?;
                let full = d.join(p);
                match File::open(&full) {
                    Ok(f) => Ok(Box::new(f)),
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {
                        Err(ArchiveError::Missing(path.to_string()))
                    }
                    Err(err) => Err(ArchiveError::Io { path: full, err }),
                }
            }
        }
    }

    /// Read a whole (small) file: manifests, configs. Capped at 64 MiB.
    pub(crate) fn read(&self, path: &str) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        self.open(path)?
            .take(64 << 20)
            .read_to_end(&mut out)
            .map_err(ArchiveError::Tar)?;
        Ok(out)
    }
}

pub(crate) fn is_dir(p: &Path) -> bool {
    p.is_dir()
}
