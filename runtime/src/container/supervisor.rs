//! The per-container supervisor: a process that lives exactly as long as the container.
//!
//! Protocol with whoever started it ([`Runtime::start`]): fd 3 is the write end of a pipe on
//! which the supervisor writes `ok` once the container's process runs, or
//! `<exit code>\t<message>` if it could not start, then closes it. The supervisor's own exit
//! code is the container's.
//!
//! Order of work: bind published ports (fails fast, nothing to undo) → mount the rootfs (the
//! FUSE threads live here) → fork the init (pid 1 of the pid namespace the supervisor
//! unshared) → record `running` → report `ok` → pump logs, proxy ports, forward signals →
//! reap the init → unmount → record `exited` (or remove the container with `--rm`).

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;
use std::sync::Arc;

use chrono::Utc;
use nix::sched::{unshare, CloneFlags};
use nix::sys::signal::{kill, SigSet, Signal};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{fork, ForkResult, Pid};

use super::init::{self, ChildIo};
use super::logs::{self, LogWriter};
use super::ports;
use super::record::{self, process_start_time, ContainerId, NetworkMode, Status};
use super::spec::{self, Spec};
use super::user;
use super::{cgroup, devices, io_at, oci, Container, ContainerError, Result, Runtime};
use crate::driver::Mounted;

/// Signals the supervisor forwards to the init (SIGWINCH resizes the pty instead).
const FORWARDED: &[Signal] = &[
    Signal::SIGINT,
    Signal::SIGTERM,
    Signal::SIGHUP,
    Signal::SIGQUIT,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
    Signal::SIGWINCH,
];

/// Entry point of the hidden supervisor verb. Returns the process exit code.
pub fn supervise(root: &Path, runroot: &Path, id: &str, attached: bool) -> i32 {
    // SAFETY: the launcher's contract: fd 3 is the report pipe, owned by this process alone.
    let mut report = Some(unsafe { File::from_raw_fd(3) });
    // Nothing we start (an OCI runtime, the container) may inherit it: the starter waits for EOF.
    // SAFETY: setting a flag on our own fd.
    unsafe { libc::fcntl(3, libc::F_SETFD, libc::FD_CLOEXEC) };
    // Pin nothing the caller was in (it could even be a container's rootfs); relative
    // roots are resolved first.
    let root = std::path::absolute(root).unwrap_or_else(|_| root.to_path_buf());
    let runroot = std::path::absolute(runroot).unwrap_or_else(|_| runroot.to_path_buf());
    let _ = std::env::set_current_dir("/");
    let rt = Runtime::new(&root, &runroot);
    let parsed =
        ContainerId::parse(id).map_err(|_| ContainerError::NoSuchContainer(id.to_string()));
    match parsed.and_then(|cid| Ok((run(&rt, &cid, attached, &mut report)?, cid))) {
        Ok((code, cid)) => {
            super::restart::maybe_restart(&rt, &cid, code);
            code
        }
        Err(e) => {
            let code = match &e {
                ContainerError::Start { code, .. } => *code,
                _ => 125,
            };
            if let Some(mut r) = report {
                let _ = r.write_all(format!("{code}\t{e}").as_bytes());
            }
            code
        }
    }
}

pub(super) fn sys(what: &'static str) -> impl FnOnce(nix::Error) -> ContainerError {
    move |source| ContainerError::Sys { what, source }
}

fn pipe() -> Result<(OwnedFd, OwnedFd)> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(sys("pipe"))
}

/// Ends of the container's stdio kept by the supervisor, and the ends given to the child.
pub(super) struct Stdio {
    child: ChildIo,
    pub(super) child_fds: Vec<OwnedFd>,
    /// pty master (tty) or read ends of stdout/stderr pipes.
    out: Option<OwnedFd>,
    err: Option<OwnedFd>,
    /// Where to write the container's stdin (pty master dup or pipe write end).
    stdin: Option<OwnedFd>,
    master: Option<RawFd>,
    /// Our end of the socket the init sends its pty master on.
    pty_socket: Option<OwnedFd>,
}

pub(super) fn make_stdio(tty: bool, open_stdin: bool) -> Result<Stdio> {
    if tty {
        // The init allocates the terminal inside the container and sends the master back.
        let (ours, theirs) = nix::sys::socket::socketpair(
            nix::sys::socket::AddressFamily::Unix,
            nix::sys::socket::SockType::Stream,
            None,
            nix::sys::socket::SockFlag::SOCK_CLOEXEC,
        )
        .map_err(sys("socketpair"))?;
        return Ok(Stdio {
            child: ChildIo::pty(theirs.as_raw_fd(), true),
            child_fds: vec![theirs],
            out: None,
            err: None,
            stdin: None,
            master: None,
            pty_socket: Some(ours),
        });
    }
    let (out_r, out_w) = pipe()?;
    let (err_r, err_w) = pipe()?;
    let (stdin_child, stdin_ours) = if open_stdin {
        let (r, w) = pipe()?;
        (r, Some(w))
    } else {
        let null = File::open("/dev/null").map_err(io_at("/dev/null"))?;
        (OwnedFd::from(null), None)
    };
    Ok(Stdio {
        child: ChildIo::fds(
            stdin_child.as_raw_fd(),
            out_w.as_raw_fd(),
            err_w.as_raw_fd(),
        ),
        child_fds: vec![stdin_child, out_w, err_w],
        out: Some(out_r),
        err: Some(err_r),
        stdin: stdin_ours,
        master: None,
        pty_socket: None,
    })
}

fn copy_winsize(from: RawFd, to: RawFd) {
    // SAFETY: TIOCGWINSZ/TIOCSWINSZ with a valid winsize struct.
    unsafe {
        let mut ws: libc::winsize = std::mem::zeroed();
        if libc::ioctl(from, libc::TIOCGWINSZ, &mut ws) == 0 {
            libc::ioctl(to, libc::TIOCSWINSZ, &ws);
        }
    }
}

/// Finalize the environment: HOME from the user's passwd entry unless set.
fn final_env(env: &[String], home: &str) -> Vec<String> {
    let mut env = env.to_vec();
    if !env.iter().any(|e| e.starts_with("HOME=")) {
        env.push(format!("HOME={}", if home.is_empty() { "/" } else { home }));
    }
    env
}

fn run(rt: &Runtime, id: &ContainerId, attached: bool, report: &mut Option<File>) -> Result<i32> {
    let paths = rt.paths(id);
    std::fs::create_dir_all(&paths.run_dir).map_err(io_at(&paths.run_dir))?;
    // One supervisor per container: held for our whole life, released by the kernel at exit.
    let lock_path = paths.run_dir.join("supervisor.lock");
    let _lock = crate::fsutil::lock_file(&lock_path, crate::fsutil::LockMode::TryExclusive)
        .map_err(|_| ContainerError::Start {
            code: 125,
            msg: format!("container {id} is already running"),
        })?;
    let mut c = rt.load(id)?;
    super::restart::clear_manual_stop(&c.paths.run_dir);
    if !c.state.status.can_start() {
        return Err(ContainerError::Start {
            code: 125,
            msg: format!("container {} is already running", c.id()),
        });
    }
    let mut mask = SigSet::empty();
    for s in FORWARDED {
        mask.add(*s);
    }
    mask.thread_block().map_err(sys("block signals"))?;

    let listeners = if c.config.network == NetworkMode::Host {
        None
    } else {
        Some(ports::bind_all(&c.config.ports)?)
    };
    let mut sandbox = setup_network(rt, &mut c, listeners.as_ref())?;
    std::fs::create_dir_all(&c.paths.run_dir).map_err(io_at(&c.paths.run_dir))?;
    let drv = c.config.driver.driver();
    // The container's log (as its `--log-driver`/`--log-opt` say), opened once: a read a
    // lazily pulled layer cannot serve says why in it too.
    let attrs = c.config.log_config.attrs(&c.config.labels, &c.config.env);
    let log = LogWriter::with_config(&c.paths.log(), &c.config.log_config, attrs)
        .map_err(io_at(c.paths.log()))?;
    crate::lazy::report_to(log.clone());

    let layers = c.layers();
    let rootfs = c.paths.rootfs();
    let builtin = c.config.runtime.is_builtin();
    // Rootless: no bridge; pasta gives the container a network namespace made and configured
    // before the init exists (its first process has the network). Without pasta the
    // container keeps its loopback.
    let pasta = (c.config.network == NetworkMode::Private && crate::rootless::in_user_namespace())
        .then(|| {
            let opts = crate::rootless::pasta_options(rt.root());
            crate::rootless::Pasta::start(&c.paths.run_dir, &opts)
        })
        .and_then(|r| r.map_err(|e| log::warn!("{e}")).ok());
    if let Some(p) = &pasta {
        c.state.sandbox_key = p.ns_path().display().to_string();
    }
    // Builtin: fork the init now, while this process has a single thread: it waits for its
    // spec on the sync pipe while the rootfs is mounted (which starts the FUSE threads).
    let joins = Joins::of(rt, &c)?;
    let forked = if builtin {
        Some(fork_init(&c, joins.pid)?)
    } else {
        None
    };
    let mounted: Box<dyn Mounted> = match drv.mount(&layers, &rootfs) {
        Ok(m) => m,
        Err(e) => {
            if let Some(f) = &forked {
                let _ = kill(f.pid, Signal::SIGKILL);
                let _ = waitpid(f.pid, None);
            }
            return Err(e.into());
        }
    };
    crate::volume::Volumes::populate(mounted.path(), &c.config.volumes);
    let started = match forked {
        Some(child) => {
            let pid = child.pid;
            release_init(&mut c, child, mounted.as_ref(), attached, &joins)
                .map(|stdio| (pid, stdio, false))
        }
        None => build_spec(&c, mounted.as_ref(), attached, &joins)
            .and_then(|spec| oci::start(&c, &spec))
            .map(|(pid, stdio)| (pid, stdio, true)),
    };
    if let Some(s) = sandbox.as_mut() {
        // Only now: the init is forked (the supervisor had to be single-threaded until then).
        // Without a thread for it, names go unanswered; the container still runs.
        let _ = s.start_dns();
    }
    let (pid, stdio, external) = match started {
        Ok(x) => x,
        Err(e) => {
            drop(mounted);
            cgroup::remove(c.id());
            if let ContainerError::Start { code, msg } = &e {
                c.state.status = Status::Exited;
                c.state.exit_code = *code;
                c.state.error = msg.clone();
                c.state.finished_at = Some(Utc::now());
                let _ = rt.write_state(&c);
            }
            return Err(e);
        }
    };

    let bound: Vec<_> = listeners
        .as_ref()
        .map(|l| l.bound.iter().map(|(m, _)| m.clone()).collect())
        .unwrap_or_default();
    c.state = record::ContainerState {
        status: Status::Running,
        pid: pid.as_raw(),
        supervisor_pid: std::process::id() as i32,
        supervisor_start: process_start_time(std::process::id() as i32).unwrap_or(0),
        exit_code: 0,
        started_at: Some(Utc::now()),
        finished_at: None,
        ports: bound,
        error: String::new(),
        restart_count: c.state.restart_count,
        stopped_by_user: false,
        networks: sandbox
            .as_ref()
            .map(|s| s.endpoints.clone())
            .unwrap_or_default(),
        sandbox_key: c.state.sandbox_key.clone(),
    };
    rt.write_state(&c)?;
    rt.event(&c.config, "start");

    let pumps = start_pumps(&stdio, &log, attached);
    if let (Some(l), Ok(ns)) = (listeners, File::open(format!("/proc/{pid}/ns/net"))) {
        ports::serve(l, Arc::new(OwnedFd::from(ns)));
    }
    let stdin_target = stdio.stdin;
    if attached && c.config.open_stdin {
        if let Some(target) = stdin_target {
            std::thread::spawn(move || {
                let mut out = File::from(target);
                let mut input = std::io::stdin();
                let mut buf = [0u8; 8192];
                while let Ok(n) = input.read(&mut buf) {
                    if n == 0 || out.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
                // EOF on our stdin closes the container's (non-tty) stdin.
            });
        }
    } else {
        // Detached `-i` keeps the container's stdin open, for `attach` to write; otherwise closed.
        match stdin_target {
            Some(t) if c.config.open_stdin => {
                super::attach::serve_stdin(super::attach::socket_path(&c.paths.run_dir), t)
            }
            t => std::mem::forget(t),
        }
    }
    let master = stdio.master;
    if attached {
        if let Some(m) = master {
            copy_winsize(0, m);
        }
    }
    spawn_signal_forwarder(mask, pid, master);

    // Health is `starting` before the starter hears `ok`.
    let health = super::health::Monitor::start(rt, &c);
    if let Some(mut r) = report.take() {
        // The starter may be gone (killed during `run -d`): the container runs on regardless.
        let _ = r.write_all(b"ok");
    }

    let code = reap(pid);
    if !c.config.security.own_pid_namespace() {
        cgroup::kill_all(c.id());
    }
    drop(health);
    if external {
        oci::cleanup(&c);
    }
    for p in pumps {
        let _ = p.join();
    }
    drop(mounted);
    drop(pasta);
    cgroup::remove(c.id());
    drop(sandbox);
    c.state.sandbox_key.clear();
    c.state.networks.clear();
    c.state.status = Status::Exited;
    c.state.pid = 0;
    c.state.exit_code = code;
    c.state.finished_at = Some(Utc::now());
    // A `rename` while it ran changed the record, not this copy: the event names it as it is now.
    if let Ok(name) =
        record::read_json::<record::ContainerConfig>(&c.paths.config()).map(|f| f.name)
    {
        c.config.name = name;
    }
    rt.event_with(die_event(&c));
    if c.config.auto_remove {
        if rt.remove_files(&c).is_ok() {
            // Docker removes a `--rm` container's anonymous volumes with it.
            crate::volume::Volumes::new(rt.root())
                .with_events(rt.runroot())
                .remove_anonymous(&c.config.volumes, || rt.list().unwrap_or_default());
        }
    } else {
        rt.write_state(&c)?;
    }
    Ok(code)
}

/// Docker's `die`: the exit code and how long the init ran (whole seconds).
pub(super) fn die_event(c: &Container) -> crate::events::Event {
    let ran = match (c.state.started_at, c.state.finished_at) {
        (Some(s), Some(f)) => (f - s).num_seconds().max(0),
        _ => 0,
    };
    crate::events::Event::container(&c.config, "die")
        .attr("exitCode", c.state.exit_code.to_string())
        .attr("execDuration", ran.to_string())
}

/// The container's network sandbox (bridge endpoints, or another container's namespace),
/// set up before the init starts; its path goes into the spec.
fn setup_network(
    rt: &Runtime,
    c: &mut Container,
    listeners: Option<&ports::Listeners>,
) -> Result<Option<crate::network::Sandbox>> {
    let bound: Vec<_> = listeners
        .map(|l| l.bound.iter().map(|(m, _)| m.clone()).collect())
        .unwrap_or_default();
    let sandbox =
        crate::network::Sandbox::setup(rt, c, &bound).map_err(|e| ContainerError::Start {
            code: 125,
            msg: e.to_string(),
        })?;
    c.state.sandbox_key = sandbox.as_ref().map(|s| s.path.clone()).unwrap_or_default();
    Ok(sandbox)
}

/// The inits of the containers whose namespaces this one joins (`--pid container:X`, `--ipc
/// container:X`), found running at start, and the host directory bound at `/dev/shm` when the
/// IPC namespace is shared with other containers.
#[derive(Debug, Default)]
pub(super) struct Joins {
    pid: Option<i32>,
    ipc: Option<i32>,
    /// `--ipc container:X`: X's `/dev/shm` source; `--ipc shareable`: our own (`own_shm`).
    shm: Option<std::path::PathBuf>,
    own_shm: Option<ShmMount>,
}

impl Joins {
    fn of(rt: &Runtime, c: &Container) -> Result<Joins> {
        let sec = &c.config.security;
        let target = |id: &str, what| {
            (!id.is_empty())
                .then(|| super::runopts::join_target(rt, id, what))
                .transpose()
        };
        let mut j = Joins {
            pid: target(&sec.pid_container, "PID")?,
            ipc: target(&sec.ipc_container, "IPC")?,
            ..Joins::default()
        };
        if j.ipc.is_some() {
            j.shm = Some(donor_shm(rt, &sec.ipc_container)?);
        } else if sec.ipc_shareable {
            let m = ShmMount::new(&c.paths.shm(), sec.shm_size)?;
            j.shm = Some(m.path.clone());
            j.own_shm = Some(m);
        }
        Ok(j)
    }

    /// The spec's namespace paths and `/dev/shm`.
    fn apply(&self, spec: &mut Spec) {
        if let Some(p) = self.pid {
            spec.join_namespace("pid", &format!("/proc/{p}/ns/pid"));
        }
        if let Some(p) = self.ipc {
            spec.join_namespace("ipc", &format!("/proc/{p}/ns/ipc"));
        }
        if let Some(src) = &self.shm {
            spec.bind_shm(src);
        }
    }
}

/// The `/dev/shm` of the running container `id` whose IPC namespace a container joins: its
/// host-side tmpfs when it is shareable, the host's own with `--ipc host`; otherwise Docker's
/// refusal (a private IPC namespace is not shared, since Docker 20.10's default).
fn donor_shm(rt: &Runtime, id: &str) -> Result<std::path::PathBuf> {
    let refuse = || {
        ContainerError::Start {
        code: 125,
        msg: format!(
            "container {id}: non-shareable IPC (hint: use IpcMode:shareable for the donor container)"
        ),
    }
    };
    let donor = rt.lookup(id).map_err(|_| refuse())?;
    let sec = &donor.config.security;
    if sec.ipc_host {
        return Ok("/dev/shm".into());
    }
    let shm = donor.paths.shm();
    if sec.ipc_shareable && crate::driver::is_mountpoint(&shm) {
        return Ok(shm);
    }
    Err(refuse())
}

/// `--ipc shareable`: a tmpfs of `--shm-size` (64 MiB by default) mounted at the container's
/// `Paths::shm` in this (the host's, or rootless strata's) mount namespace for as long as the
/// supervisor lives, so other containers can bind it. One a killed supervisor left is
/// detached first; `rm` and the reconcile of a dead supervisor detach it too.
#[derive(Debug)]
pub(super) struct ShmMount {
    path: std::path::PathBuf,
}

impl ShmMount {
    fn new(path: &Path, size: Option<u64>) -> Result<ShmMount> {
        crate::driver::force_unmount(path)?;
        std::fs::create_dir_all(path).map_err(io_at(path))?;
        let size = match size {
            Some(b) if b > 0 => format!("size={b}"),
            _ => "size=65536k".to_string(),
        };
        use nix::mount::MsFlags;
        nix::mount::mount(
            Some("shm"),
            path,
            Some("tmpfs"),
            MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC | MsFlags::MS_NODEV,
            Some(format!("mode=1777,{size}").as_str()),
        )
        .map_err(sys("mount the shareable /dev/shm"))?;
        Ok(ShmMount {
            path: path.to_path_buf(),
        })
    }
}

impl Drop for ShmMount {
    fn drop(&mut self) {
        let _ = crate::driver::force_unmount(&self.path);
        let _ = std::fs::remove_dir(&self.path);
    }
}

/// The forked init, waiting for its spec.
struct ForkedInit {
    pid: Pid,
    stdio: Stdio,
    sync: File,
    status: File,
}

/// Fork the container's init as pid 1 of a new pid namespace. Must run while the supervisor
/// is single-threaded: the kernel refuses to create threads while `pid_ns_for_children`
/// differs from the active namespace, so the supervisor switches back right after the fork.
fn fork_init(c: &Container, join_pid: Option<i32>) -> Result<ForkedInit> {
    let mut stdio = make_stdio(c.config.tty, c.config.open_stdin)?;
    let (status_r, status_w) = pipe()?;
    let (sync_r, sync_w) = pipe()?;
    let (forked, restored) = if let Some(target) = join_pid {
        // `--pid container:X`: a child of X's pid namespace.
        let path = format!("/proc/{target}/ns/pid");
        let theirs = File::open(&path).map_err(io_at(&path))?;
        let own_pid_ns = File::open("/proc/self/ns/pid").map_err(io_at("/proc/self/ns/pid"))?;
        nix::sched::setns(&theirs, CloneFlags::CLONE_NEWPID)
            .map_err(sys("join the pid namespace"))?;
        // SAFETY: the supervisor has one thread here; the child only runs `init::run_init`,
        // which ends in execve or _exit.
        let forked = unsafe { fork() };
        (
            forked,
            nix::sched::setns(&own_pid_ns, CloneFlags::CLONE_NEWPID),
        )
    } else if c.config.security.pid_host {
        // `--pid host`: the user asked for the host's pid namespace.
        // SAFETY: the supervisor has one thread here; the child only runs `init::run_init`,
        // which ends in execve or _exit.
        (unsafe { fork() }, Ok(()))
    } else if crate::rootless::in_user_namespace() {
        // Rootless: the supervisor could not `setns` back into the initial pid namespace (it
        // belongs to the initial user namespace), so the init gets its own pid namespace from
        // clone(2) itself and the supervisor's never changes.
        (fork_new_pid_ns(), Ok(()))
    } else {
        let own_pid_ns = File::open("/proc/self/ns/pid").map_err(io_at("/proc/self/ns/pid"))?;
        unshare(CloneFlags::CLONE_NEWPID).map_err(sys("unshare pid namespace"))?;
        // SAFETY: the supervisor has one thread here; the child only runs `init::run_init`,
        // which ends in execve or _exit.
        let forked = unsafe { fork() };
        (
            forked,
            nix::sched::setns(&own_pid_ns, CloneFlags::CLONE_NEWPID),
        )
    };
    let pid = match forked.map_err(sys("fork"))? {
        ForkResult::Child => {
            // The child's copy of the write end would keep its own read from seeing EOF.
            drop(sync_w);
            drop(status_r);
            init::run_init(stdio.child, status_w.as_raw_fd(), sync_r.as_raw_fd())
        }
        ForkResult::Parent { child } => child,
    };
    if let Err(e) = restored {
        let _ = kill(pid, Signal::SIGKILL);
        let _ = waitpid(pid, None);
        return Err(sys("restore pid namespace")(e));
    }
    drop(status_w);
    drop(sync_r);
    stdio.child_fds.clear();
    Ok(ForkedInit {
        pid,
        stdio,
        sync: File::from(sync_w),
        status: File::from(status_r),
    })
}

/// fork(2) into a new pid namespace: clone(2) with `CLONE_NEWPID | SIGCHLD` and no new stack
/// behaves as fork for the child, which becomes pid 1 of the new namespace.
fn fork_new_pid_ns() -> nix::Result<ForkResult> {
    // SAFETY: a raw clone without CLONE_VM copies the address space as fork does; the caller is
    // single-threaded (no lock can be held by another thread) and the child only runs
    // `init::run_init`, which ends in execve or _exit.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_clone,
            (libc::CLONE_NEWPID | libc::SIGCHLD) as libc::c_ulong,
            0usize,
            0usize,
            0usize,
            0usize,
        )
    };
    match ret {
        -1 => Err(nix::Error::last()),
        0 => Ok(ForkResult::Child),
        pid => Ok(ForkResult::Parent {
            child: Pid::from_raw(pid as i32),
        }),
    }
}

/// The container's OCI spec, with the user resolved against the mounted rootfs; also written
/// to the bundle (`<runroot>/containers/<id>/bundle/config.json`).
pub(super) fn build_spec(
    c: &Container,
    mounted: &dyn Mounted,
    attached: bool,
    joins: &Joins,
) -> Result<Spec> {
    let resolved =
        user::resolve(mounted.path(), &c.config.user).map_err(|e| ContainerError::Start {
            code: 125,
            msg: e.to_string(),
        })?;
    let env = final_env(&c.config.env, &resolved.home);
    let mut user_spec = resolved.to_spec();
    user::add_groups(mounted.path(), &c.config.security.group_add, &mut user_spec).map_err(
        |e| ContainerError::Start {
            code: 125,
            msg: e.to_string(),
        },
    )?;
    let mut spec: Spec =
        spec::build(&c.config, &c.paths, user_spec, env).map_err(|e| ContainerError::Start {
            code: 125,
            msg: e.to_string(),
        })?;
    spec.join_network(&c.state.sandbox_key);
    joins.apply(&mut spec);
    if attached && c.config.tty {
        spec.process.console_size = spec::ConsoleSize::of_fd(0);
    }
    let bundle = c.paths.bundle();
    std::fs::create_dir_all(&bundle).map_err(io_at(&bundle))?;
    record::write_json_volatile(&bundle.join("config.json"), &spec)?;
    Ok(spec)
}

/// Build the init's spec against the mounted rootfs, place it in its cgroups, send it the
/// spec and wait until it has exec'd. On failure the init is reaped.
fn release_init(
    c: &mut Container,
    child: ForkedInit,
    mounted: &dyn Mounted,
    attached: bool,
    joins: &Joins,
) -> Result<Stdio> {
    let ForkedInit {
        pid,
        mut stdio,
        mut sync,
        mut status,
    } = child;
    let abort = |e: ContainerError| {
        let _ = kill(pid, Signal::SIGKILL);
        let _ = waitpid(pid, None);
        e
    };
    let prepared = (|| -> Result<Spec> {
        let spec = build_spec(c, mounted, attached, joins)?;
        if !c.config.security.privileged {
            devices::apply(c.id(), &spec.linux.resources.devices, pid.as_raw()).map_err(|e| {
                ContainerError::Start {
                    code: 125,
                    msg: e.to_string(),
                }
            })?;
        }
        if !c.config.security.own_pid_namespace() {
            cgroup::track(c.id(), pid.as_raw()).map_err(|e| ContainerError::Start {
                code: 125,
                msg: e.to_string(),
            })?;
        }
        if !c.config.resources.is_empty() {
            cgroup::apply(c.id(), &c.config.resources, pid.as_raw()).map_err(|e| {
                ContainerError::Start {
                    code: 125,
                    msg: e.to_string(),
                }
            })?;
        }
        Ok(spec)
    })();
    let spec = prepared.map_err(abort)?;
    let filter = init::seccomp_filter(&spec, &c.paths.seccomp_cache())
        .map_err(|e| ContainerError::Start {
            code: e.code,
            msg: e.msg,
        })
        .map_err(abort)?;
    let json = serde_json::to_vec(&spec).map_err(|source| ContainerError::Json {
        path: c.paths.bundle().join("config.json"),
        source,
    });
    let json = json.map_err(abort)?;
    sync.write_all(&init::encode_init_message(&json, filter.as_ref()))
        .map_err(io_at("init sync pipe"))
        .map_err(abort)?;
    drop(sync);
    if let Some(sock) = stdio.pty_socket.take() {
        if let Some(master) = init::recv_fd(sock.as_raw_fd()) {
            stdio.master = Some(master.as_raw_fd());
            stdio.stdin = nix::unistd::dup(&master).ok();
            stdio.out = Some(master);
        }
    }
    let mut msg = String::new();
    let _ = status.read_to_string(&mut msg);
    if msg.is_empty() {
        return Ok(stdio);
    }
    let _ = waitpid(pid, None);
    let (code, text) = msg.split_once('\t').unwrap_or(("125", msg.as_str()));
    Err(ContainerError::Start {
        code: code.parse().unwrap_or(125),
        msg: text.to_string(),
    })
}

fn start_pumps(
    stdio: &Stdio,
    log: &Arc<LogWriter>,
    attached: bool,
) -> Vec<std::thread::JoinHandle<()>> {
    let mut out = Vec::new();
    let streams = [(&stdio.out, "stdout", 1), (&stdio.err, "stderr", 2)];
    for (fd, name, mirror_fd) in streams {
        let Some(fd) = fd else { continue };
        let Ok(src) = nix::unistd::dup(fd) else {
            continue;
        };
        let mirror = if attached {
            // SAFETY: duplicating our own stdout/stderr.
            let d = unsafe { libc::dup(mirror_fd) };
            // SAFETY: d is a fresh fd we own (or -1, checked).
            (d >= 0).then(|| unsafe { File::from_raw_fd(d) })
        } else {
            None
        };
        let log = Arc::clone(log);
        let src = File::from(src);
        if let Ok(h) = std::thread::Builder::new()
            .name(format!("log-{name}"))
            .spawn(move || logs::pump(src, name, &log, mirror))
        {
            out.push(h);
        }
    }
    out
}

fn spawn_signal_forwarder(mask: SigSet, pid: Pid, master: Option<RawFd>) {
    let _ = std::thread::Builder::new()
        .name("signals".to_string())
        .spawn(move || loop {
            let Ok(sig) = mask.wait() else {
                continue;
            };
            match (sig, master) {
                (Signal::SIGWINCH, Some(m)) => copy_winsize(0, m),
                (Signal::SIGWINCH, None) => {}
                (s, _) => {
                    let _ = kill(pid, s);
                }
            }
        });
}

/// Wait for the init; its exit code, or 128 + the signal that killed it.
fn reap(pid: Pid) -> i32 {
    loop {
        match waitpid(pid, None) {
            Ok(WaitStatus::Exited(_, code)) => return code,
            Ok(WaitStatus::Signaled(_, sig, _)) => return 128 + sig as i32,
            Ok(_) => continue,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => return 255,
        }
    }
}
