//! Container logs in Docker's `json-file` format: one JSON object per line,
//! `{"log":"text\n","stream":"stdout","time":"2026-01-01T00:00:00.123456789Z"}`.
//! The supervisor appends (one thread per stream, each line written whole); `logs` reads.

use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::sync::Arc;

use chrono::{DateTime, SecondsFormat, Utc};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

/// One log record.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LogEntry {
    pub log: String,
    pub stream: String,
    pub time: DateTime<Utc>,
}

impl LogEntry {
    /// RFC 3339 with nanoseconds, as `docker logs -t` prints it.
    pub fn timestamp(&self) -> String {
        self.time.to_rfc3339_opts(SecondsFormat::Nanos, true)
    }
}

/// Appends records to a container's log file.
pub struct LogWriter {
    file: Mutex<File>,
}

impl LogWriter {
    pub fn open(path: &Path) -> io::Result<Arc<LogWriter>> {
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        Ok(Arc::new(LogWriter {
            file: Mutex::new(file),
        }))
    }

    pub(crate) fn write(&self, stream: &str, text: &[u8]) {
        let entry = LogEntry {
            log: String::from_utf8_lossy(text).into_owned(),
            stream: stream.to_string(),
            time: Utc::now(),
        };
        if let Ok(mut line) = serde_json::to_vec(&entry) {
            line.push(b'\n');
            let _ = self.file.lock().write_all(&line);
        }
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

/// Reads a log file from an offset, so `logs -f` can pick up where it stopped.
pub struct LogReader {
    reader: BufReader<File>,
    partial: String,
}

impl LogReader {
    pub fn open(path: &Path) -> io::Result<LogReader> {
        Ok(LogReader {
            reader: BufReader::new(File::open(path)?),
            partial: String::new(),
        })
    }

    /// Every complete record written since the last call.
    pub fn read_new(&mut self) -> io::Result<Vec<LogEntry>> {
        let mut out = Vec::new();
        loop {
            let mut line = String::new();
            let n = self.reader.read_line(&mut line)?;
            if n == 0 {
                break;
            }
            if !line.ends_with('\n') {
                // A record being written right now: keep it for the next call.
                self.partial.push_str(&line);
                break;
            }
            let full = if self.partial.is_empty() {
                line
            } else {
                let mut p = std::mem::take(&mut self.partial);
                p.push_str(&line);
                p
            };
            if let Ok(e) = serde_json::from_str::<LogEntry>(full.trim_end()) {
                out.push(e);
            }
        }
        Ok(out)
    }

    /// Skip to the end (for `--tail 0 -f`).
    pub fn seek_end(&mut self) -> io::Result<()> {
        self.reader.seek(SeekFrom::End(0))?;
        Ok(())
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
}
