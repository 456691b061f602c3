//! `strata pause` / `unpause`: freeze and thaw every process of a container (cgroup freezer).

use super::stop::each;
use super::Global;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[arg(required = true)]
    pub containers: Vec<String>,
}

pub fn run_pause(global: &Global, args: Args) -> anyhow::Result<()> {
    let rt = global.containers();
    each(rt, &args.containers, |rt, n| {
        let c = rt.lookup(n)?;
        rt.pause(&c)?;
        Ok(())
    })
}

pub fn run_unpause(global: &Global, args: Args) -> anyhow::Result<()> {
    let rt = global.containers();
    each(rt, &args.containers, |rt, n| {
        let c = rt.lookup(n)?;
        rt.unpause(&c)?;
        Ok(())
    })
}
