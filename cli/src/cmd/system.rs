//! `strata system`.

use super::Global;

#[derive(clap::Args, Debug)]
pub struct Args {}

pub fn run(_global: &Global, _args: Args) -> anyhow::Result<()> {
    super::not_implemented("system")
}
