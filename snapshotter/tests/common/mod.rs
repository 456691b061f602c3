//! A private containerd (Debian's 1.6) with strata-snapshotter beside it, both in one temp dir,
//! plus a gRPC client that talks to the snapshotter directly.
//!
//! Everything a [`World`] starts is stopped and removed on drop, also when the test panics:
//! containers (tasks killed and deleted in its own containerd namespace), shims, mount
//! daemons and every mount under the temp dir (FUSE connections aborted first), the
//! snapshotter, containerd, the cgroups named after the namespace and the temp dir itself.
//! Steps that touch mounts run under [`TreeWatchdog`], which aborts every FUSE mount under
//! the temp dir when its deadline passes, so a stuck mount fails the test instead of hanging it.

#![allow(dead_code)]
// tonic::Status is what the API returns; boxing it in a test client buys nothing.
#![allow(clippy::result_large_err)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use containerd_snapshots::api::snapshots::v1 as api;
use containerd_snapshots::api::snapshots::v1::snapshots_client::SnapshotsClient;
use containerd_snapshots::api::types::Mount;
use containerd_snapshots::tonic;
use strata_testkit::container::{kill_processes_naming, wait_output};
use strata_testkit::mount as tkmount;

pub const TAG: &str = "strata-snap";
pub const STEP: Duration = Duration::from_secs(120);

/// Newest modification time of the files under `dir`.
fn newest(dir: &Path) -> std::time::SystemTime {
    let mut t = std::time::UNIX_EPOCH;
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let Ok(m) = e.metadata() else { continue };
            let mt = if m.is_dir() {
                newest(&e.path())
            } else {
                m.modified().unwrap_or(std::time::UNIX_EPOCH)
            };
            t = t.max(mt);
        }
    }
    t
}

/// `strata-overlay`, the workspace's own. It is another package's binary, so cargo does not
/// build it for this package's tests: use the one a workspace build left in this profile's
/// dir when it is newer than every source of `fs/`, else build one once per test process into
/// a target dir of its own (never replacing the binary other packages' tests are running).
pub fn strata_overlay() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let me = Path::new(env!("CARGO_BIN_EXE_strata-snapshotter"));
        let profile_dir = me.parent().expect("profile dir");
        let release = profile_dir.file_name().is_some_and(|n| n == "release");
        let fs_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fs");
        let built = profile_dir.join("strata-overlay");
        let fresh = std::fs::metadata(&built)
            .and_then(|m| m.modified())
            .is_ok_and(|t| t > newest(&fs_dir.join("src")) && t > newest(&fs_dir));
        if fresh {
            return built;
        }
        let target = profile_dir
            .parent()
            .expect("target dir")
            .join("snapshotter-tests");
        let mut cmd = Command::new(env!("CARGO"));
        cmd.args([
            "build",
            "--quiet",
            "-p",
            "strata-fs",
            "--bin",
            "strata-overlay",
        ])
        .arg("--target-dir")
        .arg(&target)
        .current_dir(env!("CARGO_MANIFEST_DIR"));
        if release {
            cmd.arg("--release");
        }
        let out = cmd.output().expect("run cargo build");
        assert!(
            out.status.success(),
            "cargo build strata-overlay: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let bin = target
            .join(if release { "release" } else { "debug" })
            .join("strata-overlay");
        assert!(bin.exists(), "{} missing", bin.display());
        bin
    })
}

/// Remove what killed test processes left (mounts and temp dirs of dead pids).
fn sweep() {
    let tmp = std::env::temp_dir();
    tkmount::sweep_stale(&tmp, TAG);
    tkmount::remove_stale_dirs(&tmp, TAG);
}

/// Abort every FUSE mount under `dir` and detach every mount under it, deepest first.
pub fn unmount_all_under(dir: &Path) {
    for _ in 0..4 {
        let mut under: Vec<_> = tkmount::mounts()
            .into_iter()
            .filter(|m| m.mount_point.starts_with(dir))
            .collect();
        if under.is_empty() {
            return;
        }
        under.sort_by_key(|m| std::cmp::Reverse(m.mount_point.as_os_str().len()));
        for m in under {
            if m.fstype.starts_with("fuse") {
                let _ = tkmount::abort_fuse_connection(m.dev.1);
            }
            tkmount::lazy_unmount(&m.mount_point);
        }
    }
}

/// A deadline for a step: when it passes, every FUSE mount under the dir is aborted and
/// every mount under it detached, so blocked calls return and the test fails.
pub struct TreeWatchdog {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<bool>>,
    limit: Duration,
}

impl TreeWatchdog {
    pub fn start(dir: &Path, limit: Duration) -> TreeWatchdog {
        let (tx, rx) = mpsc::channel::<()>();
        let dir = dir.to_path_buf();
        let thread = std::thread::spawn(move || {
            if let Err(mpsc::RecvTimeoutError::Timeout) = rx.recv_timeout(limit) {
                unmount_all_under(&dir);
                kill_processes_naming(&dir);
                true
            } else {
                false
            }
        });
        TreeWatchdog {
            stop: Some(tx),
            thread: Some(thread),
            limit,
        }
    }

    /// Stop the timer; panics if it fired.
    pub fn finish(mut self) {
        let fired = self.stop_thread();
        assert!(
            !fired,
            "watchdog: step exceeded {:?}; mounts aborted",
            self.limit
        );
    }

    fn stop_thread(&mut self) -> bool {
        drop(self.stop.take());
        self.thread
            .take()
            .map(|t| t.join().unwrap_or(true))
            .unwrap_or(false)
    }
}

impl Drop for TreeWatchdog {
    fn drop(&mut self) {
        self.stop_thread();
    }
}

/// Run `f` under a [`TreeWatchdog`] of `limit`.
pub fn guarded<T>(dir: &Path, limit: Duration, f: impl FnOnce() -> T) -> T {
    let dog = TreeWatchdog::start(dir, limit);
    let out = f();
    dog.finish();
    out
}

fn wait_for_socket(path: &Path, child: &mut Child, what: &str, log: &Path) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::os::unix::net::UnixStream::connect(path).is_err() {
        if let Ok(Some(st)) = child.try_wait() {
            panic!(
                "{what} exited ({st}): {}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        assert!(
            Instant::now() < deadline,
            "{what} did not listen on {}",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Signal `child`, wait up to `grace`, then SIGKILL; always reaped. The exit status when it
/// ended within the grace period.
fn stop_child(
    child: &mut Option<Child>,
    sig: i32,
    grace: Duration,
) -> Option<std::process::ExitStatus> {
    let mut c = child.take()?;
    // SAFETY: signalling our own child, reaped below.
    unsafe { libc::kill(c.id() as i32, sig) };
    let deadline = Instant::now() + grace;
    loop {
        if let Ok(Some(st)) = c.try_wait() {
            return Some(st);
        }
        if Instant::now() >= deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = c.kill();
    let _ = c.wait();
    None
}

/// A private containerd with strata-snapshotter as its `strata` proxy plugin.
pub struct World {
    pub dir: tempfile::TempDir,
    /// The containerd namespace every ctr command of this world uses (unique: runc's state
    /// and the cgroups containerd makes are named after it).
    pub ns: String,
    snapshotter: Option<Child>,
    containerd: Option<Child>,
}

impl World {
    /// Start the snapshotter only (for tests that talk to it directly).
    pub fn snapshotter_only() -> World {
        sweep();
        let dir = tempfile::Builder::new()
            .prefix(&tkmount::owned_prefix(TAG))
            .tempdir()
            .expect("temp dir");
        std::fs::create_dir_all(dir.path().join("bin")).expect("bin dir");
        let prog = dir.path().join("bin/strata-overlay");
        std::fs::copy(strata_overlay(), &prog).expect("copy strata-overlay");
        let ns = format!(
            "strata-test-{}-{}",
            std::process::id(),
            dir.path()
                .file_name()
                .map(|n| n
                    .to_string_lossy()
                    .rsplit('-')
                    .next()
                    .unwrap_or("")
                    .to_lowercase())
                .unwrap_or_default()
        );
        let mut w = World {
            dir,
            ns,
            snapshotter: None,
            containerd: None,
        };
        w.start_snapshotter();
        w
    }

    /// Start the snapshotter and containerd.
    pub fn start() -> World {
        let mut w = World::snapshotter_only();
        w.start_containerd();
        w
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }
    pub fn snap_root(&self) -> PathBuf {
        self.path().join("snap-root")
    }
    pub fn snap_sock(&self) -> PathBuf {
        self.path().join("snapshotter.sock")
    }
    pub fn containerd_sock(&self) -> PathBuf {
        self.path().join("containerd.sock")
    }
    pub fn mount_program(&self) -> PathBuf {
        self.path().join("bin/strata-overlay")
    }

    pub fn start_snapshotter(&mut self) {
        let log = self.path().join("snapshotter.log");
        let logf = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .expect("log");
        let mut child = Command::new(env!("CARGO_BIN_EXE_strata-snapshotter"))
            .arg("--address")
            .arg(self.snap_sock())
            .arg("--root")
            .arg(self.snap_root())
            .arg("--mount-program")
            .arg(self.mount_program())
            .arg("--log-level")
            .arg("debug")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(logf)
            .spawn()
            .expect("start strata-snapshotter");
        wait_for_socket(&self.snap_sock(), &mut child, "strata-snapshotter", &log);
        self.snapshotter = Some(child);
    }

    pub fn snapshotter_pid(&self) -> u32 {
        self.snapshotter.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    /// SIGKILL the snapshotter and reap it.
    pub fn kill_snapshotter(&mut self) {
        stop_child(&mut self.snapshotter, libc::SIGKILL, Duration::ZERO);
    }

    /// SIGTERM the snapshotter and wait for it.
    pub fn stop_snapshotter(&mut self) -> Option<std::process::ExitStatus> {
        stop_child(
            &mut self.snapshotter,
            libc::SIGTERM,
            Duration::from_secs(20),
        )
    }

    pub fn snapshotter_log(&self) -> String {
        std::fs::read_to_string(self.path().join("snapshotter.log")).unwrap_or_default()
    }

    pub fn start_containerd(&mut self) {
        let d = self.path();
        let config = format!(
            r#"version = 2
root = "{root}"
state = "{state}"
plugin_dir = ""
disabled_plugins = [
  "io.containerd.grpc.v1.cri",
  "io.containerd.internal.v1.opt",
  "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.zfs",
]

[grpc]
  address = "{sock}"

[ttrpc]
  address = "{sock}.ttrpc"

[debug]
  address = ""
  level = "info"

[metrics]
  address = ""

[proxy_plugins]
  [proxy_plugins.strata]
    type = "snapshot"
    address = "{snap}"

[plugins."io.containerd.gc.v1.scheduler"]
  deletion_threshold = 1
"#,
            root = d.join("containerd/root").display(),
            state = d.join("containerd/state").display(),
            sock = self.containerd_sock().display(),
            snap = self.snap_sock().display(),
        );
        std::fs::write(d.join("containerd.toml"), config).expect("containerd config");
        let log = d.join("containerd.log");
        let logf = std::fs::File::create(&log).expect("containerd log");
        let mut child = Command::new("containerd")
            .arg("--config")
            .arg(d.join("containerd.toml"))
            .env(
                "PATH",
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            )
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(logf)
            .spawn()
            .expect("start containerd (Debian package containerd)");
        wait_for_socket(&self.containerd_sock(), &mut child, "containerd", &log);
        self.containerd = Some(child);
    }

    pub fn containerd_log(&self) -> String {
        std::fs::read_to_string(self.path().join("containerd.log")).unwrap_or_default()
    }

    /// `ctr --address … --namespace …` ARGS, under a time limit.
    pub fn ctr(&self, args: &[&str]) -> Output {
        let child = Command::new("ctr")
            .arg("--address")
            .arg(self.containerd_sock())
            .arg("--namespace")
            .arg(&self.ns)
            .args(args)
            .env(
                "PATH",
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            )
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run ctr");
        wait_output(child, STEP)
    }

    /// `ctr` ARGS that must succeed; returns stdout.
    pub fn ctr_ok(&self, args: &[&str]) -> String {
        let out = self.ctr(args);
        assert!(
            out.status.success(),
            "ctr {args:?}: {}\n{}\n--- snapshotter log:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr),
            tail(&self.snapshotter_log(), 30)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `ctr run [--rm] --snapshotter strata IMAGE ID CMD…`, which must succeed; returns stdout.
    ///
    /// Known issue, not the snapshotter's (docs/snapshotter.md, "Known issue"): when the shim's
    /// child reaper steals mount.fuse3's exit status (ECHILD), containerd unmounts and mounts
    /// the rootfs again at the same path, and the first strata-overlay daemon, on its way out,
    /// unmounts the second mount (fuser's unmount-on-drop); runc then finds an empty rootfs
    /// ("executable file not found"). Only that failure is retried, at most twice, and each
    /// retry is printed.
    pub fn run_container(&self, rm: bool, image: &str, id: &str, cmd: &[&str]) -> String {
        let mut args = vec!["run"];
        if rm {
            args.push("--rm");
        }
        args.extend_from_slice(&["--snapshotter", "strata", image, id]);
        args.extend_from_slice(cmd);
        for attempt in 1..=3 {
            let out = self.ctr(&args);
            let err = String::from_utf8_lossy(&out.stderr).into_owned();
            if out.status.success() {
                return String::from_utf8_lossy(&out.stdout).into_owned();
            }
            assert!(
                attempt < 3 && err.contains("executable file not found in $PATH"),
                "ctr {args:?}: {}\n{err}\n--- snapshotter log:\n{}",
                out.status,
                tail(&self.snapshotter_log(), 30)
            );
            eprintln!(
                "ctr run {id}: known rootfs-remount race (attempt {attempt}), retrying: {err}"
            );
            let _ = self.ctr(&["containers", "rm", id]);
        }
        unreachable!("the loop returns or panics")
    }

    /// `ctr` ARGS that must fail; returns stderr.
    pub fn ctr_err(&self, args: &[&str]) -> String {
        let out = self.ctr(args);
        assert!(
            !out.status.success(),
            "ctr {args:?} succeeded: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    /// The snapshotter's records, as written in its metadata file.
    pub fn metadata(&self) -> serde_json::Value {
        let b = std::fs::read(self.snap_root().join("metadata.json")).unwrap_or_default();
        serde_json::from_slice(&b).unwrap_or(serde_json::json!({"snapshots": {}}))
    }

    /// The backend key containerd uses for its `key` in our namespace (`<ns>/<n>/<key>`).
    pub fn backend_key(&self, key: &str) -> Option<String> {
        let prefix = format!("{}/", self.ns);
        let suffix = format!("/{key}");
        self.metadata()["snapshots"]
            .as_object()?
            .keys()
            .find(|k| k.starts_with(&prefix) && k.ends_with(&suffix))
            .cloned()
    }

    /// The layer dir of backend snapshot `backend_key`.
    pub fn layer_dir(&self, backend_key: &str) -> PathBuf {
        let id = self.metadata()["snapshots"][backend_key]["id"]
            .as_u64()
            .unwrap_or_else(|| panic!("no record for {backend_key}"));
        self.snap_root().join(format!("snapshots/{id}/fs"))
    }

    pub fn client(&self) -> Client {
        Client::connect(&self.snap_sock())
    }

    fn teardown(&mut self) {
        if self.containerd.is_some() {
            // Containers first: their processes outlive a killed shim.
            let tasks = self.ctr(&["tasks", "ls", "-q"]);
            for id in String::from_utf8_lossy(&tasks.stdout).lines() {
                let _ = self.ctr(&["tasks", "kill", "-s", "SIGKILL", id]);
                let _ = self.ctr(&["tasks", "rm", "-f", id]);
            }
            let cs = self.ctr(&["containers", "ls", "-q"]);
            for id in String::from_utf8_lossy(&cs.stdout).lines() {
                let _ = self.ctr(&["containers", "rm", id]);
            }
        }
        stop_child(&mut self.containerd, libc::SIGTERM, Duration::from_secs(10));
        unmount_all_under(self.dir.path());
        kill_processes_naming(self.dir.path());
        stop_child(
            &mut self.snapshotter,
            libc::SIGTERM,
            Duration::from_secs(10),
        );
        unmount_all_under(self.dir.path());
        remove_cgroups(&self.ns);
        // runc's state dir for the namespace (the shim's default runc root); empty once every
        // container is deleted, and only then removed.
        let _ = std::fs::remove_dir(Path::new("/run/containerd/runc").join(&self.ns));
    }
}

/// Remove the cgroup dirs containerd made for namespace `ns` (`/<ns>/<container>` in every
/// hierarchy), deepest first; only empty cgroups can be removed, which is what we want.
fn remove_cgroups(ns: &str) {
    let Ok(hiers) = std::fs::read_dir("/sys/fs/cgroup") else {
        return;
    };
    let mut roots: Vec<PathBuf> = hiers.flatten().map(|e| e.path()).collect();
    roots.push(PathBuf::from("/sys/fs/cgroup"));
    for h in roots {
        let base = h.join(ns);
        if let Ok(children) = std::fs::read_dir(&base) {
            for c in children.flatten() {
                if c.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                    let _ = std::fs::remove_dir(c.path());
                }
            }
        }
        let _ = std::fs::remove_dir(&base);
    }
}

impl Drop for World {
    fn drop(&mut self) {
        self.teardown();
    }
}

pub fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// A blocking client of the snapshots service, straight to the snapshotter's socket.
pub struct Client {
    rt: tokio::runtime::Runtime,
    inner: SnapshotsClient<tonic::transport::Channel>,
}

pub type Status = tonic::Status;

impl Client {
    pub fn connect(sock: &Path) -> Client {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let path = sock.to_path_buf();
        let channel = rt
            .block_on(async move {
                tonic::transport::Endpoint::try_from("http://[::]:50051")?
                    .connect_with_connector(tower::service_fn(move |_: tonic::transport::Uri| {
                        tokio::net::UnixStream::connect(path.clone())
                    }))
                    .await
            })
            .expect("connect to the snapshotter");
        Client {
            rt,
            inner: SnapshotsClient::new(channel),
        }
    }

    pub fn prepare(&mut self, key: &str, parent: &str) -> Result<Vec<Mount>, Status> {
        self.prepare_labels(key, parent, HashMap::new())
    }

    pub fn prepare_labels(
        &mut self,
        key: &str,
        parent: &str,
        labels: HashMap<String, String>,
    ) -> Result<Vec<Mount>, Status> {
        let req = api::PrepareSnapshotRequest {
            snapshotter: "strata".into(),
            key: key.into(),
            parent: parent.into(),
            labels,
        };
        let c = &mut self.inner;
        self.rt
            .block_on(c.prepare(req))
            .map(|r| r.into_inner().mounts)
    }

    pub fn view(&mut self, key: &str, parent: &str) -> Result<Vec<Mount>, Status> {
        let req = api::ViewSnapshotRequest {
            snapshotter: "strata".into(),
            key: key.into(),
            parent: parent.into(),
            labels: HashMap::new(),
        };
        let c = &mut self.inner;
        self.rt.block_on(c.view(req)).map(|r| r.into_inner().mounts)
    }

    pub fn mounts(&mut self, key: &str) -> Result<Vec<Mount>, Status> {
        let req = api::MountsRequest {
            snapshotter: "strata".into(),
            key: key.into(),
        };
        let c = &mut self.inner;
        self.rt
            .block_on(c.mounts(req))
            .map(|r| r.into_inner().mounts)
    }

    pub fn commit(
        &mut self,
        name: &str,
        key: &str,
        labels: HashMap<String, String>,
    ) -> Result<(), Status> {
        let req = api::CommitSnapshotRequest {
            snapshotter: "strata".into(),
            name: name.into(),
            key: key.into(),
            labels,
        };
        let c = &mut self.inner;
        self.rt.block_on(c.commit(req)).map(|_| ())
    }

    pub fn remove(&mut self, key: &str) -> Result<(), Status> {
        let req = api::RemoveSnapshotRequest {
            snapshotter: "strata".into(),
            key: key.into(),
        };
        let c = &mut self.inner;
        self.rt.block_on(c.remove(req)).map(|_| ())
    }

    pub fn stat(&mut self, key: &str) -> Result<api::Info, Status> {
        let req = api::StatSnapshotRequest {
            snapshotter: "strata".into(),
            key: key.into(),
        };
        let c = &mut self.inner;
        self.rt
            .block_on(c.stat(req))
            .map(|r| r.into_inner().info.unwrap_or_default())
    }

    pub fn update(&mut self, info: api::Info, paths: &[&str]) -> Result<api::Info, Status> {
        let req = api::UpdateSnapshotRequest {
            snapshotter: "strata".into(),
            info: Some(info),
            update_mask: if paths.is_empty() {
                None
            } else {
                Some(prost_types::FieldMask {
                    paths: paths.iter().map(|s| s.to_string()).collect(),
                })
            },
        };
        let c = &mut self.inner;
        self.rt
            .block_on(c.update(req))
            .map(|r| r.into_inner().info.unwrap_or_default())
    }

    pub fn usage(&mut self, key: &str) -> Result<(i64, i64), Status> {
        let req = api::UsageRequest {
            snapshotter: "strata".into(),
            key: key.into(),
        };
        let c = &mut self.inner;
        self.rt.block_on(c.usage(req)).map(|r| {
            let r = r.into_inner();
            (r.size, r.inodes)
        })
    }

    pub fn list(&mut self, filters: &[&str]) -> Result<Vec<api::Info>, Status> {
        let req = api::ListSnapshotsRequest {
            snapshotter: "strata".into(),
            filters: filters.iter().map(|s| s.to_string()).collect(),
        };
        let c = &mut self.inner;
        self.rt.block_on(async move {
            let mut stream = c.list(req).await?.into_inner();
            let mut out = Vec::new();
            while let Some(msg) = stream.message().await? {
                out.extend(msg.info);
            }
            Ok(out)
        })
    }

    pub fn cleanup(&mut self) -> Result<(), Status> {
        let req = api::CleanupRequest {
            snapshotter: "strata".into(),
        };
        let c = &mut self.inner;
        self.rt.block_on(c.cleanup(req)).map(|_| ())
    }
}

/// Perform `m` at `target` as containerd does: `mount.fuse3 SOURCE TARGET -o OPT… -t PROGRAM`
/// for `fuse3.*` types, mount(2) for binds. Returns a guard that unmounts.
pub fn mount(m: &Mount, target: &Path) -> tkmount::MountGuard {
    std::fs::create_dir_all(target).expect("mountpoint");
    if let Some(prog) = m.r#type.strip_prefix("fuse3.") {
        let mut cmd = Command::new("mount.fuse3");
        cmd.arg(&m.source).arg(target);
        for o in &m.options {
            cmd.arg("-o").arg(o);
        }
        cmd.arg("-t").arg(prog);
        let out = wait_output(
            cmd.stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("mount.fuse3"),
            STEP,
        );
        assert!(
            out.status.success(),
            "mount.fuse3: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    } else {
        assert_eq!(m.r#type, "bind", "{m:?}");
        let ro = m.options.iter().any(|o| o == "ro");
        nix::mount::mount(
            Some(Path::new(&m.source)),
            target,
            None::<&str>,
            nix::mount::MsFlags::MS_BIND | nix::mount::MsFlags::MS_REC,
            None::<&str>,
        )
        .expect("bind mount");
        if ro {
            nix::mount::mount(
                None::<&str>,
                target,
                None::<&str>,
                nix::mount::MsFlags::MS_BIND
                    | nix::mount::MsFlags::MS_REMOUNT
                    | nix::mount::MsFlags::MS_RDONLY,
                None::<&str>,
            )
            .expect("remount ro");
        }
    }
    tkmount::MountGuard::existing(target).expect("mounted")
}
