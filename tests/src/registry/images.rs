//! Small OCI images built in memory for registry tests: layers from `(path, bytes)` lists, a config,
//! a manifest, optionally an index; written as an OCI image layout that `skopeo copy oci:DIR:TAG`
//! pushes to the registry.

use std::io::Write;
use std::path::Path;

use sha2::{Digest as _, Sha256};

pub fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// A gzip-compressed layer.
#[derive(Clone, Debug)]
pub struct Layer {
    pub tar: Vec<u8>,
    pub gz: Vec<u8>,
    /// Digest of `gz` (what manifests list).
    pub digest: String,
    /// Digest of `tar` (what the config lists).
    pub diff_id: String,
}

/// A layer holding regular files (parent directories are created as needed).
pub fn layer(files: &[(&str, &[u8])]) -> Layer {
    let mut b = tar::Builder::new(Vec::new());
    let mut dirs = std::collections::BTreeSet::new();
    for (path, data) in files {
        let mut parent = Path::new(path).parent();
        let mut chain = Vec::new();
        while let Some(p) = parent.filter(|p| !p.as_os_str().is_empty()) {
            chain.push(p.to_path_buf());
            parent = p.parent();
        }
        for d in chain.into_iter().rev() {
            if dirs.insert(d.clone()) {
                let mut h = tar::Header::new_ustar();
                h.set_entry_type(tar::EntryType::Directory);
                h.set_mode(0o755);
                h.set_size(0);
                h.set_mtime(1_700_000_000);
                h.set_uid(0);
                h.set_gid(0);
                b.append_data(&mut h, format!("{}/", d.display()), std::io::empty())
                    .expect("tar dir");
            }
        }
        let mut h = tar::Header::new_ustar();
        h.set_mode(0o644);
        h.set_size(data.len() as u64);
        h.set_mtime(1_700_000_000);
        h.set_uid(0);
        h.set_gid(0);
        b.append_data(&mut h, path, *data).expect("tar file");
    }
    layer_from_tar(b.into_inner().expect("tar finish"))
}

/// A layer from an uncompressed tar (gzip-compressed here).
pub fn layer_from_tar(tar: Vec<u8>) -> Layer {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&tar).expect("gzip");
    let gz = gz.finish().expect("gzip finish");
    Layer {
        digest: sha256(&gz),
        diff_id: sha256(&tar),
        tar,
        gz,
    }
}

/// A layer compressed with zstd (by the `zstd` command), for `tar+zstd` manifests.
pub fn layer_zstd(files: &[(&str, &[u8])]) -> Layer {
    let tar = layer(files).tar;
    let mut child = std::process::Command::new("zstd")
        .args(["-q", "-c", "-3"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("run zstd");
    let mut stdin = child.stdin.take().expect("stdin");
    let input = tar.clone();
    let writer = std::thread::spawn(move || stdin.write_all(&input));
    let out = child.wait_with_output().expect("zstd output");
    writer.join().expect("writer").expect("write to zstd");
    assert!(out.status.success(), "zstd failed");
    Layer {
        digest: sha256(&out.stdout),
        diff_id: sha256(&tar),
        tar,
        gz: out.stdout,
    }
}

/// The busybox layer of the testkit fixtures (Debian's busybox-static and its applet links).
pub fn busybox() -> Layer {
    layer_from_tar(crate::fixtures::busybox_layer().expect("busybox layer"))
}

/// A layer of `size` pseudo-random (incompressible) bytes in one file: big enough to interrupt.
pub fn big_layer(name: &str, size: usize, seed: u64) -> Layer {
    layer(&[(name, &noise(size, seed))])
}

/// `size` pseudo-random (incompressible) bytes (xorshift from `seed`): compressed, as large.
pub fn noise(size: usize, seed: u64) -> Vec<u8> {
    let mut data = Vec::with_capacity(size + 8);
    let mut x = seed | 1;
    while data.len() < size {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        data.extend_from_slice(&x.to_le_bytes());
    }
    data.truncate(size);
    data
}

/// An image: config + manifest over some layers.
#[derive(Clone, Debug)]
pub struct Image {
    pub layers: Vec<Layer>,
    pub config: Vec<u8>,
    pub config_digest: String,
    pub manifest: Vec<u8>,
    pub manifest_digest: String,
    pub arch: String,
    pub variant: Option<String>,
}

pub fn image(layers: Vec<Layer>) -> Image {
    image_for(layers, "amd64", None)
}

/// An image for `linux/<arch>[/<variant>]`.
pub fn image_for(layers: Vec<Layer>, arch: &str, variant: Option<&str>) -> Image {
    let diff_ids: Vec<&str> = layers.iter().map(|l| l.diff_id.as_str()).collect();
    let history: Vec<serde_json::Value> = layers
        .iter()
        .enumerate()
        .map(|(i, _)| serde_json::json!({"created": "2024-01-01T00:00:00Z", "created_by": format!("layer {i}")}))
        .collect();
    let mut config = serde_json::json!({
        "architecture": arch,
        "os": "linux",
        "created": "2024-01-01T00:00:00Z",
        "config": {"Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"], "Cmd": ["sh"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": history,
    });
    if let Some(v) = variant {
        config["variant"] = serde_json::json!(v);
    }
    let config = serde_json::to_vec(&config).expect("config json");
    let config_digest = sha256(&config);
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config.len()},
        "layers": layers.iter().map(|l| serde_json::json!({
            "mediaType": if l.gz.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
                "application/vnd.oci.image.layer.v1.tar+zstd"
            } else {
                "application/vnd.oci.image.layer.v1.tar+gzip"
            },
            "digest": l.digest, "size": l.gz.len()
        })).collect::<Vec<_>>(),
    });
    let manifest = serde_json::to_vec(&manifest).expect("manifest json");
    Image {
        manifest_digest: sha256(&manifest),
        layers,
        config,
        config_digest,
        manifest,
        arch: arch.to_string(),
        variant: variant.map(String::from),
    }
}

fn put_blob(dir: &Path, bytes: &[u8]) -> String {
    let d = sha256(bytes);
    let p = dir
        .join("blobs/sha256")
        .join(d.trim_start_matches("sha256:"));
    std::fs::create_dir_all(p.parent().expect("parent")).expect("blobs dir");
    std::fs::write(p, bytes).expect("write blob");
    d
}

fn write_layout(dir: &Path, tag: &str, media_type: &str, top: &[u8]) {
    std::fs::create_dir_all(dir).expect("layout dir");
    std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#)
        .expect("oci-layout");
    let d = put_blob(dir, top);
    let index = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{"mediaType": media_type, "digest": d, "size": top.len(),
                       "annotations": {"org.opencontainers.image.ref.name": tag}}],
    });
    std::fs::write(
        dir.join("index.json"),
        serde_json::to_vec(&index).expect("index"),
    )
    .expect("index.json");
}

fn write_image_blobs(dir: &Path, img: &Image) {
    for l in &img.layers {
        put_blob(dir, &l.gz);
    }
    put_blob(dir, &img.config);
    put_blob(dir, &img.manifest);
}

/// Write `img` as an OCI layout at `dir` under `tag` (`skopeo copy oci:DIR:TAG …`).
pub fn write_oci_layout(dir: &Path, tag: &str, img: &Image) {
    write_image_blobs(dir, img);
    write_layout(
        dir,
        tag,
        "application/vnd.oci.image.manifest.v1+json",
        &img.manifest,
    );
}

/// An OCI index over `images`, with an attestation entry (`unknown/unknown`) after them when
/// `attestation` is set. Returns the index bytes.
pub fn index(images: &[Image], attestation: Option<&Image>) -> Vec<u8> {
    let mut manifests: Vec<serde_json::Value> = images
        .iter()
        .map(|i| {
            let mut platform = serde_json::json!({"architecture": i.arch, "os": "linux"});
            if let Some(v) = &i.variant {
                platform["variant"] = serde_json::json!(v);
            }
            serde_json::json!({"mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": i.manifest_digest, "size": i.manifest.len(), "platform": platform})
        })
        .collect();
    if let Some(a) = attestation {
        manifests.insert(0, serde_json::json!({"mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": a.manifest_digest, "size": a.manifest.len(),
            "platform": {"architecture": "unknown", "os": "unknown"},
            "annotations": {"vnd.docker.reference.type": "attestation-manifest",
                            "vnd.docker.reference.digest": images.first().map(|i| i.manifest_digest.clone()).unwrap_or_default()}}));
    }
    serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": manifests,
    }))
    .expect("index json")
}

/// Write an index over `images` (plus an optional attestation image) as an OCI layout under
/// `tag`; push it with `skopeo copy --all`. Returns the index digest.
pub fn write_oci_index_layout(
    dir: &Path,
    tag: &str,
    images: &[Image],
    attestation: Option<&Image>,
) -> String {
    for i in images.iter().chain(attestation) {
        write_image_blobs(dir, i);
    }
    let idx = index(images, attestation);
    write_layout(dir, tag, "application/vnd.oci.image.index.v1+json", &idx);
    sha256(&idx)
}

/// The blob `digest` of the OCI image layout at `layout`.
pub fn oci_blob(layout: &Path, digest: &str) -> Vec<u8> {
    let hex = digest.trim_start_matches("sha256:");
    oci_blob_file(layout, &format!("blobs/sha256/{hex}"))
}

/// The manifest of the first image the OCI image layout at `layout` lists.
pub fn oci_manifest(layout: &Path) -> serde_json::Value {
    let index: serde_json::Value =
        serde_json::from_slice(&oci_blob_file(layout, "index.json")).expect("index.json is JSON");
    let digest = index["manifests"][0]["digest"]
        .as_str()
        .expect("a manifest in index.json");
    serde_json::from_slice(&oci_blob(layout, digest)).expect("the manifest is JSON")
}

/// The file `name` of a layout (panics with its path if it cannot be read).
fn oci_blob_file(layout: &Path, name: &str) -> Vec<u8> {
    let path = layout.join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}
