//! "tar-split": a record of a layer tar's bytes minus the file contents, so the exact tar can be
//! rebuilt from the extracted layer dir (for `save` and `push`) without keeping a copy of it.
//!
//! The record is a stream (gzipped on disk, written while extracting, so memory stays flat):
//! `R` u64-LE length + raw bytes (headers, padding, contents not kept as files), or `F` u32-LE
//! path length + path + u64-LE size (read the file back from the layer dir). Records are
//! numbered from 0. When extraction later replaces a file whose content was recorded as `F`,
//! the old content is kept as a *patch* for that record number (a small side file).

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::BorrowedFd;

const FLUSH_AT: usize = 64 << 10;

/// Writes records as the tar streams by.
pub(crate) struct SplitWriter<'a> {
    out: &'a mut dyn Write,
    pending: Vec<u8>,
    count: u64,
}

impl<'a> SplitWriter<'a> {
    pub(crate) fn new(out: &'a mut dyn Write) -> SplitWriter<'a> {
        SplitWriter {
            out,
            pending: Vec::new(),
            count: 0,
        }
    }

    fn flush_raw(&mut self) -> io::Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        self.out.write_all(b"R")?;
        self.out
            .write_all(&(self.pending.len() as u64).to_le_bytes())?;
        self.out.write_all(&self.pending)?;
        self.pending.clear();
        self.count += 1;
        Ok(())
    }

    pub(crate) fn raw(&mut self, b: &[u8]) -> io::Result<()> {
        self.pending.extend_from_slice(b);
        if self.pending.len() >= FLUSH_AT {
            self.flush_raw()?;
        }
        Ok(())
    }

    /// Record a file reference; returns its record number.
    pub(crate) fn file(&mut self, path: &[u8], size: u64) -> io::Result<u64> {
        self.flush_raw()?;
        self.out.write_all(b"F")?;
        self.out.write_all(&(path.len() as u32).to_le_bytes())?;
        self.out.write_all(path)?;
        self.out.write_all(&size.to_le_bytes())?;
        self.count += 1;
        Ok(self.count - 1)
    }

    pub(crate) fn finish(mut self) -> io::Result<()> {
        self.flush_raw()?;
        self.out.flush()
    }
}

/// Patches: u64-LE record number, u64-LE length, bytes.
pub(crate) fn write_patches(patches: &[(u64, Vec<u8>)], out: &mut dyn Write) -> io::Result<()> {
    for (idx, data) in patches {
        out.write_all(&idx.to_le_bytes())?;
        out.write_all(&(data.len() as u64).to_le_bytes())?;
        out.write_all(data)?;
    }
    out.flush()
}

fn read_u64(r: &mut dyn Read) -> io::Result<Option<u64>> {
    let mut b = [0u8; 8];
    let mut got = 0;
    while got < 8 {
        let n = r.read(&mut b[got..])?;
        if n == 0 {
            return if got == 0 {
                Ok(None)
            } else {
                Err(io::ErrorKind::UnexpectedEof.into())
            };
        }
        got += n;
    }
    Ok(Some(u64::from_le_bytes(b)))
}

pub(crate) fn read_patches(r: &mut dyn Read) -> io::Result<HashMap<u64, Vec<u8>>> {
    let mut out = HashMap::new();
    while let Some(idx) = read_u64(r)? {
        let len = read_u64(r)?.ok_or(io::ErrorKind::UnexpectedEof)?;
        let mut data = Vec::new();
        r.take(len).read_to_end(&mut data)?;
        if data.len() as u64 != len {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        out.insert(idx, data);
    }
    Ok(out)
}

/// Stream the recorded tar to `out`, reading file contents from the layer dir `root`.
pub(crate) fn rebuild(
    split: &mut dyn Read,
    patches: &HashMap<u64, Vec<u8>>,
    root: BorrowedFd<'_>,
    out: &mut dyn Write,
) -> io::Result<()> {
    let bad = || io::Error::new(io::ErrorKind::InvalidData, "corrupt tar-split record");
    let mut idx = 0u64;
    loop {
        let mut tag = [0u8; 1];
        if split.read(&mut tag)? == 0 {
            return Ok(());
        }
        match tag[0] {
            b'R' => {
                let n = read_u64(split)?.ok_or_else(bad)?;
                let copied = io::copy(&mut split.take(n), out)?;
                if copied != n {
                    return Err(bad());
                }
            }
            b'F' => {
                let mut n = [0u8; 4];
                split.read_exact(&mut n)?;
                let mut path = vec![0u8; u32::from_le_bytes(n) as usize];
                split.read_exact(&mut path)?;
                let size = read_u64(split)?.ok_or_else(bad)?;
                if let Some(data) = patches.get(&idx) {
                    out.write_all(data)?;
                } else {
                    copy_file(root, &path, size, out)?;
                }
            }
            _ => return Err(bad()),
        }
        idx += 1;
    }
}

fn copy_file(root: BorrowedFd<'_>, path: &[u8], size: u64, out: &mut dyn Write) -> io::Result<()> {
    let shown = String::from_utf8_lossy(path).into_owned();
    // Beneath the layer root, no symlink anywhere on the way (the path was recorded from the
    // tar, and the layer dir is what extraction made of it).
    let fd = strata_fs::at::open_beneath(root, path, libc::O_RDONLY)?;
    let n = io::copy(&mut File::from(fd).take(size), out)?;
    if n != size {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!("layer file {shown} is shorter than recorded"),
        ));
    }
    Ok(())
}
