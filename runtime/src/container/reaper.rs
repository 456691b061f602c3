//! `--init`: a minimal init as the container's pid 1, built into strata's own init process (so
//! no binary has to exist in the image and nothing of the host is mounted into the container).
//!
//! Pid 1 prepares the process as for a plain start (stdio, working dir, user, capabilities,
//! seccomp), then forks: the child execs the container's command; pid 1 stays, forwards every
//! signal it receives to the child (pid 1 of a namespace ignores signals it has no handler for,
//! which is why shells as pid 1 ignore `docker stop`), reaps every orphan that the kernel
//! reparents to it, and exits with the child's status (128 + signal when it was killed) — what
//! tini and catatonit do, without a second binary.
//!
//! Exec errors: the child reports on the status pipe as the plain init does; pid 1 closes its
//! copy right after the fork, so the supervisor sees EOF exactly when the child has exec'd.

use std::os::fd::RawFd;

use nix::sys::signal::{kill, SigSet, SigmaskHow, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{fork, ForkResult, Pid};

use super::init::{exec_args, prepare_process, ChildIo, InitError};
use super::seccomp::Filter;
use super::spec::Process;

/// Set up like [`super::init::finish_and_exec`], then fork the command and reap. Returns only
/// on a failure before the fork.
pub fn finish_and_reap(
    process: &Process,
    io: ChildIo,
    filter: Option<&Filter>,
    status_fd: RawFd,
) -> InitError {
    if let Err(e) = prepare_process(process, io, filter, status_fd) {
        return e;
    }
    // Block every signal before forking: the child unblocks, pid 1 collects them with sigwait.
    let all = SigSet::all();
    let mut old = SigSet::empty();
    let _ = nix::sys::signal::sigprocmask(SigmaskHow::SIG_SETMASK, Some(&all), Some(&mut old));
    // SAFETY: this process is single-threaded (the container's init); the child only execs or
    // reports an error and _exits.
    match unsafe { fork() } {
        Ok(ForkResult::Child) => {
            // Its own process group, in the terminal's foreground (SIGTTOU is still blocked),
            // so a terminal's signals reach it once: directly, not also through pid 1.
            let _ = nix::unistd::setpgid(Pid::from_raw(0), Pid::from_raw(0));
            if process.terminal {
                let _ = nix::unistd::tcsetpgrp(std::io::stdin(), nix::unistd::getpid());
            }
            let _ = nix::sys::signal::sigprocmask(SigmaskHow::SIG_SETMASK, Some(&old), None);
            exec_args(process)
        }
        Ok(ForkResult::Parent { child }) => {
            // SAFETY: closing our copy of the status pipe; the child keeps its own.
            unsafe { libc::close(status_fd) };
            reap(child, &all)
        }
        Err(e) => InitError {
            code: 125,
            msg: format!("fork: {e}"),
        },
    }
}

fn reap(child: Pid, set: &SigSet) -> ! {
    loop {
        let Ok(sig) = set.wait() else { continue };
        if sig != Signal::SIGCHLD {
            let _ = kill(child, sig);
            continue;
        }
        // Reap everything that exited; the command's own exit ends the container.
        loop {
            match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) if pid == child => exit(code),
                Ok(WaitStatus::Signaled(pid, s, _)) if pid == child => exit(128 + s as i32),
                Ok(WaitStatus::StillAlive) | Err(_) => break,
                Ok(_) => {}
            }
        }
    }
}

fn exit(code: i32) -> ! {
    // SAFETY: ending pid 1; the kernel kills whatever else is left in the namespace.
    unsafe { libc::_exit(code) }
}
