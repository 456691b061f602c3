//! `strata start`.

use super::run::{ignore_terminal_signals, launcher, proxy_signals, start_error, RawMode};
use super::stop::each;
use super::{ExitStatus, Global};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Attach STDOUT/STDERR and forward signals
    #[arg(short = 'a', long)]
    pub attach: bool,
    /// Attach container's STDIN
    #[arg(short = 'i', long)]
    pub interactive: bool,
    #[arg(required = true)]
    pub containers: Vec<String>,
}

pub fn run(global: &Global, args: Args) -> anyhow::Result<()> {
    let rt = global.containers();
    let launcher = launcher(global)?;
    if args.attach || args.interactive {
        if args.containers.len() > 1 {
            anyhow::bail!("you cannot start and attach multiple containers at once");
        }
        let c = rt.lookup(&args.containers[0])?;
        if c.is_running() {
            anyhow::bail!("container {} is already running", args.containers[0]);
        }
        let raw = RawMode::enable(c.config.tty);
        ignore_terminal_signals();
        let handle = rt.start(&c, &launcher, true).map_err(start_error)?;
        proxy_signals(handle.pid());
        let code = handle.wait().unwrap_or(125);
        drop(raw);
        return Err(ExitStatus(code.clamp(0, 255) as u8).into());
    }
    each(rt, &args.containers, |rt, n| {
        let c = rt.lookup(n)?;
        rt.start(&c, &launcher, false).map_err(start_error)?;
        Ok(())
    })
}
