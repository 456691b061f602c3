//! Container logs in Docker's `json-file` format: one JSON object per line,
//! `{"log":"text\n","stream":"stdout","time":"2026-01-01T00:00:00.123456789Z"}`.
//! The supervisor appends (one thread per stream, each line written whole); `logs` reads.
//!
//! `--log-driver` / `--log-opt` ([`LogConfig`]): `json-file` (the default) with Docker's
//! `max-size` / `max-file` rotation — once the file holds `max-size` bytes it becomes
//! `container.log.1` (older ones shift to `.2` … `.<max-file - 1>`, the oldest is dropped) and
//! a new file starts; readers go through the rotated files, oldest first, then the current one,
//! and a follower moves on to the new file — or `none` (nothing written; `logs` refuses).

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::{DateTime, SecondsFormat, Utc};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

/// One log record.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LogEntry {
    pub log: String,
    pub stream: String,
    /// `--log-opt labels=…` / `env=…`: the container's labels and environment variables named
    /// there, in every record (Docker's `attrs`; `logs --details` shows them).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub attrs: BTreeMap<String, String>,
    pub time: DateTime<Utc>,
}

impl LogEntry {
    /// `logs --details`' prefix: `key=value,…` (keys sorted, query-escaped as Docker does),
    /// empty without attributes.
    pub fn details(&self) -> String {
        self.attrs
            .iter()
            .map(|(k, v)| format!("{}={}", query_escape(k), query_escape(v)))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// RFC 3339 with nanoseconds, as `docker logs -t` prints it.
    pub fn timestamp(&self) -> String {
        self.time.to_rfc3339_opts(SecondsFormat::Nanos, true)
    }
}

/// `--log-driver` and `--log-opt`, checked (Docker's messages).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogConfig {
    /// `json-file` or `none`.
    #[serde(rename = "Type")]
    pub kind: String,
    /// The options as given (`inspect` shows them).
    #[serde(rename = "Config", default)]
    pub opts: BTreeMap<String, String>,
}

impl Default for LogConfig {
    fn default() -> LogConfig {
        LogConfig {
            kind: "json-file".to_string(),
            opts: BTreeMap::new(),
        }
    }
}

/// Rotation of a `json-file` log: `max-size` bytes per file (`None`: never rotated), `max-file`
/// files in all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rotation {
    pub max_size: Option<u64>,
    pub max_files: u32,
}

impl LogConfig {
    /// `--log-driver` (`None`: json-file) and its `--log-opt KEY=VALUE`s.
    pub fn parse(driver: Option<&str>, opts: &[String]) -> Result<LogConfig, String> {
        let kind = driver.unwrap_or("json-file").to_string();
        let mut map = BTreeMap::new();
        for o in opts {
            let Some((k, v)) = o.split_once('=') else {
                return Err(format!("invalid key-value format: '{o}'"));
            };
            map.insert(k.to_string(), v.to_string());
        }
        match kind.as_str() {
            "json-file" => {
                for k in map.keys() {
                    match k.as_str() {
                        "max-size" | "max-file" | "compress" | "labels" | "env" => {}
                        // Docker's, but not built here: refused rather than ignored.
                        "labels-regex" | "env-regex" | "tag" => {
                            return Err(format!(
                                "log opt '{k}' is not supported by strata's json-file log driver"
                            ))
                        }
                        _ => return Err(format!("unknown log opt '{k}' for json-file log driver")),
                    }
                }
            }
            "none" => {
                if let Some(k) = map.keys().next() {
                    return Err(format!("unknown log opt '{k}' for none log driver"));
                }
            }
            other => {
                return Err(format!(
                    "logger: no log driver named '{other}' is registered"
                ));
            }
        }
        let c = LogConfig { kind, opts: map };
        c.rotation()?;
        Ok(c)
    }

    /// The attributes every record carries (`labels=` / `env=`: comma-separated names whose
    /// values the container has; names it lacks are left out, as Docker does).
    pub fn attrs(
        &self,
        labels: &BTreeMap<String, String>,
        env: &[String],
    ) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        let names = |key: &str| -> Vec<String> {
            self.opts
                .get(key)
                .map(|v| {
                    v.split(',')
                        .filter(|n| !n.is_empty())
                        .map(str::to_string)
                        .collect()
                })
                .unwrap_or_default()
        };
        for n in names("labels") {
            if let Some(v) = labels.get(&n) {
                out.insert(n, v.clone());
            }
        }
        for n in names("env") {
            if let Some(v) = env.iter().find_map(|e| e.strip_prefix(&format!("{n}="))) {
                out.insert(n, v.to_string());
            }
        }
        out
    }

    /// Whether `logs` can read this container's output back.
    pub fn readable(&self) -> bool {
        self.kind != "none"
    }

    /// The rotation the options ask for (Docker's json-file rules and messages).
    pub fn rotation(&self) -> Result<Rotation, String> {
        let max_size = match self.opts.get("max-size") {
            Some(v) => {
                let n = crate::units::from_human_size(v)
                    .ok_or_else(|| format!("invalid size: '{v}'"))?;
                if n == 0 {
                    return Err("max-size must be a positive number".to_string());
                }
                Some(n)
            }
            None => None,
        };
        let max_files = match self.opts.get("max-file") {
            Some(v) => {
                let n: i64 = v
                    .parse()
                    .map_err(|_| format!("strconv.Atoi: parsing \"{v}\": invalid syntax"))?;
                if n < 1 {
                    return Err("max-file cannot be less than 1".to_string());
                }
                n.min(u32::MAX as i64) as u32
            }
            None => 1,
        };
        if let Some(v) = self.opts.get("compress") {
            let on = matches!(v.as_str(), "1" | "t" | "T" | "true" | "TRUE" | "True");
            if on {
                // Rotated files are kept plain: refused rather than silently ignored.
                return Err(
                    "compress is not supported by strata's json-file log driver".to_string()
                );
            }
        }
        Ok(Rotation {
            max_size,
            max_files,
        })
    }
}

/// Go's `url.QueryEscape`: unreserved bytes kept, space as `+`, the rest `%XX`.
fn query_escape(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// The rotated files of the log at `path` that exist, oldest first (`container.log.N` …
/// `container.log.1`).
pub fn rotated_files(path: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for i in 1.. {
        let p = rotated(path, i);
        if !p.exists() {
            break;
        }
        out.push(p);
    }
    out.reverse();
    out
}

fn rotated(path: &Path, i: u32) -> PathBuf {
    let mut s = path.as_os_str().to_os_string();
    s.push(format!(".{i}"));
    PathBuf::from(s)
}

/// Appends records to a container's log file (rotating it as its [`Rotation`] says), or
/// drops them (`--log-driver none`).
pub struct LogWriter {
    file: Mutex<Option<Current>>,
    attrs: BTreeMap<String, String>,
}

struct Current {
    file: File,
    path: PathBuf,
    size: u64,
    rotation: Rotation,
}

impl LogWriter {
    /// A `json-file` log at `path` without rotation.
    pub fn open(path: &Path) -> io::Result<Arc<LogWriter>> {
        LogWriter::with_config(path, &LogConfig::default(), BTreeMap::new())
    }

    /// The log of a container whose log config is `config`; every record carries `attrs`
    /// ([`LogConfig::attrs`]).
    pub fn with_config(
        path: &Path,
        config: &LogConfig,
        attrs: BTreeMap<String, String>,
    ) -> io::Result<Arc<LogWriter>> {
        if !config.readable() {
            return Ok(Arc::new(LogWriter {
                file: Mutex::new(None),
                attrs,
            }));
        }
        let rotation = config
            .rotation()
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        let size = file.metadata()?.len();
        Ok(Arc::new(LogWriter {
            file: Mutex::new(Some(Current {
                file,
                path: path.to_path_buf(),
                size,
                rotation,
            })),
            attrs,
        }))
    }

    pub(crate) fn write(&self, stream: &str, text: &[u8]) {
        let mut g = self.file.lock();
        let Some(cur) = g.as_mut() else { return };
        let entry = LogEntry {
            log: String::from_utf8_lossy(text).into_owned(),
            stream: stream.to_string(),
            attrs: self.attrs.clone(),
            time: Utc::now(),
        };
        if let Ok(mut line) = serde_json::to_vec(&entry) {
            line.push(b'\n');
            if cur.rotation.max_size.is_some_and(|max| cur.size >= max) {
                // A failed rotation keeps appending to the file we have.
                let _ = cur.rotate();
            }
            if cur.file.write_all(&line).is_ok() {
                cur.size += line.len() as u64;
            }
        }
    }
}

impl Current {
    /// Docker's json-file rotation: `.N-1` → `.N` … `.1` → `.2`, the file → `.1`, a new file.
    /// With `max-file=1` the file is started over.
    fn rotate(&mut self) -> io::Result<()> {
        let keep = self.rotation.max_files;
        if keep > 1 {
            let _ = std::fs::remove_file(rotated(&self.path, keep - 1));
            for i in (1..keep - 1).rev() {
                let from = rotated(&self.path, i);
                if from.exists() {
                    std::fs::rename(&from, rotated(&self.path, i + 1))?;
                }
            }
            std::fs::rename(&self.path, rotated(&self.path, 1))?;
            self.file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.path)?;
        } else {
            self.file.set_len(0)?;
        }
        self.size = 0;
        Ok(())
    }
}

/// Copy everything readable from `src` into the log as `stream` records (split at newlines),
/// and, while it accepts writes, to `mirror` (the attached terminal or pipe). Returns at EOF,
/// or at EIO from a pty master whose slave side is gone.
pub fn pump(mut src: File, stream: &str, log: &LogWriter, mut mirror: Option<File>) {
    let mut buf = vec![0u8; 32 * 1024];
    let mut pending: Vec<u8> = Vec::new();
    loop {
        let n = match src.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        };
        let chunk = &buf[..n];
        if let Some(m) = mirror.as_mut() {
            if m.write_all(chunk).and_then(|_| m.flush()).is_err() {
                mirror = None;
            }
        }
        pending.extend_from_slice(chunk);
        while let Some(pos) = pending.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = pending.drain(..=pos).collect();
            log.write(stream, &line);
        }
        if pending.len() > 16 * 1024 {
            log.write(stream, &pending);
            pending.clear();
        }
    }
    if !pending.is_empty() {
        log.write(stream, &pending);
    }
}

/// Reads a log from an offset, so `logs -f` can pick up where it stopped: first the rotated
/// files that existed at open (oldest first), then the current file, and when that one is
/// rotated away (it is no longer the file at its path), the new one from its start.
pub struct LogReader {
    path: PathBuf,
    older: Vec<PathBuf>,
    reader: BufReader<File>,
    partial: String,
}

impl LogReader {
    pub fn open(path: &Path) -> io::Result<LogReader> {
        Ok(LogReader {
            path: path.to_path_buf(),
            older: rotated_files(path),
            reader: BufReader::new(File::open(path)?),
            partial: String::new(),
        })
    }

    /// Every complete record written since the last call.
    pub fn read_new(&mut self) -> io::Result<Vec<LogEntry>> {
        let mut out = Vec::new();
        for p in std::mem::take(&mut self.older) {
            // A file rotated out of reach meanwhile is skipped.
            if let Ok(f) = File::open(&p) {
                read_records(&mut BufReader::new(f), &mut String::new(), &mut out)?;
            }
        }
        loop {
            read_records(&mut self.reader, &mut self.partial, &mut out)?;
            // Rotated away? Its last records are read; go on with the file now at the path.
            let held = self.reader.get_ref().metadata()?;
            match std::fs::metadata(&self.path) {
                Ok(now) if (now.dev(), now.ino()) != (held.dev(), held.ino()) => {
                    self.reader = BufReader::new(File::open(&self.path)?);
                    self.partial.clear();
                }
                // `max-file=1`: the file was started over under us.
                _ if held.len() < self.reader.stream_position()? => {
                    self.reader.seek(SeekFrom::Start(0))?;
                    self.partial.clear();
                }
                _ => return Ok(out),
            }
        }
    }

    /// Skip to the end (for `--tail 0 -f`).
    pub fn seek_end(&mut self) -> io::Result<()> {
        self.older.clear();
        self.reader.seek(SeekFrom::End(0))?;
        Ok(())
    }
}

/// The complete records `reader` holds from where it is; a record being written right now
/// (no newline yet) stays in `partial` for the next call.
fn read_records(
    reader: &mut BufReader<File>,
    partial: &mut String,
    out: &mut Vec<LogEntry>,
) -> io::Result<()> {
    loop {
        let mut line = String::new();
        let n = reader.read_line(&mut line)?;
        if n == 0 {
            return Ok(());
        }
        if !line.ends_with('\n') {
            partial.push_str(&line);
            return Ok(());
        }
        let full = if partial.is_empty() {
            line
        } else {
            let mut p = std::mem::take(partial);
            p.push_str(&line);
            p
        };
        if let Ok(e) = serde_json::from_str::<LogEntry>(full.trim_end()) {
            out.push(e);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let w = LogWriter::open(&path).unwrap();
        let (r, mut wr) = std::io::pipe().unwrap();
        wr.write_all(b"one\ntwo\npartial").unwrap();
        drop(wr);
        pump(
            File::from(std::os::fd::OwnedFd::from(r)),
            "stdout",
            &w,
            None,
        );
        let mut reader = LogReader::open(&path).unwrap();
        let got: Vec<String> = reader
            .read_new()
            .unwrap()
            .into_iter()
            .map(|e| e.log)
            .collect();
        assert_eq!(got, ["one\n", "two\n", "partial"]);
        assert!(reader.read_new().unwrap().is_empty());
        w.write("stderr", b"later\n");
        let more = reader.read_new().unwrap();
        assert_eq!(more.len(), 1);
        assert_eq!(more[0].stream, "stderr");
        assert!(more[0].timestamp().ends_with('Z'));
    }

    fn numbers(entries: &[LogEntry]) -> Vec<u32> {
        entries
            .iter()
            .map(|e| e.log.trim().trim_start_matches("line-").parse().unwrap())
            .collect()
    }

    #[test]
    fn rotation_keeps_max_file_files_and_readers_see_them_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("container.log");
        let cfg = LogConfig::parse(None, &["max-size=300".into(), "max-file=3".into()]).unwrap();
        let w = LogWriter::with_config(&path, &cfg, BTreeMap::new()).unwrap();
        // A follower opened before anything was written.
        let mut follower = {
            std::fs::File::create(&path).unwrap();
            LogReader::open(&path).unwrap()
        };
        let mut followed = Vec::new();
        for i in 1..=40 {
            w.write("stdout", format!("line-{i}\n").as_bytes());
            if i % 3 == 0 {
                followed.extend(follower.read_new().unwrap());
            }
        }
        followed.extend(follower.read_new().unwrap());
        // Exactly max-file files, none above.
        assert!(rotated(&path, 1).exists() && rotated(&path, 2).exists());
        assert!(!rotated(&path, 3).exists());
        for p in [path.clone(), rotated(&path, 1), rotated(&path, 2)] {
            let len = std::fs::metadata(&p).unwrap().len();
            // A file is rotated once it holds max-size bytes: at most one record more.
            assert!(len <= 300 + 100, "{p:?} {len}");
        }
        // A reader from scratch: the tail that is kept, oldest first, contiguous, to the end.
        let all = numbers(&LogReader::open(&path).unwrap().read_new().unwrap());
        assert_eq!(*all.last().unwrap(), 40);
        assert!(all[0] > 1, "the oldest records were dropped: {all:?}");
        assert_eq!(all, (all[0]..=40).collect::<Vec<_>>());
        // The follower moved to each new file: every record, once, in order.
        assert_eq!(numbers(&followed), (1..=40).collect::<Vec<_>>());
    }

    #[test]
    fn log_options_in_dockers_words() {
        let p = |d: Option<&str>, o: &[&str]| {
            LogConfig::parse(d, &o.iter().map(|s| s.to_string()).collect::<Vec<_>>())
        };
        assert_eq!(
            p(None, &["max-file=0"]).unwrap_err(),
            "max-file cannot be less than 1"
        );
        assert_eq!(
            p(None, &["max-size=0"]).unwrap_err(),
            "max-size must be a positive number"
        );
        assert_eq!(
            p(None, &["max-size=lots"]).unwrap_err(),
            "invalid size: 'lots'"
        );
        assert_eq!(
            p(None, &["foo=bar"]).unwrap_err(),
            "unknown log opt 'foo' for json-file log driver"
        );
        assert_eq!(
            p(Some("syslog"), &[]).unwrap_err(),
            "logger: no log driver named 'syslog' is registered"
        );
        assert!(!p(Some("none"), &[]).unwrap().readable());
        let r = p(None, &["max-size=10m", "max-file=3"])
            .unwrap()
            .rotation()
            .unwrap();
        assert_eq!(r.max_size, Some(10_000_000));
        assert_eq!(r.max_files, 3);
        assert_eq!(crate::units::from_human_size("1.5k").unwrap(), 1500);
        assert_eq!(crate::units::from_human_size("20MB").unwrap(), 20_000_000);
    }
}
