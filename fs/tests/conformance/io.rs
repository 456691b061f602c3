//! File I/O: truncate, fallocate, fsync, flock/fcntl locks, mmap (shared writes too), statfs,
//! unlinked-but-open files, copy_file_range.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, MetadataExt};

use crate::harness::Case;
use crate::util::*;
use strata_testkit::mount::{run_as, ChildOutcome, Creds};

fn fstat_nlink(f: &File) -> u64 {
    f.metadata().unwrap().nlink()
}

fn truncate_shrink_and_extend(c: &mut Case) {
    c.lower(0);
    let m = c.mount();
    write(m.join("f"), "0123456789");
    truncate(m.join("f"), 3).unwrap();
    assert_eq!(read(m.join("f")), "012");
    truncate(m.join("f"), 6).unwrap();
    assert_eq!(read_bytes(m.join("f")), b"012\0\0\0");
    assert_eq!(lstat(m.join("f")).unwrap().len(), 6);
    truncate(m.join("f"), 0).unwrap();
    assert_eq!(lstat(m.join("f")).unwrap().len(), 0);
}

fn ftruncate_open_file(c: &mut Case) {
    let l = c.lower(0);
    write(l.join("f"), "lower data here");
    let m = c.mount();
    let f = open(m.join("f"), libc::O_RDWR, 0).unwrap();
    f.set_len(5).unwrap();
    assert_eq!(f.metadata().unwrap().len(), 5);
    let mut buf = String::new();
    (&f).read_to_string(&mut buf).unwrap();
    assert_eq!(buf, "lower");
    assert_errno!(truncate(m.join("f"), -1), libc::EINVAL);
}

fn truncate_dir_eisdir(c: &mut Case) {
    let l = c.lower(0);
    mkdir(l.join("d"));
    let m = c.mount();
    assert_errno!(truncate(m.join("d"), 0), libc::EISDIR);
    assert_errno!(open(m.join("d"), libc::O_WRONLY, 0), libc::EISDIR);
}

fn fallocate_modes(c: &mut Case) {
    c.lower(0);
    let m = c.mount();
    let f = open(m.join("f"), libc::O_RDWR | libc::O_CREAT, 0o644).unwrap();
    let fd = f.as_raw_fd();
    // SAFETY: fd is open for the whole block.
    check(unsafe { libc::fallocate(fd, 0, 0, 65536) }).unwrap();
    assert_eq!(f.metadata().unwrap().len(), 65536);
    // SAFETY: as above.
    check(unsafe { libc::fallocate(fd, libc::FALLOC_FL_KEEP_SIZE, 65536, 65536) }).unwrap();
    assert_eq!(
        f.metadata().unwrap().len(),
        65536,
        "KEEP_SIZE keeps the size"
    );
    f.write_at(&[0xaa; 8192], 0).unwrap();
    let punch = libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE;
    // SAFETY: as above.
    check(unsafe { libc::fallocate(fd, punch, 0, 4096) }).unwrap();
    let mut buf = [0xffu8; 8192];
    f.read_at(&mut buf, 0).unwrap();
    assert!(
        buf[..4096].iter().all(|b| *b == 0),
        "punched hole reads zeros"
    );
    assert!(buf[4096..].iter().all(|b| *b == 0xaa));
    assert_eq!(f.metadata().unwrap().len(), 65536);
}

fn fsync_and_fdatasync(c: &mut Case) {
    let l = c.lower(0);
    write(l.join("f"), "x");
    let m = c.mount();
    let mut f = open(m.join("f"), libc::O_WRONLY | libc::O_APPEND, 0).unwrap();
    f.write_all(b"yz").unwrap();
    f.sync_all().unwrap();
    f.sync_data().unwrap();
    let d = open(&m, libc::O_RDONLY | libc::O_DIRECTORY, 0).unwrap();
    d.sync_all().unwrap();
    // SAFETY: syncfs on an fd we own.
    check(unsafe { libc::syncfs(d.as_raw_fd()) }).unwrap();
    assert_eq!(read(c.upper().join("f")), "xyz");
}

fn pwrite_past_eof_leaves_hole(c: &mut Case) {
    c.lower(0);
    let m = c.mount();
    let f = open(m.join("f"), libc::O_RDWR | libc::O_CREAT, 0o644).unwrap();
    f.write_at(b"end", 100_000).unwrap();
    assert_eq!(f.metadata().unwrap().len(), 100_003);
    let mut buf = vec![1u8; 100_000];
    f.read_at(&mut buf, 0).unwrap();
    assert!(buf.iter().all(|b| *b == 0));
    let mut tail = [0u8; 10];
    assert_eq!(
        f.read_at(&mut tail, 100_003).unwrap(),
        0,
        "read at EOF returns 0"
    );
}

fn o_append_always_appends(c: &mut Case) {
    let l = c.lower(0);
    write(l.join("log"), "1\n");
    let m = c.mount();
    let mut a = open(m.join("log"), libc::O_WRONLY | libc::O_APPEND, 0).unwrap();
    let mut b = open(m.join("log"), libc::O_WRONLY | libc::O_APPEND, 0).unwrap();
    a.write_all(b"2\n").unwrap();
    b.write_all(b"3\n").unwrap();
    a.seek(SeekFrom::Start(0)).unwrap();
    a.write_all(b"4\n").unwrap();
    assert_eq!(read(m.join("log")), "1\n2\n3\n4\n");
}

fn large_io_roundtrip(c: &mut Case) {
    c.lower(0);
    let m = c.mount();
    let data = Rng::new(3).bytes(5 << 20);
    std::fs::write(m.join("big"), &data).unwrap();
    assert!(read_bytes(m.join("big")) == data);
    let f = open(m.join("big"), libc::O_RDONLY, 0).unwrap();
    let mut buf = vec![0u8; 1 << 20];
    f.read_at(&mut buf, (2 << 20) + 17).unwrap();
    assert!(buf[..] == data[(2 << 20) + 17..(3 << 20) + 17]);
}

fn flock_conflicts(c: &mut Case) {
    let l = c.lower(0);
    write(l.join("f"), "");
    let m = c.mount();
    let a = open(m.join("f"), libc::O_RDONLY, 0).unwrap();
    let b = open(m.join("f"), libc::O_RDONLY, 0).unwrap();
    // SAFETY: flock on fds we own.
    unsafe {
        check(libc::flock(a.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB)).unwrap();
        assert_errno!(
            check(libc::flock(b.as_raw_fd(), libc::LOCK_SH | libc::LOCK_NB)),
            libc::EWOULDBLOCK
        );
        check(libc::flock(a.as_raw_fd(), libc::LOCK_UN)).unwrap();
        check(libc::flock(b.as_raw_fd(), libc::LOCK_SH | libc::LOCK_NB)).unwrap();
        check(libc::flock(a.as_raw_fd(), libc::LOCK_SH | libc::LOCK_NB)).unwrap();
    }
}

fn setlk(fd: i32, cmd: i32, typ: i32, start: i64, len: i64) -> std::io::Result<libc::flock> {
    // SAFETY: zeroed flock is valid.
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = typ as i16;
    fl.l_whence = libc::SEEK_SET as i16;
    fl.l_start = start;
    fl.l_len = len;
    // SAFETY: fcntl with a valid flock pointer.
    check(unsafe { libc::fcntl(fd, cmd, &mut fl) })?;
    Ok(fl)
}

fn ofd_locks_conflict(c: &mut Case) {
    c.lower(0);
    let m = c.mount();
    write(m.join("f"), "0123456789");
    let a = open(m.join("f"), libc::O_RDWR, 0).unwrap();
    let b = open(m.join("f"), libc::O_RDWR, 0).unwrap();
    setlk(a.as_raw_fd(), libc::F_OFD_SETLK, libc::F_WRLCK, 0, 5).unwrap();
    assert_errno!(
        setlk(b.as_raw_fd(), libc::F_OFD_SETLK, libc::F_WRLCK, 2, 2),
        libc::EAGAIN
    );
    setlk(b.as_raw_fd(), libc::F_OFD_SETLK, libc::F_WRLCK, 5, 5).unwrap();
    let probe = setlk(b.as_raw_fd(), libc::F_OFD_GETLK, libc::F_WRLCK, 0, 1).unwrap();
    assert_eq!(
        probe.l_type,
        libc::F_WRLCK as i16,
        "GETLK reports the conflicting lock"
    );
    drop(a);
    setlk(b.as_raw_fd(), libc::F_OFD_SETLK, libc::F_WRLCK, 0, 5).unwrap();
}

fn posix_locks_across_processes(c: &mut Case) {
    c.lower(0);
    let m = c.mount();
    write(m.join("f"), "data");
    let f = open(m.join("f"), libc::O_RDWR, 0).unwrap();
    setlk(f.as_raw_fd(), libc::F_SETLK, libc::F_WRLCK, 0, 0).unwrap();
    let path = m.join("f");
    let out = run_as(
        Creds { uid: 0, gid: 0 },
        std::time::Duration::from_secs(30),
        || {
            let g = open(&path, libc::O_RDWR, 0).unwrap();
            let r = setlk(g.as_raw_fd(), libc::F_SETLK, libc::F_RDLCK, 0, 1);
            let probe = setlk(g.as_raw_fd(), libc::F_GETLK, libc::F_RDLCK, 0, 1).unwrap();
            format!(
                "{} {}",
                r.err().and_then(|e| e.raw_os_error()).unwrap_or(0),
                probe.l_pid
            )
            .into_bytes()
        },
    );
    let ChildOutcome::Done(bytes) = out else {
        panic!("child: {out:?}")
    };
    let text = String::from_utf8(bytes).unwrap();
    let (errno, pid) = text.split_once(' ').unwrap();
    assert!(
        errno == libc::EAGAIN.to_string() || errno == libc::EACCES.to_string(),
        "got {text}"
    );
    assert_eq!(
        pid,
        std::process::id().to_string(),
        "GETLK names the holder"
    );
}

fn mmap_shared_write_visible(c: &mut Case) {
    let l = c.lower(0);
    write(l.join("f"), vec![b'a'; 8192]);
    let m = c.mount();
    let f = open(m.join("f"), libc::O_RDWR, 0).unwrap();
    // SAFETY: mapping 8192 bytes of an open file; unmapped below.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            8192,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            f.as_raw_fd(),
            0,
        )
    };
    assert_ne!(p, libc::MAP_FAILED);
    // SAFETY: p maps 8192 writable bytes.
    unsafe {
        std::ptr::copy_nonoverlapping(b"MAPPED".as_ptr(), p.cast::<u8>().add(4096), 6);
        assert_eq!(libc::msync(p, 8192, libc::MS_SYNC), 0);
    }
    let mut buf = [0u8; 6];
    f.read_at(&mut buf, 4096).unwrap();
    assert_eq!(&buf, b"MAPPED", "read(2) sees the mapped write");
    // SAFETY: unmapping what we mapped.
    unsafe { libc::munmap(p, 8192) };
    drop(f);
    let data = read_bytes(m.join("f"));
    assert_eq!(&data[4096..4102], b"MAPPED");
    assert_eq!(
        &read_bytes(c.upper().join("f"))[4096..4102],
        b"MAPPED",
        "reached the upper file"
    );
}

fn mmap_sees_write(c: &mut Case) {
    c.lower(0);
    let m = c.mount();
    write(m.join("f"), vec![0u8; 4096]);
    let f = open(m.join("f"), libc::O_RDWR, 0).unwrap();
    // SAFETY: read-only shared mapping of 4096 bytes, unmapped below.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            4096,
            libc::PROT_READ,
            libc::MAP_SHARED,
            f.as_raw_fd(),
            0,
        )
    };
    assert_ne!(p, libc::MAP_FAILED);
    f.write_at(b"written", 100).unwrap();
    // SAFETY: p maps 4096 readable bytes.
    let got = unsafe { std::slice::from_raw_parts(p.cast::<u8>().add(100), 7).to_vec() };
    // SAFETY: unmapping what we mapped.
    unsafe { libc::munmap(p, 4096) };
    assert_eq!(got, b"written", "a shared mapping sees write(2)");
}

fn mmap_private_not_written_back(c: &mut Case) {
    let l = c.lower(0);
    write(l.join("f"), vec![b'z'; 4096]);
    let m = c.mount();
    let f = open(m.join("f"), libc::O_RDONLY, 0).unwrap();
    // SAFETY: private writable mapping of 4096 bytes, unmapped below.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            4096,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE,
            f.as_raw_fd(),
            0,
        )
    };
    assert_ne!(p, libc::MAP_FAILED);
    // SAFETY: p maps 4096 writable bytes; unmapped after.
    unsafe {
        *p.cast::<u8>() = b'!';
        libc::munmap(p, 4096);
    }
    assert_eq!(read_bytes(m.join("f"))[0], b'z');
    assert!(
        !exists(c.upper().join("f")),
        "a private mapping never copies up"
    );
}

fn mmap_shared_write_readonly_fd_eacces(c: &mut Case) {
    let l = c.lower(0);
    write(l.join("f"), vec![b'z'; 4096]);
    let m = c.mount();
    let f = open(m.join("f"), libc::O_RDONLY, 0).unwrap();
    // SAFETY: this mapping must fail; nothing to unmap.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            4096,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            f.as_raw_fd(),
            0,
        )
    };
    assert_eq!(p, libc::MAP_FAILED);
    assert_eq!(
        std::io::Error::last_os_error().raw_os_error(),
        Some(libc::EACCES)
    );
}

fn statfs_reports_upper(c: &mut Case) {
    c.lower(0);
    let m = c.mount();
    let s = statvfs(&m).unwrap();
    let u = statvfs(c.upper()).unwrap();
    assert!(s.f_bsize > 0 && s.f_blocks > 0);
    assert_eq!(s.f_namemax, 255);
    assert_eq!(
        s.f_blocks * s.f_frsize,
        u.f_blocks * u.f_frsize,
        "capacity of the upper fs"
    );
    assert!(s.f_bavail <= s.f_bfree && s.f_bfree <= s.f_blocks);
}

fn unlinked_open_file_usable(c: &mut Case) {
    c.lower(0);
    let m = c.mount();
    let f = open(m.join("tmp"), libc::O_RDWR | libc::O_CREAT, 0o600).unwrap();
    f.write_at(b"before", 0).unwrap();
    unlink(m.join("tmp")).unwrap();
    assert_errno!(lstat(m.join("tmp")), libc::ENOENT);
    assert_eq!(fstat_nlink(&f), 0, "st_nlink of an unlinked open file is 0");
    f.write_at(b"after", 6).unwrap();
    let mut buf = [0u8; 11];
    f.read_at(&mut buf, 0).unwrap();
    assert_eq!(&buf, b"beforeafter");
    f.set_len(3).unwrap();
    assert_eq!(f.metadata().unwrap().len(), 3);
    assert!(ls(&m).is_empty());
}

fn unlinked_open_lower_file(c: &mut Case) {
    let l = c.lower(0);
    write(l.join("f"), "lower bytes");
    let m = c.mount();
    let rw = open(m.join("f"), libc::O_RDWR, 0).unwrap();
    let ro = open(m.join("f"), libc::O_RDONLY, 0).unwrap();
    unlink(m.join("f")).unwrap();
    assert_errno!(lstat(m.join("f")), libc::ENOENT);
    let mut buf = [0u8; 11];
    ro.read_at(&mut buf, 0).unwrap();
    assert_eq!(&buf, b"lower bytes");
    rw.write_at(b"LOWER", 0).unwrap();
    rw.read_at(&mut buf, 0).unwrap();
    assert_eq!(&buf, b"LOWER bytes");
    assert_eq!(fstat_nlink(&rw), 0);
    write(m.join("f"), "new file");
    assert_eq!(read(m.join("f")), "new file");
    rw.read_at(&mut buf, 0).unwrap();
    assert_eq!(&buf, b"LOWER bytes", "the open file is not the new one");
}

fn unlinked_open_via_rename_over(c: &mut Case) {
    c.lower(0);
    let m = c.mount();
    write(m.join("victim"), "old contents");
    let f = open(m.join("victim"), libc::O_RDONLY, 0).unwrap();
    write(m.join("other"), "new");
    rename(m.join("other"), m.join("victim")).unwrap();
    let mut s = String::new();
    (&f).read_to_string(&mut s).unwrap();
    assert_eq!(s, "old contents");
    assert_eq!(fstat_nlink(&f), 0);
    assert_eq!(read(m.join("victim")), "new");
}

fn copy_file_range_within_mount(c: &mut Case) {
    let l = c.lower(0);
    let data = Rng::new(9).bytes(300_000);
    std::fs::write(l.join("src"), &data).unwrap();
    let m = c.mount();
    let src = open(m.join("src"), libc::O_RDONLY, 0).unwrap();
    let dst = open(m.join("dst"), libc::O_WRONLY | libc::O_CREAT, 0o644).unwrap();
    let mut left = data.len();
    while left > 0 {
        // SAFETY: valid fds, NULL offsets use the file positions.
        let n = unsafe {
            libc::copy_file_range(
                src.as_raw_fd(),
                std::ptr::null_mut(),
                dst.as_raw_fd(),
                std::ptr::null_mut(),
                left,
                0,
            )
        };
        assert!(
            n > 0,
            "copy_file_range: {}",
            std::io::Error::last_os_error()
        );
        left -= n as usize;
    }
    drop(dst);
    assert!(read_bytes(m.join("dst")) == data);
}

fn write_read_interleaved_fds(c: &mut Case) {
    let l = c.lower(0);
    write(l.join("f"), "aaaaaaaaaa");
    let m = c.mount();
    let r = open(m.join("f"), libc::O_RDONLY, 0).unwrap();
    let w = open(m.join("f"), libc::O_WRONLY, 0).unwrap();
    let mut buf = [0u8; 10];
    for i in 0..10u8 {
        w.write_at(&[b'0' + i], u64::from(i)).unwrap();
        r.read_at(&mut buf, 0).unwrap();
        assert_eq!(
            buf[usize::from(i)],
            b'0' + i,
            "read after write through another fd"
        );
    }
}

fn seek_data_and_size(c: &mut Case) {
    c.lower(0);
    let m = c.mount();
    let mut f = open(m.join("f"), libc::O_RDWR | libc::O_CREAT, 0o644).unwrap();
    f.write_all(b"0123456789").unwrap();
    assert_eq!(f.seek(SeekFrom::End(0)).unwrap(), 10);
    assert_eq!(f.seek(SeekFrom::Current(-4)).unwrap(), 6);
    let mut s = String::new();
    f.read_to_string(&mut s).unwrap();
    assert_eq!(s, "6789");
}

cases!(io:
    truncate_shrink_and_extend,
    ftruncate_open_file,
    truncate_dir_eisdir,
    fallocate_modes,
    fsync_and_fdatasync,
    pwrite_past_eof_leaves_hole,
    o_append_always_appends,
    large_io_roundtrip,
    flock_conflicts,
    ofd_locks_conflict,
    posix_locks_across_processes,
    mmap_shared_write_visible,
    mmap_sees_write,
    mmap_private_not_written_back,
    mmap_shared_write_readonly_fd_eacces,
    statfs_reports_upper,
    unlinked_open_file_usable,
    unlinked_open_lower_file,
    unlinked_open_via_rename_over,
    copy_file_range_within_mount,
    write_read_interleaved_fds,
    seek_data_and_size,
);
