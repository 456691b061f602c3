//! Helpers to run the real `strata` binary against temp `--root`/`--runroot` dirs, and a guard
//! that leaves nothing behind: on drop it force-removes every container, kills every process
//! whose command line names the temp root (supervisors) after aborting the FUSE connections of
//! mounts still under it (a process blocked on one becomes killable), and lazily unmounts anything
//! still mounted under it.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Default limit for one `strata` invocation in tests.
pub const CMD_TIMEOUT: Duration = Duration::from_secs(60);

/// A private strata installation (temp root and runroot) driving the binary at `bin`.
pub struct Strata {
    pub bin: PathBuf,
    pub root: tempfile::TempDir,
    pub runroot: tempfile::TempDir,
    /// `--storage-driver` passed to every command, if any.
    pub driver: Option<String>,
}

/// The result of one command.
#[derive(Debug)]
pub struct Run {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn ok(&self) -> bool {
        self.code == Some(0)
    }
}

impl Strata {
    pub fn new(bin: impl Into<PathBuf>) -> Strata {
        Strata {
            bin: bin.into(),
            root: tempfile::Builder::new()
                .prefix("strata-root-")
                .tempdir()
                .expect("temp root"),
            runroot: tempfile::Builder::new()
                .prefix("strata-run-")
                .tempdir()
                .expect("temp runroot"),
            driver: None,
        }
    }

    pub fn with_driver(mut self, driver: &str) -> Strata {
        self.driver = Some(driver.to_string());
        self
    }

    pub fn root_path(&self) -> &Path {
        self.root.path()
    }

    /// A `Command` for `strata <args>` with this installation's global flags.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(&self.bin);
        c.arg("--root")
            .arg(self.root.path())
            .arg("--runroot")
            .arg(self.runroot.path());
        if let Some(d) = &self.driver {
            c.arg("--storage-driver").arg(d);
        }
        c.args(args);
        c
    }

    /// Run `strata <args>` with stdin closed, under [`CMD_TIMEOUT`].
    pub fn run(&self, args: &[&str]) -> Run {
        self.run_timeout(args, CMD_TIMEOUT)
    }

    /// Run `strata <args>` under `limit`; the process is killed if it overruns (and the test
    /// fails on its output).
    pub fn run_timeout(&self, args: &[&str], limit: Duration) -> Run {
        let mut cmd = self.command(args);
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let child = cmd.spawn().expect("spawn strata");
        let out = wait_output(child, limit);
        Run {
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Run and assert success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let r = self.run(args);
        assert!(r.ok(), "strata {args:?} failed: {r:?}");
        r.stdout
    }

    /// Force-remove every container and clean up whatever is left (idempotent).
    pub fn cleanup(&self) {
        let ids = self.run_timeout(&["ps", "-aq", "--no-trunc"], Duration::from_secs(30));
        for id in ids.stdout.split_whitespace() {
            let _ = self.run_timeout(&["rm", "-f", id], Duration::from_secs(30));
        }
        abort_fuse_under(self.root.path());
        kill_processes_naming(self.root.path());
        lazy_unmount_under(self.root.path());
    }
}

impl Drop for Strata {
    fn drop(&mut self) {
        self.cleanup();
    }
}

/// Wait for a child's output under a time limit; kill it when the limit passes.
pub fn wait_output(mut child: std::process::Child, limit: Duration) -> Output {
    let mut stdout = child.stdout.take();
    let mut stderr = child.stderr.take();
    let out_t = std::thread::spawn(move || {
        let mut b = Vec::new();
        if let Some(s) = stdout.as_mut() {
            let _ = s.read_to_end(&mut b);
        }
        b
    });
    let err_t = std::thread::spawn(move || {
        let mut b = Vec::new();
        if let Some(s) = stderr.as_mut() {
            let _ = s.read_to_end(&mut b);
        }
        b
    });
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            break child.wait().expect("wait after kill");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    // A supervisor that inherited the pipes may keep them open: don't wait for it forever.
    let stdout = join_limited(out_t);
    let stderr = join_limited(err_t);
    Output {
        status,
        stdout,
        stderr,
    }
}

fn join_limited(t: std::thread::JoinHandle<Vec<u8>>) -> Vec<u8> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !t.is_finished() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    if t.is_finished() {
        t.join().unwrap_or_default()
    } else {
        b"<output pipe still open>".to_vec()
    }
}

/// SIGKILL every process whose command line mentions `root` (supervisors carry `--root`).
pub fn kill_processes_naming(root: &Path) {
    let needle = root.as_os_str().as_encoded_bytes().to_vec();
    let me = std::process::id();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return;
    };
    for e in entries.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if pid == me {
            continue;
        }
        let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        if cmdline
            .windows(needle.len())
            .any(|w| w == needle.as_slice())
        {
            // SAFETY: sending a signal to a pid.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        }
    }
}

/// Mount points under `root` listed in `/proc/self/mountinfo`, deepest first.
pub fn mounts_under(root: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = crate::mount::mounts()
        .into_iter()
        .map(|m| m.mount_point)
        .filter(|m| m.starts_with(root))
        .collect();
    v.sort_by_key(|p| std::cmp::Reverse(p.as_os_str().len()));
    v
}

/// Abort the FUSE connection of every FUSE mount still under `root` (left by a failed test or a
/// container that could not be removed): a process blocked on such a mount — a supervisor that
/// serves the mount and also waits on it — becomes killable, so the cleanup that follows can't
/// hang. Only connections of mounts under `root` are touched.
pub fn abort_fuse_under(root: &Path) {
    for m in crate::mount::mounts() {
        if m.mount_point.starts_with(root) && m.fstype.starts_with("fuse") {
            let _ = crate::mount::abort_fuse_connection(m.dev.1);
        }
    }
}

/// Lazily unmount everything mounted under `root`.
pub fn lazy_unmount_under(root: &Path) {
    for _ in 0..4 {
        let mounts = mounts_under(root);
        if mounts.is_empty() {
            return;
        }
        for m in mounts {
            let _ = nix::mount::umount2(&m, nix::mount::MntFlags::MNT_DETACH);
        }
    }
}

/// A TCP port that was free a moment ago (bind port 0, read it, release it).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// A tiny HTTP/1.0 GET: returns (status code, body).
pub fn http_get(host: &str, port: u16, path: &str) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect((host, port))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    s.set_write_timeout(Some(Duration::from_secs(10)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {host}\r\n\r\n")?;
    let mut resp = Vec::new();
    s.read_to_end(&mut resp)?;
    let text = String::from_utf8_lossy(&resp).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad HTTP response: {text:?}")))?;
    Ok((code, body.to_string()))
}

/// Retry `f` until it returns `Some` or `limit` passes.
pub fn eventually<T>(limit: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
