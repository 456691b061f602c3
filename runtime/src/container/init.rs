//! The child side: code that runs in a freshly forked, single-threaded child and ends in
//! `execve` (or `_exit` after reporting why it could not).
//!
//! [`run_init`] turns the supervisor's child into the container's init: new namespaces, the
//! spec's mounts, `/dev`, `pivot_root`, hostname, masked paths, loopback, then
//! [`finish_and_exec`]. `exec` reuses [`finish_and_exec`] after joining the namespaces.
//!
//! Errors are sent to the parent over a close-on-exec pipe as `<exit code>\t<message>`: EOF
//! without data means `execve` succeeded.

use std::ffi::CString;
use std::fs;
use std::io::Write;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{unshare, CloneFlags};
use nix::sys::stat::{makedev, mknod, Mode, SFlag};
use nix::unistd::{chdir, pivot_root, sethostname, setsid, Gid, Uid};

use super::caps;
use super::seccomp::{self, Filter};
use super::spec::{Process, Spec};

/// Why the child could not become the requested process: exit code (125 setup, 126 cannot
/// invoke, 127 not found) and a message in Docker's words.
#[derive(Debug)]
pub struct InitError {
    pub code: i32,
    pub msg: String,
}

fn setup_err<E: std::fmt::Display>(what: impl std::fmt::Display) -> impl FnOnce(E) -> InitError {
    move |e| InitError {
        code: 125,
        msg: format!("{what}: {e}"),
    }
}

/// The stdio of the child: fds to install as 0, 1, 2, or, with `pty_socket`, a terminal the
/// child allocates from the container's own devpts (so `tty` and `ttyname` work inside) and
/// whose master it sends back over that unix socket (SCM_RIGHTS), as runc does.
#[derive(Debug, Clone, Copy)]
pub struct ChildIo {
    pub stdin: RawFd,
    pub stdout: RawFd,
    pub stderr: RawFd,
    pub pty_socket: Option<RawFd>,
    /// Bind the terminal at `/dev/console` (the init's terminal).
    pub console: bool,
}

impl ChildIo {
    /// Plain fds, no terminal.
    pub fn fds(stdin: RawFd, stdout: RawFd, stderr: RawFd) -> ChildIo {
        ChildIo {
            stdin,
            stdout,
            stderr,
            pty_socket: None,
            console: false,
        }
    }

    /// A terminal allocated inside the container, master sent over `socket`.
    pub fn pty(socket: RawFd, console: bool) -> ChildIo {
        ChildIo {
            stdin: -1,
            stdout: -1,
            stderr: -1,
            pty_socket: Some(socket),
            console,
        }
    }
}

/// Open a pty from the current `/dev/ptmx` (the container's devpts after pivot_root).
fn open_pty() -> Result<(OwnedFd, OwnedFd, String), InitError> {
    use nix::fcntl::OFlag;
    let master = nix::pty::posix_openpt(OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC)
        .map_err(setup_err("open /dev/ptmx"))?;
    nix::pty::grantpt(&master).map_err(setup_err("grantpt"))?;
    nix::pty::unlockpt(&master).map_err(setup_err("unlockpt"))?;
    let name = nix::pty::ptsname_r(&master).map_err(setup_err("ptsname"))?;
    let slave = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOCTTY)
        .open(&name)
        .map_err(setup_err(format!("open {name}")))?;
    // SAFETY: into_raw_fd hands over the PtyMaster's fd, which we then own.
    let master = unsafe { OwnedFd::from_raw_fd(master.into_raw_fd()) };
    Ok((master, OwnedFd::from(slave), name))
}

/// Send `fd` over the unix socket `sock` (SCM_RIGHTS).
pub fn send_fd(sock: RawFd, fd: RawFd) -> nix::Result<()> {
    use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
    let fds = [fd];
    let iov = [std::io::IoSlice::new(b"m")];
    sendmsg::<()>(
        sock,
        &iov,
        &[ControlMessage::ScmRights(&fds)],
        MsgFlags::empty(),
        None,
    )?;
    Ok(())
}

/// Receive one fd sent with [`send_fd`]; `None` if the peer closed without sending.
pub fn recv_fd(sock: RawFd) -> Option<OwnedFd> {
    use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
    let mut buf = [0u8; 1];
    let mut iov = [std::io::IoSliceMut::new(&mut buf)];
    let mut space = nix::cmsg_space!([RawFd; 1]);
    let msg = recvmsg::<()>(sock, &mut iov, Some(&mut space), MsgFlags::MSG_CMSG_CLOEXEC).ok()?;
    for c in msg.cmsgs().ok()? {
        if let ControlMessageOwned::ScmRights(fds) = c {
            if let Some(&fd) = fds.first() {
                // SAFETY: the kernel just installed this fd in our table for us.
                return Some(unsafe { OwnedFd::from_raw_fd(fd) });
            }
        }
    }
    None
}

/// Report `err` on `status_fd` and exit. Never returns.
pub fn fail(status_fd: RawFd, err: InitError) -> ! {
    let line = format!("{}\t{}", err.code, err.msg.replace('\n', " "));
    // SAFETY: status_fd is an fd this process owns; a failed write only loses the message.
    let mut f = unsafe {
        std::mem::ManuallyDrop::new(<fs::File as std::os::fd::FromRawFd>::from_raw_fd(status_fd))
    };
    let _ = f.write_all(line.as_bytes());
    // SAFETY: _exit ends the forked child without running the parent's atexit handlers.
    unsafe { libc::_exit(err.code) }
}

/// Reset what a forked child inherits from a multi-threaded supervisor: the signal mask and
/// handlers, and ask to be killed when the parent dies.
pub fn reset_signals() {
    // SAFETY: plain libc calls on this thread's own signal state.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
        for sig in 1..32 {
            if sig != libc::SIGKILL && sig != libc::SIGSTOP {
                libc::signal(sig, libc::SIG_DFL);
            }
        }
    }
}

/// Become the container's init. Runs in the supervisor's forked child, which is already pid 1
/// of the container's pid namespace: it reads its spec and seccomp program
/// ([`encode_init_message`]) from `sync_fd` until EOF (EOF without them means the supervisor
/// gave up), then sets up and execs.
pub fn run_init(io: ChildIo, status_fd: RawFd, sync_fd: RawFd) -> ! {
    reset_signals();
    // SAFETY: prctl with integer arguments only.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) };
    undumpable();
    // SAFETY: sync_fd is this child's copy of the pipe's read end, owned by nobody else here.
    let mut sync = unsafe { <fs::File as std::os::fd::FromRawFd>::from_raw_fd(sync_fd) };
    let mut buf = Vec::new();
    let (spec, filter) = match std::io::Read::read_to_end(&mut sync, &mut buf)
        .ok()
        .and_then(|_| decode_init_message(&buf))
    {
        Some(m) => m,
        // SAFETY: exiting the forked child.
        None => unsafe { libc::_exit(125) },
    };
    drop(sync);
    if let Err(e) = setup_container(&spec) {
        fail(status_fd, e);
    }
    let e = if spec.process.init {
        super::reaper::finish_and_reap(&spec.process, io, filter.as_ref(), status_fd)
    } else {
        finish_and_exec(&spec.process, io, filter.as_ref(), status_fd)
    };
    fail(status_fd, e)
}

/// What the supervisor sends the init: the spec's JSON, a NUL byte, then the compiled
/// seccomp program (empty when unconfined). JSON never contains a NUL byte.
pub fn encode_init_message(spec_json: &[u8], filter: Option<&Filter>) -> Vec<u8> {
    let mut out = spec_json.to_vec();
    out.push(0);
    if let Some(f) = filter {
        out.extend_from_slice(&f.to_bytes());
    }
    out
}

fn decode_init_message(buf: &[u8]) -> Option<(Spec, Option<Filter>)> {
    let nul = buf.iter().position(|b| *b == 0)?;
    let spec: Spec = serde_json::from_slice(&buf[..nul]).ok()?;
    let bpf = &buf[nul + 1..];
    let filter = if bpf.is_empty() {
        None
    } else {
        Some(Filter::from_bytes(bpf)?)
    };
    // A spec asking for seccomp must come with its program.
    if spec.linux.seccomp.is_some() != filter.is_some() {
        return None;
    }
    Some((spec, filter))
}

/// The seccomp filter of `spec`, compiled (or taken from the cache in `cache_dir`).
pub fn seccomp_filter(spec: &Spec, cache_dir: &Path) -> Result<Option<Filter>, InitError> {
    spec.linux
        .seccomp
        .as_ref()
        .map(|s| seccomp::compile_cached(s, cache_dir))
        .transpose()
        .map_err(setup_err("seccomp"))
}

/// Until it execs, this process is the host's `strata` binary: while it is not dumpable, no
/// process of the container may open its `/proc/<pid>/exe`, `/proc/<pid>/fd/*` or `mem`
/// (ptrace access mode checks need CAP_SYS_PTRACE, which the container lacks). `execve` of
/// the container's program makes it dumpable again. (CVE-2019-5736, prctl(2).)
pub fn undumpable() {
    // SAFETY: prctl with integer arguments only.
    unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) };
}

fn setup_container(spec: &Spec) -> Result<(), InitError> {
    setsid().map_err(setup_err("setsid"))?;
    let mut flags = CloneFlags::CLONE_NEWNS;
    // `--uts host` / `--ipc host` keep the host's (the user asked for them).
    if spec.has_namespace("uts") {
        flags |= CloneFlags::CLONE_NEWUTS;
    }
    let join_ipc = spec.namespace_path("ipc");
    if spec.has_namespace("ipc") && join_ipc.is_none() {
        flags |= CloneFlags::CLONE_NEWIPC;
    }
    let join_net = spec.namespace_path("network");
    if spec.has_namespace("network") && join_net.is_none() {
        flags |= CloneFlags::CLONE_NEWNET;
    }
    unshare(flags).map_err(setup_err("unshare"))?;
    if let Some(path) = join_ipc {
        // `--ipc container:X`: X's (the pid namespace was joined by the supervisor's fork).
        let ns = fs::File::open(path).map_err(setup_err(format!("open {path}")))?;
        nix::sched::setns(&ns, CloneFlags::CLONE_NEWIPC)
            .map_err(setup_err("join IPC namespace"))?;
    }
    if let Some(path) = join_net {
        // The supervisor prepared this namespace (bridge endpoints) or it is another container's.
        let ns = fs::File::open(path).map_err(setup_err(format!("open {path}")))?;
        nix::sched::setns(&ns, CloneFlags::CLONE_NEWNET)
            .map_err(setup_err("join network namespace"))?;
    }
    // Nothing we mount may propagate back to the host; host unmounts still reach us.
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_SLAVE,
        None::<&str>,
    )
    .map_err(setup_err("make / rslave"))?;
    let rootfs = PathBuf::from(&spec.root.path);
    // pivot_root needs the new root to be a mount point of its own.
    mount(
        Some(&rootfs),
        &rootfs,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(setup_err("bind rootfs"))?;
    for m in &spec.mounts {
        mount_one(&rootfs, m, !spec.has_namespace("pid"))?;
        if m.destination == "/dev" {
            populate_dev(&rootfs.join("dev"))?;
            for d in &spec.linux.devices {
                create_device(&rootfs, d)?;
            }
        }
    }
    chdir(&rootfs).map_err(setup_err("chdir rootfs"))?;
    // pivot_root(".", ".") stacks the old root on top of the new one; detaching "." then drops
    // it without needing a directory inside the image (runc does the same).
    pivot_root(".", ".").map_err(setup_err("pivot_root"))?;
    umount2(".", MntFlags::MNT_DETACH).map_err(setup_err("detach old root"))?;
    chdir("/").map_err(setup_err("chdir /"))?;
    if !spec.hostname.is_empty() {
        // Before /proc/sys turns read-only: the fallback below writes there.
        set_hostname(&spec.hostname)?;
    }
    if !spec.domainname.is_empty() {
        set_domainname(&spec.domainname)?;
    }
    // `--sysctl`, also before /proc/sys turns read-only.
    for (key, value) in &spec.linux.sysctl {
        write_sysctl(key, value)?;
    }
    for p in &spec.linux.masked_paths {
        mask_path(p);
    }
    for p in &spec.linux.readonly_paths {
        readonly_path(p);
    }
    if spec.root.readonly {
        // Only the root mount: /proc, /dev, --tmpfs and volumes keep their own flags.
        mount(
            None::<&str>,
            "/",
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
            None::<&str>,
        )
        .map_err(setup_err("remount / read-only"))?;
    }
    if spec.has_namespace("network") {
        loopback_up().map_err(setup_err("bring up lo"))?;
    }
    Ok(())
}

/// Name the container's (new) UTS namespace. Where a seccomp profile refuses `sethostname`
/// without CAP_SYS_ADMIN (podman's and Docker's default profiles: strata nested in a container
/// given only `/dev/fuse`), the same change goes through the container's own, freshly mounted
/// `/proc/sys/kernel/hostname`: the kernel names the writer's UTS namespace and asks only that
/// the writer may open the file (root of the initial user namespace's ids, as the nested path
/// maps its root).
fn set_hostname(name: &str) -> Result<(), InitError> {
    set_uts_name("sethostname", "hostname", sethostname(name), name)
}

/// `--domainname`: the UTS namespace's NIS domain name, with the same fallback.
fn set_domainname(name: &str) -> Result<(), InitError> {
    // SAFETY: a pointer and length of a live buffer.
    let r = unsafe { libc::setdomainname(name.as_ptr().cast(), name.len()) };
    set_uts_name(
        "setdomainname",
        "domainname",
        nix::errno::Errno::result(r).map(drop),
        name,
    )
}

/// The outcome of the UTS call `what`: its EPERM retried through `/proc/sys/kernel/<file>`.
fn set_uts_name(
    what: &'static str,
    file: &str,
    called: nix::Result<()>,
    name: &str,
) -> Result<(), InitError> {
    let err = match called {
        Ok(()) => return Ok(()),
        Err(e) => e,
    };
    if err != nix::errno::Errno::EPERM {
        return Err(setup_err(what)(err));
    }
    let written = fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(format!("/proc/sys/kernel/{file}"))
        .and_then(|mut f| {
            let proc = nix::sys::statfs::fstatfs(&f)
                .is_ok_and(|s| s.filesystem_type() == nix::sys::statfs::PROC_SUPER_MAGIC);
            if !proc {
                return Err(std::io::Error::from_raw_os_error(libc::EXDEV));
            }
            f.write_all(name.as_bytes())
        });
    match written {
        Ok(()) => Ok(()),
        Err(_) => Err(setup_err(what)(err)),
    }
}

/// Write one sysctl under the container's own `/proc/sys` (mounted for its namespaces): the key's
/// dots are path components, resolved beneath `/proc/sys` without following any symlink.
fn write_sysctl(key: &str, value: &str) -> Result<(), InitError> {
    let rel = key.replace('.', "/");
    let what = format!("write sysctl key {key}");
    let dir = fs::File::open("/proc/sys").map_err(setup_err(&what))?;
    let proc = nix::sys::statfs::fstatfs(&dir)
        .is_ok_and(|s| s.filesystem_type() == nix::sys::statfs::PROC_SUPER_MAGIC);
    if !proc {
        return Err(setup_err(&what)("/proc/sys is not procfs"));
    }
    let fd = strata_fs::at::open_beneath(
        std::os::fd::AsFd::as_fd(&dir),
        rel.as_bytes(),
        libc::O_WRONLY | libc::O_CLOEXEC,
    )
    .map_err(setup_err(format!("open /proc/sys/{rel}")))?;
    fs::File::from(fd)
        .write_all(value.as_bytes())
        .map_err(setup_err(&what))
}

/// `--ulimit`: set each limit while the process still holds CAP_SYS_RESOURCE (raising a hard
/// limit needs it).
fn set_rlimits(limits: &[super::spec::Rlimit]) -> Result<(), InitError> {
    for l in limits {
        let Some(resource) = super::runopts::rlimit_resource(&l.kind) else {
            return Err(InitError {
                code: 125,
                msg: format!("unknown rlimit type {:?}", l.kind),
            });
        };
        let lim = libc::rlimit {
            rlim_cur: l.soft as libc::rlim_t,
            rlim_max: l.hard as libc::rlim_t,
        };
        // SAFETY: setrlimit(2) reads a valid rlimit struct we own.
        if unsafe { libc::setrlimit(resource as _, &lim) } != 0 {
            return Err(setup_err(format!("error setting rlimit type {}", l.kind))(
                std::io::Error::last_os_error(),
            ));
        }
    }
    Ok(())
}

/// Refuse mount targets that traverse a symlink inside the rootfs (an image could point
/// `/proc` at `/` of the host).
fn target_in(rootfs: &Path, dest: &str) -> Result<PathBuf, InitError> {
    let mut path = rootfs.to_path_buf();
    for c in Path::new(dest).components() {
        match c {
            Component::Normal(n) => {
                path.push(n);
                if let Ok(md) = fs::symlink_metadata(&path) {
                    if md.file_type().is_symlink() {
                        return Err(InitError {
                            code: 125,
                            msg: format!("mount target {dest} is a symlink in the image"),
                        });
                    }
                }
            }
            Component::ParentDir => {
                return Err(InitError {
                    code: 125,
                    msg: format!("mount target {dest} contains .."),
                })
            }
            _ => {}
        }
    }
    Ok(path)
}

/// Mount `m` under `rootfs`; `host_pid`: the container runs in the host's pid namespace
/// (`--pid host`), whose /proc may be bound where none can be mounted.
fn mount_one(rootfs: &Path, m: &super::spec::Mount, host_pid: bool) -> Result<(), InitError> {
    let target = target_in(rootfs, &m.destination)?;
    let mut flags = MsFlags::empty();
    let mut data = Vec::new();
    let mut bind = m.kind == "bind";
    for o in &m.options {
        match o.as_str() {
            "nosuid" => flags |= MsFlags::MS_NOSUID,
            "noexec" => flags |= MsFlags::MS_NOEXEC,
            "nodev" => flags |= MsFlags::MS_NODEV,
            "suid" => flags.remove(MsFlags::MS_NOSUID),
            "exec" => flags.remove(MsFlags::MS_NOEXEC),
            "dev" => flags.remove(MsFlags::MS_NODEV),
            "ro" => flags |= MsFlags::MS_RDONLY,
            "rw" => flags.remove(MsFlags::MS_RDONLY),
            "strictatime" => flags |= MsFlags::MS_STRICTATIME,
            "noatime" => flags |= MsFlags::MS_NOATIME,
            "relatime" => flags |= MsFlags::MS_RELATIME,
            "nodiratime" => flags |= MsFlags::MS_NODIRATIME,
            "sync" => flags |= MsFlags::MS_SYNCHRONOUS,
            "rbind" | "bind" => bind = true,
            "rprivate" | "private" => {}
            other => data.push(other.to_string()),
        }
    }
    if bind {
        let source = Path::new(&m.source);
        if source.is_dir() {
            fs::create_dir_all(&target).map_err(setup_err(format!("mkdir {}", m.destination)))?;
        } else if !target.exists() {
            if let Some(parent) = target.parent() {
                fs::create_dir_all(parent)
                    .map_err(setup_err(format!("mkdir {}", m.destination)))?;
            }
            fs::write(&target, b"").map_err(setup_err(format!("create {}", m.destination)))?;
        }
        mount(
            Some(source),
            &target,
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None::<&str>,
        )
        .map_err(setup_err(format!("bind {} on {}", m.source, m.destination)))?;
        mount(
            None::<&str>,
            &target,
            None::<&str>,
            MsFlags::MS_REC | MsFlags::MS_PRIVATE,
            None::<&str>,
        )
        .map_err(setup_err("make bind private"))?;
        if flags.contains(MsFlags::MS_RDONLY) {
            mount(
                None::<&str>,
                &target,
                None::<&str>,
                MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | flags,
                None::<&str>,
            )
            .map_err(setup_err(format!("remount {} read-only", m.destination)))?;
        }
        return Ok(());
    }
    fs::create_dir_all(&target).map_err(setup_err(format!("mkdir {}", m.destination)))?;
    let data = data.join(",");
    let r = mount(
        Some(m.source.as_str()),
        &target,
        Some(m.kind.as_str()),
        flags,
        if data.is_empty() {
            None
        } else {
            Some(data.as_str())
        },
    );
    // In a user namespace that maps no gid 5 (nested strata whose caller lacks CAP_SETGID maps
    // gid 0 alone) devpts refuses `gid=5`: mount it without, as rootless runc and podman do
    // (new ptys then belong to the opener's group).
    let r = match r {
        Err(nix::errno::Errno::EINVAL) if m.kind == "devpts" && data.contains("gid=") => {
            let without: Vec<&str> = data.split(',').filter(|o| !o.starts_with("gid=")).collect();
            mount(
                Some(m.source.as_str()),
                &target,
                Some(m.kind.as_str()),
                flags,
                Some(without.join(",").as_str()),
            )
        }
        r => r,
    };
    match (r, m.kind.as_str()) {
        (Ok(()), _) => Ok(()),
        // sysfs cannot be mounted when the network namespace is the host's: bind it instead.
        (Err(_), "sysfs") => {
            mount(
                Some("/sys"),
                &target,
                None::<&str>,
                MsFlags::MS_BIND | MsFlags::MS_REC,
                None::<&str>,
            )
            .map_err(setup_err("bind /sys"))?;
            let _ = mount(
                None::<&str>,
                &target,
                None::<&str>,
                MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
                None::<&str>,
            );
            Ok(())
        }
        // `--pid host` rootless: the host's pid namespace belongs to an outer user namespace,
        // so no proc of it can be mounted here; bind the host's (as podman does). Only for
        // `--pid host` and when this process is not pid 1 (shares its parent's pid namespace):
        // a container with a pid namespace of its own, or another container's, never sees the
        // host's /proc.
        (Err(nix::errno::Errno::EPERM), "proc")
            if host_pid && nix::unistd::getpid().as_raw() != 1 =>
        {
            mount(
                Some("/proc"),
                &target,
                None::<&str>,
                MsFlags::MS_BIND | MsFlags::MS_REC,
                None::<&str>,
            )
            .map_err(setup_err("bind /proc"))
        }
        (Err(_), "mqueue") => Ok(()),
        (Err(e), _) => Err(InitError {
            code: 125,
            msg: format!("mount {} on {}: {e}", m.kind, m.destination),
        }),
    }
}

/// The default device nodes and links of `/dev` (runc's defaults).
fn populate_dev(dev: &Path) -> Result<(), InitError> {
    for (name, major, minor) in [
        ("null", 1, 3),
        ("zero", 1, 5),
        ("full", 1, 7),
        ("random", 1, 8),
        ("urandom", 1, 9),
        ("tty", 5, 0),
    ] {
        let p = dev.join(name);
        match mknod(
            &p,
            SFlag::S_IFCHR,
            Mode::from_bits_truncate(0o666),
            makedev(major, minor),
        ) {
            // In a user namespace (rootless) nobody may make device nodes: bind the host's.
            Err(nix::Error::EPERM) => {
                bind_host_node(&Path::new("/dev").join(name), &p)?;
                continue;
            }
            r => r.map_err(setup_err(format!("mknod /dev/{name}")))?,
        }
        // mknod honours the umask; the nodes must be world-usable.
        let _ = fs::set_permissions(&p, fs::Permissions::from_mode(0o666));
    }
    for (link, target) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
        ("ptmx", "pts/ptmx"),
        ("core", "/proc/kcore"),
    ] {
        symlink(target, dev.join(link)).map_err(setup_err(format!("symlink /dev/{link}")))?;
    }
    Ok(())
}

/// Bind-mount the host's device node `host` on an empty file at `target` (what runc does in a
/// user namespace, where mknod is refused).
fn bind_host_node(host: &Path, target: &Path) -> Result<(), InitError> {
    fs::write(target, b"").map_err(setup_err(format!("create {}", target.display())))?;
    nix::mount::mount(
        Some(host),
        target,
        None::<&str>,
        nix::mount::MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(setup_err(format!("bind {}", host.display())))
}

/// A `--device` node (an OCI `linux.devices` entry) in the container's `/dev`.
fn create_device(rootfs: &Path, d: &super::devices::LinuxDevice) -> Result<(), InitError> {
    let target = target_in(rootfs, &d.path)?;
    let kind = match d.kind.as_str() {
        "b" => SFlag::S_IFBLK,
        "p" => SFlag::S_IFIFO,
        _ => SFlag::S_IFCHR,
    };
    if let Some(parent) = target.parent() {
        fs::create_dir_all(parent).map_err(setup_err(format!("mkdir for {}", d.path)))?;
    }
    let _ = fs::remove_file(&target);
    let mode = d.file_mode.unwrap_or(0o666);
    match mknod(
        &target,
        kind,
        Mode::from_bits_truncate(mode),
        makedev(d.major as u64, d.minor as u64),
    ) {
        // Rootless: bind the host's node (`--device HOST` names a host path the user may open).
        Err(nix::Error::EPERM) => return bind_host_node(Path::new(&d.path), &target),
        r => r.map_err(setup_err(format!("mknod {}", d.path)))?,
    }
    let _ = fs::set_permissions(&target, fs::Permissions::from_mode(mode));
    std::os::unix::fs::chown(&target, Some(d.uid), Some(d.gid))
        .map_err(setup_err(format!("chown {}", d.path)))?;
    Ok(())
}

/// `/dev/console` is the container's terminal (runs after pivot_root).
fn bind_console(slave: &str) -> Result<(), InitError> {
    let console = Path::new("/dev/console");
    fs::write(console, b"").map_err(setup_err("create /dev/console"))?;
    mount(
        Some(slave),
        console,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(setup_err("bind /dev/console"))?;
    Ok(())
}

fn mask_path(p: &str) {
    let path = Path::new(p);
    let Ok(md) = fs::symlink_metadata(path) else {
        return;
    };
    if md.is_dir() {
        let _ = mount(
            Some("tmpfs"),
            path,
            Some("tmpfs"),
            MsFlags::MS_RDONLY,
            None::<&str>,
        );
    } else {
        let _ = mount(
            Some("/dev/null"),
            path,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        );
    }
}

fn readonly_path(p: &str) {
    let path = Path::new(p);
    if !path.exists() {
        return;
    }
    if mount(
        Some(path),
        path,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .is_ok()
    {
        let _ = mount(
            None::<&str>,
            path,
            None::<&str>,
            MsFlags::MS_BIND
                | MsFlags::MS_REMOUNT
                | MsFlags::MS_RDONLY
                | MsFlags::MS_NOSUID
                | MsFlags::MS_NODEV
                | MsFlags::MS_NOEXEC,
            None::<&str>,
        );
    }
}

#[repr(C)]
struct IfReqFlags {
    name: [u8; libc::IFNAMSIZ],
    flags: libc::c_short,
    _pad: [u8; 22],
}

/// Bring up `lo` in the (new) network namespace: SIOCGIFFLAGS / SIOCSIFFLAGS (netdevice(7)).
fn loopback_up() -> std::io::Result<()> {
    // SAFETY: creating a socket; the fd is closed below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let mut req = IfReqFlags {
        name: [0; libc::IFNAMSIZ],
        flags: 0,
        _pad: [0; 22],
    };
    req.name[..2].copy_from_slice(b"lo");
    // SAFETY: req is a properly sized ifreq for these two ioctls.
    let r = unsafe {
        if libc::ioctl(fd, libc::SIOCGIFFLAGS, &mut req) < 0 {
            -1
        } else {
            req.flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
            libc::ioctl(fd, libc::SIOCSIFFLAGS, &req)
        }
    };
    let err = std::io::Error::last_os_error();
    // SAFETY: closing the socket we opened.
    unsafe { libc::close(fd) };
    if r < 0 {
        Err(err)
    } else {
        Ok(())
    }
}

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: i32,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

fn last_cap() -> u32 {
    fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(40)
}

fn cap_numbers(names: &[String]) -> Vec<u32> {
    names.iter().filter_map(|n| caps::number(n)).collect()
}

/// Drop every capability outside the container's bounding set (the first half of
/// [`apply_caps`]; the process keeps its effective set for the user switch).
fn drop_bounding(c: &super::spec::Capabilities) -> Result<(), InitError> {
    let keep = cap_numbers(&c.bounding);
    for cap in 0..=last_cap() {
        if !keep.contains(&cap) {
            // SAFETY: prctl with integer arguments.
            if unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) } != 0 {
                let e = std::io::Error::last_os_error();
                if e.raw_os_error() != Some(libc::EINVAL) {
                    return Err(setup_err("drop capability")(e));
                }
            }
        }
    }
    Ok(())
}

/// Set effective, permitted and inheritable, once the process runs as the container's user:
/// root gets the container's set, any other user none (what execve gives a non-root user, and
/// what a setuid away from root without KEEPCAPS leaves).
fn apply_caps(c: &super::spec::Capabilities, root: bool) -> Result<(), InitError> {
    let mut data = [CapData::default(); 2];
    let bit = |cap: u32| ((cap / 32) as usize, 1u32 << (cap % 32));
    let (effective, permitted): (&[String], &[String]) = if root {
        (&c.effective, &c.permitted)
    } else {
        (&[], &[])
    };
    for cap in cap_numbers(effective) {
        let (i, b) = bit(cap);
        data[i].effective |= b;
    }
    for cap in cap_numbers(permitted) {
        let (i, b) = bit(cap);
        data[i].permitted |= b;
    }
    for cap in cap_numbers(&c.inheritable) {
        let (i, b) = bit(cap);
        data[i].inheritable |= b;
    }
    let mut header = CapHeader {
        version: 0x2008_0522, // _LINUX_CAPABILITY_VERSION_3
        pid: 0,
    };
    // SAFETY: header and a two-element data array, as capset(2) requires for version 3.
    if unsafe { libc::syscall(libc::SYS_capset, &mut header, data.as_ptr()) } != 0 {
        return Err(setup_err("capset")(std::io::Error::last_os_error()));
    }
    Ok(())
}

fn install_stdio(io: ChildIo, size: Option<super::spec::ConsoleSize>) -> Result<(), InitError> {
    let io = match io.pty_socket {
        None => io,
        Some(sock) => {
            let (master, slave, name) = open_pty()?;
            if let Some(sz) = size {
                let ws = libc::winsize {
                    ws_row: sz.height,
                    ws_col: sz.width,
                    ws_xpixel: 0,
                    ws_ypixel: 0,
                };
                // SAFETY: TIOCSWINSZ with a valid winsize struct.
                unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, &ws) };
            }
            send_fd(sock, master.as_raw_fd()).map_err(setup_err("send the pty master"))?;
            drop(master);
            // SAFETY: closing our end of the socket; the fd number is not used again.
            unsafe { libc::close(sock) };
            if io.console {
                bind_console(&name)?;
            }
            let s = slave.into_raw_fd();
            // SAFETY: TIOCSCTTY makes the new terminal ours (we lead a fresh session).
            unsafe { libc::ioctl(s, libc::TIOCSCTTY, 0) };
            ChildIo::fds(s, s, s)
        }
    };
    for (from, to) in [(io.stdin, 0), (io.stdout, 1), (io.stderr, 2)] {
        if from != to {
            // SAFETY: both fds are valid; dup2 onto stdio numbers of this child.
            if unsafe { libc::dup2(from, to) } < 0 {
                return Err(setup_err("dup2")(std::io::Error::last_os_error()));
            }
        }
    }
    Ok(())
}

/// Install stdio, working dir, privileges and capabilities, load the seccomp filter (last),
/// then exec `process.args[0]`. Every fd but stdio and `status_fd` is closed first, and
/// `status_fd` closes on exec. Returns only on failure.
pub fn finish_and_exec(
    process: &Process,
    io: ChildIo,
    filter: Option<&Filter>,
    status_fd: RawFd,
) -> InitError {
    match prepare_process(process, io, filter, status_fd) {
        Ok(()) => exec_args(process),
        Err(e) => e,
    }
}

/// Close every fd from 3 up except `keep` (CVE-2024-21626: no host fd may reach the chdir
/// below or the container's program), and mark `keep` close-on-exec.
fn close_other_fds(keep: RawFd) {
    let keep = keep.max(0) as u32;
    // SAFETY: close_range(2) on ranges of this process's own fds; none is used afterwards.
    unsafe {
        if keep > 3 {
            libc::syscall(libc::SYS_close_range, 3u32, keep - 1, 0u32);
        }
        libc::syscall(libc::SYS_close_range, keep.max(2) + 1, u32::MAX, 0u32);
        libc::fcntl(keep as i32, libc::F_SETFD, libc::FD_CLOEXEC);
    }
}

pub(super) fn prepare_process(
    process: &Process,
    io: ChildIo,
    filter: Option<&Filter>,
    status_fd: RawFd,
) -> Result<(), InitError> {
    install_stdio(io, process.console_size)?;
    close_other_fds(status_fd);
    let cwd = Path::new(&process.cwd);
    if !cwd.is_dir() {
        fs::create_dir_all(cwd).map_err(setup_err(format!("mkdir {}", process.cwd)))?;
    }
    chdir(cwd).map_err(|e| InitError {
        code: 125,
        msg: format!(
            "chdir to cwd (\"{}\") set in config.json failed: {e}",
            process.cwd
        ),
    })?;
    // The working directory must be inside the container's root: getcwd(3) fails (or answers
    // "(unreachable)") for a directory outside it.
    match nix::unistd::getcwd() {
        Ok(p) if p.is_absolute() => {}
        _ => {
            return Err(InitError {
                code: 125,
                msg: format!(
                    "current working directory {} is outside of the container root",
                    process.cwd
                ),
            })
        }
    }
    if process.no_new_privileges {
        // SAFETY: prctl with integer arguments.
        unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) };
    }
    // runc's order: bounding set first, then the user switch while the process still holds
    // the capabilities it needs for it (CAP_SETGID/CAP_SETUID, even when the container drops
    // them: `--cap-drop SETGID`), then the container's capabilities.
    set_rlimits(&process.rlimits)?;
    if let Some(adj) = process.oom_score_adj {
        // Lowering it needs CAP_SYS_RESOURCE: before the capabilities are dropped.
        fs::write("/proc/self/oom_score_adj", adj.to_string())
            .map_err(setup_err("write oom_score_adj"))?;
    }
    drop_bounding(&process.capabilities)?;
    set_user(&process.user)?;
    apply_caps(&process.capabilities, process.user.uid == 0)?;
    // Last: from here on only the syscalls the profile allows (execve among them). The error
    // pipe closes on exec, which is how the parent learns that exec succeeded.
    if let Some(f) = filter {
        f.load().map_err(setup_err("load seccomp filter"))?;
    }
    Ok(())
}

/// Supplementary groups, gid, uid. Supplementary groups are set as runc sets them: not where
/// the kernel forbids it (a user namespace whose `setgroups` file says `deny`), and — as runc
/// does where it cannot — not when they already are what the container asks for, so that a
/// caller without CAP_SETGID (strata nested in a container run with `--cap-drop SETGID`) can
/// still start a container whose groups need no change.
fn set_user(user: &super::spec::User) -> Result<(), InitError> {
    let mut groups: Vec<Gid> = user
        .additional_gids
        .iter()
        .map(|g| Gid::from_raw(*g))
        .collect();
    if groups.is_empty() {
        groups.push(Gid::from_raw(user.gid));
    }
    let denied = fs::read_to_string("/proc/self/setgroups").is_ok_and(|s| s.trim() == "deny");
    if !denied {
        match nix::unistd::setgroups(&groups) {
            Ok(()) => {}
            Err(nix::errno::Errno::EPERM) if same_groups(&groups) => {}
            Err(e) => return Err(setup_err("setgroups")(e)),
        }
    }
    nix::unistd::setgid(Gid::from_raw(user.gid)).map_err(setup_err("setgid"))?;
    nix::unistd::setuid(Uid::from_raw(user.uid)).map_err(setup_err("setuid"))?;
    Ok(())
}

/// True when this process's supplementary groups are already `want` (as sets).
fn same_groups(want: &[Gid]) -> bool {
    let Ok(mut have) = nix::unistd::getgroups() else {
        return false;
    };
    let mut want = want.to_vec();
    have.sort_unstable_by_key(|g| g.as_raw());
    have.dedup();
    want.sort_unstable_by_key(|g| g.as_raw());
    want.dedup();
    have == want
}

fn env_path(env: &[String]) -> String {
    env.iter()
        .find_map(|e| e.strip_prefix("PATH="))
        .unwrap_or("/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
        .to_string()
}

fn cstrings(v: &[String]) -> Vec<CString> {
    v.iter()
        .filter_map(|s| CString::new(s.as_bytes()).ok())
        .collect()
}

pub(super) fn exec_args(process: &Process) -> InitError {
    let Some(prog) = process.args.first() else {
        return InitError {
            code: 125,
            msg: "no command specified".to_string(),
        };
    };
    let argv = cstrings(&process.args);
    let envp = cstrings(&process.env);
    let candidates: Vec<PathBuf> = if prog.contains('/') {
        vec![PathBuf::from(prog)]
    } else {
        env_path(&process.env)
            .split(':')
            .filter(|d| !d.is_empty())
            .map(|d| Path::new(d).join(prog))
            .collect()
    };
    let mut denied = None;
    for path in &candidates {
        let Ok(c) = CString::new(path.as_os_str().as_bytes()) else {
            continue;
        };
        if !prog.contains('/') && !path.is_file() {
            continue;
        }
        let e = match nix::unistd::execve(&c, &argv, &envp) {
            Ok(never) => match never {},
            Err(e) => e,
        };
        match e {
            nix::errno::Errno::ENOENT | nix::errno::Errno::ENOTDIR if !prog.contains('/') => {}
            nix::errno::Errno::EACCES => denied = Some(path.clone()),
            nix::errno::Errno::ENOENT | nix::errno::Errno::ENOTDIR => {
                return InitError {
                    code: 127,
                    msg: format!("exec: \"{prog}\": stat {prog}: no such file or directory"),
                }
            }
            other => {
                return InitError {
                    code: 126,
                    msg: format!("exec: \"{prog}\": {}", other.desc().to_lowercase()),
                }
            }
        }
    }
    match denied {
        Some(p) => InitError {
            code: 126,
            msg: format!("exec: \"{}\": permission denied", p.display()),
        },
        None => InitError {
            code: 127,
            msg: format!("exec: \"{prog}\": executable file not found in $PATH"),
        },
    }
}

/// Join the namespaces whose fds are given (`setns`), in order. The mount namespace must come
/// last: it changes root and cwd to the container's.
pub fn join_namespaces(fds: &[(RawFd, CloneFlags)]) -> Result<(), InitError> {
    for (fd, kind) in fds {
        // SAFETY: fd is an open namespace fd owned by the caller for the duration of the call.
        let bfd = unsafe { BorrowedFd::borrow_raw(*fd) };
        nix::sched::setns(bfd, *kind).map_err(setup_err(format!("setns {kind:?}")))?;
    }
    Ok(())
}
