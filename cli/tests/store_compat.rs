//! A store written by the release before typed identities (`cli/tests/data/store-v0.1`, made
//! with that release's binary: one imported image, three created containers on the `fuse`,
//! `vfs` and `fuse-overlayfs:PROGRAM` drivers, one with `--runtime runc`) is listed, inspected,
//! renamed (a record rewrite, byte-compatible) and removed by this release.

mod images_common;

use std::path::Path;

use images_common::Env;

const IMAGE: &str = "sha256:b18ce359b6777a7c19cb576d78a284d9ef122d6eb0f226a0bd224833e83bdc40";
const FUSE: &str = "351fc2fa71892a02cee8134ed177730f20701dafd7dc7ec48fea6a902904ce3f";
const VFS: &str = "01f88d36819d926ebadc1ad77456ebd19b9d47fe07fc2a940d87494b16756813";
const MP: &str = "1ead24b72eabefc5b6d59260c938b0ef90c8ec0d7de7291ac5c94cc4c98d6ecb";

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dst = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_tree(&e.path(), &dst);
        } else if e.file_name() != "README.md" {
            std::fs::copy(e.path(), &dst).unwrap();
        }
    }
}

#[test]
fn previous_release_store_lists_inspects_and_removes() {
    let env = Env::new();
    copy_tree(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/store-v0.1"),
        &env.root,
    );

    assert_eq!(
        env.ok(&["ps", "-a", "--no-trunc", "--format", "{{.ID}} {{.Names}}"]),
        format!("{MP} fix-mp\n{VFS} fix-vfs\n{FUSE} fix-fuse\n")
    );
    let shown = |name: &str| {
        env.ok(&[
            "inspect",
            "--format",
            "{{.Id}} {{.Driver}} {{.GraphDriver.Name}} {{.HostConfig.Runtime}} {{.Image}} {{.Config.Image}}",
            name,
        ])
    };
    assert_eq!(
        shown("fix-fuse"),
        format!("{FUSE} fuse fuse builtin {IMAGE} fixture:v1\n")
    );
    assert_eq!(
        shown("fix-vfs"),
        format!("{VFS} vfs vfs builtin {IMAGE} fixture:v1\n")
    );
    assert_eq!(
        shown(&MP[..12]),
        format!("{MP} fuse-overlayfs fuse-overlayfs runc {IMAGE} fixture:v1\n")
    );
    assert_eq!(
        env.ok(&[
            "image",
            "ls",
            "--no-trunc",
            "--format",
            "{{.Repository}}:{{.Tag}} {{.ID}}"
        ]),
        format!("fixture:v1 {IMAGE}\n")
    );
    assert_eq!(
        env.ok(&[
            "ps",
            "-a",
            "-q",
            "--filter",
            &format!("ancestor={}", &IMAGE[7..19])
        ])
        .lines()
        .count(),
        3
    );
    // The containers keep the image: rmi refuses with Docker's conflict text.
    let (code, err) = env.err(&["rmi", "fixture:v1"]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("conflict: unable to remove repository reference \"fixture:v1\" (must force) - container"),
        "{err}"
    );

    // A rename rewrites config.json: the new release writes the old bytes, only the name changed.
    let config = env.root.join("containers").join(FUSE).join("config.json");
    let before = std::fs::read_to_string(&config).unwrap();
    env.ok(&["rename", "fix-fuse", "fix-renamed"]);
    let after = std::fs::read_to_string(&config).unwrap();
    let expected = before
        .trim_end()
        .replace("\"name\": \"fix-fuse\",", "\"name\": \"fix-renamed\",");
    assert_ne!(expected, before.trim_end());
    assert_eq!(after.trim_end(), expected);
    assert_eq!(after.len(), before.len());

    assert_eq!(
        env.ok(&["rm", "fix-renamed", &VFS[..12], "fix-mp"]),
        format!("fix-renamed\n{}\nfix-mp\n", &VFS[..12])
    );
    assert_eq!(env.ok(&["ps", "-a", "-q"]), "");
    assert_eq!(
        env.ok(&["rmi", "fixture:v1"]),
        format!(
            "Untagged: fixture:v1\nDeleted: {IMAGE}\nDeleted: sha256:3a050dd4fc8461d419b55deef8141684be750ad25acdd8535ff33885a77fce60\n"
        )
    );
    assert_eq!(env.ok(&["images", "-a", "-q"]), "");
    assert!(std::fs::read_dir(env.root.join("layers"))
        .unwrap()
        .next()
        .is_none());
    assert!(std::fs::read_dir(env.root.join("blobs/sha256"))
        .unwrap()
        .next()
        .is_none());
}
