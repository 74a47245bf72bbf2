//! The web console: a small self-contained page the loopback listener serves from
//! its own origin (`GET /` and `GET /console/<asset>`), so a user can list every
//! session and follow one live in a browser (`r1 ctl open` prints its address).
//!
//! The assets are hand-written HTML, CSS and JavaScript under
//! `r1-core/assets/console/`, embedded in the binary: the page works with no
//! network, no CDN and no files next to the daemon, and always matches the daemon
//! that serves it.
//!
//! # Why the page is safe to serve without a token
//!
//! The page itself holds no secret: it does nothing until the user gives it the
//! token (in the URL fragment that `r1 ctl open` prints, which browsers never send
//! to a server, or pasted into its sign-in box). Everything it shows comes through
//! the authenticated WebSocket. So `GET /` needs no credential, like
//! `/v1/health`, and still passes the Host and Origin pins of every route.
//!
//! # Headers
//!
//! Besides the headers every loopback answer carries (`Vary: Origin`,
//! `Cache-Control: no-store`, `X-Content-Type-Options: nosniff`, added by the
//! listener), each asset answer carries an exact `Content-Type` and a strict
//! `Content-Security-Policy` ([`content_security_policy`]): scripts and styles only
//! from this origin (no inline code, no `eval`), network access only to this origin
//! and its WebSocket, no framing, no `<base>`, no form posts, no plugins, and
//! Trusted Types enforced so that no string can ever become markup. A bug that
//! echoes session output into the page can then at worst show text, never run it.

use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http::{Method, Response, StatusCode};
use http_body_util::{BodyExt, Full};

use super::http::{Body, Shared, error_status};
use crate::error::Error;

/// One embedded file of the console.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Asset {
    /// The request path that serves it.
    pub path: &'static str,
    /// Its exact `Content-Type`.
    pub content_type: &'static str,
    /// Its bytes, embedded at build time.
    pub body: &'static [u8],
}

/// Every file of the console, by request path. `/` is the page; the rest live
/// under `/console/` so they never collide with the `/v1/` API.
pub const ASSETS: &[Asset] = &[
    Asset {
        path: "/",
        content_type: "text/html; charset=utf-8",
        body: include_bytes!("../../assets/console/index.html"),
    },
    Asset {
        path: "/console/app.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../../assets/console/app.js"),
    },
    Asset {
        path: "/console/app.css",
        content_type: "text/css; charset=utf-8",
        body: include_bytes!("../../assets/console/app.css"),
    },
    Asset {
        path: "/console/icon.svg",
        content_type: "image/svg+xml",
        body: include_bytes!("../../assets/console/icon.svg"),
    },
];

/// The asset served at `path`, if any. Paths match exactly: no directory
/// listing, no index guessing, no `..` handling needed because nothing is read
/// from disk.
pub fn find(path: &str) -> Option<&'static Asset> {
    ASSETS.iter().find(|a| a.path == path)
}

/// The `Content-Security-Policy` of the console's answers on loopback `port`.
///
/// * `default-src 'none'`: anything not listed below is refused (fonts, media,
///   workers, manifests, frames…); the page needs none of it.
/// * `script-src 'self'` and `style-src 'self'`: only the embedded files; no
///   inline script or style, no `eval`.
/// * `img-src 'self'`: the icon.
/// * `connect-src`: `'self'` (for `POST /v1/rpc`, which tells a refused token from
///   a daemon that is down) and this port's WebSocket under both loopback names.
///   CSP level 3 browsers already let `'self'` cover `ws:` on the same host and
///   port; the explicit sources keep older ones working. The port is pinned rather
///   than `*`, so the page cannot be made to talk to other local services. There
///   is no `[::1]` source because CSP's host grammar has no IPv6 literals; a page
///   loaded from `[::1]` relies on `'self'`.
/// * `base-uri 'none'`, `form-action 'none'`: no injected `<base>` or form can
///   send anything anywhere (the sign-in form is handled in script).
/// * `frame-ancestors 'none'`: no other page may frame the console (clickjacking).
/// * `require-trusted-types-for 'script'; trusted-types 'none'`: DOM sinks such as
///   `innerHTML` refuse strings outright; the page builds its DOM with
///   `textContent` and `createElement` only.
pub fn content_security_policy(port: u16) -> String {
    format!(
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
         connect-src 'self' ws://127.0.0.1:{port} ws://localhost:{port}; \
         base-uri 'none'; form-action 'none'; frame-ancestors 'none'; \
         require-trusted-types-for 'script'; trusted-types 'none'"
    )
}

/// Headers every console answer carries besides `Content-Type` and the CSP, each
/// with why:
/// * `Referrer-Policy: no-referrer`: nothing about the console leaks to a link's
///   target (the token is never in the URL anyway, only in the fragment, which
///   the page removes at once).
/// * `X-Frame-Options: DENY`: `frame-ancestors` for browsers without CSP 2.
/// * `Cross-Origin-Opener-Policy: same-origin`: a page that opened the console
///   gets no handle on its window.
/// * `Cross-Origin-Resource-Policy: same-origin`: other sites cannot embed the
///   assets.
/// * `Permissions-Policy`: the console uses no device or sensor API.
const FIXED_HEADERS: &[(&str, &str)] = &[
    ("referrer-policy", "no-referrer"),
    ("x-frame-options", "DENY"),
    ("cross-origin-opener-policy", "same-origin"),
    ("cross-origin-resource-policy", "same-origin"),
    (
        "permissions-policy",
        "camera=(), microphone=(), geolocation=(), usb=(), payment=()",
    ),
];

/// The answer for `method path` on loopback `port`, or `None` when `path` is not a
/// console asset (the caller answers 404). `HEAD` gets the headers without the
/// body; other methods never reach here (the router answers 405).
///
/// The caller adds the headers every route carries (`Vary`, `Cache-Control`,
/// `X-Content-Type-Options`).
pub fn response(method: &Method, path: &str, port: u16) -> Option<Response<Bytes>> {
    let asset = find(path)?;
    let body = if method == Method::HEAD {
        Bytes::new()
    } else {
        Bytes::from_static(asset.body)
    };
    let mut resp = Response::new(body);
    *resp.status_mut() = StatusCode::OK;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(asset.content_type),
    );
    // The CSP names the port, so it is built per listener; it is plain ASCII, but a
    // header that cannot be built is left out rather than answered without a
    // policy: refuse instead.
    match HeaderValue::from_str(&content_security_policy(port)) {
        Ok(v) => {
            h.insert(header::CONTENT_SECURITY_POLICY, v);
        }
        Err(_) => return None,
    }
    for (name, value) in FIXED_HEADERS {
        h.insert(
            HeaderName::from_static(name),
            HeaderValue::from_static(value),
        );
    }
    Some(resp)
}

/// The listener's handler for the console routes (`GET /`, `GET /console/:id`):
/// the asset, or 404 for a name under `/console/` that is not one. The listener
/// has already checked the Host and Origin pins and adds the headers every answer
/// carries.
pub(crate) fn serve(shared: &Shared, method: &Method, path: &str) -> Response<Body> {
    match response(method, path, shared.port) {
        Some(r) => r.map(|b| Full::new(b).boxed_unsync()),
        None => error_status(
            StatusCode::NOT_FOUND,
            &Error::not_found(format!("no console asset {path}")),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header<'a>(r: &'a Response<Bytes>, name: &str) -> &'a str {
        r.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    #[test]
    fn serves_every_asset_with_its_type() {
        for a in ASSETS {
            let r = response(&Method::GET, a.path, 4242).unwrap();
            assert_eq!(r.status(), StatusCode::OK, "{}", a.path);
            assert_eq!(header(&r, "content-type"), a.content_type);
            assert!(!r.body().is_empty(), "{} is empty", a.path);
            assert_eq!(r.body().as_ref(), a.body);
        }
        assert!(
            header(&response(&Method::GET, "/", 1).unwrap(), "content-type")
                .starts_with("text/html")
        );
        assert!(
            header(
                &response(&Method::GET, "/console/app.js", 1).unwrap(),
                "content-type"
            )
            .starts_with("text/javascript")
        );
        assert!(
            header(
                &response(&Method::GET, "/console/app.css", 1).unwrap(),
                "content-type"
            )
            .starts_with("text/css")
        );
    }

    #[test]
    fn unknown_paths_are_not_served() {
        for p in [
            "",
            "/index.html",
            "/console",
            "/console/",
            "/console/../console/app.js",
            "/console/app.js/",
            "/console/APP.JS",
            "/v1/health",
            "//",
        ] {
            assert!(response(&Method::GET, p, 1).is_none(), "{p:?}");
        }
    }

    #[test]
    fn head_has_headers_and_no_body() {
        let r = response(&Method::HEAD, "/", 1).unwrap();
        assert!(r.body().is_empty());
        assert!(header(&r, "content-type").starts_with("text/html"));
        assert!(!header(&r, "content-security-policy").is_empty());
    }

    #[test]
    fn policy_is_strict_and_names_the_port() {
        let r = response(&Method::GET, "/", 49321).unwrap();
        let csp = header(&r, "content-security-policy");
        let directives: Vec<&str> = csp.split(';').map(str::trim).collect();
        for want in [
            "default-src 'none'",
            "script-src 'self'",
            "style-src 'self'",
            "img-src 'self'",
            "connect-src 'self' ws://127.0.0.1:49321 ws://localhost:49321",
            "base-uri 'none'",
            "form-action 'none'",
            "frame-ancestors 'none'",
            "require-trusted-types-for 'script'",
            "trusted-types 'none'",
        ] {
            assert!(directives.contains(&want), "missing {want:?} in {csp}");
        }
        // Nothing that would let injected text run or reach elsewhere.
        for bad in [
            "unsafe-inline",
            "unsafe-eval",
            "*",
            "data:",
            "http:",
            "https:",
        ] {
            assert!(!csp.contains(bad), "{bad:?} in {csp}");
        }
        assert_eq!(header(&r, "x-frame-options"), "DENY");
        assert_eq!(header(&r, "referrer-policy"), "no-referrer");
        assert_eq!(header(&r, "cross-origin-opener-policy"), "same-origin");
        assert_eq!(header(&r, "cross-origin-resource-policy"), "same-origin");
    }

    #[test]
    fn page_loads_only_embedded_same_origin_files() {
        let html = std::str::from_utf8(find("/").unwrap().body).unwrap();
        // Every src/href of the page is one of our assets: nothing from a CDN,
        // nothing inline that the CSP would refuse.
        for attr in ["src=\"", "href=\""] {
            for part in html.split(attr).skip(1) {
                let url = part.split('"').next().unwrap_or("");
                if url.starts_with('#') {
                    continue; // an in-page link (the skip link)
                }
                assert!(
                    find(url).is_some(),
                    "the page refers to {url:?}, which is not embedded"
                );
            }
        }
        assert!(!html.contains("<script>"), "inline script would be refused");
        assert!(!html.contains("style=\""), "inline style would be refused");
        let handler = html.split(" on").skip(1).find(|rest| {
            let name: String = rest.chars().take_while(char::is_ascii_lowercase).collect();
            !name.is_empty() && rest[name.len()..].starts_with('=')
        });
        assert!(handler.is_none(), "inline handlers would be refused");
        // The script never uses the markup sinks that Trusted Types refuse.
        let js = std::str::from_utf8(find("/console/app.js").unwrap().body).unwrap();
        for sink in [
            "innerHTML",
            "outerHTML",
            "insertAdjacentHTML",
            "document.write",
            "eval(",
        ] {
            assert!(!js.contains(sink), "app.js uses {sink}");
        }
    }
}
