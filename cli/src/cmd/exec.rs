//! `strata exec`.

use strata_runtime::container::exec::{self, ExecRequest};

use super::run::{start_error, RawMode};
use super::{ExitStatus, Global};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Detached mode: run command in the background
    #[arg(short = 'd', long)]
    pub detach: bool,
    /// Keep STDIN open even if not attached
    #[arg(short = 'i', long)]
    pub interactive: bool,
    /// Allocate a pseudo-TTY
    #[arg(short = 't', long)]
    pub tty: bool,
    /// Set environment variables
    #[arg(short = 'e', long = "env")]
    pub env: Vec<String>,
    /// Read in a file of environment variables
    #[arg(long = "env-file")]
    pub env_file: Vec<std::path::PathBuf>,
    /// Username or UID (format: <name|uid>[:<group|gid>])
    #[arg(short = 'u', long)]
    pub user: Option<String>,
    /// Give extended privileges to the command
    #[arg(long)]
    pub privileged: bool,
    /// Working directory inside the container
    #[arg(short = 'w', long = "workdir")]
    pub workdir: Option<String>,
    pub container: String,
    #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<String>,
}

pub fn run(global: &Global, args: Args) -> anyhow::Result<()> {
    let mut env = super::run::read_env_files(&args.env_file)?;
    env.extend(args.env.iter().cloned());
    super::run::validate_env(&env)?;
    let rt = global.containers();
    let c = rt.lookup(&args.container)?;
    if c.is_running() && strata_runtime::container::manage::is_paused(c.id()) {
        anyhow::bail!(
            "Container {} is paused, unpause the container before exec",
            c.id()
        );
    }
    let req = ExecRequest {
        cmd: args.command.clone(),
        env,
        user: args.user.clone(),
        workdir: args.workdir.clone(),
        tty: args.tty,
        interactive: args.interactive,
        detach: args.detach,
        privileged: args.privileged,
    };
    let raw = RawMode::enable(args.tty && !args.detach);
    let mut handle = exec::exec(&c, &req).map_err(start_error)?;
    if args.detach {
        return Ok(());
    }
    if let Some(master) = handle.master.take() {
        exec::pump_pty(master);
    }
    let code = handle.wait();
    drop(raw);
    Err(ExitStatus(code.clamp(0, 255) as u8).into())
}
