//! `GET /v1/sessions/:id/sse?ticket=T[&since_seq=N][&epoch=E]`: a read-only event
//! stream of one session's journal for `EventSource` (which cannot set headers, hence
//! the single-use ticket from `POST /v1/sse-ticket`).
//!
//! # Wire format (`text/event-stream`)
//!
//! The stream opens with one event that has no `id:` (so it never moves the
//! browser's last event id):
//!
//! ```text
//! event: subscribed
//! data: {"session_id":"sess_…","current_seq":41,"epoch":"<epoch>","after":40}
//!
//! ```
//!
//! `after` is the seq delivery starts after; `reset: {epoch, last_good_seq}` is added
//! when the client's epoch is not the journal's current one (DESIGN §7). Then one
//! event per journal record, in seq order, with no gap and no duplicate:
//!
//! ```text
//! id: <epoch>:<seq>
//! event: <record kind>
//! data: {"seq":42,"epoch":"<epoch>","at":"…","kind":"<record kind>","data":{…}}
//!
//! ```
//!
//! `data` is the `params` of the JSON-RPC `$/event` notification without `sub`, on a
//! single line (journal lines never contain a raw newline). A kind containing a
//! control character (possible only from a misbehaving driver) is sent as
//! `event: record`; `data` still carries it. Daemon notices (`daemon.stopping`) are
//! `event: daemon` with `data: {"kind":…,"at":…,"data":…}`. A comment line `: ping`
//! is sent every 20 s so proxies and the browser see the stream is alive.
//!
//! # Where delivery starts
//!
//! 1. `Last-Event-ID: <epoch>:<seq>` (sent by a reconnecting `EventSource`): after
//!    `seq` if `epoch` is current; otherwise after the last seq both histories
//!    share ([`Hub::reset_point`](crate::session::hub::Hub::reset_point), 0 for an
//!    unknown epoch), with `reset` in the opening event.
//! 2. Else `since_seq` (exclusive; `0` = from the start), with `epoch` treated as above.
//! 3. Else live only: records written after the stream opened.
//!
//! The stream ends when the session is deleted, its journal is closed, or the daemon
//! stops.

use std::sync::Arc;

use bytes::Bytes;
use futures_util::stream;
use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Frame, Incoming};
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};
use tokio::time::{Instant, Interval};
use tokio_util::sync::CancellationToken;

use super::auth::Scope;
use super::gate;
use super::http::{Body, Shared, error, unauthorized};
use super::rest::Query;
use super::state::{Caller, Conn, DaemonState, OUTBOUND_QUEUE, Transport};
use crate::error::{Error, ErrorKind};
use crate::journal::RawRecord;
use crate::session::subscribe::{self, Formatter, Source};

/// Largest chunk assembled from events that are ready together.
const CHUNK_BYTES: usize = 64 * 1024;

/// The SSE event for one record (see the module docs).
pub fn format_event(rec: &RawRecord, epoch: &str) -> String {
    // A driver's kind may hold any character (the journal escapes it); a control
    // character here would break the framing (a newline ends the event).
    let kind = rec
        .kind()
        .filter(|k| !k.is_empty() && !k.chars().any(char::is_control))
        .unwrap_or_else(|| "record".to_owned());
    let tail = rec.event_params_tail(epoch);
    let mut s = String::with_capacity(tail.len() + kind.len() + epoch.len() + 48);
    s.push_str("id: ");
    s.push_str(epoch);
    s.push(':');
    s.push_str(&rec.seq.to_string());
    s.push_str("\nevent: ");
    s.push_str(&kind);
    s.push_str("\ndata: {");
    s.push_str(&tail);
    s.push_str("\n\n");
    s
}

/// An event with a JSON `data` line and no id.
fn named_event(name: &str, data: &Value) -> String {
    format!("event: {name}\ndata: {data}\n\n")
}

/// Parses `Last-Event-ID: <epoch>:<seq>`.
pub fn parse_last_event_id(v: &str) -> Option<(&str, u64)> {
    let (epoch, seq) = v.trim().rsplit_once(':')?;
    if epoch.is_empty() {
        return None;
    }
    Some((epoch, seq.parse().ok()?))
}

/// Answers the SSE route.
pub(crate) async fn stream(
    shared: &Arc<Shared>,
    req: Request<Incoming>,
    id: &str,
) -> Response<Body> {
    match open(shared, &req, id).await {
        Ok(r) => r,
        Err(Refusal::Ticket(msg)) => {
            tracing::warn!(session_id = %id, "refused an SSE stream: bad ticket");
            unauthorized(&msg)
        }
        Err(Refusal::Other(e)) => error(&e),
    }
}

enum Refusal {
    Ticket(String),
    Other(Error),
}

impl From<Error> for Refusal {
    fn from(e: Error) -> Self {
        Refusal::Other(e)
    }
}

async fn open(
    shared: &Arc<Shared>,
    req: &Request<Incoming>,
    id: &str,
) -> std::result::Result<Response<Body>, Refusal> {
    let q = Query::parse(req.uri())?;
    let Some(ticket) = q.str("ticket") else {
        return Err(Refusal::Ticket(
            "an SSE stream needs ?ticket=… from POST /v1/sse-ticket".into(),
        ));
    };
    let state = Arc::clone(shared.rpc.state());
    state
        .auth
        .redeem_ticket(ticket, id)
        .map_err(|e| Refusal::Ticket(e.message().to_owned()))?;
    let hub = &state.hub;
    let session = hub.get(id)?;
    let Some(journal) = session.journal().cloned() else {
        return Err(Error::new(
            ErrorKind::JournalDamaged,
            format!(
                "session {id} is damaged: download its journal instead (records up to the damage)"
            ),
        )
        .into());
    };
    let last_event = match gate::single(
        req.headers(),
        &header::HeaderName::from_static("last-event-id"),
    ) {
        Ok(Some(v)) => Some(parse_last_event_id(v).ok_or_else(|| {
            Error::invalid_params("Last-Event-ID must be <epoch>:<seq>, as this stream sent it")
        })?),
        Ok(None) => None,
        Err(gate::Ambiguous) => {
            return Err(Error::invalid_params("one Last-Event-ID header at most").into());
        }
    };
    let since_seq = q.u64("since_seq")?;
    // Register the live queue before reading anything, so nothing falls between.
    let (current, live) = journal.subscribe();
    let (mut after, client_epoch) = match (last_event, since_seq) {
        (Some((ep, seq)), _) => (seq, Some(ep)),
        (None, Some(s)) => (s, q.str("epoch")),
        (None, None) => (current, None),
    };
    let mut reset = None;
    if let Some(ep) = client_epoch
        && let Some(last_good) = hub.reset_point(&session, ep).await?
    {
        after = after.min(last_good);
        reset = Some(json!({"epoch": session.epoch(), "last_good_seq": last_good}));
    }

    let (conn, notices) = state.register(Caller {
        transport: Transport::Http,
        scope: Scope::Read,
    });
    let (tx, events) = mpsc::channel(OUTBOUND_QUEUE);
    let (go, wait) = oneshot::channel();
    let epoch = session.epoch().to_owned();
    let format: Formatter = {
        let epoch = epoch.clone();
        Box::new(move |rec: &RawRecord| format_event(rec, &epoch))
    };
    let source = Source {
        path: journal.path().to_path_buf(),
        live,
        current_seq: current,
        gone: Some(session.gone()),
    };
    let pump = tokio::spawn(subscribe::pump(source, after, wait, tx, format));
    // The conn owns the pump: it is aborted when the stream is dropped.
    conn.add_sub(state.next_sub_id(), pump.abort_handle());
    let _ = go.send(());

    let mut opening =
        json!({"session_id": id, "current_seq": current, "epoch": epoch, "after": after});
    if let Some(r) = reset {
        opening["reset"] = r;
    }
    let keepalive = shared.cfg.sse_keepalive;
    let st = SseState {
        first: Some(Bytes::from(named_event("subscribed", &opening))),
        events,
        notices,
        closed: conn.closed.clone(),
        ping: tokio::time::interval_at(Instant::now() + keepalive, keepalive),
        _guard: ConnGuard { state, conn },
        done: false,
    };
    tracing::debug!(session_id = %id, after, "SSE stream opened");
    let body = StreamBody::new(stream::unfold(st, |mut st| async move {
        let chunk = st.next().await?;
        Some((Ok::<_, std::convert::Infallible>(Frame::data(chunk)), st))
    }));
    let mut resp = Response::new(BodyExt::boxed_unsync(body));
    *resp.status_mut() = StatusCode::OK;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    Ok(resp)
}

/// Unregisters the stream's connection when the body is dropped (client gone or
/// stream ended), which also aborts its pump.
struct ConnGuard {
    state: Arc<DaemonState>,
    conn: Arc<Conn>,
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        self.state.unregister(&self.conn);
        self.conn.closed.cancel();
    }
}

struct SseState {
    first: Option<Bytes>,
    events: mpsc::Receiver<String>,
    notices: mpsc::Receiver<String>,
    closed: CancellationToken,
    ping: Interval,
    _guard: ConnGuard,
    done: bool,
}

impl SseState {
    /// The next chunk to send; `None` ends the stream.
    async fn next(&mut self) -> Option<Bytes> {
        if let Some(f) = self.first.take() {
            return Some(f);
        }
        if self.done {
            return None;
        }
        tokio::select! {
            biased;
            n = self.notices.recv() => Some(Bytes::from(notice_event(&n?))),
            e = self.events.recv() => match e {
                Some(first) => {
                    let mut chunk = first;
                    while chunk.len() < CHUNK_BYTES {
                        match self.events.try_recv() {
                            Ok(more) => chunk.push_str(&more),
                            Err(_) => break,
                        }
                    }
                    Some(Bytes::from(chunk))
                }
                // The pump ended: session deleted or journal closed.
                None => None,
            },
            _ = self.closed.cancelled() => {
                self.done = true;
                let mut out = String::new();
                while let Ok(n) = self.notices.try_recv() {
                    out.push_str(&notice_event(&n));
                }
                (!out.is_empty()).then(|| Bytes::from(out))
            }
            _ = self.ping.tick() => Some(Bytes::from_static(b": ping\n\n")),
        }
    }
}

/// A queued `$/daemon` notification line as an `event: daemon`.
fn notice_event(line: &str) -> String {
    let params = serde_json::from_str::<Value>(line)
        .ok()
        .and_then(|mut v| v.get_mut("params").map(Value::take))
        .unwrap_or(Value::Null);
    named_event("daemon", &params)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::record::{encode_line, parse_line};

    fn rec(seq: u64, kind: &str) -> RawRecord {
        let line = encode_line(
            seq,
            "2026-05-02T18:30:00.123Z",
            kind,
            &json!({"text": "a\nb"}),
        )
        .unwrap();
        parse_line(line.trim_end_matches('\n').as_bytes()).unwrap()
    }

    #[test]
    fn event_format() {
        let e = format_event(&rec(42, "session.delta"), "ep1");
        let mut lines = e.split('\n');
        assert_eq!(lines.next(), Some("id: ep1:42"));
        assert_eq!(lines.next(), Some("event: session.delta"));
        let data = lines.next().unwrap().strip_prefix("data: ").unwrap();
        let v: Value = serde_json::from_str(data).unwrap();
        assert_eq!(v["seq"], 42);
        assert_eq!(v["epoch"], "ep1");
        assert_eq!(v["kind"], "session.delta");
        assert_eq!(v["data"]["text"], "a\nb");
        assert!(v.get("sub").is_none());
        assert_eq!(lines.collect::<Vec<_>>(), vec!["", ""]);
    }

    #[test]
    fn last_event_id() {
        assert_eq!(parse_last_event_id("abc:12"), Some(("abc", 12)));
        assert_eq!(parse_last_event_id(" abc:0 "), Some(("abc", 0)));
        assert_eq!(parse_last_event_id("abc"), None);
        assert_eq!(parse_last_event_id(":5"), None);
        assert_eq!(parse_last_event_id("abc:x"), None);
        assert_eq!(parse_last_event_id("abc:-1"), None);
    }

    #[test]
    fn notices_become_daemon_events() {
        let line = crate::rpc::envelope::notification(
            "$/daemon",
            &json!({"kind": "daemon.stopping", "at": "t", "data": {}}),
        );
        assert_eq!(
            notice_event(&line),
            "event: daemon\ndata: {\"at\":\"t\",\"data\":{},\"kind\":\"daemon.stopping\"}\n\n"
        );
    }
}
