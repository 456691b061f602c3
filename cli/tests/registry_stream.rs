//! `strata pull` extracts a layer while its blob is still arriving (real registry, fault proxy).

mod registry_common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use registry_common::*;
use strata_testkit::registry::images::{self, noise};
use strata_testkit::registry::proxy::{Mode, Proxy};
use strata_testkit::registry::Registry;

/// `<root>/tmp/*-layer/diff/<rel>` of any layer staging dir, if present.
fn staged_file(root: &Path, rel: &str) -> Option<PathBuf> {
    std::fs::read_dir(root.join("tmp"))
        .ok()?
        .flatten()
        .map(|e| e.path().join("diff").join(rel))
        .find(|p| p.is_file())
}

#[test]
fn layer_is_extracted_while_its_blob_downloads() {
    let reg = Registry::start();
    const FILE: usize = 512 << 10;
    let files: Vec<(String, Vec<u8>)> = (0..8)
        .map(|i| (format!("data/f{i}"), noise(FILE, 11 + i as u64)))
        .collect();
    let refs: Vec<(&str, &[u8])> = files
        .iter()
        .map(|(n, d)| (n.as_str(), d.as_slice()))
        .collect();
    let img = images::image(vec![images::layer(&refs)]);
    let blob_size = img.layers[0].gz.len() as u64;
    assert!(blob_size > 3 << 20, "blob of {blob_size} bytes");
    push_image(&reg, "stream:latest", &img);

    // The proxy forwards 1.5 MiB of the blob, then stalls the connection.
    let held_at = 3usize << 19;
    let proxy = Proxy::start(&reg.addr(), Mode::Hold(held_at));
    let env = Env::new();
    let name = format!("{}/stream", proxy.addr());
    let child = env.spawn(&["pull", &name]);
    assert!(
        proxy.wait_held(Duration::from_secs(60)),
        "download never got going"
    );
    // While the rest of the blob has not even been sent, the first file is already extracted
    // (complete, byte for byte) in the store's staging dir, and nothing is visible yet.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut seen = None;
    while Instant::now() < deadline {
        if let Some(p) = staged_file(&env.root(), "data/f0") {
            if std::fs::read(&p).is_ok_and(|d| d == files[0].1) {
                seen = Some(p);
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let partial: u64 = env.partial_sizes().into_iter().max().unwrap_or(0);
    let store = env.store();
    let layers_while_held = store.layers().unwrap();
    let images_while_held = store.images().unwrap();
    // Let the download go on: the dropped connection is resumed with Range.
    proxy.set_mode(Mode::Pass);
    proxy.release();
    let (code, out, err) = wait_output(child);
    assert!(seen.is_some(), "data/f0 never appeared in a staging dir");
    assert!(
        partial <= held_at as u64 && partial < blob_size,
        "only {held_at} bytes were sent, partial file has {partial} of {blob_size}"
    );
    assert!(layers_while_held.is_empty(), "{layers_while_held:?}");
    assert!(images_while_held.is_empty());
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        proxy
            .heads()
            .iter()
            .any(|h| h.to_ascii_lowercase().contains("range: bytes=")),
        "interrupted blob resumed with Range"
    );
    let rec = env.store().resolve(&name).unwrap();
    assert_eq!(rec.id.to_string(), img.config_digest);
    let dirs = env.store().layer_dirs(&rec).unwrap();
    for (n, d) in &files {
        assert_eq!(&std::fs::read(dirs[0].join(n)).unwrap(), d, "{n}");
    }
    assert!(
        staged_file(&env.root(), "data/f0").is_none(),
        "staging gone"
    );
    assert!(env.partials().is_empty(), "partial download cleaned up");
}
