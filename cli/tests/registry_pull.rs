//! `strata pull` against a real registry (Debian's docker-registry started per test).

mod registry_common;

use registry_common::*;
use strata_testkit::registry::images;
use strata_testkit::registry::proxy::{Mode, Proxy};
use strata_testkit::registry::Registry;

#[test]
fn pull_single_layer_busybox_then_up_to_date() {
    let reg = Registry::start();
    let img = images::image(vec![images::busybox()]);
    push_image(&reg, "busybox:latest", &img);
    let env = Env::new();
    let addr = reg.addr();
    let out = env.ok(&["pull", &format!("{addr}/busybox")]);
    assert_eq!(
        out,
        format!(
            "Using default tag: latest\nlatest: Pulling from busybox\n{}: Pull complete\nDigest: {}\n\
             Status: Downloaded newer image for {addr}/busybox:latest\n{addr}/busybox:latest\n",
            short(&img.layers[0].digest),
            img.manifest_digest
        )
    );
    let rec = env
        .store()
        .resolve(&format!("{addr}/busybox:latest"))
        .unwrap();
    assert_eq!(rec.id.to_string(), img.config_digest);
    let dirs = env.store().layer_dirs(&rec).unwrap();
    assert!(dirs[0].join("bin/busybox").is_file(), "busybox extracted");
    assert!(env.partials().is_empty(), "partial downloads cleaned up");
    assert!(rec
        .repo_digests
        .iter()
        .any(|r| r.to_string() == format!("{addr}/busybox@{}", img.manifest_digest)));

    let again = env.ok(&["pull", &format!("{addr}/busybox:latest")]);
    assert_eq!(
        again,
        format!(
            "latest: Pulling from busybox\nDigest: {}\nStatus: Image is up to date for {addr}/busybox:latest\n\
             {addr}/busybox:latest\n",
            img.manifest_digest
        )
    );
    let quiet = env.ok(&["pull", "-q", &format!("{addr}/busybox")]);
    assert_eq!(quiet, format!("{addr}/busybox:latest\n"));
}

#[test]
fn multi_layer_already_exists_and_pull_by_digest() {
    let reg = Registry::start();
    let base = images::busybox();
    let a = images::image(vec![
        base.clone(),
        images::layer(&[("etc/motd", b"one\n")]),
        images::layer(&[("usr/share/two", b"two\n")]),
    ]);
    let b = images::image(vec![
        base.clone(),
        images::layer(&[("etc/motd", b"other\n")]),
    ]);
    push_image(&reg, "lib/app:a", &a);
    push_image(&reg, "lib/app:b", &b);
    let env = Env::new();
    let addr = reg.addr();
    let out = env.ok(&["pull", &format!("{addr}/lib/app:a")]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "a: Pulling from lib/app");
    for (i, l) in a.layers.iter().enumerate() {
        assert_eq!(lines[1 + i], format!("{}: Pull complete", short(&l.digest)));
    }
    let out = env.ok(&["pull", &format!("{addr}/lib/app:b")]);
    assert!(
        out.contains(&format!("{}: Already exists\n", short(&base.digest))),
        "{out}"
    );
    assert!(
        out.contains(&format!("{}: Pull complete\n", short(&b.layers[1].digest))),
        "{out}"
    );
    let rec = env.store().resolve(&format!("{addr}/lib/app:b")).unwrap();
    let dirs = env.store().layer_dirs(&rec).unwrap();
    assert_eq!(std::fs::read(dirs[0].join("etc/motd")).unwrap(), b"other\n");

    // By digest, into a fresh store: no tag recorded, the digest reference is.
    let env2 = Env::new();
    let by_digest = format!("{addr}/lib/app@{}", a.manifest_digest);
    let out = env2.ok(&["pull", &by_digest]);
    assert!(
        out.starts_with(&format!("{}: Pulling from lib/app\n", a.manifest_digest)),
        "{out}"
    );
    assert!(out.ends_with(&format!(
        "Status: Downloaded newer image for {by_digest}\n{by_digest}\n"
    )));
    let rec = env2.store().resolve(&by_digest).unwrap();
    assert_eq!(rec.id.to_string(), a.config_digest);
    assert!(rec.repo_tags.is_empty());
}

#[test]
fn errors_in_dockers_words() {
    let reg = Registry::start();
    push_image(
        &reg,
        "busybox:latest",
        &images::image(vec![images::busybox()]),
    );
    let env = Env::new();
    let addr = reg.addr();
    let (code, _, err) = env.run(&["pull", &format!("{addr}/busybox:nope")]);
    assert_eq!(code, 1);
    assert_eq!(
        err,
        format!("Error: manifest for {addr}/busybox:nope not found: manifest unknown: manifest unknown\n")
    );
    let (code, _, err) = env.run(&["pull", &format!("{addr}/nothere")]);
    assert_eq!(code, 1);
    assert!(
        err == format!("Error: repository {addr}/nothere not found: name unknown: repository name not known to registry\n")
            || err == format!("Error: manifest for {addr}/nothere:latest not found: manifest unknown: manifest unknown\n"),
        "{err}"
    );
    let (code, _, err) = env.run(&["pull", "Upper/Case"]);
    assert_eq!(code, 1);
    assert!(err.starts_with("Error: invalid reference format"), "{err}");
    assert!(env.store().images().unwrap().is_empty());
}

#[test]
fn index_platform_selection_ignores_attestations() {
    let reg = Registry::start();
    let base = images::busybox();
    let amd = images::image_for(
        vec![base.clone(), images::layer(&[("arch", b"amd64")])],
        "amd64",
        None,
    );
    let arm = images::image_for(
        vec![base.clone(), images::layer(&[("arch", b"arm64")])],
        "arm64",
        Some("v8"),
    );
    let att = images::image_for(vec![images::layer(&[("att.json", b"{}")])], "unknown", None);
    let dir = tempfile::tempdir().unwrap();
    let index_digest = images::write_oci_index_layout(
        dir.path(),
        "multi",
        &[arm.clone(), amd.clone()],
        Some(&att),
    );
    push_layout(&reg, dir.path(), "multi", "multi:latest", &["--all"]);
    let addr = reg.addr();

    let env = Env::new();
    let out = env.ok(&["pull", &format!("{addr}/multi")]);
    assert!(out.contains(&format!("Digest: {index_digest}\n")), "{out}");
    let rec = env.store().resolve(&format!("{addr}/multi")).unwrap();
    assert_eq!(rec.id.to_string(), amd.config_digest);

    let env = Env::new();
    env.ok(&[
        "pull",
        "--platform",
        "linux/arm64",
        &format!("{addr}/multi"),
    ]);
    let rec = env.store().resolve(&format!("{addr}/multi")).unwrap();
    assert_eq!(rec.id.to_string(), arm.config_digest);

    let (code, _, err) = env.run(&[
        "pull",
        "--platform",
        "linux/s390x",
        &format!("{addr}/multi"),
    ]);
    assert_eq!(code, 1);
    assert_eq!(
        err,
        "Error: no matching manifest for linux/s390x in the manifest list entries\n"
    );
}

#[test]
fn docker_schema2_manifest_pulls() {
    let reg = Registry::start();
    let img = images::image(vec![
        images::busybox(),
        images::layer(&[("etc/v2s2", b"yes")]),
    ]);
    let dir = tempfile::tempdir().unwrap();
    images::write_oci_layout(dir.path(), "t", &img);
    push_layout(&reg, dir.path(), "t", "v2s2:latest", &["--format", "v2s2"]);
    let env = Env::new();
    let out = env.ok(&["pull", &format!("{}/v2s2", reg.addr())]);
    assert!(out.contains("Status: Downloaded newer image for"), "{out}");
    let rec = env
        .store()
        .resolve(&format!("{}/v2s2", reg.addr()))
        .unwrap();
    assert_eq!(
        rec.id.to_string(),
        img.config_digest,
        "same config, same image ID"
    );
    let dirs = env.store().layer_dirs(&rec).unwrap();
    assert_eq!(std::fs::read(dirs[0].join("etc/v2s2")).unwrap(), b"yes");
}

#[test]
fn tampered_blob_fails_and_stores_nothing() {
    let reg = Registry::start();
    let img = images::image(vec![images::busybox(), images::layer(&[("etc/x", b"x")])]);
    push_image(&reg, "tamper:latest", &img);
    let victim = &img.layers[0];
    let path = reg.blob_file(&victim.digest);
    let mut data = std::fs::read(&path).unwrap();
    let mid = data.len() / 2;
    data[mid] ^= 0x55;
    std::fs::write(&path, &data).unwrap();
    let env = Env::new();
    let (code, _, err) = env.run(&["pull", &format!("{}/tamper", reg.addr())]);
    assert_eq!(code, 1);
    assert_eq!(
        err,
        format!(
            "Error: filesystem layer verification failed for digest {}\n",
            victim.digest
        )
    );
    let store = env.store();
    assert!(store.images().unwrap().is_empty());
    assert!(
        store.layers().unwrap().is_empty(),
        "no layer left: {:?}",
        store.layers().unwrap()
    );
    assert!(!env
        .partials()
        .iter()
        .any(|p| p.contains(victim.digest.trim_start_matches("sha256:"))));
}

#[test]
fn truncated_responses_fail_cleanly_then_resume() {
    let reg = Registry::start();
    let big = images::big_layer("data/big", 4 << 20, 3);
    let img = images::image(vec![big.clone()]);
    push_image(&reg, "big:latest", &img);
    // Cut every blob response after 64 KiB: four attempts cannot finish 4 MiB.
    let proxy = Proxy::start(&reg.addr(), Mode::Cut(64 << 10));
    let env = Env::new();
    let name = format!("{}/big", proxy.addr());
    let (code, _, err) = env.run(&["pull", &name]);
    assert_eq!(code, 1);
    assert!(
        err.starts_with("Error: ") && err.lines().count() == 1,
        "{err}"
    );
    assert!(env.store().images().unwrap().is_empty());
    assert!(env.store().layers().unwrap().is_empty());
    assert_eq!(env.partials().len(), 1, "partial download kept for resume");
    proxy.set_mode(Mode::Pass);
    let before = proxy.heads().len();
    env.ok(&["pull", &name]);
    assert!(
        proxy.heads()[before..]
            .iter()
            .any(|h| h.to_ascii_lowercase().contains("range: bytes=")),
        "second pull resumed with Range"
    );
    let rec = env.store().resolve(&name).unwrap();
    assert_eq!(rec.id.to_string(), img.config_digest);
    assert!(env.partials().is_empty());
}

#[test]
fn registry_killed_mid_pull_then_resumes() {
    let mut reg = Registry::start();
    let big = images::big_layer("data/big", 3 << 20, 5);
    let img = images::image(vec![images::busybox(), big.clone()]);
    push_image(&reg, "killed:latest", &img);
    let proxy = Proxy::start(&reg.addr(), Mode::Hold(1 << 20));
    let env = Env::new();
    let name = format!("{}/killed", proxy.addr());
    let child = env.spawn(&["pull", &name]);
    assert!(
        proxy.wait_held(std::time::Duration::from_secs(60)),
        "download never got going"
    );
    reg.kill();
    proxy.release();
    let (code, _, err) = wait_output(child);
    assert_eq!(code, 1);
    assert!(
        err.starts_with("Error: ") && err.lines().count() == 1,
        "{err}"
    );
    assert!(env.store().images().unwrap().is_empty(), "no partial image");
    let partial_len: u64 = env.partial_sizes().into_iter().max().unwrap_or(0);
    assert!(
        partial_len >= 512 << 10,
        "partial download kept ({partial_len} bytes)"
    );
    reg.restart();
    proxy.set_mode(Mode::Pass);
    let before = proxy.heads().len();
    let out = env.ok(&["pull", &name]);
    assert!(out.contains("Status: Downloaded newer image for"), "{out}");
    let resumed = proxy.heads()[before..].iter().any(|h| {
        h.to_ascii_lowercase()
            .contains(&format!("range: bytes={partial_len}-"))
    });
    assert!(resumed, "resumed from byte {partial_len}");
    let rec = env.store().resolve(&name).unwrap();
    assert_eq!(rec.id.to_string(), img.config_digest);
}

#[test]
fn all_tags_pulls_every_tag() {
    let reg = Registry::start();
    let base = images::busybox();
    let one = images::image(vec![base.clone(), images::layer(&[("v", b"1")])]);
    let two = images::image(vec![base.clone(), images::layer(&[("v", b"2")])]);
    push_image(&reg, "tags:one", &one);
    push_image(&reg, "tags:two", &two);
    let env = Env::new();
    let addr = reg.addr();
    let (code, _, err) = env.run(&["pull", "--all-tags", &format!("{addr}/tags:one")]);
    assert_eq!(
        (code, err.as_str()),
        (1, "Error: tag can't be used with --all-tags/-a\n")
    );
    let out = env.ok(&["pull", "-a", &format!("{addr}/tags")]);
    assert!(out.contains("one: Pulling from tags\n"), "{out}");
    assert!(out.contains("two: Pulling from tags\n"), "{out}");
    assert!(
        out.ends_with(&format!(
            "Status: Downloaded newer image for {addr}/tags\n{addr}/tags\n"
        )),
        "{out}"
    );
    let store = env.store();
    assert_eq!(
        store
            .resolve(&format!("{addr}/tags:one"))
            .unwrap()
            .id
            .to_string(),
        one.config_digest
    );
    assert_eq!(
        store
            .resolve(&format!("{addr}/tags:two"))
            .unwrap()
            .id
            .to_string(),
        two.config_digest
    );
}

#[test]
fn concurrent_pulls_of_one_image_share_the_store() {
    let reg = Registry::start();
    let img = images::image(vec![
        images::busybox(),
        images::big_layer("data/a", 2 << 20, 21),
        images::big_layer("data/b", 1 << 20, 22),
    ]);
    push_image(&reg, "conc:latest", &img);
    let env = Env::new();
    let name = format!("{}/conc", reg.addr());
    let a = env.spawn(&["pull", &name]);
    let b = env.spawn(&["pull", &name]);
    let (ca, oa, ea) = wait_output(a);
    let (cb, ob, eb) = wait_output(b);
    assert_eq!((ca, cb), (0, 0), "{oa}{ea}\n{ob}{eb}");
    let rec = env.store().resolve(&name).unwrap();
    assert_eq!(rec.id.to_string(), img.config_digest);
    assert_eq!(env.store().layers().unwrap().len(), 3);
    assert!(env.partials().is_empty());
}
