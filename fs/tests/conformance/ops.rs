//! Namespace operations: create, mkdir, unlink, rmdir, mknod, mkfifo, symlink, O_EXCL, O_TRUNC —
//! and the on-disk format they leave in the upper dir.

use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use crate::harness::Case;
use crate::util::*;

fn create_new_file(c: &mut Case) {
    let l = c.lower(0);
    write(l.join("existing"), "");
    let m = c.mount();
    write(m.join("new"), "fresh");
    assert_eq!(read(m.join("new")), "fresh");
    assert_eq!(ls(&m), ["existing", "new"]);
    assert_eq!(
        read(c.upper().join("new")),
        "fresh",
        "new files live in the upper dir"
    );
}

fn create_in_lower_only_dir_copies_parents(c: &mut Case) {
    let l = c.lower(0);
    mkdir(l.join("a/b/c"));
    chmod(l.join("a"), 0o751).unwrap();
    chmod(l.join("a/b"), 0o715).unwrap();
    lchown(l.join("a/b"), 11, 12).unwrap();
    write(l.join("a/b/c/old"), "o");
    let m = c.mount();
    write(m.join("a/b/c/new"), "n");
    assert_eq!(ls(m.join("a/b/c")), ["new", "old"]);
    let ub = lstat(c.upper().join("a/b")).unwrap();
    assert!(ub.is_dir());
    assert_eq!(ub.mode() & 0o7777, 0o715, "copied-up parent keeps its mode");
    assert_eq!(
        (ub.uid(), ub.gid()),
        (11, 12),
        "copied-up parent keeps its owner"
    );
    assert_eq!(lstat(c.upper().join("a")).unwrap().mode() & 0o7777, 0o751);
    assert!(
        !exists(c.upper().join("a/b/c/old")),
        "siblings are not copied up"
    );
}

fn mkdir_new_and_nested(c: &mut Case) {
    let l = c.lower(0);
    mkdir(l.join("d"));
    let m = c.mount();
    mkdir_mode(m.join("x"), 0o755).unwrap();
    mkdir_mode(m.join("x/y"), 0o700).unwrap();
    mkdir_mode(m.join("d/z"), 0o755).unwrap();
    assert!(lstat(m.join("x/y")).unwrap().is_dir());
    assert_eq!(ls(m.join("d")), ["z"]);
    assert_eq!(lstat(m.join("x/y")).unwrap().mode() & 0o777, 0o700);
}

fn mkdir_existing_eexist(c: &mut Case) {
    let l = c.lower(0);
    write(l.join("f"), "");
    mkdir(l.join("d"));
    symlink("nowhere", l.join("s"));
    let m = c.mount();
    assert_errno!(mkdir_mode(m.join("f"), 0o755), libc::EEXIST);
    assert_errno!(mkdir_mode(m.join("d"), 0o755), libc::EEXIST);
    assert_errno!(mkdir_mode(m.join("s"), 0o755), libc::EEXIST);
    assert_errno!(mkdir_mode(m.join("f/x"), 0o755), libc::ENOTDIR);
    assert_errno!(mkdir_mode(m.join("no/x"), 0o755), libc::ENOENT);
}

fn unlink_upper_only_file(c: &mut Case) {
    c.lower(0);
    let m = c.mount();
    write(m.join("tmp"), "x");
    unlink(m.join("tmp")).unwrap();
    assert_errno!(lstat(m.join("tmp")), libc::ENOENT);
    let u = c.upper().join("tmp");
    assert!(
        !exists(&u) || is_whiteout(&u),
        "upper keeps at most a whiteout"
    );
}

fn unlink_lower_file_writes_chr_whiteout(c: &mut Case) {
    let l = c.lower(0);
    mkdir(l.join("d"));
    write(l.join("d/f"), "lower");
    write(l.join("d/g"), "");
    let m = c.mount();
    unlink(m.join("d/f")).unwrap();
    assert_errno!(lstat(m.join("d/f")), libc::ENOENT);
    assert_eq!(ls(m.join("d")), ["g"]);
    assert!(
        is_whiteout(c.upper().join("d/f")),
        "unlink of a lower file leaves a char 0/0"
    );
}

fn unlink_copied_up_file_whiteout(c: &mut Case) {
    let l = c.lower(0);
    write(l.join("f"), "lower");
    let m = c.mount();
    write(m.join("f"), "changed");
    unlink(m.join("f")).unwrap();
    assert_errno!(lstat(m.join("f")), libc::ENOENT);
    assert!(is_whiteout(c.upper().join("f")));
}

fn unlink_errors(c: &mut Case) {
    let l = c.lower(0);
    mkdir(l.join("d"));
    let m = c.mount();
    assert_errno!(unlink(m.join("d")), libc::EISDIR);
    assert_errno!(unlink(m.join("missing")), libc::ENOENT);
    assert_errno!(rmdir(m.join("missing")), libc::ENOENT);
}

fn rmdir_upper_dir(c: &mut Case) {
    c.lower(0);
    let m = c.mount();
    mkdir_mode(m.join("d"), 0o755).unwrap();
    rmdir(m.join("d")).unwrap();
    assert_errno!(lstat(m.join("d")), libc::ENOENT);
    let u = c.upper().join("d");
    assert!(
        !exists(&u) || is_whiteout(&u),
        "upper keeps at most a whiteout"
    );
}

fn rmdir_lower_empty_dir_whiteout(c: &mut Case) {
    let l = c.lower(0);
    mkdir(l.join("d"));
    let m = c.mount();
    rmdir(m.join("d")).unwrap();
    assert_errno!(lstat(m.join("d")), libc::ENOENT);
    assert!(
        is_whiteout(c.upper().join("d")),
        "rmdir of a lower dir leaves a char 0/0"
    );
}

fn rmdir_lower_nonempty_enotempty(c: &mut Case) {
    let (l0, l1) = (c.lower(0), c.lower(1));
    mkdir(l0.join("d"));
    mkdir(l1.join("d"));
    write(l1.join("d/child"), "");
    mkdir(l0.join("e"));
    write(l0.join("e/child"), "");
    let m = c.mount();
    assert_errno!(rmdir(m.join("d")), libc::ENOTEMPTY);
    assert_errno!(rmdir(m.join("e")), libc::ENOTEMPTY);
    assert!(lstat(m.join("d/child")).is_ok());
}

fn rmdir_after_children_deleted(c: &mut Case) {
    let (l0, l1) = (c.lower(0), c.lower(1));
    mkdir(l0.join("d"));
    write(l0.join("d/a"), "");
    mkdir(l1.join("d/sub"));
    write(l1.join("d/b"), "");
    let m = c.mount();
    unlink(m.join("d/a")).unwrap();
    assert_errno!(rmdir(m.join("d")), libc::ENOTEMPTY);
    unlink(m.join("d/b")).unwrap();
    assert_errno!(rmdir(m.join("d")), libc::ENOTEMPTY);
    rmdir(m.join("d/sub")).unwrap();
    rmdir(m.join("d")).unwrap();
    assert_errno!(lstat(m.join("d")), libc::ENOENT);
    assert!(ls(&m).is_empty());
}

fn rmdir_notdir(c: &mut Case) {
    let l = c.lower(0);
    write(l.join("f"), "");
    symlink("f", l.join("s"));
    let m = c.mount();
    assert_errno!(rmdir(m.join("f")), libc::ENOTDIR);
    assert_errno!(rmdir(m.join("s")), libc::ENOTDIR);
}

fn rm_rf_then_mkdir_is_opaque(c: &mut Case) {
    let (l0, l1) = (c.lower(0), c.lower(1));
    mkdir(l0.join("d/x/y"));
    write(l0.join("d/x/y/z"), "");
    write(l0.join("d/top"), "");
    mkdir(l1.join("d/w"));
    write(l1.join("d/w/deep"), "");
    let m = c.mount();
    fs::remove_dir_all(m.join("d")).unwrap();
    assert_errno!(lstat(m.join("d")), libc::ENOENT);
    mkdir_mode(m.join("d"), 0o755).unwrap();
    assert!(ls(m.join("d")).is_empty());
    write(m.join("d/new"), "");
    assert_eq!(ls(m.join("d")), ["new"]);
    let ud = c.upper().join("d");
    assert!(lstat(&ud).unwrap().is_dir());
    let opq = getxattr(&ud, &ovl("opaque")).unwrap();
    assert_eq!(
        opq, b"y",
        "recreated dir must carry trusted.overlay.opaque=y"
    );
}

fn rm_rf_deep_tree(c: &mut Case) {
    let l = c.lower(0);
    for i in 0..5 {
        mkdir(l.join(format!("t/a{i}/b/c")));
        write(l.join(format!("t/a{i}/b/c/f")), "x");
        write(l.join(format!("t/a{i}/g")), "y");
        symlink("g", l.join(format!("t/a{i}/s")));
    }
    write(l.join("keep"), "");
    let m = c.mount();
    fs::remove_dir_all(m.join("t")).unwrap();
    assert_eq!(ls(&m), ["keep"]);
    assert!(is_whiteout(c.upper().join("t")));
}

fn recreate_after_unlink(c: &mut Case) {
    let l = c.lower(0);
    write(l.join("f"), "lower lower lower");
    let m = c.mount();
    unlink(m.join("f")).unwrap();
    write(m.join("f"), "new");
    assert_eq!(read(m.join("f")), "new");
    assert_eq!(lstat(m.join("f")).unwrap().len(), 3);
    assert!(lstat(c.upper().join("f")).unwrap().is_file());
}

fn replace_file_with_dir(c: &mut Case) {
    let (l0, l1) = (c.lower(0), c.lower(1));
    write(l0.join("x"), "file");
    mkdir(l1.join("x"));
    write(l1.join("x/under"), "");
    let m = c.mount();
    unlink(m.join("x")).unwrap();
    mkdir_mode(m.join("x"), 0o755).unwrap();
    assert!(
        ls(m.join("x")).is_empty(),
        "a dir that replaces a whiteout must be opaque"
    );
}

fn o_excl_existing_lower(c: &mut Case) {
    let l = c.lower(0);
    write(l.join("f"), "keep");
    let m = c.mount();
    let flags = libc::O_CREAT | libc::O_EXCL | libc::O_WRONLY;
    assert_errno!(open(m.join("f"), flags, 0o644), libc::EEXIST);
    assert_eq!(read(m.join("f")), "keep");
    open(m.join("g"), flags, 0o644).unwrap();
    assert_errno!(open(m.join("g"), flags, 0o644), libc::EEXIST);
}

fn o_excl_dangling_symlink(c: &mut Case) {
    let l = c.lower(0);
    symlink("target-missing", l.join("s"));
    let m = c.mount();
    let flags = libc::O_CREAT | libc::O_EXCL | libc::O_WRONLY;
    assert_errno!(open(m.join("s"), flags, 0o644), libc::EEXIST);
    assert!(!exists(m.join("target-missing")));
}

fn o_trunc_lower_file(c: &mut Case) {
    let l = c.lower(0);
    write(l.join("f"), "0123456789");
    let m = c.mount();
    let mut f = open(m.join("f"), libc::O_WRONLY | libc::O_TRUNC, 0).unwrap();
    assert_eq!(f.metadata().unwrap().len(), 0);
    f.write_all(b"ab").unwrap();
    drop(f);
    assert_eq!(read(m.join("f")), "ab");
}

fn o_creat_existing_no_trunc(c: &mut Case) {
    let l = c.lower(0);
    write(l.join("f"), "content");
    chmod(l.join("f"), 0o644).unwrap();
    let m = c.mount();
    let mut f = open(m.join("f"), libc::O_RDWR | libc::O_CREAT, 0o600).unwrap();
    let mut s = String::new();
    f.read_to_string(&mut s).unwrap();
    assert_eq!(s, "content");
    assert_eq!(
        lstat(m.join("f")).unwrap().mode() & 0o777,
        0o644,
        "mode of existing file kept"
    );
}

fn o_creat_through_dangling_symlink(c: &mut Case) {
    let l = c.lower(0);
    symlink("made", l.join("s"));
    let m = c.mount();
    let mut f = open(m.join("s"), libc::O_WRONLY | libc::O_CREAT, 0o644).unwrap();
    f.write_all(b"via link").unwrap();
    drop(f);
    assert_eq!(read(m.join("made")), "via link");
    assert!(lstat(m.join("s")).unwrap().file_type().is_symlink());
}

fn mknod_fifo_and_devices(c: &mut Case) {
    c.lower(0);
    let m = c.mount();
    mkfifo(m.join("fifo"), 0o640).unwrap();
    mknod(m.join("null"), libc::S_IFCHR | 0o666, 1, 3).unwrap();
    mknod(m.join("blk"), libc::S_IFBLK | 0o600, 7, 0).unwrap();
    mknod(m.join("reg"), libc::S_IFREG | 0o600, 0, 0).unwrap();
    let f = lstat(m.join("fifo")).unwrap();
    assert!(f.file_type().is_fifo());
    let n = lstat(m.join("null")).unwrap();
    assert!(n.file_type().is_char_device());
    assert_eq!(n.rdev(), libc::makedev(1, 3));
    let b = lstat(m.join("blk")).unwrap();
    assert!(b.file_type().is_block_device());
    assert_eq!(b.rdev(), libc::makedev(7, 0));
    assert!(lstat(m.join("reg")).unwrap().is_file());
    assert_eq!(ls(&m), ["blk", "fifo", "null", "reg"]);
}

fn fifo_works_through_mount(c: &mut Case) {
    c.lower(0);
    let m = c.mount();
    mkfifo(m.join("p"), 0o600).unwrap();
    let path = m.join("p");
    let writer = std::thread::spawn(move || {
        let mut w = open(&path, libc::O_WRONLY, 0).unwrap();
        w.write_all(b"through the pipe").unwrap();
    });
    let mut r = open(m.join("p"), libc::O_RDONLY, 0).unwrap();
    let mut s = String::new();
    r.read_to_string(&mut s).unwrap();
    writer.join().unwrap();
    assert_eq!(s, "through the pipe");
}

fn unix_socket_bind(c: &mut Case) {
    c.lower(0);
    let m = c.mount();
    let path = m.join("sock");
    let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
    assert!(lstat(&path).unwrap().file_type().is_socket());
    let mut client = std::os::unix::net::UnixStream::connect(&path).unwrap();
    let (mut server, _) = listener.accept().unwrap();
    client.write_all(b"ping").unwrap();
    let mut buf = [0u8; 4];
    server.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"ping");
}

fn mknod_whiteout_device_eperm(c: &mut Case) {
    // A 0/0 char device is the whiteout format: overlayfs refuses to create one through the mount.
    c.lower(0);
    let m = c.mount();
    assert_errno!(mknod(m.join("w"), libc::S_IFCHR | 0o600, 0, 0), libc::EPERM);
    assert_errno!(lstat(m.join("w")), libc::ENOENT);
    mknod(m.join("ok"), libc::S_IFCHR | 0o600, 0, 1).unwrap();
}

fn mknod_over_existing_eexist(c: &mut Case) {
    let l = c.lower(0);
    write(l.join("f"), "");
    let m = c.mount();
    assert_errno!(mkfifo(m.join("f"), 0o600), libc::EEXIST);
    assert_errno!(
        mknod(m.join("f"), libc::S_IFCHR | 0o600, 1, 3),
        libc::EEXIST
    );
}

fn symlink_create_and_readlink(c: &mut Case) {
    let l = c.lower(0);
    mkdir(l.join("d"));
    write(l.join("d/t"), "T");
    let m = c.mount();
    symlink("d/t", m.join("rel"));
    symlink("/abs/path/that/does/not/exist", m.join("abs"));
    let long = "x".repeat(1000);
    symlink(&long, m.join("long"));
    assert_eq!(fs::read_link(m.join("rel")).unwrap(), Path::new("d/t"));
    assert_eq!(read(m.join("rel")), "T");
    assert_eq!(
        fs::read_link(m.join("abs")).unwrap(),
        Path::new("/abs/path/that/does/not/exist")
    );
    assert_eq!(fs::read_link(m.join("long")).unwrap(), Path::new(&long));
    let s = lstat(m.join("rel")).unwrap();
    assert!(s.file_type().is_symlink());
    assert_eq!(s.len(), 3, "symlink size is the target length");
    assert_eq!(s.mode() & 0o777, 0o777);
    assert_eq!(
        fs::read_link(c.upper().join("rel")).unwrap(),
        Path::new("d/t")
    );
}

fn symlink_existing_eexist(c: &mut Case) {
    let l = c.lower(0);
    write(l.join("f"), "");
    let m = c.mount();
    assert_errno!(std::os::unix::fs::symlink("x", m.join("f")), libc::EEXIST);
}

fn readlink_non_symlink_einval(c: &mut Case) {
    let l = c.lower(0);
    write(l.join("f"), "");
    mkdir(l.join("d"));
    let m = c.mount();
    assert_errno!(fs::read_link(m.join("f")), libc::EINVAL);
    assert_errno!(fs::read_link(m.join("d")), libc::EINVAL);
}

fn symlink_loop_eloop(c: &mut Case) {
    let l = c.lower(0);
    symlink("b", l.join("a"));
    symlink("a", l.join("b"));
    let m = c.mount();
    assert_errno!(fs::metadata(m.join("a")), libc::ELOOP);
    assert!(lstat(m.join("a")).unwrap().file_type().is_symlink());
}

fn symlink_to_dir_traversal(c: &mut Case) {
    let (l0, l1) = (c.lower(0), c.lower(1));
    mkdir(l1.join("real/sub"));
    write(l1.join("real/sub/f"), "via");
    symlink("real/sub", l0.join("link"));
    let m = c.mount();
    assert_eq!(read(m.join("link/f")), "via");
    write(m.join("link/g"), "new");
    assert_eq!(read(m.join("real/sub/g")), "new");
}

cases!(ops:
    create_new_file,
    create_in_lower_only_dir_copies_parents,
    mkdir_new_and_nested,
    mkdir_existing_eexist,
    unlink_upper_only_file,
    unlink_lower_file_writes_chr_whiteout,
    unlink_copied_up_file_whiteout,
    unlink_errors,
    rmdir_upper_dir,
    rmdir_lower_empty_dir_whiteout,
    rmdir_lower_nonempty_enotempty,
    rmdir_after_children_deleted,
    rmdir_notdir,
    rm_rf_then_mkdir_is_opaque,
    rm_rf_deep_tree,
    recreate_after_unlink,
    replace_file_with_dir,
    o_excl_existing_lower,
    o_excl_dangling_symlink,
    o_trunc_lower_file,
    o_creat_existing_no_trunc,
    o_creat_through_dangling_symlink,
    mknod_fifo_and_devices,
    fifo_works_through_mount,
    unix_socket_bind,
    mknod_over_existing_eexist,
    mknod_whiteout_device_eperm,
    symlink_create_and_readlink,
    symlink_existing_eexist,
    readlink_non_symlink_einval,
    symlink_loop_eloop,
    symlink_to_dir_traversal,
);
