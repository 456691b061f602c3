//! Permission checks for a non-root user (uid/gid 65534, like a container's `USER nobody`): each
//! case forks a child that drops to nobody, runs the operations and reports one errno per step.
//! Also SUID/SGID clearing on write, truncate and chown.

use std::io;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use strata_testkit::mount::{run_as, ChildOutcome, Creds};

use crate::harness::Case;
use crate::util::*;

const NOBODY: u32 = 65534;

/// 0 for success, the errno otherwise.
fn e<T>(r: io::Result<T>) -> i32 {
    match r {
        Ok(_) => 0,
        Err(err) => err.raw_os_error().unwrap_or(-1),
    }
}

/// Run `f` as nobody; it returns one errno (or 0) per step.
fn as_nobody(f: impl FnOnce() -> Vec<i32>) -> Vec<i32> {
    let out = run_as(Creds::NOBODY, Duration::from_secs(60), || {
        f().into_iter().flat_map(i32::to_le_bytes).collect()
    });
    match out {
        ChildOutcome::Done(bytes) => bytes
            .chunks(4)
            .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        other => panic!("child running as nobody: {other:?}"),
    }
}

/// Mount with the case dir traversable by others (tempfile makes it 0700).
fn mount_for_others(c: &mut Case) -> PathBuf {
    chmod(c.root(), 0o755).unwrap();
    c.mount()
}

fn read_protected_file(c: &mut Case) {
    let l = c.lower(0);
    write(l.join("secret"), "s");
    chmod(l.join("secret"), 0o600).unwrap();
    write(l.join("public"), "p");
    chmod(l.join("public"), 0o644).unwrap();
    let m = mount_for_others(c);
    let r = as_nobody(|| {
        vec![
            e(open(m.join("secret"), libc::O_RDONLY, 0)),
            e(open(m.join("public"), libc::O_RDONLY, 0)),
            e(open(m.join("public"), libc::O_WRONLY, 0)),
            e(open(m.join("public"), libc::O_RDWR | libc::O_TRUNC, 0)),
        ]
    });
    assert_eq!(r, [libc::EACCES, 0, libc::EACCES, libc::EACCES]);
    assert_eq!(read(m.join("public")), "p");
}

fn create_in_foreign_dir(c: &mut Case) {
    let l = c.lower(0);
    mkdir(l.join("rootdir"));
    chmod(l.join("rootdir"), 0o755).unwrap();
    mkdir(l.join("open"));
    chmod(l.join("open"), 0o777).unwrap();
    let m = mount_for_others(c);
    let r = as_nobody(|| {
        vec![
            e(open(
                m.join("rootdir/f"),
                libc::O_CREAT | libc::O_WRONLY,
                0o644,
            )),
            e(mkdir_mode(m.join("rootdir/d"), 0o755)),
            e(mkfifo(m.join("rootdir/p"), 0o644)),
            e(std::os::unix::fs::symlink("x", m.join("rootdir/s"))),
            e(open(
                m.join("open/f"),
                libc::O_CREAT | libc::O_WRONLY,
                0o644,
            )),
            e(mkdir_mode(m.join("open/d"), 0o755)),
        ]
    });
    assert_eq!(
        r,
        [libc::EACCES, libc::EACCES, libc::EACCES, libc::EACCES, 0, 0]
    );
    let f = lstat(m.join("open/f")).unwrap();
    assert_eq!(
        (f.uid(), f.gid()),
        (NOBODY, NOBODY),
        "new file owned by its creator"
    );
    let u = lstat(c.upper().join("open/f")).unwrap();
    assert_eq!(
        (u.uid(), u.gid()),
        (NOBODY, NOBODY),
        "owner recorded in the upper dir"
    );
    assert_eq!(lstat(m.join("open/d")).unwrap().uid(), NOBODY);
    let parent = lstat(c.upper().join("open")).unwrap();
    assert_eq!(
        (parent.uid(), parent.mode() & 0o7777),
        (0, 0o777),
        "the copied-up parent keeps its owner and mode, not the caller's"
    );
}

fn unlink_needs_dir_write(c: &mut Case) {
    let l = c.lower(0);
    mkdir(l.join("d"));
    write(l.join("d/mine"), "");
    lchown(l.join("d/mine"), NOBODY, NOBODY).unwrap();
    mkdir(l.join("d/sub"));
    lchown(l.join("d/sub"), NOBODY, NOBODY).unwrap();
    let m = mount_for_others(c);
    let r = as_nobody(|| {
        vec![
            e(unlink(m.join("d/mine"))),
            e(rmdir(m.join("d/sub"))),
            e(rename(m.join("d/mine"), m.join("d/other"))),
        ]
    });
    assert_eq!(r, [libc::EACCES, libc::EACCES, libc::EACCES]);
    assert!(exists(m.join("d/mine")) && exists(m.join("d/sub")));
}

fn sticky_dir_rules(c: &mut Case) {
    let l = c.lower(0);
    mkdir(l.join("tmp"));
    chmod(l.join("tmp"), 0o1777).unwrap();
    write(l.join("tmp/roots"), "");
    chmod(l.join("tmp/roots"), 0o666).unwrap();
    mkdir(l.join("tmp/rootdir"));
    chmod(l.join("tmp/rootdir"), 0o777).unwrap();
    write(l.join("tmp/nobodys"), "");
    lchown(l.join("tmp/nobodys"), NOBODY, NOBODY).unwrap();
    let m = mount_for_others(c);
    let r = as_nobody(|| {
        vec![
            e(unlink(m.join("tmp/roots"))),
            e(rename(m.join("tmp/roots"), m.join("tmp/stolen"))),
            e(rmdir(m.join("tmp/rootdir"))),
            e(rename(m.join("tmp/nobodys"), m.join("tmp/roots"))),
            e(open(m.join("tmp/roots"), libc::O_WRONLY, 0)),
            e(rename(m.join("tmp/nobodys"), m.join("tmp/renamed"))),
            e(unlink(m.join("tmp/renamed"))),
            e(open(
                m.join("tmp/new"),
                libc::O_CREAT | libc::O_WRONLY,
                0o600,
            )),
            e(unlink(m.join("tmp/new"))),
        ]
    });
    assert_eq!(
        r,
        [
            libc::EPERM,
            libc::EPERM,
            libc::EPERM,
            libc::EPERM,
            0,
            0,
            0,
            0,
            0
        ],
        "sticky dir: only owners may remove or replace entries"
    );
    assert_eq!(ls(m.join("tmp")), ["rootdir", "roots"]);
}

fn search_permission(c: &mut Case) {
    let l = c.lower(0);
    mkdir(l.join("closed"));
    write(l.join("closed/f"), "x");
    chmod(l.join("closed"), 0o700).unwrap();
    mkdir(l.join("xonly"));
    write(l.join("xonly/f"), "y");
    chmod(l.join("xonly"), 0o711).unwrap();
    let m = mount_for_others(c);
    let r = as_nobody(|| {
        vec![
            e(lstat(m.join("closed/f"))),
            e(std::fs::read_dir(m.join("closed"))),
            e(lstat(m.join("xonly/f"))),
            e(std::fs::read_to_string(m.join("xonly/f"))),
            e(std::fs::read_dir(m.join("xonly"))),
        ]
    });
    assert_eq!(r, [libc::EACCES, libc::EACCES, 0, 0, libc::EACCES]);
}

fn chmod_chown_ownership(c: &mut Case) {
    let l = c.lower(0);
    write(l.join("roots"), "");
    chmod(l.join("roots"), 0o666).unwrap();
    write(l.join("mine"), "");
    lchown(l.join("mine"), NOBODY, NOBODY).unwrap();
    let m = mount_for_others(c);
    let r = as_nobody(|| {
        vec![
            e(chmod(m.join("roots"), 0o600)),
            e(lchown(m.join("roots"), NOBODY, NOBODY)),
            e(chmod(m.join("mine"), 0o600)),
            e(lchown(m.join("mine"), 0, 0)),
            e(lchown(m.join("mine"), u32::MAX, NOBODY)),
        ]
    });
    assert_eq!(r, [libc::EPERM, libc::EPERM, 0, libc::EPERM, 0]);
    assert_eq!(lstat(m.join("mine")).unwrap().mode() & 0o7777, 0o600);
    assert_eq!(lstat(m.join("roots")).unwrap().mode() & 0o7777, 0o666);
}

fn access_syscall(c: &mut Case) {
    let l = c.lower(0);
    write(l.join("ro"), "");
    chmod(l.join("ro"), 0o644).unwrap();
    write(l.join("exe"), "");
    chmod(l.join("exe"), 0o755).unwrap();
    write(l.join("none"), "");
    chmod(l.join("none"), 0o600).unwrap();
    let m = mount_for_others(c);
    let acc = |p: &Path, mode: i32| {
        let cp = cpath(p);
        // SAFETY: valid path.
        e(check(unsafe { libc::access(cp.as_ptr(), mode) }))
    };
    let r = as_nobody(|| {
        vec![
            acc(&m.join("ro"), libc::R_OK),
            acc(&m.join("ro"), libc::W_OK),
            acc(&m.join("ro"), libc::X_OK),
            acc(&m.join("exe"), libc::X_OK),
            acc(&m.join("none"), libc::R_OK),
            acc(&m.join("none"), libc::F_OK),
        ]
    });
    assert_eq!(r, [0, libc::EACCES, libc::EACCES, 0, libc::EACCES, 0]);
}

fn owner_can_write_own_lower_file(c: &mut Case) {
    let l = c.lower(0);
    mkdir(l.join("home"));
    lchown(l.join("home"), NOBODY, NOBODY).unwrap();
    write(l.join("home/f"), "old");
    lchown(l.join("home/f"), NOBODY, NOBODY).unwrap();
    chmod(l.join("home/f"), 0o600).unwrap();
    let m = mount_for_others(c);
    let r = as_nobody(|| {
        vec![
            e(std::fs::write(m.join("home/f"), "new")),
            e(std::fs::write(m.join("home/g"), "created")),
            e(rename(m.join("home/g"), m.join("home/h"))),
            e(unlink(m.join("home/h"))),
        ]
    });
    assert_eq!(r, [0, 0, 0, 0]);
    assert_eq!(read(m.join("home/f")), "new");
    let u = lstat(c.upper().join("home/f")).unwrap();
    assert_eq!((u.uid(), u.mode() & 0o7777), (NOBODY, 0o600));
}

fn utimes_permissions(c: &mut Case) {
    let l = c.lower(0);
    write(l.join("shared"), "");
    chmod(l.join("shared"), 0o666).unwrap();
    let m = mount_for_others(c);
    let now = |p: &Path| {
        let cp = cpath(p);
        // SAFETY: valid path; NULL times means "now".
        e(check(unsafe {
            libc::utimensat(libc::AT_FDCWD, cp.as_ptr(), std::ptr::null(), 0)
        }))
    };
    let r = as_nobody(|| {
        vec![
            now(&m.join("shared")),
            e(set_times(m.join("shared"), (1, 0), (1, 0))),
        ]
    });
    assert_eq!(
        r,
        [0, libc::EPERM],
        "write access allows touch-now, only the owner sets times"
    );
}

fn xattr_permissions(c: &mut Case) {
    let l = c.lower(0);
    write(l.join("roots"), "");
    chmod(l.join("roots"), 0o644).unwrap();
    setxattr(l.join("roots"), "user.k", b"v", 0).unwrap();
    setxattr(l.join("roots"), "trusted.t", b"v", 0).unwrap();
    write(l.join("mine"), "");
    lchown(l.join("mine"), NOBODY, NOBODY).unwrap();
    let m = mount_for_others(c);
    let r = as_nobody(|| {
        let listed = listxattr(m.join("roots")).unwrap_or_default();
        vec![
            e(getxattr(m.join("roots"), "user.k")),
            e(setxattr(m.join("roots"), "user.k", b"w", 0)),
            e(setxattr(m.join("mine"), "user.k", b"w", 0)),
            e(setxattr(m.join("mine"), "trusted.t", b"w", 0)),
            i32::from(listed.iter().any(|n| n.starts_with("trusted."))),
        ]
    });
    assert_eq!(r, [0, libc::EACCES, 0, libc::EPERM, 0]);
}

fn o_noatime_needs_owner(c: &mut Case) {
    let l = c.lower(0);
    write(l.join("f"), "");
    chmod(l.join("f"), 0o644).unwrap();
    let m = mount_for_others(c);
    let r = as_nobody(|| vec![e(open(m.join("f"), libc::O_RDONLY | libc::O_NOATIME, 0))]);
    assert_eq!(r, [libc::EPERM]);
}

fn suid_cleared_on_write_by_nonowner(c: &mut Case) {
    let l = c.lower(0);
    write(l.join("f"), "0123");
    chmod(l.join("f"), 0o6777).unwrap();
    let m = mount_for_others(c);
    let r = as_nobody(|| {
        let f = open(m.join("f"), libc::O_WRONLY, 0);
        vec![e(f.and_then(|f| f.write_at(b"x", 0)))]
    });
    assert_eq!(r, [0]);
    assert_eq!(
        lstat(m.join("f")).unwrap().mode() & 0o7777,
        0o0777,
        "SUID and SGID cleared"
    );
}

fn suid_cleared_on_truncate_by_nonowner(c: &mut Case) {
    let l = c.lower(0);
    write(l.join("f"), "0123");
    chmod(l.join("f"), 0o4777).unwrap();
    let m = mount_for_others(c);
    let r = as_nobody(|| vec![e(truncate(m.join("f"), 1))]);
    assert_eq!(r, [0]);
    assert_eq!(lstat(m.join("f")).unwrap().mode() & 0o7777, 0o0777);
}

fn suid_kept_on_write_by_root(c: &mut Case) {
    let l = c.lower(0);
    write(l.join("f"), "0123");
    chmod(l.join("f"), 0o6755).unwrap();
    let m = c.mount();
    write(m.join("f"), "root writes");
    assert_eq!(
        lstat(m.join("f")).unwrap().mode() & 0o7777,
        0o6755,
        "CAP_FSETID keeps the bits"
    );
}

fn suid_cleared_on_chown(c: &mut Case) {
    let l = c.lower(0);
    write(l.join("both"), "");
    chmod(l.join("both"), 0o6755).unwrap();
    write(l.join("sgid_noexec"), "");
    chmod(l.join("sgid_noexec"), 0o2644).unwrap();
    mkdir(l.join("dir"));
    chmod(l.join("dir"), 0o6755).unwrap();
    let m = c.mount();
    lchown(m.join("both"), 1, 1).unwrap();
    lchown(m.join("sgid_noexec"), 1, 1).unwrap();
    lchown(m.join("dir"), 1, 1).unwrap();
    assert_eq!(
        lstat(m.join("both")).unwrap().mode() & 0o7777,
        0o0755,
        "chown clears SUID+SGID"
    );
    assert_eq!(
        lstat(m.join("sgid_noexec")).unwrap().mode() & 0o7777,
        0o2644,
        "SGID without group-exec is kept"
    );
    assert_eq!(
        lstat(m.join("dir")).unwrap().mode() & 0o7777,
        0o6755,
        "dirs keep their bits"
    );
}

fn setgid_dir_inheritance(c: &mut Case) {
    let l = c.lower(0);
    mkdir(l.join("shared"));
    lchown(l.join("shared"), 0, 4321).unwrap();
    chmod(l.join("shared"), 0o2775).unwrap();
    let m = c.mount();
    write(m.join("shared/f"), "");
    mkdir_mode(m.join("shared/d"), 0o755).unwrap();
    assert_eq!(
        lstat(m.join("shared/f")).unwrap().gid(),
        4321,
        "file inherits the dir's group"
    );
    let d = lstat(m.join("shared/d")).unwrap();
    assert_eq!(d.gid(), 4321);
    assert_eq!(d.mode() & 0o2000, 0o2000, "subdir inherits SGID");
}

fn nonroot_cannot_mknod_device(c: &mut Case) {
    let l = c.lower(0);
    mkdir(l.join("open"));
    chmod(l.join("open"), 0o777).unwrap();
    let m = mount_for_others(c);
    let r = as_nobody(|| {
        vec![
            e(mknod(m.join("open/null"), libc::S_IFCHR | 0o666, 1, 3)),
            e(mkfifo(m.join("open/fifo"), 0o600)),
        ]
    });
    assert_eq!(r, [libc::EPERM, 0]);
}

fn copy_up_by_nonroot_keeps_parent_owner(c: &mut Case) {
    let l = c.lower(0);
    mkdir(l.join("etc/deep"));
    chmod(l.join("etc"), 0o755).unwrap();
    lchown(l.join("etc/deep"), 0, 42).unwrap();
    chmod(l.join("etc/deep"), 0o751).unwrap();
    write(l.join("etc/deep/conf"), "old");
    lchown(l.join("etc/deep/conf"), NOBODY, NOBODY).unwrap();
    chmod(l.join("etc/deep/conf"), 0o640).unwrap();
    let m = mount_for_others(c);
    let r = as_nobody(|| vec![e(std::fs::write(m.join("etc/deep/conf"), "new"))]);
    assert_eq!(r, [0]);
    for (d, uid, gid, mode) in [("etc", 0, 0, 0o755), ("etc/deep", 0, 42, 0o751)] {
        let s = lstat(c.upper().join(d)).unwrap();
        assert_eq!(
            (s.uid(), s.gid(), s.mode() & 0o7777),
            (uid, gid, mode),
            "{d} in upper"
        );
    }
    let f = lstat(c.upper().join("etc/deep/conf")).unwrap();
    assert_eq!(
        (f.uid(), f.gid(), f.mode() & 0o7777),
        (NOBODY, NOBODY, 0o640)
    );
}

fn moving_a_dir_needs_write_on_it(c: &mut Case) {
    let l = c.lower(0);
    for d in ["a", "b"] {
        mkdir(l.join(d));
        lchown(l.join(d), NOBODY, NOBODY).unwrap();
    }
    mkdir(l.join("a/rootdir"));
    chmod(l.join("a/rootdir"), 0o755).unwrap();
    write(l.join("a/rootfile"), "");
    let m = mount_for_others(c);
    let r = as_nobody(|| {
        vec![
            e(rename(m.join("a/rootdir"), m.join("b/rootdir"))),
            e(rename(m.join("a/rootdir"), m.join("a/renamed"))),
            e(rename(m.join("a/rootfile"), m.join("b/rootfile"))),
        ]
    });
    assert_eq!(
        r,
        [libc::EACCES, 0, 0],
        "a dir changing parents needs write access to itself"
    );
}

fn sticky_dir_owner_may_delete(c: &mut Case) {
    let l = c.lower(0);
    mkdir(l.join("t"));
    lchown(l.join("t"), NOBODY, NOBODY).unwrap();
    chmod(l.join("t"), 0o1777).unwrap();
    write(l.join("t/roots"), "");
    let m = mount_for_others(c);
    let r = as_nobody(|| vec![e(unlink(m.join("t/roots")))]);
    assert_eq!(r, [0], "the sticky dir's owner may delete anything in it");
}

fn chmod_sgid_dropped_outside_group(c: &mut Case) {
    let l = c.lower(0);
    write(l.join("f"), "");
    lchown(l.join("f"), NOBODY, 0).unwrap();
    let m = mount_for_others(c);
    let r = as_nobody(|| {
        let first = e(chmod(m.join("f"), 0o2755));
        let mode = lstat(m.join("f"))
            .map(|s| (s.mode() & 0o7777) as i32)
            .unwrap_or(-1);
        vec![first, mode, e(chmod(m.join("f"), 0o4755))]
    });
    assert_eq!(r, [0, 0o755, 0], "SGID silently dropped for a non-member");
    assert_eq!(
        lstat(m.join("f")).unwrap().mode() & 0o7777,
        0o4755,
        "SUID kept for the owner"
    );
}

cases!(perms:
    read_protected_file,
    create_in_foreign_dir,
    unlink_needs_dir_write,
    sticky_dir_rules,
    search_permission,
    chmod_chown_ownership,
    access_syscall,
    owner_can_write_own_lower_file,
    utimes_permissions,
    xattr_permissions,
    o_noatime_needs_owner,
    suid_cleared_on_write_by_nonowner,
    suid_cleared_on_truncate_by_nonowner,
    suid_kept_on_write_by_root,
    suid_cleared_on_chown,
    setgid_dir_inheritance,
    nonroot_cannot_mknod_device,
    copy_up_by_nonroot_keeps_parent_owner,
    moving_a_dir_needs_write_on_it,
    sticky_dir_owner_may_delete,
    chmod_sgid_dropped_outside_group,
);
