//! The config of a committed image: the parent's config, the container's effective `config`
//! after `--change` instructions, the new diffID and a history entry (SPEC §10.2, moby
//! `image.NewChildImage`). Worked on as JSON so fields we do not model survive untouched.

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{json, Map, Value};

use super::instructions::apply_changes;
use super::ChangesError;
use crate::digest::DiffId;

/// What a commit adds to its parent's config.
#[derive(Debug, Clone)]
pub struct CommitMeta {
    pub author: Option<String>,
    pub comment: Option<String>,
    /// `--change` instructions, applied in order.
    pub changes: Vec<String>,
    /// The committed container's ID.
    pub container_id: crate::container::ContainerId,
    /// The container's effective config (Docker's capitalised keys); `None`: the parent's.
    pub container_config: Option<Map<String, Value>>,
    pub created: DateTime<Utc>,
}

/// Build the new config JSON. `diff_id` is `None` when the layer is empty (`empty_layer`).
pub fn commit_config(
    parent: &[u8],
    meta: &CommitMeta,
    diff_id: Option<&DiffId>,
) -> Result<Vec<u8>, ChangesError> {
    let mut img: Map<String, Value> =
        serde_json::from_slice(parent).map_err(|source| ChangesError::ParentConfig { source })?;
    let parent_config = match img.get("config") {
        Some(Value::Object(m)) => m.clone(),
        _ => Map::new(),
    };
    let container_config = meta.container_config.clone().unwrap_or(parent_config);
    let mut config = container_config.clone();
    apply_changes(&mut config, &meta.changes)?;

    let created = meta.created.to_rfc3339_opts(SecondsFormat::Nanos, true);
    let created_by = match container_config.get("Cmd") {
        Some(Value::Array(words)) => words
            .iter()
            .filter_map(Value::as_str)
            .collect::<Vec<_>>()
            .join(" "),
        _ => String::new(),
    };

    let mut entry = Map::new();
    entry.insert("created".into(), json!(created));
    if let Some(a) = non_empty(&meta.author) {
        entry.insert("author".into(), json!(a));
    }
    entry.insert("created_by".into(), json!(created_by));
    if let Some(c) = non_empty(&meta.comment) {
        entry.insert("comment".into(), json!(c));
    }
    if diff_id.is_none() {
        entry.insert("empty_layer".into(), json!(true));
    }

    let rootfs = img
        .entry("rootfs")
        .or_insert_with(|| json!({"type": "layers", "diff_ids": []}));
    if let (Some(id), Value::Object(r)) = (diff_id, rootfs) {
        let ids = r.entry("diff_ids").or_insert_with(|| json!([]));
        if let Value::Array(ids) = ids {
            ids.push(json!(id.as_str()));
        }
    }
    let history = img.entry("history").or_insert_with(|| json!([]));
    if !history.is_array() {
        *history = json!([]);
    }
    if let Value::Array(h) = history {
        h.push(Value::Object(entry));
    }

    img.insert("config".into(), Value::Object(config));
    img.insert("container_config".into(), Value::Object(container_config));
    img.insert("container".into(), json!(meta.container_id.as_str()));
    img.insert("created".into(), json!(created));
    match non_empty(&meta.author) {
        Some(a) => img.insert("author".into(), json!(a)),
        None => img.remove("author"),
    };
    match non_empty(&meta.comment) {
        Some(c) => img.insert("comment".into(), json!(c)),
        None => img.remove("comment"),
    };
    img.insert(
        "docker_version".into(),
        json!(concat!("strata-", env!("CARGO_PKG_VERSION"))),
    );
    serde_json::to_vec(&Value::Object(img)).map_err(|source| ChangesError::ParentConfig { source })
}

fn non_empty(s: &Option<String>) -> Option<&str> {
    s.as_deref().filter(|s| !s.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn diff_id(n: char) -> DiffId {
        DiffId::parse(&format!("sha256:{}", n.to_string().repeat(64))).unwrap()
    }

    fn parent() -> Vec<u8> {
        serde_json::to_vec(&json!({
            "architecture": "amd64",
            "os": "linux",
            "config": {"Cmd": ["httpd", "-f", "-p", "80"], "Env": ["PATH=/bin"]},
            "rootfs": {"type": "layers", "diff_ids": [diff_id('a').as_str()]},
            "history": [{"created": "2024-01-01T00:00:00Z", "created_by": "import"}],
            "author": "someone else"
        }))
        .unwrap()
    }

    fn meta() -> CommitMeta {
        CommitMeta {
            author: Some("Jane <jane@example.com>".into()),
            comment: Some("new page".into()),
            changes: vec!["ENV MODE=prod".into()],
            container_id: crate::container::ContainerId::parse(&"c".repeat(64)).unwrap(),
            container_config: None,
            created: DateTime::parse_from_rfc3339("2026-01-02T03:04:05.5Z")
                .unwrap()
                .with_timezone(&Utc),
        }
    }

    #[test]
    fn adds_layer_history_and_fields() {
        let out = commit_config(&parent(), &meta(), Some(&diff_id('b'))).unwrap();
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(
            v["rootfs"]["diff_ids"],
            json!([diff_id('a').as_str(), diff_id('b').as_str()])
        );
        assert_eq!(v["history"].as_array().unwrap().len(), 2);
        let h = &v["history"][1];
        assert_eq!(h["created_by"], json!("httpd -f -p 80"));
        assert_eq!(h["author"], json!("Jane <jane@example.com>"));
        assert_eq!(h["comment"], json!("new page"));
        assert!(h.get("empty_layer").is_none());
        assert_eq!(h["created"], json!("2026-01-02T03:04:05.500000000Z"));
        assert_eq!(v["author"], json!("Jane <jane@example.com>"));
        assert_eq!(v["comment"], json!("new page"));
        assert_eq!(v["container"], json!("c".repeat(64)));
        assert_eq!(v["config"]["Env"], json!(["PATH=/bin", "MODE=prod"]));
        assert_eq!(v["container_config"]["Env"], json!(["PATH=/bin"]));
        assert_eq!(v["architecture"], json!("amd64"));
    }

    #[test]
    fn empty_layer_keeps_diff_ids() {
        let mut m = meta();
        m.author = None;
        let out = commit_config(&parent(), &m, None).unwrap();
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["rootfs"]["diff_ids"], json!([diff_id('a').as_str()]));
        assert_eq!(v["history"][1]["empty_layer"], json!(true));
        assert!(
            v.get("author").is_none(),
            "parent's author is not inherited"
        );
        let non_empty = v["history"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|h| h["empty_layer"] != json!(true))
            .count();
        assert_eq!(non_empty, 1, "history/diff_ids invariant");
    }
}
