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
//! [`Proxy::set_rate`] puts the responses behind a link of a given speed: one token bucket shared
//! by every connection (as one network link is), refilled with `rate / 100` bytes every 10 ms
//! ([`RATE_PERIOD`]) up to a burst of [`RATE_BURST`] such refills. [`Proxy::rate_buckets`] counts
//! the refills granted so far, so a test can check that what was served never exceeded them
//! without asserting on wall-clock time.
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

/// How often the rate limiter's bucket is refilled.
pub const RATE_PERIOD: Duration = Duration::from_millis(10);
/// How many refills the bucket holds at most (the burst a slow client can catch up with).
pub const RATE_BURST: u64 = 5;

/// A token bucket on response bytes: `quantum` bytes per [`RATE_PERIOD`].
struct Limiter {
    quantum: u64,
    state: Mutex<Bucket>,
}

struct Bucket {
    start: Instant,
    /// Refills granted so far: one per period begun since `start`.
    refills: u64,
    tokens: u64,
}

impl Limiter {
    fn new(bytes_per_sec: u64) -> Limiter {
        let per_sec = Duration::from_secs(1).as_nanos() / RATE_PERIOD.as_nanos();
        Limiter {
            quantum: (bytes_per_sec / per_sec as u64).max(1),
            state: Mutex::new(Bucket {
                start: Instant::now(),
                refills: 0,
                tokens: 0,
            }),
        }
    }

    /// Wait until some tokens are there and take up to `want` of them; returns how many.
    fn take(&self, want: usize) -> usize {
        loop {
            let wait = {
                let Ok(mut b) = self.state.lock() else {
                    return want;
                };
                let elapsed = b.start.elapsed();
                let due = (elapsed.as_nanos() / RATE_PERIOD.as_nanos()) as u64 + 1;
                if due > b.refills {
                    let added = (due - b.refills).saturating_mul(self.quantum);
                    b.tokens = (b.tokens.saturating_add(added)).min(self.quantum * RATE_BURST);
                    b.refills = due;
                }
                if b.tokens > 0 {
                    let k = b.tokens.min(want as u64);
                    b.tokens -= k;
                    return k as usize;
                }
                // The next refill begins at `due * RATE_PERIOD` after `start`.
                (RATE_PERIOD * due as u32).saturating_sub(elapsed)
            };
            std::thread::sleep(wait.max(Duration::from_micros(100)));
        }
    }

    fn refills(&self) -> u64 {
        self.state.lock().map(|b| b.refills).unwrap_or(0)
    }
}

struct Shared {
    upstream: String,
    rate: Mutex<Option<Arc<Limiter>>>,
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
            rate: Mutex::new(None),
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

    /// Limit the responses to `bytes_per_sec` in total over all connections (`None`: no limit).
    /// Responses already under way keep the limit they started with.
    pub fn set_rate(&self, bytes_per_sec: Option<u64>) {
        if let Ok(mut r) = self.shared.rate.lock() {
            *r = bytes_per_sec.map(|b| Arc::new(Limiter::new(b)));
        }
    }

    /// Bytes the rate limiter adds to its bucket per [`RATE_PERIOD`] (0 without a limit).
    pub fn rate_quantum(&self) -> u64 {
        self.limiter().map_or(0, |l| l.quantum)
    }

    /// Refills the rate limiter has granted so far (0 without a limit): the bytes served since
    /// [`Proxy::set_rate`] never exceed `rate_buckets() * rate_quantum()`.
    pub fn rate_buckets(&self) -> u64 {
        self.limiter().map_or(0, |l| l.refills())
    }

    fn limiter(&self) -> Option<Arc<Limiter>> {
        self.shared.rate.lock().ok().and_then(|r| r.clone())
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
    let limiter = s.rate.lock().ok().and_then(|r| r.clone());
    let mut sent = 0usize;
    'forward: loop {
        let n = match up.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let take = match limit {
            Some(l) => n.min(l.saturating_sub(sent)),
            None => n,
        };
        let mut done = 0;
        while done < take {
            let k = limiter
                .as_ref()
                .map_or(take - done, |l| l.take(take - done));
            if client.write_all(&chunk[done..done + k]).is_err() {
                break 'forward;
            }
            s.served.fetch_add(k as u64, Ordering::SeqCst);
            if is_blob_get {
                s.blob_served.fetch_add(k as u64, Ordering::SeqCst);
            }
            done += k;
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

#[cfg(test)]
mod tests {
    use super::*;

    /// An upstream that answers each of `conns` requests with `body`, then closes.
    fn upstream(body: Vec<u8>, conns: usize) -> (String, JoinHandle<()>) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap().to_string();
        let t = std::thread::spawn(move || {
            for c in l.incoming().take(conns) {
                let mut c = c.unwrap();
                let body = body.clone();
                std::thread::spawn(move || {
                    let mut head = Vec::new();
                    let mut b = [0u8; 1024];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        let n = c.read(&mut b).unwrap();
                        assert!(n > 0, "request head cut short");
                        head.extend_from_slice(&b[..n]);
                    }
                    let _ = write!(
                        c,
                        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n",
                        body.len()
                    );
                    let _ = c.write_all(&body);
                });
            }
        });
        (addr, t)
    }

    /// GET a blob through the proxy; after every read, what the proxy counts as served must be
    /// within the refills its limiter granted. Returns the body.
    fn fetch_checked(proxy: &Proxy, quantum: u64) -> Vec<u8> {
        let mut c = TcpStream::connect(proxy.addr()).unwrap();
        write!(
            c,
            "GET /v2/t/blobs/sha256:{} HTTP/1.1\r\nHost: x\r\n\r\n",
            "0".repeat(64)
        )
        .unwrap();
        let mut all = Vec::new();
        let mut b = [0u8; 16384];
        loop {
            let n = c.read(&mut b).unwrap();
            // Served first, refills second: refills only grow, so this never races in our favour.
            let served = proxy.bytes_served();
            let refills = proxy.rate_buckets();
            assert!(
                served <= refills * quantum,
                "served {served} bytes after {refills} refills of {quantum}"
            );
            if n == 0 {
                break;
            }
            all.extend_from_slice(&b[..n]);
        }
        let start = all.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
        all.split_off(start)
    }

    #[test]
    fn rate_limit_never_serves_more_than_the_refills_granted() {
        let body: Vec<u8> = (0..(1u32 << 20)).map(|i| (i * 7 % 251) as u8).collect();
        let (up, t) = upstream(body.clone(), 3);
        let proxy = Proxy::start(&up, Mode::Pass);
        assert_eq!(proxy.rate_buckets(), 0, "no limiter before set_rate");
        proxy.set_rate(Some(10_000_000));
        let quantum = proxy.rate_quantum();
        assert_eq!(quantum, 100_000);
        assert_eq!(fetch_checked(&proxy, quantum), body);
        // Two clients at once share the one bucket: together they stay within it too.
        proxy.reset_counters();
        proxy.set_rate(Some(10_000_000));
        let both = std::thread::scope(|s| {
            let a = s.spawn(|| fetch_checked(&proxy, quantum));
            let b = s.spawn(|| fetch_checked(&proxy, quantum));
            [a.join().unwrap(), b.join().unwrap()]
        });
        assert!(both.iter().all(|b| *b == body));
        let refills = proxy.rate_buckets();
        let served = proxy.blob_bytes_served();
        assert!(served >= 2 * body.len() as u64, "{served}");
        // The limiter did hold the responses back: 2 MiB needed at least 2 MiB of refills.
        assert!(
            refills * quantum >= served,
            "{served} bytes served after only {refills} refills"
        );
        drop(proxy);
        t.join().unwrap();
    }
}
