//! The image config JSON (OCI image-spec config.md plus Docker's extra fields).
//!
//! Unknown fields are kept in `extra` so a config read and written again loses nothing. The
//! image ID is always the digest of the bytes *as received*, never of a re-serialization.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::digest::DiffId;

/// Top-level image config.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ImageConfig {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub architecture: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub os: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    /// RFC 3339; kept as text so odd values never make an image unreadable. See [`Self::created_time`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<RunConfig>,
    #[serde(default)]
    pub rootfs: RootFs,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<History>,
    /// Docker: commit message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    /// Docker: ID of the container a commit was made from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_config: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub docker_version: Option<String>,
    /// Docker classic store: parent image ID of a committed image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl ImageConfig {
    pub fn created_time(&self) -> Option<DateTime<Utc>> {
        parse_time(self.created.as_deref()?)
    }
    /// Serialize with Docker's key order-insensitive JSON (compact).
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }
}

pub fn parse_time(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RootFs {
    #[serde(rename = "type", default = "layers")]
    pub kind: String,
    #[serde(default)]
    pub diff_ids: Vec<DiffId>,
}

fn layers() -> String {
    "layers".to_string()
}

impl Default for RootFs {
    fn default() -> Self {
        RootFs {
            kind: layers(),
            diff_ids: Vec::new(),
        }
    }
}

/// The runtime settings in an image config's `config` (Docker's PascalCase keys; Docker and OCI
/// call the type `ContainerConfig`/`ImageConfig`: here `RunConfig`, apart from a container record's
/// [`crate::container::ContainerConfig`]).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct RunConfig {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub user: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exposed_ports: Option<BTreeMap<String, Value>>,
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "null_vec"
    )]
    pub env: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entrypoint: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmd: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volumes: Option<BTreeMap<String, Value>>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub working_dir: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_signal: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_build: Option<Vec<String>>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

fn null_vec<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    Ok(Option::<Vec<String>>::deserialize(d)?.unwrap_or_default())
}

/// One `history[]` entry.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct History {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub empty_layer: bool,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// A `--change`/`-c` instruction that cannot be applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChangeError {
    #[error("{0} is not a valid change command")]
    Unknown(String),
    #[error("{0} requires at least one argument")]
    Empty(String),
    #[error("{instruction}: invalid syntax: {text}")]
    Syntax { instruction: String, text: String },
}

/// Split `k=v k2="v 2"` pairs (LABEL, ENV) honouring double and single quotes and `\` escapes.
fn split_words(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quote: Option<char> = None;
    let mut any = false;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match (quote, c) {
            (None, '"') | (None, '\'') => {
                quote = Some(c);
                any = true;
            }
            (Some(q), c) if c == q => quote = None,
            (q, '\\') if q != Some('\'') => {
                if let Some(n) = chars.next() {
                    cur.push(n);
                }
            }
            (None, c) if c.is_whitespace() => {
                if any || !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                    any = false;
                }
            }
            (_, c) => {
                cur.push(c);
                any = true;
            }
        }
    }
    if any || !cur.is_empty() {
        out.push(cur);
    }
    out
}

fn exec_form(rest: &str) -> Vec<String> {
    if rest.starts_with('[') {
        if let Ok(v) = serde_json::from_str::<Vec<String>>(rest) {
            return v;
        }
    }
    vec!["/bin/sh".to_string(), "-c".to_string(), rest.to_string()]
}

impl RunConfig {
    /// Apply one Dockerfile-style change (`CMD ["sh"]`, `ENV A=b`, `EXPOSE 80`, `LABEL k=v`,
    /// `USER`, `WORKDIR`, `VOLUME`, `ENTRYPOINT`, `STOPSIGNAL`, `ONBUILD`), as `docker commit
    /// --change` and `docker import --change` do.
    pub fn apply_change(&mut self, change: &str) -> Result<(), ChangeError> {
        let change = change.trim();
        let (word, rest) = change
            .split_once(char::is_whitespace)
            .map(|(w, r)| (w, r.trim()))
            .unwrap_or((change, ""));
        let upper = word.to_uppercase();
        let known = [
            "CMD",
            "ENTRYPOINT",
            "ENV",
            "EXPOSE",
            "LABEL",
            "USER",
            "WORKDIR",
            "VOLUME",
            "STOPSIGNAL",
            "ONBUILD",
        ];
        if !known.contains(&upper.as_str()) {
            return Err(ChangeError::Unknown(upper));
        }
        if rest.is_empty() {
            return Err(ChangeError::Empty(upper));
        }
        let syntax = || ChangeError::Syntax {
            instruction: upper.clone(),
            text: rest.to_string(),
        };
        match upper.as_str() {
            "CMD" => self.cmd = Some(exec_form(rest)),
            "ENTRYPOINT" => self.entrypoint = Some(exec_form(rest)),
            "ENV" | "LABEL" => {
                let words = split_words(rest);
                let pairs: Vec<(String, String)> = if words.iter().all(|w| w.contains('=')) {
                    words
                        .iter()
                        .filter_map(|w| {
                            w.split_once('=')
                                .map(|(k, v)| (k.to_string(), v.to_string()))
                        })
                        .collect()
                } else if upper == "ENV" {
                    // Legacy form `ENV KEY value with spaces`.
                    let (k, v) = rest.split_once(char::is_whitespace).ok_or_else(syntax)?;
                    vec![(k.to_string(), v.trim().to_string())]
                } else {
                    return Err(syntax());
                };
                for (k, v) in pairs {
                    if k.is_empty() {
                        return Err(syntax());
                    }
                    if upper == "ENV" {
                        let prefix = format!("{k}=");
                        self.env.retain(|e| !e.starts_with(&prefix) && e != &k);
                        self.env.push(format!("{k}={v}"));
                    } else {
                        self.labels.get_or_insert_with(BTreeMap::new).insert(k, v);
                    }
                }
            }
            "EXPOSE" => {
                for p in rest.split_whitespace() {
                    let p = if p.contains('/') {
                        p.to_lowercase()
                    } else {
                        format!("{p}/tcp")
                    };
                    let port = p.split('/').next().unwrap_or("");
                    if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit() || b == b'-') {
                        return Err(syntax());
                    }
                    self.exposed_ports
                        .get_or_insert_with(BTreeMap::new)
                        .insert(p, Value::Object(Map::new()));
                }
            }
            "VOLUME" => {
                let vols = if rest.starts_with('[') {
                    serde_json::from_str::<Vec<String>>(rest).map_err(|_| syntax())?
                } else {
                    rest.split_whitespace().map(str::to_string).collect()
                };
                for v in vols {
                    self.volumes
                        .get_or_insert_with(BTreeMap::new)
                        .insert(v, Value::Object(Map::new()));
                }
            }
            "USER" => self.user = rest.to_string(),
            "WORKDIR" => self.working_dir = rest.to_string(),
            "STOPSIGNAL" => self.stop_signal = Some(rest.to_string()),
            "ONBUILD" => self
                .on_build
                .get_or_insert_with(Vec::new)
                .push(rest.to_string()),
            _ => return Err(ChangeError::Unknown(upper)),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_keeps_unknown_fields() {
        let src = r#"{"architecture":"amd64","os":"linux","created":"2024-03-01T00:00:00Z",
            "config":{"Env":["PATH=/bin"],"Cmd":["sh"],"Entrypoint":null,"Hostname":"x"},
            "rootfs":{"type":"layers","diff_ids":[]},"history":[{"created_by":"a","empty_layer":true}],
            "moby.extra":{"k":1}}"#;
        let c: ImageConfig = serde_json::from_str(src).unwrap();
        assert_eq!(
            c.config.as_ref().unwrap().cmd.as_deref(),
            Some(&["sh".to_string()][..])
        );
        assert!(c.history[0].empty_layer);
        assert_eq!(c.created_time().unwrap().timestamp(), 1709251200);
        let back: Value = serde_json::from_slice(&c.to_bytes()).unwrap();
        assert_eq!(back["moby.extra"]["k"], 1);
        assert_eq!(back["config"]["Hostname"], "x");
    }

    #[test]
    fn changes_apply_like_docker() {
        let mut c = RunConfig::default();
        c.apply_change(r#"CMD ["nginx", "-g", "daemon off;"]"#)
            .unwrap();
        assert_eq!(c.cmd.as_deref().unwrap(), ["nginx", "-g", "daemon off;"]);
        c.apply_change("entrypoint /start.sh now").unwrap();
        assert_eq!(
            c.entrypoint.as_deref().unwrap(),
            ["/bin/sh", "-c", "/start.sh now"]
        );
        c.apply_change("ENV A=1 B=\"two words\"").unwrap();
        c.apply_change("ENV A 3").unwrap();
        assert_eq!(c.env, ["B=two words", "A=3"]);
        c.apply_change("EXPOSE 80 53/udp").unwrap();
        assert!(c.exposed_ports.as_ref().unwrap().contains_key("80/tcp"));
        assert!(c.exposed_ports.as_ref().unwrap().contains_key("53/udp"));
        c.apply_change("LABEL version=\"1.0\" app=web").unwrap();
        assert_eq!(c.labels.as_ref().unwrap()["version"], "1.0");
        c.apply_change("WORKDIR /srv").unwrap();
        c.apply_change("USER nobody").unwrap();
        c.apply_change("VOLUME [\"/data\"]").unwrap();
        assert_eq!(
            (c.working_dir.as_str(), c.user.as_str()),
            ("/srv", "nobody")
        );
        assert!(c.volumes.as_ref().unwrap().contains_key("/data"));
        assert_eq!(
            c.apply_change("FROM x").unwrap_err().to_string(),
            "FROM is not a valid change command"
        );
        assert!(c.apply_change("EXPOSE abc").is_err());
    }
}
