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
use strata_testkit::registry::images::{self, noise, Image, Layer};
use strata_testkit::registry::proxy::{Mode, Proxy};
use strata_testkit::registry::Registry;

/// A layer converted to eStargz, and its TOC digest annotation.
fn estargz_layer(tar: Vec<u8>, prioritized: &[&str]) -> (Layer, Vec<(String, String)>) {
    estargz_layer_chunked(tar, prioritized, 1 << 20)
}

/// [`estargz_layer`] with chunks of `chunk_size` bytes.
fn estargz_layer_chunked(
    tar: Vec<u8>,
    prioritized: &[&str],
    chunk_size: usize,
) -> (Layer, Vec<(String, String)>) {
    let mut blob = Vec::new();
    let opts = EstargzOptions {
        prioritized: prioritized.iter().map(|s| s.to_string()).collect(),
        chunk_size: chunk_size as u64,
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

const BIG: usize = 12 << 20;

/// busybox + a layer with a small file and a big one, both eStargz, with the TOC annotations in
/// the manifest.
fn lazy_image() -> Image {
    let (bb, bb_ann) = estargz_layer(images::busybox().tar, &["bin/busybox"]);
    let big = noise(BIG, 7);
    let data = images::layer(&[("data/small.txt", b"hello-lazy\n"), ("data/big.bin", &big)]);
    let (data, data_ann) = estargz_layer(data.tar, &["data/small.txt"]);
    let odd = estargz_layer(odd_tar(), &[]);
    annotated_image(vec![(bb, bb_ann), (data, data_ann), odd])
}

/// An image of eStargz layers with each one's TOC annotations in the manifest.
fn annotated_image(layers: Vec<(Layer, Vec<(String, String)>)>) -> Image {
    let (layers, anns): (Vec<Layer>, Vec<_>) = layers.into_iter().unzip();
    let mut img = images::image(layers);
    let mut m: serde_json::Value = serde_json::from_slice(&img.manifest).unwrap();
    for (i, ann) in anns.into_iter().enumerate() {
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

/// busybox + a layer with one file `path` of `size` noise bytes (`seed`) in chunks of
/// `chunk` bytes (eStargz, annotated).
fn one_file_image(path: &str, size: usize, seed: u64, chunk: usize) -> Image {
    let bb = estargz_layer(images::busybox().tar, &["bin/busybox"]);
    let data = images::layer(&[(path, &noise(size, seed))]);
    let data = estargz_layer_chunked(data.tar, &[], chunk);
    annotated_image(vec![bb, data])
}

/// The sha256 (hex, as `sha256sum` prints it) of `data`.
fn sha_hex(data: &[u8]) -> String {
    images::sha256(data)
        .trim_start_matches("sha256:")
        .to_string()
}

/// `out` of `sha256sum` is the digest of `data`.
#[track_caller]
fn assert_sum(out: &str, data: &[u8]) {
    assert_eq!(out.split_whitespace().next().unwrap(), sha_hex(data));
}

/// The sha256 (hex) of the 4 KiB block `block` of `size` noise bytes from `seed`.
fn noise_block_sum(size: usize, seed: u64, block: usize) -> String {
    sha_hex(&noise(size, seed)[block * 4096..(block + 1) * 4096])
}

/// The first words of `out`'s lines (the digests `sha256sum`s printed), sorted, are `want`'s.
#[track_caller]
fn assert_sums(out: &str, mut want: Vec<String>, err: &str) {
    let mut got: Vec<&str> = out
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    got.sort_unstable();
    want.sort_unstable();
    assert_eq!(got, want, "{err}");
}

#[track_caller]
fn assert_eio(err: &str) {
    assert!(
        err.contains("I/O error") || err.contains("Input/output error"),
        "{err}"
    );
}

/// A tar entry: path, type, mode, owner (uid = gid), data, link target.
type Entry = (
    &'static str,
    tar::EntryType,
    u32,
    u64,
    &'static [u8],
    Option<&'static str>,
);

/// A layer of everything but plain files: modes, owners, set-user-ID, a symlink, a hard link,
/// a fifo, an xattr, a whiteout and an opaque directory.
fn odd_tar() -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    use tar::EntryType as T;
    #[rustfmt::skip]
    let entries: [Entry; 10] = [
        ("etc/", T::Directory, 0o750, 1000, b"", None),
        ("etc/suid", T::Regular, 0o4755, 0, b"#!/bin/sh\necho suid\n", None),
        ("etc/hard", T::Link, 0o4755, 0, b"", Some("etc/suid")),
        ("etc/link", T::Symlink, 0o777, 1000, b"", Some("suid")),
        ("etc/fifo", T::Fifo, 0o600, 1000, b"", None),
        ("etc/opq/", T::Directory, 0o755, 0, b"", None),
        ("etc/opq/.wh..wh..opq", T::Regular, 0o644, 0, b"", None),
        ("etc/opq/x", T::Regular, 0o600, 1000, b"x", None),
        ("data/", T::Directory, 0o755, 0, b"", None),
        ("data/.wh.ghost", T::Regular, 0o644, 0, b"", None),
    ];
    for (path, kind, mode, uid, data, link) in entries {
        let mut hd = tar::Header::new_gnu();
        hd.set_entry_type(kind);
        hd.set_mode(mode);
        hd.set_uid(uid);
        hd.set_gid(uid);
        hd.set_mtime(1_600_000_000 + data.len() as u64);
        hd.set_size(data.len() as u64);
        if let Some(l) = link {
            hd.set_link_name(l).unwrap();
        }
        b.append_data(&mut hd, path, data).unwrap();
    }
    // An xattr, in a PAX header as Docker writes them.
    let rec = "SCHILY.xattr.user.lazy=yes\n";
    let mut len = rec.len() + 3;
    len += format!("{len} {rec}").len() - len;
    let pax = format!("{len} {rec}");
    let mut x = tar::Header::new_ustar();
    x.set_entry_type(tar::EntryType::XHeader);
    x.set_size(pax.len() as u64);
    x.set_mode(0o644);
    x.set_uid(0);
    x.set_gid(0);
    x.set_mtime(0);
    b.append_data(&mut x, "PaxHeaders/xattr", pax.as_bytes())
        .unwrap();
    let mut hd = tar::Header::new_ustar();
    hd.set_mode(0o640);
    hd.set_uid(0);
    hd.set_gid(0);
    hd.set_size(5);
    hd.set_mtime(1_600_000_000);
    b.append_data(&mut hd, "etc/xattr", &b"attr\n"[..]).unwrap();
    b.into_inner().unwrap()
}

/// Every entry below `dir`: path -> type, mode, owner, size (not of dirs), mtime, rdev, nlink,
/// content digest of regular files; then every xattr (`getfattr`).
fn tree(dir: &std::path::Path) -> (std::collections::BTreeMap<String, String>, String) {
    use std::os::unix::fs::MetadataExt;
    let mut out = std::collections::BTreeMap::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let m = std::fs::symlink_metadata(&p).unwrap();
            let rel = p.strip_prefix(dir).unwrap().display().to_string();
            let content = if m.is_file() {
                images::sha256(&std::fs::read(&p).unwrap())
            } else if m.is_symlink() {
                std::fs::read_link(&p).unwrap().display().to_string()
            } else {
                String::new()
            };
            let size = if m.is_dir() { 0 } else { m.size() };
            // A whiteout (char 0/0) carries the time it was made, by the extractor too.
            let whiteout = m.mode() & libc::S_IFMT == libc::S_IFCHR && m.rdev() == 0;
            let mtime = if whiteout { 0 } else { m.mtime() };
            out.insert(
                rel,
                format!(
                    "{:o} {}:{} {size} {} {} {} {content}",
                    m.mode(),
                    m.uid(),
                    m.gid(),
                    mtime,
                    m.rdev(),
                    m.nlink()
                ),
            );
            if m.is_dir() {
                todo.push(p);
            }
        }
    }
    let xattrs = std::process::Command::new("getfattr")
        .args(["-R", "-h", "-d", "-m", "-", "."])
        .current_dir(dir)
        .output()
        .unwrap();
    (out, String::from_utf8_lossy(&xattrs.stdout).into_owned())
}

fn image_bytes(img: &Image) -> u64 {
    img.layers.iter().map(|l| l.gz.len() as u64).sum()
}

/// Run strata with the background fetch held back (it waits for 10 minutes without demand
/// fetches), so what a run fetches is only what it reads.
fn quiet_run(env: &Env, args: &[&str]) -> (i32, String, String) {
    env.run_with(args, &[("STRATA_LAZY_QUIET_MS", "600000")])
}

/// `run --rm <name> sh -c <script>` (background fetch held back) succeeds and prints `want` as
/// its first word.
#[track_caller]
fn assert_quiet_sh_prints(env: &Env, name: &str, script: &str, want: &str) {
    let (code, out, err) = quiet_run(env, &["run", "--rm", name, "sh", "-c", script]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.split_whitespace().next(), Some(want), "{err}");
}

/// `run -d <name> sleep 120` with the background fetch starting after `quiet_ms` without
/// demand fetches; the container's ID.
fn detached(env: &Env, name: &str, quiet_ms: &str) -> String {
    let (code, out, err) = env.run_with(
        &["run", "-d", name, "sleep", "120"],
        &[("STRATA_LAZY_QUIET_MS", quiet_ms)],
    );
    assert_eq!(code, 0, "{err}");
    out.trim().to_string()
}

/// Run strata with Docker Hub out of reach (any attempt goes to a closed loopback proxy) and
/// the background fetch held back.
fn hub_closed_run(env: &Env, args: &[&str]) -> (i32, String, String) {
    let [a, b] = HUB_CLOSED;
    env.run_with(args, &[a, b, ("STRATA_LAZY_QUIET_MS", "600000")])
}

/// A registry holding `img` as `<repo>:latest`, a counting proxy in front of it, and a new env
/// that pulled `<proxy>/<repo>` lazily (and, with `warm`, ran a container once so that what
/// busybox needs is fetched).
fn proxied_lazy_pull(img: &Image, repo: &str, warm: bool) -> (Registry, Proxy, Env, String) {
    let reg = Registry::start();
    push_image(&reg, &format!("{repo}:latest"), img);
    let proxy = Proxy::start(&reg.addr(), Mode::Pass);
    let env = Env::new();
    let name = format!("{}/{repo}", proxy.addr());
    env.ok(&["pull", "--lazy", &name]);
    if warm {
        let (code, _, err) = quiet_run(&env, &["run", "--rm", &name, "true"]);
        assert_eq!(code, 0, "{err}");
    }
    (reg, proxy, env, name)
}

/// A registry holding `img` as `<repo>:latest` and a new env that pulled it lazily.
fn lazy_pull(img: &Image, repo: &str) -> (Registry, Env, String) {
    let reg = Registry::start();
    push_image(&reg, &format!("{repo}:latest"), img);
    let env = Env::new();
    let name = format!("{}/{repo}", reg.addr());
    env.ok(&["pull", "--lazy", &name]);
    (reg, env, name)
}

/// Flip the byte at `at` of blob `digest` in the registry's storage.
fn flip_blob_byte(reg: &Registry, digest: &str, at: usize) {
    let blob = reg.blob_file(digest);
    let mut bytes = std::fs::read(&blob).unwrap();
    bytes[at] ^= 0x55;
    std::fs::write(&blob, &bytes).unwrap();
}

/// Make a lazy layer's local blob all zeros (its size kept).
fn zero_local_blob(env: &Env, img: &Image, i: usize) {
    let blob = layer_dir(env, img, i).join("lazy/blob");
    let len = std::fs::metadata(&blob).unwrap().len();
    let f = std::fs::OpenOptions::new().write(true).open(&blob).unwrap();
    f.set_len(0).unwrap();
    f.set_len(len).unwrap();
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

/// Wait (90 s at most) until the first `n` layers of `img` are no longer lazy.
fn wait_completed(env: &Env, img: &Image, n: usize) {
    for i in 0..n {
        let d = layer_dir(env, img, i);
        wait_for("the layer to complete", Duration::from_secs(90), || {
            !d.join("lazy").exists()
        });
    }
}

/// The first `n` layers of `img` are ordinary ones (not lazy, with their tar-split).
#[track_caller]
fn assert_completed(env: &Env, img: &Image, n: usize) {
    for i in 0..n {
        let d = layer_dir(env, img, i);
        assert!(!d.join("lazy").exists() && d.join("tar-split.gz").is_file());
    }
}

/// Each layer of the image `name` rebuilds from the store to a tar (returns their diffIDs).
fn rebuilt_diff_ids(env: &Env, name: &str) -> Vec<String> {
    let store = env.store();
    let rec = store.resolve(name).unwrap();
    rec.chain_ids
        .iter()
        .map(|c| {
            let info = store.layer_tar(c, &mut std::io::sink()).unwrap();
            info.diff_id.to_string()
        })
        .collect()
}

#[test]
fn lazy_run_reads_on_demand_then_completes_into_an_ordinary_layer() {
    let reg = Registry::start();
    let img = lazy_image();
    push_image(&reg, "lazy:latest", &img);
    let proxy = Proxy::start(&reg.addr(), Mode::Pass);
    let env = Env::new();
    let _c = ContainersGuard(&env);
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
    let (code, out, err) = quiet_run(&env, &["run", "--rm", &name, "cat", "/data/small.txt"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "hello-lazy\n");
    let served = proxy.blob_bytes_served();
    assert!(
        served < total / 2 && served < (BIG as u64) / 2,
        "served {served} of {total} bytes"
    );
    assert!(layer_dir(&env, &img, 1).join("lazy").is_dir());
    // The big file on demand: several range requests in flight, every chunk verified.
    let (code, out, err) = quiet_run(&env, &["run", "--rm", &name, "sha256sum", "/data/big.bin"]);
    assert_eq!(code, 0, "{err}");
    assert_sum(&out, &noise(BIG, 7));
    assert!(layer_dir(&env, &img, 1).join("lazy").is_dir());

    // A detached run lets the background complete the layers into ordinary ones.
    let id = env.ok(&["run", "-d", &name, "sleep", "120"]);
    let id = id.trim();
    wait_completed(&env, &img, 3);
    assert_completed(&env, &img, 3);
    // The big file, read through the still-running container's (now complete) skeleton.
    let out = env.ok(&["exec", id, "sha256sum", "/data/big.bin"]);
    assert_sum(&out, &noise(BIG, 7));
    env.ok(&["rm", "-f", id]);
    // Exactly what a normal pull makes: each layer's tar rebuilds to its diffID, and the
    // compressed blobs are in the store.
    let diff_ids: Vec<&str> = img.layers.iter().map(|l| l.diff_id.as_str()).collect();
    assert_eq!(rebuilt_diff_ids(&env, &name), diff_ids);
    for l in &img.layers {
        let d = strata_runtime::digest::Digest::parse(&l.digest).unwrap();
        assert!(env.store().has_blob(&d));
    }
    let out = env.ok(&["run", "--rm", &name, "cat", "/data/small.txt"]);
    assert_eq!(out, "hello-lazy\n");
    // Each retired skeleton (served until the container went) has the very tree of the
    // ordinary layer that replaced it: data, modes, owners, times, links, xattrs, whiteouts.
    let retired = env.root().join("lazy-retired");
    let mut compared = 0;
    for e in std::fs::read_dir(&retired).unwrap() {
        let old = e.unwrap().path();
        let hex = old.file_name().unwrap().to_string_lossy()[..64].to_string();
        let new = env.root().join("layers").join(hex).join("diff");
        assert_eq!(tree(&old.join("diff")), tree(&new), "{}", old.display());
        compared += 1;
    }
    assert_eq!(compared, 3);
    // The retired skeletons go with the next GC, now that nothing serves them.
    env.ok(&["image", "prune", "-f"]);
    assert_eq!(std::fs::read_dir(&retired).unwrap().count(), 0);
}

#[test]
fn lazy_tampered_chunk_is_eio_and_never_stored() {
    let img = lazy_image();
    let (reg, env, name) = lazy_pull(&img, "lazy");
    let _c = ContainersGuard(&env);
    // Flip a byte inside big.bin's compressed data in the registry's storage.
    flip_blob_byte(&reg, &img.layers[1].digest, img.layers[1].gz.len() / 2);

    let (code, out, err) = env.run(&[
        "run",
        "--name",
        "tampered",
        &name,
        "sha256sum",
        "/data/big.bin",
    ]);
    assert_ne!(code, 0, "{out}");
    assert!(out.is_empty(), "tampered bytes reached the container");
    assert_eio(&err);
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
    // `save` completes a lazy image first; a tampered layer cannot be completed, so nothing
    // is written and the layer stays lazy.
    let tar = env.dir.path().join("img.tar");
    let (code, _, err) = env.run(&["save", "-o", tar.to_str().unwrap(), &name]);
    assert_ne!(code, 0);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        !tar.exists(),
        "a partial archive was left at {}",
        tar.display()
    );
    assert!(layer_dir(&env, &img, 1).join("lazy").is_dir());
}

#[test]
fn lazy_save_and_push_complete_the_image_first() {
    let img = lazy_image();
    let (reg, env, name) = lazy_pull(&img, "lazy");
    let _c = ContainersGuard(&env);
    assert!(layer_dir(&env, &img, 1).join("lazy").is_dir());
    let tar = env.dir.path().join("img.tar");
    env.ok(&["save", "-o", tar.to_str().unwrap(), &name]);
    // The layers are whole now (as after a plain pull), and the archive loads and runs.
    assert!(!layer_dir(&env, &img, 1).join("lazy").exists());
    assert!(layer_dir(&env, &img, 1).join("tar-split.gz").exists());
    let other = Env::new();
    let _c2 = ContainersGuard(&other);
    other.ok(&["load", "-i", tar.to_str().unwrap()]);
    let out = other.ok(&["run", "--rm", &name, "cat", "/data/small.txt"]);
    assert_eq!(out, "hello-lazy\n");
    // push of a lazily pulled image completes it too, then sends whole layers.
    let third = Env::new();
    let _c3 = ContainersGuard(&third);
    third.ok(&["pull", "--lazy", &name]);
    let copy = format!("{}/lazy-copy:v1", reg.addr());
    third.ok(&["tag", &name, &copy]);
    third.ok(&["push", &copy]);
    assert!(!layer_dir(&third, &img, 1).join("lazy").exists());
    let fourth = Env::new();
    let _c4 = ContainersGuard(&fourth);
    let out = fourth.ok(&["run", "--rm", &copy, "cat", "/data/small.txt"]);
    assert_eq!(out, "hello-lazy\n");
}

#[test]
fn lazy_registry_gone_fails_reads_with_eio_not_a_hang() {
    let img = lazy_image();
    let (mut reg, env, name) = lazy_pull(&img, "lazy");
    let _c = ContainersGuard(&env);
    // busybox fetched while the registry is up.
    let run = |args: &[&str]| quiet_run(&env, args);
    let (code, _, err) = run(&["run", "--rm", &name, "true"]);
    assert_eq!(code, 0, "{err}");
    reg.kill();
    let t = Instant::now();
    let (code, out, err) = run(&["run", "--rm", &name, "cat", "/data/small.txt"]);
    assert_ne!(code, 0, "{out}");
    assert_eio(&err);
    assert!(t.elapsed() < Duration::from_secs(60), "{:?}", t.elapsed());
    // The registry back: a plain pull completes the lazy layers where they were.
    reg.restart();
    env.ok(&["pull", &name]);
    assert_completed(&env, &img, 3);
    let (code, out, err) = run(&["run", "--rm", &name, "cat", "/data/small.txt"]);
    assert_eq!((code, out.as_str()), (0, "hello-lazy\n"), "{err}");
}

/// Bytes of the blob a lazy layer's `have` log says it holds.
fn have_bytes(dir: &std::path::Path) -> u64 {
    let Ok(log) = std::fs::read_to_string(dir.join("lazy/have")) else {
        return 0;
    };
    let mut ranges: Vec<(u64, u64)> = log
        .lines()
        .filter_map(|l| {
            let mut it = l.split_whitespace().map(|n| n.parse::<u64>().unwrap());
            Some((it.next()?, it.next()?))
        })
        .collect();
    ranges.sort_unstable();
    let (mut total, mut end) = (0, 0);
    for (s, e) in ranges {
        let s = s.max(end);
        if e > s {
            total += e - s;
            end = e;
        }
    }
    total
}

#[test]
fn lazy_kill_9_mid_fetch_resumes_and_leaves_nothing_gc_cannot_remove() {
    let img = lazy_image();
    let (_reg, proxy, env, name) = proxied_lazy_pull(&img, "lazy", false);
    let _c = ContainersGuard(&env);
    let total = image_bytes(&img);
    // The background gets some of the big file, then the registry stalls mid-response.
    let id = detached(&env, &name, "1000");
    proxy.set_mode(Mode::Hold(300_000));
    assert!(proxy.wait_held(Duration::from_secs(60)), "no held fetch");
    let state: serde_json::Value = serde_json::from_slice(
        &std::fs::read(env.root().join("containers").join(&id).join("state.json")).unwrap(),
    )
    .unwrap();
    let sup = state["supervisor_pid"].as_i64().unwrap();
    assert!(sup > 0, "{state}");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(sup as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    proxy.set_mode(Mode::Pass);
    proxy.release();
    env.ok(&["rm", "-f", &id]);
    let dirs: Vec<PathBuf> = (0..3).map(|i| layer_dir(&env, &img, i)).collect();
    // What the next run still needs: each lazy layer's blob minus what its log says it holds
    // (the held response's first bytes included: ranges are logged as they arrive).
    let need: u64 = dirs
        .iter()
        .zip(&img.layers)
        .filter(|(d, _)| d.join("lazy").is_dir())
        .map(|(d, l)| l.gz.len() as u64 - have_bytes(d))
        .sum();
    // The held response's first bytes were kept (whichever layer it was fetching).
    assert!(need + (256 << 10) <= total, "needs {need} of {total}");

    // The next run resumes: what arrived before the kill is not fetched again.
    proxy.reset_counters();
    let id = detached(&env, &name, "1000");
    wait_completed(&env, &img, 3);
    // Only that is fetched (plus HTTP response headers).
    let served = proxy.blob_bytes_served();
    assert!(
        served <= need + (64 << 10) && need < total,
        "served {served}, needed {need} of {total}"
    );
    env.ok(&["rm", "-f", &id]);
    rebuilt_diff_ids(&env, &name);
    // Nothing is left that GC cannot remove.
    env.ok(&["rmi", &name]);
    env.ok(&["image", "prune", "-f"]);
    for d in ["layers", "lazy-retired", "tmp"] {
        let left: Vec<_> = std::fs::read_dir(env.root().join(d))
            .map(|rd| rd.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        assert!(left.is_empty(), "{d}: {left:?}");
    }
}

#[test]
fn lazy_image_on_a_driver_that_reads_layer_dirs_is_completed_first() {
    let img = lazy_image();
    let (_reg, env, name) = lazy_pull(&img, "lazy");
    let _c = ContainersGuard(&env);
    // vfs copies the layer dirs: it must never see a skeleton's unfetched (zero) files.
    let out = env.ok(&[
        "--storage-driver",
        "vfs",
        "run",
        "--rm",
        &name,
        "sha256sum",
        "/data/big.bin",
    ]);
    assert_sum(&out, &noise(BIG, 7));
    assert_completed(&env, &img, 3);
}

#[test]
fn lazy_reads_use_the_stored_registry_credentials() {
    // Bearer tokens, no anonymous access: the supervisor's range reads authenticate as the
    // pull did, with the credentials `login` stored.
    let reg = Registry::start_token(&[("bob", "hunter2")], false);
    let img = lazy_image();
    push_image(&reg, "secret/lazy:v1", &img);
    let env = Env::new();
    let _c = ContainersGuard(&env);
    let name = format!("{}/secret/lazy:v1", reg.addr());
    env.ok(&["login", "-u", "bob", "-p", "hunter2", &reg.addr()]);
    let (code, out, err) = quiet_run(
        &env,
        &["run", "--rm", "--lazy", &name, "cat", "/data/small.txt"],
    );
    assert_eq!((code, out.as_str()), (0, "hello-lazy\n"), "{err}");
    assert!(layer_dir(&env, &img, 1).join("lazy").is_dir());
    // Logged out, a file not yet fetched cannot be read.
    env.ok(&["logout", &reg.addr()]);
    let (code, _, err) = quiet_run(&env, &["run", "--rm", &name, "wc", "-c", "/data/big.bin"]);
    assert_ne!(code, 0);
    assert_eio(&err);
}

#[test]
fn lazy_zstd_chunked_image_made_by_skopeo() {
    let reg = Registry::start();
    let big = noise(BIG, 7);
    let img = images::image(vec![
        images::busybox(),
        images::layer(&[("data/small.txt", b"hello-lazy\n"), ("data/big.bin", &big)]),
    ]);
    let dir = tempfile::tempdir().unwrap();
    let (src, dst) = (dir.path().join("src"), dir.path().join("dst"));
    images::write_oci_layout(&src, "t", &img);
    strata_testkit::registry::skopeo_copy(
        &format!("oci:{}:t", src.display()),
        &format!("oci:{}:t", dst.display()),
        &["--dest-compress-format", "zstd:chunked"],
    );
    push_layout(&reg, &dst, "t", "lazyz:latest", &[]);
    let proxy = Proxy::start(&reg.addr(), Mode::Pass);
    let env = Env::new();
    let _c = ContainersGuard(&env);
    let name = format!("{}/lazyz", proxy.addr());
    env.ok(&["pull", "--lazy", &name]);
    assert!(layer_dir(&env, &img, 1).join("lazy/source.json").is_file());
    let (code, out, err) = quiet_run(&env, &["run", "--rm", &name, "cat", "/data/small.txt"]);
    assert_eq!((code, out.as_str()), (0, "hello-lazy\n"), "{err}");
    let served = proxy.blob_bytes_served();
    assert!(served < (BIG as u64) / 2, "served {served}");
    // Completed by a plain pull: each layer rebuilds to its diffID.
    env.ok(&["pull", &name]);
    let diff_ids: Vec<&str> = img.layers.iter().map(|l| l.diff_id.as_str()).collect();
    assert_eq!(rebuilt_diff_ids(&env, &name), diff_ids);
    for i in 0..img.layers.len() {
        assert!(!layer_dir(&env, &img, i).join("lazy").exists());
    }
    let out = env.ok(&["run", "--rm", &name, "sha256sum", "/data/big.bin"]);
    assert_sum(&out, &big);
}

#[test]
fn two_containers_on_one_lazy_image_complete_it_once() {
    let img = lazy_image();
    let (_reg, env, name) = lazy_pull(&img, "lazy");
    let _c = ContainersGuard(&env);
    let (a, b) = (detached(&env, &name, "100"), detached(&env, &name, "100"));
    wait_completed(&env, &img, 3);
    // Both still read every file right, each through the skeleton it mounted.
    let big = noise(BIG, 7);
    for id in [&a, &b] {
        let out = env.ok(&["exec", id, "sha256sum", "/data/big.bin"]);
        assert_sum(&out, &big);
    }
    env.ok(&["rm", "-f", &a, &b]);
    rebuilt_diff_ids(&env, &name);
    env.ok(&["image", "prune", "-f"]);
    assert_eq!(
        std::fs::read_dir(env.root().join("lazy-retired"))
            .unwrap()
            .count(),
        0
    );
}

#[test]
fn lazy_pull_of_an_image_that_is_not_seekable_is_a_normal_pull() {
    let reg = Registry::start();
    let img = images::image(vec![
        images::busybox(),
        images::layer(&[("data/small.txt", b"hello-plain\n")]),
    ]);
    push_image(&reg, "plain:latest", &img);
    let env = Env::new();
    let _c = ContainersGuard(&env);
    let name = format!("{}/plain", reg.addr());
    let out = env.ok(&["pull", "--lazy", &name]);
    assert!(out.contains("Download complete"), "{out}");
    assert_completed(&env, &img, 2);
    let out = env.ok(&["run", "--rm", &name, "cat", "/data/small.txt"]);
    assert_eq!(out, "hello-plain\n");
}

#[test]
fn lazy_pull_setting_makes_plain_run_and_pull_lazy() {
    let reg = Registry::start();
    let img = lazy_image();
    push_image(&reg, "lazy:latest", &img);
    let plain = images::image(vec![
        images::busybox(),
        images::layer(&[("data/small.txt", b"hello-plain\n")]),
    ]);
    push_image(&reg, "plain:latest", &plain);
    let proxy = Proxy::start(&reg.addr(), Mode::Pass);
    let total = image_bytes(&img);
    let name = format!("{}/lazy", proxy.addr());

    // `"lazy-pull": true` in strata.json: a plain `run` of a missing eStargz image goes lazy.
    let env = Env::new();
    let _c = ContainersGuard(&env);
    std::fs::create_dir_all(env.root()).unwrap();
    std::fs::write(env.root().join("strata.json"), r#"{"lazy-pull": true}"#).unwrap();
    let (code, out, err) = quiet_run(&env, &["run", "--rm", &name, "cat", "/data/small.txt"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "hello-lazy\n");
    let served = proxy.blob_bytes_served();
    assert!(served < total / 2, "served {served} of {total} bytes");
    assert!(layer_dir(&env, &img, 1).join("lazy/source.json").is_file());
    // A non-seekable image under the same setting is an ordinary pull.
    let plain_name = format!("{}/plain", reg.addr());
    let (code, out, err) = quiet_run(
        &env,
        &["run", "--rm", &plain_name, "cat", "/data/small.txt"],
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "hello-plain\n");
    assert_completed(&env, &plain, 2);

    // STRATA_LAZY_PULL=1 does the same for a plain `pull`, and =0 overrides the file.
    let env2 = Env::new();
    let _c2 = ContainersGuard(&env2);
    let before = proxy.blob_bytes_served();
    let out = String::from_utf8(
        env2.command(&["pull", &name])
            .env("STRATA_LAZY_PULL", "1")
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    assert!(out.contains("Pull complete"), "{out}");
    let pulled = proxy.blob_bytes_served() - before;
    assert!(pulled < total / 10, "{pulled} of {total}");
    assert!(layer_dir(&env2, &img, 1).join("lazy/source.json").is_file());

    let env3 = Env::new();
    std::fs::create_dir_all(env3.root()).unwrap();
    std::fs::write(env3.root().join("strata.json"), r#"{"lazy-pull": true}"#).unwrap();
    let st = env3
        .command(&["pull", "-q", &name])
        .env("STRATA_LAZY_PULL", "0")
        .output()
        .unwrap();
    assert!(
        st.status.success(),
        "{}",
        String::from_utf8_lossy(&st.stderr)
    );
    assert_completed(&env3, &img, 3);
}

#[test]
fn images_ps_and_inspect_show_an_image_still_fetching() {
    let img = lazy_image();
    let (_reg, env, name) = lazy_pull(&img, "lazy");
    let _c = ContainersGuard(&env);
    let total = image_bytes(&img);

    // inspect: strata's `Lazy` field, per lazy layer the blob bytes held and its size.
    let inspect = |env: &Env| -> serde_json::Value {
        let out = env.ok(&["image", "inspect", &name]);
        serde_json::from_str::<serde_json::Value>(&out).unwrap()[0].clone()
    };
    let v = inspect(&env);
    let lazy = &v["Lazy"];
    let layers = lazy["Layers"].as_array().unwrap();
    assert_eq!(layers.len(), 3, "{lazy}");
    for (l, want) in layers.iter().zip(&img.layers) {
        assert_eq!(l["DiffID"], want.diff_id.as_str());
        assert_eq!(l["Digest"], want.digest.as_str());
        assert_eq!(l["Size"], want.gz.len() as u64);
        let fetched = l["Fetched"].as_u64().unwrap();
        assert!(fetched > 0 && fetched < want.gz.len() as u64, "{l}");
    }
    assert_eq!(lazy["Size"], total);
    let fetched = lazy["Fetched"].as_u64().unwrap();
    assert!(fetched < total / 10, "{fetched} of {total}");
    assert_eq!(v["RootFS"]["Layers"].as_array().unwrap().len(), 3);

    // images: the default table says so in SIZE; a --format gets Docker's plain size.
    let pct = fetched * 100 / total;
    let out = env.ok(&["images"]);
    let row = out.lines().find(|l| l.contains("/lazy")).unwrap();
    assert!(row.ends_with(&format!(" (lazy {pct}%)")), "{out}");
    let plain = env.ok(&["images", "--format", "{{.Size}}"]);
    assert!(
        !plain.contains("(lazy") && !plain.trim().is_empty(),
        "{plain}"
    );
    assert!(!env.ok(&["images", "--format", "json"]).contains("(lazy"));

    // ps: a running container of it says so after its status, in the default table only.
    let (code, id, err) = quiet_run(&env, &["run", "-d", &name, "sleep", "120"]);
    assert_eq!(code, 0, "{err}");
    let out = env.ok(&["ps"]);
    let row = out.lines().find(|l| l.contains("sleep")).unwrap();
    assert!(row.contains(" (lazy ") && row.contains("Up "), "{out}");
    let status = env.ok(&["ps", "--format", "{{.Status}}"]);
    assert!(
        status.starts_with("Up ") && !status.contains("(lazy"),
        "{status}"
    );
    env.ok(&["rm", "-f", id.trim()]);

    // Once a plain pull completes it: Docker's output again.
    env.ok(&["pull", &name]);
    assert!(inspect(&env).get("Lazy").is_none());
    assert!(!env.ok(&["images"]).contains("(lazy"));
}

#[test]
fn lazy_pull_of_a_docker_hub_name_goes_through_the_registry_mirrors() {
    let reg = Registry::start();
    let img = lazy_image();
    push_image(&reg, "library/lazyhub:latest", &img);
    let proxy = Proxy::start(&reg.addr(), Mode::Pass);
    let total = image_bytes(&img);
    let env = Env::new();
    let _c = ContainersGuard(&env);
    // A mirror that is down first (skipped), then the loopback registry (behind the counting
    // proxy) as the mirror.
    let dead = strata_testkit::registry::free_port();
    env.set_mirrors(&[&format!("127.0.0.1:{dead}"), &proxy.addr()]);
    // Docker Hub itself must never be asked.
    let (code, out, err) = hub_closed_run(&env, &["pull", "--lazy", "lazyhub"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("Pull complete"), "{out}");
    let after_pull = proxy.blob_bytes_served();
    assert!(
        after_pull > 0 && after_pull < total / 10,
        "{after_pull} of {total}"
    );
    let source = layer_dir(&env, &img, 1).join("lazy/source.json");
    let source: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&source).unwrap()).unwrap();
    assert_eq!(source["registry"], proxy.addr().as_str(), "{source}");

    // The container's on-demand reads go to the mirror too.
    let (code, out, err) =
        hub_closed_run(&env, &["run", "--rm", "lazyhub", "cat", "/data/small.txt"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "hello-lazy\n");
    let served = proxy.blob_bytes_served();
    assert!(
        served > after_pull && served < total / 2,
        "{after_pull} then {served} of {total}"
    );
    assert!(layer_dir(&env, &img, 1).join("lazy").is_dir());
}

const HUGE: usize = 24 << 20;
const CHUNK: usize = 4 << 20;

/// busybox + a layer with one 24 MiB file in six 4 MiB chunks (eStargz, annotated).
fn huge_file_image() -> Image {
    one_file_image("data/huge.bin", HUGE, 11, CHUNK)
}

/// `sh -c` that prints the sha256 of 4 KiB block `block` of /data/huge.bin (dd's errors on
/// stderr).
fn block_sum_cmd(block: usize) -> String {
    format!("dd if=/data/huge.bin bs=4k count=1 skip={block} | sha256sum")
}

/// The sha256 (hex) of 4 KiB block `block` of the huge file.
fn block_sum(block: usize) -> String {
    noise_block_sum(HUGE, 11, block)
}

#[test]
fn lazy_read_of_one_block_fetches_only_its_chunks() {
    let img = huge_file_image();
    // A first run fetches what busybox needs; then only the block's read is counted.
    let (_reg, proxy, env, name) = proxied_lazy_pull(&img, "huge", true);
    let _c = ContainersGuard(&env);
    let before = proxy.blob_bytes_served();
    // A block in the middle of the third chunk.
    let block = (2 * CHUNK + CHUNK / 2) / 4096;
    assert_quiet_sh_prints(&env, &name, &block_sum_cmd(block), &block_sum(block));
    let fetched = proxy.blob_bytes_served() - before;
    eprintln!("one 4 KiB block of a {HUGE}-byte lazy file fetched {fetched} bytes");
    assert!(fetched > 0, "nothing fetched for the block");
    assert!(
        fetched < 2 * CHUNK as u64,
        "a 4 KiB read fetched {fetched} bytes (chunks of {CHUNK})"
    );
    assert!(layer_dir(&env, &img, 1).join("lazy").is_dir());
    // A later full read gets every byte right (the block's chunk is not fetched again).
    let (code, out, err) = quiet_run(&env, &["run", "--rm", &name, "sha256sum", "/data/huge.bin"]);
    assert_eq!(code, 0, "{err}");
    assert_sum(&out, &noise(HUGE, 11));
    let total = proxy.blob_bytes_served() - before;
    assert!(
        total < (HUGE + CHUNK) as u64,
        "the whole file after one block fetched {total} bytes"
    );
}

#[test]
fn lazy_tampered_chunk_fails_only_its_own_reads() {
    let img = huge_file_image();
    let (reg, env, name) = lazy_pull(&img, "huge");
    let _c = ContainersGuard(&env);
    // Flip a byte in the middle of the fourth chunk's compressed data (the data is
    // incompressible: chunk k is near blob offset k * CHUNK).
    flip_blob_byte(&reg, &img.layers[1].digest, 3 * CHUNK + CHUNK / 2);
    // Blocks in the second and the sixth chunk read right.
    for block in [(CHUNK + CHUNK / 2) / 4096, (5 * CHUNK + CHUNK / 2) / 4096] {
        assert_quiet_sh_prints(&env, &name, &block_sum_cmd(block), &block_sum(block));
    }
    // A block of the tampered chunk: EIO, and a line in the container's log.
    let block = (3 * CHUNK + CHUNK / 2) / 4096;
    let cmd = format!("dd if=/data/huge.bin of=/dev/null bs=4k count=1 skip={block}");
    let (code, out, err) = quiet_run(&env, &["run", "--name", "bad", &name, "sh", "-c", &cmd]);
    assert_ne!(code, 0, "{out}");
    assert_eio(&err);
    let (_, _, logs) = env.run(&["logs", "bad"]);
    assert!(
        logs.contains("lazy layer") && logs.contains("data/huge.bin"),
        "{logs}"
    );
    assert!(!layer_dir(&env, &img, 1).join("tar-split.gz").exists());
}

#[test]
fn lazy_sequential_read_fetches_the_next_chunks_ahead() {
    let img = huge_file_image();
    let (_reg, proxy, env, name) = proxied_lazy_pull(&img, "huge", true);
    let _c = ContainersGuard(&env);
    let before = proxy.blob_bytes_served();
    // A read at the file's start looks sequential: the next two chunks follow on their own
    // while the container lives, and no more.
    let (code, id, err) = quiet_run(
        &env,
        &[
            "run",
            "-d",
            &name,
            "sh",
            "-c",
            "dd if=/data/huge.bin of=/dev/null bs=4k count=1; sleep 120",
        ],
    );
    assert_eq!(code, 0, "{err}");
    wait_for("the read-ahead", Duration::from_secs(60), || {
        proxy.blob_bytes_served() - before >= 3 * CHUNK as u64
    });
    std::thread::sleep(Duration::from_millis(500));
    let fetched = proxy.blob_bytes_served() - before;
    assert!(fetched < 4 * CHUNK as u64, "fetched {fetched}");
    env.ok(&["rm", "-f", id.trim()]);
}

const MIB: usize = 1 << 20;
const CHUNKY: usize = 8 << 20;

/// busybox + a layer with one 8 MiB file in eight 1 MiB chunks (eStargz, annotated): each
/// chunk is one range request.
fn chunky_image() -> Image {
    one_file_image("data/chunky.bin", CHUNKY, 13, MIB)
}

/// A subshell printing the sha256 of the 4 KiB block at byte `at` of /data/chunky.bin.
fn chunky_sum_cmd(at: usize) -> String {
    format!(
        "(dd if=/data/chunky.bin bs=4k count=1 skip={} 2>/dev/null | sha256sum)",
        at / 4096
    )
}

/// A script printing the sha256 of the 4 KiB blocks at bytes `a` and `b` of /data/chunky.bin,
/// read at once through two fds opened first (so both reads are surely in flight together).
fn concurrent_sums(a: usize, b: usize) -> String {
    let sum = |at: usize, fd: u32| {
        format!(
            "(dd bs=4k count=1 skip={} <&{fd} 2>/dev/null | sha256sum)",
            at / 4096
        )
    };
    format!(
        "exec 3</data/chunky.bin 4</data/chunky.bin; {} & {} & wait",
        sum(a, 3),
        sum(b, 4)
    )
}

/// The sha256 (hex) of the 4 KiB block at byte `at` of the chunky file.
fn chunky_sum(at: usize) -> String {
    noise_block_sum(CHUNKY, 13, at / 4096)
}

/// The blob GETs among the proxy's request heads from `from` on.
fn blob_gets(proxy: &Proxy, from: usize) -> usize {
    proxy.heads()[from..]
        .iter()
        .filter(|h| h.starts_with("GET ") && h.lines().next().unwrap().contains("/blobs/sha256:"))
        .count()
}

/// A lazily pulled chunky image whose busybox is already fetched, behind a counting proxy.
fn chunky_setup() -> (Registry, Image, Proxy, Env, String) {
    let img = chunky_image();
    let (reg, proxy, env, name) = proxied_lazy_pull(&img, "chunky", true);
    (reg, img, proxy, env, name)
}

#[test]
fn lazy_reads_of_different_chunks_of_one_file_fetch_at_once() {
    let (_reg, _img, proxy, env, name) = chunky_setup();
    let _c = ContainersGuard(&env);
    // Each blob response held back a while: two fetches that do not wait for each other
    // overlap in the proxy.
    proxy.set_delay(Duration::from_millis(1500));
    proxy.reset_max_in_flight();
    let from = proxy.heads().len();
    let (a, b) = (2 * MIB + MIB / 2, 5 * MIB + MIB / 2);
    // Two processes, each opening the file: one's open does not wait for the other's read.
    let cmd = format!("{} & {} & wait", chunky_sum_cmd(a), chunky_sum_cmd(b));
    let t = Instant::now();
    let (code, out, err) = quiet_run(&env, &["run", "--rm", &name, "sh", "-c", &cmd]);
    eprintln!(
        "two reads of different chunks, each response held 1.5 s: the run took {:?}",
        t.elapsed()
    );
    assert_eq!(code, 0, "{err}");
    assert_sums(&out, vec![chunky_sum(a), chunky_sum(b)], &err);
    // One request per chunk, both in flight at once.
    assert_eq!(blob_gets(&proxy, from), 2, "{:#?}", &proxy.heads()[from..]);
    assert_eq!(proxy.max_in_flight(), 2);
}

#[test]
fn lazy_reads_of_one_chunk_fetch_it_once_and_share_its_failure() {
    let (reg, img, proxy, env, name) = chunky_setup();
    let _c = ContainersGuard(&env);
    proxy.set_delay(Duration::from_millis(1500));
    proxy.reset_max_in_flight();
    let from = proxy.heads().len();
    // Two pages of the third chunk (different pages: the kernel does not merge the reads).
    let (a, b) = (2 * MIB + (64 << 10), 2 * MIB + (768 << 10));
    let cmd = concurrent_sums(a, b);
    let (code, out, err) = quiet_run(&env, &["run", "--rm", &name, "sh", "-c", &cmd]);
    assert_eq!(code, 0, "{err}");
    assert_sums(&out, vec![chunky_sum(a), chunky_sum(b)], &err);
    assert_eq!(blob_gets(&proxy, from), 1, "{:#?}", &proxy.heads()[from..]);
    assert_eq!(proxy.max_in_flight(), 1);

    // A chunk that does not verify: both reads of it fail, after one request.
    flip_blob_byte(&reg, &img.layers[1].digest, 4 * MIB + MIB / 2);
    let from = proxy.heads().len();
    let read = |at: usize, fd: u32| {
        format!(
            "(dd of=/dev/null bs=4k count=1 skip={} <&{fd} 2>/dev/null && echo ok-{fd} || echo eio-{fd})",
            at / 4096
        )
    };
    let cmd = format!(
        "exec 3</data/chunky.bin 4</data/chunky.bin; {} & {} & wait",
        read(4 * MIB + (64 << 10), 3),
        read(4 * MIB + (768 << 10), 4)
    );
    let (code, out, err) = quiet_run(&env, &["run", "--rm", &name, "sh", "-c", &cmd]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("eio-3") && out.contains("eio-4"), "{out}");
    assert_eq!(blob_gets(&proxy, from), 1, "{:#?}", &proxy.heads()[from..]);
}

#[test]
fn lazy_restart_keeps_the_chunks_already_written() {
    let (_reg, img, proxy, env, name) = chunky_setup();
    let _c = ContainersGuard(&env);
    let at = 2 * MIB + MIB / 2;
    assert_quiet_sh_prints(&env, &name, &chunky_sum_cmd(at), &chunky_sum(at));
    // The next supervisor (a new run) starts from what the first one recorded: the chunk it
    // verified and wrote is neither fetched nor decoded from the local blob again — the local
    // blob could be zeros now and the read would still be right.
    zero_local_blob(&env, &img, 1);
    let before = proxy.blob_bytes_served();
    assert_quiet_sh_prints(&env, &name, &chunky_sum_cmd(at), &chunky_sum(at));
    assert_eq!(proxy.blob_bytes_served(), before);
    // A chunk not fetched yet is fetched and read right.
    let other = 6 * MIB + MIB / 2;
    assert_quiet_sh_prints(&env, &name, &chunky_sum_cmd(other), &chunky_sum(other));
    let fetched = proxy.blob_bytes_served() - before;
    assert!(fetched > 0 && fetched < 2 * MIB as u64, "{fetched}");
}

#[test]
fn lazy_reads_fall_back_from_a_vanished_mirror_to_the_image_registry() {
    let reg = Registry::start();
    let img = lazy_image();
    push_image(&reg, "library/lazyhub:latest", &img);
    let mirror = Proxy::start(&reg.addr(), Mode::Pass);
    let origin = Proxy::start(&reg.addr(), Mode::Pass);
    let env = Env::new();
    let _c = ContainersGuard(&env);
    env.set_mirrors(&[&mirror.addr()]);
    // Docker Hub itself is never asked.
    let cmd = |args: &[&str]| hub_closed_run(&env, args);
    let (code, _, err) = cmd(&["pull", "--lazy", "lazyhub"]);
    assert_eq!(code, 0, "{err}");
    // Each lazy layer records the mirror it reads from and the image's own registry. Docker
    // Hub is out of a test's reach: the recorded origin is pointed at a second proxy in front
    // of the same registry.
    for i in 0..3 {
        let p = layer_dir(&env, &img, i).join("lazy/source.json");
        let mut source: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
        assert_eq!(source["registry"], mirror.addr().as_str(), "{source}");
        assert_eq!(source["origin"], "docker.io", "{source}");
        source["origin"] = origin.addr().into();
        std::fs::write(&p, serde_json::to_vec(&source).unwrap()).unwrap();
    }
    let (code, id, err) = cmd(&["run", "-d", "lazyhub", "sleep", "120"]);
    assert_eq!(code, 0, "{err}");
    let id = id.trim();
    assert_eq!(
        env.ok(&["exec", id, "cat", "/data/small.txt"]),
        "hello-lazy\n"
    );
    assert!(mirror.blob_bytes_served() > 0);
    assert_eq!(origin.blob_bytes_served(), 0);

    // The mirror goes away mid-run: reads of data not fetched yet come from the origin.
    drop(mirror);
    let t = Instant::now();
    let out = env.ok(&["exec", id, "sha256sum", "/data/big.bin"]);
    eprintln!(
        "12 MiB read with the mirror gone (retries, then the origin): {:?}",
        t.elapsed()
    );
    assert_sum(&out, &noise(BIG, 7));
    let served = origin.blob_bytes_served();
    assert!(served >= BIG as u64, "origin served {served}");
    let (_, _, logs) = env.run(&["logs", id]);
    assert_eq!(logs.matches("not answering").count(), 1, "{logs}");
    assert!(logs.contains("reading from"), "{logs}");

    // Both gone: EIO.
    drop(origin);
    let (code, out, err) = env.run(&["exec", id, "cat", "/etc/xattr"]);
    assert_ne!(code, 0, "{out}");
    assert_eio(&err);
    env.ok(&["rm", "-f", id]);
}

#[test]
fn lazy_two_containers_share_what_each_fetched() {
    let (_reg, img, proxy, env, name) = chunky_setup();
    let _c = ContainersGuard(&env);
    // Two containers, so two supervisors serving the one lazy layer.
    let (a, b) = (
        detached(&env, &name, "600000"),
        detached(&env, &name, "600000"),
    );
    let at = 3 * MIB + MIB / 2;
    let out = env.ok(&["exec", &a, "sh", "-c", &chunky_sum_cmd(at)]);
    assert_eq!(out.split_whitespace().next(), Some(chunky_sum(at).as_str()));
    // The other supervisor takes the chunk from the logs: not fetched again, and not decoded
    // again either (the local blob could be zeros now).
    zero_local_blob(&env, &img, 1);
    let before = proxy.blob_bytes_served();
    let out = env.ok(&["exec", &b, "sh", "-c", &chunky_sum_cmd(at)]);
    assert_eq!(out.split_whitespace().next(), Some(chunky_sum(at).as_str()));
    assert_eq!(proxy.blob_bytes_served(), before);
    // Both read one chunk at the same moment (each response held a while): one fetches it,
    // the other waits for that fetch and takes its bytes.
    proxy.set_delay(Duration::from_millis(1500));
    let from = proxy.heads().len();
    let at = 6 * MIB + MIB / 2;
    let spawn = |id: &str| env.spawn(&["exec", id, "sh", "-c", &chunky_sum_cmd(at)]);
    let (pa, pb) = (spawn(&a), spawn(&b));
    for p in [pa, pb] {
        let (code, out, err) = wait_output(p);
        assert_eq!(code, 0, "{err}");
        assert_eq!(out.split_whitespace().next(), Some(chunky_sum(at).as_str()));
    }
    assert_eq!(blob_gets(&proxy, from), 1, "{:#?}", &proxy.heads()[from..]);
    env.ok(&["rm", "-f", &a, &b]);
}
