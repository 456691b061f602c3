//! `strata-overlay` as rootless podman's `mount_program` (the drop-in for fuse-overlayfs): as a
//! throw-away unprivileged user (`TestUser`, removed with its processes, home — where podman's
//! storage, run and tmp dirs are put — and ranges even on failure), `podman --storage-opt
//! overlay.mount_program=strata-overlay` loads an image, runs a container on a strata-overlay
//! FUSE mount, and what is done inside (write, delete, rename of a lower dir, hard link) shows in
//! the container, in `podman diff`, and in an image committed from it and run again.

mod containers_common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use std::time::Duration;

use containers_common::strata_overlay;
use strata_testkit::container::eventually;
use strata_testkit::fixtures::{layered_spec, write_docker_archive};
use strata_testkit::user::TestUser;

struct Podman<'a> {
    user: &'a TestUser,
    program: PathBuf,
    /// Store name under the user's home (one per mount program).
    store: &'static str,
}

impl Podman<'_> {
    /// `podman` with this store's global flags, then `args`.
    fn args(&self, args: &[&str]) -> Vec<String> {
        let h = self.user.home.display();
        let st = self.store;
        let mut all = vec![
            "--root".to_string(),
            format!("{h}/{st}/root"),
            "--runroot".to_string(),
            format!("{h}/{st}/run"),
            "--tmpdir".to_string(),
            format!("{h}/{st}/tmp"),
            "--storage-driver".to_string(),
            "overlay".to_string(),
            "--storage-opt".to_string(),
            format!("overlay.mount_program={}", self.program.display()),
            "--events-backend".to_string(),
            "none".to_string(),
            "--cgroup-manager".to_string(),
            "cgroupfs".to_string(),
        ];
        all.extend(args.iter().map(|a| a.to_string()));
        all
    }

    fn ok(&self, args: &[&str]) -> String {
        let all = self.args(args);
        let all: Vec<&str> = all.iter().map(String::as_str).collect();
        self.user.ok(Path::new(PODMAN), &all)
    }
}

const PODMAN: &str = "/usr/bin/podman";

/// Command names of the user's running processes.
fn comms(user: &TestUser) -> Vec<String> {
    user.processes()
        .into_iter()
        .filter_map(|p| std::fs::read_to_string(format!("/proc/{p}/comm")).ok())
        .map(|c| c.trim().to_string())
        .collect()
}

/// What a container shows of the image, of changes made in it, `podman diff`, and the image
/// committed from it.
#[derive(Debug, PartialEq)]
struct Seen {
    image: String,
    changed: String,
    diff: Vec<String>,
    committed: String,
}

fn scenario(p: &Podman) -> Seen {
    // The image's view (whiteout, opaque dir, hard links).
    let image = p.ok(&[
        "run",
        "--rm",
        "--network",
        "none",
        "layered:1",
        "sh",
        "-c",
        "cat /etc/motd 2>&1; ls /home; cat /www/index.html; \
         [ /data/a -ef /data/b ] && echo linked",
    ]);
    p.ok(&[
        "run",
        "-d",
        "--name",
        "c1",
        "--network",
        "none",
        "layered:1",
        "sleep",
        "300",
    ]);
    let name = p.program.file_name().unwrap().to_str().unwrap();
    assert!(
        comms(p.user).iter().any(|c| c == name),
        "no {name} among {:?} while a container runs",
        comms(p.user)
    );
    let script = "echo changed > /www/index.html && rm /etc/passwd && mv /var /var2 \
                  && ln /data/a /data/c && [ /data/a -ef /data/c ] \
                  && ls / | tr '\\n' ' ' && echo && ls /var2 | tr '\\n' ' ' && echo \
                  && cat /www/index.html /data/c";
    let changed = p.ok(&["exec", "c1", "sh", "-c", script]);
    let mut diff: Vec<String> = p.ok(&["diff", "c1"]).lines().map(String::from).collect();
    diff.sort();
    p.ok(&["commit", "c1", "layered:2"]);
    p.ok(&["rm", "-f", "-t", "0", "c1"]);
    let committed = p.ok(&[
        "run",
        "--rm",
        "--network",
        "none",
        "layered:2",
        "sh",
        "-c",
        "cat /www/index.html; ls /etc/passwd /var 2>&1 | wc -l; ls /var2 | tr '\\n' ' '; echo; \
         cat /data/c; [ /data/a -ef /data/c ] && echo linked || echo copied",
    ]);
    p.ok(&["rmi", "-a", "-f"]);
    // conmon cleans up after `run --rm` exits, asynchronously.
    let gone = eventually(Duration::from_secs(20), || {
        (!comms(p.user).iter().any(|c| c == name || c == "conmon")).then_some(())
    });
    assert!(gone.is_some(), "left running: {:?}", comms(p.user));
    Seen {
        image,
        changed,
        diff,
        committed,
    }
}

#[test]
fn strata_overlay_is_rootless_podmans_mount_program() {
    let user = TestUser::new(true).unwrap();
    // A copy the user can execute whatever the modes above the build dir.
    let bin_dir = tempfile::Builder::new()
        .prefix("strata-rootless-podman-")
        .tempdir()
        .unwrap();
    std::fs::set_permissions(bin_dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let program = bin_dir.path().join("strata-overlay");
    std::fs::copy(strata_overlay(), &program).unwrap();
    std::fs::set_permissions(&program, std::fs::Permissions::from_mode(0o755)).unwrap();
    let archive = user.home.join("layered.tar");
    write_docker_archive(&archive, &[layered_spec("layered:1").unwrap()]).unwrap();
    std::os::unix::fs::chown(&archive, Some(user.uid), None).unwrap();

    let strata = Podman {
        user: &user,
        program,
        store: "strata",
    };
    let loaded = strata.ok(&["load", "-i", "layered.tar"]);
    assert!(loaded.contains("layered:1"), "{loaded}");
    let info = strata.ok(&["info", "--format", "{{.Store.GraphOptions}}"]);
    assert!(info.contains("strata-overlay"), "{info}");
    let seen = scenario(&strata);

    let image: Vec<&str> = seen.image.lines().collect();
    assert!(image[0].contains("No such file"), "{seen:?}");
    assert_eq!(image[1..], ["new", "<h1>v2</h1>", "linked"], "{seen:?}");
    let changed: Vec<&str> = seen.changed.lines().collect();
    assert!(
        changed[0].contains("var2") && !changed[0].contains("var "),
        "{seen:?}"
    );
    assert_eq!(
        changed[1].split_whitespace().collect::<Vec<_>>(),
        ["log", "www"]
    );
    assert_eq!(changed[2..], ["changed", "shared content"], "{seen:?}");
    for want in [
        "C /www/index.html",
        "D /etc/passwd",
        "D /var",
        "A /var2",
        "A /var2/www",
        "A /data/c",
    ] {
        assert!(seen.diff.iter().any(|l| l == want), "no {want:?}: {seen:?}");
    }
    let committed: Vec<&str> = seen.committed.lines().collect();
    assert_eq!(committed[0], "changed", "{seen:?}");
    assert_eq!(committed[1].trim(), "2", "{seen:?}");
    assert_eq!(
        committed[2].split_whitespace().collect::<Vec<_>>(),
        ["log", "www"]
    );
    assert_eq!(committed[3], "shared content", "{seen:?}");

    // The same with Debian's fuse-overlayfs as the mount program: the same, line for line
    // (podman diffs a mount program's container naively, so a hard link made in the container
    // is committed as a copy with either).
    let fo = Podman {
        user: &user,
        program: PathBuf::from("/usr/bin/fuse-overlayfs"),
        store: "fo",
    };
    fo.ok(&["load", "-i", "layered.tar"]);
    assert_eq!(scenario(&fo), seen);
}
