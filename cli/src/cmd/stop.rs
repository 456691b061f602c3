//! `strata stop`, `restart`, `kill`, `wait`.

use strata_runtime::container::{parse_signal, ContainerError, Runtime};

use super::run::{launcher, start_error};
use super::{ExitStatus, Global};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Signal to send to the container
    #[arg(short = 's', long = "signal")]
    pub signal: Option<String>,
    /// Seconds to wait before killing the container
    #[arg(short = 't', long = "time", alias = "timeout")]
    pub time: Option<u64>,
    #[arg(required = true)]
    pub containers: Vec<String>,
}

/// Run `f` on every named container; print the name on success, the error otherwise, and fail
/// at the end if any failed (Docker's behaviour for multi-container verbs).
pub(crate) fn each(
    rt: &Runtime,
    names: &[String],
    mut f: impl FnMut(&Runtime, &str) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let mut failed = false;
    for n in names {
        match f(rt, n) {
            Ok(()) => println!("{n}"),
            Err(e) => {
                if e.downcast_ref::<ExitStatus>().is_none() {
                    eprintln!("Error: {}", super::one_line(&e));
                }
                failed = true;
            }
        }
    }
    if failed {
        Err(ExitStatus(1).into())
    } else {
        Ok(())
    }
}

pub fn run(global: &Global, args: Args) -> anyhow::Result<()> {
    let sig = args.signal.as_deref().map(parse_signal).transpose()?;
    let rt = global.containers();
    each(rt, &args.containers, |rt, n| {
        let c = rt.lookup(n)?;
        rt.stop_with(&c, args.time, sig)?;
        Ok(())
    })
}

#[derive(clap::Args, Debug)]
pub struct RestartArgs {
    /// Signal to send to the container
    #[arg(short = 's', long = "signal")]
    pub signal: Option<String>,
    /// Seconds to wait before killing the container
    #[arg(short = 't', long = "time", alias = "timeout")]
    pub time: Option<u64>,
    #[arg(required = true)]
    pub containers: Vec<String>,
}

pub fn run_restart(global: &Global, args: RestartArgs) -> anyhow::Result<()> {
    let rt = global.containers();
    let launcher = launcher(global)?;
    let sig = args.signal.as_deref().map(parse_signal).transpose()?;
    each(rt, &args.containers, |rt, n| {
        let c = rt.lookup(n)?;
        // The runtime records the `restart` event; a failed start keeps start's exit codes.
        rt.restart(&c, args.time, sig, &launcher)
            .map_err(|e| match e {
                e @ (ContainerError::Start { .. }
                | ContainerError::Spawn { .. }
                | ContainerError::SupervisorDied(_)) => start_error(e),
                e => e.into(),
            })?;
        Ok(())
    })
}

#[derive(clap::Args, Debug)]
pub struct KillArgs {
    /// Signal to send to the container
    #[arg(short = 's', long = "signal", default_value = "KILL")]
    pub signal: String,
    #[arg(required = true)]
    pub containers: Vec<String>,
}

pub fn run_kill(global: &Global, args: KillArgs) -> anyhow::Result<()> {
    let sig = parse_signal(&args.signal)?;
    let rt = global.containers();
    each(rt, &args.containers, |rt, n| {
        let c = rt.lookup(n)?;
        rt.kill(&c, sig)?;
        Ok(())
    })
}

#[derive(clap::Args, Debug)]
pub struct WaitArgs {
    #[arg(required = true)]
    pub containers: Vec<String>,
}

pub fn run_wait(global: &Global, args: WaitArgs) -> anyhow::Result<()> {
    let rt = global.containers();
    let mut failed = false;
    for n in &args.containers {
        match rt.lookup(n).and_then(|c| rt.wait(&c)) {
            Ok(code) => println!("{code}"),
            Err(e) => {
                eprintln!("Error: {}", super::one_line(&e.into()));
                failed = true;
            }
        }
    }
    if failed {
        Err(ExitStatus(1).into())
    } else {
        Ok(())
    }
}
