//! The same container lifecycle on every storage driver: run, write, stop, start (upper dir
//! intact), exec, published port, remove; no mount left.

mod containers_common;

use std::time::Duration;

use containers_common::{busybox_rm, setup};
use strata_testkit::container::{eventually, free_port, http_get, mounts_under};

fn lifecycle(driver: &str) {
    let s = setup(driver);
    let port = free_port();
    let id = s.ok(&[
        "run",
        "-d",
        "--name",
        "web",
        "-p",
        &format!("127.0.0.1:{port}:80"),
        "busybox",
        "sh",
        "-c",
        "echo page > /www/extra.html; rm /etc/motd; exec httpd -f -p 80 -h /www",
    ]);
    let id = id.trim().to_string();
    let got = eventually(Duration::from_secs(20), || {
        http_get("127.0.0.1", port, "/extra.html")
            .ok()
            .filter(|(c, _)| *c == 200)
    });
    assert_eq!(got.map(|g| g.1).as_deref(), Some("page\n"), "{driver}");
    let inspect_driver = std::fs::read_to_string(
        s.root_path()
            .join("containers")
            .join(&id)
            .join("config.json"),
    )
    .unwrap();
    assert!(inspect_driver.contains(&format!("\"driver\": \"{driver}\"")));
    let r = s.run(&["exec", "web", "sh", "-c", "cat /etc/motd; ls /www"]);
    assert!(r.stderr.contains("No such file"), "{r:?}");
    assert_eq!(r.stdout, "extra.html\nindex.html\n");
    s.ok(&["stop", "-t", "1", "web"]);
    assert!(
        mounts_under(s.root_path()).is_empty(),
        "{driver}: unmounted at stop"
    );
    s.ok(&["start", "web"]);
    let got = eventually(Duration::from_secs(20), || {
        http_get("127.0.0.1", port, "/extra.html")
            .ok()
            .filter(|(c, _)| *c == 200)
    });
    assert!(got.is_some(), "{driver}: restarted with its upper dir");
    s.ok(&["rm", "-f", "web"]);
    assert!(mounts_under(s.root_path()).is_empty());
    assert!(!s.root_path().join("containers").join(&id).exists());
}

#[test]
fn lifecycle_fuse() {
    lifecycle("fuse");
}

#[test]
fn lifecycle_overlay() {
    lifecycle("overlay");
}

#[test]
fn lifecycle_vfs() {
    lifecycle("vfs");
}

#[test]
fn lifecycle_fuse_overlayfs() {
    lifecycle("fuse-overlayfs");
}

/// The same bundle run by runc instead of the built-in executor (`--runtime runc`).
#[test]
fn runtime_runc_runs_the_same_bundle() {
    if std::process::Command::new("runc")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("runc not installed: skipped");
        return;
    }
    let s = setup(&containers_common::default_driver());
    let r = s.run(&busybox_rm(
        &["--runtime", "runc"],
        &["sh", "-c", "echo hi; cat /etc/hostname; exit 4"],
    ));
    assert_eq!(r.code, Some(4), "{r:?}");
    assert!(r.stdout.starts_with("hi\n"), "{r:?}");
    let port = free_port();
    s.ok(&[
        "run",
        "-d",
        "--name",
        "rweb",
        "--runtime",
        "runc",
        "-p",
        &format!("{port}:80"),
        "busybox",
        "httpd",
        "-f",
        "-p",
        "80",
        "-h",
        "/www",
    ]);
    let got = eventually(Duration::from_secs(20), || {
        http_get("127.0.0.1", port, "/").ok()
    });
    assert_eq!(got.map(|g| g.0), Some(200));
    assert_eq!(
        s.ok(&["exec", "rweb", "cat", "/proc/1/cmdline"]),
        "httpd\0-f\0-p\080\0-h\0/www\0"
    );
    s.ok(&["rm", "-f", "rweb"]);
    assert!(mounts_under(s.root_path()).is_empty());
}

/// Without `--storage-driver`, `<root>/strata.json` chooses; relative roots work too.
#[test]
fn driver_from_config_file_and_relative_root() {
    let s = strata_testkit::container::Strata::new(env!("CARGO_BIN_EXE_strata"));
    containers_common::install_busybox(s.root_path(), "busybox:latest", serde_json::json!({}));
    std::fs::write(
        s.root_path().join("strata.json"),
        r#"{"storage-driver": "vfs"}"#,
    )
    .unwrap();
    let parent = s.root_path().parent().unwrap();
    let rel = s.root_path().file_name().unwrap().to_str().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_strata"))
        .current_dir(parent)
        .args(["--root", rel, "--runroot"])
        .arg(s.runroot.path())
        .args(["run", "-d", "--name", "cfgd", "busybox", "sleep", "100"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let cfg = std::fs::read_to_string(
        s.root_path()
            .join("containers")
            .join(&id)
            .join("config.json"),
    )
    .unwrap();
    assert!(cfg.contains("\"driver\": \"vfs\""), "{cfg}");
    assert!(s
        .ok(&["ps", "--format", "{{.Names}} {{.State}}"])
        .contains("cfgd running"));
    s.ok(&["rm", "-f", "cfgd"]);
    assert!(mounts_under(s.root_path()).is_empty());
}

/// An unknown `--storage-driver` is refused before the image is looked up or pulled (the
/// image here is missing and its registry unreachable), and nothing is left in the store.
#[test]
fn unknown_driver_fails_before_the_pull() {
    let s = strata_testkit::container::Strata::new(env!("CARGO_BIN_EXE_strata"));
    let r = s.run(&[
        "--storage-driver",
        "zfs",
        "run",
        "-v",
        "/data",
        "127.0.0.1:1/nothing",
    ]);
    assert_eq!(r.code, Some(125), "{r:?}");
    assert!(r.stderr.contains("zfs"), "{r:?}");
    assert!(!r.stderr.contains("Unable to find image"), "{r:?}");
    assert_eq!(s.ok(&["volume", "ls", "-q"]).trim(), "");
    assert_eq!(s.ok(&["ps", "-aq"]).trim(), "");
}
