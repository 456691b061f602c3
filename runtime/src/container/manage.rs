//! Everyday verbs on an existing container: `rename`, `update` (limits and restart policy, live
//! for a running container), `pause`/`unpause` (the cgroup v1 freezer),
//! the container's processes (`top`), resource figures (`stats`) and access to its root
//! filesystem whether it runs or not (`export`, `cp`).
//!
//! Pausing freezes `/sys/fs/cgroup/freezer/strata/<id>`: every process of the container (those
//! of its init's PID namespace) is moved there, then the cgroup is frozen; children inherit it.
//! A container is *paused* exactly when that cgroup reads `FROZEN`.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::record::{self, valid_name, ContainerId, Status};
use super::{io_at, Container, ContainerError, Result, Runtime};
use crate::driver::{is_mountpoint, Mounted};

const FREEZER: &str = "/sys/fs/cgroup/freezer/strata";

fn freezer_dir(id: &ContainerId) -> PathBuf {
    Path::new(FREEZER).join(id.as_str())
}

/// True when the container's processes are frozen.
pub fn is_paused(id: &ContainerId) -> bool {
    fs::read_to_string(freezer_dir(id).join("freezer.state")).is_ok_and(|s| s.trim() == "FROZEN")
}

/// Thaw a frozen container (before it is stopped or killed: frozen tasks do not act on signals).
pub fn thaw(id: &ContainerId) {
    let p = freezer_dir(id).join("freezer.state");
    if p.exists() {
        let _ = fs::write(p, "THAWED");
    }
}

/// The host pids of every process of the container (its init's PID namespace), init first.
pub fn pids(c: &Container) -> Vec<i32> {
    let init = c.state.pid;
    if !c.is_running() || init <= 0 {
        return Vec::new();
    }
    if !c.config.security.own_pid_namespace() {
        // `--pid host` or `--pid container:X`: the namespace is shared; the container is its
        // init's descendants.
        return descendants(init);
    }
    let Ok(ns) = fs::read_link(format!("/proc/{init}/ns/pid")) else {
        return Vec::new();
    };
    let mut out = vec![init];
    let Ok(dir) = fs::read_dir("/proc") else {
        return out;
    };
    for e in dir.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        if pid != init && fs::read_link(format!("/proc/{pid}/ns/pid")).is_ok_and(|n| n == ns) {
            out.push(pid);
        }
    }
    out
}

/// `init` and every process descending from it (parents from `/proc/<pid>/stat`), init first.
fn descendants(init: i32) -> Vec<i32> {
    let mut parents = Vec::new();
    if let Ok(dir) = fs::read_dir("/proc") {
        for e in dir.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
                continue;
            };
            // `pid (comm) state ppid …`: comm may hold spaces and parentheses; the last `)` ends it.
            let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
                continue;
            };
            let ppid = stat
                .rfind(')')
                .and_then(|i| stat[i + 1..].split_whitespace().nth(1))
                .and_then(|p| p.parse::<i32>().ok());
            if let Some(ppid) = ppid {
                parents.push((pid, ppid));
            }
        }
    }
    let mut out = vec![init];
    let mut i = 0;
    while i < out.len() {
        let parent = out[i];
        out.extend(
            parents
                .iter()
                .filter(|(p, pp)| *pp == parent && *p != init)
                .map(|(p, _)| *p),
        );
        i += 1;
    }
    out
}

fn freezer_err(path: &Path) -> impl FnOnce(std::io::Error) -> ContainerError + '_ {
    move |e| {
        ContainerError::Cgroup(format!(
            "cannot pause: cgroup v1 freezer unavailable ({}): {e}",
            path.display()
        ))
    }
}

impl Runtime {
    /// Rename a container (Docker's rules and messages), under the names lock.
    pub fn rename(&self, c: &Container, new: &str) -> Result<()> {
        let new = new.strip_prefix('/').unwrap_or(new);
        if !valid_name(new) {
            return Err(ContainerError::InvalidName(new.to_string()));
        }
        if new == c.config.name {
            return Err(ContainerError::SameName);
        }
        let _lock = self.lock()?;
        if let Some(other) = self.list()?.iter().find(|o| o.config.name == new) {
            return Err(ContainerError::NameConflict {
                name: new.to_string(),
                id: other.config.id.to_string(),
            });
        }
        let path = c.paths.config();
        let mut config: record::ContainerConfig = record::read_json(&path)?;
        let old = std::mem::replace(&mut config.name, new.to_string());
        record::write_json(&path, &config)?;
        self.event_with(
            crate::events::Event::container(&config, "rename").attr("oldName", format!("/{old}")),
        );
        Ok(())
    }

    /// `update`: the limits `res` sets (unset ones keep their values) and, if given, a new
    /// restart policy. A running container gets the limits at once (its cgroups, every one of
    /// its processes); the record changes only once they are in place, so a limit the kernel
    /// refuses (a memory limit below what the container uses) changes nothing. A new restart
    /// policy is read by the supervisor when the container next exits.
    pub fn update(
        &self,
        c: &Container,
        res: &super::record::Resources,
        restart: Option<&super::restart::RestartPolicy>,
    ) -> Result<()> {
        let refuse = |reason: &str| ContainerError::CannotUpdate {
            id: c.config.id.to_string(),
            reason: reason.to_string(),
        };
        if restart.is_some_and(|r| !r.is_none()) && c.config.auto_remove {
            return Err(refuse(
                "Restart policy cannot be updated because AutoRemove is enabled for the container",
            ));
        }
        let _lock = self.lock()?;
        let path = c.paths.config();
        let mut config: record::ContainerConfig = record::read_json(&path)?;
        // Docker's `UpdateContainer`: memory above the memory plus swap already set needs a
        // new `--memory-swap` with it (a container without a memory limit has 0 there).
        if let Some(m) = res.memory {
            if res.memory_swap.is_none() && m as i64 > config.resources.memory_swap.unwrap_or(0) {
                return Err(refuse("Memory limit should be smaller than already set memoryswap limit, update the memoryswap at the same time"));
            }
        }
        let live = self.load(&c.config.id)?;
        if live.is_running() {
            super::cgroup::update(&config.id, res, &pids(&live))
                .map_err(|e| refuse(&e.to_string()))?;
        }
        config.resources.merge(res);
        if let Some(p) = restart {
            config.restart = p.clone();
        }
        record::write_json(&path, &config)?;
        self.event(&config, "update");
        Ok(())
    }

    /// Freeze every process of a running container.
    pub fn pause(&self, c: &Container) -> Result<()> {
        if !c.is_running() {
            return Err(ContainerError::NotRunning(c.id().to_string()));
        }
        if is_paused(c.id()) {
            return Err(ContainerError::AlreadyPaused(c.id().to_string()));
        }
        let dir = freezer_dir(c.id());
        fs::create_dir_all(&dir).map_err(freezer_err(&dir))?;
        let procs = dir.join("cgroup.procs");
        // Move until no new member shows up (a process may fork meanwhile; its children follow
        // it once it is in).
        let mut moved = std::collections::BTreeSet::new();
        for _ in 0..16 {
            let new: Vec<i32> = pids(c).into_iter().filter(|p| !moved.contains(p)).collect();
            if new.is_empty() {
                break;
            }
            for p in new {
                moved.insert(p);
                // A process that exited meanwhile is fine.
                let _ = fs::write(&procs, p.to_string());
            }
        }
        let state = dir.join("freezer.state");
        fs::write(&state, "FROZEN").map_err(freezer_err(&state))?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while !is_paused(c.id()) {
            if Instant::now() > deadline {
                thaw(c.id());
                return Err(ContainerError::Cgroup(format!(
                    "cannot pause container {}: its processes did not freeze",
                    c.id()
                )));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        self.event(&c.config, "pause");
        Ok(())
    }

    /// Thaw a paused container.
    pub fn unpause(&self, c: &Container) -> Result<()> {
        if !is_paused(c.id()) {
            return Err(ContainerError::NotPaused(c.id().to_string()));
        }
        thaw(c.id());
        self.event(&c.config, "unpause");
        Ok(())
    }

    /// Run `f` on the container's merged root filesystem: the supervisor's mount while it runs,
    /// else a mount made here through the container's storage driver, held under the
    /// supervisor lock so the container cannot start (and mount the same upper dir) meanwhile.
    pub fn with_rootfs<T>(&self, c: &Container, f: impl FnOnce(&Path) -> T) -> Result<T> {
        let rootfs = c.paths.rootfs();
        if c.state.status == Status::Running && is_mountpoint(&rootfs) {
            return Ok(f(&rootfs));
        }
        fs::create_dir_all(&c.paths.run_dir).map_err(io_at(&c.paths.run_dir))?;
        let lock_path = c.paths.run_dir.join("supervisor.lock");
        let _lock = crate::fsutil::lock_file(&lock_path, crate::fsutil::LockMode::TryExclusive)
            .map_err(io_at(&lock_path))?;
        let drv = c.config.driver.driver();
        let layers = c.layers();
        let mounted: Box<dyn Mounted> = drv.mount(&layers, &rootfs)?;
        let out = f(mounted.path());
        drop(mounted);
        Ok(out)
    }
}

/// One reading of a container's resource use (`stats`), from `/proc` of its processes and, when
/// the container has one, its memory cgroup.
#[derive(Debug, Clone, Default)]
pub struct StatsSample {
    /// CPU time of the container's processes, in clock ticks.
    pub cpu_ticks: u64,
    /// CPU time of the whole host (every CPU), in clock ticks (the first line of `/proc/stat`).
    pub system_ticks: u64,
    pub online_cpus: u32,
    pub mem_usage: u64,
    pub mem_limit: u64,
    pub net_rx: u64,
    pub net_tx: u64,
    pub blk_read: u64,
    pub blk_write: u64,
    pub pids: u64,
}

fn read_u64(p: impl AsRef<Path>) -> Option<u64> {
    fs::read_to_string(p).ok()?.trim().parse().ok()
}

fn host_mem_total() -> u64 {
    fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        })
        .map(|kb| kb * 1024)
        .unwrap_or(0)
}

/// Sample `c` now. Memory: the memory cgroup's usage minus inactive file cache when the
/// container has a memory cgroup (`-m`), else the sum of its processes' resident sets; limit:
/// the cgroup's, else the host's memory.
pub fn sample(c: &Container) -> StatsSample {
    let mut s = StatsSample {
        online_cpus: std::thread::available_parallelism().map_or(1, |n| n.get() as u32),
        system_ticks: fs::read_to_string("/proc/stat")
            .ok()
            .and_then(|t| {
                let line = t.lines().next()?.to_string();
                Some(
                    line.split_whitespace()
                        .skip(1)
                        .filter_map(|v| v.parse::<u64>().ok())
                        .sum(),
                )
            })
            .unwrap_or(0),
        mem_limit: host_mem_total(),
        ..StatsSample::default()
    };
    let procs = pids(c);
    s.pids = procs.len() as u64;
    let mut rss = 0;
    for p in &procs {
        if let Ok(stat) = fs::read_to_string(format!("/proc/{p}/stat")) {
            if let Some(close) = stat.rfind(')') {
                let f: Vec<&str> = stat[close + 2..].split(' ').collect();
                // utime, stime: fields 14 and 15 (index 11, 12 after the command).
                let t = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
                s.cpu_ticks += t(11) + t(12);
                // rss in pages: field 24.
                rss += t(21) * 4096;
            }
        }
        if let Ok(io) = fs::read_to_string(format!("/proc/{p}/io")) {
            for l in io.lines() {
                if let Some(v) = l.strip_prefix("read_bytes: ") {
                    s.blk_read += v.trim().parse::<u64>().unwrap_or(0);
                }
                if let Some(v) = l.strip_prefix("write_bytes: ") {
                    s.blk_write += v.trim().parse::<u64>().unwrap_or(0);
                }
            }
        }
    }
    s.mem_usage = rss;
    let mem = Path::new("/sys/fs/cgroup/memory/strata").join(c.id().as_str());
    if let Some(usage) = read_u64(mem.join("memory.usage_in_bytes")) {
        let inactive = fs::read_to_string(mem.join("memory.stat"))
            .ok()
            .and_then(|t| {
                t.lines()
                    .find_map(|l| l.strip_prefix("total_inactive_file "))
                    .and_then(|v| v.trim().parse::<u64>().ok())
            })
            .unwrap_or(0);
        s.mem_usage = usage.saturating_sub(inactive);
        if let Some(limit) = read_u64(mem.join("memory.limit_in_bytes")) {
            s.mem_limit = s.mem_limit.min(limit);
        }
    }
    // The network namespace's interfaces, loopback excepted (a host-network container would
    // report the host's: Docker reports nothing there).
    if c.config.network != super::NetworkMode::Host {
        if let Some(init) = procs.first() {
            if let Ok(dev) = fs::read_to_string(format!("/proc/{init}/net/dev")) {
                for l in dev.lines().skip(2) {
                    let Some((name, rest)) = l.split_once(':') else {
                        continue;
                    };
                    if name.trim() == "lo" {
                        continue;
                    }
                    let v: Vec<u64> = rest
                        .split_whitespace()
                        .filter_map(|x| x.parse().ok())
                        .collect();
                    s.net_rx += v.first().copied().unwrap_or(0);
                    s.net_tx += v.get(8).copied().unwrap_or(0);
                }
            }
        }
    }
    s
}
