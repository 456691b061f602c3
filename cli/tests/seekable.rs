//! Seekable layers end to end: `image convert --estargz` and `push --compression estargz`, and
//! peers (skopeo, podman) and a fresh strata store pulling and running what was pushed.

mod registry_common;

use std::io::Read;
use std::path::Path;

use registry_common::*;
use strata_runtime::seekable::{self, estargz};
use strata_testkit::podman::{podman, run_args};
use strata_testkit::registry::images;
use strata_testkit::registry::{skopeo_copy, Registry};

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
    let read_blob = |d: &str| images::oci_blob(&oci, d);
    let m = images::oci_manifest(&oci);
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
    let o = podman(dir, &run_args(reference, &["cat", "/etc/greeting"]));
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

/// A new registry holding `img` as `plain:1`, and a new env that pulled it (by that name).
fn pushed_and_pulled(img: &images::Image) -> (Registry, Env, String) {
    let reg = Registry::start();
    push_image(&reg, "plain:1", img);
    let env = Env::new();
    let src = format!("{}/plain:1", reg.addr());
    env.ok(&["pull", &src]);
    (reg, env, src)
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
    let img = greeting_image();
    let (reg, env, src) = pushed_and_pulled(&img);
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

/// (cleaned name, content) of the regular files of a layer tar.
fn tar_regular_files(tar: &[u8]) -> std::collections::BTreeMap<String, Vec<u8>> {
    let mut a = tar::Archive::new(tar);
    let mut out = std::collections::BTreeMap::new();
    for e in a.entries().unwrap() {
        let mut e = e.unwrap();
        if e.header().entry_type() != tar::EntryType::Regular {
            continue;
        }
        let name = e
            .path()
            .unwrap()
            .to_string_lossy()
            .trim_start_matches("./")
            .to_string();
        let mut data = Vec::new();
        e.read_to_end(&mut data).unwrap();
        out.insert(name, data);
    }
    out
}

#[test]
fn zstd_chunked_made_by_skopeo_reads_through_its_toc() {
    let img = images::image(vec![
        images::busybox(),
        images::big_layer("data/big", 600_000, 7),
    ]);
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    let dst = dir.path().join("dst");
    images::write_oci_layout(&src, "t", &img);
    skopeo_copy(
        &format!("oci:{}:t", src.display()),
        &format!("oci:{}:t", dst.display()),
        &["--dest-compress-format", "zstd:chunked"],
    );
    let read_blob = |d: &str| images::oci_blob(&dst, d);
    let m = images::oci_manifest(&dst);
    let layers = m["layers"].as_array().unwrap();
    assert_eq!(layers.len(), img.layers.len());
    let mut chunked_files = 0;
    for (l, orig) in layers.iter().zip(&img.layers) {
        let a = &l["annotations"];
        let get = |new: &str, old: &str| {
            a[new]
                .as_str()
                .or_else(|| a[old].as_str())
                .unwrap_or_else(|| panic!("no {new}: {l}"))
                .to_string()
        };
        let pos = seekable::zstd_chunked::parse_position(&get(
            seekable::zstd_chunked::MANIFEST_POSITION_ANNOTATION,
            seekable::zstd_chunked::LEGACY_MANIFEST_POSITION_ANNOTATION,
        ))
        .unwrap();
        let checksum = get(
            seekable::zstd_chunked::MANIFEST_CHECKSUM_ANNOTATION,
            seekable::zstd_chunked::LEGACY_MANIFEST_CHECKSUM_ANNOTATION,
        );
        let blob = read_blob(l["digest"].as_str().unwrap());
        // The footer says the same as the annotation.
        assert_eq!(seekable::zstd_chunked::read_footer(&blob).unwrap(), pos);
        let manifest = &blob[pos.offset as usize..(pos.offset + pos.compressed_len) as usize];
        let toc = seekable::zstd_chunked::parse_toc(manifest, &pos, Some(&checksum)).unwrap();
        let wrong = format!("sha256:{}", "0".repeat(64));
        assert!(seekable::zstd_chunked::parse_toc(manifest, &pos, Some(&wrong)).is_err());
        // The blob is an ordinary zstd layer: it decompresses to the same tar (same diffID).
        let plain = gunzip(&blob);
        assert_eq!(strata_testkit::fixtures::sha256(&plain), orig.diff_id);
        // Every regular file reads back from its verified chunks alone.
        let files = tar_regular_files(&orig.tar);
        assert!(!files.is_empty());
        for (name, data) in &files {
            let i = toc.lookup(name).unwrap_or_else(|| panic!("{name} in TOC"));
            let mut got = Vec::new();
            let chunks = toc.file_chunks(i);
            if chunks.len() > 1 {
                chunked_files += 1;
            }
            for c in chunks {
                assert_eq!(c.file_offset, got.len() as u64);
                got.extend(
                    seekable::decode_chunk(&blob[c.start as usize..c.end as usize], c).unwrap(),
                );
            }
            assert_eq!(&got, data, "{name}");
        }
        // A flipped byte in a chunk is an error, never data.
        let c = toc
            .chunks()
            .iter()
            .max_by_key(|c| c.end - c.start)
            .unwrap()
            .clone();
        let mut range = blob[c.start as usize..c.end as usize].to_vec();
        let mid = range.len() / 2;
        range[mid] ^= 0x40;
        assert!(seekable::decode_chunk(&range, &c).is_err());
    }
    assert!(
        chunked_files > 0,
        "the big file is split into several chunks"
    );
}

#[test]
fn push_compression_zstd_chunked_keeps_the_config_and_runs_in_podman_and_strata() {
    let img = greeting_image();
    let (reg, env, src) = pushed_and_pulled(&img);
    let target = format!("{}/zc:1", reg.addr());
    env.ok(&["tag", &src, &target]);
    env.ok(&["push", "--compression", "zstd:chunked", &target]);
    let m = skopeo_raw_manifest(&target);
    // Same tar, same diffIDs: the very same config (image ID).
    assert_eq!(m["config"]["digest"], img.config_digest);
    assert_eq!(m["mediaType"], "application/vnd.oci.image.manifest.v1+json");
    for l in m["layers"].as_array().unwrap() {
        assert_eq!(
            l["mediaType"], "application/vnd.oci.image.layer.v1.tar+zstd",
            "{l}"
        );
        let a = &l["annotations"];
        let pos = seekable::zstd_chunked::parse_position(
            a[seekable::zstd_chunked::LEGACY_MANIFEST_POSITION_ANNOTATION]
                .as_str()
                .unwrap(),
        )
        .unwrap();
        let blob = std::fs::read(reg.blob_file(l["digest"].as_str().unwrap())).unwrap();
        let manifest = &blob[pos.offset as usize..(pos.offset + pos.compressed_len) as usize];
        let checksum = a[seekable::zstd_chunked::LEGACY_MANIFEST_CHECKSUM_ANNOTATION]
            .as_str()
            .unwrap();
        let toc = seekable::zstd_chunked::parse_toc(manifest, &pos, Some(checksum)).unwrap();
        assert!(!toc.chunks().is_empty());
    }
    let peers = tempfile::tempdir().unwrap();
    assert_skopeo_copies(&target, peers.path());
    assert_podman_runs(&target, peers.path(), "hello estargz\n");
    assert_strata_runs(&target, "hello estargz\n");
}

/// Removes whatever podman left mounted under its temp dir, even when the test fails.
struct UnmountGuard<'a>(&'a Path);

impl Drop for UnmountGuard<'_> {
    fn drop(&mut self) {
        strata_testkit::container::lazy_unmount_under(self.0);
    }
}

/// containers/storage's *partial* pull (overlay driver, `enable_partial_images`) reads the TOCs we
/// write: podman fetches our eStargz and zstd:chunked layers chunk by chunk through their TOCs
/// and the files it assembles are right.
#[test]
fn podman_partial_pull_reads_our_estargz_and_zstd_chunked_tocs() {
    let big = images::big_layer("etc/big", 9_000_000, 3);
    let big_sha = strata_testkit::fixtures::sha256(&tar_regular_files(&big.tar)["etc/big"]);
    let img = images::image(vec![
        images::busybox(),
        images::layer(&[("etc/greeting", b"hello partial\n")]),
        big,
    ]);
    let (reg, env, src) = pushed_and_pulled(&img);
    let dir = tempfile::tempdir().unwrap();
    let _guard = UnmountGuard(dir.path());
    let conf = dir.path().join("storage.conf");
    std::fs::write(
        &conf,
        format!(
            "[storage]\ndriver = \"overlay\"\nrunroot = \"{0}/prun\"\ngraphroot = \"{0}/proot\"\n\
             [storage.options]\npull_options = {{enable_partial_images = \"true\", \
             use_hard_links = \"false\", ostree_repos = \"\"}}\n",
            dir.path().display()
        ),
    )
    .unwrap();
    let podman = |args: &[&str]| {
        std::process::Command::new("timeout")
            .args(["-k", "5", "180", "podman", "--tmpdir"])
            .arg(dir.path().join("ptmp"))
            .args([
                "--events-backend",
                "none",
                "--cgroup-manager",
                "cgroupfs",
                "--runtime",
                "runc",
            ])
            .args(args)
            .env("CONTAINERS_STORAGE_CONF", &conf)
            .env("XDG_CONFIG_HOME", dir.path().join("pconfig"))
            .env("XDG_DATA_HOME", dir.path().join("pdata"))
            .output()
            .expect("podman is installed by scripts/setup")
    };
    for (repo, compression) in [("esgz", "estargz"), ("zc", "zstd:chunked")] {
        let target = format!("{}/{repo}:1", reg.addr());
        env.ok(&["tag", &src, &target]);
        env.ok(&["push", "--compression", compression, &target]);
        let o = podman(&["--log-level=debug", "pull", "--tls-verify=false", &target]);
        let log = String::from_utf8_lossy(&o.stderr);
        assert!(o.status.success(), "podman pull {compression}: {log}");
        let partial = log.matches("Retrieved partial blob").count();
        assert_eq!(
            partial, 3,
            "{compression}: every layer pulled through its TOC: {log}"
        );
        let o = podman(&run_args(
            &target,
            &["sh", "-c", "cat /etc/greeting; busybox sha256sum /etc/big"],
        ));
        assert!(o.status.success(), "podman run {compression}: {o:?}");
        assert_eq!(
            String::from_utf8_lossy(&o.stdout),
            format!(
                "hello partial\n{}  /etc/big\n",
                big_sha.trim_start_matches("sha256:")
            ),
            "{compression}"
        );
    }
}

/// `strata ARGS` under a 120 s watchdog (the recording run mounts the union filesystem).
fn strata_timed(env: &Env, args: &[&str]) -> std::process::Output {
    std::process::Command::new("timeout")
        .args(["-k", "5", "120", env!("CARGO_BIN_EXE_strata"), "--root"])
        .arg(env.root())
        .arg("--runroot")
        .arg(env.dir.path().join("run"))
        .args(args)
        .env("HOME", env.dir.path().join("home"))
        .output()
        .unwrap()
}

#[test]
fn convert_record_places_what_a_run_opens_first() {
    let env = Env::new();
    let _mounts = UnmountGuard(env.dir.path());
    let _containers = ContainersGuard(&env);
    let archive = env.dir.path().join("busybox.tar");
    strata_testkit::fixtures::busybox_archive(&archive, "busybox:latest").unwrap();
    env.ok(&["load", "-i", archive.to_str().unwrap()]);
    let o = strata_timed(
        &env,
        &[
            "image",
            "convert",
            "--estargz",
            "--record",
            "--record-timeout",
            "60",
            "busybox:latest",
            "bb-rec:1",
            "--",
            "cat",
            "/etc/motd",
        ],
    );
    assert!(o.status.success(), "convert --record: {o:?}");
    let store = env.store();
    let rec = store.resolve("bb-rec:1").unwrap();
    let layer = store.layer(&rec.chain_ids[0]).unwrap();
    let (toc, _) =
        estargz::inspect_file(&store.blob_path(layer.compressed_digest.as_ref().unwrap())).unwrap();
    let landmark = toc.prefetch_landmark().expect("prefetch landmark");
    let pos = |name: &str| toc.lookup(name).unwrap_or_else(|| panic!("{name} in TOC"));
    assert!(pos("bin/busybox") < landmark, "the run executed busybox");
    assert!(pos("etc/motd") < landmark, "the run read /etc/motd");
    assert!(pos("www/index.html") > landmark, "the run never opened it");

    // A recording run that cannot start is an error, and no image is made.
    let o = strata_timed(
        &env,
        &[
            "image",
            "convert",
            "--estargz",
            "--record",
            "busybox:latest",
            "bb-bad:1",
            "--",
            "/no/such/binary",
        ],
    );
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("Error: the recording run failed"),
        "{o:?}"
    );
    assert!(store.resolve("bb-bad:1").is_err());
}
