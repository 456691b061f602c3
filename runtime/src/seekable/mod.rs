//! Seekable layers: eStargz and zstd:chunked blobs, read and written.
//!
//! A *seekable* layer blob is an ordinary compressed layer (any tool can pull and extract it)
//! whose files are compressed in independent pieces, with a table of contents (*TOC*) at the end
//! that says where each piece is. A reader that has the TOC can fetch and decompress one file
//! (or one chunk of a big file) with an HTTP `Range` request, without the rest of the blob.
//!
//! # Vocabulary
//! - *TOC* ([`Toc`], [`TocEntry`]): the JSON index, same field names in both formats
//!   (`name`, `type`, `size`, `modtime`, `linkName`, `mode`, `uid`, `gid`, `userName`,
//!   `groupName`, `devMajor`, `devMinor`, `xattrs`, `digest`, `offset`, `chunkOffset`,
//!   `chunkSize`, `chunkDigest`, `innerOffset`; zstd:chunked adds `endOffset`).
//! - *TOC digest*: sha256 of the TOC bytes as the layer descriptor's annotation names them
//!   (eStargz: the uncompressed JSON, annotation [`estargz::TOC_DIGEST_ANNOTATION`];
//!   zstd:chunked: the compressed manifest, annotation
//!   [`zstd_chunked::MANIFEST_CHECKSUM_ANNOTATION`]). The manifest digest covers the annotation,
//!   so a verified TOC is as trustworthy as the manifest.
//! - *chunk* ([`Chunk`]): a byte range `[start, end)` of the blob that decompresses (after
//!   skipping `inner_offset` bytes) to `size` bytes of one regular file at `file_offset`, with
//!   its own sha256 (`chunkDigest`). [`decode_chunk`] returns the bytes only if they match.
//! - *footer*: eStargz's last [`FOOTER_SIZE`] bytes, an empty gzip member whose extra field
//!   carries the TOC offset.
//! - *landmark*: `.prefetch.landmark` (files before it are what a run reads first) or
//!   `.no.prefetch.landmark` (first entry: no prefetch hint).
//!
//! # Reader API (what the lazy mount uses)
//! ```text
//! FOOTER_SIZE                                            bytes to Range-fetch from the end
//! read_footer(tail) -> Result<u64>                       TOC offset (the tail's last 51 bytes)
//! parse_toc(blob[toc_offset..], Some(annotation)) -> Result<Toc>
//!                                                        decompress, verify the TOC digest,
//!                                                        validate every name and range
//! Toc::chunks() -> &[Chunk]                              every regular file's chunks, in order
//! Toc::file_chunks(entry_index) -> &[Chunk]              one file's chunks
//! decode_chunk(&blob[chunk.start..chunk.end], &chunk) -> Result<Vec<u8>>   verified bytes
//! estargz::annotations(&info)                           descriptor annotations of a blob we wrote
//! zstd_chunked::parse_position(annotation) -> ManifestPosition   (or zstd_chunked::read_footer(tail))
//! zstd_chunked::parse_toc(blob[pos.offset..][..pos.compressed_len], &pos, Some(checksum)) -> Toc
//! ```
//! Both formats give the same [`Toc`]/[`Chunk`] model; a chunk says how it is compressed
//! ([`Compression`]) and [`decode_chunk`] handles both.
//! Names in a parsed [`Toc`] are checked the way the store's extractor checks tar names
//! (no absolute paths, no `..`): a TOC the extractor would refuse is refused here too.
//!
//! # Writer API
//! [`estargz::write_estargz`]: an uncompressed layer tar -> an eStargz blob + [`estargz::EstargzInfo`].
//! The blob decompresses to the input tar's entries (header blocks byte for byte), then the
//! landmark and the `stargz.index.json` TOC entry and the end-of-archive blocks: its diffID is
//! therefore *not* the input's, and the image config must name the new one (as
//! `nerdctl image convert --estargz` and `ctr-remote image optimize` do).

use std::io;

use crate::digest::Digest;

pub mod convert;
pub mod estargz;
mod rawtar;
pub mod record;
mod toc;
pub mod zstd_chunked;

#[cfg(test)]
mod tests;

pub use estargz::{annotations, read_footer, EstargzInfo, EstargzOptions, FOOTER_SIZE};
pub use toc::{Chunk, Toc, TocEntry};

/// Parse an eStargz TOC (see [`estargz::parse_toc`]).
pub fn parse_toc(
    blob_tail_from_toc_offset: &[u8],
    expected_toc_digest: Option<&str>,
) -> Result<Toc, SeekableError> {
    estargz::parse_toc(blob_tail_from_toc_offset, expected_toc_digest)
}

/// The layer blob format `push --compression` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayerCompression {
    /// Plain gzip (or the blob the layer was pulled as): what `push` always did.
    Gzip,
    /// eStargz: layers (and so diffIDs and the config) are re-encoded unless already eStargz.
    Estargz,
    /// zstd:chunked: same tar, same diffIDs, seekable zstd blob.
    ZstdChunked,
}

/// `--compression` value not known.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid compression format {0:?}: must be gzip, estargz or zstd:chunked")]
pub struct UnknownCompression(pub String);

impl std::str::FromStr for LayerCompression {
    type Err = UnknownCompression;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "gzip" => Ok(LayerCompression::Gzip),
            "estargz" => Ok(LayerCompression::Estargz),
            "zstd:chunked" => Ok(LayerCompression::ZstdChunked),
            _ => Err(UnknownCompression(s.to_string())),
        }
    }
}

/// How a chunk's bytes are compressed in the blob.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// eStargz: the range starts a gzip member.
    Gzip,
    /// zstd:chunked: the range is one or more zstd frames.
    Zstd,
}

/// Errors of seekable blobs.
#[derive(Debug, thiserror::Error)]
pub enum SeekableError {
    #[error("invalid eStargz footer: {0}")]
    Footer(&'static str),
    #[error("invalid zstd:chunked footer: {0}")]
    ZstdFooter(&'static str),
    #[error("invalid zstd:chunked manifest position {0:?}")]
    ManifestPosition(String),
    #[error("invalid TOC: {0}")]
    TocFormat(&'static str),
    #[error("invalid TOC JSON: {0}")]
    TocJson(#[source] serde_json::Error),
    #[error("TOC digest mismatch: expected {expected}, got {actual}")]
    TocDigest { expected: String, actual: Digest },
    #[error("invalid TOC entry {name:?}: {why}")]
    Entry { name: String, why: &'static str },
    #[error("refusing unsafe TOC entry {name:?}: {why}")]
    Unsafe { name: String, why: &'static str },
    #[error(
        "chunk of {name:?} at {file_offset}: digest mismatch: expected {expected}, got {actual}"
    )]
    ChunkDigest {
        name: String,
        file_offset: u64,
        expected: Digest,
        actual: Digest,
    },
    #[error("chunk of {name:?} at {file_offset}: {source}")]
    Decompress {
        name: String,
        file_offset: u64,
        #[source]
        source: io::Error,
    },
    #[error("reading layer tar: {0}")]
    Tar(#[source] io::Error),
    #[error("invalid layer tar: {0}")]
    TarFormat(&'static str),
    #[error("refusing unsafe archive entry {name:?}: {why}")]
    UnsafeTar { name: String, why: &'static str },
    #[error("unsupported tar entry {name:?} of type {typeflag:?}")]
    Unsupported { name: String, typeflag: char },
    #[error("writing seekable blob: {0}")]
    Write(#[source] io::Error),
}

/// Decompress one chunk and check it against its `chunkDigest`. `compressed` is the blob's
/// bytes `[chunk.start, chunk.end)`. A mismatch or a short chunk is an error, never data.
pub fn decode_chunk(compressed: &[u8], chunk: &Chunk) -> Result<Vec<u8>, SeekableError> {
    toc::decode_chunk(compressed, chunk)
}
