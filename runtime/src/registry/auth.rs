//! Authentication: `WWW-Authenticate` challenges, Bearer tokens, and the Docker-compatible
//! credentials file (`config.json` / `auth.json`: `{"auths": {"host": {"auth": base64(user:pass)}}}`).
//!
//! Files read, first hit wins: `$REGISTRY_AUTH_FILE`, `$DOCKER_CONFIG/config.json`,
//! `~/.docker/config.json`. `login`/`logout` write the first of these that is configured
//! (`REGISTRY_AUTH_FILE`, else `DOCKER_CONFIG`, else the home one), atomically and mode 0600,
//! keeping every other key of the file as it was.

use base64::Engine;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use super::{credhelper, RegistryError};

/// A parsed `WWW-Authenticate` challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    /// Lowercased scheme: `bearer` or `basic`.
    pub scheme: String,
    /// Parameters (`realm`, `service`, `scope`, `error`), names lowercased.
    pub params: BTreeMap<String, String>,
}

impl Challenge {
    /// Parse one challenge (`Bearer realm="…",service="…",scope="…"`). Quoted strings may
    /// contain commas and backslash escapes.
    pub fn parse(header: &str) -> Option<Challenge> {
        let header = header.trim();
        let (scheme, rest) = match header.find(char::is_whitespace) {
            Some(i) => (&header[..i], &header[i..]),
            None => (header, ""),
        };
        if scheme.is_empty() {
            return None;
        }
        let mut params = BTreeMap::new();
        let mut chars = rest.chars().peekable();
        loop {
            while chars.peek().is_some_and(|c| c.is_whitespace() || *c == ',') {
                chars.next();
            }
            let mut name = String::new();
            while let Some(&c) = chars.peek() {
                if c == '=' || c == ',' || c.is_whitespace() {
                    break;
                }
                name.push(c);
                chars.next();
            }
            if name.is_empty() {
                break;
            }
            while chars.peek().is_some_and(|c| c.is_whitespace()) {
                chars.next();
            }
            if chars.peek() != Some(&'=') {
                params.insert(name.to_lowercase(), String::new());
                continue;
            }
            chars.next();
            while chars.peek().is_some_and(|c| c.is_whitespace()) {
                chars.next();
            }
            let mut value = String::new();
            if chars.peek() == Some(&'"') {
                chars.next();
                while let Some(c) = chars.next() {
                    match c {
                        '\\' => {
                            if let Some(n) = chars.next() {
                                value.push(n);
                            }
                        }
                        '"' => break,
                        c => value.push(c),
                    }
                }
            } else {
                while let Some(&c) = chars.peek() {
                    if c == ',' {
                        break;
                    }
                    value.push(c);
                    chars.next();
                }
                value = value.trim().to_string();
            }
            params.insert(name.to_lowercase(), value);
        }
        Some(Challenge {
            scheme: scheme.to_lowercase(),
            params,
        })
    }

    pub fn param(&self, name: &str) -> Option<&str> {
        self.params.get(name).map(String::as_str)
    }
}

/// A user name and password (or identity token) for one registry.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Credentials({}, ***)", self.username)
    }
}

/// The user name Docker stores with an identity token (an OAuth2 refresh token) as the secret.
pub const IDENTITY_TOKEN_USER: &str = "<token>";

impl Credentials {
    /// The identity (refresh) token, when these credentials are one (`identitytoken` in a Docker
    /// config file, or a credential helper answering user `<token>`): token registries are then
    /// asked with OAuth2 `grant_type=refresh_token` instead of Basic auth.
    pub fn identity_token(&self) -> Option<&str> {
        (self.username == IDENTITY_TOKEN_USER && !self.password.is_empty())
            .then_some(self.password.as_str())
    }

    /// The value of an `Authorization: Basic …` header.
    pub fn basic_header(&self) -> String {
        let raw = format!("{}:{}", self.username, self.password);
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(raw)
        )
    }
}

/// The key a registry domain is stored under: Docker Hub keeps its historical URL.
pub fn config_key(registry: &str) -> String {
    match registry {
        "docker.io" | "index.docker.io" | "registry-1.docker.io" => {
            "https://index.docker.io/v1/".to_string()
        }
        other => other.to_string(),
    }
}

/// Strip a scheme and path from a key as older clients wrote them (`https://host/v1/`).
fn key_host(key: &str) -> &str {
    let k = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    k.split('/').next().unwrap_or(k)
}

/// Credentials files in lookup order (only those whose location is known).
pub fn auth_files() -> Vec<PathBuf> {
    let mut files = Vec::new();
    if let Some(p) = std::env::var_os("REGISTRY_AUTH_FILE").filter(|p| !p.is_empty()) {
        files.push(PathBuf::from(p));
    }
    if let Some(d) = std::env::var_os("DOCKER_CONFIG").filter(|p| !p.is_empty()) {
        files.push(PathBuf::from(d).join("config.json"));
    }
    if let Some(h) = std::env::var_os("HOME").filter(|p| !p.is_empty()) {
        files.push(PathBuf::from(h).join(".docker").join("config.json"));
    }
    files
}

/// The file `login`/`logout` write.
pub fn write_target() -> Option<PathBuf> {
    auth_files().into_iter().next()
}

fn read_json(path: &Path) -> Result<Option<serde_json::Value>, RegistryError> {
    match std::fs::read(path) {
        Ok(b) if b.iter().all(u8::is_ascii_whitespace) => Ok(None),
        Ok(b) => {
            serde_json::from_slice(&b)
                .map(Some)
                .map_err(|source| RegistryError::AuthFileJson {
                    path: path.to_path_buf(),
                    source,
                })
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(RegistryError::AuthFile {
            path: path.to_path_buf(),
            source,
        }),
    }
}

fn decode_entry(entry: &serde_json::Value) -> Option<Credentials> {
    if let Some(t) = entry
        .get("identitytoken")
        .and_then(|t| t.as_str())
        .filter(|t| !t.is_empty())
    {
        return Some(Credentials {
            username: IDENTITY_TOKEN_USER.to_string(),
            password: t.to_string(),
        });
    }
    let auth = entry.get("auth").and_then(|a| a.as_str()).unwrap_or("");
    if !auth.is_empty() {
        let raw = base64::engine::general_purpose::STANDARD
            .decode(auth.trim())
            .ok()?;
        let s = String::from_utf8(raw).ok()?;
        let (u, p) = s.split_once(':')?;
        return Some(Credentials {
            username: u.to_string(),
            password: p.to_string(),
        });
    }
    let u = entry.get("username")?.as_str()?;
    let p = entry.get("password")?.as_str()?;
    Some(Credentials {
        username: u.to_string(),
        password: p.to_string(),
    })
}

/// Look up stored credentials for `registry` (a reference domain such as `127.0.0.1:5000`).
pub fn lookup(registry: &str) -> Result<Option<Credentials>, RegistryError> {
    let want = config_key(registry);
    for file in auth_files() {
        let Some(v) = read_json(&file)? else { continue };
        if let Some(helper) = credhelper::helper_for(&v, &want, key_host(&want)) {
            if let Some(c) = credhelper::get(&helper, &want)? {
                return Ok(Some(c));
            }
        }
        let Some(auths) = v.get("auths").and_then(|a| a.as_object()) else {
            continue;
        };
        let hit = auths.get(&want).or_else(|| {
            auths
                .iter()
                .find(|(k, _)| key_host(k) == key_host(&want))
                .map(|(_, v)| v)
        });
        if let Some(c) = hit.and_then(decode_entry) {
            return Ok(Some(c));
        }
    }
    Ok(None)
}

/// Write `doc` to `path` atomically with mode 0600.
fn write_json(path: &Path, doc: &serde_json::Value) -> Result<(), RegistryError> {
    let io = |source| RegistryError::AuthFile {
        path: path.to_path_buf(),
        source,
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(io)?;
    let mut body =
        serde_json::to_vec_pretty(doc).map_err(|source| RegistryError::AuthFileJson {
            path: path.to_path_buf(),
            source,
        })?;
    body.push(b'\n');
    let mut out = crate::outfile::OutputFile::create(path, 0o600)
        .map_err(|e| RegistryError::AuthFileOutput(Box::new(e)))?;
    out.file().write_all(&body).map_err(io)?;
    out.commit()
        .map_err(|e| RegistryError::AuthFileOutput(Box::new(e)))
}

/// Store `creds` for `registry` in [`write_target`]; returns the file written.
pub fn store(registry: &str, creds: &Credentials) -> Result<PathBuf, RegistryError> {
    let path = write_target().ok_or(RegistryError::NoAuthFile)?;
    let mut doc = read_json(&path)?.unwrap_or_else(|| serde_json::json!({}));
    if !doc.is_object() {
        doc = serde_json::json!({});
    }
    let key = config_key(registry);
    // With a credential helper the secret goes to the helper and the file keeps an empty entry.
    let entry = match credhelper::helper_for(&doc, &key, key_host(&key)) {
        Some(helper) => {
            credhelper::store(&helper, &key, creds)?;
            serde_json::json!({})
        }
        None => {
            let raw = format!("{}:{}", creds.username, creds.password);
            serde_json::json!({ "auth": base64::engine::general_purpose::STANDARD.encode(raw) })
        }
    };
    let obj = doc.as_object_mut().ok_or(RegistryError::NoAuthFile)?;
    let auths = obj.entry("auths").or_insert_with(|| serde_json::json!({}));
    if !auths.is_object() {
        *auths = serde_json::json!({});
    }
    if let Some(a) = auths.as_object_mut() {
        a.insert(config_key(registry), entry);
    }
    write_json(&path, &doc)?;
    Ok(path)
}

/// Remove stored credentials for `registry`; `Ok(false)` when there were none.
pub fn remove(registry: &str) -> Result<bool, RegistryError> {
    let Some(path) = write_target() else {
        return Ok(false);
    };
    let Some(mut doc) = read_json(&path)? else {
        return Ok(false);
    };
    let want = config_key(registry);
    let erased = match credhelper::helper_for(&doc, &want, key_host(&want)) {
        Some(helper) => credhelper::erase(&helper, &want)?,
        None => false,
    };
    let removed = doc
        .get_mut("auths")
        .and_then(|a| a.as_object_mut())
        .map(|a| {
            let keys: Vec<String> = a
                .keys()
                .filter(|k| **k == want || key_host(k) == key_host(&want))
                .cloned()
                .collect();
            for k in &keys {
                a.remove(k);
            }
            !keys.is_empty()
        })
        .unwrap_or(false);
    if removed {
        write_json(&path, &doc)?;
    }
    Ok(removed || erased)
}

/// A token endpoint's answer (`token` wins over `access_token`).
#[derive(Debug, serde::Deserialize)]
pub struct TokenResponse {
    #[serde(default)]
    pub token: Option<String>,
    #[serde(default)]
    pub access_token: Option<String>,
    #[serde(default)]
    pub expires_in: Option<u64>,
}

/// How long a token without `expires_in` is valid (the distribution spec's default).
pub const DEFAULT_TOKEN_LIFETIME: u64 = 60;

impl TokenResponse {
    pub fn into_token(self) -> Option<String> {
        self.token
            .filter(|t| !t.is_empty())
            .or(self.access_token.filter(|t| !t.is_empty()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_bearer_and_basic_challenges() {
        let c = Challenge::parse(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/busybox:pull,push""#,
        )
        .unwrap();
        assert_eq!(c.scheme, "bearer");
        assert_eq!(c.param("realm"), Some("https://auth.docker.io/token"));
        assert_eq!(c.param("service"), Some("registry.docker.io"));
        assert_eq!(
            c.param("scope"),
            Some("repository:library/busybox:pull,push")
        );
        let b = Challenge::parse(r#"Basic realm="basic-realm""#).unwrap();
        assert_eq!(b.scheme, "basic");
        assert_eq!(b.param("realm"), Some("basic-realm"));
        let e = Challenge::parse(r#"Bearer realm="a\"b", error=insufficient_scope"#).unwrap();
        assert_eq!(e.param("realm"), Some("a\"b"));
        assert_eq!(e.param("error"), Some("insufficient_scope"));
    }

    #[test]
    fn token_prefers_token_over_access_token() {
        let t: TokenResponse =
            serde_json::from_str(r#"{"access_token":"b","token":"a","expires_in":300}"#).unwrap();
        assert_eq!(t.into_token().as_deref(), Some("a"));
        let t: TokenResponse = serde_json::from_str(r#"{"access_token":"b"}"#).unwrap();
        assert_eq!(t.into_token().as_deref(), Some("b"));
    }

    #[test]
    fn key_host_strips_scheme_and_path() {
        assert_eq!(key_host("https://index.docker.io/v1/"), "index.docker.io");
        assert_eq!(key_host("127.0.0.1:5000"), "127.0.0.1:5000");
        assert_eq!(config_key("docker.io"), "https://index.docker.io/v1/");
    }
}
