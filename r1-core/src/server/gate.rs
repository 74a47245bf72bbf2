//! The checks every loopback request passes before it reaches a route (DESIGN §4):
//! the Host pin (DNS rebinding), the Origin pin (CSWSH/CSRF), bearer and WebSocket
//! subprotocol credentials, and the headers every response carries. Pure functions
//! over header maps, so each rule is unit-tested on its own.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

use super::auth::Auth;
use crate::error::{Error, ErrorKind};

/// The subprotocol that announces a bearer token in the next list element.
pub const BEARER_PROTOCOL: &str = "r1.bearer";
/// Prefix of the protocol-version subprotocol (`r1.proto.v1`).
pub const PROTO_PREFIX: &str = "r1.proto.v";
/// The only `r1.proto.v<N>` this daemon speaks.
pub const PROTO_VERSION: u32 = 1;
/// `WWW-Authenticate` on every 401.
pub const WWW_AUTHENTICATE: &str = "Bearer realm=\"r1\"";
/// Headers a browser may send cross-origin (preflight answer).
pub const ALLOW_HEADERS: &str = "authorization, content-type, last-event-id";
/// How long a browser may cache a preflight answer, in seconds.
pub const PREFLIGHT_MAX_AGE: &str = "600";

/// A header that must appear at most once appeared more than once, or is not
/// visible ASCII.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ambiguous;

/// The one value of a header that must appear at most once. An ambiguous header is
/// refused, never guessed at.
pub fn single<'a>(headers: &'a HeaderMap, name: &HeaderName) -> Result<Option<&'a str>, Ambiguous> {
    let mut all = headers.get_all(name).iter();
    let Some(first) = all.next() else {
        return Ok(None);
    };
    if all.next().is_some() {
        return Err(Ambiguous);
    }
    first.to_str().map(Some).map_err(|_| Ambiguous)
}

fn refused(message: impl Into<String>) -> Error {
    Error::new(ErrorKind::Unauthorized, message)
}

/// The Host pin: exactly one `Host` that is `127.0.0.1:<port>`, `localhost:<port>` or
/// `[::1]:<port>`. Anything else is a page on another name resolving to us.
pub fn check_host(headers: &HeaderMap, port: u16) -> Result<(), Error> {
    match single(headers, &header::HOST) {
        Ok(Some(h)) if Auth::host_allowed(h, port) => Ok(()),
        Ok(Some(_)) => Err(refused(format!(
            "the Host header must be 127.0.0.1:{port}, localhost:{port} or [::1]:{port}"
        ))),
        Ok(None) => Err(refused("a Host header is required")),
        Err(Ambiguous) => Err(refused("exactly one readable Host header is required")),
    }
}

/// An Origin that passed the pin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowedOrigin {
    /// The exact value the browser sent.
    pub origin: String,
    /// The daemon's own origin (same-origin: no CORS headers needed).
    pub own: bool,
}

/// The Origin pin: an `Origin` that is present must be allowed. `Ok(None)` when the
/// request carries none (non-browser clients).
pub fn check_origin(
    headers: &HeaderMap,
    auth: &Auth,
    port: u16,
) -> Result<Option<AllowedOrigin>, Error> {
    match single(headers, &header::ORIGIN) {
        Ok(None) => Ok(None),
        Ok(Some(o)) if auth.origin_allowed(o, port) => Ok(Some(AllowedOrigin {
            origin: o.to_owned(),
            own: Auth::is_own_origin(o, port),
        })),
        Ok(Some(_)) => Err(refused(
            "this Origin may not use the daemon; start it with --allow-origin <origin> to allow one",
        )),
        Err(Ambiguous) => Err(refused("exactly one readable Origin header is allowed")),
    }
}

/// The token of `Authorization: Bearer <token>` (scheme case-insensitive), if the
/// header is present exactly once and has that shape.
pub fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = single(headers, &header::AUTHORIZATION).ok()??;
    let (scheme, rest) = value.trim().split_once([' ', '\t'])?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let token = rest.trim();
    (!token.is_empty()).then_some(token)
}

/// What a client offered in `Sec-WebSocket-Protocol` (every such header, comma-joined).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SubprotocolOffer {
    /// `r1.bearer` was offered.
    pub bearer: bool,
    /// Every element that is neither `r1.bearer` nor `r1.proto.v*`.
    pub tokens: Vec<String>,
    /// Every `r1.proto.v*` element, as sent.
    pub versions: Vec<String>,
}

impl SubprotocolOffer {
    /// Reads the offer; an unreadable header counts as no offer.
    pub fn parse(headers: &HeaderMap) -> SubprotocolOffer {
        let mut offer = SubprotocolOffer::default();
        for v in headers.get_all(header::SEC_WEBSOCKET_PROTOCOL) {
            let Ok(v) = v.to_str() else { continue };
            for item in v.split(',').map(str::trim).filter(|i| !i.is_empty()) {
                if item == BEARER_PROTOCOL {
                    offer.bearer = true;
                } else if item.starts_with(PROTO_PREFIX) {
                    offer.versions.push(item.to_owned());
                } else {
                    offer.tokens.push(item.to_owned());
                }
            }
        }
        offer
    }

    /// The credential: present only with `r1.bearer` and exactly one other element.
    pub fn token(&self) -> Option<&str> {
        match (self.bearer, self.tokens.as_slice()) {
            (true, [t]) => Some(t),
            _ => None,
        }
    }

    /// `Err(reason)` when versions were offered and none is one we speak; the reason
    /// names the supported versions (it travels in a close frame, ≤ 123 bytes).
    pub fn version_check(&self) -> Result<(), String> {
        let ours = format!("{PROTO_PREFIX}{PROTO_VERSION}");
        if self.versions.is_empty() || self.versions.contains(&ours) {
            return Ok(());
        }
        let mut reason = format!("unsupported protocol; this daemon speaks {ours} only");
        reason.truncate(123);
        Err(reason)
    }
}

fn put(h: &mut HeaderMap, name: HeaderName, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        h.insert(name, v);
    }
}

/// Headers on every response: `Vary: Origin`, `Cache-Control: no-store`,
/// `X-Content-Type-Options: nosniff`, and for an allowed foreign Origin its exact
/// `Access-Control-Allow-Origin` (never `*`).
pub fn decorate(h: &mut HeaderMap, origin: Option<&AllowedOrigin>) {
    h.insert(header::VARY, HeaderValue::from_static("Origin"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    if let Some(o) = origin.filter(|o| !o.own) {
        put(h, header::ACCESS_CONTROL_ALLOW_ORIGIN, &o.origin);
    }
}

/// The CORS part of a preflight answer for a route allowing `methods`.
pub fn preflight(h: &mut HeaderMap, origin: &AllowedOrigin, methods: &str) {
    put(h, header::ACCESS_CONTROL_ALLOW_ORIGIN, &origin.origin);
    h.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static(ALLOW_HEADERS),
    );
    put(h, header::ACCESS_CONTROL_ALLOW_METHODS, methods);
    h.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static(PREFLIGHT_MAX_AGE),
    );
}

/// True when the request asks for a WebSocket upgrade (RFC 6455 §4.2.1: `Connection`
/// lists `upgrade`, `Upgrade` lists `websocket`).
pub fn wants_websocket(headers: &HeaderMap) -> bool {
    let lists = |name: HeaderName, want: &str| {
        headers.get_all(name).iter().any(|v| {
            v.to_str()
                .is_ok_and(|s| s.split(',').any(|t| t.trim().eq_ignore_ascii_case(want)))
        })
    };
    lists(header::CONNECTION, "upgrade") && lists(header::UPGRADE, "websocket")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::token::Token;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    fn auth(extra: &[&str]) -> Auth {
        Auth::new(
            Token::generate().unwrap(),
            extra.iter().map(|s| s.to_string()).collect(),
        )
    }

    #[test]
    fn host_pin_table() {
        for (hdrs, ok) in [
            (vec![("host", "127.0.0.1:4000")], true),
            (vec![("host", "localhost:4000")], true),
            (vec![("host", "[::1]:4000")], true),
            (vec![("host", "localhost:4001")], false),
            (vec![("host", "evil.example:4000")], false),
            (vec![("host", "127.0.0.1")], false),
            (vec![("host", "")], false),
            (vec![], false),
            (
                vec![("host", "127.0.0.1:4000"), ("host", "127.0.0.1:4000")],
                false,
            ),
        ] {
            assert_eq!(check_host(&headers(&hdrs), 4000).is_ok(), ok, "{hdrs:?}");
        }
    }

    #[test]
    fn origin_pin_table() {
        let a = auth(&["chrome-extension://abc"]);
        let own = check_origin(&headers(&[("origin", "http://127.0.0.1:4000")]), &a, 4000);
        assert_eq!(
            own.unwrap(),
            Some(AllowedOrigin {
                origin: "http://127.0.0.1:4000".into(),
                own: true
            })
        );
        let ext = check_origin(&headers(&[("origin", "chrome-extension://abc")]), &a, 4000);
        assert!(!ext.unwrap().unwrap().own);
        assert!(
            check_origin(&headers(&[("origin", "tauri://localhost")]), &a, 4000)
                .unwrap()
                .is_some()
        );
        assert_eq!(check_origin(&headers(&[]), &a, 4000).unwrap(), None);
        for bad in [
            "http://evil.example",
            "null",
            "http://127.0.0.1:4001",
            "https://127.0.0.1:4000",
        ] {
            assert!(
                check_origin(&headers(&[("origin", bad)]), &a, 4000).is_err(),
                "{bad}"
            );
        }
        let with_null = auth(&["null"]);
        assert!(
            check_origin(&headers(&[("origin", "null")]), &with_null, 4000)
                .unwrap()
                .is_some()
        );
    }

    #[test]
    fn bearer_scheme_is_case_insensitive() {
        for (v, want) in [
            ("Bearer abc", Some("abc")),
            ("bearer abc", Some("abc")),
            ("BEARER  abc ", Some("abc")),
            ("Basic abc", None),
            ("Bearer", None),
            ("Bearer ", None),
            ("abc", None),
        ] {
            assert_eq!(
                bearer_token(&headers(&[("authorization", v)])),
                want,
                "{v:?}"
            );
        }
        assert_eq!(
            bearer_token(&headers(&[
                ("authorization", "Bearer a"),
                ("authorization", "Bearer b")
            ])),
            None
        );
    }

    #[test]
    fn subprotocol_offers() {
        let o = SubprotocolOffer::parse(&headers(&[("sec-websocket-protocol", "r1.bearer, tok")]));
        assert_eq!(o.token(), Some("tok"));
        assert!(o.version_check().is_ok());
        let split = SubprotocolOffer::parse(&headers(&[
            ("sec-websocket-protocol", "r1.proto.v1"),
            ("sec-websocket-protocol", "r1.bearer,tok"),
        ]));
        assert_eq!(split.token(), Some("tok"));
        assert!(split.version_check().is_ok());
        let no_bearer = SubprotocolOffer::parse(&headers(&[("sec-websocket-protocol", "tok")]));
        assert_eq!(no_bearer.token(), None);
        let no_token =
            SubprotocolOffer::parse(&headers(&[("sec-websocket-protocol", "r1.bearer")]));
        assert_eq!(no_token.token(), None);
        let two =
            SubprotocolOffer::parse(&headers(&[("sec-websocket-protocol", "r1.bearer, a, b")]));
        assert_eq!(two.token(), None);
        let v99 = SubprotocolOffer::parse(&headers(&[(
            "sec-websocket-protocol",
            "r1.bearer, tok, r1.proto.v99",
        )]));
        let reason = v99.version_check().unwrap_err();
        assert!(reason.contains("r1.proto.v1") && reason.len() <= 123);
        assert_eq!(
            SubprotocolOffer::parse(&headers(&[])),
            SubprotocolOffer::default()
        );
    }

    #[test]
    fn every_response_is_decorated() {
        let mut h = HeaderMap::new();
        decorate(&mut h, None);
        assert_eq!(h["vary"], "Origin");
        assert_eq!(h["cache-control"], "no-store");
        assert_eq!(h["x-content-type-options"], "nosniff");
        assert!(h.get("access-control-allow-origin").is_none());
        let own = AllowedOrigin {
            origin: "http://localhost:1".into(),
            own: true,
        };
        decorate(&mut h, Some(&own));
        assert!(h.get("access-control-allow-origin").is_none());
        let ext = AllowedOrigin {
            origin: "chrome-extension://abc".into(),
            own: false,
        };
        decorate(&mut h, Some(&ext));
        assert_eq!(h["access-control-allow-origin"], "chrome-extension://abc");
        let mut p = HeaderMap::new();
        preflight(&mut p, &ext, "GET, POST");
        assert_eq!(p["access-control-allow-methods"], "GET, POST");
        assert_eq!(
            p["access-control-allow-headers"],
            "authorization, content-type, last-event-id"
        );
        assert_eq!(p["access-control-max-age"], "600");
    }

    #[test]
    fn websocket_upgrade_detection() {
        assert!(wants_websocket(&headers(&[
            ("connection", "keep-alive, Upgrade"),
            ("upgrade", "WebSocket")
        ])));
        assert!(!wants_websocket(&headers(&[("upgrade", "websocket")])));
        assert!(!wants_websocket(&headers(&[("connection", "upgrade")])));
    }
}
