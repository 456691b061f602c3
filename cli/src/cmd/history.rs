//! `strata history IMAGE` (SPEC §10.3).

use std::io::Write;

use anyhow::Result;
use chrono::SecondsFormat;
use serde_json::{json, Value};

use super::Global;
use crate::template::Format;
use crate::units;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Format output using a custom template
    #[arg(long)]
    format: Option<String>,
    /// Print sizes and dates in human readable format
    #[arg(short = 'H', long, default_value_t = true, action = clap::ArgAction::Set,
          num_args = 0..=1, default_missing_value = "true", require_equals = true)]
    human: bool,
    /// Don't truncate output
    #[arg(long = "no-trunc")]
    no_trunc: bool,
    /// Only show image IDs
    #[arg(short, long)]
    quiet: bool,
    /// IMAGE
    image: String,
}

const HUMAN_TABLE: &str = "{{.ID}}\t{{.CreatedSince}}\t{{.CreatedBy}}\t{{.Size}}\t{{.Comment}}";
const RAW_TABLE: &str = "{{.ID}}\t{{.CreatedAt}}\t{{.CreatedBy}}\t{{.Size}}\t{{.Comment}}";

/// docker/cli `Ellipsis`: cut to `max` chars, the last one replaced by `…`.
fn ellipsis(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

pub fn run(global: &Global, args: Args) -> Result<()> {
    let trunc = !args.no_trunc;
    let rows: Vec<Value> = global
        .engine()
        .history(&args.image)?
        .into_iter()
        .map(|it| {
            let id = match &it.id {
                Some(id) if trunc => id.short().to_string(),
                Some(id) => id.to_string(),
                None => "<missing>".to_string(),
            };
            let at = it
                .created
                .map(|t| t.to_rfc3339_opts(SecondsFormat::Secs, true))
                .unwrap_or_else(|| "0001-01-01T00:00:00Z".into());
            let since = if args.human {
                it.created.map(units::ago).unwrap_or_else(|| "N/A".into())
            } else {
                at.clone()
            };
            let by = it.created_by.replace('\t', " ");
            json!({
                "ID": id,
                "CreatedAt": at,
                "CreatedSince": since,
                "CreatedBy": if trunc { ellipsis(&by, 45) } else { by },
                "Size": if args.human { units::human_size3(it.size) } else { it.size.to_string() },
                "Comment": it.comment,
            })
        })
        .collect();
    let default = if args.human { HUMAN_TABLE } else { RAW_TABLE };
    let format = match args.format.as_deref() {
        _ if args.quiet => Format::new(Some("{{.ID}}"), default)?,
        f => Format::new(f, default)?,
    };
    let header = json!({
        "ID": "IMAGE", "CreatedSince": "CREATED", "CreatedAt": "CREATED AT",
        "CreatedBy": "CREATED BY", "Size": "SIZE", "Comment": "COMMENT",
    });
    let text = format.render(&header, &rows)?;
    std::io::stdout().lock().write_all(text.as_bytes())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn ellipsis_like_docker() {
        assert_eq!(super::ellipsis("short", 45), "short");
        let long = "/bin/sh -c #(nop) ADD file:0123456789abcdef0123456789 in / ";
        let e = super::ellipsis(long, 45);
        assert_eq!(e.chars().count(), 45);
        assert!(e.ends_with('…'));
    }
}
