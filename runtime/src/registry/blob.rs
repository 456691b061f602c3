//! Blob download with verification and resume.
//!
//! A blob is streamed into `<dir>/sha256-<hex>.partial` while hashing. A dropped connection is
//! retried with `Range: bytes=<have>-`, and a partial file left behind by a failed pull is picked up
//! by the next one the same way (its bytes are rehashed first). Only a file whose size and sha256
//! match the descriptor is handed back; a mismatch deletes the partial file.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};
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
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io)?;
        let mut file =
            Flock::lock(file, FlockArg::LockExclusive).map_err(|(_, errno)| RegistryError::Io {
                path: path.clone(),
                source: std::io::Error::from(errno),
            })?;
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
    let path = partial_path(dir, digest)?;
    let mut part = Partial::open(path.clone(), size)?;
    let scope = format!("repository:{repo}:pull");
    let url = format!("/v2/{repo}/blobs/{digest}");
    let mut attempt = 0;
    while part.have < size || size == 0 {
        attempt += 1;
        let mut req = Req::new(http::Method::GET, url.clone(), &scope);
        if part.have > 0 {
            req = req.header("Range", format!("bytes={}-", part.have));
        }
        match download_once(client, &req, &mut part, size, progress) {
            Ok(()) => break,
            Err(e) if attempt < ATTEMPTS && is_transient(&e) => {
                log::debug!("blob {digest}: {e}; retrying from byte {}", part.have);
                backoff(attempt);
            }
            Err(e) => return Err(e),
        }
    }
    let actual = format!("sha256:{}", hex::encode(part.hasher.clone().finalize()));
    if part.have != size || actual != digest {
        drop(part);
        let _ = std::fs::remove_file(&path);
        return Err(RegistryError::DigestMismatch {
            digest: digest.to_string(),
        });
    }
    Ok(path)
}

fn download_once(
    client: &Client,
    req: &Req<'_>,
    part: &mut Partial,
    size: u64,
    progress: &(dyn Fn(u64, u64) + Sync),
) -> Result<(), RegistryError> {
    let resp = client.send(req)?;
    let status = resp.status().as_u16();
    match status {
        206 => {
            let range = resp
                .headers()
                .get("content-range")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            if !range.starts_with(&format!("bytes {}-", part.have)) {
                part.restart()?;
                return Err(RegistryError::BadRange {
                    url: client.absolute(&req.url),
                });
            }
        }
        200 => part.restart()?,
        416 => {
            part.restart()?;
            return Err(RegistryError::BadRange {
                url: client.absolute(&req.url),
            });
        }
        _ => return Err(client.api_error(&req.method, &req.url, resp)),
    }
    progress(part.have, size);
    let mut body = resp.into_body().into_reader();
    let mut buf = vec![0u8; 1 << 17];
    loop {
        let n = match body.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(source) => {
                return Err(RegistryError::BodyIo {
                    url: client.absolute(&req.url),
                    source,
                })
            }
        };
        if part.have + n as u64 > size {
            return Err(RegistryError::SizeMismatch {
                digest: req.url.rsplit('/').next().unwrap_or("").to_string(),
                expected: size,
            });
        }
        part.file
            .write_all(&buf[..n])
            .map_err(|source| RegistryError::Io {
                path: part.path.clone(),
                source,
            })?;
        part.hasher.update(&buf[..n]);
        part.have += n as u64;
        progress(part.have, size);
    }
    if part.have < size {
        return Err(RegistryError::BodyIo {
            url: client.absolute(&req.url),
            source: std::io::Error::from(std::io::ErrorKind::UnexpectedEof),
        });
    }
    Ok(())
}
