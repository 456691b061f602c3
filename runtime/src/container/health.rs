//! Health checks (Docker's `HEALTHCHECK` and `run --health-*`).
//!
//! - *config*: the image's `Healthcheck` with the run flags laid over it, fixed at create in
//!   the container record (`None` when there is no test, or it is `NONE`).
//! - *monitor*: a thread of the supervisor. Every interval (the start interval while the start
//!   period lasts and the container is not yet healthy) it runs a *probe*: the `strata` binary
//!   again with the hidden verb [`PROBE_VERB`], a single-threaded process that execs the test in
//!   the container (as `exec` does), keeps the first 4 KiB of its output, kills it when the
//!   timeout passes and records the result. The supervisor itself never forks after its FUSE
//!   threads exist.
//! - *state*: `<container dir>/health.json`, Docker's `State.Health` (`Status`, `FailingStreak`,
//!   the last five results in `Log`), replaced whole on every update; reset to `starting` each
//!   time the container starts.

use std::io::Read;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::exec::{self, ExecRequest};
use super::{io_at, Container, ContainerError, ContainerId, Result, Runtime};

pub use crate::timeargs::go_duration;

/// The hidden CLI verb a probe runs as (`strata --root R --runroot RR __health-probe ID`).
pub const PROBE_VERB: &str = "__health-probe";

/// Docker's defaults for what the config leaves at 0.
const DEFAULT_INTERVAL: Duration = Duration::from_secs(30);
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
const DEFAULT_START_INTERVAL: Duration = Duration::from_secs(5);
const DEFAULT_RETRIES: u32 = 3;
/// Results kept in `Log`, and output kept per result (Docker's limits).
const MAX_LOG_ENTRIES: usize = 5;
const MAX_OUTPUT: usize = 4096;

/// Docker's `HealthConfig` (image config `Healthcheck`, `inspect` `Config.Healthcheck`):
/// durations in nanoseconds, 0 = inherit / default.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct HealthConfig {
    /// `["NONE"]`, `["CMD", arg…]` or `["CMD-SHELL", "command"]`; empty = inherit.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub test: Vec<String>,
    #[serde(default, skip_serializing_if = "super::record::is_default")]
    pub interval: i64,
    #[serde(default, skip_serializing_if = "super::record::is_default")]
    pub timeout: i64,
    #[serde(default, skip_serializing_if = "super::record::is_default")]
    pub start_period: i64,
    #[serde(default, skip_serializing_if = "super::record::is_default")]
    pub start_interval: i64,
    #[serde(default, skip_serializing_if = "super::record::is_default")]
    pub retries: i64,
}

fn nanos(n: i64, default: Duration) -> Duration {
    if n > 0 {
        Duration::from_nanos(n as u64)
    } else {
        default
    }
}

impl HealthConfig {
    /// The image's config with the run flags over it, as Docker merges them: each flag that
    /// is set replaces the image's value; `disable` (`--no-healthcheck`) turns it off. `None`
    /// when no test is left or the test is `NONE`.
    pub fn merge(
        image: Option<&HealthConfig>,
        flags: &HealthConfig,
        disable: bool,
    ) -> Option<Self> {
        if disable {
            return None;
        }
        let base = image.cloned().unwrap_or_default();
        let pick = |f: i64, b: i64| if f != 0 { f } else { b };
        let merged = HealthConfig {
            test: if flags.test.is_empty() {
                base.test
            } else {
                flags.test.clone()
            },
            interval: pick(flags.interval, base.interval),
            timeout: pick(flags.timeout, base.timeout),
            start_period: pick(flags.start_period, base.start_period),
            start_interval: pick(flags.start_interval, base.start_interval),
            retries: pick(flags.retries, base.retries),
        };
        match merged.test.first().map(String::as_str) {
            None | Some("NONE") => None,
            _ => Some(merged),
        }
    }

    /// The probe's argv: `CMD-SHELL` runs through `/bin/sh -c`.
    pub fn argv(&self) -> Option<Vec<String>> {
        match self.test.split_first() {
            Some((kind, rest)) if kind == "CMD" && !rest.is_empty() => Some(rest.to_vec()),
            Some((kind, rest)) if kind == "CMD-SHELL" && !rest.is_empty() => {
                Some(vec!["/bin/sh".into(), "-c".into(), rest.join(" ")])
            }
            _ => None,
        }
    }

    pub fn interval(&self) -> Duration {
        nanos(self.interval, DEFAULT_INTERVAL)
    }
    pub fn timeout(&self) -> Duration {
        nanos(self.timeout, DEFAULT_TIMEOUT)
    }
    pub fn start_period(&self) -> Duration {
        nanos(self.start_period, Duration::ZERO)
    }
    pub fn start_interval(&self) -> Duration {
        nanos(self.start_interval, DEFAULT_START_INTERVAL)
    }
    pub fn retries(&self) -> u32 {
        if self.retries > 0 {
            self.retries.min(u32::MAX as i64) as u32
        } else {
            DEFAULT_RETRIES
        }
    }
}

/// `starting`, `healthy`, `unhealthy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum HealthStatus {
    #[default]
    Starting,
    Healthy,
    Unhealthy,
}

impl HealthStatus {
    pub fn as_str(&self) -> &'static str {
        match self {
            HealthStatus::Starting => "starting",
            HealthStatus::Healthy => "healthy",
            HealthStatus::Unhealthy => "unhealthy",
        }
    }
}

/// One probe's result (`State.Health.Log[]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct HealthResult {
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    pub exit_code: i32,
    pub output: String,
}

/// Docker's `State.Health`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct HealthState {
    pub status: HealthStatus,
    pub failing_streak: u32,
    pub log: Vec<HealthResult>,
}

impl HealthState {
    /// Count one result, as Docker does: a success makes the container healthy and ends the
    /// streak; a failure during the start period (while still `starting`) is logged but not
    /// counted; otherwise `retries` failures in a row make it unhealthy.
    pub fn record(&mut self, result: HealthResult, cfg: &HealthConfig, in_start_period: bool) {
        if result.exit_code == 0 {
            self.failing_streak = 0;
            self.status = HealthStatus::Healthy;
        } else if !(in_start_period && self.status == HealthStatus::Starting) {
            self.failing_streak += 1;
            if self.failing_streak >= cfg.retries() {
                self.status = HealthStatus::Unhealthy;
            }
        }
        self.log.push(result);
        if self.log.len() > MAX_LOG_ENTRIES {
            let extra = self.log.len() - MAX_LOG_ENTRIES;
            self.log.drain(..extra);
        }
    }
}

fn state_path(dir: &Path) -> PathBuf {
    dir.join("health.json")
}

/// The container's health, if it has a health check and has been started with it.
pub fn read(c: &Container) -> Option<HealthState> {
    c.config.healthcheck.as_ref()?;
    let bytes = std::fs::read(state_path(&c.paths.dir)).ok()?;
    serde_json::from_slice(&bytes).ok()
}

fn write(dir: &Path, state: &HealthState) -> Result<()> {
    let path = state_path(dir);
    let bytes = serde_json::to_vec(state).map_err(|source| ContainerError::Json {
        path: path.clone(),
        source,
    })?;
    crate::fsutil::write_atomic_volatile(&path, &bytes).map_err(io_at(&path))
}

/// The supervisor's health-check thread; dropping it stops the checks (a probe still running
/// is killed).
pub struct Monitor {
    stop: Option<Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Monitor {
    /// Reset the state to `starting` and start checking, if `c` has a health check.
    pub fn start(rt: &Runtime, c: &Container) -> Option<Monitor> {
        let cfg = c.config.healthcheck.clone()?;
        if let Err(e) = write(&c.paths.dir, &HealthState::default()) {
            log::warn!("health check: {e}");
            return None;
        }
        let exe = std::env::current_exe().ok()?;
        let args: Vec<std::ffi::OsString> = vec![
            "--root".into(),
            rt.root().into(),
            "--runroot".into(),
            rt.runroot().into(),
            PROBE_VERB.into(),
            c.id().as_str().into(),
        ];
        let dir = c.paths.dir.clone();
        let started = Instant::now();
        let (tx, rx) = mpsc::channel::<()>();
        let thread = std::thread::spawn(move || loop {
            let starting = started.elapsed() < cfg.start_period()
                && current_status(&dir) == HealthStatus::Starting;
            let wait = if starting {
                cfg.start_interval()
            } else {
                cfg.interval()
            };
            match rx.recv_timeout(wait) {
                Err(RecvTimeoutError::Timeout) => {}
                _ => return,
            }
            let child = Command::new(&exe)
                .args(&args)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn();
            match child {
                Ok(child) => {
                    if !wait_or_stop(child, &rx, cfg.timeout() + Duration::from_secs(10)) {
                        return;
                    }
                }
                Err(e) => log::warn!("health check: cannot start a probe: {e}"),
            }
        });
        Some(Monitor {
            stop: Some(tx),
            thread: Some(thread),
        })
    }
}

fn current_status(dir: &Path) -> HealthStatus {
    std::fs::read(state_path(dir))
        .ok()
        .and_then(|b| serde_json::from_slice::<HealthState>(&b).ok())
        .map(|s| s.status)
        .unwrap_or_default()
}

/// Wait for a probe process; `false` when told to stop meanwhile (the probe is killed). A
/// probe that outlives `limit` (it enforces the timeout itself) is killed too.
fn wait_or_stop(mut child: Child, stop: &mpsc::Receiver<()>, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if let Ok(Some(_)) = child.try_wait() {
            return true;
        }
        match stop.recv_timeout(Duration::from_millis(50)) {
            Err(RecvTimeoutError::Timeout) if Instant::now() < deadline => {}
            Err(RecvTimeoutError::Timeout) => {
                let _ = child.kill();
                let _ = child.wait();
                return true;
            }
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return false;
            }
        }
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The probe process's work: run the test once in the running container and record the result.
pub fn probe(rt: &Runtime, id: &ContainerId) -> Result<()> {
    let c = rt.load(id)?;
    let Some(cfg) = c.config.healthcheck.clone() else {
        return Ok(());
    };
    let Some(argv) = cfg.argv() else {
        return Ok(());
    };
    if !c.is_running() {
        return Ok(());
    }
    let start = Utc::now();
    let (exit_code, output) = run_probe(&c, argv, cfg.timeout())?;
    let result = HealthResult {
        start,
        end: Utc::now(),
        exit_code,
        output,
    };
    let in_start_period = c
        .state
        .started_at
        .is_some_and(|s| (start - s).to_std().unwrap_or_default() < cfg.start_period());
    // The monitor waits for this process before the next probe: nobody else writes the file.
    let mut state: HealthState = std::fs::read(state_path(&c.paths.dir))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default();
    let before = state.status;
    state.record(result, &cfg, in_start_period);
    if state.status != before {
        // Docker's `health_status: healthy|unhealthy` on every change.
        rt.event(
            &c.config,
            &format!("health_status: {}", state.status.as_str()),
        );
    }
    write(&c.paths.dir, &state)
}

/// Exec `argv` in `c` with stdout and stderr into a pipe; returns the exit code and the first
/// 4 KiB of output, or -1 and Docker's timeout message after killing the probe.
fn run_probe(c: &Container, argv: Vec<String>, timeout: Duration) -> Result<(i32, String)> {
    let (r, w) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|source| ContainerError::Sys {
            what: "pipe",
            source,
        })?;
    // This process exists only for the probe: the exec'd process inherits fds 1 and 2, so
    // point them at the pipe for the exec, then back at /dev/null so EOF can come.
    redirect_stdout_stderr(&w);
    let started = exec::exec(
        c,
        &ExecRequest {
            cmd: argv,
            ..ExecRequest::default()
        },
    );
    if let Ok(null) = std::fs::OpenOptions::new().write(true).open("/dev/null") {
        redirect_stdout_stderr(&null);
    }
    drop(w);
    let handle = match started {
        Ok(h) => h,
        // Could not start (no shell in the image, …): a failed check with the reason.
        Err(e) => return Ok((1, e.to_string())),
    };
    let reader = std::thread::spawn(move || {
        let mut kept = Vec::new();
        let mut f = std::fs::File::from(r);
        let mut buf = [0u8; 4096];
        while let Ok(n) = f.read(&mut buf) {
            if n == 0 {
                break;
            }
            let room = MAX_OUTPUT.saturating_sub(kept.len());
            kept.extend_from_slice(&buf[..n.min(room)]);
        }
        kept
    });
    match handle.wait_timeout(timeout) {
        Some(code) => {
            let out = reader.join().unwrap_or_default();
            Ok((code, String::from_utf8_lossy(&out).into_owned()))
        }
        None => Ok((
            -1,
            format!("Health check exceeded timeout ({})", humantime_go(timeout)),
        )),
    }
}

fn redirect_stdout_stderr(fd: &impl AsRawFd) {
    // SAFETY: dup2 onto our own standard fds; `fd` is open for the whole call.
    unsafe {
        libc::dup2(fd.as_raw_fd(), 1);
        libc::dup2(fd.as_raw_fd(), 2);
    }
}

/// A duration as Go prints it for whole seconds and milliseconds (`30s`, `1m0s`, `500ms`).
fn humantime_go(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        return format!("{ms}ms");
    }
    let (h, rem) = (ms / 3_600_000, ms % 3_600_000);
    let (m, rem) = (rem / 60_000, rem % 60_000);
    let s = rem as f64 / 1000.0;
    let secs = if rem % 1000 == 0 {
        format!("{}s", rem / 1000)
    } else {
        format!("{s}s")
    };
    match (h, m) {
        (0, 0) => secs,
        (0, m) => format!("{m}m{secs}"),
        (h, m) => format!("{h}h{m}m{secs}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(test: &[&str]) -> HealthConfig {
        HealthConfig {
            test: test.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn merge_lays_flags_over_the_image() {
        let image = HealthConfig {
            interval: 5_000_000_000,
            retries: 2,
            ..cfg(&["CMD-SHELL", "true"])
        };
        let flags = HealthConfig {
            retries: 7,
            ..Default::default()
        };
        let m = HealthConfig::merge(Some(&image), &flags, false).unwrap();
        assert_eq!(m.test, ["CMD-SHELL", "true"]);
        assert_eq!((m.interval, m.retries), (5_000_000_000, 7));
        assert_eq!(m.timeout(), DEFAULT_TIMEOUT);
        assert!(HealthConfig::merge(Some(&image), &flags, true).is_none());
        assert!(HealthConfig::merge(Some(&cfg(&["NONE"])), &flags, false).is_none());
        assert!(HealthConfig::merge(None, &HealthConfig::default(), false).is_none());
        let over = HealthConfig::merge(Some(&image), &cfg(&["CMD", "x"]), false).unwrap();
        assert_eq!(over.argv().unwrap(), ["x"]);
        assert_eq!(
            image.argv().unwrap(),
            ["/bin/sh", "-c", "true"].map(String::from)
        );
    }

    #[test]
    fn results_count_as_docker_counts_them() {
        let c = HealthConfig {
            retries: 2,
            ..cfg(&["CMD", "x"])
        };
        let r = |code| HealthResult {
            start: Utc::now(),
            end: Utc::now(),
            exit_code: code,
            output: String::new(),
        };
        let mut s = HealthState::default();
        s.record(r(1), &c, true);
        assert_eq!((s.status, s.failing_streak), (HealthStatus::Starting, 0));
        s.record(r(1), &c, false);
        assert_eq!((s.status, s.failing_streak), (HealthStatus::Starting, 1));
        s.record(r(1), &c, false);
        assert_eq!((s.status, s.failing_streak), (HealthStatus::Unhealthy, 2));
        s.record(r(0), &c, false);
        assert_eq!((s.status, s.failing_streak), (HealthStatus::Healthy, 0));
        for _ in 0..10 {
            s.record(r(0), &c, false);
        }
        assert_eq!(s.log.len(), MAX_LOG_ENTRIES);
        let json = serde_json::to_value(&s).unwrap();
        assert_eq!(json["Status"], "healthy");
        assert_eq!(json["FailingStreak"], 0);
        assert_eq!(json["Log"][0]["ExitCode"], 0);
    }

    #[test]
    fn durations() {
        assert_eq!(humantime_go(Duration::from_secs(30)), "30s");
        assert_eq!(humantime_go(Duration::from_secs(90)), "1m30s");
        assert_eq!(humantime_go(Duration::from_millis(1500)), "1.5s");
        assert_eq!(humantime_go(Duration::from_millis(200)), "200ms");
    }
}
