//! The plain HTTP routes (DESIGN §4): health, discover, hello, `POST /v1/rpc`, the
//! REST mirror of the session methods, the NDJSON journal download and SSE tickets.
//!
//! The REST mirror calls the dispatcher ([`Dispatcher::call`](crate::rpc::dispatch::Dispatcher::call)) with the same params a
//! JSON-RPC client would send, so scopes, validation and errors are identical; an
//! error answers `{"error": <JSON-RPC error object>}` with the status its kind maps
//! to ([`http_status_for`](crate::rpc::codes::http_status_for)): a scope refusal (-32004) is 403, an unknown
//! session 404, bad params 400.
//!
//! Query strings carry only ids, numbers and hex (`since_seq`, `epoch`, `nonce`,
//! `ticket`, `state`), so values are taken as sent: a value with characters outside
//! `[A-Za-z0-9._~-]` (percent-encoding included) is refused with 400.

use std::collections::BTreeMap;

use bytes::Bytes;
use futures_util::stream;
use hmac::{Hmac, Mac};
use http::header::{self, HeaderValue};
use http::{Response, StatusCode, Uri};
use http_body_util::{BodyExt, Limited, StreamBody};
use hyper::body::{Body as _, Frame, Incoming};
use serde_json::{Map, Value, json};
use sha2::Sha256;

use super::http::{Body, MAX_BODY, Shared, error, json, json_text};
use super::state::Caller;
use crate::error::{Error, ErrorKind, Result};
use crate::journal::Reader;
use crate::rpc::dispatch::CallCtx;

/// Records per blocking read of a journal download.
const JOURNAL_CHUNK_RECORDS: usize = 512;
/// Bytes per chunk of a journal download (a chunk may exceed it by one line).
const JOURNAL_CHUNK_BYTES: usize = 256 * 1024;

/// Response header: the session's current epoch (journal download).
pub const EPOCH_HEADER: &str = "x-r1-epoch";
/// Response header: present when the `epoch` asked for is not current; the last seq
/// both histories share, from which the download restarted (DESIGN §7 `reset`).
pub const RESET_HEADER: &str = "x-r1-reset-last-good-seq";

/// A parsed query string: `key=value` pairs, each key at most once.
#[derive(Debug, Default)]
pub(crate) struct Query<'a>(BTreeMap<&'a str, &'a str>);

impl<'a> Query<'a> {
    /// Parses `uri`'s query (see the module docs for what values may hold).
    pub(crate) fn parse(uri: &'a Uri) -> Result<Query<'a>> {
        let mut q = BTreeMap::new();
        for pair in uri
            .query()
            .unwrap_or("")
            .split('&')
            .filter(|p| !p.is_empty())
        {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let plain = |s: &str| {
                s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'~' | b'-'))
            };
            if !plain(k) || !plain(v) {
                return Err(Error::invalid_params(format!(
                    "query parameter {k:?}: values are ids, numbers or hex, sent without percent-encoding"
                )));
            }
            if q.insert(k, v).is_some() {
                return Err(Error::invalid_params(format!(
                    "query parameter {k} given twice"
                )));
            }
        }
        Ok(Query(q))
    }

    /// A string parameter.
    pub(crate) fn str(&self, key: &str) -> Option<&'a str> {
        self.0.get(key).copied()
    }

    /// A non-negative integer parameter.
    pub(crate) fn u64(&self, key: &str) -> Result<Option<u64>> {
        match self.str(key) {
            None => Ok(None),
            Some(v) => v.parse().map(Some).map_err(|_| {
                Error::invalid_params(format!("{key} must be a non-negative integer"))
            }),
        }
    }
}

/// `GET /v1/health` (no auth): `{status:"ok", version, sessions, uptime_s}`.
pub(crate) fn health(shared: &Shared) -> Response<Body> {
    let state = shared.rpc.state();
    json(
        StatusCode::OK,
        &json!({
            "status": "ok",
            "version": crate::VERSION,
            "sessions": state.hub.all().len(),
            "uptime_s": state.info.started.elapsed().as_secs(),
        }),
    )
}

/// `GET /v1/discover` (no auth): `{socket, port, protocol_version}`.
pub(crate) fn discover(shared: &Shared) -> Response<Body> {
    let state = shared.rpc.state();
    json(
        StatusCode::OK,
        &json!({
            "socket": state.info.sock_path,
            "port": shared.port,
            "protocol_version": crate::discovery::PROTOCOL_VERSION,
        }),
    )
}

/// Shortest and longest `nonce` accepted by `/v1/hello` (hex characters).
pub const NONCE_LEN: std::ops::RangeInclusive<usize> = 16..=128;

/// The `/v1/hello` proof: lowercase hex of HMAC-SHA256 with the token's text (its
/// ASCII bytes, as sent in `Authorization`) as key, over the nonce's text exactly as
/// sent followed by the instance id's text. A client that knows the token checks it
/// before sending the token anywhere.
pub fn hello_proof(token: &str, nonce: &str, instance_id: &str) -> String {
    // HMAC takes keys of any length; the error branch is unreachable but handled.
    match Hmac::<Sha256>::new_from_slice(token.as_bytes()) {
        Ok(mut mac) => {
            mac.update(nonce.as_bytes());
            mac.update(instance_id.as_bytes());
            hex::encode(mac.finalize().into_bytes())
        }
        Err(_) => String::new(),
    }
}

/// `GET /v1/hello?nonce=<hex>[&key=<key id>]` (no auth): `{instance_id, proof}`
/// (see [`hello_proof`]). The proof is keyed with the master token, or with the
/// live token whose [`key_id`](super::auth::key_id) is `key` — so the holder of a
/// scoped token can check the daemon too; an unknown key is a 404.
pub(crate) fn hello(shared: &Shared, uri: &Uri) -> Response<Body> {
    let (nonce, key) = match Query::parse(uri) {
        Ok(q) => (q.str("nonce"), q.str("key")),
        Err(e) => return error(&e),
    };
    let Some(nonce) =
        nonce.filter(|n| NONCE_LEN.contains(&n.len()) && n.bytes().all(|b| b.is_ascii_hexdigit()))
    else {
        return error(&Error::invalid_params(format!(
            "nonce must be {} to {} hex characters",
            NONCE_LEN.start(),
            NONCE_LEN.end()
        )));
    };
    let state = shared.rpc.state();
    let token = match key {
        None => state.auth.master().expose().to_owned(),
        Some(k) => match state.auth.token_for_key_id(k) {
            Some(t) => t,
            None => {
                return error(&Error::not_found(
                    "no live token has that key id (expired, rotated, or another daemon's)",
                ));
            }
        },
    };
    json(
        StatusCode::OK,
        &json!({
            "instance_id": state.info.instance_id,
            "proof": hello_proof(&token, nonce, &state.info.instance_id),
        }),
    )
}

/// Reads a whole request body, at most [`MAX_BODY`] bytes (413 beyond).
async fn read_body(body: Incoming) -> std::result::Result<Bytes, Response<Body>> {
    let too_large = || {
        error(&Error::new(
            ErrorKind::TooLarge,
            format!("request body over {MAX_BODY} bytes"),
        ))
    };
    // A declared length over the limit is refused before reading anything.
    if body.size_hint().lower() > MAX_BODY as u64 {
        return Err(too_large());
    }
    match Limited::new(body, MAX_BODY).collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e)
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some() =>
        {
            Err(too_large())
        }
        Err(e) => Err(error(&Error::new(
            ErrorKind::InvalidRequest,
            format!("cannot read the request body: {e}"),
        ))),
    }
}

/// A body that must be a JSON object; empty means `{}`.
async fn read_object(body: Incoming) -> std::result::Result<Map<String, Value>, Response<Body>> {
    let bytes = read_body(body).await?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(Map::new());
    }
    match serde_json::from_slice::<Value>(&bytes) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(error(&Error::invalid_params(
            "the request body must be a JSON object",
        ))),
        Err(e) => Err(error(&Error::new(
            ErrorKind::Parse,
            format!("the request body is not JSON: {e}"),
        ))),
    }
}

/// `POST /v1/rpc`: one JSON-RPC message (request, notification or batch). A
/// message that needs no answer (notifications only) gets 204.
pub(crate) async fn rpc(shared: &Shared, caller: &Caller, body: Incoming) -> Response<Body> {
    let bytes = match read_body(body).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let mut ctx = CallCtx::new(caller, None);
    let answer = shared.rpc.handle(&mut ctx, &bytes).await;
    ctx.replied();
    match answer {
        Some(text) => json_text(StatusCode::OK, text),
        None => super::http::empty(StatusCode::NO_CONTENT),
    }
}

/// Runs one method as the REST mirror would.
async fn call_value(
    shared: &Shared,
    caller: &Caller,
    method: &str,
    params: Map<String, Value>,
) -> Result<Value> {
    let mut ctx = CallCtx::new(caller, None);
    let outcome = shared
        .rpc
        .call(&mut ctx, method, Some(Value::Object(params)))
        .await;
    ctx.replied();
    outcome
}

/// Runs one method: its result with `ok`, or its error.
async fn call(
    shared: &Shared,
    caller: &Caller,
    method: &str,
    params: Map<String, Value>,
    ok: StatusCode,
) -> Response<Body> {
    match call_value(shared, caller, method, params).await {
        Ok(v) => json(ok, &v),
        Err(e) => error(&e),
    }
}

/// `GET /v1/sessions[?state=…]` → `session.list`.
pub(crate) async fn list(shared: &Shared, caller: &Caller, uri: &Uri) -> Response<Body> {
    let mut params = Map::new();
    match Query::parse(uri) {
        Ok(q) => {
            if let Some(s) = q.str("state") {
                params.insert("state".into(), Value::from(s));
            }
        }
        Err(e) => return error(&e),
    }
    call(shared, caller, "session.list", params, StatusCode::OK).await
}

/// `POST /v1/sessions` (body = `session.start` params) → 201 with the result and
/// `Location: /v1/sessions/<id>`.
pub(crate) async fn start(shared: &Shared, caller: &Caller, body: Incoming) -> Response<Body> {
    let params = match read_object(body).await {
        Ok(p) => p,
        Err(r) => return r,
    };
    match call_value(shared, caller, "session.start", params).await {
        Ok(v) => {
            let mut resp = json(StatusCode::CREATED, &v);
            if let Some(id) = v.get("session_id").and_then(Value::as_str)
                && let Ok(loc) = HeaderValue::from_str(&format!("/v1/sessions/{id}"))
            {
                resp.headers_mut().insert(header::LOCATION, loc);
            }
            resp
        }
        Err(e) => error(&e),
    }
}

/// `GET` / `DELETE /v1/sessions/:id` → `session.get` / `session.delete`.
pub(crate) async fn by_id(
    shared: &Shared,
    caller: &Caller,
    method: &str,
    id: &str,
) -> Response<Body> {
    let mut params = Map::new();
    params.insert("session_id".into(), Value::from(id));
    call(shared, caller, method, params, StatusCode::OK).await
}

/// `POST /v1/sessions/:id/{send,pause,resume,cancel}`: the body's fields (`{text}`,
/// `{reason}`, or nothing) plus the id from the path.
pub(crate) async fn action(
    shared: &Shared,
    caller: &Caller,
    method: &str,
    id: &str,
    body: Incoming,
) -> Response<Body> {
    let mut params = match read_object(body).await {
        Ok(p) => p,
        Err(r) => return r,
    };
    match params.get("session_id") {
        Some(v) if v.as_str() != Some(id) => {
            return error(&Error::invalid_params(
                "session_id in the body differs from the one in the path",
            ));
        }
        _ => {}
    }
    params.insert("session_id".into(), Value::from(id));
    call(shared, caller, method, params, StatusCode::OK).await
}

/// `POST /v1/sse-ticket` (body `{session_id}`) → `{ticket, expires_at}`. The caller's
/// scope must allow reading that session, and the session must exist.
pub(crate) async fn sse_ticket(shared: &Shared, caller: &Caller, body: Incoming) -> Response<Body> {
    let params = match read_object(body).await {
        Ok(p) => p,
        Err(r) => return r,
    };
    let id = match (
        params.get("session_id").and_then(Value::as_str),
        params.len(),
    ) {
        (Some(id), 1) => id.to_owned(),
        _ => {
            return error(&Error::invalid_params(
                "the body must be {\"session_id\": \"sess_…\"}",
            ));
        }
    };
    let state = shared.rpc.state();
    if let Err(e) = shared
        .rpc
        .check_access(caller, "session.subscribe", Some(&id))
        .and_then(|()| state.hub.get(&id).map(drop))
    {
        return error(&e);
    }
    let (ticket, expires_at) = state.auth.issue_ticket(&id);
    json(
        StatusCode::OK,
        &json!({"ticket": ticket, "expires_at": expires_at}),
    )
}

/// `GET /v1/sessions/:id/journal?since_seq=N&epoch=E`: the raw journal lines after
/// `since_seq` (default 0: all), as `application/x-ndjson`, up to the last record
/// written when the request arrived. Read on the blocking pool in chunks as the
/// client takes them, so a huge journal never sits in memory. `X-R1-Epoch` names the
/// current epoch; an `epoch` that is not current restarts from the last shared seq,
/// named by `X-R1-Reset-Last-Good-Seq`. Damage met mid-way ends the body early.
pub(crate) async fn journal(
    shared: &Shared,
    caller: &Caller,
    id: &str,
    uri: &Uri,
) -> Response<Body> {
    match journal_inner(shared, caller, id, uri).await {
        Ok(r) => r,
        Err(e) => error(&e),
    }
}

async fn journal_inner(
    shared: &Shared,
    caller: &Caller,
    id: &str,
    uri: &Uri,
) -> Result<Response<Body>> {
    shared.rpc.check_access(caller, "journal.read", Some(id))?;
    let q = Query::parse(uri)?;
    let hub = &shared.rpc.state().hub;
    let session = hub.get(id)?;
    let mut since = q.u64("since_seq")?.unwrap_or(0);
    let mut reset = None;
    if let Some(ep) = q.str("epoch")
        && let Some(last_good) = hub.reset_point(&session, ep).await?
    {
        since = since.min(last_good);
        reset = Some(last_good);
    }
    let upto = session.last_seq();
    let path = session.journal_path().to_path_buf();
    let reader = tokio::task::spawn_blocking(move || -> Result<Reader> {
        let mut r = Reader::open(&path)?;
        r.seek(since)?;
        Ok(r)
    })
    .await
    .map_err(|e| Error::internal(format!("journal task failed: {e}")))??;

    let body = StreamBody::new(stream::unfold(Some(reader), move |reader| async move {
        let reader = reader?;
        let chunk = tokio::task::spawn_blocking(move || read_chunk(reader, since, upto)).await;
        match chunk {
            Ok((reader, bytes)) if !bytes.is_empty() => Some((
                Ok::<_, std::convert::Infallible>(Frame::data(bytes)),
                reader,
            )),
            Ok(_) => None,
            Err(e) => {
                tracing::warn!(error = %e, "journal download task failed");
                None
            }
        }
    }));
    let mut resp = Response::new(BodyExt::boxed_unsync(body));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-ndjson"),
    );
    if let Ok(v) = HeaderValue::from_str(session.epoch()) {
        resp.headers_mut().insert(EPOCH_HEADER, v);
    }
    if let Some(lg) = reset {
        resp.headers_mut()
            .insert(RESET_HEADER, HeaderValue::from(lg));
    }
    Ok(resp)
}

/// Reads the next chunk of lines with since < seq ≤ upto. `None` reader once done.
fn read_chunk(mut reader: Reader, since: u64, upto: u64) -> (Option<Reader>, Bytes) {
    let mut buf = Vec::with_capacity(16 * 1024);
    let mut records = 0;
    while records < JOURNAL_CHUNK_RECORDS && buf.len() < JOURNAL_CHUNK_BYTES {
        match reader.next_record() {
            Ok(Some(rec)) if rec.seq <= since => continue,
            Ok(Some(rec)) if rec.seq > upto => return (None, Bytes::from(buf)),
            Ok(Some(rec)) => {
                buf.extend_from_slice(rec.line().as_bytes());
                buf.push(b'\n');
                records += 1;
            }
            Ok(None) => return (None, Bytes::from(buf)),
            Err(e) => {
                tracing::warn!(path = %reader.path().display(), error = %e, "journal download stopped early");
                return (None, Bytes::from(buf));
            }
        }
    }
    (Some(reader), Bytes::from(buf))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_values_are_plain() {
        let uri: Uri = "/x?since_seq=5&epoch=ab12&flag".parse().unwrap();
        let q = Query::parse(&uri).unwrap();
        assert_eq!(q.u64("since_seq").unwrap(), Some(5));
        assert_eq!(q.str("epoch"), Some("ab12"));
        assert_eq!(q.str("flag"), Some(""));
        assert_eq!(q.str("nope"), None);
        let bad: Uri = "/x?since_seq=-1".parse().unwrap();
        assert!(Query::parse(&bad).unwrap().u64("since_seq").is_err());
        let enc: Uri = "/x?epoch=a%20b".parse().unwrap();
        assert!(Query::parse(&enc).is_err());
        let twice: Uri = "/x?a=1&a=2".parse().unwrap();
        assert!(Query::parse(&twice).is_err());
    }

    #[test]
    fn hello_proof_is_hmac_sha256() {
        // RFC 4231 test case 2: key "Jefe", data "what do ya want for nothing?".
        assert_eq!(
            hello_proof("Jefe", "what do ya want ", "for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
