//! `strata create`: `run`'s flags, but the container is only created (status `Created`); prints
//! its 64-hex id. `start` runs it.

use super::Global;

pub fn run(global: &Global, args: super::run::Args) -> anyhow::Result<()> {
    super::run::create_or_run(global, args, true)
}
