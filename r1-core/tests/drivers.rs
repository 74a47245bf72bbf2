//! The `shell` and `exec` drivers against an in-memory emitter (DESIGN §6).
//!
//! Every wait polls for the expected record with a deadline; the only fixed waits
//! are the short windows that check something does *not* happen.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use r1_core::ErrorKind;
use r1_core::driver::exec::{ExecDriver, ExecFactory};
use r1_core::driver::process::{KillGrace, ProcessGroup};
use r1_core::driver::shell::{ShellDriver, ShellFactory};
use r1_core::driver::testing::{DriverHarness, Emitted, delta_text, of_kind, tool_end};
use r1_core::driver::{Control, DriverExit, DriverFactory, DriverSpec};
use serde_json::{Value, json};

/// Generous: the suite runs on 2 loaded cores. Waits end as soon as the record lands.
const T: Duration = Duration::from_secs(15);

fn tempdir() -> (tempfile::TempDir, PathBuf) {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().canonicalize().unwrap();
    (d, p)
}

fn spec(workdir: &Path, driver: &str, command: Option<Vec<String>>) -> DriverSpec {
    DriverSpec {
        session_id: format!("sess_test_{}", workdir.display().to_string().len()),
        workdir: workdir.to_path_buf(),
        driver: driver.to_owned(),
        command,
        env: BTreeMap::new(),
        journal_path: workdir.join("journal.ndjson"),
    }
}

fn shell(workdir: &Path) -> DriverHarness {
    let driver = ShellFactory.create(&spec(workdir, "shell", None)).unwrap();
    DriverHarness::start(driver, spec(workdir, "shell", None))
}

fn shell_with_grace(workdir: &Path, grace: Duration) -> DriverHarness {
    let g = KillGrace {
        cancel: grace,
        stop: grace,
    };
    DriverHarness::start(
        Box::new(ShellDriver::with_grace(g)),
        spec(workdir, "shell", None),
    )
}

async fn wait_end(h: &DriverHarness, lane: u64) -> Vec<Emitted> {
    h.wait_for(T, |r| tool_end(r, lane).is_some())
        .await
        .unwrap()
}

fn end_of(records: &[Emitted], lane: u64) -> Value {
    tool_end(records, lane).unwrap().data.clone()
}

fn pgid_of(records: &[Emitted], lane: u64) -> i32 {
    let start = records
        .iter()
        .find(|r| r.kind == "tool.start" && r.data["lane_id"] == json!(lane))
        .unwrap();
    i32::try_from(start.data["pgid"].as_i64().unwrap()).unwrap()
}

/// `(pid, state)` of the live (non-zombie) processes in group `pgid`, from /proc.
fn group_members(pgid: i32) -> Vec<(i32, char)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // "pid (comm) state ppid pgrp …": comm may hold spaces and parens.
        let Some(after) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
            continue;
        };
        let fields: Vec<&str> = after.split_whitespace().collect();
        let state = fields[0].chars().next().unwrap();
        if fields[2].parse::<i32>().unwrap() == pgid && state != 'Z' {
            out.push((pid, state));
        }
    }
    out
}

async fn poll(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + T;
    while !cond() {
        if Instant::now() >= deadline {
            let pgid = what.split(' ').nth(1).and_then(|p| p.parse::<i32>().ok());
            let members = pgid.map(group_members);
            panic!("timed out waiting for {what} (members {members:?})");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Waits until group `pgid` is stopped: some member in state `T` and none running or
/// in an interruptible sleep. (`D` is allowed: dash `vfork`s, and a parent waiting
/// for its stopped vfork child to exec sits in `D` until the child continues.)
async fn wait_group_stopped(pgid: i32) {
    poll(&format!("group {pgid} stopped"), || {
        let m = group_members(pgid);
        m.iter().any(|(_, s)| *s == 'T') && m.iter().all(|(_, s)| matches!(s, 'T' | 'D'))
    })
    .await;
}

async fn wait_group_gone(pgid: i32) {
    poll(&format!("group {pgid} to be gone"), || {
        group_members(pgid).is_empty()
    })
    .await;
    assert!(ProcessGroup::from_pgid(pgid).is_some());
}

// ---------------------------------------------------------------------------- shell

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shell_sessions_each_see_their_own_pwd() {
    let dirs: Vec<_> = (0..8).map(|_| tempdir()).collect();
    let harnesses: Vec<_> = dirs.iter().map(|(_, p)| shell(p)).collect();
    let mut lanes = Vec::new();
    for h in &harnesses {
        lanes.push(h.send("echo $PWD; pwd").await.unwrap());
    }
    for ((h, lane), (_, dir)) in harnesses.iter().zip(&lanes).zip(&dirs) {
        let records = wait_end(h, *lane).await;
        let want = format!("{0}\n{0}\n", dir.display());
        assert_eq!(delta_text(&records, "stdout", Some(*lane)), want);
        assert_eq!(end_of(&records, *lane)["exit_code"], json!(0));
    }
    // All eight distinct.
    let mut seen: Vec<_> = harnesses
        .iter()
        .map(|h| delta_text(&h.sink.records(), "stdout", None))
        .collect();
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), 8);
    for h in harnesses {
        h.control(Control::Cancel);
        assert_eq!(h.join(T).await.unwrap(), DriverExit::Cancelled);
    }
}

#[tokio::test]
async fn shell_separates_stdout_and_stderr() {
    let (_d, dir) = tempdir();
    let h = shell(&dir);
    let lane = h
        .send("echo out1; echo err1 >&2; echo out2; echo err2 >&2")
        .await
        .unwrap();
    let records = wait_end(&h, lane).await;
    assert_eq!(delta_text(&records, "stdout", Some(lane)), "out1\nout2\n");
    assert_eq!(delta_text(&records, "stderr", Some(lane)), "err1\nerr2\n");
    for d in of_kind(&records, "session.delta") {
        assert_eq!(d.data["lane_id"], json!(lane));
    }
}

#[tokio::test]
async fn shell_records_exit_codes_and_brackets_each_lane() {
    let (_d, dir) = tempdir();
    let h = shell(&dir);
    let ok = h.send("echo hi").await.unwrap();
    let three = h.send("echo bye; exit 3").await.unwrap();
    let records = wait_end(&h, three).await;

    let e = end_of(&records, ok);
    assert_eq!(
        (e["ok"].clone(), e["exit_code"].clone()),
        (json!(true), json!(0))
    );
    assert!(e["duration_ms"].is_u64());
    assert!(e.get("interrupted").is_none() && e.get("signal").is_none());
    let e = end_of(&records, three);
    assert_eq!(
        (e["ok"].clone(), e["exit_code"].clone()),
        (json!(false), json!(3))
    );

    // Per lane: user.input < tool.start < deltas < tool.end, all seqs increasing.
    let kinds: Vec<(&str, Option<u64>)> = records
        .iter()
        .map(|r| {
            (
                r.kind.as_str(),
                r.data.get("lane_id").and_then(Value::as_u64),
            )
        })
        .filter(|(k, _)| *k != "user.input")
        .collect();
    assert_eq!(
        kinds,
        vec![
            ("tool.start", Some(ok)),
            ("session.delta", Some(ok)),
            ("tool.end", Some(ok)),
            ("tool.start", Some(three)),
            ("session.delta", Some(three)),
            ("tool.end", Some(three)),
        ]
    );
    assert!(records.windows(2).all(|w| w[0].seq + 1 == w[1].seq));
    let start = of_kind(&records, "tool.start")[0].data.clone();
    assert_eq!(start["tool"], json!("sh"));
    assert_eq!(start["args"], json!({"cmd": "echo hi"}));
    assert!(start["pgid"].as_i64().unwrap() > 1);
}

#[tokio::test]
async fn shell_runs_queued_inputs_in_fifo_order() {
    let (_d, dir) = tempdir();
    let h = shell(&dir);
    // The first is the slowest: FIFO must still hold.
    let a = h.send("sleep 0.2; echo a").await.unwrap();
    let b = h.send("echo b").await.unwrap();
    let c = h.send("echo c").await.unwrap();
    let records = wait_end(&h, c).await;
    let order: Vec<(String, u64)> = records
        .iter()
        .filter(|r| r.kind.starts_with("tool."))
        .map(|r| (r.kind.clone(), r.data["lane_id"].as_u64().unwrap()))
        .collect();
    let want: Vec<(String, u64)> = [a, b, c]
        .iter()
        .flat_map(|&l| [("tool.start".to_owned(), l), ("tool.end".to_owned(), l)])
        .collect();
    assert_eq!(order, want);
    assert_eq!(delta_text(&records, "stdout", None), "a\nb\nc\n");
}

#[tokio::test]
async fn shell_pause_stops_the_group_and_run_resumes_it() {
    let (_d, dir) = tempdir();
    let h = shell(&dir);
    // Finishes once the test creates `go`: no race with the pause.
    let lane = h
        .send("while [ ! -e go ]; do sleep 0.01; done; echo done")
        .await
        .unwrap();
    let records = h
        .wait_for(T, |r| !of_kind(r, "tool.start").is_empty())
        .await
        .unwrap();
    let pgid = pgid_of(&records, lane);
    h.control(Control::Pause);
    wait_group_stopped(pgid).await;
    std::fs::write(dir.join("go"), "").unwrap();
    // Paused: a new input is queued, not started, and the stopped command cannot see
    // `go` yet.
    let queued = h.send("echo queued").await.unwrap();
    let records = h.sink.records();
    assert!(tool_end(&records, lane).is_none());
    assert_eq!(of_kind(&records, "tool.start").len(), 1);
    h.control(Control::Run);
    let records = wait_end(&h, queued).await;
    let e = end_of(&records, lane);
    assert_eq!(
        (e["ok"].clone(), e["exit_code"].clone()),
        (json!(true), json!(0))
    );
    assert_eq!(delta_text(&records, "stdout", None), "done\nqueued\n");
    h.control(Control::Cancel);
    assert_eq!(h.join(T).await.unwrap(), DriverExit::Cancelled);
}

#[tokio::test]
async fn shell_pause_while_idle_holds_the_queue() {
    let (_d, dir) = tempdir();
    let h = DriverHarness::start_with(
        Box::new(ShellDriver::new()),
        spec(&dir, "shell", None),
        Control::Pause,
    );
    let lane = h.send("echo later").await.unwrap();
    // Nothing can signal "not started"; a short window is the only check there is.
    let early = h
        .wait_for(Duration::from_millis(300), |r| {
            !of_kind(r, "tool.start").is_empty()
        })
        .await;
    assert_eq!(early.unwrap_err().kind(), ErrorKind::Timeout);
    h.control(Control::Run);
    let records = wait_end(&h, lane).await;
    assert_eq!(delta_text(&records, "stdout", Some(lane)), "later\n");
}

#[tokio::test]
async fn shell_cancel_kills_a_long_sleep() {
    let (_d, dir) = tempdir();
    let h = shell(&dir);
    let lane = h.send("sleep 100").await.unwrap();
    let queued = h.send("echo never").await.unwrap();
    let records = h
        .wait_for(T, |r| !of_kind(r, "tool.start").is_empty())
        .await
        .unwrap();
    let pgid = pgid_of(&records, lane);
    let t0 = Instant::now();
    h.control(Control::Cancel);
    let sink = h.sink.clone();
    assert_eq!(h.join(T).await.unwrap(), DriverExit::Cancelled);
    assert!(t0.elapsed() < Duration::from_secs(2), "{:?}", t0.elapsed());
    let records = sink.records();
    let e = end_of(&records, lane);
    assert_eq!(e["interrupted"], json!(true));
    assert_eq!(e["ok"], json!(false));
    assert_eq!(e["exit_code"], Value::Null);
    assert_eq!(e["signal"], json!("SIGTERM"));
    assert!(tool_end(&records, queued).is_none(), "a queued input ran");
    assert_eq!(of_kind(&records, "tool.start").len(), 1);
    wait_group_gone(pgid).await;
}

#[tokio::test]
async fn shell_cancel_of_a_paused_command_still_ends_it() {
    let (_d, dir) = tempdir();
    let h = shell(&dir);
    let lane = h.send("sleep 100").await.unwrap();
    let records = h
        .wait_for(T, |r| !of_kind(r, "tool.start").is_empty())
        .await
        .unwrap();
    let pgid = pgid_of(&records, lane);
    h.control(Control::Pause);
    wait_group_stopped(pgid).await;
    let t0 = Instant::now();
    h.control(Control::Cancel);
    assert_eq!(h.join(T).await.unwrap(), DriverExit::Cancelled);
    assert!(t0.elapsed() < Duration::from_secs(2), "{:?}", t0.elapsed());
    wait_group_gone(pgid).await;
}

#[tokio::test]
async fn shell_cancel_sigkills_a_command_ignoring_sigterm() {
    let (_d, dir) = tempdir();
    let grace = Duration::from_millis(300);
    let h = shell_with_grace(&dir, grace);
    let lane = h
        .send("trap '' TERM; echo ready; sleep 100; echo survived")
        .await
        .unwrap();
    let records = h
        .wait_for(T, |r| delta_text(r, "stdout", Some(lane)) == "ready\n")
        .await
        .unwrap();
    let pgid = pgid_of(&records, lane);
    let t0 = Instant::now();
    h.control(Control::Cancel);
    let sink = h.sink.clone();
    assert_eq!(h.join(T).await.unwrap(), DriverExit::Cancelled);
    let took = t0.elapsed();
    assert!(took >= grace, "killed before the grace: {took:?}");
    assert!(took < grace + Duration::from_secs(2), "{took:?}");
    let records = sink.records();
    let e = end_of(&records, lane);
    assert_eq!(e["signal"], json!("SIGKILL"));
    assert_eq!(e["interrupted"], json!(true));
    assert_eq!(delta_text(&records, "stdout", Some(lane)), "ready\n");
    wait_group_gone(pgid).await;
}

#[tokio::test]
async fn shell_stop_interrupts_and_skips_queued_inputs() {
    let (_d, dir) = tempdir();
    let h = shell(&dir);
    let lane = h.send("echo started; sleep 100").await.unwrap();
    let queued = h.send("echo never").await.unwrap();
    let records = h
        .wait_for(T, |r| delta_text(r, "stdout", Some(lane)) == "started\n")
        .await
        .unwrap();
    let pgid = pgid_of(&records, lane);
    h.control(Control::Stop);
    let sink = h.sink.clone();
    assert_eq!(h.join(T).await.unwrap(), DriverExit::Stopped);
    let records = sink.records();
    assert_eq!(end_of(&records, lane)["interrupted"], json!(true));
    assert!(tool_end(&records, queued).is_none());
    wait_group_gone(pgid).await;
}

#[tokio::test]
async fn shell_idle_cancel_and_closed_inbox() {
    let (_d, dir) = tempdir();
    let h = shell(&dir);
    h.control(Control::Cancel);
    assert_eq!(h.join(T).await.unwrap(), DriverExit::Cancelled);

    let mut h = shell(&dir);
    let lane = h.send("true").await.unwrap();
    wait_end(&h, lane).await;
    assert!(!h.is_finished(), "an idle shell session keeps running");
    h.close_inbox();
    assert_eq!(h.join(T).await.unwrap(), DriverExit::Stopped);
}

#[tokio::test]
async fn shell_splits_large_output_into_64k_records() {
    let (_d, dir) = tempdir();
    let h = shell(&dir);
    // 20000 lines of 14 bytes with two 2-byte characters each: 280000 bytes.
    let lane = h.send("yes 'héllo wörld' | head -n 20000").await.unwrap();
    let records = wait_end(&h, lane).await;
    let deltas = of_kind(&records, "session.delta");
    let mut joined = String::new();
    for d in &deltas {
        let t = d.data["text"].as_str().unwrap();
        assert!(t.len() <= 64 * 1024, "record of {} bytes", t.len());
        joined.push_str(t);
    }
    assert!(deltas.len() >= 5, "{} records", deltas.len());
    assert_eq!(joined, "héllo wörld\n".repeat(20000));
    assert_eq!(end_of(&records, lane)["ok"], json!(true));
}

#[tokio::test]
async fn shell_lossy_converts_invalid_utf8() {
    let (_d, dir) = tempdir();
    let h = shell(&dir);
    let lane = h
        .send(r"printf 'a\377b\n'; printf '\342\202' >&2")
        .await
        .unwrap();
    let records = wait_end(&h, lane).await;
    assert_eq!(delta_text(&records, "stdout", Some(lane)), "a\u{FFFD}b\n");
    // A truncated character at EOF.
    assert_eq!(delta_text(&records, "stderr", Some(lane)), "\u{FFFD}");
    assert_eq!(end_of(&records, lane)["ok"], json!(true));
}

#[tokio::test]
async fn shell_background_child_holding_the_pipes_does_not_hang() {
    let (_d, dir) = tempdir();
    let h = shell(&dir);
    let t0 = Instant::now();
    let lane = h.send("sleep 100 & echo started").await.unwrap();
    let records = wait_end(&h, lane).await;
    assert!(t0.elapsed() < Duration::from_secs(3), "{:?}", t0.elapsed());
    let e = end_of(&records, lane);
    assert_eq!(
        (e["ok"].clone(), e["exit_code"].clone()),
        (json!(true), json!(0))
    );
    assert_eq!(delta_text(&records, "stdout", Some(lane)), "started\n");
    wait_group_gone(pgid_of(&records, lane)).await;
    // The session goes on.
    let next = h.send("echo next").await.unwrap();
    let records = wait_end(&h, next).await;
    assert_eq!(delta_text(&records, "stdout", Some(next)), "next\n");
}

#[tokio::test]
async fn shell_passes_spec_env_but_not_over_pwd() {
    let (_d, dir) = tempdir();
    let mut s = spec(&dir, "shell", None);
    s.env.insert("R1_TEST_VAR".into(), "hello there".into());
    s.env.insert("PWD".into(), "/elsewhere".into());
    let h = DriverHarness::start(Box::new(ShellDriver::new()), s);
    let lane = h.send("echo \"$R1_TEST_VAR|$PWD\"").await.unwrap();
    let records = wait_end(&h, lane).await;
    assert_eq!(
        delta_text(&records, "stdout", Some(lane)),
        format!("hello there|{}\n", dir.display())
    );
}

#[tokio::test]
async fn shell_emit_failure_ends_the_run_and_kills_the_command() {
    let (_d, dir) = tempdir();
    let h = shell(&dir);
    h.sink.fail_kind("session.delta");
    let lane = h.send("echo hi; sleep 100").await.unwrap();
    let records = h
        .wait_for(T, |r| !of_kind(r, "tool.start").is_empty())
        .await
        .unwrap();
    let pgid = pgid_of(&records, lane);
    let err = h.join(T).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Io);
    wait_group_gone(pgid).await;
}

#[tokio::test]
async fn shell_dropped_run_kills_the_command() {
    let (_d, dir) = tempdir();
    let h = shell(&dir);
    let lane = h.send("sleep 100").await.unwrap();
    let records = h
        .wait_for(T, |r| !of_kind(r, "tool.start").is_empty())
        .await
        .unwrap();
    h.abort().await;
    wait_group_gone(pgid_of(&records, lane)).await;
}

#[tokio::test]
async fn shell_reports_a_workdir_it_cannot_enter() {
    let (d, dir) = tempdir();
    let gone = dir.join("gone");
    std::fs::create_dir(&gone).unwrap();
    let h = shell(&gone);
    std::fs::remove_dir(&gone).unwrap();
    let lane = h.send("echo hi").await.unwrap();
    let records = wait_end(&h, lane).await;
    let e = end_of(&records, lane);
    assert_eq!(e["ok"], json!(false));
    assert_eq!(e["exit_code"], Value::Null);
    assert!(
        e["error"]
            .as_str()
            .unwrap()
            .starts_with("cannot start /bin/sh:")
    );
    drop(d);
}

// ----------------------------------------------------------------------------- exec

const AGENT: &str = r#"
import json, os, sys, time
print(json.dumps({"kind": "agent.hello", "data": {
    "session_id": os.environ.get("R1_SESSION_ID"),
    "journal": os.environ.get("R1_SESSION_JOURNAL"),
    "pwd": os.environ.get("PWD"),
    "cwd": os.getcwd(),
    "extra": os.environ.get("AGENT_EXTRA"),
}}), flush=True)
while True:
    line = sys.stdin.readline()
    if not line:
        sys.exit(9)
    msg = json.loads(line)
    text = msg["text"]
    if text == "quit":
        sys.exit(0)
    if text.startswith("exit "):
        sys.exit(int(text[5:]))
    if text == "sleep":
        print(json.dumps({"kind": "agent.sleeping", "data": None}), flush=True)
        time.sleep(100)
    print(json.dumps({"kind": "agent.echo", "data": {"text": text, "seq": msg["seq"]}}), flush=True)
    print("plain " + text, flush=True)
    print(json.dumps({"kind": "session.ended"}), flush=True)
    print("err " + text, file=sys.stderr, flush=True)
"#;

fn agent(dir: &Path) -> DriverSpec {
    agent_with(dir, "")
}

/// The agent with `preamble` run first.
fn agent_with(dir: &Path, preamble: &str) -> DriverSpec {
    let script = dir.join("agent.py");
    std::fs::write(&script, format!("{preamble}\n{AGENT}")).unwrap();
    let argv = vec![
        "python3".to_owned(),
        "-u".to_owned(),
        script.display().to_string(),
    ];
    let mut s = spec(dir, "exec", Some(argv));
    s.env.insert("AGENT_EXTRA".into(), "extra!".into());
    s
}

fn exec(s: DriverSpec) -> DriverHarness {
    let driver = ExecFactory.create(&s).unwrap();
    DriverHarness::start(driver, s)
}

/// The records the child caused, without the harness's `user.input`s and the stderr
/// deltas (whose interleaving with stdout is the kernel's business).
fn stdout_records(records: &[Emitted]) -> Vec<(String, Value)> {
    records
        .iter()
        .filter(|r| r.kind != "user.input" && r.data["stream"] != json!("stderr"))
        .map(|r| (r.kind.clone(), r.data.clone()))
        .collect()
}

#[tokio::test]
async fn exec_agent_events_in_order() {
    let (_d, dir) = tempdir();
    let s = agent(&dir);
    let journal = s.journal_path.display().to_string();
    let session_id = s.session_id.clone();
    let h = exec(s);
    let one = h.send("hello").await.unwrap();
    let two = h.send("wörld \"quoted\"").await.unwrap();
    h.send("quit").await.unwrap();
    let sink = h.sink.clone();
    assert_eq!(
        h.join(T).await.unwrap(),
        DriverExit::Finished {
            ok: true,
            exit_code: Some(0),
            message: None
        }
    );
    let records = sink.records();
    let invalid = json!({"line": "{\"kind\": \"session.ended\"}", "reason": "reserved kind"});
    let dir_s = dir.display().to_string();
    assert_eq!(
        stdout_records(&records),
        vec![
            (
                "agent.hello".to_owned(),
                json!({"session_id": session_id, "journal": journal, "pwd": dir_s,
                       "cwd": dir_s, "extra": "extra!"})
            ),
            (
                "agent.echo".to_owned(),
                json!({"text": "hello", "seq": one})
            ),
            (
                "session.delta".to_owned(),
                json!({"stream": "stdout", "text": "plain hello\n"})
            ),
            ("driver.invalid".to_owned(), invalid.clone()),
            (
                "agent.echo".to_owned(),
                json!({"text": "wörld \"quoted\"", "seq": two})
            ),
            (
                "session.delta".to_owned(),
                json!({"stream": "stdout", "text": "plain wörld \"quoted\"\n"})
            ),
            ("driver.invalid".to_owned(), invalid),
        ]
    );
    assert_eq!(
        delta_text(&records, "stderr", None),
        "err hello\nerr wörld \"quoted\"\n"
    );
    assert!(
        records
            .iter()
            .all(|r| !r.kind.starts_with("session.") || r.kind == "session.delta")
    );
}

#[tokio::test]
async fn exec_exit_code_becomes_finished() {
    let (_d, dir) = tempdir();
    let h = exec(agent(&dir));
    h.send("exit 3").await.unwrap();
    assert_eq!(
        h.join(T).await.unwrap(),
        DriverExit::Finished {
            ok: false,
            exit_code: Some(3),
            message: Some("exited with code 3".into())
        }
    );
}

#[tokio::test]
async fn exec_missing_binary_finishes_not_ok() {
    let (_d, dir) = tempdir();
    let s = spec(
        &dir,
        "exec",
        Some(vec![dir.join("no-such-agent").display().to_string()]),
    );
    let h = exec(s);
    let exit = h.join(T).await.unwrap();
    let DriverExit::Finished {
        ok: false,
        exit_code: None,
        message: Some(m),
    } = exit
    else {
        panic!("unexpected {exit:?}");
    };
    let want = format!("cannot start {}/no-such-agent: ", dir.display());
    assert!(m.starts_with(&want), "{m}");
    assert!(m.contains("No such file"), "{m}");
}

#[tokio::test]
async fn exec_factory_refuses_bad_commands() {
    let (_d, dir) = tempdir();
    for bad in [None, Some(vec![]), Some(vec![String::new()])] {
        let err = ExecFactory
            .create(&spec(&dir, "exec", bad.clone()))
            .err()
            .unwrap_or_else(|| panic!("{bad:?} accepted"));
        assert_eq!(err.kind(), ErrorKind::InvalidParams);
    }
}

async fn agent_sleeping(
    dir: &Path,
    preamble: &str,
    grace: Option<Duration>,
) -> (DriverHarness, i32) {
    let s = agent_with(dir, preamble);
    let h = match grace {
        Some(g) => DriverHarness::start(
            Box::new(ExecDriver::with_grace(KillGrace { cancel: g, stop: g })),
            s,
        ),
        None => exec(s),
    };
    h.wait_for(T, |r| !of_kind(r, "agent.hello").is_empty())
        .await
        .unwrap();
    h.send("sleep").await.unwrap();
    h.wait_for(T, |r| !of_kind(r, "agent.sleeping").is_empty())
        .await
        .unwrap();
    let pid = find_agent_pgid(dir).await;
    (h, pid)
}

/// The agent's pgid: the group of the python process whose cmdline names this dir.
async fn find_agent_pgid(dir: &Path) -> i32 {
    let needle = dir.join("agent.py").display().to_string();
    let mut found = None;
    poll("the agent process", || {
        for entry in std::fs::read_dir("/proc").unwrap().flatten() {
            let name = entry.file_name().to_string_lossy().to_string();
            let Ok(pid) = name.parse::<i32>() else {
                continue;
            };
            let Ok(cmd) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
                continue;
            };
            if String::from_utf8_lossy(&cmd).contains(&needle) {
                found = Some(pid);
                return true;
            }
        }
        false
    })
    .await;
    let pid = found.unwrap();
    // It leads its own group.
    assert_eq!(
        group_members(pid).iter().map(|m| m.0).collect::<Vec<_>>(),
        vec![pid]
    );
    pid
}

#[tokio::test]
async fn exec_cancel_kills_the_child() {
    let (_d, dir) = tempdir();
    let (h, pgid) = agent_sleeping(&dir, "", None).await;
    let t0 = Instant::now();
    h.control(Control::Cancel);
    assert_eq!(h.join(T).await.unwrap(), DriverExit::Cancelled);
    assert!(t0.elapsed() < Duration::from_secs(2), "{:?}", t0.elapsed());
    wait_group_gone(pgid).await;
}

#[tokio::test]
async fn exec_dropped_run_kills_the_child() {
    let (_d, dir) = tempdir();
    let (h, pgid) = agent_sleeping(&dir, "", None).await;
    h.abort().await;
    wait_group_gone(pgid).await;
}

#[tokio::test]
async fn exec_stop_sigkills_after_the_grace() {
    let (_d, dir) = tempdir();
    // The agent ignores SIGTERM here: only SIGKILL after the grace ends it.
    let ignore_term = "import signal\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)";
    let grace = Duration::from_millis(300);
    let (h, pgid) = agent_sleeping(&dir, ignore_term, Some(grace)).await;
    let t0 = Instant::now();
    h.control(Control::Stop);
    assert_eq!(h.join(T).await.unwrap(), DriverExit::Stopped);
    assert!(t0.elapsed() >= grace, "{:?}", t0.elapsed());
    wait_group_gone(pgid).await;
}

#[tokio::test]
async fn exec_pause_stops_and_run_continues() {
    let (_d, dir) = tempdir();
    let h = exec(agent(&dir));
    h.wait_for(T, |r| !of_kind(r, "agent.hello").is_empty())
        .await
        .unwrap();
    let pgid = find_agent_pgid(&dir).await;
    h.control(Control::Pause);
    wait_group_stopped(pgid).await;
    // Input written while paused is answered after Run.
    let lane = h.send("ping").await.unwrap();
    h.control(Control::Run);
    let records = h
        .wait_for(T, |r| !of_kind(r, "agent.echo").is_empty())
        .await
        .unwrap();
    assert_eq!(
        of_kind(&records, "agent.echo")[0].data,
        json!({"text": "ping", "seq": lane})
    );
    h.send("quit").await.unwrap();
    assert_eq!(
        h.join(T).await.unwrap(),
        DriverExit::Finished {
            ok: true,
            exit_code: Some(0),
            message: None
        }
    );
}

#[tokio::test]
async fn exec_long_and_odd_lines_are_deltas() {
    let (_d, dir) = tempdir();
    let script = dir.join("odd.py");
    std::fs::write(
        &script,
        "import sys\n\
         sys.stdout.write('x' * 100000 + '\\n')\n\
         sys.stdout.write('{\"kind\": 5}\\n')\n\
         sys.stdout.buffer.write(b'bad \\xff\\n')\n\
         sys.stdout.write('{\"kind\": \"agent.last\"}')\n",
    )
    .unwrap();
    let s = spec(
        &dir,
        "exec",
        Some(vec!["python3".into(), script.display().to_string()]),
    );
    let h = exec(s);
    let sink = h.sink.clone();
    assert!(matches!(
        h.join(T).await.unwrap(),
        DriverExit::Finished { ok: true, .. }
    ));
    let records = sink.records();
    let deltas = of_kind(&records, "session.delta");
    assert!(
        deltas
            .iter()
            .all(|d| d.data["text"].as_str().unwrap().len() <= 64 * 1024)
    );
    assert_eq!(
        delta_text(&records, "stdout", None),
        format!("{}\n{{\"kind\": 5}}\nbad \u{FFFD}\n", "x".repeat(100000))
    );
    // An unterminated last line still counts as a line.
    assert_eq!(records.last().unwrap().kind, "agent.last");
    assert_eq!(records.last().unwrap().data, Value::Null);
}

/// Event lines that arrive together are journaled in batches, in their order, with
/// text and untrusted lines between them still where they were.
#[tokio::test]
async fn exec_events_that_arrive_together_are_journaled_in_order_as_batches() {
    let (_d, dir) = tempdir();
    let mut out = String::new();
    for i in 0..300 {
        out.push_str(&format!(
            "{{\"kind\":\"agent.tick\",\"data\":{{\"i\":{i}}}}}\n"
        ));
        if i == 150 {
            out.push_str("plain text\n{\"kind\":\"user.input\"}\n");
        }
    }
    let file = dir.join("burst.ndjson");
    std::fs::write(&file, &out).unwrap();
    // One write of the whole burst (cat), then the child exits.
    let s = spec(
        &dir,
        "exec",
        Some(vec!["cat".into(), file.display().to_string()]),
    );
    let h = exec(s);
    let sink = h.sink.clone();
    assert!(matches!(
        h.join(T).await.unwrap(),
        DriverExit::Finished { ok: true, .. }
    ));
    let got: Vec<(String, Value)> = stdout_records(&sink.records());
    let mut want = Vec::new();
    for i in 0..300 {
        want.push(("agent.tick".to_owned(), json!({"i": i})));
        if i == 150 {
            want.push((
                "session.delta".to_owned(),
                json!({"stream": "stdout", "text": "plain text\n"}),
            ));
            want.push((
                "driver.invalid".to_owned(),
                json!({"line": "{\"kind\":\"user.input\"}", "reason": "reserved kind"}),
            ));
        }
    }
    assert_eq!(got, want);
    let batches = sink.batch_sizes();
    assert!(
        batches.iter().any(|&n| n > 10),
        "lines read together went out together: {batches:?}"
    );
    let seqs: Vec<u64> = sink.records().iter().map(|r| r.seq).collect();
    assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>());
}
