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
    let store = global.store()?;
    let uses = global.engine().image_users()?;
    let mut failed = false;
    let mut out = std::io::stdout().lock();
    for q in &args.images {
        match store.remove_image(q, args.force, !args.no_prune, &uses) {
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
