//! Image verbs that depend on containers: `rmi` conflicts, `prune`, `system df`.

use strata_testkit::container::Strata;
use strata_testkit::fixtures;

fn setup() -> (Strata, String) {
    let s = Strata::new(env!("CARGO_BIN_EXE_strata")).with_driver("vfs");
    let archive = s.root_path().parent().unwrap().join(format!(
        "strata-images-containers-{}.tar",
        std::process::id()
    ));
    let id = fixtures::busybox_archive(&archive, "busybox:latest").unwrap();
    s.ok(&["load", "-i", archive.to_str().unwrap()]);
    let _ = std::fs::remove_file(&archive);
    (s, id)
}

#[test]
fn rmi_conflicts_with_containers() {
    let (s, id) = setup();
    let short = &id[7..19];
    let cid = s
        .ok(&["run", "-d", "busybox", "sleep", "60"])
        .trim()
        .to_string();
    let r = s.run(&["rmi", "busybox"]);
    assert_eq!(r.code, Some(1));
    assert_eq!(
        r.stderr,
        format!("Error: conflict: unable to remove repository reference \"busybox\" (must force) - container {} is using its referenced image {short}\n", &cid[..12])
    );
    let r = s.run(&["rmi", "-f", short]);
    assert_eq!(r.code, Some(1));
    assert_eq!(
        r.stderr,
        format!("Error: conflict: unable to delete {short} (cannot be forced) - image is being used by running container {}\n", &cid[..12])
    );
    let df = s.ok(&["system", "df"]);
    let images_row = df.lines().nth(1).unwrap();
    assert!(
        images_row.starts_with("Images          1         1         "),
        "{df}"
    );
    assert!(images_row.ends_with("0B (0%)"), "{df}");
    assert!(
        df.lines()
            .nth(2)
            .unwrap()
            .starts_with("Containers      1         1         "),
        "{df}"
    );
    // Prune -a keeps images in use.
    assert_eq!(
        s.ok(&["image", "prune", "-a", "-f"]),
        "Total reclaimed space: 0B\n"
    );

    s.ok(&["stop", "-t", "1", &cid]);
    let r = s.run(&["rmi", short]);
    assert_eq!(
        r.stderr,
        format!("Error: conflict: unable to delete {short} (must be forced) - image is being used by stopped container {}\n", &cid[..12])
    );
    // Forced: untagged, kept (dangling) for the stopped container.
    assert_eq!(
        s.ok(&["rmi", "-f", "busybox"]),
        "Untagged: busybox:latest\n"
    );
    assert_eq!(
        s.ok(&["images", "-q", "-a", "--no-trunc"]),
        format!("{id}\n")
    );
    s.ok(&["rm", &cid]);
    let out = s.ok(&["image", "prune", "-f"]);
    assert!(
        out.starts_with(&format!("Deleted Images:\ndeleted: {id}\ndeleted: sha256:")),
        "{out}"
    );
    assert_eq!(s.ok(&["images", "-q", "-a"]), "");
}
