//! Capabilities: the kernel's names and numbers, Docker's default set and the `--cap-add`,
//! `--cap-drop` and `--privileged` arithmetic (moby `oci/caps`).

/// Every capability the kernel knows (capability.h, Linux 5.9+), by number.
pub const ALL: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

/// Docker's default set (moby `oci/caps/defaults.go`), in Docker's order.
pub const DEFAULT: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

#[derive(Debug, thiserror::Error)]
pub enum CapsError {
    /// Docker: `invalid CapAdd: unknown capability: "CAP_FOO"`.
    #[error("invalid {flag}: unknown capability: \"{name}\"")]
    Unknown { flag: &'static str, name: String },
}

/// The number of a `CAP_*` name.
pub fn number(name: &str) -> Option<u32> {
    ALL.iter().position(|n| *n == name).map(|i| i as u32)
}

/// `net_raw`, `NET_RAW`, `cap_net_raw` → `CAP_NET_RAW`; `all` → `ALL`.
fn normalize(flag: &'static str, name: &str) -> Result<String, CapsError> {
    let upper = name.to_ascii_uppercase();
    if upper == "ALL" {
        return Ok(upper);
    }
    let full = if upper.starts_with("CAP_") {
        upper
    } else {
        format!("CAP_{upper}")
    };
    if number(&full).is_none() {
        return Err(CapsError::Unknown { flag, name: full });
    }
    Ok(full)
}

/// Check and normalize `--cap-add`/`--cap-drop` values as `run` receives them.
pub fn normalize_list(flag: &'static str, names: &[String]) -> Result<Vec<String>, CapsError> {
    names.iter().map(|n| normalize(flag, n)).collect()
}

/// True if capability `n` is in this process's bounding set (prctl(2) `PR_CAPBSET_READ`).
fn in_bounding_set(n: u32) -> bool {
    // SAFETY: prctl with integer arguments.
    unsafe { libc::prctl(libc::PR_CAPBSET_READ, n as libc::c_ulong, 0, 0, 0) == 1 }
}

/// The capability set of a container: Docker's default set with `drop` removed and `add`
/// added (`ALL` in either means every capability); `privileged` means all. "All" is, as with
/// Docker, every capability the caller itself may hold (its bounding set), and so is the
/// default set: inside a container that was given fewer (podman's default has no `CAP_MKNOD`,
/// `CAP_NET_RAW`, `CAP_AUDIT_WRITE`) the default members it lacks are left out, since no
/// process can grant what it does not hold. An explicit `--cap-add` stays (and fails at start).
pub fn effective(add: &[String], drop: &[String], privileged: bool) -> Vec<String> {
    let all = || {
        ALL.iter()
            .enumerate()
            .filter(|(i, _)| in_bounding_set(*i as u32))
            .map(|(_, s)| s.to_string())
            .collect::<Vec<_>>()
    };
    if privileged {
        return all();
    }
    let has_all = |v: &[String]| v.iter().any(|c| c == "ALL");
    let mut set: Vec<String> = if has_all(drop) {
        Vec::new()
    } else if has_all(add) {
        all()
    } else {
        DEFAULT
            .iter()
            .filter(|c| number(c).is_some_and(in_bounding_set))
            .map(|s| s.to_string())
            .collect()
    };
    set.retain(|c| !drop.contains(c));
    for c in add {
        if c != "ALL" && !set.contains(c) {
            set.push(c.clone());
        }
    }
    if has_all(add) && has_all(drop) {
        // `--cap-drop ALL --cap-add ALL`: Docker keeps all.
        return all();
    }
    set
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &[&str]) -> Vec<String> {
        s.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn table() {
        assert_eq!(ALL.len(), 41);
        assert_eq!(number("CAP_SYS_ADMIN"), Some(21));
        assert_eq!(number("CAP_MKNOD"), Some(27));
        assert_eq!(number("CAP_CHECKPOINT_RESTORE"), Some(40));
        // Docker's default set is CapEff 00000000a80425fb.
        let mask: u64 = DEFAULT.iter().map(|c| 1u64 << number(c).unwrap()).sum();
        assert_eq!(mask, 0xa80425fb);
    }

    #[test]
    fn names_and_errors() {
        assert_eq!(
            normalize_list("CapAdd", &v(&["net_admin", "CAP_sys_ptrace", "all"])).unwrap(),
            v(&["CAP_NET_ADMIN", "CAP_SYS_PTRACE", "ALL"])
        );
        let e = normalize_list("CapAdd", &v(&["foo"])).unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid CapAdd: unknown capability: \"CAP_FOO\""
        );
    }

    #[test]
    fn arithmetic() {
        let d = effective(&[], &v(&["CAP_NET_RAW"]), false);
        assert_eq!(d.len(), 13);
        assert!(!d.contains(&"CAP_NET_RAW".to_string()));
        let a = effective(&v(&["CAP_SYS_ADMIN"]), &[], false);
        assert_eq!(a.len(), 15);
        assert_eq!(effective(&[], &v(&["ALL"]), false), Vec::<String>::new());
        assert_eq!(
            effective(&v(&["CAP_KILL"]), &v(&["ALL"]), false),
            v(&["CAP_KILL"])
        );
        let bounded = (0..41).filter(|n| in_bounding_set(*n)).count();
        assert_eq!(
            effective(&v(&["ALL"]), &v(&["CAP_KILL"]), false).len(),
            bounded - 1
        );
        assert_eq!(effective(&[], &[], true).len(), bounded);
    }
}
