//! How far a lazy image has been fetched, for `image inspect` and `images` (read-only: the
//! `have` log and `source.json` of each still-lazy layer, no lock; a line torn by a writer is
//! skipped, so a reading is at worst a little behind).

use std::io::BufRead;

use serde::Serialize;

use super::Source;
use crate::store::{ImageRecord, Store};

/// One still-lazy layer: how many bytes of its compressed blob are local.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct LayerFetch {
    /// The layer's diffID (as in `RootFS.Layers`).
    #[serde(rename = "DiffID")]
    pub diff_id: String,
    /// The compressed blob's digest.
    pub digest: String,
    /// Bytes of the blob held locally (the TOC included).
    pub fetched: u64,
    /// The blob's size.
    pub size: u64,
}

/// An image some of whose layers are still lazy (strata's `Lazy` field of `image inspect`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ImageFetch {
    /// Sums over `layers`.
    pub fetched: u64,
    pub size: u64,
    /// The still-lazy layers, bottom first (complete layers are not listed).
    pub layers: Vec<LayerFetch>,
}

impl ImageFetch {
    /// Whole percent of the lazy layers' bytes held locally (rounded down: 100 only when all
    /// are, while the last step, extraction, runs).
    pub fn percent(&self) -> u64 {
        if self.size == 0 {
            return 100;
        }
        (u128::from(self.fetched) * 100 / u128::from(self.size)) as u64
    }
}

/// The total length of `[start, end)` ranges (overlaps counted once), clipped to `size`.
fn covered(mut ranges: Vec<(u64, u64)>, size: u64) -> u64 {
    ranges.sort_unstable();
    let (mut total, mut pos) = (0u64, 0u64);
    for (s, e) in ranges {
        let (s, e) = (s.max(pos), e.min(size));
        if s < e {
            total += e - s;
            pos = e;
        }
    }
    total
}

/// The fetch state of the lazy layer at `layers/<chain>` (`dir`), if it is lazy.
fn layer_fetch(dir: &std::path::Path) -> Option<LayerFetch> {
    let state = dir.join("lazy");
    let source: Source =
        serde_json::from_slice(&std::fs::read(state.join("source.json")).ok()?).ok()?;
    let mut ranges = Vec::new();
    if let Ok(f) = std::fs::File::open(state.join("have")) {
        for line in std::io::BufReader::new(f).lines() {
            let Ok(line) = line else { break };
            let mut it = line.split_whitespace().map(|n| n.parse::<u64>());
            if let (Some(Ok(s)), Some(Ok(e)), None) = (it.next(), it.next(), it.next()) {
                ranges.push((s, e));
            }
        }
    }
    Some(LayerFetch {
        diff_id: source.diff_id.to_string(),
        digest: source.digest.clone(),
        fetched: covered(ranges, source.size),
        size: source.size,
    })
}

/// How far `img`'s lazy layers are fetched; `None` when none is lazy (an ordinary image).
pub fn image_fetch(store: &Store, img: &ImageRecord) -> Option<ImageFetch> {
    let layers: Vec<LayerFetch> = img
        .chain_ids
        .iter()
        .filter_map(|c| {
            let diff = store.layer_diff_dir(c);
            layer_fetch(diff.parent()?)
        })
        .collect();
    if layers.is_empty() {
        return None;
    }
    Some(ImageFetch {
        fetched: layers.iter().map(|l| l.fetched).sum(),
        size: layers.iter().map(|l| l.size).sum(),
        layers,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn covered_merges_overlaps_and_clips() {
        assert_eq!(covered(vec![], 10), 0);
        assert_eq!(covered(vec![(5, 8), (0, 2), (1, 3), (7, 20)], 12), 3 + 7);
        assert_eq!(covered(vec![(0, 4), (0, 4)], 10), 4);
        assert_eq!(covered(vec![(12, 15)], 10), 0);
    }

    #[test]
    fn percent_rounds_down() {
        let f = |fetched, size| ImageFetch {
            fetched,
            size,
            layers: vec![],
        };
        assert_eq!(f(999, 1000).percent(), 99);
        assert_eq!(f(1000, 1000).percent(), 100);
        assert_eq!(f(30, 1000).percent(), 3);
    }
}
