//! Blob download with verification and resume.
//!
//! A blob is streamed into `<dir>/sha256-<hex>.partial` while hashing. A dropped connection is
//! retried with `Range: bytes=<have>-`, and a partial file left behind by a failed pull is picked up
//! by the next one the same way (its bytes are rehashed first). Only a file whose size and sha256
//! match the descriptor is handed back; a mismatch deletes the partial file.
//!
//! [`BlobStream`] is the same download as a reader, so `pull` extracts a layer while it arrives.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use nix::fcntl::Flock;

use crate::fsutil::{lock_file, LockMode};
use sha2::{Digest as _, Sha256};
use ureq::http;

use super::client::{backoff, is_transient, Client, Req, ATTEMPTS};
use super::RegistryError;

/// `sha256:<hex>` of `bytes`.
pub fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// The hex part of a `sha256:<64 hex>` digest, or an error naming it.
pub fn sha256_hex(digest: &str) -> Result<&str, RegistryError> {
    match digest.strip_prefix("sha256:") {
        Some(h) if h.len() == 64 && h.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) => {
            Ok(h)
        }
        _ => Err(RegistryError::BadDigest(digest.to_string())),
    }
}

/// Where the partial download of `digest` lives inside `dir`.
pub fn partial_path(dir: &Path, digest: &str) -> Result<PathBuf, RegistryError> {
    Ok(dir.join(format!("sha256-{}.partial", sha256_hex(digest)?)))
}

/// True when `path` still names the open file `f` (not unlinked or replaced).
fn same_file(f: &File, path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (f.metadata(), std::fs::metadata(path)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

/// A verified download (or a stored blob) kept locked until it is moved into the store, so a
/// sweep of stale partial files leaves it alone.
pub struct HeldBlob {
    path: PathBuf,
    _lock: Option<Flock<File>>,
}

impl HeldBlob {
    /// A blob file nobody else removes (the store's own).
    pub fn stored(path: PathBuf) -> HeldBlob {
        HeldBlob { path, _lock: None }
    }
    pub fn path(&self) -> &Path {
        &self.path
    }
    /// True for a download in the partial dir (to be moved into the store).
    pub fn is_partial(&self) -> bool {
        self._lock.is_some()
    }
}

struct Partial {
    /// Locked exclusively: two pulls of the same blob take turns instead of interleaving writes.
    file: Flock<File>,
    path: PathBuf,
    hasher: Sha256,
    have: u64,
}

impl Partial {
    fn open(path: PathBuf, size: u64) -> Result<Partial, RegistryError> {
        let io = |source| RegistryError::Io {
            path: path.clone(),
            source,
        };
        let mut file = lock_file(&path, LockMode::Exclusive).map_err(io)?;
        // A sweep (`Store::gc`) may have unlinked the file while we waited for its lock:
        // then start a new one.
        if !same_file(&file, &path) {
            drop(file);
            return Partial::open(path, size);
        }
        let mut hasher = Sha256::new();
        let mut have = 0u64;
        let len = file.metadata().map_err(io)?.len();
        if len > size {
            file.set_len(0).map_err(io)?;
        } else if len > 0 {
            let mut buf = vec![0u8; 1 << 16];
            loop {
                let n = file.read(&mut buf).map_err(io)?;
                if n == 0 {
                    break;
                }
                hasher.update(&buf[..n]);
                have += n as u64;
            }
        }
        file.seek(SeekFrom::Start(have)).map_err(io)?;
        Ok(Partial {
            file,
            path,
            hasher,
            have,
        })
    }

    fn restart(&mut self) -> Result<(), RegistryError> {
        let io = |source| RegistryError::Io {
            path: self.path.clone(),
            source,
        };
        self.file.set_len(0).map_err(io)?;
        self.file.seek(SeekFrom::Start(0)).map_err(io)?;
        self.hasher = Sha256::new();
        self.have = 0;
        Ok(())
    }
}

/// Download blob `digest` (`size` bytes) of `repo` into `dir`, resuming a partial file, and return
/// the verified file's path. `progress(done, total)` is called as bytes arrive.
pub fn fetch(
    client: &Client,
    repo: &str,
    digest: &str,
    size: u64,
    dir: &Path,
    progress: &(dyn Fn(u64, u64) + Sync),
) -> Result<PathBuf, RegistryError> {
    let mut stream = BlobStream::open(client, repo, digest, size, dir, progress)?;
    stream.skip_prefix();
    let copied = std::io::copy(&mut stream, &mut std::io::sink());
    stream.finish(copied.map(|_| ()))
}

/// Bytes `[start, end)` of blob `digest` of `repo`, with an HTTP `Range` request (retried on
/// transient failures, each attempt failing after `timeout` without progress). The bytes are NOT
/// verified: the caller checks what it decodes from them (the chunk digests of a seekable layer).
pub fn fetch_range(
    client: &Client,
    repo: &str,
    digest: &str,
    start: u64,
    end: u64,
    timeout: std::time::Duration,
) -> Result<Vec<u8>, RegistryError> {
    let mut out = Vec::with_capacity(end.saturating_sub(start) as usize);
    fetch_range_with(client, repo, digest, start, end, timeout, &mut |_, b| {
        out.extend_from_slice(b);
        Ok(())
    })?;
    Ok(out)
}

/// Receives `(offset, bytes)` of a range as it arrives; an error stops the fetch.
pub type RangeSink<'a> = dyn FnMut(u64, &[u8]) -> Result<(), RegistryError> + 'a;

/// [`fetch_range`], handing the bytes to `sink(offset, bytes)` as they arrive, in order; a
/// retry after a dropped connection asks only for the bytes not yet handed on.
pub fn fetch_range_with(
    client: &Client,
    repo: &str,
    digest: &str,
    start: u64,
    end: u64,
    timeout: std::time::Duration,
    sink: &mut RangeSink<'_>,
) -> Result<(), RegistryError> {
    sha256_hex(digest)?;
    let url = client.absolute(&format!("/v2/{repo}/blobs/{digest}"));
    let bad = || RegistryError::BadRange { url: url.clone() };
    let body_err = |source| RegistryError::BodyIo {
        url: url.clone(),
        source,
    };
    let mut pos = start;
    let mut attempt = 0;
    while pos < end {
        attempt += 1;
        let req = Req::new(
            http::Method::GET,
            format!("/v2/{repo}/blobs/{digest}"),
            &format!("repository:{repo}:pull"),
        )
        .header("Range", format!("bytes={pos}-{}", end - 1))
        .timeout(timeout);
        let result = client.send(&req).and_then(|resp| {
            if !resp.status().is_success() {
                return Err(client.api_error(&req.method, &url, resp));
            }
            let skip = match resp.status().as_u16() {
                206 => {
                    let range = resp
                        .headers()
                        .get("content-range")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("");
                    if !range.starts_with(&format!("bytes {pos}-{}/", end - 1)) {
                        return Err(bad());
                    }
                    0
                }
                // A registry that ignores `Range` sends the whole blob: skip to `pos`.
                _ => pos,
            };
            let mut body = resp.into_body().into_reader();
            std::io::copy(&mut (&mut body).take(skip), &mut std::io::sink()).map_err(body_err)?;
            let mut buf = vec![0u8; 256 << 10];
            while pos < end {
                let want = buf.len().min((end - pos) as usize);
                let n = body.read(&mut buf[..want]).map_err(body_err)?;
                if n == 0 {
                    return Err(bad());
                }
                sink(pos, &buf[..n])?;
                pos += n as u64;
            }
            Ok(())
        });
        match result {
            Ok(()) => {}
            Err(e) if attempt < ATTEMPTS && is_transient(&e) => {
                log::debug!("range {pos}-{end} of {digest}: {e}; retrying");
                backoff(attempt);
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// A blob download as a [`Read`]: first the bytes of a partial file left by an earlier attempt
/// (rehashed when opened), then the registry's response, each chunk written to the partial file
/// and hashed before it is handed on. A dropped connection is retried transparently with
/// `Range: bytes=<have>-`. At the end of the stream the size and sha256 are checked; a mismatch
/// deletes the partial file and fails the read. The registry error behind a failed read is kept
/// and returned by [`BlobStream::finish`].
pub struct BlobStream<'a> {
    client: &'a Client,
    url: String,
    scope: String,
    digest: String,
    size: u64,
    part: Partial,
    /// Bytes of the partial file already handed on (the prefix is replayed first).
    replayed: u64,
    /// Bytes of a `200` answer to a `Range` request still to be discarded (already handed on).
    discard: u64,
    body: Option<ureq::BodyReader<'static>>,
    attempt: u32,
    progress: &'a (dyn Fn(u64, u64) + Sync),
    error: Option<RegistryError>,
    verified: bool,
}

impl<'a> BlobStream<'a> {
    pub fn open(
        client: &'a Client,
        repo: &str,
        digest: &str,
        size: u64,
        dir: &Path,
        progress: &'a (dyn Fn(u64, u64) + Sync),
    ) -> Result<BlobStream<'a>, RegistryError> {
        let part = Partial::open(partial_path(dir, digest)?, size)?;
        Ok(BlobStream {
            client,
            url: format!("/v2/{repo}/blobs/{digest}"),
            scope: format!("repository:{repo}:pull"),
            digest: digest.to_string(),
            size,
            part,
            replayed: 0,
            discard: 0,
            body: None,
            attempt: 0,
            progress,
            error: None,
            verified: false,
        })
    }

    /// The partial file being written.
    pub fn path(&self) -> &Path {
        &self.part.path
    }

    /// Bytes already on disk when the stream was opened (resumed download).
    pub fn resumed_from(&self) -> u64 {
        self.part.have.min(self.size)
    }

    /// Do not replay the partial file's prefix (the reader only wants the download done).
    fn skip_prefix(&mut self) {
        self.replayed = self.part.have;
    }

    /// True once the whole blob was received and its size and digest matched.
    pub fn verified(&self) -> bool {
        self.verified
    }

    /// The verified download, still locked. `None` unless [`BlobStream::verified`].
    pub fn into_held(self) -> Option<HeldBlob> {
        if !self.verified {
            return None;
        }
        Some(HeldBlob {
            path: self.part.path,
            _lock: Some(self.part.file),
        })
    }

    /// The registry error (network, size or digest) that made a read of this stream fail, if any.
    pub fn take_error(&mut self) -> Option<RegistryError> {
        self.error.take()
    }

    /// The verified partial file's path, or why the download failed.
    pub fn finish(mut self, read: std::io::Result<()>) -> Result<PathBuf, RegistryError> {
        if let Some(e) = self.error.take() {
            return Err(e);
        }
        match read {
            Ok(()) if self.verified => Ok(self.part.path.clone()),
            Ok(()) => Err(RegistryError::DigestMismatch {
                digest: self.digest.clone(),
            }),
            Err(source) => Err(RegistryError::Io {
                path: self.part.path.clone(),
                source,
            }),
        }
    }

    fn fail(&mut self, e: RegistryError) -> std::io::Error {
        let err = std::io::Error::other(e.to_string());
        self.error = Some(e);
        self.body = None;
        err
    }

    /// Check size and digest at the end of the stream.
    fn verify(&mut self) -> std::io::Result<usize> {
        if self.verified {
            return Ok(0);
        }
        let actual = format!(
            "sha256:{}",
            hex::encode(self.part.hasher.clone().finalize())
        );
        if self.part.have != self.size || actual != self.digest {
            let _ = std::fs::remove_file(&self.part.path);
            let digest = self.digest.clone();
            return Err(self.fail(RegistryError::DigestMismatch { digest }));
        }
        self.verified = true;
        self.body = None;
        Ok(0)
    }

    /// Start the partial file over; the bytes the reader already has will be downloaded again
    /// (written and hashed) but not handed on twice.
    fn restart(&mut self) -> Result<(), RegistryError> {
        self.discard = self.replayed;
        self.part.restart()
    }

    /// Send the (next) request, retrying transient failures.
    fn connect(&mut self) -> Result<(), RegistryError> {
        loop {
            self.attempt += 1;
            match self.request() {
                Ok(()) => return Ok(()),
                Err(e) if self.attempt < ATTEMPTS && is_transient(&e) => {
                    log::debug!(
                        "blob {}: {e}; retrying from byte {}",
                        self.digest,
                        self.part.have
                    );
                    backoff(self.attempt);
                }
                Err(e) => return Err(e),
            }
        }
    }

    fn request(&mut self) -> Result<(), RegistryError> {
        let mut req = Req::new(http::Method::GET, self.url.clone(), &self.scope);
        if self.part.have > 0 {
            req = req.header("Range", format!("bytes={}-", self.part.have));
        }
        let resp = self.client.send(&req)?;
        match resp.status().as_u16() {
            206 => {
                let range = resp
                    .headers()
                    .get("content-range")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("");
                if !range.starts_with(&format!("bytes {}-", self.part.have)) {
                    self.restart()?;
                    return Err(RegistryError::BadRange {
                        url: self.client.absolute(&req.url),
                    });
                }
            }
            200 => {
                // The registry ignored `Range`: start the file over, and drop (but write and
                // hash) the bytes the reader already has.
                self.restart()?;
            }
            416 => {
                self.restart()?;
                return Err(RegistryError::BadRange {
                    url: self.client.absolute(&req.url),
                });
            }
            _ => return Err(self.client.api_error(&req.method, &req.url, resp)),
        }
        (self.progress)(self.part.have, self.size);
        self.body = Some(resp.into_body().into_reader());
        Ok(())
    }

    /// Read the next chunk of the response into `buf`, writing and hashing it.
    fn read_body(&mut self, buf: &mut [u8]) -> Result<usize, RegistryError> {
        loop {
            if self.body.is_none() {
                self.connect()?;
            }
            let Some(body) = self.body.as_mut() else {
                continue;
            };
            let got = match body.read(buf) {
                Ok(0) => Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof)),
                Ok(n) => Ok(n),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => Err(e),
            };
            let n = match got {
                Ok(n) => n,
                Err(source) => {
                    self.body = None;
                    let e = RegistryError::BodyIo {
                        url: self.client.absolute(&self.url),
                        source,
                    };
                    if self.attempt < ATTEMPTS && is_transient(&e) {
                        log::debug!("blob {}: {e}; resuming at {}", self.digest, self.part.have);
                        backoff(self.attempt);
                        continue;
                    }
                    return Err(e);
                }
            };
            if self.part.have + n as u64 > self.size {
                return Err(RegistryError::SizeMismatch {
                    digest: self.digest.clone(),
                    expected: self.size,
                });
            }
            self.part
                .file
                .write_all(&buf[..n])
                .map_err(|source| RegistryError::Io {
                    path: self.part.path.clone(),
                    source,
                })?;
            self.part.hasher.update(&buf[..n]);
            self.part.have += n as u64;
            (self.progress)(self.part.have, self.size);
            if self.discard > 0 {
                // Hand on only what lies beyond the bytes the reader already has.
                let skip = self.discard.min(n as u64) as usize;
                self.discard -= skip as u64;
                if skip < n {
                    buf.copy_within(skip..n, 0);
                    return Ok(n - skip);
                }
                continue;
            }
            return Ok(n);
        }
    }
}

impl Read for BlobStream<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.error.is_some() {
            return Err(std::io::Error::other("blob download failed"));
        }
        if buf.is_empty() {
            return Ok(0);
        }
        if self.replayed < self.part.have {
            let want = buf.len().min((self.part.have - self.replayed) as usize);
            let n = self.part.file.read_at(&mut buf[..want], self.replayed)?;
            if n == 0 {
                return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof));
            }
            self.replayed += n as u64;
            return Ok(n);
        }
        if self.part.have >= self.size {
            return self.verify();
        }
        match self.read_body(buf) {
            Ok(n) => {
                self.replayed = self.part.have;
                Ok(n)
            }
            Err(e) => Err(self.fail(e)),
        }
    }
}
