//! A fault-injecting HTTP proxy to put in front of the S3 test server.
//!
//! Each request is read whole from the client, matched against the rules
//! (method and a substring of the path), and then passed on, refused or
//! spoiled: a connection reset before the server sees it, a reset after the
//! server answered (the answer is lost, the work is done), a stall, a 503
//! SlowDown, an endpoint that is down (connections refused) or silent
//! (connections accepted, never answered). Every request goes to the server
//! on a fresh connection and its answer is relayed until the server closes,
//! so the proxy never has to understand response framing.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// What to do to a matching request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Reset the client's connection before the server sees the request.
    Reset,
    /// Forward the request, let the server do its work, then reset the
    /// client's connection instead of relaying the answer.
    LoseResponse,
    /// Hold the request without an answer for this long, then reset.
    Stall(Duration),
    /// Answer 503 SlowDown without forwarding.
    SlowDown,
    /// Answer with this status and S3 error code without forwarding (a
    /// server that rejects a retry: 403 AccessDenied, 404 NoSuchUpload).
    Refuse(u16, &'static str),
}

/// One fault rule: `action` applies to requests whose method equals
/// `method` (or any, when empty) and whose path contains `path`, skipping
/// the first `skip` matches, for `times` matches.
#[derive(Clone, Debug)]
pub struct Rule {
    pub method: String,
    pub path: String,
    pub action: Action,
    pub skip: u64,
    pub times: u64,
    seen: u64,
    applied: u64,
}

impl Rule {
    pub fn on(method: &str, path: &str, action: Action) -> Rule {
        Rule {
            method: method.to_string(),
            path: path.to_string(),
            action,
            skip: 0,
            times: 1,
            seen: 0,
            applied: 0,
        }
    }
    /// Apply from the `n`th matching request on (1-based).
    pub fn nth(mut self, n: u64) -> Rule {
        self.skip = n.saturating_sub(1);
        self
    }
    pub fn times(mut self, n: u64) -> Rule {
        self.times = n;
        self
    }
    /// Apply to every matching request.
    pub fn always(mut self) -> Rule {
        self.times = u64::MAX;
        self
    }
}

/// A request the proxy saw, and what it did to it.
#[derive(Clone, Debug)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub fault: Option<Action>,
}

#[derive(Default)]
struct State {
    rules: Vec<Rule>,
    seen: Vec<Seen>,
    /// Until then, new connections are refused (the listener is closed).
    down_until: Option<Instant>,
    /// Random faults: (probability per request in 1/1000, seed).
    chaos: Option<(u32, u64)>,
}

/// What the proxy's threads share with its handle.
#[derive(Default)]
struct Shared {
    state: Mutex<State>,
    /// Connections are accepted and never answered.
    silent: AtomicBool,
    /// The proxy was dropped: the accept loop ends.
    stop: AtomicBool,
}

pub struct FaultProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
}

impl FaultProxy {
    /// A proxy on a free 127.0.0.1 port in front of `upstream` (host:port or
    /// an http:// URL).
    pub fn start(upstream: &str) -> FaultProxy {
        let up = upstream
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_string();
        let upstream: SocketAddr = up.parse().expect("upstream is host:port");
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the fault proxy");
        let addr = listener.local_addr().unwrap();
        let shared = Arc::<Shared>::default();
        let s = shared.clone();
        thread::spawn(move || accept_loop(listener, addr, upstream, s));
        FaultProxy { addr, shared }
    }

    /// A proxy in front of the S3 test server.
    pub fn s3() -> FaultProxy {
        let up = std::env::var("COFFER_TEST_S3_ENDPOINT").unwrap_or_else(|_| {
            panic!("COFFER_TEST_S3_ENDPOINT is not set: this test needs the S3 test server; run the suite with `bash scripts/test.sh`")
        });
        FaultProxy::start(&up)
    }

    /// The proxy's URL, for `aws_endpoint`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn add(&self, rule: Rule) {
        self.shared.state.lock().unwrap().rules.push(rule);
    }

    /// Refuse connections for `d` from now (a server restart).
    pub fn down_for(&self, d: Duration) {
        self.shared.state.lock().unwrap().down_until = Some(Instant::now() + d);
    }

    /// Accept connections and never answer (or, with false, answer again).
    pub fn silent(&self, on: bool) {
        self.shared.silent.store(on, Ordering::SeqCst);
    }

    /// Random faults on `per_mille` of the requests from now on (resets,
    /// lost answers, short stalls and 503s, chosen by a seeded generator).
    pub fn chaos(&self, per_mille: u32, seed: u64) {
        self.shared.state.lock().unwrap().chaos = Some((per_mille, seed));
    }

    /// Drop every rule and state: a healthy endpoint again.
    pub fn clear(&self) {
        let mut s = self.shared.state.lock().unwrap();
        s.rules.clear();
        s.down_until = None;
        s.chaos = None;
        self.shared.silent.store(false, Ordering::SeqCst);
    }

    pub fn requests(&self) -> Vec<Seen> {
        self.shared.state.lock().unwrap().seen.clone()
    }

    /// How many requests matched `method` (any when empty) and `path`.
    pub fn count(&self, method: &str, path: &str) -> usize {
        self.requests()
            .iter()
            .filter(|s| (method.is_empty() || s.method == method) && s.path.contains(path))
            .count()
    }

    /// The faults injected so far.
    pub fn faults(&self) -> Vec<Seen> {
        self.requests()
            .into_iter()
            .filter(|s| s.fault.is_some())
            .collect()
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_millis(200));
    }
}

fn accept_loop(
    mut listener: TcpListener,
    addr: SocketAddr,
    upstream: SocketAddr,
    shared: Arc<Shared>,
) {
    let state = &shared.state;
    listener.set_nonblocking(true).unwrap();
    loop {
        if shared.stop.load(Ordering::SeqCst) {
            return;
        }
        let down = state.lock().unwrap().down_until;
        if let Some(until) = down
            && Instant::now() < until
        {
            // Close the listening socket: connections are refused, as
            // by a server that is restarting.
            drop(listener);
            thread::sleep(until - Instant::now());
            listener = loop {
                match TcpListener::bind(addr) {
                    Ok(l) => break l,
                    Err(_) => thread::sleep(Duration::from_millis(20)),
                }
            };
            listener.set_nonblocking(true).unwrap();
            state.lock().unwrap().down_until = None;
            continue;
        }
        match listener.accept() {
            Ok((client, _)) => {
                client.set_nonblocking(false).unwrap();
                if shared.silent.load(Ordering::SeqCst) {
                    // Accept and say nothing, until the client gives up.
                    thread::spawn(move || {
                        let mut sink = [0u8; 8192];
                        let mut c = client;
                        while matches!(c.read(&mut sink), Ok(n) if n > 0) {}
                    });
                    continue;
                }
                let shared = shared.clone();
                thread::spawn(move || serve(client, upstream, &shared));
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                thread::sleep(Duration::from_millis(5));
            }
            Err(_) => thread::sleep(Duration::from_millis(5)),
        }
    }
}

/// Reads one request (head and body) from the client; None at EOF.
fn read_request(r: &mut BufReader<TcpStream>) -> Option<(String, String, Vec<u8>)> {
    let mut head = Vec::new();
    loop {
        let mut line = Vec::new();
        let n = r.read_until(b'\n', &mut line).ok()?;
        if n == 0 {
            return None;
        }
        let end = line == b"\r\n" || line == b"\n";
        head.extend_from_slice(&line);
        if end {
            break;
        }
    }
    let text = String::from_utf8_lossy(&head).to_string();
    let mut first = text.lines().next()?.split_whitespace();
    let method = first.next()?.to_string();
    let path = first.next()?.to_string();
    let mut len = 0usize;
    let mut chunked = false;
    for l in text.lines().skip(1) {
        if let Some((k, v)) = l.split_once(':') {
            let k = k.trim().to_ascii_lowercase();
            if k == "content-length" {
                len = v.trim().parse().ok()?;
            } else if k == "transfer-encoding" && v.to_ascii_lowercase().contains("chunked") {
                chunked = true;
            }
        }
    }
    let mut body = Vec::new();
    if chunked {
        // Relay the chunked body as it came, up to and including the last
        // (empty) chunk and its trailer.
        loop {
            let mut size_line = Vec::new();
            r.read_until(b'\n', &mut size_line).ok()?;
            body.extend_from_slice(&size_line);
            let size = usize::from_str_radix(
                String::from_utf8_lossy(&size_line)
                    .trim()
                    .split(';')
                    .next()?,
                16,
            )
            .ok()?;
            if size == 0 {
                loop {
                    let mut t = Vec::new();
                    r.read_until(b'\n', &mut t).ok()?;
                    body.extend_from_slice(&t);
                    if t == b"\r\n" || t.is_empty() {
                        break;
                    }
                }
                break;
            }
            let mut chunk = vec![0u8; size + 2];
            r.read_exact(&mut chunk).ok()?;
            body.extend_from_slice(&chunk);
        }
    } else {
        body.resize(len, 0);
        r.read_exact(&mut body).ok()?;
    }
    let mut whole = head;
    whole.extend_from_slice(&body);
    Some((method, path, whole))
}

/// Ends the client's connection with a TCP reset (SO_LINGER 0).
fn reset(c: TcpStream) {
    let _ = rustix::net::sockopt::set_socket_linger(&c, Some(Duration::ZERO));
    drop(c);
}

/// A small deterministic generator for chaos faults.
fn splitmix(x: &mut u64) -> u64 {
    *x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *x;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn choose(state: &Mutex<State>, method: &str, path: &str) -> Option<Action> {
    let mut s = state.lock().unwrap();
    for r in s.rules.iter_mut() {
        if (r.method.is_empty() || r.method == method) && path.contains(&r.path) {
            r.seen += 1;
            if r.seen > r.skip && r.applied < r.times {
                r.applied += 1;
                return Some(r.action);
            }
        }
    }
    if let Some((per_mille, seed)) = s.chaos.as_mut() {
        let roll = splitmix(seed);
        if (roll % 1000) < u64::from(*per_mille) {
            return Some(match splitmix(seed) % 4 {
                0 => Action::Reset,
                1 => Action::LoseResponse,
                2 => Action::Stall(Duration::from_millis(1500)),
                _ => Action::SlowDown,
            });
        }
    }
    None
}

fn serve(client: TcpStream, upstream: SocketAddr, shared: &Shared) {
    let state = &shared.state;
    let mut reader = BufReader::new(client.try_clone().unwrap());
    let mut client = client;
    // One request per connection: every answer says `Connection: close`.
    if let Some((method, path, raw)) = read_request(&mut reader) {
        if shared.silent.load(Ordering::SeqCst) {
            // Went silent while this connection was open.
            thread::sleep(Duration::from_secs(3600));
            return;
        }
        let fault = choose(state, &method, &path);
        state.lock().unwrap().seen.push(Seen {
            method: method.clone(),
            path: path.clone(),
            fault,
        });
        match fault {
            Some(Action::Reset) => return reset(client),
            Some(Action::Stall(d)) => {
                thread::sleep(d);
                return reset(client);
            }
            Some(a @ (Action::SlowDown | Action::Refuse(..))) => {
                let (status, code) = match a {
                    Action::Refuse(status, code) => (status, code),
                    _ => (503, "SlowDown"),
                };
                let body = format!(
                    "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code><Message>injected by the fault proxy</Message></Error>"
                );
                let resp = format!(
                    "HTTP/1.1 {status} {code}\r\nContent-Type: application/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = client.write_all(resp.as_bytes());
                let _ = client.shutdown(Shutdown::Both);
                return;
            }
            Some(Action::LoseResponse) | None => {}
        }
        // Forward on a fresh connection that the server closes after its
        // answer, and relay the answer until then.
        let Ok(mut up) = TcpStream::connect(upstream) else {
            return reset(client);
        };
        let raw = force_close(&raw);
        if up.write_all(&raw).is_err() {
            return reset(client);
        }
        let mut answer = Vec::new();
        if up.read_to_end(&mut answer).is_err() {
            return reset(client);
        }
        if fault == Some(Action::LoseResponse) {
            return reset(client);
        }
        if client.write_all(&force_close(&answer)).is_err() {
            return;
        }
        // The answer says `Connection: close`: the client opens a new one.
        let _ = client.shutdown(Shutdown::Both);
    }
}

/// The request with `Connection: close`, so the server ends its answer by
/// closing.
fn force_close(raw: &[u8]) -> Vec<u8> {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| i + 2)
        .unwrap_or(raw.len());
    let head = String::from_utf8_lossy(&raw[..split]);
    let mut out = String::new();
    for (i, line) in head.split("\r\n").enumerate() {
        if line.is_empty() {
            continue;
        }
        if i > 0 && line.to_ascii_lowercase().starts_with("connection:") {
            continue;
        }
        out.push_str(line);
        out.push_str("\r\n");
    }
    out.push_str("Connection: close\r\n");
    let mut v = out.into_bytes();
    v.extend_from_slice(&raw[split..]);
    v
}
