//! Layers: extracted layer dirs keyed by ChainID (`layers/<chainhex>/{diff/,layer.json,tar-split.gz}`).

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::fd::AsFd;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::extract;
use super::tarsplit;
use super::{io_at, Result, Store, StoreError};
use crate::digest::{chain_id_on, ChainId, DiffId, Digest, Hasher, HashingWriter};
use crate::fsutil::{fsync_dir, remove_any, unique_tmp, Staging};

/// Metadata of one stored layer (`layer.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerInfo {
    pub chain_id: ChainId,
    pub diff_id: DiffId,
    pub parent: Option<ChainId>,
    /// Docker's layer size: bytes of regular files (hard links once) and symlink targets.
    pub size: u64,
    /// Bytes of the uncompressed tar.
    pub tar_size: u64,
    /// Digest and size of the input as received, when it was compressed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compressed_digest: Option<Digest>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compressed_size: Option<u64>,
    /// True when this call created the layer (false: it already existed). Not stored.
    #[serde(skip)]
    pub created: bool,
}

const GZIP_MAGIC: &[u8] = &[0x1f, 0x8b];
const ZSTD_MAGIC: &[u8] = &[0x28, 0xb5, 0x2f, 0xfd];

/// Compression of a layer stream, detected by magic bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

pub fn detect_compression(head: &[u8]) -> Compression {
    if head.starts_with(GZIP_MAGIC) {
        Compression::Gzip
    } else if head.starts_with(ZSTD_MAGIC) {
        Compression::Zstd
    } else {
        Compression::None
    }
}

/// Wrap `r` in the decompressor its first bytes call for.
pub fn decompress<'a, R: BufRead + 'a>(mut r: R) -> io::Result<Box<dyn Read + 'a>> {
    let head = r.fill_buf()?;
    Ok(match detect_compression(head) {
        Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(r)),
        Compression::Zstd => Box::new(zstd::stream::read::Decoder::with_buffer(r)?),
        Compression::None => Box::new(r),
    })
}

/// A layer extracted into a staging dir by [`Store::stage_layer`], not yet visible. Dropping it
/// removes the staging dir.
pub struct StagedLayer {
    staging: Staging,
    diff_id: DiffId,
    size: u64,
    tar_size: u64,
    input_digest: Digest,
    input_size: u64,
    compressed: bool,
}

impl StagedLayer {
    /// The verified diffID (digest of the uncompressed tar).
    pub fn diff_id(&self) -> &DiffId {
        &self.diff_id
    }
    /// Digest and size of the input as read (the compressed blob, or the tar itself).
    pub fn input_digest(&self) -> &Digest {
        &self.input_digest
    }
    pub fn input_size(&self) -> u64 {
        self.input_size
    }
}

impl Store {
    fn layer_path(&self, c: &ChainId) -> PathBuf {
        self.layers_dir().join(c.hex())
    }

    /// The directory holding the layer's files (overlay format).
    pub fn layer_diff_dir(&self, c: &ChainId) -> PathBuf {
        self.layer_path(c).join("diff")
    }

    pub fn has_layer(&self, c: &ChainId) -> bool {
        self.layer_path(c).join("layer.json").is_file()
    }

    pub fn layer(&self, c: &ChainId) -> Result<LayerInfo> {
        let p = self.layer_path(c).join("layer.json");
        let bytes = match std::fs::read(&p) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(StoreError::NoSuchLayer(c.clone()))
            }
            Err(e) => return Err(io_at(&p)(e)),
        };
        serde_json::from_slice(&bytes)
            .map_err(|source| StoreError::CorruptMetadata { path: p, source })
    }

    /// All stored layers.
    pub fn layers(&self) -> Result<Vec<LayerInfo>> {
        let dir = self.layers_dir();
        let mut out = Vec::new();
        for e in std::fs::read_dir(&dir).map_err(io_at(&dir))? {
            let e = e.map_err(io_at(&dir))?;
            let Ok(c) = ChainId::parse(&format!("sha256:{}", e.file_name().to_string_lossy()))
            else {
                continue;
            };
            if let Ok(info) = self.layer(&c) {
                out.push(info);
            }
        }
        Ok(out)
    }

    /// Stream a layer tar (gzip, zstd or plain, detected by magic) into the store on top of
    /// `parent`. Hostile entries are refused; with `expected`, the diffID must match. Nothing
    /// is visible in `layers/` unless everything succeeded. If the resulting chain already
    /// exists, the existing layer is returned (`created == false`); when `expected` is given
    /// and its chain exists, the input is not even read.
    pub fn add_layer(
        &self,
        input: impl Read,
        parent: Option<&ChainId>,
        expected: Option<&DiffId>,
    ) -> Result<LayerInfo> {
        if let Some(p) = parent {
            if !self.has_layer(p) {
                return Err(StoreError::NoSuchLayer(p.clone()));
            }
        }
        if let Some(exp) = expected {
            let c = chain_id_on(parent, exp);
            if self.hold_layer(&c)? {
                return self.layer(&c);
            }
        }
        let staged = self.stage_layer(input, expected)?;
        self.commit_layer(staged, parent)
    }

    /// The first half of [`Store::add_layer`]: extract a layer tar into a private staging dir
    /// (removed when the result is dropped) and verify its diffID against `expected`. The input
    /// is read to its end, so the caller can check the digest and size of what was read
    /// ([`StagedLayer::input_digest`]) before making the layer visible with
    /// [`Store::commit_layer`]. Extraction does not depend on the parent layer, so layers of one
    /// image can be staged concurrently and committed in order.
    pub fn stage_layer(&self, input: impl Read, expected: Option<&DiffId>) -> Result<StagedLayer> {
        self.stage(input, expected, None)
    }

    /// [`Store::stage_layer`] for an input the caller hashes and verifies itself (a registry
    /// blob, hashed as it downloads): `input_digest` is recorded as given and the input is only
    /// counted, not hashed a second time. The diffID is still computed and checked.
    pub(crate) fn stage_layer_hashed_by_caller(
        &self,
        input: impl Read,
        expected: Option<&DiffId>,
        input_digest: &Digest,
    ) -> Result<StagedLayer> {
        self.stage(input, expected, Some(input_digest))
    }

    fn stage(
        &self,
        input: impl Read,
        expected: Option<&DiffId>,
        known_digest: Option<&Digest>,
    ) -> Result<StagedLayer> {
        let staging = Staging::new(unique_tmp(&self.tmp_dir(), "layer"));
        let diff = staging.path().join("diff");
        std::fs::create_dir_all(&diff).map_err(io_at(&diff))?;
        let diff_fd = File::open(&diff).map_err(io_at(&diff))?;

        let split_path = staging.path().join("tar-split.gz");
        let split_file = File::create(&split_path).map_err(io_at(&split_path))?;
        let mut split = flate2::write::GzEncoder::new(
            io::BufWriter::new(split_file),
            flate2::Compression::fast(),
        );
        let input = InputReader {
            inner: input,
            digest: match known_digest {
                Some(d) => InputDigest::Known(d.clone()),
                None => InputDigest::Hashing(Hasher::new()),
            },
            len: 0,
        };
        let mut raw = BufReader::with_capacity(1 << 20, input);
        let compression = detect_compression(raw.fill_buf().map_err(StoreError::Decompress)?);
        let result = {
            let mut dec = decompress(&mut raw).map_err(StoreError::Decompress)?;
            let flavour = crate::rootless::flavour();
            let r = extract::extract(&mut dec, diff_fd.as_fd(), flavour, &mut split);
            if r.is_ok() {
                // Drain the rest of the compressed stream (gzip trailer) so it is verified.
                io::copy(&mut dec, &mut io::sink()).map_err(StoreError::Decompress)?;
            }
            r?
        };
        io::copy(&mut raw, &mut io::sink()).map_err(StoreError::Decompress)?;
        let input = raw.into_inner();
        let input_size = input.len;
        let input_digest = match input.digest {
            InputDigest::Hashing(h) => h.finish(),
            InputDigest::Known(d) => d,
        };

        let diff_id = DiffId::from(result.diff_id);
        if let Some(exp) = expected {
            if *exp != diff_id {
                return Err(StoreError::DiffIdMismatch {
                    expected: exp.clone(),
                    actual: diff_id,
                });
            }
        }
        let f = split
            .finish()
            .and_then(|w| w.into_inner().map_err(|e| e.into_error()))
            .map_err(io_at(&split_path))?;
        f.sync_all().map_err(io_at(&split_path))?;
        if !result.patches.is_empty() {
            let p = staging.path().join("tar-split.patches");
            let mut f = File::create(&p).map_err(io_at(&p))?;
            tarsplit::write_patches(&result.patches, &mut f)
                .and_then(|_| f.sync_all())
                .map_err(io_at(&p))?;
        }
        Ok(StagedLayer {
            staging,
            diff_id,
            size: result.size,
            tar_size: result.tar_size,
            input_digest,
            input_size,
            compressed: compression != Compression::None,
        })
    }

    /// The second half of [`Store::add_layer`]: make a staged layer visible on top of `parent`
    /// (atomic rename). If the chain already exists, the existing layer is returned
    /// (`created == false`) and the staging dir is dropped.
    pub fn commit_layer(&self, staged: StagedLayer, parent: Option<&ChainId>) -> Result<LayerInfo> {
        if let Some(p) = parent {
            if !self.has_layer(p) {
                return Err(StoreError::NoSuchLayer(p.clone()));
            }
        }
        let chain_id = chain_id_on(parent, &staged.diff_id);
        let info = LayerInfo {
            chain_id,
            diff_id: staged.diff_id,
            parent: parent.cloned(),
            size: staged.size,
            tar_size: staged.tar_size,
            compressed_digest: staged.compressed.then_some(staged.input_digest),
            compressed_size: staged.compressed.then_some(staged.input_size),
            created: true,
        };
        self.finish_layer(staged.staging, &info)
    }

    fn finish_layer(&self, staging: Staging, info: &LayerInfo) -> Result<LayerInfo> {
        let meta = staging.path().join("layer.json");
        let json = serde_json::to_vec_pretty(info).unwrap_or_default();
        let mut f = File::create(&meta).map_err(io_at(&meta))?;
        f.write_all(&json)
            .and_then(|_| f.sync_all())
            .map_err(io_at(&meta))?;
        fsync_dir(staging.path()).map_err(io_at(staging.path()))?;

        let dest = self.layer_path(&info.chain_id);
        self.lease(super::gc::Leased::Layer, info.chain_id.hex())?;
        match std::fs::rename(staging.path(), &dest) {
            Ok(()) => {
                staging.keep();
                fsync_dir(&self.layers_dir()).map_err(io_at(self.layers_dir()))?;
                Ok(info.clone())
            }
            // Someone else stored the same chain first: theirs wins, ours is dropped.
            Err(e) if dest.exists() => {
                drop(e);
                let mut existing = self.layer(&info.chain_id)?;
                existing.created = false;
                Ok(existing)
            }
            Err(e) => Err(io_at(&dest)(e)),
        }
    }

    /// Replace the lazy layer `c` (`crate::lazy`), whose dir must still be the one with
    /// device and inode `expect`, by `staged` (extracted from the completed blob, diffID
    /// verified) in one `renameat2(RENAME_EXCHANGE)`; the lazy dir goes to `retire_to`.
    /// `Ok(false)`: the layer is no longer that lazy dir (another process completed it).
    pub(crate) fn exchange_lazy_layer(
        &self,
        staged: StagedLayer,
        c: &ChainId,
        expect: (u64, u64),
        retire_to: &std::path::Path,
    ) -> Result<bool> {
        use std::os::unix::fs::MetadataExt;
        let old = self.layer(c)?;
        if chain_id_on(old.parent.as_ref(), &staged.diff_id) != *c {
            return Err(StoreError::DiffIdMismatch {
                expected: old.diff_id,
                actual: staged.diff_id,
            });
        }
        let info = LayerInfo {
            chain_id: c.clone(),
            diff_id: staged.diff_id,
            parent: old.parent,
            size: staged.size,
            tar_size: staged.tar_size,
            compressed_digest: staged.compressed.then_some(staged.input_digest),
            compressed_size: staged.compressed.then_some(staged.input_size),
            created: true,
        };
        let staging = staged.staging;
        let meta = staging.path().join("layer.json");
        let json = serde_json::to_vec_pretty(&info).unwrap_or_default();
        let mut f = File::create(&meta).map_err(io_at(&meta))?;
        f.write_all(&json)
            .and_then(|_| f.sync_all())
            .map_err(io_at(&meta))?;
        fsync_dir(staging.path()).map_err(io_at(staging.path()))?;
        let _l = self.lock(crate::fsutil::LockMode::Exclusive)?;
        let dest = self.layer_path(c);
        let current = std::fs::metadata(&dest).map_err(io_at(&dest))?;
        if (current.dev(), current.ino()) != expect || !dest.join("lazy").exists() {
            return Ok(false);
        }
        nix::fcntl::renameat2(
            nix::fcntl::AT_FDCWD,
            staging.path(),
            nix::fcntl::AT_FDCWD,
            &dest,
            nix::fcntl::RenameFlags::RENAME_EXCHANGE,
        )
        .map_err(|e| io_at(&dest)(e.into()))?;
        // The staging path now holds the lazy dir.
        let moved = std::fs::rename(staging.path(), retire_to);
        staging.keep();
        fsync_dir(&self.layers_dir()).map_err(io_at(self.layers_dir()))?;
        moved.map_err(io_at(retire_to))?;
        Ok(true)
    }

    /// Write the layer's exact uncompressed tar (byte-identical to what was added) to `out`,
    /// verifying its diffID on the way.
    pub fn layer_tar(&self, c: &ChainId, out: &mut dyn Write) -> Result<LayerInfo> {
        let info = self.layer(c)?;
        if self.layer_path(c).join("lazy").exists() {
            // A lazily pulled layer has no tar-split until it is complete (`crate::lazy`).
            return Err(StoreError::Conflict(format!(
                "layer {} is still being fetched (lazy pull): `strata pull` the image to complete it",
                c.short()
            )));
        }
        let split = self.layer_path(c).join("tar-split.gz");
        let f = File::open(&split).map_err(io_at(&split))?;
        let patches_path = self.layer_path(c).join("tar-split.patches");
        let patches = match File::open(&patches_path) {
            Ok(mut p) => tarsplit::read_patches(&mut p).map_err(io_at(&patches_path))?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => Default::default(),
            Err(e) => return Err(io_at(&patches_path)(e)),
        };
        let diff = self.layer_diff_dir(c);
        let root = File::open(&diff).map_err(io_at(&diff))?;
        let mut w = HashingWriter::new(out);
        let mut gz = io::BufReader::new(flate2::read::GzDecoder::new(f));
        tarsplit::rebuild(&mut gz, &patches, root.as_fd(), &mut w).map_err(io_at(&diff))?;
        let (actual, _, _) = w.finish();
        if &actual != info.diff_id.digest() {
            return Err(StoreError::DiffIdMismatch {
                expected: info.diff_id.clone(),
                actual: DiffId::from(actual),
            });
        }
        Ok(info)
    }

    /// Delete a layer dir (moved into tmp first so a half-deleted layer is never visible).
    pub(crate) fn delete_layer(&self, c: &ChainId) -> Result<()> {
        let p = self.layer_path(c);
        let t = unique_tmp(&self.tmp_dir(), "rmlayer");
        match std::fs::rename(&p, &t) {
            Ok(()) => remove_any(&t).map_err(io_at(&t)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_at(&p)(e)),
        }
    }
}

/// The layer input as read: counted, and hashed unless the caller hashes it itself.
struct InputReader<R> {
    inner: R,
    digest: InputDigest,
    len: u64,
}

enum InputDigest {
    Hashing(Hasher),
    Known(Digest),
}

impl<R: Read> Read for InputReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if let InputDigest::Hashing(h) = &mut self.digest {
            h.update(&buf[..n]);
        }
        self.len += n as u64;
        Ok(n)
    }
}
