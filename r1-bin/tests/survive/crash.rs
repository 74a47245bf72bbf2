//! Crash trials (DESIGN §5 durability and recovery, §6 restart/reattach).
//!
//! A trial starts `r1 serve`, makes sure 8 shell sessions are running (resuming those a
//! previous crash left `paused-reattachable`, starting new ones), lets two senders per
//! session fire `session.send` as fast as the daemon acknowledges (short `echo`s and
//! 200-line loops, so deltas, group commits and queued inputs are all in flight),
//! sometimes cancels a session, then SIGKILLs the daemon at a random moment. The next
//! trial restarts it on the same home and checks, for every session:
//!
//! * every acknowledged `session.send` is in its journal: a `user.input` with that seq
//!   and text;
//! * the journal verifies (`Reader::verify`: no damage, no half-written record) and its
//!   seqs run 1, 2, 3 … with no gap;
//! * a torn tail that recovery cut held only unacknowledged bytes (`last_good_seq` ≥
//!   the last acknowledged seq), was saved whole to its `.corrupt-*` file, and held no
//!   complete valid record;
//! * unfinished sessions are `paused-reattachable` (with `session.reattached` naming
//!   this daemon as their last record), cancelled ones `ended`, deleted ones gone;
//!   every input has a `tool.end` (the interrupted ones `interrupted: true`);
//! * the bus log verifies.
//!
//! Homes are reused for chains of [`CHAIN`] crashes (recovery of recovered journals),
//! then replaced. `R1_CRASH_TRIALS` (default 20) sets the number of trials,
//! `R1_CRASH_SEED` replays a run; `scripts/crash-trials.sh` runs the long version.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::common::{CallError, DaemonProc, Rng, Rpc, ServeOpts, assert_journal_sound};

/// Sessions kept running in every trial.
const SESSIONS: usize = 8;
/// Senders (connections) per session.
const SENDERS: usize = 2;
/// Crashes per home before a fresh one.
const CHAIN: usize = 5;
/// Sends per sender per trial at most (bounds journal growth along a chain).
const MAX_SENDS: usize = 150;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// Started (or resumed) and not cancelled: `paused-reattachable` after a crash.
    Unfinished,
    /// A `session.cancel` was sent but not acknowledged: either outcome is fine.
    Cancelling,
    /// `session.cancel` acknowledged: `ended`.
    Ended,
    /// `session.delete` acknowledged: absent, directory gone.
    Deleted,
}

#[derive(Debug, Clone)]
struct Acked {
    session: String,
    seq: u64,
    text: String,
}

#[derive(Default)]
struct Model {
    sessions: BTreeMap<String, Expect>,
    acked: Vec<Acked>,
}

#[derive(Debug, Default, Clone, Copy)]
struct Totals {
    acked: u64,
    repairs: u64,
    cancels: u64,
    deletes: u64,
    restarts: u64,
}

fn trials_from_env() -> usize {
    std::env::var("R1_CRASH_TRIALS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn crash_trials_lose_no_acknowledged_send() {
    let trials = trials_from_env();
    let seed = std::env::var("R1_CRASH_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(Rng::clock_seed);
    eprintln!("crash trials: {trials} trials, seed {seed} (replay with R1_CRASH_SEED={seed})");
    let mut rng = Rng::new(seed);
    let started = Instant::now();
    let mut totals = Totals::default();
    let mut dir: Option<tempfile::TempDir> = None;
    let mut model = Model::default();
    for trial in 0..trials {
        if trial % CHAIN == 0 {
            dir = Some(tempfile::tempdir().expect("tempdir"));
            model = Model::default();
        }
        let d = dir.as_ref().expect("dir").path().to_path_buf();
        let ctx = format!("trial {trial} (seed {seed}, dir {})", d.display());
        let mut daemon = start_daemon(&d, trial);
        check(&daemon, &model, &mut totals, &ctx).await;
        run_and_crash(&mut daemon, &d, &mut model, &mut rng, &mut totals, &ctx).await;
    }
    // After the last crash: recover once more, then stop gracefully and check that a
    // clean restart (marker path) sees the same thing.
    let d = dir.as_ref().expect("dir").path().to_path_buf();
    let ctx = format!("final (seed {seed}, dir {})", d.display());
    let mut daemon = start_daemon(&d, trials);
    check(&daemon, &model, &mut totals, &ctx).await;
    let status = daemon
        .terminate(Duration::from_secs(20))
        .unwrap_or_else(|e| panic!("{ctx}: graceful stop: {e}\n{}", daemon.stderr()));
    assert!(status.success(), "{ctx}: r1 serve exited {status}");
    let daemon = start_daemon(&d, trials + 1);
    check(&daemon, &model, &mut totals, &ctx).await;
    drop(daemon);
    let secs = started.elapsed().as_secs_f64();
    eprintln!(
        "crash trials: {trials} trials, 0 failures, {secs:.1}s; {} acknowledged sends checked, {} torn tails cut, {} cancels, {} deletes, {} restarts checked",
        totals.acked, totals.repairs, totals.cancels, totals.deletes, totals.restarts
    );
    assert!(
        totals.acked >= trials as u64,
        "the trials acknowledged too few sends ({}) to mean anything",
        totals.acked
    );
}

fn start_daemon(dir: &Path, n: usize) -> DaemonProc {
    let mut opts = ServeOpts::in_dir(dir);
    opts.stderr_path = dir.join(format!("serve-{n}.stderr"));
    // Short grace: the final graceful stop interrupts 200-line loops.
    opts.args = vec!["--grace".into(), "2".into()];
    DaemonProc::start(&opts)
}

fn journal_path(home: &Path, id: &str) -> PathBuf {
    home.join("sessions").join(id).join("journal.ndjson")
}

/// Brings the home to [`SESSIONS`] running sessions, runs the senders, kills the
/// daemon at a random moment, and records what was acknowledged.
async fn run_and_crash(
    daemon: &mut DaemonProc,
    dir: &Path,
    model: &mut Model,
    rng: &mut Rng,
    totals: &mut Totals,
    ctx: &str,
) {
    let mut c = Rpc::connect(&daemon.sock).await;
    // Sometimes delete an ended session (tombstone + directory removal).
    if rng.range(0, 2) == 0
        && let Some(id) = model
            .sessions
            .iter()
            .find(|(_, e)| **e == Expect::Ended)
            .map(|(id, _)| id.clone())
    {
        c.call("session.delete", json!({"session_id": id})).await;
        model.sessions.insert(id, Expect::Deleted);
        totals.deletes += 1;
    }
    let mut live: Vec<String> = Vec::new();
    for (id, e) in &model.sessions {
        if *e == Expect::Unfinished {
            let r = c.call("session.resume", json!({"session_id": id})).await;
            assert!(r["resumed_at"].is_string(), "{ctx}: resume {id}: {r}");
            live.push(id.clone());
        }
    }
    while live.len() < SESSIONS {
        let work = dir.join("work").join(format!("w{}", model.sessions.len()));
        std::fs::create_dir_all(&work).expect("workdir");
        let r = c
            .call(
                "session.start",
                json!({"workdir": work, "name": format!("crash-{}", model.sessions.len())}),
            )
            .await;
        let id = r["session_id"].as_str().expect("session_id").to_owned();
        model.sessions.insert(id.clone(), Expect::Unfinished);
        live.push(id);
    }
    drop(c);

    let acked: Arc<Mutex<Vec<Acked>>> = Arc::new(Mutex::new(Vec::new()));
    let failures: Arc<Mutex<Vec<String>>> = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for (k, id) in live.iter().enumerate() {
        for w in 0..SENDERS {
            tasks.push(tokio::spawn(sender(
                daemon.sock.clone(),
                id.clone(),
                format!("s{k}w{w}"),
                rng.next_u64(),
                Arc::clone(&acked),
                Arc::clone(&failures),
            )));
        }
    }
    // A follower from the start, so fan-out and disk catch-up run during the crash.
    let follower = tokio::spawn(follow(daemon.sock.clone(), live[0].clone()));
    let kill_after = Duration::from_millis(rng.range(20, 400));
    let cancel = (rng.range(0, 4) == 0).then(|| {
        let id = live[rng.range(0, live.len() as u64) as usize].clone();
        let at = Duration::from_millis(rng.range(0, kill_after.as_millis() as u64));
        (id, at)
    });
    let cancel_task = cancel.clone().map(|(id, at)| {
        let sock = daemon.sock.clone();
        tokio::spawn(async move {
            tokio::time::sleep(at).await;
            let mut c = Rpc::try_connect(&sock).await.ok()?;
            match c
                .try_call("session.cancel", json!({"session_id": id}))
                .await
            {
                Ok(_) => Some(true),
                Err(CallError::Closed(_)) => Some(false),
                Err(e) => panic!("cancel {id}: {e:?}"),
            }
        })
    });
    if let Some((id, _)) = &cancel {
        model.sessions.insert(id.clone(), Expect::Cancelling);
    }
    tokio::time::sleep(kill_after).await;
    daemon.kill9();

    for t in tasks {
        tokio::time::timeout(Duration::from_secs(30), t)
            .await
            .unwrap_or_else(|_| panic!("{ctx}: a sender hung after the kill"))
            .expect("sender task");
    }
    let _ = tokio::time::timeout(Duration::from_secs(30), follower).await;
    if let (Some(t), Some((id, _))) = (cancel_task, cancel) {
        let done = tokio::time::timeout(Duration::from_secs(30), t)
            .await
            .unwrap_or_else(|_| panic!("{ctx}: cancel hung after the kill"))
            .expect("cancel task");
        if done == Some(true) {
            model.sessions.insert(id, Expect::Ended);
            totals.cancels += 1;
        }
    }
    let failures = std::mem::take(&mut *failures.lock().expect("failures"));
    assert!(
        failures.is_empty(),
        "{ctx}: unexpected errors: {failures:#?}"
    );
    let acked = std::mem::take(&mut *acked.lock().expect("acked"));
    totals.acked += acked.len() as u64;
    model.acked.extend(acked);
}

async fn sender(
    sock: PathBuf,
    session: String,
    tag: String,
    seed: u64,
    acked: Arc<Mutex<Vec<Acked>>>,
    failures: Arc<Mutex<Vec<String>>>,
) {
    let mut rng = Rng::new(seed);
    let Ok(mut c) = Rpc::try_connect(&sock).await else {
        return;
    };
    for n in 0..MAX_SENDS {
        let text = match rng.range(0, 16) {
            0 | 1 => format!("for i in $(seq 1 200); do echo {tag}-{n} line $i; done"),
            // 64 KiB deltas: multi-page writes a SIGKILL can tear.
            2 => format!("head -c 400000 /dev/zero | tr '\\0' x; echo {tag}-{n}"),
            _ => format!("echo {tag}-{n}"),
        };
        match c
            .try_call("session.send", json!({"session_id": session, "text": text}))
            .await
        {
            Ok(v) => {
                let seq = v["seq"].as_u64().expect("seq");
                acked.lock().expect("acked").push(Acked {
                    session: session.clone(),
                    seq,
                    text,
                });
            }
            Err(CallError::Closed(_)) => return,
            // The session was cancelled under us.
            Err(e) if e.code() == Some(-32003) => return,
            Err(e) => {
                failures
                    .lock()
                    .expect("failures")
                    .push(format!("send to {session}: {e:?}"));
                return;
            }
        }
    }
}

async fn follow(sock: PathBuf, session: String) {
    let Ok(mut c) = Rpc::try_connect(&sock).await else {
        return;
    };
    if c.try_call(
        "session.subscribe",
        json!({"session_id": session, "since_seq": 0}),
    )
    .await
    .is_err()
    {
        return;
    }
    // Read events until the daemon dies (the connection closes).
    while c.try_call("daemon.info", json!({})).await.is_ok() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Everything a restart must show (see the module docs).
async fn check(daemon: &DaemonProc, model: &Model, totals: &mut Totals, ctx: &str) {
    totals.restarts += 1;
    let mut c = Rpc::connect(&daemon.sock).await;
    let info = c.call("daemon.info", json!({})).await;
    let instance = info["instance_id"]
        .as_str()
        .expect("instance_id")
        .to_owned();
    let listed = c.session_states().await;
    let mut acked_by: BTreeMap<&str, Vec<&Acked>> = BTreeMap::new();
    for a in &model.acked {
        acked_by.entry(a.session.as_str()).or_default().push(a);
    }
    for (id, expect) in &model.sessions {
        let state = listed.get(id).map(String::as_str);
        match expect {
            Expect::Deleted => {
                assert_eq!(state, None, "{ctx}: deleted session {id} is listed");
                assert!(
                    !daemon.home.join("sessions").join(id).exists(),
                    "{ctx}: deleted session {id} left its directory"
                );
            }
            Expect::Unfinished => assert_eq!(
                state,
                Some("paused-reattachable"),
                "{ctx}: unfinished session {id}"
            ),
            Expect::Ended => assert_eq!(state, Some("ended"), "{ctx}: cancelled session {id}"),
            Expect::Cancelling => assert!(
                matches!(state, Some("ended" | "paused-reattachable")),
                "{ctx}: session {id} being cancelled is {state:?}"
            ),
        }
    }
    // Every listed session (including any whose start was never acknowledged).
    for (id, state) in &listed {
        assert!(
            matches!(state.as_str(), "paused-reattachable" | "ended"),
            "{ctx}: session {id} is {state} after a restart"
        );
        let got = c.call("session.get", json!({"session_id": id})).await;
        let reload = &got["reload"];
        assert!(
            reload["damage"].is_null(),
            "{ctx}: session {id} found damaged: {got}"
        );
        let path = journal_path(&daemon.home, id);
        let recs = assert_journal_sound(&path);
        let mine = acked_by.get(id.as_str()).cloned().unwrap_or_default();
        let max_acked = mine.iter().map(|a| a.seq).max().unwrap_or(0);
        if let Some(rep) = reload["repaired"].as_object() {
            totals.repairs += 1;
            check_repair(rep, max_acked, ctx, id);
        }
        for a in &mine {
            let r = recs.get(a.seq as usize - 1).unwrap_or_else(|| {
                panic!(
                    "{ctx}: {id} lost acknowledged seq {} ({} records)",
                    a.seq,
                    recs.len()
                )
            });
            assert_eq!(r["kind"], "user.input", "{ctx}: {id} seq {}: {r}", a.seq);
            assert_eq!(
                r["data"]["text"],
                json!(a.text),
                "{ctx}: {id} seq {}",
                a.seq
            );
        }
        check_lanes(&recs, ctx, id);
        let last = recs.last().expect("records");
        if state == "paused-reattachable" {
            assert_eq!(last["kind"], "session.reattached", "{ctx}: {id}: {last}");
            assert_eq!(last["data"]["instance_id"], json!(instance), "{ctx}: {id}");
        } else {
            assert!(
                recs.iter().any(|r| r["kind"] == "session.ended"),
                "{ctx}: ended session {id} has no session.ended"
            );
        }
        assert_eq!(
            got["last_seq"].as_u64(),
            Some(recs.len() as u64),
            "{ctx}: {id}: session.get last_seq vs the file"
        );
    }
    assert_journal_sound(&daemon.home.join("bus").join("events.ndjson"));
}

/// Every input (`user.input`) has a `tool.end` for its lane, after it.
fn check_lanes(recs: &[Value], ctx: &str, id: &str) {
    let mut open: BTreeSet<u64> = BTreeSet::new();
    for r in recs {
        match r["kind"].as_str() {
            Some("user.input") => {
                open.insert(r["seq"].as_u64().expect("seq"));
            }
            Some("tool.end") => {
                let lane = r["data"]["lane_id"].as_u64().expect("lane_id");
                open.remove(&lane);
            }
            _ => {}
        }
    }
    assert!(
        open.is_empty(),
        "{ctx}: {id}: inputs without tool.end after restart: {open:?}"
    );
}

/// A cut torn tail held only unacknowledged bytes, all saved, none a valid record.
fn check_repair(rep: &serde_json::Map<String, Value>, max_acked: u64, ctx: &str, id: &str) {
    let last_good = rep["last_good_seq"].as_u64().expect("last_good_seq");
    assert!(
        last_good >= max_acked,
        "{ctx}: {id}: recovery cut back to seq {last_good}, below acknowledged seq {max_acked}"
    );
    let corrupt = PathBuf::from(rep["corrupt_path"].as_str().expect("corrupt_path"));
    let bytes = std::fs::read(&corrupt)
        .unwrap_or_else(|e| panic!("{ctx}: {id}: {}: {e}", corrupt.display()));
    assert_eq!(
        bytes.len() as u64,
        rep["dropped_bytes"].as_u64().expect("dropped_bytes"),
        "{ctx}: {id}: the saved tail is not what was cut"
    );
    for line in bytes.split_inclusive(|b| *b == b'\n') {
        if let Some(body) = line.strip_suffix(b"\n") {
            assert!(
                r1_core::journal::record::parse_line(body).is_err(),
                "{ctx}: {id}: recovery cut a valid record: {}",
                String::from_utf8_lossy(body)
            );
        }
    }
}
