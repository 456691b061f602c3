//! `save`: store → docker-archive (Docker ≥ 25 layout, also a valid OCI layout) or pure OCI
//! layout. Layers are rebuilt byte for byte from the store (tar-split), so diffIDs and image IDs
//! survive a save/load round trip.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{self, Write};

use serde_json::{json, Value};

use super::{
    ArchiveError, Result, ANNOTATION_IMAGE_NAME, ANNOTATION_REF_NAME, OCI_CONFIG, OCI_INDEX,
    OCI_LAYER_TAR, OCI_MANIFEST,
};
use crate::digest::Digest;
use crate::reference::Reference;
use crate::store::{ImageRecord, Store};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SaveFormat {
    /// `manifest.json` + `repositories` + OCI layout (what Docker ≥ 25 writes).
    Docker,
    /// OCI image layout only.
    Oci,
}

/// One image to save and the references to record for it.
pub struct SaveItem {
    pub image: ImageRecord,
    pub tags: Vec<Reference>,
}

struct TarOut<'a> {
    w: &'a mut dyn Write,
}

impl TarOut<'_> {
    fn header(&mut self, path: &str, size: u64, dir: bool) -> io::Result<()> {
        let mut h = tar::Header::new_ustar();
        h.set_path(path)?;
        h.set_size(size);
        h.set_mode(if dir { 0o755 } else { 0o644 });
        h.set_entry_type(if dir {
            tar::EntryType::Directory
        } else {
            tar::EntryType::Regular
        });
        h.set_mtime(0);
        h.set_cksum();
        self.w.write_all(h.as_bytes())
    }
    fn pad(&mut self, size: u64) -> io::Result<()> {
        let rem = (512 - size % 512) % 512;
        self.w.write_all(&vec![0u8; rem as usize])
    }
    fn file(&mut self, path: &str, data: &[u8]) -> io::Result<()> {
        self.header(path, data.len() as u64, false)?;
        self.w.write_all(data)?;
        self.pad(data.len() as u64)
    }
    fn dir(&mut self, path: &str) -> io::Result<()> {
        self.header(path, 0, true)
    }
    fn finish(&mut self) -> io::Result<()> {
        self.w.write_all(&[0u8; 1024])?;
        self.w.flush()
    }
}

/// Write `items` as one archive to `out`.
pub fn save(
    store: &Store,
    items: &[SaveItem],
    format: SaveFormat,
    out: &mut dyn Write,
) -> Result<()> {
    // A lazily pulled image is completed first (as a plain `pull` would): an archive holds whole
    // layers, and nothing is written before every layer is.
    for item in items {
        crate::lazy::complete_image(store, &item.image.id)?;
    }
    let mut t = TarOut { w: out };
    t.dir("blobs/").map_err(ArchiveError::Write)?;
    t.dir("blobs/sha256/").map_err(ArchiveError::Write)?;
    let mut written: BTreeSet<String> = BTreeSet::new();
    let mut index = Vec::new();
    let mut manifest = Vec::new();
    let mut repositories: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    for item in items {
        let img = &item.image;
        let mut layer_descs = Vec::new();
        let mut layer_paths = Vec::new();
        for c in &img.chain_ids {
            let info = store.layer(c)?;
            let path = format!("blobs/sha256/{}", info.diff_id.hex());
            if written.insert(path.clone()) {
                t.header(&path, info.tar_size, false)
                    .map_err(ArchiveError::Write)?;
                let mut counter = Counter { w: &mut *t.w, n: 0 };
                store.layer_tar(c, &mut counter)?;
                if counter.n != info.tar_size {
                    return Err(ArchiveError::Invalid(format!(
                        "layer {} rebuilt to {} bytes, recorded {}",
                        info.diff_id, counter.n, info.tar_size
                    )));
                }
                t.pad(info.tar_size).map_err(ArchiveError::Write)?;
            }
            layer_descs.push(
                json!({"mediaType": OCI_LAYER_TAR, "digest": info.diff_id, "size": info.tar_size}),
            );
            layer_paths.push(path);
        }
        let config = store.read_blob(img.id.digest())?;
        let config_path = format!("blobs/sha256/{}", img.id.hex());
        if written.insert(config_path.clone()) {
            t.file(&config_path, &config).map_err(ArchiveError::Write)?;
        }
        let m = json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": img.id, "size": config.len()},
            "layers": layer_descs,
        });
        let mbytes = serde_json::to_vec(&m).unwrap_or_default();
        let mdigest = Digest::of_bytes(&mbytes);
        let mpath = format!("blobs/sha256/{}", mdigest.hex());
        if written.insert(mpath.clone()) {
            t.file(&mpath, &mbytes).map_err(ArchiveError::Write)?;
        }
        let desc = |ann: Option<Value>| {
            let mut d = json!({"mediaType": OCI_MANIFEST, "digest": mdigest, "size": mbytes.len()});
            if let Some(a) = ann {
                d["annotations"] = a;
            }
            d
        };
        if item.tags.is_empty() {
            index.push(desc(None));
        }
        for tag in &item.tags {
            let ann = json!({
                ANNOTATION_IMAGE_NAME: tag.to_string(),
                ANNOTATION_REF_NAME: tag.tag().unwrap_or("latest"),
            });
            index.push(desc(Some(ann)));
            if let (Some(top), Some(tg)) = (img.chain_ids.last(), tag.tag()) {
                let diff = store.layer(top)?.diff_id;
                repositories
                    .entry(tag.familiar_name())
                    .or_default()
                    .insert(tg.to_string(), diff.hex().to_string());
            }
        }
        manifest.push(json!({
            "Config": config_path,
            "RepoTags": item.tags.iter().map(|t| t.familiar()).collect::<Vec<_>>(),
            "Layers": layer_paths,
        }));
    }
    let index = json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": index});
    t.file(
        "index.json",
        &serde_json::to_vec(&index).unwrap_or_default(),
    )
    .map_err(ArchiveError::Write)?;
    if format == SaveFormat::Docker {
        t.file(
            "manifest.json",
            &serde_json::to_vec(&manifest).unwrap_or_default(),
        )
        .map_err(ArchiveError::Write)?;
        if !repositories.is_empty() {
            t.file(
                "repositories",
                &serde_json::to_vec(&repositories).unwrap_or_default(),
            )
            .map_err(ArchiveError::Write)?;
        }
    }
    t.file("oci-layout", br#"{"imageLayoutVersion": "1.0.0"}"#)
        .map_err(ArchiveError::Write)?;
    t.finish().map_err(ArchiveError::Write)?;
    for item in items {
        let id = item.image.id.to_string();
        store.image_event("save", &id, &id);
    }
    Ok(())
}

struct Counter<'a> {
    w: &'a mut dyn Write,
    n: u64,
}

impl Write for Counter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.w.write(buf)?;
        self.n += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.w.flush()
    }
}
