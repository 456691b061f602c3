//! Volumes end to end: `volume create|ls|inspect|rm|prune`, `-v NAME:/path` (created on first
//! use, filled from the image, `nocopy`), anonymous volumes from the image's `VOLUME`,
//! `--mount type=volume|bind|tmpfs`, `rm -v`, `system prune --volumes`; volumes survive `rm`.

mod containers_common;

use containers_common::{busybox_rm, default_driver, setup};

#[test]
fn volumes_lifecycle() {
    let s = setup(&default_driver());
    // An image with content at /data, declared a VOLUME.
    s.ok(&[
        "run",
        "--name",
        "c0",
        "busybox",
        "sh",
        "-c",
        "mkdir /data && echo seed > /data/seed",
    ]);
    s.ok(&["commit", "-c", "VOLUME /data", "c0", "seeded"]);
    s.ok(&["rm", "c0"]);

    assert_eq!(s.ok(&["volume", "create", "made"]), "made\n");
    assert_eq!(
        s.ok(&["volume", "ls"]),
        "DRIVER    VOLUME NAME\nlocal     made\n"
    );
    let r = s.run(&["volume", "create", "bad/name"]);
    assert_eq!(r.code, Some(1));
    assert!(
        r.stderr
            .contains("includes invalid characters for a local volume name"),
        "{r:?}"
    );
    let mp = s.ok(&["volume", "inspect", "-f", "{{.Mountpoint}}", "made"]);
    assert_eq!(
        mp.trim(),
        s.root_path().join("volumes/made/_data").to_str().unwrap()
    );

    // A named volume is created on first use and filled with the image's content there.
    let out = s.ok(&[
        "run",
        "--name",
        "ca",
        "-v",
        "v1:/data",
        "seeded",
        "sh",
        "-c",
        "cat /data/seed; echo more > /data/more",
    ]);
    assert_eq!(out, "seed\n");
    s.ok(&["rm", "ca"]);
    // It survives the container, and shows in another image that has no /data.
    assert_eq!(
        s.ok(&[
            "run",
            "--rm",
            "-v",
            "v1:/data",
            "busybox",
            "cat",
            "/data/more"
        ]),
        "more\n"
    );
    // nocopy: left empty.
    assert_eq!(
        s.ok(&[
            "run",
            "--rm",
            "-v",
            "v2:/data:nocopy",
            "seeded",
            "ls",
            "/data"
        ]),
        ""
    );
    // --mount type=volume, read-only.
    let r = s.run(&busybox_rm(
        &["--mount", "type=volume,source=v1,target=/data,readonly"],
        &["sh", "-c", "cat /data/seed && touch /data/x"],
    ));
    assert_eq!(r.stdout, "seed\n");
    assert_ne!(r.code, Some(0), "read-only: {r:?}");
    // --mount type=tmpfs and type=bind.
    let out = s.ok(&busybox_rm(
        &["--mount", "type=tmpfs,target=/scratch"],
        &["sh", "-c", "grep ' /scratch ' /proc/mounts"],
    ));
    assert!(out.contains("tmpfs"), "{out}");
    let host = tempfile::tempdir().unwrap();
    std::fs::write(host.path().join("f"), "bound\n").unwrap();
    let spec = format!("type=bind,source={},target=/h", host.path().display());
    assert_eq!(
        s.ok(&["run", "--rm", "--mount", &spec, "busybox", "cat", "/h/f"]),
        "bound\n"
    );
    let r = s.run(&busybox_rm(&["--mount", "type=nope,target=/x"], &["true"]));
    assert_eq!(r.code, Some(125));
    assert!(r.stderr.contains("invalid mount type 'nope'"), "{r:?}");

    // Anonymous volume from the image's VOLUME; `rm -v` removes it.
    s.ok(&["run", "--name", "cb", "seeded", "cat", "/data/seed"]);
    let anon: Vec<String> = s
        .ok(&["volume", "ls", "-q"])
        .lines()
        .filter(|n| n.len() == 64)
        .map(str::to_string)
        .collect();
    assert_eq!(anon.len(), 1, "{anon:?}");
    // In use: refused.
    let r = s.run(&["volume", "rm", &anon[0]]);
    assert_eq!(r.code, Some(1));
    assert!(r.stderr.contains("volume is in use"), "{r:?}");
    // Filters: in use or not (a stopped container still uses its volume), name, label.
    assert_eq!(
        s.ok(&["volume", "ls", "-q", "-f", "dangling=false"]),
        format!("{}\n", anon[0])
    );
    let free = s.ok(&["volume", "ls", "-q", "-f", "dangling=true"]);
    assert!(
        free.contains("made\n") && !free.contains(&anon[0]),
        "{free}"
    );
    assert_eq!(s.ok(&["volume", "ls", "-q", "-f", "name=mad"]), "made\n");
    s.ok(&["volume", "create", "--label", "tier=db", "labelled"]);
    assert_eq!(
        s.ok(&[
            "volume",
            "ls",
            "-q",
            "-f",
            "label=tier=db",
            "-f",
            "label=tier"
        ]),
        "labelled\n"
    );
    s.ok(&["volume", "rm", "labelled"]);
    let r = s.run(&["volume", "ls", "-f", "color=red"]);
    assert_eq!(r.stderr, "Error: invalid filter 'color'\n");
    s.ok(&["rm", "-v", "cb"]);
    assert!(!s.ok(&["volume", "ls", "-q"]).contains(&anon[0]));

    // `--rm` takes its anonymous volume with it.
    s.ok(&["run", "--rm", "seeded", "true"]);
    assert_eq!(
        s.ok(&["volume", "ls", "-q"])
            .lines()
            .filter(|n| n.len() == 64)
            .count(),
        0
    );
    // A second anonymous volume, left behind by `rm` without -v: `system prune --volumes` takes it.
    s.ok(&["run", "--name", "cc", "seeded", "true"]);
    s.ok(&["rm", "cc"]);
    assert_eq!(
        s.ok(&["volume", "ls", "-q"])
            .lines()
            .filter(|n| n.len() == 64)
            .count(),
        1
    );
    let out = s.ok(&["system", "prune", "-f", "--volumes"]);
    assert!(out.contains("Deleted Volumes:"), "{out}");
    assert_eq!(s.ok(&["volume", "ls", "-q"]), "made\nv1\nv2\n");
    // volume prune -a removes unused named volumes; rm of a missing one is Docker's error.
    let out = s.ok(&["volume", "prune", "-a", "-f"]);
    assert!(out.starts_with("Deleted Volumes:\nmade\nv1\nv2\n"), "{out}");
    let r = s.run(&["volume", "rm", "made"]);
    assert_eq!(r.stderr, "Error: get made: no such volume\n");
}

/// `--volumes-from CONTAINER[:ro|:rw]`: another container's volumes at the same paths (its
/// anonymous and named volumes alike), read-only on request, overridden by the container's own
/// `-v`; an anonymous volume outlives its owner's `rm -v` while another container uses it, the
/// user of a copy never removes it, and `volume prune` reclaims it once unused.
#[test]
fn volumes_from_another_container() {
    let s = setup(&default_driver());
    s.ok(&[
        "run",
        "--name",
        "data",
        "-v",
        "/data",
        "-v",
        "named:/named",
        "busybox",
        "sh",
        "-c",
        "echo one > /data/f; echo two > /named/g",
    ]);
    let vols = s.ok(&["volume", "ls", "-q"]);
    let anon = vols
        .lines()
        .find(|v| *v != "named")
        .unwrap_or_default()
        .to_string();
    assert_eq!(anon.len(), 64, "{vols:?}");
    assert_eq!(
        s.ok(&busybox_rm(
            &["--volumes-from", "data"],
            &["cat", "/data/f", "/named/g"]
        )),
        "one\ntwo\n"
    );
    let r = s.run(&busybox_rm(
        &["--volumes-from", "data:ro"],
        &["sh", "-c", "echo x > /data/h"],
    ));
    assert_ne!(r.code, Some(0), "{r:?}");
    assert!(r.stderr.contains("Read-only file system"), "{r:?}");
    // The container's own -v wins at the same path.
    let own = tempfile::tempdir().unwrap();
    std::fs::write(own.path().join("mine"), "").unwrap();
    let v = format!("{}:/data", own.path().display());
    assert_eq!(
        s.ok(&busybox_rm(
            &["--volumes-from", "data", "-v", &v],
            &["ls", "/data"]
        )),
        "mine\n"
    );
    // keep uses data's volumes: data's rm -v leaves the anonymous one, and chains work.
    s.ok(&[
        "create",
        "--name",
        "keep",
        "--volumes-from",
        "data",
        "busybox",
        "true",
    ]);
    s.ok(&["rm", "-v", "data"]);
    let vols = s.ok(&["volume", "ls", "-q"]);
    assert!(vols.lines().any(|v| v == anon), "{vols}");
    assert_eq!(
        s.ok(&busybox_rm(
            &["--volumes-from", "keep"],
            &["cat", "/data/f"]
        )),
        "one\n"
    );
    // keep never owned it: its rm -v leaves it too; prune reclaims it, unused now.
    s.ok(&["rm", "-v", "keep"]);
    assert!(s.ok(&["volume", "ls", "-q"]).lines().any(|v| v == anon));
    s.ok(&["volume", "prune", "-f"]);
    assert!(!s.ok(&["volume", "ls", "-q"]).lines().any(|v| v == anon));
    // No such container: exit 125, nothing made.
    let r = s.run(&busybox_rm(&["--volumes-from", "nosuch"], &["true"]));
    assert_eq!(r.code, Some(125), "{r:?}");
    assert!(r.stderr.contains("No such container: nosuch"), "{r:?}");
    assert_eq!(s.ok(&["ps", "-aq"]), "");
    s.ok(&["volume", "rm", "named"]);
}
