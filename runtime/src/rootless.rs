//! Rootless strata: an ordinary user runs every verb inside a user namespace of its own.
//!
//! Decided once at start-up (the shape of rootlesskit and podman's `pkg/rootless`): a process
//! whose effective uid is not 0 (or root without CAP_SYS_ADMIN: strata in a container given
//! only `/dev/fuse`) and that is still in the initial user namespace calls [`enter`] before it
//! touches any store. The first such call starts a *pause process* that owns a new user
//! namespace (0 → the user, 1…N → its `/etc/subuid` / `/etc/subgid` range, written by the setuid
//! `newuidmap`/`newgidmap`) and a mount namespace owned by it, where FUSE may be mounted
//! (Linux ≥ 4.18). Every later call joins those two namespaces with `setns`, so a container's
//! mounts made by one invocation are seen by the next (`run -d`, then `exec`, `diff`, `commit`).
//! After [`enter`] the process is uid 0 with every capability *inside* the namespace, and the
//! code below does not branch on rootlessness, except where the kernel itself says no:
//! [`flavour`] (no `trusted.*` xattrs in a user namespace) and the few checks named
//! [`in_user_namespace`] in the container code (cgroups, device nodes, low ports).
//!
//! Default paths (root's are unchanged): storage `$XDG_DATA_HOME/strata` (else
//! `~/.local/share/strata`), runtime state `$XDG_RUNTIME_DIR/strata` (else a private
//! `/tmp/strata-<uid>` that must be the user's own, mode 0700).

use std::ffi::OsString;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use nix::sched::CloneFlags;
use nix::unistd::{ForkResult, Pid, Uid};
use strata_fs::format::Flavour;

use crate::fsutil::{self, LockMode};

/// The name the pause process shows in `/proc/PID/comm`; a pid file naming any other process
/// (a stale file after a reboot, a reused pid) is not joined.
const PAUSE_COMM: &str = "strata-pause";

#[derive(Debug, thiserror::Error)]
pub enum RootlessError {
    #[error("cannot set up the rootless user namespace: user {user} has no range in {file}: add a line `{user}:100000:65536` to /etc/subuid and /etc/subgid (usermod --add-subuids 100000-165535 --add-subgids 100000-165535 {user})")]
    NoRange { user: String, file: &'static str },
    #[error("cannot set up the rootless user namespace: {tool} is missing (install Debian's uidmap package)")]
    NoTool { tool: &'static str },
    #[error("cannot set up the rootless user namespace: {tool} failed: {detail}")]
    MapFailed { tool: &'static str, detail: String },
    #[error("cannot set up the rootless user namespace: {what}: {source}")]
    Sys {
        what: &'static str,
        source: io::Error,
    },
    #[error("cannot set up a user namespace for root without CAP_SYS_ADMIN: {what}: {source} (a container's seccomp profile must allow unshare, setns, mount, umount2, pivot_root and clone)")]
    Confined {
        what: &'static str,
        source: io::Error,
    },
    #[error("cannot use {path} for runtime state: {why} (set XDG_RUNTIME_DIR or --runroot)")]
    UnsafeRunroot { path: PathBuf, why: &'static str },
    #[error("rootless network: pasta is missing (install Debian's passt package)")]
    NoPasta,
    #[error("rootless network: pasta failed: {detail}")]
    Pasta { detail: String },
    #[error("cannot find the home directory of uid {uid}: set HOME or --root")]
    NoHome { uid: u32 },
}

fn sys(what: &'static str) -> impl FnOnce(io::Error) -> RootlessError {
    move |source| RootlessError::Sys { what, source }
}

fn errno(what: &'static str) -> impl FnOnce(nix::Error) -> RootlessError {
    move |e| RootlessError::Sys {
        what,
        source: io::Error::from(e),
    }
}

/// True in a user namespace other than the initial one (the uid map is not the identity map of
/// all 2³² ids): there uid 0 cannot set `trusted.*` xattrs, make device nodes or own cgroups.
pub fn in_user_namespace() -> bool {
    strata_fs::format::in_user_namespace()
}

/// The overlay-format flavour this process can write: `user.overlay.*` inside a user namespace
/// (rootless), `trusted.overlay.*` as root of the initial one.
pub fn flavour() -> Flavour {
    Flavour::for_current_user()
}

/// Whether this process must enter a user namespace before touching a store: not already
/// inside one (a rootless strata's own children, or strata in a container), and either not
/// root or root without CAP_SYS_ADMIN (strata in a container given only `/dev/fuse`: it can
/// mount FUSE and make namespaces only inside a user namespace of its own).
pub fn needed() -> bool {
    !in_user_namespace() && (!nix::unistd::geteuid().is_root() || !has_sys_admin())
}

/// CAP_SYS_ADMIN's bit in the capability sets (linux/capability.h).
const CAP_SYS_ADMIN: u32 = 21;

/// Whether CAP_SYS_ADMIN is in this process's effective set (`CapEff` of `/proc/self/status`).
fn has_sys_admin() -> bool {
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            let hex = s.lines().find_map(|l| l.strip_prefix("CapEff:"))?.trim();
            u64::from_str_radix(hex, 16).ok()
        })
        .is_some_and(|eff| eff & (1 << CAP_SYS_ADMIN) != 0)
}

/// Storage and runtime-state defaults for this process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Defaults {
    pub root: PathBuf,
    pub runroot: PathBuf,
}

impl Defaults {
    /// Root's `/var/lib/strata` and `/run/strata`; for an unprivileged user the XDG paths.
    pub fn detect() -> Defaults {
        if !needed() || nix::unistd::geteuid().is_root() {
            return Defaults {
                root: PathBuf::from("/var/lib/strata"),
                runroot: PathBuf::from("/run/strata"),
            };
        }
        let uid = nix::unistd::getuid().as_raw();
        let env = |k: &str| std::env::var_os(k).filter(|v| Path::new(v).is_absolute());
        let data = env("XDG_DATA_HOME")
            .map(PathBuf::from)
            .or_else(|| home(uid).map(|h| h.join(".local/share")));
        let runtime = env("XDG_RUNTIME_DIR")
            .map(PathBuf::from)
            .filter(|d| owned_dir(d, uid))
            .map(|d| d.join("strata"))
            .unwrap_or_else(|| PathBuf::from(format!("/tmp/strata-{uid}")));
        Defaults {
            // An empty path makes `check_root` say which variable to set.
            root: data.map(|d| d.join("strata")).unwrap_or_default(),
            runroot: runtime,
        }
    }
}

/// The storage root must be a real path; an empty one means no home directory was found.
pub fn check_root(root: &Path) -> Result<(), RootlessError> {
    if root.as_os_str().is_empty() {
        return Err(RootlessError::NoHome {
            uid: nix::unistd::getuid().as_raw(),
        });
    }
    Ok(())
}

fn home(uid: u32) -> Option<PathBuf> {
    if let Some(h) = std::env::var_os("HOME").filter(|h| Path::new(h).is_absolute()) {
        return Some(PathBuf::from(h));
    }
    nix::unistd::User::from_uid(Uid::from_raw(uid))
        .ok()
        .flatten()
        .map(|u| u.dir)
}

fn owned_dir(d: &Path, uid: u32) -> bool {
    fs::symlink_metadata(d).is_ok_and(|m| m.is_dir() && m.uid() == uid)
}

/// One subordinate range: ids `start..start+count` outside the namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Range {
    pub start: u64,
    pub count: u64,
}

/// The first range in `contents` (an `/etc/subuid`-style file) for the user named `user` or
/// with the numeric id `id`.
pub fn parse_range(contents: &str, user: &str, id: u32) -> Option<Range> {
    let id = id.to_string();
    contents.lines().find_map(|line| {
        let mut f = line.trim().splitn(3, ':');
        let (who, start, count) = (f.next()?, f.next()?, f.next()?);
        if who != user && who != id {
            return None;
        }
        let start = start.trim().parse().ok()?;
        let count: u64 = count.trim().parse().ok()?;
        (count > 0).then_some(Range { start, count })
    })
}

fn range_for(file: &'static str, user: &str, id: u32) -> Result<Range, RootlessError> {
    let contents = fs::read_to_string(file).unwrap_or_default();
    parse_range(&contents, user, id).ok_or_else(|| RootlessError::NoRange {
        user: user.to_string(),
        file,
    })
}

/// Enter the rootless user and mount namespaces (starting the pause process that keeps them if
/// there is none yet), then return: the caller is uid 0 with every capability in them. Must be
/// called while the process is single-threaded (the kernel refuses `setns` into a user namespace
/// otherwise), i.e. first thing in `main`. `runroot` holds the pause process's pid file.
pub fn enter(runroot: &Path) -> Result<(), RootlessError> {
    let uid = nix::unistd::getuid().as_raw();
    if uid == 0 {
        // Root without CAP_SYS_ADMIN is in a confined container: EPERM here is its seccomp
        // profile (Docker's allows these calls only with CAP_SYS_ADMIN); say what to allow.
        return enter_as(runroot, uid).map_err(|e| match e {
            RootlessError::Sys { what, source } if source.raw_os_error() == Some(libc::EPERM) => {
                RootlessError::Confined { what, source }
            }
            e => e,
        });
    }
    enter_as(runroot, uid)
}

fn enter_as(runroot: &Path, uid: u32) -> Result<(), RootlessError> {
    let gid = nix::unistd::getgid().as_raw();
    prepare_runroot(runroot, uid)?;
    let _lock = fsutil::lock_file(&runroot.join("pause.lock"), LockMode::Exclusive)
        .map_err(sys("cannot lock the pause process's pid file"))?;
    let pid_file = runroot.join("pause.pid");
    let pid = match live_pause(&pid_file, uid) {
        Some(pid) => pid,
        None if uid == 0 => {
            let pid = start_pause(uid, gid, Maps::Root)?;
            fsutil::write_atomic(&pid_file, format!("{pid}\n").as_bytes())
                .map_err(sys("cannot write the pause process's pid file"))?;
            pid
        }
        None => {
            let user = nix::unistd::User::from_uid(Uid::from_raw(uid))
                .ok()
                .flatten()
                .map(|u| u.name)
                .unwrap_or_else(|| uid.to_string());
            let subuid = range_for("/etc/subuid", &user, uid)?;
            let subgid = range_for("/etc/subgid", &user, uid)?;
            let pid = start_pause(uid, gid, Maps::Sub { subuid, subgid })?;
            fsutil::write_atomic(&pid_file, format!("{pid}\n").as_bytes())
                .map_err(sys("cannot write the pause process's pid file"))?;
            pid
        }
    };
    join(pid)
}

/// Create `runroot` (and parents) as the user's own; a fallback under `/tmp` must be a real
/// directory owned by the user with mode 0700 (another user could have made it first).
fn prepare_runroot(runroot: &Path, uid: u32) -> Result<(), RootlessError> {
    match fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(runroot)
    {
        Ok(()) => {}
        Err(e) => {
            return Err(RootlessError::Sys {
                what: "cannot create the runtime directory",
                source: e,
            })
        }
    }
    let meta = fs::symlink_metadata(runroot).map_err(sys("cannot create the runtime directory"))?;
    if !meta.is_dir() || meta.uid() != uid {
        return Err(RootlessError::UnsafeRunroot {
            path: runroot.to_path_buf(),
            why: "it is not a directory of yours",
        });
    }
    if runroot.starts_with("/tmp") && meta.permissions().mode() & 0o077 != 0 {
        return Err(RootlessError::UnsafeRunroot {
            path: runroot.to_path_buf(),
            why: "others may write to it",
        });
    }
    Ok(())
}

/// The pause process named in `pid_file`, if it is alive, ours and really a pause process.
fn live_pause(pid_file: &Path, uid: u32) -> Option<i32> {
    let pid: i32 = fs::read_to_string(pid_file).ok()?.trim().parse().ok()?;
    let proc = PathBuf::from(format!("/proc/{pid}"));
    let comm = fs::read_to_string(proc.join("comm")).ok()?;
    let owner = fs::metadata(&proc).ok()?.uid();
    (comm.trim() == PAUSE_COMM && owner == uid).then_some(pid)
}

/// Fork the pause process: it unshares a user and a mount namespace, waits for its id maps,
/// then sleeps for ever in its own session with no inherited descriptors.
fn start_pause(uid: u32, gid: u32, maps: Maps) -> Result<i32, RootlessError> {
    let tools = match maps {
        Maps::Sub { subuid, subgid } => Some((
            which("newuidmap").ok_or(RootlessError::NoTool { tool: "newuidmap" })?,
            which("newgidmap").ok_or(RootlessError::NoTool { tool: "newgidmap" })?,
            subuid,
            subgid,
        )),
        Maps::Root => None,
    };
    let (ready_r, ready_w) = nix::unistd::pipe().map_err(errno("pipe"))?;
    let (go_r, go_w) = nix::unistd::pipe().map_err(errno("pipe"))?;
    // SAFETY: called from `enter`, which runs while the process is single-threaded; the child
    // only makes syscalls and never returns into the caller's code.
    let child = match unsafe { nix::unistd::fork() }.map_err(errno("fork"))? {
        ForkResult::Child => {
            drop(ready_r);
            drop(go_w);
            pause_child(ready_w, go_r)
        }
        ForkResult::Parent { child } => child,
    };
    drop(ready_w);
    drop(go_r);
    let fail = |e: RootlessError| {
        let _ = nix::sys::signal::kill(child, nix::sys::signal::Signal::SIGKILL);
        let _ = nix::sys::wait::waitpid(child, None);
        e
    };
    // One byte: 0 once unshared, else the errno (EPERM is 1: the seccomp profile of a
    // container without CAP_SYS_ADMIN refuses `unshare`).
    let mut ready = [0u8; 1];
    let source = match File::from(ready_r).read(&mut ready) {
        Ok(1) if ready[0] == 0 => None,
        Ok(1) => Some(io::Error::from_raw_os_error(ready[0].into())),
        Ok(_) => Some(io::Error::from(io::ErrorKind::UnexpectedEof)),
        Err(e) => Some(e),
    };
    if let Some(source) = source {
        return Err(fail(RootlessError::Sys {
            what: "unshare(CLONE_NEWUSER|CLONE_NEWNS)",
            source,
        }));
    }
    let pid = child.as_raw();
    let Some((newuidmap, newgidmap, subuid, subgid)) = tools else {
        write_root_maps(pid).map_err(fail)?;
        File::from(go_w).write_all(&[1]).map_err(|e| {
            fail(RootlessError::Sys {
                what: "pause process",
                source: e,
            })
        })?;
        return Ok(pid);
    };
    for (tool, path, id, range) in [
        ("newuidmap", &newuidmap, uid, subuid),
        ("newgidmap", &newgidmap, gid, subgid),
    ] {
        let out = Command::new(path)
            .args([pid.to_string(), "0".into(), id.to_string(), "1".into()])
            .args([
                "1".to_string(),
                range.start.to_string(),
                range.count.to_string(),
            ])
            .output()
            .map_err(|e| {
                fail(RootlessError::Sys {
                    what: tool,
                    source: e,
                })
            })?;
        if !out.status.success() {
            let detail = String::from_utf8_lossy(&out.stderr).trim().to_string();
            return Err(fail(RootlessError::MapFailed { tool, detail }));
        }
    }
    File::from(go_w).write_all(&[1]).map_err(|e| {
        fail(RootlessError::Sys {
            what: "pause process",
            source: e,
        })
    })?;
    Ok(pid)
}

/// How the pause process's user namespace is mapped.
enum Maps {
    /// An unprivileged user: 0 → the user, 1…N → its subordinate ranges (`newuidmap`).
    Sub { subuid: Range, subgid: Range },
    /// Root without CAP_SYS_ADMIN (a container given only `/dev/fuse`): ids 0…65535 onto the
    /// same ids outside, written directly (root still has CAP_SETUID/CAP_SETGID there); without
    /// those capabilities, root alone (0 → 0), as any process may map its own ids.
    Root,
}

/// The ids mapped for root without CAP_SYS_ADMIN (podman's default subordinate range size).
const ROOT_MAP_COUNT: u32 = 65536;

fn write_root_maps(pid: i32) -> Result<(), RootlessError> {
    let write = |file: &str, line: String| fs::write(format!("/proc/{pid}/{file}"), line);
    let wide = format!("0 0 {ROOT_MAP_COUNT}\n");
    if write("uid_map", wide.clone()).is_err() {
        write("uid_map", "0 0 1\n".into()).map_err(sys("write uid_map"))?;
    }
    if write("gid_map", wide).is_err() {
        // A single own-id gid map is allowed only once setgroups is denied.
        write("setgroups", "deny\n".into()).map_err(sys("write setgroups"))?;
        write("gid_map", "0 0 1\n".into()).map_err(sys("write gid_map"))?;
    }
    Ok(())
}

/// The body of the pause process (never returns).
fn pause_child(ready_w: OwnedFd, go_r: OwnedFd) -> ! {
    let status = match nix::sched::unshare(CloneFlags::CLONE_NEWUSER | CloneFlags::CLONE_NEWNS) {
        Ok(()) => 0u8,
        Err(e) => (e as i32).clamp(1, 255) as u8,
    };
    let _ = nix::unistd::write(ready_w.as_fd(), &[status]);
    drop(ready_w);
    let mut go = [0u8; 1];
    let ok = status == 0 && matches!(nix::unistd::read(go_r.as_fd(), &mut go), Ok(1));
    drop(go_r);
    if !ok {
        // SAFETY: _exit ends the forked child without running the parent's destructors.
        unsafe { libc::_exit(1) };
    }
    let _ = nix::unistd::setsid();
    let _ = nix::sys::prctl::set_name(c"strata-pause");
    let _ = nix::unistd::chdir("/");
    if let Ok(null) = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
    {
        for fd in 0..3 {
            // SAFETY: dup2 onto the standard descriptors of this single-threaded child.
            unsafe { libc::dup2(null.as_raw_fd(), fd) };
        }
    }
    // SAFETY: closes every inherited descriptor above stderr (the caller's pipes and locks) so
    // the pause process holds nothing of the invocation that started it.
    unsafe { libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32) };
    loop {
        nix::unistd::pause();
    }
}

/// Join the pause process's user namespace, then its mount namespace; keep the working
/// directory (`setns` into a mount namespace moves it to `/`).
fn join(pid: i32) -> Result<(), RootlessError> {
    let cwd = std::env::current_dir().ok();
    let user = File::open(format!("/proc/{pid}/ns/user")).map_err(sys("open user namespace"))?;
    let mnt = File::open(format!("/proc/{pid}/ns/mnt")).map_err(sys("open mount namespace"))?;
    nix::sched::setns(user.as_fd(), CloneFlags::CLONE_NEWUSER)
        .map_err(errno("setns(user namespace)"))?;
    nix::sched::setns(mnt.as_fd(), CloneFlags::CLONE_NEWNS)
        .map_err(errno("setns(mount namespace)"))?;
    if let Some(cwd) = cwd {
        let _ = std::env::set_current_dir(cwd);
    }
    Ok(())
}

/// Outbound network for a rootless container: `pasta` (Debian's passt) connects the container's
/// network namespace to the host's through a userspace TCP/IP stack (an interface with the
/// host's addresses and routes, DNS forwarded). No host port is forwarded by pasta: `-p` goes
/// through the supervisor's proxy; the gateway address is not mapped to the host's loopback
/// (`--no-map-gw`: a container reaches no host-local service, as with Docker's rootless
/// slirp4netns `--disable-host-loopback`). `pasta-options` in `<root>/strata.json` (a list of
/// strings, podman's `pasta_options`) adds options, e.g. `["-T", "8080"]` (the container's
/// 127.0.0.1:8080 reaches the host's) or `["--map-gw"]` (map the gateway again).
/// Dropping the guard stops pasta and releases the namespace.
pub struct Pasta {
    ns_file: PathBuf,
    pid: Option<i32>,
}

/// `pasta-options` of `<root>/strata.json` (none if the file or key is missing or malformed).
pub fn pasta_options(root: &Path) -> Vec<String> {
    fs::read(root.join("strata.json"))
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .and_then(|v| {
            v.get("pasta-options")?.as_array().map(|a| {
                a.iter()
                    .filter_map(|x| x.as_str().map(str::to_string))
                    .collect()
            })
        })
        .unwrap_or_default()
}

/// pasta's arguments: `--config-net`, no port forwarding nor gateway mapping unless `extra`
/// asks for them (`--map-gw` is ours: it only drops `--no-map-gw`).
fn pasta_args(extra: &[String]) -> Vec<String> {
    let mut args: Vec<String> = vec!["--config-net".into(), "--quiet".into()];
    for flag in ["-t", "-u", "-T", "-U"] {
        let long = match flag {
            "-t" => "--tcp-ports",
            "-u" => "--udp-ports",
            "-T" => "--tcp-ns",
            _ => "--udp-ns",
        };
        if !extra.iter().any(|e| e == flag || e == long) {
            args.extend([flag.to_string(), "none".to_string()]);
        }
    }
    if !extra.iter().any(|e| e == "--map-gw") {
        args.push("--no-map-gw".into());
    }
    args.extend(extra.iter().filter(|e| *e != "--map-gw").cloned());
    args
}

impl Pasta {
    /// Make a network namespace (with `lo` up) for a container, bind it at `run_dir/netns` and
    /// attach pasta to it; returns once pasta has configured it (pasta daemonizes only then), so
    /// a container whose init joins `ns_path()` has the network from its first instruction.
    /// The bind mount keeps the namespace (pasta drops its capabilities before opening it; a
    /// bind-mounted nsfs file passes where `/proc/PID/ns/net` of a more privileged process is
    /// refused).
    pub fn start(run_dir: &Path, extra: &[String]) -> Result<Pasta, RootlessError> {
        let pasta = which("pasta").ok_or(RootlessError::NoPasta)?;
        // A supervisor killed while starting (before its record said `running`) left these.
        reclaim_pasta(run_dir);
        let ns_file = run_dir.join("netns");
        let pid_file = run_dir.join(PASTA_PID);
        File::create(&ns_file).map_err(sys("create the network namespace file"))?;
        let mut guard = Pasta { ns_file, pid: None };
        let ns = crate::network::netlink::new_netns().map_err(sys("create a network namespace"))?;
        nix::mount::mount(
            Some(Path::new(&format!("/proc/self/fd/{}", ns.as_raw_fd()))),
            &guard.ns_file,
            None::<&str>,
            nix::mount::MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(errno("bind the network namespace"))?;
        drop(ns);
        let out = Command::new(pasta)
            .args(pasta_args(extra))
            .arg("--netns")
            .arg(&guard.ns_file)
            .arg("--pid")
            .arg(&pid_file)
            .stdin(std::process::Stdio::null())
            .output()
            .map_err(sys("pasta"))?;
        // The pid file stays: if this supervisor is killed, the next command that notices
        // (`reconcile`, `rm`) reads it to stop pasta ([`reclaim_pasta`]).
        guard.pid = fs::read_to_string(&pid_file)
            .ok()
            .and_then(|p| p.trim().parse().ok());
        if !out.status.success() {
            return Err(RootlessError::Pasta {
                detail: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            });
        }
        Ok(guard)
    }

    /// The namespace file the container's init joins.
    pub fn ns_path(&self) -> &Path {
        &self.ns_file
    }
}

impl Drop for Pasta {
    fn drop(&mut self) {
        if let Some(pid) = self.pid {
            let _ = nix::sys::signal::kill(Pid::from_raw(pid), nix::sys::signal::Signal::SIGTERM);
        }
        let _ = nix::mount::umount2(&self.ns_file, nix::mount::MntFlags::MNT_DETACH);
        let _ = fs::remove_file(&self.ns_file);
        if let Some(dir) = self.ns_file.parent() {
            let _ = fs::remove_file(dir.join(PASTA_PID));
        }
    }
}

/// pasta's pid file in a container's run dir (kept while the container runs).
const PASTA_PID: &str = "pasta.pid";

/// What a killed supervisor left of its pasta in `run_dir`: the pasta process (killed if the
/// pid file names a live `pasta` whose command line names this run dir's `netns`; a reused pid
/// is left alone), the `netns` bind mount and the files. Safe to call when there is nothing
/// (root's containers, a clean exit); called by the command that finds the supervisor dead and
/// by `rm`. pasta would also quit by itself once the namespace file is deleted (it watches it),
/// but not before the bind mount is gone, and not at all if nobody runs a command.
pub fn reclaim_pasta(run_dir: &Path) {
    let ns_file = run_dir.join("netns");
    let pid_file = run_dir.join(PASTA_PID);
    if let Some(pid) = fs::read_to_string(&pid_file)
        .ok()
        .and_then(|p| p.trim().parse::<i32>().ok())
        .filter(|p| *p > 1 && is_pasta_for(*p, &ns_file))
    {
        let _ = nix::sys::signal::kill(Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
    }
    let _ = nix::mount::umount2(&ns_file, nix::mount::MntFlags::MNT_DETACH);
    let _ = fs::remove_file(&ns_file);
    let _ = fs::remove_file(&pid_file);
}

/// `pid` is a pasta attached to `ns_file`: its name is `pasta` or `passt` (Debian's `pasta`
/// links to `passt`, which re-executes itself as `passt.avx2` where the CPU has AVX2) and its
/// command line names `ns_file`.
fn is_pasta_for(pid: i32, ns_file: &Path) -> bool {
    let comm = fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
    if !(comm.starts_with("pasta") || comm.starts_with("passt")) {
        return false;
    }
    let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let want = ns_file.as_os_str().as_encoded_bytes();
    cmdline.split(|b| *b == 0).any(|a| a == want)
}

/// What `strata info` says about rootless mode (podman's `host.security.rootless`,
/// `host.idMappings`, `host.rootlessNetworkCmd`; Docker rootless's `rootless` security option).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Info {
    pub rootless: bool,
    /// `(container id, host id, count)` lines of the uid and gid maps.
    pub uid_map: Vec<(u64, u64, u64)>,
    pub gid_map: Vec<(u64, u64, u64)>,
    /// The outbound network of a container's private network: `pasta (PATH)`, else why none.
    pub network: String,
    /// Where resource limits go: the delegated cgroups and their controllers, else that limits
    /// are ignored.
    pub cgroups: String,
}

/// The lines of a `/proc/PID/uid_map`-style file.
fn id_map(contents: &str) -> Vec<(u64, u64, u64)> {
    contents
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace().map(|x| x.parse::<u64>().ok());
            Some((f.next()??, f.next()??, f.next()??))
        })
        .collect()
}

/// This process's rootless facts (call after [`enter`]).
pub fn info() -> Info {
    let rootless = in_user_namespace();
    if !rootless {
        return Info {
            rootless,
            uid_map: Vec::new(),
            gid_map: Vec::new(),
            network: "bridge (strata0)".to_string(),
            cgroups: "host".to_string(),
        };
    }
    let map = |f: &str| id_map(&fs::read_to_string(f).unwrap_or_default());
    let network = match which("pasta") {
        Some(p) => format!("pasta ({})", p.display()),
        None => "none: pasta is missing (install Debian's passt package); containers get only a loopback".to_string(),
    };
    let l = crate::container::delegated::layout();
    let mut homes = Vec::new();
    if let Some((root, ctrls)) = &l.v2 {
        let ctrls = if ctrls.is_empty() {
            "no controllers".to_string()
        } else {
            ctrls.join(" ")
        };
        homes.push(format!("v2 {} ({ctrls})", root.display()));
    }
    for (limit, root) in &l.v1 {
        homes.push(format!("v1 {} ({})", root.display(), limit.controller()));
    }
    let cgroups = if homes.is_empty() {
        "not delegated: resource limits are ignored".to_string()
    } else {
        format!("delegated: {}", homes.join(", "))
    };
    Info {
        rootless,
        uid_map: map("/proc/self/uid_map"),
        gid_map: map("/proc/self/gid_map"),
        network,
        cgroups,
    }
}

fn which(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_else(|| OsString::from("/usr/bin:/bin"));
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/bin"), PathBuf::from("/usr/sbin")])
        .map(|d| d.join(tool))
        .find(|p| p.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_maps_parse_proc_lines() {
        let m = id_map("         0       1001          1\n         1     100000      65536\n");
        assert_eq!(m, vec![(0, 1001, 1), (1, 100000, 65536)]);
        assert_eq!(id_map("garbage\n"), vec![]);
    }

    #[test]
    fn ranges_by_name_or_id() {
        let f = "alice:100000:65536\n# x\n1001:200000:1000\nbob:bad:1\n";
        assert_eq!(
            parse_range(f, "alice", 1000),
            Some(Range {
                start: 100000,
                count: 65536
            })
        );
        assert_eq!(
            parse_range(f, "carol", 1001),
            Some(Range {
                start: 200000,
                count: 1000
            })
        );
        assert_eq!(parse_range(f, "bob", 7), None);
        assert_eq!(parse_range(f, "dave", 8), None);
    }

    #[test]
    fn pasta_args_keep_defaults_unless_overridden() {
        let a = pasta_args(&[]);
        assert!(a.windows(2).any(|w| w == ["-T", "none"]));
        assert!(a.contains(&"--no-map-gw".to_string()));
        let a = pasta_args(&["-T".into(), "8080".into(), "--map-gw".into()]);
        assert!(!a.windows(2).any(|w| w == ["-T", "none"]));
        assert!(a.windows(2).any(|w| w == ["-T", "8080"]));
        assert!(a.windows(2).any(|w| w == ["-t", "none"]));
        assert!(!a.iter().any(|x| x == "--map-gw" || x == "--no-map-gw"));
    }

    #[test]
    fn root_in_the_initial_namespace_is_not_rootless() {
        // The test runs as root in the initial user namespace.
        assert!(!in_user_namespace());
        assert_eq!(flavour(), Flavour::Trusted);
        assert!(!needed());
        assert_eq!(Defaults::detect().root, PathBuf::from("/var/lib/strata"));
    }
}
