//! The events log (one owner): strata has no daemon to hold Docker's event stream, so every
//! strata process that changes state appends one JSON line per event to
//! `<runroot>/events/events.log` (podman's `events_logger = "file"`), and `strata events`
//! reads and follows that file.
//!
//! - *line*: one [`Event`] serialized as JSON plus `\n`, written with a single `write(2)` on an
//!   `O_APPEND` descriptor, so concurrent writers never interleave inside a line.
//! - *size cap*: when the log passes [`MAX_SIZE`] after an append, the newest half (cut at a
//!   line boundary) is copied to a new file that replaces the log (podman's
//!   `events_logfile_max_size`). Writers hold `events.lock` shared while they open and write;
//!   the rotation holds it exclusive, so no append goes to the replaced file.
//! - *follower* ([`Follower`]): reads the log from its start, then what is appended; when a
//!   rotation replaced the file it finishes the old one and goes on in the new one from the
//!   first event newer than the last it returned (an event whose time was taken before that one
//!   but appended after it, by a slower concurrent writer, is skipped in that one case).
//! - *never fatal*: [`record`] cannot fail the verb that changed state; a log that cannot be
//!   written is a `log::warn!`.
//! - [`Event::message`] is Docker's `events.Message` (the API's and `--format '{{json .}}'`'s
//!   shape): `status`/`id`/`from` filled for container and image events, `scope` `local`.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The log is cut back to its newest half once an append takes it past this size (1 MiB).
pub const MAX_SIZE: u64 = 1 << 20;

/// One event as the log stores it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// Nanoseconds since the Unix epoch.
    pub time: i64,
    /// `container`, `image`, `volume` or `network` (Docker's `Type`).
    #[serde(rename = "type")]
    pub kind: String,
    /// Docker's `Action`: `create`, `start`, `die`, `destroy`, `pull`, `tag`, …
    pub action: String,
    /// The actor: a full container id, an image id (`sha256:…`) or reference, a volume name.
    pub id: String,
    /// Docker's `Actor.Attributes` (`name`, `image`, `exitCode`, `signal`, labels, …).
    #[serde(default)]
    pub attributes: BTreeMap<String, String>,
}

/// Docker's `events.Message`, field for field in Docker's order.
#[derive(Debug, Clone, Serialize)]
pub struct Message {
    #[serde(skip_serializing_if = "String::is_empty")]
    pub status: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub id: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub from: String,
    #[serde(rename = "Type")]
    pub kind: String,
    #[serde(rename = "Action")]
    pub action: String,
    #[serde(rename = "Actor")]
    pub actor: Actor,
    pub scope: String,
    pub time: i64,
    #[serde(rename = "timeNano")]
    pub time_nano: i64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Actor {
    #[serde(rename = "ID")]
    pub id: String,
    #[serde(rename = "Attributes")]
    pub attributes: BTreeMap<String, String>,
}

fn now_ns() -> i64 {
    chrono::Utc::now().timestamp_nanos_opt().unwrap_or(i64::MAX)
}

impl Event {
    /// An event of `kind` happening now to `id`.
    pub fn new(kind: &str, action: &str, id: &str) -> Event {
        Event {
            time: now_ns(),
            kind: kind.to_string(),
            action: action.to_string(),
            id: id.to_string(),
            attributes: BTreeMap::new(),
        }
    }

    /// A container event: Docker's attributes are the container's labels, `image` and `name`.
    pub fn container(c: &crate::container::ContainerConfig, action: &str) -> Event {
        let mut e = Event::new("container", action, c.id.as_str());
        e.attributes = c.labels.clone();
        e.attributes.insert("image".into(), c.image.clone());
        e.attributes.insert("name".into(), c.name.clone());
        e
    }

    /// An image event: `name` is what Docker's `LogImageEvent` is given as the ref name.
    pub fn image(action: &str, id: &str, name: &str) -> Event {
        Event::new("image", action, id).attr("name", name)
    }

    /// One more attribute.
    pub fn attr(mut self, k: &str, v: impl Into<String>) -> Event {
        self.attributes.insert(k.to_string(), v.into());
        self
    }

    /// The log line: JSON and a newline.
    pub fn to_line(&self) -> String {
        let mut s = serde_json::to_string(self).unwrap_or_default();
        s.push('\n');
        s
    }

    /// Parse one log line (`None` for a broken or foreign line, which readers skip).
    pub fn from_line(line: &str) -> Option<Event> {
        serde_json::from_str(line.trim_end()).ok()
    }

    /// Docker's `events.Message` of this event.
    pub fn message(&self) -> Message {
        let legacy = matches!(self.kind.as_str(), "container" | "image");
        Message {
            status: if legacy {
                self.action.clone()
            } else {
                String::new()
            },
            id: if legacy {
                self.id.clone()
            } else {
                String::new()
            },
            from: if self.kind == "container" {
                self.attributes.get("image").cloned().unwrap_or_default()
            } else {
                String::new()
            },
            kind: self.kind.clone(),
            action: self.action.clone(),
            actor: Actor {
                id: self.id.clone(),
                attributes: self.attributes.clone(),
            },
            scope: "local".into(),
            time: self.time.div_euclid(1_000_000_000),
            time_nano: self.time,
        }
    }
}

/// `<runroot>/events/events.log`.
pub fn log_path(runroot: &Path) -> PathBuf {
    runroot.join("events").join("events.log")
}

fn lock_path(runroot: &Path) -> PathBuf {
    runroot.join("events").join("events.lock")
}

/// Append `ev` to the log under `runroot`; never fails (a warning at most).
pub fn record(runroot: &Path, ev: &Event) {
    if let Err(e) = append(runroot, ev, MAX_SIZE) {
        log::warn!("cannot record the {} {} event: {e}", ev.kind, ev.action);
    }
}

fn append(runroot: &Path, ev: &Event, max: u64) -> io::Result<()> {
    let dir = runroot.join("events");
    std::fs::create_dir_all(&dir)?;
    let line = ev.to_line();
    let size = {
        let _shared =
            crate::fsutil::lock_file(&lock_path(runroot), crate::fsutil::LockMode::Shared)?;
        let mut f = OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o600)
            .custom_flags(libc::O_CLOEXEC)
            .open(log_path(runroot))?;
        // One write(2): O_APPEND makes it atomic with respect to the other writers.
        let n = f.write(line.as_bytes())?;
        if n != line.len() {
            return Err(io::Error::other(format!(
                "short write ({n} of {} bytes)",
                line.len()
            )));
        }
        f.metadata()?.len()
    };
    if size > max {
        rotate(runroot, max)?;
    }
    Ok(())
}

/// Keep the newest half of the log (from a line boundary), under the exclusive lock.
fn rotate(runroot: &Path, max: u64) -> io::Result<()> {
    let _excl = crate::fsutil::lock_file(&lock_path(runroot), crate::fsutil::LockMode::Exclusive)?;
    let path = log_path(runroot);
    let mut f = File::open(&path)?;
    let len = f.metadata()?.len();
    if len <= max {
        return Ok(()); // another writer rotated it first
    }
    f.seek(SeekFrom::Start(len - max / 2))?;
    let mut tail = Vec::with_capacity((max / 2) as usize);
    f.read_to_end(&mut tail)?;
    let keep = match tail.iter().position(|b| *b == b'\n') {
        Some(i) => &tail[i + 1..],
        None => &[][..],
    };
    let tmp = path.with_extension("log.rotate");
    {
        let mut out = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        out.write_all(keep)?;
    }
    std::fs::rename(&tmp, &path)
}

/// Reads the log from its start and then follows it: returns each new complete line's event,
/// reopening the log when a rotation replaced it (skipping what was already returned).
pub struct Follower {
    path: PathBuf,
    file: Option<File>,
    ino: u64,
    pending: Vec<u8>,
    last_time: i64,
}

impl Follower {
    pub fn new(runroot: &Path) -> Follower {
        Follower {
            path: log_path(runroot),
            file: None,
            ino: 0,
            pending: Vec::new(),
            last_time: i64::MIN,
        }
    }

    /// The events appended since the last call (the whole log on the first call).
    pub fn poll(&mut self) -> Vec<Event> {
        use std::os::unix::fs::MetadataExt;
        let mut out = Vec::new();
        if self.file.is_none() {
            self.open(&mut out, false);
            return out;
        }
        self.drain(&mut out, false);
        // Replaced by a rotation (or removed): finish the old file, then start the new one.
        let replaced = match std::fs::metadata(&self.path) {
            Ok(m) => m.ino() != self.ino,
            Err(_) => false,
        };
        if replaced {
            self.drain(&mut out, false);
            self.pending.clear();
            self.open(&mut out, true);
        }
        out
    }

    fn open(&mut self, out: &mut Vec<Event>, after_rotation: bool) {
        use std::os::unix::fs::MetadataExt;
        if let Ok(f) = File::open(&self.path) {
            self.ino = f.metadata().map(|m| m.ino()).unwrap_or(0);
            self.file = Some(f);
            self.drain(out, after_rotation);
        }
    }

    fn drain(&mut self, out: &mut Vec<Event>, skip_seen: bool) {
        let Some(f) = self.file.as_mut() else {
            return;
        };
        let _ = f.read_to_end(&mut self.pending);
        let Some(end) = self.pending.iter().rposition(|b| *b == b'\n') else {
            return;
        };
        let rest = self.pending.split_off(end + 1);
        let complete = std::mem::replace(&mut self.pending, rest);
        for line in complete.split(|b| *b == b'\n') {
            let Some(ev) = std::str::from_utf8(line).ok().and_then(Event::from_line) else {
                continue;
            };
            if skip_seen && ev.time <= self.last_time {
                continue;
            }
            self.last_time = self.last_time.max(ev.time);
            out.push(ev);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(i: usize) -> Event {
        Event {
            time: 1_765_126_020_123_456_789 + i as i64,
            kind: "container".into(),
            action: "create".into(),
            id: format!("{i:064x}"),
            attributes: BTreeMap::from([
                ("name".to_string(), "web".to_string()),
                ("image".to_string(), "busybox".to_string()),
            ]),
        }
    }

    #[test]
    fn line_format_round_trips_and_message_is_dockers() {
        let e = ev(1);
        let line = e.to_line();
        assert!(line.ends_with('\n') && !line[..line.len() - 1].contains('\n'));
        assert_eq!(
            line,
            format!(
                "{{\"time\":1765126020123456790,\"type\":\"container\",\"action\":\"create\",\"id\":\"{}\",\"attributes\":{{\"image\":\"busybox\",\"name\":\"web\"}}}}\n",
                e.id
            )
        );
        assert_eq!(Event::from_line(&line), Some(e.clone()));
        assert_eq!(Event::from_line("{\"time\":1,\"ty"), None);
        let m = serde_json::to_string(&e.message()).unwrap();
        assert_eq!(
            m,
            format!(
                "{{\"status\":\"create\",\"id\":\"{0}\",\"from\":\"busybox\",\"Type\":\"container\",\"Action\":\"create\",\"Actor\":{{\"ID\":\"{0}\",\"Attributes\":{{\"image\":\"busybox\",\"name\":\"web\"}}}},\"scope\":\"local\",\"time\":1765126020,\"timeNano\":1765126020123456790}}",
                e.id
            )
        );
        // Volume and network events carry no legacy fields.
        let v = serde_json::to_value(Event::new("volume", "create", "data").message()).unwrap();
        assert!(v.get("status").is_none() && v.get("id").is_none() && v.get("from").is_none());
    }

    #[test]
    fn size_cap_keeps_the_newest_half_at_a_line_boundary() {
        let t = tempfile::tempdir().unwrap();
        let max = 4096;
        for i in 0..100 {
            append(t.path(), &ev(i), max).unwrap();
        }
        let text = std::fs::read_to_string(log_path(t.path())).unwrap();
        assert!(text.len() as u64 <= max, "{} bytes", text.len());
        assert!(text.len() as u64 >= max / 2 - 300, "{} bytes", text.len());
        let events: Vec<Event> = text.lines().map(|l| Event::from_line(l).unwrap()).collect();
        assert_eq!(events.last().unwrap(), &ev(99), "the newest is kept");
        let first = events[0].time - ev(0).time;
        for (k, e) in events.iter().enumerate() {
            assert_eq!(e, &ev(first as usize + k), "consecutive, nothing torn");
        }
        assert!(first > 0, "the oldest went");
    }

    #[test]
    fn follower_reads_everything_once_across_rotations() {
        let t = tempfile::tempdir().unwrap();
        let mut f = Follower::new(t.path());
        assert!(f.poll().is_empty(), "no log yet");
        let mut seen = Vec::new();
        for i in 0..200 {
            append(t.path(), &ev(i), 4096).unwrap();
            if i % 7 == 0 {
                seen.extend(f.poll());
            }
        }
        seen.extend(f.poll());
        assert_eq!(seen, (0..200).map(ev).collect::<Vec<_>>());
        assert!(f.poll().is_empty());
    }
}
