//! The container's process settings as an OCI runtime config (runtime-spec `config.json`), so
//! an external runtime (`runc`) can run the same bundle the built-in executor runs. Only the
//! fields strata uses are modelled; names follow the spec exactly.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::caps;
use super::devices::{self, DeviceRule, LinuxDevice};
use super::record::{ContainerConfig, NetworkMode, Paths, SeccompMode};
use super::seccomp::{LinuxSeccomp, Profile, SeccompError};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Spec {
    pub oci_version: String,
    pub process: Process,
    pub root: Root,
    pub hostname: String,
    /// `--domainname` (the UTS namespace's NIS domain name).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub domainname: String,
    pub mounts: Vec<Mount>,
    pub linux: Linux,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Process {
    pub terminal: bool,
    pub user: User,
    pub args: Vec<String>,
    pub env: Vec<String>,
    pub cwd: String,
    pub capabilities: Capabilities,
    pub no_new_privileges: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub console_size: Option<ConsoleSize>,
    /// `--init`: pid 1 stays a minimal reaper and runs `args` as its child (builtin runtime).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub init: bool,
    /// `--ulimit`: set before the user switch, in the init and every `exec`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rlimits: Vec<Rlimit>,
    /// `--oom-score-adj`: written to `/proc/self/oom_score_adj` before the user switch, in the
    /// init and every `exec`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oom_score_adj: Option<i32>,
}

/// One `process.rlimits` entry (`RLIMIT_NOFILE`, …); `u64::MAX` is unlimited.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rlimit {
    #[serde(rename = "type")]
    pub kind: String,
    pub hard: u64,
    pub soft: u64,
}

/// Initial terminal size (rows, columns).
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct ConsoleSize {
    pub height: u16,
    pub width: u16,
}

impl ConsoleSize {
    /// The size of the terminal on `fd`, if it is one.
    pub fn of_fd(fd: i32) -> Option<ConsoleSize> {
        // SAFETY: TIOCGWINSZ fills a winsize struct we own.
        unsafe {
            let mut ws: libc::winsize = std::mem::zeroed();
            (libc::ioctl(fd, libc::TIOCGWINSZ, &mut ws) == 0 && ws.ws_row > 0).then_some(
                ConsoleSize {
                    height: ws.ws_row,
                    width: ws.ws_col,
                },
            )
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct User {
    pub uid: u32,
    pub gid: u32,
    #[serde(default)]
    pub additional_gids: Vec<u32>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Capabilities {
    pub bounding: Vec<String>,
    pub effective: Vec<String>,
    pub inheritable: Vec<String>,
    pub permitted: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Root {
    pub path: String,
    pub readonly: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Mount {
    pub destination: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub source: String,
    pub options: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Linux {
    pub namespaces: Vec<Namespace>,
    pub masked_paths: Vec<String>,
    pub readonly_paths: Vec<String>,
    /// Nodes created in the container's `/dev` (`--device`).
    #[serde(default)]
    pub devices: Vec<LinuxDevice>,
    #[serde(default)]
    pub resources: LinuxResources,
    /// `None`: unconfined.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seccomp: Option<LinuxSeccomp>,
    /// Where an external runtime puts the container's cgroups (the same as ours).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cgroups_path: Option<String>,
    /// `--sysctl`: written under the container's `/proc/sys` before it turns read-only.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub sysctl: std::collections::BTreeMap<String, String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct LinuxResources {
    /// The device controller's rules, in order (the last match wins).
    #[serde(default)]
    pub devices: Vec<DeviceRule>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Namespace {
    #[serde(rename = "type")]
    pub kind: String,
    /// Join this namespace instead of creating one (a bridge network's sandbox, `container:`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
}

/// Docker's masked paths (moby `oci/defaults.go`).
pub const MASKED_PATHS: &[&str] = &[
    "/proc/asound",
    "/proc/acpi",
    "/proc/interrupts",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

/// Docker's read-only paths.
pub const READONLY_PATHS: &[&str] = &[
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

fn mount(dest: &str, kind: &str, source: &str, options: &[&str]) -> Mount {
    Mount {
        destination: dest.to_string(),
        kind: kind.to_string(),
        source: source.to_string(),
        options: options.iter().map(|s| s.to_string()).collect(),
    }
}

/// `/dev/shm`: a tmpfs of `--shm-size` (Docker's 64 MiB by default), or with `--ipc host` the
/// host's own `/dev/shm` (the host's IPC namespace's shared memory), as Docker binds it.
fn shm_mount(sec: &super::record::Security) -> Mount {
    if sec.ipc_host {
        return mount(
            "/dev/shm",
            "bind",
            "/dev/shm",
            &["rbind", "rprivate", "nosuid", "noexec", "nodev"],
        );
    }
    let size = match sec.shm_size {
        Some(bytes) if bytes > 0 => format!("size={bytes}"),
        _ => "size=65536k".to_string(),
    };
    mount(
        "/dev/shm",
        "tmpfs",
        "shm",
        &["nosuid", "noexec", "nodev", "mode=1777", &size],
    )
}

/// The spec's rlimit of a `--ulimit` (negative: unlimited).
fn rlimit(u: &super::runopts::Ulimit) -> Option<Rlimit> {
    let v = |n: i64| u64::try_from(n).unwrap_or(u64::MAX);
    Some(Rlimit {
        kind: super::runopts::rlimit_type(&u.name)?.to_string(),
        hard: v(u.hard),
        soft: v(u.soft),
    })
}

/// The seccomp section of a container with capability set `caps`.
fn seccomp_for(
    cfg: &ContainerConfig,
    caps: &[String],
) -> Result<Option<LinuxSeccomp>, SeccompError> {
    // Docker: --privileged runs unconfined, whatever the profile.
    if cfg.security.privileged {
        return Ok(None);
    }
    Ok(match &cfg.security.seccomp {
        SeccompMode::Unconfined => None,
        SeccompMode::Default => Some(Profile::docker_default().resolve(caps)),
        SeccompMode::Profile(json) => Some(Profile::parse(json.as_bytes())?.resolve(caps)),
    })
}

/// Build the spec of a container's init process. `user` is already resolved against the
/// container's `/etc/passwd` and `/etc/group`.
pub fn build(
    cfg: &ContainerConfig,
    paths: &Paths,
    user: User,
    env: Vec<String>,
) -> Result<Spec, SeccompError> {
    let sec = &cfg.security;
    let caps = caps::effective(&sec.cap_add, &sec.cap_drop, sec.privileged);
    let seccomp = seccomp_for(cfg, &caps)?;
    let sys_opts: &[&str] = if sec.privileged {
        &["nosuid", "noexec", "nodev"]
    } else {
        &["nosuid", "noexec", "nodev", "ro"]
    };
    let p = |path: &Path| path.to_string_lossy().into_owned();
    let mut mounts: Vec<Mount> = vec![
        mount("/proc", "proc", "proc", &["nosuid", "noexec", "nodev"]),
        mount(
            "/dev",
            "tmpfs",
            "tmpfs",
            &["nosuid", "strictatime", "mode=755", "size=65536k"],
        ),
        mount(
            "/dev/pts",
            "devpts",
            "devpts",
            &[
                "nosuid",
                "noexec",
                "newinstance",
                "ptmxmode=0666",
                "mode=0620",
                "gid=5",
            ],
        ),
        mount(
            "/dev/mqueue",
            "mqueue",
            "mqueue",
            &["nosuid", "noexec", "nodev"],
        ),
        mount("/sys", "sysfs", "sysfs", sys_opts),
        mount(
            "/etc/resolv.conf",
            "bind",
            &p(&paths.resolv_conf()),
            &["rbind", "rprivate"],
        ),
        mount(
            "/etc/hostname",
            "bind",
            &p(&paths.hostname()),
            &["rbind", "rprivate"],
        ),
        mount(
            "/etc/hosts",
            "bind",
            &p(&paths.hosts()),
            &["rbind", "rprivate"],
        ),
    ];
    if !sec.ipc_none {
        // Right after /dev/pts (before /dev/mqueue), where Docker mounts it.
        mounts.insert(3, shm_mount(sec));
    }
    for v in &cfg.volumes {
        let mut opts = vec!["rbind", "rprivate"];
        if v.read_only {
            opts.push("ro");
        }
        mounts.push(mount(&v.target, "bind", &p(&v.source), &opts));
    }
    for t in &sec.tmpfs {
        // Docker's defaults for --tmpfs; the user's options come after and win.
        let mut opts = vec!["noexec", "nosuid", "nodev"];
        opts.extend(t.options.iter().map(String::as_str));
        mounts.push(mount(&t.target, "tmpfs", "tmpfs", &opts));
    }
    let mut namespaces = vec!["mount"];
    // `--pid host`, `--ipc host`, `--uts host`: explicit requests to share the host's.
    for (kind, host) in [
        ("pid", sec.pid_host),
        ("ipc", sec.ipc_host),
        ("uts", sec.uts_host),
    ] {
        if !host {
            namespaces.push(kind);
        }
    }
    if cfg.network != NetworkMode::Host {
        namespaces.push("network");
    }
    let cwd = if cfg.working_dir.is_empty() {
        "/".to_string()
    } else {
        cfg.working_dir.clone()
    };
    let (masked, readonly): (&[&str], &[&str]) = if sec.privileged || sec.unmask_system_paths {
        (&[], &[])
    } else {
        (MASKED_PATHS, READONLY_PATHS)
    };
    let device_rules = if sec.privileged {
        devices::privileged_rules()
    } else {
        let mut rules = devices::default_rules(&sec.devices);
        // Checked when the container was created (`run`/`create` refuse a bad rule); a record
        // edited by hand since loses only the rule it broke, which allows nothing more.
        for r in &sec.device_cgroup_rules {
            match devices::parse_cgroup_rule(r) {
                Ok(rule) => rules.push(rule),
                Err(e) => log::warn!("{e}"),
            }
        }
        rules
    };
    Ok(Spec {
        oci_version: "1.0.2".to_string(),
        process: Process {
            terminal: cfg.tty,
            user,
            args: cfg.argv(),
            env,
            cwd,
            capabilities: Capabilities {
                bounding: caps.clone(),
                effective: caps.clone(),
                // Docker leaves it empty (CVE-2022-24769).
                inheritable: Vec::new(),
                permitted: caps,
            },
            no_new_privileges: true,
            console_size: None,
            init: cfg.init,
            rlimits: sec.ulimits.iter().filter_map(rlimit).collect(),
            oom_score_adj: (cfg.oom_score_adj != 0).then_some(cfg.oom_score_adj),
        },
        root: Root {
            path: p(&paths.rootfs()),
            readonly: sec.read_only,
        },
        // Sharing the host's UTS namespace: its name is not the container's to change.
        hostname: if sec.uts_host {
            String::new()
        } else {
            cfg.hostname.clone()
        },
        domainname: if sec.uts_host {
            String::new()
        } else {
            cfg.domainname.clone()
        },
        mounts,
        linux: Linux {
            namespaces: namespaces
                .into_iter()
                .map(|k| Namespace {
                    kind: k.to_string(),
                    path: None,
                })
                .collect(),
            masked_paths: masked.iter().map(|s| s.to_string()).collect(),
            readonly_paths: readonly.iter().map(|s| s.to_string()).collect(),
            devices: if sec.privileged {
                devices::host_devices()
            } else {
                sec.devices.iter().map(|d| d.node.clone()).collect()
            },
            resources: LinuxResources {
                devices: device_rules,
            },
            seccomp,
            cgroups_path: Some(format!("/strata/{}", cfg.id)),
            sysctl: sec.sysctls.clone(),
        },
    })
}

impl Spec {
    pub fn has_namespace(&self, kind: &str) -> bool {
        self.linux.namespaces.iter().any(|n| n.kind == kind)
    }

    /// The path of a namespace to join rather than create.
    pub fn namespace_path(&self, kind: &str) -> Option<&str> {
        self.linux
            .namespaces
            .iter()
            .find(|n| n.kind == kind)
            .and_then(|n| n.path.as_deref())
    }

    /// Make the network namespace the one at `path` (empty: keep a new one).
    pub fn join_network(&mut self, path: &str) {
        self.join_namespace("network", path);
    }

    /// `/dev/shm` becomes a bind of the host directory `source` (a shareable container's own
    /// tmpfs, or the one of the container whose IPC namespace this one joins), as Docker binds
    /// `ShmPath`.
    pub fn bind_shm(&mut self, source: &std::path::Path) {
        let m = mount(
            "/dev/shm",
            "bind",
            &source.to_string_lossy(),
            &["rbind", "rprivate", "nosuid", "noexec", "nodev"],
        );
        match self.mounts.iter_mut().find(|m| m.destination == "/dev/shm") {
            Some(slot) => *slot = m,
            None => self.mounts.push(m),
        }
    }

    /// Make the namespace of `kind` the one at `path` (empty: keep a new one).
    pub fn join_namespace(&mut self, kind: &str, path: &str) {
        if path.is_empty() {
            return;
        }
        for n in &mut self.linux.namespaces {
            if n.kind == kind {
                n.path = Some(path.to_string());
            }
        }
    }
}
