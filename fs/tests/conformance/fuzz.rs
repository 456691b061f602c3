//! Randomized read/write/truncate/mmap exerciser: a seeded stream of operations applied to a file in
//! the mount and to a plain reference file outside it; contents and sizes must always agree, and
//! still agree after a remount. Set `STRATA_FUZZ_SEED` to replay or vary the seed (the seed is in
//! every failure message).

use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::Path;

use crate::harness::Case;
use crate::util::*;

const PAGE: u64 = 4096;

pub(crate) fn base_seed() -> u64 {
    std::env::var("STRATA_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed)
}

fn rw(p: &Path) -> File {
    open(p, libc::O_RDWR, 0).unwrap_or_else(|e| panic!("open {}: {e}", p.display()))
}

fn size(f: &File) -> u64 {
    f.metadata().unwrap().len()
}

/// Write `data` at `off` through a MAP_SHARED mapping of the page range covering it.
fn mmap_write(f: &File, off: u64, data: &[u8]) {
    let start = off / PAGE * PAGE;
    let len = (off + data.len() as u64 - start) as usize;
    // SAFETY: mapping [start, start+len) of a file at least that long (the caller checks), unmapped
    // below; the write stays inside the mapping.
    unsafe {
        let p = libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            f.as_raw_fd(),
            start as i64,
        );
        assert_ne!(
            p,
            libc::MAP_FAILED,
            "mmap: {}",
            std::io::Error::last_os_error()
        );
        std::ptr::copy_nonoverlapping(
            data.as_ptr(),
            p.cast::<u8>().add((off - start) as usize),
            data.len(),
        );
        assert_eq!(libc::msync(p, len, libc::MS_SYNC), 0);
        libc::munmap(p, len);
    }
}

/// Read `len` bytes at `off` through a MAP_SHARED read-only mapping.
fn mmap_read(f: &File, off: u64, len: usize) -> Vec<u8> {
    let start = off / PAGE * PAGE;
    let maplen = (off + len as u64 - start) as usize;
    // SAFETY: read-only mapping inside the file's size, unmapped below.
    unsafe {
        let p = libc::mmap(
            std::ptr::null_mut(),
            maplen,
            libc::PROT_READ,
            libc::MAP_SHARED,
            f.as_raw_fd(),
            start as i64,
        );
        assert_ne!(
            p,
            libc::MAP_FAILED,
            "mmap: {}",
            std::io::Error::last_os_error()
        );
        let out =
            std::slice::from_raw_parts(p.cast::<u8>().add((off - start) as usize), len).to_vec();
        libc::munmap(p, maplen);
        out
    }
}

fn full(f: &File) -> Vec<u8> {
    let mut buf = vec![0u8; size(f) as usize];
    let n = f.read_at(&mut buf, 0).unwrap();
    let mut done = n;
    while done < buf.len() {
        let n = f.read_at(&mut buf[done..], done as u64).unwrap();
        assert!(n > 0, "short read at {done}");
        done += n;
    }
    buf
}

fn exercise(c: &mut Case, case_seed: u64, initial: Option<usize>, ops: usize) {
    let seed = base_seed() ^ case_seed;
    let mut rng = Rng::new(seed);
    let l = c.lower(0);
    let scratch = c.scratch("reference");
    let reference = scratch.join("ref");
    let init = initial.map(|n| rng.bytes(n));
    std::fs::write(&reference, init.clone().unwrap_or_default()).unwrap();
    if let Some(data) = &init {
        std::fs::write(l.join("f"), data).unwrap();
    }
    let m = c.mount();
    let path = m.join("f");
    if init.is_none() {
        std::fs::write(&path, b"").unwrap();
    }
    let mut f = rw(&path);
    let r = rw(&reference);
    for step in 0..ops {
        let ctx = format!("seed {seed} step {step}");
        let cur = size(&r);
        match rng.below(12) {
            0..=2 => {
                let off = rng.below(cur + 70_000);
                let n = 1 + rng.below(70_000) as usize;
                let data = rng.bytes(n);
                f.write_at(&data, off)
                    .unwrap_or_else(|e| panic!("{ctx}: pwrite: {e}"));
                r.write_at(&data, off).unwrap();
            }
            3 | 4 => {
                if cur > 0 {
                    let off = rng.below(cur);
                    let len = 1 + rng.below(100_000) as usize;
                    let (mut a, mut b) = (vec![0u8; len], vec![0u8; len]);
                    let na = f.read_at(&mut a, off).unwrap();
                    let nb = r.read_at(&mut b, off).unwrap();
                    assert_eq!(na, nb, "{ctx}: read length at {off}");
                    assert!(a[..na] == b[..nb], "{ctx}: pread({off}, {len}) differs");
                }
            }
            5 => {
                let len = rng.below(2 * cur + 10_000);
                f.set_len(len)
                    .unwrap_or_else(|e| panic!("{ctx}: ftruncate: {e}"));
                r.set_len(len).unwrap();
            }
            6 | 7 => {
                if cur > 1 {
                    let off = rng.below(cur - 1);
                    let len = 1 + rng.below((cur - off).min(20_000)) as usize;
                    let data = rng.bytes(len);
                    mmap_write(&f, off, &data);
                    r.write_at(&data, off).unwrap();
                }
            }
            8 => {
                if cur > 0 {
                    let off = rng.below(cur);
                    let len = 1 + rng.below((cur - off).min(50_000)) as usize;
                    let mut want = vec![0u8; len];
                    r.read_at(&mut want, off).unwrap();
                    assert!(
                        mmap_read(&f, off, len) == want,
                        "{ctx}: mmap read at {off}+{len} differs"
                    );
                }
            }
            9 => {
                if cur > 0 && rng.below(2) == 0 {
                    let off = rng.below(cur);
                    let len = 1 + rng.below(40_000) as i64;
                    let mode = libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE;
                    for file in [&f, &r] {
                        // SAFETY: fallocate on an open fd.
                        check(unsafe { libc::fallocate(file.as_raw_fd(), mode, off as i64, len) })
                            .unwrap_or_else(|e| panic!("{ctx}: punch hole: {e}"));
                    }
                } else {
                    f.sync_all().unwrap_or_else(|e| panic!("{ctx}: fsync: {e}"));
                }
            }
            10 => {
                drop(std::mem::replace(&mut f, rw(&path)));
            }
            _ => {
                assert_eq!(size(&f), cur, "{ctx}: size");
            }
        }
        if step % 40 == 39 {
            assert!(full(&f) == full(&r), "{ctx}: full contents differ");
        }
    }
    assert_eq!(size(&f), size(&r), "seed {seed}: final size");
    assert!(full(&f) == full(&r), "seed {seed}: final contents differ");
    drop(f);
    c.unmount();
    let m = c.mount();
    let after = read_bytes(m.join("f"));
    assert!(
        after == full(&r),
        "seed {seed}: contents differ after remount"
    );
}

fn fuzz_lower_file_small(c: &mut Case) {
    exercise(c, 1, Some(5000), 500)
}

fn fuzz_lower_file_large(c: &mut Case) {
    exercise(c, 2, Some(3 << 20), 400)
}

fn fuzz_new_file(c: &mut Case) {
    exercise(c, 3, None, 500)
}

fn fuzz_empty_lower_file(c: &mut Case) {
    exercise(c, 4, Some(0), 500)
}

/// Apply one random namespace operation to a root; the errno (0 = success) is compared between
/// the mount and a plain reference directory.
pub(crate) fn namespace_op(root: &Path, rng_vals: &[u64]) -> (String, i32) {
    let pick = |v: u64| -> String {
        let d = v % 5;
        let n = (v / 5) % 5;
        match d {
            4 => format!("n{n}"),
            _ => format!("d{d}/n{n}"),
        }
    };
    let dirpick = |v: u64| -> String {
        match v % 6 {
            4 => format!("d{}/n{}", (v / 6) % 4, (v / 24) % 5),
            5 => "d4".to_string(),
            d => format!("d{d}"),
        }
    };
    let e = |r: std::io::Result<()>| r.err().and_then(|e| e.raw_os_error()).unwrap_or(0);
    let (a, b, x) = (rng_vals[1], rng_vals[2], rng_vals[3]);
    match rng_vals[0] % 14 {
        11 => {
            let p = pick(a);
            let r = setxattr(
                root.join(&p),
                &format!("user.k{}", x % 3),
                format!("v{x}").as_bytes(),
                0,
            );
            (format!("setxattr {p}"), e(r))
        }
        12 => {
            let p = pick(a);
            (
                format!("removexattr {p}"),
                e(removexattr(root.join(&p), &format!("user.k{}", x % 3))),
            )
        }
        13 => {
            let p = pick(a);
            (format!("mkfifo {p}"), e(mkfifo(root.join(&p), 0o640)))
        }
        // O_NONBLOCK: the stream makes FIFOs too, and opening one for writing would wait for a
        // reader (ENXIO instead, on both sides).
        0 => {
            let p = pick(a);
            let flags = libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC | libc::O_NONBLOCK;
            let r = open(root.join(&p), flags, 0o644);
            let r = r
                .and_then(|mut f| std::io::Write::write_all(&mut f, format!("data{x}").as_bytes()));
            (format!("write {p}"), e(r))
        }
        1 => {
            let p = pick(a);
            let r = open(
                root.join(&p),
                libc::O_WRONLY | libc::O_APPEND | libc::O_NONBLOCK,
                0,
            );
            let r =
                r.and_then(|mut f| std::io::Write::write_all(&mut f, format!("+{x}").as_bytes()));
            (format!("append {p}"), e(r))
        }
        2 => {
            let p = dirpick(a);
            (format!("mkdir {p}"), e(mkdir_mode(root.join(&p), 0o755)))
        }
        3 => {
            let p = dirpick(a);
            (format!("rmdir {p}"), e(rmdir(root.join(&p))))
        }
        4 => {
            let p = pick(a);
            (format!("unlink {p}"), e(unlink(root.join(&p))))
        }
        5 | 6 => {
            let (p, q) = if x % 3 == 0 {
                (dirpick(a), dirpick(b))
            } else {
                (pick(a), pick(b))
            };
            (
                format!("rename {p} {q}"),
                e(rename(root.join(&p), root.join(&q))),
            )
        }
        7 => {
            let (p, q) = (pick(a), pick(b));
            (
                format!("link {p} {q}"),
                e(link(root.join(&p), root.join(&q))),
            )
        }
        8 => {
            let p = pick(a);
            let r = std::os::unix::fs::symlink(format!("../t{x}"), root.join(&p));
            (format!("symlink {p}"), e(r))
        }
        9 => {
            let p = pick(a);
            (
                format!("truncate {p} {}", x % 9),
                e(truncate(root.join(&p), (x % 9) as i64)),
            )
        }
        _ => {
            let p = pick(a);
            let mode = [0o600, 0o644, 0o755, 0o700][(x % 4) as usize];
            (format!("chmod {p} {mode:o}"), e(chmod(root.join(&p), mode)))
        }
    }
}

/// The initial tree, built as layers for the mount and flat for the reference.
pub(crate) fn namespace_fixture(c: &mut Case, reference: &Path) {
    let (l0, l1) = (c.lower(0), c.lower(1));
    for d in 0..4 {
        mkdir(l1.join(format!("d{d}")));
        mkdir(reference.join(format!("d{d}")));
        for n in 0..3 {
            let p = format!("d{d}/n{n}");
            write(l1.join(&p), format!("lower {p}"));
            write(reference.join(&p), format!("lower {p}"));
        }
    }
    write(l1.join("n0"), "root n0");
    write(reference.join("n0"), "root n0");
    // Top layer: an override, a whiteout, a new file, and an opaque d2.
    mkdir(l0.join("d0"));
    write(l0.join("d0/n1"), "top override");
    write(reference.join("d0/n1"), "top override");
    mkdir(l0.join("d1"));
    c.whiteout(l0.join("d1/n2"), crate::harness::Wh::Chr);
    unlink(reference.join("d1/n2")).unwrap();
    mkdir(l0.join("d2"));
    c.opaque(l0.join("d2"), crate::harness::Opq::Xattr);
    write(l0.join("d2/n4"), "opaque child");
    std::fs::remove_dir_all(reference.join("d2")).unwrap();
    mkdir(reference.join("d2"));
    write(reference.join("d2/n4"), "opaque child");
}

fn timeless(
    mut v: std::collections::BTreeMap<std::path::PathBuf, Entry>,
) -> std::collections::BTreeMap<std::path::PathBuf, Entry> {
    for e in v.values_mut() {
        e.mtime = None;
    }
    v
}

fn namespace_against_plain_dir(c: &mut Case, case_seed: u64) {
    let seed = base_seed() ^ case_seed;
    let mut rng = Rng::new(seed);
    let reference = c.scratch("reference-tree");
    namespace_fixture(c, &reference);
    let m = c.mount();
    assert!(
        diff_trees(&timeless(view(&m)), &timeless(view(&reference))).is_empty(),
        "initial views differ"
    );
    let mut log = Vec::new();
    for step in 0..400 {
        let vals = [rng.next(), rng.next(), rng.next(), rng.next()];
        let (what, got) = namespace_op(&m, &vals);
        let (_, want) = namespace_op(&reference, &vals);
        log.push(format!("{what} -> {got}"));
        let recent = log[log.len().saturating_sub(12)..].join("; ");
        assert_eq!(
            got, want,
            "seed {seed} step {step}: `{what}` errno differs from a plain dir\n  recent: {recent}"
        );
        if step % 20 == 19 {
            let diff = diff_trees(&timeless(view(&m)), &timeless(view(&reference)));
            assert!(
                diff.is_empty(),
                "seed {seed} step {step}: views differ:\n{}\n  recent: {recent}",
                diff.join("\n")
            );
        }
    }
    let ok = log.iter().filter(|l| l.ends_with("-> 0")).count();
    let renames_ok = log
        .iter()
        .filter(|l| l.starts_with("rename d") && l.ends_with("-> 0"))
        .count();
    eprintln!(
        "seed {seed}: {ok}/{} operations succeeded, {renames_ok} renames",
        log.len()
    );
    assert!(
        ok * 4 >= log.len(),
        "the generator must mostly do real work: {ok} successes"
    );
    c.unmount();
    let m = c.mount();
    let diff = diff_trees(&timeless(view(&m)), &timeless(view(&reference)));
    assert!(
        diff.is_empty(),
        "seed {seed}: views differ after remount:\n{}",
        diff.join("\n")
    );
}

/// The same random namespace stream on the target and, side by side, on kernel overlayfs over the
/// same lower layers (own upper dirs): every errno and the whole merged view must agree.
fn differential_vs_kernel(c: &mut Case, case_seed: u64) {
    let seed = base_seed() ^ case_seed;
    let mut rng = Rng::new(seed);
    let scratch_ref = c.scratch("unused-reference");
    namespace_fixture(c, &scratch_ref);
    let lowers = c.lowers();
    let m = c.mount();
    let (ku, kw, km) = (
        c.scratch("kernel-upper"),
        c.scratch("kernel-work"),
        c.scratch("kernel-mnt"),
    );
    c.mount_stack(
        crate::harness::Target::Kernel,
        &lowers,
        Some((&ku, &kw)),
        &km,
    );
    let mut log = Vec::new();
    for step in 0..300 {
        let vals = [rng.next(), rng.next(), rng.next(), rng.next()];
        let (what, got) = namespace_op(&m, &vals);
        let (_, want) = namespace_op(&km, &vals);
        log.push(format!("{what} -> {got}"));
        let recent = log[log.len().saturating_sub(12)..].join("; ");
        assert_eq!(
            got, want,
            "seed {seed} step {step}: `{what}`: target errno vs kernel\n  recent: {recent}"
        );
        if step % 20 == 19 {
            let diff = diff_trees(&timeless(view(&m)), &timeless(view(&km)));
            assert!(
                diff.is_empty(),
                "seed {seed} step {step}: target vs kernel:\n{}\n  recent: {recent}",
                diff.join("\n")
            );
        }
    }
}

/// The differential stream again, run by uid 65534 over a tree with mixed owners and modes
/// (root-owned, nobody-owned, sticky, world-writable): every permission errno must match the kernel.
fn differential_as_nobody(c: &mut Case) {
    let seed = base_seed() ^ 31;
    let scratch_ref = c.scratch("unused-reference");
    namespace_fixture(c, &scratch_ref);
    let l1 = c.lower(1);
    lchown(l1.join("d0"), 65534, 65534).unwrap();
    chmod(l1.join("d1"), 0o1777).unwrap();
    chmod(l1.join("d3"), 0o777).unwrap();
    lchown(l1.join("d3/n0"), 65534, 65534).unwrap();
    lchown(l1.join("d1/n1"), 65534, 65534).unwrap();
    chmod(l1.join("d3/n1"), 0o666).unwrap();
    chmod(c.root(), 0o755).unwrap();
    let lowers = c.lowers();
    let m = c.mount();
    let (ku, kw, km) = (
        c.scratch("kernel-upper"),
        c.scratch("kernel-work"),
        c.scratch("kernel-mnt"),
    );
    c.mount_stack(
        crate::harness::Target::Kernel,
        &lowers,
        Some((&ku, &kw)),
        &km,
    );
    let (m2, km2) = (m.clone(), km.clone());
    let out = strata_testkit::mount::run_as(
        strata_testkit::mount::Creds::NOBODY,
        std::time::Duration::from_secs(100),
        move || {
            let mut rng = Rng::new(seed);
            let mut log = Vec::new();
            for step in 0..300 {
                let vals = [rng.next(), rng.next(), rng.next(), rng.next()];
                let (what, got) = namespace_op(&m2, &vals);
                let (_, want) = namespace_op(&km2, &vals);
                log.push(format!("{what} -> {got}"));
                if got != want {
                    let recent = log[log.len().saturating_sub(12)..].join("; ");
                    return format!("seed {seed} step {step}: `{what}`: target {got} vs kernel {want}\n  recent: {recent}")
                        .into_bytes();
                }
            }
            let ok = log.iter().filter(|l| l.ends_with("-> 0")).count();
            format!("ok {ok}").into_bytes()
        },
    );
    let strata_testkit::mount::ChildOutcome::Done(bytes) = out else {
        panic!("child: {out:?}")
    };
    let text = String::from_utf8_lossy(&bytes).into_owned();
    assert!(text.starts_with("ok "), "{text}");
    let ok: usize = text[3..].parse().unwrap();
    assert!(ok >= 10, "nobody must succeed sometimes too: {ok}");
    let diff = diff_trees(&timeless(view(&m)), &timeless(view(&km)));
    assert!(
        diff.is_empty(),
        "target vs kernel after the nobody stream:\n{}",
        diff.join("\n")
    );
}

fn differential_vs_kernel_1(c: &mut Case) {
    differential_vs_kernel(c, 21)
}

fn differential_vs_kernel_2(c: &mut Case) {
    differential_vs_kernel(c, 22)
}

fn namespace_fuzz_1(c: &mut Case) {
    namespace_against_plain_dir(c, 11)
}

fn namespace_fuzz_2(c: &mut Case) {
    namespace_against_plain_dir(c, 12)
}

fn namespace_fuzz_3(c: &mut Case) {
    namespace_against_plain_dir(c, 13)
}

cases!(fuzz:
    fuzz_lower_file_small,
    fuzz_lower_file_large,
    fuzz_new_file,
    fuzz_empty_lower_file,
    namespace_fuzz_1,
    namespace_fuzz_2,
    namespace_fuzz_3,
    differential_vs_kernel_1,
    differential_vs_kernel_2,
    differential_as_nobody,
);
