//! Resource limits through cgroup v1 controllers (`memory`, `cpu`, `cpuset`, `pids`), which is
//! what works on this kind of hybrid v1/v2 host. Best effort by design: nothing is created
//! unless a limit was asked for, and a limit that cannot be applied (its controller missing
//! included) is a clear error, never silently dropped. [`check`] holds Docker's rules for the
//! values (daemon `verifyPlatformContainerResources`), run before anything is created or
//! changed.

use std::fs;
use std::path::{Path, PathBuf};

use super::record::{ContainerId, Resources};
use super::ContainerError;

const BASE: &str = "/sys/fs/cgroup";
const CONTROLLERS: &[&str] = &["memory", "cpu", "cpuset", "pids", "freezer"];

/// Docker's `linuxMinMemory`.
const MIN_MEMORY: u64 = 6 * 1024 * 1024;

fn dir(controller: &str, id: &ContainerId) -> PathBuf {
    PathBuf::from(BASE)
        .join(controller)
        .join("strata")
        .join(id.as_str())
}

/// The v1 hierarchy of `controller`, or the one-line error saying it is not there (an
/// unmounted controller's directory under a writable `/sys/fs/cgroup` tmpfs would otherwise
/// take plain files that limit nothing).
fn controller_root(controller: &str) -> Result<PathBuf, ContainerError> {
    let root = PathBuf::from(BASE).join(controller);
    if root.join("cgroup.procs").exists() {
        Ok(root)
    } else {
        Err(ContainerError::Cgroup(format!(
            "cannot apply resource limits: cgroup v1 controller {controller} is not mounted at {}",
            root.display()
        )))
    }
}

fn write(
    controller: &str,
    id: &ContainerId,
    file: &str,
    value: &str,
) -> Result<(), ContainerError> {
    controller_root(controller)?;
    let d = dir(controller, id);
    fs::create_dir_all(&d).map_err(|e| {
        ContainerError::Cgroup(format!(
            "cannot apply resource limits: cgroup v1 controller {controller} unavailable ({}): {e}",
            d.display()
        ))
    })?;
    write_file(&d.join(file), value)
}

fn write_file(p: &Path, value: &str) -> Result<(), ContainerError> {
    fs::write(p, value).map_err(|e| {
        ContainerError::Cgroup(format!("cannot write {value} to {}: {e}", p.display()))
    })
}

/// A new cpuset cgroup has empty `cpuset.cpus` and `cpuset.mems`, and no task may join it
/// until both are set: each level from the hierarchy's top down to the container's takes its
/// parent's where it has none.
pub(crate) fn fill_cpuset(top: &Path, levels: &[&str]) -> Result<PathBuf, ContainerError> {
    let mut parent = top.to_path_buf();
    for level in levels {
        let d = parent.join(level);
        fs::create_dir_all(&d).map_err(|e| {
            ContainerError::Cgroup(format!(
                "cannot apply resource limits: cgroup v1 controller cpuset unavailable ({}): {e}",
                d.display()
            ))
        })?;
        for f in ["cpuset.cpus", "cpuset.mems"] {
            let own = fs::read_to_string(d.join(f)).unwrap_or_default();
            if own.trim().is_empty() {
                let from = parent.join(f);
                let v = fs::read_to_string(&from).map_err(|e| {
                    ContainerError::Cgroup(format!("cannot read {}: {e}", from.display()))
                })?;
                write_file(&d.join(f), v.trim())?;
            }
        }
        parent = d;
    }
    Ok(parent)
}

/// The memory files of `res` in the order the kernel takes them (runc's): memory plus swap
/// may never be below memory, so when both change the one that keeps that true goes first,
/// judged against the cgroup's current memory limit (`current`). `memsw`: the swap file's
/// name; a -1 swap where the kernel has no swap accounting is left out (Docker's warning said
/// so).
pub(crate) fn memory_writes(
    res: &Resources,
    current: Option<u64>,
    limit: &'static str,
    memsw: Option<&'static str>,
    soft: &'static str,
) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    let mem = res.memory.map(|m| (limit, m.to_string()));
    let swap = match (res.memory_swap, memsw) {
        (Some(-1), None) | (None, _) => None,
        (Some(s), f) => Some((f.unwrap_or("memory.memsw.limit_in_bytes"), s.to_string())),
    };
    let swap_first = match (res.memory, res.memory_swap) {
        (Some(_), Some(-1)) => true,
        (Some(_), Some(s)) => current.is_some_and(|c| c < s as u64),
        _ => false,
    };
    if swap_first {
        out.extend(swap.clone());
        out.extend(mem);
    } else {
        out.extend(mem);
        out.extend(swap);
    }
    if let Some(r) = res.memory_reservation {
        out.push((soft, r.to_string()));
    }
    out
}

fn read_u64(p: &Path) -> Option<u64> {
    fs::read_to_string(p).ok()?.trim().parse().ok()
}

/// Create the container's cgroups with `res` applied and move `pid` into them.
pub fn apply(id: &ContainerId, res: &Resources, pid: i32) -> Result<(), ContainerError> {
    if crate::rootless::in_user_namespace() {
        return super::delegated::apply(id, res, pid)
            .map_err(|e| ContainerError::Cgroup(e.to_string()));
    }
    let mut used = Vec::new();
    if res.memory.is_some() || res.memory_swap.is_some() || res.memory_reservation.is_some() {
        controller_root("memory")?;
        let d = dir("memory", id);
        let memsw = d
            .parent()
            .and_then(|p| p.parent())
            .is_some_and(|top| top.join("memory.memsw.limit_in_bytes").exists())
            .then_some("memory.memsw.limit_in_bytes");
        // The current limit only matters in a cgroup that exists already (update).
        let current = read_u64(&d.join("memory.limit_in_bytes"));
        for (file, value) in memory_writes(
            res,
            current,
            "memory.limit_in_bytes",
            memsw,
            "memory.soft_limit_in_bytes",
        ) {
            write("memory", id, file, &value)?;
        }
        used.push("memory");
    }
    if let Some(c) = res.cpus {
        write("cpu", id, "cpu.cfs_period_us", "100000")?;
        write(
            "cpu",
            id,
            "cpu.cfs_quota_us",
            &((c * 100_000.0) as i64).to_string(),
        )?;
        used.push("cpu");
    }
    if let Some(s) = res.cpu_shares {
        write("cpu", id, "cpu.shares", &s.to_string())?;
        used.push("cpu");
    }
    if res.cpuset_cpus.is_some() || res.cpuset_mems.is_some() {
        let top = controller_root("cpuset")?;
        let d = fill_cpuset(&top, &["strata", id.as_str()])?;
        if let Some(c) = &res.cpuset_cpus {
            write_file(&d.join("cpuset.cpus"), c)?;
        }
        if let Some(m) = &res.cpuset_mems {
            write_file(&d.join("cpuset.mems"), m)?;
        }
        used.push("cpuset");
    }
    if let Some(p) = res.pids_limit {
        let v = if p <= 0 {
            "max".to_string()
        } else {
            p.to_string()
        };
        write("pids", id, "pids.max", &v)?;
        used.push("pids");
    }
    used.dedup();
    for c in used {
        write(c, id, "cgroup.procs", &pid.to_string())?;
    }
    Ok(())
}

/// Whether the kernel accounts swap where this container's memory limit goes (cgroup v1
/// `memory.memsw.*`, v2 `memory.swap.max`). Rootless without a delegated memory cgroup: true
/// (the memory limit itself is ignored with its own warning).
pub fn swap_supported() -> bool {
    if crate::rootless::in_user_namespace() {
        return super::delegated::swap_supported();
    }
    Path::new(BASE)
        .join("memory")
        .join("memory.memsw.limit_in_bytes")
        .exists()
}

/// Docker's `parsers.ParseUintListMaximum`: `0-3,5` into its numbers (`maximum` 0: no limit).
fn parse_uint_list(val: &str, maximum: usize) -> Result<Vec<usize>, String> {
    let mut out = Vec::new();
    if val.is_empty() {
        return Ok(out);
    }
    let invalid = || format!("invalid format: {val}");
    let num = |s: &str| -> Result<usize, String> {
        // Go's strconv.Atoi takes a sign; a negative number is no CPU either way.
        s.parse::<usize>().map_err(|_| invalid())
    };
    for r in val.split(',') {
        let (lo, hi) = match r.split_once('-') {
            None => {
                let v = num(r)?;
                (v, v)
            }
            Some((a, b)) => {
                let (lo, hi) = (num(a)?, num(b)?);
                if hi < lo {
                    return Err(invalid());
                }
                (lo, hi)
            }
        };
        if maximum != 0 && hi > maximum {
            return Err(format!("value of out range, maximum is {maximum}"));
        }
        out.extend(lo..=hi);
    }
    Ok(out)
}

/// Docker's `isCpusetListAvailable`.
fn cpuset_available(provided: &str, available: &str) -> Result<bool, String> {
    let avail = parse_uint_list(available, 0)?;
    let max = avail.len().max(8192);
    let wanted = parse_uint_list(provided, max)?;
    Ok(wanted.iter().all(|w| avail.contains(w)))
}

/// The CPUs (`cpus`) or memory nodes (`mems`) a container may be given: the cpuset
/// hierarchy's top (Docker's `sysinfo`), else what the kernel has online.
fn cpuset_of_host(what: &str) -> String {
    let (v1, v2, online) = match what {
        "cpus" => (
            "cpuset/cpuset.cpus",
            "cpuset.cpus.effective",
            "/sys/devices/system/cpu/online",
        ),
        _ => (
            "cpuset/cpuset.mems",
            "cpuset.mems.effective",
            "/sys/devices/system/node/online",
        ),
    };
    [
        Path::new(BASE).join(v1),
        Path::new(BASE).join(v2),
        PathBuf::from(online),
    ]
    .iter()
    .find_map(|p| {
        fs::read_to_string(p)
            .ok()
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
    })
    .unwrap_or_else(|| "0".to_string())
}

/// Docker's checks of the limits `res` asks for (`update`: of an update's flags), before
/// anything is created or changed: the error is Docker's message; the warnings (without
/// Docker's `WARNING: ` prefix) tell what was adjusted. For a new container (`!update`) a
/// memory limit without `--memory-swap` gets twice its value as memory plus swap (Docker's
/// `adaptContainerSettings`).
pub fn check(res: &mut Resources, update: bool) -> Result<Vec<String>, String> {
    let mut warnings = Vec::new();
    let memory = res.memory.unwrap_or(0);
    let swap = res.memory_swap.unwrap_or(0);
    if memory != 0 && memory < MIN_MEMORY {
        return Err("Minimum memory limit allowed is 6MB".into());
    }
    if memory > 0 && swap != -1 && !swap_supported() {
        warnings.push("Your kernel does not support swap limit capabilities or the cgroup is not mounted. Memory limited without swap.".into());
        res.memory_swap = Some(-1);
    }
    let swap = res.memory_swap.unwrap_or(0);
    if memory > 0 && swap > 0 && (swap as u64) < memory {
        return Err(
            "Minimum memoryswap limit should be larger than memory limit, see usage".into(),
        );
    }
    if memory == 0 && swap > 0 && !update {
        return Err(
            "You should always set the Memory limit when using Memoryswap limit, see usage".into(),
        );
    }
    let reservation = res.memory_reservation.unwrap_or(0);
    if reservation > 0 && reservation < MIN_MEMORY {
        return Err("Minimum memory reservation allowed is 6MB".into());
    }
    if memory > 0 && reservation > 0 && memory < reservation {
        return Err(
            "Minimum memory limit can not be less than memory reservation limit, see usage".into(),
        );
    }
    if let Some(c) = &res.cpuset_cpus {
        let avail = cpuset_of_host("cpus");
        match cpuset_available(c, &avail) {
            Err(e) => return Err(format!("Invalid value {c} for cpuset cpus: {e}")),
            Ok(false) => {
                return Err(format!(
                    "Requested CPUs are not available - requested {c}, available: {avail}"
                ))
            }
            Ok(true) => {}
        }
    }
    if let Some(m) = &res.cpuset_mems {
        let avail = cpuset_of_host("mems");
        match cpuset_available(m, &avail) {
            Err(e) => return Err(format!("Invalid value {m} for cpuset mems: {e}")),
            Ok(false) => {
                return Err(format!(
                    "Requested memory nodes are not available - requested {m}, available: {avail}"
                ))
            }
            Ok(true) => {}
        }
    }
    if !update && memory > 0 && res.memory_swap.is_none() {
        res.memory_swap = Some(2 * memory as i64);
    }
    Ok(warnings)
}

/// `update` of a running container: `res` (only the limits it sets) applied to its cgroups,
/// and every one of its processes `pids` moved into them (a controller the container had no
/// limit in until now has no cgroup of the container's yet; its children inherit it from here).
pub fn update(id: &ContainerId, res: &Resources, pids: &[i32]) -> Result<(), ContainerError> {
    if res.is_empty() {
        return Ok(());
    }
    for &pid in pids {
        apply(id, res, pid)?;
    }
    Ok(())
}

/// Join an existing container's cgroups (for `exec`), its device cgroup among them; missing
/// ones are skipped.
pub fn join(id: &ContainerId, pid: i32) {
    super::devices::join(id, pid);
    for c in CONTROLLERS {
        let p = dir(c, id).join("cgroup.procs");
        if p.exists() {
            let _ = fs::write(p, pid.to_string());
        }
    }
}

/// `--pid host`: make sure the init `pid` is in a cgroup of the container's own (the freezer's,
/// else one on the unified hierarchy) even without limits or device rules (`--privileged`), so
/// [`kill_all`] finds what it leaves behind. Rootless: nothing (no cgroup of ours to make).
pub fn track(id: &ContainerId, pid: i32) -> Result<(), ContainerError> {
    if crate::rootless::in_user_namespace() {
        return Ok(());
    }
    let freezer = PathBuf::from(BASE).join("freezer");
    if freezer.join("cgroup.procs").exists() {
        return write("freezer", id, "cgroup.procs", &pid.to_string());
    }
    let Some(dir) = super::devices::unified_dir(id) else {
        return Ok(());
    };
    fs::create_dir_all(&dir)
        .and_then(|_| fs::write(dir.join("cgroup.procs"), pid.to_string()))
        .map_err(|e| {
            ContainerError::Cgroup(format!("cannot track {pid} in {}: {e}", dir.display()))
        })
}

/// Kill every process left in the container's cgroups (its device cgroup and any resource
/// one): with `--pid host` no pid namespace ends with the init and takes them along, so this
/// is how they go with it, as Docker kills a container's cgroup. Repeats until the cgroups are
/// empty or a second has passed.
pub fn kill_all(id: &ContainerId) {
    let mut dirs: Vec<PathBuf> = CONTROLLERS.iter().map(|c| dir(c, id)).collect();
    dirs.push(super::devices::v1_dir(id));
    dirs.extend(super::devices::unified_dir(id));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(1);
    loop {
        let mut any = false;
        for d in &dirs {
            let Ok(procs) = fs::read_to_string(d.join("cgroup.procs")) else {
                continue;
            };
            for pid in procs
                .split_whitespace()
                .filter_map(|p| p.parse::<i32>().ok())
            {
                if pid > 0 {
                    any = true;
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
            }
        }
        if !any || std::time::Instant::now() >= deadline {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

/// Remove the container's cgroups (they must be empty; a failure is left for the next try).
pub fn remove(id: &ContainerId) {
    if crate::rootless::in_user_namespace() {
        super::delegated::remove(id);
        return;
    }
    super::devices::remove(id);
    for c in CONTROLLERS {
        let _ = fs::remove_dir(dir(c, id));
    }
}

/// Rootless and no delegated cgroup at all (see `delegated`): resource limits are ignored
/// (podman's behaviour; the CLI prints a one-line warning), never a failure.
pub fn limits_ignored() -> bool {
    crate::rootless::in_user_namespace() && !super::delegated::layout().any()
}

/// The warnings for limits of `res` that will be ignored: rootless without any delegated
/// cgroup, podman's one line; with one, Docker's line for each limit whose controller it lacks.
pub fn limit_warnings(res: &Resources) -> Vec<&'static str> {
    if !crate::rootless::in_user_namespace() || res.is_empty() {
        return Vec::new();
    }
    let l = super::delegated::layout();
    if !l.any() {
        return vec!["WARNING: Resource limits are not supported and ignored on rootless systems without cgroup delegation"];
    }
    l.ignored(res).into_iter().map(|x| x.warning()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_controller_that_is_not_mounted_is_a_one_line_error() {
        assert!(controller_root("memory").is_ok() || !Path::new(BASE).join("memory").exists());
        let e = controller_root("nosuch").unwrap_err().to_string();
        assert_eq!(
            e,
            "cannot apply resource limits: cgroup v1 controller nosuch is not mounted at /sys/fs/cgroup/nosuch"
        );
        assert!(!Path::new(BASE).join("nosuch").exists(), "nothing made");
    }

    #[test]
    fn uint_lists_as_docker_parses_them() {
        assert_eq!(parse_uint_list("0-2,5", 0).unwrap(), vec![0, 1, 2, 5]);
        assert_eq!(parse_uint_list("", 0).unwrap(), Vec::<usize>::new());
        for bad in ["1-0", "a", "0-", "-1", "1,,2", " 1"] {
            assert_eq!(
                parse_uint_list(bad, 0).unwrap_err(),
                format!("invalid format: {bad}")
            );
        }
        assert_eq!(
            parse_uint_list("9000", 8192).unwrap_err(),
            "value of out range, maximum is 8192"
        );
        assert_eq!(cpuset_available("1", "0-1"), Ok(true));
        assert_eq!(cpuset_available("0,2", "0-1"), Ok(false));
    }

    #[test]
    fn checks_and_defaults() {
        let mut r = Resources {
            memory: Some(64 << 20),
            ..Resources::default()
        };
        check(&mut r, false).unwrap();
        if swap_supported() {
            assert_eq!(r.memory_swap, Some(128 << 20), "Docker's default: twice");
        } else {
            assert_eq!(r.memory_swap, Some(-1));
        }
        // update: no default for the swap.
        let mut r = Resources {
            memory: Some(64 << 20),
            ..Resources::default()
        };
        check(&mut r, true).unwrap();
        assert!(r.memory_swap.is_none() || r.memory_swap == Some(-1));
        // update may set the swap alone; create may not.
        let mut r = Resources {
            memory_swap: Some(64 << 20),
            ..Resources::default()
        };
        assert!(check(&mut r.clone(), true).is_ok());
        assert_eq!(
            check(&mut r, false).unwrap_err(),
            "You should always set the Memory limit when using Memoryswap limit, see usage"
        );
        let mut r = Resources {
            memory: Some(5 << 20),
            ..Resources::default()
        };
        assert_eq!(
            check(&mut r, false).unwrap_err(),
            "Minimum memory limit allowed is 6MB"
        );
    }

    #[test]
    fn memory_and_swap_go_in_the_order_the_kernel_takes() {
        let r = Resources {
            memory: Some(100),
            memory_swap: Some(200),
            memory_reservation: Some(50),
            ..Resources::default()
        };
        let files = |cur| -> Vec<&str> {
            memory_writes(&r, cur, "m", Some("sw"), "soft")
                .into_iter()
                .map(|(f, _)| f)
                .collect()
        };
        // A new cgroup (no limit yet) or memory going down: memory first.
        assert_eq!(files(None), ["m", "sw", "soft"]);
        assert_eq!(files(Some(300)), ["m", "sw", "soft"]);
        // Memory plus swap going above the current memory limit: swap first.
        assert_eq!(files(Some(150)), ["sw", "m", "soft"]);
        // Unlimited swap: first; left out where the kernel has no swap accounting.
        let r = Resources {
            memory: Some(100),
            memory_swap: Some(-1),
            ..Resources::default()
        };
        assert_eq!(
            memory_writes(&r, None, "m", Some("sw"), "soft"),
            vec![("sw", "-1".to_string()), ("m", "100".to_string())]
        );
        assert_eq!(
            memory_writes(&r, None, "m", None, "soft"),
            vec![("m", "100".to_string())]
        );
    }
}
