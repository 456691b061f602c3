//! The same container lifecycle on every storage driver: run, write, stop, start (upper dir
//! intact), exec, published port, remove; no mount left.

mod containers_common;

use std::time::Duration;

use containers_common::setup;
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
