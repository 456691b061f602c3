//! zstd:chunked (containers/storage `pkg/chunked`): a zstd layer whose file contents are
//! separate zstd frames, with the TOC ("manifest", zstd-compressed JSON with eStargz's field
//! names plus `endOffset`) and, in newer writers, the tar-split in zstd *skippable* frames near
//! the end, and a footer skippable frame last. Skippable frames decompress to nothing, so any zstd
//! reader sees the original tar: the diffID is the same as the gzip layer's.
//!
//! The layer annotations say where the manifest is and its digest, so a reader needs one Range
//! request for the TOC: [`parse_position`] of [`MANIFEST_POSITION_ANNOTATION`], then
//! [`parse_toc`] of those bytes with [`MANIFEST_CHECKSUM_ANNOTATION`]. [`read_footer`] finds the
//! same position from the blob's last [`FOOTER_SIZE`] bytes when the annotations are absent.
//!
//! Two footers exist: 40 bytes of payload (manifest offset, compressed and uncompressed
//! length, type, magic `GnUlInUx`; containers/storage before 1.45) and 64 bytes (adds the
//! tar-split's offset and lengths before the magic). Older writers also used the annotation
//! names without `github.` ([`LEGACY_MANIFEST_CHECKSUM_ANNOTATION`]).

use std::io::Read;

use super::toc::{self, Toc};
use super::{Compression, SeekableError};
use crate::digest::Digest;

/// Layer annotation: digest of the compressed manifest.
pub const MANIFEST_CHECKSUM_ANNOTATION: &str =
    "io.github.containers.zstd-chunked.manifest-checksum";
/// Layer annotation: `offset:compressed length:uncompressed length:type` of the manifest.
pub const MANIFEST_POSITION_ANNOTATION: &str =
    "io.github.containers.zstd-chunked.manifest-position";
/// The same annotations as containers/storage before 1.45 named them.
pub const LEGACY_MANIFEST_CHECKSUM_ANNOTATION: &str =
    "io.containers.zstd-chunked.manifest-checksum";
pub const LEGACY_MANIFEST_POSITION_ANNOTATION: &str =
    "io.containers.zstd-chunked.manifest-position";
/// Bytes to Range-fetch from the blob's end to be sure to hold either footer.
pub const FOOTER_SIZE: usize = 72;
const MAGIC: &[u8; 8] = b"GnUlInUx";
const SKIPPABLE_MAGIC: u32 = 0x184D_2A50;
/// The only manifest type: the CRFS-style JSON TOC.
const MANIFEST_TYPE_CRFS: u64 = 1;
/// Largest manifest we accept (uncompressed JSON).
const MAX_MANIFEST_SIZE: u64 = 256 << 20;

/// Where the manifest is in the blob.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ManifestPosition {
    /// Offset of the compressed manifest (after its skippable frame header).
    pub offset: u64,
    pub compressed_len: u64,
    pub uncompressed_len: u64,
    pub kind: u64,
}

/// Parse the `manifest-position` annotation (`offset:clen:ulen:type`).
pub fn parse_position(s: &str) -> Result<ManifestPosition, SeekableError> {
    let bad = || SeekableError::ManifestPosition(s.to_string());
    let v: Vec<u64> = s
        .split(':')
        .map(|p| p.parse::<u64>().map_err(|_| bad()))
        .collect::<Result<_, _>>()?;
    match v[..] {
        [offset, compressed_len, uncompressed_len, kind] => Ok(ManifestPosition {
            offset,
            compressed_len,
            uncompressed_len,
            kind,
        }),
        _ => Err(bad()),
    }
}

fn u64_at(b: &[u8], i: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[i..i + 8]);
    u64::from_le_bytes(a)
}

/// The manifest position from the blob's last bytes (`tail` ends where the blob ends).
pub fn read_footer(tail: &[u8]) -> Result<ManifestPosition, SeekableError> {
    for payload in [64usize, 40] {
        let frame = payload + 8;
        if tail.len() < frame {
            continue;
        }
        let f = &tail[tail.len() - frame..];
        let magic = u32::from_le_bytes([f[0], f[1], f[2], f[3]]);
        let len = u32::from_le_bytes([f[4], f[5], f[6], f[7]]) as usize;
        if magic != SKIPPABLE_MAGIC || len != payload || &f[frame - 8..] != MAGIC {
            continue;
        }
        let p = &f[8..];
        return Ok(ManifestPosition {
            offset: u64_at(p, 0),
            compressed_len: u64_at(p, 8),
            uncompressed_len: u64_at(p, 16),
            kind: u64_at(p, 24),
        });
    }
    Err(SeekableError::ZstdFooter(
        "no zstd:chunked footer at the end of the blob",
    ))
}

/// Decompress and verify the manifest. `compressed` are the blob's bytes
/// `[pos.offset, pos.offset + pos.compressed_len)`; `expected_checksum` is the layer's
/// [`MANIFEST_CHECKSUM_ANNOTATION`] (a mismatch is an error).
pub fn parse_toc(
    compressed: &[u8],
    pos: &ManifestPosition,
    expected_checksum: Option<&str>,
) -> Result<Toc, SeekableError> {
    if pos.kind != MANIFEST_TYPE_CRFS {
        return Err(SeekableError::TocFormat(
            "unknown zstd:chunked manifest type",
        ));
    }
    if compressed.len() as u64 != pos.compressed_len {
        return Err(SeekableError::TocFormat(
            "manifest length differs from its position",
        ));
    }
    // The manifest sits in a skippable frame: its 8-byte header is before `offset`.
    if pos.offset < 8 || pos.uncompressed_len > MAX_MANIFEST_SIZE {
        return Err(SeekableError::TocFormat("manifest position out of range"));
    }
    let actual = Digest::of_bytes(compressed);
    if let Some(expected) = expected_checksum {
        if expected != actual.as_str() {
            return Err(SeekableError::TocDigest {
                expected: expected.to_string(),
                actual,
            });
        }
    }
    let dec = zstd::stream::read::Decoder::with_buffer(compressed)
        .map_err(|_| SeekableError::TocFormat("manifest is not zstd"))?;
    let mut json = Vec::with_capacity(pos.uncompressed_len.min(1 << 20) as usize);
    dec.take(pos.uncompressed_len + 1)
        .read_to_end(&mut json)
        .map_err(|_| SeekableError::TocFormat("manifest does not decompress"))?;
    if json.len() as u64 != pos.uncompressed_len {
        return Err(SeekableError::TocFormat(
            "manifest length differs from its position",
        ));
    }
    let mut toc: Toc = serde_json::from_slice(&json).map_err(SeekableError::TocJson)?;
    toc::validate(&mut toc, pos.offset - 8, Compression::Zstd)?;
    Ok(toc)
}

/// How to write a zstd:chunked blob.
#[derive(Debug, Clone)]
pub struct ZstdChunkedOptions {
    /// Files larger than this are split into chunks of this size.
    pub chunk_size: u64,
    /// zstd level.
    pub level: i32,
}

impl Default for ZstdChunkedOptions {
    fn default() -> Self {
        ZstdChunkedOptions {
            chunk_size: super::estargz::DEFAULT_CHUNK_SIZE,
            level: 3,
        }
    }
}

/// What [`write_zstd_chunked`] produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZstdChunkedInfo {
    pub blob_digest: Digest,
    pub size: u64,
    /// sha256 of the decompressed blob: the input tar's own digest (nothing is added).
    pub diff_id: crate::digest::DiffId,
    pub uncompressed_size: u64,
    /// sha256 of the compressed manifest (the checksum annotation).
    pub manifest_checksum: Digest,
    pub position: ManifestPosition,
}

/// The layer descriptor annotations of a blob [`write_zstd_chunked`] wrote. It writes the
/// manifest without tar-split (the footer of containers/storage before 1.45), so it names it
/// with that version's annotation keys: newer readers, which require the tar-split, then pull
/// the layer as the plain zstd layer it also is instead of failing on it.
pub fn annotations(info: &ZstdChunkedInfo) -> Vec<(String, String)> {
    let p = &info.position;
    vec![
        (
            LEGACY_MANIFEST_CHECKSUM_ANNOTATION.to_string(),
            info.manifest_checksum.to_string(),
        ),
        (
            LEGACY_MANIFEST_POSITION_ANNOTATION.to_string(),
            format!(
                "{}:{}:{}:{}",
                p.offset, p.compressed_len, p.uncompressed_len, p.kind
            ),
        ),
    ]
}

fn skippable_frame(payload: &[u8]) -> Result<Vec<u8>, SeekableError> {
    let len = u32::try_from(payload.len())
        .map_err(|_| SeekableError::TocFormat("manifest too large for a skippable frame"))?;
    let mut f = Vec::with_capacity(payload.len() + 8);
    f.extend_from_slice(&SKIPPABLE_MAGIC.to_le_bytes());
    f.extend_from_slice(&len.to_le_bytes());
    f.extend_from_slice(payload);
    Ok(f)
}

/// Re-encode the uncompressed layer tar `src` as zstd:chunked. The blob decompresses to
/// exactly the input (same diffID): tar headers and padding go into small frames, every
/// regular file's content into frames of its own (one per chunk), then the manifest and the
/// footer in skippable frames. Hostile names are refused as the extractor refuses them.
pub fn write_zstd_chunked<R: std::io::Read + std::io::Seek, W: std::io::Write>(
    mut src: R,
    out: W,
    opts: &ZstdChunkedOptions,
) -> Result<ZstdChunkedInfo, SeekableError> {
    use std::io::SeekFrom;

    use super::estargz::{copy_exact, Out};
    use super::toc::TocEntry;
    use crate::digest::Hasher;

    let index = super::rawtar::index(&mut src)?;
    let chunk_size = opts.chunk_size.max(1);
    let w = SeekableError::Write;
    let compress = |b: &[u8]| zstd::bulk::compress(b, opts.level).map_err(w);
    let mut out = Out::new(out);
    let mut diff = Hasher::new();
    let mut pending: Vec<u8> = Vec::new();
    let mut tocv = Toc {
        version: 1,
        ..Toc::default()
    };
    let mut buf = vec![0u8; 1 << 16];
    let flush = |pending: &mut Vec<u8>, out: &mut Out<W>| -> Result<(), SeekableError> {
        if !pending.is_empty() {
            out.put(&compress(pending)?).map_err(w)?;
            pending.clear();
        }
        Ok(())
    };
    for e in &index.entries {
        pending.extend_from_slice(&e.header);
        diff.update(&e.header);
        src.seek(SeekFrom::Start(e.content_pos))
            .map_err(SeekableError::Tar)?;
        let mut ent = e.meta.clone();
        if e.meta.kind == "reg" && e.size > 0 {
            flush(&mut pending, &mut out)?;
            let mut file = Hasher::new();
            let mut written = 0u64;
            let first_index = tocv.entries.len();
            while written < e.size {
                let this = (e.size - written).min(chunk_size);
                let mut data = Vec::with_capacity(this as usize);
                copy_exact(&mut src, this, &mut buf, |b| {
                    data.extend_from_slice(b);
                    Ok(())
                })
                .map_err(SeekableError::Tar)?;
                file.update(&data);
                diff.update(&data);
                if written > 0 {
                    ent = TocEntry {
                        name: e.meta.name.clone(),
                        kind: "chunk".to_string(),
                        ..TocEntry::default()
                    };
                }
                ent.offset = out.n;
                ent.chunk_offset = written;
                ent.chunk_size = this;
                ent.chunk_digest = Digest::of_bytes(&data).to_string();
                out.put(&compress(&data)?).map_err(w)?;
                tocv.entries.push(std::mem::take(&mut ent));
                written += this;
            }
            tocv.entries[first_index].end_offset = out.n;
            tocv.entries[first_index].digest = file.finish().to_string();
            copy_exact(&mut src, e.padded - e.size, &mut buf, |b| {
                pending.extend_from_slice(b);
                diff.update(b);
                Ok(())
            })
            .map_err(SeekableError::Tar)?;
        } else {
            if e.meta.kind == "reg" {
                ent.digest = Digest::of_bytes(&[]).to_string();
            }
            copy_exact(&mut src, e.padded, &mut buf, |b| {
                pending.extend_from_slice(b);
                diff.update(b);
                Ok(())
            })
            .map_err(SeekableError::Tar)?;
            tocv.entries.push(ent);
        }
        if pending.len() >= 1 << 20 {
            flush(&mut pending, &mut out)?;
        }
    }
    // The end-of-archive blocks and anything after them, as they were.
    src.seek(SeekFrom::Start(index.end))
        .map_err(SeekableError::Tar)?;
    copy_exact(&mut src, index.total - index.end, &mut buf, |b| {
        pending.extend_from_slice(b);
        diff.update(b);
        Ok(())
    })
    .map_err(SeekableError::Tar)?;
    flush(&mut pending, &mut out)?;

    let json = serde_json::to_vec(&tocv).map_err(SeekableError::TocJson)?;
    let manifest = compress(&json)?;
    let position = ManifestPosition {
        offset: out.n + 8,
        compressed_len: manifest.len() as u64,
        uncompressed_len: json.len() as u64,
        kind: MANIFEST_TYPE_CRFS,
    };
    out.put(&skippable_frame(&manifest)?).map_err(w)?;
    let mut footer = Vec::with_capacity(40);
    for v in [
        position.offset,
        position.compressed_len,
        position.uncompressed_len,
        position.kind,
    ] {
        footer.extend_from_slice(&v.to_le_bytes());
    }
    footer.extend_from_slice(MAGIC);
    out.put(&skippable_frame(&footer)?).map_err(w)?;
    out.w.flush().map_err(w)?;
    let uncompressed_size = diff.len();
    Ok(ZstdChunkedInfo {
        blob_digest: out.hasher.finish(),
        size: out.n,
        diff_id: crate::digest::DiffId::from(diff.finish()),
        uncompressed_size,
        manifest_checksum: Digest::of_bytes(&manifest),
        position,
    })
}
