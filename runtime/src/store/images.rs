//! Images and references: `images.json` (records) and `repositories.json` (reference → image).

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::config::ImageConfig;
use crate::fsutil::{lock_file, remove_any, unique_tmp, write_atomic, LockMode};

/// The store-wide lock; released on drop.
pub(crate) type StoreLock = nix::fcntl::Flock<std::fs::File>;
use super::{io_at, Result, Store, StoreError};
use crate::digest::{chain_ids, ChainId, Digest, ImageId};
use crate::reference::Reference;

/// A container that uses an image, as told by the caller (the store never reads containers).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerUse {
    pub container_id: crate::container::ContainerId,
    pub image: ImageId,
    pub running: bool,
}

/// An image to register with [`Store::add_images`].
#[derive(Debug, Clone, Copy)]
pub struct NewImage<'a> {
    /// Config bytes exactly as received (the image ID is their digest).
    pub config: &'a [u8],
    pub refs: &'a [Reference],
    pub parent: Option<&'a ImageId>,
}

/// Everything the CLI needs to show about one image.
#[derive(Debug, Clone)]
pub struct ImageRecord {
    pub id: ImageId,
    pub config: ImageConfig,
    /// `name:tag` references, sorted.
    pub repo_tags: Vec<Reference>,
    /// `name@digest` references, sorted.
    pub repo_digests: Vec<Reference>,
    /// Image this one was committed from (local lineage only).
    pub parent: Option<ImageId>,
    /// Sum of the sizes of all its layers.
    pub size: u64,
    /// Config `created`.
    pub created: Option<DateTime<Utc>>,
    /// When the image was added to this store.
    pub added: Option<DateTime<Utc>>,
    /// Chain IDs of its layers, base first.
    pub chain_ids: Vec<ChainId>,
}

impl ImageRecord {
    /// No references at all.
    pub fn is_untagged(&self) -> bool {
        self.repo_tags.is_empty() && self.repo_digests.is_empty()
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct ImageMeta {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<ImageId>,
    #[serde(default)]
    pub size: u64,
    #[serde(default)]
    pub added: Option<String>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct ImagesFile {
    #[serde(default)]
    images: BTreeMap<String, ImageMeta>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct RefsFile {
    #[serde(default)]
    refs: BTreeMap<String, ImageId>,
}

/// The whole metadata, as read under the lock.
#[derive(Debug, Default)]
pub(crate) struct Meta {
    /// Keyed by the image ID's 64 hex.
    pub images: BTreeMap<String, ImageMeta>,
    /// Canonical reference string → image.
    pub refs: BTreeMap<String, ImageId>,
}

impl Meta {
    /// The blobs the metadata itself names: every image's config and the manifest of every
    /// digest reference (the roots from which a blob sweep marks).
    pub(crate) fn blob_roots(&self) -> Vec<Digest> {
        let mut roots: Vec<Digest> = self
            .images
            .keys()
            .filter_map(|h| Digest::from_hex(h).ok())
            .collect();
        roots.extend(
            self.refs
                .keys()
                .filter_map(|k| Reference::parse(k).ok())
                .filter_map(|r| r.digest().cloned()),
        );
        roots
    }

    pub(crate) fn refs_of(&self, id: &ImageId) -> Vec<Reference> {
        self.refs
            .iter()
            .filter(|(_, v)| *v == id)
            .filter_map(|(k, _)| Reference::parse(k).ok())
            .collect()
    }
    pub(crate) fn has(&self, id: &ImageId) -> bool {
        self.images.contains_key(id.hex())
    }
}

/// Key under which a reference is stored: canonical form, `:latest` added, tag dropped when a
/// digest is present.
pub(crate) fn ref_key(r: &Reference) -> String {
    r.clone().with_default_tag().docker_ref().to_string()
}

impl Store {
    fn images_path(&self) -> PathBuf {
        self.root.join("images.json")
    }
    fn refs_path(&self) -> PathBuf {
        self.root.join("repositories.json")
    }

    pub(crate) fn read_meta(&self) -> Result<Meta> {
        fn load<T: Default + for<'de> Deserialize<'de>>(p: PathBuf) -> Result<T> {
            match std::fs::read(&p) {
                Ok(b) => serde_json::from_slice(&b)
                    .map_err(|source| StoreError::CorruptMetadata { path: p, source }),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(T::default()),
                Err(e) => Err(io_at(&p)(e)),
            }
        }
        let images: ImagesFile = load(self.images_path())?;
        let refs: RefsFile = load(self.refs_path())?;
        Ok(Meta {
            images: images.images,
            refs: refs.refs,
        })
    }

    fn write_meta(&self, m: &Meta) -> Result<()> {
        let images = ImagesFile {
            images: m.images.clone(),
        };
        let refs = RefsFile {
            refs: m.refs.clone(),
        };
        let p = self.images_path();
        write_atomic(&p, &serde_json::to_vec_pretty(&images).unwrap_or_default())
            .map_err(io_at(&p))?;
        let p = self.refs_path();
        write_atomic(&p, &serde_json::to_vec_pretty(&refs).unwrap_or_default()).map_err(io_at(&p))
    }

    /// The store-wide lock (`store.lock`): exclusive for metadata updates, shared for reads.
    pub(crate) fn lock(&self, mode: LockMode) -> Result<StoreLock> {
        let p = self.root.join("store.lock");
        lock_file(&p, mode).map_err(io_at(&p))
    }

    pub(crate) fn read_locked(&self) -> Result<(StoreLock, Meta)> {
        let l = self.lock(LockMode::Shared)?;
        let m = self.read_meta()?;
        Ok((l, m))
    }

    /// Read-modify-write the metadata under the exclusive lock.
    pub(crate) fn update<T>(&self, f: impl FnOnce(&mut Meta) -> Result<T>) -> Result<T> {
        let _l = self.lock(LockMode::Exclusive)?;
        let mut m = self.read_meta()?;
        let out = f(&mut m)?;
        self.write_meta(&m)?;
        Ok(out)
    }

    /// Register an image. `config` are the config bytes exactly as received (the image ID is
    /// their digest); every layer of `rootfs.diff_ids` must already be stored. `refs` are
    /// pointed at it (a tag moved away from another image leaves that one dangling). `parent`
    /// records local lineage (commit).
    pub fn add_image(
        &self,
        config: &[u8],
        refs: &[Reference],
        parent: Option<&ImageId>,
    ) -> Result<ImageId> {
        let mut ids = self.add_images(&[NewImage {
            config,
            refs,
            parent,
        }])?;
        Ok(ids.remove(0))
    }

    /// [`Store::add_image`] for several images under one metadata update: all are registered
    /// or none (`load` of a multi-image archive).
    pub fn add_images(&self, images: &[NewImage<'_>]) -> Result<Vec<ImageId>> {
        let mut prepared = Vec::with_capacity(images.len());
        for img in images {
            let cfg: ImageConfig =
                serde_json::from_slice(img.config).map_err(StoreError::InvalidConfig)?;
            let chains = chain_ids(&cfg.rootfs.diff_ids);
            if let Some(missing) = chains.iter().find(|c| !self.has_layer(c)) {
                return Err(StoreError::NoSuchLayer(missing.clone()));
            }
            let id = ImageId::from(Digest::of_bytes(img.config));
            prepared.push((id, chains));
        }
        self.update(|m| {
            // Under the lock: an `rmi` of the same image (which deletes its config blob)
            // cannot run between writing the config and registering the image.
            for (img, (id, _)) in images.iter().zip(&prepared) {
                self.put_blob(img.config, Some(id.digest()))?;
            }
            for (img, (id, chains)) in images.iter().zip(&prepared) {
                let mut size = 0;
                for c in chains {
                    size += self.layer(c)?.size;
                }
                let entry = m.images.entry(id.hex().to_string()).or_insert(ImageMeta {
                    parent: None,
                    size,
                    added: Some(Utc::now().to_rfc3339()),
                });
                if img.parent.is_some() {
                    entry.parent = img.parent.cloned();
                }
                for r in img.refs {
                    m.refs.insert(ref_key(r), id.clone());
                }
            }
            Ok(())
        })?;
        self.end_unscoped_lease();
        Ok(prepared.into_iter().map(|(id, _)| id).collect())
    }

    /// Point `r` (`:latest` implied) at image `id`.
    pub fn tag(&self, id: &ImageId, r: &Reference) -> Result<()> {
        self.set_ref(id, r)?;
        self.image_event("tag", &id.to_string(), &r.familiar());
        Ok(())
    }

    /// [`Store::tag`] without an event (push's `name@digest` bookkeeping).
    pub(crate) fn set_ref(&self, id: &ImageId, r: &Reference) -> Result<()> {
        self.update(|m| {
            if !m.has(id) {
                return Err(StoreError::NoSuchImage(id.to_string()));
            }
            m.refs.insert(ref_key(r), id.clone());
            Ok(())
        })
    }

    /// Remove reference `r`; returns the image it pointed at.
    pub fn untag(&self, r: &Reference) -> Result<ImageId> {
        let id = self.remove_ref(r)?;
        // Docker names the image by its ID in `untag` events.
        self.image_event("untag", &id.to_string(), &id.to_string());
        Ok(id)
    }

    /// [`Store::untag`] without an event (`rmi`'s cleanup of a repository's digest references,
    /// which Docker does silently).
    pub(crate) fn remove_ref(&self, r: &Reference) -> Result<ImageId> {
        self.update(|m| {
            m.refs
                .remove(&ref_key(r))
                .ok_or_else(|| StoreError::NoSuchImage(r.clone().with_default_tag().familiar()))
        })
    }

    /// Resolve what a user typed (SPEC §1.3): full ID (with or without `sha256:`), a
    /// `name[:tag]`, `name@digest`, or a unique ID prefix. A name lookup is tried before a prefix.
    pub fn resolve(&self, s: &str) -> Result<ImageRecord> {
        let (_l, m) = self.read_locked()?;
        let id = resolve_id(&m, s)?;
        self.record(&m, &id)
    }

    /// The record of a known image ID.
    pub fn image(&self, id: &ImageId) -> Result<ImageRecord> {
        let (_l, m) = self.read_locked()?;
        self.record(&m, id)
    }

    /// Every image, newest (config `created`) first.
    pub fn images(&self) -> Result<Vec<ImageRecord>> {
        let (_l, m) = self.read_locked()?;
        let mut out = Vec::with_capacity(m.images.len());
        for hex in m.images.keys() {
            let id = ImageId::from(Digest::from_hex(hex)?);
            out.push(self.record(&m, &id)?);
        }
        out.sort_by(|a, b| b.created.cmp(&a.created).then_with(|| a.id.cmp(&b.id)));
        Ok(out)
    }

    /// Images whose recorded parent is `id`.
    pub fn children(&self, id: &ImageId) -> Result<Vec<ImageId>> {
        let (_l, m) = self.read_locked()?;
        Ok(children_in(&m, id))
    }

    pub(crate) fn record(&self, m: &Meta, id: &ImageId) -> Result<ImageRecord> {
        let meta = m
            .images
            .get(id.hex())
            .ok_or_else(|| StoreError::NoSuchImage(id.to_string()))?;
        let bytes = self.read_blob(id.digest())?;
        let config: ImageConfig =
            serde_json::from_slice(&bytes).map_err(StoreError::InvalidConfig)?;
        let (mut repo_tags, mut repo_digests): (Vec<_>, Vec<_>) = m
            .refs_of(id)
            .into_iter()
            .partition(|r| r.digest().is_none());
        repo_tags.sort_by_key(|r| r.familiar());
        repo_digests.sort_by_key(|r| r.familiar());
        Ok(ImageRecord {
            id: id.clone(),
            created: config.created_time(),
            added: meta.added.as_deref().and_then(super::config::parse_time),
            chain_ids: chain_ids(&config.rootfs.diff_ids),
            config,
            repo_tags,
            repo_digests,
            parent: meta.parent.clone(),
            size: meta.size,
        })
    }

    /// Layer directories of an image, **top layer first** (the order union mounts want).
    pub fn layer_dirs(&self, img: &ImageRecord) -> Result<Vec<PathBuf>> {
        img.chain_ids
            .iter()
            .rev()
            .map(|c| {
                if self.has_layer(c) {
                    Ok(self.layer_diff_dir(c))
                } else {
                    Err(StoreError::NoSuchLayer(c.clone()))
                }
            })
            .collect()
    }

    /// Delete layers created by a failed import, unless some image uses them. Top first.
    pub fn release_layers(&self, chains: &[ChainId]) -> Result<()> {
        let _l = self.lock(LockMode::Exclusive)?;
        let m = self.read_meta()?;
        let used = self.used_chains(&m)?;
        for c in chains {
            if !used.contains(c) {
                self.delete_layer(c)?;
            }
        }
        // The failed operation is over: what its lease protected is gone or given up.
        self.end_unscoped_lease();
        Ok(())
    }

    pub(crate) fn used_chains(&self, m: &Meta) -> Result<BTreeSet<ChainId>> {
        let mut used = BTreeSet::new();
        for hex in m.images.keys() {
            let id = Digest::from_hex(hex)?;
            let bytes = self.read_blob(&id)?;
            let cfg: ImageConfig =
                serde_json::from_slice(&bytes).map_err(StoreError::InvalidConfig)?;
            used.extend(chain_ids(&cfg.rootfs.diff_ids));
        }
        Ok(used)
    }

    /// Drop image `id` and all its references; delete the layers no remaining image uses.
    /// Returns the released chain IDs, top first. No conflict checks: see `remove.rs`.
    pub fn delete_image_unchecked(&self, id: &ImageId) -> Result<Vec<ChainId>> {
        let img = self.image(id)?;
        let untagged: usize;
        let doomed = {
            let _l = self.lock(LockMode::Exclusive)?;
            let mut m = self.read_meta()?;
            // Blobs that may become unused: the config, the manifests its references name,
            // and (below) the compressed blobs of the layers released with it.
            let mut blobs = vec![id.digest().clone()];
            blobs.extend(
                m.refs
                    .iter()
                    .filter(|(_, v)| *v == id)
                    .filter_map(|(k, _)| Reference::parse(k).ok())
                    .filter_map(|r| r.digest().cloned()),
            );
            m.images.remove(id.hex());
            let before = m.refs.len();
            m.refs.retain(|_, v| v != id);
            untagged = before - m.refs.len();
            for meta in m.images.values_mut() {
                if meta.parent.as_ref() == Some(id) {
                    meta.parent = None;
                }
            }
            self.write_meta(&m)?;
            let used = self.used_chains(&m)?;
            let mut doomed = Vec::new();
            for c in img.chain_ids.iter().rev() {
                if used.contains(c) {
                    continue;
                }
                let compressed = self.layer(c).ok().and_then(|l| l.compressed_digest);
                let t = unique_tmp(&self.tmp_dir(), "rmlayer");
                let p = self.layers_dir().join(c.hex());
                if std::fs::rename(&p, &t).is_ok() {
                    doomed.push((c.clone(), t));
                    blobs.extend(compressed);
                }
            }
            self.gc_blobs(&m, blobs);
            doomed
        };
        // Docker: an `untag` for each reference that went with it, then `delete`.
        let hex = id.to_string();
        for _ in 0..untagged {
            self.image_event("untag", &hex, &hex);
        }
        self.image_event("delete", &hex, &hex);
        let mut released = Vec::new();
        for (c, t) in doomed {
            let _ = remove_any(&t);
            released.push(c);
        }
        Ok(released)
    }
}

pub(crate) fn children_in(m: &Meta, id: &ImageId) -> Vec<ImageId> {
    m.images
        .iter()
        .filter(|(_, v)| v.parent.as_ref() == Some(id))
        .filter_map(|(k, _)| Digest::from_hex(k).ok().map(ImageId::from))
        .collect()
}

pub(crate) fn resolve_id(m: &Meta, s: &str) -> Result<ImageId> {
    let full_hex = s.strip_prefix("sha256:").unwrap_or(s);
    if full_hex.len() == 64 && Digest::is_hex_prefix(full_hex) {
        let id = ImageId::from(Digest::from_hex(full_hex)?);
        return if m.has(&id) {
            Ok(id)
        } else {
            Err(StoreError::NoSuchImage(s.to_string()))
        };
    }
    let shown = match Reference::parse(s) {
        Ok(r) => {
            let r = r.with_default_tag();
            if let Some(id) = m.refs.get(&ref_key(&r)) {
                return Ok(id.clone());
            }
            r.familiar()
        }
        Err(e) => {
            if !Digest::is_hex_prefix(full_hex) {
                return Err(e.into());
            }
            s.to_string()
        }
    };
    if Digest::is_hex_prefix(full_hex) {
        let mut hits = m.images.keys().filter(|k| k.starts_with(full_hex));
        if let (Some(one), None) = (hits.next(), hits.next()) {
            return Ok(ImageId::from(Digest::from_hex(one)?));
        }
    }
    Err(StoreError::NoSuchImage(shown))
}
