//! `exec`: run another process in a running container. The caller forks a child that joins
//! the init's namespaces with `setns` (ipc, uts, net, pid, then mnt, which also moves its root
//! and cwd into the container's root); that child forks the process itself (joining a pid
//! namespace only takes effect for children) and relays its exit status.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use nix::sched::CloneFlags;
use nix::sys::signal::Signal;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{fork, setsid, ForkResult, Pid};

use super::init::{self, ChildIo, InitError};
use super::seccomp::Filter;
use super::spec::{Process, Spec};
use super::{cgroup, io_at, record, user, Container, ContainerError, Result};

/// `exec` flags.
#[derive(Debug, Clone, Default)]
pub struct ExecRequest {
    pub cmd: Vec<String>,
    pub env: Vec<String>,
    pub user: Option<String>,
    pub workdir: Option<String>,
    pub tty: bool,
    pub interactive: bool,
    pub detach: bool,
    /// `--privileged`: every capability for this process (Docker's exec; the container's
    /// seccomp filter, device rules and masked paths still apply, as with runc).
    pub privileged: bool,
}

/// A started exec: wait for it with [`ExecHandle::wait`]. With a tty, `master` is the pty
/// master the caller copies to and from its terminal.
pub struct ExecHandle {
    relay: Pid,
    pub master: Option<OwnedFd>,
    /// Where its `exec_die` goes once a wait sees it end: the events log's runroot and the
    /// event (Docker records it when the process exits; a detached exec nobody waits for gets
    /// none, strata having no daemon to see it end).
    die: Option<(PathBuf, crate::events::Event)>,
}

impl ExecHandle {
    /// The process's exit code, or `None` when `limit` passed first: then the process, its
    /// process group and the relay are killed (SIGKILL) and reaped.
    pub fn wait_timeout(self, limit: Duration) -> Option<i32> {
        let deadline = Instant::now() + limit;
        loop {
            let code = match waitpid(self.relay, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(_, code)) => Some(code),
                Ok(WaitStatus::Signaled(_, sig, _)) => Some(128 + sig as i32),
                Ok(_) | Err(nix::errno::Errno::EINTR) => None,
                Err(_) => Some(255),
            };
            if let Some(code) = code {
                self.died(code);
                return Some(code);
            }
            if Instant::now() >= deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        // The relay's child is the process (its own session, so its group is its pid; the
        // host's /proc names it by its host pid).
        let children = format!("/proc/{0}/task/{0}/children", self.relay);
        if let Ok(list) = std::fs::read_to_string(children) {
            for pid in list
                .split_whitespace()
                .filter_map(|p| p.parse::<i32>().ok())
            {
                let _ = nix::sys::signal::kill(Pid::from_raw(-pid), Signal::SIGKILL);
                let _ = nix::sys::signal::kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
        }
        let _ = nix::sys::signal::kill(self.relay, Signal::SIGKILL);
        let _ = waitpid(self.relay, None);
        self.died(137);
        None
    }

    /// The process's exit code (128 + signal if killed).
    pub fn wait(self) -> i32 {
        let code = loop {
            match waitpid(self.relay, None) {
                Ok(WaitStatus::Exited(_, code)) => break code,
                Ok(WaitStatus::Signaled(_, sig, _)) => break 128 + sig as i32,
                Ok(_) | Err(nix::errno::Errno::EINTR) => continue,
                Err(_) => break 255,
            }
        };
        self.died(code);
        code
    }

    fn died(&self, code: i32) {
        if let Some((runroot, ev)) = &self.die {
            crate::events::record(runroot, &ev.clone().attr("exitCode", code.to_string()));
        }
    }
}

fn sys(what: &'static str) -> impl FnOnce(nix::Error) -> ContainerError {
    move |source| ContainerError::Sys { what, source }
}

/// The exec'd process (the init's, with the request's changes) and the container's seccomp
/// filter, compiled here, before the fork.
fn process_for(c: &Container, req: &ExecRequest) -> Result<(Process, Option<Filter>)> {
    let spec: Spec = record::read_json(&c.paths.bundle().join("config.json"))?;
    let filter = init::seccomp_filter(&spec, &c.paths.seccomp_cache()).map_err(|e| {
        ContainerError::Start {
            code: 126,
            msg: e.msg,
        }
    })?;
    let mut p = spec.process;
    p.args = req.cmd.clone();
    p.terminal = req.tty;
    p.console_size = if req.tty {
        super::spec::ConsoleSize::of_fd(0)
    } else {
        None
    };
    let mut env = p.env.clone();
    for e in &req.env {
        let key = e.split('=').next().unwrap_or(e);
        env.retain(|x| x.split('=').next() != Some(key));
        if e.contains('=') {
            env.push(e.clone());
        } else if let Ok(v) = std::env::var(e) {
            env.push(format!("{e}={v}"));
        }
    }
    p.env = env;
    if let Some(u) = &req.user {
        let root = PathBuf::from(format!("/proc/{}/root", c.state.pid));
        let r = user::resolve(&root, u)?;
        p.user = r.to_spec();
        // Docker's execs keep `--group-add` whatever their user.
        user::add_groups(&root, &c.config.security.group_add, &mut p.user)?;
        if let Some(h) = p.env.iter_mut().find(|e| e.starts_with("HOME=")) {
            *h = format!("HOME={}", r.home);
        }
    }
    if let Some(w) = &req.workdir {
        p.cwd = w.clone();
    }
    if req.privileged {
        // Every capability this process can hand on (`--privileged`'s set: the bounding set's).
        let all = super::caps::effective(&[], &[], true);
        p.capabilities.bounding = all.clone();
        p.capabilities.effective = all.clone();
        p.capabilities.permitted = all;
    }
    Ok((p, filter))
}

/// True when the namespace open in `f` is this process's own namespace of kind `name`.
fn same_namespace(f: &File, name: &str) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (
        f.metadata(),
        std::fs::metadata(format!("/proc/self/ns/{name}")),
    ) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

/// Start `req.cmd` in container `c`. Without a tty the process inherits the caller's stdio
/// (`-d`: `/dev/null`). Returns once it has exec'd, or the error it met.
pub fn exec(c: &Container, req: &ExecRequest) -> Result<ExecHandle> {
    if !c.is_running() || c.state.pid <= 0 {
        return Err(ContainerError::NotRunning(c.id().to_string()));
    }
    if req.cmd.is_empty() {
        return Err(ContainerError::NoCommand);
    }
    let (process, filter) = process_for(c, req)?;
    let pid = c.state.pid;
    let mut ns_files = Vec::new();
    for (name, flag) in [
        ("ipc", CloneFlags::CLONE_NEWIPC),
        ("uts", CloneFlags::CLONE_NEWUTS),
        ("net", CloneFlags::CLONE_NEWNET),
        ("pid", CloneFlags::CLONE_NEWPID),
        ("mnt", CloneFlags::CLONE_NEWNS),
    ] {
        let path = format!("/proc/{pid}/ns/{name}");
        let f = File::open(&path).map_err(io_at(&path))?;
        // A namespace the container shares with us (`--network host`) is not joined again:
        // setns into it asks for CAP_SYS_ADMIN over its owner, which a user namespace's root
        // (rootless, or strata nested without CAP_SYS_ADMIN) does not have.
        if same_namespace(&f, name) {
            continue;
        }
        ns_files.push((f, flag));
    }
    let ns: Vec<(RawFd, CloneFlags)> = ns_files.iter().map(|(f, k)| (f.as_raw_fd(), *k)).collect();

    let socks = if req.tty {
        Some(
            nix::sys::socket::socketpair(
                nix::sys::socket::AddressFamily::Unix,
                nix::sys::socket::SockType::Stream,
                None,
                nix::sys::socket::SockFlag::SOCK_CLOEXEC,
            )
            .map_err(sys("socketpair"))?,
        )
    } else {
        None
    };
    let null = if req.detach && !req.tty {
        Some(
            File::options()
                .read(true)
                .write(true)
                .open("/dev/null")
                .map_err(io_at("/dev/null"))?,
        )
    } else {
        None
    };
    let io = match (&socks, &null) {
        (Some((_, theirs)), _) => ChildIo::pty(theirs.as_raw_fd(), false),
        (None, Some(n)) => ChildIo::fds(n.as_raw_fd(), n.as_raw_fd(), n.as_raw_fd()),
        (None, None) => ChildIo::fds(if req.interactive { 0 } else { open_null_fd() }, 1, 2),
    };
    let (status_r, status_w) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(sys("pipe"))?;
    let status_fd = status_w.as_raw_fd();
    let cid = c.id().clone();
    let cgroups = super::delegated::procs_files_of(pid);
    // SAFETY: the child runs `relay`, which only forks, setns's, execs or _exits.
    let relay = match unsafe { fork() }.map_err(sys("fork"))? {
        ForkResult::Child => relay(
            &ns,
            &process,
            filter.as_ref(),
            io,
            status_fd,
            req.detach,
            &cid,
            &cgroups,
        ),
        ForkResult::Parent { child } => child,
    };
    drop(status_w);
    drop(null);
    let master = match socks {
        Some((ours, theirs)) => {
            drop(theirs);
            let m = init::recv_fd(ours.as_raw_fd());
            if let Some(m) = &m {
                // SAFETY: TIOCGWINSZ/TIOCSWINSZ with a valid winsize struct.
                unsafe {
                    let mut ws: libc::winsize = std::mem::zeroed();
                    if libc::ioctl(0, libc::TIOCGWINSZ, &mut ws) == 0 {
                        libc::ioctl(m.as_raw_fd(), libc::TIOCSWINSZ, &ws);
                    }
                }
            }
            m
        }
        None => None,
    };
    let mut msg = String::new();
    let _ = File::from(status_r).read_to_string(&mut msg);
    if !msg.is_empty() {
        let _ = waitpid(relay, None);
        let (code, text) = msg.split_once('\t').unwrap_or(("126", msg.as_str()));
        return Err(ContainerError::Start {
            code: code.parse().unwrap_or(126),
            msg: text.to_string(),
        });
    }
    // Docker's exec events: `exec_create: CMD`, `exec_start: CMD` now, `exec_die` at the end,
    // each with the exec's id.
    let die = c.paths.runroot().map(|runroot| {
        let exec_id = super::record::ContainerId::generate();
        let cmd = req.cmd.join(" ");
        let ev = |action: String| {
            crate::events::Event::container(&c.config, &action).attr("execID", exec_id.as_str())
        };
        crate::events::record(runroot, &ev(format!("exec_create: {cmd}")));
        crate::events::record(runroot, &ev(format!("exec_start: {cmd}")));
        (runroot.to_path_buf(), ev("exec_die".to_string()))
    });
    Ok(ExecHandle { relay, master, die })
}

fn open_null_fd() -> RawFd {
    File::open("/dev/null")
        .map(std::os::fd::IntoRawFd::into_raw_fd)
        .unwrap_or(0)
}

/// In the forked relay: join the namespaces, fork the process, relay its exit status.
// Everything the post-fork child needs comes as arguments, built before the fork.
#[allow(clippy::too_many_arguments)]
fn relay(
    ns: &[(RawFd, CloneFlags)],
    process: &Process,
    filter: Option<&Filter>,
    io: ChildIo,
    status_fd: RawFd,
    detach: bool,
    id: &super::ContainerId,
    cgroups: &[std::path::PathBuf],
) -> ! {
    init::reset_signals();
    // Before entering anything of the container's: it may not open our /proc files.
    init::undumpable();
    cgroup::join(id, std::process::id() as i32);
    super::delegated::join(cgroups);
    if let Err(e) = init::join_namespaces(ns) {
        init::fail(status_fd, e);
    }
    // SAFETY: single-threaded child; the grandchild only execs or _exits.
    match unsafe { fork() } {
        Ok(ForkResult::Child) => {
            if let Err(e) = setsid() {
                init::fail(
                    status_fd,
                    InitError {
                        code: 126,
                        msg: format!("setsid: {e}"),
                    },
                );
            }
            let e = init::finish_and_exec(process, io, filter, status_fd);
            init::fail(status_fd, e)
        }
        Ok(ForkResult::Parent { child }) => {
            // SAFETY: closing our copy of the status pipe so the caller sees EOF at exec.
            unsafe { libc::close(status_fd) };
            if detach {
                // SAFETY: leaving the relay; the process is reparented to the container's init.
                unsafe { libc::_exit(0) }
            }
            let code = loop {
                match waitpid(child, None) {
                    Ok(WaitStatus::Exited(_, c)) => break c,
                    Ok(WaitStatus::Signaled(_, s, _)) => break 128 + s as i32,
                    Ok(_) | Err(nix::errno::Errno::EINTR) => continue,
                    Err(_) => break 255,
                }
            };
            // SAFETY: ending the relay with the process's status.
            unsafe { libc::_exit(code) }
        }
        Err(e) => init::fail(
            status_fd,
            InitError {
                code: 126,
                msg: format!("fork: {e}"),
            },
        ),
    }
}

/// Copy between the caller's terminal and an exec'd or attached pty until the pty closes.
pub fn pump_pty(master: OwnedFd) {
    let Ok(input_fd) = nix::unistd::dup(&master) else {
        return;
    };
    std::thread::spawn(move || {
        let mut to = File::from(input_fd);
        let mut stdin = std::io::stdin();
        let mut buf = [0u8; 4096];
        while let Ok(n) = stdin.read(&mut buf) {
            if n == 0 || to.write_all(&buf[..n]).is_err() {
                break;
            }
        }
    });
    let mut from = File::from(master);
    let mut out = std::io::stdout();
    let mut buf = [0u8; 4096];
    while let Ok(n) = from.read(&mut buf) {
        if n == 0 || out.write_all(&buf[..n]).and_then(|_| out.flush()).is_err() {
            break;
        }
    }
}
