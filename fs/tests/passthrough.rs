//! FUSE passthrough on a real mount (needs root, /dev/fuse and a kernel with passthrough).
//!
//! Upper files (and every file of a read-only mount) are handed to the kernel, so their reads
//! never reach the daemon; lower files of a writable mount are not (a copy-up must be able to
//! switch their readers to the upper copy). These tests prove both halves, and that the
//! kernel's rules on mixing passthrough and cached opens of one inode never fail an open.

use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

mod common;

use common::Watchdog;
use strata_fs::{mount, Mount, MountOptions};

struct Fx {
    dir: tempfile::TempDir,
}

impl Fx {
    fn new() -> Fx {
        let dir = tempfile::tempdir().unwrap();
        for d in ["lower", "upper", "work", "mnt"] {
            std::fs::create_dir(dir.path().join(d)).unwrap();
        }
        Fx { dir }
    }
    fn p(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }
    fn mount(&self, writable: bool) -> (Mount, Watchdog) {
        let opts = MountOptions {
            lowers: vec![self.p("lower")],
            upper: writable.then(|| self.p("upper")),
            work: writable.then(|| self.p("work")),
            threads: 2,
            fsname: "strata-passthrough-test".into(),
            flavour: None,
        };
        let m = mount(opts, &self.p("mnt")).unwrap();
        let wd = Watchdog::new(m.mountpoint(), Duration::from_secs(60));
        (m, wd)
    }
}

fn read_all(p: &Path) -> Vec<u8> {
    let mut v = Vec::new();
    std::fs::File::open(p).unwrap().read_to_end(&mut v).unwrap();
    v
}

/// Read a file through the mount after dropping the pages the kernel cached for it, so that
/// without passthrough the read must reach the daemon.
fn read_uncached(p: &Path) -> Vec<u8> {
    let mut f = std::fs::File::open(p).unwrap();
    // SAFETY: plain advice on an fd we own.
    let r = unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    assert_eq!(r, 0);
    let mut v = Vec::new();
    f.read_to_end(&mut v).unwrap();
    v
}

fn pattern(n: usize, seed: u8) -> Vec<u8> {
    (0..n)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

#[test]
fn upper_files_are_read_and_written_by_the_kernel() {
    let fx = Fx::new();
    let (m, _wd) = fx.mount(true);
    let mp = m.mountpoint().to_path_buf();
    let data = pattern(3 << 20, 1);
    std::fs::write(mp.join("f"), &data).unwrap();
    let before = m.fs().reads_served();
    assert!(read_uncached(&mp.join("f")) == data, "content read back");
    assert_eq!(
        m.fs().reads_served(),
        before,
        "reads of an upper file do not reach the daemon"
    );

    // A reader and a writer of one inode share the backing: each sees the other's data, and
    // so does a shared mapping.
    let r = std::fs::File::open(mp.join("f")).unwrap();
    let w = std::fs::OpenOptions::new()
        .write(true)
        .open(mp.join("f"))
        .unwrap();
    // SAFETY: read-only shared mapping of 4096 bytes, unmapped below.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            4096,
            libc::PROT_READ,
            libc::MAP_SHARED,
            r.as_raw_fd(),
            0,
        )
    };
    assert_ne!(p, libc::MAP_FAILED);
    w.write_at(b"WRITTEN", 100).unwrap();
    // SAFETY: p maps 4096 readable bytes.
    let mapped = unsafe { std::slice::from_raw_parts(p.cast::<u8>().add(100), 7).to_vec() };
    // SAFETY: unmapping what we mapped.
    unsafe { libc::munmap(p, 4096) };
    assert_eq!(mapped, b"WRITTEN", "the mapping sees the write");
    let mut buf = [0u8; 7];
    r.read_at(&mut buf, 100).unwrap();
    assert_eq!(&buf, b"WRITTEN", "the reader sees the write");
    // Appends and size changes are seen by the kernel's view of the inode.
    let mut a = std::fs::OpenOptions::new()
        .append(true)
        .open(mp.join("f"))
        .unwrap();
    a.write_all(b"END").unwrap();
    drop((r, w, a));
    let on_disk = std::fs::read(fx.p("upper/f")).unwrap();
    assert_eq!(on_disk.len(), data.len() + 3);
    assert_eq!(&on_disk[100..107], b"WRITTEN");
    assert_eq!(&on_disk[data.len()..], b"END");
    assert_eq!(
        std::fs::metadata(mp.join("f")).unwrap().len(),
        data.len() as u64 + 3
    );
    assert!(read_all(&mp.join("f")) == on_disk);
    m.unmount().unwrap();
}

#[test]
fn lower_readers_follow_a_copy_up_and_no_open_fails() {
    let fx = Fx::new();
    std::fs::write(fx.p("lower/f"), pattern(1 << 20, 2)).unwrap();
    let (m, _wd) = fx.mount(true);
    let mp = m.mountpoint().to_path_buf();

    // A lower file goes through the daemon (a copy-up must be able to redirect its reader).
    let before = m.fs().reads_served();
    let mut old = std::fs::File::open(mp.join("f")).unwrap();
    let mut v = Vec::new();
    old.read_to_end(&mut v).unwrap();
    assert!(v == pattern(1 << 20, 2));
    assert!(
        m.fs().reads_served() > before,
        "a lower file of a writable mount is read through the daemon"
    );

    // Copy-up while the lower reader is open: the writer and later opens must not fail (the
    // kernel refuses to mix passthrough and cached opens of one inode).
    let new = pattern(1 << 20, 3);
    std::fs::write(mp.join("f"), &new).unwrap();
    let mut third = std::fs::File::open(mp.join("f")).unwrap();
    let mut v = Vec::new();
    third.read_to_end(&mut v).unwrap();
    assert!(
        v == new,
        "an open during the mixed phase reads the new data"
    );
    old.seek(SeekFrom::Start(0)).unwrap();
    let mut v = Vec::new();
    old.read_to_end(&mut v).unwrap();
    assert!(v == new, "the reader opened before copy-up reads the copy");
    drop((old, third));

    // Once the old opens are gone, the (now upper) file is passed through. RELEASE reaches the
    // daemon asynchronously after close(2): wait for it.
    let t0 = std::time::Instant::now();
    while m.fs().open_files() > 0 {
        assert!(
            t0.elapsed() < std::time::Duration::from_secs(10),
            "RELEASE of closed files never arrived"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let before = m.fs().reads_served();
    assert!(read_uncached(&mp.join("f")) == new);
    assert_eq!(
        m.fs().reads_served(),
        before,
        "the copied-up file is passed through"
    );
    m.unmount().unwrap();
}

#[test]
fn small_lower_files_are_in_the_page_cache_at_open() {
    let fx = Fx::new();
    let small = pattern(10_000, 6);
    std::fs::write(fx.p("lower/small"), &small).unwrap();
    std::fs::write(fx.p("lower/empty"), b"").unwrap();
    let (m, _wd) = fx.mount(true);
    let mp = m.mountpoint().to_path_buf();
    // The first open pushes the file into the kernel's page cache: no READ request.
    let before = m.fs().reads_served();
    assert!(read_all(&mp.join("small")) == small);
    assert!(read_all(&mp.join("empty")).is_empty());
    assert_eq!(
        m.fs().reads_served(),
        before,
        "a small lower file is read without READ requests"
    );
    // A copy-up and write through another open: the cached pages follow.
    let mut w = std::fs::OpenOptions::new()
        .write(true)
        .open(mp.join("small"))
        .unwrap();
    w.write_all(b"NEW").unwrap();
    drop(w);
    let v = read_all(&mp.join("small"));
    assert_eq!(&v[..3], b"NEW");
    assert!(v[3..] == small[3..]);
    m.unmount().unwrap();
}

#[test]
fn read_only_mount_passes_lower_files_through() {
    let fx = Fx::new();
    let data = pattern(2 << 20, 4);
    std::fs::write(fx.p("lower/f"), &data).unwrap();
    let (m, _wd) = fx.mount(false);
    let mp = m.mountpoint().to_path_buf();
    let before = m.fs().reads_served();
    let a = std::fs::File::open(mp.join("f")).unwrap();
    let b = std::fs::File::open(mp.join("f")).unwrap();
    let mut x = vec![0u8; 4096];
    let mut y = vec![0u8; 4096];
    a.read_at(&mut x, 1 << 20).unwrap();
    b.read_at(&mut y, 1 << 20).unwrap();
    assert_eq!(x, data[1 << 20..(1 << 20) + 4096]);
    assert_eq!(x, y);
    drop((a, b));
    assert!(read_uncached(&mp.join("f")) == data);
    assert_eq!(
        m.fs().reads_served(),
        before,
        "no copy-up can happen on a read-only mount: lower files are passed through"
    );
    m.unmount().unwrap();
}

#[test]
fn sequential_reads_of_lower_files_use_large_requests() {
    let fx = Fx::new();
    let data = pattern(16 << 20, 5);
    std::fs::write(fx.p("lower/f"), &data).unwrap();
    let (m, _wd) = fx.mount(true);
    let mp = m.mountpoint().to_path_buf();

    // The mount's readahead window is raised past the kernel's 128 KiB default.
    let st = std::fs::metadata(&mp).unwrap();
    #[allow(unused_unsafe)] // libc::minor is a safe fn in newer libc releases
    // SAFETY: pure arithmetic on a dev_t.
    let minor = unsafe { libc::minor(st.dev()) };
    let kb = std::fs::read_to_string(format!("/sys/class/bdi/0:{minor}/read_ahead_kb")).unwrap();
    assert_eq!(kb.trim(), "1024", "readahead window of the mount");

    // A lower file of a writable mount is read through the daemon; 16 MiB in 128 KiB requests
    // would take at least 128 of them.
    let before = m.fs().reads_served();
    assert!(read_uncached(&mp.join("f")) == data);
    let reads = m.fs().reads_served() - before;
    assert!(
        (16..64).contains(&reads),
        "16 MiB read sequentially in {reads} READ requests (want 1 MiB ones after ramp-up)"
    );
    m.unmount().unwrap();
}
