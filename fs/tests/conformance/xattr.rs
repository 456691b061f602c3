//! Extended attributes: get/set/list/remove, flags, sizes; overlay's private xattrs never show.

use crate::harness::{Case, Opq, Wh};
use crate::util::*;

fn set_get_on_new_file(c: &mut Case) {
    c.lower(0);
    let m = c.mount();
    write(m.join("f"), "");
    setxattr(m.join("f"), "user.k", b"value", 0).unwrap();
    assert_eq!(getxattr(m.join("f"), "user.k").unwrap(), b"value");
    assert_eq!(getxattr_size(m.join("f"), "user.k").unwrap(), 5);
    setxattr(m.join("f"), "user.k", b"", 0).unwrap();
    assert_eq!(getxattr(m.join("f"), "user.k").unwrap(), b"");
}

fn list_and_remove(c: &mut Case) {
    let l = c.lower(0);
    write(l.join("f"), "");
    setxattr(l.join("f"), "user.lower", b"1", 0).unwrap();
    let m = c.mount();
    setxattr(m.join("f"), "user.a", b"1", 0).unwrap();
    setxattr(m.join("f"), "user.b", b"2", 0).unwrap();
    assert_eq!(
        listxattr(m.join("f")).unwrap(),
        ["user.a", "user.b", "user.lower"]
    );
    let size = listxattr_size(m.join("f")).unwrap();
    // A size query may over-estimate (kernel overlayfs counts its hidden xattrs), never under.
    assert!(size >= "user.a\0user.b\0user.lower\0".len(), "size {size}");
    removexattr(m.join("f"), "user.a").unwrap();
    removexattr(m.join("f"), "user.lower").unwrap();
    assert_eq!(listxattr(m.join("f")).unwrap(), ["user.b"]);
    assert_errno!(getxattr(m.join("f"), "user.a"), libc::ENODATA);
    assert_errno!(getxattr(m.join("f"), "user.lower"), libc::ENODATA);
    assert_errno!(removexattr(m.join("f"), "user.a"), libc::ENODATA);
}

fn missing_xattr_enodata(c: &mut Case) {
    let l = c.lower(0);
    write(l.join("f"), "");
    let m = c.mount();
    assert_errno!(getxattr(m.join("f"), "user.none"), libc::ENODATA);
    assert_errno!(removexattr(m.join("f"), "user.none"), libc::ENODATA);
}

fn create_replace_flags(c: &mut Case) {
    let l = c.lower(0);
    write(l.join("f"), "");
    setxattr(l.join("f"), "user.there", b"1", 0).unwrap();
    let m = c.mount();
    assert_errno!(
        setxattr(m.join("f"), "user.there", b"2", libc::XATTR_CREATE),
        libc::EEXIST
    );
    assert_errno!(
        setxattr(m.join("f"), "user.absent", b"2", libc::XATTR_REPLACE),
        libc::ENODATA
    );
    setxattr(m.join("f"), "user.there", b"3", libc::XATTR_REPLACE).unwrap();
    setxattr(m.join("f"), "user.new", b"4", libc::XATTR_CREATE).unwrap();
    assert_eq!(getxattr(m.join("f"), "user.there").unwrap(), b"3");
    assert_eq!(getxattr(m.join("f"), "user.new").unwrap(), b"4");
}

fn lower_xattrs_readable_without_copy_up(c: &mut Case) {
    let l = c.lower(0);
    mkdir(l.join("d"));
    write(l.join("d/f"), "");
    setxattr(l.join("d/f"), "user.x", b"lower-value", 0).unwrap();
    setxattr(l.join("d"), "user.dir", b"dir-value", 0).unwrap();
    let m = c.mount();
    assert_eq!(getxattr(m.join("d/f"), "user.x").unwrap(), b"lower-value");
    assert_eq!(getxattr(m.join("d"), "user.dir").unwrap(), b"dir-value");
    assert!(!exists(c.upper().join("d")));
}

fn xattr_on_dirs(c: &mut Case) {
    let (l0, l1) = (c.lower(0), c.lower(1));
    mkdir(l0.join("d"));
    mkdir(l1.join("d"));
    write(l1.join("d/f"), "");
    let m = c.mount();
    setxattr(m.join("d"), "user.tag", b"t", 0).unwrap();
    assert_eq!(getxattr(m.join("d"), "user.tag").unwrap(), b"t");
    assert_eq!(
        ls(m.join("d")),
        ["f"],
        "setxattr on a merged dir keeps it merged"
    );
    removexattr(m.join("d"), "user.tag").unwrap();
    assert_errno!(getxattr(m.join("d"), "user.tag"), libc::ENODATA);
}

fn large_value(c: &mut Case) {
    c.lower(0);
    let m = c.mount();
    write(m.join("f"), "");
    let v: Vec<u8> = (0..3000u32).map(|i| (i % 251) as u8).collect();
    setxattr(m.join("f"), "user.big", &v, 0).unwrap();
    assert_eq!(getxattr(m.join("f"), "user.big").unwrap(), v);
    assert_eq!(getxattr_size(m.join("f"), "user.big").unwrap(), 3000);
}

fn small_buffer_erange(c: &mut Case) {
    c.lower(0);
    let m = c.mount();
    write(m.join("f"), "");
    setxattr(m.join("f"), "user.k", b"0123456789", 0).unwrap();
    let p = cpath(&m.join("f"));
    let n = std::ffi::CString::new("user.k").unwrap();
    let mut buf = [0u8; 4];
    // SAFETY: valid path/name; buffer too small on purpose.
    let r = unsafe { libc::lgetxattr(p.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    assert_eq!(r, -1);
    assert_eq!(
        std::io::Error::last_os_error().raw_os_error(),
        Some(libc::ERANGE)
    );
    // SAFETY: as above, for the list.
    let r = unsafe { libc::llistxattr(p.as_ptr(), buf.as_mut_ptr().cast(), 2) };
    assert_eq!(r, -1);
    assert_eq!(
        std::io::Error::last_os_error().raw_os_error(),
        Some(libc::ERANGE)
    );
}

fn trusted_namespace_as_root(c: &mut Case) {
    c.lower(0);
    let m = c.mount();
    write(m.join("f"), "");
    setxattr(m.join("f"), "trusted.mine", b"t", 0).unwrap();
    assert_eq!(getxattr(m.join("f"), "trusted.mine").unwrap(), b"t");
    assert!(listxattr(m.join("f"))
        .unwrap()
        .contains(&"trusted.mine".to_string()));
}

fn unknown_namespace_eopnotsupp(c: &mut Case) {
    c.lower(0);
    let m = c.mount();
    write(m.join("f"), "");
    assert_errno!(setxattr(m.join("f"), "bogus.ns", b"x", 0), libc::EOPNOTSUPP);
}

fn overlay_xattrs_hidden_after_changes(c: &mut Case) {
    let (l0, l1) = (c.lower(0), c.lower(1));
    mkdir(l0.join("opq"));
    write(l0.join("opq/f"), "");
    c.opaque(l0.join("opq"), Opq::Xattr);
    mkdir(l1.join("opq"));
    mkdir(l0.join("d"));
    write(l0.join("d/x"), "");
    c.whiteout(l0.join("d/gone"), Wh::Xattr);
    mkdir(l1.join("d"));
    write(l1.join("d/gone"), "");
    write(l1.join("d/y"), "");
    mkdir(l1.join("r"));
    write(l1.join("r/f"), "");
    let m = c.mount();
    // Make the upper dir carry overlay metadata too.
    std::fs::remove_dir_all(m.join("r")).unwrap();
    mkdir_mode(m.join("r"), 0o755).unwrap();
    write(m.join("d/x"), "copied");
    rename(m.join("d/y"), m.join("d/y2")).unwrap();
    for p in ["", "opq", "d", "r", "d/x", "d/y2"] {
        let names = listxattr(m.join(p)).unwrap();
        assert!(
            !names
                .iter()
                .any(|n| n.starts_with("trusted.overlay.") || n.starts_with("user.overlay.")),
            "{p}: overlay xattrs visible: {names:?}"
        );
    }
    assert_errno!(getxattr(m.join("opq"), &ovl("opaque")), libc::ENODATA);
    assert_errno!(getxattr(m.join("r"), &ovl("opaque")), libc::ENODATA);
    assert_errno!(getxattr(m.join("d"), &ovl("opaque")), libc::ENODATA);
}

fn xattr_survives_rename(c: &mut Case) {
    let l = c.lower(0);
    write(l.join("f"), "");
    setxattr(l.join("f"), "user.keep", b"k", 0).unwrap();
    let m = c.mount();
    rename(m.join("f"), m.join("g")).unwrap();
    assert_eq!(getxattr(m.join("g"), "user.keep").unwrap(), b"k");
}

fn xattr_on_symlink_trusted(c: &mut Case) {
    let l = c.lower(0);
    symlink("t", l.join("s"));
    let m = c.mount();
    setxattr(m.join("s"), "trusted.link", b"v", 0).unwrap();
    assert_eq!(getxattr(m.join("s"), "trusted.link").unwrap(), b"v");
    assert_errno!(setxattr(m.join("s"), "user.nope", b"v", 0), libc::EPERM);
}

/// Overlay xattrs set through the mount are stored escaped (`<ns>.overlay.overlay.X`) and read
/// back unescaped, as kernel overlayfs does since 6.7: what lets a union filesystem (strata in a
/// container) keep its whiteouts and opaque marks in an upper dir inside ours.
fn overlay_xattrs_set_through_mount_are_escaped(c: &mut Case) {
    let l = c.lower(0);
    mkdir(l.join("d"));
    write(l.join("d/f"), "");
    let m = c.mount();
    write(m.join("z"), "");
    setxattr(m.join("z"), &ovl("whiteout"), b"", 0).unwrap();
    setxattr(m.join("d"), &ovl("opaque"), b"x", 0).unwrap();
    assert_eq!(getxattr(m.join("z"), &ovl("whiteout")).unwrap(), b"");
    assert_eq!(getxattr(m.join("d"), &ovl("opaque")).unwrap(), b"x");
    assert!(listxattr(m.join("z")).unwrap().contains(&ovl("whiteout")));
    // Ours are not the mount's own marks: z stays a file, d keeps its lower content.
    assert_eq!(ls(&m), ["d", "z"]);
    assert_eq!(ls(m.join("d")), ["f"]);
    c.unmount();
    let escaped = |n: &str| ovl(&format!("overlay.{n}"));
    let u = c.upper();
    assert_eq!(getxattr(u.join("z"), &escaped("whiteout")).unwrap(), b"");
    assert_errno!(getxattr(u.join("z"), &ovl("whiteout")), libc::ENODATA);
    assert_eq!(getxattr(u.join("d"), &escaped("opaque")).unwrap(), b"x");
    assert_errno!(getxattr(u.join("d"), &ovl("opaque")), libc::ENODATA);
}

cases!(xattr:
    overlay_xattrs_set_through_mount_are_escaped,
    set_get_on_new_file,
    list_and_remove,
    missing_xattr_enodata,
    create_replace_flags,
    lower_xattrs_readable_without_copy_up,
    xattr_on_dirs,
    large_value,
    small_buffer_erange,
    trusted_namespace_as_root,
    unknown_namespace_eopnotsupp,
    overlay_xattrs_hidden_after_changes,
    xattr_survives_rename,
    xattr_on_symlink_trusted,
);
