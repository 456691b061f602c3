//! `strata push NAME[:TAG]`: Docker's output —
//! `The push refers to repository [<name>]`, one line per layer (`Pushed`, `Layer already exists`,
//! `Mounted from <repo>`), then `<tag>: digest: <digest> size: <bytes>`.

use std::io::{IsTerminal, Write};

use strata_runtime::reference::Reference;
use strata_runtime::registry::{self, PushOptions};

use super::Global;
use crate::progress::Progress;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Suppress verbose output
    #[arg(short, long)]
    pub quiet: bool,
    /// Skip image verification (accepted for Docker compatibility; content trust is not implemented)
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", hide = true)]
    pub disable_content_trust: Option<bool>,
    /// Upload blobs in chunks of this many bytes instead of one request each
    #[arg(long, hide = true, env = "STRATA_PUSH_CHUNK_SIZE")]
    pub chunk_size: Option<u64>,
    /// Maximum number of concurrent blob uploads
    #[arg(
        long,
        default_value_t = 3,
        hide = true,
        env = "STRATA_MAX_CONCURRENT_UPLOADS"
    )]
    pub max_concurrent_uploads: usize,
    /// Layer compression: gzip (layers as stored), estargz (converted, lazily pullable) or zstd:chunked
    #[arg(long, value_name = "FORMAT")]
    pub compression: Option<strata_runtime::seekable::LayerCompression>,
    /// Push all tags of an image to the repository
    #[arg(short = 'a', long)]
    pub all_tags: bool,
    /// Image to push: NAME[:TAG]
    pub name: String,
}

pub fn run(global: &Global, args: Args) -> anyhow::Result<()> {
    let reference = Reference::parse(&args.name)?;
    if reference.digest().is_some() {
        anyhow::bail!("cannot push a digest reference");
    }
    let store = global.store()?;
    let opts = PushOptions {
        chunk_size: args.chunk_size,
        parallel: args.max_concurrent_uploads.max(1),
        compression: args.compression,
        ..global.engine().push_options()
    };
    if args.all_tags {
        if reference.tag().is_some() {
            anyhow::bail!("tag can't be used with --all-tags/-a");
        }
        let repo = reference.repository();
        let mut tags: Vec<Reference> = store
            .images()?
            .into_iter()
            .flat_map(|i| i.repo_tags)
            .filter(|t| t.repository() == repo)
            .collect();
        tags.sort();
        if tags.is_empty() {
            anyhow::bail!(
                "An image does not exist locally with the tag: {}",
                reference.familiar_name()
            );
        }
        for t in &tags {
            push_one(&store, t, &opts, args.quiet)?;
        }
        return Ok(());
    }
    if reference.tag().is_none() && !args.quiet {
        println!("Using default tag: latest");
    }
    push_one(&store, &reference, &opts, args.quiet)
}

fn push_one(
    store: &strata_runtime::store::Store,
    reference: &Reference,
    opts: &PushOptions,
    quiet: bool,
) -> anyhow::Result<()> {
    let progress = Progress::new(
        quiet,
        std::io::stdout().is_terminal(),
        Box::new(std::io::stdout()),
    );
    let outcome = registry::push(store, reference, opts, &|e| progress.push(e))
        .inspect_err(|_| progress.abandon())?;
    let mut out = std::io::stdout().lock();
    if quiet {
        writeln!(out, "{}", reference.clone().with_default_tag())?;
    } else {
        writeln!(
            out,
            "{}: digest: {} size: {}",
            outcome.tag, outcome.digest, outcome.size
        )?;
    }
    Ok(())
}
