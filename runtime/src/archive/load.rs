//! `load`: docker-archive and OCI layout → store.

use std::fs::File;
use std::io::{self, Read, Seek};
use std::path::Path;

use serde::Deserialize;
use serde_json::Value;

use super::source::{is_dir, Source};
use super::{
    host_arch, ArchiveError, Result, ANNOTATION_IMAGE_NAME, ANNOTATION_REF_NAME, DOCKER_LIST,
    OCI_INDEX,
};
use crate::digest::{chain_ids, ChainId, Digest, ImageId};
use crate::reference::Reference;
use crate::store::{ImageConfig, NewImage, Store};

/// Where `load` reads from.
pub enum LoadInput<'a> {
    /// A tar file or an OCI layout directory.
    Path(&'a Path),
    /// A stream (stdin): copied to the store's `tmp/` first.
    Reader(&'a mut dyn Read),
}

/// One image `load` registered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Loaded {
    pub id: ImageId,
    /// References applied (empty: print `Loaded image ID:`).
    pub tags: Vec<Reference>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ManifestEntry {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    #[serde(default)]
    layers: Vec<String>,
    #[serde(default)]
    parent: Option<String>,
}

/// One image found in an archive, before anything is stored.
struct Plan {
    config: Vec<u8>,
    layers: Vec<String>,
    tags: Vec<Reference>,
    parent: Option<ImageId>,
}

/// Load every image of an archive, all or nothing: layers it added are released again if a
/// later step fails.
pub fn load(store: &Store, input: LoadInput<'_>) -> Result<Vec<Loaded>> {
    // Layers added before their image is registered are leased; the lease ends with this call,
    // whether it registers the images or fails.
    let _lease = store.lease_scope();
    let mut _staging = None;
    let source = match input {
        LoadInput::Path(p) if is_dir(p) => Source::Dir(p.to_path_buf()),
        LoadInput::Path(p) => {
            let f = File::open(p).map_err(|err| ArchiveError::Io {
                path: p.to_path_buf(),
                err,
            })?;
            Source::index_tar(f)?
        }
        LoadInput::Reader(r) => {
            let tmp = store.root().join("tmp").join(format!(
                "{}-load-{}",
                std::process::id(),
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos())
                    .unwrap_or(0)
            ));
            let mut f = File::options()
                .read(true)
                .write(true)
                .create_new(true)
                .open(&tmp)
                .map_err(|err| ArchiveError::Io {
                    path: tmp.clone(),
                    err,
                })?;
            _staging = Some(TmpFile(tmp.clone()));
            let n = io::copy(r, &mut f).map_err(|err| ArchiveError::Io { path: tmp, err })?;
            if n == 0 {
                return Err(ArchiveError::EmptyInput);
            }
            f.seek(io::SeekFrom::Start(0))
                .map_err(|err| ArchiveError::Io {
                    path: tmp_path(&_staging),
                    err,
                })?;
            Source::index_tar(f)?
        }
    };
    let plans = if source.has("manifest.json") {
        docker_plans(store, &source)?
    } else if source.has("index.json") {
        oci_plans(&source)?
    } else {
        return Err(ArchiveError::NoManifest);
    };
    load_all(store, &source, plans)
}

struct TmpFile(std::path::PathBuf);

fn tmp_path(t: &Option<TmpFile>) -> std::path::PathBuf {
    t.as_ref().map(|t| t.0.clone()).unwrap_or_default()
}
impl Drop for TmpFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn parse_json<T: for<'de> Deserialize<'de>>(bytes: &[u8], what: &str) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|source| ArchiveError::Json {
        what: what.to_string(),
        source,
    })
}

fn docker_plans(store: &Store, src: &Source) -> Result<Vec<Plan>> {
    let entries: Vec<ManifestEntry> = parse_json(&src.read("manifest.json")?, "manifest.json")?;
    let mut plans = Vec::new();
    for e in entries {
        let config = src.read(&e.config)?;
        // Legacy layout names the config `<hex>.json`; Docker ≥ 25 `blobs/sha256/<hex>`.
        let name = e.config.trim_end_matches(".json");
        let hex = name.rsplit('/').next().unwrap_or(name);
        if hex.len() == 64 && Digest::is_hex_prefix(hex) && Digest::of_bytes(&config).hex() != hex {
            return Err(ArchiveError::BadDigest {
                what: e.config.clone(),
                expected: format!("sha256:{hex}"),
            });
        }
        let mut tags = Vec::new();
        for t in e.repo_tags.unwrap_or_default() {
            tags.push(Reference::parse_with_default_tag(&t)?);
        }
        let parent = e
            .parent
            .as_deref()
            .and_then(|p| ImageId::parse(p).ok())
            .filter(|p| store.image(p).is_ok());
        plans.push(Plan {
            config,
            layers: e.layers,
            tags,
            parent,
        });
    }
    Ok(plans)
}

fn blob_path(digest: &str) -> Result<String> {
    let d = Digest::parse(digest)?;
    Ok(format!("blobs/sha256/{}", d.hex()))
}

fn read_verified(src: &Source, digest: &str) -> Result<Vec<u8>> {
    let bytes = src.read(&blob_path(digest)?)?;
    if Digest::of_bytes(&bytes).as_str() != digest {
        return Err(ArchiveError::BadDigest {
            what: blob_path(digest)?,
            expected: digest.to_string(),
        });
    }
    Ok(bytes)
}

fn oci_plans(src: &Source) -> Result<Vec<Plan>> {
    let index: Value = parse_json(&src.read("index.json")?, "index.json")?;
    let mut plans: Vec<Plan> = Vec::new();
    let descs = index["manifests"].as_array().cloned().unwrap_or_default();
    for desc in descs {
        let name = image_name(&desc);
        let mut desc = desc;
        // Nested index (multi-platform): pick this machine's platform.
        for _ in 0..4 {
            let mt = desc["mediaType"].as_str().unwrap_or("");
            if mt != OCI_INDEX && mt != DOCKER_LIST {
                break;
            }
            let digest = desc["digest"].as_str().unwrap_or("");
            let inner: Value = parse_json(&read_verified(src, digest)?, digest)?;
            let pick = inner["manifests"]
                .as_array()
                .and_then(|m| {
                    m.iter()
                        .find(|d| {
                            d["platform"]["os"] == "linux"
                                && d["platform"]["architecture"] == host_arch()
                        })
                        .or_else(|| m.first())
                })
                .cloned()
                .ok_or_else(|| ArchiveError::Invalid(format!("empty index {digest}")))?;
            desc = pick;
        }
        let digest = desc["digest"].as_str().unwrap_or("");
        let manifest: Value = parse_json(&read_verified(src, digest)?, digest)?;
        let config_digest = manifest["config"]["digest"].as_str().unwrap_or("");
        let config = read_verified(src, config_digest)?;
        let layers = manifest["layers"]
            .as_array()
            .map(|ls| {
                ls.iter()
                    .map(|l| blob_path(l["digest"].as_str().unwrap_or("")))
                    .collect::<Result<Vec<_>>>()
            })
            .transpose()?
            .unwrap_or_default();
        // Same image listed once per tag: merge.
        let id = Digest::of_bytes(&config);
        if let Some(p) = plans.iter_mut().find(|p| Digest::of_bytes(&p.config) == id) {
            p.tags.extend(name);
            continue;
        }
        plans.push(Plan {
            config,
            layers,
            tags: name.into_iter().collect(),
            parent: None,
        });
    }
    if plans.is_empty() {
        return Err(ArchiveError::Invalid("index.json lists no images".into()));
    }
    Ok(plans)
}

/// The reference an OCI descriptor names: containerd's full name, else `ref.name` when it is a
/// full reference (podman). A bare tag (`latest`, as skopeo writes) names no repository.
fn image_name(desc: &Value) -> Option<Reference> {
    let ann = &desc["annotations"];
    if let Some(n) = ann[ANNOTATION_IMAGE_NAME].as_str() {
        return Reference::parse_with_default_tag(n).ok();
    }
    let n = ann[ANNOTATION_REF_NAME].as_str()?;
    if n.contains('/') || n.contains(':') {
        Reference::parse_with_default_tag(n).ok()
    } else {
        None
    }
}

/// Check a plan and store its layers (those not there yet); new chain IDs go to `created`.
fn add_layers(store: &Store, src: &Source, plan: &Plan, created: &mut Vec<ChainId>) -> Result<()> {
    let cfg: ImageConfig = parse_json(&plan.config, "image config")?;
    let diff_ids = &cfg.rootfs.diff_ids;
    if diff_ids.len() != plan.layers.len() {
        return Err(ArchiveError::Invalid(format!(
            "config lists {} layers, manifest {}",
            diff_ids.len(),
            plan.layers.len()
        )));
    }
    for l in &plan.layers {
        if !src.has(l) {
            return Err(ArchiveError::Missing(l.clone()));
        }
    }
    let chains = chain_ids(diff_ids);
    let mut parent: Option<&ChainId> = None;
    for (i, path) in plan.layers.iter().enumerate() {
        // `hold_layer` leases a layer that is already stored, so a concurrent prune cannot take
        // it before the image naming it is registered.
        if !store.hold_layer(&chains[i])? {
            let info = store.add_layer(src.open(path)?, parent, Some(&diff_ids[i]))?;
            if info.created {
                created.push(info.chain_id);
            }
        }
        parent = Some(&chains[i]);
    }
    Ok(())
}

/// Store every plan's layers, then register all images in one metadata update. On any error
/// the layers this load created are released: the store is as it was.
fn load_all(store: &Store, src: &Source, plans: Vec<Plan>) -> Result<Vec<Loaded>> {
    let mut created: Vec<ChainId> = Vec::new();
    let result = (|| -> Result<Vec<ImageId>> {
        for plan in &plans {
            add_layers(store, src, plan, &mut created)?;
        }
        let new: Vec<NewImage<'_>> = plans
            .iter()
            .map(|p| NewImage {
                config: &p.config,
                refs: &p.tags,
                parent: p.parent.as_ref(),
            })
            .collect();
        Ok(store.add_images(&new)?)
    })();
    match result {
        Ok(ids) => Ok(ids
            .into_iter()
            .inspect(|id| store.image_event("load", &id.to_string(), &id.to_string()))
            .zip(plans)
            .map(|(id, p)| Loaded { id, tags: p.tags })
            .collect()),
        Err(e) => {
            created.reverse();
            let _ = store.release_layers(&created);
            Err(e)
        }
    }
}
