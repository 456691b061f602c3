//! A read-only mount when no upperdir is given: the merged view reads as usual, every change
//! fails with EROFS.

use std::os::unix::fs::MetadataExt;

use crate::harness::{Case, Opq, Wh};
use crate::util::*;

fn ro_fixture(c: &mut Case) -> std::path::PathBuf {
    let (l0, l1) = (c.lower(0), c.lower(1));
    write(l1.join("f"), "bottom");
    write(l0.join("f"), "top");
    write(l1.join("gone"), "");
    c.whiteout(l0.join("gone"), Wh::Chr);
    mkdir(l0.join("d"));
    write(l0.join("d/a"), "a");
    mkdir(l1.join("d"));
    write(l1.join("d/b"), "b");
    mkdir(l0.join("o"));
    c.opaque(l0.join("o"), Opq::Xattr);
    mkdir(l1.join("o"));
    write(l1.join("o/hidden"), "");
    symlink("f", l1.join("s"));
    c.mount_ro()
}

fn ro_reads_merged_view(c: &mut Case) {
    let m = ro_fixture(c);
    assert_eq!(ls(&m), ["d", "f", "o", "s"]);
    assert_eq!(read(m.join("f")), "top");
    assert_eq!(ls(m.join("d")), ["a", "b"]);
    assert!(ls(m.join("o")).is_empty());
    assert_eq!(read(m.join("s")), "top");
    let st = statvfs(&m).unwrap();
    assert_ne!(st.f_flag & libc::ST_RDONLY, 0, "statfs reports read-only");
}

fn ro_changes_fail_erofs(c: &mut Case) {
    let m = ro_fixture(c);
    let erofs = libc::EROFS;
    assert_errno!(
        open(m.join("new"), libc::O_CREAT | libc::O_WRONLY, 0o644),
        erofs
    );
    assert_errno!(open(m.join("f"), libc::O_WRONLY, 0), erofs);
    assert_errno!(open(m.join("f"), libc::O_RDWR, 0), erofs);
    assert_errno!(mkdir_mode(m.join("nd"), 0o755), erofs);
    assert_errno!(unlink(m.join("f")), erofs);
    assert_errno!(rmdir(m.join("o")), erofs);
    assert_errno!(rename(m.join("f"), m.join("g")), erofs);
    assert_errno!(chmod(m.join("f"), 0o600), erofs);
    assert_errno!(lchown(m.join("f"), 1, 1), erofs);
    assert_errno!(truncate(m.join("f"), 0), erofs);
    assert_errno!(setxattr(m.join("f"), "user.x", b"1", 0), erofs);
    assert_errno!(link(m.join("f"), m.join("h")), erofs);
    assert_errno!(mkfifo(m.join("p"), 0o644), erofs);
    assert_errno!(std::os::unix::fs::symlink("x", m.join("s2")), erofs);
    assert_errno!(set_times(m.join("f"), (1, 0), (1, 0)), erofs);
    assert_eq!(read(m.join("f")), "top");
}

fn ro_metadata_and_xattrs(c: &mut Case) {
    let (l0, l1) = (c.lower(0), c.lower(1));
    write(l0.join("f"), "x");
    chmod(l0.join("f"), 0o604).unwrap();
    lchown(l0.join("f"), 3, 4).unwrap();
    setxattr(l0.join("f"), "user.ro", b"yes", 0).unwrap();
    write(l1.join("g"), "");
    let m = c.mount_ro();
    let s = lstat(m.join("f")).unwrap();
    assert_eq!((s.mode() & 0o7777, s.uid(), s.gid()), (0o604, 3, 4));
    assert_eq!(getxattr(m.join("f"), "user.ro").unwrap(), b"yes");
    assert_eq!(listxattr(m.join("f")).unwrap(), ["user.ro"]);
}

fn ro_readonly_open_and_mmap(c: &mut Case) {
    let (l0, l1) = (c.lower(0), c.lower(1));
    write(l0.join("f"), vec![b'r'; 8192]);
    write(l1.join("g"), "");
    let m = c.mount_ro();
    let f = open(m.join("f"), libc::O_RDONLY, 0).unwrap();
    use std::os::fd::AsRawFd;
    // SAFETY: read-only private mapping of 8192 bytes, unmapped below.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            8192,
            libc::PROT_READ,
            libc::MAP_SHARED,
            f.as_raw_fd(),
            0,
        )
    };
    assert_ne!(p, libc::MAP_FAILED);
    // SAFETY: p maps 8192 readable bytes.
    let last = unsafe { *p.cast::<u8>().add(8191) };
    // SAFETY: unmapping what we mapped.
    unsafe { libc::munmap(p, 8192) };
    assert_eq!(last, b'r');
}

cases!(ro:
    ro_reads_merged_view,
    ro_changes_fail_erofs,
    ro_metadata_and_xattrs,
    ro_readonly_open_and_mmap,
);
