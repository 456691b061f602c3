//! The union filesystem's supplier of lazy layers' data ([`strata_fs::LowerData`]), and the
//! background thread that completes those layers while the mount lives. Both run in the
//! process that serves the mount (the container's supervisor).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use nix::errno::Errno;

use super::LazyLayer;
use crate::container::logs::LogWriter;
use crate::store::Store;

/// Attempts of the background completion of one layer before it gives up (the next mount
/// resumes it).
const COMPLETE_ATTEMPTS: u32 = 5;

/// FUSE serving threads of a mount with lazy layers: a read waiting for its chunks holds one
/// (and the kernel's read-ahead of one read can take several), so reads of other chunks and
/// other requests need more than the default one per core to go on meanwhile.
pub const SERVING_THREADS: usize = 8;

/// Where lines about failed reads go besides the log crate: the container's log (set by the
/// supervisor before it mounts).
static REPORT: OnceLock<Arc<LogWriter>> = OnceLock::new();

/// Send lazy-layer errors of this process to the container's log `w` too.
pub fn report_to(w: Arc<LogWriter>) {
    let _ = REPORT.set(w);
}

pub(super) fn report(line: &str) {
    log::error!("{line}");
    if let Some(w) = REPORT.get() {
        w.write("stderr", format!("strata: {line}\n").as_bytes());
    }
}

/// Lazy layers of one mount, by lower index (top first; `None`: an ordinary layer).
pub struct Provider {
    layers: Vec<Option<Arc<LazyLayer>>>,
    stop: Arc<AtomicBool>,
}

impl strata_fs::LowerData for Provider {
    fn ensure(&self, lower: usize, ino: u64) -> Result<(), Errno> {
        let Some(Some(l)) = self.layers.get(lower) else {
            return Ok(());
        };
        l.ensure_ino(ino).map_err(|e| {
            let name = l.entry_name(ino).unwrap_or("?");
            report(&format!(
                "lazy layer {}: cannot read /{name}: {e}",
                l.digest()
            ));
            Errno::EIO
        })
    }

    fn ensure_range(&self, lower: usize, ino: u64, off: u64, len: u64) -> Result<(), Errno> {
        let Some(Some(l)) = self.layers.get(lower) else {
            return Ok(());
        };
        l.ensure_ino_range(ino, off, len).map_err(|e| {
            let name = l.entry_name(ino).unwrap_or("?");
            report(&format!(
                "lazy layer {}: cannot read /{name} at {off}+{len}: {e}",
                l.digest()
            ));
            Errno::EIO
        })
    }

    fn pending(&self, lower: usize, ino: u64) -> bool {
        matches!(self.layers.get(lower), Some(Some(l)) if l.pending_ino(ino))
    }
}

impl Drop for Provider {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// The store a layer dir (`<root>/layers/<chain>/diff`) belongs to.
fn store_of(diff: &Path) -> Option<PathBuf> {
    Some(diff.parent()?.parent()?.parent()?.to_path_buf())
}

/// A supplier for the lazy layers among `lowers` (top first), with a background thread that
/// completes them; `None` when none is lazy. A lazy layer that cannot be opened is an error
/// for the mount.
pub fn provider_for(lowers: &[PathBuf]) -> Result<Option<Arc<Provider>>, super::LazyError> {
    if !lowers.iter().any(|d| super::is_lazy_diff(d)) {
        return Ok(None);
    }
    let mut layers = Vec::with_capacity(lowers.len());
    let mut root = None;
    for d in lowers {
        if super::is_lazy_diff(d) {
            let dir = d.parent().unwrap_or(d);
            layers.push(Some(Arc::new(LazyLayer::open(dir)?)));
            root = root.or_else(|| store_of(d));
        } else {
            layers.push(None);
        }
    }
    let stop = Arc::new(AtomicBool::new(false));
    let p = Arc::new(Provider {
        layers: layers.clone(),
        stop: stop.clone(),
    });
    if let Some(root) = root {
        // Bottom layer first: it is what a lower layer's files most often shadow least.
        let todo: Vec<Arc<LazyLayer>> = layers.into_iter().rev().flatten().collect();
        std::thread::Builder::new()
            .name("lazy-complete".into())
            .spawn(move || background(&root, todo, &stop))
            .map_err(super::io_at("lazy-complete thread"))?;
    }
    Ok(Some(p))
}

/// Complete every lazy layer among `lowers` now, in this process (for consumers that read layer
/// dirs directly). Ordinary layers are left alone.
pub fn complete_lowers(lowers: &[PathBuf]) -> Result<(), super::LazyError> {
    for d in lowers.iter().filter(|d| super::is_lazy_diff(d)) {
        let Some(root) = store_of(d) else { continue };
        let store = Store::open(&root)?;
        let dir = d.parent().unwrap_or(d);
        let l = LazyLayer::open(dir)?;
        l.complete(&store, false, &|| false)?;
        if super::is_lazy_diff(d) {
            // Another process is completing it: it exchanges the layer when done.
            return Err(super::LazyError::Busy {
                chain: l.chain_id().clone(),
            });
        }
    }
    Ok(())
}

/// Complete the lazy layers of image `id` now (a plain `pull` of a lazily pulled image makes
/// it wholly local, resuming what earlier runs fetched). Returns how many were lazy.
pub fn complete_image(
    store: &Store,
    id: &crate::digest::ImageId,
) -> Result<usize, super::LazyError> {
    let rec = store.image(id)?;
    let lowers = store.layer_dirs(&rec)?;
    let lazy = lowers.iter().filter(|d| super::is_lazy_diff(d)).count();
    complete_lowers(&lowers)?;
    Ok(lazy)
}

fn background(root: &Path, todo: Vec<Arc<LazyLayer>>, stop: &AtomicBool) {
    let Ok(store) = Store::open(root) else {
        return;
    };
    super::sweep_retired(&store);
    let stopped = || stop.load(Ordering::SeqCst);
    // The prefetch files of every layer first, then each whole layer.
    for l in &todo {
        l.prefetch(&stopped);
    }
    for l in todo {
        let mut attempt = 0;
        loop {
            attempt += 1;
            match l.complete(&store, true, &stopped) {
                Ok(_) => break,
                Err(e) => {
                    report(&format!("lazy layer {}: background fetch: {e}", l.digest()));
                    if attempt >= COMPLETE_ATTEMPTS || stopped() {
                        break;
                    }
                    for _ in 0..(10 * attempt) {
                        if stopped() {
                            return;
                        }
                        std::thread::sleep(Duration::from_millis(200));
                    }
                }
            }
        }
        if stopped() {
            return;
        }
    }
}
