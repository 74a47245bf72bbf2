//! What a WebSocket connection costs the daemon (the benchmark's row 10b budgets
//! 20 KiB per subscriber): many open sockets must stay small, in memory and in
//! tasks, and the memory must come back when they leave.
//!
//! Its own test binary, with a single test, so nothing else in the process moves the
//! resident set while it is measured.

use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use r1_core::{Daemon, DaemonConfig};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

mod support;
use support::rss_kb;

/// Sockets held open at once: enough that per-socket costs dwarf noise.
const SOCKETS: usize = 300;
/// What a closed socket may leave behind (runtime slabs that never shrink); without
/// the trim it is all of it (~17 KiB here).
const KEPT_KB: f64 = 4.0;

async fn settle() {
    tokio::time::sleep(Duration::from_millis(300)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_websockets_stay_small_and_give_their_memory_back() {
    let dir = tempfile::tempdir().unwrap();
    let handle = Daemon::start(DaemonConfig {
        home: Some(dir.path().join("home")),
        sock_path: Some(dir.path().join("s.sock")),
        ..Default::default()
    })
    .await
    .expect("daemon starts");
    let port = handle.port().expect("tcp on");
    let proto = format!("r1.bearer, {}", handle.token().expose());
    // The clients live in this process too: give them the smallest buffers
    // tungstenite allows so what grows is the server's side.
    let client_config = WebSocketConfig::default()
        .read_buffer_size(256)
        .write_buffer_size(0);
    let info = json!({"jsonrpc": "2.0", "id": 1, "method": "daemon.info"}).to_string();

    let open = || {
        let proto = proto.clone();
        let info = info.clone();
        async move {
            let mut req = format!("ws://127.0.0.1:{port}/v1/ws")
                .into_client_request()
                .unwrap();
            req.headers_mut()
                .insert("sec-websocket-protocol", proto.parse().unwrap());
            let tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
            let (mut ws, _) =
                tokio_tungstenite::client_async_with_config(req, tcp, Some(client_config))
                    .await
                    .expect("websocket connects");
            // One call each: the server's reader and writer have both run.
            ws.send(Message::text(info)).await.unwrap();
            let answer = loop {
                match ws.next().await {
                    Some(Ok(Message::Text(t))) => break t,
                    Some(Ok(_)) => {}
                    other => panic!("no answer: {other:?}"),
                }
            };
            let v: Value = serde_json::from_str(&answer).unwrap();
            assert!(v["result"]["pid"].is_u64(), "{v}");
            ws
        }
    };

    // Warm up the runtime, the allocator and the daemon's lazy state first.
    let mut warm = Vec::new();
    for _ in 0..20 {
        warm.push(open().await);
    }
    drop(warm);
    wait_for_no_connections(&handle).await;
    settle().await;

    let tasks = || {
        tokio::runtime::Handle::current()
            .metrics()
            .num_alive_tasks()
    };
    let before = rss_kb();
    let tasks_before = tasks();
    let mut sockets = Vec::with_capacity(SOCKETS);
    for _ in 0..SOCKETS {
        sockets.push(open().await);
    }
    settle().await;
    let loaded = rss_kb();
    let per_socket_kb = loaded.saturating_sub(before) as f64 / SOCKETS as f64;
    // One task per socket: a reader and a writer task each request woke both
    // (tokio-tungstenite wakes every waiter when the socket turns readable) and
    // cost a cross-thread hand-off per round trip.
    let tasks_per_socket = tasks().saturating_sub(tasks_before) as f64 / SOCKETS as f64;
    assert!(
        tasks_per_socket < 1.1,
        "{tasks_per_socket:.2} tasks per open websocket"
    );

    for mut ws in sockets.drain(..) {
        let _ = ws.close(None).await;
    }
    drop(sockets);
    wait_for_no_connections(&handle).await;
    // The daemon hands freed memory back shortly after a burst of closes.
    let t = Instant::now();
    let mut after = rss_kb();
    while after.saturating_sub(before) as f64 / SOCKETS as f64 >= KEPT_KB
        && t.elapsed() < Duration::from_secs(5)
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
        after = rss_kb();
    }
    let kept_kb = after.saturating_sub(before) as f64 / SOCKETS as f64;
    eprintln!(
        "{SOCKETS} websockets: rss {before} → {loaded} KiB ({per_socket_kb:.1} KiB each, \
         both ends); after they left {after} KiB ({kept_kb:.1} KiB each kept)"
    );

    // tungstenite's defaults (128 KiB read buffer, zero-filled on the first read)
    // would put this above 128 KiB. The server's share is ~10 KiB; the rest is this
    // process's client end.
    assert!(
        per_socket_kb < 32.0,
        "an open websocket costs {per_socket_kb:.1} KiB"
    );
    assert!(
        kept_kb < KEPT_KB,
        "closed websockets left {kept_kb:.1} KiB each behind"
    );
    handle.stop().await.unwrap();
}

async fn wait_for_no_connections(handle: &r1_core::DaemonHandle) {
    let t = Instant::now();
    while handle.state().connection_count() > 0 {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "{} connections still registered",
            handle.state().connection_count()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
