//! Container records on disk: `<root>/containers/<id>/config.json` (what to run, fixed at
//! create) and `state.json` (the state machine, rewritten atomically by whoever changes it; in
//! place when the disk is full, see [`write_json`]).

use std::fs;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::ContainerError;
use crate::digest::ImageId;
use crate::driver::DriverKind;

/// A container's id: 64 lowercase hex digits. Made only by [`ContainerId::generate`] and
/// [`ContainerId::parse`]; on disk (record JSON, directory names) it is that string.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ContainerId(String);

/// A string that is not a container id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid container id {0:?}: want 64 lowercase hex digits")]
pub struct InvalidContainerId(pub String);

impl ContainerId {
    /// A fresh random id.
    pub fn generate() -> ContainerId {
        let mut buf = [0u8; 32];
        // getrandom(2) never fails for 32 bytes once the pool is initialized; fall back to time.
        if nix_getrandom(&mut buf).is_err() {
            let t =
                Utc::now().timestamp_nanos_opt().unwrap_or(0) as u128 ^ std::process::id() as u128;
            buf[..16].copy_from_slice(&t.to_le_bytes());
        }
        ContainerId(hex::encode(buf))
    }

    /// Parse a full id (64 lowercase hex digits; no prefixes, no names).
    pub fn parse(s: &str) -> Result<ContainerId, InvalidContainerId> {
        if s.len() == 64
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            Ok(ContainerId(s.to_string()))
        } else {
            Err(InvalidContainerId(s.to_string()))
        }
    }

    /// The 12-hex short form.
    pub fn short(&self) -> &str {
        &self.0[..12]
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for ContainerId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::str::FromStr for ContainerId {
    type Err = InvalidContainerId;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ContainerId::parse(s)
    }
}

impl Serialize for ContainerId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for ContainerId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        ContainerId::parse(&s).map_err(serde::de::Error::custom)
    }
}

fn nix_getrandom(buf: &mut [u8]) -> std::io::Result<()> {
    // SAFETY: buf is valid for buf.len() bytes.
    let n = unsafe { libc::getrandom(buf.as_mut_ptr().cast(), buf.len(), 0) };
    if n as usize == buf.len() {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Which runtime starts a container's process: the built-in one, or an OCI runtime (`runc`, a
/// name looked up on `PATH` or a path). Recorded as `builtin` or the runtime's name/path.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub enum RuntimeKind {
    #[default]
    Builtin,
    Oci(PathBuf),
}

impl RuntimeKind {
    /// `--runtime`'s value: `builtin` (or empty, in records made before runtimes had a name), or
    /// an OCI runtime.
    pub fn parse(s: &str) -> RuntimeKind {
        match s {
            "" | "builtin" => RuntimeKind::Builtin,
            other => RuntimeKind::Oci(PathBuf::from(other)),
        }
    }

    pub fn is_builtin(&self) -> bool {
        matches!(self, RuntimeKind::Builtin)
    }

    /// The OCI runtime's program, if this is one.
    pub fn oci_program(&self) -> Option<&Path> {
        match self {
            RuntimeKind::Builtin => None,
            RuntimeKind::Oci(p) => Some(p),
        }
    }

    /// Whether the runtime can give the container a terminal (`-t`): only the built-in one.
    pub fn supports_tty(&self) -> bool {
        self.is_builtin()
    }
}

impl std::fmt::Display for RuntimeKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RuntimeKind::Builtin => f.write_str("builtin"),
            RuntimeKind::Oci(p) => write!(f, "{}", p.display()),
        }
    }
}

impl Serialize for RuntimeKind {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for RuntimeKind {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(RuntimeKind::parse(&String::deserialize(d)?))
    }
}

/// An optional image ID written as today's records write it: the ID, or `""` for none.
mod image_id_or_empty {
    use serde::{Deserialize, Deserializer, Serializer};

    use crate::digest::ImageId;

    pub fn serialize<S: Serializer>(id: &Option<ImageId>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(id.as_ref().map_or("", |id| id.as_str()))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<ImageId>, D::Error> {
        let s = String::deserialize(d)?;
        if s.is_empty() {
            return Ok(None);
        }
        ImageId::parse(&s)
            .map(Some)
            .map_err(serde::de::Error::custom)
    }
}

/// `--network`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum NetworkMode {
    /// Own network namespace with loopback only (records made before bridge networking).
    Private,
    /// Share the host's network namespace.
    Host,
    /// Own network namespace, loopback only, no published ports.
    None,
    /// Own network namespace attached to bridge networks (`net.networks`; empty = `bridge`).
    #[default]
    Bridge,
    /// Join the network namespace of the container `net.container`.
    Container,
}

impl NetworkMode {
    /// The mode a `--network` value selects (a user network's name selects `Bridge`).
    pub fn parse(s: &str) -> Option<NetworkMode> {
        match s {
            "private" => Some(NetworkMode::Private),
            "host" => Some(NetworkMode::Host),
            "none" => Some(NetworkMode::None),
            "" => None,
            s if s.starts_with("container:") => Some(NetworkMode::Container),
            _ => Some(NetworkMode::Bridge),
        }
    }

    pub fn as_str(&self) -> &'static str {
        match self {
            NetworkMode::Private => "private",
            NetworkMode::Host => "host",
            NetworkMode::None => "none",
            NetworkMode::Bridge => "bridge",
            NetworkMode::Container => "container",
        }
    }
}

/// One network a container joins (`--network NAME --network-alias A --ip IP --ip6 IP6
/// --mac-address M`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointConfig {
    pub network: String,
    #[serde(default)]
    pub aliases: Vec<String>,
    #[serde(default)]
    pub ip: Option<std::net::Ipv4Addr>,
    #[serde(default)]
    pub mac: Option<String>,
    /// `--ip6`: the IPv6 address on a network with a user-given IPv6 subnet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip6: Option<std::net::Ipv6Addr>,
}

/// A legacy link: the linked container (resolved when the container is created) and the
/// alias it gets in this one's `/etc/hosts`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Link {
    pub id: String,
    pub name: String,
    pub alias: String,
}

/// Network settings of a container beyond its mode.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetSettings {
    /// Networks to join at start (`Bridge` mode); empty means the default `bridge`.
    #[serde(default)]
    pub networks: Vec<EndpointConfig>,
    /// `--dns`, `--dns-search`, `--add-host NAME:IP`.
    #[serde(default)]
    pub dns: Vec<String>,
    #[serde(default)]
    pub dns_search: Vec<String>,
    #[serde(default)]
    pub add_hosts: Vec<String>,
    /// `--link NAME[:ALIAS]`: legacy links (an `/etc/hosts` entry for each).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub links: Vec<Link>,
    /// `Container` mode: the id of the container whose network namespace is joined.
    #[serde(default)]
    pub container: String,
}

impl NetSettings {
    /// The networks joined at start, the default bridge when none was named.
    pub fn effective_networks(&self) -> Vec<EndpointConfig> {
        if self.networks.is_empty() {
            vec![EndpointConfig {
                network: "bridge".to_string(),
                ..Default::default()
            }]
        } else {
            self.networks.clone()
        }
    }
}

/// A container's endpoint on one network, as `inspect` shows it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointState {
    pub network_id: String,
    pub ip: String,
    pub prefix: u8,
    pub gateway: String,
    pub mac: String,
    #[serde(default)]
    pub aliases: Vec<String>,
    /// IPv6 (networks with `--ipv6`): address, prefix length and gateway; empty without.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub ip6: String,
    #[serde(default)]
    pub prefix6: u8,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub gateway6: String,
}

/// One `-p` mapping.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortMapping {
    pub host_ip: String,
    /// 0 = pick a free port when starting.
    pub host_port: u16,
    pub container_port: u16,
    pub proto: String,
}

/// One `-v HOST:CONTAINER[:ro]` bind mount.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeMount {
    pub source: PathBuf,
    pub target: String,
    pub read_only: bool,
    /// A named or anonymous volume (`source` is its `_data`), not a host path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume: Option<String>,
    /// An anonymous volume (removed by `rm -v`).
    #[serde(default)]
    pub anonymous: bool,
    /// `nocopy`: an empty volume is not filled with the image's content at `target`.
    #[serde(default)]
    pub nocopy: bool,
}

/// `--memory`, `--cpus`, `--pids-limit`, `--memory-swap`, `--memory-reservation`,
/// `--cpu-shares`, `--cpuset-cpus`, `--cpuset-mems` (`None`: not set; Docker's 0 / "").
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Resources {
    pub memory: Option<u64>,
    pub cpus: Option<f64>,
    pub pids_limit: Option<i64>,
    /// Memory plus swap in bytes; -1 unlimited swap. With `memory` and no value given, `create`
    /// records twice the memory (Docker's default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_swap: Option<i64>,
    /// The soft limit, in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_reservation: Option<u64>,
    /// The relative CPU weight (cgroup v1 `cpu.shares`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_shares: Option<i64>,
    /// CPUs the container may run on (`0-3`, `0,1`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpuset_cpus: Option<String>,
    /// Memory nodes the container may allocate from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpuset_mems: Option<String>,
}

impl Resources {
    pub fn is_empty(&self) -> bool {
        self.memory.is_none()
            && self.cpus.is_none()
            && self.pids_limit.is_none()
            && self.memory_swap.is_none()
            && self.memory_reservation.is_none()
            && self.cpu_shares.is_none()
            && self.cpuset_cpus.is_none()
            && self.cpuset_mems.is_none()
    }

    /// `update`: the values `new` sets replace ours; unset ones keep their values.
    pub fn merge(&mut self, new: &Resources) {
        let n = new.clone();
        self.memory = n.memory.or(self.memory);
        self.cpus = n.cpus.or(self.cpus);
        self.pids_limit = n.pids_limit.or(self.pids_limit);
        self.memory_swap = n.memory_swap.or(self.memory_swap);
        self.memory_reservation = n.memory_reservation.or(self.memory_reservation);
        self.cpu_shares = n.cpu_shares.or(self.cpu_shares);
        self.cpuset_cpus = n.cpuset_cpus.or(self.cpuset_cpus.take());
        self.cpuset_mems = n.cpuset_mems.or(self.cpuset_mems.take());
    }
}

/// `--security-opt seccomp=…`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SeccompMode {
    /// Docker's default profile.
    #[default]
    Default,
    Unconfined,
    /// A profile in Docker's JSON format (its text, checked at create).
    Profile(String),
}

/// One `--tmpfs PATH[:OPTIONS]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TmpfsMount {
    pub target: String,
    pub options: Vec<String>,
}

/// Confinement flags of `run` (Docker's defaults when empty).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Security {
    pub privileged: bool,
    /// Normalized `CAP_*` names (or `ALL`).
    pub cap_add: Vec<String>,
    pub cap_drop: Vec<String>,
    pub seccomp: SeccompMode,
    pub devices: Vec<super::devices::DeviceMapping>,
    /// `--device-cgroup-rule`, as given (checked at `run`): allow rules after the defaults.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub device_cgroup_rules: Vec<String>,
    pub read_only: bool,
    pub tmpfs: Vec<TmpfsMount>,
    /// `--security-opt systempaths=unconfined`: no masked or read-only paths under /proc and
    /// /sys (what strata nested in this container needs to mount a fresh /proc in its own user
    /// namespace: the kernel refuses that where a proc mount has locked mounts over files).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub unmask_system_paths: bool,
    /// `--ulimit`: set in the init and every `exec`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ulimits: Vec<super::runopts::Ulimit>,
    /// `--shm-size` in bytes (absent: Docker's 64 MiB).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shm_size: Option<u64>,
    /// `--sysctl`: written under the container's `/proc/sys` before it turns read-only.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub sysctls: std::collections::BTreeMap<String, String>,
    /// `--group-add`: group names (the container's `/etc/group`) or numbers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub group_add: Vec<String>,
    /// `--pid host`, `--ipc host`, `--uts host`: the host's namespace, not a new one.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub pid_host: bool,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub ipc_host: bool,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub uts_host: bool,
    /// `--pid container:X`, `--ipc container:X`: the id of the container whose namespace is
    /// joined.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub pid_container: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub ipc_container: String,
    /// `--ipc none`: an IPC namespace of its own and no `/dev/shm`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub ipc_none: bool,
    /// `--ipc shareable`: its `/dev/shm` is a tmpfs on the host side (`Paths::shm`), which
    /// containers started with `--ipc container:<this one>` bind as theirs.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub ipc_shareable: bool,
}

/// What to run: fixed when the container is created.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ContainerConfig {
    pub id: ContainerId,
    pub name: String,
    pub created: DateTime<Utc>,
    /// The image as the user named it (the `IMAGE` column of `ps`).
    pub image: String,
    /// The image's ID; `None` (written `""`) for a build step on `scratch`.
    #[serde(with = "image_id_or_empty")]
    pub image_id: Option<ImageId>,
    /// The image's layer dirs, top first.
    pub layers: Vec<PathBuf>,
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    pub env: Vec<String>,
    pub user: String,
    pub working_dir: String,
    pub hostname: String,
    pub tty: bool,
    pub open_stdin: bool,
    pub ports: Vec<PortMapping>,
    pub volumes: Vec<VolumeMount>,
    pub network: NetworkMode,
    pub stop_signal: String,
    pub stop_timeout: Option<u64>,
    pub auto_remove: bool,
    pub driver: DriverKind,
    pub runtime: RuntimeKind,
    pub resources: Resources,
    #[serde(default)]
    pub net: NetSettings,
    #[serde(default)]
    pub security: Security,
    /// `--restart`.
    #[serde(default)]
    pub restart: super::restart::RestartPolicy,
    /// `--init`: a minimal reaper runs as pid 1 and the command as its child.
    #[serde(default)]
    pub init: bool,
    /// The health check (image `HEALTHCHECK` with `--health-*` over it); absent = none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healthcheck: Option<super::health::HealthConfig>,
    /// The image's labels with `--label` over them.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub labels: std::collections::BTreeMap<String, String>,
    /// `--domainname`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub domainname: String,
    /// `--oom-score-adj` (0: the kernel's default, inherited).
    #[serde(default, skip_serializing_if = "is_default")]
    pub oom_score_adj: i32,
    /// `--log-driver` / `--log-opt` (json-file without rotation for records made before; not
    /// written when it is that default, so older records round-trip unchanged).
    #[serde(default, skip_serializing_if = "is_default")]
    pub log_config: super::logs::LogConfig,
}

/// `skip_serializing_if` for fields added to records later: written only when set, so older
/// records round-trip byte for byte.
pub(crate) fn is_default<T: Default + PartialEq>(v: &T) -> bool {
    *v == T::default()
}

impl Security {
    /// Whether the container's init is pid 1 of a pid namespace of its own (whose end takes
    /// every process of the container along).
    pub fn own_pid_namespace(&self) -> bool {
        !self.pid_host && self.pid_container.is_empty()
    }
}

impl ContainerConfig {
    /// The process argv: entrypoint + cmd.
    pub fn argv(&self) -> Vec<String> {
        self.entrypoint.iter().chain(&self.cmd).cloned().collect()
    }
}

/// The state machine: `created → running → exited` (and `exited → running` again on start).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    #[default]
    Created,
    Running,
    Exited,
}

impl Status {
    pub fn as_str(&self) -> &'static str {
        match self {
            Status::Created => "created",
            Status::Running => "running",
            Status::Exited => "exited",
        }
    }
    pub fn can_start(&self) -> bool {
        matches!(self, Status::Created | Status::Exited)
    }
    pub fn can_kill(&self) -> bool {
        matches!(self, Status::Running)
    }
    /// Without `--force`.
    pub fn can_delete(&self) -> bool {
        matches!(self, Status::Created | Status::Exited)
    }
}

/// What is happening now: rewritten atomically by the supervisor (and by the CLI when it finds
/// a supervisor dead).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ContainerState {
    pub status: Status,
    /// Host pid of the container's init (0 when not running).
    pub pid: i32,
    /// Host pid of the supervisor and its start time (clock ticks since boot), which together
    /// identify it even after pid reuse.
    pub supervisor_pid: i32,
    pub supervisor_start: u64,
    pub exit_code: i32,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    /// Ports as actually bound (host port 0 replaced by the one the kernel chose).
    pub ports: Vec<PortMapping>,
    /// Why the last start failed, if it did.
    pub error: String,
    pub restart_count: u32,
    /// Set by `stop`/`kill` so a killed container is not reported as crashed.
    pub stopped_by_user: bool,
    /// Endpoints by network name, while running.
    #[serde(default)]
    pub networks: std::collections::BTreeMap<String, EndpointState>,
    /// The network namespace's path while running (Docker's `SandboxKey`).
    #[serde(default)]
    pub sandbox_key: String,
}

/// Write `data` to `path` atomically ([`crate::fsutil::write_atomic`]: fsynced, with its dir).
pub fn write_atomic(path: &Path, data: &[u8]) -> Result<(), ContainerError> {
    crate::fsutil::write_atomic(path, data).map_err(|source| ContainerError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// Records are padded with spaces (still valid JSON: trailing whitespace) to whole blocks of this
/// size, so a record can be rewritten in place, in blocks it already owns.
const RECORD_BLOCK: usize = 4096;

/// Write a record (`config.json`, `state.json`) crash-safely: atomically (temp file, fsync,
/// rename). When the filesystem is full (a container filled its upper dir, which shares it) the
/// record is rewritten in place instead, within the blocks the previous version already owns —
/// no free space needed — so state changes such as the exit code are never lost to a full disk.
/// That in-place write is one `pwrite` of the whole padded record plus `fdatasync`; a crash
/// during it could tear it, which the reader sees as invalid JSON (it never sees a wrong but
/// valid record, because the new text is padded over the full old length).
pub fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<(), ContainerError> {
    let mut data = serde_json::to_vec_pretty(value).map_err(|source| ContainerError::Json {
        path: path.to_path_buf(),
        source,
    })?;
    data.push(b'\n');
    data.resize(data.len().div_ceil(RECORD_BLOCK) * RECORD_BLOCK, b' ');
    match write_atomic(path, &data) {
        Err(ContainerError::Io { source, .. }) if is_no_space(&source) => {
            rewrite_in_place(path, &data).map_err(|_| ContainerError::Io {
                path: path.to_path_buf(),
                source,
            })
        }
        other => other,
    }
}

fn is_no_space(e: &std::io::Error) -> bool {
    // `kind`, not only the errno: tempfile wraps its errors (with the path), keeping the kind.
    matches!(e.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT))
        || matches!(
            e.kind(),
            std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded
        )
}

/// Overwrite `path` from offset 0 with `data` padded to the file's current length; refuses
/// (without writing) when the file is shorter than `data`.
fn rewrite_in_place(path: &Path, data: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::FileExt;
    let f = fs::OpenOptions::new().write(true).open(path)?;
    let len = f.metadata()?.len() as usize;
    if data.len() > len {
        return Err(std::io::Error::from_raw_os_error(libc::ENOSPC));
    }
    let mut buf = data.to_vec();
    buf.resize(len, b' ');
    f.write_all_at(&buf, 0)?;
    f.sync_data()
}

/// Write JSON runtime state that need not survive a crash (the bundle under `--runroot`): temp
/// file and rename, no fsync.
pub fn write_json_volatile<T: Serialize>(path: &Path, value: &T) -> Result<(), ContainerError> {
    let data = serde_json::to_vec_pretty(value).map_err(|source| ContainerError::Json {
        path: path.to_path_buf(),
        source,
    })?;
    crate::fsutil::write_atomic_volatile(path, &data).map_err(|source| ContainerError::Io {
        path: path.to_path_buf(),
        source,
    })
}

pub fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T, ContainerError> {
    let data = fs::read(path).map_err(|source| ContainerError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    serde_json::from_slice(&data).map_err(|source| ContainerError::Json {
        path: path.to_path_buf(),
        source,
    })
}

/// The paths of one container.
#[derive(Debug, Clone)]
pub struct Paths {
    pub dir: PathBuf,
    pub run_dir: PathBuf,
}

impl Paths {
    pub fn new(root: &Path, runroot: &Path, id: &ContainerId) -> Paths {
        Paths {
            dir: root.join("containers").join(id.as_str()),
            run_dir: runroot.join("containers").join(id.as_str()),
        }
    }
    pub fn config(&self) -> PathBuf {
        self.dir.join("config.json")
    }
    pub fn state(&self) -> PathBuf {
        self.dir.join("state.json")
    }
    pub fn upper(&self) -> PathBuf {
        self.dir.join("upper")
    }
    pub fn work(&self) -> PathBuf {
        self.dir.join("work")
    }
    pub fn rootfs(&self) -> PathBuf {
        self.dir.join("rootfs")
    }
    /// `--ipc shareable`: the host-side tmpfs bound at the container's `/dev/shm` (mounted by
    /// the supervisor while the container runs).
    /// The runroot these paths are under (`run_dir` is `<runroot>/containers/<id>`): where the
    /// events log is.
    pub fn runroot(&self) -> Option<&Path> {
        self.run_dir.parent()?.parent()
    }
    pub fn shm(&self) -> PathBuf {
        self.run_dir.join("shm")
    }
    /// The init layer: empty mount targets (`/etc/hosts`, `/proc`, …) that sit between the image
    /// and the upper dir, so they never show in `diff`/`commit`.
    pub fn init_layer(&self) -> PathBuf {
        self.dir.join("init")
    }
    pub fn log(&self) -> PathBuf {
        self.dir.join("container.log")
    }
    pub fn hostname(&self) -> PathBuf {
        self.dir.join("hostname")
    }
    pub fn hosts(&self) -> PathBuf {
        self.dir.join("hosts")
    }
    pub fn resolv_conf(&self) -> PathBuf {
        self.dir.join("resolv.conf")
    }
    pub fn bundle(&self) -> PathBuf {
        self.run_dir.join("bundle")
    }
    /// Compiled seccomp programs shared by the containers of a runroot
    /// (`<runroot>/seccomp`).
    pub fn seccomp_cache(&self) -> PathBuf {
        self.run_dir
            .parent()
            .and_then(Path::parent)
            .map(|r| r.join("seccomp"))
            .unwrap_or_else(|| self.run_dir.join("seccomp"))
    }
}

/// Start time of a process in clock ticks since boot (field 22 of `/proc/<pid>/stat`).
pub fn process_start_time(pid: i32) -> Option<u64> {
    if pid <= 0 {
        return None;
    }
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may contain spaces and parentheses: split after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split(' ').nth(19)?.parse().ok()
}

/// True if the process `pid` that started at `start` still exists (and is not a zombie).
pub fn process_alive(pid: i32, start: u64) -> bool {
    let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    let Some(close) = stat.rfind(')') else {
        return false;
    };
    let rest = &stat[close + 2..];
    if rest.starts_with('Z') || rest.starts_with('X') {
        return false;
    }
    process_start_time(pid) == Some(start)
}

const ADJECTIVES: &[&str] = &[
    "admiring",
    "adoring",
    "agitated",
    "amazing",
    "angry",
    "awesome",
    "blissful",
    "bold",
    "boring",
    "brave",
    "busy",
    "charming",
    "clever",
    "compassionate",
    "competent",
    "confident",
    "cool",
    "cranky",
    "crazy",
    "dazzling",
    "determined",
    "dreamy",
    "eager",
    "ecstatic",
    "elastic",
    "elated",
    "elegant",
    "eloquent",
    "epic",
    "exciting",
    "fervent",
    "festive",
    "flamboyant",
    "focused",
    "friendly",
    "frosty",
    "funny",
    "gallant",
    "gifted",
    "goofy",
    "gracious",
    "great",
    "happy",
    "hardcore",
    "heuristic",
    "hopeful",
    "hungry",
    "infallible",
    "inspiring",
    "intelligent",
    "interesting",
    "jolly",
    "jovial",
    "keen",
    "kind",
    "laughing",
    "loving",
    "lucid",
    "magical",
    "modest",
    "musing",
    "mystifying",
    "naughty",
    "nervous",
    "nice",
    "nifty",
    "nostalgic",
    "objective",
    "optimistic",
    "peaceful",
    "pedantic",
    "pensive",
    "practical",
    "priceless",
    "quirky",
    "quizzical",
    "relaxed",
    "reverent",
    "romantic",
    "sad",
    "serene",
    "sharp",
    "silly",
    "sleepy",
    "stoic",
    "strange",
    "stupefied",
    "suspicious",
    "sweet",
    "tender",
    "thirsty",
    "trusting",
    "unruffled",
    "upbeat",
    "vibrant",
    "vigilant",
    "vigorous",
    "wizardly",
    "wonderful",
    "xenodochial",
    "youthful",
    "zealous",
    "zen",
];

const SURNAMES: &[&str] = &[
    "albattani",
    "allen",
    "archimedes",
    "babbage",
    "banach",
    "bardeen",
    "bartik",
    "bell",
    "bhabha",
    "blackwell",
    "bohr",
    "booth",
    "borg",
    "bose",
    "brahmagupta",
    "brattain",
    "brown",
    "carson",
    "cerf",
    "chandrasekhar",
    "clarke",
    "cohen",
    "curie",
    "darwin",
    "davinci",
    "diffie",
    "dijkstra",
    "einstein",
    "elion",
    "engelbart",
    "euclid",
    "euler",
    "faraday",
    "fermat",
    "fermi",
    "feynman",
    "franklin",
    "galileo",
    "gates",
    "goldberg",
    "goodall",
    "hamilton",
    "hawking",
    "heisenberg",
    "hertz",
    "hodgkin",
    "hoover",
    "hopper",
    "hugle",
    "hypatia",
    "jackson",
    "jang",
    "jennings",
    "jepsen",
    "johnson",
    "joliot",
    "kalam",
    "kapitsa",
    "keller",
    "kepler",
    "khorana",
    "kilby",
    "knuth",
    "lalande",
    "lamarr",
    "lamport",
    "leakey",
    "leavitt",
    "lederberg",
    "lovelace",
    "lumiere",
    "mahavira",
    "mayer",
    "mccarthy",
    "mcclintock",
    "meitner",
    "mendel",
    "merkle",
    "mirzakhani",
    "morse",
    "murdock",
    "napier",
    "newton",
    "nobel",
    "noether",
    "pare",
    "pascal",
    "pasteur",
    "payne",
    "perlman",
    "pike",
    "poincare",
    "ptolemy",
    "raman",
    "ramanujan",
    "ride",
    "ritchie",
    "rosalind",
    "saha",
    "sammet",
    "shamir",
    "shannon",
    "shirley",
    "shockley",
    "sinoussi",
    "snyder",
    "stallman",
    "swanson",
    "swartz",
    "tesla",
    "thompson",
    "torvalds",
    "turing",
    "varahamihira",
    "visvesvaraya",
    "volhard",
    "wescoff",
    "wiles",
    "williams",
    "wilson",
    "wing",
    "wozniak",
    "wright",
    "yalow",
    "yonath",
];

/// A Docker-style random name such as `focused_turing` (`attempt > 0` appends a digit, as
/// Docker does on a collision).
pub fn generate_name(attempt: u32) -> String {
    let mut b = [0u8; 4];
    let _ = nix_getrandom(&mut b);
    let a = ADJECTIVES[(u16::from_le_bytes([b[0], b[1]]) as usize) % ADJECTIVES.len()];
    let s = SURNAMES[(u16::from_le_bytes([b[2], b[3]]) as usize) % SURNAMES.len()];
    if attempt == 0 {
        format!("{a}_{s}")
    } else {
        format!("{a}_{s}{}", b[0] % 10)
    }
}

/// Docker's rule for `--name`: `[a-zA-Z0-9][a-zA-Z0-9_.-]+`.
pub fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphanumeric())
        && name.len() >= 2
        && chars.all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_64_hex_and_unique() {
        let a = ContainerId::generate();
        let b = ContainerId::generate();
        assert_eq!(a.0.len(), 64);
        assert!(a.0.chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
        assert_eq!(a.short().len(), 12);
        assert_eq!(ContainerId::parse(a.as_str()), Ok(a.clone()));
        assert!(ContainerId::parse(&a.as_str()[..63]).is_err());
        assert!(ContainerId::parse(&a.as_str().to_uppercase()).is_err());
        assert!(serde_json::from_str::<ContainerId>("\"web\"").is_err());
    }

    #[test]
    fn runtime_kinds_round_trip() {
        for (text, kind) in [
            ("builtin", RuntimeKind::Builtin),
            ("runc", RuntimeKind::Oci("runc".into())),
            ("/usr/sbin/runc", RuntimeKind::Oci("/usr/sbin/runc".into())),
        ] {
            assert_eq!(RuntimeKind::parse(text), kind);
            assert_eq!(kind.to_string(), text);
            assert_eq!(serde_json::to_string(&kind).unwrap(), format!("\"{text}\""));
        }
        assert_eq!(RuntimeKind::parse(""), RuntimeKind::Builtin);
        assert!(!RuntimeKind::parse("runc").supports_tty());
    }

    /// Records written by the release before typed identities (`cli/tests/data/store-v0.1`,
    /// generated with that release's binary) read into the typed records and write back
    /// byte for byte: every driver spec form, both runtime kinds.
    #[test]
    fn records_of_the_previous_release_round_trip_byte_for_byte() {
        let dir =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../cli/tests/data/store-v0.1/containers");
        let mut seen = Vec::new();
        for entry in fs::read_dir(&dir).unwrap() {
            let entry = entry.unwrap();
            let id = ContainerId::parse(&entry.file_name().to_string_lossy()).unwrap();
            let tmp = tempfile::tempdir().unwrap();
            let config_bytes = fs::read(entry.path().join("config.json")).unwrap();
            let config: ContainerConfig = read_json(&entry.path().join("config.json")).unwrap();
            assert_eq!(config.id, id);
            write_json(&tmp.path().join("config.json"), &config).unwrap();
            assert_eq!(
                String::from_utf8(fs::read(tmp.path().join("config.json")).unwrap()).unwrap(),
                String::from_utf8(config_bytes).unwrap()
            );
            let state_bytes = fs::read(entry.path().join("state.json")).unwrap();
            let state: ContainerState = read_json(&entry.path().join("state.json")).unwrap();
            write_json(&tmp.path().join("state.json"), &state).unwrap();
            assert_eq!(
                fs::read(tmp.path().join("state.json")).unwrap(),
                state_bytes
            );
            seen.push((
                config.name.clone(),
                config.driver.clone(),
                config.runtime.clone(),
            ));
        }
        seen.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(
            seen,
            vec![
                (
                    "fix-fuse".to_string(),
                    DriverKind::Fuse,
                    RuntimeKind::Builtin
                ),
                (
                    "fix-mp".to_string(),
                    DriverKind::MountProgram(Some("/usr/local/bin/strata-overlay".into())),
                    RuntimeKind::Oci("runc".into())
                ),
                ("fix-vfs".to_string(), DriverKind::Vfs, RuntimeKind::Builtin),
            ]
        );
    }

    #[test]
    fn names() {
        let n = generate_name(0);
        assert!(n.contains('_') && valid_name(&n), "{n}");
        assert!(valid_name("web-1.x_y"));
        assert!(!valid_name("-web"));
        assert!(!valid_name("a"));
        assert!(!valid_name("we b"));
    }

    #[test]
    fn state_machine() {
        assert!(Status::Created.can_start() && Status::Exited.can_start());
        assert!(!Status::Running.can_start());
        assert!(Status::Running.can_kill() && !Status::Exited.can_kill());
        assert!(!Status::Running.can_delete() && Status::Exited.can_delete());
    }

    #[test]
    fn own_start_time_is_readable() {
        let me = std::process::id() as i32;
        let t = process_start_time(me).unwrap();
        assert!(process_alive(me, t));
        assert!(!process_alive(me, t + 1));
    }
}
