//! Things a container's processes do that the other modules don't: exec, O_TMPFILE, readdir
//! resumption, dir fds across renames, odd names, big offsets.

use std::ffi::CString;
use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::process::Command;

use crate::harness::{Case, Wh};
use crate::util::*;

fn busybox(c: &mut Case, layer: usize) {
    let l = c.lower(layer);
    let src = ["/bin/busybox", "/usr/bin/busybox"]
        .into_iter()
        .find(|p| exists(p))
        .expect("busybox-static is installed (scripts/setup)");
    std::fs::copy(src, l.join("busybox")).unwrap();
    chmod(l.join("busybox"), 0o755).unwrap();
}

fn exec_binary_from_lower(c: &mut Case) {
    busybox(c, 1);
    c.lower(0);
    let m = c.mount();
    let out = Command::new(m.join("busybox"))
        .args(["sh", "-c", "echo hello; exit 3"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hello\n");
    assert!(!exists(c.upper().join("busybox")), "exec does not copy up");
}

fn exec_after_copy_up(c: &mut Case) {
    busybox(c, 0);
    let m = c.mount();
    chmod(m.join("busybox"), 0o750).unwrap();
    let st = Command::new(m.join("busybox"))
        .arg("true")
        .status()
        .unwrap();
    assert!(st.success());
    chmod(m.join("busybox"), 0o640).unwrap();
    let err = Command::new(m.join("busybox"))
        .arg("true")
        .status()
        .unwrap_err();
    assert_eq!(
        err.raw_os_error(),
        Some(libc::EACCES),
        "no exec bit, no exec"
    );
}

fn exec_while_open_for_write_etxtbsy(c: &mut Case) {
    busybox(c, 0);
    let m = c.mount();
    let w = open(m.join("busybox"), libc::O_WRONLY, 0).unwrap();
    let err = Command::new(m.join("busybox"))
        .arg("true")
        .status()
        .unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::ETXTBSY));
    drop(w);
    // Another test thread's fork can hold a copy of `w` until its child execs (O_CLOEXEC
    // closes it only then): the write count drops with that exec, so retry ETXTBSY briefly.
    let mut tries = 0;
    let st = loop {
        match Command::new(m.join("busybox")).arg("true").status() {
            Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) && tries < 100 => {
                tries += 1;
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            r => break r.unwrap(),
        }
    };
    assert!(st.success());
}

fn o_tmpfile(c: &mut Case) {
    let l = c.lower(0);
    mkdir(l.join("d"));
    write(l.join("d/x"), "");
    let m = c.mount();
    let f = open(m.join("d"), libc::O_TMPFILE | libc::O_RDWR, 0o600).unwrap();
    f.write_at(b"anonymous", 0).unwrap();
    let mut buf = [0u8; 9];
    f.read_at(&mut buf, 0).unwrap();
    assert_eq!(&buf, b"anonymous");
    let st = f.metadata().unwrap();
    assert_eq!(st.nlink(), 0);
    assert_eq!(st.mode() & 0o777, 0o600);
    assert_eq!(ls(m.join("d")), ["x"], "an O_TMPFILE file has no name");
}

fn getdents_small_buffer_resumes(c: &mut Case) {
    let (l0, l1) = (c.lower(0), c.lower(1));
    mkdir(l0.join("d"));
    mkdir(l1.join("d"));
    for k in 0..90 {
        let l = if k % 3 == 0 { &l0 } else { &l1 };
        write(l.join(format!("d/name-{k:03}")), "");
    }
    c.whiteout(l0.join("d/name-001"), Wh::Chr);
    let m = c.mount();
    let dir = open(m.join("d"), libc::O_RDONLY | libc::O_DIRECTORY, 0).unwrap();
    let mut names = Vec::new();
    let mut buf = vec![0u8; 64]; // room for about one entry per call
    loop {
        // SAFETY: raw getdents64 into our buffer.
        let n = unsafe {
            libc::syscall(
                libc::SYS_getdents64,
                dir.as_raw_fd(),
                buf.as_mut_ptr(),
                buf.len(),
            )
        };
        assert!(n >= 0, "getdents64: {}", std::io::Error::last_os_error());
        if n == 0 {
            break;
        }
        let mut off = 0usize;
        while off < n as usize {
            let reclen = u16::from_ne_bytes([buf[off + 16], buf[off + 17]]) as usize;
            let name_bytes = &buf[off + 19..off + reclen];
            let end = name_bytes
                .iter()
                .position(|b| *b == 0)
                .unwrap_or(name_bytes.len());
            names.push(String::from_utf8_lossy(&name_bytes[..end]).into_owned());
            off += reclen;
        }
    }
    let total = names.len();
    names.retain(|n| n != "." && n != "..");
    assert_eq!(total - names.len(), 2, ". and .. once each");
    let mut sorted = names.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(
        sorted.len(),
        names.len(),
        "no duplicates across resumed calls"
    );
    assert_eq!(sorted.len(), 89);
    assert!(!sorted.contains(&"name-001".to_string()));
}

fn rewinddir_sees_new_entries(c: &mut Case) {
    let l = c.lower(0);
    mkdir(l.join("d"));
    write(l.join("d/a"), "");
    let m = c.mount();
    let cp = cpath(&m.join("d"));
    // SAFETY: opendir/readdir/rewinddir/closedir on a DIR* we own.
    unsafe {
        let d = libc::opendir(cp.as_ptr());
        assert!(!d.is_null());
        let count = |d: *mut libc::DIR| {
            let mut n = 0;
            while !libc::readdir64(d).is_null() {
                n += 1;
            }
            n
        };
        assert_eq!(count(d), 3);
        write(m.join("d/b"), "");
        unlink(m.join("d/a")).unwrap();
        write(m.join("d/c"), "");
        libc::rewinddir(d);
        assert_eq!(count(d), 4, "after rewinddir: . .. b c");
        libc::closedir(d);
    }
}

fn dir_fd_survives_rename(c: &mut Case) {
    let l = c.lower(0);
    mkdir(l.join("a/sub"));
    write(l.join("a/sub/f"), "in sub");
    let m = c.mount();
    let dir = OwnedFd::from(open(m.join("a/sub"), libc::O_RDONLY | libc::O_DIRECTORY, 0).unwrap());
    rename(m.join("a"), m.join("b")).unwrap();
    let n = CString::new("f").unwrap();
    // SAFETY: openat relative to a dir fd we own.
    let fd = check(unsafe {
        libc::openat(
            dir.as_raw_fd(),
            n.as_ptr(),
            libc::O_RDONLY | libc::O_CLOEXEC,
        )
    })
    .unwrap();
    // SAFETY: fresh fd.
    let mut f = unsafe { std::fs::File::from_raw_fd(fd) };
    let mut s = String::new();
    f.read_to_string(&mut s).unwrap();
    assert_eq!(s, "in sub");
    let g = CString::new("g").unwrap();
    // SAFETY: openat relative to a dir fd we own.
    let fd = check(unsafe {
        libc::openat(
            dir.as_raw_fd(),
            g.as_ptr(),
            libc::O_CREAT | libc::O_WRONLY | libc::O_CLOEXEC,
            0o644,
        )
    })
    .unwrap();
    // SAFETY: fresh fd, closed at once.
    drop(unsafe { OwnedFd::from_raw_fd(fd) });
    assert_eq!(ls(m.join("b/sub")), ["f", "g"]);
}

fn odd_names(c: &mut Case) {
    let l = c.lower(0);
    let names = [
        "with space",
        "new\nline",
        "ünïcødé-名前",
        "-leading-dash",
        "tab\there",
        "x".repeat(255).leak() as &str,
    ];
    for n in names.iter().take(3) {
        write(l.join(n), n);
    }
    let m = c.mount();
    for n in &names {
        write(m.join(n), n);
    }
    let listed = ls(&m);
    for n in &names {
        assert!(listed.contains(&n.to_string()), "{n:?} missing");
        assert_eq!(read(m.join(n)), *n);
    }
    rename(m.join("new\nline"), m.join("still\nodd")).unwrap();
    unlink(m.join("with space")).unwrap();
    assert!(!ls(&m).contains(&"with space".to_string()));
}

fn dot_wh_names_created_through_mount(c: &mut Case) {
    // Through the mount, a name like ".wh.x" is just a name (the kernel stores it as a plain file).
    let l = c.lower(0);
    write(l.join("x"), "lower x");
    let m = c.mount();
    write(m.join(".wh.y"), "plain");
    assert_eq!(read(m.join(".wh.y")), "plain");
    assert!(ls(&m).contains(&".wh.y".to_string()));
    assert_eq!(read(m.join("x")), "lower x");
}

fn open_flag_errors(c: &mut Case) {
    let l = c.lower(0);
    write(l.join("f"), "");
    symlink("f", l.join("s"));
    mkdir(l.join("d"));
    let m = c.mount();
    assert_errno!(
        open(m.join("f"), libc::O_RDONLY | libc::O_DIRECTORY, 0),
        libc::ENOTDIR
    );
    assert_errno!(
        open(m.join("s"), libc::O_RDONLY | libc::O_NOFOLLOW, 0),
        libc::ELOOP
    );
    assert_errno!(open(m.join("d"), libc::O_RDWR, 0), libc::EISDIR);
    assert_errno!(
        open(m.join("d"), libc::O_CREAT | libc::O_WRONLY, 0o644),
        libc::EISDIR
    );
    assert_errno!(
        open(m.join("f/x"), libc::O_CREAT | libc::O_WRONLY, 0o644),
        libc::ENOTDIR
    );
    open(m.join("s"), libc::O_PATH | libc::O_NOFOLLOW, 0).unwrap();
}

fn create_under_whited_out_parent(c: &mut Case) {
    let (l0, l1) = (c.lower(0), c.lower(1));
    mkdir(l1.join("gone"));
    c.whiteout(l0.join("gone"), Wh::Chr);
    let m = c.mount();
    assert_errno!(
        open(m.join("gone/f"), libc::O_CREAT | libc::O_WRONLY, 0o644),
        libc::ENOENT
    );
    assert_errno!(mkdir_mode(m.join("gone/d"), 0o755), libc::ENOENT);
}

fn many_hard_links(c: &mut Case) {
    let l = c.lower(0);
    write(l.join("f"), "x");
    let m = c.mount();
    for k in 0..10 {
        link(m.join("f"), m.join(format!("l{k}"))).unwrap();
    }
    assert_eq!(lstat(m.join("l9")).unwrap().nlink(), 11);
    write(m.join("other"), "o");
    rename(m.join("other"), m.join("l0")).unwrap();
    assert_eq!(
        lstat(m.join("f")).unwrap().nlink(),
        10,
        "rename over a link drops one"
    );
    for k in 1..10 {
        unlink(m.join(format!("l{k}"))).unwrap();
    }
    assert_eq!(lstat(m.join("f")).unwrap().nlink(), 1);
}

fn rmdir_dot_einval(c: &mut Case) {
    let l = c.lower(0);
    mkdir(l.join("d"));
    let m = c.mount();
    assert_errno!(rmdir(m.join("d/.")), libc::EINVAL);
}

fn rm_rf_dir_spanning_five_layers(c: &mut Case) {
    for i in 0..5 {
        let l = c.lower(i);
        mkdir(l.join(format!("d/sub{i}")));
        write(l.join(format!("d/sub{i}/f")), "");
        write(l.join(format!("d/f{i}")), "");
    }
    let l1 = c.lower(1);
    c.whiteout(l1.join("d/f3"), Wh::Chr);
    let m = c.mount();
    assert_eq!(ls(m.join("d")).len(), 9);
    std::fs::remove_dir_all(m.join("d")).unwrap();
    assert!(!exists(m.join("d")));
    assert!(is_whiteout(c.upper().join("d")));
}

fn big_offsets(c: &mut Case) {
    c.lower(0);
    let m = c.mount();
    let f = open(m.join("f"), libc::O_RDWR | libc::O_CREAT, 0o644).unwrap();
    let off = 5u64 << 30;
    f.write_at(b"past 4 GiB", off).unwrap();
    assert_eq!(f.metadata().unwrap().len(), off + 10);
    let mut buf = [0u8; 10];
    f.read_at(&mut buf, off).unwrap();
    assert_eq!(&buf, b"past 4 GiB");
    f.set_len(3 << 30).unwrap();
    assert_eq!(lstat(m.join("f")).unwrap().len(), 3 << 30);
}

fn readlink_small_buffer(c: &mut Case) {
    let l = c.lower(0);
    symlink("0123456789", l.join("s"));
    let m = c.mount();
    let p = cpath(&m.join("s"));
    let mut buf = [0u8; 4];
    // SAFETY: valid path; buffer of 4 bytes.
    let n = unsafe { libc::readlink(p.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    assert_eq!(n, 4);
    assert_eq!(&buf, b"0123");
}

fn fchmod_fchown_on_unlinked_fd(c: &mut Case) {
    let l = c.lower(0);
    write(l.join("f"), "x");
    let m = c.mount();
    let f = open(m.join("f"), libc::O_RDWR, 0).unwrap();
    unlink(m.join("f")).unwrap();
    // SAFETY: fchmod/fchown on an fd we own.
    unsafe {
        check(libc::fchmod(f.as_raw_fd(), 0o600)).unwrap();
        check(libc::fchown(f.as_raw_fd(), 12, 13)).unwrap();
    }
    let st = f.metadata().unwrap();
    assert_eq!(
        (st.mode() & 0o7777, st.uid(), st.gid(), st.nlink()),
        (0o600, 12, 13, 0)
    );
}

fn root_access_exec_bit(c: &mut Case) {
    let l = c.lower(0);
    write(l.join("noexec"), "");
    chmod(l.join("noexec"), 0o644).unwrap();
    write(l.join("ownerexec"), "");
    chmod(l.join("ownerexec"), 0o100).unwrap();
    let m = c.mount();
    let acc = |n: &str| {
        let p = cpath(&m.join(n));
        // SAFETY: valid path.
        check(unsafe { libc::access(p.as_ptr(), libc::X_OK) })
    };
    assert_errno!(acc("noexec"), libc::EACCES);
    acc("ownerexec").unwrap();
}

fn chown_minus_one_is_noop(c: &mut Case) {
    let l = c.lower(0);
    write(l.join("f"), "x");
    lchown(l.join("f"), 5, 6).unwrap();
    let m = c.mount();
    lchown(m.join("f"), u32::MAX, u32::MAX).unwrap();
    let s = lstat(m.join("f")).unwrap();
    assert_eq!((s.uid(), s.gid()), (5, 6));
    assert_eq!(read(m.join("f")), "x");
}

cases!(misc:
    exec_binary_from_lower,
    exec_after_copy_up,
    exec_while_open_for_write_etxtbsy,
    o_tmpfile,
    getdents_small_buffer_resumes,
    rewinddir_sees_new_entries,
    dir_fd_survives_rename,
    odd_names,
    dot_wh_names_created_through_mount,
    open_flag_errors,
    create_under_whited_out_parent,
    many_hard_links,
    rmdir_dot_einval,
    rm_rf_dir_spanning_five_layers,
    big_offsets,
    readlink_small_buffer,
    fchmod_fchown_on_unlinked_fd,
    root_access_exec_bit,
    chown_minus_one_is_noop,
);
