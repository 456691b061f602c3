//! `strata push` against a real registry, and interop with skopeo in both directions.

mod registry_common;

use registry_common::*;
use strata_runtime::digest::DiffId;
use strata_runtime::reference::Reference;
use strata_testkit::registry::images;
use strata_testkit::registry::proxy::{Mode, Proxy};
use strata_testkit::registry::{skopeo_copy, Registry};

fn tag(env: &Env, from: &str, to: &str) {
    let store = env.store();
    let rec = store.resolve(from).unwrap();
    store.tag(&rec.id, &Reference::parse(to).unwrap()).unwrap();
}

/// An image built in the store directly (as `commit`/`load` would): no compressed blobs kept.
fn local_image(env: &Env, name: &str, layers: &[images::Layer]) -> String {
    let store = env.store();
    let mut parent = None;
    for l in layers {
        let info = store
            .add_layer(
                &l.tar[..],
                parent.as_ref(),
                Some(&DiffId::parse(&l.diff_id).unwrap()),
            )
            .unwrap();
        parent = Some(info.chain_id);
    }
    let img = images::image(layers.to_vec());
    let id = store
        .add_image(&img.config, &[Reference::parse(name).unwrap()], None)
        .unwrap();
    id.to_string()
}

#[test]
fn push_pull_round_trip_keeps_the_manifest_digest() {
    let src = Registry::start();
    let dst = Registry::start();
    let img = images::image(vec![
        images::busybox(),
        images::layer(&[("etc/rt", b"round trip\n")]),
    ]);
    push_image(&src, "bb:1", &img);
    let env = Env::new();
    env.ok(&["pull", &format!("{}/bb:1", src.addr())]);
    let target = format!("{}/mine:v1", dst.addr());
    tag(&env, &format!("{}/bb:1", src.addr()), &target);

    let out = env.ok(&["push", &target]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2 + img.layers.len(), "{out}");
    assert_eq!(
        lines[0],
        format!("The push refers to repository [{}/mine]", dst.addr())
    );
    // Layers upload in parallel: their lines come in completion order, as Docker's do.
    let mut got: Vec<String> = lines[1..=img.layers.len()]
        .iter()
        .map(|l| l.to_string())
        .collect();
    let mut want: Vec<String> = img
        .layers
        .iter()
        .map(|l| format!("{}: Pushed", short(&l.diff_id)))
        .collect();
    got.sort();
    want.sort();
    assert_eq!(got, want);
    assert_eq!(
        lines[lines.len() - 1],
        format!(
            "v1: digest: {} size: {}",
            img.manifest_digest,
            img.manifest.len()
        )
    );

    let out = env.ok(&["push", &target]);
    assert!(
        out.contains(&format!(
            "{}: Layer already exists\n",
            short(&img.layers[0].diff_id)
        )),
        "{out}"
    );

    // Cross-repository mount: the same image under another name in the same registry.
    let other = format!("{}/other:v1", dst.addr());
    tag(&env, &target, &other);
    let out = env.ok(&["push", &other]);
    assert!(
        out.contains(&format!(
            "{}: Mounted from mine\n",
            short(&img.layers[0].diff_id)
        )),
        "{out}"
    );

    let fresh = Env::new();
    fresh.ok(&["pull", &other]);
    let rec = fresh.store().resolve(&other).unwrap();
    assert_eq!(rec.id.to_string(), img.config_digest);
    let dirs = fresh.store().layer_dirs(&rec).unwrap();
    assert_eq!(
        std::fs::read(dirs[0].join("etc/rt")).unwrap(),
        b"round trip\n"
    );
}

#[test]
fn locally_built_image_pushes_and_skopeo_reads_it() {
    let reg = Registry::start();
    let env = Env::new();
    let layers = vec![images::busybox(), images::layer(&[("srv/app", b"local\n")])];
    let name = format!("{}/local/app:2", reg.addr());
    let id = local_image(&env, &name, &layers);
    let out = env.ok(&["push", &name]);
    let last = out.lines().last().unwrap();
    assert!(last.starts_with("2: digest: sha256:"), "{out}");
    for l in &layers {
        assert!(
            out.contains(&format!("{}: Pushed\n", short(&l.diff_id))),
            "{out}"
        );
    }

    // skopeo pulls what strata pushed, and the layers decompress to the same diffIDs.
    let dir = tempfile::tempdir().unwrap();
    skopeo_copy(
        &format!("docker://{name}"),
        &format!("dir:{}", dir.path().display()),
        &[],
    );
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("manifest.json")).unwrap()).unwrap();
    assert_eq!(
        manifest["mediaType"],
        "application/vnd.docker.distribution.manifest.v2+json"
    );
    assert_eq!(manifest["config"]["digest"], id);
    for (desc, l) in manifest["layers"].as_array().unwrap().iter().zip(&layers) {
        let hex = desc["digest"]
            .as_str()
            .unwrap()
            .trim_start_matches("sha256:");
        let gz = std::fs::read(dir.path().join(hex)).unwrap();
        let mut tar = Vec::new();
        let mut dec = strata_runtime::store::decompress(&gz[..]).unwrap();
        std::io::Read::read_to_end(&mut dec, &mut tar).unwrap();
        assert_eq!(images::sha256(&tar), l.diff_id);
    }

    let fresh = Env::new();
    fresh.ok(&["pull", &name]);
    assert_eq!(fresh.store().resolve(&name).unwrap().id.to_string(), id);
}

#[test]
fn chunked_upload_round_trips() {
    let reg = Registry::start();
    let proxy = Proxy::start(&reg.addr(), Mode::Pass);
    let env = Env::new();
    let name = format!("{}/chunky:1", proxy.addr());
    let layers = vec![images::big_layer("data/blob", 700 << 10, 9)];
    let id = local_image(&env, &name, &layers);
    let mut c = env.command(&["push", &name]);
    c.env("STRATA_PUSH_CHUNK_SIZE", "65536");
    let out = c.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let patches = proxy
        .heads()
        .iter()
        .filter(|h| h.starts_with("PATCH "))
        .count();
    assert!(
        patches >= 11,
        "700 KiB in 64 KiB chunks: {patches} PATCH requests"
    );
    let fresh = Env::new();
    fresh.ok(&["pull", &name]);
    assert_eq!(fresh.store().resolve(&name).unwrap().id.to_string(), id);
}

#[test]
fn push_errors() {
    let reg = Registry::start_token(&[("bob", "hunter2")], true);
    let env = Env::new();
    let (code, _, err) = env.run(&["push", &format!("{}/nothing:1", reg.addr())]);
    assert_eq!(code, 1);
    assert_eq!(
        err,
        format!(
            "Error: An image does not exist locally with the tag: {}/nothing:1\n",
            reg.addr()
        )
    );
    let name = format!("{}/team/app:1", reg.addr());
    local_image(&env, &name, &[images::layer(&[("a", b"a")])]);
    let (code, _, err) = env.run(&["push", &name]);
    assert_eq!(code, 1);
    assert_eq!(
        err,
        "Error: denied: requested access to the resource is denied\n"
    );
    env.ok(&["login", "-u", "bob", "-p", "hunter2", &reg.addr()]);
    let out = env.ok(&["push", &name]);
    assert!(out.contains("1: digest: sha256:"), "{out}");
}

#[test]
fn refused_monolithic_upload_falls_back_to_chunks() {
    let reg = Registry::start();
    let proxy = Proxy::start(&reg.addr(), Mode::RejectMonolithic);
    let env = Env::new();
    let name = format!("{}/fallback:1", proxy.addr());
    let layers = vec![images::busybox(), images::layer(&[("x", b"x")])];
    let id = local_image(&env, &name, &layers);
    let out = env.ok(&["push", &name]);
    assert!(out.contains("1: digest: sha256:"), "{out}");
    let heads = proxy.heads();
    assert!(
        heads.iter().any(|h| h.starts_with("PATCH ")),
        "chunked upload used: {heads:?}"
    );
    let fresh = Env::new();
    fresh.ok(&["pull", &name]);
    assert_eq!(fresh.store().resolve(&name).unwrap().id.to_string(), id);
}

#[test]
fn https_registry_push_and_pull() {
    // A loopback registry is insecure (as in Docker): HTTPS is tried first without verifying the
    // self-signed certificate. This registry speaks only TLS, so success means HTTPS was used.
    let reg = Registry::start_tls();
    let img = images::image(vec![
        images::busybox(),
        images::layer(&[("etc/tls", b"tls")]),
    ]);
    push_image(&reg, "secure/bb:1", &img);
    let env = Env::new();
    let name = format!("{}/secure/bb:1", reg.addr());
    let out = env.ok(&["pull", &name]);
    assert!(
        out.contains(&format!("Digest: {}\n", img.manifest_digest)),
        "{out}"
    );
    let copy = format!("{}/secure/copy:1", reg.addr());
    tag(&env, &name, &copy);
    let out = env.ok(&["push", &copy]);
    assert!(
        out.contains(&format!("1: digest: {}", img.manifest_digest)),
        "{out}"
    );
}

#[test]
fn image_pulled_through_an_index_pushes_its_platform_manifest() {
    let reg = Registry::start();
    let amd = images::image_for(
        vec![images::busybox(), images::layer(&[("a", b"amd")])],
        "amd64",
        None,
    );
    let arm = images::image_for(
        vec![images::busybox(), images::layer(&[("a", b"arm")])],
        "arm64",
        Some("v8"),
    );
    let dir = tempfile::tempdir().unwrap();
    images::write_oci_index_layout(dir.path(), "m", &[amd.clone(), arm.clone()], None);
    push_layout(&reg, dir.path(), "m", "multi:1", &["--all"]);
    let env = Env::new();
    let name = format!("{}/multi:1", reg.addr());
    env.ok(&["pull", &name]);
    let single = format!("{}/single:1", reg.addr());
    tag(&env, &name, &single);
    let out = env.ok(&["push", &single]);
    assert!(
        out.ends_with(&format!(
            "1: digest: {} size: {}\n",
            amd.manifest_digest,
            amd.manifest.len()
        )),
        "{out}"
    );
}

#[test]
fn push_all_tags() {
    let reg = Registry::start();
    let env = Env::new();
    let repo = format!("{}/many", reg.addr());
    local_image(&env, &format!("{repo}:a"), &[images::layer(&[("v", b"a")])]);
    local_image(&env, &format!("{repo}:b"), &[images::layer(&[("v", b"b")])]);
    let out = env.ok(&["push", "--all-tags", &repo]);
    assert_eq!(
        out.matches(&format!("The push refers to repository [{repo}]\n"))
            .count(),
        2,
        "{out}"
    );
    assert!(
        out.contains("\na: digest: sha256:") && out.contains("\nb: digest: sha256:"),
        "{out}"
    );
    let fresh = Env::new();
    let out = fresh.ok(&["pull", "-a", &repo]);
    assert!(
        out.contains("a: Pulling from many") && out.contains("b: Pulling from many"),
        "{out}"
    );
}

#[test]
fn zstd_layers_pull_and_push_back() {
    let src = Registry::start();
    let dst = Registry::start();
    let img = images::image(vec![
        images::busybox(),
        images::layer_zstd(&[("etc/z", b"zstd\n")]),
    ]);
    push_image(&src, "z:1", &img);
    let env = Env::new();
    let name = format!("{}/z:1", src.addr());
    env.ok(&["pull", &name]);
    let rec = env.store().resolve(&name).unwrap();
    assert_eq!(rec.id.to_string(), img.config_digest);
    let dirs = env.store().layer_dirs(&rec).unwrap();
    assert_eq!(std::fs::read(dirs[0].join("etc/z")).unwrap(), b"zstd\n");
    // Pushed back with the same bytes: the original manifest, zstd media type and all.
    let copy = format!("{}/z:1", dst.addr());
    tag(&env, &name, &copy);
    let out = env.ok(&["push", &copy]);
    assert!(
        out.ends_with(&format!(
            "1: digest: {} size: {}\n",
            img.manifest_digest,
            img.manifest.len()
        )),
        "{out}"
    );
}

#[test]
fn committed_image_mounts_its_base_layers_from_the_pulled_repository() {
    let reg = Registry::start();
    let proxy = Proxy::start(&reg.addr(), Mode::Pass);
    let base = images::image(vec![images::busybox()]);
    push_image(&reg, "library/base:1", &base);
    let env = Env::new();
    let addr = proxy.addr();
    let base_ref = format!("{addr}/library/base:1");
    env.ok(&["pull", &base_ref]);
    let (code, _, err) = env.run(&[
        "--storage-driver",
        "vfs",
        "run",
        "--name",
        "committer",
        &base_ref,
        "sh",
        "-c",
        "echo committed > /hi",
    ]);
    assert_eq!(code, 0, "{err}");
    env.ok(&["commit", "committer", &format!("{addr}/mine:1")]);
    env.ok(&["rm", "committer"]);

    let before = proxy.heads().len();
    let out = env.ok(&["push", &format!("{addr}/mine:1")]);
    let base_id = short(&base.layers[0].diff_id);
    assert!(
        out.contains(&format!("{base_id}: Mounted from library/base\n")),
        "{out}"
    );
    let heads = proxy.heads()[before..].to_vec();
    let uploads: Vec<&String> = heads
        .iter()
        .filter(|h| h.starts_with("PUT /v2/mine/blobs/uploads/"))
        .collect();
    assert_eq!(
        uploads.len(),
        2,
        "only the new layer and the config are uploaded: {heads:?}"
    );
    assert!(
        !uploads.iter().any(|h| h.contains(&base.layers[0].digest)),
        "{uploads:?}"
    );
    assert!(heads.iter().any(|h| h.starts_with(&format!(
        "POST /v2/mine/blobs/uploads/?mount={}&from=library/base",
        base.layers[0].digest
    ))));

    // Everything is there now: Docker's `Layer already exists` for every layer.
    let out = env.ok(&["push", &format!("{addr}/mine:1")]);
    assert_eq!(out.matches(": Layer already exists\n").count(), 2, "{out}");
}
