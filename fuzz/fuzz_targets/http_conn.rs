//! The loopback HTTP server in process: any bytes → one connection to the real
//! router (hyper over an in-memory `tokio::io::duplex`, through
//! `r1_core::server::http::serve_io`), then a half-close. Never a panic; the server
//! always answers with HTTP/1.x responses or closes, and closes once the client is
//! done (within a few seconds); every answer our routes make carries the security
//! headers; the master token never appears in an answer.
#![no_main]

use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Most bytes read back (a journal download of a big fuzz session stays far below).
const READ_CAP: usize = 64 << 20;

fuzz_target!(|data: &[u8]| {
    let guard = r1_fuzz::daemon();
    let h = guard.as_ref().expect("daemon");
    let data = h.substitute(data).into_owned();
    let rpc = h.rpc.clone();
    let out = r1_fuzz::runtime().block_on(async move {
        let (client, server) = tokio::io::duplex(64 * 1024);
        let serving = tokio::spawn(r1_core::server::http::serve_io(server, rpc, r1_fuzz::PORT));
        let (mut rd, mut wr) = tokio::io::split(client);
        let write = async {
            // The server may close before reading everything (an error it answered).
            let _ = wr.write_all(&data).await;
            let _ = wr.shutdown().await;
        };
        let read = async {
            let mut out = Vec::new();
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                match rd.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        out.extend_from_slice(&buf[..n]);
                        assert!(out.len() <= READ_CAP, "more than {READ_CAP} bytes back");
                    }
                }
            }
            out
        };
        let (_, out) =
            tokio::time::timeout(Duration::from_secs(10), async { tokio::join!(write, read) })
                .await
                .unwrap_or_else(|_| {
                    panic!("the connection neither answered nor closed within 10 s")
                });
        tokio::time::timeout(Duration::from_secs(10), serving)
            .await
            .expect("the connection task ends after the close")
            .expect("the connection task does not panic");
        out
    });
    check_http(&out, h.handle.token().expose());
});

/// Every response starts `HTTP/1.1 <3 digits> ` (`HTTP/1.0` to a 1.0 request); those our routes make (they carry
/// a JSON error or a known status) carry `Vary: Origin`, `Cache-Control: no-store`
/// and `X-Content-Type-Options: nosniff`.
fn check_http(out: &[u8], token: &str) {
    if out.is_empty() {
        return;
    }
    let text = String::from_utf8_lossy(out);
    assert!(
        !text.contains(token),
        "the master token is in an answer: {text}"
    );
    let head_end = text.find("\r\n\r\n").unwrap_or(text.len());
    let head = &text[..head_end];
    let status_ok = head.len() >= 13
        && (head.starts_with("HTTP/1.1 ") || head.starts_with("HTTP/1.0 "))
        && head.as_bytes()[9..12].iter().all(u8::is_ascii_digit)
        && head.as_bytes()[12] == b' ';
    assert!(status_ok, "not an HTTP/1.x response: {head:?}");
    let lower = head.to_ascii_lowercase();
    // hyper answers some malformed requests itself (400, 431, 505 …) without going
    // through the router; the router's answers all have a `vary` header.
    if lower.contains("\r\nvary:") {
        for h in [
            "\r\nvary: origin",
            "\r\ncache-control: no-store",
            "\r\nx-content-type-options: nosniff",
        ] {
            assert!(lower.contains(h), "a routed answer lacks {h:?}: {head}");
        }
    }
}
