//! `strata pull [-q] [--platform os/arch[/variant]] [--all-tags] NAME[:TAG|@DIGEST]`.
//!
//! Output as Docker's: `Using default tag: latest`, `<tag>: Pulling from <path>`, per layer
//! `Pulling fs layer`, `Waiting`, `Verifying Checksum`, `Download complete`, `Pull complete` (or
//! `Already exists`) as lines when piped (live per-layer status lines with progress bars on a
//! TTY), `Digest: …`, `Status: …`, then the canonical reference.

use std::io::{IsTerminal, Write};

use strata_runtime::reference::Reference;
use strata_runtime::registry::manifest::Platform;
use strata_runtime::registry::pull::list_tags;
use strata_runtime::registry::{self, PullOptions, PullOutcome};
use strata_runtime::store::Store;

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
    /// Set platform if server is multi-platform capable
    #[arg(long, env = "DOCKER_DEFAULT_PLATFORM")]
    pub platform: Option<String>,
    /// Download all tagged images in the repository
    #[arg(short = 'a', long)]
    pub all_tags: bool,
    /// Maximum number of concurrent layer downloads
    #[arg(
        long,
        default_value_t = 3,
        hide = true,
        env = "STRATA_MAX_CONCURRENT_DOWNLOADS"
    )]
    pub max_concurrent_downloads: usize,
    /// Fetch only the table of contents of seekable (eStargz, zstd:chunked) layers now; a
    /// container reads their files on demand while the rest downloads in the background (the
    /// default with `STRATA_LAZY_PULL=1` or `"lazy-pull": true` in strata.json)
    #[arg(long)]
    pub lazy: bool,
    /// Image to pull: NAME[:TAG|@DIGEST]
    pub name: String,
}

pub fn run(global: &Global, args: Args) -> anyhow::Result<()> {
    let reference = Reference::parse(&args.name)?;
    let opts = PullOptions {
        platform: args
            .platform
            .as_deref()
            .filter(|p| !p.is_empty())
            .map(Platform::parse)
            .transpose()?,
        parallel: args.max_concurrent_downloads.max(1),
        lazy: args.lazy || global.engine().lazy_pull(),
        ..global.engine().pull_options()
    };
    let store = global.store()?;
    // Not locked across a pull: its download threads print status lines too.
    let mut out = std::io::stdout();
    if args.all_tags {
        if reference.tag().is_some() || reference.digest().is_some() {
            anyhow::bail!("tag can't be used with --all-tags/-a");
        }
        let tags = list_tags(&reference, &opts)?;
        let mut newer = false;
        for tag in tags {
            let r = reference.with_tag(&tag)?;
            let outcome = pull_with_output(&store, &r, &opts, args.quiet, false)?;
            newer |= !outcome.up_to_date;
        }
        if !args.quiet {
            let status = if newer {
                "Downloaded newer image for"
            } else {
                "Image is up to date for"
            };
            writeln!(out, "Status: {status} {}", reference.familiar_name())?;
        }
        writeln!(out, "{}", reference.name())?;
        return Ok(());
    }
    let defaulted = reference.tag().is_none() && reference.digest().is_none();
    if defaulted && !args.quiet {
        writeln!(out, "Using default tag: latest")?;
    }
    let reference = reference.with_default_tag();
    let outcome = pull_with_output(&store, &reference, &opts, args.quiet, true)?;
    writeln!(out, "{}", outcome.reference)?;
    Ok(())
}

/// Pull `reference` for `run`/`create` when it is not in the store: Docker prints its progress
/// on stderr there (`Unable to find image` comes first, printed by the caller).
pub fn pull_for_run(global: &Global, reference: &Reference) -> anyhow::Result<PullOutcome> {
    let store = global.store()?;
    let opts = global.engine().pull_options();
    let progress = for_run();
    let outcome = registry::pull(&store, &reference.clone().with_default_tag(), &opts, &|e| {
        progress.pull(e)
    })?;
    progress.pull_status(&outcome);
    Ok(outcome)
}

/// The renderer of a pull that `run`/`create`/`build` start: Docker prints it on stderr.
pub fn for_run() -> Progress {
    Progress::new(
        false,
        std::io::stderr().is_terminal(),
        Box::new(std::io::stderr()),
    )
}

fn pull_with_output(
    store: &Store,
    reference: &Reference,
    opts: &PullOptions,
    quiet: bool,
    status_line: bool,
) -> anyhow::Result<PullOutcome> {
    let tty = std::io::stdout().is_terminal();
    let progress = Progress::new(quiet, tty, Box::new(std::io::stdout()));
    let outcome = if opts.lazy {
        strata_runtime::lazy::pull_lazy(store, reference, opts, &|e| progress.pull(e))
    } else {
        registry::pull(store, reference, opts, &|e| progress.pull(e))
    }
    .inspect_err(|_| progress.abandon())?;
    if !opts.lazy {
        // Layers an earlier `pull --lazy` left lazy are fetched now (resumed where they were).
        strata_runtime::lazy::complete_image(store, &outcome.image_id)?;
    }
    if status_line {
        progress.pull_status(&outcome);
    }
    Ok(outcome)
}
