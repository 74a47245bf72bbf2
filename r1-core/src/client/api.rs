//! [`Client`]: a cheap-to-clone handle on one daemon connection, usable from many
//! tasks at once, with `call` and a typed helper for every method of DESIGN §7.
//!
//! Calls are pipelined over one connection. If the connection is down when a call
//! starts (the daemon restarted), the client dials again with its original options
//! before sending, so nothing is ever sent twice; a call in flight when the
//! connection drops fails with [`ErrorKind::Closed`].

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use super::conn::{Conn, SUB_QUEUE, SubTarget};
use super::dial::{self, DialOptions};
use super::subscription::{Subscription, Target};
use super::types::{
    DaemonNotice, Hello, Info, MintedToken, ReadPage, SessionInfo, StartOptions, StartResult,
    SubscribeReply,
};
use super::ws::{self, WsOptions};
use crate::discovery::Discovery;
use crate::error::{Error, ErrorKind, Result};
use crate::session::state::SessionState;

/// How a client reaches the daemon again after losing it.
#[derive(Debug, Clone)]
pub(crate) enum Dialer {
    /// Unix socket, through discovery (and spawning) per the options.
    Unix(DialOptions),
    /// WebSocket to an explicit address.
    Ws(WsOptions),
}

impl Dialer {
    async fn connect(&self) -> Result<Conn> {
        match self {
            Dialer::Unix(o) => dial::connect(o).await,
            Dialer::Ws(o) => ws::connect(o).await,
        }
    }

    fn call_timeout(&self) -> Duration {
        match self {
            Dialer::Unix(o) => o.call_timeout,
            Dialer::Ws(o) => o.call_timeout,
        }
    }

    fn client_name(&self) -> Option<&str> {
        match self {
            Dialer::Unix(o) => o.client_name.as_deref(),
            Dialer::Ws(o) => o.client_name.as_deref(),
        }
    }

    pub(crate) fn reconnect_for(&self) -> Duration {
        match self {
            Dialer::Unix(o) => o.reconnect_for,
            Dialer::Ws(o) => o.reconnect_for,
        }
    }
}

pub(crate) struct Inner {
    dialer: Dialer,
    conn: Mutex<Arc<Conn>>,
    /// Single-flight for re-dialing: concurrent callers wait for one dial.
    redial: tokio::sync::Mutex<()>,
    call_timeout: Duration,
}

/// A connection to the r1 daemon. Clone it freely: clones share the connection.
///
/// ```no_run
/// # async fn demo() -> r1_core::Result<()> {
/// use r1_core::{DialOptions, StartOptions, dial};
/// let client = dial(DialOptions::new()).await?;
/// let s = client.start(StartOptions::new("/home/me/project")).await?;
/// let seq = client.send(&s.session_id, "ls").await?;
/// let mut events = client.subscribe(&s.session_id, Some(0), None).await?;
/// while let Some(item) = events.next().await {
///     println!("{:?}", item?);
/// }
/// # let _ = seq; Ok(()) }
/// ```
#[derive(Clone)]
pub struct Client {
    pub(crate) inner: Arc<Inner>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("conn", &*self.current())
            .finish_non_exhaustive()
    }
}

fn decode<T: DeserializeOwned>(method: &str, v: Value) -> Result<T> {
    serde_json::from_value(v).map_err(|e| {
        Error::new(
            ErrorKind::Protocol,
            format!("unexpected {method} result from the daemon: {e}"),
        )
    })
}

fn str_field(method: &str, v: &Value, field: &str) -> Result<String> {
    v.get(field)
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| {
            Error::new(
                ErrorKind::Protocol,
                format!("unexpected {method} result from the daemon: no {field}"),
            )
        })
}

impl Client {
    pub(crate) fn from_conn(conn: Conn, dialer: Dialer) -> Client {
        Client {
            inner: Arc::new(Inner {
                call_timeout: dialer.call_timeout(),
                dialer,
                conn: Mutex::new(Arc::new(conn)),
                redial: tokio::sync::Mutex::new(()),
            }),
        }
    }

    fn current(&self) -> Arc<Conn> {
        Arc::clone(&self.inner.conn.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// The connection, dialed again first if it is down.
    pub(crate) async fn live_conn(&self) -> Result<Arc<Conn>> {
        let cur = self.current();
        if !cur.is_closed() {
            return Ok(cur);
        }
        let _one = self.inner.redial.lock().await;
        let cur = self.current();
        if !cur.is_closed() {
            return Ok(cur);
        }
        let fresh = Arc::new(self.inner.dialer.connect().await?);
        tracing::debug!(peer = fresh.peer(), instance_id = %fresh.hello.instance_id, "reconnected");
        *self.inner.conn.lock().unwrap_or_else(|p| p.into_inner()) = Arc::clone(&fresh);
        Ok(fresh)
    }

    pub(crate) fn dialer(&self) -> &Dialer {
        &self.inner.dialer
    }

    /// The `daemon.hello` answer of the current connection: which daemon this is.
    pub fn handshake(&self) -> Hello {
        self.current().hello.clone()
    }

    /// The discovery file the current connection was found through (`None` when
    /// dialed by socket path or WebSocket).
    pub fn discovery(&self) -> Option<Discovery> {
        self.current().discovery.clone()
    }

    /// The `daemon.reloaded` notice the current connection received (a daemon
    /// that reattached sessions at start sends it to every new connection).
    pub fn reloaded(&self) -> Option<DaemonNotice> {
        self.current().reloaded()
    }

    /// True while the current connection is up.
    pub fn is_connected(&self) -> bool {
        !self.current().is_closed()
    }

    /// Dials again now if the connection is down (calls do this by themselves).
    pub async fn reconnect(&self) -> Result<()> {
        self.live_conn().await.map(drop)
    }

    /// Calls any method with the default timeout. A JSON-RPC error comes back as
    /// [`Error::from_rpc`]: kind [`ErrorKind::Rpc`], [`Error::rpc`] gives the code,
    /// message and `data` (`data.kind` is r1's error kind).
    pub async fn call(&self, method: &str, params: Value) -> Result<Value> {
        self.call_with_timeout(method, params, self.inner.call_timeout)
            .await
    }

    /// [`call`](Self::call) with an explicit timeout ([`ErrorKind::Timeout`] after it).
    pub async fn call_with_timeout(
        &self,
        method: &str,
        params: Value,
        timeout: Duration,
    ) -> Result<Value> {
        let conn = self.live_conn().await?;
        conn.call(method, params, timeout).await
    }

    /// `daemon.hello`: the handshake again (protocol version and instance).
    pub async fn hello(&self) -> Result<Hello> {
        let mut p = json!({"protocol_version": crate::discovery::PROTOCOL_VERSION});
        if let Some(n) = self.inner.dialer.client_name() {
            p["client"] = json!(n);
        }
        decode("daemon.hello", self.call("daemon.hello", p).await?)
    }

    /// `daemon.info`.
    pub async fn info(&self) -> Result<Info> {
        decode("daemon.info", self.call("daemon.info", json!({})).await?)
    }

    /// `daemon.shutdown`: asks the daemon to stop gracefully, giving drivers
    /// `grace` (default 5 s). Returns once accepted, not once stopped.
    pub async fn shutdown(&self, grace: Option<Duration>) -> Result<()> {
        let p = match grace {
            Some(g) => json!({"grace_s": g.as_secs_f64()}),
            None => json!({}),
        };
        let v = self.call("daemon.shutdown", p).await?;
        if v.get("accepted") == Some(&Value::Bool(true)) {
            Ok(())
        } else {
            Err(Error::new(
                ErrorKind::Protocol,
                format!("unexpected daemon.shutdown result from the daemon: {v}"),
            ))
        }
    }

    /// `daemon.rotate_token` (unix socket only): returns `rotated_at`.
    pub async fn rotate_token(&self) -> Result<String> {
        let v = self.call("daemon.rotate_token", json!({})).await?;
        str_field("daemon.rotate_token", &v, "rotated_at")
    }

    /// `daemon.mint_token` (unix socket only): a bearer for `scope` (`"read"` or
    /// `"session:<id>"`) that expires after `ttl` (whole seconds).
    pub async fn mint_token(&self, scope: &str, ttl: Duration) -> Result<MintedToken> {
        let v = self
            .call(
                "daemon.mint_token",
                json!({"scope": scope, "ttl_s": ttl.as_secs()}),
            )
            .await?;
        decode("daemon.mint_token", v)
    }

    /// `rpc.discover`: the OpenRPC document of every method.
    pub async fn discover_methods(&self) -> Result<Value> {
        self.call("rpc.discover", json!({})).await
    }

    /// `session.start`.
    pub async fn start(&self, opts: StartOptions) -> Result<StartResult> {
        let p = serde_json::to_value(&opts).map_err(|e| {
            Error::invalid_params(format!("cannot encode session.start params: {e}"))
        })?;
        decode("session.start", self.call("session.start", p).await?)
    }

    /// `session.list`, optionally only sessions in `state`.
    pub async fn list(&self, state: Option<SessionState>) -> Result<Vec<SessionInfo>> {
        let p = match state {
            Some(s) => json!({"state": s.as_str()}),
            None => json!({}),
        };
        let mut v = self.call("session.list", p).await?;
        decode(
            "session.list",
            v.get_mut("sessions")
                .map(Value::take)
                .unwrap_or(Value::Null),
        )
    }

    /// `session.get`.
    pub async fn get(&self, session_id: &str) -> Result<SessionInfo> {
        decode(
            "session.get",
            self.call("session.get", json!({"session_id": session_id}))
                .await?,
        )
    }

    /// `session.send`: returns the seq of the `user.input` record (answered after
    /// it is on disk).
    pub async fn send(&self, session_id: &str, text: &str) -> Result<u64> {
        let v = self
            .call(
                "session.send",
                json!({"session_id": session_id, "text": text}),
            )
            .await?;
        v.get("seq").and_then(Value::as_u64).ok_or_else(|| {
            Error::new(
                ErrorKind::Protocol,
                format!("unexpected session.send result from the daemon: {v}"),
            )
        })
    }

    /// `session.pause`: returns `paused_at`.
    pub async fn pause(&self, session_id: &str) -> Result<String> {
        let v = self
            .call("session.pause", json!({"session_id": session_id}))
            .await?;
        str_field("session.pause", &v, "paused_at")
    }

    /// `session.resume`: returns `resumed_at`. Also restarts the driver of a
    /// session interrupted by a daemon restart (`paused-reattachable`).
    pub async fn resume(&self, session_id: &str) -> Result<String> {
        let v = self
            .call("session.resume", json!({"session_id": session_id}))
            .await?;
        str_field("session.resume", &v, "resumed_at")
    }

    /// `session.cancel`: ends the session; returns `ended_at`.
    pub async fn cancel(&self, session_id: &str, reason: Option<&str>) -> Result<String> {
        let mut p = json!({"session_id": session_id});
        if let Some(r) = reason {
            p["reason"] = json!(r);
        }
        let v = self.call("session.cancel", p).await?;
        str_field("session.cancel", &v, "ended_at")
    }

    /// `session.delete`: returns `deleted_at`.
    pub async fn delete(&self, session_id: &str) -> Result<String> {
        let v = self
            .call("session.delete", json!({"session_id": session_id}))
            .await?;
        str_field("session.delete", &v, "deleted_at")
    }

    /// `journal.read`: one page of records with seq > `since_seq` (0 = from the
    /// start), at most `limit` (daemon default 1000).
    pub async fn read(
        &self,
        session_id: &str,
        since_seq: u64,
        epoch: Option<&str>,
        limit: Option<u64>,
    ) -> Result<ReadPage> {
        let mut p = json!({"session_id": session_id, "since_seq": since_seq});
        if let Some(e) = epoch {
            p["epoch"] = json!(e);
        }
        if let Some(l) = limit {
            p["limit"] = json!(l);
        }
        let mut page: ReadPage = decode("journal.read", self.call("journal.read", p).await?)?;
        for r in &mut page.records {
            if r.epoch.is_empty() {
                r.epoch.clone_from(&page.epoch);
            }
        }
        Ok(page)
    }

    /// `session.subscribe` as a stream of [`SubEvent`](super::SubEvent)s that
    /// resumes across reconnects and daemon restarts. `since_seq`: records after it
    /// (0 = from the start, `None` = live only); `epoch`: the epoch that seq belongs
    /// to, if known. See [`Subscription`].
    pub async fn subscribe(
        &self,
        session_id: &str,
        since_seq: Option<u64>,
        epoch: Option<&str>,
    ) -> Result<Subscription> {
        Subscription::start(
            self.clone(),
            Target::Session(session_id.to_owned()),
            since_seq,
            epoch.map(str::to_owned),
        )
        .await
    }

    /// `daemon.subscribe`: the daemon's bus (`session.created`, `session.ended`,
    /// `daemon.reloaded`, …) as a [`Subscription`]. `since_seq`: `None` = live only.
    pub async fn subscribe_bus(&self, since_seq: Option<u64>) -> Result<Subscription> {
        Subscription::start(self.clone(), Target::Bus, since_seq, None).await
    }

    /// `session.unsubscribe` of a raw subscription id on the current connection.
    /// (A [`Subscription`] unsubscribes itself when dropped or on
    /// [`Subscription::unsubscribe`].)
    pub async fn unsubscribe(&self, sub: u64) -> Result<()> {
        self.call("session.unsubscribe", json!({"sub": sub}))
            .await
            .map(drop)
    }

    /// The raw subscribe call on `conn`, routing its events to a fresh queue.
    pub(crate) async fn subscribe_on(
        &self,
        conn: &Conn,
        method: &str,
        params: Value,
        want_reloaded: bool,
    ) -> Result<(
        SubscribeReply,
        tokio::sync::mpsc::Receiver<super::conn::SubMsg>,
    )> {
        let (tx, rx) = tokio::sync::mpsc::channel(SUB_QUEUE);
        let v = conn
            .subscribe(
                method,
                params,
                self.inner.call_timeout,
                SubTarget { tx, want_reloaded },
            )
            .await?;
        Ok((decode(method, v)?, rx))
    }
}
