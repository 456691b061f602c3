//! `strata rm`.

use strata_runtime::container::ContainerError;

use super::stop::each;
use super::Global;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Force the removal of a running container (uses SIGKILL)
    #[arg(short = 'f', long)]
    pub force: bool,
    /// Remove anonymous volumes associated with the container
    #[arg(short = 'v', long)]
    pub volumes: bool,
    #[arg(required = true)]
    pub containers: Vec<String>,
}

pub fn run(global: &Global, args: Args) -> anyhow::Result<()> {
    let rt = global.containers();
    each(rt, &args.containers, |rt, n| {
        let c = rt.lookup(n)?;
        rt.remove(&c, args.force).map_err(|e| match e {
            // Another `rm` removed it meanwhile: Docker names what the user typed.
            ContainerError::NoSuchContainer(_) => ContainerError::NoSuchContainer(n.to_string()),
            e => e,
        })?;
        if args.volumes {
            super::volume::remove_anonymous(global, &c.config.volumes);
        }
        Ok(())
    })
}
