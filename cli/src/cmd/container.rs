//! `strata container SUBCOMMAND`: Docker's management group, every container verb under one
//! name (each an alias of the top-level verb), plus `container prune`.

use std::io::Write;

use anyhow::Result;

use super::Global;
use crate::units;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(subcommand)]
    command: Sub,
}

#[derive(clap::Subcommand, Debug)]
#[allow(clippy::large_enum_variant)]
enum Sub {
    /// List containers
    #[command(visible_aliases = ["ps", "list"])]
    Ls(super::ps::Args),
    /// Remove one or more containers
    #[command(visible_alias = "remove")]
    Rm(super::rm::Args),
    /// Display detailed information on one or more containers
    Inspect(super::inspect::Args),
    /// Create a new container
    Create(super::run::Args),
    /// Create and run a new container from an image
    Run(super::run::Args),
    /// Start one or more stopped containers
    Start(super::start::Args),
    /// Stop one or more running containers
    Stop(super::stop::Args),
    /// Kill one or more running containers
    Kill(super::stop::KillArgs),
    /// Restart one or more containers
    Restart(super::stop::RestartArgs),
    /// Fetch the logs of a container
    Logs(super::logs::Args),
    /// Execute a command in a running container
    Exec(super::exec::Args),
    /// List port mappings of a container
    Port(super::ps::PortArgs),
    /// Inspect changes to files or directories on a container's filesystem
    Diff(super::diff::Args),
    /// Create a new image from a container's changes
    Commit(super::commit::Args),
    /// Block until one or more containers stop, then print their exit codes
    Wait(super::stop::WaitArgs),
    /// Rename a container
    Rename(super::rename::Args),
    /// Update configuration of one or more containers
    Update(super::update::Args),
    /// Pause all processes within one or more containers
    Pause(super::pause::Args),
    /// Unpause all processes within one or more containers
    Unpause(super::pause::Args),
    /// Display the running processes of a container
    Top(super::top::Args),
    /// Export a container's filesystem as a tar archive
    Export(super::export::Args),
    /// Copy files/folders between a container and the local filesystem
    Cp(super::cp::Args),
    /// Display a live stream of container(s) resource usage statistics
    Stats(super::stats::Args),
    /// Attach local standard input, output, and error streams to a running container
    Attach(super::attach::Args),
    /// Remove all stopped containers
    Prune(PruneArgs),
}

pub fn run(global: &Global, args: Args) -> Result<()> {
    match args.command {
        Sub::Ls(a) => super::ps::run(global, a),
        Sub::Rm(a) => super::rm::run(global, a),
        Sub::Inspect(a) => super::inspect::run(global, a),
        Sub::Create(a) => super::create::run(global, a),
        Sub::Run(a) => super::run::run(global, a),
        Sub::Start(a) => super::start::run(global, a),
        Sub::Stop(a) => super::stop::run(global, a),
        Sub::Kill(a) => super::stop::run_kill(global, a),
        Sub::Restart(a) => super::stop::run_restart(global, a),
        Sub::Logs(a) => super::logs::run(global, a),
        Sub::Exec(a) => super::exec::run(global, a),
        Sub::Port(a) => super::ps::run_port(global, a),
        Sub::Diff(a) => super::diff::run(global, a),
        Sub::Commit(a) => super::commit::run(global, a),
        Sub::Wait(a) => super::stop::run_wait(global, a),
        Sub::Rename(a) => super::rename::run(global, a),
        Sub::Update(a) => super::update::run(global, a),
        Sub::Pause(a) => super::pause::run_pause(global, a),
        Sub::Unpause(a) => super::pause::run_unpause(global, a),
        Sub::Top(a) => super::top::run(global, a),
        Sub::Export(a) => super::export::run(global, a),
        Sub::Cp(a) => super::cp::run(global, a),
        Sub::Stats(a) => super::stats::run(global, a),
        Sub::Attach(a) => super::attach::run(global, a),
        Sub::Prune(a) => run_prune(global, a),
    }
}

#[derive(clap::Args, Debug)]
pub struct PruneArgs {
    /// Do not prompt for confirmation
    #[arg(short, long)]
    force: bool,
    /// Provide filter values (e.g. "until=<timestamp>", "label=<key>[=<value>]")
    #[arg(long = "filter")]
    filter: Vec<String>,
}

/// Remove every stopped container `keep` selects and print Docker's `Deleted Containers:`
/// block; returns the bytes reclaimed. Shared by `container prune` and `system prune`.
pub(crate) fn prune_stopped(
    global: &Global,
    out: &mut impl Write,
    keep: &dyn Fn(&strata_runtime::container::Container) -> bool,
) -> Result<u64> {
    let pruned = global.engine().prune_containers(keep)?;
    for e in &pruned.errors {
        eprintln!("Error: {e}");
    }
    if !pruned.deleted.is_empty() {
        writeln!(out, "Deleted Containers:")?;
        for id in &pruned.deleted {
            writeln!(out, "{id}")?;
        }
        writeln!(out)?;
    }
    Ok(pruned.reclaimed)
}

/// `--filter until=|label=|label!=` of `container prune` / `system prune`, as a predicate on the
/// stopped containers.
pub(crate) fn prune_filter(
    raw: &[String],
) -> Result<impl Fn(&strata_runtime::container::Container) -> bool> {
    use strata_runtime::filters::{Filters, PruneFilter};
    let f = Filters::parse(raw, &["until", "label", "label!"])?;
    let p = PruneFilter::from_filters(&f, chrono::Utc::now())?;
    Ok(move |c: &strata_runtime::container::Container| {
        p.matches(c.config.created, Some(&c.config.labels))
    })
}

/// Docker's `container prune`: every container that is not running.
pub fn run_prune(global: &Global, a: PruneArgs) -> Result<()> {
    let keep = prune_filter(&a.filter)?;
    if !a.force && !super::image::confirm("WARNING! This will remove all stopped containers.")? {
        return Ok(());
    }
    let mut out = std::io::stdout().lock();
    let reclaimed = prune_stopped(global, &mut out, &keep)?;
    writeln!(
        out,
        "Total reclaimed space: {}",
        units::human_size(reclaimed)
    )?;
    Ok(())
}
