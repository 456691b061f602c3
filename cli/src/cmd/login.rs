//! `strata login`.

use super::Global;

#[derive(clap::Args, Debug)]
pub struct Args {}

pub fn run(_global: &Global, _args: Args) -> anyhow::Result<()> {
    super::not_implemented("login")
}

#[derive(clap::Args, Debug)]
pub struct LogoutArgs {}

pub fn run_logout(_global: &Global, _args: LogoutArgs) -> anyhow::Result<()> {
    super::not_implemented("login")
}
