//! Hostile input, one table (DESIGN §4, §6, §7): oversized messages, invalid UTF-8,
//! absurd nesting and batch sizes, path-traversal ids, unsafe workdirs, slow headers,
//! forged Host and Origin headers and misplaced or wrong tokens — over the unix
//! socket, HTTP and WebSocket of one real daemon. Every row names the answer it must
//! get; after every row the daemon must still answer `daemon.info` and every journal
//! under its home must verify (`journal::Reader::verify`).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use r1_core::journal::Reader;
use r1_core::server::http::HttpConfig;
use r1_core::{Daemon, DaemonConfig, DaemonHandle};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpStream, UnixStream};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
use tokio_tungstenite::tungstenite::{self, Message};

/// Counts, per thread, the bytes allocated and not yet freed and their peak, so a
/// test can bound what one synchronous call allocates (other tests' threads do not
/// count).
struct Counting;

thread_local! {
    static LIVE: Cell<isize> = const { Cell::new(0) };
    static PEAK: Cell<isize> = const { Cell::new(0) };
}

fn count(delta: isize) {
    let _ = LIVE.try_with(|live| {
        let now = live.get() + delta;
        live.set(now);
        let _ = PEAK.try_with(|peak| peak.set(peak.get().max(now)));
    });
}

// SAFETY: every call forwards to the system allocator unchanged; the counters are
// const-initialised thread-locals without destructors, so touching them never
// allocates.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded as is.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            count(layout.size() as isize);
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded as is.
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            count(layout.size() as isize);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded as is.
        unsafe { System.dealloc(ptr, layout) };
        count(-(layout.size() as isize));
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: forwarded as is.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            count(new_size as isize - layout.size() as isize);
        }
        p
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// Runs `f` and returns its result and the most it had allocated at once on this
/// thread.
fn peak_alloc<T>(f: impl FnOnce() -> T) -> (T, isize) {
    let base = LIVE.with(Cell::get);
    PEAK.with(|p| p.set(base));
    let out = f();
    (out, PEAK.with(Cell::get) - base)
}

/// Longest any single step may take (a bound, not a sleep).
const STEP: Duration = Duration::from_secs(10);
/// The message limit of every transport (DESIGN §4).
const LIMIT: usize = 16 * 1024 * 1024;
/// The header read timeout the daemon runs with here (default 10 s), so the slow
/// header row takes about this long.
const HEADER_TIMEOUT: Duration = Duration::from_millis(1000);

async fn timely<F: std::future::Future>(what: &str, f: F) -> F::Output {
    tokio::time::timeout(STEP, f)
        .await
        .unwrap_or_else(|_| panic!("timed out: {what}"))
}

// ---------------------------------------------------------------------------
// The daemon and the read-only directory

/// A directory on a read-only file system (a tmpfs mounted `ro`), unmounted on drop.
/// As root, `access(W_OK)` passes for any directory on a writable file system, so a
/// read-only mount is the way to get a directory root may not write.
struct ReadOnlyDir {
    path: PathBuf,
    mounted: bool,
}

impl ReadOnlyDir {
    /// `Err(why)` when no such directory can be had here (then the rows that need one
    /// are skipped with that message).
    fn make(parent: &Path) -> Result<ReadOnlyDir, String> {
        if !nix::unistd::geteuid().is_root() {
            // Not root: /etc is the real thing.
            let etc = PathBuf::from("/etc");
            return match nix::unistd::access(&etc, nix::unistd::AccessFlags::W_OK) {
                Err(_) => Ok(ReadOnlyDir {
                    path: etc,
                    mounted: false,
                }),
                Ok(()) => Err("/etc is writable by this non-root user".into()),
            };
        }
        let path = parent.join("readonly");
        std::fs::create_dir_all(&path).map_err(|e| e.to_string())?;
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "ro,size=64k,mode=0755", "r1-hostile"])
            .arg(&path)
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "mount -t tmpfs -o ro failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        let dir = ReadOnlyDir {
            path,
            mounted: true,
        };
        match nix::unistd::access(&dir.path, nix::unistd::AccessFlags::W_OK) {
            Err(_) => Ok(dir),
            Ok(()) => Err("a read-only tmpfs is still writable here".into()),
        }
    }
}

impl Drop for ReadOnlyDir {
    fn drop(&mut self) {
        if self.mounted {
            let ok = Command::new("umount")
                .arg(&self.path)
                .status()
                .is_ok_and(|s| s.success());
            if !ok {
                let _ = Command::new("umount").arg("-l").arg(&self.path).status();
            }
        }
    }
}

struct Fixture {
    handle: DaemonHandle,
    home: PathBuf,
    work: PathBuf,
    sock: PathBuf,
    port: u16,
    token: String,
    session: String,
    /// A symlink in `work` pointing into the home.
    link_into_home: PathBuf,
    readonly: Result<ReadOnlyDir, String>,
    // Last: removed after the mount above is gone.
    _dir: tempfile::TempDir,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        // On a failed assertion too: begin shutdown (the test's runtime ends it).
        self.handle.shutdown();
    }
}

impl Fixture {
    /// A daemon with one session (no read-only mount).
    async fn start() -> Fixture {
        Self::start_with(false).await
    }

    /// As [`Fixture::start`], and with `readonly`, a read-only directory for the
    /// rows that need one (mounted as root; skipped rows say why when impossible).
    async fn start_with(readonly: bool) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let home = dir.path().join("home");
        let work = dir.path().join("work");
        let sock = dir.path().join("s.sock");
        std::fs::create_dir_all(&work).unwrap();
        let handle = Daemon::start(DaemonConfig {
            home: Some(home.clone()),
            sock_path: Some(sock.clone()),
            ..Default::default()
        })
        .await
        .expect("daemon starts");
        handle.state().set_http_config(HttpConfig {
            header_read_timeout: HEADER_TIMEOUT,
            ws_close_timeout: Duration::from_secs(1),
            ..HttpConfig::default()
        });
        let port = handle.port().expect("tcp on");
        let token = handle.token().expose().to_owned();
        let link_into_home = work.join("into-home");
        std::os::unix::fs::symlink(home.join("sessions"), &link_into_home).unwrap();
        let readonly = if readonly {
            ReadOnlyDir::make(dir.path())
        } else {
            Err("not asked for".to_owned())
        };
        let mut fx = Fixture {
            handle,
            home,
            work,
            sock,
            port,
            token,
            session: String::new(),
            link_into_home,
            readonly,
            _dir: dir,
        };
        let started = unix_call(
            &fx.sock,
            "session.start",
            json!({"workdir": fx.work, "name": "target"}),
        )
        .await;
        fx.session = started["result"]["session_id"]
            .as_str()
            .unwrap_or_else(|| panic!("session.start: {started}"))
            .to_owned();
        fx
    }

    fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// After every row: the daemon answers and no journal is damaged.
    async fn check_healthy(&self, row: &str) {
        let info = unix_call(&self.sock, "daemon.info", json!({})).await;
        assert!(
            info["result"]["pid"].is_u64(),
            "{row}: daemon.info after the row: {info}"
        );
        let mut journals = vec![self.home.join("bus").join("events.ndjson")];
        for e in std::fs::read_dir(self.home.join("sessions")).unwrap() {
            let p = e.unwrap().path().join("journal.ndjson");
            if p.exists() {
                journals.push(p);
            }
        }
        for j in journals {
            let report = Reader::open(&j).unwrap().verify().unwrap();
            assert!(
                report.damage.is_none(),
                "{row}: {} is damaged: {report:?}",
                j.display()
            );
        }
    }
}

async fn unix_call(sock: &Path, method: &str, params: Value) -> Value {
    let mut c = UnixConn::connect(sock).await;
    c.send(
        json!({"jsonrpc":"2.0","id":"probe","method":method,"params":params})
            .to_string()
            .as_bytes(),
    )
    .await;
    loop {
        let v = c.recv().await.expect("an answer");
        if v["id"] == "probe" {
            return v;
        }
    }
}

// ---------------------------------------------------------------------------
// Transports

struct UnixConn {
    rd: BufReader<tokio::net::unix::OwnedReadHalf>,
    wr: tokio::net::unix::OwnedWriteHalf,
}

impl UnixConn {
    async fn connect(sock: &Path) -> UnixConn {
        let (r, w) = UnixStream::connect(sock).await.unwrap().into_split();
        UnixConn {
            rd: BufReader::new(r),
            wr: w,
        }
    }

    /// Writes `bytes` and a newline; a write the server cut short is not an error
    /// (it may close after refusing an oversized line).
    async fn send(&mut self, bytes: &[u8]) {
        let _ = self.wr.write_all(bytes).await;
        let _ = self.wr.write_all(b"\n").await;
    }

    /// The next line as JSON, `None` at EOF.
    async fn recv(&mut self) -> Option<Value> {
        let mut line = Vec::new();
        let n = timely("unix answer", self.rd.read_until(b'\n', &mut line))
            .await
            .unwrap_or(0);
        if n == 0 {
            return None;
        }
        Some(serde_json::from_slice(&line).unwrap_or_else(|e| {
            panic!("unparseable line ({e}): {}", String::from_utf8_lossy(&line))
        }))
    }
}

/// An HTTP response: its status and its body as JSON (null if it is not JSON).
#[derive(Debug)]
struct Resp {
    status: u16,
    body: Value,
}

/// One request with exactly these headers (hyper's client connection adds none, not
/// even Host).
async fn http(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(String, String)],
    body: &[u8],
) -> Resp {
    let stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let (mut tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let mut b = Request::builder().method(method).uri(path);
    for (k, v) in headers {
        b = b.header(k.as_str(), v.as_str());
    }
    let req = b.body(Full::new(Bytes::copy_from_slice(body))).unwrap();
    let resp = timely("response head", tx.send_request(req)).await.unwrap();
    let status = resp.status().as_u16();
    let bytes = timely("response body", resp.into_body().collect())
        .await
        .unwrap()
        .to_bytes();
    Resp {
        status,
        body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    }
}

/// Raw bytes on a TCP connection; returns what came back until the server closed or
/// a response head and its `Content-Length` body arrived.
async fn raw_tcp(port: u16, bytes: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    s.write_all(bytes).await.unwrap();
    let mut out = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match timely("raw answer", s.read(&mut buf)).await {
            Ok(n) => n,
            Err(_) => break,
        };
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
        if response_complete(&out) {
            break;
        }
    }
    out
}

fn response_complete(out: &[u8]) -> bool {
    let text = String::from_utf8_lossy(out);
    let Some(end) = text.find("\r\n\r\n") else {
        return false;
    };
    let len = text[..end]
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse::<usize>().ok())
                .flatten()
        })
        .unwrap_or(0);
    out.len() >= end + 4 + len
}

/// Sends a request head one byte at a time, waiting up to `every` for the server
/// between bytes; returns how long until the server closed (`None`: it never did
/// while there were bytes to send) and what it sent.
async fn slow_header(port: u16, head: &[u8], every: Duration) -> (Option<Duration>, Vec<u8>) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let t0 = Instant::now();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    for b in head {
        if s.write_all(&[*b]).await.is_err() {
            return (Some(t0.elapsed()), got);
        }
        // Wait for the server instead of sleeping: it either closes or stays silent.
        match tokio::time::timeout(every, s.read(&mut buf)).await {
            Err(_) => {}
            Ok(Ok(0)) | Ok(Err(_)) => return (Some(t0.elapsed()), got),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
        }
    }
    (None, got)
}

type Ws = tokio_tungstenite::WebSocketStream<TcpStream>;

/// A WebSocket handshake with exactly these extra headers (they replace the
/// defaults of the same name, Host included).
async fn ws_connect(port: u16, path: &str, headers: &[(String, String)]) -> Result<Ws, u16> {
    let mut req = format!("ws://127.0.0.1:{port}{path}")
        .into_client_request()
        .unwrap();
    for (k, v) in headers {
        req.headers_mut().insert(
            http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            v.parse().unwrap(),
        );
    }
    let stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    match timely("ws handshake", tokio_tungstenite::client_async(req, stream)).await {
        Ok((ws, _)) => Ok(ws),
        Err(tungstenite::Error::Http(resp)) => Err(resp.status().as_u16()),
        Err(e) => panic!("websocket handshake failed oddly: {e}"),
    }
}

/// What a WebSocket said after we sent something.
#[derive(Debug)]
enum WsHeard {
    Text(Value),
    Close(Option<u16>),
}

async fn ws_next(ws: &mut Ws) -> WsHeard {
    loop {
        match timely("websocket frame", ws.next()).await {
            Some(Ok(Message::Text(t))) => {
                return WsHeard::Text(serde_json::from_str(&t).unwrap());
            }
            Some(Ok(Message::Close(c))) => return WsHeard::Close(c.map(|c| u16::from(c.code))),
            Some(Ok(_)) => {}
            Some(Err(_)) | None => return WsHeard::Close(None),
        }
    }
}

// ---------------------------------------------------------------------------
// The table

/// What to send.
enum Probe {
    /// These bytes as one line on a fresh unix connection.
    Unix(Vec<u8>),
    /// An HTTP request (`Host: 127.0.0.1:<port>` added unless `headers` has a host
    /// entry; a host entry with an empty value means "no Host header at all").
    Http {
        method: &'static str,
        path: String,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    },
    /// Raw bytes on a TCP connection (for requests an HTTP client would not send).
    Raw(Vec<u8>),
    /// `GET /v1/health` whose head arrives one byte per second.
    SlowHeader,
    /// A WebSocket handshake (the master token's subprotocol unless `headers`
    /// names `sec-websocket-protocol`; an empty value means none), then `send`.
    Ws {
        path: String,
        headers: Vec<(String, String)>,
        send: Option<Message>,
    },
}

/// The answer a row must get.
#[derive(Debug, Clone, Copy)]
enum Expect {
    /// A JSON-RPC error with this code; the connection stays usable (checked with a
    /// `daemon.info` on it).
    Rpc(i64),
    /// A JSON-RPC error with this code, then the connection is closed.
    RpcThenClose(i64),
    /// An HTTP status with a JSON error of this code in the body.
    Status(u16, i64),
    /// The header read timeout closes the connection, with no answer.
    TimedOut,
    /// The WebSocket upgrade is refused with this status.
    WsRefused(u16),
    /// The server closes the WebSocket with this close code.
    WsClose(u16),
}

struct Row {
    name: String,
    probe: Probe,
    expect: Expect,
    /// Why the row cannot run here (printed, not failed).
    skip: Option<String>,
}

fn row(name: impl Into<String>, probe: Probe, expect: Expect) -> Row {
    Row {
        name: name.into(),
        probe,
        expect,
        skip: None,
    }
}

fn rpc_line(method: &str, params: Value) -> Vec<u8> {
    json!({"jsonrpc":"2.0","id":7,"method":method,"params":params})
        .to_string()
        .into_bytes()
}

fn deep_array(depth: usize) -> Vec<u8> {
    let mut v = vec![b'['; depth];
    v.extend(std::iter::repeat_n(b']', depth));
    v
}

/// A request whose params hold objects nested `depth` deep.
fn deep_params(depth: usize) -> Vec<u8> {
    let mut v = br#"{"jsonrpc":"2.0","id":7,"method":"session.list","params":"#.to_vec();
    for _ in 0..depth {
        v.extend_from_slice(br#"{"a":"#);
    }
    v.extend_from_slice(b"1");
    v.extend(std::iter::repeat_n(b'}', depth + 1));
    v
}

/// JSON that, were serde_json's `raw_value` feature on, would nest about 2,600
/// levels deep: each level is 120 arrays around `{"$serde_json::private::RawValue":
/// "<the next level as a string>"}`, a key that feature re-parses with a fresh
/// recursion limit. Escaping doubles per level, so 16 MiB holds ~21 levels.
fn raw_value_bomb() -> Vec<u8> {
    let wrap = |inner: &str| {
        format!(
            "{}{{\"$serde_json::private::RawValue\":{}}}{}",
            "[".repeat(120),
            serde_json::to_string(inner).unwrap(),
            "]".repeat(120)
        )
    };
    let mut inner = format!("{}{}", "[".repeat(120), "]".repeat(120));
    loop {
        let next = wrap(&inner);
        if next.len() > LIMIT - 100 {
            break;
        }
        inner = next;
    }
    format!(r#"{{"jsonrpc":"2.0","id":7,"method":"session.list","params":{{"state":{inner}}}}}"#)
        .into_bytes()
}

fn big_batch(n: usize) -> Vec<u8> {
    let one = r#"{"jsonrpc":"2.0","id":1,"method":"daemon.info"}"#;
    let mut s = String::with_capacity(n * (one.len() + 1) + 2);
    s.push('[');
    for i in 0..n {
        if i > 0 {
            s.push(',');
        }
        s.push_str(one);
    }
    s.push(']');
    s.into_bytes()
}

fn h(k: &str, v: &str) -> (String, String) {
    (k.to_owned(), v.to_owned())
}

fn http_get(path: &str, headers: Vec<(String, String)>) -> Probe {
    Probe::Http {
        method: "GET",
        path: path.to_owned(),
        headers,
        body: Vec::new(),
    }
}

fn http_post(path: &str, headers: Vec<(String, String)>, body: Vec<u8>) -> Probe {
    Probe::Http {
        method: "POST",
        path: path.to_owned(),
        headers,
        body,
    }
}

fn ws(path: &str, headers: Vec<(String, String)>, send: Option<Message>) -> Probe {
    Probe::Ws {
        path: path.to_owned(),
        headers,
        send,
    }
}

fn text(bytes: Vec<u8>) -> Option<Message> {
    Some(Message::text(String::from_utf8(bytes).unwrap()))
}

fn rows(fx: &Fixture) -> Vec<Row> {
    use Expect::*;
    let port = fx.port;
    let bearer = format!("Bearer {}", fx.token);
    let auth = || vec![h("authorization", &bearer)];
    let with_auth = |extra: &[(String, String)]| {
        let mut v = auth();
        v.extend_from_slice(extra);
        v
    };
    let sid = fx.session.as_str();
    let wrong_token: String = fx
        .token
        .chars()
        .map(|c| if c == '0' { '1' } else { '0' })
        .collect();
    let last_flipped = {
        let mut t = fx.token.clone();
        let last = t.pop().unwrap();
        t.push(if last == 'a' { 'b' } else { 'a' });
        t
    };
    let proto = |t: &str| h("sec-websocket-protocol", &format!("r1.bearer, {t}"));
    let raw_oversized = |path: &str| {
        format!(
            "POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: {bearer}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            LIMIT + 1
        )
        .into_bytes()
    };
    let mut invalid_utf8_in_string =
        br#"{"jsonrpc":"2.0","id":7,"method":"session.get","params":{"session_id":"sess_"#.to_vec();
    invalid_utf8_in_string.extend_from_slice(b"\xff\xfe\"}}");
    let readonly_skip = fx.readonly.as_ref().err().cloned();
    let readonly_path = fx
        .readonly
        .as_ref()
        .map(|d| d.path.clone())
        .unwrap_or_else(|_| PathBuf::from("/etc"));
    let other_port = if port == u16::MAX { port - 1 } else { port + 1 };

    vec![
        // ---- unix socket
        row(
            "unix: a line of 16 MiB + 1 bytes",
            Probe::Unix(vec![b' '; LIMIT + 1]),
            RpcThenClose(-32005),
        ),
        row(
            "unix: a line that is not UTF-8",
            Probe::Unix(b"\xff\xfe\xfd\x80".to_vec()),
            Rpc(-32700),
        ),
        row(
            "unix: invalid UTF-8 inside a JSON string",
            Probe::Unix(invalid_utf8_in_string.clone()),
            Rpc(-32700),
        ),
        row(
            "unix: a line of NUL bytes",
            Probe::Unix(vec![0u8; 64]),
            Rpc(-32700),
        ),
        row(
            "unix: arrays nested 100,000 deep",
            Probe::Unix(deep_array(100_000)),
            Rpc(-32700),
        ),
        row(
            "unix: params nested 100,000 deep",
            Probe::Unix(deep_params(100_000)),
            Rpc(-32700),
        ),
        row(
            "unix: nesting through serde_json's RawValue token (~2,600 levels)",
            Probe::Unix(raw_value_bomb()),
            Rpc(-32602),
        ),
        row(
            "unix: a batch of 100,000 requests",
            Probe::Unix(big_batch(100_000)),
            Rpc(-32005),
        ),
        row(
            "unix: session id ../../etc/passwd",
            Probe::Unix(rpc_line("session.get", json!({"session_id": "../../etc/passwd"}))),
            Rpc(-32602),
        ),
        row(
            "unix: session id with a NUL byte",
            Probe::Unix(rpc_line("session.send", json!({"session_id": format!("{sid}\u{0}"), "text": "x"}))),
            Rpc(-32602),
        ),
        row(
            "unix: session id sess_ + ../",
            Probe::Unix(rpc_line("journal.read", json!({"session_id": "sess_../../../etc"}))),
            Rpc(-32602),
        ),
        row(
            "unix: workdir symlinked into R1_HOME",
            Probe::Unix(rpc_line("session.start", json!({"workdir": fx.link_into_home}))),
            Rpc(-32602),
        ),
        row(
            "unix: workdir is R1_HOME itself",
            Probe::Unix(rpc_line("session.start", json!({"workdir": fx.home}))),
            Rpc(-32602),
        ),
        row(
            "unix: workdir with a NUL byte",
            Probe::Unix(rpc_line("session.start", json!({"workdir": format!("{}\u{0}/x", fx.work.display())}))),
            Rpc(-32602),
        ),
        row(
            "unix: relative workdir ../..",
            Probe::Unix(rpc_line("session.start", json!({"workdir": "../.."}))),
            Rpc(-32602),
        ),
        Row {
            skip: readonly_skip.clone(),
            ..row(
                "unix: workdir without write access",
                Probe::Unix(rpc_line("session.start", json!({"workdir": readonly_path}))),
                Rpc(-32602),
            )
        },
        row(
            "unix: a number too large for any type",
            Probe::Unix(br#"{"jsonrpc":"2.0","id":1e400,"method":"daemon.info"}"#.to_vec()),
            Rpc(-32700),
        ),
        // ---- HTTP: limits and encodings
        row(
            "http: /v1/rpc body of 16 MiB + 1 (declared)",
            Probe::Raw(raw_oversized("/v1/rpc")),
            Status(413, -32005),
        ),
        row(
            "http: send body of 16 MiB + 1 (declared)",
            Probe::Raw(raw_oversized(&format!("/v1/sessions/{sid}/send"))),
            Status(413, -32005),
        ),
        row(
            "http: /v1/rpc body that is not UTF-8",
            http_post("/v1/rpc", auth(), b"\xff\xfe\xfd".to_vec()),
            Status(200, -32700),
        ),
        row(
            "http: /v1/rpc invalid UTF-8 inside a JSON string",
            http_post("/v1/rpc", auth(), invalid_utf8_in_string.clone()),
            Status(200, -32700),
        ),
        row(
            "http: REST create with a body that is not UTF-8",
            http_post("/v1/sessions", auth(), b"{\"workdir\":\"\xff\"}".to_vec()),
            Status(400, -32700),
        ),
        row(
            "http: /v1/rpc arrays nested 100,000 deep",
            http_post("/v1/rpc", auth(), deep_array(100_000)),
            Status(200, -32700),
        ),
        row(
            "http: /v1/rpc a batch of 100,000 requests",
            http_post("/v1/rpc", auth(), big_batch(100_000)),
            Status(200, -32005),
        ),
        // ---- HTTP: ids and workdirs
        row(
            "http: session id ..",
            http_get("/v1/sessions/..", auth()),
            Status(400, -32602),
        ),
        row(
            "http: session id %2e%2e%2f%2e%2e%2fetc",
            http_get("/v1/sessions/%2e%2e%2f%2e%2e%2fetc", auth()),
            Status(400, -32602),
        ),
        row(
            "http: session id with %00",
            http_post(&format!("/v1/sessions/{sid}%00/send"), auth(), br#"{"text":"x"}"#.to_vec()),
            Status(400, -32602),
        ),
        row(
            "http: session id in the body with a NUL byte",
            http_post("/v1/sse-ticket", auth(), json!({"session_id": format!("{sid}\u{0}")}).to_string().into_bytes()),
            Status(400, -32602),
        ),
        row(
            "http: workdir symlinked into R1_HOME",
            http_post("/v1/sessions", auth(), json!({"workdir": fx.link_into_home}).to_string().into_bytes()),
            Status(400, -32602),
        ),
        Row {
            skip: readonly_skip.clone(),
            ..row(
                "http: workdir without write access",
                http_post("/v1/sessions", auth(), json!({"workdir": readonly_path}).to_string().into_bytes()),
                Status(400, -32602),
            )
        },
        // ---- HTTP: Host pin
        row(
            "http: non-loopback Host",
            http_get("/v1/sessions", with_auth(&[h("host", &format!("192.168.1.10:{port}"))])),
            Status(403, -32004),
        ),
        row(
            "http: no Host",
            http_get("/v1/sessions", with_auth(&[h("host", "")])),
            Status(403, -32004),
        ),
        row(
            "http: rebinding Host evil.example",
            http_get("/v1/sessions", with_auth(&[h("host", &format!("evil.example:{port}"))])),
            Status(403, -32004),
        ),
        row(
            "http: rebinding Host 127.0.0.1.nip.io",
            http_get("/v1/sessions", with_auth(&[h("host", &format!("127.0.0.1.nip.io:{port}"))])),
            Status(403, -32004),
        ),
        row(
            "http: Host without a port",
            http_get("/v1/health", vec![h("host", "localhost")]),
            Status(403, -32004),
        ),
        row(
            "http: Host with another port",
            http_get("/v1/health", vec![h("host", &format!("localhost:{other_port}"))]),
            Status(403, -32004),
        ),
        row(
            "http: two Host headers",
            Probe::Raw(format!("GET /v1/health HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nHost: evil.example:{port}\r\n\r\n").into_bytes()),
            Status(403, -32004),
        ),
        // ---- HTTP: Origin pin
        row(
            "http: foreign Origin",
            http_get("/v1/sessions", with_auth(&[h("origin", "http://evil.example")])),
            Status(403, -32004),
        ),
        row(
            "http: Origin null (not allowed by default)",
            http_post("/v1/rpc", with_auth(&[h("origin", "null")]), rpc_line("daemon.info", json!({}))),
            Status(403, -32004),
        ),
        row(
            "http: Origin of another local port",
            http_get("/v1/sessions", with_auth(&[h("origin", &format!("http://127.0.0.1:{other_port}"))])),
            Status(403, -32004),
        ),
        row(
            "http: Origin localhost.evil.example",
            http_get("/v1/sessions", with_auth(&[h("origin", &format!("http://localhost.evil.example:{port}"))])),
            Status(403, -32004),
        ),
        row(
            "http: CORS preflight from a foreign Origin",
            Probe::Http {
                method: "OPTIONS",
                path: "/v1/rpc".into(),
                headers: vec![h("origin", "http://evil.example"), h("access-control-request-method", "POST")],
                body: Vec::new(),
            },
            Status(403, -32004),
        ),
        // ---- HTTP: the token in the wrong place, or wrong
        row(
            "http: token in the query string",
            http_get(&format!("/v1/sessions?token={}", fx.token), vec![]),
            Status(401, -32004),
        ),
        row(
            "http: token in a cookie",
            http_get("/v1/sessions", vec![h("cookie", &format!("token={}", fx.token))]),
            Status(401, -32004),
        ),
        row(
            "http: Authorization: Token <token>",
            http_get("/v1/sessions", vec![h("authorization", &format!("Token {}", fx.token))]),
            Status(401, -32004),
        ),
        row(
            "http: Authorization: Basic <token>",
            http_get("/v1/sessions", vec![h("authorization", &format!("Basic {}", fx.token))]),
            Status(401, -32004),
        ),
        row(
            "http: Bearer with no value",
            http_get("/v1/sessions", vec![h("authorization", "Bearer")]),
            Status(401, -32004),
        ),
        row(
            "http: Bearer and spaces",
            http_get("/v1/sessions", vec![h("authorization", "Bearer    ")]),
            Status(401, -32004),
        ),
        row(
            "http: wrong token of the right length",
            http_get("/v1/sessions", vec![h("authorization", &format!("Bearer {wrong_token}"))]),
            Status(401, -32004),
        ),
        row(
            "http: token with its last character changed",
            http_post("/v1/rpc", vec![h("authorization", &format!("Bearer {last_flipped}"))], rpc_line("daemon.info", json!({}))),
            Status(401, -32004),
        ),
        row(
            "http: token with one character more",
            http_get("/v1/sessions", vec![h("authorization", &format!("Bearer {}0", fx.token))]),
            Status(401, -32004),
        ),
        row(
            "http: two Authorization headers (wrong, then right)",
            Probe::Raw(format!("GET /v1/sessions HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Bearer {wrong_token}\r\nAuthorization: {bearer}\r\n\r\n").into_bytes()),
            Status(401, -32004),
        ),
        row(
            "http: a header sent one byte per second",
            Probe::SlowHeader,
            TimedOut,
        ),
        // ---- WebSocket
        row(
            "ws: a message of 16 MiB + 1 bytes",
            ws("/v1/ws", vec![], Some(Message::text("x".repeat(LIMIT + 1)))),
            WsClose(1009),
        ),
        row(
            "ws: a text frame that is not UTF-8",
            ws("/v1/ws", vec![], Some(Message::Frame(Frame::message(b"\"\xff\xfe\"".to_vec(), OpCode::Data(Data::Text), true)))),
            WsClose(1007),
        ),
        row(
            "ws: a binary frame that is not UTF-8",
            ws("/v1/ws", vec![], Some(Message::binary(b"\xff\xfe\xfd".to_vec()))),
            Rpc(-32700),
        ),
        row(
            "ws: invalid UTF-8 inside a JSON string (binary frame)",
            ws("/v1/ws", vec![], Some(Message::binary(invalid_utf8_in_string))),
            Rpc(-32700),
        ),
        row(
            "ws: arrays nested 100,000 deep",
            ws("/v1/ws", vec![], text(deep_array(100_000))),
            Rpc(-32700),
        ),
        row(
            "ws: a batch of 100,000 requests",
            ws("/v1/ws", vec![], text(big_batch(100_000))),
            Rpc(-32005),
        ),
        row(
            "ws: session id ../../etc",
            ws("/v1/ws", vec![], text(rpc_line("session.subscribe", json!({"session_id": "../../etc"})))),
            Rpc(-32602),
        ),
        row(
            "ws: session route with id ..",
            ws("/v1/sessions/../ws", vec![], None),
            WsRefused(400),
        ),
        row(
            "ws: rebinding Host",
            ws("/v1/ws", vec![h("host", &format!("evil.example:{port}"))], None),
            WsRefused(403),
        ),
        row(
            "ws: foreign Origin",
            ws("/v1/ws", vec![h("origin", "http://evil.example")], None),
            WsRefused(403),
        ),
        row(
            "ws: Origin null",
            ws("/v1/ws", vec![h("origin", "null")], None),
            WsRefused(403),
        ),
        row(
            "ws: token in the query string",
            ws(&format!("/v1/ws?token={}", fx.token), vec![h("sec-websocket-protocol", "")], None),
            WsRefused(401),
        ),
        row(
            "ws: token in an Authorization header",
            ws("/v1/ws", vec![h("sec-websocket-protocol", ""), h("authorization", &bearer)], None),
            WsRefused(401),
        ),
        row(
            "ws: r1.bearer with no token",
            ws("/v1/ws", vec![h("sec-websocket-protocol", "r1.bearer")], None),
            WsRefused(401),
        ),
        row(
            "ws: wrong token of the right length",
            ws("/v1/ws", vec![proto(&wrong_token)], None),
            WsRefused(401),
        ),
        row(
            "ws: two tokens offered",
            ws("/v1/ws", vec![h("sec-websocket-protocol", &format!("r1.bearer, {wrong_token}, {}", fx.token))], None),
            WsRefused(401),
        ),
    ]
}

async fn run_row(fx: &Fixture, r: &Row) {
    let name = r.name.as_str();
    match (&r.probe, r.expect) {
        (Probe::Unix(bytes), Expect::Rpc(code) | Expect::RpcThenClose(code)) => {
            let mut c = UnixConn::connect(&fx.sock).await;
            c.send(bytes).await;
            let answer = c
                .recv()
                .await
                .unwrap_or_else(|| panic!("{name}: closed without an answer"));
            assert_rpc_error(name, &answer, code);
            if matches!(r.expect, Expect::RpcThenClose(_)) {
                assert!(
                    c.recv().await.is_none(),
                    "{name}: the connection stays open"
                );
            } else {
                c.send(&rpc_line("daemon.info", json!({}))).await;
                let again = c.recv().await.expect("still open");
                assert!(again["result"]["pid"].is_u64(), "{name}: then {again}");
            }
        }
        (
            Probe::Http {
                method,
                path,
                headers,
                body,
            },
            Expect::Status(status, code),
        ) => {
            let mut hs: Vec<(String, String)> = headers
                .iter()
                .filter(|(k, v)| !(k == "host" && v.is_empty()))
                .cloned()
                .collect();
            if !headers.iter().any(|(k, _)| k == "host") {
                hs.push(h("host", &fx.host()));
            }
            let resp = http(fx.port, method, path, &hs, body).await;
            assert_eq!(resp.status, status, "{name}: status (body {})", resp.body);
            let body = if resp.body.get("error").is_some() {
                resp.body.clone()
            } else {
                // /v1/rpc answers 200 with the JSON-RPC response itself.
                json!({"error": resp.body["error"]})
            };
            assert_eq!(body["error"]["code"], code, "{name}: {}", resp.body);
        }
        (Probe::Raw(bytes), Expect::Status(status, code)) => {
            let out = raw_tcp(fx.port, bytes).await;
            let text = String::from_utf8_lossy(&out);
            assert!(
                text.starts_with(&format!("HTTP/1.1 {status} ")),
                "{name}: {text}"
            );
            assert!(text.contains(&code.to_string()), "{name}: {text}");
        }
        (Probe::SlowHeader, Expect::TimedOut) => {
            let head = format!(
                "GET /v1/health HTTP/1.1\r\nHost: 127.0.0.1:{}\r\n\r\n",
                fx.port
            );
            let (closed, got) = slow_header(fx.port, head.as_bytes(), Duration::from_secs(1)).await;
            let closed = closed.unwrap_or_else(|| panic!("{name}: the whole head went through"));
            assert!(
                closed < HEADER_TIMEOUT + Duration::from_secs(2),
                "{name}: closed only after {closed:?}"
            );
            assert!(
                !String::from_utf8_lossy(&got).contains(" 200 "),
                "{name}: answered {}",
                String::from_utf8_lossy(&got)
            );
        }
        (
            Probe::Ws {
                path,
                headers,
                send,
            },
            expect,
        ) => {
            let mut hs: Vec<(String, String)> = Vec::new();
            if !headers.iter().any(|(k, _)| k == "sec-websocket-protocol") {
                hs.push(h(
                    "sec-websocket-protocol",
                    &format!("r1.bearer, {}", fx.token),
                ));
            }
            hs.extend(
                headers
                    .iter()
                    .filter(|(k, v)| !(k == "sec-websocket-protocol" && v.is_empty()))
                    .cloned(),
            );
            let result = ws_connect(fx.port, path, &hs).await;
            match (result, expect) {
                (Err(got), Expect::WsRefused(want)) => {
                    assert_eq!(got, want, "{name}: refusal status");
                }
                (Ok(mut w), Expect::Rpc(code)) => {
                    let m = send.clone().expect("a message to send");
                    w.send(m).await.unwrap();
                    match ws_next(&mut w).await {
                        WsHeard::Text(v) => assert_rpc_error(name, &v, code),
                        other => panic!("{name}: {other:?}"),
                    }
                    w.send(Message::text(
                        String::from_utf8(rpc_line("daemon.info", json!({}))).unwrap(),
                    ))
                    .await
                    .unwrap();
                    match ws_next(&mut w).await {
                        WsHeard::Text(v) => {
                            assert!(v["result"]["pid"].is_u64(), "{name}: then {v}")
                        }
                        other => panic!("{name}: then {other:?}"),
                    }
                }
                (Ok(mut w), Expect::WsClose(code)) => {
                    let m = send.clone().expect("a message to send");
                    // The server may stop reading part-way; what matters is the close.
                    let _ = w.send(m).await;
                    match ws_next(&mut w).await {
                        WsHeard::Close(got) => assert_eq!(got, Some(code), "{name}: close code"),
                        other => panic!("{name}: {other:?}"),
                    }
                }
                (Ok(_), e) => panic!("{name}: upgraded, expected {e:?}"),
                (Err(s), e) => panic!("{name}: refused with {s}, expected {e:?}"),
            }
        }
        (_, e) => panic!("{name}: no runner for this probe with {e:?}"),
    }
}

fn assert_rpc_error(name: &str, v: &Value, code: i64) {
    assert_eq!(v["jsonrpc"], "2.0", "{name}: {v}");
    assert_eq!(v["error"]["code"], code, "{name}: {v}");
    assert!(v["error"]["message"].is_string(), "{name}: {v}");
    assert!(v["error"]["data"]["kind"].is_string(), "{name}: {v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_input_matrix() {
    let t0 = Instant::now();
    let fx = Fixture::start_with(true).await;
    let rows = rows(&fx);
    assert!(rows.len() >= 40, "the matrix has {} rows", rows.len());
    let sessions_before = std::fs::read_dir(fx.home.join("sessions")).unwrap().count();
    let (mut ran, mut skipped) = (0, 0);
    for r in &rows {
        if let Some(why) = &r.skip {
            println!("SKIP {}: {why}", r.name);
            skipped += 1;
            continue;
        }
        let started = Instant::now();
        run_row(&fx, r).await;
        fx.check_healthy(&r.name).await;
        println!("ok   {} ({:?})", r.name, started.elapsed());
        ran += 1;
    }
    // No hostile row created a session.
    assert_eq!(
        std::fs::read_dir(fx.home.join("sessions")).unwrap().count(),
        sessions_before,
        "a hostile request created a session"
    );
    println!(
        "hostile input matrix: {ran} rows passed, {skipped} skipped, in {:?}",
        t0.elapsed()
    );
    fx.handle.stop().await.unwrap();
}

// ---------------------------------------------------------------------------
// Regressions for what the matrix and the fuzzers found (each also a row or a seed)

/// A WebSocket text frame that is not UTF-8 used to drop the connection without a
/// close frame; RFC 6455 §8.1 fails it with 1007.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn regression_ws_text_not_utf8_closes_1007() {
    let fx = Fixture::start().await;
    let proto = h(
        "sec-websocket-protocol",
        &format!("r1.bearer, {}", fx.token),
    );
    let mut w = ws_connect(fx.port, "/v1/ws", &[proto]).await.unwrap();
    let frame = Frame::message(
        b"{\"a\":\"\xc3\x28\"}".to_vec(),
        OpCode::Data(Data::Text),
        true,
    );
    w.send(Message::Frame(frame)).await.unwrap();
    match ws_next(&mut w).await {
        WsHeard::Close(code) => assert_eq!(code, Some(1007)),
        other => panic!("{other:?}"),
    }
    fx.check_healthy("after the 1007").await;
    fx.handle.stop().await.unwrap();
}

/// A driver's kind with a quote or backslash (an `exec` child prints
/// `{"kind":"agent.\"q\"\\x"}`) was written by the journal encoder as JSON escapes
/// that the line parser then refused ("expected a borrowed string"): the append
/// failed and the record was lost. Found by the journal_line fuzzer's round trip.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn regression_driver_kind_with_escapes_is_journaled() {
    let fx = Fixture::start().await;
    let kind = "agent.\"q\"\\x\u{1}";
    let line = json!({"kind": kind, "data": {"n": 1}}).to_string();
    let started = unix_call(
        &fx.sock,
        "session.start",
        json!({"workdir": fx.work, "driver": "exec", "command": ["sh", "-c", "printf '%s\\n' \"$LINE\"; read -r _"], "env": {"LINE": line}}),
    )
    .await;
    let id = started["result"]["session_id"]
        .as_str()
        .unwrap_or_else(|| panic!("{started}"))
        .to_owned();
    // Follow the session until the record lands (or the session ends without it).
    let mut c = UnixConn::connect(&fx.sock).await;
    c.send(&rpc_line(
        "session.subscribe",
        json!({"session_id": id, "since_seq": 0}),
    ))
    .await;
    let got = loop {
        let v = c.recv().await.expect("open");
        if v["method"] == "$/event" {
            let k = v["params"]["kind"].as_str().unwrap_or_default().to_owned();
            if k == kind || k == "session.ended" {
                break v;
            }
        }
    };
    assert_eq!(got["params"]["kind"], kind, "{got}");
    assert_eq!(got["params"]["data"]["n"], 1, "{got}");
    let read = unix_call(&fx.sock, "journal.read", json!({"session_id": id})).await;
    let kinds: Vec<&str> = read["result"]["records"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["kind"].as_str())
        .collect();
    assert!(kinds.contains(&kind), "{kinds:?}");
    fx.check_healthy("after the escaped kind").await;
    fx.handle.stop().await.unwrap();
}

/// A batch over the limit was built in full before being refused: 16 MiB of
/// `[1,1,1,…]` made eight million JSON values (hundreds of MiB) per message. Now the
/// elements past the limit are only counted.
#[test]
fn regression_oversized_batch_is_counted_not_built() {
    use r1_core::rpc::envelope::{Incoming, parse};
    let n = LIMIT / 2 - 1;
    let mut msg = vec![b'['; 1];
    for i in 0..n {
        if i > 0 {
            msg.push(b',');
        }
        msg.push(b'1');
    }
    msg.push(b']');
    let (answer, peak) = peak_alloc(|| parse(&msg));
    match answer {
        Incoming::Reject(e) => {
            assert_eq!(e.code, -32005);
            assert!(
                e.message.contains(&format!("batch of {n} requests")),
                "{}",
                e.message
            );
        }
        other => panic!("{other:?}"),
    }
    assert!(
        peak < 4 << 20,
        "refusing a batch of {n} allocated {} MiB",
        peak >> 20
    );
}
