//! `pull`: manifest → (index → platform) → config → layers, into the image store.
//!
//! Layers are downloaded by `parallel` threads, each blob streamed at once into a partial file
//! under `<root>/partial/` (outside `tmp/`, which the store empties, so an interrupted pull
//! resumes) and through decompression and extraction into a staging dir of the store; the
//! calling thread makes the staged layers visible in order as they complete. A layer becomes visible only after its compressed
//! digest and size (download) and its diffID (extraction) were verified; the image becomes visible
//! last, with `add_image`. A failed pull releases the layers it created and keeps its partial
//! files, so the next pull resumes or reuses them.

use std::collections::VecDeque;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Mutex};

use ureq::http;

use super::auth;
use super::blob;
use super::client::{Client, Endpoint, Req};
use super::manifest::{self, Descriptor, ImageManifest, Manifest, Platform};
use super::mirrors;
use super::{PullError, RegistryError};
use crate::digest::{chain_ids, ChainId, DiffId, Digest, ImageId};
use crate::reference::Reference;
use crate::store::{ImageConfig, StagedLayer, Store};

/// How to pull.
#[derive(Debug, Clone)]
pub struct PullOptions {
    /// Platform to select from an index; the host's when `None`.
    pub platform: Option<Platform>,
    /// Registries reached over plain HTTP (loopback always is).
    pub insecure: Vec<String>,
    /// Docker Hub mirrors, tried in order before Docker Hub (the engine reads them from the
    /// daemon config once; none by default).
    pub mirrors: Vec<mirrors::Mirror>,
    /// Concurrent layer downloads (at least 1).
    pub parallel: usize,
    /// Pull seekable layers lazily (`crate::lazy::pull_lazy`; `registry::pull` ignores it).
    pub lazy: bool,
}

impl Default for PullOptions {
    fn default() -> Self {
        PullOptions {
            platform: None,
            insecure: Vec::new(),
            mirrors: Vec::new(),
            parallel: 3,
            lazy: false,
        }
    }
}

/// What happens to one layer, in Docker's words.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayerStatus {
    AlreadyExists,
    PullingFsLayer,
    Waiting,
    Downloading { done: u64, total: u64 },
    VerifyingChecksum,
    DownloadComplete,
    Extracting,
    PullComplete,
}

impl LayerStatus {
    /// Docker's text (without progress bar).
    pub fn text(&self) -> &'static str {
        match self {
            LayerStatus::AlreadyExists => "Already exists",
            LayerStatus::PullingFsLayer => "Pulling fs layer",
            LayerStatus::Waiting => "Waiting",
            LayerStatus::Downloading { .. } => "Downloading",
            LayerStatus::VerifyingChecksum => "Verifying Checksum",
            LayerStatus::DownloadComplete => "Download complete",
            LayerStatus::Extracting => "Extracting",
            LayerStatus::PullComplete => "Pull complete",
        }
    }
}

/// Progress of a pull, in the order Docker prints it.
#[derive(Debug, Clone)]
pub enum PullEvent {
    /// `<tag or digest>: Pulling from <familiar repository path>`.
    PullingFrom {
        reference: String,
        repository: String,
    },
    /// A layer's new status; `id` is the 12-hex short blob digest.
    Layer { id: String, status: LayerStatus },
    /// `Digest: sha256:…` (the manifest or index digest the reference resolved to).
    Digest(String),
}

/// The result of a successful pull.
#[derive(Debug, Clone)]
pub struct PullOutcome {
    pub image_id: ImageId,
    /// The reference pulled (with its tag or digest), canonical.
    pub reference: Reference,
    /// Digest of the manifest (or index) the reference resolved to.
    pub manifest_digest: Digest,
    /// The reference already pointed at this image and no layer had to be fetched.
    pub up_to_date: bool,
}

/// Where partial downloads live for a store.
pub fn partial_dir(store: &Store) -> PathBuf {
    store.root().join("partial")
}

/// A client for `reference`'s registry with stored credentials.
pub fn client_for(registry: &str, insecure: &[String]) -> Result<Client, RegistryError> {
    let creds = auth::lookup(registry)?;
    Ok(Client::new(Endpoint::new(registry, insecure), creds))
}

/// The tags of `reference`'s repository (`GET /v2/<repo>/tags/list`), sorted.
pub fn list_tags(reference: &Reference, opts: &PullOptions) -> Result<Vec<String>, PullError> {
    // Docker Hub repositories: the first mirror that answers lists the tags.
    for m in mirrors::for_registry(reference.domain(), &opts.mirrors) {
        match m
            .client(&opts.insecure)
            .map_err(PullError::from)
            .and_then(|c| tags_from(&c, reference))
        {
            Ok(tags) => return Ok(tags),
            Err(e) => log::debug!("mirror {}: {e}; trying the next", m.host),
        }
    }
    let client = client_for(reference.domain(), &opts.insecure)?;
    tags_from(&client, reference)
}

fn tags_from(client: &Client, reference: &Reference) -> Result<Vec<String>, PullError> {
    let repo = reference.path();
    let req = Req::new(
        http::Method::GET,
        format!("/v2/{repo}/tags/list"),
        &format!("repository:{repo}:pull"),
    );
    let mut resp = client
        .send_ok(&req)
        .map_err(|e| map_error(e, client, reference))?;
    #[derive(serde::Deserialize)]
    struct Tags {
        #[serde(default)]
        tags: Option<Vec<String>>,
    }
    let body = read_small(&mut resp, &client.absolute(&req.url))?;
    let tags: Tags = serde_json::from_slice(&body)
        .map_err(manifest::ManifestError::from)
        .map_err(RegistryError::from)?;
    let mut tags = tags.tags.unwrap_or_default();
    tags.sort();
    Ok(tags)
}

fn read_small(resp: &mut http::Response<ureq::Body>, url: &str) -> Result<Vec<u8>, RegistryError> {
    resp.body_mut()
        .with_config()
        .limit(32 << 20)
        .read_to_vec()
        .map_err(|e| RegistryError::BodyIo {
            url: url.to_string(),
            source: e.into_io(),
        })
}

/// Turn a registry error on a pull into Docker's message for it.
pub(crate) fn map_error(e: RegistryError, client: &Client, reference: &Reference) -> PullError {
    let familiar = reference.familiar();
    let name = reference.familiar_name();
    let errors = match &e {
        RegistryError::Api { errors, .. } => errors.clone(),
        _ => Vec::new(),
    };
    let pe = match (e.status(), e.code()) {
        (_, Some("MANIFEST_UNKNOWN")) | (Some(404), None) => RegistryError::ManifestUnknown {
            reference: familiar,
            errors: if errors.is_empty() {
                vec![super::ApiError {
                    code: "MANIFEST_UNKNOWN".into(),
                    message: "manifest unknown".into(),
                }]
            } else {
                errors
            },
        },
        (_, Some("NAME_UNKNOWN")) => RegistryError::NameUnknown { name, errors },
        (Some(401), _) if client.uses_basic() || !client.uses_bearer() => {
            RegistryError::Unauthorized {
                url: match &e {
                    RegistryError::Api { url, .. } | RegistryError::Unauthorized { url, .. } => {
                        url.clone()
                    }
                    _ => client.base(),
                },
                errors: Vec::new(),
                with_credentials: client.has_credentials(),
            }
        }
        (Some(401 | 403), _) | (_, Some("DENIED")) => RegistryError::AccessDenied { name, errors },
        _ => e,
    };
    PullError::Registry(pe)
}

/// Fetch a manifest by tag or digest: `(decoded, media type, raw bytes, digest)`.
fn fetch_manifest(
    client: &Client,
    repo: &str,
    reference: &str,
) -> Result<(Manifest, Vec<u8>, Digest), RegistryError> {
    let req = Req::new(
        http::Method::GET,
        format!("/v2/{repo}/manifests/{reference}"),
        &format!("repository:{repo}:pull"),
    )
    .header("Accept", manifest::ACCEPT_MANIFESTS);
    let mut resp = client.send_ok(&req)?;
    let ct = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .map(String::from);
    let body = read_small(&mut resp, &client.absolute(&req.url))?;
    let digest = Digest::of_bytes(&body);
    if reference.starts_with("sha256:") && digest.as_str() != reference {
        return Err(RegistryError::ManifestDigestMismatch {
            digest: reference.to_string(),
        });
    }
    let (m, _) = Manifest::parse(ct.as_deref(), &body)?;
    Ok((m, body, digest))
}

pub(crate) fn fetch_small_blob(
    client: &Client,
    repo: &str,
    d: &Descriptor,
) -> Result<Vec<u8>, RegistryError> {
    let req = Req::new(
        http::Method::GET,
        format!("/v2/{repo}/blobs/{}", d.digest),
        &format!("repository:{repo}:pull"),
    );
    let mut resp = client.send_ok(&req)?;
    let body = read_small(&mut resp, &client.absolute(&req.url))?;
    if blob::sha256_digest(&body) != d.digest || body.len() as u64 != d.size {
        return Err(RegistryError::DigestMismatch {
            digest: d.digest.clone(),
        });
    }
    Ok(body)
}

pub(crate) fn short(digest: &str) -> String {
    digest
        .strip_prefix("sha256:")
        .unwrap_or(digest)
        .chars()
        .take(12)
        .collect()
}

/// What a tag or digest resolved to: the image manifest for our platform, its bytes, and the
/// bytes and digest of the top-level manifest (an index, or the image manifest itself).
pub(crate) struct Resolved {
    pub image: ImageManifest,
    pub image_bytes: Vec<u8>,
    pub top_bytes: Vec<u8>,
    pub top_digest: Digest,
}

/// Fetch `reference`'s manifest; through an index, select the platform and fetch its manifest.
pub(crate) fn resolve_manifest(
    client: &Client,
    repo: &str,
    reference: &str,
    opts: &PullOptions,
) -> Result<Resolved, RegistryError> {
    let (top, top_bytes, top_digest) = fetch_manifest(client, repo, reference)?;
    let (image, image_bytes) = match top {
        Manifest::Image(m) => (*m, top_bytes.clone()),
        Manifest::Index(idx) => {
            let want = opts.platform.clone().unwrap_or_else(Platform::host);
            let d = manifest::select_platform(&idx, &want).ok_or_else(|| {
                RegistryError::NoMatchingPlatform {
                    platform: want.to_string(),
                }
            })?;
            match fetch_manifest(client, repo, &d.digest)? {
                (Manifest::Image(m), bytes, _) => (*m, bytes),
                (Manifest::Index(_), _, _) => {
                    return Err(RegistryError::Manifest(
                        manifest::ManifestError::UnsupportedType("nested index".into()),
                    ))
                }
            }
        }
    };
    Ok(Resolved {
        image,
        image_bytes,
        top_bytes,
        top_digest,
    })
}

/// What a pull, whole or lazy, knows before its first layer: the client that serves it (the
/// first configured mirror that has the manifest, in order — Docker's fallback — else the
/// registry itself), the platform's manifest and the image config it names, whose diffIDs are
/// checked against the manifest's layers.
pub(crate) struct Prelude {
    pub client: Client,
    pub repo: String,
    pub tag_or_digest: String,
    /// The mirror serving the pull, if one does.
    pub mirror: Option<mirrors::Mirror>,
    pub resolved: Resolved,
    pub config_id: Digest,
    pub config_bytes: Vec<u8>,
    pub diff_ids: Vec<DiffId>,
}

/// The end of a pull: the image manifest (so `push` can send the same bytes, same digest, back)
/// and the index it was chosen from (the repo digest names it) as blobs — those this adds go to
/// `added` — and the image record under `reference` and its repo digest.
pub(crate) fn record_image(
    store: &Store,
    reference: &Reference,
    manifests: [&Vec<u8>; 2],
    top_digest: &Digest,
    config_bytes: &[u8],
    added: &mut Vec<Digest>,
) -> Result<ImageId, PullError> {
    for bytes in manifests {
        let d = Digest::of_bytes(bytes);
        if !store.has_blob(&d) {
            store.put_blob(&bytes[..], Some(&d))?;
            added.push(d);
        }
    }
    let mut refs = vec![reference.repository().with_digest(top_digest.clone())];
    if reference.digest().is_none() {
        refs.insert(0, reference.clone());
    }
    Ok(store.add_image(config_bytes, &refs, None)?)
}

/// Resolve `reference` (already a docker ref) and fetch its config: see [`Prelude`].
/// `resolved(tag_or_digest)` runs once the manifest is known, before the config is fetched
/// (where a whole pull prints Docker's `…: Pulling from …`).
pub(crate) fn prelude(
    store: &Store,
    reference: &Reference,
    opts: &PullOptions,
    resolved: &mut dyn FnMut(&str),
) -> Result<Prelude, PullError> {
    let repo = reference.path().to_string();
    let tag_or_digest = match (reference.digest(), reference.tag()) {
        (Some(d), _) => d.to_string(),
        (None, Some(t)) => t.to_string(),
        (None, None) => "latest".to_string(),
    };
    let mut via_mirror = None;
    for m in mirrors::for_registry(reference.domain(), &opts.mirrors) {
        let found = m
            .client(&opts.insecure)
            .and_then(|c| resolve_manifest(&c, &repo, &tag_or_digest, opts).map(|r| (c, r)));
        match found {
            Ok((c, r)) => {
                via_mirror = Some((c, r, m.clone()));
                break;
            }
            Err(e) => log::debug!("mirror {}: {e}; trying the next", m.host),
        }
    }
    let (client, manifest, mirror) = match via_mirror {
        Some((c, r, m)) => (c, r, Some(m)),
        None => {
            let client = client_for(reference.domain(), &opts.insecure)?;
            let r = resolve_manifest(&client, &repo, &tag_or_digest, opts)
                .map_err(|e| map_error(e, &client, reference))?;
            (client, r, None)
        }
    };
    resolved(&tag_or_digest);
    let image = &manifest.image;
    let config_id = Digest::parse(&image.config.digest)
        .map_err(|_| RegistryError::BadDigest(image.config.digest.clone()))?;
    let config_bytes = if store.has_blob(&config_id) {
        store.read_blob(&config_id)?
    } else {
        fetch_small_blob(&client, &repo, &image.config)
            .map_err(|e| map_error(e, &client, reference))?
    };
    let config: ImageConfig =
        serde_json::from_slice(&config_bytes).map_err(crate::store::StoreError::InvalidConfig)?;
    let diff_ids: Vec<DiffId> = config.rootfs.diff_ids;
    if diff_ids.len() != image.layers.len() {
        return Err(PullError::LayerCount {
            layers: image.layers.len(),
            diff_ids: diff_ids.len(),
        });
    }
    Ok(Prelude {
        client,
        repo,
        tag_or_digest,
        mirror,
        resolved: manifest,
        config_id,
        config_bytes,
        diff_ids,
    })
}

/// Pull `reference` (which must carry a tag or a digest) into `store`.
pub fn pull(
    store: &Store,
    reference: &Reference,
    opts: &PullOptions,
    progress: &(dyn Fn(PullEvent) + Sync),
) -> Result<PullOutcome, PullError> {
    let reference = reference.clone().docker_ref();
    // Layers and blobs this pull adds are protected from a concurrent `Store::gc` until the
    // image record names them.
    let _lease = store.lease_scope();
    let Prelude {
        client,
        repo,
        tag_or_digest: _,
        mirror: _,
        resolved:
            Resolved {
                image,
                image_bytes,
                top_bytes,
                top_digest,
            },
        config_id,
        config_bytes,
        diff_ids,
    } = prelude(store, &reference, opts, &mut |tag_or_digest| {
        progress(PullEvent::PullingFrom {
            reference: tag_or_digest.to_string(),
            repository: reference.path().to_string(),
        })
    })?;
    for l in &image.layers {
        blob::sha256_hex(&l.digest)?;
    }
    let chains = chain_ids(&diff_ids);
    let image_id = ImageId::from(config_id.clone());
    let previous = store.resolve(&reference.to_string()).ok().map(|r| r.id);

    // Which layers are missing. Docker prints no layer lines for an image it already has.
    let have_image = store.image(&image_id).is_ok();
    let mut missing = Vec::new();
    for (i, l) in image.layers.iter().enumerate() {
        if store.hold_layer(&chains[i])? {
            if have_image {
                continue;
            }
            progress(PullEvent::Layer {
                id: short(&l.digest),
                status: LayerStatus::AlreadyExists,
            });
        } else {
            missing.push(i);
        }
    }
    for &i in &missing {
        progress(PullEvent::Layer {
            id: short(&image.layers[i].digest),
            status: LayerStatus::PullingFsLayer,
        });
    }
    // Layers beyond the first `parallel` wait for a download slot, as Docker shows.
    for &i in missing.iter().skip(opts.parallel.max(1)) {
        progress(PullEvent::Layer {
            id: short(&image.layers[i].digest),
            status: LayerStatus::Waiting,
        });
    }
    let pdir = partial_dir(store);
    std::fs::create_dir_all(&pdir).map_err(|source| RegistryError::Io {
        path: pdir.clone(),
        source,
    })?;
    remove_stale_partials(&pdir);
    store_left_blobs(store, &client, &repo, &image.layers, &missing, &pdir);
    let mut created: Vec<ChainId> = Vec::new();
    let mut added: Vec<Digest> = Vec::new();
    let touched: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());
    let result = download_and_extract(
        store,
        &client,
        &repo,
        &image.layers,
        &diff_ids,
        &chains,
        &missing,
        &pdir,
        opts,
        progress,
        &mut created,
        &mut added,
        &touched,
    )
    .map_err(|e| match e {
        PullError::Registry(r) => map_error(r, &client, &reference),
        other => other,
    })
    .and_then(|()| {
        record_image(
            store,
            &reference,
            [&image_bytes, &top_bytes],
            &top_digest,
            &config_bytes,
            &mut added,
        )
    });
    let id = match result {
        Ok(id) => id,
        Err(e) => {
            created.reverse();
            let _ = store.release_layers(&created);
            if is_no_space(&e) {
                // A full disk: nothing of this pull is worth keeping for a resume (the config
                // blob too, unless an image record names it).
                added.push(config_id.clone());
                let _ = store.discard_blobs(added);
                for p in touched.into_inner().unwrap_or_default() {
                    let _ = std::fs::remove_file(p);
                }
            }
            return Err(e);
        }
    };
    debug_assert_eq!(id, image_id);
    progress(PullEvent::Digest(top_digest.to_string()));
    store.image_event("pull", &reference.familiar(), &reference.familiar_name());
    Ok(PullOutcome {
        up_to_date: missing.is_empty() && previous.as_ref() == Some(&id),
        image_id: id,
        reference,
        manifest_digest: top_digest,
    })
}

/// True when `e` comes from a full disk (ENOSPC) or an exhausted quota (EDQUOT).
pub fn is_no_space(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(c) = cur {
        if let Some(io) = c.downcast_ref::<std::io::Error>() {
            if matches!(
                io.raw_os_error(),
                Some(nix::libc::ENOSPC) | Some(nix::libc::EDQUOT)
            ) || matches!(
                io.kind(),
                std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded
            ) {
                return true;
            }
        }
        cur = c.source();
    }
    false
}

/// Layers the store has whose compressed blob it lacks although a complete download of it is
/// still in `partial/` (a pull killed between making the layer visible and moving its blob):
/// verify that download (resuming it if it is short) and move it into the store, so push has
/// the original bytes and the partial file does not stay forever. Best effort.
fn store_left_blobs(
    store: &Store,
    client: &Client,
    repo: &str,
    layers: &[Descriptor],
    missing: &[usize],
    pdir: &Path,
) {
    for (i, l) in layers.iter().enumerate() {
        if missing.contains(&i) {
            continue;
        }
        let Ok(d) = Digest::parse(&l.digest) else {
            continue;
        };
        let Ok(partial) = blob::partial_path(pdir, &l.digest) else {
            continue;
        };
        if store.has_blob(&d) || !partial.exists() {
            continue;
        }
        let Ok(mut stream) =
            blob::BlobStream::open(client, repo, &l.digest, l.size, pdir, &|_, _| {})
        else {
            continue;
        };
        let read = std::io::copy(&mut stream, &mut std::io::sink()).map(|_| ());
        if read.is_ok() {
            if let Some(held) = stream.into_held() {
                let _ = store.adopt_blob(held.path(), &d);
            }
        }
    }
}

/// Partial downloads nobody resumed for a week are dropped.
fn remove_stale_partials(dir: &Path) {
    let week = std::time::Duration::from_secs(7 * 24 * 3600);
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let old = e
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age > week);
        if old {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

/// Download and extract one layer: the blob streams through the partial file into the store's
/// staging dir. The layer is returned staged (not visible) once the compressed digest and size and
/// the diffID were verified, with its blob file still locked; on any error the staging dir is
/// gone. A compressed blob the store still has (a pull that failed after downloading it, or
/// another image sharing it) is extracted from there instead: it was verified when it was stored.
/// A blob whose layer extraction refuses (hostile or broken as published) is deleted: resuming
/// it could only fail again.
#[allow(clippy::too_many_arguments)]
fn fetch_layer(
    store: &Store,
    client: &Client,
    repo: &str,
    l: &Descriptor,
    diff_id: &DiffId,
    pdir: &Path,
    touched: &Mutex<Vec<PathBuf>>,
    progress: &(dyn Fn(u64, u64) + Sync),
) -> Result<(StagedLayer, blob::HeldBlob), PullError> {
    let local = Digest::parse(&l.digest).ok().filter(|d| {
        store.has_blob(d) && std::fs::metadata(store.blob_path(d)).is_ok_and(|m| m.len() == l.size)
    });
    if let Some(d) = local {
        let path = store.blob_path(&d);
        let f = File::open(&path).map_err(|source| RegistryError::Io {
            path: path.clone(),
            source,
        })?;
        let staged = store.stage_layer(std::io::BufReader::new(f), Some(diff_id))?;
        return Ok((staged, blob::HeldBlob::stored(path)));
    }
    let mut stream = blob::BlobStream::open(client, repo, &l.digest, l.size, pdir, progress)?;
    if let Ok(mut t) = touched.lock() {
        t.push(stream.path().to_path_buf());
    }
    // The stream hashes what it downloads (and checks size and digest at its end), so the
    // store does not hash the compressed bytes again; it still checks the diffID.
    let staged = match Digest::parse(&l.digest) {
        Ok(d) => store.stage_layer_hashed_by_caller(&mut stream, Some(diff_id), &d),
        Err(e) => return Err(e.into()),
    };
    if let Some(e) = stream.take_error() {
        // The download failed (network, size or digest): that is the error to report.
        return Err(e.into());
    }
    match staged {
        Ok(staged) => {
            // `stage_layer` reads its input to the end, where the stream checked size and
            // digest; the store's own count of what it read must agree.
            if !stream.verified() || staged.input_size() != l.size {
                let _ = std::fs::remove_file(stream.path());
                return Err(RegistryError::DigestMismatch {
                    digest: l.digest.clone(),
                }
                .into());
            }
            match stream.into_held() {
                Some(held) => Ok((staged, held)),
                None => Err(RegistryError::DigestMismatch {
                    digest: l.digest.clone(),
                }
                .into()),
            }
        }
        Err(e) => {
            let path = stream.path().to_path_buf();
            if is_no_space(&e) {
                let _ = std::fs::remove_file(&path);
                return Err(e.into());
            }
            // Extraction refused the data. Finish the download to tell a blob that does not
            // match its digest (deleted, reported as such) from a layer that is bad as published.
            let _ = std::io::copy(&mut stream, &mut std::io::sink());
            match stream.take_error() {
                Some(re) if !is_no_space(&re) => Err(re.into()),
                _ => {
                    // As published, and refused: never kept for a resume.
                    let _ = std::fs::remove_file(&path);
                    Err(e.into())
                }
            }
        }
    }
}

/// Download `missing` layers on `opts.parallel` threads, each extracted into a staging dir as it
/// arrives, and make them visible in order on this thread, each after its compressed blob was
/// moved into the store (so a kill between the two leaves an unused blob, never a layer whose
/// download stays in `partial/`). Layers made visible are added to `created`, blobs moved into
/// the store to `added`; partial files used to `touched`.
#[allow(clippy::too_many_arguments)]
fn download_and_extract(
    store: &Store,
    client: &Client,
    repo: &str,
    layers: &[Descriptor],
    diff_ids: &[DiffId],
    chains: &[ChainId],
    missing: &[usize],
    pdir: &Path,
    opts: &PullOptions,
    progress: &(dyn Fn(PullEvent) + Sync),
    created: &mut Vec<ChainId>,
    added: &mut Vec<Digest>,
    touched: &Mutex<Vec<PathBuf>>,
) -> Result<(), PullError> {
    type Fetched = Result<(StagedLayer, blob::HeldBlob), PullError>;
    // A blob that occurs twice in one image is downloaded once: a later occurrence is staged by
    // the loop below from the stored blob, after the first one was moved into the store (two
    // downloads of one blob would wait on each other's partial-file lock, and the first could be
    // the one the in-order loop is not waiting for).
    let repeat = |i: usize| {
        missing
            .iter()
            .any(|&j| j < i && layers[j].digest == layers[i].digest)
    };
    let queue = Mutex::new(
        missing
            .iter()
            .copied()
            .filter(|&i| !repeat(i))
            .collect::<VecDeque<usize>>(),
    );
    let abort = AtomicBool::new(false);
    let (tx, rx) = mpsc::channel::<(usize, Fetched)>();
    let threads = opts.parallel.max(1).min(missing.len().max(1));
    let mut done: Vec<Option<(StagedLayer, blob::HeldBlob)>> = Vec::new();
    done.resize_with(layers.len(), || None);
    let result = std::thread::scope(|s| {
        for _ in 0..threads {
            let tx = tx.clone();
            let (queue, abort) = (&queue, &abort);
            s.spawn(move || loop {
                if abort.load(Ordering::SeqCst) {
                    break;
                }
                let next = queue.lock().ok().and_then(|mut q| q.pop_front());
                let Some(i) = next else { break };
                let l = &layers[i];
                let id = short(&l.digest);
                let cb = |done: u64, total: u64| {
                    progress(PullEvent::Layer {
                        id: id.clone(),
                        status: LayerStatus::Downloading { done, total },
                    })
                };
                let r = fetch_layer(store, client, repo, l, &diff_ids[i], pdir, touched, &cb);
                if r.is_ok() {
                    progress(PullEvent::Layer {
                        id: id.clone(),
                        status: LayerStatus::VerifyingChecksum,
                    });
                    progress(PullEvent::Layer {
                        id: id.clone(),
                        status: LayerStatus::DownloadComplete,
                    });
                }
                if tx.send((i, r)).is_err() {
                    break;
                }
            });
        }
        drop(tx);
        let mut parent: Option<&ChainId> = None;
        let fail = |e: PullError| {
            abort.store(true, Ordering::SeqCst);
            Err(e)
        };
        for (i, l) in layers.iter().enumerate() {
            if !missing.contains(&i) {
                parent = Some(&chains[i]);
                continue;
            }
            if repeat(i) {
                let none = |_: u64, _: u64| {};
                match fetch_layer(store, client, repo, l, &diff_ids[i], pdir, touched, &none) {
                    Ok(p) => done[i] = Some(p),
                    Err(e) => return fail(e),
                }
            }
            while done[i].is_none() {
                match rx.recv() {
                    Ok((j, Ok(p))) => done[j] = Some(p),
                    Ok((_, Err(e))) => return fail(e),
                    Err(_) => {
                        return fail(PullError::Registry(RegistryError::DigestMismatch {
                            digest: l.digest.clone(),
                        }))
                    }
                }
            }
            let Some((staged, held)) = done[i].take() else {
                continue;
            };
            let id = short(&l.digest);
            progress(PullEvent::Layer {
                id: id.clone(),
                status: LayerStatus::Extracting,
            });
            // Verified as it downloaded (size and sha256): moved into place, not copied.
            if held.is_partial() {
                let d = match Digest::parse(&l.digest) {
                    Ok(d) => d,
                    Err(e) => return fail(e.into()),
                };
                match store.adopt_blob(held.path(), &d) {
                    Ok(true) => added.push(d),
                    Ok(false) => {
                        let _ = std::fs::remove_file(held.path());
                    }
                    Err(e) => return fail(e.into()),
                }
            }
            drop(held);
            // Verified and extracted: make it visible on its parent (a concurrent pull that
            // stored the same chain first wins, and ours is dropped).
            match store.commit_layer(staged, parent) {
                Ok(info) => {
                    if info.created {
                        created.push(info.chain_id.clone());
                    }
                }
                Err(e) => return fail(e.into()),
            }
            progress(PullEvent::Layer {
                id,
                status: LayerStatus::PullComplete,
            });
            parent = Some(&chains[i]);
        }
        Ok(())
    });
    if result.is_err() {
        // Downloads that finished but whose layer was not made visible: verified, so their
        // blobs go into the store (the next pull extracts from there; a prune reclaims them)
        // rather than staying in `partial/`.
        let finished = done
            .into_iter()
            .flatten()
            .chain(rx.try_iter().filter_map(|(_, r)| r.ok()));
        for (_, held) in finished {
            if !held.is_partial() {
                continue;
            }
            let name = held
                .path()
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or("");
            let hex = name
                .trim_start_matches("sha256-")
                .trim_end_matches(".partial");
            if let Ok(d) = Digest::from_hex(hex) {
                if let Ok(true) = store.adopt_blob(held.path(), &d) {
                    added.push(d);
                }
            }
        }
    }
    result
}
