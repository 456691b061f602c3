//! The HTTP side of the distribution API: one [`Client`] per registry, shared by the download
//! threads. It picks HTTPS or plain HTTP, answers `401` challenges (Bearer tokens cached per scope,
//! Basic credentials), follows redirects itself so the `Authorization` header never reaches another
//! host, and retries transient failures with exponential backoff.
//!
//! Lock order: `Client::tokens` is the only lock; it is never held across a request.

use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use ureq::http::{self, Response};
use ureq::Body;

use super::auth::{Challenge, Credentials, TokenResponse, DEFAULT_TOKEN_LIFETIME};
use super::{ApiError, RegistryError};

/// How many times a request is tried before a transient failure is returned.
pub const ATTEMPTS: u32 = 4;
const MAX_REDIRECTS: u32 = 5;

/// Where a registry is reached.
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// The registry as named in references (`docker.io`, `127.0.0.1:5000`).
    pub registry: String,
    /// `https://host[:port]`: always tried first.
    pub base: String,
    /// Insecure registries (loopback, `--insecure-registry`): certificates are not verified and
    /// plain HTTP (`http://host[:port]`) is used when the registry does not speak TLS — Docker's
    /// behaviour for insecure registries.
    pub insecure: bool,
}

impl Endpoint {
    /// Docker Hub is `registry-1.docker.io`; loopback hosts and `insecure` registries are
    /// insecure (see [`Endpoint::insecure`]); everything else is verified HTTPS. `insecure` is
    /// the whole list (flags and daemon config: the engine's `insecure_registries`).
    pub fn new(registry: &str, insecure: &[String]) -> Endpoint {
        let host = match registry {
            "docker.io" | "index.docker.io" => "registry-1.docker.io",
            other => other,
        };
        let named = |i: &String| matches_insecure(i, registry) || matches_insecure(i, host);
        Endpoint {
            registry: registry.to_string(),
            base: format!("https://{host}"),
            insecure: is_loopback(registry) || insecure.iter().any(named),
        }
    }

    /// The plain-HTTP base of an insecure registry.
    pub fn http_base(&self) -> Option<String> {
        self.insecure
            .then(|| self.base.replacen("https://", "http://", 1))
    }
}

/// Docker's daemon config, whose `insecure-registries` list we honour too
/// (`$STRATA_DAEMON_JSON`, default `/etc/docker/daemon.json`).
pub fn daemon_json_path() -> PathBuf {
    std::env::var_os("STRATA_DAEMON_JSON")
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/etc/docker/daemon.json"))
}

/// The `insecure-registries` entries of a daemon.json (`host[:port]` or an IPv4 CIDR).
pub fn configured_insecure(path: &Path) -> Vec<String> {
    let Ok(bytes) = std::fs::read(path) else {
        return Vec::new();
    };
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(&bytes) else {
        return Vec::new();
    };
    v.get("insecure-registries")
        .and_then(|l| l.as_array())
        .map(|l| {
            l.iter()
                .filter_map(|e| e.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

/// Whether an insecure-registry entry names `registry` (`host[:port]`): exactly, or as an IPv4
/// CIDR containing its address.
pub fn matches_insecure(entry: &str, registry: &str) -> bool {
    if entry == registry {
        return true;
    }
    let Some((net, bits)) = entry.split_once('/') else {
        return false;
    };
    let host = registry.rsplit_once(':').map_or(registry, |(h, _)| h);
    match (
        net.parse::<std::net::Ipv4Addr>(),
        bits.parse::<u32>(),
        host.parse::<std::net::Ipv4Addr>(),
    ) {
        (Ok(net), Ok(bits), Ok(ip)) if bits <= 32 => {
            let mask = if bits == 0 {
                0
            } else {
                u32::MAX << (32 - bits)
            };
            u32::from(net) & mask == u32::from(ip) & mask
        }
        _ => false,
    }
}

/// CA certificates for `registry` from Docker's and podman's `certs.d` directories
/// (`/etc/docker/certs.d/<registry>/*.crt`, `/etc/containers/certs.d/<registry>/*.crt`).
fn registry_cas(registry: &str) -> Vec<ureq::tls::Certificate<'static>> {
    let mut out = Vec::new();
    for root in ["/etc/docker/certs.d", "/etc/containers/certs.d"] {
        let Ok(rd) = std::fs::read_dir(Path::new(root).join(registry)) else {
            continue;
        };
        for e in rd.flatten() {
            if e.path().extension().is_some_and(|x| x == "crt") {
                if let Ok(pem) = std::fs::read(e.path()) {
                    for item in ureq::tls::parse_pem(&pem).flatten() {
                        if let ureq::tls::PemItem::Certificate(c) = item {
                            out.push(c);
                        }
                    }
                }
            }
        }
    }
    out
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
    /// How long an attempt may make no progress (connect, response headers, each read of
    /// the body); `None`: the client's own (long) timeouts.
    pub timeout: Option<Duration>,
}

impl<'a> Req<'a> {
    pub fn new(method: http::Method, url: impl Into<String>, scope: &str) -> Req<'a> {
        Req {
            method,
            url: url.into(),
            headers: Vec::new(),
            payload: Payload::Empty,
            scope: scope.to_string(),
            timeout: None,
        }
    }

    /// Fail an attempt of this request that makes no progress for `t` (see [`Req::timeout`]).
    pub fn timeout(mut self, t: Duration) -> Self {
        self.timeout = Some(t);
        self
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
    /// The base URL chosen by the first request (`https://…`, or `http://…` for an insecure
    /// registry without TLS).
    base: Mutex<Option<String>>,
    /// Bearer tokens by scope, with when to stop using them.
    tokens: Mutex<HashMap<String, (String, Instant)>>,
}

fn host_of(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    rest.split(['/', '?']).next().unwrap_or(rest)
}

/// Whether a failure is worth another try: connection problems, timeouts, 5xx and 429.
pub fn is_transient(e: &RegistryError) -> bool {
    match e {
        RegistryError::Transport { source, .. } => match &**source {
            ureq::Error::BadUri(_) | ureq::Error::HostNotFound | ureq::Error::Http(_) => false,
            // getaddrinfo's EAI_NONAME / EAI_NODATA: the name does not exist; retrying will not
            // help (EAI_AGAIN, "Temporary failure in name resolution", is retried).
            ureq::Error::Io(io) => {
                let m = io.to_string();
                !(m.contains("Name or service not known") || m.contains("No address associated"))
            }
            _ => true,
        },
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
        let cas = registry_cas(&endpoint.registry);
        let mut tls = ureq::tls::TlsConfig::builder();
        if endpoint.insecure {
            tls = tls.disable_verification(true);
        } else if !cas.is_empty() {
            tls = tls.root_certs(ureq::tls::RootCerts::new_with_certs(&cas));
        }
        // Like Go's ProxyFromEnvironment: loopback registries are never reached through a proxy.
        let proxy = if is_loopback(&endpoint.registry) {
            None
        } else {
            ureq::Proxy::try_from_env()
        };
        let agent = ureq::Agent::config_builder()
            .proxy(proxy)
            .tls_config(tls.build())
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
            base: Mutex::new(None),
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

    /// The base URL requests go to. For an insecure registry the first call probes HTTPS once
    /// and settles on plain HTTP if the registry does not speak TLS.
    pub fn base(&self) -> String {
        if let Some(b) = self.base.lock().ok().and_then(|b| b.clone()) {
            return b;
        }
        let chosen = match self.endpoint.http_base() {
            None => self.endpoint.base.clone(),
            Some(http_base) => {
                let probe = http::Request::builder()
                    .method(http::Method::GET)
                    .uri(format!("{}/v2/", self.endpoint.base))
                    .body(())
                    .map_err(ureq::Error::Http)
                    .and_then(|r| {
                        // A plain-HTTP server may sit on the ClientHello instead of refusing it.
                        let r = self
                            .agent
                            .configure_request(r)
                            .timeout_global(Some(Duration::from_secs(10)))
                            .build();
                        self.agent.run(r)
                    });
                match probe {
                    Ok(_) => self.endpoint.base.clone(),
                    Err(e) => {
                        log::debug!("{}: no TLS ({e}); using plain HTTP", self.endpoint.registry);
                        http_base
                    }
                }
            }
        };
        if let Ok(mut b) = self.base.lock() {
            *b = Some(chosen.clone());
        }
        chosen
    }

    /// `url` made absolute against the registry's base.
    pub fn absolute(&self, url: &str) -> String {
        if url.starts_with("http://") || url.starts_with("https://") {
            url.to_string()
        } else {
            format!("{}{}", self.base(), url)
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
                let cached = self
                    .tokens
                    .lock()
                    .ok()
                    .and_then(|t| t.get(scope).cloned())
                    .filter(|(_, until)| Instant::now() < *until)
                    .map(|(t, _)| t);
                let token = match cached {
                    Some(t) => Some(t),
                    // A new scope on a token registry, or its token is about to expire: ask
                    // before the request instead of after its 401 (a big upload would be sent
                    // twice). A failure here is retried through the challenge path.
                    None => self
                        .fetch_token(&realm, service.as_deref(), scope, None)
                        .ok()
                        .map(|t| self.remember_token(scope, t)),
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
                match req.timeout {
                    Some(t) => {
                        let r = self
                            .agent
                            .configure_request(r)
                            .timeout_connect(Some(t))
                            .timeout_recv_response(Some(t))
                            .timeout_per_read(Some(t))
                            .build();
                        self.agent.run(r)
                    }
                    None => self.agent.run(r),
                }
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
        let origin = host_of(&self.base()).to_string();
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
        self.remember_token(scope, token);
        Ok(true)
    }

    /// Cache a token for `scope` until shortly before it expires; returns the token.
    fn remember_token(&self, scope: &str, (token, lifetime): (String, Duration)) -> String {
        // A margin for the request's own time on the wire (and clock steps at the registry).
        let margin = (lifetime / 10).min(Duration::from_secs(10));
        let until = Instant::now() + lifetime - margin;
        if let Ok(mut t) = self.tokens.lock() {
            t.insert(scope.to_string(), (token.clone(), until));
        }
        token
    }

    /// A token and how long it is valid: `GET realm?service=…&scope=…`, anonymous or with
    /// Basic credentials; with an identity token, OAuth2 `POST realm` with
    /// `grant_type=refresh_token` (as Docker does).
    fn fetch_token(
        &self,
        realm: &str,
        service: Option<&str>,
        scope: &str,
        challenge_scope: Option<&str>,
    ) -> Result<(String, Duration), RegistryError> {
        // A request may need several scopes (a cross-repository mount): space-separated.
        let mut scopes: Vec<&str> = scope.split(' ').filter(|s| !s.is_empty()).collect();
        for cs in challenge_scope.unwrap_or("").split(' ') {
            if !cs.is_empty() && !scopes.contains(&cs) {
                scopes.push(cs);
            }
        }
        let identity = self.creds.as_ref().and_then(|c| c.identity_token());
        let mut url = realm.to_string();
        let mut form = String::new();
        if let Some(refresh) = identity {
            form = format!(
                "grant_type=refresh_token&client_id=strata&refresh_token={}",
                encode(refresh)
            );
            if let Some(s) = service {
                form.push_str(&format!("&service={}", encode(s)));
            }
            if !scopes.is_empty() {
                form.push_str(&format!("&scope={}", encode(&scopes.join(" "))));
            }
        } else {
            let mut sep = if url.contains('?') { '&' } else { '?' };
            if let Some(s) = service {
                url.push_str(&format!("{sep}service={}", encode(s)));
                sep = '&';
            }
            for s in scopes {
                url.push_str(&format!("{sep}scope={}", encode(s)));
                sep = '&';
            }
        }
        let method = if identity.is_some() {
            http::Method::POST
        } else {
            http::Method::GET
        };
        let mut attempt = 0;
        loop {
            attempt += 1;
            let transport = |source: ureq::Error| RegistryError::Transport {
                method: method.to_string(),
                url: realm.to_string(),
                source: Box::new(source),
            };
            let b = http::Request::builder().method(method.clone()).uri(&url);
            let result = if identity.is_some() {
                b.header("Content-Type", "application/x-www-form-urlencoded")
                    .body(form.as_bytes())
                    .map_err(|e| transport(ureq::Error::Http(e)))
                    .and_then(|r| self.agent.run(r).map_err(transport))
            } else {
                let b = match &self.creds {
                    Some(c) => b.header("Authorization", c.basic_header()),
                    None => b,
                };
                b.body(())
                    .map_err(|e| transport(ureq::Error::Http(e)))
                    .and_then(|r| self.agent.run(r).map_err(transport))
            };
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
                let err = self.api_error(&method, realm, resp);
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
            let lifetime = Duration::from_secs(
                token
                    .expires_in
                    .filter(|&s| s > 0)
                    .unwrap_or(DEFAULT_TOKEN_LIFETIME),
            );
            return token.into_token().map(|t| (t, lifetime)).ok_or_else(|| {
                RegistryError::TokenMissing {
                    url: realm.to_string(),
                }
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
    fn loopback_and_insecure_are_insecure() {
        assert!(is_loopback("127.0.0.1:5000"));
        assert!(is_loopback("localhost"));
        assert!(is_loopback("[::1]:5000"));
        assert!(!is_loopback("ghcr.io"));
        let hub = Endpoint::new("docker.io", &[]);
        assert_eq!(hub.base, "https://registry-1.docker.io");
        assert_eq!(hub.http_base(), None);
        let lo = Endpoint::new("127.0.0.2:80", &[]);
        assert_eq!(lo.http_base().as_deref(), Some("http://127.0.0.2:80"));
        let named = Endpoint::new("reg.lan:5000", &["reg.lan:5000".into()]);
        assert_eq!(named.http_base().as_deref(), Some("http://reg.lan:5000"));
        assert!(!Endpoint::new("reg.lan:5000", &[]).insecure);
    }

    #[test]
    fn insecure_entries_from_daemon_json() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("daemon.json");
        std::fs::write(
            &p,
            r#"{"insecure-registries": ["reg.lan:5000", "10.1.0.0/16"], "x": 1}"#,
        )
        .unwrap();
        let list = configured_insecure(&p);
        assert_eq!(list, ["reg.lan:5000", "10.1.0.0/16"]);
        assert!(matches_insecure(&list[0], "reg.lan:5000"));
        assert!(!matches_insecure(&list[0], "reg.lan:5001"));
        assert!(matches_insecure(&list[1], "10.1.200.3:443"));
        assert!(!matches_insecure(&list[1], "10.2.0.1"));
        assert!(configured_insecure(&dir.path().join("missing.json")).is_empty());
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
