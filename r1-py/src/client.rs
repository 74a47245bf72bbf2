//! `r1.dial()`, `r1.Client` and `r1.Subscription` (DESIGN §7, §8, §11), over
//! [`r1_core::client::BlockingClient`].
//!
//! Every helper is a `call` of its JSON-RPC method that returns the daemon's result
//! as Python values (a `dict` unless noted), so nothing the daemon answers is lost
//! in a typed middle layer. Calls release the GIL for their whole duration, so
//! Python threads sharing one `Client` run their calls in parallel (the connection
//! is pipelined).

use std::path::PathBuf;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use pyo3::prelude::*;
use pyo3::types::{PyList, PyType};
use r1_core::ErrorKind;
use r1_core::client::{BlockingClient, BlockingSubscription, DialOptions, WsOptions};
use r1_core::discovery::PROTOCOL_VERSION;
use r1_core::token::Token;
use serde_json::{Map, Value, json};

use crate::convert;
use crate::discovery::Discovery;
use crate::errors::{self, Result, guard, lock};
use crate::timeout;

/// How long one GIL-free wait for a subscription item lasts before the iterator
/// takes the GIL back to run signal handlers: Ctrl-C is seen within this.
const WAIT_SLICE: Duration = Duration::from_millis(100);

/// `journal.read`'s largest page.
const MAX_PAGE: u64 = 10_000;

/// Connects to the daemon of ``home`` (default: ``$R1_HOME``, else ``~/.r1``) and
/// returns a :class:`Client`.
///
/// Discovery → unix socket → ``daemon.hello`` (protocol version and instance id
/// checked). With ``spawn=True`` (the default) and no live daemon, starts
/// ``r1 serve --detach`` (the binary from ``$R1_BIN``, else beside the Python
/// executable, else on ``PATH``) and waits for it; racing dialers start one daemon.
/// ``timeout`` is the whole dial's budget in seconds, spawning included.
/// ``sock_path`` connects to that socket directly (no discovery, never spawns).
///
/// Keyword-only: ``port`` with ``token`` dials the loopback WebSocket instead (for a
/// scoped token from ``mint_token``; the daemon's ``/v1/hello`` proof is checked
/// before the token is sent; ``host`` is ``127.0.0.1``, ``localhost`` or ``::1``);
/// ``call_timeout`` (each call's default, 30 s), ``reconnect_for`` (how long calls
/// and subscriptions keep trying to reach a restarted daemon, 60 s),
/// ``client_name`` (shown in the daemon's log).
///
/// Raises ``DaemonNotFound`` (no daemon and ``spawn=False``, or the spawn failed:
/// the message names the log), ``UnsafeDiscovery``, ``AuthError`` (a WebSocket
/// token refused, or a peer that cannot prove it is the daemon), ``ProtocolError``
/// (not an r1 daemon, or another protocol version), ``Timeout``.
#[pyfunction]
#[pyo3(signature = (
    home = None,
    spawn = true,
    timeout = 2.0,
    sock_path = None,
    *,
    port = None,
    token = None,
    host = "127.0.0.1",
    call_timeout = 30.0,
    reconnect_for = 60.0,
    client_name = None,
))]
#[allow(clippy::too_many_arguments)] // DESIGN §11's four plus keyword-only extras
pub fn dial(
    py: Python<'_>,
    home: Option<PathBuf>,
    spawn: bool,
    timeout: f64,
    sock_path: Option<PathBuf>,
    port: Option<i128>,
    token: Option<String>,
    host: &str,
    call_timeout: f64,
    reconnect_for: f64,
    client_name: Option<String>,
) -> PyResult<Client> {
    guard(|| {
        let dial_for = timeout::seconds(timeout, "timeout")?;
        let call_for = timeout::seconds(call_timeout, "call_timeout")?;
        let retry_for = timeout::seconds(reconnect_for, "reconnect_for")?;
        let name = client_name.unwrap_or_else(|| "python".to_owned());
        let client = match (port, token) {
            (Some(port), Some(token)) => {
                if sock_path.is_some() {
                    return Err(errors::invalid_argument(
                        "pass either sock_path (unix socket) or port and token (WebSocket), not both",
                    ));
                }
                let opts =
                    WsOptions::new(host, convert::port(port, "port")?, Token::parse(&token)?)
                        .timeout(dial_for)
                        .call_timeout(call_for)
                        .reconnect_for(retry_for)
                        .client_name(name);
                py.detach(|| BlockingClient::dial_ws(opts))?
            }
            (None, None) => {
                let mut opts = DialOptions::new()
                    .spawn(spawn)
                    .timeout(dial_for)
                    .call_timeout(call_for)
                    .reconnect_for(retry_for)
                    .client_name(name);
                if let Some(h) = home {
                    opts = opts.home(h);
                }
                if let Some(s) = sock_path {
                    opts = opts.sock_path(s);
                }
                py.detach(|| BlockingClient::dial(opts))?
            }
            _ => {
                return Err(errors::invalid_argument(
                    "port and token go together: the WebSocket transport needs both",
                ));
            }
        };
        Ok(Client {
            inner: Mutex::new(Some(client)),
            subs: Mutex::new(Vec::new()),
        })
    })
}

/// A connection to the r1 daemon, from :func:`dial`. Thread-safe: share one
/// between threads (calls run in parallel, the GIL is released while waiting).
///
/// ``call(method, params)`` reaches every JSON-RPC method; the other methods are
/// typed shortcuts, one per method (see ``discover_methods()``). A call that finds
/// the connection down (the daemon restarted) reconnects first. Daemon errors raise
/// ``RpcError`` (``.code``, ``.message``, ``.data``). Use as a context manager, or
/// call :meth:`close`; a closed client raises ``ClosedError``.
#[pyclass(module = "r1", frozen)]
pub struct Client {
    /// `None` once closed.
    inner: Mutex<Option<BlockingClient>>,
    /// Subscriptions made through this client, closed with it.
    subs: Mutex<Vec<Weak<BlockingSubscription>>>,
}

impl Client {
    fn client(&self) -> Result<BlockingClient> {
        lock(&self.inner)
            .clone()
            .ok_or_else(|| errors::closed("the client is closed"))
    }

    /// One call without the GIL; `timeout` in seconds (`None`: the dial's
    /// `call_timeout`).
    fn call_value(
        &self,
        py: Python<'_>,
        method: &str,
        params: Value,
        timeout: Option<Duration>,
    ) -> Result<Value> {
        let c = self.client()?;
        let out = py.detach(|| match timeout {
            Some(t) => c.call_with_timeout(method, params, t),
            None => c.call(method, params),
        })?;
        Ok(out)
    }

    /// [`call_value`](Self::call_value) with the result converted to Python.
    fn call_py(&self, py: Python<'_>, method: &str, params: Value) -> Result<Py<PyAny>> {
        let v = self.call_value(py, method, params, None)?;
        Ok(convert::to_py(py, &v)?.unbind())
    }

    fn subscribe(
        &self,
        py: Python<'_>,
        session_id: Option<&str>,
        since_seq: Option<u64>,
        timeout: Option<f64>,
    ) -> Result<Subscription> {
        let idle = timeout::optional(timeout, "timeout")?;
        let c = self.client()?;
        let sub = py.detach(|| match session_id {
            Some(id) => c.subscribe(id, since_seq, None),
            None => c.subscribe_bus(since_seq),
        })?;
        let sub = Arc::new(sub);
        {
            let mut subs = lock(&self.subs);
            subs.retain(|w| w.strong_count() > 0);
            subs.push(Arc::downgrade(&sub));
        }
        // Closed meanwhile by another thread: do not hand out a live stream.
        if lock(&self.inner).is_none() {
            sub.close();
        }
        Ok(Subscription { sub, idle })
    }
}

/// A result field, or a `ProtocolError` naming what the daemon left out.
fn field<'a>(method: &str, v: &'a Value, name: &str) -> Result<&'a Value> {
    v.get(name).ok_or_else(|| {
        errors::Error::Core(r1_core::Error::new(
            ErrorKind::Protocol,
            format!("unexpected {method} result from the daemon: no {name}"),
        ))
    })
}

fn sid(session_id: &str) -> Value {
    json!({ "session_id": session_id })
}

#[pymethods]
impl Client {
    /// Calls any JSON-RPC ``method`` with ``params`` (a ``dict``, ``list`` or
    /// ``None``) and returns the result as Python values. ``timeout`` (seconds)
    /// overrides the dial's ``call_timeout``. Raises ``InvalidArgument`` when the
    /// params are not JSON-serialisable, ``RpcError`` when the daemon answers an
    /// error, ``Timeout`` when no answer comes in time.
    #[pyo3(signature = (method, params = None, timeout = None))]
    fn call(
        &self,
        py: Python<'_>,
        method: &str,
        params: Option<Bound<'_, PyAny>>,
        timeout: Option<f64>,
    ) -> PyResult<Py<PyAny>> {
        guard(|| {
            let params = match &params {
                None => Value::Object(Map::new()),
                Some(p) => {
                    let v = convert::from_py(p, "params")?;
                    if !v.is_object() && !v.is_array() {
                        return Err(errors::invalid_argument(format!(
                            "params must be a dict, a list or None, not {}",
                            p.get_type().name()?
                        )));
                    }
                    v
                }
            };
            let t = timeout::optional(timeout, "timeout")?;
            let v = self.call_value(py, method, params, t)?;
            Ok(convert::to_py(py, &v)?.unbind())
        })
    }

    /// ``daemon.hello``: ``{"protocol_version", "version", "instance_id", "pid"}``.
    fn hello(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        guard(|| {
            self.call_py(
                py,
                "daemon.hello",
                json!({"protocol_version": PROTOCOL_VERSION, "client": "python"}),
            )
        })
    }

    /// ``daemon.info``: version, pid, instance_id, started_at, uptime_s, sessions,
    /// sock_path, port, home, log_path.
    fn info(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        guard(|| self.call_py(py, "daemon.info", json!({})))
    }

    /// ``session.list``: every session as a ``dict`` (``id``, ``name``,
    /// ``workdir``, ``driver``, ``state``, ``started_at``, ``last_seq``, ``epoch``),
    /// only those in ``state`` when given (``running``, ``paused``, ``ended``,
    /// ``paused-reattachable``, ``damaged``).
    #[pyo3(signature = (state = None))]
    fn sessions(&self, py: Python<'_>, state: Option<&str>) -> PyResult<Py<PyAny>> {
        guard(|| {
            let params = match state {
                Some(s) => json!({ "state": s }),
                None => json!({}),
            };
            let v = self.call_value(py, "session.list", params, None)?;
            Ok(convert::to_py(py, field("session.list", &v, "sessions")?)?.unbind())
        })
    }

    /// ``session.get``: the session's fields plus ``record_count`` (and ``reload``
    /// after a daemon restart).
    fn get(&self, py: Python<'_>, session_id: &str) -> PyResult<Py<PyAny>> {
        guard(|| self.call_py(py, "session.get", sid(session_id)))
    }

    /// ``session.start``: starts a session in ``workdir`` (``str`` or
    /// ``os.PathLike``; a relative path is taken from this process's current
    /// directory) and returns ``{"session_id", "name", "workdir", "driver",
    /// "state", "started_at", "epoch"}``. ``driver``: ``"shell"`` (each input runs
    /// as ``sh -c``) or ``"exec"`` (``command`` is the argv of a long-lived child;
    /// ``env`` is added to its environment).
    #[pyo3(signature = (workdir, driver = "shell", command = None, env = None, name = None))]
    fn start(
        &self,
        py: Python<'_>,
        workdir: PathBuf,
        driver: &str,
        command: Option<Vec<String>>,
        env: Option<std::collections::BTreeMap<String, String>>,
        name: Option<String>,
    ) -> PyResult<Py<PyAny>> {
        guard(|| {
            // The daemon wants an absolute path; a Python caller means "relative to
            // my cwd", which only this process knows.
            let workdir = if workdir.is_absolute() {
                workdir
            } else {
                let abs: String = py
                    .import("os.path")?
                    .call_method1("abspath", (workdir,))?
                    .extract()?;
                PathBuf::from(abs)
            };
            let mut p = Map::new();
            p.insert("workdir".into(), json!(workdir));
            p.insert("driver".into(), json!(driver));
            if let Some(c) = command {
                p.insert("command".into(), json!(c));
            }
            if let Some(e) = env {
                p.insert("env".into(), json!(e));
            }
            if let Some(n) = name {
                p.insert("name".into(), json!(n));
            }
            self.call_py(py, "session.start", Value::Object(p))
        })
    }

    /// ``session.send``: queues ``text`` as input and returns the seq of its
    /// ``user.input`` record, once that record is on disk (fsync'd). It does not
    /// wait for the input to be processed: :meth:`follow` for that.
    fn send(&self, py: Python<'_>, session_id: &str, text: &str) -> PyResult<u64> {
        guard(|| {
            let v = self.call_value(
                py,
                "session.send",
                json!({"session_id": session_id, "text": text}),
                None,
            )?;
            field("session.send", &v, "seq")?.as_u64().ok_or_else(|| {
                errors::Error::Core(r1_core::Error::new(
                    ErrorKind::Protocol,
                    "unexpected session.send result from the daemon: seq is not an integer",
                ))
            })
        })
    }

    /// ``session.pause``: holds queued input and stops running work;
    /// ``{"paused_at"}``.
    fn pause(&self, py: Python<'_>, session_id: &str) -> PyResult<Py<PyAny>> {
        guard(|| self.call_py(py, "session.pause", sid(session_id)))
    }

    /// ``session.resume``: resumes a paused session (or restarts the driver of one
    /// interrupted by a daemon restart); ``{"resumed_at"}``.
    fn resume(&self, py: Python<'_>, session_id: &str) -> PyResult<Py<PyAny>> {
        guard(|| self.call_py(py, "session.resume", sid(session_id)))
    }

    /// ``session.cancel``: ends the session; ``{"ended_at"}``.
    #[pyo3(signature = (session_id, reason = None))]
    fn cancel(
        &self,
        py: Python<'_>,
        session_id: &str,
        reason: Option<&str>,
    ) -> PyResult<Py<PyAny>> {
        guard(|| {
            let mut p = sid(session_id);
            if let Some(r) = reason {
                p["reason"] = json!(r);
            }
            self.call_py(py, "session.cancel", p)
        })
    }

    /// ``session.delete``: cancels if needed and removes the journal;
    /// ``{"deleted_at"}``.
    fn delete(&self, py: Python<'_>, session_id: &str) -> PyResult<Py<PyAny>> {
        guard(|| self.call_py(py, "session.delete", sid(session_id)))
    }

    /// ``journal.read``: the session's records with ``seq > since_seq`` as a
    /// ``list`` of ``dict`` (``seq``, ``kind``, ``at``, ``data`` …), at most
    /// ``limit`` of them (``None``: all, fetched page by page).
    #[pyo3(signature = (session_id, since_seq = 0, limit = None))]
    fn read(
        &self,
        py: Python<'_>,
        session_id: &str,
        since_seq: i128,
        limit: Option<i128>,
    ) -> PyResult<Py<PyAny>> {
        guard(|| {
            let limit = limit
                .map(|l| convert::uint(l, "limit", u64::MAX))
                .transpose()?;
            let out = PyList::empty(py);
            let mut since = convert::uint(since_seq, "since_seq", u64::MAX)?;
            let mut epoch: Option<String> = None;
            loop {
                let want = match limit {
                    Some(l) => {
                        let left = l.saturating_sub(out.len() as u64);
                        if left == 0 {
                            break;
                        }
                        left.min(MAX_PAGE)
                    }
                    None => MAX_PAGE,
                };
                let mut p = json!({"session_id": session_id, "since_seq": since, "limit": want});
                if let Some(e) = &epoch {
                    p["epoch"] = json!(e);
                }
                let page = self.call_value(py, "journal.read", p, None)?;
                let records = field("journal.read", &page, "records")?;
                for r in records.as_array().into_iter().flatten() {
                    out.append(convert::to_py(py, r)?)?;
                }
                let more = page.get("more").and_then(Value::as_bool).unwrap_or(false);
                let next = page.get("next_seq").and_then(Value::as_u64);
                match next {
                    Some(n) if more && n > since => since = n,
                    _ => break,
                }
                epoch = page.get("epoch").and_then(Value::as_str).map(str::to_owned);
            }
            Ok(out.into_any().unbind())
        })
    }

    /// ``session.subscribe``: an iterator over the session's records with
    /// ``seq > since_seq`` (``0``: from the start; ``None``: only new ones), then
    /// live ones as they happen. Items are ``dict``s with a ``type``:
    /// ``"record"`` (``seq``, ``epoch``, ``kind``, ``at``, ``data``), ``"daemon"``
    /// (``daemon.reloaded`` after the daemon restarted — the stream resumes on its
    /// own, nothing lost or repeated) or ``"reset"`` (the journal was cut by
    /// recovery).
    ///
    /// It **ends after the ``session.ended`` record**. With ``timeout`` (seconds)
    /// it also ends when that long passes with no item. The GIL is released while
    /// waiting; Ctrl-C raises ``KeyboardInterrupt`` within ~0.1 s.
    #[pyo3(
        signature = (session_id, since_seq = Some(0), timeout = None),
        text_signature = "(self, /, session_id, since_seq=0, timeout=None)"
    )]
    fn follow(
        &self,
        py: Python<'_>,
        session_id: &str,
        since_seq: Option<i128>,
        timeout: Option<f64>,
    ) -> PyResult<Subscription> {
        guard(|| {
            let since = since_seq
                .map(|s| convert::uint(s, "since_seq", u64::MAX))
                .transpose()?;
            self.subscribe(py, Some(session_id), since, timeout)
        })
    }

    /// ``daemon.subscribe``: an iterator over the daemon's bus (``daemon.started``,
    /// ``session.created``, ``session.ended``, ``session.deleted``,
    /// ``daemon.reloaded``, ``daemon.stopping``) with ``seq > since_seq``
    /// (``None``: only new ones). Items are shaped as for :meth:`follow`. It runs
    /// until closed, or until ``timeout`` seconds pass with no item.
    #[pyo3(signature = (since_seq = None, timeout = None))]
    fn events(
        &self,
        py: Python<'_>,
        since_seq: Option<i128>,
        timeout: Option<f64>,
    ) -> PyResult<Subscription> {
        guard(|| {
            let since = since_seq
                .map(|s| convert::uint(s, "since_seq", u64::MAX))
                .transpose()?;
            self.subscribe(py, None, since, timeout)
        })
    }

    /// ``session.unsubscribe``: stops subscription ``sub`` of this connection.
    /// (Iterators from :meth:`follow` / :meth:`events` do this themselves on
    /// ``close()``.)
    fn unsubscribe(&self, py: Python<'_>, sub: i128) -> PyResult<Py<PyAny>> {
        guard(|| {
            let sub = convert::uint(sub, "sub", u64::MAX)?;
            self.call_py(py, "session.unsubscribe", json!({ "sub": sub }))
        })
    }

    /// ``daemon.shutdown``: asks the daemon to stop gracefully (sessions are
    /// paused, to be resumed by the next daemon); ``{"accepted": True}``.
    /// ``grace_s``: how long drivers get to stop (default 5).
    #[pyo3(signature = (grace_s = None))]
    fn shutdown(&self, py: Python<'_>, grace_s: Option<f64>) -> PyResult<Py<PyAny>> {
        guard(|| {
            let params = match grace_s {
                Some(g) => json!({ "grace_s": timeout::seconds(g, "grace_s")?.as_secs_f64() }),
                None => json!({}),
            };
            self.call_py(py, "daemon.shutdown", params)
        })
    }

    /// ``daemon.mint_token`` (unix socket only): a scoped bearer token for
    /// HTTP/WebSocket clients; ``scope`` is ``"read"`` or ``"session:<id>"``.
    /// Returns ``{"token", "expires_at"}``.
    #[pyo3(signature = (scope, ttl_s = 3600))]
    fn mint_token(&self, py: Python<'_>, scope: &str, ttl_s: i128) -> PyResult<Py<PyAny>> {
        guard(|| {
            let ttl_s = convert::uint(ttl_s, "ttl_s", u64::MAX)?;
            self.call_py(
                py,
                "daemon.mint_token",
                json!({"scope": scope, "ttl_s": ttl_s}),
            )
        })
    }

    /// ``daemon.rotate_token`` (unix socket only): replaces the master token
    /// (HTTP/WebSocket clients on the old one are refused); ``{"rotated_at"}``.
    fn rotate_token(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        guard(|| self.call_py(py, "daemon.rotate_token", json!({})))
    }

    /// ``rpc.discover``: the OpenRPC document of every method the daemon serves.
    fn discover_methods(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        guard(|| self.call_py(py, "rpc.discover", json!({})))
    }

    /// The ``daemon.hello`` answer of the current connection (which daemon this
    /// is), without a round trip.
    #[getter]
    fn handshake(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        guard(|| {
            let h = self.client()?.handshake();
            let v = json!({
                "protocol_version": h.protocol_version,
                "version": h.version,
                "instance_id": h.instance_id,
                "pid": h.pid,
            });
            Ok(convert::to_py(py, &v)?.unbind())
        })
    }

    /// The discovery file the current connection was found through (``None`` when
    /// dialed by ``sock_path``).
    #[getter]
    fn discovery(&self) -> PyResult<Option<Discovery>> {
        guard(|| {
            Ok(self
                .client()?
                .as_async()
                .discovery()
                .map(|d| Discovery::from_core(&d)))
        })
    }

    /// Closes the client and every iterator made from it (a ``follow`` waiting in
    /// another thread stops). Idempotent. Later calls raise ``ClosedError``.
    fn close(&self, py: Python<'_>) {
        let client = lock(&self.inner).take();
        let subs = std::mem::take(&mut *lock(&self.subs));
        for s in subs.iter().filter_map(Weak::upgrade) {
            s.close();
        }
        // Dropping the last handle stops the runtime, which may wait on its threads.
        py.detach(move || drop(client));
    }

    /// Whether :meth:`close` was called.
    #[getter]
    fn closed(&self) -> bool {
        lock(&self.inner).is_none()
    }

    fn __enter__(slf: Bound<'_, Self>) -> Bound<'_, Self> {
        slf
    }

    #[pyo3(signature = (_exc_type = None, _exc = None, _tb = None))]
    fn __exit__(
        &self,
        py: Python<'_>,
        _exc_type: Option<Bound<'_, PyType>>,
        _exc: Option<Bound<'_, PyAny>>,
        _tb: Option<Bound<'_, PyAny>>,
    ) -> bool {
        self.close(py);
        false
    }

    fn __repr__(&self) -> String {
        match lock(&self.inner).as_ref() {
            Some(c) => {
                let h = c.handshake();
                format!(
                    "r1.Client(pid={}, instance_id='{}', version='{}')",
                    h.pid, h.instance_id, h.version
                )
            }
            None => "r1.Client(closed)".to_owned(),
        }
    }
}

/// A stream of a session's records (:meth:`Client.follow`) or of the daemon's bus
/// (:meth:`Client.events`). Iterate it; :meth:`close` it (or leave its ``with``
/// block) to stop early, from any thread.
#[pyclass(module = "r1", frozen)]
pub struct Subscription {
    sub: Arc<BlockingSubscription>,
    /// End after this long with no item.
    idle: Option<Duration>,
}

#[pymethods]
impl Subscription {
    fn __iter__(slf: Bound<'_, Self>) -> Bound<'_, Self> {
        slf
    }

    fn __next__(&self, py: Python<'_>) -> PyResult<Option<Py<PyAny>>> {
        guard(|| {
            let deadline = self.idle.map(|t| Instant::now() + t);
            loop {
                let slice = match deadline {
                    Some(d) => {
                        let left = d.saturating_duration_since(Instant::now());
                        if left.is_zero() {
                            return Ok(None);
                        }
                        left.min(WAIT_SLICE)
                    }
                    None => WAIT_SLICE,
                };
                match py.detach(|| self.sub.next_timeout(slice)) {
                    Ok(Some(ev)) => {
                        let v = serde_json::to_value(&ev).map_err(r1_core::Error::from)?;
                        return Ok(Some(convert::to_py(py, &v)?.unbind()));
                    }
                    Ok(None) => py.check_signals()?,
                    // The stream ended (after `session.ended`) or was closed.
                    Err(e) if e.kind() == ErrorKind::Closed => return Ok(None),
                    Err(e) => return Err(e.into()),
                }
            }
        })
    }

    /// The daemon's answer to the subscribe: ``{"sub", "current_seq", "epoch",
    /// "reset"}`` (``sub`` is the id on the first connection; it changes when the
    /// stream resumes on a restarted daemon).
    #[getter]
    fn reply(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        guard(|| {
            let v = serde_json::to_value(self.sub.reply()).map_err(r1_core::Error::from)?;
            Ok(convert::to_py(py, &v)?.unbind())
        })
    }

    /// Stops the stream (and the daemon's side). Thread-safe: an iteration waiting
    /// in another thread ends. Idempotent.
    fn close(&self) {
        self.sub.close();
    }

    fn __enter__(slf: Bound<'_, Self>) -> Bound<'_, Self> {
        slf
    }

    #[pyo3(signature = (_exc_type = None, _exc = None, _tb = None))]
    fn __exit__(
        &self,
        _exc_type: Option<Bound<'_, PyType>>,
        _exc: Option<Bound<'_, PyAny>>,
        _tb: Option<Bound<'_, PyAny>>,
    ) -> bool {
        self.close();
        false
    }
}
