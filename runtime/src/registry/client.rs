//! The HTTP side of the distribution API: one [`Client`] per registry, shared by the download
//! threads. It picks HTTPS or plain HTTP, answers `401` challenges (Bearer tokens cached per scope,
//! Basic credentials), follows redirects itself so the `Authorization` header never reaches another
//! host, and retries transient failures with exponential backoff.
//!
//! Lock order: `Client::tokens` is the only lock; it is never held across a request.

use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use ureq::http::{self, Response};
use ureq::Body;

use super::auth::{Challenge, Credentials, TokenResponse};
use super::{ApiError, RegistryError};

/// How many times a request is tried before a transient failure is returned.
pub const ATTEMPTS: u32 = 4;
const MAX_REDIRECTS: u32 = 5;

/// Where a registry is reached.
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// The registry as named in references (`docker.io`, `127.0.0.1:5000`).
    pub registry: String,
    /// `scheme://host[:port]` requests go to.
    pub base: String,
}

impl Endpoint {
    /// Docker Hub is `registry-1.docker.io` over HTTPS; loopback hosts and `insecure` registries
    /// use plain HTTP; everything else HTTPS.
    pub fn new(registry: &str, insecure: &[String]) -> Endpoint {
        let host = match registry {
            "docker.io" | "index.docker.io" => "registry-1.docker.io",
            other => other,
        };
        let plain = is_loopback(registry) || insecure.iter().any(|i| i == registry || i == host);
        let scheme = if plain { "http" } else { "https" };
        Endpoint {
            registry: registry.to_string(),
            base: format!("{scheme}://{host}"),
        }
    }
}

/// `localhost`, `127.0.0.0/8` and `::1`, with or without a port.
pub fn is_loopback(registry: &str) -> bool {
    let host = if let Some(rest) = registry.strip_prefix('[') {
        rest.split(']').next().unwrap_or("")
    } else {
        registry.rsplit_once(':').map_or(registry, |(h, _)| h)
    };
    host == "localhost"
        || host == "::1"
        || host
            .parse::<std::net::Ipv4Addr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// A request body that can be sent again on retry.
#[derive(Debug, Clone)]
pub enum Payload<'a> {
    Empty,
    Bytes(&'a [u8]),
    /// `len` bytes of a file from `offset`.
    File {
        path: &'a Path,
        offset: u64,
        len: u64,
    },
}

/// One request, described so it can be replayed after a challenge or a transient failure.
#[derive(Debug, Clone)]
pub struct Req<'a> {
    pub method: http::Method,
    /// A path below the endpoint (`/v2/…`) or an absolute URL (upload locations, redirects).
    pub url: String,
    pub headers: Vec<(&'static str, String)>,
    pub payload: Payload<'a>,
    /// Token scope (`repository:library/busybox:pull`), asked for when challenged.
    pub scope: String,
}

impl<'a> Req<'a> {
    pub fn new(method: http::Method, url: impl Into<String>, scope: &str) -> Req<'a> {
        Req {
            method,
            url: url.into(),
            headers: Vec::new(),
            payload: Payload::Empty,
            scope: scope.to_string(),
        }
    }

    pub fn header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    pub fn payload(mut self, p: Payload<'a>) -> Self {
        self.payload = p;
        self
    }
}

#[derive(Debug, Clone)]
enum AuthMode {
    /// No challenge seen yet (or none needed).
    Unknown,
    Basic,
    Bearer {
        realm: String,
        service: Option<String>,
    },
}

/// A client for one registry.
pub struct Client {
    agent: ureq::Agent,
    pub endpoint: Endpoint,
    creds: Option<Credentials>,
    mode: Mutex<AuthMode>,
    /// Bearer tokens by scope.
    tokens: Mutex<HashMap<String, String>>,
}

fn host_of(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    rest.split(['/', '?']).next().unwrap_or(rest)
}

/// Whether a failure is worth another try: connection problems, timeouts, 5xx and 429.
pub fn is_transient(e: &RegistryError) -> bool {
    match e {
        RegistryError::Transport { source, .. } => !matches!(
            **source,
            ureq::Error::BadUri(_) | ureq::Error::HostNotFound | ureq::Error::Http(_)
        ),
        RegistryError::Api { status, .. } => *status >= 500 || *status == 429,
        RegistryError::BodyIo { .. } | RegistryError::BadRange { .. } => true,
        _ => false,
    }
}

/// Sleep before attempt `n` (1-based): 200 ms, 400 ms, 800 ms, …
pub fn backoff(attempt: u32) {
    std::thread::sleep(Duration::from_millis(
        200u64 << attempt.saturating_sub(1).min(5),
    ));
}

impl Client {
    pub fn new(endpoint: Endpoint, creds: Option<Credentials>) -> Client {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .max_redirects(0)
            .user_agent(concat!("strata/", env!("CARGO_PKG_VERSION")))
            .timeout_connect(Some(Duration::from_secs(30)))
            .timeout_recv_response(Some(Duration::from_secs(120)))
            .timeout_per_read(Some(Duration::from_secs(120)))
            .build()
            .new_agent();
        Client {
            agent,
            endpoint,
            creds,
            mode: Mutex::new(AuthMode::Unknown),
            tokens: Mutex::new(HashMap::new()),
        }
    }

    /// The registry asked for Basic auth.
    pub fn uses_basic(&self) -> bool {
        self.mode
            .lock()
            .is_ok_and(|m| matches!(*m, AuthMode::Basic))
    }

    /// The registry asked for Bearer tokens.
    pub fn uses_bearer(&self) -> bool {
        self.mode
            .lock()
            .is_ok_and(|m| matches!(*m, AuthMode::Bearer { .. }))
    }

    pub fn has_credentials(&self) -> bool {
        self.creds.is_some()
    }

    fn absolute(&self, url: &str) -> String {
        if url.starts_with("http://") || url.starts_with("https://") {
            url.to_string()
        } else {
            format!("{}{}", self.endpoint.base, url)
        }
    }

    fn auth_header(&self, scope: &str) -> Option<String> {
        let mode = self
            .mode
            .lock()
            .map(|m| m.clone())
            .unwrap_or(AuthMode::Unknown);
        match mode {
            AuthMode::Unknown => None,
            AuthMode::Basic => self.creds.as_ref().map(Credentials::basic_header),
            AuthMode::Bearer { realm, service } => {
                let cached = self.tokens.lock().ok().and_then(|t| t.get(scope).cloned());
                let token = match cached {
                    Some(t) => Some(t),
                    // A new scope on a token registry: ask before the request instead of after
                    // its 401. A failure here is retried through the challenge path.
                    None => self
                        .fetch_token(&realm, service.as_deref(), scope, None)
                        .ok()
                        .inspect(|t| {
                            if let Ok(mut map) = self.tokens.lock() {
                                map.insert(scope.to_string(), t.clone());
                            }
                        }),
                };
                token.map(|t| format!("Bearer {t}"))
            }
        }
    }

    fn send_once(
        &self,
        url: &str,
        req: &Req<'_>,
        auth: Option<&str>,
    ) -> Result<Response<Body>, RegistryError> {
        let transport = |source: ureq::Error| RegistryError::Transport {
            method: req.method.to_string(),
            url: url.to_string(),
            source: Box::new(source),
        };
        let mut b = http::Request::builder().method(req.method.clone()).uri(url);
        for (k, v) in &req.headers {
            b = b.header(*k, v.as_str());
        }
        if let Some(a) = auth {
            b = b.header("Authorization", a);
        }
        let result = match &req.payload {
            Payload::Empty => {
                let needs_length = matches!(
                    req.method,
                    http::Method::PUT | http::Method::POST | http::Method::PATCH
                );
                if needs_length {
                    b = b.header("Content-Length", "0");
                }
                let r = b.body(()).map_err(|e| transport(ureq::Error::Http(e)))?;
                self.agent.run(r)
            }
            Payload::Bytes(bytes) => {
                let r = b
                    .body(*bytes)
                    .map_err(|e| transport(ureq::Error::Http(e)))?;
                self.agent.run(r)
            }
            Payload::File { path, offset, len } => {
                let io = |source| RegistryError::Io {
                    path: path.to_path_buf(),
                    source,
                };
                let mut f = File::open(path).map_err(io)?;
                f.seek(SeekFrom::Start(*offset)).map_err(io)?;
                let mut limited = f.take(*len);
                b = b.header("Content-Length", len.to_string());
                let body = ureq::SendBody::from_reader(&mut limited);
                let r = b.body(body).map_err(|e| transport(ureq::Error::Http(e)))?;
                self.agent.run(r)
            }
        };
        result.map_err(transport)
    }

    /// Send `req`, answering one authentication challenge and following redirects. No retries.
    pub fn send(&self, req: &Req<'_>) -> Result<Response<Body>, RegistryError> {
        let mut url = self.absolute(&req.url);
        let origin = host_of(&self.endpoint.base).to_string();
        let mut challenged = false;
        let mut redirects = 0;
        loop {
            // Credentials only ever go to the registry's own host.
            let auth = if host_of(&url) == origin {
                self.auth_header(&req.scope)
            } else {
                None
            };
            let resp = self.send_once(&url, req, auth.as_deref())?;
            let status = resp.status().as_u16();
            if status == 401 && !challenged && host_of(&url) == origin {
                challenged = true;
                let header = resp
                    .headers()
                    .get_all("www-authenticate")
                    .iter()
                    .filter_map(|v| v.to_str().ok())
                    .filter_map(Challenge::parse)
                    .find(|c| c.scheme == "bearer" || c.scheme == "basic");
                if let Some(ch) = header {
                    if self.answer(&ch, &req.scope)? {
                        continue;
                    }
                }
                return Err(self.api_error(&req.method, &url, resp));
            }
            if matches!(status, 301 | 302 | 303 | 307 | 308) {
                let loc = resp
                    .headers()
                    .get("location")
                    .and_then(|l| l.to_str().ok())
                    .map(String::from);
                if let Some(loc) = loc {
                    redirects += 1;
                    if redirects > MAX_REDIRECTS {
                        return Err(RegistryError::TooManyRedirects { url });
                    }
                    url = resolve_location(&url, &loc);
                    continue;
                }
            }
            return Ok(resp);
        }
    }

    /// Send with retries on transient failures; returns a success (2xx) response or the error.
    pub fn send_ok(&self, req: &Req<'_>) -> Result<Response<Body>, RegistryError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let url = self.absolute(&req.url);
            let result = self.send(req).and_then(|resp| {
                if resp.status().is_success() {
                    Ok(resp)
                } else {
                    Err(self.api_error(&req.method, &url, resp))
                }
            });
            match result {
                Err(e) if attempt < ATTEMPTS && is_transient(&e) => {
                    log::debug!("retrying {} {url}: {e}", req.method);
                    backoff(attempt);
                }
                other => return other,
            }
        }
    }

    /// Turn a non-success response into [`RegistryError::Api`] with the registry's error list.
    pub fn api_error(
        &self,
        method: &http::Method,
        url: &str,
        mut resp: Response<Body>,
    ) -> RegistryError {
        let status = resp.status().as_u16();
        let body = resp
            .body_mut()
            .with_config()
            .limit(1 << 20)
            .read_to_vec()
            .unwrap_or_default();
        let errors = serde_json::from_slice::<ApiErrors>(&body)
            .map(|e| e.errors)
            .unwrap_or_default();
        RegistryError::Api {
            method: method.to_string(),
            url: url.to_string(),
            status,
            errors,
        }
    }

    /// Answer a challenge: switch to Basic, or fetch a token for `scope`. `Ok(false)` when there is
    /// nothing new to offer (Basic without credentials).
    fn answer(&self, ch: &Challenge, scope: &str) -> Result<bool, RegistryError> {
        if ch.scheme == "basic" {
            if self.creds.is_none() {
                return Ok(false);
            }
            if let Ok(mut m) = self.mode.lock() {
                *m = AuthMode::Basic;
            }
            return Ok(true);
        }
        let realm = ch.param("realm").unwrap_or_default().to_string();
        if realm.is_empty() {
            return Ok(false);
        }
        let service = ch.param("service").map(String::from);
        let token = self.fetch_token(&realm, service.as_deref(), scope, ch.param("scope"))?;
        if let Ok(mut m) = self.mode.lock() {
            *m = AuthMode::Bearer { realm, service };
        }
        if let Ok(mut t) = self.tokens.lock() {
            t.insert(scope.to_string(), token);
        }
        Ok(true)
    }

    /// `GET realm?service=…&scope=…`, anonymous or with Basic credentials.
    fn fetch_token(
        &self,
        realm: &str,
        service: Option<&str>,
        scope: &str,
        challenge_scope: Option<&str>,
    ) -> Result<String, RegistryError> {
        let mut url = realm.to_string();
        let mut sep = if url.contains('?') { '&' } else { '?' };
        if let Some(s) = service {
            url.push_str(&format!("{sep}service={}", encode(s)));
            sep = '&';
        }
        // A request may need several scopes (a cross-repository mount): space-separated.
        let mut scopes: Vec<&str> = scope.split(' ').filter(|s| !s.is_empty()).collect();
        for cs in challenge_scope.unwrap_or("").split(' ') {
            if !cs.is_empty() && !scopes.contains(&cs) {
                scopes.push(cs);
            }
        }
        for s in scopes {
            url.push_str(&format!("{sep}scope={}", encode(s)));
            sep = '&';
        }
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut b = http::Request::builder().method(http::Method::GET).uri(&url);
            if let Some(c) = &self.creds {
                b = b.header("Authorization", c.basic_header());
            }
            let transport = |source: ureq::Error| RegistryError::Transport {
                method: "GET".into(),
                url: realm.to_string(),
                source: Box::new(source),
            };
            let result = b
                .body(())
                .map_err(|e| transport(ureq::Error::Http(e)))
                .and_then(|r| self.agent.run(r).map_err(transport));
            let mut resp = match result {
                Ok(r) => r,
                Err(e) if attempt < ATTEMPTS && is_transient(&e) => {
                    backoff(attempt);
                    continue;
                }
                Err(e) => return Err(e),
            };
            let status = resp.status().as_u16();
            if !resp.status().is_success() {
                if status >= 500 && attempt < ATTEMPTS {
                    backoff(attempt);
                    continue;
                }
                let err = self.api_error(&http::Method::GET, realm, resp);
                return Err(match (status, err) {
                    (401 | 403, RegistryError::Api { errors, .. }) => RegistryError::Unauthorized {
                        url: realm.to_string(),
                        errors,
                        with_credentials: self.creds.is_some(),
                    },
                    (_, e) => e,
                });
            }
            let body = resp
                .body_mut()
                .with_config()
                .limit(1 << 20)
                .read_to_vec()
                .map_err(transport)?;
            let token: TokenResponse =
                serde_json::from_slice(&body).map_err(|source| RegistryError::TokenJson {
                    url: realm.to_string(),
                    source,
                })?;
            return token
                .into_token()
                .ok_or_else(|| RegistryError::TokenMissing {
                    url: realm.to_string(),
                });
        }
    }
}

/// The `{"errors": [...]}` body of a failed request.
#[derive(Debug, serde::Deserialize)]
struct ApiErrors {
    #[serde(default)]
    errors: Vec<ApiError>,
}

/// Percent-encode a query value.
pub fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Resolve a `Location` header against the URL that returned it.
pub fn resolve_location(base: &str, loc: &str) -> String {
    if loc.starts_with("http://") || loc.starts_with("https://") {
        return loc.to_string();
    }
    let (scheme, rest) = base.split_once("://").unwrap_or(("http", base));
    let host = rest.split(['/', '?']).next().unwrap_or(rest);
    if let Some(l) = loc.strip_prefix("//") {
        return format!("{scheme}://{l}");
    }
    if loc.starts_with('/') {
        return format!("{scheme}://{host}{loc}");
    }
    let path = rest[host.len()..].split('?').next().unwrap_or("");
    let dir = path.rsplit_once('/').map_or("", |(d, _)| d);
    format!("{scheme}://{host}{dir}/{loc}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_and_insecure_use_http() {
        assert!(is_loopback("127.0.0.1:5000"));
        assert!(is_loopback("localhost"));
        assert!(is_loopback("[::1]:5000"));
        assert!(!is_loopback("ghcr.io"));
        assert_eq!(
            Endpoint::new("docker.io", &[]).base,
            "https://registry-1.docker.io"
        );
        assert_eq!(
            Endpoint::new("127.0.0.2:80", &[]).base,
            "http://127.0.0.2:80"
        );
        assert_eq!(
            Endpoint::new("reg.lan:5000", &["reg.lan:5000".into()]).base,
            "http://reg.lan:5000"
        );
        assert_eq!(
            Endpoint::new("reg.lan:5000", &[]).base,
            "https://reg.lan:5000"
        );
    }

    #[test]
    fn locations_resolve() {
        assert_eq!(
            resolve_location(
                "http://a:1/v2/x/blobs/uploads/",
                "/v2/x/blobs/uploads/u?s=1"
            ),
            "http://a:1/v2/x/blobs/uploads/u?s=1"
        );
        assert_eq!(
            resolve_location("http://a:1/v2/x", "https://cdn/b"),
            "https://cdn/b"
        );
        assert_eq!(host_of("https://cdn.example:443/b?x"), "cdn.example:443");
        assert_eq!(
            encode("repository:a/b:pull,push"),
            "repository%3Aa%2Fb%3Apull%2Cpush"
        );
    }
}
