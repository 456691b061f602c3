//! `strata image SUBCOMMAND` and helpers shared by the image verbs.

use std::io::{BufRead, IsTerminal, Write};

use anyhow::Result;
use chrono::Utc;
use strata_runtime::filters::Filters;
use strata_runtime::store::{ImageRecord, RemoveEvent};

use super::Global;
use crate::units;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(subcommand)]
    command: Sub,
}

#[derive(clap::Subcommand, Debug)]
enum Sub {
    /// List images
    #[command(visible_alias = "list", alias = "images")]
    Ls(super::images::Args),
    /// Remove one or more images
    #[command(visible_aliases = ["remove", "rmi"])]
    Rm(super::rmi::Args),
    /// Create a tag TARGET_IMAGE that refers to SOURCE_IMAGE
    Tag(super::tag::Args),
    /// Display detailed information on one or more images
    Inspect(super::inspect::ImageArgs),
    /// Show the history of an image
    History(super::history::Args),
    /// Save one or more images to a tar archive
    Save(super::save::Args),
    /// Load an image from a tar archive or STDIN
    Load(super::load::Args),
    /// Import the contents from a tarball to create a filesystem image
    Import(super::import::Args),
    /// Remove unused images
    Prune(PruneArgs),
    /// Download an image from a registry
    Pull(super::pull::Args),
    /// Upload an image to a registry
    Push(super::push::Args),
    /// Build an image from a Dockerfile
    Build(super::build::Args),
    /// Convert an image's layers to a seekable format (eStargz)
    Convert(super::convert::Args),
}

pub fn run(global: &Global, args: Args) -> Result<()> {
    match args.command {
        Sub::Ls(a) => super::images::run(global, a),
        Sub::Rm(a) => super::rmi::run(global, a),
        Sub::Tag(a) => super::tag::run(global, a),
        Sub::Inspect(a) => super::inspect::run_image(global, a),
        Sub::History(a) => super::history::run(global, a),
        Sub::Save(a) => super::save::run(global, a),
        Sub::Load(a) => super::load::run(global, a),
        Sub::Import(a) => super::import::run(global, a),
        Sub::Prune(a) => run_prune(global, a),
        Sub::Pull(a) => super::pull::run(global, a),
        Sub::Push(a) => super::push::run(global, a),
        Sub::Build(a) => super::build::run(global, a),
        Sub::Convert(a) => super::convert::run(global, a),
    }
}

/// Print `rmi`-style events (`Untagged: …` / `Deleted: …`), or prune's lowercase form.
pub fn print_events(out: &mut dyn Write, events: &[RemoveEvent], lowercase: bool) -> Result<()> {
    for e in events {
        let (u, d) = if lowercase {
            ("untagged", "deleted")
        } else {
            ("Untagged", "Deleted")
        };
        match e {
            RemoveEvent::Untagged(r) => writeln!(out, "{u}: {}", r.familiar())?,
            RemoveEvent::Deleted(dg) => writeln!(out, "{d}: {dg}")?,
        }
    }
    Ok(())
}

/// `CREATED` of an image: `3 days ago`, or `N/A` without a creation time.
pub fn created_since(img: &ImageRecord) -> String {
    img.created.map(units::ago).unwrap_or_else(|| "N/A".into())
}

/// Ask Docker's `[y/N]` question on stdout; read the answer from stdin (no answer = no).
pub fn confirm(warning: &str) -> Result<bool> {
    let mut out = std::io::stdout();
    write!(out, "{warning}\nAre you sure you want to continue? [y/N] ")?;
    out.flush()?;
    let mut line = String::new();
    let stdin = std::io::stdin();
    if stdin.lock().read_line(&mut line).is_err() {
        return Ok(false);
    }
    if !stdin.is_terminal() && line.is_empty() {
        writeln!(out)?;
    }
    let a = line.trim();
    Ok(a.eq_ignore_ascii_case("y") || a.eq_ignore_ascii_case("yes"))
}

#[derive(clap::Args, Debug)]
pub struct PruneArgs {
    /// Remove all unused images, not just dangling ones
    #[arg(short, long)]
    all: bool,
    /// Do not prompt for confirmation
    #[arg(short, long)]
    force: bool,
    /// Provide filter values (e.g. "until=<timestamp>")
    #[arg(long = "filter")]
    filter: Vec<String>,
}

/// An image against the prune filters (its creation time and its config's labels).
pub(crate) fn image_matches(f: &strata_runtime::filters::PruneFilter, img: &ImageRecord) -> bool {
    let labels = img.config.config.as_ref().and_then(|c| c.labels.as_ref());
    f.matches(img.created.unwrap_or_default(), labels)
}

fn run_prune(global: &Global, a: PruneArgs) -> Result<()> {
    let f = Filters::parse(&a.filter, &["until", "label", "label!", "dangling"])?;
    // `dangling=false` widens the prune to every unused image, as `--all` does.
    let all = a.all || f.bool_value("dangling")? == Some(false);
    let keep = strata_runtime::filters::PruneFilter::from_filters(&f, Utc::now())?;
    if !a.force {
        let warning = if all {
            "WARNING! This will remove all images without at least one container associated to them."
        } else {
            "WARNING! This will remove all dangling images."
        };
        if !confirm(warning)? {
            return Ok(());
        }
    }
    let filter = |img: &ImageRecord| image_matches(&keep, img);
    let (events, reclaimed) = global.engine().prune_images(all, &filter)?;
    let mut out = std::io::stdout().lock();
    if !events.is_empty() {
        writeln!(out, "Deleted Images:")?;
        print_events(&mut out, &events, true)?;
        writeln!(out)?;
    }
    writeln!(
        out,
        "Total reclaimed space: {}",
        units::human_size(reclaimed)
    )?;
    Ok(())
}
