//! `strata rmi` / `strata image rm` (SPEC §7).

use anyhow::Result;

use super::image::print_events;
use super::{ExitStatus, Global};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Force removal of the image
    #[arg(short, long)]
    force: bool,
    /// Do not delete untagged parents
    #[arg(long = "no-prune")]
    no_prune: bool,
    /// IMAGE [IMAGE...]
    #[arg(required = true, value_name = "IMAGE")]
    images: Vec<String>,
}

pub fn run(global: &Global, args: Args) -> Result<()> {
    let removed = global
        .engine()
        .remove_images(&args.images, args.force, !args.no_prune)?;
    let mut failed = false;
    let mut out = std::io::stdout().lock();
    for outcome in removed {
        match outcome {
            Ok(events) => print_events(&mut out, &events, false)?,
            Err(e) => {
                eprintln!("Error: {e}");
                failed = true;
            }
        }
    }
    if failed {
        return Err(ExitStatus(1).into());
    }
    Ok(())
}
