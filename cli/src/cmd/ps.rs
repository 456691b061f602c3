//! `strata ps` and `strata port`.

use std::collections::BTreeMap;

use chrono::Utc;
use std::io::Write;

use strata_runtime::container::health::HealthStatus;
use strata_runtime::container::{ports, Container, Status};
use strata_runtime::filters::{self, Filters};

use crate::template::Format;

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
    /// Filter output based on conditions provided (status=, name=, ancestor=, id=, network=, health=)
    #[arg(short = 'f', long = "filter")]
    pub filter: Vec<String>,
    /// Show n last created containers (includes all states)
    #[arg(short = 'n', long = "last")]
    pub last: Option<usize>,
    /// Show the latest created container (includes all states)
    #[arg(short = 'l', long)]
    pub latest: bool,
    /// Display total file sizes
    #[arg(short = 's', long)]
    pub size: bool,
}

fn human_duration(secs: i64) -> String {
    crate::units::human_duration(chrono::Duration::seconds(secs.max(0)))
}

fn since(t: Option<chrono::DateTime<Utc>>) -> i64 {
    t.map(|t| (Utc::now() - t).num_seconds()).unwrap_or(0)
}

/// `Up 3 seconds`, `Exited (0) 5 seconds ago`, `Created`.
pub(crate) fn status_text(c: &Container) -> String {
    match c.state.status {
        Status::Created => "Created".to_string(),
        Status::Running if strata_runtime::container::manage::is_paused(c.id()) => {
            format!("Up {} (Paused)", human_duration(since(c.state.started_at)))
        }
        Status::Running => {
            let up = format!("Up {}", human_duration(since(c.state.started_at)));
            match strata_runtime::container::health::read(c).map(|h| h.status) {
                Some(HealthStatus::Starting) => format!("{up} (health: starting)"),
                Some(s) => format!("{up} ({})", s.as_str()),
                None => up,
            }
        }
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

/// Go's `strconv.Quote`, which Docker applies to the COMMAND column: `"` and `\\` escaped, control
/// characters as `\\n`, `\\t`, `\\xNN` or `\\uNNNN`.
fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                out.push_str(&format!("\\x{:02x}", c as u32))
            }
            c if c.is_control() => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn fields(c: &Container, no_trunc: bool) -> serde_json::Value {
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
            go_quote(&cmd)
        } else {
            go_quote(&ellipsis(&cmd, 20))
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
    m.insert(
        "Labels",
        c.config
            .labels
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(","),
    );
    m.insert(
        "Networks",
        strata_runtime::network::api::container_networks(c),
    );
    serde_json::to_value(m).unwrap_or_default()
}

const DEFAULT_TABLE: &str =
    "{{.ID}}\t{{.Image}}\t{{.Command}}\t{{.RunningFor}}\t{{.Status}}\t{{.Ports}}\t{{.Names}}";

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
    ("Mounts", "MOUNTS"),
    ("Networks", "NETWORKS"),
    ("Labels", "LABELS"),
    ("Size", "SIZE"),
];

fn matches(c: &Container, f: &Filters) -> bool {
    f.any_of("status", |v| c.state.status.as_str() == v)
        && f.any_of("name", |v| c.config.name.contains(v))
        && f.any_of("id", |v| c.id().as_str().starts_with(v))
        && f.get("label")
            .all(|l| filters::label_matches(Some(&c.config.labels), l))
        && f.any_of("health", |v| {
            let h = strata_runtime::container::health::read(c).filter(|_| c.is_running());
            match h {
                Some(h) => h.status.as_str() == v,
                None => v == "none",
            }
        })
        && f.any_of("network", |v| {
            strata_runtime::network::api::container_networks(c)
                .split(',')
                .any(|n| n == v)
        })
        && f.any_of("ancestor", |v| {
            c.config.image == v
                || c.config
                    .image_id
                    .as_ref()
                    .is_some_and(|id| id.as_str() == v || id.hex().starts_with(v))
                || c.config.image.split(':').next() == Some(v)
                || format!("{v}:latest") == c.config.image
        })
}

pub fn run(global: &Global, args: Args) -> anyhow::Result<()> {
    let filters = Filters::parse(
        &args.filter,
        &[
            "status", "name", "ancestor", "id", "network", "health", "label",
        ],
    )?;
    filters.check_values("health", &["starting", "healthy", "unhealthy", "none"])?;
    filters.check_values(
        "status",
        &[
            "created",
            "running",
            "exited",
            "paused",
            "restarting",
            "removing",
            "dead",
        ],
    )?;
    let rt = global.containers();
    let mut list: Vec<Container> = rt.list()?;
    let show_all = args.all || args.last.is_some() || args.latest || filters.contains("status");
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
    let table = if args.size {
        format!("{DEFAULT_TABLE}\t{{{{.Size}}}}")
    } else {
        DEFAULT_TABLE.to_string()
    };
    let format = Format::new(args.format.as_deref(), &table)?;
    let header: serde_json::Map<String, serde_json::Value> = HEADERS
        .iter()
        .map(|(k, h)| (k.to_string(), serde_json::Value::String(h.to_string())))
        .collect();
    let mut rows: Vec<serde_json::Value> = list.iter().map(|c| fields(c, args.no_trunc)).collect();
    // Docker computes sizes only when asked (`-s`, or a format that names `.Size`).
    if args.size || args.format.as_deref().is_some_and(|f| f.contains(".Size")) {
        let engine = global.engine();
        for (c, row) in list.iter().zip(rows.iter_mut()) {
            let (rw, root) = engine.container_size(c)?;
            row["Size"] = serde_json::Value::String(format!(
                "{} (virtual {})",
                crate::units::human_size3(rw),
                crate::units::human_size3(root)
            ));
        }
    }
    if matches!(args.format.as_deref(), None | Some("") | Some("table")) {
        lazy_status(global, &list, &mut rows);
    }
    let text = format.render(&serde_json::Value::Object(header), &rows)?;
    std::io::stdout().lock().write_all(text.as_bytes())?;
    Ok(())
}

/// The default table only (for people; a `--format` gets Docker's text): a running container
/// whose image is still being fetched lazily says so after its status, as Docker appends
/// `(healthy)`: `Up 3 seconds (lazy 3%)` (see `images`).
fn lazy_status(global: &Global, list: &[Container], rows: &mut [serde_json::Value]) {
    let Ok(store) = global.store() else { return };
    for (c, row) in list.iter().zip(rows) {
        if !c.is_running() {
            continue;
        }
        let Some(img) = c.config.image_id.as_ref().and_then(|i| store.image(i).ok()) else {
            continue;
        };
        if let Some(f) = strata_runtime::lazy::image_fetch(&store, &img) {
            let status = format!("{} (lazy {}%)", status_text(c), f.percent());
            row["Status"] = serde_json::Value::String(status);
        }
    }
}

#[derive(clap::Args, Debug)]
pub struct PortArgs {
    pub container: String,
    /// PRIVATE_PORT[/PROTO]
    pub private_port: Option<String>,
}

pub fn run_port(global: &Global, args: PortArgs) -> anyhow::Result<()> {
    let rt = global.containers();
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
                    "{}/{} -> {}",
                    p.container_port,
                    p.proto,
                    host_addr(&p.host_ip, p.host_port)
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
                println!("{}", host_addr(&p.host_ip, p.host_port));
            }
        }
    }
    Ok(())
}

/// `0.0.0.0:8080`, `[::]:8080` (as `docker port` prints them).
fn host_addr(ip: &str, port: u16) -> String {
    if ip.contains(':') {
        format!("[{ip}]:{port}")
    } else {
        format!("{ip}:{port}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncation() {
        assert_eq!(
            ellipsis("0123456789abcdefghijXYZ", 20),
            "0123456789abcdefghi…"
        );
        assert_eq!(human_duration(3), "3 seconds");
    }

    #[test]
    fn command_is_quoted_as_go_quotes_it() {
        assert_eq!(
            go_quote("nginx -g daemon off;"),
            r#""nginx -g daemon off;""#
        );
        assert_eq!(go_quote(r#"sh -c "echo \x""#), r#""sh -c \"echo \\x\"""#);
        assert_eq!(go_quote("a\tb\u{1}"), r#""a\tb\x01""#);
    }
}
