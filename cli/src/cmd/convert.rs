//! `strata image convert --estargz [--prefetch-from FILE] [--record [-- CMD…]] SOURCE TARGET`:
//! a new image whose layers are eStargz (seekable gzip: lazily pullable, still an ordinary image
//! for any tool). Prints the new image ID, like `docker commit`.
//!
//! `--record` runs SOURCE once (`run --rm --network none`, its default command or CMD, stopped
//! after `--record-timeout` seconds) and places the files it opened first, in that order.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use strata_runtime::reference::Reference;
use strata_runtime::seekable::convert::convert_image;
use strata_runtime::seekable::EstargzOptions;

use super::Global;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Convert the layers to eStargz
    #[arg(long)]
    estargz: bool,
    /// File listing paths (one per line) a run reads first: placed before the prefetch landmark
    #[arg(long, value_name = "FILE")]
    prefetch_from: Option<std::path::PathBuf>,
    /// Run the image once and place the files it opens first (before the prefetch landmark)
    #[arg(long)]
    record: bool,
    /// Seconds the recording run may take before it is stopped
    #[arg(long, value_name = "SECONDS", default_value_t = 10)]
    record_timeout: u64,
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
    /// Command for the recording run (default: the image's)
    #[arg(last = true)]
    command: Vec<String>,
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
    let mut prioritized: Vec<String> = match &args.prefetch_from {
        Some(p) => std::fs::read_to_string(p)
            .with_context(|| format!("reading {}", p.display()))?
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(String::from)
            .collect(),
        None => Vec::new(),
    };
    let store = global.store()?;
    let img = store.resolve(&args.source)?;
    if args.record {
        let mut recorded = record_run(global, &img, &args.command, args.record_timeout)?;
        recorded.append(&mut prioritized);
        prioritized = recorded;
    } else if !args.command.is_empty() {
        bail!("a command is only used with --record");
    }
    let opts = EstargzOptions {
        chunk_size: args.estargz_chunk_size,
        prioritized,
        level: args.estargz_compression_level,
    };
    let converted = convert_image(&store, &img, &[target.with_default_tag()], &opts)?;
    println!("{}", converted.id);
    Ok(())
}

/// Run `img` once under the recorder; the image paths it opened, first open first.
fn record_run(
    global: &Global,
    img: &strata_runtime::store::ImageRecord,
    command: &[String],
    timeout: u64,
) -> Result<Vec<String>> {
    use strata_runtime::seekable::record;
    let hexes: Vec<String> = img.chain_ids.iter().map(|c| c.hex().to_string()).collect();
    let recorder = record::start(&global.engine().layers_dir()?, &hexes)?;
    let exe = std::env::current_exe().context("cannot find the strata executable")?;
    let name = format!("strata-record-{}", std::process::id());
    let strata = |args: &[&str]| {
        let mut c = Command::new(&exe);
        c.arg("--root")
            .arg(global.engine().root())
            .arg("--runroot")
            .arg(global.engine().runroot())
            // The union filesystem reads from the layer dirs the recorder watches.
            .args(["--storage-driver", "fuse"])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        c
    };
    let mut child = strata(&[
        "run",
        "--rm",
        "--network",
        "none",
        "--name",
        &name,
        img.id.as_str(),
    ])
    .args(command)
    .spawn()
    .context("starting the recording run")?;
    let deadline = Instant::now() + Duration::from_secs(timeout);
    let status = loop {
        if let Some(s) = child.try_wait()? {
            break s;
        }
        if Instant::now() >= deadline {
            let _ = strata(&["rm", "-f", &name]).stderr(Stdio::null()).status();
            break child.wait()?;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let paths = recorder.finish();
    if matches!(status.code(), Some(125..=127)) {
        bail!("the recording run failed (exit status {status})");
    }
    Ok(paths)
}
