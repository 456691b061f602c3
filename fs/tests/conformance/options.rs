//! strata-overlay's fuse-overlayfs options (strata only: kernel overlayfs has no equivalents).
//! Each case mounts with the option and checks its effect, and that it was not ignored with a
//! warning. Meanings follow fuse-overlayfs's documentation and 2.0 source.

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::Duration;

use strata_testkit::mount::{run_as, ChildOutcome, Creds};

use crate::harness::{run, Case, Target};
use crate::util::*;

fn mount(c: &mut Case, extra: &str) -> std::path::PathBuf {
    let m = c.mount_strata_with(extra);
    let log = c.mount_log();
    assert!(!log.contains("unknown"), "{extra}: warned: {log}");
    m
}

fn owner(p: impl AsRef<Path>) -> (u32, u32) {
    let s = lstat(p).unwrap();
    (s.uid(), s.gid())
}

fn squash_to_root(c: &mut Case) {
    let l = c.lower(0);
    write(l.join("f"), "x");
    lchown(l.join("f"), 1234, 5678).unwrap();
    mkdir(l.join("d"));
    lchown(l.join("d"), 7, 7).unwrap();
    let m = mount(c, "squash_to_root");
    assert_eq!(owner(m.join("f")), (0, 0));
    assert_eq!(owner(m.join("d")), (0, 0));
    // Squashing is only what is shown: a chown still records its owner.
    lchown(m.join("f"), 42, 43).unwrap();
    assert_eq!(owner(m.join("f")), (0, 0));
    assert_eq!(owner(c.upper().join("f")), (42, 43));
}

fn squash_to_uid_and_gid_win_over_root(c: &mut Case) {
    let l = c.lower(0);
    write(l.join("f"), "x");
    lchown(l.join("f"), 1234, 5678).unwrap();
    let m = mount(c, "squash_to_root,squash_to_uid=11,squash_to_gid=22");
    assert_eq!(owner(m.join("f")), (11, 22));
    write(m.join("new"), "n");
    assert_eq!(owner(m.join("new")), (11, 22));
    assert_eq!(owner(c.upper().join("new")), (0, 0));
}

fn uid_gid_mapping(c: &mut Case) {
    let l = c.lower(0);
    write(l.join("f"), "x");
    lchown(l.join("f"), 3, 4).unwrap();
    write(l.join("unmapped"), "x");
    lchown(l.join("unmapped"), 500, 500).unwrap();
    mkdir_mode(l.join("pub"), 0o777).unwrap();
    chmod(l.join("pub"), 0o777).unwrap();
    let m = mount(c, "uidmapping=0:1000:10:100:5000:5,gidmapping=0:2000:10");
    assert_eq!(owner(m.join("f")), (1003, 2004));
    assert_eq!(owner(m.join("pub")), (1000, 2000));
    assert_eq!(owner(m.join("unmapped")), (65534, 65534), "overflow ids");
    // A chown to shown ids records the disk ids.
    lchown(m.join("f"), 5002, 2009).unwrap();
    assert_eq!(owner(m.join("f")), (5002, 2009));
    assert_eq!(owner(c.upper().join("f")), (102, 9));
    // A file made by shown uid 1005 is owned by disk uid 5.
    let mm = m.clone();
    let out = run_as(
        Creds {
            uid: 1005,
            gid: 2006,
        },
        Duration::from_secs(60),
        move || match std::fs::write(mm.join("pub/mine"), "m") {
            Ok(()) => b"ok".to_vec(),
            Err(e) => e.to_string().into_bytes(),
        },
    );
    assert!(
        matches!(&out, ChildOutcome::Done(o) if o == b"ok"),
        "{out:?}"
    );
    assert_eq!(owner(m.join("pub/mine")), (1005, 2006));
    assert_eq!(owner(c.upper().join("pub/mine")), (5, 6));
}

fn static_nlink(c: &mut Case) {
    let l = c.lower(0);
    mkdir(l.join("d/a"));
    mkdir(l.join("d/b"));
    let m = mount(c, "static_nlink");
    assert_eq!(lstat(m.join("d")).unwrap().nlink(), 1);
    mkdir(m.join("new/x"));
    assert_eq!(lstat(m.join("new")).unwrap().nlink(), 1);
    assert_eq!(lstat(c.upper().join("new")).unwrap().nlink(), 3);
}

fn noxattrs(c: &mut Case) {
    let l = c.lower(0);
    write(l.join("f"), "x");
    setxattr(l.join("f"), "user.k", b"v", 0).unwrap();
    let m = mount(c, "noxattrs=1");
    assert_errno!(getxattr(m.join("f"), "user.k"), libc::EOPNOTSUPP);
    assert_errno!(listxattr(m.join("f")), libc::EOPNOTSUPP);
    assert_errno!(setxattr(m.join("f"), "user.k", b"w", 0), libc::EOPNOTSUPP);
    assert_errno!(removexattr(m.join("f"), "user.k"), libc::EOPNOTSUPP);
    assert_eq!(read(m.join("f")), "x");
}

fn xattr_permissions(c: &mut Case) {
    let l = c.lower(0);
    let keys = [
        (1, "security.fuseoverlayfs.override_stat"),
        (2, "user.containers.override_stat"),
    ];
    for (i, _) in keys {
        let name = format!("f{i}");
        write(l.join(&name), "x");
        chmod(l.join(&name), 0o640).unwrap();
        lchown(l.join(&name), 1234, 5678).unwrap();
    }
    for (i, key) in keys {
        let name = format!("f{i}");
        let m = mount(c, &format!("xattr_permissions={i}"));
        let f = m.join(&name);
        chmod(&f, 0o600).unwrap();
        lchown(&f, 1, 2).unwrap();
        let s = lstat(&f).unwrap();
        assert_eq!(
            (s.uid(), s.gid(), s.mode() & 0o7777),
            (1, 2, 0o600),
            "{key}"
        );
        // The inode keeps its owner and mode; the record holds the new ones.
        let u = lstat(c.upper().join(&name)).unwrap();
        assert_eq!((u.uid(), u.gid(), u.mode() & 0o7777), (1234, 5678, 0o640));
        assert_eq!(getxattr(c.upper().join(&name), key).unwrap(), b"1:2:600");
        // The record is hidden from users.
        assert!(!listxattr(&f).unwrap().iter().any(|k| k == key), "{key}");
        assert_errno!(getxattr(&f, key), libc::ENODATA);
        c.unmount();
        let m = mount(c, &format!("xattr_permissions={i}"));
        let s = lstat(m.join(&name)).unwrap();
        assert_eq!(
            (s.uid(), s.gid(), s.mode() & 0o7777),
            (1, 2, 0o600),
            "remount"
        );
        c.unmount();
    }
}

/// A layer written in override mode (containers/storage `force_mask`, fuse-overlayfs
/// `xattr_permissions`) marks its root: its records apply without the option.
fn override_records_apply_without_the_option(c: &mut Case) {
    let l = c.lower(0);
    let key = "user.containers.override_stat";
    setxattr(&l, key, b"0:0:755", 0).unwrap();
    write(l.join("f"), "x");
    chmod(l.join("f"), 0o600).unwrap();
    lchown(l.join("f"), 1234, 5678).unwrap();
    setxattr(l.join("f"), key, b"1:2:640", 0).unwrap();
    write(l.join("plain"), "y");
    chmod(l.join("plain"), 0o604).unwrap();
    let m = mount(c, "");
    let s = lstat(m.join("f")).unwrap();
    assert_eq!((s.uid(), s.gid(), s.mode() & 0o7777), (1, 2, 0o640));
    assert_eq!(lstat(m.join("plain")).unwrap().mode() & 0o7777, 0o604);
    assert_errno!(getxattr(m.join("f"), key), libc::ENODATA);
    assert!(!listxattr(m.join("f")).unwrap().iter().any(|k| k == key));
    // Writes go to the record too, as with the option.
    chmod(m.join("f"), 0o644).unwrap();
    assert_eq!(lstat(m.join("f")).unwrap().mode() & 0o7777, 0o644);
    let u = lstat(c.upper().join("f")).unwrap();
    assert_eq!((u.uid(), u.gid(), u.mode() & 0o7777), (1234, 5678, 0o600));
    assert_eq!(getxattr(c.upper().join("f"), key).unwrap(), b"1:2:644");
}

fn timeout_zero_asks_every_time(c: &mut Case) {
    c.lower(0);
    write(c.upper().join("f"), "1");
    let m = mount(c, "timeout=0");
    assert_eq!(lstat(m.join("f")).unwrap().len(), 1);
    // Changed behind the mount's back: without caching the next stat sees it.
    write(c.upper().join("f"), "12345");
    assert_eq!(lstat(m.join("f")).unwrap().len(), 5);
}

/// Number of threads of the `strata-overlay` process serving `mnt`.
/// The pid and thread count of the strata-overlay serving `mnt`, other than `not` (a daemon
/// that was unmounted may still be exiting with the same command line). The count is read until
/// two reads 100 ms apart agree (worker threads start right after the mount).
fn server_threads(mnt: &Path, not: Option<u32>) -> (u32, usize) {
    let want = mnt.as_os_str().as_encoded_bytes();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        for e in std::fs::read_dir("/proc").unwrap().flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|p| p.parse::<u32>().ok()) else {
                continue;
            };
            if Some(pid) == not {
                continue;
            }
            let Ok(cmd) = std::fs::read(e.path().join("cmdline")) else {
                continue;
            };
            let args: Vec<&[u8]> = cmd.split(|&b| b == 0).collect();
            if args.first().is_some_and(|a| a.ends_with(b"strata-overlay")) && args.contains(&want)
            {
                let count = || std::fs::read_dir(e.path().join("task")).map(|t| t.count());
                let mut last = count().unwrap_or(0);
                loop {
                    std::thread::sleep(std::time::Duration::from_millis(100));
                    let now = count().unwrap_or(0);
                    if now == last {
                        return (pid, now);
                    }
                    last = now;
                }
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no strata-overlay serving {}",
            mnt.display()
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

fn threaded_zero_serves_from_one_thread(c: &mut Case) {
    c.lower(0);
    let m = mount(c, "threads=3");
    let (first, three) = server_threads(&m, None);
    c.unmount();
    let m = mount(c, "threaded=0");
    let (_, one) = server_threads(&m, Some(first));
    // threads=3: three readers and two offload workers; threaded=0: one thread for everything.
    assert_eq!(
        three as i64 - one as i64,
        4,
        "threads: {three} with threads=3, {one} with threaded=0"
    );
}

fn fsync_zero_and_volatile(c: &mut Case) {
    c.lower(0);
    for opt in ["fsync=0", "volatile", "fsync=1", "noacl"] {
        let m = mount(c, opt);
        let f = open(m.join("f"), libc::O_CREAT | libc::O_WRONLY, 0o644).unwrap();
        std::os::unix::fs::FileExt::write_at(&f, opt.as_bytes(), 0).unwrap();
        f.sync_all().unwrap();
        f.sync_data().unwrap();
        drop(f);
        c.unmount();
        assert_eq!(read(c.upper().join("f")), opt);
        unlink(c.upper().join("f")).unwrap();
    }
}

fn bad_values_are_refused(c: &mut Case) {
    let l = c.lower(0);
    let mnt = c.mnt();
    for bad in [
        "uidmapping=0:1",
        "squash_to_uid=x",
        "timeout=-1",
        "xattr_permissions=3",
        "fsync=yes",
    ] {
        let out = std::process::Command::new(crate::harness::strata_bin())
            .arg("-o")
            .arg(format!("lowerdir={},{bad}", l.display()))
            .arg(&mnt)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{bad} accepted");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("invalid"), "{bad}: {err}");
        assert_eq!(err.lines().count(), 1, "{bad}: one line: {err}");
    }
    let listed: HashMap<String, u64> = raw_readdir(&mnt).unwrap().into_iter().collect();
    assert_eq!(listed.len(), 2, "nothing mounted");
}

macro_rules! strata_only {
    ($($name:ident),* $(,)?) => {
        mod strata {
            $(
                #[test]
                fn $name() {
                    super::run(super::Target::Strata, concat!("options::", stringify!($name)), super::$name)
                }
            )*
        }
    };
}

strata_only!(
    squash_to_root,
    squash_to_uid_and_gid_win_over_root,
    uid_gid_mapping,
    static_nlink,
    noxattrs,
    xattr_permissions,
    override_records_apply_without_the_option,
    timeout_zero_asks_every_time,
    threaded_zero_serves_from_one_thread,
    fsync_zero_and_volatile,
    bad_values_are_refused,
);
