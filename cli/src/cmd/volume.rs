//! `strata volume create|ls|inspect|rm|prune`, and turning `-v NAME:/path`, `--mount …` and the
//! image's `VOLUME`s into a container's mounts (`run`/`create`).

use std::collections::BTreeMap;
use std::io::Write;

use anyhow::{bail, Result};
use strata_runtime::container::{TmpfsMount, VolumeMount};
use strata_runtime::filters::{self, Filters};
use strata_runtime::volume::Volumes;

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
    /// Create a volume
    Create(CreateArgs),
    /// List volumes
    #[command(visible_alias = "list")]
    Ls(LsArgs),
    /// Display detailed information on one or more volumes
    Inspect(InspectArgs),
    /// Remove one or more volumes
    #[command(visible_alias = "remove")]
    Rm(RmArgs),
    /// Remove unused local volumes
    Prune(PruneArgs),
}

#[derive(clap::Args, Debug)]
pub struct CreateArgs {
    /// Specify volume driver name
    #[arg(short = 'd', long, default_value = "local")]
    driver: String,
    /// Set metadata for a volume
    #[arg(long = "label")]
    label: Vec<String>,
    name: Option<String>,
}

#[derive(clap::Args, Debug)]
pub struct LsArgs {
    /// Only display volume names
    #[arg(short, long)]
    quiet: bool,
    /// Provide filter values (e.g. "dangling=true")
    #[arg(short, long = "filter")]
    filter: Vec<String>,
    /// Format output using a custom template
    #[arg(long)]
    format: Option<String>,
}

#[derive(clap::Args, Debug)]
pub struct InspectArgs {
    /// Format output using a custom template
    #[arg(short, long)]
    format: Option<String>,
    #[arg(required = true)]
    volumes: Vec<String>,
}

#[derive(clap::Args, Debug)]
pub struct RmArgs {
    /// Force the removal of one or more volumes
    #[arg(short, long)]
    force: bool,
    #[arg(required = true)]
    volumes: Vec<String>,
}

#[derive(clap::Args, Debug)]
pub struct PruneArgs {
    /// Remove all unused volumes, not just anonymous ones
    #[arg(short, long)]
    all: bool,
    /// Do not prompt for confirmation
    #[arg(short, long)]
    force: bool,
}

pub fn run(global: &Global, args: Args) -> Result<()> {
    let vols = global.engine().volumes();
    match args.command {
        Sub::Create(a) => {
            if a.driver != "local" {
                bail!(
                    "error looking up volume plugin {}: plugin \"{}\" not found",
                    a.driver,
                    a.driver
                );
            }
            let labels = super::parse_labels(&a.label);
            println!("{}", vols.create(a.name.as_deref(), labels)?);
            Ok(())
        }
        Sub::Ls(a) => {
            let f = Filters::parse(&a.filter, &["dangling", "name", "label", "driver"])?;
            let dangling = f.bool_value("dangling")?;
            let containers = match dangling {
                Some(_) => global.containers().list()?,
                None => Vec::new(),
            };
            let mut list = vols.list()?;
            list.retain(|v| {
                dangling.is_none_or(|d| d == Volumes::users(&v.name, &containers).is_empty())
                    && f.any_of("name", |n| v.name.contains(n))
                    && f.get("label")
                        .all(|l| filters::label_matches(Some(&v.labels), l))
                    && f.any_of("driver", |d| d == "local")
            });
            let rows: Vec<serde_json::Value> = list
                .iter()
                .map(|v| serde_json::json!({"Driver": "local", "Name": v.name, "Mountpoint": vols.data_dir(&v.name), "Scope": "local"}))
                .collect();
            if !a.quiet && a.format.is_none() {
                // Docker's default table: the driver column is 10 wide.
                println!("{:<10}VOLUME NAME", "DRIVER");
                for v in &list {
                    println!("{:<10}{}", "local", v.name);
                }
                return Ok(());
            }
            let fmt = if a.quiet {
                Some("{{.Name}}")
            } else {
                a.format.as_deref()
            };
            let f = Format::new(fmt, "{{.Driver}}\t{{.Name}}")?;
            let header = serde_json::json!({"Driver": "DRIVER", "Name": "VOLUME NAME", "Mountpoint": "MOUNTPOINT", "Scope": "SCOPE"});
            let text = f.render(&header, &rows)?;
            print!("{text}");
            Ok(())
        }
        Sub::Inspect(a) => {
            let mut out = Vec::new();
            let mut failed = false;
            for n in &a.volumes {
                match vols.inspect(n) {
                    Ok(v) => out.push(serde_json::json!({
                        "CreatedAt": v.created_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                        "Driver": "local",
                        "Labels": v.labels,
                        "Mountpoint": vols.data_dir(&v.name),
                        "Name": v.name,
                        "Options": serde_json::Value::Null,
                        "Scope": "local",
                    })),
                    Err(e) => {
                        eprintln!("Error: {e}");
                        failed = true;
                    }
                }
            }
            match &a.format {
                Some(f) => {
                    let fmt = Format::new(Some(f), "")?;
                    print!("{}", fmt.render(&serde_json::Value::Null, &out)?);
                }
                None => println!("{}", serde_json::to_string_pretty(&out)?),
            }
            if failed {
                return Err(super::ExitStatus(1).into());
            }
            Ok(())
        }
        Sub::Rm(a) => {
            let containers = global.containers().list()?;
            let mut failed = false;
            for n in &a.volumes {
                match vols.remove(n, &containers, a.force) {
                    Ok(_) => println!("{n}"),
                    Err(e) => {
                        eprintln!("Error: {e}");
                        failed = true;
                    }
                }
            }
            if failed {
                return Err(super::ExitStatus(1).into());
            }
            Ok(())
        }
        Sub::Prune(a) => {
            let warning = if a.all {
                "WARNING! This will remove all local volumes not used by at least one container."
            } else {
                "WARNING! This will remove anonymous local volumes not used by at least one container."
            };
            if !a.force && !super::image::confirm(warning)? {
                return Ok(());
            }
            let (names, bytes) = prune(global, a.all)?;
            let mut out = std::io::stdout().lock();
            if !names.is_empty() {
                writeln!(out, "Deleted Volumes:")?;
                for n in &names {
                    writeln!(out, "{n}")?;
                }
                writeln!(out)?;
            }
            writeln!(out, "Total reclaimed space: {}", units::human_size(bytes))?;
            Ok(())
        }
    }
}

/// Remove unused volumes (for `volume prune` and `system prune --volumes`).
pub fn prune(global: &Global, all: bool) -> Result<(Vec<String>, u64)> {
    Ok(global.engine().prune_volumes(all)?)
}

fn volume_mount(
    global: &Global,
    name: Option<&str>,
    target: &str,
    ro: bool,
    nocopy: bool,
) -> Result<VolumeMount> {
    if !target.starts_with('/') {
        bail!("invalid mount config: mount path must be absolute");
    }
    let vols = global.engine().volumes();
    let name = vols.create(name, BTreeMap::new())?;
    Ok(VolumeMount {
        source: vols.data_dir(&name),
        target: target.to_string(),
        read_only: ro,
        anonymous: name.len() == 64 && vols.inspect(&name).is_ok_and(|v| v.anonymous),
        volume: Some(name),
        nocopy,
    })
}

/// One `-v`: `HOST:CTR[:opts]` (a bind, through `bind`), `NAME:CTR[:opts]` (a named volume,
/// created on first use) or `CTR` (an anonymous volume). Options: `ro`, `rw`, `nocopy`.
pub fn parse_v(
    global: &Global,
    spec: &str,
    bind: impl Fn(&str) -> Result<VolumeMount>,
) -> Result<VolumeMount> {
    let parts: Vec<&str> = spec.split(':').collect();
    let (src, dst, opts) = match parts.as_slice() {
        [dst] => return volume_mount(global, None, dst, false, false),
        [src, dst] => (*src, *dst, ""),
        [src, dst, opts] => (*src, *dst, *opts),
        _ => bail!("invalid volume specification: '{spec}'"),
    };
    if src.starts_with('/') || src.starts_with('.') {
        let opts: Vec<&str> = opts
            .split(',')
            .filter(|o| *o != "nocopy" && !o.is_empty())
            .collect();
        return bind(&if opts.is_empty() {
            format!("{src}:{dst}")
        } else {
            format!("{src}:{dst}:{}", opts.join(","))
        });
    }
    let mut ro = false;
    let mut nocopy = false;
    for o in opts.split(',').filter(|o| !o.is_empty()) {
        match o {
            "ro" => ro = true,
            "rw" => ro = false,
            "nocopy" => nocopy = true,
            _ => bail!("invalid mode: {o}"),
        }
    }
    if !dst.starts_with('/') {
        bail!("invalid volume specification: '{spec}': invalid mount config: mount path must be absolute");
    }
    if !strata_runtime::volume::valid_name(src) {
        bail!("create {src}: \"{src}\" includes invalid characters for a local volume name, only \"[a-zA-Z0-9][a-zA-Z0-9_.-]\" are allowed. If you intended to pass a host directory, use absolute path");
    }
    volume_mount(global, Some(src), dst, ro, nocopy)
}

/// One `--mount type=bind|volume|tmpfs,source=…,target=…[,readonly][,volume-nocopy]
/// [,tmpfs-size=…][,tmpfs-mode=…]`.
pub fn parse_mount(
    global: &Global,
    spec: &str,
    bind: impl Fn(&str) -> Result<VolumeMount>,
    volumes: &mut Vec<VolumeMount>,
    tmpfs: &mut Vec<TmpfsMount>,
) -> Result<()> {
    let mut kind = "volume";
    let (mut src, mut dst) = (None, None);
    let (mut ro, mut nocopy) = (false, false);
    let mut tmpfs_opts = Vec::new();
    for field in spec.split(',') {
        let (k, v) = field.split_once('=').unwrap_or((field, ""));
        match k {
            "type" => kind = v,
            "source" | "src" => src = Some(v),
            "target" | "destination" | "dst" => dst = Some(v),
            "readonly" | "ro" => ro = v.is_empty() || v == "true" || v == "1",
            "volume-nocopy" => nocopy = v.is_empty() || v == "true" || v == "1",
            "tmpfs-size" => tmpfs_opts.push(format!("size={v}")),
            "tmpfs-mode" => tmpfs_opts.push(format!("mode={v}")),
            "bind-propagation" | "consistency" => {}
            _ => bail!("invalid argument for \"--mount\" flag: unexpected key '{k}' in '{field}'"),
        }
    }
    let Some(dst) = dst else {
        bail!("invalid argument for \"--mount\" flag: target is required");
    };
    match kind {
        "bind" => {
            let Some(src) = src else {
                bail!("invalid mount config for type \"bind\": field Source must not be empty");
            };
            volumes.push(bind(&format!(
                "{src}:{dst}{}",
                if ro { ":ro" } else { "" }
            ))?);
        }
        "volume" => volumes.push(volume_mount(
            global,
            src.filter(|s| !s.is_empty()),
            dst,
            ro,
            nocopy,
        )?),
        "tmpfs" => {
            if src.is_some() {
                bail!("invalid mount config for type \"tmpfs\": unexpected source");
            }
            if !dst.starts_with('/') {
                bail!("invalid mount config for type \"tmpfs\": invalid mount path: '{dst}' mount path must be absolute");
            }
            if ro {
                tmpfs_opts.push("ro".to_string());
            }
            tmpfs.push(TmpfsMount {
                target: dst.to_string(),
                options: tmpfs_opts,
            });
        }
        other => bail!("invalid argument for \"--mount\" flag: invalid mount type '{other}'"),
    }
    Ok(())
}

/// `rm -v`: the container's anonymous volumes (those no other container uses).
pub fn remove_anonymous(global: &Global, mounts: &[VolumeMount]) {
    let others = || global.containers().list().unwrap_or_default();
    for e in global.engine().volumes().remove_anonymous(mounts, others) {
        eprintln!("Error: {e}");
    }
}
