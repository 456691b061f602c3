//! `strata pull [-q] [--platform os/arch[/variant]] [--all-tags] NAME[:TAG|@DIGEST]`.
//!
//! Output as Docker's: `Using default tag: latest`, `<tag>: Pulling from <path>`, per layer
//! `Pulling fs layer`, `Waiting`, `Verifying Checksum`, `Download complete`, `Pull complete` (or
//! `Already exists`) as lines when piped (live per-layer status lines with progress bars on a
//! TTY), `Digest: …`, `Status: …`, then the canonical reference.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::Context;
use strata_runtime::reference::Reference;
use strata_runtime::registry::manifest::Platform;
use strata_runtime::registry::pull::list_tags;
use strata_runtime::registry::{self, LayerStatus, PullEvent, PullOptions, PullOutcome};
use strata_runtime::store::Store;

use super::Global;

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
    /// Fetch only the table of contents of seekable (eStargz) layers now; a container reads
    /// their files on demand while the rest downloads in the background
    #[arg(long)]
    pub lazy: bool,
    /// Image to pull: NAME[:TAG|@DIGEST]
    pub name: String,
}

pub fn run(global: &Global, args: Args) -> anyhow::Result<()> {
    let reference = Reference::parse(&args.name).map_err(|e| anyhow::anyhow!("{e}"))?;
    let opts = PullOptions {
        platform: args
            .platform
            .as_deref()
            .filter(|p| !p.is_empty())
            .map(Platform::parse)
            .transpose()
            .map_err(|e| anyhow::anyhow!("{e}"))?,
        insecure: global.insecure_registries.clone(),
        parallel: args.max_concurrent_downloads.max(1),
    };
    let store = open_store(global)?;
    // Not locked across a pull: its download threads print status lines too.
    let mut out = std::io::stdout();
    if args.all_tags {
        if reference.tag().is_some() || reference.digest().is_some() {
            anyhow::bail!("tag can't be used with --all-tags/-a");
        }
        let tags = list_tags(&reference, &opts).map_err(|e| anyhow::anyhow!("{e}"))?;
        let mut newer = false;
        for tag in tags {
            let r = reference
                .with_tag(&tag)
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            let outcome = pull_with_output(&store, &r, &opts, args.quiet, false, args.lazy)?;
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
    let outcome = pull_with_output(&store, &reference, &opts, args.quiet, true, args.lazy)?;
    writeln!(out, "{}", outcome.reference)?;
    Ok(())
}

pub fn open_store(global: &Global) -> anyhow::Result<Store> {
    Store::open(&global.root)
        .with_context(|| format!("opening the image store at {}", global.root.display()))
}

/// Pull `reference` for `run`/`create` when it is not in the store: Docker prints its progress
/// on stderr there (`Unable to find image` comes first, printed by the caller).
pub fn pull_for_run(global: &Global, reference: &Reference) -> anyhow::Result<PullOutcome> {
    pull_for_run_with(global, reference, false)
}

/// [`pull_for_run`], lazily (`run --lazy`) when `lazy`.
pub fn pull_for_run_with(
    global: &Global,
    reference: &Reference,
    lazy: bool,
) -> anyhow::Result<PullOutcome> {
    let store = open_store(global)?;
    let opts = PullOptions {
        insecure: global.insecure_registries.clone(),
        ..PullOptions::default()
    };
    let renderer = Renderer::new(
        false,
        std::io::stderr().is_terminal(),
        Box::new(std::io::stderr()),
    );
    let reference = reference.clone().with_default_tag();
    let outcome = if lazy {
        strata_runtime::lazy::pull_lazy(&store, &reference, &opts, &|e| renderer.event(e))
    } else {
        registry::pull(&store, &reference, &opts, &|e| renderer.event(e))
    }
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    renderer.finish(&outcome, true);
    Ok(outcome)
}

fn pull_with_output(
    store: &Store,
    reference: &Reference,
    opts: &PullOptions,
    quiet: bool,
    status_line: bool,
    lazy: bool,
) -> anyhow::Result<PullOutcome> {
    let tty = std::io::stdout().is_terminal();
    let renderer = Renderer::new(quiet, tty, Box::new(std::io::stdout()));
    let pulled = if lazy {
        strata_runtime::lazy::pull_lazy(store, reference, opts, &|e| renderer.event(e))
    } else {
        registry::pull(store, reference, opts, &|e| renderer.event(e))
    };
    let outcome = pulled.map_err(|e| {
        renderer.abandon();
        anyhow::anyhow!("{e}")
    })?;
    if !lazy {
        // Layers an earlier `pull --lazy` left lazy are fetched now (resumed where they were).
        strata_runtime::lazy::complete_image(store, &outcome.image_id)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    renderer.finish(&outcome, status_line);
    Ok(outcome)
}

/// Renders pull events: final lines only when not a TTY; live per-layer lines on a TTY.
struct Renderer {
    quiet: bool,
    tty: bool,
    state: Mutex<State>,
}

struct State {
    out: Box<dyn Write + Send>,
    /// Layer ids in first-seen order with their current line.
    order: Vec<String>,
    lines: BTreeMap<String, String>,
    /// Lines of the live block currently on screen.
    drawn: usize,
    /// When the block was last redrawn: byte-count updates redraw at most every 100 ms.
    last_draw: Option<Instant>,
}

fn human(n: u64) -> String {
    let n = n as f64;
    if n >= 1e9 {
        format!("{:.3}GB", n / 1e9)
    } else if n >= 1e6 {
        format!("{:.2}MB", n / 1e6)
    } else if n >= 1e3 {
        format!("{:.1}kB", n / 1e3)
    } else {
        format!("{n}B")
    }
}

fn bar(done: u64, total: u64) -> String {
    let width = 50usize;
    let filled = if total == 0 {
        width
    } else {
        ((done as f64 / total as f64) * width as f64) as usize
    }
    .min(width);
    let mut s = String::from("[");
    s.push_str(&"=".repeat(filled.saturating_sub(1)));
    if filled > 0 {
        s.push('>');
    }
    s.push_str(&" ".repeat(width - filled));
    s.push(']');
    format!("{s}  {}/{}", human(done), human(total))
}

impl Renderer {
    fn new(quiet: bool, tty: bool, out: Box<dyn Write + Send>) -> Renderer {
        Renderer {
            quiet,
            tty,
            state: Mutex::new(State {
                out,
                order: Vec::new(),
                lines: BTreeMap::new(),
                drawn: 0,
                last_draw: None,
            }),
        }
    }

    fn event(&self, e: PullEvent) {
        if self.quiet {
            return;
        }
        let Ok(mut st) = self.state.lock() else {
            return;
        };
        match e {
            PullEvent::PullingFrom {
                reference,
                repository,
            } => {
                st.order.clear();
                st.lines.clear();
                st.drawn = 0;
                let _ = writeln!(st.out, "{reference}: Pulling from {repository}");
            }
            PullEvent::Layer { id, status } => {
                if !self.tty {
                    // Docker's non-terminal output: every status line except those that carry
                    // a progress bar (`Downloading`, `Extracting`).
                    if !matches!(
                        status,
                        LayerStatus::Downloading { .. } | LayerStatus::Extracting
                    ) {
                        let _ = writeln!(st.out, "{id}: {}", status.text());
                        let _ = st.out.flush();
                    }
                    return;
                }
                let text = match status {
                    LayerStatus::Downloading { done, total } => {
                        format!("Downloading {}", bar(done, total))
                    }
                    other => other.text().to_string(),
                };
                if !st.lines.contains_key(&id) {
                    st.order.push(id.clone());
                }
                // Byte counts redraw at most every 100 ms; status changes always do.
                let was_downloading = st
                    .lines
                    .get(&id)
                    .is_some_and(|l| l.starts_with("Downloading"));
                st.lines.insert(id, text);
                let downloading = matches!(status, LayerStatus::Downloading { .. });
                let recent = st
                    .last_draw
                    .is_some_and(|t| t.elapsed() < Duration::from_millis(100));
                if downloading && was_downloading && recent {
                    return;
                }
                st.last_draw = Some(Instant::now());
                redraw(&mut st);
            }
            PullEvent::Digest(d) => {
                st.drawn = 0;
                let _ = writeln!(st.out, "Digest: {d}");
            }
        }
        let _ = st.out.flush();
    }

    /// Leave the live block as it is (an error message follows).
    fn abandon(&self) {
        if let Ok(mut st) = self.state.lock() {
            let _ = st.out.flush();
        }
    }

    fn finish(&self, outcome: &PullOutcome, status_line: bool) {
        if self.quiet || !status_line {
            return;
        }
        let Ok(mut st) = self.state.lock() else {
            return;
        };
        let status = if outcome.up_to_date {
            "Image is up to date for"
        } else {
            "Downloaded newer image for"
        };
        let _ = writeln!(st.out, "Status: {status} {}", outcome.reference.familiar());
        let _ = st.out.flush();
    }
}

fn redraw(st: &mut State) {
    let mut buf = String::new();
    if st.drawn > 0 {
        buf.push_str(&format!("\x1b[{}A", st.drawn));
    }
    for id in &st.order {
        let line = st.lines.get(id).map(String::as_str).unwrap_or("");
        buf.push_str(&format!("\r\x1b[2K{id}: {line}\n"));
    }
    st.drawn = st.order.len();
    let _ = st.out.write_all(buf.as_bytes());
}
