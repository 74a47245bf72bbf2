//! What a unix socket connection costs the daemon in tasks: one per connection,
//! which reads, runs the call and writes its answer (with a separate writer task,
//! two per connection and a queue hand-off per answer), and pipelined calls are
//! answered in order.
//!
//! Its own test binary, with a single test, so no other test's tasks are counted.

use std::time::{Duration, Instant};

use r1_core::{Daemon, DaemonConfig};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

const CONNECTIONS: usize = 100;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_task_per_unix_connection_and_answers_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("s.sock");
    let handle = Daemon::start(DaemonConfig {
        home: Some(dir.path().join("home")),
        sock_path: Some(sock.clone()),
        tcp: false,
        ..Default::default()
    })
    .await
    .expect("daemon starts");
    let tasks = || {
        tokio::runtime::Handle::current()
            .metrics()
            .num_alive_tasks()
    };
    let before = tasks();
    let mut conns = Vec::with_capacity(CONNECTIONS);
    for _ in 0..CONNECTIONS {
        let (rd, mut wr) = UnixStream::connect(&sock).await.unwrap().into_split();
        let mut rd = BufReader::new(rd);
        // Three pipelined calls in one write: answered one by one, in order.
        let calls: String = (1..=3)
            .map(|id| format!("{{\"jsonrpc\":\"2.0\",\"id\":{id},\"method\":\"daemon.info\"}}\n"))
            .collect();
        wr.write_all(calls.as_bytes()).await.unwrap();
        for id in 1..=3 {
            let mut line = String::new();
            rd.read_line(&mut line).await.unwrap();
            let v: Value = serde_json::from_str(&line).unwrap();
            assert_eq!(v["id"], id, "{v}");
            assert!(v["result"]["pid"].is_u64(), "{v}");
        }
        conns.push((rd, wr));
    }
    let t = Instant::now();
    while handle.state().connection_count() < CONNECTIONS {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "connections register"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let per_connection = tasks().saturating_sub(before) as f64 / CONNECTIONS as f64;
    assert!(
        per_connection < 1.1,
        "{per_connection:.2} tasks per open unix connection"
    );
    drop(conns);
    let t = Instant::now();
    while handle.state().connection_count() > 0 {
        assert!(t.elapsed() < Duration::from_secs(10), "connections leave");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    handle.stop().await.unwrap();
}
