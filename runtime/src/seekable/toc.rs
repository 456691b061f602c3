//! The TOC model shared by eStargz and zstd:chunked, its validation, and chunk decoding.

use std::collections::{BTreeMap, HashMap};
use std::io::{self, Read};
use std::path::{Component, Path};

use flate2::read::MultiGzDecoder;
use serde::{Deserialize, Serialize};

use super::{Compression, SeekableError};
use crate::digest::{Digest, Hasher};

/// The table of contents of a seekable blob (`{"version":1,"entries":[...]}`).
///
/// After [`super::parse_toc`] every entry's `name` (and a hardlink's `linkName`) is the
/// cleaned relative path (`bin/sh`; the root directory is `""`), and [`Toc::chunks`] lists every
/// regular file's data pieces.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Toc {
    pub version: u32,
    pub entries: Vec<TocEntry>,
    /// zstd:chunked only: digest of the tar-split data.
    #[serde(
        rename = "tarsplitDigest",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub tarsplit_digest: String,
    #[serde(skip)]
    pub(crate) chunks: Vec<Chunk>,
    /// `chunks[file_ranges[i].0..file_ranges[i].1]` are entry `i`'s chunks (empty if none).
    #[serde(skip)]
    pub(crate) file_ranges: Vec<(usize, usize)>,
    #[serde(skip)]
    pub(crate) compression: Option<Compression>,
    #[serde(skip)]
    pub(crate) toc_offset: u64,
}

fn is_zero_u64(v: &u64) -> bool {
    *v == 0
}
fn is_zero_u32(v: &u32) -> bool {
    *v == 0
}

/// One TOC entry (a tar entry, or a further chunk of a regular file: `type == "chunk"`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TocEntry {
    pub name: String,
    /// `dir`, `reg`, `symlink`, `hardlink`, `char`, `block`, `fifo` or `chunk`.
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default, skip_serializing_if = "is_zero_u64")]
    pub size: u64,
    /// RFC 3339, UTC; empty when zero or unknown.
    #[serde(rename = "modtime", default, skip_serializing_if = "String::is_empty")]
    pub mod_time: String,
    #[serde(rename = "linkName", default, skip_serializing_if = "String::is_empty")]
    pub link_name: String,
    #[serde(default, skip_serializing_if = "is_zero_u32")]
    pub mode: u32,
    #[serde(default, skip_serializing_if = "is_zero_u32")]
    pub uid: u32,
    #[serde(default, skip_serializing_if = "is_zero_u32")]
    pub gid: u32,
    #[serde(rename = "userName", default, skip_serializing_if = "String::is_empty")]
    pub user_name: String,
    #[serde(
        rename = "groupName",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub group_name: String,
    #[serde(rename = "devMajor", default, skip_serializing_if = "is_zero_u32")]
    pub dev_major: u32,
    #[serde(rename = "devMinor", default, skip_serializing_if = "is_zero_u32")]
    pub dev_minor: u32,
    /// Values are base64 in the JSON (Go's `map[string][]byte`).
    #[serde(
        default,
        skip_serializing_if = "BTreeMap::is_empty",
        with = "xattrs_b64"
    )]
    pub xattrs: BTreeMap<String, Vec<u8>>,
    /// sha256 of a regular file's whole content.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub digest: String,
    /// Blob offset where this file's (or chunk's) compressed data starts.
    #[serde(default, skip_serializing_if = "is_zero_u64")]
    pub offset: u64,
    /// zstd:chunked: blob offset where this chunk's compressed data ends.
    #[serde(rename = "endOffset", default, skip_serializing_if = "is_zero_u64")]
    pub end_offset: u64,
    #[serde(rename = "chunkOffset", default, skip_serializing_if = "is_zero_u64")]
    pub chunk_offset: u64,
    /// 0 means "to the end of the file".
    #[serde(rename = "chunkSize", default, skip_serializing_if = "is_zero_u64")]
    pub chunk_size: u64,
    #[serde(
        rename = "chunkDigest",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub chunk_digest: String,
    /// zstd:chunked: `""` (data) or `"zeros"` (a hole: no bytes in the blob).
    #[serde(
        rename = "chunkType",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub chunk_type: String,
    #[serde(rename = "innerOffset", default, skip_serializing_if = "is_zero_u64")]
    pub inner_offset: u64,
}

mod xattrs_b64 {
    use std::collections::BTreeMap;

    use base64::Engine as _;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer>(
        m: &BTreeMap<String, Vec<u8>>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        let enc: BTreeMap<&str, String> = m
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str(),
                    base64::engine::general_purpose::STANDARD.encode(v),
                )
            })
            .collect();
        enc.serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<BTreeMap<String, Vec<u8>>, D::Error> {
        let raw: BTreeMap<String, String> = BTreeMap::deserialize(d)?;
        raw.into_iter()
            .map(|(k, v)| {
                base64::engine::general_purpose::STANDARD
                    .decode(v.as_bytes())
                    .map(|b| (k, b))
                    .map_err(serde::de::Error::custom)
            })
            .collect()
    }
}

/// One verifiable piece of a regular file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk {
    /// Index in [`Toc::entries`] of the file's `reg` entry.
    pub entry: usize,
    /// The file's cleaned path.
    pub name: String,
    /// Compressed byte range `[start, end)` in the blob.
    pub start: u64,
    pub end: u64,
    /// Uncompressed bytes to skip after decompressing from `start`.
    pub inner_offset: u64,
    /// Offset of this chunk in the file, and its length.
    pub file_offset: u64,
    pub size: u64,
    /// sha256 of the chunk's uncompressed bytes.
    pub digest: Digest,
    pub compression: Compression,
    /// zstd:chunked `"zeros"` chunk: `size` zero bytes, nothing to fetch (`start == end`).
    pub zeros: bool,
}

impl Toc {
    /// Every regular file's chunks, in TOC order.
    pub fn chunks(&self) -> &[Chunk] {
        &self.chunks
    }

    /// The chunks of entry `index` (empty for anything but a non-empty regular file).
    pub fn file_chunks(&self, index: usize) -> &[Chunk] {
        match self.file_ranges.get(index) {
            Some(&(a, b)) => &self.chunks[a..b],
            None => &[],
        }
    }

    /// Blob offset of the TOC: every chunk's range ends at or before it.
    pub fn toc_offset(&self) -> u64 {
        self.toc_offset
    }

    /// Index of the entry named `path` (cleaned form; the last one if the tar repeats it).
    pub fn lookup(&self, path: &str) -> Option<usize> {
        self.entries
            .iter()
            .rposition(|e| e.name == path && e.kind != "chunk")
    }

    /// Number of entries before the `.prefetch.landmark` (files a run reads first), if any.
    pub fn prefetch_landmark(&self) -> Option<usize> {
        self.lookup(super::estargz::PREFETCH_LANDMARK)
    }
}

/// Clean a TOC name like the extractor cleans tar names: refuse absolute paths and `..`.
pub(crate) fn clean_name(raw: &str) -> Result<String, &'static str> {
    let mut out: Vec<&str> = Vec::new();
    for c in Path::new(raw).components() {
        match c {
            Component::Normal(n) => match n.to_str() {
                Some(s) => out.push(s),
                None => return Err("name is not UTF-8"),
            },
            Component::CurDir => {}
            Component::RootDir | Component::Prefix(_) => return Err("absolute path"),
            Component::ParentDir => return Err("path contains \"..\""),
        }
    }
    Ok(out.join("/"))
}

/// Validate a freshly parsed TOC in place: clean names, build the chunk list.
/// `data_end` is the blob offset every data range must end by (the TOC's offset).
pub(crate) fn validate(
    toc: &mut Toc,
    data_end: u64,
    compression: Compression,
) -> Result<(), SeekableError> {
    if toc.version != 1 {
        return Err(SeekableError::TocFormat("unsupported TOC version"));
    }
    toc.compression = Some(compression);
    toc.toc_offset = data_end;
    for e in toc.entries.iter_mut() {
        let cleaned = clean_name(&e.name).map_err(|why| SeekableError::Unsafe {
            name: e.name.clone(),
            why,
        })?;
        if cleaned.is_empty() && e.kind != "dir" {
            return Err(SeekableError::Entry {
                name: e.name.clone(),
                why: "empty name",
            });
        }
        e.name = cleaned;
        match e.kind.as_str() {
            "hardlink" => {
                e.link_name = clean_name(&e.link_name).map_err(|why| SeekableError::Unsafe {
                    name: e.name.clone(),
                    why,
                })?;
            }
            "dir" | "reg" | "symlink" | "char" | "block" | "fifo" | "chunk" => {}
            _ => {
                return Err(SeekableError::Entry {
                    name: e.name.clone(),
                    why: "unknown entry type",
                })
            }
        }
    }

    check_tree(&toc.entries)?;

    // A chunk's compressed data runs to the next boundary: the next larger offset of any data
    // entry (eStargz: a new gzip member; zstd:chunked: a new frame) or a file's `endOffset`
    // (zstd:chunked: the end of its last chunk), else to the TOC.
    let mut offsets: Vec<u64> = toc
        .entries
        .iter()
        .filter(|e| (e.kind == "reg" && e.size > 0) || e.kind == "chunk")
        .flat_map(|e| [e.offset, e.end_offset])
        .filter(|&o| o != 0)
        .collect();
    offsets.sort_unstable();
    offsets.dedup();

    let mut chunks: Vec<Chunk> = Vec::new();
    let mut ranges = vec![(0usize, 0usize); toc.entries.len()];
    // (reg index, file size, next expected file offset)
    let mut open: Option<(usize, u64, u64)> = None;
    for (i, e) in toc.entries.iter().enumerate() {
        let bad = |why: &'static str| SeekableError::Entry {
            name: e.name.clone(),
            why,
        };
        let reg_index = match e.kind.as_str() {
            "chunk" => match open {
                Some((r, size, next)) if toc.entries[r].name == e.name && next < size => r,
                _ => {
                    return Err(bad(
                        "chunk entry without an unfinished regular file before it",
                    ))
                }
            },
            _ => {
                if let Some((r, size, next)) = open.take() {
                    if next != size {
                        return Err(SeekableError::Entry {
                            name: toc.entries[r].name.clone(),
                            why: "chunks do not cover the file",
                        });
                    }
                }
                if e.kind != "reg" || e.size == 0 {
                    continue;
                }
                ranges[i].0 = chunks.len();
                open = Some((i, e.size, 0));
                i
            }
        };
        let Some((_, size, next)) = open else {
            return Err(bad("chunk entry without a regular file"));
        };
        if e.chunk_offset != next {
            return Err(bad("chunk offsets are not contiguous"));
        }
        let len = if e.chunk_size == 0 {
            size - next
        } else {
            e.chunk_size
        };
        if len == 0 || len > size - next {
            return Err(bad("chunk size out of range"));
        }
        let zeros = e.chunk_type == "zeros";
        if !zeros && !e.chunk_type.is_empty() {
            return Err(bad("unknown chunk type"));
        }
        let (start, end) = if zeros {
            (0, 0)
        } else {
            let start = e.offset;
            let end = match offsets.binary_search(&start) {
                Ok(k) => offsets.get(k + 1).copied().unwrap_or(data_end),
                Err(_) => return Err(bad("chunk offset not found")),
            };
            if start == 0 || start >= end || end > data_end {
                return Err(bad("chunk range outside the blob's data"));
            }
            (start, end)
        };
        let digest = if !e.chunk_digest.is_empty() {
            Digest::parse(&e.chunk_digest).map_err(|_| bad("invalid chunkDigest"))?
        } else if len == size && !toc.entries[reg_index].digest.is_empty() {
            // A single-chunk file: its file digest is the chunk digest.
            Digest::parse(&toc.entries[reg_index].digest).map_err(|_| bad("invalid digest"))?
        } else if zeros && len <= MAX_ZEROS {
            // A hole: its content is known without fetching anything.
            zeros_digest(len)
        } else {
            return Err(bad("chunk has no chunkDigest"));
        };
        chunks.push(Chunk {
            entry: reg_index,
            name: e.name.clone(),
            start,
            end,
            inner_offset: e.inner_offset,
            file_offset: next,
            size: len,
            digest,
            compression,
            zeros,
        });
        ranges[reg_index].1 = chunks.len();
        open = Some((reg_index, size, next + len));
    }
    if let Some((r, size, next)) = open {
        if next != size {
            return Err(SeekableError::Entry {
                name: toc.entries[r].name.clone(),
                why: "chunks do not cover the file",
            });
        }
    }
    toc.chunks = chunks;
    toc.file_ranges = ranges;
    Ok(())
}

/// Refuse what the extractor refuses beyond names: an entry below something the layer made a
/// symlink or a file (`a -> /etc`, then `a/passwd`), and a hard link to anything but an earlier
/// non-directory entry of the same layer.
fn check_tree(entries: &[TocEntry]) -> Result<(), SeekableError> {
    let mut kinds: HashMap<&str, &str> = HashMap::new();
    let beneath_dirs = |name: &str, kinds: &HashMap<&str, &str>| {
        name.match_indices('/')
            .all(|(i, _)| kinds.get(&name[..i]).is_none_or(|k| *k == "dir"))
    };
    for e in entries.iter().filter(|e| e.kind != "chunk") {
        if !beneath_dirs(&e.name, &kinds) {
            return Err(SeekableError::Unsafe {
                name: e.name.clone(),
                why: "parent is a symlink or not a directory",
            });
        }
        if e.kind == "hardlink" {
            let target_ok = beneath_dirs(&e.link_name, &kinds)
                && kinds.get(e.link_name.as_str()).is_some_and(|k| *k != "dir");
            if !target_ok {
                return Err(SeekableError::Unsafe {
                    name: e.name.clone(),
                    why: "hard link target is not in this layer",
                });
            }
        }
        kinds.insert(e.name.as_str(), e.kind.as_str());
    }
    Ok(())
}

/// Most we allocate before a chunk's bytes arrive (eStargz chunks are 4 MiB).
const MAX_PREALLOC: u64 = 64 << 20;
/// Largest "zeros" chunk (nothing to decompress, so nothing else bounds it).
const MAX_ZEROS: u64 = 256 << 20;

fn zeros_digest(len: u64) -> Digest {
    let block = [0u8; 1 << 16];
    let mut h = Hasher::new();
    let mut left = len;
    while left > 0 {
        let n = left.min(block.len() as u64) as usize;
        h.update(&block[..n]);
        left -= n as u64;
    }
    h.finish()
}

pub(crate) fn decode_chunk(compressed: &[u8], chunk: &Chunk) -> Result<Vec<u8>, SeekableError> {
    let fail = |source: io::Error| SeekableError::Decompress {
        name: chunk.name.clone(),
        file_offset: chunk.file_offset,
        source,
    };
    let out = if chunk.zeros {
        if chunk.size > MAX_ZEROS {
            return Err(fail(io::Error::new(
                io::ErrorKind::InvalidData,
                "zero chunk too large",
            )));
        }
        vec![0u8; chunk.size as usize]
    } else {
        let mut dec: Box<dyn Read + '_> = match chunk.compression {
            Compression::Gzip => Box::new(MultiGzDecoder::new(compressed)),
            Compression::Zstd => {
                Box::new(zstd::stream::read::Decoder::with_buffer(compressed).map_err(fail)?)
            }
        };
        let skipped =
            io::copy(&mut (&mut dec).take(chunk.inner_offset), &mut io::sink()).map_err(fail)?;
        if skipped != chunk.inner_offset {
            return Err(fail(io::ErrorKind::UnexpectedEof.into()));
        }
        let mut out = Vec::with_capacity(chunk.size.min(MAX_PREALLOC) as usize);
        dec.take(chunk.size).read_to_end(&mut out).map_err(fail)?;
        if out.len() as u64 != chunk.size {
            return Err(fail(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "chunk data ends early",
            )));
        }
        out
    };
    let mut h = Hasher::new();
    h.update(&out);
    let actual = h.finish();
    if actual != chunk.digest {
        return Err(SeekableError::ChunkDigest {
            name: chunk.name.clone(),
            file_offset: chunk.file_offset,
            expected: chunk.digest.clone(),
            actual,
        });
    }
    Ok(out)
}
