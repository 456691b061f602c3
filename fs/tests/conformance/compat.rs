//! Format compatibility: an upper dir written through the target mounts under kernel overlayfs
//! with the same merged view, and a stack prepared by kernel overlayfs mounts under the target with
//! the same view (full tree: kinds, modes, owners, contents, symlink targets, xattrs, file mtimes).

use std::fs;
use std::path::Path;

use crate::harness::{self, Case, Opq, Target, Wh};
use crate::util::*;

/// Lower layers with every kernel-readable marker.
fn build_lowers(c: &mut Case) {
    let (l0, l1, l2) = (c.lower(0), c.lower(1), c.lower(2));
    write(l2.join("base"), "base");
    write(l2.join("overridden"), "bottom");
    write(l1.join("overridden"), "middle");
    mkdir(l2.join("etc/conf.d"));
    write(l2.join("etc/passwd"), "root:x:0:0\n");
    write(l2.join("etc/conf.d/a"), "a");
    mkdir(l1.join("etc/conf.d"));
    write(l1.join("etc/conf.d/b"), "b");
    write(l2.join("etc/removed-by-chr"), "");
    c.whiteout(l1.join("etc/removed-by-chr"), Wh::Chr);
    mkdir(l1.join("var"));
    write(l2.join("var-file"), "");
    mkdir(l2.join("var/lib"));
    write(l2.join("var/lib/hidden"), "");
    mkdir(l0.join("var/lib"));
    write(l0.join("var/lib/top"), "t");
    c.opaque(l0.join("var/lib"), Opq::Xattr);
    mkdir(l1.join("x"));
    write(l1.join("x/gone"), "");
    write(l1.join("x/kept"), "k");
    mkdir(l0.join("x"));
    c.whiteout(l0.join("x/gone"), Wh::Xattr);
    mkdir(l2.join("usr/lib/deep"));
    write(l2.join("usr/lib/deep/lib.so"), vec![7u8; 10000]);
    symlink("lib/deep/lib.so", l2.join("usr/libfoo"));
    mkdir(l2.join("data"));
    write(l2.join("data/big"), vec![1u8; 100_000]);
    write(l2.join("data/owned"), "o");
    lchown(l2.join("data/owned"), 1000, 1000).unwrap();
    setxattr(l2.join("data/owned"), "user.tag", b"t", 0).unwrap();
}

/// A container's worth of changes.
fn mutate(m: &Path, with_dir_renames: bool) {
    write(m.join("new-file"), "created");
    write(m.join("overridden"), "written");
    unlink(m.join("base")).unwrap();
    fs::remove_dir_all(m.join("etc/conf.d")).unwrap();
    mkdir_mode(m.join("etc/conf.d"), 0o750).unwrap();
    write(m.join("etc/conf.d/fresh"), "f");
    let mut p = fs::OpenOptions::new()
        .append(true)
        .open(m.join("etc/passwd"))
        .unwrap();
    std::io::Write::write_all(&mut p, b"nobody:x:65534:65534\n").unwrap();
    drop(p);
    chmod(m.join("data/big"), 0o600).unwrap();
    lchown(m.join("data/owned"), 2000, 2001).unwrap();
    setxattr(m.join("data/owned"), "user.added", b"a", 0).unwrap();
    truncate(m.join("data/big"), 5000).unwrap();
    symlink("../new-file", m.join("data/link"));
    link(m.join("new-file"), m.join("data/hardlink")).unwrap();
    mkfifo(m.join("data/fifo"), 0o644).unwrap();
    mkdir(m.join("made/deeper"));
    write(m.join("made/deeper/f"), "deep");
    rename(m.join("usr/libfoo"), m.join("usr/libbar")).unwrap();
    rename(m.join("var/lib/top"), m.join("var/top-moved")).unwrap();
    unlink(m.join("x/kept")).unwrap();
    write(m.join("x/gone"), "recreated");
    rmdir(m.join("var/lib")).unwrap();
    set_times(m.join("usr/lib/deep/lib.so"), (5, 0), (6, 0)).unwrap();
    if with_dir_renames {
        rename(m.join("usr/lib"), m.join("usr/lib64")).unwrap();
        rename(m.join("etc"), m.join("etc.old")).unwrap();
        write(m.join("usr/lib64/deep/added"), "added");
    }
}

fn check_expected(v: &std::collections::BTreeMap<std::path::PathBuf, Entry>, dir_renames: bool) {
    let has = |p: &str| v.contains_key(Path::new(p));
    for gone in [
        "base",
        "etc/conf.d/a",
        "etc/conf.d/b",
        "etc/removed-by-chr",
        "var/lib",
        "x/kept",
        "usr/libfoo",
    ] {
        assert!(
            !has(gone),
            "{gone} must be gone: {:?}",
            v.keys().collect::<Vec<_>>()
        );
    }
    let etc = if dir_renames { "etc.old" } else { "etc" };
    let lib = if dir_renames { "usr/lib64" } else { "usr/lib" };
    for present in [
        "new-file",
        "overridden",
        "data/link",
        "data/fifo",
        "made/deeper/f",
        "var/top-moved",
        "x/gone",
    ] {
        assert!(has(present), "{present} missing");
    }
    assert!(has(&format!("{etc}/conf.d/fresh")) && has(&format!("{lib}/deep/lib.so")));
    if dir_renames {
        assert!(!has("etc") && !has("usr/lib") && has("usr/lib64/deep/added"));
    }
}

fn roundtrip(c: &mut Case, first: Target, second: Target, dir_renames: bool) {
    build_lowers(c);
    let lowers = c.lowers();
    let upper = c.upper();
    let (w1, m1) = (c.work(), c.mnt());
    c.mount_stack(first, &lowers, Some((&upper, &w1)), &m1);
    mutate(&m1, dir_renames);
    let before = view(&m1);
    c.unmount();
    check_expected(&before, dir_renames);
    let (w2, m2) = (c.scratch("work2"), c.scratch("mnt2"));
    c.mount_stack(second, &lowers, Some((&upper, &w2)), &m2);
    let after = view(&m2);
    let diff = diff_trees(&before, &after);
    assert!(
        diff.is_empty(),
        "merged views differ after remount:\n{}",
        diff.join("\n")
    );
    // The second mount must also be fully usable on top of the first one's upper dir.
    write(m2.join("made/after-remount"), "ok");
    unlink(m2.join("overridden")).unwrap();
    assert_eq!(read(m2.join("made/deeper/f")), "deep");
}

fn target_upper_mounts_under_kernel(c: &mut Case) {
    let t = c.target;
    roundtrip(c, t, Target::Kernel, false)
}

fn target_upper_with_dir_renames_mounts_under_kernel(c: &mut Case) {
    let t = c.target;
    roundtrip(c, t, Target::Kernel, true)
}

fn kernel_upper_mounts_under_target(c: &mut Case) {
    let t = c.target;
    roundtrip(c, Target::Kernel, t, false)
}

fn kernel_upper_with_dir_renames_mounts_under_target(c: &mut Case) {
    let t = c.target;
    roundtrip(c, Target::Kernel, t, true)
}

fn target_remount_same_view(c: &mut Case) {
    let t = c.target;
    roundtrip(c, t, t, true)
}

fn upper_whiteouts_are_chr_and_opaque_y(c: &mut Case) {
    build_lowers(c);
    let m = c.mount();
    mutate(&m, false);
    let u = c.upper();
    for wh in [
        "base",
        "etc/removed-by-chr",
        "var/lib",
        "x/kept",
        "usr/libfoo",
    ] {
        let p = u.join(wh);
        assert!(
            !exists(&p) || is_whiteout(&p),
            "{wh}: not a char 0/0 whiteout"
        );
    }
    assert!(is_whiteout(u.join("base")));
    assert!(is_whiteout(u.join("usr/libfoo")));
    assert!(is_opaque(u.join("etc/conf.d")));
    let mut stack = vec![u.clone()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let name = e.file_name().to_string_lossy().into_owned();
            assert!(
                !name.starts_with(".wh."),
                "{}: AUFS markers must not be written",
                e.path().display()
            );
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            }
        }
    }
}

/// A seeded random namespace stream (files, dirs, renames, links, symlinks, FIFOs, xattrs) through
/// `first`, then the upper dir mounted by `second`: the merged views must be identical.
fn random_roundtrip(c: &mut Case, first: Target, second: Target, case_seed: u64) {
    let seed = crate::fuzz::base_seed() ^ case_seed;
    let reference = c.scratch("unused-reference");
    crate::fuzz::namespace_fixture(c, &reference);
    let lowers = c.lowers();
    let upper = c.upper();
    let (w1, m1) = (c.work(), c.mnt());
    c.mount_stack(first, &lowers, Some((&upper, &w1)), &m1);
    let mut rng = crate::util::Rng::new(seed);
    for _ in 0..300 {
        let vals = [rng.next(), rng.next(), rng.next(), rng.next()];
        crate::fuzz::namespace_op(&m1, &vals);
    }
    let before = view(&m1);
    c.unmount();
    let (w2, m2) = (c.scratch("work2"), c.scratch("mnt2"));
    c.mount_stack(second, &lowers, Some((&upper, &w2)), &m2);
    let after = view(&m2);
    let diff = diff_trees(&before, &after);
    assert!(
        diff.is_empty(),
        "seed {seed}: views differ after remount:\n{}",
        diff.join("\n")
    );
}

/// Directory renames done by kernel overlayfs (redirect_dir=on writes `trusted.overlay.redirect`,
/// relative for a rename within a dir, absolute for a move into another dir), read by the target.
fn kernel_redirects_under_target(c: &mut Case, ops: fn(&Path)) {
    let l = c.lower(1);
    mkdir(l.join("a/sub"));
    mkdir(l.join("b"));
    write(l.join("a/sub/f"), "f");
    write(l.join("a/g"), "g");
    write(l.join("b/lower-b"), "b");
    c.lower(0);
    let lowers = c.lowers();
    let upper = c.upper();
    let (w1, m1) = (c.work(), c.mnt());
    c.mount_stack(Target::Kernel, &lowers, Some((&upper, &w1)), &m1);
    ops(&m1);
    let before = view(&m1);
    c.unmount();
    let (w2, m2) = (c.scratch("work2"), c.scratch("mnt2"));
    let t = c.target;
    c.mount_stack(t, &lowers, Some((&upper, &w2)), &m2);
    let diff = diff_trees(&before, &view(&m2));
    assert!(diff.is_empty(), "views differ:\n{}", diff.join("\n"));
}

fn kernel_absolute_redirect_under_target(c: &mut Case) {
    kernel_redirects_under_target(c, |m| rename(m.join("a/sub"), m.join("b/sub2")).unwrap())
}

fn kernel_nested_redirects_under_target(c: &mut Case) {
    kernel_redirects_under_target(c, |m| {
        rename(m.join("a"), m.join("z")).unwrap();
        rename(m.join("z/sub"), m.join("z/sub2")).unwrap();
    })
}

fn kernel_moved_then_parent_renamed_under_target(c: &mut Case) {
    kernel_redirects_under_target(c, |m| {
        rename(m.join("a/sub"), m.join("b/sub2")).unwrap();
        rename(m.join("b"), m.join("c")).unwrap();
    })
}

/// A dir renamed onto the name of a removed lower dir: the redirect, not the name, says where
/// its lower content is (the old lower `b` must not show through).
fn kernel_rename_onto_removed_lower_dir_under_target(c: &mut Case) {
    kernel_redirects_under_target(c, |m| {
        fs::remove_dir_all(m.join("b")).unwrap();
        rename(m.join("a"), m.join("b")).unwrap();
    })
}

fn random_target_upper_mounts_under_kernel(c: &mut Case) {
    let t = c.target;
    random_roundtrip(c, t, Target::Kernel, 41)
}

fn random_kernel_upper_mounts_under_target(c: &mut Case) {
    let t = c.target;
    random_roundtrip(c, Target::Kernel, t, 42)
}

/// fuse-overlayfs 1.10 (what podman users have today) writes `.wh..wh..opq` marker files and odd
/// `.wh..opq` whiteouts into new directories. strata must read such an upper dir with the same view.
/// Not a generated case: kernel overlayfs shows those markers as plain files by design.
#[test]
fn fuse_overlayfs_upper_mounts_under_strata() {
    harness::run(
        Target::Strata,
        "compat::fuse_overlayfs_upper_mounts_under_strata",
        |c| {
            build_lowers(c);
            let lowers = c.lowers();
            let upper = c.upper();
            let (w1, m1) = (c.work(), c.mnt());
            let template =
                "fuse-overlayfs -o lowerdir={lower},upperdir={upper},workdir={work} {mnt}";
            c.mount_template(template, &lowers, Some((&upper, &w1)), &m1);
            mutate(&m1, false);
            c.unmount();
            // fuse-overlayfs's own view of the finished upper dir, fresh (no cached attributes).
            c.mount_template(template, &lowers, Some((&upper, &w1)), &m1);
            let before = view(&m1);
            c.unmount();
            check_expected(&before, false);
            assert!(
                exists(upper.join("made/.wh..wh..opq")),
                "fuse-overlayfs wrote its marker"
            );
            let (w2, m2) = (c.scratch("work2"), c.scratch("mnt2"));
            c.mount_stack(Target::Strata, &lowers, Some((&upper, &w2)), &m2);
            let after = view(&m2);
            let diff = diff_trees(&before, &after);
            assert!(diff.is_empty(), "views differ:\n{}", diff.join("\n"));
        },
    )
}

/// The rootless form: mounted with `userxattr`, a directory made opaque (a lower dir removed and
/// made again) is marked `user.overlay.opaque=y` and never `trusted.overlay.*`, and kernel
/// overlayfs mounted with `userxattr` over that upper shows the same view.
fn userxattr_opaque_dir_mounts_under_kernel(c: &mut Case) {
    let l = c.lower(0);
    mkdir(l.join("d/sub"));
    write(l.join("d/f"), "lower");
    write(l.join("d/sub/g"), "lower");
    write(l.join("keep"), "k");
    c.use_userxattr();
    let m = c.mount();
    fs::remove_dir_all(m.join("d")).unwrap();
    mkdir(m.join("d"));
    write(m.join("d/new"), "upper");
    assert_eq!(ls(m.join("d")), vec!["new"]);
    let before = view(&m);
    c.unmount();
    let d = c.upper().join("d");
    assert_eq!(getxattr(&d, "user.overlay.opaque").unwrap(), b"y");
    assert!(
        getxattr(&d, "trusted.overlay.opaque").is_err(),
        "userxattr: no trusted.overlay.opaque may be written"
    );
    let lowers = c.lowers();
    let upper = c.upper();
    let (w2, m2) = (c.scratch("work2"), c.scratch("mnt2"));
    c.mount_stack(Target::Kernel, &lowers, Some((&upper, &w2)), &m2);
    let after = view(&m2);
    let diff = diff_trees(&before, &after);
    assert!(diff.is_empty(), "views differ:\n{}", diff.join("\n"));
    assert_eq!(ls(m2.join("d")), vec!["new"]);
    assert_eq!(read(m2.join("keep")), "k");
}

/// Mount the case's stack with `target` inside a new user + mount + pid namespace (uid 0 mapped
/// to itself, so no CAP_SYS_ADMIN/CAP_MKNOD in the initial namespace: what a rootless user has),
/// run `ops` (shell, `$M` is the mount point), unmount. The pid namespace makes sure nothing of it
/// outlives the script (its init exits → every process in it is killed, the mounts go with the
/// namespace). Returns the script's output; panics if it fails.
fn in_userns(c: &mut Case, target: Target, ops: &str) -> String {
    let lowers = c.lowers();
    let lower = lowers
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(":");
    let (u, w, m) = (c.upper(), c.work(), c.mnt());
    let opts = format!(
        "lowerdir={lower},upperdir={},workdir={},userxattr",
        u.display(),
        w.display()
    );
    let mount = match target {
        Target::Kernel => format!("mount -t overlay overlay -o {opts} \"$M\""),
        _ => format!(
            "{} -f -o {opts} \"$M\" 2>\"$LOG\" & \
             i=0; until mountpoint -q \"$M\"; do i=$((i+1)); [ $i -lt 200 ] || exit 9; sleep 0.05; done",
            harness::strata_bin()
        ),
    };
    let script = format!("set -e; {mount}; (set -e; {ops}); umount \"$M\"; wait");
    let out = std::process::Command::new("timeout")
        .args([
            "-k",
            "5",
            "60",
            "unshare",
            "--user",
            "--map-root-user",
            "--mount",
        ])
        .args(["--pid", "--fork", "--kill-child", "sh", "-c", &script])
        .env("M", &m)
        .env("LOG", c.root().join("userns-mount.log"))
        .output()
        .expect("run unshare");
    let log = fs::read_to_string(c.root().join("userns-mount.log")).unwrap_or_default();
    assert!(
        out.status.success(),
        "in a user namespace ({target:?}): {}\n{}\ndaemon: {log}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Rootless rename of a lower directory: inside a user namespace (no privilege in the initial
/// one, so no `trusted.*` xattrs), `mv` of a lower dir with content works — strata renames it
/// (the tree becomes an opaque upper dir marked `user.overlay.opaque`, a char 0/0 whiteout at the
/// old name); kernel overlayfs with `userxattr` (no redirects) answers EXDEV and `mv` copies.
/// Both leave an upper that kernel overlayfs mounted with `userxattr` shows as: new name with
/// the whole tree, old name gone, siblings kept — and no `trusted.overlay.*` anywhere.
fn userns_rename_lower_dir(c: &mut Case) {
    let l = c.lower(0);
    mkdir(l.join("var/lib/deep"));
    write(l.join("var/lib/deep/f"), "deep");
    write(l.join("var/g"), "g");
    symlink("lib/deep/f", l.join("var/link"));
    write(l.join("keep"), "k");
    c.use_userxattr();
    let target = c.target;
    let out = in_userns(
        c,
        target,
        "mv \"$M/var\" \"$M/var2\"; ls \"$M\" | tr '\\n' ' '; echo; cat \"$M/var2/lib/deep/f\" \"$M/var2/link\"",
    );
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines, ["keep var2 ", "deepdeep"], "{out}");
    let upper = c.upper();
    let (up_var, up_var2) = (upper.join("var"), upper.join("var2"));
    assert!(is_whiteout(&up_var), "no whiteout at the old name");
    for p in [
        &up_var2,
        &upper.join("var2/lib"),
        &upper.join("var2/lib/deep"),
    ] {
        let xs = listxattr(p).unwrap();
        assert!(
            !xs.iter().any(|x| x.starts_with("trusted.")),
            "{}: {xs:?}",
            p.display()
        );
    }
    if target == Target::Strata {
        assert_eq!(getxattr(&up_var2, "user.overlay.opaque").unwrap(), b"y");
    }
    let lowers = c.lowers();
    let (w2, m2) = (c.scratch("work2"), c.scratch("mnt2"));
    c.mount_stack(Target::Kernel, &lowers, Some((&upper, &w2)), &m2);
    assert_eq!(ls(&m2), vec!["keep", "var2"]);
    assert_eq!(ls(m2.join("var2")), vec!["g", "lib", "link"]);
    assert_eq!(read(m2.join("var2/lib/deep/f")), "deep");
    assert_eq!(read(m2.join("var2/link")), "deep");
    assert_eq!(read(m2.join("keep")), "k");
}

cases!(compat:
    target_upper_mounts_under_kernel,
    target_upper_with_dir_renames_mounts_under_kernel,
    kernel_upper_mounts_under_target,
    kernel_upper_with_dir_renames_mounts_under_target,
    target_remount_same_view,
    upper_whiteouts_are_chr_and_opaque_y,
    random_target_upper_mounts_under_kernel,
    random_kernel_upper_mounts_under_target,
    kernel_absolute_redirect_under_target,
    kernel_nested_redirects_under_target,
    kernel_moved_then_parent_renamed_under_target,
    kernel_rename_onto_removed_lower_dir_under_target,
    userxattr_opaque_dir_mounts_under_kernel,
    userns_rename_lower_dir,
);
