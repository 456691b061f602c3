//! Content-addressed blobs: `blobs/sha256/<hex>`. A name is never trusted without its hash.

use std::fs::File;
use std::io::{self, Read};
use std::path::PathBuf;

use super::fsutil::{fsync_dir, unique_tmp, Staging};
use super::{io_at, Result, Store, StoreError};
use crate::digest::{Digest, HashingWriter};

impl Store {
    pub fn blob_path(&self, d: &Digest) -> PathBuf {
        self.root.join("blobs/sha256").join(d.hex())
    }

    pub fn has_blob(&self, d: &Digest) -> bool {
        self.blob_path(d).is_file()
    }

    /// Ingest a blob: stream to `tmp/`, hash, check against `expected`, fsync, rename into place.
    /// An existing blob with the same digest is left as is.
    pub fn put_blob(&self, mut reader: impl Read, expected: Option<&Digest>) -> Result<Digest> {
        let staging = Staging::new(unique_tmp(&self.tmp_dir(), "blob"));
        let f = File::create(staging.path()).map_err(io_at(staging.path()))?;
        let mut w = HashingWriter::new(f);
        io::copy(&mut reader, &mut w).map_err(io_at(staging.path()))?;
        let (actual, _, f) = w.finish();
        if let Some(exp) = expected {
            if *exp != actual {
                return Err(StoreError::DigestMismatch {
                    expected: exp.clone(),
                    actual,
                });
            }
        }
        f.sync_all().map_err(io_at(staging.path()))?;
        drop(f);
        let dest = self.blob_path(&actual);
        if !dest.exists() {
            std::fs::rename(staging.path(), &dest).map_err(io_at(&dest))?;
            if let Some(dir) = dest.parent() {
                fsync_dir(dir)?;
            }
        }
        Ok(actual)
    }

    /// Ingest bytes already in memory.
    pub fn put_blob_bytes(&self, bytes: &[u8]) -> Result<Digest> {
        self.put_blob(bytes, None)
    }

    /// Read a whole blob, verifying its digest.
    pub fn read_blob(&self, d: &Digest) -> Result<Vec<u8>> {
        let p = self.blob_path(d);
        let bytes = std::fs::read(&p).map_err(io_at(&p))?;
        let actual = Digest::of_bytes(&bytes);
        if actual != *d {
            return Err(StoreError::DigestMismatch {
                expected: d.clone(),
                actual,
            });
        }
        Ok(bytes)
    }

    /// Open a blob for streaming (unverified; the caller hashes if it needs to).
    pub fn open_blob(&self, d: &Digest) -> Result<File> {
        let p = self.blob_path(d);
        File::open(&p).map_err(io_at(&p))
    }
}
