//! `strata logs`.

use std::io::Write;
use std::time::Duration;

use chrono::{DateTime, Utc};

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
    /// Show extra details provided to logs
    #[arg(long)]
    pub details: bool,
    /// Show logs since timestamp (e.g. "2013-01-02T13:23:37Z") or relative (e.g. "42m" for 42 minutes)
    #[arg(long)]
    pub since: Option<String>,
    /// Show logs before a timestamp (e.g. "2013-01-02T13:23:37Z") or relative (e.g. "42m" for 42 minutes)
    #[arg(long)]
    pub until: Option<String>,
    pub container: String,
}

/// `--since`/`--until` as times (Docker's forms and message).
fn time_arg(flag: &str, v: &Option<String>) -> anyhow::Result<Option<DateTime<Utc>>> {
    v.as_deref()
        .map(|s| {
            strata_runtime::timeargs::parse_time_arg(s, Utc::now()).ok_or_else(|| {
                anyhow::anyhow!(
                    "invalid value for \"{flag}\": failed to parse value as time or duration: \"{s}\""
                )
            })
        })
        .transpose()
}

/// How `logs` prints a record: `-t`'s timestamp, then `--details`' attributes.
#[derive(Clone, Copy, Default)]
pub(crate) struct Shown {
    pub timestamps: bool,
    pub details: bool,
}

pub(crate) fn emit(entries: &[LogEntry], shown: Shown) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    let mut err = std::io::stderr().lock();
    for e in entries {
        let w: &mut dyn Write = if e.stream == "stderr" {
            &mut err
        } else {
            &mut out
        };
        if shown.timestamps {
            write!(w, "{} ", e.timestamp())?;
        }
        if shown.details {
            write!(w, "{} ", e.details())?;
        }
        w.write_all(e.log.as_bytes())?;
    }
    out.flush()?;
    err.flush()
}

pub fn run(global: &Global, args: Args) -> anyhow::Result<()> {
    let rt = global.containers();
    let c = rt.lookup(&args.container)?;
    if !c.config.log_config.readable() {
        anyhow::bail!("configured logging driver does not support reading");
    }
    let tail: Option<usize> = if args.tail == "all" || args.tail == "-1" {
        None
    } else {
        Some(
            args.tail
                .parse()
                .map_err(|_| anyhow::anyhow!("invalid value for --tail: {}", args.tail))?,
        )
    };
    let since = time_arg("since", &args.since)?;
    let until = time_arg("until", &args.until)?;
    let in_window =
        |e: &LogEntry| since.is_none_or(|t| e.time >= t) && until.is_none_or(|t| e.time <= t);
    let shown = Shown {
        timestamps: args.timestamps,
        details: args.details,
    };
    let path = c.paths.log();
    let mut reader = match LogReader::open(&path) {
        Ok(r) => Some(r),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(e.into()),
    };
    if let Some(r) = reader.as_mut() {
        let mut first = r.read_new()?;
        first.retain(in_window);
        if let Some(n) = tail {
            let skip = first.len().saturating_sub(n);
            first.drain(..skip);
        }
        emit(&first, shown)?;
    }
    // Following stops at `--until` (Docker's), or when the container stops.
    if !args.follow || until.is_some_and(|t| t <= Utc::now()) {
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
            let mut more = r.read_new()?;
            more.retain(in_window);
            emit(&more, shown)?;
        }
        if until.is_some_and(|t| t <= Utc::now()) {
            return Ok(());
        }
        if !running {
            // One last read: the supervisor finished writing before it recorded the exit.
            if let Some(r) = reader.as_mut() {
                let mut last = r.read_new()?;
                last.retain(in_window);
                emit(&last, shown)?;
            }
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
