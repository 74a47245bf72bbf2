//! Journal throughput measurements. Ignored by default (they take seconds and measure
//! the machine); run in release:
//!
//! ```text
//! cargo test --release -p r1-core --test journal_bench -- --ignored --nocapture --test-threads=1
//! ```

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::time::{Duration, Instant};

use r1_core::journal::{Journal, WriterOptions};
use serde_json::json;

/// Data whose encoded record line is exactly 200 bytes with its `\n`.
fn data_for_200_byte_lines() -> serde_json::Value {
    let t = tempfile::tempdir().unwrap();
    let path = t.path().join("probe.ndjson");
    let j = Journal::create(
        &path,
        "",
        "session.created",
        &json!({}),
        WriterOptions::default(),
    )
    .unwrap();
    let mut text_len = 0;
    loop {
        let data = json!({"stream": "stdout", "text": "x".repeat(text_len)});
        let len = j.append("session.delta", &data).unwrap().line().len() + 1;
        if len >= 200 {
            assert_eq!(len, 200, "seq digits changed the length");
            return data;
        }
        text_len += 200 - len;
    }
}

/// Appends of 200-byte records vs `write(2)` of 200 identical bytes, each to a fresh
/// file, interleaved over several rounds; the best round of each counts (the machine
/// is shared, the kernel write path dominates and its noise is one-sided).
#[test]
#[ignore]
fn append_vs_raw_write() {
    const N: usize = 100_000;
    const ROUNDS: usize = 7;
    let data = data_for_200_byte_lines();
    let t = tempfile::tempdir().unwrap();
    let line = [vec![b'x'; 199], vec![b'\n']].concat();
    let mut best_raw = Duration::MAX;
    let mut best_group = Duration::MAX;
    let mut best_nosync = Duration::MAX;
    for round in 0..ROUNDS {
        let raw_path = t.path().join(format!("raw-{round}"));
        let mut raw = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&raw_path)
            .unwrap();
        let start = Instant::now();
        for _ in 0..N {
            raw.write_all(&line).unwrap();
        }
        best_raw = best_raw.min(start.elapsed());
        drop(raw);
        std::fs::remove_file(&raw_path).unwrap();

        for (interval, best) in [
            (Duration::from_millis(100), &mut best_group),
            (Duration::from_secs(3600), &mut best_nosync),
        ] {
            let path = t
                .path()
                .join(format!("j-{round}-{}.ndjson", interval.as_millis()));
            let o = WriterOptions {
                fsync_interval: interval,
                ..WriterOptions::default()
            };
            let j = Journal::create(&path, "e", "session.created", &json!({}), o).unwrap();
            let start = Instant::now();
            for _ in 0..N {
                j.append("session.delta", &data).unwrap();
            }
            *best = (*best).min(start.elapsed());
            drop(j);
            std::fs::remove_file(&path).unwrap();
        }
    }
    let rate = |d: Duration| N as f64 / d.as_secs_f64();
    println!(
        "raw write(2): {:.0} rec/s; append with group commit (100 ms): {:.0} rec/s = {:.2}x; append with no fsync in the run: {:.0} rec/s = {:.2}x",
        rate(best_raw),
        rate(best_group),
        rate(best_group) / rate(best_raw),
        rate(best_nosync),
        rate(best_nosync) / rate(best_raw),
    );
}

#[test]
#[ignore]
fn durable_group_commit_throughput() {
    let data = json!({"text": "hello"});
    let t = tempfile::tempdir().unwrap();

    // Baseline: one write + fsync per acknowledgement.
    let mut f = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(t.path().join("raw"))
        .unwrap();
    let line = [b'x'; 120];
    let n = 300;
    let start = Instant::now();
    for _ in 0..n {
        f.write_all(&line).unwrap();
        f.sync_data().unwrap();
    }
    let base = n as f64 / start.elapsed().as_secs_f64();

    let path = t.path().join("journal.ndjson");
    let j = Journal::create(
        &path,
        "e",
        "session.created",
        &json!({}),
        WriterOptions::default(),
    )
    .unwrap();
    let threads = 64;
    let per = 60;
    let before = j.fsync_count();
    let start = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                for _ in 0..per {
                    j.append("user.input", &data).unwrap();
                }
            });
        }
    });
    let acks = (threads * per) as f64;
    let rate = acks / start.elapsed().as_secs_f64();
    println!(
        "write+fsync per ack: {base:.0} acks/s; 64 concurrent durable appenders: {rate:.0} acks/s ({:.1}x), {} fsyncs for {acks} acks",
        rate / base,
        j.fsync_count() - before
    );
}

/// Resident memory per idle open journal (Linux: /proc/self/statm), 1,000 journals
/// that each saw a few appends and one subscriber that went away.
#[cfg(target_os = "linux")]
#[test]
#[ignore]
fn idle_journal_memory() {
    fn rss_bytes() -> u64 {
        let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
        let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
        pages * 4096
    }
    let t = tempfile::tempdir().unwrap();
    let mut paths = Vec::new();
    for i in 0..1000 {
        let dir = t.path().join(format!("s{i}"));
        std::fs::create_dir(&dir).unwrap();
        paths.push(dir.join("journal.ndjson"));
    }
    let before = rss_bytes();
    let mut journals = Vec::new();
    for p in &paths {
        let j = Journal::create(
            p,
            "e",
            "session.created",
            &json!({"workdir": "/w"}),
            WriterOptions::default(),
        )
        .unwrap();
        let (_, rx) = j.subscribe();
        j.append("user.input", &json!({"text": "hello"})).unwrap();
        drop(rx);
        for _ in 0..3 {
            j.append(
                "session.delta",
                &json!({"stream": "stdout", "text": "x".repeat(150)}),
            )
            .unwrap();
        }
        journals.push(j);
    }
    std::thread::sleep(Duration::from_millis(300)); // let the flusher settle
    let per = (rss_bytes().saturating_sub(before)) / journals.len() as u64;
    println!(
        "idle open journal: ~{per} bytes resident each ({} journals)",
        journals.len()
    );
}
