//! Shared by the in-process mount tests (`smoke.rs`, `passthrough.rs`).

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Aborts the FUSE connection of `mountpoint` if the test is still running after `limit`, so a
/// hung filesystem cannot hang the test; stops when dropped. The abort goes through the
/// testkit, which mounts a private fusectl when `/sys/fs/fuse/connections` is not mounted.
pub struct Watchdog {
    done: Arc<AtomicBool>,
}

impl Watchdog {
    pub fn new(mountpoint: &Path, limit: Duration) -> Watchdog {
        let done = Arc::new(AtomicBool::new(false));
        let d = done.clone();
        let minor = std::fs::metadata(mountpoint)
            .map(|m| nix::sys::stat::minor(m.dev()) as u32)
            .unwrap_or(0);
        std::thread::spawn(move || {
            let start = Instant::now();
            while !d.load(Ordering::Relaxed) {
                if start.elapsed() > limit {
                    let _ = strata_testkit::mount::abort_fuse_connection(minor);
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        Watchdog { done }
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.done.store(true, Ordering::Relaxed);
    }
}
