//! `strata load [-i FILE]`: docker-archive or OCI layout (dir or tar), from a file or stdin.

use std::io::{IsTerminal, Write};

use anyhow::{bail, Result};
use strata_runtime::archive::{self, LoadInput};

use super::Global;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Read from tar archive file, instead of STDIN
    #[arg(short, long)]
    input: Option<std::path::PathBuf>,
    /// Suppress the load output
    #[arg(short, long)]
    quiet: bool,
}

pub fn run(global: &Global, args: Args) -> Result<()> {
    let store = global.store()?;
    let loaded = match &args.input {
        Some(p) => archive::load(&store, LoadInput::Path(p))?,
        None => {
            let stdin = std::io::stdin();
            if stdin.is_terminal() {
                bail!("requested load from stdin, but stdin is empty");
            }
            let mut lock = stdin.lock();
            archive::load(&store, LoadInput::Reader(&mut lock))?
        }
    };
    if args.quiet {
        return Ok(());
    }
    let mut out = std::io::stdout().lock();
    for l in loaded {
        if l.tags.is_empty() {
            writeln!(out, "Loaded image ID: {}", l.id)?;
        }
        for t in &l.tags {
            writeln!(out, "Loaded image: {}", t.familiar())?;
        }
    }
    Ok(())
}
