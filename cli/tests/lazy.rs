//! `pull --lazy` / `run --lazy` of eStargz images: containers start on a skeleton and read
//! their files on demand through the union filesystem, while the testkit proxy counts what the
//! registry served; the background completes the layers into ordinary ones; faults fail reads
//! with EIO, never a hang.

mod registry_common;

use std::io::Cursor;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use registry_common::*;
use strata_runtime::digest::{chain_ids, DiffId};
use strata_runtime::seekable::estargz::{self, EstargzOptions};
use strata_testkit::registry::images::{self, Image, Layer};
use strata_testkit::registry::proxy::{Mode, Proxy};
use strata_testkit::registry::Registry;

/// A layer converted to eStargz, and its TOC digest annotation.
fn estargz_layer(tar: Vec<u8>, prioritized: &[&str]) -> (Layer, Vec<(String, String)>) {
    let mut blob = Vec::new();
    let opts = EstargzOptions {
        prioritized: prioritized.iter().map(|s| s.to_string()).collect(),
        chunk_size: 1 << 20,
        ..EstargzOptions::default()
    };
    let info = estargz::write_estargz(Cursor::new(tar.clone()), &mut blob, &opts).unwrap();
    let layer = Layer {
        digest: images::sha256(&blob),
        diff_id: info.diff_id.to_string(),
        tar,
        gz: blob,
    };
    (layer, estargz::annotations(&info))
}

/// Pseudo-random (incompressible) bytes.
fn noise(size: usize, seed: u64) -> Vec<u8> {
    let mut data = Vec::with_capacity(size);
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

const BIG: usize = 12 << 20;

/// busybox + a layer with a small file and a big one, both eStargz, with the TOC annotations in
/// the manifest.
fn lazy_image() -> Image {
    let (bb, bb_ann) = estargz_layer(images::busybox().tar, &["bin/busybox"]);
    let big = noise(BIG, 7);
    let data = images::layer(&[("data/small.txt", b"hello-lazy\n"), ("data/big.bin", &big)]);
    let (data, data_ann) = estargz_layer(data.tar, &["data/small.txt"]);
    let mut img = images::image(vec![bb, data]);
    let mut m: serde_json::Value = serde_json::from_slice(&img.manifest).unwrap();
    for (i, ann) in [bb_ann, data_ann].into_iter().enumerate() {
        let map: serde_json::Map<String, serde_json::Value> = ann
            .into_iter()
            .map(|(k, v)| (k, serde_json::Value::String(v)))
            .collect();
        m["layers"][i]["annotations"] = serde_json::Value::Object(map);
    }
    img.manifest = serde_json::to_vec(&m).unwrap();
    img.manifest_digest = images::sha256(&img.manifest);
    img
}

fn image_bytes(img: &Image) -> u64 {
    img.layers.iter().map(|l| l.gz.len() as u64).sum()
}

/// Removes every container of the env (and so their mounts) even when the test fails.
struct Cleanup<'a>(&'a Env);

impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        let (_, out, _) = self.0.run(&["ps", "-aq"]);
        for id in out.split_whitespace() {
            let _ = self.0.run(&["rm", "-f", id]);
        }
    }
}

fn layer_dir(env: &Env, img: &Image, i: usize) -> PathBuf {
    let diff_ids: Vec<DiffId> = img
        .layers
        .iter()
        .map(|l| DiffId::parse(&l.diff_id).unwrap())
        .collect();
    let chain = &chain_ids(&diff_ids)[i];
    env.root().join("layers").join(chain.hex())
}

fn wait_for(what: &str, timeout: Duration, f: impl Fn() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn lazy_run_reads_on_demand_then_completes_into_an_ordinary_layer() {
    let reg = Registry::start();
    let img = lazy_image();
    push_image(&reg, "lazy:latest", &img);
    let proxy = Proxy::start(&reg.addr(), Mode::Pass);
    let env = Env::new();
    let _c = Cleanup(&env);
    let name = format!("{}/lazy", proxy.addr());
    let total = image_bytes(&img);

    // pull --lazy: manifest, config and the TOCs only.
    let out = env.ok(&["pull", "--lazy", &name]);
    assert!(out.contains("Pull complete"), "{out}");
    let after_pull = proxy.blob_bytes_served();
    assert!(after_pull < total / 10, "{after_pull} of {total}");
    assert!(layer_dir(&env, &img, 1).join("lazy/source.json").is_file());
    assert_eq!(
        env.store().resolve(&name).unwrap().id.to_string(),
        img.config_digest
    );

    // A run reads busybox and the small file, not the big one (background kept quiet).
    let (code, out, err) = wait_output(
        env.command(&["run", "--rm", &name, "cat", "/data/small.txt"])
            .env("STRATA_LAZY_QUIET_MS", "600000")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap(),
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "hello-lazy\n");
    let served = proxy.blob_bytes_served();
    assert!(
        served < total / 2 && served < (BIG as u64) / 2,
        "served {served} of {total} bytes"
    );
    assert!(layer_dir(&env, &img, 1).join("lazy").is_dir());

    // A detached run lets the background complete both layers into ordinary ones.
    let id = env.ok(&["run", "-d", &name, "sleep", "120"]);
    let id = id.trim();
    for i in 0..2 {
        let d = layer_dir(&env, &img, i);
        wait_for("the layer to complete", Duration::from_secs(90), || {
            !d.join("lazy").exists()
        });
        assert!(d.join("tar-split.gz").is_file());
    }
    // The big file, read through the still-running container's (now complete) skeleton.
    let out = env.ok(&["exec", id, "sha256sum", "/data/big.bin"]);
    assert_eq!(
        out.split_whitespace().next().unwrap(),
        images::sha256(&noise(BIG, 7)).trim_start_matches("sha256:")
    );
    env.ok(&["rm", "-f", id]);
    // Exactly what a normal pull makes: each layer's tar rebuilds to its diffID, and the
    // compressed blobs are in the store.
    let store = env.store();
    let rec = store.resolve(&name).unwrap();
    for (i, c) in rec.chain_ids.iter().enumerate() {
        let info = store.layer_tar(c, &mut std::io::sink()).unwrap();
        assert_eq!(info.diff_id.to_string(), img.layers[i].diff_id);
        let d = strata_runtime::digest::Digest::parse(&img.layers[i].digest).unwrap();
        assert!(store.has_blob(&d));
    }
    let out = env.ok(&["run", "--rm", &name, "cat", "/data/small.txt"]);
    assert_eq!(out, "hello-lazy\n");
    // The retired skeletons go with the next GC, now that nothing serves them.
    let retired = env.root().join("lazy-retired");
    assert_eq!(std::fs::read_dir(&retired).unwrap().count(), 2);
    env.ok(&["image", "prune", "-f"]);
    assert_eq!(std::fs::read_dir(&retired).unwrap().count(), 0);
}

#[test]
fn lazy_tampered_chunk_is_eio_and_never_stored() {
    let reg = Registry::start();
    let img = lazy_image();
    push_image(&reg, "lazy:latest", &img);
    let env = Env::new();
    let _c = Cleanup(&env);
    let name = format!("{}/lazy", reg.addr());
    env.ok(&["pull", "--lazy", &name]);
    // Flip a byte inside big.bin's compressed data in the registry's storage.
    let blob = reg.blob_file(&img.layers[1].digest);
    let mut bytes = std::fs::read(&blob).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0x55;
    std::fs::write(&blob, &bytes).unwrap();

    let (code, out, err) = env.run(&["run", "--name", "tampered", &name, "cat", "/data/big.bin"]);
    assert_ne!(code, 0, "{out}");
    assert!(out.is_empty(), "tampered bytes reached the container");
    assert!(
        err.contains("I/O error") || err.contains("Input/output error"),
        "{err}"
    );
    let (_, _, logs) = env.run(&["logs", "tampered"]);
    assert!(
        logs.contains("lazy layer") && logs.contains("data/big.bin"),
        "{logs}"
    );
    // The small file still reads; the layer stays lazy (never stored as complete).
    let out = env.ok(&["run", "--rm", &name, "cat", "/data/small.txt"]);
    assert_eq!(out, "hello-lazy\n");
    assert!(layer_dir(&env, &img, 1).join("lazy").is_dir());
    assert!(!layer_dir(&env, &img, 1).join("tar-split.gz").exists());
}

#[test]
fn lazy_registry_gone_fails_reads_with_eio_not_a_hang() {
    let mut reg = Registry::start();
    let img = lazy_image();
    push_image(&reg, "lazy:latest", &img);
    let env = Env::new();
    let _c = Cleanup(&env);
    let name = format!("{}/lazy", reg.addr());
    env.ok(&["pull", "--lazy", &name]);
    // busybox fetched while the registry is up.
    let quiet = [("STRATA_LAZY_QUIET_MS", "600000")];
    let run = |args: &[&str]| {
        let mut c = env.command(args);
        c.envs(quiet)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        wait_output(c.spawn().unwrap())
    };
    let (code, _, err) = run(&["run", "--rm", &name, "true"]);
    assert_eq!(code, 0, "{err}");
    reg.kill();
    let t = Instant::now();
    let (code, out, err) = run(&["run", "--rm", &name, "cat", "/data/small.txt"]);
    assert_ne!(code, 0, "{out}");
    assert!(
        err.contains("I/O error") || err.contains("Input/output error"),
        "{err}"
    );
    assert!(t.elapsed() < Duration::from_secs(60), "{:?}", t.elapsed());
}
