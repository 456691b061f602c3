//! `strata ps`.

use super::Global;

#[derive(clap::Args, Debug)]
pub struct Args {}

pub fn run(_global: &Global, _args: Args) -> anyhow::Result<()> {
    super::not_implemented("ps")
}

#[derive(clap::Args, Debug)]
pub struct PortArgs {}

pub fn run_port(_global: &Global, _args: PortArgs) -> anyhow::Result<()> {
    super::not_implemented("ps")
}
