//! `strata update [--cpus N] [-c SHARES] [--cpuset-cpus LIST] [--cpuset-mems LIST] [-m SIZE]
//! [--memory-swap SIZE] [--memory-reservation SIZE] [--pids-limit N] [--restart POLICY]
//! CONTAINER...`:
//! Docker's `update` — new resource limits (live for a running container) and restart policy.
//! Prints each container as given; a container that cannot be updated gets its error and the
//! verb goes on with the others, exiting 1 at the end (Docker's multi-container behaviour).

use strata_runtime::container::restart::RestartPolicy;

use super::stop::each;
use super::Global;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub limits: super::limits::LimitArgs,
    /// Restart policy to apply when a container exits (no, on-failure[:max-retries], always,
    /// unless-stopped)
    #[arg(long)]
    pub restart: Option<String>,
    #[arg(required = true, value_name = "CONTAINER")]
    pub containers: Vec<String>,
}

pub fn run(global: &Global, args: Args) -> anyhow::Result<()> {
    let mut res = args.limits.resources()?;
    let restart = args
        .restart
        .as_deref()
        .map(RestartPolicy::parse)
        .transpose()?;
    if res.is_empty() && restart.is_none() {
        anyhow::bail!("you must provide one or more flags when using this command");
    }
    // Docker's rules for the values (daemon `verifyContainerSettings` with update), before
    // any container changes.
    let adjusted =
        strata_runtime::container::check_resources(&mut res, true).map_err(anyhow::Error::msg)?;
    for w in adjusted {
        eprintln!("WARNING: {w}");
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
