//! A throw-away unprivileged user for rootless tests: created with a unique name (and, when asked,
//! subordinate uid/gid ranges that overlap no existing one), allowed to open `/dev/fuse`, and on
//! drop — even after a failed assertion — its processes (and those running as ids of its range)
//! killed by pid, its ranges, ACL entry, home and runtime directories (strata's, podman's) removed,
//! the account deleted.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Serializes edits of /etc/subuid and /etc/subgid between tests of one binary.
static IDS: Mutex<()> = Mutex::new(());
static SEQ: AtomicU32 = AtomicU32::new(0);

/// Device nodes the user must be able to open: FUSE, and tun for pasta.
const DEVICES: [&str; 2] = ["/dev/fuse", "/dev/net/tun"];

/// Size of the subordinate range given to a throw-away user.
pub const RANGE: u64 = 65536;

pub struct TestUser {
    pub name: String,
    pub uid: u32,
    pub home: PathBuf,
    /// First id of the subordinate range (uids and gids alike), if it has one.
    pub range_start: Option<u64>,
}

fn run(cmd: &mut Command) -> std::io::Result<()> {
    let out = cmd.output()?;
    if out.status.success() {
        Ok(())
    } else {
        Err(std::io::Error::other(format!(
            "{cmd:?}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

/// One past the highest id any line of an /etc/subuid-style file hands out.
fn end_of_ranges(file: &str) -> u64 {
    fs::read_to_string(file)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let mut f = l.split(':');
            let _ = f.next()?;
            let start: u64 = f.next()?.trim().parse().ok()?;
            let count: u64 = f.next()?.trim().parse().ok()?;
            Some(start + count)
        })
        .max()
        .unwrap_or(0)
}

impl TestUser {
    /// A new user; `with_ranges` gives it a subordinate uid and gid range of [`RANGE`] ids.
    pub fn new(with_ranges: bool) -> std::io::Result<TestUser> {
        let _g = IDS.lock().unwrap_or_else(|p| p.into_inner());
        let name = format!(
            "strt{}x{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        );
        // SUB_*_COUNT=0: useradd would otherwise pick ranges itself (login.defs).
        run(Command::new("useradd").args([
            "-m",
            "-K",
            "SUB_UID_COUNT=0",
            "-K",
            "SUB_GID_COUNT=0",
            "-s",
            "/bin/sh",
            &name,
        ]))?;
        let mut user = TestUser {
            uid: 0,
            home: PathBuf::from("/home").join(&name),
            name,
            range_start: None,
        };
        let pw = fs::metadata(&user.home)?;
        user.uid = pw.uid();
        if with_ranges {
            // Above every existing range of both files, aligned, so nothing overlaps.
            let start = end_of_ranges("/etc/subuid")
                .max(end_of_ranges("/etc/subgid"))
                .max(3_000_000)
                .div_ceil(RANGE)
                * RANGE;
            let spec = format!("{}-{}", start, start + RANGE - 1);
            run(Command::new("usermod").args([
                "--add-subuids",
                &spec,
                "--add-subgids",
                &spec,
                &user.name,
            ]))?;
            user.range_start = Some(start);
        }
        // Stock Debian makes /dev/fuse and /dev/net/tun (pasta) 0666; where they are 0600 the
        // user gets an ACL entry.
        for dev in DEVICES {
            run(Command::new("setfacl").args(["-m", &format!("u:{}:rw", user.name), dev]))?;
        }
        Ok(user)
    }

    /// `program args…` as this user with a clean environment (`env -i`, its HOME, a PATH that
    /// has newuidmap), under `timeout` so a hang cannot stall the suite.
    pub fn command(&self, program: &Path, args: &[&str]) -> Command {
        let mut c = Command::new("timeout");
        c.args([
            "-k", "5", "120", "runuser", "-u", &self.name, "--", "env", "-i",
        ])
        .arg("PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin")
        .arg(format!("HOME={}", self.home.display()))
        .arg(program)
        .args(args)
        .current_dir(&self.home);
        c
    }

    /// [`TestUser::command`] run to the end, required to succeed: its stdout (a failure panics
    /// with the status and stderr).
    pub fn ok(&self, program: &Path, args: &[&str]) -> String {
        let out = self
            .command(program, args)
            .output()
            .expect("run as the test user");
        assert!(
            out.status.success(),
            "{} {args:?} as {} failed ({}): {}",
            program.display(),
            self.name,
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Whether `uid` belongs to this user: its own or one of its subordinate range.
    pub fn owns_id(&self, uid: u32) -> bool {
        uid == self.uid
            || self
                .range_start
                .is_some_and(|s| (s..s + RANGE).contains(&(uid as u64)))
    }

    /// Pids of processes running as this user or an id of its range.
    pub fn processes(&self) -> Vec<i32> {
        let Ok(dir) = fs::read_dir("/proc") else {
            return Vec::new();
        };
        dir.flatten()
            .filter_map(|e| {
                let pid: i32 = e.file_name().to_str()?.parse().ok()?;
                let uid = e.metadata().ok()?.uid();
                self.owns_id(uid).then_some(pid)
            })
            .collect()
    }

    /// Kill every process of the user (by pid) until none is left (at most 10 s).
    pub fn kill_all(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let pids = self.processes();
            if pids.is_empty() || Instant::now() > deadline {
                return;
            }
            for pid in pids {
                // SAFETY: kill(2) with a pid read from /proc; at worst the pid is gone (ESRCH).
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for TestUser {
    fn drop(&mut self) {
        self.kill_all();
        {
            let _g = IDS.lock().unwrap_or_else(|p| p.into_inner());
            for dev in DEVICES {
                let _ = run(Command::new("setfacl").args(["-x", &format!("u:{}", self.name), dev]));
                // The last test user gone: the node gets back its plain mode (no ACL at all).
                let named = Command::new("getfacl")
                    .args(["-c", "-p", dev])
                    .output()
                    .map(|o| {
                        String::from_utf8_lossy(&o.stdout)
                            .lines()
                            .any(|l| l.starts_with("user:") && !l.starts_with("user::"))
                    })
                    .unwrap_or(true);
                if !named {
                    let _ = run(Command::new("setfacl").args(["-b", dev]));
                }
            }
        }
        if let Some(s) = self.range_start {
            let spec = format!("{}-{}", s, s + RANGE - 1);
            let _ = run(Command::new("usermod").args([
                "--del-subuids",
                &spec,
                "--del-subgids",
                &spec,
                &self.name,
            ]));
        }
        let _ = run(Command::new("userdel").args(["-r", "-f", &self.name]));
        // Runtime dirs strata and (rootless) podman make without XDG_RUNTIME_DIR.
        for dir in ["strata", "podman-run", "containers-user"] {
            let _ = fs::remove_dir_all(format!("/tmp/{dir}-{}", self.uid));
        }
        // Files of the range that userdel -r could not see as the user's are under the home.
        let _ = fs::remove_dir_all(&self.home);
    }
}
