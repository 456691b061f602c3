//! `run`/`create` flags that reach the container's init: `--ulimit`, `--shm-size`, `--sysctl`,
//! `--group-add` and the host namespaces (`--pid host`, `--ipc host`, `--uts host`). Parsed and
//! checked here (Docker's rules and words) before anything is created; applied by the init
//! (`init.rs`), the spec (`spec.rs`) and `exec`.

use serde::{Deserialize, Serialize};

use super::record::Security;

/// One `--ulimit NAME=SOFT[:HARD]`; `-1` is unlimited.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ulimit {
    pub name: String,
    pub soft: i64,
    pub hard: i64,
}

/// Docker's ulimit names and their resources (go-units `ulimitNameMapping`).
const ULIMITS: &[(&str, &str)] = &[
    ("core", "RLIMIT_CORE"),
    ("cpu", "RLIMIT_CPU"),
    ("data", "RLIMIT_DATA"),
    ("fsize", "RLIMIT_FSIZE"),
    ("locks", "RLIMIT_LOCKS"),
    ("memlock", "RLIMIT_MEMLOCK"),
    ("msgqueue", "RLIMIT_MSGQUEUE"),
    ("nice", "RLIMIT_NICE"),
    ("nofile", "RLIMIT_NOFILE"),
    ("nproc", "RLIMIT_NPROC"),
    ("rss", "RLIMIT_RSS"),
    ("rtprio", "RLIMIT_RTPRIO"),
    ("rttime", "RLIMIT_RTTIME"),
    ("sigpending", "RLIMIT_SIGPENDING"),
    ("stack", "RLIMIT_STACK"),
];

/// The OCI name (`RLIMIT_NOFILE`) of a Docker ulimit name.
pub fn rlimit_type(name: &str) -> Option<&'static str> {
    ULIMITS.iter().find(|(n, _)| *n == name).map(|(_, t)| *t)
}

/// The resource number of an OCI rlimit type.
// The constants' type is u32 with glibc, i32 with musl.
#[allow(clippy::unnecessary_cast)]
pub fn rlimit_resource(kind: &str) -> Option<u32> {
    Some(match kind {
        "RLIMIT_CORE" => libc::RLIMIT_CORE,
        "RLIMIT_CPU" => libc::RLIMIT_CPU,
        "RLIMIT_DATA" => libc::RLIMIT_DATA,
        "RLIMIT_FSIZE" => libc::RLIMIT_FSIZE,
        "RLIMIT_LOCKS" => libc::RLIMIT_LOCKS,
        "RLIMIT_MEMLOCK" => libc::RLIMIT_MEMLOCK,
        "RLIMIT_MSGQUEUE" => libc::RLIMIT_MSGQUEUE,
        "RLIMIT_NICE" => libc::RLIMIT_NICE,
        "RLIMIT_NOFILE" => libc::RLIMIT_NOFILE,
        "RLIMIT_NPROC" => libc::RLIMIT_NPROC,
        "RLIMIT_RSS" => libc::RLIMIT_RSS,
        "RLIMIT_RTPRIO" => libc::RLIMIT_RTPRIO,
        "RLIMIT_RTTIME" => libc::RLIMIT_RTTIME,
        "RLIMIT_SIGPENDING" => libc::RLIMIT_SIGPENDING,
        "RLIMIT_STACK" => libc::RLIMIT_STACK,
        _ => return None,
    } as u32)
}

/// A bad `run` flag of this module, in Docker's words.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RunOptError {
    #[error("invalid argument {arg:?} for \"--ulimit\" flag: invalid ulimit argument: {arg}")]
    UlimitArgument { arg: String },
    #[error("invalid argument {arg:?} for \"--ulimit\" flag: invalid ulimit type: {name}")]
    UlimitType { arg: String, name: String },
    #[error("invalid argument {arg:?} for \"--ulimit\" flag: strconv.ParseInt: parsing {value:?}: invalid syntax")]
    UlimitNumber { arg: String, value: String },
    #[error("invalid argument {arg:?} for \"--ulimit\" flag: too many limit value arguments - {values}, can only have up to two, `soft[:hard]`")]
    UlimitTooMany { arg: String, values: String },
    #[error("invalid argument {arg:?} for \"--ulimit\" flag: ulimit soft limit must be less than or equal to hard limit: {soft} > {hard}")]
    UlimitSoftOverHard { arg: String, soft: i64, hard: i64 },
    #[error("invalid argument {arg:?} for \"--shm-size\" flag: invalid size: '{arg}'")]
    ShmSize { arg: String },
    #[error("invalid argument {arg:?} for \"--sysctl\" flag: sysctl '{arg}' is not allowed")]
    SysctlNotAllowed { arg: String },
    #[error("sysctl {key:?} is not allowed in the hosts {ns} namespace")]
    SysctlHostNamespace { key: String, ns: &'static str },
    #[error("--{flag}: invalid {what} mode")]
    Mode {
        flag: &'static str,
        what: &'static str,
    },
    #[error("--pid {value} is not supported for rootless containers")]
    RootlessPidJoin { value: String },
    #[error("conflicting options: hostname and the UTS mode")]
    HostnameWithUtsHost,
    #[error("invalid argument {arg:?} for \"--group-add\" flag: empty group")]
    EmptyGroup { arg: String },
}

/// Parse `--ulimit NAME=SOFT[:HARD]` (go-units `ParseUlimit`: a missing hard limit is the soft
/// one; `-1` is unlimited).
pub fn parse_ulimit(arg: &str) -> Result<Ulimit, RunOptError> {
    let Some((name, values)) = arg.split_once('=') else {
        return Err(RunOptError::UlimitArgument { arg: arg.into() });
    };
    if rlimit_type(name).is_none() {
        return Err(RunOptError::UlimitType {
            arg: arg.into(),
            name: name.into(),
        });
    }
    let num = |v: &str| {
        v.parse::<i64>().map_err(|_| RunOptError::UlimitNumber {
            arg: arg.into(),
            value: v.into(),
        })
    };
    let parts: Vec<&str> = values.split(':').collect();
    let (soft, hard) = match parts.as_slice() {
        [soft] => {
            let s = num(soft)?;
            (s, s)
        }
        [soft, hard] => {
            let h = num(hard)?;
            (num(soft)?, h)
        }
        _ => {
            return Err(RunOptError::UlimitTooMany {
                arg: arg.into(),
                values: values.into(),
            })
        }
    };
    // Unlimited (-1, or any negative value: RLIM_INFINITY) is above every number.
    if hard >= 0 && (soft < 0 || soft > hard) {
        return Err(RunOptError::UlimitSoftOverHard {
            arg: arg.into(),
            soft,
            hard,
        });
    }
    Ok(Ulimit {
        name: name.into(),
        soft,
        hard,
    })
}

/// `--shm-size`: go-units `RAMInBytes` (`64m`, `1g`, `1.5g`, `1024`, `64MiB`, `64mb`); 0 or
/// absent means Docker's 64 MiB.
pub fn parse_shm_size(arg: &str) -> Result<u64, RunOptError> {
    crate::units::ram_in_bytes(arg).ok_or_else(|| RunOptError::ShmSize { arg: arg.into() })
}

/// The sysctls Docker's `ValidateSysctl` allows outright (IPC namespace).
const IPC_SYSCTLS: &[&str] = &[
    "kernel.msgmax",
    "kernel.msgmnb",
    "kernel.msgmni",
    "kernel.sem",
    "kernel.shmall",
    "kernel.shmmax",
    "kernel.shmmni",
    "kernel.shm_rmid_forced",
];

/// Which namespace a sysctl belongs to, if it is one a container may set.
fn sysctl_namespace(key: &str) -> Option<&'static str> {
    if IPC_SYSCTLS.contains(&key) || key.starts_with("fs.mqueue.") {
        Some("ipc")
    } else if key.starts_with("net.") {
        Some("network")
    } else if key == "kernel.domainname" {
        Some("uts")
    } else {
        None
    }
}

/// Parse `--sysctl KEY=VALUE`: only namespaced keys (Docker's allow-list), each component a
/// plain name (the key becomes a path under the container's `/proc/sys`).
pub fn parse_sysctl(arg: &str) -> Result<(String, String), RunOptError> {
    let bad = || RunOptError::SysctlNotAllowed { arg: arg.into() };
    let (key, value) = arg.split_once('=').ok_or_else(bad)?;
    if sysctl_namespace(key).is_none()
        || key
            .split('.')
            .any(|c| c.is_empty() || c == ".." || c.contains(['/', '\0']))
    {
        return Err(bad());
    }
    Ok((key.to_string(), value.to_string()))
}

/// `--pid`, `--ipc`, `--uts` value: `true` for `host`.
pub fn parse_ns_mode(flag: &'static str, value: &str) -> Result<bool, RunOptError> {
    let what = match flag {
        "pid" => "PID",
        "ipc" => "IPC",
        _ => "UTS",
    };
    match value {
        "" => Ok(false),
        "host" => Ok(true),
        "private" | "shareable" | "none" if flag == "ipc" => Ok(false),
        // Joined at start (`join_target`); the caller records the container.
        v if v.starts_with("container:") && flag != "uts" && v.len() > "container:".len() => {
            Ok(false)
        }
        _ => Err(RunOptError::Mode { flag, what }),
    }
}

/// The checks across flags Docker's daemon makes at create: sysctls of a namespace the
/// container shares with the host are refused; `--hostname` with `--uts host` too.
pub fn check(sec: &Security, host_network: bool, hostname: bool) -> Result<(), RunOptError> {
    if sec.uts_host && hostname {
        return Err(RunOptError::HostnameWithUtsHost);
    }
    for key in sec.sysctls.keys() {
        let shared = match sysctl_namespace(key) {
            Some("ipc") => sec.ipc_host,
            Some("network") => host_network,
            Some("uts") => sec.uts_host,
            _ => true,
        };
        if shared {
            return Err(RunOptError::SysctlHostNamespace {
                key: key.clone(),
                ns: sysctl_namespace(key).unwrap_or("kernel"),
            });
        }
    }
    Ok(())
}

/// The host pid of the init of the running container `id` whose `what` (`PID`, `IPC`)
/// namespace a container joins (Docker's words when it is not running).
pub fn join_target(
    rt: &super::Runtime,
    id: &str,
    what: &str,
) -> Result<i32, super::ContainerError> {
    let not_running = || super::ContainerError::Start {
        code: 125,
        msg: format!("cannot join {what} of a non running container: {id}"),
    };
    let other = rt.lookup(id).map_err(|_| not_running())?;
    if !other.is_running() || other.state.pid <= 0 {
        return Err(not_running());
    }
    Ok(other.state.pid)
}

/// `--group-add` values: a group name or number, checked for emptiness only (names are
/// resolved in the container's `/etc/group` at start).
pub fn parse_group(arg: &str) -> Result<String, RunOptError> {
    if arg.is_empty() {
        return Err(RunOptError::EmptyGroup { arg: arg.into() });
    }
    Ok(arg.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ulimits() {
        assert_eq!(
            parse_ulimit("nofile=1024:2048").unwrap(),
            Ulimit {
                name: "nofile".into(),
                soft: 1024,
                hard: 2048
            }
        );
        assert_eq!(parse_ulimit("core=-1").unwrap().hard, -1);
        assert_eq!(parse_ulimit("nproc=10").unwrap().hard, 10);
        assert!(matches!(
            parse_ulimit("nofile"),
            Err(RunOptError::UlimitArgument { .. })
        ));
        assert!(matches!(
            parse_ulimit("files=1"),
            Err(RunOptError::UlimitType { .. })
        ));
        assert!(matches!(
            parse_ulimit("nofile=x"),
            Err(RunOptError::UlimitNumber { .. })
        ));
        assert!(matches!(
            parse_ulimit("nofile=1:2:3"),
            Err(RunOptError::UlimitTooMany { .. })
        ));
        let e = parse_ulimit("nofile=20:10").unwrap_err().to_string();
        assert!(e.ends_with("ulimit soft limit must be less than or equal to hard limit: 20 > 10"));
        assert!(parse_ulimit("nofile=-1:10").is_err());
        assert!(parse_ulimit("nofile=10:-1").is_ok());
    }

    #[test]
    fn shm_sizes() {
        assert_eq!(parse_shm_size("64m").unwrap(), 64 << 20);
        assert_eq!(parse_shm_size("1g").unwrap(), 1 << 30);
        assert_eq!(parse_shm_size("128MiB").unwrap(), 128 << 20);
        assert_eq!(parse_shm_size("100").unwrap(), 100);
        assert!(parse_shm_size("lots").is_err());
        assert!(parse_shm_size("1x").is_err());
    }

    #[test]
    fn sysctls() {
        assert!(parse_sysctl("net.core.somaxconn=1024").is_ok());
        assert!(parse_sysctl("kernel.shmmax=1").is_ok());
        assert!(parse_sysctl("fs.mqueue.msg_max=20").is_ok());
        assert!(parse_sysctl("kernel.domainname=x").is_ok());
        let e = parse_sysctl("kernel.hostname=x").unwrap_err().to_string();
        assert!(
            e.ends_with("sysctl 'kernel.hostname=x' is not allowed"),
            "{e}"
        );
        assert!(parse_sysctl("vm.swappiness=1").is_err());
        assert!(parse_sysctl("net.core.somaxconn").is_err());
        assert!(parse_sysctl("net..x=1").is_err());
        assert!(parse_sysctl("net.a/b=1").is_err());
        let sec = Security {
            sysctls: [("net.core.somaxconn".to_string(), "1".to_string())].into(),
            ..Default::default()
        };
        let e = check(&sec, true, false).unwrap_err().to_string();
        assert_eq!(
            e,
            "sysctl \"net.core.somaxconn\" is not allowed in the hosts network namespace"
        );
        assert!(check(&sec, false, false).is_ok());
    }

    #[test]
    fn modes() {
        assert!(parse_ns_mode("pid", "host").unwrap());
        assert!(!parse_ns_mode("ipc", "shareable").unwrap());
        assert!(!parse_ns_mode("ipc", "private").unwrap());
        assert!(!parse_ns_mode("ipc", "none").unwrap());
        assert!(parse_ns_mode("pid", "none").is_err());
        assert_eq!(
            parse_ns_mode("pid", "private").unwrap_err().to_string(),
            "--pid: invalid PID mode"
        );
        assert!(parse_ns_mode("uts", "container:x").is_err());
        assert!(!parse_ns_mode("pid", "container:x").unwrap());
        assert!(parse_ns_mode("ipc", "container:").is_err());
        let sec = Security {
            uts_host: true,
            ..Default::default()
        };
        assert_eq!(
            check(&sec, false, true).unwrap_err().to_string(),
            "conflicting options: hostname and the UTS mode"
        );
    }
}
