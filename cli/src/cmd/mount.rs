//! `strata mount CONTAINER`: print where a running container's rootfs is mounted on the host.

use super::Global;

#[derive(clap::Args, Debug)]
pub struct Args {
    pub container: String,
}

pub fn run(global: &Global, args: Args) -> anyhow::Result<()> {
    let rt = global.containers();
    let c = rt.lookup(&args.container)?;
    let rootfs = c.paths.rootfs();
    if !c.is_running() || !strata_runtime::driver::is_mountpoint(&rootfs) {
        anyhow::bail!(
            "container {} is not running: its rootfs is mounted only while it runs",
            args.container
        );
    }
    println!("{}", rootfs.display());
    Ok(())
}
