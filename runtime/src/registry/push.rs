//! `push`: layers (compressed blobs), config, then the manifest under the tag.
//!
//! Each blob is first checked with `HEAD` (`Layer already exists`), then mounted from another
//! repository of the same registry the image is known under (`Mounted from …`), else uploaded:
//! monolithically (`POST` a session, `PUT ?digest=` with the whole body), falling back to chunked
//! `PATCH`es when the registry refuses the single PUT. Layers pulled from a registry are pushed
//! with their original compressed bytes; others are gzipped from the store's exact layer tar.

use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use ureq::http;

use super::client::{resolve_location, Client, Payload, Req};
use super::manifest::{self, Descriptor, ImageManifest, Manifest};
use super::pull::client_for;
use super::{PushError, RegistryError};
use crate::digest::{ChainId, Digest, HashingWriter};
use crate::reference::Reference;
use crate::seekable::{self, LayerCompression};
use crate::store::{detect_compression, Compression, ImageRecord, Store};

/// How to push.
#[derive(Debug, Clone)]
pub struct PushOptions {
    pub insecure: Vec<String>,
    /// Concurrent blob uploads (at least 1).
    pub parallel: usize,
    /// Upload in chunks of this many bytes instead of trying a monolithic PUT first.
    pub chunk_size: Option<u64>,
    /// `--compression`: None or `Gzip` push the layers as stored (gzip unless pulled otherwise).
    pub compression: Option<LayerCompression>,
}

impl Default for PushOptions {
    fn default() -> Self {
        PushOptions {
            insecure: Vec::new(),
            parallel: 3,
            chunk_size: None,
            compression: None,
        }
    }
}

/// What happens to one layer, in Docker's words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PushStatus {
    Preparing,
    Pushing { done: u64, total: u64 },
    Pushed,
    AlreadyExists,
    MountedFrom(String),
}

impl PushStatus {
    pub fn text(&self) -> String {
        match self {
            PushStatus::Preparing => "Preparing".into(),
            PushStatus::Pushing { .. } => "Pushing".into(),
            PushStatus::Pushed => "Pushed".into(),
            PushStatus::AlreadyExists => "Layer already exists".into(),
            PushStatus::MountedFrom(r) => format!("Mounted from {r}"),
        }
    }
}

#[derive(Debug, Clone)]
pub enum PushEvent {
    /// `The push refers to repository [<name>]`.
    Repository(String),
    /// A layer's status; `id` is the 12-hex short diffID, as Docker shows.
    Layer { id: String, status: PushStatus },
}

/// The result of a push: `<tag>: digest: <digest> size: <size>`.
#[derive(Debug, Clone)]
pub struct PushOutcome {
    pub tag: String,
    pub digest: Digest,
    pub size: u64,
}

/// No image under that name in the store: Docker's words.
fn no_such_local(reference: &Reference) -> PushError {
    PushError::NotLocal(reference.familiar())
}

/// One blob to push: where its bytes are and how the manifest describes it.
struct Blob {
    path: PathBuf,
    desc: Descriptor,
    /// Short diffID shown in progress (None for the config).
    id: Option<String>,
    /// Remove after the push (a temp file made for it).
    temporary: bool,
    /// Layer chain (None for the config): other repositories holding it are mount sources.
    chain: Option<ChainId>,
}

impl Drop for Blob {
    fn drop(&mut self) {
        if self.temporary {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> RegistryError + '_ {
    move |source| RegistryError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn tmp_path(store: &Store, what: &str) -> PathBuf {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    // `<pid>-…`: the store's start-up cleanup removes it if we die.
    store
        .root()
        .join("tmp")
        .join(format!("{}-{nanos}-{what}", std::process::id()))
}

/// The original manifest of a pulled image, when its bytes and every blob are still stored.
fn original_manifest(store: &Store, rec: &ImageRecord) -> Option<(ImageManifest, Vec<u8>)> {
    let usable = |bytes: &[u8]| -> Option<ImageManifest> {
        let Ok((Manifest::Image(m), _)) = Manifest::parse(None, bytes) else {
            return None;
        };
        let all = m.config.digest == rec.id.to_string()
            && m.layers.len() == rec.chain_ids.len()
            && m.layers
                .iter()
                .all(|l| Digest::parse(&l.digest).is_ok_and(|d| store.has_blob(&d)));
        all.then_some(*m)
    };
    for r in &rec.repo_digests {
        let Some(bytes) = r.digest().and_then(|d| store.read_blob(d).ok()) else {
            continue;
        };
        if let Some(m) = usable(&bytes) {
            return Some((m, bytes));
        }
        // Pulled through an index: the platform's manifest is one of its entries.
        if let Ok((Manifest::Index(idx), _)) = Manifest::parse(None, &bytes) {
            for e in &idx.manifests {
                let Ok(d) = Digest::parse(&e.digest) else {
                    continue;
                };
                let Ok(child) = store.read_blob(&d) else {
                    continue;
                };
                if let Some(m) = usable(&child) {
                    return Some((m, child));
                }
            }
        }
    }
    None
}

/// The compressed blob of layer `chain`: the one it was pulled as, else gzip of its tar.
fn layer_blob(store: &Store, chain: &ChainId) -> Result<Blob, PushError> {
    let info = store.layer(chain)?;
    let id = Some(info.diff_id.short().to_string());
    if let Some(d) = info
        .compressed_digest
        .as_ref()
        .filter(|d| store.has_blob(d))
    {
        let path = store.blob_path(d);
        let mut head = [0u8; 4];
        let n = File::open(&path)
            .and_then(|mut f| f.read(&mut head))
            .map_err(io(&path))?;
        let media_type = match detect_compression(&head[..n]) {
            Compression::Zstd => "application/vnd.oci.image.layer.v1.tar+zstd",
            _ => manifest::DOCKER_LAYER_GZIP,
        };
        let size = std::fs::metadata(&path).map_err(io(&path))?.len();
        let mut desc = desc(media_type, d, size);
        if media_type == manifest::DOCKER_LAYER_GZIP {
            // eStargz: an OCI layer whose annotations name the TOC (the manifest covers them).
            if let Some(a) = seekable::convert::blob_annotations(&path, info.tar_size) {
                desc.media_type = manifest::OCI_LAYER_GZIP.to_string();
                desc.annotations = Some(a.into_iter().collect());
            }
        }
        return Ok(Blob {
            desc,
            path,
            id,
            temporary: false,
            chain: Some(chain.clone()),
        });
    }
    let path = tmp_path(store, "push.tar.gz");
    let f = File::create(&path).map_err(io(&path))?;
    let mut blob = Blob {
        path: path.clone(),
        desc: desc(manifest::DOCKER_LAYER_GZIP, info.diff_id.digest(), 0),
        id,
        temporary: true,
        chain: Some(chain.clone()),
    };
    let hashing = HashingWriter::new(f);
    let mut gz = flate2::write::GzEncoder::new(hashing, flate2::Compression::default());
    store.layer_tar(chain, &mut gz)?;
    let hashing = gz.finish().map_err(io(&path))?;
    let (digest, size, mut f) = hashing.finish();
    f.flush().and_then(|_| f.sync_all()).map_err(io(&path))?;
    blob.desc = desc(manifest::DOCKER_LAYER_GZIP, &digest, size);
    Ok(blob)
}

const OCI_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";

/// Layer `chain` as a temporary zstd:chunked blob made from its exact tar.
fn zstd_chunked_blob(store: &Store, chain: &ChainId) -> Result<Blob, PushError> {
    let info = store.layer(chain)?;
    let tar_path = tmp_path(store, "push.tar");
    let _spool = TempFile(tar_path.clone());
    let mut w = std::io::BufWriter::new(File::create(&tar_path).map_err(io(&tar_path))?);
    store.layer_tar(chain, &mut w)?;
    w.flush().map_err(io(&tar_path))?;
    drop(w);
    let path = tmp_path(store, "push.tar.zst");
    let mut blob = Blob {
        path: path.clone(),
        desc: desc(OCI_LAYER_ZSTD, info.diff_id.digest(), 0),
        id: Some(info.diff_id.short().to_string()),
        temporary: true,
        chain: Some(chain.clone()),
    };
    let tar = File::open(&tar_path).map_err(io(&tar_path))?;
    let mut out = std::io::BufWriter::new(File::create(&path).map_err(io(&path))?);
    let z = seekable::zstd_chunked::write_zstd_chunked(
        tar,
        &mut out,
        &seekable::zstd_chunked::ZstdChunkedOptions::default(),
    )
    .map_err(crate::seekable::convert::ConvertError::from)?;
    out.flush().map_err(io(&path))?;
    blob.desc = desc(OCI_LAYER_ZSTD, &z.blob_digest, z.size);
    blob.desc.annotations = Some(
        seekable::zstd_chunked::annotations(&z)
            .into_iter()
            .collect(),
    );
    Ok(blob)
}

/// Removes a spool file when dropped.
struct TempFile(PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Every layer of `rec` is stored as an eStargz blob.
fn is_estargz(store: &Store, rec: &ImageRecord) -> bool {
    rec.chain_ids.iter().all(|c| {
        store
            .layer(c)
            .ok()
            .and_then(|l| l.compressed_digest.map(|d| (d, l.tar_size)))
            .filter(|(d, _)| store.has_blob(d))
            .is_some_and(|(d, size)| {
                seekable::convert::blob_annotations(&store.blob_path(&d), size).is_some()
            })
    })
}

fn desc(media_type: &str, d: &Digest, size: u64) -> Descriptor {
    Descriptor {
        media_type: media_type.to_string(),
        digest: d.to_string(),
        size,
        platform: None,
        annotations: None,
        urls: None,
    }
}

/// Push the image `reference` names (tag `latest` when it has none).
pub fn push(
    store: &Store,
    reference: &Reference,
    opts: &PushOptions,
    progress: &(dyn Fn(PushEvent) + Sync),
) -> Result<PushOutcome, PushError> {
    let reference = reference.clone().with_default_tag();
    let rec = store
        .resolve(&reference.to_string())
        .map_err(|_| no_such_local(&reference))?;
    // A lazily pulled image is completed first (as a plain `pull` would): a push sends whole layers.
    crate::lazy::complete_image(store, &rec.id)?;
    let tag = reference
        .tag()
        .map(String::from)
        .ok_or_else(|| no_such_local(&reference))?;
    let rec = match opts.compression {
        Some(LayerCompression::Estargz) if !is_estargz(store, &rec) => {
            let opts = seekable::EstargzOptions::default();
            let converted = seekable::convert::convert_image(store, &rec, &[], &opts)?;
            store.image(&converted.id)?
        }
        _ => rec,
    };
    let client = client_for(reference.domain(), &opts.insecure)?;
    let repo = reference.path().to_string();
    progress(PushEvent::Repository(reference.name()));

    // zstd:chunked keeps the tar (and so the config): only the layer blobs are re-encoded.
    let zstd_chunked = opts.compression == Some(LayerCompression::ZstdChunked);
    let (mut blobs, original) = match original_manifest(store, &rec).filter(|_| !zstd_chunked) {
        Some((m, bytes)) => {
            let blobs = m
                .layers
                .iter()
                .zip(&rec.chain_ids)
                .map(|(l, c)| {
                    let d = Digest::parse(&l.digest)?;
                    let info = store.layer(c)?;
                    Ok(Blob {
                        path: store.blob_path(&d),
                        desc: l.clone(),
                        id: Some(info.diff_id.short().to_string()),
                        temporary: false,
                        chain: Some(c.clone()),
                    })
                })
                .collect::<Result<Vec<_>, PushError>>()?;
            (blobs, Some((m, bytes)))
        }
        None => (
            rec.chain_ids
                .iter()
                .map(|c| match zstd_chunked {
                    true => zstd_chunked_blob(store, c),
                    false => layer_blob(store, c),
                })
                .collect::<Result<Vec<_>, _>>()?,
            None,
        ),
    };
    for b in &blobs {
        if let Some(id) = &b.id {
            progress(PushEvent::Layer {
                id: id.clone(),
                status: PushStatus::Preparing,
            });
        }
    }
    let config_path = store.blob_path(rec.id.digest());
    let config_size = std::fs::metadata(&config_path)
        .map_err(io(&config_path))?
        .len();
    let config_type = original
        .as_ref()
        .map(|(m, _)| m.config.media_type.clone())
        .unwrap_or_else(|| manifest::DOCKER_CONFIG.to_string());
    blobs.push(Blob {
        path: config_path,
        desc: desc(&config_type, rec.id.digest(), config_size),
        id: None,
        temporary: false,
        chain: None,
    });
    let sources = MountSources::new(store, &rec, &reference);
    let denied = |e: RegistryError| match e.status() {
        Some(401 | 403) => PushError::Registry(RegistryError::PushDenied),
        _ => PushError::Registry(e),
    };
    // Upload on `parallel` threads; the first error wins and stops the others taking new work.
    let next = std::sync::atomic::AtomicUsize::new(0);
    let failed: std::sync::Mutex<Option<RegistryError>> = std::sync::Mutex::new(None);
    std::thread::scope(|s| {
        for _ in 0..opts.parallel.clamp(1, blobs.len().max(1)) {
            s.spawn(|| loop {
                if failed.lock().map(|f| f.is_some()).unwrap_or(true) {
                    break;
                }
                let i = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let Some(b) = blobs.get(i) else { break };
                let from = sources.for_blob(b.chain.as_ref());
                match push_blob(&client, &repo, b, &from, opts, progress) {
                    Ok(status) => {
                        if let Some(id) = &b.id {
                            progress(PushEvent::Layer {
                                id: id.clone(),
                                status,
                            });
                        }
                    }
                    Err(e) => {
                        if let Ok(mut f) = failed.lock() {
                            f.get_or_insert(e);
                        }
                        break;
                    }
                }
            });
        }
    });
    if let Some(e) = failed.into_inner().ok().flatten() {
        return Err(denied(e));
    }

    let (media_type, body) = match original {
        Some((m, bytes)) => (
            m.media_type
                .unwrap_or_else(|| manifest::OCI_MANIFEST.to_string()),
            bytes,
        ),
        None => {
            let zstd = blobs.iter().any(|b| b.desc.media_type.ends_with("zstd"));
            let annotated = blobs.iter().any(|b| b.desc.annotations.is_some());
            let (mt, config_mt, layer_mt) = if zstd || annotated {
                (manifest::OCI_MANIFEST, manifest::OCI_CONFIG, None)
            } else {
                (
                    manifest::DOCKER_MANIFEST,
                    manifest::DOCKER_CONFIG,
                    Some(manifest::DOCKER_LAYER_GZIP),
                )
            };
            let config = blobs
                .pop()
                .map(|b| desc(config_mt, rec.id.digest(), b.desc.size));
            let Some(config) = config else {
                return Err(no_such_local(&reference));
            };
            let layers = blobs
                .iter()
                .map(|b| {
                    let mut d = b.desc.clone();
                    if let Some(mt) = layer_mt {
                        d.media_type = mt.to_string();
                    } else if d.media_type == manifest::DOCKER_LAYER_GZIP {
                        d.media_type = manifest::OCI_LAYER_GZIP.to_string();
                    }
                    d
                })
                .collect();
            let m = ImageManifest {
                schema_version: 2,
                media_type: Some(mt.to_string()),
                config,
                layers,
                annotations: None,
            };
            let bytes = serde_json::to_vec_pretty(&m)
                .map_err(|e| RegistryError::from(manifest::ManifestError::from(e)))?;
            (mt.to_string(), bytes)
        }
    };
    let scope = format!("repository:{repo}:pull,push");
    let req = Req::new(
        http::Method::PUT,
        format!("/v2/{repo}/manifests/{tag}"),
        &scope,
    )
    .header("Content-Type", media_type)
    .payload(Payload::Bytes(&body));
    client.send_ok(&req).map_err(denied)?;
    let digest = Digest::of_bytes(&body);
    // Like Docker, remember the digest the image now has in that repository.
    let _ = store.put_blob(&body[..], Some(&digest));
    let _ = store.set_ref(&rec.id, &reference.repository().with_digest(digest.clone()));
    store.image_event("push", &reference.familiar(), &reference.familiar_name());
    Ok(PushOutcome {
        tag,
        digest,
        size: body.len() as u64,
    })
}

/// Repositories of the target registry a blob can be mounted from (`?mount=&from=`): those the
/// image itself is known under, then those of other local images holding the same layer (a
/// committed image's base layers were pulled as another repository, e.g. `library/nginx`).
struct MountSources {
    own: Vec<String>,
    by_chain: std::collections::BTreeMap<ChainId, Vec<String>>,
}

/// At most this many mount attempts per blob, as Docker does.
const MAX_MOUNT_SOURCES: usize = 3;

impl MountSources {
    fn new(store: &Store, rec: &ImageRecord, target: &Reference) -> MountSources {
        let repo = target.path();
        let in_registry = |r: &Reference| r.domain() == target.domain() && r.path() != repo;
        let mut own: Vec<String> = Vec::new();
        for r in rec.repo_tags.iter().chain(&rec.repo_digests) {
            if in_registry(r) && !own.iter().any(|o| o == r.path()) {
                own.push(r.path().to_string());
            }
        }
        let mut by_chain: std::collections::BTreeMap<ChainId, Vec<String>> = Default::default();
        for img in store.images().unwrap_or_default() {
            if img.id == rec.id {
                continue;
            }
            for r in img.repo_tags.iter().chain(&img.repo_digests) {
                if !in_registry(r) {
                    continue;
                }
                for c in &img.chain_ids {
                    let list = by_chain.entry(c.clone()).or_default();
                    if !list.iter().any(|o| o == r.path()) {
                        list.push(r.path().to_string());
                    }
                }
            }
        }
        MountSources { own, by_chain }
    }

    fn for_blob(&self, chain: Option<&ChainId>) -> Vec<String> {
        let mut out = self.own.clone();
        if let Some(list) = chain.and_then(|c| self.by_chain.get(c)) {
            for r in list {
                if !out.contains(r) {
                    out.push(r.clone());
                }
            }
        }
        out.truncate(MAX_MOUNT_SOURCES);
        out
    }
}

/// Make `b` present in `repo`; returns the status Docker would print.
fn push_blob(
    client: &Client,
    repo: &str,
    b: &Blob,
    sources: &[String],
    opts: &PushOptions,
    progress: &(dyn Fn(PushEvent) + Sync),
) -> Result<PushStatus, RegistryError> {
    let scope = format!("repository:{repo}:pull,push");
    let d = &b.desc.digest;
    let head = Req::new(http::Method::HEAD, format!("/v2/{repo}/blobs/{d}"), &scope);
    let resp = client.send(&head)?;
    if resp.status().is_success() {
        return Ok(PushStatus::AlreadyExists);
    }
    let mut location = None;
    for src in sources {
        let mount_scope = format!("{scope} repository:{src}:pull");
        let req = Req::new(
            http::Method::POST,
            format!("/v2/{repo}/blobs/uploads/?mount={d}&from={src}"),
            &mount_scope,
        );
        let resp = client.send(&req)?;
        match resp.status().as_u16() {
            201 => return Ok(PushStatus::MountedFrom(src.clone())),
            202 => {
                location = resp
                    .headers()
                    .get("location")
                    .and_then(|l| l.to_str().ok())
                    .map(String::from);
                break;
            }
            _ => continue,
        }
    }
    let location = match location {
        Some(l) => l,
        None => start_upload(client, repo, &scope)?,
    };
    let base = format!("{}/v2/{repo}/blobs/uploads/", client.base());
    let location = resolve_location(&base, &location);
    let id = b.id.clone();
    let report = |done: u64| {
        if let Some(id) = &id {
            progress(PushEvent::Layer {
                id: id.clone(),
                status: PushStatus::Pushing {
                    done,
                    total: b.desc.size,
                },
            });
        }
    };
    if let Some(chunk) = opts.chunk_size {
        upload_chunked(client, &scope, &location, b, chunk.max(1), &report)?;
        return Ok(PushStatus::Pushed);
    }
    let put = Req::new(http::Method::PUT, with_digest(&location, d), &scope)
        .header("Content-Type", "application/octet-stream")
        .payload(Payload::File {
            path: &b.path,
            offset: 0,
            len: b.desc.size,
        });
    match client.send_ok(&put) {
        Ok(_) => {
            report(b.desc.size);
            Ok(PushStatus::Pushed)
        }
        // Refused (413 from a size-limited front end, 5xx) or cut off mid-body: try in chunks.
        Err(e)
            if matches!(e.status(), Some(s) if s != 401 && s != 403 && s != 404)
                || matches!(
                    e,
                    RegistryError::Transport { .. } | RegistryError::BodyIo { .. }
                ) =>
        {
            log::debug!("monolithic upload of {d} refused ({e}); uploading in chunks");
            let location = resolve_location(&base, &start_upload(client, repo, &scope)?);
            upload_chunked(client, &scope, &location, b, 8 << 20, &report)?;
            Ok(PushStatus::Pushed)
        }
        Err(e) => Err(e),
    }
}

fn start_upload(client: &Client, repo: &str, scope: &str) -> Result<String, RegistryError> {
    let req = Req::new(
        http::Method::POST,
        format!("/v2/{repo}/blobs/uploads/"),
        scope,
    );
    let resp = client.send_ok(&req)?;
    resp.headers()
        .get("location")
        .and_then(|l| l.to_str().ok())
        .map(String::from)
        .ok_or(RegistryError::NoUploadLocation {
            repo: repo.to_string(),
        })
}

fn with_digest(location: &str, digest: &str) -> String {
    let sep = if location.contains('?') { '&' } else { '?' };
    format!("{location}{sep}digest={}", super::client::encode(digest))
}

fn upload_chunked(
    client: &Client,
    scope: &str,
    location: &str,
    b: &Blob,
    chunk: u64,
    report: &dyn Fn(u64),
) -> Result<(), RegistryError> {
    let mut location = location.to_string();
    let mut offset = 0u64;
    let total = b.desc.size;
    while offset < total {
        let len = chunk.min(total - offset);
        let req = Req::new(http::Method::PATCH, location.clone(), scope)
            .header("Content-Type", "application/octet-stream")
            .header("Content-Range", format!("{offset}-{}", offset + len - 1))
            .payload(Payload::File {
                path: &b.path,
                offset,
                len,
            });
        let resp = client.send_ok(&req)?;
        if let Some(l) = resp.headers().get("location").and_then(|l| l.to_str().ok()) {
            location = resolve_location(&location, l);
        }
        offset += len;
        report(offset);
    }
    let put = Req::new(
        http::Method::PUT,
        with_digest(&location, &b.desc.digest),
        scope,
    );
    client.send_ok(&put)?;
    Ok(())
}
