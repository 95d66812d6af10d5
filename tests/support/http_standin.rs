//! Shared plumbing of the stand-in servers: a small HTTP/1.1 server on a loopback port,
//! a request recorder, fault knobs, and helpers both stand-ins use.
//!
//! Why not `tiny_http`: the `DropConnection` fault must close the socket without answering
//! (what a crashed reverse proxy does). `tiny_http` answers 500 when a request is dropped and
//! keeps the connection open when its raw writer is dropped, so a client would hang instead of
//! seeing a closed connection. Owning the socket makes every fault exact.
//!
//! One thread accepts, one thread serves each connection (keep-alive supported). Dropping the
//! [`HttpServer`] stops the accept loop and shuts down every open connection.
#![allow(dead_code)]

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Largest request body a stand-in accepts (blueprints and GraphQL documents are small).
const MAX_BODY: usize = 16 * 1024 * 1024;

/// One request as it arrived, recorded before any fault applies, so tests can count the
/// HTTP requests a run made even when the server "failed".
#[derive(Clone, Debug)]
pub struct Recorded {
    pub method: String,
    /// Path with query string, as sent.
    pub path: String,
    /// Header names as sent (case kept); use [`Recorded::header`] for lookups.
    pub headers: Vec<(String, String)>,
    /// Body as (lossy) UTF-8.
    pub body: String,
}

impl Recorded {
    /// First header with that name, case-insensitively.
    pub fn header(&self, name: &str) -> Option<&str> {
        header_of(&self.headers, name)
    }

    /// The body parsed as JSON, if it is JSON.
    pub fn json(&self) -> Option<serde_json::Value> {
        serde_json::from_str(&self.body).ok()
    }

    /// The path without its query string.
    pub fn path_only(&self) -> &str {
        self.path.split('?').next().unwrap_or("")
    }
}

/// A request handed to a [`Service`].
#[derive(Clone, Debug)]
pub struct Request {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub remote: SocketAddr,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        header_of(&self.headers, name)
    }

    /// The path without its query string, percent-decoding left to the caller.
    pub fn path_only(&self) -> &str {
        self.path.split('?').next().unwrap_or("")
    }

    /// Decoded query pairs (`+` is a space, as in forms).
    pub fn query(&self) -> Vec<(String, String)> {
        match self.path.split_once('?') {
            Some((_, q)) => parse_query(q),
            None => Vec::new(),
        }
    }

    pub fn query_value(&self, name: &str) -> Option<String> {
        self.query()
            .into_iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v)
    }

    pub fn body_str(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> Option<serde_json::Value> {
        serde_json::from_slice(&self.body).ok()
    }

    /// Value of one cookie from the `Cookie` headers.
    pub fn cookie(&self, name: &str) -> Option<String> {
        self.headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case("cookie"))
            .flat_map(|(_, v)| v.split(';'))
            .filter_map(|pair| pair.trim().split_once('='))
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.to_string())
    }

    /// The media type of `Content-Type`, lower-cased, without parameters.
    pub fn media_type(&self) -> Option<String> {
        self.header("content-type").map(|v| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        })
    }
}

/// What a [`Service`] answers.
#[derive(Clone, Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn json(status: u16, body: &serde_json::Value) -> Self {
        Response {
            status,
            headers: vec![(
                "Content-Type".into(),
                "application/json; charset=utf-8".into(),
            )],
            body: serde_json::to_vec(body).expect("serialisable JSON"),
        }
    }

    pub fn html(status: u16, body: &str) -> Self {
        Response {
            status,
            headers: vec![("Content-Type".into(), "text/html; charset=utf-8".into())],
            body: body.as_bytes().to_vec(),
        }
    }

    pub fn text(status: u16, body: &str) -> Self {
        Response {
            status,
            headers: vec![("Content-Type".into(), "text/plain; charset=utf-8".into())],
            body: body.as_bytes().to_vec(),
        }
    }

    pub fn empty(status: u16) -> Self {
        Response {
            status,
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    pub fn with_header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }
}

/// Faults a test can switch on; they apply to every request received after `set_fault`
/// (a `RateLimit` counts itself down) until `set_fault(Fault::None)`.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub enum Fault {
    #[default]
    None,
    /// Every request answers this status with an HTML body (a proxy error page).
    Status(u16),
    /// Sleep this long before answering normally.
    Delay(Duration),
    /// Close the socket without answering.
    DropConnection,
    /// Answer 200 with an HTML page (a login portal or a misrouted proxy).
    NonJson,
    /// The next `times` requests on the service's rate-limited routes get 429 with
    /// `Retry-After: retry_after_secs` (the service decides which routes and the body).
    RateLimit { retry_after_secs: u64, times: usize },
}

/// The behaviour behind a stand-in.
pub trait Service: Send + Sync + 'static {
    fn handle(&self, req: &Request) -> Response;

    /// The 429 this service answers for `req` under [`Fault::RateLimit`], or `None` when the
    /// route is not rate limited (then the fault leaves the request alone and keeps its count).
    fn throttled(&self, _req: &Request, _retry_after_secs: u64) -> Option<Response> {
        None
    }
}

/// State the server shares with its connection threads.
struct Shared {
    stop: AtomicBool,
    recorded: Mutex<Vec<Recorded>>,
    fault: Mutex<Fault>,
    connections: Mutex<HashMap<u64, TcpStream>>,
    next_conn: AtomicU64,
}

/// A running server on `127.0.0.1`; stops when dropped.
pub struct HttpServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept: Option<JoinHandle<()>>,
}

impl HttpServer {
    /// Binds `127.0.0.1:port` (0 = any free port), builds the service with the base URL it will
    /// be reached at (`http://127.0.0.1:PORT`, no trailing slash), and serves it in the background.
    pub fn start<S: Service>(port: u16, make: impl FnOnce(&str) -> Arc<S>) -> (HttpServer, Arc<S>) {
        let listener = TcpListener::bind(("127.0.0.1", port)).expect("bind a loopback port");
        let addr = listener.local_addr().expect("local address");
        let url = format!("http://{addr}");
        let service = make(&url);
        let shared = Arc::new(Shared {
            stop: AtomicBool::new(false),
            recorded: Mutex::new(Vec::new()),
            fault: Mutex::new(Fault::None),
            connections: Mutex::new(HashMap::new()),
            next_conn: AtomicU64::new(0),
        });
        let accept = {
            let shared = Arc::clone(&shared);
            let service: Arc<dyn Service> = service.clone();
            std::thread::Builder::new()
                .name(format!("standin-accept-{}", addr.port()))
                .spawn(move || accept_loop(listener, shared, service))
                .expect("spawn accept thread")
        };
        (
            HttpServer {
                addr,
                shared,
                accept: Some(accept),
            },
            service,
        )
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    pub fn requests(&self) -> Vec<Recorded> {
        lock(&self.shared.recorded).clone()
    }

    pub fn clear_requests(&self) {
        lock(&self.shared.recorded).clear();
    }

    pub fn set_fault(&self, fault: Fault) {
        *lock(&self.shared.fault) = fault;
    }

    /// Blocks the calling thread until the server is dropped elsewhere (used by the
    /// `standins` example, which serves until killed).
    pub fn wait(&self) {
        while !self.shared.stop.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        // Wake the blocking accept() with a connection of our own.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_millis(500));
        for (_, conn) in lock(&self.shared.connections).drain() {
            let _ = conn.shutdown(Shutdown::Both);
        }
        if let Some(handle) = self.accept.take() {
            let _ = handle.join();
        }
    }
}

/// Locks a mutex, ignoring poisoning (a panicking handler must not wedge the stand-in).
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn accept_loop(listener: TcpListener, shared: Arc<Shared>, service: Arc<dyn Service>) {
    for stream in listener.incoming() {
        if shared.stop.load(Ordering::SeqCst) {
            break;
        }
        let Ok(stream) = stream else { continue };
        let id = shared.next_conn.fetch_add(1, Ordering::SeqCst);
        if let Ok(clone) = stream.try_clone() {
            lock(&shared.connections).insert(id, clone);
        }
        let shared = Arc::clone(&shared);
        let service = Arc::clone(&service);
        let _ = std::thread::Builder::new()
            .name("standin-conn".into())
            .spawn(move || {
                serve_connection(stream, &shared, service.as_ref());
                lock(&shared.connections).remove(&id);
            });
    }
}

fn serve_connection(stream: TcpStream, shared: &Shared, service: &dyn Service) {
    let remote = stream
        .peer_addr()
        .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 0)));
    let Ok(write_half) = stream.try_clone() else {
        return;
    };
    let mut writer = write_half;
    let mut reader = BufReader::new(stream);
    loop {
        let Some((req, keep_alive)) = read_request(&mut reader, &mut writer, remote) else {
            return;
        };
        if shared.stop.load(Ordering::SeqCst) {
            return;
        }
        lock(&shared.recorded).push(Recorded {
            method: req.method.clone(),
            path: req.path.clone(),
            headers: req.headers.clone(),
            body: req.body_str(),
        });
        let fault = lock(&shared.fault).clone();
        let response = match fault {
            Fault::None => run_service(service, &req),
            Fault::Status(code) => Response::html(
                code,
                &format!(
                    "<html><head><title>{code} {reason}</title></head><body><center><h1>{code} {reason}</h1></center><hr><center>nginx</center></body></html>",
                    reason = reason_phrase(code)
                ),
            ),
            Fault::Delay(d) => {
                let until = Instant::now() + d;
                while Instant::now() < until && !shared.stop.load(Ordering::SeqCst) {
                    std::thread::sleep((until - Instant::now()).min(Duration::from_millis(20)));
                }
                run_service(service, &req)
            }
            Fault::DropConnection => {
                let _ = writer.shutdown(Shutdown::Both);
                return;
            }
            Fault::NonJson => Response::html(
                200,
                "<!DOCTYPE html><html><head><title>Sign in</title></head><body><form method=\"post\">Please sign in</form></body></html>",
            ),
            Fault::RateLimit {
                retry_after_secs,
                times,
            } => match service.throttled(&req, retry_after_secs) {
                Some(resp) if times > 0 => {
                    let mut f = lock(&shared.fault);
                    if let Fault::RateLimit { times, .. } = &mut *f {
                        *times = times.saturating_sub(1);
                    }
                    resp
                }
                _ => run_service(service, &req),
            },
        };
        if write_response(&mut writer, &req, &response, keep_alive).is_err() || !keep_alive {
            let _ = writer.shutdown(Shutdown::Both);
            return;
        }
    }
}

fn run_service(service: &dyn Service, req: &Request) -> Response {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| service.handle(req))) {
        Ok(r) => r,
        Err(_) => Response::text(500, "stand-in handler panicked"),
    }
}

/// Reads one request; `None` on EOF or a malformed request (the connection is then closed).
fn read_request(
    reader: &mut BufReader<TcpStream>,
    writer: &mut TcpStream,
    remote: SocketAddr,
) -> Option<(Request, bool)> {
    let mut line = String::new();
    // Skip stray empty lines between requests (RFC 9112 §2.2).
    loop {
        line.clear();
        if reader.read_line(&mut line).ok()? == 0 {
            return None;
        }
        if !line.trim().is_empty() {
            break;
        }
    }
    let mut parts = line.split_whitespace();
    let method = parts.next()?.to_string();
    let path = parts.next()?.to_string();
    let version = parts.next().unwrap_or("HTTP/1.1").to_string();
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).ok()? == 0 {
            return None;
        }
        let h = h.trim_end_matches(['\r', '\n']);
        if h.is_empty() {
            break;
        }
        let (k, v) = h.split_once(':')?;
        headers.push((k.trim().to_string(), v.trim().to_string()));
    }
    // curl asks before sending a large body.
    if header_of(&headers, "expect").is_some_and(|v| v.eq_ignore_ascii_case("100-continue")) {
        writer.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").ok()?;
    }
    let chunked = header_of(&headers, "transfer-encoding")
        .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
    let body = if chunked {
        read_chunked(reader)?
    } else {
        let len: usize = header_of(&headers, "content-length")
            .map(|v| v.trim().parse().ok())
            .unwrap_or(Some(0))?;
        if len > MAX_BODY {
            return None;
        }
        let mut body = vec![0u8; len];
        reader.read_exact(&mut body).ok()?;
        body
    };
    let connection = header_of(&headers, "connection").map(|v| v.to_ascii_lowercase());
    let keep_alive = match connection.as_deref() {
        Some(c) if c.contains("close") => false,
        Some(c) if c.contains("keep-alive") => true,
        _ => version != "HTTP/1.0",
    };
    Some((
        Request {
            method,
            path,
            headers,
            body,
            remote,
        },
        keep_alive,
    ))
}

fn read_chunked(reader: &mut BufReader<TcpStream>) -> Option<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let mut size_line = String::new();
        reader.read_line(&mut size_line).ok()?;
        let size_hex = size_line.trim().split(';').next()?.trim();
        let size = usize::from_str_radix(size_hex, 16).ok()?;
        if size == 0 {
            // Trailers until an empty line.
            loop {
                let mut t = String::new();
                if reader.read_line(&mut t).ok()? == 0 || t.trim().is_empty() {
                    return Some(body);
                }
            }
        }
        if body.len() + size > MAX_BODY {
            return None;
        }
        let start = body.len();
        body.resize(start + size, 0);
        reader.read_exact(&mut body[start..]).ok()?;
        let mut crlf = [0u8; 2];
        reader.read_exact(&mut crlf).ok()?;
    }
}

fn write_response(
    w: &mut TcpStream,
    req: &Request,
    resp: &Response,
    keep_alive: bool,
) -> std::io::Result<()> {
    let mut head = format!(
        "HTTP/1.1 {} {}\r\nContent-Length: {}\r\n",
        resp.status,
        reason_phrase(resp.status),
        resp.body.len()
    );
    if !keep_alive {
        head.push_str("Connection: close\r\n");
    }
    for (k, v) in &resp.headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    let mut out = head.into_bytes();
    if req.method != "HEAD" {
        out.extend_from_slice(&resp.body);
    }
    w.write_all(&out)?;
    w.flush()
}

fn header_of<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

pub fn reason_phrase(code: u16) -> &'static str {
    match code {
        200 => "OK",
        201 => "Created",
        204 => "No Content",
        301 => "Moved Permanently",
        302 => "Found",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        409 => "Conflict",
        415 => "Unsupported Media Type",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Status",
    }
}

// ---------------------------------------------------------------------------------------------
// Small helpers shared by both stand-ins.
// ---------------------------------------------------------------------------------------------

/// A random u64 (std's randomly keyed SipHash; good enough for test ids and tokens).
pub fn random_u64() -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    h.write_u128(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.finish()
}

/// `n` random characters from `[A-Za-z0-9]`.
pub fn random_token(n: usize) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    (0..n)
        .map(|_| ALPHABET[(random_u64() % ALPHABET.len() as u64) as usize] as char)
        .collect()
}

/// A random version-4 UUID in its canonical text form.
pub fn uuid4() -> String {
    let a = random_u64();
    let b = random_u64();
    format!(
        "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
        (a >> 32) as u32,
        (a >> 16) as u16,
        (a as u16) & 0x0fff,
        ((b >> 48) as u16 & 0x3fff) | 0x8000,
        b & 0xffff_ffff_ffff
    )
}

/// Now as an RFC 3339 UTC timestamp with microseconds (Django REST's format).
pub fn now_rfc3339() -> String {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let secs = d.as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:06}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60,
        d.subsec_micros()
    )
}

/// `application/x-www-form-urlencoded` encoding as JavaScript's `URLSearchParams` does it
/// (space becomes `+`; only `*-._` and alphanumerics stay as they are).
pub fn form_encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'*' | b'-' | b'.' | b'_' => {
                out.push(b as char)
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// Percent-decodes a query component (`+` is a space).
pub fn form_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = |c: u8| (c as char).to_digit(16);
                match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                    (Some(h), Some(l)) => {
                        out.push((h * 16 + l) as u8);
                        i += 2;
                    }
                    _ => out.push(b'%'),
                }
            }
            other => out.push(other),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

pub fn parse_query(q: &str) -> Vec<(String, String)> {
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (form_decode(k), form_decode(v))
        })
        .collect()
}

/// Unpadded base64url (RFC 4648 §5), as PKCE's `code_challenge` uses.
pub fn base64url(data: &[u8]) -> String {
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let n = (u32::from(chunk[0]) << 16)
            | (u32::from(*chunk.get(1).unwrap_or(&0)) << 8)
            | u32::from(*chunk.get(2).unwrap_or(&0));
        let chars = chunk.len() + 1;
        for i in 0..chars {
            out.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

/// Parses `"1.2.3"`, `"2026.8"` or `"0.25"` into three numbers (missing parts are 0;
/// a pre-release suffix such as `-rc1` is ignored).
pub fn parse_version(v: &str) -> (u32, u32, u32) {
    let core = v.trim().trim_start_matches('v');
    let core = core.split(['-', '+']).next().unwrap_or("");
    let mut it = core.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    (
        it.next().unwrap_or(0),
        it.next().unwrap_or(0),
        it.next().unwrap_or(0),
    )
}

/// Sleeps up to `d`, waking early when `stop` is set; returns whether it was stopped.
pub fn sleep_unless(stop: &AtomicBool, d: Duration) -> bool {
    let until = Instant::now() + d;
    while Instant::now() < until {
        if stop.load(Ordering::SeqCst) {
            return true;
        }
        std::thread::sleep((until - Instant::now()).min(Duration::from_millis(20)));
    }
    stop.load(Ordering::SeqCst)
}
