//! The loopback HTTP/WebSocket listener (DESIGN §4): accept loop, per-connection
//! hyper service, the route table, and the pins every request passes.
//!
//! Order of checks for every request, whatever the route (OPTIONS included):
//! Host pin → Origin pin → route (404 / 405 with `Allow`) → credentials (bearer,
//! WebSocket subprotocol or SSE ticket; the public routes need none) → the route.
//! Every answer, refusals included, is decorated by [`gate::decorate`].
//!
//! The routes live in `routes()`, one line each; [`rest`] answers the
//! REST and JSON-RPC routes, [`ws`] the WebSocket ones and
//! [`sse`] the event stream.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::auth::{Bearer, Scope};
use super::gate::{self, AllowedOrigin};
use super::state::{Caller, Transport};
use super::{console, rest, sse, ws};
use crate::error::{Error, ErrorKind};
use crate::rpc::codes;
use crate::rpc::dispatch::Dispatcher;

/// Largest request body and WebSocket message (DESIGN §4).
pub const MAX_BODY: usize = 16 * 1024 * 1024;

/// Limits and timings of the loopback listener. The defaults are DESIGN §4's; tests
/// shorten the keepalive intervals through
/// [`DaemonState::set_http_config`](super::state::DaemonState::set_http_config).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpConfig {
    /// Concurrent connections (plain, streaming and WebSocket together); further
    /// connections wait in the kernel's accept queue.
    pub max_connections: usize,
    /// How long a client may take to send a request's headers.
    pub header_read_timeout: Duration,
    /// WebSocket ping interval.
    pub ws_ping_interval: Duration,
    /// A WebSocket with no frame from the peer for this long is dropped.
    pub ws_pong_timeout: Duration,
    /// How long a closing WebSocket waits for the peer's close frame.
    pub ws_close_timeout: Duration,
    /// Interval of `: ping` comment lines on an SSE stream.
    pub sse_keepalive: Duration,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            // The benchmark holds 1,000 WebSocket subscribers at once; leave room.
            max_connections: 4096,
            header_read_timeout: Duration::from_secs(10),
            ws_ping_interval: Duration::from_secs(20),
            ws_pong_timeout: Duration::from_secs(60),
            ws_close_timeout: Duration::from_secs(5),
            sse_keepalive: Duration::from_secs(20),
        }
    }
}

/// The response body of every route.
pub(crate) type Body = UnsyncBoxBody<Bytes, Infallible>;

/// What every request handler shares.
#[derive(Debug)]
pub(crate) struct Shared {
    /// The dispatcher (and through it the daemon state).
    pub rpc: Dispatcher,
    /// The port we listen on (Host and Origin pins).
    pub port: u16,
    /// Timings, read once per connection.
    pub cfg: HttpConfig,
}

/// Serves the loopback routes until shutdown. Connections already open end when
/// `state.closing` fires (after the `daemon.stopping` notice).
pub async fn serve(listener: TcpListener, rpc: Dispatcher) {
    let state = Arc::clone(rpc.state());
    let port = match listener.local_addr() {
        Ok(a) => a.port(),
        Err(e) => {
            tracing::error!(error = %e, "loopback listener has no address; not serving");
            return;
        }
    };
    let limit = Semaphore::new(state.http_config().max_connections.max(1));
    let limit = Arc::new(limit);
    loop {
        let permit = tokio::select! {
            p = Arc::clone(&limit).acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => return,
            },
            _ = state.shutdown.cancelled() => return,
        };
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = state.shutdown.cancelled() => return,
        };
        let stream = match accepted {
            Ok((s, _)) => s,
            Err(e) => {
                tracing::warn!(error = %e, "loopback accept failed");
                // EMFILE and friends: back off instead of spinning.
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let shared = Arc::new(Shared {
            rpc: rpc.clone(),
            port,
            cfg: state.http_config(),
        });
        tokio::spawn(connection(stream, shared, permit));
    }
}

/// One TCP connection: HTTP/1.1 with keep-alive, possibly upgraded to a WebSocket
/// (the upgraded socket keeps the connection's permit).
async fn connection(stream: TcpStream, shared: Arc<Shared>, permit: OwnedSemaphorePermit) {
    let _ = stream.set_nodelay(true);
    serve_connection(stream, shared, permit, false).await;
}

/// Serves one connection that did not come from the listener (any byte stream, e.g.
/// one end of `tokio::io::duplex`) with the loopback routes, as if it had arrived on
/// `127.0.0.1:<port>`: the same pins, routes, limits and upgrades. For fuzzing and
/// in-memory tests.
///
/// Unlike the listener, the connection allows half-closes: a peer may send its bytes,
/// shut down its write side and still read every answer (hyper's default drops a
/// request whose peer hung up mid-way, which would hide the handlers from a fuzzer
/// that half-closes to say "no more input").
#[doc(hidden)]
pub async fn serve_io<I>(io: I, rpc: Dispatcher, port: u16)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let cfg = rpc.state().http_config();
    let shared = Arc::new(Shared { rpc, port, cfg });
    let Ok(permit) = Arc::new(Semaphore::new(1)).try_acquire_owned() else {
        return;
    };
    serve_connection(io, shared, permit, true).await;
}

async fn serve_connection<I>(
    io: I,
    shared: Arc<Shared>,
    permit: OwnedSemaphorePermit,
    half_close: bool,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let permit = Arc::new(permit);
    let closing = shared.rpc.state().closing.clone();
    let svc_shared = Arc::clone(&shared);
    let service = service_fn(move |req| {
        let shared = Arc::clone(&svc_shared);
        let permit = Arc::clone(&permit);
        async move { Ok::<_, Infallible>(handle(shared, permit, req).await) }
    });
    let mut builder = http1::Builder::new();
    // hyper panics on a header read timeout without a timer.
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(shared.cfg.header_read_timeout)
        .half_close(half_close);
    let conn = builder
        .serve_connection(TokioIo::new(io), service)
        .with_upgrades();
    tokio::pin!(conn);
    let done = tokio::select! {
        r = conn.as_mut() => Some(r),
        _ = closing.cancelled() => None,
    };
    let result = match done {
        Some(r) => r,
        None => {
            // Finish the response in flight (streams end on `closing` themselves).
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = result {
        tracing::debug!(error = %e, "loopback connection ended with an error");
    }
}

/// The routes' handlers, named by what they serve.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Endpoint {
    Health,
    Discover,
    Hello,
    Rpc,
    ListSessions,
    StartSession,
    GetSession,
    DeleteSession,
    Send,
    Pause,
    Resume,
    Cancel,
    Journal,
    Ws,
    SessionWs,
    SseTicket,
    Sse,
    /// The web console's page and assets ([`console`]), no credential needed.
    Console,
}

/// One route: method, path pattern (`:id` matches one segment) and handler.
#[derive(Debug)]
struct Route {
    method: Method,
    path: &'static str,
    endpoint: Endpoint,
}

/// Every route, one line each.
fn routes() -> &'static [Route] {
    use Endpoint::*;
    static ROUTES: std::sync::OnceLock<Vec<Route>> = std::sync::OnceLock::new();
    ROUTES.get_or_init(|| {
        vec![
            route(Method::GET, "/v1/health", Health),
            route(Method::GET, "/v1/discover", Discover),
            route(Method::GET, "/v1/hello", Hello),
            route(Method::POST, "/v1/rpc", Rpc),
            route(Method::GET, "/v1/sessions", ListSessions),
            route(Method::POST, "/v1/sessions", StartSession),
            route(Method::GET, "/v1/sessions/:id", GetSession),
            route(Method::DELETE, "/v1/sessions/:id", DeleteSession),
            route(Method::POST, "/v1/sessions/:id/send", Send),
            route(Method::POST, "/v1/sessions/:id/pause", Pause),
            route(Method::POST, "/v1/sessions/:id/resume", Resume),
            route(Method::POST, "/v1/sessions/:id/cancel", Cancel),
            route(Method::GET, "/v1/sessions/:id/journal", Journal),
            route(Method::GET, "/v1/ws", Ws),
            route(Method::GET, "/v1/sessions/:id/ws", SessionWs),
            route(Method::POST, "/v1/sse-ticket", SseTicket),
            route(Method::GET, "/v1/sessions/:id/sse", Sse),
            route(Method::GET, "/", Console),
            route(Method::GET, "/console/:id", Console),
        ]
    })
}

fn route(method: Method, path: &'static str, endpoint: Endpoint) -> Route {
    Route {
        method,
        path,
        endpoint,
    }
}

/// Where a request goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Routed {
    /// A route; `id` is the `:id` segment, if the pattern has one.
    Found {
        endpoint: Endpoint,
        id: Option<String>,
    },
    /// `OPTIONS` on a known path: a CORS preflight for these methods.
    Preflight { methods: String },
    /// Known path, other method: 405 with this `Allow`.
    WrongMethod { allow: String },
    /// No such path.
    NotFound,
}

/// Matches `path` against `pattern`; `Some(id)` on a match (`id` from `:id`).
fn matches(pattern: &str, path: &str) -> Option<Option<String>> {
    let mut id = None;
    let mut pat = pattern.split('/');
    let mut got = path.split('/');
    loop {
        match (pat.next(), got.next()) {
            (None, None) => return Some(id),
            (Some(":id"), Some(seg)) if !seg.is_empty() => id = Some(seg.to_owned()),
            (Some(p), Some(seg)) if p == seg => {}
            _ => return None,
        }
    }
}

/// Routes a request line.
pub(crate) fn resolve(method: &Method, path: &str) -> Routed {
    let mut methods: Vec<&Method> = Vec::new();
    let mut found = None;
    for r in routes() {
        if let Some(id) = matches(r.path, path) {
            methods.push(&r.method);
            if r.method == method {
                found = Some((r.endpoint, id));
            }
        }
    }
    if let Some((endpoint, id)) = found {
        return Routed::Found { endpoint, id };
    }
    if methods.is_empty() {
        return Routed::NotFound;
    }
    let list = methods
        .iter()
        .map(|m| m.as_str())
        .collect::<Vec<_>>()
        .join(", ");
    if method == Method::OPTIONS {
        Routed::Preflight { methods: list }
    } else {
        Routed::WrongMethod {
            allow: format!("{list}, OPTIONS"),
        }
    }
}

async fn handle(
    shared: Arc<Shared>,
    permit: Arc<OwnedSemaphorePermit>,
    req: Request<Incoming>,
) -> Response<Body> {
    let state = shared.rpc.state();
    state.touch();
    if let Err(e) = gate::check_host(req.headers(), shared.port) {
        tracing::warn!(pin = "host", path = %req.uri().path(), "refused a loopback request");
        return finish(error_status(StatusCode::FORBIDDEN, &e), None);
    }
    let origin = match gate::check_origin(req.headers(), &state.auth, shared.port) {
        Ok(o) => o,
        Err(e) => {
            tracing::warn!(pin = "origin", path = %req.uri().path(), "refused a loopback request");
            return finish(error_status(StatusCode::FORBIDDEN, &e), None);
        }
    };
    tracing::debug!(method = %req.method(), path = %req.uri().path(), "loopback request");
    let resp = match resolve(req.method(), req.uri().path()) {
        Routed::NotFound => error_status(
            StatusCode::NOT_FOUND,
            &Error::not_found(format!("no route {}", req.uri().path())),
        ),
        Routed::WrongMethod { allow } => {
            let mut r = error_status(
                StatusCode::METHOD_NOT_ALLOWED,
                &Error::new(
                    ErrorKind::InvalidRequest,
                    format!("{} does not answer {}", req.uri().path(), req.method()),
                ),
            );
            if let Ok(v) = HeaderValue::from_str(&allow) {
                r.headers_mut().insert(header::ALLOW, v);
            }
            r
        }
        Routed::Preflight { methods } => match &origin {
            Some(o) => {
                let mut r = empty(StatusCode::NO_CONTENT);
                gate::preflight(r.headers_mut(), o, &methods);
                r
            }
            None => error_status(
                StatusCode::FORBIDDEN,
                &Error::new(
                    ErrorKind::Unauthorized,
                    "a CORS preflight needs an allowed Origin",
                ),
            ),
        },
        Routed::Found { endpoint, id } => dispatch(&shared, endpoint, id, req, permit).await,
    };
    finish(resp, origin.as_ref())
}

fn finish(mut resp: Response<Body>, origin: Option<&AllowedOrigin>) -> Response<Body> {
    gate::decorate(resp.headers_mut(), origin);
    resp
}

async fn dispatch(
    shared: &Arc<Shared>,
    endpoint: Endpoint,
    id: Option<String>,
    req: Request<Incoming>,
    permit: Arc<OwnedSemaphorePermit>,
) -> Response<Body> {
    let id = id.unwrap_or_default();
    match endpoint {
        Endpoint::Health => return rest::health(shared),
        Endpoint::Discover => return rest::discover(shared),
        Endpoint::Hello => return rest::hello(shared, req.uri()),
        Endpoint::Ws => return ws::upgrade(shared, req, None, permit).await,
        Endpoint::SessionWs => return ws::upgrade(shared, req, Some(id), permit).await,
        Endpoint::Sse => return sse::stream(shared, req, &id).await,
        Endpoint::Console => return console::serve(shared, req.method(), req.uri().path()),
        _ => {}
    }
    let caller = match authenticate(shared, req.headers(), Transport::Http) {
        Ok((caller, _)) => caller,
        Err(why) => return unauthorized(why),
    };
    let (parts, body) = req.into_parts();
    match endpoint {
        Endpoint::Rpc => rest::rpc(shared, &caller, body).await,
        Endpoint::ListSessions => rest::list(shared, &caller, &parts.uri).await,
        Endpoint::StartSession => rest::start(shared, &caller, body).await,
        Endpoint::GetSession => rest::by_id(shared, &caller, "session.get", &id).await,
        Endpoint::DeleteSession => rest::by_id(shared, &caller, "session.delete", &id).await,
        Endpoint::Send => rest::action(shared, &caller, "session.send", &id, body).await,
        Endpoint::Pause => rest::action(shared, &caller, "session.pause", &id, body).await,
        Endpoint::Resume => rest::action(shared, &caller, "session.resume", &id, body).await,
        Endpoint::Cancel => rest::action(shared, &caller, "session.cancel", &id, body).await,
        Endpoint::Journal => rest::journal(shared, &caller, &id, &parts.uri).await,
        Endpoint::SseTicket => rest::sse_ticket(shared, &caller, body).await,
        Endpoint::Health
        | Endpoint::Discover
        | Endpoint::Hello
        | Endpoint::Ws
        | Endpoint::SessionWs
        | Endpoint::Sse
        | Endpoint::Console => error_status(
            StatusCode::INTERNAL_SERVER_ERROR,
            &Error::internal("route dispatched twice"),
        ),
    }
}

/// Recognises the credential of a request: `Authorization: Bearer <token>`, or for
/// a WebSocket the `r1.bearer, <token>` subprotocol pair. `Err` is the reason for
/// the 401 ([`unauthorized`]).
pub(crate) fn authenticate(
    shared: &Shared,
    headers: &http::HeaderMap,
    transport: Transport,
) -> Result<(Caller, Bearer), &'static str> {
    let token = match transport {
        Transport::WebSocket => gate::SubprotocolOffer::parse(headers)
            .token()
            .map(str::to_owned),
        Transport::Http | Transport::Unix => gate::bearer_token(headers).map(str::to_owned),
    };
    let Some(token) = token else {
        tracing::warn!(transport = ?transport, "refused a request without credentials");
        return Err(match transport {
            Transport::WebSocket => {
                "offer the subprotocols \"r1.bearer, <token>\" (Sec-WebSocket-Protocol)"
            }
            _ => "send Authorization: Bearer <token> (the token is in daemon.json)",
        });
    };
    match shared.rpc.state().auth.check(&token) {
        Some(b) => {
            let scope = match &b {
                Bearer::Master(_) => Scope::Full,
                Bearer::Scoped(s) => s.clone(),
            };
            Ok((Caller { transport, scope }, b))
        }
        None => {
            tracing::warn!(transport = ?transport, "refused an unknown, rotated or expired token");
            Err(
                "the token is not valid (rotated, expired, or from another daemon start); read daemon.json again",
            )
        }
    }
}

/// A bodiless answer.
pub(crate) fn empty(status: StatusCode) -> Response<Body> {
    let mut r = Response::new(Empty::new().boxed_unsync());
    *r.status_mut() = status;
    r
}

/// A JSON answer.
pub(crate) fn json(status: StatusCode, v: &Value) -> Response<Body> {
    json_text(status, v.to_string())
}

/// A JSON answer already serialised.
pub(crate) fn json_text(status: StatusCode, text: String) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from(text)).boxed_unsync());
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

/// `{"error": <JSON-RPC error object>}` with the status the error's kind maps to.
pub(crate) fn error(err: &Error) -> Response<Body> {
    let status = StatusCode::from_u16(codes::http_status_for(err.kind()))
        .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    error_status(status, err)
}

/// `{"error": <JSON-RPC error object>}` with an explicit status.
pub(crate) fn error_status(status: StatusCode, err: &Error) -> Response<Body> {
    let obj = serde_json::to_value(codes::error_object(err)).unwrap_or(Value::Null);
    json(status, &serde_json::json!({ "error": obj }))
}

/// 401 with `WWW-Authenticate: Bearer realm="r1"`.
pub(crate) fn unauthorized(message: &str) -> Response<Body> {
    let mut r = error_status(
        StatusCode::UNAUTHORIZED,
        &Error::new(ErrorKind::Unauthorized, message),
    );
    r.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static(gate::WWW_AUTHENTICATE),
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routing_table() {
        let found = |m: Method, p: &str| match resolve(&m, p) {
            Routed::Found { endpoint, id } => (endpoint, id),
            other => panic!("{m} {p}: {other:?}"),
        };
        assert_eq!(found(Method::GET, "/v1/health"), (Endpoint::Health, None));
        assert_eq!(
            found(Method::POST, "/v1/sessions/sess_x/send"),
            (Endpoint::Send, Some("sess_x".into()))
        );
        assert_eq!(
            found(Method::DELETE, "/v1/sessions/abc"),
            (Endpoint::DeleteSession, Some("abc".into()))
        );
        assert_eq!(
            found(Method::GET, "/v1/sessions/abc/ws"),
            (Endpoint::SessionWs, Some("abc".into()))
        );
        assert_eq!(found(Method::GET, "/"), (Endpoint::Console, None));
        assert_eq!(
            found(Method::GET, "/console/app.js"),
            (Endpoint::Console, Some("app.js".into()))
        );
        assert_eq!(resolve(&Method::GET, "/console/"), Routed::NotFound);
        assert_eq!(resolve(&Method::GET, "/index.html"), Routed::NotFound);
        assert_eq!(resolve(&Method::GET, "/v1/health/"), Routed::NotFound);
        assert_eq!(
            resolve(&Method::GET, "/v1/sessions//send"),
            Routed::NotFound
        );
        assert_eq!(resolve(&Method::GET, "/v1/nope"), Routed::NotFound);
        assert_eq!(
            resolve(&Method::PUT, "/v1/sessions"),
            Routed::WrongMethod {
                allow: "GET, POST, OPTIONS".into()
            }
        );
        assert_eq!(
            resolve(&Method::GET, "/v1/rpc"),
            Routed::WrongMethod {
                allow: "POST, OPTIONS".into()
            }
        );
        assert_eq!(
            resolve(&Method::OPTIONS, "/v1/sessions/x"),
            Routed::Preflight {
                methods: "GET, DELETE".into()
            }
        );
    }

    #[test]
    fn unauthorized_carries_the_challenge() {
        let r = unauthorized("no");
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(r.headers()["www-authenticate"], "Bearer realm=\"r1\"");
    }

    #[test]
    fn errors_map_to_statuses() {
        assert_eq!(
            error(&Error::not_found("x")).status(),
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            error(&Error::new(ErrorKind::Unauthorized, "x")).status(),
            StatusCode::FORBIDDEN
        );
        assert_eq!(
            error(&Error::invalid_params("x")).status(),
            StatusCode::BAD_REQUEST
        );
    }
}
