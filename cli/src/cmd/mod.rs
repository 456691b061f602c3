//! One module per verb. Each exposes a clap `Args` struct and `run(&Global, Args) -> Result<()>`;
//! entry functions stay short and call into `strata_runtime`.

use std::path::PathBuf;
use std::process::ExitCode;

use strata_runtime::container::Runtime;
use strata_runtime::engine::{Engine, EngineOptions};
use strata_runtime::store::Store;

pub mod attach;
pub mod build;
pub mod commit;
pub mod container;
pub mod convert;
pub mod cp;
pub mod create;
pub mod diff;
pub mod events;
pub mod exec;
pub mod export;
pub mod health;
pub mod history;
pub mod image;
pub mod images;
pub mod import;
pub mod inspect;
pub mod limits;
pub mod load;
pub mod login;
pub mod logs;
pub mod mount;
pub mod network;
pub mod pause;
pub mod ps;
pub mod pull;
pub mod push;
pub mod rename;
pub mod rm;
pub mod rmi;
pub mod run;
pub mod run_opts;
pub mod save;
pub mod start;
pub mod stats;
pub mod stop;
pub mod storage;
pub mod system;
pub mod tag;
pub mod top;
pub mod update;
pub mod version;
pub mod volume;

/// Options shared by every verb.
#[derive(clap::Args, Debug, Clone)]
pub struct Global {
    /// Root of persistent storage (images, layers, containers) [default: /var/lib/strata;
    /// rootless: $XDG_DATA_HOME/strata]
    #[arg(long, global = true, env = "STRATA_ROOT")]
    pub root: Option<PathBuf>,
    /// Root of runtime state (pid files, sockets) [default: /run/strata; rootless:
    /// $XDG_RUNTIME_DIR/strata]
    #[arg(long, global = true, env = "STRATA_RUNROOT")]
    pub runroot: Option<PathBuf>,
    /// Storage driver for container root filesystems: fuse (default), overlay, vfs, fuse-overlayfs
    #[arg(long = "storage-driver", global = true, env = "STRATA_STORAGE_DRIVER")]
    pub storage_driver: Option<String>,
    /// Storage driver option (repeatable): mount_program=PATH runs PATH as the fuse-overlayfs mount program
    #[arg(long = "storage-opt", global = true, value_name = "KEY=VALUE", value_parser = storage::parse)]
    pub storage_opts: Vec<storage::StorageOpt>,
    /// Registry to reach over plain HTTP (loopback registries always are)
    #[arg(long = "insecure-registry", global = true, value_name = "HOST[:PORT]")]
    pub insecure_registries: Vec<String>,
    /// The engine these options open, made on first use (by `enter_rootless` when rootless).
    #[arg(skip)]
    engine: std::sync::OnceLock<Engine>,
}

impl Global {
    /// The engine of these options, opened once per process: absolute root and runroot, the
    /// storage driver, the registry settings.
    pub fn engine(&self) -> &Engine {
        self.engine.get_or_init(|| {
            Engine::new(EngineOptions {
                root: self.root.clone(),
                runroot: self.runroot.clone(),
                storage_driver: self.storage_driver.clone(),
                mount_program: self
                    .storage_opts
                    .iter()
                    .map(|o| match o {
                        storage::StorageOpt::MountProgram(p) => p.clone(),
                    })
                    .next_back(),
                insecure_registries: self.insecure_registries.clone(),
                daemon_config: None,
            })
        })
    }

    /// The containers under `--root`/`--runroot`.
    pub fn containers(&self) -> &Runtime {
        self.engine().containers()
    }

    /// The image store under `--root`.
    pub fn store(&self) -> anyhow::Result<Store> {
        use anyhow::Context;
        let engine = self.engine();
        engine
            .store()
            .cloned()
            .with_context(|| format!("opening store {}", engine.root().display()))
    }
}

/// An unprivileged user's strata runs inside its own user namespace: enter it (once, here, while
/// the process is single-threaded) before any store access. Children (the supervisor) inherit it
/// and the resolved paths; root and strata already inside a user namespace pass through.
pub fn enter_rootless(global: &Global) -> anyhow::Result<()> {
    use strata_runtime::rootless;
    if !rootless::needed() {
        return Ok(());
    }
    let fail = |e: rootless::RootlessError| with_exit_code(EXIT_TOOL_ERROR, e);
    // The engine resolves the default paths now, outside the namespace (inside it, this
    // process looks like root and would get root's defaults).
    let engine = global.engine();
    rootless::check_root(engine.root()).map_err(fail)?;
    let (root, runroot) = (engine.root(), engine.runroot());
    rootless::enter(runroot).map_err(fail)?;
    // Still single-threaded, so setting the environment races with nothing;
    // child processes (`__supervise`, `exec`) then use the same store without re-detecting it.
    std::env::set_var("STRATA_ROOT", root);
    std::env::set_var("STRATA_RUNROOT", runroot);
    Ok(())
}

/// A command's outcome that is not an error message but an exit status: a container's own exit
/// code, or a silent failure whose message was already printed. `main` exits with `.0`.
#[derive(Debug)]
pub struct ExitStatus(pub u8);

impl std::fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "exit status {}", self.0)
    }
}

impl std::error::Error for ExitStatus {}

/// Docker's exit code for an error of the tool itself (bad flags, cannot create a container).
pub const EXIT_TOOL_ERROR: u8 = 125;

/// Turn a command's error into a one-line message on stderr and an exit code. The only place
/// that maps errors to exit codes.
pub fn report(e: anyhow::Error) -> ExitCode {
    if let Some(status) = e.downcast_ref::<ExitStatus>() {
        return ExitCode::from(status.0);
    }
    if is_broken_pipe(&e) {
        return ExitCode::SUCCESS;
    }
    eprintln!("Error: {}", one_line(&e));
    // `downcast_ref` (unlike walking `chain()`) also finds a `ToolError` attached as context.
    if let Some(status) = e.downcast_ref::<ToolError>() {
        return ExitCode::from(status.code);
    }
    ExitCode::from(1)
}

/// `--label` values as Docker reads them (`KEY=VALUE`, or `KEY` for an empty value); a later
/// key wins. Shared by `run`/`create` and `volume create`.
pub(crate) fn parse_labels<'a>(
    items: impl IntoIterator<Item = &'a String>,
) -> std::collections::BTreeMap<String, String> {
    items
        .into_iter()
        .map(|l| {
            let (k, v) = l.split_once('=').unwrap_or((l, ""));
            (k.to_string(), v.to_string())
        })
        .collect()
}

/// The error and its causes on one line, `: `-separated, skipping a cause whose text the
/// message already contains (library errors often embed their source in their own text).
pub fn one_line(e: &anyhow::Error) -> String {
    let mut msg = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if msg.contains(&text) {
            continue;
        }
        if !msg.is_empty() {
            msg.push_str(": ");
        }
        msg.push_str(&text);
    }
    msg
}

/// Make `e` exit with `code` (125/126/127 as Docker's `run` does) when [`report`] prints it.
pub fn with_exit_code(code: u8, e: impl Into<anyhow::Error>) -> anyhow::Error {
    e.into().context(ToolError { code })
}

/// Wrap an error to make it exit with a specific code (125/126/127 as Docker's `run` does).
#[derive(Debug)]
pub struct ToolError {
    pub code: u8,
}

/// Prints nothing: it only carries the exit code, and `one_line` skips empty texts.
impl std::fmt::Display for ToolError {
    fn fmt(&self, _f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        Ok(())
    }
}

impl std::error::Error for ToolError {}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// Report a command-line parsing error the way Docker does: `unknown flag: --x` plus a hint naming
/// the verb that was parsed (never a global option's value), exit 125; a missing argument as
/// `"strata run" requires at least 1 argument.` with the usage line, exit 1; an unknown verb as
/// `strata: 'x' is not a strata command.`. `--help` and `--version` print and exit 0.
pub fn usage_error(e: clap::Error, mut root: clap::Command) -> ExitCode {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    match e.kind() {
        ErrorKind::DisplayHelp
        | ErrorKind::DisplayVersion
        | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        _ => {}
    }
    root.build();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let path = verb_path(&root, &args);
    let shown = std::iter::once("strata")
        .chain(path.iter().map(|s| s.as_str()))
        .collect::<Vec<_>>()
        .join(" ");
    match (e.kind(), e.get(ContextKind::InvalidArg)) {
        (ErrorKind::InvalidSubcommand, _) if path.is_empty() => {
            let verb = match e.get(ContextKind::InvalidSubcommand) {
                Some(ContextValue::String(v)) => v.clone(),
                _ => String::new(),
            };
            eprintln!("strata: '{verb}' is not a strata command.");
            eprintln!("See 'strata --help'");
            ExitCode::from(1)
        }
        (ErrorKind::MissingRequiredArgument, _) if !path.is_empty() => {
            let mut cmd = root.clone();
            for p in &path {
                match cmd.find_subcommand(p) {
                    Some(c) => cmd = c.clone(),
                    None => break,
                }
            }
            let min = cmd
                .get_positionals()
                .filter(|a| a.is_required_set())
                .map(|a| a.get_num_args().map_or(1, |n| n.min_values().max(1)))
                .sum::<usize>()
                .max(1);
            let usage = cmd.render_usage().to_string();
            let usage = usage.trim_start_matches("Usage:").trim();
            let about = cmd.get_about().map(|a| a.to_string()).unwrap_or_default();
            let noun = if min == 1 { "argument" } else { "arguments" };
            eprintln!("\"{shown}\" requires at least {min} {noun}.");
            eprintln!("See '{shown} --help'.");
            eprintln!();
            eprintln!("Usage:  {usage}");
            if !about.is_empty() {
                eprintln!();
                eprintln!("{about}");
            }
            ExitCode::from(1)
        }
        (kind, invalid) => {
            let message = match (kind, invalid) {
                (ErrorKind::UnknownArgument, Some(ContextValue::String(flag))) => {
                    format!("unknown flag: {}", flag.split('=').next().unwrap_or(flag))
                }
                _ => {
                    let text = e.to_string();
                    let first = text.lines().next().unwrap_or("invalid arguments");
                    first.trim_start_matches("error: ").to_string()
                }
            };
            eprintln!("{message}");
            eprintln!("See '{shown} --help'.");
            ExitCode::from(EXIT_TOOL_ERROR)
        }
    }
}

/// The subcommand names in `args` (`["image", "ls"]`), skipping options and the values of options
/// that take one, so `--root /x run` names `run`, not `/x`.
fn verb_path(root: &clap::Command, args: &[String]) -> Vec<String> {
    let mut path = Vec::new();
    let mut cmd = root;
    let mut i = 0;
    while i < args.len() {
        let a = &args[i];
        i += 1;
        if a == "--" {
            break;
        }
        if let Some(long) = a.strip_prefix("--") {
            if !long.contains('=') && takes_value(cmd, |arg| arg.get_long() == Some(long)) {
                i += 1;
            }
            continue;
        }
        if let Some(short) = a.strip_prefix('-').and_then(|s| s.chars().last()) {
            if a.len() == 2 && takes_value(cmd, |arg| arg.get_short() == Some(short)) {
                i += 1;
            }
            continue;
        }
        match cmd.find_subcommand(a) {
            Some(sub) => {
                path.push(sub.get_name().to_string());
                cmd = sub;
            }
            None => break,
        }
    }
    path
}

fn takes_value(cmd: &clap::Command, pick: impl Fn(&clap::Arg) -> bool) -> bool {
    cmd.get_arguments()
        .find(|a| pick(a))
        .is_some_and(|a| a.get_num_args().is_some_and(|n| n.takes_values()))
}

/// The error every verb returns until it is built.
#[allow(dead_code)]
pub fn not_implemented(verb: &str) -> anyhow::Result<()> {
    anyhow::bail!("`strata {verb}` is not implemented yet")
}
