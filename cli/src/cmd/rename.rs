//! `strata rename CONTAINER NEW_NAME`.

use super::Global;

#[derive(clap::Args, Debug)]
pub struct Args {
    pub container: String,
    pub new_name: String,
}

pub fn run(global: &Global, args: Args) -> anyhow::Result<()> {
    let rt = global.containers();
    let c = rt.lookup(&args.container)?;
    rt.rename(&c, &args.new_name)?;
    Ok(())
}
