//! Whiteouts hide lower names and opaque dirs hide lower contents, in every on-disk form.

use crate::harness::{Case, Opq, Wh};
use crate::util::*;

fn hides_file(c: &mut Case, form: Wh) {
    let (l0, l1) = (c.lower(0), c.lower(1));
    write(l1.join("gone"), "hidden");
    write(l1.join("kept"), "kept");
    c.whiteout(l0.join("gone"), form);
    let m = c.mount();
    assert_errno!(lstat(m.join("gone")), libc::ENOENT);
    assert_errno!(open(m.join("gone"), libc::O_RDONLY, 0), libc::ENOENT);
    assert_eq!(ls(&m), ["kept"]);
}

fn hides_dir(c: &mut Case, form: Wh) {
    let (l0, l1) = (c.lower(0), c.lower(1));
    mkdir(l0.join("p"));
    write(l0.join("p/top"), "");
    mkdir(l1.join("p/gone/sub"));
    write(l1.join("p/gone/sub/f"), "x");
    write(l1.join("p/other"), "");
    c.whiteout(l0.join("p/gone"), form);
    let m = c.mount();
    assert_errno!(lstat(m.join("p/gone")), libc::ENOENT);
    assert_errno!(lstat(m.join("p/gone/sub/f")), libc::ENOENT);
    assert_eq!(ls(m.join("p")), ["other", "top"]);
}

fn opaque_hides_children(c: &mut Case, form: Opq) {
    let (l0, l1, l2) = (c.lower(0), c.lower(1), c.lower(2));
    mkdir(l0.join("d"));
    write(l0.join("d/mine"), "0");
    c.opaque(l0.join("d"), form);
    mkdir(l1.join("d/sub"));
    write(l1.join("d/below"), "1");
    mkdir(l2.join("d"));
    write(l2.join("d/bottom"), "2");
    write(l1.join("outside"), "o");
    let m = c.mount();
    assert_eq!(ls(m.join("d")), ["mine"]);
    assert_errno!(lstat(m.join("d/below")), libc::ENOENT);
    assert_errno!(lstat(m.join("d/sub")), libc::ENOENT);
    assert_eq!(read(m.join("outside")), "o");
}

fn whiteout_chr_hides_file(c: &mut Case) {
    hides_file(c, Wh::Chr)
}
fn whiteout_xattr_hides_file(c: &mut Case) {
    hides_file(c, Wh::Xattr)
}
fn whiteout_user_xattr_hides_file(c: &mut Case) {
    hides_file(c, Wh::UserXattr)
}
fn whiteout_aufs_hides_file(c: &mut Case) {
    hides_file(c, Wh::Aufs)
}
fn whiteout_chr_hides_dir(c: &mut Case) {
    hides_dir(c, Wh::Chr)
}
fn whiteout_xattr_hides_dir(c: &mut Case) {
    hides_dir(c, Wh::Xattr)
}
fn whiteout_user_xattr_hides_dir(c: &mut Case) {
    hides_dir(c, Wh::UserXattr)
}
fn whiteout_aufs_hides_dir(c: &mut Case) {
    hides_dir(c, Wh::Aufs)
}
fn opaque_xattr_hides_children(c: &mut Case) {
    opaque_hides_children(c, Opq::Xattr)
}
fn opaque_user_xattr_hides_children(c: &mut Case) {
    opaque_hides_children(c, Opq::UserXattr)
}
fn opaque_aufs_marker_hides_children(c: &mut Case) {
    opaque_hides_children(c, Opq::Aufs)
}

fn whiteout_in_middle_layer(c: &mut Case) {
    let (l0, l1, l2) = (c.lower(0), c.lower(1), c.lower(2));
    write(l2.join("a"), "bottom-a");
    write(l2.join("b"), "bottom-b");
    c.whiteout(l1.join("a"), Wh::Chr);
    c.whiteout(l1.join("b"), Wh::Chr);
    write(l0.join("b"), "top-b");
    let m = c.mount();
    assert_errno!(lstat(m.join("a")), libc::ENOENT);
    assert_eq!(read(m.join("b")), "top-b");
    assert_eq!(ls(&m), ["b"]);
}

fn opaque_in_middle_layer(c: &mut Case) {
    let (l0, l1, l2) = (c.lower(0), c.lower(1), c.lower(2));
    mkdir(l0.join("d"));
    write(l0.join("d/top"), "");
    mkdir(l1.join("d"));
    write(l1.join("d/mid"), "");
    c.opaque(l1.join("d"), Opq::Xattr);
    mkdir(l2.join("d"));
    write(l2.join("d/low"), "");
    let m = c.mount();
    assert_eq!(ls(m.join("d")), ["mid", "top"]);
}

fn xattr_whiteout_keeps_siblings(c: &mut Case) {
    // opaque=x only marks "has xattr whiteouts": other lower children stay visible.
    let (l0, l1) = (c.lower(0), c.lower(1));
    mkdir(l0.join("d"));
    write(l0.join("d/new"), "n");
    mkdir(l1.join("d"));
    write(l1.join("d/gone"), "g");
    write(l1.join("d/keep"), "k");
    c.whiteout(l0.join("d/gone"), Wh::Xattr);
    let m = c.mount();
    assert_eq!(ls(m.join("d")), ["keep", "new"]);
    assert_eq!(read(m.join("d/keep")), "k");
}

fn whiteout_not_listed_any_form(c: &mut Case) {
    let (l0, l1) = (c.lower(0), c.lower(1));
    for n in ["a", "b", "c"] {
        write(l1.join(n), n);
    }
    write(l1.join("stay"), "");
    c.whiteout(l0.join("a"), Wh::Chr);
    c.whiteout(l0.join("b"), Wh::Aufs);
    c.whiteout(l0.join("c"), Wh::Xattr);
    let m = c.mount();
    let raw = raw_readdir(&m).unwrap();
    let mut names: Vec<_> = raw.into_iter().map(|(n, _)| n).collect();
    names.sort();
    assert_eq!(names, [".", "..", "stay"]);
}

fn whiteout_without_lower_is_invisible(c: &mut Case) {
    let (l0, l1) = (c.lower(0), c.lower(1));
    write(l1.join("real"), "");
    c.whiteout(l0.join("never-existed"), Wh::Chr);
    let m = c.mount();
    assert_eq!(ls(&m), ["real"]);
    assert_errno!(lstat(m.join("never-existed")), libc::ENOENT);
}

fn create_over_whiteout(c: &mut Case) {
    let (l0, l1) = (c.lower(0), c.lower(1));
    write(l1.join("f"), "old lower content");
    c.whiteout(l0.join("f"), Wh::Chr);
    let m = c.mount();
    assert_errno!(lstat(m.join("f")), libc::ENOENT);
    let f = open(
        m.join("f"),
        libc::O_CREAT | libc::O_WRONLY | libc::O_EXCL,
        0o644,
    )
    .unwrap();
    drop(f);
    assert_eq!(read(m.join("f")), "");
    write(m.join("f"), "new");
    assert_eq!(read(m.join("f")), "new");
    assert_eq!(ls(&m), ["f"]);
}

fn mkdir_over_whiteout_is_empty(c: &mut Case) {
    let (l0, l1) = (c.lower(0), c.lower(1));
    mkdir(l1.join("d"));
    write(l1.join("d/old"), "");
    c.whiteout(l0.join("d"), Wh::Chr);
    let m = c.mount();
    mkdir_mode(m.join("d"), 0o755).unwrap();
    assert!(
        ls(m.join("d")).is_empty(),
        "lower children must stay hidden"
    );
    assert_errno!(lstat(m.join("d/old")), libc::ENOENT);
    assert!(
        is_opaque(c.upper().join("d")),
        "new dir over a whiteout must be opaque in upper"
    );
}

fn upper_whiteout_preexisting(c: &mut Case) {
    let l = c.lower(0);
    write(l.join("f"), "");
    mkdir(l.join("d"));
    write(l.join("d/x"), "");
    write(l.join("keep"), "");
    mknod(c.upper().join("f"), libc::S_IFCHR | 0o600, 0, 0).unwrap();
    mknod(c.upper().join("d"), libc::S_IFCHR | 0o600, 0, 0).unwrap();
    let m = c.mount();
    assert_eq!(ls(&m), ["keep"]);
}

fn upper_opaque_preexisting(c: &mut Case) {
    let l = c.lower(0);
    mkdir(l.join("d"));
    write(l.join("d/lower"), "");
    mkdir(c.upper().join("d"));
    write(c.upper().join("d/upper"), "");
    setxattr(c.upper().join("d"), &ovl("opaque"), b"y", 0).unwrap();
    let m = c.mount();
    assert_eq!(ls(m.join("d")), ["upper"]);
}

fn opaque_dir_in_top_shows_own_subdirs(c: &mut Case) {
    let (l0, l1) = (c.lower(0), c.lower(1));
    mkdir(l0.join("d/sub"));
    write(l0.join("d/sub/mine"), "");
    c.opaque(l0.join("d"), Opq::Xattr);
    mkdir(l1.join("d/sub"));
    write(l1.join("d/sub/theirs"), "");
    let m = c.mount();
    assert_eq!(
        ls(m.join("d/sub")),
        ["mine"],
        "children of an opaque dir are not merged either"
    );
}

fn opaque_marker_not_listed(c: &mut Case) {
    let (l0, l1) = (c.lower(0), c.lower(1));
    mkdir(l0.join("d"));
    write(l0.join("d/a"), "");
    c.opaque(l0.join("d"), Opq::Aufs);
    mkdir(l1.join("d"));
    write(l1.join("d/b"), "");
    let m = c.mount();
    let raw = raw_readdir(m.join("d")).unwrap();
    let mut names: Vec<_> = raw.into_iter().map(|(n, _)| n).collect();
    names.sort();
    assert_eq!(names, [".", "..", "a"]);
}

fn whiteouts_in_several_layers(c: &mut Case) {
    let (l0, l1, l2, l3) = (c.lower(0), c.lower(1), c.lower(2), c.lower(3));
    write(l3.join("a"), "3");
    write(l3.join("b"), "3");
    write(l3.join("c"), "3");
    c.whiteout(l2.join("a"), Wh::Chr);
    write(l1.join("a"), "1");
    c.whiteout(l1.join("b"), Wh::Aufs);
    c.whiteout(l0.join("a"), Wh::Chr);
    let m = c.mount();
    assert_eq!(ls(&m), ["c"]);
}

fn user_overlay_xattrs_hidden(c: &mut Case) {
    let (l0, l1) = (c.lower(0), c.lower(1));
    mkdir(l0.join("o"));
    write(l0.join("o/mine"), "");
    c.opaque(l0.join("o"), Opq::UserXattr);
    mkdir(l1.join("o"));
    write(l1.join("o/theirs"), "");
    mkdir(l0.join("x"));
    c.whiteout(l0.join("x/gone"), Wh::UserXattr);
    mkdir(l1.join("x"));
    write(l1.join("x/gone"), "");
    write(l1.join("x/kept"), "");
    setxattr(l0.join("o"), "user.mine", b"1", 0).unwrap();
    let m = c.mount();
    assert_eq!(ls(m.join("o")), ["mine"]);
    assert_eq!(ls(m.join("x")), ["kept"]);
    assert_eq!(listxattr(m.join("o")).unwrap(), ["user.mine"]);
    assert!(listxattr(m.join("x")).unwrap().is_empty());
    assert_errno!(getxattr(m.join("o"), "user.overlay.opaque"), libc::ENODATA);
}

cases!(whiteout:
    whiteout_chr_hides_file,
    whiteout_xattr_hides_file,
    whiteout_user_xattr_hides_file,
    whiteout_aufs_hides_file,
    whiteout_chr_hides_dir,
    whiteout_xattr_hides_dir,
    whiteout_user_xattr_hides_dir,
    whiteout_aufs_hides_dir,
    opaque_xattr_hides_children,
    opaque_user_xattr_hides_children,
    opaque_aufs_marker_hides_children,
    whiteout_in_middle_layer,
    opaque_in_middle_layer,
    xattr_whiteout_keeps_siblings,
    whiteout_not_listed_any_form,
    whiteout_without_lower_is_invisible,
    create_over_whiteout,
    mkdir_over_whiteout_is_empty,
    upper_whiteout_preexisting,
    upper_opaque_preexisting,
    opaque_dir_in_top_shows_own_subdirs,
    opaque_marker_not_listed,
    whiteouts_in_several_layers,
    user_overlay_xattrs_hidden,
);
