//! `strata mount CONTAINER`: print where a running container's rootfs is mounted on the host.

use super::Global;

#[derive(clap::Args, Debug)]
pub struct Args {
    pub container: String,
}

pub fn run(global: &Global, args: Args) -> anyhow::Result<()> {
    let rt = global.containers();
    let c = rt.lookup(&args.container)?;
    let Some(rootfs) = c.mounted_rootfs() else {
        anyhow::bail!(
            "container {} is not running: its rootfs is mounted only while it runs",
            args.container
        );
    };
    println!("{}", rootfs.display());
    Ok(())
}
