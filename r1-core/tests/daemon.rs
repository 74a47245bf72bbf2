//! The daemon end to end over its unix socket (DESIGN §3, §6, §7).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use r1_core::{Daemon, DaemonConfig, DaemonHandle};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};

mod support;
use support::rss_kb;

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

/// A custom driver registered from Rust: input `burst N` emits N `test.tick` records
/// as fast as it can; `tool.end` closes each lane.
struct BurstFactory;

impl r1_core::driver::DriverFactory for BurstFactory {
    fn create(
        &self,
        _spec: &r1_core::driver::DriverSpec,
    ) -> r1_core::Result<Box<dyn r1_core::driver::SessionDriver>> {
        Ok(Box::new(BurstDriver))
    }
}

struct BurstDriver;

impl r1_core::driver::SessionDriver for BurstDriver {
    fn run(
        self: Box<Self>,
        mut ctx: r1_core::driver::DriverContext,
    ) -> r1_core::driver::BoxFuture<'static, r1_core::Result<r1_core::driver::DriverExit>> {
        use r1_core::driver::{Control, DriverExit};
        Box::pin(async move {
            loop {
                tokio::select! {
                    input = ctx.inbox.recv() => {
                        let Some(input) = input else { return Ok(DriverExit::Stopped) };
                        let n: u64 = input.text.strip_prefix("burst ").and_then(|n| n.parse().ok()).unwrap_or(0);
                        for i in 0..n {
                            ctx.emitter.emit("test.tick", json!({"i": i, "pad": "x".repeat(100)})).await?;
                        }
                        ctx.emitter.emit("tool.end", json!({"lane_id": input.seq, "ok": true, "exit_code": 0, "duration_ms": 0})).await?;
                        if input.text == "finish" {
                            return Ok(DriverExit::Finished { ok: true, exit_code: Some(0), message: None });
                        }
                    }
                    changed = ctx.control.changed() => {
                        if changed.is_err() { return Ok(DriverExit::Stopped) }
                        let c = *ctx.control.borrow();
                        match c {
                            Control::Cancel => return Ok(DriverExit::Cancelled),
                            Control::Stop => return Ok(DriverExit::Stopped),
                            _ => {}
                        }
                    }
                }
            }
        })
    }
}

async fn burst_daemon() -> TestDaemon {
    TestDaemon::start_with(|c| c.with_driver("burst", std::sync::Arc::new(BurstFactory))).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_sessions_each_see_their_own_pwd() {
    let d = TestDaemon::start().await;
    let mut c = d.rpc().await;
    let mut ids = Vec::new();
    for i in 0..8 {
        let dir = d.work.join(format!("dir-{i}"));
        std::fs::create_dir(&dir).unwrap();
        let r = c.call("session.start", json!({"workdir": dir})).await;
        ids.push((
            r["session_id"].as_str().unwrap().to_owned(),
            std::fs::canonicalize(&dir).unwrap(),
        ));
    }
    for (id, _) in &ids {
        c.call(
            "session.send",
            json!({"session_id": id, "text": "echo $PWD; pwd"}),
        )
        .await;
    }
    for (id, dir) in &ids {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let r = c.call("journal.read", json!({"session_id": id})).await;
            let recs = r["records"].as_array().unwrap().clone();
            if recs.iter().any(|r| r["kind"] == "tool.end") {
                let out = deltas(&recs);
                let want = format!("{}\n{}\n", dir.display(), dir.display());
                assert_eq!(out, want, "session {id}");
                break;
            }
            assert!(Instant::now() < deadline, "session {id} did not finish");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    d.handle.stop().await.unwrap();
}

#[tokio::test]
async fn exec_agent_custom_events_in_order() {
    let d = TestDaemon::start().await;
    let agent = d.work.join("agent.py");
    std::fs::write(
        &agent,
        "import sys, json\nfor line in sys.stdin:\n    m = json.loads(line)\n    if m['text'] == 'quit':\n        break\n    print(json.dumps({'kind': 'agent.echo', 'data': {'text': m['text'], 'seq': m['seq']}}), flush=True)\n",
    )
    .unwrap();
    let mut c = d.rpc().await;
    let r = c
        .call(
            "session.start",
            json!({"workdir": d.work, "driver": "exec", "command": ["python3", agent]}),
        )
        .await;
    let id = r["session_id"].as_str().unwrap().to_owned();
    c.call(
        "session.subscribe",
        json!({"session_id": id, "since_seq": 0}),
    )
    .await;
    let mut seqs = Vec::new();
    for t in ["one", "two", "three"] {
        let s = c
            .call("session.send", json!({"session_id": id, "text": t}))
            .await;
        seqs.push(s["seq"].as_u64().unwrap());
    }
    c.call("session.send", json!({"session_id": id, "text": "quit"}))
        .await;
    let evs = c.events_until(|e| e["kind"] == "session.ended").await;
    let echoes: Vec<(String, u64)> = evs
        .iter()
        .filter(|e| e["kind"] == "agent.echo")
        .map(|e| {
            (
                e["data"]["text"].as_str().unwrap().to_owned(),
                e["data"]["seq"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        echoes,
        vec![
            ("one".into(), seqs[0]),
            ("two".into(), seqs[1]),
            ("three".into(), seqs[2])
        ]
    );
    assert_eq!(evs.last().unwrap()["data"]["reason"], "ok");
    let got = c.call("session.get", json!({"session_id": id})).await;
    assert_eq!(got["state"], "ended");
    d.handle.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_after_random_disconnects_sees_every_record_once() {
    let d = burst_daemon().await;
    let mut c = d.rpc().await;
    let r = c
        .call(
            "session.start",
            json!({"workdir": d.work, "driver": "burst"}),
        )
        .await;
    let id = r["session_id"].as_str().unwrap().to_owned();
    c.call(
        "session.send",
        json!({"session_id": id, "text": "burst 10000"}),
    )
    .await;
    // Total records: created(1) + input(2) + 10,000 ticks + tool.end.
    let total = 10_003u64;
    let mut seen: Vec<u64> = Vec::new();
    let mut last = 0u64;
    let mut rng_state = 0x2545_f491_4f6c_dd1du64;
    while last < total {
        rng_state ^= rng_state << 13;
        rng_state ^= rng_state >> 7;
        rng_state ^= rng_state << 17;
        let take = 1 + rng_state % 1500;
        let mut sub = d.rpc().await;
        let r = sub
            .call(
                "session.subscribe",
                json!({"session_id": id, "since_seq": last}),
            )
            .await;
        assert!(r["current_seq"].as_u64().is_some());
        for _ in 0..take {
            let e = sub.event().await;
            let s = e["seq"].as_u64().unwrap();
            seen.push(s);
            last = s;
            if last == total {
                break;
            }
        }
        drop(sub); // disconnect mid-stream
    }
    let want: Vec<u64> = (1..=total).collect();
    assert_eq!(seen, want, "every seq exactly once, in order");
    d.handle.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_subscriber_never_blocks_the_session() {
    let d = burst_daemon().await;
    let mut c = d.rpc().await;
    let r = c
        .call(
            "session.start",
            json!({"workdir": d.work, "driver": "burst"}),
        )
        .await;
    let id = r["session_id"].as_str().unwrap().to_owned();
    // A subscriber that subscribes and then stops reading its socket.
    let mut stalled = d.rpc().await;
    stalled
        .call(
            "session.subscribe",
            json!({"session_id": id, "since_seq": 0}),
        )
        .await;
    let rss_before = rss_kb();
    let t0 = Instant::now();
    c.call(
        "session.send",
        json!({"session_id": id, "text": "burst 100000"}),
    )
    .await;
    let total = 100_003u64;
    loop {
        let g = c.call("session.get", json!({"session_id": id})).await;
        if g["last_seq"].as_u64().unwrap() >= total {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "the session must not wait for its stalled subscriber"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let took = t0.elapsed();
    let grown_kb = rss_kb().saturating_sub(rss_before);
    // 100,000 records of ~200 bytes are ~20 MB; buffering them all per subscriber
    // would show. The bound is the broadcast ring + one socket buffer.
    assert!(
        grown_kb < 16 * 1024,
        "memory grew by {grown_kb} KiB while a subscriber stalled"
    );
    eprintln!("100k records with a stalled subscriber: {took:?}, rss +{grown_kb} KiB");
    // Now the subscriber reads: it gets everything, in order, once.
    let mut expect = 1u64;
    while expect <= total {
        let e = stalled.event().await;
        assert_eq!(e["seq"].as_u64().unwrap(), expect);
        expect += 1;
    }
    d.handle.stop().await.unwrap();
}

#[tokio::test]
async fn jsonrpc_conformance() {
    let d = TestDaemon::start().await;
    let mut c = d.rpc().await;
    let cases: &[(&str, Option<Value>)] = &[
        // Parse error: id null.
        (
            r#"{"jsonrpc": "2.0", "method": "foobar, "params": "bar", "baz]"#,
            Some(json!({"jsonrpc":"2.0","error":{"code":-32700},"id":null})),
        ),
        // Invalid request object.
        (
            r#"{"jsonrpc": "2.0", "method": 1, "params": "bar"}"#,
            Some(json!({"jsonrpc":"2.0","error":{"code":-32600},"id":null})),
        ),
        // Empty array.
        (
            "[]",
            Some(json!({"jsonrpc":"2.0","error":{"code":-32600},"id":null})),
        ),
        // Unknown method: id echoed (a string).
        (
            r#"{"jsonrpc":"2.0","method":"nope","id":"abc"}"#,
            Some(json!({"jsonrpc":"2.0","error":{"code":-32601},"id":"abc"})),
        ),
        // Invalid params.
        (
            r#"{"jsonrpc":"2.0","method":"session.get","params":{"session_id":5},"id":7}"#,
            Some(json!({"jsonrpc":"2.0","error":{"code":-32602},"id":7})),
        ),
        (
            r#"{"jsonrpc":"2.0","method":"session.get","params":[1],"id":8}"#,
            Some(json!({"jsonrpc":"2.0","error":{"code":-32602},"id":8})),
        ),
        // Wrong jsonrpc version.
        (
            r#"{"jsonrpc":"1.0","method":"daemon.info","id":9}"#,
            Some(json!({"jsonrpc":"2.0","error":{"code":-32600},"id":9})),
        ),
        // r1 error codes with data.kind.
        (
            r#"{"jsonrpc":"2.0","method":"session.get","params":{"session_id":"sess_00000000-0000-4000-8000-000000000000"},"id":10}"#,
            Some(
                json!({"jsonrpc":"2.0","error":{"code":-32001,"data":{"kind":"not_found"}},"id":10}),
            ),
        ),
        (
            r#"{"jsonrpc":"2.0","method":"daemon.hello","params":{"protocol_version":99},"id":11}"#,
            Some(json!({"jsonrpc":"2.0","error":{"code":-32007},"id":11})),
        ),
    ];
    for (input, want) in cases {
        c.send_raw(input).await;
        let got = c.recv().await;
        let want = want.as_ref().unwrap();
        assert_eq!(got["jsonrpc"], "2.0", "{input}");
        assert_eq!(got["id"], want["id"], "{input} → {got}");
        assert_eq!(
            got["error"]["code"], want["error"]["code"],
            "{input} → {got}"
        );
        if let Some(kind) = want["error"]["data"].get("kind") {
            assert_eq!(&got["error"]["data"]["kind"], kind);
        }
        assert!(got.get("result").is_none());
    }
    // A notification is never answered; the next request is.
    c.send_raw(r#"{"jsonrpc":"2.0","method":"daemon.info"}"#)
        .await;
    c.send_raw(r#"{"jsonrpc":"2.0","method":"daemon.info","id":"after"}"#)
        .await;
    let got = c.recv().await;
    assert_eq!(got["id"], "after");
    // Mixed batch: answers element by element, none for notifications.
    c.send_raw(
        r#"[{"jsonrpc":"2.0","method":"daemon.info","id":"1"},{"jsonrpc":"2.0","method":"notify_hello","params":[7]},{"jsonrpc":"2.0","method":"nope","id":"2"},{"foo":"boo"},1]"#,
    )
    .await;
    let got = c.recv().await;
    let arr = got.as_array().expect("batch answer");
    assert_eq!(arr.len(), 4);
    assert_eq!(arr[0]["id"], "1");
    assert!(arr[0]["result"]["pid"].is_number());
    assert_eq!(arr[1]["error"]["code"], -32601);
    assert_eq!(arr[2]["error"]["code"], -32600);
    assert_eq!(arr[2]["id"], Value::Null);
    assert_eq!(arr[3]["error"]["code"], -32600);
    // All-notification batch: nothing comes back.
    c.send_raw(
        r#"[{"jsonrpc":"2.0","method":"daemon.info"},{"jsonrpc":"2.0","method":"daemon.info"}]"#,
    )
    .await;
    c.send_raw(r#"{"jsonrpc":"2.0","method":"daemon.info","id":"last"}"#)
        .await;
    assert_eq!(c.recv().await["id"], "last");
    // Batch over the limit.
    let big: Vec<Value> = (0..1001)
        .map(|i| json!({"jsonrpc":"2.0","method":"daemon.info","id":i}))
        .collect();
    c.send_raw(&Value::Array(big).to_string()).await;
    let got = c.recv().await;
    assert_eq!(got["error"]["code"], -32005);
    // rpc.discover lists every method the daemon dispatches.
    let doc = c.call("rpc.discover", json!({})).await;
    let names: Vec<&str> = doc["methods"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap())
        .collect();
    for m in [
        "daemon.hello",
        "daemon.info",
        "daemon.shutdown",
        "daemon.subscribe",
        "daemon.rotate_token",
        "daemon.mint_token",
        "rpc.discover",
        "session.start",
        "session.list",
        "session.get",
        "session.send",
        "session.pause",
        "session.resume",
        "session.cancel",
        "session.delete",
        "session.subscribe",
        "session.unsubscribe",
        "journal.read",
    ] {
        assert!(names.contains(&m), "{m} missing from rpc.discover");
    }
    d.handle.stop().await.unwrap();
}

#[tokio::test]
async fn graceful_shutdown_leaves_nothing_behind() {
    let d = TestDaemon::start().await;
    let mut c = d.rpc().await;
    let r = c.call("session.start", json!({"workdir": d.work})).await;
    let id = r["session_id"].as_str().unwrap().to_owned();
    c.call("session.subscribe", json!({"session_id": id})).await;
    c.call(
        "session.send",
        json!({"session_id": id, "text": "sleep 30"}),
    )
    .await;
    // Wait for the command to be running.
    c.events_until(|e| e["kind"] == "tool.start").await;
    let accepted = c.call("daemon.shutdown", json!({"grace_s": 2})).await;
    assert_eq!(accepted["accepted"], true);
    // Every connection hears daemon.stopping before the socket closes.
    let stopping = loop {
        let v = c.recv().await;
        if v["method"] == "$/daemon" {
            break v;
        }
    };
    assert_eq!(stopping["params"]["kind"], "daemon.stopping");
    d.handle.wait().await.unwrap();
    let home = r1_core::paths::Home::at(&d.home).unwrap();
    assert!(!home.discovery_path().exists(), "discovery removed");
    assert!(!d.handle.sock_path().unwrap().exists(), "socket removed");
    let lock = r1_core::lock::FileLock::try_acquire(&home.lock_path()).unwrap();
    assert!(lock.is_some(), "lock released");
    let jp = home.journal_path(&id);
    let mut reader = r1_core::journal::Reader::open(&jp).unwrap();
    let report = reader.verify().unwrap();
    assert!(report.damage.is_none());
    let mut reader = r1_core::journal::Reader::open(&jp).unwrap();
    let mut recs = Vec::new();
    while let Some(r) = reader.next_record().unwrap() {
        recs.push(r.to_record().unwrap());
    }
    let last = recs.last().unwrap();
    assert_eq!(last.kind, "session.paused");
    assert_eq!(last.data["by"], "shutdown");
    let interrupted = recs.iter().find(|r| r.kind == "tool.end").unwrap();
    assert_eq!(interrupted.data["interrupted"], true);
    assert!(
        home.session_dir(&id).join("clean").exists(),
        "clean marker written"
    );
}

#[tokio::test]
async fn restart_reattaches_and_resume_restarts_the_driver() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let work = dir.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    let sock = dir.path().join("s.sock");
    let cfg = || DaemonConfig {
        home: Some(home.clone()),
        sock_path: Some(sock.clone()),
        ..Default::default()
    };
    let d1 = Daemon::start(cfg()).await.unwrap();
    let mut c = Rpc::connect(&sock).await;
    let r = c.call("session.start", json!({"workdir": work})).await;
    let id = r["session_id"].as_str().unwrap().to_owned();
    let ended = c.call("session.start", json!({"workdir": work})).await["session_id"]
        .as_str()
        .unwrap()
        .to_owned();
    c.call("session.cancel", json!({"session_id": ended})).await;
    d1.stop().await.unwrap();

    let d2 = Daemon::start(cfg()).await.unwrap();
    let mut c = Rpc::connect(&sock).await;
    // The first thing a new connection hears is daemon.reloaded.
    let first = c.recv().await;
    assert_eq!(first["method"], "$/daemon");
    assert_eq!(first["params"]["kind"], "daemon.reloaded");
    assert_eq!(first["params"]["data"]["sessions"], 1);
    let g = c.call("session.get", json!({"session_id": id})).await;
    assert_eq!(g["state"], "paused-reattachable");
    assert!(g["reload"].is_object());
    assert_eq!(
        c.call("session.get", json!({"session_id": ended})).await["state"],
        "ended"
    );
    let err = c
        .error("session.send", json!({"session_id": id, "text": "echo no"}))
        .await;
    assert_eq!(err["code"], -32003);
    c.call("session.resume", json!({"session_id": id})).await;
    c.call("session.subscribe", json!({"session_id": id})).await;
    c.call(
        "session.send",
        json!({"session_id": id, "text": "echo back"}),
    )
    .await;
    let evs = c.events_until(|e| e["kind"] == "tool.end").await;
    assert_eq!(deltas(&evs), "back\n");
    d2.stop().await.unwrap();
}

#[tokio::test]
async fn workdir_rules_and_hostile_ids() {
    let d = TestDaemon::start_with(|c| DaemonConfig {
        single_session: true,
        ..c
    })
    .await;
    let mut c = d.rpc().await;
    // A symlink into R1_HOME is refused after canonicalisation.
    let link = d.work.join("sneaky");
    std::os::unix::fs::symlink(&d.home, &link).unwrap();
    for bad in [
        json!(link),
        json!("relative/dir"),
        json!(d.work.join("missing")),
        json!("/etc/passwd"),
        json!(d.home.join("sessions")),
    ] {
        let e = c.error("session.start", json!({"workdir": bad})).await;
        assert_eq!(e["code"], -32602, "{bad}: {e}");
    }
    for bad in ["../../etc", "sess_../../x", "sess_\u{0}", ""] {
        let e = c.error("session.get", json!({"session_id": bad})).await;
        assert_eq!(e["code"], -32602, "{bad:?}: {e}");
    }
    let e = c
        .error(
            "session.start",
            json!({"workdir": d.work, "driver": "nope"}),
        )
        .await;
    assert_eq!(e["code"], -32602);
    c.call("session.start", json!({"workdir": d.work})).await;
    let e = c.error("session.start", json!({"workdir": d.work})).await;
    assert_eq!(e["code"], -32002, "single-session conflict: {e}");
    d.handle.stop().await.unwrap();
}

#[tokio::test]
async fn stale_epoch_gets_reset_and_delivery_from_last_good_seq() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let work = dir.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    let sock = dir.path().join("s.sock");
    let cfg = || DaemonConfig {
        home: Some(home.clone()),
        sock_path: Some(sock.clone()),
        ..Default::default()
    };
    let d1 = Daemon::start(cfg()).await.unwrap();
    let mut c = Rpc::connect(&sock).await;
    let started = c.call("session.start", json!({"workdir": work})).await;
    let id = started["session_id"].as_str().unwrap().to_owned();
    let old_epoch = started["epoch"].as_str().unwrap().to_owned();
    c.call(
        "session.subscribe",
        json!({"session_id": id, "since_seq": 0}),
    )
    .await;
    c.call(
        "session.send",
        json!({"session_id": id, "text": "echo one"}),
    )
    .await;
    let seen = c.events_until(|e| e["kind"] == "tool.end").await;
    let client_last = seen.last().unwrap()["seq"].as_u64().unwrap();
    d1.stop().await.unwrap();
    // Simulate a crash that tore the tail: drop the clean marker, cut the last
    // record (session.paused) in half.
    let h = r1_core::paths::Home::at(&home).unwrap();
    std::fs::remove_file(h.session_dir(&id).join("clean")).unwrap();
    let jp = h.journal_path(&id);
    let bytes = std::fs::read(&jp).unwrap();
    let text = String::from_utf8(bytes.clone()).unwrap();
    let last_line_start = text.trim_end().rfind('\n').unwrap() + 1;
    let keep = last_line_start + (text.len() - last_line_start) / 2;
    std::fs::write(&jp, &bytes[..keep]).unwrap();
    // The client also holds a seq beyond what will survive: pretend it saw the cut record.
    let client_seq = client_last + 1;

    let d2 = Daemon::start(cfg()).await.unwrap();
    let mut c = Rpc::connect(&sock).await;
    let g = c.call("session.get", json!({"session_id": id})).await;
    let new_epoch = g["epoch"].as_str().unwrap().to_owned();
    assert_ne!(new_epoch, old_epoch, "a repair starts a new epoch");
    assert_eq!(g["reload"]["repaired"]["last_good_seq"], json!(client_last));
    let r = c
        .call(
            "session.subscribe",
            json!({"session_id": id, "since_seq": client_seq, "epoch": old_epoch}),
        )
        .await;
    assert_eq!(r["epoch"], json!(new_epoch));
    assert_eq!(r["reset"]["epoch"], json!(new_epoch));
    assert_eq!(r["reset"]["last_good_seq"], json!(client_last));
    // Delivery restarts right after the last good seq: the records that reuse the
    // cut numbers (journal.repaired, session.reattached) arrive, once each.
    let e = c.event().await;
    assert_eq!(e["seq"], json!(client_last + 1));
    assert_eq!(e["kind"], "journal.repaired");
    assert_eq!(e["epoch"], json!(new_epoch));
    // The current epoch gets no reset.
    let mut c2 = Rpc::connect(&sock).await;
    let r = c2
        .call(
            "session.subscribe",
            json!({"session_id": id, "since_seq": 0, "epoch": new_epoch}),
        )
        .await;
    assert!(r.get("reset").is_none());
    let page = c2
        .call(
            "journal.read",
            json!({"session_id": id, "since_seq": client_seq, "epoch": old_epoch}),
        )
        .await;
    assert_eq!(page["reset"]["last_good_seq"], json!(client_last));
    assert_eq!(page["records"][0]["seq"], json!(client_last + 1));
    d2.stop().await.unwrap();
}

#[tokio::test]
async fn bus_subscription_delete_tombstone_and_single_transport() {
    let d = TestDaemon::start_with(|c| DaemonConfig { tcp: false, ..c }).await;
    assert!(d.handle.port().is_none());
    let disc: Value =
        serde_json::from_str(&std::fs::read_to_string(d.home.join("daemon.json")).unwrap())
            .unwrap();
    assert_eq!(disc["port"], Value::Null);
    assert_eq!(disc["host"], Value::Null);
    let mut c = d.rpc().await;
    let sub = c.call("daemon.subscribe", json!({"since_seq": 0})).await;
    assert!(sub["current_seq"].as_u64().unwrap() >= 2);
    let started = c.call("session.start", json!({"workdir": d.work})).await;
    let id = started["session_id"].as_str().unwrap().to_owned();
    let evs = c.events_until(|e| e["kind"] == "session.created").await;
    assert_eq!(evs[0]["kind"], "bus.created");
    assert_eq!(evs[1]["kind"], "daemon.started");
    assert_eq!(evs.last().unwrap()["data"]["session_id"], json!(id));
    let del = c.call("session.delete", json!({"session_id": id})).await;
    assert!(del["deleted_at"].is_string());
    let evs = c.events_until(|e| e["kind"] == "session.deleted").await;
    assert!(evs.iter().any(|e| e["kind"] == "session.ended"));
    let e = c.error("session.get", json!({"session_id": id})).await;
    assert_eq!(e["code"], -32001);
    let home = r1_core::paths::Home::at(&d.home).unwrap();
    assert!(!home.session_dir(&id).exists(), "journal directory removed");
    let index: Value =
        serde_json::from_str(&std::fs::read_to_string(home.index_path()).unwrap()).unwrap();
    let entry = index["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == json!(id))
        .expect("tombstone kept");
    assert!(entry["deleted_at"].is_string());
    // Unsubscribe: no more bus events after it.
    let r = c
        .call("session.unsubscribe", json!({"sub": sub["sub"]}))
        .await;
    assert_eq!(r, json!({}));
    let e = c
        .error("session.unsubscribe", json!({"sub": sub["sub"]}))
        .await;
    assert_eq!(e["code"], -32001);
    d.handle.stop().await.unwrap();

    // Unix off: loopback only.
    let d = TestDaemon::start_with(|c| DaemonConfig { unix: false, ..c }).await;
    assert!(d.handle.sock_path().is_none());
    assert!(d.handle.port().is_some());
    d.handle.stop().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let err = Daemon::start(DaemonConfig {
        home: Some(dir.path().join("h")),
        unix: false,
        tcp: false,
        ..Default::default()
    })
    .await
    .unwrap_err();
    assert_eq!(err.kind(), r1_core::ErrorKind::InvalidParams);
}

#[tokio::test]
async fn idle_exit_shuts_down_when_nothing_happens() {
    let d = TestDaemon::start_with(|c| DaemonConfig {
        idle_exit: Some(Duration::from_millis(300)),
        ..c
    })
    .await;
    // A connected client keeps it alive.
    let mut c = d.rpc().await;
    c.call("daemon.info", json!({})).await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    c.call("daemon.info", json!({})).await;
    drop(c);
    tokio::time::timeout(Duration::from_secs(5), d.handle.wait())
        .await
        .expect("idle daemon exits")
        .unwrap();
    assert!(!d.home.join("daemon.json").exists());
}

#[tokio::test]
async fn scoped_tokens_and_privileged_methods() {
    let d = TestDaemon::start().await;
    let mut c = d.rpc().await;
    let id = c.call("session.start", json!({"workdir": d.work})).await["session_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let m = c
        .call(
            "daemon.mint_token",
            json!({"scope": format!("session:{id}"), "ttl_s": 60}),
        )
        .await;
    assert_eq!(m["token"].as_str().unwrap().len(), 64);
    assert!(m["expires_at"].is_string());
    for bad in [
        json!({"scope": "write"}),
        json!({"scope": "read", "ttl_s": 0}),
        json!({"scope": "session:../x"}),
    ] {
        let e = c.error("daemon.mint_token", bad.clone()).await;
        assert_eq!(e["code"], -32602, "{bad}");
    }
    let r = c.call("daemon.rotate_token", json!({})).await;
    assert!(r["rotated_at"].is_string());
    let disc: Value =
        serde_json::from_str(&std::fs::read_to_string(d.home.join("daemon.json")).unwrap())
            .unwrap();
    assert_eq!(disc["token"].as_str().unwrap(), d.handle.token().expose());
    d.handle.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_subscribers_get_each_burst_exactly_once() {
    let d = burst_daemon().await;
    let mut c = d.rpc().await;
    let id = c
        .call(
            "session.start",
            json!({"workdir": d.work, "driver": "burst"}),
        )
        .await["session_id"]
        .as_str()
        .unwrap()
        .to_owned();
    for round in 0..6 {
        let mut subs = Vec::new();
        for _ in 0..3 {
            let mut s = d.rpc().await;
            let r = s.call("session.subscribe", json!({"session_id": id})).await;
            subs.push((s, r["current_seq"].as_u64().unwrap()));
        }
        c.call(
            "session.send",
            json!({"session_id": id, "text": "burst 2000"}),
        )
        .await;
        for (s, current) in subs.iter_mut() {
            let evs = s.events_until(|e| e["kind"] == "tool.end").await;
            let seqs: Vec<u64> = evs.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
            let want: Vec<u64> = (*current + 1..=*current + 2002).collect();
            assert_eq!(
                seqs, want,
                "round {round}: live delivery is exactly the new records"
            );
        }
    }
    d.handle.stop().await.unwrap();
}
