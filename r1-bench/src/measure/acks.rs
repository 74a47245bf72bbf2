//! 6: durable acks — 64 concurrent senders each calling `session.send` (acknowledged
//! only after the `user.input` record is fsync'd), beside one thread doing one
//! `write` + `fdatasync` per ack.

use std::fs::File;
use std::io::Write;
use std::rc::Rc;
use std::time::{Duration, Instant};

use serde_json::json;

use super::{Ctx, client_rt, workdir};
use crate::client::Rpc;
use crate::proc::DaemonProc;
use crate::report::Row;

const SENDERS: usize = 64;

/// 6.
pub fn run(ctx: &Ctx) -> anyhow::Result<Vec<Row>> {
    let dur = ctx.size(Duration::from_secs(5), Duration::from_millis(700));
    let dir = ctx.fresh_dir("m6")?;
    let home = dir.join("home");

    // Floor first: the same file system, one fsync per ack.
    let floor = {
        let path = dir.join("floor.ndjson");
        let mut f = File::create(&path)?;
        let line = [b'x'; 199];
        let t = Instant::now();
        let mut n = 0u64;
        while t.elapsed() < dur {
            f.write_all(&line)?;
            f.write_all(b"\n")?;
            f.sync_data()?;
            n += 1;
        }
        n as f64 / t.elapsed().as_secs_f64()
    };

    let daemon = DaemonProc::bench_daemon(&ctx.bench, &home, &ctx.sock("m6"), &["--no-tcp"])?;
    let work = workdir(ctx)?;
    let sock = daemon.sock.clone();
    let rt = client_rt()?;
    let (acks, elapsed) = rt.block_on(async move {
        let mut c = Rpc::connect(&sock).await?;
        let r = c
            .call("session.start", json!({"workdir": work, "driver": "sink"}))
            .await?;
        let id = r["session_id"]
            .as_str()
            .ok_or_else(|| anyhow::anyhow!("no session_id in {r}"))?
            .to_owned();
        let text = "x".repeat(100);
        let count = Rc::new(std::cell::Cell::new(0u64));
        let local = tokio::task::LocalSet::new();
        let start = Instant::now();
        let deadline = start + dur;
        local
            .run_until(async {
                let mut tasks = Vec::new();
                for _ in 0..SENDERS {
                    let sock = sock.clone();
                    let (id, text, count) = (id.clone(), text.clone(), Rc::clone(&count));
                    tasks.push(tokio::task::spawn_local(async move {
                        let mut c = Rpc::connect(&sock).await?;
                        while Instant::now() < deadline {
                            let r = c
                                .call("session.send", json!({"session_id": id, "text": text}))
                                .await?;
                            anyhow::ensure!(r["accepted"] == true, "not accepted: {r}");
                            count.set(count.get() + 1);
                        }
                        Ok::<_, anyhow::Error>(())
                    }));
                }
                for t in tasks {
                    t.await??;
                }
                Ok::<_, anyhow::Error>(())
            })
            .await?;
        let elapsed = start.elapsed();
        Ok::<_, anyhow::Error>((count.get(), elapsed))
    })?;
    daemon.stop()?;
    anyhow::ensure!(acks > 0, "no session.send was acknowledged");
    let rate = acks as f64 / elapsed.as_secs_f64();
    let row = Row::new(
        "6",
        "durable acks: 64 concurrent `session.send` callers",
        rate,
        "acks/s",
    )
    .floor("1 thread: write + fdatasync per ack", floor);
    let ok = row.ratio.is_some_and(|r| r >= 10.0);
    Ok(vec![row.target("≥ 10× floor", ok).note(format!(
        "{acks} acks in {:.1} s over the unix socket (bench daemon, `sink` driver)",
        elapsed.as_secs_f64()
    ))])
}
