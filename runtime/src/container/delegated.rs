//! Rootless resource limits in a delegated cgroup subtree (podman's rule for a user: limits only
//! where the user owns cgroups). systemd's `Delegate=yes` hands `user@UID.service` to the user;
//! an administrator can chown a cgroup (its directory, `cgroup.procs`, `cgroup.subtree_control`,
//! `cgroup.threads`) the same way. The *delegation root* of a hierarchy is the topmost cgroup on
//! the path of this process's own cgroup (`/proc/self/cgroup`) that the user owns (inside the
//! user namespace: uid 0, with `cgroup.procs` writable); a container goes to
//! `<root>/strata/<id>`:
//! - on the unified (v2) hierarchy when it is delegated: the container is placed there, and
//!   `memory.max`, `pids.max`, `cpu.max` are written for the controllers the root offers
//!   (enabled in `<root>` and `<root>/strata`, which hold no processes themselves);
//! - on a delegated v1 hierarchy (`memory`, `pids`, `cpu`) for a limit the v2 one lacks — hybrid
//!   hosts bind those controllers to v1 (LXC's unprivileged containers use such chowned v1
//!   cgroups).
//!
//! A limit with no delegated home is ignored with Docker's one-line warning (the CLI's), never a
//! failure; one that has a home but cannot be written is an error.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use nix::unistd::{access, geteuid, AccessFlags};

use super::record::{ContainerId, Resources};

#[derive(Debug, thiserror::Error)]
pub enum DelegatedError {
    #[error("{0}")]
    Invalid(String),
    #[error("cannot apply resource limits in the delegated cgroup {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

fn at(path: &Path) -> impl FnOnce(io::Error) -> DelegatedError + '_ {
    move |source| DelegatedError::Write {
        path: path.to_path_buf(),
        source,
    }
}

/// A limit and where its controller is found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// `--memory`, `--memory-swap`, `--memory-reservation`.
    Memory,
    Pids,
    /// `--cpus` (the CFS quota).
    Cpu,
    /// `--cpu-shares` (v1 `cpu.shares`, v2 `cpu.weight`).
    CpuShares,
    /// `--cpuset-cpus`, `--cpuset-mems`.
    Cpuset,
}

/// runc's `ConvertCPUSharesToCgroupV2Value`: shares 2..262144 onto weight 1..10000.
pub fn cpu_weight(shares: i64) -> i64 {
    if shares == 0 {
        return 0;
    }
    1 + ((shares - 2) * 9999) / 262142
}

impl Limit {
    pub fn controller(self) -> &'static str {
        match self {
            Limit::Memory => "memory",
            Limit::Pids => "pids",
            Limit::Cpu | Limit::CpuShares => "cpu",
            Limit::Cpuset => "cpuset",
        }
    }

    /// The v1 file that proves a (non-top) cgroup of a hierarchy carries this controller.
    fn v1_probe(self) -> &'static str {
        match self {
            Limit::Memory => "memory.limit_in_bytes",
            Limit::Pids => "pids.max",
            Limit::Cpu => "cpu.cfs_quota_us",
            Limit::CpuShares => "cpu.shares",
            Limit::Cpuset => "cpuset.cpus",
        }
    }

    /// Docker's warning when the limit cannot be applied.
    pub fn warning(self) -> &'static str {
        match self {
            Limit::Memory => "WARNING: Your kernel does not support memory limit capabilities or the cgroup is not mounted. Limitation discarded.",
            Limit::Pids => "WARNING: Your kernel does not support PIDs limit capabilities or the cgroup is not mounted. PIDs limit discarded.",
            Limit::Cpu => "WARNING: Your kernel does not support CPU CFS scheduler or the cgroup is not mounted. CPU limits discarded.",
            Limit::CpuShares => "WARNING: Your kernel does not support CPU shares or the cgroup is not mounted. Shares discarded.",
            Limit::Cpuset => "WARNING: Your kernel does not support cpuset or the cgroup is not mounted. Cpuset discarded.",
        }
    }

    /// The v2 or v1 files and values for what `res` sets of this limit, in the order they are
    /// written to the container's cgroup `dir` (v1 memory: see `cgroup::memory_writes`).
    fn files(
        self,
        res: &Resources,
        v2: bool,
        dir: &Path,
    ) -> Result<Vec<(&'static str, String)>, DelegatedError> {
        Ok(match self {
            Limit::Memory if v2 => {
                let mut v = Vec::new();
                if let Some(m) = res.memory {
                    v.push(("memory.max", m.to_string()));
                }
                // runc's ConvertMemorySwapToCgroupV2Value: v2 limits swap alone.
                match (res.memory_swap, res.memory) {
                    (None, _) => {}
                    (Some(-1), _) => {
                        if dir.join("memory.swap.max").exists() {
                            v.push(("memory.swap.max", "max".into()));
                        }
                    }
                    (Some(s), Some(m)) => {
                        v.push(("memory.swap.max", (s - m as i64).max(0).to_string()))
                    }
                    (Some(_), None) => {
                        return Err(DelegatedError::Invalid(
                            "unable to set swap limit without memory limit".into(),
                        ))
                    }
                }
                if let Some(r) = res.memory_reservation {
                    v.push(("memory.low", r.to_string()));
                }
                v
            }
            Limit::Memory => {
                let memsw = dir
                    .parent()
                    .is_some_and(|p| p.join("memory.memsw.limit_in_bytes").exists())
                    .then_some("memory.memsw.limit_in_bytes");
                let current = fs::read_to_string(dir.join("memory.limit_in_bytes"))
                    .ok()
                    .and_then(|s| s.trim().parse().ok());
                super::cgroup::memory_writes(
                    res,
                    current,
                    "memory.limit_in_bytes",
                    memsw,
                    "memory.soft_limit_in_bytes",
                )
            }
            Limit::Pids => {
                let p = res.pids_limit.unwrap_or(0);
                let v = if p <= 0 { "max".into() } else { p.to_string() };
                vec![("pids.max", v)]
            }
            Limit::Cpu => {
                let quota = ((res.cpus.unwrap_or(0.0) * 100_000.0) as i64).to_string();
                if v2 {
                    vec![("cpu.max", format!("{quota} 100000"))]
                } else {
                    vec![
                        ("cpu.cfs_period_us", "100000".into()),
                        ("cpu.cfs_quota_us", quota),
                    ]
                }
            }
            Limit::CpuShares => {
                let s = res.cpu_shares.unwrap_or(0);
                if v2 {
                    vec![("cpu.weight", cpu_weight(s).to_string())]
                } else {
                    vec![("cpu.shares", s.to_string())]
                }
            }
            Limit::Cpuset => {
                let mut v = Vec::new();
                if let Some(c) = &res.cpuset_cpus {
                    v.push(("cpuset.cpus", c.clone()));
                }
                if let Some(m) = &res.cpuset_mems {
                    v.push(("cpuset.mems", m.clone()));
                }
                v
            }
        })
    }
}

/// The limits `res` asks for.
pub fn wanted(res: &Resources) -> Vec<Limit> {
    let mut v = Vec::new();
    if res.memory.is_some() || res.memory_swap.is_some() || res.memory_reservation.is_some() {
        v.push(Limit::Memory);
    }
    if res.pids_limit.is_some() {
        v.push(Limit::Pids);
    }
    if res.cpus.is_some() {
        v.push(Limit::Cpu);
    }
    if res.cpu_shares.is_some() {
        v.push(Limit::CpuShares);
    }
    if res.cpuset_cpus.is_some() || res.cpuset_mems.is_some() {
        v.push(Limit::Cpuset);
    }
    v
}

/// Whether swap is accounted where the container's memory limit goes (see
/// `cgroup::swap_supported`): the v2 delegation root's `memory.swap.max`, or v1 `memsw`.
pub fn swap_supported() -> bool {
    let l = layout();
    match l.home(Limit::Memory) {
        Some((root, true)) => root.join("memory.swap.max").exists(),
        Some((root, false)) => root.join("memory.memsw.limit_in_bytes").exists(),
        None => true,
    }
}

/// The delegated hierarchies this process can use.
#[derive(Debug, Default)]
pub struct Layout {
    /// The v2 delegation root and the controllers it offers.
    pub v2: Option<(PathBuf, Vec<String>)>,
    /// v1 delegation roots per limit.
    pub v1: Vec<(Limit, PathBuf)>,
}

impl Layout {
    /// Where `limit` would be applied: `(delegation root, v2?)`.
    fn home(&self, limit: Limit) -> Option<(&Path, bool)> {
        if let Some((root, ctrls)) = &self.v2 {
            if ctrls.iter().any(|c| c == limit.controller()) {
                return Some((root, true));
            }
        }
        self.v1
            .iter()
            .find(|(l, _)| *l == limit)
            .map(|(_, p)| (p.as_path(), false))
    }

    /// The limits of `res` that have no delegated home.
    pub fn ignored(&self, res: &Resources) -> Vec<Limit> {
        wanted(res)
            .into_iter()
            .filter(|l| self.home(*l).is_none())
            .collect()
    }

    /// Whether anything at all is delegated.
    pub fn any(&self) -> bool {
        self.v2.is_some() || !self.v1.is_empty()
    }
}

/// `id:controllers:path` lines of `/proc/<pid>/cgroup`.
fn cgroups_of(pid: &str) -> Vec<(String, PathBuf)> {
    fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let mut f = l.splitn(3, ':');
            let _id = f.next()?;
            let ctrls = f.next()?.to_string();
            let path = f.next()?;
            Some((ctrls, PathBuf::from(path)))
        })
        .collect()
}

/// Mount points of cgroup hierarchies: the v2 one, and v1 ones (named after their controllers).
fn hierarchies() -> (Option<PathBuf>, Vec<PathBuf>) {
    let mut v2 = None;
    let mut v1 = Vec::new();
    for m in strata_fs::mountinfo::mounts() {
        match m.fstype.as_str() {
            "cgroup2" if v2.is_none() => v2 = Some(m.mount_point),
            "cgroup" => v1.push(m.mount_point),
            _ => {}
        }
    }
    (v2, v1)
}

/// The user owns this cgroup: its directory is ours and we may move processes into it.
fn owned(dir: &Path) -> bool {
    fs::metadata(dir).is_ok_and(|m| {
        std::os::unix::fs::MetadataExt::uid(&m) == geteuid().as_raw()
            && access(&dir.join("cgroup.procs"), AccessFlags::W_OK).is_ok()
    })
}

/// The topmost owned cgroup on the way from the hierarchy root to `path` (`path` itself must be
/// owned).
fn delegation_root(mount: &Path, path: &Path) -> Option<PathBuf> {
    let rel = path.strip_prefix("/").unwrap_or(path);
    let mut best = None;
    for anc in rel.ancestors() {
        if anc.as_os_str().is_empty() {
            break;
        }
        let dir = mount.join(anc);
        if owned(&dir) {
            best = Some(dir);
        } else {
            break;
        }
    }
    best
}

/// The delegated hierarchies of this process (nothing for root of the initial namespace, which
/// uses the host's hierarchies directly).
pub fn layout() -> Layout {
    let mut out = Layout::default();
    if !crate::rootless::in_user_namespace() {
        return out;
    }
    let own = cgroups_of("self");
    let (v2_mount, v1_mounts) = hierarchies();
    if let Some(m) = v2_mount {
        if let Some((_, p)) = own.iter().find(|(c, _)| c.is_empty()) {
            if let Some(root) = delegation_root(&m, p) {
                let ctrls = fs::read_to_string(root.join("cgroup.controllers"))
                    .unwrap_or_default()
                    .split_whitespace()
                    .map(String::from)
                    .collect();
                out.v2 = Some((root, ctrls));
            }
        }
    }
    for limit in [
        Limit::Memory,
        Limit::Pids,
        Limit::Cpu,
        Limit::CpuShares,
        Limit::Cpuset,
    ] {
        let ctrl = limit.controller();
        let mount = v1_mounts.iter().find(|m| {
            m.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.split(',').any(|c| c == ctrl))
        });
        let path = own
            .iter()
            .find(|(c, _)| c.split(',').any(|c| c == ctrl))
            .map(|(_, p)| p);
        if let (Some(m), Some(p)) = (mount, path) {
            // The probe on the root itself: a hierarchy's top cgroup lacks e.g. pids.max.
            if let Some(root) = delegation_root(m, p).filter(|r| r.join(limit.v1_probe()).exists())
            {
                out.v1.push((limit, root));
            }
        }
    }
    out
}

/// The child of a delegation root that its own processes move to (podman and crun do the same)
/// when the root must hand a controller to its children.
pub const EVACUATED: &str = "init";

/// Enable `controller` for the children of the delegation root `root`. cgroup v2 lets a cgroup
/// that holds processes give no domain controller to its children ("no internal processes":
/// `EBUSY`); a caller that sits directly in the root (a login session chowned to the user, a
/// CI job's cgroup) has its processes there. Then every process of the root moves to
/// `<root>/init` first, as podman does, and the write is tried again.
pub fn enable(root: &Path, controller: &str) -> Result<(), DelegatedError> {
    let control = root.join("cgroup.subtree_control");
    let on = format!("+{controller}");
    match fs::write(&control, &on) {
        Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
            evacuate(root)?;
            write(&control, &on)
        }
        r => r.map_err(at(&control)),
    }
}

/// Move every process of `root` into `<root>/init` (a process that exits meanwhile is skipped).
fn evacuate(root: &Path) -> Result<(), DelegatedError> {
    let dest = root.join(EVACUATED);
    mkdir(&dest)?;
    let procs = dest.join("cgroup.procs");
    let own = root.join("cgroup.procs");
    let pids = fs::read_to_string(&own).map_err(at(&own))?;
    for pid in pids.lines().map(str::trim).filter(|p| !p.is_empty()) {
        match fs::write(&procs, pid) {
            Err(e) if e.raw_os_error() != Some(libc::ESRCH) => return Err(at(&procs)(e)),
            _ => {}
        }
    }
    Ok(())
}

/// Move the calling process (an `exec`'s relay, before it joins the container's namespaces)
/// into the container's delegated cgroups `files` (from [`procs_files_of`]). A session outside
/// the delegated subtree may not move a process there (cgroup v2 wants write access to the
/// common ancestor's `cgroup.procs`): then one warning line on stderr says which cgroup and
/// why, and the process runs outside it — never silently.
pub fn join(files: &[PathBuf]) {
    let pid = std::process::id().to_string();
    let failed: Vec<(&PathBuf, io::Error)> = files
        .iter()
        .filter_map(|f| fs::write(f, &pid).err().map(|e| (f, e)))
        .collect();
    if let Some((first, e)) = failed.first() {
        let dir = first.parent().unwrap_or(first);
        let more = match failed.len() {
            1 => String::new(),
            n => format!(" (and {} more)", n - 1),
        };
        let line = format!(
            "WARNING: exec: cannot join the container's cgroup {}{more}: {e}; the process runs outside its resource limits (run exec from a session inside the delegated cgroup subtree)\n",
            dir.display()
        );
        // One write(2) of the whole line: the relay is a forked child.
        let _ = nix::unistd::write(std::io::stderr(), line.as_bytes());
    }
}

fn write(path: &Path, value: &str) -> Result<(), DelegatedError> {
    fs::write(path, value).map_err(at(path))
}

fn mkdir(path: &Path) -> Result<(), DelegatedError> {
    match fs::create_dir(path) {
        Err(e) if e.kind() != io::ErrorKind::AlreadyExists => Err(at(path)(e)),
        _ => Ok(()),
    }
}

/// Create the container's cgroups in the delegated subtrees with `res` applied and move `pid`
/// into them. Limits without a delegated home are skipped (the CLI warned).
pub fn apply(id: &ContainerId, res: &Resources, pid: i32) -> Result<(), DelegatedError> {
    let l = layout();
    let wanted = wanted(res);
    if let Some((root, ctrls)) = &l.v2 {
        let parent = root.join("strata");
        mkdir(&parent)?;
        let here: Vec<Limit> = wanted
            .iter()
            .copied()
            .filter(|w| ctrls.iter().any(|c| c == w.controller()))
            .collect();
        for w in &here {
            enable(root, w.controller())?;
            write(
                &parent.join("cgroup.subtree_control"),
                &format!("+{}", w.controller()),
            )?;
        }
        let dir = parent.join(id.as_str());
        mkdir(&dir)?;
        for w in &here {
            for (file, value) in w.files(res, true, &dir)? {
                write(&dir.join(file), &value)?;
            }
        }
        write(&dir.join("cgroup.procs"), &pid.to_string())?;
    }
    for w in wanted {
        let Some((root, false)) = l.home(w) else {
            continue;
        };
        let dir = if w == Limit::Cpuset {
            // A new v1 cpuset cgroup takes no task before its CPUs and nodes are set.
            super::cgroup::fill_cpuset(root, &["strata", id.as_str()])
                .map_err(|e| DelegatedError::Invalid(e.to_string()))?
        } else {
            let parent = root.join("strata");
            mkdir(&parent)?;
            let dir = parent.join(id.as_str());
            mkdir(&dir)?;
            dir
        };
        for (file, value) in w.files(res, false, &dir)? {
            write(&dir.join(file), &value)?;
        }
        write(&dir.join("cgroup.procs"), &pid.to_string())?;
    }
    Ok(())
}

/// The `cgroup.procs` files of the cgroups the container's init `init` is in that differ from
/// ours (those `apply` made): an `exec`'s process is moved there (rootless; root's exec uses
/// `cgroup::join`).
pub fn procs_files_of(init: i32) -> Vec<PathBuf> {
    if !crate::rootless::in_user_namespace() {
        return Vec::new();
    }
    let (v2, v1) = hierarchies();
    let own = cgroups_of("self");
    let mut out = Vec::new();
    for (ctrls, path) in cgroups_of(&init.to_string()) {
        if own.iter().any(|(c, p)| *c == ctrls && *p == path) {
            continue;
        }
        let mount = if ctrls.is_empty() {
            v2.clone()
        } else {
            v1.iter()
                .find(|m| m.file_name().and_then(|n| n.to_str()) == Some(ctrls.as_str()))
                .cloned()
        };
        if let Some(m) = mount {
            let rel = path.strip_prefix("/").unwrap_or(&path);
            out.push(m.join(rel).join("cgroup.procs"));
        }
    }
    out
}

/// Remove the container's delegated cgroups (empty by now; a failure is left for the next try).
pub fn remove(id: &ContainerId) {
    let l = layout();
    let roots =
        l.v2.iter()
            .map(|(r, _)| r)
            .chain(l.v1.iter().map(|(_, r)| r));
    for root in roots {
        let _ = fs::remove_dir(root.join("strata").join(id.as_str()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::{Child, Command};

    /// A v2 cgroup under the hierarchy's top holding one `sleep`, and a domain controller the
    /// top offers enabled for it (the test runs as root; the rule it meets is the same for a
    /// delegated user). Drop kills the sleep, removes the cgroups and disables what it enabled.
    struct Scratch {
        top: PathBuf,
        root: PathBuf,
        ctrl: String,
        enabled_top: bool,
        sleep: Child,
    }

    impl Scratch {
        fn new() -> Scratch {
            let top = hierarchies().0.expect("no cgroup2 hierarchy mounted");
            let offered = fs::read_to_string(top.join("cgroup.controllers")).unwrap();
            // A domain controller: the "no internal processes" rule is about those.
            let ctrl = ["hugetlb", "memory", "pids", "io", "cpu"]
                .into_iter()
                .find(|c| offered.split_whitespace().any(|o| o == *c))
                .expect("the cgroup2 top offers no domain controller")
                .to_string();
            let before = fs::read_to_string(top.join("cgroup.subtree_control")).unwrap();
            let enabled_top = !before.split_whitespace().any(|c| c == ctrl);
            let root = top.join(format!("strata-ebusy-{}", std::process::id()));
            fs::create_dir(&root).unwrap();
            let sleep = Command::new("sleep").arg("60").spawn().unwrap();
            let mut s = Scratch {
                top,
                root,
                ctrl,
                enabled_top: false,
                sleep,
            };
            if enabled_top {
                fs::write(s.top.join("cgroup.subtree_control"), format!("+{}", s.ctrl)).unwrap();
                s.enabled_top = true;
            }
            fs::write(s.root.join("cgroup.procs"), s.sleep.id().to_string()).unwrap();
            s
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = self.sleep.kill();
            let _ = self.sleep.wait();
            let off = format!("-{}", self.ctrl);
            let _ = fs::write(self.root.join("cgroup.subtree_control"), &off);
            let _ = fs::remove_dir(self.root.join(EVACUATED));
            let _ = fs::remove_dir(&self.root);
            if self.enabled_top {
                let _ = fs::write(self.top.join("cgroup.subtree_control"), &off);
            }
        }
    }

    #[test]
    fn cpu_shares_to_weight_as_runc() {
        assert_eq!(cpu_weight(0), 0);
        assert_eq!(cpu_weight(2), 1);
        assert_eq!(cpu_weight(1024), 39);
        assert_eq!(cpu_weight(262144), 10000);
    }

    #[test]
    fn enable_moves_the_roots_own_processes_to_init_first() {
        let s = Scratch::new();
        let control = s.root.join("cgroup.subtree_control");
        // The kernel's rule, as the caller in a delegation root meets it.
        let e = fs::write(&control, format!("+{}", s.ctrl)).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EBUSY), "{e}");
        enable(&s.root, &s.ctrl).unwrap();
        assert!(fs::read_to_string(&control)
            .unwrap()
            .split_whitespace()
            .any(|c| c == s.ctrl));
        assert_eq!(fs::read_to_string(s.root.join("cgroup.procs")).unwrap(), "");
        let moved = fs::read_to_string(s.root.join(EVACUATED).join("cgroup.procs")).unwrap();
        assert_eq!(moved.trim(), s.sleep.id().to_string());
        // Enabled already: a second container's call is a no-op, not an error.
        enable(&s.root, &s.ctrl).unwrap();
    }
}
