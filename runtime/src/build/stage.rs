//! The state of the stage being built (its image config as JSON, its ARGs) and the small
//! formatting helpers of history entries.

use std::path::PathBuf;

use serde_json::{json, Map, Value};

use super::shell::{process_word, Vars};
use super::BuildError;
use crate::store::{ImageRecord, Store};

pub(super) const DEFAULT_PATH: &str =
    "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The state of the stage being built.
pub(super) struct StageState {
    pub(super) image: Option<ImageRecord>,
    /// The whole image config JSON as it will be committed next.
    pub(super) config: Map<String, Value>,
    /// ARGs declared in this stage that have a value.
    pub(super) args: Vars,
    /// `CMD` set in this stage (an ENTRYPOINT then keeps it).
    pub(super) cmd_set: bool,
}

impl StageState {
    pub(super) fn scratch() -> StageState {
        let mut config = Map::new();
        config.insert("architecture".into(), json!("amd64"));
        config.insert("os".into(), json!("linux"));
        config.insert("config".into(), json!({ "Env": [DEFAULT_PATH] }));
        config.insert("rootfs".into(), json!({"type": "layers", "diff_ids": []}));
        StageState {
            image: None,
            config,
            args: Vars::new(),
            cmd_set: false,
        }
    }

    pub(super) fn cfg(&mut self) -> &mut Map<String, Value> {
        let c = self
            .config
            .entry("config")
            .or_insert_with(|| Value::Object(Map::new()));
        if !c.is_object() {
            *c = Value::Object(Map::new());
        }
        match c {
            Value::Object(m) => m,
            // Made an object just above.
            _ => unreachable!("config is an object"),
        }
    }

    pub(super) fn cfg_ref(&self) -> Map<String, Value> {
        match self.config.get("config") {
            Some(Value::Object(m)) => m.clone(),
            _ => Map::new(),
        }
    }

    pub(super) fn strings(&self, key: &str) -> Vec<String> {
        match self.cfg_ref().get(key) {
            Some(Value::Array(a)) => a
                .iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect(),
            _ => Vec::new(),
        }
    }

    pub(super) fn env(&self) -> Vec<String> {
        self.strings("Env")
    }

    pub(super) fn shell(&self) -> Vec<String> {
        let s = self.strings("Shell");
        if s.is_empty() {
            vec!["/bin/sh".into(), "-c".into()]
        } else {
            s
        }
    }

    pub(super) fn workdir(&self) -> String {
        match self.cfg_ref().get("WorkingDir") {
            Some(Value::String(s)) if !s.is_empty() => s.clone(),
            _ => "/".to_string(),
        }
    }

    /// Variables for expansion: the stage's ARGs, then its ENVs (ENV wins).
    pub(super) fn vars(&self) -> Vars {
        let mut v = self.args.clone();
        for e in self.env() {
            if let Some((k, val)) = e.split_once('=') {
                v.insert(k.to_string(), val.to_string());
            }
        }
        v
    }

    pub(super) fn set_env(&mut self, key: &str, value: &str) {
        let mut env = self.env();
        let entry = format!("{key}={value}");
        match env
            .iter_mut()
            .find(|e| e.split_once('=').map_or(e.as_str(), |(k, _)| k) == key)
        {
            Some(slot) => *slot = entry,
            None => env.push(entry),
        }
        self.cfg().insert("Env".into(), json!(env));
    }

    pub(super) fn layers(&self, store: &Store) -> Result<Vec<PathBuf>, BuildError> {
        match &self.image {
            Some(img) => Ok(store.layer_dirs(img)?),
            None => Ok(Vec::new()),
        }
    }
}

/// Go's `%q` of a string list, as Docker prints `CMD ["a" "b"]`.
pub(super) fn go_quoted(v: &[String]) -> String {
    let items: Vec<String> = v
        .iter()
        .map(|s| serde_json::to_string(s).unwrap_or_default())
        .collect();
    format!("[{}]", items.join(" "))
}

/// A temp file in the store's `tmp/` (cleaned by `Store::open` if we die), removed on drop.
pub(super) struct TempFile(pub(super) PathBuf);

impl TempFile {
    pub(super) fn new(store: &Store, what: &str) -> TempFile {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        TempFile(
            store
                .root()
                .join("tmp")
                .join(format!("{}-{nanos}-{what}", std::process::id())),
        )
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Quote a `--label` key or value for the `LABEL` step text when it needs it.
pub(super) fn quote(s: &str) -> String {
    if s.is_empty() || s.contains(|c: char| c.is_whitespace() || c == '"' || c == '=') {
        serde_json::to_string(s).unwrap_or_default()
    } else {
        s.to_string()
    }
}

/// `$V`/`${V}` in a heredoc body line (quotes are kept: the body is file content).
pub(super) fn expand_heredoc_line(line: &str, vars: &Vars) -> String {
    let mut out = String::new();
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\\' && chars.peek() == Some(&'$') {
            out.push('$');
            chars.next();
            continue;
        }
        if c != '$' {
            out.push(c);
            continue;
        }
        let mut word = String::from("$");
        if chars.peek() == Some(&'{') {
            for x in chars.by_ref() {
                word.push(x);
                if x == '}' {
                    break;
                }
            }
        } else {
            while let Some(&x) = chars.peek() {
                if x.is_ascii_alphanumeric() || x == '_' {
                    word.push(x);
                    chars.next();
                } else {
                    break;
                }
            }
        }
        match process_word(&word, vars, '\\') {
            Ok(v) if word.len() > 1 => out.push_str(&v),
            _ => out.push_str(&word),
        }
    }
    out
}

/// `80`, `80/udp`, `8000-8002/tcp` → `80/tcp`, … (None: not a port).
pub(super) fn expose_ports(w: &str) -> Option<Vec<String>> {
    let (ports, proto) = match w.split_once('/') {
        Some((p, proto)) => (p, proto.to_ascii_lowercase()),
        None => (w, "tcp".to_string()),
    };
    if !matches!(proto.as_str(), "tcp" | "udp" | "sctp") {
        return None;
    }
    let (lo, hi) = match ports.split_once('-') {
        Some((a, b)) => (a.parse::<u16>().ok()?, b.parse::<u16>().ok()?),
        None => {
            let p = ports.parse::<u16>().ok()?;
            (p, p)
        }
    };
    if lo > hi {
        return None;
    }
    Some((lo..=hi).map(|p| format!("{p}/{proto}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports() {
        assert_eq!(expose_ports("80").unwrap(), ["80/tcp"]);
        assert_eq!(expose_ports("53/UDP").unwrap(), ["53/udp"]);
        assert_eq!(expose_ports("8000-8001").unwrap(), ["8000/tcp", "8001/tcp"]);
        assert!(expose_ports("http").is_none());
    }

    #[test]
    fn go_quoting() {
        assert_eq!(
            go_quoted(&["httpd".into(), "-f".into()]),
            "[\"httpd\" \"-f\"]"
        );
    }

    #[test]
    fn heredoc_expansion() {
        let vars: Vars = [("A".to_string(), "x".to_string())].into_iter().collect();
        assert_eq!(
            expand_heredoc_line("a=$A \"${A}\" \\$A $", &vars),
            "a=x \"x\" $A $"
        );
    }
}
