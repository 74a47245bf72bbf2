//! JSON-RPC over WebSocket: `GET /v1/ws` and `GET /v1/sessions/:id/ws` (DESIGN §4, §7).
//!
//! # Handshake
//!
//! Credentials travel in `Sec-WebSocket-Protocol: r1.bearer, <token>` (browsers
//! cannot set `Authorization` on a WebSocket). A request without them, or with a
//! token we do not know, gets 401 before any upgrade. The 101 selects `r1.bearer`,
//! never the token. A client may also offer `r1.proto.v<N>`; if it offers only
//! versions other than 1, the upgrade completes and the socket is closed at once
//! with 1002 and a reason naming the supported version.
//!
//! # Frames
//!
//! Each text (or binary) message is one JSON-RPC message, answered like a unix
//! socket line; `$/event` and `$/daemon` notifications are text messages. Messages
//! over 16 MiB close the socket with 1009, a text message that is not UTF-8 with
//! 1007. The server pings every 20 s and drops a peer silent for 60 s. A socket opened with the master token is closed with 1008
//! "token rotated" when `daemon.rotate_token` runs; daemon shutdown closes every
//! socket with 1001 after the `daemon.stopping` notice.
//!
//! # `/v1/sessions/:id/ws`
//!
//! Before upgrading, the session must exist (404), be readable with the token's
//! scope (403) and not be damaged (409), and `since_seq` / `epoch` from the query
//! must parse (400). After the upgrade the daemon runs `session.subscribe
//! {session_id, since_seq?, epoch?}` for the client (absent `since_seq` = live only,
//! as over JSON-RPC) and sends its result as the **notification**
//!
//! ```text
//! {"jsonrpc":"2.0","method":"$/subscribed","params":{"session_id":"sess_…","sub":3,"current_seq":41,"epoch":"…"}}
//! ```
//!
//! (plus `reset` when the epoch was not current), after any `$/daemon
//! daemon.reloaded` notice and before the first `$/event` of that `sub`. A
//! notification rather than a response, because the client sent no request id to
//! answer. If that subscribe fails after all (the session was deleted in between),
//! the socket is closed with 1011 and the error message as reason.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::task::AtomicWaker;
use futures_util::{SinkExt, StreamExt};
use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::io::AsyncReadExt;
use tokio::sync::{OwnedSemaphorePermit, mpsc, watch};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

use super::auth::Bearer;
use super::gate::{self, BEARER_PROTOCOL};
use super::http::{
    Body, HttpConfig, MAX_BODY, Shared, authenticate, empty, error, error_status, unauthorized,
};
use super::memory;
use super::rest::Query;
use super::state::{Caller, Conn, Transport};
use crate::error::{Error, ErrorKind};
use crate::rpc::dispatch::{CallCtx, Dispatcher};
use crate::rpc::envelope;

type WsStream = WebSocketStream<TokioIo<Upgraded>>;

/// Bytes tungstenite reads per `read` call, and the read buffer every socket keeps
/// (allocated at once and zero-filled on the first read). JSON-RPC requests are
/// small; a large message grows the buffer to its size while it arrives.
const READ_BUFFER: usize = 4 * 1024;
/// Queued frames are written to the socket once this many bytes are buffered (and
/// at every flush). The buffer keeps its largest size for the socket's life, so
/// this bounds what an event burst leaves behind per subscriber.
const WRITE_BUFFER: usize = 8 * 1024;
/// Frames written per flush when many are queued.
const WRITE_BATCH: usize = 256;
/// Bytes read from a peer that keeps sending after we closed, before giving up on it.
const DRAIN_LIMIT: usize = 2 * MAX_BODY;

/// What `/v1/sessions/:id/ws` subscribes to on connect.
#[derive(Debug, Clone)]
struct AutoSubscribe {
    session_id: String,
    since_seq: Option<u64>,
    epoch: Option<String>,
}

/// Everything a socket needs once upgraded.
struct Setup {
    rpc: Dispatcher,
    caller: Caller,
    /// The master-token generation the socket authenticated with, if it did.
    generation: Option<u64>,
    auto: Option<AutoSubscribe>,
    /// Close at once with 1002 and this reason (unsupported `r1.proto.v*`).
    refuse: Option<String>,
    cfg: HttpConfig,
}

/// Answers a WebSocket route: 101 and a task that serves the socket, or the refusal.
pub(crate) async fn upgrade(
    shared: &Arc<Shared>,
    req: Request<Incoming>,
    session: Option<String>,
    permit: Arc<OwnedSemaphorePermit>,
) -> Response<Body> {
    let headers = req.headers();
    if !gate::wants_websocket(headers) {
        let mut r = error_status(
            StatusCode::UPGRADE_REQUIRED,
            &Error::new(
                ErrorKind::InvalidRequest,
                "this route speaks WebSocket only",
            ),
        );
        r.headers_mut()
            .insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        return r;
    }
    if gate::single(headers, &header::SEC_WEBSOCKET_VERSION) != Ok(Some("13")) {
        let mut r = error_status(
            StatusCode::UPGRADE_REQUIRED,
            &Error::new(
                ErrorKind::InvalidRequest,
                "only WebSocket version 13 is spoken",
            ),
        );
        r.headers_mut().insert(
            header::SEC_WEBSOCKET_VERSION,
            HeaderValue::from_static("13"),
        );
        return r;
    }
    let key = match gate::single(headers, &header::SEC_WEBSOCKET_KEY) {
        Ok(Some(k)) if !k.trim().is_empty() => k.trim().to_owned(),
        _ => {
            return error(&Error::new(
                ErrorKind::InvalidRequest,
                "exactly one Sec-WebSocket-Key is required",
            ));
        }
    };
    let (caller, bearer) = match authenticate(shared, headers, Transport::WebSocket) {
        Ok(c) => c,
        Err(why) => return unauthorized(why),
    };
    let refuse = gate::SubprotocolOffer::parse(headers).version_check().err();
    let auto = match session {
        Some(id) => match check_auto(shared, &caller, &id, req.uri()) {
            Ok(a) => Some(a),
            Err(e) => return error(&e),
        },
        None => None,
    };
    let setup = Setup {
        rpc: shared.rpc.clone(),
        caller,
        generation: match bearer {
            Bearer::Master(g) => Some(g),
            Bearer::Scoped(_) => None,
        },
        auto,
        refuse,
        cfg: shared.cfg.clone(),
    };
    let on_upgrade = hyper::upgrade::on(req);
    tokio::spawn(async move {
        // The socket keeps the connection's slot under the connection cap.
        let _permit = permit;
        match on_upgrade.await {
            Ok(up) => serve_and_release(up, setup).await,
            Err(e) => tracing::debug!(error = %e, "websocket upgrade failed"),
        }
    });
    let mut r = empty(StatusCode::SWITCHING_PROTOCOLS);
    let h = r.headers_mut();
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    if let Ok(v) = HeaderValue::from_str(&derive_accept_key(key.as_bytes())) {
        h.insert(header::SEC_WEBSOCKET_ACCEPT, v);
    }
    h.insert(
        header::SEC_WEBSOCKET_PROTOCOL,
        HeaderValue::from_static(BEARER_PROTOCOL),
    );
    r
}

/// The pre-upgrade checks of `/v1/sessions/:id/ws`.
fn check_auto(
    shared: &Shared,
    caller: &Caller,
    id: &str,
    uri: &http::Uri,
) -> crate::Result<AutoSubscribe> {
    let q = Query::parse(uri)?;
    let since_seq = q.u64("since_seq")?;
    let epoch = q.str("epoch").map(str::to_owned);
    shared
        .rpc
        .check_access(caller, "session.subscribe", Some(id))?;
    let session = shared.rpc.state().hub.get(id)?;
    if session.journal().is_none() {
        return Err(Error::new(
            ErrorKind::JournalDamaged,
            format!(
                "session {id} is damaged: read it with journal.read (records up to the damage)"
            ),
        ));
    }
    Ok(AutoSubscribe {
        session_id: id.to_owned(),
        since_seq,
        epoch,
    })
}

/// When the peer was last heard from (any frame, pongs included).
#[derive(Debug)]
struct Liveness {
    last: Instant,
}

impl Liveness {
    fn new() -> Liveness {
        Liveness {
            last: Instant::now(),
        }
    }

    fn touch(&mut self) {
        self.last = Instant::now();
    }

    fn silent_for(&self) -> Duration {
        self.last.elapsed()
    }
}

/// How a socket ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// We sent a close frame: wait (bounded) for the peer's. `broken`: the frame
    /// parser failed (a message over the limit), so only raw bytes can be drained.
    Closed { broken: bool },
    /// The peer is gone or went silent: just drop the connection.
    Dropped,
}

fn close_frame(code: CloseCode, reason: &str) -> CloseFrame {
    // A close reason is at most 123 bytes; cut on a char boundary.
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    CloseFrame {
        code,
        reason: reason[..end].to_owned().into(),
    }
}

/// A socket's settings. tungstenite's defaults (128 KiB read and write buffers) cost
/// ~150 KiB per connection: 150 MiB for the 1,000 subscribers the benchmark holds.
fn socket_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(WRITE_BUFFER)
        // DESIGN §4: 16 MiB per message, whether in one frame or several.
        .max_message_size(Some(MAX_BODY))
        .max_frame_size(Some(MAX_BODY))
}

/// How a call on the socket finished.
enum Done<'a> {
    /// Write this (nothing for a notification), then release what waits for the
    /// reply (a new subscription's events).
    Reply(Option<String>, CallCtx<'a>),
    /// Close the socket with this frame.
    Fail(CloseFrame),
}

/// The call a socket is running. One at a time, as on the unix socket: the next
/// message is read once this one is answered.
type Call<'a> = super::RunningCall<'a, Done<'a>>;

/// Serves one socket in one task that reads, runs calls and writes.
///
/// One task, not a reader and a writer: tokio-tungstenite wakes every task that
/// waits on a socket whenever it becomes readable (its waker proxy), so with two
/// tasks each request woke both, and tokio handed one to the other worker thread
/// (a futex wake and a cross-thread hand-off per call, ~1.8 futex calls per round
/// trip under strace). The answer is written by the same task that read the
/// request, as the echo floor does.
async fn serve(upgraded: Upgraded, setup: Setup) {
    let mut ws = WebSocketStream::from_raw_socket(
        TokioIo::new(upgraded),
        Role::Server,
        Some(socket_config()),
    )
    .await;
    let close_timeout = setup.cfg.ws_close_timeout;
    if let Some(reason) = &setup.refuse {
        tracing::warn!("closed a websocket offering only unsupported protocol versions");
        if ws
            .send(Message::Close(Some(close_frame(
                CloseCode::Protocol,
                reason,
            ))))
            .await
            .is_ok()
        {
            let _ = tokio::time::timeout(close_timeout, async {
                while let Some(Ok(_)) = ws.next().await {}
            })
            .await;
        }
        return;
    }

    let Setup {
        rpc,
        caller,
        generation,
        auto,
        cfg,
        ..
    } = setup;
    let state = Arc::clone(rpc.state());
    let (conn, mut outbound) = state.register(caller.clone());
    if let Some(notice) = state.reloaded_notice() {
        // The queue is new and empty: this cannot wait.
        let _ = conn.out.send(notice).await;
    }
    let mut call: Option<Call<'_>> =
        auto.map(|a| -> Call<'_> { Box::pin(auto_subscribe(&rpc, &caller, &conn, a)) });

    let closed = conn.closed.clone();
    let mut closed = std::pin::pin!(closed.cancelled_owned());
    let mut rotation = std::pin::pin!(rotated(generation.map(|g| (state.auth.generation(), g))));
    let every = cfg.ws_ping_interval;
    let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut live = Liveness::new();
    let readable = Arc::new(ReadWake::new());

    let end = loop {
        tokio::select! {
            // Closes first; then the call's answer; then requests before queued
            // events, so a busy subscription cannot starve the peer's frames
            // (queued events still go out ahead of every answer).
            biased;
            _ = &mut closed => {
                // Daemon stopping: flush what is queued (`daemon.stopping`) first.
                while let Ok(line) = outbound.try_recv() {
                    if ws.feed(Message::text(line)).await.is_err() {
                        break;
                    }
                }
                break send_close(&mut ws, close_frame(CloseCode::Away, "daemon stopping")).await;
            }
            _ = &mut rotation => {
                tracing::info!("closing a websocket whose token was rotated");
                break send_close(&mut ws, close_frame(CloseCode::Policy, "token rotated")).await;
            }
            _ = ping.tick() => {
                if live.silent_for() > cfg.ws_pong_timeout {
                    tracing::info!("dropping a websocket that stopped answering pings");
                    break End::Dropped;
                }
                if ws.send(Message::Ping(Default::default())).await.is_err() {
                    break End::Dropped;
                }
            }
            done = super::running(&mut call), if call.is_some() => {
                call = None;
                match done {
                    Done::Reply(text, ctx) => {
                        if write_reply(&mut ws, &mut outbound, text).await.is_err() {
                            break End::Dropped;
                        }
                        ctx.replied();
                    }
                    Done::Fail(frame) => {
                        tracing::warn!(reason = %frame.reason, "websocket auto-subscribe failed");
                        break send_close(&mut ws, frame).await;
                    }
                }
            }
            next = next_frame(&mut ws, &readable), if call.is_none() => {
                live.touch();
                match next {
                    None => break End::Dropped,
                    Some(Err(WsError::Capacity(e))) => {
                        tracing::warn!(error = %e, "websocket message over the limit");
                        let frame = close_frame(CloseCode::Size, &format!("message over {MAX_BODY} bytes"));
                        break match send_close(&mut ws, frame).await {
                            End::Closed { .. } => End::Closed { broken: true },
                            End::Dropped => End::Dropped,
                        };
                    }
                    Some(Err(WsError::Utf8(e))) => {
                        // RFC 6455 §8.1: a text message that is not UTF-8 fails the
                        // connection, with 1007 so the peer learns why.
                        tracing::warn!(error = %e, "websocket text message is not UTF-8");
                        let frame = close_frame(
                            CloseCode::Invalid,
                            "a text message is not valid UTF-8 (send bytes as a binary message)",
                        );
                        break send_close(&mut ws, frame).await;
                    }
                    Some(Err(e)) => {
                        tracing::debug!(error = %e, "websocket read failed");
                        break End::Dropped;
                    }
                    Some(Ok(Message::Text(t))) => call = start(&rpc, &caller, &conn, t.into()),
                    Some(Ok(Message::Binary(b))) => call = start(&rpc, &caller, &conn, b),
                    // Pings and closes are answered by tungstenite itself.
                    Some(Ok(_)) => {}
                }
            }
            line = outbound.recv() => {
                let Some(line) = line else { break End::Dropped };
                if write_queued(&mut ws, &mut outbound, line).await.is_err() {
                    break End::Dropped;
                }
            }
        }
    };
    // A call still running finishes (its answer has nowhere to go): calls are not
    // cancelled half-way, whatever ended the socket.
    if let Some(running) = call.take() {
        let _ = running.await;
    }
    drop(call);
    state.unregister(&conn);
    conn.closed.cancel();
    drop(conn);
    if let End::Closed { broken } = end {
        drain(ws, broken, close_timeout).await;
    }
}

/// Serves an upgraded socket, then has the memory it freed returned to the system.
async fn serve_and_release(upgraded: Upgraded, setup: Setup) {
    serve(upgraded, setup).await;
    memory::release_soon();
}

/// Remembers that the socket may have something to read: the waker the socket's
/// reads are polled with sets it. Queued events wake the same task, and most
/// wake-ups are theirs; polling tungstenite for a frame on each of them cost a
/// 4 KiB zero-fill of its read buffer and a read attempt per event written.
struct ReadWake {
    woken: AtomicBool,
    task: AtomicWaker,
}

impl ReadWake {
    fn new() -> ReadWake {
        ReadWake {
            // The first poll reads: nothing has registered with the socket yet.
            woken: AtomicBool::new(true),
            task: AtomicWaker::new(),
        }
    }
}

impl Wake for ReadWake {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        self.task.wake();
    }
}

/// The peer's next frame, polled only when the socket's read waker fired since the
/// last `Pending`.
async fn next_frame(
    ws: &mut WsStream,
    readable: &Arc<ReadWake>,
) -> Option<Result<Message, WsError>> {
    std::future::poll_fn(|cx| {
        readable.task.register(cx.waker());
        if !readable.woken.swap(false, Ordering::AcqRel) {
            return Poll::Pending;
        }
        let waker = Waker::from(Arc::clone(readable));
        match ws.poll_next_unpin(&mut Context::from_waker(&waker)) {
            Poll::Ready(frame) => {
                // More frames may sit in tungstenite's buffer, with no wake to come.
                readable.woken.store(true, Ordering::Release);
                Poll::Ready(frame)
            }
            Poll::Pending => Poll::Pending,
        }
    })
    .await
}

/// The call for one message, or none for a blank one.
fn start<'a>(
    rpc: &'a Dispatcher,
    caller: &'a Caller,
    conn: &'a Arc<Conn>,
    bytes: Bytes,
) -> Option<Call<'a>> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return None;
    }
    // Boxed: the dispatcher's future is large, and lives only while a call runs,
    // not for the socket's whole life.
    Some(Box::pin(async move {
        let mut ctx = CallCtx::new(caller, Some(conn));
        let answer = rpc.handle(&mut ctx, &bytes).await;
        Done::Reply(answer, ctx)
    }))
}

/// Writes a call's reply after every frame queued before it (events of other
/// subscriptions, notices), so the order is the one the queue would have given.
async fn write_reply(
    ws: &mut WsStream,
    outbound: &mut mpsc::Receiver<String>,
    reply: Option<String>,
) -> Result<(), WsError> {
    // Only what is queued now: a busy subscription must not hold the reply back.
    for _ in 0..outbound.len() {
        let Ok(line) = outbound.try_recv() else { break };
        ws.feed(Message::text(line)).await?;
    }
    if let Some(text) = reply {
        ws.feed(Message::text(text)).await?;
    }
    ws.flush().await
}

/// Writes `first` and whatever else is queued (up to [`WRITE_BATCH`] frames), then
/// flushes: a burst of events goes out in few writes.
async fn write_queued(
    ws: &mut WsStream,
    outbound: &mut mpsc::Receiver<String>,
    first: String,
) -> Result<(), WsError> {
    ws.feed(Message::text(first)).await?;
    let mut n = 1;
    while n < WRITE_BATCH {
        let Ok(more) = outbound.try_recv() else { break };
        ws.feed(Message::text(more)).await?;
        n += 1;
    }
    ws.flush().await
}

/// After we sent a close frame: read (and discard) until the peer's close, end of
/// stream, or the timeout, so the peer gets our close frame instead of a reset.
async fn drain(mut ws: WsStream, broken: bool, timeout: Duration) {
    if !broken {
        let _ = tokio::time::timeout(timeout, async {
            while let Some(Ok(_)) = ws.next().await {}
        })
        .await;
        return;
    }
    // The stream ended on an error (a message over the limit): the frame parser's
    // state is gone, so discard raw bytes until the peer hangs up.
    let _ = tokio::time::timeout(timeout, async {
        let mut buf = vec![0u8; 64 * 1024];
        let mut total = 0usize;
        while total < DRAIN_LIMIT {
            match ws.get_mut().read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => total += n,
            }
        }
    })
    .await;
}

/// Subscribes the socket to its session; the reply is `$/subscribed` (module docs),
/// or a close with 1011 when the subscribe fails.
async fn auto_subscribe<'a>(
    rpc: &'a Dispatcher,
    caller: &'a Caller,
    conn: &'a Arc<Conn>,
    a: AutoSubscribe,
) -> Done<'a> {
    let mut params = json!({ "session_id": a.session_id });
    if let Some(s) = a.since_seq {
        params["since_seq"] = Value::from(s);
    }
    if let Some(e) = a.epoch {
        params["epoch"] = Value::from(e);
    }
    let mut ctx = CallCtx::new(caller, Some(conn));
    match rpc.call(&mut ctx, "session.subscribe", Some(params)).await {
        Ok(mut result) => {
            result["session_id"] = Value::from(a.session_id);
            Done::Reply(Some(envelope::notification("$/subscribed", &result)), ctx)
        }
        Err(e) => Done::Fail(close_frame(CloseCode::Error, e.message())),
    }
}

/// Resolves once the master token moves past the generation the socket
/// authenticated with; never, for other credentials.
async fn rotated(generation: Option<(watch::Receiver<u64>, u64)>) {
    if let Some((mut rx, at)) = generation
        && rx.wait_for(|g| *g != at).await.is_ok()
    {
        return;
    }
    std::future::pending::<()>().await;
}

async fn send_close(ws: &mut WsStream, frame: CloseFrame) -> End {
    match ws.send(Message::Close(Some(frame))).await {
        Ok(()) => End::Closed { broken: false },
        Err(_) => End::Dropped,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_reasons_fit_the_frame() {
        let long = "é".repeat(100);
        let f = close_frame(CloseCode::Error, &long);
        assert!(f.reason.len() <= 123);
        assert!(f.reason.chars().all(|c| c == 'é'));
        assert_eq!(
            close_frame(CloseCode::Policy, "token rotated")
                .reason
                .as_str(),
            "token rotated"
        );
    }

    /// Regression (benchmark row 10b): tungstenite's 128 KiB defaults made every
    /// socket cost ~150 KiB. DESIGN §4's message limit must survive the change.
    #[test]
    fn sockets_use_small_buffers_and_the_design_limits() {
        let c = socket_config();
        assert!(c.read_buffer_size <= 4 * 1024, "{}", c.read_buffer_size);
        assert!(c.write_buffer_size <= 8 * 1024, "{}", c.write_buffer_size);
        // tungstenite panics on a write buffer cap not above the write buffer.
        assert!(c.max_write_buffer_size > c.write_buffer_size);
        assert_eq!(c.max_message_size, Some(16 * 1024 * 1024));
        assert_eq!(c.max_frame_size, Some(16 * 1024 * 1024));
    }

    #[test]
    fn liveness_tracks_silence() {
        let mut l = Liveness::new();
        std::thread::sleep(Duration::from_millis(20));
        assert!(l.silent_for() >= Duration::from_millis(20));
        l.touch();
        assert!(l.silent_for() < Duration::from_millis(20));
    }
}
