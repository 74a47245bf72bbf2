//! The one JSON-RPC dispatcher behind the unix socket, `/v1/rpc` and WebSocket.

use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use tokio::sync::oneshot;

use super::codes;
use super::envelope::{self, Incoming, Item, Request};
use super::methods::{self, Access};
use crate::error::{Error, ErrorKind, Result};
use crate::journal::{RawRecord, Reader};
use crate::server::auth::Scope;
use crate::server::state::{Caller, Conn, DaemonState, Transport};
use crate::session::hub::StartParams;
use crate::session::state::SessionState;
use crate::session::subscribe::{self, Formatter, Source};
use crate::time_fmt;

/// Per-message context: who calls, over which connection, and what must happen
/// once the answer is on its way (start subscription pumps, shut down).
pub struct CallCtx<'a> {
    /// The caller.
    pub caller: &'a Caller,
    /// The streaming connection, if any (`None` for `/v1/rpc`).
    pub conn: Option<&'a Arc<Conn>>,
    after_reply: Vec<oneshot::Sender<()>>,
}

impl<'a> CallCtx<'a> {
    /// A context for one message.
    pub fn new(caller: &'a Caller, conn: Option<&'a Arc<Conn>>) -> Self {
        CallCtx {
            caller,
            conn,
            after_reply: Vec::new(),
        }
    }

    /// Call once the answer has been queued: releases what waits for it.
    pub fn replied(self) {
        for go in self.after_reply {
            let _ = go.send(());
        }
    }
}

/// The dispatcher.
#[derive(Debug, Clone)]
pub struct Dispatcher {
    state: Arc<DaemonState>,
}

/// Parses by-name params into `T`; absent params are `{}`.
fn params<T: DeserializeOwned>(method: &str, p: Option<Value>) -> Result<T> {
    let v = match p {
        None => json!({}),
        Some(v @ Value::Object(_)) => v,
        Some(_) => {
            return Err(Error::invalid_params(format!(
                "{method} takes its params by name (an object)"
            )));
        }
    };
    serde_json::from_value(v)
        .map_err(|e| Error::invalid_params(format!("invalid params for {method}: {e}")))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NoParams {}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HelloParams {
    protocol_version: u64,
    #[serde(default)]
    client: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ShutdownParams {
    #[serde(default)]
    grace_s: Option<f64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SinceParams {
    #[serde(default)]
    since_seq: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MintParams {
    scope: String,
    #[serde(default)]
    ttl_s: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListParams {
    #[serde(default)]
    state: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct IdParams {
    session_id: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SendParams {
    session_id: String,
    text: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CancelParams {
    session_id: String,
    #[serde(default)]
    reason: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SubscribeParams {
    session_id: String,
    #[serde(default)]
    since_seq: Option<u64>,
    #[serde(default)]
    epoch: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UnsubscribeParams {
    sub: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReadParams {
    session_id: String,
    #[serde(default)]
    since_seq: Option<u64>,
    #[serde(default)]
    epoch: Option<String>,
    #[serde(default)]
    limit: Option<u64>,
}

/// Default and largest `journal.read` page.
const READ_DEFAULT: u64 = 1000;
const READ_MAX: u64 = 10_000;

/// Formats a record as the `$/event` line of subscription `sub`:
/// `{"jsonrpc":"2.0","method":"$/event","params":{"sub":N,"seq":S,"epoch":"E",<body>}`.
///
/// Runs once per record per subscriber, so everything but the seq is rendered once
/// here and each event costs one allocation (the body is copied as stored, never
/// re-serialised).
fn event_formatter(sub: u64, epoch: String) -> Formatter {
    let head =
        format!("{{\"jsonrpc\":\"2.0\",\"method\":\"$/event\",\"params\":{{\"sub\":{sub},\"seq\":");
    let epoch_json = serde_json::to_string(&epoch).unwrap_or_else(|_| "\"\"".to_owned());
    let mid = format!(",\"epoch\":{epoch_json},");
    Box::new(move |rec: &RawRecord| {
        let body = rec.body();
        let mut s = String::with_capacity(head.len() + 20 + mid.len() + body.len() + 1);
        s.push_str(&head);
        let mut digits = [0u8; 20];
        let mut i = digits.len();
        let mut n = rec.seq;
        loop {
            i -= 1;
            digits[i] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        s.extend(digits[i..].iter().map(|d| char::from(*d)));
        s.push_str(&mid);
        s.push_str(body);
        s.push('}');
        s
    })
}

impl Dispatcher {
    /// A dispatcher over `state`.
    pub fn new(state: Arc<DaemonState>) -> Dispatcher {
        Dispatcher { state }
    }

    /// The shared state.
    pub fn state(&self) -> &Arc<DaemonState> {
        &self.state
    }

    /// Handles one message (single or batch); returns the answer to send, if any.
    pub async fn handle(&self, ctx: &mut CallCtx<'_>, bytes: &[u8]) -> Option<String> {
        match envelope::parse(bytes) {
            Incoming::Reject(e) => Some(envelope::failure(&Value::Null, &e)),
            Incoming::Single(item) => self.handle_item(ctx, item).await,
            Incoming::Batch(items) => {
                let mut answers = Vec::with_capacity(items.len());
                for item in items {
                    if let Some(a) = self.handle_item(ctx, item).await {
                        answers.push(a);
                    }
                }
                envelope::batch(answers)
            }
        }
    }

    async fn handle_item(&self, ctx: &mut CallCtx<'_>, item: Item) -> Option<String> {
        match item {
            Item::Invalid { id, error } => Some(envelope::failure(&id, &error)),
            Item::Request(Request { id, method, params }) => {
                let outcome = self.call(ctx, &method, params).await;
                let id = id?;
                Some(match outcome {
                    Ok(v) => envelope::success(&id, &v),
                    Err(e) => envelope::failure(&id, &codes::error_object(&e)),
                })
            }
        }
    }

    /// Checks access and runs one method.
    pub async fn call(
        &self,
        ctx: &mut CallCtx<'_>,
        method: &str,
        p: Option<Value>,
    ) -> Result<Value> {
        let Some(spec) = methods::find(method) else {
            return Err(Error::new(
                ErrorKind::MethodNotFound,
                format!("method not found: {method}"),
            ));
        };
        self.authorize(ctx.caller, spec, p.as_ref())?;
        if spec.streaming && ctx.conn.is_none() {
            return Err(Error::invalid_state(format!(
                "{method} streams notifications: call it over the unix socket or a WebSocket"
            )));
        }
        tracing::debug!(method, "rpc call");
        let hub = &self.state.hub;
        match method {
            "daemon.hello" => {
                let p: HelloParams = params(method, p)?;
                let ours = u64::from(crate::discovery::PROTOCOL_VERSION);
                if p.protocol_version != ours {
                    return Err(Error::new(
                        ErrorKind::UnsupportedVersion,
                        format!(
                            "the client speaks protocol v{} but this daemon (r1 {}) speaks v{ours}; use a client and daemon of the same r1 release",
                            p.protocol_version,
                            crate::VERSION
                        ),
                    )
                    .with_data(json!({"supported": [ours], "requested": p.protocol_version})));
                }
                if let Some(c) = p.client {
                    tracing::debug!(client = %c, "hello");
                }
                Ok(json!({
                    "protocol_version": ours,
                    "version": crate::VERSION,
                    "instance_id": self.state.info.instance_id,
                    "pid": self.state.info.pid,
                }))
            }
            "daemon.info" => {
                let _: NoParams = params(method, p)?;
                let i = &self.state.info;
                Ok(json!({
                    "version": crate::VERSION,
                    "pid": i.pid,
                    "instance_id": i.instance_id,
                    "started_at": i.started_at,
                    "uptime_s": i.started.elapsed().as_secs(),
                    "sessions": hub.all().len(),
                    "sock_path": i.sock_path,
                    "port": i.port,
                    "home": i.home,
                    "log_path": i.log_path,
                }))
            }
            "daemon.shutdown" => {
                let p: ShutdownParams = params(method, p)?;
                if let Some(g) = p.grace_s {
                    if !(0.0..=600.0).contains(&g) {
                        return Err(Error::invalid_params("grace_s must be between 0 and 600"));
                    }
                    self.state
                        .grace_ms
                        .store((g * 1000.0) as u64, std::sync::atomic::Ordering::Relaxed);
                }
                let (go, wait) = oneshot::channel();
                ctx.after_reply.push(go);
                let token = self.state.shutdown.clone();
                tokio::spawn(async move {
                    let _ = wait.await;
                    // Give the transport a moment to flush the answer it just queued.
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    token.cancel();
                });
                Ok(json!({"accepted": true}))
            }
            "daemon.subscribe" => {
                let p: SinceParams = params(method, p)?;
                let bus = Arc::clone(hub.bus());
                let (current, live) = bus.subscribe();
                let sub = self.start_pump(
                    ctx,
                    Source {
                        path: bus.path().to_path_buf(),
                        live,
                        current_seq: current,
                        gone: None,
                    },
                    p.since_seq.unwrap_or(current),
                    bus.epoch(),
                )?;
                Ok(json!({"sub": sub, "current_seq": current}))
            }
            "daemon.rotate_token" => {
                let _: NoParams = params(method, p)?;
                let token = self.state.auth.rotate()?;
                let mut disc = crate::discovery::read(hub.home()).map_err(Error::from)?;
                disc.token = token;
                let home = hub.home().clone();
                tokio::task::spawn_blocking(move || disc.write(&home))
                    .await
                    .map_err(|e| Error::internal(e.to_string()))??;
                tracing::info!("bearer token rotated");
                Ok(json!({"rotated_at": time_fmt::now_seconds()}))
            }
            "daemon.mint_token" => {
                let p: MintParams = params(method, p)?;
                let scope = Scope::parse(&p.scope)?;
                let (token, expires_at) = self
                    .state
                    .auth
                    .mint(scope, Duration::from_secs(p.ttl_s.unwrap_or(3600)))?;
                Ok(json!({"token": token, "expires_at": expires_at}))
            }
            "rpc.discover" => {
                let _: NoParams = params(method, p)?;
                Ok(methods::openrpc())
            }
            "session.start" => {
                let p: StartParams = params(method, p)?;
                hub.start(p).await
            }
            "session.list" => {
                let p: ListParams = params(method, p)?;
                let state = match p.state.as_deref() {
                    None => None,
                    Some(s) => Some(SessionState::parse(s).ok_or_else(|| {
                        Error::invalid_params(format!("unknown state {s:?}; one of running, paused, ended, paused-reattachable, damaged"))
                    })?),
                };
                let mut v = hub.list(state);
                if let Scope::Session(only) = &ctx.caller.scope
                    && let Some(items) = v.get_mut("sessions").and_then(Value::as_array_mut)
                {
                    items.retain(|s| s.get("id").and_then(Value::as_str) == Some(only));
                }
                Ok(v)
            }
            "session.get" => {
                let p: IdParams = params(method, p)?;
                hub.describe(&p.session_id)
            }
            "session.send" => {
                let p: SendParams = params(method, p)?;
                hub.send(&p.session_id, p.text).await
            }
            "session.pause" => {
                let p: IdParams = params(method, p)?;
                hub.pause(&p.session_id).await
            }
            "session.resume" => {
                let p: IdParams = params(method, p)?;
                hub.resume(&p.session_id).await
            }
            "session.cancel" => {
                let p: CancelParams = params(method, p)?;
                hub.cancel(&p.session_id, p.reason).await
            }
            "session.delete" => {
                let p: IdParams = params(method, p)?;
                hub.delete(&p.session_id).await
            }
            "session.subscribe" => {
                let p: SubscribeParams = params(method, p)?;
                let session = hub.get(&p.session_id)?;
                let Some(journal) = session.journal().cloned() else {
                    return Err(Error::new(
                        ErrorKind::JournalDamaged,
                        format!(
                            "session {} is damaged: read it with journal.read (records up to the damage)",
                            session.id
                        ),
                    ));
                };
                let (current, live) = journal.subscribe();
                let mut after = p.since_seq.unwrap_or(current);
                let mut reset = Value::Null;
                if let Some(ep) = p.epoch.as_deref()
                    && let Some(last_good) = hub.reset_point(&session, ep).await?
                {
                    after = after.min(last_good);
                    reset = json!({"epoch": session.epoch(), "last_good_seq": last_good});
                }
                let source = Source {
                    path: journal.path().to_path_buf(),
                    live,
                    current_seq: current,
                    gone: Some(session.gone()),
                };
                let sub = self.start_pump(ctx, source, after, session.epoch().to_owned())?;
                let mut out = json!({"sub": sub, "current_seq": current, "epoch": session.epoch()});
                if !reset.is_null() {
                    out["reset"] = reset;
                }
                Ok(out)
            }
            "session.unsubscribe" => {
                let p: UnsubscribeParams = params(method, p)?;
                let conn = ctx
                    .conn
                    .ok_or_else(|| Error::invalid_state("no connection"))?;
                if conn.remove_sub(p.sub) {
                    Ok(json!({}))
                } else {
                    Err(Error::not_found(format!(
                        "no subscription {} on this connection",
                        p.sub
                    )))
                }
            }
            "journal.read" => {
                let p: ReadParams = params(method, p)?;
                self.journal_read(p).await
            }
            other => Err(Error::internal(format!(
                "method {other} is in the table but has no handler"
            ))),
        }
    }

    /// Whether `caller` may call `method` on `session_id`, without calling it: routes
    /// that are not JSON-RPC calls (the journal download, SSE tickets, the
    /// auto-subscribing WebSocket) apply the same rules as the method they mirror.
    pub fn check_access(
        &self,
        caller: &Caller,
        method: &str,
        session_id: Option<&str>,
    ) -> Result<()> {
        let spec = methods::find(method)
            .ok_or_else(|| Error::internal(format!("access check for unknown method {method}")))?;
        let p = session_id.map(|id| json!({ "session_id": id }));
        self.authorize(caller, spec, p.as_ref())
    }

    fn authorize(&self, caller: &Caller, spec: &methods::Method, p: Option<&Value>) -> Result<()> {
        if spec.access == Access::Privileged && caller.transport != Transport::Unix {
            return Err(Error::new(
                ErrorKind::Unauthorized,
                format!("{} is only available on the unix socket", spec.name),
            ));
        }
        let session_param = || p.and_then(|v| v.get("session_id")).and_then(Value::as_str);
        let allowed = match (&caller.scope, spec.access) {
            (Scope::Full, _) => true,
            (_, Access::Public) => true,
            (Scope::Read, Access::Read) => true,
            (Scope::Read, _) => false,
            (Scope::Session(id), Access::Read | Access::Write) => match spec.name {
                "session.list" | "session.unsubscribe" => true,
                "session.start" | "session.delete" | "daemon.shutdown" | "daemon.subscribe" => {
                    false
                }
                _ => session_param() == Some(id.as_str()),
            },
            (Scope::Session(_), Access::Privileged) => false,
        };
        if allowed {
            Ok(())
        } else {
            Err(Error::new(
                ErrorKind::Unauthorized,
                format!(
                    "this token's scope ({}) does not allow {}",
                    caller.scope.as_string(),
                    spec.name
                ),
            ))
        }
    }

    fn start_pump(
        &self,
        ctx: &mut CallCtx<'_>,
        source: Source,
        after: u64,
        epoch: String,
    ) -> Result<u64> {
        let conn = ctx
            .conn
            .ok_or_else(|| Error::invalid_state("subscriptions need a streaming connection"))?;
        let sub = self.state.next_sub_id();
        let (go, wait) = oneshot::channel();
        ctx.after_reply.push(go);
        let task = tokio::spawn(subscribe::pump(
            source,
            after,
            wait,
            conn.out.clone(),
            event_formatter(sub, epoch),
        ));
        conn.add_sub(sub, task.abort_handle());
        Ok(sub)
    }

    async fn journal_read(&self, p: ReadParams) -> Result<Value> {
        let session = self.state.hub.get(&p.session_id)?;
        let limit = p.limit.unwrap_or(READ_DEFAULT);
        if limit == 0 || limit > READ_MAX {
            return Err(Error::invalid_params(format!(
                "limit must be between 1 and {READ_MAX}"
            )));
        }
        let mut since = p.since_seq.unwrap_or(0);
        let mut reset = Value::Null;
        if let Some(ep) = p.epoch.as_deref()
            && let Some(last_good) = self.state.hub.reset_point(&session, ep).await?
        {
            since = since.min(last_good);
            reset = json!({"epoch": session.epoch(), "last_good_seq": last_good});
        }
        let path = session.journal_path().to_path_buf();
        let (records, damage, more) =
            tokio::task::spawn_blocking(move || -> Result<(Vec<Value>, Option<String>, bool)> {
                let mut r = Reader::open(&path)?;
                r.seek(since)?;
                let mut out = Vec::new();
                let mut damage = None;
                let mut more = false;
                loop {
                    match r.next_record() {
                        Ok(Some(rec)) if rec.seq <= since => continue,
                        Ok(Some(rec)) => {
                            if out.len() as u64 >= limit {
                                more = true;
                                break;
                            }
                            out.push(rec.to_value()?);
                        }
                        Ok(None) => break,
                        Err(e) if e.kind() == ErrorKind::JournalDamaged => {
                            damage = Some(e.message().to_owned());
                            break;
                        }
                        Err(e) => return Err(e),
                    }
                }
                Ok((out, damage, more))
            })
            .await
            .map_err(|e| Error::internal(format!("journal read task failed: {e}")))??;
        let next_seq = records
            .last()
            .and_then(|r| r.get("seq"))
            .and_then(Value::as_u64)
            .unwrap_or(since);
        let mut out = json!({"records": records, "next_seq": next_seq, "epoch": session.epoch(), "more": more});
        if !reset.is_null() {
            out["reset"] = reset;
        }
        if let Some(d) = damage {
            out["damage"] = Value::from(d);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::record::{encode_line, parse_line};

    #[test]
    fn event_line_carries_the_record_body_verbatim() {
        let line = encode_line(
            42,
            "2026-05-02T18:30:00.123Z",
            "tool.end",
            &json!({"ok": true, "q": "a\"b\n"}),
        )
        .unwrap();
        let rec = parse_line(line.trim_end_matches('\n').as_bytes()).unwrap();
        let got = event_formatter(7, "ep\"och".to_owned())(&rec);
        let want = format!(
            "{{\"jsonrpc\":\"2.0\",\"method\":\"$/event\",\"params\":{{\"sub\":7,{}}}",
            rec.event_params_tail("ep\"och")
        );
        assert_eq!(got, want);
        let v: Value = serde_json::from_str(&got).unwrap();
        assert_eq!(v["params"]["seq"], 42);
        assert_eq!(v["params"]["epoch"], "ep\"och");
        assert_eq!(v["params"]["kind"], "tool.end");
        assert_eq!(v["params"]["data"]["q"], "a\"b\n");
    }
}
