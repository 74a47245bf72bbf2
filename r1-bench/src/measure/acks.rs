//! 6: durable acks — 64 concurrent senders each calling `session.send` (acknowledged
//! only after the `user.input` record is fsync'd), beside one thread doing one
//! `write` + `fdatasync` per ack.

use std::fs::File;
use std::io::Write;
use std::rc::Rc;
use std::time::{Duration, Instant};

use serde_json::json;

use super::journal::sync_all;
use super::{Ctx, client_rt, workdir};
use crate::client::Rpc;
use crate::proc::DaemonProc;
use crate::report::Row;

const SENDERS: usize = 64;

/// 6.
pub fn run(ctx: &Ctx) -> anyhow::Result<Vec<Row>> {
    // Slices alternate the floor and r1; the best slice of each counts.
    let slice = ctx.size(Duration::from_secs(2), Duration::from_millis(400));
    let rounds = ctx.size(3, 1);
    let dir = ctx.fresh_dir("m6")?;
    let home = dir.join("home");
    let floor_path = dir.join("floor.ndjson");
    let mut floor_file = File::create(&floor_path)?;

    let daemon = DaemonProc::bench_daemon(&ctx.bench, &home, &ctx.sock("m6"), &["--no-tcp"])?;
    let work = workdir(ctx)?;
    let sock = daemon.sock.clone();
    let rt = client_rt()?;
    let (best, best_floor, total) = rt.block_on(async move {
        let mut c = Rpc::connect(&sock).await?;
        let r = c
            .call("session.start", json!({"workdir": work, "driver": "sink"}))
            .await?;
        let id = r["session_id"]
            .as_str()
            .ok_or_else(|| anyhow::anyhow!("no session_id in {r}"))?
            .to_owned();
        let text = "x".repeat(100);
        let mut senders = Vec::new();
        for _ in 0..SENDERS {
            senders.push(Rpc::connect(&sock).await?);
        }
        let (mut best, mut best_floor, mut total) = (0f64, 0f64, 0u64);
        for _ in 0..rounds {
            sync_all();
            best_floor = best_floor.max(floor_slice(&mut floor_file, slice)?);
            sync_all();
            let (acks, back) = r1_slice(senders, &id, &text, slice).await?;
            senders = back;
            total += acks;
            best = best.max(acks as f64 / slice.as_secs_f64());
        }
        Ok::<_, anyhow::Error>((best, best_floor, total))
    })?;
    daemon.stop()?;
    anyhow::ensure!(total > 0, "no session.send was acknowledged");
    let row = Row::new(
        "6",
        "durable acks: 64 concurrent `session.send` callers",
        best,
        "acks/s",
    )
    .floor("1 thread: write + fdatasync per ack", best_floor);
    let ok = row.ratio.is_some_and(|r| r >= 10.0);
    Ok(vec![row.target("≥ 10× floor", ok).note(format!(
        "best of {rounds} alternating {:.1} s slices; {total} acks over the unix socket (bench daemon, `sink` driver)",
        slice.as_secs_f64()
    ))])
}

/// One thread, one `write` + `fdatasync` per ack, for `slice`: acks/s.
fn floor_slice(f: &mut File, slice: Duration) -> anyhow::Result<f64> {
    let line = [b'x'; 199];
    let t = Instant::now();
    let mut n = 0u64;
    while t.elapsed() < slice {
        f.write_all(&line)?;
        f.write_all(b"\n")?;
        f.sync_data()?;
        n += 1;
    }
    Ok(n as f64 / t.elapsed().as_secs_f64())
}

/// Every sender calls `session.send` back to back until the slice ends: acks counted.
async fn r1_slice(
    senders: Vec<Rpc>,
    id: &str,
    text: &str,
    slice: Duration,
) -> anyhow::Result<(u64, Vec<Rpc>)> {
    let count = Rc::new(std::cell::Cell::new(0u64));
    let deadline = Instant::now() + slice;
    let local = tokio::task::LocalSet::new();
    let back = local
        .run_until(async {
            let mut tasks = Vec::new();
            for mut c in senders {
                let (id, text, count) = (id.to_owned(), text.to_owned(), Rc::clone(&count));
                tasks.push(tokio::task::spawn_local(async move {
                    while Instant::now() < deadline {
                        let r = c
                            .call("session.send", json!({"session_id": id, "text": text}))
                            .await?;
                        anyhow::ensure!(r["accepted"] == true, "not accepted: {r}");
                        count.set(count.get() + 1);
                    }
                    Ok::<_, anyhow::Error>(c)
                }));
            }
            let mut back = Vec::new();
            for t in tasks {
                back.push(t.await??);
            }
            Ok::<_, anyhow::Error>(back)
        })
        .await?;
    Ok((count.get(), back))
}
