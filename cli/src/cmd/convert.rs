//! `strata image convert --estargz [--prefetch-from FILE] SOURCE TARGET`: a new image whose
//! layers are eStargz (seekable gzip: lazily pullable, still an ordinary image for any tool).
//! Prints the new image ID, like `docker commit`.

use anyhow::{bail, Context, Result};
use strata_runtime::reference::Reference;
use strata_runtime::seekable::convert::convert_image;
use strata_runtime::seekable::EstargzOptions;

use super::image::open_store;
use super::Global;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Convert the layers to eStargz
    #[arg(long)]
    estargz: bool,
    /// File listing paths (one per line) a run reads first: placed before the prefetch landmark
    #[arg(long, value_name = "FILE")]
    prefetch_from: Option<std::path::PathBuf>,
    /// eStargz chunk size in bytes for large files
    #[arg(long, value_name = "BYTES", default_value_t = strata_runtime::seekable::estargz::DEFAULT_CHUNK_SIZE)]
    estargz_chunk_size: u64,
    /// eStargz gzip compression level (0-9)
    #[arg(long, value_name = "LEVEL", default_value_t = 6, value_parser = clap::value_parser!(u32).range(0..=9))]
    estargz_compression_level: u32,
    /// SOURCE_IMAGE[:TAG]
    source: String,
    /// TARGET_IMAGE[:TAG]
    target: String,
}

pub fn run(global: &Global, args: Args) -> Result<()> {
    if !args.estargz {
        bail!("no conversion specified: use --estargz");
    }
    if args.estargz_chunk_size == 0 {
        bail!("invalid --estargz-chunk-size: must be greater than 0");
    }
    let target = Reference::parse(&args.target)?;
    if target.digest().is_some() {
        bail!("refusing to create a tag with a digest reference");
    }
    let prioritized = match &args.prefetch_from {
        Some(p) => std::fs::read_to_string(p)
            .with_context(|| format!("reading {}", p.display()))?
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(String::from)
            .collect(),
        None => Vec::new(),
    };
    let store = open_store(global)?;
    let img = store.resolve(&args.source)?;
    let opts = EstargzOptions {
        chunk_size: args.estargz_chunk_size,
        prioritized,
        level: args.estargz_compression_level,
    };
    let converted = convert_image(&store, &img, &[target.with_default_tag()], &opts)?;
    println!("{}", converted.id);
    Ok(())
}
