//! `strata tag SOURCE TARGET`.

use anyhow::{bail, Result};
use strata_runtime::reference::Reference;

use super::Global;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// SOURCE_IMAGE[:TAG]
    source: String,
    /// TARGET_IMAGE[:TAG]
    target: String,
}

pub fn run(global: &Global, args: Args) -> Result<()> {
    let target = Reference::parse(&args.target)?;
    if target.digest().is_some() {
        bail!("refusing to create a tag with a digest reference");
    }
    let store = global.store()?;
    let img = store.resolve(&args.source)?;
    store.tag(&img.id, &target.with_default_tag())?;
    Ok(())
}
