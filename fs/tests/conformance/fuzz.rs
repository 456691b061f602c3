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

fn base_seed() -> u64 {
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

cases!(fuzz:
    fuzz_lower_file_small,
    fuzz_lower_file_large,
    fuzz_new_file,
    fuzz_empty_lower_file,
);
