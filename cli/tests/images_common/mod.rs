//! Helpers for the image CLI tests: run the real `strata` against a temp root.

#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

pub struct Env {
    pub dir: tempfile::TempDir,
    pub root: PathBuf,
    pub runroot: PathBuf,
}

impl Env {
    pub fn new() -> Env {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        let runroot = dir.path().join("run");
        Env { dir, root, runroot }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_strata"));
        c.arg("--root")
            .arg(&self.root)
            .arg("--runroot")
            .arg(&self.runroot)
            .args(args)
            .stdin(Stdio::null())
            .env_remove("STRATA_ROOT");
        c
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().unwrap()
    }

    pub fn run_stdin(&self, args: &[&str], input: &[u8]) -> Output {
        let mut child = self
            .cmd(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        let data = input.to_vec();
        let writer = std::thread::spawn(move || {
            let _ = stdin.write_all(&data);
        });
        let out = child.wait_with_output().unwrap();
        writer.join().unwrap();
        out
    }

    /// Run, assert success, return stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let o = self.run(args);
        assert!(
            o.status.success(),
            "strata {args:?} failed ({}): {}{}",
            o.status,
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8(o.stdout).unwrap()
    }

    /// Run, assert failure, return stderr.
    pub fn err(&self, args: &[&str]) -> (i32, String) {
        let o = self.run(args);
        assert!(
            !o.status.success(),
            "strata {args:?} unexpectedly succeeded: {}",
            String::from_utf8_lossy(&o.stdout)
        );
        (
            o.status.code().unwrap_or(-1),
            String::from_utf8(o.stderr).unwrap(),
        )
    }

    /// Every path under the root with its size and mode (except the lock file), for "store
    /// unchanged" checks.
    pub fn listing(&self) -> Vec<String> {
        listing(&self.root)
    }

    /// A loaded one-layer busybox image; returns its ID.
    pub fn load_busybox(&self, tag: &str) -> String {
        let archive = self.path(&format!("busybox-{}.tar", tag.replace([':', '/'], "_")));
        let id = strata_testkit::fixtures::busybox_archive(&archive, tag).unwrap();
        let out = self.ok(&["load", "-i", archive.to_str().unwrap()]);
        assert_eq!(out, format!("Loaded image: {tag}\n"));
        id
    }
}

pub fn listing(root: &Path) -> Vec<String> {
    fn walk(base: &Path, p: &Path, out: &mut Vec<String>) {
        let Ok(rd) = std::fs::read_dir(p) else { return };
        let mut v: Vec<_> = rd.flatten().collect();
        v.sort_by_key(|e| e.file_name());
        for e in v {
            let path = e.path();
            let m = std::fs::symlink_metadata(&path).unwrap();
            use std::os::unix::fs::MetadataExt;
            out.push(format!(
                "{} {:o} {}",
                path.strip_prefix(base).unwrap().display(),
                m.mode(),
                if m.is_dir() { 0 } else { m.len() }
            ));
            if m.is_dir() {
                walk(base, &path, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(root, root, &mut out);
    out.retain(|p| !p.starts_with("store.lock "));
    out
}

/// Replace 12- and 64-hex IDs with placeholders and `N units ago` with `AGO`.
pub fn scrub(s: &str) -> String {
    let mut out = String::new();
    let chars: Vec<char> = s.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let run = chars[i..]
            .iter()
            .take_while(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
            .count();
        let boundary = i == 0 || !chars[i - 1].is_ascii_alphanumeric();
        if boundary
            && (run == 64 || run == 12)
            && chars
                .get(i + run)
                .is_none_or(|c| !c.is_ascii_alphanumeric())
        {
            out.push_str(if run == 64 { "<ID64>" } else { "<ID12>" });
            i += run;
        } else {
            out.push(chars[i]);
            i += 1;
        }
    }
    out
}
