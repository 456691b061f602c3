//! `strata create`: `run`'s flags, but the container is only created (status `Created`); prints
//! its 64-hex id. `start` runs it. Also the create-time flags `run` and `create` share that only
//! describe the container (labels, stop signal, pull policy, `--cidfile`, `--expose`,
//! `--platform`).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use strata_runtime::container::logs::LogConfig;
use strata_runtime::engine::PullPolicy;

use super::Global;

pub fn run(global: &Global, args: super::run::Args) -> anyhow::Result<()> {
    super::run::create_or_run(global, args, true)
}

#[derive(clap::Args, Debug, Default)]
pub struct CreateOptArgs {
    /// Set meta data on a container
    #[arg(short = 'l', long = "label")]
    pub label: Vec<String>,
    /// Read in a line delimited file of labels
    #[arg(long = "label-file")]
    pub label_file: Vec<PathBuf>,
    /// Signal to stop the container
    #[arg(long = "stop-signal")]
    pub stop_signal: Option<String>,
    /// Pull image before running ("always", "missing", "never")
    #[arg(long = "pull", default_value = "missing")]
    pub pull: String,
    /// Write the container ID to the file
    #[arg(long = "cidfile")]
    pub cidfile: Option<PathBuf>,
    /// Expose a port or a range of ports
    #[arg(long = "expose")]
    pub expose: Vec<String>,
    /// Set platform if server is multi-platform capable
    #[arg(long = "platform")]
    pub platform: Option<String>,
    /// Logging driver for the container (json-file, none)
    #[arg(long = "log-driver")]
    pub log_driver: Option<String>,
    /// Log driver options (max-size=10m, max-file=3)
    #[arg(long = "log-opt")]
    pub log_opt: Vec<String>,
}

/// The flags, checked, as the engine takes them.
pub struct CreateOpts {
    pub labels: BTreeMap<String, String>,
    pub stop_signal: Option<String>,
    pub pull: PullPolicy,
    pub expose: Vec<String>,
    pub log: LogConfig,
}

impl CreateOptArgs {
    pub fn parse(&self) -> Result<CreateOpts> {
        let mut lines = Vec::new();
        for f in &self.label_file {
            let text = std::fs::read_to_string(f)
                .with_context(|| format!("open {}: no such file or directory", f.display()))?;
            lines.extend(
                text.lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty() && !l.starts_with('#'))
                    .map(str::to_string),
            );
        }
        lines.extend(self.label.iter().cloned());
        let labels = super::parse_labels(&lines);
        if let Some(s) = &self.stop_signal {
            strata_runtime::container::parse_signal(s)?;
        }
        let pull = PullPolicy::parse(&self.pull).map_err(anyhow::Error::msg)?;
        let mut expose = Vec::new();
        for e in &self.expose {
            expose.extend(expose_ports(e)?);
        }
        let log = LogConfig::parse(self.log_driver.as_deref(), &self.log_opt)
            .map_err(anyhow::Error::msg)?;
        Ok(CreateOpts {
            labels,
            stop_signal: self.stop_signal.clone(),
            pull,
            expose,
            log,
        })
    }
}

/// `--expose 80`, `80/udp`, `8000-8002`: `port/proto` keys.
fn expose_ports(spec: &str) -> Result<Vec<String>> {
    let (ports, proto) = spec.split_once('/').unwrap_or((spec, "tcp"));
    if !matches!(proto, "tcp" | "udp" | "sctp") {
        bail!("invalid proto: {proto}");
    }
    let bad = || anyhow::anyhow!("invalid range format for --expose: {spec}");
    let (lo, hi) = match ports.split_once('-') {
        Some((a, b)) => (
            a.parse::<u16>().map_err(|_| bad())?,
            b.parse::<u16>().map_err(|_| bad())?,
        ),
        None => {
            let p = ports.parse::<u16>().map_err(|_| bad())?;
            (p, p)
        }
    };
    if lo == 0 || hi < lo {
        return Err(bad());
    }
    Ok((lo..=hi).map(|p| format!("{p}/{proto}")).collect())
}

/// `--cidfile`: claimed before the container is made (Docker refuses an existing file), the id
/// written once it exists, the file removed again if the create fails.
pub struct CidFile {
    path: Option<PathBuf>,
}

impl CidFile {
    pub fn claim(path: Option<&Path>) -> Result<CidFile> {
        let Some(p) = path else {
            return Ok(CidFile { path: None });
        };
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(p)
        {
            Ok(_) => Ok(CidFile {
                path: Some(p.to_path_buf()),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => bail!(
                "Container ID file found, make sure the other container isn't running or delete {}",
                p.display()
            ),
            Err(e) => bail!("failed to create the container ID file: {e}"),
        }
    }

    /// Write the id and keep the file.
    pub fn write(mut self, id: &str) -> Result<()> {
        if let Some(p) = self.path.take() {
            let mut f = std::fs::OpenOptions::new().write(true).open(&p)?;
            f.write_all(id.as_bytes())
                .with_context(|| format!("failed to write the container ID to {}", p.display()))?;
        }
        Ok(())
    }
}

impl Drop for CidFile {
    fn drop(&mut self) {
        if let Some(p) = self.path.take() {
            let _ = std::fs::remove_file(p);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expose_specs() {
        assert_eq!(expose_ports("80").unwrap(), ["80/tcp"]);
        assert_eq!(expose_ports("53/udp").unwrap(), ["53/udp"]);
        assert_eq!(expose_ports("8000-8002").unwrap().len(), 3);
        assert!(expose_ports("0").is_err());
        assert!(expose_ports("80/xyz").is_err());
        assert!(expose_ports("9-8").is_err());
    }
}
