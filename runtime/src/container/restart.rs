//! Restart policies (`--restart no|on-failure[:N]|always|unless-stopped`), held by the
//! supervisor: when the container's process exits and the policy says so, the supervisor waits
//! Docker's backoff (100 ms, doubled after each restart, at most 1 minute, back to 100 ms once a
//! run lasted 10 s), counts the restart and re-executes itself (same pid, a fresh
//! single-threaded process that mounts and forks the init again).
//!
//! A `stop`, `kill` or `rm -f` marks the container *manually stopped* (a file in its run dir)
//! before signalling it, and cancels a restart waiting out its backoff; a manually stopped
//! container is not restarted. Honest limit of a daemonless tool: nothing restarts containers
//! after the supervisor itself dies or the host reboots (`always`/`unless-stopped` need a
//! service manager then: see the README's systemd unit).

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::record::process_alive;
use super::{Container, ContainerError, Result, Runtime};

/// A restart policy as Docker spells it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestartPolicy {
    /// `no`, `always`, `on-failure`, `unless-stopped` (`""` = `no`).
    #[serde(rename = "Name")]
    pub name: String,
    /// `on-failure:N`: at most N restarts (0 = unlimited).
    #[serde(rename = "MaximumRetryCount")]
    pub max_retries: u32,
}

impl RestartPolicy {
    /// Parse `--restart` (Docker's messages).
    pub fn parse(s: &str) -> Result<RestartPolicy> {
        let bad = |msg: String| ContainerError::InvalidRestartPolicy(msg);
        let (name, count) = match s.split_once(':') {
            Some((n, c)) => (n, Some(c)),
            None => (s, None),
        };
        match (name, count) {
            ("no" | "always" | "unless-stopped", None) => Ok(RestartPolicy {
                name: name.to_string(),
                max_retries: 0,
            }),
            ("no" | "always" | "unless-stopped", Some(_)) => Err(bad(format!(
                "maximum retry count cannot be used with restart policy '{name}'"
            ))),
            ("on-failure", c) => {
                let n = match c {
                    None => 0,
                    Some(c) => c
                        .parse::<i64>()
                        .ok()
                        .filter(|n| *n >= 0)
                        .ok_or_else(|| bad(format!("invalid restart policy format: maximum retry count must be an integer: {c}")))?
                        as u32,
                };
                Ok(RestartPolicy {
                    name: name.to_string(),
                    max_retries: n,
                })
            }
            _ => Err(bad(format!("invalid restart policy format: {s}"))),
        }
    }

    pub fn is_none(&self) -> bool {
        self.name.is_empty() || self.name == "no"
    }

    /// Whether a container that exited with `code` after `restarts` restarts restarts again.
    pub fn wants_restart(&self, code: i32, restarts: u32, manually_stopped: bool) -> bool {
        if manually_stopped {
            return false;
        }
        match self.name.as_str() {
            "always" | "unless-stopped" => true,
            "on-failure" => code != 0 && (self.max_retries == 0 || restarts < self.max_retries),
            _ => false,
        }
    }
}

/// Docker's backoff before restart number `restarts + 1`, given how long the last run lasted.
pub fn backoff(restarts: u32, ran_for: Duration) -> Duration {
    if ran_for >= Duration::from_secs(10) {
        return Duration::from_millis(100);
    }
    let ms = 100u64.saturating_mul(1u64 << restarts.min(10));
    Duration::from_millis(ms.min(60_000))
}

fn marker(run_dir: &Path) -> PathBuf {
    run_dir.join("manually-stopped")
}

/// Mark the container stopped by the user (before it is signalled).
pub fn mark_manual_stop(c: &Container) {
    if c.config.restart.is_none() {
        return;
    }
    let _ = std::fs::create_dir_all(&c.paths.run_dir);
    let _ = std::fs::write(marker(&c.paths.run_dir), b"");
}

pub(crate) fn clear_manual_stop(run_dir: &Path) {
    let _ = std::fs::remove_file(marker(run_dir));
}

pub(crate) fn manually_stopped(run_dir: &Path) -> bool {
    marker(run_dir).exists()
}

impl Runtime {
    /// A container that is not running but whose supervisor is waiting to restart it: stop the
    /// supervisor (it only sleeps). True if there was one.
    pub fn cancel_restart(&self, c: &Container) -> bool {
        let (pid, start) = (c.state.supervisor_pid, c.state.supervisor_start);
        if c.is_running() || pid <= 0 || !process_alive(pid, start) {
            return false;
        }
        mark_manual_stop(c);
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
        for _ in 0..200 {
            if !process_alive(pid, start) {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        true
    }
}

/// After the container exited with `code`: if its policy restarts it, wait the backoff, count
/// the restart and re-execute this supervisor (does not return then). Returns when there is
/// nothing to restart.
pub(crate) fn maybe_restart(rt: &Runtime, id: &super::ContainerId, code: i32) {
    let Ok(mut c) = rt.load(id) else { return };
    let ran_for = match (c.state.started_at, c.state.finished_at) {
        (Some(s), Some(f)) => (f - s).to_std().unwrap_or_default(),
        _ => Duration::ZERO,
    };
    if !c.config.restart.wants_restart(
        code,
        c.state.restart_count,
        manually_stopped(&c.paths.run_dir),
    ) {
        return;
    }
    std::thread::sleep(backoff(c.state.restart_count, ran_for));
    // Removed or stopped meanwhile?
    let Ok(fresh) = rt.load(id) else { return };
    if manually_stopped(&fresh.paths.run_dir) {
        return;
    }
    c.state = fresh.state;
    c.state.restart_count += 1;
    if rt.write_state(&c).is_err() {
        return;
    }
    reexec();
}

/// Replace this process with a fresh supervisor for the same container (same arguments). The
/// report pipe (fd 3) becomes `/dev/null`: nobody waits for this start.
fn reexec() {
    use std::os::unix::ffi::OsStrExt;
    let Ok(null) = std::fs::File::open("/dev/null") else {
        return;
    };
    use std::os::fd::AsRawFd;
    // fd 3 without CLOEXEC, so the new image finds it there (the report pipe was closed, so
    // `/dev/null` may itself have been opened as fd 3: then only the flag changes).
    // SAFETY: fcntl/dup2 on our own fds.
    let ok = unsafe {
        if null.as_raw_fd() == 3 {
            libc::fcntl(3, libc::F_SETFD, 0) == 0
        } else {
            libc::dup2(null.as_raw_fd(), 3) == 3
        }
    };
    if !ok {
        return;
    }
    let args: Vec<std::ffi::CString> = std::env::args_os()
        .filter_map(|a| std::ffi::CString::new(a.as_bytes()).ok())
        .collect();
    let exe = c"/proc/self/exe";
    // Signals blocked by this supervisor would stay blocked across exec: unblock first.
    let _ = nix::sys::signal::SigSet::all().thread_unblock();
    let _ = nix::unistd::execv(exe, &args);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_policies() {
        assert!(RestartPolicy::parse("no").unwrap().is_none());
        let p = RestartPolicy::parse("on-failure:3").unwrap();
        assert_eq!((p.name.as_str(), p.max_retries), ("on-failure", 3));
        assert!(RestartPolicy::parse("always:2").is_err());
        assert!(RestartPolicy::parse("sometimes").is_err());
        assert!(RestartPolicy::parse("on-failure:x").is_err());
    }

    #[test]
    fn decisions_and_backoff() {
        let p = RestartPolicy::parse("on-failure:3").unwrap();
        assert!(p.wants_restart(1, 2, false));
        assert!(!p.wants_restart(1, 3, false));
        assert!(!p.wants_restart(0, 0, false));
        assert!(!p.wants_restart(1, 0, true));
        let a = RestartPolicy::parse("always").unwrap();
        assert!(a.wants_restart(0, 100, false));
        assert_eq!(backoff(0, Duration::ZERO), Duration::from_millis(100));
        assert_eq!(backoff(3, Duration::ZERO), Duration::from_millis(800));
        assert_eq!(backoff(20, Duration::ZERO), Duration::from_secs(60));
        assert_eq!(
            backoff(5, Duration::from_secs(11)),
            Duration::from_millis(100)
        );
    }
}
