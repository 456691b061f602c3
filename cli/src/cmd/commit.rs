//! `strata commit [OPTIONS] CONTAINER [REPOSITORY[:TAG]]`: a container's changes as a new image
//! (SPEC §10.2). Prints `sha256:<id>`.

use strata_runtime::changes::{commit_container, CommitOptions};
use strata_runtime::reference::Reference;

use super::Global;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Author (e.g., "John Hannibal Smith <hannibal@a-team.com>")
    #[arg(short = 'a', long)]
    pub author: Option<String>,
    /// Apply Dockerfile instruction to the created image
    #[arg(short = 'c', long = "change", value_name = "INSTRUCTION")]
    pub changes: Vec<String>,
    /// Commit message
    #[arg(short = 'm', long)]
    pub message: Option<String>,
    /// Pause container during commit
    #[arg(
        short = 'p',
        long,
        default_value_t = true,
        action = clap::ArgAction::Set,
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true"
    )]
    pub pause: bool,
    /// Container name or ID
    #[arg(value_name = "CONTAINER")]
    pub container: String,
    /// Repository and tag for the new image
    #[arg(value_name = "REPOSITORY[:TAG]")]
    pub reference: Option<String>,
}

pub fn run(global: &Global, args: Args) -> anyhow::Result<()> {
    // As Docker: the reference is checked before the container is looked up.
    let reference = args.reference.as_deref().map(parse_reference).transpose()?;
    let container = global.containers().lookup(&args.container)?;
    let store = global.store()?;
    let opts = CommitOptions {
        author: args.author,
        comment: args.message,
        changes: args.changes,
        pause: args.pause,
        reference,
    };
    let id = commit_container(&store, &container, &opts)?;
    println!("{id}");
    Ok(())
}

fn parse_reference(s: &str) -> anyhow::Result<Reference> {
    let r = Reference::parse(s)?;
    if r.digest().is_some() {
        anyhow::bail!("invalid reference format");
    }
    Ok(r.with_default_tag())
}
