//! What every transport shares: the hub, credentials, daemon facts, and the
//! registry of live connections (for `$/daemon` notices, idle exit and shutdown).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio::task::AbortHandle;
use tokio_util::sync::CancellationToken;

use super::auth::{Auth, Scope};
use super::http::HttpConfig;
use crate::session::hub::Hub;

/// Frames queued per connection before a writer applies back-pressure.
pub const OUTBOUND_QUEUE: usize = 1024;

/// Which transport a call came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// The unix socket (peer uid checked; privileged methods allowed).
    Unix,
    /// `POST /v1/rpc` (no subscriptions).
    Http,
    /// JSON-RPC over WebSocket.
    WebSocket,
}

/// Who is calling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The transport.
    pub transport: Transport,
    /// What the credentials allow.
    pub scope: Scope,
}

/// Fixed facts about this daemon instance.
#[derive(Debug, Clone)]
pub struct DaemonInfo {
    /// Our pid.
    pub pid: u32,
    /// Fresh per start.
    pub instance_id: String,
    /// RFC 3339.
    pub started_at: String,
    /// For uptime.
    pub started: Instant,
    /// Unix socket, if on.
    pub sock_path: Option<PathBuf>,
    /// Loopback port, if on.
    pub port: Option<u16>,
    /// The home.
    pub home: PathBuf,
    /// `log/r1.log`.
    pub log_path: PathBuf,
}

/// One streaming connection (unix socket or WebSocket).
#[derive(Debug)]
pub struct Conn {
    /// Registry id.
    pub id: u64,
    /// Who is on the other end.
    pub caller: Caller,
    /// Frames to write (responses, `$/event`, `$/daemon`).
    pub out: mpsc::Sender<String>,
    /// Cancelled when the connection must close (peer gone, token rotated, shutdown).
    pub closed: CancellationToken,
    subs: Mutex<HashMap<u64, AbortHandle>>,
}

impl Conn {
    /// Records a subscription's task so unsubscribe and close can stop it.
    pub fn add_sub(&self, sub: u64, task: AbortHandle) {
        self.subs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(sub, task);
    }

    /// Stops a subscription; false if it was not ours.
    pub fn remove_sub(&self, sub: u64) -> bool {
        match self
            .subs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&sub)
        {
            Some(h) => {
                h.abort();
                true
            }
            None => false,
        }
    }

    /// Number of live subscriptions.
    pub fn sub_count(&self) -> usize {
        self.subs.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        for (_, h) in self.subs.lock().unwrap_or_else(|p| p.into_inner()).drain() {
            h.abort();
        }
    }
}

/// Shared daemon state.
#[derive(Debug)]
pub struct DaemonState {
    /// Sessions.
    pub hub: Arc<Hub>,
    /// Credentials and pins.
    pub auth: Auth,
    /// Facts.
    pub info: DaemonInfo,
    /// Cancelled to begin graceful shutdown (listeners stop accepting).
    pub shutdown: CancellationToken,
    /// Cancelled at the end of shutdown: every connection closes (after the
    /// `daemon.stopping` notice is queued).
    pub closing: CancellationToken,
    /// Grace for drivers at shutdown (seconds × 1000), settable by `daemon.shutdown`.
    pub grace_ms: AtomicU64,
    next_conn: AtomicU64,
    next_sub: AtomicU64,
    conns: Mutex<HashMap<u64, Weak<Conn>>>,
    last_idle_change: Mutex<Instant>,
    http_config: Mutex<HttpConfig>,
}

impl DaemonState {
    /// Assembles the state.
    pub fn new(
        hub: Arc<Hub>,
        auth: Auth,
        info: DaemonInfo,
        shutdown: CancellationToken,
        grace: Duration,
    ) -> DaemonState {
        DaemonState {
            hub,
            auth,
            info,
            shutdown,
            closing: CancellationToken::new(),
            grace_ms: AtomicU64::new(u64::try_from(grace.as_millis()).unwrap_or(u64::MAX)),
            next_conn: AtomicU64::new(1),
            next_sub: AtomicU64::new(1),
            conns: Mutex::new(HashMap::new()),
            last_idle_change: Mutex::new(Instant::now()),
            http_config: Mutex::new(HttpConfig::default()),
        }
    }

    /// The loopback listener's limits and keepalive timings (read per connection).
    pub fn http_config(&self) -> HttpConfig {
        self.http_config
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Replaces the loopback listener's timings; connections accepted afterwards use
    /// them (tests shorten the keepalive intervals this way).
    #[doc(hidden)]
    pub fn set_http_config(&self, cfg: HttpConfig) {
        *self.http_config.lock().unwrap_or_else(|p| p.into_inner()) = cfg;
    }

    /// A fresh subscription id (unique across the daemon).
    pub fn next_sub_id(&self) -> u64 {
        self.next_sub.fetch_add(1, Ordering::Relaxed)
    }

    /// Registers a streaming connection; returns it and the receiver of its frames.
    pub fn register(&self, caller: Caller) -> (Arc<Conn>, mpsc::Receiver<String>) {
        let (tx, rx) = mpsc::channel(OUTBOUND_QUEUE);
        let conn = Arc::new(Conn {
            id: self.next_conn.fetch_add(1, Ordering::Relaxed),
            caller,
            out: tx,
            closed: self.closing.child_token(),
            subs: Mutex::new(HashMap::new()),
        });
        let mut conns = self.conns.lock().unwrap_or_else(|p| p.into_inner());
        conns.retain(|_, w| w.strong_count() > 0);
        conns.insert(conn.id, Arc::downgrade(&conn));
        self.touch();
        (conn, rx)
    }

    /// Forgets a connection.
    pub fn unregister(&self, conn: &Conn) {
        self.conns
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&conn.id);
        self.touch();
    }

    /// Live streaming connections.
    pub fn connections(&self) -> Vec<Arc<Conn>> {
        self.conns
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .filter_map(Weak::upgrade)
            .collect()
    }

    /// Number of live streaming connections.
    pub fn connection_count(&self) -> usize {
        self.conns
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .filter(|w| w.strong_count() > 0)
            .count()
    }

    /// Sends a `$/daemon` notice to every connection (never blocks on a slow one).
    pub fn broadcast_notice(&self, kind: &str, data: serde_json::Value) {
        let line = crate::rpc::envelope::notification(
            "$/daemon",
            &serde_json::json!({"kind": kind, "at": crate::time_fmt::now_seconds(), "data": data}),
        );
        for c in self.connections() {
            let _ = c.out.try_send(line.clone());
        }
    }

    /// Marks activity for `--idle-exit`.
    pub fn touch(&self) {
        *self
            .last_idle_change
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Instant::now();
    }

    /// How long nothing has been connected and no session running.
    pub fn idle_for(&self) -> Option<Duration> {
        if self.connection_count() > 0 || self.hub.running_count() > 0 {
            self.touch();
            return None;
        }
        Some(
            self.last_idle_change
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .elapsed(),
        )
    }

    /// The `$/daemon daemon.reloaded` line for a new connection, if this start
    /// reattached sessions.
    pub fn reloaded_notice(&self) -> Option<String> {
        self.hub.reloaded().map(|r| {
            crate::rpc::envelope::notification(
                "$/daemon",
                &serde_json::json!({"kind": "daemon.reloaded", "at": r.get("at").cloned().unwrap_or_default(), "data": r}),
            )
        })
    }
}
