//! `strata push NAME[:TAG]`: Docker's output —
//! `The push refers to repository [<name>]`, one line per layer (`Pushed`, `Layer already exists`,
//! `Mounted from <repo>`), then `<tag>: digest: <digest> size: <bytes>`.

use std::io::{IsTerminal, Write};
use std::sync::Mutex;

use strata_runtime::reference::Reference;
use strata_runtime::registry::{self, PushEvent, PushOptions, PushStatus};

use super::Global;

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
    let reference = Reference::parse(&args.name).map_err(|e| anyhow::anyhow!("{e}"))?;
    if reference.digest().is_some() {
        anyhow::bail!("cannot push a digest reference");
    }
    let store = super::pull::open_store(global)?;
    let opts = PushOptions {
        insecure: global.insecure_registries.clone(),
        chunk_size: args.chunk_size,
        parallel: args.max_concurrent_uploads.max(1),
        compression: args.compression,
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
    let tty = std::io::stdout().is_terminal();
    let lines: Mutex<Vec<(String, String)>> = Mutex::new(Vec::new());
    let progress = |e: PushEvent| {
        if quiet {
            return;
        }
        let mut out = std::io::stdout().lock();
        match e {
            PushEvent::Repository(name) => {
                let _ = writeln!(out, "The push refers to repository [{name}]");
            }
            PushEvent::Layer { id, status } => {
                let final_line = matches!(
                    status,
                    PushStatus::Pushed | PushStatus::AlreadyExists | PushStatus::MountedFrom(_)
                );
                if tty {
                    let Ok(mut l) = lines.lock() else { return };
                    let text = match &status {
                        PushStatus::Pushing { done, total } => format!("Pushing {done}/{total}"),
                        s => s.text(),
                    };
                    let up = l.len();
                    match l.iter_mut().find(|(i, _)| *i == id) {
                        Some(entry) => entry.1 = text,
                        None => l.push((id, text)),
                    }
                    let mut buf = String::new();
                    if up > 0 {
                        buf.push_str(&format!("\x1b[{up}A"));
                    }
                    for (i, t) in l.iter() {
                        buf.push_str(&format!("\r\x1b[2K{i}: {t}\n"));
                    }
                    let _ = out.write_all(buf.as_bytes());
                } else if final_line {
                    let _ = writeln!(out, "{id}: {}", status.text());
                }
            }
        }
        let _ = out.flush();
    };
    let outcome =
        registry::push(store, reference, opts, &progress).map_err(|e| anyhow::anyhow!("{e}"))?;
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
