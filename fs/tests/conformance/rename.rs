//! rename(2) and renameat2(2) of files and directories, including directories that exist only in
//! lower layers, over existing names, RENAME_NOREPLACE and RENAME_EXCHANGE.

use std::os::unix::fs::MetadataExt;

use crate::harness::Case;
use crate::util::*;

const NOREPLACE: u32 = libc::RENAME_NOREPLACE;
const EXCHANGE: u32 = libc::RENAME_EXCHANGE;

fn rename_upper_file(c: &mut Case) {
    c.lower(0);
    let m = c.mount();
    write(m.join("a"), "A");
    rename(m.join("a"), m.join("b")).unwrap();
    assert_errno!(lstat(m.join("a")), libc::ENOENT);
    assert_eq!(read(m.join("b")), "A");
    assert_eq!(ls(&m), ["b"]);
}

fn rename_lower_file(c: &mut Case) {
    let l = c.lower(0);
    write(l.join("a"), "lower A");
    chmod(l.join("a"), 0o604).unwrap();
    let m = c.mount();
    let ino = lstat(m.join("a")).unwrap().ino();
    rename(m.join("a"), m.join("b")).unwrap();
    assert_errno!(lstat(m.join("a")), libc::ENOENT);
    assert_eq!(read(m.join("b")), "lower A");
    let b = lstat(m.join("b")).unwrap();
    assert_eq!(b.mode() & 0o7777, 0o604);
    assert_eq!(b.ino(), ino, "rename keeps the inode number");
    assert!(
        is_whiteout(c.upper().join("a")),
        "old lower name is whited out"
    );
}

fn rename_lower_file_across_dirs(c: &mut Case) {
    let l = c.lower(0);
    mkdir(l.join("src"));
    mkdir(l.join("dst"));
    write(l.join("src/f"), "moving");
    write(l.join("src/stay"), "");
    let m = c.mount();
    rename(m.join("src/f"), m.join("dst/f2")).unwrap();
    assert_eq!(ls(m.join("src")), ["stay"]);
    assert_eq!(ls(m.join("dst")), ["f2"]);
    assert_eq!(read(m.join("dst/f2")), "moving");
}

fn rename_over_existing_file(c: &mut Case) {
    let (l0, l1) = (c.lower(0), c.lower(1));
    write(l0.join("src"), "source");
    write(l1.join("dst"), "destination");
    write(l0.join("src2"), "source2");
    let m = c.mount();
    rename(m.join("src"), m.join("dst")).unwrap();
    assert_eq!(read(m.join("dst")), "source");
    write(m.join("up"), "upper");
    rename(m.join("up"), m.join("src2")).unwrap();
    assert_eq!(read(m.join("src2")), "upper");
    assert_eq!(ls(&m), ["dst", "src2"]);
}

fn rename_upper_dir(c: &mut Case) {
    c.lower(0);
    let m = c.mount();
    mkdir(m.join("d/sub"));
    write(m.join("d/sub/f"), "x");
    rename(m.join("d"), m.join("e")).unwrap();
    assert_eq!(read(m.join("e/sub/f")), "x");
    assert_errno!(lstat(m.join("d")), libc::ENOENT);
}

fn rename_lower_only_dir(c: &mut Case) {
    let l = c.lower(0);
    mkdir(l.join("d/sub/deeper"));
    write(l.join("d/a"), "a");
    write(l.join("d/sub/b"), "b");
    write(l.join("d/sub/deeper/c"), "c");
    symlink("a", l.join("d/link"));
    let m = c.mount();
    rename(m.join("d"), m.join("moved")).unwrap();
    assert_errno!(lstat(m.join("d")), libc::ENOENT);
    assert_eq!(ls(m.join("moved")), ["a", "link", "sub"]);
    assert_eq!(read(m.join("moved/sub/deeper/c")), "c");
    assert_eq!(read(m.join("moved/link")), "a");
    write(m.join("moved/sub/new"), "n");
    assert_eq!(ls(m.join("moved/sub")), ["b", "deeper", "new"]);
    mkdir_mode(m.join("d"), 0o755).unwrap();
    assert!(ls(m.join("d")).is_empty(), "the old name is free and empty");
}

fn rename_merged_dir(c: &mut Case) {
    let (l0, l1, l2) = (c.lower(0), c.lower(1), c.lower(2));
    for (i, l) in [&l0, &l1, &l2].into_iter().enumerate() {
        mkdir(l.join("d"));
        write(l.join(format!("d/f{i}")), format!("{i}"));
        write(l.join("d/shared"), format!("{i}"));
    }
    let m = c.mount();
    rename(m.join("d"), m.join("e")).unwrap();
    assert_eq!(ls(m.join("e")), ["f0", "f1", "f2", "shared"]);
    assert_eq!(read(m.join("e/shared")), "0");
    assert_eq!(read(m.join("e/f2")), "2");
    assert_errno!(lstat(m.join("d")), libc::ENOENT);
}

fn rename_dir_into_other_dir(c: &mut Case) {
    let l = c.lower(0);
    mkdir(l.join("a/inner"));
    write(l.join("a/inner/f"), "f");
    mkdir(l.join("b"));
    let m = c.mount();
    rename(m.join("a/inner"), m.join("b/inner")).unwrap();
    assert_eq!(read(m.join("b/inner/f")), "f");
    assert!(ls(m.join("a")).is_empty());
}

fn rename_dir_over_empty_dir(c: &mut Case) {
    let l = c.lower(0);
    mkdir(l.join("src"));
    write(l.join("src/f"), "f");
    mkdir(l.join("empty"));
    let m = c.mount();
    rename(m.join("src"), m.join("empty")).unwrap();
    assert_eq!(ls(m.join("empty")), ["f"]);
    assert_errno!(lstat(m.join("src")), libc::ENOENT);
}

fn rename_dir_over_nonempty_dir(c: &mut Case) {
    let (l0, l1) = (c.lower(0), c.lower(1));
    mkdir(l0.join("src"));
    mkdir(l0.join("full"));
    mkdir(l1.join("full"));
    write(l1.join("full/x"), "");
    let m = c.mount();
    assert_errno!(rename(m.join("src"), m.join("full")), libc::ENOTEMPTY);
    unlink(m.join("full/x")).unwrap();
    rename(m.join("src"), m.join("full")).unwrap();
    assert!(ls(m.join("full")).is_empty());
}

fn rename_type_mismatch(c: &mut Case) {
    let l = c.lower(0);
    mkdir(l.join("d"));
    write(l.join("f"), "");
    let m = c.mount();
    assert_errno!(rename(m.join("f"), m.join("d")), libc::EISDIR);
    assert_errno!(rename(m.join("d"), m.join("f")), libc::ENOTDIR);
}

fn rename_into_own_subdir_einval(c: &mut Case) {
    let l = c.lower(0);
    mkdir(l.join("a/b"));
    let m = c.mount();
    assert_errno!(rename(m.join("a"), m.join("a/b/c")), libc::EINVAL);
}

fn rename_missing_source(c: &mut Case) {
    c.lower(0);
    let m = c.mount();
    assert_errno!(rename(m.join("nope"), m.join("x")), libc::ENOENT);
}

fn rename_same_file_noop(c: &mut Case) {
    let l = c.lower(0);
    write(l.join("a"), "a");
    let m = c.mount();
    rename(m.join("a"), m.join("a")).unwrap();
    link(m.join("a"), m.join("b")).unwrap();
    rename(m.join("a"), m.join("b")).unwrap();
    assert_eq!(
        ls(&m),
        ["a", "b"],
        "rename between hard links of one inode does nothing"
    );
}

fn rename_noreplace(c: &mut Case) {
    let l = c.lower(0);
    write(l.join("a"), "a");
    write(l.join("b"), "b");
    let m = c.mount();
    assert_errno!(renameat2(m.join("a"), m.join("b"), NOREPLACE), libc::EEXIST);
    assert_eq!(read(m.join("b")), "b");
    renameat2(m.join("a"), m.join("c"), NOREPLACE).unwrap();
    assert_eq!(read(m.join("c")), "a");
    unlink(m.join("b")).unwrap();
    renameat2(m.join("c"), m.join("b"), NOREPLACE).unwrap();
    assert_eq!(ls(&m), ["b"]);
}

fn rename_exchange_files(c: &mut Case) {
    let l = c.lower(0);
    write(l.join("lower"), "from lower");
    let m = c.mount();
    write(m.join("upper"), "from upper");
    renameat2(m.join("lower"), m.join("upper"), EXCHANGE).unwrap();
    assert_eq!(read(m.join("lower")), "from upper");
    assert_eq!(read(m.join("upper")), "from lower");
    assert_errno!(
        renameat2(m.join("lower"), m.join("missing"), EXCHANGE),
        libc::ENOENT
    );
}

fn rename_exchange_dirs(c: &mut Case) {
    let l = c.lower(0);
    mkdir(l.join("a"));
    write(l.join("a/fa"), "");
    let m = c.mount();
    mkdir(m.join("b"));
    write(m.join("b/fb"), "");
    renameat2(m.join("a"), m.join("b"), EXCHANGE).unwrap();
    assert_eq!(ls(m.join("a")), ["fb"]);
    assert_eq!(ls(m.join("b")), ["fa"]);
}

fn rename_then_recreate_old_name(c: &mut Case) {
    let l = c.lower(0);
    write(l.join("f"), "original");
    mkdir(l.join("d"));
    write(l.join("d/x"), "");
    let m = c.mount();
    rename(m.join("f"), m.join("g")).unwrap();
    write(m.join("f"), "replacement");
    assert_eq!(read(m.join("f")), "replacement");
    assert_eq!(read(m.join("g")), "original");
    rename(m.join("d"), m.join("e")).unwrap();
    mkdir_mode(m.join("d"), 0o755).unwrap();
    assert!(ls(m.join("d")).is_empty());
    assert_eq!(ls(m.join("e")), ["x"]);
}

fn rename_chain_back_to_origin(c: &mut Case) {
    let l = c.lower(0);
    write(l.join("a"), "payload");
    let m = c.mount();
    rename(m.join("a"), m.join("b")).unwrap();
    rename(m.join("b"), m.join("c")).unwrap();
    rename(m.join("c"), m.join("a")).unwrap();
    assert_eq!(ls(&m), ["a"]);
    assert_eq!(read(m.join("a")), "payload");
}

fn rename_updates_parent_listing_and_mtime(c: &mut Case) {
    let l = c.lower(0);
    mkdir(l.join("src"));
    mkdir(l.join("dst"));
    write(l.join("src/f"), "");
    set_times(l.join("src"), (1, 0), (1, 0)).unwrap();
    set_times(l.join("dst"), (1, 0), (1, 0)).unwrap();
    let m = c.mount();
    rename(m.join("src/f"), m.join("dst/f")).unwrap();
    assert!(
        lstat(m.join("src")).unwrap().mtime() > 1,
        "source dir mtime updated"
    );
    assert!(
        lstat(m.join("dst")).unwrap().mtime() > 1,
        "target dir mtime updated"
    );
}

fn rename_symlink(c: &mut Case) {
    let l = c.lower(0);
    symlink("somewhere", l.join("s"));
    let m = c.mount();
    rename(m.join("s"), m.join("t")).unwrap();
    assert_eq!(
        std::fs::read_link(m.join("t")).unwrap(),
        std::path::Path::new("somewhere")
    );
}

fn rename_lower_dir_twice(c: &mut Case) {
    let l = c.lower(0);
    mkdir(l.join("a/b"));
    write(l.join("a/b/f"), "f");
    let m = c.mount();
    rename(m.join("a"), m.join("x")).unwrap();
    rename(m.join("x/b"), m.join("y")).unwrap();
    rename(m.join("x"), m.join("z")).unwrap();
    assert_eq!(read(m.join("y/f")), "f");
    assert!(ls(m.join("z")).is_empty());
    assert_eq!(ls(&m), ["y", "z"]);
}

fn rename_dir_updates_dotdot(c: &mut Case) {
    let l = c.lower(0);
    mkdir(l.join("a/sub/x"));
    mkdir(l.join("b"));
    let m = c.mount();
    rename(m.join("a/sub"), m.join("b/sub")).unwrap();
    let b = lstat(m.join("b")).unwrap().ino();
    assert_eq!(lstat(m.join("b/sub/..")).unwrap().ino(), b);
    assert_eq!(lstat(m.join("b/sub/x/../..")).unwrap().ino(), b);
    let dotdot = raw_readdir(m.join("b/sub"))
        .unwrap()
        .into_iter()
        .find(|(n, _)| n == "..");
    assert!(dotdot.is_some());
}

fn rename_whiteout_then_rename_back(c: &mut Case) {
    let (l0, l1) = (c.lower(0), c.lower(1));
    mkdir(l0.join("d"));
    write(l0.join("d/top"), "");
    mkdir(l1.join("d"));
    write(l1.join("d/bottom"), "b");
    let m = c.mount();
    rename(m.join("d"), m.join("e")).unwrap();
    rename(m.join("e"), m.join("d")).unwrap();
    assert_eq!(ls(m.join("d")), ["bottom", "top"]);
    assert_eq!(read(m.join("d/bottom")), "b");
    assert_eq!(ls(&m), ["d"]);
}

cases!(rename:
    rename_upper_file,
    rename_lower_file,
    rename_lower_file_across_dirs,
    rename_over_existing_file,
    rename_upper_dir,
    rename_lower_only_dir,
    rename_merged_dir,
    rename_dir_into_other_dir,
    rename_dir_over_empty_dir,
    rename_dir_over_nonempty_dir,
    rename_type_mismatch,
    rename_into_own_subdir_einval,
    rename_missing_source,
    rename_same_file_noop,
    rename_noreplace,
    rename_exchange_files,
    rename_exchange_dirs,
    rename_then_recreate_old_name,
    rename_chain_back_to_origin,
    rename_updates_parent_listing_and_mtime,
    rename_symlink,
    rename_lower_dir_twice,
    rename_dir_updates_dotdot,
    rename_whiteout_then_rename_back,
);
