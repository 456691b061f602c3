//! `strata import FILE|- [REPOSITORY[:TAG]]`: a rootfs tarball → one-layer image.

use anyhow::{bail, Result};
use strata_runtime::archive;
use strata_runtime::reference::Reference;

use super::Global;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Apply Dockerfile instruction to the created image
    #[arg(short, long = "change")]
    change: Vec<String>,
    /// Set commit message for imported image
    #[arg(short, long)]
    message: Option<String>,
    /// Set platform if server is multi-platform capable
    #[arg(long)]
    platform: Option<String>,
    /// file|URL|-
    source: String,
    /// REPOSITORY[:TAG]
    reference: Option<String>,
}

pub fn run(global: &Global, args: Args) -> Result<()> {
    let tag = args
        .reference
        .as_deref()
        .map(Reference::parse_with_default_tag)
        .transpose()?;
    if args.source.starts_with("http://") || args.source.starts_with("https://") {
        bail!("importing from a URL is not supported: download the file and import it");
    }
    let store = global.store()?;
    let id = if args.source == "-" {
        let stdin = std::io::stdin();
        let lock = stdin.lock();
        archive::import(
            &store,
            lock,
            &args.change,
            args.message.as_deref(),
            tag.as_ref(),
        )?
    } else {
        let f = std::fs::File::open(&args.source)
            .map_err(|e| anyhow::anyhow!("open {}: {}", args.source, archive::go_io_error(&e)))?;
        archive::import(
            &store,
            f,
            &args.change,
            args.message.as_deref(),
            tag.as_ref(),
        )?
    };
    println!("{id}");
    Ok(())
}
