//! The WebSocket transport (DESIGN §4, §8): JSON-RPC over `ws://<loopback>/v1/ws`
//! to an explicit address and token.
//!
//! The token is a bearer secret, so it is sent only to a server that has proved it
//! knows it: first `GET /v1/hello?nonce=<fresh random hex>` (no credentials), whose
//! `proof` must equal hex HMAC-SHA256(key = token, message = nonce ‖ instance_id)
//! ([`hello_proof`]). Only then is the upgrade sent with `Sec-WebSocket-Protocol:
//! r1.bearer, <token>`, and `daemon.hello` over the socket must name the same
//! instance. A squatter on the port learns nothing.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{self, Message};

use super::api::{Client, Dialer};
use super::conn::{Conn, Link};
use super::dial::{DEFAULT_CALL_TIMEOUT, DEFAULT_DIAL_TIMEOUT, DEFAULT_RECONNECT_FOR, handshake};
use crate::discovery::Discovery;
use crate::error::{Error, ErrorKind, Result};
use crate::token::{self, Token};

pub use crate::server::gate::BEARER_PROTOCOL;
/// Largest message accepted (DESIGN §4).
const MAX_MESSAGE: usize = 16 * 1024 * 1024;
/// Largest `/v1/hello` body read.
const MAX_HELLO_BODY: usize = 64 * 1024;

/// How [`dial_ws`] reaches the daemon. `Debug` redacts the token.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct WsOptions {
    /// `127.0.0.1`, `localhost` or `::1` (anything else is refused: the token must
    /// not leave the machine).
    pub host: String,
    /// The daemon's loopback port.
    pub port: u16,
    /// The bearer token (master, or scoped from `daemon.mint_token`).
    pub token: Token,
    /// The dial's budget (default 2 s).
    pub timeout: Duration,
    /// Each call's default timeout (default 30 s).
    pub call_timeout: Duration,
    /// How long subscriptions and calls keep trying after a lost connection.
    pub reconnect_for: Duration,
    /// A name for the daemon's log.
    pub client_name: Option<String>,
}

impl WsOptions {
    /// Options for `host:port` with `token`, other fields default.
    pub fn new(host: impl Into<String>, port: u16, token: Token) -> WsOptions {
        WsOptions {
            host: host.into(),
            port,
            token,
            timeout: DEFAULT_DIAL_TIMEOUT,
            call_timeout: DEFAULT_CALL_TIMEOUT,
            reconnect_for: DEFAULT_RECONNECT_FOR,
            client_name: None,
        }
    }

    /// The loopback address and master token of a discovery file.
    pub fn from_discovery(d: &Discovery) -> Result<WsOptions> {
        match (&d.host, d.port) {
            (Some(h), Some(p)) => Ok(WsOptions::new(h.clone(), p, d.token.clone())),
            _ => Err(Error::new(
                ErrorKind::DaemonNotFound,
                format!(
                    "the daemon (pid {}) runs without the loopback listener (--no-tcp)",
                    d.pid
                ),
            )),
        }
    }

    /// Sets [`timeout`](Self::timeout).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }
    /// Sets [`call_timeout`](Self::call_timeout).
    pub fn call_timeout(mut self, timeout: Duration) -> Self {
        self.call_timeout = timeout;
        self
    }
    /// Sets [`reconnect_for`](Self::reconnect_for).
    pub fn reconnect_for(mut self, window: Duration) -> Self {
        self.reconnect_for = window;
        self
    }
    /// Sets [`client_name`](Self::client_name).
    pub fn client_name(mut self, name: impl Into<String>) -> Self {
        self.client_name = Some(name.into());
        self
    }
}

/// Connects over WebSocket after checking the server's `/v1/hello` proof.
///
/// Errors: a non-loopback host → [`ErrorKind::InvalidParams`]; nothing listening →
/// [`ErrorKind::DaemonNotFound`]; a wrong proof (not the daemon, or the wrong
/// token) or a refused token → [`ErrorKind::Unauthorized`], and in the first case
/// the token was never sent; no answer in time → [`ErrorKind::Timeout`].
pub async fn dial_ws(opts: WsOptions) -> Result<Client> {
    let conn = connect(&opts).await?;
    Ok(Client::from_conn(conn, Dialer::Ws(opts)))
}

/// The `/v1/hello` proof for `token`: lowercase hex HMAC-SHA256 keyed with the
/// token's text over the nonce's text (as sent) followed by the instance id (DESIGN
/// §4). The same function the daemon answers with ([`crate::server::rest::hello_proof`]).
pub fn hello_proof(token: &Token, nonce: &str, instance_id: &str) -> String {
    crate::server::rest::hello_proof(token.expose(), nonce, instance_id)
}

/// `host:port` as the `Host` header and URL want it (`[::1]:port` for IPv6).
fn authority(host: &str, port: u16) -> Result<String> {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    if bare.eq_ignore_ascii_case("localhost") {
        return Ok(format!("localhost:{port}"));
    }
    match bare.parse::<IpAddr>() {
        Ok(ip) if ip.is_loopback() => Ok(match ip {
            IpAddr::V4(v4) => format!("{v4}:{port}"),
            IpAddr::V6(v6) => format!("[{v6}]:{port}"),
        }),
        _ => Err(Error::invalid_params(format!(
            "refusing to send the r1 token to {host}: the WebSocket transport only dials loopback (127.0.0.1, localhost, ::1)"
        ))),
    }
}

async fn tcp(authority: &str, budget: Duration) -> Result<TcpStream> {
    match tokio::time::timeout(budget, TcpStream::connect(authority)).await {
        Ok(Ok(s)) => Ok(s),
        Ok(Err(e)) => Err(Error::new(
            ErrorKind::DaemonNotFound,
            format!("nothing answers on {authority}: {e}"),
        )),
        Err(_) => Err(Error::new(
            ErrorKind::Timeout,
            format!("connecting to {authority} timed out"),
        )),
    }
}

#[derive(Deserialize)]
struct HelloAnswer {
    instance_id: String,
    proof: String,
}

/// `GET /v1/hello?nonce=…` and the proof check. Returns the proven instance id.
async fn check_hello(authority: &str, token: &Token, budget: Duration) -> Result<String> {
    let stream = tcp(authority, budget).await?;
    let nonce = token::random_hex(16);
    let fail = |what: String| {
        Error::new(
            ErrorKind::Protocol,
            format!("{authority} is not an r1 daemon: {what}"),
        )
    };
    let exchange = async {
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| fail(format!("http handshake failed ({e})")))?;
        let driver = tokio::spawn(async move {
            let _ = conn.await;
        });
        // `key` names the token we hold (master or scoped) without revealing it.
        let key = crate::server::auth::key_id(token.expose());
        let req = hyper::Request::get(format!("/v1/hello?nonce={nonce}&key={key}"))
            .header(hyper::header::HOST, authority)
            .body(Empty::<Bytes>::new())
            .map_err(|e| Error::internal(format!("cannot build the hello request: {e}")))?;
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| fail(format!("GET /v1/hello failed ({e})")))?;
        let status = resp.status();
        let body = Limited::new(resp.into_body(), MAX_HELLO_BODY)
            .collect()
            .await
            .map_err(|e| fail(format!("cannot read the /v1/hello answer ({e})")))?
            .to_bytes();
        driver.abort();
        if status == hyper::StatusCode::NOT_FOUND {
            return Err(Error::new(
                ErrorKind::Unauthorized,
                format!(
                    "the daemon on {authority} knows no such token (expired, rotated, or another daemon's); the token was not sent"
                ),
            ));
        }
        if !status.is_success() {
            return Err(fail(format!("GET /v1/hello answered {status}")));
        }
        serde_json::from_slice::<HelloAnswer>(&body)
            .map_err(|e| fail(format!("unexpected /v1/hello answer ({e})")))
    };
    let answer = match tokio::time::timeout(budget, exchange).await {
        Ok(a) => a?,
        Err(_) => {
            return Err(Error::new(
                ErrorKind::Timeout,
                format!(
                    "{authority} did not answer /v1/hello within {:.1}s",
                    budget.as_secs_f64()
                ),
            ));
        }
    };
    let expected = hello_proof(token, &nonce, &answer.instance_id);
    let presented = answer.proof.trim().to_ascii_lowercase();
    // Constant time: a timing oracle must not help forge a proof byte by byte.
    let ok = !expected.is_empty()
        && bool::from(subtle::ConstantTimeEq::ct_eq(
            expected.as_bytes(),
            presented.as_bytes(),
        ));
    if !ok {
        return Err(Error::new(
            ErrorKind::Unauthorized,
            format!(
                "the server on {authority} failed the /v1/hello proof: it is not the r1 daemon, or the token is not this daemon's; the token was not sent"
            ),
        ));
    }
    Ok(answer.instance_id)
}

/// Dials once per the options (also used to reconnect).
pub(crate) async fn connect(opts: &WsOptions) -> Result<Conn> {
    let deadline = Instant::now() + opts.timeout;
    let left = || deadline.saturating_duration_since(Instant::now());
    let authority = authority(&opts.host, opts.port)?;
    let instance = check_hello(&authority, &opts.token, opts.timeout).await?;

    let stream = tcp(&authority, left()).await?;
    let mut request = format!("ws://{authority}/v1/ws")
        .into_client_request()
        .map_err(|e| Error::invalid_params(format!("bad WebSocket address {authority}: {e}")))?;
    let offer = HeaderValue::from_str(&format!("{BEARER_PROTOCOL}, {}", opts.token.expose()))
        .map_err(|_| Error::invalid_params("the token has characters a header cannot carry"))?;
    request
        .headers_mut()
        .insert(hyper::header::SEC_WEBSOCKET_PROTOCOL, offer);
    let config = WebSocketConfig::default()
        .max_message_size(Some(MAX_MESSAGE))
        .max_frame_size(Some(MAX_MESSAGE));
    let upgrade = tokio_tungstenite::client_async_with_config(request, stream, Some(config));
    let (ws, response) = match tokio::time::timeout(left(), upgrade).await {
        Ok(Ok(pair)) => pair,
        Ok(Err(tungstenite::Error::Http(resp))) => {
            let status = resp.status();
            let kind = if status == 401 || status == 403 {
                ErrorKind::Unauthorized
            } else {
                ErrorKind::Protocol
            };
            return Err(Error::new(
                kind,
                format!("the daemon on {authority} refused the WebSocket upgrade: {status}"),
            ));
        }
        Ok(Err(e)) => {
            return Err(Error::new(
                ErrorKind::Protocol,
                format!("the WebSocket upgrade to {authority} failed: {e}"),
            ));
        }
        Err(_) => {
            return Err(Error::new(
                ErrorKind::Timeout,
                format!("the WebSocket upgrade to {authority} timed out"),
            ));
        }
    };
    let selected = response
        .headers()
        .get(hyper::header::SEC_WEBSOCKET_PROTOCOL)
        .and_then(|v| v.to_str().ok());
    if selected != Some(BEARER_PROTOCOL) {
        return Err(Error::new(
            ErrorKind::Protocol,
            format!("the daemon on {authority} did not select the {BEARER_PROTOCOL} subprotocol"),
        ));
    }

    let peer = format!("ws://{authority}");
    let (sink, stream) = ws.split();
    let peer2 = peer.clone();
    let reader = stream.filter_map(move |m| {
        let peer = peer2.clone();
        async move {
            match m {
                Ok(Message::Text(t)) => Some(Ok(t.as_str().to_owned())),
                Ok(Message::Binary(b)) => Some(String::from_utf8(b.to_vec()).map_err(|_| {
                    Error::new(
                        ErrorKind::Protocol,
                        format!("the daemon ({peer}) sent a binary frame that is not UTF-8"),
                    )
                })),
                // Pings are answered by tungstenite; a close frame ends the stream.
                Ok(_) => None,
                Err(e) => Some(Err(Error::new(
                    ErrorKind::Closed,
                    format!("the connection to the daemon ({peer}) failed: {e}"),
                ))),
            }
        }
    });
    let writer = sink
        .sink_map_err(|e| Error::new(ErrorKind::Closed, e.to_string()))
        .with(|line: String| async move { Ok::<_, Error>(Message::text(line)) });
    let link = Link::start(Box::pin(reader), Box::pin(writer), peer);
    let hello = handshake(&link, left(), opts.client_name.as_deref()).await?;
    if hello.instance_id != instance {
        return Err(Error::new(
            ErrorKind::Protocol,
            format!(
                "the daemon on {authority} proved instance {instance} but answered daemon.hello as {}",
                hello.instance_id
            ),
        ));
    }
    Ok(link.finish(hello, None))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proof_is_hmac_of_nonce_then_instance() {
        use hmac::{Hmac, Mac};
        let token = Token::parse(&"ab".repeat(32)).unwrap();
        let p = hello_proof(&token, "00ff", "1234");
        let mut mac =
            <Hmac<sha2::Sha256> as Mac>::new_from_slice("ab".repeat(32).as_bytes()).unwrap();
        mac.update(b"00ff1234");
        assert_eq!(p, hex::encode(mac.finalize().into_bytes()));
        assert_eq!(p.len(), 64);
        assert_ne!(p, hello_proof(&token, "00ff", "1235"));
    }

    #[test]
    fn only_loopback_is_dialed() {
        assert_eq!(authority("127.0.0.1", 5).unwrap(), "127.0.0.1:5");
        assert_eq!(authority("::1", 5).unwrap(), "[::1]:5");
        assert_eq!(authority("[::1]", 5).unwrap(), "[::1]:5");
        assert_eq!(authority("LOCALHOST", 5).unwrap(), "localhost:5");
        for bad in ["10.0.0.1", "example.com", "0.0.0.0", "127.0.0.1.evil"] {
            assert_eq!(
                authority(bad, 5).unwrap_err().kind(),
                ErrorKind::InvalidParams,
                "{bad}"
            );
        }
    }
}
