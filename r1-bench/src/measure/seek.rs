//! 8: `since_seq` near the end of a 1,000,000-record journal — time to the first
//! record, through the daemon (`session.subscribe`) and through the library
//! (`Reader::seek`), beside a full scan of the file for the same line.

use std::io::Read;
use std::path::Path;
use std::time::{Duration, Instant};

use r1_core::journal::Reader;
use serde_json::json;
use tokio::io::AsyncBufReadExt;

use super::{Ctx, client_rt, workdir};
use crate::client::{Rpc, request_line};
use crate::proc::DaemonProc;
use crate::report::Row;
use crate::stats::{Samples, median_ms};

/// 8.
pub fn run(ctx: &Ctx) -> anyhow::Result<Vec<Row>> {
    let total: u64 = ctx.size(1_000_000, 20_000);
    let reps = ctx.size(50, 5);
    let dir = ctx.fresh_dir("m8")?;
    let home = dir.join("home");
    let daemon = DaemonProc::bench_daemon(&ctx.bench, &home, &ctx.sock("m8"), &["--no-tcp"])?;
    let work = workdir(ctx)?;
    let sock = daemon.sock.clone();
    let rt = client_rt()?;
    let since = total - 10;
    let (id, sub_times, gen_s) = rt.block_on(async {
        let mut c = Rpc::connect(&sock).await?;
        let r = c
            .call("session.start", json!({"workdir": work, "driver": "burst"}))
            .await?;
        let id = r["session_id"]
            .as_str()
            .ok_or_else(|| anyhow::anyhow!("no session_id in {r}"))?
            .to_owned();
        // created (1) + input (2) + ticks + tool.end = total.
        let t = Instant::now();
        c.call(
            "session.send",
            json!({"session_id": id, "text": format!("burst {}", total - 3)}),
        )
        .await?;
        loop {
            let g = c.call("session.get", json!({"session_id": id})).await?;
            if g["last_seq"].as_u64() >= Some(total) {
                break;
            }
            anyhow::ensure!(
                t.elapsed() < Duration::from_secs(300),
                "journal generation stalled: {g}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let gen_s = t.elapsed().as_secs_f64();
        // Time to the first `$/event` after `session.subscribe {since_seq}`.
        let (mut rd, mut wr) = Rpc::connect(&sock).await?.into_parts();
        let mut times = Vec::new();
        let mut line = String::new();
        for rep in 0..reps + 1 {
            let req = request_line(
                10 + rep as u64,
                "session.subscribe",
                Some(&json!({"session_id": id, "since_seq": since})),
            ) + "\n";
            let t = Instant::now();
            tokio::io::AsyncWriteExt::write_all(&mut wr, req.as_bytes()).await?;
            let mut sub = None;
            let mut first = None;
            let mut got = 0;
            while got < 10 {
                line.clear();
                if rd.read_line(&mut line).await? == 0 {
                    anyhow::bail!("connection closed");
                }
                if line.contains("\"$/event\"") {
                    if first.is_none() {
                        first = Some(t.elapsed());
                        anyhow::ensure!(
                            line.contains(&format!("\"seq\":{}", since + 1)),
                            "first event is not seq {}: {line}",
                            since + 1
                        );
                    }
                    got += 1;
                } else if sub.is_none() {
                    let v: serde_json::Value = serde_json::from_str(&line)?;
                    sub = v["result"]["sub"].as_u64();
                    anyhow::ensure!(sub.is_some(), "subscribe failed: {v}");
                }
            }
            let unsub = request_line(
                1_000 + rep as u64,
                "session.unsubscribe",
                Some(&json!({"sub": sub})),
            ) + "\n";
            tokio::io::AsyncWriteExt::write_all(&mut wr, unsub.as_bytes()).await?;
            loop {
                line.clear();
                if rd.read_line(&mut line).await? == 0 {
                    anyhow::bail!("connection closed");
                }
                if line.contains(&format!("\"id\":{}", 1_000 + rep)) {
                    break;
                }
            }
            if rep > 0
                && let Some(f) = first
            {
                times.push(f);
            }
        }
        Ok::<_, anyhow::Error>((id, times, gen_s))
    })?;
    let path = home.join("sessions").join(&id).join("journal.ndjson");

    // The library: open, seek, first record.
    let mut lib = Vec::new();
    for _ in 0..reps * 4 {
        let t = Instant::now();
        let mut r = Reader::open(&path)?;
        r.seek(since)?;
        let rec = r.next_record()?;
        lib.push(t.elapsed());
        anyhow::ensure!(
            rec.map(|r| r.seq) == Some(since + 1),
            "seek landed elsewhere"
        );
    }
    // The floor: a full scan for the same line (count newlines; no parsing at all).
    let mut scans = Vec::new();
    for _ in 0..3 {
        let t = Instant::now();
        let found = scan_to_line(&path, since)?;
        scans.push(t.elapsed());
        anyhow::ensure!(found, "the scan did not find line {}", since + 1);
    }
    daemon.stop()?;
    let size_mb = std::fs::metadata(&path).map_or(0.0, |m| m.len() as f64 / 1e6);
    let scan = median_ms(&scans);
    let target = "≤ 5 ms and ≥ 50× faster than the scan";
    let sub = Samples::from_durations(&sub_times);
    let a = Row::new(
        "8a",
        &format!("`session.subscribe {{since_seq}}` 10 before the end of a {total}-record journal → first `$/event`, median"),
        sub.p50() / 1000.0,
        "ms",
    )
    .floor("full scan of the file", scan);
    let ok_a = sub.p50() / 1000.0 <= 5.0 && a.ratio.is_some_and(|r| r <= 1.0 / 50.0);
    let l = median_ms(&lib);
    let b = Row::new(
        "8b",
        "`Reader::open` + `seek(since_seq)` + first record, median",
        l,
        "ms",
    )
    .floor("full scan of the file", scan);
    let ok_b = l <= 5.0 && b.ratio.is_some_and(|r| r <= 1.0 / 50.0);
    Ok(vec![
        a.target(target, ok_a).note(format!(
            "{size_mb:.0} MB journal written by the daemon in {gen_s:.1} s; p99 {:.2} ms; page cache warm",
            sub.p99() / 1000.0
        )),
        b.target(target, ok_b),
    ])
}

/// Reads `path` from the start until the start of line `line_no + 1` (1-based), i.e.
/// the record after `since` when seqs are line numbers. True if found.
pub fn scan_to_line(path: &Path, since: u64) -> anyhow::Result<bool> {
    let mut f = std::fs::File::open(path)?;
    let mut buf = vec![0u8; 1 << 20];
    let mut lines = 0u64;
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            return Ok(false);
        }
        for b in &buf[..n] {
            if *b == b'\n' {
                lines += 1;
                if lines == since {
                    return Ok(true);
                }
            }
        }
    }
}
