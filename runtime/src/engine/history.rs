//! `history`: an image's history entries with their layer sizes and the local image IDs of
//! their lineage, as moby's `ImageHistory` builds them.

use chrono::{DateTime, Utc};

use super::{Engine, EngineError, Result};
use crate::digest::ImageId;
use crate::store::config::parse_time;

/// One history entry, newest first.
#[derive(Debug, Clone, PartialEq)]
pub struct HistoryItem {
    /// The image this entry made, when the store knows it: the image itself on the top row,
    /// then its parent, its parent's parent, … (`None`: `<missing>`).
    pub id: Option<ImageId>,
    pub created: Option<DateTime<Utc>>,
    pub created_by: String,
    /// Bytes of the layer the entry added (0 for an empty layer).
    pub size: u64,
    pub comment: String,
}

impl Engine {
    /// The history of the image `name` (a reference or ID), newest first.
    pub fn history(&self, name: &str) -> Result<Vec<HistoryItem>> {
        let store = self.store()?;
        let img = store.resolve(name)?;
        let mut out = Vec::new();
        let mut layer = 0usize;
        for h in &img.config.history {
            let mut size = 0;
            if !h.empty_layer {
                let Some(chain) = img.chain_ids.get(layer) else {
                    return Err(EngineError::HistoryLayers);
                };
                size = store.layer(chain)?.size;
                layer += 1;
            }
            out.push(HistoryItem {
                id: None,
                created: h.created.as_deref().and_then(parse_time),
                created_by: h.created_by.clone().unwrap_or_default(),
                size,
                comment: h.comment.clone().unwrap_or_default(),
            });
        }
        out.reverse();
        let mut cur = Some(img);
        for it in out.iter_mut() {
            let Some(c) = cur.take() else { break };
            cur = c.parent.as_ref().and_then(|p| store.image(p).ok());
            it.id = Some(c.id);
        }
        Ok(out)
    }
}
