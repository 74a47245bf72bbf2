//! The client side of the measurements: raw NDJSON JSON-RPC over a unix socket
//! (blocking for latency, async for many connections), `POST /v1/rpc` over one
//! keep-alive connection, and JSON-RPC over WebSocket. The same client code talks
//! to r1 and to the floors, so both sides of a ratio pay the same client costs.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream as StdUnixStream;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, bail};
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Full};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader as TokioBufReader};
use tokio::net::{TcpStream, UnixStream};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

/// One request line (no newline).
pub fn request_line(id: u64, method: &str, params: Option<&Value>) -> String {
    match params {
        Some(p) => json!({"jsonrpc": "2.0", "id": id, "method": method, "params": p}).to_string(),
        None => json!({"jsonrpc": "2.0", "id": id, "method": method}).to_string(),
    }
}

/// A blocking NDJSON connection: write a line, read a line.
pub struct BlockingLine {
    rd: BufReader<StdUnixStream>,
    wr: StdUnixStream,
    buf: Vec<u8>,
}

impl BlockingLine {
    /// Connects.
    pub fn connect(sock: &Path) -> anyhow::Result<BlockingLine> {
        let s = StdUnixStream::connect(sock)
            .with_context(|| format!("cannot connect to {}", sock.display()))?;
        s.set_read_timeout(Some(Duration::from_secs(30)))?;
        let wr = s.try_clone()?;
        Ok(BlockingLine {
            rd: BufReader::with_capacity(64 * 1024, s),
            wr,
            buf: Vec::with_capacity(4096),
        })
    }

    /// Sends `line` + `\n` and returns the next line received (without `\n`).
    pub fn round_trip(&mut self, line: &[u8]) -> anyhow::Result<&[u8]> {
        self.send(line)?;
        self.recv()
    }

    /// Sends `line` + `\n`.
    pub fn send(&mut self, line: &[u8]) -> anyhow::Result<()> {
        // One write per message, as a real client does.
        let mut msg = Vec::with_capacity(line.len() + 1);
        msg.extend_from_slice(line);
        msg.push(b'\n');
        self.wr.write_all(&msg)?;
        Ok(())
    }

    /// The next line.
    pub fn recv(&mut self) -> anyhow::Result<&[u8]> {
        self.buf.clear();
        let n = self.rd.read_until(b'\n', &mut self.buf)?;
        if n == 0 {
            bail!("connection closed");
        }
        if self.buf.last() == Some(&b'\n') {
            self.buf.pop();
        }
        Ok(&self.buf)
    }
}

/// An async NDJSON JSON-RPC connection for setup calls (skips notifications).
pub struct Rpc {
    rd: TokioBufReader<tokio::net::unix::OwnedReadHalf>,
    wr: tokio::net::unix::OwnedWriteHalf,
    next_id: u64,
    line: String,
}

impl Rpc {
    /// Connects.
    pub async fn connect(sock: &Path) -> anyhow::Result<Rpc> {
        let s = UnixStream::connect(sock)
            .await
            .with_context(|| format!("cannot connect to {}", sock.display()))?;
        let (r, w) = s.into_split();
        Ok(Rpc {
            rd: TokioBufReader::with_capacity(64 * 1024, r),
            wr: w,
            next_id: 1,
            line: String::new(),
        })
    }

    /// Calls `method`; returns its result or fails with the error object.
    pub async fn call(&mut self, method: &str, params: Value) -> anyhow::Result<Value> {
        let id = self.next_id;
        self.next_id += 1;
        let mut req = request_line(id, method, Some(&params));
        req.push('\n');
        self.wr.write_all(req.as_bytes()).await?;
        loop {
            self.line.clear();
            let n =
                tokio::time::timeout(Duration::from_secs(60), self.rd.read_line(&mut self.line))
                    .await
                    .with_context(|| format!("{method}: no answer within 60 s"))??;
            if n == 0 {
                bail!("{method}: connection closed");
            }
            let v: Value = serde_json::from_str(&self.line)?;
            if v.get("id") == Some(&json!(id)) {
                if let Some(r) = v.get("result") {
                    return Ok(r.clone());
                }
                bail!("{method} failed: {}", v.get("error").unwrap_or(&v));
            }
        }
    }

    /// Splits into halves for streaming use.
    pub fn into_parts(
        self,
    ) -> (
        TokioBufReader<tokio::net::unix::OwnedReadHalf>,
        tokio::net::unix::OwnedWriteHalf,
    ) {
        (self.rd, self.wr)
    }
}

/// Reads from `rd` until `count` newlines have arrived; returns the bytes of the last
/// line (so the caller can check it). Counting newlines is all a subscriber's reader
/// does here: the measured cost is the daemon's, not JSON parsing in the bench.
pub async fn count_lines<R: tokio::io::AsyncRead + Unpin>(
    rd: &mut R,
    count: u64,
    keep_all: Option<&mut Vec<u8>>,
    progress: &std::cell::Cell<u64>,
) -> anyhow::Result<Vec<u8>> {
    let mut buf = vec![0u8; 256 * 1024];
    let mut seen = 0u64;
    let mut cur: Vec<u8> = Vec::new();
    let mut last: Vec<u8> = Vec::new();
    let mut keep = keep_all;
    while seen < count {
        let n = rd.read(&mut buf).await?;
        if n == 0 {
            bail!("stream closed after {seen} of {count} lines");
        }
        let chunk = &buf[..n];
        if let Some(k) = keep.as_deref_mut() {
            k.extend_from_slice(chunk);
        }
        let Some(end) = chunk.iter().rposition(|b| *b == b'\n') else {
            cur.extend_from_slice(chunk);
            continue;
        };
        seen += memchr_count(chunk) as u64;
        progress.set(seen);
        last.clear();
        match chunk[..end].iter().rposition(|b| *b == b'\n') {
            Some(s) => last.extend_from_slice(&chunk[s + 1..end]),
            None => {
                last.append(&mut cur);
                last.extend_from_slice(&chunk[..end]);
            }
        }
        cur.clear();
        cur.extend_from_slice(&chunk[end + 1..]);
    }
    if seen > count {
        bail!("got {seen} lines, expected {count}");
    }
    Ok(last)
}

fn memchr_count(b: &[u8]) -> usize {
    b.iter().filter(|c| **c == b'\n').count()
}

/// `POST /v1/rpc` (or any path) over one HTTP/1.1 keep-alive connection.
pub struct HttpConn {
    send: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    host: String,
    path: String,
    auth: Option<String>,
}

impl HttpConn {
    /// Connects to 127.0.0.1:`port`; requests go to `path` with an optional bearer.
    pub async fn connect(port: u16, path: &str, token: Option<&str>) -> anyhow::Result<HttpConn> {
        let tcp = TcpStream::connect(("127.0.0.1", port)).await?;
        tcp.set_nodelay(true)?;
        let io = hyper_util::rt::TokioIo::new(tcp);
        let (send, conn) = hyper::client::conn::http1::handshake(io).await?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(HttpConn {
            send,
            host: format!("127.0.0.1:{port}"),
            path: path.to_owned(),
            auth: token.map(|t| format!("Bearer {t}")),
        })
    }

    /// POSTs `body`; returns status and response body.
    pub async fn post(&mut self, body: Bytes) -> anyhow::Result<(u16, Bytes)> {
        let mut b = hyper::Request::post(&self.path)
            .header("host", &self.host)
            .header("content-type", "application/json");
        if let Some(a) = &self.auth {
            b = b.header("authorization", a);
        }
        let req = b.body(Full::new(body))?;
        self.send.ready().await?;
        let resp = self.send.send_request(req).await?;
        let status = resp.status().as_u16();
        let body = resp.into_body().collect().await?.to_bytes();
        Ok((status, body))
    }
}

/// A WebSocket stream.
pub type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<TcpStream>>;

/// Opens `ws://127.0.0.1:port/path`, offering `r1.bearer, <token>` when a token is given.
pub async fn ws_connect(port: u16, path: &str, token: Option<&str>) -> anyhow::Result<Ws> {
    let mut req = format!("ws://127.0.0.1:{port}{path}").into_client_request()?;
    if let Some(t) = token {
        req.headers_mut()
            .insert("sec-websocket-protocol", format!("r1.bearer, {t}").parse()?);
    }
    let (ws, _) = tokio_tungstenite::connect_async(req).await?;
    if let Ok(tcp) = match ws.get_ref() {
        tokio_tungstenite::MaybeTlsStream::Plain(s) => Ok(s),
        _ => Err(()),
    } {
        let _ = tcp.set_nodelay(true);
    }
    Ok(ws)
}

/// Sends one text message and returns the next text message.
pub async fn ws_round_trip(ws: &mut Ws, text: &str) -> anyhow::Result<String> {
    ws.send(Message::text(text)).await?;
    ws_next_text(ws).await
}

/// The next text message (pings are answered by tungstenite).
pub async fn ws_next_text(ws: &mut Ws) -> anyhow::Result<String> {
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(t))) => return Ok(t.to_string()),
            Some(Ok(Message::Close(c))) => bail!("websocket closed: {c:?}"),
            Some(Ok(_)) => continue,
            Some(Err(e)) => return Err(e.into()),
            None => bail!("websocket ended"),
        }
    }
}

/// A JSON-RPC call over WebSocket (skips notifications).
pub async fn ws_call(ws: &mut Ws, id: u64, method: &str, params: Value) -> anyhow::Result<Value> {
    ws.send(Message::text(request_line(id, method, Some(&params))))
        .await?;
    loop {
        let t = tokio::time::timeout(Duration::from_secs(60), ws_next_text(ws))
            .await
            .with_context(|| format!("{method}: no answer within 60 s"))??;
        let v: Value = serde_json::from_str(&t)?;
        if v.get("id") == Some(&json!(id)) {
            if let Some(r) = v.get("result") {
                return Ok(r.clone());
            }
            bail!("{method} failed: {}", v.get("error").unwrap_or(&v));
        }
    }
}
