//! `strata logs`.

use std::io::Write;
use std::time::Duration;

use strata_runtime::container::logs::{LogEntry, LogReader};

use super::Global;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Follow log output
    #[arg(short = 'f', long)]
    pub follow: bool,
    /// Number of lines to show from the end of the logs ("all" for every line)
    #[arg(short = 'n', long, default_value = "all")]
    pub tail: String,
    /// Show timestamps
    #[arg(short = 't', long)]
    pub timestamps: bool,
    pub container: String,
}

pub(crate) fn emit(entries: &[LogEntry], timestamps: bool) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    let mut err = std::io::stderr().lock();
    for e in entries {
        let w: &mut dyn Write = if e.stream == "stderr" {
            &mut err
        } else {
            &mut out
        };
        if timestamps {
            write!(w, "{} ", e.timestamp())?;
        }
        w.write_all(e.log.as_bytes())?;
    }
    out.flush()?;
    err.flush()
}

pub fn run(global: &Global, args: Args) -> anyhow::Result<()> {
    let rt = global.containers();
    let c = rt.lookup(&args.container)?;
    let tail: Option<usize> = if args.tail == "all" || args.tail == "-1" {
        None
    } else {
        Some(
            args.tail
                .parse()
                .map_err(|_| anyhow::anyhow!("invalid value for --tail: {}", args.tail))?,
        )
    };
    let path = c.paths.log();
    let mut reader = match LogReader::open(&path) {
        Ok(r) => Some(r),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(e.into()),
    };
    if let Some(r) = reader.as_mut() {
        let mut first = r.read_new()?;
        if let Some(n) = tail {
            let skip = first.len().saturating_sub(n);
            first.drain(..skip);
        }
        emit(&first, args.timestamps)?;
    }
    if !args.follow {
        return Ok(());
    }
    loop {
        let running = rt
            .lookup(c.id().as_str())
            .map(|c| c.is_running())
            .unwrap_or(false);
        if reader.is_none() {
            reader = LogReader::open(&path).ok();
        }
        if let Some(r) = reader.as_mut() {
            let more = r.read_new()?;
            emit(&more, args.timestamps)?;
        }
        if !running {
            // One last read: the supervisor finished writing before it recorded the exit.
            if let Some(r) = reader.as_mut() {
                emit(&r.read_new()?, args.timestamps)?;
            }
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
