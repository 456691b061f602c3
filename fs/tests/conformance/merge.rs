//! Reads merge across layers; the top-most version of a name wins.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};

use crate::harness::Case;
use crate::util::*;

fn single_lower_visible(c: &mut Case) {
    let l = c.lower(0);
    write(l.join("f"), "hello");
    mkdir(l.join("d/e"));
    write(l.join("d/e/g"), "deep");
    symlink("f", l.join("s"));
    let m = c.mount();
    assert_eq!(ls(&m), ["d", "f", "s"]);
    assert_eq!(read(m.join("f")), "hello");
    assert_eq!(read(m.join("d/e/g")), "deep");
    assert_eq!(read(m.join("s")), "hello");
}

fn top_layer_wins(c: &mut Case) {
    let (l0, l1, l2) = (c.lower(0), c.lower(1), c.lower(2));
    write(l2.join("f"), "bottom");
    write(l1.join("f"), "middle");
    write(l0.join("f"), "top");
    write(l2.join("g"), "bottom-g");
    write(l1.join("g"), "middle-g");
    let m = c.mount();
    assert_eq!(read(m.join("f")), "top");
    assert_eq!(read(m.join("g")), "middle-g");
    assert_eq!(lstat(m.join("f")).unwrap().len(), 3);
}

fn upper_wins_over_lower(c: &mut Case) {
    let l = c.lower(0);
    write(l.join("f"), "lower");
    write(c.upper().join("f"), "upper!");
    let m = c.mount();
    assert_eq!(read(m.join("f")), "upper!");
}

fn dirs_merge_across_layers(c: &mut Case) {
    let (l0, l1) = (c.lower(0), c.lower(1));
    mkdir(l0.join("d"));
    mkdir(l1.join("d"));
    write(l0.join("d/a"), "a0");
    write(l1.join("d/b"), "b1");
    write(l1.join("d/a"), "a1");
    mkdir(c.upper().join("d"));
    write(c.upper().join("d/u"), "u");
    let m = c.mount();
    assert_eq!(ls(m.join("d")), ["a", "b", "u"]);
    assert_eq!(read(m.join("d/a")), "a0");
    assert_eq!(read(m.join("d/b")), "b1");
}

fn deep_dirs_merge(c: &mut Case) {
    for i in 0..3 {
        let l = c.lower(i);
        mkdir(l.join("a/b/c"));
        write(l.join(format!("a/b/c/f{i}")), format!("{i}"));
        write(l.join(format!("a/g{i}")), format!("g{i}"));
    }
    let m = c.mount();
    assert_eq!(ls(m.join("a/b/c")), ["f0", "f1", "f2"]);
    assert_eq!(ls(m.join("a")), ["b", "g0", "g1", "g2"]);
    assert_eq!(read(m.join("a/b/c/f2")), "2");
}

fn file_hides_lower_dir(c: &mut Case) {
    let (l0, l1) = (c.lower(0), c.lower(1));
    write(l0.join("x"), "file");
    mkdir(l1.join("x"));
    write(l1.join("x/child"), "hidden");
    let m = c.mount();
    assert!(lstat(m.join("x")).unwrap().is_file());
    assert_eq!(read(m.join("x")), "file");
    assert_errno!(lstat(m.join("x/child")), libc::ENOTDIR);
}

fn dir_hides_lower_file(c: &mut Case) {
    let (l0, l1) = (c.lower(0), c.lower(1));
    mkdir(l0.join("x"));
    write(l0.join("x/top"), "t");
    write(l1.join("x"), "file below");
    let m = c.mount();
    assert!(lstat(m.join("x")).unwrap().is_dir());
    assert_eq!(ls(m.join("x")), ["top"]);
}

fn dir_over_dir_over_file_stops(c: &mut Case) {
    // A non-directory in a middle layer ends the merge: the bottom dir's children stay hidden.
    let (l0, l1, l2) = (c.lower(0), c.lower(1), c.lower(2));
    mkdir(l0.join("x"));
    write(l0.join("x/a"), "a");
    write(l1.join("x"), "file");
    mkdir(l2.join("x"));
    write(l2.join("x/b"), "b");
    let m = c.mount();
    assert_eq!(ls(m.join("x")), ["a"]);
    assert_errno!(lstat(m.join("x/b")), libc::ENOENT);
}

fn symlink_in_lower(c: &mut Case) {
    let l = c.lower(0);
    write(l.join("target"), "T");
    symlink("target", l.join("rel"));
    symlink("/nonexistent/abs", l.join("dangling"));
    let m = c.mount();
    assert_eq!(
        fs::read_link(m.join("rel")).unwrap(),
        std::path::Path::new("target")
    );
    assert_eq!(
        fs::read_link(m.join("dangling")).unwrap(),
        std::path::Path::new("/nonexistent/abs")
    );
    assert!(lstat(m.join("dangling")).unwrap().file_type().is_symlink());
    assert_eq!(read(m.join("rel")), "T");
    assert_errno!(fs::metadata(m.join("dangling")), libc::ENOENT);
}

fn symlink_hides_lower_dir(c: &mut Case) {
    let (l0, l1) = (c.lower(0), c.lower(1));
    mkdir(l0.join("real"));
    write(l0.join("real/r"), "r");
    symlink("real", l0.join("d"));
    mkdir(l1.join("d"));
    write(l1.join("d/hidden"), "h");
    let m = c.mount();
    assert!(lstat(m.join("d")).unwrap().file_type().is_symlink());
    assert_eq!(ls(m.join("d")), ["r"]);
}

fn readdir_no_duplicates(c: &mut Case) {
    let mut expect = Vec::new();
    for i in 0..3 {
        let l = c.lower(i);
        mkdir(l.join("d"));
        for j in 0..40 {
            if j % 3 == i || j % 5 == 0 {
                write(l.join(format!("d/n{j:02}")), format!("{i}"));
            }
        }
    }
    for j in 0..40 {
        if j % 5 == 0 || j % 3 < 3 {
            expect.push(format!("n{j:02}"));
        }
    }
    let m = c.mount();
    let raw = raw_readdir(m.join("d")).unwrap();
    let mut names: Vec<String> = raw.iter().map(|(n, _)| n.clone()).collect();
    names.sort();
    let mut want: Vec<String> = vec![".".into(), "..".into()];
    want.extend(expect);
    want.sort();
    assert_eq!(names, want);
    // Top wins for names in several layers.
    assert_eq!(read(m.join("d/n00")), "0");
    assert_eq!(read(m.join("d/n05")), "0");
    assert_eq!(read(m.join("d/n10")), "0");
    assert_eq!(read(m.join("d/n04")), "1");
}

fn many_layers(c: &mut Case) {
    for i in 0..24 {
        let l = c.lower(i);
        write(l.join(format!("only{i:02}")), format!("{i}"));
        write(l.join("shared"), format!("layer{i}"));
        mkdir(l.join("d"));
        write(l.join(format!("d/f{i:02}")), "x");
    }
    let m = c.mount();
    assert_eq!(read(m.join("shared")), "layer0");
    assert_eq!(read(m.join("only23")), "23");
    assert_eq!(ls(&m).len(), 24 + 2);
    assert_eq!(ls(m.join("d")).len(), 24);
}

fn sixty_four_layers_with_markers(c: &mut Case) {
    // Layer i (0 = top) adds f{i}, overrides "shared", and every 8th layer whites out the file the
    // layer below it added; layer 40 makes d opaque, so d only merges layers 0..=40.
    for i in 0..64usize {
        let l = c.lower(i);
        write(l.join(format!("f{i:02}")), format!("{i}"));
        write(l.join("shared"), format!("layer{i}"));
        mkdir(l.join("d"));
        write(l.join(format!("d/g{i:02}")), "");
        if i % 8 == 0 && i < 63 {
            c.whiteout(l.join(format!("f{:02}", i + 1)), crate::harness::Wh::Chr);
        }
        if i == 40 {
            c.opaque(l.join("d"), crate::harness::Opq::Xattr);
        }
    }
    let m = c.mount();
    assert_eq!(read(m.join("shared")), "layer0");
    let names = ls(&m);
    for i in 0..64usize {
        let whited = i % 8 == 1;
        assert_eq!(names.contains(&format!("f{i:02}")), !whited, "f{i:02}");
    }
    assert_eq!(ls(m.join("d")).len(), 41);
    assert_eq!(read(m.join("f63")), "63");
}

fn large_directory(c: &mut Case) {
    let (l0, l1) = (c.lower(0), c.lower(1));
    mkdir(l0.join("big"));
    mkdir(l1.join("big"));
    for j in 0..1500 {
        let l = if j % 2 == 0 { &l0 } else { &l1 };
        write(l.join(format!("big/entry-with-a-longish-name-{j:05}")), "");
    }
    let m = c.mount();
    let names = ls(m.join("big"));
    assert_eq!(names.len(), 1500);
    assert_eq!(names[0], "entry-with-a-longish-name-00000");
    assert_eq!(names[1499], "entry-with-a-longish-name-01499");
}

fn lower_metadata_preserved(c: &mut Case) {
    let l = c.lower(0);
    write(l.join("f"), "abc");
    chmod(l.join("f"), 0o640).unwrap();
    lchown(l.join("f"), 1234, 5678).unwrap();
    set_times(l.join("f"), (1_000_000, 5), (1_200_000_000, 123_456_789)).unwrap();
    mkdir(l.join("d"));
    chmod(l.join("d"), 0o711).unwrap();
    lchown(l.join("d"), 42, 43).unwrap();
    let m = c.mount();
    let f = lstat(m.join("f")).unwrap();
    assert_eq!(f.mode() & 0o7777, 0o640);
    assert_eq!((f.uid(), f.gid()), (1234, 5678));
    assert_eq!((f.mtime(), f.mtime_nsec()), (1_200_000_000, 123_456_789));
    assert_eq!(f.size(), 3);
    assert_eq!(f.nlink(), 1);
    let d = lstat(m.join("d")).unwrap();
    assert_eq!(d.permissions().mode() & 0o7777, 0o711);
    assert_eq!((d.uid(), d.gid()), (42, 43));
}

fn merged_dir_attrs_from_top(c: &mut Case) {
    let (l0, l1) = (c.lower(0), c.lower(1));
    mkdir(l0.join("d"));
    mkdir(l1.join("d"));
    chmod(l0.join("d"), 0o750).unwrap();
    chmod(l1.join("d"), 0o777).unwrap();
    lchown(l0.join("d"), 7, 8).unwrap();
    let m = c.mount();
    let d = lstat(m.join("d")).unwrap();
    assert_eq!(d.mode() & 0o7777, 0o750);
    assert_eq!((d.uid(), d.gid()), (7, 8));
}

fn empty_lower_dir_visible(c: &mut Case) {
    let l = c.lower(0);
    mkdir(l.join("empty"));
    let m = c.mount();
    assert!(lstat(m.join("empty")).unwrap().is_dir());
    assert!(ls(m.join("empty")).is_empty());
}

fn special_files_in_lower(c: &mut Case) {
    let l = c.lower(0);
    mkfifo(l.join("fifo"), 0o644).unwrap();
    mknod(l.join("null"), libc::S_IFCHR | 0o666, 1, 3).unwrap();
    let m = c.mount();
    use std::os::unix::fs::FileTypeExt;
    assert!(lstat(m.join("fifo")).unwrap().file_type().is_fifo());
    let n = lstat(m.join("null")).unwrap();
    assert!(n.file_type().is_char_device());
    assert_eq!(n.rdev(), libc::makedev(1, 3));
}

fn missing_name_enoent(c: &mut Case) {
    let l = c.lower(0);
    write(l.join("f"), "");
    let m = c.mount();
    assert_errno!(lstat(m.join("nope")), libc::ENOENT);
    assert_errno!(lstat(m.join("nope/deeper")), libc::ENOENT);
    assert_errno!(lstat(m.join("f/child")), libc::ENOTDIR);
    assert_errno!(open(m.join("nope"), libc::O_RDONLY, 0), libc::ENOENT);
}

fn readdir_after_changes(c: &mut Case) {
    let (l0, l1) = (c.lower(0), c.lower(1));
    mkdir(l0.join("d"));
    mkdir(l1.join("d"));
    write(l0.join("d/a"), "");
    write(l1.join("d/b"), "");
    let m = c.mount();
    assert_eq!(ls(m.join("d")), ["a", "b"]);
    write(m.join("d/c"), "");
    unlink(m.join("d/b")).unwrap();
    assert_eq!(ls(m.join("d")), ["a", "c"]);
    fs::rename(m.join("d/a"), m.join("d/z")).unwrap();
    assert_eq!(ls(m.join("d")), ["c", "z"]);
}

fn lower_hidden_xattrs_not_leaked(c: &mut Case) {
    let (l0, l1) = (c.lower(0), c.lower(1));
    mkdir(l0.join("d"));
    write(l0.join("d/x"), "");
    mkdir(l1.join("d"));
    write(l1.join("d/y"), "");
    setxattr(l0.join("d"), "user.visible", b"1", 0).unwrap();
    setxattr(l0.join("d"), &ovl("opaque"), b"x", 0).unwrap();
    let m = c.mount();
    assert_eq!(ls(m.join("d")), ["x", "y"], "opaque=x is not opaque");
    let names = listxattr(m.join("d")).unwrap();
    assert!(names.contains(&"user.visible".to_string()));
    assert!(
        !names.iter().any(|n| n.contains("overlay")),
        "overlay xattrs leaked: {names:?}"
    );
    assert_errno!(getxattr(m.join("d"), &ovl("opaque")), libc::ENODATA);
}

cases!(merge:
    single_lower_visible,
    top_layer_wins,
    upper_wins_over_lower,
    dirs_merge_across_layers,
    deep_dirs_merge,
    file_hides_lower_dir,
    dir_hides_lower_file,
    dir_over_dir_over_file_stops,
    symlink_in_lower,
    symlink_hides_lower_dir,
    readdir_no_duplicates,
    many_layers,
    sixty_four_layers_with_markers,
    large_directory,
    lower_metadata_preserved,
    merged_dir_attrs_from_top,
    empty_lower_dir_visible,
    special_files_in_lower,
    missing_name_enoent,
    readdir_after_changes,
    lower_hidden_xattrs_not_leaked,
);
