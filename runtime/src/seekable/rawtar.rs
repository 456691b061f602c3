//! A byte-faithful tar walker: it finds each entry's header blocks (extension headers
//! included) and content range without re-encoding anything, so a writer can copy the header
//! bytes through unchanged and re-chunk only the content.

use std::collections::BTreeMap;
use std::io::{self, BufReader, Read, Seek, SeekFrom};

use super::toc::{clean_name, TocEntry};
use super::SeekableError;

pub(crate) const BLOCK: u64 = 512;

/// One tar entry as found in the source.
#[derive(Debug, Clone)]
pub(crate) struct RawEntry {
    /// Every byte from the first extension header to the end of the entry's own header block.
    pub header: Vec<u8>,
    /// Source offset of the content, its length and its length rounded up to whole blocks.
    pub content_pos: u64,
    pub size: u64,
    pub padded: u64,
    /// The cleaned name and (hardlinks) cleaned target.
    pub clean: String,
    pub link_clean: String,
    /// TOC fields (no offsets or digests yet); `name` is the tar name as stored.
    pub meta: TocEntry,
}

pub(crate) fn padded(size: u64) -> u64 {
    size.div_ceil(BLOCK) * BLOCK
}

fn tar_err(e: io::Error) -> SeekableError {
    SeekableError::Tar(e)
}

fn nul_trim(b: &[u8]) -> &[u8] {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    &b[..end]
}

fn utf8(b: &[u8], shown: &[u8]) -> Result<String, SeekableError> {
    String::from_utf8(b.to_vec()).map_err(|_| SeekableError::UnsafeTar {
        name: String::from_utf8_lossy(shown).into_owned(),
        why: "name is not UTF-8",
    })
}

fn checksum_ok(block: &[u8]) -> bool {
    let h = tar::Header::from_byte_slice(block);
    let Ok(want) = h.cksum() else { return false };
    let sum: u32 = block
        .iter()
        .enumerate()
        .map(|(i, &b)| {
            if (148..156).contains(&i) {
                32
            } else {
                u32::from(b)
            }
        })
        .sum();
    sum == want
}

/// Every entry of a tar, and where its entries end.
pub(crate) struct Index {
    pub entries: Vec<RawEntry>,
    /// Source offset after the last entry (the end-of-archive blocks start here).
    pub end: u64,
    /// Source length.
    pub total: u64,
}

/// Walk `src` (a tar positioned at its start) and index every entry. Stops at the first zero
/// block (end of archive); what follows is not interpreted, as every tar reader does. The
/// entries' header and content ranges cover `[0, end)` without gaps.
pub(crate) fn index<R: Read + Seek>(mut src: R) -> Result<Index, SeekableError> {
    let total = src.seek(SeekFrom::End(0)).map_err(tar_err)?;
    src.rewind().map_err(tar_err)?;
    let mut r = BufReader::with_capacity(1 << 16, src);
    let mut pos: u64 = 0;
    let mut out = Vec::new();
    let mut pending: Vec<u8> = Vec::new();
    let mut long_name: Option<Vec<u8>> = None;
    let mut long_link: Option<Vec<u8>> = None;
    let mut pax: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    loop {
        let mut block = [0u8; BLOCK as usize];
        match r.read_exact(&mut block) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                // A tar without end-of-archive blocks: accept what it had, like `tar` does,
                // if it ends cleanly after an entry.
                if pos == total && pending.is_empty() {
                    return Ok(Index {
                        entries: out,
                        end: pos,
                        total,
                    });
                }
                return Err(SeekableError::TarFormat("archive is truncated"));
            }
            Err(e) => return Err(tar_err(e)),
        }
        if block.iter().all(|&b| b == 0) {
            if !pending.is_empty() {
                return Err(SeekableError::TarFormat(
                    "extension header without an entry",
                ));
            }
            return Ok(Index {
                entries: out,
                end: pos,
                total,
            });
        }
        pos += BLOCK;
        if !checksum_ok(&block) {
            return Err(SeekableError::TarFormat("header checksum mismatch"));
        }
        let h = tar::Header::from_byte_slice(&block);
        let size = h.entry_size().map_err(tar_err)?;
        let typeflag = block[156];
        match typeflag {
            b'x' | b'g' | b'L' | b'K' => {
                if size > 1 << 20 {
                    return Err(SeekableError::TarFormat("extension header too large"));
                }
                let mut data = vec![0u8; padded(size) as usize];
                r.read_exact(&mut data).map_err(tar_err)?;
                pos += data.len() as u64;
                let body = &data[..size as usize];
                match typeflag {
                    b'x' => {
                        for ext in tar::PaxExtensions::new(body) {
                            let ext = ext.map_err(tar_err)?;
                            let key = ext
                                .key()
                                .map_err(|_| SeekableError::TarFormat("PAX key is not UTF-8"))?;
                            pax.insert(key.to_string(), ext.value_bytes().to_vec());
                        }
                    }
                    b'L' => long_name = Some(nul_trim(body).to_vec()),
                    b'K' => long_link = Some(nul_trim(body).to_vec()),
                    _ => {} // global PAX header: copied through, not interpreted
                }
                pending.extend_from_slice(&block);
                pending.extend_from_slice(&data);
                continue;
            }
            _ => {}
        }
        let raw_name: Vec<u8> = match (pax.get("path"), &long_name) {
            (Some(p), _) => p.clone(),
            (None, Some(l)) => l.clone(),
            (None, None) => h.path_bytes().into_owned(),
        };
        let name = utf8(&raw_name, &raw_name)?;
        let raw_link: Vec<u8> = match (pax.get("linkpath"), &long_link) {
            (Some(p), _) => p.clone(),
            (None, Some(l)) => l.clone(),
            (None, None) => h
                .link_name_bytes()
                .map(|c| c.into_owned())
                .unwrap_or_default(),
        };
        let link = utf8(&raw_link, &raw_name)?;
        let size = match pax.get("size") {
            Some(s) => std::str::from_utf8(s)
                .ok()
                .and_then(|s| s.parse::<u64>().ok())
                .ok_or(SeekableError::TarFormat("invalid PAX size"))?,
            None => size,
        };
        let clean = clean_name(&name).map_err(|why| SeekableError::UnsafeTar {
            name: name.clone(),
            why,
        })?;
        let kind = match typeflag {
            b'0' | 0 | b'7' => "reg",
            b'1' => "hardlink",
            b'2' => "symlink",
            b'3' => "char",
            b'4' => "block",
            b'5' => "dir",
            b'6' => "fifo",
            other => {
                return Err(SeekableError::Unsupported {
                    name,
                    typeflag: char::from(other),
                })
            }
        };
        let link_clean = if kind == "hardlink" {
            clean_name(&link).map_err(|why| SeekableError::UnsafeTar {
                name: name.clone(),
                why,
            })?
        } else {
            String::new()
        };
        if clean.is_empty() && kind != "dir" {
            return Err(SeekableError::UnsafeTar {
                name,
                why: "empty name",
            });
        }
        let num = |k: &str, v: u64| -> Result<u64, SeekableError> {
            match pax.get(k) {
                Some(s) => std::str::from_utf8(s)
                    .ok()
                    .and_then(|s| s.parse::<u64>().ok())
                    .ok_or(SeekableError::TarFormat("invalid PAX number")),
                None => Ok(v),
            }
        };
        let id32 =
            |v: u64| u32::try_from(v).map_err(|_| SeekableError::TarFormat("id out of range"));
        let uid = id32(num("uid", h.uid().map_err(tar_err)?)?)?;
        let gid = id32(num("gid", h.gid().map_err(tar_err)?)?)?;
        let mtime = match pax.get("mtime") {
            Some(s) => std::str::from_utf8(s)
                .ok()
                .and_then(|s| s.parse::<f64>().ok())
                .map(|f| f.round().max(0.0) as u64)
                .ok_or(SeekableError::TarFormat("invalid PAX mtime"))?,
            None => h.mtime().map_err(tar_err)?,
        };
        let text = |k: &str, v: Option<&[u8]>| -> String {
            match pax.get(k) {
                Some(s) => String::from_utf8_lossy(s).into_owned(),
                None => String::from_utf8_lossy(v.unwrap_or_default()).into_owned(),
            }
        };
        let user_name = text("uname", h.username_bytes());
        let group_name = text("gname", h.groupname_bytes());
        let xattrs: BTreeMap<String, Vec<u8>> = pax
            .iter()
            .filter_map(|(k, v)| {
                k.strip_prefix("SCHILY.xattr.")
                    .map(|n| (n.to_string(), v.clone()))
            })
            .collect();
        let (dev_major, dev_minor) = if kind == "char" || kind == "block" {
            (
                h.device_major().map_err(tar_err)?.unwrap_or(0),
                h.device_minor().map_err(tar_err)?.unwrap_or(0),
            )
        } else {
            (0, 0)
        };
        let meta = TocEntry {
            name: name.clone(),
            kind: kind.to_string(),
            size: if kind == "reg" { size } else { 0 },
            mod_time: format_modtime(mtime),
            link_name: if kind == "hardlink" || kind == "symlink" {
                link
            } else {
                String::new()
            },
            mode: h.mode().map_err(tar_err)?,
            uid,
            gid,
            user_name,
            group_name,
            dev_major,
            dev_minor,
            xattrs,
            ..TocEntry::default()
        };
        pending.extend_from_slice(&block);
        let content_pos = pos;
        let pad = padded(size);
        if content_pos.checked_add(pad).is_none_or(|end| end > total) {
            return Err(SeekableError::TarFormat("archive is truncated"));
        }
        let skip = i64::try_from(pad).map_err(|_| SeekableError::TarFormat("entry too large"))?;
        r.seek_relative(skip).map_err(tar_err)?;
        pos += pad;
        out.push(RawEntry {
            header: std::mem::take(&mut pending),
            content_pos,
            size,
            padded: pad,
            clean,
            link_clean,
            meta,
        });
        long_name = None;
        long_link = None;
        pax.clear();
    }
}

/// eStargz's `modtime`: RFC 3339 in UTC, empty for the epoch.
pub(crate) fn format_modtime(secs: u64) -> String {
    if secs == 0 {
        return String::new();
    }
    i64::try_from(secs)
        .ok()
        .and_then(|s| chrono::DateTime::<chrono::Utc>::from_timestamp(s, 0))
        .map(|t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_default()
}
