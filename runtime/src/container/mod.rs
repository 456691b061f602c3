//! Containers: records, lifecycle, the per-container supervisor, exec, logs and published ports.
//!
//! Vocabulary:
//! - *record*: `<root>/containers/<id>/` with `config.json` (what to run, fixed at create) and
//!   `state.json` (the state machine `created → running → exited`), plus `upper/`, `work/`,
//!   `rootfs/` (mountpoint), `init/` (the init layer), `container.log` and the files
//!   bind-mounted as `/etc/hostname`, `/etc/hosts`, `/etc/resolv.conf`.
//! - *supervisor*: one process per running container, started by re-executing the `strata`
//!   binary (see [`Launcher`]); it mounts the rootfs through the storage driver (FUSE threads
//!   live in it), forks the init, writes logs, proxies ports, reaps the init, records the exit
//!   and unmounts. Its pid and start time are in `state.json`; a record saying `running` whose
//!   supervisor is gone is *reconciled* to `exited` (its init killed, its mount detached) by
//!   the next command that reads it.
//! - *init*: the container's first process, pid 1 of its own pid namespace.
//! - runtime state (`bundle/config.json`, the OCI spec) lives under `<runroot>/containers/<id>/`.

use std::path::{Path, PathBuf};

pub mod attach;
pub mod caps;
mod cgroup;
pub mod copy;
pub mod delegated;
pub mod devices;
pub mod exec;
pub mod health;
pub mod init;
pub mod inspect;
mod lifecycle;
pub mod logs;
pub mod manage;
mod oci;
pub mod ports;
pub mod reaper;
pub mod record;
pub mod restart;
pub mod runopts;
pub mod seccomp;
pub mod spec;
pub mod supervisor;
pub mod user;

pub use cgroup::{check as check_resources, limit_warnings, limits_ignored};
pub use lifecycle::{parse_signal, ContainerOptions, CreateRequest, ImageSource, StartHandle};
pub use record::{
    ContainerConfig, ContainerId, ContainerState, InvalidContainerId, NetworkMode, Paths,
    PortMapping, Resources, RuntimeKind, SeccompMode, Security, Status, TmpfsMount, VolumeMount,
};

use crate::driver::DriverError;

/// Errors of container operations. `Display` texts are Docker's where Docker has one.
#[derive(Debug, thiserror::Error)]
pub enum ContainerError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("corrupt container metadata {path}: {source}")]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("No such container: {0}")]
    NoSuchContainer(String),
    #[error("Conflict. The container name \"/{name}\" is already in use by container \"{id}\". You have to remove (or rename) that container to be able to reuse that name.")]
    NameConflict { name: String, id: String },
    #[error("Invalid container name ({0}), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed")]
    InvalidName(String),
    #[error("invalid port specification: \"{0}\"")]
    InvalidPort(String),
    #[error("invalid proto: {0}")]
    UnsupportedProto(String),
    #[error("Bind for {addr} failed: port is already allocated")]
    PortAllocated { addr: String },
    #[error("cannot bind {addr}: {source}")]
    Bind {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{msg}")]
    User { msg: String },
    #[error(transparent)]
    Driver(#[from] DriverError),
    #[error("Container {0} is not running")]
    NotRunning(String),
    #[error("You cannot remove a running container {0}. Stop the container before attempting removal or force remove")]
    RunningRemove(String),
    #[error("No command specified")]
    NoCommand,
    /// The container could not start; `code` is Docker's exit code for it (125/126/127).
    #[error("{msg}")]
    Start { code: i32, msg: String },
    #[error("the supervisor of container {0} exited before reporting")]
    SupervisorDied(String),
    #[error("cannot start the supervisor {exe}: {source}")]
    Spawn {
        exe: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid signal: {0}")]
    InvalidSignal(String),
    #[error("{what}: {source}")]
    Sys {
        what: &'static str,
        #[source]
        source: nix::Error,
    },
    #[error("{0}")]
    Cgroup(String),
    #[error("cannot remove container {id}: its rootfs is still mounted at {path}")]
    StillMounted { id: String, path: PathBuf },
    #[error("multiple containers found with provided prefix: {0}")]
    Ambiguous(String),
    #[error("Renaming a container with the same name as its current name")]
    SameName,
    #[error("Container {0} is already paused")]
    AlreadyPaused(String),
    #[error("Container {0} is not paused")]
    NotPaused(String),
    #[error("{0}")]
    InvalidRestartPolicy(String),
    /// Docker's wording for a refused `update` (daemon/update.go).
    #[error("Cannot update container {id}: {reason}")]
    CannotUpdate { id: String, reason: String },
}

pub(crate) fn io_at(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> ContainerError {
    let path = path.into();
    move |source| ContainerError::Io { path, source }
}

pub type Result<T, E = ContainerError> = std::result::Result<T, E>;

/// How to start a supervisor: the `strata` binary and the arguments that select its hidden
/// supervisor verb (the runtime appends `[--attach] <id>`).
#[derive(Debug, Clone)]
pub struct Launcher {
    pub exe: PathBuf,
    pub args: Vec<std::ffi::OsString>,
}

/// One container: its fixed config, its state (reconciled) and its paths.
#[derive(Debug, Clone)]
pub struct Container {
    pub config: ContainerConfig,
    pub state: ContainerState,
    pub paths: Paths,
}

impl Container {
    pub fn id(&self) -> &ContainerId {
        &self.config.id
    }
    pub fn name(&self) -> &str {
        &self.config.name
    }
    pub fn is_running(&self) -> bool {
        self.state.status == Status::Running
    }

    /// Where its rootfs is mounted on the host, while it runs and the mount is there
    /// (`strata mount`).
    pub fn mounted_rootfs(&self) -> Option<PathBuf> {
        let rootfs = self.paths.rootfs();
        (self.is_running() && crate::driver::is_mountpoint(&rootfs)).then_some(rootfs)
    }

    /// The layer stack its rootfs is mounted from: the init layer (mount targets, `/etc/hosts`
    /// & co.) on top of the image's layers, then its own upper and work dirs.
    pub fn layers(&self) -> crate::driver::Layers {
        let mut lowers = Vec::with_capacity(self.config.layers.len() + 1);
        lowers.push(self.paths.init_layer());
        lowers.extend(self.config.layers.iter().cloned());
        crate::driver::Layers {
            lowers,
            upper: self.paths.upper(),
            work: self.paths.work(),
        }
    }
}

/// A handle on the containers under one `--root`/`--runroot`.
#[derive(Debug, Clone)]
pub struct Runtime {
    root: PathBuf,
    runroot: PathBuf,
}

impl Runtime {
    pub fn new(root: &Path, runroot: &Path) -> Runtime {
        Runtime {
            root: root.to_path_buf(),
            runroot: runroot.to_path_buf(),
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn runroot(&self) -> &Path {
        &self.runroot
    }

    /// Record `action` on container `c` in the events log (never fails; see [`crate::events`]).
    pub(crate) fn event(&self, c: &ContainerConfig, action: &str) {
        self.event_with(crate::events::Event::container(c, action));
    }

    /// Record a container event built by the caller (extra attributes).
    pub(crate) fn event_with(&self, ev: crate::events::Event) {
        crate::events::record(&self.runroot, &ev);
    }

    pub(crate) fn containers_dir(&self) -> PathBuf {
        self.root.join("containers")
    }

    pub fn paths(&self, id: &ContainerId) -> Paths {
        Paths::new(&self.root, &self.runroot, id)
    }

    fn load(&self, id: &ContainerId) -> Result<Container> {
        let paths = self.paths(id);
        let config: ContainerConfig = record::read_json(&paths.config())?;
        let state: ContainerState = record::read_json(&paths.state()).unwrap_or_default();
        let mut c = Container {
            config,
            state,
            paths,
        };
        self.reconcile(&mut c)?;
        Ok(c)
    }

    /// Every container, newest first (reconciled).
    pub fn list(&self) -> Result<Vec<Container>> {
        let dir = self.containers_dir();
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_at(&dir)(e)),
        };
        let mut out = Vec::new();
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            // A record being created or removed right now may be half there: skip it.
            let Ok(id) = ContainerId::parse(&name) else {
                continue;
            };
            match self.load(&id) {
                Ok(c) => out.push(c),
                Err(ContainerError::Io { .. }) | Err(ContainerError::Json { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        out.sort_by_key(|c| std::cmp::Reverse(c.config.created));
        Ok(out)
    }

    /// Find a container by full id, name (with or without the leading `/`) or unique id prefix.
    pub fn lookup(&self, s: &str) -> Result<Container> {
        let key = s.strip_prefix('/').unwrap_or(s);
        if let Ok(id) = ContainerId::parse(key) {
            if let Ok(c) = self.load(&id) {
                return Ok(c);
            }
        }
        let all = self.list()?;
        if let Some(c) = all.iter().find(|c| c.config.name == key) {
            return Ok(c.clone());
        }
        if !key.is_empty() && key.chars().all(|c| c.is_ascii_hexdigit()) {
            let mut matches = all.iter().filter(|c| c.config.id.as_str().starts_with(key));
            if let Some(first) = matches.next() {
                if matches.next().is_some() {
                    return Err(ContainerError::Ambiguous(key.to_string()));
                }
                return Ok(first.clone());
            }
        }
        Err(ContainerError::NoSuchContainer(s.to_string()))
    }
}
