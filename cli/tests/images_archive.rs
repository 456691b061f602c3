//! `save`/`load` round trips, interop with skopeo, and hostile archives.

mod images_common;

use std::process::Command;

use images_common::Env;
use serde_json::{json, Value};
use strata_testkit::fixtures::{self, ImageSpec, LayerTar};
use strata_testkit::podman::podman_ok as podman;

fn skopeo(args: &[&str]) -> String {
    let o = Command::new("skopeo")
        .args(["--insecure-policy"])
        .args(args)
        .output()
        .expect("skopeo is installed by scripts/setup");
    assert!(
        o.status.success(),
        "skopeo {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout).unwrap()
}

/// A tar of the given files, written as is.
fn raw_tar(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, data) in files {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, name, *data).unwrap();
    }
    b.into_inner().unwrap()
}

fn config_with(diff_ids: &[String]) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "architecture": "amd64", "os": "linux", "created": "2024-01-01T00:00:00Z",
        "config": {"Cmd": ["sh"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    }))
    .unwrap()
}

fn archive_of(config: &[u8], layers: &[&[u8]], tag: &str) -> Vec<u8> {
    let id = fixtures::sha256(config);
    let cfg_name = format!("{}.json", &id[7..]);
    let names: Vec<String> = (0..layers.len())
        .map(|i| format!("l{i}/layer.tar"))
        .collect();
    let manifest = json!([{"Config": cfg_name, "RepoTags": [tag], "Layers": names}]).to_string();
    let mut files: Vec<(&str, &[u8])> = vec![(&cfg_name, config)];
    for (n, l) in names.iter().zip(layers) {
        files.push((n, l));
    }
    files.push(("manifest.json", manifest.as_bytes()));
    raw_tar(&files)
}

/// The layered `web:v2` fixture loaded from a docker-archive; its image ID.
fn load_web(env: &Env) -> String {
    let spec = fixtures::layered_spec("web:v2").unwrap();
    let archive = env.path("web.tar");
    let web = fixtures::write_docker_archive(&archive, &[spec])
        .unwrap()
        .remove(0);
    env.ok(&["load", "-i", archive.to_str().unwrap()]);
    web
}

#[test]
fn save_load_roundtrip_keeps_ids() {
    let env = Env::new();
    let base = env.load_busybox("busybox:latest");
    let web = load_web(&env);

    let saved = env.path("saved.tar");
    env.ok(&["save", "-o", saved.to_str().unwrap(), "web:v2", "busybox"]);
    // Into a fresh store: same IDs, same tags, same files.
    let env2 = Env::new();
    let out = env2.ok(&["load", "-i", saved.to_str().unwrap()]);
    assert_eq!(out, "Loaded image: web:v2\nLoaded image: busybox:latest\n");
    let ids = env2.ok(&["images", "-q", "--no-trunc"]);
    assert_eq!(ids, format!("{web}\n{base}\n"));
    let v: Value = serde_json::from_str(&env2.ok(&["inspect", "web:v2"])).unwrap();
    let upper = v[0]["GraphDriver"]["Data"]["UpperDir"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        std::fs::read(format!("{upper}/www/index.html")).unwrap(),
        b"<h1>v2</h1>\n"
    );
    // Save by ID: untagged in the archive. Save to stdout works too.
    let by_id = env.path("by-id.tar");
    let o = env
        .cmd(&["save", &base[7..19]])
        .stdout(std::fs::File::create(&by_id).unwrap())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let env3 = Env::new();
    assert_eq!(
        env3.ok(&["load", "-i", by_id.to_str().unwrap()]),
        format!("Loaded image ID: {base}\n")
    );
    // From stdin.
    let env4 = Env::new();
    let o = env4.run_stdin(&["load"], &std::fs::read(&saved).unwrap());
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(
        String::from_utf8(o.stdout).unwrap(),
        "Loaded image: web:v2\nLoaded image: busybox:latest\n"
    );
    assert!(std::fs::read_dir(env4.root.join("tmp"))
        .unwrap()
        .next()
        .is_none());
    // Errors.
    let (code, err) = env.err(&["save", "-o", env.path("x.tar").to_str().unwrap(), "nope"]);
    assert_eq!(
        (code, err.as_str()),
        (1, "Error: No such image: nope:latest\n")
    );
    assert!(!env.path("x.tar").exists());
}

/// `save -o` at a device, FIFO or socket is refused as Docker refuses it, and the node survives
/// (a temp file renamed over it once turned a host's /dev/null into a regular file). The nodes are
/// made in the test's own temp dir; a symlink is followed, not replaced.
#[test]
fn save_refuses_output_paths_that_are_not_regular_files() {
    use std::os::unix::fs::FileTypeExt;
    let env = Env::new();
    env.load_busybox("busybox:latest");
    let null = env.path("null");
    nix::sys::stat::mknod(
        &null,
        nix::sys::stat::SFlag::S_IFCHR,
        nix::sys::stat::Mode::from_bits_truncate(0o666),
        nix::sys::stat::makedev(1, 3),
    )
    .unwrap();
    let fifo = env.path("fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    for (path, kind) in [(&null, "a device"), (&fifo, "a named pipe")] {
        let p = path.to_str().unwrap();
        let (code, err) = env.err(&["save", "-o", p, "busybox"]);
        assert_eq!(
            (code, err),
            (
                1,
                format!(
                    "Error: failed to save image: invalid output path: \"{p}\" must be a \
                     directory or a regular file: got {kind}\n"
                )
            )
        );
    }
    assert!(std::fs::symlink_metadata(&null)
        .unwrap()
        .file_type()
        .is_char_device());
    assert!(std::fs::symlink_metadata(&fifo)
        .unwrap()
        .file_type()
        .is_fifo());
    let (code, err) = env.err(&[
        "save",
        "-o",
        env.path("no/dir/x.tar").to_str().unwrap(),
        "busybox",
    ]);
    assert_eq!(code, 1);
    assert!(err.contains("invalid output path: directory"), "{err}");
    // Through a symlink: the link stays, its target gets the archive, nothing else is left.
    let dir = env.path("out");
    std::fs::create_dir(&dir).unwrap();
    std::os::unix::fs::symlink("real.tar", dir.join("link.tar")).unwrap();
    env.ok(&[
        "save",
        "-o",
        dir.join("link.tar").to_str().unwrap(),
        "busybox",
    ]);
    assert!(std::fs::symlink_metadata(dir.join("link.tar"))
        .unwrap()
        .file_type()
        .is_symlink());
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["link.tar", "real.tar"]);
    assert!(std::fs::metadata(dir.join("real.tar")).unwrap().len() > 1024);
}

#[test]
fn skopeo_reads_what_save_writes_and_writes_what_load_reads() {
    let env = Env::new();
    let web = load_web(&env);
    let saved = env.path("saved.tar");
    env.ok(&["save", "-o", saved.to_str().unwrap(), "web:v2"]);

    let info: Value = serde_json::from_str(&skopeo(&[
        "inspect",
        &format!("docker-archive:{}", saved.display()),
    ]))
    .unwrap();
    assert_eq!(info["Layers"].as_array().unwrap().len(), 2);
    let cfg: Value = serde_json::from_str(&skopeo(&[
        "inspect",
        "--config",
        &format!("docker-archive:{}", saved.display()),
    ]))
    .unwrap();
    assert_eq!(cfg["created"], "2024-02-01T00:00:00Z");

    // docker-archive → OCI layout dir → strata load (dir).
    let oci = env.path("oci");
    skopeo(&[
        "copy",
        &format!("docker-archive:{}", saved.display()),
        &format!("oci:{}:v2", oci.display()),
    ]);
    // skopeo rewrites the config when converting to OCI (so the image ID changes, as with
    // Docker); the layers (diffIDs) must be the same.
    let oci_id = oci_config_digest(&oci);
    let env2 = Env::new();
    let out = env2.ok(&["load", "-i", oci.to_str().unwrap()]);
    assert_eq!(out, format!("Loaded image ID: {oci_id}\n"));
    assert_eq!(diff_ids(&env2, &oci_id), diff_ids(&env, &web));

    // OCI → docker-archive written by skopeo → strata load.
    let back = env.path("back.tar");
    skopeo(&[
        "copy",
        &format!("oci:{}:v2", oci.display()),
        &format!("docker-archive:{}:web:copy", back.display()),
    ]);
    let env3 = Env::new();
    assert_eq!(
        env3.ok(&["load", "-i", back.to_str().unwrap()]),
        "Loaded image: web:copy\n"
    );
    let id3 = env3.ok(&["images", "-q", "--no-trunc"]);
    assert_eq!(diff_ids(&env3, id3.trim()), diff_ids(&env, &web));

    // oci-archive (a tar of an OCI layout, compressed layers) written by skopeo.
    let oa = env.path("web.oci.tar");
    skopeo(&[
        "copy",
        &format!("docker-archive:{}", saved.display()),
        &format!("oci-archive:{}:v2", oa.display()),
    ]);
    let env4 = Env::new();
    assert_eq!(
        env4.ok(&["load", "-i", oa.to_str().unwrap()]),
        format!("Loaded image ID: {oci_id}\n")
    );

    // strata save --format oci is an OCI layout skopeo can read.
    let ours = env.path("ours.oci.tar");
    env.ok(&[
        "save",
        "--format",
        "oci",
        "-o",
        ours.to_str().unwrap(),
        "web:v2",
    ]);
    let info: Value = serde_json::from_str(&skopeo(&[
        "inspect",
        &format!("oci-archive:{}", ours.display()),
    ]))
    .unwrap();
    assert_eq!(info["Layers"].as_array().unwrap().len(), 2);
    let env5 = Env::new();
    assert_eq!(
        env5.ok(&["load", "-i", ours.to_str().unwrap()]),
        "Loaded image: web:v2\n"
    );
}

fn oci_config_digest(layout: &std::path::Path) -> String {
    let manifest = strata_testkit::registry::images::oci_manifest(layout);
    manifest["config"]["digest"].as_str().unwrap().to_string()
}

fn diff_ids(env: &Env, image: &str) -> String {
    env.ok(&["inspect", "--format", "{{json .RootFS.Layers}}", image])
}

fn assert_load_refused(env: &Env, archive: &[u8], expect: &str) {
    let f = env.path("bad.tar");
    std::fs::write(&f, archive).unwrap();
    let before = env.listing();
    let (code, err) = env.err(&["load", "-i", f.to_str().unwrap()]);
    assert_eq!(code, 1, "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.starts_with("Error: "), "{err}");
    assert!(err.contains(expect), "expected {expect:?} in {err}");
    assert_eq!(env.listing(), before, "store changed after: {err}");
}

#[test]
fn hostile_archives_are_refused_cleanly() {
    let env = Env::new();
    env.load_busybox("busybox:latest");
    let outside = tempfile::tempdir().unwrap();
    let victim = outside.path().join("victim");

    let traversal = {
        let mut l = LayerTar::new();
        l.file("../../../../../../../../tmp/strata-traversal", b"x", 0o644);
        l.into_bytes()
    };
    let symlink_escape = {
        let mut l = LayerTar::new();
        l.symlink("evil", outside.path().to_str().unwrap())
            .file("evil/victim", b"pwned", 0o644);
        l.into_bytes()
    };
    let hardlink_escape = {
        let mut l = LayerTar::new();
        l.hardlink("passwd", "/etc/passwd");
        l.into_bytes()
    };
    let absolute = {
        let mut l = LayerTar::new();
        l.file("/etc/strata-abs", b"x", 0o644);
        l.into_bytes()
    };
    for (what, layer) in [
        ("traversal", &traversal),
        ("symlink", &symlink_escape),
        ("hardlink", &hardlink_escape),
        ("absolute", &absolute),
    ] {
        let cfg = config_with(&[fixtures::sha256(layer)]);
        let _ = what;
        assert_load_refused(
            &env,
            &archive_of(&cfg, &[layer], "evil:latest"),
            "refusing unsafe archive entry",
        );
    }
    assert!(!victim.exists());
    assert!(!std::path::Path::new("/tmp/strata-traversal").exists());
    assert!(!std::path::Path::new("/etc/strata-abs").exists());

    // Truncated gzip layer.
    let mut l = LayerTar::new();
    l.file("big", &vec![42u8; 200_000], 0o644);
    let plain = l.into_bytes();
    let gz = fixtures::gzip(&plain);
    let cut = &gz[..gz.len() / 2];
    let cfg = config_with(&[fixtures::sha256(&plain)]);
    assert_load_refused(
        &env,
        &archive_of(&cfg, &[cut], "cut:latest"),
        "invalid layer archive",
    );

    // Wrong diffID: the config promises other content.
    let cfg = config_with(&[fixtures::sha256(b"something else")]);
    assert_load_refused(
        &env,
        &archive_of(&cfg, &[&plain], "wrong:latest"),
        "diffID mismatch",
    );

    // Second layer bad: the first (new) layer must not stay behind.
    let mut first = LayerTar::new();
    first.file("fresh", b"new content", 0o644);
    let first = first.into_bytes();
    let cfg = config_with(&[fixtures::sha256(&first), fixtures::sha256(&traversal)]);
    assert_load_refused(
        &env,
        &archive_of(&cfg, &[&first, &traversal], "two:latest"),
        "refusing",
    );

    // Broken archives.
    assert_load_refused(
        &env,
        b"this is not a tar archive at all, not even close........",
        "invalid archive",
    );
    let good = std::fs::read(env.path("busybox-busybox_latest.tar")).unwrap();
    assert_load_refused(&env, &good[..good.len() / 3], "invalid archive");
    let cfg = config_with(&[fixtures::sha256(&plain)]);
    let id = fixtures::sha256(&cfg);
    let manifest = json!([{"Config": format!("{}.json", &id[7..]), "RepoTags": ["m:1"], "Layers": ["missing/layer.tar"]}]).to_string();
    let name = format!("{}.json", &id[7..]);
    assert_load_refused(
        &env,
        &raw_tar(&[(&name, &cfg), ("manifest.json", manifest.as_bytes())]),
        "missing/layer.tar not found in archive",
    );
    // Config that does not hash to its name.
    let manifest =
        json!([{"Config": format!("{}.json", "0".repeat(64)), "RepoTags": ["m:1"], "Layers": []}])
            .to_string();
    let name = format!("{}.json", "0".repeat(64));
    assert_load_refused(
        &env,
        &raw_tar(&[(&name, &cfg), ("manifest.json", manifest.as_bytes())]),
        "does not match its digest",
    );
    // Bad tag in manifest.
    let spec = ImageSpec::new(&["Bad:tag"], vec![plain.clone()]);
    let p = env.path("badtag.tar");
    fixtures::write_docker_archive(&p, &[spec]).unwrap();
    assert_load_refused(
        &env,
        &std::fs::read(&p).unwrap(),
        "invalid reference format",
    );
    // Outer-archive names that point outside the archive are never followed to the host.
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Symlink);
    h.set_size(0);
    h.set_mode(0o777);
    b.append_link(&mut h, "l/layer.tar", "/etc/passwd").unwrap();
    let cfg = config_with(&[
        fixtures::sha256(&std::fs::read("/etc/passwd").unwrap()),
        fixtures::sha256(b"x"),
    ]);
    let id = fixtures::sha256(&cfg);
    let name = format!("{}.json", &id[7..]);
    let mut h = tar::Header::new_gnu();
    h.set_size(cfg.len() as u64);
    h.set_mode(0o644);
    b.append_data(&mut h, &name, &cfg[..]).unwrap();
    let manifest = json!([{"Config": name, "RepoTags": ["p:1"], "Layers": ["l/layer.tar", "../../etc/shadow"]}]).to_string();
    let mut h = tar::Header::new_gnu();
    h.set_size(manifest.len() as u64);
    h.set_mode(0o644);
    b.append_data(&mut h, "manifest.json", manifest.as_bytes())
        .unwrap();
    assert_load_refused(&env, &b.into_inner().unwrap(), "not found in archive");
    let (_, err) = env.err(&["load", "-i", "/nonexistent/strata.tar"]);
    assert_eq!(
        err,
        "Error: open /nonexistent/strata.tar: no such file or directory\n"
    );
    let (_, err) = env.err(&["import", "/nonexistent/strata.tar"]);
    assert_eq!(
        err,
        "Error: open /nonexistent/strata.tar: no such file or directory\n"
    );
    // Empty stdin.
    let before = env.listing();
    let o = env.run_stdin(&["load"], b"");
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&o.stderr),
        "Error: requested load from stdin, but stdin is empty\n"
    );
    assert_eq!(env.listing(), before);
}

#[test]
fn podman_loads_what_save_writes_and_back() {
    let env = Env::new();
    let web = load_web(&env);
    let saved = env.path("saved.tar");
    env.ok(&["save", "-o", saved.to_str().unwrap(), "web:v2"]);
    let pdir = env.path("podman");
    let out = podman(&pdir, &["load", "-i", saved.to_str().unwrap()]);
    assert!(
        out.contains("Loaded image: docker.io/library/web:v2"),
        "{out}"
    );
    let ids = podman(&pdir, &["images", "--no-trunc", "--format", "{{.ID}}"]);
    assert_eq!(ids.trim(), web.as_str());
    let back = env.path("podman.tar");
    podman(
        &pdir,
        &[
            "save",
            "-o",
            back.to_str().unwrap(),
            "docker.io/library/web:v2",
        ],
    );
    let env2 = Env::new();
    assert_eq!(
        env2.ok(&["load", "-i", back.to_str().unwrap()]),
        "Loaded image: web:v2\n"
    );
    assert_eq!(env2.ok(&["images", "-q", "--no-trunc"]), format!("{web}\n"));
}
