//! `run -it` and `exec -it` through a real pty: the test is the terminal.

mod containers_common;

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::process::Stdio;
use std::time::{Duration, Instant};

use containers_common::{default_driver, setup};

/// Spawn `strata args` with a new pty as its stdio; returns the child and the master.
fn spawn_on_pty(
    s: &strata_testkit::container::Strata,
    args: &[&str],
) -> (std::process::Child, std::fs::File) {
    let ws = nix::pty::Winsize {
        ws_row: 33,
        ws_col: 77,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    let pty = nix::pty::openpty(Some(&ws), None).unwrap();
    let slave: OwnedFd = pty.slave;
    let mut cmd = s.command(args);
    cmd.stdin(Stdio::from(slave.try_clone().unwrap()))
        .stdout(Stdio::from(slave.try_clone().unwrap()))
        .stderr(Stdio::from(slave));
    // SAFETY: setsid and TIOCSCTTY in the child make the pty its controlling terminal, like a shell.
    unsafe {
        use std::os::unix::process::CommandExt;
        cmd.pre_exec(|| {
            libc::setsid();
            libc::ioctl(0, libc::TIOCSCTTY, 0);
            Ok(())
        });
    }
    let child = cmd.spawn().unwrap();
    (child, std::fs::File::from(pty.master))
}

/// Read from the master until `needle` shows up (or fail after a timeout).
fn read_until(master: &mut std::fs::File, needle: &str) -> String {
    let fd = master.as_raw_fd();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut seen = String::new();
    while !seen.contains(needle) {
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {needle:?}; saw {seen:?}"
        );
        let mut pfd = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        if unsafe { libc::poll(&mut pfd, 1, 200) } <= 0 {
            continue;
        }
        let mut buf = [0u8; 4096];
        match master.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => seen.push_str(&String::from_utf8_lossy(&buf[..n])),
        }
    }
    seen
}

fn wait_child(mut child: std::process::Child) -> Option<i32> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            return st.code();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn run_it_gives_a_real_terminal() {
    let s = setup(&default_driver());
    let (child, mut master) = spawn_on_pty(&s, &["run", "-it", "--rm", "busybox", "sh"]);
    master
        .write_all(b"tty; stty size; echo $((6*7))x\n")
        .unwrap();
    let out = read_until(&mut master, "42x");
    assert!(out.contains("/dev/pts/"), "{out:?}");
    assert!(
        out.contains("33 77"),
        "window size reaches the container: {out:?}"
    );
    // Ctrl-C reaches the container's foreground process, not strata.
    master.write_all(b"sleep 100\n").unwrap();
    std::thread::sleep(Duration::from_millis(300));
    master.write_all(&[3]).unwrap();
    master.write_all(b"echo after-$((1+1))\n").unwrap();
    read_until(&mut master, "after-2");
    master.write_all(b"exit 4\n").unwrap();
    assert_eq!(wait_child(child), Some(4));
}

#[test]
fn exec_it_gives_a_real_terminal() {
    let s = setup(&default_driver());
    s.ok(&["run", "-d", "--name", "box", "busybox", "sleep", "1000"]);
    let (child, mut master) = spawn_on_pty(&s, &["exec", "-it", "box", "sh"]);
    master.write_all(b"tty; echo $((7*6))y; exit 3\n").unwrap();
    let out = read_until(&mut master, "42y");
    assert!(out.contains("/dev/pts/"), "{out:?}");
    assert_eq!(wait_child(child), Some(3));
}
