//! Seekable layers end to end: `image convert --estargz` and `push --compression estargz`, and
//! peers (skopeo, podman) and a fresh strata store pulling and running what was pushed.

mod registry_common;

use std::io::Read;
use std::path::Path;

use registry_common::*;
use strata_runtime::seekable::{self, estargz};
use strata_testkit::registry::images;
use strata_testkit::registry::{skopeo_copy, Registry};

fn podman(dir: &Path, args: &[&str]) -> std::process::Output {
    std::process::Command::new("timeout")
        .args(["-k", "5", "180", "podman", "--root"])
        .arg(dir.join("proot"))
        .arg("--runroot")
        .arg(dir.join("prun"))
        .arg("--tmpdir")
        .arg(dir.join("ptmp"))
        .args([
            "--storage-driver",
            "vfs",
            "--events-backend",
            "none",
            "--cgroup-manager",
            "cgroupfs",
            "--runtime",
            "runc",
        ])
        .args(args)
        .env("XDG_CONFIG_HOME", dir.join("pconfig"))
        .env("XDG_DATA_HOME", dir.join("pdata"))
        .output()
        .expect("podman is installed by scripts/setup")
}

fn skopeo_raw_manifest(reference: &str) -> serde_json::Value {
    let o = std::process::Command::new("skopeo")
        .args(["inspect", "--raw", "--tls-verify=false"])
        .arg(format!("docker://{reference}"))
        .output()
        .expect("skopeo is installed by scripts/setup");
    assert!(o.status.success(), "skopeo inspect: {o:?}");
    serde_json::from_slice(&o.stdout).unwrap()
}

fn gunzip(b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    strata_runtime::store::decompress(b)
        .unwrap()
        .read_to_end(&mut out)
        .unwrap();
    out
}

/// Every layer of the pushed manifest is an OCI gzip layer carrying eStargz annotations that
/// match its blob (TOC digest verified by our reader, uncompressed size by gunzip).
fn assert_estargz_manifest(reg: &Registry, reference: &str) -> serde_json::Value {
    let m = skopeo_raw_manifest(reference);
    assert_eq!(
        m["mediaType"], "application/vnd.oci.image.manifest.v1+json",
        "{m}"
    );
    let layers = m["layers"].as_array().unwrap();
    assert!(!layers.is_empty());
    for l in layers {
        assert_eq!(
            l["mediaType"], "application/vnd.oci.image.layer.v1.tar+gzip",
            "{l}"
        );
        let toc = l["annotations"][estargz::TOC_DIGEST_ANNOTATION]
            .as_str()
            .unwrap_or_else(|| panic!("no TOC digest annotation: {l}"));
        let blob = std::fs::read(reg.blob_file(l["digest"].as_str().unwrap())).unwrap();
        let off = seekable::read_footer(&blob).unwrap();
        let parsed = seekable::parse_toc(&blob[off as usize..], Some(toc)).unwrap();
        assert!(!parsed.entries.is_empty());
        assert_eq!(
            l["annotations"][estargz::UNCOMPRESSED_SIZE_ANNOTATION],
            gunzip(&blob).len().to_string()
        );
    }
    m
}

/// `skopeo copy` to an OCI layout (skopeo verifies every blob digest), and every layer there
/// decompresses to the config's diffID.
fn assert_skopeo_copies(reference: &str, dir: &Path) {
    let oci = dir.join("oci");
    skopeo_copy(
        &format!("docker://{reference}"),
        &format!("oci:{}:t", oci.display()),
        &["--src-tls-verify=false"],
    );
    let read_blob = |d: &str| {
        std::fs::read(
            oci.join("blobs/sha256")
                .join(d.trim_start_matches("sha256:")),
        )
        .unwrap()
    };
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(oci.join("index.json")).unwrap()).unwrap();
    let m: serde_json::Value = serde_json::from_slice(&read_blob(
        index["manifests"][0]["digest"].as_str().unwrap(),
    ))
    .unwrap();
    let config: serde_json::Value =
        serde_json::from_slice(&read_blob(m["config"]["digest"].as_str().unwrap())).unwrap();
    let diff_ids = config["rootfs"]["diff_ids"].as_array().unwrap();
    let layers = m["layers"].as_array().unwrap();
    assert_eq!(diff_ids.len(), layers.len());
    for (l, d) in layers.iter().zip(diff_ids) {
        let plain = gunzip(&read_blob(l["digest"].as_str().unwrap()));
        assert_eq!(
            strata_testkit::fixtures::sha256(&plain),
            d.as_str().unwrap()
        );
    }
}

/// `podman pull` (which verifies diffIDs) and `podman run` of `reference`.
fn assert_podman_runs(reference: &str, dir: &Path, expect: &str) {
    let o = podman(dir, &["pull", "--tls-verify=false", reference]);
    assert!(o.status.success(), "podman pull: {o:?}");
    let o = podman(
        dir,
        &[
            "run",
            "--rm",
            "--network",
            "none",
            "--ulimit",
            "nofile=1024:1024",
            "--ulimit",
            "nproc=4096:4096",
            reference,
            "cat",
            "/etc/greeting",
        ],
    );
    assert!(o.status.success(), "podman run: {o:?}");
    assert_eq!(String::from_utf8_lossy(&o.stdout), expect);
}

/// A fresh strata store pulls the image with an ordinary pull and runs it.
fn assert_strata_runs(reference: &str, expect: &str) {
    let env = Env::new();
    env.ok(&["pull", reference]);
    let out = env.ok(&[
        "--storage-driver",
        "vfs",
        "run",
        "--rm",
        reference,
        "cat",
        "/etc/greeting",
    ]);
    assert_eq!(out, expect);
}

fn greeting_image() -> images::Image {
    images::image(vec![
        images::busybox(),
        images::layer(&[("etc/greeting", b"hello estargz\n")]),
    ])
}

#[test]
fn converted_image_pushes_and_runs_in_podman_skopeo_and_strata() {
    let reg = Registry::start();
    let img = greeting_image();
    push_image(&reg, "bb:1", &img);
    let env = Env::new();
    let src = format!("{}/bb:1", reg.addr());
    env.ok(&["pull", &src]);
    let prefetch = env.dir.path().join("prefetch.txt");
    std::fs::write(&prefetch, "/bin/busybox\n# comment\n\netc/greeting\n").unwrap();
    let out = env.ok(&[
        "image",
        "convert",
        "--estargz",
        "--prefetch-from",
        prefetch.to_str().unwrap(),
        &src,
        "bb-esgz:1",
    ]);
    let store = env.store();
    let rec = store.resolve("bb-esgz:1").unwrap();
    assert_eq!(out.trim(), rec.id.to_string());
    assert_ne!(rec.id.to_string(), img.config_digest);
    assert_eq!(rec.chain_ids.len(), 2);
    // Each stored layer's blob is eStargz; the prefetch paths come first in their layers.
    for (c, first) in rec.chain_ids.iter().zip(["bin/busybox", "etc/greeting"]) {
        let layer = store.layer(c).unwrap();
        let blob = store.blob_path(layer.compressed_digest.as_ref().unwrap());
        let (toc, _) = estargz::inspect_file(&blob).unwrap();
        let landmark = toc.prefetch_landmark().expect("prefetch landmark");
        let names: Vec<&str> = toc.entries[..landmark]
            .iter()
            .map(|e| e.name.as_str())
            .collect();
        assert!(names.contains(&first), "{names:?}");
    }
    // The converted image runs in strata as it is.
    let out = env.ok(&[
        "--storage-driver",
        "vfs",
        "run",
        "--rm",
        "bb-esgz:1",
        "cat",
        "/etc/greeting",
    ]);
    assert_eq!(out, "hello estargz\n");

    let target = format!("{}/bb-esgz:1", reg.addr());
    env.ok(&["tag", "bb-esgz:1", &target]);
    env.ok(&["push", &target]);
    let m = assert_estargz_manifest(&reg, &target);
    assert_eq!(m["config"]["digest"], rec.id.to_string());
    let peers = tempfile::tempdir().unwrap();
    assert_skopeo_copies(&target, peers.path());
    assert_podman_runs(&target, peers.path(), "hello estargz\n");
    assert_strata_runs(&target, "hello estargz\n");
}

#[test]
fn push_compression_estargz_converts_on_the_way_out() {
    let reg = Registry::start();
    let img = greeting_image();
    push_image(&reg, "plain:1", &img);
    let env = Env::new();
    let src = format!("{}/plain:1", reg.addr());
    env.ok(&["pull", &src]);
    let target = format!("{}/lazy:1", reg.addr());
    env.ok(&["tag", &src, &target]);
    let out = env.ok(&["push", "--compression", "estargz", &target]);
    assert!(
        out.contains("lazy:1: digest: sha256:") || out.contains("1: digest: sha256:"),
        "{out}"
    );
    let m = assert_estargz_manifest(&reg, &target);
    assert_ne!(m["config"]["digest"], img.config_digest);
    // Pushing the same image again reuses the converted layers (no second conversion).
    let images_before = env.store().images().unwrap().len();
    env.ok(&["push", "--compression", "estargz", &target]);
    assert_eq!(env.store().images().unwrap().len(), images_before);
    // `--compression gzip` is the plain push.
    let gz_target = format!("{}/gz:1", reg.addr());
    env.ok(&["tag", &src, &gz_target]);
    env.ok(&["push", "--compression", "gzip", &gz_target]);
    let m = skopeo_raw_manifest(&gz_target);
    assert_eq!(m["config"]["digest"], img.config_digest);
    assert!(m["layers"][0].get("annotations").is_none(), "{m}");
    let peers = tempfile::tempdir().unwrap();
    assert_skopeo_copies(&target, peers.path());
    assert_strata_runs(&target, "hello estargz\n");
}

#[test]
fn convert_and_push_errors_are_docker_style() {
    let env = Env::new();
    // Docker's image verbs exit 1 on a daemon-side error; usage errors exit 125.
    let (code, _, err) = env.run(&["image", "convert", "--estargz", "nope:1", "x:1"]);
    assert_eq!(code, 1);
    assert_eq!(err, "Error: No such image: nope:1\n");
    let (code, _, err) = env.run(&["image", "convert", "nope:1", "x:1"]);
    assert_eq!(code, 1);
    assert_eq!(err, "Error: no conversion specified: use --estargz\n");
    let (code, _, err) = env.run(&["push", "--compression", "lz4", "x:1"]);
    assert_eq!(code, 125);
    assert!(err.contains("invalid compression format \"lz4\""), "{err}");
    assert!(env.store().images().unwrap().is_empty());
}
