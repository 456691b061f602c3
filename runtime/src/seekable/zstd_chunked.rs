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
    let mut json = Vec::with_capacity(pos.uncompressed_len as usize);
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
