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
    /// Upload blobs in chunks of this many bytes instead of one request each
    #[arg(long, hide = true, env = "STRATA_PUSH_CHUNK_SIZE")]
    pub chunk_size: Option<u64>,
    /// Image to push: NAME[:TAG]
    pub name: String,
}

pub fn run(global: &Global, args: Args) -> anyhow::Result<()> {
    let reference = Reference::parse(&args.name).map_err(|e| anyhow::anyhow!("{e}"))?;
    if reference.digest().is_some() {
        anyhow::bail!("cannot push a digest reference");
    }
    let mut out = std::io::stdout().lock();
    if reference.tag().is_none() && !args.quiet {
        writeln!(out, "Using default tag: latest")?;
    }
    drop(out);
    let store = super::pull::open_store(global)?;
    let opts = PushOptions {
        insecure: global.insecure_registries.clone(),
        chunk_size: args.chunk_size,
    };
    let tty = std::io::stdout().is_terminal();
    let lines: Mutex<Vec<(String, String)>> = Mutex::new(Vec::new());
    let quiet = args.quiet;
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
        registry::push(&store, &reference, &opts, &progress).map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut out = std::io::stdout().lock();
    if args.quiet {
        writeln!(out, "{}", reference.with_default_tag())?;
    } else {
        writeln!(
            out,
            "{}: digest: {} size: {}",
            outcome.tag, outcome.digest, outcome.size
        )?;
    }
    Ok(())
}
