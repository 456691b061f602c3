//! `strata diff CONTAINER`: the container's changes against its image, one `A`/`C`/`D` line
//! per path (SPEC §10.1).

use std::io::Write;

use strata_runtime::changes::container_diff;

use super::Global;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Container name or ID
    #[arg(value_name = "CONTAINER")]
    pub container: String,
}

pub fn run(global: &Global, args: Args) -> anyhow::Result<()> {
    let container = global.containers().lookup(&args.container)?;
    let changes = container_diff(&container)?;
    let mut out = std::io::stdout().lock();
    for c in changes {
        writeln!(out, "{c}")?;
    }
    out.flush()?;
    Ok(())
}
