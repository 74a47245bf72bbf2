//! A subscriber that stops reading (DESIGN §7: "a slow subscriber never blocks a
//! session or grows memory without bound"). Shell output comes in records of up to
//! 64 KiB, so a broadcast ring of 4,096 records is up to 256 MiB: the daemon must not
//! keep the session's output in memory for a client that does not read it.

use std::time::{Duration, Instant};

use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use crate::common::{DaemonProc, Rpc, ServeOpts};

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// The `seq` of a `$/event` line without parsing its (large) data.
fn event_seq(line: &str) -> Option<u64> {
    if !line.contains("\"method\":\"$/event\"") {
        return None;
    }
    let at = line.find("\"seq\":")? + "\"seq\":".len();
    let digits: String = line[at..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

/// Regression: a stalled subscriber pinned up to a whole broadcast ring of output
/// (~300 MiB RSS for 300 MB of `yes`); now the pump drops what it cannot deliver and
/// reads it back from the journal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_subscriber_does_not_pin_the_output_in_memory() {
    const OUTPUT_MB: u64 = 192;
    let dir = tempfile::tempdir().expect("tempdir");
    let daemon = DaemonProc::start(&ServeOpts::in_dir(dir.path()));
    let mut c = Rpc::connect(&daemon.sock).await;
    let work = dir.path().join("w");
    std::fs::create_dir(&work).expect("workdir");
    let r = c.call("session.start", json!({"workdir": work})).await;
    let id = r["session_id"].as_str().expect("id").to_owned();

    // Subscribes, then reads nothing until the output is all written.
    let stalled = tokio::net::UnixStream::connect(&daemon.sock)
        .await
        .expect("connect");
    let (rd, mut wr) = stalled.into_split();
    let req = json!({"jsonrpc": "2.0", "id": 1, "method": "session.subscribe",
        "params": {"session_id": id, "since_seq": 0}});
    wr.write_all(format!("{req}\n").as_bytes())
        .await
        .expect("subscribe");
    tokio::time::sleep(Duration::from_millis(100)).await;

    let before = rss_kib(daemon.pid);
    let r = c
        .call(
            "session.send",
            json!({"session_id": id, "text": format!("yes 0123456789abcdef0123456789abcdef | head -c {OUTPUT_MB}000000")}),
        )
        .await;
    let lane = r["seq"].as_u64().expect("seq");
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut peak = before;
    let last = loop {
        peak = peak.max(rss_kib(daemon.pid));
        let last = c.call("session.get", json!({"session_id": id})).await["last_seq"]
            .as_u64()
            .expect("last_seq");
        let page = c
            .call(
                "journal.read",
                json!({"session_id": id, "since_seq": last - 1, "limit": 2}),
            )
            .await;
        let done = page["records"]
            .as_array()
            .expect("records")
            .iter()
            .any(|r| r["kind"] == "tool.end" && r["data"]["lane_id"] == json!(lane));
        if done {
            break last;
        }
        assert!(Instant::now() < deadline, "the output never finished");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let grown_mib = peak.saturating_sub(before) / 1024;
    eprintln!(
        "{OUTPUT_MB} MB of output, stalled subscriber: daemon rss +{grown_mib} MiB (peak), {last} records"
    );
    assert!(
        grown_mib < 110,
        "the daemon held {grown_mib} MiB for a subscriber that does not read"
    );

    // Now it reads: every record, in order, once.
    let mut lines = BufReader::new(rd).lines();
    let mut want = 1u64;
    while want <= last {
        let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
            .await
            .expect("events keep coming")
            .expect("read")
            .expect("open");
        if let Some(seq) = event_seq(&line) {
            assert_eq!(seq, want, "events out of order or repeated");
            want += 1;
        }
    }
}
