//! `import`: a rootfs tarball (gzip/zstd/plain) → a one-layer image.

use std::io::Read;

use chrono::{SecondsFormat, Utc};

use super::{host_arch, Result};
use crate::digest::ImageId;
use crate::reference::Reference;
use crate::store::{History, ImageConfig, RootFs, RunConfig, Store};

/// Import `input` as a new image with `changes` applied to its config and history comment
/// `message` (Docker's default: `Imported from -`). Tags it with `tag` if given.
pub fn import(
    store: &Store,
    input: impl Read,
    changes: &[String],
    message: Option<&str>,
    tag: Option<&Reference>,
) -> Result<ImageId> {
    let _lease = store.lease_scope();
    let mut cc = RunConfig::default();
    for c in changes {
        cc.apply_change(c)?;
    }
    let layer = store.add_layer(input, None, None)?;
    let now = Utc::now().to_rfc3339_opts(SecondsFormat::Nanos, true);
    let msg = message
        .filter(|m| !m.is_empty())
        .unwrap_or("Imported from -")
        .to_string();
    let cfg = ImageConfig {
        architecture: host_arch().to_string(),
        os: "linux".to_string(),
        created: Some(now.clone()),
        config: Some(cc),
        rootfs: RootFs {
            kind: "layers".to_string(),
            diff_ids: vec![layer.diff_id.clone()],
        },
        history: vec![History {
            created: Some(now),
            comment: Some(msg.clone()),
            ..History::default()
        }],
        comment: Some(msg),
        ..ImageConfig::default()
    };
    let refs: Vec<Reference> = tag.cloned().into_iter().collect();
    match store.add_image(&cfg.to_bytes(), &refs, None) {
        Ok(id) => {
            let hex = id.to_string();
            for r in &refs {
                store.image_event("tag", &hex, &r.familiar());
            }
            store.image_event("import", &hex, &hex);
            Ok(id)
        }
        Err(e) => {
            if layer.created {
                let _ = store.release_layers(&[layer.chain_id]);
            }
            Err(e.into())
        }
    }
}
