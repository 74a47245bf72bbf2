//! [`BlockingClient`]: the same client for code without an async runtime (the C and
//! Python bindings, scripts), after mini-redis's `blocking_client`.
//!
//! It owns a small multi-thread runtime (one worker), so the connection's reader and
//! each subscription's driver keep running between calls. A blocking call spawns
//! its future on that runtime — built inside the task, so nothing tokio-bound is
//! created outside it — and waits on a plain channel. Unlike `Runtime::block_on`,
//! that never panics wherever it is called from (a C thread, a `spawn_blocking`
//! thread, even inside another runtime, where it blocks like any blocking call),
//! and one `BlockingClient` can be shared between threads (`Send + Sync`).
//! [`BlockingClient::dial_on_caller_thread`] instead drives a current-thread
//! runtime from the calling thread, for short-lived programs such as the CLI.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio_util::sync::CancellationToken;

use super::api::Client;
use super::dial::{DialOptions, dial};
use super::subscription::Subscription;
use super::types::{
    DaemonNotice, Hello, Info, MintedToken, ReadPage, SessionInfo, StartOptions, StartResult,
    SubEvent, SubscribeReply,
};
use super::ws::{WsOptions, dial_ws};
use crate::error::{Error, ErrorKind, Result};
use crate::session::state::SessionState;

/// Owns the runtime; shutting it down never blocks (it may be dropped anywhere,
/// even inside another runtime, where a blocking shutdown would panic).
struct Rt {
    rt: Option<tokio::runtime::Runtime>,
    /// Calls run on the calling thread (a current-thread runtime) instead of on a
    /// worker: no thread to start and no hand-off per call, which is most of a
    /// short-lived CLI process's cost.
    on_caller_thread: bool,
}

impl Drop for Rt {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

impl Rt {
    fn new() -> Result<Arc<Rt>> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("r1-client")
            .enable_all()
            .build()
            .map_err(runtime_error)?;
        Ok(Arc::new(Rt {
            rt: Some(rt),
            on_caller_thread: false,
        }))
    }

    fn new_on_caller_thread() -> Result<Arc<Rt>> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(runtime_error)?;
        Ok(Arc::new(Rt {
            rt: Some(rt),
            on_caller_thread: true,
        }))
    }

    /// Runs the future `make()` returns on this runtime and waits for its output.
    fn run<F, Fut, T>(&self, make: F) -> Result<T>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Result<T>> + Send + 'static,
        T: Send + 'static,
    {
        let stopped = || Error::new(ErrorKind::Closed, "the client runtime has stopped");
        let Some(rt) = &self.rt else {
            return Err(stopped());
        };
        if self.on_caller_thread {
            // `block_on` panics inside another runtime; say so instead.
            if tokio::runtime::Handle::try_current().is_ok() {
                return Err(Error::new(
                    ErrorKind::InvalidState,
                    "a caller-thread BlockingClient cannot be used from inside an async \
                     runtime (use BlockingClient::dial, or the async Client)",
                ));
            }
            return rt.block_on(make());
        }
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        rt.spawn(async move {
            let _ = tx.send(make().await);
        });
        rx.recv().unwrap_or_else(|_| Err(stopped()))
    }
}

fn runtime_error(e: std::io::Error) -> Error {
    Error::new(
        ErrorKind::Io,
        format!("cannot start the client runtime: {e}"),
    )
}

/// A blocking, thread-safe [`Client`]. Cheap to clone (clones share the
/// connection and the runtime).
///
/// ```no_run
/// # fn demo() -> r1_core::Result<()> {
/// let client = r1_core::BlockingClient::dial(r1_core::DialOptions::new())?;
/// println!("daemon pid {}", client.info()?.pid);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct BlockingClient {
    client: Client,
    rt: Arc<Rt>,
}

impl std::fmt::Debug for BlockingClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlockingClient")
            .field("client", &self.client)
            .finish_non_exhaustive()
    }
}

impl BlockingClient {
    /// [`dial`] on a fresh runtime.
    pub fn dial(opts: DialOptions) -> Result<BlockingClient> {
        let rt = Rt::new()?;
        let client = rt.run(move || dial(opts))?;
        Ok(BlockingClient { client, rt })
    }

    /// [`dial`] on a fresh current-thread runtime driven by the calling thread:
    /// the connection (and any subscription) makes progress only while a call on
    /// this client is waiting. For short-lived single-threaded programs (the `r1`
    /// CLI), where starting a worker thread and handing every call to it is most
    /// of the cost. Calls made from inside an async runtime fail with
    /// `InvalidParams` instead of blocking it.
    pub fn dial_on_caller_thread(opts: DialOptions) -> Result<BlockingClient> {
        let rt = Rt::new_on_caller_thread()?;
        let client = rt.run(move || dial(opts))?;
        Ok(BlockingClient { client, rt })
    }

    /// [`dial_ws`] on a fresh runtime.
    pub fn dial_ws(opts: WsOptions) -> Result<BlockingClient> {
        let rt = Rt::new()?;
        let client = rt.run(move || dial_ws(opts))?;
        Ok(BlockingClient { client, rt })
    }

    /// The async client underneath (to use it from async code, on any runtime).
    pub fn as_async(&self) -> &Client {
        &self.client
    }

    fn run<F, Fut, T>(&self, f: F) -> Result<T>
    where
        F: FnOnce(Client) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T>> + Send + 'static,
        T: Send + 'static,
    {
        let c = self.client.clone();
        self.rt.run(move || f(c))
    }

    /// See [`Client::handshake`].
    pub fn handshake(&self) -> Hello {
        self.client.handshake()
    }
    /// See [`Client::reloaded`].
    pub fn reloaded(&self) -> Option<DaemonNotice> {
        self.client.reloaded()
    }
    /// See [`Client::is_connected`].
    pub fn is_connected(&self) -> bool {
        self.client.is_connected()
    }
    /// See [`Client::call`].
    pub fn call(&self, method: &str, params: Value) -> Result<Value> {
        let method = method.to_owned();
        self.run(move |c| async move { c.call(&method, params).await })
    }
    /// See [`Client::call_with_timeout`].
    pub fn call_with_timeout(
        &self,
        method: &str,
        params: Value,
        timeout: Duration,
    ) -> Result<Value> {
        let method = method.to_owned();
        self.run(move |c| async move { c.call_with_timeout(&method, params, timeout).await })
    }
    /// See [`Client::hello`].
    pub fn hello(&self) -> Result<Hello> {
        self.run(move |c| async move { c.hello().await })
    }
    /// See [`Client::info`].
    pub fn info(&self) -> Result<Info> {
        self.run(move |c| async move { c.info().await })
    }
    /// See [`Client::shutdown`].
    pub fn shutdown(&self, grace: Option<Duration>) -> Result<()> {
        self.run(move |c| async move { c.shutdown(grace).await })
    }
    /// See [`Client::rotate_token`].
    pub fn rotate_token(&self) -> Result<String> {
        self.run(move |c| async move { c.rotate_token().await })
    }
    /// See [`Client::mint_token`].
    pub fn mint_token(&self, scope: &str, ttl: Duration) -> Result<MintedToken> {
        let scope = scope.to_owned();
        self.run(move |c| async move { c.mint_token(&scope, ttl).await })
    }
    /// See [`Client::discover_methods`].
    pub fn discover_methods(&self) -> Result<Value> {
        self.run(move |c| async move { c.discover_methods().await })
    }
    /// See [`Client::start`].
    pub fn start(&self, opts: StartOptions) -> Result<StartResult> {
        self.run(move |c| async move { c.start(opts).await })
    }
    /// See [`Client::list`].
    pub fn list(&self, state: Option<SessionState>) -> Result<Vec<SessionInfo>> {
        self.run(move |c| async move { c.list(state).await })
    }
    /// See [`Client::get`].
    pub fn get(&self, session_id: &str) -> Result<SessionInfo> {
        let id = session_id.to_owned();
        self.run(move |c| async move { c.get(&id).await })
    }
    /// See [`Client::send`].
    pub fn send(&self, session_id: &str, text: &str) -> Result<u64> {
        let (id, text) = (session_id.to_owned(), text.to_owned());
        self.run(move |c| async move { c.send(&id, &text).await })
    }
    /// See [`Client::pause`].
    pub fn pause(&self, session_id: &str) -> Result<String> {
        let id = session_id.to_owned();
        self.run(move |c| async move { c.pause(&id).await })
    }
    /// See [`Client::resume`].
    pub fn resume(&self, session_id: &str) -> Result<String> {
        let id = session_id.to_owned();
        self.run(move |c| async move { c.resume(&id).await })
    }
    /// See [`Client::cancel`].
    pub fn cancel(&self, session_id: &str, reason: Option<&str>) -> Result<String> {
        let id = session_id.to_owned();
        let reason = reason.map(str::to_owned);
        self.run(move |c| async move { c.cancel(&id, reason.as_deref()).await })
    }
    /// See [`Client::delete`].
    pub fn delete(&self, session_id: &str) -> Result<String> {
        let id = session_id.to_owned();
        self.run(move |c| async move { c.delete(&id).await })
    }
    /// See [`Client::read`].
    pub fn read(
        &self,
        session_id: &str,
        since_seq: u64,
        epoch: Option<&str>,
        limit: Option<u64>,
    ) -> Result<ReadPage> {
        let id = session_id.to_owned();
        let epoch = epoch.map(str::to_owned);
        self.run(move |c| async move { c.read(&id, since_seq, epoch.as_deref(), limit).await })
    }
    /// See [`Client::unsubscribe`].
    pub fn unsubscribe(&self, sub: u64) -> Result<()> {
        self.run(move |c| async move { c.unsubscribe(sub).await })
    }

    /// See [`Client::subscribe`].
    pub fn subscribe(
        &self,
        session_id: &str,
        since_seq: Option<u64>,
        epoch: Option<&str>,
    ) -> Result<BlockingSubscription> {
        let id = session_id.to_owned();
        let epoch = epoch.map(str::to_owned);
        let sub =
            self.run(move |c| async move { c.subscribe(&id, since_seq, epoch.as_deref()).await })?;
        Ok(BlockingSubscription::new(sub, Arc::clone(&self.rt)))
    }

    /// See [`Client::subscribe_bus`].
    pub fn subscribe_bus(&self, since_seq: Option<u64>) -> Result<BlockingSubscription> {
        let sub = self.run(move |c| async move { c.subscribe_bus(since_seq).await })?;
        Ok(BlockingSubscription::new(sub, Arc::clone(&self.rt)))
    }
}

/// A blocking [`Subscription`]: [`next_timeout`](Self::next_timeout) waits for the
/// next item; [`close`](Self::close) may be called from any thread and wakes a
/// waiting `next_timeout` with [`ErrorKind::Closed`]. Also an `Iterator`.
pub struct BlockingSubscription {
    sub: Arc<tokio::sync::Mutex<Option<Subscription>>>,
    reply: SubscribeReply,
    closed: CancellationToken,
    stop: CancellationToken,
    rt: Arc<Rt>,
}

impl std::fmt::Debug for BlockingSubscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlockingSubscription")
            .field("reply", &self.reply)
            .field("closed", &self.closed.is_cancelled())
            .finish_non_exhaustive()
    }
}

impl BlockingSubscription {
    fn new(sub: Subscription, rt: Arc<Rt>) -> BlockingSubscription {
        BlockingSubscription {
            reply: sub.reply().clone(),
            stop: sub.stopper(),
            sub: Arc::new(tokio::sync::Mutex::new(Some(sub))),
            closed: CancellationToken::new(),
            rt,
        }
    }

    /// The daemon's reply to the first subscribe.
    pub fn reply(&self) -> &SubscribeReply {
        &self.reply
    }

    /// Waits up to `timeout` for the next item.
    ///
    /// `Ok(Some(item))`: an item. `Ok(None)`: nothing within `timeout` (try again).
    /// `Err` of kind [`ErrorKind::Closed`]: the stream has ended (the session ended
    /// after its `session.ended` item, or [`close`](Self::close) was called); any
    /// other `Err` is the stream's final error.
    pub fn next_timeout(&self, timeout: Duration) -> Result<Option<SubEvent>> {
        let closed = self.closed.clone();
        let sub = Arc::clone(&self.sub);
        self.rt.run(move || async move {
            let was_closed = || Error::new(ErrorKind::Closed, "the subscription was closed");
            let ended = || Error::new(ErrorKind::Closed, "the subscription has ended");
            let mut guard = tokio::select! {
                g = sub.lock() => g,
                _ = closed.cancelled() => return Err(was_closed()),
            };
            let Some(s) = guard.as_mut() else {
                return Err(ended());
            };
            tokio::select! {
                item = s.next() => match item {
                    Some(Ok(ev)) => Ok(Some(ev)),
                    Some(Err(e)) => {
                        *guard = None;
                        Err(e)
                    }
                    None => {
                        *guard = None;
                        Err(ended())
                    }
                },
                _ = tokio::time::sleep(timeout) => Ok(None),
                _ = closed.cancelled() => Err(was_closed()),
            }
        })
    }

    /// Ends the subscription (the daemon's side too). Thread-safe; a
    /// `next_timeout` blocked in another thread returns [`ErrorKind::Closed`].
    pub fn close(&self) {
        self.closed.cancel();
        self.stop.cancel();
    }
}

impl Drop for BlockingSubscription {
    fn drop(&mut self) {
        self.close();
    }
}

impl Iterator for BlockingSubscription {
    type Item = Result<SubEvent>;

    /// Blocks until the next item; `None` once the stream has ended or was closed.
    fn next(&mut self) -> Option<Self::Item> {
        loop {
            match self.next_timeout(Duration::from_secs(3600)) {
                Ok(Some(ev)) => return Some(Ok(ev)),
                Ok(None) => continue,
                Err(e) if e.kind() == ErrorKind::Closed => return None,
                Err(e) => return Some(Err(e)),
            }
        }
    }
}
