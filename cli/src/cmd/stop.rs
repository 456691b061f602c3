//! `strata stop`.

use super::Global;

#[derive(clap::Args, Debug)]
pub struct Args {}

pub fn run(_global: &Global, _args: Args) -> anyhow::Result<()> {
    super::not_implemented("stop")
}

#[derive(clap::Args, Debug)]
pub struct RestartArgs {}

pub fn run_restart(_global: &Global, _args: RestartArgs) -> anyhow::Result<()> {
    super::not_implemented("stop")
}

#[derive(clap::Args, Debug)]
pub struct KillArgs {}

pub fn run_kill(_global: &Global, _args: KillArgs) -> anyhow::Result<()> {
    super::not_implemented("stop")
}

#[derive(clap::Args, Debug)]
pub struct WaitArgs {}

pub fn run_wait(_global: &Global, _args: WaitArgs) -> anyhow::Result<()> {
    super::not_implemented("stop")
}
