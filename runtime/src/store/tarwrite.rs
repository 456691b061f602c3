//! Write an overlay-format directory as a layer tar (the inverse of `extract`).
//!
//! Entries in lexical order, parents before children, names relative (`etc/passwd`, dirs with a
//! trailing `/`). Char 0/0 devices become `.wh.<name>`, opaque dirs get a `.wh..wh..opq` entry,
//! hard links inside the dir become link entries to the first path seen.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use super::{io_at, Result};

fn is_opaque(p: &Path) -> bool {
    for key in ["trusted.overlay.opaque", "user.overlay.opaque"] {
        if get_xattr(p, key).as_deref() == Some(b"y") {
            return true;
        }
    }
    false
}

fn get_xattr(p: &Path, key: &str) -> Option<Vec<u8>> {
    let cp = std::ffi::CString::new(p.as_os_str().as_bytes()).ok()?;
    let ck = std::ffi::CString::new(key).ok()?;
    let mut buf = vec![0u8; 256];
    // SAFETY: both strings are NUL-terminated and `buf` is valid for `buf.len()` bytes.
    let n =
        unsafe { libc::lgetxattr(cp.as_ptr(), ck.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if n < 0 {
        return None;
    }
    buf.truncate(n as usize);
    Some(buf)
}

fn header_for(meta: &fs::Metadata, kind: tar::EntryType, size: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(meta.mode() & 0o7777);
    h.set_uid(meta.uid() as u64);
    h.set_gid(meta.gid() as u64);
    h.set_mtime(meta.mtime().max(0) as u64);
    h.set_size(size);
    h
}

/// Write `dir` as a layer tar to `out`.
pub fn write_dir_tar(dir: &Path, out: &mut dyn Write) -> Result<()> {
    let mut b = tar::Builder::new(out);
    b.mode(tar::HeaderMode::Complete);
    let mut links: HashMap<(u64, u64), PathBuf> = HashMap::new();
    walk(dir, Path::new(""), &mut b, &mut links)?;
    b.into_inner().and_then(|w| w.flush()).map_err(io_at(dir))?;
    Ok(())
}

fn walk(
    base: &Path,
    rel: &Path,
    b: &mut tar::Builder<&mut dyn Write>,
    links: &mut HashMap<(u64, u64), PathBuf>,
) -> Result<()> {
    let abs = base.join(rel);
    let mut names: Vec<_> = fs::read_dir(&abs)
        .map_err(io_at(&abs))?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<io::Result<_>>()
        .map_err(io_at(&abs))?;
    names.sort();
    for name in names {
        let p = abs.join(&name);
        let r = rel.join(&name);
        let meta = fs::symlink_metadata(&p).map_err(io_at(&p))?;
        let ft = meta.file_type();
        if ft.is_char_device() && meta.rdev() == 0 {
            let mut h = header_for(&meta, tar::EntryType::Regular, 0);
            h.set_mode(0o644 & meta.mode());
            let mut wh = name.as_bytes().to_vec();
            wh.splice(0..0, b".wh.".iter().copied());
            let wr = rel.join(std::ffi::OsStr::from_bytes(&wh));
            b.append_data(&mut h, &wr, io::empty()).map_err(io_at(&p))?;
        } else if ft.is_dir() {
            let mut h = header_for(&meta, tar::EntryType::Directory, 0);
            b.append_data(&mut h, &r, io::empty()).map_err(io_at(&p))?;
            if is_opaque(&p) {
                let mut h = header_for(&meta, tar::EntryType::Regular, 0);
                h.set_mode(0o644);
                b.append_data(&mut h, r.join(".wh..wh..opq"), io::empty())
                    .map_err(io_at(&p))?;
            }
            walk(base, &r, b, links)?;
        } else if ft.is_symlink() {
            let target = fs::read_link(&p).map_err(io_at(&p))?;
            let mut h = header_for(&meta, tar::EntryType::Symlink, 0);
            b.append_link(&mut h, &r, &target).map_err(io_at(&p))?;
        } else if ft.is_file() {
            if meta.nlink() > 1 {
                if let Some(first) = links.get(&(meta.dev(), meta.ino())) {
                    let mut h = header_for(&meta, tar::EntryType::Link, 0);
                    b.append_link(&mut h, &r, first).map_err(io_at(&p))?;
                    continue;
                }
                links.insert((meta.dev(), meta.ino()), r.clone());
            }
            let f = File::options()
                .read(true)
                .custom_flags(libc::O_NOFOLLOW)
                .open(&p)
                .map_err(io_at(&p))?;
            let mut h = header_for(&meta, tar::EntryType::Regular, meta.len());
            b.append_data(&mut h, &r, f).map_err(io_at(&p))?;
        } else {
            let kind = if ft.is_char_device() {
                tar::EntryType::Char
            } else if ft.is_block_device() {
                tar::EntryType::Block
            } else if ft.is_fifo() {
                tar::EntryType::Fifo
            } else {
                continue; // sockets are not archived
            };
            let mut h = header_for(&meta, kind, 0);
            let dev = meta.rdev();
            h.set_device_major(libc::major(dev)).map_err(io_at(&p))?;
            h.set_device_minor(libc::minor(dev)).map_err(io_at(&p))?;
            b.append_data(&mut h, &r, io::empty()).map_err(io_at(&p))?;
        }
    }
    Ok(())
}
