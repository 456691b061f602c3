//! `strata images` / `strata image ls` (SPEC §6).

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;

use anyhow::Result;
use serde_json::{json, Value};
use strata_runtime::filters;
use strata_runtime::reference::Reference;
use strata_runtime::store::{ImageRecord, Store};

use super::image::created_since;
use super::Global;
use crate::template::Format;
use crate::units;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Show all images (default hides intermediate images)
    #[arg(short, long)]
    all: bool,
    /// Show digests
    #[arg(long)]
    digests: bool,
    /// Filter output based on conditions provided
    #[arg(short, long = "filter")]
    filter: Vec<String>,
    /// Format output using a custom template
    #[arg(long)]
    format: Option<String>,
    /// Don't truncate output
    #[arg(long = "no-trunc")]
    no_trunc: bool,
    /// Only show image IDs
    #[arg(short, long)]
    quiet: bool,
    /// REPOSITORY[:TAG]
    repository: Option<String>,
}

const DEFAULT_TABLE: &str = "{{.Repository}}\t{{.Tag}}\t{{.ID}}\t{{.CreatedSince}}\t{{.Size}}";
const DIGEST_TABLE: &str =
    "{{.Repository}}\t{{.Tag}}\t{{.Digest}}\t{{.ID}}\t{{.CreatedSince}}\t{{.Size}}";

/// Parsed `-f` filters: same key = OR, different keys = AND.
#[derive(Default)]
struct Filters {
    dangling: Option<bool>,
    labels: Vec<String>,
    before: Vec<ImageRecord>,
    since: Vec<ImageRecord>,
    reference: Vec<String>,
}

fn parse_filters(store: &Store, raw: &[String], positional: Option<&str>) -> Result<Filters> {
    let args =
        filters::Filters::parse(raw, &["dangling", "label", "before", "since", "reference"])?;
    let resolve = |key| -> Result<Vec<ImageRecord>> {
        Ok(args
            .get(key)
            .map(|v| store.resolve(v))
            .collect::<Result<_, _>>()?)
    };
    let mut reference: Vec<String> = args.get("reference").map(str::to_string).collect();
    reference.extend(positional.map(str::to_string));
    Ok(Filters {
        dangling: args.bool_value("dangling")?,
        labels: args.get("label").map(str::to_string).collect(),
        before: resolve("before")?,
        since: resolve("since")?,
        reference,
    })
}

/// `label=key` or `label=key=value` against the image's labels.
pub fn label_matches(img: &ImageRecord, filter: &str) -> bool {
    let labels = img.config.config.as_ref().and_then(|c| c.labels.as_ref());
    filters::label_matches(labels, filter)
}

/// `reference.FamiliarMatch`: the full familiar string first, then the familiar name.
fn ref_matches(pattern: &str, r: &Reference) -> bool {
    filters::glob_match(pattern, &r.familiar()) || filters::glob_match(pattern, &r.familiar_name())
}

/// One row's data: a JSON object with Docker's image-context keys (all strings).
pub fn image_row(img: &ImageRecord, repo: &str, tag: &str, digest: &str, trunc: bool) -> Value {
    let id = if trunc {
        img.id.short().to_string()
    } else {
        img.id.to_string()
    };
    json!({
        "Containers": "N/A",
        "CreatedAt": img.created.map(units::go_time).unwrap_or_default(),
        "CreatedSince": created_since(img),
        "Digest": digest,
        "ID": id,
        "Repository": repo,
        "SharedSize": "N/A",
        "Size": units::human_size3(img.size),
        "Tag": tag,
        "UniqueSize": "N/A",
        "VirtualSize": units::human_size(img.size),
    })
}

/// A lazily pulled image still fetching: its rows' size becomes `35.2MB (lazy 3%)`, the share
/// of its still-lazy layers' compressed bytes held locally.
fn lazy_size(store: &Store, img: &ImageRecord, rows: &mut [Value]) {
    if let Some(f) = strata_runtime::lazy::image_fetch(store, img) {
        let size = format!("{} (lazy {}%)", units::human_size3(img.size), f.percent());
        for r in rows {
            r["Size"] = Value::String(size.clone());
        }
    }
}

/// Header names for the image context.
pub fn image_header() -> Value {
    json!({
        "Containers": "CONTAINERS", "CreatedAt": "CREATED AT", "CreatedSince": "CREATED",
        "Digest": "DIGEST", "ID": "IMAGE ID", "Repository": "REPOSITORY",
        "SharedSize": "SHARED SIZE", "Size": "SIZE", "Tag": "TAG", "UniqueSize": "UNIQUE SIZE",
        "VirtualSize": "VIRTUAL SIZE",
    })
}

/// docker/cli `imageFormatTaggedAndDigest`: one row per (repository, tag), digest-only
/// references as `<none>` tags, dangling images as `<none> <none>`.
pub fn rows_for(
    img: &ImageRecord,
    tags: &[Reference],
    digests: &[Reference],
    show_digests: bool,
    trunc: bool,
) -> Vec<Value> {
    if tags.is_empty() && digests.is_empty() {
        return vec![image_row(img, "<none>", "<none>", "<none>", trunc)];
    }
    let mut repo_tags: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut repo_digests: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for t in tags {
        repo_tags
            .entry(t.familiar_name())
            .or_default()
            .push(t.tag().unwrap_or("latest").to_string());
    }
    for d in digests {
        if let Some(dg) = d.digest() {
            repo_digests
                .entry(d.familiar_name())
                .or_default()
                .push(dg.to_string());
        }
    }
    let mut rows = Vec::new();
    for (repo, tags) in &repo_tags {
        let digests = repo_digests.remove(repo).unwrap_or_default();
        for tag in tags {
            if !show_digests || digests.is_empty() {
                rows.push(image_row(img, repo, tag, "<none>", trunc));
            } else {
                for d in &digests {
                    rows.push(image_row(img, repo, tag, d, trunc));
                }
            }
        }
    }
    for (repo, digests) in repo_digests {
        if show_digests {
            for d in digests {
                rows.push(image_row(img, &repo, "<none>", &d, trunc));
            }
        } else {
            rows.push(image_row(img, &repo, "<none>", "", trunc));
        }
    }
    rows
}

pub fn run(global: &Global, args: Args) -> Result<()> {
    let store = global.store()?;
    let filters = parse_filters(&store, &args.filter, args.repository.as_deref())?;
    let images = store.images()?;
    let parents: BTreeSet<_> = images.iter().filter_map(|i| i.parent.clone()).collect();
    let mut rows = Vec::new();
    // Only the default table, for people, says which images are still fetching: a `--format`
    // (scripts) gets Docker's plain `{{.Size}}`.
    let human = !args.quiet && matches!(args.format.as_deref(), None | Some("") | Some("table"));
    for img in &images {
        if filters.before.iter().any(|b| img.created >= b.created) {
            continue;
        }
        if filters.since.iter().any(|s| img.created <= s.created) {
            continue;
        }
        if !filters.labels.is_empty() && !filters.labels.iter().all(|l| label_matches(img, l)) {
            continue;
        }
        let has_children = parents.contains(&img.id);
        if filters.dangling == Some(true) && has_children {
            continue; // only heads
        }
        let keep = |r: &&Reference| {
            filters.reference.is_empty() || filters.reference.iter().any(|p| ref_matches(p, r))
        };
        let tags: Vec<Reference> = img.repo_tags.iter().filter(keep).cloned().collect();
        let digests: Vec<Reference> = img.repo_digests.iter().filter(keep).cloned().collect();
        if tags.is_empty() && digests.is_empty() {
            if !args.all && has_children {
                continue;
            }
            if filters.dangling == Some(false) || !filters.reference.is_empty() {
                continue;
            }
        } else if filters.dangling == Some(true) && !tags.is_empty() {
            continue;
        }
        let mut img_rows = rows_for(img, &tags, &digests, args.digests, !args.no_trunc);
        if human {
            lazy_size(&store, img, &mut img_rows);
        }
        rows.extend(img_rows);
    }
    let format = if args.quiet {
        Format::new(Some("{{.ID}}"), DEFAULT_TABLE)?
    } else {
        let flag = args.format.as_deref();
        match flag {
            None | Some("") | Some("table") if args.digests => Format::new(None, DIGEST_TABLE)?,
            Some(f) if args.digests && f.starts_with("table") && !f.contains("{{.Digest}}") => {
                Format::new(Some(&format!("{f}\t{{{{.Digest}}}}")), DEFAULT_TABLE)?
            }
            _ => Format::new(flag, DEFAULT_TABLE)?,
        }
    };
    let text = format.render(&image_header(), &rows)?;
    std::io::stdout().lock().write_all(text.as_bytes())?;
    Ok(())
}
