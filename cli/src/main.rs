//! `strata`: a daemonless, Docker-compatible image and container tool on a FUSE union filesystem.
//!
//! This file parses the command line, dispatches to one module per verb (`cmd/*.rs`, each exposing
//! `Args` and `run`), and is the only place that turns errors into exit codes.

mod cmd;
mod progress;
mod table;
mod template;
mod units;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "strata",
    version,
    about = "A daemonless, Docker-compatible image and container tool on a FUSE union filesystem",
    disable_help_subcommand = true
)]
struct Cli {
    #[command(flatten)]
    global: cmd::Global,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
#[allow(clippy::large_enum_variant)]
enum Command {
    /// Download an image from a registry
    Pull(cmd::pull::Args),
    /// Upload an image to a registry
    Push(cmd::push::Args),
    /// Log in to a registry
    Login(cmd::login::Args),
    /// Log out from a registry
    Logout(cmd::login::LogoutArgs),
    /// List images
    Images(cmd::images::Args),
    /// Manage images
    Image(cmd::image::Args),
    /// Remove one or more images
    Rmi(cmd::rmi::Args),
    /// Create a tag TARGET_IMAGE that refers to SOURCE_IMAGE
    Tag(cmd::tag::Args),
    /// Return low-level information on images or containers
    Inspect(cmd::inspect::Args),
    /// Show the history of an image
    History(cmd::history::Args),
    /// Save one or more images to a tar archive
    Save(cmd::save::Args),
    /// Load an image from a tar archive or STDIN
    Load(cmd::load::Args),
    /// Import the contents from a tarball to create a filesystem image
    Import(cmd::import::Args),
    /// Create and run a new container from an image
    Run(cmd::run::Args),
    /// Execute a command in a running container
    Exec(cmd::exec::Args),
    /// List containers
    Ps(cmd::ps::Args),
    /// Stop one or more running containers
    Stop(cmd::stop::Args),
    /// Start one or more stopped containers
    Start(cmd::start::Args),
    /// Restart one or more containers
    Restart(cmd::stop::RestartArgs),
    /// Kill one or more running containers
    Kill(cmd::stop::KillArgs),
    /// Remove one or more containers
    Rm(cmd::rm::Args),
    /// Fetch the logs of a container
    Logs(cmd::logs::Args),
    /// Get real time events from strata's events log
    Events(cmd::events::Args),
    /// Block until one or more containers stop, then print their exit codes
    Wait(cmd::stop::WaitArgs),
    /// List port mappings of a container
    Port(cmd::ps::PortArgs),
    /// Inspect changes to files or directories on a container's filesystem
    Diff(cmd::diff::Args),
    /// Create a new image from a container's changes
    Commit(cmd::commit::Args),
    /// Build an image from a Dockerfile
    Build(cmd::build::Args),
    /// Manage strata (disk usage)
    System(cmd::system::Args),
    /// Mount a container's root filesystem and print where
    Mount(cmd::mount::Args),
    /// Create a new container
    Create(cmd::run::Args),
    /// Manage containers
    Container(cmd::container::Args),
    /// Copy files/folders between a container and the local filesystem
    Cp(cmd::cp::Args),
    /// Rename a container
    Rename(cmd::rename::Args),
    /// Update configuration of one or more containers
    Update(cmd::update::Args),
    /// Pause all processes within one or more containers
    Pause(cmd::pause::Args),
    /// Unpause all processes within one or more containers
    Unpause(cmd::pause::Args),
    /// Display the running processes of a container
    Top(cmd::top::Args),
    /// Display a live stream of container(s) resource usage statistics
    Stats(cmd::stats::Args),
    /// Export a container's filesystem as a tar archive
    Export(cmd::export::Args),
    /// Manage volumes
    Volume(cmd::volume::Args),
    /// Attach local standard input, output, and error streams to a running container
    Attach(cmd::attach::Args),
    /// Show the strata version information
    Version(cmd::version::VersionArgs),
    /// Display system-wide information
    Info(cmd::version::InfoArgs),
    /// Manage networks
    Network(cmd::network::Args),
    /// Internal: the per-container supervisor process
    #[command(name = "__supervise", hide = true)]
    Supervise(cmd::run::SuperviseArgs),
    /// Internal: one health check of a running container (started by its supervisor)
    #[command(name = "__health-probe", hide = true)]
    HealthProbe(cmd::health::ProbeArgs),
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return cmd::usage_error(e, <Cli as clap::CommandFactory>::command()),
    };
    if let Err(e) = cmd::enter_rootless(&cli.global) {
        return cmd::report(e);
    }
    let result = match cli.command {
        Command::Pull(a) => cmd::pull::run(&cli.global, a),
        Command::Push(a) => cmd::push::run(&cli.global, a),
        Command::Login(a) => cmd::login::run(&cli.global, a),
        Command::Logout(a) => cmd::login::run_logout(&cli.global, a),
        Command::Images(a) => cmd::images::run(&cli.global, a),
        Command::Image(a) => cmd::image::run(&cli.global, a),
        Command::Rmi(a) => cmd::rmi::run(&cli.global, a),
        Command::Tag(a) => cmd::tag::run(&cli.global, a),
        Command::Inspect(a) => cmd::inspect::run(&cli.global, a),
        Command::History(a) => cmd::history::run(&cli.global, a),
        Command::Save(a) => cmd::save::run(&cli.global, a),
        Command::Load(a) => cmd::load::run(&cli.global, a),
        Command::Import(a) => cmd::import::run(&cli.global, a),
        Command::Run(a) => cmd::run::run(&cli.global, a),
        Command::Exec(a) => cmd::exec::run(&cli.global, a),
        Command::Ps(a) => cmd::ps::run(&cli.global, a),
        Command::Stop(a) => cmd::stop::run(&cli.global, a),
        Command::Start(a) => cmd::start::run(&cli.global, a),
        Command::Restart(a) => cmd::stop::run_restart(&cli.global, a),
        Command::Kill(a) => cmd::stop::run_kill(&cli.global, a),
        Command::Rm(a) => cmd::rm::run(&cli.global, a),
        Command::Logs(a) => cmd::logs::run(&cli.global, a),
        Command::Events(a) => cmd::events::run(&cli.global, a),
        Command::Wait(a) => cmd::stop::run_wait(&cli.global, a),
        Command::Port(a) => cmd::ps::run_port(&cli.global, a),
        Command::Diff(a) => cmd::diff::run(&cli.global, a),
        Command::Commit(a) => cmd::commit::run(&cli.global, a),
        Command::Build(a) => cmd::build::run(&cli.global, a),
        Command::System(a) => cmd::system::run(&cli.global, a),
        Command::Mount(a) => cmd::mount::run(&cli.global, a),
        Command::Create(a) => cmd::create::run(&cli.global, a),
        Command::Container(a) => cmd::container::run(&cli.global, a),
        Command::Cp(a) => cmd::cp::run(&cli.global, a),
        Command::Rename(a) => cmd::rename::run(&cli.global, a),
        Command::Update(a) => cmd::update::run(&cli.global, a),
        Command::Pause(a) => cmd::pause::run_pause(&cli.global, a),
        Command::Unpause(a) => cmd::pause::run_unpause(&cli.global, a),
        Command::Top(a) => cmd::top::run(&cli.global, a),
        Command::Stats(a) => cmd::stats::run(&cli.global, a),
        Command::Export(a) => cmd::export::run(&cli.global, a),
        Command::Volume(a) => cmd::volume::run(&cli.global, a),
        Command::Attach(a) => cmd::attach::run(&cli.global, a),
        Command::Version(a) => cmd::version::run_version(&cli.global, a),
        Command::Info(a) => cmd::version::run_info(&cli.global, a),
        Command::Network(a) => cmd::network::run(&cli.global, a),
        Command::Supervise(a) => cmd::run::run_supervise(&cli.global, a),
        Command::HealthProbe(a) => cmd::health::run_probe(&cli.global, a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => cmd::report(e),
    }
}
