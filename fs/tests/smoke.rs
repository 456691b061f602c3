//! Smoke test of the `mount()` API on a real FUSE mount (needs root and /dev/fuse).
//! The big conformance suite lives elsewhere; this only proves the API end to end.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::PathBuf;
use std::time::{Duration, Instant};

mod common;

use common::Watchdog;
use strata_fs::{mount, MountOptions};

struct Fixture {
    dir: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        for d in ["l1", "l2", "upper", "work", "mnt"] {
            std::fs::create_dir(dir.path().join(d)).unwrap();
        }
        let p = dir.path();
        std::fs::write(p.join("l2/a"), "lower2").unwrap();
        std::fs::write(p.join("l1/a"), "lower1").unwrap();
        std::fs::write(p.join("l2/gone"), "x").unwrap();
        std::fs::create_dir_all(p.join("l2/dir/sub")).unwrap();
        std::fs::write(p.join("l2/dir/sub/f"), "deep").unwrap();
        nix::sys::stat::mknod(
            &p.join("l1/gone"),
            nix::sys::stat::SFlag::S_IFCHR,
            nix::sys::stat::Mode::empty(),
            0,
        )
        .unwrap();
        Fixture { dir }
    }
    fn p(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }
    fn opts(&self) -> MountOptions {
        MountOptions {
            lowers: vec![self.p("l1"), self.p("l2")],
            upper: Some(self.p("upper")),
            work: Some(self.p("work")),
            threads: 2,
            fsname: "strata-smoke".into(),
            flavour: None,
        }
    }
}

#[test]
fn mount_read_write_rename_unmount() {
    let fx = Fixture::new();
    let m = mount(fx.opts(), &fx.p("mnt")).unwrap();
    let _wd = Watchdog::new(m.mountpoint(), Duration::from_secs(60));
    let mp = m.mountpoint().to_path_buf();
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap();
    assert!(mounts.contains(&format!("strata-smoke {}", mp.display())));

    assert_eq!(std::fs::read_to_string(mp.join("a")).unwrap(), "lower1");
    assert!(!mp.join("gone").exists());
    std::fs::write(mp.join("a"), "changed").unwrap();
    assert_eq!(std::fs::read_to_string(fx.p("l1/a")).unwrap(), "lower1");
    assert_eq!(std::fs::read_to_string(fx.p("upper/a")).unwrap(), "changed");

    std::fs::create_dir(mp.join("new")).unwrap();
    std::fs::write(mp.join("new/f"), "n").unwrap();
    std::fs::set_permissions(mp.join("new/f"), std::fs::Permissions::from_mode(0o600)).unwrap();
    assert_eq!(
        std::fs::metadata(mp.join("new/f")).unwrap().mode() & 0o7777,
        0o600
    );
    std::fs::rename(mp.join("dir"), mp.join("moved")).unwrap();
    assert_eq!(
        std::fs::read_to_string(mp.join("moved/sub/f")).unwrap(),
        "deep"
    );
    assert!(!mp.join("dir").exists());
    std::fs::remove_dir_all(mp.join("moved")).unwrap();
    let mut names: Vec<_> = std::fs::read_dir(&mp)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, vec!["a", "new"]);
    m.unmount().unwrap();
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap();
    assert!(!mounts.contains(&mp.display().to_string()));
}

#[test]
fn read_only_without_upper_and_drop_unmounts() {
    let fx = Fixture::new();
    let mut o = fx.opts();
    o.upper = None;
    o.work = None;
    let mp;
    {
        let m = mount(o, &fx.p("mnt")).unwrap();
        let _wd = Watchdog::new(m.mountpoint(), Duration::from_secs(60));
        mp = m.mountpoint().to_path_buf();
        assert_eq!(std::fs::read_to_string(mp.join("a")).unwrap(), "lower1");
        let e = std::fs::write(mp.join("x"), "x").unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EROFS));
    }
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap();
    assert!(!mounts.contains(&mp.display().to_string()));
}

#[test]
fn bad_input_mounts_nothing() {
    let fx = Fixture::new();
    let mut o = fx.opts();
    o.lowers = vec![];
    assert!(matches!(
        mount(o, &fx.p("mnt")),
        Err(strata_fs::Error::NoLower)
    ));
    let mut o = fx.opts();
    o.lowers = vec![fx.p("missing")];
    assert!(mount(o, &fx.p("mnt")).is_err());
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap();
    assert!(!mounts.contains(&fx.p("mnt").display().to_string()));
}

#[test]
fn drop_of_a_busy_mount_detaches_and_returns() {
    let fx = Fixture::new();
    let m = mount(fx.opts(), &fx.p("mnt")).unwrap();
    let _wd = Watchdog::new(m.mountpoint(), Duration::from_secs(60));
    let mp = m.mountpoint().to_path_buf();
    let held = std::fs::File::open(mp.join("a")).unwrap();
    let start = Instant::now();
    drop(m);
    assert!(start.elapsed() < Duration::from_secs(30));
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap();
    assert!(!mounts.contains(&mp.display().to_string()));
    drop(held);
}
