//! Resource limits through cgroup v1 controllers (`memory`, `cpu`, `pids`), which is what works
//! on this kind of hybrid v1/v2 host. Best effort by design: nothing is created unless a limit
//! was asked for, and a limit that cannot be applied is a clear error, never silently dropped.

use std::fs;
use std::path::PathBuf;

use super::record::{ContainerId, Resources};
use super::ContainerError;

const BASE: &str = "/sys/fs/cgroup";
const CONTROLLERS: &[&str] = &["memory", "cpu", "pids", "freezer"];

fn dir(controller: &str, id: &ContainerId) -> PathBuf {
    PathBuf::from(BASE)
        .join(controller)
        .join("strata")
        .join(id.as_str())
}

fn write(
    controller: &str,
    id: &ContainerId,
    file: &str,
    value: &str,
) -> Result<(), ContainerError> {
    let d = dir(controller, id);
    fs::create_dir_all(&d).map_err(|e| {
        ContainerError::Cgroup(format!(
            "cannot apply resource limits: cgroup v1 controller {controller} unavailable ({}): {e}",
            d.display()
        ))
    })?;
    let p = d.join(file);
    fs::write(&p, value).map_err(|e| {
        ContainerError::Cgroup(format!("cannot write {value} to {}: {e}", p.display()))
    })
}

/// Create the container's cgroups with `res` applied and move `pid` into them.
pub fn apply(id: &ContainerId, res: &Resources, pid: i32) -> Result<(), ContainerError> {
    if crate::rootless::in_user_namespace() {
        return super::delegated::apply(id, res, pid)
            .map_err(|e| ContainerError::Cgroup(e.to_string()));
    }
    let mut used = Vec::new();
    if let Some(m) = res.memory {
        write("memory", id, "memory.limit_in_bytes", &m.to_string())?;
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
    if let Some(p) = res.pids_limit {
        let v = if p <= 0 {
            "max".to_string()
        } else {
            p.to_string()
        };
        write("pids", id, "pids.max", &v)?;
        used.push("pids");
    }
    for c in used {
        write(c, id, "cgroup.procs", &pid.to_string())?;
    }
    Ok(())
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
