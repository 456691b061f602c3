//! A real registry for tests: Debian's `docker-registry` (distribution 2.8) on a free 127.0.0.1 port,
//! configured by a file the test writes, storage in a temp dir, killed and reaped on drop.
//!
//! - [`Registry::start`] (no auth), [`Registry::start_basic`] (htpasswd), [`Registry::start_token`]
//!   (Bearer tokens from a [`token::TokenIssuer`] running in the test process).
//! - [`proxy::Proxy`]: a TCP proxy in front of it that can cut or hold blob responses (faults).
//! - [`images`]: small OCI images built in memory, written as OCI layouts and pushed with skopeo.

pub mod images;
pub mod proxy;
pub mod token;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// How the registry authenticates clients.
pub enum Auth {
    None,
    /// htpasswd with one user.
    Basic {
        user: String,
        password: String,
    },
    /// Bearer tokens from an issuer run by the test.
    Token(token::TokenIssuer),
}

/// A running `docker-registry`. Dropping it kills and reaps the process.
pub struct Registry {
    child: Option<Child>,
    dir: TempDir,
    port: u16,
    pub auth: Auth,
    /// Serves HTTPS with a self-signed certificate for 127.0.0.1.
    pub tls: bool,
}

/// A port that was free a moment ago (bound to 0 and released).
pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().expect("local addr").port()
}

impl Registry {
    /// A registry without authentication.
    pub fn start() -> Registry {
        Registry::with_auth(Auth::None)
    }

    /// A registry with htpasswd (bcrypt) Basic auth for one user.
    pub fn start_basic(user: &str, password: &str) -> Registry {
        Registry::with_auth(Auth::Basic {
            user: user.into(),
            password: password.into(),
        })
    }

    /// A registry with token auth: `users` may get tokens for pull and push; anonymous clients get
    /// pull tokens only when `anonymous_pull`.
    pub fn start_token(users: &[(&str, &str)], anonymous_pull: bool) -> Registry {
        Registry::with_auth(Auth::Token(token::TokenIssuer::start(
            users,
            anonymous_pull,
        )))
    }

    /// A registry without authentication that speaks only HTTPS (self-signed certificate).
    pub fn start_tls() -> Registry {
        Registry::with(Auth::None, true)
    }

    pub fn with_auth(auth: Auth) -> Registry {
        Registry::with(auth, false)
    }

    pub fn with(auth: Auth, tls: bool) -> Registry {
        let dir = tempfile::Builder::new()
            .prefix("strata-registry-")
            .tempdir()
            .expect("temp dir");
        std::fs::create_dir_all(dir.path().join("storage")).expect("storage dir");
        let mut reg = Registry {
            child: None,
            dir,
            port: 0,
            auth,
            tls,
        };
        if tls {
            let out = Command::new("openssl")
                .args([
                    "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                ])
                .args([
                    "-subj",
                    "/CN=127.0.0.1",
                    "-addext",
                    "subjectAltName=IP:127.0.0.1",
                ])
                .arg("-keyout")
                .arg(reg.dir.path().join("tls.key"))
                .arg("-out")
                .arg(reg.dir.path().join("tls.crt"))
                .output()
                .expect("run openssl req");
            assert!(
                out.status.success(),
                "openssl: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        if let Auth::Basic { user, password } = &reg.auth {
            let out = Command::new("htpasswd")
                .args(["-Bbn", user, password])
                .output()
                .expect("run htpasswd (apache2-utils)");
            assert!(out.status.success(), "htpasswd failed");
            std::fs::write(reg.dir.path().join("htpasswd"), &out.stdout).expect("write htpasswd");
        }
        let mut last = String::new();
        for _ in 0..5 {
            reg.port = free_port();
            match reg.spawn() {
                Ok(()) => return reg,
                Err(e) => last = e,
            }
        }
        panic!("docker-registry did not start: {last}");
    }

    fn config(&self) -> String {
        let auth = match &self.auth {
            Auth::None => String::new(),
            Auth::Basic { .. } => format!(
                "auth:\n  htpasswd:\n    realm: basic-realm\n    path: {}\n",
                self.dir.path().join("htpasswd").display()
            ),
            Auth::Token(t) => format!(
                "auth:\n  token:\n    realm: {}\n    service: {}\n    issuer: {}\n    rootcertbundle: {}\n",
                t.realm(),
                token::SERVICE,
                token::ISSUER,
                t.cert_path().display()
            ),
        };
        let tls = if self.tls {
            format!(
                "  tls:\n    certificate: {}\n    key: {}\n",
                self.dir.path().join("tls.crt").display(),
                self.dir.path().join("tls.key").display()
            )
        } else {
            String::new()
        };
        format!(
            "version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{}\n{tls}{auth}",
            self.storage().display(),
            self.port
        )
    }

    /// Start the process on `self.port` and wait until `/v2/` answers.
    fn spawn(&mut self) -> Result<(), String> {
        let config = self.dir.path().join("config.yml");
        std::fs::write(&config, self.config()).map_err(|e| e.to_string())?;
        let log = std::fs::File::create(self.dir.path().join("registry.log"))
            .map_err(|e| e.to_string())?;
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log)
            .spawn()
            .map_err(|e| format!("spawn docker-registry: {e}"))?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Some(c) = self.child.as_mut() {
                if let Ok(Some(status)) = c.try_wait() {
                    self.child = None;
                    return Err(format!("exited with {status}: {}", self.log()));
                }
            }
            if http_status(&self.addr(), "/v2/").is_some() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.kill();
        Err(format!("not answering after 30 s: {}", self.log()))
    }

    /// `127.0.0.1:PORT`, the registry's name in references.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The storage root directory (`docker/registry/v2/...` below it).
    pub fn storage(&self) -> PathBuf {
        self.dir.path().join("storage")
    }

    /// The file holding blob `sha256:<hex>` in the registry's storage.
    pub fn blob_file(&self, digest: &str) -> PathBuf {
        let hex = digest.trim_start_matches("sha256:");
        self.storage()
            .join("docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }

    /// The registry's own log (stdout and stderr).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    /// Kill the process (SIGKILL) and reap it. Storage stays.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Start again on the same port with the same storage.
    pub fn restart(&mut self) {
        self.kill();
        let mut last = String::new();
        for _ in 0..20 {
            match self.spawn() {
                Ok(()) => return,
                Err(e) => last = e,
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        panic!(
            "docker-registry did not restart on port {}: {last}",
            self.port
        );
    }

    /// `user:password` for skopeo's `--dest-creds`/`--src-creds`, when the registry needs one.
    pub fn skopeo_creds(&self) -> Option<String> {
        match &self.auth {
            Auth::None => None,
            Auth::Basic { user, password } => Some(format!("{user}:{password}")),
            Auth::Token(t) => t.first_user().map(|(u, p)| format!("{u}:{p}")),
        }
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Send `GET path` over plain HTTP/1.0 and return the status code, if anything answered.
pub fn http_status(addr: &str, path: &str) -> Option<u16> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
        .ok()?;
    let mut buf = [0u8; 64];
    let n = s.read(&mut buf).ok()?;
    let line = String::from_utf8_lossy(&buf[..n]);
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Run `skopeo copy` with TLS verification off for both sides and the default policy bypassed.
/// Panics with skopeo's stderr when it fails.
pub fn skopeo_copy(src: &str, dest: &str, extra: &[&str]) {
    let out = skopeo_copy_output(src, dest, extra);
    assert!(
        out.status.success(),
        "skopeo copy {src} {dest} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Like [`skopeo_copy`] but returns the output instead of panicking.
pub fn skopeo_copy_output(src: &str, dest: &str, extra: &[&str]) -> std::process::Output {
    let mut cmd = Command::new("skopeo");
    cmd.args([
        "--insecure-policy",
        "copy",
        "--quiet",
        "--src-tls-verify=false",
        "--dest-tls-verify=false",
    ]);
    cmd.args(extra).arg(src).arg(dest);
    cmd.stdin(Stdio::null());
    cmd.output().expect("run skopeo")
}
