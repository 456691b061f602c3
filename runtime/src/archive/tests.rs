//! Archive tests that need hand-built layouts (the CLI tests cover the common formats).

use std::path::Path;

use serde_json::json;
use strata_testkit::fixtures::{self, LayerTar};

use super::*;
use crate::store::Store;

fn put(dir: &Path, bytes: &[u8]) -> String {
    let d = fixtures::sha256(bytes);
    std::fs::create_dir_all(dir.join("blobs/sha256")).unwrap();
    std::fs::write(dir.join("blobs/sha256").join(&d[7..]), bytes).unwrap();
    d
}

fn image(dir: &Path, arch: &str) -> (String, String, usize) {
    let mut l = LayerTar::new();
    l.file("arch", arch.as_bytes(), 0o644);
    let tar = l.into_bytes();
    let gz = fixtures::gzip(&tar);
    let layer = put(dir, &gz);
    let config = serde_json::to_vec(&json!({
        "architecture": arch, "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": [fixtures::sha256(&tar)]},
    }))
    .unwrap();
    let config_d = put(dir, &config);
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "config": {"mediaType": OCI_CONFIG, "digest": config_d, "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": layer, "size": gz.len()}],
    }))
    .unwrap();
    let m = put(dir, &manifest);
    (m, config_d, manifest.len())
}

#[test]
fn oci_layout_with_multi_platform_index_picks_this_machine() {
    let t = tempfile::tempdir().unwrap();
    let layout = t.path().join("layout");
    let (arm, _, arm_len) = image(&layout, "arm64");
    let (amd, amd_cfg, amd_len) = image(&layout, host_arch());
    let inner = serde_json::to_vec(&json!({
        "schemaVersion": 2, "mediaType": OCI_INDEX,
        "manifests": [
            {"mediaType": OCI_MANIFEST, "digest": arm, "size": arm_len, "platform": {"os": "linux", "architecture": "arm64"}},
            {"mediaType": OCI_MANIFEST, "digest": amd, "size": amd_len, "platform": {"os": "linux", "architecture": host_arch()}},
        ],
    }))
    .unwrap();
    let inner_d = put(&layout, &inner);
    let index = json!({
        "schemaVersion": 2,
        "manifests": [{"mediaType": OCI_INDEX, "digest": inner_d, "size": inner.len(),
                       "annotations": {ANNOTATION_IMAGE_NAME: "docker.io/library/multi:1", ANNOTATION_REF_NAME: "1"}}],
    });
    std::fs::write(layout.join("index.json"), index.to_string()).unwrap();
    std::fs::write(
        layout.join("oci-layout"),
        r#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .unwrap();

    let store = Store::open(&t.path().join("root")).unwrap();
    let loaded = load(&store, LoadInput::Path(&layout)).unwrap();
    assert_eq!(loaded.len(), 1);
    assert_eq!(loaded[0].id.as_str(), amd_cfg);
    assert_eq!(loaded[0].tags[0].familiar(), "multi:1");
    let rec = store.resolve("multi:1").unwrap();
    let dirs = store.layer_dirs(&rec).unwrap();
    assert_eq!(
        std::fs::read(dirs[0].join("arch")).unwrap(),
        host_arch().as_bytes()
    );

    // A blob that does not match its name is refused, and nothing is stored.
    let t2 = tempfile::tempdir().unwrap();
    let store2 = Store::open(t2.path()).unwrap();
    std::fs::write(layout.join("blobs/sha256").join(&amd[7..]), b"{}").unwrap();
    let e = load(&store2, LoadInput::Path(&layout)).unwrap_err();
    assert!(e.to_string().contains("does not match its digest"), "{e}");
    assert!(store2.images().unwrap().is_empty());
    assert!(store2.layers().unwrap().is_empty());
}
