//! Damage (DESIGN §5): a bit flipped in the middle of a journal while the daemon is
//! down. After a restart that session is `damaged` (`session.get` names the line and
//! why), readable up to the damage (`journal.read`), refuses writes with -32006; every
//! other session is unaffected (resumable, working); and nothing was deleted or
//! rewritten: the damaged file is byte-for-byte what it was, no `.corrupt-*` copy.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::common::{DaemonProc, Rpc, ServeOpts, assert_journal_sound, journal_records};

const JSONRPC_JOURNAL_DAMAGED: i64 = -32006;

/// How the daemon went down before the flip.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Down {
    /// SIGKILL: no clean marker, recovery checks the file.
    Crash,
    /// SIGTERM: clean markers written.
    Graceful,
}

/// Small journals: the whole file is inside recovery's tail window.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flipped_bit_in_a_small_journal_makes_only_that_session_damaged() {
    damage_case(4, Down::Crash).await;
}

/// Regression: damage before the last 16 KiB made `r1 serve` refuse to start at all
/// (the reattach scan's `JournalDamaged` aborted `Hub::open`). Journals well over the
/// tail window (16 KiB): the flip is not in the part recovery's
/// tail check reads, so only a full read of the journal can find it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damage_past_the_tail_window_no_longer_stops_daemon_start() {
    damage_case(60, Down::Crash).await;
}

/// After a graceful stop the clean marker is trusted (DESIGN §5: no scan), so the
/// flip is not found at the next start: the session comes back reattachable and reads
/// stop at the damage, naming it. The first restart that is not clean finds it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flipped_bit_after_a_graceful_stop_is_reported_by_reads_then_by_recovery() {
    damage_case(60, Down::Graceful).await;
}

fn journal_path(home: &Path, id: &str) -> PathBuf {
    home.join("sessions").join(id).join("journal.ndjson")
}

/// Waits (polling `journal.read`, with a deadline) until the `tool.end` of input `seq`.
async fn wait_done(c: &mut Rpc, id: &str, seq: u64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let recs = c.read_all(id).await;
        if recs
            .iter()
            .any(|r| r["kind"] == "tool.end" && r["data"]["lane_id"] == json!(seq))
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "input {seq} of {id} never finished"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn damage_case(inputs: usize, down: Down) {
    let dir = tempfile::tempdir().expect("tempdir");
    let opts = ServeOpts::in_dir(dir.path());
    let mut daemon = DaemonProc::start(&opts);
    let mut c = Rpc::connect(&daemon.sock).await;
    let mut ids = Vec::new();
    for k in 0..3 {
        let work = dir.path().join(format!("w{k}"));
        std::fs::create_dir_all(&work).expect("workdir");
        let r = c.call("session.start", json!({"workdir": work})).await;
        ids.push(r["session_id"].as_str().expect("id").to_owned());
    }
    for id in &ids {
        let mut last = 0;
        for n in 0..inputs {
            // ~600 bytes of output per input.
            let r = c
                .call(
                    "session.send",
                    json!({"session_id": id, "text": format!("printf 'out-{n} %0580d\\n' {n}")}),
                )
                .await;
            last = r["seq"].as_u64().expect("seq");
        }
        wait_done(&mut c, id, last).await;
    }
    drop(c);
    match down {
        Down::Crash => daemon.kill9(),
        Down::Graceful => {
            let s = daemon
                .terminate(Duration::from_secs(20))
                .expect("graceful stop");
            assert!(s.success(), "r1 serve exited {s}");
        }
    }

    let victim = ids[0].clone();
    let vpath = journal_path(&daemon.home, &victim);
    let before = std::fs::read(&vpath).expect("journal");
    if inputs > 10 {
        assert!(
            before.len() > 3 * 16 * 1024,
            "journal too small: {}",
            before.len()
        );
    }
    // Flip one bit of a digit of the `at` timestamp of the middle line: still JSON,
    // still the right shape, wrong CRC.
    let lines: Vec<usize> = std::iter::once(0)
        .chain(
            before
                .iter()
                .enumerate()
                .filter(|(_, b)| **b == b'\n')
                .map(|(i, _)| i + 1),
        )
        .filter(|i| *i < before.len())
        .collect();
    let mid_line = lines.len() / 2; // 0-based
    let start = lines[mid_line];
    let at =
        start + find(&before[start..], b"\"at\":\"").expect("at field") + "\"at\":\"".len() + 2; // the year's third digit
    let mut flipped = before.clone();
    flipped[at] ^= 0x01;
    assert!(flipped[at].is_ascii_digit());
    std::fs::write(&vpath, &flipped).expect("write flipped journal");
    let others_before: BTreeMap<String, Vec<u8>> = ids[1..]
        .iter()
        .map(|id| {
            (
                id.clone(),
                std::fs::read(journal_path(&daemon.home, id)).expect("journal"),
            )
        })
        .collect();
    let expect_line = mid_line as u64 + 1;
    let expect_seq_before = mid_line as u64; // records 1..=mid_line are intact

    let mut opts2 = opts.clone();
    opts2.stderr_path = dir.path().join("serve-2.stderr");
    if down == Down::Graceful {
        let mut daemon = DaemonProc::start(&opts2);
        let mut c = Rpc::connect(&daemon.sock).await;
        let got = c.call("session.get", json!({"session_id": victim})).await;
        assert_eq!(got["state"], "paused-reattachable", "{got:#}");
        let page = c
            .call(
                "journal.read",
                json!({"session_id": victim, "since_seq": 0}),
            )
            .await;
        assert_eq!(
            page["records"].as_array().map(Vec::len),
            Some(expect_seq_before as usize),
            "{page:#}"
        );
        let why = page["damage"].as_str().unwrap_or_default();
        assert!(why.contains(&format!("line {expect_line}")), "{page:#}");
        assert!(why.contains("crc"), "{page:#}");
        drop(c);
        daemon.kill9();
        // Only `session.reattached` was appended; the bytes before are untouched.
        let now = std::fs::read(&vpath).expect("journal");
        assert!(now.starts_with(&flipped), "damaged journal rewritten");
        flipped = now;
    }
    let daemon = DaemonProc::start(&opts2);
    let mut c = Rpc::connect(&daemon.sock).await;

    // The victim: damaged, and says where and why.
    let got = c.call("session.get", json!({"session_id": victim})).await;
    assert_eq!(got["state"], "damaged", "{got:#}");
    let dmg = &got["reload"]["damage"];
    assert_eq!(dmg["line"], json!(expect_line), "{got:#}");
    assert_eq!(dmg["offset"], json!(start), "{got:#}");
    assert!(
        dmg["reason"].as_str().unwrap_or_default().contains("crc"),
        "{got:#}"
    );
    let list = c.call("session.list", json!({"state": "damaged"})).await;
    assert_eq!(list["sessions"].as_array().map(Vec::len), Some(1), "{list}");

    // Readable up to the damage, which the answer names.
    let page = c
        .call(
            "journal.read",
            json!({"session_id": victim, "since_seq": 0}),
        )
        .await;
    let recs = page["records"].as_array().expect("records");
    assert_eq!(recs.len() as u64, expect_seq_before, "{page:#}");
    assert_eq!(
        recs.last().map(|r| r["seq"].clone()),
        Some(json!(expect_seq_before))
    );
    let why = page["damage"].as_str().unwrap_or_default();
    assert!(why.contains(&format!("line {expect_line}")), "{page:#}");

    // Read-only: writes are refused as journal damage.
    for (method, params) in [
        (
            "session.send",
            json!({"session_id": victim, "text": "echo no"}),
        ),
        ("session.resume", json!({"session_id": victim})),
        (
            "session.subscribe",
            json!({"session_id": victim, "since_seq": 0}),
        ),
    ] {
        let e = c.error(method, params).await;
        assert_eq!(e["code"], json!(JSONRPC_JOURNAL_DAMAGED), "{method}: {e}");
    }

    // Everyone else: resumable and working.
    for id in &ids[1..] {
        let s = c.call("session.get", json!({"session_id": id})).await;
        assert_eq!(s["state"], "paused-reattachable", "{s:#}");
        assert!(s["reload"]["damage"].is_null(), "{s:#}");
        c.call("session.resume", json!({"session_id": id})).await;
        let r = c
            .call(
                "session.send",
                json!({"session_id": id, "text": "echo still-here"}),
            )
            .await;
        let seq = r["seq"].as_u64().expect("seq");
        wait_done(&mut c, id, seq).await;
        let recs = assert_journal_sound(&journal_path(&daemon.home, id));
        let out: String = recs
            .iter()
            .filter(|r| r["kind"] == "session.delta" && r["data"]["lane_id"] == json!(seq))
            .map(|r| r["data"]["text"].as_str().unwrap_or_default().to_owned())
            .collect();
        assert_eq!(out, "still-here\n");
        // The old records are all still there, unchanged.
        let now = std::fs::read(journal_path(&daemon.home, id)).expect("journal");
        assert!(
            now.starts_with(&others_before[id]),
            "{id}: history rewritten"
        );
    }

    // Nothing valid was deleted: the damaged file is untouched, no tail was cut.
    drop(c);
    let mut daemon = daemon;
    let s = daemon
        .terminate(Duration::from_secs(20))
        .expect("graceful stop");
    assert!(s.success());
    assert_eq!(
        std::fs::read(&vpath).expect("journal"),
        flipped,
        "damaged journal modified"
    );
    let leftovers: Vec<String> = std::fs::read_dir(vpath.parent().expect("dir"))
        .expect("session dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("corrupt"))
        .collect();
    assert!(
        leftovers.is_empty(),
        "recovery cut something: {leftovers:?}"
    );
    let report = r1_core::journal::Reader::open(&vpath)
        .and_then(|mut r| r.verify())
        .expect("verify");
    let d = report.damage.expect("verify finds the damage");
    assert_eq!((d.line, d.offset), (expect_line, start as u64));
    assert_eq!(report.records, expect_seq_before);
    // The records before the damage are readable without a daemon, too.
    let _ = journal_records_until_damage(&vpath, expect_seq_before);
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn journal_records_until_damage(path: &Path, expect: u64) -> Vec<Value> {
    let mut r = r1_core::journal::Reader::open(path).expect("open");
    let mut out = Vec::new();
    loop {
        match r.next_record() {
            Ok(Some(rec)) => out.push(rec.to_value().expect("json")),
            Ok(None) => panic!("no damage reported by the reader"),
            Err(e) => {
                assert_eq!(e.kind(), r1_core::ErrorKind::JournalDamaged, "{e}");
                break;
            }
        }
    }
    assert_eq!(out.len() as u64, expect);
    let _ = journal_records; // (sound journals use the shared helper)
    out
}
