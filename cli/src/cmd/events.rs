//! `strata events` (and `system events`): Docker's event stream, read from the events log every
//! strata process appends to (see `strata_runtime::events`). Without `--until` it follows the
//! log until SIGINT/SIGTERM (exit 0); with `--until` it stops once that time has passed.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Result;
use chrono::{DateTime, Local, Utc};

use strata_runtime::events::{Event, Follower};
use strata_runtime::filters::{label_matches, Filters};

use super::Global;
use crate::template::Template;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Filter output based on conditions provided
    #[arg(short = 'f', long = "filter")]
    pub filter: Vec<String>,
    /// Format output using a custom template: 'json' (JSON lines) or a Go template
    #[arg(long)]
    pub format: Option<String>,
    /// Show all events created since timestamp
    #[arg(long)]
    pub since: Option<String>,
    /// Stream events until this timestamp
    #[arg(long)]
    pub until: Option<String>,
}

/// Docker's accepted event filter keys (`action` is strata's alias of `event`).
const KEYS: &[&str] = &[
    "container",
    "daemon",
    "event",
    "action",
    "image",
    "label",
    "network",
    "node",
    "plugin",
    "scope",
    "service",
    "type",
    "volume",
    "config",
    "secret",
];

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

fn time_arg(flag: &str, v: &Option<String>, now: DateTime<Utc>) -> Result<Option<i64>> {
    v.as_deref()
        .map(|s| {
            strata_runtime::timeargs::parse_time_arg(s, now)
                .and_then(|t| t.timestamp_nanos_opt())
                .ok_or_else(|| {
                    anyhow::anyhow!(
                        "invalid value for \"{flag}\": failed to parse value as time or duration: \"{s}\""
                    )
                })
        })
        .transpose()
}

/// moby's `stripTag`: the familiar name of a reference (`busybox:1.36` → `busybox`); anything
/// that is no reference (an image ID) unchanged.
fn strip_tag(s: &str) -> String {
    strata_runtime::reference::Reference::parse(s)
        .map(|r| r.familiar_name())
        .unwrap_or_else(|_| s.to_string())
}

/// moby's `events.Filter.Include`.
pub(crate) fn include(f: &Filters, ev: &Event) -> bool {
    let exact = |key: &str, v: &str| f.any_of(key, |x| x == v);
    let fuzzy = |key: &str, v: &str| f.any_of(key, |x| v.starts_with(x));
    let name = ev.attributes.get("name").map(String::as_str).unwrap_or("");
    let actor_match = |kind: &str| fuzzy(kind, &ev.id) || fuzzy(kind, name);
    let image_name = ev
        .attributes
        .get(if ev.kind == "image" { "name" } else { "image" })
        .map(String::as_str)
        .unwrap_or("");
    let image_ok = !f.contains("image")
        || [
            ev.id.clone(),
            image_name.to_string(),
            strip_tag(&ev.id),
            strip_tag(image_name),
        ]
        .iter()
        .any(|v| f.get("image").any(|x| x == v));
    // moby #25798: `health_status`, `exec_create`, `exec_start` also match `exec_start: sh …`.
    let action_ok = |key: &str| {
        if f.get(key)
            .any(|v| matches!(v, "health_status" | "exec_create" | "exec_start"))
        {
            fuzzy(key, &ev.action)
        } else {
            exact(key, &ev.action)
        }
    };
    action_ok("event")
        && action_ok("action")
        && exact("type", &ev.kind)
        && exact("scope", "local")
        && [
            "daemon",
            "container",
            "plugin",
            "volume",
            "network",
            "node",
            "service",
            "secret",
            "config",
        ]
        .iter()
        .all(|k| actor_match(k))
        && image_ok
        && f.get("label")
            .all(|l| label_matches(Some(&ev.attributes), l))
}

/// Docker's default line (cli/command/system/events.go `prettyPrintEvent`): local time with
/// nine fraction digits, type, action, actor id, then the attributes sorted by key.
pub(crate) fn pretty(ev: &Event) -> String {
    let t = DateTime::from_timestamp_nanos(ev.time).with_timezone(&Local);
    let zone = if t.offset().local_minus_utc() == 0 {
        "Z".to_string()
    } else {
        t.format("%:z").to_string()
    };
    let mut s = format!(
        "{}{zone} {} {} {}",
        t.format("%Y-%m-%dT%H:%M:%S%.9f"),
        ev.kind,
        ev.action,
        ev.id
    );
    if !ev.attributes.is_empty() {
        let attrs: Vec<String> = ev
            .attributes
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        s.push_str(&format!(" ({})", attrs.join(", ")));
    }
    s
}

/// The message as a Go template sees it: the struct's field names (`.Status`, `.ID`, `.From`,
/// `.Scope`, `.Time`, `.TimeNano`), not its JSON keys.
fn go_fields(ev: &Event) -> serde_json::Value {
    let m = ev.message();
    serde_json::json!({
        "Status": m.status,
        "ID": m.id,
        "From": m.from,
        "Type": m.kind,
        "Action": m.action,
        "Actor": {"ID": m.actor.id, "Attributes": m.actor.attributes},
        "Scope": m.scope,
        "Time": m.time,
        "TimeNano": m.time_nano,
    })
}

enum Output {
    Pretty,
    /// `{{json .}}` / `json`: Docker's message in Docker's field order.
    Json,
    Template(Template),
}

impl Output {
    fn render(&self, ev: &Event) -> Result<String> {
        Ok(match self {
            Output::Pretty => pretty(ev),
            Output::Json => serde_json::to_string(&ev.message())?,
            Output::Template(t) => t.render(&go_fields(ev))?,
        })
    }
}

pub fn run(global: &Global, args: Args) -> Result<()> {
    let filters = Filters::parse(&args.filter, KEYS)?;
    let now = Utc::now();
    let since = time_arg("since", &args.since, now)?;
    let until = time_arg("until", &args.until, now)?;
    let output = match args.format.as_deref().map(str::trim) {
        None | Some("") => Output::Pretty,
        Some("json") | Some("{{json .}}") => Output::Json,
        Some(t) => Output::Template(Template::parse(
            &t.replace("\\t", "\t").replace("\\n", "\n"),
        )?),
    };
    let now_ns = now.timestamp_nanos_opt().unwrap_or(i64::MAX);
    // Docker: no `--since`/`--until`, only what happens from now on; else the past from
    // `since` (or the log's start) too.
    let from = match (since, until) {
        (None, None) => now_ns,
        (s, _) => s.unwrap_or(i64::MIN),
    };
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: the handler only stores to an atomic.
        unsafe { libc::signal(sig, on_signal as *const () as libc::sighandler_t) };
    }
    let mut follower = Follower::new(global.engine().runroot());
    let mut out = std::io::stdout().lock();
    loop {
        for ev in follower.poll() {
            if ev.time < from || until.is_some_and(|u| ev.time > u) || !include(&filters, &ev) {
                continue;
            }
            let line = output.render(&ev)?;
            writeln!(out, "{line}")?;
        }
        out.flush()?;
        let now = Utc::now().timestamp_nanos_opt().unwrap_or(i64::MAX);
        if STOP.load(Ordering::SeqCst) || until.is_some_and(|u| now > u) {
            // One last look: what was written up to `until` is shown.
            if !STOP.load(Ordering::SeqCst) {
                for ev in follower.poll() {
                    if ev.time >= from
                        && until.is_some_and(|u| ev.time <= u)
                        && include(&filters, &ev)
                    {
                        writeln!(out, "{}", output.render(&ev)?)?;
                    }
                }
                out.flush()?;
            }
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn ev(kind: &str, action: &str, id: &str, attrs: &[(&str, &str)]) -> Event {
        Event {
            time: 1_765_126_020_123_456_789,
            kind: kind.into(),
            action: action.into(),
            id: id.into(),
            attributes: attrs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>(),
        }
    }

    fn f(v: &[&str]) -> Filters {
        Filters::parse(&v.iter().map(|s| s.to_string()).collect::<Vec<_>>(), KEYS).unwrap()
    }

    #[test]
    fn filters_are_mobys() {
        let c = ev(
            "container",
            "die",
            "abcdef0123",
            &[("name", "web"), ("image", "busybox:1.36"), ("tier", "db")],
        );
        let i = ev("image", "tag", "sha256:99", &[("name", "busybox:mine")]);
        assert!(include(&f(&[]), &c));
        assert!(include(&f(&["event=die", "event=start"]), &c));
        assert!(!include(&f(&["event=start"]), &c));
        assert!(include(&f(&["action=die"]), &c));
        assert!(include(&f(&["container=web"]), &c));
        assert!(include(&f(&["container=abc"]), &c), "id prefix");
        assert!(!include(&f(&["container=web"]), &i));
        assert!(include(&f(&["type=image"]), &i) && !include(&f(&["type=image"]), &c));
        assert!(include(&f(&["image=busybox"]), &c), "tag stripped");
        assert!(include(&f(&["image=busybox:mine"]), &i));
        assert!(!include(&f(&["image=alpine"]), &c));
        assert!(include(&f(&["label=tier=db"]), &c));
        assert!(
            !include(&f(&["label=tier=db", "label=x"]), &c),
            "labels all required"
        );
        assert!(
            !include(&f(&["event=die", "container=db"]), &c),
            "keys are AND"
        );
        assert!(!include(&f(&["plugin=x"]), &c), "no plugin events here");
        let exec = ev("container", "exec_start: sh -c true", "abc", &[]);
        assert!(include(&f(&["event=exec_start"]), &exec));
        assert!(!include(&f(&["event=exec"]), &exec));
        assert_eq!(
            Filters::parse(&["colour=red".to_string()], KEYS)
                .unwrap_err()
                .to_string(),
            "invalid filter 'colour'"
        );
    }

    #[test]
    fn default_line_is_dockers() {
        std::env::set_var("TZ", "UTC");
        let c = ev(
            "container",
            "create",
            "abc",
            &[("name", "web"), ("image", "busybox")],
        );
        assert_eq!(
            pretty(&c),
            "2025-12-07T16:47:00.123456789Z container create abc (image=busybox, name=web)"
        );
        assert_eq!(
            pretty(&ev("volume", "create", "data", &[])),
            "2025-12-07T16:47:00.123456789Z volume create data"
        );
        let t = Template::parse(
            "{{.Status}} {{.ID}} {{.From}} {{.Scope}} {{.Time}} {{.Actor.Attributes.name}}",
        )
        .unwrap();
        assert_eq!(
            t.render(&go_fields(&c)).unwrap(),
            "create abc busybox local 1765126020 web"
        );
        assert_eq!(strip_tag("localhost:5000/a:b"), "localhost:5000/a");
        assert_eq!(strip_tag("localhost:5000/a"), "localhost:5000/a");
        assert_eq!(strip_tag("docker.io/library/busybox:1"), "busybox");
        // As moby's: an image ID parses as a reference named `sha256`.
        assert_eq!(strip_tag("sha256:0123"), "sha256");
        assert_eq!(strip_tag("UPPER"), "UPPER");
    }
}
