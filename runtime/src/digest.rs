//! Digests and identity newtypes.
//!
//! Vocabulary (SPEC §2):
//! - [`Digest`]: `sha256:<64 lowercase hex>`, the content address of any blob.
//! - [`DiffId`]: digest of an *uncompressed* layer tar (config `rootfs.diff_ids`).
//! - [`ChainId`]: identity of a stack of layers; `chain_id(L0) = diff_id(L0)`,
//!   `chain_id(L0..n) = sha256(chain_id(L0..n-1) + " " + diff_id(Ln))`.
//! - [`ImageId`]: digest of an image's config JSON bytes.
//!
//! [`HashingReader`] / [`HashingWriter`] hash bytes as they stream through.

use std::fmt;
use std::io::{self, Read, Write};
use std::str::FromStr;

use sha2::{Digest as _, Sha256};

/// Why a string is not a digest. Texts follow `opencontainers/go-digest`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DigestError {
    #[error("invalid checksum digest format")]
    Format,
    #[error("unsupported digest algorithm")]
    Algorithm,
    #[error("invalid checksum digest length")]
    Length,
}

/// A `sha256:<64 lowercase hex>` content digest.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest(String);

impl Digest {
    /// Parse `sha256:<64hex>`.
    pub fn parse(s: &str) -> Result<Digest, DigestError> {
        let (alg, hex) = s.split_once(':').ok_or(DigestError::Format)?;
        if alg.is_empty() || hex.is_empty() {
            return Err(DigestError::Format);
        }
        if alg != "sha256" {
            if alg
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"+._-".contains(&b))
            {
                return Err(DigestError::Algorithm);
            }
            return Err(DigestError::Format);
        }
        if !hex
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Err(DigestError::Format);
        }
        if hex.len() != 64 {
            return Err(DigestError::Length);
        }
        Ok(Digest(s.to_string()))
    }

    /// Build from 64 lowercase hex chars (no prefix).
    pub fn from_hex(hex: &str) -> Result<Digest, DigestError> {
        Digest::parse(&format!("sha256:{hex}"))
    }

    /// sha256 of `bytes`.
    pub fn of_bytes(bytes: &[u8]) -> Digest {
        Digest::from_sha(Sha256::digest(bytes).as_slice())
    }

    fn from_sha(raw: &[u8]) -> Digest {
        Digest(format!("sha256:{}", hex::encode(raw)))
    }

    /// The 64 hex chars without `sha256:`.
    pub fn hex(&self) -> &str {
        &self.0[7..]
    }

    /// The first 12 hex chars (Docker's short ID).
    pub fn short(&self) -> &str {
        &self.0[7..19]
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// True when `s` is a non-empty lowercase hex string of at most 64 chars.
    pub fn is_hex_prefix(s: &str) -> bool {
        !s.is_empty()
            && s.len() <= 64
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for Digest {
    type Err = DigestError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Digest::parse(s)
    }
}

impl serde::Serialize for Digest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> serde::Deserialize<'de> for Digest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Digest::parse(&s).map_err(serde::de::Error::custom)
    }
}

macro_rules! digest_newtype {
    ($(#[$m:meta])* $name:ident) => {
        $(#[$m])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
        #[serde(transparent)]
        pub struct $name(Digest);

        impl $name {
            pub fn parse(s: &str) -> Result<Self, DigestError> {
                Digest::parse(s).map($name)
            }
            pub fn digest(&self) -> &Digest {
                &self.0
            }
            pub fn into_digest(self) -> Digest {
                self.0
            }
            pub fn hex(&self) -> &str {
                self.0.hex()
            }
            pub fn short(&self) -> &str {
                self.0.short()
            }
            pub fn as_str(&self) -> &str {
                self.0.as_str()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0, f)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(&self.0, f)
            }
        }

        impl From<Digest> for $name {
            fn from(d: Digest) -> Self {
                $name(d)
            }
        }
    };
}

digest_newtype!(
    /// sha256 of an image's config JSON bytes.
    ImageId
);
digest_newtype!(
    /// Identity of a stack of layers (see module doc).
    ChainId
);
digest_newtype!(
    /// sha256 of an uncompressed layer tar.
    DiffId
);

/// Chain IDs of every prefix of `diff_ids` (base first): `out[i]` identifies layers `0..=i`.
pub fn chain_ids(diff_ids: &[DiffId]) -> Vec<ChainId> {
    let mut out: Vec<ChainId> = Vec::with_capacity(diff_ids.len());
    for d in diff_ids {
        let next = match out.last() {
            None => ChainId(d.0.clone()),
            Some(parent) => ChainId(Digest::of_bytes(format!("{parent} {d}").as_bytes())),
        };
        out.push(next);
    }
    out
}

/// Chain ID of `diff` stacked on `parent`.
pub fn chain_id_on(parent: Option<&ChainId>, diff: &DiffId) -> ChainId {
    match parent {
        None => ChainId(diff.0.clone()),
        Some(p) => ChainId(Digest::of_bytes(format!("{p} {diff}").as_bytes())),
    }
}

/// A running sha256 plus a byte count.
#[derive(Clone, Default)]
pub struct Hasher {
    sha: Sha256,
    len: u64,
}

impl Hasher {
    pub fn new() -> Hasher {
        Hasher::default()
    }
    pub fn update(&mut self, b: &[u8]) {
        self.sha.update(b);
        self.len += b.len() as u64;
    }
    pub fn len(&self) -> u64 {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    pub fn finish(self) -> Digest {
        Digest::from_sha(self.sha.finalize().as_slice())
    }
}

/// Hashes everything read through it.
pub struct HashingReader<R> {
    inner: R,
    hasher: Hasher,
}

impl<R: Read> HashingReader<R> {
    pub fn new(inner: R) -> Self {
        HashingReader {
            inner,
            hasher: Hasher::new(),
        }
    }
    /// Bytes read so far.
    pub fn len(&self) -> u64 {
        self.hasher.len()
    }
    pub fn is_empty(&self) -> bool {
        self.hasher.is_empty()
    }
    /// Digest and length of everything read; the inner reader is dropped.
    pub fn finish(self) -> (Digest, u64) {
        let n = self.hasher.len();
        (self.hasher.finish(), n)
    }
    pub fn get_mut(&mut self) -> &mut R {
        &mut self.inner
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

/// Hashes everything written through it.
pub struct HashingWriter<W> {
    inner: W,
    hasher: Hasher,
}

impl<W: Write> HashingWriter<W> {
    pub fn new(inner: W) -> Self {
        HashingWriter {
            inner,
            hasher: Hasher::new(),
        }
    }
    pub fn len(&self) -> u64 {
        self.hasher.len()
    }
    pub fn is_empty(&self) -> bool {
        self.hasher.is_empty()
    }
    /// Digest, length and the inner writer.
    pub fn finish(self) -> (Digest, u64, W) {
        let n = self.hasher.len();
        (self.hasher.finish(), n, self.inner)
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_parts() {
        let d = Digest::of_bytes(b"");
        assert_eq!(
            d.as_str(),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(d.short(), "e3b0c44298fc");
        assert_eq!(Digest::parse(d.as_str()).unwrap(), d);
        assert_eq!(Digest::parse("sha256:abc"), Err(DigestError::Length));
        assert_eq!(Digest::parse("sha256:ABC"), Err(DigestError::Format));
        assert_eq!(Digest::parse("md5:abc"), Err(DigestError::Algorithm));
        assert_eq!(Digest::parse("nocolon"), Err(DigestError::Format));
    }

    #[test]
    fn chain_ids_follow_spec() {
        let a = DiffId(Digest::of_bytes(b"a"));
        let b = DiffId(Digest::of_bytes(b"b"));
        let ids = chain_ids(&[a.clone(), b.clone()]);
        assert_eq!(ids[0].0, a.0);
        assert_eq!(
            ids[1].0,
            Digest::of_bytes(format!("{} {}", a, b).as_bytes())
        );
        assert_eq!(chain_id_on(Some(&ids[0]), &b), ids[1]);
    }

    #[test]
    fn hashing_reader_writer_agree() {
        let mut r = HashingReader::new(&b"hello world"[..]);
        let mut out = Vec::new();
        r.read_to_end(&mut out).unwrap();
        let (d, n) = r.finish();
        let mut w = HashingWriter::new(Vec::new());
        w.write_all(b"hello world").unwrap();
        let (d2, n2, inner) = w.finish();
        assert_eq!((d.clone(), n), (d2, n2));
        assert_eq!(inner, b"hello world");
        assert_eq!(d, Digest::of_bytes(b"hello world"));
    }
}
