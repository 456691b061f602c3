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
            "Using default tag: latest\nlatest: Pulling from busybox\n{id}: Pulling fs layer\n\
             {id}: Verifying Checksum\n{id}: Download complete\n{id}: Pull complete\nDigest: {}\n\
             Status: Downloaded newer image for {addr}/busybox:latest\n{addr}/busybox:latest\n",
            img.manifest_digest,
            id = short(&img.layers[0].digest),
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
    // Docker's piped lines: every layer is announced, then (with 3 downloads at a time) none
    // waits; each is verified and downloaded, and they complete in order.
    for (i, l) in a.layers.iter().enumerate() {
        assert_eq!(
            lines[1 + i],
            format!("{}: Pulling fs layer", short(&l.digest))
        );
        for status in ["Verifying Checksum", "Download complete"] {
            let line = format!("{}: {status}", short(&l.digest));
            assert!(lines.contains(&line.as_str()), "{out}");
        }
    }
    let complete: Vec<&str> = lines
        .iter()
        .copied()
        .filter(|l| l.ends_with(": Pull complete"))
        .collect();
    let want: Vec<String> = a
        .layers
        .iter()
        .map(|l| format!("{}: Pull complete", short(&l.digest)))
        .collect();
    assert_eq!(complete, want);
    assert!(
        !out.contains("Downloading") && !out.contains("Extracting"),
        "{out}"
    );
    // One download at a time: the others wait for a slot.
    let env1 = Env::new();
    let out = env1.ok(&[
        "pull",
        "--max-concurrent-downloads",
        "1",
        &format!("{addr}/lib/app:a"),
    ]);
    for l in &a.layers[1..] {
        let waiting = format!("{}: Waiting\n", short(&l.digest));
        assert!(out.contains(&waiting), "{out}");
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

#[test]
fn transient_503s_are_retried() {
    let reg = Registry::start();
    let img = images::image(vec![images::busybox()]);
    push_image(&reg, "flaky:latest", &img);
    // The next 3 requests fail (the manifest GET and its first retries): still under the 4 attempts.
    let proxy = Proxy::start(&reg.addr(), Mode::Unavailable(3));
    let env = Env::new();
    let name = format!("{}/flaky", proxy.addr());
    let out = env.ok(&["pull", &name]);
    assert!(out.contains("Status: Downloaded newer image for"), "{out}");
    let manifest_gets = proxy
        .heads()
        .iter()
        .filter(|h| h.contains("/manifests/latest"))
        .count();
    assert_eq!(manifest_gets, 4, "three 503s then success");
    // A registry that stays unavailable: a clear error after the retries.
    proxy.set_mode(Mode::Unavailable(100));
    let (code, _, err) = env.run(&["pull", &format!("{}/flaky:other", proxy.addr())]);
    assert_eq!(code, 1);
    assert!(
        err.ends_with("/v2/flaky/manifests/other\": received unexpected HTTP status: 503 Service Unavailable\n"),
        "{err}"
    );
}

#[test]
fn layers_with_whiteouts_links_and_opaque_dirs() {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    use strata_testkit::fixtures::LayerTar;
    let reg = Registry::start();
    let mut upper = LayerTar::new();
    upper
        .whiteout("bin/vi")
        .dir("etc", 0o755)
        .opaque("etc")
        .file("etc/hostname", b"pulled\n", 0o644)
        .symlink("etc/link", "hostname")
        .hardlink("etc/hard", "etc/hostname");
    let img = images::image(vec![
        images::busybox(),
        images::layer_from_tar(upper.into_bytes()),
    ]);
    push_image(&reg, "wh:latest", &img);
    let env = Env::new();
    let name = format!("{}/wh", reg.addr());
    env.ok(&["pull", &name]);
    let rec = env.store().resolve(&name).unwrap();
    let top = &env.store().layer_dirs(&rec).unwrap()[0];
    let vi = std::fs::symlink_metadata(top.join("bin/vi")).unwrap();
    assert!(
        vi.file_type().is_char_device() && vi.rdev() == 0,
        "whiteout stored as char 0/0"
    );
    assert_eq!(
        std::fs::read_link(top.join("etc/link")).unwrap().to_str(),
        Some("hostname")
    );
    assert_eq!(
        std::fs::metadata(top.join("etc/hard")).unwrap().ino(),
        std::fs::metadata(top.join("etc/hostname")).unwrap().ino()
    );
    assert!(!top.join("etc/.wh..wh..opq").exists());
}

#[test]
fn repeated_identical_layers() {
    let reg = Registry::start();
    let same = images::layer(&[("etc/same", b"same\n")]);
    let img = images::image(vec![images::busybox(), same.clone(), same.clone()]);
    push_image(&reg, "dup:latest", &img);
    let env = Env::new();
    let name = format!("{}/dup", reg.addr());
    let out = env.ok(&["pull", &name]);
    assert_eq!(
        out.matches(&format!("{}: Pull complete\n", short(&same.digest)))
            .count(),
        2,
        "{out}"
    );
    let rec = env.store().resolve(&name).unwrap();
    assert_eq!(env.store().layer_dirs(&rec).unwrap().len(), 3);
    assert!(env.partials().is_empty());
}

#[test]
fn tty_shows_live_layer_progress() {
    let reg = Registry::start();
    let big = images::big_layer("data/big", 2 << 20, 31);
    let img = images::image(vec![images::busybox(), big.clone()]);
    push_image(&reg, "tty:latest", &img);
    let env = Env::new();
    let name = format!("{}/tty", reg.addr());
    // `script` gives strata a pseudo-terminal as stdout.
    let cmd = env.command(&["pull", &name]);
    let line = std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|a| a.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ");
    let mut script = std::process::Command::new("script");
    script.args(["-qec", &line, "/dev/null"]);
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => script.env(k, v),
            None => script.env_remove(k),
        };
    }
    let out = script.stdin(std::process::Stdio::null()).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout).replace("\r\n", "\n");
    assert!(
        text.contains(&format!("{}: Pulling fs layer", short(&big.digest))),
        "{text}"
    );
    assert!(
        text.contains(&format!("{}: Downloading [", short(&big.digest))),
        "{text}"
    );
    assert!(
        text.contains("\x1b[2A"),
        "the live block is redrawn in place"
    );
    assert!(
        text.contains(&format!("{}: Pull complete", short(&big.digest))),
        "{text}"
    );
    assert!(
        text.ends_with(&format!(
            "Status: Downloaded newer image for {name}:latest\n{name}:latest\n"
        )),
        "{text}"
    );
}

#[test]
fn rmi_frees_the_pulled_blobs_and_a_repull_downloads_again() {
    let reg = Registry::start();
    let img = images::image(vec![images::busybox(), images::layer(&[("etc/r", b"r")])]);
    push_image(&reg, "again:latest", &img);
    let proxy = Proxy::start(&reg.addr(), Mode::Pass);
    let env = Env::new();
    let name = format!("{}/again", proxy.addr());
    let blobs = || -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(env.root().join("blobs/sha256"))
            .unwrap()
            .map(|e| format!("sha256:{}", e.unwrap().file_name().to_string_lossy()))
            .collect();
        v.sort();
        v
    };
    env.ok(&["pull", &name]);
    let pulled = blobs();
    for d in img.layers.iter().map(|l| &l.digest) {
        assert!(pulled.contains(d), "compressed layer {d} kept for push");
    }
    assert!(pulled.contains(&img.config_digest) && pulled.contains(&img.manifest_digest));
    env.ok(&["rmi", &name]);
    assert!(env.store().images().unwrap().is_empty());
    assert!(
        env.store().layers().unwrap().is_empty(),
        "rmi removed the layers"
    );
    assert_eq!(
        blobs(),
        Vec::<String>::new(),
        "rmi removed config, manifest and layer blobs (config {} manifest {} layers {:?})",
        img.config_digest,
        img.manifest_digest,
        img.layers.iter().map(|l| &l.digest).collect::<Vec<_>>()
    );
    let before = proxy.heads().len();
    let out = env.ok(&["pull", &name]);
    assert!(out.contains("Status: Downloaded newer image for"), "{out}");
    let layer_gets = proxy.heads()[before..]
        .iter()
        .filter(|h| h.starts_with("GET") && img.layers.iter().any(|l| h.contains(&l.digest)))
        .count();
    assert_eq!(layer_gets, img.layers.len(), "every layer downloaded again");
    let rec = env.store().resolve(&name).unwrap();
    assert_eq!(
        std::fs::read(env.store().layer_dirs(&rec).unwrap()[0].join("etc/r")).unwrap(),
        b"r"
    );
}

#[test]
fn docker_hub_names_resolve_through_registry_mirrors_in_order() {
    let reg = Registry::start();
    let img = images::image(vec![images::busybox()]);
    push_image(&reg, "library/busybox:latest", &img);
    let env = Env::new();
    // A mirror that is down first (skipped), then the loopback registry as the mirror.
    let dead = strata_testkit::registry::free_port();
    env.set_mirrors(&[&format!("127.0.0.1:{dead}"), &reg.addr()]);
    // Docker Hub itself must never be asked.
    let (code, out, err) = env.run_with(&["pull", "busybox"], &HUB_CLOSED);
    assert_eq!(code, 0, "{err}");
    let id = short(&img.layers[0].digest);
    assert_eq!(
        out,
        format!(
            "Using default tag: latest\nlatest: Pulling from library/busybox\n{id}: Pulling fs layer\n\
             {id}: Verifying Checksum\n{id}: Download complete\n{id}: Pull complete\nDigest: {}\n\
             Status: Downloaded newer image for busybox:latest\ndocker.io/library/busybox:latest\n",
            img.manifest_digest
        )
    );
    let rec = env.store().resolve("busybox").unwrap();
    assert_eq!(rec.id.to_string(), img.config_digest);
    assert!(rec
        .repo_digests
        .iter()
        .any(|r| r.to_string() == format!("docker.io/library/busybox@{}", img.manifest_digest)));

    // `pull -a` lists the tags on the mirror too.
    let (code, out, err) = env.run_with(&["pull", "-a", "busybox"], &HUB_CLOSED);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.starts_with("latest: Pulling from library/busybox\n")
            && out
                .ends_with("Status: Image is up to date for busybox\ndocker.io/library/busybox\n"),
        "{out}"
    );

    // Other registries never go through the mirrors.
    let (code, _, err) = env.run(&["pull", &format!("{}/busybox", reg.addr())]);
    assert_ne!(code, 0, "not pushed under that name");
    assert!(err.contains("not found"), "{err}");
}
