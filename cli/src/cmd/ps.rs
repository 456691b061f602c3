//! `strata ps` and `strata port`.

use std::collections::BTreeMap;

use chrono::Utc;
use strata_runtime::container::{ports, Container, Status};

use super::run::runtime;
use super::Global;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Show all containers (default shows just running)
    #[arg(short = 'a', long)]
    pub all: bool,
    /// Only display container IDs
    #[arg(short = 'q', long)]
    pub quiet: bool,
    /// Don't truncate output
    #[arg(long = "no-trunc")]
    pub no_trunc: bool,
    /// Format output using a Go template (`table` prefix prints headers)
    #[arg(long)]
    pub format: Option<String>,
    /// Filter output based on conditions provided (status=, name=, ancestor=, id=)
    #[arg(short = 'f', long = "filter")]
    pub filter: Vec<String>,
    /// Show n last created containers (includes all states)
    #[arg(short = 'n', long = "last")]
    pub last: Option<usize>,
    /// Show the latest created container (includes all states)
    #[arg(short = 'l', long)]
    pub latest: bool,
}

/// Docker's `units.HumanDuration`.
pub(crate) fn human_duration(secs: i64) -> String {
    let secs = secs.max(0);
    let minutes = secs / 60;
    let hours = (secs as f64 / 3600.0).round() as i64;
    if secs < 1 {
        "Less than a second".to_string()
    } else if secs == 1 {
        "1 second".to_string()
    } else if secs < 60 {
        format!("{secs} seconds")
    } else if minutes == 1 {
        "About a minute".to_string()
    } else if minutes < 60 {
        format!("{minutes} minutes")
    } else if hours == 1 {
        "About an hour".to_string()
    } else if hours < 48 {
        format!("{hours} hours")
    } else if hours < 24 * 7 * 2 {
        format!("{} days", hours / 24)
    } else if hours < 24 * 30 * 2 {
        format!("{} weeks", hours / 24 / 7)
    } else if hours < 24 * 365 * 2 {
        format!("{} months", hours / 24 / 30)
    } else {
        format!("{} years", hours / 24 / 365)
    }
}

fn since(t: Option<chrono::DateTime<Utc>>) -> i64 {
    t.map(|t| (Utc::now() - t).num_seconds()).unwrap_or(0)
}

/// `Up 3 seconds`, `Exited (0) 5 seconds ago`, `Created`.
pub(crate) fn status_text(c: &Container) -> String {
    match c.state.status {
        Status::Created => "Created".to_string(),
        Status::Running => format!("Up {}", human_duration(since(c.state.started_at))),
        Status::Exited => format!(
            "Exited ({}) {} ago",
            c.state.exit_code,
            human_duration(since(c.state.finished_at))
        ),
    }
}

fn ellipsis(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        let mut out: String = s.chars().take(n - 1).collect();
        out.push('…');
        out
    }
}

fn ports_text(c: &Container) -> String {
    if c.state.status != Status::Running {
        return String::new();
    }
    c.state
        .ports
        .iter()
        .map(ports::render)
        .collect::<Vec<_>>()
        .join(", ")
}

fn fields(c: &Container, no_trunc: bool) -> BTreeMap<&'static str, String> {
    let cmd = c.config.argv().join(" ");
    let mut m = BTreeMap::new();
    m.insert(
        "ID",
        if no_trunc {
            c.id().to_string()
        } else {
            c.id().short().to_string()
        },
    );
    m.insert("Image", c.config.image.clone());
    m.insert(
        "Command",
        if no_trunc {
            format!("\"{cmd}\"")
        } else {
            format!("\"{}\"", ellipsis(&cmd, 20))
        },
    );
    m.insert(
        "RunningFor",
        format!("{} ago", human_duration(since(Some(c.config.created)))),
    );
    m.insert(
        "CreatedAt",
        c.config
            .created
            .format("%Y-%m-%d %H:%M:%S %z UTC")
            .to_string(),
    );
    m.insert("Status", status_text(c));
    m.insert("State", c.state.status.as_str().to_string());
    m.insert("Ports", ports_text(c));
    m.insert("Names", c.config.name.clone());
    m.insert("Mounts", String::new());
    m
}

const HEADERS: &[(&str, &str)] = &[
    ("ID", "CONTAINER ID"),
    ("Image", "IMAGE"),
    ("Command", "COMMAND"),
    ("RunningFor", "CREATED"),
    ("CreatedAt", "CREATED AT"),
    ("Status", "STATUS"),
    ("State", "STATE"),
    ("Ports", "PORTS"),
    ("Names", "NAMES"),
];

/// Render `{{.Field}}` placeholders (and `\t`), the subset of Go templates `ps` needs.
fn render(template: &str, f: &BTreeMap<&'static str, String>) -> String {
    let mut out = template.replace("\\t", "\t").replace("\\n", "\n");
    for (k, v) in f {
        for form in [format!("{{{{.{k}}}}}"), format!("{{{{ .{k} }}}}")] {
            out = out.replace(&form, v);
        }
    }
    if out.contains("{{json .}}") {
        let obj: serde_json::Map<String, serde_json::Value> = f
            .iter()
            .map(|(k, v)| (k.to_string(), serde_json::Value::String(v.clone())))
            .collect();
        out = out.replace("{{json .}}", &serde_json::Value::Object(obj).to_string());
    }
    out
}

/// Print rows as an aligned table (Go's tabwriter with padding 3).
fn print_table(rows: &[Vec<String>]) {
    let cols = rows.iter().map(|r| r.len()).max().unwrap_or(0);
    let mut width = vec![0; cols];
    for r in rows {
        for (i, cell) in r.iter().enumerate() {
            width[i] = width[i].max(cell.chars().count());
        }
    }
    for r in rows {
        let mut line = String::new();
        for (i, cell) in r.iter().enumerate() {
            line.push_str(cell);
            if i + 1 < r.len() {
                line.push_str(&" ".repeat(width[i] - cell.chars().count() + 3));
            }
        }
        println!("{}", line.trim_end());
    }
}

fn matches(c: &Container, filters: &[(String, String)]) -> bool {
    let mut by_key: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (k, v) in filters {
        by_key.entry(k.as_str()).or_default().push(v.as_str());
    }
    by_key.iter().all(|(k, vals)| {
        vals.iter().any(|v| match *k {
            "status" => c.state.status.as_str() == *v,
            "name" => c.config.name.contains(v),
            "id" => c.id().as_str().starts_with(v),
            "ancestor" => {
                c.config.image == *v
                    || c.config.image_id == *v
                    || c.config
                        .image_id
                        .trim_start_matches("sha256:")
                        .starts_with(v)
                    || c.config.image.split(':').next() == Some(v)
                    || format!("{v}:latest") == c.config.image
            }
            _ => false,
        })
    })
}

pub fn run(global: &Global, args: Args) -> anyhow::Result<()> {
    let mut filters = Vec::new();
    for f in &args.filter {
        let (k, v) = f
            .split_once('=')
            .ok_or_else(|| anyhow::anyhow!("bad format of filter (expected name=value)"))?;
        if !["status", "name", "ancestor", "id"].contains(&k) {
            anyhow::bail!("invalid filter '{k}'");
        }
        if k == "status"
            && ![
                "created",
                "running",
                "exited",
                "paused",
                "restarting",
                "removing",
                "dead",
            ]
            .contains(&v)
        {
            anyhow::bail!("invalid filter 'status={v}'");
        }
        filters.push((k.to_string(), v.to_string()));
    }
    let rt = runtime(global);
    let mut list: Vec<Container> = rt.list()?;
    let show_all = args.all
        || args.last.is_some()
        || args.latest
        || filters.iter().any(|(k, _)| k == "status");
    if !show_all {
        list.retain(|c| c.is_running());
    }
    list.retain(|c| matches(c, &filters));
    if let Some(n) = args.last.or(args.latest.then_some(1)) {
        list.truncate(n);
    }
    if args.quiet {
        for c in &list {
            if args.no_trunc {
                println!("{}", c.id());
            } else {
                println!("{}", c.id().short());
            }
        }
        return Ok(());
    }
    let format = args
        .format
        .clone()
        .unwrap_or_else(|| "table {{.ID}}\t{{.Image}}\t{{.Command}}\t{{.RunningFor}}\t{{.Status}}\t{{.Ports}}\t{{.Names}}".to_string());
    if let Some(body) = format.strip_prefix("table") {
        let body = body.trim_start();
        let mut header_fields = BTreeMap::new();
        for (k, h) in HEADERS {
            header_fields.insert(*k, h.to_string());
        }
        let mut rows = vec![render(body, &header_fields)
            .split('\t')
            .map(str::to_string)
            .collect::<Vec<_>>()];
        for c in &list {
            rows.push(
                render(body, &fields(c, args.no_trunc))
                    .split('\t')
                    .map(str::to_string)
                    .collect(),
            );
        }
        print_table(&rows);
    } else {
        for c in &list {
            println!("{}", render(&format, &fields(c, args.no_trunc)));
        }
    }
    Ok(())
}

#[derive(clap::Args, Debug)]
pub struct PortArgs {
    pub container: String,
    /// PRIVATE_PORT[/PROTO]
    pub private_port: Option<String>,
}

pub fn run_port(global: &Global, args: PortArgs) -> anyhow::Result<()> {
    let rt = runtime(global);
    let c = rt.lookup(&args.container)?;
    let mappings = if c.is_running() {
        &c.state.ports
    } else {
        &c.config.ports
    };
    match &args.private_port {
        None => {
            for p in mappings {
                println!(
                    "{}/{} -> {}:{}",
                    p.container_port, p.proto, p.host_ip, p.host_port
                );
            }
        }
        Some(q) => {
            let (port, proto) = q.split_once('/').unwrap_or((q.as_str(), "tcp"));
            let found: Vec<_> = mappings
                .iter()
                .filter(|p| p.container_port.to_string() == port && p.proto == proto)
                .collect();
            if found.is_empty() {
                anyhow::bail!(
                    "No public port '{port}/{proto}' published for {}",
                    args.container
                );
            }
            for p in found {
                println!("{}:{}", p.host_ip, p.host_port);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_like_docker() {
        assert_eq!(human_duration(0), "Less than a second");
        assert_eq!(human_duration(1), "1 second");
        assert_eq!(human_duration(3), "3 seconds");
        assert_eq!(human_duration(65), "About a minute");
        assert_eq!(human_duration(600), "10 minutes");
        assert_eq!(human_duration(3600), "About an hour");
        assert_eq!(human_duration(5 * 3600), "5 hours");
        assert_eq!(human_duration(3 * 86400), "3 days");
    }

    #[test]
    fn templates() {
        let mut f = BTreeMap::new();
        f.insert("ID", "abc".to_string());
        f.insert("Names", "web".to_string());
        assert_eq!(render("{{.ID}}\\t{{.Names}}", &f), "abc\tweb");
        assert_eq!(
            ellipsis("0123456789abcdefghijXYZ", 20),
            "0123456789abcdefghi…"
        );
    }
}
