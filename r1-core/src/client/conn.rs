//! One JSON-RPC connection to the daemon, whatever carries it (unix socket lines or
//! WebSocket text frames): requests pipelined with numeric ids, a reader task that
//! routes each response to the caller waiting for that id and each `$/event` to the
//! subscription it names.
//!
//! Why a subscription's channel is registered by the reader itself: the daemon
//! sends the subscribe reply before the first `$/event` of it, on the same stream,
//! so the reader registers the channel when it sees the reply and before it reads
//! the next frame. No event can arrive for a subscription nobody listens to yet.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures_util::{Sink, SinkExt, Stream, StreamExt};
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::types::{DaemonNotice, Hello};
use crate::discovery::Discovery;
use crate::error::{Error, ErrorKind, Result, RpcErrorObject};

/// Frames queued for the writer before callers wait.
const WRITE_QUEUE: usize = 1024;

/// Items queued per subscription before the reader gives up on it (the
/// subscription then re-subscribes from its last seq; see `subscription.rs`).
pub(crate) const SUB_QUEUE: usize = 1024;

/// What the reader hands a subscription.
#[derive(Debug)]
pub(crate) enum SubMsg {
    /// The `params` of a `$/event`.
    Event(Value),
    /// A `$/daemon` notice.
    Daemon(DaemonNotice),
}

/// Where a subscribe call's events go, registered when its reply arrives.
pub(crate) struct SubTarget {
    /// The subscription's queue.
    pub tx: mpsc::Sender<SubMsg>,
    /// Deliver this connection's `daemon.reloaded` notice first (a subscription
    /// that resumed on a new connection wants to surface it).
    pub want_reloaded: bool,
}

struct Pending {
    tx: oneshot::Sender<Result<Value>>,
    sub: Option<SubTarget>,
}

#[derive(Default)]
struct Router {
    pending: HashMap<u64, Pending>,
    subs: HashMap<u64, mpsc::Sender<SubMsg>>,
    reloaded: Option<DaemonNotice>,
    /// Set once the connection is down; every later call fails with it.
    closed: Option<Error>,
}

struct Shared {
    router: Mutex<Router>,
    next_id: AtomicU64,
    /// Fired when the connection is down (peer closed, I/O error, dropped).
    down: CancellationToken,
    /// Describes the peer in messages (`unix socket /run/…/r1.sock`).
    peer: String,
}

impl Shared {
    fn router(&self) -> MutexGuard<'_, Router> {
        // A poisoned router only means a panic elsewhere mid-update of plain maps;
        // the maps are still usable.
        self.router.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Marks the connection down: fails every waiting call with `err`, ends every
    /// subscription queue (their owners notice and resume elsewhere).
    fn close(&self, err: Error) {
        let (pending, subs) = {
            let mut r = self.router();
            if r.closed.is_some() {
                return;
            }
            r.closed = Some(err.clone());
            (std::mem::take(&mut r.pending), std::mem::take(&mut r.subs))
        };
        for (_, p) in pending {
            let _ = p.tx.send(Err(err.clone()));
        }
        drop(subs);
        self.down.cancel();
    }
}

/// The transport half of a connection: the writer queue and the shared router.
/// Dropping it closes the connection (both tasks stop, the socket is closed).
pub(crate) struct Link {
    out: mpsc::Sender<String>,
    shared: Arc<Shared>,
}

impl Drop for Link {
    fn drop(&mut self) {
        self.shared.close(Error::new(
            ErrorKind::Closed,
            "the client closed the connection",
        ));
    }
}

impl Link {
    /// Starts the reader and writer tasks over a frame stream and sink.
    pub fn start<R, W>(reader: R, writer: W, peer: String) -> Link
    where
        R: Stream<Item = Result<String>> + Send + Unpin + 'static,
        W: Sink<String, Error = Error> + Send + Unpin + 'static,
    {
        let shared = Arc::new(Shared {
            router: Mutex::new(Router::default()),
            next_id: AtomicU64::new(1),
            down: CancellationToken::new(),
            peer,
        });
        let (out, rx) = mpsc::channel(WRITE_QUEUE);
        tokio::spawn(write_loop(writer, rx, Arc::clone(&shared)));
        tokio::spawn(read_loop(reader, Arc::clone(&shared)));
        Link { out, shared }
    }

    /// Calls `method` and waits at most `timeout` for the answer.
    pub async fn call(&self, method: &str, params: Value, timeout: Duration) -> Result<Value> {
        request(&self.out, &self.shared, method, params, timeout, None).await
    }

    /// Describes the peer (for messages).
    pub fn peer(&self) -> &str {
        &self.shared.peer
    }

    /// The connection, handshake done.
    pub fn finish(self, hello: Hello, discovery: Option<Discovery>) -> Conn {
        Conn {
            link: self,
            hello,
            discovery,
        }
    }
}

/// A live, checked connection. Dropping it closes it.
pub(crate) struct Conn {
    link: Link,
    /// The handshake answer.
    pub hello: Hello,
    /// The discovery file this connection was found through, if any.
    pub discovery: Option<Discovery>,
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conn")
            .field("peer", &self.link.shared.peer)
            .field("instance_id", &self.hello.instance_id)
            .finish_non_exhaustive()
    }
}

impl Conn {
    /// Calls `method` and waits at most `timeout` for the answer.
    pub async fn call(&self, method: &str, params: Value, timeout: Duration) -> Result<Value> {
        self.link.call(method, params, timeout).await
    }

    /// A subscribe call: when the reply arrives, its `sub` is routed to `target`.
    pub async fn subscribe(
        &self,
        method: &str,
        params: Value,
        timeout: Duration,
        target: SubTarget,
    ) -> Result<Value> {
        request(
            &self.link.out,
            &self.link.shared,
            method,
            params,
            timeout,
            Some(target),
        )
        .await
    }

    /// Sends a request whose answer nobody waits for (best effort, never blocks).
    pub fn send_detached(&self, method: &str, params: Value) {
        let id = self.link.shared.next_id.fetch_add(1, Ordering::Relaxed);
        let line = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
        let _ = self.link.out.try_send(line.to_string());
    }

    /// Stops routing events of `sub` (its queue ends).
    pub fn forget_sub(&self, sub: u64) {
        self.link.shared.router().subs.remove(&sub);
    }

    /// True once the connection is down.
    pub fn is_closed(&self) -> bool {
        self.link.shared.down.is_cancelled()
    }

    /// The `daemon.reloaded` notice this connection received, if any.
    pub fn reloaded(&self) -> Option<DaemonNotice> {
        self.link.shared.router().reloaded.clone()
    }

    /// Describes the peer (for messages).
    pub fn peer(&self) -> &str {
        self.link.peer()
    }
}

/// Removes a pending call's entry when dropped.
struct Forget<'a> {
    shared: &'a Shared,
    id: u64,
}

impl Drop for Forget<'_> {
    fn drop(&mut self) {
        self.shared.router().pending.remove(&self.id);
    }
}

async fn request(
    out: &mpsc::Sender<String>,
    shared: &Arc<Shared>,
    method: &str,
    params: Value,
    timeout: Duration,
    sub: Option<SubTarget>,
) -> Result<Value> {
    let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
    let (tx, rx) = oneshot::channel();
    {
        let mut r = shared.router();
        if let Some(e) = &r.closed {
            return Err(e.clone());
        }
        r.pending.insert(id, Pending { tx, sub });
    }
    // Forget the entry however this ends (answered, timed out, or the caller's
    // future dropped), so abandoned calls never accumulate.
    let _forget = Forget { shared, id };
    let line = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}).to_string();
    let outcome = tokio::time::timeout(timeout, async {
        if out.send(line).await.is_err() {
            return Err(Error::new(
                ErrorKind::Closed,
                format!("the connection to the daemon ({}) is closed", shared.peer),
            ));
        }
        match rx.await {
            Ok(answer) => answer,
            Err(_) => Err(Error::new(
                ErrorKind::Closed,
                format!("the connection to the daemon ({}) closed", shared.peer),
            )),
        }
    })
    .await;
    match outcome {
        Ok(answer) => answer,
        Err(_) => Err(Error::new(
            ErrorKind::Timeout,
            format!(
                "{method} got no answer from the daemon ({}) within {:.1}s",
                shared.peer,
                timeout.as_secs_f64()
            ),
        )),
    }
}

async fn write_loop<W>(mut sink: W, mut rx: mpsc::Receiver<String>, shared: Arc<Shared>)
where
    W: Sink<String, Error = Error> + Unpin,
{
    loop {
        let first = tokio::select! {
            f = rx.recv() => f,
            _ = shared.down.cancelled() => break,
        };
        let Some(line) = first else { break };
        let mut result = sink.feed(line).await;
        // Batch whatever else is queued into one flush.
        while result.is_ok() {
            match rx.try_recv() {
                Ok(more) => result = sink.feed(more).await,
                Err(_) => break,
            }
        }
        if result.is_ok() {
            result = sink.flush().await;
        }
        if let Err(e) = result {
            shared.close(Error::new(
                ErrorKind::Closed,
                format!(
                    "the connection to the daemon ({}) failed: {}",
                    shared.peer,
                    e.message()
                ),
            ));
            // A sink that failed must not be polled again (some adapters panic).
            return;
        }
    }
    let _ = sink.close().await;
}

async fn read_loop<R>(mut reader: R, shared: Arc<Shared>)
where
    R: Stream<Item = Result<String>> + Unpin,
{
    let reason = loop {
        let next = tokio::select! {
            n = reader.next() => n,
            _ = shared.down.cancelled() => return,
        };
        let frame = match next {
            None => {
                break Error::new(
                    ErrorKind::Closed,
                    format!("the daemon ({}) closed the connection", shared.peer),
                );
            }
            Some(Err(e)) => break e,
            Some(Ok(f)) => f,
        };
        if frame.trim().is_empty() {
            continue;
        }
        let value: Value = match serde_json::from_str(&frame) {
            Ok(v) => v,
            Err(e) => {
                break Error::new(
                    ErrorKind::Protocol,
                    format!(
                        "the peer on {} is not an r1 daemon: it sent a line that is not JSON ({e})",
                        shared.peer
                    ),
                );
            }
        };
        if let Err(e) = route(&shared, value) {
            break e;
        }
    };
    shared.close(reason);
}

/// Routes one incoming message. An error means the peer does not speak r1's
/// protocol and the connection must close.
fn route(shared: &Shared, mut v: Value) -> Result<()> {
    let not_r1 = |what: &str| {
        Error::new(
            ErrorKind::Protocol,
            format!("the peer on {} is not an r1 daemon: {what}", shared.peer),
        )
    };
    if !v.is_object() {
        return Err(not_r1("it sent a message that is not a JSON object"));
    }
    if let Some(method) = v.get("method").and_then(Value::as_str).map(str::to_owned) {
        let params = v.get_mut("params").map(Value::take).unwrap_or(Value::Null);
        match method.as_str() {
            "$/event" => {
                let Some(sub) = params.get("sub").and_then(Value::as_u64) else {
                    return Err(not_r1("a $/event without a sub"));
                };
                let mut r = shared.router();
                if let Some(tx) = r.subs.get(&sub)
                    && tx.try_send(SubMsg::Event(params)).is_err()
                {
                    // Full (the consumer fell behind) or gone: stop routing; the
                    // subscription notices its queue ended and re-subscribes from
                    // its last seq, so nothing is lost and memory stays bounded.
                    r.subs.remove(&sub);
                }
            }
            "$/daemon" => {
                let notice: DaemonNotice = serde_json::from_value(params)
                    .map_err(|e| not_r1(&format!("a malformed $/daemon notice ({e})")))?;
                let mut r = shared.router();
                if notice.kind == "daemon.reloaded" {
                    r.reloaded = Some(notice.clone());
                }
                for tx in r.subs.values() {
                    let _ = tx.try_send(SubMsg::Daemon(notice.clone()));
                }
            }
            other => {
                tracing::debug!(method = other, "ignoring an unknown notification");
            }
        }
        return Ok(());
    }
    let Some(id) = v.get("id").and_then(Value::as_u64) else {
        // An answer with `"id": null` is the daemon failing to read a request we
        // sent; nothing can be matched to it.
        if let Some(err) = v.get("error") {
            tracing::debug!(error = %err, "the daemon could not read a request");
            return Ok(());
        }
        return Err(not_r1("a message with neither method nor numeric id"));
    };
    let pending = shared.router().pending.remove(&id);
    let Some(pending) = pending else {
        // A detached request's answer, or one that timed out.
        return Ok(());
    };
    let answer = if let Some(err) = v.get_mut("error") {
        match serde_json::from_value::<RpcErrorObject>(err.take()) {
            Ok(obj) => Err(Error::from_rpc(obj)),
            Err(e) => Err(not_r1(&format!("a malformed error object ({e})"))),
        }
    } else if let Some(result) = v.get_mut("result") {
        let result = result.take();
        if let (Some(target), Some(sub)) = (pending.sub, result.get("sub").and_then(Value::as_u64))
        {
            let mut r = shared.router();
            if target.want_reloaded
                && let Some(n) = r.reloaded.clone()
            {
                let _ = target.tx.try_send(SubMsg::Daemon(n));
            }
            r.subs.insert(sub, target.tx);
        }
        Ok(result)
    } else {
        Err(not_r1("a response with neither result nor error"))
    };
    let _ = pending.tx.send(answer);
    Ok(())
}
