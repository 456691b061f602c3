//! The resource flags `run`/`create` and `update` share (Docker's names and meanings): memory,
//! memory plus swap, memory soft limit, CPUs, CPU shares, cpuset CPUs and memory nodes, pids.

use strata_runtime::container::Resources;

#[derive(clap::Args, Debug, Default)]
pub struct LimitArgs {
    /// Memory limit (e.g. 512m, 1g)
    #[arg(short = 'm', long)]
    pub memory: Option<String>,
    /// Swap limit equal to memory plus swap: '-1' to enable unlimited swap
    #[arg(long = "memory-swap", allow_hyphen_values = true)]
    pub memory_swap: Option<String>,
    /// Memory soft limit
    #[arg(long = "memory-reservation")]
    pub memory_reservation: Option<String>,
    /// Number of CPUs
    #[arg(long)]
    pub cpus: Option<f64>,
    /// CPU shares (relative weight)
    #[arg(short = 'c', long = "cpu-shares", allow_hyphen_values = true)]
    pub cpu_shares: Option<i64>,
    /// CPUs in which to allow execution (0-3, 0,1)
    #[arg(long = "cpuset-cpus")]
    pub cpuset_cpus: Option<String>,
    /// MEMs in which to allow execution (0-3, 0,1)
    #[arg(long = "cpuset-mems")]
    pub cpuset_mems: Option<String>,
    /// Tune container pids limit (set -1 for unlimited)
    #[arg(long = "pids-limit", allow_hyphen_values = true)]
    pub pids_limit: Option<i64>,
}

impl LimitArgs {
    /// The limits the flags set; Docker's zero values (`0`, `""`) are "not set".
    pub fn resources(&self) -> anyhow::Result<Resources> {
        let size = |v: &Option<String>| {
            v.as_deref()
                .map(super::run::parse_memory)
                .transpose()
                .map(|m| m.filter(|m| *m != 0))
        };
        let memory_swap = match self.memory_swap.as_deref() {
            None | Some("") => None,
            Some("-1") => Some(-1),
            Some(s) => Some(super::run::parse_memory(s)? as i64).filter(|s| *s != 0),
        };
        let nonempty = |v: &Option<String>| v.clone().filter(|s| !s.is_empty());
        Ok(Resources {
            memory: size(&self.memory)?,
            cpus: self.cpus,
            pids_limit: self.pids_limit,
            memory_swap,
            memory_reservation: size(&self.memory_reservation)?,
            cpu_shares: self.cpu_shares.filter(|s| *s != 0),
            cpuset_cpus: nonempty(&self.cpuset_cpus),
            cpuset_mems: nonempty(&self.cpuset_mems),
        })
    }
}
