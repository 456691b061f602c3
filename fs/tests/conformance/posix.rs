//! POSIX details a strict suite probes: ENAMETOOLONG, deep paths near PATH_MAX, modes on create
//! exactly as requested minus umask, ctime/mtime updates on every operation that changes them.

use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::Path;
use std::time::Duration;

use strata_testkit::mount::{run_as, ChildOutcome, Creds};

use crate::harness::Case;
use crate::util::*;

fn name_too_long(c: &mut Case) {
    let l = c.lower(0);
    write(l.join("f"), "");
    mkdir(l.join("d"));
    let m = c.mount();
    let long = m.join("n".repeat(256));
    let max = m.join("m".repeat(255));
    let enl = libc::ENAMETOOLONG;
    assert_errno!(open(&long, libc::O_CREAT | libc::O_WRONLY, 0o644), enl);
    assert_errno!(lstat(&long), enl);
    assert_errno!(mkdir_mode(&long, 0o755), enl);
    assert_errno!(mkfifo(&long, 0o644), enl);
    assert_errno!(std::os::unix::fs::symlink("x", &long), enl);
    assert_errno!(link(m.join("f"), &long), enl);
    assert_errno!(rename(m.join("f"), &long), enl);
    assert_errno!(rename(&long, m.join("g")), enl);
    assert_errno!(unlink(&long), enl);
    assert_errno!(rmdir(&long), enl);
    assert_errno!(lstat(m.join("d").join("x".repeat(300))), enl);
    write(&max, "255 is fine");
    assert_eq!(read(&max), "255 is fine");
    assert!(ls(&m).contains(&"m".repeat(255)));
    rename(&max, m.join("d").join("m".repeat(255))).unwrap();
    unlink(m.join("d").join("m".repeat(255))).unwrap();
}

fn path_over_path_max(c: &mut Case) {
    c.lower(0);
    let m = c.mount();
    let mut p = m.clone();
    while p.as_os_str().len() <= 4200 {
        p.push("abcdefghij");
    }
    assert_errno!(lstat(&p), libc::ENAMETOOLONG);
    assert_errno!(
        open(&p, libc::O_CREAT | libc::O_WRONLY, 0o644),
        libc::ENAMETOOLONG
    );
}

fn openat_dir(dir: &OwnedFd, name: &str, create: bool) -> OwnedFd {
    let n = CString::new(name).unwrap();
    if create {
        // SAFETY: valid dirfd and name.
        check(unsafe { libc::mkdirat(dir.as_raw_fd(), n.as_ptr(), 0o755) }).unwrap();
    }
    // SAFETY: valid dirfd and name; we own the result.
    let fd = check(unsafe {
        libc::openat(
            dir.as_raw_fd(),
            n.as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    })
    .unwrap();
    // SAFETY: fresh fd.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

fn open_root(p: &Path) -> OwnedFd {
    let f = open(p, libc::O_RDONLY | libc::O_DIRECTORY, 0).unwrap();
    OwnedFd::from(f)
}

/// Names for a chain of dirs whose joined path is about `len` bytes.
fn deep_names(len: usize) -> Vec<String> {
    let seg = "d".repeat(199);
    (0..len / 200).map(|i| format!("{seg}{}", i % 10)).collect()
}

fn deep_path_near_path_max(c: &mut Case) {
    // The merged path stays below PATH_MAX, but lower/upper paths on the host plus a FUSE
    // server's own prefix would not: every access must be relative (`*at`).
    let l = c.lower(0);
    let names = deep_names(3800);
    let mut fd = open_root(&l);
    for n in &names {
        fd = openat_dir(&fd, n, true);
    }
    let leaf = CString::new("leaf").unwrap();
    // SAFETY: valid dirfd; we own the result.
    let f = check(unsafe {
        libc::openat(
            fd.as_raw_fd(),
            leaf.as_ptr(),
            libc::O_CREAT | libc::O_WRONLY | libc::O_CLOEXEC,
            0o644,
        )
    })
    .unwrap();
    // SAFETY: fresh fd.
    let f = unsafe { std::fs::File::from_raw_fd(f) };
    f.write_at(b"deep lower", 0).unwrap();
    drop(f);
    let m = c.mount();
    let mut p = m.clone();
    for n in &names {
        p.push(n);
    }
    assert!(
        p.as_os_str().len() < 4000,
        "test path {}",
        p.as_os_str().len()
    );
    assert_eq!(read(p.join("leaf")), "deep lower");
    write(p.join("leaf"), "copied up from the deep end");
    assert_eq!(read(p.join("leaf")), "copied up from the deep end");
    write(p.join("new"), "n");
    mkdir_mode(p.join("sub"), 0o755).unwrap();
    assert_eq!(ls(&p), ["leaf", "new", "sub"]);
    unlink(p.join("new")).unwrap();
    rename(p.join("leaf"), p.join("renamed")).unwrap();
    assert_eq!(ls(&p), ["renamed", "sub"]);
}

fn deep_path_created_through_mount(c: &mut Case) {
    c.lower(0);
    let m = c.mount();
    let names = deep_names(3800);
    let mut fd = open_root(&m);
    for n in &names {
        fd = openat_dir(&fd, n, true);
    }
    let mut p = m.clone();
    for n in &names {
        p.push(n);
    }
    write(p.join("f"), "bottom");
    assert_eq!(read(p.join("f")), "bottom");
    assert!(lstat(&p).unwrap().is_dir());
}

/// Create things under a given umask in a forked child (umask is per process).
fn with_umask(umask: u32, f: impl FnOnce() -> Vec<i32>) -> Vec<i32> {
    let out = run_as(Creds { uid: 0, gid: 0 }, Duration::from_secs(60), || {
        // SAFETY: umask only changes this (child) process.
        unsafe { libc::umask(umask) };
        f().into_iter().flat_map(i32::to_le_bytes).collect()
    });
    match out {
        ChildOutcome::Done(b) => b
            .chunks(4)
            .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        other => panic!("child: {other:?}"),
    }
}

fn ok<T>(r: std::io::Result<T>) -> i32 {
    r.err().and_then(|e| e.raw_os_error()).unwrap_or(0)
}

fn modes_minus_umask(c: &mut Case) {
    let l = c.lower(0);
    mkdir(l.join("d"));
    let m = c.mount();
    let r = with_umask(0o022, || {
        vec![
            ok(open(m.join("f666"), libc::O_CREAT | libc::O_WRONLY, 0o666)),
            ok(mkdir_mode(m.join("d777"), 0o777)),
            ok(mkfifo(m.join("p666"), 0o666)),
            ok(mknod(m.join("d/n"), libc::S_IFCHR | 0o666, 1, 3)),
            ok(open(
                m.join("d/f640"),
                libc::O_CREAT | libc::O_WRONLY,
                0o640,
            )),
        ]
    });
    assert_eq!(r, [0; 5]);
    let r = with_umask(0o077, || {
        vec![
            ok(open(m.join("f077"), libc::O_CREAT | libc::O_WRONLY, 0o666)),
            ok(mkdir_mode(m.join("d077"), 0o777)),
        ]
    });
    assert_eq!(r, [0; 2]);
    for (p, want) in [
        ("f666", 0o644),
        ("d777", 0o755),
        ("p666", 0o644),
        ("d/n", 0o644),
        ("d/f640", 0o640),
        ("f077", 0o600),
        ("d077", 0o700),
    ] {
        assert_eq!(lstat(m.join(p)).unwrap().mode() & 0o7777, want, "{p}");
    }
}

fn modes_exact_with_zero_umask(c: &mut Case) {
    c.lower(0);
    let m = c.mount();
    let r = with_umask(0, || {
        vec![
            ok(open(m.join("f751"), libc::O_CREAT | libc::O_WRONLY, 0o751)),
            ok(open(
                m.join("f4755"),
                libc::O_CREAT | libc::O_WRONLY,
                0o4755,
            )),
            ok(open(m.join("f000"), libc::O_CREAT | libc::O_WRONLY, 0o000)),
            ok(mkdir_mode(m.join("d1777"), 0o1777)),
            ok(mkdir_mode(m.join("d0"), 0o000)),
            ok(mkfifo(m.join("p606"), 0o606)),
        ]
    });
    assert_eq!(r, [0; 6]);
    for (p, want) in [
        ("f751", 0o751),
        ("f4755", 0o4755),
        ("f000", 0),
        ("d1777", 0o1777),
        ("d0", 0),
        ("p606", 0o606),
    ] {
        assert_eq!(lstat(m.join(p)).unwrap().mode() & 0o7777, want, "{p}");
    }
}

fn times(p: &Path) -> ((i64, i64), (i64, i64)) {
    let s = lstat(p).unwrap();
    ((s.mtime(), s.mtime_nsec()), (s.ctime(), s.ctime_nsec()))
}

/// Let the clock move past the timestamps just taken (coarse-grained ctime).
fn tick() {
    std::thread::sleep(Duration::from_millis(30));
}

fn write_updates_mtime_ctime(c: &mut Case) {
    let l = c.lower(0);
    write(l.join("lower"), "x");
    let m = c.mount();
    write(m.join("upper"), "x");
    for n in ["lower", "upper"] {
        let (m0, c0) = times(&m.join(n));
        tick();
        let f = open(m.join(n), libc::O_WRONLY, 0).unwrap();
        f.write_at(b"y", 0).unwrap();
        drop(f);
        let (m1, c1) = times(&m.join(n));
        assert!(m1 > m0, "{n}: mtime {m0:?} -> {m1:?}");
        assert!(c1 > c0, "{n}: ctime {c0:?} -> {c1:?}");
    }
}

fn chmod_updates_ctime_only(c: &mut Case) {
    let l = c.lower(0);
    write(l.join("f"), "x");
    set_times(l.join("f"), (100, 0), (200, 0)).unwrap();
    let m = c.mount();
    let (m0, c0) = times(&m.join("f"));
    tick();
    chmod(m.join("f"), 0o600).unwrap();
    let (m1, c1) = times(&m.join("f"));
    assert_eq!(m1, m0, "chmod keeps mtime");
    assert!(c1 > c0, "chmod updates ctime");
    tick();
    lchown(m.join("f"), 5, 5).unwrap();
    assert!(times(&m.join("f")).1 > c1, "chown updates ctime");
    let c2 = times(&m.join("f")).1;
    tick();
    setxattr(m.join("f"), "user.t", b"1", 0).unwrap();
    assert!(times(&m.join("f")).1 > c2, "setxattr updates ctime");
    assert_eq!(times(&m.join("f")).0, m0, "setxattr keeps mtime");
}

fn dir_times_on_entry_changes(c: &mut Case) {
    let l = c.lower(0);
    mkdir(l.join("d"));
    write(l.join("d/old"), "");
    set_times(l.join("d"), (100, 0), (100, 0)).unwrap();
    let m = c.mount();
    let d = m.join("d");
    let step = |what: &str, op: &dyn Fn()| {
        let (m0, c0) = times(&d);
        tick();
        op();
        let (m1, c1) = times(&d);
        assert!(m1 > m0, "{what}: dir mtime {m0:?} -> {m1:?}");
        assert!(c1 > c0, "{what}: dir ctime {c0:?} -> {c1:?}");
    };
    step("create", &|| write(d.join("new"), ""));
    step("mkdir", &|| mkdir_mode(d.join("sub"), 0o755).unwrap());
    step("unlink lower", &|| unlink(d.join("old")).unwrap());
    step("rename within", &|| {
        rename(d.join("new"), d.join("new2")).unwrap()
    });
    step("symlink", &|| symlink("x", d.join("s")));
    step("link", &|| link(d.join("new2"), d.join("hl")).unwrap());
    step("rmdir", &|| rmdir(d.join("sub")).unwrap());
    step("mknod", &|| mkfifo(d.join("p"), 0o600).unwrap());
}

fn truncate_and_o_trunc_update_times(c: &mut Case) {
    let l = c.lower(0);
    write(l.join("f"), "0123456789");
    let m = c.mount();
    let (m0, c0) = times(&m.join("f"));
    tick();
    truncate(m.join("f"), 2).unwrap();
    let (m1, c1) = times(&m.join("f"));
    assert!(m1 > m0 && c1 > c0, "truncate updates mtime and ctime");
    tick();
    drop(open(m.join("f"), libc::O_WRONLY | libc::O_TRUNC, 0).unwrap());
    let (m2, c2) = times(&m.join("f"));
    assert!(m2 > m1 && c2 > c1, "O_TRUNC updates mtime and ctime");
}

fn link_and_rename_update_ctime(c: &mut Case) {
    let l = c.lower(0);
    write(l.join("f"), "x");
    let m = c.mount();
    write(m.join("g"), "y");
    let (_, c0) = times(&m.join("g"));
    tick();
    link(m.join("g"), m.join("g2")).unwrap();
    let (_, c1) = times(&m.join("g"));
    assert!(c1 > c0, "link updates the target's ctime");
    let (m0, c2) = times(&m.join("f"));
    tick();
    rename(m.join("f"), m.join("f2")).unwrap();
    let (m1, c3) = times(&m.join("f2"));
    assert!(c3 > c2, "rename updates the moved inode's ctime");
    assert_eq!(m1, m0, "rename keeps mtime");
}

fn more_ctime_mtime_updates(c: &mut Case) {
    let l = c.lower(0);
    write(l.join("f"), vec![b'a'; 8192]);
    setxattr(l.join("f"), "user.x", b"1", 0).unwrap();
    let m = c.mount();
    let f = m.join("f");
    let step = |what: &str, mtime_too: bool, op: &dyn Fn()| {
        let (m0, c0) = times(&f);
        tick();
        op();
        let (m1, c1) = times(&f);
        assert!(c1 > c0, "{what}: ctime {c0:?} -> {c1:?}");
        if mtime_too {
            assert!(m1 > m0, "{what}: mtime {m0:?} -> {m1:?}");
        }
    };
    step("removexattr", false, &|| removexattr(&f, "user.x").unwrap());
    step("utimensat", false, &|| {
        set_times(&f, (7, 0), (8, 0)).unwrap()
    });
    step("fallocate extend", true, &|| {
        let fd = open(&f, libc::O_RDWR, 0).unwrap();
        // SAFETY: fallocate on an fd we own.
        check(unsafe { libc::fallocate(fd.as_raw_fd(), 0, 0, 16384) }).unwrap();
    });
    step("mmap write + msync", true, &|| {
        let fd = open(&f, libc::O_RDWR, 0).unwrap();
        // SAFETY: shared mapping of the first 4096 bytes of an 8+ KiB file, unmapped below.
        unsafe {
            let p = libc::mmap(
                std::ptr::null_mut(),
                4096,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            );
            assert_ne!(p, libc::MAP_FAILED);
            *p.cast::<u8>() = b'z';
            libc::msync(p, 4096, libc::MS_SYNC);
            libc::munmap(p, 4096);
        }
    });
    step("link", false, &|| link(&f, m.join("g")).unwrap());
    step("unlink other link", false, &|| unlink(m.join("g")).unwrap());
}

fn read_keeps_mtime(c: &mut Case) {
    let l = c.lower(0);
    write(l.join("f"), "x");
    set_times(l.join("f"), (100, 0), (200, 0)).unwrap();
    let m = c.mount();
    let (m0, c0) = times(&m.join("f"));
    tick();
    let _ = read(m.join("f"));
    let _ = ls(&m);
    assert_eq!(times(&m.join("f")), (m0, c0));
    assert_eq!(m0, (200, 0));
}

fn utime_now_sets_now(c: &mut Case) {
    let l = c.lower(0);
    write(l.join("f"), "x");
    set_times(l.join("f"), (100, 0), (200, 0)).unwrap();
    let m = c.mount();
    let cp = cpath(&m.join("f"));
    // SAFETY: valid path; NULL times means now.
    check(unsafe { libc::utimensat(libc::AT_FDCWD, cp.as_ptr(), std::ptr::null(), 0) }).unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let s = lstat(m.join("f")).unwrap();
    assert!((s.mtime() - now).abs() < 60 && (s.atime() - now).abs() < 60);
    let omit = [
        libc::timespec {
            tv_sec: 0,
            tv_nsec: libc::UTIME_OMIT,
        },
        libc::timespec {
            tv_sec: 300,
            tv_nsec: 7,
        },
    ];
    // SAFETY: valid path and a two-element timespec array.
    check(unsafe { libc::utimensat(libc::AT_FDCWD, cp.as_ptr(), omit.as_ptr(), 0) }).unwrap();
    let s2 = lstat(m.join("f")).unwrap();
    assert_eq!((s2.mtime(), s2.mtime_nsec()), (300, 7));
    assert_eq!(s2.atime(), s.atime(), "UTIME_OMIT leaves atime");
}

fn symlink_times_settable(c: &mut Case) {
    let l = c.lower(0);
    symlink("t", l.join("s"));
    let m = c.mount();
    set_times(m.join("s"), (11, 0), (22, 0)).unwrap();
    assert_eq!(lstat(m.join("s")).unwrap().mtime(), 22);
    assert_errno!(std::fs::metadata(m.join("s")), libc::ENOENT);
}

cases!(posix:
    name_too_long,
    path_over_path_max,
    deep_path_near_path_max,
    deep_path_created_through_mount,
    modes_minus_umask,
    modes_exact_with_zero_umask,
    write_updates_mtime_ctime,
    chmod_updates_ctime_only,
    dir_times_on_entry_changes,
    truncate_and_o_trunc_update_times,
    link_and_rename_update_ctime,
    more_ctime_mtime_updates,
    read_keeps_mtime,
    utime_now_sets_now,
    symlink_times_settable,
);
