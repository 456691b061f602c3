//! `--runtime runc` (or any OCI runtime with runc's command line): the supervisor still mounts
//! the rootfs, writes logs, proxies ports and records the exit, but hands the bundle it wrote
//! (`<runroot>/containers/<id>/bundle/config.json`, the same spec the built-in executor runs)
//! to `RUNTIME --root <runroot>/runc create --bundle B <id>`, then `start`.

use std::path::PathBuf;
use std::process::{Command, Stdio as ProcStdio};

use nix::unistd::Pid;

use super::spec::Spec;
use super::supervisor::{make_stdio, Stdio};
use super::{cgroup, Container, ContainerError, Result};

fn state_root(c: &Container) -> PathBuf {
    c.paths
        .run_dir
        .parent()
        .and_then(|p| p.parent())
        .map(|r| r.join("runc"))
        .unwrap_or_else(|| c.paths.run_dir.join("runc"))
}

fn runtime_cmd(c: &Container) -> Command {
    let mut cmd = Command::new(c.config.runtime.to_string());
    cmd.arg("--root").arg(state_root(c));
    cmd
}

fn start_err(msg: String) -> ContainerError {
    ContainerError::Start { code: 125, msg }
}

/// Start the container with the external runtime (`create`, then `start`, like
/// containerd's shim); returns the init's host pid and the supervisor's stdio ends. The
/// supervisor is a child subreaper, so the init, orphaned when `create` returns, becomes its
/// child and is reaped by it like the built-in init.
pub(super) fn start(c: &Container, spec: &Spec) -> Result<(Pid, Stdio)> {
    if spec.process.terminal {
        return Err(start_err(format!(
            "runtime {}: -t is only supported by the builtin runtime",
            c.config.runtime
        )));
    }
    // SAFETY: prctl with integer arguments.
    unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    let mut stdio = make_stdio(false, c.config.open_stdin)?;
    let mut fds = std::mem::take(&mut stdio.child_fds).into_iter();
    let (Some(stdin), Some(stdout), Some(stderr)) = (fds.next(), fds.next(), fds.next()) else {
        return Err(start_err("internal: missing stdio".to_string()));
    };
    let pid_file = c.paths.run_dir.join("runtime.pid");
    let log_file = c.paths.run_dir.join("runtime.log");
    let _ = std::fs::remove_file(&pid_file);
    let mut cmd = runtime_cmd(c);
    cmd.arg("--log")
        .arg(&log_file)
        .arg("create")
        .arg("--bundle")
        .arg(c.paths.bundle())
        .arg("--pid-file")
        .arg(&pid_file)
        .arg(c.id().as_str())
        .stdin(ProcStdio::from(stdin))
        .stdout(ProcStdio::from(stdout))
        .stderr(ProcStdio::from(stderr));
    let status = cmd.status().map_err(|e| {
        start_err(format!(
            "cannot run OCI runtime \"{}\": {e}",
            c.config.runtime
        ))
    })?;
    drop(cmd);
    let failure = |what: &str| {
        let log = std::fs::read_to_string(&log_file).unwrap_or_default();
        let last = log
            .lines()
            .rev()
            .find_map(|l| {
                serde_json::from_str::<serde_json::Value>(l)
                    .ok()
                    .and_then(|v| v["msg"].as_str().map(str::to_string))
                    .or_else(|| Some(l.to_string()))
            })
            .unwrap_or_default();
        start_err(format!(
            "OCI runtime {} {what} failed: {last}",
            c.config.runtime
        ))
    };
    if !status.success() {
        return Err(failure("create"));
    }
    let pid: i32 = std::fs::read_to_string(&pid_file)
        .ok()
        .and_then(|p| p.trim().parse().ok())
        .ok_or_else(|| failure("create (no pid file)"))?;
    let kill_it = |e: ContainerError| {
        let _ = runtime_cmd(c)
            .args(["delete", "-f", c.id().as_str()])
            .stdout(ProcStdio::null())
            .stderr(ProcStdio::null())
            .status();
        let _ = nix::sys::wait::waitpid(Pid::from_raw(pid), None);
        e
    };
    if !c.config.resources.is_empty() {
        cgroup::apply(c.id(), &c.config.resources, pid)
            .map_err(|e| kill_it(start_err(e.to_string())))?;
    }
    let started = runtime_cmd(c)
        .arg("--log")
        .arg(&log_file)
        .args(["start", c.id().as_str()])
        .stdin(ProcStdio::null())
        .stdout(ProcStdio::null())
        .stderr(ProcStdio::null())
        .status();
    if !started.map(|s| s.success()).unwrap_or(false) {
        return Err(kill_it(failure("start")));
    }
    Ok((Pid::from_raw(pid), stdio))
}

/// After the init was reaped: delete the runtime's state of the container.
pub(super) fn cleanup(c: &Container) {
    let _ = runtime_cmd(c)
        .args(["delete", "-f", c.id().as_str()])
        .stdout(ProcStdio::null())
        .stderr(ProcStdio::null())
        .status();
}
