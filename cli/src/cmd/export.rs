//! `strata export [-o FILE] CONTAINER`: the container's root filesystem as a tar archive,
//! running or not (a stopped container is mounted through its storage driver for the copy).

use std::io::{IsTerminal, Write};
use std::path::PathBuf;

use strata_runtime::container::copy;
use strata_runtime::outfile::OutputFile;

use super::Global;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Write to a file, instead of STDOUT
    #[arg(short = 'o', long)]
    pub output: Option<PathBuf>,
    pub container: String,
}

pub fn run(global: &Global, args: Args) -> anyhow::Result<()> {
    let rt = global.containers();
    let c = rt.lookup(&args.container)?;
    match &args.output {
        Some(path) => {
            let mut out = OutputFile::create(path, 0o644)?;
            rt.with_rootfs(&c, |root| copy::export(root, out.file()))??;
            out.commit()?;
        }
        None => {
            let stdout = std::io::stdout();
            if stdout.is_terminal() {
                anyhow::bail!(
                    "cowardly refusing to save to a terminal. Use the -o flag or redirect"
                );
            }
            let mut lock = stdout.lock();
            rt.with_rootfs(&c, |root| copy::export(root, &mut lock))??;
            lock.flush()?;
        }
    }
    Ok(())
}
