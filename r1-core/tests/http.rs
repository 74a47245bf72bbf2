//! The loopback listener end to end (DESIGN §4, §7): every auth rule over HTTP and
//! WebSocket, the REST mirror, `/v1/rpc`, the journal download, SSE and WebSocket
//! subscriptions, limits and keepalive — against real daemons on ephemeral ports.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use hmac::{Hmac, Mac};
use http::{HeaderMap, Request};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use r1_core::server::http::HttpConfig;
use r1_core::{Daemon, DaemonConfig, DaemonHandle};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpStream, UnixStream};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{self, Message};

/// Longest any single step may take before the test fails (not a sleep).
const STEP: Duration = Duration::from_secs(10);

const EXT_ORIGIN: &str = "chrome-extension://abcdefghijklmnopabcdefghijklmnop";

async fn timely<F: std::future::Future>(what: &str, f: F) -> F::Output {
    tokio::time::timeout(STEP, f)
        .await
        .unwrap_or_else(|_| panic!("timed out: {what}"))
}

// ---------------------------------------------------------------------------
// Daemons

struct TestDaemon {
    _dir: Arc<tempfile::TempDir>,
    home: PathBuf,
    work: PathBuf,
    sock: PathBuf,
    handle: DaemonHandle,
    port: u16,
}

/// Test timings: fast pings and SSE keepalives, generous pong timeout (test clients
/// do not read all the time), short close waits.
fn test_http_config() -> HttpConfig {
    HttpConfig {
        ws_ping_interval: Duration::from_millis(200),
        ws_pong_timeout: Duration::from_secs(30),
        ws_close_timeout: Duration::from_secs(1),
        sse_keepalive: Duration::from_millis(200),
        ..HttpConfig::default()
    }
}

impl TestDaemon {
    async fn start() -> TestDaemon {
        Self::start_with(|c| c).await
    }

    async fn start_with(f: impl FnOnce(DaemonConfig) -> DaemonConfig) -> TestDaemon {
        let dir = Arc::new(tempfile::tempdir().unwrap());
        Self::start_in(dir, f).await
    }

    /// Starts a daemon whose home is `dir/home` (again, if one ran there before).
    async fn start_in(
        dir: Arc<tempfile::TempDir>,
        f: impl FnOnce(DaemonConfig) -> DaemonConfig,
    ) -> TestDaemon {
        let home = dir.path().join("home");
        let work = dir.path().join("work");
        let sock = dir.path().join("s.sock");
        std::fs::create_dir_all(&work).unwrap();
        let cfg = f(DaemonConfig {
            home: Some(home.clone()),
            sock_path: Some(sock.clone()),
            ..Default::default()
        });
        let handle = Daemon::start(cfg).await.expect("daemon starts");
        handle.state().set_http_config(test_http_config());
        let port = handle.port().expect("tcp on");
        TestDaemon {
            _dir: dir,
            home,
            work,
            sock,
            handle,
            port,
        }
    }

    fn token(&self) -> String {
        self.handle.token().expose().to_owned()
    }

    fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// A request with the right Host and the master token.
    async fn req(&self, method: &str, path: &str, body: Option<Value>) -> Resp {
        let auth = format!("Bearer {}", self.token());
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        send(
            self.port,
            method,
            path,
            &[("host", &self.host()), ("authorization", &auth)],
            body.as_bytes(),
        )
        .await
    }

    /// A call over the unix socket (privileged methods live only there).
    async fn unix(&self, method: &str, params: Value) -> Value {
        unix_call(&self.sock, method, params).await
    }

    async fn start_session(&self) -> String {
        let r = self
            .req("POST", "/v1/sessions", Some(json!({"workdir": self.work})))
            .await;
        assert_eq!(r.status, 201, "{}", r.text());
        r.json()["session_id"].as_str().unwrap().to_owned()
    }

    async fn ws(&self, path: &str) -> WsClient {
        let proto = format!("r1.bearer, {}", self.token());
        let (ws, resp) = ws_connect(self.port, path, Some(&proto), &[])
            .await
            .expect("websocket connects");
        assert_eq!(resp.status(), 101);
        WsClient::new(ws)
    }

    /// Runs `text` in the shell session and returns its events up to `tool.end`
    /// (readiness comes from a subscription, not a sleep).
    async fn run(&self, id: &str, text: &str) -> Vec<Value> {
        let mut c = self.ws("/v1/ws").await;
        c.call("session.subscribe", json!({"session_id": id}))
            .await
            .result();
        c.call("session.send", json!({"session_id": id, "text": text}))
            .await
            .result();
        c.events_until(|e| e["kind"] == "tool.end").await
    }
}

async fn unix_call(sock: &Path, method: &str, params: Value) -> Value {
    let s = UnixStream::connect(sock).await.unwrap();
    let (r, mut w) = s.into_split();
    let line = json!({"jsonrpc":"2.0","id":1,"method":method,"params":params}).to_string();
    w.write_all(format!("{line}\n").as_bytes()).await.unwrap();
    let mut lines = BufReader::new(r).lines();
    loop {
        let l = timely("unix answer", lines.next_line())
            .await
            .unwrap()
            .expect("answer");
        let v: Value = serde_json::from_str(&l).unwrap();
        if v["id"] == 1 {
            return v
                .get("result")
                .cloned()
                .unwrap_or_else(|| panic!("{method} failed: {v}"));
        }
    }
}

// ---------------------------------------------------------------------------
// HTTP

#[derive(Debug)]
struct Resp {
    status: u16,
    headers: HeaderMap,
    body: Bytes,
}

impl Resp {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// Opens a connection and sends one request with exactly `headers` (hyper's client
/// connection adds no Host of its own). Returns the head and the body stream.
async fn open(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> hyper::Response<Incoming> {
    let stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let (mut tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let mut b = Request::builder().method(method).uri(path);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    let req = b.body(Full::new(Bytes::copy_from_slice(body))).unwrap();
    timely("response head", tx.send_request(req)).await.unwrap()
}

/// One request, whole body read (an event stream's body is left unread).
async fn send(port: u16, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Resp {
    let resp = open(port, method, path, headers, body).await;
    let (parts, body) = resp.into_parts();
    let streaming = parts
        .headers
        .get("content-type")
        .is_some_and(|v| v == "text/event-stream");
    let body = if streaming {
        Bytes::new()
    } else {
        timely("response body", body.collect())
            .await
            .unwrap()
            .to_bytes()
    };
    Resp {
        status: parts.status.as_u16(),
        headers: parts.headers,
        body,
    }
}

fn assert_security_headers(h: &HeaderMap, what: &str) {
    assert_eq!(h.get("vary").unwrap(), "Origin", "{what}");
    assert_eq!(h.get("cache-control").unwrap(), "no-store", "{what}");
    assert_eq!(
        h.get("x-content-type-options").unwrap(),
        "nosniff",
        "{what}"
    );
}

// ---------------------------------------------------------------------------
// SSE

#[derive(Debug, Clone, PartialEq)]
enum Sse {
    Event {
        id: Option<String>,
        event: String,
        data: Value,
    },
    Comment(String),
}

struct SseReader {
    body: Incoming,
    buf: String,
}

impl SseReader {
    fn new(body: Incoming) -> SseReader {
        SseReader {
            body,
            buf: String::new(),
        }
    }

    /// The next event or comment block.
    async fn next(&mut self) -> Sse {
        loop {
            if let Some(end) = self.buf.find("\n\n") {
                let block: String = self.buf.drain(..end + 2).collect();
                return parse_sse_block(block.trim_end_matches('\n'));
            }
            let frame = timely("sse chunk", self.body.frame())
                .await
                .expect("stream open")
                .unwrap();
            if let Ok(data) = frame.into_data() {
                self.buf.push_str(std::str::from_utf8(&data).unwrap());
            }
        }
    }

    async fn event(&mut self) -> (Option<String>, String, Value) {
        loop {
            if let Sse::Event { id, event, data } = self.next().await {
                return (id, event, data);
            }
        }
    }
}

fn parse_sse_block(block: &str) -> Sse {
    if let Some(c) = block.strip_prefix(':') {
        return Sse::Comment(c.trim().to_owned());
    }
    let (mut id, mut event, mut data) = (None, String::new(), Value::Null);
    for line in block.lines() {
        let (k, v) = line.split_once(": ").unwrap_or((line, ""));
        match k {
            "id" => id = Some(v.to_owned()),
            "event" => event = v.to_owned(),
            "data" => data = serde_json::from_str(v).unwrap(),
            other => panic!("unexpected SSE field {other:?} in {block:?}"),
        }
    }
    Sse::Event { id, event, data }
}

async fn ticket(d: &TestDaemon, id: &str) -> String {
    let r = d
        .req("POST", "/v1/sse-ticket", Some(json!({"session_id": id})))
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()["ticket"].as_str().unwrap().to_owned()
}

// ---------------------------------------------------------------------------
// WebSocket

type Ws = WebSocketStream<TcpStream>;

async fn ws_connect(
    port: u16,
    path: &str,
    protocols: Option<&str>,
    extra: &[(&str, &str)],
) -> Result<(Ws, tungstenite::handshake::client::Response), tungstenite::Error> {
    let mut req = format!("ws://127.0.0.1:{port}{path}")
        .into_client_request()
        .unwrap();
    if let Some(p) = protocols {
        req.headers_mut()
            .insert("sec-websocket-protocol", p.parse().unwrap());
    }
    for (k, v) in extra {
        req.headers_mut().insert(
            http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            v.parse().unwrap(),
        );
    }
    let stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    timely(
        "websocket handshake",
        tokio_tungstenite::client_async(req, stream),
    )
    .await
}

struct WsClient {
    ws: Ws,
    next_id: u64,
    notes: Vec<Value>,
}

/// A JSON-RPC response.
struct Answer(Value);

impl Answer {
    fn result(&self) -> Value {
        self.0
            .get("result")
            .cloned()
            .unwrap_or_else(|| panic!("call failed: {}", self.0))
    }
}

impl WsClient {
    fn new(ws: Ws) -> WsClient {
        WsClient {
            ws,
            next_id: 1,
            notes: Vec::new(),
        }
    }

    /// The next JSON text message (pings are answered by tungstenite while reading).
    async fn recv(&mut self) -> Value {
        loop {
            let m = timely("websocket message", self.ws.next())
                .await
                .expect("socket open")
                .unwrap();
            match m {
                Message::Text(t) => return serde_json::from_str(&t).unwrap(),
                Message::Close(c) => panic!("closed: {c:?}"),
                _ => {}
            }
        }
    }

    async fn call(&mut self, method: &str, params: Value) -> Answer {
        let id = self.next_id;
        self.next_id += 1;
        let msg = json!({"jsonrpc":"2.0","id":id,"method":method,"params":params});
        self.ws.send(Message::text(msg.to_string())).await.unwrap();
        loop {
            let v = self.recv().await;
            if v.get("id") == Some(&json!(id)) {
                return Answer(v);
            }
            self.notes.push(v);
        }
    }

    async fn note(&mut self, method: &str) -> Value {
        if let Some(i) = self.notes.iter().position(|n| n["method"] == method) {
            return self.notes.remove(i)["params"].clone();
        }
        loop {
            let v = self.recv().await;
            if v["method"] == method {
                return v["params"].clone();
            }
            self.notes.push(v);
        }
    }

    async fn events_until(&mut self, pred: impl Fn(&Value) -> bool) -> Vec<Value> {
        let mut out = Vec::new();
        loop {
            let e = self.note("$/event").await;
            let stop = pred(&e);
            out.push(e);
            if stop {
                return out;
            }
        }
    }

    /// Reads until the server's close frame.
    async fn close_frame(&mut self) -> Option<CloseFrame> {
        loop {
            match timely("close frame", self.ws.next()).await {
                Some(Ok(Message::Close(c))) => return c,
                Some(Ok(_)) => {}
                Some(Err(e)) => panic!("no close frame: {e}"),
                None => return None,
            }
        }
    }
}

fn assert_contiguous(events: &[Value], first: u64) {
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e["seq"].as_u64(), Some(first + i as u64), "{events:#?}");
    }
}

// ---------------------------------------------------------------------------
// The auth matrix

#[derive(Clone)]
enum Host {
    Right,
    Missing,
    Is(String),
}

#[derive(Clone)]
enum Via {
    Http {
        method: &'static str,
        path: String,
        body: String,
    },
    Ws {
        path: String,
        protocols: Option<String>,
        /// A call made once connected, and the error code it must get.
        call: Option<(&'static str, Value, i64)>,
    },
}

#[derive(Clone)]
struct Row {
    name: &'static str,
    /// 0: the default daemon; 1: the one with `--allow-origin null` and the extension.
    daemon: usize,
    via: Via,
    host: Host,
    headers: Vec<(String, String)>,
    status: u16,
    /// Headers the answer must carry (`Some`) or lack (`None`).
    expect: Vec<(&'static str, Option<String>)>,
    /// JSON-RPC error code in the body (`body.error.code`).
    error_code: Option<i64>,
}

fn http_row(name: &'static str, method: &'static str, path: &str) -> Row {
    Row {
        name,
        daemon: 0,
        via: Via::Http {
            method,
            path: path.to_owned(),
            body: String::new(),
        },
        host: Host::Right,
        headers: Vec::new(),
        status: 200,
        expect: Vec::new(),
        error_code: None,
    }
}

fn ws_row(name: &'static str, path: &str, protocols: Option<String>) -> Row {
    Row {
        via: Via::Ws {
            path: path.to_owned(),
            protocols,
            call: None,
        },
        status: 101,
        ..http_row(name, "GET", path)
    }
}

impl Row {
    fn on(mut self, daemon: usize) -> Row {
        self.daemon = daemon;
        self
    }
    fn bearer(self, token: &str) -> Row {
        self.header("authorization", &format!("Bearer {token}"))
    }
    fn header(mut self, k: &str, v: &str) -> Row {
        self.headers.push((k.to_owned(), v.to_owned()));
        self
    }
    fn host(mut self, h: Host) -> Row {
        self.host = h;
        self
    }
    fn body(mut self, b: Value) -> Row {
        if let Via::Http { body, .. } = &mut self.via {
            *body = b.to_string();
        }
        self
    }
    fn call(mut self, method: &'static str, params: Value, code: i64) -> Row {
        if let Via::Ws { call, .. } = &mut self.via {
            *call = Some((method, params, code));
        }
        self
    }
    fn status(mut self, s: u16) -> Row {
        self.status = s;
        self
    }
    fn has(mut self, k: &'static str, v: &str) -> Row {
        self.expect.push((k, Some(v.to_owned())));
        self
    }
    fn lacks(mut self, k: &'static str) -> Row {
        self.expect.push((k, None));
        self
    }
    fn code(mut self, c: i64) -> Row {
        self.error_code = Some(c);
        self
    }
    /// 401 with the challenge.
    fn unauthorized(self) -> Row {
        self.status(401)
            .has("www-authenticate", "Bearer realm=\"r1\"")
    }
}

async fn run_row(row: &Row, daemons: &[&TestDaemon]) {
    let d = daemons[row.daemon];
    let host = match &row.host {
        Host::Right => Some(d.host()),
        Host::Missing => None,
        Host::Is(h) => Some(h.clone()),
    };
    let (status, headers, body): (u16, HeaderMap, Value) = match &row.via {
        Via::Http { method, path, body } => {
            let mut hs: Vec<(&str, &str)> = row
                .headers
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            if let Some(h) = &host {
                hs.push(("host", h));
            }
            let r = send(d.port, method, path, &hs, body.as_bytes()).await;
            let body = r.json();
            (r.status, r.headers, body)
        }
        Via::Ws {
            path,
            protocols,
            call,
        } => {
            let mut hs: Vec<(&str, &str)> = row
                .headers
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            let h = host.expect("websocket rows send a Host");
            hs.push(("host", &h));
            match ws_connect(d.port, path, protocols.as_deref(), &hs).await {
                Ok((ws, resp)) => {
                    let mut body = Value::Null;
                    if let Some((method, params, _)) = call {
                        let mut c = WsClient::new(ws);
                        body = c.call(method, params.clone()).await.0;
                    }
                    (resp.status().as_u16(), resp.headers().clone(), body)
                }
                Err(tungstenite::Error::Http(resp)) => {
                    let body = resp
                        .body()
                        .as_deref()
                        .and_then(|b| serde_json::from_slice(b).ok())
                        .unwrap_or(Value::Null);
                    (resp.status().as_u16(), resp.headers().clone(), body)
                }
                Err(e) => panic!("{}: handshake failed oddly: {e}", row.name),
            }
        }
    };
    assert_eq!(status, row.status, "{}: status (body {body})", row.name);
    assert_security_headers(&headers, row.name);
    for (k, v) in &row.expect {
        let got = headers.get(*k).and_then(|v| v.to_str().ok());
        assert_eq!(got, v.as_deref(), "{}: header {k}", row.name);
    }
    let want_code = row.error_code.or(match &row.via {
        Via::Ws {
            call: Some((_, _, c)),
            ..
        } => Some(*c),
        _ => None,
    });
    if let Some(c) = want_code {
        assert_eq!(
            body["error"]["code"], c,
            "{}: error code in {body}",
            row.name
        );
    }
    if status >= 400 {
        assert!(
            body["error"]["code"].is_i64(),
            "{}: refusals carry an error object: {body}",
            row.name
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_matrix() {
    // Daemon A: a previous start in the same home, then the one under test.
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let previous = TestDaemon::start_in(Arc::clone(&dir), |c| c).await;
    let previous_token = previous.token();
    previous.handle.stop().await.unwrap();
    let a = TestDaemon::start_in(dir, |c| c).await;
    // Daemon B allows `null` and an extension.
    let b = TestDaemon::start_with(|c| DaemonConfig {
        allow_origins: vec!["null".into(), EXT_ORIGIN.into()],
        ..c
    })
    .await;
    let id = a.start_session().await;

    let rotated_away = a.token();
    a.unix("daemon.rotate_token", json!({})).await;
    let master = a.token();
    assert_ne!(master, rotated_away);
    let expired = a
        .unix("daemon.mint_token", json!({"scope": "read", "ttl_s": 60}))
        .await["token"]
        .as_str()
        .unwrap()
        .to_owned();
    a.handle.state().auth.age_scoped(Duration::from_secs(61));
    let read = a
        .unix("daemon.mint_token", json!({"scope": "read", "ttl_s": 60}))
        .await["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let stale_ticket = ticket(&a, &id).await;
    a.handle.state().auth.age_tickets(Duration::from_secs(61));
    let fresh_ticket = ticket(&a, &id).await;
    let b_master = b.token();
    let wrong = "0".repeat(64);
    let other_port = format!("localhost:{}", a.port.wrapping_add(1).max(1));
    let proto = |t: &str| Some(format!("r1.bearer, {t}"));
    let sse = |t: &str| format!("/v1/sessions/{id}/sse?ticket={t}&since_seq=0");
    let pause = format!("/v1/sessions/{id}/pause");
    let pause_rpc =
        json!({"jsonrpc":"2.0","id":1,"method":"session.pause","params":{"session_id": id}});
    let own_origin = format!("http://127.0.0.1:{}", a.port);

    let rows = vec![
        // Bearer on HTTP.
        http_row("no token", "GET", "/v1/sessions").unauthorized(),
        http_row("wrong token", "GET", "/v1/sessions")
            .bearer(&wrong)
            .unauthorized(),
        http_row("previous instance's token", "GET", "/v1/sessions")
            .bearer(&previous_token)
            .unauthorized(),
        http_row("rotated-away token", "GET", "/v1/sessions")
            .bearer(&rotated_away)
            .unauthorized(),
        http_row("not a bearer scheme", "GET", "/v1/sessions")
            .header("authorization", &format!("Basic {master}"))
            .unauthorized(),
        http_row("master token", "GET", "/v1/sessions").bearer(&master),
        http_row("scheme in lower case", "GET", "/v1/sessions")
            .header("authorization", &format!("bearer {master}")),
        http_row("scheme in upper case", "GET", "/v1/sessions")
            .header("authorization", &format!("BEARER {master}")),
        http_row("read token reads", "GET", "/v1/sessions").bearer(&read),
        http_row("read token on a REST write", "POST", &pause)
            .bearer(&read)
            .status(403)
            .code(-32004),
        http_row("read token on a write over /v1/rpc", "POST", "/v1/rpc")
            .bearer(&read)
            .body(pause_rpc.clone())
            .code(-32004),
        http_row("expired scoped token", "GET", "/v1/sessions")
            .bearer(&expired)
            .unauthorized(),
        // Host pin, on public routes too.
        http_row("foreign Host", "GET", "/v1/health")
            .host(Host::Is(format!("evil.example:{}", a.port)))
            .status(403),
        http_row("missing Host", "GET", "/v1/health")
            .host(Host::Missing)
            .status(403),
        http_row("empty Host", "GET", "/v1/health")
            .host(Host::Is(String::new()))
            .status(403),
        http_row("Host with another port", "GET", "/v1/sessions")
            .bearer(&master)
            .host(Host::Is(other_port.clone()))
            .status(403),
        http_row("localhost Host", "GET", "/v1/health")
            .host(Host::Is(format!("localhost:{}", a.port))),
        http_row("[::1] Host", "GET", "/v1/health").host(Host::Is(format!("[::1]:{}", a.port))),
        // Origin pin, on every method.
        http_row("foreign Origin on GET", "GET", "/v1/health")
            .header("origin", "http://evil.example")
            .status(403)
            .lacks("access-control-allow-origin"),
        http_row("foreign Origin on POST", "POST", "/v1/rpc")
            .bearer(&master)
            .header("origin", "http://evil.example")
            .body(json!({"jsonrpc":"2.0","id":1,"method":"session.list"}))
            .status(403),
        http_row("foreign Origin on OPTIONS", "OPTIONS", "/v1/sessions")
            .header("origin", "http://evil.example")
            .header("access-control-request-method", "POST")
            .status(403)
            .lacks("access-control-allow-origin"),
        http_row("preflight without Origin", "OPTIONS", "/v1/sessions").status(403),
        http_row("own Origin: no CORS headers", "GET", "/v1/sessions")
            .bearer(&master)
            .header("origin", &own_origin)
            .lacks("access-control-allow-origin"),
        http_row("null Origin refused by default", "GET", "/v1/health")
            .header("origin", "null")
            .status(403),
        http_row("null Origin when allowed", "GET", "/v1/health")
            .on(1)
            .header("origin", "null")
            .has("access-control-allow-origin", "null"),
        http_row("extension preflight", "OPTIONS", "/v1/sessions")
            .on(1)
            .header("origin", EXT_ORIGIN)
            .header("access-control-request-method", "POST")
            .header(
                "access-control-request-headers",
                "authorization, content-type",
            )
            .status(204)
            .has("access-control-allow-origin", EXT_ORIGIN)
            .has(
                "access-control-allow-headers",
                "authorization, content-type, last-event-id",
            )
            .has("access-control-allow-methods", "GET, POST")
            .has("access-control-max-age", "600"),
        http_row("extension request", "GET", "/v1/sessions")
            .on(1)
            .bearer(&b_master)
            .header("origin", EXT_ORIGIN)
            .has("access-control-allow-origin", EXT_ORIGIN),
        http_row("extension without a token", "GET", "/v1/sessions")
            .on(1)
            .header("origin", EXT_ORIGIN)
            .unauthorized()
            .has("access-control-allow-origin", EXT_ORIGIN),
        // SSE tickets: single use, 60 s.
        http_row("SSE ticket", "GET", &sse(&fresh_ticket)).has("content-type", "text/event-stream"),
        http_row("SSE ticket used twice", "GET", &sse(&fresh_ticket)).unauthorized(),
        http_row("SSE ticket after 60 s", "GET", &sse(&stale_ticket)).unauthorized(),
        http_row(
            "SSE without ticket",
            "GET",
            &format!("/v1/sessions/{id}/sse"),
        )
        .unauthorized(),
        http_row("SSE ticket from a read token", "POST", "/v1/sse-ticket")
            .bearer(&read)
            .body(json!({"session_id": id})),
        // WebSocket: subprotocol credentials, refused before the upgrade.
        ws_row("WS master token", "/v1/ws", proto(&master))
            .has("sec-websocket-protocol", "r1.bearer"),
        ws_row("WS without subprotocol", "/v1/ws", None).unauthorized(),
        ws_row(
            "WS subprotocol without token",
            "/v1/ws",
            Some("r1.bearer".into()),
        )
        .unauthorized(),
        ws_row("WS token without r1.bearer", "/v1/ws", Some(master.clone())).unauthorized(),
        ws_row("WS wrong token", "/v1/ws", proto(&wrong)).unauthorized(),
        ws_row(
            "WS previous instance's token",
            "/v1/ws",
            proto(&previous_token),
        )
        .unauthorized(),
        ws_row("WS rotated-away token", "/v1/ws", proto(&rotated_away)).unauthorized(),
        ws_row("WS expired scoped token", "/v1/ws", proto(&expired)).unauthorized(),
        ws_row("WS read token on a write", "/v1/ws", proto(&read)).call(
            "session.pause",
            json!({"session_id": id}),
            -32004,
        ),
        ws_row("WS foreign Origin", "/v1/ws", proto(&master))
            .header("origin", "http://evil.example")
            .status(403),
        ws_row("WS null Origin", "/v1/ws", proto(&master))
            .header("origin", "null")
            .status(403),
        ws_row("WS foreign Host", "/v1/ws", proto(&master))
            .host(Host::Is(format!("evil.example:{}", a.port)))
            .status(403),
        ws_row("WS Host with another port", "/v1/ws", proto(&master))
            .host(Host::Is(other_port))
            .status(403),
        ws_row("WS extension Origin", "/v1/ws", proto(&b_master))
            .on(1)
            .header("origin", EXT_ORIGIN)
            .has("sec-websocket-protocol", "r1.bearer"),
    ];
    for row in &rows {
        run_row(row, &[&a, &b]).await;
    }
    // The token never comes back in the 101.
    let (_, resp) = ws_connect(a.port, "/v1/ws", proto(&master).as_deref(), &[])
        .await
        .unwrap();
    let offered_back = resp.headers()["sec-websocket-protocol"].to_str().unwrap();
    assert!(!offered_back.contains(&master));
    a.handle.stop().await.unwrap();
    b.handle.stop().await.unwrap();
}

// ---------------------------------------------------------------------------
// Other auth behaviour

#[tokio::test]
async fn hello_proof_matches_the_token() {
    let d = TestDaemon::start().await;
    let nonce = "00112233445566778899aabbccddeeff";
    let r = send(
        d.port,
        "GET",
        &format!("/v1/hello?nonce={nonce}"),
        &[("host", &d.host())],
        b"",
    )
    .await;
    assert_eq!(r.status, 200);
    let v = r.json();
    assert_eq!(v["instance_id"], d.handle.instance_id());
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(d.token().as_bytes()).unwrap();
    mac.update(nonce.as_bytes());
    mac.update(d.handle.instance_id().as_bytes());
    assert_eq!(v["proof"], hex::encode(mac.finalize().into_bytes()));
    // A different token cannot produce it.
    let mut other = Hmac::<sha2::Sha256>::new_from_slice(b"not-the-token").unwrap();
    other.update(nonce.as_bytes());
    other.update(d.handle.instance_id().as_bytes());
    assert_ne!(v["proof"], hex::encode(other.finalize().into_bytes()));
    for bad in [
        "",
        "?nonce=abc",
        "?nonce=zz112233445566778899",
        &format!("?nonce={}", "a".repeat(130)),
    ] {
        let r = send(
            d.port,
            "GET",
            &format!("/v1/hello{bad}"),
            &[("host", &d.host())],
            b"",
        )
        .await;
        assert_eq!(r.status, 400, "{bad}: {}", r.text());
    }
    d.handle.stop().await.unwrap();
}

#[tokio::test]
async fn rotation_closes_master_websockets_with_1008() {
    let d = TestDaemon::start().await;
    let mut master_ws = d.ws("/v1/ws").await;
    let read = d
        .unix("daemon.mint_token", json!({"scope": "read", "ttl_s": 60}))
        .await["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let (scoped_ws, _) = ws_connect(d.port, "/v1/ws", Some(&format!("r1.bearer, {read}")), &[])
        .await
        .unwrap();
    let mut scoped_ws = WsClient::new(scoped_ws);
    master_ws.call("session.list", json!({})).await.result();
    d.unix("daemon.rotate_token", json!({})).await;
    let frame = master_ws.close_frame().await.expect("a close frame");
    assert_eq!(frame.code, CloseCode::Policy);
    assert_eq!(frame.reason.as_str(), "token rotated");
    // A scoped token is not the master: its socket lives on.
    scoped_ws.call("session.list", json!({})).await.result();
    d.handle.stop().await.unwrap();
}

// ---------------------------------------------------------------------------
// Routes

#[tokio::test]
async fn public_routes_and_routing() {
    let d = TestDaemon::start().await;
    let h = d.host();
    let health = send(d.port, "GET", "/v1/health", &[("host", &h)], b"").await;
    assert_eq!(health.status, 200);
    let v = health.json();
    assert_eq!(v["status"], "ok");
    assert_eq!(v["version"], r1_core::VERSION);
    assert_eq!(v["sessions"], 0);
    assert!(v["uptime_s"].is_u64());
    let disc = send(d.port, "GET", "/v1/discover", &[("host", &h)], b"").await;
    assert_eq!(
        disc.json(),
        json!({"socket": d.sock, "port": d.port, "protocol_version": 1})
    );
    // The web console's page needs no credential (it holds no secret) and
    // carries its own policy.
    let root = send(d.port, "GET", "/", &[("host", &h)], b"").await;
    assert_eq!(root.status, 200);
    assert_eq!(
        root.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    assert!(
        root.header("content-security-policy")
            .is_some_and(|c| c.starts_with("default-src 'none'"))
    );
    let asset = send(d.port, "GET", "/console/nope.js", &[("host", &h)], b"").await;
    assert_eq!(asset.status, 404);
    let wrong = d.req("PUT", "/v1/sessions", None).await;
    assert_eq!(wrong.status, 405);
    assert_eq!(wrong.header("allow"), Some("GET, POST, OPTIONS"));
    let plain_ws = d.req("GET", "/v1/ws", None).await;
    assert_eq!(plain_ws.status, 426);
    d.handle.stop().await.unwrap();
}

#[tokio::test]
async fn security_headers_on_every_status() {
    let d = TestDaemon::start().await;
    let h = d.host();
    let ok = send(d.port, "GET", "/v1/health", &[("host", &h)], b"").await;
    let unauth = send(d.port, "GET", "/v1/sessions", &[("host", &h)], b"").await;
    let forbidden = send(
        d.port,
        "GET",
        "/v1/health",
        &[("host", "evil.example")],
        b"",
    )
    .await;
    let missing = send(d.port, "GET", "/nope", &[("host", &h)], b"").await;
    for (r, want) in [
        (&ok, 200),
        (&unauth, 401),
        (&forbidden, 403),
        (&missing, 404),
    ] {
        assert_eq!(r.status, want);
        assert_security_headers(&r.headers, &format!("status {want}"));
        assert!(r.header("access-control-allow-origin").is_none());
    }
    d.handle.stop().await.unwrap();
}

#[tokio::test]
async fn rest_mirror_round_trip() {
    let d = TestDaemon::start().await;
    let created = d
        .req(
            "POST",
            "/v1/sessions",
            Some(json!({"workdir": d.work, "name": "rest"})),
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.text());
    let id = created.json()["session_id"].as_str().unwrap().to_owned();
    assert_eq!(
        created.header("location"),
        Some(format!("/v1/sessions/{id}").as_str())
    );
    assert_eq!(created.json()["state"], "running");
    assert_eq!(created.header("content-type"), Some("application/json"));

    let list = d.req("GET", "/v1/sessions", None).await;
    assert_eq!(list.status, 200);
    assert_eq!(list.json()["sessions"][0]["id"], id);
    let running = d.req("GET", "/v1/sessions?state=running", None).await;
    assert_eq!(running.json()["sessions"].as_array().unwrap().len(), 1);
    let got = d.req("GET", &format!("/v1/sessions/{id}"), None).await;
    assert_eq!(got.status, 200);
    assert_eq!(got.json()["name"], "rest");

    let sent = d
        .req(
            "POST",
            &format!("/v1/sessions/{id}/send"),
            Some(json!({"text": "echo rest"})),
        )
        .await;
    assert_eq!(sent.status, 200, "{}", sent.text());
    assert_eq!(sent.json()["accepted"], true);
    assert!(sent.json()["seq"].as_u64().unwrap() >= 2);
    let paused = d
        .req("POST", &format!("/v1/sessions/{id}/pause"), None)
        .await;
    assert_eq!(paused.status, 200, "{}", paused.text());
    assert!(paused.json()["paused_at"].is_string());
    let resumed = d
        .req("POST", &format!("/v1/sessions/{id}/resume"), None)
        .await;
    assert_eq!(resumed.status, 200, "{}", resumed.text());
    assert!(resumed.json()["resumed_at"].is_string());
    let cancelled = d
        .req(
            "POST",
            &format!("/v1/sessions/{id}/cancel"),
            Some(json!({"reason": "done"})),
        )
        .await;
    assert_eq!(cancelled.status, 200, "{}", cancelled.text());
    assert!(cancelled.json()["ended_at"].is_string());
    let again = d
        .req("POST", &format!("/v1/sessions/{id}/pause"), None)
        .await;
    assert_eq!(
        again.status,
        409,
        "pausing an ended session: {}",
        again.text()
    );
    let deleted = d.req("DELETE", &format!("/v1/sessions/{id}"), None).await;
    assert_eq!(deleted.status, 200, "{}", deleted.text());
    assert!(deleted.json()["deleted_at"].is_string());
    let gone = d.req("GET", &format!("/v1/sessions/{id}"), None).await;
    assert_eq!(gone.status, 404);

    // Errors keep the JSON-RPC error object.
    let unknown = d
        .req(
            "GET",
            "/v1/sessions/sess_00000000-0000-4000-8000-000000000000",
            None,
        )
        .await;
    assert_eq!(unknown.status, 404);
    assert_eq!(unknown.json()["error"]["code"], -32001);
    assert_eq!(unknown.json()["error"]["data"]["kind"], "not_found");
    let bad = d
        .req(
            "POST",
            "/v1/sessions",
            Some(json!({"workdir": "relative/dir"})),
        )
        .await;
    assert_eq!(bad.status, 400);
    assert_eq!(bad.json()["error"]["code"], -32602);
    let not_json = send(
        d.port,
        "POST",
        "/v1/sessions",
        &[
            ("host", &d.host()),
            ("authorization", &format!("Bearer {}", d.token())),
        ],
        b"{nope",
    )
    .await;
    assert_eq!(not_json.status, 400);
    assert_eq!(not_json.json()["error"]["code"], -32700);
    let bad_id = d.req("GET", "/v1/sessions/not-an-id", None).await;
    assert_eq!(bad_id.status, 400);
    d.handle.stop().await.unwrap();
}

#[tokio::test]
async fn rpc_single_batch_and_notifications() {
    let d = TestDaemon::start().await;
    let single = d
        .req(
            "POST",
            "/v1/rpc",
            Some(json!({"jsonrpc":"2.0","id":"a","method":"daemon.hello","params":{"protocol_version":1}})),
        )
        .await;
    assert_eq!(single.status, 200);
    assert_eq!(single.json()["id"], "a");
    assert_eq!(
        single.json()["result"]["instance_id"],
        d.handle.instance_id()
    );

    let batch = d
        .req(
            "POST",
            "/v1/rpc",
            Some(json!([
                {"jsonrpc":"2.0","id":1,"method":"session.list"},
                {"jsonrpc":"2.0","method":"session.list"},
                {"jsonrpc":"2.0","id":2,"method":"no.such"},
            ])),
        )
        .await;
    assert_eq!(batch.status, 200);
    let answers = batch.json();
    let answers = answers.as_array().unwrap();
    assert_eq!(answers.len(), 2);
    assert_eq!(answers[0]["id"], 1);
    assert!(answers[0]["result"]["sessions"].is_array());
    assert_eq!(answers[1]["error"]["code"], -32601);

    for notifications in [
        json!({"jsonrpc":"2.0","method":"session.list"}),
        json!([{"jsonrpc":"2.0","method":"session.list"},{"jsonrpc":"2.0","method":"daemon.info"}]),
    ] {
        let r = d.req("POST", "/v1/rpc", Some(notifications)).await;
        assert_eq!(r.status, 204);
        assert!(r.body.is_empty());
    }
    let parse = send(
        d.port,
        "POST",
        "/v1/rpc",
        &[
            ("host", &d.host()),
            ("authorization", &format!("Bearer {}", d.token())),
        ],
        b"{",
    )
    .await;
    assert_eq!(parse.json()["error"]["code"], -32700);
    assert_eq!(parse.json()["id"], Value::Null);
    let sub = d
        .req(
            "POST",
            "/v1/rpc",
            Some(json!({"jsonrpc":"2.0","id":3,"method":"daemon.subscribe"})),
        )
        .await;
    assert_eq!(
        sub.json()["error"]["code"],
        -32003,
        "no subscriptions over HTTP"
    );
    let privileged = d
        .req(
            "POST",
            "/v1/rpc",
            Some(json!({"jsonrpc":"2.0","id":4,"method":"daemon.rotate_token"})),
        )
        .await;
    assert_eq!(privileged.json()["error"]["code"], -32004);
    d.handle.stop().await.unwrap();
}

#[tokio::test]
async fn oversize_body_is_413() {
    let d = TestDaemon::start().await;
    // A declared length over 16 MiB is refused before any of it is read.
    let mut s = TcpStream::connect(("127.0.0.1", d.port)).await.unwrap();
    let head = format!(
        "POST /v1/rpc HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        d.host(),
        d.token(),
        16 * 1024 * 1024 + 1
    );
    s.write_all(head.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let n = timely("413", s.read(&mut buf)).await.unwrap();
    let text = String::from_utf8_lossy(&buf[..n]);
    assert!(text.starts_with("HTTP/1.1 413"), "{text}");
    assert!(
        text.to_ascii_lowercase()
            .contains("cache-control: no-store")
    );
    assert!(text.contains("-32005"), "{text}");
    // Exactly 16 MiB is still accepted (and answered: it is not JSON).
    let body = vec![b' '; 16 * 1024 * 1024];
    let r = send(
        d.port,
        "POST",
        "/v1/rpc",
        &[
            ("host", &d.host()),
            ("authorization", &format!("Bearer {}", d.token())),
        ],
        &body,
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["error"]["code"], -32700);
    d.handle.stop().await.unwrap();
}

#[tokio::test]
async fn journal_download_honours_since_seq() {
    let d = TestDaemon::start().await;
    let id = d.start_session().await;
    d.run(&id, "echo one").await;
    let r = d
        .req("GET", &format!("/v1/sessions/{id}/journal"), None)
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/x-ndjson"));
    let epoch = d
        .req("GET", &format!("/v1/sessions/{id}"), None)
        .await
        .json()["epoch"]
        .clone();
    assert_eq!(r.header("x-r1-epoch"), epoch.as_str());
    let text = r.text();
    assert!(text.ends_with('\n'));
    let recs: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_contiguous(&recs, 1);
    assert_eq!(recs[0]["kind"], "session.created");
    assert!(
        text.lines().all(|l| l.starts_with("{\"v\":1,\"seq\":")),
        "raw lines"
    );
    assert_eq!(recs.last().unwrap()["kind"], "tool.end");

    let later = d
        .req(
            "GET",
            &format!("/v1/sessions/{id}/journal?since_seq=2"),
            None,
        )
        .await;
    let later: Vec<Value> = later
        .text()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_contiguous(&later, 3);
    assert_eq!(later.len(), recs.len() - 2);
    let past_end = d
        .req(
            "GET",
            &format!("/v1/sessions/{id}/journal?since_seq=999"),
            None,
        )
        .await;
    assert_eq!(past_end.status, 200);
    assert!(past_end.body.is_empty());
    // An epoch that is not current restarts from the last shared seq (none here).
    let reset = d
        .req(
            "GET",
            &format!("/v1/sessions/{id}/journal?since_seq=3&epoch=0123abcd"),
            None,
        )
        .await;
    assert_eq!(reset.header("x-r1-reset-last-good-seq"), Some("0"));
    assert_eq!(reset.text().lines().count(), recs.len());
    let bad = d
        .req(
            "GET",
            &format!("/v1/sessions/{id}/journal?since_seq=x"),
            None,
        )
        .await;
    assert_eq!(bad.status, 400);
    d.handle.stop().await.unwrap();
}

#[tokio::test]
async fn sse_resumes_with_last_event_id() {
    let d = TestDaemon::start().await;
    let id = d.start_session().await;
    d.run(&id, "echo one").await;

    let t = ticket(&d, &id).await;
    let resp = open(
        d.port,
        "GET",
        &format!("/v1/sessions/{id}/sse?ticket={t}&since_seq=0"),
        &[("host", &d.host())],
        b"",
    )
    .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    assert_security_headers(resp.headers(), "sse");
    let mut sse = SseReader::new(resp.into_body());
    let (id0, name, opening) = sse.event().await;
    assert_eq!((id0, name.as_str()), (None, "subscribed"));
    let epoch = opening["epoch"].as_str().unwrap().to_owned();
    assert_eq!(opening["after"], 0);
    let mut seen = Vec::new();
    let mut ids = Vec::new();
    loop {
        let (eid, kind, data) = sse.event().await;
        let eid = eid.expect("record events carry an id");
        assert_eq!(eid, format!("{epoch}:{}", data["seq"]));
        assert_eq!(kind, data["kind"].as_str().unwrap());
        assert!(data.get("sub").is_none());
        ids.push(eid);
        seen.push(data);
        if kind == "tool.end" {
            break;
        }
    }
    assert_contiguous(&seen, 1);
    let last_id = ids.last().unwrap().clone();
    // Keepalive comments come while nothing happens.
    loop {
        if let Sse::Comment(c) = sse.next().await {
            assert_eq!(c, "ping");
            break;
        }
    }
    drop(sse);

    d.run(&id, "echo two").await;
    let t2 = ticket(&d, &id).await;
    // Last-Event-ID wins over since_seq (a browser reconnecting keeps its URL).
    let resp = open(
        d.port,
        "GET",
        &format!("/v1/sessions/{id}/sse?ticket={t2}&since_seq=0"),
        &[("host", &d.host()), ("last-event-id", &last_id)],
        b"",
    )
    .await;
    assert_eq!(resp.status(), 200);
    let mut sse = SseReader::new(resp.into_body());
    let (_, _, opening) = sse.event().await;
    let last_seq = seen.last().unwrap()["seq"].as_u64().unwrap();
    assert_eq!(opening["after"], last_seq);
    let mut resumed = Vec::new();
    loop {
        let (_, kind, data) = sse.event().await;
        resumed.push(data);
        if kind == "tool.end" {
            break;
        }
    }
    assert_contiguous(&resumed, last_seq + 1);
    assert_eq!(resumed[0]["kind"], "user.input");
    assert_eq!(resumed[0]["data"]["text"], "echo two");

    // A Last-Event-ID from another epoch starts over, and says so.
    let t3 = ticket(&d, &id).await;
    let resp = open(
        d.port,
        "GET",
        &format!("/v1/sessions/{id}/sse?ticket={t3}"),
        &[("host", &d.host()), ("last-event-id", "feedface:4")],
        b"",
    )
    .await;
    let mut sse = SseReader::new(resp.into_body());
    let (_, _, opening) = sse.event().await;
    assert_eq!(opening["reset"]["last_good_seq"], 0);
    let (_, kind, data) = sse.event().await;
    assert_eq!(
        (kind.as_str(), data["seq"].as_u64()),
        ("session.created", Some(1))
    );
    // A ticket is bound to its session.
    let other = d.start_session().await;
    let t4 = ticket(&d, &id).await;
    let r = send(
        d.port,
        "GET",
        &format!("/v1/sessions/{other}/sse?ticket={t4}"),
        &[("host", &d.host())],
        b"",
    )
    .await;
    assert_eq!(r.status, 401);
    d.handle.stop().await.unwrap();
}

#[tokio::test]
async fn websocket_subscription_delivers_events_in_order() {
    let d = TestDaemon::start().await;
    let id = d.start_session().await;
    let mut c = d.ws("/v1/ws").await;
    let sub = c
        .call(
            "session.subscribe",
            json!({"session_id": id, "since_seq": 0}),
        )
        .await
        .result();
    assert!(sub["sub"].as_u64().is_some());
    assert!(c.notes.is_empty(), "the answer comes before any $/event");
    c.call(
        "session.send",
        json!({"session_id": id, "text": "echo ws; echo again"}),
    )
    .await
    .result();
    let evs = c.events_until(|e| e["kind"] == "tool.end").await;
    assert_contiguous(&evs, 1);
    assert!(evs.iter().all(|e| e["sub"] == sub["sub"]));
    assert_eq!(evs[0]["kind"], "session.created");
    let out: String = evs
        .iter()
        .filter(|e| e["kind"] == "session.delta")
        .map(|e| e["data"]["text"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(out, "ws\nagain\n");
    // Batches work over the socket too.
    c.ws.send(Message::text(
        json!([{"jsonrpc":"2.0","id":90,"method":"session.list"},{"jsonrpc":"2.0","id":91,"method":"daemon.info"}])
            .to_string(),
    ))
    .await
    .unwrap();
    let batch = c.recv().await;
    assert_eq!(batch.as_array().map(Vec::len), Some(2));
    d.handle.stop().await.unwrap();
}

/// Requests that arrive in one TCP segment are all answered: the server reads the
/// second frame from its buffer with no new wake-up from the socket.
#[tokio::test]
async fn websocket_answers_pipelined_requests() {
    let d = TestDaemon::start().await;
    let mut c = d.ws("/v1/ws").await;
    for id in 1..=3 {
        let msg = json!({"jsonrpc":"2.0","id":id,"method":"daemon.info"});
        c.ws.feed(Message::text(msg.to_string())).await.unwrap();
    }
    c.ws.flush().await.unwrap();
    for id in 1..=3 {
        let v = c.recv().await;
        assert_eq!(v["id"], id, "{v}");
        assert!(v["result"]["pid"].is_u64(), "{v}");
    }
    d.handle.stop().await.unwrap();
}

/// One task serves a socket: its reads, its calls and the events it writes. Calls on
/// a socket that is streaming events are answered while the stream goes on, and no
/// event is lost, repeated or reordered around the answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_answers_calls_while_its_events_stream() {
    let d = TestDaemon::start().await;
    let id = d.start_session().await;
    let mut c = d.ws("/v1/ws").await;
    c.call(
        "session.subscribe",
        json!({"session_id": id, "since_seq": 0}),
    )
    .await
    .result();
    c.call(
        "session.send",
        json!({"session_id": id, "text": "for i in $(seq 1 100); do echo line $i; sleep 0.01; done"}),
    )
    .await
    .result();
    let mut answered = 0;
    while !c.notes.iter().any(|n| n["params"]["kind"] == "tool.end") {
        let info = c.call("daemon.info", json!({})).await.result();
        assert!(info["pid"].is_u64(), "{info}");
        answered += 1;
        assert!(answered < 10_000, "the command never ended");
    }
    assert!(answered > 1, "calls were answered during the stream");
    let evs = c.events_until(|e| e["kind"] == "tool.end").await;
    assert_contiguous(&evs, 1);
    let out: String = evs
        .iter()
        .filter(|e| e["kind"] == "session.delta")
        .map(|e| e["data"]["text"].as_str().unwrap_or(""))
        .collect();
    let want: String = (1..=100).map(|i| format!("line {i}\n")).collect();
    assert_eq!(out, want);
    d.handle.stop().await.unwrap();
}

#[tokio::test]
async fn session_websocket_subscribes_on_connect() {
    let d = TestDaemon::start().await;
    let id = d.start_session().await;
    d.run(&id, "echo before").await;
    let mut c = d.ws(&format!("/v1/sessions/{id}/ws?since_seq=0")).await;
    let first = c.recv().await;
    assert_eq!(first["method"], "$/subscribed", "{first}");
    let params = &first["params"];
    assert_eq!(params["session_id"], id);
    let current = params["current_seq"].as_u64().unwrap();
    assert!(current >= 5);
    let evs = c.events_until(|e| e["seq"].as_u64() == Some(current)).await;
    assert_contiguous(&evs, 1);
    assert!(evs.iter().all(|e| e["sub"] == params["sub"]));
    // Live records follow on the same subscription.
    c.call(
        "session.send",
        json!({"session_id": id, "text": "echo after"}),
    )
    .await
    .result();
    let live = c.events_until(|e| e["kind"] == "tool.end").await;
    assert_contiguous(&live, current + 1);

    // Checked before the upgrade: unknown session, bad since_seq, scope.
    let proto = format!("r1.bearer, {}", d.token());
    let missing = ws_connect(
        d.port,
        "/v1/sessions/sess_00000000-0000-4000-8000-000000000000/ws",
        Some(&proto),
        &[],
    )
    .await;
    assert!(matches!(missing, Err(tungstenite::Error::Http(r)) if r.status() == 404));
    let bad = ws_connect(
        d.port,
        &format!("/v1/sessions/{id}/ws?since_seq=x"),
        Some(&proto),
        &[],
    )
    .await;
    assert!(matches!(bad, Err(tungstenite::Error::Http(r)) if r.status() == 400));
    let other = d.start_session().await;
    let scoped = d
        .unix(
            "daemon.mint_token",
            json!({"scope": format!("session:{other}"), "ttl_s": 60}),
        )
        .await["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let refused = ws_connect(
        d.port,
        &format!("/v1/sessions/{id}/ws"),
        Some(&format!("r1.bearer, {scoped}")),
        &[],
    )
    .await;
    assert!(matches!(refused, Err(tungstenite::Error::Http(r)) if r.status() == 403));
    d.handle.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversize_websocket_message_closes_1009() {
    let d = TestDaemon::start().await;
    let mut c = d.ws("/v1/ws").await;
    let big = "x".repeat(16 * 1024 * 1024 + 1);
    // The server may stop reading part-way; what matters is the close frame.
    let _ = c.ws.send(Message::text(big)).await;
    let frame = c.close_frame().await.expect("a close frame");
    assert_eq!(frame.code, CloseCode::Size);
    drop(c);
    // A message of exactly 16 MiB is fine (and answered: it is not JSON).
    let mut c = d.ws("/v1/ws").await;
    let at_limit = " ".repeat(16 * 1024 * 1024 - 2);
    c.ws.send(Message::text(format!("[{at_limit}")))
        .await
        .unwrap();
    let answer = c.recv().await;
    assert_eq!(answer["error"]["code"], -32700);
    d.handle.stop().await.unwrap();
}

#[tokio::test]
async fn unknown_protocol_version_closes_1002() {
    let d = TestDaemon::start().await;
    let proto = format!("r1.bearer, {}, r1.proto.v99", d.token());
    let (ws, resp) = ws_connect(d.port, "/v1/ws", Some(&proto), &[])
        .await
        .unwrap();
    assert_eq!(resp.status(), 101);
    assert_eq!(resp.headers()["sec-websocket-protocol"], "r1.bearer");
    let mut c = WsClient::new(ws);
    let frame = c.close_frame().await.expect("a close frame");
    assert_eq!(frame.code, CloseCode::Protocol);
    assert!(frame.reason.contains("r1.proto.v1"), "{}", frame.reason);
    // v1 (alone or among others) is fine.
    let ok = format!("r1.proto.v1, r1.bearer, {}", d.token());
    let (ws, _) = ws_connect(d.port, "/v1/ws", Some(&ok), &[]).await.unwrap();
    WsClient::new(ws)
        .call("session.list", json!({}))
        .await
        .result();
    d.handle.stop().await.unwrap();
}

#[tokio::test]
async fn silent_websocket_is_dropped() {
    let d = TestDaemon::start().await;
    d.handle.state().set_http_config(HttpConfig {
        ws_ping_interval: Duration::from_millis(30),
        ws_pong_timeout: Duration::from_millis(150),
        ..test_http_config()
    });
    let (ws, _) = ws_connect(
        d.port,
        "/v1/ws",
        Some(&format!("r1.bearer, {}", d.token())),
        &[],
    )
    .await
    .unwrap();
    // A client that never reads never answers a ping: the daemon lets it go.
    let deadline = Instant::now() + STEP;
    while d.handle.state().connection_count() > 0 {
        assert!(Instant::now() < deadline, "the silent socket was kept");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // It went without a close frame: reading finds pings, then the end.
    let mut ws = ws;
    loop {
        match timely("end of a dropped socket", ws.next()).await {
            Some(Ok(Message::Ping(_))) => {}
            Some(Ok(Message::Close(_))) => panic!("dropped sockets get no close frame"),
            Some(Ok(other)) => panic!("unexpected {other:?}"),
            Some(Err(_)) | None => break,
        }
    }
    d.handle.stop().await.unwrap();
}

#[tokio::test]
async fn shutdown_closes_websockets_with_1001() {
    let d = TestDaemon::start().await;
    let mut c = d.ws("/v1/ws").await;
    c.call("session.list", json!({})).await.result();
    d.handle.shutdown();
    let stopping = c.note("$/daemon").await;
    assert_eq!(stopping["kind"], "daemon.stopping");
    let frame = c.close_frame().await.expect("a close frame");
    assert_eq!(frame.code, CloseCode::Away);
    timely("daemon stops", d.handle.wait()).await.unwrap();
    assert!(!d.home.join("daemon.json").exists());
}

#[tokio::test]
async fn client_library_dials_over_websocket() {
    // The client checks `/v1/hello` before it sends the token, then speaks JSON-RPC
    // over `/v1/ws`: both sides of the contract agree.
    let d = TestDaemon::start().await;
    let opts = r1_core::client::WsOptions::new("127.0.0.1", d.port, d.handle.token());
    let client = timely("dial_ws", r1_core::client::dial_ws(opts))
        .await
        .expect("client dials");
    let info = client.call("daemon.info", json!({})).await.unwrap();
    assert_eq!(info["instance_id"], d.handle.instance_id());
    // A wrong token fails the proof, and is never sent.
    let wrong = r1_core::token::Token::parse(&"1".repeat(64)).unwrap();
    let bad =
        r1_core::client::dial_ws(r1_core::client::WsOptions::new("127.0.0.1", d.port, wrong)).await;
    assert_eq!(
        bad.err().map(|e| e.kind()),
        Some(r1_core::ErrorKind::Unauthorized)
    );
    d.handle.stop().await.unwrap();
}
