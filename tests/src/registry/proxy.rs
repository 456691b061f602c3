//! A TCP proxy between a client and the registry that injects faults into blob downloads.
//!
//! Each client connection carries one request: the proxy adds `Connection: close` so the registry
//! closes after its response and clients cannot reuse the connection behind the proxy's back. It
//! records every request head (to check e.g. that a resumed download sent `Range`).
//!
//! Modes for responses to `GET …/blobs/sha256:…`: [`Mode::Pass`]; [`Mode::Cut`] closes the
//! connection after `n` response bytes; [`Mode::Hold`] forwards `n` bytes, raises
//! [`Proxy::held`], and then forwards nothing until [`Proxy::release`] closes it;
//! [`Mode::Redirect`] answers `307` to another host, as registries backed by a CDN do.
//!
//! It counts the response bytes it forwards ([`Proxy::bytes_served`], headers included;
//! [`Proxy::blob_bytes_served`] for blob GETs only), so a test can tell how much of an image a
//! client fetched.
//!
//! It also counts the blob GETs in progress and the most at once ([`Proxy::max_in_flight`]),
//! and can hold each blob GET for a while before forwarding it ([`Proxy::set_delay`]), so
//! concurrent requests overlap.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    Pass,
    Cut(usize),
    Hold(usize),
    /// Answer blob GETs with `307` to the same path on this `host:port` (a "CDN").
    Redirect(String),
    /// Answer the next `n` requests with `503 Service Unavailable` (then pass).
    Unavailable(usize),
    /// Refuse monolithic blob uploads (a `PUT …/blobs/uploads/…` with a body) with `413`, as a
    /// front end with a request size limit does; chunked uploads pass.
    RejectMonolithic,
}

struct Shared {
    upstream: String,
    mode: Mutex<Mode>,
    heads: Mutex<Vec<String>>,
    held: AtomicBool,
    released: AtomicBool,
    stop: AtomicBool,
    served: AtomicU64,
    blob_served: AtomicU64,
    in_flight: AtomicU64,
    max_in_flight: AtomicU64,
    delay_ms: AtomicU64,
}

/// A blob GET in progress (counted while it lives).
struct InFlight<'a>(&'a Shared);

impl<'a> InFlight<'a> {
    fn enter(s: &'a Shared) -> InFlight<'a> {
        let now = s.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        s.max_in_flight.fetch_max(now, Ordering::SeqCst);
        InFlight(s)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

pub struct Proxy {
    port: u16,
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl Proxy {
    /// Listen on a free 127.0.0.1 port and forward to `upstream` (`127.0.0.1:PORT`).
    pub fn start(upstream: &str, mode: Mode) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind proxy");
        let port = listener.local_addr().expect("addr").port();
        let shared = Arc::new(Shared {
            upstream: upstream.to_string(),
            mode: Mutex::new(mode),
            heads: Mutex::new(Vec::new()),
            held: AtomicBool::new(false),
            released: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            served: AtomicU64::new(0),
            blob_served: AtomicU64::new(0),
            in_flight: AtomicU64::new(0),
            max_in_flight: AtomicU64::new(0),
            delay_ms: AtomicU64::new(0),
        });
        let s = shared.clone();
        let thread = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if s.stop.load(Ordering::SeqCst) {
                    break;
                }
                if let Ok(c) = conn {
                    let s2 = s.clone();
                    std::thread::spawn(move || handle(&s2, c));
                }
            }
        });
        Proxy {
            port,
            shared,
            thread: Some(thread),
        }
    }

    /// `127.0.0.1:PORT` of the proxy: the registry name clients use.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn set_mode(&self, mode: Mode) {
        if let Ok(mut m) = self.shared.mode.lock() {
            *m = mode;
        }
        self.shared.held.store(false, Ordering::SeqCst);
        self.shared.released.store(false, Ordering::SeqCst);
    }

    /// Whether a held blob response has reached its byte count.
    pub fn held(&self) -> bool {
        self.shared.held.load(Ordering::SeqCst)
    }

    /// Wait up to `timeout` for [`Proxy::held`].
    pub fn wait_held(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.held() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// Close held connections.
    pub fn release(&self) {
        self.shared.released.store(true, Ordering::SeqCst);
    }

    /// Response bytes (headers and bodies) forwarded to clients so far.
    pub fn bytes_served(&self) -> u64 {
        self.shared.served.load(Ordering::SeqCst)
    }

    /// Response bytes of `GET …/blobs/sha256:…` requests forwarded so far.
    pub fn blob_bytes_served(&self) -> u64 {
        self.shared.blob_served.load(Ordering::SeqCst)
    }

    /// The most blob GETs that were in progress at once (since [`Proxy::reset_max_in_flight`]).
    pub fn max_in_flight(&self) -> u64 {
        self.shared.max_in_flight.load(Ordering::SeqCst)
    }

    pub fn reset_max_in_flight(&self) {
        self.shared.max_in_flight.store(0, Ordering::SeqCst);
    }

    /// Hold each blob GET for `d` before forwarding it.
    pub fn set_delay(&self, d: Duration) {
        self.shared
            .delay_ms
            .store(d.as_millis() as u64, Ordering::SeqCst);
    }

    /// Start counting from zero.
    pub fn reset_counters(&self) {
        self.shared.served.store(0, Ordering::SeqCst);
        self.shared.blob_served.store(0, Ordering::SeqCst);
    }

    /// Every request head forwarded so far (request line and headers).
    pub fn heads(&self) -> Vec<String> {
        self.shared
            .heads
            .lock()
            .map(|h| h.clone())
            .unwrap_or_default()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        self.shared.released.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn handle(s: &Shared, mut client: TcpStream) {
    let _ = client.set_read_timeout(Some(Duration::from_secs(30)));
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    // A TLS ClientHello (a client probing for HTTPS): the registry behind speaks plain HTTP.
    if let Ok(n) = client.peek(&mut chunk[..1]) {
        if n == 1 && chunk[0] == 0x16 {
            let _ = client.write_all(b"HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n");
            let _ = client.shutdown(Shutdown::Both);
            return;
        }
    }
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        match client.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    if let Ok(mut h) = s.heads.lock() {
        h.push(head.clone());
    }
    let is_blob_get = head.starts_with("GET ")
        && head
            .lines()
            .next()
            .is_some_and(|l| l.contains("/blobs/sha256:"));
    let _in_flight = is_blob_get.then(|| InFlight::enter(s));
    let delay = s.delay_ms.load(Ordering::SeqCst);
    if is_blob_get && delay > 0 {
        std::thread::sleep(Duration::from_millis(delay));
    }
    let mut rewritten = String::new();
    for (i, line) in head.split("\r\n").enumerate() {
        if line.is_empty() {
            continue;
        }
        if i > 0 && line.to_ascii_lowercase().starts_with("connection:") {
            continue;
        }
        rewritten.push_str(line);
        rewritten.push_str("\r\n");
        if i == 0 {
            rewritten.push_str("Connection: close\r\n");
        }
    }
    rewritten.push_str("\r\n");
    let mode = match s.mode.lock() {
        Ok(mut m) => {
            let current = m.clone();
            if let Mode::Unavailable(n) = current {
                *m = if n > 1 {
                    Mode::Unavailable(n - 1)
                } else {
                    Mode::Pass
                };
            }
            current
        }
        Err(_) => Mode::Pass,
    };
    if let Mode::Unavailable(_) = mode {
        let _ = client.write_all(
            b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        );
        let _ = client.shutdown(Shutdown::Both);
        return;
    }
    if let (Mode::Redirect(target), true) = (&mode, is_blob_get) {
        let path = head.split_whitespace().nth(1).unwrap_or("/");
        let _ = write!(
            client,
            "HTTP/1.1 307 Temporary Redirect\r\nLocation: http://{target}{path}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        );
        let _ = client.shutdown(Shutdown::Both);
        return;
    }
    let content_length = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse::<usize>().ok())?
        })
        .unwrap_or(0);
    let monolithic_put = head.starts_with("PUT ")
        && head
            .lines()
            .next()
            .is_some_and(|l| l.contains("/blobs/uploads/"))
        && content_length > 0;
    if mode == Mode::RejectMonolithic && monolithic_put {
        let mut have = buf.len() - head_end;
        while have < content_length {
            match client.read(&mut chunk) {
                Ok(0) | Err(_) => break,
                Ok(n) => have += n,
            }
        }
        let body = r#"{"errors":[{"code":"SIZE_INVALID","message":"request entity too large"}]}"#;
        let _ = write!(
            client,
            "HTTP/1.1 413 Request Entity Too Large\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        let _ = client.shutdown(Shutdown::Both);
        return;
    }
    let Ok(mut up) = TcpStream::connect(&s.upstream) else {
        let _ = client.shutdown(Shutdown::Both);
        return;
    };
    if up.write_all(rewritten.as_bytes()).is_err() || up.write_all(&buf[head_end..]).is_err() {
        return;
    }
    // Request body (uploads) flows on its own thread.
    let (Ok(mut c2), Ok(mut u2)) = (client.try_clone(), up.try_clone()) else {
        return;
    };
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut c2, &mut u2);
        let _ = u2.shutdown(Shutdown::Write);
    });
    let limit = match mode {
        Mode::Cut(n) | Mode::Hold(n) if is_blob_get => Some(n),
        _ => None,
    };
    let mut sent = 0usize;
    loop {
        let n = match up.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let take = match limit {
            Some(l) => n.min(l.saturating_sub(sent)),
            None => n,
        };
        if client.write_all(&chunk[..take]).is_err() {
            break;
        }
        s.served.fetch_add(take as u64, Ordering::SeqCst);
        if is_blob_get {
            s.blob_served.fetch_add(take as u64, Ordering::SeqCst);
        }
        sent += take;
        if limit.is_some_and(|l| sent >= l) {
            if let Mode::Hold(_) = mode {
                let _ = client.flush();
                s.held.store(true, Ordering::SeqCst);
                let deadline = Instant::now() + Duration::from_secs(120);
                while !s.released.load(Ordering::SeqCst) && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
            break;
        }
    }
    let _ = client.shutdown(Shutdown::Both);
    let _ = up.shutdown(Shutdown::Both);
}
