//! The daemon end to end over its unix socket (DESIGN §3, §6, §7).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use r1_core::{Daemon, DaemonConfig, DaemonHandle};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};

/// A raw NDJSON JSON-RPC connection: what a minimal client in any language does.
struct Rpc {
    rd: tokio::io::Lines<BufReader<OwnedReadHalf>>,
    wr: OwnedWriteHalf,
    next_id: u64,
    /// Notifications received while waiting for responses.
    notes: Vec<Value>,
}

impl Rpc {
    async fn connect(sock: &Path) -> Rpc {
        let s = UnixStream::connect(sock).await.expect("connect");
        let (r, w) = s.into_split();
        Rpc {
            rd: BufReader::new(r).lines(),
            wr: w,
            next_id: 1,
            notes: Vec::new(),
        }
    }

    async fn send_raw(&mut self, line: &str) {
        self.wr.write_all(line.as_bytes()).await.unwrap();
        self.wr.write_all(b"\n").await.unwrap();
    }

    async fn recv(&mut self) -> Value {
        let line = tokio::time::timeout(Duration::from_secs(10), self.rd.next_line())
            .await
            .expect("timely answer")
            .unwrap()
            .expect("open");
        serde_json::from_str(&line).unwrap()
    }

    /// Sends a request and returns the whole response object.
    async fn request(&mut self, method: &str, params: Value) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        self.send_raw(
            &json!({"jsonrpc":"2.0","id":id,"method":method,"params":params}).to_string(),
        )
        .await;
        loop {
            let v = self.recv().await;
            if v.get("id") == Some(&json!(id)) {
                return v;
            }
            self.notes.push(v);
        }
    }

    async fn call(&mut self, method: &str, params: Value) -> Value {
        let v = self.request(method, params).await;
        match v.get("result") {
            Some(r) => r.clone(),
            None => panic!("{method} failed: {v}"),
        }
    }

    async fn error(&mut self, method: &str, params: Value) -> Value {
        let v = self.request(method, params).await;
        v.get("error")
            .cloned()
            .unwrap_or_else(|| panic!("{method} should fail: {v}"))
    }

    /// Next `$/event` (from the buffer first).
    async fn event(&mut self) -> Value {
        if let Some(i) = self.notes.iter().position(|n| n["method"] == "$/event") {
            return self.notes.remove(i)["params"].clone();
        }
        loop {
            let v = self.recv().await;
            if v["method"] == "$/event" {
                return v["params"].clone();
            }
            self.notes.push(v);
        }
    }

    /// Events until one matches `pred` (inclusive).
    async fn events_until(&mut self, pred: impl Fn(&Value) -> bool) -> Vec<Value> {
        let mut out = Vec::new();
        loop {
            let e = self.event().await;
            let stop = pred(&e);
            out.push(e);
            if stop {
                return out;
            }
        }
    }
}

struct TestDaemon {
    _dir: tempfile::TempDir,
    home: PathBuf,
    work: PathBuf,
    handle: DaemonHandle,
}

impl TestDaemon {
    async fn start() -> TestDaemon {
        Self::start_with(|c| c).await
    }

    async fn start_with(f: impl FnOnce(DaemonConfig) -> DaemonConfig) -> TestDaemon {
        let dir = tempfile::tempdir().unwrap();
        let home = dir.path().join("home");
        let work = dir.path().join("work");
        std::fs::create_dir_all(&work).unwrap();
        let cfg = f(DaemonConfig {
            home: Some(home.clone()),
            sock_path: Some(dir.path().join("s.sock")),
            ..Default::default()
        });
        let handle = Daemon::start(cfg).await.expect("daemon starts");
        TestDaemon {
            _dir: dir,
            home,
            work,
            handle,
        }
    }

    async fn rpc(&self) -> Rpc {
        Rpc::connect(self.handle.sock_path().unwrap()).await
    }
}

fn deltas(events: &[Value]) -> String {
    events
        .iter()
        .filter(|e| e["kind"] == "session.delta")
        .map(|e| e["data"]["text"].as_str().unwrap_or("").to_owned())
        .collect()
}

#[tokio::test]
async fn shell_session_round_trip() {
    let d = TestDaemon::start().await;
    let mut c = d.rpc().await;
    let hello = c.call("daemon.hello", json!({"protocol_version": 1})).await;
    assert_eq!(hello["instance_id"], json!(d.handle.instance_id()));
    let started = c.call("session.start", json!({"workdir": d.work})).await;
    let id = started["session_id"].as_str().unwrap().to_owned();
    assert_eq!(started["state"], "running");
    let sub = c
        .call(
            "session.subscribe",
            json!({"session_id": id, "since_seq": 0}),
        )
        .await;
    assert!(sub["sub"].as_u64().is_some());
    let sent = c
        .call(
            "session.send",
            json!({"session_id": id, "text": "echo hello-r1"}),
        )
        .await;
    assert_eq!(sent["accepted"], true);
    let evs = c.events_until(|e| e["kind"] == "tool.end").await;
    assert_eq!(evs[0]["seq"], 1);
    assert_eq!(evs[0]["kind"], "session.created");
    for w in evs.windows(2) {
        assert_eq!(
            w[1]["seq"].as_u64().unwrap(),
            w[0]["seq"].as_u64().unwrap() + 1,
            "contiguous"
        );
    }
    assert_eq!(deltas(&evs), "hello-r1\n", "{evs:#?}");
    assert_eq!(evs.last().unwrap()["data"]["exit_code"], 0);
    let got = c.call("session.get", json!({"session_id": id})).await;
    assert!(got["record_count"].as_u64().unwrap() >= 5);
    d.handle.stop().await.unwrap();
}
