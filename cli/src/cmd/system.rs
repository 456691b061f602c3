//! `strata system df [-v]` (SPEC §9) and `strata system prune [-a] [-f]` (SPEC §15).

use std::io::Write;

use anyhow::Result;
use serde_json::{json, Value};

use super::images::{image_header, rows_for};
use super::Global;
use crate::template::Format;
use crate::units;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(subcommand)]
    command: Sub,
}

#[derive(clap::Subcommand, Debug)]
enum Sub {
    /// Show strata disk usage
    Df(DfArgs),
    /// Remove unused data
    Prune(PruneArgs),
    /// Get real time events from strata's events log
    Events(super::events::Args),
}

#[derive(clap::Args, Debug)]
pub struct PruneArgs {
    /// Remove all unused images not just dangling ones
    #[arg(short, long)]
    all: bool,
    /// Do not prompt for confirmation
    #[arg(short, long)]
    force: bool,
    /// Prune anonymous volumes
    #[arg(long)]
    volumes: bool,
    /// Provide filter values (e.g. "until=<timestamp>", "label=<key>[=<value>]")
    #[arg(long = "filter")]
    filter: Vec<String>,
}

#[derive(clap::Args, Debug)]
pub struct DfArgs {
    /// Show detailed information on space usage
    #[arg(short, long)]
    verbose: bool,
    /// Format output using a custom template
    #[arg(long)]
    format: Option<String>,
}

pub fn run(global: &Global, args: Args) -> Result<()> {
    match args.command {
        Sub::Df(a) => df(global, a),
        Sub::Prune(a) => prune(global, a),
        Sub::Events(a) => super::events::run(global, a),
    }
}

/// Docker's warning, one `  - ` line per kind of thing removed.
fn prune_warning(a: &PruneArgs) -> String {
    let mut items = vec![
        "all stopped containers",
        "all networks not used by at least one container",
    ];
    if a.volumes {
        items.push("all anonymous volumes not used by at least one container");
    }
    items.push(if a.all {
        "all images without at least one container associated to them"
    } else {
        "all dangling images"
    });
    items.push(if a.all {
        "all build cache"
    } else {
        "unused build cache"
    });
    let mut w = String::from("WARNING! This will remove:");
    for i in items {
        w.push_str("\n  - ");
        w.push_str(i);
    }
    w.push('\n');
    w
}

fn prune(global: &Global, a: PruneArgs) -> Result<()> {
    // The filters apply to the containers and the images (Docker's `until`, `label`, `label!`).
    let keep_container = super::container::prune_filter(&a.filter)?;
    let f = strata_runtime::filters::Filters::parse(&a.filter, &["until", "label", "label!"])?;
    let keep_image = strata_runtime::filters::PruneFilter::from_filters(&f, chrono::Utc::now())?;
    if !a.force && !super::image::confirm(&prune_warning(&a))? {
        return Ok(());
    }
    let mut out = std::io::stdout().lock();
    // Stopped containers first, so the images only they used become unused.
    let mut reclaimed = super::container::prune_stopped(global, &mut out, &keep_container)?;
    if a.volumes {
        let (names, bytes) = super::volume::prune(global, false)?;
        reclaimed += bytes;
        if !names.is_empty() {
            writeln!(out, "Deleted Volumes:")?;
            for n in &names {
                writeln!(out, "{n}")?;
            }
            writeln!(out)?;
        }
    }
    let (events, bytes) = global
        .engine()
        .prune_images(a.all, &|img| super::image::image_matches(&keep_image, img))?;
    reclaimed += bytes;
    // Unused build cache: the cache mounts no build is using.
    reclaimed += strata_runtime::build::prune_cache_mounts(global.engine().root());
    if !events.is_empty() {
        writeln!(out, "Deleted Images:")?;
        super::image::print_events(&mut out, &events, true)?;
        writeln!(out)?;
    }
    writeln!(
        out,
        "Total reclaimed space: {}",
        units::human_size(reclaimed)
    )?;
    Ok(())
}

fn reclaimable(reclaim: u64, total: u64) -> String {
    match (reclaim * 100).checked_div(total) {
        Some(pct) => format!("{} ({pct}%)", units::human_size(reclaim)),
        None => units::human_size(reclaim),
    }
}

fn df(global: &Global, args: DfArgs) -> Result<()> {
    let usage = global.engine().disk_usage()?;
    let total_size = usage.images_size;
    let c_total = usage.containers_size();
    let conts = &usage.containers;
    let rows = vec![
        json!({"Type": "Images", "TotalCount": usage.images.len().to_string(), "Active": usage.active_images().to_string(),
               "Size": units::human_size(total_size), "Reclaimable": reclaimable(usage.images_reclaimable, total_size)}),
        json!({"Type": "Containers", "TotalCount": conts.len().to_string(),
               "Active": conts.iter().filter(|c| c.usage.running).count().to_string(),
               "Size": units::human_size(c_total), "Reclaimable": reclaimable(usage.containers_reclaimable(), c_total)}),
        json!({"Type": "Local Volumes", "TotalCount": "0", "Active": "0", "Size": "0B", "Reclaimable": "0B"}),
        {
            // RUN --mount=type=cache directories (intermediate images count as images).
            let (n, size) = strata_runtime::build::cache_mounts_usage(global.engine().root());
            json!({"Type": "Build Cache", "TotalCount": n.to_string(), "Active": "0",
                   "Size": units::human_size(size), "Reclaimable": reclaimable(size, size)})
        },
    ];
    let mut out = std::io::stdout().lock();
    if !args.verbose {
        let header = json!({"Type": "TYPE", "TotalCount": "TOTAL", "Active": "ACTIVE", "Size": "SIZE", "Reclaimable": "RECLAIMABLE"});
        let f = Format::new(
            args.format.as_deref(),
            "{{.Type}}\t{{.TotalCount}}\t{{.Active}}\t{{.Size}}\t{{.Reclaimable}}",
        )?;
        out.write_all(f.render(&header, &rows)?.as_bytes())?;
        return Ok(());
    }
    let mut image_rows: Vec<Value> = Vec::new();
    for i in &usage.images {
        let img = &i.image;
        for mut r in rows_for(img, &img.repo_tags, &img.repo_digests, false, true) {
            r["SharedSize"] = json!(units::human_size(i.shared_size));
            r["UniqueSize"] = json!(units::human_size(i.unique_size()));
            r["Containers"] = json!(i.containers.to_string());
            image_rows.push(r);
        }
    }
    let f = Format::new(
        None,
        "{{.Repository}}\t{{.Tag}}\t{{.ID}}\t{{.CreatedSince}}\t{{.Size}}\t{{.SharedSize}}\t{{.UniqueSize}}\t{{.Containers}}",
    )?;
    writeln!(out, "Images space usage:\n")?;
    out.write_all(f.render(&image_header(), &image_rows)?.as_bytes())?;
    writeln!(out, "\nContainers space usage:\n")?;
    let container_rows: Vec<Value> = conts
        .iter()
        .map(|c| {
            let r = &c.record;
            let cmd: String = r.config.argv().join(" ");
            let cmd = if cmd.chars().count() > 20 {
                let mut s: String = cmd.chars().take(19).collect();
                s.push('…');
                s
            } else {
                cmd
            };
            json!({
                "ID": r.id().short(),
                "Image": r.config.image,
                "Command": format!("\"{cmd}\""),
                "LocalVolumes": "0",
                "Size": units::human_size(c.size_rw),
                "RunningFor": units::ago(r.config.created),
                "Status": super::ps::status_text(r),
                "Names": r.name(),
            })
        })
        .collect();
    let f = Format::new(
        None,
        "{{.ID}}\t{{.Image}}\t{{.Command}}\t{{.LocalVolumes}}\t{{.Size}}\t{{.RunningFor}}\t{{.Status}}\t{{.Names}}",
    )?;
    let header = json!({"ID": "CONTAINER ID", "Image": "IMAGE", "Command": "COMMAND", "LocalVolumes": "LOCAL VOLUMES",
                        "Size": "SIZE", "RunningFor": "CREATED", "Status": "STATUS", "Names": "NAMES"});
    out.write_all(f.render(&header, &container_rows)?.as_bytes())?;
    writeln!(out, "\nLocal Volumes space usage:\n")?;
    let f = Format::new(None, "{{.Name}}\t{{.Links}}\t{{.Size}}")?;
    let header = json!({"Name": "VOLUME NAME", "Links": "LINKS", "Size": "SIZE"});
    out.write_all(f.render(&header, &[])?.as_bytes())?;
    let (_, cache) = strata_runtime::build::cache_mounts_usage(global.engine().root());
    writeln!(out, "\nBuild cache usage: {}\n", units::human_size(cache))?;
    let f = Format::new(
        None,
        "{{.ID}}\t{{.Type}}\t{{.Size}}\t{{.Created}}\t{{.LastUsed}}\t{{.Usage}}\t{{.Shared}}",
    )?;
    let header = json!({"ID": "CACHE ID", "Type": "CACHE TYPE", "Size": "SIZE", "Created": "CREATED",
                        "LastUsed": "LAST USED", "Usage": "USAGE", "Shared": "SHARED"});
    out.write_all(f.render(&header, &[])?.as_bytes())?;
    Ok(())
}
