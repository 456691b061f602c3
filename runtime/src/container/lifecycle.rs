//! Create, start, stop, kill, wait, remove; reconciling records whose supervisor died.

use std::fs::{self, File};
use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use chrono::Utc;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use super::record::{
    self, generate_name, process_alive, valid_name, ContainerConfig, ContainerId, ContainerState,
    NetSettings, NetworkMode, PortMapping, Resources, Security, Status, VolumeMount,
};
use super::{io_at, Container, ContainerError, Launcher, Result, Runtime};
use crate::driver::{force_unmount, is_mountpoint};
use crate::events::Event;

/// The image a container is created from, as resolved by the caller from the image store.
#[derive(Debug, Clone, Default)]
pub struct ImageSource {
    /// As the user wrote it (shown by `ps`).
    pub reference: String,
    /// `None` for a build step on `scratch`.
    pub id: Option<crate::digest::ImageId>,
    /// Layer dirs, top first.
    pub layers: Vec<PathBuf>,
    pub entrypoint: Option<Vec<String>>,
    pub cmd: Option<Vec<String>>,
    pub env: Vec<String>,
    pub user: String,
    pub working_dir: String,
    pub stop_signal: Option<String>,
    /// `ExposedPorts` keys (`80/tcp`), for `-P`.
    pub exposed_ports: Vec<String>,
    /// The image's `Healthcheck`.
    pub healthcheck: Option<super::health::HealthConfig>,
    /// The image's `Labels` (a container's labels start from them).
    pub labels: std::collections::BTreeMap<String, String>,
}

/// What a container's own flags say (`run`/`create`, a build step), everything but its image:
/// [`crate::engine::ContainerSpec`] carries these with the image as typed, [`CreateRequest`]
/// with the image resolved, so the flags are written once and moved, never copied field by
/// field.
#[derive(Debug, Clone, Default)]
pub struct ContainerOptions {
    pub name: Option<String>,
    /// Arguments after the image name (replace the image's Cmd).
    pub cmd: Vec<String>,
    /// `--entrypoint` (`Some("")` clears the image's).
    pub entrypoint: Option<String>,
    /// `-e` / `--env-file`, in order (`KEY=V`, or `KEY` to copy the caller's value).
    pub env: Vec<String>,
    pub user: Option<String>,
    pub workdir: Option<String>,
    pub hostname: Option<String>,
    pub tty: bool,
    pub open_stdin: bool,
    pub ports: Vec<PortMapping>,
    pub volumes: Vec<VolumeMount>,
    pub network: NetworkMode,
    /// Networks, aliases, `--dns`, `--add-host`, `container:` target.
    pub net: NetSettings,
    pub auto_remove: bool,
    pub runtime: super::RuntimeKind,
    pub resources: Resources,
    pub stop_timeout: Option<u64>,
    pub security: Security,
    pub restart: super::restart::RestartPolicy,
    pub init: bool,
    /// `--health-*` flags (unset fields inherit the image's).
    pub health: super::health::HealthConfig,
    /// `--no-healthcheck`.
    pub no_healthcheck: bool,
    /// `--label` / `--label-file`, over the image's labels.
    pub labels: std::collections::BTreeMap<String, String>,
    /// `--stop-signal` (else the image's, else SIGTERM).
    pub stop_signal: Option<String>,
    /// `--log-driver` / `--log-opt`.
    pub log: super::logs::LogConfig,
    /// `--domainname`.
    pub domainname: String,
    /// `--oom-score-adj` (checked: -1000..=1000).
    pub oom_score_adj: i32,
}

/// A container to create: its options and the image they apply to, resolved from the store.
#[derive(Debug, Clone, Default)]
pub struct CreateRequest {
    pub image: ImageSource,
    pub driver: crate::driver::DriverKind,
    pub opts: ContainerOptions,
}

fn merge_env(base: &[String], overrides: &[String]) -> Vec<String> {
    let mut env: Vec<String> = base.to_vec();
    for e in overrides {
        let (key, value) = match e.split_once('=') {
            Some((k, v)) => (k.to_string(), v.to_string()),
            None => match std::env::var(e) {
                Ok(v) => (e.clone(), v),
                Err(_) => continue,
            },
        };
        let entry = format!("{key}={value}");
        match env
            .iter_mut()
            .find(|x| x.split('=').next() == Some(key.as_str()))
        {
            Some(slot) => *slot = entry,
            None => env.push(entry),
        }
    }
    env
}

/// Docker's `/etc/hosts` for a container.
fn hosts_file(hostname: &str, network: NetworkMode) -> String {
    if network == NetworkMode::Host {
        if let Ok(h) = fs::read_to_string("/etc/hosts") {
            return h;
        }
    }
    format!(
        "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\nfe00::0\tip6-localnet\n\
         ff00::0\tip6-mcastprefix\nff02::1\tip6-allnodes\nff02::2\tip6-allrouters\n127.0.1.1\t{hostname}\n"
    )
}

/// The host's resolv.conf, minus loopback nameservers that mean nothing in a private network
/// namespace (Docker then falls back to public resolvers).
fn resolv_conf(network: NetworkMode) -> String {
    let host = fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    if network == NetworkMode::Host {
        return host;
    }
    let mut out = String::new();
    let mut servers = 0;
    for line in host.lines() {
        if let Some(ns) = line.trim().strip_prefix("nameserver") {
            let ns = ns.trim();
            if ns.starts_with("127.") || ns == "::1" {
                continue;
            }
            servers += 1;
        }
        out.push_str(line);
        out.push('\n');
    }
    if servers == 0 {
        out.push_str("nameserver 8.8.8.8\nnameserver 8.8.4.4\n");
    }
    out
}

/// Build the init layer: the mount targets the container needs, as empty dirs and files whose
/// dirs copy mode and owner from the topmost image layer that has them.
fn build_init_layer(init: &Path, layers: &[PathBuf]) -> Result<()> {
    let dirs = [
        "proc",
        "sys",
        "dev",
        "dev/pts",
        "dev/shm",
        "dev/mqueue",
        "etc",
    ];
    for d in dirs {
        let p = init.join(d);
        fs::create_dir_all(&p).map_err(io_at(&p))?;
        let template = layers
            .iter()
            .find_map(|l| fs::symlink_metadata(l.join(d)).ok().filter(|m| m.is_dir()));
        let (mode, uid, gid) = template
            .map(|m| (m.mode() & 0o7777, m.uid(), m.gid()))
            .unwrap_or((0o755, 0, 0));
        fs::set_permissions(&p, fs::Permissions::from_mode(mode)).map_err(io_at(&p))?;
        std::os::unix::fs::chown(&p, Some(uid), Some(gid)).map_err(io_at(&p))?;
    }
    for f in ["etc/hosts", "etc/hostname", "etc/resolv.conf"] {
        let p = init.join(f);
        fs::write(&p, b"").map_err(io_at(&p))?;
    }
    Ok(())
}

impl Runtime {
    pub(crate) fn lock(&self) -> Result<nix::fcntl::Flock<File>> {
        let dir = self.containers_dir();
        fs::create_dir_all(&dir).map_err(io_at(&dir))?;
        let path = dir.join(".lock");
        crate::fsutil::lock_file(&path, crate::fsutil::LockMode::Exclusive).map_err(io_at(&path))
    }

    /// Create a container record (state `created`). Names are unique under a lock.
    pub fn create(&self, req: CreateRequest) -> Result<Container> {
        let o = &req.opts;
        if let Some(n) = &o.name {
            if !valid_name(n) {
                return Err(ContainerError::InvalidName(n.clone()));
            }
        }
        let img = &req.image;
        let (entrypoint, cmd) = match &o.entrypoint {
            Some(e) if e.is_empty() => (Vec::new(), o.cmd.clone()),
            Some(e) => (vec![e.clone()], o.cmd.clone()),
            None => (
                img.entrypoint.clone().unwrap_or_default(),
                if o.cmd.is_empty() {
                    img.cmd.clone().unwrap_or_default()
                } else {
                    o.cmd.clone()
                },
            ),
        };
        if entrypoint.is_empty() && cmd.is_empty() {
            return Err(ContainerError::NoCommand);
        }
        let id = ContainerId::generate();
        // Docker: the short id, or the host's name when sharing the host's network or UTS
        // namespace.
        let hostname = o.hostname.clone().unwrap_or_else(|| {
            if o.network == NetworkMode::Host || o.security.uts_host {
                nix::unistd::gethostname()
                    .ok()
                    .and_then(|h| h.into_string().ok())
                    .unwrap_or_else(|| id.short().to_string())
            } else {
                id.short().to_string()
            }
        });
        let mut env = merge_env(&img.env, &o.env);
        if !env.iter().any(|e| e.starts_with("PATH=")) {
            env.insert(
                0,
                "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_string(),
            );
        }
        env = merge_env(&[format!("HOSTNAME={hostname}")], &env);
        if o.tty && !env.iter().any(|e| e.starts_with("TERM=")) {
            env.push("TERM=xterm".to_string());
        }
        let _lock = self.lock()?;
        let existing = self.list()?;
        let name = match &o.name {
            Some(n) => {
                if let Some(c) = existing.iter().find(|c| &c.config.name == n) {
                    return Err(ContainerError::NameConflict {
                        name: n.clone(),
                        id: c.config.id.to_string(),
                    });
                }
                n.clone()
            }
            None => {
                let mut attempt = 0;
                loop {
                    let n = generate_name(attempt);
                    if !existing.iter().any(|c| c.config.name == n) {
                        break n;
                    }
                    attempt += 1;
                }
            }
        };
        let config = ContainerConfig {
            id: id.clone(),
            name,
            created: Utc::now(),
            image: img.reference.clone(),
            image_id: img.id.clone(),
            layers: img.layers.clone(),
            entrypoint,
            cmd,
            env,
            user: o.user.clone().unwrap_or_else(|| img.user.clone()),
            working_dir: o.workdir.clone().unwrap_or_else(|| img.working_dir.clone()),
            hostname: hostname.clone(),
            tty: o.tty,
            open_stdin: o.open_stdin,
            ports: o.ports.clone(),
            volumes: o.volumes.clone(),
            network: o.network,
            stop_signal: o
                .stop_signal
                .clone()
                .or_else(|| img.stop_signal.clone())
                .unwrap_or_else(|| "SIGTERM".to_string()),
            stop_timeout: o.stop_timeout,
            auto_remove: o.auto_remove,
            driver: req.driver.clone(),
            runtime: o.runtime.clone(),
            resources: o.resources.clone(),
            net: o.net.clone(),
            security: o.security.clone(),
            restart: o.restart.clone(),
            init: o.init,
            healthcheck: super::health::HealthConfig::merge(
                img.healthcheck.as_ref(),
                &o.health,
                o.no_healthcheck,
            ),
            log_config: o.log.clone(),
            domainname: o.domainname.clone(),
            oom_score_adj: o.oom_score_adj,
            labels: img
                .labels
                .iter()
                .chain(&o.labels)
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        };
        let paths = self.paths(&id);
        let build = || -> Result<()> {
            for d in [
                paths.dir.clone(),
                paths.upper(),
                paths.work(),
                paths.rootfs(),
            ] {
                fs::create_dir_all(&d).map_err(io_at(&d))?;
            }
            build_init_layer(&paths.init_layer(), &config.layers)?;
            record::write_atomic(&paths.hostname(), format!("{hostname}\n").as_bytes())?;
            record::write_atomic(&paths.hosts(), hosts_file(&hostname, o.network).as_bytes())?;
            record::write_atomic(&paths.resolv_conf(), resolv_conf(o.network).as_bytes())?;
            // Docker: 0644, owned by root (the temp files they come from are 0600).
            for f in [paths.hostname(), paths.hosts(), paths.resolv_conf()] {
                fs::set_permissions(&f, fs::Permissions::from_mode(0o644)).map_err(io_at(&f))?;
            }
            record::write_json(&paths.state(), &ContainerState::default())?;
            // config.json last: a dir without it is not a container (list skips it).
            record::write_json(&paths.config(), &config)?;
            Ok(())
        };
        if let Err(e) = build() {
            let _ = fs::remove_dir_all(&paths.dir);
            return Err(e);
        }
        self.event(&config, "create");
        Ok(Container {
            config,
            state: ContainerState::default(),
            paths,
        })
    }

    pub(crate) fn write_state(&self, c: &Container) -> Result<()> {
        record::write_json(&c.paths.state(), &c.state)
    }

    /// A record says `running` but its supervisor is gone: kill what is left of the container,
    /// detach its mount and record the exit.
    pub(crate) fn reconcile(&self, c: &mut Container) -> Result<()> {
        if c.state.status != Status::Running
            || process_alive(c.state.supervisor_pid, c.state.supervisor_start)
        {
            return Ok(());
        }
        if c.state.pid > 0 {
            // PDEATHSIG normally took the init with the supervisor; make sure.
            let _ = kill(Pid::from_raw(c.state.pid), Signal::SIGKILL);
        }
        if !c.config.security.own_pid_namespace() {
            // No pid namespace took the rest along: its cgroup holds them.
            super::cgroup::kill_all(c.id());
        }
        force_unmount(&c.paths.rootfs())?;
        force_unmount(&c.paths.shm())?;
        super::cgroup::remove(c.id());
        // Rootless: its pasta and the bind mount of its network namespace.
        crate::rootless::reclaim_pasta(&c.paths.run_dir);
        // Its veth went with its namespace; its address and NAT rules are reclaimed here.
        crate::network::release_container(c.id().as_str());
        c.state.networks.clear();
        c.state.sandbox_key.clear();
        c.state.status = Status::Exited;
        c.state.pid = 0;
        if c.state.exit_code == 0 {
            c.state.exit_code = 137;
        }
        c.state.finished_at = Some(Utc::now());
        c.state.error = "supervisor exited unexpectedly".to_string();
        self.write_state(c)?;
        self.event_with(super::supervisor::die_event(c));
        Ok(())
    }

    /// Start the container's supervisor. `attach`: the supervisor inherits this process's stdio
    /// and stays in its process group (so terminal signals reach it), and the returned handle
    /// waits for it; otherwise it gets `/dev/null` and its own session and outlives the caller.
    /// Returns once the container's process runs (or failed to start).
    pub fn start(&self, c: &Container, launcher: &Launcher, attach: bool) -> Result<StartHandle> {
        if c.state.status == Status::Running {
            return Ok(StartHandle { child: None });
        }
        let (r, w) =
            nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| ContainerError::Sys {
                what: "pipe",
                source: e,
            })?;
        let mut cmd = Command::new(&launcher.exe);
        cmd.args(&launcher.args);
        if attach {
            cmd.arg("--attach");
        } else {
            cmd.stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null());
        }
        cmd.arg(c.id().as_str());
        let wfd = w.as_raw_fd();
        // SAFETY: the closure runs between fork and exec and only calls async-signal-safe
        // functions (dup2, setsid) on fds that exist in the child.
        unsafe {
            cmd.pre_exec(move || {
                let r = if wfd == 3 {
                    libc::fcntl(3, libc::F_SETFD, 0)
                } else {
                    libc::dup2(wfd, 3)
                };
                if r < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                if !attach {
                    libc::setsid();
                }
                Ok(())
            });
        }
        let mut child = cmd.spawn().map_err(|source| ContainerError::Spawn {
            exe: launcher.exe.clone(),
            source,
        })?;
        drop(w);
        let mut msg = String::new();
        let _ = File::from(r).read_to_string(&mut msg);
        let msg = msg.trim();
        if msg == "ok" {
            return Ok(StartHandle { child: Some(child) });
        }
        let _ = child.wait();
        match msg.split_once('\t') {
            Some((code, text)) => Err(ContainerError::Start {
                code: code.parse().unwrap_or(125),
                msg: text.to_string(),
            }),
            None => Err(ContainerError::SupervisorDied(c.id().to_string())),
        }
    }

    /// Send `sig` to the container's init.
    pub fn kill(&self, c: &Container, sig: Signal) -> Result<()> {
        if !c.state.status.can_kill() || c.state.pid <= 0 {
            if self.cancel_restart(c) {
                return Ok(());
            }
            return Err(ContainerError::NotRunning(c.id().to_string()));
        }
        super::restart::mark_manual_stop(c);
        kill(Pid::from_raw(c.state.pid), sig).map_err(|e| ContainerError::Sys {
            what: "kill",
            source: e,
        })?;
        self.event_with(
            Event::container(&c.config, "kill").attr("signal", (sig as i32).to_string()),
        );
        // A frozen container acts on no signal: stopping or killing it thaws it (as Docker).
        if matches!(sig, Signal::SIGKILL | Signal::SIGTERM)
            || sig.to_string() == c.config.stop_signal
        {
            super::manage::thaw(c.id());
        }
        Ok(())
    }

    /// The image's StopSignal, then SIGKILL after `timeout` seconds (default 10). Returns once
    /// the supervisor has recorded the exit.
    pub fn stop(&self, c: &Container, timeout: Option<u64>) -> Result<()> {
        self.stop_with(c, timeout, None)
    }

    /// [`Runtime::stop`] sending `signal` first instead of the container's stop signal
    /// (`stop --signal`).
    pub fn stop_with(
        &self,
        c: &Container,
        timeout: Option<u64>,
        signal: Option<Signal>,
    ) -> Result<()> {
        let was_running = c.is_running();
        self.stop_inner(c, timeout, signal)?;
        if was_running {
            self.event(&c.config, "stop");
        }
        Ok(())
    }

    /// `restart`: stop (as [`Runtime::stop_with`]), then start detached.
    pub fn restart(
        &self,
        c: &Container,
        timeout: Option<u64>,
        signal: Option<Signal>,
        launcher: &Launcher,
    ) -> Result<()> {
        self.stop_with(c, timeout, signal)?;
        let fresh = self.lookup(c.id().as_str())?;
        self.start(&fresh, launcher, false)?;
        self.event(&fresh.config, "restart");
        Ok(())
    }

    fn stop_inner(
        &self,
        c: &Container,
        timeout: Option<u64>,
        signal: Option<Signal>,
    ) -> Result<()> {
        if !c.is_running() {
            self.cancel_restart(c);
            return Ok(());
        }
        super::restart::mark_manual_stop(c);
        let sig = signal
            .unwrap_or_else(|| parse_signal(&c.config.stop_signal).unwrap_or(Signal::SIGTERM));
        let _ = self.kill(c, sig);
        let t = timeout.or(c.config.stop_timeout).unwrap_or(10);
        if self.wait_supervisor(c, Duration::from_secs(t)) {
            return Ok(());
        }
        let _ = self.kill(c, Signal::SIGKILL);
        if self.wait_supervisor(c, Duration::from_secs(10)) {
            return Ok(());
        }
        // The supervisor does not finish: take it down and clean up after it.
        let _ = kill(Pid::from_raw(c.state.supervisor_pid), Signal::SIGKILL);
        self.wait_supervisor(c, Duration::from_secs(5));
        let mut fresh = self.lookup(c.id().as_str())?;
        self.reconcile(&mut fresh)
    }

    /// Wait up to `limit` for the supervisor to exit. True if it did.
    fn wait_supervisor(&self, c: &Container, limit: Duration) -> bool {
        let (pid, start) = (c.state.supervisor_pid, c.state.supervisor_start);
        let deadline = Instant::now() + limit;
        let pidfd = pidfd_open(pid);
        if !process_alive(pid, start) {
            return true;
        }
        loop {
            let now = Instant::now();
            if now >= deadline {
                return !process_alive(pid, start);
            }
            let ms = (deadline - now).as_millis().min(200) as i32;
            match &pidfd {
                Some(fd) => {
                    let mut pfd = libc::pollfd {
                        fd: fd.as_raw_fd(),
                        events: libc::POLLIN,
                        revents: 0,
                    };
                    // SAFETY: one valid pollfd for the duration of the call.
                    unsafe { libc::poll(&mut pfd, 1, ms) };
                }
                None => std::thread::sleep(Duration::from_millis(ms as u64)),
            }
            if !process_alive(pid, start) {
                return true;
            }
        }
    }

    /// Block until the container is not running; returns its exit code.
    pub fn wait(&self, c: &Container) -> Result<i32> {
        if c.is_running() {
            while !self.wait_supervisor(c, Duration::from_secs(3600)) {}
        }
        match self.lookup(c.id().as_str()) {
            Ok(fresh) => Ok(fresh.state.exit_code),
            // Removed by --rm as it exited.
            Err(ContainerError::NoSuchContainer(_)) => Ok(c.state.exit_code),
            Err(e) => Err(e),
        }
    }

    /// Remove a container (`force`: kill it first if running).
    pub fn remove(&self, c: &Container, force: bool) -> Result<()> {
        if force {
            self.cancel_restart(c);
        }
        if c.is_running() {
            if !force {
                return Err(ContainerError::RunningRemove(c.id().to_string()));
            }
            let _ = self.kill(c, Signal::SIGKILL);
            if !self.wait_supervisor(c, Duration::from_secs(10)) {
                let _ = kill(Pid::from_raw(c.state.supervisor_pid), Signal::SIGKILL);
                self.wait_supervisor(c, Duration::from_secs(5));
            }
        }
        self.remove_files(c)
    }

    /// Delete the record and runtime state; refuses while the rootfs is still mounted.
    pub(crate) fn remove_files(&self, c: &Container) -> Result<()> {
        let rootfs = c.paths.rootfs();
        force_unmount(&rootfs)?;
        if is_mountpoint(&rootfs) {
            return Err(ContainerError::StillMounted {
                id: c.id().to_string(),
                path: rootfs,
            });
        }
        // A shareable `/dev/shm` a killed supervisor left mounted.
        force_unmount(&c.paths.shm())?;
        super::cgroup::remove(c.id());
        crate::rootless::reclaim_pasta(&c.paths.run_dir);
        // Concurrent removals of one container: the rename out of `containers/` decides which
        // one removes it; the others find no container, as Docker reports.
        let tomb =
            self.containers_dir()
                .join(format!(".removing-{}-{}", c.id(), std::process::id()));
        match fs::rename(&c.paths.dir, &tomb) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(ContainerError::NoSuchContainer(c.id().to_string()))
            }
            Err(e) => return Err(io_at(&c.paths.dir)(e)),
        }
        for d in [&c.paths.run_dir, &tomb] {
            match fs::remove_dir_all(d) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_at(d)(e)),
            }
        }
        self.sweep_tombstones();
        self.event(&c.config, "destroy");
        Ok(())
    }

    /// Finish removals a killed `rm` left half done (`.removing-<id>-<pid>` whose pid is gone).
    fn sweep_tombstones(&self) {
        let Ok(entries) = fs::read_dir(self.containers_dir()) else {
            return;
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(pid) = name
                .strip_prefix(".removing-")
                .and_then(|r| r.rsplit_once('-'))
                .and_then(|(_, p)| p.parse::<i32>().ok())
            else {
                continue;
            };
            if !Path::new(&format!("/proc/{pid}")).exists() {
                let _ = fs::remove_dir_all(e.path());
            }
        }
    }
}

fn pidfd_open(pid: i32) -> Option<OwnedFd> {
    if pid <= 0 {
        return None;
    }
    // SAFETY: pidfd_open takes a pid and flags; the returned fd is owned below.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return None;
    }
    // SAFETY: fd was just returned by the kernel and is owned by nobody else.
    Some(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// A started supervisor. For attached starts, [`StartHandle::wait`] returns the container's
/// exit code (the supervisor exits with it).
pub struct StartHandle {
    child: Option<Child>,
}

impl StartHandle {
    pub fn wait(mut self) -> Option<i32> {
        let status = self.child.take()?.wait().ok()?;
        use std::os::unix::process::ExitStatusExt;
        Some(match (status.code(), status.signal()) {
            (Some(c), _) => c,
            (None, Some(s)) => 128 + s,
            _ => 255,
        })
    }

    /// The supervisor's pid (attached starts).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }
}

/// `SIGTERM`, `TERM`, `15` → the signal.
pub fn parse_signal(s: &str) -> Result<Signal> {
    let bad = || ContainerError::InvalidSignal(s.to_string());
    if let Ok(n) = s.parse::<i32>() {
        return Signal::try_from(n).map_err(|_| bad());
    }
    let upper = s.to_ascii_uppercase();
    let name = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    name.parse::<Signal>().map_err(|_| bad())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_merging() {
        let base = vec!["PATH=/bin".to_string(), "A=1".to_string()];
        let got = merge_env(&base, &["A=2".to_string(), "B=3".to_string()]);
        assert_eq!(got, ["PATH=/bin", "A=2", "B=3"]);
        let got = merge_env(&base, &["STRATA_SURELY_UNSET_VAR".to_string()]);
        assert_eq!(got, base);
    }

    #[test]
    fn signals() {
        assert_eq!(parse_signal("SIGTERM").unwrap(), Signal::SIGTERM);
        assert_eq!(parse_signal("kill").unwrap(), Signal::SIGKILL);
        assert_eq!(parse_signal("9").unwrap(), Signal::SIGKILL);
        assert!(parse_signal("NOPE").is_err());
    }

    #[test]
    fn resolv_conf_drops_loopback_servers() {
        let r = resolv_conf(NetworkMode::Private);
        assert!(!r.contains("nameserver 127."));
        assert!(r.contains("nameserver"));
    }
}
