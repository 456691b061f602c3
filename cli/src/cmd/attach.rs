//! `strata attach CONTAINER`: the running container's output (from its log, from now on) and,
//! when it was created with `-i`, this terminal's input into its stdin (through the
//! supervisor's attach socket). Exits with the container's exit code when it stops.

use std::io::{Read, Write};
use std::time::Duration;

use strata_runtime::container::attach;
use strata_runtime::container::logs::LogReader;

use super::run::{proxy_signals, RawMode};
use super::{ExitStatus, Global};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Do not attach STDIN
    #[arg(long = "no-stdin")]
    pub no_stdin: bool,
    /// Proxy all received signals to the process
    #[arg(long = "sig-proxy", default_value_t = true, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub sig_proxy: bool,
    pub container: String,
}

pub fn run(global: &Global, args: Args) -> anyhow::Result<()> {
    let rt = global.containers();
    let c = rt.lookup(&args.container)?;
    if !c.is_running() {
        anyhow::bail!("You cannot attach to a stopped container, start it first");
    }
    if strata_runtime::container::manage::is_paused(c.id()) {
        anyhow::bail!("You cannot attach to a paused container, unpause it first");
    }
    if !c.config.log_config.readable() {
        // strata's attach streams the container's output from its log.
        anyhow::bail!("configured logging driver does not support reading");
    }
    let mut reader = LogReader::open(&c.paths.log())?;
    reader.seek_end()?;
    let raw = RawMode::enable(c.config.tty && !args.no_stdin);
    if args.sig_proxy && !c.config.tty {
        proxy_signals(Some(c.state.supervisor_pid as u32));
    }
    if !args.no_stdin && c.config.open_stdin {
        if let Some(mut sock) = attach::connect_stdin(&c.paths.run_dir) {
            std::thread::spawn(move || {
                let mut input = std::io::stdin();
                let mut buf = [0u8; 8192];
                while let Ok(n) = input.read(&mut buf) {
                    if n == 0 || sock.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            });
        }
    }
    loop {
        let running = rt
            .lookup(c.id().as_str())
            .map(|c| c.is_running())
            .unwrap_or(false);
        super::logs::emit(&reader.read_new()?, Default::default())?;
        if !running {
            super::logs::emit(&reader.read_new()?, Default::default())?;
            drop(raw);
            let code = rt.wait(&c).unwrap_or(0);
            return Err(ExitStatus(code.clamp(0, 255) as u8).into());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
