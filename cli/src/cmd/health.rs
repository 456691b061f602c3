//! `run`/`create` health-check flags (Docker's `--health-*`, `--no-healthcheck`) and the
//! hidden probe verb the supervisor runs (see `strata_runtime::container::health`).

use anyhow::{bail, Result};
use strata_runtime::container::health::{go_duration, HealthConfig};

use super::{ExitStatus, Global};

#[derive(clap::Args, Debug, Default)]
pub struct HealthArgs {
    /// Command to run to check health
    #[arg(long = "health-cmd")]
    pub cmd: Option<String>,
    /// Time between running the check (ms|s|m|h) (default 0s)
    #[arg(long = "health-interval")]
    pub interval: Option<String>,
    /// Consecutive failures needed to report unhealthy
    #[arg(long = "health-retries", allow_hyphen_values = true)]
    pub retries: Option<i64>,
    /// Time between running the check during the start period (ms|s|m|h) (default 0s)
    #[arg(long = "health-start-interval")]
    pub start_interval: Option<String>,
    /// Start period for the container to initialize before starting health-retries countdown (ms|s|m|h) (default 0s)
    #[arg(long = "health-start-period")]
    pub start_period: Option<String>,
    /// Maximum time to allow one check to run (ms|s|m|h) (default 0s)
    #[arg(long = "health-timeout")]
    pub timeout: Option<String>,
    /// Disable any container-specified HEALTHCHECK
    #[arg(long = "no-healthcheck")]
    pub no_healthcheck: bool,
}

impl HealthArgs {
    /// The flags as a config to lay over the image's, with Docker's checks and messages.
    pub fn config(&self) -> Result<HealthConfig> {
        let any = self.cmd.is_some()
            || self.interval.is_some()
            || self.retries.is_some()
            || self.start_interval.is_some()
            || self.start_period.is_some()
            || self.timeout.is_some();
        if self.no_healthcheck && any {
            bail!("--no-healthcheck conflicts with --health-* options");
        }
        let dur = |flag: &str, v: &Option<String>| -> Result<i64> {
            let Some(v) = v else { return Ok(0) };
            let Some(n) = go_duration(v) else {
                bail!("invalid argument \"{v}\" for \"--{flag}\" flag: time: invalid duration \"{v}\"");
            };
            if n != 0 && n < 1_000_000 {
                bail!("--{flag} cannot be less than 1ms");
            }
            Ok(n)
        };
        let retries = self.retries.unwrap_or(0);
        if retries < 0 {
            bail!("--health-retries cannot be negative");
        }
        Ok(HealthConfig {
            test: match &self.cmd {
                Some(c) if !c.is_empty() => vec!["CMD-SHELL".into(), c.clone()],
                _ => Vec::new(),
            },
            interval: dur("health-interval", &self.interval)?,
            timeout: dur("health-timeout", &self.timeout)?,
            start_period: dur("health-start-period", &self.start_period)?,
            start_interval: dur("health-start-interval", &self.start_interval)?,
            retries,
        })
    }
}

/// The hidden probe verb (`__health-probe ID`): one health check of a running container.
#[derive(clap::Args, Debug)]
pub struct ProbeArgs {
    pub id: String,
}

pub fn run_probe(global: &Global, args: ProbeArgs) -> Result<()> {
    let id = strata_runtime::container::ContainerId::parse(&args.id)?;
    let rt = global.containers();
    if let Err(e) = strata_runtime::container::health::probe(rt, &id) {
        log::warn!("health check of {id}: {e}");
        return Err(ExitStatus(1).into());
    }
    Ok(())
}
