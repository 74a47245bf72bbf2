//! `r1_client_*` and `r1_subscription_*`: talk JSON-RPC to the daemon over its unix
//! socket, on top of [`r1_core::client::BlockingClient`] (which owns the runtime and
//! is safe to share between threads).
//!
//! There is deliberately one call function, [`r1_client_call`], and no C twin per
//! method (Delta Chat's lesson): every method of DESIGN §7 is reachable through it,
//! and a new method needs no new export.

use std::ffi::c_char;
use std::path::PathBuf;
use std::time::Duration;

use r1_core::client::{BlockingClient, BlockingSubscription, DialOptions};
use serde::Deserialize;
use serde_json::Value;

use crate::R1_SINCE_NOW;
use crate::boundary::{
    self, Failure, json_arg, opt_str_arg, out_arg, str_arg, string_to_c, wait_ms,
};
use crate::handle;
use crate::status::R1Status;

/// A connection to the daemon. Opaque to C; may be shared between threads.
pub struct R1Client {
    inner: BlockingClient,
}

/// A subscription to a session's records or to the daemon bus. Opaque to C.
pub struct R1Subscription {
    inner: BlockingSubscription,
}

/// With no timeout, `r1_subscription_next` waits in slices this long (it is woken at
/// once by an event or by `r1_subscription_close` either way).
const FOREVER_SLICE: Duration = Duration::from_secs(3600);

/// The JSON accepted by `r1_client_dial` (DESIGN §8). Every field is optional;
/// unknown fields are refused so a misspelt option is not silently ignored.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct DialConfig {
    home: Option<PathBuf>,
    sock_path: Option<PathBuf>,
    spawn: Option<bool>,
    timeout_ms: Option<u64>,
    call_timeout_ms: Option<u64>,
    reconnect_for_ms: Option<u64>,
    r1_bin: Option<PathBuf>,
    client_name: Option<String>,
}

impl DialConfig {
    fn into_options(self) -> DialOptions {
        let mut o =
            DialOptions::new().client_name(self.client_name.unwrap_or_else(|| "libr1".to_owned()));
        if let Some(h) = self.home {
            o = o.home(h);
        }
        if let Some(s) = self.sock_path {
            o = o.sock_path(s);
        }
        if let Some(s) = self.spawn {
            o = o.spawn(s);
        }
        if let Some(t) = self.timeout_ms {
            o = o.timeout(Duration::from_millis(t));
        }
        if let Some(t) = self.call_timeout_ms {
            o = o.call_timeout(Duration::from_millis(t));
        }
        if let Some(t) = self.reconnect_for_ms {
            o = o.reconnect_for(Duration::from_millis(t));
        }
        if let Some(b) = self.r1_bin {
            o = o.r1_bin(b);
        }
        o
    }
}

/// Connects to the daemon (DESIGN §8): discovery → unix socket → `daemon.hello`,
/// starting `r1 serve --detach` first when no daemon answers and spawning is allowed.
///
/// `options_json`: a JSON object, every field optional — `home` (default
/// `$R1_HOME`, else `~/.r1`), `sock_path` (connect exactly there; skips discovery and
/// never spawns), `spawn` (bool, **default true**), `timeout_ms` (the whole dial,
/// spawning included; default 2000), `call_timeout_ms` (default for calls; 30000),
/// `reconnect_for_ms` (how long a lost connection is retried; 60000), `r1_bin` (the
/// binary to spawn; default `$R1_BIN`, else `r1` beside the executable, else on
/// `PATH`), `client_name` (for the daemon's log). NULL means `{}`. Unknown fields
/// are refused.
///
/// On success `*out` receives a client freed with `r1_client_free`; on error it is
/// set to NULL.
///
/// Thread-safe. Returns `R1_STATUS_OK`, `R1_STATUS_NULL_ARGUMENT` (`out`),
/// `R1_STATUS_INVALID_ARGUMENT` (bad JSON or option), `R1_STATUS_NOT_FOUND` (no
/// daemon — missing or stale discovery — and spawning not allowed, or spawning
/// failed: the last error names the cause and the log), `R1_STATUS_UNSAFE` (unsafe
/// discovery file or directory), `R1_STATUS_PROTOCOL` (not an r1 daemon, or another
/// protocol version), `R1_STATUS_TIMEOUT`, `R1_STATUS_IO`.
///
/// # Safety
/// `options_json` is NULL or a NUL-terminated string; `out` is NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn r1_client_dial(
    options_json: *const c_char,
    out: *mut *mut R1Client,
) -> R1Status {
    boundary::status(|| {
        // SAFETY: the caller's contract above.
        let out = unsafe { out_arg(out, "out") }?;
        // SAFETY: the caller's contract above.
        let text = unsafe { opt_str_arg(options_json, "options_json") }?.unwrap_or("{}");
        let cfg: DialConfig = serde_json::from_value(json_arg(text, "options_json")?)
            .map_err(|e| Failure::invalid(format!("options_json: {e}")))?;
        let inner = BlockingClient::dial(cfg.into_options())?;
        *out = handle::into_raw(R1Client { inner });
        Ok(())
    })
}

/// Calls any JSON-RPC method of the daemon (DESIGN §7) and returns its result.
///
/// `method`: e.g. `"session.start"`. `params_json`: a JSON object or array, or NULL
/// for none. `timeout_ms`: how long to wait for the answer; ≤ 0 means the client's
/// default (`call_timeout_ms`, 30 s). On `R1_STATUS_OK` `*result_json_out` receives
/// the `result` as JSON, freed with `r1_string_free`; otherwise it is NULL.
///
/// A lost connection is re-established (and a restarted daemon re-dialed) within
/// the client's reconnect window before the call fails.
///
/// Thread-safe: a client may be used by many threads at once; calls are pipelined.
/// Returns `R1_STATUS_OK`, `R1_STATUS_RPC` (the daemon answered with an error: the
/// last error is the JSON-RPC error object `{code, message, data:{kind}}` as JSON,
/// e.g. code -32001 for an unknown session, -32601 for an unknown method),
/// `R1_STATUS_NULL_ARGUMENT` (`c`, `method`, `result_json_out`),
/// `R1_STATUS_INVALID_ARGUMENT` (`params_json` not JSON, or not an object/array),
/// `R1_STATUS_TIMEOUT`, `R1_STATUS_CLOSED` (the connection is gone and could not be
/// re-established), `R1_STATUS_PROTOCOL`, `R1_STATUS_IO`.
///
/// # Safety
/// `c` is NULL or a live client; `method` and `params_json` are NULL or
/// NUL-terminated strings; `result_json_out` is NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn r1_client_call(
    c: *mut R1Client,
    method: *const c_char,
    params_json: *const c_char,
    timeout_ms: i32,
    result_json_out: *mut *mut c_char,
) -> R1Status {
    boundary::status(|| {
        // SAFETY: the caller's contract above.
        let out = unsafe { out_arg(result_json_out, "result_json_out") }?;
        // SAFETY: the caller's contract above; shared use across threads is allowed.
        let c = unsafe { handle::as_ref(c.cast_const(), "c") }?;
        // SAFETY: the caller's contract above.
        let method = unsafe { str_arg(method, "method") }?;
        // SAFETY: the caller's contract above.
        let params = match unsafe { opt_str_arg(params_json, "params_json") }? {
            // JSON-RPC allows params to be omitted; the daemon takes `{}` the same way.
            None => Value::Object(serde_json::Map::new()),
            Some(text) => match json_arg(text, "params_json")? {
                v @ (Value::Object(_) | Value::Array(_)) => v,
                _ => {
                    return Err(Failure::invalid(
                        "params_json must be a JSON object or array (JSON-RPC by-name or by-position params)",
                    ));
                }
            },
        };
        let result = if timeout_ms <= 0 {
            c.inner.call(method, params)?
        } else {
            let t = Duration::from_millis(u64::from(timeout_ms.unsigned_abs()));
            c.inner.call_with_timeout(method, params, t)?
        };
        *out = string_to_c(result.to_string())?;
        Ok(())
    })
}

/// Subscribes to a session's records (`session.subscribe`) or, with `session_id`
/// NULL, to the daemon's bus (`daemon.subscribe`).
///
/// `since_seq`: replay records with seq > `since_seq` (0 = from the start), then
/// follow live; `R1_SINCE_NOW` = live records only. The subscription resumes by
/// itself across reconnects and daemon restarts, delivering each record once.
/// On success `*out` receives a subscription freed with `r1_subscription_free`;
/// on error it is NULL.
///
/// Thread-safety: `c` may be shared; the new subscription belongs to one thread at a
/// time (except `r1_subscription_close`). It stays usable after `r1_client_free(c)`.
/// Returns `R1_STATUS_OK`, `R1_STATUS_RPC` (e.g. unknown session: code -32001),
/// `R1_STATUS_NULL_ARGUMENT` (`c`, `out`), `R1_STATUS_INVALID_ARGUMENT` (session id
/// not UTF-8), `R1_STATUS_TIMEOUT`, `R1_STATUS_CLOSED`, `R1_STATUS_IO`.
///
/// # Safety
/// `c` is NULL or a live client; `session_id` is NULL or a NUL-terminated string;
/// `out` is NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn r1_client_subscribe(
    c: *mut R1Client,
    session_id: *const c_char,
    since_seq: u64,
    out: *mut *mut R1Subscription,
) -> R1Status {
    boundary::status(|| {
        // SAFETY: the caller's contract above.
        let out = unsafe { out_arg(out, "out") }?;
        // SAFETY: the caller's contract above.
        let c = unsafe { handle::as_ref(c.cast_const(), "c") }?;
        // SAFETY: the caller's contract above.
        let session_id = unsafe { opt_str_arg(session_id, "session_id") }?;
        let since = (since_seq != R1_SINCE_NOW).then_some(since_seq);
        let inner = match session_id {
            Some(id) => c.inner.subscribe(id, since, None)?,
            None => c.inner.subscribe_bus(since)?,
        };
        *out = handle::into_raw(R1Subscription { inner });
        Ok(())
    })
}

/// The daemon's reply to the subscribe call, as JSON: `{"sub": N, "current_seq": S,
/// "epoch": "…" | null, "reset": null | {"epoch", "last_good_seq"}}`. `current_seq`
/// is the journal's last seq when the subscription started (live records follow
/// it); `epoch` is the cursor's epoch for resuming later. (Beyond DESIGN §10: the
/// native-messaging host answers a forwarded subscribe with it, and any client that
/// resumes needs the epoch.)
///
/// `*reply_json_out` is freed with `r1_string_free` (NULL on error).
/// Thread-safe with respect to `r1_subscription_next`/`close` on the same handle.
/// Returns `R1_STATUS_OK`, `R1_STATUS_NULL_ARGUMENT`.
///
/// # Safety
/// `s` is NULL or a live subscription; `reply_json_out` is NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn r1_subscription_reply(
    s: *mut R1Subscription,
    reply_json_out: *mut *mut c_char,
) -> R1Status {
    boundary::status(|| {
        // SAFETY: the caller's contract above.
        let out = unsafe { out_arg(reply_json_out, "reply_json_out") }?;
        // SAFETY: the caller's contract above.
        let s = unsafe { handle::as_ref(s.cast_const(), "s") }?;
        let json = serde_json::to_string(s.inner.reply())
            .map_err(|e| Failure::new(R1Status::Panic, e.to_string()))?;
        *out = string_to_c(json)?;
        Ok(())
    })
}

/// Waits up to `timeout_ms` milliseconds (< 0: without limit; 0: no wait) for the
/// subscription's next item and returns it as JSON in `*event_json_out` (freed with
/// `r1_string_free`; NULL unless `R1_STATUS_OK`). Items:
///
/// * `{"type":"record","seq":S,"epoch":"…","kind":"…","at":"…","data":{…}}` — a
///   journal record (session or bus), each delivered once, in seq order;
/// * `{"type":"daemon","kind":"daemon.stopping"|"daemon.reloaded","at":…,"data":…}`;
/// * `{"type":"reset","epoch":"…","last_good_seq":S}` — recovery cut the journal
///   after the cursor; the records that follow are new ones.
///
/// Thread-safety: one thread at a time calls this; `r1_subscription_close` from any
/// thread wakes it. Returns `R1_STATUS_OK`, `R1_STATUS_TIMEOUT` (nothing arrived in
/// time; call again), `R1_STATUS_CLOSED` (closed with `r1_subscription_close`, or the
/// stream ended: a session subscription ends after the session's `session.ended`),
/// `R1_STATUS_NULL_ARGUMENT`, `R1_STATUS_RPC`/`R1_STATUS_IO`/`R1_STATUS_NOT_FOUND`
/// (the stream failed for good, e.g. the daemon stayed away beyond the reconnect
/// window or the session was deleted).
///
/// # Safety
/// `s` is NULL or a live subscription; `event_json_out` is NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn r1_subscription_next(
    s: *mut R1Subscription,
    timeout_ms: i32,
    event_json_out: *mut *mut c_char,
) -> R1Status {
    boundary::status(|| {
        // SAFETY: the caller's contract above.
        let out = unsafe { out_arg(event_json_out, "event_json_out") }?;
        // SAFETY: the caller's contract above; `close` may run concurrently, which
        // BlockingSubscription allows (both take `&self`).
        let s = unsafe { handle::as_ref(s.cast_const(), "s") }?;
        let item = match wait_ms(timeout_ms) {
            Some(t) => s.inner.next_timeout(t)?,
            None => loop {
                if let Some(ev) = s.inner.next_timeout(FOREVER_SLICE)? {
                    break Some(ev);
                }
            },
        };
        match item {
            Some(ev) => {
                let json = serde_json::to_string(&ev)
                    .map_err(|e| Failure::new(R1Status::Panic, e.to_string()))?;
                *out = string_to_c(json)?;
                Ok(())
            }
            None => Err(Failure::new(
                R1Status::Timeout,
                format!("no event within {timeout_ms} ms"),
            )),
        }
    })
}

/// Ends the subscription (the daemon's side too). Thread-safe: may be called from
/// any thread while another blocks in `r1_subscription_next`, which then returns
/// `R1_STATUS_CLOSED`; later `next` calls return `R1_STATUS_CLOSED` as well.
/// Idempotent. NULL is a no-op. Does not free `s`: call `r1_subscription_free` once no
/// thread uses it any more.
///
/// # Safety
/// `s` is NULL or a live subscription.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn r1_subscription_close(s: *mut R1Subscription) {
    boundary::quiet((), || {
        // SAFETY: the caller's contract above.
        if let Ok(s) = unsafe { handle::as_ref(s.cast_const(), "s") } {
            s.inner.close();
        }
    })
}

/// Closes (if needed) and frees a subscription. NULL is a no-op. No other thread may
/// be using `s` (close it first, let the blocked `next` return, then free).
///
/// # Safety
/// `s` is NULL or a live subscription not in use by another thread.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn r1_subscription_free(s: *mut R1Subscription) {
    // SAFETY: the caller's contract above.
    boundary::quiet((), || unsafe { handle::free(s) })
}

/// Disconnects and frees a client. NULL is a no-op. No other thread may be using
/// `c`. Subscriptions made from it stay usable until freed.
///
/// # Safety
/// `c` is NULL or a live client not in use by another thread.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn r1_client_free(c: *mut R1Client) {
    // SAFETY: the caller's contract above.
    boundary::quiet((), || unsafe { handle::free(c) })
}

// The header promises a client may be shared between threads and a subscription
// closed from another thread: both must stay Send + Sync.
const _: fn() = || {
    fn check<T: Send + Sync>() {}
    check::<R1Client>();
    check::<R1Subscription>();
};
