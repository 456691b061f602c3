//! `strata-overlay`: a drop-in for fuse-overlayfs's command line.
//!
//! `strata-overlay -o lowerdir=A:B,upperdir=U,workdir=W[,opts] MOUNTPOINT`, or the mount.fuse3
//! form `strata-overlay SOURCE MOUNTPOINT -o OPTS`. `-f` stays in the foreground; otherwise the
//! process forks (before any thread exists), and the parent returns only once the child's mount
//! is live (readiness comes back over a pipe). The server exits when the mount is unmounted
//! (`umount`, `fusermount3 -u`) or on SIGTERM/SIGINT (it then detaches the mount).

use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::process::ExitCode;

use strata_fs::{MountOptions, ViewOptions};

const PROG: &str = "strata-overlay";

struct Args {
    opts: MountOptions,
    view: ViewOptions,
    mountpoint: PathBuf,
    foreground: bool,
}

/// Options a mount helper may pass that we accept silently (kernel mount flags handled by the
/// FUSE mount itself, or fuse-overlayfs options whose behaviour is already ours: `noacl` is
/// how we always run, POSIX ACLs are stored but not negotiated with the kernel).
const ACCEPTED: &[&str] = &[
    "rw",
    "dev",
    "suid",
    "exec",
    "noexec",
    "nodev",
    "nosuid",
    "atime",
    "noatime",
    "relatime",
    "strictatime",
    "allow_other",
    "allow_root",
    "default_permissions",
    "auto_unmount",
    "noacl",
    "fast_ino",
    "redirect_dir",
    "index",
    "metacopy",
    "xino",
    "nfs_export",
];

fn split_lowers(v: &str) -> Vec<PathBuf> {
    // `\:` escapes a colon inside a path, as in fuse-overlayfs.
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut chars = v.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' if chars.peek() == Some(&':') => {
                cur.push(':');
                chars.next();
            }
            ':' => out.push(PathBuf::from(std::mem::take(&mut cur))),
            c => cur.push(c),
        }
    }
    out.push(PathBuf::from(cur));
    out.into_iter()
        .filter(|p| !p.as_os_str().is_empty())
        .collect()
}

/// `N` of a numeric fuse-overlayfs option (`key=N`), as fuse-overlayfs parses it.
fn num<T: std::str::FromStr>(k: &str, v: &str) -> Result<T, String> {
    v.parse().map_err(|_| format!("invalid {k} value: {v}"))
}

/// `key=0|1` (a bare `key` means 1).
fn flag(k: &str, v: &str) -> Result<bool, String> {
    if v.is_empty() {
        return Ok(true);
    }
    num::<i64>(k, v).map(|n| n != 0)
}

fn parse(argv: Vec<String>) -> Result<Args, String> {
    let mut optstrs = Vec::new();
    let mut pos = Vec::new();
    let mut foreground = false;
    let mut it = argv.into_iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "-o" => optstrs.push(it.next().ok_or("-o needs an argument")?),
            "-f" | "-d" | "--foreground" => foreground = true,
            "-h" | "--help" => {
                println!("usage: {PROG} -o lowerdir=A:B[,upperdir=U,workdir=W][,opts] MOUNTPOINT");
                std::process::exit(0);
            }
            "-V" | "--version" => {
                println!("{PROG} {}", env!("CARGO_PKG_VERSION"));
                std::process::exit(0);
            }
            s if s.starts_with("-o") && s.len() > 2 => optstrs.push(s[2..].to_string()),
            s if s.starts_with('-') && s.len() > 1 => {
                eprintln!("{PROG}: warning: ignoring unknown flag {s}");
            }
            _ => pos.push(a),
        }
    }
    let mountpoint = match pos.len() {
        1 => pos.remove(0),
        2 => pos.remove(1),
        0 => return Err("no mountpoint given".into()),
        _ => return Err(format!("too many arguments: {}", pos.join(" "))),
    };
    let mut opts = MountOptions {
        fsname: "fuse-overlayfs".into(),
        ..MountOptions::default()
    };
    let mut view = ViewOptions::default();
    let (mut squash_root, mut squash_uid, mut squash_gid) = (false, None, None);
    let mut saw_lower = false;
    for o in optstrs.iter().flat_map(|s| s.split(',')) {
        let (k, v) = o.split_once('=').unwrap_or((o, ""));
        match k {
            "" => {}
            "lowerdir" => {
                saw_lower = true;
                opts.lowers = split_lowers(v);
            }
            "upperdir" => opts.upper = Some(PathBuf::from(v)),
            "workdir" => opts.work = Some(PathBuf::from(v)),
            "fsname" => opts.fsname = v.to_string(),
            "threads" => opts.threads = v.parse().map_err(|_| format!("bad threads={v}"))?,
            // fuse-overlayfs 1.x serves from one thread unless threaded=1; we default to
            // several, and threaded=0 asks for one.
            "threaded" => {
                if !flag(k, v)? {
                    opts.threads = 1;
                }
            }
            "uidmapping" => view.uid_map = strata_fs::parse_id_map(v).map_err(|e| e.to_string())?,
            "gidmapping" => view.gid_map = strata_fs::parse_id_map(v).map_err(|e| e.to_string())?,
            "squash_to_root" => squash_root = true,
            "squash_to_uid" => squash_uid = Some(num::<u32>(k, v)?),
            "squash_to_gid" => squash_gid = Some(num::<u32>(k, v)?),
            "static_nlink" => view.static_nlink = true,
            "noxattrs" => view.xattrs = !flag(k, v)?,
            "xattr_permissions" => {
                view.xattr_permissions = match num::<u8>(k, v)? {
                    n @ 0..=2 => n,
                    _ => return Err(format!("invalid xattr_permissions value: {v}")),
                }
            }
            "timeout" => {
                let secs = num::<f64>(k, v)?;
                view.timeout = Some(
                    std::time::Duration::try_from_secs_f64(secs)
                        .map_err(|_| format!("invalid timeout value: {v}"))?,
                );
            }
            "fsync" | "sync" => view.fsync = flag(k, v)?,
            "volatile" => view.fsync = false,
            // Kernel overlayfs's option: the format in `user.overlay.*` (what a rootless mount
            // writes and reads); without it, the form the user can write.
            "userxattr" => opts.flavour = Some(strata_fs::Flavour::User),
            k if ACCEPTED.contains(&k) => {}
            _ => eprintln!("{PROG}: warning: ignoring unknown option {o}"),
        }
    }
    // squash_to_uid / squash_to_gid take precedence over squash_to_root.
    view.squash_uid = squash_uid.or(squash_root.then_some(0));
    view.squash_gid = squash_gid.or(squash_root.then_some(0));
    if !saw_lower || opts.lowers.is_empty() {
        return Err("no lowerdir given (-o lowerdir=DIR[:DIR...])".into());
    }
    for l in &opts.lowers {
        if !l.is_dir() {
            return Err(format!("lowerdir {} is not a directory", l.display()));
        }
    }
    let mp = PathBuf::from(&mountpoint);
    if !mp.is_dir() {
        return Err(format!("mountpoint {mountpoint} is not a directory"));
    }
    let abs = |p: &PathBuf| p.canonicalize().unwrap_or_else(|_| p.clone());
    opts.lowers = opts.lowers.iter().map(abs).collect();
    opts.upper = opts.upper.as_ref().map(abs);
    opts.work = opts.work.as_ref().map(abs);
    let mp = abs(&mp);
    Ok(Args {
        opts,
        view,
        mountpoint: mp,
        foreground,
    })
}

/// Block SIGTERM/SIGINT/SIGHUP in this (still single) thread so every later thread inherits the
/// mask, and return a thread that waits for them and detaches the mount.
fn signal_thread(mp: PathBuf) {
    let mut set = nix::sys::signal::SigSet::empty();
    set.add(nix::sys::signal::Signal::SIGTERM);
    set.add(nix::sys::signal::Signal::SIGINT);
    set.add(nix::sys::signal::Signal::SIGHUP);
    if set.thread_block().is_err() {
        return;
    }
    let _ = std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            if set.wait().is_ok() {
                let _ = nix::mount::umount2(&mp, nix::mount::MntFlags::MNT_DETACH);
            }
        });
}

/// Every open file of the merged view holds an fd here: allow as many as the hard limit does.
fn raise_fd_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        if soft < hard {
            let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
        }
    }
}

fn serve(args: Args, ready: Option<OwnedFd>) -> ExitCode {
    let mp = args.mountpoint.clone();
    raise_fd_limit();
    signal_thread(mp.clone());
    let report = |msg: &str| {
        if let Some(fd) = &ready {
            if let Ok(fd) = fd.try_clone() {
                let mut f = std::fs::File::from(fd);
                let _ = f.write_all(msg.as_bytes());
            }
        }
    };
    match strata_fs::mount_with(args.opts, args.view, &mp) {
        Ok(m) => {
            report("OK");
            drop(ready);
            m.wait();
            ExitCode::SUCCESS
        }
        Err(e) => {
            if ready.is_some() {
                report(&e.to_string());
            } else {
                eprintln!("{PROG}: error: {e}");
            }
            ExitCode::FAILURE
        }
    }
}

fn main() -> ExitCode {
    let args = match parse(std::env::args().skip(1).collect()) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{PROG}: error: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Err(e) = strata_fs::open_fs(&args.opts) {
        eprintln!("{PROG}: error: {e}");
        return ExitCode::FAILURE;
    }
    if args.foreground {
        return serve(args, None);
    }
    let (r, w) = match nix::unistd::pipe() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("{PROG}: error: pipe: {e}");
            return ExitCode::FAILURE;
        }
    };
    // SAFETY: no other thread exists yet in this process (fork happens before any mount thread).
    match unsafe { nix::unistd::fork() } {
        Err(e) => {
            eprintln!("{PROG}: error: fork: {e}");
            ExitCode::FAILURE
        }
        Ok(nix::unistd::ForkResult::Child) => {
            drop(r);
            let _ = nix::unistd::setsid();
            let _ = std::env::set_current_dir("/");
            if let Ok(null) = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open("/dev/null")
            {
                use std::os::fd::AsRawFd;
                for fd in 0..3 {
                    // SAFETY: dup2 onto the standard descriptors of this process.
                    unsafe { libc::dup2(null.as_raw_fd(), fd) };
                }
            }
            serve(args, Some(w))
        }
        Ok(nix::unistd::ForkResult::Parent { .. }) => {
            drop(w);
            let mut f = std::fs::File::from(r);
            let mut msg = String::new();
            let _ = f.read_to_string(&mut msg);
            if msg == "OK" {
                ExitCode::SUCCESS
            } else {
                let msg = if msg.is_empty() {
                    "the server exited before the mount was ready".to_string()
                } else {
                    msg
                };
                eprintln!("{PROG}: error: {msg}");
                ExitCode::FAILURE
            }
        }
    }
}
