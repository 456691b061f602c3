//! Registry mirrors: Docker's `registry-mirrors` in the daemon config (`$STRATA_DAEMON_JSON`,
//! default `/etc/docker/daemon.json`), e.g. `{"registry-mirrors": ["https://mirror.example"]}`,
//! read once by the engine into its pull options ([`crate::engine::Engine::pull_options`]).
//!
//! As in Docker, mirrors serve Docker Hub only: a `docker.io` image is looked up on each mirror in
//! order, the first that has the manifest serves the whole pull, and Docker Hub itself is the last
//! resort. A mirror named `http://…` is reached over plain HTTP; `https://…` with verified TLS
//! unless it is loopback or listed in `insecure-registries`.

use std::path::Path;

use super::auth;
use super::client::{is_loopback, Client, Endpoint};
use super::RegistryError;

/// One configured mirror.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mirror {
    /// `host[:port]`.
    pub host: String,
    /// Named with `http://`: plain HTTP.
    pub plain_http: bool,
}

impl Mirror {
    /// Parse a `registry-mirrors` entry: `http[s]://host[:port]` with nothing after but `/`
    /// (Docker refuses paths, queries and fragments). `None` for anything else.
    pub fn parse(entry: &str) -> Option<Mirror> {
        let (plain_http, rest) = if let Some(r) = entry.strip_prefix("https://") {
            (false, r)
        } else if let Some(r) = entry.strip_prefix("http://") {
            (true, r)
        } else {
            return None;
        };
        let host = rest.strip_suffix('/').unwrap_or(rest);
        let valid = !host.is_empty()
            && host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']'));
        valid.then(|| Mirror {
            host: host.to_string(),
            plain_http,
        })
    }

    /// A client for this mirror, with any credentials stored for its host.
    pub fn client(&self, insecure: &[String]) -> Result<Client, RegistryError> {
        let mut endpoint = Endpoint::new(&self.host, insecure);
        if self.plain_http || is_loopback(&self.host) {
            endpoint.insecure = true;
        }
        if self.plain_http {
            endpoint.base = format!("http://{}", self.host);
        }
        Ok(Client::new(endpoint, auth::lookup(&self.host)?))
    }
}

/// The valid `registry-mirrors` entries of a daemon config, in order (invalid ones skipped).
pub fn configured(path: &Path) -> Vec<Mirror> {
    let Ok(bytes) = std::fs::read(path) else {
        return Vec::new();
    };
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(&bytes) else {
        return Vec::new();
    };
    v.get("registry-mirrors")
        .and_then(|l| l.as_array())
        .map(|l| {
            l.iter()
                .filter_map(|e| e.as_str())
                .filter_map(|e| {
                    let m = Mirror::parse(e);
                    if m.is_none() {
                        log::warn!("ignoring invalid registry mirror {e:?}");
                    }
                    m
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The mirrors to try for images of `registry`: the configured ones for Docker Hub, else none.
pub fn for_registry<'a>(registry: &str, configured: &'a [Mirror]) -> &'a [Mirror] {
    match registry {
        "docker.io" | "index.docker.io" | "registry-1.docker.io" => configured,
        _ => &[],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_docker_mirror_entries() {
        assert_eq!(
            Mirror::parse("https://mirror.gcr.io"),
            Some(Mirror {
                host: "mirror.gcr.io".into(),
                plain_http: false
            })
        );
        assert_eq!(
            Mirror::parse("http://127.0.0.1:5000/"),
            Some(Mirror {
                host: "127.0.0.1:5000".into(),
                plain_http: true
            })
        );
        assert_eq!(Mirror::parse("mirror.gcr.io"), None, "a scheme is required");
        assert_eq!(Mirror::parse("https://m.example/v2/"), None, "no path");
        assert_eq!(Mirror::parse("https://m.example?x=1"), None);
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("daemon.json");
        std::fs::write(
            &p,
            r#"{"registry-mirrors": ["https://a.example", "bad", "http://127.0.0.1:1"]}"#,
        )
        .unwrap();
        let m = configured(&p);
        assert_eq!(
            m.iter().map(|m| m.host.as_str()).collect::<Vec<_>>(),
            ["a.example", "127.0.0.1:1"]
        );
    }
}
