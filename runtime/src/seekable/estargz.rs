//! eStargz (stargz-snapshotter's `docs/estargz.md`): a gzip tar in which every regular file's
//! content starts a new gzip member (files over the chunk size span several members), followed
//! by a gzip member holding the tar entry `stargz.index.json` (the TOC) and the end-of-archive
//! blocks, followed by the [`FOOTER_SIZE`]-byte footer: an empty gzip member whose extra field
//! `SG` carries `%016x` of the TOC's offset and `STARGZ`. Any gzip reader sees one tar.

use std::collections::{HashMap, HashSet};
use std::io::{self, Read, Seek, SeekFrom, Write};

use flate2::read::GzDecoder;
use flate2::write::GzEncoder;

use super::rawtar::{self, RawEntry, BLOCK};
use super::toc::{self, clean_name, Toc, TocEntry};
use super::{Compression, SeekableError};
use crate::digest::{DiffId, Digest, Hasher};

/// Size of the eStargz footer: Range-fetch at least this many bytes from the blob's end.
pub const FOOTER_SIZE: usize = 51;
/// The footer of old (pre-eStargz) stargz blobs: extra field without the `SG` subfield header.
const LEGACY_FOOTER_SIZE: usize = 47;
/// Name of the TOC's tar entry.
pub const TOC_TAR_NAME: &str = "stargz.index.json";
/// Layer annotation: digest of the TOC JSON.
pub const TOC_DIGEST_ANNOTATION: &str = "containerd.io/snapshot/stargz/toc.digest";
/// Layer annotation: size of the decompressed blob (containers/storage's "stargz store").
pub const UNCOMPRESSED_SIZE_ANNOTATION: &str = "io.containers.estargz.uncompressed-size";
/// Files before this entry are the ones a run reads first.
pub const PREFETCH_LANDMARK: &str = ".prefetch.landmark";
/// First entry of a blob with no prefetch hint.
pub const NO_PREFETCH_LANDMARK: &str = ".no.prefetch.landmark";
const LANDMARK_CONTENT: u8 = 0xf;
/// Default chunk size for big files (as stargz-snapshotter).
pub const DEFAULT_CHUNK_SIZE: u64 = 4 << 20;
/// Largest TOC we accept (uncompressed JSON).
const MAX_TOC_SIZE: u64 = 256 << 20;

/// How to write an eStargz blob.
#[derive(Debug, Clone)]
pub struct EstargzOptions {
    /// Files larger than this are split into chunks of this size.
    pub chunk_size: u64,
    /// Paths (as in the tar, `./` and `/` prefixes ignored) to place first, in this order,
    /// followed by `.prefetch.landmark`. Empty: `.no.prefetch.landmark` comes first.
    pub prioritized: Vec<String>,
    /// gzip level 0-9.
    pub level: u32,
}

impl Default for EstargzOptions {
    fn default() -> Self {
        EstargzOptions {
            chunk_size: DEFAULT_CHUNK_SIZE,
            prioritized: Vec::new(),
            level: 6,
        }
    }
}

/// What [`write_estargz`] produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EstargzInfo {
    /// sha256 and size of the blob (the layer descriptor's digest and size).
    pub blob_digest: Digest,
    pub size: u64,
    /// sha256 and size of the decompressed blob (the config's `rootfs.diff_ids` entry).
    pub diff_id: DiffId,
    pub uncompressed_size: u64,
    /// sha256 of the TOC JSON (annotation [`TOC_DIGEST_ANNOTATION`]).
    pub toc_digest: Digest,
    /// How many of [`EstargzOptions::prioritized`] were found and placed first.
    pub prioritized: usize,
}

/// The layer descriptor annotations of an eStargz blob.
pub fn annotations(info: &EstargzInfo) -> Vec<(String, String)> {
    vec![
        (
            TOC_DIGEST_ANNOTATION.to_string(),
            info.toc_digest.to_string(),
        ),
        (
            UNCOMPRESSED_SIZE_ANNOTATION.to_string(),
            info.uncompressed_size.to_string(),
        ),
    ]
}

/// The footer pointing at a TOC at `toc_offset`.
pub fn footer_bytes(toc_offset: u64) -> [u8; FOOTER_SIZE] {
    let mut f = [0u8; FOOTER_SIZE];
    // gzip header: magic, deflate, FLG=FEXTRA, MTIME 0, XFL 0, OS 255 (unknown)
    f[..10].copy_from_slice(&[0x1f, 0x8b, 8, 4, 0, 0, 0, 0, 0, 0xff]);
    f[10..12].copy_from_slice(&26u16.to_le_bytes());
    f[12] = b'S';
    f[13] = b'G';
    f[14..16].copy_from_slice(&22u16.to_le_bytes());
    f[16..32].copy_from_slice(format!("{toc_offset:016x}").as_bytes());
    f[32..38].copy_from_slice(b"STARGZ");
    // a final stored deflate block of length 0, then CRC32 and ISIZE of nothing
    f[38..43].copy_from_slice(&[1, 0, 0, 0xff, 0xff]);
    f
}

fn hex_offset(b: &[u8]) -> Option<u64> {
    let s = std::str::from_utf8(b).ok()?;
    if s.len() != 16 || !s.bytes().all(|c| c.is_ascii_hexdigit()) {
        return None;
    }
    u64::from_str_radix(s, 16).ok()
}

/// Is `p` an empty gzip member with flags exactly FEXTRA and an extra field of `xlen` bytes?
fn empty_member_with_extra(p: &[u8], xlen: usize) -> bool {
    if p.len() != 12 + xlen + 13 || p[..4] != [0x1f, 0x8b, 8, 4] {
        return false;
    }
    if usize::from(u16::from_le_bytes([p[10], p[11]])) != xlen {
        return false;
    }
    let mut out = Vec::new();
    matches!(GzDecoder::new(p).read_to_end(&mut out), Ok(0))
}

/// Parse the footer at the end of `tail`; returns (TOC offset, footer length).
fn footer(tail: &[u8]) -> Result<(u64, usize), SeekableError> {
    if tail.len() >= FOOTER_SIZE {
        let p = &tail[tail.len() - FOOTER_SIZE..];
        if empty_member_with_extra(p, 26)
            && &p[12..14] == b"SG"
            && u16::from_le_bytes([p[14], p[15]]) == 22
            && &p[32..38] == b"STARGZ"
        {
            return hex_offset(&p[16..32])
                .map(|o| (o, FOOTER_SIZE))
                .ok_or(SeekableError::Footer("bad TOC offset"));
        }
    }
    if tail.len() >= LEGACY_FOOTER_SIZE {
        let p = &tail[tail.len() - LEGACY_FOOTER_SIZE..];
        if empty_member_with_extra(p, 22) && &p[28..34] == b"STARGZ" {
            return hex_offset(&p[12..28])
                .map(|o| (o, LEGACY_FOOTER_SIZE))
                .ok_or(SeekableError::Footer("bad TOC offset"));
        }
    }
    Err(SeekableError::Footer(
        "no STARGZ footer at the end of the blob",
    ))
}

/// The TOC offset from the blob's last bytes (`tail` ends where the blob ends; only its last
/// [`FOOTER_SIZE`] bytes are used).
pub fn read_footer(tail: &[u8]) -> Result<u64, SeekableError> {
    footer(tail).map(|(o, _)| o)
}

/// Parse and verify the TOC. `blob_tail_from_toc_offset` is the blob from the TOC offset (as
/// [`read_footer`] gave it) to the blob's end, footer included; `expected_toc_digest` is the
/// layer's [`TOC_DIGEST_ANNOTATION`] (a mismatch is an error).
pub fn parse_toc(
    blob_tail_from_toc_offset: &[u8],
    expected_toc_digest: Option<&str>,
) -> Result<Toc, SeekableError> {
    parse_toc_digest(blob_tail_from_toc_offset, expected_toc_digest).map(|(t, _)| t)
}

/// [`parse_toc`], also returning the TOC's digest.
pub fn parse_toc_digest(
    blob_tail_from_toc_offset: &[u8],
    expected_toc_digest: Option<&str>,
) -> Result<(Toc, Digest), SeekableError> {
    let tail = blob_tail_from_toc_offset;
    let (toc_offset, footer_len) = footer(tail)?;
    let member = &tail[..tail.len() - footer_len];
    let mut dec = GzDecoder::new(member);
    let mut block = [0u8; BLOCK as usize];
    dec.read_exact(&mut block)
        .map_err(|_| SeekableError::TocFormat("no TOC tar header at the TOC offset"))?;
    let h = tar::Header::from_byte_slice(&block);
    if &*h.path_bytes() != TOC_TAR_NAME.as_bytes() || !h.entry_type().is_file() {
        return Err(SeekableError::TocFormat(
            "the entry at the TOC offset is not stargz.index.json",
        ));
    }
    let size = h
        .entry_size()
        .map_err(|_| SeekableError::TocFormat("bad TOC entry size"))?;
    if size > MAX_TOC_SIZE {
        return Err(SeekableError::TocFormat("TOC too large"));
    }
    // Grow as bytes arrive: a header may claim more than the member holds.
    let mut json = Vec::with_capacity(size.min(1 << 20) as usize);
    (&mut dec)
        .take(size)
        .read_to_end(&mut json)
        .map_err(|_| SeekableError::TocFormat("TOC is truncated"))?;
    if json.len() as u64 != size {
        return Err(SeekableError::TocFormat("TOC is truncated"));
    }
    let actual = Digest::of_bytes(&json);
    if let Some(expected) = expected_toc_digest {
        if expected != actual.as_str() {
            return Err(SeekableError::TocDigest {
                expected: expected.to_string(),
                actual,
            });
        }
    }
    let mut toc: Toc = serde_json::from_slice(&json).map_err(SeekableError::TocJson)?;
    toc::validate(&mut toc, toc_offset, Compression::Gzip)?;
    Ok((toc, actual))
}

/// Read and verify the TOC of the eStargz blob in file `path`: the TOC and its digest (the
/// value of [`TOC_DIGEST_ANNOTATION`]). An error if the file is not eStargz.
pub fn inspect_file(path: &std::path::Path) -> Result<(Toc, Digest), SeekableError> {
    let mut f = std::fs::File::open(path).map_err(SeekableError::Tar)?;
    let len = f.seek(SeekFrom::End(0)).map_err(SeekableError::Tar)?;
    let want = (FOOTER_SIZE as u64).min(len);
    f.seek(SeekFrom::Start(len - want))
        .map_err(SeekableError::Tar)?;
    let mut tail = Vec::new();
    f.read_to_end(&mut tail).map_err(SeekableError::Tar)?;
    let off = read_footer(&tail)?;
    if off >= len || len - off > MAX_TOC_SIZE {
        return Err(SeekableError::Footer("TOC offset outside the blob"));
    }
    f.seek(SeekFrom::Start(off)).map_err(SeekableError::Tar)?;
    let mut rest = Vec::new();
    f.read_to_end(&mut rest).map_err(SeekableError::Tar)?;
    let (toc, digest) = parse_toc_digest(&rest, None)?;
    Ok((toc, digest))
}

/// Counts and hashes the blob's bytes.
pub(crate) struct Out<W> {
    pub w: W,
    pub n: u64,
    pub hasher: Hasher,
}

impl<W: Write> Out<W> {
    pub(crate) fn new(w: W) -> Out<W> {
        Out {
            w,
            n: 0,
            hasher: Hasher::new(),
        }
    }

    pub(crate) fn put(&mut self, b: &[u8]) -> io::Result<()> {
        self.w.write_all(b)?;
        self.n += b.len() as u64;
        self.hasher.update(b);
        Ok(())
    }
}

/// The blob being written: a sequence of gzip members; `diff` hashes what they decompress to.
struct Members<W> {
    out: Out<W>,
    gz: Option<GzEncoder<Vec<u8>>>,
    level: flate2::Compression,
    diff: Hasher,
}

impl<W: Write> Members<W> {
    fn write(&mut self, b: &[u8]) -> io::Result<()> {
        let gz = self
            .gz
            .get_or_insert_with(|| GzEncoder::new(Vec::new(), self.level));
        gz.write_all(b)?;
        self.diff.update(b);
        let buf = gz.get_mut();
        if buf.len() >= 1 << 16 {
            self.out.put(buf)?;
            buf.clear();
        }
        Ok(())
    }

    /// End the current member; the next write starts a new one at [`Members::offset`].
    fn close(&mut self) -> io::Result<()> {
        if let Some(gz) = self.gz.take() {
            let rest = gz.finish()?;
            self.out.put(&rest)?;
        }
        Ok(())
    }

    /// Blob offset of the next member (call after [`Members::close`]).
    fn offset(&self) -> u64 {
        self.out.n
    }
}

pub(crate) fn copy_exact<R: Read>(
    src: &mut R,
    mut len: u64,
    buf: &mut [u8],
    mut sink: impl FnMut(&[u8]) -> io::Result<()>,
) -> io::Result<()> {
    while len > 0 {
        let want = buf.len().min(usize::try_from(len).unwrap_or(usize::MAX));
        let n = src.read(&mut buf[..want])?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        sink(&buf[..n])?;
        len -= n as u64;
    }
    Ok(())
}

/// A tar header block for an entry we add (landmark, TOC).
fn added_header(name: &str, size: u64) -> io::Result<[u8; 512]> {
    let mut h = tar::Header::new_ustar();
    h.set_path(name)?;
    h.set_size(size);
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h.set_entry_type(tar::EntryType::Regular);
    h.set_cksum();
    Ok(*h.as_bytes())
}

/// The order to write entries in: prioritized paths first (each after the directories above it
/// and, for a hard link, after its target), then everything else in tar order. A name the tar
/// repeats is never moved (moving it could change which copy wins). Returns (order, number of
/// prioritized paths found, number of leading entries of `order` placed for them).
fn order(entries: &[RawEntry], prioritized: &[String]) -> (Vec<usize>, usize, usize) {
    let mut by_name: HashMap<&str, Vec<usize>> = HashMap::new();
    for (i, e) in entries.iter().enumerate() {
        by_name.entry(e.clean.as_str()).or_default().push(i);
    }
    let unique = |name: &str| match by_name.get(name) {
        Some(v) if v.len() == 1 => Some(v[0]),
        _ => None,
    };
    let mut done = vec![false; entries.len()];
    let mut out = Vec::new();
    let mut found = 0;
    let place = |i: usize, out: &mut Vec<usize>, done: &mut Vec<bool>| {
        let name = entries[i].clean.as_str();
        let mut prefix = 0;
        while let Some(k) = name[prefix..].find('/') {
            let dir = &name[..prefix + k];
            if let Some(d) = unique(dir) {
                if !done[d] && entries[d].meta.kind == "dir" {
                    done[d] = true;
                    out.push(d);
                }
            }
            prefix += k + 1;
        }
        if !done[i] {
            done[i] = true;
            out.push(i);
        }
    };
    let mut seen = HashSet::new();
    for p in prioritized {
        let Ok(clean) = clean_name(p.trim_start_matches('/')) else {
            continue;
        };
        if !seen.insert(clean.clone()) {
            continue;
        }
        let Some(i) = unique(&clean) else { continue };
        if done[i] || entries[i].meta.kind == "dir" {
            continue;
        }
        if entries[i].meta.kind == "hardlink" {
            match unique(&entries[i].link_clean) {
                Some(t) if t < i => place(t, &mut out, &mut done),
                _ => continue,
            }
        }
        place(i, &mut out, &mut done);
        found += 1;
    }
    let head = out.len();
    for (i, d) in done.iter().enumerate() {
        if !d {
            out.push(i);
        }
    }
    (out, found, head)
}

fn is_reserved(clean: &str) -> bool {
    clean == TOC_TAR_NAME || clean == PREFETCH_LANDMARK || clean == NO_PREFETCH_LANDMARK
}

/// Re-encode the uncompressed layer tar `src` as an eStargz blob written to `out`.
///
/// Entry header blocks (PAX and GNU extension headers included) are copied byte for byte;
/// only the gzip framing and the order (see [`EstargzOptions::prioritized`]) change, and the
/// landmark and TOC entries are added. A `stargz.index.json` or landmark already in the input
/// (a blob converted twice) is dropped. Hostile names are refused as the extractor refuses
/// them; an unknown entry type (GNU sparse files, volume headers) is an error.
pub fn write_estargz<R: Read + Seek, W: Write>(
    mut src: R,
    out: W,
    opts: &EstargzOptions,
) -> Result<EstargzInfo, SeekableError> {
    let entries: Vec<RawEntry> = rawtar::index(&mut src)?
        .entries
        .into_iter()
        .filter(|e| !is_reserved(&e.clean))
        .collect();
    let (order, found, head) = order(&entries, &opts.prioritized);
    let chunk_size = opts.chunk_size.max(1);
    let mut m = Members {
        out: Out {
            w: out,
            n: 0,
            hasher: Hasher::new(),
        },
        gz: None,
        level: flate2::Compression::new(opts.level.min(9)),
        diff: Hasher::new(),
    };
    let w = SeekableError::Write;
    let mut tocv = Toc {
        version: 1,
        ..Toc::default()
    };
    let mut buf = vec![0u8; 1 << 16];

    let landmark = |m: &mut Members<W>, name: &str, tocv: &mut Toc| -> io::Result<()> {
        m.write(&added_header(name, 1)?)?;
        m.close()?;
        let offset = m.offset();
        m.write(&[LANDMARK_CONTENT])?;
        m.write(&[0u8; BLOCK as usize - 1])?;
        let d = Digest::of_bytes(&[LANDMARK_CONTENT]).to_string();
        tocv.entries.push(TocEntry {
            name: name.to_string(),
            kind: "reg".to_string(),
            size: 1,
            mode: 0o644,
            offset,
            digest: d.clone(),
            chunk_digest: d,
            ..TocEntry::default()
        });
        Ok(())
    };

    if found == 0 {
        landmark(&mut m, NO_PREFETCH_LANDMARK, &mut tocv).map_err(w)?;
    }
    for (k, &i) in order.iter().enumerate() {
        let e = &entries[i];
        m.write(&e.header).map_err(w)?;
        src.seek(SeekFrom::Start(e.content_pos))
            .map_err(SeekableError::Tar)?;
        let mut ent = e.meta.clone();
        if e.meta.kind == "reg" && e.size > 0 {
            let mut file = Hasher::new();
            let mut written = 0u64;
            let mut first = true;
            while written < e.size {
                m.close().map_err(w)?;
                let remain = e.size - written;
                let this = remain.min(chunk_size);
                if !first {
                    ent = TocEntry {
                        name: e.meta.name.clone(),
                        kind: "chunk".to_string(),
                        ..TocEntry::default()
                    };
                }
                if remain >= chunk_size {
                    ent.chunk_size = chunk_size;
                }
                ent.offset = m.offset();
                ent.chunk_offset = written;
                let mut chunk = Hasher::new();
                copy_exact(&mut src, this, &mut buf, |b| {
                    file.update(b);
                    chunk.update(b);
                    m.write(b)
                })
                .map_err(SeekableError::Tar)?;
                ent.chunk_digest = chunk.finish().to_string();
                tocv.entries.push(std::mem::take(&mut ent));
                written += this;
                first = false;
            }
            let idx = tocv.entries.len() - e.size.div_ceil(chunk_size) as usize;
            tocv.entries[idx].digest = file.finish().to_string();
            copy_exact(&mut src, e.padded - e.size, &mut buf, |b| m.write(b))
                .map_err(SeekableError::Tar)?;
        } else {
            if e.meta.kind == "reg" {
                ent.digest = Digest::of_bytes(&[]).to_string();
            }
            copy_exact(&mut src, e.padded, &mut buf, |b| m.write(b)).map_err(SeekableError::Tar)?;
            tocv.entries.push(ent);
        }
        if found > 0 && k + 1 == head {
            landmark(&mut m, PREFETCH_LANDMARK, &mut tocv).map_err(w)?;
        }
    }

    // The TOC: its own member, then the end-of-archive blocks, then the footer.
    m.close().map_err(w)?;
    let toc_offset = m.offset();
    let json = serde_json::to_vec(&tocv).map_err(SeekableError::TocJson)?;
    let toc_digest = Digest::of_bytes(&json);
    m.write(&added_header(TOC_TAR_NAME, json.len() as u64).map_err(w)?)
        .map_err(w)?;
    m.write(&json).map_err(w)?;
    let pad = rawtar::padded(json.len() as u64) - json.len() as u64;
    m.write(&vec![0u8; pad as usize + 2 * BLOCK as usize])
        .map_err(w)?;
    m.close().map_err(w)?;
    m.out.put(&footer_bytes(toc_offset)).map_err(w)?;
    m.out.w.flush().map_err(w)?;
    let uncompressed_size = m.diff.len();
    Ok(EstargzInfo {
        blob_digest: m.out.hasher.finish(),
        size: m.out.n,
        diff_id: DiffId::from(m.diff.finish()),
        uncompressed_size,
        toc_digest,
        prioritized: found,
    })
}
