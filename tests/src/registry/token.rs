//! A token issuer for the registry's `auth: token` mode, run in the test process.
//!
//! It answers `GET /token?service=…&scope=…` with a JWT (RS256, signed by `openssl dgst` with a key
//! generated for this issuer, the certificate in the `x5c` header; the registry trusts it through
//! `rootcertbundle`). Known users (HTTP Basic on the token request) get what they ask for;
//! anonymous clients get `pull` when allowed; wrong credentials get 401. It also answers OAuth2
//! `POST /token` with `grant_type=refresh_token` for refresh tokens registered with
//! [`TokenIssuer::add_refresh_token`] (Docker's identity tokens). Token lifetime (`expires_in` and
//! the JWT's `exp`) is 300 s unless [`TokenIssuer::set_lifetime`] says otherwise.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tempfile::TempDir;

pub const SERVICE: &str = "strata-test-registry";
pub const ISSUER: &str = "strata-test-issuer";

/// One token request as the issuer saw it.
#[derive(Debug, Clone)]
pub struct TokenRequest {
    pub user: Option<String>,
    pub scopes: Vec<String>,
    pub granted: bool,
    /// `Some("refresh_token")` for an OAuth2 POST, `None` for the GET flow.
    pub grant: Option<String>,
}

struct Shared {
    users: Vec<(String, String)>,
    anonymous_pull: bool,
    key: PathBuf,
    x5c: String,
    dir: PathBuf,
    log: Mutex<Vec<TokenRequest>>,
    stop: AtomicBool,
    /// Refresh token -> user.
    refresh: Mutex<Vec<(String, String)>>,
    /// Seconds a token is valid.
    lifetime: AtomicU64,
}

/// The issuer's listening thread; stopped and joined on drop.
pub struct TokenIssuer {
    dir: TempDir,
    port: u16,
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 with padding.
pub fn base64(data: &[u8]) -> String {
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(B64[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Unpadded base64url, as JWTs use.
pub fn base64url(data: &[u8]) -> String {
    base64(data)
        .trim_end_matches('=')
        .replace('+', "-")
        .replace('/', "_")
}

fn decode_base64(s: &str) -> Option<Vec<u8>> {
    let mut bits = 0u32;
    let mut nbits = 0;
    let mut out = Vec::new();
    for c in s.bytes().filter(|c| *c != b'=') {
        let v = B64.iter().position(|b| *b == c)? as u32;
        bits = (bits << 6) | v;
        nbits += 6;
        if nbits >= 8 {
            nbits -= 8;
            out.push((bits >> nbits) as u8);
        }
    }
    Some(out)
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(if b[i] == b'+' { b' ' } else { b[i] });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl TokenIssuer {
    pub fn start(users: &[(&str, &str)], anonymous_pull: bool) -> TokenIssuer {
        let dir = tempfile::Builder::new()
            .prefix("strata-token-")
            .tempdir()
            .expect("temp dir");
        let key = dir.path().join("key.pem");
        let cert = dir.path().join("cert.pem");
        let out = Command::new("openssl")
            .args([
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
            ])
            .args(["-subj", "/CN=strata-test-issuer", "-keyout"])
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .output()
            .expect("run openssl req");
        assert!(
            out.status.success(),
            "openssl req: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let der = Command::new("openssl")
            .args(["x509", "-outform", "DER", "-in"])
            .arg(&cert)
            .output()
            .expect("run openssl x509");
        assert!(der.status.success());
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind token issuer");
        let port = listener.local_addr().expect("addr").port();
        let shared = Arc::new(Shared {
            users: users
                .iter()
                .map(|(u, p)| (u.to_string(), p.to_string()))
                .collect(),
            anonymous_pull,
            key,
            x5c: base64(&der.stdout),
            dir: dir.path().to_path_buf(),
            log: Mutex::new(Vec::new()),
            stop: AtomicBool::new(false),
            refresh: Mutex::new(Vec::new()),
            lifetime: AtomicU64::new(300),
        });
        let s = shared.clone();
        let thread = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if s.stop.load(Ordering::SeqCst) {
                    break;
                }
                if let Ok(c) = conn {
                    let _ = c.set_read_timeout(Some(Duration::from_secs(10)));
                    let s2 = s.clone();
                    std::thread::spawn(move || serve(&s2, c));
                }
            }
        });
        TokenIssuer {
            dir,
            port,
            shared,
            thread: Some(thread),
        }
    }

    pub fn realm(&self) -> String {
        format!("http://127.0.0.1:{}/token", self.port)
    }

    pub fn cert_path(&self) -> PathBuf {
        self.dir.path().join("cert.pem")
    }

    pub fn first_user(&self) -> Option<(String, String)> {
        self.shared.users.first().cloned()
    }

    /// Accept `token` as an OAuth2 refresh token (identity token) of `user`.
    pub fn add_refresh_token(&self, token: &str, user: &str) {
        if let Ok(mut r) = self.shared.refresh.lock() {
            r.push((token.to_string(), user.to_string()));
        }
    }

    /// Tokens issued from now on are valid for `secs` seconds (`expires_in` and `exp`).
    pub fn set_lifetime(&self, secs: u64) {
        self.shared.lifetime.store(secs, Ordering::SeqCst);
    }

    /// Every token request so far.
    pub fn requests(&self) -> Vec<TokenRequest> {
        self.shared
            .log
            .lock()
            .map(|l| l.clone())
            .unwrap_or_default()
    }
}

impl Drop for TokenIssuer {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve(s: &Shared, mut conn: TcpStream) {
    let mut reader = BufReader::new(match conn.try_clone() {
        Ok(c) => c,
        Err(_) => return,
    });
    let mut line = String::new();
    if reader.read_line(&mut line).is_err() {
        return;
    }
    let method = line.split_whitespace().next().unwrap_or("").to_string();
    let target = line.split_whitespace().nth(1).unwrap_or("").to_string();
    let mut auth = None;
    let mut length = 0usize;
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" || h == "\n" {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            if k.eq_ignore_ascii_case("authorization") {
                auth = Some(v.trim().to_string());
            } else if k.eq_ignore_ascii_case("content-length") {
                length = v.trim().parse().unwrap_or(0);
            }
        }
    }
    let mut body = vec![0u8; length.min(1 << 16)];
    if method == "POST" && reader.read_exact(&mut body).is_err() {
        return;
    }
    let form = if method == "POST" {
        String::from_utf8_lossy(&body).into_owned()
    } else {
        target
            .split_once('?')
            .map(|(_, q)| q.to_string())
            .unwrap_or_default()
    };
    let mut service = String::new();
    let mut scopes = Vec::new();
    let (mut grant, mut refresh) = (None, None);
    for pair in form.split('&') {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let v = percent_decode(&v.replace('+', " "));
        match k {
            "service" => service = v,
            // OAuth2 form: one space-separated `scope`; GET: one `scope` per parameter.
            "scope" => scopes.extend(v.split(' ').filter(|s| !s.is_empty()).map(String::from)),
            "grant_type" => grant = Some(v),
            "refresh_token" => refresh = Some(v),
            _ => {}
        }
    }
    if method == "POST" {
        let known = s.refresh.lock().ok().and_then(|r| {
            r.iter()
                .find(|(t, _)| Some(t) == refresh.as_ref())
                .map(|(_, u)| u.clone())
        });
        let user = match (grant.as_deref(), known) {
            (Some("refresh_token"), Some(u)) => u,
            _ => {
                record(s, None, &scopes, false, grant);
                respond(
                    &mut conn,
                    "401 Unauthorized",
                    r#"{"error":"invalid_grant"}"#,
                );
                return;
            }
        };
        let access = grant_access(s, Some(&user), &scopes);
        record(s, Some(user.clone()), &scopes, !access.is_empty(), grant);
        let lifetime = s.lifetime.load(Ordering::SeqCst);
        match sign(s, &user, &service, access) {
            Some(token) => {
                let body = serde_json::json!({"access_token": token, "expires_in": lifetime,
                    "refresh_token": refresh, "scope": scopes.join(" ")})
                .to_string();
                respond(&mut conn, "200 OK", &body);
            }
            None => respond(&mut conn, "500 Internal Server Error", "{}"),
        }
        return;
    }
    let user = match auth.as_deref().and_then(|a| a.strip_prefix("Basic ")) {
        Some(b) => {
            let raw = decode_base64(b.trim()).unwrap_or_default();
            let raw = String::from_utf8_lossy(&raw).into_owned();
            let (u, p) = raw.split_once(':').unwrap_or((&raw, ""));
            if !s.users.iter().any(|(uu, pp)| uu == u && pp == p) {
                record(s, Some(u.to_string()), &scopes, false, None);
                let body = r#"{"details":"incorrect username or password"}"#;
                respond(&mut conn, "401 Unauthorized", body);
                return;
            }
            Some(u.to_string())
        }
        None => None,
    };
    let access = grant_access(s, user.as_deref(), &scopes);
    record(s, user.clone(), &scopes, !access.is_empty(), None);
    let lifetime = s.lifetime.load(Ordering::SeqCst);
    match sign(s, user.as_deref().unwrap_or(""), &service, access) {
        Some(token) => {
            let body =
                serde_json::json!({"token": token, "access_token": token, "expires_in": lifetime})
                    .to_string();
            respond(&mut conn, "200 OK", &body);
        }
        None => respond(&mut conn, "500 Internal Server Error", "{}"),
    }
}

/// The JWT `access` claim: known users get what they ask for, anonymous clients `pull` when
/// allowed.
fn grant_access(s: &Shared, user: Option<&str>, scopes: &[String]) -> Vec<serde_json::Value> {
    let mut access = Vec::new();
    for scope in scopes {
        let mut parts = scope.splitn(3, ':');
        let (Some(kind), Some(name), Some(actions)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        let granted: Vec<&str> = actions
            .split(',')
            .filter(|a| user.is_some() || (s.anonymous_pull && *a == "pull"))
            .collect();
        if !granted.is_empty() {
            access.push(serde_json::json!({"type": kind, "name": name, "actions": granted}));
        }
    }
    access
}

fn record(
    s: &Shared,
    user: Option<String>,
    scopes: &[String],
    granted: bool,
    grant: Option<String>,
) {
    if let Ok(mut l) = s.log.lock() {
        l.push(TokenRequest {
            user,
            scopes: scopes.to_vec(),
            granted,
            grant,
        });
    }
}

fn respond(conn: &mut TcpStream, status: &str, body: &str) {
    let _ = write!(
        conn,
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
}

fn sign(s: &Shared, sub: &str, service: &str, access: Vec<serde_json::Value>) -> Option<String> {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).ok()?.as_secs();
    let header = serde_json::json!({"alg": "RS256", "typ": "JWT", "x5c": [s.x5c]});
    let claims = serde_json::json!({
        "iss": ISSUER, "sub": sub, "aud": service,
        "exp": now + s.lifetime.load(Ordering::SeqCst), "nbf": now - 30, "iat": now,
        "jti": format!("{now}-{}", std::process::id()),
        "access": access,
    });
    let input = format!(
        "{}.{}",
        base64url(header.to_string().as_bytes()),
        base64url(claims.to_string().as_bytes())
    );
    let tmp = tempfile::NamedTempFile::new_in(&s.dir).ok()?;
    std::fs::write(tmp.path(), &input).ok()?;
    let out = Command::new("openssl")
        .args(["dgst", "-sha256", "-binary", "-sign"])
        .arg(&s.key)
        .arg(tmp.path())
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    Some(format!("{input}.{}", base64url(&out.stdout)))
}

#[cfg(test)]
mod tests {
    #[test]
    fn base64_round_trips() {
        assert_eq!(super::base64(b"user:pass"), "dXNlcjpwYXNz");
        assert_eq!(super::base64(b"ab"), "YWI=");
        assert_eq!(super::decode_base64("dXNlcjpwYXNz").unwrap(), b"user:pass");
        assert_eq!(
            super::percent_decode("repository%3Aa%2Fb%3Apull"),
            "repository:a/b:pull"
        );
    }
}
