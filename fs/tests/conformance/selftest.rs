//! Tests of the harness itself: the watchdog really unblocks a stuck FUSE request, guards unmount
//! and reap, the stale-mount sweep only touches dead test processes, `run_as` drops privileges and
//! enforces its deadline, and the harness notices a changed lower layer.

use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use strata_testkit::mount::{
    self, is_mounted, run_as, with_watchdog, ChildOutcome, Creds, MountGuard, Watchdog,
};

use crate::harness::{self, Case, Target};
use crate::util::*;

fn fuse_overlayfs_foreground(dir: &Path) -> MountGuard {
    for d in ["l", "u", "w", "m"] {
        fs::create_dir_all(dir.join(d)).unwrap();
    }
    write(dir.join("l/f"), "x");
    let mut cmd = Command::new("fuse-overlayfs");
    cmd.arg("-f").arg("-o").arg(format!(
        "lowerdir={},upperdir={},workdir={}",
        dir.join("l").display(),
        dir.join("u").display(),
        dir.join("w").display()
    ));
    cmd.arg(dir.join("m"));
    MountGuard::foreground(cmd, &dir.join("m"), &dir.join("log")).expect("fuse-overlayfs mounts")
}

fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(&mount::owned_prefix(harness::TAG))
        .tempdir()
        .unwrap()
}

fn daemon_pid_of(mnt: &Path) -> i32 {
    // The guard owns the foreground child; find it through /proc by its mountpoint argument.
    for e in fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(cmdline) = fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
        if args.first().is_some_and(|a| a.ends_with(b"fuse-overlayfs"))
            && args.contains(&mnt.as_os_str().as_encoded_bytes())
        {
            return pid;
        }
    }
    panic!("daemon for {} not found", mnt.display());
}

#[test]
fn watchdog_aborts_stuck_fuse_request() {
    let dir = tempdir();
    let guard = fuse_overlayfs_foreground(dir.path());
    let mnt = guard.path().to_path_buf();
    assert_eq!(read(mnt.join("f")), "x");
    let pid = daemon_pid_of(&mnt);
    // SAFETY: stopping a daemon we started; it is continued below.
    unsafe { libc::kill(pid, libc::SIGSTOP) };
    let dog = Watchdog::start(Duration::from_secs(2));
    dog.watch(guard.abort_handle());
    let res = lstat(mnt.join("never-looked-up"));
    let fired = dog.finish();
    // SAFETY: continuing the daemon we stopped.
    unsafe { libc::kill(pid, libc::SIGCONT) };
    assert!(fired, "the watchdog fired");
    let errno = res.err().and_then(|e| e.raw_os_error());
    assert!(
        matches!(
            errno,
            Some(libc::ENOTCONN) | Some(libc::ECONNABORTED) | Some(libc::ENOENT)
        ),
        "blocked lookup returned {errno:?}"
    );
    drop(guard);
    assert!(!is_mounted(&mnt), "guard detached the aborted mount");
}

#[test]
fn with_watchdog_passes_through_fast_steps() {
    let dir = tempdir();
    let guard = fuse_overlayfs_foreground(dir.path());
    let got = with_watchdog(Duration::from_secs(30), &[&guard], || {
        read(guard.path().join("f"))
    });
    assert_eq!(got, "x");
}

#[test]
fn guard_drop_unmounts_and_reaps() {
    let dir = tempdir();
    let guard = fuse_overlayfs_foreground(dir.path());
    let mnt = guard.path().to_path_buf();
    let pid = daemon_pid_of(&mnt);
    let busy = fs::File::open(mnt.join("f")).unwrap();
    drop(guard); // busy: plain umount fails, the guard falls back to abort + lazy unmount
    assert!(!is_mounted(&mnt));
    drop(busy);
    std::thread::sleep(Duration::from_millis(100));
    let state = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    assert!(
        state.is_empty(),
        "daemon {pid} still exists (zombie or alive): {state}"
    );
}

#[test]
fn unmount_reports_busy() {
    let dir = tempdir();
    let guard = fuse_overlayfs_foreground(dir.path());
    let mnt = guard.path().to_path_buf();
    let busy = fs::File::open(mnt.join("f")).unwrap();
    assert!(
        guard.unmount().is_err(),
        "strict unmount of a busy mount fails"
    );
    drop(busy);
    assert!(!is_mounted(&mnt), "…and the guard still cleaned up");
}

#[test]
fn sweep_touches_only_dead_owners() {
    let dir = tempfile::tempdir().unwrap();
    let dead = dir
        .path()
        .join(format!("{}-{}-x", harness::TAG, i32::MAX - 7));
    let live = dir
        .path()
        .join(format!("{}x", mount::owned_prefix(harness::TAG)));
    let other = dir.path().join("unrelated");
    for d in [&dead, &live, &other] {
        fs::create_dir(d).unwrap();
        assert!(Command::new("mount")
            .args(["-t", "tmpfs", "tmpfs"])
            .arg(d)
            .status()
            .unwrap()
            .success());
    }
    let guards: Vec<MountGuard> = [&live, &other]
        .iter()
        .map(|d| MountGuard::existing(d).unwrap())
        .collect();
    let n = mount::sweep_stale(dir.path(), harness::TAG);
    let dead_still = is_mounted(&dead);
    if dead_still {
        mount::lazy_unmount(&dead);
    }
    assert_eq!(n, 1);
    assert!(!dead_still, "mount of a dead owner swept");
    assert!(
        is_mounted(&live) && is_mounted(&other),
        "live and foreign mounts untouched"
    );
    drop(guards);
}

#[test]
fn run_as_drops_privileges_and_times_out() {
    let out = run_as(Creds::NOBODY, Duration::from_secs(20), || {
        // SAFETY: plain getters.
        let ids = unsafe {
            [
                libc::getuid(),
                libc::geteuid(),
                libc::getgid(),
                libc::getegid(),
            ]
        };
        ids.iter().flat_map(|v| v.to_le_bytes()).collect()
    });
    let ChildOutcome::Done(b) = out else {
        panic!("{out:?}")
    };
    let ids: Vec<u32> = b
        .chunks(4)
        .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    assert_eq!(ids, [65534; 4]);
    let slow = run_as(Creds::NOBODY, Duration::from_millis(300), || {
        std::thread::sleep(Duration::from_secs(30));
        Vec::new()
    });
    assert_eq!(slow, ChildOutcome::TimedOut);
    let crashed = run_as(Creds::NOBODY, Duration::from_secs(20), || panic!("boom"));
    assert_eq!(crashed, ChildOutcome::Crashed(102));
}

#[test]
fn template_expansion() {
    let lowers = [Path::new("/a").to_path_buf(), Path::new("/b").to_path_buf()];
    let t = "fuse-overlayfs -o lowerdir={lower},upperdir={upper},workdir={work},allow_other {mnt}";
    assert_eq!(
        harness::expand_template(
            t,
            &lowers,
            Some((Path::new("/u"), Path::new("/w"))),
            Path::new("/m")
        ),
        "fuse-overlayfs -o lowerdir=/a:/b,upperdir=/u,workdir=/w,allow_other /m"
    );
    assert_eq!(
        harness::expand_template(t, &lowers, None, Path::new("/m")),
        "fuse-overlayfs -o lowerdir=/a:/b,allow_other /m"
    );
}

fn modifies_lower(c: &mut Case) {
    let l = c.lower(0);
    write(l.join("f"), "x");
    let _m = c.mount();
    write(l.join("f"), "changed behind the mount's back");
}

#[test]
fn harness_detects_changed_lower() {
    let r = std::panic::catch_unwind(|| harness::run(Target::Kernel, "selftest", modifies_lower));
    let msg = r.expect_err("a changed lower layer fails the case");
    let text = msg.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(text.contains("lower layer"), "message: {text}");
}
