//! Disk full (DESIGN §5: "a write that fails (ENOSPC, EIO) truncates back to the last
//! good offset, pauses the session with the error, and the daemon keeps serving
//! everyone else").
//!
//! The home lives on a 2 MiB tmpfs (root only: mounted here, unmounted by a guard);
//! the socket and workdirs do not. A filler file takes every free byte. Then:
//! `session.send` fails with -32008 naming the lack of space, the session is `paused`
//! with that error in `session.get`; a session whose running command's output cannot
//! be journaled is paused too (not ended); `daemon.info`, `session.list` and
//! `journal.read` keep working. Once the filler is gone, every journal verifies, and
//! `session.resume` + `session.send` work with seqs contiguous.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::common::system::{Tmpfs, fill_disk, is_root, skip};
use crate::common::{CallError, DaemonProc, Rpc, ServeOpts, assert_journal_sound};

const JSONRPC_IO: i64 = -32008;

fn journal_path(home: &Path, id: &str) -> PathBuf {
    home.join("sessions").join(id).join("journal.ndjson")
}

async fn wait_done(c: &mut Rpc, id: &str, seq: u64) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let recs = c.read_all(id).await;
        if recs
            .iter()
            .any(|r| r["kind"] == "tool.end" && r["data"]["lane_id"] == json!(seq))
        {
            return recs;
        }
        assert!(
            Instant::now() < deadline,
            "input {seq} of {id} never finished"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn wait_state(c: &mut Rpc, id: &str, state: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let got = c.call("session.get", json!({"session_id": id})).await;
        if got["state"] == state {
            return got;
        }
        assert!(
            Instant::now() < deadline,
            "session {id} never became {state}: {got:#}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn session_dirs(home: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(home.join("sessions"))
        .expect("sessions dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

fn output_of(recs: &[Value], lane: u64) -> String {
    recs.iter()
        .filter(|r| r["kind"] == "session.delta" && r["data"]["lane_id"] == json!(lane))
        .map(|r| r["data"]["text"].as_str().unwrap_or_default().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disk_full_pauses_the_session_and_the_daemon_keeps_serving() {
    const TEST: &str = "disk_full_pauses_the_session_and_the_daemon_keeps_serving";
    if !is_root() {
        skip(TEST, "needs root to mount a small tmpfs for the home");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let fs = match Tmpfs::mount(&dir.path().join("mnt"), "2m") {
        Ok(m) => m,
        Err(e) => {
            skip(TEST, &format!("cannot mount a tmpfs: {e}"));
            return;
        }
    };
    let mut opts = ServeOpts::in_dir(dir.path());
    opts.home = fs.path.join("home");
    let mut daemon = DaemonProc::start(&opts);
    let mut c = Rpc::connect(&daemon.sock).await;
    let mut ids = Vec::new();
    for k in 0..3 {
        let work = dir.path().join(format!("w{k}"));
        std::fs::create_dir_all(&work).expect("workdir");
        let r = c.call("session.start", json!({"workdir": work})).await;
        ids.push(r["session_id"].as_str().expect("id").to_owned());
    }
    let (a, b, idle) = (ids[0].clone(), ids[1].clone(), ids[2].clone());
    let r = c
        .call(
            "session.send",
            json!({"session_id": a, "text": "echo before"}),
        )
        .await;
    wait_done(&mut c, &a, r["seq"].as_u64().expect("seq")).await;
    // B prints until stopped: its output is what first meets the full disk.
    let r = c
        .call(
            "session.send",
            json!({"session_id": b, "text": "while :; do echo tick; sleep 0.01; done"}),
        )
        .await;
    let b_lane = r["seq"].as_u64().expect("seq");

    // A is paused by its user, so its driver writes nothing: the first write to fail
    // on A is `session.send`'s own `user.input`.
    c.call("session.pause", json!({"session_id": a})).await;

    let (filler, filled) = fill_disk(&fs.path);
    assert!(filled > 0);

    // Sends soon cannot be journaled (the first few may still fit in the slack of the
    // journal's last page): a clear error, and A is paused with it.
    let mut acked: Vec<(u64, String)> = Vec::new();
    let (e, failed_text) = loop {
        let text = format!("echo during-{} {}", acked.len(), "x".repeat(200));
        match c
            .try_call("session.send", json!({"session_id": a, "text": text}))
            .await
        {
            Ok(v) => {
                acked.push((v["seq"].as_u64().expect("seq"), text));
                assert!(acked.len() < 100, "sends keep succeeding on a full disk");
            }
            Err(CallError::Rpc(e)) => break (e, text),
            Err(e) => panic!("send on a full disk: {e:?}"),
        }
    };
    assert_eq!(e["code"], json!(JSONRPC_IO), "{e}");
    assert_eq!(e["data"]["kind"], "io", "{e}");
    let msg = e["message"].as_str().unwrap_or_default();
    assert!(msg.contains("No space left on device"), "{e}");
    let got = c.call("session.get", json!({"session_id": a})).await;
    assert_eq!(got["state"], "paused", "{got:#}");
    assert!(
        got["error"]
            .as_str()
            .unwrap_or_default()
            .contains("No space left"),
        "{got:#}"
    );
    let a_last = got["last_seq"].as_u64().expect("last_seq");

    // B's command output cannot be journaled: B is paused, not ended.
    let got_b = wait_state(&mut c, &b, "paused").await;
    assert!(
        got_b["error"]
            .as_str()
            .unwrap_or_default()
            .contains("No space left"),
        "{got_b:#}"
    );

    // The daemon keeps serving.
    let info = c.call("daemon.info", json!({})).await;
    assert_eq!(info["pid"], json!(daemon.pid));
    let list = c.call("session.list", json!({})).await;
    assert_eq!(list["sessions"].as_array().map(Vec::len), Some(3));
    // Reading works; every acknowledged send is there, the failed one is not.
    let recs = c.read_all(&a).await;
    assert_eq!(recs.len() as u64, a_last);
    for (seq, text) in &acked {
        let r = &recs[*seq as usize - 1];
        assert_eq!(
            (&r["kind"], &r["data"]["text"]),
            (&json!("user.input"), &json!(text))
        );
    }
    assert!(
        !recs.iter().any(|r| r["data"]["text"] == json!(failed_text)),
        "the failed send is in the journal"
    );
    let got = c.call("session.get", json!({"session_id": idle})).await;
    assert_eq!(got["state"], "running", "{got:#}");
    // A second client connects fine.
    let mut c2 = Rpc::connect(&daemon.sock).await;
    c2.call("daemon.hello", json!({"protocol_version": 1}))
        .await;

    // Space returns.
    std::fs::remove_file(&filler).expect("remove filler");
    for id in &ids {
        assert_journal_sound(&journal_path(&daemon.home, id));
    }
    assert_journal_sound(&daemon.home.join("bus").join("events.ndjson"));

    for id in [&a, &b] {
        let r = c.call("session.resume", json!({"session_id": id})).await;
        assert!(r["resumed_at"].is_string(), "{r}");
        let got = c.call("session.get", json!({"session_id": id})).await;
        assert_eq!(got["state"], "running", "{got:#}");
        assert!(got["error"].is_null(), "{got:#}");
    }
    // A's inputs acknowledged on the full disk ran after the resume, in order.
    if let Some((seq, _)) = acked.last() {
        let recs = wait_done(&mut c, &a, *seq).await;
        for (seq, text) in &acked {
            let want = format!("{}\n", text.trim_start_matches("echo "));
            assert_eq!(output_of(&recs, *seq), want);
        }
    }
    for id in [&a, &b, &idle] {
        let last = c.call("session.get", json!({"session_id": id})).await["last_seq"]
            .as_u64()
            .expect("last_seq");
        let r = c
            .call(
                "session.send",
                json!({"session_id": id, "text": "echo after"}),
            )
            .await;
        let seq = r["seq"].as_u64().expect("seq");
        assert_eq!(seq, last + 1, "{id}: seqs contiguous");
        let recs = wait_done(&mut c, id, seq).await;
        assert_eq!(output_of(&recs, seq), "after\n", "{id}");
        assert_journal_sound(&journal_path(&daemon.home, id));
    }
    // B's interrupted loop was closed, and never ran again.
    let recs = assert_journal_sound(&journal_path(&daemon.home, &b));
    let ends: Vec<&Value> = recs
        .iter()
        .filter(|r| r["kind"] == "tool.end" && r["data"]["lane_id"] == json!(b_lane))
        .collect();
    assert_eq!(ends.len(), 1, "{ends:?}");
    assert_eq!(ends[0]["data"]["ok"], json!(false));
    assert_eq!(
        recs.iter()
            .filter(|r| r["kind"] == "tool.start" && r["data"]["lane_id"] == json!(b_lane))
            .count(),
        1
    );

    // And a clean stop and restart see all of it.
    drop((c, c2));
    let s = daemon
        .terminate(Duration::from_secs(20))
        .expect("graceful stop");
    assert!(s.success(), "{s}\n{}", daemon.stderr());
    opts.stderr_path = dir.path().join("serve-2.stderr");
    let daemon = DaemonProc::start(&opts);
    let mut c = Rpc::connect(&daemon.sock).await;
    for id in &ids {
        let got = c.call("session.get", json!({"session_id": id})).await;
        assert_eq!(got["state"], "paused-reattachable", "{got:#}");
        assert_journal_sound(&journal_path(&daemon.home, id));
    }
    drop(c);
    drop(daemon);
    drop(fs);
}

/// Regression: `session.start` on a full disk failed but left an empty
/// `sessions/<id>/` directory behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_start_on_a_full_disk_leaves_no_directory() {
    const TEST: &str = "session_start_on_a_full_disk_leaves_no_directory";
    if !is_root() {
        skip(TEST, "needs root to mount a small tmpfs for the home");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let fs = match Tmpfs::mount(&dir.path().join("mnt"), "1m") {
        Ok(m) => m,
        Err(e) => {
            skip(TEST, &format!("cannot mount a tmpfs: {e}"));
            return;
        }
    };
    let mut opts = ServeOpts::in_dir(dir.path());
    opts.home = fs.path.join("home");
    let daemon = DaemonProc::start(&opts);
    let mut c = Rpc::connect(&daemon.sock).await;
    let work = dir.path().join("w");
    std::fs::create_dir(&work).expect("workdir");
    let (filler, _) = fill_disk(&fs.path);
    let before = session_dirs(&daemon.home);
    let e = c.error("session.start", json!({"workdir": work})).await;
    assert_eq!(e["code"], json!(JSONRPC_IO), "{e}");
    assert!(
        e["message"]
            .as_str()
            .unwrap_or_default()
            .contains("No space left"),
        "{e}"
    );
    assert_eq!(
        session_dirs(&daemon.home),
        before,
        "a failed start left a directory"
    );
    // Space back: starting works.
    std::fs::remove_file(&filler).expect("remove filler");
    let r = c.call("session.start", json!({"workdir": work})).await;
    assert_eq!(r["state"], "running");
    drop(c);
    drop(daemon);
    drop(fs);
}
