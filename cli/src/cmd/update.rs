//! `strata update [--cpus N] [-m SIZE] [--pids-limit N] [--restart POLICY] CONTAINER...`:
//! Docker's `update` — new resource limits (live for a running container) and restart policy.
//! Prints each container as given; a container that cannot be updated gets its error and the
//! verb goes on with the others, exiting 1 at the end (Docker's multi-container behaviour).

use strata_runtime::container::restart::RestartPolicy;
use strata_runtime::container::Resources;

use super::stop::each;
use super::Global;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Number of CPUs
    #[arg(long)]
    pub cpus: Option<f64>,
    /// Memory limit (e.g. 512m, 1g)
    #[arg(short = 'm', long)]
    pub memory: Option<String>,
    /// Tune container pids limit (set -1 for unlimited)
    #[arg(long = "pids-limit", allow_hyphen_values = true)]
    pub pids_limit: Option<i64>,
    /// Restart policy to apply when a container exits (no, on-failure[:max-retries], always,
    /// unless-stopped)
    #[arg(long)]
    pub restart: Option<String>,
    #[arg(required = true, value_name = "CONTAINER")]
    pub containers: Vec<String>,
}

pub fn run(global: &Global, args: Args) -> anyhow::Result<()> {
    let res = Resources {
        memory: args
            .memory
            .as_deref()
            .map(super::run::parse_memory)
            .transpose()?,
        cpus: args.cpus,
        pids_limit: args.pids_limit,
    };
    let restart = args
        .restart
        .as_deref()
        .map(RestartPolicy::parse)
        .transpose()?;
    if res.is_empty() && restart.is_none() {
        anyhow::bail!("you must provide one or more flags when using this command");
    }
    for w in strata_runtime::container::limit_warnings(&res) {
        eprintln!("{w}");
    }
    let rt = global.containers();
    each(rt, &args.containers, |rt, n| {
        let c = rt.lookup(n)?;
        rt.update(&c, &res, restart.as_ref())?;
        Ok(())
    })
}
