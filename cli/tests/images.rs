//! `strata load/images/tag/rmi/inspect/history/prune/system df` against a temp root.

mod images_common;

use images_common::{scrub, Env};
use serde_json::Value;
use strata_testkit::fixtures::{self, ImageSpec, LayerTar};

fn ids_of(out: &str) -> Vec<String> {
    out.lines().map(str::to_string).collect()
}

#[test]
fn load_then_images_table() {
    let env = Env::new();
    let id = env.load_busybox("busybox:latest");
    let out = env.ok(&["images"]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines[0],
        "REPOSITORY   TAG       IMAGE ID       CREATED       SIZE"
    );
    assert_eq!(lines.len(), 2, "{out}");
    let short = &id[7..19];
    assert!(
        lines[1].starts_with(&format!("busybox      latest    {short}   ")),
        "{out}"
    );
    assert!(lines[1].contains(" years ago   "), "{out}");
    assert!(lines[1].ends_with("MB"), "{out}");
    // Same image through `image ls` and -q / --no-trunc.
    assert_eq!(env.ok(&["image", "ls"]), out);
    assert_eq!(env.ok(&["images", "-q"]), format!("{short}\n"));
    assert_eq!(env.ok(&["images", "-q", "--no-trunc"]), format!("{id}\n"));
    // Loading the same archive again is a no-op that prints the same line.
    let again = env.load_busybox("busybox:latest");
    assert_eq!(again, id);
    assert_eq!(env.ok(&["images", "-q"]).lines().count(), 1);
}

#[test]
fn images_formats_filters_and_order() {
    let env = Env::new();
    let base = env.load_busybox("busybox:latest");
    env.ok(&["tag", "busybox", "busybox:1.36"]);
    env.ok(&["tag", "busybox:latest", "127.0.0.1:5000/library/busybox:v1"]);
    let spec = fixtures::layered_spec("web:v2").unwrap();
    let mut spec = spec;
    spec.config["config"]["Labels"] = serde_json::json!({"app": "web", "tier": "front"});
    let archive = env.path("web.tar");
    let web = fixtures::write_docker_archive(&archive, &[spec])
        .unwrap()
        .remove(0);
    assert_eq!(
        env.ok(&["load", "-i", archive.to_str().unwrap()]),
        "Loaded image: web:v2\n"
    );

    let f = |args: &[&str]| env.ok(args);
    // Newest first, one row per tag, sorted by repository then tag within an image.
    assert_eq!(
        f(&["images", "--format", "{{.Repository}}:{{.Tag}}"]),
        "web:v2\n127.0.0.1:5000/library/busybox:v1\nbusybox:1.36\nbusybox:latest\n"
    );
    assert_eq!(
        f(&["images", "--format", "table {{.Repository}}\\t{{.Tag}}"]),
        "REPOSITORY                       TAG\nweb                              v2\n127.0.0.1:5000/library/busybox   v1\nbusybox                          1.36\nbusybox                          latest\n"
    );
    let json_line = f(&["images", "--format", "{{json .}}", "web"]);
    let v: Value = serde_json::from_str(json_line.trim()).unwrap();
    assert_eq!(v["Repository"], "web");
    assert_eq!(v["ID"], &web[7..19]);
    assert_eq!(v["Containers"], "N/A");
    assert!(v["CreatedAt"]
        .as_str()
        .unwrap()
        .starts_with("2024-02-01 00:00:00 +0000 UTC"));
    let keys: Vec<&String> = v.as_object().unwrap().keys().collect();
    assert_eq!(keys.len(), 11);
    assert_eq!(f(&["images", "--format", "json", "web"]), json_line);

    // Positional reference and reference= globs.
    assert_eq!(
        f(&["images", "--format", "{{.Tag}}", "busybox"]),
        "1.36\nlatest\n"
    );
    assert_eq!(
        f(&["images", "--format", "{{.Tag}}", "busybox:1.36"]),
        "1.36\n"
    );
    assert_eq!(f(&["images", "-q", "busy"]), "");
    assert_eq!(
        f(&[
            "images",
            "--format",
            "{{.Tag}}",
            "-f",
            "reference=*/library/*"
        ]),
        "v1\n"
    );
    assert_eq!(
        f(&[
            "images",
            "--format",
            "{{.Tag}}",
            "-f",
            "reference=busy*:*3*"
        ]),
        "1.36\n"
    );
    // label, before, since.
    assert_eq!(
        f(&[
            "images",
            "--format",
            "{{.Repository}}",
            "-f",
            "label=app=web"
        ]),
        "web\n"
    );
    assert_eq!(
        f(&["images", "--format", "{{.Repository}}", "-f", "label=tier"]),
        "web\n"
    );
    assert_eq!(f(&["images", "-q", "-f", "label=nope"]), "");
    assert_eq!(
        f(&[
            "images",
            "--format",
            "{{.Repository}}",
            "-f",
            "since=busybox"
        ]),
        "web\n"
    );
    assert_eq!(
        ids_of(&f(&["images", "-q", "-f", "before=web:v2"])),
        vec![base[7..19].to_string(); 3]
    );
    // Errors.
    let (code, err) = env.err(&["images", "-f", "dangling=maybe"]);
    assert_eq!(
        (code, err.as_str()),
        (1, "Error: invalid filter 'dangling=maybe'\n")
    );
    let (_, err) = env.err(&["images", "-f", "color=red"]);
    assert_eq!(err, "Error: invalid filter 'color'\n");
    let (_, err) = env.err(&["images", "-f", "dangling"]);
    assert_eq!(err, "Error: bad format of filter (expected name=value)\n");
    let (_, err) = env.err(&["images", "-f", "since=nope"]);
    assert_eq!(err, "Error: No such image: nope:latest\n");
    let (_, err) = env.err(&["images", "--format", "{{.Nope}}"]);
    assert!(err.starts_with("Error: template: :1: executing"), "{err}");
    let (_, err) = env.err(&["images", "--format", "{{.ID"]);
    assert!(err.starts_with("Error: template parsing error"), "{err}");

    // --digests adds a column.
    let out = f(&["images", "--digests", "web"]);
    assert_eq!(
        scrub(out.lines().next().unwrap()),
        "REPOSITORY   TAG       DIGEST    IMAGE ID       CREATED       SIZE"
    );
    assert!(out.lines().nth(1).unwrap().contains("<none>"), "{out}");
}

#[test]
fn dangling_images_and_prune() {
    let env = Env::new();
    let old = env.load_busybox("busybox:latest");
    // A newer image takes the tag: the old one becomes dangling.
    let mut spec = ImageSpec::new(
        &["busybox:latest"],
        vec![fixtures::busybox_layer().unwrap()],
    );
    spec.config["created"] = serde_json::json!("2024-06-01T00:00:00Z");
    let archive = env.path("new.tar");
    let new = fixtures::write_docker_archive(&archive, &[spec])
        .unwrap()
        .remove(0);
    env.ok(&["load", "-i", archive.to_str().unwrap()]);
    assert_ne!(old, new);
    let out = env.ok(&["images"]);
    assert_eq!(out.lines().count(), 3, "{out}");
    assert!(
        out.lines()
            .nth(2)
            .unwrap()
            .starts_with(&format!("<none>       <none>    {}", &old[7..19])),
        "{out}"
    );
    assert_eq!(
        env.ok(&["images", "-q", "-f", "dangling=true"]),
        format!("{}\n", &old[7..19])
    );
    assert_eq!(
        env.ok(&["images", "-q", "-f", "dangling=false"]),
        format!("{}\n", &new[7..19])
    );

    // The prompt with no answer removes nothing.
    let before = env.listing();
    let out = env.ok(&["image", "prune"]);
    assert_eq!(
        out,
        "WARNING! This will remove all dangling images.\nAre you sure you want to continue? [y/N] \n"
    );
    assert_eq!(env.listing(), before);
    // "y" on stdin confirms.
    let o = env.run_stdin(&["image", "prune"], b"y\n");
    assert!(o.status.success());
    let out = String::from_utf8(o.stdout).unwrap();
    assert!(
        out.contains(&format!("Deleted Images:\ndeleted: {old}\n")),
        "{out}"
    );
    // The layer is shared with the new image: nothing reclaimed.
    assert!(out.ends_with("\nTotal reclaimed space: 0B\n"), "{out}");
    assert_eq!(env.ok(&["images", "-q"]), format!("{}\n", &new[7..19]));
    // Nothing left to prune.
    assert_eq!(
        env.ok(&["image", "prune", "-f"]),
        "Total reclaimed space: 0B\n"
    );
    // -a removes tagged images too and reclaims their layers.
    let out = env.ok(&["image", "prune", "-a", "-f"]);
    assert!(
        out.starts_with("Deleted Images:\nuntagged: busybox:latest\ndeleted: "),
        "{out}"
    );
    assert!(!out.ends_with("Total reclaimed space: 0B\n"), "{out}");
    assert_eq!(env.ok(&["images", "-q", "-a"]), "");
    assert!(std::fs::read_dir(env.root.join("layers"))
        .unwrap()
        .next()
        .is_none());
}

#[test]
fn prune_filters() {
    let env = Env::new();
    let old = env.load_busybox("busybox:latest");
    env.ok(&["tag", "busybox", "keep:me"]);
    env.ok(&["rmi", "busybox"]);
    env.ok(&["rmi", "keep:me"]);
    // Untagged by rmi means deleted; make a dangling one by moving a tag instead.
    assert_eq!(env.ok(&["images", "-a", "-q"]), "");
    env.load_busybox("busybox:latest");
    let mut spec = ImageSpec::new(
        &["busybox:latest"],
        vec![fixtures::busybox_layer().unwrap()],
    );
    spec.config["created"] = serde_json::json!("2024-06-01T00:00:00Z");
    spec.config["config"]["Labels"] = serde_json::json!({"keep": "yes"});
    let archive = env.path("new.tar");
    fixtures::write_docker_archive(&archive, &[spec]).unwrap();
    env.ok(&["load", "-i", archive.to_str().unwrap()]);
    // until= older than the dangling image: nothing pruned.
    let out = env.ok(&[
        "image",
        "prune",
        "-f",
        "--filter",
        "until=2023-01-01T00:00:00Z",
    ]);
    assert_eq!(out, "Total reclaimed space: 0B\n");
    // label!= keeps the labelled (tagged) one with -a, prunes the dangling one.
    let out = env.ok(&[
        "image",
        "prune",
        "-a",
        "-f",
        "--filter",
        "label!=keep=yes",
        "--filter",
        "until=24h",
    ]);
    assert!(
        out.starts_with(&format!("Deleted Images:\ndeleted: {old}\n")),
        "{out}"
    );
    assert_eq!(
        env.ok(&["images", "--format", "{{.Repository}}"]),
        "busybox\n"
    );
    let (_, err) = env.err(&["image", "prune", "-f", "--filter", "color=red"]);
    assert_eq!(err, "Error: invalid filter 'color'\n");
}

#[test]
fn tag_and_rmi_rules() {
    let env = Env::new();
    let id = env.load_busybox("busybox:latest");
    let short = &id[7..19];
    env.ok(&["tag", short, "mine:v1"]);
    env.ok(&["tag", "busybox", "other/name:v2"]);
    // Tag errors.
    let (code, err) = env.err(&["tag", "nope", "x"]);
    assert_eq!(
        (code, err.as_str()),
        (1, "Error: No such image: nope:latest\n")
    );
    let (_, err) = env.err(&["tag", "busybox", "Bad"]);
    assert_eq!(
        err,
        "Error: invalid reference format: repository name (library/Bad) must be lowercase\n"
    );
    let (_, err) = env.err(&["tag", "busybox", "a:b:c"]);
    assert_eq!(err, "Error: invalid reference format\n");
    let hex = "a".repeat(64);
    let (_, err) = env.err(&["tag", "busybox", &hex]);
    assert_eq!(
        err,
        format!(
            "Error: invalid repository name ({hex}), cannot specify 64-byte hexadecimal strings\n"
        )
    );

    // By ID with several tags: conflict unless forced.
    let (code, err) = env.err(&["rmi", short]);
    assert_eq!(code, 1);
    assert_eq!(
        err,
        format!("Error: conflict: unable to delete {short} (must be forced) - image is referenced in multiple repositories\n")
    );
    // By tag: only untags while other tags remain.
    assert_eq!(env.ok(&["rmi", "mine:v1"]), "Untagged: mine:v1\n");
    assert_eq!(
        env.ok(&["image", "rm", "other/name:v2"]),
        "Untagged: other/name:v2\n"
    );
    // Unknown images fail independently; the others are still removed.
    let before_layers = std::fs::read_dir(env.root.join("layers")).unwrap().count();
    assert_eq!(before_layers, 1);
    let o = env.run(&["rmi", "nope", "busybox"]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&o.stderr),
        "Error: No such image: nope:latest\n"
    );
    let out = String::from_utf8(o.stdout).unwrap();
    let chain = fixtures::sha256(&fixtures::busybox_layer().unwrap());
    assert_eq!(
        out,
        format!("Untagged: busybox:latest\nDeleted: {id}\nDeleted: {chain}\n")
    );
    assert!(std::fs::read_dir(env.root.join("layers"))
        .unwrap()
        .next()
        .is_none());
    assert_eq!(env.ok(&["images", "-a", "-q"]), "");
}

#[test]
fn rmi_keeps_shared_layers_and_forces() {
    let env = Env::new();
    let base = env.load_busybox("busybox:latest");
    let spec = fixtures::layered_spec("web:v2").unwrap();
    let archive = env.path("web.tar");
    let web = fixtures::write_docker_archive(&archive, std::slice::from_ref(&spec))
        .unwrap()
        .remove(0);
    env.ok(&["load", "-i", archive.to_str().unwrap()]);
    env.ok(&["tag", "web:v2", "web:v3"]);
    let out = env.ok(&["rmi", "-f", &web[7..15]]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "Untagged: web:v2");
    assert_eq!(lines[1], "Untagged: web:v3");
    assert_eq!(lines[2], format!("Deleted: {web}"));
    // Only the top layer is released: the base is shared with busybox.
    assert_eq!(lines.len(), 4, "{out}");
    assert_eq!(
        std::fs::read_dir(env.root.join("layers")).unwrap().count(),
        1
    );
    assert_eq!(env.ok(&["images", "-q", "--no-trunc"]), format!("{base}\n"));
    // The busybox image still works with its layer.
    let v: Value = serde_json::from_str(&env.ok(&["image", "inspect", "busybox"])).unwrap();
    let upper = v[0]["GraphDriver"]["Data"]["UpperDir"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(std::path::Path::new(&upper).join("bin/busybox").is_file());
}

#[test]
fn inspect_is_docker_shaped() {
    let env = Env::new();
    let id = env.load_busybox("busybox:latest");
    let out = env.ok(&["inspect", "busybox"]);
    assert!(
        out.starts_with("[\n    {\n        \"Id\": \"sha256:"),
        "{out}"
    );
    let v: Value = serde_json::from_str(&out).unwrap();
    let o = &v[0];
    assert_eq!(o["Id"], id.as_str());
    assert_eq!(o["RepoTags"], serde_json::json!(["busybox:latest"]));
    assert_eq!(o["Config"]["Cmd"], serde_json::json!(["sh"]));
    assert_eq!(o["Architecture"], "amd64");
    assert_eq!(o["Os"], "linux");
    assert_eq!(o["RootFS"]["Type"], "layers");
    assert_eq!(o["RootFS"]["Layers"].as_array().unwrap().len(), 1);
    assert!(o["Size"].as_u64().unwrap() > 1_000_000);
    let keys: Vec<&str> = out
        .lines()
        .filter(|l| l.starts_with("        \""))
        .map(|l| l.trim().split('"').nth(1).unwrap())
        .collect();
    assert_eq!(
        keys,
        [
            "Id",
            "RepoTags",
            "RepoDigests",
            "Parent",
            "Comment",
            "Created",
            "DockerVersion",
            "Author",
            "Config",
            "Architecture",
            "Os",
            "Size",
            "GraphDriver",
            "RootFS",
            "Metadata"
        ]
    );
    assert_eq!(
        env.ok(&[
            "image",
            "inspect",
            "-f",
            "{{.Id}} {{.Config.Cmd}}",
            "busybox"
        ]),
        format!("{id} [sh]\n")
    );
    assert_eq!(
        env.ok(&["inspect", "--format", "{{json .RepoTags}}", &id[7..20]]),
        "[\"busybox:latest\"]\n"
    );
    // Misses: one error line each, exit 1, found objects still printed.
    let o = env.run(&["image", "inspect", "busybox", "nope"]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&o.stderr),
        "Error: No such image: nope\n"
    );
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 1);
    let o = env.run(&["inspect", "nope"]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&o.stderr),
        "Error: No such object: nope\n"
    );
    assert_eq!(String::from_utf8_lossy(&o.stdout), "[]\n");
}

#[test]
fn history_rows_and_flags() {
    let env = Env::new();
    let mut spec = fixtures::layered_spec("web:v2").unwrap();
    spec.config["history"] = serde_json::json!([
        {"created": "2024-01-01T00:00:00Z", "created_by": "/bin/sh -c #(nop) ADD file:0123456789abcdef0123456789abcdef in / "},
        {"created": "2024-01-01T00:00:01Z", "created_by": "/bin/sh -c #(nop)  CMD [\"sh\"]", "empty_layer": true},
        {"created": "2024-02-01T00:00:00Z", "created_by": "/bin/sh -c echo\tv2", "comment": "top"}
    ]);
    let archive = env.path("web.tar");
    let id = fixtures::write_docker_archive(&archive, &[spec])
        .unwrap()
        .remove(0);
    env.ok(&["load", "-i", archive.to_str().unwrap()]);
    let out = env.ok(&["history", "web:v2"]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 4, "{out}");
    assert!(
        lines[0].starts_with("IMAGE          CREATED       CREATED BY"),
        "{out}"
    );
    assert!(lines[1].starts_with(&id[7..19]), "{out}");
    assert!(lines[1].contains("/bin/sh -c echo v2"), "{out}");
    assert!(lines[1].ends_with("top"), "{out}");
    assert!(lines[2].starts_with("<missing>  "), "{out}");
    assert!(lines[2].contains(" 0B "), "{out}");
    assert!(
        lines[3].contains("/bin/sh -c #(nop) ADD file:0123456789abcdef0…"),
        "{out}"
    );
    let raw = env.ok(&[
        "history",
        "-H=false",
        "--format",
        "{{.CreatedSince}}|{{.Size}}",
        "web:v2",
    ]);
    let raw: Vec<&str> = raw.lines().collect();
    assert_eq!(raw[1], "2024-01-01T00:00:01Z|0");
    assert!(raw[0].starts_with("2024-02-01T00:00:00Z|"), "{raw:?}");
    assert!(
        raw[2]
            .parse::<String>()
            .unwrap()
            .split('|')
            .nth(1)
            .unwrap()
            .parse::<u64>()
            .unwrap()
            > 1_000_000
    );
    assert_eq!(
        env.ok(&["history", "-q", "web:v2"]),
        format!("{}\n<missing>\n<missing>\n", &id[7..19])
    );
    let nt = env.ok(&[
        "history",
        "--no-trunc",
        "--format",
        "{{.ID}} {{.CreatedBy}}",
        "web:v2",
    ]);
    assert!(
        nt.contains("ADD file:0123456789abcdef0123456789abcdef in / "),
        "{nt}"
    );
    assert!(nt.starts_with(&id), "{nt}");
    let (code, err) = env.err(&["history", "nope"]);
    assert_eq!(
        (code, err.as_str()),
        (1, "Error: No such image: nope:latest\n")
    );
}

#[test]
fn import_rootfs_with_changes() {
    let env = Env::new();
    let rootfs = env.path("rootfs");
    std::fs::create_dir(&rootfs).unwrap();
    fixtures::busybox_rootfs(&rootfs).unwrap();
    let tar = fixtures::gzip(&fixtures::tar_of_dir(&rootfs).unwrap());
    let file = env.path("rootfs.tar.gz");
    std::fs::write(&file, &tar).unwrap();
    let out = env.ok(&[
        "import",
        "-c",
        "CMD [\"httpd\", \"-f\"]",
        "-c",
        "ENV A=b",
        "-c",
        "EXPOSE 80",
        "-m",
        "my import",
        file.to_str().unwrap(),
        "imported:v1",
    ]);
    assert!(out.starts_with("sha256:") && out.len() == 72, "{out:?}");
    let v: Value = serde_json::from_str(&env.ok(&["inspect", "imported:v1"])).unwrap();
    assert_eq!(v[0]["Id"], out.trim());
    assert_eq!(v[0]["Config"]["Cmd"], serde_json::json!(["httpd", "-f"]));
    assert_eq!(v[0]["Config"]["Env"], serde_json::json!(["A=b"]));
    assert_eq!(v[0]["Comment"], "my import");
    assert!(v[0]["Config"]["ExposedPorts"]["80/tcp"].is_object());
    assert_eq!(
        env.ok(&["history", "--format", "{{.Comment}}", "imported:v1"]),
        "my import\n"
    );
    // From stdin, untagged, default message.
    let o = env.run_stdin(&["import", "-"], &tar);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let id2 = String::from_utf8(o.stdout).unwrap();
    assert_eq!(
        env.ok(&["history", "--format", "{{.Comment}}", id2.trim()]),
        "Imported from -\n"
    );
    // Go's JSON encoder escapes <, > and & in inspect output; templates' json does not.
    let o = env.run_stdin(
        &["import", "-c", "CMD echo a && echo <b>", "-", "amp:v1"],
        &tar,
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let raw = env.ok(&["inspect", "amp:v1"]);
    assert!(
        raw.contains(r#""echo a \u0026\u0026 echo \u003cb\u003e""#),
        "{raw}"
    );
    assert_eq!(
        env.ok(&["inspect", "-f", "{{json .Config.Cmd}}", "amp:v1"]),
        "[\"/bin/sh\",\"-c\",\"echo a && echo <b>\"]\n"
    );
    // Bad change: nothing stored.
    let before = env.listing();
    let (_, err) = env.err(&["import", "-c", "FROM x", file.to_str().unwrap()]);
    assert_eq!(err, "Error: FROM is not a valid change command\n");
    let (_, err) = env.err(&["import", file.to_str().unwrap(), "Bad:tag"]);
    assert!(err.starts_with("Error: invalid reference format"), "{err}");
    assert_eq!(env.listing(), before);
}

#[test]
fn system_df_counts_shared_layers_once() {
    let env = Env::new();
    env.load_busybox("busybox:latest");
    let spec = fixtures::layered_spec("web:v2").unwrap();
    let archive = env.path("web.tar");
    fixtures::write_docker_archive(&archive, &[spec]).unwrap();
    env.ok(&["load", "-i", archive.to_str().unwrap()]);
    let out = env.ok(&["system", "df"]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines[0],
        "TYPE            TOTAL     ACTIVE    SIZE      RECLAIMABLE"
    );
    assert!(
        lines[1].starts_with("Images          2         0         "),
        "{out}"
    );
    assert!(lines[1].ends_with("(100%)"), "{out}");
    assert!(
        lines[2].starts_with("Containers      0         0         0B        0B"),
        "{out}"
    );
    assert_eq!(lines.len(), 5);
    // Total = both layers once; each image's shared size = the busybox layer.
    let f = env.ok(&["system", "df", "--format", "{{.Type}}={{.Size}}"]);
    assert!(f.starts_with("Images="), "{f}");
    let v = env.ok(&["system", "df", "-v"]);
    assert!(v.starts_with("Images space usage:\n\nREPOSITORY   TAG       IMAGE ID       CREATED       SIZE      SHARED SIZE   UNIQUE SIZE   CONTAINERS\n"), "{v}");
    assert!(v.contains("\nContainers space usage:\n"), "{v}");
    assert!(v.contains("\nBuild cache usage: 0B\n"), "{v}");
}

#[test]
fn hostile_layer_tar_cli() {
    let env = Env::new();
    env.ok(&["images"]);
    let mut l = LayerTar::new();
    l.symlink("escape", "/tmp")
        .file("escape/strata-pwned", b"x", 0o644);
    let spec = ImageSpec::new(&["evil:latest"], vec![l.into_bytes()]);
    let archive = env.path("evil.tar");
    fixtures::write_docker_archive(&archive, &[spec]).unwrap();
    let before = env.listing();
    let (code, err) = env.err(&["load", "-i", archive.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("refusing unsafe archive entry"), "{err}");
    assert_eq!(env.listing(), before);
    assert!(!std::path::Path::new("/tmp/strata-pwned").exists());
}

#[test]
fn concurrent_commands_never_lose_updates() {
    let env = Env::new();
    let archive = env.path("bb.tar");
    let id = fixtures::busybox_archive(&archive, "busybox:latest").unwrap();
    // Two loads of the same archive at once: both succeed, one image, one layer.
    let a = env
        .cmd(&["load", "-i", archive.to_str().unwrap()])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let b = env
        .cmd(&["load", "-i", archive.to_str().unwrap()])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    for c in [a, b] {
        let o = c.wait_with_output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    assert_eq!(env.ok(&["images", "-q", "--no-trunc"]), format!("{id}\n"));
    assert_eq!(
        std::fs::read_dir(env.root.join("layers")).unwrap().count(),
        1
    );
    // Twelve tag commands at once: all twelve tags exist afterwards.
    let children: Vec<_> = (0..12)
        .map(|i| {
            env.cmd(&["tag", "busybox", &format!("t{i}:v")])
                .spawn()
                .unwrap()
        })
        .collect();
    for mut c in children {
        assert!(c.wait().unwrap().success());
    }
    let tags = env.ok(&["images", "--format", "{{.Repository}}"]);
    assert_eq!(tags.lines().count(), 13, "{tags}");
}

#[test]
fn intermediate_images_history_lineage_and_parent_pruning() {
    use strata_runtime::reference::Reference;
    use strata_runtime::store::Store;
    let env = Env::new();
    let store = Store::open(&env.root).unwrap();
    let base_layer = fixtures::busybox_layer().unwrap();
    let mut top = LayerTar::new();
    top.file("etc/committed", b"yes\n", 0o644);
    let top = top.into_bytes();
    store.add_layer(&base_layer[..], None, None).unwrap();
    let base_chain = strata_runtime::store::ChainId::parse(&fixtures::sha256(&base_layer)).unwrap();
    store.add_layer(&top[..], Some(&base_chain), None).unwrap();
    let mut base = ImageSpec::new(&[], vec![base_layer.clone()]);
    base.config["history"] = serde_json::json!([
        {"created": "2024-01-01T00:00:00Z", "created_by": "ADD rootfs"},
        {"created": "2024-01-01T00:00:01Z", "created_by": "CMD [\"sh\"]", "empty_layer": true}
    ]);
    let base_id = store.add_image(&base.config_bytes(), &[], None).unwrap();
    let mut child = ImageSpec::new(&[], vec![base_layer, top]);
    child.config["created"] = serde_json::json!("2024-03-01T00:00:00Z");
    child.config["history"] = serde_json::json!([
        {"created": "2024-01-01T00:00:00Z", "created_by": "ADD rootfs"},
        {"created": "2024-01-01T00:00:01Z", "created_by": "CMD [\"sh\"]", "empty_layer": true},
        {"created": "2024-03-01T00:00:00Z", "created_by": "sh", "comment": "committed"}
    ]);
    let r = Reference::parse_with_default_tag("app:v1").unwrap();
    let child_id = store
        .add_image(&child.config_bytes(), &[r], Some(&base_id))
        .unwrap();
    // Intermediate (untagged parent) hidden without -a.
    assert_eq!(env.ok(&["images", "-q"]), format!("{}\n", child_id.short()));
    assert_eq!(
        env.ok(&[
            "images",
            "-a",
            "--format",
            "{{.Repository}}:{{.Tag}} {{.ID}}"
        ]),
        format!(
            "app:v1 {}\n<none>:<none> {}\n",
            child_id.short(),
            base_id.short()
        )
    );
    assert_eq!(env.ok(&["images", "-q", "-f", "dangling=true"]), "");
    // History: the child, then its parent, then <missing>.
    assert_eq!(
        env.ok(&[
            "history",
            "--format",
            "{{.ID}} {{.CreatedBy}} {{.Comment}}",
            "app:v1"
        ]),
        format!(
            "{} sh committed\n{} CMD [\"sh\"] \n<missing> ADD rootfs \n",
            child_id.short(),
            base_id.short()
        )
    );
    let v: Value = serde_json::from_str(&env.ok(&["inspect", "app:v1"])).unwrap();
    assert_eq!(v[0]["Parent"], base_id.as_str());
    // The parent cannot go while it has a child.
    let (_, err) = env.err(&["rmi", base_id.short()]);
    assert_eq!(
        err,
        format!("Error: conflict: unable to delete {} (cannot be forced) - image has dependent child images\n", base_id.short())
    );
    // Removing the child prunes the untagged parent too (unless --no-prune).
    let out = env.ok(&["rmi", "app:v1"]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "Untagged: app:v1");
    assert_eq!(lines[1], format!("Deleted: {child_id}"));
    assert!(
        lines.contains(&format!("Deleted: {base_id}").as_str()),
        "{out}"
    );
    assert_eq!(env.ok(&["images", "-a", "-q"]), "");
    assert!(std::fs::read_dir(env.root.join("layers"))
        .unwrap()
        .next()
        .is_none());
}

#[test]
fn digest_references() {
    use strata_runtime::reference::Reference;
    use strata_runtime::store::{Digest, ImageId, Store};
    let env = Env::new();
    let id = env.load_busybox("busybox:latest");
    let store = Store::open(&env.root).unwrap();
    let image = ImageId::parse(&id).unwrap();
    let manifest = Digest::of_bytes(b"a manifest");
    let by_digest = Reference::parse("busybox")
        .unwrap()
        .with_digest(manifest.clone());
    store.tag(&image, &by_digest).unwrap();
    let other = Reference::parse("127.0.0.1:5000/bb")
        .unwrap()
        .with_digest(manifest.clone());
    store.tag(&image, &other).unwrap();
    // --digests shows them; without it, digest-only repositories get a <none> tag row.
    assert_eq!(
        env.ok(&[
            "images",
            "--digests",
            "--format",
            "{{.Repository}} {{.Tag}} {{.Digest}}"
        ]),
        format!("busybox latest {manifest}\n127.0.0.1:5000/bb <none> {manifest}\n")
    );
    assert_eq!(
        env.ok(&["images", "--format", "{{.Repository}}:{{.Tag}}"]),
        "busybox:latest\n127.0.0.1:5000/bb:<none>\n"
    );
    let v: Value = serde_json::from_str(&env.ok(&["inspect", "busybox"])).unwrap();
    assert_eq!(
        v[0]["RepoDigests"],
        serde_json::json!([
            format!("127.0.0.1:5000/bb@{manifest}"),
            format!("busybox@{manifest}")
        ])
    );
    // Resolve and remove by name@digest.
    let r = format!("127.0.0.1:5000/bb@{manifest}");
    assert_eq!(env.ok(&["inspect", "-f", "{{.Id}}", &r]), format!("{id}\n"));
    assert_eq!(env.ok(&["rmi", &r]), format!("Untagged: {r}\n"));
    // The last tag of a repository takes that repository's digest references with it.
    let out = env.ok(&["rmi", "busybox:latest"]);
    assert!(
        out.starts_with(&format!(
            "Untagged: busybox:latest\nUntagged: busybox@{manifest}\nDeleted: {id}\n"
        )),
        "{out}"
    );
}

/// Usage errors as Docker prints them; the hint names the verb that was parsed, never the value
/// of a global option given before it (`--root DIR` comes first here).
#[test]
fn usage_errors_name_the_verb_and_list_what_is_missing() {
    let env = Env::new();
    let (code, err) = env.err(&["run"]);
    assert_eq!(code, 1);
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines[0], "\"strata run\" requires at least 1 argument.");
    assert_eq!(lines[1], "See 'strata run --help'.");
    assert!(
        lines[3].starts_with("Usage:  strata run [OPTIONS] <IMAGE>"),
        "{err}"
    );
    assert_eq!(lines[5], "Create and run a new container from an image");
    let (code, err) = env.err(&["tag", "a"]);
    assert_eq!(code, 1);
    assert!(
        err.starts_with("\"strata tag\" requires at least 2 arguments.\n"),
        "{err}"
    );
    let (code, err) = env.err(&["image", "ls", "--bogus"]);
    assert_eq!(
        (code, err.as_str()),
        (
            125,
            "unknown flag: --bogus\nSee 'strata image ls --help'.\n"
        )
    );
    let (code, err) = env.err(&["frobnicate"]);
    assert_eq!(
        (code, err.as_str()),
        (
            1,
            "strata: 'frobnicate' is not a strata command.\nSee 'strata --help'\n"
        )
    );
}
